//! Named volumes and bind mounts of host directories (`-v`).
//!
//! This module owns the volume root ([`DaemonOptions::volumes`](crate::daemon::DaemonOptions),
//! `/var/lib/hostd-volumes` on a host): one directory per named volume,
//! `<root>/<name>/`, holding the data in `_data/` and its metadata (creation
//! time, labels) in `volume.json`. A volume is made in a hidden staging
//! directory and renamed into place, so a crash never leaves half a volume
//! under its name; leftovers of staging are removed when the daemon starts.
//!
//! It also decides which host directories a container may bind: only those
//! whose canonical path (symlinks resolved) lies under one of the allowed
//! roots (`--bind-root`, `/srv` by default).
//!
//! A `run` [`prepare`](Volumes::prepare)s its mounts: bind sources are
//! checked first, then named volumes are created on first use; the answer is
//! a [`Lease`] that keeps `rm` away from those volumes until the container is
//! in the manager's table (from then on its record names them), and that
//! removes the volumes it created if the run fails. Whether a volume is in
//! use is the container manager's to say: [`Volumes::remove`] asks the
//! caller.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::log::log;
use mkhost_shared::container::{valid_volume_name, VolumeMount};
use mkhost_shared::control::{VolumeInfo, VolumeStatus};
use mkhost_shared::fs::write_atomic;

/// Each volume's data directory, under `<root>/<name>/`.
pub const DATA_DIR: &str = "_data";
/// Each volume's metadata file, under `<root>/<name>/`.
pub const META_FILE: &str = "volume.json";
/// Prefix of staging directories in the root (never a valid volume name).
const STAGING: &str = ".staging-";

/// `statfs` magic numbers of file systems that live in RAM.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Why a volume request or a mount was refused.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A name that cannot name a volume.
    #[error("invalid volume name {0:?}: letters, digits, '_', '.' and '-', starting with a letter or digit, at most 128; no '/' or '..' (for a host directory use -v /srv/dir:/path)")]
    Name(String),
    /// No such volume.
    #[error("no volume named {0:?}")]
    NotFound(String),
    /// Containers still name the volume.
    #[error("volume {name:?} is in use by container(s) {}: remove them first (hostd rm)", containers.join(", "))]
    InUse {
        /// The volume.
        name: String,
        /// The containers.
        containers: Vec<String>,
    },
    /// A file-system step failed.
    #[error("volume {name:?}: cannot {what} {path}: {source}", path = path.display())]
    Io {
        /// The volume (or bind source).
        name: String,
        /// The step.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A bind source that does not resolve to a directory.
    #[error("bind mount source {path}: {source}; bind mounts take an existing directory under {roots} (hostd daemon --bind-root DIR)", roots = show_roots(roots))]
    BindSource {
        /// The path as given.
        path: String,
        /// The allowed roots.
        roots: Vec<PathBuf>,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// A bind source outside every allowed root.
    #[error("bind mount source {path} (resolved: {}) is outside the allowed roots {}: bind a directory under them, or start the daemon with --bind-root DIR", resolved.display(), show_roots(roots))]
    NotAllowed {
        /// The path as given.
        path: String,
        /// Its canonical path.
        resolved: PathBuf,
        /// The allowed roots.
        roots: Vec<PathBuf>,
    },
}

/// A [`VolumeError::Io`] maker for `map_err`.
fn io_error(name: &str, what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError {
    let (name, path) = (name.to_string(), path.to_path_buf());
    move |source| VolumeError::Io {
        name,
        what,
        path,
        source,
    }
}

fn show_roots(roots: &[PathBuf]) -> String {
    if roots.is_empty() {
        return "(none)".to_string();
    }
    roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `volume.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    /// RFC 3339.
    created: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

/// A mount a container gets: a host directory bound at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The host directory (a volume's `_data`, or a bind source's
    /// canonical path).
    pub source: PathBuf,
    /// The path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// A named volume that is still empty: it gets a copy of what the image
    /// has at `target` (as Docker does).
    pub fill: bool,
}

/// The named volumes and the bind-mount policy.
pub struct Volumes {
    root: PathBuf,
    bind_roots: Vec<PathBuf>,
    /// Volumes `run`s in progress hold; the lock also serialises creating
    /// and removing.
    leases: Mutex<BTreeMap<String, Held>>,
}

/// How many `run`s in progress hold a volume, and whether more than one
/// did at some point (then a failed run that created it leaves it: another
/// container may use it by now).
#[derive(Debug, Default)]
struct Held {
    count: usize,
    shared: bool,
}

/// Volumes a `run` in progress uses: `rm` refuses them until dropped. The
/// volumes it created are removed on drop unless [`Lease::keep`] was called.
pub struct Lease<'a> {
    volumes: &'a Volumes,
    names: Vec<String>,
    created: Vec<String>,
}

impl Lease<'_> {
    /// The run succeeded: what it created stays.
    pub fn keep(&mut self) {
        self.created.clear();
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut leases = self.volumes.lock();
        let mut shared = Vec::new();
        for name in &self.names {
            if let Some(held) = leases.get_mut(name) {
                held.count -= 1;
                if held.shared {
                    shared.push(name);
                }
                if held.count == 0 {
                    leases.remove(name);
                }
            }
        }
        for name in &self.created {
            // Another run picked it up meanwhile: it stays.
            if shared.contains(&name) {
                continue;
            }
            if let Err(e) = fs::remove_dir_all(self.volumes.root.join(name)) {
                log(&format!(
                    "volume {name}: cannot remove after a failed run: {e}"
                ));
            }
        }
    }
}

impl Volumes {
    /// Volumes under `root` (created now if missing; a failure is logged and
    /// met again by each request), binds allowed under `bind_roots`.
    /// Removes what an interrupted creation left.
    pub fn new(root: &Path, bind_roots: &[PathBuf]) -> Volumes {
        let volumes = Volumes {
            root: root.to_path_buf(),
            bind_roots: bind_roots.to_vec(),
            leases: Mutex::new(BTreeMap::new()),
        };
        match volumes.ensure_root() {
            Ok(()) => volumes.clear_staging(),
            Err(e) => log(&format!("volumes unavailable for now: {e}")),
        }
        volumes
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Held>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_root(&self) -> Result<(), VolumeError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| VolumeError::Io {
                name: String::new(),
                what: "create the volume root",
                path: self.root.clone(),
                source,
            })
    }

    fn clear_staging(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(STAGING) {
                let path = entry.path();
                match fs::remove_dir_all(&path) {
                    Ok(()) => log(&format!("volumes: removed {}", path.display())),
                    Err(e) => log(&format!("volumes: cannot remove {}: {e}", path.display())),
                }
            }
        }
    }

    fn check_name(name: &str) -> Result<(), VolumeError> {
        if valid_volume_name(name) {
            Ok(())
        } else {
            Err(VolumeError::Name(name.to_string()))
        }
    }

    /// `<root>/<name>/_data`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.root.join(name).join(DATA_DIR)
    }

    /// Creates volume `name` unless it exists; answers it, and whether it
    /// was created now.
    fn create_locked(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool, VolumeError> {
        Self::check_name(name)?;
        let dir = self.root.join(name);
        if dir.is_dir() {
            return Ok(false);
        }
        self.ensure_root()?;
        let io = |what, path: &Path| io_error(name, what, path);
        let staging = self
            .root
            .join(format!("{STAGING}{name}-{}", std::process::id()));
        let made = (|| {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&staging)
                .map_err(io("create", &staging))?;
            let data = staging.join(DATA_DIR);
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&data)
                .map_err(io("create", &data))?;
            // The umask may have narrowed it; a volume's root is 0755 as
            // Docker's, until an image's copy sets its own.
            fs::set_permissions(&data, fs::Permissions::from_mode(0o755))
                .map_err(io("chmod", &data))?;
            let meta = Meta {
                created: mkhost_shared::time::rfc3339_now(),
                labels: labels.clone(),
            };
            let meta_path = staging.join(META_FILE);
            let bytes = serde_json::to_vec_pretty(&meta).unwrap_or_default();
            write_atomic(&meta_path, &bytes, 0o644).map_err(io("write", &meta_path))?;
            fs::rename(&staging, &dir).map_err(io("rename into place", &dir))?;
            sync_dir(&self.root).map_err(io("sync", &self.root))
        })();
        if made.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        made?;
        log(&format!("created volume {name}"));
        Ok(true)
    }

    /// `volume create`: creates `name` (an existing one is answered as it
    /// is, as Docker does).
    pub fn create(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<VolumeInfo, VolumeError> {
        let _guard = self.lock();
        self.create_locked(name, labels)?;
        self.info(name)
    }

    /// One volume (without its users: the caller adds them).
    pub fn info(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        Self::check_name(name)?;
        let dir = self.root.join(name);
        if !dir.join(DATA_DIR).is_dir() {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        // Metadata that cannot be read does not hide the data.
        let meta: Meta = fs::read(dir.join(META_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(VolumeInfo {
            name: name.to_string(),
            mountpoint: dir.join(DATA_DIR).display().to_string(),
            created: meta.created,
            labels: meta.labels,
            containers: Vec::new(),
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(VolumeError::Io {
                    name: String::new(),
                    what: "read the volume root",
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| valid_volume_name(n))
            .collect();
        names.sort();
        Ok(names.iter().filter_map(|n| self.info(n).ok()).collect())
    }

    /// Removes `name` and its data unless `users` (asked under the lock)
    /// names a container or a `run` in progress holds it.
    pub fn remove(
        &self,
        name: &str,
        users: impl FnOnce() -> Vec<String>,
    ) -> Result<VolumeInfo, VolumeError> {
        let leases = self.lock();
        let info = self.info(name)?;
        let mut containers = users();
        if leases.contains_key(name) {
            containers.push("(a container being created)".to_string());
        }
        if !containers.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers,
            });
        }
        // Renamed out of the way first: a removal cut short leaves a
        // staging directory (cleared at the next start), not half a volume.
        let dir = self.root.join(name);
        let doomed = self
            .root
            .join(format!("{STAGING}rm-{name}-{}", std::process::id()));
        let io = |what, path: &Path| io_error(name, what, path);
        fs::rename(&dir, &doomed).map_err(io("rename", &dir))?;
        let _ = sync_dir(&self.root);
        fs::remove_dir_all(&doomed).map_err(io("remove", &doomed))?;
        log(&format!("removed volume {name}"));
        Ok(info)
    }

    /// What a container's `-v` mounts are on the host: bind sources checked
    /// against the allowed roots first (nothing is created if one fails),
    /// then named volumes created where missing. The lease keeps them.
    pub fn prepare(
        &self,
        mounts: &[VolumeMount],
    ) -> Result<(Vec<Prepared>, Lease<'_>), VolumeError> {
        let mut binds = BTreeMap::new();
        for m in mounts.iter().filter(|m| m.is_bind()) {
            binds.insert(m.source.clone(), self.bind_source(&m.source)?);
        }
        let mut leases = self.lock();
        let mut lease = Lease {
            volumes: self,
            names: Vec::new(),
            created: Vec::new(),
        };
        let mut prepared = Vec::new();
        for m in mounts {
            let (source, fill) = match binds.get(&m.source) {
                Some(path) => (path.clone(), false),
                None => {
                    let made = self.create_locked(&m.source, &BTreeMap::new());
                    let made = match made {
                        Ok(made) => made,
                        Err(e) => {
                            drop(leases);
                            return Err(e);
                        }
                    };
                    if made {
                        lease.created.push(m.source.clone());
                    }
                    if !lease.names.contains(&m.source) {
                        let held = leases.entry(m.source.clone()).or_default();
                        held.count += 1;
                        held.shared |= held.count > 1;
                        lease.names.push(m.source.clone());
                    }
                    let data = self.data_dir(&m.source);
                    let empty = fs::read_dir(&data).is_ok_and(|mut d| d.next().is_none());
                    (data, empty)
                }
            };
            prepared.push(Prepared {
                source,
                target: m.target.clone(),
                read_only: m.read_only,
                fill,
            });
        }
        drop(leases);
        Ok((prepared, lease))
    }

    /// The canonical path of bind source `path` if it is a directory under
    /// an allowed root (both with symlinks resolved).
    pub fn bind_source(&self, path: &str) -> Result<PathBuf, VolumeError> {
        let bad = |source| VolumeError::BindSource {
            path: path.to_string(),
            roots: self.bind_roots.clone(),
            source,
        };
        let resolved = fs::canonicalize(path).map_err(bad)?;
        let allowed = self
            .bind_roots
            .iter()
            .filter_map(|r| fs::canonicalize(r).ok())
            .any(|root| resolved.starts_with(&root));
        if !allowed {
            return Err(VolumeError::NotAllowed {
                path: path.to_string(),
                resolved,
                roots: self.bind_roots.clone(),
            });
        }
        if !resolved.is_dir() {
            return Err(bad(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            )));
        }
        Ok(resolved)
    }

    /// The `status` part: how many, where, and whether on a disk.
    pub fn status(&self) -> VolumeStatus {
        let count = self.list().map_or(0, |l| l.len());
        let (persistent, filesystem) = match crate::os::statfs_type(&self.root) {
            Ok(magic) => (
                magic != TMPFS_MAGIC && magic != RAMFS_MAGIC,
                filesystem_name(magic),
            ),
            Err(e) => (false, format!("unknown ({e})")),
        };
        VolumeStatus {
            count: u64::try_from(count).unwrap_or(u64::MAX),
            root: self.root.display().to_string(),
            persistent,
            filesystem,
        }
    }
}

/// A file system's name from its `statfs` magic (hex when unknown).
fn filesystem_name(magic: i64) -> String {
    match magic {
        TMPFS_MAGIC => "tmpfs".into(),
        RAMFS_MAGIC => "ramfs".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlay".into(),
        other => format!("{other:#x}"),
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(text: &str) -> VolumeMount {
        VolumeMount::parse(text).unwrap()
    }

    #[test]
    fn volumes_are_created_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volumes");
        fs::create_dir_all(root.join(".staging-x-1/_data")).unwrap();
        let volumes = Volumes::new(&root, &[]);
        assert!(!root.join(".staging-x-1").exists(), "staging not cleared");
        let labels = [("k".to_string(), "v".to_string())].into();
        let info = volumes.create("data", &labels).unwrap();
        assert_eq!(
            info.mountpoint,
            root.join("data/_data").display().to_string()
        );
        assert_eq!(info.labels, labels);
        assert!(!info.created.is_empty());
        // Again: the same volume, labels as first given.
        assert_eq!(volumes.create("data", &BTreeMap::new()).unwrap(), info);
        fs::write(root.join("data/_data/f"), b"x").unwrap();
        assert_eq!(volumes.list().unwrap(), vec![info.clone()]);
        assert_eq!(volumes.status().count, 1);
        for bad in ["../x", "a/b", "", ".hidden", ".."] {
            assert!(
                matches!(volumes.create(bad, &labels), Err(VolumeError::Name(_))),
                "{bad}"
            );
        }
        let e = volumes.remove("data", || vec!["web".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "volume \"data\" is in use by container(s) web: remove them first (hostd rm)"
        );
        assert!(root.join("data/_data/f").exists());
        volumes.remove("data", Vec::new).unwrap();
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        assert!(matches!(
            volumes.remove("data", Vec::new),
            Err(VolumeError::NotFound(_))
        ));
    }

    #[test]
    fn binds_stay_under_the_allowed_roots() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("srv");
        fs::create_dir_all(allowed.join("www")).unwrap();
        fs::create_dir_all(dir.path().join("secret")).unwrap();
        fs::write(allowed.join("file"), b"").unwrap();
        std::os::unix::fs::symlink("../secret", allowed.join("link")).unwrap();
        std::os::unix::fs::symlink("www", allowed.join("inside")).unwrap();
        let volumes = Volumes::new(&dir.path().join("volumes"), std::slice::from_ref(&allowed));
        let www = allowed.join("www");
        assert_eq!(volumes.bind_source(www.to_str().unwrap()).unwrap(), www);
        let inside = allowed.join("inside");
        assert_eq!(volumes.bind_source(inside.to_str().unwrap()).unwrap(), www);
        for outside in [dir.path().join("secret"), allowed.join("link")] {
            let e = volumes.bind_source(outside.to_str().unwrap()).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, VolumeError::NotAllowed { .. }), "{text}");
            assert!(
                text.contains(&allowed.display().to_string()) && text.contains("--bind-root"),
                "{text}"
            );
        }
        for bad in [allowed.join("file"), allowed.join("missing")] {
            let e = volumes.bind_source(bad.to_str().unwrap()).unwrap_err();
            assert!(matches!(e, VolumeError::BindSource { .. }), "{e}");
        }
    }

    #[test]
    fn a_failed_prepare_or_run_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volumes");
        let volumes = Volumes::new(&root, &[dir.path().to_path_buf()]);
        // A bad bind after a new volume: neither is made.
        let mounts = [mount("new:/a"), mount("/nonexistent/x:/b")];
        assert!(volumes.prepare(&mounts).is_err());
        assert!(volumes.list().unwrap().is_empty());
        // A run that fails after prepare: its new volume goes, an old one stays.
        volumes.create("old", &BTreeMap::new()).unwrap();
        let bind = format!("{}:/c:ro", dir.path().display());
        let (prepared, lease) = volumes
            .prepare(&[mount("new:/a"), mount("old:/b"), mount(&bind)])
            .unwrap();
        assert_eq!(prepared.len(), 3);
        assert!(prepared[0].fill && prepared[1].fill && !prepared[2].fill);
        assert!(prepared[2].read_only);
        assert_eq!(prepared[0].source, root.join("new/_data"));
        let e = volumes.remove("old", Vec::new).unwrap_err();
        assert!(e.to_string().contains("being created"), "{e}");
        drop(lease);
        let names: Vec<String> = volumes
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["old"]);
        // A kept lease keeps what it made.
        let (_, mut lease) = volumes.prepare(&[mount("new:/a")]).unwrap();
        lease.keep();
        drop(lease);
        assert_eq!(volumes.list().unwrap().len(), 2);
        volumes.remove("old", Vec::new).unwrap();
    }

    #[test]
    fn file_systems_are_named_from_their_magic() {
        assert_eq!(filesystem_name(TMPFS_MAGIC), "tmpfs");
        assert_eq!(filesystem_name(0xEF53), "ext4");
        assert_eq!(filesystem_name(0x1234), "0x1234");
    }
}
