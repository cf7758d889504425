//! The debug shell: busybox `sh` on the console for an operator, respawned
//! when it exits.
//!
//! Only images built with `debug_shell = true` contain busybox; `init` never
//! depends on it otherwise. The shell runs in its own session with the console
//! as its controlling terminal (so Ctrl-C reaches it, not `init`). The console
//! is `mkhost.console=` if given, else the kernel's active console from
//! `/sys/class/tty/console/active` (a real tty, unlike `/dev/console`).

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::init::mounts::at;
use crate::init::supervisor::Backoff;
use crate::os;

/// The shell binary.
pub const SHELL: &str = "/bin/sh";

/// The console device for the shell.
pub fn console_device(root: &Path, param: Option<&str>) -> PathBuf {
    if let Some(dev) = param {
        return at(root, &format!("/dev/{dev}"));
    }
    std::fs::read_to_string(at(root, "/sys/class/tty/console/active"))
        .ok()
        .and_then(|s| s.split_whitespace().last().map(str::to_string))
        .map(|dev| at(root, &format!("/dev/{dev}")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| at(root, "/dev/console"))
}

/// A respawning shell.
#[derive(Debug)]
pub struct DebugShell {
    tty: PathBuf,
    pid: Option<i32>,
    next_start: Option<Instant>,
    backoff: Backoff,
    started_at: Option<Instant>,
}

impl DebugShell {
    /// A shell on `tty`, not started yet.
    pub fn new(tty: PathBuf) -> Self {
        Self {
            tty,
            pid: None,
            next_start: None,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            started_at: None,
        }
    }

    /// The console it runs on.
    pub fn tty(&self) -> &Path {
        &self.tty
    }

    /// Its pid while running.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Asks for a start at `at` (if not running).
    pub fn schedule(&mut self, when: Instant) {
        if self.pid.is_none() && self.next_start.is_none() {
            self.next_start = Some(when);
        }
    }

    /// No more starts (shutdown).
    pub fn disable(&mut self) {
        self.next_start = None;
    }

    /// When [`DebugShell::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_start
    }

    fn spawn(&self) -> io::Result<i32> {
        let open = || OpenOptions::new().read(true).write(true).open(&self.tty);
        let mut cmd = Command::new(SHELL);
        cmd.stdin(Stdio::from(open()?))
            .stdout(Stdio::from(open()?))
            .stderr(Stdio::from(open()?))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/")
            .env("TERM", "linux")
            .env("PS1", "\\h:\\w# ")
            .current_dir("/");
        os::make_session_leader_with_tty(&mut cmd);
        os::unblock_signals_on_exec(&mut cmd);
        let child = cmd.spawn()?;
        i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))
    }

    /// Starts the shell when due. Returns a message for the log.
    pub fn tick(&mut self, now: Instant) -> Option<String> {
        self.next_start.filter(|t| now >= *t)?;
        match self.spawn() {
            Ok(pid) => {
                self.pid = Some(pid);
                self.next_start = None;
                self.started_at = Some(now);
                Some(format!(
                    "debug shell on {} (pid {pid}): press Enter for a prompt",
                    self.tty.display()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.next_start = None;
                Some(format!(
                    "no debug shell: {SHELL} is not in this image (build it with debug_shell = true)"
                ))
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                self.next_start = Some(now + delay);
                Some(format!(
                    "cannot start debug shell {SHELL} on {}: {e}; retrying in {} ms",
                    self.tty.display(),
                    delay.as_millis()
                ))
            }
        }
    }

    /// Handles the exit of `pid`; schedules a respawn if it was the shell.
    pub fn exited(&mut self, pid: i32, now: Instant) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        if self
            .started_at
            .is_some_and(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.backoff.reset();
        }
        self.next_start = Some(now + self.backoff.next_delay());
        true
    }
}
