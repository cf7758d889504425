//! Why signing, or reading keys and signatures, failed.

use std::path::PathBuf;

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
