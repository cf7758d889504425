//! Namespaces of the calling thread: leaving them for new ones (`unshare`),
//! entering a network namespace by descriptor (`setns`), and asking an nsfs
//! descriptor which kind of namespace it is.
//!
//! Every call here changes or inspects the *calling thread* only: network and
//! mount namespaces are per-thread in Linux, so a short-lived or scoped thread
//! can work in another namespace while the rest of the process stays put.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub use rustix::thread::UnshareFlags;

/// `NSFS_MAGIC`: the `f_type` of a namespace file (`/proc/PID/ns/*` and its
/// bind mounts).
pub const NSFS_MAGIC: i64 = 0x6e73_6673;

/// `NS_GET_NSTYPE`, `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// `unshare(2)` on the calling thread: moves it into new namespaces of the
/// kinds in `flags`. Refuses (`EINVAL`) `UnshareFlags::FILES`, which would
/// split the descriptor table under the rest of the process.
pub fn unshare(flags: UnshareFlags) -> io::Result<()> {
    if flags.contains(UnshareFlags::FILES) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: rustix marks unshare unsafe only because CLONE_FILES can leave
    // other threads holding descriptor numbers that no longer mean the same
    // file in this one; CLONE_FILES is refused above, and the namespace
    // flags change nothing another thread can observe through memory.
    unsafe { rustix::thread::unshare_unsafe(flags) }?;
    Ok(())
}

/// `setns(2)` on the calling thread into the network namespace `ns` (a
/// `/proc/PID/ns/net` descriptor or a bind mount of one); fails with `EINVAL`
/// if it is another kind of namespace.
pub fn enter_net_ns(ns: BorrowedFd<'_>) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        ns,
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    Ok(())
}

/// The `CLONE_NEW*` constant of the namespace behind the nsfs descriptor
/// `ns` (`ioctl(NS_GET_NSTYPE)`); `ENOTTY` if it is not a namespace file.
pub fn namespace_type(ns: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the namespace
    // behind the descriptor; a descriptor of another kind answers ENOTTY.
    let ty = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE) };
    if ty < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn unshare_refuses_the_descriptor_table() {
        let err = unshare(UnshareFlags::FILES | UnshareFlags::NEWNET).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn namespace_type_names_the_kind() {
        let net = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        assert_eq!(namespace_type(net.as_fd()).unwrap(), libc::CLONE_NEWNET);
        let uts = std::fs::File::open("/proc/thread-self/ns/uts").unwrap();
        assert_eq!(namespace_type(uts.as_fd()).unwrap(), libc::CLONE_NEWUTS);
        // Not a network namespace: setns refuses it without moving.
        assert!(enter_net_ns(uts.as_fd()).is_err());
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(
            namespace_type(file.as_fd()).unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
    }
}
