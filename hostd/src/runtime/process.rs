//! The parent side of creating a container's init process.
//!
//! [`spawn`] clones the init with `clone3` (new namespaces, a pidfd, and the
//! target cgroup via `CLONE_INTO_CGROUP`), falling back to `clone` when the
//! kernel or a seccomp filter refuses `clone3`. It then drives the numbered
//! sync protocol described in [`super::child`]:
//!
//! 1. clone; when step 2 has work, the child blocks reading the sync
//!    socket ([`ChildFds::wait_for_go`]);
//! 2. write the uid/gid maps (user namespace), join the cgroup by pid when
//!    `CLONE_INTO_CGROUP` was not used, and then send GO;
//! 3. (child builds the container); with `prestart` or `createRuntime`
//!    hooks the child sends HOOKS before `pivot_root`: run them, send GO
//!    (3a, see [`super::hooks`]);
//! 4. read READY, or ERROR with the failed step, or EOF if the child died.
//!
//! Steps 5, 5a and 6 (exec.fifo, the `startContainer` hooks, execve) happen
//! later, in `start`, which waits for their outcome on exec.fifo with
//! [`wait_for_exec`].

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::child::{
    self, ChildFds, ExecTarget, Failure, Message, Step, MSG_CONSOLE, MSG_ERROR, MSG_GO, MSG_HOOKS,
    MSG_READY,
};
use super::hooks::{self, HookError, Hooks};
use super::mount_source::{MountSource, MountSourceError};
use super::plan::Plan;
use super::sys::{self, Errno, Forked};

/// Errors from creating the init process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A namespace to join could not be opened or entered.
    #[error("cannot join {kind} namespace {path}")]
    Namespace {
        /// The namespace kind.
        kind: &'static str,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The mount source could not be entered, pruned or left.
    #[error("the containers' mount namespace")]
    MountSource(#[source] MountSourceError),
    /// `--preserve-fds` names a closed descriptor.
    #[error("--preserve-fds: fd {0} is not open")]
    PreserveFds(RawFd),
    /// A parent-side system call failed.
    #[error("{what}")]
    Sys {
        /// Which call.
        what: &'static str,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Writing an id map or `cgroup.procs` failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The init reported a failed step.
    #[error("container init failed {}{}: {errno}", step.describe(), context)]
    Init {
        /// The step.
        step: Step,
        /// What the step worked on (`/dev/pts`, `RLIMIT_NOFILE`), with a leading
        /// space, or empty.
        context: String,
        /// The error.
        errno: Errno,
    },
    /// The init died without reporting.
    #[error("container init exited without reporting (status {0})")]
    Died(i32),
    /// A `prestart`, `createRuntime` or `createContainer` hook failed.
    #[error(transparent)]
    Hook(#[from] HookError),
}

/// Inputs to [`spawn`] besides the plan.
#[derive(Debug)]
pub struct SpawnOptions<'a> {
    /// `exec.fifo`, opened `O_PATH`.
    pub fifo: BorrowedFd<'a>,
    /// The cgroup directory for `CLONE_INTO_CGROUP`.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// The cgroup's `cgroup.procs`, for the `clone` fallback.
    pub cgroup_procs: Option<PathBuf>,
    /// fds 3..3+n to pass into the container.
    pub preserve_fds: u32,
    /// Skip `clone3` (tests of the fallback).
    pub legacy_clone: bool,
    /// The mount namespace a new one is copied from, instead of the
    /// caller's ([`MountSource`]).
    pub mount_source: Option<&'a MountSource>,
}

/// A created init process, blocked before `execve`.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: libc::pid_t,
    /// Its pidfd, when the kernel gave one.
    pub pidfd: Option<OwnedFd>,
    /// The parent's end of the sync socket: EOF after a successful `execve`.
    pub sync: OwnedFd,
    /// Whether `clone3` was used.
    pub clone3: bool,
    /// The primary side of its pseudo-terminal (`process.terminal`).
    pub console: Option<OwnedFd>,
}

impl Spawned {
    /// The end of a spawn: the process with the terminal it sent, or, when
    /// its handshake failed, the error after the process is killed.
    fn finish(
        mut self,
        handshake: Result<Option<OwnedFd>, SpawnError>,
    ) -> Result<Spawned, SpawnError> {
        match handshake {
            Ok(console) => {
                self.console = console;
                Ok(self)
            }
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }

    /// Kills and reaps the init (cleanup after a failure).
    pub fn kill(&self) {
        match &self.pidfd {
            Some(fd) => {
                let _ = sys::pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
                let _ = sys::waitid_pidfd(fd.as_fd(), true);
            }
            None => {
                let _ = sys::kill(self.pid, libc::SIGKILL);
                let _ = sys::waitid_pid(self.pid, true);
            }
        }
    }

    /// Waits for the init to exit (it must be our child).
    pub fn wait(&self) -> Result<sys::WaitStatus, Errno> {
        let status = match &self.pidfd {
            Some(fd) => sys::waitid_pidfd(fd.as_fd(), true)?,
            None => sys::waitid_pid(self.pid, true)?,
        };
        status.ok_or(Errno(libc::ECHILD))
    }
}

fn context(plan: &Plan, f: &Failure) -> String {
    let i = f.index as usize;
    let item = match f.step {
        Step::MountTarget | Step::Mount | Step::MountRemount | Step::MountPropagation => {
            plan.mounts.get(i).map(|m| m.target.display.clone())
        }
        Step::Device => plan.devices.get(i).map(|d| d.target.display.clone()),
        Step::Symlink => plan.symlinks.get(i).map(|l| l.target.display.clone()),
        Step::Sysctl => plan
            .sysctls
            .get(i)
            .map(|(p, _)| p.to_string_lossy().into_owned()),
        Step::ReadonlyPath => plan
            .readonly
            .get(i)
            .map(|p| p.to_string_lossy().into_owned()),
        Step::MaskedPath => plan.masked.get(i).map(|p| p.to_string_lossy().into_owned()),
        Step::Rlimit => plan.rlimit_names.get(i).cloned(),
        Step::BoundingSet | Step::Ambient if i > 0 => {
            super::caps::NAMES.get(i).map(|s| s.to_string())
        }
        Step::FindExecutable | Step::Exec => Some(plan.command().to_string_lossy().into_owned()),
        Step::Chdir | Step::Cwd => Some(plan.cwd.to_string_lossy().into_owned()),
        Step::JoinNamespace => plan
            .join
            .get(i)
            .map(|j| format!("{} {}", j.kind.name(), j.path.display())),
        Step::RootPropagation => Some(match i {
            0 => "of /".to_string(),
            1 => format!("of the mount holding {}", plan.rootfs.display()),
            _ => "of the container's /".to_string(),
        }),
        Step::SecurityLabel => plan
            .lsm_exec
            .get(i)
            .map(|w| format!("{} {:?}", w.field, w.value)),
        _ => None,
    };
    item.map(|s| format!(" {s}")).unwrap_or_default()
}

fn fd_is_open(fd: RawFd) -> bool {
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok()
}

/// Creates the init process and runs sync steps 1-4.
pub fn spawn(plan: &Plan, opts: &SpawnOptions<'_>) -> Result<Spawned, SpawnError> {
    let sys_err = |what: &'static str| move |source: Errno| SpawnError::Sys { what, source };
    for fd in 3..3 + opts.preserve_fds as RawFd {
        if !fd_is_open(fd) {
            return Err(SpawnError::PreserveFds(fd));
        }
    }
    let proc_dir = open_proc()?;
    if let Some(ns) = &plan.join_pid {
        // Enter the pid namespace for our children: the init is born in it.
        use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
        move_into_link_name_space(ns.fd.as_fd(), Some(LinkNameSpaceType::ProcessID)).map_err(
            |e| SpawnError::Namespace {
                kind: "pid",
                path: ns.path.clone(),
                source: e.into(),
            },
        )?;
    }
    // The plan opened and checked the namespace files.
    let join: Vec<(RawFd, libc::c_int)> = plan
        .join
        .iter()
        .map(|ns| (ns.fd.as_raw_fd(), ns.kind.clone_flag() as libc::c_int))
        .collect();
    let (parent_sock, child_sock) = sys::seqpacket_pair().map_err(sys_err("socketpair"))?;
    let mut fds = ChildFds {
        sync: child_sock.as_raw_fd(),
        fifo: opts.fifo.as_raw_fd(),
        proc: proc_dir.as_raw_fd(),
        join: &join,
        preserve_fds: opts.preserve_fds,
        wait_for_go: false,
    };

    // (1) clone, from the mount source when the init gets a new mount
    // namespace: the caller is in it only for the clone.
    let source = opts
        .mount_source
        .filter(|_| plan.clone_flags & libc::CLONE_NEWNS as u64 != 0);
    if let Some(source) = source {
        // A namespace file left there is only copied along (and dropped
        // with the old root): no reason to refuse the container.
        let _ = source.prune();
        source.enter().map_err(SpawnError::MountSource)?;
    }
    let mut used_clone3 = !opts.legacy_clone;
    fds.wait_for_go = parent_goes_first(plan, opts, used_clone3);
    let forked = if used_clone3 {
        // SAFETY: the child branch below only calls `child::init_main`, which
        // runs async-signal-safe code on the prepared plan and leaves with
        // execve or _exit.
        match unsafe { sys::clone3(plan.clone_flags, opts.cgroup) } {
            Err(Errno(libc::ENOSYS)) => {
                used_clone3 = false;
                None
            }
            other => Some(other),
        }
    } else {
        None
    };
    let forked = match forked {
        Some(r) => r,
        None => {
            fds.wait_for_go = parent_goes_first(plan, opts, false);
            // SAFETY: as above.
            unsafe { sys::clone_legacy(plan.clone_flags, true) }
        }
    };
    let parent = match forked {
        Ok(Forked::Child) => {
            sys::close(parent_sock.as_raw_fd());
            child::init_main(plan, fds)
        }
        Ok(Forked::Parent { pid, pidfd }) => Ok((pid, pidfd)),
        Err(e) => Err(e),
    };
    let returned = source.map_or(Ok(()), |source| source.leave());
    let (pid, pidfd) = parent.map_err(sys_err("clone"))?;
    if let Err(e) = returned {
        // Not home: nothing after this could be trusted to find its paths.
        let _ = sys::kill(pid, libc::SIGKILL);
        let _ = sys::waitid_pid(pid, true);
        return Err(SpawnError::MountSource(e));
    }
    drop(child_sock);
    let spawned = Spawned {
        pid,
        pidfd,
        sync: parent_sock,
        clone3: used_clone3,
        console: None,
    };
    let console = handshake(plan, opts, &spawned);
    spawned.finish(console)
}

fn handshake(
    plan: &Plan,
    opts: &SpawnOptions<'_>,
    spawned: &Spawned,
) -> Result<Option<OwnedFd>, SpawnError> {
    let pid = spawned.pid;
    let write = |path: PathBuf, data: &str| {
        std::fs::write(&path, data).map_err(|source| SpawnError::Write { path, source })
    };
    // (2) id maps, cgroup by pid, GO (only then: see ChildFds::wait_for_go).
    if let (Some(uid_map), Some(gid_map)) = (&plan.uid_map, &plan.gid_map) {
        write(PathBuf::from(format!("/proc/{pid}/uid_map")), uid_map)?;
        write(PathBuf::from(format!("/proc/{pid}/gid_map")), gid_map)?;
    }
    if joins_cgroup_by_pid(spawned.clone3, opts.cgroup, &opts.cgroup_procs) {
        if let Some(procs) = &opts.cgroup_procs {
            write(procs.clone(), &pid.to_string())?;
        }
    }
    if parent_goes_first(plan, opts, spawned.clone3) {
        send_go(spawned)?;
    }

    let (mut msg, mut console_fd) = read_message(spawned)?;
    // (3a) The init waits before pivot_root: prestart and createRuntime.
    if msg.kind == MSG_HOOKS {
        plan.hooks.run_create_runtime(pid)?;
        send_go(spawned)?;
        (msg, console_fd) = read_message(spawned)?;
    }
    // The terminal, made after the root; it comes with the message.
    let mut console = None;
    if msg.kind == MSG_CONSOLE {
        (msg, _) = read_message(spawned)?;
        console = console_fd.take();
    }

    // (4) READY or ERROR.
    match msg.kind {
        MSG_READY => Ok(console),
        MSG_ERROR => Err(init_failed(plan, &msg, Step::Ready)),
        _ => Err(protocol_error()),
    }
}

/// Where [`spawn_exec`] puts its process: a running container.
#[derive(Debug)]
pub struct ExecInto<'a> {
    /// The container init's pidfd.
    pub init: BorrowedFd<'a>,
    /// `CLONE_NEW*` namespaces of the init that differ from ours (the pid
    /// namespace included).
    pub namespaces: libc::c_int,
    /// The init's root (`/proc/PID/root`), opened `O_PATH`.
    pub root: BorrowedFd<'a>,
    /// The container's cgroup directory for `CLONE_INTO_CGROUP`.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// Its `cgroup.procs`, for the `clone` fallback.
    pub cgroup_procs: Option<PathBuf>,
}

/// Starts the process of `plan` inside the running container `into`
/// (`docker exec`, `runc exec`): born in the container's pid namespace and
/// cgroup, it joins the other namespaces and the root itself, then runs the
/// plan's process steps. Returns once it `execve`d, with the primary side
/// of its terminal when `plan.terminal`. The caller's stdin, stdout and
/// stderr are the process's (unless it has a terminal).
///
/// The caller must have a single thread: the pid namespace for children is
/// switched around the `clone`.
pub fn spawn_exec(plan: &Plan, into: &ExecInto<'_>) -> Result<Spawned, SpawnError> {
    let sys_err = |what: &'static str| move |source: Errno| SpawnError::Sys { what, source };
    let proc_dir = open_proc()?;
    let (parent_sock, child_sock) = sys::seqpacket_pair().map_err(sys_err("socketpair"))?;
    let mut fds = ChildFds {
        sync: child_sock.as_raw_fd(),
        fifo: -1,
        proc: proc_dir.as_raw_fd(),
        join: &[],
        preserve_fds: 0,
        wait_for_go: joins_cgroup_by_pid(true, into.cgroup, &into.cgroup_procs),
    };
    let target = ExecTarget {
        pidfd: into.init.as_raw_fd(),
        namespaces: into.namespaces & !libc::CLONE_NEWPID,
        root: into.root.as_raw_fd(),
    };
    let forked = {
        let own_pid_ns = File::open("/proc/self/ns/pid").map_err(|source| SpawnError::Write {
            path: "/proc/self/ns/pid".into(),
            source,
        })?;
        if into.namespaces & libc::CLONE_NEWPID != 0 {
            sys::setns(into.init.as_raw_fd(), libc::CLONE_NEWPID)
                .map_err(sys_err("entering the container's pid namespace"))?;
        }
        // SAFETY: the child branch below only calls `child::exec_main`,
        // which runs async-signal-safe code on the prepared plan and leaves
        // with execve or _exit.
        let forked = match unsafe { sys::clone3(0, into.cgroup) } {
            Err(Errno(libc::ENOSYS)) => {
                fds.wait_for_go = joins_cgroup_by_pid(false, into.cgroup, &into.cgroup_procs);
                // SAFETY: as above.
                unsafe { sys::clone_legacy(0, true) }.map(|f| (f, false))
            }
            other => other.map(|f| (f, true)),
        };
        if matches!(forked, Ok((Forked::Parent { .. }, _)) | Err(_)) {
            // Our own pid namespace is always one we may go back to.
            let _ = sys::setns(own_pid_ns.as_raw_fd(), libc::CLONE_NEWPID);
        }
        forked
    };
    let (pid, pidfd, clone3) = match forked.map_err(sys_err("clone"))? {
        (Forked::Child, _) => {
            sys::close(parent_sock.as_raw_fd());
            child::exec_main(plan, fds, target)
        }
        (Forked::Parent { pid, pidfd }, clone3) => (pid, pidfd, clone3),
    };
    drop(child_sock);
    let spawned = Spawned {
        pid,
        pidfd,
        sync: parent_sock,
        clone3,
        console: None,
    };
    let result = (|| {
        if joins_cgroup_by_pid(clone3, into.cgroup, &into.cgroup_procs) {
            if let Some(procs) = &into.cgroup_procs {
                std::fs::write(procs, pid.to_string()).map_err(|source| SpawnError::Write {
                    path: procs.clone(),
                    source,
                })?;
            }
            send_go(&spawned)?;
        }
        // MSG_CONSOLE (with a terminal), then EOF once execve closed the
        // socket, or ERROR.
        let mut console = None;
        loop {
            match next_message(&spawned)? {
                None => return Ok(console),
                Some((msg, fd)) if msg.kind == MSG_CONSOLE && fd.is_some() => console = fd,
                Some((msg, _)) if msg.kind == MSG_ERROR => {
                    return Err(init_failed(plan, &msg, Step::Exec))
                }
                Some(_) => return Err(protocol_error()),
            }
        }
    })();
    spawned.finish(result)
}

/// Whether the parent of an init has work between the clone and the
/// init's going on (id maps to write, the cgroup to join by pid): the init
/// then waits for its GO. One answer for both sides, so that they agree.
fn parent_goes_first(plan: &Plan, opts: &SpawnOptions<'_>, clone3: bool) -> bool {
    (plan.uid_map.is_some() && plan.gid_map.is_some())
        || joins_cgroup_by_pid(clone3, opts.cgroup, &opts.cgroup_procs)
}

/// Whether the parent puts the child into its cgroup by pid: there is one
/// (`cgroup.procs`) and the child was not born in it (`CLONE_INTO_CGROUP`
/// needs `clone3` and the cgroup's directory).
fn joins_cgroup_by_pid(
    clone3: bool,
    cgroup: Option<BorrowedFd<'_>>,
    cgroup_procs: &Option<PathBuf>,
) -> bool {
    (!clone3 || cgroup.is_none()) && cgroup_procs.is_some()
}

/// The host's `/proc`, opened `O_PATH` for the child (all close-on-exec).
fn open_proc() -> Result<File, SpawnError> {
    File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open("/proc")
        .map_err(|source| SpawnError::Write {
            path: "/proc".into(),
            source,
        })
}

fn send_go(spawned: &Spawned) -> Result<(), SpawnError> {
    sys::write_all(spawned.sync.as_fd(), &Message::new(MSG_GO).to_bytes()).map_err(|source| {
        SpawnError::Sys {
            what: "sending GO to the container init",
            source,
        }
    })
}

/// The init's next message, with the descriptor it carries (MSG_CONSOLE);
/// its death (EOF) is an error.
fn read_message(spawned: &Spawned) -> Result<(Message, Option<OwnedFd>), SpawnError> {
    match next_message(spawned)? {
        Some(received) => Ok(received),
        None => {
            let status = spawned.wait().map(|s| s.code()).unwrap_or(-1);
            Err(SpawnError::Died(status))
        }
    }
}

/// The child's next message and descriptor; `None` at EOF.
fn next_message(spawned: &Spawned) -> Result<Option<(Message, Option<OwnedFd>)>, SpawnError> {
    let mut buf = [0u8; Message::SIZE];
    let (n, fds) =
        crate::os::recv_with_fds(spawned.sync.as_fd(), &mut buf).map_err(|e| SpawnError::Sys {
            what: "reading from the container init",
            source: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    if n == 0 {
        return Ok(None);
    }
    if n != Message::SIZE {
        return Err(protocol_error());
    }
    Ok(Some((Message::from_bytes(&buf), fds.into_iter().next())))
}

/// The error an init reported in `msg`; `unknown` stands for a step number
/// this build does not know.
fn init_failed(plan: &Plan, msg: &Message, unknown: Step) -> SpawnError {
    let failure = Failure {
        step: Step::from_u32(msg.step).unwrap_or(unknown),
        index: msg.index,
        errno: Errno(msg.errno),
    };
    let hook = match failure.step {
        Step::CreateContainerHook => Some(hooks::Kind::CreateContainer),
        Step::StartContainerHook => Some(hooks::Kind::StartContainer),
        _ => None,
    };
    if let Some(kind) = hook {
        let failed = hooks::Failure::from_wire(msg.errno);
        return plan
            .hooks
            .init_error(kind, msg.index as usize, failed)
            .into();
    }
    SpawnError::Init {
        step: failure.step,
        context: context(plan, &failure),
        errno: failure.errno,
    }
}

/// Steps (5a) and (6) as `start` sees them: once the init has taken
/// exec.fifo's byte, reads `fifo` (opened non-blocking) until EOF, which
/// means `execve` succeeded (the init's end is close-on-exec), or until the
/// init's report of a failed `startContainer` hook, seccomp filter or
/// `execve`: a [`Message`] followed by the command. A hook's failure is told
/// with `hooks` (the container's, when they could be prepared). Gives up
/// after `timeout_ms` (`None`: never).
pub fn wait_for_exec(
    fifo: BorrowedFd<'_>,
    timeout_ms: Option<u64>,
    hooks: Option<&Hooks>,
) -> Result<(), SpawnError> {
    let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut report = [0u8; Message::SIZE + 4096];
    let mut len = 0;
    loop {
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
            }
            None => -1,
        };
        let [ready] = sys::poll_readable([fifo], left).map_err(|source| SpawnError::Sys {
            what: "waiting for the container init's execve",
            source,
        })?;
        if !ready {
            return Err(SpawnError::Sys {
                what: "timed out waiting for the container init's execve",
                source: Errno(libc::ETIMEDOUT),
            });
        }
        let mut scratch = [0u8; 256];
        let buf = if len < report.len() {
            &mut report[len..]
        } else {
            &mut scratch[..]
        };
        match sys::read_fd(fifo, buf) {
            Ok(0) => break,
            Ok(n) if len < report.len() => len += n,
            Ok(_) | Err(Errno(libc::EAGAIN)) => {}
            Err(source) => {
                return Err(SpawnError::Sys {
                    what: "reading exec.fifo",
                    source,
                })
            }
        }
    }
    exec_report(&report[..len], hooks)
}

/// Decodes what [`wait_for_exec`] read after the fifo's byte: nothing, or an
/// ERROR message followed by the command.
fn exec_report(bytes: &[u8], hooks: Option<&Hooks>) -> Result<(), SpawnError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let Some((head, rest)) = bytes.split_first_chunk::<{ Message::SIZE }>() else {
        return Err(protocol_error());
    };
    let msg = Message::from_bytes(head);
    if msg.kind != MSG_ERROR {
        return Err(protocol_error());
    }
    let step = Step::from_u32(msg.step).unwrap_or(Step::Exec);
    if let (Step::StartContainerHook, Some(hooks)) = (step, hooks) {
        let failed = hooks::Failure::from_wire(msg.errno);
        let kind = hooks::Kind::StartContainer;
        return Err(hooks.init_error(kind, msg.index as usize, failed).into());
    }
    let command = String::from_utf8_lossy(rest);
    Err(SpawnError::Init {
        step,
        context: if command.is_empty() {
            String::new()
        } else {
            format!(" {command}")
        },
        errno: Errno(msg.errno),
    })
}

fn protocol_error() -> SpawnError {
    SpawnError::Sys {
        what: "unexpected message from the container init",
        source: Errno(libc::EPROTO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(step: Step, index: u32, errno: i32, command: &str) -> Vec<u8> {
        let msg = Message {
            kind: MSG_ERROR,
            step: step as u32,
            index,
            errno,
        };
        let mut bytes = msg.to_bytes().to_vec();
        bytes.extend_from_slice(command.as_bytes());
        bytes
    }

    #[test]
    fn exec_reports_name_the_step_or_the_hook() {
        // EOF alone: execve succeeded.
        assert!(exec_report(&[], None).is_ok());
        // A failed execve names the command.
        let e = exec_report(&report(Step::Exec, 0, libc::ENOEXEC, "/bin/app"), None);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("execve") && e.contains("/bin/app"), "{e}");
        // A failed startContainer hook is the hook's error.
        let spec = serde_json::json!({"startContainer": [{"path": "/bin/false"}]});
        let hooks = Hooks::new(
            Some(&spec),
            "c1",
            std::path::Path::new("/b"),
            &Default::default(),
        )
        .unwrap();
        let wire = hooks::Failure::Exited(1).to_wire();
        let bytes = report(Step::StartContainerHook, 0, wire, "/bin/app");
        match exec_report(&bytes, Some(&hooks)) {
            Err(SpawnError::Hook(h)) => {
                assert_eq!(
                    h.to_string(),
                    "startContainer hook #0 (/bin/false) exited with status 1"
                )
            }
            other => panic!("{other:?}"),
        }
        // Half a message is a protocol error.
        assert!(exec_report(&[1, 2, 3], None).is_err());
    }
}
