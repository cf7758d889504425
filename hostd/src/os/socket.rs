//! Sockets on [`rustix::net`]: the netlink sockets of `init`'s network setup,
//! of packet filtering (nf_tables) and of its device hotplug (kernel uevents), the DHCP client's UDP socket,
//! and the `SOCK_SEQPACKET` unix sockets
//! between the daemon and its zygote, which carry descriptors
//! (`SCM_RIGHTS`).

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    netlink, sockopt, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketAddrV4, SocketFlags, SocketType,
};

/// Most descriptors one packet carries: the zygote's answer to a batch of
/// attaches (48 containers of at most 4); the kernel's own bound
/// (`SCM_MAX_FD`) is 253.
pub const MAX_FDS: usize = 192;

/// Room for the control message of a packet with [`MAX_FDS`] descriptors.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// A `NETLINK_ROUTE` socket bound to a kernel-assigned port, as a `File`:
/// `write` sends one or more netlink messages to the kernel, `read` receives.
pub fn netlink_route_socket() -> io::Result<File> {
    // NETLINK_ROUTE is protocol 0, which rustix spells `None`.
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 0))?;
    Ok(File::from(fd))
}

/// A `NETLINK_NETFILTER` socket (nf_tables and the rest of nfnetlink) bound
/// to a kernel-assigned port, as a `File` like [`netlink_route_socket`]. Its
/// send and receive buffers are raised to `buffer` bytes (`SO_SNDBUFFORCE`,
/// `SO_RCVBUFFORCE`, falling back to the unforced options): one nf_tables
/// batch is one `sendmsg`, and the kernel queues an acknowledgement per
/// message before we read any.
pub fn netlink_netfilter_socket(buffer: usize) -> io::Result<File> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::NETFILTER),
    )?;
    if sockopt::set_socket_send_buffer_size_force(&fd, buffer).is_err() {
        sockopt::set_socket_send_buffer_size(&fd, buffer)?;
    }
    if sockopt::set_socket_recv_buffer_size_force(&fd, buffer).is_err() {
        sockopt::set_socket_recv_buffer_size(&fd, buffer)?;
    }
    rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 0))?;
    Ok(File::from(fd))
}

/// The kernel's uevent multicast group (udev listens on the same one).
const UEVENT_GROUP_KERNEL: u32 = 1;

/// A `NETLINK_KOBJECT_UEVENT` socket subscribed to the kernel's device
/// events, non-blocking, with a receive buffer of `receive_buffer` bytes
/// (`SO_RCVBUFFORCE`, which ignores `rmem_max` for a privileged process;
/// falls back to `SO_RCVBUF` otherwise). The kernel queues events from the
/// moment this returns, so open it before scanning for devices.
pub fn uevent_socket(receive_buffer: usize) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(rustix::net::netlink::KOBJECT_UEVENT),
    )?;
    if sockopt::set_socket_recv_buffer_size_force(&fd, receive_buffer).is_err() {
        sockopt::set_socket_recv_buffer_size(&fd, receive_buffer)?;
    }
    rustix::net::bind(
        &fd,
        &netlink::SocketAddrNetlink::new(0, UEVENT_GROUP_KERNEL),
    )?;
    Ok(fd)
}

/// One datagram read by [`recv_uevent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UeventPacket {
    /// Bytes stored in the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer (the rest is lost).
    pub truncated: bool,
    /// The sender is the kernel (netlink port 0), not a process.
    pub from_kernel: bool,
}

/// Reads one datagram from a [`uevent_socket`] without blocking:
/// `Ok(None)` when nothing is queued. `ENOBUFS` (events were dropped because
/// the receive buffer was full) comes back as an error.
pub fn recv_uevent(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<UeventPacket>> {
    let capacity = buf.len();
    loop {
        match rustix::net::recvfrom(sock, &mut *buf, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
            Ok((len, full, from)) => {
                let from_kernel = from
                    .and_then(|a| netlink::SocketAddrNetlink::try_from(a).ok())
                    .is_some_and(|a| a.pid() == 0);
                return Ok(Some(UeventPacket {
                    len,
                    truncated: full > capacity,
                    from_kernel,
                }));
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A UDP socket bound to `0.0.0.0:port` that only sends and receives on
/// interface `ifname` (`SO_BINDTODEVICE`, set before `bind` so one socket per
/// interface can share the port), with `SO_BROADCAST` on: what a DHCP client
/// needs before its interface has an address.
pub fn udp_socket_on_device(ifname: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    bind_to_device(fd.as_fd(), ifname)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_broadcast(&fd, true)?;
    rustix::net::bind(
        &fd,
        &SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port),
    )?;
    Ok(std::net::UdpSocket::from(fd))
}

/// Binds a TCP (or UDP) socket to `addr` without listening: the port is
/// held (no other socket can bind it) but takes no connections. hostd
/// reserves published ports this way; dropping the descriptor frees it.
pub fn reserve_port(addr: SocketAddrV4, udp: bool) -> io::Result<OwnedFd> {
    let kind = if udp {
        SocketType::DGRAM
    } else {
        SocketType::STREAM
    };
    let fd = rustix::net::socket_with(AddressFamily::INET, kind, SocketFlags::CLOEXEC, None)?;
    rustix::net::bind(&fd, &addr)?;
    Ok(fd)
}

/// `setsockopt(SO_BINDTODEVICE)`, which rustix does not offer.
fn bind_to_device(fd: BorrowedFd<'_>, ifname: &str) -> io::Result<()> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))?;
    let name_len = libc::socklen_t::try_from(name.as_bytes_with_nul().len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"))?;
    // SAFETY: the option value is the NUL-terminated interface name of
    // `name_len` bytes, alive for the call; `fd` is an open socket.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast::<libc::c_void>(),
            name_len,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The address of the unix socket at `path`.
fn unix_address(path: &Path) -> io::Result<SocketAddrUnix> {
    // sun_path holds 108 bytes, the terminating NUL included.
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= 108 || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long (max 107 bytes)", path.display()),
        ));
    }
    Ok(SocketAddrUnix::new(path)?)
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    Ok(fd)
}

/// A listening `SOCK_SEQPACKET` unix socket at `path` (which must not exist).
pub fn seqpacket_listen(path: &Path) -> io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let addr = unix_address(path)?;
    rustix::net::bind(&sock, &addr)?;
    rustix::net::listen(&sock, 4)?;
    Ok(sock)
}

/// Connects a `SOCK_SEQPACKET` socket to `path`.
pub fn seqpacket_connect(path: &Path) -> io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let addr = unix_address(path)?;
    rustix::net::connect(&sock, &addr)?;
    Ok(sock)
}

/// Accepts one connection (blocking) and answers it with the peer's uid.
pub fn accept_with_uid(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, u32)> {
    let fd = loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    let cred = sockopt::socket_peercred(&fd)?;
    Ok((fd, cred.uid.as_raw()))
}

/// The pid of a unix socket's peer (`SO_PEERCRED`), if the kernel says.
pub fn peer_pid(sock: BorrowedFd<'_>) -> Option<i32> {
    sockopt::socket_peercred(sock)
        .ok()
        .map(|cred| cred.pid.as_raw_nonzero().get())
}

/// Sets `SO_RCVTIMEO` (`None`: block forever).
pub fn set_receive_timeout(sock: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<()> {
    // rustix refuses a zero timeout, which the kernel reads as "forever".
    let timeout = timeout.filter(|t| !t.is_zero());
    sockopt::set_socket_timeout(sock, sockopt::Timeout::Recv, timeout)?;
    Ok(())
}

/// Sends `data` as one packet with `fds` attached (`SCM_RIGHTS`, at most
/// [`MAX_FDS`]).
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty()
        && (fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)))
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// Receives one packet into `buf`, with the descriptors attached to it
/// (close-on-exec). `Ok((0, []))` means the peer closed the socket.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    // A truncated packet or control message: the descriptors taken above
    // are closed on return.
    if received
        .flags
        .intersects(ReturnFlags::CTRUNC | ReturnFlags::TRUNC)
    {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok((received.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn descriptors_travel_with_the_packet() {
        let (a, b) = seqpacket_pair();
        let (r, mut w) = crate::os::pipe_blocking().unwrap();
        send_with_fds(a.as_fd(), b"hello", &[r.as_fd()]).unwrap();
        drop(r);
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let flags = rustix::io::fcntl_getfd(&fds[0]).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        w.write_all(b"x").unwrap();
        drop(w);
        let mut got = String::new();
        File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "x");
        drop(a);
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf).unwrap().0, 0);
    }

    #[test]
    fn at_most_max_fds_per_packet() {
        let (a, b) = seqpacket_pair();
        let (r, _w) = crate::os::pipe_blocking().unwrap();
        let all = [r.as_fd(); MAX_FDS];
        send_with_fds(a.as_fd(), b"full", &all).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf).unwrap().1.len(), MAX_FDS);
        let too_many = [r.as_fd(); MAX_FDS + 1];
        let err = send_with_fds(a.as_fd(), b"x", &too_many).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        // A packet larger than the buffer is an error, not a short read.
        send_with_fds(a.as_fd(), &[7; 32], &[]).unwrap();
        let err = recv_with_fds(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
    }

    #[test]
    fn listener_accepts_and_names_the_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.sock");
        let listener = seqpacket_listen(&path).unwrap();
        let client = seqpacket_connect(&path).unwrap();
        let (server, uid) = accept_with_uid(listener.as_fd()).unwrap();
        assert_eq!(uid, rustix::process::getuid().as_raw());
        send_with_fds(client.as_fd(), b"hi", &[]).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(recv_with_fds(server.as_fd(), &mut buf).unwrap().0, 2);
        set_receive_timeout(client.as_fd(), Some(Duration::from_millis(20))).unwrap();
        let timed_out = recv_with_fds(client.as_fd(), &mut buf).unwrap_err();
        assert_eq!(timed_out.kind(), io::ErrorKind::WouldBlock);
        set_receive_timeout(client.as_fd(), Some(Duration::ZERO)).unwrap();
        set_receive_timeout(client.as_fd(), None).unwrap();
        assert!(seqpacket_connect(&dir.path().join("none")).is_err());
        let long = dir.path().join("x".repeat(200));
        assert!(seqpacket_listen(&long)
            .unwrap_err()
            .to_string()
            .contains("too long"));
    }

    #[test]
    fn netlink_and_udp_sockets_open() {
        netlink_route_socket().unwrap();
        netlink_netfilter_socket(1 << 20).unwrap();
        // Binding the uevent group needs no privilege; an empty queue is None.
        let uevents = uevent_socket(1 << 20).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(recv_uevent(uevents.as_fd(), &mut buf).unwrap(), None);
        let udp = udp_socket_on_device("lo", 0).unwrap();
        assert!(udp.broadcast().unwrap());
        assert!(udp_socket_on_device("no\0such", 0).is_err());
    }
}
