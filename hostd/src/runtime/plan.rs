//! The validated plan: everything the container's init needs, prepared in the
//! parent before `clone`.
//!
//! [`Plan::new`] checks a [`Spec`] and turns it into ready-to-use values:
//! `CString`s and pointer arrays for `execve`, mount steps with their flags
//! and targets, capability masks, the seccomp BPF program, rlimit numbers.
//! The init process (see [`super::child`]) then only walks these lists and
//! makes system calls; it never parses, formats or allocates.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::caps;
use super::hooks::{self, Hooks};
use super::lsm::{self, AttrWrite, HostLsm, LsmError};
use super::mounts::{self, MountOptions, Target, TargetError};
use super::seccomp::{self, Program, SeccompError};
use super::spec::{IdMapping, Linux, NamespaceKind, Process, Resources, Root, Spec};

/// Why a spec cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `process` is missing.
    #[error("config.json has no `process`")]
    NoProcess,
    /// `root` is missing.
    #[error("config.json has no `root`")]
    NoRoot,
    /// `process.terminal` is true but nobody takes the terminal.
    #[error("process.terminal is true: pass --console-socket to receive the pseudo-terminal, or set it to false")]
    Terminal,
    /// `process.args` is empty.
    #[error("process.args: must not be empty")]
    NoArgs,
    /// `process.cwd` is not absolute.
    #[error("process.cwd: {0:?} is not an absolute path")]
    Cwd(String),
    /// An env entry lacks `=`.
    #[error("process.env[{index}]: {entry:?} is not KEY=value")]
    Env {
        /// Position in the list.
        index: usize,
        /// The entry.
        entry: String,
    },
    /// A string holds a NUL byte.
    #[error("{field}: contains a NUL byte")]
    Nul {
        /// The field.
        field: String,
    },
    /// The root file system is missing or not a directory.
    #[error("root.path: {path}")]
    Rootfs {
        /// The resolved path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bundle directory is unusable.
    #[error("bundle {path}")]
    Bundle {
        /// The bundle path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An unknown capability name.
    #[error("process.capabilities.{set}: unknown capability {name}")]
    Capability {
        /// Which set.
        set: &'static str,
        /// The name.
        name: String,
    },
    /// An unknown rlimit type.
    #[error("process.rlimits[{index}].type: unknown rlimit {kind}")]
    Rlimit {
        /// Position in the list.
        index: usize,
        /// The type.
        kind: String,
    },
    /// A namespace problem.
    #[error("linux.namespaces: {0}")]
    Namespace(String),
    /// A namespace path that cannot be joined.
    #[error("linux.namespaces[{index}] ({kind}): {path}: {message}")]
    NamespacePath {
        /// Position in the list.
        index: usize,
        /// The namespace type.
        kind: &'static str,
        /// The path as given.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A field that needs a mount namespace of the container's own.
    #[error("{field}: needs a mount namespace of the container's own (new or joined), the runtime's is shared")]
    SharedMountNamespace {
        /// The field.
        field: &'static str,
    },
    /// An AppArmor profile or SELinux label that cannot be applied.
    #[error(transparent)]
    Lsm(#[from] LsmError),
    /// A mount problem.
    #[error("mounts[{index}] ({destination}): {message}")]
    Mount {
        /// Position in the list.
        index: usize,
        /// The destination as given.
        destination: String,
        /// What is wrong.
        message: String,
    },
    /// A path list entry (masked, readonly, device) is unusable.
    #[error("{field}: {path:?}: {message}")]
    Path {
        /// The field, e.g. `linux.maskedPaths[2]`.
        field: String,
        /// The path as given.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Host or domain name without a UTS namespace, or too long.
    #[error("{field}: {message}")]
    Uts {
        /// `hostname` or `domainname`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A sysctl that is not namespaced or whose namespace is not private.
    #[error("linux.sysctl: {key}: {message}")]
    Sysctl {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A bad `linux.cgroupsPath`.
    #[error("linux.cgroupsPath: {path:?}: {message}")]
    CgroupsPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A bad value of one of our annotations.
    #[error("annotations.{name:?}: {message}")]
    Annotation {
        /// The annotation.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The seccomp policy does not compile.
    #[error("linux.seccomp")]
    Seccomp(#[from] SeccompError),
    /// A hook is unusable.
    #[error(transparent)]
    Hook(#[from] hooks::ConfigError),
}

/// A NUL-terminated array of C strings for `execve`.
#[derive(Debug)]
pub struct CStringArray {
    strings: Vec<CString>,
    pointers: Vec<*const libc::c_char>,
}

impl CStringArray {
    fn new(strings: Vec<CString>) -> Self {
        let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        CStringArray { strings, pointers }
    }

    /// The strings.
    pub fn strings(&self) -> &[CString] {
        &self.strings
    }

    /// The pointer array, ending with a null pointer. The pointers stay valid
    /// as long as `self` lives: moving the array does not move the heap data
    /// of the strings.
    pub fn pointers(&self) -> &[*const libc::c_char] {
        &self.pointers
    }
}

/// What a mount step does.
#[derive(Debug)]
pub enum MountKind {
    /// A new file-system instance: `mount(source, target, fstype, flags, data)`.
    Fs {
        /// Source (device or name).
        source: CString,
        /// File-system type.
        fstype: CString,
        /// `MS_*` flags.
        flags: libc::c_ulong,
        /// Data string.
        data: Option<CString>,
    },
    /// A bind mount of a host path, then a remount for its flags.
    Bind {
        /// Absolute host path.
        source: CString,
        /// `rbind`.
        recursive: bool,
        /// Flags for `MS_BIND|MS_REMOUNT` when any per-mount flag was given.
        remount: Option<libc::c_ulong>,
        /// The source is not a directory: the target is created as a file.
        file: bool,
    },
}

/// One mount, in spec order.
#[derive(Debug)]
pub struct MountStep {
    /// Where, inside the root.
    pub target: Target,
    /// What.
    pub kind: MountKind,
    /// Propagation flags to apply afterwards, or 0.
    pub propagation: libc::c_ulong,
}

/// A device node to create under the root.
#[derive(Debug)]
pub struct DeviceNode {
    /// Where.
    pub target: Target,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: libc::mode_t,
    /// Permission bits.
    pub mode: libc::mode_t,
    /// Device number.
    pub dev: libc::dev_t,
    /// Owner.
    pub uid: libc::uid_t,
    /// Group.
    pub gid: libc::gid_t,
    /// The host node to bind instead of `mknod` (inside a user namespace).
    pub host: CString,
}

/// A symlink to create under the root.
#[derive(Debug)]
pub struct Symlink {
    /// The link.
    pub target: Target,
    /// What it points to.
    pub to: CString,
}

/// One rlimit.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// `RLIMIT_*` number.
    pub resource: libc::c_int,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Capability masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapMasks {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
    /// Highest capability the kernel knows.
    pub last_cap: u32,
}

/// A namespace to join by path, opened and checked to be one of `kind`.
#[derive(Debug)]
pub struct JoinNamespace {
    /// Which.
    pub kind: NamespaceKind,
    /// The nsfs path.
    pub path: PathBuf,
    /// The namespace file, open for `setns`.
    pub fd: OwnedFd,
}

/// How the root's mount propagation is set up: runc's sequence, see
/// [`super::child`]'s `enter_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPropagation {
    /// Flags for `/` before the root is built; 0 leaves it alone (the
    /// runtime's mount namespace is shared).
    pub before: libc::c_ulong,
    /// The rootfs and its ancestors up to `/`: the first that is a mount
    /// point is made [`RootPropagation::parent`] before the rootfs is bound,
    /// so that the bind neither propagates nor makes `pivot_root` fail
    /// (it refuses a shared parent). Empty when `before` made every mount
    /// private already.
    pub parents: Vec<CString>,
    /// `MS_PRIVATE`, or `MS_SLAVE` for the slave modes (the rootfs then
    /// keeps receiving the host's mounts).
    pub parent: libc::c_ulong,
    /// Flags for the container's `/` after `pivot_root`, or 0.
    pub after: libc::c_ulong,
}

/// An annotation of hostd's: overlayfs mount options (`lowerdir=...,
/// upperdir=...,workdir=...`) that the init mounts on `root.path` inside
/// the container's mount namespace, before anything else is mounted
/// there. The caller then leaves `root.path` an empty directory.
pub const ROOT_OVERLAY_ANNOTATION: &str = "org.mkhost.rootfs.overlay";

/// Annotation `"true"`: the container's cgroup gets no memory cgroup of
/// its own; its memory is counted in its parent's
/// ([`super::cgroups::MemoryCgroup::Parent`]). hostd sets it with
/// `--memory-cgroups limited` on containers without a memory limit.
pub const SHARED_MEMORY_ANNOTATION: &str = "org.mkhost.cgroup.shared-memory";

/// Everything needed to create the container.
#[derive(Debug)]
pub struct Plan {
    /// Container id.
    pub id: String,
    /// Absolute bundle directory.
    pub bundle: PathBuf,
    /// Absolute root file system.
    pub rootfs: PathBuf,
    /// The same, for the init.
    pub rootfs_c: CString,
    /// Overlay mount options the init mounts on the root file system in
    /// its own mount namespace ([`ROOT_OVERLAY_ANNOTATION`]), if given.
    pub root_overlay: Option<CString>,
    /// `CLONE_NEW*` flags of the namespaces `clone` creates (all new ones
    /// but those in `unshare_flags`).
    pub clone_flags: u64,
    /// `CLONE_NEW*` flags of the namespaces the init makes itself with
    /// `unshare`, after joining: a new cgroup namespace (made once the init
    /// is in its cgroup, see [`super::child`]) and, when a user namespace is
    /// joined, every new one, so that it owns them.
    pub unshare_flags: u64,
    /// Namespaces to join (other than pid, which the parent joins), in
    /// runc's order: user first, then ipc, uts, network, mount, cgroup.
    pub join: Vec<JoinNamespace>,
    /// The pid namespace to join, if any; the parent enters it before clone.
    pub join_pid: Option<JoinNamespace>,
    /// The container is in a user namespace (new or joined).
    pub userns: bool,
    /// No mount namespace is listed: the container shares the runtime's.
    /// Its mounts are made there under the rootfs (a bind of it onto
    /// itself, made private), it is entered with `chroot`, and `/`'s
    /// propagation is left alone.
    pub shared_mount_ns: bool,
    /// `/proc/PID/uid_map` contents, with a user namespace.
    pub uid_map: Option<String>,
    /// `/proc/PID/gid_map` contents.
    pub gid_map: Option<String>,
    /// Mount propagation of `/` around building the root.
    pub root_propagation: RootPropagation,
    /// Remount the root read-only.
    pub root_readonly: bool,
    /// The mounts.
    pub mounts: Vec<MountStep>,
    /// Device nodes (empty when `/dev` is a bind mount).
    pub devices: Vec<DeviceNode>,
    /// Symlinks under `/dev`.
    pub symlinks: Vec<Symlink>,
    /// The working directory, created if missing.
    pub cwd_target: Option<Target>,
    /// The working directory.
    pub cwd: CString,
    /// Host name.
    pub hostname: Option<CString>,
    /// Domain name.
    pub domainname: Option<CString>,
    /// `(/proc/sys/... path, value)`.
    pub sysctls: Vec<(CString, CString)>,
    /// Masked paths.
    pub masked: Vec<CString>,
    /// Read-only paths.
    pub readonly: Vec<CString>,
    /// `oom_score_adj` value.
    pub oom_score_adj: Option<CString>,
    /// Rlimits.
    pub rlimits: Vec<Limit>,
    /// Their names, for messages.
    pub rlimit_names: Vec<String>,
    /// The umask.
    pub umask: libc::mode_t,
    /// User id.
    pub uid: libc::uid_t,
    /// Group id.
    pub gid: libc::gid_t,
    /// Supplementary groups.
    pub groups: Vec<libc::gid_t>,
    /// Capabilities.
    pub caps: CapMasks,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The seccomp program, or none.
    pub seccomp: Option<Program>,
    /// The seccomp policy came from hostd's default.
    pub seccomp_is_default: bool,
    /// `argv`.
    pub args: CStringArray,
    /// `envp`.
    pub env: CStringArray,
    /// Paths `execve` tries, in order (the `PATH` lookup of `args[0]`).
    pub exec_candidates: Vec<CString>,
    /// Bring `lo` up (new network namespace).
    pub loopback: bool,
    /// `process.terminal`: the process gets a new pseudo-terminal from the
    /// container's `/dev/ptmx`, its primary side sent to the runtime.
    pub terminal: bool,
    /// AppArmor/SELinux attribute writes before `execve`.
    pub lsm_exec: Vec<AttrWrite>,
    /// cgroup path relative to the cgroup root.
    pub cgroup_path: String,
    /// cgroup limits.
    pub resources: Resources,
    /// Whether the cgroup gets a memory cgroup of its own
    /// ([`SHARED_MEMORY_ANNOTATION`]).
    pub memory_cgroup: super::cgroups::MemoryCgroup,
    /// Annotations for `state`.
    pub annotations: BTreeMap<String, String>,
    /// Things that are accepted but not applied, for the log.
    pub warnings: Vec<String>,
    /// The lifecycle hooks, prepared.
    pub hooks: Hooks,
}

fn cstring(field: &str, s: impl Into<Vec<u8>>) -> Result<CString, PlanError> {
    CString::new(s).map_err(|_| PlanError::Nul {
        field: field.to_string(),
    })
}

fn path_error(field: String, path: &str, e: TargetError) -> PlanError {
    let message = match e {
        TargetError::Relative => "not an absolute path",
        TargetError::Root => "refers to the root itself",
        TargetError::Nul => "contains a NUL byte",
    };
    PlanError::Path {
        field,
        path: path.to_string(),
        message: message.to_string(),
    }
}

fn rlimit_number(name: &str) -> Option<libc::c_int> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    } as libc::c_int)
}

/// Which namespace a sysctl belongs to, or `None` when it is not namespaced.
fn sysctl_namespace(key: &str) -> Option<NamespaceKind> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if key.starts_with("net.") {
        Some(NamespaceKind::Network)
    } else if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(NamespaceKind::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NamespaceKind::Uts)
    } else {
        None
    }
}

fn id_map(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Default `PATH` when the process environment has none (runc's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// runc's default device nodes: `(name, major, minor)`, all `c` and 0666.
const DEFAULT_DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("tty", 5, 0),
    ("random", 1, 8),
    ("urandom", 1, 9),
];

impl Plan {
    /// Validates `spec` (from the bundle at `bundle`) for container `id`.
    pub fn new(id: &str, bundle: &Path, spec: &Spec) -> Result<Plan, PlanError> {
        Plan::with_lsm(id, bundle, spec, HostLsm::detect())
    }

    /// [`Plan::new`] on a host with the security modules `host`.
    pub fn with_lsm(
        id: &str,
        bundle: &Path,
        spec: &Spec,
        host: HostLsm,
    ) -> Result<Plan, PlanError> {
        let process = spec.process.as_ref().ok_or(PlanError::NoProcess)?;
        let root = spec.root.as_ref().ok_or(PlanError::NoRoot)?;
        if process.args.is_empty() {
            return Err(PlanError::NoArgs);
        }
        let (bundle, rootfs) = resolve_root(bundle, root)?;
        let default_linux = Default::default();
        let linux = spec.linux.as_ref().unwrap_or(&default_linux);

        let ns = Namespaces::new(linux)?;
        let shared_mount_ns = !ns.has(NamespaceKind::Mount);
        let root_overlay = match spec.annotations.get(ROOT_OVERLAY_ANNOTATION) {
            Some(_) if shared_mount_ns => {
                return Err(PlanError::SharedMountNamespace {
                    field: ROOT_OVERLAY_ANNOTATION,
                })
            }
            Some(options) => Some(cstring(ROOT_OVERLAY_ANNOTATION, options.as_bytes())?),
            None => None,
        };
        if shared_mount_ns {
            // runc: "unable to restrict sys entries without a private MNT
            // namespace"; a propagation would be the host's.
            for (field, set) in [
                ("linux.maskedPaths", !linux.masked_paths.is_empty()),
                ("linux.readonlyPaths", !linux.readonly_paths.is_empty()),
                (
                    "linux.rootfsPropagation",
                    linux.rootfs_propagation.is_some(),
                ),
            ] {
                if set {
                    return Err(PlanError::SharedMountNamespace { field });
                }
            }
        }
        let labels = lsm::labels(process, linux, host)?;
        let hostname = uts_name("hostname", spec.hostname.as_deref(), &ns)?;
        let domainname = uts_name("domainname", spec.domainname.as_deref(), &ns)?;
        let sysctls = sysctls(linux, &ns)?;
        let mounts = Mounts::new(spec, &bundle, &ns, labels.mount_context.as_deref())?;
        let (devices, symlinks) = if mounts.dev_is_bind {
            (Vec::new(), Vec::new())
        } else {
            dev_nodes(linux, mounts.have_devpts)?
        };
        let masked = path_list("linux.maskedPaths", &linux.masked_paths)?;
        let readonly = path_list("linux.readonlyPaths", &linux.readonly_paths)?;
        let mut command = Command::new(process)?;
        command.default_home(&rootfs, process.user.uid)?;
        let caps = cap_masks(process)?;
        let (rlimits, rlimit_names) = rlimits(process)?;
        let (seccomp, seccomp_is_default) = seccomp_program(linux, caps.bounding)?;
        let cgroup_path = cgroup_path(id, linux)?;
        let memory_cgroup = memory_cgroup(spec, linux)?;
        let warnings = warnings(spec);
        let hooks = Hooks::new(spec.hooks.as_ref(), id, &bundle, &spec.annotations)?;
        let root_propagation = root_propagation(linux, &rootfs, shared_mount_ns)?;
        let loopback = ns.creates(NamespaceKind::Network);
        let userns = ns.in_user_namespace();

        Ok(Plan {
            id: id.to_string(),
            rootfs_c: cstring("root.path", rootfs.as_os_str().as_bytes())?,
            root_overlay,
            bundle,
            rootfs,
            clone_flags: ns.clone_flags & !ns.unshare_flags,
            unshare_flags: ns.unshare_flags,
            join: ns.join,
            join_pid: ns.join_pid,
            userns,
            shared_mount_ns,
            uid_map: ns.user.then(|| id_map(&linux.uid_mappings)),
            gid_map: ns.user.then(|| id_map(&linux.gid_mappings)),
            root_propagation,
            root_readonly: root.readonly,
            mounts: mounts.steps,
            devices,
            symlinks,
            cwd_target: command.cwd_target,
            cwd: cstring("process.cwd", process.cwd.as_str())?,
            hostname,
            domainname,
            sysctls,
            masked,
            readonly,
            oom_score_adj: process
                .oom_score_adj
                .map(|v| cstring("process.oomScoreAdj", v.to_string()))
                .transpose()?,
            rlimits,
            rlimit_names,
            umask: process.user.umask.unwrap_or(0o022) as libc::mode_t,
            uid: process.user.uid,
            gid: process.user.gid,
            groups: process.user.additional_gids.clone(),
            caps,
            no_new_privs: process.no_new_privileges,
            seccomp,
            seccomp_is_default,
            args: CStringArray::new(command.args),
            env: CStringArray::new(command.env),
            exec_candidates: command.exec_candidates,
            loopback,
            terminal: process.terminal,
            lsm_exec: labels.exec,
            cgroup_path,
            resources: linux.resources.clone().unwrap_or_default(),
            memory_cgroup,
            annotations: spec.annotations.clone(),
            warnings,
            hooks,
        })
    }

    /// Whether the container is in a user namespace (new or joined).
    pub fn user_namespace(&self) -> bool {
        self.userns
    }

    /// The command, for messages.
    pub fn command(&self) -> &CStr {
        &self.args.strings()[0]
    }
}

/// The canonical bundle directory and root file system.
fn resolve_root(bundle: &Path, root: &Root) -> Result<(PathBuf, PathBuf), PlanError> {
    let bundle = std::fs::canonicalize(bundle).map_err(|source| PlanError::Bundle {
        path: bundle.to_path_buf(),
        source,
    })?;
    let rootfs_given = bundle.join(&root.path);
    let rootfs = std::fs::canonicalize(&rootfs_given).map_err(|source| PlanError::Rootfs {
        path: rootfs_given.clone(),
        source,
    })?;
    if !rootfs.is_dir() {
        return Err(PlanError::Rootfs {
            path: rootfs,
            source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    Ok((bundle, rootfs))
}

/// The namespaces section: which are created, which joined.
struct Namespaces {
    /// `CLONE_NEW*` flags of every new namespace, cgroup included.
    clone_flags: u64,
    /// Those the init makes with `unshare` after joining.
    unshare_flags: u64,
    /// Namespaces to join, other than pid, in joining order.
    join: Vec<JoinNamespace>,
    /// The pid namespace to join.
    join_pid: Option<JoinNamespace>,
    /// Every kind listed, new or joined.
    listed: Vec<NamespaceKind>,
    /// A new user namespace.
    user: bool,
}

/// runc's joining order: the user namespace first (it gives the rights to
/// join or make the others), the mount namespace late (it changes the root).
const JOIN_ORDER: [NamespaceKind; 6] = [
    NamespaceKind::User,
    NamespaceKind::Ipc,
    NamespaceKind::Uts,
    NamespaceKind::Network,
    NamespaceKind::Mount,
    NamespaceKind::Cgroup,
];

/// Opens a namespace file and checks that it is a namespace of `kind`.
fn open_namespace(index: usize, kind: NamespaceKind, path: &str) -> Result<OwnedFd, PlanError> {
    let err = |message: String| PlanError::NamespacePath {
        index,
        kind: kind.name(),
        path: path.to_string(),
        message,
    };
    if !path.starts_with('/') {
        return Err(err("not an absolute path".into()));
    }
    // nsfs files are regular files; anything else (a fifo would block the
    // open) is refused before opening.
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a namespace file".into()));
    }
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    match super::sys::namespace_type(file.as_fd()) {
        Ok(Some(t)) if t as u64 == kind.clone_flag() => Ok(file.into()),
        Ok(Some(t)) => {
            let actual = JOIN_ORDER
                .iter()
                .chain([&NamespaceKind::Pid])
                .find(|k| k.clone_flag() == t as u64)
                .map_or("another", |k| k.name());
            Err(err(format!(
                "is a {actual} namespace, not a {} namespace",
                kind.name()
            )))
        }
        Ok(None) => Err(err("not a namespace file".into())),
        Err(e) => Err(err(e.to_string())),
    }
}

impl Namespaces {
    fn new(linux: &Linux) -> Result<Namespaces, PlanError> {
        let mut ns = Namespaces {
            clone_flags: 0,
            unshare_flags: 0,
            join: Vec::new(),
            join_pid: None,
            listed: Vec::new(),
            user: false,
        };
        for (index, entry) in linux.namespaces.iter().enumerate() {
            if ns.listed.contains(&entry.kind) {
                return Err(PlanError::Namespace(format!(
                    "{} namespace listed twice",
                    entry.kind.name()
                )));
            }
            ns.listed.push(entry.kind);
            match (&entry.path, entry.kind) {
                (None, kind) => ns.clone_flags |= kind.clone_flag(),
                (Some(path), kind) => {
                    let join = JoinNamespace {
                        kind,
                        path: PathBuf::from(path),
                        fd: open_namespace(index, kind, path)?,
                    };
                    if kind == NamespaceKind::Pid {
                        ns.join_pid = Some(join);
                    } else {
                        ns.join.push(join);
                    }
                }
            }
        }
        ns.join
            .sort_by_key(|j| JOIN_ORDER.iter().position(|k| *k == j.kind));
        ns.user = ns.creates(NamespaceKind::User);
        let user_joined = ns.joins(NamespaceKind::User);
        let joined_other = ns
            .join
            .iter()
            .map(|j| j.kind)
            .chain(ns.join_pid.as_ref().map(|j| j.kind))
            .find(|k| *k != NamespaceKind::User);
        if let (true, Some(kind)) = (ns.user, joined_other) {
            return Err(PlanError::Namespace(format!(
                "joining the {} namespace needs the user namespace joined too: \
                 a new user namespace has no rights over namespaces that exist already",
                kind.name()
            )));
        }
        if user_joined && ns.creates(NamespaceKind::Pid) {
            return Err(PlanError::Namespace(
                "a new pid namespace inside a joined user namespace is not supported: \
                 join a pid namespace by path or leave it out"
                    .into(),
            ));
        }
        if ns.in_user_namespace() && !ns.has(NamespaceKind::Mount) {
            return Err(PlanError::Namespace(
                "a user namespace needs a mount namespace of the container's own \
                 (new or joined): the runtime's does not belong to it"
                    .into(),
            ));
        }
        // The cgroup namespace is always made by the init; inside a joined
        // user namespace every new one is, so that it is the owner.
        ns.unshare_flags = if user_joined {
            ns.clone_flags
        } else {
            ns.clone_flags & NamespaceKind::Cgroup.clone_flag()
        };
        if ns.user && (linux.uid_mappings.is_empty() || linux.gid_mappings.is_empty()) {
            return Err(PlanError::Namespace(
                "a user namespace needs uidMappings and gidMappings".into(),
            ));
        }
        let has_mappings = !linux.uid_mappings.is_empty() || !linux.gid_mappings.is_empty();
        if !ns.has(NamespaceKind::User) && has_mappings {
            return Err(PlanError::Namespace(
                "uidMappings/gidMappings need a user namespace".into(),
            ));
        }
        Ok(ns)
    }

    /// The container has a namespace of this kind, new or joined.
    fn has(&self, kind: NamespaceKind) -> bool {
        self.listed.contains(&kind)
    }

    /// The container gets a new namespace of this kind.
    fn creates(&self, kind: NamespaceKind) -> bool {
        self.clone_flags & kind.clone_flag() != 0
    }

    /// The container joins a namespace of this kind by path.
    fn joins(&self, kind: NamespaceKind) -> bool {
        self.has(kind) && !self.creates(kind)
    }

    /// The container is in a user namespace, new or joined.
    fn in_user_namespace(&self) -> bool {
        self.has(NamespaceKind::User)
    }
}

/// The host or domain name, which needs a uts namespace of the
/// container's own (new, or joined by path).
fn uts_name(
    field: &'static str,
    value: Option<&str>,
    ns: &Namespaces,
) -> Result<Option<CString>, PlanError> {
    let Some(v) = value else { return Ok(None) };
    if !ns.has(NamespaceKind::Uts) {
        return Err(PlanError::Uts {
            field,
            message: "setting it needs a uts namespace of the container's own \
                      (new or joined), the runtime's is shared"
                .into(),
        });
    }
    if v.len() > 64 {
        return Err(PlanError::Uts {
            field,
            message: "longer than 64 bytes".into(),
        });
    }
    cstring(field, v).map(Some)
}

/// `(/proc/sys/... path, value)` of each sysctl, each in a private namespace.
fn sysctls(linux: &Linux, ns: &Namespaces) -> Result<Vec<(CString, CString)>, PlanError> {
    let mut sysctls = Vec::new();
    for (key, value) in &linux.sysctl {
        let ok_chars = key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok_chars || key.contains("..") || key.starts_with('.') {
            return Err(PlanError::Sysctl {
                key: key.clone(),
                message: "not a sysctl name".into(),
            });
        }
        match sysctl_namespace(key) {
            None => {
                return Err(PlanError::Sysctl {
                    key: key.clone(),
                    message: "not a namespaced sysctl".into(),
                })
            }
            Some(kind) if !ns.has(kind) => {
                return Err(PlanError::Sysctl {
                    key: key.clone(),
                    message: format!("needs a {} namespace", kind.name()),
                })
            }
            Some(_) => {}
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        sysctls.push((
            cstring("linux.sysctl", path)?,
            cstring("linux.sysctl", value.as_str())?,
        ));
    }
    Ok(sysctls)
}

/// The mounts section.
struct Mounts {
    /// The steps, in spec order.
    steps: Vec<MountStep>,
    /// `/dev` is a bind mount from the host.
    dev_is_bind: bool,
    /// A devpts instance is mounted on `/dev/pts`.
    have_devpts: bool,
}

impl Mounts {
    fn new(
        spec: &Spec,
        bundle: &Path,
        ns: &Namespaces,
        mount_context: Option<&str>,
    ) -> Result<Mounts, PlanError> {
        let mut mounts = Mounts {
            steps: Vec::new(),
            dev_is_bind: false,
            have_devpts: false,
        };
        for (index, m) in spec.mounts.iter().enumerate() {
            let err = |message: String| PlanError::Mount {
                index,
                destination: m.destination.clone(),
                message,
            };
            let target = Target::new(&m.destination).map_err(|e| match e {
                TargetError::Relative => err("destination is not an absolute path".into()),
                TargetError::Root => err("cannot mount over the root".into()),
                TargetError::Nul => err("destination contains a NUL byte".into()),
            })?;
            let opts = mounts::parse_options(&m.options);
            let kind = m.kind.as_deref().unwrap_or("");
            let source = m.source.as_deref().unwrap_or("");
            let is_bind = opts.bind || kind == "bind";
            let step = if is_bind {
                if target.display == "/dev" {
                    mounts.dev_is_bind = true;
                }
                bind_step(bundle, source, &opts, target).map_err(err)?
            } else {
                match kind {
                    "sysfs" if !ns.creates(NamespaceKind::Network) => {
                        // sysfs shows the mounting netns's devices: without a
                        // private netns, bind the host's read-only instead.
                        // Inside a user namespace a non-recursive bind of a
                        // mount with submounts is refused (EINVAL).
                        let opts = MountOptions {
                            flags: opts.flags | libc::MS_RDONLY,
                            recursive: ns.in_user_namespace(),
                            ..opts
                        };
                        bind_step(bundle, "/sys", &opts, target).map_err(err)?
                    }
                    "cgroup" | "cgroup2" if !ns.creates(NamespaceKind::Cgroup) => {
                        let opts = MountOptions {
                            flags: opts.flags | libc::MS_RDONLY,
                            recursive: ns.in_user_namespace(),
                            ..opts
                        };
                        bind_step(bundle, "/sys/fs/cgroup", &opts, target).map_err(err)?
                    }
                    "" => return Err(err("no file system type".into())),
                    _ => {
                        let fstype = if kind == "cgroup" { "cgroup2" } else { kind };
                        if fstype == "devpts" && target.display == "/dev/pts" {
                            mounts.have_devpts = true;
                        }
                        let mut data = opts.data_string();
                        if let Some(context) =
                            mount_context.filter(|_| lsm::labels_mounts_of(fstype))
                        {
                            data = Some(match data {
                                Some(d) => format!("{d},{context}"),
                                None => context.to_string(),
                            });
                        }
                        MountStep {
                            target,
                            kind: MountKind::Fs {
                                source: cstring("mounts.source", source)?,
                                fstype: cstring("mounts.type", fstype)?,
                                flags: opts.flags,
                                data: data.map(|d| cstring("mounts.options", d)).transpose()?,
                            },
                            propagation: opts.propagation,
                        }
                    }
                }
            };
            mounts.steps.push(step);
        }
        Ok(mounts)
    }
}

/// Device nodes and `/dev` symlinks, for a `/dev` that does not come from
/// the host.
fn dev_nodes(
    linux: &Linux,
    have_devpts: bool,
) -> Result<(Vec<DeviceNode>, Vec<Symlink>), PlanError> {
    let mut devices = Vec::new();
    let mut symlinks = Vec::new();
    let mut wanted: Vec<(String, libc::mode_t, libc::mode_t, u32, u32, u32, u32)> = DEFAULT_DEVICES
        .iter()
        .map(|(name, major, minor)| {
            (
                format!("/dev/{name}"),
                libc::S_IFCHR,
                0o666,
                *major,
                *minor,
                0,
                0,
            )
        })
        .collect();
    for (i, d) in linux.devices.iter().enumerate() {
        let field = format!("linux.devices[{i}]");
        let kind = match d.kind.as_str() {
            "c" | "u" => libc::S_IFCHR,
            "b" => libc::S_IFBLK,
            "p" => libc::S_IFIFO,
            other => {
                return Err(PlanError::Path {
                    field,
                    path: d.path.clone(),
                    message: format!("unknown device type {other:?}"),
                })
            }
        };
        if !d.path.starts_with("/dev/") {
            return Err(PlanError::Path {
                field,
                path: d.path.clone(),
                message: "devices must be under /dev".into(),
            });
        }
        wanted.retain(|w| w.0 != d.path);
        wanted.push((
            d.path.clone(),
            kind,
            d.file_mode.unwrap_or(0o666) & 0o7777,
            d.major,
            d.minor,
            d.uid.unwrap_or(0),
            d.gid.unwrap_or(0),
        ));
    }
    for (path, kind, mode, major, minor, uid, gid) in wanted {
        let target =
            Target::new(&path).map_err(|e| path_error("linux.devices".into(), &path, e))?;
        devices.push(DeviceNode {
            target,
            kind,
            mode,
            dev: libc::makedev(major, minor),
            uid,
            gid,
            host: cstring("linux.devices", path.as_str())?,
        });
    }
    let mut links = vec![
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/dev/core", "/proc/kcore"));
    }
    if have_devpts {
        links.push(("/dev/ptmx", "pts/ptmx"));
    }
    for (link, to) in links {
        symlinks.push(Symlink {
            target: Target::new(link).map_err(|e| path_error("dev".into(), link, e))?,
            to: cstring("dev", to)?,
        });
    }
    Ok((devices, symlinks))
}

/// A masked or read-only path list.
fn path_list(field: &str, list: &[String]) -> Result<Vec<CString>, PlanError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("{field}[{i}]");
            let t = Target::new(p).map_err(|e| path_error(field.clone(), p, e))?;
            cstring(&field, t.display)
        })
        .collect()
}

/// The process section: cwd, env, args and the `PATH` lookup of `args[0]`.
struct Command {
    cwd_target: Option<Target>,
    env: Vec<CString>,
    args: Vec<CString>,
    exec_candidates: Vec<CString>,
}

impl Command {
    fn new(process: &Process) -> Result<Command, PlanError> {
        if !process.cwd.starts_with('/') {
            return Err(PlanError::Cwd(process.cwd.clone()));
        }
        let cwd_target = Target::new(&process.cwd).ok();
        for (index, entry) in process.env.iter().enumerate() {
            if !entry.contains('=') {
                return Err(PlanError::Env {
                    index,
                    entry: entry.clone(),
                });
            }
        }
        let env: Vec<CString> = process
            .env
            .iter()
            .map(|e| cstring("process.env", e.as_str()))
            .collect::<Result<_, _>>()?;
        let args: Vec<CString> = process
            .args
            .iter()
            .map(|a| cstring("process.args", a.as_str()))
            .collect::<Result<_, _>>()?;
        let arg0 = &process.args[0];
        let exec_candidates = if arg0.contains('/') {
            vec![cstring("process.args", arg0.as_str())?]
        } else {
            let path = process
                .env
                .iter()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or(DEFAULT_PATH);
            path.split(':')
                .map(|dir| if dir.is_empty() { "." } else { dir })
                .map(|dir| cstring("process.env PATH", format!("{dir}/{arg0}")))
                .collect::<Result<_, _>>()?
        };
        Ok(Command {
            cwd_target,
            env,
            args,
            exec_candidates,
        })
    }
}

impl Command {
    /// Sets `HOME` when the environment has none, as runc does: the home of
    /// `uid` in the container's `/etc/passwd` (read from the root file
    /// system, confined to it), else `/`.
    fn default_home(&mut self, rootfs: &Path, uid: u32) -> Result<(), PlanError> {
        if self.env.iter().any(|e| e.to_bytes().starts_with(b"HOME=")) {
            return Ok(());
        }
        let home = home_of(rootfs, uid).unwrap_or_else(|| "/".to_string());
        self.env
            .push(cstring("process.env HOME", format!("HOME={home}"))?);
        Ok(())
    }
}

/// The home directory of `uid` in `<rootfs>/etc/passwd`, if it says.
fn home_of(rootfs: &Path, uid: u32) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    super::sys::open_in_root(rootfs, "etc/passwd")
        .ok()?
        .take(4 << 20)
        .read_to_string(&mut text)
        .ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid)
            .then(|| fields.get(5).copied().unwrap_or("").to_string())
            .filter(|home| !home.is_empty())
    })
}

fn cap_masks(process: &Process) -> Result<CapMasks, PlanError> {
    let caps_spec = process.capabilities.clone().unwrap_or_default();
    let mask = |set: &'static str, names: &[String]| {
        caps::mask(names).map_err(|name| PlanError::Capability { set, name })
    };
    Ok(CapMasks {
        bounding: mask("bounding", &caps_spec.bounding)?,
        effective: mask("effective", &caps_spec.effective)?,
        permitted: mask("permitted", &caps_spec.permitted)?,
        inheritable: mask("inheritable", &caps_spec.inheritable)?,
        ambient: mask("ambient", &caps_spec.ambient)?,
        last_cap: caps::last_cap(),
    })
}

/// The rlimits and their names.
fn rlimits(process: &Process) -> Result<(Vec<Limit>, Vec<String>), PlanError> {
    let mut rlimits = Vec::new();
    let mut rlimit_names = Vec::new();
    for (index, r) in process.rlimits.iter().enumerate() {
        let resource = rlimit_number(&r.kind).ok_or_else(|| PlanError::Rlimit {
            index,
            kind: r.kind.clone(),
        })?;
        rlimits.push(Limit {
            resource,
            soft: r.soft,
            hard: r.hard,
        });
        rlimit_names.push(r.kind.clone());
    }
    Ok((rlimits, rlimit_names))
}

/// The seccomp program (none when unconfined), and whether its policy is
/// hostd's default.
fn seccomp_program(linux: &Linux, bounding: u64) -> Result<(Option<Program>, bool), PlanError> {
    let (profile, seccomp_is_default) = match &linux.seccomp {
        Some(p) => (p.clone(), false),
        None => (seccomp::default_profile(bounding)?, true),
    };
    let seccomp = if seccomp::is_unconfined(&profile) {
        None
    } else {
        Some(seccomp::compile(&profile)?)
    };
    Ok((seccomp, seccomp_is_default))
}

/// [`SHARED_MEMORY_ANNOTATION`]: `"true"` or `"false"`, and not with
/// memory limits.
fn memory_cgroup(spec: &Spec, linux: &Linux) -> Result<super::cgroups::MemoryCgroup, PlanError> {
    use super::cgroups::MemoryCgroup;
    let err = |message: &str| PlanError::Annotation {
        name: SHARED_MEMORY_ANNOTATION,
        message: message.to_string(),
    };
    match spec
        .annotations
        .get(SHARED_MEMORY_ANNOTATION)
        .map(String::as_str)
    {
        None | Some("false") => Ok(MemoryCgroup::Own),
        Some("true") => {
            let memory = linux.resources.as_ref().and_then(|r| r.memory.as_ref());
            if memory
                .is_some_and(|m| m.limit.is_some() || m.swap.is_some() || m.reservation.is_some())
            {
                return Err(err(
                    "a container with linux.resources.memory limits needs a memory cgroup of its own; remove the annotation or the limits",
                ));
            }
            Ok(MemoryCgroup::Parent)
        }
        Some(other) => Err(err(&format!("{other:?} is not \"true\" or \"false\""))),
    }
}

/// The cgroup path relative to the cgroup root.
fn cgroup_path(id: &str, linux: &Linux) -> Result<String, PlanError> {
    Ok(match linux.cgroups_path.as_deref() {
        None | Some("") => format!("hostd/{id}"),
        Some(p) => {
            let err = |message: &str| PlanError::CgroupsPath {
                path: p.to_string(),
                message: message.to_string(),
            };
            if p.contains(':') && !p.starts_with('/') {
                return Err(err("systemd cgroup paths are not supported"));
            }
            let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
            if parts.is_empty() {
                return Err(err("refers to the cgroup root"));
            }
            if parts.iter().any(|s| *s == "." || *s == "..") {
                return Err(err("must not contain . or .."));
            }
            parts.join("/")
        }
    })
}

/// What is accepted but not applied (nothing at the moment).
fn warnings(_spec: &Spec) -> Vec<String> {
    Vec::new()
}

/// The root's propagation steps for `linux.rootfsPropagation`, as runc
/// does them: `/` gets the mode first (the unbindable ones excepted: an
/// unbindable parent could not be bound), the rootfs's parent mount is made
/// private (slave for the slave modes) so that the bind of the rootfs
/// neither propagates nor makes `pivot_root` fail, and the container's new
/// `/` gets the mode after `pivot_root`. Without the field, or with
/// `rprivate`, every mount is made private at once and nothing else is
/// needed. In the runtime's mount namespace nothing of the host's changes.
fn root_propagation(
    linux: &Linux,
    rootfs: &Path,
    shared_mount_ns: bool,
) -> Result<RootPropagation, PlanError> {
    const RPRIVATE: libc::c_ulong = libc::MS_REC | libc::MS_PRIVATE;
    let mode = match linux.rootfs_propagation.as_deref() {
        None | Some("") => RPRIVATE,
        Some(word) => mounts::propagation(word).ok_or_else(|| PlanError::Path {
            field: "linux.rootfsPropagation".into(),
            path: word.to_string(),
            message: "not one of shared, slave, private, unbindable (or their r- forms)".into(),
        })?,
    };
    if shared_mount_ns || mode == RPRIVATE {
        return Ok(RootPropagation {
            before: if shared_mount_ns { 0 } else { RPRIVATE },
            parents: Vec::new(),
            parent: libc::MS_PRIVATE,
            after: 0,
        });
    }
    let before = if mode & libc::MS_UNBINDABLE != 0 {
        RPRIVATE
    } else {
        mode
    };
    let parents = if before == RPRIVATE {
        Vec::new()
    } else {
        rootfs
            .ancestors()
            .map(|p| cstring("root.path", p.as_os_str().as_bytes()))
            .collect::<Result<_, _>>()?
    };
    let parent = if mode & libc::MS_SLAVE != 0 {
        libc::MS_SLAVE
    } else {
        libc::MS_PRIVATE
    };
    Ok(RootPropagation {
        before,
        parents,
        parent,
        after: mode,
    })
}

fn bind_step(
    bundle: &Path,
    source: &str,
    opts: &MountOptions,
    target: Target,
) -> Result<MountStep, String> {
    if source.is_empty() {
        return Err("bind mount without a source".into());
    }
    let path = bundle.join(source);
    let meta = std::fs::metadata(&path).map_err(|e| format!("source {}: {e}", path.display()))?;
    // Flags that need a remount to take effect on a bind mount.
    let per_mount = libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC
        | libc::MS_NOATIME
        | libc::MS_NODIRATIME
        | libc::MS_RELATIME
        | libc::MS_STRICTATIME;
    let remount = (opts.flags & per_mount != 0).then_some(opts.flags & per_mount);
    Ok(MountStep {
        target,
        kind: MountKind::Bind {
            source: CString::new(path.as_os_str().as_bytes())
                .map_err(|_| "source contains a NUL byte".to_string())?,
            recursive: opts.recursive,
            remount,
            file: !meta.is_dir(),
        },
        propagation: opts.propagation,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::spec::{Capabilities, Linux, Mount, Namespace, Process, Root};

    pub(crate) fn sample_spec() -> Spec {
        let ns = |kind| Namespace { kind, path: None };
        let mount = |dest: &str, kind: &str, opts: &[&str]| Mount {
            destination: dest.into(),
            kind: Some(kind.into()),
            source: Some(kind.into()),
            options: opts.iter().map(|s| s.to_string()).collect(),
        };
        Spec {
            oci_version: "1.0.2".into(),
            process: Some(Process {
                args: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec!["PATH=/bin:/usr/bin".into()],
                cwd: "/".into(),
                capabilities: Some(Capabilities {
                    bounding: vec!["CAP_KILL".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            root: Some(Root {
                path: ".".into(),
                readonly: true,
            }),
            hostname: Some("box".into()),
            mounts: vec![
                mount("/proc", "proc", &[]),
                mount("/dev", "tmpfs", &["nosuid", "mode=755"]),
                mount("/dev/pts", "devpts", &["newinstance", "ptmxmode=0666"]),
                mount("/sys", "sysfs", &["ro", "nosuid"]),
            ],
            linux: Some(Linux {
                namespaces: vec![
                    ns(NamespaceKind::Pid),
                    ns(NamespaceKind::Mount),
                    ns(NamespaceKind::Uts),
                    ns(NamespaceKind::Network),
                ],
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cgroup_namespace_is_left_to_the_init() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sample_spec();
        let linux = spec.linux.as_mut().unwrap();
        linux.namespaces.push(Namespace {
            kind: NamespaceKind::Cgroup,
            path: None,
        });
        let plan = Plan::new("c1", dir.path(), &spec).unwrap();
        assert_eq!(plan.clone_flags & libc::CLONE_NEWCGROUP as u64, 0);
        assert_eq!(plan.unshare_flags, libc::CLONE_NEWCGROUP as u64);
    }

    #[test]
    fn plans_a_sample() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::new("c1", dir.path(), &sample_spec()).unwrap();
        assert_eq!(
            plan.clone_flags,
            (libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWNET)
                as u64
        );
        assert_eq!(plan.unshare_flags, 0);
        assert_eq!(plan.exec_candidates.len(), 2);
        assert_eq!(plan.exec_candidates[0].to_str().unwrap(), "/bin/sh");
        assert_eq!(plan.args.pointers().len(), 4);
        assert!(plan.args.pointers()[3].is_null());
        assert_eq!(plan.devices.len(), 6);
        assert!(plan
            .symlinks
            .iter()
            .any(|s| s.target.display == "/dev/ptmx" && s.to.to_str() == Ok("pts/ptmx")));
        assert!(plan.loopback);
        assert!(plan.seccomp_is_default && plan.seccomp.is_some());
        assert_eq!(plan.cgroup_path, "hostd/c1");
        assert_eq!(plan.caps.bounding, 1 << 5);
        match &plan.mounts[3].kind {
            MountKind::Fs { fstype, flags, .. } => {
                assert_eq!(fstype.to_str().unwrap(), "sysfs");
                assert_eq!(*flags, libc::MS_RDONLY | libc::MS_NOSUID);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sysfs_without_netns_is_a_bind() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sample_spec();
        let linux = spec.linux.as_mut().unwrap();
        linux
            .namespaces
            .retain(|n| n.kind != NamespaceKind::Network);
        let plan = Plan::new("c1", dir.path(), &spec).unwrap();
        match &plan.mounts[3].kind {
            MountKind::Bind {
                source, remount, ..
            } => {
                assert_eq!(source.to_str().unwrap(), "/sys");
                assert_eq!(remount.unwrap() & libc::MS_RDONLY, libc::MS_RDONLY);
            }
            other => panic!("{other:?}"),
        }
        assert!(!plan.loopback);
    }

    fn plan_err(edit: impl FnOnce(&mut Spec)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sample_spec();
        edit(&mut spec);
        Plan::new("c1", dir.path(), &spec).unwrap_err().to_string()
    }

    #[test]
    fn shared_memory_annotation_is_checked() {
        use crate::runtime::cgroups::MemoryCgroup;
        use crate::runtime::spec::Memory;
        let dir = tempfile::tempdir().unwrap();
        let plan_with = |value: &str, memory: Option<Memory>| {
            let mut spec = sample_spec();
            spec.annotations
                .insert(SHARED_MEMORY_ANNOTATION.into(), value.into());
            spec.linux.as_mut().unwrap().resources = Some(Resources {
                memory,
                ..Resources::default()
            });
            Plan::new("c1", dir.path(), &spec)
        };
        let plan = Plan::new("c1", dir.path(), &sample_spec()).unwrap();
        assert_eq!(plan.memory_cgroup, MemoryCgroup::Own);
        assert_eq!(
            plan_with("false", None).unwrap().memory_cgroup,
            MemoryCgroup::Own
        );
        assert_eq!(
            plan_with("true", None).unwrap().memory_cgroup,
            MemoryCgroup::Parent
        );
        let e = plan_with("yes", None).unwrap_err().to_string();
        assert!(
            e.contains(SHARED_MEMORY_ANNOTATION) && e.contains("\"yes\" is not"),
            "{e}"
        );
        let limit = Memory {
            limit: Some(64 << 20),
            reservation: None,
            swap: None,
        };
        let e = plan_with("true", Some(limit)).unwrap_err().to_string();
        assert!(e.contains("remove the annotation or the limits"), "{e}");
    }

    #[test]
    fn rejects_bad_specs() {
        let e = plan_err(|s| s.root.as_mut().unwrap().path = "missing".into());
        assert!(e.contains("root.path") && e.contains("missing"), "{e}");
        let e = plan_err(|s| {
            s.process.as_mut().unwrap().capabilities = Some(Capabilities {
                effective: vec!["CAP_FLY".into()],
                ..Default::default()
            })
        });
        assert!(
            e.contains("process.capabilities.effective") && e.contains("CAP_FLY"),
            "{e}"
        );
        let e = plan_err(|s| {
            s.linux
                .as_mut()
                .unwrap()
                .namespaces
                .retain(|n| n.kind != NamespaceKind::Uts)
        });
        assert!(e.contains("hostname"), "{e}");
        // Without a mount namespace, masked paths would be the host's.
        let e = plan_err(|s| {
            s.linux
                .as_mut()
                .unwrap()
                .namespaces
                .retain(|n| n.kind != NamespaceKind::Mount)
        });
        assert!(
            e.starts_with("linux.maskedPaths: needs a mount namespace"),
            "{e}"
        );
        let e = plan_err(|s| {
            s.linux.as_mut().unwrap().namespaces.push(Namespace {
                kind: NamespaceKind::Pid,
                path: None,
            })
        });
        assert!(e.contains("twice"), "{e}");
        let e = plan_err(|s| {
            s.linux
                .as_mut()
                .unwrap()
                .sysctl
                .insert("kernel.panic".into(), "1".into());
        });
        assert!(
            e.contains("kernel.panic") && e.contains("not a namespaced"),
            "{e}"
        );
        let e = plan_err(|s| {
            s.linux
                .as_mut()
                .unwrap()
                .sysctl
                .insert("kernel.shmmax".into(), "1".into());
        });
        assert!(e.contains("ipc namespace"), "{e}");
        let e = plan_err(|s| s.mounts[0].destination = "proc".into());
        assert!(e.contains("mounts[0]") && e.contains("absolute"), "{e}");
        let e = plan_err(|s| s.process.as_mut().unwrap().rlimits.push(Default::default()));
        assert!(e.contains("process.rlimits[0].type"), "{e}");
        let e = plan_err(|s| s.linux.as_mut().unwrap().cgroups_path = Some("a/../b".into()));
        assert!(e.contains("cgroupsPath"), "{e}");
        let e = plan_err(|s| s.process.as_mut().unwrap().env.push("NOEQUALS".into()));
        assert!(e.contains("process.env[1]"), "{e}");
    }

    // ---- namespaces, root propagation, LSM labels ----

    fn edit_plan(edit: impl FnOnce(&mut Spec)) -> Result<Plan, PlanError> {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sample_spec();
        edit(&mut spec);
        Plan::with_lsm("c1", dir.path(), &spec, HostLsm::default())
    }

    fn namespaces(s: &mut Spec) -> &mut Vec<Namespace> {
        &mut s.linux.as_mut().unwrap().namespaces
    }

    fn set_path(s: &mut Spec, kind: NamespaceKind, path: &str) {
        let ns = namespaces(s);
        ns.retain(|n| n.kind != kind);
        ns.push(Namespace {
            kind,
            path: Some(path.into()),
        });
    }

    #[test]
    fn unlisted_mount_namespace_is_the_runtimes() {
        let plan = edit_plan(|s| {
            namespaces(s).retain(|n| n.kind != NamespaceKind::Mount);
            let linux = s.linux.as_mut().unwrap();
            linux.masked_paths.clear();
            linux.readonly_paths.clear();
        })
        .unwrap();
        assert!(plan.shared_mount_ns);
        assert_eq!(plan.clone_flags & libc::CLONE_NEWNS as u64, 0);
        // Nothing of the host's propagation changes.
        assert_eq!(plan.root_propagation.before, 0);
        assert!(plan.root_propagation.parents.is_empty());
        let e = edit_plan(|s| {
            namespaces(s).retain(|n| n.kind != NamespaceKind::Mount);
            let linux = s.linux.as_mut().unwrap();
            linux.masked_paths.clear();
            linux.readonly_paths.clear();
            linux.rootfs_propagation = Some("shared".into());
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("linux.rootfsPropagation: needs a mount namespace"));
        // A user namespace cannot mount in the runtime's.
        let e = edit_plan(|s| {
            let ns = namespaces(s);
            ns.retain(|n| n.kind != NamespaceKind::Mount);
            ns.push(Namespace {
                kind: NamespaceKind::User,
                path: None,
            });
            let linux = s.linux.as_mut().unwrap();
            linux.masked_paths.clear();
            linux.readonly_paths.clear();
            linux.uid_mappings = vec![IdMapping {
                container_id: 0,
                host_id: 1000,
                size: 1,
            }];
            linux.gid_mappings = linux.uid_mappings.clone();
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("a user namespace needs a mount namespace"),
            "{e}"
        );
    }

    #[test]
    fn root_propagation_modes() {
        let with = |word: &str| {
            edit_plan(|s| s.linux.as_mut().unwrap().rootfs_propagation = Some(word.into()))
        };
        let plan = with("shared").unwrap();
        let p = &plan.root_propagation;
        assert_eq!(p.before, libc::MS_SHARED);
        assert_eq!(p.parent, libc::MS_PRIVATE);
        assert_eq!(p.after, libc::MS_SHARED);
        assert_eq!(p.parents.first(), Some(&plan.rootfs_c));
        assert_eq!(p.parents.last().map(|c| c.to_str().unwrap()), Some("/"));
        let p = with("rslave").unwrap().root_propagation;
        assert_eq!(p.before, libc::MS_SLAVE | libc::MS_REC);
        assert_eq!(p.parent, libc::MS_SLAVE);
        assert_eq!(p.after, libc::MS_SLAVE | libc::MS_REC);
        // An unbindable `/` could not be bound: it is private until the end.
        let p = with("unbindable").unwrap().root_propagation;
        assert_eq!(p.before, libc::MS_PRIVATE | libc::MS_REC);
        assert!(p.parents.is_empty());
        assert_eq!(p.after, libc::MS_UNBINDABLE);
        for same in ["", "rprivate"] {
            let p = with(same).unwrap().root_propagation;
            assert_eq!((p.before, p.after), (libc::MS_PRIVATE | libc::MS_REC, 0));
        }
        let e = with("bogus").unwrap_err().to_string();
        assert!(
            e.starts_with("linux.rootfsPropagation: \"bogus\": not one of shared, slave"),
            "{e}"
        );
    }

    #[test]
    fn namespaces_are_joined_by_checked_paths() {
        let plan = edit_plan(|s| {
            set_path(s, NamespaceKind::Uts, "/proc/self/ns/uts");
            set_path(s, NamespaceKind::Mount, "/proc/self/ns/mnt");
            s.domainname = Some("dom".into());
        })
        .unwrap();
        // The host name is set in a joined uts namespace too.
        assert_eq!(plan.hostname.as_deref(), Some(c"box"));
        assert_eq!(plan.domainname.as_deref(), Some(c"dom"));
        assert!(!plan.shared_mount_ns);
        assert_eq!(
            plan.clone_flags & (libc::CLONE_NEWNS | libc::CLONE_NEWUTS) as u64,
            0
        );
        let kinds: Vec<_> = plan.join.iter().map(|j| j.kind).collect();
        assert_eq!(kinds, [NamespaceKind::Uts, NamespaceKind::Mount]);

        let err = |kind, path: &str| {
            edit_plan(|s| set_path(s, kind, path))
                .unwrap_err()
                .to_string()
        };
        let e = err(NamespaceKind::Uts, "/proc/self/ns/net");
        assert!(
            e.starts_with("linux.namespaces[3] (uts): /proc/self/ns/net: ")
                && e.ends_with("is a network namespace, not a uts namespace"),
            "{e}"
        );
        let e = err(NamespaceKind::Network, "/proc/self/status");
        assert!(
            e.ends_with("/proc/self/status: not a namespace file"),
            "{e}"
        );
        let e = err(NamespaceKind::Ipc, "/proc/self");
        assert!(e.ends_with("not a namespace file"), "{e}");
        let e = err(NamespaceKind::Ipc, "proc/self/ns/ipc");
        assert!(e.ends_with("not an absolute path"), "{e}");
        let e = err(NamespaceKind::Mount, "/no/such/ns");
        assert!(e.contains("No such file or directory"), "{e}");
        // A new user namespace has no rights over existing namespaces.
        let e = edit_plan(|s| {
            set_path(s, NamespaceKind::Network, "/proc/self/ns/net");
            namespaces(s).push(Namespace {
                kind: NamespaceKind::User,
                path: None,
            });
            let linux = s.linux.as_mut().unwrap();
            linux.uid_mappings = vec![IdMapping {
                container_id: 0,
                host_id: 1000,
                size: 1,
            }];
            linux.gid_mappings = linux.uid_mappings.clone();
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("joining the network namespace needs the user"),
            "{e}"
        );
    }

    #[test]
    fn a_joined_user_namespace_comes_first_and_owns_the_new_ones() {
        let plan = edit_plan(|s| {
            set_path(s, NamespaceKind::Uts, "/proc/self/ns/uts");
            set_path(s, NamespaceKind::User, "/proc/self/ns/user");
            set_path(s, NamespaceKind::Pid, "/proc/self/ns/pid");
        })
        .unwrap();
        assert_eq!(plan.join[0].kind, NamespaceKind::User);
        assert!(plan.user_namespace() && plan.uid_map.is_none());
        assert_eq!(plan.clone_flags, 0);
        assert_eq!(
            plan.unshare_flags,
            (libc::CLONE_NEWNS | libc::CLONE_NEWNET) as u64
        );
        assert!(plan.join_pid.is_some());
        let e = edit_plan(|s| set_path(s, NamespaceKind::User, "/proc/self/ns/user"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a new pid namespace inside a joined user"),
            "{e}"
        );
    }

    #[test]
    fn security_labels() {
        let e = edit_plan(|s| {
            s.process.as_mut().unwrap().apparmor_profile = Some("docker-default".into())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("AppArmor is not enabled"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sample_spec();
        spec.linux.as_mut().unwrap().mount_label = Some("u:object_r:f:s0".into());
        let selinux = HostLsm {
            selinux: true,
            ..Default::default()
        };
        let plan = Plan::with_lsm("c1", dir.path(), &spec, selinux).unwrap();
        let data = |i: usize| match &plan.mounts[i].kind {
            MountKind::Fs { data, .. } => data.as_ref().map(|d| d.to_str().unwrap().to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!(data(0), None); // proc
        assert_eq!(
            data(1).as_deref(),
            Some("mode=755,context=\"u:object_r:f:s0\"")
        );
        assert!(plan.lsm_exec.is_empty());
    }
}
