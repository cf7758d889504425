//! init as a real PID 1 in QEMU (TCG): DHCP over user networking, the debug
//! shell, the tmpfs root, cgroup2, hostd restarts, power-button shutdown, and
//! host.toml on the boot stick's ESP (broken and valid) under OVMF.
//!
//! One boot per scenario; each boot checks everything it can. The checks
//! from inside the guest go through the busybox debug shell of the qemu
//! profile, typed on the serial console.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{self, build_custom, built, ready_fields, scratch, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// PXE boots and OVMF boots alike get 160 MiB (OVMF needs more than 128).
const RAM_MIB: &str = "160";

fn pxe_args(dir: &Path, extra_cmdline: &str) -> Vec<String> {
    support::pxe_args(dir, RAM_MIB, extra_cmdline)
}

fn user_net() -> Vec<String> {
    vec![
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ]
}

fn joined(lines: &[String]) -> String {
    lines.join("\n")
}

fn assert_log_has(guest: &Guest, needle: &str) {
    assert!(
        guest.log.iter().any(|l| l.contains(needle)),
        "no {needle:?} on the console:\n{}",
        guest.log.join("\n")
    );
}

#[test]
fn dhcp_shell_supervision_and_power_button() {
    let dir = built("qemu");
    let work = scratch("host-dhcp");
    let mut args = pxe_args(dir, "");
    args.extend(user_net());
    let mut guest = Guest::start_interactive(&args, &work);

    // The ready line carries the DHCP address.
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let fields = ready_fields(&ready);
    assert_eq!(fields["hostname"], "mkhost-qemu", "{ready}");
    assert_eq!(fields["addresses"], "eth0:10.0.2.15/24", "{ready}");
    let boot_ms: u64 = fields["boot_ms"].parse().unwrap();
    assert!(boot_ms > 0, "{ready}");
    assert_log_has(
        &guest,
        "eth0: DHCP lease 10.0.2.15/24 gateway=10.0.2.2 dns=10.0.2.3",
    );
    assert_log_has(&guest, "root moved to tmpfs");
    assert_log_has(&guest, "coldplug:");
    assert_eq!(
        guest
            .log
            .iter()
            .filter(|l| l.contains("mkhost: ready"))
            .count(),
        1
    );
    guest.wait_for("debug shell on", BOOT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));

    // Default route via 10.0.2.2 (little-endian hex in /proc/net/route).
    let route = guest.run("cat /proc/net/route", COMMAND_TIMEOUT);
    assert!(
        route
            .iter()
            .any(|l| l.starts_with("eth0\t00000000\t0202000A")),
        "{}",
        joined(&route)
    );
    let resolv = guest.run("cat /etc/resolv.conf", COMMAND_TIMEOUT);
    assert!(
        resolv.iter().any(|l| l.trim() == "nameserver 10.0.2.3"),
        "{}",
        joined(&resolv)
    );
    // The root is a tmpfs (not rootfs), so runtimes can pivot_root.
    let fstype = guest.run("stat -f -c %T /; grep ' / ' /proc/mounts", COMMAND_TIMEOUT);
    assert!(
        fstype.iter().any(|l| l.trim() == "tmpfs"),
        "{}",
        joined(&fstype)
    );
    assert!(
        fstype.iter().any(|l| l.starts_with("tmpfs / tmpfs")),
        "{}",
        joined(&fstype)
    );
    assert!(
        !fstype.iter().any(|l| l.contains("rootfs")),
        "{}",
        joined(&fstype)
    );
    // cgroup2 with the controllers delegated.
    let cg = guest.run(
        "grep cgroup2 /proc/mounts; cat /sys/fs/cgroup/cgroup.subtree_control",
        COMMAND_TIMEOUT,
    );
    assert!(
        cg.iter()
            .any(|l| l.starts_with("cgroup2 /sys/fs/cgroup cgroup2")),
        "{}",
        joined(&cg)
    );
    let control = cg
        .iter()
        .find(|l| l.contains("memory"))
        .unwrap_or_else(|| panic!("no subtree_control line: {}", joined(&cg)));
    for controller in ["cpu", "memory", "pids"] {
        assert!(
            control.split_whitespace().any(|c| c == controller),
            "{controller} not in {control}"
        );
    }
    // The log file under /run has init's timeline and hostd's output.
    let log = guest.run(
        "grep -c . /run/log/hostd.log; grep -E 'mkhost: ready|hostd: listening' /run/log/hostd.log",
        COMMAND_TIMEOUT,
    );
    assert!(
        log.iter().any(|l| l.contains("mkhost: ready hostname=")),
        "{}",
        joined(&log)
    );
    assert!(
        log.iter().any(|l| l.contains("hostd: listening on")),
        "{}",
        joined(&log)
    );
    let rss = guest.run("grep -E 'VmRSS|VmHWM' /proc/1/status", COMMAND_TIMEOUT);
    eprintln!("init memory: {}", joined(&rss));

    // The shell starts with no signal blocked, so `kill` works from it (once
    // the child has exec'd: before that it ignores SIGTERM like the shell).
    let blocked = guest.run(
        "grep SigBlk /proc/$$/status; sleep 100 & P=$!; sleep 1; kill $P; wait $P; echo rc=$?",
        COMMAND_TIMEOUT,
    );
    assert!(
        blocked.iter().any(|l| l.ends_with("0000000000000000"))
            && blocked.iter().any(|l| l.contains("rc=143")),
        "{}",
        joined(&blocked)
    );

    // SIGKILL hostd from the shell: init reports and restarts it. Only the
    // daemon (init's child): `pidof hostd` also names its zygote, and a
    // zygote killed first makes the daemon exit 1 on its own, a race.
    guest.send_line(
        "for p in $(pidof hostd); do grep -q '^PPid:[[:space:]]*1$' /proc/$p/status && kill -9 $p; done",
    );
    guest.wait_for(
        "hostd exited (signal: 9 (SIGKILL)), restarting in",
        COMMAND_TIMEOUT,
    );
    guest.wait_for("hostd answering pid=", COMMAND_TIMEOUT);
    let status = guest.run("hostd status", COMMAND_TIMEOUT);
    assert!(
        status.iter().any(|l| l.contains("\"ok\":true")),
        "{}",
        joined(&status)
    );

    // A shell that exits is replaced.
    guest.send_line("exit");
    guest.wait_for("debug shell exited", COMMAND_TIMEOUT);
    guest.wait_for("debug shell on", COMMAND_TIMEOUT);

    // The ACPI power button: init shuts down step by step and QEMU exits.
    let answer = guest.monitor("system_powerdown");
    assert!(!answer.contains("Error"), "{answer}");
    let exit = guest.wait_exit(Duration::from_secs(120));
    assert!(exit.success(), "QEMU exited with {exit}");
    for step in [
        "shutdown: received power button",
        "shutdown: stopping hostd pid=",
        "shutdown: hostd stopped",
        "shutdown: syncing file systems",
        "shutdown: unmounted ",
        "shutdown: powering off",
    ] {
        assert_log_has(&guest, step);
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// A copy of the qemu disk image with `host.toml` on its ESP.
fn image_with_host_toml(name: &str, host_toml: &str) -> (PathBuf, PathBuf) {
    let work = scratch(name);
    let img =
        support::stick_with_host_toml(&built("qemu").join("mkhost-qemu.img"), &work, host_toml);
    (work, img)
}

fn uefi_args(img: &Path) -> Vec<String> {
    support::uefi_args(img, RAM_MIB)
}

#[test]
fn broken_host_toml_is_reported_and_the_host_boots() {
    let (work, img) = image_with_host_toml(
        "host-toml-broken",
        "hostname = \"edge-7\"\n[network\ndhcp = false\n",
    );
    // A NIC with carrier but no DHCP server behind it (a hub port with
    // nobody else on the hub): the boot waits dhcp_timeout_ms, then goes on.
    let mut args = uefi_args(&img);
    args.extend([
        "-netdev".into(),
        "hubport,id=n0,hubid=0".into(),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ]);
    let mut guest = Guest::start(&args);
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let fields = ready_fields(&ready);
    assert_eq!(fields["hostname"], "mkhost-qemu", "{ready}");
    assert_eq!(fields["addresses"], "-", "{ready}");
    // The DHCP thread says so around the same moment as the ready line.
    if !guest
        .log
        .iter()
        .any(|l| l.contains("eth0: no DHCP lease after "))
    {
        guest.wait_for("eth0: no DHCP lease after ", COMMAND_TIMEOUT);
    }
    let error = guest
        .log
        .iter()
        .find(|l| l.contains("mkhost/host.toml: line 2, column"))
        .unwrap_or_else(|| panic!("no host.toml error:\n{}", guest.log.join("\n")));
    assert!(error.starts_with("mkhost: error: /dev/vda1:"), "{error}");
    assert!(
        error.contains("booting with the image's settings"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn host_toml_on_the_esp_names_the_host() {
    let (work, img) = image_with_host_toml(
        "host-toml-good",
        "# this stick's identity\nhostname = \"edge-7\"\n\n[network]\ndhcp = false\n",
    );
    let mut guest = Guest::start(&uefi_args(&img));
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    assert_eq!(ready_fields(&ready)["hostname"], "edge-7", "{ready}");
    // Found through systemd-stub's LoaderDevicePartUUID, not by guessing.
    assert_log_has(
        &guest,
        "host config /dev/vda1:mkhost/host.toml read (boot partition)",
    );
    assert_log_has(&guest, "hostname set to edge-7 (from host.toml)");
    assert_log_has(&guest, "efivarfs mounted");
    let _ = std::fs::remove_dir_all(&work);
}

/// A profile whose NIC driver is shipped but not loaded at boot: coldplug has
/// to find the virtio PCI device, load virtio_pci, then find the virtio-net
/// device behind it and load virtio_net, before DHCP can work. Also the
/// command line: hostname, an unknown key, and mkhost.reboot at shutdown.
#[test]
fn coldplug_loads_the_nic_driver_and_cmdline_settings_apply() {
    let work = scratch("host-coldplug");
    let dir = build_custom(
        &work,
        "coldplug",
        "base.toml",
        "description = \"NIC drivers on demand\"\n\
         [modules]\nsets = [\"host\"]\ninclude = [\"virtio_pci\", \"virtio_net\"]\n",
    );
    let mut args = pxe_args(
        &dir,
        "mkhost.hostname=cold-1 mkhost.colour=red mkhost.reboot",
    );
    args.extend(user_net());
    let mut guest = Guest::start_interactive(&args, &work);
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let fields = ready_fields(&ready);
    assert_eq!(fields["hostname"], "cold-1", "{ready}");
    assert_eq!(fields["addresses"], "eth0:10.0.2.15/24", "{ready}");
    let coldplugged: usize = fields["coldplug"].parse().unwrap();
    assert!(coldplugged >= 2, "{ready}");
    let line = guest
        .log
        .iter()
        .find(|l| l.contains("coldplug:"))
        .cloned()
        .unwrap_or_default();
    for module in ["virtio_pci", "virtio_net"] {
        assert!(
            line.split(['(', ' ', ')']).any(|w| w == module),
            "{module} not loaded by coldplug: {line}"
        );
    }
    assert_log_has(&guest, "hostname set to cold-1 (from cmdline)");
    assert_log_has(
        &guest,
        "warning: kernel command line: mkhost.colour: unknown parameter",
    );

    let answer = guest.monitor("system_powerdown");
    assert!(!answer.contains("Error"), "{answer}");
    let exit = guest.wait_exit(Duration::from_secs(120));
    assert!(exit.success(), "QEMU exited with {exit}");
    assert_log_has(&guest, "shutdown: rebooting");
    let _ = std::fs::remove_dir_all(&work);
}

/// The shipped rack profile on "server hardware" QEMU can emulate: an Intel
/// e1000e NIC and an NVMe disk. Their drivers are on-demand in rack, so
/// coldplug must load them; DHCP then works over the e1000e.
#[test]
fn rack_image_coldplugs_intel_nic_and_nvme() {
    let dir = built("rack");
    let work = scratch("rack-hw");
    let disk = work.join("nvme.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut args = pxe_args(dir, "");
    let mem = args.iter().position(|a| a == "-m").unwrap() + 1;
    args[mem] = "512".into();
    args.extend([
        "-netdev".into(),
        "user,id=n0".into(),
        "-device".into(),
        "e1000e,netdev=n0".into(),
        "-drive".into(),
        format!("if=none,id=nv,format=raw,file={}", disk.display()),
        "-device".into(),
        "nvme,serial=mkhost0,drive=nv".into(),
    ]);
    let mut guest = Guest::start(&args);
    let ready = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let fields = ready_fields(&ready);
    assert_eq!(fields["hostname"], "mkhost-rack", "{ready}");
    assert_eq!(fields["addresses"], "eth0:10.0.2.15/24", "{ready}");
    let line = guest
        .log
        .iter()
        .find(|l| l.contains("coldplug:"))
        .cloned()
        .unwrap_or_default();
    for module in ["e1000e", "nvme"] {
        assert!(
            line.split(['(', ' ', ')', ',']).any(|w| w == module),
            "{module} not loaded by coldplug: {line}\n{}",
            joined(&guest.log)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// A driver that is shipped but not loaded is autoloaded when the kernel asks
/// for it: mounting an iso9660 file system makes the kernel run
/// `/sbin/modprobe -q -- fs-iso9660`, which is init answering as modprobe.
#[test]
fn kernel_autoloads_shipped_modules_through_init_as_modprobe() {
    let work = scratch("host-modprobe");
    let dir = build_custom(
        &work,
        "autoload",
        "qemu.toml",
        "description = \"isofs on demand\"\n[modules]\ninclude = [\"isofs\"]\n",
    );
    let args = pxe_args(&dir, "mkhost.dhcp=0");
    let mut guest = Guest::start_interactive(&args, &work);
    guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    guest.wait_for("debug shell on", BOOT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    let before = guest.run("grep -c '^isofs ' /proc/modules", COMMAND_TIMEOUT);
    assert!(
        before.iter().any(|l| l.trim() == "0"),
        "{}",
        joined(&before)
    );
    let after = guest.run(
        "cat /proc/sys/kernel/modprobe; mkdir -p /mnt/iso; mount -t iso9660 /dev/null /mnt/iso; grep -c '^isofs ' /proc/modules",
        COMMAND_TIMEOUT,
    );
    assert!(
        after.iter().any(|l| l.trim() == "/sbin/modprobe"),
        "{}",
        joined(&after)
    );
    assert!(
        after.iter().any(|l| l.trim() == "1"),
        "isofs not autoloaded:\n{}",
        joined(&after)
    );
    let _ = std::fs::remove_dir_all(&work);
}
