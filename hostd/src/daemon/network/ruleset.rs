//! What the host's packet filter must do for hostd's networks, as data: the
//! bridge networks (NAT out unless internal, no traffic between two) and
//! the containers' published ports, a pure function of the networks and the
//! containers' attachments. The daemon hands the whole description to the
//! backend whenever either changes (and at start), which replaces its rules
//! with exactly what the description asks: nothing to patch, and nothing
//! left over. On Linux that is the `ip mkhost` nftables table
//! (`backend::linux::network::table`); docs/networking.md walks through it
//! rule by rule.

use mkhost_shared::network::{Attachment, Driver, NetworkSpec};

pub use crate::backend::network::{Published, RuleNetwork};

/// The rules `networks` and the containers' `attachments` ask for: each
/// bridge network with a subnet, each container that publishes ports.
pub fn describe<'a>(
    networks: impl IntoIterator<Item = &'a NetworkSpec>,
    attachments: impl IntoIterator<Item = &'a Attachment>,
) -> (Vec<RuleNetwork>, Vec<Published>) {
    let networks = networks
        .into_iter()
        .filter(|spec| spec.driver == Driver::Bridge)
        .filter_map(|spec| {
            Some(RuleNetwork {
                subnet: spec.subnet?,
                internal: spec.internal,
            })
        })
        .collect();
    let published = attachments
        .into_iter()
        .filter(|a| !a.ports.is_empty())
        .filter_map(|a| {
            Some(Published {
                address: a.address?,
                ports: a.ports.clone(),
            })
        })
        .collect();
    (networks, published)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mkhost_shared::network::parse_publish;

    #[test]
    fn only_bridges_and_publishers_count() {
        let bridge = NetworkSpec {
            name: "web".into(),
            subnet: "172.18.0.0/16".parse().ok(),
            internal: true,
            ..NetworkSpec::default()
        };
        let direct = NetworkSpec {
            name: "lan".into(),
            driver: Driver::Direct,
            subnet: "192.168.1.0/24".parse().ok(),
            ..NetworkSpec::default()
        };
        let publisher = Attachment {
            network: "web".into(),
            address: "172.18.0.2".parse().ok(),
            ports: parse_publish("8080:80").unwrap(),
            ..Attachment::default()
        };
        let quiet = Attachment {
            network: "web".into(),
            address: "172.18.0.3".parse().ok(),
            ..Attachment::default()
        };
        let (networks, published) = describe([&bridge, &direct], [&publisher, &quiet]);
        assert_eq!(
            networks,
            [RuleNetwork {
                subnet: "172.18.0.0/16".parse().unwrap(),
                internal: true,
            }]
        );
        assert_eq!(
            published,
            [Published {
                address: "172.18.0.2".parse().unwrap(),
                ports: publisher.ports.clone(),
            }]
        );
    }
}
