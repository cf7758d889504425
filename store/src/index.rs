//! The store's `index.json`: every image record and layer, in one file that
//! is replaced atomically, and the rules for finding an image by name or id.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::StoreError;

/// Version of the index format this code reads and writes.
const INDEX_VERSION: u32 = 1;

/// The whole index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IndexFile {
    pub version: u32,
    /// Image records, sorted by id.
    pub images: Vec<ImageRecord>,
    /// Unpacked layers by diff_id.
    pub layers: BTreeMap<Digest, LayerMeta>,
}

impl Default for IndexFile {
    fn default() -> Self {
        IndexFile {
            version: INDEX_VERSION,
            images: Vec::new(),
            layers: BTreeMap::new(),
        }
    }
}

/// One image: its config digest is its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub id: Digest,
    /// Names (tags) in the order they were given; may be empty.
    pub names: Vec<String>,
    /// The manifest blob (synthesised for `docker save` archives).
    pub manifest: Digest,
    /// Layers from the bottom up.
    pub layers: Vec<LayerRecord>,
    pub architecture: Option<String>,
    pub os: Option<String>,
    pub created: Option<String>,
}

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    /// Digest of the blob as stored (possibly compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar; names the unpacked directory.
    pub diff_id: Digest,
    pub media_type: String,
    /// Size of the blob.
    pub size: u64,
}

/// An unpacked layer directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerMeta {
    /// Sum of the sizes of the regular files in it.
    pub unpacked_size: u64,
}

/// How a reference matched an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Matched {
    /// By one of its names (the stored spelling).
    Name(String),
    /// By its id or an id prefix.
    Id,
}

impl IndexFile {
    /// Reads `path`; a missing file is an empty index.
    pub(crate) fn load(path: &Path) -> Result<IndexFile, StoreError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(IndexFile::default()),
            Err(e) => {
                return Err(StoreError::Index {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        let index: IndexFile = serde_json::from_slice(&bytes).map_err(|e| StoreError::Index {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if index.version != INDEX_VERSION {
            return Err(StoreError::Index {
                path: path.to_owned(),
                reason: format!(
                    "format version {} (this hostd reads version {INDEX_VERSION})",
                    index.version
                ),
            });
        }
        Ok(index)
    }

    /// Writes the index to `tmp` (a path in the store's staging directory),
    /// flushes it to disk and renames it over `path`.
    pub(crate) fn save(&self, path: &Path, tmp: &Path) -> Result<(), StoreError> {
        let write_err = |source| StoreError::Write {
            path: path.to_owned(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| write_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        bytes.push(b'\n');
        let mut f = fs::File::create(tmp).map_err(write_err)?;
        f.write_all(&bytes).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        drop(f);
        fs::rename(tmp, path).map_err(write_err)?;
        // The new index is in place; from here on nothing may fail, or the
        // caller would roll back data the index already points at. A crash
        // before the directory reaches the disk only loses the new index.
        if let Some(dir) = path.parent() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Finds the image `reference` names: an exact name, then a full id
    /// (`sha256:<hex>`) or an id prefix of at least 4 hex digits, then a name
    /// equal after docker-style normalisation (`busybox` is
    /// `docker.io/library/busybox:latest`).
    pub(crate) fn resolve(&self, reference: &str) -> Result<(usize, Matched), StoreError> {
        let not_found = || StoreError::NotFound {
            reference: reference.to_owned(),
        };
        if reference.is_empty() {
            return Err(not_found());
        }
        if let Some(i) = self
            .images
            .iter()
            .position(|img| img.names.iter().any(|n| n == reference))
        {
            return Ok((i, Matched::Name(reference.to_owned())));
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let hits: Vec<usize> = (0..self.images.len())
                .filter(|&i| self.images[i].id.hex().starts_with(&hex))
                .collect();
            match hits.as_slice() {
                [i] => return Ok((*i, Matched::Id)),
                [] => {}
                _ => return Err(self.ambiguous(reference, &hits)),
            }
        }
        let wanted = normalize_name(reference);
        let mut hits = Vec::new();
        for (i, img) in self.images.iter().enumerate() {
            if let Some(n) = img.names.iter().find(|n| normalize_name(n) == wanted) {
                hits.push((i, n.clone()));
            }
        }
        match hits.len() {
            0 => Err(not_found()),
            1 => {
                let (i, n) = hits.remove(0);
                Ok((i, Matched::Name(n)))
            }
            _ => {
                let idx: Vec<usize> = hits.iter().map(|(i, _)| *i).collect();
                Err(self.ambiguous(reference, &idx))
            }
        }
    }

    fn ambiguous(&self, reference: &str, hits: &[usize]) -> StoreError {
        StoreError::Ambiguous {
            reference: reference.to_owned(),
            candidates: hits
                .iter()
                .map(|&i| self.images[i].id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Inserts `record` (or adds its names to the image with the same id) and
    /// moves each of its names away from any other image, the way `docker
    /// load` moves a tag. Returns true when the image is new.
    pub(crate) fn add_image(&mut self, record: ImageRecord) -> bool {
        for name in &record.names {
            let norm = normalize_name(name);
            for img in self.images.iter_mut().filter(|i| i.id != record.id) {
                img.names.retain(|n| normalize_name(n) != norm);
            }
        }
        match self.images.iter_mut().find(|i| i.id == record.id) {
            Some(existing) => {
                for name in record.names {
                    if !existing.names.contains(&name) {
                        existing.names.push(name);
                    }
                }
                false
            }
            None => {
                self.images.push(record);
                self.images.sort_by(|a, b| a.id.cmp(&b.id));
                true
            }
        }
    }
}

/// Checks a name taken from an archive or a caller.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// Docker's reference normalisation, used only to compare names:
/// `busybox` -> `docker.io/library/busybox:latest`,
/// `example.com/a/b` -> `example.com/a/b:latest`.
pub fn normalize_name(name: &str) -> String {
    let (repo_and_tag, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let last_slash = repo_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match repo_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &repo_and_tag[..last_slash + i],
            Some(&repo_and_tag[last_slash + i + 1..]),
        ),
        None => (repo_and_tag, None),
    };
    let (domain, path) = match repo.split_once('/') {
        Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => (d, p.to_owned()),
        _ => ("docker.io", repo.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        for (a, b) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            (
                "docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("index.docker.io/foo/bar:x", "docker.io/foo/bar:x"),
            ("test/img:v2", "docker.io/test/img:v2"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("example.com/a/b@sha256:ab", "example.com/a/b@sha256:ab"),
        ] {
            assert_eq!(normalize_name(a), b, "{a}");
        }
    }

    fn record(hex_digit: char, names: &[&str]) -> ImageRecord {
        let d = Digest::from_hex(&hex_digit.to_string().repeat(64)).unwrap();
        ImageRecord {
            id: d.clone(),
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            manifest: d,
            layers: vec![],
            architecture: None,
            os: None,
            created: None,
        }
    }

    #[test]
    fn resolves_names_ids_and_moves_tags() {
        let mut idx = IndexFile::default();
        assert!(idx.add_image(record('a', &["busybox:latest", "v1"])));
        assert!(idx.add_image(record('b', &["docker.io/library/busybox:latest"])));
        // The tag moved to the new image.
        assert_eq!(idx.images[0].names, ["v1"]);
        assert_eq!(idx.resolve("busybox").unwrap().0, 1);
        assert_eq!(idx.resolve("v1").unwrap(), (0, Matched::Name("v1".into())));
        assert_eq!(idx.resolve("aaaa").unwrap(), (0, Matched::Id));
        assert_eq!(
            idx.resolve(&format!("sha256:{}", "b".repeat(64))).unwrap(),
            (1, Matched::Id)
        );
        assert!(matches!(
            idx.resolve("abc"),
            Err(StoreError::NotFound { .. })
        ));
        // Same id again: names merge, no new record.
        assert!(!idx.add_image(record('a', &["v2"])));
        assert_eq!(idx.images[0].names, ["v1", "v2"]);
    }
}
