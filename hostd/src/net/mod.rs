//! Networking below init and the daemon: rtnetlink ([`netlink`]) and the
//! DHCPv4 client ([`dhcp`]). init uses them for the host's own links, the
//! daemon for its containers' links; neither depends on the other. The
//! daemon's containers also get network namespaces ([`netns`]) and links
//! into them ([`container_link`]: routed veths, macvlans).

pub mod container_link;
pub mod dhcp;
pub mod netlink;
pub mod netns;
