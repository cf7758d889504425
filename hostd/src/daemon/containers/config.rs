//! Pure first pass of `run`: the image config merged with the request, the
//! user resolved against the image's `/etc/passwd`, and the OCI
//! `config.json` the runtime gets. Nothing here touches the system except
//! reading `/etc/passwd` and `/etc/group` from the image's layers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use mkhost_shared::container::Limits;
use mkhost_store::ImageConfig;

/// `PATH` when neither the image nor the request sets one (Docker's).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the zygote needs to create one container: everything is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    /// Container id (runtime id too).
    pub id: String,
    /// Bundle directory (`config.json` is written there).
    pub bundle: PathBuf,
    /// The mounted root file system.
    pub rootfs: PathBuf,
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
    /// Host name.
    pub hostname: String,
    /// Limits (applied when the host has cgroup v2).
    pub limits: Limits,
}

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
    #[error("unknown user {user:?}: not found in the image's /etc/passwd")]
    UnknownUser {
        /// The name.
        user: String,
    },
    /// The group is not in the image's `/etc/group`.
    #[error("unknown group {group:?}: not found in the image's /etc/group")]
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
    /// uid and gid.
    pub user: (u32, u32),
}

/// Merges: `Entrypoint` + (`command` if given, else `Cmd`); the image's `Env`
/// then `env` (same name: the request wins); `WorkingDir` (default `/`);
/// `User` looked up with `lookup`.
pub fn merge(
    image: &ImageConfig,
    command: &[String],
    env: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Process, ConfigError> {
    let mut args: Vec<String> = image.entrypoint.clone().unwrap_or_default();
    if command.is_empty() {
        args.extend(image.cmd.clone().unwrap_or_default());
    } else {
        args.extend(command.iter().cloned());
    }
    if args.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    let mut merged: Vec<String> = Vec::new();
    for entry in image.env.iter().chain(env) {
        let Some((name, _)) = entry.split_once('=') else {
            return Err(ConfigError::BadEnv(entry.clone()));
        };
        let prefix = format!("{name}=");
        merged.retain(|e| !e.starts_with(&prefix));
        merged.push(entry.clone());
    }
    if !merged.iter().any(|e| e.starts_with("PATH=")) {
        merged.insert(0, DEFAULT_PATH.to_string());
    }
    let user = match image.user.as_deref() {
        None => (0, 0),
        Some(user) => resolve_user(user, lookup)?,
    };
    Ok(Process {
        args,
        env: merged,
        cwd: image.working_dir.clone().unwrap_or_else(|| "/".into()),
        user,
    })
}

/// Resolves `user[:group]`: numbers as they are, names through the image's
/// `/etc/passwd` and `/etc/group` (`lookup("/etc/passwd")` gives the text).
/// A user given by name gets its passwd group unless a group is given; a
/// user given by number gets group 0.
pub fn resolve_user(
    spec: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(u32, u32), ConfigError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let find = |file: &str, name: &str| -> Option<Vec<String>> {
        lookup(file)?.lines().find_map(|line| {
            let fields: Vec<String> = line.split(':').map(str::to_string).collect();
            (fields.first().map(String::as_str) == Some(name)).then_some(fields)
        })
    };
    let (uid, passwd_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, 0),
        Err(_) => {
            let unknown = || ConfigError::UnknownUser {
                user: user.to_string(),
            };
            let fields = find("/etc/passwd", user).ok_or_else(unknown)?;
            let uid = fields
                .get(2)
                .and_then(|s| s.parse().ok())
                .ok_or_else(unknown)?;
            let gid = fields
                .get(3)
                .and_then(|s| s.parse().ok())
                .ok_or_else(unknown)?;
            (uid, gid)
        }
    };
    let gid = match group {
        None => passwd_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let unknown = || ConfigError::UnknownGroup {
                    group: g.to_string(),
                };
                find("/etc/group", g)
                    .and_then(|f| f.get(2).and_then(|s| s.parse().ok()))
                    .ok_or_else(unknown)?
            }
        },
    };
    Ok((uid, gid))
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

/// The cgroup of container `id`, relative to the cgroup2 root.
pub fn cgroup_path(id: &str) -> String {
    format!("hostd/{id}")
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

/// Docker's default capability set.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI `config.json` for `spec`: new pid, mount, uts, ipc, network and
/// cgroup namespaces, the standard mounts, masked and read-only paths as
/// runc's default spec, Docker's default capabilities; the runtime adds its
/// default seccomp filter.
pub fn oci_config(spec: &CreateSpec) -> serde_json::Value {
    let resources = oci_resources(&spec.limits);
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": spec.uid, "gid": spec.gid },
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": false
        },
        "root": { "path": spec.rootfs, "readonly": false },
        "hostname": spec.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "cgroupsPath": cgroup_path(&spec.id),
            "resources": resources,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
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

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:44::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    fn files(file: &str) -> Option<String> {
        match file {
            "/etc/passwd" => Some(PASSWD.into()),
            "/etc/group" => Some(GROUP.into()),
            _ => None,
        }
    }

    #[test]
    fn command_env_and_cwd_merge_like_docker() {
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let img = image(Some(&["/init"]), Some(&["--serve"]), None);
        let p = merge(&img, &[], &s(&["B=3", "C=4"]), &files).unwrap();
        assert_eq!(p.args, s(&["/init", "--serve"]));
        assert_eq!(p.env, s(&[DEFAULT_PATH, "A=1", "B=3", "C=4"]));
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.user, (0, 0));
        let p = merge(&img, &s(&["--once"]), &[], &files).unwrap();
        assert_eq!(p.args, s(&["/init", "--once"]));
        let none = image(None, None, None);
        assert_eq!(merge(&none, &[], &[], &files), Err(ConfigError::NoCommand));
        assert!(matches!(
            merge(&img, &[], &s(&["novalue"]), &files),
            Err(ConfigError::BadEnv(_))
        ));
    }

    #[test]
    fn users_resolve_by_number_or_name() {
        assert_eq!(resolve_user("1000", &files), Ok((1000, 0)));
        assert_eq!(resolve_user("1000:7", &files), Ok((1000, 7)));
        assert_eq!(resolve_user("www", &files), Ok((33, 44)));
        assert_eq!(resolve_user("www:staff", &files), Ok((33, 50)));
        assert_eq!(
            resolve_user("nobody", &files),
            Err(ConfigError::UnknownUser {
                user: "nobody".into()
            })
        );
        assert!(matches!(
            resolve_user("0:wheel", &files),
            Err(ConfigError::UnknownGroup { .. })
        ));
        assert!(matches!(
            resolve_user("www", &|_: &str| None),
            Err(ConfigError::UnknownUser { .. })
        ));
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
