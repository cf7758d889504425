//! Secure Boot for mkhost images: signing done by mkhost itself, with
//! RustCrypto's ASN.1, CMS and RSA crates and ring's signatures.
//!
//! - [`signer`]: an RSA key and its X.509 certificate from PEM files,
//!   checked (the key matches, the certificate is RSA and valid now, an
//!   encrypted key has its password) before anything is signed.
//! - [`authenticode`]: the Authenticode signature of a PE image (the UKI,
//!   `BOOTX64.EFI`) that firmware checks against `db`, and its check.
//! - [`efivars`]: EFI signature lists and the authenticated variable writes
//!   (`.auth`) that enroll PK, KEK and db.
//! - [`keys`]: `mkhost keys`: a new key set (PK, KEK, db) or one from
//!   existing keys, with its `.esl` and `.auth` files.
//!
//! Signatures are deterministic (RSA PKCS #1 v1.5, no signing time): the
//! same key and inputs give the same bytes.

pub mod authenticode;
pub mod efivars;
pub mod keys;
pub mod signer;

use std::path::PathBuf;

pub use authenticode::{sign_pe, verify_pe, PeSignature};
pub use signer::{certificate_info, CertificateInfo, Signer};

/// Why signing, or reading keys and signatures, failed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("key {path} is encrypted: give its password in MKHOST_KEY_PASSWORD")]
    KeyPassword { path: PathBuf },
    #[error("certificate {path}: {why}")]
    Certificate { path: PathBuf, why: String },
    #[error("key {key} does not match certificate {certificate}: the certificate names another public key")]
    KeyMismatch { key: PathBuf, certificate: PathBuf },
    #[error("certificate {path} is valid from {not_before} to {not_after}, not now: make a new one (mkhost keys create)")]
    Validity {
        path: PathBuf,
        not_before: String,
        not_after: String,
    },
    #[error("RSA keys for UEFI firmware are 2048 or 4096 bits, not {0}")]
    KeySize(usize),
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("the RSA signature failed")]
    Sign,
    #[error("cannot encode the signature: {0}")]
    Encode(String),
    #[error("the PE's signature is malformed: {0}")]
    BadSignature(String),
    #[error(transparent)]
    Pe(#[from] mkhost_image::authenticode::AuthenticodeError),
    #[error(
        "{dir} already holds a key set ({file}); keys are never replaced: pick another directory"
    )]
    Exists { dir: PathBuf, file: PathBuf },
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `(year, month, day, hour, minute, second)` of `unix` seconds, UTC
/// (Howard Hinnant's days-to-civil).
pub(crate) fn civil(unix: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix / 86_400) as i64;
    let rest = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rest / 3600) as u32,
        (rest / 60 % 60) as u32,
        (rest % 60) as u32,
    )
}

/// `unix` seconds as RFC 3339, UTC.
pub fn rfc3339(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_428_800 + 3661), "2026-12-05T01:01:01Z");
    }
}
