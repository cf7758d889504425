//! Signals blocked and waited for synchronously, the way `init` and the
//! daemon take them (no handlers).
//!
//! All `libc`: the signal mask belongs to glibc, which reserves signals of
//! its own in it, and rustix offers `sigprocmask`, `sigwait` and
//! `sigtimedwait` only as `unsafe` functions of its `runtime` module, which
//! bypass glibc.

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

/// Functions of the `pthread_*` family return the error number instead of -1.
fn check_errno(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// A set of signals, for blocking them and waiting for them synchronously.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set holding exactly `signals`.
    pub fn new(signals: &[libc::c_int]) -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the sigset_t it is pointed at.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigemptyset succeeded, so the set is initialised.
        let mut set = unsafe { set.assume_init() };
        for &signal in signals {
            // SAFETY: `set` is an initialised sigset_t we own.
            if unsafe { libc::sigaddset(&mut set, signal) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self(set))
    }

    /// Blocks the set's signals in the calling thread (threads spawned afterwards
    /// inherit the mask; `std::process::Command` resets it in children).
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: `self.0` is an initialised sigset_t; the old mask is not wanted,
        // which pthread_sigmask allows by passing null.
        check_errno(unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut())
        })
    }

    /// Waits until one of the (blocked) signals is pending and takes it.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        let mut signal: libc::c_int = 0;
        // SAFETY: `self.0` is an initialised sigset_t and `signal` a writable int.
        check_errno(unsafe { libc::sigwait(&self.0, &mut signal) })?;
        Ok(signal)
    }

    /// Like [`SignalSet::wait`] but gives up after `timeout`, returning `None`
    /// (also when interrupted by another signal).
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<libc::c_int>> {
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        };
        // SAFETY: `self.0` and `ts` are initialised and outlive the call; the
        // siginfo output is optional and passed as null.
        let ret = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(err),
            }
        } else {
            Ok(Some(ret))
        }
    }
}

/// Gives the child of `command` an empty signal mask. init blocks the
/// signals it waits for (SIGTERM, SIGCHLD, SIGPWR, ...) and a blocked mask
/// survives `execve`: without this, `kill PID` from the debug shell, or a
/// SIGTERM to hostd's children, would do nothing.
pub fn unblock_signals_on_exec(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: sigemptyset(3) and
    // sigprocmask(2) only, on a local set; nothing allocates or locks.
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_signal_is_refused() {
        assert!(SignalSet::new(&[libc::SIGUSR1]).is_ok());
        let err = SignalSet::new(&[1000]).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
