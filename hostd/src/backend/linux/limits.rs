//! What bounds the number of containers on a host: the descriptors each
//! running container holds in the daemon and in the zygote, the kernel's
//! task limits, the namespace and inotify limits, and memory. Reports
//! them for `status` and refuses a start that would run into one, with the
//! limit named, before anything of the container is made.
//!
//! Memory per container is not a constant: Linux keeps, in every memory
//! cgroup, a slot for each superblock of the host (the shrinker arrays of
//! Linux 6.1, some 20 bytes per slot as measured in a guest), and every
//! container brings superblocks (its root, proc, sysfs, mqueue, devpts,
//! two tmpfs) and, unless it shares one, a memory cgroup. So the next
//! container costs [`CONTAINER_KIB`] plus slots for the memory cgroups and
//! superblocks already there ([`next_container_kib`]), and `room` adds
//! these costs up until the available memory is spent.

use std::fs;
use std::path::Path;

use crate::runtime::cgroups::DEFAULT_ROOT as CGROUP_ROOT;
use mkhost_shared::boot_config::MemoryCgroups;
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

/// Memory a sleeping container takes besides the shrinker slots, KiB: its
/// process, page tables, kernel stack, namespaces, mounts, cgroup and the
/// files of its writable layer (ci/bench-density-guest: 10,000 containers
/// sharing a memory cgroup took 533 KiB each of `MemAvailable`).
pub const CONTAINER_KIB: u64 = 540;

/// Superblocks a container makes: the overlay root, proc, sysfs, mqueue,
/// devpts, and the tmpfs of `/dev` and `/dev/shm`.
pub const SUPERBLOCKS_PER_CONTAINER: u64 = 7;

/// Bytes Linux keeps per memory cgroup per superblock, fitted to the
/// guest's unreclaimable slab with containers that each had a memory
/// cgroup (0.75 MiB per container at 4,000, 1.35 MiB at 8,142: 21.7
/// bytes). Bare tmpfs mounts measured 12 (2,000 memory cgroups made each
/// new mount cost 24 KiB more); the arrays are rounded up to powers of two.
pub const SHRINKER_SLOT_BYTES: u64 = 20;

/// The host's memory cgroups and superblocks now: what the next container's
/// shrinker slots depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCounts {
    /// Memory cgroups: every cgroup (`/proc/cgroups`) but the containers'
    /// under the shared memory cgroup (its `cgroup.stat`).
    pub memory_cgroups: u64,
    /// Superblocks: the host's mounts plus [`SUPERBLOCKS_PER_CONTAINER`]
    /// for each running container (their mounts are in their own
    /// namespaces).
    pub superblocks: u64,
}

/// What one more container costs, KiB: [`CONTAINER_KIB`], a slot in every
/// memory cgroup for each of its superblocks, and with a memory cgroup of
/// its own (`own_memory_cgroup`), a slot there for every superblock.
pub fn next_container_kib(counts: KernelCounts, own_memory_cgroup: bool) -> u64 {
    let mut slots = SUPERBLOCKS_PER_CONTAINER * counts.memory_cgroups;
    if own_memory_cgroup {
        slots += counts.superblocks + SUPERBLOCKS_PER_CONTAINER;
    }
    CONTAINER_KIB + (slots * SHRINKER_SLOT_BYTES).div_ceil(1024)
}

/// How many more containers fit in `available_kib` (less 16 MiB kept free),
/// each costing [`next_container_kib`] as the counts grow.
pub fn memory_room(available_kib: u64, mut counts: KernelCounts, own_memory_cgroup: bool) -> u64 {
    let mut left = available_kib.saturating_sub(MIN_MEMORY_KIB);
    let mut room = 0;
    loop {
        let cost = next_container_kib(counts, own_memory_cgroup);
        if cost > left {
            return room;
        }
        left -= cost;
        room += 1;
        counts.memory_cgroups += u64::from(own_memory_cgroup);
        counts.superblocks += SUPERBLOCKS_PER_CONTAINER;
    }
}

/// The superblocks of the host's own mount table under `proc`: its
/// distinct devices, since bind mounts, and the network namespace file
/// each networked container has there, share theirs. Reading it takes
/// time in proportion to the table, which grows with those files: a caller
/// that asks at every start keeps the answer a while ([`HostSuperblocks`]).
pub fn host_superblocks(proc: &Path) -> u64 {
    let table = fs::read_to_string(proc.join("self/mountinfo")).unwrap_or_default();
    let devices: std::collections::BTreeSet<String> = crate::os::parse_mountinfo(&table)
        .into_iter()
        .map(|mount| mount.device)
        .collect();
    devices.len() as u64
}

/// [`host_superblocks`], read again only when the last count is older than
/// [`HostSuperblocks::MAX_AGE`]: container roots are mounted in their own
/// namespaces, so the host's superblocks change rarely (a disk mounted),
/// and a count a few seconds old misjudges the next container's cost by a
/// few slots at most.
#[derive(Debug, Default)]
pub struct HostSuperblocks {
    last: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl HostSuperblocks {
    /// How long a count is used.
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

    /// The host's superblocks, counted at most [`Self::MAX_AGE`] ago.
    pub fn recent(&self) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, count)) if at.elapsed() < Self::MAX_AGE => count,
            _ => {
                let count = host_superblocks(Path::new("/proc"));
                *last = Some((std::time::Instant::now(), count));
                count
            }
        }
    }
}

/// [`KernelCounts`] from the kernel's files under `proc` and the cgroup2
/// mount `cgroups`, with `watched` containers running and `host_superblocks`
/// in the host's mount table.
fn kernel_counts(proc: &Path, cgroups: &Path, watched: u64, host_superblocks: u64) -> KernelCounts {
    // cgroup v2 counts every cgroup of the hierarchy for each controller.
    let all_cgroups: u64 = fs::read_to_string(proc.join("cgroups"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.first() == Some(&"memory"))
                    .then(|| fields.get(2)?.parse().ok())
                    .flatten()
            })
        })
        .unwrap_or(0);
    let shared = super::oci::SHARED_MEMORY_CGROUP;
    let without_memory =
        crate::runtime::cgroups::keyed(&cgroups.join(shared).join("cgroup.stat"), "nr_descendants")
            .unwrap_or(0);
    let memory_cgroups = all_cgroups.saturating_sub(without_memory);
    KernelCounts {
        memory_cgroups,
        superblocks: host_superblocks + SUPERBLOCKS_PER_CONTAINER * watched,
    }
}

/// The namespaces a container makes (`user.max_<kind>_namespaces`).
const NAMESPACE_KINDS: [&str; 5] = ["mnt", "pid", "net", "ipc", "uts"];

/// Checks that one more container fits, given the `watched` containers
/// the daemon holds descriptors for, its open-file limit, and whether the
/// container gets a memory cgroup of its own: an error names the limit
/// and how to raise it.
pub fn check_room(
    watched: u64,
    files_limit: u64,
    own_memory_cgroup: bool,
    host_superblocks: &HostSuperblocks,
) -> Result<(), String> {
    check_room_in(
        Path::new("/proc"),
        Path::new(CGROUP_ROOT),
        watched,
        files_limit,
        own_memory_cgroup,
        host_superblocks.recent(),
    )
}

/// [`check_room`] with the kernel's files under `proc` and `cgroups`, and
/// `host_superblocks` in the host's mount table.
fn check_room_in(
    proc: &Path,
    cgroups: &Path,
    watched: u64,
    files_limit: u64,
    own_memory_cgroup: bool,
    host_superblocks: u64,
) -> Result<(), String> {
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
        let counts = kernel_counts(proc, cgroups, watched, host_superblocks);
        let cost = next_container_kib(counts, own_memory_cgroup);
        if available < MIN_MEMORY_KIB + cost {
            return Err(format!(
                "no room for another container: the host has {} MiB of memory \
                 available, and the next container would take about {cost} KiB \
                 ({} memory cgroups and {} superblocks on the host) with {} MiB kept \
                 free; remove containers, give the host more memory, or, for many \
                 containers, give a memory cgroup only to those with a memory limit \
                 (profile [hostd] memory_cgroups = \"limited\")",
                available / 1024,
                counts.memory_cgroups,
                counts.superblocks,
                MIN_MEMORY_KIB / 1024
            ));
        }
    }
    Ok(())
}

/// Gathers the limits for `status`: the daemon's and the zygote's
/// descriptors (`zygote` is its pid), tasks, namespaces, inotify and memory,
/// and how many more containers fit (each with a memory cgroup of its own
/// when `memory_cgroups` is [`MemoryCgroups::Each`]).
pub fn host_limits(
    zygote: i32,
    watched: u64,
    files_limit: u64,
    memory_cgroups: MemoryCgroups,
) -> HostLimits {
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
    let own_memory_cgroup = memory_cgroups == MemoryCgroups::Each;
    let counts = kernel_counts(
        proc,
        Path::new(CGROUP_ROOT),
        watched,
        host_superblocks(proc),
    );
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
        (
            memory_room(memory_available_kib, counts, own_memory_cgroup),
            "memory",
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
        memory_cgroups: memory_cgroups.as_str().to_string(),
        memory_cgroups_now: counts.memory_cgroups,
        next_container_kib: next_container_kib(counts, own_memory_cgroup),
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
    meminfo_kib(proc, "MemAvailable")
}

/// `key`'s KiB in `/proc/meminfo` (under `proc`).
pub fn meminfo_kib(proc: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(proc.join("meminfo")).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_descriptor_table_is_refused_with_the_limit_named() {
        let proc = fake_proc(500, 4_194_304, 64 << 20);
        let check = |watched| check_room_in(proc.path(), proc.path(), watched, 20_000, true, 1);
        assert!(check(0).is_ok());
        // 20,000 descriptors: about 6,580 containers at 3 each plus the reserve.
        assert!(check(6_500).is_ok());
        let err = check(6_600).unwrap_err();
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
        assert!(check_room_in(fine.path(), fine.path(), 10, 20_000, true, 1).is_ok());
        let full = fake_proc(32_710, 32_768, 4_000_000);
        let err = check_room_in(full.path(), full.path(), 10, 20_000, true, 1).unwrap_err();
        assert!(
            err.contains("32710 tasks")
                && err.contains("kernel.pid_max")
                && err.contains("[sysctl]"),
            "{err}"
        );
        let low = fake_proc(500, 32_768, 8 * 1024);
        let err = check_room_in(low.path(), low.path(), 10, 20_000, true, 1).unwrap_err();
        assert!(err.contains("8 MiB of memory"), "{err}");
    }

    #[test]
    fn memory_per_container_grows_with_memory_cgroups_and_superblocks() {
        let empty = KernelCounts {
            memory_cgroups: 10,
            superblocks: 40,
        };
        // Few containers: about the constant.
        assert_eq!(next_container_kib(empty, false), CONTAINER_KIB + 2);
        assert_eq!(next_container_kib(empty, true), CONTAINER_KIB + 3);
        // 8,000 containers, each with a memory cgroup: its 7 superblocks
        // take a slot in 8,000 memory cgroups, its memory cgroup one for
        // 56,000 superblocks: some 2.7 MiB (the guest's average at 8,142,
        // over containers that each cost less than the next, was 1.35 MiB
        // of slab).
        let full = KernelCounts {
            memory_cgroups: 8_010,
            superblocks: 56_040,
        };
        let each = next_container_kib(full, true);
        assert!((2_600..2_800).contains(&each), "{each}");
        // Sharing a memory cgroup, the next one costs only its own slots
        // in the memory cgroups there are.
        let shared = KernelCounts {
            memory_cgroups: 10,
            superblocks: 56_040,
        };
        assert_eq!(next_container_kib(shared, false), CONTAINER_KIB + 2);

        // Room: the sum of growing costs, not available / first cost.
        let available = 14 << 20; // 14 GiB, in KiB
        let room_each = memory_room(available, empty, true);
        let room_shared = memory_room(available, empty, false);
        assert!(room_each < room_shared / 3, "{room_each} vs {room_shared}");
        // The 14 GiB guest with a memory cgroup each ran out at 8,142.
        assert!((7_500..10_000).contains(&room_each), "{room_each}");
        assert_eq!(memory_room(MIN_MEMORY_KIB, empty, false), 0);
        assert_eq!(
            memory_room(MIN_MEMORY_KIB + CONTAINER_KIB + 2, empty, false),
            1
        );
    }

    #[test]
    fn host_superblocks_are_the_mount_tables_distinct_devices() {
        let proc = tempfile::tempdir().unwrap();
        fs::create_dir_all(proc.path().join("self")).unwrap();
        // The root, a bind mount of a directory of it, /proc, and three
        // network namespace files (one nsfs superblock for all).
        fs::write(
            proc.path().join("self/mountinfo"),
            "21 1 253:0 / / rw,relatime - ext4 /dev/vda rw\n\
             22 21 253:0 /srv/data /data rw,relatime - ext4 /dev/vda rw\n\
             23 21 0:22 / /proc rw,nosuid - proc proc rw\n\
             30 21 0:4 net:[4026532301] /run/hostd/netns/a rw - nsfs nsfs rw\n\
             31 21 0:4 net:[4026532302] /run/hostd/netns/b rw - nsfs nsfs rw\n\
             32 21 0:4 net:[4026532303] /run/hostd/netns/c rw - nsfs nsfs rw\n",
        )
        .unwrap();
        assert_eq!(host_superblocks(proc.path()), 3);
        // Unreadable: none counted (the memory check still runs).
        assert_eq!(host_superblocks(&proc.path().join("missing")), 0);
    }

    #[test]
    fn a_start_that_memory_cannot_hold_is_refused_naming_the_fix() {
        let proc = fake_proc(500, 4_194_304, MIN_MEMORY_KIB + CONTAINER_KIB + 100);
        fs::create_dir_all(proc.path().join("self")).unwrap();
        fs::write(
            proc.path().join("cgroups"),
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
             cpu\t0\t9000\t1\nmemory\t0\t9000\t1\npids\t0\t9000\t1\n",
        )
        .unwrap();
        fs::write(
            proc.path().join("self/mountinfo"),
            "1 0 0:1 / / rw - x x rw\n",
        )
        .unwrap();
        let counts = kernel_counts(proc.path(), proc.path(), 100, host_superblocks(proc.path()));
        assert_eq!(
            counts,
            KernelCounts {
                memory_cgroups: 9_000,
                superblocks: 701,
            }
        );
        // 9,000 memory cgroups: each new superblock costs a slot in each.
        let err = check_room_in(proc.path(), proc.path(), 100, 1 << 20, false, 1).unwrap_err();
        assert!(err.contains("9000 memory cgroups"), "{err}");
        assert!(err.contains("memory_cgroups = \"limited\""), "{err}");
        // Containers under the shared memory cgroup have none of their own.
        let shared = proc.path().join("hostd/shared");
        fs::create_dir_all(&shared).unwrap();
        fs::write(
            shared.join("cgroup.stat"),
            "nr_descendants 8990\nnr_dying_descendants 0\n",
        )
        .unwrap();
        assert_eq!(
            kernel_counts(proc.path(), proc.path(), 100, 1).memory_cgroups,
            10
        );
        let roomy = fake_proc(500, 4_194_304, MIN_MEMORY_KIB + 2 * CONTAINER_KIB);
        assert!(check_room_in(roomy.path(), roomy.path(), 100, 1 << 20, false, 1).is_ok());
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
        assert_eq!(meminfo_kib(proc, "MemTotal"), Some(8_000_000));
        assert_eq!(meminfo_kib(proc, "Mem"), None);
        assert_eq!(files_limit_of(proc), Some(20_000));
        // Missing or garbled files give nothing rather than a wrong number.
        fs::write(proc.join("loadavg"), "garbage").unwrap();
        assert_eq!(tasks_running(proc), None);
        assert_eq!(files_limit_of(&proc.join("none")), None);
    }

    #[test]
    fn this_process_is_counted() {
        let limits = host_limits(
            i32::try_from(std::process::id()).unwrap(),
            0,
            20_000,
            MemoryCgroups::Each,
        );
        assert!(limits.daemon_files.used > 2, "{limits:?}");
        assert!(limits.tasks.used > 0 && limits.tasks.limit > limits.tasks.used);
        assert!(limits.room > 0 && !limits.bound_by.is_empty(), "{limits:?}");
    }
}
