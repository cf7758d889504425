//! The mount namespace containers copy theirs from, without the host's
//! network namespace files.
//!
//! `clone(CLONE_NEWNS)` starts a container's mount namespace as a copy of
//! its creator's whole mount table, and the init drops the copies again
//! with the old root at `pivot_root`. A host of many networked containers
//! has a network namespace file bind-mounted in its table for each (hostd's
//! under `/run/hostd/netns`, dockerd's under `/var/run/docker/netns`), so
//! every start copies and frees one mount per networked container: work
//! that grows with the containers.
//!
//! A [`MountSource`] is a namespace made once, as a slave of the host's
//! (`rslave`): every mount the host makes later reaches it, as it would
//! have reached a copy made at the start, and none of its own goes back.
//! The host's `nsfs` mounts are detached from it when it is made and, as
//! new ones propagate in, before each start ([`MountSource::prune`]), one
//! unmount per namespace file over its life. A creator enters it just for
//! the `clone` ([`MountSource::enter`], [`MountSource::leave`]): paths it
//! opens itself (the namespace files it joins) are resolved at home.
//!
//! Propagation needs the host's mounts to be shared (`shared:N` in
//! mountinfo), as systemd and mkhost's init leave them. On a host whose
//! root is private, a copy made once would miss later mounts (a disk
//! mounted under a bind-mount source), so [`MountSource::new`] declines
//! and containers copy the host's table, as runc's do.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::sys;
use crate::os::{parse_mountinfo, root_is_shared};

/// Why no mount source was made.
#[derive(Debug, thiserror::Error)]
pub enum MountSourceError {
    /// The host's root mount does not propagate.
    #[error(
        "the host's root mount is private (not shared): containers copy the host's mount table"
    )]
    NotShared,
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// Which step.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn sys_error(what: &'static str) -> impl FnOnce(sys::Errno) -> MountSourceError {
    move |e| MountSourceError::Sys {
        what,
        source: io::Error::from_raw_os_error(e.0),
    }
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> MountSourceError {
    move |source| MountSourceError::Sys { what, source }
}

/// A mount namespace without network namespace files, held open (no
/// process lives in it), and the way back to the caller's.
#[derive(Debug)]
pub struct MountSource {
    /// The namespace.
    clean: OwnedFd,
    /// Its mount table, polled (`POLLPRI`) for changes. The creators share
    /// it (forked from one spawner): one of them sees a change, and the
    /// others copy a file or two until the next.
    table: File,
    /// The caller's own mount namespace.
    home: OwnedFd,
    /// The caller's working directory (entering a mount namespace moves it
    /// to that namespace's root).
    cwd: OwnedFd,
}

impl MountSource {
    /// Makes it from the calling process's mount namespace, and comes back.
    /// The process must have a single thread (`unshare` and `setns` of a
    /// mount namespace refuse a shared file system context).
    pub fn new() -> Result<MountSource, MountSourceError> {
        let home_table = std::fs::read_to_string("/proc/thread-self/mountinfo")
            .map_err(io_error("reading the host's mount table"))?;
        if !root_is_shared(&home_table) {
            return Err(MountSourceError::NotShared);
        }
        let home = open_namespace().map_err(io_error("opening the host's mount namespace"))?;
        let cwd = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(".")
            .map_err(io_error("opening the working directory"))?;
        sys::unshare(libc::CLONE_NEWNS).map_err(sys_error("unshare(CLONE_NEWNS)"))?;
        let made = Self::set_up_here();
        let back = return_home(home.as_raw_fd(), cwd.as_raw_fd());
        let (clean, table) = made?;
        back?;
        Ok(MountSource {
            clean,
            table,
            home,
            cwd: cwd.into(),
        })
    }

    /// In the new namespace: makes it a slave of the host's, detaches the
    /// host's network namespace files from it, and opens it and its mount
    /// table.
    fn set_up_here() -> Result<(OwnedFd, File), MountSourceError> {
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_SLAVE, None)
            .map_err(sys_error("making the mounts slaves of the host's"))?;
        detach_netns_files_here()?;
        let clean = open_namespace().map_err(io_error("opening the new mount namespace"))?;
        let table = File::open("/proc/thread-self/mountinfo")
            .map_err(io_error("opening the new namespace's mount table"))?;
        Ok((clean, table))
    }

    /// Detaches the `nsfs` mounts that propagated in since the last call:
    /// nothing but a `poll` when its table did not change. Single thread,
    /// as for [`MountSource::new`].
    pub fn prune(&self) -> Result<(), MountSourceError> {
        if !self.changed() {
            return Ok(());
        }
        self.enter()?;
        let detached = detach_netns_files_here();
        self.leave()?;
        detached
    }

    /// Whether its mount table changed since the last look (`POLLPRI`).
    fn changed(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.table, PollFlags::PRI)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // An error (none is expected of a 0 timeout) counts as a change:
        // the table is read again.
        rustix::event::poll(&mut fds, Some(&now))
            .map_or(true, |_| fds[0].revents().contains(PollFlags::PRI))
    }

    /// Moves the calling thread into the namespace (its root and working
    /// directory with it). Single thread.
    pub fn enter(&self) -> Result<(), MountSourceError> {
        sys::setns(self.clean.as_raw_fd(), libc::CLONE_NEWNS)
            .map_err(sys_error("entering the containers' mount namespace"))
    }

    /// Moves the calling thread back to its own namespace and working
    /// directory.
    pub fn leave(&self) -> Result<(), MountSourceError> {
        return_home(self.home.as_raw_fd(), self.cwd.as_raw_fd())
    }
}

/// Moves the calling thread into mount namespace `home` and working
/// directory `cwd`.
fn return_home(home: RawFd, cwd: RawFd) -> Result<(), MountSourceError> {
    sys::setns(home, libc::CLONE_NEWNS)
        .and_then(|()| sys::fchdir(cwd))
        .map_err(sys_error("returning to the host's mount namespace"))
}

/// Detaches every `nsfs` mount of the calling thread's mount namespace,
/// read from a table opened here: the creators forked from one spawner
/// share [`MountSource`]'s own descriptor, and with it its file offset.
fn detach_netns_files_here() -> Result<(), MountSourceError> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .map_err(io_error("reading the containers' mount table"))?;
    parse_mountinfo(&text)
        .into_iter()
        .filter(|mount| mount.fstype == "nsfs")
        .filter_map(|mount| std::ffi::CString::new(mount.target).ok())
        .try_for_each(|target| match sys::umount2(&target, libc::MNT_DETACH) {
            // Gone meanwhile (the host unmounted it, and that propagated),
            // or under another detached one.
            Err(sys::Errno(libc::EINVAL | libc::ENOENT)) | Ok(()) => Ok(()),
            Err(e) => Err(sys_error("detaching a network namespace file")(e)),
        })
}

/// The calling thread's mount namespace.
fn open_namespace() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/thread-self/ns/mnt")?.into())
}
