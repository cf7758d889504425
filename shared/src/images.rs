//! What the image store reports: the answers to `images`, `import`,
//! `inspect_image`, `remove_image` and `gc`, as the store makes them and as
//! clients read them from the control protocol. Digests are their
//! `sha256:<hex>` strings here; the store validates them before it reports.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One line of the store's image list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Image id (config digest).
    pub id: String,
    /// Names, possibly none.
    pub names: Vec<String>,
    /// `created` from the image config.
    pub created: Option<String>,
    /// Number of layers.
    pub layers: usize,
    /// Sum of the layer blob sizes (compressed, as transferred).
    pub size: u64,
    /// Sum of the unpacked layer sizes (regular file bytes).
    pub unpacked_size: u64,
}

/// Everything the store knows about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Image id (config digest).
    pub id: String,
    /// Names, possibly none.
    pub names: Vec<String>,
    /// Manifest digest (written by the store for `docker save` archives).
    pub manifest: String,
    /// `architecture` from the image config.
    pub architecture: Option<String>,
    /// `os` from the image config.
    pub os: Option<String>,
    /// `created` from the image config.
    pub created: Option<String>,
    /// What the image asks of a container.
    pub config: ImageConfig,
    /// Layers from the bottom up.
    pub layers: Vec<LayerInfo>,
    /// Sum of the layer blob sizes.
    pub size: u64,
    /// Sum of the unpacked layer sizes.
    pub unpacked_size: u64,
}

/// One layer of [`ImageInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Digest of the layer blob.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Media type of the blob.
    pub media_type: String,
    /// Size of the blob.
    pub size: u64,
    /// Regular file bytes in the unpacked layer.
    pub unpacked_size: u64,
    /// The unpacked layer directory.
    pub path: PathBuf,
}

/// What removing an image did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The image the reference resolved to.
    pub id: String,
    /// Names taken off the image.
    pub untagged: Vec<String>,
    /// True when the image record itself is gone (its blobs and layers stay
    /// until the next gc).
    pub deleted: bool,
}

/// What a gc freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Blob files deleted.
    pub blobs_removed: usize,
    /// Layer directories deleted.
    pub layers_removed: usize,
    /// Bytes of regular files deleted (hard links counted once).
    pub bytes_freed: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The images found in the source, in source order.
    pub images: Vec<ImportedImage>,
    /// Blobs written to the store (manifests, configs, layers).
    pub blobs_added: usize,
    /// Layer directories unpacked into the store.
    pub layers_added: usize,
    /// Layer entries left out (device nodes, fifos, aufs metadata).
    pub skipped: Vec<SkippedEntry>,
    /// Extended attributes dropped while unpacking (not on the allow list or
    /// not supported by the store's file system).
    pub xattrs_dropped: u64,
}

/// What a pull from a registry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    /// The reference as the store names the image (`docker.io/library/nginx:1.27`).
    pub reference: String,
    /// The digest of the image manifest pulled (pin it with `REF@DIGEST`).
    pub manifest_digest: String,
    /// The image id (config digest).
    pub id: String,
    /// Layers of the image.
    pub layers: usize,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
    /// Blobs the store had already (not downloaded).
    pub blobs_reused: usize,
    /// What importing into the store did.
    pub import: ImportReport,
}

/// A pull in progress, as `hostd pull` draws it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    /// The reference being pulled, canonical (`docker.io/library/nginx:1.27`).
    pub reference: String,
    /// The image manifest's digest, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Layers and config together, bytes (0 until resolved).
    pub total_bytes: u64,
    /// The blobs begun so far, in the order they began.
    pub blobs: Vec<BlobProgress>,
    /// The pull is over (the daemon keeps the last one for a last look).
    #[serde(default)]
    pub finished: bool,
}

/// One blob of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobProgress {
    /// Its digest.
    pub digest: String,
    /// Its size (0 when already present: not looked at).
    pub size: u64,
    /// Bytes downloaded so far.
    pub done: u64,
    /// Where it is.
    pub state: BlobState,
}

/// Where a blob of a pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    /// Downloading.
    Downloading,
    /// Downloaded and verified.
    Done,
    /// The store had it already.
    Present,
}

/// One image of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedImage {
    /// The image id (config digest).
    pub id: String,
    /// The names the source gave it (may be empty: use the id).
    pub names: Vec<String>,
    /// False when the store already had the image (only names were added).
    pub new: bool,
}

/// A layer entry the unpacker left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// The layer's diff_id.
    pub layer: String,
    /// The entry path as stored in the tar.
    pub entry: String,
    /// Why it was skipped.
    pub reason: String,
}

/// What an image asks of the container that runs it (the `config` part of
/// the image config), with empty values made uniform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`; `None` when the image sets none.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`; `None` when the image sets none.
    pub cmd: Option<Vec<String>>,
    /// `Env`, `NAME=value` strings in image order.
    pub env: Vec<String>,
    /// `WorkingDir`; `None` when unset or empty.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, ...); `None` when unset or empty.
    pub user: Option<String>,
    /// `ExposedPorts` keys such as `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// `Volumes` keys (mount points), sorted.
    pub volumes: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`; `None` when unset.
    pub stop_signal: Option<String>,
}
