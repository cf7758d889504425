//! The `init` binary against a temporary root: as an ordinary process (no
//! mounts), and as PID 1 of fresh PID, mount and UTS namespaces when `unshare`
//! works (root).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mkhost_shared::paths::CONTROL_SOCKET as SOCKET_PATH;

use crate::common::{require, wait_exit, wait_for_status, Console, HOSTD, INIT};

const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// A root with hostd, a boot config naming one missing module, and nothing else.
fn make_root(dir: &Path) {
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink(HOSTD, dir.join("usr/bin/hostd")).unwrap();
    std::fs::create_dir_all(dir.join("etc/mkhost")).unwrap();
    std::fs::write(
        dir.join("etc/mkhost/boot.json"),
        r#"{"profile":"test","kernel_release":"0.0-test","hostname":"mkhost-test",
            "debug_shell":false,"modules":["kernel/missing.ko"]}"#,
    )
    .unwrap();
}

fn is_ready(line: &str) -> bool {
    line.starts_with("mkhost: ready ")
}

#[test]
fn init_refuses_to_run_when_not_pid1() {
    let out = Command::new(INIT).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to run"), "{stderr}");
}

#[test]
fn init_boots_test_root_and_restarts_hostd() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_root(root);
    let socket = root.join(SOCKET_PATH.trim_start_matches('/'));

    let mut init = Console::spawn(
        Command::new(INIT)
            .arg("--test-root")
            .arg(root)
            .args(["--skip", "mounts,hostname"]),
    );
    let ready = init.wait_for(is_ready, BOOT_TIMEOUT);
    let expected = "mkhost: ready hostname=mkhost-test profile=test kernel=0.0-test boot_ms=";
    assert!(ready.starts_with(expected), "{ready}");
    assert!(
        ready.ends_with(" modules=0/1 coldplug=0 addresses=- state=ram(no_state_disk_configured)"),
        "{ready}"
    );
    let seen = init.seen.join("\n");
    for phase in [
        "init started version=",
        "boot config loaded profile=test kernel=0.0-test modules=1",
        "modules loaded 0/1 (0 already loaded, 0 not for this machine, 1 failed) in ",
        "hostd started pid=",
        "hostd answering pid=",
    ] {
        assert!(seen.contains(phase), "missing {phase:?} in:\n{seen}");
    }
    assert!(
        seen.contains("mkhost: warning: cannot open module ")
            && seen.contains("lib/modules/0.0-test/kernel/missing.ko"),
        "{seen}"
    );
    // Timeline lines carry boot-clock stamps.
    assert!(
        init.seen
            .iter()
            .any(|l| l.starts_with("mkhost: +") && l.contains("ms init started")),
        "{seen}"
    );

    // Kill hostd: init reports it and starts a new one.
    let first = wait_for_status(&socket, Duration::from_secs(5));
    // hostd starts with init's blocked signals cleared: it blocks only the
    // two it waits for itself (SIGINT, SIGTERM). glibc's posix_spawn (behind
    // std's Command) blocks every signal while it clones a child, so a
    // read can land in that instant: the mask is read until it settles.
    let blocked_of_hostd = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", first.pid)).unwrap();
        let line = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    let settle_deadline = Instant::now() + Duration::from_secs(5);
    let mut blocked = blocked_of_hostd();
    while blocked != "0000000000004002" && Instant::now() < settle_deadline {
        std::thread::sleep(Duration::from_millis(20));
        blocked = blocked_of_hostd();
    }
    assert_eq!(blocked, "0000000000004002");
    hostd::os::kill(i32::try_from(first.pid).unwrap(), libc::SIGKILL).unwrap();
    let exited = init.wait_for(|l| l.contains("hostd exited"), BOOT_TIMEOUT);
    assert_eq!(
        exited,
        "mkhost: hostd exited (signal: 9 (SIGKILL)), restarting in 100 ms"
    );
    init.wait_for(|l| l.contains("hostd answering"), BOOT_TIMEOUT);
    let second = wait_for_status(&socket, Duration::from_secs(5));
    assert_ne!(second.pid, first.pid);

    // A clean exit is restarted too, with a longer delay.
    hostd::os::kill(i32::try_from(second.pid).unwrap(), libc::SIGTERM).unwrap();
    let exited = init.wait_for(|l| l.contains("hostd exited"), BOOT_TIMEOUT);
    assert_eq!(
        exited,
        "mkhost: hostd exited (exit status: 0), restarting in 200 ms"
    );
    init.wait_for(|l| l.contains("hostd answering"), BOOT_TIMEOUT);
    let third = wait_for_status(&socket, Duration::from_secs(5));
    init.drain(Duration::from_millis(200));
    assert_eq!(
        init.seen.iter().filter(|l| is_ready(l)).count(),
        1,
        "ready line printed more than once:\n{}",
        init.seen.join("\n")
    );

    // Everything init and hostd printed is in the log under /run, stamped.
    let log = std::fs::read_to_string(root.join("run/log/hostd.log")).unwrap();
    assert!(
        log.contains("] mkhost: ready hostname=mkhost-test"),
        "{log}"
    );
    assert!(log.contains("] hostd: listening on"), "{log}");
    assert_eq!(log.matches("hostd exited").count(), 2, "{log}");

    // SIGTERM: init stops hostd and (in test mode) exits.
    hostd::os::kill(i32::try_from(init.child.id()).unwrap(), libc::SIGTERM).unwrap();
    let status = wait_exit(&mut init.child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    init.drain(Duration::from_millis(200));
    let seen = init.seen.join("\n");
    for step in [
        "shutdown: received SIGTERM",
        &format!("shutdown: stopping hostd pid={}", third.pid),
        "shutdown: hostd stopped (exit status: 0)",
    ] {
        assert!(seen.contains(step), "missing {step:?} in:\n{seen}");
    }
    assert!(!socket.exists(), "hostd removed its socket");
}

fn unshare_works() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--uts", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn init_as_pid1_in_namespaces_mounts_and_gets_ready() {
    if !require(unshare_works(), "a working unshare --pid --mount --uts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_root(root);

    // --kill-child: when unshare dies, PID 1 of the namespace (and so everything
    // in it) is killed.
    let mut init = Console::spawn(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--uts", "--kill-child", "--"])
            .arg(INIT)
            .arg("--test-root")
            .arg(root),
    );
    let ready = init.wait_for(is_ready, BOOT_TIMEOUT);
    assert!(
        ready.starts_with("mkhost: ready hostname=mkhost-test profile=test kernel=0.0-test"),
        "{ready}"
    );
    let seen = init.seen.join("\n");
    assert!(seen.contains("ms filesystems mounted ("), "{seen}");
    assert!(seen.contains("ms hostname set to mkhost-test"), "{seen}");
    assert!(!seen.contains("mkhost: error:"), "{seen}");
    // hostd runs as a child of PID 1 in the new namespace (init's helper
    // threads take the first few ids).
    let pid: u32 = seen
        .split("hostd started pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("hostd started line");
    assert!(pid < 10, "{seen}");

    init.child.kill().unwrap();
    wait_exit(&mut init.child, Duration::from_secs(10));
    // The namespace's mounts went with it: nothing is left mounted below root.
    assert!(!root.join("proc/self").exists());
}
