//! Writing a file so that readers see the old or the new contents, never half
//! of them, and a crash (a power cut included) leaves no half-written file
//! under the final name: write a temporary file, fsync it, rename it over
//! the final name, fsync the directory so that the rename itself is on disk.
//! State that a power cut makes meaningless anyway (what describes live
//! processes) skips the fsyncs: [`replace_atomic`].

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` with permissions `mode`: a temporary file in the
/// same directory, written and fsynced, then renamed over `path`, and the
/// directory fsynced (without that, a power cut can undo the rename). On
/// error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = dir_and_name(path);
    write_atomic_in(dir, &[(name.as_str(), bytes)], mode)
}

/// The directory of `path` (`.` for a bare name) and its file name.
fn dir_and_name(path: &Path) -> (&Path, String) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

/// The temporary file that becomes `dir/name`.
fn temporary(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// [`write_atomic`] for several files of one directory, each `(name,
/// bytes)`, with one fsync of the directory for all of their renames: each
/// file is whole under its final name, and all are on disk when this
/// returns. A failure before the renames leaves every old file; one
/// during them (a file renamed, the next not) leaves some new and some
/// old, each whole.
pub fn write_atomic_in(dir: &Path, files: &[(&str, &[u8])], mode: u32) -> io::Result<()> {
    let result = (|| -> io::Result<()> {
        for (name, bytes) in files {
            write_file(&temporary(dir, name), bytes, mode, true)?;
        }
        for (name, _) in files {
            fs::rename(temporary(dir, name), dir.join(name))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (name, _) in files {
            let _ = fs::remove_file(temporary(dir, name));
        }
    }
    result?;
    sync_dir(dir)
}

/// Writes `bytes` to `path` with permissions `mode` through a temporary
/// file renamed over it, as [`write_atomic`] does but with no fsync:
/// readers, and a process that crashes, see the old or the new contents,
/// whole, but a power cut may leave either. For state that describes
/// running processes, which a power cut ends anyway (runc writes its
/// `state.json` so too): the fsyncs cost a disk round trip or two per
/// write.
pub fn replace_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = dir_and_name(path);
    let temporary = temporary(dir, &name);
    let written =
        write_file(&temporary, bytes, mode, false).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Creates or truncates `path` with permissions `mode` and writes `bytes`,
/// fsynced when `sync`.
fn write_file(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // The umask may have narrowed `mode`.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

/// Fsyncs directory `dir`: the entries created, renamed or removed in it
/// are on disk when this returns. Call it on the parent after making a
/// directory that a record written later names.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mkhost-shared-fs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A way of replacing a file.
    type Replace = fn(&Path, &[u8], u32) -> io::Result<()>;

    /// Both ways: synced and not.
    const REPLACES: [(&str, Replace); 2] = [("synced", write_atomic), ("unsynced", replace_atomic)];

    #[test]
    fn replaces_with_mode_and_leaves_no_temporary() {
        for (name, replace) in REPLACES {
            let dir = scratch(name);
            let path = dir.join("state.json");
            replace(&path, b"one", 0o644).unwrap();
            replace(&path, b"two", 0o600).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"two", "{name}");
            assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
            assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "{name}");
            // A directory in the way: the rename fails, the old entry
            // stays and no temporary is left.
            let blocked = dir.join("blocked");
            fs::create_dir_all(blocked.join("inside")).unwrap();
            assert!(replace(&blocked, b"x", 0o600).is_err(), "{name}");
            assert!(blocked.join("inside").is_dir());
            assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "{name}");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn directories_can_be_synced() {
        let dir = scratch("sync");
        write_atomic(&dir.join("f"), b"x", 0o600).unwrap();
        sync_dir(&dir).unwrap();
        let relative = std::env::current_dir().unwrap();
        sync_dir(&relative).unwrap();
        assert!(sync_dir(&dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn several_files_of_a_directory_are_written_together() {
        let dir = scratch("several");
        write_atomic(&dir.join("a"), b"old", 0o644).unwrap();
        write_atomic_in(&dir, &[("a", b"one"), ("b", b"two")], 0o600).unwrap();
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"one");
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"two");
        assert_eq!(fs::metadata(dir.join("b")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        // A directory in the way of one file's rename: the files before it
        // are new and whole, the one in the way untouched, no temporary left.
        let blocked = dir.join("c");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        let failed = write_atomic_in(&dir, &[("a", b"three"), ("c", b"four")], 0o600);
        assert!(failed.is_err());
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"three");
        assert!(blocked.join("x").exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = scratch("fail");
        let path = dir.join("f");
        write_atomic(&path, b"old", 0o644).unwrap();
        // A directory in the way of the rename makes it fail.
        let blocked = dir.join("d");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new", 0o644).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
