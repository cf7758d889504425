//! A DHCPv4 client (RFC 2131): the packet codec and the per-link client loop.
//!
//! [`Packet::encode`] and [`Packet::decode`] are pure and unit-tested.
//! [`Client`] runs on its own thread per link: DISCOVER, take the first OFFER,
//! REQUEST it, and on ACK hand the [`Lease`] to a callback that configures the
//! link. It then sleeps until T1 and renews by unicast to the server, rebinds by
//! broadcast from T2, and starts over when the lease expires or the server says
//! NAK (each change goes through the same callback). Packets go through a UDP
//! socket bound to port 68 on the link (`SO_BINDTODEVICE`): requests ask for
//! broadcast replies, so nothing needs a raw socket.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// BOOTP server port.
pub const SERVER_PORT: u16 = 67;
/// BOOTP client port.
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const FLAG_BROADCAST: u16 = 0x8000;

/// Option codes used here.
pub mod opt {
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN: u8 = 15;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAMS: u8 = 55;
    /// Maximum message size.
    pub const MAX_SIZE: u8 = 57;
    /// Renewal (T1) time.
    pub const T1: u8 = 58;
    /// Rebinding (T2) time.
    pub const T2: u8 = 59;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// Pad.
    pub const PAD: u8 = 0;
    /// End.
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// DHCPDISCOVER.
    Discover = 1,
    /// DHCPOFFER.
    Offer = 2,
    /// DHCPREQUEST.
    Request = 3,
    /// DHCPDECLINE.
    Decline = 4,
    /// DHCPACK.
    Ack = 5,
    /// DHCPNAK.
    Nak = 6,
    /// DHCPRELEASE.
    Release = 7,
    /// DHCPINFORM.
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// Errors of the codec and the client.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The packet is malformed.
    #[error("malformed DHCP packet: {0}")]
    Malformed(&'static str),
    /// Socket trouble.
    #[error("DHCP socket on {iface}: {source}")]
    Socket {
        /// The interface.
        iface: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A BOOTP/DHCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// 1 request, 2 reply.
    pub op: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// Flags (broadcast bit).
    pub flags: u16,
    /// Client address (when renewing).
    pub ciaddr: Ipv4Addr,
    /// "Your" address: the one offered.
    pub yiaddr: Ipv4Addr,
    /// Next server.
    pub siaddr: Ipv4Addr,
    /// Relay agent.
    pub giaddr: Ipv4Addr,
    /// Client hardware (MAC) address.
    pub chaddr: [u8; 6],
    /// Options in order, without pad/end.
    pub options: Vec<(u8, Vec<u8>)>,
}

fn ip_at(b: &[u8], o: usize) -> Ipv4Addr {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(o..o + 4) {
        a.copy_from_slice(s);
    }
    Ipv4Addr::from(a)
}

impl Packet {
    /// A request from `mac` with transaction `xid`.
    pub fn request(xid: u32, mac: [u8; 6]) -> Self {
        Self {
            op: BOOTREQUEST,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options: Vec::new(),
        }
    }

    /// The first value of option `code`.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// The message type (option 53).
    pub fn message_type(&self) -> Option<MessageType> {
        self.option(opt::MESSAGE_TYPE)
            .and_then(|v| v.first())
            .and_then(|v| MessageType::from_u8(*v))
    }

    /// The wire format, padded to the BOOTP minimum of 300 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = self.op;
        b[1] = 1; // Ethernet
        b[2] = 6;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[24..28].copy_from_slice(&self.giaddr.octets());
        b[28..34].copy_from_slice(&self.chaddr);
        b.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            // Values longer than 255 bytes are split (RFC 3396).
            for chunk in value.chunks(255) {
                b.push(*code);
                b.push(u8::try_from(chunk.len()).unwrap_or(255));
                b.extend_from_slice(chunk);
            }
        }
        b.push(opt::END);
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }

    /// Parses a packet; repeated options are concatenated (RFC 3396).
    pub fn decode(b: &[u8]) -> Result<Self, DhcpError> {
        if b.len() < 240 {
            return Err(DhcpError::Malformed("shorter than 240 bytes"));
        }
        if b[236..240] != MAGIC {
            return Err(DhcpError::Malformed("no DHCP magic cookie"));
        }
        if b[1] != 1 || b[2] != 6 {
            return Err(DhcpError::Malformed("not Ethernet"));
        }
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&b[28..34]);
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut i = 240;
        while i < b.len() {
            let code = b[i];
            if code == opt::END {
                break;
            }
            if code == opt::PAD {
                i += 1;
                continue;
            }
            let len = usize::from(
                *b.get(i + 1)
                    .ok_or(DhcpError::Malformed("option without length"))?,
            );
            let value = b
                .get(i + 2..i + 2 + len)
                .ok_or(DhcpError::Malformed("option runs past the end"))?;
            match options.iter_mut().find(|(c, _)| *c == code) {
                Some((_, v)) => v.extend_from_slice(value),
                None => options.push((code, value.to_vec())),
            }
            i += 2 + len;
        }
        Ok(Self {
            op: b[0],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip_at(b, 12),
            yiaddr: ip_at(b, 16),
            siaddr: ip_at(b, 20),
            giaddr: ip_at(b, 24),
            chaddr,
            options,
        })
    }
}

/// The parameters the client asks servers for.
pub const REQUESTED_PARAMS: &[u8] = &[
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::DNS,
    opt::DOMAIN,
    opt::LEASE_TIME,
    opt::T1,
    opt::T2,
];

/// What the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// DHCPDISCOVER.
    Discover,
    /// DHCPREQUEST for an offer (SELECTING): broadcast, with server id.
    Select {
        /// The offered address.
        address: Ipv4Addr,
        /// The offering server.
        server: Ipv4Addr,
    },
    /// DHCPREQUEST to extend a lease: unicast (RENEWING) or broadcast
    /// (REBINDING), with ciaddr.
    Extend {
        /// The leased address.
        address: Ipv4Addr,
    },
    /// DHCPRELEASE: gives the lease back (unicast to its server).
    Release {
        /// The leased address.
        address: Ipv4Addr,
        /// The server that granted it.
        server: Ipv4Addr,
    },
}

/// Builds the client's packet.
pub fn client_packet(ask: Ask, xid: u32, mac: [u8; 6], secs: u16, hostname: &str) -> Packet {
    let mut p = Packet::request(xid, mac);
    p.secs = secs;
    let ty = match ask {
        Ask::Discover => MessageType::Discover,
        Ask::Release { .. } => MessageType::Release,
        _ => MessageType::Request,
    };
    p.options.push((opt::MESSAGE_TYPE, vec![ty as u8]));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&mac);
    p.options.push((opt::CLIENT_ID, client_id));
    match ask {
        Ask::Discover => p.flags = FLAG_BROADCAST,
        Ask::Select { address, server } => {
            p.flags = FLAG_BROADCAST;
            p.options
                .push((opt::REQUESTED_IP, address.octets().to_vec()));
            p.options.push((opt::SERVER_ID, server.octets().to_vec()));
        }
        Ask::Extend { address } => p.ciaddr = address,
        Ask::Release { address, server } => {
            p.ciaddr = address;
            p.options.push((opt::SERVER_ID, server.octets().to_vec()));
            // RFC 2131 table 5: no parameter list or hostname in a release.
            return p;
        }
    }
    p.options
        .push((opt::MAX_SIZE, 1500u16.to_be_bytes().to_vec()));
    if !hostname.is_empty() {
        p.options
            .push((opt::HOSTNAME, hostname.as_bytes().to_vec()));
    }
    p.options.push((opt::PARAMS, REQUESTED_PARAMS.to_vec()));
    p
}

/// A lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub address: Ipv4Addr,
    /// Prefix length from the subnet mask.
    pub prefix: u8,
    /// First router.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// Domain name.
    pub domain: Option<String>,
    /// The server that granted it.
    pub server: Ipv4Addr,
    /// Lease length.
    pub lease: Duration,
    /// Renewal time.
    pub t1: Duration,
    /// Rebinding time.
    pub t2: Duration,
}

fn u32_opt(p: &Packet, code: u8) -> Option<u32> {
    let v = p.option(code)?;
    Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?))
}

fn ips(v: &[u8]) -> Vec<Ipv4Addr> {
    v.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect()
}

/// A netmask as a prefix length (`None` if not contiguous).
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(ones).unwrap_or(32))
}

/// The default prefix of a classful address (servers that send no mask).
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

impl Lease {
    /// The lease an ACK grants (`server` when the ACK has no server id).
    pub fn from_ack(ack: &Packet, server: Ipv4Addr) -> Option<Self> {
        if ack.yiaddr.is_unspecified() {
            return None;
        }
        let prefix = ack
            .option(opt::SUBNET_MASK)
            .and_then(|v| ips(v).first().copied())
            .and_then(mask_to_prefix)
            .unwrap_or_else(|| classful_prefix(ack.yiaddr));
        let lease_secs = u32_opt(ack, opt::LEASE_TIME).unwrap_or(3600);
        let lease = if lease_secs == u32::MAX {
            Duration::from_secs(u64::from(u32::MAX))
        } else {
            Duration::from_secs(u64::from(lease_secs.max(60)))
        };
        let t1 = u32_opt(ack, opt::T1)
            .map(|s| Duration::from_secs(u64::from(s)))
            .filter(|t| *t < lease)
            .unwrap_or(lease / 2);
        let t2 = u32_opt(ack, opt::T2)
            .map(|s| Duration::from_secs(u64::from(s)))
            .filter(|t| *t < lease && *t > t1)
            .unwrap_or(lease * 7 / 8);
        let domain = ack
            .option(opt::DOMAIN)
            .map(|v| {
                String::from_utf8_lossy(v)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .filter(|d| {
                !d.is_empty()
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            });
        Some(Self {
            address: ack.yiaddr,
            prefix,
            gateway: ack
                .option(opt::ROUTER)
                .and_then(|v| ips(v).first().copied())
                .filter(|g| !g.is_unspecified()),
            dns: ack.option(opt::DNS).map(ips).unwrap_or_default(),
            domain,
            server: ack
                .option(opt::SERVER_ID)
                .and_then(|v| ips(v).first().copied())
                .unwrap_or(server),
            lease,
            t1,
            t2,
        })
    }
}

/// What the client reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lease was obtained or renewed (`renewed` = same address as before).
    Bound {
        /// The lease.
        lease: Lease,
        /// Whether this extends the previous lease of the same address.
        renewed: bool,
    },
    /// The lease ended (expired or NAKed): remove the address.
    Lost {
        /// The old lease.
        lease: Lease,
        /// Why.
        reason: String,
    },
    /// The first attempt is still going after `waited`, or gave up for now.
    Waiting {
        /// How long it has tried.
        waited: Duration,
    },
}

/// A random transaction id (the kernel's RNG without waiting for its seed,
/// falling back to the clock).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if crate::os::random_bytes_insecure(&mut b).is_ok() {
        return u32::from_ne_bytes(b);
    }
    let t = crate::os::boottime();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)
}

/// A DHCP client for one link.
pub struct Client {
    /// Interface name.
    pub iface: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Hostname to send.
    pub hostname: String,
    socket: UdpSocket,
    buf: Vec<u8>,
}

/// Retransmission delays: 0.25, 0.5, 1, 2, 4 ... 32, 32... seconds. The
/// first retries are quick because a link that just came up often drops the
/// very first packet (its queue is activated a moment after the carrier).
pub fn retransmit_delay(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(7))
}

impl Client {
    /// Opens the client's socket on `iface`.
    pub fn new(iface: &str, mac: [u8; 6], hostname: &str) -> Result<Self, DhcpError> {
        let socket = crate::os::udp_socket_on_device(iface, CLIENT_PORT).map_err(|source| {
            DhcpError::Socket {
                iface: iface.to_string(),
                source,
            }
        })?;
        Ok(Self {
            iface: iface.to_string(),
            mac,
            hostname: hostname.to_string(),
            socket,
            buf: vec![0; 1500],
        })
    }

    fn sock_err(&self, source: io::Error) -> DhcpError {
        DhcpError::Socket {
            iface: self.iface.clone(),
            source,
        }
    }

    /// Sends `packet` to `to` and waits until `deadline` for a reply of
    /// `xid` whose type is in `wanted`.
    fn exchange(
        &mut self,
        packet: &Packet,
        to: Ipv4Addr,
        wanted: &[MessageType],
        deadline: Instant,
    ) -> Result<Option<Packet>, DhcpError> {
        match self
            .socket
            .send_to(&packet.encode(), SocketAddrV4::new(to, SERVER_PORT))
        {
            Ok(_) => {}
            // A packet filter dropped it (netfilter answers EPERM), or the
            // link is not ready yet: like a lost packet, tried again later.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::ENETDOWN | libc::ENETUNREACH | libc::ENOBUFS)
                ) =>
            {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return Ok(None);
            }
            Err(e) => return Err(self.sock_err(e)),
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|e| self.sock_err(e))?;
            let n = match self.socket.recv_from(&mut self.buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.sock_err(e)),
            };
            let Ok(reply) = Packet::decode(&self.buf[..n]) else {
                continue;
            };
            if reply.op != BOOTREPLY || reply.xid != packet.xid || reply.chaddr != self.mac {
                continue;
            }
            if reply.message_type().is_some_and(|t| wanted.contains(&t)) {
                return Ok(Some(reply));
            }
        }
    }

    /// INIT -> SELECTING -> REQUESTING -> BOUND. Tries until `give_up` (or
    /// forever when `None`), reporting [`Event::Waiting`] at `report_after`.
    pub fn acquire(
        &mut self,
        report_after: Option<Instant>,
        report: &mut dyn FnMut(Event),
    ) -> Result<Lease, DhcpError> {
        loop {
            if let Some(lease) = self.acquire_until(report_after, None, report)? {
                return Ok(lease);
            }
        }
    }

    /// Like [`Client::acquire`], but gives up at `give_up`: `Ok(None)`
    /// when no server answered by then.
    pub fn acquire_until(
        &mut self,
        report_after: Option<Instant>,
        give_up: Option<Instant>,
        report: &mut dyn FnMut(Event),
    ) -> Result<Option<Lease>, DhcpError> {
        let started = Instant::now();
        let mut reported = false;
        let mut attempt = 0u32;
        loop {
            if give_up.is_some_and(|g| Instant::now() >= g) {
                return Ok(None);
            }
            let xid = random_u32();
            let secs = u16::try_from(started.elapsed().as_secs()).unwrap_or(u16::MAX);
            let wait = retransmit_delay(attempt);
            attempt += 1;
            let mut deadline = Instant::now() + wait;
            if let Some(g) = give_up {
                deadline = deadline.min(g);
            }
            if let Some(r) = report_after.filter(|r| !reported && *r < deadline) {
                deadline = r.max(Instant::now());
            }
            let discover = client_packet(Ask::Discover, xid, self.mac, secs, &self.hostname);
            let offer = self.exchange(
                &discover,
                Ipv4Addr::BROADCAST,
                &[MessageType::Offer],
                deadline,
            )?;
            if let Some(offer) = offer {
                let server = offer
                    .option(opt::SERVER_ID)
                    .and_then(|v| ips(v).first().copied())
                    .unwrap_or(offer.siaddr);
                let request = client_packet(
                    Ask::Select {
                        address: offer.yiaddr,
                        server,
                    },
                    xid,
                    self.mac,
                    secs,
                    &self.hostname,
                );
                let deadline = Instant::now() + Duration::from_secs(2);
                if let Some(ack) = self.exchange(
                    &request,
                    Ipv4Addr::BROADCAST,
                    &[MessageType::Ack, MessageType::Nak],
                    deadline,
                )? {
                    if ack.message_type() == Some(MessageType::Ack) {
                        if let Some(lease) = Lease::from_ack(&ack, server) {
                            return Ok(Some(lease));
                        }
                    }
                }
            }
            if let Some(r) = report_after {
                if !reported && Instant::now() >= r {
                    reported = true;
                    report(Event::Waiting {
                        waited: started.elapsed(),
                    });
                }
            }
        }
    }

    /// Extends `lease` (unicast to its server while `renewing`, broadcast
    /// otherwise). `Ok(None)`: no answer; `Ok(Some(None))`: NAK.
    pub fn extend(
        &mut self,
        lease: &Lease,
        renewing: bool,
    ) -> Result<Option<Option<Lease>>, DhcpError> {
        let xid = random_u32();
        let p = client_packet(
            Ask::Extend {
                address: lease.address,
            },
            xid,
            self.mac,
            0,
            &self.hostname,
        );
        let to = if renewing {
            lease.server
        } else {
            Ipv4Addr::BROADCAST
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        match self.exchange(&p, to, &[MessageType::Ack, MessageType::Nak], deadline)? {
            None => Ok(None),
            Some(reply) if reply.message_type() == Some(MessageType::Ack) => {
                Ok(Some(Lease::from_ack(&reply, lease.server)))
            }
            Some(_) => Ok(Some(None)),
        }
    }

    /// Gives `lease` back to its server (DHCPRELEASE; no answer comes).
    pub fn release(&mut self, lease: &Lease) -> Result<(), DhcpError> {
        let p = client_packet(
            Ask::Release {
                address: lease.address,
                server: lease.server,
            },
            random_u32(),
            self.mac,
            0,
            "",
        );
        self.socket
            .send_to(&p.encode(), SocketAddrV4::new(lease.server, SERVER_PORT))
            .map_err(|e| self.sock_err(e))?;
        Ok(())
    }

    /// Runs forever: acquire, keep the lease alive, start over when it is
    /// lost. `first_deadline`: when the boot stops waiting (for the Waiting
    /// report).
    pub fn run(mut self, first_deadline: Instant, report: &mut dyn FnMut(Event)) -> DhcpError {
        let mut report_after = Some(first_deadline);
        loop {
            let mut lease = match self.acquire(report_after.take(), report) {
                Ok(l) => l,
                Err(e) => return e,
            };
            report(Event::Bound {
                lease: lease.clone(),
                renewed: false,
            });
            let mut bound_at = Instant::now();
            loop {
                let t1 = bound_at + lease.t1;
                let t2 = bound_at + lease.t2;
                let end = bound_at + lease.lease;
                std::thread::sleep(t1.saturating_duration_since(Instant::now()));
                let mut outcome = None;
                while Instant::now() < end {
                    let renewing = Instant::now() < t2;
                    match self.extend(&lease, renewing) {
                        Ok(Some(result)) => {
                            outcome = Some(result);
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => return e,
                    }
                    // RFC 2131 4.4.5: wait half the remaining time, at least 60 s.
                    let until = if renewing { t2 } else { end };
                    let half = until.saturating_duration_since(Instant::now()) / 2;
                    std::thread::sleep(
                        half.max(Duration::from_secs(60))
                            .min(end.saturating_duration_since(Instant::now())),
                    );
                }
                match outcome {
                    Some(Some(new)) if new.address == lease.address => {
                        lease = new;
                        bound_at = Instant::now();
                        report(Event::Bound {
                            lease: lease.clone(),
                            renewed: true,
                        });
                    }
                    Some(Some(new)) => {
                        report(Event::Lost {
                            lease: lease.clone(),
                            reason: format!("server moved us to {}", new.address),
                        });
                        lease = new;
                        bound_at = Instant::now();
                        report(Event::Bound {
                            lease: lease.clone(),
                            renewed: false,
                        });
                    }
                    Some(None) => {
                        report(Event::Lost {
                            lease: lease.clone(),
                            reason: "server refused renewal (NAK)".into(),
                        });
                        break;
                    }
                    None => {
                        report(Event::Lost {
                            lease: lease.clone(),
                            reason: "lease expired".into(),
                        });
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn ack() -> Packet {
        let mut p = Packet::request(0x1234_5678, MAC);
        p.op = BOOTREPLY;
        p.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        p.options = vec![
            (opt::MESSAGE_TYPE, vec![5]),
            (opt::SERVER_ID, vec![10, 0, 2, 2]),
            (opt::SUBNET_MASK, vec![255, 255, 255, 0]),
            (opt::ROUTER, vec![10, 0, 2, 2]),
            (opt::DNS, vec![10, 0, 2, 3, 1, 1, 1, 1]),
            (opt::LEASE_TIME, 86400u32.to_be_bytes().to_vec()),
            (opt::DOMAIN, b"example.org".to_vec()),
        ];
        p
    }

    #[test]
    fn discover_encodes_as_rfc2131_says() {
        let p = client_packet(Ask::Discover, 0xdead_beef, MAC, 3, "edge-1");
        let b = p.encode();
        assert_eq!(b.len(), 300);
        assert_eq!(&b[0..4], &[1, 1, 6, 0]);
        assert_eq!(&b[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&b[8..10], &[0, 3]);
        assert_eq!(&b[10..12], &[0x80, 0], "broadcast flag");
        assert_eq!(&b[28..34], &MAC);
        assert_eq!(&b[236..240], &MAGIC);
        assert_eq!(&b[240..243], &[53, 1, 1], "DHCPDISCOVER first");
        let back = Packet::decode(&b).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.option(opt::HOSTNAME), Some(&b"edge-1"[..]));
        assert_eq!(
            back.option(opt::CLIENT_ID),
            Some(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56][..])
        );
    }

    #[test]
    fn select_and_extend_requests() {
        let p = client_packet(
            Ask::Select {
                address: Ipv4Addr::new(10, 0, 2, 15),
                server: Ipv4Addr::new(10, 0, 2, 2),
            },
            1,
            MAC,
            0,
            "",
        );
        assert_eq!(p.message_type(), Some(MessageType::Request));
        assert_eq!(p.option(opt::REQUESTED_IP), Some(&[10, 0, 2, 15][..]));
        assert_eq!(p.option(opt::SERVER_ID), Some(&[10, 0, 2, 2][..]));
        assert!(p.option(opt::HOSTNAME).is_none());
        let p = client_packet(
            Ask::Extend {
                address: Ipv4Addr::new(10, 0, 2, 15),
            },
            1,
            MAC,
            0,
            "h",
        );
        assert_eq!(p.ciaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(p.flags, 0, "renewals are unicast");
        assert!(p.option(opt::REQUESTED_IP).is_none() && p.option(opt::SERVER_ID).is_none());
    }

    #[test]
    fn ack_becomes_a_lease() {
        let decoded = Packet::decode(&ack().encode()).unwrap();
        assert_eq!(decoded.message_type(), Some(MessageType::Ack));
        let lease = Lease::from_ack(&decoded, Ipv4Addr::UNSPECIFIED).unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            lease.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(lease.server, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(lease.domain.as_deref(), Some("example.org"));
        assert_eq!(lease.lease, Duration::from_secs(86400));
        assert_eq!(lease.t1, Duration::from_secs(43200));
        assert_eq!(lease.t2, Duration::from_secs(75600));
    }

    #[test]
    fn explicit_timers_and_missing_mask() {
        let mut p = ack();
        p.options.retain(|(c, _)| *c != opt::SUBNET_MASK);
        p.options.push((opt::T1, 100u32.to_be_bytes().to_vec()));
        p.options.push((opt::T2, 150u32.to_be_bytes().to_vec()));
        let lease = Lease::from_ack(&p, Ipv4Addr::UNSPECIFIED).unwrap();
        assert_eq!(lease.prefix, 8, "classful default for 10/8");
        assert_eq!(lease.t1, Duration::from_secs(100));
        assert_eq!(lease.t2, Duration::from_secs(150));
    }

    #[test]
    fn split_options_are_joined_and_garbage_is_rejected() {
        let mut b = ack().encode();
        // Replace END with a DNS option split in two parts.
        let end = b.iter().rposition(|x| *x == opt::END).unwrap();
        b.truncate(end);
        b.extend_from_slice(&[opt::DOMAIN, 2, b'.', b'x', opt::END]);
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.option(opt::DOMAIN), Some(&b"example.org.x"[..]));
        assert!(Packet::decode(&b[..200]).is_err());
        let mut bad = b.clone();
        bad[236] = 0;
        assert!(Packet::decode(&bad).is_err());
        let mut short = ack().encode();
        let end = short.iter().rposition(|x| *x == opt::END).unwrap();
        short.truncate(end);
        short.extend_from_slice(&[opt::DNS, 40, 1, 2]);
        assert!(Packet::decode(&short).is_err());
        for cut in 0..300 {
            let _ = Packet::decode(&ack().encode()[..cut]);
        }
    }

    #[test]
    fn masks_and_delays() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(retransmit_delay(0), Duration::from_millis(250));
        assert_eq!(retransmit_delay(2), Duration::from_secs(1));
        assert_eq!(retransmit_delay(40), Duration::from_secs(32));
    }
}
