//! The errors of the registry client: what went wrong ([`Cause`]), at which
//! step of which operation on which reference ([`RegistryError`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The text is not an image reference.
    #[error("invalid image reference {text:?}: {reason}")]
    Reference {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client options cannot be used (a CA bundle without certificates,
    /// a docker config that is not JSON).
    #[error("registry client setup: {reason}")]
    Setup {
        /// What is wrong.
        reason: String,
    },
    /// An operation on a reference failed at one step.
    #[error("{operation} {reference}: {step}: {cause}")]
    Failed {
        /// `pull` or `resolve`.
        operation: &'static str,
        /// The reference, canonical.
        reference: String,
        /// The step that failed.
        step: Step,
        /// Why.
        #[source]
        cause: Cause,
    },
}

impl RegistryError {
    /// The cause of a failed operation, to match on.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            RegistryError::Failed { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// The step of a pull or resolve that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Fetching what the reference names (a manifest or an index).
    Resolve,
    /// Fetching or reading the image manifest chosen from an index, or
    /// reading the one the reference names.
    Manifest,
    /// Fetching the image config.
    Config,
    /// Fetching one layer blob (its digest).
    Blob(String),
    /// Writing the layout's `index.json` and `oci-layout`.
    Layout,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Resolve => f.write_str("resolve"),
            Step::Manifest => f.write_str("manifest"),
            Step::Config => f.write_str("config"),
            Step::Blob(digest) => write!(f, "blob {digest}"),
            Step::Layout => f.write_str("layout"),
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// No connection could be made (name resolution, refused, unreachable).
    #[error("cannot connect to {host}: {detail}")]
    Connect {
        /// `host[:port]`.
        host: String,
        /// The transport's message.
        detail: String,
    },
    /// The TLS handshake failed (unknown CA, wrong name, protocol).
    #[error("TLS with {host} failed: {detail}; trust the registry's CA (ca_pem) or list it as insecure if it speaks plain HTTP")]
    Tls {
        /// `host[:port]`.
        host: String,
        /// rustls' message.
        detail: String,
    },
    /// Nothing arrived for the stall timeout.
    #[error("{url}: no data for {seconds} s (stalled)")]
    Stalled {
        /// The URL being read.
        url: String,
        /// The stall timeout.
        seconds: u64,
    },
    /// The connection failed while the body was read.
    #[error("{url}: reading the response failed: {source}")]
    Read {
        /// The URL being read.
        url: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{url}: {status} {detail}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error messages, if it sent any.
        detail: String,
    },
    /// The registry (or its token service) refused us: no or wrong
    /// credentials, or a token that does not grant pull.
    #[error("{host} refused access (401): {detail}")]
    Unauthorized {
        /// The registry or token realm.
        host: String,
        /// What we tried.
        detail: String,
    },
    /// The token service's answer cannot be used.
    #[error("token service {realm}: {detail}")]
    Token {
        /// The realm URL.
        realm: String,
        /// What is wrong.
        detail: String,
    },
    /// Redirects that loop or do not end.
    #[error("{url}: {detail}")]
    Redirect {
        /// The URL first requested.
        url: String,
        /// The loop or the count.
        detail: String,
    },
    /// A manifest or config larger than the cap.
    #[error("{what} is larger than {limit} bytes; refused")]
    TooLarge {
        /// "manifest", "config".
        what: &'static str,
        /// The cap.
        limit: u64,
    },
    /// The content does not hash to its digest.
    #[error("digest mismatch (got {got}): the registry sent corrupt data")]
    DigestMismatch {
        /// The digest expected.
        expected: String,
        /// The digest of what arrived.
        got: String,
    },
    /// The content is shorter or longer than its descriptor says.
    #[error("size mismatch: expected {expected} bytes, got {got}{}", if got < expected { " (truncated)" } else { "" })]
    SizeMismatch {
        /// The descriptor's size.
        expected: u64,
        /// What arrived (or as much as was read before stopping).
        got: u64,
    },
    /// The registry's `Docker-Content-Digest` disagrees with the content.
    #[error("the registry says the digest is {header} but the content hashes to {got}")]
    HeaderDigest {
        /// The header's value.
        header: String,
        /// What the bytes hash to.
        got: String,
    },
    /// Docker's schema 1 manifests (signed, pre-2017) are not supported.
    #[error("the image has a Docker schema 1 manifest ({media_type}), which is not supported; push it again with a current docker or skopeo")]
    Schema1 {
        /// The media type.
        media_type: String,
    },
    /// A manifest of an unknown media type.
    #[error("unsupported manifest media type {media_type:?}")]
    MediaType {
        /// The media type.
        media_type: String,
    },
    /// An index without a linux/amd64 image.
    #[error("no linux/amd64 image in the index; it has {}", if available.is_empty() { "no platforms".to_owned() } else { available.join(", ") })]
    NoPlatform {
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// A manifest, index or token answer that is not what the spec says.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// "manifest", "index", "token response".
        what: &'static str,
        /// The parse error or the field.
        detail: String,
    },
    /// Writing into the layout failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The credentials for a registry are not usable.
    #[error("credentials for {host}: {detail}")]
    Credentials {
        /// The registry.
        host: String,
        /// What is wrong.
        detail: String,
    },
    /// Another download failed first; this one stopped.
    #[error("cancelled after another download failed")]
    Cancelled,
}
