//! The state disk in QEMU guests booted from our own image, with extra
//! virtio disks made here (sparse files, `sgdisk`, `mkfs.ext4`):
//!
//! 1. a blank disk named by serial with `format = "if-blank"`: init formats
//!    it (ext4), mounts it, says so in the ready line and `hostd status`;
//!    an image is imported and a named volume written; the guest is powered
//!    down cleanly (ACPI power button);
//! 2. the same disk again: not formatted again (e2fsck ran), the image is
//!    still listed, the volume's file reads back;
//! 3. a disk holding an ext4 file system made elsewhere, with a file, named
//!    on the command line (`mkhost.state=`): not formatted, the file is still
//!    there next to the state directories;
//! 4. a partition label two disks share: state stays in RAM and the report
//!    names both partitions.
//!
//! Not covered here: mirrors (not implemented), a file system with errors
//! (e2fsck exit >= 4), QEMU killed in the middle of a write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::containers::image_archive;
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
    let mut args = support::pxe_args(dir, "256", &format!("mkhost.dhcp=0 {cmdline}"));
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

fn joined(guest: &mut Guest, command: &str) -> String {
    guest.run(command, COMMAND_TIMEOUT).join("\n")
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
    let body = format!(
        r#"hostname = "mkhost-state"

[state]
disk = "serial:state1"
format = "if-blank"
wait_ms = 5000

[[files]]
dest = "/usr/share/state-test/bb.tar"
source = "{}"
"#,
        archive.display()
    );
    let dir = build_custom(&work, "state", "qemu.toml", &body);
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
    let imported = joined(
        &mut guest,
        "hostd import /usr/share/state-test/bb.tar; echo rc=$?",
    );
    assert!(imported.contains("rc=0"), "{imported}");
    let wrote = joined(
        &mut guest,
        "hostd run --rm -v data:/d bb sh -c 'echo kept > /d/f'; echo rc=$?",
    );
    assert!(wrote.contains("rc=0"), "{wrote}");
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
    assert!(read.lines().any(|l| l.trim() == "kept"), "{read}");
    power_down(&mut guest);
    drop(guest);

    // 3. A disk with an ext4 made elsewhere, holding a file: not formatted.
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

    // 4. One label on two disks: nothing is chosen, state stays in RAM.
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
    let _ = std::fs::remove_dir_all(&work);
}
