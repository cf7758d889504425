//! Containers' roots on Linux: overlayfs over the image's layers with the
//! writable layer in the container's directory, mounted by the init in its
//! own mount namespace at each start, or on the host for the daemon's own
//! work on a container that does not run; and file access inside a root
//! that cannot leave it (`openat2` with `RESOLVE_IN_ROOT`).

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::backend::CreateSpec;

/// Whether `path` is a mount point: it exists, on another device than its
/// parent (the overlay root is its own device).
pub fn is_mounted(path: &Path) -> bool {
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (fs::metadata(path), fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// The overlay's mount options: `spec.lower` (or the bundle's empty
/// directory for an image without layers) under the writable layer in
/// `dir`.
pub fn overlay_options(dir: &Path, spec: &CreateSpec) -> String {
    let mut lower: Vec<String> = spec.lower.iter().map(|p| p.display().to_string()).collect();
    if lower.is_empty() {
        lower.push(spec.bundle.join("empty").display().to_string());
    }
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    )
}

/// Makes `spec`'s bundle (`rootfs/`, `empty/`), after checking the
/// writable layer of the container directory `dir`: a missing one is an
/// error, never replaced by an empty one. The container's init mounts the
/// root there in its own mount namespace (`CreateSpec::root_overlay`).
pub fn make_bundle(dir: &Path, spec: &CreateSpec) -> Result<(), String> {
    for sub in [dir.join("upper"), dir.join("work")] {
        if !sub.is_dir() {
            return Err(format!("its writable layer {} is missing", sub.display()));
        }
    }
    for sub in [spec.rootfs.clone(), spec.bundle.join("empty")] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&sub)
            .map_err(|e| format!("cannot create {}: {e}", sub.display()))?;
    }
    Ok(())
}

/// [`make_bundle`], then mounts the overlay root on the host at
/// `spec.rootfs` (for the daemon's own work on a container that does not
/// run: its volumes' first fill, `docker cp`), unless it is mounted
/// already. Whoever mounts it unmounts it again.
pub fn mount_root(dir: &Path, spec: &CreateSpec) -> Result<(), String> {
    make_bundle(dir, spec)?;
    if is_mounted(&spec.rootfs) {
        return Ok(());
    }
    crate::os::mount(
        "overlay",
        &spec.rootfs,
        "overlay",
        crate::os::MountFlags::empty(),
        Some(&overlay_options(dir, spec)),
    )
    .map_err(|e| {
        format!(
            "cannot mount the overlay root at {}: {e}",
            spec.rootfs.display()
        )
    })
}

/// Unmounts a container root; not mounted, or gone with its bundle, is fine.
pub fn unmount_root(rootfs: &Path) -> Result<(), String> {
    match crate::os::unmount(rootfs, crate::os::UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => Ok(()),
        Err(e) => Err(format!("cannot unmount {}: {e}", rootfs.display())),
    }
}

/// Detaches the root mounted at `rootfs` at once, best effort: the kernel
/// unmounts it when nothing uses it any more (`MNT_DETACH`).
pub fn detach_root(rootfs: &Path) {
    let _ = crate::os::unmount(rootfs, crate::os::UnmountFlags::DETACH);
}

/// The root of container `spec` (directory `dir`) as an open directory:
/// its running init's (`pid`) when it can be reached, else its overlay
/// mounted for this caller alone and detached at once (the open directory
/// keeps the mount alive until it is closed, and the host's mount table
/// does not keep it); `true` for the first.
pub fn open_root(dir: &Path, spec: &CreateSpec, pid: i32) -> Result<(OwnedFd, bool), String> {
    use rustix::fs::{Mode, OFlags};
    if pid > 0 {
        if let Some(fd) = init_root(pid) {
            return Ok((fd, true));
        }
    }
    mount_root(dir, spec)?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let opened = rustix::fs::open(&spec.rootfs, flags, Mode::empty());
    detach_root(&spec.rootfs);
    let fd = opened.map_err(|e| format!("cannot open {}: {e}", spec.rootfs.display()))?;
    Ok((fd, false))
}

/// The root of the container whose init is `pid`, opened through its
/// `/proc` directory (which pins the process: a reused pid cannot slip in
/// after it is open); `None` when the process is gone or shares hostd's
/// PID namespace, which a container's init never does (a pid that exited
/// and was reused by a host process).
fn init_root(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let process = rustix::fs::open(format!("/proc/{pid}"), flags, Mode::empty()).ok()?;
    let ns = |dir: &std::os::fd::OwnedFd| {
        rustix::fs::statat(dir, "ns/pid", AtFlags::empty())
            .ok()
            .map(|s| (s.st_dev, s.st_ino))
    };
    let own = rustix::fs::open("/proc/self", flags, Mode::empty()).ok()?;
    if ns(&process)? == ns(&own)? {
        return None;
    }
    rustix::fs::openat(&process, "root", flags, Mode::empty()).ok()
}

/// Copies what the image has at `target` (resolved inside `rootfs`, so a
/// symlink in the image cannot point the copy outside it) into the empty
/// volume directory `data`, as Docker fills a new volume: contents, and the
/// directory's own mode and owner. Nothing to copy when the image has no
/// directory there.
pub fn fill_from_image(rootfs: &Path, target: &str, data: &Path) -> io::Result<()> {
    let dir = match crate::runtime::sys::open_in_root(rootfs, target) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let meta = dir.metadata()?;
    if !meta.is_dir() {
        return Ok(());
    }
    use std::os::fd::AsRawFd;
    let source = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    copy_contents(&source, data)?;
    fs::set_permissions(data, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    std::os::unix::fs::lchown(data, Some(meta.uid()), Some(meta.gid()))
}

/// Copies the entries of directory `src` into `dst`: directories
/// (recursively), regular files and symlinks (as links, never followed),
/// with mode and owner; other kinds (devices, sockets) are skipped.
fn copy_contents(src: &Path, dst: &Path) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_dir() {
            fs::create_dir(&to)?;
            copy_contents(&from, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
        } else {
            continue;
        }
        if !kind.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_use_the_layers_or_an_empty_lower() {
        let mut spec: CreateSpec = serde_json::from_value(serde_json::json!({
            "id": "x", "bundle": "/run/hostd/bundles/x", "rootfs": "/run/hostd/bundles/x/rootfs",
            "args": ["sh"], "env": [], "cwd": "/", "uid": 0, "gid": 0, "hostname": "x",
            "limits": {},
        }))
        .unwrap();
        let dir = Path::new("/var/lib/hostd-containers/x");
        assert_eq!(
            overlay_options(dir, &spec),
            "lowerdir=/run/hostd/bundles/x/empty,upperdir=/var/lib/hostd-containers/x/upper,\
             workdir=/var/lib/hostd-containers/x/work"
        );
        spec.lower = vec!["/s/l2".into(), "/s/l1".into()];
        assert!(overlay_options(dir, &spec).starts_with("lowerdir=/s/l2:/s/l1,"));
        let missing = tempfile::tempdir().unwrap();
        let e = mount_root(missing.path(), &spec).unwrap_err();
        assert!(e.contains("writable layer") && e.contains("upper"), "{e}");
        assert!(!is_mounted(missing.path()));
    }

    #[test]
    fn a_new_volume_gets_the_images_files_without_leaving_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("srv/app/sub")).unwrap();
        fs::write(rootfs.join("srv/app/sub/f"), b"hello").unwrap();
        fs::set_permissions(rootfs.join("srv/app"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", rootfs.join("srv/app/link")).unwrap();
        // An absolute link resolves inside the root, not on the host.
        fs::create_dir_all(dir.path().join("host-secret")).unwrap();
        fs::write(dir.path().join("host-secret/key"), b"k").unwrap();
        let escape = format!("{}/host-secret", dir.path().display());
        std::os::unix::fs::symlink(&escape, rootfs.join("escape")).unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fill_from_image(&rootfs, "/srv/app", &data).unwrap();
        assert_eq!(fs::read(data.join("sub/f")).unwrap(), b"hello");
        assert_eq!(
            fs::read_link(data.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o777, 0o750);
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fill_from_image(&rootfs, "/escape", &other).unwrap();
        assert_eq!(fs::read_dir(&other).unwrap().count(), 0);
        fill_from_image(&rootfs, "/missing", &other).unwrap();
    }
}
