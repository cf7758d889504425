//! The one error type of the image store.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the image store.
///
/// Each variant names the step that failed and carries its context (the file,
/// the digest, the archive entry); the messages are lowercase and end with
/// what to do about it where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating or opening a directory or file of the store itself failed.
    #[error("cannot set up image store at {path}: {source}; check that the parent directory exists and is writable by root")]
    Setup {
        /// The store path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The store's `index.json` cannot be read or parsed.
    #[error("image store index {path} is unreadable: {reason}; restore it from a backup or move the store away and import the images again")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing a file or directory of the store failed.
    #[error("cannot write {path}: {source}; check free space in the image store")]
    Write {
        /// The file being written or renamed into place.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading a file of the store failed.
    #[error("cannot read {path}: {source}; the image store is damaged, remove the image and import it again")]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The import source cannot be opened or read.
    #[error("cannot read image source {path}: {source}")]
    Source {
        /// The path given to `import`.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The source is neither an OCI layout nor a docker save archive nor a
    /// skopeo `dir:` copy: a directory without those files, or, for
    /// [`super::archive_images`] (which lists image archives only), a root
    /// file system tar, which [`super::Store::import`] takes.
    #[error("{path} is neither an OCI image layout (oci-layout, index.json) nor a `docker save` archive or skopeo `dir:` copy (manifest.json); pass an image directory or a .tar made by `docker save`, `skopeo copy` or `umoci` (`hostd import` also takes a tar of a root file system, as `docker import` does)")]
    UnknownFormat {
        /// The path given to `import`.
        path: PathBuf,
    },
    /// The archive ends early or its tar structure is broken.
    #[error("archive {path} is truncated or corrupt ({detail}); copy it again")]
    CorruptArchive {
        /// The archive file.
        path: PathBuf,
        /// What the reader found.
        detail: String,
    },
    /// An entry of the import archive itself (not of a layer) has a path that
    /// escapes the archive.
    #[error("archive {path} has an unsafe entry {entry:?} ({reason}); refusing to import it")]
    UnsafeArchiveEntry {
        /// The archive file.
        path: PathBuf,
        /// The entry path as stored.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file the image format requires is missing from the source.
    #[error("image source lacks {file}; the archive is incomplete, export it again")]
    Missing {
        /// The file inside the source, e.g. `blobs/sha256/<hex>`.
        file: String,
    },
    /// A JSON document of the source (index, manifest, config) is invalid.
    #[error("{file} is not a valid {what}: {reason}")]
    BadJson {
        /// The file inside the source.
        file: String,
        /// What it should have been, e.g. "OCI image manifest".
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A JSON document is larger than the store is willing to parse.
    #[error("{file} is {size} bytes, more than the {limit} bytes allowed for a {what}")]
    TooLarge {
        /// The file inside the source.
        file: String,
        /// What it is.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The OCI layout declares a version this store does not read.
    #[error("unsupported OCI image layout version {version:?}; only 1.x layouts can be imported")]
    LayoutVersion {
        /// The `imageLayoutVersion` value.
        version: String,
    },
    /// A digest string is malformed or uses another algorithm than sha256.
    #[error(
        "invalid or unsupported digest {digest:?} in {context}; only sha256 digests are supported"
    )]
    BadDigest {
        /// The digest as written.
        digest: String,
        /// Where it was found.
        context: String,
    },
    /// Content does not hash to the digest that names it.
    #[error("{what} has digest {actual} but should have {expected}; the image is corrupt or was modified, fetch it again")]
    DigestMismatch {
        /// What was checked, e.g. "blob blobs/sha256/..." or "layer ... (uncompressed)".
        what: String,
        /// The digest the manifest or config promised.
        expected: String,
        /// The digest of the bytes actually read.
        actual: String,
    },
    /// Content is not as long as its descriptor says.
    #[error("{what} is {actual} bytes but its descriptor says {expected}; the image is corrupt, fetch it again")]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// The actual size.
        actual: u64,
    },
    /// The manifest and the config disagree on the number of layers.
    #[error("image {image} lists {layers} layers but its config has {diff_ids} diff_ids; the image is malformed")]
    LayerCount {
        /// The image (config digest).
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
    },
    /// A layer has a media type the store cannot unpack.
    #[error("layer {digest} has media type {media_type:?}, which hostd cannot unpack (encrypted or unknown layers are not supported)")]
    MediaType {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// An image index has no manifest for this machine.
    #[error("image index {digest} has no manifest for linux/{arch}; import an image built for this architecture")]
    NoPlatform {
        /// The index digest.
        digest: String,
        /// This machine's architecture in OCI spelling.
        arch: &'static str,
    },
    /// The source contains no image at all.
    #[error("{path} contains no image manifests")]
    Empty {
        /// The path given to `import`.
        path: PathBuf,
    },
    /// A name was given for a source that holds more than one image.
    #[error("cannot name the images of {path} {name:?}: it holds {images} images, and a name given on import is for a source of one image; import it without a name (its images keep the names it gives them)")]
    NameForMany {
        /// The path given to `import`.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// How many images the source holds.
        images: usize,
    },
    /// An image name from the source is unusable.
    #[error(
        "invalid image name {name:?}: names must be 1 to 255 printable characters without spaces"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A layer entry is unsafe and the whole image is refused.
    #[error("layer {layer}: entry {entry:?} {reason}; refusing to import the image")]
    UnsafeEntry {
        /// The layer's diff_id.
        layer: String,
        /// The entry path as stored in the tar.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A layer is not a readable tar stream.
    #[error(
        "layer {layer} is not a valid tar stream ({detail}); the image is corrupt, fetch it again"
    )]
    CorruptLayer {
        /// The layer's diff_id (or digest).
        layer: String,
        /// What the reader found.
        detail: String,
    },
    /// The layers of a source decompress to more than the caller allows
    /// (only [`super::archive_images`] sets a limit).
    #[error("the layers of {path} unpack to more than {limit} bytes (stopped in layer {layer}); the image is too large for this limit, or a decompression bomb")]
    UnpackLimit {
        /// The source.
        path: PathBuf,
        /// The layer being read (its diff_id) when the limit was passed.
        layer: String,
        /// The limit, in uncompressed bytes.
        limit: u64,
    },
    /// Creating an entry of a layer failed.
    #[error("cannot unpack entry {entry:?} of layer {layer}: {source}")]
    Unpack {
        /// The layer's diff_id.
        layer: String,
        /// The entry path.
        entry: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The store's file system cannot hold overlayfs metadata.
    #[error("cannot mark {entry:?} of layer {layer} as an opaque directory: {source}; the image store needs a file system with trusted.* xattrs (tmpfs, ext4, xfs) and must be used as root")]
    OverlayXattr {
        /// The layer's diff_id.
        layer: String,
        /// The directory.
        entry: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No image has that name or id.
    #[error("no image named {reference:?} or with that id; list the images to see what is there")]
    NotFound {
        /// What the caller asked for.
        reference: String,
    },
    /// A short id or short name matches more than one image.
    #[error("{reference:?} matches more than one image ({candidates}); use the full name or id")]
    Ambiguous {
        /// What the caller asked for.
        reference: String,
        /// The matching image ids, comma-separated.
        candidates: String,
    },
    /// An image refers to a layer directory that is gone.
    #[error("layer {diff_id} of image {image} is missing from the store ({path}); remove the image and import it again")]
    LayerMissing {
        /// The image id.
        image: String,
        /// The layer's diff_id.
        diff_id: String,
        /// The expected directory.
        path: PathBuf,
    },
}
