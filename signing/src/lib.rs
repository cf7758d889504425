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
pub mod error;
pub mod keys;
pub mod pcr_policy;
pub mod signer;
pub mod text;

pub use authenticode::{sign_pe, verify_pe, PeSignature};
pub use error::SigningError;
pub use signer::{CertificateInfo, Signer};
pub use text::rfc3339;
