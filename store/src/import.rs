//! `Store::import`: read an OCI layout, `docker save` archive, skopeo `dir:`
//! copy or root file system tar, verify it, unpack its new layers in
//! staging, then commit everything with renames.
//!
//! The pipeline, all under the store lock:
//!
//! 1. open the source (an archive is staged file by file, hashed on the way;
//!    a root file system tar is staged whole);
//! 2. find the images: `index.json` (following image indexes to this
//!    machine's platform), `manifest.json` (a JSON array: `docker save`; an
//!    object: the one image manifest of a skopeo `dir:` copy), or, for a
//!    root file system, one image whose config is made from the tar
//!    (`rootfs.rs`); a name the caller gives is added to the one image;
//! 3. for each image not already in the store: verify manifest and config
//!    against their digests, then each layer blob against its digest and,
//!    decompressed, against the config's diff_id, unpacking layers the store
//!    does not have yet into staging directories;
//! 4. commit: rename new blobs and layer directories into place, flush the
//!    file system, replace `index.json`. Any error before the index is
//!    replaced removes what was renamed in; the staging directory always goes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::digest::{Digest, HashingReader};
use super::error::StoreError;
use super::index::{valid_name, ImageRecord, IndexFile, LayerMeta, LayerRecord};
use super::rootfs::rootfs_config;
use super::source::{normalize, Source, StagedFile, Staging, ROOTFS_LAYER};
use super::spec::{self, ConfigFile, Descriptor, DockerSaveEntry, Index, Manifest};
use super::unpack::{decompressed, unpack_layer};
use super::Store;
use super::{ImportReport, ImportedImage};

/// Largest JSON document (index, manifest, config) the store parses.
const JSON_LIMIT: u64 = 8 << 20;
/// How deep image indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

/// An image as found in the source, manifest and config verified.
struct SourceImage {
    names: Vec<String>,
    id: Digest,
    config: StagedFile,
    parsed: ConfigFile,
    diff_ids: Vec<Digest>,
    /// The manifest blob, or `None` for `docker save` archives (the store
    /// writes one).
    manifest: Option<StagedFile>,
    layers: Vec<SourceLayer>,
}

/// A layer as the manifest (or `manifest.json`) lists it.
struct SourceLayer {
    /// Path inside the source.
    file: String,
    /// The digest the manifest promises, if it names one.
    digest: Option<Digest>,
    /// The size the manifest promises, if any.
    size: Option<u64>,
    /// Media type from the manifest (`None`: detect from the content).
    media_type: Option<String>,
}

/// Things staged for commit.
#[derive(Default)]
struct Pending {
    blobs: BTreeMap<Digest, PathBuf>,
    layers: BTreeMap<Digest, (PathBuf, LayerMeta)>,
}

pub(crate) fn import(
    store: &Store,
    path: &Path,
    name: Option<&str>,
) -> Result<ImportReport, StoreError> {
    if let Some(name) = name.filter(|n| !valid_name(n)) {
        return Err(StoreError::InvalidName {
            name: name.to_owned(),
        });
    }
    let _lock = store.lock()?;
    let staging = Staging::create(&store.tmp_dir(), "import")?;
    let source = Source::open(path, &staging, store.owns_incoming(path))?;
    let mut images = source_images(&source, &staging, path)?;
    if let Some(name) = name {
        let [image] = images.as_mut_slice() else {
            return Err(StoreError::NameForMany {
                path: path.to_owned(),
                name: name.to_owned(),
                images: images.len(),
            });
        };
        if !image.names.iter().any(|n| n == name) {
            image.names.push(name.to_owned());
        }
    }

    let mut index = IndexFile::load(&store.index_path())?;
    let mut pending = Pending::default();
    let mut report = ImportReport::default();
    let mut records = Vec::new();
    for image in images {
        for name in &image.names {
            if !valid_name(name) {
                return Err(StoreError::InvalidName { name: name.clone() });
            }
        }
        let known = index
            .images
            .iter()
            .chain(records.iter())
            .find(|r| r.id == image.id)
            .cloned();
        report.images.push(ImportedImage {
            id: image.id.to_string(),
            names: image.names.clone(),
            new: known.is_none(),
        });
        if let Some(mut r) = known {
            // Only the names are new; the blobs are not needed.
            r.names = image.names;
            records.push(r);
            continue;
        }
        records.push(stage_image(
            store,
            &source,
            &staging,
            image,
            &mut pending,
            &mut report,
        )?);
    }

    commit(store, &staging, &mut index, pending, records, &mut report)?;
    Ok(report)
}

/// The images of an opened source, by its format; at least one.
fn source_images(
    source: &Source,
    staging: &Staging,
    path: &Path,
) -> Result<Vec<SourceImage>, StoreError> {
    let images = if let Source::Rootfs { blob } = source {
        vec![rootfs_image(blob, staging, path)?]
    } else if source.exists("manifest.json") {
        read_manifest_json(source, staging)?
    } else if source.exists("index.json") || source.exists("oci-layout") {
        read_oci(source, staging)?
    } else {
        return Err(StoreError::UnknownFormat {
            path: path.to_owned(),
        });
    };
    if images.is_empty() {
        return Err(StoreError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(images)
}

/// One image of an archive, as [`archive_images`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveImage {
    /// The image id (config digest).
    pub id: Digest,
    /// The names the archive gives it (may be empty: use the id).
    pub names: Vec<String>,
    /// Bytes of the config and manifest blobs the store keeps for it (for a
    /// `docker save` image, the config alone: the store writes a manifest of
    /// a few hundred bytes).
    pub meta_bytes: u64,
    /// Its layers, bottom first.
    pub layers: Vec<ArchiveLayer>,
}

/// One layer of an [`ArchiveImage`], verified and measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveLayer {
    /// The layer blob's digest (as stored, maybe compressed).
    pub digest: Digest,
    /// Bytes of the layer blob, as the store keeps it.
    pub blob_bytes: u64,
    /// The digest of the uncompressed tar stream, verified.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream: what unpacking it writes, plus
    /// tar headers and padding.
    pub unpacked_bytes: u64,
}

/// The images an archive (or OCI layout directory) holds, with their ids,
/// names and layer sizes, read as [`Store::import`] reads them but without a
/// store: the format, index, manifests, configs and names are checked, every
/// layer blob whose descriptor names a digest is verified against it, and
/// every layer is decompressed as a stream (gzip, zstd or plain) and checked
/// against its config's diff_id, counting the uncompressed bytes. Layers are
/// not unpacked and nothing of them is kept in memory; each distinct layer
/// blob is decompressed once.
///
/// `max_unpacked` bounds the uncompressed bytes read from all layers: past
/// it the listing stops with [`StoreError::UnpackLimit`], so a decompression
/// bomb costs at most that much reading. `scratch` is an existing directory
/// the source's files are staged in meanwhile. mkhost uses this to check a
/// profile's boot-time containers at build time with the store's own rules,
/// and to size the store they make at boot.
///
/// `path` must not be a fifo or a device: like an import, this reads it to
/// the end. A root file system tar, which an import makes an unnamed image
/// of, is [`StoreError::UnknownFormat`] here.
pub fn archive_images(
    path: &Path,
    scratch: &Path,
    max_unpacked: u64,
) -> Result<Vec<ArchiveImage>, StoreError> {
    let staging = Staging::create(scratch, "list")?;
    let source = Source::open(path, &staging, false)?;
    if let Source::Rootfs { .. } = source {
        // Its image would have no name to find it by: build-time checks
        // take image archives only.
        return Err(StoreError::UnknownFormat {
            path: path.to_owned(),
        });
    }
    let images = source_images(&source, &staging, path)?;
    // Layer blob digest -> its uncompressed digest and size.
    let mut measured: BTreeMap<Digest, (Digest, u64)> = BTreeMap::new();
    let mut unpacked_total = 0u64;
    let mut listed = Vec::new();
    for image in images {
        if let Some(name) = image.names.iter().find(|n| !valid_name(n)) {
            return Err(StoreError::InvalidName { name: name.clone() });
        }
        check_layer_count(&image)?;
        let mut layers = Vec::new();
        for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
            let staged = source.stage(&layer.file, &staging)?;
            if let Some(digest) = &layer.digest {
                check_blob(&staged, digest, layer.size, &layer.file)?;
            }
            let (actual, bytes) = match measured.get(&staged.digest) {
                Some(known) => known.clone(),
                None => {
                    let limit = max_unpacked.saturating_sub(unpacked_total);
                    let Some(m) = measure_layer(&staged, diff_id, limit)? else {
                        return Err(StoreError::UnpackLimit {
                            path: path.to_owned(),
                            layer: diff_id.to_string(),
                            limit: max_unpacked,
                        });
                    };
                    unpacked_total += m.1;
                    measured.insert(staged.digest.clone(), m.clone());
                    m
                }
            };
            if &actual != diff_id {
                return Err(layer_mismatch(&staged, &layer.file, diff_id, &actual));
            }
            layers.push(ArchiveLayer {
                digest: staged.digest,
                blob_bytes: staged.size,
                diff_id: actual,
                unpacked_bytes: bytes,
            });
        }
        listed.push(ArchiveImage {
            id: image.id,
            names: image.names,
            meta_bytes: image.config.size + image.manifest.as_ref().map_or(0, |m| m.size),
            layers,
        });
    }
    Ok(listed)
}

/// Decompresses the staged layer blob as a stream and returns the digest
/// and length of its tar stream; `None` once it passes `limit` bytes (the
/// rest is not read).
fn measure_layer(
    staged: &StagedFile,
    diff_id: &Digest,
    limit: u64,
) -> Result<Option<(Digest, u64)>, StoreError> {
    let corrupt = corrupt_layer(diff_id);
    let file = File::open(&staged.path).map_err(|source| StoreError::Read {
        path: staged.path.clone(),
        source,
    })?;
    let (_, reader) = decompressed(BufReader::new(file)).map_err(&corrupt)?;
    let (digest, bytes) = HashingReader::new(reader.take(limit.saturating_add(1)))
        .finish()
        .map_err(&corrupt)?;
    Ok((bytes <= limit).then_some((digest, bytes)))
}

/// The error for a layer stream that cannot be decompressed or read.
fn corrupt_layer(diff_id: &Digest) -> impl Fn(std::io::Error) -> StoreError {
    let shown = diff_id.to_string();
    move |e| StoreError::CorruptLayer {
        layer: shown.clone(),
        detail: e.to_string(),
    }
}

/// The error for a layer whose uncompressed content is not its diff_id.
fn layer_mismatch(
    staged: &StagedFile,
    file: &str,
    diff_id: &Digest,
    actual: &Digest,
) -> StoreError {
    StoreError::DigestMismatch {
        what: format!("layer {} ({file}) uncompressed", staged.digest),
        expected: diff_id.to_string(),
        actual: actual.to_string(),
    }
}

/// Every layer needs its diff_id in the config, and no more.
fn check_layer_count(image: &SourceImage) -> Result<(), StoreError> {
    if image.layers.len() != image.diff_ids.len() {
        return Err(StoreError::LayerCount {
            image: image.id.to_string(),
            layers: image.layers.len(),
            diff_ids: image.diff_ids.len(),
        });
    }
    Ok(())
}

/// Verifies and stages the blobs and new layers of one image.
fn stage_image(
    store: &Store,
    source: &Source,
    staging: &Staging,
    image: SourceImage,
    pending: &mut Pending,
    report: &mut ImportReport,
) -> Result<ImageRecord, StoreError> {
    check_layer_count(&image)?;
    let mut layers = Vec::new();
    for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
        layers.push(stage_layer(
            store, source, staging, layer, diff_id, pending, report,
        )?);
    }
    let manifest = match image.manifest {
        Some(m) => m,
        None => synthesize_manifest(staging, &image.config, &layers)?,
    };
    for blob in [&manifest, &image.config] {
        if !store.blob_path(&blob.digest).exists() {
            pending.blobs.insert(blob.digest.clone(), blob.path.clone());
        }
    }
    Ok(ImageRecord {
        id: image.id,
        names: image.names,
        manifest: manifest.digest,
        layers,
        architecture: image.parsed.architecture,
        os: image.parsed.os,
        created: image.parsed.created,
    })
}

fn stage_layer(
    store: &Store,
    source: &Source,
    staging: &Staging,
    layer: &SourceLayer,
    diff_id: &Digest,
    pending: &mut Pending,
    report: &mut ImportReport,
) -> Result<LayerRecord, StoreError> {
    let have_layer = store.layer_path(diff_id).exists() || pending.layers.contains_key(diff_id);
    if let (Some(digest), Some(media_type)) = (&layer.digest, &layer.media_type) {
        let have_blob = store.blob_path(digest).exists() || pending.blobs.contains_key(digest);
        if have_blob && have_layer {
            let size = match layer.size {
                Some(s) => s,
                None => fs::metadata(store.blob_path(digest)).map_or(0, |m| m.len()),
            };
            return Ok(LayerRecord {
                digest: digest.clone(),
                diff_id: diff_id.clone(),
                media_type: media_type.clone(),
                size,
            });
        }
    }

    let staged = source.stage(&layer.file, staging)?;
    if let Some(digest) = &layer.digest {
        check_blob(&staged, digest, layer.size, &layer.file)?;
    }

    let shown = diff_id.to_string();
    let corrupt = corrupt_layer(diff_id);
    let file = File::open(&staged.path).map_err(|source| StoreError::Read {
        path: staged.path.clone(),
        source,
    })?;
    let (compression, reader) = decompressed(BufReader::new(file)).map_err(&corrupt)?;
    let reader = HashingReader::new(reader);
    let (actual, new_dir) = if have_layer {
        (reader.finish().map_err(&corrupt)?.0, None)
    } else {
        let dir = staging.path("layer");
        fs::create_dir(&dir).map_err(|source| StoreError::Write {
            path: dir.clone(),
            source,
        })?;
        let (stats, reader) = unpack_layer(reader, &dir, &shown)?;
        report.skipped.extend(stats.skipped);
        report.xattrs_dropped += stats.xattrs_dropped;
        let meta = LayerMeta {
            unpacked_size: stats.unpacked_size,
        };
        (reader.finish().map_err(&corrupt)?.0, Some((dir, meta)))
    };
    if &actual != diff_id {
        return Err(layer_mismatch(&staged, &layer.file, diff_id, &actual));
    }
    if let Some(new) = new_dir {
        pending.layers.insert(diff_id.clone(), new);
    }
    if !store.blob_path(&staged.digest).exists() {
        pending
            .blobs
            .insert(staged.digest.clone(), staged.path.clone());
    }
    Ok(LayerRecord {
        digest: staged.digest.clone(),
        diff_id: diff_id.clone(),
        media_type: layer
            .media_type
            .clone()
            .unwrap_or_else(|| compression.media_type().to_owned()),
        size: staged.size,
    })
}

/// Checks a staged blob against the digest and size its descriptor gives.
fn check_blob(
    staged: &StagedFile,
    digest: &Digest,
    size: Option<u64>,
    file: &str,
) -> Result<(), StoreError> {
    if &staged.digest != digest {
        return Err(StoreError::DigestMismatch {
            what: format!("blob {file}"),
            expected: digest.to_string(),
            actual: staged.digest.to_string(),
        });
    }
    if let Some(size) = size {
        if size != staged.size {
            return Err(StoreError::SizeMismatch {
                what: format!("blob {file}"),
                expected: size,
                actual: staged.size,
            });
        }
    }
    Ok(())
}

/// Writes an OCI manifest for a `docker save` image or a root file system
/// tar into staging.
fn synthesize_manifest(
    staging: &Staging,
    config: &StagedFile,
    layers: &[LayerRecord],
) -> Result<StagedFile, StoreError> {
    let manifest = spec::SynthManifest {
        schema_version: 2,
        media_type: spec::OCI_MANIFEST,
        config: spec::SynthDescriptor {
            media_type: spec::OCI_CONFIG.to_owned(),
            digest: config.digest.to_string(),
            size: config.size,
        },
        layers: layers
            .iter()
            .map(|l| spec::SynthDescriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.to_string(),
                size: l.size,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    let path = staging.path("manifest");
    fs::write(&path, &bytes).map_err(|source| StoreError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(StagedFile {
        path,
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    file: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::BadJson {
        file: file.to_owned(),
        what,
        reason: e.to_string(),
    })
}

fn parse_digest(s: &str, context: &str) -> Result<Digest, StoreError> {
    Digest::parse(s).ok_or_else(|| StoreError::BadDigest {
        digest: s.to_owned(),
        context: context.to_owned(),
    })
}

fn blob_file(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Stages and verifies the blob `desc` points at and reads it as JSON.
fn read_blob_json<T: serde::de::DeserializeOwned>(
    source: &Source,
    staging: &Staging,
    desc: &Descriptor,
    what: &'static str,
    context: &str,
) -> Result<(StagedFile, T), StoreError> {
    let digest = parse_digest(&desc.digest, context)?;
    let file = blob_file(&digest);
    let staged = source.stage(&file, staging)?;
    check_blob(&staged, &digest, desc.size, &file)?;
    let bytes = staged.read_limited(&file, what, JSON_LIMIT)?;
    let parsed = parse_json(&bytes, &file, what)?;
    Ok((staged, parsed))
}

/// Reads a small non-blob JSON file of the source.
fn read_source_json<T: serde::de::DeserializeOwned>(
    source: &Source,
    staging: &Staging,
    file: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    let staged = source.stage(file, staging)?;
    let bytes = staged.read_limited(file, what, JSON_LIMIT)?;
    parse_json(&bytes, file, what)
}

/// Parses a verified config and checks its rootfs.
fn parse_config(staged: &StagedFile, file: &str) -> Result<(ConfigFile, Vec<Digest>), StoreError> {
    let bytes = staged.read_limited(file, "image config", JSON_LIMIT)?;
    let parsed: ConfigFile = parse_json(&bytes, file, "image config")?;
    if parsed.rootfs.kind != "layers" {
        return Err(StoreError::BadJson {
            file: file.to_owned(),
            what: "image config",
            reason: format!("rootfs.type is {:?}, not \"layers\"", parsed.rootfs.kind),
        });
    }
    let diff_ids = parsed
        .rootfs
        .diff_ids
        .iter()
        .map(|d| parse_digest(d, &format!("{file} rootfs.diff_ids")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((parsed, diff_ids))
}

/// The images of an OCI layout.
fn read_oci(source: &Source, staging: &Staging) -> Result<Vec<SourceImage>, StoreError> {
    if source.exists("oci-layout") {
        let layout: spec::OciLayout =
            read_source_json(source, staging, "oci-layout", "OCI layout marker")?;
        if !layout.image_layout_version.starts_with("1.") {
            return Err(StoreError::LayoutVersion {
                version: layout.image_layout_version,
            });
        }
    }
    let index: Index = read_source_json(source, staging, "index.json", "OCI image index")?;
    // Manifests in index order, names merged per manifest digest.
    let mut found: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for desc in &index.manifests {
        let mut names = Vec::new();
        if let Some(n) = desc
            .annotations
            .get(spec::ANNOTATION_CONTAINERD_NAME)
            .or_else(|| desc.annotations.get(spec::ANNOTATION_REF_NAME))
        {
            names.push(n.clone());
        }
        let Some(manifest) = pick_manifest(source, staging, desc, 0)? else {
            continue;
        };
        match found.iter_mut().find(|(d, _)| d.digest == manifest.digest) {
            Some((_, existing)) => {
                for n in names {
                    if !existing.contains(&n) {
                        existing.push(n);
                    }
                }
            }
            None => found.push((manifest, names)),
        }
    }
    found
        .into_iter()
        .map(|(desc, names)| load_oci_image(source, staging, &desc, names))
        .collect()
}

/// Follows `desc` to an image manifest: itself if it is one, this
/// platform's entry if it is an index; `None` for other artifacts.
fn pick_manifest(
    source: &Source,
    staging: &Staging,
    desc: &Descriptor,
    depth: usize,
) -> Result<Option<Descriptor>, StoreError> {
    match desc.media_type.as_str() {
        spec::OCI_MANIFEST | spec::DOCKER_MANIFEST => Ok(Some(desc.clone())),
        spec::OCI_INDEX | spec::DOCKER_LIST => {
            let context = format!("image index {}", desc.digest);
            if depth >= MAX_INDEX_DEPTH {
                return Err(StoreError::BadJson {
                    file: blob_file(&parse_digest(&desc.digest, &context)?),
                    what: "image index",
                    reason: format!("indexes nest more than {MAX_INDEX_DEPTH} deep"),
                });
            }
            let (_, index): (_, Index) =
                read_blob_json(source, staging, desc, "image index", &context)?;
            let arch = spec::host_arch();
            let candidates: Vec<&Descriptor> = index
                .manifests
                .iter()
                .filter(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                })
                .collect();
            let chosen = match candidates.first() {
                Some(d) => *d,
                None => match index.manifests.as_slice() {
                    [only] if only.platform.is_none() => only,
                    _ => {
                        return Err(StoreError::NoPlatform {
                            digest: desc.digest.clone(),
                            arch,
                        })
                    }
                },
            };
            pick_manifest(source, staging, chosen, depth + 1)
        }
        "" => {
            // Old layouts may leave the media type out of index.json: look.
            let context = format!("descriptor {}", desc.digest);
            let (_, v): (_, serde_json::Value) =
                read_blob_json(source, staging, desc, "image manifest or index", &context)?;
            let media_type = match v.get("mediaType").and_then(|m| m.as_str()) {
                Some(mt) => mt,
                None if v.get("manifests").is_some() => spec::OCI_INDEX,
                None if v.get("config").is_some() => spec::OCI_MANIFEST,
                None => return Ok(None),
            };
            if media_type.is_empty() {
                return Ok(None);
            }
            let mut typed = desc.clone();
            typed.media_type = media_type.to_owned();
            pick_manifest(source, staging, &typed, depth)
        }
        _ => Ok(None),
    }
}

fn load_oci_image(
    source: &Source,
    staging: &Staging,
    desc: &Descriptor,
    names: Vec<String>,
) -> Result<SourceImage, StoreError> {
    let context = format!("manifest {}", desc.digest);
    let (manifest_blob, manifest): (_, Manifest) =
        read_blob_json(source, staging, desc, "image manifest", &context)?;
    let file = blob_file(&parse_digest(&desc.digest, &context)?);
    image_of_manifest(
        source,
        staging,
        (manifest_blob, manifest),
        &file,
        names,
        blob_file,
    )
}

/// The image an (already verified) manifest describes; `manifest_file`
/// names the manifest in errors, `blob_at` is where the source keeps a
/// blob (`blobs/sha256/<hex>` in OCI layouts, `<hex>` in skopeo `dir:`).
fn image_of_manifest(
    source: &Source,
    staging: &Staging,
    (manifest_blob, manifest): (StagedFile, Manifest),
    manifest_file: &str,
    names: Vec<String>,
    blob_at: fn(&Digest) -> String,
) -> Result<SourceImage, StoreError> {
    let context = format!("manifest {manifest_file}");
    let config_digest = parse_digest(&manifest.config.digest, &context)?;
    let config_file = blob_at(&config_digest);
    let config = source.stage(&config_file, staging)?;
    check_blob(&config, &config_digest, manifest.config.size, &config_file)?;
    let (parsed, diff_ids) = parse_config(&config, &config_file)?;
    let mut layers = Vec::new();
    for l in &manifest.layers {
        let digest = parse_digest(&l.digest, &context)?;
        if !spec::is_layer_media_type(&l.media_type) {
            return Err(StoreError::MediaType {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
            });
        }
        layers.push(SourceLayer {
            file: blob_at(&digest),
            digest: Some(digest),
            size: l.size,
            media_type: Some(l.media_type.clone()),
        });
    }
    if let Some(mt) = &manifest.media_type {
        if mt != spec::OCI_MANIFEST && mt != spec::DOCKER_MANIFEST {
            return Err(StoreError::BadJson {
                file: manifest_file.to_owned(),
                what: "image manifest",
                reason: format!("media type {mt:?} is not an image manifest"),
            });
        }
    }
    Ok(SourceImage {
        names,
        id: config_digest,
        config,
        parsed,
        diff_ids,
        manifest: Some(manifest_blob),
        layers,
    })
}

/// The digest a `docker save` path names, if any: `blobs/sha256/<hex>`
/// (newer docker) or `<hex>.json` (config of the legacy form).
fn digest_in_path(file: &str) -> Option<Digest> {
    if let Some(hex) = file.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex);
    }
    file.strip_suffix(".json").and_then(Digest::from_hex)
}

/// The images of a source with a `manifest.json`: a JSON array is the
/// index of a `docker save` archive, an object the image manifest of a
/// skopeo `dir:` copy (whose blobs are files named by their hex digest).
fn read_manifest_json(source: &Source, staging: &Staging) -> Result<Vec<SourceImage>, StoreError> {
    const FILE: &str = "manifest.json";
    const WHAT: &str = "docker save manifest or image manifest";
    let staged = source.stage(FILE, staging)?;
    let bytes = staged.read_limited(FILE, WHAT, JSON_LIMIT)?;
    let value: serde_json::Value = parse_json(&bytes, FILE, WHAT)?;
    if value.is_object() {
        let manifest: Manifest = parse_json(&bytes, FILE, "image manifest")?;
        let image =
            image_of_manifest(source, staging, (staged, manifest), FILE, Vec::new(), |d| {
                d.hex().to_owned()
            })?;
        return Ok(vec![image]);
    }
    read_docker(source, staging, value)
}

/// The images of a `docker save` archive (legacy or OCI-in-docker form),
/// given its parsed `manifest.json`.
fn read_docker(
    source: &Source,
    staging: &Staging,
    manifest: serde_json::Value,
) -> Result<Vec<SourceImage>, StoreError> {
    let entries: Vec<DockerSaveEntry> =
        serde_json::from_value(manifest).map_err(|e| StoreError::BadJson {
            file: "manifest.json".to_owned(),
            what: "docker save manifest",
            reason: e.to_string(),
        })?;
    let mut images = Vec::new();
    for entry in entries {
        let config_file = normalize(&entry.config).map_err(|_| StoreError::Missing {
            file: entry.config.clone(),
        })?;
        let config = source.stage(&config_file, staging)?;
        if let Some(digest) = digest_in_path(&config_file) {
            check_blob(&config, &digest, None, &config_file)?;
        }
        let (parsed, diff_ids) = parse_config(&config, &config_file)?;
        let mut layers = Vec::new();
        for l in &entry.layers {
            let file = normalize(l).map_err(|_| StoreError::Missing { file: l.clone() })?;
            let digest = file
                .strip_prefix("blobs/sha256/")
                .and_then(Digest::from_hex);
            layers.push(SourceLayer {
                file,
                digest,
                size: None,
                media_type: None,
            });
        }
        images.push(SourceImage {
            names: entry.repo_tags.unwrap_or_default(),
            id: config.digest.clone(),
            config,
            parsed,
            diff_ids,
            manifest: None,
            layers,
        });
    }
    Ok(images)
}

/// The one image of a root file system tar: the config made from the tar
/// (`rootfs.rs`), the staged tar as its only layer, no name.
fn rootfs_image(
    blob: &StagedFile,
    staging: &Staging,
    path: &Path,
) -> Result<SourceImage, StoreError> {
    let (config, diff_id) = rootfs_config(blob, path, staging)?;
    let (parsed, diff_ids) = parse_config(&config, "generated image config")?;
    debug_assert_eq!(diff_ids, [diff_id]);
    Ok(SourceImage {
        names: Vec::new(),
        id: config.digest.clone(),
        config,
        parsed,
        diff_ids,
        manifest: None,
        layers: vec![SourceLayer {
            file: ROOTFS_LAYER.to_owned(),
            digest: Some(blob.digest.clone()),
            size: Some(blob.size),
            media_type: None,
        }],
    })
}

/// Renames everything pending into place and replaces the index; on error
/// removes what was renamed in.
fn commit(
    store: &Store,
    staging: &Staging,
    index: &mut IndexFile,
    pending: Pending,
    records: Vec<ImageRecord>,
    report: &mut ImportReport,
) -> Result<(), StoreError> {
    let mut placed: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (digest, path) in &pending.blobs {
            let dest = store.blob_path(digest);
            if dest.exists() {
                continue;
            }
            rename(path, &dest)?;
            placed.push(dest);
            report.blobs_added += 1;
        }
        for (diff_id, (dir, meta)) in &pending.layers {
            let dest = store.layer_path(diff_id);
            rename(dir, &dest)?;
            placed.push(dest);
            index.layers.insert(diff_id.clone(), meta.clone());
            report.layers_added += 1;
        }
        for record in records {
            index.add_image(record);
        }
        store.sync()?;
        index.save(&store.index_path(), &staging.path("index.json"))
    })();
    if result.is_err() {
        for p in placed.iter().rev() {
            let _ = fs::remove_file(p).or_else(|_| fs::remove_dir_all(p));
        }
        report.blobs_added = 0;
        report.layers_added = 0;
    }
    result
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|source| StoreError::Write {
        path: to.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a regular file to a tar being built.
    fn add(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, data).unwrap();
    }

    /// A layer tar holding one file.
    fn layer_tar(name: &str, data: &[u8]) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        add(&mut layer, name, data);
        layer.into_inner().unwrap()
    }

    /// An OCI layout tar with one image tagged `v1` (one layer holding
    /// `hello.txt`); `layer_blob` replaces the layer's stored bytes.
    fn layout_tar(layer_blob: Option<&[u8]>) -> (Vec<u8>, Digest) {
        let layer = layer_tar("hello.txt", b"hello\n");
        let diff_id = Digest::of(&layer);
        let blob = layer_blob.unwrap_or(&layer);
        layout_tar_with(blob, Digest::of(&layer), &diff_id)
    }

    /// An OCI layout tar with one image tagged `v1` whose one layer is
    /// stored as `blob` under the descriptor digest `layer_digest`, with
    /// `diff_id` in the config.
    fn layout_tar_with(blob: &[u8], layer_digest: Digest, diff_id: &Digest) -> (Vec<u8>, Digest) {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let config_digest = Digest::of(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER_TAR}","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            blob.len(),
            OCI_MANIFEST = spec::OCI_MANIFEST,
            OCI_CONFIG = spec::OCI_CONFIG,
            OCI_LAYER_TAR = spec::OCI_LAYER_TAR,
        );
        let manifest_digest = Digest::of(manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            spec::OCI_MANIFEST,
            manifest.len()
        );
        let mut tar = tar::Builder::new(Vec::new());
        add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add(&mut tar, "index.json", index.as_bytes());
        for (digest, data) in [
            (&manifest_digest, manifest.as_bytes()),
            (&config_digest, config.as_bytes()),
            (&layer_digest, blob),
        ] {
            add(&mut tar, &blob_file(digest), data);
        }
        (tar.into_inner().unwrap(), config_digest)
    }

    #[test]
    fn archive_images_lists_names_and_verifies_blobs_without_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        let path = dir.path().join("img.tar");

        let (good, id) = layout_tar(None);
        fs::write(&path, &good).unwrap();
        let images = archive_images(&path, &scratch, u64::MAX).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].id, id);
        assert_eq!(images[0].names, ["v1"]);
        let layer = layer_tar("hello.txt", b"hello\n");
        assert_eq!(
            images[0].layers,
            [ArchiveLayer {
                digest: Digest::of(&layer),
                blob_bytes: layer.len() as u64,
                diff_id: Digest::of(&layer),
                unpacked_bytes: layer.len() as u64,
            }]
        );
        assert!(images[0].meta_bytes > 0);
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "staging left");

        let (bad_layer, _) = layout_tar(Some(b"not the layer"));
        fs::write(&path, &bad_layer).unwrap();
        let err = archive_images(&path, &scratch, u64::MAX).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");

        fs::write(&path, &good[..good.len() / 2]).unwrap();
        let err = archive_images(&path, &scratch, u64::MAX).unwrap_err();
        assert!(matches!(err, StoreError::CorruptArchive { .. }), "{err}");

        // A tar without image files is a root file system, which import
        // takes but the listing (build-time checks) does not.
        let mut other = tar::Builder::new(Vec::new());
        add(&mut other, "hello.txt", b"hi");
        let rootfs = other.into_inner().unwrap();
        fs::write(&path, &rootfs).unwrap();
        let err = archive_images(&path, &scratch, u64::MAX).unwrap_err();
        assert!(matches!(err, StoreError::UnknownFormat { .. }), "{err}");
        // The same, cut at an entry boundary (no end-of-archive marker), is
        // truncated; a directory without image files is no image.
        fs::write(&path, &rootfs[..1024]).unwrap();
        let err = archive_images(&path, &scratch, u64::MAX).unwrap_err();
        assert!(matches!(err, StoreError::CorruptArchive { .. }), "{err}");
        let err = archive_images(&scratch, dir.path(), u64::MAX).unwrap_err();
        assert!(matches!(err, StoreError::UnknownFormat { .. }), "{err}");
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "staging left");
    }

    #[test]
    fn archive_images_measures_compressed_layers_and_checks_diff_ids() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        let path = dir.path().join("img.tar");

        // 4 MiB of zeros: a small blob that unpacks big.
        let layer = layer_tar("zeros", &vec![0u8; 4 << 20]);
        let diff_id = Digest::of(&layer);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&layer).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&layer[..], 3).unwrap();
        for blob in [&gz, &zst] {
            assert!(blob.len() < 64 << 10);
            let (tar, _) = layout_tar_with(blob, Digest::of(blob), &diff_id);
            fs::write(&path, &tar).unwrap();
            let images = archive_images(&path, &scratch, u64::MAX).unwrap();
            let l = &images[0].layers[0];
            assert_eq!(l.digest, Digest::of(blob));
            assert_eq!(l.blob_bytes, blob.len() as u64);
            assert_eq!(l.diff_id, diff_id);
            assert_eq!(l.unpacked_bytes, layer.len() as u64);

            // The limit is on uncompressed bytes: a bomb stops there.
            let err = archive_images(&path, &scratch, 1 << 20).unwrap_err();
            assert!(
                matches!(&err, StoreError::UnpackLimit { limit, layer, .. }
                    if *limit == 1 << 20 && *layer == diff_id.to_string()),
                "{err}"
            );
            assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "staging left");
        }

        // A blob that matches its descriptor but not the config's diff_id.
        let other = layer_tar("zeros", &vec![1u8; 4 << 20]);
        let mut gz_other = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz_other.write_all(&other).unwrap();
        let gz_other = gz_other.finish().unwrap();
        let (tar, _) = layout_tar_with(&gz_other, Digest::of(&gz_other), &diff_id);
        fs::write(&path, &tar).unwrap();
        let err = archive_images(&path, &scratch, u64::MAX).unwrap_err();
        match &err {
            StoreError::DigestMismatch {
                what,
                expected,
                actual,
            } => {
                assert!(what.contains("uncompressed"), "{err}");
                assert_eq!(*expected, diff_id.to_string());
                assert_eq!(*actual, Digest::of(&other).to_string());
            }
            _ => panic!("{err}"),
        }

        // A gzip stream cut short is a corrupt layer, not a hang or a panic.
        let cut = &gz[..gz.len() / 2];
        let (tar, _) = layout_tar_with(cut, Digest::of(cut), &diff_id);
        fs::write(&path, &tar).unwrap();
        let err = archive_images(&path, &scratch, u64::MAX).unwrap_err();
        assert!(matches!(err, StoreError::CorruptLayer { .. }), "{err}");
    }
}
