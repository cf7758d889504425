//! Networking below init and the daemon: rtnetlink ([`netlink`]), the
//! DHCPv4 client ([`dhcp`]) and nf_tables ([`nftables`]). init uses them for
//! the host's own links, the daemon for its containers' links and their
//! packet filtering and NAT; neither depends on the other. The daemon's
//! containers also get network namespaces ([`netns`]), links into them
//! ([`container_link`]: routed veths, macvlans) and a DNS server per
//! network ([`dns`]). hostd's own connections (registries) resolve names
//! with [`resolve`]: static glibc has no NSS.

pub mod container_link;
pub mod dhcp;
pub mod dns;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod resolve;
