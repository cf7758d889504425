//! The state disk: init finds the disk or partition that `[state]` names,
//! checks it, formats it only when it is blank and the configuration allows
//! it, mounts it at [`paths::STATE_DISK`] and bind-mounts its directories
//! onto hostd's store, volumes and containers before hostd starts.
//!
//! - **Finding** ([`find`]): `label:` and `type:` match GPT partition
//!   entries (read with [`bootdisk::partitions`]); `serial:` and `wwn:`
//!   match whole disks by their sysfs attributes (`serial`,
//!   `device/serial`; `wwid`, `device/wwid`, `device/wwn`); `path:` names
//!   the device. The disk the host booted from (the one holding the
//!   loader's partition, or the ESP host.toml came from) is never a
//!   candidate. Two candidates for one selector is an error naming both.
//!   Disks may appear late: the boot waits by event ([`EspWait`] with the
//!   configured `wait_ms`), looking again whenever a disk appears.
//! - **Never destroying data** ([`signature`]): a device is formatted only
//!   with `format = "if-blank"` and when it carries no partition table, file
//!   system, RAID, LVM, LUKS or swap signature (random bytes without one
//!   count as blank, as for wipefs).
//! - **Checking**: an existing ext4 gets `e2fsck -p` (the image's
//!   [`E2FSCK`]); errors that need a manual repair leave state in RAM, the
//!   host boots anyway. xfs is mounted as found (no check, never created).
//! - **Reporting**: every outcome is a [`StateReport`] (written to
//!   [`paths::STATE_REPORT`] by the caller) with a note for the operator.
//!
//! - **Mirrors** (`mirror = ["serial:A", "serial:B"]`, [`mirror`]): both
//!   whole disks are found as above, then assembled as the md RAID 1
//!   [`mirror::MD_DEVICE`] (degraded when one is missing), or created from
//!   two blank disks with `format = "if-blank"`, by the image's [`MDADM`];
//!   the array is then checked, formatted and mounted as one disk is.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mkhost_shared::paths;
use mkhost_shared::state_disk::{
    DiskSelector, Filesystem, FormatPolicy, StateConfig, StateReport, DEFAULT_LABEL,
};

use crate::init::config::bootdisk::{self, read_trimmed, EspStep, EspWait, ESP_QUIET};
use crate::init::drivers::hotplug::Activity;
use crate::init::drivers::modprobe;
use crate::init::mounts::at;
use crate::init::timeline;
use crate::os::{self, MountFlags, UnmountFlags};

pub mod mirror;

use mirror::{Holds, MirrorDisk, Plan, MD_DEVICE, MD_NAME};

/// mke2fs as the image carries it (`[[binaries]]` of the profile).
pub const MKFS_EXT4: &str = "/sbin/mkfs.ext4";
/// e2fsck as the image carries it.
pub const E2FSCK: &str = "/sbin/e2fsck";
/// mdadm as the image carries it (for mirrors).
pub const MDADM: &str = "/sbin/mdadm";
/// The label init gives a file system it creates.
pub const FS_LABEL: &str = DEFAULT_LABEL;
/// The smallest device init formats or mounts as state.
pub const MIN_SIZE: u64 = 64 << 20;
/// The directories on the state disk and where each is bind-mounted.
pub const LAYOUT: [(&str, Option<&str>); 4] = [
    ("store", Some(paths::STORE)),
    ("volumes", Some(paths::VOLUMES)),
    ("containers", Some(paths::CONTAINERS)),
    ("log", None),
];
/// How much of a device's start and end [`signature`] looks at.
pub const PROBE_BYTES: usize = 128 * 1024;

/// What a device carries that makes it not blank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// A GPT header ("EFI PART" at LBA 1).
    Gpt,
    /// An MBR or boot sector (0x55AA at 510).
    Mbr,
    /// ext2/3/4 (0xEF53 in the superblock at 1024).
    Ext,
    /// xfs ("XFSB" at 0).
    Xfs,
    /// btrfs ("_BHRfS_M" in the superblock at 64 KiB).
    Btrfs,
    /// An md RAID superblock (0.90, 1.0, 1.1 or 1.2).
    Md,
    /// An LVM physical volume ("LABELONE" in one of the first four sectors).
    Lvm,
    /// LUKS encryption.
    Luks,
    /// A swap area.
    Swap,
}

impl Signature {
    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            Signature::Gpt => "a GPT partition table",
            Signature::Mbr => "an MBR partition table or boot sector",
            Signature::Ext => "an ext2/3/4 file system",
            Signature::Xfs => "an xfs file system",
            Signature::Btrfs => "a btrfs file system",
            Signature::Md => "an md RAID superblock",
            Signature::Lvm => "an LVM physical volume",
            Signature::Luks => "a LUKS header",
            Signature::Swap => "a swap signature",
        }
    }
}

const MD_MAGIC: [u8; 4] = 0xa92b_4efc_u32.to_le_bytes();

/// The first signature found in a device of `size` bytes, given its first
/// bytes (`head`, ideally [`PROBE_BYTES`]) and its last bytes (`tail`,
/// ending at `size`). `None`: blank. Pure, for the tests.
pub fn signature(head: &[u8], tail: &[u8], size: u64) -> Option<Signature> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    // File systems first: they say more than a boot sector's 0x55AA.
    if at(0, b"XFSB") {
        return Some(Signature::Xfs);
    }
    if at(1024 + 56, &[0x53, 0xef]) {
        return Some(Signature::Ext);
    }
    if at(65536 + 64, b"_BHRfS_M") {
        return Some(Signature::Btrfs);
    }
    if at(0, b"LUKS\xba\xbe") || at(0, b"SKUL\xba\xbe") {
        return Some(Signature::Luks);
    }
    if (0..4).any(|s| at(s * 512, b"LABELONE")) {
        return Some(Signature::Lvm);
    }
    if [4086, 8182, 16374, 65526]
        .iter()
        .any(|&o| at(o, b"SWAPSPACE2") || at(o, b"SWAP-SPACE"))
    {
        return Some(Signature::Swap);
    }
    // md 1.1 at 0, 1.2 at 4 KiB; 1.0 at 8 KiB before the end (4 KiB aligned),
    // 0.90 in the last 64 KiB-aligned 64 KiB block.
    if at(0, &MD_MAGIC) || at(4096, &MD_MAGIC) {
        return Some(Signature::Md);
    }
    let tail_start = size.saturating_sub(tail.len() as u64);
    let in_tail = |offset: u64| {
        offset
            .checked_sub(tail_start)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| tail.get(o..o + 4))
            == Some(&MD_MAGIC[..])
    };
    let v1_0 = size.saturating_sub(8192) & !4095;
    let v0_90 = (size & !65535).saturating_sub(65536);
    if size >= 65536 * 2 && (in_tail(v1_0) || in_tail(v0_90)) {
        return Some(Signature::Md);
    }
    if at(512, b"EFI PART") || at(4096, b"EFI PART") {
        return Some(Signature::Gpt);
    }
    if at(510, &[0x55, 0xaa]) {
        return Some(Signature::Mbr);
    }
    None
}

/// Errors of finding and preparing the state disk; each becomes the
/// report's note, and state stays in RAM.
#[derive(Debug, thiserror::Error)]
pub enum StateDiskError {
    /// Two or more devices match the selector.
    #[error("{selector} matches {}: name one disk (serial:, wwn: or path:) or relabel one", list(.devices))]
    Ambiguous {
        /// The selector as configured.
        selector: String,
        /// Every matching device.
        devices: Vec<PathBuf>,
    },
    /// The only match is on the disk the host booted from.
    #[error("{selector} matches {device} on the boot disk {disk}, which is never used for state", device = device.display())]
    BootDisk {
        /// The selector as configured.
        selector: String,
        /// The matching device.
        device: PathBuf,
        /// The boot disk.
        disk: String,
    },
    /// A device could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        /// The device.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The device is smaller than [`MIN_SIZE`].
    #[error("{device} holds {size} bytes, less than the {MIN_SIZE} a state disk needs", device = device.display())]
    TooSmall {
        /// The device.
        device: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The device carries something that is not a file system init mounts.
    #[error("{device} holds {}; not touched (wipe it, or name another disk)", .found.name(), device = device.display())]
    Occupied {
        /// The device.
        device: PathBuf,
        /// What is on it.
        found: Signature,
    },
    /// The device is blank and the configuration forbids formatting.
    #[error("{device} is blank and format = \"never\"; set format = \"if-blank\" (or mkhost.state.format=if-blank) to let init create ext4", device = device.display())]
    BlankNotFormatted {
        /// The device.
        device: PathBuf,
    },
    /// The device is blank and the configured file system is xfs.
    #[error("{device} is blank and filesystem = \"xfs\": init creates ext4 only", device = device.display())]
    NoXfsMkfs {
        /// The device.
        device: PathBuf,
    },
    /// A tool the image should carry could not be run.
    #[error("cannot run {tool}: {source} (the profile's [[binaries]] must carry it)")]
    Tool {
        /// The tool's path.
        tool: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// mkfs failed.
    #[error("{MKFS_EXT4} {device} failed ({status}): {output}", device = device.display())]
    Mkfs {
        /// The device.
        device: PathBuf,
        /// The exit status.
        status: String,
        /// Its output, shortened.
        output: String,
    },
    /// e2fsck found errors it could not repair by itself.
    #[error("{E2FSCK} -p {device} exited {code}: the file system has errors that need a manual repair (e2fsck {device} from a shell), state stays in RAM: {output}", device = device.display())]
    Fsck {
        /// The device.
        device: PathBuf,
        /// e2fsck's exit code.
        code: i32,
        /// Its output, shortened.
        output: String,
    },
    /// A mount failed.
    #[error("cannot mount {source_path} on {target}: {error}", target = target.display())]
    Mount {
        /// What was mounted.
        source_path: String,
        /// Where.
        target: PathBuf,
        /// The I/O error.
        #[source]
        error: io::Error,
    },
    /// The two disks of a mirror hold something init does not touch.
    #[error(transparent)]
    Mirror(#[from] mirror::MirrorRefusal),
    /// mdadm failed to create or assemble the mirror.
    #[error("{MDADM} --{action} {MD_DEVICE} failed (exit {code}): {output}")]
    Mdadm {
        /// `create` or `assemble`.
        action: &'static str,
        /// mdadm's exit code.
        code: i32,
        /// Its output, shortened.
        output: String,
    },
    /// A directory on the state disk could not be made.
    #[error("cannot create {path}: {source}", path = path.display())]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn list(devices: &[PathBuf]) -> String {
    let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
    format!("{} devices: {}", names.len(), names.join(" and "))
}

/// A device a selector matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The device node below the root (`/dev/vdb1`).
    pub device: PathBuf,
    /// Its name in `/sys/class/block` (`vdb1`).
    pub name: String,
    /// The whole disk it is on (`vdb`).
    pub disk: String,
}

fn attr(root: &Path, name: &str, files: &[&str]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| read_trimmed(&at(root, &format!("/sys/class/block/{name}/{f}"))))
        .filter(|v| !v.is_empty())
        .collect()
}

/// A WWN without its NAA/EUI prefix, lowercase, for comparing.
fn wwn_key(w: &str) -> String {
    let w = w.trim().to_ascii_lowercase();
    ["naa.", "eui.", "0x", "wwn-0x"]
        .iter()
        .find_map(|p| w.strip_prefix(p))
        .unwrap_or(&w)
        .to_string()
}

/// The whole disk `name` is on: itself, or the parent directory's name in
/// sysfs for a partition (`vdb1` -> `vdb`).
fn disk_of(root: &Path, name: &str) -> String {
    let class = at(root, "/sys/class/block");
    if !class.join(name).join("partition").exists() {
        return name.to_string();
    }
    bootdisk::whole_disks(root)
        .into_iter()
        .find(|d| name.starts_with(d.as_str()) && class.join(d).join(name).is_dir())
        .unwrap_or_else(|| name.to_string())
}

/// Every device below `root` that `selector` names, the boot disks'
/// included (the caller leaves those out).
pub fn matches(root: &Path, selector: &DiskSelector) -> Vec<Candidate> {
    let whole = |name: String| Candidate {
        device: at(root, &format!("/dev/{name}")),
        disk: name.clone(),
        name,
    };
    let part = |p: bootdisk::FoundPartition| Candidate {
        name: p
            .device
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        device: p.device,
        disk: p.disk,
    };
    match selector {
        DiskSelector::None => Vec::new(),
        DiskSelector::Label(label) => bootdisk::partitions(root)
            .into_iter()
            .filter(|p| &p.entry.name == label)
            .map(part)
            .collect(),
        DiskSelector::Type(guid) => bootdisk::partitions(root)
            .into_iter()
            .filter(|p| &p.entry.type_guid == guid)
            .map(part)
            .collect(),
        DiskSelector::Serial(serial) => bootdisk::whole_disks(root)
            .into_iter()
            .filter(|d| attr(root, d, &["serial", "device/serial"]).contains(serial))
            .map(whole)
            .collect(),
        DiskSelector::Wwn(wwn) => bootdisk::whole_disks(root)
            .into_iter()
            .filter(|d| {
                attr(root, d, &["wwid", "device/wwid", "device/wwn"])
                    .iter()
                    .any(|w| wwn_key(w) == wwn_key(wwn))
            })
            .map(whole)
            .collect(),
        DiskSelector::Path(path) => {
            let name = path.trim_start_matches("/dev/").to_string();
            if at(root, &format!("/sys/class/block/{name}")).exists() {
                vec![Candidate {
                    device: at(root, path),
                    disk: disk_of(root, &name),
                    name,
                }]
            } else {
                Vec::new()
            }
        }
    }
}

/// The one device `selector` names, leaving out `boot_disks`. `Ok(None)`:
/// none (yet).
pub fn find(
    root: &Path,
    selector_text: &str,
    selector: &DiskSelector,
    boot_disks: &[String],
) -> Result<Option<Candidate>, StateDiskError> {
    let all = matches(root, selector);
    let (boot, mut usable): (Vec<Candidate>, Vec<Candidate>) =
        all.into_iter().partition(|c| boot_disks.contains(&c.disk));
    match usable.len() {
        0 => match boot.into_iter().next() {
            Some(c) => Err(StateDiskError::BootDisk {
                selector: selector_text.to_string(),
                device: c.device,
                disk: c.disk,
            }),
            None => Ok(None),
        },
        1 => Ok(usable.pop()),
        _ => Err(StateDiskError::Ambiguous {
            selector: selector_text.to_string(),
            devices: usable.into_iter().map(|c| c.device).collect(),
        }),
    }
}

/// The disks the host booted from: the disk holding the loader's partition
/// (`LoaderDevicePartUUID`), and the disk of the ESP host.toml was read
/// from.
pub fn boot_disks(root: &Path, host_toml_device: Option<&Path>) -> Vec<String> {
    let mut disks = Vec::new();
    let parts = bootdisk::partitions(root);
    if let Some(partuuid) = bootdisk::loader_partuuid(root) {
        disks.extend(
            parts
                .iter()
                .filter(|p| p.entry.part_guid == partuuid)
                .map(|p| p.disk.clone()),
        );
    }
    if let Some(device) = host_toml_device {
        disks.extend(
            parts
                .iter()
                .filter(|p| p.device == device)
                .map(|p| p.disk.clone()),
        );
    }
    disks.sort();
    disks.dedup();
    disks
}

/// The device's size in bytes, from sysfs (512-byte sectors).
fn size_of(root: &Path, name: &str) -> u64 {
    read_trimmed(&at(root, &format!("/sys/class/block/{name}/size")))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_mul(512)
}

/// Reads the first and last [`PROBE_BYTES`] of `device` (of `size` bytes).
fn probe(device: &Path, size: u64) -> Result<(Vec<u8>, Vec<u8>), StateDiskError> {
    let err = |source| StateDiskError::Read {
        path: device.to_path_buf(),
        source,
    };
    let mut f = fs::File::open(device).map_err(err)?;
    let len = PROBE_BYTES.min(usize::try_from(size).unwrap_or(PROBE_BYTES));
    let mut head = vec![0u8; len];
    f.read_exact(&mut head).map_err(err)?;
    let mut tail = vec![0u8; len];
    f.seek(SeekFrom::Start(size - len as u64)).map_err(err)?;
    f.read_exact(&mut tail).map_err(err)?;
    Ok((head, tail))
}

/// Runs an image tool by absolute path; returns its exit code and its
/// output (stdout and stderr, at most 400 characters).
fn run_tool(tool: &'static str, args: &[&str]) -> Result<(i32, String), StateDiskError> {
    run_tool_env(tool, args, &[])
}

/// [`run_tool`] with environment variables besides `PATH`.
fn run_tool_env(
    tool: &'static str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(i32, String), StateDiskError> {
    let mut cmd = Command::new(tool);
    cmd.args(args).env_clear().env("PATH", "/sbin:/bin");
    cmd.envs(env.iter().copied());
    os::unblock_signals_on_exec(&mut cmd);
    let out = cmd
        .output()
        .map_err(|source| StateDiskError::Tool { tool, source })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(400)
        .collect();
    Ok((out.status.code().unwrap_or(-1), text))
}

/// What was decided about the device before mounting.
struct Prepared {
    filesystem: Filesystem,
    formatted: bool,
    note: Option<String>,
}

/// Checks, and if allowed formats, `device`.
fn check_or_format(
    device: &Path,
    size: u64,
    config: &StateConfig,
) -> Result<Prepared, StateDiskError> {
    if size < MIN_SIZE {
        return Err(StateDiskError::TooSmall {
            device: device.to_path_buf(),
            size,
        });
    }
    let (head, tail) = probe(device, size)?;
    let dev = device.to_string_lossy().into_owned();
    match signature(&head, &tail, size) {
        Some(Signature::Ext) => {
            let t = Instant::now();
            let (code, output) = run_tool(E2FSCK, &["-p", &dev])?;
            let note = match code {
                0 => None,
                1 => Some(format!("e2fsck repaired the file system: {output}")),
                2 | 3 => Some(format!(
                    "e2fsck repaired the file system and asks for a reboot: {output}"
                )),
                _ => {
                    return Err(StateDiskError::Fsck {
                        device: device.to_path_buf(),
                        code,
                        output,
                    })
                }
            };
            timeline::phase(&format!(
                "state: e2fsck -p {dev}: exit {code} in {} ms",
                t.elapsed().as_millis()
            ));
            Ok(Prepared {
                filesystem: Filesystem::Ext4,
                formatted: false,
                note,
            })
        }
        Some(Signature::Xfs) => Ok(Prepared {
            filesystem: Filesystem::Xfs,
            formatted: false,
            note: Some("xfs is mounted as found: init does not check it".to_string()),
        }),
        Some(found) => Err(StateDiskError::Occupied {
            device: device.to_path_buf(),
            found,
        }),
        None => match (config.format, config.filesystem) {
            (FormatPolicy::Never, _) => Err(StateDiskError::BlankNotFormatted {
                device: device.to_path_buf(),
            }),
            (FormatPolicy::IfBlank, Filesystem::Xfs) => Err(StateDiskError::NoXfsMkfs {
                device: device.to_path_buf(),
            }),
            (FormatPolicy::IfBlank, Filesystem::Ext4) => {
                let t = Instant::now();
                let (code, output) = run_tool(MKFS_EXT4, &["-L", FS_LABEL, "-F", "-q", &dev])?;
                if code != 0 {
                    return Err(StateDiskError::Mkfs {
                        device: device.to_path_buf(),
                        status: format!("exit {code}"),
                        output,
                    });
                }
                timeline::phase(&format!(
                    "state: {dev} was blank: created ext4 (label {FS_LABEL}) in {} ms",
                    t.elapsed().as_millis()
                ));
                Ok(Prepared {
                    filesystem: Filesystem::Ext4,
                    formatted: true,
                    note: None,
                })
            }
        },
    }
}

fn fs_name(fs: Filesystem) -> &'static str {
    match fs {
        Filesystem::Ext4 => "ext4",
        Filesystem::Xfs => "xfs",
    }
}

/// Loads the module of file system `name` (`fs-ext4`) unless the kernel
/// has it already, as modprobe would. Without this the mount failed with
/// ENODEV in the QEMU test: the kernel's own request for `fs-ext4` did not
/// load the module at that point of the boot (not investigated further).
fn load_filesystem(root: &Path, name: &str) {
    let known = fs::read_to_string(at(root, "/proc/filesystems"))
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)))
        .unwrap_or(false);
    if !known {
        let request = modprobe::Request {
            names: vec![format!("fs-{name}")],
            quiet: false,
        };
        if modprobe::run(root, &request) != 0 {
            timeline::warning(&format!("state: cannot load the {name} module"));
        }
    }
}

/// Mounts `device` at [`paths::STATE_DISK`] and bind-mounts its
/// directories; on a failure undoes what it mounted.
fn mount_state(root: &Path, device: &Path, fs: Filesystem) -> Result<(), StateDiskError> {
    let mountpoint = at(root, paths::STATE_DISK);
    let mkdir = |path: &Path| {
        fs::create_dir_all(path).map_err(|source| StateDiskError::Mkdir {
            path: path.to_path_buf(),
            source,
        })
    };
    mkdir(&mountpoint)?;
    load_filesystem(root, fs_name(fs));
    let source_path = device.to_string_lossy().into_owned();
    os::mount(
        &source_path,
        &mountpoint,
        fs_name(fs),
        MountFlags::NOATIME,
        None,
    )
    .map_err(|error| StateDiskError::Mount {
        source_path,
        target: mountpoint.clone(),
        error,
    })?;
    let mut mounted = vec![mountpoint.clone()];
    let result = (|| {
        for (dir, target) in LAYOUT {
            let on_disk = mountpoint.join(dir);
            mkdir(&on_disk)?;
            if let Some(target) = target {
                let target = at(root, target);
                mkdir(&target)?;
                os::bind_mount(&on_disk, &target).map_err(|error| StateDiskError::Mount {
                    source_path: on_disk.to_string_lossy().into_owned(),
                    target: target.clone(),
                    error,
                })?;
                mounted.push(target);
            }
        }
        Ok(())
    })();
    if result.is_err() {
        for m in mounted.iter().rev() {
            let _ = os::unmount(m, UnmountFlags::DETACH);
        }
    }
    result
}

/// A report of state in RAM for `why`.
pub fn ram(why: impl Into<String>) -> StateReport {
    StateReport {
        persistent: false,
        note: Some(why.into()),
        ..StateReport::default()
    }
}

/// The ready line's `state=` value: `/dev/vdb(ext4,formatted)`,
/// `/dev/md127(ext4,degraded)` or `ram(no state disk configured)` (the
/// ready line makes it one token).
pub fn ready_field(report: &StateReport) -> String {
    if report.persistent {
        let mut parts = vec![report.filesystem.clone().unwrap_or_default()];
        if report.formatted {
            parts.push("formatted".to_string());
        }
        if report.degraded {
            parts.push("degraded".to_string());
        }
        format!(
            "{}({})",
            report.device.as_deref().unwrap_or("?"),
            parts.join(",")
        )
    } else {
        format!("ram({})", report.note.as_deref().unwrap_or("no state disk"))
    }
}

/// Finds, checks, formats if allowed and mounts the state disk named by
/// `config`; waits up to `config.wait_ms` for it, looking again whenever
/// `activity` says disks changed. Never fails: what went wrong is the
/// report's note, and state stays in RAM.
pub fn prepare(
    root: &Path,
    config: Option<&StateConfig>,
    boot_disks: &[String],
    activity: &mut dyn FnMut(Duration) -> Activity,
) -> StateReport {
    let Some(config) = config else {
        return ram("no state disk configured");
    };
    let selector = match DiskSelector::parse(&config.disk) {
        Ok(DiskSelector::None) => return ram("state disk set to none"),
        Ok(s) => s,
        Err(e) => return ram(e),
    };
    if !config.mirror.is_empty() {
        return prepare_mirror(root, config, boot_disks, activity);
    }
    let t = Instant::now();
    let max = Duration::from_millis(config.wait_ms);
    let mut wait = EspWait::with_limits(t, max, ESP_QUIET.min(max));
    let candidate = loop {
        let now = Instant::now();
        let a = activity(now.saturating_duration_since(t));
        match wait.step(now, a.block_generation, a.quiet_for, a.busy) {
            EspStep::Look => match find(root, &config.disk, &selector, boot_disks) {
                Ok(Some(c)) => break c,
                Ok(None) => {}
                Err(e) => return ram(e.to_string()),
            },
            EspStep::Wait => std::thread::sleep(Duration::from_millis(20)),
            EspStep::GiveUp { waited, why } => {
                return ram(format!(
                    "no disk matches {} (waited {} ms, {why})",
                    config.disk,
                    waited.as_millis()
                ))
            }
        }
    };
    timeline::phase(&format!(
        "state: {} is {} ({} MiB), found in {} ms",
        config.disk,
        candidate.device.display(),
        size_of(root, &candidate.name) >> 20,
        t.elapsed().as_millis()
    ));
    use_device(root, &candidate.name, &candidate.device, config)
        .unwrap_or_else(|e| ram(e.to_string()))
}

/// Checks, formats if allowed and mounts `device` (named `name` in sysfs):
/// the one path for a disk, a partition and a mirror's array.
fn use_device(
    root: &Path,
    name: &str,
    device: &Path,
    config: &StateConfig,
) -> Result<StateReport, StateDiskError> {
    let size = size_of(root, name);
    let prepared = check_or_format(device, size, config)?;
    mount_state(root, device, prepared.filesystem)?;
    Ok(StateReport {
        persistent: true,
        device: Some(device.to_string_lossy().into_owned()),
        filesystem: Some(fs_name(prepared.filesystem).to_string()),
        mountpoint: Some(paths::STATE_DISK.to_string()),
        size,
        formatted: prepared.formatted,
        degraded: false,
        note: prepared.note,
    })
}

/// What a mirror disk `c` holds, from its signature and md superblock.
fn holds(root: &Path, c: &Candidate) -> Result<Holds, StateDiskError> {
    let size = size_of(root, &c.name);
    if size < MIN_SIZE {
        return Err(StateDiskError::TooSmall {
            device: c.device.clone(),
            size,
        });
    }
    let (head, tail) = probe(&c.device, size)?;
    Ok(match signature(&head, &tail, size) {
        None => Holds::Blank,
        Some(Signature::Md) => match mirror::md_superblock(&head) {
            Some(sb) => Holds::Member(sb),
            None => Holds::Other("an md superblock other than version 1.2".to_string()),
        },
        Some(found) => Holds::Other(found.name().to_string()),
    })
}

/// The mirror: waits for both disks (as [`prepare`] waits for one), decides
/// ([`mirror::decide`]), creates or assembles [`MD_DEVICE`] with the image's
/// [`MDADM`], then uses the array as one disk. Never fails: state stays in
/// RAM with a note naming the disks.
fn prepare_mirror(
    root: &Path,
    config: &StateConfig,
    boot_disks: &[String],
    activity: &mut dyn FnMut(Duration) -> Activity,
) -> StateReport {
    let mut selectors = Vec::new();
    for text in &config.mirror {
        match DiskSelector::parse(text) {
            Ok(s) => selectors.push((text.as_str(), s)),
            Err(e) => return ram(format!("mirror: {e}")),
        }
    }
    let t = Instant::now();
    let max = Duration::from_millis(config.wait_ms);
    let mut wait = EspWait::with_limits(t, max, ESP_QUIET.min(max));
    let mut found: Vec<Option<Candidate>> = vec![None; selectors.len()];
    loop {
        let now = Instant::now();
        let a = activity(now.saturating_duration_since(t));
        match wait.step(now, a.block_generation, a.quiet_for, a.busy) {
            EspStep::Look => {
                for ((text, selector), slot) in selectors.iter().zip(found.iter_mut()) {
                    match find(root, text, selector, boot_disks) {
                        Ok(c) => *slot = c,
                        Err(e) => return ram(format!("mirror: {e}")),
                    }
                }
                if found.iter().all(Option::is_some) {
                    break;
                }
            }
            EspStep::Wait => std::thread::sleep(Duration::from_millis(20)),
            EspStep::GiveUp { waited, why } => {
                timeline::phase(&format!(
                    "state: mirror: stopped waiting after {} ms ({why})",
                    waited.as_millis()
                ));
                break;
            }
        }
    }
    let mut disks = Vec::new();
    for ((text, _), c) in selectors.iter().zip(&found) {
        let found = match c {
            Some(c) => match holds(root, c) {
                Ok(h) => Some((c.device.clone(), h)),
                Err(e) => return ram(format!("mirror: {e}")),
            },
            None => None,
        };
        disks.push(MirrorDisk {
            selector: text.to_string(),
            found,
        });
    }
    let Ok(disks) = <[MirrorDisk; 2]>::try_from(disks) else {
        return ram("mirror: a mirror is exactly two disks");
    };
    timeline::phase(&format!(
        "state: mirror {} found in {} ms",
        disks
            .iter()
            .map(|d| match &d.found {
                Some((dev, _)) => format!("{} is {}", d.selector, dev.display()),
                None => format!("{} is missing", d.selector),
            })
            .collect::<Vec<_>>()
            .join(", "),
        t.elapsed().as_millis()
    ));
    let plan = match mirror::decide(&disks, config.format) {
        Ok(plan) => plan,
        Err(e) => return ram(e.to_string()),
    };
    let device = at(root, MD_DEVICE);
    let degraded_why = match run_mdadm(root, &plan) {
        Ok(why) => why,
        Err(e) => return ram(e.to_string()),
    };
    match use_device(root, MD_NAME, &device, config) {
        Ok(mut report) => {
            report.device = Some(MD_DEVICE.to_string());
            report.degraded = degraded_why.is_some();
            report.note = match (degraded_why, report.note) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            report
        }
        Err(e) => {
            // Leave the disks as found: stop the array init started.
            let _ = run_tool_env(MDADM, &["--stop", MD_DEVICE], MDADM_ENV);
            ram(e.to_string())
        }
    }
}

/// mdadm's environment: no udev in the image, so mdadm makes the device
/// node itself instead of waiting for udev to.
const MDADM_ENV: &[(&str, &str)] = &[("MDADM_NO_UDEV", "1")];

/// Loads raid1 (and md_mod) and runs mdadm for `plan`; returns why the
/// array is degraded, when it is (the plan's reason, or the kernel's count
/// of missing members after assembly).
fn run_mdadm(root: &Path, plan: &Plan) -> Result<Option<String>, StateDiskError> {
    let request = modprobe::Request {
        names: vec!["raid1".to_string()],
        quiet: false,
    };
    if modprobe::run(root, &request) != 0 {
        timeline::warning("state: cannot load the raid1 module");
    }
    let t = Instant::now();
    let (action, devices, mut degraded) = match plan {
        Plan::Create { devices } => ("create", devices.to_vec(), None),
        Plan::Assemble { devices, degraded } => ("assemble", devices.clone(), degraded.clone()),
    };
    let name = format!("--name={}", mirror::ARRAY_NAME);
    let mut args: Vec<&str> = match plan {
        Plan::Create { .. } => vec![
            "--create",
            MD_DEVICE,
            "--config=none",
            "--auto=md",
            "--run",
            "--level=1",
            "--raid-devices=2",
            "--metadata=1.2",
            "--homehost=any",
            &name,
        ],
        Plan::Assemble { .. } => vec![
            "--assemble",
            MD_DEVICE,
            "--config=none",
            "--auto=md",
            "--run",
        ],
    };
    let texts: Vec<String> = devices
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    args.extend(texts.iter().map(String::as_str));
    let (code, output) = run_tool_env(MDADM, &args, MDADM_ENV)?;
    if code != 0 {
        return Err(StateDiskError::Mdadm {
            action,
            code,
            output,
        });
    }
    let missing = read_trimmed(&at(
        root,
        &format!("/sys/class/block/{MD_NAME}/md/degraded"),
    ))
    .and_then(|s| s.parse::<u32>().ok())
    .unwrap_or(0);
    if missing > 0 && degraded.is_none() {
        degraded = Some(format!(
            "mirror degraded: {missing} of 2 disks not in the array (see /proc/mdstat)"
        ));
    }
    timeline::phase(&format!(
        "state: mdadm --{action} {MD_DEVICE} {}: done in {} ms{}",
        texts.join(" "),
        t.elapsed().as_millis(),
        degraded
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    ));
    Ok(degraded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::config::bootdisk::testing::gpt_image;

    const SIZE: u64 = 1 << 30;

    const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    const ESP: &str = bootdisk::ESP_TYPE;

    fn blank() -> (Vec<u8>, Vec<u8>) {
        (vec![0u8; PROBE_BYTES], vec![0u8; PROBE_BYTES])
    }

    fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
        buf[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn blank_means_no_signature_not_all_zero() {
        let (head, tail) = blank();
        assert_eq!(signature(&head, &tail, SIZE), None);
        // Random-looking bytes without a signature are blank too.
        let noise: Vec<u8> = (0..PROBE_BYTES)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(signature(&noise, &noise, SIZE), None);
        // A short device (less than the probe) still works.
        assert_eq!(signature(&[0u8; 100], &[0u8; 100], 100), None);
    }

    #[test]
    fn every_signature_is_found() {
        let cases: [(usize, &[u8], Signature); 13] = [
            (510, &[0x55, 0xaa], Signature::Mbr),
            (512, b"EFI PART", Signature::Gpt),
            (4096, b"EFI PART", Signature::Gpt),
            (1080, &[0x53, 0xef], Signature::Ext),
            (0, b"XFSB", Signature::Xfs),
            (65600, b"_BHRfS_M", Signature::Btrfs),
            (0, &MD_MAGIC, Signature::Md),
            (4096, &MD_MAGIC, Signature::Md),
            (512, b"LABELONE", Signature::Lvm),
            (0, b"LUKS\xba\xbe", Signature::Luks),
            (4086, b"SWAPSPACE2", Signature::Swap),
            (4086, b"SWAP-SPACE", Signature::Swap),
            (1536, b"LABELONE", Signature::Lvm),
        ];
        for (offset, magic, want) in cases {
            let (mut head, tail) = blank();
            put(&mut head, offset, magic);
            assert_eq!(
                signature(&head, &tail, SIZE),
                Some(want),
                "{want:?} at {offset}"
            );
        }
        // A file system with a boot sector is reported as the file system.
        let (mut head, tail) = blank();
        put(&mut head, 510, &[0x55, 0xaa]);
        put(&mut head, 1080, &[0x53, 0xef]);
        assert_eq!(signature(&head, &tail, SIZE), Some(Signature::Ext));
    }

    #[test]
    fn md_superblocks_at_the_end_are_found() {
        // 1.0: 8 KiB before the end, 4 KiB aligned.
        let size = SIZE + 3 * 512;
        let (head, mut tail) = blank();
        let v1_0 = (size - 8192) & !4095;
        put(
            &mut tail,
            usize::try_from(v1_0 - (size - PROBE_BYTES as u64)).unwrap(),
            &MD_MAGIC,
        );
        assert_eq!(signature(&head, &tail, size), Some(Signature::Md));
        // 0.90: the last 64 KiB-aligned 64 KiB block.
        let (head, mut tail) = blank();
        let v0_90 = (size & !65535) - 65536;
        put(
            &mut tail,
            usize::try_from(v0_90 - (size - PROBE_BYTES as u64)).unwrap(),
            &MD_MAGIC,
        );
        assert_eq!(signature(&head, &tail, size), Some(Signature::Md));
        // The magic elsewhere in the tail is data.
        let (head, mut tail) = blank();
        put(&mut tail, 100, &MD_MAGIC);
        assert_eq!(signature(&head, &tail, size), None);
    }

    /// A fake `/sys/class/block` and `/dev` below a temporary root.
    struct FakeSys {
        dir: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        /// A whole disk with attributes (`serial`, `device/wwid`, ...) and
        /// GPT partitions (type GUID, name).
        fn disk(&self, name: &str, attrs: &[(&str, &str)], parts: &[(&str, &str)]) {
            let sys = self.root().join("sys/class/block").join(name);
            fs::create_dir_all(&sys).unwrap();
            fs::write(sys.join("size"), "2097152\n").unwrap();
            for (k, v) in attrs {
                let p = sys.join(k);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, format!("{v}\n")).unwrap();
            }
            let ids: Vec<String> = (1..=parts.len())
                .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
                .collect();
            let table: Vec<(&str, &str, &str)> = parts
                .iter()
                .zip(&ids)
                .map(|((ty, label), id)| (*ty, id.as_str(), *label))
                .collect();
            let img = if parts.is_empty() {
                vec![0u8; 512 * 40]
            } else {
                gpt_image(&table)
            };
            for i in 0..parts.len() {
                let pname = format!("{name}{}", i + 1);
                fs::create_dir_all(sys.join(&pname)).unwrap();
                let psys = self.root().join("sys/class/block").join(&pname);
                fs::create_dir_all(&psys).unwrap();
                fs::write(psys.join("partition"), format!("{}\n", i + 1)).unwrap();
                fs::write(psys.join("size"), "1048576\n").unwrap();
            }
            fs::create_dir_all(self.root().join("dev")).unwrap();
            fs::write(self.root().join("dev").join(name), img).unwrap();
        }
    }

    fn names(found: &[Candidate]) -> Vec<(String, String)> {
        found
            .iter()
            .map(|c| (c.name.clone(), c.disk.clone()))
            .collect()
    }

    #[test]
    fn selectors_match_partitions_and_whole_disks() {
        let sys = FakeSys::new();
        sys.disk("vda", &[("serial", "boot")], &[(ESP, "EFI system")]);
        sys.disk(
            "vdb",
            &[("serial", "state1")],
            &[(LINUX, "scratch"), (LINUX, "mkhost-state")],
        );
        sys.disk("sda", &[("device/wwid", "naa.5000c500a1b2c3d4")], &[]);
        sys.disk("nvme0n1", &[("device/serial", "S3YJNX0K  ")], &[]);
        sys.disk("loop0", &[("serial", "state1")], &[]);
        let root = sys.root();
        let label = DiskSelector::parse("label:mkhost-state").unwrap();
        assert_eq!(
            names(&matches(root, &label)),
            [("vdb2".to_string(), "vdb".to_string())]
        );
        let serial = DiskSelector::parse("serial:state1").unwrap();
        assert_eq!(
            names(&matches(root, &serial)),
            [("vdb".to_string(), "vdb".to_string())],
            "loop devices are never candidates"
        );
        let serial = DiskSelector::parse("serial:S3YJNX0K").unwrap();
        assert_eq!(names(&matches(root, &serial))[0].0, "nvme0n1");
        for wwn in ["wwn:naa.5000c500a1b2c3d4", "wwn:0x5000C500A1B2C3D4"] {
            let found = matches(root, &DiskSelector::parse(wwn).unwrap());
            assert_eq!(names(&found)[0].0, "sda", "{wwn}");
        }
        let path = DiskSelector::parse("path:/dev/vdb1").unwrap();
        let found = matches(root, &path);
        assert_eq!(names(&found), [("vdb1".to_string(), "vdb".to_string())]);
        assert_eq!(found[0].device, root.join("dev/vdb1"));
        assert!(matches(root, &DiskSelector::parse("path:/dev/vdz").unwrap()).is_empty());
        assert!(matches(root, &DiskSelector::parse("label:nothing").unwrap()).is_empty());
        let linux = DiskSelector::parse(&format!("type:{}", LINUX.to_uppercase())).unwrap();
        assert_eq!(
            names(&matches(root, &linux)),
            [
                ("vdb1".to_string(), "vdb".to_string()),
                ("vdb2".to_string(), "vdb".to_string())
            ]
        );
    }

    #[test]
    fn two_candidates_are_an_error_naming_both_and_the_boot_disk_is_left_out() {
        let sys = FakeSys::new();
        sys.disk("vda", &[], &[(ESP, "mkhost-state")]);
        sys.disk("vdb", &[], &[(LINUX, "mkhost-state")]);
        sys.disk("vdc", &[], &[(LINUX, "mkhost-state")]);
        let root = sys.root();
        let label = DiskSelector::parse("label:mkhost-state").unwrap();
        // vda is the boot disk: left out, but vdb and vdc both match.
        let err = find(root, "label:mkhost-state", &label, &["vda".into()]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("vdb1") && text.contains("vdc1") && !text.contains("vda1"),
            "{text}"
        );
        // Only the boot disk matches: refused, said so.
        let sys = FakeSys::new();
        sys.disk("vda", &[("serial", "stick")], &[(ESP, "mkhost-state")]);
        let root = sys.root();
        let err = find(root, "label:mkhost-state", &label, &["vda".into()]).unwrap_err();
        assert!(err.to_string().contains("boot disk vda"), "{err}");
        let serial = DiskSelector::parse("serial:stick").unwrap();
        assert!(find(root, "serial:stick", &serial, &["vda".into()]).is_err());
        // Nothing at all: not yet.
        let none = DiskSelector::parse("serial:missing").unwrap();
        assert!(find(root, "serial:missing", &none, &[]).unwrap().is_none());
    }

    #[test]
    fn nothing_configured_or_no_mirror_disk_stays_in_ram() {
        let sys = FakeSys::new();
        let mut quiet = |waited: Duration| Activity {
            block_generation: 0,
            quiet_for: waited,
            busy: false,
        };
        let r = prepare(sys.root(), None, &[], &mut quiet);
        assert!(!r.persistent);
        assert_eq!(r.note.as_deref(), Some("no state disk configured"));
        assert_eq!(ready_field(&r), "ram(no state disk configured)");
        // A mirror whose disks never come: nothing touched, both named.
        let mirror = StateConfig {
            mirror: vec!["serial:a".into(), "serial:b".into()],
            wait_ms: 50,
            ..StateConfig::default()
        };
        let r = prepare(sys.root(), Some(&mirror), &[], &mut quiet);
        assert!(!r.persistent);
        assert_eq!(
            r.note.as_deref(),
            Some("mirror: no disk matches serial:a or serial:b")
        );
        // A disk that never comes: give up after wait_ms.
        let missing = StateConfig {
            disk: "serial:nope".into(),
            wait_ms: 50,
            ..StateConfig::default()
        };
        let r = prepare(sys.root(), Some(&missing), &[], &mut quiet);
        assert!(
            r.note
                .as_deref()
                .unwrap()
                .starts_with("no disk matches serial:nope"),
            "{r:?}"
        );
        let on_disk = StateReport {
            persistent: true,
            device: Some("/dev/vdb".into()),
            filesystem: Some("ext4".into()),
            formatted: true,
            ..StateReport::default()
        };
        assert_eq!(ready_field(&on_disk), "/dev/vdb(ext4,formatted)");
        let degraded = StateReport {
            device: Some("/dev/md127".into()),
            formatted: false,
            degraded: true,
            ..on_disk
        };
        assert_eq!(ready_field(&degraded), "/dev/md127(ext4,degraded)");
    }
}
