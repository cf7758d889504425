//! Pipes, standard descriptors, descriptor flags, and descriptors inherited
//! across `execve`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::OFlags;
use rustix::io::FdFlags;
use rustix::pipe::PipeFlags;

/// A close-on-exec, non-blocking pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(File, File)> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    Ok((read.into(), write.into()))
}

/// A close-on-exec pipe whose ends block: `(read end, write end)`.
pub fn pipe_blocking() -> io::Result<(File, File)> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    Ok((read.into(), write.into()))
}

/// `dup2(2)` onto a standard descriptor: makes `target` (0, 1 or 2) a copy
/// of `fd`, e.g. to put the console on stdin, stdout and stderr. Any other
/// `target` is refused with `EBADF`: the descriptors above 2 belong to
/// their Rust owners.
pub fn dup2(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    match target {
        0 => rustix::stdio::dup2_stdin(fd)?,
        1 => rustix::stdio::dup2_stdout(fd)?,
        2 => rustix::stdio::dup2_stderr(fd)?,
        _ => return Err(io::Error::from_raw_os_error(libc::EBADF)),
    }
    Ok(())
}

/// Sets or clears `O_NONBLOCK` on the open file description.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    let flags = if on {
        flags | OFlags::NONBLOCK
    } else {
        flags - OFlags::NONBLOCK
    };
    rustix::fs::fcntl_setfl(fd, flags)?;
    Ok(())
}

/// Sets or clears `FD_CLOEXEC` (cleared: the descriptor survives `execve`).
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = if on {
        FdFlags::CLOEXEC
    } else {
        FdFlags::empty()
    };
    rustix::io::fcntl_setfd(fd, flags)?;
    Ok(())
}

/// Whether [`take_inherited_fds`] ran in this process image.
static INHERITED_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of descriptors this process image inherited across
/// `execve` from the image before it, which named them (on the command
/// line, in a file) and cleared their close-on-exec flag for this purpose;
/// each comes back close-on-exec again, in the order asked.
///
/// This is the hand-over protocol of an upgrading zygote (like systemd's
/// `LISTEN_FDS`), and it can run once per process image: a second call
/// fails with `EALREADY`. It also refuses (`EBADF`), taking nothing, a list
/// naming a descriptor twice, one of 0, 1 and 2, one that is not open, or
/// one that is close-on-exec: every descriptor this program opens is, so
/// such a number was not inherited and may have an owner already. Clear
/// close-on-exec ([`set_cloexec`]) only on descriptors handed to the next
/// image, right before `execv`.
pub fn take_inherited_fds(fds: &[RawFd]) -> io::Result<Vec<OwnedFd>> {
    if INHERITED_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::from_raw_os_error(libc::EALREADY));
    }
    let distinct: BTreeSet<RawFd> = fds.iter().copied().collect();
    if distinct.len() != fds.len() || fds.iter().any(|&fd| fd <= 2) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    for &fd in fds {
        // SAFETY: fcntl(F_GETFD) takes a descriptor number and reads its
        // flags in the descriptor table, touching no memory of ours and
        // failing with EBADF for a number that is not open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags == -1 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::FD_CLOEXEC != 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
    }
    let mut taken = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: `fd` is open, above 2, named once, and not close-on-exec.
        // hostd opens every descriptor close-on-exec and clears the flag only
        // on those the zygote hands to the image it execs, so this one came
        // through `execve` and nothing in this image owns it yet; the
        // once-per-image guard above keeps it from being taken twice.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(owned.as_fd(), true)?;
        taken.push(owned);
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn pipes_are_cloexec_and_nonblocking_as_asked() {
        let (r, _w) = pipe().unwrap();
        let (rb, _wb) = pipe_blocking().unwrap();
        let fl = |f: &File| rustix::fs::fcntl_getfl(f).unwrap();
        let fd = |f: &File| rustix::io::fcntl_getfd(f).unwrap();
        assert!(fl(&r).contains(OFlags::NONBLOCK));
        assert!(!fl(&rb).contains(OFlags::NONBLOCK));
        assert!(fd(&r).contains(FdFlags::CLOEXEC));
        assert!(fd(&rb).contains(FdFlags::CLOEXEC));
        set_nonblocking(rb.as_fd(), true).unwrap();
        assert!(fl(&rb).contains(OFlags::NONBLOCK));
        set_nonblocking(rb.as_fd(), false).unwrap();
        assert!(!fl(&rb).contains(OFlags::NONBLOCK));
        set_cloexec(rb.as_fd(), false).unwrap();
        assert!(!fd(&rb).contains(FdFlags::CLOEXEC));
        set_cloexec(rb.as_fd(), true).unwrap();
        assert!(fd(&rb).contains(FdFlags::CLOEXEC));
    }

    #[test]
    fn dup2_only_onto_standard_descriptors() {
        let (r, _w) = pipe_blocking().unwrap();
        let err = dup2(r.as_fd(), r.as_raw_fd() + 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    /// The only test of `take_inherited_fds`: it works once per process.
    #[test]
    fn inherited_descriptors_are_taken_once() {
        let (r, mut w) = pipe_blocking().unwrap();
        // Stands in for a descriptor inherited across exec: not close-on-exec
        // and owned by nobody.
        let inherited = rustix::io::dup(&r).unwrap().into_raw_fd();
        drop(r);
        let (cloexec, _w2) = pipe_blocking().unwrap();
        let refused = [
            vec![inherited, inherited],
            vec![inherited, 1],
            vec![inherited, cloexec.as_raw_fd()],
        ];
        for fds in refused {
            // A refusal spends the once-only guard too: reset it for the test.
            INHERITED_TAKEN.store(false, Ordering::SeqCst);
            let err = take_inherited_fds(&fds).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{fds:?}");
        }
        INHERITED_TAKEN.store(false, Ordering::SeqCst);
        let mut taken = take_inherited_fds(&[inherited]).unwrap();
        let taken = File::from(taken.remove(0));
        assert!(rustix::io::fcntl_getfd(&taken)
            .unwrap()
            .contains(FdFlags::CLOEXEC));
        w.write_all(b"x").unwrap();
        drop(w);
        let mut got = String::new();
        (&taken).read_to_string(&mut got).unwrap();
        assert_eq!(got, "x");
        let again = take_inherited_fds(&[]).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EALREADY));
    }
}
