//! The nftables table hostd owns, as a pure function of its networks and
//! the containers' published ports. The daemon replaces the whole table in
//! one transaction whenever either changes (and at start), so the kernel's
//! rules are always exactly this function's output: nothing to patch, and
//! nothing left over. docs/networking.md walks through it rule by rule.

use std::net::Ipv4Addr;

use mkhost_shared::network::{PortMapping, Protocol as PortProtocol, Subnet};

use crate::net::nftables::{
    Action, BaseChain, Chain, ChainKind, Hook, Match, Protocol, Rule, Table,
};

/// The table's name (family `ip`).
pub const TABLE: &str = "mkhost";

/// Host ends of container veths are named `mkv` + 12 hex digits.
pub const VETH_PREFIX: &str = "mkv";

/// A bridge network as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleNetwork {
    /// Its subnet.
    pub subnet: Subnet,
    /// No traffic out of the host.
    pub internal: bool,
}

/// A container's published ports as the rules see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The container's address.
    pub address: Ipv4Addr,
    /// Its mappings.
    pub ports: Vec<PortMapping>,
}

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
