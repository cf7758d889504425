//! The DNS server of a user-created container network, like Docker's embedded
//! DNS or Podman's aardvark-dns: it owns the DNS wire codec (the part a query
//! needs), the name table ([`Records`]) and the server thread ([`DnsServer`]).
//!
//! hostd is static and has no NSS, so it speaks DNS itself. One server runs per
//! network, on the network's gateway address, port 53, UDP and TCP. The daemon
//! keeps its [`Records`] up to date as containers come and go (each container's
//! name and aliases map to its addresses). For a query:
//!
//! - a known name, class IN: an authoritative answer. Type A gets every address
//!   of the name (TTL [`TTL`]); any other type gets NOERROR without answers
//!   (NODATA), so a stub resolver does not go on to the upstreams with, say, the
//!   AAAA half of its question. A PTR question for `d.c.b.a.in-addr.arpa` of a
//!   known address gets the name the address was first added under.
//! - anything else (single-label names included, as Docker does): forwarded
//!   verbatim, with a fresh random id, to the host's resolvers in order, each on
//!   a new socket for [`FORWARD_TIMEOUT`]; the first answer is relayed verbatim
//!   with the client's id (SERVFAIL and REFUSED answers move on to the next
//!   upstream while there is one). No upstream answering, or none configured:
//!   SERVFAIL. Each forward runs on its own thread, at most [`MAX_WORKERS`] at
//!   once with the TCP connections; over that, SERVFAIL at once, so local names
//!   are always answered without waiting on the upstreams.
//! - responses (QR set) and packets shorter than a header are dropped (a server
//!   that answers answers can be made to loop with another one); a readable
//!   header with anything unparsable behind it, or not exactly one question,
//!   gets FORMERR; opcodes other than QUERY get NOTIMP.
//!
//! UDP answers stay within 512 bytes, or the client's EDNS payload size capped
//! at [`EDNS_SIZE`]; what does not fit is cut at a record boundary and TC is
//! set (the client retries over TCP). A query with an EDNS OPT record gets a
//! minimal OPT record back. Name compression pointers are followed backwards
//! only, so every name read ends.
//!
//! [`handle`] is the whole per-packet decision, pure and unit-tested; the
//! server thread only moves bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::os::{poll_readable, EventFd};

/// TTL of local answers: 0, so nothing caches a container's address past its
/// removal or restart (Docker says 600; names here change with containers).
pub const TTL: u32 = 0;
/// The largest UDP answer to a client without EDNS.
pub const UDP_LIMIT: usize = 512;
/// The UDP payload size this server advertises and caps EDNS clients at (the
/// DNS flag day 2020 value: no IP fragmentation on common paths).
pub const EDNS_SIZE: u16 = 1232;
/// How long one upstream gets to answer a forwarded query.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many forwards and TCP connections at once, per server.
pub const MAX_WORKERS: usize = 64;
/// A TCP client that sends nothing for this long is disconnected.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// The DNS port.
pub const PORT: u16 = 53;

const HEADER_LEN: usize = 12;
const NAME_MAX: usize = 255;
const LABEL_MAX: usize = 63;
/// The OPT record this server appends: root name, type, class, TTL, RDLENGTH.
const OPT_LEN: usize = 11;

/// Response codes.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// The query could not be parsed.
    pub const FORMERR: u8 = 1;
    /// The server failed (here: no upstream answered).
    pub const SERVFAIL: u8 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// The opcode is not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused by policy.
    pub const REFUSED: u8 = 5;
}

/// Record types used here.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Domain name pointer (reverse lookups).
    pub const PTR: u16 = 12;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// EDNS pseudo-record.
    pub const OPT: u16 = 41;
    /// Any type (QTYPE only).
    pub const ANY: u16 = 255;
}

/// Class IN.
pub const CLASS_IN: u16 = 1;

mod flag {
    pub const QR: u16 = 0x8000;
    pub const OPCODE: u16 = 0x7800;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
}

/// Errors of the wire codec: why a message is not a query this server takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header.
    #[error("DNS message of {0} bytes is shorter than its 12-byte header")]
    ShortHeader(usize),
    /// The message ends inside a field.
    #[error("DNS message truncated at offset {0}")]
    Truncated(usize),
    /// A compression pointer that does not point backwards (loops included).
    #[error("DNS name compression pointer at offset {0} does not point backwards")]
    BadPointer(usize),
    /// A name over 255 bytes.
    #[error("DNS name at offset {0} is longer than 255 bytes")]
    NameTooLong(usize),
    /// A label type other than a length or a pointer.
    #[error("DNS label type {kind:#04x} at offset {offset}")]
    BadLabel {
        /// The length byte.
        kind: u8,
        /// Where it is.
        offset: usize,
    },
    /// A response, not a query.
    #[error("DNS message is a response, not a query")]
    NotQuery,
    /// Not exactly one question.
    #[error("DNS query with {0} questions, expected 1")]
    QuestionCount(u16),
}

/// The fixed 12-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Query id.
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z and RCODE.
    pub flags: u16,
    /// Questions.
    pub qdcount: u16,
    /// Answer records.
    pub ancount: u16,
    /// Authority records.
    pub nscount: u16,
    /// Additional records.
    pub arcount: u16,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, WireError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(WireError::Truncated(at))
}

impl Header {
    /// Reads the header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<Header, WireError> {
        if b.len() < HEADER_LEN {
            return Err(WireError::ShortHeader(b.len()));
        }
        let w = |at| u16::from_be_bytes([b[at], b[at + 1]]);
        Ok(Header {
            id: w(0),
            flags: w(2),
            qdcount: w(4),
            ancount: w(6),
            nscount: w(8),
            arcount: w(10),
        })
    }

    /// Appends the 12 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.id,
            self.flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// The opcode (0 = QUERY).
    pub fn opcode(&self) -> u8 {
        ((self.flags & flag::OPCODE) >> 11) as u8
    }

    /// Whether QR is set.
    pub fn is_response(&self) -> bool {
        self.flags & flag::QR != 0
    }

    /// The response code.
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }
}

/// Reads the name at `at`: its labels, and the offset just past the name where
/// it starts (past its first compression pointer, if any). Pointers must point
/// before the place the current run of labels started, so reading always ends.
pub fn read_name(b: &[u8], at: usize) -> Result<(Vec<Vec<u8>>, usize), WireError> {
    let mut labels = Vec::new();
    let mut pos = at;
    let mut floor = at;
    let mut end = None;
    let mut wire_len = 1;
    loop {
        let len = *b.get(pos).ok_or(WireError::Truncated(pos))?;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok((labels, end.unwrap_or(pos + 1))),
            0x00 => {
                let len = usize::from(len);
                wire_len += 1 + len;
                if wire_len > NAME_MAX {
                    return Err(WireError::NameTooLong(at));
                }
                let label = b
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(WireError::Truncated(pos + 1))?;
                labels.push(label.to_vec());
                pos += 1 + len;
            }
            0xc0 => {
                let low = *b.get(pos + 1).ok_or(WireError::Truncated(pos + 1))?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                if target >= floor {
                    return Err(WireError::BadPointer(pos));
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => {
                return Err(WireError::BadLabel {
                    kind: len,
                    offset: pos,
                })
            }
        }
    }
}

/// Appends `name` (dotted, without the root's dot) uncompressed. False (and
/// nothing appended) when a label is empty or over 63 bytes or the name over
/// 255 bytes.
fn encode_name(name: &str, out: &mut Vec<u8>) -> bool {
    let labels: Vec<&[u8]> = if name.is_empty() {
        Vec::new()
    } else {
        name.split('.').map(str::as_bytes).collect()
    };
    if labels.iter().any(|l| l.is_empty() || l.len() > LABEL_MAX)
        || labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1 > NAME_MAX
    {
        return false;
    }
    encode_labels(&labels, out);
    true
}

fn encode_labels<L: AsRef<[u8]>>(labels: &[L], out: &mut Vec<u8>) {
    for label in labels {
        let label = label.as_ref();
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

/// A question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The labels as sent (case kept, for the echo).
    pub labels: Vec<Vec<u8>>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

impl Question {
    /// The name lowercased and dotted, without the root's dot; `None` when a
    /// label holds a byte that is not printable ASCII, or a dot (such names
    /// are never local: they are forwarded).
    pub fn name(&self) -> Option<String> {
        let mut name = String::new();
        for label in &self.labels {
            if !label.iter().all(|c| c.is_ascii_graphic() && *c != b'.') {
                return None;
            }
            if !name.is_empty() {
                name.push('.');
            }
            name.extend(label.iter().map(|c| char::from(c.to_ascii_lowercase())));
        }
        Some(name)
    }

    /// Appends the question, its name uncompressed.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_labels(&self.labels, out);
        out.extend_from_slice(&self.qtype.to_be_bytes());
        out.extend_from_slice(&self.qclass.to_be_bytes());
    }
}

/// A parsed query: the header, its one question and the EDNS payload size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The header as received.
    pub header: Header,
    /// The question.
    pub question: Question,
    /// The UDP payload size of the query's OPT record, if it has one.
    pub edns: Option<u16>,
}

/// The transport a query came over: it sets the answer's size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the EDNS size up to [`EDNS_SIZE`].
    Udp,
    /// TCP: 65535 bytes.
    Tcp,
}

impl Query {
    /// Parses `b` as a query with one question. Records after the question
    /// are only searched for an OPT record; if they do not parse, the query is
    /// taken without EDNS.
    pub fn parse(b: &[u8]) -> Result<Query, WireError> {
        let header = Header::parse(b)?;
        if header.is_response() {
            return Err(WireError::NotQuery);
        }
        if header.qdcount != 1 {
            return Err(WireError::QuestionCount(header.qdcount));
        }
        let (labels, pos) = read_name(b, HEADER_LEN)?;
        let qtype = u16_at(b, pos)?;
        let qclass = u16_at(b, pos + 2)?;
        let edns = find_opt(b, pos + 4, &header).unwrap_or(None);
        Ok(Query {
            header,
            question: Question {
                labels,
                qtype,
                qclass,
            },
            edns,
        })
    }

    /// The largest answer to this query over `transport`.
    pub fn limit(&self, transport: Transport) -> usize {
        match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => self.edns.map_or(UDP_LIMIT, |size| {
                usize::from(size).clamp(UDP_LIMIT, usize::from(EDNS_SIZE))
            }),
        }
    }
}

/// The UDP payload size of the OPT record in the additional section, if any.
fn find_opt(b: &[u8], mut pos: usize, header: &Header) -> Result<Option<u16>, WireError> {
    let before = usize::from(header.ancount) + usize::from(header.nscount);
    let total = before + usize::from(header.arcount);
    let mut edns = None;
    // Each record takes at least 11 bytes, so this ends at the packet's end.
    for i in 0..total {
        let (labels, p) = read_name(b, pos)?;
        let kind = u16_at(b, p)?;
        let class = u16_at(b, p + 2)?;
        let rdlength = u16_at(b, p + 8)?;
        pos = p + 10 + usize::from(rdlength);
        if pos > b.len() {
            return Err(WireError::Truncated(p + 10));
        }
        if i >= before && kind == rtype::OPT && labels.is_empty() {
            edns = Some(class);
        }
    }
    Ok(edns)
}

/// One answer record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    /// An A record.
    A(Ipv4Addr),
    /// A PTR record (the name, dotted).
    Ptr(String),
}

/// The answer to `query`: the question echoed, `answers` under its name for
/// as many as fit in `limit` (TC set when some do not), an OPT record if the
/// query had one.
pub fn response(
    query: &Query,
    rcode: u8,
    authoritative: bool,
    answers: &[Rdata],
    limit: usize,
) -> Vec<u8> {
    let mut flags = flag::QR
        | (query.header.flags & (flag::OPCODE | flag::RD))
        | flag::RA
        | u16::from(rcode & 0xf);
    if authoritative {
        flags |= flag::AA;
    }
    let mut out = Vec::with_capacity(UDP_LIMIT);
    let mut header = Header {
        id: query.header.id,
        flags,
        qdcount: 1,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    };
    header.encode(&mut out);
    query.question.encode(&mut out);
    let reserve = if query.edns.is_some() { OPT_LEN } else { 0 };
    for answer in answers {
        // The owner is the question's name, at offset 12.
        let mut rr = vec![0xc0, HEADER_LEN as u8];
        let (kind, rdata) = match answer {
            Rdata::A(address) => (rtype::A, address.octets().to_vec()),
            Rdata::Ptr(name) => {
                let mut rdata = Vec::new();
                if !encode_name(name, &mut rdata) {
                    continue;
                }
                (rtype::PTR, rdata)
            }
        };
        rr.extend_from_slice(&kind.to_be_bytes());
        rr.extend_from_slice(&CLASS_IN.to_be_bytes());
        rr.extend_from_slice(&TTL.to_be_bytes());
        rr.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        rr.extend_from_slice(&rdata);
        if out.len() + rr.len() + reserve > limit {
            header.flags |= flag::TC;
            break;
        }
        out.extend_from_slice(&rr);
        header.ancount += 1;
    }
    if query.edns.is_some() {
        out.push(0);
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_SIZE.to_be_bytes());
        out.extend_from_slice(&[0; 6]);
        header.arcount = 1;
    }
    let mut head = Vec::with_capacity(HEADER_LEN);
    header.encode(&mut head);
    out[..HEADER_LEN].copy_from_slice(&head);
    out
}

/// A bare header answering `header` with `rcode` (for queries whose question
/// cannot be read).
fn header_response(header: &Header, rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    Header {
        id: header.id,
        flags: flag::QR | (header.flags & (flag::OPCODE | flag::RD)) | flag::RA | u16::from(rcode),
        qdcount: 0,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
    .encode(&mut out);
    out
}

/// An upstream's answer to `query` made the client's: its id back, and when
/// it is over `limit`, cut to its header (TC set, rcode kept) and the question.
pub fn relay(mut reply: Vec<u8>, query: &Query, limit: usize) -> Vec<u8> {
    if reply.len() > limit || reply.len() < HEADER_LEN {
        let flags = u16_at(&reply, 2).unwrap_or(flag::QR | u16::from(rcode::SERVFAIL));
        let mut out = Vec::with_capacity(UDP_LIMIT);
        Header {
            id: query.header.id,
            flags: flags | flag::QR | flag::TC,
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: 0,
        }
        .encode(&mut out);
        query.question.encode(&mut out);
        return out;
    }
    reply[..2].copy_from_slice(&query.header.id.to_be_bytes());
    reply
}

/// What to do with one received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this answer.
    Reply(Vec<u8>),
    /// Forward the packet upstream; this is the parsed query.
    Forward(Query),
    /// Send nothing.
    Drop,
}

/// The decision for one packet (see the module overview). `forward` says
/// whether there are upstreams; without, unknown names get SERVFAIL.
pub fn handle(packet: &[u8], records: &Records, transport: Transport, forward: bool) -> Action {
    let Ok(header) = Header::parse(packet) else {
        return Action::Drop;
    };
    if header.is_response() {
        return Action::Drop;
    }
    let query = match Query::parse(packet) {
        Ok(query) => query,
        Err(_) => return Action::Reply(header_response(&header, rcode::FORMERR)),
    };
    let limit = query.limit(transport);
    if header.opcode() != 0 {
        return Action::Reply(response(&query, rcode::NOTIMP, false, &[], limit));
    }
    if let Some(answers) = local_answers(&query.question, records) {
        return Action::Reply(response(&query, rcode::NOERROR, true, &answers, limit));
    }
    if forward {
        Action::Forward(query)
    } else {
        Action::Reply(response(&query, rcode::SERVFAIL, false, &[], limit))
    }
}

/// The local answers to `question` (possibly none: NODATA), or `None` when
/// the name is not local.
fn local_answers(question: &Question, records: &Records) -> Option<Vec<Rdata>> {
    if question.qclass != CLASS_IN {
        return None;
    }
    let name = question.name()?;
    if question.qtype == rtype::PTR {
        if let Some(found) = reverse_address(&name).and_then(|a| records.reverse(a)) {
            return Some(vec![Rdata::Ptr(found)]);
        }
    }
    let addresses = records.lookup(&name);
    if addresses.is_empty() {
        return None;
    }
    Some(match question.qtype {
        rtype::A | rtype::ANY => addresses.into_iter().map(Rdata::A).collect(),
        _ => Vec::new(),
    })
}

/// The address of a lowercased `d.c.b.a.in-addr.arpa` name.
pub fn reverse_address(name: &str) -> Option<Ipv4Addr> {
    let octets = name.strip_suffix(".in-addr.arpa")?;
    let mut parts = [0u8; 4];
    let mut count = 0;
    for part in octets.split('.') {
        if count == 4
            || part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        parts[3 - count] = part.parse().ok()?;
        count += 1;
    }
    (count == 4).then(|| Ipv4Addr::from(parts))
}

/// The names a server answers for: name (case-insensitive, without trailing
/// dot) -> IPv4 addresses. Shared between the daemon (which updates it as
/// containers come and go) and the server thread.
#[derive(Debug, Default)]
pub struct Records {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    names: BTreeMap<String, Vec<Ipv4Addr>>,
    /// For PTR: each address's names, in the order they were added.
    addresses: BTreeMap<Ipv4Addr, Vec<String>>,
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Records {
    /// An empty table.
    pub fn new() -> Arc<Records> {
        Arc::new(Records::default())
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `address` under `name` (a name may have several addresses:
    /// several containers share an alias). An empty name is ignored.
    pub fn add(&self, name: &str, address: Ipv4Addr) {
        let name = normalize(name);
        if name.is_empty() {
            return;
        }
        let mut table = self.table();
        let addresses = table.names.entry(name.clone()).or_default();
        if !addresses.contains(&address) {
            addresses.push(address);
        }
        let names = table.addresses.entry(address).or_default();
        if !names.contains(&name) {
            names.push(name);
        }
    }

    /// Removes `address` from `name` (and the name when none is left).
    pub fn remove(&self, name: &str, address: Ipv4Addr) {
        let name = normalize(name);
        let mut table = self.table();
        if let Some(addresses) = table.names.get_mut(&name) {
            addresses.retain(|a| *a != address);
            if addresses.is_empty() {
                table.names.remove(&name);
            }
        }
        if let Some(names) = table.addresses.get_mut(&address) {
            names.retain(|n| *n != name);
            if names.is_empty() {
                table.addresses.remove(&address);
            }
        }
    }

    /// The addresses of `name`, in the order they were added.
    pub fn lookup(&self, name: &str) -> Vec<Ipv4Addr> {
        self.table()
            .names
            .get(&normalize(name))
            .cloned()
            .unwrap_or_default()
    }

    /// The name for a reverse lookup of `address` (PTR), if any: the first
    /// one it was added under that is still there (the daemon adds a
    /// container's own name before its aliases).
    pub fn reverse(&self, address: Ipv4Addr) -> Option<String> {
        self.table()
            .addresses
            .get(&address)
            .and_then(|names| names.first().cloned())
    }
}

/// Parses the nameserver lines of a resolv.conf text into upstream addresses
/// (port 53), skipping loopback and unspecified ones and any it cannot read
/// (IPv6 with a zone, for one).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(address)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if address.is_loopback() || address.is_unspecified() {
            continue;
        }
        let upstream = SocketAddr::new(address, PORT);
        if !upstreams.contains(&upstream) {
            upstreams.push(upstream);
        }
    }
    upstreams
}

/// What the server threads share.
struct Shared {
    records: Arc<Records>,
    upstreams: Vec<SocketAddr>,
    /// Readable once the server stops (never drained).
    stop: EventFd,
}

/// One server: a thread answering on `bind` over UDP and TCP. Dropping it (or
/// `stop`) closes the sockets and joins the thread (and the forward and TCP
/// threads; a forward in a TCP connect can take up to [`FORWARD_TIMEOUT`]).
pub struct DnsServer {
    local: SocketAddrV4,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local", &self.local)
            .field("upstreams", &self.shared.upstreams)
            .finish()
    }
}

fn with_address(e: io::Error, what: &str, address: SocketAddrV4) -> io::Error {
    io::Error::new(e.kind(), format!("DNS server on {address} ({what}): {e}"))
}

fn bind_pair(bind: SocketAddrV4) -> io::Result<(UdpSocket, TcpListener, SocketAddrV4)> {
    // With port 0, UDP picks the port and TCP takes the same one, which a
    // TCP socket may already hold: try a few.
    let tries = if bind.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(bind).map_err(|e| with_address(e, "UDP", bind))?;
        let local = match udp.local_addr() {
            Ok(SocketAddr::V4(local)) => local,
            Ok(SocketAddr::V6(_)) => return Err(io::Error::other("IPv6 local address")),
            Err(e) => return Err(with_address(e, "UDP", bind)),
        };
        match TcpListener::bind(local) {
            Ok(tcp) => return Ok((udp, tcp, local)),
            Err(e) => last = Some(with_address(e, "TCP", local)),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no bind attempt")))
}

impl DnsServer {
    /// Binds (error if the address is taken: the io::Error with the address
    /// in the message) and starts the thread. `upstreams`: the host's
    /// resolvers (from its /etc/resolv.conf, loopback ones excluded by the
    /// caller), tried in order for names not in `records`.
    pub fn start(
        bind: SocketAddrV4,
        records: Arc<Records>,
        upstreams: Vec<SocketAddr>,
    ) -> io::Result<DnsServer> {
        let (udp, tcp, local) = bind_pair(bind)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            records,
            upstreams,
            stop: EventFd::new()?,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("dns".into())
            .spawn(move || serve(Arc::new(udp), tcp, thread_shared))?;
        Ok(DnsServer {
            local,
            shared,
            thread: Some(thread),
        })
    }

    /// The address it answers on (the port chosen when `bind` had 0).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Stops the server: closes the sockets and joins the threads.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.notify();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a wait for a descriptor ended.
enum Wait {
    Ready,
    Timeout,
    Stopped,
}

fn wait(fd: BorrowedFd<'_>, stop: &EventFd, deadline: Instant) -> Wait {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Wait::Timeout;
        }
        match poll_readable(&[fd, stop.fd()], Some(deadline - now)) {
            Ok(ready) if ready[1] => return Wait::Stopped,
            Ok(ready) if ready[0] => return Wait::Ready,
            Ok(_) => {}
            Err(_) => return Wait::Timeout,
        }
    }
}

fn stopped(stop: &EventFd) -> bool {
    matches!(poll_readable(&[stop.fd()], Some(Duration::ZERO)), Ok(r) if r[0])
}

/// The server thread: reads UDP queries and accepts TCP connections until
/// stopped, then joins its workers.
fn serve(udp: Arc<UdpSocket>, tcp: TcpListener, shared: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let fds = [udp.as_fd(), tcp.as_fd(), shared.stop.fd()];
        let ready = match poll_readable(&fds, None) {
            Ok(ready) => ready,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if ready[2] {
            break;
        }
        workers.retain(|w| !w.is_finished());
        if ready[0] {
            // A bounded batch, so TCP and stop get their turn under a flood.
            for _ in 0..64 {
                match udp.recv_from(&mut buf) {
                    Ok((n, client)) => {
                        answer_udp(&buf[..n], client, &udp, &shared, &mut workers);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if ready[1] {
            match tcp.accept() {
                Ok((stream, _)) if workers.len() < MAX_WORKERS => {
                    let shared = Arc::clone(&shared);
                    if let Ok(worker) = thread::Builder::new()
                        .name("dns-tcp".into())
                        .spawn(move || serve_tcp(stream, &shared))
                    {
                        workers.push(worker);
                    }
                }
                // Over the cap the connection is closed at once.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Out of descriptors, say: do not spin on the readable listener.
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
}

fn answer_udp(
    packet: &[u8],
    client: SocketAddr,
    udp: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    workers: &mut Vec<JoinHandle<()>>,
) {
    let query = match handle(
        packet,
        &shared.records,
        Transport::Udp,
        !shared.upstreams.is_empty(),
    ) {
        Action::Reply(reply) => {
            let _ = udp.send_to(&reply, client);
            return;
        }
        Action::Drop => return,
        Action::Forward(query) => query,
    };
    let limit = query.limit(Transport::Udp);
    let servfail = response(&query, rcode::SERVFAIL, false, &[], limit);
    if workers.len() >= MAX_WORKERS {
        let _ = udp.send_to(&servfail, client);
        return;
    }
    let packet = packet.to_vec();
    let (udp_w, shared_w) = (Arc::clone(udp), Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name("dns-forward".into())
        .spawn(move || {
            let reply = match forward(&packet, &shared_w.upstreams, &shared_w.stop, false) {
                Forwarded::Answer(reply) => relay(reply, &query, limit),
                Forwarded::Failed => response(&query, rcode::SERVFAIL, false, &[], limit),
                Forwarded::Stopped => return,
            };
            let _ = udp_w.send_to(&reply, client);
        });
    match spawned {
        Ok(worker) => workers.push(worker),
        Err(_) => {
            let _ = udp.send_to(&servfail, client);
        }
    }
}

/// One TCP connection: length-prefixed queries answered in turn until the
/// client closes, idles for [`TCP_IDLE`] or the server stops.
fn serve_tcp(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(FORWARD_TIMEOUT));
    loop {
        let deadline = Instant::now() + TCP_IDLE;
        let mut length = [0u8; 2];
        if !read_full(&mut stream, &mut length, &shared.stop, deadline) {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(length))];
        if !read_full(&mut stream, &mut packet, &shared.stop, deadline) {
            return;
        }
        let forward_ok = !shared.upstreams.is_empty();
        let reply = match handle(&packet, &shared.records, Transport::Tcp, forward_ok) {
            Action::Reply(reply) => reply,
            Action::Drop => return,
            Action::Forward(query) => {
                let limit = query.limit(Transport::Tcp);
                match forward(&packet, &shared.upstreams, &shared.stop, true) {
                    Forwarded::Answer(reply) => relay(reply, &query, limit),
                    Forwarded::Failed => response(&query, rcode::SERVFAIL, false, &[], limit),
                    Forwarded::Stopped => return,
                }
            }
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}

/// Fills `buf` from a blocking stream, waiting at most until `deadline`.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], stop: &EventFd, deadline: Instant) -> bool {
    let mut got = 0;
    while got < buf.len() {
        if !matches!(wait(stream.as_fd(), stop, deadline), Wait::Ready) {
            return false;
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

/// How a forward ended.
enum Forwarded {
    /// An upstream's answer, its id still the upstream's.
    Answer(Vec<u8>),
    /// No upstream answered.
    Failed,
    /// The server is stopping.
    Stopped,
}

/// Asks the upstreams in turn; SERVFAIL and REFUSED answers are kept only if
/// no later upstream does better.
fn forward(packet: &[u8], upstreams: &[SocketAddr], stop: &EventFd, tcp: bool) -> Forwarded {
    let mut fallback = None;
    for &upstream in upstreams {
        let id = super::dhcp::random_u32() as u16;
        let mut query = packet.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        let exchanged = if tcp {
            exchange_tcp(&query, upstream, stop)
        } else {
            exchange_udp(&query, upstream, stop)
        };
        let reply = match exchanged {
            Err(Wait::Stopped) => return Forwarded::Stopped,
            Err(_) => continue,
            Ok(reply) => reply,
        };
        match Header::parse(&reply) {
            Ok(h) if h.id == id && h.is_response() => {
                if matches!(h.rcode(), rcode::SERVFAIL | rcode::REFUSED) {
                    fallback = Some(reply);
                    continue;
                }
                return Forwarded::Answer(reply);
            }
            _ => continue,
        }
    }
    fallback.map_or(Forwarded::Failed, Forwarded::Answer)
}

/// One query to one upstream over a new connected UDP socket: the first
/// response with the query's id, within [`FORWARD_TIMEOUT`].
fn exchange_udp(query: &[u8], upstream: SocketAddr, stop: &EventFd) -> Result<Vec<u8>, Wait> {
    let any: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).map_err(|_| Wait::Timeout)?;
    socket.connect(upstream).map_err(|_| Wait::Timeout)?;
    socket.set_nonblocking(true).map_err(|_| Wait::Timeout)?;
    socket.send(query).map_err(|_| Wait::Timeout)?;
    let deadline = Instant::now() + FORWARD_TIMEOUT;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        match wait(socket.as_fd(), stop, deadline) {
            Wait::Ready => {}
            other => return Err(other),
        }
        match socket.recv(&mut buf) {
            Ok(n) if n >= HEADER_LEN && buf[..2] == query[..2] && buf[2] & 0x80 != 0 => {
                return Ok(buf[..n].to_vec());
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            // ICMP port unreachable, say: on to the next upstream.
            Err(_) => return Err(Wait::Timeout),
        }
    }
}

/// One query to one upstream over a new TCP connection.
fn exchange_tcp(query: &[u8], upstream: SocketAddr, stop: &EventFd) -> Result<Vec<u8>, Wait> {
    let deadline = Instant::now() + FORWARD_TIMEOUT;
    let mut stream =
        TcpStream::connect_timeout(&upstream, FORWARD_TIMEOUT).map_err(|_| Wait::Timeout)?;
    let _ = stream.set_write_timeout(Some(FORWARD_TIMEOUT));
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(|_| Wait::Timeout)?;
    let mut length = [0u8; 2];
    let mut reply = Vec::new();
    let ok = read_full(&mut stream, &mut length, stop, deadline) && {
        reply.resize(usize::from(u16::from_be_bytes(length)), 0);
        read_full(&mut stream, &mut reply, stop, deadline)
    };
    if ok {
        Ok(reply)
    } else if stopped(stop) {
        Err(Wait::Stopped)
    } else {
        Err(Wait::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const WEB: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const DB: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);

    /// A query as a stub resolver sends it: RD set, one question, class IN.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut b = id.to_be_bytes().to_vec();
        b.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&[0, 1]);
        b
    }

    /// An answer read by a parser of its own: the question skipped, answers
    /// whose owner must be a pointer to offset 12.
    #[derive(Debug)]
    struct Answer {
        id: u16,
        flags: u16,
        answers: Vec<(u16, u32, Vec<u8>)>,
        arcount: u16,
    }

    impl Answer {
        fn rcode(&self) -> u8 {
            (self.flags & 0xf) as u8
        }
        fn addresses(&self) -> Vec<Ipv4Addr> {
            self.answers
                .iter()
                .filter(|(t, _, _)| *t == rtype::A)
                .map(|(_, _, d)| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
                .collect()
        }
    }

    fn parse_answer(b: &[u8]) -> Answer {
        let w = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        assert_eq!(w(4), 1, "one question echoed");
        let mut pos = 12;
        while b[pos] != 0 {
            pos += 1 + usize::from(b[pos]);
        }
        pos += 5;
        let mut answers = Vec::new();
        for _ in 0..w(6) {
            assert_eq!(&b[pos..pos + 2], &[0xc0, 12]);
            let kind = w(pos + 2);
            assert_eq!(w(pos + 4), 1);
            let ttl = u32::from_be_bytes([b[pos + 6], b[pos + 7], b[pos + 8], b[pos + 9]]);
            let len = usize::from(w(pos + 10));
            answers.push((kind, ttl, b[pos + 12..pos + 12 + len].to_vec()));
            pos += 12 + len;
        }
        Answer {
            id: w(0),
            flags: w(2),
            answers,
            arcount: w(10),
        }
    }

    fn records() -> Arc<Records> {
        let records = Records::new();
        records.add("web", WEB);
        records.add("app", WEB);
        records.add("db", DB);
        records.add("app", DB);
        records
    }

    fn reply(packet: &[u8], records: &Records) -> Vec<u8> {
        match handle(packet, records, Transport::Udp, false) {
            Action::Reply(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_answer_encodes_byte_for_byte() {
        let q = query(0xbeef, "Web", rtype::A);
        assert_eq!(
            q,
            [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'W', b'e', b'b', 0, 0, 1, 0, 1]
        );
        let r = reply(&q, &records());
        let mut expected = vec![0xbe, 0xef, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        expected.extend_from_slice(&[3, b'W', b'e', b'b', 0, 0, 1, 0, 1]);
        expected.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 88, 0, 2]);
        assert_eq!(r, expected, "QR AA RD RA, question with its case, one A");
    }

    #[test]
    fn names_with_pointers_and_bad_names() {
        // "a.b" at 12, then "x" + pointer to "b" (offset 14).
        let mut b = vec![0; 12];
        b.extend_from_slice(&[1, b'a', 1, b'b', 0, 1, b'x', 0xc0, 14]);
        let (labels, end) = read_name(&b, 12).unwrap();
        assert_eq!(labels, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(end, 17);
        let (labels, end) = read_name(&b, 17).unwrap();
        assert_eq!(labels, [b"x".to_vec(), b"b".to_vec()]);
        assert_eq!(end, 21);
        // A pointer to itself, a forward pointer, a loop through two pointers.
        let mut b = vec![0; 12];
        b.extend_from_slice(&[0xc0, 12]);
        assert_eq!(read_name(&b, 12), Err(WireError::BadPointer(12)));
        let mut b = vec![0; 12];
        b.extend_from_slice(&[0xc0, 14, 0]);
        assert_eq!(read_name(&b, 12), Err(WireError::BadPointer(12)));
        let mut b = vec![0; 12];
        b.extend_from_slice(&[1, b'a', 0xc0, 12]);
        assert_eq!(read_name(&b, 12), Err(WireError::BadPointer(14)));
        let mut b = vec![0; 12];
        b.extend_from_slice(&[0x40, 0]);
        assert!(matches!(
            read_name(&b, 12),
            Err(WireError::BadLabel { kind: 0x40, .. })
        ));
        let mut long = vec![0; 12];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(read_name(&long, 12), Err(WireError::NameTooLong(12)));
        assert_eq!(read_name(&[3, b'a'], 0), Err(WireError::Truncated(1)));
    }

    #[test]
    fn nodata_ptr_case_and_unknown() {
        let records = records();
        let r = parse_answer(&reply(&query(1, "WEB.", rtype::A), &records));
        assert_eq!((r.id, r.rcode(), r.addresses()), (1, 0, vec![WEB]));
        assert_eq!(r.answers[0].1, TTL);
        let r = parse_answer(&reply(&query(2, "app", rtype::A), &records));
        assert_eq!(r.addresses(), [WEB, DB], "a shared alias has both");
        let r = parse_answer(&reply(&query(3, "web", rtype::AAAA), &records));
        assert_eq!((r.rcode(), r.answers.len()), (rcode::NOERROR, 0));
        assert_ne!(r.flags & flag::AA, 0, "NODATA is authoritative");
        let r = parse_answer(&reply(
            &query(4, "2.0.88.10.in-addr.arpa", rtype::PTR),
            &records,
        ));
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].0, rtype::PTR);
        assert_eq!(r.answers[0].2, [3, b'w', b'e', b'b', 0], "first name added");
        // Unknown names: SERVFAIL without upstreams, forwarded with them.
        let r = parse_answer(&reply(&query(5, "nothere", rtype::A), &records));
        assert_eq!(r.rcode(), rcode::SERVFAIL);
        assert_eq!(r.flags & flag::AA, 0);
        let q = query(6, "9.0.88.10.in-addr.arpa", rtype::PTR);
        assert!(matches!(
            handle(&q, &records, Transport::Udp, true),
            Action::Forward(query) if query.header.id == 6
        ));
        records.remove("web", WEB);
        assert!(matches!(
            handle(&query(7, "web", rtype::A), &records, Transport::Udp, true),
            Action::Forward(_)
        ));
        let r = parse_answer(&reply(
            &query(8, "2.0.88.10.in-addr.arpa", rtype::PTR),
            &records,
        ));
        assert_eq!(
            r.answers[0].2,
            [3, b'a', b'p', b'p', 0],
            "the alias is left"
        );
    }

    #[test]
    fn formerr_notimp_and_drops() {
        let records = records();
        assert_eq!(handle(&[], &records, Transport::Udp, true), Action::Drop);
        assert_eq!(
            handle(&[0; 11], &records, Transport::Udp, true),
            Action::Drop
        );
        let r = reply(&[0; 12], &records);
        assert_eq!(r, [0, 0, 0x80, 0x81, 0, 0, 0, 0, 0, 0, 0, 0], "FORMERR");
        let mut two = query(9, "web", rtype::A);
        two[5] = 2;
        assert_eq!(reply(&two, &records)[3] & 0xf, rcode::FORMERR);
        let mut response = query(9, "web", rtype::A);
        response[2] |= 0x80;
        assert_eq!(
            handle(&response, &records, Transport::Udp, true),
            Action::Drop
        );
        let mut status = query(9, "web", rtype::A);
        status[2] |= 2 << 3;
        let r = reply(&status, &records);
        assert_eq!((r[2] >> 3 & 0xf, r[3] & 0xf), (2, rcode::NOTIMP));
        let q = query(9, "web", rtype::A);
        assert_eq!(reply(&q[..q.len() - 1], &records)[3] & 0xf, rcode::FORMERR);
    }

    #[test]
    fn edns_and_truncation() {
        let records = Records::new();
        for i in 0..100 {
            records.add("many", Ipv4Addr::new(10, 0, 0, i));
        }
        let plain = reply(&query(1, "many", rtype::A), &records);
        assert!(plain.len() <= UDP_LIMIT);
        let r = parse_answer(&plain);
        assert_ne!(r.flags & flag::TC, 0);
        assert_eq!(r.addresses().len(), (UDP_LIMIT - 12 - 10) / 16);
        // With an OPT record of 4096: capped at EDNS_SIZE, an OPT echoed.
        let mut q = query(2, "many", rtype::A);
        q[11] = 1;
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]);
        let parsed = Query::parse(&q).unwrap();
        assert_eq!(parsed.edns, Some(4096));
        assert_eq!(parsed.limit(Transport::Udp), usize::from(EDNS_SIZE));
        let big = reply(&q, &records);
        assert!(big.len() <= usize::from(EDNS_SIZE));
        let r = parse_answer(&big);
        assert_ne!(r.flags & flag::TC, 0);
        assert_eq!(
            r.addresses().len(),
            (usize::from(EDNS_SIZE) - 12 - 10 - 11) / 16
        );
        assert_eq!(r.arcount, 1);
        assert_eq!(
            &big[big.len() - 11..],
            &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        );
        // Over TCP all of them fit.
        let Action::Reply(all) = handle(&q, &records, Transport::Tcp, false) else {
            panic!()
        };
        let r = parse_answer(&all);
        assert_eq!((r.flags & flag::TC, r.addresses().len()), (0, 100));
        // A small known name with EDNS: answered, OPT echoed.
        let records = self::records();
        let mut q = query(3, "db", rtype::A);
        q[11] = 1;
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        let r = parse_answer(&reply(&q, &records));
        assert_eq!((r.addresses(), r.arcount), (vec![DB], 1));
        // A broken additional section: still answered, without EDNS.
        q.truncate(q.len() - 3);
        let r = parse_answer(&reply(&q, &records));
        assert_eq!((r.addresses(), r.arcount), (vec![DB], 0));
    }

    #[test]
    fn relay_restores_the_id_and_truncates() {
        let q = Query::parse(&query(0x1234, "example.com", rtype::A)).unwrap();
        let mut upstream = query(0x9999, "example.com", rtype::A);
        upstream[2] |= 0x80;
        let relayed = relay(upstream.clone(), &q, UDP_LIMIT);
        assert_eq!(&relayed[..2], &[0x12, 0x34]);
        assert_eq!(&relayed[2..], &upstream[2..]);
        upstream.resize(700, 0);
        let cut = relay(upstream, &q, UDP_LIMIT);
        assert_eq!(cut.len(), 12 + 13 + 4);
        assert_eq!(&cut[..4], &[0x12, 0x34, 0x83, 0x00], "QR TC RD kept");
    }

    #[test]
    fn reverse_names_records_and_resolv_conf() {
        assert_eq!(
            reverse_address("2.0.88.10.in-addr.arpa"),
            Some(Ipv4Addr::new(10, 88, 0, 2))
        );
        for bad in [
            "0.88.10.in-addr.arpa",
            "1.2.0.88.10.in-addr.arpa",
            "256.0.88.10.in-addr.arpa",
            "+2.0.88.10.in-addr.arpa",
            "2..88.10.in-addr.arpa",
            "in-addr.arpa",
            "web",
        ] {
            assert_eq!(reverse_address(bad), None, "{bad}");
        }
        let records = Records::new();
        records.add("Web.", WEB);
        records.add("web", WEB);
        records.add("", WEB);
        assert_eq!(records.lookup("WEB"), [WEB]);
        assert_eq!(records.reverse(WEB).as_deref(), Some("web"));
        records.remove("web.", WEB);
        assert!(records.lookup("web").is_empty());
        assert_eq!(records.reverse(WEB), None);
        let text = "# comment\nnameserver 10.0.2.3\nnameserver 127.0.0.53\n\
                    nameserver ::1\nnameserver 0.0.0.0\nsearch lan\n\
                    nameserver fe80::1%eth0\n  nameserver 2001:db8::1  # v6\n\
                    nameserver 10.0.2.3\nnameserver\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            [
                "10.0.2.3:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap()
            ]
        );
    }

    /// 10,000 random buffers from a fixed seed, some built on a real query.
    fn hostile_inputs() -> Vec<Vec<u8>> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = query(1, "web.example", rtype::A);
        (0..10_000)
            .map(|i| {
                if i % 2 == 0 {
                    let len = (next() % 100) as usize;
                    (0..len).map(|_| next() as u8).collect()
                } else {
                    let mut b = base.clone();
                    for _ in 0..(next() % 4 + 1) {
                        let at = (next() as usize) % b.len();
                        b[at] = next() as u8;
                    }
                    b.truncate((next() as usize) % (b.len() + 8) + 4);
                    b
                }
            })
            .collect()
    }

    #[test]
    fn hostile_inputs_never_panic_or_overflow() {
        let records = records();
        for b in hostile_inputs() {
            for transport in [Transport::Udp, Transport::Tcp] {
                if let Action::Reply(r) = handle(&b, &records, transport, true) {
                    assert!(r.len() <= UDP_LIMIT || transport == Transport::Tcp);
                    assert!(r.len() >= 12 && r[2] & 0x80 != 0);
                }
            }
        }
    }

    // --- The server, over real sockets on 127.0.0.x. ---

    fn ask_from(client: &UdpSocket, server: SocketAddrV4, packet: &[u8]) -> Answer {
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        client.send_to(packet, server).unwrap();
        let mut buf = [0u8; 2048];
        loop {
            let n = client.recv(&mut buf).expect("an answer within 5 s");
            assert!(n <= UDP_LIMIT);
            if buf[..2] == id.to_be_bytes() {
                return parse_answer(&buf[..n]);
            }
        }
    }

    fn client() -> UdpSocket {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    fn ask(server: SocketAddrV4, packet: &[u8]) -> Answer {
        ask_from(&client(), server, packet)
    }

    fn local() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)
    }

    #[test]
    fn server_and_records_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<DnsServer>();
        shared::<Records>();
    }

    #[test]
    fn server_answers_local_names_over_udp_and_tcp() {
        let records = records();
        let server = DnsServer::start(local(), Arc::clone(&records), Vec::new()).unwrap();
        let at = server.local_addr();
        assert_ne!(at.port(), 0);
        let r = ask(at, &query(0x4242, "web", rtype::A));
        assert_eq!((r.id, r.rcode(), r.addresses()), (0x4242, 0, vec![WEB]));
        assert_eq!(r.flags & 0xff80, 0x8580, "QR AA RD RA");
        let r = ask(at, &query(2, "wEb.", rtype::AAAA));
        assert_eq!((r.rcode(), r.answers.len()), (rcode::NOERROR, 0));
        let r = ask(at, &query(3, "3.0.88.10.in-addr.arpa", rtype::PTR));
        assert_eq!(r.answers[0].2, [2, b'd', b'b', 0]);
        records.remove("db", DB);
        let r = ask(at, &query(4, "db", rtype::A));
        assert_eq!(r.rcode(), rcode::SERVFAIL, "unknown, no upstreams");
        records.add("db", DB);
        // TCP: two framed queries on one connection.
        let mut tcp = TcpStream::connect(at).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for id in [7u16, 8] {
            let q = query(id, "DB", rtype::A);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            tcp.write_all(&framed).unwrap();
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).unwrap();
            let mut b = vec![0; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut b).unwrap();
            let r = parse_answer(&b);
            assert_eq!((r.id, r.addresses()), (id, vec![DB]));
        }
        // The address is taken while it runs, and free once it stopped.
        let err = DnsServer::start(at, Records::new(), Vec::new()).unwrap_err();
        assert!(err.to_string().contains(&at.to_string()), "{err}");
        server.stop();
        DnsServer::start(at, Records::new(), Vec::new()).unwrap();
    }

    /// A UDP upstream on 127.0.0.2 answering every query with one A record
    /// (1.2.3.4) and its id; it reports the ids it saw.
    fn upstream() -> (SocketAddr, mpsc::Receiver<u16>) {
        let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
        let at = socket.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let q = Query::parse(&buf[..n]).unwrap();
                let mut r = response(&q, 0, false, &[Rdata::A(Ipv4Addr::new(1, 2, 3, 4))], 512);
                r[2] &= !(flag::AA >> 8) as u8;
                let _ = socket.send_to(&r, from);
                if tx.send(q.header.id).is_err() {
                    return;
                }
            }
        });
        (at, rx)
    }

    #[test]
    fn unknown_names_are_forwarded_and_relayed() {
        let (up, seen) = upstream();
        // A first upstream that refuses the connection: skipped at once.
        let dead = UdpSocket::bind("127.0.0.3:0").unwrap();
        let dead_at = dead.local_addr().unwrap();
        drop(dead);
        let server = DnsServer::start(local(), records(), vec![dead_at, up]).unwrap();
        let at = server.local_addr();
        let started = Instant::now();
        let r = ask(at, &query(0xabcd, "example.com", rtype::A));
        assert!(started.elapsed() < FORWARD_TIMEOUT);
        assert_eq!(
            (r.id, r.rcode(), r.addresses()),
            (0xabcd, 0, vec![Ipv4Addr::new(1, 2, 3, 4)])
        );
        seen.recv_timeout(Duration::from_secs(1)).unwrap();
        // Single-label names and removed names go there too.
        let r = ask(at, &query(2, "printer", rtype::A));
        assert_eq!(r.addresses(), [Ipv4Addr::new(1, 2, 3, 4)]);
        let r = ask(at, &query(3, "web", rtype::A));
        assert_eq!(r.addresses(), [WEB], "local names are not forwarded");
        // Over TCP the forward is over TCP, which this upstream lacks: SERVFAIL.
        let mut tcp = TcpStream::connect(at).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let q = query(9, "example.org", rtype::A);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        tcp.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).unwrap();
        let mut b = vec![0; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut b).unwrap();
        assert_eq!(parse_answer(&b).rcode(), rcode::SERVFAIL);
    }

    #[test]
    fn a_silent_upstream_gives_servfail_and_does_not_block_local_names() {
        let silent = UdpSocket::bind("127.0.0.4:0").unwrap();
        let server =
            DnsServer::start(local(), records(), vec![silent.local_addr().unwrap()]).unwrap();
        let at = server.local_addr();
        let slow = client();
        let started = Instant::now();
        slow.send_to(&query(77, "slow.example", rtype::A), at)
            .unwrap();
        thread::sleep(Duration::from_millis(100));
        for id in 0..20 {
            let r = ask(at, &query(id, "web", rtype::A));
            assert_eq!(r.addresses(), [WEB]);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "local names at once"
        );
        let mut buf = [0u8; 512];
        let n = slow.recv(&mut buf).unwrap();
        let elapsed = started.elapsed();
        let r = parse_answer(&buf[..n]);
        assert_eq!((r.id, r.rcode()), (77, rcode::SERVFAIL));
        assert!(
            elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
        // Stopping does not wait for forwards in flight.
        slow.send_to(&query(78, "slow.example", rtype::A), at)
            .unwrap();
        thread::sleep(Duration::from_millis(100));
        let stopping = Instant::now();
        server.stop();
        assert!(stopping.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn hostile_packets_do_not_stop_the_server() {
        let server = DnsServer::start(local(), records(), Vec::new()).unwrap();
        let at = server.local_addr();
        let c = client();
        let mut pointer_loop = query(5, "", rtype::A);
        pointer_loop.splice(12..13, [0xc0, 12]);
        for b in [vec![], vec![0; 12], pointer_loop] {
            c.send_to(&b, at).unwrap();
        }
        let mut buf = [0u8; 512];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0x80, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        let n = c.recv(&mut buf).unwrap();
        assert_eq!((n, buf[1], buf[3] & 0xf), (12, 5, rcode::FORMERR));
        for b in hostile_inputs() {
            c.send_to(&b, at).unwrap();
        }
        // The flood may have filled the socket's buffer, and UDP drops what
        // does not fit: ask like a stub resolver, again after a timeout.
        let asker = client();
        asker
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let q = query(0x7777, "web", rtype::A);
        let answered = (0..10).any(|_| {
            asker.send_to(&q, at).unwrap();
            let mut buf = [0u8; 512];
            while let Ok(n) = asker.recv(&mut buf) {
                let r = parse_answer(&buf[..n]);
                if r.id == 0x7777 {
                    return r.addresses() == [WEB];
                }
            }
            false
        });
        assert!(answered, "the server still answers");
    }
}
