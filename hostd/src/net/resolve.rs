//! Host names to IPv4 addresses for hostd's own connections (registries):
//! static glibc cannot load NSS modules, so hostd resolves by itself, the
//! way glibc's `files dns` would: an IP literal as it is, then the hosts
//! file, then A queries over UDP to the resolv.conf name servers in order,
//! with the [`crate::net::dns`] codec.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::net::dns::{read_name, Header, Question};

/// How long one name server gets to answer one query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// DNS type A.
const TYPE_A: u16 = 1;
/// DNS class IN.
const CLASS_IN: u16 = 1;

/// The addresses of `name`: a literal, the `hosts` text's entries, or what
/// the `servers` answer. An error names the name and why.
pub fn resolve(name: &str, hosts: &str, servers: &[SocketAddr]) -> io::Result<Vec<Ipv4Addr>> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(vec![ip]);
    }
    let from_hosts = hosts_lookup(hosts, name);
    if !from_hosts.is_empty() {
        return Ok(from_hosts);
    }
    let not_found = |why: String| io::Error::new(io::ErrorKind::NotFound, why);
    if servers.is_empty() {
        return Err(not_found(format!(
            "cannot resolve {name}: not in the hosts file and no name server in /etc/resolv.conf"
        )));
    }
    let mut last = String::new();
    for server in servers {
        match query_a(name, *server) {
            Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
            Ok(_) => last = format!("{server} knows no address for it"),
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(not_found(format!("cannot resolve {name}: {last}")))
}

/// The name servers of a resolv.conf text, port 53, loopback ones included
/// (they serve the host itself).
pub fn name_servers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The addresses the hosts file gives `name` (case-insensitive).
pub fn hosts_lookup(hosts: &str, name: &str) -> Vec<Ipv4Addr> {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip: Ipv4Addr = words.next()?.parse().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

/// One A query to `server`, retried once.
fn query_a(name: &str, server: SocketAddr) -> io::Result<Vec<Ipv4Addr>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(QUERY_TIMEOUT))?;
    let mut id_bytes = [0u8; 2];
    crate::os::random_bytes_insecure(&mut id_bytes)?;
    let id = u16::from_ne_bytes(id_bytes);
    let packet = encode_query(id, name)?;
    let mut buf = [0u8; 1500];
    for _ in 0..2 {
        socket.send_to(&packet, server)?;
        loop {
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            };
            if from != server {
                continue;
            }
            if let Some(addrs) = parse_answer(&buf[..n], id)? {
                return Ok(addrs);
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"))
}

/// A recursive A query for `name`.
pub fn encode_query(id: u16, name: &str) -> io::Result<Vec<u8>> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a host name"),
        )
    };
    let labels: Vec<Vec<u8>> = name
        .trim_end_matches('.')
        .split('.')
        .map(|l| l.as_bytes().to_vec())
        .collect();
    if name.is_empty() || name.len() > 253 || labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return Err(bad());
    }
    let mut out = Vec::new();
    Header {
        id,
        flags: 0x0100, // RD
        qdcount: 1,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
    .encode(&mut out);
    Question {
        labels,
        qtype: TYPE_A,
        qclass: CLASS_IN,
    }
    .encode(&mut out);
    Ok(out)
}

/// The A records of an answer to query `id`: `None` when the packet is not
/// that answer (another id, not a response), an error for a failure rcode.
pub fn parse_answer(packet: &[u8], id: u16) -> io::Result<Option<Vec<Ipv4Addr>>> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad DNS answer: {what}"),
        )
    };
    let Ok(header) = Header::parse(packet) else {
        return Ok(None);
    };
    if header.id != id || !header.is_response() {
        return Ok(None);
    }
    match header.rcode() {
        0 => {}
        3 => return Ok(Some(Vec::new())),
        code => {
            return Err(io::Error::other(format!(
                "the name server answered rcode {code}"
            )))
        }
    }
    let mut at = 12;
    for _ in 0..header.qdcount {
        let (_, next) = read_name(packet, at).map_err(|_| bad("question"))?;
        at = next + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..header.ancount {
        let (_, next) = read_name(packet, at).map_err(|_| bad("answer name"))?;
        let fixed = packet
            .get(next..next + 10)
            .ok_or_else(|| bad("truncated record"))?;
        let ty = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = packet
            .get(next + 10..next + 10 + len)
            .ok_or_else(|| bad("truncated data"))?;
        if ty == TYPE_A && class == CLASS_IN && len == 4 {
            addrs.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at = next + 10 + len;
    }
    Ok(Some(addrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dns::{DnsServer, Records};
    use std::net::SocketAddrV4;

    #[test]
    fn literals_and_the_hosts_file_come_first() {
        let hosts = "127.0.0.1 localhost\n10.1.2.3  registry.lab reg # the lab's\n# 10.9.9.9 registry.lab\n";
        assert_eq!(
            resolve("10.0.2.2", hosts, &[]).unwrap(),
            [Ipv4Addr::new(10, 0, 2, 2)]
        );
        assert_eq!(
            resolve("Registry.Lab", hosts, &[]).unwrap(),
            [Ipv4Addr::new(10, 1, 2, 3)]
        );
        let err = resolve("nowhere.lab", hosts, &[]).unwrap_err().to_string();
        assert!(
            err.contains("cannot resolve nowhere.lab") && err.contains("no name server"),
            "{err}"
        );
        assert!(encode_query(1, "a..b").is_err());
        assert!(encode_query(1, &"x".repeat(64)).is_err());
    }

    /// Against a real server (hostd's own, on loopback): names it knows,
    /// a name it does not, and a server that is not there.
    #[test]
    fn names_from_a_name_server() {
        let records = Records::new();
        records.add("registry.lab", Ipv4Addr::new(10, 4, 0, 7));
        records.add("registry.lab", Ipv4Addr::new(10, 4, 0, 8));
        let server = DnsServer::start(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            records,
            Vec::new(),
        )
        .unwrap();
        let at = SocketAddr::V4(server.local_addr());
        let mut got = resolve("registry.lab.", "", &[at]).unwrap();
        got.sort();
        assert_eq!(
            got,
            [Ipv4Addr::new(10, 4, 0, 7), Ipv4Addr::new(10, 4, 0, 8)]
        );
        let err = resolve("other.lab", "", &[at]).unwrap_err().to_string();
        assert!(err.contains("cannot resolve other.lab"), "{err}");
        // A dead first server: the next is asked.
        let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let got = resolve("registry.lab", "", &[dead, at]).unwrap();
        assert_eq!(got.len(), 2);
        server.stop();
    }

    #[test]
    fn name_servers_keep_loopback() {
        let servers = name_servers(
            "# x\nnameserver 127.0.0.53\nnameserver 10.0.2.3\nsearch lab\nnameserver bad\n",
        );
        assert_eq!(
            servers,
            [
                "127.0.0.53:53".parse().unwrap(),
                "10.0.2.3:53".parse::<SocketAddr>().unwrap()
            ]
        );
    }

    #[test]
    fn answers_are_parsed_defensively() {
        assert!(parse_answer(&[], 7).unwrap().is_none());
        let query = encode_query(7, "a.b").unwrap();
        // A query is not an answer.
        assert!(parse_answer(&query, 7).unwrap().is_none());
        let mut truncated = query.clone();
        truncated[2] |= 0x80; // QR
        truncated[7] = 1; // ancount 1, but no answer follows
        assert!(parse_answer(&truncated, 7).is_err());
        assert!(parse_answer(&truncated, 8).unwrap().is_none());
    }
}
