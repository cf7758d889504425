//! Finding the boot stick's ESP and reading `mkhost/host.toml` from it.
//!
//! systemd-stub records the PARTUUID of the partition it was loaded from in the
//! EFI variable `LoaderDevicePartUUID` (vendor GUID
//! [`LOADER_VENDOR`]). Without udev there is no `/dev/disk/by-partuuid`, so
//! `init` reads the GPT of every disk in `/sys/class/block` itself
//! ([`parse_gpt_header`], [`parse_gpt_entries`]) and maps the PARTUUID to a
//! partition device. Without the variable (another loader, or none) it falls
//! back to any partition of the EFI System Partition type that holds a
//! host.toml. The ESP is mounted read-only only while host.toml is read.
//!
//! A USB stick (or a disk behind a slow controller) shows up after
//! coldplug, once hotplug loaded its drivers. The boot waits for it by
//! event ([`EspWait`]): every disk or partition that appears makes it look
//! again, and it stops when the partition is there, when the kernel has
//! been quiet for [`ESP_QUIET`] (a stick removed or never seen), or after
//! [`ESP_WAIT_MAX`]. Without the variable (PXE) nothing is waited for.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::init::config::host_config::{parse_host_toml, read_docker_tls_dir, DockerTls};
use crate::init::mounts::at;
use crate::os::{self, MountFlags, UnmountFlags};

/// systemd's loader vendor GUID.
pub const LOADER_VENDOR: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The EFI System Partition type GUID.
pub const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Largest host.toml read.
pub const MAX_HOST_TOML: u64 = 64 * 1024;
/// Where the ESP is mounted while host.toml is read.
pub const ESP_MOUNT: &str = "/run/mkhost/esp";

/// Errors of finding and reading the ESP.
#[derive(Debug, thiserror::Error)]
pub enum BootDiskError {
    /// A device or file could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        /// The device or file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The ESP could not be mounted.
    #[error("cannot mount {device} read-only on {target}: {source}", device = device.display(), target = target.display())]
    Mount {
        /// The partition device.
        device: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// host.toml is larger than [`MAX_HOST_TOML`].
    #[error("{path} is larger than {MAX_HOST_TOML} bytes", path = path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
}

/// Formats a GPT GUID (mixed-endian on disk) as lowercase text.
pub fn guid_to_string(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// Decodes an efivarfs file: 4 attribute bytes, then the value. For
/// `LoaderDevicePartUUID` the value is a NUL-terminated UTF-16LE GUID string.
pub fn parse_partuuid_var(data: &[u8]) -> Option<String> {
    let value = data.get(4..)?;
    let units: Vec<u16> = value
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    let text = String::from_utf16(&units).ok()?.trim().to_ascii_lowercase();
    (text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then_some(text)
}

/// Reads `LoaderDevicePartUUID` from efivarfs below `root`.
pub fn loader_partuuid(root: &Path) -> Option<String> {
    let path = at(
        root,
        &format!("/sys/firmware/efi/efivars/LoaderDevicePartUUID-{LOADER_VENDOR}"),
    );
    parse_partuuid_var(&fs::read(path).ok()?)
}

/// The fields of a GPT header `init` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    /// First LBA of the partition entry array.
    pub entries_lba: u64,
    /// Number of entries.
    pub entries: u32,
    /// Size of one entry.
    pub entry_size: u32,
}

/// Parses the GPT header at LBA 1 (`None` if it is not one).
pub fn parse_gpt_header(lba1: &[u8]) -> Option<GptHeader> {
    if lba1.get(0..8)? != b"EFI PART" {
        return None;
    }
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(lba1.get(o..o + 8)?.try_into().ok()?))
    };
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(lba1.get(o..o + 4)?.try_into().ok()?))
    };
    let header = GptHeader {
        entries_lba: u64_at(72)?,
        entries: u32_at(80)?.min(1024),
        entry_size: u32_at(84)?,
    };
    (header.entry_size >= 128 && header.entry_size <= 4096).then_some(header)
}

/// One used GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based partition number.
    pub number: u32,
    /// Type GUID, lowercase text.
    pub type_guid: String,
    /// Unique partition GUID (PARTUUID), lowercase text.
    pub part_guid: String,
    /// The partition's name (GPT label, UTF-16LE in the entry), without
    /// trailing NULs.
    pub name: String,
}

/// Decodes a GPT entry's name: UTF-16LE at bytes 56..128, NUL-padded.
pub fn gpt_name(entry: &[u8]) -> String {
    let units: Vec<u16> = entry
        .get(56..128)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Parses the partition entry array; unused (all-zero type) entries are left out.
pub fn parse_gpt_entries(data: &[u8], header: &GptHeader) -> Vec<GptPartition> {
    let size = header.entry_size as usize;
    data.chunks_exact(size)
        .take(header.entries as usize)
        .enumerate()
        .filter_map(|(i, e)| {
            let type_guid: [u8; 16] = e.get(0..16)?.try_into().ok()?;
            if type_guid == [0; 16] {
                return None;
            }
            let part_guid: [u8; 16] = e.get(16..32)?.try_into().ok()?;
            Some(GptPartition {
                number: u32::try_from(i + 1).ok()?,
                type_guid: guid_to_string(&type_guid),
                part_guid: guid_to_string(&part_guid),
                name: gpt_name(e),
            })
        })
        .collect()
}

/// Reads the GPT of block device `dev` with logical blocks of `block` bytes.
pub fn read_gpt(dev: &Path, block: u64) -> Result<Vec<GptPartition>, BootDiskError> {
    let err = |source| BootDiskError::Read {
        path: dev.to_path_buf(),
        source,
    };
    let mut f = fs::File::open(dev).map_err(err)?;
    let mut lba1 = vec![0u8; usize::try_from(block).unwrap_or(512)];
    f.seek(SeekFrom::Start(block)).map_err(err)?;
    f.read_exact(&mut lba1).map_err(err)?;
    let Some(header) = parse_gpt_header(&lba1) else {
        return Ok(Vec::new());
    };
    let len = u64::from(header.entries) * u64::from(header.entry_size);
    let mut entries = vec![0u8; usize::try_from(len).unwrap_or(0)];
    f.seek(SeekFrom::Start(header.entries_lba.saturating_mul(block)))
        .map_err(err)?;
    f.read_exact(&mut entries).map_err(err)?;
    Ok(parse_gpt_entries(&entries, &header))
}

/// A partition found on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPartition {
    /// Its device node, e.g. `/dev/vda1`.
    pub device: PathBuf,
    /// The whole disk's name in `/sys/class/block`, e.g. `vda`.
    pub disk: String,
    /// The GPT entry.
    pub entry: GptPartition,
}

/// A sysfs attribute's text, trimmed; `None` if it cannot be read.
pub fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The names in `/sys/class/block` (below `root`), sorted.
fn block_names(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(at(root, "/sys/class/block")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The whole disks in `/sys/class/block` (below `root`) that can hold data:
/// not partitions, loop, RAM, optical or network block devices, not empty.
pub fn whole_disks(root: &Path) -> Vec<String> {
    let class = at(root, "/sys/class/block");
    block_names(root)
        .into_iter()
        .filter(|disk| {
            let sys = class.join(disk);
            !sys.join("partition").exists()
                && !["loop", "ram", "zram", "sr", "nbd"]
                    .iter()
                    .any(|p| disk.starts_with(p))
                && matches!(read_trimmed(&sys.join("size")), Some(s) if s != "0")
        })
        .collect()
}

/// Every GPT partition of every disk in `/sys/class/block` (below `root`).
pub fn partitions(root: &Path) -> Vec<FoundPartition> {
    let class = at(root, "/sys/class/block");
    let names = block_names(root);
    let mut out = Vec::new();
    for disk in &whole_disks(root) {
        let sys = class.join(disk);
        let block = read_trimmed(&sys.join("queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(512);
        let Ok(gpt) = read_gpt(&at(root, &format!("/dev/{disk}")), block) else {
            continue;
        };
        for entry in gpt {
            // The partition's name: the child of the disk's sysfs directory
            // whose `partition` file holds the number (vda1, nvme0n1p1, ...).
            let child = names.iter().find(|n| {
                n.starts_with(disk.as_str())
                    && *n != disk
                    && sys.join(n.as_str()).is_dir()
                    && read_trimmed(&class.join(n.as_str()).join("partition"))
                        == Some(entry.number.to_string())
            });
            if let Some(child) = child {
                out.push(FoundPartition {
                    device: at(root, &format!("/dev/{child}")),
                    disk: disk.clone(),
                    entry,
                });
            }
        }
    }
    out
}

/// How the ESP was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The partition named by `LoaderDevicePartUUID`.
    LoaderPartUuid,
    /// A partition of the ESP type (no loader variable).
    EspType,
}

/// host.toml as read from an ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostToml {
    /// The partition it came from.
    pub device: PathBuf,
    /// How the partition was found.
    pub found: Found,
    /// The file's text.
    pub text: String,
    /// The files of its `[docker] tls_dir`, read while the ESP was
    /// mounted; `None` when it names none (or does not parse).
    pub docker_tls: Option<Result<DockerTls, String>>,
}

/// host.toml's text and the files it names, as read from a mounted ESP.
type EspFiles = (String, Option<Result<DockerTls, String>>);

/// Mounts `device` read-only (vfat) at [`ESP_MOUNT`], reads host.toml if
/// present and the `[docker] tls_dir` it names, unmounts.
pub fn read_host_toml_from(root: &Path, device: &Path) -> Result<Option<EspFiles>, BootDiskError> {
    let target = at(root, ESP_MOUNT);
    fs::create_dir_all(&target).map_err(|source| BootDiskError::Read {
        path: target.clone(),
        source,
    })?;
    os::mount(
        &device.to_string_lossy(),
        &target,
        "vfat",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some("codepage=437,iocharset=iso8859-1,shortname=mixed"),
    )
    .map_err(|source| BootDiskError::Mount {
        device: device.to_path_buf(),
        target: target.clone(),
        source,
    })?;
    let path = target.join(crate::init::config::host_config::HOST_TOML);
    let result = (|| {
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BootDiskError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        if meta.len() > MAX_HOST_TOML {
            return Err(BootDiskError::TooLarge { path: path.clone() });
        }
        let bytes = fs::read(&path).map_err(|source| BootDiskError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let docker_tls = read_named_files(&path, &text);
        Ok(Some((text, docker_tls)))
    })();
    if os::unmount(&target, UnmountFlags::empty()).is_err() {
        let _ = os::unmount(&target, UnmountFlags::DETACH);
    }
    let _ = fs::remove_dir(&target);
    result
}

/// The `[docker] tls_dir` of host.toml at `path` (text `text`), read
/// relative to its directory; `None` when it names none or does not parse
/// (the parse error is reported with the rest of host.toml's).
fn read_named_files(path: &Path, text: &str) -> Option<Result<DockerTls, String>> {
    let dir = parse_host_toml(text).ok()?.docker_tls_dir?;
    let base = path.parent().unwrap_or(Path::new("."));
    Some(read_docker_tls_dir(&base.join(dir)))
}

/// The partition named `partuuid`, if its disk is there.
pub fn boot_partition(root: &Path, partuuid: &str) -> Option<FoundPartition> {
    partitions(root)
        .into_iter()
        .find(|p| p.entry.part_guid == partuuid)
}

/// Reads host.toml from the boot partition `p`. `Ok(None)`: no host.toml.
pub fn read_boot_partition(
    root: &Path,
    p: FoundPartition,
) -> Result<Option<HostToml>, BootDiskError> {
    Ok(
        read_host_toml_from(root, &p.device)?.map(|(text, docker_tls)| HostToml {
            device: p.device,
            found: Found::LoaderPartUuid,
            text,
            docker_tls,
        }),
    )
}

/// Without `LoaderDevicePartUUID`: host.toml from the first partition of
/// the ESP type that has one, among the disks present now.
pub fn find_host_toml_by_type(root: &Path) -> Option<HostToml> {
    for p in partitions(root)
        .into_iter()
        .filter(|p| p.entry.type_guid == ESP_TYPE)
    {
        if let Ok(Some((text, docker_tls))) = read_host_toml_from(root, &p.device) {
            return Some(HostToml {
                device: p.device,
                found: Found::EspType,
                text,
                docker_tls,
            });
        }
    }
    None
}

/// The boot stops waiting for a boot partition that has not appeared once
/// the kernel has been quiet this long: no device event, no module loading
/// (a USB stick is announced within ~1 s of its controller's driver: the
/// usb-storage driver waits 1 s before it scans).
pub const ESP_QUIET: Duration = Duration::from_secs(3);
/// ... and in any case after this long.
pub const ESP_WAIT_MAX: Duration = Duration::from_secs(30);

/// What the boot does next while it waits for the boot partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspStep {
    /// Disks changed: look for the partition (again).
    Look,
    /// Nothing new: keep waiting.
    Wait,
    /// Stop waiting.
    GiveUp {
        /// How long the boot waited.
        waited: Duration,
        /// Why it stopped (for the console).
        why: &'static str,
    },
}

/// Waiting for the boot partition by event: the hotplug thread counts the
/// disks and partitions that come and go ([`EspWait::step`]'s
/// `generation`); each change is a reason to look, and a quiet kernel is a
/// reason to stop. Pure: the tests drive it with made-up clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspWait {
    started: Instant,
    looked_at: Option<u64>,
    max: Duration,
    quiet: Duration,
}

impl EspWait {
    /// A wait for the boot partition that starts at `now` ([`ESP_WAIT_MAX`],
    /// [`ESP_QUIET`]).
    pub fn new(now: Instant) -> Self {
        Self::with_limits(now, ESP_WAIT_MAX, ESP_QUIET)
    }

    /// A wait for any disk that starts at `now`: it gives up after `max`,
    /// or once the kernel has been quiet for `quiet`.
    pub fn with_limits(now: Instant, max: Duration, quiet: Duration) -> Self {
        Self {
            started: now,
            looked_at: None,
            max,
            quiet,
        }
    }

    /// When the wait started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The next step, given the disks' `generation`, how long the kernel
    /// has been `quiet_for` and whether a module is loading (`busy`).
    pub fn step(
        &mut self,
        now: Instant,
        generation: u64,
        quiet_for: Duration,
        busy: bool,
    ) -> EspStep {
        if self.looked_at != Some(generation) {
            self.looked_at = Some(generation);
            return EspStep::Look;
        }
        let waited = now.saturating_duration_since(self.started);
        if waited >= self.max {
            return EspStep::GiveUp {
                waited,
                why: if busy || quiet_for < self.quiet {
                    "the kernel is still busy with devices"
                } else {
                    "the wait is over"
                },
            };
        }
        if !busy && quiet_for.min(waited) >= self.quiet {
            return EspStep::GiveUp {
                waited,
                why: "no device activity",
            };
        }
        EspStep::Wait
    }
}

/// GPT images for tests (this module's and the state disk's).
#[cfg(test)]
pub mod testing {
    /// A GUID's on-disk (mixed-endian) bytes from its text.
    pub fn guid_bytes(text: &str) -> [u8; 16] {
        let hex: Vec<u8> = text
            .replace('-', "")
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&[hex[3], hex[2], hex[1], hex[0]]);
        b[4..6].copy_from_slice(&[hex[5], hex[4]]);
        b[6..8].copy_from_slice(&[hex[7], hex[6]]);
        b[8..16].copy_from_slice(&hex[8..16]);
        b
    }

    /// A disk image with a GPT header at LBA 1 and 128-byte entries at
    /// LBA 2: one per (type GUID, partition GUID, name).
    pub fn gpt_image(parts: &[(&str, &str, &str)]) -> Vec<u8> {
        let mut img = vec![0u8; 512 * 40];
        img[512..520].copy_from_slice(b"EFI PART");
        img[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        img[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        img[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        for (i, (ty, id, name)) in parts.iter().enumerate() {
            let o = 1024 + i * 128;
            img[o..o + 16].copy_from_slice(&guid_bytes(ty));
            img[o + 16..o + 32].copy_from_slice(&guid_bytes(id));
            for (j, u) in name.encode_utf16().enumerate() {
                img[o + 56 + 2 * j..o + 58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{gpt_image, guid_bytes};
    use super::*;

    #[test]
    fn guid_text_is_mixed_endian() {
        let b = guid_bytes(ESP_TYPE);
        assert_eq!(&b[0..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(guid_to_string(&b), ESP_TYPE);
    }

    #[test]
    fn partuuid_variable_decodes() {
        let mut data = vec![6, 0, 0, 0];
        for u in "6B9C1A4E-0C1D-4E5F-8A9B-0123456789AB"
            .encode_utf16()
            .chain([0])
        {
            data.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(
            parse_partuuid_var(&data).as_deref(),
            Some("6b9c1a4e-0c1d-4e5f-8a9b-0123456789ab")
        );
        assert_eq!(parse_partuuid_var(&[6, 0, 0, 0, b'x', 0]), None);
        assert_eq!(parse_partuuid_var(&[1]), None);
    }

    #[test]
    fn esp_wait_looks_on_every_change_and_stops_when_quiet() {
        let t0 = Instant::now();
        let s = |ms: u64| Duration::from_millis(ms);
        let mut w = EspWait::new(t0);
        // The first step always looks (the disk may be there already).
        assert_eq!(w.step(t0, 0, s(0), false), EspStep::Look);
        assert_eq!(w.step(t0 + s(100), 0, s(100), false), EspStep::Wait);
        // A disk, then its partitions: look each time.
        assert_eq!(w.step(t0 + s(900), 1, s(0), false), EspStep::Look);
        assert_eq!(w.step(t0 + s(950), 3, s(0), false), EspStep::Look);
        // Quiet, but a module is loading: wait.
        assert_eq!(w.step(t0 + s(5000), 3, s(4000), true), EspStep::Wait);
        // Quiet for ESP_QUIET: give up.
        assert!(matches!(
            w.step(t0 + s(5000), 3, ESP_QUIET, false),
            EspStep::GiveUp {
                why: "no device activity",
                ..
            }
        ));
        // A kernel that was quiet long before the wait began still gets
        // ESP_QUIET from the start of the wait.
        let mut w = EspWait::new(t0);
        assert_eq!(w.step(t0, 7, s(60_000), false), EspStep::Look);
        assert_eq!(w.step(t0 + s(1000), 7, s(61_000), false), EspStep::Wait);
        assert!(matches!(
            w.step(t0 + ESP_QUIET, 7, s(63_000), false),
            EspStep::GiveUp { .. }
        ));
        // Endless activity: ESP_WAIT_MAX.
        let mut w = EspWait::new(t0);
        w.step(t0, 0, s(0), false);
        assert!(matches!(
            w.step(t0 + ESP_WAIT_MAX, 0, s(0), true),
            EspStep::GiveUp {
                why: "the kernel is still busy with devices",
                ..
            }
        ));
    }

    #[test]
    fn gpt_roundtrip_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let id = "0fc63daf-8483-4772-8e79-3d69d8477de4";
        std::fs::write(
            &path,
            gpt_image(&[
                (
                    ESP_TYPE,
                    "11111111-2222-3333-4444-555555555555",
                    "EFI system",
                ),
                (id, id, "mkhost-state"),
            ]),
        )
        .unwrap();
        let parts = read_gpt(&path, 512).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].number, 1);
        assert_eq!(parts[0].type_guid, ESP_TYPE);
        assert_eq!(parts[0].part_guid, "11111111-2222-3333-4444-555555555555");
        assert_eq!(parts[1].number, 2);
        assert_eq!(parts[0].name, "EFI system");
        assert_eq!(parts[1].name, "mkhost-state");
        // Not a GPT: no partitions, no error.
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        assert!(read_gpt(&path, 512).unwrap().is_empty());
        assert!(parse_gpt_header(b"EFI PAR").is_none());
    }
}
