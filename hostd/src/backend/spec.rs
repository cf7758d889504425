//! What the daemon asks a backend to create: a container or a process in
//! one, every choice made (image config merged, user resolved, network
//! chosen). Plain data, kept on disk as `spec.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mkhost_shared::container::Limits;
use serde::{Deserialize, Serialize};

/// What a backend needs to create one container: everything is resolved.
/// Kept as `spec.json` for restarts, also across daemon upgrades: a field
/// added later has a default that means what older daemons did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    /// Container id (runtime id too).
    pub id: String,
    /// Bundle directory (`config.json` is written there): run-time state,
    /// made again after a reboot.
    pub bundle: PathBuf,
    /// The root file system's directory in the bundle.
    pub rootfs: PathBuf,
    /// The overlay's mount options, set for each start: the container's
    /// init mounts its root itself, in its own mount namespace
    /// (on Linux), so the host's
    /// mount table does not grow with the containers. `None` (records of
    /// older daemons): the root is mounted at `rootfs` on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_overlay: Option<String>,
    /// The image's layer directories, top first (the overlay's `lowerdir`),
    /// to mount the root again after a reboot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lower: Vec<PathBuf>,
    /// `argv`.
    pub args: Vec<String>,
    /// `NAME=value` environment.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary group ids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Host name.
    pub hostname: String,
    /// Limits (applied when the host has cgroup v2).
    pub limits: Limits,
    /// Capabilities (bounding, effective and permitted); `None`: Docker's
    /// default set.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// The root is mounted read-only.
    #[serde(default)]
    pub read_only: bool,
    /// tmpfs mounts: path -> options.
    #[serde(default)]
    pub tmpfs: BTreeMap<String, String>,
    /// Host directories bound in: named volumes' data and bind mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<BindMount>,
    /// The bundle has generated `hosts`, `hostname` and `resolv.conf`
    /// ([`ETC_FILES`]) to mount over the image's.
    #[serde(default)]
    pub etc_files: bool,
    /// Its network namespace.
    #[serde(default)]
    pub netns: NetnsMode,
    /// A pseudo-terminal for the init (`docker run -t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep its standard input open for writing (`docker run -i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// The terminal's size when it starts, `(rows, columns)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<(u16, u16)>,
    /// The init's `oom_score_adj`, set even when 0: it would inherit the
    /// daemon's ([`mkhost_shared::control::DAEMON_OOM_SCORE_ADJ`]).
    #[serde(default)]
    pub oom_score_adj: i32,
    /// No memory cgroup of its own: its memory is counted in
    /// the shared one's, with the other containers without a
    /// memory limit (`hostd --memory-cgroups limited`). Fixed when the
    /// container is created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_memory_cgroup: bool,
}

/// A host directory bound into a container (`-v`): a named volume's
/// `_data` or an allowed bind source, its path resolved by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// The host directory (canonical).
    pub source: PathBuf,
    /// The path in the container (clean, absolute).
    pub target: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Which network namespace a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetnsMode {
    /// A new one with only loopback (`--network none`).
    #[default]
    Own,
    /// The one bind-mounted at this path (prepared by the daemon's networks).
    Path(PathBuf),
    /// The host's (`--network host`).
    Host,
}

/// The files the daemon generates in a container's directory and mounts
/// over the image's `/etc/<name>`, as Docker does, in its order.
pub const ETC_FILES: [&str; 3] = ["resolv.conf", "hostname", "hosts"];

/// A process to start in a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The container.
    pub container: String,
    /// The exec instance's id (the zygote's key for it).
    pub id: String,
    /// The container's bundle: the process starts from its `config.json`'s
    /// (capabilities, seccomp, rlimits, AppArmor), as Docker's do.
    pub bundle: PathBuf,
    /// `argv`.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<String>,
    /// Working directory; `None`: the container's.
    pub cwd: Option<String>,
    /// `(uid, gid, additional gids)`; `None`: the container's user.
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// A pseudo-terminal.
    pub tty: bool,
    /// Keep a standard input to write to.
    pub open_stdin: bool,
    /// The terminal's first size, `(rows, columns)`.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}
