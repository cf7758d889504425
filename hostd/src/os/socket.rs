//! Sockets on [`rustix::net`]: the netlink socket of `init`'s network setup
//! and the DHCP client's UDP socket.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::net::{netlink, sockopt, AddressFamily, SocketAddrV4, SocketFlags, SocketType};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_and_udp_sockets_open() {
        netlink_route_socket().unwrap();
        let udp = udp_socket_on_device("lo", 0).unwrap();
        assert!(udp.broadcast().unwrap());
        assert!(udp_socket_on_device("no\0such", 0).is_err());
    }
}
