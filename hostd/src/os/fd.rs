//! Pipes and the standard descriptors.

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    #[test]
    fn pipes_are_cloexec_and_nonblocking_as_asked() {
        use rustix::fs::OFlags;
        use rustix::io::FdFlags;
        let (r, _w) = pipe().unwrap();
        let (rb, _wb) = pipe_blocking().unwrap();
        let fl = |f: &File| rustix::fs::fcntl_getfl(f).unwrap();
        let fd = |f: &File| rustix::io::fcntl_getfd(f).unwrap();
        assert!(fl(&r).contains(OFlags::NONBLOCK));
        assert!(!fl(&rb).contains(OFlags::NONBLOCK));
        assert!(fd(&r).contains(FdFlags::CLOEXEC));
        assert!(fd(&rb).contains(FdFlags::CLOEXEC));
    }

    #[test]
    fn dup2_only_onto_standard_descriptors() {
        let (r, _w) = pipe_blocking().unwrap();
        let err = dup2(r.as_fd(), r.as_raw_fd() + 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
