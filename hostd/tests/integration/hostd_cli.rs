//! The `hostd` binary: daemon, `status` client, SIGTERM shutdown.

use std::process::Command;
use std::time::Duration;

use crate::common::{wait_exit, wait_for_status, HOSTD};

#[test]
fn daemon_answers_status_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/hostd/hostd.sock");
    let mut daemon = Command::new(HOSTD)
        .args(["daemon", "--socket"])
        .arg(&socket)
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--containers")
        .arg(dir.path().join("containers"))
        .args(["--docker-socket", "none"])
        .spawn()
        .unwrap();
    let status = wait_for_status(&socket, Duration::from_secs(10));
    assert_eq!(status.pid, daemon.id());
    assert_eq!(status.version, hostd::VERSION);
    assert_eq!(status.containers, 0);

    // The CLI client prints the JSON answer.
    let out = Command::new(HOSTD)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["pid"], daemon.id());
    assert_eq!(answer["version"], hostd::VERSION);
    assert_eq!(answer["containers"], 0);
    assert!(answer["uptime_ms"].is_u64());

    let pid = i32::try_from(daemon.id()).unwrap();
    hostd::os::kill(pid, libc::SIGTERM).unwrap();
    let exit = wait_exit(&mut daemon, Duration::from_secs(10));
    assert!(exit.success(), "{exit}");
    assert!(!socket.exists(), "socket left behind");
}

#[test]
fn status_without_daemon_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(HOSTD)
        .args(["status", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("daemon not running"), "{stderr}");
    assert!(stderr.contains("none.sock"), "{stderr}");
}

#[test]
fn second_daemon_on_same_socket_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hostd.sock");
    // Every path in the temporary directory: never the host's /run/hostd
    // (state) or /etc/hostd (boot manifest).
    let daemon = || {
        let mut c = Command::new(HOSTD);
        c.arg("--socket")
            .arg(&socket)
            .arg("--store")
            .arg(dir.path().join("store"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--containers")
            .arg(dir.path().join("containers"))
            .args(["--docker-socket", "none"])
            .arg("--boot-manifest")
            .arg(dir.path().join("containers.json"));
        c
    };
    let mut first = daemon().spawn().unwrap();
    wait_for_status(&socket, Duration::from_secs(10));
    let out = daemon().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // The first one still serves.
    wait_for_status(&socket, Duration::from_secs(5));
    hostd::os::kill(i32::try_from(first.id()).unwrap(), libc::SIGTERM).unwrap();
    assert!(wait_exit(&mut first, Duration::from_secs(10)).success());
}

#[test]
fn version_and_usage() {
    let out = Command::new(HOSTD).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hostd {}", hostd::VERSION)
    );
    let out = Command::new(HOSTD).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
