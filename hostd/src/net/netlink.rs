//! Just enough rtnetlink to configure IPv4 networking: list links, bring them
//! up, add and remove addresses and routes, create veth pairs and macvlans
//! (straight into another network namespace) and delete links.
//!
//! Messages are built and parsed here byte by byte ([`MessageBuilder`],
//! [`parse_messages`], [`parse_link`]), which keeps them unit-testable and
//! avoids a netlink crate; [`Netlink`] sends them over a `NETLINK_ROUTE`
//! socket ([`crate::os::netlink_route_socket`]) and waits for the kernel's
//! acknowledgement of each request.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use crate::os;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`.
pub const RTM_DELLINK: u16 = 17;
/// `RTM_GETLINK`.
pub const RTM_GETLINK: u16 = 18;
/// `RTM_NEWADDR`.
pub const RTM_NEWADDR: u16 = 20;
/// `RTM_DELADDR`.
pub const RTM_DELADDR: u16 = 21;
/// `RTM_GETADDR`.
pub const RTM_GETADDR: u16 = 22;
/// `RTM_NEWROUTE`.
pub const RTM_NEWROUTE: u16 = 24;
/// `RTM_DELROUTE`.
pub const RTM_DELROUTE: u16 = 25;
/// `RTM_GETROUTE`.
pub const RTM_GETROUTE: u16 = 26;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 1;
#[cfg(test)]
const NLM_F_MULTI: u16 = 2;
pub(crate) const NLM_F_ACK: u16 = 4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_CARRIER: u16 = 33;
const VETH_INFO_PEER: u16 = 1;
const IFLA_MACVLAN_MODE: u16 = 1;
const MACVLAN_MODE_BRIDGE: u32 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RTN_UNREACHABLE: u8 = 7;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
/// Matches any scope when deleting a route.
const RT_SCOPE_NOWHERE: u8 = 255;
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
/// Route protocol of the routes hostd owns (container /32 routes, network
/// `unreachable` routes), so reconciliation can tell them from everyone
/// else's. 200 is free in iproute2's `rt_protos` (which names 0-18, 42, 99
/// and 186-192) and in the kernel's `RTPROT_*` list; `ip route` shows it as
/// `proto 200`.
pub const RTPROT_MKHOST: u8 = 200;

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
    /// A link that must exist does not.
    #[error("{what} does not exist: {hint}")]
    NoLink {
        /// The link and its role (`NIC eth7 for a direct network`).
        what: String,
        /// What to check.
        hint: &'static str,
    },
    /// A step outside netlink failed (entering a namespace, a sysctl).
    #[error("{what}: {source}")]
    System {
        /// What was done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// The errno of a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
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

    /// Appends a nested attribute whose content is `inner` (built with
    /// [`attr_bytes`]). Like iproute2, without `NLA_F_NESTED`: the kernel's
    /// link attributes are parsed leniently, and `VETH_INFO_PEER` is not a
    /// plain nest (it starts with an `ifinfomsg`).
    pub fn nested(self, ty: u16, inner: &[u8]) -> Self {
        self.attr(ty, inner)
    }

    /// The finished message with its length filled in.
    pub fn build(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One attribute as bytes, padded to 4: the content of a nested attribute is
/// a concatenation of these.
pub fn attr_bytes(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(align4(4 + data.len()));
    let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(data);
    b.resize(align4(b.len()), 0);
    b
}

fn name_bytes(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.push(0);
    b
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

/// Request to rename link `index` (which must be down).
pub fn rename_link(seq: u32, index: i32, name: &str) -> Vec<u8> {
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .payload(&ifinfomsg(index, 0, 0))
        .attr(IFLA_IFNAME, &ifname)
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

/// Request for the one link named `name` (answered by an `RTM_NEWLINK`,
/// then the acknowledgement; `ENODEV` if there is none).
pub fn get_link_by_name(seq: u32, name: &str) -> Vec<u8> {
    MessageBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .payload(&ifinfomsg(0, 0, 0))
        .attr(IFLA_IFNAME, &name_bytes(name))
        .build()
}

/// Request to create a veth pair: `host` in the socket's namespace, `peer`
/// straight in the namespace `peer_netns` (a descriptor number of the
/// sending process), both with `mtu` if given. Fails with `EEXIST` instead
/// of touching an existing link.
pub fn new_veth(seq: u32, host: &str, peer: &str, peer_netns: i32, mtu: Option<u32>) -> Vec<u8> {
    // VETH_INFO_PEER holds an ifinfomsg followed by the peer's attributes.
    let mut peer_info = ifinfomsg(0, 0, 0).to_vec();
    peer_info.extend(attr_bytes(IFLA_IFNAME, &name_bytes(peer)));
    peer_info.extend(attr_bytes(IFLA_NET_NS_FD, &peer_netns.to_ne_bytes()));
    if let Some(mtu) = mtu {
        peer_info.extend(attr_bytes(IFLA_MTU, &mtu.to_ne_bytes()));
    }
    let data = attr_bytes(VETH_INFO_PEER, &peer_info);
    let mut linkinfo = attr_bytes(IFLA_INFO_KIND, b"veth");
    linkinfo.extend(attr_bytes(IFLA_INFO_DATA, &data));
    let mut b = MessageBuilder::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
    )
    .payload(&ifinfomsg(0, 0, 0))
    .attr(IFLA_IFNAME, &name_bytes(host));
    if let Some(mtu) = mtu {
        b = b.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    b.nested(IFLA_LINKINFO, &linkinfo).build()
}

/// Request to create a macvlan in bridge mode on link `parent` (an index in
/// the socket's namespace), created straight in the namespace `netns`
/// (a descriptor number of the sending process), with `mac` if given.
pub fn new_macvlan(seq: u32, name: &str, parent: i32, netns: i32, mac: Option<[u8; 6]>) -> Vec<u8> {
    let data = attr_bytes(IFLA_MACVLAN_MODE, &MACVLAN_MODE_BRIDGE.to_ne_bytes());
    let mut linkinfo = attr_bytes(IFLA_INFO_KIND, b"macvlan");
    linkinfo.extend(attr_bytes(IFLA_INFO_DATA, &data));
    let mut b = MessageBuilder::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
    )
    .payload(&ifinfomsg(0, 0, 0))
    .attr(IFLA_IFNAME, &name_bytes(name))
    .attr(IFLA_LINK, &parent.to_ne_bytes())
    .attr(IFLA_NET_NS_FD, &netns.to_ne_bytes());
    if let Some(mac) = mac {
        b = b.attr(IFLA_ADDRESS, &mac);
    }
    b.nested(IFLA_LINKINFO, &linkinfo).build()
}

/// Request to delete link `index` (a veth's peer goes with it).
pub fn del_link(seq: u32, index: i32) -> Vec<u8> {
    MessageBuilder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .payload(&ifinfomsg(index, 0, 0))
        .build()
}

/// Request to delete the link named `name` (`ENODEV` if there is none).
pub fn del_link_by_name(seq: u32, name: &str) -> Vec<u8> {
    MessageBuilder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .payload(&ifinfomsg(0, 0, 0))
        .attr(IFLA_IFNAME, &name_bytes(name))
        .build()
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Its prefix length (0 for the default route).
    pub prefix: u8,
    /// Where it goes.
    pub kind: RouteKind,
    /// `RTPROT_*`: who owns it ([`RTPROT_MKHOST`] for hostd's).
    pub protocol: u8,
}

/// Where a [`Route`] sends packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// Straight out of link `oif`, no gateway (`dev X scope link`).
    Link {
        /// Output interface index.
        oif: i32,
    },
    /// Through `gateway` on link `oif` (scope universe).
    Via {
        /// Output interface index.
        oif: i32,
        /// The next hop.
        gateway: Ipv4Addr,
    },
    /// Refused with "network unreachable" (`unreachable DST`).
    Unreachable,
}

/// `struct rtmsg` with every field chosen.
pub fn rtmsg_with(dst_len: u8, protocol: u8, scope: u8, ty: u8, flags: u32) -> [u8; 12] {
    let mut b = rtmsg(dst_len, protocol, flags);
    b[6] = scope;
    b[7] = ty;
    b
}

fn route_message(ty: u16, flags: u16, seq: u32, route: &Route, scope: Option<u8>) -> Vec<u8> {
    let (natural_scope, rtn, oif, gateway) = match route.kind {
        RouteKind::Link { oif } => (RT_SCOPE_LINK, RTN_UNICAST, oif, None),
        RouteKind::Via { oif, gateway } => (RT_SCOPE_UNIVERSE, RTN_UNICAST, oif, Some(gateway)),
        RouteKind::Unreachable => (RT_SCOPE_UNIVERSE, RTN_UNREACHABLE, 0, None),
    };
    let mut b = MessageBuilder::new(ty, flags, seq).payload(&rtmsg_with(
        route.prefix,
        route.protocol,
        scope.unwrap_or(natural_scope),
        rtn,
        0,
    ));
    if route.prefix > 0 {
        b = b.attr(RTA_DST, &route.dst.octets());
    }
    if let Some(gw) = gateway {
        b = b.attr(RTA_GATEWAY, &gw.octets());
    }
    if oif != 0 {
        b = b.attr(RTA_OIF, &oif.to_ne_bytes());
    }
    b.build()
}

/// Request to add a route, replacing one to the same destination (same
/// prefix, TOS and metric), so adding twice is harmless.
pub fn new_route(seq: u32, route: &Route) -> Vec<u8> {
    route_message(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        route,
        None,
    )
}

/// Request to delete a route: matches destination, type, protocol and the
/// output link (an `oif` of 0 matches any), whatever the scope.
pub fn del_route(seq: u32, route: &Route) -> Vec<u8> {
    route_message(
        RTM_DELROUTE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        route,
        Some(RT_SCOPE_NOWHERE),
    )
}

/// Request to dump the IPv4 routes.
pub fn get_routes(seq: u32) -> Vec<u8> {
    MessageBuilder::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .payload(&rtmsg_with(0, 0, 0, 0, 0))
        .build()
}

/// Request to dump the IPv4 addresses.
pub fn get_addresses(seq: u32) -> Vec<u8> {
    MessageBuilder::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .payload(&ifaddrmsg(0, 0))
        .build()
}

/// An IPv4 address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Interface index.
    pub index: i32,
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = data.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

fn i32_of(data: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(0..4)?.try_into().ok()?))
}

/// Parses an `RTM_NEWROUTE` payload; `None` for what [`Route`] cannot say
/// (other families and tables, multipath, blackhole, local and broadcast
/// routes).
pub fn parse_route(payload: &[u8]) -> Option<Route> {
    let head = payload.get(0..12)?;
    if head[0] != AF_INET {
        return None;
    }
    let (prefix, rtm_table, protocol, rtn) = (head[1], head[4], head[5], head[7]);
    let mut table = u32::from(rtm_table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    let mut gateway = None;
    for (ty, data) in parse_attrs(&payload[12..]) {
        match ty {
            RTA_DST => dst = ipv4(data)?,
            RTA_OIF => oif = i32_of(data),
            RTA_GATEWAY => gateway = ipv4(data),
            RTA_TABLE => table = u32_at(data, 0)?,
            _ => {}
        }
    }
    if table != u32::from(RT_TABLE_MAIN) {
        return None;
    }
    let kind = match (rtn, oif, gateway) {
        (RTN_UNREACHABLE, _, _) => RouteKind::Unreachable,
        (RTN_UNICAST, Some(oif), Some(gateway)) => RouteKind::Via { oif, gateway },
        (RTN_UNICAST, Some(oif), None) => RouteKind::Link { oif },
        _ => return None,
    };
    Some(Route {
        dst,
        prefix,
        kind,
        protocol,
    })
}

/// Parses an `RTM_NEWADDR` payload (IPv4 only).
pub fn parse_address(payload: &[u8]) -> Option<Address> {
    let head = payload.get(0..8)?;
    if head[0] != AF_INET {
        return None;
    }
    let prefix = head[1];
    let index = i32_of(&head[4..8])?;
    let mut local = None;
    let mut address = None;
    for (ty, data) in parse_attrs(&payload[8..]) {
        match ty {
            IFA_LOCAL => local = ipv4(data),
            IFA_ADDRESS => address = ipv4(data),
            _ => {}
        }
    }
    Some(Address {
        index,
        address: local.or(address)?,
        prefix,
    })
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

/// A route as `ip route` would print it, for messages.
pub fn describe(route: &Route) -> String {
    let dst = format!("{}/{}", route.dst, route.prefix);
    match route.kind {
        RouteKind::Link { oif } => format!("{dst} dev #{oif} scope link"),
        RouteKind::Via { oif, gateway } => format!("{dst} via {gateway} dev #{oif}"),
        RouteKind::Unreachable => format!("unreachable {dst}"),
    }
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

    /// Sends a request and collects the answers of type `reply` that
    /// `parse` accepts, until the dump's `NLMSG_DONE` or the request's
    /// acknowledgement.
    fn collect<T>(
        &mut self,
        what: &str,
        build: impl FnOnce(u32) -> Vec<u8>,
        reply: u16,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, NetlinkError> {
        let seq = self.next_seq();
        let msg = build(seq);
        self.send(&msg)?;
        let mut out = Vec::new();
        loop {
            let n = self.recv(what)?;
            for m in parse_messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    // A dump's end; since Linux 4.x it carries the dump's error.
                    NLMSG_DONE | NLMSG_ERROR => {
                        return match parse_error(m.payload) {
                            Some(e) if e < 0 => Err(NetlinkError::Refused {
                                request: what.to_string(),
                                source: io::Error::from_raw_os_error(-e),
                            }),
                            _ => Ok(out),
                        };
                    }
                    ty if ty == reply => out.extend(parse(m.payload)),
                    _ => {}
                }
            }
        }
    }

    /// All links.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        self.collect("link dump", get_links, RTM_NEWLINK, parse_link)
    }

    /// The index of the link named `name`, `None` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<i32>, NetlinkError> {
        Ok(self.link_by_name(name)?.map(|l| l.index))
    }

    /// The link named `name`, `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        match self.collect(
            &format!("look up link {name}"),
            |seq| get_link_by_name(seq, name),
            RTM_NEWLINK,
            parse_link,
        ) {
            Ok(mut links) => Ok(links.pop()),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair: `host_name` here, `peer_name` straight in the
    /// namespace `peer_netns`. `EEXIST` if either name is taken.
    pub fn add_veth(
        &mut self,
        host_name: &str,
        peer_name: &str,
        peer_netns: BorrowedFd<'_>,
    ) -> Result<(), NetlinkError> {
        self.add_veth_with_mtu(host_name, peer_name, peer_netns, None)
    }

    /// [`Netlink::add_veth`] with both ends' MTU set (`None`: the default).
    pub fn add_veth_with_mtu(
        &mut self,
        host_name: &str,
        peer_name: &str,
        peer_netns: BorrowedFd<'_>,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let fd = peer_netns.as_raw_fd();
        self.request(&format!("cannot create veth {host_name}"), |seq| {
            new_veth(seq, host_name, peer_name, fd, mtu)
        })
    }

    /// Creates macvlan `name` (bridge mode) on link `parent_index`, straight
    /// in the namespace `netns`, with MAC `mac` (`None`: a random one).
    pub fn add_macvlan(
        &mut self,
        name: &str,
        parent_index: i32,
        netns: BorrowedFd<'_>,
        mac: Option<[u8; 6]>,
    ) -> Result<(), NetlinkError> {
        let fd = netns.as_raw_fd();
        self.request(
            &format!("cannot create macvlan {name} on link {parent_index}"),
            |seq| new_macvlan(seq, name, parent_index, fd, mac),
        )
    }

    /// Renames link `index` (down) to `name`.
    pub fn rename(&mut self, index: i32, name: &str) -> Result<(), NetlinkError> {
        self.request(&format!("cannot rename link {index} to {name}"), |seq| {
            rename_link(seq, index, name)
        })
    }

    /// Deletes link `index`.
    pub fn delete_link(&mut self, index: i32) -> Result<(), NetlinkError> {
        self.request(&format!("cannot delete link {index}"), |seq| {
            del_link(seq, index)
        })
    }

    /// Deletes the link named `name`; `false` if there was none.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool, NetlinkError> {
        match self.request(&format!("cannot delete link {name}"), |seq| {
            del_link_by_name(seq, name)
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds a route, replacing one to the same destination.
    pub fn add_route(&mut self, route: &Route) -> Result<(), NetlinkError> {
        self.request(&format!("cannot add route {}", describe(route)), |seq| {
            new_route(seq, route)
        })
    }

    /// Deletes a route; one that is not there is not an error.
    pub fn del_route(&mut self, route: &Route) -> Result<(), NetlinkError> {
        match self.request(&format!("cannot delete route {}", describe(route)), |seq| {
            del_route(seq, route)
        }) {
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The IPv4 routes of the main table that [`Route`] can describe.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        self.collect("route dump", get_routes, RTM_NEWROUTE, parse_route)
    }

    /// The IPv4 addresses of every link.
    pub fn addresses(&mut self) -> Result<Vec<Address>, NetlinkError> {
        self.collect("address dump", get_addresses, RTM_NEWADDR, parse_address)
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

    /// Splits a nested attribute's content.
    fn nest(data: &[u8]) -> Vec<(u16, &[u8])> {
        parse_attrs(data)
    }

    #[test]
    fn veth_message_nests_the_peer_with_its_namespace() {
        let m = new_veth(3, "mkv0123456789ab", "eth0", 7, Some(1400));
        let msgs = parse_messages(&m);
        assert_eq!(msgs.len(), 1);
        assert_eq!(usize::try_from(u32_at(&m, 0).unwrap()).unwrap(), m.len());
        assert_eq!(msgs[0].ty, RTM_NEWLINK);
        assert_eq!(
            msgs[0].flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(msgs[0].seq, 3);
        let p = msgs[0].payload;
        assert_eq!(&p[0..16], &[0; 16]);
        let attrs = parse_attrs(&p[16..]);
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[0], (IFLA_IFNAME, &b"mkv0123456789ab\0"[..]));
        assert_eq!(attrs[1], (IFLA_MTU, &1400u32.to_ne_bytes()[..]));
        assert_eq!(attrs[2].0, IFLA_LINKINFO);
        let info = nest(attrs[2].1);
        assert_eq!(info[0], (IFLA_INFO_KIND, &b"veth"[..]));
        assert_eq!(info[1].0, IFLA_INFO_DATA);
        let data = nest(info[1].1);
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].0, VETH_INFO_PEER);
        let peer = data[0].1;
        // The peer's own ifinfomsg, then its attributes.
        assert_eq!(&peer[0..16], &[0; 16]);
        assert_eq!(
            parse_attrs(&peer[16..]),
            [
                (IFLA_IFNAME, &b"eth0\0"[..]),
                (IFLA_NET_NS_FD, &7i32.to_ne_bytes()[..]),
                (IFLA_MTU, &1400u32.to_ne_bytes()[..]),
            ]
        );
        // Byte by byte, as iproute2 lays it out: the peer attribute is its
        // header, an ifinfomsg, IFLA_IFNAME and IFLA_NET_NS_FD (4 + 16 + 12 + 8).
        let without_mtu = new_veth(3, "mkv1", "eth0", 7, None);
        let mut expect: Vec<u8> = Vec::new();
        let ne16 = |v: u16| v.to_ne_bytes();
        // nlmsghdr
        expect.extend(100u32.to_ne_bytes());
        expect.extend(ne16(RTM_NEWLINK));
        expect.extend(ne16(0x605));
        expect.extend(3u32.to_ne_bytes());
        expect.extend(0u32.to_ne_bytes());
        expect.extend([0; 16]);
        // IFLA_IFNAME "mkv1"
        expect.extend(ne16(9));
        expect.extend(ne16(3));
        expect.extend(b"mkv1\0\0\0\0");
        // IFLA_LINKINFO { IFLA_INFO_KIND "veth", IFLA_INFO_DATA { VETH_INFO_PEER { ... } } }
        expect.extend(ne16(56));
        expect.extend(ne16(18));
        expect.extend(ne16(8));
        expect.extend(ne16(1));
        expect.extend(b"veth");
        expect.extend(ne16(44));
        expect.extend(ne16(2));
        expect.extend(ne16(40));
        expect.extend(ne16(1));
        expect.extend([0; 16]);
        expect.extend(ne16(9));
        expect.extend(ne16(3));
        expect.extend(b"eth0\0\0\0\0");
        expect.extend(ne16(8));
        expect.extend(ne16(28));
        expect.extend(7i32.to_ne_bytes());
        assert_eq!(without_mtu, expect);
    }

    #[test]
    fn macvlan_message() {
        let mac = [2, 0, 0, 0, 0, 9];
        let m = new_macvlan(4, "eth0", 3, 9, Some(mac));
        let msg = &parse_messages(&m)[0];
        assert_eq!(msg.ty, RTM_NEWLINK);
        assert_eq!(
            msg.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        let attrs = parse_attrs(&msg.payload[16..]);
        assert_eq!(attrs[0], (IFLA_IFNAME, &b"eth0\0"[..]));
        assert_eq!(attrs[1], (IFLA_LINK, &3i32.to_ne_bytes()[..]));
        assert_eq!(attrs[2], (IFLA_NET_NS_FD, &9i32.to_ne_bytes()[..]));
        assert_eq!(attrs[3], (IFLA_ADDRESS, &mac[..]));
        assert_eq!(attrs[4].0, IFLA_LINKINFO);
        let info = nest(attrs[4].1);
        assert_eq!(info[0], (IFLA_INFO_KIND, &b"macvlan"[..]));
        assert_eq!(
            nest(info[1].1),
            [(IFLA_MACVLAN_MODE, &MACVLAN_MODE_BRIDGE.to_ne_bytes()[..])]
        );
        let m = new_macvlan(4, "eth0", 3, 9, None);
        assert_eq!(parse_attrs(&parse_messages(&m)[0].payload[16..]).len(), 4);
    }

    #[test]
    fn delete_link_messages() {
        let m = del_link(5, 12);
        let mut expect = Vec::new();
        expect.extend(32u32.to_ne_bytes());
        expect.extend(RTM_DELLINK.to_ne_bytes());
        expect.extend((NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        expect.extend(5u32.to_ne_bytes());
        expect.extend(0u32.to_ne_bytes());
        expect.extend(ifinfomsg(12, 0, 0));
        assert_eq!(m, expect);
        let m = del_link_by_name(6, "mkv1");
        let msg = &parse_messages(&m)[0];
        assert_eq!(msg.ty, RTM_DELLINK);
        assert_eq!(&msg.payload[..16], &[0; 16]);
        assert_eq!(
            parse_attrs(&msg.payload[16..]),
            [(IFLA_IFNAME, &b"mkv1\0"[..])]
        );
        let m = get_link_by_name(7, "lo");
        let msg = &parse_messages(&m)[0];
        assert_eq!(
            (msg.ty, msg.flags),
            (RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK)
        );
        assert_eq!(
            parse_attrs(&msg.payload[16..]),
            [(IFLA_IFNAME, &b"lo\0"[..])]
        );
    }

    #[test]
    fn route_messages_by_kind() {
        let link = Route {
            dst: Ipv4Addr::new(172, 17, 0, 2),
            prefix: 32,
            kind: RouteKind::Link { oif: 7 },
            protocol: RTPROT_MKHOST,
        };
        let m = new_route(1, &link);
        let msg = &parse_messages(&m)[0];
        assert_eq!(msg.ty, RTM_NEWROUTE);
        assert_eq!(
            msg.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
        assert_eq!(
            &msg.payload[0..12],
            &[
                AF_INET,
                32,
                0,
                0,
                RT_TABLE_MAIN,
                200,
                RT_SCOPE_LINK,
                RTN_UNICAST,
                0,
                0,
                0,
                0
            ]
        );
        assert_eq!(
            parse_attrs(&msg.payload[12..]),
            [
                (RTA_DST, &[172, 17, 0, 2][..]),
                (RTA_OIF, &7i32.to_ne_bytes()[..])
            ]
        );
        assert_eq!(parse_route(msg.payload), Some(link.clone()));

        let via = Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            kind: RouteKind::Via {
                oif: 2,
                gateway: Ipv4Addr::new(10, 0, 0, 1),
            },
            protocol: RTPROT_STATIC,
        };
        let m = new_route(2, &via);
        let msg = &parse_messages(&m)[0];
        assert_eq!(msg.payload[6], RT_SCOPE_UNIVERSE);
        // The default route has no RTA_DST.
        assert_eq!(
            parse_attrs(&msg.payload[12..]),
            [
                (RTA_GATEWAY, &[10, 0, 0, 1][..]),
                (RTA_OIF, &2i32.to_ne_bytes()[..])
            ]
        );
        assert_eq!(parse_route(msg.payload), Some(via));

        let unreachable = Route {
            dst: Ipv4Addr::new(172, 17, 0, 0),
            prefix: 16,
            kind: RouteKind::Unreachable,
            protocol: RTPROT_MKHOST,
        };
        let m = new_route(3, &unreachable);
        let msg = &parse_messages(&m)[0];
        assert_eq!(msg.payload[7], RTN_UNREACHABLE);
        assert_eq!(
            parse_attrs(&msg.payload[12..]),
            [(RTA_DST, &[172, 17, 0, 0][..])]
        );
        assert_eq!(parse_route(msg.payload), Some(unreachable.clone()));

        // Deleting matches any scope.
        let m = del_route(4, &link);
        let msg = &parse_messages(&m)[0];
        assert_eq!(
            (msg.ty, msg.flags),
            (RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
        );
        assert_eq!(msg.payload[6], RT_SCOPE_NOWHERE);
        assert_eq!(msg.payload[5], RTPROT_MKHOST);
        assert_eq!(describe(&unreachable), "unreachable 172.17.0.0/16");
        assert_eq!(describe(&link), "172.17.0.2/32 dev #7 scope link");
    }

    #[test]
    fn route_parser_keeps_to_the_main_table() {
        let mut p = rtmsg_with(24, 2, RT_SCOPE_LINK, RTN_UNICAST, 0).to_vec();
        p.extend(attr_bytes(RTA_DST, &[10, 0, 0, 0]));
        p.extend(attr_bytes(RTA_OIF, &3i32.to_ne_bytes()));
        assert_eq!(
            parse_route(&p).map(|r| r.kind),
            Some(RouteKind::Link { oif: 3 })
        );
        // The same in table 1000 (rtm_table says RT_TABLE_COMPAT).
        let mut other = p.clone();
        other[4] = 252;
        other.extend(attr_bytes(RTA_TABLE, &1000u32.to_ne_bytes()));
        assert_eq!(parse_route(&other), None);
        // A local route (RTN_LOCAL) is not described.
        let mut local = p.clone();
        local[7] = 2;
        assert_eq!(parse_route(&local), None);
        // IPv6 is not.
        let mut v6 = p.clone();
        v6[0] = 10;
        assert_eq!(parse_route(&v6), None);
        for cut in 0..p.len() {
            let _ = parse_route(&p[..cut]);
        }
    }

    #[test]
    fn address_parser_reads_its_own_message() {
        let m = add_address(1, 4, Ipv4Addr::new(172, 17, 0, 2), 16);
        let got = parse_address(parse_messages(&m)[0].payload).unwrap();
        assert_eq!(
            got,
            Address {
                index: 4,
                address: Ipv4Addr::new(172, 17, 0, 2),
                prefix: 16
            }
        );
        let m = get_addresses(2);
        let msg = &parse_messages(&m)[0];
        assert_eq!(
            (msg.ty, msg.flags),
            (RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP)
        );
        assert_eq!(msg.payload[0], AF_INET);
        let m = get_routes(3);
        let msg = &parse_messages(&m)[0];
        assert_eq!(
            (msg.ty, msg.flags),
            (RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP)
        );
        assert_eq!(msg.payload.len(), 12);
    }

    /// Against the kernel, in a private network namespace.
    #[test]
    fn live_links_routes_and_addresses() {
        use crate::net::netns::in_private_host;
        use std::os::fd::AsFd;
        in_private_host(|| {
            let mut nl = Netlink::open().unwrap();
            assert_eq!(nl.link_index("lo").unwrap(), Some(1));
            assert_eq!(nl.link_index("nope0").unwrap(), None);
            assert!(!nl.delete_link_by_name("nope0").unwrap());
            let me = File::open("/proc/thread-self/ns/net").unwrap();
            nl.add_veth("va", "vb", me.as_fd()).unwrap();
            let err = nl.add_veth("va", "vc", me.as_fd()).unwrap_err();
            assert_eq!(err.errno(), Some(libc::EEXIST));
            assert_eq!(
                err.to_string(),
                "cannot create veth va: File exists (os error 17)"
            );
            let links = nl.links().unwrap();
            let va = links.iter().find(|l| l.name == "va").unwrap();
            assert_eq!(va.kind.as_deref(), Some("veth"));
            let va = va.index;
            nl.set_up(va, "va").unwrap();
            nl.add_address(va, "va", Ipv4Addr::new(10, 1, 0, 1), 24)
                .unwrap();
            assert!(nl.addresses().unwrap().contains(&Address {
                index: va,
                address: Ipv4Addr::new(10, 1, 0, 1),
                prefix: 24
            }));
            let routes = [
                Route {
                    dst: Ipv4Addr::new(10, 2, 0, 5),
                    prefix: 32,
                    kind: RouteKind::Link { oif: va },
                    protocol: RTPROT_MKHOST,
                },
                Route {
                    dst: Ipv4Addr::new(10, 3, 0, 0),
                    prefix: 16,
                    kind: RouteKind::Via {
                        oif: va,
                        gateway: Ipv4Addr::new(10, 1, 0, 2),
                    },
                    protocol: RTPROT_MKHOST,
                },
                Route {
                    dst: Ipv4Addr::new(10, 4, 0, 0),
                    prefix: 16,
                    kind: RouteKind::Unreachable,
                    protocol: RTPROT_MKHOST,
                },
            ];
            for r in &routes {
                nl.add_route(r).unwrap();
                // Adding again replaces.
                nl.add_route(r).unwrap();
            }
            let mine: Vec<Route> = nl
                .routes()
                .unwrap()
                .into_iter()
                .filter(|r| r.protocol == RTPROT_MKHOST)
                .collect();
            assert_eq!(mine, routes);
            for r in &routes {
                nl.del_route(r).unwrap();
                nl.del_route(r).unwrap();
            }
            assert!(nl
                .routes()
                .unwrap()
                .iter()
                .all(|r| r.protocol != RTPROT_MKHOST));
            // Deleting one end deletes the pair.
            assert!(nl.delete_link_by_name("vb").unwrap());
            assert_eq!(nl.link_index("va").unwrap(), None);
            assert_eq!(nl.links().unwrap().len(), 1);
        });
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
