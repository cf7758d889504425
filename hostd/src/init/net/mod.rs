//! Bringing the host onto the network: links up, static addresses, DHCP on
//! the other wired links, default routes, `/etc/resolv.conf`.
//!
//! [`start`] does the synchronous part (loopback and every wired Ethernet link
//! up, static addresses and routes, a first resolv.conf) and starts one DHCP
//! thread per remaining wired link ([`crate::net::dhcp::Client`]). The threads share
//! a [`NetState`] behind a mutex: each lease change updates it, reconfigures
//! the link over netlink and rewrites resolv.conf (atomically, by rename). The
//! boot asks [`Network::settled`] whether every DHCP link has its first lease
//! or the configured wait is over, and [`Network::addresses`] for the ready
//! line. Links that get no lease in time keep trying in the background.
//!
//! A NIC that appears later (a USB NIC, a hot-added card, a driver that
//! creates its netdev asynchronously) is handed over by the hotplug thread
//! ([`Network::adopt`]) and configured the same way: up, its static address
//! from the settings or a DHCP thread of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::init::config::host_config::{Settings, StaticAddr};
use crate::init::timeline;
use crate::net::dhcp::{self, Lease};
use crate::net::netlink::{self, DefaultRoute, Link, Netlink, NetlinkError};

/// Where resolv.conf goes.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The state of one configured link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// DHCP has not got a lease (yet).
    Pending,
    /// A static address.
    Static(StaticAddr),
    /// A DHCP lease.
    Leased(Lease),
    /// DHCP cannot run on it.
    Failed(String),
}

/// Shared network state.
#[derive(Debug)]
pub struct NetState {
    links: BTreeMap<String, LinkState>,
    static_dns: Vec<IpAddr>,
    resolv_conf: PathBuf,
}

/// `nameserver`/`search` lines.
pub fn render_resolv_conf(dns: &[IpAddr], search: &[String]) -> String {
    let mut out = String::from("# written by mkhost init\n");
    for d in dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out
}

impl NetState {
    /// Empty state writing resolv.conf to `resolv_conf`.
    pub fn new(static_dns: Vec<IpAddr>, resolv_conf: PathBuf) -> Self {
        Self {
            links: BTreeMap::new(),
            static_dns,
            resolv_conf,
        }
    }

    /// Static servers first, then each lease's, without duplicates; search
    /// domains from the leases.
    pub fn dns(&self) -> (Vec<IpAddr>, Vec<String>) {
        let mut dns = self.static_dns.clone();
        let mut search = Vec::new();
        for state in self.links.values() {
            if let LinkState::Leased(l) = state {
                for d in &l.dns {
                    let d = IpAddr::V4(*d);
                    if !dns.contains(&d) {
                        dns.push(d);
                    }
                }
                if let Some(domain) = &l.domain {
                    if !search.contains(domain) {
                        search.push(domain.clone());
                    }
                }
            }
        }
        (dns, search)
    }

    /// Rewrites resolv.conf from the current state.
    pub fn write_resolv_conf(&self) -> io::Result<()> {
        let (dns, search) = self.dns();
        mkhost_shared::fs::write_atomic(
            &self.resolv_conf,
            render_resolv_conf(&dns, &search).as_bytes(),
            0o644,
        )
    }

    /// `eth0:10.0.2.15/24` for every configured link.
    pub fn addresses(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|(name, s)| match s {
                LinkState::Static(a) => Some(format!("{name}:{}/{}", a.address, a.prefix)),
                LinkState::Leased(l) => Some(format!("{name}:{}/{}", l.address, l.prefix)),
                _ => None,
            })
            .collect()
    }

    /// Sets a link's state.
    pub fn set(&mut self, name: &str, state: LinkState) {
        self.links.insert(name.to_string(), state);
    }

    /// Whether no link is still waiting for its first lease.
    pub fn none_pending(&self) -> bool {
        !self.links.values().any(|s| *s == LinkState::Pending)
    }
}

/// What configuring a NIC that appears later needs.
struct Late {
    settings: Settings,
    /// Every link the network step or hotplug has seen.
    known: Mutex<BTreeSet<String>>,
}

/// The running network setup (cheap to clone: the state is shared).
#[derive(Clone)]
pub struct Network {
    state: Arc<Mutex<NetState>>,
    deadline: Instant,
    late: Option<Arc<Late>>,
}

impl Network {
    /// Whether boot may go on: every DHCP link has a first answer, or the
    /// wait is over.
    pub fn settled(&self, now: Instant) -> bool {
        now >= self.deadline || self.state.lock().map(|s| s.none_pending()).unwrap_or(true)
    }

    /// Configured addresses, for the ready line.
    pub fn addresses(&self) -> Vec<String> {
        self.state.lock().map(|s| s.addresses()).unwrap_or_default()
    }

    /// A network that is already settled and has nothing (test mode).
    pub fn none() -> Self {
        Self {
            state: Arc::new(Mutex::new(NetState::new(Vec::new(), PathBuf::new()))),
            deadline: Instant::now(),
            late: None,
        }
    }

    /// Configures interface `name`, which appeared after the network step,
    /// like the network step would have: up, then its static address or
    /// DHCP. Interfaces seen before, virtual and wireless ones are left alone.
    pub fn adopt(&self, name: &str) {
        let Some(late) = &self.late else { return };
        match late.known.lock() {
            Ok(mut known) => {
                if !known.insert(name.to_string()) {
                    return;
                }
            }
            Err(_) => return,
        }
        let mut nl = match Netlink::open() {
            Ok(nl) => nl,
            Err(e) => return timeline::error(&format!("{name}: {e}")),
        };
        let link = match nl.links() {
            Ok(links) => links.into_iter().find(|l| l.name == name),
            Err(e) => return timeline::error(&format!("{name}: {e}")),
        };
        let Some(link) = link else { return }; // gone (or renamed) already
        let settings = &late.settings;
        let fixed = settings.interfaces.get(name);
        if fixed.is_none() && (!link.is_wired_ethernet() || is_wireless(name)) {
            return;
        }
        timeline::phase(&format!(
            "network: {name} appeared after the network step; configuring it"
        ));
        if let Err(e) = nl.set_up(link.index, &link.name) {
            timeline::error(&e.to_string());
        }
        if let Some(addr) = fixed {
            match apply_static(&mut nl, &link, addr) {
                Ok(()) => {
                    timeline::phase(&format!("{name}: static address {addr}"));
                    if let Ok(mut s) = self.state.lock() {
                        s.set(name, LinkState::Static(*addr));
                    }
                }
                Err(e) => timeline::error(&e.to_string()),
            }
        } else if settings.dhcp {
            let wait = Duration::from_millis(settings.dhcp_timeout_ms.min(86_400_000));
            spawn_dhcp(link, &settings.hostname, Instant::now() + wait, &self.state);
        }
    }
}

/// Whether `/sys/class/net/NAME` is a wireless device.
fn is_wireless(name: &str) -> bool {
    let dir = Path::new("/sys/class/net").join(name);
    dir.join("wireless").exists() || dir.join("phy80211").exists()
}

fn carrier(name: &str) -> bool {
    fs::read_to_string(Path::new("/sys/class/net").join(name).join("carrier"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

fn route_metric(index: i32) -> u32 {
    200 + u32::try_from(index).unwrap_or(0)
}

/// Applies a static address and its gateway.
fn apply_static(nl: &mut Netlink, link: &Link, addr: &StaticAddr) -> Result<(), NetlinkError> {
    nl.add_address(link.index, &link.name, addr.address, addr.prefix)?;
    if let Some(gw) = addr.gateway {
        nl.add_default_route(
            &link.name,
            &DefaultRoute {
                index: link.index,
                gateway: gw,
                source: Some(addr.address),
                metric: route_metric(link.index),
                protocol: netlink::RTPROT_STATIC,
                onlink: !netlink::on_link(addr.address, addr.prefix, gw),
            },
        )?;
    }
    Ok(())
}

fn lease_route(link: &Link, lease: &Lease, gw: Ipv4Addr) -> DefaultRoute {
    DefaultRoute {
        index: link.index,
        gateway: gw,
        source: Some(lease.address),
        metric: route_metric(link.index),
        protocol: netlink::RTPROT_DHCP,
        onlink: !netlink::on_link(lease.address, lease.prefix, gw),
    }
}

/// Handles one DHCP event of `link`: reconfigure, update state, resolv.conf.
fn on_dhcp_event(nl: &mut Netlink, link: &Link, state: &Mutex<NetState>, event: dhcp::Event) {
    match event {
        dhcp::Event::Bound { lease, renewed } => {
            if renewed {
                timeline::info(&format!(
                    "{}: DHCP lease of {} renewed for {} s",
                    link.name,
                    lease.address,
                    lease.lease.as_secs()
                ));
            } else {
                if let Err(e) = nl.add_address(link.index, &link.name, lease.address, lease.prefix)
                {
                    timeline::error(&e.to_string());
                }
                if let Some(gw) = lease.gateway {
                    if let Err(e) = nl.add_default_route(&link.name, &lease_route(link, &lease, gw))
                    {
                        timeline::error(&e.to_string());
                    }
                }
                let dns: Vec<String> = lease.dns.iter().map(|d| d.to_string()).collect();
                timeline::phase(&format!(
                    "{}: DHCP lease {}/{} gateway={} dns={} server={} lease={}s",
                    link.name,
                    lease.address,
                    lease.prefix,
                    lease.gateway.map_or("-".to_string(), |g| g.to_string()),
                    if dns.is_empty() {
                        "-".to_string()
                    } else {
                        dns.join(",")
                    },
                    lease.server,
                    lease.lease.as_secs()
                ));
            }
            if let Ok(mut s) = state.lock() {
                s.set(&link.name, LinkState::Leased(lease));
                if let Err(e) = s.write_resolv_conf() {
                    timeline::error(&format!("cannot write {RESOLV_CONF}: {e}"));
                }
            }
        }
        dhcp::Event::Lost { lease, reason } => {
            timeline::warning(&format!(
                "{}: lost DHCP lease {}: {reason}",
                link.name, lease.address
            ));
            if let Some(gw) = lease.gateway {
                let _ = nl.del_default_route(&link.name, &lease_route(link, &lease, gw));
            }
            if let Err(e) = nl.del_address(link.index, &link.name, lease.address, lease.prefix) {
                timeline::warning(&e.to_string());
            }
            if let Ok(mut s) = state.lock() {
                s.set(&link.name, LinkState::Pending);
                let _ = s.write_resolv_conf();
            }
        }
        dhcp::Event::Waiting { waited } => timeline::warning(&format!(
            "{}: no DHCP lease after {} ms; booting on, still trying",
            link.name,
            waited.as_millis()
        )),
    }
}

/// One DHCP link's thread body.
fn dhcp_thread(link: Link, hostname: String, deadline: Instant, state: Arc<Mutex<NetState>>) {
    let fail = |state: &Mutex<NetState>, why: String| {
        timeline::error(&format!("{}: {why}", link.name));
        if let Ok(mut s) = state.lock() {
            s.set(&link.name, LinkState::Failed(why));
        }
    };
    // Wait for carrier: quickly until boot's deadline, then calmly forever.
    let mut said = false;
    while !carrier(&link.name) {
        if Instant::now() >= deadline && !said {
            said = true;
            timeline::warning(&format!("{}: no carrier; waiting for a cable", link.name));
            if let Ok(mut s) = state.lock() {
                s.set(&link.name, LinkState::Failed("no carrier".into()));
            }
        }
        let pause = if said { 1000 } else { 50 };
        std::thread::sleep(Duration::from_millis(pause));
    }
    if said {
        if let Ok(mut s) = state.lock() {
            s.set(&link.name, LinkState::Pending);
        }
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&link.mac[..6]);
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => return fail(&state, e.to_string()),
    };
    let client = match dhcp::Client::new(&link.name, mac, &hostname) {
        Ok(c) => c,
        Err(e) => return fail(&state, e.to_string()),
    };
    let mut report = |event| on_dhcp_event(&mut nl, &link, &state, event);
    let err = client.run(deadline, &mut report);
    fail(&state, format!("DHCP client stopped: {err}"));
}

/// Starts the DHCP thread of `link` (its state Pending until a lease).
fn spawn_dhcp(link: Link, hostname: &str, deadline: Instant, state: &Arc<Mutex<NetState>>) {
    if let Ok(mut s) = state.lock() {
        s.set(&link.name, LinkState::Pending);
    }
    let name = link.name.clone();
    let hostname = hostname.to_string();
    let shared = state.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("dhcp-{name}"))
        .stack_size(128 * 1024)
        .spawn(move || dhcp_thread(link, hostname, deadline, shared));
    if let Err(e) = spawned {
        timeline::error(&format!("{name}: cannot start DHCP thread: {e}"));
        if let Ok(mut s) = state.lock() {
            s.set(&name, LinkState::Failed(e.to_string()));
        }
    }
}

/// Brings up links, applies static settings, starts DHCP. `hostname` is sent
/// to DHCP servers.
pub fn start(settings: &Settings) -> Network {
    // At most a day: the boot waits this long at worst.
    let wait = Duration::from_millis(settings.dhcp_timeout_ms.min(86_400_000));
    let deadline = Instant::now() + wait;
    let state = Arc::new(Mutex::new(NetState::new(
        settings.dns.clone(),
        PathBuf::from(RESOLV_CONF),
    )));
    let late = Arc::new(Late {
        settings: settings.clone(),
        known: Mutex::new(BTreeSet::new()),
    });
    let network = Network {
        state: state.clone(),
        deadline,
        late: Some(late.clone()),
    };
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            timeline::error(&format!("network: {e}"));
            return network;
        }
    };
    let links = match nl.links() {
        Ok(l) => l,
        Err(e) => {
            timeline::error(&format!("network: {e}"));
            return network;
        }
    };
    if let Ok(mut known) = late.known.lock() {
        known.extend(links.iter().map(|l| l.name.clone()));
    }
    for link in &links {
        if link.flags & netlink::IFF_LOOPBACK != 0 {
            if let Err(e) = nl.set_up(link.index, &link.name) {
                timeline::error(&e.to_string());
            }
        }
    }
    let wired: Vec<&Link> = links
        .iter()
        .filter(|l| l.is_wired_ethernet() && !is_wireless(&l.name))
        .collect();
    for link in &wired {
        if let Err(e) = nl.set_up(link.index, &link.name) {
            timeline::error(&e.to_string());
        }
    }
    for (name, addr) in &settings.interfaces {
        let Some(link) = links.iter().find(|l| &l.name == name) else {
            timeline::warning(&format!(
                "network: no interface {name} for static address {addr}"
            ));
            continue;
        };
        if !wired.iter().any(|l| l.index == link.index) {
            if let Err(e) = nl.set_up(link.index, &link.name) {
                timeline::error(&e.to_string());
            }
        }
        match apply_static(&mut nl, link, addr) {
            Ok(()) => {
                timeline::phase(&format!("{name}: static address {addr}"));
                if let Ok(mut s) = state.lock() {
                    s.set(name, LinkState::Static(*addr));
                }
            }
            Err(e) => timeline::error(&e.to_string()),
        }
    }
    if let Ok(s) = state.lock() {
        if let Err(e) = s.write_resolv_conf() {
            timeline::error(&format!("cannot write {RESOLV_CONF}: {e}"));
        }
    }
    let dhcp_links: Vec<Link> = wired
        .iter()
        .filter(|l| !settings.interfaces.contains_key(&l.name))
        .map(|l| (*l).clone())
        .collect();
    let names: Vec<&str> = wired.iter().map(|l| l.name.as_str()).collect();
    timeline::phase(&format!(
        "network: {} wired link(s) up ({}), dhcp={}",
        wired.len(),
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        },
        if settings.dhcp { "on" } else { "off" }
    ));
    if !settings.dhcp {
        return network;
    }
    for link in dhcp_links {
        spawn_dhcp(link, &settings.hostname, deadline, &state);
    }
    network
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
            domain: Some("lab".into()),
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease: Duration::from_secs(86400),
            t1: Duration::from_secs(43200),
            t2: Duration::from_secs(75600),
        }
    }

    #[test]
    fn resolv_conf_merges_static_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let mut s = NetState::new(vec!["1.1.1.1".parse().unwrap()], path.clone());
        s.set("eth0", LinkState::Leased(lease()));
        s.set(
            "eth1",
            LinkState::Static(StaticAddr {
                address: Ipv4Addr::new(192, 168, 1, 2),
                prefix: 16,
                gateway: None,
            }),
        );
        s.set("eth2", LinkState::Pending);
        s.write_resolv_conf().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# written by mkhost init\nnameserver 1.1.1.1\nnameserver 10.0.2.3\nsearch lab\n"
        );
        assert_eq!(s.addresses(), ["eth0:10.0.2.15/24", "eth1:192.168.1.2/16"]);
        assert!(!s.none_pending());
        s.set("eth2", LinkState::Failed("no carrier".into()));
        assert!(s.none_pending());
        assert!(!dir.path().join(".resolv.conf.tmp").exists());
    }

    #[test]
    fn empty_resolv_conf() {
        assert_eq!(render_resolv_conf(&[], &[]), "# written by mkhost init\n");
    }
}
