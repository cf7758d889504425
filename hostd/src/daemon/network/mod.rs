//! Container networks: the daemon's side of `--network`, `-p` and
//! `network create|rm|ls|inspect`.
//!
//! [`Networks`] owns every network (the default `bridge`, those from the
//! profile and host.toml, those created over the socket, kept under
//! [`NetworkOptions::saved`] so that they survive a reboot), their address
//! pools ([`ipam`]), their DNS names ([`crate::net::dns::Records`]), the
//! published ports and the packet filter's rules ([`ruleset`]). For each
//! container it [`prepare`](Networks::prepare)s a network namespace before
//! the runtime creates the container (at `<state>/netns/<id>`, so it
//! outlives restarts of the container and of the daemon) and
//! [`release`](Networks::release)s everything exactly once when the
//! container goes.
//!
//! It decides; the backend ([`Networking`]) makes the kernel objects: the
//! host's forwarding, gateways, namespaces, links, DHCP leases, rules, port
//! reservations and DNS servers (on Linux `backend::linux::network`).
//!
//! **Bridge networks** are routed, not bridged: each container gets a veth
//! whose host end (`mkv<id>`) has no address, answers ARP for the subnet
//! (proxy ARP) and carries a /32 route to the container; the gateway
//! address sits on the host's `lo`. No Linux bridge means no 1,024-port
//! limit, and every packet between containers passes the host's nftables
//! table, which isolates networks and publishes ports without a proxy
//! process. **Direct networks** give the container a macvlan on a physical
//! NIC, with an address by DHCP or from the network's subnet.
//!
//! **Re-adoption.** The containers' records are the truth: a new daemon
//! [`adopt`](Networks::adopt)s each attachment (address, ports, DNS names),
//! then [`reconcile`](Networks::reconcile) removes veths, routes and
//! namespace files no container owns and replaces the nftables table.
//! docs/networking.md has the whole design.

pub mod ipam;
pub mod ruleset;

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mkhost_shared::control::{NetworkCounts, NetworkInfo, NetworkMember};
use mkhost_shared::fs::write_atomic;
use mkhost_shared::network::{
    Attachment, Driver, NetworkSpec, PortMapping, Protocol, Subnet, DEFAULT_NETWORK,
    DEFAULT_SUBNET, MODE_HOST, MODE_NONE, POOL_FIRST, POOL_LAST,
};

use crate::backend::network::{DirectAddress, Held, Lease, LinkPlan, Networking, Owned};
use crate::log::log;
use crate::net::dns::{self, Records};
use ipam::Ipam;

/// How long a direct container waits for its first DHCP lease.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(10);

/// A network as configured before the daemon starts (profile, host.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The network.
    pub spec: NetworkSpec,
    /// `profile` or `host.toml`.
    pub origin: String,
}

/// What [`Networks::start`] needs.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The daemon's run-time state directory: namespaces go to `netns/`
    /// (gone with a reboot).
    pub state: PathBuf,
    /// Where created networks are kept (`<name>.json`, persistent); one
    /// under `<state>/networks/`, where earlier daemons kept them, is read
    /// too.
    pub saved: PathBuf,
    /// Networks from the image and host.toml (a `bridge` entry replaces the
    /// default network's settings).
    pub definitions: Vec<Definition>,
    /// The host's resolver configuration.
    pub resolv_conf: PathBuf,
    /// How long a direct container waits for its first DHCP lease.
    pub dhcp_timeout: Duration,
}

/// What a container gets from [`Networks::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Its record's network part.
    pub attachment: Attachment,
    /// The namespace the runtime joins (None: the host's for `host`, a new
    /// one with only loopback for `none`).
    pub netns: Option<PathBuf>,
    /// `/etc/hosts` lines after Docker's standard ones (`IP\tHOSTNAME`).
    pub hosts_extra: String,
    /// `/etc/resolv.conf` when the network serves DNS (None: derived from
    /// the host's).
    pub resolv_conf: Option<String>,
}

/// One network.
struct Net {
    spec: NetworkSpec,
    origin: String,
    ipam: Option<Ipam>,
    records: Arc<Records>,
    /// Its DNS server (created bridge networks).
    dns: Option<Held>,
}

/// One container on a network.
struct Member {
    name: String,
    /// Its DNS names: name, host name, aliases.
    names: Vec<String>,
    attachment: Attachment,
    /// Its published ports' reservations.
    _reservations: Option<Held>,
    /// What renews its DHCP lease.
    _keeper: Option<Held>,
}

/// Who publishes a host port: (host address or every one, container id).
type PortUsers = Vec<(Option<Ipv4Addr>, String)>;

struct State {
    nets: BTreeMap<String, Net>,
    members: BTreeMap<String, Member>,
    ports: BTreeMap<(Protocol, u16), PortUsers>,
}

/// Every network and attachment of the daemon.
pub struct Networks {
    options: NetworkOptions,
    /// Makes the kernel objects.
    backend: Arc<dyn Networking>,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Networks {
    /// Sets up the host side (forwarding, loopback routing for published
    /// ports, each network's gateway, unreachable route and DNS server) and
    /// loads the networks created earlier. A network that cannot be set up
    /// is logged and left out; the daemon runs on. `backend` makes the
    /// kernel objects.
    pub fn start(options: NetworkOptions, backend: Arc<dyn Networking>) -> Networks {
        let _ = fs::create_dir_all(options.state.join("netns"));
        for failed in backend.prepare_host() {
            log(&format!("networks: {failed}"));
        }
        let networks = Networks {
            options,
            backend,
            state: Mutex::new(State {
                nets: BTreeMap::new(),
                members: BTreeMap::new(),
                ports: BTreeMap::new(),
            }),
        };
        let mut wanted = vec![Definition {
            spec: NetworkSpec {
                name: DEFAULT_NETWORK.to_string(),
                subnet: DEFAULT_SUBNET.parse().ok(),
                ..NetworkSpec::default()
            },
            origin: "default".to_string(),
        }];
        for def in &networks.options.definitions {
            wanted.retain(|w| w.spec.name != def.spec.name);
            wanted.push(def.clone());
        }
        for saved in networks.saved() {
            if wanted.iter().any(|w| w.spec.name == saved.name) {
                continue;
            }
            wanted.push(Definition {
                spec: saved,
                origin: "api".to_string(),
            });
        }
        for def in wanted {
            let name = def.spec.name.clone();
            if let Err(e) = networks.add(def.spec, &def.origin) {
                log(&format!(
                    "networks: {name} ({}) is not available: {e}",
                    def.origin
                ));
            }
        }
        networks
    }

    /// The directories created networks may be kept in: the persistent
    /// one, then the run-time one of earlier daemons.
    fn saved_dirs(&self) -> [PathBuf; 2] {
        [
            self.options.saved.clone(),
            self.options.state.join("networks"),
        ]
    }

    fn saved(&self) -> Vec<NetworkSpec> {
        let mut list: Vec<NetworkSpec> = Vec::new();
        for dir in self.saved_dirs() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // Leftovers of an interrupted atomic write.
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                match fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                    serde_json::from_slice::<NetworkSpec>(&b).map_err(|e| e.to_string())
                }) {
                    Ok(spec) if list.iter().any(|s| s.name == spec.name) => {}
                    Ok(spec) => list.push(spec),
                    Err(e) => log(&format!("networks: ignoring {}: {e}", path.display())),
                }
            }
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Where containers' namespace files go (gone with a reboot).
    fn netns_dir(&self) -> PathBuf {
        self.options.state.join("netns")
    }

    /// Fills in a bridge network's subnet (next free /16 of the pool) and
    /// gateway, and checks it against the host's links and the other
    /// networks.
    fn resolve(&self, state: &State, mut spec: NetworkSpec) -> Result<NetworkSpec, String> {
        spec.validate().map_err(|e| e.to_string())?;
        let host = self.backend.host_subnets()?;
        let taken: Vec<Subnet> = state
            .nets
            .values()
            .filter(|n| n.spec.driver == Driver::Bridge)
            .filter_map(|n| n.spec.subnet)
            .collect();
        if spec.driver == Driver::Bridge && spec.subnet.is_none() {
            let mut third = u32::from(POOL_FIRST);
            while third <= u32::from(POOL_LAST) {
                let candidate = Subnet {
                    address: Ipv4Addr::from(third),
                    prefix: 16,
                };
                if !taken.iter().chain(&host).any(|s| s.overlaps(&candidate)) {
                    spec.subnet = Some(candidate);
                    break;
                }
                third += 1 << 16;
            }
            if spec.subnet.is_none() {
                return Err(format!(
                    "no free subnet left in {POOL_FIRST}/16 to {POOL_LAST}/16: give one with --subnet"
                ));
            }
        }
        if spec.driver == Driver::Bridge {
            let subnet = spec.subnet.expect("set above");
            if let Some(h) = host.iter().find(|h| h.overlaps(&subnet)) {
                return Err(format!(
                    "subnet {subnet} overlaps the host's own network {h}: pick another subnet \
                     (e.g. --subnet 10.200.0.0/16, or `subnet` in host.toml)"
                ));
            }
            if let Some((other, _)) = state.nets.iter().find(|(_, n)| {
                n.spec.driver == Driver::Bridge
                    && n.spec.subnet.is_some_and(|s| s.overlaps(&subnet))
            }) {
                return Err(format!("subnet {subnet} overlaps network {other:?}"));
            }
            spec.gateway.get_or_insert(subnet.first_host());
        } else {
            let parent = spec.parent.clone().unwrap_or_default();
            if !self.backend.has_link(&parent)? {
                return Err(format!(
                    "NIC {parent:?} for direct network {:?} does not exist on this host \
                     (`ip link` lists the NICs; set `parent`)",
                    spec.name
                ));
            }
        }
        Ok(spec)
    }

    /// Sets a network up on the host and registers it. The caller writes
    /// the nftables table: at start that waits for [`Networks::reconcile`],
    /// so the published ports of re-adopted containers never drop out of
    /// it meanwhile.
    fn add(&self, spec: NetworkSpec, origin: &str) -> Result<NetworkSpec, String> {
        let mut state = lock(&self.state);
        if state.nets.contains_key(&spec.name) {
            return Err(format!("a network named {:?} already exists", spec.name));
        }
        let spec = self.resolve(&state, spec)?;
        let records = Records::new();
        let mut net = Net {
            ipam: None,
            records: Arc::clone(&records),
            dns: None,
            spec: spec.clone(),
            origin: origin.to_string(),
        };
        if let (Some(subnet), Some(gateway)) = (spec.subnet, spec.gateway) {
            net.ipam = Some(Ipam::new(subnet, gateway));
        }
        if spec.driver == Driver::Bridge {
            let subnet = spec.subnet.expect("resolved");
            let gateway = spec.gateway.expect("resolved");
            self.backend.add_gateway(subnet, gateway)?;
            if spec.name != DEFAULT_NETWORK {
                let upstreams = self.upstreams();
                let at = SocketAddrV4::new(gateway, 53);
                match self.backend.serve_dns(at, records, upstreams) {
                    Ok(server) => net.dns = Some(server),
                    Err(e) => {
                        let _ = self.backend.remove_gateway(subnet, gateway);
                        return Err(format!("cannot serve DNS on {gateway}:53: {e}"));
                    }
                }
            }
        }
        state.nets.insert(spec.name.clone(), net);
        Ok(spec)
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        dns::upstreams_from_resolv_conf(
            &fs::read_to_string(&self.options.resolv_conf).unwrap_or_default(),
        )
    }

    /// `network create`: sets the network up and keeps its definition.
    pub fn create(&self, spec: NetworkSpec) -> Result<NetworkInfo, String> {
        if [MODE_HOST, MODE_NONE].contains(&spec.name.as_str()) {
            return Err(format!(
                "{:?} is a network mode, not a network name",
                spec.name
            ));
        }
        let spec = self.add(spec, "api")?;
        if let Err(e) = self.apply_rules() {
            let _ = self.remove(&spec.name);
            return Err(e);
        }
        let path = self.options.saved.join(format!("{}.json", spec.name));
        let saved = fs::create_dir_all(&self.options.saved).and_then(|()| {
            write_atomic(&path, &serde_json::to_vec(&spec).unwrap_or_default(), 0o600)
        });
        if let Err(e) = saved {
            let _ = self.remove(&spec.name);
            return Err(format!("cannot save {}: {e}", path.display()));
        }
        log(&format!(
            "network {} created ({}, {})",
            spec.name,
            spec.driver,
            spec.subnet
                .map(|s| s.to_string())
                .unwrap_or_else(|| "DHCP".into())
        ));
        self.inspect(&spec.name)
    }

    /// `network rm`: refuses while containers use it and for the default
    /// network.
    pub fn remove(&self, name: &str) -> Result<NetworkInfo, String> {
        let info = self.inspect(name)?;
        if name == DEFAULT_NETWORK {
            return Err(format!(
                "{name:?} is the default network and cannot be removed"
            ));
        }
        if !info.containers.is_empty() {
            let names: Vec<&str> = info.containers.iter().map(|m| m.name.as_str()).collect();
            return Err(format!(
                "network {name:?} is in use by {} container(s): {} (remove them first)",
                names.len(),
                names.join(", ")
            ));
        }
        let mut state = lock(&self.state);
        let Some(net) = state.nets.remove(name) else {
            return Err(unknown(name));
        };
        drop(state);
        drop(net.dns);
        if let (Driver::Bridge, Some(subnet), Some(gw)) =
            (net.spec.driver, net.spec.subnet, net.spec.gateway)
        {
            self.backend.remove_gateway(subnet, gw)?;
        }
        for dir in self.saved_dirs() {
            let _ = fs::remove_file(dir.join(format!("{name}.json")));
        }
        self.apply_rules()?;
        log(&format!("network {name} removed"));
        Ok(info)
    }

    /// Every network, by name.
    pub fn list(&self) -> Vec<NetworkInfo> {
        let state = lock(&self.state);
        state.nets.keys().map(|n| info(&state, n)).collect()
    }

    /// One network.
    pub fn inspect(&self, name: &str) -> Result<NetworkInfo, String> {
        let state = lock(&self.state);
        if !state.nets.contains_key(name) {
            return Err(unknown(name));
        }
        Ok(info(&state, name))
    }

    /// Sets up container `id`'s network as `network` (a mode or a network
    /// name) asks. On failure nothing is left: no namespace, link, address,
    /// port, rule or name.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &self,
        id: &str,
        name: &str,
        hostname: &str,
        network: &str,
        ports: &[PortMapping],
        aliases: &[String],
        ip: Option<Ipv4Addr>,
    ) -> Result<Prepared, String> {
        if network == MODE_HOST || network == MODE_NONE {
            return Ok(Prepared {
                attachment: Attachment {
                    network: network.to_string(),
                    ..Attachment::default()
                },
                netns: None,
                hosts_extra: String::new(),
                resolv_conf: None,
            });
        }
        let ns_path = self.netns_dir().join(id);
        let mut state = lock(&self.state);
        let net = state.nets.get(network).ok_or_else(|| unknown(network))?;
        let spec = net.spec.clone();
        if spec.driver == Driver::Direct && !ports.is_empty() {
            return Err(format!(
                "-p applies to bridge networks: a container on direct network {network:?} has its \
                 own address on the NIC's network; reach its ports there"
            ));
        }
        check_ports(&state, ports)?;
        let reservations = self.backend.reserve_ports(ports)?;
        let address = match (
            &spec.driver,
            state.nets.get_mut(network).and_then(|n| n.ipam.as_mut()),
        ) {
            (_, Some(ipam)) => Some(ipam.allocate(id, ip)?),
            (Driver::Direct, None) if ip.is_some() => {
                return Err(format!(
                    "--ip needs a subnet on network {network:?} (it hands out addresses by DHCP)"
                ))
            }
            _ => None,
        };
        // The address and ports are claimed; the links are made without
        // the lock (a DHCP lease may take seconds), and the claims given
        // back if that fails.
        for port in ports {
            state
                .ports
                .entry((port.protocol, port.host_port))
                .or_default()
                .push((port.host_ip, id.to_string()));
        }
        drop(state);
        let undo_claims = || {
            let mut state = lock(&self.state);
            if let (Some(ip), Some(ipam)) = (
                address,
                state.nets.get_mut(network).and_then(|n| n.ipam.as_mut()),
            ) {
                ipam.free(id, ip);
            }
            for users in state.ports.values_mut() {
                users.retain(|(_, owner)| owner != id);
            }
            state.ports.retain(|_, users| !users.is_empty());
        };
        let prefix = spec.subnet.map(|s| s.prefix).unwrap_or(0);
        let link = match spec.driver {
            Driver::Bridge => LinkPlan::Routed {
                address: address.expect("bridge networks have a pool"),
                prefix,
                gateway: spec.gateway.expect("resolved"),
            },
            Driver::Direct => LinkPlan::Direct {
                parent: spec.parent.clone().unwrap_or_default(),
                address: match address {
                    Some(address) => DirectAddress::Static {
                        address,
                        prefix,
                        gateway: spec.gateway,
                    },
                    None => DirectAddress::Dhcp {
                        hostname: hostname.to_string(),
                        timeout: self.options.dhcp_timeout,
                    },
                },
            },
        };
        let linked = match self.backend.attach(id, &ns_path, &link) {
            Ok(linked) => linked,
            Err(e) => {
                undo_claims();
                return Err(e);
            }
        };
        let mut attachment = Attachment {
            network: network.to_string(),
            address,
            prefix,
            gateway: spec.gateway,
            aliases: aliases.to_vec(),
            ports: ports.to_vec(),
            netns: Some(ns_path.display().to_string()),
            host_link: linked.host_link,
            mac: linked.mac.map(format_mac),
            ..Attachment::default()
        };
        let mut keeper = None;
        if let Some((lease, kept)) = linked.lease {
            attachment.address = Some(lease.address);
            attachment.prefix = lease.prefix;
            attachment.gateway = lease.gateway;
            attachment.dhcp_server = Some(lease.server);
            keeper = Some(kept);
        }
        let container_ip = attachment.address.expect("set above");
        let names = dns_names(name, hostname, aliases);
        let mut state = lock(&self.state);
        match state.nets.get(network) {
            Some(net) => {
                for n in &names {
                    net.records.add(n, container_ip);
                }
            }
            None => {
                drop(state);
                drop(keeper);
                if let Some(link) = &attachment.host_link {
                    let _ = self.backend.detach(link, container_ip);
                }
                let _ = self.backend.remove_namespace(&ns_path);
                undo_claims();
                return Err(format!("network {network:?} was removed meanwhile"));
            }
        }
        let dns_server = state
            .nets
            .get(network)
            .and_then(|n| n.dns.as_ref().map(|_| spec.gateway));
        state.members.insert(
            id.to_string(),
            Member {
                name: name.to_string(),
                names,
                attachment: attachment.clone(),
                _reservations: Some(reservations),
                _keeper: keeper,
            },
        );
        drop(state);
        if !ports.is_empty() {
            if let Err(e) = self.apply_rules() {
                self.release(id);
                return Err(e);
            }
        }
        let resolv_conf = dns_server.flatten().map(|gw| {
            let host = fs::read_to_string(&self.options.resolv_conf).unwrap_or_default();
            embedded_resolv_conf(gw, &host)
        });
        Ok(Prepared {
            hosts_extra: format!("{container_ip}\t{hostname}\n"),
            attachment,
            netns: Some(ns_path),
            resolv_conf,
        })
    }

    /// Sets container `id`'s network up again after a reboot, from its
    /// record's last `attachment`: the same network, ports and aliases, and
    /// the same address if it is still free (else a new one; a DHCP network
    /// asks for a new lease).
    pub fn reattach(
        &self,
        id: &str,
        name: &str,
        hostname: &str,
        attachment: &Attachment,
    ) -> Result<Prepared, String> {
        let wanted = attachment.address.filter(|_| {
            lock(&self.state)
                .nets
                .get(&attachment.network)
                .is_some_and(|n| n.ipam.is_some())
        });
        let prepare = |ip| {
            self.prepare(
                id,
                name,
                hostname,
                &attachment.network,
                &attachment.ports,
                &attachment.aliases,
                ip,
            )
        };
        match (prepare(wanted), wanted) {
            (Err(e), Some(ip)) => {
                log(&format!(
                    "networks: container {name} cannot have {ip} again ({e}); taking another address"
                ));
                prepare(None)
            }
            (result, _) => result,
        }
    }

    /// Takes container `id`'s attachment back after a daemon restart.
    pub fn adopt(&self, id: &str, name: &str, hostname: &str, attachment: &Attachment) {
        let Some(address) = attachment.address else {
            return;
        };
        let mut state = lock(&self.state);
        let Some(net) = state.nets.get_mut(&attachment.network) else {
            log(&format!(
                "networks: container {name} was on network {:?}, which is gone",
                attachment.network
            ));
            return;
        };
        if let Some(ipam) = net.ipam.as_mut() {
            if !ipam.adopt(id, address) {
                log(&format!(
                    "networks: {address} of container {name} is taken twice"
                ));
            }
        }
        let names = dns_names(name, hostname, &attachment.aliases);
        for n in &names {
            if !net.records.lookup(n).contains(&address) {
                net.records.add(n, address);
            }
        }
        let mut keeper = None;
        if let (Some(server), Some(mac), Some(path)) =
            (attachment.dhcp_server, &attachment.mac, &attachment.netns)
        {
            let lease = Lease {
                address,
                prefix: attachment.prefix,
                gateway: attachment.gateway,
                server,
            };
            let kept = parse_mac(mac).and_then(|mac| {
                self.backend
                    .keep_lease(id, Path::new(path), mac, &lease)
                    .ok()
            });
            match kept {
                Some(kept) => keeper = Some(kept),
                None => log(&format!(
                    "networks: cannot renew the lease of container {name}"
                )),
            }
        }
        for port in &attachment.ports {
            state
                .ports
                .entry((port.protocol, port.host_port))
                .or_default()
                .push((port.host_ip, id.to_string()));
        }
        let reservations = self
            .backend
            .reserve_ports(&attachment.ports)
            .inspect_err(|e| log(&format!("networks: container {name}: {e}")))
            .ok();
        state.members.insert(
            id.to_string(),
            Member {
                name: name.to_string(),
                names,
                attachment: attachment.clone(),
                _reservations: reservations,
                _keeper: keeper,
            },
        );
    }

    /// After adoption: removes what no container owns (veths named
    /// `mkv*`, hostd's routes, namespace files) and replaces the nftables
    /// table. Returns what it removed, for the log.
    pub fn reconcile(&self) -> Vec<String> {
        let state = lock(&self.state);
        let owned = Owned {
            links: state
                .members
                .values()
                .filter_map(|m| m.attachment.host_link.clone())
                .collect(),
            addresses: state
                .members
                .values()
                .filter_map(|m| m.attachment.address)
                .collect(),
            subnets: state
                .nets
                .values()
                .filter(|n| n.spec.driver == Driver::Bridge)
                .filter_map(|n| n.spec.subnet)
                .collect(),
            namespaces: state
                .members
                .values()
                .filter_map(|m| m.attachment.netns.as_ref().map(PathBuf::from))
                .collect(),
            namespace_dir: self.netns_dir(),
        };
        drop(state);
        let removed = self.backend.reconcile(&owned);
        if let Err(e) = self.apply_rules() {
            log(&format!("networks: {e}"));
        }
        removed
    }

    /// Frees everything container `id` holds, once: its DNS names, ports,
    /// address, lease, veth and namespace. Calling it again does nothing.
    /// The container `id` is called `name` now: its DNS name follows
    /// (its host name and aliases stay).
    pub fn rename(&self, id: &str, name: &str) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let Some(member) = state.members.get_mut(id) else {
            return;
        };
        let old = std::mem::replace(&mut member.name, name.to_string());
        let a = &member.attachment;
        let keep_old = a.aliases.iter().any(|n| n.eq_ignore_ascii_case(&old))
            || member
                .names
                .iter()
                .skip(1)
                .any(|n| n.eq_ignore_ascii_case(&old));
        if let (Some(net), Some(ip)) = (state.nets.get_mut(&a.network), a.address) {
            if !keep_old {
                net.records.remove(&old, ip);
            }
            if !net.records.lookup(name).contains(&ip) {
                net.records.add(name, ip);
            }
        }
        if !keep_old {
            member.names.retain(|n| n != &old);
        }
        member.names.insert(0, name.to_string());
    }

    pub fn release(&self, id: &str) {
        let mut state = lock(&self.state);
        let Some(member) = state.members.remove(id) else {
            return;
        };
        let a = &member.attachment;
        if let Some(net) = state.nets.get_mut(&a.network) {
            if let Some(ip) = a.address {
                if let Some(ipam) = net.ipam.as_mut() {
                    ipam.free(id, ip);
                }
                for name in &member.names {
                    net.records.remove(name, ip);
                }
            }
        }
        let had_ports = !a.ports.is_empty();
        for users in state.ports.values_mut() {
            users.retain(|(_, owner)| owner != id);
        }
        state.ports.retain(|_, users| !users.is_empty());
        drop(state);
        let attachment = member.attachment.clone();
        drop(member);
        // Unmounting the namespace file drops its last reference (the
        // container is gone): the kernel then destroys the namespace, and
        // with it the container's end of the veth, which takes the host's
        // end and its route along, in its own cleanup work, batched.
        // Deleting the veth here would cost 8-25 ms of RCU grace periods per
        // container on the path of `rm`. If the file cannot be removed, the
        // veth is deleted here instead.
        let removed = attachment.netns.as_ref().is_none_or(|path| {
            self.backend
                .remove_namespace(Path::new(path))
                .inspect_err(|e| log(&format!("networks: cannot remove {path}: {e}")))
                .is_ok()
        });
        if let (false, Some(link)) = (removed, &attachment.host_link) {
            let address = attachment.address.unwrap_or(Ipv4Addr::UNSPECIFIED);
            if let Err(e) = self.backend.detach(link, address) {
                log(&format!("networks: container {id}: {e}"));
            }
        }
        if had_ports {
            if let Err(e) = self.apply_rules() {
                log(&format!("networks: {e}"));
            }
        }
    }

    /// Replaces the packet filter's rules with those the current state asks
    /// for.
    fn apply_rules(&self) -> Result<(), String> {
        let state = lock(&self.state);
        let (networks, published) = ruleset::describe(
            state.nets.values().map(|n| &n.spec),
            state.members.values().map(|m| &m.attachment),
        );
        // The lock is held while the kernel takes it: two changes never race
        // each other's older view into the kernel.
        let applied = self.backend.apply_rules(&networks, &published);
        drop(state);
        applied
    }

    /// A container's published ports.
    pub fn ports(&self, id: &str) -> Vec<PortMapping> {
        lock(&self.state)
            .members
            .get(id)
            .map(|m| m.attachment.ports.clone())
            .unwrap_or_default()
    }

    /// What `status` reports: networks, attached containers, addresses in
    /// use and the rules in the packet filter (hostd's nftables table).
    pub fn status(&self) -> NetworkCounts {
        let (attached, leases) = self.counts();
        let networks = lock(&self.state).nets.len();
        let nft_rules = self.backend.rule_count().unwrap_or(0);
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        NetworkCounts {
            networks: n(networks),
            attached: n(attached),
            leases: n(leases),
            nft_rules: n(nft_rules),
        }
    }

    /// Attached containers and addresses in use across networks.
    fn counts(&self) -> (usize, usize) {
        let state = lock(&self.state);
        let leases = state
            .nets
            .values()
            .filter_map(|n| n.ipam.as_ref())
            .map(Ipam::in_use)
            .sum::<usize>()
            + state
                .members
                .values()
                .filter(|m| m.attachment.dhcp_server.is_some())
                .count();
        (state.members.len(), leases)
    }
}

/// The names a container answers to on its network, each once.
fn dns_names(name: &str, hostname: &str, aliases: &[String]) -> Vec<String> {
    let mut names = vec![name.to_string()];
    for n in std::iter::once(hostname).chain(aliases.iter().map(String::as_str)) {
        if !names.iter().any(|k| k.eq_ignore_ascii_case(n)) {
            names.push(n.to_string());
        }
    }
    names
}

fn unknown(name: &str) -> String {
    format!("no network named {name:?} (`hostd network ls` lists them; `hostd network create {name}` makes it)")
}

fn info(state: &State, name: &str) -> NetworkInfo {
    let net = &state.nets[name];
    let mut containers: Vec<NetworkMember> = state
        .members
        .iter()
        .filter(|(_, m)| m.attachment.network == name)
        .map(|(id, m)| NetworkMember {
            name: m.name.clone(),
            id: id.clone(),
            address: m
                .attachment
                .address
                .map(|a| format!("{a}/{}", m.attachment.prefix))
                .unwrap_or_default(),
        })
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    NetworkInfo {
        spec: net.spec.clone(),
        origin: net.origin.clone(),
        containers,
    }
}

/// Refuses ports another container has: the same protocol and port, on
/// the same address or where either side listens on every address.
fn check_ports(state: &State, ports: &[PortMapping]) -> Result<(), String> {
    for port in ports {
        if let Some(users) = state.ports.get(&(port.protocol, port.host_port)) {
            if let Some((_, owner)) = users
                .iter()
                .find(|(ip, _)| ip.is_none() || port.host_ip.is_none() || *ip == port.host_ip)
            {
                let who = state
                    .members
                    .get(owner)
                    .map(|m| m.name.as_str())
                    .unwrap_or(owner);
                return Err(format!(
                    "host port {}/{} is already published by container {who}",
                    port.host_port, port.protocol
                ));
            }
        }
    }
    Ok(())
}

/// `/etc/resolv.conf` for a container on a network with hostd's DNS: the
/// gateway as the only name server, the host's search domains and options.
pub fn embedded_resolv_conf(gateway: Ipv4Addr, host: &str) -> String {
    let mut out = format!("nameserver {gateway}\n");
    for line in host.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first == "search" || first == "options" {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_points_at_the_gateway() {
        let text = embedded_resolv_conf(
            "172.18.0.1".parse().unwrap(),
            "nameserver 10.0.2.3\nsearch lab.example\noptions ndots:2\n",
        );
        assert_eq!(
            text,
            "nameserver 172.18.0.1\nsearch lab.example\noptions ndots:2\n"
        );
    }

    #[test]
    fn macs_round_trip() {
        let mac = [0x02, 0xab, 0, 1, 0xff, 9];
        assert_eq!(format_mac(mac), "02:ab:00:01:ff:09");
        assert_eq!(parse_mac("02:ab:00:01:ff:09"), Some(mac));
        assert_eq!(parse_mac("02:ab"), None);
    }

    #[test]
    fn port_conflicts_consider_wildcards() {
        let mut state = State {
            nets: BTreeMap::new(),
            members: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        state.ports.insert(
            (Protocol::Tcp, 8080),
            vec![(Some(Ipv4Addr::LOCALHOST), "a".into())],
        );
        let p = |s: &str| mkhost_shared::network::parse_publish(s).unwrap();
        assert!(check_ports(&state, &p("8080:80"))
            .unwrap_err()
            .contains("8080/tcp"));
        assert!(check_ports(&state, &p("127.0.0.1:8080:80")).is_err());
        assert!(check_ports(&state, &p("10.0.0.1:8080:80")).is_ok());
        assert!(check_ports(&state, &p("8080:80/udp")).is_ok());
    }
}
