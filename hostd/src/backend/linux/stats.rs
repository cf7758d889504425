//! A container's use from its cgroup v2 files (CPU time, memory, pids) and
//! the host's CPU time from `/proc/stat`. A container without a memory
//! cgroup of its own (`hostd --memory-cgroups limited`) has no
//! `memory.current`: its memory is the resident memory of its processes.

use std::path::Path;

use crate::backend::Sample;
use crate::runtime::cgroups::{keyed_in, DEFAULT_ROOT};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The host's CPU time from `/proc/stat`'s first line, in ns.
fn system_ns(stat: &str) -> u64 {
    // USER_HZ is 100 on every Linux this runs on.
    const NS_PER_TICK: u64 = 10_000_000;
    stat.lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .map(|l| l.split_whitespace().skip(1).filter_map(number).sum::<u64>())
        .unwrap_or(0)
        * NS_PER_TICK
}

/// The resident memory (`VmRSS`) of the processes in cgroup `dir`, bytes.
fn resident_bytes(dir: &Path) -> u64 {
    let kib: u64 = read(&dir.join("cgroup.procs"))
        .lines()
        .filter_map(|pid| {
            let status = read(&Path::new("/proc").join(pid.trim()).join("status"));
            let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            number(line.trim().trim_end_matches("kB"))
        })
        .sum();
    kib * 1024
}

/// The host's memory in bytes (`MemTotal`).
pub fn host_memory() -> u64 {
    super::limits::meminfo_kib(Path::new("/proc"), "MemTotal").map_or(0, |kib| kib * 1024)
}

/// Samples the container whose cgroup is `cgroup` (relative to the cgroup2
/// root) now; `None` when the cgroup is not there (not running, or a host
/// without cgroup v2).
pub fn sample(cgroup: &str) -> Option<Sample> {
    let dir = Path::new(DEFAULT_ROOT).join(cgroup);
    let cpu = read(&dir.join("cpu.stat"));
    if cpu.is_empty() {
        return None;
    }
    let memory_stat = read(&dir.join("memory.stat"));
    let limit = |file: &str| number(&read(&dir.join(file)));
    Some(Sample {
        read: mkhost_shared::time::rfc3339_now(),
        cpu_ns: keyed_in(&cpu, "usage_usec").unwrap_or(0) * 1000,
        system_ns: system_ns(&read(Path::new("/proc/stat"))),
        memory: limit("memory.current").unwrap_or_else(|| resident_bytes(&dir)),
        inactive_file: keyed_in(&memory_stat, "inactive_file").unwrap_or(0),
        memory_limit: limit("memory.max").unwrap_or_else(host_memory),
        pids: (
            limit("pids.current").unwrap_or(0),
            limit("pids.max").unwrap_or(0),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cpu_time_from_proc_stat() {
        assert_eq!(
            system_ns("cpu  1 2 3 4 0 0 0 0 0 0\ncpu0 1 1 1 1\n"),
            100_000_000
        );
        assert_eq!(system_ns("garbage"), 0);
        assert_eq!(
            keyed_in("usage_usec 42\nuser_usec 1\n", "usage_usec"),
            Some(42)
        );
    }

    #[test]
    fn the_hosts_memory_is_read_from_meminfo() {
        // The limit `docker stats` shows for a container without one, and
        // `docker info`'s MemTotal.
        assert!(host_memory() > 64 << 20, "{}", host_memory());
    }

    #[test]
    fn memory_without_a_memory_cgroup_is_the_processes_resident_memory() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(
            dir.path().join("cgroup.procs"),
            format!("{me}\n999999999\n"),
        )
        .unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let got = resident_bytes(dir.path());
        // This process's RSS moves a little between the two reads; a
        // pid that is gone counts nothing.
        assert!(
            got > 0 && got.abs_diff(rss * 1024) < 4 << 20,
            "{got} vs {rss} KiB"
        );
    }
}
