//! The build pipeline: profile -> resolved inputs -> modules -> root image
//! (initramfs) -> boot image (UKI) -> disk image and netboot set -> manifest
//! and SHA256SUMS. Each stage is a function from its inputs to one artifact;
//! everything is written into a staging directory and published whole at the
//! end.
//!
//! This module owns what is the same on every kernel: the profile, the
//! boot-time containers' images, `init` and `hostd`, the RAM budget, the
//! manifest, the lock file and the output directory. The kernel-specific
//! stages run through the [`TargetWriter`] the profile's `[target] kernel`
//! picks ([`crate::target`]; Linux: [`LinuxTarget`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::containers::{self, ContainerError, ContainerPlan};
use crate::guest_binaries::{self, GuestBinaries, GuestBinaryError};
use crate::hashing::sha256_file;
use crate::input_file::{self, SourceFileError};
use crate::lock::{ImageLock, LockEntry, LockError, LockFile};
use crate::output::{OutputError, Staging};
use crate::profile::{self, FileContent, Profile, ProfileError, TargetKernel};
use crate::progress::{size, Progress};
use crate::pull::{self, PullContext, PullError};
use crate::sources::{Cache, InputRecord};
use crate::target::linux::{LinuxError, LinuxTarget};
use crate::target::{
    Context, FirmwareSummary, InitramfsSummary, KernelSummary, ModuleSummary, RootContent,
    TargetWriter,
};

pub const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Profile name or path.
    pub profile: String,
    pub out_dir: PathBuf,
    pub cache: Cache,
    pub lockfile: PathBuf,
    pub locked: bool,
    pub bin_dir: Option<PathBuf>,
    pub source_date_epoch: u64,
    /// Firmware is taken from here when modules name it.
    pub firmware_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    GuestBinary(#[from] GuestBinaryError),
    #[error(transparent)]
    Containers(#[from] Box<ContainerError>),
    #[error(transparent)]
    Pull(#[from] Box<PullError>),
    /// A stage of the Linux target writer.
    #[error(transparent)]
    Linux(Box<LinuxError>),
    #[error(transparent)]
    SourceFile(#[from] SourceFileError),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {profile}: the image needs {required_mib} MiB of RAM (kernel {kernel_mib} MiB + initramfs {compressed_mib} MiB compressed + {uncompressed_mib} MiB unpacked{images} + headroom {headroom_mib} MiB), above min_ram_mib = {min_ram_mib}; raise min_ram_mib or drop modules/files{fix}",
        images = boot_images_term(*.boot_images_mib),
        fix = if *.boot_images_mib > 0 { ", or use smaller boot-time images" } else { "" })]
    RamBudget {
        profile: String,
        required_mib: u64,
        kernel_mib: u64,
        compressed_mib: u64,
        uncompressed_mib: u64,
        /// hostd's image store after the boot-time imports (0 without
        /// containers).
        boot_images_mib: u64,
        headroom_mib: u64,
        min_ram_mib: u64,
    },
    #[error("serialising the manifest")]
    Json(#[from] serde_json::Error),
}

impl From<LinuxError> for BuildError {
    fn from(error: LinuxError) -> Self {
        BuildError::Linux(Box::new(error))
    }
}

/// What a finished build reports.
#[derive(Debug)]
pub struct BuildReport {
    pub profile: String,
    pub out_dir: PathBuf,
    pub artifacts: Vec<(String, u64)>,
    pub elapsed: Duration,
    pub manifest: Manifest,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub mkhost_version: String,
    pub profile: ProfileSummary,
    pub source_date_epoch: u64,
    pub kernel: KernelSummary,
    pub inputs: BTreeMap<String, InputRecord>,
    pub programs: BTreeMap<String, FileSummary>,
    pub modules: ModuleSummary,
    pub firmware: FirmwareSummary,
    pub initramfs: InitramfsSummary,
    pub ram: RamSummary,
    /// Boot-time containers, in profile order.
    pub containers: Vec<ContainerSummary>,
    /// What the firmware measures of the boot image (on Linux the PCR 11
    /// value the UKI leaves in a TPM); `None` when the target does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_boot: Option<crate::secure_boot::MeasuredBoot>,
    /// Who signed the boot image (`None`: not signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<crate::secure_boot::SecureBootSummary>,
    pub artifacts: BTreeMap<String, FileSummary>,
}

/// A boot-time container as the image carries it.
#[derive(Debug, Serialize)]
pub struct ContainerSummary {
    pub name: String,
    /// The reference hostd starts it from, as the profile gives it (the
    /// canonical reference for an image pulled by reference).
    pub image: String,
    /// What that reference resolved to at build time (not for `pull =
    /// "boot"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub restart: String,
    /// For an image named by reference: who pulls it, `build` or `boot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<&'static str>,
    /// For an image pulled at build time: the image manifest's digest (as
    /// in `mkhost.lock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// The archive holding the image (`/usr/share/hostd/images/<sha256>.tar`);
    /// none for `pull = "boot"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProfileSummary {
    pub name: String,
    pub description: String,
    pub files: Vec<String>,
    pub hostname: String,
    pub cmdline: String,
    pub min_ram_mib: u64,
}

#[derive(Debug, Serialize, Clone)]
pub struct FileSummary {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct RamSummary {
    pub kernel_mib: u64,
    pub initramfs_compressed_mib: u64,
    pub initramfs_unpacked_mib: u64,
    /// hostd's image store once it has imported the boot-time container
    /// archives: the blobs it keeps plus every distinct layer unpacked
    /// ([`ContainerPlan::boot_store`]); 0 without containers.
    pub boot_images_mib: u64,
    pub headroom_mib: u64,
    pub required_mib: u64,
    pub min_ram_mib: u64,
}

/// Runs the whole pipeline for one profile, with the target writer its
/// `[target] kernel` names.
pub fn build(options: &BuildOptions, progress: &Progress) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let profile = profile::load(&options.profile)?;
    match profile.target {
        TargetKernel::Linux => build_for(&LinuxTarget, profile, options, progress, started),
    }
}

/// The pipeline: the kernel-neutral stages here, the kernel's through
/// `target`.
fn build_for<T: TargetWriter>(
    target: &T,
    profile: Profile,
    options: &BuildOptions,
    progress: &Progress,
    started: Instant,
) -> Result<BuildReport, BuildError>
where
    BuildError: From<T::Error>,
{
    check_sources(&profile)?;
    let lockfile = LockFile::read(&options.lockfile)?;
    let pin = if options.locked {
        Some(lockfile.entry(&options.lockfile, &profile.name)?.clone())
    } else {
        None
    };
    let context = Context {
        cache: &options.cache,
        lockfile: &options.lockfile,
        firmware_dir: &options.firmware_dir,
        source_date_epoch: options.source_date_epoch,
        progress,
    };

    let resolved = target.resolve_inputs(&profile, pin.as_ref(), &context)?;
    let (container_plan, image_digests) =
        check_containers(&profile, options, pin.as_ref(), progress)?;
    let programs = locate_guest_binaries(options, progress)?;
    let modules = target.modules(&profile, &resolved.inputs, &context)?;
    let content = RootContent {
        programs: &programs,
        containers: &container_plan,
    };
    let root = target.root_image(
        &profile,
        &resolved.inputs,
        &modules.modules,
        &content,
        &context,
    )?;
    let ram = ram_budget(
        &profile,
        resolved.kernel.init_size,
        root.summary.uncompressed_bytes,
        root.summary.compressed_bytes,
        container_plan.boot_store().bytes(),
    )?;
    let boot = target.boot_image(&profile, &resolved.inputs, &root, &context)?;

    let staging = Staging::create(&options.out_dir, &profile.name)?;
    let boot_artifacts =
        target.write_artifacts(&profile, &resolved.inputs, &root, &boot, &staging, &context)?;
    let mut artifacts = BTreeMap::new();
    for rel in &boot_artifacts {
        artifacts.insert(rel.clone(), file_summary(&staging.path(rel))?);
    }
    let manifest = Manifest {
        mkhost_version: env!("CARGO_PKG_VERSION").to_string(),
        profile: ProfileSummary::new(&profile),
        source_date_epoch: options.source_date_epoch,
        kernel: resolved.kernel,
        inputs: BTreeMap::from([
            ("kernel".to_string(), resolved.kernel_record.clone()),
            ("stub".to_string(), resolved.stub_record.clone()),
        ]),
        programs: BTreeMap::from([
            ("init".to_string(), file_summary(&programs.init)?),
            ("hostd".to_string(), file_summary(&programs.hostd)?),
        ]),
        modules: modules.summary,
        firmware: modules.firmware,
        initramfs: root.summary,
        ram,
        containers: ContainerSummary::all(&profile, &container_plan, &image_digests),
        measured_boot: boot.measured_boot,
        secure_boot: boot.secure_boot,
        artifacts,
    };
    write_manifest(&staging, &manifest)?;

    let mut report_artifacts = Vec::new();
    for rel in boot_artifacts
        .into_iter()
        .chain(["manifest.json".into(), "SHA256SUMS".into()])
    {
        let len = std::fs::metadata(staging.path(&rel)).map_or(0, |m| m.len());
        report_artifacts.push((rel, len));
    }
    let out_dir = staging.publish()?;
    update_lock(
        lockfile,
        options,
        &profile,
        resolved.kernel_record,
        resolved.stub_record,
        image_digests,
    )?;

    Ok(BuildReport {
        profile: profile.name.clone(),
        out_dir,
        artifacts: report_artifacts,
        elapsed: started.elapsed(),
        manifest,
    })
}

/// Before anything is fetched: every file the profile names to copy into
/// the image is a regular file (or a link to one) within the size limit.
/// Only metadata is read here; the files are read (again checked, and never
/// past the limit) when the root image is assembled.
pub(crate) fn check_sources(profile: &Profile) -> Result<(), SourceFileError> {
    let limit = input_file::source_limit(profile.min_ram_mib);
    for file in &profile.files {
        if let FileContent::Source(path) = &file.content {
            input_file::check(path, limit)
                .map_err(|err| SourceFileError::new(&file.origin, "[[files]]", err))?;
        }
    }
    for binary in &profile.binaries {
        input_file::check(&binary.source, limit)
            .map_err(|err| SourceFileError::new(&binary.origin, "[[binaries]]", err))?;
    }
    Ok(())
}

/// Stages: the images named by reference pulled (those `pull = "build"`),
/// then the boot-time containers' images checked; empty without any. Also
/// answers the digest each pulled reference resolved to.
fn check_containers(
    profile: &Profile,
    options: &BuildOptions,
    pin: Option<&LockEntry>,
    progress: &Progress,
) -> Result<(ContainerPlan, BTreeMap<String, String>), BuildError> {
    if profile.containers.is_empty() {
        return Ok((ContainerPlan::default(), BTreeMap::new()));
    }
    let pulls = pull::pull_images(
        &profile.containers,
        &PullContext {
            profile: &profile.name,
            cache_root: &options.cache.root,
            registries: &profile.registries,
            registries_origin: profile.registries_origin.as_ref(),
            lockfile: &options.lockfile,
            locked: pin.map(|p| &p.images),
        },
        progress,
    )?;
    let stage = progress.stage("checking container images");
    let plan = containers::plan(
        &pulls.specs,
        &options.cache.root,
        profile.min_ram_mib,
        &|done, total| stage.set_position(done, total),
    )?;
    let store = plan.boot_store();
    stage.finish(&format!(
        "{} containers, {} archives, {}; at boot the image store holds {} ({} blobs + {} unpacked layers)",
        plan.containers.len(),
        plan.archives.len(),
        size(plan.bytes()),
        size(store.bytes()),
        size(store.blob_bytes),
        size(store.unpacked_bytes)
    ));
    Ok((plan, pulls.digests))
}

/// Stage: the static `init` and `hostd`.
fn locate_guest_binaries(
    options: &BuildOptions,
    progress: &Progress,
) -> Result<GuestBinaries, BuildError> {
    let stage = progress.stage("building init and hostd");
    let programs = guest_binaries::locate(options.bin_dir.as_deref())?;
    stage.finish("static binaries ready");
    Ok(programs)
}

/// Stage: `manifest.json` and `SHA256SUMS` in the staging directory.
fn write_manifest(staging: &Staging, manifest: &Manifest) -> Result<(), BuildError> {
    let mut manifest_json = serde_json::to_vec_pretty(manifest)?;
    manifest_json.push(b'\n');
    staging.write("manifest.json", &manifest_json)?;
    staging.write_sums()?;
    Ok(())
}

/// Records the kernel, stub and pulled images (canonical reference ->
/// manifest digest) this profile was built with in the lock file.
fn update_lock(
    mut lockfile: LockFile,
    options: &BuildOptions,
    profile: &Profile,
    kernel: InputRecord,
    stub: InputRecord,
    image_digests: BTreeMap<String, String>,
) -> Result<(), BuildError> {
    lockfile.profiles.insert(
        profile.name.clone(),
        LockEntry {
            kernel,
            stub,
            images: image_digests
                .into_iter()
                .map(|(reference, digest)| (reference, ImageLock { digest }))
                .collect(),
        },
    );
    lockfile.write(&options.lockfile)?;
    Ok(())
}

impl ProfileSummary {
    fn new(profile: &Profile) -> Self {
        ProfileSummary {
            name: profile.name.clone(),
            description: profile.description.clone(),
            files: profile
                .files_chain
                .iter()
                .map(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default()
                })
                .collect(),
            hostname: profile.hostname.clone(),
            cmdline: profile.cmdline.clone(),
            min_ram_mib: profile.min_ram_mib,
        }
    }
}

impl ContainerSummary {
    /// The boot-time containers, in profile order (the plan keeps the
    /// profile's), with the digests of the images pulled at build time.
    fn all(
        profile: &Profile,
        container_plan: &ContainerPlan,
        image_digests: &BTreeMap<String, String>,
    ) -> Vec<Self> {
        container_plan
            .containers
            .iter()
            .zip(&profile.containers)
            .map(|(c, spec)| {
                let archive = c.archive.map(|i| &container_plan.archives[i]);
                ContainerSummary {
                    name: c.request.name.clone().unwrap_or_default(),
                    image: c.request.image.clone(),
                    image_id: c.image_id.clone(),
                    restart: c.request.restart.to_string(),
                    pull: spec.pull.as_ref().map(|p| p.when.as_str()),
                    manifest_digest: spec
                        .pull
                        .as_ref()
                        .and_then(|p| image_digests.get(&p.reference.canonical()).cloned()),
                    archive_sha256: archive.map(|a| a.sha256.clone()),
                    archive_bytes: archive.map(|a| a.bytes),
                }
            })
            .collect()
    }
}

/// The RAM the booted image needs: the kernel's `init_size`, the compressed
/// initramfs and its unpacked tree (the boot-time archives are in both), the
/// image store hostd fills from those archives at boot (`boot_images`
/// bytes: blobs + unpacked layers, on the same RAM-backed root) and the
/// profile's headroom; each term rounded up to whole MiB.
fn ram_budget(
    profile: &Profile,
    kernel_init_size: u64,
    uncompressed: u64,
    compressed: u64,
    boot_images: u64,
) -> Result<RamSummary, BuildError> {
    let mib = |bytes: u64| bytes.div_ceil(MIB);
    let kernel_mib = mib(kernel_init_size);
    let compressed_mib = mib(compressed);
    let uncompressed_mib = mib(uncompressed);
    let boot_images_mib = mib(boot_images);
    let required_mib =
        kernel_mib + compressed_mib + uncompressed_mib + boot_images_mib + profile.ram_headroom_mib;
    if required_mib > profile.min_ram_mib {
        return Err(BuildError::RamBudget {
            profile: profile.name.clone(),
            required_mib,
            kernel_mib,
            compressed_mib,
            uncompressed_mib,
            boot_images_mib,
            headroom_mib: profile.ram_headroom_mib,
            min_ram_mib: profile.min_ram_mib,
        });
    }
    Ok(RamSummary {
        kernel_mib,
        initramfs_compressed_mib: compressed_mib,
        initramfs_unpacked_mib: uncompressed_mib,
        boot_images_mib,
        headroom_mib: profile.ram_headroom_mib,
        required_mib,
        min_ram_mib: profile.min_ram_mib,
    })
}

/// The boot-time images term of [`BuildError::RamBudget`]; empty without any.
fn boot_images_term(mib: u64) -> String {
    if mib == 0 {
        String::new()
    } else {
        format!(" + boot-time images {mib} MiB (store blobs + unpacked layers)")
    }
}

fn file_summary(path: &Path) -> Result<FileSummary, BuildError> {
    let read_err = |source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    };
    Ok(FileSummary {
        bytes: std::fs::metadata(path).map_err(read_err)?.len(),
        sha256: sha256_file(path).map_err(read_err)?,
    })
}
