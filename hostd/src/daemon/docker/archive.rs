//! `docker cp` (`/containers/{id}/archive`): paths inside a container's
//! root, their `X-Docker-Container-Path-Stat`, tars of them, and archives
//! extracted into them.
//!
//! Everything is resolved relative to an open directory of the container's
//! root, never by a host path: a running container's is its init's root
//! (`/proc/<pid>/root`, with its volumes and tmpfs mounts), a stopped one's
//! is its overlay mount (the image and its writable layer, no volumes).
//! The parent of a path is opened with `openat2(RESOLVE_IN_ROOT)`, so a
//! symlink or `..` in it resolves as it would inside the container and
//! never leaves it; the last component is looked at without following it
//! (`AT_SYMLINK_NOFOLLOW`), and a tree is walked by descriptor with
//! `O_NOFOLLOW`. Archives go in through the image store's hardened
//! extractor ([`mkhost_store::extract_archive`]), after a dry run of it
//! ([`mkhost_store::check_archive`]).

use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::error::ApiError;

/// The response header carrying a path's stat.
pub const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// How many symlinks a `linkTarget` follows (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// The lexically clean absolute form of a container path, keeping what
/// Docker keeps: a trailing `/.` (copy a directory's contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPath {
    /// Components, without `.`, `..` resolved lexically (`/..` is `/`).
    pub components: Vec<String>,
    /// The path ended in `/.`: a directory's contents, not itself.
    pub contents: bool,
}

impl ContainerPath {
    /// Parses `path` as Docker does (relative paths are from `/`).
    pub fn parse(path: &str) -> ContainerPath {
        let mut components: Vec<String> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    components.pop();
                }
                other => components.push(other.to_string()),
            }
        }
        let contents = path == "." || path.ends_with("/.");
        ContainerPath {
            components,
            contents,
        }
    }

    /// `/a/b`.
    pub fn absolute(&self) -> String {
        format!("/{}", self.components.join("/"))
    }

    /// The parent's components and the last one (`None` for `/`).
    fn split(&self) -> (String, Option<&str>) {
        match self.components.split_last() {
            Some((last, parent)) => (format!("/{}", parent.join("/")), Some(last.as_str())),
            None => ("/".into(), None),
        }
    }

    /// The base name Docker reports and tars under: the last component,
    /// `/` for the root, `.` for contents.
    pub fn base(&self) -> String {
        if self.contents {
            return ".".into();
        }
        self.components
            .last()
            .cloned()
            .unwrap_or_else(|| "/".into())
    }
}

/// An error about a container path.
#[derive(Debug)]
pub enum PathError {
    /// It does not exist (or a parent is not a directory).
    NotFound,
    /// Another OS error.
    Os(Errno),
}

impl From<Errno> for PathError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::NOENT | Errno::NOTDIR => PathError::NotFound,
            other => PathError::Os(other),
        }
    }
}

/// One path in a container, found: its parent directory (opened inside
/// the root), its name there and its `lstat`.
pub struct Found {
    /// The parent directory (`O_PATH`), or the root itself for `/`.
    pub parent: OwnedFd,
    /// The name in `parent` (`.` for the root).
    pub name: CString,
    /// What `lstat` says.
    pub stat: Stat,
    /// The path, as parsed.
    pub path: ContainerPath,
}

fn cstring(text: &str) -> Result<CString, PathError> {
    CString::new(text).map_err(|_| PathError::NotFound)
}

/// Opens `path` (absolute, clean) in `root` as a directory to walk from.
fn open_dir_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    crate::os::open_in_root(root, path, flags | OFlags::DIRECTORY | OFlags::CLOEXEC)
}

/// Finds `path` in the container whose root is `root`.
pub fn find(root: BorrowedFd<'_>, path: &str) -> Result<Found, PathError> {
    let parsed = ContainerPath::parse(path);
    let (parent_path, last) = parsed.split();
    let parent = open_dir_in_root(root, &parent_path, OFlags::PATH)?;
    let name = cstring(last.unwrap_or("."))?;
    let stat = rustix::fs::statat(parent.as_fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
    if parsed.contents && FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        // `file/.`: as dockerd, a non-directory has no contents.
        return Err(PathError::NotFound);
    }
    Ok(Found {
        parent,
        name,
        stat,
        path: parsed,
    })
}

/// Where the symlink `found` leads, followed to its end inside the root,
/// as an absolute container path (dockerd's `linkTarget`); empty when it
/// is not a symlink.
pub fn link_target(root: BorrowedFd<'_>, found: &Found) -> String {
    if FileType::from_raw_mode(found.stat.st_mode) != FileType::Symlink {
        return String::new();
    }
    let mut path = found.path.clone();
    for _ in 0..MAX_LINKS {
        let (parent_path, Some(last)) = path.split() else {
            break;
        };
        let Ok(parent) = open_dir_in_root(root, &parent_path, OFlags::PATH) else {
            break;
        };
        let Ok(target) = rustix::fs::readlinkat(parent.as_fd(), last, Vec::new()) else {
            break;
        };
        let target = target.to_string_lossy().into_owned();
        path = match target.starts_with('/') {
            true => ContainerPath::parse(&target),
            false => ContainerPath::parse(&format!("{parent_path}/{target}")),
        };
    }
    path.absolute()
}

/// Go's `os.FileMode` bits of a Unix mode, as dockerd's stat reports it.
pub fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut bits = mode & 0o777;
    bits |= match FileType::from_raw_mode(mode) {
        FileType::Directory => DIR,
        FileType::Symlink => SYMLINK,
        FileType::Fifo => NAMED_PIPE,
        FileType::Socket => SOCKET,
        FileType::CharacterDevice => DEVICE | CHAR_DEVICE,
        FileType::BlockDevice => DEVICE,
        _ => 0,
    };
    for (unix, go) in [(0o4000, SETUID), (0o2000, SETGID), (0o1000, STICKY)] {
        if mode & unix != 0 {
            bits |= go;
        }
    }
    bits
}

/// The `X-Docker-Container-Path-Stat` value: base64 of
/// `{"name","size","mode","mtime","linkTarget"}`.
pub fn stat_header(name: &str, stat: &Stat, link_target: &str) -> String {
    use base64::Engine;
    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
    let value = serde_json::json!({
        "name": name,
        "size": stat.st_size,
        "mode": go_file_mode(stat.st_mode),
        "mtime": mkhost_shared::time::rfc3339(stat.st_mtime, nanos),
        "linkTarget": link_target,
    });
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

/// A path error as dockerd answers it for `container`.
pub fn path_error(error: PathError, path: &str, container: &str) -> ApiError {
    match error {
        PathError::NotFound => ApiError::not_found(format!(
            "Could not find the file {path} in container {container}"
        )),
        PathError::Os(e) => {
            ApiError::internal(format!("cannot read {path} in container {container}: {e}"))
        }
    }
}

/// A `Write` that sends what it is given to a response body in chunks
/// (blocking: run it on a blocking thread).
pub struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
}

/// How much a [`ChannelWriter`] gathers before sending.
const CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    /// A writer into `sender`.
    pub fn new(sender: tokio::sync::mpsc::Sender<Bytes>) -> ChannelWriter {
        ChannelWriter {
            sender,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Writes a tar of `found` to `out`, named as dockerd names it: from
/// `found`'s base name (`dir/`, `dir/a`), `./` and `./a` for a directory's
/// contents, `/` and `/a` for the root; directories recursively in name
/// order, symlinks as links, nothing followed.
pub fn write_tar<W: Write>(found: &Found, out: W) -> io::Result<W> {
    let mut builder = tar::Builder::new(out);
    let base = found.path.base();
    add(
        &mut builder,
        found.parent.as_fd(),
        &found.name,
        &found.stat,
        base.as_bytes(),
    )?;
    builder.into_inner()
}

/// A tar header for `stat`, its type and metadata set.
fn header(stat: &Stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header.set_size(size);
    header
}

/// Appends `header` named `name` (and linking to `link`) as given: the
/// tar crate's own path setters normalise `./a` and refuse `/a`, which
/// dockerd's tars have. Longer names go in GNU long-name records.
fn append_raw<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: tar::Header,
    name: &[u8],
    link: &[u8],
    data: impl Read,
) -> io::Result<()> {
    for (value, kind) in [
        (name, tar::EntryType::GNULongName),
        (link, tar::EntryType::GNULongLink),
    ] {
        if value.len() > 100 {
            let mut long = tar::Header::new_gnu();
            long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            long.set_entry_type(kind);
            long.set_mode(0o644);
            long.set_size(value.len() as u64 + 1);
            long.set_cksum();
            builder.append(&long, value.chain(&[0u8][..]))?;
        }
    }
    let fields = header.as_old_mut();
    let n = name.len().min(100);
    fields.name = [0; 100];
    fields.name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    fields.linkname = [0; 100];
    fields.linkname[..l].copy_from_slice(&link[..l]);
    header.set_cksum();
    builder.append(&header, data)
}

/// `parent/name`, where the root `/` has children `/a`.
fn child_name(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = parent.to_vec();
    if out.last() != Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Adds `name` in `dir` (with `stat`) as `entry`, recursively.
fn add<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    stat: &Stat,
    entry: &[u8],
) -> io::Result<()> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let h = header(stat, tar::EntryType::Directory, 0);
            let shown = child_name(entry, b"");
            append_raw(builder, h, &shown, b"", io::empty())?;
            if crate::os::is_pseudo_fs(fd.as_fd()) {
                return Ok(());
            }
            let mut names: Vec<CString> = Vec::new();
            for item in rustix::fs::Dir::read_from(&fd)? {
                let item = item?;
                let n = item.file_name();
                if n != c"." && n != c".." {
                    names.push(n.to_owned());
                }
            }
            names.sort();
            for child in names {
                let child_stat = match rustix::fs::statat(&fd, &child, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(s) => s,
                    // Gone meanwhile (a running container changes its files).
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                let child_entry = child_name(entry, child.as_bytes());
                add(builder, fd.as_fd(), &child, &child_stat, &child_entry)?;
            }
        }
        FileType::RegularFile => {
            // O_NONBLOCK: a fifo swapped in since the stat (a running
            // container changes its files) must not hang the read; it is
            // then refused as no longer a regular file.
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
                return Err(io::Error::other(format!(
                    "{} changed while it was read",
                    String::from_utf8_lossy(entry)
                )));
            }
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            let h = header(stat, tar::EntryType::Regular, size);
            // A file that grows meanwhile is cut at its size; one that
            // shrinks is padded with zeros, so the tar stays whole.
            let data = std::fs::File::from(fd)
                .take(size)
                .chain(io::repeat(0))
                .take(size);
            append_raw(builder, h, entry, b"", data)?;
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
            let h = header(stat, tar::EntryType::Symlink, 0);
            append_raw(builder, h, entry, target.as_bytes(), io::empty())?;
        }
        kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
            let kind = match kind {
                FileType::CharacterDevice => tar::EntryType::Char,
                FileType::BlockDevice => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            };
            let mut h = header(stat, kind, 0);
            let dev = stat.st_rdev;
            h.set_device_major(rustix::fs::major(dev))?;
            h.set_device_minor(rustix::fs::minor(dev))?;
            append_raw(builder, h, entry, b"", io::empty())?;
        }
        // Sockets have no place in a tar (Go's archive/tar skips them too).
        _ => {}
    }
    Ok(())
}

/// Opens the directory `path` of the container (for extracting into it):
/// dockerd's 404 when it is missing, 400 when it is not a directory.
pub fn open_destination(
    root: BorrowedFd<'_>,
    path: &str,
    container: &str,
) -> Result<OwnedFd, ApiError> {
    let parsed = ContainerPath::parse(path);
    match open_dir_in_root(root, &parsed.absolute(), OFlags::RDONLY) {
        Ok(fd) => Ok(fd),
        // Either a parent or the path itself is not a directory: the
        // path exists only in the second case.
        Err(Errno::NOTDIR) => match open_dir_in_root(root, &parsed.absolute(), OFlags::PATH) {
            Err(Errno::NOTDIR)
                if crate::os::open_in_root(
                    root,
                    &parsed.absolute(),
                    OFlags::PATH | OFlags::CLOEXEC,
                )
                .is_ok() =>
            {
                Err(ApiError::bad_request("extraction point is not a directory"))
            }
            _ => Err(path_error(PathError::NotFound, path, container)),
        },
        Err(e) => Err(path_error(e.into(), path, container)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_as_docker_does() {
        let p = ContainerPath::parse("/a/./b/../c/");
        assert_eq!(p.absolute(), "/a/c");
        assert_eq!(p.base(), "c");
        assert!(!p.contents);
        let p = ContainerPath::parse("dir/.");
        assert_eq!(p.absolute(), "/dir");
        assert!(p.contents);
        assert_eq!(p.base(), ".");
        assert_eq!(ContainerPath::parse("/../..").absolute(), "/");
        assert_eq!(ContainerPath::parse("/").base(), "/");
        assert_eq!(ContainerPath::parse("/").split(), ("/".to_string(), None));
        assert_eq!(
            ContainerPath::parse("/a/b").split(),
            ("/a".to_string(), Some("b"))
        );
    }

    #[test]
    fn go_file_modes() {
        assert_eq!(go_file_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(0o104755), (1 << 23) | 0o755);
        assert_eq!(go_file_mode(0o041777), (1 << 31) | (1 << 20) | 0o777);
        assert_eq!(go_file_mode(0o020666), (1 << 26) | (1 << 21) | 0o666);
    }

    #[test]
    fn stat_header_is_dockers_json() {
        use base64::Engine;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        std::fs::set_permissions(dir.path().join("f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let found = find(root.as_fd(), "/f").unwrap();
        let value = stat_header(&found.path.base(), &found.stat, "");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(json["name"], "f");
        assert_eq!(json["size"], 5);
        assert_eq!(json["mode"], 0o640);
        assert!(json["mtime"].as_str().unwrap().ends_with('Z'));
        assert_eq!(json["linkTarget"], "");
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::fs::write(root_path.join("etc/passwd"), b"inside").unwrap();
        std::os::unix::fs::symlink("/etc", root_path.join("up")).unwrap();
        std::os::unix::fs::symlink("../../../..", root_path.join("etc/out")).unwrap();
        let root =
            rustix::fs::open(&root_path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        // Through an absolute symlink: the container's /etc, not the host's.
        let found = find(root.as_fd(), "/up/passwd").unwrap();
        assert_eq!(found.stat.st_size, 6);
        let link = find(root.as_fd(), "/up").unwrap();
        assert_eq!(link_target(root.as_fd(), &link), "/etc");
        let out = find(root.as_fd(), "/etc/out").unwrap();
        assert_eq!(link_target(root.as_fd(), &out), "/");
        assert!(matches!(
            find(root.as_fd(), "/etc/out/etc/shadow"),
            Err(PathError::NotFound)
        ));
        assert!(matches!(
            find(root.as_fd(), "/nope"),
            Err(PathError::NotFound)
        ));
        assert!(matches!(
            find(root.as_fd(), "/etc/passwd/."),
            Err(PathError::NotFound)
        ));
        // A tar of the directory names its entries from its base name and
        // keeps the symlink a symlink.
        let found = find(root.as_fd(), "/etc").unwrap();
        let bytes = write_tar(&found, Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc/", "etc/out", "etc/passwd"]);
        // Contents as `./`, the root as `/`, long names whole.
        let long = "n".repeat(150);
        std::fs::write(root_path.join("etc").join(&long), b"x").unwrap();
        let names = |path: &str| -> Vec<String> {
            let found = find(root.as_fd(), path).unwrap();
            let bytes = write_tar(&found, Vec::new()).unwrap();
            let mut archive = tar::Archive::new(&bytes[..]);
            let list = archive
                .entries()
                .unwrap()
                .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
                .collect();
            list
        };
        assert_eq!(
            names("/etc/."),
            ["./", &format!("./{long}"), "./out", "./passwd"]
        );
        assert_eq!(names("/")[..3], ["/", "/etc/", &format!("/etc/{long}")]);
        assert!(open_destination(root.as_fd(), "/etc/passwd", "c")
            .unwrap_err()
            .message
            .contains("not a directory"));
        assert_eq!(
            open_destination(root.as_fd(), "/nope", "c")
                .unwrap_err()
                .status,
            404
        );
        assert!(open_destination(root.as_fd(), "/up", "c").is_ok());
    }
}
