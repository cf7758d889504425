//! The state disk in QEMU guests booted from our own image, with extra
//! virtio disks made here (sparse files, `sgdisk`, `mkfs.ext4`):
//!
//! 1. a blank disk named by serial with `format = "if-blank"`: init formats
//!    it (ext4), mounts it, says so in the ready line and `hostd status`;
//!    an image is imported, a named volume written, a container with
//!    `--restart always` and one with `no` started; the guest is powered
//!    down cleanly (ACPI power button);
//! 2. the same disk again: not formatted again (e2fsck ran), the image is
//!    still listed, the volume's file reads back, the `always` container is
//!    running again on its own and the `no` one is recorded as exited; then
//!    QEMU is killed (a power cut) while a 24 MiB image is being imported
//!    and a container appends to a volume;
//! 3. the same disk after the cut: e2fsck replays the journal, the store
//!    lists the first image and runs it, the volume still reads back, the
//!    `always` container is running again, and importing the big image
//!    (again, or for the first time if the cut came before its commit)
//!    gives an image that runs with all its bytes;
//! 4. a disk holding an ext4 file system made elsewhere, with a file, named
//!    on the command line (`mkhost.state=`): not formatted, the file is still
//!    there next to the state directories;
//! 5. a partition label two disks share: state stays in RAM and the report
//!    names both partitions.
//!
//! 6. a file system with errors that `e2fsck -p` leaves for a person:
//!    reported, state in RAM, the disk not formatted, the host up.
//!
//! And a mirror (`mirror = ["serial:m1", "serial:m2"]`, a second test):
//!
//! 1. two blank disks with `format = "if-blank"`: init creates the md RAID 1
//!    `/dev/md127` with mdadm, makes ext4 on it and mounts it; `/proc/mdstat`
//!    shows raid1 on two disks; an image is imported and a volume written;
//! 2. only `m2` attached: the array is assembled degraded, mounted, the ready
//!    line and the report say so, the image and the volume's file are there;
//! 3. both again: `m1` is out of date, mdadm leaves it out (still degraded);
//!    `mdadm /dev/md127 --add` from the shell makes it a mirror of two again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::containers::{image_archive, image_archive_with};
use crate::support::{self, build_custom, ready_fields, run, scratch, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A raw sparse disk of `mib` MiB at `work/name.img` (all zeros: blank).
fn disk(work: &Path, name: &str, mib: u32) -> PathBuf {
    let path = work.join(format!("{name}.img"));
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(u64::from(mib) << 20))
        .unwrap();
    path
}

/// QEMU arguments attaching `file` as a virtio disk with `serial`.
fn virtio_disk(file: &Path, serial: &str) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=none,id={serial},format=raw,file={}", file.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive={serial},serial={serial}"),
    ]
}

fn boot(dir: &Path, work: &Path, cmdline: &str, disks: &[(&Path, &str)]) -> (Guest, String) {
    let mut args = support::pxe_args(dir, "384", &format!("mkhost.dhcp=0 {cmdline}"));
    for (file, serial) in disks {
        args.extend(virtio_disk(file, serial));
    }
    let mut guest = Guest::start_interactive(&args, work);
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    if !guest.log.iter().any(|l| l.contains("debug shell on")) {
        guest.wait_for("debug shell on", BOOT_TIMEOUT);
    }
    std::thread::sleep(Duration::from_millis(500));
    (guest, ready)
}

/// Waits until `command`'s output has a line for which `check` holds.
fn wait_until(guest: &mut Guest, command: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = joined(guest, command);
        if out.lines().any(&check) {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "{command}: {out}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether the guest printed `word` at the end of a line that is not the
/// echo of the typed command. hostd's log shares the console, so a line of
/// it may have been cut by the output (`hostd: kept`).
fn printed(out: &str, word: &str) -> bool {
    out.lines()
        .any(|l| l.trim_end().ends_with(word) && !l.contains("echo "))
}

fn joined(guest: &mut Guest, command: &str) -> String {
    guest.run(command, COMMAND_TIMEOUT).join("\n")
}

/// Imports the test image `bb` and writes `text` to the file `f` of the
/// named volume `data`.
fn import_and_write(guest: &mut Guest, text: &str) {
    let imported = joined(
        guest,
        "hostd import /usr/share/state-test/bb.tar; echo rc=$?",
    );
    assert!(imported.contains("rc=0"), "{imported}");
    let wrote = joined(
        guest,
        &format!("hostd run --rm -v data:/d bb sh -c 'echo {text} > /d/f'; echo rc=$?"),
    );
    assert!(wrote.contains("rc=0"), "{wrote}");
}

fn power_down(guest: &mut Guest) {
    let answer = guest.monitor("system_powerdown");
    assert!(!answer.contains("Error"), "{answer}");
    let exit = guest.wait_exit(Duration::from_secs(120));
    assert!(exit.success(), "QEMU exited with {exit}");
    assert!(
        guest.log.iter().any(|l| l.contains("shutdown: unmounted ")),
        "{}",
        guest.log.join("\n")
    );
}

#[test]
fn state_disk_is_formatted_once_survives_a_reboot_and_is_never_guessed() {
    let work = scratch("state-guest");
    let archive = image_archive(&work, "bb", "bb", "sh");
    // An image with 24 MiB of noise: its import takes long enough under TCG
    // for a power cut to land in it.
    let big = image_archive_with(&work.join("big"), "big", "big", "sh", &|rootfs| {
        let noise: Vec<u8> = (0..24u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(rootfs.join("noise"), noise).unwrap();
    });
    let body = format!(
        r#"hostname = "mkhost-state"

[boot]
min_ram_mib = 256

[state]
disk = "serial:state1"
format = "if-blank"
wait_ms = 5000

[[files]]
dest = "/usr/share/state-test/bb.tar"
source = "{}"

[[files]]
dest = "/usr/share/state-test/big.tar"
source = "{}"
"#,
        archive.display(),
        big.display()
    );
    let dir = build_custom(&work, "state", "lab.toml", &body);
    let state1 = disk(&work, "state1", 256);

    // 1. First boot: blank disk, formatted, mounted, used.
    let (mut guest, ready) = boot(&dir, &work, "", &[(&state1, "state1")]);
    assert_eq!(
        ready_fields(&ready)["state"],
        "/dev/vda(ext4,formatted)",
        "{ready}"
    );
    let status = joined(&mut guest, "hostd status");
    assert!(
        status.contains(r#""state":{"persistent":true,"device":"/dev/vda","filesystem":"ext4""#)
            && status.contains(r#""formatted":true"#),
        "{status}"
    );
    let mounts = joined(&mut guest, "cat /proc/mounts");
    for target in [
        "/var/lib/mkhost-state",
        "/var/lib/hostd ",
        "/var/lib/hostd-volumes",
        "/var/lib/hostd-containers",
    ] {
        assert!(
            mounts.contains(&format!("/dev/vda {target}")),
            "{target}: {mounts}"
        );
    }
    import_and_write(&mut guest, "kept");
    let started = joined(
        &mut guest,
        "hostd run -d --name keeper --restart always bb sh -c 'echo up; exec sleep 100000' && \
         hostd run -d --name once bb sleep 100000; echo rc=$?",
    );
    assert!(started.contains("rc=0"), "{started}");
    power_down(&mut guest);
    drop(guest);

    // 2. Second boot: the same disk, checked and mounted, not formatted.
    let (mut guest, ready) = boot(&dir, &work, "", &[(&state1, "state1")]);
    assert_eq!(ready_fields(&ready)["state"], "/dev/vda(ext4)", "{ready}");
    assert!(
        guest
            .log
            .iter()
            .any(|l| l.contains("state: e2fsck -p /dev/vda: exit 0")),
        "{}",
        guest.log.join("\n")
    );
    let images = joined(&mut guest, "hostd images");
    assert!(images.contains("bb"), "{images}");
    let read = joined(&mut guest, "hostd run --rm -v data:/d bb cat /d/f");
    assert!(printed(&read, "kept"), "{read}");
    // The host log of both boots is on the disk.
    let log = joined(&mut guest, "cat /var/lib/mkhost-state/log/hostd.log");
    assert_eq!(log.matches("---- boot").count(), 2, "{log}");
    assert!(log.contains("formatted now"), "{log}");
    // The `always` container came back by itself; `no` is recorded exited.
    wait_until(&mut guest, "hostd ps", |l| {
        l.starts_with("keeper ") && l.contains("running")
    });
    let logs = joined(&mut guest, "hostd logs keeper");
    assert_eq!(
        logs.lines().filter(|l| l.ends_with(" stdout up")).count(),
        2,
        "{logs}"
    );
    let once = joined(&mut guest, "hostd ps --json");
    assert!(once.contains("the host restarted while it ran"), "{once}");

    // A power cut while an image is imported and a volume is written.
    let writing = joined(
        &mut guest,
        "hostd run -d --name writer -v data:/d bb sh -c \
         'i=0; while true; do echo line$i >> /d/log; i=$((i+1)); done'; echo rc=$?",
    );
    assert!(writing.contains("rc=0"), "{writing}");
    guest.send_line("hostd import /usr/share/state-test/big.tar");
    guest.wait_for(
        "hostd import /usr/share/state-test/big.tar",
        COMMAND_TIMEOUT,
    );
    std::thread::sleep(Duration::from_millis(1500));
    drop(guest);

    // 3. After the cut: consistent, and the containers start.
    let (mut guest, ready) = boot(&dir, &work, "", &[(&state1, "state1")]);
    assert_eq!(ready_fields(&ready)["state"], "/dev/vda(ext4)", "{ready}");
    let images = joined(&mut guest, "hostd images");
    assert!(images.contains("bb"), "{images}");
    eprintln!(
        "after the cut the big image was {}",
        if images.contains("big") {
            "committed"
        } else {
            "not committed"
        }
    );
    let ran = joined(&mut guest, "hostd run --rm bb sh -c 'echo still-runs'");
    assert!(printed(&ran, "still-runs"), "{ran}");
    let read = joined(&mut guest, "hostd run --rm -v data:/d bb cat /d/f");
    assert!(printed(&read, "kept"), "{read}");
    wait_until(&mut guest, "hostd ps", |l| {
        l.starts_with("keeper ") && l.contains("running")
    });
    let imported = joined(
        &mut guest,
        "hostd import /usr/share/state-test/big.tar; echo rc=$?",
    );
    assert!(imported.contains("rc=0"), "{imported}");
    let noise = joined(
        &mut guest,
        "hostd run --rm big sh -c 'busybox wc -c < /noise'",
    );
    assert!(printed(&noise, "25165824"), "{noise}");
    power_down(&mut guest);
    drop(guest);

    // 4. A disk with an ext4 made elsewhere, holding a file: not formatted.
    let content = work.join("old-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), "old data\n").unwrap();
    let old = disk(&work, "old", 128);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "old", "-d"])
        .arg(&content)
        .arg(&old));
    let (mut guest, ready) = boot(&dir, &work, "mkhost.state=serial:old", &[(&old, "old")]);
    assert_eq!(ready_fields(&ready)["state"], "/dev/vda(ext4)", "{ready}");
    let hello = joined(&mut guest, "cat /var/lib/mkhost-state/hello.txt");
    assert!(hello.contains("old data"), "{hello}");
    let report = joined(&mut guest, "cat /run/mkhost/state.json");
    assert!(report.contains("\"formatted\": false"), "{report}");
    drop(guest);

    // 5. One label on two disks: nothing is chosen, state stays in RAM.
    let (a, b) = (disk(&work, "twin-a", 128), disk(&work, "twin-b", 128));
    for d in [&a, &b] {
        run(Command::new("sgdisk")
            .args(["-n", "1:0:0", "-c", "1:shared"])
            .arg(d));
    }
    let (mut guest, ready) = boot(
        &dir,
        &work,
        "mkhost.state=label:shared mkhost.state.format=if-blank",
        &[(&a, "twina"), (&b, "twinb")],
    );
    let state = &ready_fields(&ready)["state"];
    assert!(
        state.starts_with("ram(label:shared_matches_2_devices"),
        "{ready}"
    );
    let report = joined(&mut guest, "cat /run/mkhost/state.json");
    assert!(
        report.contains("\"persistent\": false")
            && report.contains("/dev/vda1")
            && report.contains("/dev/vdb1"),
        "{report}"
    );
    let mounts = joined(&mut guest, "cat /proc/mounts");
    assert!(!mounts.contains("/var/lib/mkhost-state"), "{mounts}");
    drop(guest);

    // 6. A file system with errors e2fsck -p will not repair (the root
    //    directory's inode cleared): reported, state in RAM, the disk not
    //    formatted, the host up.
    let broken = disk(&work, "broken", 128);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&broken));
    // ... and the superblock marked as having errors, as the kernel marks
    // it when it finds them, so `e2fsck -p` does not skip it as clean.
    for request in ["clri <2>", "ssv state 2"] {
        run(Command::new("debugfs")
            .args(["-w", "-R", request])
            .arg(&broken));
    }
    // `e2fsck -p` may make its safe repairs before it gives up; what must
    // not happen is a new file system: the UUID stays.
    let uuid = |disk: &Path| {
        run(Command::new("dumpe2fs").arg("-h").arg(disk))
            .lines()
            .find(|l| l.starts_with("Filesystem UUID:"))
            .map(str::to_string)
            .unwrap()
    };
    let before = uuid(&broken);
    let (mut guest, ready) = boot(
        &dir,
        &work,
        "mkhost.state=serial:broken",
        &[(&broken, "broken")],
    );
    let state = &ready_fields(&ready)["state"];
    assert!(state.starts_with("ram("), "{ready}");
    let report = joined(&mut guest, "cat /run/mkhost/state.json");
    assert!(
        report.contains("\"persistent\": false") && report.contains("manual repair"),
        "{report}"
    );
    let images = joined(&mut guest, "hostd images; echo rc=$?");
    assert!(images.contains("rc=0"), "{images}");
    drop(guest);
    assert_eq!(uuid(&broken), before, "the broken disk was formatted");
    let _ = std::fs::remove_dir_all(&work);
}

/// Boots with the mirror's `disks`: the ready line says
/// `/dev/md127(ext4,{state})`, `/proc/mdstat` shows raid1 with `members`
/// (`[2/2]`), and the array is mounted. Prints init's state lines.
fn boot_mirror(
    dir: &Path,
    work: &Path,
    disks: &[(&Path, &str)],
    state: &str,
    members: &str,
) -> Guest {
    let (mut guest, ready) = boot(dir, work, "", disks);
    let log = guest.log.join("\n");
    assert_eq!(
        ready_fields(&ready)["state"],
        format!("/dev/md127(ext4,{state})"),
        "{ready}\n{log}"
    );
    for line in log
        .lines()
        .filter(|l| l.contains("state:") || l.contains("modprobe"))
    {
        eprintln!("guest: {line}");
    }
    let mdstat = joined(&mut guest, "cat /proc/mdstat");
    eprintln!("{mdstat}");
    assert!(
        mdstat.contains("md127 : active raid1") && mdstat.contains(members),
        "{mdstat}"
    );
    let mounts = joined(&mut guest, "cat /proc/mounts");
    assert!(
        mounts.contains("/dev/md127 /var/lib/mkhost-state ext4"),
        "{mounts}"
    );
    guest
}

#[test]
fn a_mirror_is_created_from_two_blank_disks_and_runs_degraded_on_one() {
    let work = scratch("state-mirror");
    let archive = image_archive(&work, "bb", "bb", "sh");
    let body = format!(
        r#"hostname = "mkhost-mirror"

[boot]
min_ram_mib = 256

[state]
mirror = ["serial:m1", "serial:m2"]
format = "if-blank"
wait_ms = 5000

[[files]]
dest = "/usr/share/state-test/bb.tar"
source = "{}"
"#,
        archive.display()
    );
    let dir = build_custom(&work, "mirror", "lab.toml", &body);
    let (m1, m2) = (disk(&work, "m1", 128), disk(&work, "m2", 128));

    // 1. Two blank disks: the mirror is created, formatted and mounted.
    let mut guest = boot_mirror(
        &dir,
        &work,
        &[(&m1, "m1"), (&m2, "m2")],
        "formatted",
        "[2/2]",
    );
    import_and_write(&mut guest, "mirrored");
    power_down(&mut guest);
    drop(guest);

    // 2. Only m2: assembled degraded, the file reads back.
    let mut guest = boot_mirror(&dir, &work, &[(&m2, "m2")], "degraded", "[2/1]");
    let report = joined(&mut guest, "cat /run/mkhost/state.json");
    assert!(
        report.contains("\"degraded\": true") && report.contains("serial:m1 is missing"),
        "{report}"
    );
    let read = joined(&mut guest, "hostd run --rm -v data:/d bb cat /d/f");
    assert!(read.lines().any(|l| l.trim() == "mirrored"), "{read}");
    power_down(&mut guest);
    drop(guest);

    // 3. Both again: m1 is out of date (m2 ran alone), so mdadm leaves it
    // out and the array stays degraded; the operator adds it back as
    // docs/state.md says, and the mirror resyncs to two disks.
    let mut guest = boot_mirror(
        &dir,
        &work,
        &[(&m1, "m1"), (&m2, "m2")],
        "degraded",
        "[2/1]",
    );
    let added = joined(&mut guest, "mdadm /dev/md127 --add /dev/vda; echo rc=$?");
    assert!(added.contains("rc=0"), "{added}");
    wait_until(&mut guest, "cat /proc/mdstat", |l| l.contains("[2/2] [UU]"));
    let read = joined(&mut guest, "cat /var/lib/mkhost-state/volumes/data/_data/f");
    assert!(read.lines().any(|l| l.trim() == "mirrored"), "{read}");
    power_down(&mut guest);
    drop(guest);
    let _ = std::fs::remove_dir_all(&work);
}
