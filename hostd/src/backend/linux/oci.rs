//! The OCI `config.json` the Linux runtime gets for a [`CreateSpec`]: what
//! Docker sets up by default (namespaces, mounts, masked and read-only
//! paths, capabilities, sysctls), the container's cgroup and its limits.

use std::collections::BTreeMap;
use std::path::Path;

use mkhost_shared::container::{Limits, DEFAULT_CAPABILITIES};

use crate::backend::spec::{CreateSpec, NetnsMode, ETC_FILES};

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
    use crate::backend::spec::BindMount;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
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
}
