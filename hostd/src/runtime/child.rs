//! The container's init process, from `clone` to `execve`.
//!
//! Everything here runs in the child of `clone3`, a copy of a process that may
//! have had other threads, so only async-signal-safe code is allowed: no
//! allocation, no locks, no formatting. The [`Plan`] was prepared by the
//! parent; the child walks it and makes system calls through [`ChildSys`]
//! (the real implementation, [`RealSys`], forwards to [`super::sys`]; tests
//! use a recording fake). On failure the child sends its [`Step`], an index
//! and the `errno` over the sync socket and `_exit`s; the parent turns that
//! into a typed error with the plan's context (which mount, which rlimit).
//! After READY nobody reads the sync socket any more (`create` may have
//! exited), so from step (5) on failures go to `exec.fifo`, which `start`
//! reads until `execve` closes it.
//!
//! The container's seccomp filter is the last thing installed: every lookup,
//! descriptor clean-up and report to the runtime happens before it, and only
//! `execve` after it, so a profile need not allow anything hostd does.
//!
//! The sync protocol, numbered as in [`super::process`]:
//!
//! ```text
//! parent                                   child
//!  (1) clone3 ------------------------------> starts; blocks reading when
//!                                               (2) has work (wait_for_go)
//!  (2) writes uid/gid maps, joins the
//!      cgroup when CLONE_INTO_CGROUP could
//!      not be used; if it did either,
//!      sends GO ----------------------------> (2) GO received
//!                                           (3) namespaces joined, the cgroup
//!                                               namespace made (now that we
//!                                               are in our cgroup), signals reset,
//!                                               rootfs mounts and devices
//!  (3a) with prestart/createRuntime hooks
//!      only: runs them (hooks.rs) <-------- (3a) HOOKS, blocks reading
//!      then GO -----------------------------> createContainer hooks (if any),
//!                                               pivot_root,
//!                                               hostname, sysctls, masked and
//!                                               read-only paths, rlimits, user,
//!                                               capabilities, executable found,
//!                                               fds above 2 (and above
//!                                               --preserve-fds) close-on-exec
//!  (4) READY or ERROR(step, index, errno) <-- (4) sends READY
//!      create returns; state is "created"   (5) blocks opening exec.fifo for
//!                                               writing
//!  (5) `start` opens exec.fifo, reads ------> (5) writes one byte, keeps the
//!      the byte, then the fifo until EOF          fifo open (close-on-exec)
//!                                          (5a) startContainer hooks (if any)
//!                                           (6) seccomp, execve
//!  EOF on exec.fifo: start runs the <-------- (6) exec succeeded
//!      poststart hooks
//!  or ERROR(step, index, errno) + the <------ (5a) a hook failed, or (6)
//!      command on exec.fifo: `start` fails        seccomp or exec failed,
//!                                                 _exit(1, 126 or 127)
//! ```

use std::cell::Cell;
use std::ffi::CStr;
use std::os::fd::{BorrowedFd, RawFd};

use super::hooks::{self, Kind};
use super::mounts::Target;
use super::plan::{MountKind, Plan};
use super::sys::{self, CapSets, Errno, SysResult};

/// A step of the init process, reported with failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Step {
    WaitGo = 1,
    SetUserIds,
    JoinNamespace,
    Unshare,
    Setsid,
    Signals,
    RootPropagation,
    BindRoot,
    OpenRoot,
    MountTarget,
    Mount,
    MountRemount,
    MountPropagation,
    Device,
    Symlink,
    Cwd,
    PivotRoot,
    Chroot,
    Loopback,
    Hostname,
    Domainname,
    Sysctl,
    ReadonlyPath,
    MaskedPath,
    ReadonlyRoot,
    SecurityLabel,
    OomScoreAdj,
    Rlimit,
    Seccomp,
    BoundingSet,
    KeepCaps,
    Setgroups,
    Setgid,
    Setuid,
    Capset,
    Ambient,
    NoNewPrivs,
    Chdir,
    FindExecutable,
    Ready,
    ExecFifo,
    PreserveFds,
    Exec,
    CreateContainerHook,
    StartContainerHook,
    Terminal,
    JoinCgroup,
    MountRootOverlay,
}

impl Step {
    const ALL: [Step; 48] = [
        Step::WaitGo,
        Step::SetUserIds,
        Step::JoinNamespace,
        Step::Unshare,
        Step::Setsid,
        Step::Signals,
        Step::RootPropagation,
        Step::BindRoot,
        Step::OpenRoot,
        Step::MountTarget,
        Step::Mount,
        Step::MountRemount,
        Step::MountPropagation,
        Step::Device,
        Step::Symlink,
        Step::Cwd,
        Step::PivotRoot,
        Step::Chroot,
        Step::Loopback,
        Step::Hostname,
        Step::Domainname,
        Step::Sysctl,
        Step::ReadonlyPath,
        Step::MaskedPath,
        Step::ReadonlyRoot,
        Step::SecurityLabel,
        Step::OomScoreAdj,
        Step::Rlimit,
        Step::Seccomp,
        Step::BoundingSet,
        Step::KeepCaps,
        Step::Setgroups,
        Step::Setgid,
        Step::Setuid,
        Step::Capset,
        Step::Ambient,
        Step::NoNewPrivs,
        Step::Chdir,
        Step::FindExecutable,
        Step::Ready,
        Step::ExecFifo,
        Step::PreserveFds,
        Step::Exec,
        Step::CreateContainerHook,
        Step::StartContainerHook,
        Step::Terminal,
        Step::JoinCgroup,
        Step::MountRootOverlay,
    ];

    /// The step with this wire number.
    pub fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == n)
    }

    /// What the step does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Step::WaitGo => "waiting for the parent",
            Step::SetUserIds => "becoming root in the user namespace",
            Step::JoinNamespace => "joining a namespace",
            Step::Unshare => "creating namespaces",
            Step::Setsid => "setsid",
            Step::Signals => "resetting signals",
            Step::RootPropagation => "setting the mount propagation",
            Step::BindRoot => "binding the root file system onto itself",
            Step::OpenRoot => "opening the root file system",
            Step::MountTarget => "creating a mount point",
            Step::Mount => "mounting",
            Step::MountRemount => "remounting with the mount's flags",
            Step::MountPropagation => "setting mount propagation",
            Step::Device => "creating a device node",
            Step::Symlink => "creating a /dev symlink",
            Step::Cwd => "creating the working directory",
            Step::PivotRoot => "pivot_root",
            Step::Chroot => "chroot",
            Step::Loopback => "bringing up lo",
            Step::Hostname => "sethostname",
            Step::Domainname => "setdomainname",
            Step::Sysctl => "writing a sysctl",
            Step::ReadonlyPath => "making a path read-only",
            Step::MaskedPath => "masking a path",
            Step::ReadonlyRoot => "remounting the root read-only",
            Step::SecurityLabel => "applying",
            Step::OomScoreAdj => "writing oom_score_adj",
            Step::Rlimit => "setting an rlimit",
            Step::Seccomp => "loading the seccomp filter",
            Step::BoundingSet => "dropping the capability bounding set",
            Step::KeepCaps => "PR_SET_KEEPCAPS",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::Capset => "capset",
            Step::Ambient => "raising ambient capabilities",
            Step::NoNewPrivs => "PR_SET_NO_NEW_PRIVS",
            Step::Chdir => "chdir to the working directory",
            Step::FindExecutable => "finding the executable",
            Step::Ready => "reporting ready",
            Step::ExecFifo => "waiting on exec.fifo",
            Step::PreserveFds => "passing preserved fds",
            Step::Exec => "execve",
            Step::CreateContainerHook => "running a createContainer hook",
            Step::StartContainerHook => "running a startContainer hook",
            Step::Terminal => "setting up the pseudo-terminal",
            Step::JoinCgroup => "joining the container's cgroup",
            Step::MountRootOverlay => "mounting the root's overlay",
        }
    }
}

/// A failed step: what, which entry of the plan's list, and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The step.
    pub step: Step,
    /// Index into the plan's list for that step (mounts, rlimits, ...).
    pub index: u32,
    /// The error.
    pub errno: Errno,
}

/// Sync message kinds.
pub const MSG_GO: u32 = 1;
/// The child is ready and waits on exec.fifo.
pub const MSG_READY: u32 = 2;
/// A step failed.
pub const MSG_ERROR: u32 = 3;
/// The child waits before `pivot_root` for the parent's hooks (3a).
pub const MSG_HOOKS: u32 = 4;
/// The primary side of the process's pseudo-terminal is attached
/// (`SCM_RIGHTS`); sent before READY (init) or `execve` (exec).
pub const MSG_CONSOLE: u32 = 5;

/// A sync message: 16 bytes, `kind, step, index, errno` in native order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// `MSG_*`.
    pub kind: u32,
    /// For `MSG_ERROR`.
    pub step: u32,
    /// For `MSG_ERROR`.
    pub index: u32,
    /// For `MSG_ERROR`.
    pub errno: i32,
}

impl Message {
    /// Size on the wire.
    pub const SIZE: usize = 16;

    /// A message without payload.
    pub fn new(kind: u32) -> Self {
        Message {
            kind,
            step: 0,
            index: 0,
            errno: 0,
        }
    }

    /// Encodes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.step.to_ne_bytes());
        b[8..12].copy_from_slice(&self.index.to_ne_bytes());
        b[12..16].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    /// Decodes.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Message {
            kind: u32::from_ne_bytes(word(0)),
            step: u32::from_ne_bytes(word(4)),
            index: u32::from_ne_bytes(word(8)),
            errno: i32::from_ne_bytes(word(12)),
        }
    }
}

/// The system calls the init process makes. [`RealSys`] makes them; tests
/// record them.
#[allow(missing_docs)]
pub trait ChildSys {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult<()>;
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult<()>;
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()>;
    fn chroot(&self, path: &CStr) -> SysResult<()>;
    fn chdir(&self, path: &CStr) -> SysResult<()>;
    fn fchdir(&self, fd: RawFd) -> SysResult<()>;
    fn openat2(&self, dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> SysResult<RawFd>;
    fn openat(&self, dirfd: RawFd, path: &CStr, flags: i32, mode: libc::mode_t)
        -> SysResult<RawFd>;
    fn mkdirat(&self, dirfd: RawFd, path: &CStr, mode: libc::mode_t) -> SysResult<()>;
    fn mknodat(
        &self,
        dirfd: RawFd,
        path: &CStr,
        mode: libc::mode_t,
        dev: libc::dev_t,
    ) -> SysResult<()>;
    fn fchownat(&self, dirfd: RawFd, path: &CStr, uid: u32, gid: u32) -> SysResult<()>;
    fn symlinkat(&self, to: &CStr, dirfd: RawFd, path: &CStr) -> SysResult<()>;
    fn close(&self, fd: RawFd);
    fn read(&self, fd: RawFd, buf: &mut [u8]) -> SysResult<usize>;
    fn write(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize>;
    fn sethostname(&self, name: &[u8]) -> SysResult<()>;
    fn setdomainname(&self, name: &[u8]) -> SysResult<()>;
    fn prctl(
        &self,
        option: libc::c_int,
        a2: libc::c_ulong,
        a3: libc::c_ulong,
    ) -> SysResult<libc::c_int>;
    fn capset(&self, sets: CapSets) -> SysResult<()>;
    fn setgroups(&self, groups: &[libc::gid_t]) -> SysResult<()>;
    fn setresgid(&self, gid: libc::gid_t) -> SysResult<()>;
    fn setresuid(&self, uid: libc::uid_t) -> SysResult<()>;
    fn setrlimit(&self, resource: libc::c_int, soft: u64, hard: u64) -> SysResult<()>;
    fn seccomp(&self, program: &[libc::sock_filter], flags: libc::c_ulong) -> SysResult<()>;
    fn access(&self, path: &CStr, mode: libc::c_int) -> SysResult<()>;
    fn execve(
        &self,
        path: &CStr,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> Errno;
    fn cloexec_from(&self, first: u32) -> SysResult<()>;
    fn close_range(&self, first: u32, last: u32) -> SysResult<()>;
    fn clear_cloexec(&self, fd: RawFd) -> SysResult<()>;
    fn statfs_flags(&self, path: &CStr) -> SysResult<u64>;
    /// Whether `path` (symlinks followed) is a directory.
    fn is_directory(&self, path: &CStr) -> SysResult<bool>;
    fn loopback_up(&self) -> SysResult<()>;
    fn reset_signals(&self) -> SysResult<()>;
    fn setsid(&self) -> SysResult<()>;
    fn umask(&self, mask: libc::mode_t);
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> SysResult<()>;
    fn unshare(&self, flags: libc::c_int) -> SysResult<()>;
    fn open_pty_pair(&self) -> SysResult<(RawFd, RawFd)>;
    fn send_fd(&self, sock: RawFd, data: &[u8], fd: RawFd) -> SysResult<()>;
    fn dup2(&self, from: RawFd, to: RawFd) -> SysResult<()>;
    fn set_controlling_terminal(&self, fd: RawFd) -> SysResult<()>;
}

/// The real system calls.
pub struct RealSys;

impl ChildSys for RealSys {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult<()> {
        sys::mount(source, target, fstype, flags, data)
    }
    fn umount2(&self, target: &CStr, flags: libc::c_int) -> SysResult<()> {
        sys::umount2(target, flags)
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()> {
        sys::pivot_root(new_root, put_old)
    }
    fn chroot(&self, path: &CStr) -> SysResult<()> {
        sys::chroot(path)
    }
    fn chdir(&self, path: &CStr) -> SysResult<()> {
        sys::chdir(path)
    }
    fn fchdir(&self, fd: RawFd) -> SysResult<()> {
        sys::fchdir(fd)
    }
    fn openat2(&self, dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> SysResult<RawFd> {
        sys::openat2(dirfd, path, flags, resolve)
    }
    fn openat(
        &self,
        dirfd: RawFd,
        path: &CStr,
        flags: i32,
        mode: libc::mode_t,
    ) -> SysResult<RawFd> {
        sys::openat(dirfd, path, flags, mode)
    }
    fn mkdirat(&self, dirfd: RawFd, path: &CStr, mode: libc::mode_t) -> SysResult<()> {
        sys::mkdirat(dirfd, path, mode)
    }
    fn mknodat(
        &self,
        dirfd: RawFd,
        path: &CStr,
        mode: libc::mode_t,
        dev: libc::dev_t,
    ) -> SysResult<()> {
        sys::mknodat(dirfd, path, mode, dev)
    }
    fn fchownat(&self, dirfd: RawFd, path: &CStr, uid: u32, gid: u32) -> SysResult<()> {
        sys::fchownat(dirfd, path, uid, gid)
    }
    fn symlinkat(&self, to: &CStr, dirfd: RawFd, path: &CStr) -> SysResult<()> {
        sys::symlinkat(to, dirfd, path)
    }
    fn close(&self, fd: RawFd) {
        sys::close(fd)
    }
    fn read(&self, fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
        sys::read(fd, buf)
    }
    fn write(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize> {
        sys::write(fd, buf)
    }
    fn sethostname(&self, name: &[u8]) -> SysResult<()> {
        sys::sethostname(name)
    }
    fn setdomainname(&self, name: &[u8]) -> SysResult<()> {
        sys::setdomainname(name)
    }
    fn prctl(
        &self,
        option: libc::c_int,
        a2: libc::c_ulong,
        a3: libc::c_ulong,
    ) -> SysResult<libc::c_int> {
        sys::prctl(option, a2, a3)
    }
    fn capset(&self, sets: CapSets) -> SysResult<()> {
        sys::capset(sets)
    }
    fn setgroups(&self, groups: &[libc::gid_t]) -> SysResult<()> {
        sys::setgroups(groups)
    }
    fn setresgid(&self, gid: libc::gid_t) -> SysResult<()> {
        sys::setresgid(gid)
    }
    fn setresuid(&self, uid: libc::uid_t) -> SysResult<()> {
        sys::setresuid(uid)
    }
    fn setrlimit(&self, resource: libc::c_int, soft: u64, hard: u64) -> SysResult<()> {
        sys::setrlimit(resource, soft, hard)
    }
    fn seccomp(&self, program: &[libc::sock_filter], flags: libc::c_ulong) -> SysResult<()> {
        sys::seccomp_set_filter(program, flags)
    }
    fn access(&self, path: &CStr, mode: libc::c_int) -> SysResult<()> {
        sys::access(path, mode)
    }
    fn execve(
        &self,
        path: &CStr,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> Errno {
        sys::execve(path, argv, envp)
    }
    fn cloexec_from(&self, first: u32) -> SysResult<()> {
        sys::cloexec_from(first)
    }
    fn close_range(&self, first: u32, last: u32) -> SysResult<()> {
        sys::close_range(first, last)
    }
    fn clear_cloexec(&self, fd: RawFd) -> SysResult<()> {
        sys::clear_cloexec(fd)
    }
    fn statfs_flags(&self, path: &CStr) -> SysResult<u64> {
        sys::statfs_flags(path)
    }
    fn is_directory(&self, path: &CStr) -> SysResult<bool> {
        sys::is_directory(path)
    }
    fn loopback_up(&self) -> SysResult<()> {
        sys::loopback_up()
    }
    fn reset_signals(&self) -> SysResult<()> {
        sys::reset_signals()
    }
    fn setsid(&self) -> SysResult<()> {
        sys::setsid()
    }
    fn umask(&self, mask: libc::mode_t) {
        sys::umask(mask)
    }
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> SysResult<()> {
        sys::setns(fd, nstype)
    }
    fn unshare(&self, flags: libc::c_int) -> SysResult<()> {
        sys::unshare(flags)
    }
    fn open_pty_pair(&self) -> SysResult<(RawFd, RawFd)> {
        sys::open_pty_pair()
    }
    fn send_fd(&self, sock: RawFd, data: &[u8], fd: RawFd) -> SysResult<()> {
        // SAFETY: both descriptors are open for the duration of the call.
        let (sock, fd) = unsafe { (BorrowedFd::borrow_raw(sock), BorrowedFd::borrow_raw(fd)) };
        crate::os::send_with_fds(sock, data, &[fd])
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))
    }
    fn dup2(&self, from: RawFd, to: RawFd) -> SysResult<()> {
        sys::dup2(from, to)
    }
    fn set_controlling_terminal(&self, fd: RawFd) -> SysResult<()> {
        sys::set_controlling_terminal(fd)
    }
}

/// The descriptors the init process inherits from the parent.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds<'a> {
    /// The child's end of the sync socket.
    pub sync: RawFd,
    /// `exec.fifo`, opened `O_PATH`.
    pub fifo: RawFd,
    /// The host's `/proc`, opened `O_PATH`, to reopen the fifo after
    /// `pivot_root`.
    pub proc: RawFd,
    /// Namespaces to join: `(fd, CLONE_NEW*)`.
    pub join: &'a [(RawFd, libc::c_int)],
    /// Number of fds from 3 up to pass into the container.
    pub preserve_fds: u32,
    /// Whether the parent has work to do before the child goes on (id
    /// maps to write, a cgroup to join by pid): the child then waits for
    /// its GO. Born in its cgroup and without id maps, it goes on at once
    /// (one round trip less per container).
    pub wait_for_go: bool,
}

/// Formats `prefix` + decimal `n` + NUL into `buf` and returns it as a C
/// string, without allocating.
fn fd_path<'b>(buf: &'b mut [u8; 48], prefix: &[u8], n: RawFd) -> &'b CStr {
    let mut digits = [0u8; 12];
    let mut len = 0;
    let mut v = n.unsigned_abs();
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut at = 0;
    for &b in prefix.iter().take(buf.len() - 13) {
        buf[at] = b;
        at += 1;
    }
    for i in (0..len).rev() {
        buf[at] = digits[i];
        at += 1;
    }
    buf[at] = 0;
    CStr::from_bytes_until_nul(&buf[..=at]).unwrap_or(c"/")
}

const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// `statfs` flags that the kernel locks on a mount and that a bind remount
/// must therefore repeat.
fn locked_flags(st: u64) -> libc::c_ulong {
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

struct Init<'a, S: ChildSys> {
    sys: &'a S,
    plan: &'a Plan,
    fds: ChildFds<'a>,
    /// Where a failure is reported: the sync socket, then from step (5)
    /// `exec.fifo` opened for writing.
    report: Cell<RawFd>,
}

/// `CAP_SYS_ADMIN`, needed to load a seccomp filter without no_new_privs.
const CAP_SYS_ADMIN: u32 = 21;

type StepResult<T = ()> = Result<T, Failure>;

fn at<T>(step: Step, index: usize, r: SysResult<T>) -> StepResult<T> {
    r.map_err(|errno| fail(step, index, errno))
}

fn fail(step: Step, index: usize, errno: Errno) -> Failure {
    Failure {
        step,
        index: index as u32,
        errno,
    }
}

impl<'a, S: ChildSys> Init<'a, S> {
    /// Reporting failures on the sync socket.
    fn new(sys: &'a S, plan: &'a Plan, fds: ChildFds<'a>) -> Self {
        Init {
            sys,
            plan,
            fds,
            report: Cell::new(fds.sync),
        }
    }

    fn open_in_root(&self, root: RawFd, path: &CStr, flags: i32) -> SysResult<RawFd> {
        self.sys
            .openat2(root, path, flags | libc::O_CLOEXEC, RESOLVE)
    }

    /// `mkdir parent/name` with the parent resolved inside the root.
    fn mkdir_in(&self, root: RawFd, parent: &CStr, name: &CStr) -> SysResult<()> {
        let dir = self.open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY)?;
        let r = self.sys.mkdirat(dir, name, 0o755);
        self.sys.close(dir);
        match r {
            Err(Errno(libc::EEXIST)) => Ok(()),
            other => other,
        }
    }

    /// Creates the target's missing ancestors, and the target itself as a
    /// directory (`Some(true)`), a file (`Some(false)`) or not at all.
    fn make_target(&self, root: RawFd, t: &Target, last: Option<bool>) -> SysResult<()> {
        for (parent, name) in &t.ancestors {
            self.mkdir_in(root, parent, name)?;
        }
        match last {
            Some(true) => self.mkdir_in(root, &t.parent, &t.name),
            Some(false) => {
                let dir = self.open_in_root(root, &t.parent, libc::O_PATH | libc::O_DIRECTORY)?;
                let r = self.sys.openat(
                    dir,
                    &t.name,
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                );
                self.sys.close(dir);
                match r {
                    Ok(fd) => {
                        self.sys.close(fd);
                        Ok(())
                    }
                    // A directory or a device already there is fine.
                    Err(Errno(libc::EISDIR)) | Err(Errno(libc::ENXIO)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            None => Ok(()),
        }
    }

    fn mounts(&self, root: RawFd) -> StepResult {
        let sys = self.sys;
        for (i, m) in self.plan.mounts.iter().enumerate() {
            let is_file = matches!(m.kind, MountKind::Bind { file: true, .. });
            at(
                Step::MountTarget,
                i,
                self.make_target(root, &m.target, Some(!is_file)),
            )?;
            let mut buf = [0u8; 48];
            let fd = at(
                Step::MountTarget,
                i,
                self.open_in_root(root, &m.target.path, libc::O_PATH),
            )?;
            let path = fd_path(&mut buf, b"/proc/self/fd/", fd);
            let r = match &m.kind {
                MountKind::Fs {
                    source,
                    fstype,
                    flags,
                    data,
                } => sys.mount(Some(source), path, Some(fstype), *flags, data.as_deref()),
                MountKind::Bind {
                    source, recursive, ..
                } => {
                    let rec = if *recursive { libc::MS_REC } else { 0 };
                    sys.mount(Some(source), path, None, libc::MS_BIND | rec, None)
                }
            };
            sys.close(fd);
            at(Step::Mount, i, r)?;
            let remount = match m.kind {
                MountKind::Bind {
                    remount: Some(flags),
                    ..
                } => Some(flags),
                _ => None,
            };
            if remount.is_none() && m.propagation == 0 {
                continue;
            }
            // Reopen: the old fd points below the new mount.
            let fd = at(
                Step::MountRemount,
                i,
                self.open_in_root(root, &m.target.path, libc::O_PATH),
            )?;
            let path = fd_path(&mut buf, b"/proc/self/fd/", fd);
            let mut r = Ok(());
            if let Some(flags) = remount {
                let base = libc::MS_BIND | libc::MS_REMOUNT | flags;
                r = match sys.mount(None, path, None, base, None) {
                    // The kernel locks some flags of mounts from a more
                    // privileged namespace; repeat them.
                    Err(Errno(libc::EPERM)) => sys
                        .statfs_flags(path)
                        .and_then(|st| sys.mount(None, path, None, base | locked_flags(st), None)),
                    other => other,
                }
                .map_err(|e| (Step::MountRemount, e));
            }
            if r.is_ok() && m.propagation != 0 {
                r = sys
                    .mount(None, path, None, m.propagation, None)
                    .map_err(|e| (Step::MountPropagation, e));
            }
            sys.close(fd);
            r.map_err(|(step, errno)| Failure {
                step,
                index: i as u32,
                errno,
            })?;
        }
        Ok(())
    }

    fn devices(&self, root: RawFd) -> StepResult {
        let sys = self.sys;
        let userns = self.plan.user_namespace();
        for (i, d) in self.plan.devices.iter().enumerate() {
            let r = (|| {
                self.make_target(root, &d.target, None)?;
                if userns {
                    // mknod is not allowed in a user namespace: bind the
                    // host's node onto an empty file.
                    self.make_target(root, &d.target, Some(false))?;
                    let fd = self.open_in_root(root, &d.target.path, libc::O_PATH)?;
                    let mut buf = [0u8; 48];
                    let path = fd_path(&mut buf, b"/proc/self/fd/", fd);
                    let r = sys.mount(Some(&d.host), path, None, libc::MS_BIND, None);
                    sys.close(fd);
                    return r;
                }
                let dir =
                    self.open_in_root(root, &d.target.parent, libc::O_PATH | libc::O_DIRECTORY)?;
                let r = match sys.mknodat(dir, &d.target.name, d.kind | d.mode, d.dev) {
                    Err(Errno(libc::EEXIST)) => Ok(()),
                    Ok(()) if d.uid != 0 || d.gid != 0 => {
                        sys.fchownat(dir, &d.target.name, d.uid, d.gid)
                    }
                    other => other,
                };
                sys.close(dir);
                r
            })();
            at(Step::Device, i, r)?;
        }
        for (i, l) in self.plan.symlinks.iter().enumerate() {
            let r = (|| {
                self.make_target(root, &l.target, None)?;
                let dir =
                    self.open_in_root(root, &l.target.parent, libc::O_PATH | libc::O_DIRECTORY)?;
                let r = sys.symlinkat(&l.to, dir, &l.target.name);
                sys.close(dir);
                match r {
                    Err(Errno(libc::EEXIST)) => Ok(()),
                    other => other,
                }
            })();
            at(Step::Symlink, i, r)?;
        }
        Ok(())
    }

    fn write_file(&self, path: &CStr, value: &[u8]) -> SysResult<()> {
        self.write_file_at(libc::AT_FDCWD, path, value)
    }

    fn write_file_at(&self, dirfd: RawFd, path: &CStr, value: &[u8]) -> SysResult<()> {
        let fd = self.sys.openat(
            dirfd,
            path,
            libc::O_WRONLY | libc::O_CLOEXEC | libc::O_TRUNC,
            0,
        )?;
        let r = self.sys.write(fd, value);
        self.sys.close(fd);
        match r {
            Ok(n) if n == value.len() => Ok(()),
            Ok(_) => Err(Errno(libc::EIO)),
            Err(e) => Err(e),
        }
    }

    fn remount_readonly(&self, path: &CStr) -> SysResult<()> {
        let flags = locked_flags(self.sys.statfs_flags(path)?);
        self.sys.mount(
            None,
            path,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | flags,
            None,
        )
    }

    /// Closes every descriptor from 3 up except the preserved ones and
    /// those in [`ChildFds`]. No allocation: the kept set is small.
    fn close_inherited(&self) -> StepResult<()> {
        let fds = self.fds;
        let mut keep = [RawFd::MAX; 32];
        let mut count = 0;
        for fd in [fds.sync, fds.fifo, fds.proc]
            .into_iter()
            .chain(fds.join.iter().map(|(fd, _)| *fd))
        {
            if count == keep.len() {
                return Ok(()); // Too many to track: keep everything.
            }
            keep[count] = fd;
            count += 1;
        }
        let keep = &mut keep[..count];
        keep.sort_unstable();
        let mut next = 3 + fds.preserve_fds;
        for &fd in keep.iter() {
            let Ok(fd) = u32::try_from(fd) else { continue };
            if fd > next {
                at(Step::PreserveFds, 0, self.sys.close_range(next, fd - 1))?;
            }
            next = next.max(fd.saturating_add(1));
        }
        at(Step::PreserveFds, 0, self.sys.close_range(next, u32::MAX))
    }

    /// Steps (2) to (6); returns only on failure.
    fn run(&self) -> Failure {
        match self.steps() {
            Err(f) => f,
            Ok(never) => match never {},
        }
    }

    fn steps(&self) -> StepResult<std::convert::Infallible> {
        // (1b) Close what the parent had open and we do not need: a parent
        // holding thousands of descriptors (the daemon's zygote) would
        // otherwise leave none free below a container's RLIMIT_NOFILE.
        self.close_inherited()?;

        // (2) Wait for GO: the parent has written our id maps and put us into
        // our cgroup.
        if self.fds.wait_for_go {
            self.wait_go()?;
        }

        // (3) Build the container.
        self.enter_namespaces()?;
        self.enter_root()?;
        self.names_and_sysctls()?;
        self.protect_paths()?;
        self.terminal()?;
        self.security_labels()?;
        self.process_attributes()?;
        self.capabilities_and_user()?;
        // Find the executable now, so that `create` fails for a missing one.
        let chosen = self.find_executable()?;
        self.sys.umask(self.plan.umask);
        self.pass_descriptors()?;

        // (4) Ready, and (5) block until `start`.
        self.ready_and_wait_for_start()?;
        // (5a) The startContainer hooks.
        self.start_hooks()?;

        // (6) The seccomp filter, then exec.
        self.exec(chosen)
    }

    /// An exec'd process's steps: GO, the container's namespaces and root,
    /// then the process steps as for an init, and `execve` right away
    /// (no exec.fifo: success is EOF on the sync socket).
    fn exec_steps(&self, target: &ExecTarget) -> StepResult<std::convert::Infallible> {
        let sys = self.sys;
        if self.fds.wait_for_go {
            self.wait_go()?;
        }
        at(
            Step::JoinNamespace,
            0,
            sys.setns(target.pidfd, target.namespaces),
        )?;
        sys.close(target.pidfd);
        at(Step::Chroot, 0, sys.fchdir(target.root))?;
        at(Step::Chroot, 0, sys.chroot(c"."))?;
        sys.close(target.root);
        at(Step::Chroot, 1, sys.chdir(c"/"))?;
        at(Step::Setsid, 0, sys.setsid())?;
        at(Step::Signals, 0, sys.reset_signals())?;
        self.terminal()?;
        self.security_labels()?;
        self.process_attributes()?;
        self.capabilities_and_user()?;
        let chosen = self.find_executable()?;
        sys.umask(self.plan.umask);
        self.pass_descriptors()?;
        self.exec(chosen)
    }

    /// With `process.terminal`: a new pseudo-terminal from the container's
    /// own `/dev/ptmx`; its primary side goes to the parent (MSG_CONSOLE),
    /// the replica becomes stdin, stdout, stderr and the controlling
    /// terminal of the session `setsid` made.
    fn terminal(&self) -> StepResult {
        if !self.plan.terminal {
            return Ok(());
        }
        let sys = self.sys;
        let (primary, replica) = at(Step::Terminal, 0, sys.open_pty_pair())?;
        let sent = sys.send_fd(
            self.fds.sync,
            &Message::new(MSG_CONSOLE).to_bytes(),
            primary,
        );
        sys.close(primary);
        let mut r = sent.map_err(|e| fail(Step::Terminal, 1, e));
        for fd in 0..3 {
            if r.is_ok() {
                r = at(Step::Terminal, 2, sys.dup2(replica, fd));
            }
        }
        sys.close(replica);
        r?;
        at(Step::Terminal, 3, sys.set_controlling_terminal(0))
    }

    /// Step (2): reads GO from the parent.
    fn wait_go(&self) -> StepResult {
        let mut msg = [0u8; Message::SIZE];
        match self.sys.read(self.fds.sync, &mut msg) {
            Ok(Message::SIZE) if Message::from_bytes(&msg).kind == MSG_GO => Ok(()),
            Ok(_) => Err(fail(Step::WaitGo, 0, Errno(libc::EPROTO))),
            Err(e) => Err(fail(Step::WaitGo, 0, e)),
        }
    }

    /// The namespaces to join (a user namespace first, which gives the
    /// rights for the rest), root in the user namespace, the namespaces the
    /// init makes itself (the cgroup namespace; every new one inside a joined
    /// user namespace), a new session, default signals.
    fn enter_namespaces(&self) -> StepResult {
        let sys = self.sys;
        let plan = self.plan;
        let join = self.fds.join;
        let user_first = join.first().is_some_and(|(_, t)| *t == libc::CLONE_NEWUSER) as usize;
        for (i, (fd, nstype)) in join.iter().enumerate().take(user_first) {
            at(Step::JoinNamespace, i, sys.setns(*fd, *nstype))?;
            sys.close(*fd);
        }
        if plan.user_namespace() {
            at(Step::SetUserIds, 0, sys.setresgid(0))?;
            at(Step::SetUserIds, 0, sys.setresuid(0))?;
        }
        for (i, (fd, nstype)) in join.iter().enumerate().skip(user_first) {
            at(Step::JoinNamespace, i, sys.setns(*fd, *nstype))?;
            sys.close(*fd);
        }
        // The cgroup namespace is rooted at the cgroup of the process that
        // creates it. With CLONE_INTO_CGROUP the kernel would root a cloned
        // one in the target cgroup, but after the `clone` fallback (joined by
        // pid) it would be the parent's cgroup, showing the container the
        // whole host hierarchy. So it is always made here, after GO, when
        // the parent has put us into our cgroup either way.
        if plan.unshare_flags != 0 {
            at(
                Step::Unshare,
                0,
                sys.unshare(plan.unshare_flags as libc::c_int),
            )?;
        }
        at(Step::Setsid, 0, sys.setsid())?;
        at(Step::Signals, 0, sys.reset_signals())?;
        sys.umask(0);
        Ok(())
    }

    /// The root's mount propagation before it is built (index 0: `/`,
    /// index 1: the rootfs's parent mount, see [`super::plan::RootPropagation`]).
    fn prepare_propagation(&self) -> StepResult {
        let sys = self.sys;
        let prop = &self.plan.root_propagation;
        if prop.before != 0 {
            at(
                Step::RootPropagation,
                0,
                sys.mount(None, c"/", None, prop.before, None),
            )?;
        }
        // The first of the rootfs and its ancestors that is a mount point
        // (the others answer EINVAL).
        let mut last = Ok(());
        for path in &prop.parents {
            last = sys.mount(None, path, None, prop.parent, None);
            if last != Err(Errno(libc::EINVAL)) {
                break;
            }
        }
        at(Step::RootPropagation, 1, last)
    }

    /// The root file system: its mounts, devices and working directory,
    /// then `pivot_root` into it (`chroot` in the runtime's mount
    /// namespace).
    fn enter_root(&self) -> StepResult {
        let sys = self.sys;
        let plan = self.plan;
        self.prepare_propagation()?;
        if let Some(options) = &plan.root_overlay {
            // Mounted here, in the container's own mount namespace, the
            // overlay never joins the host's mount table: a host with
            // thousands of containers keeps a short one, which every new
            // mount namespace copies.
            at(
                Step::MountRootOverlay,
                0,
                sys.mount(
                    Some(c"overlay"),
                    &plan.rootfs_c,
                    Some(c"overlay"),
                    0,
                    Some(options),
                ),
            )?;
        }
        at(
            Step::BindRoot,
            0,
            sys.mount(
                Some(&plan.rootfs_c),
                &plan.rootfs_c,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            ),
        )?;
        if plan.shared_mount_ns {
            // The host's mount namespace: what is mounted under the root
            // stays out of the host's other mounts and namespaces.
            at(
                Step::RootPropagation,
                1,
                sys.mount(
                    None,
                    &plan.rootfs_c,
                    None,
                    libc::MS_PRIVATE | libc::MS_REC,
                    None,
                ),
            )?;
        }
        let root = at(
            Step::OpenRoot,
            0,
            sys.openat(
                libc::AT_FDCWD,
                &plan.rootfs_c,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            ),
        )?;
        self.mounts(root)?;
        self.devices(root)?;
        if let Some(cwd) = &plan.cwd_target {
            at(Step::Cwd, 0, self.make_target(root, cwd, Some(true)))?;
        }
        self.create_hooks()?;
        if plan.shared_mount_ns {
            at(Step::Chroot, 0, sys.fchdir(root))?;
            at(Step::Chroot, 0, sys.chroot(c"."))?;
            at(Step::Chroot, 1, sys.chdir(c"/"))?;
            sys.close(root);
            return Ok(());
        }
        let old_root = at(
            Step::PivotRoot,
            0,
            sys.openat(
                libc::AT_FDCWD,
                c"/",
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            ),
        )?;
        at(Step::PivotRoot, 0, sys.fchdir(root))?;
        at(Step::PivotRoot, 0, sys.pivot_root(c".", c"."))?;
        sys.close(root);
        // The old root is stacked on the new one now, but "." still names
        // the new root's mount for mount(2): without this fchdir the rslave
        // below would turn the container's own mounts into slaves (and a
        // shared volume would no longer send its mounts to the host).
        let r = sys.fchdir(old_root);
        sys.close(old_root);
        at(Step::PivotRoot, 1, r)?;
        // Keep the old root's unmount from propagating to the host.
        at(
            Step::PivotRoot,
            1,
            sys.mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None),
        )?;
        at(Step::PivotRoot, 2, sys.umount2(c".", libc::MNT_DETACH))?;
        at(Step::PivotRoot, 3, sys.chdir(c"/"))?;
        Ok(())
    }

    /// Network, names, sysctls.
    fn names_and_sysctls(&self) -> StepResult {
        let sys = self.sys;
        let plan = self.plan;
        if plan.loopback {
            at(Step::Loopback, 0, sys.loopback_up())?;
        }
        if let Some(name) = &plan.hostname {
            at(Step::Hostname, 0, sys.sethostname(name.to_bytes()))?;
        }
        if let Some(name) = &plan.domainname {
            at(Step::Domainname, 0, sys.setdomainname(name.to_bytes()))?;
        }
        for (i, (path, value)) in plan.sysctls.iter().enumerate() {
            at(Step::Sysctl, i, self.write_file(path, value.to_bytes()))?;
        }
        Ok(())
    }

    /// Read-only and masked paths (missing ones are skipped), a read-only
    /// root, the root's propagation.
    fn protect_paths(&self) -> StepResult {
        let sys = self.sys;
        let plan = self.plan;
        for (i, p) in plan.readonly.iter().enumerate() {
            match sys.mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None) {
                Err(Errno(libc::ENOENT)) => continue,
                r => at(Step::ReadonlyPath, i, r)?,
            }
            at(Step::ReadonlyPath, i, self.remount_readonly(p))?;
        }
        // A masked directory gets an empty read-only tmpfs, anything else
        // /dev/null. Asked first rather than learned from a failed bind
        // (runc's way): the kernel undoes a failed bind with an unmount that
        // waits for an RCU grace period, host-wide serialised, which made
        // two of every start's three waits and kept parallel starts from
        // scaling.
        for (i, p) in plan.masked.iter().enumerate() {
            let masked = match sys.is_directory(p) {
                Err(Errno(libc::ENOENT)) => continue,
                Err(e) => return Err(fail(Step::MaskedPath, i, e)),
                Ok(true) => sys.mount(Some(c"tmpfs"), p, Some(c"tmpfs"), libc::MS_RDONLY, None),
                Ok(false) => sys.mount(Some(c"/dev/null"), p, None, libc::MS_BIND, None),
            };
            match masked {
                Ok(()) | Err(Errno(libc::ENOENT)) => {}
                Err(e) => return Err(fail(Step::MaskedPath, i, e)),
            }
        }
        if plan.root_readonly {
            at(Step::ReadonlyRoot, 0, self.remount_readonly(c"/"))?;
        }
        // The propagation asked for, on the container's own root now: a
        // shared root would have made pivot_root fail, an unbindable one the
        // binds of the read-only and masked paths.
        let after = plan.root_propagation.after;
        if after != 0 {
            at(
                Step::RootPropagation,
                2,
                sys.mount(None, c"/", None, after, None),
            )?;
        }
        Ok(())
    }

    /// The AppArmor profile or SELinux label `execve` switches to, written
    /// through the host's `/proc` (the container's may not be mounted).
    fn security_labels(&self) -> StepResult {
        for (i, w) in self.plan.lsm_exec.iter().enumerate() {
            at(
                Step::SecurityLabel,
                i,
                self.write_file_at(self.fds.proc, &w.path, w.value.to_bytes()),
            )?;
        }
        Ok(())
    }

    /// Process attributes: `oom_score_adj`, rlimits.
    fn process_attributes(&self) -> StepResult {
        let sys = self.sys;
        let plan = self.plan;
        if let Some(v) = &plan.oom_score_adj {
            at(
                Step::OomScoreAdj,
                0,
                self.write_file(c"/proc/self/oom_score_adj", v.to_bytes()),
            )?;
        }
        for (i, l) in plan.rlimits.iter().enumerate() {
            at(Step::Rlimit, i, sys.setrlimit(l.resource, l.soft, l.hard))?;
        }
        Ok(())
    }

    /// Without no_new_privs, loading the seccomp filter needs
    /// `CAP_SYS_ADMIN`; the filter comes last (step 6), so the capability
    /// stays permitted and effective until then. That does not reach the
    /// container: `execve` computes the new permitted and effective sets from
    /// the inheritable, ambient and bounding sets and the file's
    /// capabilities, never from the old permitted set.
    fn keep_sys_admin(&self) -> u64 {
        let plan = self.plan;
        let admin = 1u64 << CAP_SYS_ADMIN;
        if !plan.no_new_privs && plan.seccomp.is_some() && plan.caps.effective & admin == 0 {
            admin
        } else {
            0
        }
    }

    /// Capabilities and user, `no_new_privs`, the working directory.
    fn capabilities_and_user(&self) -> StepResult {
        let sys = self.sys;
        let plan = self.plan;
        let caps = plan.caps;
        for cap in 0..=caps.last_cap {
            if caps.bounding & (1u64 << cap) == 0 {
                match sys.prctl(libc::PR_CAPBSET_DROP, cap.into(), 0) {
                    Ok(_) | Err(Errno(libc::EINVAL)) => {}
                    Err(e) => return Err(fail(Step::BoundingSet, cap as usize, e)),
                }
            }
        }
        at(Step::KeepCaps, 0, sys.prctl(libc::PR_SET_KEEPCAPS, 1, 0))?;
        at(Step::Setgroups, 0, sys.setgroups(&plan.groups))?;
        at(Step::Setgid, 0, sys.setresgid(plan.gid))?;
        at(Step::Setuid, 0, sys.setresuid(plan.uid))?;
        at(Step::KeepCaps, 1, sys.prctl(libc::PR_SET_KEEPCAPS, 0, 0))?;
        let admin = self.keep_sys_admin();
        at(
            Step::Capset,
            0,
            sys.capset(CapSets {
                effective: caps.effective | admin,
                permitted: caps.permitted | admin,
                inheritable: caps.inheritable,
            }),
        )?;
        at(
            Step::Ambient,
            0,
            sys.prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
            ),
        )?;
        // Ambient capabilities must also be permitted and inheritable; like
        // runc, the others are silently left out.
        let ambient = caps.ambient & caps.permitted & caps.inheritable;
        for cap in 0..=caps.last_cap {
            if ambient & (1u64 << cap) != 0 {
                at(
                    Step::Ambient,
                    cap as usize,
                    sys.prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap.into(),
                    ),
                )?;
            }
        }
        if plan.no_new_privs {
            at(
                Step::NoNewPrivs,
                0,
                sys.prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0),
            )?;
        }
        at(Step::Chdir, 0, sys.chdir(&plan.cwd))
    }

    /// The index of the first executable candidate.
    fn find_executable(&self) -> StepResult<usize> {
        let mut last_err = Errno(libc::ENOENT);
        for (i, candidate) in self.plan.exec_candidates.iter().enumerate() {
            match self.sys.access(candidate, libc::X_OK) {
                Ok(()) => return Ok(i),
                Err(Errno(libc::ENOENT)) | Err(Errno(libc::ENOTDIR)) => {}
                Err(e) => last_err = e,
            }
        }
        Err(fail(Step::FindExecutable, 0, last_err))
    }

    /// Step (3a), before `pivot_root` (or `chroot`), with the old root
    /// still visible ([`super::hooks`]): with `prestart` or `createRuntime`
    /// hooks, HOOKS to the parent, which runs them and answers GO; then the
    /// `createContainer` hooks, run from here in the rootfs directory.
    fn create_hooks(&self) -> StepResult {
        let hooks = &self.plan.hooks;
        if hooks.runtime_hooks_before_pivot() {
            let hello = Message::new(MSG_HOOKS).to_bytes();
            at(Step::WaitGo, 1, self.sys.write(self.fds.sync, &hello))?;
            self.wait_go()?;
        }
        let cwd = Some(self.plan.rootfs_c.as_c_str());
        hooks
            .run_in_init(Kind::CreateContainer, hooks::CREATING, cwd)
            .map_err(|(i, f)| fail(Step::CreateContainerHook, i, Errno(f.to_wire())))
    }

    /// Step (5a), after `start` took the fifo's byte: the `startContainer`
    /// hooks, as the container's process. Before the seccomp filter, which
    /// need not allow what running a hook takes. A failure is reported on
    /// exec.fifo like one of step (6), so `start` fails.
    fn start_hooks(&self) -> StepResult {
        self.plan
            .hooks
            .run_in_init(Kind::StartContainer, hooks::CREATED, None)
            .map_err(|(i, f)| fail(Step::StartContainerHook, i, Errno(f.to_wire())))
    }

    /// Every descriptor from 3 up close-on-exec, except the preserved ones
    /// (`--preserve-fds`). Before READY, so that a failure fails `create`,
    /// and before the seccomp filter, which need not allow `close_range`.
    fn pass_descriptors(&self) -> StepResult {
        let sys = self.sys;
        at(Step::PreserveFds, 0, sys.cloexec_from(3))?;
        for fd in 3..3 + self.fds.preserve_fds {
            at(
                Step::PreserveFds,
                fd as usize,
                sys.clear_cloexec(fd as RawFd),
            )?;
        }
        Ok(())
    }

    /// Steps (4) and (5): tells the parent we are ready, then blocks until
    /// `start` opens exec.fifo for reading. The fifo stays open (it is
    /// close-on-exec) to report a failure of step (5a) or (6) to `start`.
    fn ready_and_wait_for_start(&self) -> StepResult {
        let sys = self.sys;
        let fds = self.fds;
        at(
            Step::Ready,
            0,
            sys.write(fds.sync, &Message::new(MSG_READY).to_bytes()),
        )?;
        let mut buf = [0u8; 48];
        let fifo_path = fd_path(&mut buf, b"self/fd/", fds.fifo);
        let fifo = at(
            Step::ExecFifo,
            0,
            sys.openat(fds.proc, fifo_path, libc::O_WRONLY | libc::O_CLOEXEC, 0),
        )?;
        if let Err(e) = sys.write(fifo, b"0") {
            sys.close(fifo);
            return Err(fail(Step::ExecFifo, 1, e));
        }
        self.report.set(fifo);
        sys.close(fds.fifo);
        sys.close(fds.proc);
        Ok(())
    }

    /// Step (6): the seccomp filter, then `execve` of candidate `chosen`.
    /// Nothing of ours runs in between: the filter need allow nothing but
    /// `execve` (and, should that fail, `write` and `exit_group` to report
    /// it).
    fn exec(&self, chosen: usize) -> StepResult<std::convert::Infallible> {
        let sys = self.sys;
        let plan = self.plan;
        if let Some(p) = &plan.seccomp {
            at(Step::Seccomp, 0, sys.seccomp(&p.instructions, p.flags))?;
        }
        let errno = sys.execve(
            &plan.exec_candidates[chosen],
            plan.args.pointers(),
            plan.env.pointers(),
        );
        Err(fail(Step::Exec, chosen, errno))
    }
}

/// The init process: runs the plan, reports a failure to the parent (or,
/// from step (5), to `start`) and `_exit`s. Never returns.
pub fn init_main(plan: &Plan, fds: ChildFds<'_>) -> ! {
    let sys = RealSys;
    let init = Init::new(&sys, plan, fds);
    let failure = init.run();
    if !report(&sys, plan, init.report.get(), fds.sync, failure) {
        // Nobody is listening (`create` has exited, `start` died): stderr.
        let _ = sys.write(2, b"hostd oci: container init failed at step: ");
        let _ = sys.write(2, failure.step.describe().as_bytes());
        let mut buf = [0u8; 48];
        let _ = sys.write(2, fd_path(&mut buf, b" errno ", failure.errno.0).to_bytes());
        let _ = sys.write(2, b"\n");
    }
    sys::exit_now(exit_code(failure))
}

/// What an exec'd process enters: the running container of its init.
#[derive(Debug, Clone, Copy)]
pub struct ExecTarget {
    /// The init's pidfd, for `setns`.
    pub pidfd: RawFd,
    /// The `CLONE_NEW*` namespaces to join through it (those that differ
    /// from the runtime's; the pid namespace was entered by the parent).
    pub namespaces: libc::c_int,
    /// The init's root directory (`/proc/PID/root`), opened `O_PATH`.
    pub root: RawFd,
}

/// A process exec'd into a running container (`docker exec`): joins the
/// init's namespaces and root, applies the process steps of `plan` and
/// `execve`s; reports a failure on the sync socket and `_exit`s. Never
/// returns.
pub fn exec_main(plan: &Plan, fds: ChildFds<'_>, target: ExecTarget) -> ! {
    let sys = RealSys;
    let init = Init::new(&sys, plan, fds);
    let failure = match init.exec_steps(&target) {
        Err(f) => f,
        Ok(never) => match never {},
    };
    report(&sys, plan, fds.sync, fds.sync, failure);
    sys::exit_now(exit_code(failure))
}

/// The exit status of an init or exec'd process that failed at `failure`:
/// 127 for a command not found, 126 for one not executable, as shells do.
fn exit_code(failure: Failure) -> i32 {
    match (failure.step, failure.errno.0) {
        (Step::Exec, libc::ENOENT) => 127,
        (Step::Exec, _) => 126,
        _ => 1,
    }
}

/// Sends `f` as an ERROR message on `fd`. On exec.fifo (any `fd` but
/// `sync`) the command follows the message, since `start` has no plan to
/// name it from. Whether it was written.
fn report<S: ChildSys>(sys: &S, plan: &Plan, fd: RawFd, sync: RawFd, f: Failure) -> bool {
    let msg = Message {
        kind: MSG_ERROR,
        step: f.step as u32,
        index: f.index,
        errno: f.errno.0,
    };
    if sys.write(fd, &msg.to_bytes()) != Ok(Message::SIZE) {
        return false;
    }
    if fd != sync {
        let _ = sys.write(fd, plan.command().to_bytes());
    }
    true
}

/// Runs the init steps against a fake [`ChildSys`] and returns the failure
/// that ended them (a fake's `execve` returns).
#[cfg(test)]
pub(crate) fn run_with<S: ChildSys>(sys: &S, plan: &Plan, fds: ChildFds<'_>) -> Failure {
    Init::new(sys, plan, fds).run()
}

/// The steps of an exec'd process against a fake [`ChildSys`].
#[cfg(test)]
pub(crate) fn run_exec_with<S: ChildSys>(
    sys: &S,
    plan: &Plan,
    fds: ChildFds<'_>,
    target: ExecTarget,
) -> Failure {
    let init = Init::new(sys, plan, fds);
    match init.exec_steps(&target) {
        Err(f) => f,
        Ok(never) => match never {},
    }
}

/// [`run_with`], then the report the init would send (recorded by the
/// fake).
#[cfg(test)]
pub(crate) fn run_and_report<S: ChildSys>(sys: &S, plan: &Plan, fds: ChildFds<'_>) -> Failure {
    let init = Init::new(sys, plan, fds);
    let failure = init.run();
    report(sys, plan, init.report.get(), fds.sync, failure);
    failure
}

#[cfg(test)]
mod tests;
