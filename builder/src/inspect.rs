//! `mkhost inspect`: says what is inside a disk image, a UKI, a kernel or an
//! initramfs (partitions, ESP files, PE sections, kernel version, command line,
//! initramfs files with sizes, modules, boot-time containers), reading each with
//! our own parsers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mkhost_image::{bzimage, disk, esp, uki};
use mkhost_initramfs::{compress, cpio};

use mkhost_shared::container::{format_cpus, BootManifest};
use mkhost_shared::paths::{self, BOOT_MANIFEST};

use crate::containers::ContainerPlan;
use crate::hashing::sha256_hex;
use crate::progress::size;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a GPT disk image, UKI, kernel or initramfs (first bytes {magic})")]
    Unknown { path: PathBuf, magic: String },
    #[error("{path}: disk image")]
    Disk {
        path: PathBuf,
        #[source]
        source: disk::DiskError,
    },
    #[error("{what}: ESP")]
    Esp {
        what: String,
        #[source]
        source: esp::EspError,
    },
    #[error("{what}: PE image")]
    Pe {
        what: String,
        #[source]
        source: uki::UkiError,
    },
    #[error("{what}: initramfs")]
    Cpio {
        what: String,
        #[source]
        source: cpio::CpioError,
    },
    #[error("{what}: compressed initramfs")]
    Compress {
        what: String,
        #[source]
        source: compress::CompressError,
    },
}

/// Largest unpacked initramfs inspect will hold in memory.
const MAX_INITRAMFS: usize = 2 << 30;

#[derive(Debug, Clone, Copy, Default)]
pub struct InspectOptions {
    /// List every file of the initramfs, not only a summary.
    pub all_files: bool,
}

pub fn inspect(path: &Path, options: InspectOptions) -> Result<String, InspectError> {
    let read_err = |source| InspectError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut head = [0u8; 1024];
    let n = {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let mut total = 0;
        loop {
            let got = file.read(&mut head[total..]).map_err(read_err)?;
            if got == 0 || total + got == head.len() {
                break total + got;
            }
            total += got;
        }
    };
    let head = &head[..n];
    let what = path.display().to_string();
    let mut out = String::new();
    if head.len() >= 520 && head[510..512] == [0x55, 0xaa] && &head[512..520] == b"EFI PART" {
        inspect_disk(path, &mut out, options)?;
    } else if head.starts_with(b"MZ") {
        let data = std::fs::read(path).map_err(read_err)?;
        inspect_pe(&what, &data, &mut out, "", options)?;
    } else if compress::is_zstd(head) || head.starts_with(b"070701") {
        let data = std::fs::read(path).map_err(read_err)?;
        let _ = writeln!(out, "{what}: initramfs, {}", size(data.len() as u64));
        inspect_initramfs(&what, &data, &mut out, "  ", options)?;
    } else {
        return Err(InspectError::Unknown {
            path: path.to_path_buf(),
            magic: head.iter().take(8).map(|b| format!("{b:02x}")).collect(),
        });
    }
    Ok(out)
}

fn inspect_disk(
    path: &Path,
    out: &mut String,
    options: InspectOptions,
) -> Result<(), InspectError> {
    let disk_err = |source| InspectError::Disk {
        path: path.to_path_buf(),
        source,
    };
    let total = std::fs::metadata(path).map_or(0, |m| m.len());
    let (guid, partitions) = disk::read_gpt_disk(path).map_err(disk_err)?;
    let _ = writeln!(
        out,
        "{}: GPT disk image, {}, disk GUID {guid}",
        path.display(),
        size(total)
    );
    for part in &partitions {
        let _ = writeln!(
            out,
            "  partition {} {:?}: type {}{}, GUID {}, LBA {}-{}, {}",
            part.number,
            part.name,
            part.type_guid,
            if part.type_guid == disk::ESP_TYPE_GUID {
                " (EFI System)"
            } else {
                ""
            },
            part.part_guid,
            part.first_lba,
            part.last_lba,
            size(part.size_bytes)
        );
        if part.type_guid != disk::ESP_TYPE_GUID {
            continue;
        }
        let esp_image = disk::read_partition(path, part).map_err(disk_err)?;
        let what = format!("{} partition {}", path.display(), part.number);
        let esp_err = |source| InspectError::Esp {
            what: what.clone(),
            source,
        };
        let files = esp::esp_list(&esp_image).map_err(esp_err)?;
        for (name, len) in &files {
            let _ = writeln!(out, "    {name}  {}", size(*len));
        }
        for (name, _) in files
            .iter()
            .filter(|(n, _)| n.to_ascii_uppercase().ends_with(".EFI"))
        {
            let data = esp::esp_read(&esp_image, name).map_err(esp_err)?;
            let _ = writeln!(out, "    {name}:");
            inspect_pe(name, &data, out, "      ", options)?;
        }
    }
    Ok(())
}

fn inspect_pe(
    what: &str,
    data: &[u8],
    out: &mut String,
    indent: &str,
    options: InspectOptions,
) -> Result<(), InspectError> {
    let pe_err = |source| InspectError::Pe {
        what: what.to_string(),
        source,
    };
    let sections = uki::pe_sections(data).map_err(pe_err)?;
    let is_uki = sections.iter().any(|s| s.name == ".linux");
    if !is_uki {
        if let Ok(info) = bzimage::parse_bzimage(data) {
            let _ = writeln!(
                out,
                "{indent}{what}: Linux kernel {}, {}",
                info.release,
                size(data.len() as u64)
            );
            let _ = writeln!(out, "{indent}  version: {}", info.version);
            let _ = writeln!(
                out,
                "{indent}  boot protocol {}.{:02}, init_size {}",
                info.protocol >> 8,
                info.protocol & 0xff,
                size(info.init_size)
            );
            return Ok(());
        }
    }
    let _ = writeln!(
        out,
        "{indent}{what}: {} ({}), {} sections",
        if is_uki {
            "unified kernel image"
        } else {
            "PE image"
        },
        size(data.len() as u64),
        sections.len()
    );
    for s in &sections {
        let _ = writeln!(
            out,
            "{indent}  section {:<9} vma {:#010x} size {}",
            s.name,
            s.virtual_address,
            size(u64::from(s.virtual_size))
        );
    }
    let text = |name: &str| -> Result<Option<String>, InspectError> {
        Ok(uki::pe_section_data(data, name).map_err(pe_err)?.map(|d| {
            String::from_utf8_lossy(d)
                .trim_end_matches('\0')
                .trim()
                .to_string()
        }))
    };
    describe_signatures(data, out, indent);
    if is_uki {
        if let Ok(pcr) = mkhost_image::pcr::predict_pcr11(data) {
            let _ = writeln!(
                out,
                "{indent}  PCR 11 (sha256) after systemd-stub {}: {} ({})",
                pcr.stub_version.as_deref().unwrap_or("(version unknown)"),
                mkhost_shared::hex::encode(&pcr.sha256),
                pcr.sections.join(" ")
            );
        }
    }
    if let Some(cmdline) = text(".cmdline")? {
        let _ = writeln!(out, "{indent}  cmdline: {cmdline}");
    }
    if let Some(osrel) = text(".osrel")? {
        if let Some(pretty) = osrel.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")) {
            let _ = writeln!(out, "{indent}  os-release: {}", pretty.trim_matches('"'));
        }
    }
    if let Some(linux) = uki::pe_section_data(data, ".linux").map_err(pe_err)? {
        match bzimage::parse_bzimage(linux) {
            Ok(info) => {
                let _ = writeln!(out, "{indent}  kernel: {}", info.version);
            }
            Err(e) => {
                let _ = writeln!(out, "{indent}  kernel: unreadable ({e})");
            }
        }
    }
    if let Some(initrd) = uki::pe_section_data(data, ".initrd").map_err(pe_err)? {
        let _ = writeln!(out, "{indent}  initrd: {}", size(initrd.len() as u64));
        inspect_initramfs(
            &format!("{what} .initrd"),
            initrd,
            out,
            &format!("{indent}    "),
            options,
        )?;
    }
    Ok(())
}

/// The Authenticode signatures of a PE: signer, validity, and whether
/// each still holds for these bytes.
fn describe_signatures(data: &[u8], out: &mut String, indent: &str) {
    match mkhost_signing::verify_pe(data) {
        Ok(signatures) if signatures.is_empty() => {
            let _ = writeln!(out, "{indent}  signature: none (not signed)");
        }
        Ok(signatures) => {
            for s in signatures {
                let state = match (s.digest_matches, s.signature_valid) {
                    (true, true) => "valid",
                    (false, _) => "INVALID: the image changed after signing",
                    (true, false) => "INVALID: the signature does not verify",
                };
                let _ = writeln!(
                    out,
                    "{indent}  signature: {state}; signed by {} (issuer {}), certificate valid {} to {}, sha256 {}",
                    s.certificate.subject,
                    s.certificate.issuer,
                    mkhost_signing::rfc3339(s.certificate.not_before),
                    mkhost_signing::rfc3339(s.certificate.not_after),
                    s.certificate.fingerprint
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "{indent}  signature: unreadable ({e})");
        }
    }
}

fn inspect_initramfs(
    what: &str,
    data: &[u8],
    out: &mut String,
    indent: &str,
    options: InspectOptions,
) -> Result<(), InspectError> {
    let unpacked;
    let cpio_bytes = if compress::is_zstd(data) {
        unpacked = compress::zstd_decompress(data, MAX_INITRAMFS).map_err(|source| {
            InspectError::Compress {
                what: what.to_string(),
                source,
            }
        })?;
        let _ = writeln!(
            out,
            "{indent}zstd, unpacks to {}",
            size(unpacked.len() as u64)
        );
        &unpacked[..]
    } else {
        data
    };
    let entries = cpio::read_newc(cpio_bytes).map_err(|source| InspectError::Cpio {
        what: what.to_string(),
        source,
    })?;
    let files: Vec<&cpio::ReadEntry> = entries.iter().filter(|e| e.is_file()).collect();
    let total: u64 = files.iter().map(|e| e.data.len() as u64).sum();
    let _ = writeln!(
        out,
        "{indent}{} entries, {} files, {} of file data",
        entries.len(),
        files.len(),
        size(total)
    );
    let modules: Vec<String> = files
        .iter()
        .filter(|e| e.path.ends_with(".ko"))
        .filter_map(|e| e.path.rsplit('/').next())
        .map(|n| n.trim_end_matches(".ko").replace('-', "_"))
        .collect();
    if let Some(release) = entries.iter().find_map(|e| {
        e.path
            .strip_prefix("lib/modules/")
            .and_then(|r| r.split('/').next())
    }) {
        let _ = writeln!(
            out,
            "{indent}kernel modules for {release}: {}",
            modules.len()
        );
    }
    if !modules.is_empty() {
        let mut sorted = modules.clone();
        sorted.sort();
        let _ = writeln!(out, "{indent}modules: {}", sorted.join(" "));
    }
    if let Some(boot) = entries
        .iter()
        .find(|e| e.path == paths::in_archive(paths::BOOT_CONFIG))
    {
        let text = String::from_utf8_lossy(&boot.data);
        let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let shown: String = compact.chars().take(300).collect();
        let _ = writeln!(
            out,
            "{indent}boot.json: {shown}{}",
            if compact.len() > 300 { " ..." } else { "" }
        );
    }
    if let Some(manifest) = entries
        .iter()
        .find(|e| e.path == ContainerPlan::manifest_dest())
    {
        describe_boot_containers(&manifest.data, &entries, out, indent);
    }
    for entry in &entries {
        let is_module = entry.path.ends_with(".ko");
        if !options.all_files && is_module {
            continue;
        }
        let kind = if entry.is_dir() {
            "dir "
        } else if entry.is_symlink() {
            "link"
        } else if entry.is_file() {
            "file"
        } else {
            "node"
        };
        let detail = if entry.is_file() {
            size(entry.data.len() as u64)
        } else if entry.is_symlink() {
            format!("-> {}", String::from_utf8_lossy(&entry.data))
        } else if !entry.is_dir() {
            format!("{}:{}", entry.rdev_major, entry.rdev_minor)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{indent}{kind} {:o} /{} {detail}",
            entry.mode & 0o7777,
            entry.path
        );
    }
    if !options.all_files && !modules.is_empty() {
        let _ = writeln!(
            out,
            "{indent}(module files not listed; use --all to list every file)"
        );
    }
    Ok(())
}

/// The boot-time containers of an initramfs: each container with its image,
/// restart policy and limits, each archive with its size and whether its
/// bytes still match the manifest's sha256.
fn describe_boot_containers(
    manifest: &[u8],
    entries: &[cpio::ReadEntry],
    out: &mut String,
    indent: &str,
) {
    let manifest: BootManifest = match serde_json::from_slice(manifest) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(
                out,
                "{indent}boot-time containers: {BOOT_MANIFEST} is unreadable ({e})"
            );
            return;
        }
    };
    let _ = writeln!(
        out,
        "{indent}boot-time containers: {} ({} image archives)",
        manifest.containers.len(),
        manifest.archives.len()
    );
    for c in &manifest.containers {
        let mut detail = format!("image {}, restart {}", c.image, c.restart);
        if let Some(m) = c.limits.memory {
            let _ = write!(detail, ", memory {}", size(u64::try_from(m).unwrap_or(0)));
        }
        if let Some(n) = c.limits.nano_cpus {
            let _ = write!(detail, ", cpus {}", format_cpus(n));
        }
        if let Some(p) = c.limits.pids {
            let _ = write!(detail, ", pids {p}");
        }
        if !c.command.is_empty() {
            let _ = write!(detail, ", command {:?}", c.command);
        }
        let _ = writeln!(
            out,
            "{indent}  container {}: {detail}",
            c.name.as_deref().unwrap_or("(unnamed)")
        );
    }
    for a in &manifest.archives {
        let path = a.path.trim_start_matches('/');
        let state = match entries.iter().find(|e| e.path == path && e.is_file()) {
            None => "missing from the initramfs".to_string(),
            Some(e) if sha256_hex(&e.data) == a.sha256 => size(e.data.len() as u64),
            Some(e) => format!(
                "{}, sha256 does NOT match the manifest",
                size(e.data.len() as u64)
            ),
        };
        let _ = writeln!(out, "{indent}  archive {}: {state}", a.path);
    }
}
