//! The container runtime's system calls: the only `unsafe` in
//! [`crate::runtime`], and only where no crate does the job.
//!
//! The file has two halves:
//!
//! 1. **On `rustix`**: safe wrappers over `rustix`'s safe API, for the parent
//!    side (pidfds, `waitid`, `poll`, the sync socketpair, `kill`, rlimits)
//!    and for those calls of the container's init that take no descriptor
//!    (`pivot_root`, `chdir`, `setresuid`, `capset`, ...). `rustix` makes raw
//!    system calls (no libc locks, no `errno`) and, given a `&CStr`, converts
//!    nothing, so these are async-signal-safe too. No `unsafe` here.
//! 2. **Hand-written**: what no crate offers safely. `clone3` with
//!    `CLONE_INTO_CGROUP` and the `clone` fallback (they fork, so they are
//!    `unsafe fn`), the seccomp filter install, `execve` and `_exit`, the
//!    init's calls on the raw descriptors it walks its plan with (`openat2`,
//!    `mkdirat`, `read`, `close`, ...; the [`super::child::ChildSys`] seam
//!    passes raw fds so that tests can fake them), `mount` with a null source
//!    or type (`rustix::mount::mount` always passes both), per-thread
//!    `setgroups` on raw gids, integer `prctl`s, `close_range`, the loopback
//!    ioctl, the `NS_GET_NSTYPE` ioctl that tells a namespace file's type,
//!    the signal mask, signalfd, and real-time signal numbers (which
//!    `rustix` only makes in an `unsafe` constructor). Each `unsafe` block
//!    says why it is sound in a `// SAFETY:` comment.
//!
//! Every wrapper returns a `Result<_, Errno>`. [`Errno`] is a plain copyable
//! number, so the wrappers neither allocate nor take locks: the container's
//! init process calls them between `clone` and `execve`, where only
//! async-signal-safe code may run (see [`super::child`]).

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use rustix::process::{Pid, Resource, Rlimit, Signal, WaitId, WaitIdOptions};

/// An `errno` value. Cheap to copy and to send over the sync socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        Errno(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> Self {
        io::Error::from_raw_os_error(e.0)
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno(e.raw_os_error())
    }
}

/// Result of a wrapper.
pub type SysResult<T> = Result<T, Errno>;

/// `AUDIT_ARCH_X86_64`: the architecture word seccomp filters see on x86_64.
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// The bit set in system call numbers of the x32 ABI.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `clone3` flag: put the child into the cgroup given by `clone_args.cgroup`.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

// ---------------------------------------------------------------------------
// On rustix: processes, waiting, polling and sockets (parent side)
// ---------------------------------------------------------------------------

/// A pid as `rustix` takes it: positive, or `EINVAL` (never "every process"
/// or a process group).
fn to_pid(pid: libc::pid_t) -> SysResult<Pid> {
    Pid::from_raw(pid).ok_or(Errno(libc::EINVAL))
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: libc::pid_t) -> SysResult<OwnedFd> {
    let flags = rustix::process::PidfdFlags::empty();
    Ok(rustix::process::pidfd_open(to_pid(pid)?, flags)?)
}

/// `pidfd_send_signal(2)` with a null siginfo. `signal` is 1..=64, else
/// `EINVAL`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> SysResult<()> {
    let signal = to_signal(signal)?;
    Ok(rustix::process::pidfd_send_signal(pidfd, signal)?)
}

/// `kill(2)` of one process (`pid` > 0); `signal` is 1..=64.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> SysResult<()> {
    let (pid, signal) = (to_pid(pid)?, to_signal(signal)?);
    Ok(rustix::process::kill_process(pid, signal)?)
}

/// How a child ended, from `waitid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl WaitStatus {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            WaitStatus::Exited(c) => c,
            WaitStatus::Signaled(s) => 128 + s,
        }
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED)`: waits for (and reaps) our child.
/// `WNOHANG` is added when `block` is false; then `Ok(None)` means "still
/// running".
pub fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> SysResult<Option<WaitStatus>> {
    waitid(WaitId::PidFd(pidfd), block)
}

/// `waitid(P_PID, pid, WEXITED)`, for when the kernel gave us no pidfd.
pub fn waitid_pid(pid: libc::pid_t, block: bool) -> SysResult<Option<WaitStatus>> {
    waitid(WaitId::Pid(to_pid(pid)?), block)
}

fn waitid(id: WaitId<'_>, block: bool) -> SysResult<Option<WaitStatus>> {
    let mut options = WaitIdOptions::EXITED;
    if !block {
        options |= WaitIdOptions::NOHANG;
    }
    let status = loop {
        match rustix::process::waitid(id.clone(), options) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    // With WEXITED alone, a child either exited or was killed (with or
    // without a core dump).
    Ok(status.map(|s| match s.exit_status() {
        Some(code) => WaitStatus::Exited(code),
        None => WaitStatus::Signaled(s.terminating_signal().unwrap_or(0)),
    }))
}

/// `poll(2)` for readability on several fds; returns which are readable (or
/// hung up). `timeout_ms` < 0 waits forever. Retries on `EINTR`.
pub fn poll_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout_ms: i32,
) -> SysResult<[bool; N]> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut pfds = fds.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN));
    let timeout = (timeout_ms >= 0).then(|| Timespec {
        tv_sec: (timeout_ms / 1000).into(),
        tv_nsec: ((timeout_ms % 1000) * 1_000_000).into(),
    });
    loop {
        match rustix::event::poll(&mut pfds, timeout.as_ref()) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => break,
        }
    }
    Ok(pfds.map(|p| !p.revents().is_empty()))
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: the parent/child sync
/// channel. Sequenced packets keep each message whole.
pub fn seqpacket_pair() -> SysResult<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// `read(2)` on a borrowed descriptor, retrying on `EINTR` (the parent's
/// end of the sync socket; the init uses [`read`] on raw fds).
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// `write(2)` of a whole small buffer (retrying on `EINTR`); used for
/// one-shot messages where a short write is an error.
pub fn write_all(fd: BorrowedFd<'_>, buf: &[u8]) -> SysResult<()> {
    let n = loop {
        match rustix::io::write(fd, buf) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    if n != buf.len() {
        return Err(Errno(libc::EIO));
    }
    Ok(())
}

/// `mkfifo(3)`: `mknodat(AT_FDCWD, path, S_IFIFO | mode, 0)`.
pub fn mkfifo(path: &Path, mode: libc::mode_t) -> SysResult<()> {
    use rustix::fs::{FileType, Mode, CWD};
    let mode = Mode::from_bits_retain(mode);
    Ok(rustix::fs::mknodat(CWD, path, FileType::Fifo, mode, 0)?)
}

/// `statfs(2)`: the file system's magic number.
pub fn statfs_type(path: &Path) -> SysResult<i64> {
    Ok(rustix::fs::statfs(path)?.f_type)
}

/// The id of the mount `path` is on (`statx` `STATX_MNT_ID`, Linux 5.8).
pub fn mount_id(path: &Path) -> SysResult<u64> {
    use rustix::fs::{AtFlags, StatxFlags, CWD};
    Ok(rustix::fs::statx(CWD, path, AtFlags::empty(), StatxFlags::MNT_ID)?.stx_mnt_id)
}

/// `umount2(path, MNT_DETACH)`: the mount on `path` and everything below.
pub fn detach(path: &Path) -> SysResult<()> {
    Ok(rustix::mount::unmount(
        path,
        rustix::mount::UnmountFlags::DETACH,
    )?)
}

// ---------------------------------------------------------------------------
// On rustix: calls of the container's init that take no descriptor. The
// paths are `&CStr`s prepared before clone: nothing is converted or
// allocated.
// ---------------------------------------------------------------------------

/// Every resource, in the kernel's order: the discriminants are the
/// `RLIMIT_*` numbers.
const RESOURCES: [Resource; 16] = [
    Resource::Cpu,
    Resource::Fsize,
    Resource::Data,
    Resource::Stack,
    Resource::Core,
    Resource::Rss,
    Resource::Nproc,
    Resource::Nofile,
    Resource::Memlock,
    Resource::As,
    Resource::Locks,
    Resource::Sigpending,
    Resource::Msgqueue,
    Resource::Nice,
    Resource::Rtprio,
    Resource::Rttime,
];

/// An `RLIMIT_*` number as `rustix`'s [`Resource`], or `EINVAL`.
fn to_resource(number: libc::c_int) -> SysResult<Resource> {
    RESOURCES
        .into_iter()
        .find(|r| *r as libc::c_int == number)
        .ok_or(Errno(libc::EINVAL))
}

/// `prlimit(2)` on the calling process. `resource` is an `RLIMIT_*` number
/// (else `EINVAL`); `u64::MAX` is `RLIM_INFINITY`.
pub fn setrlimit(resource: libc::c_int, soft: u64, hard: u64) -> SysResult<()> {
    let limit = Rlimit {
        current: Some(soft),
        maximum: Some(hard),
    };
    Ok(rustix::process::setrlimit(to_resource(resource)?, limit)?)
}

/// `umount2(2)`.
pub fn umount2(target: &CStr, flags: libc::c_int) -> SysResult<()> {
    let flags = rustix::mount::UnmountFlags::from_bits_retain(flags as u32);
    Ok(rustix::mount::unmount(target, flags)?)
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult<()> {
    Ok(rustix::process::pivot_root(new_root, put_old)?)
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> SysResult<()> {
    Ok(rustix::process::chdir(path)?)
}

/// `chroot(2)`.
pub fn chroot(path: &CStr) -> SysResult<()> {
    Ok(rustix::process::chroot(path)?)
}

/// `faccessat(AT_FDCWD, path, mode, 0)`.
pub fn access(path: &CStr, mode: libc::c_int) -> SysResult<()> {
    use rustix::fs::{Access, AtFlags, CWD};
    let mode = Access::from_bits_retain(mode as u32);
    Ok(rustix::fs::accessat(CWD, path, mode, AtFlags::empty())?)
}

/// `statfs(2)` mount flags (`ST_*`) of the file system holding `path`.
pub fn statfs_flags(path: &CStr) -> SysResult<u64> {
    Ok(rustix::fs::statfs(path)?.f_flags as u64)
}

/// Whether `path` (symlinks followed) is a directory: `stat(2)`.
pub fn is_directory(path: &CStr) -> SysResult<bool> {
    let mode = rustix::fs::stat(path)?.st_mode;
    Ok(rustix::fs::FileType::from_raw_mode(mode) == rustix::fs::FileType::Directory)
}

/// `sethostname(2)`.
pub fn sethostname(name: &[u8]) -> SysResult<()> {
    Ok(rustix::system::sethostname(name)?)
}

/// `setdomainname(2)`.
pub fn setdomainname(name: &[u8]) -> SysResult<()> {
    Ok(rustix::system::setdomainname(name)?)
}

/// The three 64-bit capability sets `capset(2)` takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
}

/// `capset(2)` for the calling thread, version 3 (64-bit sets).
pub fn capset(sets: CapSets) -> SysResult<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let sets = CapabilitySets {
        effective: CapabilitySet::from_bits_retain(sets.effective),
        permitted: CapabilitySet::from_bits_retain(sets.permitted),
        inheritable: CapabilitySet::from_bits_retain(sets.inheritable),
    };
    Ok(rustix::thread::set_capabilities(None, sets)?)
}

/// `setresgid(2)` for this thread only (the raw system call, not libc's,
/// which would broadcast to other threads: there are none in the init).
pub fn setresgid(gid: libc::gid_t) -> SysResult<()> {
    // `from_raw_unchecked`: a gid of -1 stays "unchanged", as in C.
    let gid = rustix::process::Gid::from_raw_unchecked(gid);
    Ok(rustix::thread::set_thread_res_gid(gid, gid, gid)?)
}

/// `setresuid(2)` for this thread only (see [`setresgid`]).
pub fn setresuid(uid: libc::uid_t) -> SysResult<()> {
    let uid = rustix::process::Uid::from_raw_unchecked(uid);
    Ok(rustix::thread::set_thread_res_uid(uid, uid, uid)?)
}

/// `umask(2)`.
pub fn umask(mask: libc::mode_t) {
    rustix::process::umask(rustix::fs::Mode::from_bits_retain(mask));
}

/// `setsid(2)`: a new session and process group, without a terminal.
pub fn setsid() -> SysResult<()> {
    rustix::process::setsid()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Hand-written: process creation
// ---------------------------------------------------------------------------

/// What [`clone3`] and [`clone_legacy`] return on each side.
#[derive(Debug)]
pub enum Forked {
    /// In the parent: the child's pid (in the parent's pid namespace) and its
    /// pidfd when the kernel returned one.
    Parent {
        /// Child pid.
        pid: libc::pid_t,
        /// Child pidfd (`CLONE_PIDFD`).
        pidfd: Option<OwnedFd>,
    },
    /// In the child.
    Child,
}

fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> SysResult<libc::c_long> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// `clone3(2)` without a new stack: a `fork` with namespace flags, a pidfd and
/// optionally a target cgroup. `flags` are `CLONE_*` bits; `CLONE_PIDFD` is
/// added here. The child gets `SIGCHLD` as exit signal.
///
/// # Safety
///
/// Like `fork`, the child is a copy of the calling process with only the
/// calling thread. The caller must make sure the child runs only
/// async-signal-safe code (no allocation, no locks another thread may have
/// held) and leaves with `_exit` or `execve`, never by returning into code that
/// assumes the parent's threads exist.
pub unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> SysResult<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut flags = flags | libc::CLONE_PIDFD as u64;
    let mut cgroup_fd = 0u64;
    if let Some(fd) = cgroup {
        flags |= CLONE_INTO_CGROUP;
        cgroup_fd = u64::try_from(fd.as_raw_fd()).map_err(|_| Errno(libc::EBADF))?;
    }
    // SAFETY: clone_args is plain data; all-zero is a valid value.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags;
    args.pidfd = std::ptr::addr_of_mut!(pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cgroup_fd;
    // SAFETY: `args` is a valid clone_args of the size passed; `pidfd` outlives
    // the call (the kernel writes it before returning in the parent). With a
    // zero stack the child continues on a copy of this stack like after fork;
    // the caller's contract covers what the child may do.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    forked(check_long(ret)?, pidfd)
}

/// The `clone(2)` fallback for kernels without `clone3` (before 5.3) or where
/// a seccomp filter refuses it. `CLONE_PIDFD` is requested (Linux >= 5.2);
/// cgroups must be joined by writing the pid to `cgroup.procs`.
///
/// # Safety
///
/// Same contract as [`clone3`].
pub unsafe fn clone_legacy(flags: u64, want_pidfd: bool) -> SysResult<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut flags = flags | libc::SIGCHLD as u64;
    if want_pidfd {
        flags |= libc::CLONE_PIDFD as u64;
    }
    // SAFETY: x86_64 argument order is (flags, stack, parent_tid, child_tid,
    // tls). A null stack makes it fork-like; with CLONE_PIDFD the kernel
    // stores the pidfd at `parent_tid`, which points to a live c_int. The
    // caller's contract covers what the child may do.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            std::ptr::addr_of_mut!(pidfd),
            0usize,
            0usize,
        )
    };
    forked(check_long(ret)?, pidfd)
}

fn forked(ret: libc::c_long, pidfd: libc::c_int) -> SysResult<Forked> {
    if ret == 0 {
        return Ok(Forked::Child);
    }
    let pid = libc::pid_t::try_from(ret).map_err(|_| Errno(libc::EOVERFLOW))?;
    let pidfd = (pidfd >= 0).then(|| {
        // SAFETY: the kernel just created this descriptor for us; nobody else
        // owns it.
        unsafe { OwnedFd::from_raw_fd(pidfd) }
    });
    Ok(Forked::Parent { pid, pidfd })
}

// ---------------------------------------------------------------------------
// Hand-written: signals
// ---------------------------------------------------------------------------

/// A signal number 1..=64 as `rustix`'s [`Signal`] (else `EINVAL`, as the
/// kernel would answer for numbers above 64).
fn to_signal(sig: libc::c_int) -> SysResult<Signal> {
    if let Some(s) = Signal::from_named_raw(sig) {
        return Ok(s);
    }
    if !(1..=64).contains(&sig) {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: `sig` is a valid signal number. `rustix` only names the
    // classic signals; making a real-time one is `unsafe` because the C
    // library reserves some of them for its own threads. Such a `Signal` is
    // only ever sent to another process (a container's, which the user asked
    // to signal with that number), never raised, blocked, consumed or
    // handled here.
    Ok(unsafe { Signal::from_raw_unchecked(sig) })
}

/// A set of signals blocked for the calling thread, readable as a signalfd.
/// Hand-written: `rustix` has no signalfd, and its `sigprocmask` is an
/// `unsafe` part of its unstable runtime API.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` and opens a signalfd for them.
    pub fn block(signals: &[libc::c_int]) -> SysResult<Self> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for &s in signals {
            // SAFETY: `set` is valid; an invalid signal number returns EINVAL.
            check(unsafe { libc::sigaddset(&mut set, s) })?;
        }
        // SAFETY: valid set pointer, null old-set pointer.
        check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
        // SAFETY: -1 asks for a new fd; `set` is valid.
        let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) })?;
        // SAFETY: a new descriptor, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd })
    }

    /// The fd to poll.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads one pending signal number.
    pub fn read(&self) -> SysResult<libc::c_int> {
        // One `struct signalfd_siginfo`: 128 bytes, `ssi_signo` first.
        let mut info = [0u8; 128];
        rustix::io::read(&self.fd, &mut info)?;
        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
        Ok(signo as libc::c_int)
    }
}

// ---------------------------------------------------------------------------
// Hand-written: namespace files (parent side)
// ---------------------------------------------------------------------------

/// The `CLONE_NEW*` type of the namespace `fd` refers to (`NS_GET_NSTYPE`),
/// or `None` when it is not a namespace file (not on nsfs).
pub fn namespace_type(fd: BorrowedFd<'_>) -> SysResult<Option<libc::c_int>> {
    if rustix::fs::fstatfs(fd)?.f_type != libc::NSFS_MAGIC {
        return Ok(None);
    }
    /// `_IO(0xb7, 0x3)` from `<linux/nsfs.h>`.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the type; `fd` is
    // a live descriptor for the duration of the call.
    Ok(Some(check(unsafe {
        libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE)
    })?))
}

// ---------------------------------------------------------------------------
// Hand-written: calls made by the container's init between clone and
// execve, on raw descriptors or with no safe `rustix` equivalent. None of
// them allocates.
// ---------------------------------------------------------------------------

/// `_exit(2)`: leaves without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// `read(2)`, retrying on `EINTR`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// `write(2)`, retrying on `EINTR`.
pub fn write(fd: RawFd, buf: &[u8]) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// `close(2)`. Errors are ignored: the descriptor is gone either way.
pub fn close(fd: RawFd) {
    // SAFETY: closing an fd the caller owns; a stale fd only gives EBADF.
    unsafe { libc::close(fd) };
}

/// `mount(2)`. Hand-written: bind remounts and propagation changes pass a
/// null source and type, which `rustix::mount::mount` cannot.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    // SAFETY: each pointer is null (allowed for source, fstype and data) or a
    // NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    })?;
    Ok(())
}

/// `fchdir(2)`.
pub fn fchdir(fd: RawFd) -> SysResult<()> {
    // SAFETY: plain integer; a bad fd gives EBADF.
    check(unsafe { libc::fchdir(fd) })?;
    Ok(())
}

/// Opens `path` for reading as if `root` were `/`: symlinks and `..` cannot
/// leave it, magic links are refused ([`crate::os::open_in_root`]).
pub fn open_in_root(root: &std::path::Path, path: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::OFlags;
    let dir = std::fs::File::open(root)?;
    let fd = crate::os::open_in_root(dir.as_fd(), path, OFlags::RDONLY | OFlags::CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// `openat2(2)` with `how.resolve = resolve`. Returns a raw fd the caller
/// must [`close`].
pub fn openat2(dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> SysResult<RawFd> {
    // SAFETY: open_how is plain data; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: NUL-terminated path, a valid open_how of the size passed.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    Ok(fd as RawFd)
}

/// `openat(2)`. Returns a raw fd the caller must [`close`].
pub fn openat(dirfd: RawFd, path: &CStr, flags: i32, mode: libc::mode_t) -> SysResult<RawFd> {
    // SAFETY: NUL-terminated path; mode is passed as the variadic argument.
    check(unsafe { libc::openat(dirfd, path.as_ptr(), flags, mode as libc::c_uint) })
}

/// `mkdirat(2)`.
pub fn mkdirat(dirfd: RawFd, path: &CStr, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::mkdirat(dirfd, path.as_ptr(), mode) })?;
    Ok(())
}

/// `mknodat(2)`.
pub fn mknodat(dirfd: RawFd, path: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> SysResult<()> {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::mknodat(dirfd, path.as_ptr(), mode, dev) })?;
    Ok(())
}

/// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW`.
pub fn fchownat(dirfd: RawFd, path: &CStr, uid: libc::uid_t, gid: libc::gid_t) -> SysResult<()> {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::fchownat(dirfd, path.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(())
}

/// `symlinkat(2)`.
pub fn symlinkat(target: &CStr, dirfd: RawFd, linkpath: &CStr) -> SysResult<()> {
    // SAFETY: two NUL-terminated paths.
    check(unsafe { libc::symlinkat(target.as_ptr(), dirfd, linkpath.as_ptr()) })?;
    Ok(())
}

/// `setns(2)`.
pub fn setns(fd: RawFd, nstype: libc::c_int) -> SysResult<()> {
    // SAFETY: plain integer arguments; a bad fd is reported as EBADF.
    check(unsafe { libc::setns(fd, nstype) })?;
    Ok(())
}

/// `unshare(2)`. Hand-written: `rustix`'s is `unsafe` too (`CLONE_FILES`
/// and `CLONE_FS` change what descriptors and paths mean).
pub fn unshare(flags: libc::c_int) -> SysResult<()> {
    // SAFETY: a plain integer argument; the init unshares namespaces only.
    check(unsafe { libc::unshare(flags) })?;
    Ok(())
}

/// `prctl(2)` with integer arguments.
pub fn prctl(option: libc::c_int, a2: libc::c_ulong, a3: libc::c_ulong) -> SysResult<libc::c_int> {
    // SAFETY: every option used by the runtime takes integer arguments only.
    check(unsafe { libc::prctl(option, a2, a3, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

/// `setgroups(2)` for this thread only. Hand-written: `rustix` takes
/// `&[Gid]`, and the init cannot allocate to convert the plan's raw gids.
pub fn setgroups(groups: &[libc::gid_t]) -> SysResult<()> {
    // SAFETY: pointer and length describe `groups`. The raw system call is
    // used because glibc's wrapper would broadcast to other threads.
    check_long(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    Ok(())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` with the given classic-BPF program.
pub fn seccomp_set_filter(program: &[libc::sock_filter], flags: libc::c_ulong) -> SysResult<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| Errno(libc::EINVAL))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `program`, which lives through the call; the
    // kernel copies the filter.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    })?;
    Ok(())
}

/// `execve(2)`; returns only on failure. `argv` and `envp` are
/// null-terminated arrays of pointers to NUL-terminated strings.
pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    if argv.last().is_some_and(|p| !p.is_null()) || envp.last().is_some_and(|p| !p.is_null()) {
        return Errno(libc::EINVAL);
    }
    // SAFETY: both arrays end with a null pointer (checked above) and their
    // entries point to strings the caller keeps alive.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno::last()
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: marks every fd from `first`
/// close-on-exec.
pub fn cloexec_from(first: u32) -> SysResult<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) })?;
    Ok(())
}

/// Closes the descriptors `first..=last`.
pub fn close_range(first: u32, last: u32) -> SysResult<()> {
    // SAFETY: plain integer arguments; the caller owns those descriptors.
    check(unsafe { libc::close_range(first, last, 0) })?;
    Ok(())
}

/// Clears `FD_CLOEXEC` on `fd`.
pub fn clear_cloexec(fd: RawFd) -> SysResult<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })?;
    Ok(())
}

/// Sets `IFF_UP` on the loopback interface of the current network namespace.
pub fn loopback_up() -> SysResult<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills its flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: reading and writing the flags member of the union that
    // SIOCGIFFLAGS just filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: `req` is a valid ifreq with the new flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// Resets the signal state a container must not inherit: an empty signal
/// mask and the default disposition for every signal (Rust's runtime
/// ignores `SIGPIPE`; a background job of a shell, `SIGINT` and `SIGQUIT`).
pub fn reset_signals() -> SysResult<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: valid set pointer, null old-set pointer.
    check(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) })?;
    // Every disposition, ignored ones included: a runtime started from a
    // shell's background job ignores SIGINT and SIGQUIT, which would reach
    // the container's process through `execve` (Ctrl-C would do nothing).
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code. Numbers the
        // kernel refuses (glibc's reserved ones are fine here) answer EINVAL.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Hand-written: pseudo-terminals (async-signal-safe, for the init and exec)
// ---------------------------------------------------------------------------

/// Opens a new pseudo-terminal through `/dev/ptmx` as the caller's root
/// sees it (in a container: its own `/dev/pts` instance), so the replica
/// belongs to that instance. Answers `(primary, replica)`, both
/// close-on-exec; the replica is opened with `TIOCGPTPEER`, without a path
/// lookup.
pub fn open_pty_pair() -> SysResult<(RawFd, RawFd)> {
    let primary = openat(
        libc::AT_FDCWD,
        c"/dev/ptmx",
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        0,
    )?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, valid here.
    let r = unsafe { libc::ioctl(primary, libc::TIOCSPTLCK, &unlock) };
    if r == -1 {
        let e = Errno::last();
        close(primary);
        return Err(e);
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new fd.
    let replica = unsafe { libc::ioctl(primary, libc::TIOCGPTPEER, flags) };
    if replica == -1 {
        let e = Errno::last();
        close(primary);
        return Err(e);
    }
    Ok((primary, replica))
}

/// `ioctl(fd, TIOCSCTTY, 0)`: makes the terminal `fd` the controlling
/// terminal of the caller, a session leader.
pub fn set_controlling_terminal(fd: RawFd) -> SysResult<()> {
    // SAFETY: TIOCSCTTY takes an int argument by value.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// `dup2(2)`.
pub fn dup2(from: RawFd, to: RawFd) -> SysResult<()> {
    // SAFETY: plain descriptor duplication; `to` is replaced.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// `ioctl(fd, TIOCSWINSZ)`: the terminal's size (`docker resize`); the
/// foreground process group gets `SIGWINCH`.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> SysResult<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid here.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) }).map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn resources_have_the_kernels_numbers() {
        for number in [
            libc::RLIMIT_CPU,
            libc::RLIMIT_FSIZE,
            libc::RLIMIT_DATA,
            libc::RLIMIT_STACK,
            libc::RLIMIT_CORE,
            libc::RLIMIT_RSS,
            libc::RLIMIT_NPROC,
            libc::RLIMIT_NOFILE,
            libc::RLIMIT_MEMLOCK,
            libc::RLIMIT_AS,
            libc::RLIMIT_LOCKS,
            libc::RLIMIT_SIGPENDING,
            libc::RLIMIT_MSGQUEUE,
            libc::RLIMIT_NICE,
            libc::RLIMIT_RTPRIO,
            libc::RLIMIT_RTTIME,
        ] {
            let number = number as libc::c_int;
            assert_eq!(to_resource(number).map(|r| r as libc::c_int), Ok(number));
        }
        assert_eq!(to_resource(16), Err(Errno(libc::EINVAL)));
    }

    #[test]
    fn setrlimit_keeps_infinity_and_numbers() {
        let before = rustix::process::getrlimit(Resource::Nofile);
        let soft = before.current.unwrap_or(u64::MAX);
        let hard = before.maximum.unwrap_or(u64::MAX);
        setrlimit(libc::RLIMIT_NOFILE as libc::c_int, soft, hard).unwrap();
        assert_eq!(rustix::process::getrlimit(Resource::Nofile), before);
    }

    #[test]
    fn signals_are_1_to_64() {
        assert_eq!(to_signal(libc::SIGKILL).map(Signal::as_raw), Ok(9));
        assert_eq!(to_signal(40).map(Signal::as_raw), Ok(40));
        for bad in [0, -1, 65] {
            assert_eq!(to_signal(bad).map(Signal::as_raw), Err(Errno(libc::EINVAL)));
        }
    }

    #[test]
    #[allow(clippy::zombie_processes)] // Reaped by `waitid`, the call under test.
    fn waitid_reports_exit_codes_and_signals() {
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        assert_eq!(waitid_pid(pid, true), Ok(Some(WaitStatus::Exited(3))));

        let child = Command::new("sleep").arg("10").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as libc::pid_t).unwrap();
        assert_eq!(waitid_pidfd(pidfd.as_fd(), false), Ok(None));
        assert_eq!(poll_readable([pidfd.as_fd()], 0), Ok([false]));
        pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL).unwrap();
        assert_eq!(poll_readable([pidfd.as_fd()], 10_000), Ok([true]));
        let status = waitid_pidfd(pidfd.as_fd(), true);
        assert_eq!(status, Ok(Some(WaitStatus::Signaled(libc::SIGKILL))));
    }

    #[test]
    fn seqpacket_keeps_messages_whole() {
        let (a, b) = seqpacket_pair().unwrap();
        write_all(a.as_fd(), b"one").unwrap();
        write_all(a.as_fd(), b"three").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(read_fd(b.as_fd(), &mut buf), Ok(3));
        assert_eq!(read_fd(b.as_fd(), &mut buf), Ok(5));
        drop(a);
        assert_eq!(read_fd(b.as_fd(), &mut buf), Ok(0));
    }

    #[test]
    fn file_system_calls() {
        assert_eq!(statfs_type(Path::new("/proc")), Ok(libc::PROC_SUPER_MAGIC));
        assert!(statfs_flags(c"/proc").is_ok());
        assert_eq!(access(c"/proc", libc::F_OK), Ok(()));
        assert_eq!(
            access(c"/nonexistent", libc::F_OK),
            Err(Errno(libc::ENOENT))
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo, 0o600).unwrap();
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn pty_pairs_carry_bytes_and_a_window_size() {
        let Ok((primary, replica)) = open_pty_pair() else {
            return; // No /dev/ptmx in this sandbox.
        };
        // SAFETY: both were just opened and are owned here.
        let (primary, replica) =
            unsafe { (OwnedFd::from_raw_fd(primary), OwnedFd::from_raw_fd(replica)) };
        set_window_size(primary.as_fd(), 31, 101).unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize to the valid pointer.
        let got = unsafe { libc::ioctl(replica.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(got, 0);
        assert_eq!((size.ws_row, size.ws_col), (31, 101));
        write_all(primary.as_fd(), b"hi\n").unwrap();
        let mut buf = [0u8; 8];
        let n = read_fd(replica.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
    }
}
