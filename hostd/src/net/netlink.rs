//! Just enough rtnetlink to configure IPv4 networking: list links, bring them
//! up, add and remove addresses and default routes.
//!
//! Messages are built and parsed here byte by byte ([`MessageBuilder`],
//! [`parse_messages`], [`parse_link`]), which keeps them unit-testable and
//! avoids a netlink crate; [`Netlink`] sends them over a `NETLINK_ROUTE`
//! socket ([`crate::os::netlink_route_socket`]) and waits for the kernel's
//! acknowledgement of each request.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::os;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_GETLINK`.
pub const RTM_GETLINK: u16 = 18;
/// `RTM_NEWADDR`.
pub const RTM_NEWADDR: u16 = 20;
/// `RTM_DELADDR`.
pub const RTM_DELADDR: u16 = 21;
/// `RTM_NEWROUTE`.
pub const RTM_NEWROUTE: u16 = 24;
/// `RTM_DELROUTE`.
pub const RTM_DELROUTE: u16 = 25;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 1;
const NLM_F_MULTI: u16 = 2;
pub(crate) const NLM_F_ACK: u16 = 4;
const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_CARRIER: u16 = 33;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;
/// `IFF_UP`.
pub const IFF_UP: u32 = 1;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 8;
/// `ARPHRD_ETHER`.
pub const ARPHRD_ETHER: u16 = 1;
/// Route protocol "static" (configured by an admin).
pub const RTPROT_STATIC: u8 = 4;
/// Route protocol "dhcp".
pub const RTPROT_DHCP: u8 = 16;

/// Errors talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] io::Error),
    /// Sending or receiving failed.
    #[error("netlink {step} failed: {source}")]
    Io {
        /// send or receive.
        step: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error("{request}: {source}")]
    Refused {
        /// What was asked.
        request: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// No answer in time.
    #[error("netlink: no answer to {0}")]
    Timeout(String),
}

/// Builds one netlink message: header, fixed payload, attributes.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl MessageBuilder {
    /// A message of `ty` with `flags` and sequence number `seq`.
    pub fn new(ty: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Self { buf }
    }

    /// Appends raw bytes (the fixed payload), padded to 4.
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Appends an attribute, padded to 4.
    pub fn attr(mut self, ty: u16, data: &[u8]) -> Self {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// The finished message with its length filled in.
    pub fn build(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg`.
pub fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = 0; // AF_UNSPEC
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// `struct ifaddrmsg` for IPv4.
pub fn ifaddrmsg(index: i32, prefix: u8) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = AF_INET;
    b[1] = prefix;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

/// `struct rtmsg` for an IPv4 route in the main table.
pub fn rtmsg(dst_len: u8, protocol: u8, flags: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = AF_INET;
    b[1] = dst_len;
    b[4] = RT_TABLE_MAIN;
    b[5] = protocol;
    b[6] = 0; // RT_SCOPE_UNIVERSE
    b[7] = RTN_UNICAST;
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b
}

/// The broadcast address of `addr/prefix`.
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = prefix_mask(prefix);
    Ipv4Addr::from(u32::from(addr) | !mask)
}

/// The netmask of a prefix length.
pub fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// Whether `gateway` lies inside `addr/prefix`.
pub fn on_link(addr: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> bool {
    let mask = prefix_mask(prefix);
    u32::from(addr) & mask == u32::from(gateway) & mask
}

/// Request to set a link up.
pub fn set_link_up(seq: u32, index: i32) -> Vec<u8> {
    MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .payload(&ifinfomsg(index, IFF_UP, IFF_UP))
        .build()
}

/// Request to add (or replace) an IPv4 address.
pub fn add_address(seq: u32, index: i32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let mut b = MessageBuilder::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    )
    .payload(&ifaddrmsg(index, prefix))
    .attr(IFA_LOCAL, &addr.octets())
    .attr(IFA_ADDRESS, &addr.octets());
    if prefix < 31 {
        b = b.attr(IFA_BROADCAST, &broadcast(addr, prefix).octets());
    }
    b.build()
}

/// Request to remove an IPv4 address.
pub fn del_address(seq: u32, index: i32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    MessageBuilder::new(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq)
        .payload(&ifaddrmsg(index, prefix))
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets())
        .build()
}

/// A default route through `gateway` on link `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    /// Output interface.
    pub index: i32,
    /// The gateway.
    pub gateway: Ipv4Addr,
    /// Preferred source address.
    pub source: Option<Ipv4Addr>,
    /// Route metric (lower wins).
    pub metric: u32,
    /// `RTPROT_DHCP` or `RTPROT_STATIC`.
    pub protocol: u8,
    /// The gateway is outside the address's subnet: mark it on-link.
    pub onlink: bool,
}

/// Request to add (or replace) a default route.
pub fn add_default_route(seq: u32, route: &DefaultRoute) -> Vec<u8> {
    let flags = if route.onlink { RTNH_F_ONLINK } else { 0 };
    let mut b = MessageBuilder::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    )
    .payload(&rtmsg(0, route.protocol, flags))
    .attr(RTA_GATEWAY, &route.gateway.octets())
    .attr(RTA_OIF, &route.index.to_ne_bytes())
    .attr(RTA_PRIORITY, &route.metric.to_ne_bytes());
    if let Some(src) = route.source {
        b = b.attr(RTA_PREFSRC, &src.octets());
    }
    b.build()
}

/// Request to delete a default route.
pub fn del_default_route(seq: u32, route: &DefaultRoute) -> Vec<u8> {
    MessageBuilder::new(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, seq)
        .payload(&rtmsg(0, route.protocol, 0))
        .attr(RTA_GATEWAY, &route.gateway.octets())
        .attr(RTA_OIF, &route.index.to_ne_bytes())
        .attr(RTA_PRIORITY, &route.metric.to_ne_bytes())
        .build()
}

/// Request to dump all links.
pub fn get_links(seq: u32) -> Vec<u8> {
    MessageBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .payload(&ifinfomsg(0, 0, 0))
        .build()
}

/// One message of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    /// Message type.
    pub ty: u16,
    /// Flags.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Splits a receive buffer into messages (stops at the first malformed one).
pub fn parse_messages(mut buf: &[u8]) -> Vec<Received<'_>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let Some(len) = u32_at(buf, 0).and_then(|l| usize::try_from(l).ok()) else {
            break;
        };
        if len < 16 || len > buf.len() {
            break;
        }
        out.push(Received {
            ty: u16_at(buf, 4).unwrap_or(0),
            flags: u16_at(buf, 6).unwrap_or(0),
            seq: u32_at(buf, 8).unwrap_or(0),
            payload: &buf[16..len],
        });
        buf = buf.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

/// Attributes `(type, data)` of an attribute area.
pub fn parse_attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16_at(buf, 0).unwrap_or(0));
        if len < 4 || len > buf.len() {
            break;
        }
        // The top bits of the type are the NESTED/BYTEORDER flags.
        out.push((u16_at(buf, 2).unwrap_or(0) & 0x3fff, &buf[4..len]));
        buf = buf.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

/// The errno of an `NLMSG_ERROR` payload (0 = acknowledgement).
pub fn parse_error(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: i32,
    /// Name (`eth0`).
    pub name: String,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `ARPHRD_*` hardware type.
    pub hw_type: u16,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// Carrier, when the kernel reports it.
    pub carrier: Option<bool>,
    /// `IFLA_INFO_KIND` of virtual links (`bridge`, `veth`, `vxlan`...).
    pub kind: Option<String>,
}

impl Link {
    /// A physical wired Ethernet link: Ethernet type, not loopback, no
    /// virtual link kind, a 6-byte MAC.
    pub fn is_wired_ethernet(&self) -> bool {
        self.hw_type == ARPHRD_ETHER
            && self.flags & IFF_LOOPBACK == 0
            && self.kind.is_none()
            && self.mac.len() == 6
    }
}

/// Parses an `RTM_NEWLINK` payload.
pub fn parse_link(payload: &[u8]) -> Option<Link> {
    let hw_type = u16_at(payload, 2)?;
    let index = i32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let flags = u32_at(payload, 8)?;
    let mut link = Link {
        index,
        name: String::new(),
        flags,
        hw_type,
        mac: Vec::new(),
        carrier: None,
        kind: None,
    };
    for (ty, data) in parse_attrs(payload.get(16..)?) {
        match ty {
            IFLA_IFNAME => {
                link.name = String::from_utf8_lossy(data)
                    .trim_end_matches('\0')
                    .to_string()
            }
            IFLA_ADDRESS => link.mac = data.to_vec(),
            IFLA_CARRIER => link.carrier = data.first().map(|c| *c != 0),
            IFLA_LINKINFO => {
                for (ity, idata) in parse_attrs(data) {
                    if ity == IFLA_INFO_KIND {
                        link.kind = Some(
                            String::from_utf8_lossy(idata)
                                .trim_end_matches('\0')
                                .to_string(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// A `NETLINK_ROUTE` connection.
pub struct Netlink {
    sock: File,
    seq: u32,
    buf: Vec<u8>,
}

/// How long to wait for the kernel's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

impl Netlink {
    /// Opens a socket.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            sock: os::netlink_route_socket().map_err(NetlinkError::Open)?,
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), NetlinkError> {
        self.sock.write_all(msg).map_err(|source| NetlinkError::Io {
            step: "send",
            source,
        })
    }

    fn recv(&mut self, what: &str) -> Result<usize, NetlinkError> {
        let ready =
            os::poll_readable(&[self.sock.as_fd()], Some(ANSWER_TIMEOUT)).map_err(|source| {
                NetlinkError::Io {
                    step: "poll",
                    source,
                }
            })?;
        if !ready.first().copied().unwrap_or(false) {
            return Err(NetlinkError::Timeout(what.to_string()));
        }
        self.sock
            .read(&mut self.buf)
            .map_err(|source| NetlinkError::Io {
                step: "receive",
                source,
            })
    }

    /// Sends a request built with sequence number `seq` and waits for its ack.
    fn request(
        &mut self,
        what: &str,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let msg = build(seq);
        self.send(&msg)?;
        loop {
            let n = self.recv(what)?;
            for m in parse_messages(&self.buf[..n]) {
                if m.seq != seq || m.ty != NLMSG_ERROR {
                    continue;
                }
                return match parse_error(m.payload) {
                    Some(0) | None => Ok(()),
                    Some(e) => Err(NetlinkError::Refused {
                        request: what.to_string(),
                        source: io::Error::from_raw_os_error(-e),
                    }),
                };
            }
        }
    }

    /// All links.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let seq = self.next_seq();
        self.send(&get_links(seq))?;
        let mut links = Vec::new();
        loop {
            let n = self.recv("link dump")?;
            for m in parse_messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(links),
                    NLMSG_ERROR => {
                        if let Some(e) = parse_error(m.payload).filter(|e| *e != 0) {
                            return Err(NetlinkError::Refused {
                                request: "link dump".into(),
                                source: io::Error::from_raw_os_error(-e),
                            });
                        }
                    }
                    RTM_NEWLINK => links.extend(parse_link(m.payload)),
                    _ => {}
                }
                if m.flags & NLM_F_MULTI == 0 && m.ty == RTM_NEWLINK {
                    return Ok(links);
                }
            }
        }
    }

    /// Sets link `index` up.
    pub fn set_up(&mut self, index: i32, name: &str) -> Result<(), NetlinkError> {
        self.request(&format!("set {name} up"), |seq| set_link_up(seq, index))
    }

    /// Adds `addr/prefix` to link `index`.
    pub fn add_address(
        &mut self,
        index: i32,
        name: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.request(&format!("add {addr}/{prefix} to {name}"), |seq| {
            add_address(seq, index, addr, prefix)
        })
    }

    /// Removes `addr/prefix` from link `index`.
    pub fn del_address(
        &mut self,
        index: i32,
        name: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.request(&format!("remove {addr}/{prefix} from {name}"), |seq| {
            del_address(seq, index, addr, prefix)
        })
    }

    /// Adds a default route.
    pub fn add_default_route(
        &mut self,
        name: &str,
        route: &DefaultRoute,
    ) -> Result<(), NetlinkError> {
        self.request(
            &format!("add default route via {} dev {name}", route.gateway),
            |seq| add_default_route(seq, route),
        )
    }

    /// Deletes a default route.
    pub fn del_default_route(
        &mut self,
        name: &str,
        route: &DefaultRoute,
    ) -> Result<(), NetlinkError> {
        self.request(
            &format!("delete default route via {} dev {name}", route.gateway),
            |seq| del_default_route(seq, route),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_up_message_layout() {
        let m = set_link_up(7, 2);
        assert_eq!(m.len(), 32);
        assert_eq!(u32_at(&m, 0), Some(32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWLINK));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(&m[20..24], &2i32.to_ne_bytes());
        assert_eq!(u32_at(&m, 24), Some(IFF_UP));
        assert_eq!(u32_at(&m, 28), Some(IFF_UP));
    }

    #[test]
    fn address_message_has_local_address_broadcast() {
        let m = add_address(1, 3, Ipv4Addr::new(10, 0, 2, 15), 24);
        let msgs = parse_messages(&m);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].ty, RTM_NEWADDR);
        assert_eq!(msgs[0].payload[0], AF_INET);
        assert_eq!(msgs[0].payload[1], 24);
        let attrs = parse_attrs(&msgs[0].payload[8..]);
        assert_eq!(
            attrs,
            [
                (IFA_LOCAL, &[10, 0, 2, 15][..]),
                (IFA_ADDRESS, &[10, 0, 2, 15][..]),
                (IFA_BROADCAST, &[10, 0, 2, 255][..])
            ]
        );
        let m = add_address(1, 3, Ipv4Addr::new(10, 0, 2, 15), 32);
        assert_eq!(parse_attrs(&parse_messages(&m)[0].payload[8..]).len(), 2);
    }

    #[test]
    fn route_message() {
        let route = DefaultRoute {
            index: 2,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            source: Some(Ipv4Addr::new(10, 0, 2, 15)),
            metric: 1024,
            protocol: RTPROT_DHCP,
            onlink: true,
        };
        let m = add_default_route(9, &route);
        let msg = &parse_messages(&m)[0];
        assert_eq!(msg.ty, RTM_NEWROUTE);
        let p = msg.payload;
        assert_eq!(
            &p[0..8],
            &[AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_DHCP, 0, RTN_UNICAST]
        );
        assert_eq!(u32_at(p, 8), Some(RTNH_F_ONLINK));
        let attrs = parse_attrs(&p[12..]);
        assert_eq!(attrs[0], (RTA_GATEWAY, &[10, 0, 2, 2][..]));
        assert_eq!(attrs[1], (RTA_OIF, &2i32.to_ne_bytes()[..]));
        assert_eq!(attrs[2], (RTA_PRIORITY, &1024u32.to_ne_bytes()[..]));
        assert_eq!(attrs[3], (RTA_PREFSRC, &[10, 0, 2, 15][..]));
    }

    #[test]
    fn parses_a_link_dump_entry() {
        let mut linkinfo = Vec::new();
        linkinfo.extend_from_slice(&10u16.to_ne_bytes());
        linkinfo.extend_from_slice(&IFLA_INFO_KIND.to_ne_bytes());
        linkinfo.extend_from_slice(b"veth\0\0\0\0");
        let m = MessageBuilder::new(RTM_NEWLINK, NLM_F_MULTI, 4)
            .payload(&{
                let mut p = ifinfomsg(5, IFF_UP, 0);
                p[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
                p
            })
            .attr(IFLA_IFNAME, b"eth0\0")
            .attr(IFLA_ADDRESS, &[0x52, 0x54, 0, 0x12, 0x34, 0x56])
            .attr(IFLA_CARRIER, &[1])
            .build();
        let mut two = m.clone();
        two.extend_from_slice(
            &MessageBuilder::new(NLMSG_DONE, NLM_F_MULTI, 4)
                .payload(&[0; 4])
                .build(),
        );
        let msgs = parse_messages(&two);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].ty, NLMSG_DONE);
        let link = parse_link(msgs[0].payload).unwrap();
        assert_eq!(link.index, 5);
        assert_eq!(link.name, "eth0");
        assert_eq!(link.carrier, Some(true));
        assert!(link.is_wired_ethernet());
        // The same with a link kind is virtual.
        let m = MessageBuilder::new(RTM_NEWLINK, 0, 1)
            .payload(&{
                let mut p = ifinfomsg(6, 0, 0);
                p[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
                p
            })
            .attr(IFLA_IFNAME, b"veth0\0")
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1])
            .attr(IFLA_LINKINFO | 0x8000, &linkinfo)
            .build();
        let link = parse_link(parse_messages(&m)[0].payload).unwrap();
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert!(!link.is_wired_ethernet());
    }

    #[test]
    fn truncated_input_does_not_panic() {
        let m = set_link_up(1, 1);
        for cut in 0..m.len() {
            let _ = parse_messages(&m[..cut]);
            let _ = parse_attrs(&m[..cut]);
            let _ = parse_link(&m[..cut]);
        }
        assert_eq!(parse_error(&(-17i32).to_ne_bytes()), Some(-17));
    }

    #[test]
    fn subnet_helpers() {
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 0, 2, 15), 24),
            Ipv4Addr::new(10, 0, 2, 255)
        );
        assert!(on_link(
            Ipv4Addr::new(10, 0, 2, 15),
            24,
            Ipv4Addr::new(10, 0, 2, 2)
        ));
        assert!(!on_link(
            Ipv4Addr::new(10, 0, 2, 15),
            32,
            Ipv4Addr::new(10, 0, 2, 2)
        ));
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(32), u32::MAX);
    }
}
