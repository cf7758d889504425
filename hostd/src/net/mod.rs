//! Networking below init and the daemon: rtnetlink ([`netlink`]) and the
//! DHCPv4 client ([`dhcp`]). init uses them for the host's own links, the
//! daemon for its containers' links; neither depends on the other.

pub mod dhcp;
pub mod dns;
pub mod netlink;
