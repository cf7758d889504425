//! Boot tests: the real kernel and our init/hostd in QEMU (TCG), from the GPT
//! image under OVMF and from the PXE kernel + initramfs pair.
//!
//! The PXE pair boots in the profile's RAM floor, 128 MiB. Under OVMF the same
//! system needs 160 MiB: at 128 MiB the firmware's own footprint plus the loaded
//! UKI leave the kernel's EFI stub too little room and it faults (#GP/#PF in the
//! handover path of Linux 6.1), before any of our code runs.

use std::time::Duration;

use crate::support::{built, pxe_args, ready_fields, uefi_args, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// The qemu profile's RAM floor: enough for the kernel and initramfs.
const RAM_FLOOR_MIB: &str = "128";
/// What OVMF needs on top to hand over to the kernel.
const UEFI_RAM_MIB: &str = "160";

fn check_ready(line: &str) {
    let fields = ready_fields(line);
    assert_eq!(
        fields.get("hostname").map(String::as_str),
        Some("mkhost-qemu"),
        "{line}"
    );
    assert_eq!(
        fields.get("profile").map(String::as_str),
        Some("qemu"),
        "{line}"
    );
    let boot_ms: u64 = fields["boot_ms"].parse().expect("boot_ms is a number");
    assert!(boot_ms > 0, "{line}");
}

#[test]
fn uefi_boot_of_the_disk_image_reaches_ready() {
    let dir = built("qemu");
    let img = dir.join("mkhost-qemu.img");
    let mut guest = Guest::start(&uefi_args(&img, UEFI_RAM_MIB));
    let line = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    check_ready(&line);
    assert!(
        guest
            .log
            .iter()
            .any(|l| l.contains("mkhost: +") && l.contains("modules")),
        "boot timeline missing:\n{}",
        guest.log.join("\n")
    );
}

#[test]
fn pxe_kernel_and_initramfs_reach_ready() {
    let dir = built("qemu");
    let mut guest = Guest::start(&pxe_args(dir, RAM_FLOOR_MIB, ""));
    let line = guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    check_ready(&line);
}
