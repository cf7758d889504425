//! `start`: release the init blocked on `exec.fifo`; then the `poststart`
//! hooks.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::runtime::{state_err, Runtime, RuntimeError};
use crate::runtime::hooks::{self, Kind};
use crate::runtime::process::{self, SpawnError};
use crate::runtime::state::{self, Record, Status};
use crate::runtime::sys::{self, Errno};

/// How long `start` waits for the init to take the fifo's byte, and then
/// for its `execve` (plus the `startContainer` hooks' timeouts).
const START_TIMEOUT_MS: u32 = 10_000;

impl Runtime {
    /// Starts a created container: its init runs the `startContainer`
    /// hooks and `execve`, then the `poststart` hooks run here. Fails when
    /// the init fails before `execve` (a `startContainer` hook, its seccomp
    /// filter, `execve` itself); `poststart` runs only after a successful
    /// `execve`.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (dir, record, status) = self.load(id)?;
        if status != Status::Created {
            return Err(RuntimeError::Status {
                id: id.to_string(),
                status,
                action: "start",
            });
        }
        self.release(&dir, &record)?;
        self.poststart(&record);
        Ok(())
    }

    /// The `poststart` hooks of a container whose process runs.
    pub(super) fn poststart(&self, record: &Record) {
        let pid = u32::try_from(record.pid).ok();
        self.run_hooks_logged(record, Kind::Poststart, hooks::RUNNING, pid);
    }

    /// Opens `exec.fifo` for reading, which lets the init's blocked open for
    /// writing complete; the init writes one byte, runs the `startContainer`
    /// hooks and goes on to its seccomp filter and `execve`, which closes its
    /// end of the fifo. A failure of any of these is reported there instead
    /// (see [`process::wait_for_exec`]); the container is then stopped.
    pub(super) fn release(&self, dir: &Path, record: &Record) -> Result<(), RuntimeError> {
        let hooks = self.hooks(record);
        let hook_time = match &hooks {
            Some(h) => h.time_limit_ms(Kind::StartContainer),
            None => Some(0),
        };
        let timeout = hook_time.map(|ms| ms + u64::from(START_TIMEOUT_MS));
        let fifo = take_byte(dir, record)?;
        match process::wait_for_exec(fifo.as_fd(), timeout, hooks.as_ref()) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The init exits after its report; make sure it is gone.
                if let Ok(pidfd) = sys::pidfd_open(record.pid) {
                    if state::alive(record) {
                        let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                    }
                }
                Err(match e {
                    SpawnError::Hook(h) => RuntimeError::Hook(h),
                    e => e.into(),
                })
            }
        }
    }
}

/// The first half of [`Runtime::release`]: opens `exec.fifo`, takes the
/// init's byte and removes the fifo; returns the fifo, still open for the
/// init's report.
fn take_byte(dir: &Path, record: &Record) -> Result<File, RuntimeError> {
    let id = &record.id;
    let fifo_path = dir.join(state::FIFO);
    let process_err = |what: &'static str| {
        move |source: Errno| RuntimeError::Process {
            what,
            id: id.clone(),
            source,
        }
    };
    // Pin the process first, then check it is still ours.
    let pidfd = sys::pidfd_open(record.pid).map_err(process_err("cannot open pidfd of"))?;
    if !state::alive(record) {
        return Err(RuntimeError::DiedBeforeStart(id.clone()));
    }
    // Non-blocking: a dead init must not hang us.
    let mut fifo = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .map_err(state_err(&fifo_path))?;
    let timeout = START_TIMEOUT_MS as i32;
    let [fifo_ready, died] = sys::poll_readable([fifo.as_fd(), pidfd.as_fd()], timeout)
        .map_err(process_err("cannot wait for"))?;
    let mut byte = [0u8; 1];
    let got = if fifo_ready {
        match fifo.read(&mut byte) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(state_err(&fifo_path)(e)),
        }
    } else {
        0
    };
    if got != 1 {
        if died {
            return Err(RuntimeError::DiedBeforeStart(id.clone()));
        }
        return Err(RuntimeError::Process {
            what: "timed out starting",
            id: id.clone(),
            source: Errno(libc::ETIMEDOUT),
        });
    }
    fs::remove_file(&fifo_path).map_err(state_err(&fifo_path))?;
    Ok(fifo)
}
