//! The boundary between the daemon and the kernel it runs containers on.
//!
//! The daemon ([`crate::daemon`]: records, names, restart policies, logs,
//! events, the control and Docker APIs, the image store) decides *what* a
//! container is and asks a [`Backend`] to make it out of kernel objects. It
//! never makes those itself: the `--forbid daemon:...` rules in `ci/test`
//! keep it away from the OCI runtime, cgroups, namespaces, mounts,
//! netlink and nftables. [`linux::Linux`] is the one backend: a zygote
//! forking containers with the OCI runtime ([`crate::runtime`]) into
//! namespaces and cgroup v2, overlayfs roots, routed veth pairs with
//! nftables NAT. docs/backends.md designs the FreeBSD (jails) and illumos
//! (`lx` zones) ones against this trait.
//!
//! What crosses the boundary is plain data ([`spec`], [`Sample`],
//! [`HostLimits`]) and descriptors: a process is handed back as a
//! descriptor that becomes readable when it exits (a pidfd here; a process
//! descriptor from `pdfork(2)` on FreeBSD) with the read ends of its output.

pub mod host;
pub mod linux;
pub mod network;
pub mod spec;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use mkhost_shared::container::{ExecError, Limits};

pub use network::Networking;
pub use spec::{BindMount, CreateSpec, ExecSpec, NetnsMode, ETC_FILES};

/// The descriptors of one running process: a container's first process or
/// one started in it (`docker exec`).
pub struct Running {
    /// Stands for the process: readable once it has exited, and what
    /// [`Backend::signal`] signals (a pidfd on Linux).
    pub pidfd: Arc<OwnedFd>,
    /// Read end of its stdout (with a terminal: the terminal's primary side).
    pub stdout: OwnedFd,
    /// Read end of its stderr (with a terminal: empty).
    pub stderr: OwnedFd,
    /// Write end of its input, when it has one.
    pub stdin: Option<Arc<OwnedFd>>,
}

/// A process the backend started or attached again: its pid (as the host
/// sees it) and descriptors.
pub struct Started {
    /// Its pid.
    pub pid: i32,
    /// Its descriptors.
    pub running: Running,
}

/// One container of [`Backend::attach_many`]: its process again, or why
/// not.
pub type Attached = Result<Started, String>;

/// How a container's first process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code; 128 + the signal when a signal killed it.
    pub code: i32,
    /// The kernel's out-of-memory killer took it (or one of its processes).
    pub oom_killed: bool,
}

/// One process of a container, as `docker top` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    /// Its pid, as the host sees it.
    pub pid: String,
    /// Its parent's.
    pub ppid: String,
    /// Its command line, arguments joined by spaces.
    pub command: String,
}

/// Why a process was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    /// Why, for a person.
    pub message: String,
    /// Set when the command itself was not found or not executable
    /// (`docker run` exits 127 or 126 for that).
    pub exec: Option<ExecError>,
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError {
            message,
            exec: None,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One sample of a container's use and of the host's CPU time
/// (`docker stats` computes its percentages from two).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// When (RFC 3339).
    pub read: String,
    /// The container's CPU time, ns.
    pub cpu_ns: u64,
    /// The host's CPU time, ns (all CPUs, all modes).
    pub system_ns: u64,
    /// Bytes of memory charged to it.
    pub memory: u64,
    /// Its `inactive_file` bytes (the CLI subtracts them).
    pub inactive_file: u64,
    /// Its memory limit, or the host's memory.
    pub memory_limit: u64,
    /// Processes now, and the limit (0: none).
    pub pids: (u64, u64),
}

pub use mkhost_shared::control::HostLimits;

/// One kernel's way of running containers. Every method is safe to call
/// from any of the daemon's threads at once.
pub trait Backend: Send + Sync {
    // ---- processes ----

    /// Creates the container `spec` describes and starts its first process.
    fn create(&self, spec: &CreateSpec) -> Result<Started, StartError>;

    /// Starts another process in a running container.
    fn exec(&self, spec: &ExecSpec) -> Result<Started, StartError>;

    /// The descriptors of containers this backend created before the
    /// daemon (re)started, in the order asked; a failed one says why. At
    /// most [`Backend::attach_batch`] ids in one call.
    fn attach_many(&self, ids: &[String]) -> Result<Vec<(String, Attached)>, String>;

    /// How many ids one [`Backend::attach_many`] takes.
    fn attach_batch(&self) -> usize;

    /// How the process `id` (a container's first process, or an exec
    /// instance's) ended, once its descriptor said it did; `None`: it has
    /// not, yet.
    fn reap(&self, id: &str) -> Result<Option<Exit>, String>;

    /// Closes the backend's copy of process `id`'s input, so that it reads
    /// end-of-file once the daemon's copy is closed too.
    fn close_input(&self, id: &str) -> Result<(), String>;

    /// Forgets process `id`: kills it if it still runs and removes what the
    /// kernel holds for it (its cgroup, its runtime state).
    fn delete(&self, id: &str) -> Result<(), String>;

    /// Sends `signal` to the process `process` stands for.
    fn signal(&self, process: BorrowedFd<'_>, signal: i32) -> io::Result<()>;

    /// Sets the size of a terminal this backend handed back (`docker
    /// resize`).
    fn resize_terminal(&self, terminal: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()>;

    /// The processes of the container whose first process is `pid`
    /// (`docker top`).
    fn processes(&self, pid: i32) -> Vec<ProcessRow>;

    /// Reads `path` in the root of the running container whose first
    /// process is `pid`, never following a link out of it (`/etc/passwd`
    /// for `docker exec --user`); `None` when it cannot.
    fn read_in_container(&self, pid: i32, path: &str) -> Option<String>;

    /// Its networking side, which the daemon's networks keep.
    fn networking(&self) -> Arc<dyn Networking>;

    /// A descriptor that becomes readable if the backend's own helper (the
    /// zygote on Linux) dies: the daemon then exits, and its successor
    /// takes the containers over.
    fn helper_gone(&self) -> io::Result<OwnedFd>;

    // ---- resources ----

    /// A sample of the running container `spec`'s use; `None` when the
    /// kernel has nothing for it (not running).
    fn sample(&self, spec: &CreateSpec) -> Option<Sample>;

    /// The host's memory, bytes.
    fn host_memory(&self) -> u64;

    /// Freezes (`docker pause`) or thaws the container `spec`.
    fn freeze(&self, spec: &CreateSpec, frozen: bool) -> Result<(), String>;

    /// What bounds the number of containers here, with `running` running
    /// (`hostd status`'s `limits`).
    fn limits(&self, running: u64) -> HostLimits;

    /// Whether one more container like `spec` fits beside `others`; the
    /// error names the limit it would exceed.
    fn check_room(&self, others: u64, spec: &CreateSpec) -> Result<(), String>;

    /// Whether a container with `limits` has its memory accounted with
    /// others' rather than on its own (`CreateSpec::shared_memory_cgroup`),
    /// fixed when it is created.
    fn shares_memory_accounting(&self, limits: &Limits) -> bool;

    // ---- roots ----

    /// Checks the writable layer in the container directory `dir` and
    /// makes the run-time directories of `spec`'s bundle its root needs.
    fn make_bundle(&self, dir: &Path, spec: &CreateSpec) -> Result<(), String>;

    /// How the container mounts its own root at each start (overlayfs
    /// options on Linux), for [`CreateSpec::root_overlay`].
    fn root_options(&self, dir: &Path, spec: &CreateSpec) -> Option<String>;

    /// Mounts the root of a container that does not run on the host at
    /// `spec.rootfs`, for the daemon's own work on it (a volume's first
    /// fill), unless it is mounted already.
    fn mount_root(&self, dir: &Path, spec: &CreateSpec) -> Result<(), String>;

    /// Unmounts a root [`Backend::mount_root`] mounted; one not mounted, or
    /// gone, is fine.
    fn unmount_root(&self, rootfs: &Path) -> Result<(), String>;

    /// Takes such a root away at once, best effort, even while something
    /// still uses it (cleaning up after a failed create).
    fn detach_root(&self, rootfs: &Path);

    /// The container's root as an open directory, for `docker cp`: a
    /// running container's (`pid`, its mounts and volumes included) when
    /// it can be reached, else its root mounted for the caller alone;
    /// `true` for the first.
    fn open_root(&self, dir: &Path, spec: &CreateSpec, pid: i32)
        -> Result<(OwnedFd, bool), String>;

    /// Copies what the root mounted at `rootfs` has at `target` into the
    /// new volume directory `data`, as Docker fills a volume; nothing when
    /// the image has no directory there.
    fn fill_volume(&self, rootfs: &Path, target: &str, data: &Path) -> io::Result<()>;
}
