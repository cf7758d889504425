//! Waiting for descriptors: `poll` for a few, an `epoll` set for many, and
//! an `eventfd` to wake a waiter, on [`rustix::event`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{epoll, EventfdFlags, PollFd, PollFlags, Timespec};
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
/// as `poll(2)` and `epoll_wait(2)` take.
fn timespec(timeout: Duration) -> Timespec {
    let max = Duration::from_millis(libc::c_int::MAX.unsigned_abs().into());
    let timeout = timeout.min(max);
    Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    }
}

/// An `epoll` instance.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll(epoll::create(epoll::CreateFlags::CLOEXEC)?))
    }

    /// Watches `fd` for input (level-triggered), tagged `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let data = epoll::EventData::new_u64(token);
        epoll::add(&self.0, fd, data, epoll::EventFlags::IN)?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: BorrowedFd<'_>) {
        let _ = epoll::delete(&self.0, fd);
    }

    /// Waits up to `timeout` (`None`: forever; a fraction of a millisecond
    /// counts as one) and answers the ready tokens.
    pub fn wait(&self, timeout: Option<Duration>, out: &mut Vec<u64>) -> io::Result<()> {
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 64];
        let timeout = timeout.map(timespec);
        out.clear();
        match epoll::wait(&self.0, &mut events[..], timeout.as_ref()) {
            Ok(n) => {
                out.extend(events[..n].iter().map(|e| e.data.u64()));
                Ok(())
            }
            Err(Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// An `eventfd` used to wake a thread waiting in [`Epoll::wait`].
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
        Ok(EventFd(rustix::event::eventfd(0, flags)?))
    }

    /// The descriptor (to watch).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Adds one.
    pub fn notify(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Resets the counter.
    pub fn drain(&self) {
        let mut value = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    #[test]
    fn epoll_reports_ready_tokens() {
        let ep = Epoll::new().unwrap();
        let ev = EventFd::new().unwrap();
        ep.add(ev.fd(), 7).unwrap();
        let mut ready = Vec::new();
        ep.wait(Some(Duration::from_millis(1)), &mut ready).unwrap();
        assert!(ready.is_empty());
        ev.notify();
        ep.wait(Some(Duration::from_secs(1)), &mut ready).unwrap();
        assert_eq!(ready, [7]);
        ev.drain();
        ep.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert!(ready.is_empty());
        ep.delete(ev.fd());
    }
}
