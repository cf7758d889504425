//! The last stages of an mkhost build: from "a kernel and an initramfs" to "a disk
//! image that UEFI firmware boots". Each module is a pure function from bytes to
//! bytes (only [`disk`] touches the filesystem, to write the final image), and each
//! comes with a reader so tests and `mkhost inspect` can check the result.
//!
//! The pipeline, in the order the builder calls it:
//!
//! 1. [`bzimage`] reads the kernel's x86 boot header: its version string, the release
//!    (`uname -r`, which names `/lib/modules/<release>`), and `init_size`.
//! 2. [`uki`] turns systemd-stub (a PE32+ EFI application) into a Unified Kernel Image
//!    by appending `.osrel`, `.cmdline`, `.uname`, `.linux` and `.initrd` sections.
//!    The stub finds them by name at boot and starts the kernel with that initrd and
//!    command line, so one file is the whole OS.
//! 3. [`esp`] builds a FAT32 EFI System Partition in memory that holds the UKI at the
//!    removable-media path `EFI/BOOT/BOOTX64.EFI`, where firmware looks without any
//!    boot entries, plus whatever else the builder adds (host.toml, archives).
//! 4. [`disk`] wraps the ESP in a GPT disk image (protective MBR, primary and backup
//!    tables, one "EFI System" partition at 1 MiB) ready to `dd` onto a USB stick.
//!
//! Everything is reproducible: no clock is read (FAT timestamps come from the
//! caller's `SOURCE_DATE_EPOCH`), GUIDs and volume ids are parameters, and nothing
//! depends on iteration order, so the same inputs give byte-identical images.
//! Each module has its own error enum; variants carry the offset, section or path
//! needed to act on them, and malformed input gives an error, never a panic.

pub mod authenticode;
pub mod bzimage;
pub mod disk;
pub mod esp;
pub mod pcr;
pub mod uki;

/// Helpers shared by the unit tests that check our output with standard tools.
#[cfg(test)]
mod test_tools {
    use std::process::Command;

    /// Runs a tool; returns whether it succeeded and its stdout + stderr.
    pub fn run(cmd: &mut Command) -> (bool, String) {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is the tool installed?)"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Debian's systemd-stub, which the tests turn into UKIs and sign.
    pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    /// The stub's bytes.
    pub fn stub() -> Vec<u8> {
        std::fs::read(STUB)
            .unwrap_or_else(|e| panic!("{STUB}: {e}: install systemd-boot-efi (CI installs it)"))
    }
}
