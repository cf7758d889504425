//! Many containers on one daemon: a limit reached is named and creates
//! nothing half-way, a hundred clients starting at once are all answered,
//! every creator is reaped (no zombie left) and containers that exit at
//! once keep their exit codes, clients that leave mid-create leave nothing
//! behind, once every
//! container is removed the daemon and the zygote hold the descriptors they
//! held before, and a new daemon re-adopts more containers than one batch
//! of the zygote's `attach_many` holds. A networked container's start
//! copies none of the host's network namespace files (the spawner's mount
//! namespace, a slave of the host's, lacks them), yet sees what the host
//! mounts later; on a host whose mounts are private, the host's table. A
//! spawner killed, idle or with creates in flight, is replaced, and each
//! of those creates is made whole or refused with the reason.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{ok, processes, wait_for_status, wait_until, zygote_pid, Daemon, HOSTD};
use crate::containers::{
    build_image, daemon_with_image, hostd, hostd_run, import_image, ps, wait_for, zombie_children,
};

/// Open descriptors of process `pid`: (sockets, all others). Sockets
/// vary with how many connections the daemon keeps to its zygote (more
/// after parallel starts); pipes and pidfds are what containers hold.
fn open_files(pid: i32) -> (usize, usize) {
    let mut counts = (0, 0);
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let target = fs::read_link(fd.path()).unwrap_or_default();
        match target.to_string_lossy().starts_with("socket:") {
            true => counts.0 += 1,
            false => counts.1 += 1,
        }
    }
    counts
}

/// The zygote's living children: (its helpers, in its own pid namespace:
/// the spawner, creators; the containers' inits, in pid namespaces of
/// their own). A creator that has answered may still be exiting, or be a
/// zombie for an instant (the zygote reaps it once it has exited): one
/// that has left its namespaces is neither.
fn zygote_children(zygote: i32) -> (Vec<i32>, Vec<i32>) {
    let pid_ns = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let own = pid_ns(zygote);
    let (mut helpers, mut inits) = (Vec::new(), Vec::new());
    for child in processes().into_iter().filter(|p| p.ppid == zygote) {
        // An exiting process has left its namespaces.
        match pid_ns(child.pid) {
            None => {}
            ns if ns == own => helpers.push(child.pid),
            Some(_) => inits.push(child.pid),
        }
    }
    (helpers, inits)
}

/// `hostd run -d` of a container `name` that sleeps, with no network.
fn run_sleeping(socket: &Path, name: &str) -> std::process::Output {
    hostd_run(
        socket,
        &["--network", "none", "--name", name, "bb", "sleep", "1000"],
    )
}

/// A daemon with the test image and one sleeping container `name`: the
/// daemon, its control socket and its zygote's pid.
fn daemon_with_a_container<'a>(work: &'a Path, name: &str) -> (Daemon<'a>, PathBuf, i32) {
    let daemon = daemon_with_image(work);
    let socket = daemon.socket();
    ok(&run_sleeping(&socket, name));
    let zygote = zygote_pid(work).expect("the zygote's pid file");
    (daemon, socket, zygote)
}

/// `count` runs of `sleep` at once, one client each: their outputs.
fn run_at_once(socket: &Path, prefix: &str, count: usize) -> Vec<std::process::Output> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|i| scope.spawn(move || run_sleeping(socket, &format!("{prefix}{i}"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Removes every container, several clients at once.
fn remove_all(socket: &Path) {
    let names: Vec<String> = ps(socket).into_iter().map(|r| r.name).collect();
    std::thread::scope(|scope| {
        for chunk in names.chunks(8) {
            scope.spawn(move || {
                for name in chunk {
                    ok(&hostd(socket, &["rm", "-f", name]));
                }
            });
        }
    });
    assert!(ps(socket).is_empty());
}

/// The containers the daemon lists, its container directories and the
/// zygote's children (the inits) agree: nothing was created half-way.
fn assert_consistent(socket: &Path, work: &Path, zygote: i32) -> usize {
    let rows = ps(socket);
    assert!(
        rows.iter().all(|r| r.status == "running"),
        "{:?}",
        rows.iter()
            .map(|r| (&r.name, &r.status))
            .collect::<Vec<_>>()
    );
    let dirs = fs::read_dir(work.join("containers")).unwrap().count();
    assert_eq!(dirs, rows.len(), "container directories vs ps");
    let (_, inits) = zygote_children(zygote);
    assert_eq!(
        inits.len(),
        rows.len(),
        "the zygote's children vs ps: {inits:?}"
    );
    rows.len()
}

#[test]
fn limits_parallel_starts_and_no_leaked_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    // 400 descriptors, and no CAP_SYS_RESOURCE to raise them again.
    let daemon = Daemon::start_wrapped(
        work,
        Path::new(HOSTD),
        &[],
        &[
            "setpriv",
            "--bounding-set",
            "-sys_resource",
            "prlimit",
            "--nofile=400:400",
        ],
    );
    let socket = daemon.socket();
    import_image(&socket, work);
    let status = wait_for_status(&socket, Duration::from_secs(5));
    let daemon_pid = i32::try_from(status.pid).unwrap();
    let zygote = zygote_pid(work).unwrap();
    let limits = status.limits.expect("status reports the limits");
    assert_eq!(limits.daemon_files.limit, 400, "{limits:?}");
    assert_eq!(limits.zygote_files.limit, 400, "{limits:?}");
    assert_eq!(
        (
            limits.daemon_files_per_container,
            limits.zygote_files_per_container
        ),
        (3, 2)
    );
    assert_eq!(
        limits.bound_by, "the daemon's open-file limit",
        "{limits:?}"
    );
    assert!(limits.room > 20 && limits.room < 48, "{limits:?}");
    assert!(limits.tasks.limit > limits.tasks.used, "{limits:?}");

    // A first container opens what the daemon opens lazily; then the
    // descriptors held with no container are the baseline.
    ok(&hostd_run(
        &socket,
        &["--network", "none", "--name", "warm", "bb", "true"],
    ));
    ok(&hostd(&socket, &["rm", "-f", "warm"]));
    std::thread::sleep(Duration::from_millis(300));
    let baseline = (open_files(daemon_pid), open_files(zygote));

    // A hundred clients at once: more than the limit allows. Each is
    // answered; a refusal names the limit; nothing is half-created.
    let outputs = run_at_once(&socket, "c", 100);
    let mut refusals = 0;
    for out in outputs.iter().filter(|o| !o.status.success()) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("RLIMIT_NOFILE") || stderr.contains("too many connections"),
            "{stderr}\ndaemon:\n{}",
            daemon.output()
        );
        refusals += usize::from(stderr.contains("RLIMIT_NOFILE"));
    }
    let started = outputs.iter().filter(|o| o.status.success()).count();
    assert!(
        refusals > 0,
        "no start was refused: {started} started; {:?}; daemon fds {:?}",
        wait_for_status(&socket, Duration::from_secs(5)).limits,
        open_files(daemon_pid)
    );
    // The limit allows (400 - 256 reserved - 4) / 3 = 46 and starts racing
    // past the check add at most one per zygote connection.
    assert!(
        (limits.room as usize..=46 + 8).contains(&started),
        "{started} started, room was {}",
        limits.room
    );
    assert_eq!(assert_consistent(&socket, work, zygote), started);
    let full = wait_for_status(&socket, Duration::from_secs(5))
        .limits
        .unwrap();
    assert!(full.room < 4, "{full:?}");
    remove_all(&socket);

    // One start at a time: the creator that forked its init, which exits
    // right after it has answered, is reaped, not left a zombie child of
    // the zygote.
    for i in 0..5 {
        ok(&run_sleeping(&socket, &format!("z{i}")));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            zombie_children(zygote, "hostd"),
            Vec::<i32>::new(),
            "after start {i}"
        );
    }

    // Containers that exit at once, many at a time: each init is reaped
    // with its own exit code (it is the zygote's child once its creator
    // has exited); no creator is left a zombie.
    let quick: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let socket = &socket;
                scope.spawn(move || {
                    let name = format!("q{i}");
                    let code = format!("exit {}", i + 1);
                    hostd_run(
                        socket,
                        &[
                            "--network",
                            "none",
                            "--name",
                            &name,
                            "bb",
                            "sh",
                            "-c",
                            &code,
                        ],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, out) in quick.iter().enumerate() {
        ok(out);
        let name = format!("q{i}");
        let r = wait_for(&socket, &name, "exited", |r| r.status == "exited");
        assert_eq!(r.exit_code, Some(i as i32 + 1), "{r:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(zombie_children(zygote, "hostd"), Vec::<i32>::new());
    remove_all(&socket);

    // Clients killed while their container is being created: each
    // container is either created whole (as with dockerd, the daemon
    // finishes what it started) or not at all.
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80] {
        let mut client = std::process::Command::new(HOSTD)
            .args(["run", "-d", "--socket"])
            .arg(&socket)
            .args(["--network", "none", "--name"])
            .arg(format!("gone{delay_ms}"))
            .args(["bb", "sleep", "1000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = client.kill();
        let _ = client.wait();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_consistent(&socket, work, zygote);
    remove_all(&socket);

    // Every descriptor a container took is given back, in both processes.
    let others = |(_, others): (usize, usize)| others;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = (open_files(daemon_pid), open_files(zygote));
    while (others(now.0), others(now.1)) != (others(baseline.0), others(baseline.1))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        now = (open_files(daemon_pid), open_files(zygote));
    }
    assert_eq!(
        (others(now.0), others(now.1)),
        (others(baseline.0), others(baseline.1)),
        "(daemon, zygote) descriptors other than sockets after all are removed"
    );
    // The zygote connections the daemon keeps: at most 64 more.
    assert!(
        now.0 .0 <= baseline.0 .0 + 64 && now.1 .0 <= baseline.1 .0 + 64,
        "{now:?}"
    );
    daemon.terminate();
}

#[test]
fn a_new_daemon_readopts_more_than_one_batch() {
    use mkhost_shared::container::RunRequest;
    use mkhost_shared::control::{self, Request, Response};
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let first = daemon_with_image(work);
    let socket = first.socket();
    // More than two batches of the zygote's attach_many (48 each); some
    // with an open standard input, a fourth descriptor each.
    for i in 0..6 {
        let request = RunRequest {
            image: "bb".into(),
            name: Some(format!("in{i}")),
            network: Some("none".into()),
            command: vec!["cat".into()],
            open_stdin: true,
            ..RunRequest::default()
        };
        let answer = control::request(
            &socket,
            &Request::Run(Box::new(request)),
            Duration::from_secs(30),
        );
        assert!(matches!(answer, Ok(Response::Started(_))), "{answer:?}");
    }
    let outputs = run_at_once(&socket, "c", 100);
    assert!(outputs.iter().all(|o| o.status.success()), "{outputs:?}");
    let before: Vec<(String, i32)> = ps(&socket).into_iter().map(|r| (r.name, r.pid)).collect();
    assert_eq!(before.len(), 106);
    first.kill9();

    let second = Daemon::start(work, Path::new(HOSTD), &[]);
    assert!(
        second
            .output()
            .contains("re-adopted 106 running containers"),
        "{}",
        second.output()
    );
    let mut after: Vec<(String, i32, String)> = ps(&socket)
        .into_iter()
        .map(|r| (r.name, r.pid, r.status))
        .collect();
    after.sort();
    let mut expected: Vec<(String, i32, String)> = before
        .into_iter()
        .map(|(name, pid)| (name, pid, "running".to_string()))
        .collect();
    expected.sort();
    assert_eq!(after, expected, "the same containers, the same processes");
    // Each holds its descriptors in the new daemon: 3, or 4 with stdin.
    let daemon_pid = i32::try_from(wait_for_status(&socket, Duration::from_secs(5)).pid).unwrap();
    assert!(
        open_files(daemon_pid).1 >= 100 * 3 + 6 * 4,
        "{:?}",
        open_files(daemon_pid)
    );
    // Watched again: a stop is seen through the new pidfd and reaped.
    for name in ["in0", "in5", "c0", "c99"] {
        ok(&hostd(&socket, &["stop", "-t", "1", name]));
        let record = crate::containers::find(&socket, name);
        assert_eq!(record.status, "exited", "{record:?}");
        assert!(record.exit_code.is_some(), "{record:?}");
    }
    remove_all(&socket);
    second.terminate();
}

/// Whether this machine's `/` propagates (`shared:N` in mountinfo).
fn root_is_shared() -> bool {
    hostd::os::root_is_shared(&fs::read_to_string("/proc/self/mountinfo").unwrap())
}

/// The zygote's spawner: its one helper once the creators of the last
/// starts have finished exiting (waited for up to 5 s).
fn spawner_of(zygote: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let helpers = zygote_children(zygote).0;
        if let [spawner] = helpers[..] {
            return spawner;
        }
        assert!(
            Instant::now() < deadline,
            "the zygote's helpers: {helpers:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mount namespace the spawner holds open for containers to copy
/// theirs from: `/proc/<spawner>/fd/<n>`, the one of its descriptors that
/// is a mount namespace other than its own.
fn containers_mount_namespace(zygote: i32) -> std::path::PathBuf {
    let spawner = spawner_of(zygote);
    let own = fs::read_link(format!("/proc/{spawner}/ns/mnt")).unwrap();
    fs::read_dir(format!("/proc/{spawner}/fd"))
        .unwrap()
        .flatten()
        .map(|fd| fd.path())
        .find(|fd| {
            fs::read_link(fd)
                .is_ok_and(|target| target.to_string_lossy().starts_with("mnt:[") && target != own)
        })
        .expect("the spawner holds a mount namespace of its own making")
}

/// `hostd run` without `-d`: the container's output.
fn run_in_foreground(socket: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(HOSTD)
        .args(["run", "--socket"])
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// The mount table of the namespace at `namespace`.
fn mount_table_of(namespace: &Path) -> String {
    ok(&std::process::Command::new("nsenter")
        .arg(format!("--mount={}", namespace.display()))
        .args(["cat", "/proc/self/mountinfo"])
        .output()
        .unwrap())
}

#[test]
fn networked_starts_copy_no_network_namespace_files() {
    if !crate::common::require(
        root_is_shared(),
        "a shared root mount (mount --make-rshared /, as systemd leaves it)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    let srv = work.join("srv");
    fs::create_dir_all(&srv).unwrap();
    let daemon = Daemon::start(
        work,
        Path::new(HOSTD),
        &["--bind-root", srv.to_str().unwrap()],
    );
    let socket = daemon.socket();
    import_image(&socket, work);
    let netns_dir = work.join("state/netns").display().to_string();
    let netns_files = |table: &str| {
        table
            .lines()
            .filter(|l| l.contains(" nsfs ") && l.contains(&netns_dir))
            .count()
    };
    // Three containers on the default network: three namespace files in
    // the host's mount table, none in the one containers copy.
    for i in 0..3 {
        let name = format!("n{i}");
        ok(&hostd_run(
            &socket,
            &["--name", &name, "bb", "sleep", "1000"],
        ));
    }
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(netns_files(&host), 3, "{host}");
    let zygote = zygote_pid(work).unwrap();
    let namespace = containers_mount_namespace(zygote);
    let copied = mount_table_of(&namespace);
    assert_eq!(netns_files(&copied), 0, "{copied}");

    // A mount the host makes now reaches the next container (the
    // namespace is the host's slave): a tmpfs under the bind root.
    let late = srv.join("late");
    fs::create_dir_all(&late).unwrap();
    hostd::os::mount("late", &late, "tmpfs", hostd::os::MountFlags::empty(), None).unwrap();
    fs::write(late.join("f"), "mounted after the daemon started\n").unwrap();
    let bind = format!("{}:/late:ro", late.display());
    let out = ok(&run_in_foreground(
        &socket,
        &[
            "--rm",
            "--network",
            "none",
            "-v",
            &bind,
            "bb",
            "cat",
            "/late/f",
        ],
    ));
    assert!(out.contains("mounted after the daemon started"), "{out}");

    // A fourth networked container: its file reached the namespace and
    // was detached before its own clone.
    ok(&hostd_run(
        &socket,
        &["--name", "n3", "bb", "sleep", "1000"],
    ));
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(netns_files(&host), 4);
    let copied = mount_table_of(&namespace);
    assert_eq!(netns_files(&copied), 0, "{copied}");
    // Inside a networked container, the table is its own few mounts.
    let inside = ok(&run_in_foreground(
        &socket,
        &["--rm", "bb", "cat", "/proc/self/mountinfo"],
    ));
    assert!(!inside.contains(" nsfs "), "{inside}");
    for name in ["n0", "n1", "n2", "n3"] {
        ok(&hostd(&socket, &["rm", "-f", name]));
    }
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(netns_files(&host), 0, "{host}");
    assert!(ps(&socket).is_empty());
}

#[test]
fn a_host_with_private_mounts_copies_its_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    // The daemon in a mount namespace of its own whose mounts propagate
    // nowhere, as on a host booted without systemd.
    let daemon = Daemon::start_wrapped(
        work,
        Path::new(HOSTD),
        &[],
        &["unshare", "--mount", "--propagation", "private"],
    );
    let socket = daemon.socket();
    import_image(&socket, work);
    let out = ok(&run_in_foreground(&socket, &["bb", "echo", "networked"]));
    assert!(out.contains("networked"), "{out}");
    let log = fs::read_to_string(work.join("state/zygote.log")).unwrap();
    assert!(
        log.contains(
            "the host's root mount is private (not shared): containers copy the host's mount table"
        ),
        "{log}"
    );
}

#[test]
fn a_killed_spawner_is_replaced_and_nothing_is_left_half_made() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (daemon, socket, zygote) = daemon_with_a_container(work, "first");

    // Killed while idle: the next creates start another.
    let spawner = spawner_of(zygote);
    hostd::os::kill(spawner, libc::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let outputs = run_at_once(&socket, "idle", 8);
    assert!(outputs.iter().all(|o| o.status.success()), "{outputs:?}");
    let second = spawner_of(zygote);
    assert_ne!(second, spawner, "a new spawner");

    // Killed while creates are in flight: each is made whole or refused
    // with the reason, and every creator is reaped.
    let outputs = std::thread::scope(|scope| {
        let starts = scope.spawn(|| run_at_once(&socket, "busy", 24));
        std::thread::sleep(Duration::from_millis(30));
        hostd::os::kill(second, libc::SIGKILL).unwrap();
        starts.join().unwrap()
    });
    for out in outputs.iter().filter(|o| !o.status.success()) {
        let stderr = crate::containers::stderr_of(out);
        assert!(
            stderr.contains("spawner") || stderr.contains("creator"),
            "a refusal names what failed: {stderr}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(zombie_children(zygote, "hostd"), Vec::<i32>::new());
    let running = assert_consistent(&socket, work, zygote);
    let started = 1 + 8 + outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(running, started);
    // And creates go on.
    ok(&run_sleeping(&socket, "last"));
    remove_all(&socket);
    daemon.terminate();
}

/// Stops `spawner` (ptrace) at its next fork, the creator of a start, and
/// kills it there, before it can tell the zygote that creator's pid; the
/// creator goes on. Returns the creator's pid.
fn kill_at_next_fork(spawner: i32) -> i32 {
    let wait = |pid: i32| {
        let mut status = 0;
        // SAFETY: waitpid(2) with a valid pointer; __WALL for a tracee.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
        status
    };
    let options = libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEVFORK;
    // SAFETY: ptrace(2) attaching to a process of this test's; no pointer.
    let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, spawner, 0, options) };
    assert_eq!(seized, 0, "ptrace: {}", std::io::Error::last_os_error());
    loop {
        let status = wait(spawner);
        assert!(libc::WIFSTOPPED(status), "the spawner ended: {status:#x}");
        let event = status >> 16;
        let forked = [
            libc::PTRACE_EVENT_FORK,
            libc::PTRACE_EVENT_CLONE,
            libc::PTRACE_EVENT_VFORK,
        ]
        .contains(&event);
        if !forked {
            // A signal to pass on (or, for an event stop, none).
            let signal = if event == 0 {
                libc::WSTOPSIG(status)
            } else {
                0
            };
            // SAFETY: ptrace(2) on the stopped tracee; no pointer.
            unsafe { libc::ptrace(libc::PTRACE_CONT, spawner, 0, signal) };
            continue;
        }
        let mut creator: libc::c_ulong = 0;
        // SAFETY: ptrace(2) writes the new child's pid to `creator`.
        unsafe {
            libc::ptrace(
                libc::PTRACE_GETEVENTMSG,
                spawner,
                0,
                &mut creator as *mut libc::c_ulong,
            )
        };
        let creator = creator as i32;
        hostd::os::kill(spawner, libc::SIGKILL).unwrap();
        // Its death comes to the tracer first; then to the zygote.
        while !libc::WIFSIGNALED(wait(spawner)) {}
        // The creator starts stopped, traced too: it goes on untraced.
        wait(creator);
        // SAFETY: ptrace(2) on the stopped tracee; no pointer.
        let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, creator, 0, 0) };
        assert_eq!(detached, 0, "ptrace: {}", std::io::Error::last_os_error());
        return creator;
    }
}

#[test]
fn a_creator_whose_spawner_died_before_saying_its_pid_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (daemon, socket, zygote) = daemon_with_a_container(work, "first");
    let spawner = spawner_of(zygote);
    let (out, creator) = std::thread::scope(|scope| {
        let start = scope.spawn(|| run_sleeping(&socket, "caught"));
        let creator = kill_at_next_fork(spawner);
        (start.join().unwrap(), creator)
    });
    // The creator made the container and said so, with its own pid.
    ok(&out);
    wait_until(
        &format!("creator {creator} to be reaped, not left a zombie"),
        Duration::from_secs(5),
        || fs::metadata(format!("/proc/{creator}")).is_err(),
    );
    assert_eq!(zombie_children(zygote, "hostd"), Vec::<i32>::new());
    assert_eq!(assert_consistent(&socket, work, zygote), 2);
    ok(&run_sleeping(&socket, "last"));
    assert_ne!(spawner_of(zygote), spawner, "a new spawner");
    remove_all(&socket);
    daemon.terminate();
}

#[test]
fn a_daemon_that_connects_as_the_last_one_hangs_up_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (first, socket, zygote) = daemon_with_a_container(work, "kept");
    // The zygote, stopped, sees the old daemon's hang-ups and the new
    // daemon's connection in one poll when it goes on.
    hostd::os::kill(zygote, libc::SIGSTOP).unwrap();
    first.kill9();
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        hostd::os::kill(zygote, libc::SIGCONT).unwrap();
    });
    let second = Daemon::start(work, Path::new(HOSTD), &[]);
    resume.join().unwrap();
    assert!(
        second.output().contains("re-adopted 1 running containers"),
        "{}",
        second.output()
    );
    let rows = ps(&socket);
    assert_eq!(
        rows.iter()
            .map(|r| (r.name.as_str(), r.status.as_str()))
            .collect::<Vec<_>>(),
        [("kept", "running")]
    );
    remove_all(&socket);
    second.terminate();
}
