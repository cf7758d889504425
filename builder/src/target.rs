//! The build's seam between kernels: the stages of `mkhost build` that
//! depend on the kernel the image is for, behind one trait,
//! [`TargetWriter`], and the values they hand back to the rest of the build.
//!
//! [`crate::build`] owns everything that is the same on every kernel: the
//! profile, the boot-time containers' images, `init` and `hostd`, the RAM
//! budget's shape, the manifest, the lock file, `SHA256SUMS` and publishing
//! the output directory. It picks a writer from the profile's `[target]
//! kernel` ([`crate::profile::TargetKernel`]) and calls these stages, in this
//! order, through the trait only:
//!
//! 1. [`TargetWriter::resolve_inputs`]: the kernel and what boots it;
//! 2. [`TargetWriter::modules`]: the drivers the image carries;
//! 3. [`TargetWriter::root_image`]: the root file system the kernel unpacks
//!    into RAM, with the build's [`RootContent`] inside;
//! 4. [`TargetWriter::boot_image`]: the EFI program the firmware starts,
//!    signed under `[secure_boot]`, and what the firmware will measure;
//! 5. [`TargetWriter::write_artifacts`]: what a machine boots from (disk
//!    image, netboot set), written into the staging directory.
//!
//! [`linux::LinuxTarget`] is the one writer: an initramfs (cpio, zstd) in a
//! UKI, a GPT disk and a PXE set. A FreeBSD or illumos writer would be
//! another module beside [`linux`] implementing [`TargetWriter`] with its
//! own input, driver and error types, plus one arm where the build picks
//! the writer (docs/backends.md).

pub mod linux;

use std::path::Path;

use serde::Serialize;

use crate::containers::ContainerPlan;
use crate::guest_binaries::GuestBinaries;
use crate::lock::LockEntry;
use crate::output::Staging;
use crate::profile::Profile;
use crate::progress::Progress;
use crate::secure_boot::{MeasuredBoot, SecureBootSummary};
use crate::sources::{Cache, InputRecord};

/// How one kernel's host image is made from a checked profile: the stages
/// of `mkhost build` that differ between kernels, in the order the build
/// calls them. Each takes what the earlier ones made.
pub trait TargetWriter {
    /// The kernel and what boots it, as the writer needs them later.
    type Inputs;
    /// The drivers the image carries, as the writer needs them later.
    type Modules;
    /// What can go wrong in the writer's stages.
    type Error: std::error::Error;

    /// Finds or fetches the kernel and its boot stub or loader; with `pin`
    /// (`--locked`), refuses any that differ from the lock file's.
    fn resolve_inputs(
        &self,
        profile: &Profile,
        pin: Option<&LockEntry>,
        context: &Context,
    ) -> Result<ResolvedInputs<Self::Inputs>, Self::Error>;

    /// The profile's drivers with their dependencies, in load order.
    fn modules(
        &self,
        profile: &Profile,
        inputs: &Self::Inputs,
        context: &Context,
    ) -> Result<ChosenModules<Self::Modules>, Self::Error>;

    /// The root file system the kernel unpacks into RAM: the writer's own
    /// files (drivers, boot configuration) and `content`, in the kernel's
    /// format.
    fn root_image(
        &self,
        profile: &Profile,
        inputs: &Self::Inputs,
        modules: &Self::Modules,
        content: &RootContent,
        context: &Context,
    ) -> Result<RootImage, Self::Error>;

    /// The EFI program the firmware starts (signed with `[secure_boot]`),
    /// and what the firmware will measure of it.
    fn boot_image(
        &self,
        profile: &Profile,
        inputs: &Self::Inputs,
        root: &RootImage,
        context: &Context,
    ) -> Result<BootImage, Self::Error>;

    /// Writes what machines boot from (a disk image, a netboot set) into
    /// `staging`; answers their paths in it, in the order a report lists
    /// them.
    fn write_artifacts(
        &self,
        profile: &Profile,
        inputs: &Self::Inputs,
        root: &RootImage,
        boot: &BootImage,
        staging: &Staging,
        context: &Context,
    ) -> Result<Vec<String>, Self::Error>;
}

/// What a writer's stages take from the build's options.
pub struct Context<'a> {
    /// Downloaded and unpacked packages, and whatever else a writer keeps
    /// by content.
    pub cache: &'a Cache,
    /// The lock file, named when `--locked` finds an input changed.
    pub lockfile: &'a Path,
    /// Where firmware named by drivers is looked up.
    pub firmware_dir: &'a Path,
    /// The time written into every artifact (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
    pub progress: &'a Progress,
}

/// What [`TargetWriter::resolve_inputs`] found.
pub struct ResolvedInputs<I> {
    /// The writer's own view of them, for its later stages.
    pub inputs: I,
    /// What the manifest says of the kernel; its `init_size` is the
    /// kernel's term of the RAM budget.
    pub kernel: KernelSummary,
    /// The kernel's lock-file record (`inputs.kernel` in the manifest).
    pub kernel_record: InputRecord,
    /// The boot stub's or loader's (`inputs.stub`).
    pub stub_record: InputRecord,
}

/// What [`TargetWriter::modules`] chose.
pub struct ChosenModules<M> {
    /// The writer's own view of them, for its later stages.
    pub modules: M,
    /// What the manifest says of them.
    pub summary: ModuleSummary,
    pub firmware: FirmwareSummary,
}

/// What goes into the root on every kernel besides the writer's own files
/// (the profile's `[[files]]`, `[[binaries]]` and settings come with the
/// profile).
pub struct RootContent<'a> {
    /// `init` and `hostd`.
    pub programs: &'a GuestBinaries,
    /// The boot-time containers' image archives and manifest.
    pub containers: &'a ContainerPlan,
}

/// The root file system as the kernel loads it.
pub struct RootImage {
    /// Compressed, as the boot loader hands it to the kernel.
    pub bytes: Vec<u8>,
    /// What the manifest says of it; its sizes are the root's terms of the
    /// RAM budget.
    pub summary: InitramfsSummary,
}

/// The EFI program the firmware starts, with what the manifest says of it.
pub struct BootImage {
    /// Signed when the profile has `[secure_boot]`.
    pub efi: Vec<u8>,
    /// What the firmware will measure, when the writer knows.
    pub measured_boot: Option<MeasuredBoot>,
    /// Who signed it (`None`: not signed).
    pub secure_boot: Option<SecureBootSummary>,
}

#[derive(Debug, Serialize)]
pub struct KernelSummary {
    pub release: String,
    pub version: String,
    /// Bytes of memory the kernel needs to start.
    pub init_size: u64,
}

#[derive(Debug, Serialize)]
pub struct ModuleSummary {
    /// Loaded by init at boot, in load order (dependencies included).
    pub boot: Vec<String>,
    /// In the image, loaded on demand.
    pub on_demand: Vec<String>,
    /// Requested but built into the kernel.
    pub builtin: Vec<String>,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct FirmwareSummary {
    pub included: Vec<String>,
    /// Named by a module but absent on the build host: `module: file`.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct InitramfsSummary {
    pub entries: usize,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    pub compression: String,
    pub level: i32,
    pub window_log: u32,
}
