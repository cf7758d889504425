//! A container's link to the world, one function per operation: routed veth
//! pairs, macvlans on a physical NIC, and the addresses and routes inside the
//! container's network namespace.
//!
//! The routed model: the veth's host end `mkv<12 hex>` stays in the host
//! namespace with no address; it answers ARP for everything it routes
//! (`proxy_arp=1`, no proxy delay, `forwarding=1` on the link, which proxy
//! ARP needs), and a `/32` route `dev mkvX scope link` (protocol
//! [`RTPROT_MKHOST`]) sends the container's address to it. The peer is made
//! straight inside the container's namespace as `eth0`, with `ADDR/PREFIX`
//! and `default via GATEWAY`: the container believes it sits on the network's
//! subnet, and the host routes every packet (to other containers, to the
//! gateway address, out) through its own tables and firewall.
//!
//! `nl` is a [`Netlink`] socket of the host namespace, and the calling thread
//! must be in that namespace too (the host end's sysctls are written through
//! the caller's `/proc/sys/net`). Work inside the container's namespace runs
//! on a thread that entered it ([`NetNs::run`]) with a socket of its own.

use std::net::Ipv4Addr;

use super::netlink::{
    self, DefaultRoute, Netlink, NetlinkError, Route, RouteKind, RTPROT_MKHOST, RTPROT_STATIC,
};
use super::netns::{self, NetNs};

/// The container's side of a veth or macvlan.
pub const CONTAINER_IFNAME: &str = "eth0";

/// A routed veth to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPlan {
    /// The host end, `mkv` and 12 hex digits (at most 15 bytes).
    pub host_name: String,
    /// The container's address.
    pub address: Ipv4Addr,
    /// The prefix length the container sees (the network's subnet).
    pub prefix: u8,
    /// The container's default gateway (an address of the host).
    pub gateway: Ipv4Addr,
    /// Both ends' MTU (`None`: the kernel's default, 1500).
    pub mtu: Option<u32>,
}

/// Creates the veth pair of `plan` (peer `eth0` inside `ns`) and configures
/// both sides: host end up with proxy ARP and the `/32` route to the
/// container; inside, `lo` and `eth0` up, `ADDR/PREFIX` and the default
/// route. On failure it deletes the pair (which takes the route along) and
/// returns the error. A host end that already exists is an error
/// ("File exists"): re-adoption keeps a working link and re-creates a
/// broken one with [`detach_veth`] first.
pub fn attach_veth(nl: &mut Netlink, ns: &NetNs, plan: &VethPlan) -> Result<(), NetlinkError> {
    let host = plan.host_name.as_str();
    nl.add_veth_with_mtu(host, CONTAINER_IFNAME, ns.fd(), plan.mtu)
        .map_err(|e| {
            reword(
                e,
                format!(
                    "cannot create veth {host} (peer {CONTAINER_IFNAME} in {})",
                    ns.path().display()
                ),
            )
        })?;
    configure_veth(nl, ns, plan).inspect_err(|_| {
        // Best effort: the first error is the one to report.
        let _ = nl.delete_link_by_name(host);
    })
}

fn configure_veth(nl: &mut Netlink, ns: &NetNs, plan: &VethPlan) -> Result<(), NetlinkError> {
    let host = plan.host_name.as_str();
    let index = nl.link_index(host)?.ok_or_else(|| NetlinkError::NoLink {
        what: format!("veth {host}, just created,"),
        hint: "another program deleted it",
    })?;
    for (key, value) in [
        (format!("net/ipv4/conf/{host}/proxy_arp"), "1"),
        (format!("net/ipv4/conf/{host}/forwarding"), "1"),
        (format!("net/ipv4/neigh/{host}/proxy_delay"), "0"),
    ] {
        netns::set_sysctl(&key, value).map_err(|source| NetlinkError::System {
            what: format!("cannot set sysctl {key} for veth {host}"),
            source,
        })?;
    }
    // The host end carries IPv4 only: no link-local address, no IPv6
    // routes per container (best effort: a kernel may have no IPv6).
    let _ = netns::set_sysctl(&format!("net/ipv6/conf/{host}/disable_ipv6"), "1");
    nl.set_up(index, host)?;
    nl.add_route(&host_route(plan.address, index))?;
    in_ns(ns, |nl| {
        lo_up(nl)?;
        let eth0 = container_index(nl, ns)?;
        nl.set_up(eth0, CONTAINER_IFNAME)?;
        set_address(nl, eth0, plan.address, plan.prefix, Some(plan.gateway))
    })
}

/// The host's route to a veth container: `ADDR/32 dev HOST scope link`.
pub fn host_route(address: Ipv4Addr, host_index: i32) -> Route {
    Route {
        dst: address,
        prefix: 32,
        kind: RouteKind::Link { oif: host_index },
        protocol: RTPROT_MKHOST,
    }
}

/// The host's route for a routed network's whole subnet, `unreachable
/// SUBNET/PREFIX` (protocol [`RTPROT_MKHOST`]): the containers' `/32` routes
/// are more specific, so only addresses without a container hit it, and
/// packets to them are refused instead of leaving by the default route.
pub fn unreachable_route(subnet: Ipv4Addr, prefix: u8) -> Route {
    Route {
        dst: subnet,
        prefix,
        kind: RouteKind::Unreachable,
        protocol: RTPROT_MKHOST,
    }
}

/// Deletes the host end `host_name` (the pair goes with it) and the `/32`
/// route to `address` through it; either being absent is not an error.
pub fn detach_veth(
    nl: &mut Netlink,
    host_name: &str,
    address: Ipv4Addr,
) -> Result<(), NetlinkError> {
    let Some(index) = nl.link_index(host_name)? else {
        return Ok(());
    };
    nl.del_route(&host_route(address, index))?;
    match nl.delete_link(index) {
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
        other => other.map_err(|e| reword(e, format!("cannot delete veth {host_name}"))),
    }
}

/// Creates `eth0` as a macvlan (bridge mode) of the host's NIC `parent`
/// inside `ns`, brings `lo` and `eth0` up, and returns `eth0`'s MAC. The
/// caller then runs DHCP inside `ns` or sets a static address with
/// [`configure_address`]. On failure nothing is left in `ns`.
pub fn attach_macvlan(nl: &mut Netlink, ns: &NetNs, parent: &str) -> Result<[u8; 6], NetlinkError> {
    let parent_index = nl.link_index(parent)?.ok_or_else(|| NetlinkError::NoLink {
        what: format!("NIC {parent} for a direct network"),
        hint: "check `ip link` on the host and the network's `parent`",
    })?;
    // Created under a name of its own, then renamed inside: kernels before
    // 6.2 look a new link's name up in the caller's namespace, where the
    // host's own `eth0` would make `eth0` "exist".
    let id = ns
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = format!("mkm{}", &id[..id.len().min(12)]);
    nl.add_macvlan(&temporary, parent_index, ns.fd(), None)
        .map_err(|e| {
            reword(
                e,
                format!(
                    "cannot create macvlan {temporary} on {parent} in {}",
                    ns.path().display()
                ),
            )
        })?;
    in_ns(ns, |nl| {
        let created = nl
            .link_by_name(&temporary)?
            .ok_or_else(|| missing_eth0(ns))?;
        // Whatever fails from here removes the link this call made (by its
        // index: an `eth0` already there is not this call's).
        let finish = |nl: &mut Netlink| -> Result<[u8; 6], NetlinkError> {
            nl.rename(created.index, CONTAINER_IFNAME)?;
            let mac: [u8; 6] =
                created
                    .mac
                    .as_slice()
                    .try_into()
                    .map_err(|_| NetlinkError::System {
                        what: format!("macvlan {CONTAINER_IFNAME} on {parent} has no 6-byte MAC"),
                        source: std::io::Error::from_raw_os_error(libc::EINVAL),
                    })?;
            lo_up(nl)?;
            nl.set_up(created.index, CONTAINER_IFNAME)?;
            Ok(mac)
        };
        finish(nl).inspect_err(|_| {
            let _ = nl.delete_link(created.index);
        })
    })
}

/// Inside `ns`: `address/prefix` on `eth0` (any other IPv4 address there is
/// removed) and the default route via `gateway` (replacing an earlier one;
/// `None` removes it). The gateway may lie outside the prefix: it is then
/// marked on-link.
pub fn configure_address(
    ns: &NetNs,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetlinkError> {
    in_ns(ns, |nl| {
        let eth0 = container_index(nl, ns)?;
        set_address(nl, eth0, address, prefix, gateway)
    })
}

/// Brings `lo` up inside `ns` (for namespaces without other links).
pub fn loopback_up(ns: &NetNs) -> Result<(), NetlinkError> {
    in_ns(ns, lo_up)
}

fn set_address(
    nl: &mut Netlink,
    index: i32,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetlinkError> {
    for old in nl.addresses()? {
        if old.index == index && (old.address, old.prefix) != (address, prefix) {
            nl.del_address(index, CONTAINER_IFNAME, old.address, old.prefix)?;
        }
    }
    nl.add_address(index, CONTAINER_IFNAME, address, prefix)?;
    match gateway {
        Some(gateway) => nl.add_default_route(
            CONTAINER_IFNAME,
            &DefaultRoute {
                index,
                gateway,
                source: None,
                metric: 0,
                protocol: RTPROT_STATIC,
                onlink: !netlink::on_link(address, prefix, gateway),
            },
        ),
        None => {
            for route in nl.routes()? {
                let default_here = route.prefix == 0
                    && matches!(route.kind, RouteKind::Via { oif, .. } if oif == index);
                if default_here {
                    nl.del_route(&route)?;
                }
            }
            Ok(())
        }
    }
}

fn lo_up(nl: &mut Netlink) -> Result<(), NetlinkError> {
    let lo = nl.link_index("lo")?.ok_or_else(|| NetlinkError::NoLink {
        what: "loopback link lo".into(),
        hint: "every network namespace has one",
    })?;
    nl.set_up(lo, "lo")
}

fn container_index(nl: &mut Netlink, ns: &NetNs) -> Result<i32, NetlinkError> {
    nl.link_index(CONTAINER_IFNAME)?
        .ok_or_else(|| missing_eth0(ns))
}

fn missing_eth0(ns: &NetNs) -> NetlinkError {
    NetlinkError::NoLink {
        what: format!("link {CONTAINER_IFNAME} in {}", ns.path().display()),
        hint: "attach a veth or macvlan first",
    }
}

/// Runs `f` with a netlink socket of `ns`, on a thread inside it.
fn in_ns<T: Send>(
    ns: &NetNs,
    f: impl FnOnce(&mut Netlink) -> Result<T, NetlinkError> + Send,
) -> Result<T, NetlinkError> {
    ns.run(|| f(&mut Netlink::open()?))
        .map_err(|source| NetlinkError::System {
            what: format!("cannot enter network namespace {}", ns.path().display()),
            source,
        })?
}

/// Gives a refused request the caller's wording.
fn reword(e: NetlinkError, request: String) -> NetlinkError {
    match e {
        NetlinkError::Refused { source, .. } => NetlinkError::Refused { request, source },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::netlink::Link;
    use crate::net::netns::in_private_host;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::Path;
    use std::time::Duration;

    const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

    fn plan(host_name: &str, last: u8) -> VethPlan {
        VethPlan {
            host_name: host_name.into(),
            address: Ipv4Addr::new(172, 17, 0, last),
            prefix: 16,
            gateway: GATEWAY,
            mtu: None,
        }
    }

    /// The private host as a daemon would set it up: forwarding, the
    /// gateway address on lo, the network's unreachable route.
    fn host_network(nl: &mut Netlink) {
        netns::set_sysctl("net/ipv4/ip_forward", "1").unwrap();
        let lo = nl.link_index("lo").unwrap().unwrap();
        nl.set_up(lo, "lo").unwrap();
        nl.add_address(lo, "lo", GATEWAY, 32).unwrap();
        nl.add_route(&unreachable_route(Ipv4Addr::new(172, 17, 0, 0), 16))
            .unwrap();
    }

    fn mkv_links(nl: &mut Netlink) -> Vec<Link> {
        nl.links()
            .unwrap()
            .into_iter()
            .filter(|l| l.name.starts_with("mkv"))
            .collect()
    }

    fn host_routes(nl: &mut Netlink) -> Vec<Route> {
        nl.routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.protocol == RTPROT_MKHOST && r.prefix == 32)
            .collect()
    }

    fn links_in(ns: &NetNs) -> Vec<String> {
        in_ns(ns, |nl| nl.links())
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect()
    }

    /// Connects from inside `from` to `to` and exchanges a line with the
    /// listener, which may live in any namespace.
    fn exchange(from: &NetNs, listener: &TcpListener) {
        let to = listener.local_addr().unwrap();
        let mut client = from
            .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        let (mut server, peer) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        // Routed, not masqueraded: the listener sees the container's address.
        let ip = from.run(in_ns_address).unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(ip));
    }

    fn in_ns_address() -> Ipv4Addr {
        let mut nl = Netlink::open().unwrap();
        let eth0 = nl.link_index(CONTAINER_IFNAME).unwrap().unwrap();
        nl.addresses()
            .unwrap()
            .into_iter()
            .find(|a| a.index == eth0)
            .unwrap()
            .address
    }

    #[test]
    fn routed_veths_carry_tcp_between_containers_and_to_the_gateway() {
        in_private_host(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut nl = Netlink::open().unwrap();
            host_network(&mut nl);
            let ns1 = NetNs::create(&dir.path().join("c1")).unwrap();
            let ns2 = NetNs::create(&dir.path().join("c2")).unwrap();
            let p1 = plan("mkv000000000001", 2);
            let p2 = VethPlan {
                mtu: Some(1400),
                ..plan("mkv000000000002", 3)
            };
            attach_veth(&mut nl, &ns1, &p1).unwrap();
            attach_veth(&mut nl, &ns2, &p2).unwrap();

            // Host side: two veths, no address on them, one /32 each.
            let mkv = mkv_links(&mut nl);
            assert_eq!(mkv.len(), 2);
            assert!(mkv.iter().all(|l| l.kind.as_deref() == Some("veth")));
            let addrs = nl.addresses().unwrap();
            assert!(mkv.iter().all(|l| addrs.iter().all(|a| a.index != l.index)));
            assert_eq!(host_routes(&mut nl).len(), 2);
            assert_eq!(
                netns::get_sysctl("net/ipv4/conf/mkv000000000001/proxy_arp").unwrap(),
                "1"
            );
            assert_eq!(
                netns::get_sysctl("net/ipv4/neigh/mkv000000000001/proxy_delay").unwrap(),
                "0"
            );
            // Container side: lo and eth0, the address, the default route.
            assert_eq!(links_in(&ns1), ["lo", "eth0"]);
            let routes = in_ns(&ns2, |nl| nl.routes()).unwrap();
            let eth0 = in_ns(&ns2, |nl| nl.link_by_name("eth0")).unwrap().unwrap();
            assert_eq!(eth0.flags & netlink::IFF_UP, netlink::IFF_UP);
            assert!(routes.iter().any(|r| r.prefix == 0
                && r.kind
                    == RouteKind::Via {
                        oif: eth0.index,
                        gateway: GATEWAY
                    }));

            // Container 1 to a listener inside container 2.
            let listener = ns2
                .run(|| TcpListener::bind(SocketAddr::from((p2.address, 7000))))
                .unwrap()
                .unwrap();
            exchange(&ns1, &listener);
            // And back the other way, and to the gateway in the host.
            let listener1 = ns1
                .run(|| TcpListener::bind(SocketAddr::from((p1.address, 7000))))
                .unwrap()
                .unwrap();
            exchange(&ns2, &listener1);
            let gateway = TcpListener::bind(SocketAddr::from((GATEWAY, 7001))).unwrap();
            exchange(&ns1, &gateway);
            // An address of the subnet without a container is unreachable:
            // the host end answers no ARP for it, so the container gives up
            // after its ARP probes (3 s).
            let err = ns1
                .run(|| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from((Ipv4Addr::new(172, 17, 0, 9), 7000)),
                        Duration::from_secs(5),
                    )
                })
                .unwrap()
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");

            // Detach leaves nothing, twice.
            for _ in 0..2 {
                detach_veth(&mut nl, &p1.host_name, p1.address).unwrap();
                detach_veth(&mut nl, &p2.host_name, p2.address).unwrap();
            }
            assert!(mkv_links(&mut nl).is_empty());
            assert!(host_routes(&mut nl).is_empty());
            assert_eq!(links_in(&ns1), ["lo"]);
            for ns in [ns1, ns2] {
                let path = ns.path().to_path_buf();
                drop(ns);
                netns::remove(&path).unwrap();
            }
        });
    }

    #[test]
    fn a_failed_attach_leaves_nothing() {
        in_private_host(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut nl = Netlink::open().unwrap();
            host_network(&mut nl);
            let ns = NetNs::create(&dir.path().join("c")).unwrap();
            // A multicast gateway fails inside the namespace, after the host
            // side is done.
            let bad = VethPlan {
                gateway: Ipv4Addr::new(224, 0, 0, 1),
                ..plan("mkv0123456789ab", 2)
            };
            let err = attach_veth(&mut nl, &ns, &bad).unwrap_err();
            assert!(err.to_string().contains("default route"), "{err}");
            assert!(mkv_links(&mut nl).is_empty());
            assert!(host_routes(&mut nl).is_empty());
            assert_eq!(links_in(&ns), ["lo"]);
            // A name longer than 15 bytes fails before anything exists.
            let long = plan("mkv0123456789abc", 2);
            let err = attach_veth(&mut nl, &ns, &long).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("cannot create veth mkv0123456789abc"),
                "{err}"
            );
            // The good plan then works, and a second attach is refused
            // without harming the first.
            let good = plan("mkv0123456789ab", 2);
            attach_veth(&mut nl, &ns, &good).unwrap();
            let err = attach_veth(&mut nl, &ns, &good).unwrap_err();
            assert_eq!(err.errno(), Some(libc::EEXIST));
            assert!(
                err.to_string()
                    .starts_with("cannot create veth mkv0123456789ab (peer eth0 in "),
                "{err}"
            );
            assert_eq!(mkv_links(&mut nl).len(), 1);
            assert_eq!(host_routes(&mut nl).len(), 1);
            assert_eq!(links_in(&ns), ["lo", "eth0"]);
            // Unmounted, the file goes with the test's directory.
            crate::net::netns::remove(ns.path()).unwrap();
        });
    }

    #[test]
    fn macvlan_on_a_parent_with_a_static_address() {
        in_private_host(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut nl = Netlink::open().unwrap();
            let ns = NetNs::create(&dir.path().join("direct")).unwrap();
            let err = attach_macvlan(&mut nl, &ns, "eth7").unwrap_err();
            assert_eq!(
                err.to_string(),
                "NIC eth7 for a direct network does not exist: check `ip link` on the host \
                 and the network's `parent`"
            );
            // The "NIC": a veth whose other end is the LAN (host-side address).
            let me = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            nl.add_veth("eth0", "lan", std::os::fd::AsFd::as_fd(&me))
                .unwrap();
            for name in ["eth0", "lan", "lo"] {
                let index = nl.link_index(name).unwrap().unwrap();
                nl.set_up(index, name).unwrap();
            }
            let lan = nl.link_index("lan").unwrap().unwrap();
            nl.add_address(lan, "lan", Ipv4Addr::new(10, 9, 0, 1), 24)
                .unwrap();

            // The container's eth0 shares the parent's name in another namespace.
            let mac = attach_macvlan(&mut nl, &ns, "eth0").unwrap();
            let inside = in_ns(&ns, |nl| nl.link_by_name("eth0")).unwrap().unwrap();
            assert_eq!(inside.mac, mac);
            assert_eq!(inside.kind.as_deref(), Some("macvlan"));
            assert_eq!(links_in(&ns), ["lo", "eth0"]);
            // A second macvlan is refused: eth0 is taken in the namespace.
            assert!(attach_macvlan(&mut nl, &ns, "eth0").is_err());

            // A first address, then a second that replaces it.
            configure_address(&ns, Ipv4Addr::new(10, 9, 0, 5), 24, None).unwrap();
            configure_address(
                &ns,
                Ipv4Addr::new(10, 9, 0, 2),
                24,
                Some(Ipv4Addr::new(10, 9, 0, 1)),
            )
            .unwrap();
            let addrs = in_ns(&ns, |nl| nl.addresses()).unwrap();
            let on_eth0: Vec<_> = addrs.iter().filter(|a| a.index == inside.index).collect();
            assert_eq!(on_eth0.len(), 1);
            assert_eq!(on_eth0[0].address, Ipv4Addr::new(10, 9, 0, 2));
            let listener = TcpListener::bind("10.9.0.1:7002").unwrap();
            exchange(&ns, &listener);
            // Without a gateway the default route goes.
            configure_address(&ns, Ipv4Addr::new(10, 9, 0, 2), 24, None).unwrap();
            let routes = in_ns(&ns, |nl| nl.routes()).unwrap();
            assert!(routes.iter().all(|r| r.prefix != 0), "{routes:?}");
            crate::net::netns::remove(ns.path()).unwrap();
        });
    }

    #[test]
    fn loopback_only_namespace() {
        in_private_host(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("none");
            let ns = NetNs::create(&path).unwrap();
            loopback_up(&ns).unwrap();
            let lo = in_ns(&ns, |nl| nl.link_by_name("lo")).unwrap().unwrap();
            assert_eq!(lo.flags & netlink::IFF_UP, netlink::IFF_UP);
            let err = configure_address(&ns, Ipv4Addr::new(10, 0, 0, 2), 24, None).unwrap_err();
            assert!(err.to_string().starts_with("link eth0 in "), "{err}");
            // The namespace file can go while a descriptor still holds it.
            netns::remove(Path::new(&path)).unwrap();
            loopback_up(&ns).unwrap();
        });
    }
}
