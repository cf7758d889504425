//! mkhost turns a profile (TOML) into a host image that boots into RAM.
//!
//! The pipeline, one module per stage, data flowing one way:
//!
//! 1. [`profile`]: find, parse, merge (`extends`) and validate the profile.
//!    What it names is read with [`input_file`] (regular files only, bounded,
//!    never blocking); [`layout`] lists the paths that are mkhost's own in
//!    every image; [`clip`] cuts outside values quoted in errors and logs.
//! 2. [`sources`]: resolve the kernel, its modules and the systemd-stub from the
//!    build host, explicit paths, or Debian packages fetched with [`apt`] and
//!    unpacked by [`deb`] into the cache.
//! 3. [`containers`]: the profile's boot-time containers: their image archives
//!    checked and read with hostd's own store code, each `image` resolved, the
//!    manifest hostd reads at boot.
//! 4. [`build`]: the pipeline; its kernel-specific stages run through the
//!    [`target::TargetWriter`] the profile's `[target] kernel` picks. For
//!    Linux ([`target::linux`]): module closure and firmware, the initramfs
//!    tree (cpio newc, zstd), the UKI, the FAT32 ESP and GPT disk image, the
//!    PXE set. Then the manifest and `SHA256SUMS`, all staged and published
//!    whole by [`output`].
//! 5. [`lock`] records the exact inputs so `--locked` can refuse drift.
//!
//! [`certs`] makes the Docker API's mutual-TLS certificates (`mkhost certs`).
//!
//! [`inspect`] reads any artifact back with the same parsers. The writers live in
//! the `mkhost-initramfs` and `mkhost-image` crates; this crate wires them.
//!
//! After a build: [`artifacts`] verifies an output directory against its
//! `SHA256SUMS`; [`serve`] netboots it over HTTP ([`http`] for the protocol,
//! [`ipxe`] for the per-machine scripts); [`run`] boots it in QEMU.

pub mod apt;
pub mod artifacts;
pub mod build;
pub mod certs;
pub mod clip;
pub mod containers;
pub mod deb;
pub mod guest_binaries;
pub mod hashing;
pub mod http;
pub mod input_file;
pub mod inspect;
pub mod ipxe;
pub mod layout;
pub mod lock;
pub mod output;
pub mod profile;
pub mod progress;
pub mod pull;
pub mod run;
pub mod secure_boot;
pub mod serve;
pub mod sources;
pub mod target;
