//! `mkhost certs`: the certificates of the Docker Engine API's mutual TLS.
//!
//! hostd answers the Docker API on TCP port 2376 only to clients that show
//! a certificate signed by the host's CA. This module makes that CA, the
//! server certificates hosts present and the client certificates the docker
//! CLI presents, as the docker CLI lays them out: `ca.pem`, `cert.pem` and
//! `key.pem` in one directory (`DOCKER_CERT_PATH`).
//!
//! - [`create_ca`]: `DIR/ca.pem` and `DIR/ca-key.pem` (0600). An existing
//!   CA is never replaced.
//! - [`issue`]: a server certificate (extendedKeyUsage serverAuth, the
//!   host's DNS names and addresses as subjectAltNames) or a client
//!   certificate (clientAuth), with its own new key, into a directory of
//!   `ca.pem`, `cert.pem`, `key.pem` (0600). [`server_names`] gives the
//!   names of a netbooted machine from its machines-file entry.
//! - [`check_server_dir`]: what a profile's `[docker] tls_dir` must hold
//!   before it goes into an image: the three files, the key matching the
//!   certificate, the certificate issued by the CA, and no CA private key
//!   (neither `ca-key.pem` nor a `key.pem` that is the CA's key).
//!
//! Keys are ECDSA P-256 (rcgen with ring). The CA's subject is derived from
//! its public key (`mkhost CA <fingerprint>`), so a CA loaded again from its
//! key signs with the very name its certificate carries; that is checked
//! against `ca.pem` on every issue. Files are written with
//! [`mkhost_shared::fs::write_atomic`]; key material is never printed.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use sha2::{Digest, Sha256};

use crate::clip;

/// The CA's certificate, in the CA directory and in every issued directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key: only ever in the CA directory.
pub const CA_KEY: &str = "ca-key.pem";
/// An issued certificate.
pub const CERT: &str = "cert.pem";
/// An issued certificate's private key.
pub const KEY: &str = "key.pem";

/// The default lifetime of a CA, in days (ten years).
pub const CA_DAYS: u32 = 3650;
/// The default lifetime of a server or client certificate, in days.
pub const CERT_DAYS: u32 = 825;

/// The largest PEM file read.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{path} already exists: a CA is never replaced (certificates it signed would stop working); use another --dir, or remove {path} and the CA's other files to start over")]
    CaExists { path: PathBuf },
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is larger than {MAX_PEM_BYTES} bytes; it is not a PEM certificate or key")]
    TooLarge { path: PathBuf },
    #[error("{path} is not {what}")]
    NotPem { path: PathBuf, what: &'static str },
    #[error("{}: {why}", clip::quoted(.san))]
    BadSan { san: String, why: String },
    #[error("a server certificate needs at least one --san (a DNS name or an IP address)")]
    NoSans,
    #[error("{}: {why}", clip::quoted(.name))]
    BadName { name: String, why: String },
    #[error("--days {0}: give 1 to 36500")]
    BadDays(u32),
    #[error("{cert} was not made from the key {key}: they belong to different CAs (or the CA was not made by `mkhost certs ca`)")]
    CaMismatch { cert: PathBuf, key: PathBuf },
    #[error("{dir} holds {CA_KEY}: the CA's private key never enters an image; give the directory `mkhost certs server --out` wrote, which has no {CA_KEY}")]
    CaKeyPresent { dir: PathBuf },
    #[error("{dir} is the CA's directory: issued certificates go into a directory of their own (the CA's private key stays alone with ca.pem)")]
    OutIsCaDir { dir: PathBuf },
    #[error("{key} is the CA's own private key: the CA's private key never enters an image; issue a server certificate with `mkhost certs server`")]
    KeyIsCaKey { key: PathBuf },
    #[error("{key} does not belong to {cert}: the key's public key is not the certificate's (files of two different issues?)")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{cert} was not issued by the CA in {ca}")]
    NotIssuedByCa { cert: PathBuf, ca: PathBuf },
    #[error("{path} is missing")]
    Missing { path: PathBuf },
    #[error("machine {mac} ({origin}) has no hostname: name it in its [machines.\"{mac}\"] table, the certificate's names come from it")]
    MachineWithoutName { mac: String, origin: String },
    #[error("cannot make the certificate")]
    Generate(#[source] rcgen::Error),
}

/// One subjectAltName: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum San {
    Ip(IpAddr),
    Dns(String),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Ip(ip) => write!(f, "IP:{ip}"),
            San::Dns(name) => write!(f, "DNS:{name}"),
        }
    }
}

impl std::str::FromStr for San {
    type Err = CertsError;

    /// An IP address if `text` parses as one, else a DNS name: labels of
    /// letters, digits and `-` (not at either end), 1 to 63 characters, at
    /// most 253 in all; `*.` may start a name (a wildcard). Lowercased.
    fn from_str(text: &str) -> Result<San, CertsError> {
        let bad = |why: &str| CertsError::BadSan {
            san: text.to_string(),
            why: why.to_string(),
        };
        let trimmed = text.trim();
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        let name = trimmed.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(bad("empty; give a DNS name or an IP address"));
        }
        if name.len() > 253 {
            return Err(bad("a DNS name is at most 253 characters"));
        }
        let rest = name.strip_prefix("*.").unwrap_or(&name);
        for label in rest.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad(
                    "each label of a DNS name (between dots) has 1 to 63 characters",
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(bad(
                    "neither an IP address nor a DNS name (letters, digits, '-' and dots only)",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a DNS label may not start or end with '-'"));
            }
        }
        if rest
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad(
                "looks like an IP address but is not one; a DNS name's last label is not all digits",
            ));
        }
        Ok(San::Dns(name))
    }
}

/// Which side of the connection a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// hostd's listener: extendedKeyUsage serverAuth, SANs required.
    Server,
    /// A docker CLI: extendedKeyUsage clientAuth.
    Client,
}

/// A CA loaded from its directory, ready to sign.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// The certificate's subject common name.
    pub name: String,
    pub sans: Vec<San>,
    pub days: u32,
}

fn check_days(days: u32) -> Result<(), CertsError> {
    if (1..=36_500).contains(&days) {
        Ok(())
    } else {
        Err(CertsError::BadDays(days))
    }
}

/// The certificate's validity: from an hour ago (clocks differ) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    params.not_before = at(now - 3600);
    params.not_after = at(now + i64::from(days) * 86_400);
}

/// The CA's subject, derived from its public key.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let fingerprint = Sha256::digest(key.subject_public_key_info());
    let mut hex = String::new();
    for b in &fingerprint[..8] {
        let _ = write!(hex, "{b:02x}");
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mkhost");
    dn.push(DnType::CommonName, format!("mkhost CA {hex}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), CertsError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().recursive(true).mode(mode).create(dir) {
        Ok(()) => Ok(()),
        Err(source) => Err(CertsError::CreateDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    mkhost_shared::fs::write_atomic(path, bytes, mode).map_err(|source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`] as text.
pub fn read_pem(path: &Path, what: &'static str) -> Result<String, CertsError> {
    let meta = fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CertsError::Missing {
            path: path.to_path_buf(),
        },
        _ => CertsError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(CertsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let bytes = fs::read(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| CertsError::NotPem {
        path: path.to_path_buf(),
        what,
    })
}

/// Makes a new CA in `dir`: `ca.pem` (0644) and `ca-key.pem` (0600).
/// Refuses when either file is already there.
pub fn create_ca(dir: &Path, days: u32) -> Result<Written, CertsError> {
    check_days(days)?;
    for name in [CA_KEY, CA_CERT] {
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            return Err(CertsError::CaExists { path });
        }
    }
    create_dir(dir, 0o700)?;
    let key = KeyPair::generate().map_err(CertsError::Generate)?;
    let mut params = ca_params(&key);
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(CertsError::Generate)?;
    let name = ca_name(&params);
    // The key first: a ca.pem without its key would be a CA nobody can use.
    let key_path = dir.join(CA_KEY);
    let cert_path = dir.join(CA_CERT);
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Written {
        dir: dir.to_path_buf(),
        files: vec![cert_path, key_path],
        name,
        sans: Vec::new(),
        days,
    })
}

fn ca_name(params: &CertificateParams) -> String {
    match params.distinguished_name.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Loads the CA of `dir` (`ca.pem`, `ca-key.pem`) and checks they belong
/// together.
pub fn load_ca(dir: &Path) -> Result<Ca, CertsError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let cert_pem = read_pem(&cert_path, "a PEM certificate")?;
    let key_pem = read_pem(&key_path, "a PEM private key")?;
    let key = KeyPair::from_pem(&key_pem).map_err(|_| CertsError::NotPem {
        path: key_path.clone(),
        what: "a PEM private key (PKCS#8, as `mkhost certs ca` writes it)",
    })?;
    let cert_der = pem_certificate(&cert_pem).ok_or_else(|| CertsError::NotPem {
        path: cert_path.clone(),
        what: "a PEM certificate",
    })?;
    let fields = der::tbs_fields(&cert_der).ok_or_else(|| CertsError::NotPem {
        path: cert_path.clone(),
        what: "an X.509 certificate",
    })?;
    let mismatch = || CertsError::CaMismatch {
        cert: cert_path.clone(),
        key: key_path.clone(),
    };
    if fields.spki != key.subject_public_key_info() {
        return Err(mismatch());
    }
    let params = ca_params(&key);
    // The name the issuer will write must be the name ca.pem carries.
    let probe = params.self_signed(&key).map_err(CertsError::Generate)?;
    let probe_fields = der::tbs_fields(probe.der()).ok_or_else(mismatch)?;
    if probe_fields.subject != fields.subject {
        return Err(mismatch());
    }
    Ok(Ca {
        dir: dir.to_path_buf(),
        cert_pem,
        issuer: Issuer::new(params, key),
    })
}

/// Issues a certificate for `role` signed by `ca` into `out`: `ca.pem`
/// (0644), `cert.pem` (0644) and `key.pem` (0600); `out` is made 0700 if
/// it is new. Existing files there are replaced (that is how a server
/// certificate is rotated).
pub fn issue(
    ca: &Ca,
    role: Role,
    out: &Path,
    name: &str,
    sans: &[San],
    days: u32,
) -> Result<Written, CertsError> {
    check_days(days)?;
    check_common_name(name)?;
    if role == Role::Server && sans.is_empty() {
        return Err(CertsError::NoSans);
    }
    if out.join(CA_KEY).exists() || same_dir(out, &ca.dir) {
        return Err(CertsError::OutIsCaDir {
            dir: out.to_path_buf(),
        });
    }
    let mut sans = sans.to_vec();
    sans.sort();
    sans.dedup();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    for san in &sans {
        params.subject_alt_names.push(match san {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(dns) => {
                SanType::DnsName(dns.clone().try_into().map_err(|_| CertsError::BadSan {
                    san: dns.clone(),
                    why: "not an ASCII DNS name".into(),
                })?)
            }
        });
    }
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(CertsError::Generate)?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(CertsError::Generate)?;
    create_dir(out, 0o700)?;
    // The key and certificate are replaced one after the other; the key
    // last, so a reader between the two sees the old key with the new
    // certificate at worst, which TLS refuses loudly rather than silently.
    let ca_path = out.join(CA_CERT);
    let cert_path = out.join(CERT);
    let key_path = out.join(KEY);
    write(&ca_path, ca.cert_pem.as_bytes(), 0o644)?;
    write(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(Written {
        dir: out.to_path_buf(),
        files: vec![ca_path, cert_path, key_path],
        name: name.to_string(),
        sans,
        days,
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A certificate's common name: printable, one line, at most 64 characters
/// (the X.509 upper bound).
fn check_common_name(name: &str) -> Result<(), CertsError> {
    let bad = |why: &str| CertsError::BadName {
        name: name.to_string(),
        why: why.to_string(),
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("a certificate name has 1 to 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("a certificate name has no control characters"));
    }
    Ok(())
}

/// What a server certificate needs of a machine of a `--machines` file
/// (the caller takes it from the profile's machine table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineNames {
    /// Its MAC, for messages.
    pub mac: String,
    /// Its host name, if the table gives one.
    pub hostname: Option<String>,
    /// Its kernel command line.
    pub cmdline: String,
    /// Where the table names it (`file:line:col`).
    pub origin: String,
}

/// The names a netbooted machine's server certificate carries: its
/// hostname, the hostname under each of `domains`, and the IPv4
/// addresses its command line gives statically (`mkhost.ip=ADDR/PREFIX`
/// or `ip=ADDR:...`), plus `extra` for every machine.
pub fn server_names(
    machine: &MachineNames,
    domains: &[String],
    extra: &[San],
) -> Result<(String, Vec<San>), CertsError> {
    let hostname = machine
        .hostname
        .clone()
        .ok_or_else(|| CertsError::MachineWithoutName {
            mac: machine.mac.clone(),
            origin: machine.origin.clone(),
        })?;
    let mut sans = vec![hostname.parse::<San>()?];
    for domain in domains {
        let domain = domain.trim_matches('.');
        sans.push(format!("{hostname}.{domain}").parse::<San>()?);
    }
    for arg in machine.cmdline.split_whitespace() {
        // init's `mkhost.ip=IFACE:ADDR/PREFIX[:GW]` and the kernel's
        // `ip=ADDR:SERVER:GW:MASK:...`.
        let address = match arg.split_once('=') {
            Some(("mkhost.ip", value)) => value.split(':').nth(1),
            Some(("ip", value)) => value.split(':').next(),
            _ => None,
        };
        let address = address.and_then(|a| a.split('/').next());
        if let Some(ip) = address.and_then(|a| a.parse::<IpAddr>().ok()) {
            sans.push(San::Ip(ip));
        }
    }
    sans.extend(extra.iter().cloned());
    sans.sort();
    sans.dedup();
    Ok((hostname, sans))
}

/// The DER of the first `CERTIFICATE` block of `pem`.
pub fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    pem_block(pem, "CERTIFICATE")
}

/// The base64 body of the first `-----BEGIN {label}-----` block, decoded.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The server side of the Docker API's TLS, checked: the PEM texts of
/// `ca.pem`, `cert.pem` and `key.pem`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for ServerTls {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("ca", &format_args!("{} bytes", self.ca.len()))
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field(
                "key",
                &format_args!("<{} bytes, not shown>", self.key.len()),
            )
            .finish()
    }
}

/// Checks a directory `mkhost certs server` wrote before its files go into
/// an image: `ca.pem`, `cert.pem` and `key.pem` present; no `ca-key.pem`;
/// `key.pem` is `cert.pem`'s key and not the CA's; `cert.pem` was issued by
/// `ca.pem`'s CA (its issuer is the CA's subject).
pub fn check_server_dir(dir: &Path) -> Result<ServerTls, CertsError> {
    if fs::symlink_metadata(dir.join(CA_KEY)).is_ok() {
        return Err(CertsError::CaKeyPresent {
            dir: dir.to_path_buf(),
        });
    }
    let ca_path = dir.join(CA_CERT);
    let cert_path = dir.join(CERT);
    let key_path = dir.join(KEY);
    let ca = read_pem(&ca_path, "a PEM certificate")?;
    let cert = read_pem(&cert_path, "a PEM certificate")?;
    let key = read_pem(&key_path, "a PEM private key")?;
    let fields = |path: &Path, text: &str| {
        pem_certificate(text)
            .and_then(|der| der::tbs_fields(&der))
            .ok_or_else(|| CertsError::NotPem {
                path: path.to_path_buf(),
                what: "a PEM X.509 certificate",
            })
    };
    let ca_fields = fields(&ca_path, &ca)?;
    let cert_fields = fields(&cert_path, &cert)?;
    let key_pair = KeyPair::from_pem(&key).map_err(|_| CertsError::NotPem {
        path: key_path.clone(),
        what: "a PEM private key (PKCS#8, SEC1 or PKCS#1)",
    })?;
    let public = key_pair.subject_public_key_info();
    if public == ca_fields.spki {
        return Err(CertsError::KeyIsCaKey { key: key_path });
    }
    if public != cert_fields.spki {
        return Err(CertsError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    if cert_fields.issuer != ca_fields.subject {
        return Err(CertsError::NotIssuedByCa {
            cert: cert_path,
            ca: ca_path,
        });
    }
    Ok(ServerTls { ca, cert, key })
}

/// Just enough DER to find a certificate's names and public key.
pub mod der {
    /// Parts of a TBSCertificate, each a whole TLV.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TbsFields {
        pub issuer: Vec<u8>,
        pub subject: Vec<u8>,
        pub spki: Vec<u8>,
    }

    /// One tag-length-value element.
    struct Tlv<'a> {
        tag: u8,
        /// Tag, length and value.
        whole: &'a [u8],
        /// The value alone.
        contents: &'a [u8],
        /// What follows it.
        rest: &'a [u8],
    }

    /// The TLV at the start of `input`.
    fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let header = input.len() - rest.len();
        Some(Tlv {
            tag,
            whole: &input[..header + len],
            contents: &rest[..len],
            rest: &rest[len..],
        })
    }

    /// Issuer, subject and subjectPublicKeyInfo of a DER certificate.
    pub fn tbs_fields(cert: &[u8]) -> Option<TbsFields> {
        const SEQUENCE: u8 = 0x30;
        let cert = tlv(cert).filter(|t| t.tag == SEQUENCE)?;
        let tbs = tlv(cert.contents).filter(|t| t.tag == SEQUENCE)?;
        let mut rest = tbs.contents;
        let mut fields = Vec::new();
        while fields.len() < 7 && !rest.is_empty() {
            let field = tlv(rest)?;
            fields.push((field.tag, field.whole));
            rest = field.rest;
        }
        // [0] version is optional; then serial, signature, issuer,
        // validity, subject, subjectPublicKeyInfo.
        let skip = usize::from(fields.first()?.0 == 0xa0);
        let get = |i: usize| fields.get(skip + i).filter(|(tag, _)| *tag == SEQUENCE);
        Some(TbsFields {
            issuer: get(2)?.1.to_vec(),
            subject: get(4)?.1.to_vec(),
            spki: get(5)?.1.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn cert_der(path: &Path) -> Vec<u8> {
        pem_certificate(&fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The DER of extendedKeyUsage serverAuth (1.3.6.1.5.5.7.3.1) and
    /// clientAuth (...3.2).
    const SERVER_AUTH: [u8; 10] = [6, 8, 0x2b, 6, 1, 5, 5, 7, 3, 1];
    const CLIENT_AUTH: [u8; 10] = [6, 8, 0x2b, 6, 1, 5, 5, 7, 3, 2];

    #[test]
    fn a_ca_signs_servers_and_clients_with_their_names_and_usages() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        let written = create_ca(&ca_dir, CA_DAYS).unwrap();
        assert!(written.name.starts_with("mkhost CA "), "{}", written.name);
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&ca_dir.join(CA_KEY)), 0o600);
        let ca = load_ca(&ca_dir).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
        let ca_fields = der::tbs_fields(&cert_der(&ca_dir.join(CA_CERT))).unwrap();

        let sans: Vec<San> = ["host1.example", "10.0.0.5", "fd00::5", "Host1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let srv = tmp.path().join("srv");
        let w = issue(&ca, Role::Server, &srv, "host1", &sans, 30).unwrap();
        assert_eq!(w.sans.len(), 4);
        assert_eq!(mode(&srv), 0o700);
        assert_eq!(mode(&srv.join(KEY)), 0o600);
        assert_eq!(
            fs::read(srv.join(CA_CERT)).unwrap(),
            fs::read(ca_dir.join(CA_CERT)).unwrap()
        );
        let der = cert_der(&srv.join(CERT));
        let fields = der::tbs_fields(&der).unwrap();
        assert_eq!(fields.issuer, ca_fields.subject);
        assert!(contains(&der, b"host1.example"));
        assert!(contains(&der, b"host1"));
        assert!(contains(&der, &[0x87, 4, 10, 0, 0, 5]), "IP SAN 10.0.0.5");
        assert!(contains(&der, &SERVER_AUTH) && !contains(&der, &CLIENT_AUTH));
        let key = KeyPair::from_pem(&fs::read_to_string(srv.join(KEY)).unwrap()).unwrap();
        assert_eq!(key.subject_public_key_info(), fields.spki);
        let tls = check_server_dir(&srv).unwrap();
        assert!(!format!("{tls:?}").contains("PRIVATE"), "{tls:?}");

        let cli = tmp.path().join("cli");
        issue(&ca, Role::Client, &cli, "ops", &[], 30).unwrap();
        let der = cert_der(&cli.join(CERT));
        assert!(contains(&der, &CLIENT_AUTH) && !contains(&der, &SERVER_AUTH));
        assert_eq!(mode(&cli.join(KEY)), 0o600);
        assert_eq!(der::tbs_fields(&der).unwrap().issuer, ca_fields.subject);
    }

    #[test]
    fn a_ca_is_never_replaced_and_must_match_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        create_ca(&ca_dir, CA_DAYS).unwrap();
        let before = fs::read(ca_dir.join(CA_KEY)).unwrap();
        let e = create_ca(&ca_dir, CA_DAYS).unwrap_err();
        assert!(matches!(e, CertsError::CaExists { .. }), "{e}");
        assert!(e.to_string().contains("ca-key.pem already exists"), "{e}");
        assert_eq!(fs::read(ca_dir.join(CA_KEY)).unwrap(), before);
        // Another CA's certificate next to this key.
        let other = tmp.path().join("other");
        create_ca(&other, CA_DAYS).unwrap();
        fs::copy(other.join(CA_CERT), ca_dir.join(CA_CERT)).unwrap();
        let e = load_ca(&ca_dir).unwrap_err();
        assert!(matches!(e, CertsError::CaMismatch { .. }), "{e}");
        let e = load_ca(&tmp.path().join("none")).unwrap_err();
        assert!(matches!(e, CertsError::Missing { .. }), "{e}");
        // Issuing into the CA's own directory is refused.
        let ca = load_ca(&other).unwrap();
        let san = ["a.example".parse().unwrap()];
        let e = issue(&ca, Role::Server, &other, "a", &san, 1).unwrap_err();
        assert!(matches!(e, CertsError::OutIsCaDir { .. }), "{e}");
        let e = issue(&ca, Role::Server, &tmp.path().join("s"), "a", &[], 1).unwrap_err();
        assert!(matches!(e, CertsError::NoSans), "{e}");
        let e = issue(&ca, Role::Client, &tmp.path().join("c"), "a", &[], 0).unwrap_err();
        assert!(matches!(e, CertsError::BadDays(0)), "{e}");
    }

    #[test]
    fn sans_are_ip_addresses_or_checked_dns_names() {
        assert_eq!(
            "10.0.0.5".parse::<San>().unwrap(),
            San::Ip([10, 0, 0, 5].into())
        );
        assert!(matches!("::1".parse::<San>().unwrap(), San::Ip(_)));
        assert_eq!(
            "Rack-7.Example.".parse::<San>().unwrap(),
            San::Dns("rack-7.example".into())
        );
        assert_eq!(
            "*.lab.example".parse::<San>().unwrap(),
            San::Dns("*.lab.example".into())
        );
        for bad in [
            "",
            "bad_name",
            "a..b",
            "-a.b",
            "a-.b",
            "10.0.0.256",
            "a b",
            "http://x",
            "a.*.b",
        ] {
            let e = bad.parse::<San>().unwrap_err();
            assert!(matches!(e, CertsError::BadSan { .. }), "{bad}: {e}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(long.parse::<San>().is_err());
    }

    #[test]
    fn server_dirs_for_images_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        create_ca(&ca_dir, CA_DAYS).unwrap();
        let ca = load_ca(&ca_dir).unwrap();
        let san = ["h.example".parse().unwrap()];
        let srv = tmp.path().join("srv");
        issue(&ca, Role::Server, &srv, "h", &san, 1).unwrap();
        check_server_dir(&srv).unwrap();

        let copy = |name: &str| {
            let dir = tmp.path().join(name);
            fs::create_dir(&dir).unwrap();
            for f in [CA_CERT, CERT, KEY] {
                fs::copy(srv.join(f), dir.join(f)).unwrap();
            }
            dir
        };
        // The CA's key next to the files.
        let d = copy("with-ca-key");
        fs::copy(ca_dir.join(CA_KEY), d.join(CA_KEY)).unwrap();
        let e = check_server_dir(&d).unwrap_err();
        assert!(matches!(e, CertsError::CaKeyPresent { .. }), "{e}");
        // The CA's key as key.pem.
        let d = copy("key-is-ca-key");
        fs::copy(ca_dir.join(CA_KEY), d.join(KEY)).unwrap();
        let e = check_server_dir(&d).unwrap_err();
        assert!(matches!(e, CertsError::KeyIsCaKey { .. }), "{e}");
        // Another issue's key.
        let other = tmp.path().join("other-srv");
        issue(&ca, Role::Server, &other, "h", &san, 1).unwrap();
        let d = copy("mismatch");
        fs::copy(other.join(KEY), d.join(KEY)).unwrap();
        let e = check_server_dir(&d).unwrap_err();
        assert!(matches!(e, CertsError::KeyMismatch { .. }), "{e}");
        // Another CA's ca.pem.
        let ca2 = tmp.path().join("ca2");
        create_ca(&ca2, CA_DAYS).unwrap();
        let d = copy("other-ca");
        fs::copy(ca2.join(CA_CERT), d.join(CA_CERT)).unwrap();
        let e = check_server_dir(&d).unwrap_err();
        assert!(matches!(e, CertsError::NotIssuedByCa { .. }), "{e}");
        // Missing and garbled files.
        let d = copy("missing");
        fs::remove_file(d.join(CERT)).unwrap();
        let e = check_server_dir(&d).unwrap_err();
        assert!(e.to_string().contains("cert.pem is missing"), "{e}");
        let d = copy("garbled");
        fs::write(d.join(KEY), "not a key").unwrap();
        let e = check_server_dir(&d).unwrap_err();
        assert!(matches!(e, CertsError::NotPem { .. }), "{e}");
        assert!(!e.to_string().contains("not a key"), "{e}");
    }

    #[test]
    fn machines_give_their_hostname_domains_and_static_addresses() {
        let machine = MachineNames {
            mac: "52:54:00:00:00:01".into(),
            hostname: Some("node1".into()),
            cmdline:
                "quiet mkhost.ip=eth0:10.0.0.5/24:10.0.0.1 ip=10.0.1.5:::255.255.255.0 ip=dhcp"
                    .into(),
            origin: "m.toml:1:1".into(),
        };
        let extra = ["10.9.9.9".parse().unwrap()];
        let (name, sans) = server_names(&machine, &["rack.example".into()], &extra).unwrap();
        assert_eq!(name, "node1");
        let text: Vec<String> = sans.iter().map(San::to_string).collect();
        assert_eq!(
            text,
            [
                "IP:10.0.0.5",
                "IP:10.0.1.5",
                "IP:10.9.9.9",
                "DNS:node1",
                "DNS:node1.rack.example"
            ]
        );
        let nameless = MachineNames {
            hostname: None,
            ..machine
        };
        let e = server_names(&nameless, &[], &[]).unwrap_err();
        assert!(e.to_string().contains("m.toml:1:1"), "{e}");
    }

    #[test]
    fn the_der_walker_refuses_short_input() {
        assert_eq!(der::tbs_fields(&[]), None);
        assert_eq!(der::tbs_fields(&[0x30, 0x82, 0xff]), None);
        assert_eq!(der::tbs_fields(&[0x30, 2, 0x30, 0]), None);
    }
}
