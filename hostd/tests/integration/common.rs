//! Helpers shared by the integration tests.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use mkhost_shared::control::{self, Request, Response, Status};

pub const HOSTD: &str = env!("CARGO_BIN_EXE_hostd");
pub const INIT: &str = env!("CARGO_BIN_EXE_init");

/// `present`, or a skip: a test whose prerequisite (`what`) is missing
/// prints a `SKIPPED` line and returns early, except with `CI` set, where it
/// fails (CI runs as root after ci/install-deps, so a skip would hide a
/// broken setup).
pub fn require(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(!ci, "{test}: needs {what}, which CI must provide");
    eprintln!("SKIPPED {test}: needs {what} (with CI set this fails)");
    false
}

/// Runs a setup tool (umoci, tar...) and fails the test with its stderr.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stdout of a command that must have succeeded (else the test fails
/// with its stderr).
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{out:?}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asks the daemon at `socket` for its status until it answers or `timeout` passes.
pub fn wait_for_status(socket: &Path, timeout: Duration) -> Status {
    let deadline = Instant::now() + timeout;
    loop {
        match control::request(socket, &Request::Status, Duration::from_secs(1)) {
            Ok(Response::Status(status)) => return status,
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(e) if Instant::now() >= deadline => panic!("daemon never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for `child` to exit within `timeout`; kills it and panics otherwise.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child whose stdout and stderr lines arrive on one channel.
pub struct Console {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Console {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `pred`, returning it; panics with everything seen
    /// so far on timeout.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching line within {timeout:?}; console so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Collects what arrives within `period`.
    pub fn drain(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }
}
