//! Devices that appear after coldplug, in QEMU (TCG): the rack image booted
//! from a USB stick (`qemu-xhci` + `usb-storage`) under OVMF, a USB NIC, and
//! disks and NICs hot-added through QEMU's monitor after the ready line; a
//! flood of veths; a device whose driver the image lacks; a stick pulled out
//! during the boot.
//!
//! One boot per scenario, each checking all it can. What init did is read
//! from its console lines, and on the qemu profile (which has a debug
//! shell) from `/run/mkhost/init.json` and `hostd status`.

use std::path::Path;
use std::time::Duration;

use crate::support::{
    built, pxe_args, ready_fields, scratch, stick_with_host_toml, usb_args, Guest,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const EVENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The rack profile's RAM floor.
const RACK_RAM_MIB: &str = "512";

fn assert_log_has(guest: &Guest, needle: &str) {
    assert!(
        guest.log.iter().any(|l| l.contains(needle)),
        "no {needle:?} on the console:\n{}",
        guest.log.join("\n")
    );
}

fn assert_log_lacks(guest: &Guest, needle: &str) {
    assert!(
        !guest.log.iter().any(|l| l.contains(needle)),
        "{needle:?} on the console:\n{}",
        guest.log.join("\n")
    );
}

/// The `hotplug: loaded ...` line that names `module`, waiting for it.
fn wait_loaded(guest: &mut Guest, module: &str) -> String {
    let has = |l: &String| {
        l.contains("hotplug: loaded ")
            && l.split(" for ")
                .next()
                .is_some_and(|m| m.split(' ').any(|w| w == module))
    };
    if let Some(line) = guest.log.iter().find(|l| has(l)) {
        return line.clone();
    }
    loop {
        let line = guest.wait_for("hotplug: loaded ", EVENT_TIMEOUT);
        if has(&line) {
            return line;
        }
    }
}

/// The console line containing `needle`, printed already or waited for.
fn seen_or_wait(guest: &mut Guest, needle: &str) -> String {
    match guest.log.iter().find(|l| l.contains(needle)) {
        Some(line) => line.clone(),
        None => guest.wait_for(needle, EVENT_TIMEOUT),
    }
}

/// Milliseconds of a `mkhost: +<ms>ms ...` timeline line.
fn line_ms(line: &str) -> u64 {
    line.split("+")
        .nth(1)
        .and_then(|r| r.split("ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"))
}

fn device_add(guest: &mut Guest, device: &str) {
    let answer = guest.monitor(&format!("device_add {device}"));
    assert!(!answer.contains("Error"), "device_add {device}: {answer}");
}

fn disk(work: &Path, name: &str) -> String {
    let path = work.join(name);
    std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
    format!("if=none,id={name},format=raw,file={}", path.display())
}

/// The headline workflow: `dd` the rack image to a stick, add host.toml,
/// boot a server from it. The stick enumerates after coldplug; hotplug loads
/// usb_storage/sd_mod, the boot finds the ESP by event and applies the
/// file. The USB NIC gets a lease. After ready, an NVMe disk and an e1000e
/// NIC are hot-added: their drivers load, the disk appears, the NIC gets
/// DHCP.
#[test]
fn rack_from_a_usb_stick_then_hot_added_disk_and_nic() {
    let work = scratch("hotplug-usb");
    let img = stick_with_host_toml(
        &built("rack").join("mkhost-rack.img"),
        &work,
        "hostname = \"edge-usb\"\n[network]\ndhcp = true\n",
    );
    let mut args = usb_args(&img, RACK_RAM_MIB);
    args.extend([
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        "usb-net,bus=xhci.0,netdev=n0".into(),
        "-netdev".into(),
        "user,id=n1".into(),
        "-drive".into(),
        disk(&work, "hot"),
    ]);
    let mut guest = Guest::start_interactive(&args, &work);
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let fields = ready_fields(&ready);
    assert_eq!(fields["hostname"], "edge-usb", "{ready}");
    assert_eq!(fields["profile"], "rack", "{ready}");
    assert_log_has(
        &guest,
        "host config /dev/sda1:mkhost/host.toml read (boot partition)",
    );
    assert_log_has(&guest, "hostname set to edge-usb (from host.toml)");
    assert_log_lacks(&guest, "did not appear within");
    // The SCSI disk shows up a second after usb-storage binds, after
    // coldplug: its driver came from hotplug, and the boot waited for the
    // ESP by event, not for a fixed time; hostd waits with it (host.toml
    // may name a state disk, mounted under hostd's store before it starts).
    wait_loaded(&mut guest, "sd_mod");
    assert_log_has(&guest, "hotplug: disk sda appeared");
    let waiting = guest
        .log
        .iter()
        .find(|l| l.contains("waiting for the boot partition"))
        .cloned();
    let appeared = guest
        .log
        .iter()
        .find(|l| l.contains("boot partition /dev/sda1 appeared after"))
        .cloned();
    if let (Some(w), Some(a)) = (&waiting, &appeared) {
        eprintln!(
            "boot partition waited for {} ms, ready at {} ms",
            line_ms(a) - line_ms(w),
            fields["boot_ms"]
        );
        let started = guest
            .log
            .iter()
            .find(|l| l.contains("hostd started pid="))
            .cloned()
            .unwrap_or_default();
        assert!(
            line_ms(&started) >= line_ms(a),
            "hostd started before the stick's settings were read"
        );
    }
    // The USB NIC (cdc_ether) gets a lease.
    wait_loaded(&mut guest, "cdc_ether");
    seen_or_wait(&mut guest, ": DHCP lease 10.0.2.15/24");

    // A disk hot-added after ready: nvme loads, nvme0n1 appears.
    device_add(&mut guest, "nvme,serial=hot1,drive=hot,id=hotnvme");
    wait_loaded(&mut guest, "nvme");
    seen_or_wait(&mut guest, "hotplug: disk nvme0n1 appeared (8 MiB)");

    // A NIC hot-added after the network step: e1000e loads, DHCP runs.
    let before = guest.log.len();
    device_add(&mut guest, "e1000e,netdev=n1,id=hotnic");
    wait_loaded(&mut guest, "e1000e");
    let line = match guest.log[before..]
        .iter()
        .find(|l| l.contains("appeared after the network step"))
    {
        Some(line) => line.clone(),
        None => guest.wait_for("appeared after the network step", EVENT_TIMEOUT),
    };
    let name = line
        .split("network: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    seen_or_wait(&mut guest, &format!("{name}: DHCP lease 10.0.2.15/24"));
    let _ = std::fs::remove_dir_all(&work);
}

/// The stick is pulled out after the kernel started: the boot stops
/// waiting for its ESP once the kernel is quiet, says so, and comes up with
/// the image's settings.
#[test]
fn stick_removed_during_boot_is_reported_and_the_host_boots() {
    let work = scratch("hotplug-removed");
    let img = stick_with_host_toml(
        &built("rack").join("mkhost-rack.img"),
        &work,
        "hostname = \"never-read\"\n",
    );
    let mut guest = Guest::start_interactive(&usb_args(&img, RACK_RAM_MIB), &work);
    guest.wait_for("init started", BOOT_TIMEOUT);
    let answer = guest.monitor("device_del stick");
    assert!(!answer.contains("Error"), "{answer}");
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let fields = ready_fields(&ready);
    assert_eq!(fields["hostname"], "mkhost-rack", "{ready}");
    let waiting = guest
        .log
        .iter()
        .find(|l| l.contains("waiting for the boot partition"))
        .cloned()
        .unwrap_or_else(|| panic!("no wait:\n{}", guest.log.join("\n")));
    let gave_up = guest
        .log
        .iter()
        .find(|l| l.contains("did not appear within"))
        .cloned()
        .unwrap_or_else(|| panic!("no give-up line:\n{}", guest.log.join("\n")));
    assert!(gave_up.contains("was the stick removed"), "{gave_up}");
    assert!(
        gave_up.contains("booting with the image's settings"),
        "{gave_up}"
    );
    // Stopped when the kernel went quiet, long before the 30 s limit.
    let boot_ms: u64 = fields["boot_ms"].parse().unwrap();
    let waited = boot_ms - line_ms(&waiting);
    eprintln!("stick removed: waited {waited} ms before booting on");
    assert!(
        waited < 15_000,
        "waited {waited} ms:\n{}",
        guest.log.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The qemu profile over PXE with no NIC and no disk at boot (so nothing
/// waits): a virtio NIC hot-added after ready gets virtio_pci and virtio_net
/// loaded and a DHCP lease; 1,000 veth pairs from the shell load nothing and
/// leave init responsive (a virtio disk hot-added afterwards still gets its
/// driver within seconds); an e1000, which the image lacks, is named with
/// the profile key that adds it; init's status file and `hostd status` list
/// what was loaded late.
#[test]
fn late_nic_veth_flood_late_disk_and_a_missing_driver() {
    let dir = built("qemu");
    let work = scratch("hotplug-flood");
    let mut args = pxe_args(dir, "256", "");
    args.extend([
        "-netdev".into(),
        "user,id=n0".into(),
        "-drive".into(),
        disk(&work, "hot"),
    ]);
    let mut guest = Guest::start_interactive(&args, &work);
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    assert_eq!(ready_fields(&ready)["addresses"], "-", "{ready}");
    assert_log_lacks(&guest, "waiting for the boot partition");
    guest.wait_for("debug shell on", BOOT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));

    device_add(&mut guest, "virtio-net-pci,netdev=n0,id=hotnic");
    wait_loaded(&mut guest, "virtio_pci");
    wait_loaded(&mut guest, "virtio_net");
    seen_or_wait(&mut guest, "network: eth0 appeared after the network step");
    seen_or_wait(&mut guest, "eth0: DHCP lease 10.0.2.15/24");

    let flood = guest.run(
        "i=0; while [ $i -lt 1000 ]; do ip link add v$i type veth peer name p$i || break; \
         i=$((i+1)); done; echo created=$i; ls /sys/class/net | wc -l",
        Duration::from_secs(900),
    );
    assert!(
        flood.iter().any(|l| l.trim() == "created=1000"),
        "{}",
        flood.join("\n")
    );
    let events_before = guest.log.len();
    device_add(&mut guest, "virtio-blk-pci,drive=hot,id=hotdisk");
    wait_loaded(&mut guest, "virtio_blk");
    seen_or_wait(&mut guest, "hotplug: disk vda appeared (8 MiB)");
    assert!(
        !guest.log[events_before..]
            .iter()
            .any(|l| l.contains("dropped device events")),
        "{}",
        guest.log.join("\n")
    );

    device_add(&mut guest, "e1000,id=nodriver");
    seen_or_wait(
        &mut guest,
        "it needs module e1000; add it to the profile with [modules] sets = [\"lab-nics\"] or include = [\"e1000\"]",
    );

    // init's status (after its next write, at most half a second later).
    std::thread::sleep(Duration::from_secs(1));
    let status = guest.run(
        "cat /run/mkhost/init.json; echo; hostd status; grep -E 'VmRSS|VmHWM' /proc/1/status",
        Duration::from_secs(60),
    );
    let text = status.join("\n");
    let json = status
        .iter()
        .find(|l| l.starts_with("{\"late_modules\""))
        .unwrap_or_else(|| panic!("no init.json:\n{text}"));
    let init: serde_json::Value = serde_json::from_str(json).unwrap();
    let late: Vec<&str> = init["late_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["module"].as_str().unwrap())
        .collect();
    for module in ["virtio_pci", "virtio_net", "virtio_blk"] {
        assert!(late.contains(&module), "{module} not in {late:?}");
    }
    assert!(!late.contains(&"veth"), "{late:?}");
    assert_eq!(init["late_nics"], serde_json::json!(["eth0"]), "{text}");
    assert_eq!(init["late_disks"], serde_json::json!(["vda"]), "{text}");
    assert!(init["events"].as_u64().unwrap() >= 2000, "{text}");
    assert_eq!(init["overflows"], 0, "{text}");
    assert!(
        init["missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["module"] == "e1000"),
        "{text}"
    );
    let hostd = status
        .iter()
        .find(|l| l.contains("\"ok\":true"))
        .unwrap_or_else(|| panic!("no hostd status:\n{text}"));
    assert!(
        hostd.contains("\"late_modules\":[") && hostd.contains("\"virtio_blk\""),
        "{hostd}"
    );
    let rss_kb: u64 = status
        .iter()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS:\n{text}"));
    eprintln!(
        "init after 1,000 veths: {}",
        text.lines()
            .filter(|l| l.starts_with("Vm"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(rss_kb < 3 * 1024, "init grew to {rss_kb} kB");
    let _ = std::fs::remove_dir_all(&work);
}
