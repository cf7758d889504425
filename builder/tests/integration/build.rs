//! Full builds of the shipped profiles: artifacts, manifest, lock, reproducibility.

use std::path::Path;
use std::process::Command;

use crate::support::{build, built, scratch, text};

/// Every file a build of the qemu profile writes.
const QEMU_ARTIFACTS: [&str; 7] = [
    "mkhost-qemu.img",
    "mkhost-qemu.efi",
    "pxe/vmlinuz",
    "pxe/initramfs.img",
    "pxe/boot.ipxe",
    "manifest.json",
    "SHA256SUMS",
];

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn qemu_build_writes_every_artifact_with_checksums() {
    let dir = built("qemu");
    for rel in QEMU_ARTIFACTS {
        assert!(dir.join(rel).is_file(), "{rel} missing");
    }
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 6, "{sums}");

    let m = manifest(dir);
    assert_eq!(m["profile"]["name"], "qemu");
    let kernel = &m["inputs"]["kernel"];
    assert_eq!(kernel["source"], "deb");
    assert_eq!(kernel["requested"], "linux-image-amd64");
    assert!(kernel["package"]
        .as_str()
        .unwrap()
        .starts_with("linux-image-6."));
    assert!(!kernel["version"].as_str().unwrap().is_empty());
    assert_eq!(kernel["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(m["inputs"]["stub"]["package"], "systemd-boot-efi");
    let release = m["kernel"]["release"].as_str().unwrap();
    assert_eq!(
        kernel["file"].as_str().unwrap(),
        format!("vmlinuz-{release}")
    );
    // init loads what it needs itself at boot; device drivers wait for
    // coldplug and container networking for the kernel's autoloader.
    let boot = names(&m["modules"]["boot"]);
    for want in ["vfat", "efivarfs", "button", "evdev"] {
        assert!(boot.contains(&want.to_string()), "{want} not in {boot:?}");
    }
    let on_demand = names(&m["modules"]["on_demand"]);
    for want in [
        "virtio_net",
        "virtio_blk",
        "overlay",
        "veth",
        "bridge",
        "nf_tables",
    ] {
        assert!(
            on_demand.contains(&want.to_string()),
            "{want} not in {on_demand:?}"
        );
        assert!(!boot.contains(&want.to_string()), "{want} loaded at boot");
    }
    // Dependencies come before the modules that need them.
    let pos = |n: &str| on_demand.iter().position(|b| b == n).unwrap();
    assert!(pos("virtio_ring") < pos("virtio_net"), "{on_demand:?}");
    assert!(pos("nf_tables") < pos("nft_ct"), "{on_demand:?}");
    let initramfs = &m["initramfs"];
    assert!(
        initramfs["uncompressed_bytes"].as_u64().unwrap()
            > initramfs["compressed_bytes"].as_u64().unwrap()
    );
    assert_eq!(initramfs["window_log"], 23);
    assert_eq!(
        m["artifacts"]["mkhost-qemu.efi"]["bytes"].as_u64().unwrap(),
        std::fs::metadata(dir.join("mkhost-qemu.efi"))
            .unwrap()
            .len()
    );
    assert!(m["ram"]["required_mib"].as_u64().unwrap() <= 128);

    let lock = std::fs::read_to_string(dir.parent().unwrap().join("mkhost.lock")).unwrap();
    assert!(lock.contains("[profiles.qemu.kernel]"), "{lock}");
    assert!(lock.contains(kernel["sha256"].as_str().unwrap()), "{lock}");

    let ipxe = std::fs::read_to_string(dir.join("pxe/boot.ipxe")).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"), "{ipxe}");
    assert!(ipxe.contains("kernel vmlinuz initrd=initramfs.img console=ttyS0,115200"));
}

#[test]
fn locked_rebuild_is_bit_identical() {
    let first = built("qemu");
    let out = scratch("relocked");
    std::fs::copy(
        first.parent().unwrap().join("mkhost.lock"),
        out.join("mkhost.lock"),
    )
    .unwrap();
    let output = build("qemu", &out, &["--quiet", "--locked"]);
    assert!(output.status.success(), "{}", text(&output));
    let second = out.join("qemu");
    for rel in QEMU_ARTIFACTS {
        let a = std::fs::read(first.join(rel)).unwrap();
        let b = std::fs::read(second.join(rel)).unwrap();
        assert!(
            a == b,
            "{rel} differs between two builds of the same inputs"
        );
    }
}

#[test]
fn locked_build_refuses_changed_inputs() {
    let first = built("qemu");
    let out = scratch("lock-mismatch");
    let lock = std::fs::read_to_string(first.parent().unwrap().join("mkhost.lock")).unwrap();
    let m = manifest(first);
    let stub_sha = m["inputs"]["stub"]["sha256"].as_str().unwrap();
    let tampered = lock.replace(stub_sha, &"0".repeat(64));
    assert_ne!(tampered, lock);
    std::fs::write(out.join("mkhost.lock"), tampered).unwrap();
    let output = build("qemu", &out, &["--quiet", "--locked"]);
    assert!(!output.status.success());
    let err = text(&output);
    assert!(err.contains("--locked: the stub differs"), "{err}");
    assert!(!out.join("qemu").exists(), "nothing may be published");

    let out = scratch("lock-missing");
    let output = build("qemu", &out, &["--quiet", "--locked"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("has no entry for profile \"qemu\""));
}

#[test]
fn source_date_epoch_changes_timestamps_only_when_asked() {
    let first = built("qemu");
    let out = scratch("epoch");
    let output = crate::support::mkhost()
        .env("SOURCE_DATE_EPOCH", "1800000000")
        .args(["build", "--quiet", "--profile", "qemu", "--out"])
        .arg(&out)
        .arg("--lockfile")
        .arg(out.join("mkhost.lock"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let m = manifest(&out.join("qemu"));
    assert_eq!(m["source_date_epoch"], 1_800_000_000u64);
    let a = std::fs::read(first.join("pxe/initramfs.img")).unwrap();
    let b = std::fs::read(out.join("qemu/pxe/initramfs.img")).unwrap();
    assert_ne!(a, b, "cpio mtimes must follow SOURCE_DATE_EPOCH");
    let bad = crate::support::mkhost()
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .args(["build", "--quiet", "--profile", "qemu", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("SOURCE_DATE_EPOCH=\"yesterday\""));
}

#[test]
fn rack_build_carries_server_drivers_and_fits_its_budget() {
    let dir = built("rack");
    let m = manifest(dir);
    let all: Vec<String> = names(&m["modules"]["boot"])
        .into_iter()
        .chain(names(&m["modules"]["on_demand"]))
        .collect();
    for want in [
        "ixgbe",
        "i40e",
        "ice",
        "mlx5_core",
        "bnxt_en",
        "igb",
        "e1000e",
        "nvme",
        "ahci",
        "megaraid_sas",
        "mpt3sas",
        "md_mod",
        "raid1",
        "virtio_net",
        "overlay",
        "veth",
        "bridge",
        "nf_tables",
        "ext4",
        "xfs",
        "vfat",
    ] {
        assert!(all.contains(&want.to_string()), "{want} missing from rack");
    }
    // ext4's dependencies are pulled in.
    assert!(all.contains(&"jbd2".to_string()) && all.contains(&"mbcache".to_string()));
    assert_eq!(
        m["profile"]["cmdline"],
        "console=tty0 console=ttyS0,115200 quiet panic=30"
    );
    assert!(dir.join("mkhost-rack.img").is_file());
}

/// Finds a file under the cache's unpacked packages.
fn cached(suffix_dir: &str, prefix: &str) -> std::path::PathBuf {
    let unpacked = mkhost::sources::Cache::default_root().join("unpacked");
    for entry in std::fs::read_dir(&unpacked).unwrap().flatten() {
        let dir = entry.path().join(suffix_dir);
        if let Ok(files) = std::fs::read_dir(&dir) {
            for f in files.flatten() {
                if f.file_name().to_string_lossy().starts_with(prefix) {
                    return f.path();
                }
            }
        }
    }
    panic!("no {suffix_dir}/{prefix}* in {}", unpacked.display());
}

#[test]
fn path_sources_extra_binaries_files_and_firmware() {
    built("qemu"); // fills the cache with Debian's kernel and stub
    let vmlinuz = cached("boot", "vmlinuz-");
    let release = vmlinuz.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    let modules = vmlinuz
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lib/modules")
        .join(&release);
    let stub = cached("usr/lib/systemd/boot/efi", "linuxx64.efi.stub");
    let dir = scratch("path-sources");
    std::fs::write(dir.join("motd.txt"), "hello from the profile\n").unwrap();
    let firmware = dir.join("firmware");
    std::fs::create_dir_all(firmware.join("rtl_nic")).unwrap();
    std::fs::write(firmware.join("rtl_nic/rtl8168d-1.fw"), b"fake firmware").unwrap();
    let profile = dir.join("custom.toml");
    std::fs::write(
        &profile,
        format!(
            r#"extends = "qemu"
hostname = "custom-1"
[kernel]
source = "path"
path = "{}"
modules = "{}"
[stub]
source = "path"
path = "{}"
[modules]
include = ["r8169"]
[[files]]
dest = "/etc/motd"
source = "motd.txt"
[[files]]
dest = "/etc/mkhost/note"
contents = "inline"
mode = 0o600
[[binaries]]
source = "/bin/ls"
"#,
            vmlinuz.display(),
            modules.display(),
            stub.display()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let output = build(
        profile.to_str().unwrap(),
        &out,
        &["--quiet", "--firmware-dir", firmware.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", text(&output));
    let m = manifest(&out.join("custom"));
    assert_eq!(m["inputs"]["kernel"]["source"], "path");
    assert_eq!(m["inputs"]["stub"]["source"], "path");
    assert_eq!(m["profile"]["hostname"], "custom-1");
    assert!(names(&m["modules"]["on_demand"]).contains(&"r8169".to_string()));
    assert!(names(&m["firmware"]["included"]).contains(&"rtl_nic/rtl8168d-1.fw".to_string()));
    assert!(names(&m["firmware"]["missing"])
        .iter()
        .any(|f| f.starts_with("r8169: rtl_nic/")));

    let listing = crate::support::mkhost()
        .args(["inspect", "--all"])
        .arg(out.join("custom/pxe/initramfs.img"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    for want in [
        "/bin/ls ",
        "/lib64/ld-linux-x86-64.so.2",
        "/libc.so.6",
        "/etc/motd 23 B",
        "600 /etc/mkhost/note",
        "/lib/firmware/rtl_nic/rtl8168d-1.fw",
        "r8169.ko",
        "/bin/busybox",
    ] {
        assert!(listing.contains(want), "{want:?} missing:\n{listing}");
    }
}

#[test]
fn rack_manifest_accounts_for_ice_firmware() {
    let m = manifest(built("rack"));
    let missing = names(&m["firmware"]["missing"]);
    let included = names(&m["firmware"]["included"]);
    // ice names its DDP package; it is included when this host has it, listed
    // as missing otherwise.
    let on_host = std::path::Path::new("/lib/firmware/intel/ice/ddp/ice.pkg").exists();
    if on_host {
        assert!(
            included.iter().any(|f| f.starts_with("intel/ice/ddp/")),
            "{included:?}"
        );
    } else {
        assert!(
            missing.iter().any(|f| f.starts_with("ice: intel/ice/ddp/")),
            "{missing:?}"
        );
    }
}
