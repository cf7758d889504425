//! What bounds the number of containers on a host: the descriptors each
//! running container holds in the daemon and in the zygote, the kernel's
//! task limits, the namespace and inotify limits, and free memory. Reports
//! them for `status` and refuses a start that would run into one, with the
//! limit named, before anything of the container is made.

use std::fs;
use std::path::Path;

use mkhost_shared::control::{HostLimits, Usage, DAEMON_OOM_SCORE_ADJ};

/// Descriptors a running container holds in the daemon: its init's pidfd
/// and the read ends of its stdout and stderr (one more with `-i`).
pub const DAEMON_FILES_PER_CONTAINER: u64 = 3;

/// Descriptors a running container holds in the zygote: the read ends of
/// its stdout and stderr, which keep its pipes open while no daemon runs
/// (one more with `-i`).
pub const ZYGOTE_FILES_PER_CONTAINER: u64 = 2;

/// Descriptors the daemon keeps free for everything else: clients, the
/// image store, logs, execs.
pub const DAEMON_FILES_RESERVE: u64 = 256;

/// Descriptors the zygote keeps free: its connections and creators.
pub const ZYGOTE_FILES_RESERVE: u64 = 64;

/// Tasks kept free for the host's own processes.
const TASKS_RESERVE: u64 = 64;

/// Memory below which no container is started, KiB.
const MIN_MEMORY_KIB: u64 = 16 * 1024;

/// The namespaces a container makes (`user.max_<kind>_namespaces`).
const NAMESPACE_KINDS: [&str; 5] = ["mnt", "pid", "net", "ipc", "uts"];

/// Checks that one more container fits, given the `watched` containers
/// the daemon holds descriptors for and its open-file limit: an error names
/// the limit and how to raise it.
pub fn check_room(watched: u64, files_limit: u64) -> Result<(), String> {
    check_room_in(Path::new("/proc"), watched, files_limit)
}

/// [`check_room`] with the kernel's files under `proc`.
fn check_room_in(proc: &Path, watched: u64, files_limit: u64) -> Result<(), String> {
    let daemon_files = watched * DAEMON_FILES_PER_CONTAINER + DAEMON_FILES_RESERVE;
    if daemon_files + DAEMON_FILES_PER_CONTAINER + 1 > files_limit {
        return Err(format!(
            "no room for another container: the daemon's open-file limit \
             (RLIMIT_NOFILE) is {files_limit} and {watched} running containers hold \
             {DAEMON_FILES_PER_CONTAINER} descriptors each in it; raise the hard limit \
             (LimitNOFILE=, ulimit -Hn; hostd raises it to fs.nr_open when it has \
             CAP_SYS_RESOURCE, as on a host booted from mkhost) or remove containers"
        ));
    }
    if let (Some(tasks), limit) = (tasks_running(proc), tasks_limit(proc)) {
        if tasks + TASKS_RESERVE >= limit {
            return Err(format!(
                "no room for another container: {tasks} tasks run and the kernel allows \
                 {limit} (the smaller of kernel.pid_max and kernel.threads-max); raise \
                 kernel.pid_max in the profile's [sysctl], or remove containers"
            ));
        }
    }
    if let Some(available) = memory_available_kib(proc) {
        if available < MIN_MEMORY_KIB {
            return Err(format!(
                "no room for another container: the host has {} MiB of memory \
                 available, below the {} MiB kept free; remove containers or give \
                 the host more memory",
                available / 1024,
                MIN_MEMORY_KIB / 1024
            ));
        }
    }
    Ok(())
}

/// Gathers the limits for `status`: the daemon's and the zygote's
/// descriptors (`zygote` is its pid), tasks, namespaces, inotify and memory,
/// and how many more containers fit.
pub fn host_limits(zygote: i32, watched: u64, files_limit: u64) -> HostLimits {
    let proc = Path::new("/proc");
    let daemon_files = Usage {
        used: open_files(&proc.join("self")),
        limit: files_limit,
    };
    let zygote_dir = proc.join(zygote.to_string());
    let zygote_files = Usage {
        used: open_files(&zygote_dir),
        limit: files_limit_of(&zygote_dir).unwrap_or(0),
    };
    let tasks = Usage {
        used: tasks_running(proc).unwrap_or(0),
        limit: tasks_limit(proc),
    };
    let namespaces_limit = NAMESPACE_KINDS
        .iter()
        .filter_map(|kind| sysctl(proc, &format!("user/max_{kind}_namespaces")))
        .min()
        .unwrap_or(u64::MAX);
    let memory_available_kib = memory_available_kib(proc).unwrap_or(0);
    // Each bound: (room left, its name).
    let room = |usage: Usage, reserve: u64, per: u64| {
        usage.limit.saturating_sub(usage.used + reserve) / per
    };
    let mut bounds = [
        (
            room(
                daemon_files,
                DAEMON_FILES_RESERVE,
                DAEMON_FILES_PER_CONTAINER,
            ),
            "the daemon's open-file limit",
        ),
        (
            room(
                zygote_files,
                ZYGOTE_FILES_RESERVE,
                ZYGOTE_FILES_PER_CONTAINER,
            ),
            "the zygote's open-file limit",
        ),
        (room(tasks, TASKS_RESERVE, 1), "kernel.pid_max/threads-max"),
        (
            namespaces_limit.saturating_sub(watched),
            "user.max_*_namespaces",
        ),
    ];
    bounds.sort();
    let (room, bound_by) = bounds[0];
    HostLimits {
        daemon_files,
        zygote_files,
        daemon_files_per_container: DAEMON_FILES_PER_CONTAINER,
        zygote_files_per_container: ZYGOTE_FILES_PER_CONTAINER,
        tasks,
        namespaces_limit,
        inotify_instances: sysctl(proc, "fs/inotify/max_user_instances").unwrap_or(0),
        inotify_watches: sysctl(proc, "fs/inotify/max_user_watches").unwrap_or(0),
        memory_available_kib,
        room,
        bound_by: bound_by.to_string(),
        oom_score_adj: fs::read_to_string(proc.join("self/oom_score_adj"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0),
    }
}

/// Lowers the daemon's own `oom_score_adj` to
/// [`DAEMON_OOM_SCORE_ADJ`] (dockerd's), before it forks the zygote, which
/// inherits it: when memory runs out, the kernel kills a container, not
/// the process that holds ten thousand of them. Containers set theirs
/// (`process.oomScoreAdj`, 0 by default). Lowering needs
/// `CAP_SYS_RESOURCE`; without it the daemon says so and runs on.
pub fn protect_from_oom_killer() -> Result<(), String> {
    let path = "/proc/self/oom_score_adj";
    fs::write(path, DAEMON_OOM_SCORE_ADJ.to_string()).map_err(|e| {
        format!("cannot lower {path} to {DAEMON_OOM_SCORE_ADJ} ({e}): the OOM killer may pick the daemon before a container")
    })
}

/// Open descriptors of the process whose `/proc` directory is `dir`.
fn open_files(dir: &Path) -> u64 {
    fs::read_dir(dir.join("fd")).map_or(0, |d| d.count() as u64)
}

/// The soft `Max open files` of `/proc/<pid>/limits`.
fn files_limit_of(dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(dir.join("limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// A numeric sysctl under `/proc/sys`.
fn sysctl(proc: &Path, name: &str) -> Option<u64> {
    fs::read_to_string(proc.join("sys").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The tasks (threads) on the host: the fourth field of `/proc/loadavg`
/// is `running/total`.
fn tasks_running(proc: &Path) -> Option<u64> {
    let text = fs::read_to_string(proc.join("loadavg")).ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// The smaller of `kernel.pid_max` and `kernel.threads-max`.
fn tasks_limit(proc: &Path) -> u64 {
    [
        sysctl(proc, "kernel/pid_max"),
        sysctl(proc, "kernel/threads-max"),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(u64::MAX)
}

/// `MemAvailable` of `/proc/meminfo`, KiB.
fn memory_available_kib(proc: &Path) -> Option<u64> {
    let text = fs::read_to_string(proc.join("meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_descriptor_table_is_refused_with_the_limit_named() {
        assert!(check_room(0, 20_000).is_ok());
        // 20,000 descriptors: about 6,580 containers at 3 each plus the reserve.
        assert!(check_room(6_500, 20_000).is_ok());
        let err = check_room(6_600, 20_000).unwrap_err();
        assert!(
            err.contains("RLIMIT_NOFILE") && err.contains("20000"),
            "{err}"
        );
        assert!(err.contains("6600 running containers"), "{err}");
    }

    /// A fake `/proc` with `tasks` tasks against `pid_max` and
    /// `available` KiB of memory.
    fn fake_proc(tasks: u64, pid_max: u64, available: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path();
        fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        fs::write(
            proc.join("loadavg"),
            format!("0.00 0.01 0.05 1/{tasks} 99\n"),
        )
        .unwrap();
        fs::write(proc.join("sys/kernel/pid_max"), format!("{pid_max}\n")).unwrap();
        fs::write(proc.join("sys/kernel/threads-max"), "1000000\n").unwrap();
        fs::write(
            proc.join("meminfo"),
            format!("MemTotal: 8000000 kB\nMemAvailable: {available} kB\n"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn tasks_and_memory_are_checked_with_the_limit_named() {
        let fine = fake_proc(500, 32_768, 4_000_000);
        assert!(check_room_in(fine.path(), 10, 20_000).is_ok());
        let full = fake_proc(32_710, 32_768, 4_000_000);
        let err = check_room_in(full.path(), 10, 20_000).unwrap_err();
        assert!(
            err.contains("32710 tasks")
                && err.contains("kernel.pid_max")
                && err.contains("[sysctl]"),
            "{err}"
        );
        let low = fake_proc(500, 32_768, 8 * 1024);
        let err = check_room_in(low.path(), 10, 20_000).unwrap_err();
        assert!(err.contains("8 MiB of memory"), "{err}");
    }

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path();
        fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        fs::write(proc.join("loadavg"), "0.00 0.01 0.05 2/345 6789\n").unwrap();
        fs::write(proc.join("sys/kernel/pid_max"), "4194304\n").unwrap();
        fs::write(proc.join("sys/kernel/threads-max"), "95000\n").unwrap();
        fs::write(
            proc.join("meminfo"),
            "MemTotal:       8000000 kB\nMemAvailable:    123456 kB\n",
        )
        .unwrap();
        fs::write(
            proc.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            20000                20000                files\n",
        )
        .unwrap();
        assert_eq!(tasks_running(proc), Some(345));
        assert_eq!(tasks_limit(proc), 95_000);
        assert_eq!(memory_available_kib(proc), Some(123_456));
        assert_eq!(files_limit_of(proc), Some(20_000));
        // Missing or garbled files give nothing rather than a wrong number.
        fs::write(proc.join("loadavg"), "garbage").unwrap();
        assert_eq!(tasks_running(proc), None);
        assert_eq!(files_limit_of(&proc.join("none")), None);
    }

    #[test]
    fn this_process_is_counted() {
        let limits = host_limits(i32::try_from(std::process::id()).unwrap(), 0, 20_000);
        assert!(limits.daemon_files.used > 2, "{limits:?}");
        assert!(limits.tasks.used > 0 && limits.tasks.limit > limits.tasks.used);
        assert!(limits.room > 0 && !limits.bound_by.is_empty(), "{limits:?}");
    }
}
