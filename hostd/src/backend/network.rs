//! The kernel side of container networking, as the daemon asks for it.
//!
//! The daemon's network code (`daemon::network`) decides: which networks
//! exist and with which subnets, which address each container gets (IPAM),
//! its DNS names, which host ports it publishes, and when each piece is set
//! up or torn down. A [`Networking`] backend makes those decisions out of
//! kernel objects and owns them: the host's forwarding, each bridge
//! network's gateway, a container's network namespace and its link (a
//! routed veth-like pair, or a link of its own on a NIC with a static
//! address or a DHCP lease), the packet filter's NAT and isolation rules
//! (from the neutral [`RuleNetwork`] and [`Published`]), the sockets that
//! reserve published ports, and the DNS server bound on a gateway. On Linux
//! that is rtnetlink, nf_tables and bind-mounted network namespaces
//! (`backend::linux::network`).
//!
//! Only plain data crosses; what the backend keeps alive for the daemon (a
//! DNS server, a lease's renewals, port reservations) comes back as a
//! [`Held`] value that lasts until the daemon drops it.

use std::any::Any;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mkhost_shared::network::{PortMapping, Subnet};

use crate::net::dns::Records;

/// Something the backend keeps up for the daemon until the daemon drops it
/// (a DNS server, a DHCP lease's renewals, port reservations).
pub type Held = Box<dyn Any + Send>;

/// A bridge network as the packet filter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleNetwork {
    /// Its subnet.
    pub subnet: Subnet,
    /// No traffic out of the host.
    pub internal: bool,
}

/// A container's published ports as the packet filter sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The container's address.
    pub address: Ipv4Addr,
    /// Its mappings.
    pub ports: Vec<PortMapping>,
}

/// How a container is linked to its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkPlan {
    /// A link routed by the host (a bridge network): the container has
    /// `address`/`prefix` and a default route via `gateway`, an address of
    /// the host; the host routes `address` to it.
    Routed {
        /// The container's address.
        address: Ipv4Addr,
        /// The prefix length it sees (the network's subnet).
        prefix: u8,
        /// Its default gateway.
        gateway: Ipv4Addr,
    },
    /// A link of its own on the host's NIC `parent` (a direct network).
    Direct {
        /// The NIC.
        parent: String,
        /// How it gets its address.
        address: DirectAddress,
    },
}

/// How a container on a direct network gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectAddress {
    /// From the network's subnet.
    Static {
        /// The address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
        /// The default gateway, if any.
        gateway: Option<Ipv4Addr>,
    },
    /// From a DHCP server on the NIC's network, asking as `hostname`, within
    /// `timeout`.
    Dhcp {
        /// The host name sent with the request.
        hostname: String,
        /// How long to wait for the first lease.
        timeout: Duration,
    },
}

/// A DHCP lease as the daemon records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The address leased.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway, if the server gave one.
    pub gateway: Option<Ipv4Addr>,
    /// The server that leased it.
    pub server: Ipv4Addr,
}

/// What [`Networking::attach`] made.
pub struct Linked {
    /// The host's end of a routed link (`mkv<id>` on Linux).
    pub host_link: Option<String>,
    /// The MAC address of the container's link on a direct network.
    pub mac: Option<[u8; 6]>,
    /// The lease a DHCP container got, and what renews it until dropped
    /// (then released).
    pub lease: Option<(Lease, Held)>,
}

/// What the daemon's records own, for [`Networking::reconcile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    /// Host ends of routed links.
    pub links: Vec<String>,
    /// Containers' addresses.
    pub addresses: Vec<Ipv4Addr>,
    /// Bridge networks' subnets.
    pub subnets: Vec<Subnet>,
    /// Containers' network namespace files.
    pub namespaces: Vec<PathBuf>,
    /// The directory the daemon puts namespace files in.
    pub namespace_dir: PathBuf,
}

/// One kernel's way of networking containers. Every method is safe to call
/// from any of the daemon's threads at once.
pub trait Networking: Send + Sync {
    // ---- the host ----

    /// Prepares the host for routed networks (forwarding on, loopback up and
    /// routable for published ports); returns what failed, for the log.
    fn prepare_host(&self) -> Vec<String>;

    /// The subnets of the host's own links (not loopback, not containers'),
    /// which a bridge network must not overlap.
    fn host_subnets(&self) -> Result<Vec<Subnet>, String>;

    /// Whether the host has a link (a NIC) named `name`.
    fn has_link(&self, name: &str) -> Result<bool, String>;

    // ---- networks ----

    /// Puts a bridge network's `gateway` address on the host and makes the
    /// addresses of `subnet` that no container has unreachable.
    fn add_gateway(&self, subnet: Subnet, gateway: Ipv4Addr) -> Result<(), String>;

    /// Undoes [`Networking::add_gateway`], best effort; fails only when the
    /// kernel cannot be asked.
    fn remove_gateway(&self, subnet: Subnet, gateway: Ipv4Addr) -> Result<(), String>;

    /// Serves DNS for `records` on `address` (a gateway, port 53), other
    /// names forwarded to `upstreams`, until the value is dropped.
    fn serve_dns(
        &self,
        address: SocketAddrV4,
        records: Arc<Records>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Held, String>;

    /// Replaces the host's packet filter rules for containers (NAT out,
    /// published ports, isolation) with what `networks` and `published` ask.
    fn apply_rules(&self, networks: &[RuleNetwork], published: &[Published]) -> Result<(), String>;

    /// How many rules the host's packet filter holds for containers; `None`
    /// when it cannot tell.
    fn rule_count(&self) -> Option<usize>;

    /// Binds each of `ports` on the host (without listening) until the value
    /// is dropped, so no host process takes them; fails on one not free.
    fn reserve_ports(&self, ports: &[PortMapping]) -> Result<Held, String>;

    // ---- containers ----

    /// Creates container `id`'s network namespace at `netns` and its `link`
    /// in it; on failure nothing is left.
    fn attach(&self, id: &str, netns: &Path, link: &LinkPlan) -> Result<Linked, String>;

    /// Renews, from now on, the `lease` of container `id` (namespace
    /// `netns`, link `mac`) after a daemon restart; released when dropped.
    fn keep_lease(
        &self,
        id: &str,
        netns: &Path,
        mac: [u8; 6],
        lease: &Lease,
    ) -> Result<Held, String>;

    /// Removes the namespace file `netns`: the kernel then destroys the
    /// namespace and its links once nothing else holds it.
    fn remove_namespace(&self, netns: &Path) -> Result<(), String>;

    /// Deletes a routed link's host end `host_link` and its route to
    /// `address` at once (when its namespace could not be removed).
    fn detach(&self, host_link: &str, address: Ipv4Addr) -> Result<(), String>;

    /// Removes the links, routes and namespace files of containers that
    /// `owned` does not name; returns what it removed, for the log.
    fn reconcile(&self, owned: &Owned) -> Vec<String>;
}
