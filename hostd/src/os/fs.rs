//! Mounts, device nodes, file-system types and opening a path confined to
//! a directory, on [`rustix::mount`] and [`rustix::fs`].

use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

pub use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

/// `mount(2)`: mounts `source` of type `fstype` on `target`, with the
/// file-system specific options `data`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let data = data
        .map(|d| CString::new(d).map_err(|_| nul_error()))
        .transpose()?;
    rustix::mount::mount(source, target, fstype, flags, data.as_deref())?;
    Ok(())
}

/// `mount(2)` with `MS_MOVE`: moves the mount at `source` to `target`.
pub fn mount_move(source: &Path, target: &Path) -> io::Result<()> {
    rustix::mount::mount_move(source, target)?;
    Ok(())
}

/// `mount(2)` with `MS_BIND`: makes the file or directory `source` also
/// visible at `target` (which must exist and be of the same kind).
pub fn bind_mount(source: &Path, target: &Path) -> io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    Ok(())
}

/// `mount(2)` with `MS_REMOUNT`: changes the flags of the mount at `target`.
pub fn remount(target: &Path, flags: MountFlags) -> io::Result<()> {
    rustix::mount::mount_remount(target, flags, "")?;
    Ok(())
}

/// `mount(2)` with propagation flags (`MS_SHARED`, `MS_REC`, ...): changes
/// how mounts below `target` propagate.
pub fn set_propagation(target: &Path, flags: MountPropagationFlags) -> io::Result<()> {
    rustix::mount::mount_change(target, flags)?;
    Ok(())
}

/// `umount2(2)` with `flags` (`DETACH`, ...).
pub fn unmount(target: &Path, flags: UnmountFlags) -> io::Result<()> {
    rustix::mount::unmount(target, flags)?;
    Ok(())
}

/// `mknod(2)`: creates a device node, FIFO or socket file at `path`; `mode`
/// holds the file type and the permission bits, as in `st_mode`.
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    use rustix::fs::{FileType, Mode, CWD};
    rustix::fs::mknodat(
        CWD,
        path,
        FileType::from_raw_mode(mode),
        Mode::from_raw_mode(mode),
        rdev,
    )?;
    Ok(())
}

/// The file system type magic of the file system holding `path` (`statfs(2)`'s
/// `f_type`, e.g. `TMPFS_MAGIC`).
pub fn statfs_type(path: &Path) -> io::Result<i64> {
    let stat = rustix::fs::statfs(path)?;
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_type as i64)
}

fn nul_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte")
}

/// Opens `path` under the directory `root` as if `root` were `/`: no `..`,
/// absolute symlink or magic link (`/proc/*/fd`) leads out of it
/// (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`).
pub fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
    rustix::fs::openat2(root, path, flags, Mode::empty(), IN_ROOT)
}

/// Whether `fd` is on a kernel pseudo file system whose directories a
/// copy does not descend into (a running container's `/proc`, `/sys`,
/// cgroups, `/dev/pts`, mqueue).
pub fn is_pseudo_fs(fd: BorrowedFd<'_>) -> bool {
    const TYPES: [i64; 6] = [
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x6367_7270, // cgroup2
        0x0027_e0eb, // cgroup
        0x1cd1,      // devpts
        0x1980_0202, // mqueue
    ];
    rustix::fs::fstatfs(fd).is_ok_and(|st| TYPES.contains(&st.f_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_rejects_nul_in_argument() {
        let empty = MountFlags::empty();
        let err = mount("a\0b", Path::new("/nonexistent"), "tmpfs", empty, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = mount("a", Path::new("/none"), "tmpfs", empty, Some("x\0")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn statfs_names_the_file_system() {
        // /proc is always procfs (PROC_SUPER_MAGIC).
        assert_eq!(statfs_type(Path::new("/proc")).unwrap(), 0x9fa0);
    }

    #[test]
    fn mknod_makes_a_fifo() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        mknod(&path, libc::S_IFIFO | 0o600, 0).unwrap();
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
    }
}
