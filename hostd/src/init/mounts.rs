//! The file systems `init` mounts, cgroup v2 controller delegation, and
//! unmounting everything at shutdown.
//!
//! [`MOUNTS`] is the table of API file systems in mount order. After it,
//! [`enable_cgroup_controllers`] turns on every controller the kernel offers in
//! the root cgroup's `cgroup.subtree_control`, so hostd can give containers
//! cpu/memory/pids/io limits. `efivarfs` is mounted separately
//! ([`mount_efivarfs`]) once its module is loaded. [`parse_mountinfo`] and
//! [`unmount_order`] are pure; [`unmount_all`] uses them at shutdown.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::os::{self, MountFlags, MountPropagationFlags, UnmountFlags};

/// Errors of mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount point could not be created.
    #[error("cannot create mount point {path}: {source}", path = path.display())]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// mount(2) failed.
    #[error("cannot mount {fstype} on {target}: {source}", target = target.display())]
    Mount {
        /// File system type.
        fstype: String,
        /// The mount point.
        target: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A cgroup file could not be read or written.
    #[error("cannot {step} {path}: {source}", path = path.display())]
    Cgroup {
        /// What was being done.
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// `abs` (an absolute path in the image) below `root`.
pub fn at(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// One file system `init` mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    /// Source (device name shown in /proc/mounts).
    pub source: &'static str,
    /// Mount point in the image.
    pub target: &'static str,
    /// File system type.
    pub fstype: &'static str,
    /// MS_* flags.
    pub flags: MountFlags,
    /// File-system specific options.
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// The API file systems, in mount order.
pub const MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
    },
];

/// Where efivarfs goes.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// Creates the mount point and mounts `spec` below `root`.
pub fn mount_one(root: &Path, spec: &MountSpec) -> Result<(), MountError> {
    let target = at(root, spec.target);
    fs::create_dir_all(&target).map_err(|source| MountError::MountPoint {
        path: target.clone(),
        source,
    })?;
    os::mount(spec.source, &target, spec.fstype, spec.flags, spec.data).map_err(|source| {
        MountError::Mount {
            fstype: spec.fstype.to_string(),
            target,
            source,
        }
    })
}

/// Mounts all of [`MOUNTS`]; returns the failures (the rest is still mounted).
/// Also adds the `/dev/fd`, `/dev/std*` links devtmpfs lacks.
pub fn mount_filesystems(root: &Path) -> Vec<MountError> {
    let failures: Vec<MountError> = MOUNTS
        .iter()
        .filter_map(|spec| mount_one(root, spec).err())
        .collect();
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, at(root, link));
    }
    failures
}

/// Mounts efivarfs when the machine booted through UEFI (`/sys/firmware/efi`
/// exists). Returns whether it is mounted.
pub fn mount_efivarfs(root: &Path) -> Result<bool, MountError> {
    if !at(root, "/sys/firmware/efi").is_dir() {
        return Ok(false);
    }
    mount_one(
        root,
        &MountSpec {
            source: "efivarfs",
            target: EFIVARS,
            fstype: "efivarfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
        },
    )?;
    Ok(true)
}

/// Makes `/` and everything below it shared (propagation), as container
/// runtimes expect of a host.
pub fn make_root_shared() -> io::Result<()> {
    os::set_propagation(
        Path::new("/"),
        MountPropagationFlags::SHARED | MountPropagationFlags::REC,
    )
}

/// The controllers to write to `cgroup.subtree_control`: `+name` for each
/// word of `cgroup.controllers`.
pub fn controller_requests(controllers: &str) -> Vec<String> {
    controllers
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect()
}

/// Enables every available controller for the root cgroup's children. Each
/// controller is written on its own so one refusal does not hide the others.
/// Returns the enabled controllers and the failures.
pub fn enable_cgroup_controllers(cgroup_root: &Path) -> (Vec<String>, Vec<MountError>) {
    let available = cgroup_root.join("cgroup.controllers");
    let control = cgroup_root.join("cgroup.subtree_control");
    let text = match fs::read_to_string(&available) {
        Ok(t) => t,
        Err(source) => {
            return (
                Vec::new(),
                vec![MountError::Cgroup {
                    step: "read",
                    path: available,
                    source,
                }],
            )
        }
    };
    let mut enabled = Vec::new();
    let mut failed = Vec::new();
    for request in controller_requests(&text) {
        match fs::write(&control, request.as_bytes()) {
            Ok(()) => enabled.push(request.trim_start_matches('+').to_string()),
            Err(source) => failed.push(MountError::Cgroup {
                step: "write",
                path: PathBuf::from(format!("{} ({request})", control.display())),
                source,
            }),
        }
    }
    (enabled, failed)
}

pub use crate::os::{parse_mountinfo, MountEntry};

/// Mount points that stay mounted to the end: the root and the kernel API
/// file systems shutdown itself uses.
pub const KEEP: &[&str] = &["/", "/proc", "/sys", "/dev"];

/// What to unmount at shutdown, in order: the reverse of mount order,
/// without [`KEEP`].
pub fn unmount_order(entries: &[MountEntry]) -> Vec<String> {
    entries
        .iter()
        .rev()
        .map(|e| e.target.clone())
        .filter(|t| !KEEP.contains(&t.as_str()))
        .collect()
}

/// What [`unmount_all`] did.
#[derive(Debug, Default)]
pub struct UnmountReport {
    /// Unmounted cleanly.
    pub unmounted: usize,
    /// Busy: remounted read-only and detached lazily.
    pub lazy: Vec<String>,
    /// Could not be unmounted at all.
    pub failed: Vec<String>,
}

/// Unmounts everything but [`KEEP`], last mounted first. A busy mount is
/// remounted read-only and detached lazily.
pub fn unmount_all() -> UnmountReport {
    let mut report = UnmountReport::default();
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for target in unmount_order(&parse_mountinfo(&text)) {
        let path = Path::new(&target);
        match os::unmount(path, UnmountFlags::empty()) {
            Ok(()) => report.unmounted += 1,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {} // already gone
            Err(_) => {
                let _ = os::remount(path, MountFlags::RDONLY);
                match os::unmount(path, UnmountFlags::DETACH) {
                    Ok(()) => report.lazy.push(target),
                    Err(e) => report.failed.push(format!("{target}: {e}")),
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - tmpfs tmpfs rw
23 22 0:5 / /proc rw,nosuid,nodev,noexec - proc proc rw
24 22 0:20 / /sys rw - sysfs sysfs rw
25 22 0:6 / /dev rw - devtmpfs devtmpfs rw,mode=755
26 25 0:22 / /dev/pts rw - devpts devpts rw
27 22 0:23 / /run rw - tmpfs tmpfs rw
28 24 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
29 27 8:1 / /run/my\\040disk ro - vfat /dev/vda1 ro
";

    #[test]
    fn unmounts_in_reverse_and_keeps_api_mounts() {
        let order = unmount_order(&parse_mountinfo(MOUNTINFO));
        assert_eq!(
            order,
            ["/run/my disk", "/sys/fs/cgroup", "/run", "/dev/pts"]
        );
    }

    #[test]
    fn controllers_become_plus_requests() {
        assert_eq!(
            controller_requests("cpuset cpu io memory hugetlb pids rdma misc\n"),
            ["+cpuset", "+cpu", "+io", "+memory", "+hugetlb", "+pids", "+rdma", "+misc"]
        );
        assert!(controller_requests("\n").is_empty());
    }

    #[test]
    fn enabling_writes_each_controller() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let (enabled, failed) = enable_cgroup_controllers(dir.path());
        assert_eq!(enabled, ["cpu", "memory"]);
        assert!(failed.is_empty());
        // A plain file keeps the last write; the kernel's file accumulates.
        assert_eq!(
            fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap(),
            "+memory"
        );
        let (enabled, failed) = enable_cgroup_controllers(&dir.path().join("missing"));
        assert!(enabled.is_empty());
        assert_eq!(failed.len(), 1);
    }
}
