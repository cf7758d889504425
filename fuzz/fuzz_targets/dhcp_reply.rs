//! init's DHCP client: any reply from the network decodes to a packet or an
//! error, and a lease is taken only from a sane ACK.
#![no_main]

use hostd::net::dhcp::{Lease, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        let _ = packet.message_type();
        let _ = Lease::from_ack(&packet, std::net::Ipv4Addr::new(10, 0, 2, 2));
        let _ = packet.encode();
    }
});
