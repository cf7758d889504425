//! The cpio "newc" (magic `070701`) format: an in-memory file tree ([`Archive`]) with a
//! deterministic writer, and an independent reader ([`read_newc`]) used to check it.
//!
//! newc is the only archive format the kernel's initramfs unpacker accepts. Each entry
//! is a 110-byte ASCII header (magic + 13 eight-digit hex fields), the NUL-terminated
//! name, padding to 4 bytes, the data, padding to 4 bytes. The archive ends with an
//! entry named `TRAILER!!!`. The writer fixes everything a normal `cpio` would take
//! from the build host (inode numbers, owners, times, order), so the same tree always
//! gives the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Size of a newc header in bytes.
const HEADER_LEN: usize = 110;
/// Magic of the newc format without checksums.
const MAGIC: &[u8; 6] = b"070701";
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";
/// Longest name the kernel accepts (PATH_MAX including the NUL).
const MAX_NAME: usize = 4095;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const PERM_MASK: u32 = 0o7777;

/// Errors from building, writing or reading a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("empty path in archive")]
    EmptyPath,
    #[error("path {path:?} contains a NUL byte")]
    NulInPath { path: String },
    #[error("path {path:?} contains a '..' component")]
    DotDot { path: String },
    #[error("path {path:?} is longer than {MAX_NAME} bytes")]
    PathTooLong { path: String },
    #[error("path {TRAILER:?} is reserved for the end-of-archive marker")]
    ReservedName,
    #[error("symlink {path:?} has an invalid target {target:?} (empty or contains NUL)")]
    BadSymlinkTarget { path: String, target: String },
    #[error("cannot add {kind} {path:?}: {existing:?} is already a {existing_kind}")]
    Conflict {
        path: String,
        kind: &'static str,
        existing: String,
        existing_kind: &'static str,
    },
    #[error("cannot read {path:?} for archive entry {entry:?}")]
    ReadSource {
        path: PathBuf,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("{path:?} changed size while being archived (expected {expected} bytes)")]
    SourceChanged { path: PathBuf, expected: u64 },
    #[error("{path:?} is {size} bytes; newc entries are limited to 4 GiB")]
    TooLarge { path: String, size: u64 },
    #[error("cannot write archive")]
    Write(#[source] io::Error),
    #[error("truncated archive: {what} at offset {offset} needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("bad magic {found:?} at offset {offset} (expected \"070701\")")]
    BadMagic { offset: usize, found: String },
    #[error("bad hex field {field} {value:?} in header at offset {offset}")]
    BadHex {
        offset: usize,
        field: &'static str,
        value: String,
    },
    #[error("bad name at offset {offset}: {reason}")]
    BadName { offset: usize, reason: &'static str },
    #[error("archive ends at offset {offset} without a TRAILER!!! entry")]
    MissingTrailer { offset: usize },
}

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// The contents themselves.
    Bytes(Vec<u8>),
    /// A file on the build host, read when the archive is written.
    Path(PathBuf),
}

/// One entry of the tree. Modes are permission bits only (e.g. `0o755`); the file
/// type comes from the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: FileData },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "directory",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
            Node::CharDev { .. } => "character device",
        }
    }
}

/// A file tree to be written as a newc archive. Keys are paths without a leading
/// `/`; every parent of an entry is itself an entry (created as `0o755` directories
/// when not added explicitly).
#[derive(Debug, Clone, Default)]
pub struct Archive {
    nodes: BTreeMap<String, Node>,
    /// Paths written before the rest, in this order (see [`Archive::put_first`]).
    first: Vec<String>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a directory, or change the mode of an existing one.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let key = normalize(path)?;
        self.make_parents(&key)?;
        match self.nodes.get_mut(&key) {
            Some(Node::Dir { mode: m }) => {
                *m = mode & PERM_MASK;
                Ok(())
            }
            Some(other) => Err(CpioError::Conflict {
                path: key.clone(),
                kind: "directory",
                existing: key,
                existing_kind: other.kind(),
            }),
            None => {
                self.nodes.insert(
                    key,
                    Node::Dir {
                        mode: mode & PERM_MASK,
                    },
                );
                Ok(())
            }
        }
    }

    /// Add a regular file; replaces an existing non-directory at the same path.
    pub fn add_file(&mut self, path: &str, mode: u32, data: FileData) -> Result<(), CpioError> {
        let mode = mode & PERM_MASK;
        self.add_leaf(path, Node::File { mode, data })
    }

    /// Add a symbolic link pointing at `target` (stored verbatim).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadSymlinkTarget {
                path: path.to_string(),
                target: target.to_string(),
            });
        }
        let target = target.to_string();
        self.add_leaf(path, Node::Symlink { target })
    }

    /// Add a character device node (e.g. `dev/console`, 5:1).
    pub fn add_char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let mode = mode & PERM_MASK;
        self.add_leaf(path, Node::CharDev { mode, major, minor })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `path` (with or without a leading `/`) is in the tree.
    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|key| self.nodes.contains_key(&key))
    }

    /// Writes `path` (after the directories above it) before every entry not
    /// put first, in the order of the calls. Files that share much of their
    /// content compress together when they sit next to each other: zstd only
    /// finds repeats within its window (8 MiB here), and sorted by path two
    /// such files may lie further apart than that. A path not in the tree is
    /// ignored.
    pub fn put_first(&mut self, path: &str) {
        if let Ok(key) = normalize(path) {
            self.first.push(key);
        }
    }

    /// Entries in archive order: the paths put first (each after its parent
    /// directories), then the rest sorted by path, so parents always come
    /// before children.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.order()
            .into_iter()
            .filter_map(|name| self.nodes.get_key_value(name))
            .map(|(k, v)| (k.as_str(), v))
    }

    fn order(&self) -> Vec<&str> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut placed = std::collections::HashSet::new();
        for path in self.first.iter().filter(|p| self.nodes.contains_key(*p)) {
            let parents = path.match_indices('/').map(|(i, _)| &path[..i]);
            for name in parents.chain([path.as_str()]) {
                if placed.insert(name) {
                    order.push(name);
                }
            }
        }
        order.extend(
            self.nodes
                .keys()
                .map(String::as_str)
                .filter(|name| !placed.contains(name)),
        );
        order
    }

    /// Deterministic newc archive; returns bytes written (incl. trailer padding).
    ///
    /// Inodes are numbered from 1 in archive order, owners are 0:0, every entry gets
    /// `mtime`. [`FileData::Path`] sources are read now.
    pub fn write_newc<W: Write>(&self, out: W, mtime: u32) -> Result<u64, CpioError> {
        let mut w = Counter {
            inner: BufWriter::with_capacity(256 * 1024, out),
            count: 0,
        };
        let mut ino: u32 = 0;
        for (name, node) in self.entries() {
            ino = ino.wrapping_add(1);
            let mut header = Header {
                ino,
                mode: 0,
                nlink: 1,
                mtime,
                filesize: 0,
                rdevmajor: 0,
                rdevminor: 0,
            };
            match node {
                Node::Dir { mode } => {
                    header.mode = S_IFDIR | mode;
                    header.nlink = 2;
                    write_entry(&mut w, &header, name, &[])?;
                }
                Node::Symlink { target } => {
                    header.mode = S_IFLNK | 0o777;
                    header.filesize = size_u32(name, target.len() as u64)?;
                    write_entry(&mut w, &header, name, target.as_bytes())?;
                }
                Node::CharDev { mode, major, minor } => {
                    header.mode = S_IFCHR | mode;
                    header.rdevmajor = *major;
                    header.rdevminor = *minor;
                    write_entry(&mut w, &header, name, &[])?;
                }
                Node::File { mode, data } => {
                    header.mode = S_IFREG | mode;
                    match data {
                        FileData::Bytes(bytes) => {
                            header.filesize = size_u32(name, bytes.len() as u64)?;
                            write_entry(&mut w, &header, name, bytes)?;
                        }
                        FileData::Path(path) => {
                            write_path_entry(&mut w, &mut header, name, path)?;
                        }
                    }
                }
            }
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdevmajor: 0,
            rdevminor: 0,
        };
        write_entry(&mut w, &trailer, TRAILER, &[])?;
        w.inner.flush().map_err(CpioError::Write)?;
        Ok(w.count)
    }

    /// Insert a non-directory node, creating parents; refuses to replace a directory.
    fn add_leaf(&mut self, path: &str, node: Node) -> Result<(), CpioError> {
        let key = normalize(path)?;
        self.make_parents(&key)?;
        if let Some(existing @ Node::Dir { .. }) = self.nodes.get(&key) {
            return Err(CpioError::Conflict {
                path: key.clone(),
                kind: node.kind(),
                existing: key,
                existing_kind: existing.kind(),
            });
        }
        self.nodes.insert(key, node);
        Ok(())
    }

    /// Create every missing ancestor of `key` as a 0o755 directory.
    fn make_parents(&mut self, key: &str) -> Result<(), CpioError> {
        for (i, _) in key.match_indices('/') {
            let parent = &key[..i];
            match self.nodes.get(parent) {
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    return Err(CpioError::Conflict {
                        path: key.to_string(),
                        kind: "entry",
                        existing: parent.to_string(),
                        existing_kind: other.kind(),
                    })
                }
                None => {
                    self.nodes
                        .insert(parent.to_string(), Node::Dir { mode: 0o755 });
                }
            }
        }
        Ok(())
    }
}

/// Turn a user path into an archive key: no leading `/`, no empty or `.` components.
fn normalize(path: &str) -> Result<String, CpioError> {
    if path.contains('\0') {
        return Err(CpioError::NulInPath {
            path: path.replace('\0', "\\0"),
        });
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(CpioError::DotDot {
                    path: path.to_string(),
                })
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(CpioError::EmptyPath);
    }
    let key = parts.join("/");
    if key.len() > MAX_NAME {
        return Err(CpioError::PathTooLong { path: key });
    }
    if key == TRAILER {
        return Err(CpioError::ReservedName);
    }
    Ok(key)
}

fn size_u32(name: &str, size: u64) -> Result<u32, CpioError> {
    u32::try_from(size).map_err(|_| CpioError::TooLarge {
        path: name.to_string(),
        size,
    })
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

/// A writer that counts the bytes it passes on.
struct Counter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Counter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.inner.write_all(bytes).map_err(CpioError::Write)?;
        self.count += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let pad = (4 - (self.count % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

fn write_header<W: Write>(w: &mut Counter<W>, h: &Header, name: &str) -> Result<(), CpioError> {
    let namesize = name.len() + 1;
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdevmajor,
        h.rdevminor,
        namesize as u32, // bounded by MAX_NAME
        0,               // check
    ];
    let mut buf = Vec::with_capacity(HEADER_LEN + namesize + 3);
    buf.extend_from_slice(MAGIC);
    for field in fields {
        buf.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    w.put(&buf)?;
    w.pad()
}

fn write_entry<W: Write>(
    w: &mut Counter<W>,
    h: &Header,
    name: &str,
    data: &[u8],
) -> Result<(), CpioError> {
    write_header(w, h, name)?;
    w.put(data)?;
    w.pad()
}

/// Stream a host file into the archive, checking it does not change size meanwhile.
fn write_path_entry<W: Write>(
    w: &mut Counter<W>,
    header: &mut Header,
    name: &str,
    path: &Path,
) -> Result<(), CpioError> {
    let read_err = |source| CpioError::ReadSource {
        path: path.to_path_buf(),
        entry: name.to_string(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    header.filesize = size_u32(name, size)?;
    write_header(w, header, name)?;
    let mut limited = file.take(size);
    // io::copy cannot tell read errors from write errors; both abort the archive.
    let copied = io::copy(&mut limited, &mut w.inner).map_err(read_err)?;
    w.count += copied;
    let mut probe = [0u8; 1];
    let longer = limited.into_inner().read(&mut probe).map_err(read_err)?;
    if copied != size || longer != 0 {
        return Err(CpioError::SourceChanged {
            path: path.to_path_buf(),
            expected: size,
        });
    }
    w.pad()
}

/// One entry read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub path: String,
    /// Full `st_mode`: file type and permission bits.
    pub mode: u32,
    /// File contents, or the target of a symlink.
    pub data: Vec<u8>,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl ReadEntry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    pub fn is_char_dev(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }
}

/// Parse a newc archive up to its `TRAILER!!!` entry (bytes after it are ignored).
/// Every bound is checked: corrupt input gives an error with the byte offset.
pub fn read_newc(archive: &[u8]) -> Result<Vec<ReadEntry>, CpioError> {
    const FIELDS: [&str; 13] = [
        "ino",
        "mode",
        "uid",
        "gid",
        "nlink",
        "mtime",
        "filesize",
        "devmajor",
        "devminor",
        "rdevmajor",
        "rdevminor",
        "namesize",
        "check",
    ];
    let mut entries = Vec::new();
    let mut offset = 0usize;
    loop {
        if offset >= archive.len() {
            return Err(CpioError::MissingTrailer { offset });
        }
        let header = take(archive, offset, HEADER_LEN, "header")?;
        if &header[..6] != MAGIC {
            return Err(CpioError::BadMagic {
                offset,
                found: String::from_utf8_lossy(&header[..6]).into_owned(),
            });
        }
        let mut values = [0u32; 13];
        for (i, field) in FIELDS.iter().enumerate() {
            let raw = &header[6 + i * 8..14 + i * 8];
            values[i] = parse_hex(raw).ok_or_else(|| CpioError::BadHex {
                offset: offset + 6 + i * 8,
                field,
                value: String::from_utf8_lossy(raw).into_owned(),
            })?;
        }
        let [_, mode, _, _, _, _, filesize, _, _, rdev_major, rdev_minor, namesize, _] = values;
        let name_off = offset + HEADER_LEN;
        let namesize = namesize as usize;
        if namesize == 0 {
            return Err(CpioError::BadName {
                offset: name_off,
                reason: "name size is zero",
            });
        }
        let raw_name = take(archive, name_off, namesize, "name")?;
        let Some((0, name)) = raw_name.split_last() else {
            return Err(CpioError::BadName {
                offset: name_off,
                reason: "name is not NUL-terminated",
            });
        };
        if name.contains(&0) {
            return Err(CpioError::BadName {
                offset: name_off,
                reason: "name contains a NUL byte",
            });
        }
        let path = std::str::from_utf8(name)
            .map_err(|_| CpioError::BadName {
                offset: name_off,
                reason: "name is not UTF-8",
            })?
            .to_string();
        let data_off = align4(name_off + namesize);
        let data = take(archive, data_off, filesize as usize, "data")?;
        offset = align4(data_off + filesize as usize);
        if path == TRAILER {
            return Ok(entries);
        }
        entries.push(ReadEntry {
            path,
            mode,
            data: data.to_vec(),
            rdev_major,
            rdev_minor,
        });
    }
}

fn take<'a>(
    buf: &'a [u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], CpioError> {
    let available = buf.len().saturating_sub(offset);
    offset
        .checked_add(len)
        .and_then(|end| buf.get(offset..end))
        .ok_or(CpioError::Truncated {
            what,
            offset,
            needed: len,
            available,
        })
}

fn parse_hex(raw: &[u8]) -> Option<u32> {
    raw.iter().try_fold(0u32, |acc, &b| {
        let digit = (b as char).to_digit(16)?;
        Some((acc << 4) | digit)
    })
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add_file(
            "/init",
            0o755,
            FileData::Bytes(b"#!/bin/sh\necho hi\n".to_vec()),
        )
        .unwrap();
        a.add_file(
            "etc/mkhost/boot.json",
            0o644,
            FileData::Bytes(b"{}".to_vec()),
        )
        .unwrap();
        a.add_dir("/proc", 0o555).unwrap();
        a.add_symlink("bin/sh", "busybox").unwrap();
        a.add_file("bin/busybox", 0o755, FileData::Bytes(vec![7u8; 1001]))
            .unwrap();
        a.add_file("empty", 0o600, FileData::Bytes(Vec::new()))
            .unwrap();
        a
    }

    fn write(a: &Archive) -> Vec<u8> {
        let mut out = Vec::new();
        let n = a.write_newc(&mut out, 1_700_000_000).unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    #[test]
    fn roundtrip() {
        let mut a = sample();
        a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
        let bytes = write(&a);
        assert_eq!(bytes.len() % 4, 0);
        let entries = read_newc(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "empty",
                "etc",
                "etc/mkhost",
                "etc/mkhost/boot.json",
                "init",
                "proc"
            ]
        );
        let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
        assert!(get("bin").is_dir());
        assert_eq!(get("bin").mode, 0o040755);
        assert_eq!(get("proc").mode, 0o040555);
        assert!(get("init").is_file());
        assert_eq!(get("init").mode, 0o100755);
        assert_eq!(get("init").data, b"#!/bin/sh\necho hi\n");
        assert_eq!(get("bin/busybox").data, vec![7u8; 1001]);
        assert!(get("bin/sh").is_symlink());
        assert_eq!(get("bin/sh").data, b"busybox");
        let console = get("dev/console");
        assert!(console.is_char_dev());
        assert_eq!(console.mode, 0o020600);
        assert_eq!((console.rdev_major, console.rdev_minor), (5, 1));
        assert!(get("empty").data.is_empty());
    }

    #[test]
    fn header_fields_are_fixed() {
        let bytes = write(&sample());
        // First entry: "bin", inode 1, dir, uid/gid 0, nlink 2, mtime given.
        let h = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(&h[..6], "070701");
        assert_eq!(&h[6..14], "00000001");
        assert_eq!(&h[14..22], "000041ED");
        assert_eq!(&h[22..38], "0000000000000000");
        assert_eq!(&h[38..46], "00000002");
        assert_eq!(&h[46..54], format!("{:08X}", 1_700_000_000u32));
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn writing_twice_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("payload");
        std::fs::write(&src, b"from disk").unwrap();
        let mut a = sample();
        a.add_file("usr/bin/hostd", 0o755, FileData::Path(src))
            .unwrap();
        let one = write(&a);
        let two = write(&a.clone());
        assert_eq!(one, two);
        let entries = read_newc(&one).unwrap();
        let hostd = entries.iter().find(|e| e.path == "usr/bin/hostd").unwrap();
        assert_eq!(hostd.data, b"from disk");
    }

    #[test]
    fn missing_source_names_the_path() {
        let mut a = Archive::new();
        a.add_file("x", 0o644, FileData::Path("/nonexistent/mkhost-src".into()))
            .unwrap();
        let err = a.write_newc(Vec::new(), 0).unwrap_err();
        assert!(matches!(err, CpioError::ReadSource { .. }));
        assert!(err.to_string().contains("/nonexistent/mkhost-src"), "{err}");
    }

    #[test]
    fn hostile_and_conflicting_paths() {
        let mut a = Archive::new();
        assert!(matches!(a.add_dir("", 0o755), Err(CpioError::EmptyPath)));
        assert!(matches!(a.add_dir("/", 0o755), Err(CpioError::EmptyPath)));
        assert!(matches!(
            a.add_file("a/../../etc/passwd", 0o644, FileData::Bytes(vec![])),
            Err(CpioError::DotDot { .. })
        ));
        assert!(matches!(
            a.add_symlink("..", "x"),
            Err(CpioError::DotDot { .. })
        ));
        assert!(matches!(
            a.add_file("a\0b", 0o644, FileData::Bytes(vec![])),
            Err(CpioError::NulInPath { .. })
        ));
        assert!(matches!(
            a.add_symlink("l", ""),
            Err(CpioError::BadSymlinkTarget { .. })
        ));
        assert!(matches!(
            a.add_dir(&"x".repeat(5000), 0o755),
            Err(CpioError::PathTooLong { .. })
        ));
        assert!(matches!(
            a.add_dir("/TRAILER!!!", 0o755),
            Err(CpioError::ReservedName)
        ));
        assert!(a.is_empty());

        a.add_file("f", 0o644, FileData::Bytes(b"1".to_vec()))
            .unwrap();
        let err = a.add_dir("f", 0o755).unwrap_err();
        assert!(matches!(err, CpioError::Conflict { .. }));
        assert!(err.to_string().contains("\"f\" is already a file"), "{err}");
        assert!(matches!(
            a.add_file("f/g", 0o644, FileData::Bytes(vec![])),
            Err(CpioError::Conflict { .. })
        ));
        a.add_dir("d", 0o700).unwrap();
        assert!(matches!(
            a.add_symlink("d", "x"),
            Err(CpioError::Conflict { .. })
        ));
        // Replacing a file keeps one entry, with the new contents.
        a.add_file("/f", 0o600, FileData::Bytes(b"2".to_vec()))
            .unwrap();
        assert_eq!(a.len(), 2);
        let entries = read_newc(&write(&a)).unwrap();
        assert_eq!(entries[1].path, "f");
        assert_eq!(entries[1].data, b"2");
        assert_eq!(entries[1].mode, 0o100600);
        // Normalisation: ./a//b is a/b; re-adding a dir updates its mode.
        a.add_dir("./x//y/", 0o711).unwrap();
        assert!(a.contains("/x/y"));
        assert!(a.contains("x"));
        a.add_dir("x", 0o700).unwrap();
        assert_eq!(
            a.entries().find(|(p, _)| *p == "x").unwrap().1,
            &Node::Dir { mode: 0o700 }
        );
    }

    #[test]
    fn corrupt_input_errors_with_offset() {
        let bytes = write(&sample());
        for cut in [0, 5, 109, 110, 113, 200, bytes.len() - 4] {
            let err = read_newc(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    CpioError::Truncated { .. } | CpioError::MissingTrailer { .. }
                ),
                "cut {cut}: {err}"
            );
        }
        // Every truncation point fails cleanly (never panics).
        for cut in 0..bytes.len() - 4 {
            assert!(read_newc(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(matches!(
            read_newc(&bad),
            Err(CpioError::BadMagic { offset: 0, .. })
        ));
        let mut bad = bytes.clone();
        bad[6 + 6 * 8] = b'G'; // filesize of the first entry
        let err = read_newc(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                CpioError::BadHex {
                    offset: 54,
                    field: "filesize",
                    ..
                }
            ),
            "{err}"
        );
        let mut bad = bytes.clone();
        bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"7FFFFFFF");
        assert!(matches!(read_newc(&bad), Err(CpioError::Truncated { .. })));
        let mut bad = bytes;
        bad[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"00000000");
        assert!(matches!(read_newc(&bad), Err(CpioError::BadName { .. })));
    }

    fn run_cpio(args: &[&str], input: &[u8], cwd: &std::path::Path) -> std::process::Output {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cpio (GNU cpio) must be installed for this test");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cpio {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    #[test]
    fn gnu_cpio_lists_the_archive() {
        let mut a = sample();
        a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
        let bytes = write(&a);
        let dir = tempfile::tempdir().unwrap();
        let out = run_cpio(&["-t", "--quiet"], &bytes, dir.path());
        let listed: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let ours: Vec<String> = a.entries().map(|(p, _)| p.to_string()).collect();
        assert_eq!(listed, ours);
    }

    #[test]
    fn gnu_cpio_extracts_the_archive() {
        let bytes = write(&sample());
        let dir = tempfile::tempdir().unwrap();
        run_cpio(&["-idm", "--quiet"], &bytes, dir.path());
        let root = dir.path();
        assert_eq!(
            std::fs::read(root.join("init")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::read(root.join("bin/busybox")).unwrap(),
            vec![7u8; 1001]
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            std::path::Path::new("busybox")
        );
        assert_eq!(
            std::fs::read(root.join("etc/mkhost/boot.json")).unwrap(),
            b"{}"
        );
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(root.join("init")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(meta.mtime(), 1_700_000_000);
        assert!(root.join("proc").is_dir());
        assert_eq!(std::fs::read(root.join("empty")).unwrap(), b"");
    }

    #[test]
    fn entries_put_first_come_first_after_their_parents() {
        let mut a = Archive::new();
        a.add_file("etc/a", 0o644, FileData::Bytes(b"a".to_vec()))
            .unwrap();
        a.add_file("init", 0o755, FileData::Bytes(b"i".to_vec()))
            .unwrap();
        a.add_file("lib/m.ko", 0o644, FileData::Bytes(b"m".to_vec()))
            .unwrap();
        a.add_file("usr/bin/hostd", 0o755, FileData::Bytes(b"h".to_vec()))
            .unwrap();
        a.put_first("/init");
        a.put_first("usr/bin/hostd");
        a.put_first("not/there");
        let names: Vec<&str> = a.entries().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "init",
                "usr",
                "usr/bin",
                "usr/bin/hostd",
                "etc",
                "etc/a",
                "lib",
                "lib/m.ko"
            ]
        );
        let mut bytes = Vec::new();
        a.write_newc(&mut bytes, 0).unwrap();
        let read: Vec<String> = read_newc(&bytes)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(read, names);
    }
}
