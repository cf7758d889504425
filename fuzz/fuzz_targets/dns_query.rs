//! hostd's DNS server for container networks: any datagram or TCP message
//! from a container gets an answer that is a response within the size limit,
//! a forward, or nothing; an upstream's answer relays within the limit too.
#![no_main]

use std::net::Ipv4Addr;

use hostd::net::dns::{handle, relay, Action, Records, Transport, UDP_LIMIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let records = Records::new();
    records.add("web", Ipv4Addr::new(10, 88, 0, 2));
    records.add("app", Ipv4Addr::new(10, 88, 0, 2));
    records.add("app", Ipv4Addr::new(10, 88, 0, 3));
    for transport in [Transport::Udp, Transport::Tcp] {
        for forward in [false, true] {
            match handle(data, &records, transport, forward) {
                Action::Reply(reply) => {
                    assert!(reply.len() >= 12 && reply[2] & 0x80 != 0);
                    if transport == Transport::Udp {
                        assert!(reply.len() <= usize::from(hostd::net::dns::EDNS_SIZE));
                    }
                }
                Action::Forward(query) => {
                    assert!(forward);
                    let limit = query.limit(transport);
                    let relayed = relay(data.to_vec(), &query, limit);
                    assert!(relayed.len() <= limit.max(UDP_LIMIT));
                    assert_eq!(relayed[..2], query.header.id.to_be_bytes());
                }
                Action::Drop => {}
            }
        }
    }
});
