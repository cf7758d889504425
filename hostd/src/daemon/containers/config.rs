//! Pure first pass of `run`: the image config merged with the request, the
//! user resolved against the image's `/etc/passwd`, and the OCI
//! `config.json` the runtime gets. Nothing here touches the system except
//! reading `/etc/passwd` and `/etc/group` from the image's layers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use mkhost_shared::container::{Limits, RunRequest, DEFAULT_CAPABILITIES};
use mkhost_store::ImageConfig;

/// `PATH` when neither the image nor the request sets one (Docker's).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the zygote needs to create one container: everything is resolved.
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
    /// ([`crate::runtime::plan::ROOT_OVERLAY_ANNOTATION`]), so the host's
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
    /// [`SHARED_MEMORY_CGROUP`]'s, with the other containers without a
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

/// Why a request cannot be merged with its image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither the image nor the request gives a command.
    #[error("no command: the image has no Entrypoint or Cmd and the request gives none")]
    NoCommand,
    /// An env entry without `=`.
    #[error("invalid environment entry {0:?} (expected NAME=value)")]
    BadEnv(String),
    /// The user is not in the image's `/etc/passwd`.
    #[error("unable to find user {user:?}: no matching entry in the image's /etc/passwd")]
    UnknownUser {
        /// The name.
        user: String,
    },
    /// The group is not in the image's `/etc/group`.
    #[error("unable to find group {group:?}: no matching entry in the image's /etc/group")]
    UnknownGroup {
        /// The name.
        group: String,
    },
}

/// The process part of a container: image config merged with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// `argv`.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// The user.
    pub user: User,
}

/// A user resolved against the image's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, as Docker sets them: the primary group, then
    /// those listing the user in `/etc/group` when no group was given.
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd`, else `/`.
    pub home: String,
}

/// Merges the image's config with the request as `docker run` does:
///
/// - `argv`: `Entrypoint` + (`command` if given, else `Cmd`); a request
///   entrypoint replaces the image's and drops its `Cmd`; an empty one
///   drops both, leaving the request's command alone (dockerd answers "No
///   command specified" to `--entrypoint ""` without one);
/// - environment: `PATH` (Docker's default) and `HOSTNAME`, each replaced
///   in place by the request's then the image's `Env` (the request wins on
///   the same name), then `HOME` from the user's passwd entry if unset;
/// - working directory: the request's, else `WorkingDir`, else `/`;
/// - user: the request's, else `User`, looked up with `lookup`.
pub fn merge(
    image: &ImageConfig,
    req: &RunRequest,
    hostname: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Process, ConfigError> {
    let mut args: Vec<String> = match &req.entrypoint {
        Some(entrypoint) if !entrypoint.is_empty() => entrypoint.clone(),
        Some(_) => Vec::new(),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    if !req.command.is_empty() {
        args.extend(req.command.iter().cloned());
    } else if req.entrypoint.is_none() {
        args.extend(image.cmd.clone().unwrap_or_default());
    }
    if args.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    let name_of = |entry: &str| -> Result<String, ConfigError> {
        entry
            .split_once('=')
            .map(|(name, _)| name.to_string())
            .ok_or_else(|| ConfigError::BadEnv(entry.to_string()))
    };
    // The container's Env: the request's, then the image's not overridden.
    let mut config_env: Vec<String> = req.env.clone();
    let request_names = req
        .env
        .iter()
        .map(|e| name_of(e))
        .collect::<Result<Vec<_>, _>>()?;
    for entry in &image.env {
        if !request_names.contains(&name_of(entry)?) {
            config_env.push(entry.clone());
        }
    }
    let mut env = vec![DEFAULT_PATH.to_string(), format!("HOSTNAME={hostname}")];
    for entry in config_env {
        let name = name_of(&entry)?;
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(n, _)| n) == Some(&name))
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    let spec = req.user.as_deref().or(image.user.as_deref()).unwrap_or("");
    let user = resolve_user(spec, lookup)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let cwd = req
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    Ok(Process {
        args,
        env,
        cwd,
        user,
    })
}

/// One `/etc/passwd` entry.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: fields.first()?.to_string(),
            uid: fields.get(2)?.parse().ok()?,
            gid: fields.get(3)?.parse().ok()?,
            home: fields.get(5).map(|h| h.to_string()).unwrap_or_default(),
        })
    })
}

/// `(name, gid, members)` of each `/etc/group` entry.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let gid = fields.get(2)?.parse().ok()?;
        let members = fields
            .get(3)
            .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
            .unwrap_or_default();
        Some((*fields.first()?, gid, members))
    })
}

/// Resolves `user[:group]` (empty: root) as runc and Docker do: a user by
/// name must be in the image's `/etc/passwd`; a number is looked up there
/// too and taken as it is if absent (group 0, home `/`). Without a group
/// the passwd group is primary and every `/etc/group` entry listing the
/// user is a supplementary group; a group by name must be in `/etc/group`.
pub fn resolve_user(
    spec: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<User, ConfigError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = lookup("/etc/passwd").unwrap_or_default();
    let groups = lookup("/etc/group").unwrap_or_default();
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(&passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(&passwd)
                .find(|e| e.name == user)
                .ok_or_else(|| ConfigError::UnknownUser {
                    user: user.to_string(),
                })?,
        ),
    };
    let uid = entry
        .as_ref()
        .map_or_else(|| user.parse().unwrap_or(0), |e| e.uid);
    let home = entry
        .as_ref()
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    let (gid, additional_gids) = match group {
        Some(g) if !g.is_empty() => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(&groups)
                    .find(|(name, _, _)| *name == g)
                    .map(|(_, gid, _)| gid)
                    .ok_or_else(|| ConfigError::UnknownGroup {
                        group: g.to_string(),
                    })?,
            };
            (gid, Vec::new())
        }
        _ => {
            let gid = entry.as_ref().map_or(0, |e| e.gid);
            let supplementary = match &entry {
                Some(e) => group_entries(&groups)
                    .filter(|(_, _, members)| members.contains(&e.name.as_str()))
                    .map(|(_, gid, _)| gid)
                    .collect(),
                None => Vec::new(),
            };
            (gid, supplementary)
        }
    };
    let mut groups = vec![gid];
    groups.extend(additional_gids.into_iter().filter(|g| *g != gid));
    Ok(User {
        uid,
        gid,
        additional_gids: groups,
        home,
    })
}

/// Reads `file` (absolute, inside the image) from the topmost layer that has
/// it as a regular file, without following symlinks in the layers.
pub fn read_from_layers(lowerdirs: &[PathBuf], file: &str) -> Option<String> {
    let relative = Path::new(file.trim_start_matches('/'));
    for layer in lowerdirs {
        let mut path = layer.clone();
        let mut ok = true;
        let count = relative.components().count();
        for (i, part) in relative.components().enumerate() {
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if i + 1 < count && m.is_dir() => {}
                Ok(m) if i + 1 == count && m.is_file() => {}
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return std::fs::read_to_string(&path).ok();
        }
    }
    None
}

/// The memory cgroup the containers without one of their own share,
/// relative to the cgroup2 root; their cgroups are its children.
pub const SHARED_MEMORY_CGROUP: &str = "hostd/shared";

/// The cgroup of container `id`, relative to the cgroup2 root: under
/// [`SHARED_MEMORY_CGROUP`] when it shares that memory cgroup.
pub fn cgroup_path(id: &str, shared_memory: bool) -> String {
    match shared_memory {
        false => format!("hostd/{id}"),
        true => format!("{SHARED_MEMORY_CGROUP}/{id}"),
    }
}

/// `linux.resources` for `limits`.
pub fn oci_resources(limits: &Limits) -> serde_json::Value {
    let mut resources = serde_json::Map::new();
    if let Some(m) = limits.memory {
        // No swap beyond the memory limit, as Docker's default.
        resources.insert(
            "memory".into(),
            serde_json::json!({ "limit": m, "swap": m }),
        );
    }
    let mut cpu = serde_json::Map::new();
    if let Some(quota) = limits.cpu_quota_us() {
        cpu.insert("quota".into(), quota.into());
        cpu.insert(
            "period".into(),
            mkhost_shared::container::CPU_PERIOD_US.into(),
        );
    }
    if let Some(cpus) = &limits.cpuset_cpus {
        cpu.insert("cpus".into(), cpus.clone().into());
    }
    if let Some(mems) = &limits.cpuset_mems {
        cpu.insert("mems".into(), mems.clone().into());
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), cpu.into());
    }
    if let Some(p) = limits.pids {
        resources.insert("pids".into(), serde_json::json!({ "limit": p }));
    }
    if let Some(w) = limits.cpu_weight {
        resources.insert(
            "unified".into(),
            serde_json::json!({ "cpu.weight": w.to_string() }),
        );
    }
    serde_json::Value::Object(resources)
}

/// The `/etc/hosts` Docker writes for a container without a network
/// address (`--network none`): loopback and the IPv6 multicast names.
pub const HOSTS: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// Docker's name servers when the host has none a container can reach.
const FALLBACK_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// A container's `/etc/resolv.conf` from the host's, as Docker makes it:
/// the host's lines without the loopback name servers (127.0.0.0/8, ::1),
/// which are not reachable from the container's network namespace; with
/// none left, Google's public servers are added.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" || addr.is_empty() {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(FALLBACK_NAMESERVERS);
    }
    out
}

/// The contents of each of [`ETC_FILES`] for a container named `hostname`:
/// `hosts` is Docker's standard lines then `hosts_extra` (the container's
/// own address line); `resolv_conf` is the network's (its DNS server), or
/// else derived from the host's `/etc/resolv.conf` (empty if it has none).
pub fn etc_files(
    hostname: &str,
    hosts_extra: &str,
    resolv_conf_text: Option<&str>,
    host_resolv_conf: &str,
) -> [(&'static str, String); 3] {
    [
        ("hostname", format!("{hostname}\n")),
        ("hosts", format!("{HOSTS}{hosts_extra}")),
        (
            "resolv.conf",
            resolv_conf_text
                .map(str::to_string)
                .unwrap_or_else(|| resolv_conf(host_resolv_conf)),
        ),
    ]
}

/// Resource limits every container inherits from the zygote, which raises
/// its own to these at start, as far as it may (raising a hard limit needs
/// `CAP_SYS_RESOURCE`): what Debian's `docker.service` gives dockerd
/// (`LimitNOFILE=1048576`, `LimitNPROC=infinity`, `LimitCORE=infinity`),
/// and so every Docker container, which inherits them.
pub const CONTAINER_LIMITS: [(crate::os::Limit, u64); 3] = [
    (crate::os::Limit::OpenFiles, 1_048_576),
    (crate::os::Limit::Processes, u64::MAX),
    (crate::os::Limit::CoreSize, u64::MAX),
];

/// The sysctls Docker sets in a container's own network namespace: any
/// user may bind ports below 1024 (without `CAP_NET_BIND_SERVICE`) and
/// open ICMP echo sockets, for `ping` (without `CAP_NET_RAW`).
pub const SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

/// Docker's options for `--tmpfs` mounts, before the user's own.
const TMPFS_OPTIONS: [&str; 3] = ["nosuid", "nodev", "noexec"];

/// The mounts of `spec`, as Docker sets them up: the standard file
/// systems, `/sys/fs/cgroup` (the container's own cgroup namespace,
/// read-only), then the generated `/etc` files (read-only with a read-only
/// root), the `-v` binds (`rbind`, `ro` when asked) and the `--tmpfs`
/// mounts, in that order sorted by depth (stable), so that a mount never
/// hides a deeper one.
fn mounts(spec: &CreateSpec) -> Vec<serde_json::Value> {
    let mut mounts = vec![
        serde_json::json!({ "destination": "/proc", "type": "proc", "source": "proc",
          "options": ["nosuid", "noexec", "nodev"] }),
        serde_json::json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        serde_json::json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
          "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        serde_json::json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
          "options": ["nosuid", "noexec", "nodev", "ro"] }),
        serde_json::json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
          "options": ["ro", "nosuid", "noexec", "nodev"] }),
        serde_json::json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
          "options": ["nosuid", "noexec", "nodev"] }),
        serde_json::json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
          "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
    ];
    let mut user = Vec::new();
    if spec.etc_files {
        for name in ETC_FILES {
            let access = if spec.read_only { "ro" } else { "rw" };
            user.push(serde_json::json!({
                "destination": format!("/etc/{name}"),
                "type": "bind",
                "source": spec.bundle.join(name),
                "options": ["rbind", "rprivate", access]
            }));
        }
    }
    for bind in &spec.binds {
        let access = if bind.read_only { "ro" } else { "rw" };
        user.push(serde_json::json!({
            "destination": bind.target,
            "type": "bind",
            "source": bind.source,
            "options": ["rbind", "rprivate", access]
        }));
    }
    for (path, options) in &spec.tmpfs {
        let mut all: Vec<String> = TMPFS_OPTIONS.iter().map(|o| o.to_string()).collect();
        all.extend(
            options
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string),
        );
        user.push(serde_json::json!({
            "destination": path, "type": "tmpfs", "source": "tmpfs", "options": all
        }));
    }
    let depth = |m: &serde_json::Value| {
        Path::new(m["destination"].as_str().unwrap_or(""))
            .components()
            .count()
    };
    user.sort_by_key(depth);
    mounts.extend(user);
    mounts
}

/// The namespaces of a container: new ones of every kind, except the
/// network namespace, which `netns` decides.
fn namespaces(netns: &NetnsMode) -> serde_json::Value {
    let mut list = vec![serde_json::json!({ "type": "pid" })];
    match netns {
        NetnsMode::Own => list.push(serde_json::json!({ "type": "network" })),
        NetnsMode::Path(path) => list.push(serde_json::json!({ "type": "network", "path": path })),
        NetnsMode::Host => {}
    }
    for kind in ["ipc", "uts", "mount", "cgroup"] {
        list.push(serde_json::json!({ "type": kind }));
    }
    serde_json::Value::Array(list)
}

/// Our annotations for the runtime: the root's overlay, and whether the
/// container shares a memory cgroup.
fn annotations(spec: &CreateSpec) -> BTreeMap<&'static str, String> {
    use crate::runtime::plan::{ROOT_OVERLAY_ANNOTATION, SHARED_MEMORY_ANNOTATION};
    let mut annotations = BTreeMap::new();
    if let Some(options) = &spec.root_overlay {
        annotations.insert(ROOT_OVERLAY_ANNOTATION, options.clone());
    }
    if spec.shared_memory_cgroup {
        annotations.insert(SHARED_MEMORY_ANNOTATION, "true".to_string());
    }
    annotations
}

/// The OCI `config.json` for `spec`: new pid, mount, uts, ipc, network and
/// cgroup namespaces, and what Docker sets up by default (mounts, masked
/// and read-only paths, capabilities, [`SYSCTLS`]; no rlimits: the
/// container inherits [`CONTAINER_LIMITS`] from the zygote); the runtime
/// adds its default seccomp filter. docs/containers.md lists each default.
pub fn oci_config(spec: &CreateSpec) -> serde_json::Value {
    let resources = oci_resources(&spec.limits);
    let caps: Vec<String> = spec
        .capabilities
        .clone()
        .unwrap_or_else(|| DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": {
                "uid": spec.uid, "gid": spec.gid, "additionalGids": spec.additional_gids
            },
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": false,
            "oomScoreAdj": spec.oom_score_adj
        },
        "root": { "path": spec.rootfs, "readonly": spec.read_only },
        "annotations": annotations(spec),
        "hostname": spec.hostname,
        "mounts": mounts(spec),
        "linux": {
            "namespaces": namespaces(&spec.netns),
            "cgroupsPath": cgroup_path(&spec.id, spec.shared_memory_cgroup),
            "resources": resources,
            "sysctl": if spec.netns == NetnsMode::Host {
                BTreeMap::new()
            } else {
                SYSCTLS.iter().copied().collect::<BTreeMap<&str, &str>>()
            },
            "maskedPaths": [
                "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entry: Option<&[&str]>, cmd: Option<&[&str]>, user: Option<&str>) -> ImageConfig {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ImageConfig {
            entrypoint: entry.map(v),
            cmd: cmd.map(v),
            env: vec!["A=1".into(), "B=2".into()],
            working_dir: Some("/srv".into()),
            user: user.map(str::to_string),
            ..ImageConfig::default()
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:44::/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:www\nstaff:x:50:other,www\nwww:x:44:\n";

    fn files(file: &str) -> Option<String> {
        match file {
            "/etc/passwd" => Some(PASSWD.into()),
            "/etc/group" => Some(GROUP.into()),
            _ => None,
        }
    }

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn request(command: &[&str], env: &[&str]) -> RunRequest {
        RunRequest {
            image: "img".into(),
            command: s(command),
            env: s(env),
            ..RunRequest::default()
        }
    }

    #[test]
    fn command_env_and_cwd_merge_like_docker() {
        let img = image(Some(&["/init"]), Some(&["--serve"]), None);
        let p = merge(&img, &request(&[], &["B=3", "C=4"]), "h1", &files).unwrap();
        assert_eq!(p.args, s(&["/init", "--serve"]));
        // Docker: PATH and HOSTNAME first, the request's env, then the
        // image's not overridden; HOME from passwd last.
        assert_eq!(
            p.env,
            s(&[
                DEFAULT_PATH,
                "HOSTNAME=h1",
                "B=3",
                "C=4",
                "A=1",
                "HOME=/root"
            ])
        );
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.user.uid, 0);
        let p = merge(&img, &request(&["--once"], &[]), "h", &files).unwrap();
        assert_eq!(p.args, s(&["/init", "--once"]));
        let none = image(None, None, None);
        assert_eq!(
            merge(&none, &request(&[], &[]), "h", &files),
            Err(ConfigError::NoCommand)
        );
        assert!(matches!(
            merge(&img, &request(&[], &["novalue"]), "h", &files),
            Err(ConfigError::BadEnv(_))
        ));
        // The request's PATH, HOSTNAME and HOME replace the defaults in place.
        let p = merge(
            &img,
            &request(&[], &["HOSTNAME=x", "HOME=/h", "PATH=/bin"]),
            "h",
            &files,
        )
        .unwrap();
        assert_eq!(
            p.env,
            s(&["PATH=/bin", "HOSTNAME=x", "HOME=/h", "A=1", "B=2"])
        );
    }

    #[test]
    fn entrypoint_workdir_and_user_from_the_request() {
        let img = image(Some(&["/init"]), Some(&["--serve"]), Some("www"));
        let mut req = request(&[], &[]);
        req.entrypoint = Some(s(&["/bin/sh"]));
        // A new entrypoint drops the image's Cmd.
        assert_eq!(
            merge(&img, &req, "h", &files).unwrap().args,
            s(&["/bin/sh"])
        );
        req.command = s(&["-c", "true"]);
        assert_eq!(
            merge(&img, &req, "h", &files).unwrap().args,
            s(&["/bin/sh", "-c", "true"])
        );
        // An empty one clears it and drops Cmd too: the request's command
        // alone, or none (as dockerd).
        req.entrypoint = Some(vec![]);
        assert_eq!(
            merge(&img, &req, "h", &files).unwrap().args,
            s(&["-c", "true"])
        );
        req.command.clear();
        assert_eq!(merge(&img, &req, "h", &files), Err(ConfigError::NoCommand));
        req.command = s(&["sh"]);
        req.workdir = Some("/work".into());
        req.user = Some("1000".into());
        let p = merge(&img, &req, "h", &files).unwrap();
        assert_eq!(p.cwd, "/work");
        assert_eq!((p.user.uid, p.user.gid), (1000, 0));
        assert!(p.env.contains(&"HOME=/".to_string()), "{:?}", p.env);
        // The image's user when the request names none.
        req.user = None;
        let p = merge(&img, &req, "h", &files).unwrap();
        assert_eq!((p.user.uid, p.user.gid), (33, 44));
        assert!(p.env.contains(&"HOME=/var/www".to_string()));
    }

    #[test]
    fn users_resolve_like_runc() {
        let user = |spec: &str| {
            resolve_user(spec, &files).map(|u| (u.uid, u.gid, u.additional_gids, u.home))
        };
        assert_eq!(user(""), Ok((0, 0, vec![0], "/root".into())));
        assert_eq!(user("1000"), Ok((1000, 0, vec![0], "/".into())));
        assert_eq!(user("1000:7"), Ok((1000, 7, vec![7], "/".into())));
        // By name, or by a number found in passwd: its group, and the
        // groups listing it as supplementary ones.
        assert_eq!(
            user("www"),
            Ok((33, 44, vec![44, 4, 50], "/var/www".into()))
        );
        assert_eq!(user("33"), user("www"));
        // A group given: that group only.
        assert_eq!(user("www:staff"), Ok((33, 50, vec![50], "/var/www".into())));
        assert_eq!(user("www:7"), Ok((33, 7, vec![7], "/var/www".into())));
        assert_eq!(
            user("nobody"),
            Err(ConfigError::UnknownUser {
                user: "nobody".into()
            })
        );
        assert!(matches!(
            user("0:wheel"),
            Err(ConfigError::UnknownGroup { .. })
        ));
        assert!(matches!(
            resolve_user("www", &|_: &str| None),
            Err(ConfigError::UnknownUser { .. })
        ));
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\noptions edns0\n";
        assert_eq!(
            resolv_conf(host),
            "search lan\nnameserver 10.0.0.1\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\nnameserver ::1\n"),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        let files = etc_files("web", "", None, "nameserver 10.0.0.1\n");
        assert_eq!(files[0], ("hostname", "web\n".to_string()));
        assert!(files[1].1.starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(files[2].1, "nameserver 10.0.0.1\n");
        let files = etc_files(
            "web",
            "172.17.0.2\tweb\n",
            Some("nameserver 172.18.0.1\n"),
            "nameserver 10.0.0.1\n",
        );
        assert!(files[1]
            .1
            .ends_with("ff02::2\tip6-allrouters\n172.17.0.2\tweb\n"));
        assert_eq!(files[2].1, "nameserver 172.18.0.1\n");
    }

    #[test]
    fn config_json_has_dockers_defaults() {
        let spec = CreateSpec {
            id: "0123456789abcdef".into(),
            bundle: "/b".into(),
            lower: Vec::new(),
            rootfs: "/b/rootfs".into(),
            root_overlay: Some("lowerdir=/l,upperdir=/c/upper,workdir=/c/work".into()),
            args: s(&["sh"]),
            env: vec![],
            cwd: "/".into(),
            uid: 33,
            gid: 44,
            additional_gids: vec![4],
            hostname: "h".into(),
            limits: Limits::default(),
            capabilities: Some(s(&["CAP_NET_ADMIN"])),
            read_only: true,
            tmpfs: [("/run", "size=1m"), ("/etc/x", ""), ("/a/b/c", "")]
                .map(|(p, o)| (p.to_string(), o.to_string()))
                .into(),
            binds: vec![
                BindMount {
                    source: "/v/data/_data".into(),
                    target: "/srv/data".into(),
                    read_only: true,
                },
                BindMount {
                    source: "/srv/www".into(),
                    target: "/www".into(),
                    read_only: false,
                },
            ],
            etc_files: true,
            netns: NetnsMode::Path("/run/hostd/netns/x".into()),
            tty: true,
            open_stdin: true,
            console_size: Some((24, 80)),
            oom_score_adj: -5,
            shared_memory_cgroup: false,
        };
        let config = oci_config(&spec);
        assert_eq!(
            config["annotations"]["org.mkhost.rootfs.overlay"],
            "lowerdir=/l,upperdir=/c/upper,workdir=/c/work"
        );
        assert_eq!(config["linux"]["cgroupsPath"], "hostd/0123456789abcdef");
        assert!(config["annotations"]
            .get("org.mkhost.cgroup.shared-memory")
            .is_none());
        let shared = oci_config(&CreateSpec {
            shared_memory_cgroup: true,
            ..spec.clone()
        });
        assert_eq!(
            shared["linux"]["cgroupsPath"],
            "hostd/shared/0123456789abcdef"
        );
        assert_eq!(
            shared["annotations"]["org.mkhost.cgroup.shared-memory"],
            "true"
        );
        assert_eq!(config["process"]["terminal"], true);
        assert_eq!(config["process"]["oomScoreAdj"], -5);
        assert_eq!(
            config["linux"]["namespaces"][1],
            serde_json::json!({ "type": "network", "path": "/run/hostd/netns/x" })
        );
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["process"]["user"]["additionalGids"][0], 4);
        assert_eq!(
            config["process"]["capabilities"]["bounding"][0],
            "CAP_NET_ADMIN"
        );
        let mounts = config["mounts"].as_array().unwrap();
        let find = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).unwrap();
        // Docker's order: the /etc files, binds, then tmpfs mounts, by depth.
        let user: Vec<&str> = mounts[7..]
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            user,
            [
                "/www",
                "/run",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/etc/hosts",
                "/srv/data",
                "/etc/x",
                "/a/b/c"
            ]
        );
        assert_eq!(
            *find("/srv/data"),
            serde_json::json!({ "destination": "/srv/data", "type": "bind",
              "source": "/v/data/_data", "options": ["rbind", "rprivate", "ro"] })
        );
        assert_eq!(find("/www")["options"][2], "rw");
        assert_eq!(
            find("/proc")["options"],
            serde_json::json!(["nosuid", "noexec", "nodev"])
        );
        assert_eq!(
            find("/run")["options"],
            serde_json::json!(["nosuid", "nodev", "noexec", "size=1m"])
        );
        for name in ETC_FILES {
            let m = find(&format!("/etc/{name}"));
            assert_eq!(m["source"], format!("/b/{name}"));
            assert_eq!(m["options"][2], "ro");
        }
        assert!(config["process"].get("rlimits").is_none());
        assert_eq!(
            config["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        // A spec.json from before these fields: Docker's default caps, no
        // /etc mounts.
        let old: CreateSpec = serde_json::from_str(
            r#"{"id":"x","bundle":"/b","rootfs":"/r","args":["sh"],"env":[],"cwd":"/",
               "uid":0,"gid":0,"hostname":"h","limits":{}}"#,
        )
        .unwrap();
        let config = oci_config(&old);
        assert_eq!(
            config["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len(),
            DEFAULT_CAPABILITIES.len()
        );
        assert!(!config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/etc/hosts"));
    }

    #[test]
    fn passwd_is_read_from_the_top_layer_without_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        let low = dir.path().join("low");
        std::fs::create_dir_all(low.join("etc")).unwrap();
        std::fs::write(low.join("etc/passwd"), "low").unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::os::unix::fs::symlink("/etc", top.join("etc")).unwrap();
        let layers = [top, low];
        assert_eq!(
            read_from_layers(&layers, "/etc/passwd").as_deref(),
            Some("low")
        );
        assert_eq!(read_from_layers(&layers, "/etc/group"), None);
    }
}
