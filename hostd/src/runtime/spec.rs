//! The OCI runtime-spec `config.json`: the subset runc users rely on.
//!
//! Field names follow the specification (camelCase in JSON). Unknown fields
//! are ignored, as runc does; a field of the wrong type is an error that names
//! the field's path (`process.user.uid: invalid type ...`), found with
//! `serde_path_to_error`. The types know nothing about validity beyond JSON
//! types: [`super::plan`] checks meaning (known capabilities, absolute paths,
//! namespaces that fit together).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from reading a bundle's `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong type.
    #[error("{path}: field `{field}`")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// The field's path, e.g. `process.user.uid`; `.` for the top level.
        field: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The top of `config.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Specification version the bundle was written for.
    #[serde(default)]
    pub oci_version: String,
    /// The container's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// The root file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Root>,
    /// Host name inside the container (needs a new UTS namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// NIS domain name inside the container (needs a new UTS namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Mounts, in order, on top of the root.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Linux-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<Linux>,
    /// Free-form annotations, reported by `state`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Lifecycle hooks, checked by [`super::hooks`] (kept as JSON: the
    /// parse there gives the same field paths and costs less code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<serde_json::Value>,
}

/// `process`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// Whether to allocate a pseudo-terminal (its primary side goes to
    /// `--console-socket`).
    #[serde(default)]
    pub terminal: bool,
    /// The user the process runs as.
    #[serde(default)]
    pub user: User,
    /// `argv`; `args[0]` is looked up in the container's `PATH` when it has
    /// no slash.
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=value` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    #[serde(default)]
    pub cwd: String,
    /// Capability sets; absent means no capabilities at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Resource limits.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// `PR_SET_NO_NEW_PRIVS`.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// `/proc/self/oom_score_adj`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// AppArmor profile to exec the process under (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<String>,
    /// SELinux label to exec the process with (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux_label: Option<String>,
}

/// `process.user`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id.
    #[serde(default)]
    pub uid: u32,
    /// Group id.
    #[serde(default)]
    pub gid: u32,
    /// File mode creation mask (default 0022).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// `process.capabilities`: lists of names like `CAP_KILL`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Bounding set.
    #[serde(default)]
    pub bounding: Vec<String>,
    /// Effective set.
    #[serde(default)]
    pub effective: Vec<String>,
    /// Inheritable set.
    #[serde(default)]
    pub inheritable: Vec<String>,
    /// Permitted set.
    #[serde(default)]
    pub permitted: Vec<String>,
    /// Ambient set.
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// One `process.rlimits` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE` and friends.
    #[serde(rename = "type")]
    pub kind: String,
    /// Hard limit.
    pub hard: u64,
    /// Soft limit.
    pub soft: u64,
}

/// `root`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Root {
    /// Root file system, absolute or relative to the bundle.
    pub path: String,
    /// Remount the root read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// One `mounts` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Mount {
    /// Absolute path inside the container.
    pub destination: String,
    /// File system type (`proc`, `tmpfs`, `bind`, ...).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Device, file system name, or for bind mounts a host path (relative
    /// paths are relative to the bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `mount(8)`-style options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// `linux`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    /// Namespaces to create (no `path`) or join (`path`).
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    /// User-namespace uid mappings.
    #[serde(default)]
    pub uid_mappings: Vec<IdMapping>,
    /// User-namespace gid mappings.
    #[serde(default)]
    pub gid_mappings: Vec<IdMapping>,
    /// Extra device nodes to create under `/dev`.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// cgroup path, relative to the cgroup root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
    /// cgroup limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Propagation of the root mount (`rprivate`, `rslave`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_propagation: Option<String>,
    /// Paths made unreadable (`/dev/null` over files, read-only tmpfs over
    /// directories).
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Paths remounted read-only.
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// Seccomp policy; absent means hostd's default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    /// Namespaced sysctls, `net.ipv4.ip_forward = "1"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    /// SELinux context of the container's mounts (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_label: Option<String>,
}

/// The namespace kinds of `linux.namespaces[].type`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    /// PID namespace.
    Pid,
    /// Network namespace.
    Network,
    /// Mount namespace.
    Mount,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Host and domain name.
    Uts,
    /// User and group ids.
    User,
    /// cgroup root.
    Cgroup,
}

impl NamespaceKind {
    /// The `CLONE_NEW*` flag.
    pub fn clone_flag(self) -> u64 {
        (match self {
            NamespaceKind::Pid => libc::CLONE_NEWPID,
            NamespaceKind::Network => libc::CLONE_NEWNET,
            NamespaceKind::Mount => libc::CLONE_NEWNS,
            NamespaceKind::Ipc => libc::CLONE_NEWIPC,
            NamespaceKind::Uts => libc::CLONE_NEWUTS,
            NamespaceKind::User => libc::CLONE_NEWUSER,
            NamespaceKind::Cgroup => libc::CLONE_NEWCGROUP,
        }) as u64
    }

    /// The spec's name for it.
    pub fn name(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Network => "network",
            NamespaceKind::Mount => "mount",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
            NamespaceKind::User => "user",
            NamespaceKind::Cgroup => "cgroup",
        }
    }
}

/// One `linux.namespaces` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Namespace {
    /// Which namespace.
    #[serde(rename = "type")]
    pub kind: NamespaceKind,
    /// Join the namespace at this path instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One uid or gid mapping.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    /// First id inside the namespace.
    #[serde(rename = "containerID")]
    pub container_id: u32,
    /// First id outside.
    #[serde(rename = "hostID")]
    pub host_id: u32,
    /// Number of ids.
    pub size: u32,
}

/// One `linux.devices` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// `c`, `b`, `u` or `p`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Absolute path inside the container, under `/dev`.
    pub path: String,
    /// Major number.
    #[serde(default)]
    pub major: u32,
    /// Minor number.
    #[serde(default)]
    pub minor: u32,
    /// Permission bits (default 0666).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// `linux.resources`, the cgroup limits hostd applies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Memory limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// CPU limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Process count limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Pids>,
    /// cgroup v2 files written as they are (`"cpu.weight": "50"`), after
    /// the limits above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unified: Option<std::collections::BTreeMap<String, String>>,
}

impl Resources {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        let memory = self
            .memory
            .as_ref()
            .is_none_or(|m| m.limit.is_none() && m.reservation.is_none() && m.swap.is_none());
        let cpu = self.cpu.as_ref().is_none_or(|c| {
            c.shares.is_none()
                && c.quota.is_none()
                && c.period.is_none()
                && c.cpus.is_none()
                && c.mems.is_none()
        });
        memory && cpu && self.pids.is_none() && self.unified.as_ref().is_none_or(|u| u.is_empty())
    }
}

/// `linux.resources.memory` (bytes; -1 means unlimited).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Hard limit (`memory.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Soft limit (`memory.low`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<i64>,
    /// Memory plus swap (`memory.swap.max` = swap - limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<i64>,
}

/// `linux.resources.cpu`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// cgroup v1 shares (2..262144), converted to `cpu.weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u64>,
    /// Microseconds per period (`cpu.max`); -1 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<i64>,
    /// Period in microseconds (`cpu.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u64>,
    /// `cpuset.cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// `cpuset.mems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mems: Option<String>,
}

/// `linux.resources.pids`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pids {
    /// Maximum number of tasks; 0 or -1 means unlimited.
    pub limit: i64,
}

/// `linux.seccomp`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    /// Action for calls no rule matches.
    pub default_action: SeccompAction,
    /// errno for `SCMP_ACT_ERRNO` as default action (default EPERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_*` names; only the native x86_64 is enforced.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `SECCOMP_FILTER_FLAG_*` names.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Rules, first match wins.
    #[serde(default)]
    pub syscalls: Vec<SeccompSyscall>,
}

/// A seccomp action, `SCMP_ACT_*`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SeccompAction {
    /// Kill the thread.
    #[serde(rename = "SCMP_ACT_KILL", alias = "SCMP_ACT_KILL_THREAD")]
    #[default]
    Kill,
    /// Kill the whole process.
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    /// Send SIGSYS.
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    /// Fail with an errno.
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// Notify a tracer (fails with the errno when there is none).
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    /// Allow.
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// Allow and log.
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
}

/// One `linux.seccomp.syscalls` rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeccompSyscall {
    /// System call names.
    pub names: Vec<String>,
    /// What happens when the rule matches.
    pub action: SeccompAction,
    /// errno for `SCMP_ACT_ERRNO`/`SCMP_ACT_TRACE` (default EPERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Argument tests, all of which must hold.
    #[serde(default)]
    pub args: Vec<SeccompArg>,
}

/// One argument test.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    /// Argument number, 0..=5.
    pub index: u32,
    /// Value (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// Second value (the expected result for `SCMP_CMP_MASKED_EQ`).
    #[serde(default)]
    pub value_two: u64,
    /// Comparison.
    pub op: SeccompOp,
}

/// A seccomp argument comparison, `SCMP_CMP_*`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SeccompOp {
    /// `!=`.
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    /// `<`.
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    /// `<=`.
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    /// `==`.
    #[serde(rename = "SCMP_CMP_EQ")]
    #[default]
    Eq,
    /// `>=`.
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    /// `>`.
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    /// `(arg & value) == valueTwo`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

impl Spec {
    /// Parses `config.json` text; `path` is only used in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<Spec, SpecError> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            SpecError::Parse {
                path: path.to_path_buf(),
                field,
                source: e.into_inner(),
            }
        })
    }

    /// Reads `config.json` in `bundle`.
    pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        Spec::parse(&text, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text.as_bytes(), Path::new("config.json"))
    }

    #[test]
    fn parses_runc_spec_subset() {
        let spec = parse(
            r#"{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":1,"gid":2,
            "additionalGids":[3]},"args":["sh"],"env":["A=b"],"cwd":"/",
            "capabilities":{"bounding":["CAP_KILL"]},"rlimits":[{"type":"RLIMIT_NOFILE",
            "hard":10,"soft":5}],"noNewPrivileges":true},"root":{"path":"rootfs",
            "readonly":true},"hostname":"h","mounts":[{"destination":"/proc","type":"proc",
            "source":"proc"}],"linux":{"namespaces":[{"type":"pid"},{"type":"network",
            "path":"/proc/1/ns/net"}],"uidMappings":[{"containerID":0,"hostID":1000,
            "size":1}],"maskedPaths":["/proc/kcore"],"resources":{"memory":{"limit":1024},
            "pids":{"limit":10}},"seccomp":{"defaultAction":"SCMP_ACT_ERRNO",
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,
            "value":1,"op":"SCMP_CMP_EQ"}]}]},"unknownField":1}}"#,
        )
        .unwrap();
        let process = spec.process.unwrap();
        assert_eq!(process.user.additional_gids, vec![3]);
        assert_eq!(process.rlimits[0].kind, "RLIMIT_NOFILE");
        let linux = spec.linux.unwrap();
        assert_eq!(linux.namespaces[1].kind, NamespaceKind::Network);
        assert_eq!(linux.uid_mappings[0].host_id, 1000);
        assert_eq!(linux.seccomp.unwrap().syscalls[0].args[0].op, SeccompOp::Eq);
        assert!(!linux.resources.unwrap().is_empty());
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse(r#"{"process":{"user":{"uid":"root"}}}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("process.user.uid"), "{text}");
        let err =
            parse(r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"time2"}]}}"#).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("linux.namespaces[1].type"), "{text}");
        assert!(text.contains("time2"), "{text}");
    }
}
