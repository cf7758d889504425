//! Processes: fork and exec, waiting for children, signals to other
//! processes, identity and resource limits.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::process::{Pid, Resource, Rlimit, Signal, WaitOptions};

/// `fork(2)`: `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// glibc's `fork` (not a raw syscall) so its fork handlers run: the child's
/// allocator and stdio locks are reset.
///
/// # Safety
///
/// The calling process must have exactly one thread, so the child is a full
/// copy (no lock held by a thread that does not exist in the child).
pub unsafe fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: fork(2) takes no arguments; the caller guarantees the process
    // is single-threaded, so the child may run any code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// `clone(CLONE_PARENT)` used as `fork`: the child is a copy of this
/// process, but its parent is this process's parent. `Ok(None)` in the
/// child, `Ok(Some(pid))` in the caller.
///
/// # Safety
///
/// As [`fork`]: the process must have a single thread. glibc's fork
/// bookkeeping (atfork handlers) does not run, which a single-threaded
/// caller holding no lock does not need.
pub unsafe fn fork_sibling() -> io::Result<Option<libc::pid_t>> {
    let flags = libc::CLONE_PARENT as libc::c_ulong;
    // SAFETY: the raw clone(2) with a null stack continues the child on a
    // copy-on-write copy of the caller's stack, as fork(2) does; the caller
    // guarantees no other thread exists. The remaining arguments (parent and
    // child tid pointers, tls) are unused without their flags.
    match unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as libc::pid_t)),
    }
}

/// Replaces the process image (`execv`); returns only on failure.
pub fn execv(program: &Path, args: &[String]) -> io::Error {
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    let Ok(args) = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: `path` and every argv entry are NUL-terminated strings that
    // outlive the call; argv ends with a null pointer. On success nothing of
    // this process image is used again.
    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
    io::Error::last_os_error()
}

/// The outcome of one [`reap_child`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// A child ended; `status` is the raw wait status (see `ExitStatus::from_raw`).
    Child {
        /// The child's process id.
        pid: i32,
        /// The raw wait status.
        status: i32,
    },
    /// Children exist but none has ended yet.
    NothingYet,
    /// This process has no children at all.
    NoChildren,
}

/// `waitpid(-1, WNOHANG)`: collects one ended child, if any, without blocking.
pub fn reap_child() -> io::Result<Reaped> {
    // Any child: `rustix::process::waitpid(None, ..)` would be waitpid(0, ..),
    // only the children in this process group, which misses the debug shell
    // (a session leader of its own).
    match rustix::process::wait(WaitOptions::NOHANG) {
        Ok(Some((pid, status))) => Ok(Reaped::Child {
            pid: pid.as_raw_pid(),
            status: status.as_raw(),
        }),
        Ok(None) => Ok(Reaped::NothingYet),
        Err(rustix::io::Errno::CHILD) => Ok(Reaped::NoChildren),
        Err(e) => Err(e.into()),
    }
}

/// `kill(2)`: sends `signal` to process `pid`, a positive process id (the
/// process-group forms of `kill` are refused with `EINVAL`; see
/// [`kill_all`]). Signal 0 only checks that the process exists.
pub fn kill(pid: i32, signal: libc::c_int) -> io::Result<()> {
    let einval = || io::Error::from_raw_os_error(libc::EINVAL);
    if pid <= 0 {
        return Err(einval());
    }
    let pid = Pid::from_raw(pid).ok_or_else(einval)?;
    if signal == 0 {
        rustix::process::test_kill_process(pid)?;
    } else {
        let signal = Signal::from_named_raw(signal).ok_or_else(einval)?;
        rustix::process::kill_process(pid, signal)?;
    }
    Ok(())
}

/// `kill(-1, signal)`: signals every process but PID 1 and kernel threads.
/// Returns `false` when there was nobody to signal (`ESRCH`).
pub fn kill_all(signal: libc::c_int) -> io::Result<bool> {
    // rustix has no safe form of kill(-1, ...).
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(-1, signal) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER)`: orphaned descendants are re-parented to this
/// process instead of PID 1 (used when `init` is tested as an ordinary process).
pub fn set_child_subreaper() -> io::Result<()> {
    // rustix takes the flag as an optional pid: any non-zero value turns it on.
    rustix::process::set_child_subreaper(Some(Pid::INIT))?;
    Ok(())
}

/// The effective user id of this process.
pub fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A resource limit hostd raises for itself and what it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `RLIMIT_NOFILE`: open files.
    OpenFiles,
    /// `RLIMIT_NPROC`: processes of the user.
    Processes,
    /// `RLIMIT_CORE`: core dump size.
    CoreSize,
}

impl Limit {
    fn resource(self) -> Resource {
        match self {
            Limit::OpenFiles => Resource::Nofile,
            Limit::Processes => Resource::Nproc,
            Limit::CoreSize => Resource::Core,
        }
    }
}

/// Raises `limit` (soft and hard) to `want` (`u64::MAX`: unlimited), or,
/// when that is not permitted (no `CAP_SYS_RESOURCE`, or above
/// `fs.nr_open`), the soft limit to the hard one. Never lowers it. Returns
/// the soft limit now in force.
pub fn raise_limit(limit: Limit, want: u64) -> u64 {
    // `None` is RLIM_INFINITY in rustix's Rlimit.
    let infinite = |limit: Option<u64>| limit.unwrap_or(u64::MAX);
    let finite = |limit: u64| (limit != u64::MAX).then_some(limit);
    let resource = limit.resource();
    let hard = infinite(rustix::process::getrlimit(resource).maximum);
    let set = |limit: u64| {
        let both = Rlimit {
            current: finite(limit),
            maximum: finite(limit),
        };
        rustix::process::setrlimit(resource, both)
    };
    if hard < want && set(want).is_ok() {
        return want;
    }
    let _ = set(hard);
    infinite(rustix::process::getrlimit(resource).current)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (first trying to raise
/// both to `want`): each container holds a few descriptors in hostd.
/// Returns the limit now in force (`u64::MAX`: unlimited).
pub fn raise_nofile(want: u64) -> u64 {
    raise_limit(Limit::OpenFiles, want)
}

/// Makes the child of `command` a session leader whose controlling terminal is
/// its stdin (`setsid` + `ioctl(0, TIOCSCTTY, 1)`), for a shell on a console.
pub fn make_session_leader_with_tty(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: it makes the setsid(2) and
    // ioctl(2) system calls only, allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            // Failing to get a controlling tty is not fatal: the shell still runs,
            // only without job control. The argument 1 steals the console from
            // another session if one holds it, which rustix's
            // `ioctl_tiocsctty` (argument 0) would not.
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
}

/// Sets the calling thread's nice value (Linux schedules threads one by
/// one, so this leaves the process's other threads as they are; threads it
/// creates afterwards inherit the value).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_nice_is_per_thread() {
        // Raising one's nice value needs no privilege.
        let before = rustix::process::getpriority_process(None).unwrap();
        let wanted = (before + 1).min(19);
        let inside = std::thread::spawn(move || {
            set_thread_nice(wanted).unwrap();
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inside, wanted);
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }

    #[test]
    fn kill_refuses_process_groups() {
        for pid in [0, -1, -42] {
            let err = kill(pid, libc::SIGTERM).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "pid {pid}");
        }
        let me = i32::try_from(std::process::id()).unwrap();
        kill(me, 0).unwrap();
        assert_eq!(
            kill(me, 1000).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }

    /// Runs [`reap_in_a_process_of_its_own`] alone in a new test process:
    /// `reap_child` takes whatever child ends, also other tests' children.
    #[test]
    fn reaps_children_of_other_process_groups() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "os::process::tests::reap_in_a_process_of_its_own",
            ])
            .env(REAP_HELPER, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    const REAP_HELPER: &str = "HOSTD_TEST_REAP_HELPER";

    #[test]
    fn reap_in_a_process_of_its_own() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        use std::time::{Duration, Instant};
        if std::env::var_os(REAP_HELPER).is_none() {
            return;
        }
        // Like the debug shell: in a process group of its own. Reaped below
        // by reap_child, not by Child::wait.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match reap_child().unwrap() {
                Reaped::Child { pid: p, status } if p == pid => break status,
                Reaped::NothingYet if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => panic!("waiting for {pid}: {other:?}"),
            }
        };
        assert_eq!(std::process::ExitStatus::from_raw(status).code(), Some(3));
        assert_eq!(reap_child().unwrap(), Reaped::NoChildren);
    }

    #[test]
    fn nofile_soft_limit_is_raised() {
        let now = raise_nofile(64);
        assert_eq!(
            rustix::process::getrlimit(Resource::Nofile).current,
            (now != u64::MAX).then_some(now)
        );
    }
}
