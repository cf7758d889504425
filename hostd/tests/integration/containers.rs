//! `hostd run|ps|logs|stop|rm` against a real daemon: containers from a
//! busybox image built with `umoci`, rooted on overlayfs over the store's
//! layers, created by the daemon's zygote.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostd::containers::Record;
use hostd::control::{self, Request, Response};

use crate::common::{run, wait_exit, wait_for_status, HOSTD};

/// Builds `dir/bb.tar` with images `bb` (busybox, Cmd `sh`) and `baduser`
/// (the same with `User` set to a name the image's passwd lacks).
fn build_image(dir: &Path) {
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(dir));
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:bb"]);
    umoci(&["unpack", "--image", "L:bb", "B"]);
    let rootfs = dir.join("B/rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep"] {
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

fn hostd(socket: &Path, args: &[&str]) -> Output {
    Command::new(HOSTD)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

/// `hostd` with the socket before the command's own arguments (for `run`,
/// whose trailing arguments are the container's command).
fn hostd_run(socket: &Path, args: &[&str]) -> Output {
    Command::new(HOSTD)
        .arg("run")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{out:?}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn ps(socket: &Path) -> Vec<Record> {
    match control::request(socket, &Request::Ps, Duration::from_secs(5)).unwrap() {
        Response::Ps(v) => serde_json::from_value(v).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn find(socket: &Path, name: &str) -> Record {
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

fn overlay_mounts_under(dir: &Path) -> Vec<String> {
    let text = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&text))
        .map(str::to_string)
        .collect()
}

/// Kills the daemon and its containers' mounts if the test fails half-way
/// (a daemon left running would keep cargo's output pipes open).
struct Guard<'a> {
    daemon: std::process::Child,
    work: &'a Path,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Ok(None) = self.daemon.try_wait() {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
        for line in overlay_mounts_under(self.work) {
            if let Some(target) = line.split(' ').nth(4) {
                let _ = hostd::sys::umount2(Path::new(target), libc::MNT_DETACH);
            }
        }
    }
}

#[test]
fn run_ps_logs_stop_rm_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    let socket = work.join("run/hostd.sock");
    let state = work.join("state");
    let daemon = Command::new(HOSTD)
        .args(["daemon", "--socket"])
        .arg(&socket)
        .arg("--store")
        .arg(work.join("store"))
        .arg("--state")
        .arg(&state)
        .spawn()
        .unwrap();
    let mut guard = Guard { daemon, work };
    let status = wait_for_status(&socket, Duration::from_secs(10));
    let import = work.join("bb.tar");
    ok(&hostd(&socket, &["import", import.to_str().unwrap()]));
    let containers = state.join("containers");

    // Bad requests create nothing.
    let out = hostd_run(&socket, &["nope"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no image named"),
        "{out:?}"
    );
    let out = hostd_run(&socket, &["baduser"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown user \"nobody\""),
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
            "echo hello from $WHO; exit 3",
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
    let line = logs.lines().next().unwrap_or_default();
    let (stamp, text) = line.split_once(' ').unwrap_or_default();
    assert_eq!(text, "hello from bb", "{logs}");
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
    let ns = |pid: u32| fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(ns(u32::try_from(rec.pid).unwrap()), ns(status.pid));
    let comm = fs::read_to_string(format!("/proc/{}/comm", rec.pid)).unwrap();
    assert_eq!(comm.trim(), "sleep");
    // Two overlays: the exited `echo` keeps its root until `rm`.
    assert_eq!(overlay_mounts_under(&containers).len(), 2);

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

    hostd::sys::kill(i32::try_from(guard.daemon.id()).unwrap(), libc::SIGTERM).unwrap();
    assert!(wait_exit(&mut guard.daemon, Duration::from_secs(10)).success());
}
