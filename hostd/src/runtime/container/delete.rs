//! `delete`: remove a stopped container (with `--force`, kill it first).

use std::os::fd::AsFd;

use super::runtime::{Runtime, RuntimeError};
use crate::runtime::state::{self, Record, Status};
use crate::runtime::sys;

/// How long `delete` waits for a killed init to die.
const KILL_TIMEOUT_MS: i32 = 10_000;

impl Runtime {
    /// Deletes a container. A stopped one is removed; a created one (never
    /// started) is killed and removed, as runc does; a running one only with
    /// `force`.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let (dir, record, status) = match self.load(id) {
            Ok(x) => x,
            // A directory without a readable record (interrupted create):
            // --force removes it.
            Err(RuntimeError::State { .. }) if force => {
                let _ = std::fs::remove_dir_all(self.dir(id));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match status {
            Status::Stopped => {}
            Status::Running if !force => {
                return Err(RuntimeError::Status {
                    id: id.to_string(),
                    status,
                    action: "delete",
                })
            }
            Status::Created | Status::Running => kill_and_wait(&record)?,
        }
        self.destroy(&dir, &record)
    }
}

/// SIGKILLs the init and waits until it is gone (it need not be our child:
/// a pidfd becomes readable when the process exits).
fn kill_and_wait(record: &Record) -> Result<(), RuntimeError> {
    let pidfd = match sys::pidfd_open(record.pid) {
        Ok(fd) => fd,
        Err(_) => return Ok(()),
    };
    if !state::alive(record) {
        return Ok(());
    }
    let process_err = |what: &'static str| {
        move |source| RuntimeError::Process {
            what,
            id: record.id.clone(),
            source,
        }
    };
    sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL).map_err(process_err("cannot kill"))?;
    let [gone] = sys::poll_readable([pidfd.as_fd()], KILL_TIMEOUT_MS)
        .map_err(process_err("cannot wait for"))?;
    if !gone {
        return Err(RuntimeError::Process {
            what: "timed out killing",
            id: record.id.clone(),
            source: sys::Errno(libc::ETIMEDOUT),
        });
    }
    // Our own child (run, or create in this process) must be reaped.
    let _ = sys::waitid_pidfd(pidfd.as_fd(), false);
    Ok(())
}
