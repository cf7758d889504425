//! Thin, safe wrappers around the raw Linux system calls `init` and `hostd` need.
//!
//! This is the only module of the crate that contains `unsafe`. Every wrapper is a
//! few lines: turn Rust values into C arguments, make one libc call, turn the C
//! return code into an `io::Result`. Each `unsafe` block says in a `// SAFETY:`
//! comment why the call cannot violate memory safety; the callers never see a raw
//! pointer.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// `finit_module` flag: the file is compressed and the kernel should decompress it
/// (Linux >= 6.4 with `CONFIG_MODULE_DECOMPRESS`; older kernels answer `EINVAL`).
pub const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// Turns a C return code of -1 into the thread's `errno` as an `io::Error`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Functions of the `pthread_*` family return the error number instead of -1.
fn check_errno(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))
}

/// `mount(2)`: mounts `source` of type `fstype` on `target`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstring(source.as_bytes())?;
    let target = cstring(target.as_os_str().as_bytes())?;
    let fstype = cstring(fstype.as_bytes())?;
    let data = data.map(|d| cstring(d.as_bytes())).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer is either null (allowed for `data`) or points to a
    // NUL-terminated string that lives until the end of this function; the kernel
    // copies the strings and keeps no reference to them.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr,
        )
    })?;
    Ok(())
}

/// `finit_module(2)`: loads the kernel module in the open file `module`.
///
/// Fails with `EEXIST` when a module of that name is already loaded.
pub fn finit_module(module: BorrowedFd<'_>, params: &CStr, flags: u32) -> io::Result<()> {
    let flags = libc::c_int::try_from(flags)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "module flags out of range"))?;
    // SAFETY: `module` is an open descriptor borrowed for the duration of the call,
    // `params` is a valid NUL-terminated string the kernel only reads, and the
    // variadic arguments match the syscall's (int, const char *, int) signature.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            module.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What [`reboot`] asks the kernel to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootAction {
    /// Power the machine off.
    PowerOff,
    /// Restart the machine.
    Restart,
    /// Stop the CPUs but leave the power on.
    Halt,
}

/// Syncs file systems, then `reboot(2)`. Returns only if the kernel refused.
pub fn reboot(action: RebootAction) -> io::Error {
    let cmd = match action {
        RebootAction::PowerOff => libc::RB_POWER_OFF,
        RebootAction::Restart => libc::RB_AUTOBOOT,
        RebootAction::Halt => libc::RB_HALT_SYSTEM,
    };
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: reboot(2) takes a plain integer command and no pointers.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe the bytes of `name`, which outlives the
    // call; the kernel copies at most `len` bytes and needs no NUL terminator.
    check(unsafe { libc::sethostname(name.as_ptr().cast::<libc::c_char>(), name.len()) })?;
    Ok(())
}

/// Time since the kernel started, suspend included (`CLOCK_BOOTTIME`).
///
/// Returns zero if the clock cannot be read (it exists since Linux 2.6.39).
pub fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the kernel to fill.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if ret != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// Milliseconds since the kernel started (see [`boottime`]).
pub fn boottime_ms() -> u64 {
    u64::try_from(boottime().as_millis()).unwrap_or(u64::MAX)
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
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable int; waitpid touches nothing else.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        -1 => {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ECHILD) {
                Ok(Reaped::NoChildren)
            } else {
                Err(err)
            }
        }
        0 => Ok(Reaped::NothingYet),
        pid => Ok(Reaped::Child { pid, status }),
    }
}

/// `dup2(2)`: makes `target` a copy of `fd` (used to put the console on 0, 1, 2).
pub fn dup2(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only changes the descriptor table. `fd` is open (borrowed);
    // `target` is replaced atomically. The only callers pass 0, 1 and 2, which std
    // treats as the process's stdio and which no Rust owner closes behind our back.
    check(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    Ok(())
}

/// `kill(2)`: sends `signal` to process `pid`.
pub fn kill(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    check(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// `prctl(PR_SET_CHILD_SUBREAPER)`: orphaned descendants are re-parented to this
/// process instead of PID 1 (used when `init` is tested as an ordinary process).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; the unused arguments
    // are zero as prctl(2) asks.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    Ok(())
}

/// A set of signals, for blocking them and waiting for them synchronously.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set holding exactly `signals`.
    pub fn new(signals: &[libc::c_int]) -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the sigset_t it is pointed at.
        check(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
        // SAFETY: sigemptyset succeeded, so the set is initialised.
        let mut set = unsafe { set.assume_init() };
        for &signal in signals {
            // SAFETY: `set` is an initialised sigset_t we own.
            check(unsafe { libc::sigaddset(&mut set, signal) })?;
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

/// A close-on-exec, non-blocking pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a writable array of two ints, as pipe2(2) requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody
    // else; each File takes sole ownership of one of them.
    let ends = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    Ok(ends)
}

/// A close-on-exec pipe whose ends block: `(read end, write end)`.
pub fn pipe_blocking() -> io::Result<(File, File)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a writable array of two ints, as pipe2(2) requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody
    // else; each File takes sole ownership of one of them.
    let ends = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    Ok(ends)
}

/// `poll(2)` for readability: waits until one of `fds` is readable (or hung up)
/// or `timeout` passes (`None` = forever). Returns one flag per descriptor; all
/// false on timeout or when interrupted by a signal.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout_ms = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX)
    });
    let count = libc::nfds_t::try_from(pollfds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"))?;
    // SAFETY: `pollfds` is a valid, writable array of `count` pollfd structs whose
    // descriptors are borrowed open fds; the kernel only writes `revents`.
    let ret = unsafe { libc::poll(pollfds.as_mut_ptr(), count, timeout_ms) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pollfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

/// `mknod(2)`: creates a device node, FIFO or socket file at `path`.
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let path = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; mode and
    // rdev are plain integers.
    check(unsafe { libc::mknod(path.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })?;
    Ok(())
}

/// `umount2(2)` with `flags` (`MNT_DETACH`, ...).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(target.as_os_str().as_bytes())?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })?;
    Ok(())
}

/// The file system type magic of the file system holding `path` (`statfs(2)`'s
/// `f_type`, e.g. `TMPFS_MAGIC`).
pub fn statfs_type(path: &Path) -> io::Result<i64> {
    let path = cstring(path.as_os_str().as_bytes())?;
    let mut buf = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `buf` is a writable statfs struct the
    // kernel fills on success.
    check(unsafe { libc::statfs(path.as_ptr(), buf.as_mut_ptr()) })?;
    // SAFETY: statfs succeeded, so the struct is initialised.
    let buf = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok(buf.f_type as i64)
}

/// Whether Ctrl-Alt-Del reboots at once (`true`) or sends SIGINT to PID 1
/// (`false`, `LINUX_REBOOT_CMD_CAD_OFF`).
pub fn set_ctrl_alt_del(immediate_reboot: bool) -> io::Result<()> {
    let cmd = if immediate_reboot {
        libc::RB_ENABLE_CAD
    } else {
        libc::RB_DISABLE_CAD
    };
    // SAFETY: reboot(2) with a CAD command takes a plain integer and only flips
    // a kernel flag.
    check(unsafe { libc::reboot(cmd) })?;
    Ok(())
}

/// `kill(-1, signal)`: signals every process but PID 1 and kernel threads.
/// Returns `false` when there was nobody to signal (`ESRCH`).
pub fn kill_all(signal: libc::c_int) -> io::Result<bool> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    match check(unsafe { libc::kill(-1, signal) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes ownership of a descriptor a libc call just returned.
fn owned_fd(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: `fd` was just returned by a successful socket(2) call, so it is an
    // open descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `NETLINK_ROUTE` socket bound to a kernel-assigned port, as a `File`:
/// `write` sends one or more netlink messages to the kernel, `read` receives.
pub fn netlink_route_socket() -> io::Result<File> {
    // SAFETY: socket(2) takes integers only.
    let fd = owned_fd(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: sockaddr_nl is plain data for which all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` is an initialised sockaddr_nl of `len` bytes that outlives
    // the call; `fd` is an open socket.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    Ok(File::from(fd))
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live int of the stated size; `fd` is open.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// A UDP socket bound to `0.0.0.0:port` that only sends and receives on
/// interface `ifname` (`SO_BINDTODEVICE`, set before `bind` so one socket per
/// interface can share the port), with `SO_BROADCAST` on: what a DHCP client
/// needs before its interface has an address.
pub fn udp_socket_on_device(ifname: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    // SAFETY: socket(2) takes integers only.
    let fd =
        owned_fd(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    let name = cstring(ifname.as_bytes())?;
    let name_len = libc::socklen_t::try_from(name.as_bytes_with_nul().len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"))?;
    // SAFETY: the option value is the NUL-terminated interface name of
    // `name_len` bytes, alive for the call; `fd` is an open socket.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast::<libc::c_void>(),
            name_len,
        )
    })?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is an initialised sockaddr_in that outlives the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    Ok(std::net::UdpSocket::from(fd))
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

/// Makes the child of `command` a session leader whose controlling terminal is
/// its stdin (`setsid` + `ioctl(0, TIOCSCTTY, 1)`), for a shell on a console.
pub fn make_session_leader_with_tty(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: it calls setsid(2) and ioctl(2)
    // only, allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            // Failing to get a controlling tty is not fatal: the shell still runs,
            // only without job control.
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
}

/// Returns the free memory at the top of the heap to the kernel
/// (`malloc_trim(0)`), e.g. after boot dropped its module index.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes an integer and only touches malloc's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fills `buf` from the kernel's RNG without waiting for it to be seeded
/// (`getrandom(GRND_INSECURE)`): early in boot, reading /dev/urandom makes
/// the kernel gather jitter entropy first, which takes a second under
/// emulation. Good for DHCP transaction ids, not for keys.
pub fn random_bytes_insecure(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe {
            libc::getrandom(
                rest.as_mut_ptr().cast::<libc::c_void>(),
                rest.len(),
                libc::GRND_INSECURE,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += usize::try_from(n).unwrap_or(0);
    }
    Ok(())
}

/// Limits glibc's malloc to one arena, so helper threads do not each reserve
/// and touch an arena of their own (keeps PID 1's resident memory small).
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt takes two integers; M_ARENA_MAX is a valid parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_is_monotonic_and_nonzero() {
        let a = boottime();
        let b = boottime();
        assert!(a > Duration::ZERO);
        assert!(b >= a);
    }

    #[test]
    fn pipe_poll_sees_written_byte() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (r, mut w) = pipe().unwrap();
        let ready = poll_readable(&[r.as_fd()], Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, vec![false]);
        w.write_all(b"x").unwrap();
        let ready = poll_readable(&[r.as_fd()], Some(Duration::from_secs(1))).unwrap();
        assert_eq!(ready, vec![true]);
    }

    #[test]
    fn mount_rejects_nul_in_argument() {
        let err = mount("a\0b", Path::new("/nonexistent"), "tmpfs", 0, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
