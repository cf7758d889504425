//! `mkhost inspect` on every kind of artifact, and on junk.

use crate::support::{built, mkhost, scratch, text};

fn inspect(path: &std::path::Path, extra: &[&str]) -> String {
    let output = mkhost()
        .arg("inspect")
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn inspect_disk_image_shows_partitions_uki_and_initramfs() {
    let dir = built("qemu");
    let out = inspect(&dir.join("mkhost-qemu.img"), &[]);
    for want in [
        "GPT disk image",
        "\"EFI System\"",
        "EFI/BOOT/BOOTX64.EFI",
        "mkhost/host.toml.example",
        "unified kernel image",
        "section .linux",
        "cmdline: console=ttyS0,115200 quiet panic=-1",
        "os-release: mkhost qemu",
        "kernel: 6.",
        "/etc/mkhost/boot.json",
        "virtio_net",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

#[test]
fn inspect_reads_uki_kernel_and_initramfs_alone() {
    let dir = built("qemu");
    let uki = inspect(&dir.join("mkhost-qemu.efi"), &["--all"]);
    assert!(
        uki.contains("unified kernel image") && uki.contains("virtio_net.ko"),
        "{uki}"
    );
    let kernel = inspect(&dir.join("pxe/vmlinuz"), &[]);
    assert!(kernel.contains("Linux kernel 6."), "{kernel}");
    let initrd = inspect(&dir.join("pxe/initramfs.img"), &[]);
    assert!(
        initrd.contains("zstd, unpacks to") && initrd.contains("/usr/bin/hostd"),
        "{initrd}"
    );
}

#[test]
fn inspect_rejects_junk_and_truncated_files() {
    let dir = scratch("inspect-junk");
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"definitely not an image").unwrap();
    let output = mkhost().arg("inspect").arg(&junk).output().unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("not a GPT disk image, UKI, kernel or initramfs"));

    let efi = std::fs::read(built("qemu").join("mkhost-qemu.efi")).unwrap();
    let cut = dir.join("cut.efi");
    std::fs::write(&cut, &efi[..efi.len() / 2]).unwrap();
    let output = mkhost().arg("inspect").arg(&cut).output().unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains("panicked"), "{}", text(&output));

    let initrd = std::fs::read(built("qemu").join("pxe/initramfs.img")).unwrap();
    let cut = dir.join("cut.zst");
    std::fs::write(&cut, &initrd[..initrd.len() / 3]).unwrap();
    let output = mkhost().arg("inspect").arg(&cut).output().unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains("panicked"), "{}", text(&output));
}
