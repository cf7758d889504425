//! Container networking on Linux: [`Networking`] for [`LinuxNetworking`],
//! which [`Linux`](super::Linux) hands the daemon's networks.
//!
//! It owns the kernel objects the daemon's network decisions stand for:
//! the host's sysctls, each bridge network's gateway (an address on `lo`
//! and an `unreachable` route for its subnet), each container's network
//! namespace (bind-mounted at the path the daemon gives) and its link, a
//! routed veth `mkv<id>` ([`crate::net::container_link`]) or a macvlan
//! with a static address or a DHCP lease renewed by a keeper thread, the
//! `ip mkhost` nftables table ([`table`], rendered from the daemon's
//! neutral rule description), the sockets that reserve published ports,
//! and the DNS servers on the gateways ([`crate::net::dns`]). The
//! rtnetlink, nf_tables, namespace and DHCP code itself is in
//! [`crate::net`]. docs/networking.md has the design.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mkhost_shared::network::{PortMapping, Protocol as PortProtocol, Subnet};

use crate::backend::network::Lease as RecordedLease;
use crate::backend::network::{
    DirectAddress, Held, LinkPlan, Linked, Networking, Owned, Published, RuleNetwork,
};
use crate::log::log;
use crate::net::container_link::{self, configure_address, VethPlan};
use crate::net::dhcp::{Client, Lease};
use crate::net::dns::{DnsServer, Records};
use crate::net::netlink::{Netlink, NetlinkError, Route, RouteKind, RTPROT_MKHOST};
use crate::net::netns::{self, NetNs};
use crate::net::nftables::{
    self, Action, BaseChain, Chain, ChainKind, Hook, Match, Protocol, Rule, Table,
};
use mkhost_shared::sync::lock;

use crate::net::container_link::CONTAINER_IFNAME as CONTAINER_LINK;

/// The table's name (family `ip`).
pub const TABLE: &str = "mkhost";

/// Host ends of container veths are named `mkv` + 12 hex digits.
pub const VETH_PREFIX: &str = "mkv";

/// The host end of container `id`'s veth.
pub fn veth_name(id: &str) -> String {
    format!("{VETH_PREFIX}{}", &id[..id.len().min(12)])
}

/// Container networking on Linux: network namespaces, veth and macvlan
/// links, routes, nf_tables; the one packet filter table of the host.
#[derive(Default)]
pub struct LinuxNetworking {
    filter: Mutex<Filter>,
}

/// The nf_tables side (one table per host).
#[derive(Default)]
struct Filter {
    /// This daemon wrote the whole table once: later changes swap rules only.
    table_written: bool,
    /// The nf_tables connection, kept open (closing one costs an RCU grace
    /// period); opened again after an error.
    nft: Option<nftables::Session>,
}

fn netlink() -> Result<Netlink, String> {
    Netlink::open().map_err(|e| e.to_string())
}

fn ignore_exists(result: Result<(), NetlinkError>) -> Result<(), String> {
    match result {
        Err(NetlinkError::Refused { source, .. })
            if source.raw_os_error() == Some(libc::EEXIST) =>
        {
            Ok(())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

fn unreachable(subnet: Subnet) -> Route {
    container_link::unreachable_route(subnet.address, subnet.prefix)
}

impl Networking for LinuxNetworking {
    fn prepare_host(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/route_localnet", "1"),
        ] {
            if let Err(e) = netns::set_sysctl(key, value) {
                failed.push(format!("cannot set {key}={value}: {e}"));
            }
        }
        if let Ok(mut nl) = netlink() {
            let _ = nl.set_up(1, "lo");
        }
        failed
    }

    fn host_subnets(&self) -> Result<Vec<Subnet>, String> {
        let mut nl = netlink()?;
        let links = nl.links().unwrap_or_default();
        let skip: Vec<i32> = links
            .iter()
            .filter(|l| l.name == "lo" || l.name.starts_with(VETH_PREFIX))
            .map(|l| l.index)
            .collect();
        Ok(nl
            .addresses()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !skip.contains(&a.index) && a.prefix < 32)
            .map(|a| {
                let mask = u32::MAX << (32 - a.prefix.max(1));
                Subnet {
                    address: Ipv4Addr::from(u32::from(a.address) & mask),
                    prefix: a.prefix,
                }
            })
            .collect())
    }

    fn has_link(&self, name: &str) -> Result<bool, String> {
        Ok(netlink()?
            .link_index(name)
            .map_err(|e| e.to_string())?
            .is_some())
    }

    fn add_gateway(&self, subnet: Subnet, gateway: Ipv4Addr) -> Result<(), String> {
        let mut nl = netlink()?;
        ignore_exists(nl.add_address(1, "lo", gateway, 32))?;
        nl.add_route(&unreachable(subnet))
            .map_err(|e| e.to_string())
    }

    fn remove_gateway(&self, subnet: Subnet, gateway: Ipv4Addr) -> Result<(), String> {
        let mut nl = netlink()?;
        let _ = nl.del_route(&unreachable(subnet));
        let _ = nl.del_address(1, "lo", gateway, 32);
        Ok(())
    }

    fn serve_dns(
        &self,
        address: SocketAddrV4,
        records: Arc<Records>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Held, String> {
        match DnsServer::start(address, records, upstreams) {
            Ok(server) => Ok(Box::new(server)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn apply_rules(&self, networks: &[RuleNetwork], published: &[Published]) -> Result<(), String> {
        let table = table(networks, published);
        // The first write of this daemon replaces the whole table (whatever
        // an older hostd left); later ones swap the rules only, keeping the
        // base chains on their hooks (milliseconds cheaper), and fall back
        // to a whole replacement.
        let mut filter = lock(&self.filter);
        let written = filter.table_written;
        let mut session = match filter.nft.take() {
            Some(session) => session,
            None => {
                nftables::Session::open().map_err(|e| format!("cannot program nftables: {e}"))?
            }
        };
        let swapped = written && session.replace_rules(&table).is_ok();
        if !swapped {
            if let Err(e) = session.replace_table(&table) {
                // A fresh connection next time.
                return Err(format!("cannot program nftables: {e}"));
            }
            filter.table_written = true;
        }
        filter.nft = Some(session);
        Ok(())
    }

    fn rule_count(&self) -> Option<usize> {
        let mut filter = lock(&self.filter);
        let session = match filter.nft.take() {
            Some(s) => Some(s),
            None => nftables::Session::open().ok(),
        };
        session.and_then(|mut s| {
            let count = s.count_rules(TABLE);
            filter.nft = Some(s);
            count.ok().flatten()
        })
    }

    fn reserve_ports(&self, ports: &[PortMapping]) -> Result<Held, String> {
        let reserved = ports
            .iter()
            .map(|p| {
                let addr =
                    SocketAddrV4::new(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), p.host_port);
                crate::os::reserve_port(addr, p.protocol == PortProtocol::Udp).map_err(|e| {
                    format!(
                        "host port {}/{} on {} is not free: {e} (a host process uses it, or pick \
                         another port)",
                        p.host_port,
                        p.protocol,
                        addr.ip()
                    )
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Box::new(reserved))
    }

    fn attach(&self, id: &str, netns: &Path, link: &LinkPlan) -> Result<Linked, String> {
        let ns = NetNs::create(netns).map_err(|e| {
            format!(
                "cannot create a network namespace at {}: {e}",
                netns.display()
            )
        })?;
        let linked = link_container(id, &ns, link);
        if linked.is_err() {
            // What was made inside goes with the namespace.
            drop(ns);
            let _ = netns::remove(netns);
        }
        linked
    }

    fn keep_lease(
        &self,
        id: &str,
        netns: &Path,
        mac: [u8; 6],
        lease: &RecordedLease,
    ) -> Result<Held, String> {
        let ns = NetNs::open(netns).map_err(|e| e.to_string())?;
        let lease = adopted_lease(lease.address, lease.prefix, lease.gateway, lease.server);
        Ok(Box::new(Keeper::start(id, ns, mac, lease)))
    }

    fn remove_namespace(&self, netns: &Path) -> Result<(), String> {
        netns::remove(netns).map_err(|e| e.to_string())
    }

    fn detach(&self, host_link: &str, address: Ipv4Addr) -> Result<(), String> {
        // Without a netlink socket there is nothing to ask: the link is
        // left to the next start's reconcile, silently, as it always was.
        let Ok(mut nl) = netlink() else {
            return Ok(());
        };
        container_link::detach_veth(&mut nl, host_link, address).map_err(|e| e.to_string())
    }

    fn reconcile(&self, owned: &Owned) -> Vec<String> {
        let mut removed = Vec::new();
        if let Ok(mut nl) = netlink() {
            for link in nl.links().unwrap_or_default() {
                if link.name.starts_with(VETH_PREFIX)
                    && !owned.links.contains(&link.name)
                    && nl.delete_link(link.index).is_ok()
                {
                    removed.push(format!("link {}", link.name));
                }
            }
            for route in nl.routes().unwrap_or_default() {
                if route.protocol != RTPROT_MKHOST {
                    continue;
                }
                let is_owned = match route.kind {
                    RouteKind::Unreachable => owned
                        .subnets
                        .iter()
                        .any(|s| s.address == route.dst && s.prefix == route.prefix),
                    _ => route.prefix == 32 && owned.addresses.contains(&route.dst),
                };
                if !is_owned && nl.del_route(&route).is_ok() {
                    removed.push(format!("route {}/{}", route.dst, route.prefix));
                }
            }
        }
        if let Ok(entries) = fs::read_dir(&owned.namespace_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if !owned.namespaces.contains(&path) && netns::remove(&path).is_ok() {
                    removed.push(format!("namespace {}", path.display()));
                }
            }
        }
        removed
    }
}

/// Makes container `id`'s link in `ns` as `link` asks.
fn link_container(id: &str, ns: &NetNs, link: &LinkPlan) -> Result<Linked, String> {
    let mut nl = netlink()?;
    match link {
        LinkPlan::Routed {
            address,
            prefix,
            gateway,
        } => {
            let host_name = veth_name(id);
            let plan = VethPlan {
                host_name: host_name.clone(),
                address: *address,
                prefix: *prefix,
                gateway: *gateway,
                mtu: None,
            };
            container_link::attach_veth(&mut nl, ns, &plan).map_err(|e| e.to_string())?;
            Ok(Linked {
                host_link: Some(host_name),
                mac: None,
                lease: None,
            })
        }
        LinkPlan::Direct { parent, address } => {
            let mac =
                container_link::attach_macvlan(&mut nl, ns, parent).map_err(|e| e.to_string())?;
            let lease = match address {
                DirectAddress::Static {
                    address,
                    prefix,
                    gateway,
                } => {
                    configure_address(ns, *address, *prefix, *gateway)
                        .map_err(|e| e.to_string())?;
                    None
                }
                DirectAddress::Dhcp { hostname, timeout } => {
                    let lease = first_lease(ns, mac, hostname, parent, *timeout)?;
                    let recorded = RecordedLease {
                        address: lease.address,
                        prefix: lease.prefix,
                        gateway: lease.gateway,
                        server: lease.server,
                    };
                    let kept = NetNs::open(ns.path()).map_err(|e| e.to_string())?;
                    let keeper: Held = Box::new(Keeper::start(id, kept, mac, lease));
                    Some((recorded, keeper))
                }
            };
            Ok(Linked {
                host_link: None,
                mac: Some(mac),
                lease,
            })
        }
    }
}

// ---- DHCP on direct networks: the first lease (within a deadline, inside
// the container's namespace), then a keeper thread per container that
// renews it at T1, rebinds at T2, and gives it back (DHCPRELEASE) when the
// container goes.

/// Gets a first lease for the container whose namespace is `ns` and whose
/// `eth0` has `mac`; configures it. Fails after `timeout` with a message
/// naming the NIC.
pub fn first_lease(
    ns: &NetNs,
    mac: [u8; 6],
    hostname: &str,
    parent: &str,
    timeout: Duration,
) -> Result<Lease, String> {
    let hostname = hostname.to_string();
    let lease = ns
        .run(move || -> Result<Option<Lease>, String> {
            let mut client =
                Client::new(CONTAINER_LINK, mac, &hostname).map_err(|e| e.to_string())?;
            client
                .acquire_until(None, Some(Instant::now() + timeout), &mut |_| {})
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("cannot enter the container's network namespace: {e}"))??;
    let lease = lease.ok_or_else(|| {
        format!(
            "no DHCP server answered on {parent} within {} s: check that the NIC is cabled \
             to a network with a DHCP server, or give the network a subnet for static addresses",
            timeout.as_secs()
        )
    })?;
    configure_address(ns, lease.address, lease.prefix, lease.gateway).map_err(|e| e.to_string())?;
    Ok(lease)
}

/// A lease kept alive by a thread; dropping it stops the thread and
/// releases the lease.
pub struct Keeper {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Keeps `lease` for the container `id` (`eth0` with `mac` in `ns`).
    pub fn start(id: &str, ns: NetNs, mac: [u8; 6], lease: Lease) -> Keeper {
        let (stop, stopped) = mpsc::channel::<()>();
        let id = id.to_string();
        let thread = std::thread::Builder::new()
            .name("dhcp-keeper".into())
            .spawn(move || {
                let ns_ref = &ns;
                let who = id.clone();
                let result = ns.run(move || keep(&id, ns_ref, mac, lease, &stopped));
                if let Err(e) = result {
                    log(&format!("container {who}: DHCP keeper cannot run: {e}"));
                }
            })
            .ok();
        Keeper {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits for `until` unless told to stop; true when stopped.
fn wait(stopped: &mpsc::Receiver<()>, until: Instant) -> bool {
    !matches!(
        stopped.recv_timeout(until.saturating_duration_since(Instant::now())),
        Err(RecvTimeoutError::Timeout)
    )
}

fn keep(id: &str, ns: &NetNs, mac: [u8; 6], mut lease: Lease, stopped: &mpsc::Receiver<()>) {
    let mut client = match Client::new(CONTAINER_LINK, mac, "") {
        Ok(c) => c,
        Err(e) => {
            log(&format!("container {id}: DHCP keeper: {e}"));
            return;
        }
    };
    let mut bound_at = Instant::now();
    loop {
        if wait(stopped, bound_at + lease.t1) {
            let _ = client.release(&lease);
            return;
        }
        let t2 = bound_at + lease.t2;
        let end = bound_at + lease.lease;
        let renewed = loop {
            let renewing = Instant::now() < t2;
            match client.extend(&lease, renewing) {
                Ok(Some(Some(new))) => break Some(new),
                Ok(Some(None)) => break None,
                Ok(None) | Err(_) => {}
            }
            let retry = Instant::now()
                + Duration::from_secs(60).min(end.saturating_duration_since(Instant::now()) / 2);
            if Instant::now() >= end || wait(stopped, retry) {
                if Instant::now() < end {
                    let _ = client.release(&lease);
                    return;
                }
                break None;
            }
        };
        match renewed {
            Some(new) => {
                if new.address != lease.address || new.prefix != lease.prefix {
                    log(&format!(
                        "container {id}: DHCP moved it from {} to {}",
                        lease.address, new.address
                    ));
                }
                if let Err(e) = configure_address(ns, new.address, new.prefix, new.gateway) {
                    log(&format!(
                        "container {id}: cannot apply its renewed lease: {e}"
                    ));
                }
                lease = new;
                bound_at = Instant::now();
            }
            None => {
                log(&format!(
                    "container {id}: lost its DHCP lease of {} (refused or expired); it keeps the \
                     address until it is removed",
                    lease.address
                ));
                return;
            }
        }
    }
}

/// A lease rebuilt from a record after a daemon restart: renewed at once.
pub fn adopted_lease(
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    server: Ipv4Addr,
) -> Lease {
    Lease {
        address,
        prefix,
        gateway,
        dns: Vec::new(),
        domain: None,
        server,
        lease: Duration::from_secs(120),
        t1: Duration::ZERO,
        t2: Duration::from_secs(60),
    }
}

// ---- The nftables table hostd owns, a pure function of the daemon's rule
// description (its bridge networks, the containers' published ports). It is
// replaced at each change, so the kernel's rules are always exactly this
// function's output: nothing to patch, and nothing left over.
// docs/networking.md walks through it rule by rule.

fn proto(p: PortProtocol) -> Protocol {
    match p {
        PortProtocol::Tcp => Protocol::Tcp,
        PortProtocol::Udp => Protocol::Udp,
    }
}

fn rule(matches: Vec<Match>, action: Action) -> Rule {
    Rule { matches, action }
}

fn base(name: &str, hook: Hook, kind: ChainKind, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        base: Some(BaseChain {
            hook,
            kind,
            priority,
        }),
        rules,
    }
}

/// The whole table.
pub fn table(networks: &[RuleNetwork], published: &[Published]) -> Table {
    let veths = format!("{VETH_PREFIX}*");
    let mut publish = Vec::new();
    let mut hairpin = Vec::new();
    for container in published {
        for port in &container.ports {
            let mut matches = Vec::new();
            if let Some(ip) = port.host_ip {
                matches.push(Match::DestNet(ip, 32));
            }
            matches.push(Match::DestPort(proto(port.protocol), port.host_port));
            publish.push(rule(
                matches,
                Action::Dnat(container.address, port.container_port),
            ));
            hairpin.push(rule(
                vec![
                    Match::SourceNet(container.address, 32),
                    Match::DestNet(container.address, 32),
                    Match::DestPort(proto(port.protocol), port.container_port),
                ],
                Action::Masquerade,
            ));
        }
    }
    let mut postrouting = hairpin;
    postrouting.push(rule(
        vec![
            Match::SourceNet(Ipv4Addr::new(127, 0, 0, 0), 8),
            Match::OutInterface(veths.clone()),
        ],
        Action::Masquerade,
    ));
    for net in networks.iter().filter(|n| !n.internal) {
        postrouting.push(rule(
            vec![
                Match::SourceNet(net.subnet.address, net.subnet.prefix),
                Match::NotOutInterface(veths.clone()),
            ],
            Action::Masquerade,
        ));
    }
    let mut forward = vec![
        rule(vec![Match::CtStateEstablishedRelated], Action::Accept),
        rule(vec![Match::CtStatusDnat], Action::Accept),
    ];
    for a in networks {
        for b in networks.iter().filter(|b| b.subnet != a.subnet) {
            forward.push(rule(
                vec![
                    Match::SourceNet(a.subnet.address, a.subnet.prefix),
                    Match::DestNet(b.subnet.address, b.subnet.prefix),
                ],
                Action::Drop,
            ));
        }
        if a.internal {
            forward.push(rule(
                vec![
                    Match::SourceNet(a.subnet.address, a.subnet.prefix),
                    Match::NotOutInterface(veths.clone()),
                ],
                Action::Drop,
            ));
        }
    }
    let jump_publish = || {
        vec![rule(
            vec![Match::DestIsLocal],
            Action::Jump("publish".to_string()),
        )]
    };
    // DHCP from 0.0.0.0:68 to 255.255.255.255:67 is the same connection to
    // conntrack whichever NIC sends it: with NAT loaded, a second NIC's
    // DHCP would clash with the first's entry and be dropped (EPERM). The
    // host's DHCP is never NATed, so it is not tracked at all.
    let dhcp_untracked = || {
        [67, 68]
            .map(|port| rule(vec![Match::DestPort(Protocol::Udp, port)], Action::NoTrack))
            .to_vec()
    };
    let mut guard = vec![rule(
        vec![
            Match::NotInInterface("lo".to_string()),
            Match::DestNet(Ipv4Addr::new(127, 0, 0, 0), 8),
        ],
        Action::Drop,
    )];
    guard.extend(dhcp_untracked());
    Table {
        name: TABLE.to_string(),
        chains: vec![
            base("guard", Hook::Prerouting, ChainKind::Filter, -300, guard),
            base(
                "untracked",
                Hook::Output,
                ChainKind::Filter,
                -300,
                dhcp_untracked(),
            ),
            base(
                "prerouting",
                Hook::Prerouting,
                ChainKind::Nat,
                -100,
                jump_publish(),
            ),
            base("output", Hook::Output, ChainKind::Nat, -100, jump_publish()),
            Chain {
                name: "publish".to_string(),
                base: None,
                rules: publish,
            },
            base(
                "postrouting",
                Hook::Postrouting,
                ChainKind::Nat,
                100,
                postrouting,
            ),
            base("forward", Hook::Forward, ChainKind::Filter, 0, forward),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::nftables::render;

    #[test]
    fn rules_follow_networks_and_ports() {
        let nets = [
            RuleNetwork {
                subnet: "172.17.0.0/16".parse().unwrap(),
                internal: false,
            },
            RuleNetwork {
                subnet: "172.18.0.0/16".parse().unwrap(),
                internal: true,
            },
        ];
        let published = [Published {
            address: "172.17.0.2".parse().unwrap(),
            ports: mkhost_shared::network::parse_publish("8080:80").unwrap(),
        }];
        let text = render(&table(&nets, &published));
        for want in [
            "tcp dport 8080 dnat to 172.17.0.2:80",
            "ip saddr 172.17.0.2 ip daddr 172.17.0.2 tcp dport 80 masquerade",
            "ip saddr 172.17.0.0/16 oifname != \"mkv*\" masquerade",
            "ip saddr 172.17.0.0/16 ip daddr 172.18.0.0/16 drop",
            "ip saddr 172.18.0.0/16 ip daddr 172.17.0.0/16 drop",
            "ip saddr 172.18.0.0/16 oifname != \"mkv*\" drop",
            "fib daddr type local jump publish",
            "iifname != \"lo\" ip daddr 127.0.0.0/8 drop",
            "udp dport 67 notrack",
            "udp dport 68 notrack",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert!(!text.contains("ip saddr 172.18.0.0/16 oifname != \"mkv*\" masquerade"));
        // No ports, no publish rules: the table depends only on what is asked.
        let empty = render(&table(&nets[..1], &[]));
        assert!(!empty.contains("dnat to"), "{empty}");
    }
}
