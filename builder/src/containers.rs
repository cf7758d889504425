//! Boot-time containers: a profile's `[[container]]` tables become image
//! archives embedded in the initramfs plus the manifest hostd reads when it
//! starts ([`BOOT_MANIFEST`], a [`BootManifest`]): it imports each archive
//! into its store, then starts each container once, by name.
//!
//! [`plan`] runs before the initramfs is assembled and reads every archive
//! once:
//!
//! 1. the path must be a regular file (a directory, fifo or device is
//!    refused before it is opened, so nothing can hang);
//! 2. it is hashed: archives are named by content,
//!    `/usr/share/hostd/images/<sha256>.tar`, and embedded once however many
//!    containers (or paths) name the same bytes;
//! 3. hostd's own store code lists its images ([`archive_images`]: format,
//!    index, manifests, configs and layer digests checked, every layer
//!    decompressed as a stream, checked against its diff_id and measured);
//!    the result is cached by sha256, so a warm build only hashes;
//! 4. each container's `image` is resolved among its archive's images with
//!    the store's rules (exact name, id or id prefix, docker-normalised
//!    name), and again among all archives in import order, as hostd's store
//!    will hold them at boot, where an image name belongs to the last
//!    archive that has it: a tag two archives share cannot silently start
//!    the wrong image.
//!
//! Images pulled at build time arrive here as the OCI layout tars
//! [`crate::pull`] made, like any archive. A container with `pull = "boot"`
//! has no archive: its request goes into the manifest as it is (image =
//! canonical reference, pull policy `missing`) and hostd pulls the image at
//! boot; its reference must not name an image of the embedded archives,
//! which hostd would start instead.
//!
//! The plan also sizes what hostd's store will hold in RAM once it has
//! imported the archives at boot ([`ContainerPlan::boot_store`]), for the
//! build's RAM budget.
//!
//! Everything is in profile order and nothing reads the clock, so the
//! manifest is as reproducible as the rest of the image.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mkhost_shared::container::{BootArchive, BootManifest, RunRequest};
use mkhost_shared::paths::{self, BOOT_MANIFEST};
use mkhost_store::{archive_images, normalize_name, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::profile::{ContainerSpec, Origin};
use mkhost_shared::hex::encode as hex;

/// The largest file a newc cpio entry holds.
const MAX_ARCHIVE: u64 = u32::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{origin}: container {name:?}: cannot read archive {path} (a relative `archive` is taken from the profile file's directory)")]
    Read {
        origin: Origin,
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{origin}: container {name:?}: archive {path} is a directory; embed a tar of it instead (tar -C DIR -cf IMAGE.tar .)")]
    Directory {
        origin: Origin,
        name: String,
        path: PathBuf,
    },
    #[error("{origin}: container {name:?}: archive {path} is {kind}, not a regular file; give a .tar made by docker save, skopeo or umoci")]
    NotRegular {
        origin: Origin,
        name: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("{origin}: container {name:?}: archive {path} is {size} bytes, more than an initramfs file can hold (4 GiB)")]
    TooLarge {
        origin: Origin,
        name: String,
        path: PathBuf,
        size: u64,
    },
    #[error("{origin}: container {name:?}: archive {path} is not a usable image archive (OCI layout tar, OCI archive or docker save tar)")]
    Unreadable {
        origin: Origin,
        name: String,
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("{origin}: container {name:?}: the layers of archive {path} unpack to more than {limit_mib} MiB (min_ram_mib), so hostd's store could not hold them at boot; raise min_ram_mib or use a smaller image")]
    UnpacksTooLarge {
        origin: Origin,
        name: String,
        path: PathBuf,
        limit_mib: u64,
    },
    #[error("{origin}: container {name:?}: image {image:?} not in archive {path} (it has: {available}); set `image` to one of these")]
    NotInArchive {
        origin: Origin,
        name: String,
        image: String,
        path: PathBuf,
        available: String,
    },
    #[error("{origin}: container {name:?}: image {image:?} matches more than one image of archive {path} ({candidates}); use the full name or id")]
    Ambiguous {
        origin: Origin,
        name: String,
        image: String,
        path: PathBuf,
        candidates: String,
    },
    #[error("{origin}: container {name:?}: image {image:?} names an image of {path}, but at boot it would mean {other_image} from archive {other_path} ({other_origin}), which hostd imports after it; give the images distinct names, or use the id {id}")]
    Shadowed {
        origin: Origin,
        name: String,
        image: String,
        path: PathBuf,
        id: String,
        other_image: String,
        other_path: PathBuf,
        other_origin: Origin,
    },
    #[error("{origin}: container {name:?}: image {image:?} is pulled at boot (pull = \"boot\"), but it names an image of archive {other_path} ({other_origin}), which hostd imports first and would start instead; embed it or give the images distinct names")]
    BootShadowed {
        origin: Origin,
        name: String,
        image: String,
        other_path: PathBuf,
        other_origin: Origin,
    },
    #[error("cannot create a scratch directory under {path} for reading image archives")]
    Scratch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One image of an archive: its id (config digest), names and what hostd's
/// store keeps of it (as [`mkhost_store::ArchiveImage`] reports it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveImage {
    pub id: String,
    pub names: Vec<String>,
    /// Bytes of its config and manifest blobs.
    pub meta_bytes: u64,
    /// Its layers, bottom first.
    pub layers: Vec<ArchiveLayer>,
}

/// One layer of an [`ArchiveImage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveLayer {
    /// The blob's digest (`sha256:...`, maybe of compressed bytes).
    pub digest: String,
    pub blob_bytes: u64,
    /// The digest of the uncompressed tar stream (`sha256:...`).
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub unpacked_bytes: u64,
}

/// What hostd's image store holds once it has imported every embedded
/// archive at boot; it lives under /var/lib/hostd, in RAM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootStore {
    /// Blobs the store keeps: each distinct layer blob (by digest) and each
    /// distinct image's config and manifest.
    pub blob_bytes: u64,
    /// Unpacked layers: the uncompressed size of each distinct layer (by
    /// diff_id).
    pub unpacked_bytes: u64,
}

impl BootStore {
    pub fn bytes(&self) -> u64 {
        self.blob_bytes + self.unpacked_bytes
    }
}

/// An archive as it goes into the image.
#[derive(Debug, Clone)]
pub struct EmbeddedArchive {
    pub sha256: String,
    pub bytes: u64,
    /// The file on the build host (the first path that had these bytes).
    pub source: PathBuf,
    pub images: Vec<ArchiveImage>,
    /// The container table that first named it (for messages).
    origin: Origin,
}

impl EmbeddedArchive {
    /// Path inside the image, without the leading `/`.
    pub fn dest(&self) -> String {
        format!(
            "{}/{}.tar",
            paths::in_archive(paths::BOOT_IMAGES_DIR),
            self.sha256
        )
    }
}

/// A container with what its image resolved to.
#[derive(Debug, Clone)]
pub struct PlannedContainer {
    pub request: RunRequest,
    /// Index into [`ContainerPlan::archives`]; `None` when hostd pulls the
    /// image at boot.
    pub archive: Option<usize>,
    /// The image's id (`sha256:...`); `None` when hostd pulls the image at
    /// boot.
    pub image_id: Option<String>,
}

/// Everything the build embeds for boot-time containers.
#[derive(Debug, Clone, Default)]
pub struct ContainerPlan {
    /// Distinct archives, in the order the profile first names them.
    pub archives: Vec<EmbeddedArchive>,
    /// In profile order.
    pub containers: Vec<PlannedContainer>,
}

impl ContainerPlan {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// Sum of the archive sizes.
    pub fn bytes(&self) -> u64 {
        self.archives.iter().map(|a| a.bytes).sum()
    }

    /// What hostd's store holds after importing the archives at boot. hostd
    /// imports every image of an archive, not only those the containers
    /// use, so every image of every embedded archive counts; what two
    /// archives or images share (an image, a layer blob, a diff_id) is
    /// stored, and counted, once.
    pub fn boot_store(&self) -> BootStore {
        let mut metas: BTreeMap<&str, u64> = BTreeMap::new();
        let mut blobs: BTreeMap<&str, u64> = BTreeMap::new();
        let mut unpacked: BTreeMap<&str, u64> = BTreeMap::new();
        for image in self.archives.iter().flat_map(|a| &a.images) {
            metas.insert(&image.id, image.meta_bytes);
            for layer in &image.layers {
                blobs.insert(&layer.digest, layer.blob_bytes);
                unpacked.insert(&layer.diff_id, layer.unpacked_bytes);
            }
        }
        BootStore {
            blob_bytes: metas.values().chain(blobs.values()).sum(),
            unpacked_bytes: unpacked.values().sum(),
        }
    }

    /// The manifest hostd reads at [`BOOT_MANIFEST`].
    pub fn manifest(&self) -> BootManifest {
        BootManifest {
            archives: self
                .archives
                .iter()
                .map(|a| BootArchive {
                    path: format!("/{}", a.dest()),
                    sha256: a.sha256.clone(),
                })
                .collect(),
            containers: self.containers.iter().map(|c| c.request.clone()).collect(),
        }
    }

    /// The manifest as it goes into the image: pretty JSON and a newline.
    pub fn manifest_json(&self) -> Vec<u8> {
        let mut json =
            serde_json::to_vec_pretty(&self.manifest()).expect("the boot manifest serialises");
        json.push(b'\n');
        json
    }

    /// [`BOOT_MANIFEST`] without the leading `/`.
    pub fn manifest_dest() -> &'static str {
        BOOT_MANIFEST.trim_start_matches('/')
    }
}

/// Checks and hashes every archive the profile's containers name, lists their
/// images and resolves each container's image (see the module docs).
/// `cache_root` holds image listings by archive sha256 and the scratch space
/// for reading archives; an archive whose layers unpack to more than
/// `min_ram_mib` is refused without reading further (a decompression bomb
/// stops there); `progress` gets (bytes hashed, bytes to hash).
pub fn plan(
    specs: &[ContainerSpec],
    cache_root: &Path,
    min_ram_mib: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<ContainerPlan, Box<ContainerError>> {
    // 1. Every path once: a regular file of a size a cpio entry can hold.
    let embedded = || specs.iter().filter(|s| !s.pulled_at_boot());
    let mut sizes: BTreeMap<&Path, u64> = BTreeMap::new();
    for spec in embedded() {
        if !sizes.contains_key(spec.archive.as_path()) {
            sizes.insert(&spec.archive, check_file(spec)?);
        }
    }
    let total: u64 = sizes.values().sum();

    // 2. Hash each path; archives with the same bytes become one.
    let mut plan = ContainerPlan::default();
    let mut by_path: BTreeMap<&Path, usize> = BTreeMap::new();
    let mut done = 0;
    progress(0, total);
    for spec in embedded() {
        if by_path.contains_key(spec.archive.as_path()) {
            continue;
        }
        let (sha256, bytes) = hash_file(spec, &mut |n| {
            done += n;
            progress(done, total);
        })?;
        let index = match plan.archives.iter().position(|a| a.sha256 == sha256) {
            Some(i) => i,
            None => {
                plan.archives.push(EmbeddedArchive {
                    sha256,
                    bytes,
                    source: spec.archive.clone(),
                    images: Vec::new(),
                    origin: spec.origin.clone(),
                });
                plan.archives.len() - 1
            }
        };
        by_path.insert(&spec.archive, index);
    }

    // 3. The images of each archive, as hostd's store reads them.
    for (index, archive) in plan.archives.iter_mut().enumerate() {
        let spec = specs
            .iter()
            .find(|s| by_path.get(s.archive.as_path()) == Some(&index))
            .expect("every archive comes from a container");
        archive.images = list_images(spec, &archive.sha256, cache_root, min_ram_mib)?;
    }

    // 4. Each image in its own archive, then among all of them.
    let at_boot = import_all(&plan.archives);
    for spec in specs {
        if spec.pulled_at_boot() {
            let hit = match resolve(&at_boot, &spec.request.image) {
                Resolved::One(i) => Some(at_boot[i].archive),
                Resolved::Many(hits) => hits.first().map(|&i| at_boot[i].archive),
                Resolved::None => None,
            };
            if let Some(other) = hit {
                let other = &plan.archives[other];
                return Err(ContainerError::BootShadowed {
                    origin: spec.image_origin.clone(),
                    name: spec.name().to_owned(),
                    image: spec.request.image.clone(),
                    other_path: other.source.clone(),
                    other_origin: other.origin.clone(),
                }
                .into());
            }
            plan.containers.push(PlannedContainer {
                request: spec.request.clone(),
                archive: None,
                image_id: None,
            });
            continue;
        }
        let index = by_path[spec.archive.as_path()];
        let archive = &plan.archives[index];
        let own = import_all(std::slice::from_ref(archive));
        let image_id = match resolve(&own, &spec.request.image) {
            Resolved::One(i) => own[i].image.id.clone(),
            Resolved::None => {
                return Err(ContainerError::NotInArchive {
                    origin: spec.image_origin.clone(),
                    name: spec.name().to_owned(),
                    image: spec.request.image.clone(),
                    path: spec.archive.clone(),
                    available: describe_images(&archive.images),
                }
                .into())
            }
            Resolved::Many(hits) => {
                return Err(ContainerError::Ambiguous {
                    origin: spec.image_origin.clone(),
                    name: spec.name().to_owned(),
                    image: spec.request.image.clone(),
                    path: spec.archive.clone(),
                    candidates: hits
                        .iter()
                        .map(|&i| own[i].image.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into())
            }
        };
        // At boot the store holds every archive; the name must still lead here.
        let other = match resolve(&at_boot, &spec.request.image) {
            Resolved::One(i) if at_boot[i].image.id == image_id => None,
            Resolved::One(i) => Some((describe_image(&at_boot[i].image), at_boot[i].archive)),
            Resolved::Many(hits) => hits
                .iter()
                .find(|&&i| at_boot[i].image.id != image_id)
                .map(|&i| ("more than one image".to_owned(), at_boot[i].archive)),
            Resolved::None => Some(("no image".to_owned(), index)),
        };
        if let Some((other_image, other)) = other {
            let other = &plan.archives[other];
            return Err(ContainerError::Shadowed {
                origin: spec.image_origin.clone(),
                name: spec.name().to_owned(),
                image: spec.request.image.clone(),
                path: spec.archive.clone(),
                id: image_id,
                other_image,
                other_path: other.source.clone(),
                other_origin: other.origin.clone(),
            }
            .into());
        }
        plan.containers.push(PlannedContainer {
            // The image is embedded: hostd must never go to a registry for
            // it (a name like `bb` would mean docker.io/library/bb).
            request: RunRequest {
                pull: mkhost_shared::container::PullPolicy::Never,
                ..spec.request.clone()
            },
            archive: Some(index),
            image_id: Some(image_id),
        });
    }
    Ok(plan)
}

/// The archive's size, if it is a regular file (following symlinks).
fn check_file(spec: &ContainerSpec) -> Result<u64, Box<ContainerError>> {
    let meta = fs::metadata(&spec.archive).map_err(|source| read_err(spec, source))?;
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(ContainerError::Directory {
            origin: spec.archive_origin.clone(),
            name: spec.name().to_owned(),
            path: spec.archive.clone(),
        }
        .into());
    }
    if !kind.is_file() {
        return Err(not_regular(spec, &kind).into());
    }
    if meta.len() > MAX_ARCHIVE {
        return Err(ContainerError::TooLarge {
            origin: spec.archive_origin.clone(),
            name: spec.name().to_owned(),
            path: spec.archive.clone(),
            size: meta.len(),
        }
        .into());
    }
    Ok(meta.len())
}

fn not_regular(spec: &ContainerSpec, kind: &fs::FileType) -> ContainerError {
    ContainerError::NotRegular {
        origin: spec.archive_origin.clone(),
        name: spec.name().to_owned(),
        path: spec.archive.clone(),
        kind: crate::input_file::kind_of(kind),
    }
}

fn read_err(spec: &ContainerSpec, source: io::Error) -> ContainerError {
    ContainerError::Read {
        origin: spec.archive_origin.clone(),
        name: spec.name().to_owned(),
        path: spec.archive.clone(),
        source,
    }
}

/// sha256 and size of the archive. Opened non-blocking and checked again
/// after opening, so a file swapped for a fifo since [`check_file`] cannot
/// hang the build.
fn hash_file(
    spec: &ContainerSpec,
    advance: &mut dyn FnMut(u64),
) -> Result<(String, u64), Box<ContainerError>> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&spec.archive)
        .map_err(|source| read_err(spec, source))?;
    let kind = file
        .metadata()
        .map_err(|source| read_err(spec, source))?
        .file_type();
    if !kind.is_file() {
        return Err(not_regular(spec, &kind).into());
    }
    Ok(hash_reader(&mut file, advance).map_err(|source| read_err(spec, source))?)
}

fn hash_reader(file: &mut File, advance: &mut dyn FnMut(u64)) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        advance(n as u64);
        if total > MAX_ARCHIVE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the file grew past 4 GiB while it was read",
            ));
        }
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Version of the cached listing's format: part of its file name, so a
/// listing written by an older format (without layer sizes) is never read.
const LISTING_FORMAT: u32 = 2;

/// The images of an archive, from the cache or read with hostd's store code
/// (refused if its layers unpack to more than `limit_mib`).
fn list_images(
    spec: &ContainerSpec,
    sha256: &str,
    cache_root: &Path,
    limit_mib: u64,
) -> Result<Vec<ArchiveImage>, Box<ContainerError>> {
    // The listing depends only on the bytes and on the store code of this
    // version; the limit only decides whether there is one.
    let cached = cache_root.join("images").join(format!(
        "{sha256}-v{}-{LISTING_FORMAT}.json",
        env!("CARGO_PKG_VERSION")
    ));
    if let Ok(text) = fs::read(&cached) {
        if let Ok(images) = serde_json::from_slice::<Vec<ArchiveImage>>(&text) {
            return Ok(images);
        }
    }
    let scratch_err = |source| ContainerError::Scratch {
        path: cache_root.to_owned(),
        source,
    };
    fs::create_dir_all(cache_root).map_err(scratch_err)?;
    let scratch = tempfile::Builder::new()
        .prefix(".archive-")
        .tempdir_in(cache_root)
        .map_err(scratch_err)?;
    let limit = limit_mib.saturating_mul(1 << 20);
    let images = archive_images(&spec.archive, scratch.path(), limit)
        .map_err(|source| match source {
            StoreError::UnpackLimit { .. } => ContainerError::UnpacksTooLarge {
                origin: spec.archive_origin.clone(),
                name: spec.name().to_owned(),
                path: spec.archive.clone(),
                limit_mib,
            },
            source => ContainerError::Unreadable {
                origin: spec.archive_origin.clone(),
                name: spec.name().to_owned(),
                path: spec.archive.clone(),
                source,
            },
        })?
        .into_iter()
        .map(|i| ArchiveImage {
            id: i.id.to_string(),
            names: i.names,
            meta_bytes: i.meta_bytes,
            layers: i
                .layers
                .into_iter()
                .map(|l| ArchiveLayer {
                    digest: l.digest.to_string(),
                    blob_bytes: l.blob_bytes,
                    diff_id: l.diff_id.to_string(),
                    unpacked_bytes: l.unpacked_bytes,
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    if let Some(dir) = cached.parent() {
        if fs::create_dir_all(dir).is_ok() {
            if let Ok(json) = serde_json::to_vec(&images) {
                let _ = mkhost_shared::fs::write_atomic(&cached, &json, 0o644);
            }
        }
    }
    Ok(images)
}

/// An image as hostd's store holds it after importing archives.
#[derive(Debug, Clone)]
struct StoredImage {
    image: ArchiveImage,
    /// The archive that last brought it.
    archive: usize,
}

/// The store after importing `archives` in order into an empty store: as
/// `docker load` does, a name moves to the last image imported with it.
fn import_all(archives: &[EmbeddedArchive]) -> Vec<StoredImage> {
    let mut store: Vec<StoredImage> = Vec::new();
    for (index, archive) in archives.iter().enumerate() {
        for image in &archive.images {
            for name in &image.names {
                let norm = normalize_name(name);
                for other in store.iter_mut().filter(|s| s.image.id != image.id) {
                    other.image.names.retain(|n| normalize_name(n) != norm);
                }
            }
            match store.iter_mut().find(|s| s.image.id == image.id) {
                Some(existing) => {
                    for name in &image.names {
                        if !existing.image.names.contains(name) {
                            existing.image.names.push(name.clone());
                        }
                    }
                    existing.archive = index;
                }
                None => store.push(StoredImage {
                    image: image.clone(),
                    archive: index,
                }),
            }
        }
    }
    store
}

enum Resolved {
    One(usize),
    None,
    Many(Vec<usize>),
}

/// Finds what `reference` names the way hostd's store does: an exact name,
/// then a full id or an id prefix of at least 4 hex digits, then a name equal
/// after docker-style normalisation.
fn resolve(store: &[StoredImage], reference: &str) -> Resolved {
    if reference.is_empty() {
        return Resolved::None;
    }
    if let Some(i) = store
        .iter()
        .position(|s| s.image.names.iter().any(|n| n == reference))
    {
        return Resolved::One(i);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hex = hex.to_ascii_lowercase();
        let hits: Vec<usize> = (0..store.len())
            .filter(|&i| {
                store[i]
                    .image
                    .id
                    .strip_prefix("sha256:")
                    .is_some_and(|id| id.starts_with(&hex))
            })
            .collect();
        match hits.len() {
            0 => {}
            1 => return Resolved::One(hits[0]),
            _ => return Resolved::Many(hits),
        }
    }
    let wanted = normalize_name(reference);
    let hits: Vec<usize> = (0..store.len())
        .filter(|&i| {
            store[i]
                .image
                .names
                .iter()
                .any(|n| normalize_name(n) == wanted)
        })
        .collect();
    match hits.len() {
        0 => Resolved::None,
        1 => Resolved::One(hits[0]),
        _ => Resolved::Many(hits),
    }
}

fn describe_image(image: &ArchiveImage) -> String {
    match image.names.as_slice() {
        [] => format!("{} (no name)", image.id),
        names => names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn describe_images(images: &[ArchiveImage]) -> String {
    images
        .iter()
        .map(describe_image)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(hex_digit: char, names: &[&str]) -> ArchiveImage {
        ArchiveImage {
            id: format!("sha256:{}", hex_digit.to_string().repeat(64)),
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            meta_bytes: 0,
            layers: Vec::new(),
        }
    }

    /// A layer whose blob is `blob` and diff_id `diff` (hex digits repeated).
    fn layer(blob: char, blob_bytes: u64, diff: char, unpacked_bytes: u64) -> ArchiveLayer {
        ArchiveLayer {
            digest: format!("sha256:{}", blob.to_string().repeat(64)),
            blob_bytes,
            diff_id: format!("sha256:{}", diff.to_string().repeat(64)),
            unpacked_bytes,
        }
    }

    fn archive(images: Vec<ArchiveImage>) -> EmbeddedArchive {
        EmbeddedArchive {
            sha256: "0".repeat(64),
            bytes: 0,
            source: PathBuf::from("a.tar"),
            images,
            origin: Origin {
                file: PathBuf::from("p.toml"),
                line: 1,
                column: 1,
            },
        }
    }

    fn hit(store: &[StoredImage], reference: &str) -> Option<(String, usize)> {
        match resolve(store, reference) {
            Resolved::One(i) => Some((store[i].image.id[7..8].to_owned(), store[i].archive)),
            _ => None,
        }
    }

    #[test]
    fn references_resolve_like_the_store() {
        let store = import_all(&[archive(vec![
            image('a', &["busybox:latest", "v1"]),
            image('b', &["docker.io/library/alpine:3"]),
        ])]);
        assert_eq!(hit(&store, "busybox"), Some(("a".into(), 0)));
        assert_eq!(
            hit(&store, "docker.io/library/busybox:latest"),
            Some(("a".into(), 0))
        );
        assert_eq!(hit(&store, "v1"), Some(("a".into(), 0)));
        assert_eq!(hit(&store, "alpine:3"), Some(("b".into(), 0)));
        assert_eq!(hit(&store, "bbbb"), Some(("b".into(), 0)));
        assert_eq!(
            hit(&store, &format!("sha256:{}", "a".repeat(64))),
            Some(("a".into(), 0))
        );
        assert_eq!(hit(&store, "alpine"), None, "alpine:latest is not alpine:3");
        assert_eq!(hit(&store, "abc"), None, "id prefixes need 4 digits");
    }

    #[test]
    fn a_later_archive_takes_a_shared_name() {
        let store = import_all(&[
            archive(vec![image('a', &["latest", "web:1"])]),
            archive(vec![image('b', &["latest"])]),
            archive(vec![image('a', &["again"])]),
        ]);
        // "latest" moved to b; a is still reachable by its other names and id.
        assert_eq!(hit(&store, "latest"), Some(("b".into(), 1)));
        assert_eq!(hit(&store, "web:1"), Some(("a".into(), 2)));
        assert_eq!(hit(&store, "again"), Some(("a".into(), 2)));
        assert_eq!(store.len(), 2);
        assert!(matches!(resolve(&store, "aaaa"), Resolved::One(_)));
    }

    #[test]
    fn manifest_lists_archives_and_requests_in_order() {
        let mut plan = ContainerPlan::default();
        assert!(plan.is_empty());
        let mut a = archive(vec![image('a', &["bb"])]);
        a.sha256 = "ab".repeat(32);
        plan.archives.push(a);
        plan.containers.push(PlannedContainer {
            request: RunRequest {
                image: "bb".into(),
                name: Some("web".into()),
                ..RunRequest::default()
            },
            archive: Some(0),
            image_id: Some(format!("sha256:{}", "a".repeat(64))),
        });
        let json = String::from_utf8(plan.manifest_json()).unwrap();
        let back: BootManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.archives[0].path,
            format!("/usr/share/hostd/images/{}.tar", "ab".repeat(32))
        );
        assert_eq!(back.containers[0].name.as_deref(), Some("web"));
        assert_eq!(ContainerPlan::manifest_dest(), "etc/hostd/containers.json");
    }

    #[test]
    fn boot_store_counts_every_image_and_shared_parts_once() {
        let mut plan = ContainerPlan::default();
        assert_eq!(plan.boot_store(), BootStore::default());

        // Archive 1: image a (base layer 1 + app layer 2) and image b (base
        // layer 1 alone, an image no container uses: hostd imports it too).
        let mut a = image('a', &["app"]);
        a.meta_bytes = 1_000;
        a.layers = vec![layer('1', 100, 'd', 10_000), layer('2', 200, 'e', 20_000)];
        let mut b = image('b', &["base"]);
        b.meta_bytes = 500;
        b.layers = vec![layer('1', 100, 'd', 10_000)];
        plan.archives.push(archive(vec![a.clone(), b]));
        // Archive 2: image a again (same id), and image c whose layer is the
        // base layer compressed differently (another blob, the same diff_id).
        let mut c = image('c', &["other"]);
        c.meta_bytes = 700;
        c.layers = vec![layer('3', 150, 'd', 10_000)];
        plan.archives.push(archive(vec![a, c]));

        let store = plan.boot_store();
        assert_eq!(store.blob_bytes, 1_000 + 500 + 700 + 100 + 200 + 150);
        assert_eq!(store.unpacked_bytes, 10_000 + 20_000);
        assert_eq!(store.bytes(), 2_650 + 30_000);
    }
}
