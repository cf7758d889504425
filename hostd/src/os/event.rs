//! Waiting for descriptors with `poll`, on [`rustix::event`].

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// `poll(2)` for readability: waits until one of `fds` is readable (or hung up)
/// or `timeout` passes (`None` = forever). Returns one flag per descriptor; all
/// false on timeout or when interrupted by a signal.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pollfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timeout = timeout.map(timespec);
    match rustix::event::poll(&mut pollfds, timeout.as_ref()) {
        Ok(_) => {}
        Err(Errno::INTR) => return Ok(vec![false; fds.len()]),
        Err(e) => return Err(e.into()),
    }
    let ready = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
    Ok(pollfds
        .iter()
        .map(|p| p.revents().intersects(ready))
        .collect())
}

/// `timeout` as a `Timespec`, at most `c_int::MAX` milliseconds (~24 days)
/// as `poll(2)` takes.
fn timespec(timeout: Duration) -> Timespec {
    let max = Duration::from_millis(libc::c_int::MAX.unsigned_abs().into());
    let timeout = timeout.min(max);
    Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn pipe_poll_sees_written_byte() {
        let (r, mut w) = crate::os::pipe().unwrap();
        let ready = poll_readable(&[r.as_fd()], Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, vec![false]);
        w.write_all(b"x").unwrap();
        let ready = poll_readable(&[r.as_fd()], Some(Duration::from_secs(1))).unwrap();
        assert_eq!(ready, vec![true]);
        drop(w);
        let (r2, _w2) = crate::os::pipe().unwrap();
        let ready = poll_readable(&[r2.as_fd(), r.as_fd()], Some(Duration::MAX)).unwrap();
        assert_eq!(ready, vec![false, true], "hang-up counts as readable");
    }

    #[test]
    fn long_timeouts_are_clamped() {
        let t = timespec(Duration::MAX);
        assert_eq!(t.tv_sec, i64::from(libc::c_int::MAX) / 1000);
        let t = timespec(Duration::from_micros(1500));
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 1_500_000));
    }
}
