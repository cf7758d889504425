//! Network namespaces kept alive by a bind mount, as `ip netns add` makes
//! them, and work done inside one without moving the caller.
//!
//! A container's namespace is created before the container ([`NetNs::create`])
//! so its links can be set up first; the file outlives a daemon restart and is
//! adopted again with [`NetNs::open`]. Network namespaces belong to threads,
//! not processes: [`NetNs::create`] unshares on a short-lived thread and
//! [`NetNs::run`] works on a scoped thread that entered the namespace, so the
//! calling thread's namespace never changes. Sockets opened there (netlink,
//! UDP) and `/proc/sys/net` files opened there ([`set_sysctl`]) belong to
//! that namespace for good.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::os;

/// The calling thread's own network namespace file.
const THREAD_NET_NS: &str = "/proc/thread-self/ns/net";

/// A network namespace kept alive by a bind mount at `path`.
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    fd: OwnedFd,
}

impl NetNs {
    /// Creates a fresh namespace and bind-mounts it at `path` (the file is
    /// created and must not exist; its directory must). Done on a
    /// short-lived thread that unshares its network namespace, so the
    /// caller's never changes. On failure nothing is left (no file, no
    /// mount).
    pub fn create(path: &Path) -> io::Result<NetNs> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)?;
        let made = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("netns-create".into())
                .spawn_scoped(s, || -> io::Result<OwnedFd> {
                    os::unshare(os::UnshareFlags::NEWNET)?;
                    os::bind_mount(Path::new(THREAD_NET_NS), path)?;
                    Ok(File::open(path)?.into())
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        match made {
            Ok(fd) => Ok(NetNs {
                path: path.to_path_buf(),
                fd,
            }),
            Err(e) => {
                // Best effort: the first error is the one to report.
                let _ = remove(path);
                Err(e)
            }
        }
    }

    /// Opens an existing namespace file (re-adoption after a daemon
    /// restart). Fails with `InvalidData` unless `path` is a mounted network
    /// namespace (a plain file whose mount was lost is not).
    pub fn open(path: &Path) -> io::Result<NetNs> {
        let file = File::open(path)?;
        let not_netns = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a mounted network namespace", path.display()),
            )
        };
        if os::statfs_type(path)? != os::NSFS_MAGIC {
            return Err(not_netns());
        }
        match os::namespace_type(file.as_fd()) {
            Ok(libc::CLONE_NEWNET) => {}
            Ok(_) => return Err(not_netns()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => return Err(not_netns()),
            Err(e) => return Err(e),
        }
        Ok(NetNs {
            path: path.to_path_buf(),
            fd: file.into(),
        })
    }

    /// The namespace descriptor (for `IFLA_NET_NS_FD` and `setns`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a scoped thread that entered this namespace and returns
    /// its result. Netlink and UDP sockets `f` opens, and the sysctls it
    /// writes, are this namespace's; a panic in `f` is resumed here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(s, move || -> io::Result<T> {
                    os::enter_net_ns(fd)?;
                    Ok(f())
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Unmounts (lazily, `MNT_DETACH`) and unlinks a namespace file; one that
/// is not there is not an error. The namespace itself lives on while a
/// process or a descriptor ([`NetNs`]) still holds it.
pub fn remove(path: &Path) -> io::Result<()> {
    // A file mounted over more than once needs as many unmounts; EINVAL
    // says it is no (longer a) mount point.
    for _ in 0..16 {
        match os::unmount(path, os::UnmountFlags::DETACH) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => break,
            Err(e) => return Err(e),
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes a sysctl of the calling thread's network namespace:
/// `set_sysctl("net/ipv4/conf/mkv1/proxy_arp", "1")` writes
/// `/proc/sys/net/ipv4/conf/mkv1/proxy_arp`. Refuses (`InvalidInput`) a key
/// that is absolute or climbs with `..`.
pub fn set_sysctl(key: &str, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(sysctl_path(key)?)?;
    file.write_all(value.as_bytes())
}

/// Reads a sysctl of the calling thread's network namespace (trimmed).
pub fn get_sysctl(key: &str) -> io::Result<String> {
    Ok(fs::read_to_string(sysctl_path(key)?)?.trim().to_string())
}

fn sysctl_path(key: &str) -> io::Result<PathBuf> {
    let rel = Path::new(key);
    if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad sysctl key {key:?}"),
        ));
    }
    Ok(Path::new("/proc/sys").join(rel))
}

/// Test support: runs `f` on a thread with private network and mount
/// namespaces (mounts there propagate nowhere), so tests can make links,
/// routes and namespace mounts without touching the machine's own.
#[cfg(test)]
pub(crate) fn in_private_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            os::unshare(os::UnshareFlags::NEWNET | os::UnshareFlags::NEWNS).unwrap();
            os::set_propagation(
                Path::new("/"),
                os::MountPropagationFlags::PRIVATE | os::MountPropagationFlags::REC,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_netns_inode() -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(THREAD_NET_NS).unwrap().ino()
    }

    fn mounted(path: &Path) -> bool {
        let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        let path = path.to_str().unwrap();
        info.lines().any(|l| l.split(' ').nth(4) == Some(path))
    }

    #[test]
    fn create_open_run_remove() {
        in_private_host(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c1");
            let before = thread_netns_inode();
            let ns = NetNs::create(&path).unwrap();
            assert_eq!(thread_netns_inode(), before, "the caller stays put");
            assert!(mounted(&path));
            assert_eq!(ns.path(), path);
            let inside = ns.run(thread_netns_inode).unwrap();
            assert_ne!(inside, before);
            // A second create on the same file is refused and leaves it.
            let err = NetNs::create(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            assert!(mounted(&path));
            // Re-adoption reaches the same namespace.
            let again = NetNs::open(&path).unwrap();
            assert_eq!(again.run(thread_netns_inode).unwrap(), inside);
            // Sysctls written inside belong to the namespace. (A new
            // namespace inherits the IPv4 settings of the first one.)
            set_sysctl("net/ipv4/ip_forward", "0").unwrap();
            ns.run(|| set_sysctl("net/ipv4/ip_forward", "1"))
                .unwrap()
                .unwrap();
            assert_eq!(
                ns.run(|| get_sysctl("net/ipv4/ip_forward"))
                    .unwrap()
                    .unwrap(),
                "1"
            );
            assert_eq!(get_sysctl("net/ipv4/ip_forward").unwrap(), "0");
            drop((ns, again));
            remove(&path).unwrap();
            assert!(!mounted(&path));
            assert!(!path.exists());
            remove(&path).unwrap();
        });
    }

    #[test]
    fn open_refuses_what_is_not_a_netns() {
        in_private_host(|| {
            let dir = tempfile::tempdir().unwrap();
            let plain = dir.path().join("plain");
            fs::write(&plain, "").unwrap();
            let err = NetNs::open(&plain).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            // A mounted namespace of another kind.
            os::bind_mount(Path::new("/proc/thread-self/ns/uts"), &plain).unwrap();
            let err = NetNs::open(&plain).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            remove(&plain).unwrap();
            let err = NetNs::open(&dir.path().join("absent")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        });
    }

    #[test]
    fn create_fails_cleanly() {
        in_private_host(|| {
            let dir = tempfile::tempdir().unwrap();
            let err = NetNs::create(&dir.path().join("no/such/dir")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        });
    }

    #[test]
    fn sysctl_keys_stay_under_proc_sys() {
        for key in ["/etc/passwd", "net/../../etc/passwd", ""] {
            let err = set_sysctl(key, "1").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{key}");
        }
    }
}
