//! What a container is asked to be: the `run` request (from the console, the
//! socket, and the boot-time manifest mkhost writes into an image), its
//! resource limits and restart policy, its record as `ps` reports it, and parsers for their human forms
//! (`64M`, `0.5`, `on-failure:3`). Pure data and checks: mkhost links this
//! module to reject a bad `[[container]]` at build time with the same words
//! hostd would use at boot.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::network::{
    valid_network_name, Attachment, PortMapping, DEFAULT_NETWORK, MODE_HOST, MODE_NONE,
};

/// Smallest memory limit hostd accepts (Docker's minimum): below it the
/// container's init is killed by the OOM killer before it runs anything.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// A `run` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Image reference.
    pub image: String,
    /// Container name (default: the first 12 digits of the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replaces the image's `Cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `NAME=value` entries added to (or overriding) the image's `Env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// cgroup limits.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// What to do when the container exits.
    #[serde(default, skip_serializing_if = "RestartPolicy::is_no")]
    pub restart: RestartPolicy,
    /// `user[:group]`, by name or number; replaces the image's `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory (absolute); replaces the image's `WorkingDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Replaces the image's `Entrypoint` (and drops its `Cmd`, as
    /// `docker run --entrypoint` does); an empty list clears it, leaving
    /// `command` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Host name (default: the first 12 digits of the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Mount the root file system read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// The container's `oom_score_adj`, -1000 to 1000
    /// (`--oom-score-adj`); 0, Docker's default, is always set, since the
    /// daemon's own is lower.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oom_score_adj: i32,
    /// tmpfs mounts: absolute path -> mount options (`size=64m,mode=1777`,
    /// or empty), on top of Docker's `nosuid,nodev,noexec`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// Named volumes and bind mounts of host directories (`-v`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Capabilities added to Docker's default set (`NET_ADMIN`,
    /// `CAP_NET_ADMIN`, or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped from it (or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Labels, kept with the container and shown by `ps --json`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Remove the container once it has exited for good (`docker run --rm`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_remove: bool,
    /// `host`, `none` or a network's name (default: [`DEFAULT_NETWORK`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Published ports (`-p`; bridge networks only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PortMapping>,
    /// More names the container answers to on its network (`--network-alias`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_aliases: Vec<String>,
    /// A fixed address on its network (`--ip`), instead of the next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// When to pull the image from its registry first (`--pull`).
    #[serde(default, skip_serializing_if = "PullPolicy::is_missing")]
    pub pull: PullPolicy,
    /// A pseudo-terminal for the container's process (`-t`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    /// Keep its standard input open to write to (`-i`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub open_stdin: bool,
    /// Close its standard input once the first client that attached it
    /// detaches (`docker run -i` sets it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_once: bool,
    /// The terminal's first size, `(rows, columns)` (with `tty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<(u16, u16)>,
}

/// When `run` pulls its image (`docker run --pull`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Only when the store lacks the image (the default).
    #[default]
    Missing,
    /// Every time, so a moved tag is followed.
    Always,
    /// Never: a missing image is an error.
    Never,
}

impl PullPolicy {
    fn is_missing(&self) -> bool {
        *self == PullPolicy::Missing
    }
}

impl FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "unknown pull policy {other:?} (missing, always or never)"
            )),
        }
    }
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !value
}

/// Capability names in kernel order: the index is the capability number.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby `oci/caps/defaults.go`), in
/// kernel order.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
];

/// The canonical name of a capability given as `net_admin`, `NET_ADMIN` or
/// `CAP_NET_ADMIN`; `None` if there is no such capability.
pub fn capability_name(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES.iter().copied().find(|c| *c == full)
}

/// The capability set Docker gives a container: its default set, or every
/// capability when `cap_add` has `ALL`, or none when `cap_drop` has `ALL`;
/// then `cap_drop` removed and `cap_add` added. Kernel order.
pub fn capability_set(
    cap_add: &[String],
    cap_drop: &[String],
) -> Result<Vec<&'static str>, RequestError> {
    let all = |list: &[String]| list.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let names = |list: &[String], flag: &'static str| -> Result<Vec<&'static str>, RequestError> {
        list.iter()
            .filter(|c| !c.eq_ignore_ascii_case("ALL"))
            .map(|c| {
                capability_name(c).ok_or_else(|| RequestError::Capability {
                    flag,
                    name: c.clone(),
                })
            })
            .collect()
    };
    let add = names(cap_add, "cap_add")?;
    let drop = names(cap_drop, "cap_drop")?;
    let wanted = |c: &&str| {
        if all(cap_add) {
            !drop.contains(c)
        } else if all(cap_drop) {
            add.contains(c)
        } else {
            add.contains(c) || (DEFAULT_CAPABILITIES.contains(c) && !drop.contains(c))
        }
    };
    Ok(CAPABILITIES.iter().copied().filter(wanted).collect())
}

/// A host name the kernel and resolvers take: 1 to 63 letters, digits and
/// `-` per dot-separated label, at most 253 in all (RFC 1123).
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl RunRequest {
    /// The network mode or name the container joins.
    pub fn network_name(&self) -> &str {
        self.network.as_deref().unwrap_or(DEFAULT_NETWORK)
    }

    /// Checks everything that does not need the image: name, env, limits.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.image.is_empty() {
            return Err(RequestError::NoImage);
        }
        if let Some(name) = &self.name {
            if !valid_name(name) {
                return Err(RequestError::Name(name.clone()));
            }
        }
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=')) {
            return Err(RequestError::Env(bad.clone()));
        }
        if let Some(host) = &self.hostname {
            if !valid_hostname(host) {
                return Err(RequestError::Hostname(host.clone()));
            }
        }
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            return Err(RequestError::OomScoreAdj(self.oom_score_adj));
        }
        if let Some(dir) = &self.workdir {
            if !dir.starts_with('/') {
                return Err(RequestError::Path {
                    field: "workdir",
                    value: dir.clone(),
                });
            }
        }
        for path in self.tmpfs.keys() {
            if !path.starts_with('/') || path.split('/').all(str::is_empty) || path.contains('\0') {
                return Err(RequestError::Path {
                    field: "tmpfs",
                    value: path.clone(),
                });
            }
        }
        let mut targets: std::collections::BTreeSet<String> = self
            .tmpfs
            .keys()
            .map(|t| clean_path(t).unwrap_or_default())
            .collect();
        for volume in &self.volumes {
            volume.check()?;
            if !targets.insert(volume.target.clone()) {
                return Err(RequestError::Volume {
                    value: volume.to_string(),
                    why: format!(
                        "{} is mounted twice (tmpfs or another volume)",
                        volume.target
                    ),
                });
            }
        }
        if let Some(key) = self.labels.keys().find(|k| k.is_empty()) {
            return Err(RequestError::Label(key.clone()));
        }
        if let Some(network) = &self.network {
            if !valid_network_name(network) {
                return Err(RequestError::Network(network.clone()));
            }
        }
        let own_namespace = !matches!(self.network.as_deref(), Some(MODE_HOST | MODE_NONE));
        if !own_namespace && !self.publish.is_empty() {
            return Err(RequestError::Conflict(
                "published ports (-p) need a network (not --network host or none)",
            ));
        }
        if !own_namespace && (!self.network_aliases.is_empty() || self.ip.is_some()) {
            return Err(RequestError::Conflict(
                "network aliases and --ip need a network (not --network host or none)",
            ));
        }
        if let Some(alias) = self.network_aliases.iter().find(|a| !valid_hostname(a)) {
            return Err(RequestError::Hostname(alias.clone()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for port in &self.publish {
            if port.host_port == 0 || port.container_port == 0 {
                return Err(RequestError::Port(format!("{port}: port 0")));
            }
            if !seen.insert((port.host_ip, port.host_port, port.protocol)) {
                return Err(RequestError::Port(format!(
                    "host port {}/{} is published twice",
                    port.host_port, port.protocol
                )));
            }
        }
        if self.auto_remove && !self.restart.is_no() {
            return Err(RequestError::Conflict(
                "auto_remove (--rm) and a restart policy exclude each other",
            ));
        }
        capability_set(&self.cap_add, &self.cap_drop)?;
        self.limits.validate()
    }
}

/// A container name: 1 to 128 of letters, digits, `_`, `.`, `-`, starting
/// with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A volume or bind mount of a container (`-v SOURCE:TARGET[:ro|rw]`):
/// the source is a volume's name, or an absolute host directory for a bind
/// mount; the target is an absolute path inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// A volume name, or an absolute host path (a bind mount).
    pub source: String,
    /// Where it is mounted in the container (absolute, cleaned).
    pub target: String,
    /// Mounted read-only (`:ro`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// A volume name, as Docker takes it: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at
/// most 128 long (it names a directory).
pub fn valid_volume_name(name: &str) -> bool {
    valid_name(name)
}

/// `path` absolute, with `.` and empty components dropped and without a
/// trailing `/`; `None` if it is relative, `/` itself, has a `..`
/// component or a NUL byte.
fn clean_path(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

impl VolumeMount {
    /// Parses `docker run -v`'s form: `NAME:/path`, `/host/dir:/path`,
    /// either with `:ro` or `:rw`. The target is cleaned (`/a//b/` is
    /// `/a/b`).
    pub fn parse(text: &str) -> Result<VolumeMount, RequestError> {
        let bad = |why: &str| RequestError::Volume {
            value: text.to_string(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [_] => {
                return Err(bad(
                    "anonymous volumes are not supported: name it (NAME:/path) or give a host directory (/host/dir:/path)",
                ))
            }
            [source, target] => (*source, *target, None),
            [source, target, mode] => (*source, *target, Some(*mode)),
            _ => return Err(bad("expected SOURCE:TARGET[:ro|rw]")),
        };
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => return Err(bad(&format!("unknown mode {other:?} (ro or rw)"))),
        };
        let volume = VolumeMount {
            source: source.to_string(),
            target: clean_path(target).unwrap_or_else(|| target.to_string()),
            read_only,
        };
        volume.check()?;
        Ok(volume)
    }

    /// A bind mount of a host directory (the source is a path), not a
    /// named volume.
    pub fn is_bind(&self) -> bool {
        self.source.starts_with('/')
    }

    /// Checks source and target: a valid volume name or a clean absolute
    /// host path, and an absolute container path below `/` without `..`.
    pub fn check(&self) -> Result<(), RequestError> {
        let bad = |why: String| RequestError::Volume {
            value: self.to_string(),
            why,
        };
        if self.source.is_empty() {
            return Err(bad(
                "no source: expected NAME:/path or /host/dir:/path".into()
            ));
        }
        if self.is_bind() {
            if clean_path(&self.source).is_none() {
                return Err(bad(format!(
                    "host path {:?} must be absolute, below / and without '..'",
                    self.source
                )));
            }
        } else if !valid_volume_name(&self.source) {
            let fix = if self.source.contains('/') || self.source.contains("..") {
                format!(
                    "a volume name cannot hold '/' or '..'; for a host directory give its absolute path (/srv/{}:{})",
                    self.source.trim_start_matches(['.', '/']),
                    self.target
                )
            } else {
                "a volume name is letters, digits, '_', '.' and '-', starting with a letter or digit, at most 128".to_string()
            };
            return Err(bad(format!("invalid volume name {:?}: {fix}", self.source)));
        }
        if clean_path(&self.target).as_deref() != Some(self.target.as_str()) {
            return Err(bad(format!(
                "container path {:?} must be absolute, below / and without '..'",
                self.target
            )));
        }
        Ok(())
    }
}

impl fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// Resource limits, applied through the container's cgroup (v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `memory.max` in bytes (at least [`MIN_MEMORY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// CPU time in billionths of a CPU (Docker's `NanoCpus`): `cpu.max`
    /// quota over a 100 ms period. `--cpus 0.5` is 500000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// `cpu.weight`, 1..=10000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// `pids.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// `cpuset.cpus`, e.g. `0-1,3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// `cpuset.mems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
}

/// cgroup v2 `cpu.max` period hostd uses, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    /// No limit set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Checks the values against what the kernel accepts.
    pub fn validate(&self) -> Result<(), RequestError> {
        let bad = |field: &'static str, value: String, why: &str| RequestError::Limit {
            field,
            value,
            why: why.to_string(),
        };
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(bad(
                    "memory",
                    m.to_string(),
                    "is below the minimum of 6 MiB (6291456 bytes)",
                ));
            }
        }
        if let Some(n) = self.nano_cpus {
            if self.cpu_quota_us().is_none() {
                return Err(bad(
                    "cpus",
                    format_cpus(n),
                    "must be at least 0.01 (a 1 ms quota per 100 ms period)",
                ));
            }
        }
        if let Some(w) = self.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return Err(bad("cpu_weight", w.to_string(), "must be 1..=10000"));
            }
        }
        if let Some(p) = self.pids {
            if p < 1 {
                return Err(bad("pids", p.to_string(), "must be at least 1"));
            }
        }
        for (field, value) in [
            ("cpuset_cpus", &self.cpuset_cpus),
            ("cpuset_mems", &self.cpuset_mems),
        ] {
            if let Some(v) = value {
                if !valid_cpu_list(v) {
                    return Err(bad(
                        field,
                        v.clone(),
                        "is not a list like 0-3,5 (numbers, ranges, commas)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `cpu.max` quota in microseconds per [`CPU_PERIOD_US`], or `None`
    /// if the value is below the kernel's 1 ms minimum.
    pub fn cpu_quota_us(&self) -> Option<i64> {
        let n = self.nano_cpus?;
        let quota = i128::from(n) * i128::from(CPU_PERIOD_US) / 1_000_000_000;
        (quota >= 1000).then(|| i64::try_from(quota).unwrap_or(i64::MAX))
    }
}

fn valid_cpu_list(text: &str) -> bool {
    !text.is_empty()
        && text.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let first = ends.next().unwrap_or_default();
            let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            number(first) && ends.next().is_none_or(number)
        })
}

/// Parses a size: bytes, or a number with `k`, `m`, `g` or `t` (binary
/// multiples; `KiB`, `MB`, `M` and `m` all mean 1024-based).
pub fn parse_size(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let value: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (expected e.g. 64M, 1G, 65536)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use k, M, G or T)"
            ))
        }
    };
    value
        .checked_mul(1i64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a CPU count like `0.5` or `2` into billionths of a CPU.
pub fn parse_cpus(text: &str) -> Result<i64, String> {
    let err = || format!("{text:?} is not a number of CPUs (expected e.g. 0.5 or 2)");
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return Err(err());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| err())?
    };
    let frac: i64 = format!("{frac:0<9}").parse().map_err(|_| err())?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(err)
}

/// `nano_cpus` back to `0.5`.
pub fn format_cpus(nano: i64) -> String {
    let text = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// When a container is started again after it exits: `no`, `always`
/// (whatever the exit code, until stopped), `unless-stopped` (as `always`,
/// but a container the user stopped stays stopped across a reboot), or
/// `on-failure[:N]` (non-zero exit codes only, at most N restarts when N is
/// given). Docker's names and meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// Always, until `stop` or `rm`; also after a reboot, even when it was
    /// stopped by the user.
    Always,
    /// As `Always`, except that a container stopped by the user stays
    /// stopped after a reboot.
    UnlessStopped,
    /// After a non-zero exit, at most `max` times if given.
    OnFailure {
        /// Restart limit.
        max: Option<u32>,
    },
}

impl RestartPolicy {
    /// The default.
    pub fn is_no(&self) -> bool {
        *self == RestartPolicy::No
    }

    /// Whether a container that exited with `code`, after `restarts`
    /// restarts so far, is started again.
    pub fn restarts(&self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!("unknown restart policy {s:?} (use no, always, unless-stopped, on-failure or on-failure:N)")
        };
        match s {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            _ => {
                let n = s.strip_prefix("on-failure:").ok_or_else(err)?;
                let max = n.parse::<u32>().map_err(|_| err())?;
                Ok(RestartPolicy::OnFailure { max: Some(max) })
            }
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a container's command could not be started, when that is why a
/// `run` failed. `hostd run` then exits with the shell's code for it, as
/// `docker run` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecError {
    /// No such file, or a bare name found nowhere in `PATH`.
    NotFound,
    /// Found, but not executable (no permission, a directory).
    NotExecutable,
}

impl ExecError {
    /// 127 or 126, the shell's exit codes for these.
    pub fn exit_code(self) -> u8 {
        match self {
            ExecError::NotFound => 127,
            ExecError::NotExecutable => 126,
        }
    }
}

/// A container's record, as in `state.json` and `ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Container id (16 hex digits).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The image as requested.
    pub image: String,
    /// The image id.
    pub image_id: String,
    /// `argv`.
    pub command: Vec<String>,
    /// The init's pid (in the daemon's pid namespace); 0 when not running.
    pub pid: i32,
    /// Creation time, RFC 3339.
    pub created: String,
    /// `running`, `restarting` (waiting to be started again) or `exited`.
    pub status: String,
    /// Exit code of the last run (128 + signal when killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The OOM killer ended the last run.
    #[serde(default)]
    pub oom_killed: bool,
    /// Restarts done by the restart policy.
    #[serde(default)]
    pub restart_count: u32,
    /// The restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The limits.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Start of the current (or last) run, RFC 3339.
    #[serde(default)]
    pub started: String,
    /// End of the last run, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Why the container is not running when that is not its own doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Labels from the request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Removed once it exits for good (`--rm`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_remove: bool,
    /// Its network: `host`, `none`, or a network with its address and ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Attachment>,
    /// Its volumes and bind mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// The user stopped it (`stop`) and has not started it since: an
    /// `unless-stopped` container stays stopped after a reboot (Docker's
    /// "manually stopped").
    #[serde(default, skip_serializing_if = "is_false")]
    pub stopped_by_user: bool,
    /// Running, but frozen by `docker pause` (the cgroup freezer).
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

/// The status of a container made but never started (`docker create`).
pub const STATUS_CREATED: &str = "created";

/// Why a request is refused before anything is created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No image named.
    #[error("no image given")]
    NoImage,
    /// A bad container name.
    #[error("invalid container name {0:?} (letters, digits, '_', '.', '-'; starting with a letter or digit; at most 128)")]
    Name(String),
    /// An env entry without `=`.
    #[error("invalid environment entry {0:?} (expected NAME=value)")]
    Env(String),
    /// A host name the kernel or resolvers would refuse.
    #[error(
        "invalid hostname {0:?} (letters, digits and '-' in dot-separated labels of at most 63)"
    )]
    Hostname(String),
    /// An `oom_score_adj` the kernel does not take (Docker's words).
    #[error("Invalid value {0}, range for oom score adj is [-1000, 1000]")]
    OomScoreAdj(i32),
    /// A path that must be absolute (and not `/`) is not.
    #[error("{field} {value:?}: expected an absolute path below /")]
    Path {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A capability name nobody knows.
    #[error("{flag}: unknown capability {name:?} (names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")]
    Capability {
        /// `cap_add` or `cap_drop`.
        flag: &'static str,
        /// The name as given.
        name: String,
    },
    /// A label without a key.
    #[error("invalid label {0:?}: the key is empty (expected KEY=value)")]
    Label(String),
    /// A network name that cannot name one.
    #[error(
        "invalid network {0:?} (host, none, or a network name: letters, digits, '_', '.', '-')"
    )]
    Network(String),
    /// A bad volume or bind mount.
    #[error("invalid volume {value:?}: {why}")]
    Volume {
        /// The volume as given.
        value: String,
        /// What is wrong, and the fix.
        why: String,
    },
    /// A bad published port.
    #[error("invalid published port: {0}")]
    Port(String),
    /// Two options that exclude each other.
    #[error("conflicting options: {0}")]
    Conflict(&'static str),
    /// A limit the kernel would refuse.
    #[error("{field} {value}: {why}")]
    Limit {
        /// The limit.
        field: &'static str,
        /// Its value as given.
        value: String,
        /// What is wrong.
        why: String,
    },
}

/// The boot-time manifest: images to import and containers to start when
/// hostd starts (written by mkhost from a profile's `[[container]]` tables).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootManifest {
    /// Archives (OCI layout tar, OCI archive or `docker save`), absolute
    /// paths in the image, imported in order.
    #[serde(default)]
    pub archives: Vec<BootArchive>,
    /// Containers started (once each, by name) after the imports.
    #[serde(default)]
    pub containers: Vec<RunRequest>,
}

/// One embedded image archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootArchive {
    /// Path inside the image.
    pub path: String,
    /// sha256 of the file, hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("-5M").is_err());
        assert!(parse_size("99999999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn cpus_parse_exactly() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus(".25"), Ok(250_000_000));
        assert_eq!(parse_cpus("1.000000001"), Ok(1_000_000_001));
        for bad in ["", ".", "a", "1.2.3", "-1", "0.1234567891"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        assert_eq!(format_cpus(500_000_000), "0.5");
        assert_eq!(format_cpus(2_000_000_000), "2");
    }

    #[test]
    fn oom_score_adj_is_checked_as_docker_does() {
        let mut run = RunRequest {
            image: "img".into(),
            ..RunRequest::default()
        };
        for fine in [-1000, 0, 1000] {
            run.oom_score_adj = fine;
            run.validate().unwrap();
        }
        run.oom_score_adj = 1001;
        assert_eq!(
            run.validate().unwrap_err().to_string(),
            "Invalid value 1001, range for oom score adj is [-1000, 1000]"
        );
        run.oom_score_adj = -1001;
        assert!(run.validate().is_err());
    }

    #[test]
    fn limits_are_checked() {
        let ok = Limits {
            memory: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            cpu_weight: Some(50),
            pids: Some(10),
            cpuset_cpus: Some("0-1,3".into()),
            cpuset_mems: Some("0".into()),
        };
        ok.validate().unwrap();
        assert_eq!(ok.cpu_quota_us(), Some(50_000));
        let tiny = Limits {
            memory: Some(4096),
            ..Limits::default()
        };
        let e = tiny.validate().unwrap_err().to_string();
        assert!(e.contains("memory 4096") && e.contains("6 MiB"), "{e}");
        let slow = Limits {
            nano_cpus: Some(1_000_000),
            ..Limits::default()
        };
        assert!(slow
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cpus 0.001"));
        for (weight, ok) in [(0, false), (1, true), (10_000, true), (10_001, false)] {
            let l = Limits {
                cpu_weight: Some(weight),
                ..Limits::default()
            };
            assert_eq!(l.validate().is_ok(), ok, "{weight}");
        }
        for bad in ["", "a", "1-", "-1", "1,,2", "0-1-2"] {
            let l = Limits {
                cpuset_cpus: Some(bad.into()),
                ..Limits::default()
            };
            assert!(l.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn restart_policies_round_trip_and_decide() {
        for text in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:3",
        ] {
            let p: RestartPolicy = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<RestartPolicy>(&json).unwrap(), p);
        }
        for bad in [
            "",
            "sometimes",
            "on-failure:",
            "on-failure:x",
            "on-failure:-1",
        ] {
            let e = bad.parse::<RestartPolicy>().unwrap_err();
            assert!(e.contains("on-failure:N"), "{e}");
        }
        assert!(!RestartPolicy::No.restarts(1, 0));
        assert!(RestartPolicy::Always.restarts(0, 100));
        assert!(RestartPolicy::UnlessStopped.restarts(0, 100));
        assert!(RestartPolicy::UnlessStopped.restarts(137, 0));
        let three = RestartPolicy::OnFailure { max: Some(3) };
        assert!(!three.restarts(0, 0));
        assert!(three.restarts(1, 2));
        assert!(!three.restarts(1, 3));
        assert!(RestartPolicy::OnFailure { max: None }.restarts(137, 1000));
    }

    #[test]
    fn requests_validate_and_reject_unknown_fields() {
        let req: RunRequest = serde_json::from_str(
            r#"{"image":"bb","name":"web","restart":"on-failure:2","limits":{"memory":67108864}}"#,
        )
        .unwrap();
        req.validate().unwrap();
        assert_eq!(req.restart, RestartPolicy::OnFailure { max: Some(2) });
        let e = serde_json::from_str::<RunRequest>(r#"{"image":"bb","memroy":1}"#).unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
        let bad_name = RunRequest {
            image: "bb".into(),
            name: Some("-x".into()),
            ..RunRequest::default()
        };
        assert!(matches!(bad_name.validate(), Err(RequestError::Name(_))));
        let bad_env = RunRequest {
            image: "bb".into(),
            env: vec!["X".into()],
            ..RunRequest::default()
        };
        assert!(matches!(bad_env.validate(), Err(RequestError::Env(_))));
        let minimal = serde_json::to_string(&RunRequest {
            image: "bb".into(),
            ..RunRequest::default()
        })
        .unwrap();
        assert_eq!(minimal, r#"{"image":"bb"}"#);
    }

    #[test]
    fn volumes_parse_as_docker_takes_them() {
        let v = VolumeMount::parse("data:/var/lib/db").unwrap();
        assert_eq!(
            v,
            VolumeMount {
                source: "data".into(),
                target: "/var/lib/db".into(),
                read_only: false
            }
        );
        assert!(!v.is_bind());
        let v = VolumeMount::parse("/srv/www:/usr/share/www/:ro").unwrap();
        assert!(v.is_bind() && v.read_only);
        assert_eq!(v.target, "/usr/share/www");
        assert_eq!(v.to_string(), "/srv/www:/usr/share/www:ro");
        assert!(!VolumeMount::parse("a.b_c-1:/x//y/.:rw").unwrap().read_only);
        assert_eq!(VolumeMount::parse("a:/x//y/.").unwrap().target, "/x/y");
        for (bad, words) in [
            ("/data", "anonymous volumes"),
            ("data", "anonymous volumes"),
            ("a:/b:ro:x", "SOURCE:TARGET"),
            ("a:/b:z", "unknown mode \"z\""),
            (":/b", "no source"),
            ("a:b", "container path \"b\""),
            ("a:/", "container path \"/\""),
            ("a:/x/../etc", "without '..'"),
            ("/srv/../etc:/x", "host path"),
            ("data/x:/d", "cannot hold '/' or '..'"),
            ("../x:/d", "(/srv/x:/d)"),
            ("./x:/d", "for a host directory give its absolute path"),
            ("..:/d", "cannot hold"),
            ("-x:/d", "starting with a letter or digit"),
        ] {
            let e = VolumeMount::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains(words),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn requests_check_their_volumes() {
        let mut req = RunRequest {
            image: "bb".into(),
            volumes: vec![VolumeMount::parse("a:/data").unwrap()],
            ..RunRequest::default()
        };
        req.validate().unwrap();
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"image":"bb","volumes":[{"source":"a","target":"/data"}]}"#
        );
        assert_eq!(serde_json::from_str::<RunRequest>(&json).unwrap(), req);
        req.volumes
            .push(VolumeMount::parse("/srv/b:/data/:ro").unwrap());
        let e = req.validate().unwrap_err().to_string();
        assert!(e.contains("/data is mounted twice"), "{e}");
        req.volumes.pop();
        req.tmpfs.insert("/data/".into(), String::new());
        assert!(req.validate().is_err());
        req.tmpfs.clear();
        // A request from the socket is checked as -v's parser checks.
        req.volumes[0].source = "../etc".into();
        assert!(matches!(req.validate(), Err(RequestError::Volume { .. })));
        req.volumes[0] = VolumeMount {
            source: "a".into(),
            target: "/x/../y".into(),
            read_only: false,
        };
        assert!(req.validate().is_err());
    }
}
