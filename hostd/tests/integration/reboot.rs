//! Containers across a reboot, simulated: the daemon, the zygote and every
//! container process are killed with SIGKILL, the run-time state directory
//! (`--state`) is unmounted and wiped, the containers directory
//! (`--containers`) and the store are kept, and a new daemon starts.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hostd::daemon::containers::Record;

use crate::common::{ok, overlay_mounts_under, zygote_pid, Daemon, HOSTD};
use crate::containers::{alive, build_image, find, hostd, hostd_run, ps, wait_for};

/// Counts its starts in its writable layer (`/boots`) and logs `boot N`.
const COUNTER: &str =
    "read n < /boots || n=0; n=$((n+1)); echo $n > /boots; echo boot $n; while true; do sleep 1; done";

/// The `boot N` lines of a container's log.
fn boots(socket: &Path, name: &str) -> Vec<String> {
    ok(&hostd(socket, &["logs", name]))
        .lines()
        .filter_map(|l| l.split_once(" stdout ").map(|(_, t)| t.to_string()))
        .filter(|t| t.starts_with("boot "))
        .collect()
}

fn wait_boots(socket: &Path, name: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let b = boots(socket, name);
        if b.len() >= n {
            return b;
        }
        assert!(Instant::now() < deadline, "{name} logged {b:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a power cut does to the processes and the RAM: every process of
/// the old run is killed (daemon, zygote, containers), everything mounted
/// under `work/state` is unmounted and the directory removed.
fn power_cut(work: &Path, daemon: Daemon<'_>, records: &[Record]) {
    let zygote = zygote_pid(work).expect("a zygote");
    daemon.kill9();
    let mut pids: Vec<i32> = records.iter().map(|r| r.pid).filter(|p| *p > 0).collect();
    pids.push(zygote);
    for pid in &pids {
        let _ = hostd::os::kill(*pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes of the old run survive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let needle = work.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    for proc_dir in fs::read_dir("/proc").unwrap().flatten() {
        let name = proc_dir.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || name == me {
            continue;
        }
        let cmdline = fs::read(proc_dir.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&needle) || !alive(name.parse().unwrap()),
            "process {name} of the old run survives"
        );
    }
    let state = work.join("state");
    for _ in 0..5 {
        for line in overlay_mounts_under(&state) {
            if let Some(target) = line.split(' ').nth(4) {
                let _ = hostd::os::unmount(Path::new(target), hostd::os::UnmountFlags::DETACH);
            }
        }
    }
    assert!(overlay_mounts_under(&state).is_empty());
    fs::remove_dir_all(&state).unwrap();
}

/// The containers the test runs itself.
const NAMES: [&str; 7] = [
    "web",
    "kept",
    "parked",
    "paused",
    "once",
    "retry",
    "layerless",
];

fn id_of(socket: &Path, name: &str) -> String {
    find(socket, name).id
}

#[test]
fn containers_come_back_after_a_reboot_by_their_restart_policy() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    // A boot-time container (no restart policy): it runs once per boot.
    let manifest = work.join("containers.json");
    let archive = work.join("bb.tar");
    let json = serde_json::json!({
        "containers": [{ "image": "bb", "name": "greeter",
                         "command": ["sh", "-c", "echo booted"], "pull": "never" }]
    });
    fs::write(&manifest, json.to_string()).unwrap();
    let flag = ["--boot-manifest", manifest.to_str().unwrap()];
    let first = Daemon::start(work, Path::new(HOSTD), &[]);
    let socket = first.socket();
    ok(&hostd(&socket, &["import", archive.to_str().unwrap()]));
    // Restarted with the manifest, as init would after the import.
    first.terminate();
    let first = Daemon::start(work, Path::new(HOSTD), &flag);
    wait_for(&socket, "greeter", "ran", |r| r.status == "exited");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["bb", "sh", "-c", COUNTER]);
        ok(&hostd_run(&socket, &all));
    };
    run(&["--name", "web", "--restart", "always", "-p", "18080:80"]);
    run(&["--name", "kept", "--restart", "unless-stopped"]);
    run(&["--name", "parked", "--restart", "unless-stopped"]);
    run(&["--name", "paused", "--restart", "always"]);
    run(&["--name", "once"]);
    run(&["--name", "retry", "--restart", "on-failure"]);
    run(&["--name", "layerless", "--restart", "always"]);
    for name in NAMES {
        assert_eq!(wait_boots(&socket, name, 1), ["boot 1"], "{name}");
    }
    for name in ["parked", "paused"] {
        ok(&hostd(&socket, &["stop", "-t", "1", name]));
        let r = find(&socket, name);
        assert!(r.stopped_by_user && r.status == "exited", "{r:?}");
    }
    let before: Vec<Record> = ps(&socket);
    let web = find(&socket, "web");
    let web_address = web.network.as_ref().and_then(|n| n.address);
    assert!(web_address.is_some(), "{web:?}");
    let containers = work.join("containers");
    let layer = |name: &str| containers.join(id_of(&socket, name)).join("upper");
    assert_eq!(
        fs::read_to_string(layer("web").join("boots")).unwrap(),
        "1\n"
    );
    let layerless = layer("layerless");

    power_cut(work, first, &before);

    // What a power cut may leave: a container directory without a record
    // (its `run` never answered) and a truncated record.
    let unfinished = containers.join("0123456789abcdef");
    fs::create_dir_all(unfinished.join("upper")).unwrap();
    fs::write(unfinished.join("spec.json"), b"{}").unwrap();
    let truncated = containers.join("fedcba9876543210");
    fs::create_dir_all(&truncated).unwrap();
    fs::write(truncated.join("state.json"), br#"{"id":"fedcba98"#).unwrap();
    // And a record whose writable layer is gone (a damaged disk).
    fs::remove_dir_all(&layerless).unwrap();

    let second = Daemon::start(work, Path::new(HOSTD), &flag);
    let log = second.output();
    assert!(
        log.contains("0123456789abcdef: a container whose creation was cut off"),
        "{log}"
    );
    assert!(!unfinished.exists());
    assert!(
        log.contains("skipping container directory") && log.contains("fedcba9876543210"),
        "{log}"
    );

    // always and running unless-stopped: running again, new pids, same
    // names, the second start in their logs, their layer kept.
    for name in ["web", "kept", "paused"] {
        let old = before.iter().find(|r| r.name == name).unwrap();
        let r = wait_for(&socket, name, "running again", |r| r.status == "running");
        assert_ne!(r.pid, old.pid, "{name}");
        assert_eq!(r.id, old.id);
        // `paused` too: the user stopped it, but `always` comes back after
        // a reboot, as with Docker.
        assert!(!r.stopped_by_user, "{r:?}");
        assert_eq!(wait_boots(&socket, name, 2), ["boot 1", "boot 2"], "{name}");
    }
    assert_eq!(
        fs::read_to_string(layer("web").join("boots")).unwrap(),
        "2\n"
    );
    // Its network again: the same address and port.
    let web2 = find(&socket, "web");
    let net = web2.network.clone().unwrap();
    assert_eq!(net.address, web_address, "{web2:?}");
    assert_eq!(net.ports, web.network.unwrap().ports);
    assert!(Path::new(net.netns.as_deref().unwrap()).exists());
    // unless-stopped that the user stopped: stays stopped.
    let parked = find(&socket, "parked");
    assert_eq!(parked.status, "exited", "{parked:?}");
    assert!(parked.stopped_by_user);
    assert_eq!(boots(&socket, "parked"), ["boot 1"]);
    // no and on-failure that were running: exited, and why.
    for name in ["once", "retry"] {
        let r = find(&socket, name);
        assert_eq!(
            (r.status.as_str(), r.exit_code, r.pid),
            ("exited", Some(255), 0),
            "{r:?}"
        );
        assert!(
            r.error
                .as_deref()
                .unwrap_or_default()
                .contains("host restarted"),
            "{r:?}"
        );
    }
    // The damaged one is reported, the daemon is fine.
    let r = wait_for(&socket, "layerless", "given up", |r| r.status == "exited");
    assert!(
        r.error
            .as_deref()
            .unwrap_or_default()
            .contains("writable layer"),
        "{r:?}"
    );
    // The boot-time container ran once more, in this boot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok(&hostd(&socket, &["logs", "greeter"]))
        .matches("stdout booted")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "greeter did not run in the new boot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(&socket, "greeter", "ran again", |r| r.status == "exited");
    // A container left exited comes back by hand: root and network made again.
    ok(&hostd(&socket, &["start", "parked"]));
    assert_eq!(wait_boots(&socket, "parked", 2), ["boot 1", "boot 2"]);
    assert!(!find(&socket, "parked").stopped_by_user);

    for name in NAMES.iter().chain(&["greeter"]) {
        ok(&hostd(&socket, &["rm", "-f", name]));
    }
    assert!(ps(&socket).is_empty());
    assert!(overlay_mounts_under(&work.join("state")).is_empty());
    fs::remove_dir_all(&truncated).unwrap();
    assert_eq!(fs::read_dir(&containers).unwrap().count(), 0);
    second.terminate();
}
