//! Resolving a reference to its linux/amd64 manifest, and pulling the image
//! into an OCI image layout: every byte hashed as it streams to a temporary
//! file, checked against its descriptor's digest and size, then renamed into
//! `blobs/sha256/`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::client::{Client, Endpoint};
use crate::error::{Cause, RegistryError, Step};
use crate::manifest::{self, Descriptor, Kind};
use crate::reference::Reference;

/// Manifests and indexes larger than this are refused.
pub const MANIFEST_MAX: u64 = 4 << 20;
/// Image configs larger than this are refused.
pub const CONFIG_MAX: u64 = 8 << 20;
/// Progress reports bytes at most this often.
const PROGRESS_STEP: u64 = 256 << 10;
/// The annotation naming a manifest in a layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a reference resolves to: the linux/amd64 image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Digest of the image manifest (not of the index that led to it).
    pub manifest_digest: String,
    /// Its media type (OCI or Docker schema 2).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// Digest of the image manifest written to the layout.
    pub manifest_digest: String,
    /// Digest of the image config (the image id).
    pub config_digest: String,
    /// Number of layers in the manifest.
    pub layers: usize,
    /// Bytes downloaded: manifests, index, config and layers fetched.
    pub bytes_fetched: u64,
    /// Layer blobs taken from `have_blob` instead of the registry.
    pub blobs_reused: usize,
}

/// Progress of a pull, reported from the downloading threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The manifest is known: how many layers and bytes (layers and config)
    /// the image has.
    Resolved {
        /// The image manifest's digest.
        manifest_digest: String,
        /// Number of layers.
        layers: usize,
        /// Sum of the layer and config sizes.
        total_bytes: u64,
    },
    /// A blob download started.
    BlobStarted {
        /// The blob.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// Bytes of a blob arrived (at most every 256 KiB, and at the end).
    BlobBytes {
        /// The blob.
        digest: String,
        /// Bytes so far.
        done: u64,
        /// Its size.
        size: u64,
    },
    /// A blob is in place, downloaded or `reused` from `have_blob`.
    BlobDone {
        /// The blob.
        digest: String,
        /// Taken from `have_blob`.
        reused: bool,
    },
}

/// A manifest as fetched and verified.
struct Fetched {
    bytes: Vec<u8>,
    media_type: String,
    digest: String,
    kind: Kind,
}

/// The image manifest a reference resolves to, and the bytes fetched to
/// find it.
struct ResolvedImage {
    manifest: Fetched,
    bytes_fetched: u64,
}

type StepError = (Step, Cause);

impl Client {
    /// Resolves `reference` to the linux/amd64 image manifest digest
    /// (following an index), without downloading layers.
    pub fn resolve(&self, reference: &Reference) -> Result<Resolved, RegistryError> {
        let image = self
            .resolve_image(reference)
            .map_err(|(step, cause)| failed("resolve", reference, step, cause))?;
        Ok(Resolved {
            manifest_digest: image.manifest.digest,
            media_type: image.manifest.media_type,
            size: image.manifest.bytes.len() as u64,
        })
    }

    /// Downloads the image into `layout`, an empty directory (created if
    /// missing), as an OCI image layout: `oci-layout`, `index.json` with the
    /// one manifest annotated `org.opencontainers.image.ref.name` = the tag
    /// (or `latest`), and `blobs/sha256/…`.
    ///
    /// Layers that `have_blob(digest)` has (a file holding that blob, of the
    /// descriptor's size) are hard-linked or copied instead of fetched; the
    /// config is always fetched. On error the directory may hold partial
    /// files (`*.tmp`), never a blob that failed its checks.
    pub fn pull_to_layout(
        &self,
        reference: &Reference,
        layout: &Path,
        have_blob: &(dyn Fn(&str) -> Option<PathBuf> + Sync),
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Pulled, RegistryError> {
        self.pull_inner(reference, layout, have_blob, progress)
            .map_err(|(step, cause)| failed("pull", reference, step, cause))
    }

    fn pull_inner(
        &self,
        reference: &Reference,
        layout: &Path,
        have_blob: &(dyn Fn(&str) -> Option<PathBuf> + Sync),
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Pulled, StepError> {
        let image = self.resolve_image(reference)?;
        let manifest =
            manifest::parse_image(&image.manifest.bytes).map_err(|c| (Step::Manifest, c))?;
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|source| {
            (
                Step::Layout,
                Cause::Write {
                    path: blobs.clone(),
                    source,
                },
            )
        })?;
        let total_bytes =
            manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        progress(Progress::Resolved {
            manifest_digest: image.manifest.digest.clone(),
            layers: manifest.layers.len(),
            total_bytes,
        });
        write_blob(&blobs, &image.manifest.digest, &image.manifest.bytes)
            .map_err(|c| (Step::Manifest, c))?;

        let endpoints = self.endpoints(&reference.registry);
        let no_cancel = AtomicBool::new(false);
        if manifest.config.size > CONFIG_MAX {
            return Err((
                Step::Config,
                Cause::TooLarge {
                    what: "config",
                    limit: CONFIG_MAX,
                },
            ));
        }
        let config_bytes = self
            .download(
                &endpoints,
                reference,
                &manifest.config,
                &blobs,
                progress,
                &no_cancel,
            )
            .map_err(|c| (Step::Config, c))?;

        // Each distinct layer once, `concurrency` at a time.
        let mut seen = HashSet::new();
        let layers: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|l| seen.insert(l.digest.clone()))
            .collect();
        let next = AtomicUsize::new(0);
        let cancel = AtomicBool::new(false);
        let fetched = AtomicU64::new(0);
        let reused = AtomicUsize::new(0);
        let errors: Mutex<Vec<StepError>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(layers.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(layer) = layers.get(i) else { break };
                    if cancel.load(Ordering::SeqCst) {
                        break;
                    }
                    let result = match self.reuse(layer, &blobs, have_blob) {
                        Ok(true) => {
                            reused.fetch_add(1, Ordering::SeqCst);
                            progress(Progress::BlobDone {
                                digest: layer.digest.clone(),
                                reused: true,
                            });
                            Ok(())
                        }
                        Ok(false) => self
                            .download(&endpoints, reference, layer, &blobs, progress, &cancel)
                            .map(|n| {
                                fetched.fetch_add(n, Ordering::SeqCst);
                            }),
                        Err(cause) => Err(cause),
                    };
                    if let Err(cause) = result {
                        cancel.store(true, Ordering::SeqCst);
                        errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((Step::Blob(layer.digest.clone()), cause));
                        break;
                    }
                });
            }
        });
        let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
        if !errors.is_empty() {
            let first = errors
                .iter()
                .position(|(_, c)| !matches!(c, Cause::Cancelled))
                .unwrap_or(0);
            return Err(errors.swap_remove(first));
        }

        write_layout(layout, reference, &image.manifest).map_err(|c| (Step::Layout, c))?;
        Ok(Pulled {
            manifest_digest: image.manifest.digest,
            config_digest: manifest.config.digest.clone(),
            layers: manifest.layers.len(),
            bytes_fetched: image.bytes_fetched + config_bytes + fetched.into_inner(),
            blobs_reused: reused.into_inner(),
        })
    }

    /// The image manifest `reference` names, through an index if it names
    /// one.
    fn resolve_image(&self, reference: &Reference) -> Result<ResolvedImage, StepError> {
        let top = self
            .fetch_manifest(
                reference,
                reference.manifest_key(),
                reference.digest.as_deref(),
                None,
            )
            .map_err(|c| (Step::Resolve, c))?;
        let mut bytes_fetched = top.bytes.len() as u64;
        if top.kind == Kind::Image {
            return Ok(ResolvedImage {
                manifest: top,
                bytes_fetched,
            });
        }
        let entry = manifest::choose_platform(&top.bytes).map_err(|c| (Step::Resolve, c))?;
        let image = self
            .fetch_manifest(
                reference,
                &entry.digest,
                Some(&entry.digest),
                Some(entry.size),
            )
            .map_err(|c| (Step::Manifest, c))?;
        if image.kind != Kind::Image {
            return Err((
                Step::Manifest,
                Cause::Invalid {
                    what: "index",
                    detail: format!(
                        "its linux/amd64 entry {} is not an image manifest",
                        entry.digest
                    ),
                },
            ));
        }
        bytes_fetched += image.bytes.len() as u64;
        Ok(ResolvedImage {
            manifest: image,
            bytes_fetched,
        })
    }

    /// Fetches `/manifests/<key>` from the first endpoint that serves it,
    /// checking the size cap, `expected_digest` and `expected_size` when
    /// given, and the `Docker-Content-Digest` header.
    fn fetch_manifest(
        &self,
        reference: &Reference,
        key: &str,
        expected_digest: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<Fetched, Cause> {
        if expected_size.is_some_and(|s| s > MANIFEST_MAX) {
            return Err(Cause::TooLarge {
                what: "manifest",
                limit: MANIFEST_MAX,
            });
        }
        self.each_endpoint(&reference.registry, |endpoint| {
            let answer = self.get(
                endpoint,
                &reference.repository,
                &format!("manifests/{key}"),
                Some(manifest::ACCEPT),
            )?;
            let content_type = answer.response.header("content-type").map(str::to_owned);
            let header_digest = answer
                .response
                .header("docker-content-digest")
                .map(str::to_owned);
            if let Some(length) = content_length(&answer.response) {
                if length > MANIFEST_MAX {
                    return Err(Cause::TooLarge {
                        what: "manifest",
                        limit: MANIFEST_MAX,
                    });
                }
            }
            let mut bytes = Vec::new();
            let url = answer.url;
            answer
                .response
                .into_reader()
                .take(MANIFEST_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| self.read_cause(&url, e, bytes.len() as u64, None))?;
            if bytes.len() as u64 > MANIFEST_MAX {
                return Err(Cause::TooLarge {
                    what: "manifest",
                    limit: MANIFEST_MAX,
                });
            }
            let digest = sha256_digest(&bytes);
            if let Some(expected) = expected_digest {
                if digest != expected {
                    return Err(Cause::DigestMismatch {
                        expected: expected.to_owned(),
                        got: digest,
                    });
                }
            }
            if let Some(expected) = expected_size {
                if bytes.len() as u64 != expected {
                    return Err(Cause::SizeMismatch {
                        expected,
                        got: bytes.len() as u64,
                    });
                }
            }
            if let Some(header) = header_digest.filter(|h| h.starts_with("sha256:")) {
                if header != digest {
                    return Err(Cause::HeaderDigest {
                        header,
                        got: digest,
                    });
                }
            }
            let (media_type, kind) = manifest::classify(content_type.as_deref(), &bytes)?;
            Ok(Fetched {
                bytes,
                media_type,
                digest,
                kind,
            })
        })
    }

    /// Runs `attempt` against the registry's mirrors, then the registry;
    /// the first success wins, else the registry's own error.
    fn each_endpoint<T>(
        &self,
        registry: &str,
        mut attempt: impl FnMut(&Endpoint) -> Result<T, Cause>,
    ) -> Result<T, Cause> {
        let endpoints = self.endpoints(registry);
        let mut last = None;
        for endpoint in &endpoints {
            match attempt(endpoint) {
                Ok(value) => return Ok(value),
                Err(Cause::Cancelled) => return Err(Cause::Cancelled),
                Err(cause) => last = Some(cause),
            }
        }
        Err(last.unwrap_or(Cause::Cancelled))
    }

    /// Puts the blob `have_blob` knows into place; false when it has none
    /// (or one of the wrong size).
    fn reuse(
        &self,
        blob: &Descriptor,
        blobs: &Path,
        have_blob: &(dyn Fn(&str) -> Option<PathBuf> + Sync),
    ) -> Result<bool, Cause> {
        let Some(source) = have_blob(&blob.digest) else {
            return Ok(false);
        };
        if fs::metadata(&source).map(|m| m.len()).ok() != Some(blob.size) {
            return Ok(false);
        }
        let hex = hex_of(&blob.digest);
        let target = blobs.join(hex);
        if target.exists() {
            return Ok(true);
        }
        if fs::hard_link(&source, &target).is_ok() {
            return Ok(true);
        }
        let temp = blobs.join(format!("{hex}.tmp"));
        let write = |source| Cause::Write {
            path: temp.clone(),
            source,
        };
        fs::copy(&source, &temp).map_err(write)?;
        fs::rename(&temp, &target).map_err(write)?;
        Ok(true)
    }

    /// Downloads `blob` into `blobs/<hex>` from the first endpoint that
    /// serves it intact; returns the bytes fetched.
    fn download(
        &self,
        endpoints: &[Endpoint],
        reference: &Reference,
        blob: &Descriptor,
        blobs: &Path,
        progress: &(dyn Fn(Progress) + Sync),
        cancel: &AtomicBool,
    ) -> Result<u64, Cause> {
        let hex = hex_of(&blob.digest);
        let temp = blobs.join(format!("{hex}.tmp"));
        let target = blobs.join(hex);
        progress(Progress::BlobStarted {
            digest: blob.digest.clone(),
            size: blob.size,
        });
        let mut last = None;
        for endpoint in endpoints {
            match self.download_from(endpoint, reference, blob, &temp, progress, cancel) {
                Ok(()) => {
                    fs::rename(&temp, &target).map_err(|source| Cause::Write {
                        path: target.clone(),
                        source,
                    })?;
                    progress(Progress::BlobDone {
                        digest: blob.digest.clone(),
                        reused: false,
                    });
                    return Ok(blob.size);
                }
                Err(cause) => {
                    let _ = fs::remove_file(&temp);
                    if matches!(cause, Cause::Cancelled) {
                        return Err(cause);
                    }
                    last = Some(cause);
                }
            }
        }
        Err(last.unwrap_or(Cause::Cancelled))
    }

    /// One attempt: streams the blob into `temp`, hashing and counting.
    fn download_from(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        blob: &Descriptor,
        temp: &Path,
        progress: &(dyn Fn(Progress) + Sync),
        cancel: &AtomicBool,
    ) -> Result<(), Cause> {
        let answer = self.get(
            endpoint,
            &reference.repository,
            &format!("blobs/{}", blob.digest),
            None,
        )?;
        if let Some(length) = content_length(&answer.response) {
            if length > blob.size {
                return Err(Cause::SizeMismatch {
                    expected: blob.size,
                    got: length,
                });
            }
        }
        let url = answer.url;
        let mut reader = answer.response.into_reader();
        let write = |source| Cause::Write {
            path: temp.to_owned(),
            source,
        };
        let mut file = File::create(temp).map_err(write)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut done: u64 = 0;
        let mut reported: u64 = 0;
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(Cause::Cancelled);
            }
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_cause(&url, e, done, Some(blob.size))),
            };
            done += n as u64;
            if done > blob.size {
                return Err(Cause::SizeMismatch {
                    expected: blob.size,
                    got: done,
                });
            }
            hasher.update(&buffer[..n]);
            file.write_all(&buffer[..n]).map_err(write)?;
            if done - reported >= PROGRESS_STEP {
                reported = done;
                progress(Progress::BlobBytes {
                    digest: blob.digest.clone(),
                    done,
                    size: blob.size,
                });
            }
        }
        if done != blob.size {
            return Err(Cause::SizeMismatch {
                expected: blob.size,
                got: done,
            });
        }
        let digest = hex_digest(hasher);
        if digest != blob.digest {
            return Err(Cause::DigestMismatch {
                expected: blob.digest.clone(),
                got: digest,
            });
        }
        file.flush().map_err(write)?;
        if reported != done {
            progress(Progress::BlobBytes {
                digest: blob.digest.clone(),
                done,
                size: blob.size,
            });
        }
        Ok(())
    }

    /// A failed body read: a stall, a connection closed early (when the
    /// size is known), or another I/O error.
    fn read_cause(&self, url: &str, error: io::Error, done: u64, size: Option<u64>) -> Cause {
        match error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Cause::Stalled {
                url: url.to_owned(),
                seconds: self.stall_timeout.as_secs(),
            },
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset if size.is_some() => {
                Cause::SizeMismatch {
                    expected: size.unwrap_or(0),
                    got: done,
                }
            }
            _ => Cause::Read {
                url: url.to_owned(),
                source: error,
            },
        }
    }
}

/// Writes `oci-layout` and `index.json` naming the one manifest.
fn write_layout(layout: &Path, reference: &Reference, manifest: &Fetched) -> Result<(), Cause> {
    let tag = reference.tag.as_deref().unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": [{
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.bytes.len(),
            "annotations": { REF_NAME: tag },
        }],
    });
    write_file(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_file(&layout.join("index.json"), index.to_string().as_bytes())
}

/// Writes a blob already verified in memory.
fn write_blob(blobs: &Path, digest: &str, bytes: &[u8]) -> Result<(), Cause> {
    write_file(&blobs.join(hex_of(digest)), bytes)
}

/// Writes `path` through a temporary name and a rename.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Cause> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let write = |source| Cause::Write {
        path: path.to_owned(),
        source,
    };
    fs::write(&temp, bytes).map_err(write)?;
    fs::rename(&temp, path).map_err(write)
}

fn failed(
    operation: &'static str,
    reference: &Reference,
    step: Step,
    cause: Cause,
) -> RegistryError {
    RegistryError::Failed {
        operation,
        reference: reference.canonical(),
        step,
        cause,
    }
}

fn content_length(response: &ureq::Response) -> Option<u64> {
    response.header("content-length")?.trim().parse().ok()
}

/// The hex part of a validated `sha256:` digest.
fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn sha256_digest(bytes: &[u8]) -> String {
    hex_digest(Sha256::new_with_prefix(bytes))
}

fn hex_digest(hasher: Sha256) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in hasher.finalize() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}
