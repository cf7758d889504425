//! The only `unsafe` of the containers module: `fork` and `execv` for the
//! zygote, its unix sockets with `SCM_RIGHTS` descriptor passing, and the
//! `epoll`/`eventfd` calls of the monitor.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// Control buffer: room for one `cmsghdr` with [`MAX_FDS`] ints, 8-aligned.
type ControlBuf = [u64; 8];

fn check(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// `fork(2)`: `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// # Safety
///
/// The calling process must have exactly one thread, so the child is a full
/// copy (no lock held by a thread that does not exist in the child).
pub unsafe fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller guarantees the process is single-threaded.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Sends `data` as one packet with `fds` attached (`SCM_RIGHTS`).
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut control: ControlBuf = [0; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = u32::try_from(std::mem::size_of_val(fds)).unwrap_or(u32::MAX);
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `space` bytes inside `control` (at most
        // 16 + 4 * MAX_FDS rounded up = 32 <= 64), so CMSG_FIRSTHDR returns a
        // header inside it and CMSG_DATA has room for fds.len() ints; the
        // writes are unaligned-safe.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            let out = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                out.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points to the live `iov` (over `data`) and `control`.
    let sent = check(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    if sent != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// Receives one packet into `buf`, with the descriptors attached to it
/// (close-on-exec). `Ok((0, []))` means the peer closed the socket.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control: ControlBuf = [0; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<ControlBuf>();
    let n = loop {
        // SAFETY: `msg` points to the live `iov` (over `buf`) and `control`.
        let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match check(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR and
    // CMSG_NXTHDR stay inside it; each SCM_RIGHTS payload is an array of new
    // descriptors that nobody else owns.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header)
                    / std::mem::size_of::<libc::c_int>();
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok((n, fds))
}

fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor a successful call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` is a new descriptor owned by nobody else (checked >= 0 by
    // the caller through `check_int`).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn unix_address(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long (max 107 bytes)", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = check_int(unsafe {
        libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)
    })?;
    Ok(owned(fd))
}

/// A listening `SOCK_SEQPACKET` unix socket at `path` (which must not exist).
pub fn seqpacket_listen(path: &Path) -> io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let (addr, len) = unix_address(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    check_int(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    // SAFETY: plain listen(2) on our socket.
    check_int(unsafe { libc::listen(sock.as_raw_fd(), 4) })?;
    Ok(sock)
}

/// Connects a `SOCK_SEQPACKET` socket to `path`.
pub fn seqpacket_connect(path: &Path) -> io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let (addr, len) = unix_address(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    check_int(unsafe {
        libc::connect(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    Ok(sock)
}

/// Accepts one connection (blocking) and answers it with the peer's uid.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, libc::uid_t)> {
    let fd = loop {
        // SAFETY: accept4 with no address buffer.
        let ret = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        match check_int(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break owned(other?),
        }
    };
    // SAFETY: ucred is plain data.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` has room for `len` bytes, as SO_PEERCRED fills.
    check_int(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    })?;
    Ok((fd, cred.uid))
}

/// Sets `SO_RCVTIMEO` (`None`: block forever).
pub fn set_receive_timeout(sock: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<()> {
    let t = timeout.unwrap_or_default();
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(t.subsec_micros()),
    };
    // SAFETY: `tv` is a valid timeval of the given size.
    check_int(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Sets or clears `O_NONBLOCK` on the open file description.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL on a valid descriptor.
    let flags = check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: fcntl F_SETFL on a valid descriptor.
    check_int(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// Sets or clears `FD_CLOEXEC`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl F_SETFD on a descriptor the caller owns.
    check_int(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) })?;
    Ok(())
}

/// Replaces the process image (`execv`); returns only on failure.
pub fn execv(program: &Path, args: &[String]) -> io::Error {
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    let Ok(args) = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: `path` and every argv entry are NUL-terminated strings that
    // outlive the call; argv ends with a null pointer.
    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
    io::Error::last_os_error()
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (first trying to raise
/// both to `want`): each container holds a few descriptors in hostd.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let set =
        |soft, hard| crate::runtime::sys::setrlimit(libc::RLIMIT_NOFILE as libc::c_int, soft, hard);
    // Failure (no CAP_SYS_RESOURCE) only means the hard limit stays.
    if lim.rlim_max < want && set(want, want).is_ok() {
        return want;
    }
    let _ = set(lim.rlim_max, lim.rlim_max);
    lim.rlim_max
}

/// An `epoll` instance.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = check_int(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll(owned(fd)))
    }

    /// Watches `fd` for input (level-triggered), tagged `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event; both descriptors are open.
        check_int(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        })?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: BorrowedFd<'_>) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Waits up to `timeout` (`None`: forever) and answers the ready tokens.
    pub fn wait(&self, timeout: Option<Duration>, out: &mut Vec<u64>) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let ms = timeout.map_or(-1, |t| {
            libc::c_int::try_from(t.as_millis().max(u128::from(t.subsec_nanos() > 0)))
                .unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: `events` has room for 64 entries.
        let ret = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), 64, ms) };
        out.clear();
        match check_int(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
            Ok(n) => {
                out.extend(events[..n as usize].iter().map(|e| e.u64));
                Ok(())
            }
        }
    }
}

/// An `eventfd` used to wake the monitor.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall.
        let fd = check_int(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        Ok(EventFd(owned(fd)))
    }

    /// The descriptor (to watch).
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// Adds one.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        unsafe { libc::write(self.0.as_raw_fd(), std::ptr::addr_of!(one).cast(), 8) };
    }

    /// Resets the counter.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(self.0.as_raw_fd(), std::ptr::addr_of_mut!(value).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_travel_with_the_packet() {
        let (a, b) = crate::runtime::sys::seqpacket_pair().unwrap();
        let (r, mut w) = crate::os::pipe_blocking().unwrap();
        send(a.as_fd(), b"hello", &[r.as_fd()]).unwrap();
        drop(r);
        let mut buf = [0u8; 16];
        let (n, fds) = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        w.write_all(b"x").unwrap();
        drop(w);
        let mut got = String::new();
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "x");
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf).unwrap().0, 0);
    }

    #[test]
    fn listener_accepts_and_names_the_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.sock");
        let listener = seqpacket_listen(&path).unwrap();
        let client = seqpacket_connect(&path).unwrap();
        let (server, uid) = accept(listener.as_fd()).unwrap();
        // SAFETY: getuid cannot fail.
        assert_eq!(uid, unsafe { libc::getuid() });
        send(client.as_fd(), b"hi", &[]).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(recv(server.as_fd(), &mut buf).unwrap().0, 2);
        set_receive_timeout(client.as_fd(), Some(Duration::from_millis(20))).unwrap();
        assert!(recv(client.as_fd(), &mut buf).is_err(), "timeout");
        assert!(seqpacket_connect(&dir.path().join("none")).is_err());
        let long = dir.path().join("x".repeat(200));
        assert!(seqpacket_listen(&long)
            .unwrap_err()
            .to_string()
            .contains("too long"));
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
