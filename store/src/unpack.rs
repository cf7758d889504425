//! Unpacks one layer tar into a directory in overlayfs lowerdir format,
//! treating the tar as hostile.
//!
//! Every entry is created relative to a directory file descriptor that was
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, one path
//! component at a time, so no symlink — whether it came from this tar or
//! not — is ever followed while writing. Then:
//!
//! - paths that are absolute or contain `..` are refused;
//! - entries whose parent path goes through a symlink are refused (docker
//!   would write through an in-root symlink; we do not follow symlinks at all);
//! - hard links whose target is absolute, contains `..` or goes through a
//!   symlink are refused; the target must be an earlier entry of the layer;
//! - symlinks are created as they are (an absolute target is fine: it is
//!   resolved inside the container at run time, never here);
//! - character and block devices and fifos are skipped and reported, except a
//!   character device 0:0, which is overlayfs's own whiteout;
//! - `.wh.NAME` becomes a whiteout (character device 0:0) named NAME, and
//!   `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory; other
//!   `.wh..wh.*` entries (aufs bookkeeping) are skipped;
//! - modes including setuid/setgid/sticky, owners, modification times and the
//!   `user.*` and `security.capability` xattrs are preserved; other xattrs
//!   (`trusted.*`, `security.selinux`, ...) are dropped so a layer cannot
//!   forge overlayfs metadata.
//!
//! Directory metadata is applied after the last entry, because creating
//! entries inside a directory changes its modification time.
//!
//! [`extract_archive`] uses the same walker for a plain archive copied into
//! an existing directory (`docker cp` into a container): no whiteouts (a
//! `.wh.` name is an ordinary file, a 0:0 device is skipped), and a
//! directory already there is never replaced by a non-directory (that would
//! need a recursive removal along paths a running container can change).
//! [`check_archive`] is its dry run: the refusals that need no destination,
//! so a hostile archive is refused before anything is written.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, FileTimes, Permissions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, Nsecs, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
    XattrFlags,
};
use rustix::io::Errno;

use super::error::StoreError;
use super::tarstream::BlockPadded;
use super::SkippedEntry;

/// How a layer blob is compressed, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Compression::None => super::spec::OCI_LAYER_TAR,
            Compression::Gzip => super::spec::OCI_LAYER_GZIP,
            Compression::Zstd => super::spec::OCI_LAYER_ZSTD,
        }
    }
}

/// Wraps `r` in the decompressor its magic bytes call for (gzip `1f 8b`,
/// zstd `28 b5 2f fd`, anything else is read as is).
pub(crate) fn decompressed<'a, R: BufRead + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((
            Compression::Gzip,
            Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        ))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok((
            Compression::Zstd,
            Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        ))
    } else {
        Ok((Compression::None, Box::new(r)))
    }
}

/// What unpacking a layer produced.
#[derive(Debug, Default)]
pub(crate) struct LayerStats {
    /// Sum of the sizes of the regular files written.
    pub unpacked_size: u64,
    /// Entries left out.
    pub skipped: Vec<SkippedEntry>,
    /// Extended attributes dropped (not allowed, or unsupported by the
    /// store's file system).
    pub xattrs_dropped: u64,
    /// Whether the tar ended with its end-of-archive marker (false: the
    /// stream just ended after a complete entry).
    pub end_marker: bool,
}

/// How [`extract_archive`] treats an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Refuse to replace a directory with a non-directory and a
    /// non-directory with a directory (dockerd's `noOverwriteDirNonDir`).
    /// The first is refused either way.
    pub no_overwrite_dir_non_dir: bool,
    /// Every entry's owner, instead of the one the archive records.
    pub owner: Option<(u32, u32)>,
}

/// What [`extract_archive`] wrote.
#[derive(Debug, Default)]
pub struct ExtractReport {
    /// Sum of the sizes of the regular files written.
    pub bytes: u64,
    /// Entries left out (device nodes, fifos), as the archive names them.
    pub skipped: Vec<String>,
}

/// Extracts the tar stream `reader` below the directory `dest` (an open
/// directory: nothing is resolved by path), under the same rules as a
/// layer but without whiteouts; see the module overview. `what` names the
/// archive in errors. An entry refused midway leaves the entries before it
/// in place: call [`check_archive`] on the same bytes first. A gzip or
/// zstd stream is decompressed.
pub fn extract_archive<R: Read>(
    reader: R,
    dest: OwnedFd,
    options: ExtractOptions,
    what: &str,
) -> Result<ExtractReport, StoreError> {
    let mut u = Unpacker {
        root: Rc::new(dest),
        root_path: None,
        layer: what,
        cache: None,
        dirs: Vec::new(),
        stats: LayerStats::default(),
        copy: Some(options),
    };
    let (_, reader) = decompressed(io::BufReader::new(reader)).map_err(|e| u.corrupt(&e))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| u.corrupt(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| u.corrupt(&e))?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs()?;
    Ok(ExtractReport {
        bytes: u.stats.unpacked_size,
        skipped: u.stats.skipped.into_iter().map(|s| s.entry).collect(),
    })
}

/// Reads the whole archive `reader` and refuses it as [`extract_archive`]
/// would for what the archive alone shows: an absolute path or `..`, an
/// entry below one of its own symlinks, a hard link whose target is
/// absolute, has `..`, goes through one of its symlinks or is not an
/// earlier entry, a broken tar. Writes nothing.
pub fn check_archive<R: Read>(reader: R, what: &str) -> Result<(), StoreError> {
    let unsafe_entry = |entry: &str, reason: String| StoreError::UnsafeEntry {
        layer: what.to_owned(),
        entry: entry.to_owned(),
        reason,
    };
    let corrupt = |e: io::Error| StoreError::CorruptLayer {
        layer: what.to_owned(),
        detail: e.to_string(),
    };
    let mut symlinks: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    // The first proper prefix of `comps` that is one of the archive's
    // symlinks.
    let through = |symlinks: &std::collections::HashSet<Vec<u8>>, comps: &[&[u8]]| {
        (1..comps.len())
            .map(|n| comps[..n].join(&b'/'))
            .find(|prefix| symlinks.contains(prefix))
    };
    let (_, reader) = decompressed(io::BufReader::new(reader)).map_err(corrupt)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        if kind.is_dir() && names_root(&raw) {
            continue;
        }
        let comps = components(&raw).map_err(|r| unsafe_entry(&shown, r.to_string()))?;
        if comps.is_empty() {
            return Err(unsafe_entry(&shown, "would replace the destination".into()));
        }
        if let Some(link) = through(&symlinks, &comps) {
            return Err(unsafe_entry(
                &shown,
                format!(
                    "goes through the symlink {:?}",
                    String::from_utf8_lossy(&link)
                ),
            ));
        }
        let rel = comps.join(&b'/');
        if kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let shown_target = String::from_utf8_lossy(&target).into_owned();
            let tcomps = components(&target).map_err(|r| {
                unsafe_entry(
                    &shown,
                    format!("is a hard link to {shown_target:?}, which {r}"),
                )
            })?;
            let trel = tcomps.join(&b'/');
            if through(&symlinks, &tcomps).is_some() || !seen.contains(&trel) || trel == rel {
                return Err(unsafe_entry(
                    &shown,
                    format!("is a hard link to {shown_target:?}, which is not an earlier file of the archive"),
                ));
            }
        }
        if kind.is_symlink() {
            symlinks.insert(rel.clone());
        } else {
            symlinks.remove(&rel);
        }
        seen.insert(rel);
    }
    Ok(())
}

/// Unpacks the tar stream `reader` into the empty directory `dest`.
///
/// `layer` names the layer in errors. Returns the stats and the reader,
/// positioned after the tar's end-of-archive marker, so the caller can read
/// the rest of the stream (to finish a digest). A stream that ends right
/// after an entry's data, without the padding or the end-of-archive marker
/// (umoci 0.4.7's `insert` writes such layers), is read as Go's
/// `archive/tar` reads it: to its end; an entry whose data is cut short is
/// still an error (`tarstream.rs`).
pub(crate) fn unpack_layer<R: Read>(
    reader: R,
    dest: &Path,
    layer: &str,
) -> Result<(LayerStats, R), StoreError> {
    let root = File::open(dest).map_err(|source| StoreError::Write {
        path: dest.to_owned(),
        source,
    })?;
    let mut u = Unpacker {
        root: Rc::new(OwnedFd::from(root)),
        root_path: Some(dest),
        layer,
        cache: None,
        dirs: Vec::new(),
        stats: LayerStats::default(),
        copy: None,
    };
    let (reader, end) = BlockPadded::new(reader);
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| u.corrupt(&e))?;
    // The previous entry and where its data ends: complete only once the
    // tar reader has moved past it without running out of real stream.
    let mut last = (String::new(), 0u64);
    let truncated = |u: &Unpacker<'_>, (shown, stop): &(String, u64)| {
        end.check(shown, *stop)
            .map_err(|detail| StoreError::CorruptLayer {
                layer: u.layer.to_owned(),
                detail,
            })
    };
    for entry in entries {
        let mut entry = entry.map_err(|e| u.corrupt(&e))?;
        truncated(&u, &last)?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        last = (
            shown,
            entry.raw_file_position().saturating_add(entry.size()),
        );
        u.entry(&mut entry)?;
        truncated(&u, &last)?;
    }
    truncated(&u, &last)?;
    u.finish_dirs()?;
    u.stats.end_marker = end.marker_seen();
    Ok((u.stats, archive.into_inner().into_inner()))
}

/// Metadata of an entry, as the tar header and PAX records give it.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: Rc<OwnedFd>,
    /// The root's path, for removing a directory a later entry replaces;
    /// `None` for an extraction, which never does that.
    root_path: Option<&'a Path>,
    layer: &'a str,
    /// The directory of the previous entry: tars list a directory's entries
    /// together, so this saves most of the walks.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories whose metadata is applied at the end (path, metadata).
    dirs: Vec<(Vec<u8>, Meta)>,
    stats: LayerStats,
    /// Set for [`extract_archive`]: no whiteouts, no directory replaced.
    copy: Option<ExtractOptions>,
}

/// Splits an entry path into components, dropping empty and `.` ones.
/// Absolute paths and `..` are refused with the reason.
pub(crate) fn components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("is an absolute path");
    }
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("has a `..` component"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Whether an entry path names the layer root itself: `/`, `./`, `.`, `//`,
/// `./.`, ... (only empty and `.` components). umoci writes the root as `/`.
pub(crate) fn names_root(raw: &[u8]) -> bool {
    raw.split(|&b| b == b'/').all(|c| c.is_empty() || c == b".")
}

fn cstring(bytes: &[u8]) -> CString {
    // `components` refused NUL bytes, so this cannot fail for path parts; a
    // symlink target with a NUL is cut there by the tar format itself.
    CString::new(bytes).unwrap_or_default()
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Flags for walking and opening inside the layer: never leave it, never
/// follow a symlink, never cross a mount.
const RESOLVE_STRICT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Flags for opening a directory inside the layer: it must be a directory,
/// not a symlink to one. Every open here says `O_CLOEXEC` itself.
const OPEN_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Unpacker<'_> {
    fn corrupt(&self, e: &io::Error) -> StoreError {
        StoreError::CorruptLayer {
            layer: self.layer.to_owned(),
            detail: e.to_string(),
        }
    }

    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> StoreError {
        StoreError::UnsafeEntry {
            layer: self.layer.to_owned(),
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn io_err(&self, entry: &str, source: impl Into<io::Error>) -> StoreError {
        StoreError::Unpack {
            layer: self.layer.to_owned(),
            entry: entry.to_owned(),
            source: source.into(),
        }
    }

    fn skip(&mut self, entry: &str, reason: &'static str) {
        self.stats.skipped.push(SkippedEntry {
            layer: self.layer.to_owned(),
            entry: entry.to_owned(),
            reason: reason.to_string(),
        });
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), StoreError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        // A directory entry naming the layer root (`/` as umoci writes it,
        // `./`, `.`) is the root itself; any other absolute path, and a
        // non-directory naming the root, is refused as before.
        let comps = if kind.is_dir() && names_root(&raw) {
            Vec::new()
        } else {
            components(&raw).map_err(|r| self.unsafe_entry(&shown, r))?
        };
        let meta = self.meta(entry, &shown)?;

        let Some((&name, parent)) = comps.split_last() else {
            // The layer root itself ("./", "/"): its metadata is applied to
            // the layer directory at the end (an extraction leaves its
            // destination as it is).
            if kind.is_dir() && self.copy.is_some() {
                return Ok(());
            }
            if kind.is_dir() {
                self.dirs.push((Vec::new(), meta));
                return Ok(());
            }
            return Err(self.unsafe_entry(&shown, "would replace the layer root"));
        };
        let rel = comps.join(&b'/');

        if let Some(hidden) = name
            .strip_prefix(WHITEOUT_PREFIX)
            .filter(|_| self.copy.is_none())
        {
            return self.whiteout(parent, hidden, name, &shown);
        }

        let dir = self.open_dir(parent, true, &shown)?;
        let cname = cstring(name);
        if kind.is_dir() {
            if !self.clear(&dir, &cname, &rel, true, &shown)? {
                rustix::fs::mkdirat(dir.as_fd(), &cname, Mode::from_raw_mode(0o700))
                    .map_err(|e| self.io_err(&shown, e))?;
            }
            self.dirs.push((rel, meta));
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.clear(&dir, &cname, &rel, false, &shown)?;
            self.regular(entry, &dir, &cname, &meta, &shown)?;
        } else if kind.is_symlink() {
            let target = match entry.link_name_bytes() {
                Some(t) if !t.is_empty() => cstring(&t),
                _ => return Err(self.unsafe_entry(&shown, "is a symlink without a target")),
            };
            self.clear(&dir, &cname, &rel, false, &shown)?;
            rustix::fs::symlinkat(&target, dir.as_fd(), &cname)
                .map_err(|e| self.io_err(&shown, e))?;
            set_symlink_meta(&dir, &cname, &meta).map_err(|e| self.io_err(&shown, e))?;
        } else if kind.is_hard_link() {
            self.hard_link(entry, &dir, &cname, &rel, &shown)?;
        } else if kind.is_character_special()
            && is_whiteout_device(entry.header())
            && self.copy.is_none()
        {
            self.clear(&dir, &cname, &rel, false, &shown)?;
            make_whiteout(&dir, &cname).map_err(|e| self.io_err(&shown, e))?;
        } else if kind.is_character_special() || kind.is_block_special() {
            self.skip(&shown, "device node");
        } else if kind.is_fifo() {
            self.skip(&shown, "fifo");
        } else {
            self.skip(&shown, "unsupported tar entry type");
        }
        Ok(())
    }

    /// `.wh.NAME` and `.wh..wh..opq` in directory `parent`.
    fn whiteout(
        &mut self,
        parent: &[&[u8]],
        hidden: &[u8],
        name: &[u8],
        shown: &str,
    ) -> Result<(), StoreError> {
        let dir = self.open_dir(parent, true, shown)?;
        if name == OPAQUE_MARKER {
            return rustix::fs::fsetxattr(
                dir.as_fd(),
                c"trusted.overlay.opaque",
                b"y",
                XattrFlags::empty(),
            )
            .map_err(|e| StoreError::OverlayXattr {
                layer: self.layer.to_owned(),
                entry: shown.to_owned(),
                source: e.into(),
            });
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            self.skip(shown, "aufs metadata");
            return Ok(());
        }
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(self.unsafe_entry(shown, "is a whiteout of no file (`.`, `..` or nothing)"));
        }
        let mut rel = parent.join(&b'/');
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(hidden);
        let cname = cstring(hidden);
        self.clear(&dir, &cname, &rel, false, shown)?;
        make_whiteout(&dir, &cname).map_err(|e| self.io_err(shown, e))
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &CStr,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), StoreError> {
        let fd = rustix::fs::openat2(
            dir.as_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            RESOLVE_STRICT,
        )
        .map_err(|e| self.io_err(shown, e))?;
        let mut file = File::from(fd);
        let want = entry.size();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(&e)),
            };
            file.write_all(&buf[..n])
                .map_err(|e| self.io_err(shown, e))?;
            got += n as u64;
        }
        if got != want {
            return Err(StoreError::CorruptLayer {
                layer: self.layer.to_owned(),
                detail: format!("entry {shown:?} is truncated ({got} of {want} bytes)"),
            });
        }
        self.apply(&file, meta).map_err(|e| self.io_err(shown, e))?;
        self.stats.unpacked_size += got;
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &CStr,
        rel: &[u8],
        shown: &str,
    ) -> Result<(), StoreError> {
        let target = entry.link_name_bytes().unwrap_or_default().into_owned();
        let shown_target = String::from_utf8_lossy(&target).into_owned();
        let tcomps = components(&target).map_err(|r| {
            self.unsafe_entry(
                shown,
                format!("is a hard link to {shown_target:?}, which {r}"),
            )
        })?;
        let Some((&tname, tparent)) = tcomps.split_last() else {
            return Err(self.unsafe_entry(shown, "is a hard link to the layer root"));
        };
        if tcomps.join(&b'/') == rel {
            return Err(self.unsafe_entry(shown, "is a hard link to itself"));
        }
        let tdir = self.open_dir(tparent, false, shown).map_err(|e| match e {
            StoreError::UnsafeEntry {
                layer,
                entry,
                reason,
            } => StoreError::UnsafeEntry {
                layer,
                entry,
                reason: format!("is a hard link to {shown_target:?}, which {reason}"),
            },
            other => other,
        })?;
        let tcname = cstring(tname);
        match lstat_type(&tdir, &tcname).map_err(|e| self.io_err(shown, e))? {
            None => {
                return Err(self.io_err(
                    shown,
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("hard link target {shown_target:?} is not in this layer"),
                    ),
                ))
            }
            Some(FileType::Directory) => {
                return Err(self.unsafe_entry(shown, "is a hard link to a directory"))
            }
            Some(_) => {}
        }
        // The target may have been the cached directory's child we are about
        // to replace; clear() handles that.
        self.clear(dir, name, rel, false, shown)?;
        // No AT_SYMLINK_FOLLOW: a symlink is linked, not its target.
        rustix::fs::linkat(tdir.as_fd(), &tcname, dir.as_fd(), name, AtFlags::empty())
            .map_err(|e| self.io_err(shown, e))
    }

    /// Opens the directory `comps` below the root without following any
    /// symlink, creating missing directories (mode 0755, root) if `create`.
    fn open_dir(
        &mut self,
        comps: &[&[u8]],
        create: bool,
        shown: &str,
    ) -> Result<Rc<OwnedFd>, StoreError> {
        let key = comps.join(&b'/');
        if let Some((k, fd)) = &self.cache {
            if *k == key {
                return Ok(Rc::clone(fd));
            }
        }
        let mut cur = Rc::clone(&self.root);
        for (i, c) in comps.iter().enumerate() {
            let name = cstring(c);
            let open = |at: &OwnedFd| {
                rustix::fs::openat2(at.as_fd(), &name, OPEN_DIR, Mode::empty(), RESOLVE_STRICT)
            };
            let prefix = || String::from_utf8_lossy(&comps[..=i].join(&b'/')).into_owned();
            let next = match open(&cur) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    rustix::fs::mkdirat(cur.as_fd(), &name, Mode::from_raw_mode(0o755))
                        .and_then(|()| open(&cur))
                        .map_err(|e| self.io_err(shown, e))?
                }
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    let kind = lstat_type(&cur, &name).ok().flatten();
                    if kind == Some(FileType::Symlink) {
                        return Err(self.unsafe_entry(
                            shown,
                            format!("goes through the symlink {:?}", prefix()),
                        ));
                    }
                    return Err(self.io_err(
                        shown,
                        io::Error::new(e.kind(), format!("{:?} is not a directory", prefix())),
                    ));
                }
                Err(e) => return Err(self.io_err(shown, e)),
            };
            cur = Rc::new(next);
        }
        self.cache = Some((key, Rc::clone(&cur)));
        Ok(cur)
    }

    /// Makes room for a new entry `name` (path `rel`) in `dir`: removes a
    /// file, symlink or whiteout there, and a directory unless `keep_dir`.
    /// Returns true when a directory was kept.
    fn clear(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        rel: &[u8],
        keep_dir: bool,
        shown: &str,
    ) -> Result<bool, StoreError> {
        let no_overwrite = self.copy.is_some_and(|c| c.no_overwrite_dir_non_dir);
        match lstat_type(dir, name).map_err(|e| self.io_err(shown, e))? {
            None => Ok(false),
            Some(FileType::Directory) => {
                if keep_dir {
                    return Ok(true);
                }
                let Some(root_path) = self.root_path else {
                    return Err(self.unsafe_entry(
                        shown,
                        "is not a directory, and a directory of that name is already there (it is not replaced)",
                    ));
                };
                // Every component of `rel` up to here was opened without
                // following symlinks and the last one is a real directory, so
                // this path names exactly that directory; remove_dir_all does
                // not follow symlinks inside it.
                let path = root_path.join(Path::new(OsStr::from_bytes(rel)));
                std::fs::remove_dir_all(&path).map_err(|e| self.io_err(shown, e))?;
                self.cache = None;
                Ok(false)
            }
            Some(_) if keep_dir && no_overwrite => Err(self.unsafe_entry(
                shown,
                "is a directory, and a non-directory of that name is already there (noOverwriteDirNonDir)",
            )),
            Some(_) => {
                rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty())
                    .map_err(|e| self.io_err(shown, e))?;
                Ok(false)
            }
        }
    }

    fn meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Meta, StoreError> {
        let layer = self.layer;
        let bad = |what: &str| StoreError::CorruptLayer {
            layer: layer.to_owned(),
            detail: format!("entry {shown:?} has an invalid {what}"),
        };
        let corrupt = |e: io::Error| StoreError::CorruptLayer {
            layer: layer.to_owned(),
            detail: e.to_string(),
        };
        let h = entry.header();
        let old = h.as_old();
        let mode = lenient(&old.mode, h.mode().map(u64::from))
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| bad("mode"))?
            & 0o7777;
        let uid = lenient(&old.uid, h.uid()).and_then(|u| u32::try_from(u).ok());
        let gid = lenient(&old.gid, h.gid()).and_then(|g| u32::try_from(g).ok());
        let mtime = lenient(&old.mtime, h.mtime()).and_then(|m| i64::try_from(m).ok());
        let mut meta = Meta {
            mode,
            uid: uid.ok_or_else(|| bad("uid"))?,
            gid: gid.ok_or_else(|| bad("gid"))?,
            mtime: (mtime.ok_or_else(|| bad("mtime"))?, 0),
            xattrs: Vec::new(),
        };
        let mut dropped = 0;
        if let Some(exts) = entry.pax_extensions().map_err(corrupt)? {
            for ext in exts {
                let ext = ext.map_err(corrupt)?;
                let key = ext.key_bytes();
                if key == b"mtime" {
                    meta.mtime =
                        parse_pax_time(ext.value_bytes()).ok_or_else(|| bad("PAX mtime"))?;
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if xattr_allowed(name) && !name.contains(&0) {
                        meta.xattrs
                            .push((cstring(name), ext.value_bytes().to_vec()));
                    } else {
                        dropped += 1;
                    }
                }
            }
        }
        self.stats.xattrs_dropped += dropped;
        if let Some((uid, gid)) = self.copy.and_then(|c| c.owner) {
            (meta.uid, meta.gid) = (uid, gid);
        }
        Ok(meta)
    }

    /// Owner, mode, xattrs and times of an open regular file or directory,
    /// in that order: chown clears setuid bits and file capabilities.
    fn apply(&mut self, file: &File, meta: &Meta) -> io::Result<()> {
        std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))?;
        file.set_permissions(Permissions::from_mode(meta.mode))?;
        for (name, value) in &meta.xattrs {
            match rustix::fs::fsetxattr(file.as_fd(), name, value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOTSUP | Errno::PERM | Errno::INVAL | Errno::RANGE) => {
                    self.stats.xattrs_dropped += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let t = system_time(meta.mtime);
        file.set_times(FileTimes::new().set_accessed(t).set_modified(t))
    }

    /// Applies the recorded directory metadata, last writer wins.
    fn finish_dirs(&mut self) -> Result<(), StoreError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, meta) in &dirs {
            let shown = String::from_utf8_lossy(rel).into_owned();
            let fd = if let (true, Some(root_path)) = (rel.is_empty(), self.root_path) {
                rustix::fs::open(root_path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            } else if rel.is_empty() {
                continue;
            } else {
                rustix::fs::openat2(
                    self.root.as_fd(),
                    cstring(rel),
                    OPEN_DIR,
                    Mode::empty(),
                    RESOLVE_STRICT,
                )
            };
            let fd = match fd {
                Ok(fd) => fd,
                // Replaced by a later entry (file, symlink, whiteout).
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(self.io_err(&shown, e)),
            };
            self.apply(&File::from(fd), meta)
                .map_err(|e| self.io_err(&shown, e))?;
        }
        Ok(())
    }
}

/// A numeric header field: its parsed value, or 0 when the field is empty
/// (all NULs or spaces), as Go's archive/tar — which wrote most image
/// layers — reads it.
fn lenient(raw: &[u8], parsed: io::Result<u64>) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// `user.*` and file capabilities survive; everything else is dropped.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// A character device 0:0 is an overlayfs whiteout, not a device.
fn is_whiteout_device(h: &tar::Header) -> bool {
    matches!(
        (h.device_major(), h.device_minor()),
        (Ok(Some(0)), Ok(Some(0)))
    )
}

fn make_whiteout(dir: &OwnedFd, name: &CStr) -> rustix::io::Result<()> {
    rustix::fs::mknodat(
        dir.as_fd(),
        name,
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
}

/// The file type of `name` in `dir` without following a symlink (`fstatat`
/// with `AT_SYMLINK_NOFOLLOW`), or `None` when it does not exist.
fn lstat_type(dir: &OwnedFd, name: &CStr) -> rustix::io::Result<Option<FileType>> {
    match rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Owner and times of the symlink `name` in `dir` itself, never of its
/// target (`AT_SYMLINK_NOFOLLOW`).
fn set_symlink_meta(dir: &OwnedFd, name: &CStr, meta: &Meta) -> rustix::io::Result<()> {
    // -1 is chown's "leave unchanged"; `Uid`/`Gid` hold real ids only.
    let uid = (meta.uid != u32::MAX).then(|| Uid::from_raw(meta.uid));
    let gid = (meta.gid != u32::MAX).then(|| Gid::from_raw(meta.gid));
    rustix::fs::chownat(dir.as_fd(), name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
    let t = Timespec {
        tv_sec: meta.mtime.0,
        tv_nsec: Nsecs::from(meta.mtime.1),
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(dir.as_fd(), name, &times, AtFlags::SYMLINK_NOFOLLOW)
}

/// A PAX time, `SECONDS[.FRACTION]`, possibly negative.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().ok()?;
    if secs < 0 && nanos > 0 {
        // -1.5 is 1.5 s before the epoch: -2 s + 0.5 s.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

fn system_time((secs, nanos): (i64, u32)) -> SystemTime {
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The value of extended attribute `name` of `file`, or `None` when the
    /// file does not have it. Values longer than 4 KiB are an error.
    fn xattr(file: &File, name: &CStr) -> rustix::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 4096];
        match rustix::fs::fgetxattr(file, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(Errno::NODATA) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components(b"./a//b/").unwrap(), [&b"a"[..], b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert_eq!(components(b"/"), Err("is an absolute path"));
        assert!(names_root(b"/") && names_root(b"./") && names_root(b".") && names_root(b"./."));
        assert!(!names_root(b"/etc") && !names_root(b"..") && !names_root(b"/.."));
        assert_eq!(components(b"/etc/passwd"), Err("is an absolute path"));
        assert_eq!(components(b"a/../../b"), Err("has a `..` component"));
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"7"), Some((7, 0)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    /// A tar entry with a raw (unchecked) name, as hostile tools write them.
    fn raw_entry(
        b: &mut tar::Builder<Vec<u8>>,
        name: &[u8],
        kind: tar::EntryType,
        link: &[u8],
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(0o4755);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    /// (name, type, link target, data)
    type Spec<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

    fn unpack(entries: &[Spec<'_>]) -> (tempfile::TempDir, Result<LayerStats, StoreError>) {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            raw_entry(&mut b, name, *kind, link, data);
        }
        let tar = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack_layer(&tar[..], &dest, "sha256:test").map(|(s, _)| s);
        (tmp, r)
    }

    use tar::EntryType as T;

    fn archive(entries: &[Spec<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            raw_entry(&mut b, name, *kind, link, data);
        }
        b.into_inner().unwrap()
    }

    fn extract(
        dest: &Path,
        entries: &[Spec<'_>],
        options: ExtractOptions,
    ) -> Result<ExtractReport, StoreError> {
        let fd = OwnedFd::from(File::open(dest).unwrap());
        extract_archive(&archive(entries)[..], fd, options, "the archive")
    }

    #[test]
    fn extraction_has_no_whiteouts_and_keeps_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path();
        std::fs::create_dir(dest.join("kept")).unwrap();
        std::fs::write(dest.join("kept/inside"), b"x").unwrap();
        std::fs::write(dest.join("file"), b"old").unwrap();
        let report = extract(
            dest,
            &[
                (b"./", T::Directory, b"", b""),
                (b".wh.name", T::Regular, b"", b"plain"),
                (b"dev0", T::Char, b"", b""),
                (b"file", T::Regular, b"", b"new"),
                (b"d/", T::Directory, b"", b""),
            ],
            ExtractOptions {
                owner: Some((7, 8)),
                ..ExtractOptions::default()
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(dest.join(".wh.name")).unwrap(), b"plain");
        assert_eq!(report.skipped, ["dev0"]);
        assert!(!dest.join("dev0").exists());
        let file = std::fs::metadata(dest.join("file")).unwrap();
        assert_eq!((file.uid(), file.gid()), (7, 8));
        // The destination's own mode is left alone.
        assert_ne!(std::fs::metadata(dest).unwrap().mode() & 0o7777, 0o4755);
        // A directory is never replaced by a file.
        let e = extract(
            dest,
            &[(b"kept", T::Regular, b"", b"x")],
            ExtractOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, StoreError::UnsafeEntry { .. }), "{e}");
        assert!(dest.join("kept/inside").exists());
        // With noOverwriteDirNonDir, no file is replaced by a directory.
        let e = extract(
            dest,
            &[(b"file/", T::Directory, b"", b"")],
            ExtractOptions {
                no_overwrite_dir_non_dir: true,
                owner: None,
            },
        )
        .unwrap_err();
        assert!(matches!(e, StoreError::UnsafeEntry { .. }), "{e}");
        // An existing symlink out is not followed.
        std::os::unix::fs::symlink("/", dest.join("ln")).unwrap();
        let e = extract(
            dest,
            &[(b"ln/tmp/escaped", T::Regular, b"", b"x")],
            ExtractOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn the_dry_run_refuses_what_the_archive_shows() {
        let refused = |entries: &[Spec<'_>], word: &str| {
            let e = check_archive(&archive(entries)[..], "the archive").unwrap_err();
            assert!(e.to_string().contains(word), "{e}");
        };
        refused(
            &[
                (b"ok", T::Regular, b"", b""),
                (b"../x", T::Regular, b"", b""),
            ],
            "..",
        );
        refused(&[(b"/x", T::Regular, b"", b"")], "absolute");
        refused(
            &[
                (b"l", T::Symlink, b"/", b""),
                (b"l/etc/x", T::Regular, b"", b""),
            ],
            "symlink \"l\"",
        );
        refused(&[(b"h", T::Link, b"../../etc/passwd", b"")], "hard link");
        refused(&[(b"h", T::Link, b"etc/passwd", b"")], "earlier file");
        refused(
            &[
                (b"l", T::Symlink, b"/etc", b""),
                (b"h", T::Link, b"l/passwd", b""),
            ],
            "hard link",
        );
        check_archive(
            &archive(&[
                (b"./", T::Directory, b"", b""),
                (b"a", T::Regular, b"", b"x"),
                (b"b", T::Link, b"a", b""),
                (b"l", T::Symlink, b"/", b""),
                (b"l", T::Regular, b"", b"now a file"),
                (b"l/", T::Directory, b"", b""),
                (b"l/x", T::Regular, b"", b""),
            ])[..],
            "the archive",
        )
        .unwrap();
    }

    #[test]
    fn preserves_metadata_and_makes_whiteouts() {
        let (tmp, r) = unpack(&[
            (b"./", T::Directory, b"", b""),
            (b"bin/su", T::Regular, b"", b"#!"),
            (b"bin/sh", T::Symlink, b"/bin/busybox", b""),
            (b"bin/su2", T::Link, b"bin/su", b""),
            (b"etc/.wh.gone", T::Regular, b"", b""),
            (b"opq/.wh..wh..opq", T::Regular, b"", b""),
            (b"dev/null", T::Char, b"", b""),
            (b"dev/.wh..wh.plnk", T::Regular, b"", b""),
        ]);
        let stats = r.unwrap();
        let root = tmp.path().join("layer");
        let su = std::fs::metadata(root.join("bin/su")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4755);
        assert_eq!((su.uid(), su.gid(), su.mtime()), (1234, 5678, 1_000_000));
        assert_eq!(su.nlink(), 2);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        let gone = std::fs::symlink_metadata(root.join("etc/gone")).unwrap();
        assert_eq!(
            FileType::from_raw_mode(gone.mode()),
            FileType::CharacterDevice
        );
        assert_eq!(gone.rdev(), 0);
        let opq = File::open(root.join("opq")).unwrap();
        assert_eq!(
            xattr(&opq, c"trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        // Directory metadata applied at the end (the mtime survived the
        // entries written into it).
        let bin = std::fs::metadata(root.join("bin")).unwrap();
        assert_eq!(bin.mode() & 0o7777, 0o755);
        assert_eq!(std::fs::metadata(&root).unwrap().mtime(), 1_000_000);
        assert!(!root.join("dev/null").exists());
        let reasons: Vec<_> = stats
            .skipped
            .iter()
            .map(|s| (s.entry.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("dev/null", "device node"),
                ("dev/.wh..wh.plnk", "aufs metadata")
            ]
        );
        assert_eq!(stats.unpacked_size, 2);
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let (tmp, r) = unpack(&[
            (b"a/x", T::Regular, b"", b"1"),
            (b"a", T::Regular, b"", b"file now"),
            (b"b", T::Symlink, b"a", b""),
            (b"b", T::Regular, b"", b"2"),
        ]);
        r.unwrap();
        let root = tmp.path().join("layer");
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"file now");
        assert_eq!(std::fs::read(root.join("b")).unwrap(), b"2");
    }

    fn refused(entries: &[Spec<'_>], why: &str) {
        let (tmp, r) = unpack(entries);
        match r {
            Err(StoreError::UnsafeEntry { reason, .. }) => {
                assert!(reason.contains(why), "{reason}")
            }
            other => panic!("expected refusal ({why}), got {other:?}"),
        }
        // Nothing next to the layer directory.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["layer"]);
    }

    #[test]
    fn root_entry_metadata_applies_to_layer_root() {
        for (i, name) in [&b"/"[..], b"./", b".", b"//", b"./.", b"/./"]
            .into_iter()
            .enumerate()
        {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(T::Directory);
            h.set_mode(0o750);
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_mtime(2_000_000 + i as u64);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            raw_entry(&mut b, b"etc/hosts", T::Regular, b"", b"127.0.0.1");
            let tar = b.into_inner().unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("layer");
            std::fs::create_dir(&dest).unwrap();
            let shown = String::from_utf8_lossy(name);
            unpack_layer(&tar[..], &dest, "sha256:test")
                .unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            let m = std::fs::metadata(&dest).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o750, "{shown:?}");
            assert_eq!(m.mtime(), 2_000_000 + i as i64, "{shown:?}");
            assert_eq!((m.uid(), m.gid()), (1234, 5678), "{shown:?}");
            assert_eq!(std::fs::read(dest.join("etc/hosts")).unwrap(), b"127.0.0.1");
            // Nothing written next to the layer directory.
            let names: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["layer"]);
        }
    }

    #[test]
    fn root_entry_that_is_not_a_directory_is_refused() {
        refused(&[(b"/", T::Regular, b"", b"x")], "is an absolute path");
        refused(&[(b"/", T::Symlink, b"/etc", b"")], "is an absolute path");
        refused(&[(b"//", T::Regular, b"", b"x")], "is an absolute path");
        refused(
            &[(b"./", T::Regular, b"", b"x")],
            "would replace the layer root",
        );
        refused(
            &[(b".", T::Symlink, b"/etc", b"")],
            "would replace the layer root",
        );
        refused(
            &[(b"/", T::Link, b"etc/passwd", b"")],
            "is an absolute path",
        );
        // Absolute and escaping paths stay refused, directories included.
        refused(
            &[(b"/etc/passwd", T::Regular, b"", b"x")],
            "is an absolute path",
        );
        refused(&[(b"/etc", T::Directory, b"", b"")], "is an absolute path");
        refused(&[(b"/..", T::Directory, b"", b"")], "is an absolute path");
        refused(&[(b"..", T::Directory, b"", b"")], "`..`");
        refused(&[(b"./..", T::Directory, b"", b"")], "`..`");
        refused(&[(b"a/../../x", T::Directory, b"", b"")], "`..`");
        refused(&[(b"../x", T::Regular, b"", b"x")], "`..`");
    }

    #[test]
    fn refuses_escapes() {
        refused(&[(b"../evil", T::Regular, b"", b"x")], "`..`");
        refused(&[(b"/abs", T::Regular, b"", b"x")], "absolute");
        refused(
            &[
                (b"link", T::Symlink, b"/etc", b""),
                (b"link/passwd", T::Regular, b"", b"x"),
            ],
            "symlink \"link\"",
        );
        refused(
            &[
                (b"up", T::Symlink, b"..", b""),
                (b"up/evil", T::Regular, b"", b"x"),
            ],
            "symlink \"up\"",
        );
        refused(&[(b"h", T::Link, b"../../x", b"")], "`..`");
        refused(&[(b"h", T::Link, b"/etc/passwd", b"")], "absolute");
        refused(
            &[
                (b"link", T::Symlink, b"/etc", b""),
                (b"h", T::Link, b"link/passwd", b""),
            ],
            "symlink \"link\"",
        );
        refused(
            &[(b"a/.wh...", T::Regular, b"", b"")],
            "whiteout of no file",
        );
        refused(&[(b".wh..", T::Regular, b"", b"")], "whiteout of no file");
        refused(&[(b"a/.wh.", T::Regular, b"", b"")], "whiteout of no file");
        refused(
            &[
                (b"link", T::Symlink, b"/etc", b""),
                (b"link/.wh.passwd", T::Regular, b"", b""),
            ],
            "symlink \"link\"",
        );
    }
}
