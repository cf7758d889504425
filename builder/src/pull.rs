//! Build-time pulls: the images a profile's `[[container]]` tables name by
//! reference (no `archive`, `pull = "build"`, the default) are pulled with
//! the registry client ([`mkhost_registry`]) into a content-addressed cache,
//! then written as reproducible OCI layout tars that the archive path
//! ([`crate::containers`]) checks and embeds like any other archive.
//!
//! The cache lives under the build cache's root:
//!
//! ```text
//! oci/blobs/sha256/<hex>   manifests, configs and layers, by digest; a blob
//!                          arrives here only after the pull has checked its
//!                          size and sha256
//! oci/indexes/<hex>        an index digest a reference pins -> the digest of
//!                          the linux/amd64 manifest it led to
//! oci/archives/<key>.tar   the layout tar of one (canonical name, manifest)
//! oci/.pull-*              a pull in progress, removed however it ends
//! ```
//!
//! Which manifest is used: the reference's own digest (`@sha256:…`) when it
//! has one; with `--locked`, the digest `mkhost.lock` records for the
//! canonical reference (none is an error naming the fix); otherwise the tag
//! is resolved, one manifest request. A manifest whose blobs are all in the
//! cache is not pulled again, so a build pinned by a digest or the lock
//! makes no request at all.
//!
//! The tar holds `blobs/sha256/…`, `index.json` and `oci-layout`, in path
//! order, mode 0644, owner 0, mtime 0: the same manifest under the same name
//! always gives the same bytes. `index.json` names the manifest by the
//! canonical reference (`org.opencontainers.image.ref.name`), the name
//! hostd's store gives the image when it imports the tar at boot, which is
//! also the container's `image`. Every blob is hashed as it is copied into
//! the tar; a cache blob that no longer holds its digest is removed and the
//! build fails (the next one fetches it again).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use mkhost_registry::{
    image_blobs, BlobRef, Cause, Client, ClientOptions, ImageBlobs, Reference, RegistryError,
    OCI_INDEX,
};
use mkhost_shared::registries::RegistrySettings;
use sha2::{Digest as _, Sha256};

use crate::lock::ImageLock;
use crate::profile::{ContainerSpec, Origin, PullWhen};
use crate::progress::{size, Progress};
use mkhost_shared::hex::encode as hex;

/// Version of the tar layout: part of each cached tar's key.
const TAR_FORMAT: u32 = 1;
/// The annotation naming a manifest in a layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The container an error is about: where its table is, the profile, its
/// name and its image reference.
#[derive(Debug, Clone)]
pub struct Subject {
    pub origin: Origin,
    pub profile: String,
    pub container: String,
    pub reference: String,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: profile {:?}, container {:?}, image {}",
            self.origin, self.profile, self.container, self.reference
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{subject}: {step} failed")]
    Registry {
        subject: Subject,
        /// `resolving the tag` or `pulling`.
        step: &'static str,
        #[source]
        source: RegistryError,
    },
    #[error("--locked: {lockfile} has no digest for image {} (container {:?} at {}) of profile {:?}; build once without --locked to resolve the tag and record its digest", .subject.reference, .subject.container, .subject.origin, .subject.profile)]
    NotLocked { subject: Subject, lockfile: PathBuf },
    #[error("{subject}: {lockfile} records {digest:?} for it, which is not a sha256 digest; fix or delete the entry and build without --locked")]
    BadLockDigest {
        subject: Subject,
        lockfile: PathBuf,
        digest: String,
    },
    #[error("cannot read the registry credentials in {path}")]
    DockerConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the registry client for the build's pulls cannot be set up ([registries] at {registries}; credentials from {docker_config})")]
    Setup {
        registries: String,
        docker_config: String,
        #[source]
        source: RegistryError,
    },
    #[error("{subject}: {step} {path}")]
    Cache {
        subject: Subject,
        /// What was being done with `path`.
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{subject}: the cached manifest {path} cannot be read back")]
    CachedManifest {
        subject: Subject,
        path: PathBuf,
        #[source]
        source: Cause,
    },
    #[error("{subject}: the cached blob {path} does not hold {digest} (it is removed; build again to fetch it anew)")]
    CorruptBlob {
        subject: Subject,
        path: PathBuf,
        digest: String,
    },
}

/// What the build's pulls need to know.
pub struct PullContext<'a> {
    /// The profile's name, for messages.
    pub profile: &'a str,
    /// The build cache's root; the pull cache is `oci/` under it.
    pub cache_root: &'a Path,
    /// The profile's `[registries]` (no credentials).
    pub registries: &'a RegistrySettings,
    /// Where `[registries]` was set, for messages.
    pub registries_origin: Option<&'a Origin>,
    /// The lock file, for messages.
    pub lockfile: &'a Path,
    /// With `--locked`: the digests the lock records for this profile's
    /// images (canonical reference -> digest).
    pub locked: Option<&'a BTreeMap<String, ImageLock>>,
}

/// The containers after the pulls.
#[derive(Debug, Clone, Default)]
pub struct Pulls {
    /// The containers, with `archive` set to the layout tar for each image
    /// pulled at build time.
    pub specs: Vec<ContainerSpec>,
    /// Canonical reference -> the image manifest digest pulled, for
    /// `mkhost.lock` and the artifact manifest.
    pub digests: BTreeMap<String, String>,
}

/// Pulls every image the containers name for build-time pulls (each
/// reference once) and makes its layout tar; see the module docs.
pub fn pull_images(
    specs: &[ContainerSpec],
    ctx: &PullContext,
    progress: &Progress,
) -> Result<Pulls, Box<PullError>> {
    let mut pulls = Pulls {
        specs: specs.to_vec(),
        digests: BTreeMap::new(),
    };
    let wanted = specs
        .iter()
        .filter(|s| s.pull.as_ref().is_some_and(|p| p.when == PullWhen::Build))
        .count();
    if wanted == 0 {
        return Ok(pulls);
    }
    let stage = progress.stage("pulling container images");
    let cache = PullCache::new(ctx.cache_root);
    let mut client = LazyClient::new(ctx);
    let mut tars: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut fetched = 0u64;
    for spec in pulls.specs.iter_mut() {
        let Some(pull) = spec.pull.as_ref().filter(|p| p.when == PullWhen::Build) else {
            continue;
        };
        let canonical = pull.reference.canonical();
        if let Some(tar) = tars.get(&canonical) {
            spec.archive = tar.clone();
            continue;
        }
        let subject = Subject {
            origin: spec.image_origin.clone(),
            profile: ctx.profile.to_owned(),
            container: spec.name().to_owned(),
            reference: canonical.clone(),
        };
        let one = Puller {
            ctx,
            cache: &cache,
            subject: &subject,
            reference: &pull.reference,
            stage: &stage,
        };
        let (manifest, bytes) = one.pull(&mut client)?;
        fetched += bytes;
        let tar = one.layout_tar(&manifest)?;
        tars.insert(canonical.clone(), tar.clone());
        pulls.digests.insert(canonical, manifest);
        spec.archive = tar;
    }
    stage.finish(&format!(
        "{} images, {} fetched{}",
        tars.len(),
        size(fetched),
        if client.used() {
            ""
        } else {
            " (all from the cache, no registry contacted)"
        }
    ));
    Ok(pulls)
}

/// The pull cache's directories.
struct PullCache {
    root: PathBuf,
}

impl PullCache {
    fn new(cache_root: &Path) -> Self {
        PullCache {
            root: cache_root.join("oci"),
        }
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// The cached blob `digest` (a checked `sha256:` digest).
    fn blob(&self, digest: &str) -> PathBuf {
        self.blobs().join(hex_of(digest))
    }

    fn index(&self, digest: &str) -> PathBuf {
        self.root.join("indexes").join(hex_of(digest))
    }

    fn archives(&self) -> PathBuf {
        self.root.join("archives")
    }

    /// The blob, if the cache has it with this size.
    fn has(&self, blob: &BlobRef) -> bool {
        fs::metadata(self.blob(&blob.digest)).is_ok_and(|m| m.is_file() && m.len() == blob.size)
    }

    /// The image manifest `digest` names: itself, or what the index of
    /// that digest led to when it was pulled.
    fn image_manifest(&self, digest: &str) -> String {
        match fs::read_to_string(self.index(digest)) {
            Ok(text) if is_sha256(text.trim()) => text.trim().to_owned(),
            _ => digest.to_owned(),
        }
    }

    /// The manifest's blobs, when the manifest and every blob it names are
    /// cached.
    fn complete(&self, manifest: &str) -> Option<ImageBlobs> {
        let bytes = fs::read(self.blob(manifest)).ok()?;
        let blobs = image_blobs(&bytes).ok()?;
        let all = std::iter::once(&blobs.config).chain(&blobs.layers);
        all.clone().all(|b| self.has(b)).then_some(blobs)
    }
}

/// The registry client, made when a first request is needed (so a build
/// from the cache reads no credentials and contacts nothing).
struct LazyClient<'a> {
    ctx: &'a PullContext<'a>,
    client: Option<Client>,
}

impl<'a> LazyClient<'a> {
    fn new(ctx: &'a PullContext<'a>) -> Self {
        LazyClient { ctx, client: None }
    }

    fn used(&self) -> bool {
        self.client.is_some()
    }

    fn get(&mut self) -> Result<&Client, Box<PullError>> {
        if self.client.is_none() {
            self.client = Some(make_client(self.ctx)?);
        }
        Ok(self.client.as_ref().expect("the client was just made"))
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as docker
/// and skopeo read it.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker/config.json"))
}

fn make_client(ctx: &PullContext) -> Result<Client, Box<PullError>> {
    let path = docker_config_path();
    let docker_config = match &path {
        Some(path) => match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(PullError::DockerConfig {
                    path: path.clone(),
                    source,
                }
                .into())
            }
        },
        None => None,
    };
    let settings = ctx.registries;
    Client::new(ClientOptions {
        insecure: settings.insecure.clone(),
        mirrors: settings.mirrors.clone(),
        ca_pem: settings.ca.clone().unwrap_or_default().into_bytes(),
        docker_config: docker_config.clone(),
        ..ClientOptions::default()
    })
    .map_err(|source| {
        PullError::Setup {
            registries: ctx
                .registries_origin
                .map_or_else(|| "none".to_owned(), ToString::to_string),
            docker_config: match (&path, &docker_config) {
                (Some(path), Some(_)) => path.display().to_string(),
                _ => "none".to_owned(),
            },
            source,
        }
        .into()
    })
}

/// One reference being pulled.
struct Puller<'a> {
    ctx: &'a PullContext<'a>,
    cache: &'a PullCache,
    subject: &'a Subject,
    reference: &'a Reference,
    stage: &'a crate::progress::Stage,
}

impl Puller<'_> {
    fn registry_err(&self, step: &'static str) -> impl FnOnce(RegistryError) -> Box<PullError> {
        let subject = self.subject.clone();
        move |source| {
            PullError::Registry {
                subject,
                step,
                source,
            }
            .into()
        }
    }

    fn cache_err(
        &self,
        step: &'static str,
        path: &Path,
    ) -> impl FnOnce(io::Error) -> Box<PullError> {
        let subject = self.subject.clone();
        let path = path.to_owned();
        move |source| {
            PullError::Cache {
                subject,
                step,
                path,
                source,
            }
            .into()
        }
    }

    /// The digest to pull: the reference's, the lock's, or the tag's now.
    fn wanted(&self, client: &mut LazyClient) -> Result<String, Box<PullError>> {
        if let Some(digest) = &self.reference.digest {
            return Ok(digest.clone());
        }
        match self.ctx.locked {
            Some(lock) => {
                let Some(entry) = lock.get(&self.subject.reference) else {
                    return Err(PullError::NotLocked {
                        subject: self.subject.clone(),
                        lockfile: self.ctx.lockfile.to_owned(),
                    }
                    .into());
                };
                if !is_sha256(&entry.digest) {
                    return Err(PullError::BadLockDigest {
                        subject: self.subject.clone(),
                        lockfile: self.ctx.lockfile.to_owned(),
                        digest: entry.digest.clone(),
                    }
                    .into());
                }
                Ok(entry.digest.clone())
            }
            None => Ok(client
                .get()?
                .resolve(self.reference)
                .map_err(self.registry_err("resolving the tag"))?
                .manifest_digest),
        }
    }

    /// Makes sure the image manifest and its blobs are cached; answers the
    /// manifest's digest and the bytes fetched.
    fn pull(&self, client: &mut LazyClient) -> Result<(String, u64), Box<PullError>> {
        let wanted = self.wanted(client)?;
        let manifest = self.cache.image_manifest(&wanted);
        if self.cache.complete(&manifest).is_some() {
            return Ok((manifest, 0));
        }
        let pinned = Reference {
            digest: Some(wanted.clone()),
            ..self.reference.clone()
        };
        let client = client.get()?;
        let root = &self.cache.root;
        let blobs = self.cache.blobs();
        fs::create_dir_all(&blobs).map_err(self.cache_err("cannot create", &blobs))?;
        // Pulled into a scratch layout next to the cache (same file
        // system), then moved in blob by blob: the cache holds only blobs
        // the pull verified.
        let scratch = tempfile::Builder::new()
            .prefix(".pull-")
            .tempdir_in(root)
            .map_err(self.cache_err("cannot create a scratch directory in", root))?;
        let layout = scratch.path().join("layout");
        let have = |digest: &str| {
            let path = blobs.join(hex_of(digest));
            path.is_file().then_some(path)
        };
        let bars = self.stage.blobs(&self.subject.reference);
        let pulled = client
            .pull_to_layout(&pinned, &layout, &have, &|event| bars.event(event))
            .map_err(self.registry_err("pulling"))?;
        drop(bars);
        let pulled_blobs = layout.join("blobs/sha256");
        let entries = fs::read_dir(&pulled_blobs)
            .map_err(self.cache_err("cannot read the pulled layout", &pulled_blobs))?;
        for entry in entries {
            let entry =
                entry.map_err(self.cache_err("cannot read the pulled layout", &pulled_blobs))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| is_hex64(n)) else {
                continue;
            };
            let target = blobs.join(name);
            if !target.exists() {
                fs::rename(entry.path(), &target)
                    .map_err(self.cache_err("cannot move a pulled blob to", &target))?;
            }
        }
        if pulled.manifest_digest != wanted {
            // `wanted` named an index: remember where it led.
            let indexes = root.join("indexes");
            fs::create_dir_all(&indexes).map_err(self.cache_err("cannot create", &indexes))?;
            let path = self.cache.index(&wanted);
            mkhost_shared::fs::write_atomic(&path, pulled.manifest_digest.as_bytes(), 0o644)
                .map_err(self.cache_err("cannot write", &path))?;
        }
        Ok((pulled.manifest_digest, pulled.bytes_fetched))
    }

    /// The layout tar of the cached manifest under the canonical name,
    /// made once per (name, manifest).
    fn layout_tar(&self, manifest: &str) -> Result<PathBuf, Box<PullError>> {
        let key = hex(&Sha256::digest(
            format!("{TAR_FORMAT}\n{}\n{manifest}\n", self.subject.reference).as_bytes(),
        ));
        let dir = self.cache.archives();
        let path = dir.join(format!("{key}.tar"));
        if path.is_file() {
            return Ok(path);
        }
        let manifest_path = self.cache.blob(manifest);
        let manifest_bytes = fs::read(&manifest_path)
            .map_err(self.cache_err("cannot read the cached manifest", &manifest_path))?;
        let blobs = image_blobs(&manifest_bytes).map_err(|source| PullError::CachedManifest {
            subject: self.subject.clone(),
            path: manifest_path.clone(),
            source,
        })?;
        fs::create_dir_all(&dir).map_err(self.cache_err("cannot create", &dir))?;
        let temp = tempfile::Builder::new()
            .prefix(".tar-")
            .tempfile_in(&dir)
            .map_err(self.cache_err("cannot create a temporary file in", &dir))?;
        let index = layout_index(
            &self.subject.reference,
            &blobs.media_type,
            manifest,
            manifest_bytes.len() as u64,
        );
        // Every entry by its path: blobs/…, index.json, oci-layout.
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        entries.insert(
            "oci-layout".into(),
            Entry::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        );
        entries.insert("index.json".into(), Entry::Bytes(index));
        let manifest_ref = BlobRef {
            digest: manifest.to_owned(),
            size: manifest_bytes.len() as u64,
        };
        for blob in [&manifest_ref, &blobs.config]
            .into_iter()
            .chain(&blobs.layers)
        {
            entries.insert(
                format!("blobs/sha256/{}", hex_of(&blob.digest)),
                Entry::Blob(blob.clone()),
            );
        }
        let mut tar = tar::Builder::new(BufWriter::new(temp.as_file()));
        for (name, entry) in &entries {
            match entry {
                Entry::Bytes(bytes) => append(&mut tar, name, bytes.len() as u64, &bytes[..])
                    .map_err(self.cache_err("cannot write", temp.path()))?,
                Entry::Blob(blob) => self.append_blob(&mut tar, name, blob, temp.path())?,
            }
        }
        tar.into_inner()
            .and_then(|mut out| out.flush())
            .map_err(self.cache_err("cannot write", temp.path()))?;
        temp.persist(&path)
            .map_err(|e| self.cache_err("cannot write", &path)(e.error))?;
        Ok(path)
    }

    /// Appends a cached blob, hashing it on the way; a blob that does not
    /// hold its digest is removed and is an error.
    fn append_blob(
        &self,
        tar: &mut tar::Builder<BufWriter<&File>>,
        name: &str,
        blob: &BlobRef,
        temp: &Path,
    ) -> Result<(), Box<PullError>> {
        let path = self.cache.blob(&blob.digest);
        let file =
            File::open(&path).map_err(self.cache_err("cannot read the cached blob", &path))?;
        let mut reader = Hashing {
            inner: file.take(blob.size),
            hasher: Sha256::new(),
            read: 0,
        };
        append(tar, name, blob.size, &mut reader)
            .map_err(self.cache_err("cannot copy the cached blobs into the layout tar", temp))?;
        let got = format!("sha256:{}", hex(&reader.hasher.finalize()));
        if reader.read != blob.size || got != blob.digest {
            let _ = fs::remove_file(&path);
            return Err(PullError::CorruptBlob {
                subject: self.subject.clone(),
                path,
                digest: blob.digest.clone(),
            }
            .into());
        }
        Ok(())
    }
}

/// What goes into the tar under a name.
enum Entry {
    Bytes(Vec<u8>),
    Blob(BlobRef),
}

/// A reader that hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// One regular file with fixed metadata (0644, owner 0, mtime 0).
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    len: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(len);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data)
}

/// `index.json` naming the one manifest by `name`.
fn layout_index(name: &str, media_type: &str, digest: &str, size: u64) -> Vec<u8> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": { REF_NAME: name },
        }],
    });
    index.to_string().into_bytes()
}

/// The hex part of a `sha256:` digest.
fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `sha256:` and 64 lowercase hex digits.
fn is_sha256(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(is_hex64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_name_files() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert!(is_sha256(&good));
        assert!(!is_sha256(&good.to_uppercase()));
        assert!(!is_sha256("sha256:../../etc/passwd"));
        assert!(!is_sha256(&format!("sha512:{}", "ab".repeat(32))));
    }

    #[test]
    fn layout_tars_are_the_same_bytes_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let mut tar = tar::Builder::new(Vec::new());
            append(&mut tar, "index.json", 2, &b"{}"[..]).unwrap();
            append(&mut tar, name, 3, &b"abc"[..]).unwrap();
            tar.into_inner().unwrap()
        };
        assert_eq!(write("blobs/x"), write("blobs/x"));
        let bytes = write("blobs/x");
        fs::write(dir.path().join("t.tar"), &bytes).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.mode().unwrap(), 0o644);
        }
        let index: serde_json::Value = serde_json::from_slice(&layout_index(
            "docker.io/library/nginx:1.27",
            mkhost_registry::OCI_MANIFEST,
            &format!("sha256:{}", "0".repeat(64)),
            7,
        ))
        .unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"][REF_NAME],
            "docker.io/library/nginx:1.27"
        );
    }
}
