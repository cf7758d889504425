//! `run`: create, start, wait, delete; the exit code is the container's.

use std::os::fd::AsFd;

use super::create::CreateOptions;
use super::runtime::{Runtime, RuntimeError};
use crate::runtime::process;
use crate::runtime::sys::{self, SignalFd, WaitStatus};

/// Options of `run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// As for `create`.
    pub create: CreateOptions,
    /// Return after starting (`--detach`).
    pub detach: bool,
    /// Keep the stopped container's state (`--keep`).
    pub keep: bool,
}

/// Signals `run` forwards to the container instead of dying of them.
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

impl Runtime {
    /// Runs container `id` in the foreground, with the caller's stdio, and
    /// returns its exit code (128 + signal when killed). With `detach` it
    /// returns 0 once the container runs.
    pub fn run(&self, id: &str, opts: &RunOptions) -> Result<i32, RuntimeError> {
        // Blocked before clone so no signal is lost; the init unblocks
        // everything before execve.
        let signals = if opts.detach {
            None
        } else {
            SignalFd::block(FORWARDED).ok()
        };
        let container = self.create(id, &opts.create)?;
        // Fails too when the init fails before execve (a startContainer
        // hook, the seccomp filter, execve: reported on the fifo).
        if let Err(e) = self.release(&container.dir, &container.record) {
            container.process.kill();
            let _ = self.destroy(&container.dir, &container.record);
            return Err(e);
        }
        // execve succeeded.
        self.poststart(&container.record);
        if opts.detach {
            return Ok(0);
        }
        let status = wait_forwarding(&container.process, signals.as_ref()).map_err(|source| {
            RuntimeError::Process {
                what: "cannot wait for",
                id: id.to_string(),
                source,
            }
        })?;
        if !opts.keep {
            self.destroy(&container.dir, &container.record)?;
        }
        Ok(status.code())
    }
}

fn wait_forwarding(
    child: &process::Spawned,
    signals: Option<&SignalFd>,
) -> Result<WaitStatus, sys::Errno> {
    let (Some(pidfd), Some(signals)) = (&child.pidfd, signals) else {
        return child.wait();
    };
    loop {
        let [exited, signalled] = sys::poll_readable([pidfd.as_fd(), signals.as_fd()], -1)?;
        if signalled {
            let sig = signals.read()?;
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), sig);
        }
        if exited {
            return child.wait();
        }
    }
}
