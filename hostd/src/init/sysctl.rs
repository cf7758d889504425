//! Kernel tunables from the profile (`boot.json`'s `sysctl` table), written
//! under `/proc/sys`.
//!
//! A key is `net.ipv4.ip_forward` (dots) or `net/ipv4/ip_forward` (slashes,
//! for names that contain dots, like VLAN interfaces). [`sysctl_path`] maps
//! and checks it; [`apply`] writes every entry and collects the failures, since
//! a tunable the running kernel lacks must not stop the boot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file of `key` below `proc_sys` (`/proc/sys`), or why the key is bad.
pub fn sysctl_path(proc_sys: &Path, key: &str) -> Result<PathBuf, String> {
    let rel = if key.contains('/') {
        key.trim_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    let ok = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && rel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
    if ok {
        Ok(proc_sys.join(rel))
    } else {
        Err(format!("bad sysctl name {key:?}"))
    }
}

/// Writes every entry; returns how many were applied and the failures.
pub fn apply(proc_sys: &Path, settings: &BTreeMap<String, String>) -> (usize, Vec<String>) {
    let mut applied = 0;
    let mut failed = Vec::new();
    for (key, value) in settings {
        match sysctl_path(proc_sys, key) {
            Ok(path) => match std::fs::write(&path, format!("{value}\n")) {
                Ok(()) => applied += 1,
                Err(e) => failed.push(format!("{key}={value}: {e}")),
            },
            Err(why) => failed.push(why),
        }
    }
    (applied, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys_paths() {
        let base = Path::new("/proc/sys");
        assert_eq!(
            sysctl_path(base, "net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path(base, "net/ipv4/conf/eth0.100/forwarding").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        for bad in ["", "..", "net..ipv4", "net/../../etc", "a b", "x/./y"] {
            assert!(sysctl_path(base, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn apply_writes_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        let mut map = BTreeMap::new();
        map.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
        map.insert("net.core.somaxconn".to_string(), "4096".to_string());
        map.insert("bad..key".to_string(), "1".to_string());
        let (applied, failed) = apply(dir.path(), &map);
        assert_eq!(applied, 1);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("net/ipv4/ip_forward")).unwrap(),
            "1\n"
        );
    }
}
