//! The Linux target writer ([`LinuxTarget`]): Debian's kernel (or the
//! host's, or a file) with its modules and systemd-stub; the initramfs, a
//! cpio newc tree compressed with zstd; the UKI (stub, os-release, command
//! line, kernel, initramfs) with its PCR 11 prediction and, under
//! `[secure_boot]`, its signed PCR policy and Authenticode signature; the
//! FAT32 ESP in a GPT disk image; the PXE set.
//!
//! The initramfs holds mkhost's own tree (`/init`, `/usr/bin/hostd`,
//! `/dev` nodes, modules with filtered depmod files, firmware,
//! `/etc/mkhost/boot.json`, `/etc/os-release`), then the debug shell, the
//! boot-time containers' archives, and the profile's `[[binaries]]` and
//! `[[files]]`, which may replace none of what came before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mkhost_image::{bzimage, disk, esp, uki};
use mkhost_initramfs::{compress, cpio, elf, modules};
use mkhost_shared::boot_config::BootConfig;
use mkhost_shared::paths;

use super::{
    BootImage, ChosenModules, Context, FirmwareSummary, InitramfsSummary, KernelSummary,
    ModuleSummary, ResolvedInputs, RootContent, RootImage, TargetWriter,
};
use crate::containers::ContainerPlan;
use crate::guest_binaries::GuestBinaries;
use crate::hashing::{derived_uuid, derived_volume_id, sha256_hex};
use crate::input_file::{self, SourceFileError};
use crate::layout;
use crate::lock::{self, LockEntry, LockError};
use crate::output::{OutputError, Staging};
use crate::profile::{self, FileContent, LoadPolicy, Profile};
use crate::progress::{size, Progress};
use crate::sources::{self, Cache, ResolvedKernel, ResolvedStub, SourceError};

/// Builds images for Linux: the one [`TargetWriter`] (`[target] kernel =
/// "linux"`, the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxTarget;

/// The kernel and the stub a Linux image is made from.
pub struct LinuxInputs {
    kernel: ResolvedKernel,
    stub: ResolvedStub,
    /// The kernel image (bzImage), as read.
    kernel_image: Vec<u8>,
}

impl TargetWriter for LinuxTarget {
    type Inputs = LinuxInputs;
    type Modules = ModulePlan;
    type Error = LinuxError;

    fn resolve_inputs(
        &self,
        profile: &Profile,
        pin: Option<&LockEntry>,
        context: &Context,
    ) -> Result<ResolvedInputs<LinuxInputs>, LinuxError> {
        let (kernel, stub) = resolve_kernel_and_stub(profile, pin, context)?;
        let (kernel_image, kernel_info) = read_kernel(&kernel)?;
        Ok(ResolvedInputs {
            kernel: KernelSummary {
                release: kernel.release.clone(),
                version: kernel_info.version,
                init_size: kernel_info.init_size,
            },
            kernel_record: kernel.record.clone(),
            stub_record: stub.record.clone(),
            inputs: LinuxInputs {
                kernel,
                stub,
                kernel_image,
            },
        })
    }

    fn modules(
        &self,
        profile: &Profile,
        inputs: &LinuxInputs,
        context: &Context,
    ) -> Result<ChosenModules<ModulePlan>, LinuxError> {
        let modules = resolve_modules(profile, &inputs.kernel, context)?;
        Ok(ChosenModules {
            summary: module_summary(&modules),
            firmware: firmware_summary(&modules),
            modules,
        })
    }

    fn root_image(
        &self,
        profile: &Profile,
        inputs: &LinuxInputs,
        modules: &ModulePlan,
        content: &RootContent,
        context: &Context,
    ) -> Result<RootImage, LinuxError> {
        let initramfs = write_initramfs(
            profile,
            &inputs.kernel,
            content.programs,
            modules,
            content.containers,
            context,
        )?;
        let initrd = compress_initramfs(profile, &initramfs.bytes, context)?;
        Ok(RootImage {
            summary: InitramfsSummary {
                entries: initramfs.entries,
                uncompressed_bytes: initramfs.bytes.len() as u64,
                compressed_bytes: initrd.len() as u64,
                compression: "zstd".into(),
                level: profile.compression_level,
                window_log: compress::WINDOW_LOG,
            },
            bytes: initrd,
        })
    }

    fn boot_image(
        &self,
        profile: &Profile,
        inputs: &LinuxInputs,
        root: &RootImage,
        context: &Context,
    ) -> Result<BootImage, LinuxError> {
        let (efi, measured_boot) = assemble_efi(
            profile,
            &inputs.kernel,
            &inputs.stub,
            &inputs.kernel_image,
            &root.bytes,
            context.progress,
        )?;
        let (efi, secure_boot) = sign_efi(profile, efi, context.progress)?;
        Ok(BootImage {
            efi,
            measured_boot: Some(measured_boot),
            secure_boot,
        })
    }

    fn write_artifacts(
        &self,
        profile: &Profile,
        inputs: &LinuxInputs,
        root: &RootImage,
        boot: &BootImage,
        staging: &Staging,
        context: &Context,
    ) -> Result<Vec<String>, LinuxError> {
        let img_name = format!("mkhost-{}.img", profile.name);
        let efi_name = format!("mkhost-{}.efi", profile.name);
        staging.write(&efi_name, &boot.efi)?;
        write_disk_image(staging, &img_name, &boot.efi, context)?;
        write_pxe_set(
            staging,
            profile,
            &inputs.kernel_image,
            &root.bytes,
            context.progress,
        )?;
        Ok(vec![
            img_name,
            efi_name,
            "pxe/vmlinuz".into(),
            "pxe/initramfs.img".into(),
            "pxe/boot.ipxe".into(),
        ])
    }
}

/// What can go wrong making a Linux image.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    SourceFile(#[from] SourceFileError),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: [secure_boot]: signing the UKI")]
    Sign {
        origin: String,
        #[source]
        source: mkhost_signing::SigningError,
    },
    #[error("{origin}: [secure_boot] pcr_key: signing the PCR policy")]
    PcrPolicy {
        origin: String,
        #[source]
        source: mkhost_signing::SigningError,
    },
    #[error("kernel {path}")]
    Kernel {
        path: PathBuf,
        #[source]
        source: bzimage::BzImageError,
    },
    #[error(
        "kernel {path} reports release {image_release}, but its modules are for {modules_release}"
    )]
    ReleaseMismatch {
        path: PathBuf,
        image_release: String,
        modules_release: String,
    },
    #[error("reading the modules of kernel {release} in {path}")]
    ModuleIndex {
        release: String,
        path: PathBuf,
        #[source]
        source: modules::ModuleError,
    },
    #[error("{origin}: {source}")]
    Module {
        origin: String,
        #[source]
        source: modules::ModuleError,
    },
    #[error("{origin}: binary {path}")]
    Binary {
        origin: String,
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
    #[error("{origin}: debug_shell needs busybox at {path} (install busybox-static, or set [debug] busybox = \"PATH\")")]
    DebugShell {
        origin: String,
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
    #[error("{origin}: /{dest} is already in the image: {owner}; choose another dest")]
    Occupied {
        origin: String,
        dest: String,
        owner: String,
    },
    #[error("{origin}: cannot place /{dest} in the initramfs")]
    Place {
        origin: String,
        dest: String,
        #[source]
        source: Box<cpio::CpioError>,
    },
    #[error("initramfs: {0}")]
    Cpio(#[from] cpio::CpioError),
    #[error("compressing the initramfs")]
    Compress(#[from] compress::CompressError),
    #[error("serialising boot.json")]
    BootConfig(#[from] serde_json::Error),
    #[error("assembling the UKI")]
    Uki(#[from] uki::UkiError),
    #[error("building the EFI system partition")]
    Esp(#[from] esp::EspError),
    #[error("writing the GPT disk image")]
    Disk(#[from] disk::DiskError),
}

/// Written to the ESP as `mkhost/host.toml.example`: an operator copies it to
/// `mkhost/host.toml` on the stick to give that host its identity.
const HOST_TOML_EXAMPLE: &str = "\
# Copy this file to mkhost/host.toml on this stick to give the host booting
# from it its own identity. Kernel command-line mkhost.* parameters win over
# this file; this file wins over the image's profile. A broken file is
# reported on the console and the host boots with the profile's settings.

# hostname = \"rack1-node07\"

# [network]
# dhcp = true                 # DHCP on every wired link with carrier
# dhcp_timeout_ms = 10000     # the host is ready without a lease after this
# dns = [\"10.0.0.1\"]

# [network.interfaces.eth0]   # a static address instead of DHCP on eth0
# address = \"10.0.0.7/24\"
# gateway = \"10.0.0.1\"
";

/// Stage: the kernel and the UKI stub, downloaded or found, and checked
/// against the lock file when it pins them.
fn resolve_kernel_and_stub(
    profile: &Profile,
    pin: Option<&LockEntry>,
    context: &Context,
) -> Result<(ResolvedKernel, ResolvedStub), LinuxError> {
    let progress = context.progress;
    let stage = progress.stage("resolving kernel and stub");
    let kernel = sources::resolve_kernel(
        &profile.kernel,
        context.cache,
        pin.map(|p| &p.kernel),
        progress,
    )?;
    let stub = sources::resolve_stub(&profile.stub, context.cache, pin.map(|p| &p.stub), progress)?;
    if let Some(pin) = pin {
        lock::check(context.lockfile, "kernel", &pin.kernel, &kernel.record)?;
        lock::check(context.lockfile, "stub", &pin.stub, &stub.record)?;
    }
    stage.finish(&format!(
        "kernel {} ({}), stub {}",
        kernel.release,
        kernel
            .record
            .version
            .as_deref()
            .unwrap_or(&kernel.record.source),
        stub.record
            .version
            .as_deref()
            .unwrap_or(&stub.record.source)
    ));
    Ok((kernel, stub))
}

/// Stage: the kernel image and what its header says, which must be the
/// release its modules are for.
fn read_kernel(kernel: &ResolvedKernel) -> Result<(Vec<u8>, bzimage::KernelInfo), LinuxError> {
    let kernel_bytes = read(&kernel.image)?;
    let kernel_info =
        bzimage::parse_bzimage(&kernel_bytes).map_err(|source| LinuxError::Kernel {
            path: kernel.image.clone(),
            source,
        })?;
    if kernel_info.release != kernel.release {
        return Err(LinuxError::ReleaseMismatch {
            path: kernel.image.clone(),
            image_release: kernel_info.release.clone(),
            modules_release: kernel.release.clone(),
        });
    }
    Ok((kernel_bytes, kernel_info))
}

/// Stage: the modules and firmware that go into the image.
fn resolve_modules(
    profile: &Profile,
    kernel: &ResolvedKernel,
    context: &Context,
) -> Result<ModulePlan, LinuxError> {
    let stage = context.progress.stage("resolving modules");
    let module_plan = plan_modules(profile, kernel, context.firmware_dir)?;
    stage.finish(&format!(
        "{} modules ({} at boot), {} firmware files, {} missing",
        module_plan.all.len(),
        module_plan.boot.len(),
        module_plan.firmware.len(),
        module_plan.missing_firmware.len()
    ));
    Ok(module_plan)
}

/// The uncompressed initramfs.
struct Cpio {
    /// The archive in newc format.
    bytes: Vec<u8>,
    /// How many entries it holds.
    entries: usize,
}

/// Stage: the initramfs tree, written as a newc archive.
fn write_initramfs(
    profile: &Profile,
    kernel: &ResolvedKernel,
    programs: &GuestBinaries,
    module_plan: &ModulePlan,
    container_plan: &ContainerPlan,
    context: &Context,
) -> Result<Cpio, LinuxError> {
    let stage = context.progress.stage(&if container_plan.is_empty() {
        "assembling initramfs".to_string()
    } else {
        format!(
            "assembling initramfs (with {} of container images)",
            size(container_plan.bytes())
        )
    });
    let mut archive = assemble_initramfs(profile, kernel, programs, module_plan, container_plan)?;
    // init and hostd are built from one crate and share most of their code:
    // side by side, zstd's 8 MiB window finds it twice; sorted by path the
    // modules between them push much of hostd out of init's reach.
    archive.put_first(paths::INIT);
    archive.put_first(paths::HOSTD);
    let mut cpio_bytes = Vec::new();
    let mtime = u32::try_from(context.source_date_epoch).unwrap_or(u32::MAX);
    archive.write_newc(&mut cpio_bytes, mtime)?;
    stage.finish(&format!(
        "{} entries, {}",
        archive.len(),
        size(cpio_bytes.len() as u64)
    ));
    Ok(Cpio {
        bytes: cpio_bytes,
        entries: archive.len(),
    })
}

/// Stage: the zstd-compressed initramfs.
fn compress_initramfs(
    profile: &Profile,
    cpio_bytes: &[u8],
    context: &Context,
) -> Result<Vec<u8>, LinuxError> {
    let stage = context.progress.stage(&format!(
        "compressing initramfs (zstd -{})",
        profile.compression_level
    ));
    let initrd = compress_cached(cpio_bytes, profile.compression_level, context.cache)?;
    stage.finish(&size(initrd.len() as u64));
    Ok(initrd)
}

/// Stage: the UKI (stub + os-release + command line + kernel + initramfs;
/// with `[secure_boot] pcr_key`, the signed PCR policy), and what the
/// manifest says of its measured boot.
fn assemble_efi(
    profile: &Profile,
    kernel: &ResolvedKernel,
    stub: &ResolvedStub,
    kernel_bytes: &[u8],
    initrd: &[u8],
    progress: &Progress,
) -> Result<(Vec<u8>, crate::secure_boot::MeasuredBoot), LinuxError> {
    let stage = progress.stage("assembling UKI");
    let stub_bytes = read(&stub.path)?;
    let osrel = os_release(profile, &kernel.release);
    let origin = profile.secure_boot.as_ref().map(|(_, o)| o.to_string());
    let pcr_error = |source| LinuxError::PcrPolicy {
        origin: origin.clone().unwrap_or_default(),
        source,
    };
    let pcr_signer = match &profile.secure_boot {
        Some((settings, _)) => crate::secure_boot::pcr_signer(settings).map_err(pcr_error)?,
        None => None,
    };
    let sections = uki::UkiSections {
        osrel: osrel.as_bytes(),
        cmdline: profile.cmdline.as_bytes(),
        uname: Some(kernel.release.as_bytes()),
        pcrpkey: pcr_signer.as_ref().map(|s| s.public_key_pem().as_bytes()),
        pcrsig: None,
        linux: kernel_bytes,
        initrd,
    };
    let mut efi = uki::assemble_uki(&stub_bytes, &sections)?;
    // What systemd-stub will measure; adding .pcrsig (never measured) and
    // the Authenticode signature (not a section) changes nothing of it.
    let pcr11 = mkhost_image::pcr::predict_pcr11(&efi)?;
    if let Some(signer) = &pcr_signer {
        // .pcrpkey is measured, .pcrsig is not: sign the PCR 11 of the UKI
        // with the key, then add the signature.
        let pcrsig = signer.sign_pcr11(&pcr11.sha256).map_err(pcr_error)?;
        efi = uki::assemble_uki(
            &stub_bytes,
            &uki::UkiSections {
                pcrsig: Some(pcrsig.as_bytes()),
                ..sections
            },
        )?;
    }
    stage.finish(&size(efi.len() as u64));
    let measured_boot = crate::secure_boot::measured_boot(pcr11, pcr_signer.as_ref());
    Ok((efi, measured_boot))
}

/// Stage: with `[secure_boot]`, the UKI signed by the db key (it is also
/// the disk image's `BOOTX64.EFI`).
fn sign_efi(
    profile: &Profile,
    efi: Vec<u8>,
    progress: &Progress,
) -> Result<(Vec<u8>, Option<crate::secure_boot::SecureBootSummary>), LinuxError> {
    let Some((settings, origin)) = &profile.secure_boot else {
        return Ok((efi, None));
    };
    let stage = progress.stage("signing UKI (Authenticode, sha256)");
    let (signed, summary) =
        crate::secure_boot::sign(&efi, settings).map_err(|source| LinuxError::Sign {
            origin: origin.to_string(),
            source,
        })?;
    stage.finish(&summary.signer);
    Ok((signed, Some(summary)))
}

/// Stage: the ESP holding the UKI, in a GPT disk image written to
/// `img_name` in the staging directory. Names and ids derive from the UKI.
fn write_disk_image(
    staging: &Staging,
    img_name: &str,
    efi: &[u8],
    context: &Context,
) -> Result<(), LinuxError> {
    let stage = context.progress.stage("writing GPT disk image");
    let seed = sha256_hex(efi);
    let esp_image = esp::build_esp(
        &[
            esp::EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: efi,
            },
            esp::EspFile {
                path: "mkhost/host.toml.example",
                data: HOST_TOML_EXAMPLE.as_bytes(),
            },
        ],
        esp::esp_size_for(efi.len() as u64),
        derived_volume_id(&seed),
        "MKHOST",
        context.source_date_epoch,
    )?;
    let disk_size = disk::write_gpt_disk(
        &staging.path(img_name),
        &esp_image,
        derived_uuid(&seed, "disk"),
        derived_uuid(&seed, "esp"),
    )?;
    drop(esp_image);
    stage.finish(&size(disk_size));
    Ok(())
}

/// Stage: kernel, initramfs and iPXE script for network boot.
fn write_pxe_set(
    staging: &Staging,
    profile: &Profile,
    kernel_bytes: &[u8],
    initrd: &[u8],
    progress: &Progress,
) -> Result<(), LinuxError> {
    let stage = progress.stage("writing PXE set");
    staging.write("pxe/vmlinuz", kernel_bytes)?;
    staging.write("pxe/initramfs.img", initrd)?;
    staging.write("pxe/boot.ipxe", boot_ipxe(profile).as_bytes())?;
    stage.finish("pxe/vmlinuz, pxe/initramfs.img, pxe/boot.ipxe");
    Ok(())
}

/// What the manifest says of the modules.
fn module_summary(module_plan: &ModulePlan) -> ModuleSummary {
    ModuleSummary {
        boot: module_plan.boot.iter().map(|m| m.name.clone()).collect(),
        on_demand: module_plan
            .all
            .iter()
            .filter(|m| !module_plan.boot.iter().any(|b| b.name == m.name))
            .map(|m| m.name.clone())
            .collect(),
        builtin: module_plan.builtin.clone(),
        bytes: module_plan.bytes,
    }
}

/// What the manifest says of the firmware the modules name.
fn firmware_summary(module_plan: &ModulePlan) -> FirmwareSummary {
    FirmwareSummary {
        included: module_plan
            .firmware
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        missing: module_plan.missing_firmware.clone(),
    }
}

/// The modules that go into the image.
pub struct ModulePlan {
    /// Loaded at boot, in load order.
    boot: Vec<modules::ModuleInfo>,
    /// Every module in the image, in load order.
    all: Vec<modules::ModuleInfo>,
    builtin: Vec<String>,
    /// (file name under /lib/firmware, path on the build host)
    firmware: Vec<(String, PathBuf)>,
    missing_firmware: Vec<String>,
    bytes: u64,
    /// `modules.absent`: the aliases of the kernel's modules the image
    /// leaves out, so init can name a device's missing driver.
    absent: String,
}

fn plan_modules(
    profile: &Profile,
    kernel: &ResolvedKernel,
    firmware_dir: &Path,
) -> Result<ModulePlan, LinuxError> {
    let index = modules::ModuleIndex::load(&kernel.modules_dir).map_err(|source| {
        LinuxError::ModuleIndex {
            release: kernel.release.clone(),
            path: kernel.modules_dir.clone(),
            source,
        }
    })?;
    // Check each request on its own first, so an unknown name points at its line.
    for request in &profile.modules {
        if let Err(source) = index.closure(std::slice::from_ref(&request.name)) {
            return Err(LinuxError::Module {
                origin: request.origin.to_string(),
                source,
            });
        }
    }
    let names = |policy: Option<LoadPolicy>| -> Vec<String> {
        profile
            .modules
            .iter()
            .filter(|m| policy.is_none_or(|p| m.load == p))
            .map(|m| m.name.clone())
            .collect()
    };
    let closure_err = |source| LinuxError::Module {
        origin: profile
            .files_chain
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        source,
    };
    let boot = index
        .closure(&names(Some(LoadPolicy::Boot)))
        .map_err(closure_err)?;
    let all = index.closure(&names(None)).map_err(closure_err)?;

    let mut firmware = BTreeMap::new();
    let mut missing = Vec::new();
    let mut bytes = 0;
    for module in &all.modules {
        bytes +=
            std::fs::metadata(kernel.modules_dir.join(&module.rel_path)).map_or(0, |m| m.len());
        let names = index
            .firmware(module)
            .map_err(|source| LinuxError::ModuleIndex {
                release: kernel.release.clone(),
                path: kernel.modules_dir.join(&module.rel_path),
                source,
            })?;
        for name in names {
            let path = firmware_dir.join(&name);
            if name.split('/').any(|c| c == ".." || c.is_empty()) {
                missing.push(format!("{}: {name} (unsafe name, skipped)", module.name));
            } else if path.is_file() {
                firmware.insert(name, path);
            } else {
                missing.push(format!("{}: {name}", module.name));
            }
        }
    }
    missing.sort();
    missing.dedup();
    let absent =
        modules::render_modules_absent(&index, &all.modules, &profile.module_sets, &kernel.release);
    Ok(ModulePlan {
        boot: boot.modules,
        all: all.modules,
        builtin: all.builtin,
        firmware: firmware.into_iter().collect(),
        missing_firmware: missing,
        bytes,
        absent,
    })
}

/// What was placed before the profile's own entries, for [`check_free`].
#[derive(Default)]
struct Owners {
    /// Who placed a path, for messages (what [`layout::OWNED`] lists is
    /// described from there).
    by_path: BTreeMap<String, String>,
    /// The debug shell's applet links: a `[[binaries]]` or `[[files]]` entry
    /// may put a real tool there instead (`/bin/ls`).
    replaceable: std::collections::BTreeSet<String>,
}

fn assemble_initramfs(
    profile: &Profile,
    kernel: &ResolvedKernel,
    programs: &GuestBinaries,
    plan: &ModulePlan,
    container_plan: &ContainerPlan,
) -> Result<cpio::Archive, LinuxError> {
    let mut archive = cpio::Archive::new();
    let mut owners = Owners::default();
    // mkhost's own content first, then the profile's [[binaries]] and
    // [[files]], which may not replace any of it, nor each other.
    add_base_tree(&mut archive, programs)?;
    add_modules(&mut archive, kernel, plan)?;
    for (name, _) in &plan.firmware {
        owners.by_path.insert(
            format!("{}/{name}", paths::in_archive(layout::FIRMWARE)),
            "firmware a module of the profile names".into(),
        );
    }
    add_boot_config(&mut archive, profile, kernel, plan)?;
    if profile.debug_shell {
        let before = paths_of(&archive);
        add_debug_shell(&mut archive, profile)?;
        for (path, node) in archive.entries() {
            if before.contains(path) {
                continue;
            }
            if matches!(node, cpio::Node::Symlink { target } if target == "busybox") {
                owners.replaceable.insert(path.to_string());
            } else {
                owners.by_path.insert(
                    path.to_string(),
                    "the debug shell's busybox (debug_shell = true)".into(),
                );
            }
        }
    }
    if !container_plan.is_empty() {
        add_container_images(&mut archive, container_plan)?;
    }
    add_binaries(&mut archive, profile, &mut owners)?;
    add_profile_files(&mut archive, profile, &owners)?;
    Ok(archive)
}

fn paths_of(archive: &cpio::Archive) -> std::collections::BTreeSet<String> {
    archive
        .entries()
        .map(|(path, _)| path.to_string())
        .collect()
}

/// Refuses a profile entry's `dest` when the image already holds it.
fn check_free(
    archive: &cpio::Archive,
    owners: &Owners,
    dest: &str,
    origin: &profile::Origin,
) -> Result<(), LinuxError> {
    if !archive.contains(dest) || owners.replaceable.contains(dest) {
        return Ok(());
    }
    let owner = owners
        .by_path
        .get(dest)
        .cloned()
        .or_else(|| {
            layout::claim(dest).map(|conflict| match conflict {
                layout::Conflict::Same(owned) | layout::Conflict::Inside(owned) => {
                    format!("mkhost's own {} ({})", owned.path, owned.what)
                }
                layout::Conflict::Holds(owned) => {
                    format!("a directory holding mkhost's own {}", owned.path)
                }
            })
        })
        .unwrap_or_else(|| "a directory the image needs".into());
    Err(LinuxError::Occupied {
        origin: origin.to_string(),
        dest: dest.to_string(),
        owner,
    })
}

/// The directories, device nodes and the guest binaries `init` and `hostd`.
fn add_base_tree(archive: &mut cpio::Archive, programs: &GuestBinaries) -> Result<(), LinuxError> {
    for dir in layout::MOUNTED
        .iter()
        .chain(&["/etc/mkhost", "/usr/bin", "/var/lib"])
    {
        archive.add_dir(dir, 0o755)?;
    }
    archive.add_dir("tmp", 0o1777)?;
    archive.add_char_dev(layout::CONSOLE, 0o600, 5, 1)?;
    archive.add_char_dev(layout::NULL, 0o666, 1, 3)?;
    archive.add_file(
        paths::in_archive(paths::INIT),
        0o755,
        cpio::FileData::Path(programs.init.clone()),
    )?;
    // The kernel runs /sbin/modprobe to autoload drivers; init answers as modprobe.
    archive.add_symlink(paths::in_archive(layout::MODPROBE), paths::INIT)?;
    archive.add_file(
        paths::in_archive(paths::HOSTD),
        0o755,
        cpio::FileData::Path(programs.hostd.clone()),
    )?;
    Ok(())
}

/// The modules with their index files, and the firmware they name.
fn add_modules(
    archive: &mut cpio::Archive,
    kernel: &ResolvedKernel,
    plan: &ModulePlan,
) -> Result<(), LinuxError> {
    let modules_root = format!("{}/{}", paths::in_archive(layout::MODULES), kernel.release);
    for module in &plan.all {
        archive.add_file(
            &format!("{modules_root}/{}", module.rel_path),
            0o644,
            cpio::FileData::Path(kernel.modules_dir.join(&module.rel_path)),
        )?;
    }
    archive.add_file(
        &format!("{modules_root}/modules.dep"),
        0o644,
        cpio::FileData::Bytes(modules::render_modules_dep(&plan.all).into_bytes()),
    )?;
    archive.add_file(
        &format!("{modules_root}/modules.alias"),
        0o644,
        cpio::FileData::Bytes(modules::render_modules_alias(&plan.all).into_bytes()),
    )?;
    archive.add_file(
        &format!("{modules_root}/modules.softdep"),
        0o644,
        cpio::FileData::Bytes(modules::render_modules_softdep(&plan.all).into_bytes()),
    )?;
    archive.add_file(
        &format!("{modules_root}/modules.absent"),
        0o644,
        cpio::FileData::Bytes(plan.absent.clone().into_bytes()),
    )?;
    let builtin = kernel.modules_dir.join("modules.builtin");
    if builtin.is_file() {
        archive.add_file(
            &format!("{modules_root}/modules.builtin"),
            0o644,
            cpio::FileData::Path(builtin),
        )?;
    }
    for (name, path) in &plan.firmware {
        archive.add_file(
            &format!("{}/{name}", paths::in_archive(layout::FIRMWARE)),
            0o644,
            cpio::FileData::Path(path.clone()),
        )?;
    }
    Ok(())
}

/// `/etc/mkhost/boot.json`, `/etc/os-release` and `/etc/hostname`.
fn add_boot_config(
    archive: &mut cpio::Archive,
    profile: &Profile,
    kernel: &ResolvedKernel,
    plan: &ModulePlan,
) -> Result<(), LinuxError> {
    let boot_config = BootConfig {
        profile: profile.name.clone(),
        kernel_release: kernel.release.clone(),
        hostname: profile.hostname.clone(),
        debug_shell: profile.debug_shell,
        modules: plan.boot.iter().map(|m| m.rel_path.clone()).collect(),
        sysctl: profile.sysctl.clone(),
        network: profile.network.clone(),
        container_networks: profile.container_networks.clone(),
        registries: profile.registries.without_credentials(),
        state: profile.state.clone(),
        hostd: profile.hostd.clone(),
    };
    if let Some((tls, _)) = &profile.docker_tls {
        // Root's alone: the server's private key is among them.
        let dir = paths::in_archive(paths::DOCKER_TLS_IMAGE);
        archive.add_dir(dir, 0o700)?;
        let [ca, cert, key] = paths::DOCKER_TLS_FILES;
        for (name, text) in [(ca, &tls.ca), (cert, &tls.cert), (key, &tls.key)] {
            archive.add_file(
                &format!("{dir}/{name}"),
                0o600,
                cpio::FileData::Bytes(text.clone().into_bytes()),
            )?;
        }
    }
    let mut boot_json = serde_json::to_vec_pretty(&boot_config)?;
    boot_json.push(b'\n');
    archive.add_file(
        paths::in_archive(paths::BOOT_CONFIG),
        0o644,
        cpio::FileData::Bytes(boot_json),
    )?;
    archive.add_file(
        paths::in_archive(layout::OS_RELEASE),
        0o644,
        cpio::FileData::Bytes(os_release(profile, &kernel.release).into_bytes()),
    )?;
    archive.add_file(
        paths::in_archive(layout::HOSTNAME),
        0o644,
        cpio::FileData::Bytes(format!("{}\n", profile.hostname).into_bytes()),
    )?;
    Ok(())
}

/// The profile's `[[binaries]]` with their interpreter and libraries. A
/// binary's `dest` may not replace anything already there; its libraries
/// are shared with whatever else needs them.
fn add_binaries(
    archive: &mut cpio::Archive,
    profile: &Profile,
    owners: &mut Owners,
) -> Result<(), LinuxError> {
    for binary in &profile.binaries {
        let binary_err = |source| LinuxError::Binary {
            origin: binary.origin.to_string(),
            path: binary.source.clone(),
            source,
        };
        check_free(archive, owners, &binary.dest, &binary.origin)?;
        let closure = elf::library_closure(&binary.source).map_err(binary_err)?;
        archive
            .add_file(
                &binary.dest,
                0o755,
                cpio::FileData::Path(binary.source.clone()),
            )
            .map_err(|source| LinuxError::Place {
                origin: binary.origin.to_string(),
                dest: binary.dest.clone(),
                source: Box::new(source),
            })?;
        owners.replaceable.remove(&binary.dest);
        owners.by_path.insert(
            binary.dest.clone(),
            format!("the [[binaries]] entry at {}", binary.origin),
        );
        for lib in closure.interpreter.iter().chain(closure.libraries.iter()) {
            let dest = lib.to_string_lossy().trim_start_matches('/').to_string();
            archive.add_file(&dest, 0o755, cpio::FileData::Path(lib.clone()))?;
            owners.by_path.entry(dest).or_insert_with(|| {
                format!(
                    "a shared library of the [[binaries]] entry at {}",
                    binary.origin
                )
            });
        }
    }
    Ok(())
}

/// The profile's `[[files]]`, none replacing anything already there; a
/// source is read with [`input_file::read`]: a regular file, never blocking,
/// never more than [`input_file::source_limit`].
fn add_profile_files(
    archive: &mut cpio::Archive,
    profile: &Profile,
    owners: &Owners,
) -> Result<(), LinuxError> {
    let limit = input_file::source_limit(profile.min_ram_mib);
    for file in &profile.files {
        check_free(archive, owners, &file.dest, &file.origin)?;
        let data = match &file.content {
            FileContent::Inline(text) => text.clone().into_bytes(),
            FileContent::Source(path) => input_file::read(path, limit)
                .map_err(|err| SourceFileError::new(&file.origin, "[[files]]", err))?,
        };
        archive
            .add_file(&file.dest, file.mode, cpio::FileData::Bytes(data))
            .map_err(|source| LinuxError::Place {
                origin: file.origin.to_string(),
                dest: file.dest.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// The boot-time containers' image archives and the manifest hostd reads.
fn add_container_images(
    archive: &mut cpio::Archive,
    container_plan: &ContainerPlan,
) -> Result<(), LinuxError> {
    for image_archive in &container_plan.archives {
        archive.add_file(
            &image_archive.dest(),
            0o644,
            cpio::FileData::Path(image_archive.source.clone()),
        )?;
    }
    archive.add_file(
        ContainerPlan::manifest_dest(),
        0o644,
        cpio::FileData::Bytes(container_plan.manifest_json()),
    )?;
    Ok(())
}

/// busybox at /bin/busybox with /bin/sh and its applets linked to it, for the
/// operator's shell on the console.
fn add_debug_shell(archive: &mut cpio::Archive, profile: &Profile) -> Result<(), LinuxError> {
    let busybox = &profile.busybox;
    let origin = profile
        .files_chain
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let closure = elf::library_closure(busybox).map_err(|source| LinuxError::DebugShell {
        origin: origin.clone(),
        path: busybox.clone(),
        source,
    })?;
    archive.add_file("bin/busybox", 0o755, cpio::FileData::Path(busybox.clone()))?;
    for lib in closure.interpreter.iter().chain(closure.libraries.iter()) {
        let dest = lib.to_string_lossy().trim_start_matches('/').to_string();
        archive.add_file(&dest, 0o755, cpio::FileData::Path(lib.clone()))?;
    }
    // The applet list comes from the busybox binary itself (on the build host).
    let applets = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let mut names: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.[".contains(c))
        })
        .collect();
    names.push("sh");
    names.sort_unstable();
    names.dedup();
    for name in names {
        let path = format!("bin/{name}");
        if name != "busybox" && !archive.contains(&path) {
            archive.add_symlink(&path, "busybox")?;
        }
    }
    Ok(())
}

/// zstd of the cpio, cached by content: a warm build with unchanged inputs skips
/// the compression (the output is identical either way).
fn compress_cached(cpio_bytes: &[u8], level: i32, cache: &Cache) -> Result<Vec<u8>, LinuxError> {
    let key = format!(
        "{}-l{level}-w{}.zst",
        sha256_hex(cpio_bytes),
        compress::WINDOW_LOG
    );
    let path = cache.root.join("initramfs").join(&key);
    if let Ok(cached) = std::fs::read(&path) {
        let expected = cpio_bytes.len();
        if compress::zstd_decompress(&cached, expected)
            .map(|d| d.len() == expected)
            .unwrap_or(false)
        {
            return Ok(cached);
        }
    }
    let compressed = compress::zstd_compress(cpio_bytes, level)?;
    if let Some(dir) = path.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            let _ = mkhost_shared::fs::write_atomic(&path, &compressed, 0o644);
        }
    }
    Ok(compressed)
}

fn os_release(profile: &Profile, release: &str) -> String {
    format!(
        "NAME=\"mkhost\"\nID=mkhost\nVERSION_ID={}\nPRETTY_NAME=\"mkhost {} ({release})\"\nVARIANT_ID={}\n",
        env!("CARGO_PKG_VERSION"),
        profile.name,
        profile.name
    )
}

/// The iPXE script of the PXE set; URLs are relative to the script's own URL.
pub fn boot_ipxe(profile: &Profile) -> String {
    format!(
        "#!ipxe\n# mkhost {name}: boots the kernel and initramfs next to this script into RAM.\nkernel vmlinuz initrd=initramfs.img {cmdline}\ninitrd initramfs.img\nboot\n",
        name = profile.name,
        cmdline = profile.cmdline
    )
}

fn read(path: &Path) -> Result<Vec<u8>, LinuxError> {
    std::fs::read(path).map_err(|source| LinuxError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "[kernel]\nsource = \"deb\"\npackage = \"linux-image-amd64\"\n\
        [stub]\nsource = \"deb\"\npackage = \"systemd-boot-efi\"\n[boot]\nmin_ram_mib = 256\n";

    fn profile(dir: &Path, extra: &str) -> Profile {
        profile_with_top(dir, "", extra)
    }

    /// `top` goes before the tables (top-level keys).
    fn profile_with_top(dir: &Path, top: &str, extra: &str) -> Profile {
        let path = dir.join("p.toml");
        std::fs::write(&path, format!("{top}{PROFILE}{extra}")).unwrap();
        profile::load_path(&path, &[]).unwrap()
    }

    fn kernel(dir: &Path) -> ResolvedKernel {
        ResolvedKernel {
            image: dir.join("vmlinuz"),
            modules_dir: dir.join("modules"),
            release: "6.1.0-test".into(),
            record: sources::InputRecord {
                source: "path".into(),
                requested: None,
                package: None,
                version: None,
                sha256: String::new(),
                file: String::new(),
                file_sha256: String::new(),
            },
        }
    }

    fn plan(firmware: &[&str]) -> ModulePlan {
        let module = modules::ModuleInfo {
            name: "e1000e".into(),
            rel_path: "kernel/drivers/net/e1000e.ko".into(),
            depends: Vec::new(),
            softdep_pre: Vec::new(),
            softdep_post: Vec::new(),
            aliases: Vec::new(),
        };
        ModulePlan {
            boot: vec![module.clone()],
            all: vec![module],
            builtin: Vec::new(),
            firmware: firmware
                .iter()
                .map(|name| (name.to_string(), PathBuf::from("/nonexistent")))
                .collect(),
            missing_firmware: Vec::new(),
            bytes: 0,
            absent: String::new(),
        }
    }

    fn programs() -> GuestBinaries {
        GuestBinaries {
            init: PathBuf::from("/nonexistent/init"),
            hostd: PathBuf::from("/nonexistent/hostd"),
        }
    }

    /// The initramfs of `profile` alone: no module, firmware or container.
    fn assemble_plain(profile: &Profile, dir: &Path) -> Result<cpio::Archive, LinuxError> {
        assemble_initramfs(
            profile,
            &kernel(dir),
            &programs(),
            &plan(&[]),
            &ContainerPlan::default(),
        )
    }

    #[test]
    fn everything_the_build_writes_on_its_own_is_listed_as_mkhosts() {
        let dir = tempfile::tempdir().unwrap();
        let profile = profile(dir.path(), "");
        let archive = assemble_plain(&profile, dir.path()).unwrap();
        for (path, node) in archive.entries() {
            // Directories only hold things; what they hold must be listed.
            if !matches!(node, cpio::Node::Dir { .. }) {
                assert!(
                    matches!(
                        layout::claim(path),
                        Some(layout::Conflict::Same(_) | layout::Conflict::Inside(_))
                    ),
                    "/{path} is written by the build but not in layout::OWNED"
                );
            }
        }
    }

    #[test]
    fn docker_tls_goes_into_the_image_for_root_alone() {
        use crate::certs::{self, Role};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        certs::create_ca(&d.join("ca"), certs::CA_DAYS).unwrap();
        let ca = certs::load_ca(&d.join("ca")).unwrap();
        let san = ["h.example".parse().unwrap()];
        certs::issue(&ca, Role::Server, &d.join("tls"), "h", &san, 1).unwrap();
        // [docker] last: the tests' profile ends inside no table.
        let profile = profile(d, "\n[docker]\ntls_dir = \"tls\"\n");
        let archive = assemble_plain(&profile, d).unwrap();
        let entries: BTreeMap<&str, &cpio::Node> = archive.entries().collect();
        let tls_dir = paths::in_archive(paths::DOCKER_TLS_IMAGE);
        assert!(matches!(entries[tls_dir], cpio::Node::Dir { mode: 0o700 }));
        for name in paths::DOCKER_TLS_FILES {
            let path = format!("{tls_dir}/{name}");
            let cpio::Node::File { mode, data } = entries[path.as_str()] else {
                panic!("{path}: {:?}", entries[path.as_str()]);
            };
            assert_eq!(*mode, 0o600, "{path}");
            let cpio::FileData::Bytes(bytes) = data else {
                panic!("{path}")
            };
            assert_eq!(bytes, &std::fs::read(d.join("tls").join(name)).unwrap());
        }
        assert!(
            !entries.keys().any(|p| p.ends_with("ca-key.pem")),
            "the CA's key is in the image"
        );
    }

    #[test]
    fn files_may_not_replace_what_the_build_placed() {
        let dir = tempfile::tempdir().unwrap();
        let profile = profile(
            dir.path(),
            "[[files]]\ndest = \"/lib/firmware/intel/fw.bin\"\ncontents = \"x\"\n",
        );
        let err = assemble_initramfs(
            &profile,
            &kernel(dir.path()),
            &programs(),
            &plan(&["intel/fw.bin"]),
            &ContainerPlan::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p.toml:9:1: /lib/firmware/intel/fw.bin is already in the image: firmware a module of the profile names"),
            "{err}"
        );
        // Firmware nothing names is the profile's to add.
        assert!(assemble_plain(&profile, dir.path()).is_ok());

        // A library a [[binaries]] entry brings.
        let closure = elf::library_closure(Path::new("/bin/true")).unwrap();
        let lib = closure.libraries.first().expect("/bin/true is dynamic");
        let profile = profile_with_binary(dir.path(), &lib.display().to_string());
        let err = assemble_plain(&profile, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "p.toml:12:1: {} is already in the image: a shared library of the [[binaries]] entry at",
                lib.display()
            )) && err.contains("p.toml:9:1"),
            "{err}"
        );
    }

    /// The build's first pass over the sources ([`crate::build`], before
    /// anything is fetched) and the initramfs's reading of them refuse alike.
    #[test]
    fn files_sources_are_regular_files_within_the_limit() {
        use crate::build::check_sources;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(std::process::Command::new("mkfifo")
            .arg(d.join("fifo"))
            .status()
            .unwrap()
            .success());
        std::fs::create_dir(d.join("adir")).unwrap();
        // min_ram_mib = 1: sources up to 1 MiB.
        std::fs::write(d.join("fits"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(d.join("big"), vec![1u8; (1 << 20) + 1]).unwrap();
        let small = |source: &str| {
            let path = d.join("small.toml");
            std::fs::write(
                &path,
                format!(
                    "[kernel]\nsource = \"host\"\n[stub]\nsource = \"host\"\n[boot]\nmin_ram_mib = 1\n[[files]]\ndest = \"/etc/x\"\nsource = \"{source}\"\n"
                ),
            )
            .unwrap();
            profile::load_path(&path, &[]).unwrap()
        };
        assert_eq!(input_file::source_limit(small("fits").min_ram_mib), 1 << 20);
        for (source, want) in [
            ("fifo", "is a fifo, not a regular file; give a regular file"),
            ("/dev/zero", "is a character device, not a regular file"),
            ("adir", "is a directory, not a regular file"),
            ("big", "is 1048577 bytes, more than the limit of 1 MiB; sources are limited to 1 GiB and to the host's RAM (min_ram_mib)"),
            ("nope", "cannot read"),
        ] {
            let profile = small(source);
            let err = check_sources(&profile).unwrap_err().to_string();
            assert!(err.contains("small.toml:7:1: ") && err.contains(want), "{err}");
            // Assembling reads it with the same checks (a file swapped after
            // the first check cannot block or overflow it).
            let err = assemble_plain(&profile, d)
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err}");
        }
        let profile = small("fits");
        check_sources(&profile).unwrap();
        let archive = assemble_plain(&profile, d).unwrap();
        assert!(archive.contains("etc/x"));
    }

    #[test]
    fn busybox_applets_may_be_replaced_busybox_may_not() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.is_file() {
            eprintln!("skipped: no /bin/busybox (apt-get install busybox-static)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let top = "debug_shell = true\n";
        let shell = "[debug]\nbusybox = \"/bin/busybox\"\n";
        let with_ls = profile_with_top(
            dir.path(),
            top,
            &format!("{shell}[[binaries]]\nsource = \"/bin/true\"\ndest = \"/bin/ls\"\n"),
        );
        let archive = assemble_plain(&with_ls, dir.path()).unwrap();
        let ls = archive.entries().find(|(p, _)| *p == "bin/ls").unwrap().1;
        assert!(matches!(ls, cpio::Node::File { .. }), "{ls:?}");
        let with_busybox = profile_with_top(
            dir.path(),
            top,
            &format!("{shell}[[files]]\ndest = \"/bin/busybox\"\ncontents = \"x\"\n"),
        );
        let err = assemble_plain(&with_busybox, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/bin/busybox is already in the image: the debug shell's busybox"),
            "{err}"
        );
    }

    fn profile_with_binary(dir: &Path, file_dest: &str) -> Profile {
        profile(
            dir,
            &format!(
                "[[binaries]]\nsource = \"/bin/true\"\ndest = \"/usr/local/bin/true\"\n[[files]]\ndest = \"{file_dest}\"\ncontents = \"x\"\n"
            ),
        )
    }
}
