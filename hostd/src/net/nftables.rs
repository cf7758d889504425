//! Packet filtering and NAT for containers: one IPv4 nf_tables table (family
//! `ip`) programmed over netlink, without the `nft` program (the host image
//! has none).
//!
//! A [`Table`] is plain data: chains, base chains attached to a hook, rules
//! made of the few [`Match`]es and [`Action`]s container networking needs.
//! [`replace_table`] swaps the kernel's copy for it in one nf_tables batch
//! (`NFNL_MSG_BATCH_BEGIN` .. `END`): the kernel applies the whole batch or
//! nothing, so packets never see half a table. [`delete_table`] and
//! [`count_rules`] cover the rest of the life cycle, and [`render`] prints a
//! table the way `nft list table ip NAME` does.
//!
//! The encoding mirrors what `nft --debug=netlink` shows for the same rules
//! (payload loads of only the prefix's bytes, `meta l4proto` before a port,
//! 16-byte interface names, `bitwise` + `cmp neq 0` for conntrack bits), so
//! `nft list` reads our rules back in its own words; the tests hold
//! [`render`] against the real `nft` in a private network namespace.
//!
//! Messages are built with [`MessageBuilder`] and read with
//! [`parse_messages`] / [`parse_attrs`] from [`super::netlink`]; every call
//! opens its own `NETLINK_NETFILTER` socket, so it acts in the calling
//! thread's network namespace. Everything a table holds is checked before a
//! byte is sent ([`NftError::Invalid`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::netlink::{
    parse_attrs, parse_error, parse_messages, prefix_mask, MessageBuilder, NLMSG_DONE, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::os;

/// One IPv4 table (family `ip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Table name (at most [`MAX_NAME_LEN`] bytes).
    pub name: String,
    /// Chains, in order (rules may jump to any of them).
    pub chains: Vec<Chain>,
}

/// A chain of rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name (at most [`MAX_NAME_LEN`] bytes).
    pub name: String,
    /// Attached to a hook, or `None` for a chain only reached by `jump`.
    pub base: Option<BaseChain>,
    /// Rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// A base chain: attached to a hook, policy accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// Where packets enter the chain.
    pub hook: Hook,
    /// `filter` or `nat`.
    pub kind: ChainKind,
    /// Lower runs first (`dstnat` is -100, `filter` 0, `srcnat` 100).
    pub priority: i32,
}

/// The netfilter hooks of IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Every packet arriving, before routing.
    Prerouting,
    /// Packets for this host.
    Input,
    /// Packets routed through this host.
    Forward,
    /// Packets this host sends.
    Output,
    /// Every packet leaving, after routing.
    Postrouting,
}

/// The chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// Accept, drop, jump.
    Filter,
    /// Address translation (sees the first packet of each connection).
    Nat,
}

/// A layer-4 protocol for port matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A rule: all matches hold, then the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Conditions, all of which must hold (none: every packet).
    pub matches: Vec<Match>,
    /// What happens to a matching packet.
    pub action: Action,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `ip saddr A/len` (`len` 32: `ip saddr A`).
    SourceNet(Ipv4Addr, u8),
    /// `ip daddr A/len`.
    DestNet(Ipv4Addr, u8),
    /// `ip daddr != A/len`.
    NotDestNet(Ipv4Addr, u8),
    /// `tcp dport N` / `udp dport N` (also matches the layer-4 protocol).
    DestPort(Protocol, u16),
    /// `iifname "x"`; a name ending in `*` matches a prefix: `iifname "mkv*"`.
    InInterface(String),
    /// `iifname != "x"`.
    NotInInterface(String),
    /// `oifname "x"`.
    OutInterface(String),
    /// `oifname != "x"`.
    NotOutInterface(String),
    /// `fib daddr type local`: the destination is one of this host's
    /// addresses.
    DestIsLocal,
    /// `ct state established,related`.
    CtStateEstablishedRelated,
    /// `ct status dnat`: the connection's destination was translated.
    CtStatusDnat,
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return` to the chain that jumped here.
    Return,
    /// `jump CHAIN`.
    Jump(String),
    /// `dnat to A:P` (the rule must have a [`Match::DestPort`]).
    Dnat(Ipv4Addr, u16),
    /// `masquerade`: source NAT to the outgoing interface's address.
    Masquerade,
    /// `notrack`: the packet skips connection tracking (in a chain that runs
    /// before conntrack: priority `raw`, -300).
    NoTrack,
}

/// The longest table or chain name the kernel takes (`NFT_NAME_MAXLEN` - 1).
pub const MAX_NAME_LEN: usize = 255;
/// The longest interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Errors programming nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The table cannot be sent as it is (found before anything is sent).
    #[error("nftables: {context}: {reason}")]
    Invalid {
        /// Table, chain and rule index.
        context: String,
        /// What is wrong.
        reason: String,
    },
    /// The socket could not be opened.
    #[error("cannot open a netfilter netlink socket (is the nfnetlink module available?): {0}")]
    Open(#[source] io::Error),
    /// Sending or receiving failed.
    #[error("nftables: netlink {step} failed: {source}")]
    Io {
        /// send, poll or receive.
        step: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a message; it aborted the whole batch.
    #[error("nftables: the kernel refused {request}: {source}{}", hint_suffix(.hint))]
    Refused {
        /// Which message: the table, chain or rule (with its index).
        request: String,
        /// What may fix it, when something likely does.
        hint: Option<String>,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// No answer in time.
    #[error("nftables: no answer from the kernel to {0}")]
    Timeout(String),
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

impl NftError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

// nfnetlink and nf_tables message types.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;

// Attributes of tables, chains, rules and expressions.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;

// Values.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 2;
const NFT_NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;
const RTN_LOCAL: u32 = 2;
const IP_CT_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;
const IPS_DST_NAT: u32 = 0x20;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IFNAMSIZ: usize = 16;

/// Send and receive buffer of the socket: a batch is one `sendmsg`, and
/// every message's acknowledgement is queued before we read the first.
const SOCKET_BUFFER: usize = 4 << 20;
/// Room for one read: the kernel sizes dump messages up to 32 KiB.
const RECEIVE_BUFFER: usize = 64 << 10;
/// How long to wait for the kernel's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Checking a table before sending it.

fn invalid(context: impl Into<String>, reason: impl Into<String>) -> NftError {
    NftError::Invalid {
        context: context.into(),
        reason: reason.into(),
    }
}

/// A table or chain name: 1..=255 bytes of the characters `nft` reads
/// without quotes (letters, digits, `_ - . /`), so [`render`] stays valid.
fn check_name(context: &str, kind: &str, name: &str) -> Result<(), NftError> {
    if name.is_empty() {
        return Err(invalid(context, format!("the {kind} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            context,
            format!(
                "the {kind} name is {} bytes long, the kernel takes at most {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    {
        return Err(invalid(
            context,
            format!("the {kind} name {name:?} contains {c:?} (use letters, digits, _ - . /)"),
        ));
    }
    Ok(())
}

/// An interface name, optionally ending in `*` for a prefix match.
fn check_ifname(context: &str, name: &str) -> Result<(), NftError> {
    let stem = name.strip_suffix('*').unwrap_or(name);
    if stem.is_empty() {
        return Err(invalid(
            context,
            format!("interface name {name:?} is empty"),
        ));
    }
    if stem.len() > MAX_IFNAME_LEN {
        return Err(invalid(
            context,
            format!("interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes (IFNAMSIZ)"),
        ));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '"' | '\\' | '*'))
    {
        return Err(invalid(
            context,
            format!("interface name {name:?} contains {c:?}"),
        ));
    }
    Ok(())
}

fn rule_context(table: &str, chain: &str, index: usize) -> String {
    format!("table ip {table}, chain {chain}, rule {index}")
}

/// Checks everything the kernel would refuse for being malformed, and the
/// names it would silently cut.
fn validate(table: &Table) -> Result<(), NftError> {
    let table_context = format!("table ip {}", table.name);
    check_name(&table_context, "table", &table.name)?;
    for (i, chain) in table.chains.iter().enumerate() {
        let context = format!("{table_context}, chain {i}");
        check_name(&context, "chain", &chain.name)?;
        if table.chains[..i].iter().any(|c| c.name == chain.name) {
            return Err(invalid(
                context,
                format!("chain {} is defined twice", chain.name),
            ));
        }
        for (r, rule) in chain.rules.iter().enumerate() {
            let context = rule_context(&table.name, &chain.name, r);
            for m in &rule.matches {
                match m {
                    Match::SourceNet(_, len)
                    | Match::DestNet(_, len)
                    | Match::NotDestNet(_, len)
                        if *len > 32 =>
                    {
                        return Err(invalid(
                            &context,
                            format!("prefix length {len} is longer than 32"),
                        ));
                    }
                    Match::InInterface(name)
                    | Match::NotInInterface(name)
                    | Match::OutInterface(name)
                    | Match::NotOutInterface(name) => check_ifname(&context, name)?,
                    _ => {}
                }
            }
            match &rule.action {
                Action::Jump(target) => check_name(&context, "jump target chain", target)?,
                Action::Dnat(..)
                    if !rule
                        .matches
                        .iter()
                        .any(|m| matches!(m, Match::DestPort(..))) =>
                {
                    return Err(invalid(
                        &context,
                        "dnat to an address and port needs a tcp/udp dport match",
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Encoding.

/// An attribute area being built (what a nested attribute holds).
#[derive(Debug, Clone, Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn bytes(mut self, ty: u16, data: &[u8]) -> Self {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize((self.0.len() + 3) & !3, 0);
        self
    }

    /// A big-endian `u32` (nf_tables' integers are all network order).
    fn be32(self, ty: u16, value: u32) -> Self {
        self.bytes(ty, &value.to_be_bytes())
    }

    /// A NUL-terminated string.
    fn string(self, ty: u16, s: &str) -> Self {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.bytes(ty, &data)
    }

    fn nested(self, ty: u16, inner: Attrs) -> Self {
        self.bytes(ty | NLA_F_NESTED, &inner.0)
    }
}

/// One nf_tables expression; all of them work on register 1 but `dnat`'s
/// port (register 2) and verdicts (the verdict register).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// Load `len` bytes at `offset` of a header into register 1.
    Payload { base: u32, offset: u32, len: u32 },
    /// Load a `meta` key into register 1.
    Meta(u32),
    /// Load a conntrack key into register 1.
    Ct(u32),
    /// Register 1 &= mask.
    Bitwise(Vec<u8>),
    /// Compare register 1 with `data`; stop the rule if it fails.
    Cmp(u32, Vec<u8>),
    /// `fib` lookup result into register 1.
    Fib { flags: u32, result: u32 },
    /// Load a constant into register `reg`.
    Immediate(u32, Vec<u8>),
    /// A verdict, with the chain of a jump.
    Verdict(i32, Option<String>),
    /// Destination NAT to the address in register 1, port in register 2.
    Dnat,
    /// Masquerade.
    Masq,
    /// Skip conntrack.
    Notrack,
}

fn value(data: &[u8]) -> Attrs {
    Attrs::default().bytes(NFTA_DATA_VALUE, data)
}

impl Expr {
    /// The `NFTA_LIST_ELEM` contents: name and data, with the attributes
    /// in the order `nft` (libnftnl) sends them.
    fn encode(&self) -> Attrs {
        let (name, data) = match self {
            Expr::Payload { base, offset, len } => (
                "payload",
                Attrs::default()
                    .be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
                    .be32(NFTA_PAYLOAD_BASE, *base)
                    .be32(NFTA_PAYLOAD_OFFSET, *offset)
                    .be32(NFTA_PAYLOAD_LEN, *len),
            ),
            Expr::Meta(key) => (
                "meta",
                Attrs::default()
                    .be32(NFTA_META_KEY, *key)
                    .be32(NFTA_META_DREG, NFT_REG_1),
            ),
            Expr::Ct(key) => (
                "ct",
                Attrs::default()
                    .be32(NFTA_CT_KEY, *key)
                    .be32(NFTA_CT_DREG, NFT_REG_1),
            ),
            Expr::Bitwise(mask) => (
                "bitwise",
                Attrs::default()
                    .be32(NFTA_BITWISE_SREG, NFT_REG_1)
                    .be32(NFTA_BITWISE_DREG, NFT_REG_1)
                    .be32(NFTA_BITWISE_LEN, mask.len() as u32)
                    .nested(NFTA_BITWISE_MASK, value(mask))
                    .nested(NFTA_BITWISE_XOR, value(&vec![0; mask.len()])),
            ),
            Expr::Cmp(op, data) => (
                "cmp",
                Attrs::default()
                    .be32(NFTA_CMP_SREG, NFT_REG_1)
                    .be32(NFTA_CMP_OP, *op)
                    .nested(NFTA_CMP_DATA, value(data)),
            ),
            Expr::Fib { flags, result } => (
                "fib",
                Attrs::default()
                    .be32(NFTA_FIB_FLAGS, *flags)
                    .be32(NFTA_FIB_RESULT, *result)
                    .be32(NFTA_FIB_DREG, NFT_REG_1),
            ),
            Expr::Immediate(reg, data) => (
                "immediate",
                Attrs::default()
                    .be32(NFTA_IMMEDIATE_DREG, *reg)
                    .nested(NFTA_IMMEDIATE_DATA, value(data)),
            ),
            Expr::Verdict(code, chain) => {
                let mut verdict = Attrs::default().be32(NFTA_VERDICT_CODE, *code as u32);
                if let Some(chain) = chain {
                    verdict = verdict.string(NFTA_VERDICT_CHAIN, chain);
                }
                (
                    "immediate",
                    Attrs::default()
                        .be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                        .nested(
                            NFTA_IMMEDIATE_DATA,
                            Attrs::default().nested(NFTA_DATA_VERDICT, verdict),
                        ),
                )
            }
            Expr::Dnat => (
                "nat",
                Attrs::default()
                    .be32(NFTA_NAT_TYPE, NFT_NAT_DNAT)
                    .be32(NFTA_NAT_FAMILY, u32::from(NFPROTO_IPV4))
                    .be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1)
                    .be32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2)
                    .be32(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
            ),
            Expr::Masq => ("masq", Attrs::default()),
            Expr::Notrack => ("notrack", Attrs::default()),
        };
        Attrs::default()
            .string(NFTA_EXPR_NAME, name)
            .nested(NFTA_EXPR_DATA, data)
    }
}

/// `ip saddr/daddr [!=] A/len` at `offset` of the IPv4 header, as nft does
/// it: a whole-byte prefix loads only its bytes; any other prefix loads all
/// four and masks them.
fn net_match(out: &mut Vec<Expr>, offset: u32, addr: Ipv4Addr, len: u8, op: u32) {
    let mask = prefix_mask(len);
    let net = (u32::from(addr) & mask).to_be_bytes();
    if len > 0 && len.is_multiple_of(8) {
        let bytes = usize::from(len / 8);
        out.push(Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len: u32::from(len / 8),
        });
        out.push(Expr::Cmp(op, net[..bytes].to_vec()));
    } else {
        out.push(Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len: 4,
        });
        out.push(Expr::Bitwise(mask.to_be_bytes().to_vec()));
        out.push(Expr::Cmp(op, net.to_vec()));
    }
}

/// `iifname`/`oifname`: an exact name is compared as the kernel's 16-byte
/// zero-padded buffer, a prefix (`mkv*`) as its bytes only.
fn ifname_match(out: &mut Vec<Expr>, key: u32, name: &str, op: u32) {
    out.push(Expr::Meta(key));
    let data = match name.strip_suffix('*') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut padded = name.as_bytes().to_vec();
            padded.resize(IFNAMSIZ, 0);
            padded
        }
    };
    out.push(Expr::Cmp(op, data));
}

fn l4proto(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    }
}

/// The expressions of a rule, matches first, then the action.
fn expressions(rule: &Rule) -> Vec<Expr> {
    let mut out = Vec::new();
    for m in &rule.matches {
        match m {
            Match::SourceNet(addr, len) => net_match(&mut out, 12, *addr, *len, NFT_CMP_EQ),
            Match::DestNet(addr, len) => net_match(&mut out, 16, *addr, *len, NFT_CMP_EQ),
            Match::NotDestNet(addr, len) => net_match(&mut out, 16, *addr, *len, NFT_CMP_NEQ),
            Match::DestPort(protocol, port) => {
                out.push(Expr::Meta(NFT_META_L4PROTO));
                out.push(Expr::Cmp(NFT_CMP_EQ, vec![l4proto(*protocol)]));
                out.push(Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: 2,
                    len: 2,
                });
                out.push(Expr::Cmp(NFT_CMP_EQ, port.to_be_bytes().to_vec()));
            }
            Match::InInterface(name) => ifname_match(&mut out, NFT_META_IIFNAME, name, NFT_CMP_EQ),
            Match::NotInInterface(name) => {
                ifname_match(&mut out, NFT_META_IIFNAME, name, NFT_CMP_NEQ)
            }
            Match::OutInterface(name) => ifname_match(&mut out, NFT_META_OIFNAME, name, NFT_CMP_EQ),
            Match::NotOutInterface(name) => {
                ifname_match(&mut out, NFT_META_OIFNAME, name, NFT_CMP_NEQ)
            }
            Match::DestIsLocal => {
                out.push(Expr::Fib {
                    flags: NFTA_FIB_F_DADDR,
                    result: NFT_FIB_RESULT_ADDRTYPE,
                });
                // The address type is a host-order u32.
                out.push(Expr::Cmp(NFT_CMP_EQ, RTN_LOCAL.to_ne_bytes().to_vec()));
            }
            Match::CtStateEstablishedRelated => {
                out.push(Expr::Ct(NFT_CT_STATE));
                out.push(Expr::Bitwise(
                    IP_CT_ESTABLISHED_RELATED.to_ne_bytes().to_vec(),
                ));
                out.push(Expr::Cmp(NFT_CMP_NEQ, vec![0; 4]));
            }
            Match::CtStatusDnat => {
                out.push(Expr::Ct(NFT_CT_STATUS));
                out.push(Expr::Bitwise(IPS_DST_NAT.to_ne_bytes().to_vec()));
                out.push(Expr::Cmp(NFT_CMP_NEQ, vec![0; 4]));
            }
        }
    }
    match &rule.action {
        Action::Accept => out.push(Expr::Verdict(NF_ACCEPT, None)),
        Action::Drop => out.push(Expr::Verdict(NF_DROP, None)),
        Action::Return => out.push(Expr::Verdict(NFT_RETURN, None)),
        Action::Jump(chain) => out.push(Expr::Verdict(NFT_JUMP, Some(chain.clone()))),
        Action::Dnat(addr, port) => {
            out.push(Expr::Immediate(NFT_REG_1, addr.octets().to_vec()));
            out.push(Expr::Immediate(NFT_REG_2, port.to_be_bytes().to_vec()));
            out.push(Expr::Dnat);
        }
        Action::Masquerade => out.push(Expr::Masq),
        Action::NoTrack => out.push(Expr::Notrack),
    }
    out
}

fn hook_number(hook: Hook) -> u32 {
    match hook {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

fn table_attrs(name: &str) -> Attrs {
    Attrs::default()
        .string(NFTA_TABLE_NAME, name)
        .be32(NFTA_TABLE_FLAGS, 0)
}

fn chain_attrs(table: &str, chain: &Chain) -> Attrs {
    let mut attrs = Attrs::default()
        .string(NFTA_CHAIN_TABLE, table)
        .string(NFTA_CHAIN_NAME, &chain.name);
    if let Some(base) = chain.base {
        attrs = attrs
            .string(NFTA_CHAIN_TYPE, chain_kind_name(base.kind))
            .be32(NFTA_CHAIN_POLICY, NF_ACCEPT as u32)
            .nested(
                NFTA_CHAIN_HOOK,
                Attrs::default()
                    .be32(NFTA_HOOK_HOOKNUM, hook_number(base.hook))
                    .be32(NFTA_HOOK_PRIORITY, base.priority as u32),
            );
    }
    attrs
}

fn rule_attrs(table: &str, chain: &str, rule: &Rule) -> Attrs {
    let list = expressions(rule).iter().fold(Attrs::default(), |list, e| {
        list.nested(NFTA_LIST_ELEM, e.encode())
    });
    Attrs::default()
        .string(NFTA_RULE_TABLE, table)
        .string(NFTA_RULE_CHAIN, chain)
        .nested(NFTA_RULE_EXPRESSIONS, list)
}

/// `struct nfgenmsg`.
fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

/// An nf_tables message of family `ip`.
fn nft_message(msg: u16, flags: u16, seq: u32, attrs: &Attrs) -> Vec<u8> {
    MessageBuilder::new(
        (NFNL_SUBSYS_NFTABLES << 8) | msg,
        NLM_F_REQUEST | flags,
        seq,
    )
    .payload(&nfgenmsg(NFPROTO_IPV4, 0))
    .payload(&attrs.0)
    .build()
}

/// What one message of a batch does, to name it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Table(String),
    Chain {
        table: String,
        chain: String,
        nat: bool,
    },
    Rule {
        table: String,
        chain: String,
        index: usize,
        text: String,
        rule: Rule,
    },
    Commit(String),
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::Table(t) => format!("table ip {t}"),
            Step::Chain { table, chain, .. } => format!("chain {chain} of table ip {table}"),
            Step::Rule {
                table,
                chain,
                index,
                text,
                ..
            } => format!("rule {index} of chain {chain} in table ip {table} ({text})"),
            Step::Commit(t) => format!("the batch for table ip {t}"),
        }
    }

    /// What likely fixes errno `errno` here.
    fn hint(&self, errno: i32) -> Option<String> {
        const MODULES: &str = "is the nf_tables/nft_nat/nft_fib_ipv4 module available?";
        if errno == libc::EPERM {
            return Some("this needs CAP_NET_ADMIN in the network namespace".into());
        }
        match self {
            Step::Chain { nat: true, .. } if errno == libc::EOPNOTSUPP || errno == libc::ENOENT => {
                Some("nat chains need the nft_chain_nat module and a priority above -200".into())
            }
            Step::Rule { rule, .. } => match (&rule.action, errno) {
                (Action::Jump(target), libc::ENOENT) => Some(format!(
                    "does chain {target} exist in the table? if it does: {MODULES}"
                )),
                (Action::Jump(_), libc::EOPNOTSUPP) => {
                    Some("a jump cannot target a base chain".into())
                }
                (Action::Dnat(..) | Action::Masquerade, libc::EOPNOTSUPP) => Some(format!(
                    "dnat and masquerade only work in nat chains; {MODULES}"
                )),
                (_, libc::ENOENT | libc::EOPNOTSUPP) => Some(MODULES.into()),
                (_, libc::ELOOP | libc::EMLINK) => {
                    Some("the jumps between chains make a loop or nest too deep".into())
                }
                _ => None,
            },
            _ if errno == libc::ENOENT || errno == libc::EOPNOTSUPP => Some(MODULES.into()),
            _ => None,
        }
    }
}

/// One nf_tables batch: the messages between `BATCH_BEGIN` (sequence
/// number 1) and `BATCH_END`, message `i` numbered `i + 2` and described
/// by `steps[i]`.
#[derive(Debug)]
struct Batch {
    bytes: Vec<u8>,
    steps: Vec<Step>,
    table: String,
}

const BATCH_BEGIN_SEQ: u32 = 1;

impl Batch {
    fn new(table: &str) -> Self {
        let bytes = MessageBuilder::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, BATCH_BEGIN_SEQ)
            .payload(&nfgenmsg(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES))
            .build();
        Self {
            bytes,
            steps: Vec::new(),
            table: table.to_string(),
        }
    }

    fn next_seq(&self) -> u32 {
        BATCH_BEGIN_SEQ + 1 + self.steps.len() as u32
    }

    /// Appends a message that asks for an acknowledgement.
    fn push(&mut self, msg: u16, flags: u16, attrs: &Attrs, step: Step) {
        let seq = self.next_seq();
        self.bytes
            .extend(nft_message(msg, flags | NLM_F_ACK, seq, attrs));
        self.steps.push(step);
    }

    fn finish(mut self) -> Self {
        let end = MessageBuilder::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.next_seq())
            .payload(&nfgenmsg(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES))
            .build();
        self.bytes.extend(end);
        self
    }

    /// What message `seq` did.
    fn step(&self, seq: u32) -> Step {
        seq.checked_sub(BATCH_BEGIN_SEQ + 1)
            .and_then(|i| self.steps.get(i as usize))
            .cloned()
            .unwrap_or_else(|| Step::Commit(self.table.clone()))
    }

    /// The index of message `seq` in `steps`.
    fn index(&self, seq: u32) -> Option<usize> {
        let i = seq.checked_sub(BATCH_BEGIN_SEQ + 1)? as usize;
        (i < self.steps.len()).then_some(i)
    }

    /// Adds the table when absent and deletes it: nothing is left of an
    /// old table, and no error for a missing one.
    fn drop_table(&mut self, name: &str) {
        let attrs = table_attrs(name);
        let step = Step::Table(name.to_string());
        self.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, &attrs, step.clone());
        self.push(NFT_MSG_DELTABLE, 0, &attrs, step);
    }
}

/// How a batch treats what the kernel has of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Delete the table and make it again: chains and hooks included.
    Table,
    /// Keep the table and its chains (creating what is missing) and flush
    /// each chain's rules before adding the new ones.
    Rules,
}

/// The batch that replaces `table` (already validated).
fn replace_batch(table: &Table) -> Result<Batch, NftError> {
    table_batch(table, Replace::Table)
}

fn table_batch(table: &Table, how: Replace) -> Result<Batch, NftError> {
    let name = &table.name;
    let mut batch = Batch::new(name);
    if how == Replace::Table {
        batch.drop_table(name);
    }
    batch.push(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        &table_attrs(name),
        Step::Table(name.clone()),
    );
    // Every chain before any rule, so jumps may go forward.
    for chain in &table.chains {
        batch.push(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            &chain_attrs(name, chain),
            Step::Chain {
                table: name.clone(),
                chain: chain.name.clone(),
                nat: chain.base.is_some_and(|b| b.kind == ChainKind::Nat),
            },
        );
    }
    if how == Replace::Rules {
        for chain in &table.chains {
            // A DELRULE naming only the chain flushes it (`nft flush chain`).
            batch.push(
                NFT_MSG_DELRULE,
                0,
                &Attrs::default()
                    .string(NFTA_RULE_TABLE, name)
                    .string(NFTA_RULE_CHAIN, &chain.name),
                Step::Chain {
                    table: name.clone(),
                    chain: chain.name.clone(),
                    nat: chain.base.is_some_and(|b| b.kind == ChainKind::Nat),
                },
            );
        }
    }
    for chain in &table.chains {
        for (index, rule) in chain.rules.iter().enumerate() {
            let attrs = rule_attrs(name, &chain.name, rule);
            // An attribute length is 16 bits.
            if attrs.0.len() > usize::from(u16::MAX) {
                return Err(invalid(
                    rule_context(name, &chain.name, index),
                    "the rule has too many matches to fit in one netlink attribute",
                ));
            }
            batch.push(
                NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND,
                &attrs,
                Step::Rule {
                    table: name.clone(),
                    chain: chain.name.clone(),
                    index,
                    text: rule_text(rule),
                    rule: rule.clone(),
                },
            );
        }
    }
    let batch = batch.finish();
    if batch.bytes.len() > SOCKET_BUFFER / 2 {
        return Err(invalid(
            format!("table ip {name}"),
            format!(
                "the table takes {} bytes of netlink messages, more than the {} one batch may hold",
                batch.bytes.len(),
                SOCKET_BUFFER / 2
            ),
        ));
    }
    Ok(batch)
}

// ---------------------------------------------------------------------------
// Talking to the kernel.

/// A `NETLINK_NETFILTER` socket with a receive buffer.
struct Connection {
    sock: File,
    buf: Vec<u8>,
}

impl Connection {
    fn open() -> Result<Self, NftError> {
        Ok(Self {
            sock: os::netlink_netfilter_socket(SOCKET_BUFFER).map_err(NftError::Open)?,
            buf: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Sends `bytes` as one datagram (netlink takes it whole or not at all).
    fn send(&mut self, bytes: &[u8]) -> Result<(), NftError> {
        let sent = self.sock.write(bytes).map_err(|source| NftError::Io {
            step: "send",
            source,
        })?;
        if sent != bytes.len() {
            return Err(NftError::Io {
                step: "send",
                source: io::Error::from_raw_os_error(libc::EMSGSIZE),
            });
        }
        Ok(())
    }

    /// Drops whatever an earlier exchange left unread (answers after a
    /// timeout), so that its sequence numbers cannot be taken for the next.
    fn drain(&mut self) -> Result<(), NftError> {
        while self.recv(Duration::ZERO)?.is_some() {}
        Ok(())
    }

    /// Reads one datagram, waiting at most `wait`; `None` when none came.
    fn recv(&mut self, wait: Duration) -> Result<Option<usize>, NftError> {
        let ready =
            os::poll_readable(&[self.sock.as_fd()], Some(wait)).map_err(|source| NftError::Io {
                step: "poll",
                source,
            })?;
        if !ready.first().copied().unwrap_or(false) {
            return Ok(None);
        }
        self.sock
            .read(&mut self.buf)
            .map(Some)
            .map_err(|source| NftError::Io {
                step: "receive",
                source,
            })
    }

    /// Sends a batch and checks the acknowledgement of every message. The
    /// kernel handles the batch inside `sendmsg`, so once the first error
    /// is in, the rest of the answers are already queued.
    fn run(&mut self, batch: &Batch) -> Result<(), NftError> {
        self.send(&batch.bytes)?;
        let mut acked = vec![false; batch.steps.len()];
        let mut missing = acked.len();
        // The earliest message the kernel refused, and its errno.
        let mut refused: Option<(u32, i32)> = None;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while missing > 0 {
            let wait = if refused.is_some() {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let Some(n) = self.recv(wait)? else { break };
            for m in parse_messages(&self.buf[..n]) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                if let Some(i) = batch.index(m.seq) {
                    if !acked[i] {
                        acked[i] = true;
                        missing -= 1;
                    }
                }
                let errno = parse_error(m.payload).unwrap_or(0);
                if errno != 0 && refused.is_none_or(|(seq, _)| m.seq < seq) {
                    refused = Some((m.seq, errno));
                }
            }
        }
        if let Some((seq, errno)) = refused {
            let step = batch.step(seq);
            return Err(NftError::Refused {
                request: step.describe(),
                hint: step.hint(-errno),
                source: io::Error::from_raw_os_error(-errno),
            });
        }
        if missing > 0 {
            return Err(NftError::Timeout(
                Step::Commit(batch.table.clone()).describe(),
            ));
        }
        Ok(())
    }

    /// Whether table `name` exists (a `GETTABLE` request).
    fn table_exists(&mut self, name: &str) -> Result<bool, NftError> {
        const SEQ: u32 = 1;
        let what = || format!("the lookup of table ip {name}");
        self.send(&nft_message(
            NFT_MSG_GETTABLE,
            NLM_F_ACK,
            SEQ,
            &Attrs::default().string(NFTA_TABLE_NAME, name),
        ))?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut found = false;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Some(n) = self.recv(wait)? else {
                return Err(NftError::Timeout(what()));
            };
            for m in parse_messages(&self.buf[..n]) {
                if m.seq != SEQ {
                    continue;
                }
                if m.ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
                    found = true;
                } else if m.ty == NLMSG_ERROR {
                    return match parse_error(m.payload).unwrap_or(0) {
                        0 => Ok(found),
                        e if -e == libc::ENOENT => Ok(false),
                        e => Err(refused(what(), -e)),
                    };
                }
            }
        }
    }

    /// The rules of table `name` (a `GETRULE` dump filtered by table).
    fn count_rules(&mut self, name: &str) -> Result<usize, NftError> {
        const SEQ: u32 = 2;
        let what = || format!("the rule dump of table ip {name}");
        self.send(&nft_message(
            NFT_MSG_GETRULE,
            NLM_F_DUMP,
            SEQ,
            &Attrs::default().string(NFTA_RULE_TABLE, name),
        ))?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut count = 0;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Some(n) = self.recv(wait)? else {
                return Err(NftError::Timeout(what()));
            };
            for m in parse_messages(&self.buf[..n]) {
                if m.seq != SEQ {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(count),
                    NLMSG_ERROR => match parse_error(m.payload).unwrap_or(0) {
                        0 => {}
                        e => return Err(refused(what(), -e)),
                    },
                    ty if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => {
                        // The kernel filters by table; count only what says so.
                        let table = m.payload.get(4..).map_or(Vec::new(), parse_attrs);
                        if table
                            .iter()
                            .any(|(t, v)| *t == NFTA_RULE_TABLE && *v == nul_terminated(name))
                        {
                            count += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn refused(request: String, errno: i32) -> NftError {
    NftError::Refused {
        request,
        hint: (errno == libc::EPERM)
            .then(|| "this needs CAP_NET_ADMIN in the network namespace".into()),
        source: io::Error::from_raw_os_error(errno),
    }
}

/// Replaces table `table.name` (family ip) with `table` in one netlink batch
/// (`NFNL_MSG_BATCH_BEGIN` .. `END`): add the table (create if absent),
/// delete it, add it again with all chains and rules. Atomic: on any error
/// nothing changes (the kernel aborts the whole batch); traffic never sees a
/// half table.
pub fn replace_table(table: &Table) -> Result<(), NftError> {
    validate(table)?;
    let batch = replace_batch(table)?;
    Connection::open()?.run(&batch)
}

/// A connection kept open across changes. Closing a nf_tables socket makes
/// the kernel finish destroying what earlier transactions replaced (an RCU
/// grace period: about 15 ms here), so a daemon that changes its rules
/// often keeps one session instead of calling the one-shot functions.
pub struct Session {
    conn: Connection,
}

impl Session {
    /// Opens the connection (in the calling thread's network namespace).
    pub fn open() -> Result<Session, NftError> {
        Ok(Session {
            conn: Connection::open()?,
        })
    }

    /// [`replace_table`] on this connection.
    pub fn replace_table(&mut self, table: &Table) -> Result<(), NftError> {
        validate(table)?;
        let batch = replace_batch(table)?;
        self.conn.drain()?;
        self.conn.run(&batch)
    }

    /// [`replace_rules`] on this connection.
    pub fn replace_rules(&mut self, table: &Table) -> Result<(), NftError> {
        validate(table)?;
        let batch = table_batch(table, Replace::Rules)?;
        self.conn.drain()?;
        self.conn.run(&batch)
    }

    /// [`count_rules`] on this connection.
    pub fn count_rules(&mut self, name: &str) -> Result<Option<usize>, NftError> {
        check_name(&format!("table ip {name}"), "table", name)?;
        self.conn.drain()?;
        if !self.conn.table_exists(name)? {
            return Ok(None);
        }
        self.conn.count_rules(name).map(Some)
    }
}

/// Swaps the rules of every chain of `table` in one transaction, keeping
/// the table and its chains (and creating what is missing): base chains
/// stay on their hooks, which spares the RCU grace periods that detaching
/// and attaching them cost ([`replace_table`] takes several milliseconds
/// for that). Chains the kernel has that `table` lacks, and a base chain
/// whose hook or priority changed, are not handled: the caller uses
/// [`replace_table`] once (at start), then this for each change.
pub fn replace_rules(table: &Table) -> Result<(), NftError> {
    validate(table)?;
    let batch = table_batch(table, Replace::Rules)?;
    Connection::open()?.run(&batch)
}

/// Deletes the table if it exists (absent is Ok).
pub fn delete_table(name: &str) -> Result<(), NftError> {
    check_name(&format!("table ip {name}"), "table", name)?;
    let mut batch = Batch::new(name);
    batch.drop_table(name);
    Connection::open()?.run(&batch.finish())
}

/// Number of rules in the table, `None` when it does not exist (a
/// `NFT_MSG_GETRULE` dump filtered by table).
pub fn count_rules(name: &str) -> Result<Option<usize>, NftError> {
    check_name(&format!("table ip {name}"), "table", name)?;
    let mut conn = Connection::open()?;
    if !conn.table_exists(name)? {
        return Ok(None);
    }
    conn.count_rules(name).map(Some)
}

// ---------------------------------------------------------------------------
// Rendering in nft's syntax.

fn chain_kind_name(kind: ChainKind) -> &'static str {
    match kind {
        ChainKind::Filter => "filter",
        ChainKind::Nat => "nat",
    }
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

/// A priority the way nft prints it: the first standard priority within 10
/// (`raw`, `mangle`, `dstnat`, `filter`, `security`, `srcnat`) with the
/// offset, unless that one does not belong on the hook (`dstnat` only on
/// prerouting, `srcnat` only on postrouting): then the number.
fn priority_text(hook: Hook, priority: i32) -> String {
    const STANDARD: [(&str, i32); 6] = [
        ("raw", -300),
        ("mangle", -150),
        ("dstnat", -100),
        ("filter", 0),
        ("security", 50),
        ("srcnat", 100),
    ];
    for (name, standard) in STANDARD {
        let offset = i64::from(priority) - i64::from(standard);
        if offset.abs() > 10 {
            continue;
        }
        let fits = match name {
            "dstnat" => hook == Hook::Prerouting,
            "srcnat" => hook == Hook::Postrouting,
            _ => true,
        };
        if !fits {
            break;
        }
        return match offset {
            0 => name.to_string(),
            o if o > 0 => format!("{name} + {o}"),
            o => format!("{name} - {}", -o),
        };
    }
    priority.to_string()
}

fn net_text(addr: Ipv4Addr, len: u8) -> String {
    let net = Ipv4Addr::from(u32::from(addr) & prefix_mask(len));
    if len >= 32 {
        net.to_string()
    } else {
        format!("{net}/{len}")
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn match_text(m: &Match) -> String {
    match m {
        Match::SourceNet(a, l) => format!("ip saddr {}", net_text(*a, *l)),
        Match::DestNet(a, l) => format!("ip daddr {}", net_text(*a, *l)),
        Match::NotDestNet(a, l) => format!("ip daddr != {}", net_text(*a, *l)),
        Match::DestPort(p, port) => format!("{} dport {port}", protocol_name(*p)),
        Match::InInterface(n) => format!("iifname \"{n}\""),
        Match::NotInInterface(n) => format!("iifname != \"{n}\""),
        Match::OutInterface(n) => format!("oifname \"{n}\""),
        Match::NotOutInterface(n) => format!("oifname != \"{n}\""),
        Match::DestIsLocal => "fib daddr type local".into(),
        Match::CtStateEstablishedRelated => "ct state established,related".into(),
        Match::CtStatusDnat => "ct status dnat".into(),
    }
}

fn action_text(action: &Action) -> String {
    match action {
        Action::Accept => "accept".into(),
        Action::Drop => "drop".into(),
        Action::Return => "return".into(),
        Action::Jump(chain) => format!("jump {chain}"),
        Action::Dnat(addr, port) => format!("dnat to {addr}:{port}"),
        Action::Masquerade => "masquerade".into(),
        Action::NoTrack => "notrack".into(),
    }
}

/// One rule in nft's syntax (`ip saddr 172.17.0.0/16 masquerade`).
pub fn rule_text(rule: &Rule) -> String {
    let mut words: Vec<String> = rule.matches.iter().map(match_text).collect();
    words.push(action_text(&rule.action));
    words.join(" ")
}

/// The table in nft's own syntax, as `nft list table ip NAME` prints it
/// (tabs, `type nat hook postrouting priority srcnat; policy accept;`
/// etc.), for docs, logs and tests.
pub fn render(table: &Table) -> String {
    let mut out = format!("table ip {} {{\n", table.name);
    for (i, chain) in table.chains.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("\tchain {} {{\n", chain.name));
        if let Some(base) = chain.base {
            out.push_str(&format!(
                "\t\ttype {} hook {} priority {}; policy accept;\n",
                chain_kind_name(base.kind),
                hook_name(base.hook),
                priority_text(base.hook, base.priority)
            ));
        }
        for rule in &chain.rules {
            out.push_str(&format!("\t\t{}\n", rule_text(rule)));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::Command;

    /// Runs `f` on a thread of its own in a new, empty network namespace:
    /// nothing here touches the machine's own rules.
    fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            os::unshare(os::UnshareFlags::NEWNET)
                .expect("unshare(CLONE_NEWNET) (tests run as root)");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// `nft list table ip NAME` in the calling thread's namespace.
    fn nft_list(name: &str) -> Option<String> {
        let nft = if std::path::Path::new("/usr/sbin/nft").exists() {
            "/usr/sbin/nft"
        } else {
            "nft"
        };
        let out = Command::new(nft)
            .args(["list", "table", "ip", name])
            .output()
            .expect("run nft");
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).expect("utf-8 listing"))
    }

    fn normalize(s: &str) -> String {
        s.lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_string()
    }

    fn base(hook: Hook, kind: ChainKind, priority: i32) -> Option<BaseChain> {
        Some(BaseChain {
            hook,
            kind,
            priority,
        })
    }

    fn rule(matches: Vec<Match>, action: Action) -> Rule {
        Rule { matches, action }
    }

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    fn chain(name: &str, base: Option<BaseChain>, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base,
            rules,
        }
    }

    /// What the daemon will ask for, and every match, action and kind of
    /// priority besides.
    fn representative() -> Table {
        use Match::*;
        Table {
            name: "mkhost".into(),
            chains: vec![
                chain(
                    "prerouting",
                    base(Hook::Prerouting, ChainKind::Nat, -100),
                    vec![rule(vec![DestIsLocal], Action::Jump("publish".into()))],
                ),
                chain(
                    "output",
                    base(Hook::Output, ChainKind::Nat, -100),
                    vec![rule(vec![DestIsLocal], Action::Jump("publish".into()))],
                ),
                chain(
                    "publish",
                    None,
                    vec![
                        rule(
                            vec![DestPort(Protocol::Tcp, 8080)],
                            Action::Dnat(ip(172, 17, 0, 5), 80),
                        ),
                        rule(
                            vec![DestNet(ip(10, 0, 2, 15), 32), DestPort(Protocol::Udp, 53)],
                            Action::Dnat(ip(172, 17, 0, 6), 5353),
                        ),
                    ],
                ),
                chain(
                    "postrouting",
                    base(Hook::Postrouting, ChainKind::Nat, 100),
                    vec![
                        rule(
                            vec![
                                SourceNet(ip(172, 17, 0, 0), 16),
                                NotOutInterface("mkv*".into()),
                            ],
                            Action::Masquerade,
                        ),
                        rule(
                            vec![
                                SourceNet(ip(172, 17, 0, 5), 32),
                                DestNet(ip(172, 17, 0, 5), 32),
                                DestPort(Protocol::Tcp, 80),
                            ],
                            Action::Masquerade,
                        ),
                    ],
                ),
                chain(
                    "forward",
                    base(Hook::Forward, ChainKind::Filter, 0),
                    vec![
                        rule(vec![CtStateEstablishedRelated], Action::Accept),
                        rule(vec![CtStatusDnat], Action::Accept),
                        rule(
                            vec![
                                SourceNet(ip(172, 17, 0, 0), 16),
                                DestNet(ip(172, 18, 0, 0), 16),
                            ],
                            Action::Drop,
                        ),
                        rule(
                            vec![InInterface("mkv0".into()), OutInterface("eth0".into())],
                            Action::Accept,
                        ),
                        rule(
                            vec![InInterface("mkv*".into())],
                            Action::Jump("isolate".into()),
                        ),
                        // Not a whole-byte prefix, and an address with host bits.
                        rule(vec![SourceNet(ip(172, 31, 9, 9), 12)], Action::Return),
                        rule(vec![NotDestNet(ip(10, 0, 0, 0), 8)], Action::Drop),
                    ],
                ),
                chain(
                    "isolate",
                    None,
                    vec![
                        rule(vec![OutInterface("mkv*".into())], Action::Drop),
                        rule(vec![NotInInterface("mkv1".into())], Action::Return),
                        rule(vec![], Action::Accept),
                    ],
                ),
                chain(
                    "guard",
                    base(Hook::Prerouting, ChainKind::Filter, -300),
                    vec![
                        rule(
                            vec![NotInInterface("lo".into()), DestNet(ip(127, 0, 0, 0), 8)],
                            Action::Drop,
                        ),
                        rule(vec![DestPort(Protocol::Udp, 67)], Action::NoTrack),
                    ],
                ),
                chain(
                    "input",
                    base(Hook::Input, ChainKind::Filter, 10),
                    vec![rule(
                        vec![SourceNet(ip(0, 0, 0, 0), 0), DestPort(Protocol::Udp, 68)],
                        Action::Accept,
                    )],
                ),
                chain("empty", base(Hook::Output, ChainKind::Filter, -95), vec![]),
            ],
        }
    }

    // --- Without the kernel -------------------------------------------

    /// The bytes after the netlink header of a message.
    fn body(message: &[u8]) -> &[u8] {
        &message[16..]
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_base_chain_is_encoded_byte_for_byte_like_nft() {
        // `nft --debug=mnl` for `chain c { type nat hook output priority -100; }`
        // in table t (attribute headers are little-endian on x86).
        let chain = chain("c", base(Hook::Output, ChainKind::Nat, -100), vec![]);
        let m = nft_message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, 9, &chain_attrs("t", &chain));
        assert_eq!(m.len(), 72);
        assert_eq!(&m[4..6], &0x0a03u16.to_ne_bytes());
        if cfg!(target_endian = "little") {
            let want = hex("02000000 06000100 74000000 06000300 63000000 \
                 08000700 6e617400 08000500 00000001 \
                 14000480 08000100 00000003 08000200 ffffff9c");
            assert_eq!(body(&m), want.as_slice());
        }
    }

    #[test]
    fn a_jump_rule_is_encoded_byte_for_byte_like_nft() {
        // `nft --debug=mnl` for `iifname "mkv*" jump d` in chain c of table t.
        let r = rule(
            vec![Match::InInterface("mkv*".into())],
            Action::Jump("d".into()),
        );
        let m = nft_message(NFT_MSG_NEWRULE, NLM_F_CREATE, 9, &rule_attrs("t", "c", &r));
        assert_eq!(m.len(), 176);
        if cfg!(target_endian = "little") {
            let want = hex("02000000 06000100 74000000 06000200 63000000 8c000480 \
                 24000180 09000100 6d657461 00000000 14000280 08000200 00000006 \
                 08000100 00000001 \
                 2c000180 08000100 636d7000 20000280 08000100 00000001 08000200 \
                 00000000 0c000380 07000100 6d6b7600 \
                 38000180 0e000100 696d6d65 64696174 65000000 24000280 08000100 \
                 00000000 18000280 14000280 08000100 fffffffd 06000200 64000000");
            assert_eq!(body(&m), want.as_slice());
        }
    }

    #[test]
    fn expressions_mirror_nft() {
        use Expr::*;
        let net = |offset, len| Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
        };
        // A whole-byte prefix loads only its bytes, others are masked.
        let r = rule(
            vec![
                Match::SourceNet(ip(172, 17, 9, 9), 16),
                Match::NotDestNet(ip(172, 31, 0, 0), 12),
            ],
            Action::Drop,
        );
        assert_eq!(
            expressions(&r),
            vec![
                net(12, 2),
                Cmp(NFT_CMP_EQ, vec![172, 17]),
                net(16, 4),
                Bitwise(vec![255, 240, 0, 0]),
                Cmp(NFT_CMP_NEQ, vec![172, 16, 0, 0]),
                Verdict(NF_DROP, None),
            ]
        );
        // ct state: host-order bits, != 0; the port after meta l4proto.
        let r = rule(
            vec![
                Match::CtStateEstablishedRelated,
                Match::DestPort(Protocol::Udp, 53),
            ],
            Action::Dnat(ip(10, 0, 0, 1), 5353),
        );
        assert_eq!(
            expressions(&r),
            vec![
                Ct(NFT_CT_STATE),
                Bitwise(6u32.to_ne_bytes().to_vec()),
                Cmp(NFT_CMP_NEQ, vec![0; 4]),
                Meta(NFT_META_L4PROTO),
                Cmp(NFT_CMP_EQ, vec![17]),
                Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: 2,
                    len: 2
                },
                Cmp(NFT_CMP_EQ, vec![0, 53]),
                Immediate(NFT_REG_1, vec![10, 0, 0, 1]),
                Immediate(NFT_REG_2, 5353u16.to_be_bytes().to_vec()),
                Dnat,
            ]
        );
        // An exact interface name is the kernel's zero-padded 16 bytes.
        let mut lo = b"lo".to_vec();
        lo.resize(16, 0);
        assert_eq!(
            expressions(&rule(
                vec![Match::NotInInterface("lo".into())],
                Action::Return
            ))[1],
            Cmp(NFT_CMP_NEQ, lo)
        );
    }

    #[test]
    fn a_batch_is_framed_and_numbered() {
        let batch = replace_batch(&representative()).unwrap();
        let messages = parse_messages(&batch.bytes);
        let rules: usize = representative().chains.iter().map(|c| c.rules.len()).sum();
        // begin, add + delete + add table, the chains, the rules, end.
        assert_eq!(batch.steps.len(), 3 + 9 + rules);
        assert_eq!(messages.len(), batch.steps.len() + 2);
        let (begin, end) = (&messages[0], messages.last().unwrap());
        assert_eq!(
            (begin.ty, end.ty),
            (NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END)
        );
        assert_eq!(begin.payload, &[0, 0, 0, 10]);
        assert_eq!(end.payload, &[0, 0, 0, 10]);
        assert_eq!(begin.flags & NLM_F_ACK, 0);
        let types: Vec<u16> = messages[1..4].iter().map(|m| m.ty & 0xff).collect();
        assert_eq!(
            types,
            [NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWTABLE]
        );
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m.seq, BATCH_BEGIN_SEQ + i as u32);
            if i > 0 && i < messages.len() - 1 {
                assert_eq!(m.ty >> 8, NFNL_SUBSYS_NFTABLES);
                assert_eq!(
                    m.flags & (NLM_F_REQUEST | NLM_F_ACK),
                    NLM_F_REQUEST | NLM_F_ACK
                );
                assert_eq!(m.payload[0], NFPROTO_IPV4);
            }
        }
        // Chains before rules; the last rule names its table and chain.
        assert_eq!(messages[4].ty & 0xff, NFT_MSG_NEWCHAIN);
        let last = &messages[messages.len() - 2];
        assert_eq!(last.ty & 0xff, NFT_MSG_NEWRULE);
        assert_eq!(
            last.flags & (NLM_F_CREATE | NLM_F_APPEND),
            NLM_F_CREATE | NLM_F_APPEND
        );
        let attrs = parse_attrs(&last.payload[4..]);
        assert_eq!(attrs[0], (NFTA_RULE_TABLE, &b"mkhost\0"[..]));
        assert_eq!(attrs[1], (NFTA_RULE_CHAIN, &b"input\0"[..]));
        let step = batch.step(last.seq);
        assert!(
            step.describe().contains("rule 0 of chain input"),
            "{step:?}"
        );
        assert_eq!(batch.step(BATCH_BEGIN_SEQ), Step::Commit("mkhost".into()));
    }

    #[test]
    fn priorities_are_named_like_nft() {
        // What nft 1.0.6 lists for these hooks and priorities.
        let cases = [
            (Hook::Prerouting, -300, "raw"),
            (Hook::Prerouting, -290, "raw + 10"),
            (Hook::Prerouting, -311, "-311"),
            (Hook::Prerouting, -100, "dstnat"),
            (Hook::Prerouting, -95, "dstnat + 5"),
            (Hook::Prerouting, 90, "90"),
            (Hook::Input, -100, "-100"),
            (Hook::Input, -150, "mangle"),
            (Hook::Input, 11, "11"),
            (Hook::Input, -10, "filter - 10"),
            (Hook::Forward, 45, "security - 5"),
            (Hook::Output, -95, "-95"),
            (Hook::Output, 100, "100"),
            (Hook::Postrouting, 100, "srcnat"),
            (Hook::Postrouting, 105, "srcnat + 5"),
            (Hook::Postrouting, -100, "-100"),
            (Hook::Postrouting, i32::MIN, "-2147483648"),
        ];
        for (hook, priority, want) in cases {
            assert_eq!(priority_text(hook, priority), want, "{hook:?} {priority}");
        }
    }

    #[test]
    fn render_prints_nft_syntax() {
        let text = render(&representative());
        assert!(text.starts_with(
            "table ip mkhost {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tfib daddr type local jump publish\n\t}\n\n"
        ));
        assert!(text.contains("\t\tip saddr 172.16.0.0/12 return\n"));
        assert!(text.contains("\t\tip saddr 172.17.0.0/16 oifname != \"mkv*\" masquerade\n"));
        assert!(text.ends_with(
            "\tchain empty {\n\t\ttype filter hook output priority -95; policy accept;\n\t}\n}\n"
        ));
        let empty = Table {
            name: "t".into(),
            chains: vec![],
        };
        assert_eq!(render(&empty), "table ip t {\n}\n");
    }

    #[test]
    fn hostile_names_are_refused_before_anything_is_sent() {
        // None of these reach a socket, so no namespace is needed.
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let mut t = representative();
        t.name = long.clone();
        let e = replace_table(&t).unwrap_err();
        assert!(matches!(e, NftError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("256 bytes long"), "{e}");
        assert!(delete_table(&long).is_err());
        assert!(count_rules(&long).is_err());
        assert!(count_rules("").is_err());

        let mut t = representative();
        t.chains[2].name = long.clone();
        assert!(replace_table(&t)
            .unwrap_err()
            .to_string()
            .contains("chain name"));
        let mut t = representative();
        t.chains[4].rules[0].action = Action::Jump(long);
        assert!(replace_table(&t)
            .unwrap_err()
            .to_string()
            .contains("rule 0"));

        for bad in [
            "abcdefghijklmnop",
            "abcdefghijklmnop*",
            "",
            "*",
            "a b",
            "a\"b",
            "a*b",
            "a\0",
        ] {
            let mut t = representative();
            t.chains[4].rules[3].matches[0] = Match::InInterface(bad.into());
            let e = replace_table(&t).unwrap_err();
            assert!(matches!(e, NftError::Invalid { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("chain forward, rule 3"), "{e}");
        }
        // 15 bytes is the most, also as a prefix.
        validate(&Table {
            name: "t".into(),
            chains: vec![chain(
                "c",
                None,
                vec![rule(
                    vec![
                        Match::InInterface("abcdefghijklmno".into()),
                        Match::OutInterface("abcdefghijklmno*".into()),
                    ],
                    Action::Accept,
                )],
            )],
        })
        .unwrap();

        let mut t = representative();
        t.chains[0].rules[0].matches = vec![Match::SourceNet(ip(1, 2, 3, 4), 33)];
        assert!(replace_table(&t).unwrap_err().to_string().contains("33"));
        let mut t = representative();
        t.chains[2].rules[0].matches.clear();
        assert!(replace_table(&t).unwrap_err().to_string().contains("dport"));
        let mut t = representative();
        t.chains[3].name = "publish".into();
        assert!(replace_table(&t)
            .unwrap_err()
            .to_string()
            .contains("defined twice"));
        let mut t = representative();
        t.name = "mk host".into();
        assert!(replace_table(&t).is_err());
    }

    // --- Against the kernel, each in a private network namespace --------

    #[test]
    fn nft_lists_a_replaced_table_as_render_prints_it() {
        in_private_netns(|| {
            assert_eq!(count_rules("mkhost").unwrap(), None);
            let table = representative();
            replace_table(&table).unwrap();
            let listed = nft_list("mkhost").expect("the table exists");
            assert_eq!(normalize(&listed), normalize(&render(&table)));
            let rules = table.chains.iter().map(|c| c.rules.len()).sum();
            assert_eq!(count_rules("mkhost").unwrap(), Some(rules));
        });
    }

    #[test]
    fn replace_twice_then_delete() {
        in_private_netns(|| {
            replace_table(&representative()).unwrap();
            let second = Table {
                name: "mkhost".into(),
                chains: vec![
                    chain(
                        "postrouting",
                        base(Hook::Postrouting, ChainKind::Nat, 100),
                        vec![rule(
                            vec![Match::SourceNet(ip(10, 88, 0, 0), 16)],
                            Action::Masquerade,
                        )],
                    ),
                    chain(
                        "forward",
                        base(Hook::Forward, ChainKind::Filter, 0),
                        vec![
                            rule(vec![Match::CtStateEstablishedRelated], Action::Accept),
                            rule(vec![Match::InInterface("mkv*".into())], Action::Drop),
                        ],
                    ),
                ],
            };
            replace_table(&second).unwrap();
            assert_eq!(
                normalize(&nft_list("mkhost").unwrap()),
                normalize(&render(&second))
            );
            assert_eq!(count_rules("mkhost").unwrap(), Some(3));
            // Another table is counted apart.
            let other = Table {
                name: "other".into(),
                chains: vec![chain("c", None, vec![rule(vec![], Action::Accept)])],
            };
            replace_table(&other).unwrap();
            assert_eq!(count_rules("other").unwrap(), Some(1));
            assert_eq!(count_rules("mkhost").unwrap(), Some(3));

            delete_table("mkhost").unwrap();
            assert_eq!(count_rules("mkhost").unwrap(), None);
            assert_eq!(nft_list("mkhost"), None);
            delete_table("mkhost").unwrap();
            assert_eq!(count_rules("other").unwrap(), Some(1));
        });
    }

    /// One session, many changes: each listing as render prints it, and
    /// stale answers of an earlier refused batch do not confuse the next.
    #[test]
    fn a_session_serves_many_changes() {
        in_private_netns(|| {
            let mut session = Session::open().unwrap();
            let mut table = representative();
            session.replace_table(&table).unwrap();
            for round in 0..5 {
                table.chains[3].rules.push(rule(
                    vec![Match::DestPort(Protocol::Tcp, 9000 + round)],
                    Action::Accept,
                ));
                session.replace_rules(&table).unwrap();
                assert_eq!(
                    normalize(&nft_list("mkhost").unwrap()),
                    normalize(&render(&table))
                );
                let mut bad = table.clone();
                bad.chains[1]
                    .rules
                    .push(rule(vec![], Action::Jump("nowhere".into())));
                assert!(session.replace_rules(&bad).is_err());
            }
            let total: usize = table.chains.iter().map(|c| c.rules.len()).sum();
            assert_eq!(session.count_rules("mkhost").unwrap(), Some(total));
            assert_eq!(session.count_rules("absent").unwrap(), None);
        });
    }

    /// Swapping only the rules: the same listing as a whole replacement,
    /// from an absent table too, and an emptied chain stays (empty).
    #[test]
    fn replace_rules_swaps_rules_and_keeps_chains() {
        in_private_netns(|| {
            let mut table = representative();
            replace_rules(&table).unwrap();
            assert_eq!(
                normalize(&nft_list("mkhost").unwrap()),
                normalize(&render(&table))
            );
            let total = |t: &Table| t.chains.iter().map(|c| c.rules.len()).sum::<usize>();
            assert_eq!(count_rules("mkhost").unwrap(), Some(total(&table)));
            for chain in &mut table.chains {
                chain.rules.reverse();
                chain.rules.truncate(1);
            }
            table.chains[0].rules.clear();
            replace_rules(&table).unwrap();
            assert_eq!(
                normalize(&nft_list("mkhost").unwrap()),
                normalize(&render(&table))
            );
            assert_eq!(count_rules("mkhost").unwrap(), Some(total(&table)));
            // A refused rule leaves the rules as they were.
            let before = nft_list("mkhost").unwrap();
            let mut bad = table.clone();
            bad.chains[1]
                .rules
                .push(rule(vec![], Action::Jump("nowhere".into())));
            assert!(replace_rules(&bad).is_err());
            assert_eq!(nft_list("mkhost").unwrap(), before);
        });
    }

    #[test]
    fn a_refused_batch_leaves_the_old_table() {
        in_private_netns(|| {
            replace_table(&representative()).unwrap();
            let before = nft_list("mkhost").unwrap();
            let mut broken = representative();
            broken.chains[1].rules.clear();
            let last = broken.chains.len() - 1;
            broken.chains[last]
                .rules
                .push(rule(vec![], Action::Jump("nowhere".into())));
            let e = replace_table(&broken).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.errno(), Some(libc::ENOENT), "{text}");
            assert!(text.contains("rule 0 of chain empty"), "{text}");
            assert!(text.contains("jump nowhere"), "{text}");
            assert!(
                text.contains("does chain nowhere exist in the table?"),
                "{text}"
            );
            assert_eq!(nft_list("mkhost").unwrap(), before);

            // A refused batch for an absent table leaves no table behind.
            let mut fresh = broken.clone();
            fresh.name = "fresh".into();
            assert!(replace_table(&fresh).is_err());
            assert_eq!(count_rules("fresh").unwrap(), None);

            // dnat in a filter chain: the kernel's EOPNOTSUPP, with the fix.
            let mut misplaced = representative();
            misplaced.chains[4].rules[0] = rule(
                vec![Match::DestPort(Protocol::Tcp, 1)],
                Action::Dnat(ip(10, 0, 0, 1), 2),
            );
            let e = replace_table(&misplaced).unwrap_err();
            assert!(e.to_string().contains("only work in nat chains"), "{e}");
            // Jumps in a loop; a nat chain below conntrack's priority.
            let mut looping = representative();
            looping.chains[5].rules[2].action = Action::Jump("publish".into());
            looping.chains[2]
                .rules
                .push(rule(vec![], Action::Jump("isolate".into())));
            let e = replace_table(&looping).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EMLINK), "{e}");
            assert!(e.to_string().contains("make a loop"), "{e}");
            let mut early = representative();
            early.chains[0].base = base(Hook::Prerouting, ChainKind::Nat, -300);
            let e = replace_table(&early).unwrap_err();
            assert!(e.to_string().contains("chain prerouting"), "{e}");
            assert!(e.to_string().contains("priority above -200"), "{e}");
            assert_eq!(nft_list("mkhost").unwrap(), before);
        });
    }

    #[test]
    fn dnat_redirects_a_local_connection() {
        in_private_netns(|| {
            let mut rtnl = super::super::netlink::Netlink::open().unwrap();
            rtnl.set_up(1, "lo").unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let real = listener.local_addr().unwrap().port();
            let published = if real == 8080 { 8081 } else { 8080 };
            replace_table(&Table {
                name: "mkhost".into(),
                chains: vec![chain(
                    "output",
                    base(Hook::Output, ChainKind::Nat, -100),
                    vec![rule(
                        vec![
                            Match::DestNet(Ipv4Addr::LOCALHOST, 32),
                            Match::DestPort(Protocol::Tcp, published),
                        ],
                        Action::Dnat(Ipv4Addr::LOCALHOST, real),
                    )],
                )],
            })
            .unwrap();
            let server = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).unwrap();
                conn.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                    .unwrap();
            });
            let mut client = TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, published).into(),
                Duration::from_secs(5),
            )
            .unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client.write_all(b"ping").unwrap();
            let mut answer = [0u8; 4];
            client.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"PING");
            server.join().unwrap();
        });
    }
}
