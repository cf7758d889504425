//! `kill`: send a signal to the container's init (or all its processes).

use std::os::fd::AsFd;

use super::runtime::{Runtime, RuntimeError};
use crate::runtime::state::{self, Status};
use crate::runtime::sys::{self, Errno};

/// Signal names without the `SIG` prefix, by number.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

impl Runtime {
    /// Sends `signal` to the init of a created or running container; with
    /// `all`, to every process of its cgroup too.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let (_, record, status) = self.load(id)?;
        if status == Status::Stopped {
            return Err(RuntimeError::Status {
                id: id.to_string(),
                status,
                action: "kill",
            });
        }
        let process_err = |what: &'static str| {
            move |source: Errno| RuntimeError::Process {
                what,
                id: id.to_string(),
                source,
            }
        };
        if all {
            if let Some(cg) = &record.cgroup {
                for pid in self.cgroups.pids(cg)? {
                    if pid != record.pid {
                        let _ = sys::kill(pid, signal);
                    }
                }
            }
        }
        // The pidfd pins the pid; the start time proves it is still ours.
        let pidfd = sys::pidfd_open(record.pid).map_err(process_err("cannot open pidfd of"))?;
        if !state::alive(&record) {
            return Err(RuntimeError::Status {
                id: id.to_string(),
                status: Status::Stopped,
                action: "kill",
            });
        }
        sys::pidfd_send_signal(pidfd.as_fd(), signal).map_err(process_err("cannot signal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("sigterm"), Some(15));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
    }
}
