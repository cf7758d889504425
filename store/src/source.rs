//! Where an import reads from: a directory (an OCI layout, an unpacked
//! `docker save`, a skopeo `dir:` copy) or an archive file (tar, optionally
//! gzip or zstd): an image archive, or a tar of a root file system (what
//! `docker export` writes) that becomes a one-layer image.
//!
//! Files come out of a source as [`StagedFile`]s: copies inside the store's
//! staging directory whose sha256 was computed while they were written, so
//! that a verified blob can be renamed into the store without a second copy.
//!
//! An archive is read once, front to back: its regular files are staged as
//! they come (the archive cannot be trusted to be seekable or to list its
//! files in any order), symlinks and hard links between them are recorded
//! and resolved by name, never on disk. A directory is read through
//! `openat2(RESOLVE_IN_ROOT)`, so its symlinks cannot point outside it.
//!
//! An archive must end with tar's end-of-archive marker: it has no digests
//! of its own, so that is the only way to tell a whole archive from one cut
//! at an entry boundary. One that holds none of the files an image format
//! begins with (`manifest.json`, `index.json`, `oci-layout`, `repositories`,
//! `blobs/`) is a root file system: its staged files are dropped and the
//! archive file itself is staged as the layer blob, read a second time.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::digest::{Digest, HashingReader, HashingWriter};
use super::error::StoreError;
use super::tarstream::BlockPadded;
use super::unpack::{decompressed, names_root};

/// The name a root file system tar's one layer goes by inside its source.
pub(crate) const ROOTFS_LAYER: &str = "root file system tar";

/// Files (or, for `blobs/`, directories) at the top of an archive that make
/// it an image archive rather than a root file system.
const IMAGE_MARKERS: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];

/// A private directory under the store's `tmp/` for one operation; removed
/// with everything left in it when dropped.
pub(crate) struct Staging {
    dir: PathBuf,
    counter: Cell<u64>,
}

impl Staging {
    /// Creates `tmp/<prefix>-<pid>` (the caller holds the store lock).
    pub(crate) fn create(tmp: &Path, prefix: &str) -> Result<Staging, StoreError> {
        let dir = tmp.join(format!("{prefix}-{}", std::process::id()));
        if dir.exists() {
            let _ = fs::remove_dir_all(&dir);
        }
        fs::create_dir(&dir).map_err(|source| StoreError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(Staging {
            dir,
            counter: Cell::new(0),
        })
    }

    /// A fresh path inside the staging directory.
    pub(crate) fn path(&self, what: &str) -> PathBuf {
        let n = self.counter.get();
        self.counter.set(n + 1);
        self.dir.join(format!("{what}-{n}"))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A file copied into the staging directory, with its digest and size.
#[derive(Debug, Clone)]
pub(crate) struct StagedFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

impl StagedFile {
    /// Reads the whole file if it is at most `limit` bytes.
    pub(crate) fn read_limited(
        &self,
        file: &str,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError> {
        if self.size > limit {
            return Err(StoreError::TooLarge {
                file: file.to_owned(),
                what,
                size: self.size,
                limit,
            });
        }
        fs::read(&self.path).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })
    }
}

/// Copies `r` into a new staging file, hashing on the way.
fn stage_stream(
    r: &mut dyn Read,
    dest: PathBuf,
) -> Result<(StagedFile, io::Result<u64>), StoreError> {
    let write_err = |source| StoreError::Write {
        path: dest.clone(),
        source,
    };
    let f = File::create(&dest).map_err(write_err)?;
    let mut w = HashingWriter::new(BufWriter::new(f));
    // Read errors are the source's fault; write errors are ours. Tell them
    // apart by copying by hand.
    let mut buf = vec![0u8; 128 * 1024];
    let read_result = loop {
        match r.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => w.write_all(&buf[..n]).map_err(write_err)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let (bw, digest, size) = w.finish();
    bw.into_inner().map_err(|e| write_err(e.into_error()))?;
    let staged = StagedFile {
        path: dest,
        digest,
        size,
    };
    Ok((staged, read_result.map(|()| size)))
}

/// Normalises a path inside a source: components joined by `/`, no `.` or
/// empty ones. `..` and absolute paths are refused with the reason.
pub(crate) fn normalize(path: &str) -> Result<String, &'static str> {
    let comps = super::unpack::components(path.as_bytes())?;
    let parts: Vec<&str> = comps
        .iter()
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Ok(parts.join("/"))
}

/// An archive entry that matters to the store.
pub(crate) enum Item {
    File(StagedFile),
    Symlink(String),
}

/// An import source.
pub(crate) enum Source {
    /// A directory, read through `openat2(RESOLVE_IN_ROOT)`. `own`: one of
    /// the store's `incoming/` directories, which only the store's process
    /// writes: its files are hard-linked into staging, not copied.
    Dir {
        path: PathBuf,
        fd: OwnedFd,
        own: bool,
    },
    /// An archive, already staged: files by normalised path.
    Archive { files: BTreeMap<String, Item> },
    /// A tar of a root file system (an archive without image layout files),
    /// staged whole as it was given (compressed or not): the layer blob.
    Rootfs { blob: StagedFile },
}

impl Source {
    /// Opens `path`: a directory as is, a file as an archive (read entirely
    /// into `staging`). `own` says that a directory is the store's own
    /// (under `incoming/`): see [`Source::Dir`].
    pub(crate) fn open(path: &Path, staging: &Staging, own: bool) -> Result<Source, StoreError> {
        let source_err = |source| StoreError::Source {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(source_err)?;
        if meta.is_dir() {
            let fd = File::open(path).map_err(source_err)?;
            return Ok(Source::Dir {
                path: path.to_owned(),
                fd: fd.into(),
                own,
            });
        }
        // Opened non-blocking so a fifo cannot hang the import, then checked:
        // only a regular file is an archive (a device like /dev/zero never ends).
        let file = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(io::Error::from)
        .map_err(source_err)?;
        let kind = file.metadata().map_err(source_err)?.file_type();
        if !kind.is_file() {
            return Err(source_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or directory (a fifo, device or socket); \
                 import an archive file or an image layout directory",
            )));
        }
        let flags = rustix::fs::fcntl_getfl(&file)
            .map_err(io::Error::from)
            .map_err(source_err)?;
        rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)
            .map_err(io::Error::from)
            .map_err(source_err)?;
        let mut rewind = file.try_clone().map_err(source_err)?;
        let corrupt = |e: io::Error| StoreError::CorruptArchive {
            path: path.to_owned(),
            detail: e.to_string(),
        };
        let truncated = |detail: String| StoreError::CorruptArchive {
            path: path.to_owned(),
            detail,
        };
        let (_, reader) = decompressed(BufReader::new(file)).map_err(corrupt)?;
        let (reader, end) = BlockPadded::new(reader);
        let mut archive = tar::Archive::new(reader);
        let mut files = BTreeMap::new();
        // The previous entry and where its data ends (see tarstream.rs).
        let mut last: Option<(String, u64)> = None;
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            if let Some((shown, stop)) = &last {
                end.check(shown, *stop).map_err(truncated)?;
            }
            let raw = entry.path_bytes().into_owned();
            last = Some((
                String::from_utf8_lossy(&raw).into_owned(),
                entry.raw_file_position().saturating_add(entry.size()),
            ));
            if names_root(&raw) {
                continue; // `./` or `/`: the root directory of a file system
            }
            let Ok(name) = String::from_utf8(raw) else {
                continue; // not part of any image format
            };
            let key = normalize(&name).map_err(|reason| StoreError::UnsafeArchiveEntry {
                path: path.to_owned(),
                entry: name.clone(),
                reason,
            })?;
            if key.is_empty() {
                continue;
            }
            let kind = entry.header().entry_type();
            if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
                let want = entry.size();
                let (staged, read) = stage_stream(&mut entry, staging.path("src"))?;
                let got = read.map_err(corrupt)?;
                if got != want {
                    return Err(StoreError::CorruptArchive {
                        path: path.to_owned(),
                        detail: format!("entry {name:?} ends after {got} of {want} bytes"),
                    });
                }
                files.insert(key, Item::File(staged));
            } else if kind.is_symlink() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                files.insert(key, Item::Symlink(target));
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                if let Ok(t) = normalize(&target) {
                    if let Some(Item::File(f)) = files.get(&t) {
                        let f = f.clone();
                        files.insert(key, Item::File(f));
                    }
                }
            }
        }
        if let Some((shown, stop)) = &last {
            end.check(shown, *stop).map_err(truncated)?;
        }
        if !end.marker_seen() {
            return Err(truncated(match last {
                Some((shown, _)) => {
                    format!("it ends after entry {shown:?} without tar's end-of-archive marker")
                }
                None => "it is empty".to_owned(),
            }));
        }
        // Whatever follows the end-of-archive marker is ignored, but a
        // compressed archive must at least decompress cleanly.
        io::copy(&mut archive.into_inner().into_inner(), &mut io::sink()).map_err(corrupt)?;
        let image = files
            .keys()
            .any(|k| IMAGE_MARKERS.contains(&k.as_str()) || k.starts_with("blobs/"));
        if image {
            return Ok(Source::Archive { files });
        }
        // A root file system: its files are not needed one by one. Free the
        // space they take, then stage the archive as it is: the layer blob.
        for item in files.values() {
            if let Item::File(f) = item {
                let _ = fs::remove_file(&f.path);
            }
        }
        rewind.rewind().map_err(source_err)?;
        let (blob, read) = stage_stream(&mut rewind, staging.path("rootfs"))?;
        read.map_err(source_err)?;
        Ok(Source::Rootfs { blob })
    }

    /// True when `file` exists in the source.
    pub(crate) fn exists(&self, file: &str) -> bool {
        match self {
            Source::Dir { .. } => self.open_in_dir(file).is_ok(),
            Source::Archive { .. } => self.archive_file(file).is_some(),
            Source::Rootfs { .. } => false,
        }
    }

    fn open_in_dir(&self, file: &str) -> io::Result<File> {
        let Source::Dir { fd, .. } = self else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let name = CString::new(file).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = rustix::fs::openat2(
            fd.as_fd(),
            &name,
            // O_NONBLOCK: a fifo planted in the layout must not hang us.
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(f)
    }

    /// Looks `file` up in a staged archive, following symlinks between its
    /// entries (relative to the link's directory, never out of the archive).
    fn archive_file(&self, file: &str) -> Option<&StagedFile> {
        let Source::Archive { files, .. } = self else {
            return None;
        };
        let mut key = normalize(file).ok()?;
        for _ in 0..16 {
            match files.get(&key)? {
                Item::File(f) => return Some(f),
                Item::Symlink(target) => {
                    if target.starts_with('/') {
                        return None;
                    }
                    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
                    key = resolve_relative(dir, target)?;
                }
            }
        }
        None
    }

    /// Stages `file` (a path inside the source) and returns it with its
    /// digest. A missing file is [`StoreError::Missing`].
    pub(crate) fn stage(&self, file: &str, staging: &Staging) -> Result<StagedFile, StoreError> {
        let missing = || StoreError::Missing {
            file: file.to_owned(),
        };
        match self {
            Source::Archive { .. } => self.archive_file(file).cloned().ok_or_else(missing),
            Source::Rootfs { blob } if file == ROOTFS_LAYER => Ok(blob.clone()),
            Source::Rootfs { .. } => Err(missing()),
            Source::Dir { path, own, .. } => {
                let key = normalize(file).map_err(|_| missing())?;
                let mut f = match self.open_in_dir(&key) {
                    Ok(f) => f,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                        ) =>
                    {
                        return Err(missing())
                    }
                    Err(source) => {
                        return Err(StoreError::Source {
                            path: path.join(&key),
                            source,
                        })
                    }
                };
                let dest = staging.path("src");
                if *own && link_fd(&f, &dest).is_ok() {
                    // The same inode, read once more to hash it: the store
                    // checks every blob itself, whoever wrote it.
                    let (digest, size) =
                        HashingReader::new(BufReader::with_capacity(128 * 1024, &mut f))
                            .finish()
                            .map_err(|source| StoreError::Source {
                                path: path.join(&key),
                                source,
                            })?;
                    return Ok(StagedFile {
                        path: dest,
                        digest,
                        size,
                    });
                }
                let (staged, read) = stage_stream(&mut f, dest)?;
                read.map_err(|source| StoreError::Source {
                    path: path.join(&key),
                    source,
                })?;
                Ok(staged)
            }
        }
    }
}

/// Hard-links the open file `f` to `dest` (through `/proc/self/fd`, so the
/// inode that was opened, whatever its name now points to). Fails across
/// file systems or without `/proc`; the caller copies instead.
fn link_fd(f: &File, dest: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", f.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        rustix::fs::CWD,
        dest,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// `dir` joined with the relative `target`, `..` applied; `None` if it
/// climbs above the archive root.
fn resolve_relative(dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_stay_inside() {
        assert_eq!(
            resolve_relative("abc", "../x.tar").as_deref(),
            Some("x.tar")
        );
        assert_eq!(resolve_relative("", "../x"), None);
        assert_eq!(normalize("./blobs//sha256/ab").unwrap(), "blobs/sha256/ab");
        assert!(normalize("../x").is_err());
    }
}
