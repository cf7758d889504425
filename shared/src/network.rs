//! Container networking as requests and records carry it: subnets, network
//! definitions (`bridge`: routed veths behind the host with NAT; `direct`:
//! an address of the container's own on a physical NIC), published ports
//! (`-p [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`, ranges included) and what
//! a container got (its attachment). Pure data and parsers, shared by the
//! console client, the daemon, init (host.toml) and mkhost (profiles), so a
//! bad value is refused with the same words everywhere.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The network a container joins when the request names none (Docker's
/// name for its default network).
pub const DEFAULT_NETWORK: &str = "bridge";
/// The default network's subnet unless the profile or host.toml says
/// otherwise (Docker's).
pub const DEFAULT_SUBNET: &str = "172.17.0.0/16";
/// Where subnets of networks created without one come from, in order:
/// Docker's default address pools (`172.18-31.0.0/16`), as /16s.
pub const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 0);
/// The last /16 of the pool.
pub const POOL_LAST: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 0);
/// Network modes that are not networks.
pub const MODE_HOST: &str = "host";
/// The container gets a namespace with only loopback.
pub const MODE_NONE: &str = "none";

/// Why a network value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// A subnet that does not parse or is not a network address.
    #[error("invalid subnet {value:?}: {why} (expected ADDRESS/PREFIX like 172.20.0.0/16)")]
    Subnet {
        /// As given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A bad `-p`.
    #[error("invalid port mapping {value:?}: {why} (expected [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp], ports 1-65535, ranges like 8000-8010:80-90)")]
    Publish {
        /// As given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A bad network name.
    #[error("invalid network name {0:?} (letters, digits, '_', '.', '-'; starting with a letter or digit; at most 64)")]
    Name(String),
    /// A network definition that does not hold together.
    #[error("network {name:?}: {why}")]
    Definition {
        /// The network.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// An IPv4 network: `172.17.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub address: Ipv4Addr,
    /// Prefix length, 8 to 30 for container networks.
    pub prefix: u8,
}

impl Subnet {
    /// The mask as a number.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.address)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - shorter)
        };
        u32::from(self.address) & mask == u32::from(other.address) & mask
    }

    /// The `n`th address (0 is the network address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.address) + n))
    }

    /// How many addresses it spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    /// The first host address, the conventional gateway (`.1`).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) + 1)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, NetworkError> {
        let bad = |why: &str| NetworkError::Subnet {
            value: s.to_string(),
            why: why.to_string(),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
        let address: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix must be 8 to 30"));
        }
        let subnet = Subnet { address, prefix };
        if u32::from(address) & !subnet.mask() != 0 {
            return Err(bad(&format!(
                "host bits are set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(address) & subnet.mask())
            )));
        }
        if address.is_loopback() || address.is_multicast() || address.is_unspecified() {
            return Err(bad("loopback, multicast and 0.0.0.0 are not usable"));
        }
        Ok(subnet)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How a network connects its containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A routed veth per container behind the host: private subnet, NAT
    /// out, published ports in.
    #[default]
    Bridge,
    /// A macvlan on a physical NIC: the container's own address on that
    /// network, by DHCP or from the network's subnet.
    Direct,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Bridge => "bridge",
            Driver::Direct => "direct",
        })
    }
}

/// A network as defined (by the profile, host.toml or `network create`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Its name (in a `[container_networks.NAME]` table: the key, which
    /// [`NetworkSpec::named`] fills in).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// How containers connect.
    #[serde(default)]
    pub driver: Driver,
    /// Bridge: the containers' subnet (default: the next free /16 of the
    /// pool). Direct: the NIC's subnet for static addresses (none: DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Subnet>,
    /// Bridge: the host's address in the subnet (default: its first).
    /// Direct with a subnet: the router on that network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Direct: the physical NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Bridge: no NAT out (containers reach only each other and the host).
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// Labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl NetworkSpec {
    /// The network of a `[container_networks.NAME]` table, named by its
    /// key (a `name` inside must agree), checked.
    pub fn named(&self, key: &str) -> Result<NetworkSpec, NetworkError> {
        if !self.name.is_empty() && self.name != key {
            return Err(NetworkError::Definition {
                name: key.to_string(),
                why: format!("`name` {:?} differs from the table's key", self.name),
            });
        }
        let spec = NetworkSpec {
            name: key.to_string(),
            ..self.clone()
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what can be checked without the host: the name, that a
    /// direct network names its NIC, that a gateway lies in the subnet and
    /// is not its network or broadcast address.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if !valid_network_name(&self.name) || [MODE_HOST, MODE_NONE].contains(&&*self.name) {
            return Err(NetworkError::Name(self.name.clone()));
        }
        let bad = |why: String| NetworkError::Definition {
            name: self.name.clone(),
            why,
        };
        match self.driver {
            Driver::Direct => {
                let parent = self.parent.as_deref().unwrap_or("");
                if parent.is_empty() || parent.len() > 15 || parent.contains(['/', ' ', '\0']) {
                    return Err(bad(format!(
                        "a direct network needs `parent`, the host's NIC (e.g. eth1), not {parent:?}"
                    )));
                }
                if self.gateway.is_some() && self.subnet.is_none() {
                    return Err(bad("a gateway needs a subnet".into()));
                }
                if self.internal {
                    return Err(bad("`internal` applies to bridge networks only".into()));
                }
            }
            Driver::Bridge => {
                if self.parent.is_some() {
                    return Err(bad(
                        "`parent` applies to direct networks only (driver = \"direct\")".into(),
                    ));
                }
            }
        }
        if let (Some(subnet), Some(gw)) = (self.subnet, self.gateway) {
            if !subnet.contains(gw) || gw == subnet.address || gw == subnet.broadcast() {
                return Err(bad(format!(
                    "gateway {gw} is not a host address of subnet {subnet}"
                )));
            }
        }
        Ok(())
    }
}

/// Whether `name` can name a network (Docker's rule for names, shorter).
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The host address it listens on (`None`: every address of the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host's port.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    /// As `docker port` prints it: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port,
            self.protocol,
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port
        )
    }
}

/// Most ports one `-p` may publish.
pub const MAX_PORT_RANGE: u32 = 4096;

fn port_range(text: &str, value: &str) -> Result<(u16, u16), NetworkError> {
    let bad = |why: String| NetworkError::Publish {
        value: value.to_string(),
        why,
    };
    let port = |p: &str| -> Result<u16, NetworkError> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(bad(format!("port {n} is outside 1-65535"))),
            Err(_) => Err(bad(format!("{p:?} is not a port number"))),
        }
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(bad(format!("range {a}-{b} ends before it starts")));
            }
            Ok((a, b))
        }
        None => {
            let p = port(text)?;
            Ok((p, p))
        }
    }
}

/// Parses one `-p` value into the ports it publishes (a range gives one
/// mapping per port). `HOSTPORT` may be left out only in Docker's
/// `-p CONTAINERPORT` form, which hostd refuses: it does not pick ports.
pub fn parse_publish(value: &str) -> Result<Vec<PortMapping>, NetworkError> {
    let bad = |why: &str| NetworkError::Publish {
        value: value.to_string(),
        why: why.to_string(),
    };
    let (rest, protocol) = match value.rsplit_once('/') {
        Some((rest, "tcp")) => (rest, Protocol::Tcp),
        Some((rest, "udp")) => (rest, Protocol::Udp),
        Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?} (tcp or udp)"))),
        None => (value, Protocol::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [host, container] => (None, *host, *container),
        [ip, host, container] => {
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| bad(&format!("{ip:?} is not an IPv4 address")))?;
            ((!ip.is_unspecified()).then_some(ip), *host, *container)
        }
        [_] => {
            return Err(bad(
                "no host port: hostd does not pick one (write HOSTPORT:CONTAINERPORT)",
            ))
        }
        _ => return Err(bad("too many ':'")),
    };
    if host.is_empty() {
        return Err(bad("no host port: hostd does not pick one"));
    }
    let (h0, h1) = port_range(host, value)?;
    let (c0, c1) = port_range(container, value)?;
    if h1 - h0 != c1 - c0 {
        return Err(bad("the host and container ranges differ in length"));
    }
    if u32::from(h1 - h0) >= MAX_PORT_RANGE {
        return Err(bad(&format!(
            "a range publishes at most {MAX_PORT_RANGE} ports"
        )));
    }
    Ok((0..=h1 - h0)
        .map(|i| PortMapping {
            host_ip,
            host_port: h0 + i,
            container_port: c0 + i,
            protocol,
        })
        .collect())
}

/// The networks a host defines before hostd starts: init merges the
/// image's (profile) and host.toml's and writes them to
/// [`crate::paths::NETWORKS`] for hostd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDefinitions {
    /// In order; a `bridge` entry replaces the default network's settings.
    #[serde(default)]
    pub networks: Vec<DefinedNetwork>,
}

/// One defined network and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinedNetwork {
    /// The definition.
    pub spec: NetworkSpec,
    /// `profile` or `host.toml`.
    pub origin: String,
}

/// What a container got on its network; kept in its record, so a new
/// daemon re-adopts it as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// `host`, `none` or a network's name.
    pub network: String,
    /// Its address (none for `host` and `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The prefix length of the address.
    #[serde(default)]
    pub prefix: u8,
    /// Its default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The host end of its veth (bridge networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_link: Option<String>,
    /// Its MAC address (direct networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Names it answers to on the network besides its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// The DHCP server that leased the address (direct networks by DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_server: Option<Ipv4Addr>,
    /// The network namespace file, while the container has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_compare() {
        let a = net("172.17.0.0/16");
        assert_eq!(a.to_string(), "172.17.0.0/16");
        assert!(a.contains("172.17.255.3".parse().unwrap()));
        assert!(!a.contains("172.18.0.1".parse().unwrap()));
        assert!(a.overlaps(&net("172.17.4.0/24")));
        assert!(net("172.16.0.0/12").overlaps(&a));
        assert!(!a.overlaps(&net("172.18.0.0/16")));
        assert_eq!(a.first_host().to_string(), "172.17.0.1");
        assert_eq!(a.broadcast().to_string(), "172.17.255.255");
        for (bad, why) in [
            (
                "172.17.0.1/16",
                "host bits are set (the network is 172.17.0.0/16)",
            ),
            ("172.17.0.0", "no /PREFIX"),
            ("172.17.0.0/33", "the prefix must be 8 to 30"),
            ("1.2.3/24", "not an IPv4 address"),
            ("127.0.0.0/8", "loopback"),
            ("10.0.0.0/x", "not a number"),
        ] {
            let err = bad.parse::<Subnet>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn publish_forms() {
        let one = parse_publish("8080:80").unwrap();
        assert_eq!(
            one,
            vec![PortMapping {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }]
        );
        let udp = parse_publish("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(udp[0].host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(udp[0].protocol, Protocol::Udp);
        assert_eq!(udp[0].to_string(), "5353/udp -> 127.0.0.1:53");
        let range = parse_publish("0.0.0.0:8000-8002:80-82").unwrap();
        assert_eq!(range.len(), 3);
        assert_eq!((range[2].host_port, range[2].container_port), (8002, 82));
        assert_eq!(range[0].host_ip, None);
        for (bad, why) in [
            ("80", "no host port"),
            ("0:80", "outside 1-65535"),
            ("8080:65536", "outside 1-65535"),
            ("8080:80/sctp", "unknown protocol"),
            ("x:80", "not a port number"),
            ("1.2.3:80:80", "not an IPv4 address"),
            ("8000-8001:80", "differ in length"),
            ("9-8:9-8", "ends before"),
            ("1:2:3:4", "too many"),
            ("1-65535:1-65535", "at most"),
            (":80", "no host port"),
        ] {
            let err = parse_publish(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn network_specs_are_checked() {
        let ok = NetworkSpec {
            name: "front".into(),
            subnet: Some(net("10.10.0.0/24")),
            gateway: Some("10.10.0.1".parse().unwrap()),
            ..NetworkSpec::default()
        };
        ok.validate().unwrap();
        let bad = |spec: NetworkSpec, why: &str| {
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        };
        bad(
            NetworkSpec {
                gateway: Some("10.10.0.0".parse().unwrap()),
                ..ok.clone()
            },
            "not a host address",
        );
        bad(
            NetworkSpec {
                name: "host".into(),
                ..ok.clone()
            },
            "invalid network name",
        );
        bad(
            NetworkSpec {
                driver: Driver::Direct,
                ..ok.clone()
            },
            "needs `parent`",
        );
        bad(
            NetworkSpec {
                parent: Some("eth1".into()),
                ..ok.clone()
            },
            "direct networks only",
        );
        NetworkSpec {
            name: "rack".into(),
            driver: Driver::Direct,
            parent: Some("eth1".into()),
            ..NetworkSpec::default()
        }
        .validate()
        .unwrap();
    }
}
