//! Our writers (GPT, FAT32, PE/UKI, cpio, zstd) read back by the standard tools,
//! on the artifacts of a real build.

use std::process::Command;

use crate::support::{built, run, scratch, text, unpack_initramfs};

#[test]
fn sgdisk_verifies_the_gpt_image() {
    let img = built("qemu").join("mkhost-qemu.img");
    let verify = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(verify.contains("No problems found"), "{verify}");
    let print = run(Command::new("sgdisk").arg("-p").arg(&img));
    assert!(print.contains("EF00"), "ESP type missing:\n{print}");
    assert!(
        print.contains(" 2048 "),
        "ESP must start at 1 MiB:\n{print}"
    );
}

#[test]
fn fsck_and_mtools_read_the_esp() {
    let img = built("qemu").join("mkhost-qemu.img");
    let (_, parts) = mkhost_image::disk::read_gpt_disk(&img).unwrap();
    let esp = mkhost_image::disk::read_partition(&img, &parts[0]).unwrap();
    let dir = scratch("esp");
    let esp_path = dir.join("esp.img");
    std::fs::write(&esp_path, &esp).unwrap();
    let fsck = run(Command::new("fsck.vfat").arg("-n").arg(&esp_path));
    assert!(fsck.contains("FAT32") || !fsck.contains("FAT1"), "{fsck}");
    let copy = Command::new("mcopy")
        .arg("-i")
        .arg(&esp_path)
        .args(["::/EFI/BOOT/BOOTX64.EFI", "-"])
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));
    let efi = std::fs::read(built("qemu").join("mkhost-qemu.efi")).unwrap();
    assert!(
        copy.stdout == efi,
        "BOOTX64.EFI on the ESP differs from the UKI"
    );
}

#[test]
fn objdump_lists_the_uki_sections_and_objcopy_extracts_them() {
    let dir = built("qemu");
    let efi = dir.join("mkhost-qemu.efi");
    let headers = run(Command::new("objdump").arg("-h").arg(&efi));
    for section in [".osrel", ".cmdline", ".uname", ".linux", ".initrd"] {
        assert!(headers.contains(section), "{section} missing:\n{headers}");
    }
    let scratch = scratch("objcopy");
    for (section, file) in [(".initrd", "pxe/initramfs.img"), (".linux", "pxe/vmlinuz")] {
        let out = scratch.join(section.trim_start_matches('.'));
        run(Command::new("objcopy")
            .args(["-O", "binary", "--only-section", section])
            .arg(&efi)
            .arg(&out));
        let extracted = std::fs::read(&out).unwrap();
        let expected = std::fs::read(dir.join(file)).unwrap();
        // objcopy pads to the section alignment; the payload must lead.
        assert!(
            extracted.len() >= expected.len() && extracted[..expected.len()] == expected[..],
            "{section} does not hold {file}"
        );
    }
}

#[test]
fn zstd_and_cpio_read_the_initramfs() {
    let dir = built("qemu");
    let scratch = scratch("cpio");
    // Unpack with the real zstd and cpio and compare a file with the build's input.
    let (cpio_path, root) = unpack_initramfs(
        &dir.join("pxe/initramfs.img"),
        &scratch,
        &["etc/mkhost/boot.json"],
    );
    let listing = run(Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&cpio_path));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let release = m["kernel"]["release"].as_str().unwrap();
    for want in [
        "init".to_string(),
        "usr/bin/hostd".to_string(),
        "dev/console".to_string(),
        "etc/mkhost/boot.json".to_string(),
        format!("lib/modules/{release}/modules.dep"),
        format!("lib/modules/{release}/kernel/drivers/net/virtio_net.ko"),
    ] {
        assert!(listing.lines().any(|l| l == want), "{want} missing");
    }
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("etc/mkhost/boot.json")).unwrap()).unwrap();
    assert_eq!(boot["profile"], "qemu");
    assert_eq!(boot["kernel_release"], release);
    assert!(boot["modules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "kernel/fs/fat/vfat.ko"));
}
