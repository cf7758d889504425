//! Moving the initramfs into a real tmpfs before anything else runs.
//!
//! The kernel unpacks the initramfs into `rootfs`, the root of the initial mount
//! namespace. That mount can never be unmounted or `pivot_root`ed away, and
//! container runtimes need `pivot_root`. So, like busybox's `switch_root`,
//! `init` starts with:
//!
//! 1. mount a fresh tmpfs at `/.newroot`;
//! 2. move every file into it, one at a time (copy, then delete the original,
//!    so the RAM in use stays flat: only one file exists twice at any moment);
//! 3. `mount --move /.newroot /`, `chroot .`, `chdir /`;
//! 4. `exec /init` again (from the new root, so the old binary's pages are freed).
//!
//! If a file cannot be moved, everything moved so far is moved back and `init`
//! carries on in rootfs: a host without pivot_root is better than no host.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::os;

/// `statfs` magic of ramfs (the initial rootfs without `CONFIG_TMPFS`).
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
/// `statfs` magic of tmpfs (the initial rootfs, and our new root).
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Name of the temporary mount point below the old root.
pub const NEW_ROOT: &str = ".newroot";

/// Errors of the root switch.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// `/` is not a ramfs/tmpfs: there is nothing to move.
    #[error("/ is not the initramfs (file system magic {magic:#x}); not moving it")]
    NotInitramfs {
        /// The magic statfs reported.
        magic: i64,
    },
    /// A step on a path failed.
    #[error("cannot {step} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Moving the files failed; they were moved back.
    #[error("moving the initramfs failed, moved {moved_back} entries back: {source}")]
    RolledBack {
        /// Entries restored.
        moved_back: u64,
        /// The original failure.
        #[source]
        source: Box<RootError>,
    },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootError + 'a {
    move |source| RootError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// What a move did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MoveStats {
    /// Entries moved (files, directories, links, nodes).
    pub entries: u64,
    /// Bytes of regular files moved.
    pub bytes: u64,
}

/// Moves the contents of directory `from` into the existing directory `to`,
/// preserving type, mode, owner and times; `skip` names entries of `from`
/// (top level only) to leave alone. Sources are deleted as they are copied.
/// Entries on another file system than `from` (mount points) are not entered.
pub fn move_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<MoveStats, RootError> {
    let dev = fs::symlink_metadata(from)
        .map_err(io_err("inspect", from))?
        .dev();
    let mut stats = MoveStats::default();
    let mut links = HashMap::new();
    move_dir_contents(from, to, dev, skip, &mut stats, &mut links)?;
    Ok(stats)
}

fn move_dir_contents(
    from: &Path,
    to: &Path,
    dev: u64,
    skip: &[&str],
    stats: &mut MoveStats,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), RootError> {
    let mut names: Vec<_> = fs::read_dir(from)
        .map_err(io_err("read directory", from))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| !skip.iter().any(|s| n.as_os_str() == *s))
        .collect();
    names.sort();
    for name in names {
        let src = from.join(&name);
        let dst = to.join(&name);
        let meta = fs::symlink_metadata(&src).map_err(io_err("inspect", &src))?;
        if meta.dev() != dev {
            continue; // a mount point: not ours to move
        }
        move_entry(&src, &dst, &meta, dev, stats, links)?;
    }
    Ok(())
}

fn move_entry(
    src: &Path,
    dst: &Path,
    meta: &fs::Metadata,
    dev: u64,
    stats: &mut MoveStats,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), RootError> {
    let ft = meta.file_type();
    if ft.is_dir() {
        match fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(io_err("create directory", dst)(e)),
        }
        move_dir_contents(src, dst, dev, &[], stats, links)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", dst))?;
        let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
        set_times(dst, meta);
        fs::remove_dir(src).map_err(io_err("remove directory", src))?;
    } else {
        // Hard links: the first name is copied, the others linked to the copy
        // (the source's link count drops as names are moved, so look up first).
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            fs::hard_link(first, dst).map_err(io_err("link", dst))?;
            fs::remove_file(src).map_err(io_err("remove", src))?;
            stats.entries += 1;
            return Ok(());
        }
        if ft.is_file() && meta.nlink() > 1 {
            links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        if ft.is_file() {
            fs::copy(src, dst).map_err(io_err("copy", src))?;
            stats.bytes += meta.len();
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_err("read link", src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(io_err("create link", dst))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            os::mknod(dst, meta.mode(), meta.rdev()).map_err(io_err("mknod", dst))?;
        }
        if !ft.is_symlink() {
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err("chmod", dst))?;
            set_times(dst, meta);
        }
        let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
        fs::remove_file(src).map_err(io_err("remove", src))?;
    }
    stats.entries += 1;
    Ok(())
}

/// Copies the modification time (the cpio's, i.e. SOURCE_DATE_EPOCH).
fn set_times(path: &Path, meta: &fs::Metadata) {
    if let (Ok(file), Ok(mtime)) = (fs::File::open(path), meta.modified()) {
        let _ = file.set_times(fs::FileTimes::new().set_modified(mtime).set_accessed(mtime));
    }
}

/// Moves `/` (the initramfs in rootfs) into a fresh tmpfs and makes that the
/// root of this process. The caller should then exec `/init` again.
pub fn switch_to_tmpfs() -> Result<MoveStats, RootError> {
    let root = Path::new("/");
    let magic = os::statfs_type(root).map_err(io_err("statfs", root))?;
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        return Err(RootError::NotInitramfs { magic });
    }
    let new_root = root.join(NEW_ROOT);
    fs::create_dir_all(&new_root).map_err(io_err("create", &new_root))?;
    os::mount(
        "tmpfs",
        &new_root,
        "tmpfs",
        os::MountFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(io_err("mount tmpfs on", &new_root))?;
    let stats = match move_tree(root, &new_root, &[NEW_ROOT]) {
        Ok(stats) => stats,
        Err(e) => {
            let back = move_tree(&new_root, root, &[])
                .map(|s| s.entries)
                .unwrap_or(0);
            let _ = os::unmount(&new_root, os::UnmountFlags::DETACH);
            return Err(RootError::RolledBack {
                moved_back: back,
                source: Box::new(e),
            });
        }
    };
    std::env::set_current_dir(&new_root).map_err(io_err("chdir", &new_root))?;
    os::mount_move(Path::new("."), root).map_err(io_err("move mount to", root))?;
    std::os::unix::fs::chroot(".").map_err(io_err("chroot", &new_root))?;
    std::env::set_current_dir(root).map_err(io_err("chdir", root))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_files_dirs_links_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        fs::create_dir_all(from.join("a/b")).unwrap();
        fs::create_dir_all(from.join("skipme")).unwrap();
        fs::create_dir(&to).unwrap();
        fs::write(from.join("a/b/file"), b"hello").unwrap();
        fs::set_permissions(from.join("a/b/file"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::hard_link(from.join("a/b/file"), from.join("a/hard")).unwrap();
        std::os::unix::fs::symlink("b/file", from.join("a/link")).unwrap();
        fs::set_permissions(from.join("a"), fs::Permissions::from_mode(0o700)).unwrap();

        let stats = move_tree(&from, &to, &["skipme"]).unwrap();
        assert_eq!(stats.entries, 5);
        assert_eq!(stats.bytes, 5);
        assert_eq!(fs::read(to.join("a/b/file")).unwrap(), b"hello");
        assert_eq!(fs::read(to.join("a/link")).unwrap(), b"hello");
        let m = fs::metadata(to.join("a/b/file")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o751);
        assert_eq!(m.nlink(), 2, "hard link kept");
        assert_eq!(fs::metadata(to.join("a")).unwrap().mode() & 0o7777, 0o700);
        // Sources are gone, the skipped entry stays.
        assert!(!from.join("a").exists());
        assert!(from.join("skipme").is_dir());
        assert!(!to.join("skipme").exists());
    }
}
