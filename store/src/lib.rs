//! The image store: OCI images, `docker save` archives, skopeo `dir:` copies
//! and root file system tars (`docker export`; one layer, as `docker import`
//! makes it), verified, unpacked once per layer, and handed to the runtime
//! as overlayfs lowerdirs.
//!
//! # On disk
//!
//! ```text
//! <root>/                      (hostd uses /var/lib/hostd; mode 0700)
//!   index.json                 every image record and unpacked layer, replaced atomically
//!   lock                       flock(2)ed by every writer (import, remove, gc)
//!   blobs/sha256/<hex>         manifests, configs and layer blobs, named by their digest
//!   layers/<diff_id hex>/      one unpacked layer in overlayfs format, shared by all images
//!   tmp/                       staging; emptied by open, gc and after every import
//!   incoming/<n>/              downloads staging an OCI layout ([`Store::incoming`]);
//!                              emptied by open
//! ```
//!
//! An image's id is the digest of its config (as docker does). An image
//! record lists the manifest, the layers (blob digest, diff_id, media type,
//! size) and the names it goes by; a name belongs to one image at a time and
//! moves to the newest image imported with it.
//!
//! # Safety of imports
//!
//! Everything read from a source is verified before it is used: manifests
//! and configs against the digests that name them, layer blobs against the
//! manifest, and the uncompressed layer against the config's diff_id. Layers
//! are unpacked relative to directory file descriptors without following
//! symlinks; `unpack.rs` and `docs/images.md` list what is refused and what is
//! neutralised. An import stages everything under `tmp/`, then
//! renames blobs and layer directories into place and replaces `index.json`
//! last; a failure at any point leaves the store as it was.
//!
//! # Concurrency
//!
//! Writers serialise on `lock` (one open file description per operation, so
//! threads of one process exclude each other too); readers read
//! `index.json`, which is only ever replaced by rename. [`Store::gc`] deletes
//! the layers of removed images: the caller must not remove an image that a
//! running container still uses as its lower layers.

mod digest;
mod error;
mod import;
mod index;
mod layout;
mod rootfs;
mod source;
mod spec;
mod tarstream;
mod unpack;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use digest::Digest;
pub use digest::HashingReader;
pub use error::StoreError;
pub use import::{archive_images, ArchiveImage, ArchiveLayer};
pub use index::normalize_name;
pub use layout::Store;
pub use mkhost_shared::images::{
    GcReport, ImageConfig, ImageInfo, ImageSummary, ImportReport, ImportedImage, LayerInfo,
    Removed, SkippedEntry,
};
pub use unpack::{check_archive, extract_archive, ExtractOptions, ExtractReport};

use index::{IndexFile, Matched};

impl Store {
    /// Opens the store at `root`, creating it (mode 0700) if needed, and
    /// clears staging left behind by a crashed import.
    pub fn open(root: impl AsRef<Path>) -> Result<Store, StoreError> {
        let root = root.as_ref().to_owned();
        let setup = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Setup { path, source }
        };
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(setup(&root))?;
        }
        let store = Store::at(root);
        for dir in [
            store.root().join("blobs/sha256"),
            store.root().join("layers"),
            store.tmp_dir(),
            store.incoming_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(setup(&dir))?;
        }
        let _lock = store.lock()?;
        store.clear_tmp()?;
        for (_, path) in read_dir(&store.incoming_dir())? {
            remove_any(&path)?;
        }
        IndexFile::load(&store.index_path())?;
        Ok(store)
    }

    /// Imports every image of an OCI image layout (directory or tar), a
    /// `docker save` archive (tar; gzip or zstd compressed tars too), a
    /// skopeo `dir:` copy, or a tar of a root file system (`docker export`,
    /// `tar -C ROOT -c .`; plain, gzip or zstd), which becomes an untagged
    /// image of one layer, as `docker import` makes it.
    ///
    /// All-or-nothing: on error the store is exactly as it was.
    pub fn import(&self, path: impl AsRef<Path>) -> Result<ImportReport, StoreError> {
        import::import(self, path.as_ref(), None)
    }

    /// [`Store::import`], and `name` added to the names of the one image the
    /// source holds (a root file system tar, or an archive or layout of one
    /// image; more than one image is [`StoreError::NameForMany`]). The name
    /// moves from any other image that had it, as names do on import.
    pub fn import_named(
        &self,
        path: impl AsRef<Path>,
        name: &str,
    ) -> Result<ImportReport, StoreError> {
        import::import(self, path.as_ref(), Some(name))
    }

    /// A fresh, empty directory on the store's file system where a download
    /// stages an OCI layout before [`Store::import_named`] takes it (blobs
    /// the store has can be hard-linked in: [`Store::blob_file`]). Removed
    /// when the guard drops; what a crash leaves is removed by `open`.
    pub fn incoming(&self) -> Result<Incoming, StoreError> {
        let mut bytes = [0u8; 8];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).map_err(
            |e| StoreError::Setup {
                path: self.incoming_dir(),
                source: io::Error::from(e),
            },
        )?;
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.incoming_dir().join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| StoreError::Setup {
                path: path.clone(),
                source,
            })?;
        Ok(Incoming { path })
    }

    /// The file that holds blob `digest` (`sha256:<hex>`), if the store has it.
    pub fn blob_file(&self, digest: &str) -> Option<PathBuf> {
        let path = self.blob_path(&Digest::parse(digest)?);
        path.is_file().then_some(path)
    }

    /// All images, sorted by id.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let index = IndexFile::load(&self.index_path())?;
        Ok(index
            .images
            .iter()
            .map(|img| ImageSummary {
                id: img.id.to_string(),
                names: img.names.clone(),
                created: img.created.clone(),
                layers: img.layers.len(),
                size: img.layers.iter().map(|l| l.size).sum(),
                unpacked_size: img
                    .layers
                    .iter()
                    .map(|l| index.layers.get(&l.diff_id).map_or(0, |m| m.unpacked_size))
                    .sum(),
            })
            .collect())
    }

    /// The image `reference` names: a name (exact, or docker-normalised:
    /// `busybox` finds `docker.io/library/busybox:latest`), an id
    /// (`sha256:<hex>`) or a unique id prefix of at least 4 hex digits.
    pub fn inspect(&self, reference: &str) -> Result<ImageInfo, StoreError> {
        let index = IndexFile::load(&self.index_path())?;
        let (i, _) = index.resolve(reference)?;
        let img = &index.images[i];
        let config_path = self.blob_path(&img.id);
        let bytes = fs::read(&config_path).map_err(|source| StoreError::Read {
            path: config_path.clone(),
            source,
        })?;
        let parsed: spec::ConfigFile =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::BadJson {
                file: config_path.display().to_string(),
                what: "image config",
                reason: e.to_string(),
            })?;
        let layers: Vec<LayerInfo> = img
            .layers
            .iter()
            .map(|l| LayerInfo {
                digest: l.digest.to_string(),
                diff_id: l.diff_id.to_string(),
                media_type: l.media_type.clone(),
                size: l.size,
                unpacked_size: index.layers.get(&l.diff_id).map_or(0, |m| m.unpacked_size),
                path: self.layer_path(&l.diff_id),
            })
            .collect();
        Ok(ImageInfo {
            id: img.id.to_string(),
            names: img.names.clone(),
            manifest: img.manifest.to_string(),
            architecture: img.architecture.clone(),
            os: img.os.clone(),
            created: img.created.clone(),
            config: parsed.config.unwrap_or_default().into(),
            size: layers.iter().map(|l| l.size).sum(),
            unpacked_size: layers.iter().map(|l| l.unpacked_size).sum(),
            layers,
        })
    }

    /// The unpacked layer directories of an image, top layer first: the
    /// `lowerdir=` list of an overlayfs mount (join with `:`). Empty for an
    /// image without layers.
    pub fn lowerdirs(&self, reference: &str) -> Result<Vec<PathBuf>, StoreError> {
        let index = IndexFile::load(&self.index_path())?;
        let (i, _) = index.resolve(reference)?;
        let img = &index.images[i];
        img.layers
            .iter()
            .rev()
            .map(|l| {
                let path = self.layer_path(&l.diff_id);
                if path.is_dir() {
                    Ok(path)
                } else {
                    Err(StoreError::LayerMissing {
                        image: img.id.to_string(),
                        diff_id: l.diff_id.to_string(),
                        path,
                    })
                }
            })
            .collect()
    }

    /// Removes a name, or a whole image. Given a name, the name goes and the
    /// image record with it if that was its last name; given an id, the
    /// record and all its names go. Blobs and layers stay until [`Store::gc`].
    pub fn remove(&self, reference: &str) -> Result<Removed, StoreError> {
        let _lock = self.lock()?;
        let mut index = IndexFile::load(&self.index_path())?;
        let (i, matched) = index.resolve(reference)?;
        let img = &mut index.images[i];
        let id = img.id.clone();
        let untagged = match matched {
            Matched::Name(name) => {
                img.names.retain(|n| *n != name);
                vec![name]
            }
            Matched::Id => std::mem::take(&mut img.names),
        };
        let deleted = img.names.is_empty();
        if deleted {
            index.images.remove(i);
        }
        index.save(&self.index_path(), &self.tmp_dir().join("index.json.new"))?;
        Ok(Removed {
            id: id.to_string(),
            untagged,
            deleted,
        })
    }

    /// Gives the image `reference` resolves to one more name (`docker
    /// tag`); the name moves off any other image that had it.
    pub fn tag(&self, reference: &str, name: &str) -> Result<(), StoreError> {
        if !index::valid_name(name) {
            return Err(StoreError::InvalidName {
                name: name.to_string(),
            });
        }
        let _lock = self.lock()?;
        let mut index = IndexFile::load(&self.index_path())?;
        let (i, _) = index.resolve(reference)?;
        let mut record = index.images[i].clone();
        record.names = vec![name.to_string()];
        index.add_image(record);
        index.save(&self.index_path(), &self.tmp_dir().join("index.json.new"))
    }

    /// Deletes blobs and unpacked layers no image refers to, and any staging
    /// leftovers.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _lock = self.lock()?;
        let mut index = IndexFile::load(&self.index_path())?;
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for img in &index.images {
            blobs.insert(img.id.hex().to_owned());
            blobs.insert(img.manifest.hex().to_owned());
            for l in &img.layers {
                blobs.insert(l.digest.hex().to_owned());
                layers.insert(l.diff_id.hex().to_owned());
            }
        }
        // The index stops naming the layers first: a power cut in the middle
        // of the deletions then leaves unreferenced files (the next gc takes
        // them), never an index entry for a layer that is gone.
        let before = index.layers.len();
        index.layers.retain(|d, _| layers.contains(d.hex()));
        if index.layers.len() != before {
            index.save(&self.index_path(), &self.tmp_dir().join("index.json.new"))?;
        }
        let mut report = GcReport::default();
        let mut seen = BTreeSet::new();
        let blob_dir = self.root().join("blobs/sha256");
        for (name, path) in read_dir(&blob_dir)? {
            if !blobs.contains(&name) {
                report.bytes_freed += tree_size(&path, &mut seen);
                remove_any(&path)?;
                report.blobs_removed += 1;
            }
        }
        for (name, path) in read_dir(&self.root().join("layers"))? {
            if !layers.contains(&name) {
                report.bytes_freed += tree_size(&path, &mut seen);
                remove_any(&path)?;
                report.layers_removed += 1;
            }
        }
        self.clear_tmp()?;
        Ok(report)
    }

    fn clear_tmp(&self) -> Result<(), StoreError> {
        for (_, path) in read_dir(&self.tmp_dir())? {
            remove_any(&path)?;
        }
        Ok(())
    }
}

/// A staging directory of [`Store::incoming`], removed on drop.
#[derive(Debug)]
pub struct Incoming {
    path: PathBuf,
}

impl Incoming {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let read_err = |source| StoreError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

fn remove_any(path: &Path) -> Result<(), StoreError> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|source| StoreError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Bytes of the regular files under `path` (or of `path` itself), each
/// inode counted once across calls sharing `seen`. Never follows symlinks.
fn tree_size(path: &Path, seen: &mut BTreeSet<(u64, u64)>) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let Ok(entries) = fs::read_dir(path) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .map(|e| tree_size(&e.path(), seen))
            .sum()
    } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
        meta.len()
    } else {
        0
    }
}
