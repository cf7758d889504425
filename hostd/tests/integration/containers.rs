//! `hostd run|ps|logs|stop|rm` against a real daemon: containers from a
//! busybox image built with `umoci`, rooted on overlayfs over the store's
//! layers, created by the daemon's zygote.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostd::daemon::containers::Record;
use mkhost_shared::control::{self, Request, Response};

use crate::common::{
    ok, overlay_mounts_under, processes, run, wait_exit, wait_for_status, zygote_pid, Daemon, HOSTD,
};

/// Builds `dir/bb.tar` with images `bb` (busybox, Cmd `sh`) and `baduser`
/// (the same with `User` set to a name the image's passwd lacks).
pub(crate) fn build_image(dir: &Path) {
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(dir));
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:bb"]);
    umoci(&["unpack", "--image", "L:bb", "B"]);
    let rootfs = dir.join("B/rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "true", "head", "tr", "cat", "wc", "id", "stty", "tty",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    umoci(&["repack", "--image", "L:bb", "B"]);
    umoci(&["config", "--image", "L:bb", "--config.cmd", "sh"]);
    umoci(&[
        "config",
        "--image",
        "L:bb",
        "--tag",
        "baduser",
        "--config.user",
        "nobody",
    ]);
    run(Command::new("tar")
        .args(["-C", "L", "-cf", "bb.tar", "."])
        .current_dir(dir));
}

pub(crate) fn hostd(socket: &Path, args: &[&str]) -> Output {
    Command::new(HOSTD)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

/// `hostd run -d` with the socket before the command's own arguments
/// (`run`'s trailing arguments are the container's command): prints the id.
pub(crate) fn hostd_run(socket: &Path, args: &[&str]) -> Output {
    Command::new(HOSTD)
        .args(["run", "-d", "--socket"])
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn ps(socket: &Path) -> Vec<Record> {
    match control::request(socket, &Request::Ps, Duration::from_secs(5)).unwrap() {
        Response::Ps(rows) => rows,
        other => panic!("{other:?}"),
    }
}

pub(crate) fn find(socket: &Path, name: &str) -> Record {
    ps(socket)
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn wait_exited(socket: &Path, name: &str) -> Record {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = find(socket, name);
        if r.exit_code.is_some() {
            return r;
        }
        assert!(Instant::now() < deadline, "{name} never exited: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn alive(pid: i32) -> bool {
    hostd::os::kill(pid, 0).is_ok()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn run_ps_logs_stop_rm_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    let daemon = Daemon::start(work, Path::new(HOSTD), &[]);
    let socket = daemon.socket();
    let state = work.join("state");
    let status = wait_for_status(&socket, Duration::from_secs(10));
    let import = work.join("bb.tar");
    ok(&hostd(&socket, &["import", import.to_str().unwrap()]));
    let containers = work.join("containers");

    // Bad requests create nothing.
    let out = hostd_run(&socket, &["nope"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no image named"),
        "{out:?}"
    );
    let out = hostd_run(&socket, &["baduser"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unable to find user \"nobody\""),
        "{out:?}"
    );
    assert_eq!(fs::read_dir(&containers).unwrap().count(), 0);
    assert!(overlay_mounts_under(work).is_empty());
    assert!(ps(&socket).is_empty());

    // A container that prints and exits 3.
    let id = ok(&hostd_run(
        &socket,
        &[
            "--name",
            "echo",
            "-e",
            "WHO=bb",
            "bb",
            "sh",
            "-c",
            "echo hello from $WHO; echo oops >&2; exit 3",
        ],
    ));
    let id = id.trim().to_string();
    assert_eq!(id.len(), 16, "{id}");
    let rec = wait_exited(&socket, "echo");
    assert_eq!(rec.exit_code, Some(3), "{rec:?}");
    assert_eq!(rec.id, id);
    let table = ok(&hostd(&socket, &["ps"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("echo ") && l.contains("exited(3)")),
        "{table}"
    );
    let logs = ok(&hostd(&socket, &["logs", "echo"]));
    let mut lines: Vec<(&str, &str)> = logs
        .lines()
        .map(|l| l.split_once(' ').unwrap_or_default())
        .collect();
    let stamp = lines[0].0;
    lines.sort_by_key(|(_, text)| *text);
    let texts: Vec<&str> = lines.iter().map(|(_, t)| *t).collect();
    assert_eq!(texts, ["stderr oops", "stdout hello from bb"], "{logs}");
    assert!(
        stamp.len() >= 20
            && stamp.as_bytes()[4] == b'-'
            && stamp.contains('T')
            && stamp.ends_with('Z'),
        "{logs}"
    );
    let saved: Record =
        serde_json::from_slice(&fs::read(containers.join(&id).join("state.json")).unwrap())
            .unwrap();
    assert_eq!(saved.exit_code, Some(3));

    // logs -f of an exited container prints it and returns; of a running
    // one, follows it to its end.
    let followed = ok(&hostd(&socket, &["logs", "-f", "echo"]));
    assert_eq!(followed, logs);
    ok(&hostd_run(
        &socket,
        &[
            "--name",
            "slow",
            "bb",
            "sh",
            "-c",
            "echo one; sleep 1; echo two",
        ],
    ));
    let followed = ok(&hostd(&socket, &["logs", "--follow", "slow"]));
    let texts: Vec<&str> = followed
        .lines()
        .filter_map(|l| l.split_once(' ').map(|x| x.1))
        .collect();
    assert_eq!(texts, ["stdout one", "stdout two"], "{followed}");
    ok(&hostd(&socket, &["rm", "slow"]));

    // A long-running one, in its own pid namespace.
    let sleeper = ok(&hostd_run(
        &socket,
        &["--name", "sleeper", "bb", "sleep", "100"],
    ));
    let sleeper = sleeper.trim().to_string();
    let rec = find(&socket, "sleeper");
    assert_eq!(rec.status, "running");
    let answer = ok(&hostd(&socket, &["status"]));
    assert!(answer.contains("\"containers\":1"), "{answer}");
    // A name that begins another container's id is free (an id prefix
    // finds a container, but names only conflict with names and full ids).
    let prefix = &sleeper[..5];
    ok(&hostd_run(&socket, &["--name", prefix, "bb", "true"]));
    ok(&hostd(&socket, &["rm", "-f", prefix]));
    for taken in ["sleeper", sleeper.as_str()] {
        let out = hostd_run(&socket, &["--name", taken, "bb", "true"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already exists"),
            "{out:?}"
        );
    }
    let ns = |pid: u32| fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(ns(u32::try_from(rec.pid).unwrap()), ns(status.pid));
    let comm = fs::read_to_string(format!("/proc/{}/comm", rec.pid)).unwrap();
    assert_eq!(comm.trim(), "sleep");
    // No overlay on the host: each init mounts its root in its own mount
    // namespace, so the host's mount table does not grow with containers.
    assert!(
        overlay_mounts_under(&containers).is_empty(),
        "{:?}",
        overlay_mounts_under(&containers)
    );
    let own_root = fs::read_to_string(format!("/proc/{}/mountinfo", rec.pid))
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .map(str::to_string)
        .unwrap();
    assert!(
        own_root.contains(" - overlay overlay ")
            && own_root.contains(&format!("upperdir={}", containers.display())),
        "{own_root}"
    );

    // rm refuses a running container.
    let out = hostd(&socket, &["rm", "sleeper"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is running"),
        "{out:?}"
    );

    // `sleep` is the pid namespace's init and has no SIGTERM handler, so
    // the kernel ignores SIGTERM: stop falls back to SIGKILL after 1 s.
    let started = Instant::now();
    ok(&hostd(&socket, &["stop", "-t", "1", "sleeper"]));
    assert!(started.elapsed() >= Duration::from_secs(1));
    let rec = find(&socket, "sleeper");
    assert_eq!(rec.exit_code, Some(128 + libc::SIGKILL), "{rec:?}");

    ok(&hostd(&socket, &["rm", "sleeper"]));
    ok(&hostd(&socket, &["rm", "echo"]));
    assert!(!containers.join(&sleeper).exists());
    assert!(!containers.join(&id).exists());
    assert!(
        overlay_mounts_under(work).is_empty(),
        "{:?}",
        overlay_mounts_under(work)
    );
    assert!(ps(&socket).is_empty());

    // rm -f kills a running one.
    ok(&hostd_run(
        &socket,
        &["--name", "forced", "bb", "sleep", "100"],
    ));
    ok(&hostd(&socket, &["rm", "-f", "forced"]));
    assert_eq!(fs::read_dir(&containers).unwrap().count(), 0);
    assert!(overlay_mounts_under(work).is_empty());
    let out = hostd(&socket, &["logs", "forced"]);
    assert_eq!(out.status.code(), Some(1));

    let zygote = zygote_pid(work).unwrap();
    daemon.terminate();
    // With no container left, the zygote leaves with the daemon.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(zygote) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(zygote), "zygote {zygote} outlived an empty daemon");
    assert!(!state.join("zygote.sock").exists());
}

/// Waits until `check` holds for container `name`'s record.
pub(crate) fn wait_for(
    socket: &Path,
    name: &str,
    what: &str,
    check: impl Fn(&Record) -> bool,
) -> Record {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ps(socket).into_iter().find(|r| r.name == name);
        if let Some(r) = r.as_ref().filter(|r| check(r)) {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the busybox image in `work`, starts a daemon there and imports it.
pub(crate) fn daemon_with_image(work: &Path) -> Daemon<'_> {
    build_image(work);
    let daemon = Daemon::start(work, Path::new(HOSTD), &[]);
    import_image(&daemon.socket(), work);
    daemon
}

/// Imports `work/bb.tar` ([`build_image`]) through the daemon at `socket`.
pub(crate) fn import_image(socket: &Path, work: &Path) {
    ok(&hostd(
        socket,
        &["import", work.join("bb.tar").to_str().unwrap()],
    ));
}

pub(crate) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn restart_policies_and_limits_without_cgroups() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let daemon = daemon_with_image(work);
    let socket = daemon.socket();

    // on-failure:2 restarts a failing container twice, then leaves it.
    ok(&hostd_run(
        &socket,
        &[
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "bb",
            "sh",
            "-c",
            "echo run; exit 3",
        ],
    ));
    let r = wait_for(&socket, "flaky", "gave up", |r| r.status == "exited");
    assert_eq!((r.exit_code, r.restart_count), (Some(3), 2), "{r:?}");
    let logs = ok(&hostd(&socket, &["logs", "flaky"]));
    assert_eq!(logs.matches("stdout run").count(), 3, "{logs}");
    let table = ok(&hostd(&socket, &["ps"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("flaky ") && l.contains("exited(3)")),
        "{table}"
    );

    // on-failure does not restart a clean exit.
    ok(&hostd_run(
        &socket,
        &["--name", "clean", "--restart", "on-failure", "bb", "true"],
    ));
    let r = wait_for(&socket, "clean", "exited", |r| r.status == "exited");
    assert_eq!((r.exit_code, r.restart_count), (Some(0), 0), "{r:?}");

    // always restarts even after exit 0, with a growing back-off, until stop.
    ok(&hostd_run(
        &socket,
        &["--name", "again", "--restart", "always", "bb", "true"],
    ));
    wait_for(&socket, "again", "restarted 3 times", |r| {
        r.restart_count >= 3
    });
    let stopped = ok(&hostd(&socket, &["stop", "-t", "1", "again"]));
    assert!(!stopped.is_empty());
    let r = find(&socket, "again");
    assert_eq!(r.status, "exited", "{r:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let later = find(&socket, "again");
    assert_eq!(later.restart_count, r.restart_count, "restarted after stop");
    assert_eq!(later.status, "exited");
    // start turns it and its policy back on; a running one cannot start.
    ok(&hostd(&socket, &["start", "again"]));
    wait_for(&socket, "again", "restarted by its policy again", |x| {
        x.restart_count > later.restart_count
    });
    let out = hostd(&socket, &["start", "again"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("stop it first"),
        "{}",
        stderr_of(&out)
    );
    let out = hostd(&socket, &["start", "flaky"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let r = wait_for(&socket, "flaky", "ran a fourth time", |r| {
        r.status == "exited"
            && ok(&hostd(&socket, &["logs", "flaky"]))
                .matches("stdout run")
                .count()
                == 4
    });
    assert_eq!(r.restart_count, 2, "a manual start is not a policy restart");
    let out = hostd(&socket, &["start", "nonexistent"]);
    assert_eq!(out.status.code(), Some(1));
    ok(&hostd(&socket, &["stop", "-t", "1", "again"]));

    // Limits need cgroup v2, which this machine lacks: refused, nothing left.
    let before = fs::read_dir(work.join("containers")).unwrap().count();
    let out = hostd_run(
        &socket,
        &["--name", "capped", "--memory", "64M", "bb", "true"],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr_of(&out).contains("need cgroup v2"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        fs::read_dir(work.join("containers")).unwrap().count(),
        before
    );
    assert!(ps(&socket).iter().all(|r| r.name != "capped"));
    // A limit below the kernel's floor is refused by the client already.
    let out = hostd_run(&socket, &["--memory", "4096", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr_of(&out).contains("below the minimum of 6 MiB"));
    // And by the daemon, for clients that skip that check.
    let raw = control::request(
        &socket,
        &Request::Run(Box::new(hostd::daemon::containers::RunRequest {
            image: "bb".into(),
            limits: hostd::daemon::containers::Limits {
                memory: Some(4096),
                ..Default::default()
            },
            ..Default::default()
        })),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        matches!(&raw, Response::Error(m) if m.contains("memory 4096")),
        "{raw:?}"
    );

    // An image in use cannot be removed.
    let out = hostd(&socket, &["rmi", "bb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("used by container"),
        "{}",
        stderr_of(&out)
    );

    for name in ["flaky", "clean", "again"] {
        ok(&hostd(&socket, &["rm", name]));
    }
    assert!(overlay_mounts_under(work).is_empty());
    daemon.terminate();
}

/// Ticks `tick N` every 0.1 s.
const TICKER: &str = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";

fn ticks(socket: &Path, name: &str) -> Vec<u64> {
    ok(&hostd(socket, &["logs", name]))
        .lines()
        .filter_map(|l| {
            l.split_once(" stdout tick ")
                .map(|(_, n)| n.parse().unwrap())
        })
        .collect()
}

#[test]
fn containers_survive_a_killed_and_an_upgraded_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let first = daemon_with_image(work);
    let socket = first.socket();
    ok(&hostd_run(
        &socket,
        &["--name", "ticker", "bb", "sh", "-c", TICKER],
    ));
    ok(&hostd_run(
        &socket,
        &["--name", "quitter", "bb", "sh", "-c", "sleep 1; exit 7"],
    ));
    ok(&hostd_run(
        &socket,
        &[
            "--name",
            "phoenix",
            "--restart",
            "always",
            "bb",
            "sh",
            "-c",
            "sleep 1.5; exit 1",
        ],
    ));
    let ticker = find(&socket, "ticker");
    let zygote = zygote_pid(work).unwrap();

    // kill -9: the containers do not notice.
    first.kill9();
    assert!(alive(ticker.pid), "ticker died with the daemon");
    assert!(alive(zygote), "zygote died with the daemon");
    std::thread::sleep(Duration::from_secs(2));
    assert!(alive(ticker.pid));

    // A new daemon takes them over: same pids, exit codes kept, logs whole.
    let second = Daemon::start(work, Path::new(HOSTD), &[]);
    assert!(
        second.output().contains("took over zygote"),
        "{}",
        second.output()
    );
    let r = find(&socket, "ticker");
    assert_eq!((r.status.as_str(), r.pid), ("running", ticker.pid), "{r:?}");
    let q = wait_for(&socket, "quitter", "exited", |r| r.status == "exited");
    assert_eq!(q.exit_code, Some(7), "{q:?}");
    // phoenix exited while nobody watched; its policy still applies.
    wait_for(&socket, "phoenix", "restarted", |r| r.restart_count >= 1);
    let before = ticks(&socket, "ticker");
    std::thread::sleep(Duration::from_millis(600));
    let after = ticks(&socket, "ticker");
    assert!(after.len() > before.len(), "log stopped growing");
    let expected: Vec<u64> = (0..after.len() as u64).collect();
    assert_eq!(after, expected, "ticks lost or repeated across the restart");

    // An upgrade: the new daemon runs another binary, so the zygote execs it.
    let copy = work.join("hostd-new");
    fs::copy(HOSTD, &copy).unwrap();
    second.kill9();
    let third = Daemon::start(work, &copy, &[]);
    assert!(third.output().contains("(upgraded)"), "{}", third.output());
    assert_eq!(
        zygote_pid(work),
        Some(zygote),
        "the zygote was replaced, not upgraded"
    );
    assert_eq!(fs::read_link(format!("/proc/{zygote}/exe")).unwrap(), copy);
    // The old image's spawner was reaped, not left a zombie child.
    assert_eq!(zombie_children(zygote, "hostd"), Vec::<i32>::new());
    let r = find(&socket, "ticker");
    assert_eq!((r.status.as_str(), r.pid), ("running", ticker.pid), "{r:?}");
    let n = ticks(&socket, "ticker").len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        ticks(&socket, "ticker").len() > n,
        "log stopped after the upgrade"
    );
    // The upgraded zygote still reaps, stops and removes.
    let stopped = ok(&hostd(&socket, &["stop", "-t", "1", "ticker"]));
    assert!(!stopped.is_empty());
    assert_eq!(find(&socket, "ticker").exit_code, Some(128 + libc::SIGKILL));
    for name in ["ticker", "quitter"] {
        ok(&hostd(&socket, &["rm", name]));
    }
    ok(&hostd(&socket, &["rm", "-f", "phoenix"]));
    assert!(overlay_mounts_under(work).is_empty());
    third.terminate();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(zygote) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(zygote), "zygote {zygote} outlived an empty daemon");
}

/// The children of `parent` named `comm` that are zombies.
pub(crate) fn zombie_children(parent: i32, comm: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == parent && p.comm == comm && p.state == "Z")
        .map(|p| p.pid)
        .collect()
}

#[test]
fn boot_manifest_imports_and_starts_containers_once() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    let archive = work.join("bb.tar");
    let sum: String = sha2::Sha256::digest(fs::read(&archive).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let manifest = work.join("containers.json");
    let json = serde_json::json!({
        "archives": [
            { "path": archive, "sha256": sum },
            { "path": work.join("missing.tar"), "sha256": "00" }
        ],
        "containers": [
            // Embedded images never pull (as mkhost writes them).
            { "image": "bb", "name": "greeter", "command": ["sh", "-c", "echo booted"], "pull": "never" },
            { "image": "bb", "name": "server", "command": ["sleep", "100"], "restart": "always", "pull": "never" },
            { "image": "nope", "name": "broken", "pull": "never" }
        ]
    });
    fs::write(&manifest, json.to_string()).unwrap();
    let flag = ["--boot-manifest", manifest.to_str().unwrap()];
    let daemon = Daemon::start(work, Path::new(HOSTD), &flag);
    let socket = daemon.socket();
    let g = wait_for(&socket, "greeter", "exited", |r| r.status == "exited");
    assert_eq!(g.exit_code, Some(0));
    assert!(ok(&hostd(&socket, &["logs", "greeter"])).contains("stdout booted"));
    let server = wait_for(&socket, "server", "ran", |r| r.status == "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.output().contains("boot-time containers:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = daemon.output();
    assert!(out.contains("missing.tar"), "{out}");
    assert!(!archive.exists(), "the imported archive was not freed");
    assert!(
        out.contains("boot container \"broken\" did not start: no image named"),
        "{out}"
    );
    assert_eq!(ps(&socket).len(), 2);

    // A restarted daemon re-adopts them and starts nothing twice.
    daemon.kill9();
    let again = Daemon::start(work, Path::new(HOSTD), &flag);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !again.output().contains("boot-time containers:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        again.output().contains("0 archives imported"),
        "{}",
        again.output()
    );
    let list = ps(&socket);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(find(&socket, "server").pid, server.pid);
    ok(&hostd(&socket, &["rm", "-f", "server"]));
    ok(&hostd(&socket, &["rm", "greeter"]));
    again.terminate();
}

#[test]
fn a_dead_zygote_ends_the_daemon_and_the_next_one_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut first = daemon_with_image(work);
    let socket = first.socket();
    ok(&hostd_run(
        &socket,
        &[
            "--name",
            "keeper",
            "--restart",
            "always",
            "bb",
            "sh",
            "-c",
            TICKER,
        ],
    ));
    ok(&hostd_run(
        &socket,
        &["--name", "plain", "bb", "sleep", "100"],
    ));
    let keeper = find(&socket, "keeper");
    let plain = find(&socket, "plain");
    let zygote = zygote_pid(work).unwrap();

    // The zygote dies: the daemon cannot manage anything and exits (1), so
    // that init restarts it.
    hostd::os::kill(zygote, libc::SIGKILL).unwrap();
    let status = wait_exit(&mut first.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", first.output());
    assert!(
        first.output().contains("the zygote died"),
        "{}",
        first.output()
    );
    std::mem::forget(first);

    // A corrupt record is skipped with a message, not fatal.
    let junk = work.join("containers/0123456789abcdef");
    fs::create_dir_all(&junk).unwrap();
    fs::write(junk.join("state.json"), b"{").unwrap();

    // The next daemon starts a new zygote; the orphans, whose output and
    // exit nobody holds any more, are killed; `always` starts again.
    let second = Daemon::start(work, Path::new(HOSTD), &[]);
    assert!(
        second.output().contains("skipping container directory")
            && second.output().contains("0123456789abcdef/state.json"),
        "{}",
        second.output()
    );
    assert_eq!(ps(&socket).len(), 2);
    assert_ne!(zygote_pid(work), Some(zygote));
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(keeper.pid) || alive(plain.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(keeper.pid) && !alive(plain.pid),
        "orphans left running"
    );
    let p = find(&socket, "plain");
    assert_eq!(p.status, "exited", "{p:?}");
    assert!(
        p.error
            .as_deref()
            .unwrap_or_default()
            .contains("lost with its zygote"),
        "{p:?}"
    );
    let k = wait_for(&socket, "keeper", "restarted", |r| {
        r.status == "running" && r.restart_count == 1
    });
    assert_ne!(k.pid, keeper.pid);
    let n = ticks(&socket, "keeper").len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(ticks(&socket, "keeper").len() > n);
    ok(&hostd(&socket, &["rm", "-f", "keeper"]));
    ok(&hostd(&socket, &["rm", "plain"]));
    assert!(overlay_mounts_under(work).is_empty());
    fs::remove_dir_all(&junk).unwrap();
    second.terminate();
}

/// `hostd run` without `-d` behaves like `docker run`: the container's
/// stdout and stderr on ours, its exit code as ours, 125 when refused;
/// `--rm` leaves nothing, in the foreground and (by the daemon) with `-d`;
/// labels and the host name reach `ps --json` and the container.
#[test]
fn run_in_the_foreground_like_docker_run() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let daemon = daemon_with_image(work);
    let socket = daemon.socket();
    let containers = work.join("containers");
    let foreground = |args: &[&str]| {
        Command::new(HOSTD)
            .args(["run", "--socket"])
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };

    let out = foreground(&[
        "--name",
        "fg",
        "-h",
        "web1",
        "-l",
        "tier=front",
        "bb",
        "sh",
        "-c",
        "echo out $HOSTNAME; cat /etc/hostname; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out web1\nweb1\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let json = ok(&hostd(&socket, &["ps", "--json"]));
    let rows: Vec<Record> = serde_json::from_str(&json).unwrap();
    let fg = rows.iter().find(|r| r.name == "fg").unwrap();
    assert_eq!(fg.exit_code, Some(3));
    assert_eq!(fg.labels.get("tier").map(String::as_str), Some("front"));

    // --rm in the foreground: output and code first, then nothing left.
    let before = fs::read_dir(&containers).unwrap().count();
    let out = foreground(&["--rm", "bb", "sh", "-c", "echo bye; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bye\n");
    assert_eq!(fs::read_dir(&containers).unwrap().count(), before);

    // -d --rm: the daemon removes it when it exits.
    let id = ok(&hostd_run(
        &socket,
        &["--rm", "--name", "gone", "bb", "true"],
    ));
    assert_eq!(id.trim().len(), 16, "{id}");
    let deadline = Instant::now() + Duration::from_secs(15);
    // It leaves the table first, then its files and network go.
    while ps(&socket).iter().any(|r| r.name == "gone")
        || fs::read_dir(&containers).unwrap().count() != before
        || !daemon.output().contains("removed container")
    {
        assert!(Instant::now() < deadline, "the --rm container stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemon.output().contains("removed container"),
        "{}",
        daemon.output()
    );

    // Refusals exit 125 like docker's, and create nothing.
    let out = foreground(&["nope"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let out = foreground(&["-u", "nobody", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr_of(&out).contains("unable to find user \"nobody\""));
    assert_eq!(fs::read_dir(&containers).unwrap().count(), before);
    // A duration from outside too large to add is refused, not a panic.
    let stop = Request::Stop {
        name: "fg".into(),
        timeout_secs: Some(u64::MAX),
    };
    let answer = control::request(&socket, &stop, stop.client_timeout()).unwrap();
    assert!(
        matches!(&answer, Response::Error(m) if m.contains("out of range")),
        "{answer:?}"
    );
    let wait = Request::Wait {
        name: "fg".into(),
        timeout_ms: u64::MAX,
    };
    let answer = control::request(&socket, &wait, wait.client_timeout()).unwrap();
    assert!(matches!(answer, Response::Container(_)), "{answer:?}");
    assert!(wait_for_status(&socket, Duration::from_secs(5)).pid > 0);
    // Usage errors exit 125, as docker run's do, before anything is sent.
    let out = foreground(&["--rm", "--restart", "always", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let out = foreground(&["-it", "bb", "sh"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr_of(&out).contains("interactive terminal"));
}
