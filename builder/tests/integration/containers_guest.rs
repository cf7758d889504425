//! hostd's containers in a QEMU guest booted from our own image, where cgroup
//! v2 works: a boot-time container declared in the profile, its limits in
//! its cgroup, an OOM kill recorded, a pids limit biting, a limit below the
//! kernel's floor refused with no stray cgroup, and the containers surviving
//! a `kill -9` of hostd (init restarts it; the new daemon re-adopts them).
//! The image sets `[hostd] memory_cgroups = "limited"`: containers with a
//! memory limit get a memory cgroup of their own, the others share one.

use std::time::Duration;

use crate::containers::image_archive;
use crate::support::{self, build_custom, scratch, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Prints `tick N` every 0.2 s.
const TICKER: &str = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";

/// The value of `"key":` in a one-line JSON answer (numbers and strings).
fn json_field(line: &str, key: &str) -> String {
    let pattern = format!("\"{key}\":");
    let start = line
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pattern.len();
    line[start..]
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// The `hostd ps` row of `name`, split into columns.
fn ps_row(guest: &mut Guest, name: &str) -> Vec<String> {
    let table = guest.run("hostd ps", COMMAND_TIMEOUT);
    table
        .iter()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in hostd ps:\n{}", table.join("\n")))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Polls `hostd ps` until `name`'s status column satisfies `check`.
fn wait_status(guest: &mut Guest, name: &str, check: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    loop {
        let row = ps_row(guest, name);
        if check(&row[3]) {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stuck at {row:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn one_line(guest: &mut Guest, command: &str) -> String {
    guest
        .run(command, COMMAND_TIMEOUT)
        .join("\n")
        .trim()
        .to_string()
}

#[test]
fn boot_time_containers_limits_oom_and_readoption() {
    let work = scratch("containers-guest");
    let archive = image_archive(&work, "bb", "bb", "sh");
    let body = format!(
        r#"hostname = "mkhost-ctr"

[hostd]
memory_cgroups = "limited"

[[container]]
name = "ticker"
archive = "{}"
image = "bb"
command = ["sh", "-c", "{TICKER}"]
restart = "always"
memory = "32M"
cpus = 0.5
cpu_weight = 50
pids = 50
"#,
        archive.display()
    );
    let dir = build_custom(&work, "ctr", "qemu.toml", &body);
    let args = support::pxe_args(&dir, "256", "mkhost.dhcp=0");
    let mut guest = Guest::start_interactive(&args, &work);
    guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let started = guest.wait_for("boot-time containers:", BOOT_TIMEOUT);
    assert!(
        started.contains("1 archives imported, started [ticker]") && started.contains("0 errors"),
        "{started}"
    );
    if !guest.log.iter().any(|l| l.contains("debug shell on")) {
        guest.wait_for("debug shell on", BOOT_TIMEOUT);
    }
    std::thread::sleep(Duration::from_millis(500));

    // The image store the boot-time import made (blobs + unpacked layer,
    // on the RAM-backed root) is what the build's RAM budget counted for
    // it: within the budget's rounding up to a MiB, plus a few pages of
    // tmpfs rounding, directories and the store's index.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let estimate_kib = manifest["ram"]["boot_images_mib"].as_u64().unwrap() * 1024;
    let du = one_line(&mut guest, "du -sk /var/lib/hostd");
    let used_kib: u64 = du
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du said {du:?}"));
    assert!(
        used_kib + 1024 > estimate_kib && used_kib <= estimate_kib + 64,
        "store uses {used_kib} KiB, the build counted {estimate_kib} KiB"
    );

    // The boot-time container runs with its limits in its own cgroup.
    let row = wait_status(&mut guest, "ticker", |s| s == "running");
    let (id, pid) = (row[1].clone(), row[4].clone());
    let cg = format!("/sys/fs/cgroup/hostd/{id}");
    let limits = guest.run(
        &format!(
            "cat {cg}/memory.max {cg}/memory.swap.max {cg}/cpu.max {cg}/cpu.weight {cg}/pids.max"
        ),
        COMMAND_TIMEOUT,
    );
    assert_eq!(
        limits,
        ["33554432", "0", "50000 100000", "50", "50"],
        "{limits:?}"
    );
    let procs = one_line(&mut guest, &format!("cat {cg}/cgroup.procs"));
    assert_eq!(procs.lines().next(), Some(pid.as_str()), "{procs}");
    // Inside, the cgroup namespace shows the container its own cgroup as /.
    let inside = one_line(&mut guest, &format!("cat /proc/{pid}/cgroup"));
    assert_eq!(inside, format!("0::/hostd/{id}"));
    // The OOM killer takes a container before the daemon and the zygote
    // (dockerd's -500; init holds the capability this needs), and the
    // container's process has its own 0, not the daemon's value.
    let status = one_line(&mut guest, "hostd status");
    assert!(status.contains(r#""oom_score_adj":-500"#), "{status}");
    let adjs = guest.run(
        &format!(
            "cat /proc/{}/oom_score_adj /proc/$(cat /run/hostd/zygote.pid)/oom_score_adj /proc/{pid}/oom_score_adj",
            json_field(&status, "pid")
        ),
        COMMAND_TIMEOUT,
    );
    assert_eq!(adjs, ["-500", "-500", "0"], "{adjs:?}");
    // init handed boot.json's [hostd] setting to the daemon.
    assert!(status.contains(r#""memory_cgroups":"limited""#), "{status}");
    let logs = guest.run("hostd logs ticker", COMMAND_TIMEOUT);
    assert!(
        logs.iter().any(|l| l.ends_with(" stdout tick 0")),
        "{logs:?}"
    );

    // An OOM kill is recorded.
    guest.run(
        "hostd run -d --name hog --memory 8M bb sh -c 'x=$(head -c 64000000 /dev/zero | tr \"\\0\" a); echo survived'",
        COMMAND_TIMEOUT,
    );
    let hog = wait_status(&mut guest, "hog", |s| s.starts_with("exited"));
    assert_eq!(hog[3], "exited(137,oom)", "{hog:?}");
    let hog_logs = guest.run("hostd logs hog", COMMAND_TIMEOUT).join("\n");
    assert!(!hog_logs.contains("survived"), "{hog_logs}");

    // The pids limit bites.
    guest.run(
        "hostd run -d --name forky --pids 4 bb sh -c 'for i in 1 2 3 4 5 6; do sleep 3 & done; wait'",
        COMMAND_TIMEOUT,
    );
    wait_status(&mut guest, "forky", |s| s.starts_with("exited"));
    let forky = guest.run("hostd logs forky", COMMAND_TIMEOUT).join("\n");
    assert!(
        forky.contains("stderr") && forky.contains("can't fork"),
        "{forky}"
    );

    // Without a memory limit a container shares the memory cgroup
    // hostd/shared, with the cpu, cpuset and pids controllers of its own:
    // no memory.current (memory.pressure is PSI's, in every cgroup).
    guest.run("hostd run -d --name idle bb sleep 1000", COMMAND_TIMEOUT);
    let idle = wait_status(&mut guest, "idle", |s| s == "running");
    let shared = "/sys/fs/cgroup/hostd/shared";
    let layout = guest.run(
        &format!(
            "cat {shared}/cgroup.subtree_control; grep -c memory {shared}/cgroup.controllers; \
             ls {shared}/{id}/ | grep -c '^memory\\.current$'; cat {shared}/{id}/cgroup.procs; \
             test -e /sys/fs/cgroup/hostd/{id} && echo own; \
             grep -o memory /sys/fs/cgroup/hostd/{ticker}/cgroup.controllers",
            id = idle[1],
            ticker = id
        ),
        COMMAND_TIMEOUT,
    );
    assert_eq!(
        layout,
        ["cpuset cpu pids", "1", "0", idle[4].as_str(), "memory"],
        "{layout:?}"
    );
    guest.run("hostd rm -f idle", COMMAND_TIMEOUT);

    // A memory limit below the floor is refused; no cgroup is left.
    let before = one_line(&mut guest, "ls /sys/fs/cgroup/hostd | wc -l");
    let refused = guest
        .run(
            "hostd run --memory 4096 bb true; echo rc=$?",
            COMMAND_TIMEOUT,
        )
        .join("\n");
    assert!(
        refused.contains("below the minimum of 6 MiB") && refused.contains("rc=125"),
        "{refused}"
    );
    assert_eq!(
        one_line(&mut guest, "ls /sys/fs/cgroup/hostd | wc -l"),
        before
    );

    // rm leaves no cgroup behind.
    let hog_id = hog[1].clone();
    guest.run("hostd rm hog; hostd rm forky", COMMAND_TIMEOUT);
    let left = one_line(&mut guest, "ls /sys/fs/cgroup/hostd");
    assert!(!left.contains(&hog_id), "{left}");
    assert!(left.contains(&id), "{left}");

    // kill -9 of the daemon: init restarts it, the container keeps running
    // and the new daemon re-adopts it.
    let status = one_line(&mut guest, "hostd status");
    let daemon = json_field(&status, "pid");
    guest.send_line(&format!("kill -9 {daemon}"));
    guest.wait_for("hostd exited", BOOT_TIMEOUT);
    guest.wait_for("took over zygote", BOOT_TIMEOUT);
    guest.wait_for("re-adopted 1 running containers", BOOT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    let status = one_line(&mut guest, "hostd status");
    assert_ne!(json_field(&status, "pid"), daemon, "{status}");
    assert_eq!(json_field(&status, "containers"), "1", "{status}");
    let row = ps_row(&mut guest, "ticker");
    assert_eq!(
        (row[3].as_str(), row[4].as_str()),
        ("running", pid.as_str())
    );
    let count = |guest: &mut Guest| {
        guest
            .run("hostd logs ticker", COMMAND_TIMEOUT)
            .iter()
            .filter(|l| l.contains(" stdout tick "))
            .count()
    };
    let n = count(&mut guest);
    std::thread::sleep(Duration::from_secs(2));
    assert!(count(&mut guest) > n, "the log stopped after re-adoption");
    // The boot-time container was not started a second time.
    let table = guest.run("hostd ps", COMMAND_TIMEOUT);
    assert_eq!(
        table.iter().filter(|l| l.starts_with("ticker ")).count(),
        1,
        "{table:?}"
    );
}
