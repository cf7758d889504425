//! `start`: release the init blocked on `exec.fifo`.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::runtime::{state_err, Runtime, RuntimeError};
use crate::runtime::process;
use crate::runtime::state::{self, Record, Status};
use crate::runtime::sys::{self, Errno};

/// How long `start` waits for the init to take the fifo's byte, and then
/// for its `execve`.
const START_TIMEOUT_MS: u32 = 10_000;

impl Runtime {
    /// Starts a created container: its init runs `execve`. Fails when the
    /// init fails before `execve` (its seccomp filter, `execve` itself).
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (dir, record, status) = self.load(id)?;
        if status != Status::Created {
            return Err(RuntimeError::Status {
                id: id.to_string(),
                status,
                action: "start",
            });
        }
        release(&dir, &record)
    }
}

/// Opens `exec.fifo` for reading, which lets the init's blocked open for
/// writing complete; the init writes one byte and goes on to `execve`, and
/// the fifo tells whether that succeeded.
pub(super) fn release(dir: &Path, record: &Record) -> Result<(), RuntimeError> {
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
    process::wait_for_exec(fifo.as_fd(), START_TIMEOUT_MS)?;
    Ok(())
}
