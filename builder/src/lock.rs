//! `mkhost.lock`: the exact inputs (package versions and sha256) of each profile's
//! last build. `mkhost build --locked` fetches those versions and refuses to
//! build when anything differs.
//!
//! Container images pulled at build time are recorded by canonical
//! reference with the image manifest digest they resolved to
//! (`[profiles.NAME.images."docker.io/library/nginx:1.27"] digest =
//! "sha256:…"`); `--locked` pulls exactly that digest ([`crate::pull`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sources::InputRecord;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock file {path} is not valid: {message} (delete it and build without --locked to write a new one)")]
    Parse { path: PathBuf, message: String },
    #[error("--locked: {path} has no entry for profile {profile:?}; build once without --locked to record its inputs")]
    NoEntry { path: PathBuf, profile: String },
    #[error("--locked: the {what} differs from {path}:\n  locked: {locked}\n  now:    {actual}\nrun without --locked to accept the new input")]
    Mismatch {
        path: PathBuf,
        what: String,
        locked: String,
        actual: String,
    },
    #[error("cannot write lock file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    pub kernel: InputRecord,
    pub stub: InputRecord,
    /// Images pulled at build time, by canonical reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageLock>,
}

/// What a pulled image resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLock {
    /// The linux/amd64 image manifest's digest (`sha256:…`).
    pub digest: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    #[serde(default)]
    pub profiles: BTreeMap<String, LockEntry>,
}

impl LockFile {
    /// Reads the lock file; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<LockFile, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockFile::default()),
            Err(source) => {
                return Err(LockError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    pub fn entry(&self, path: &Path, profile: &str) -> Result<&LockEntry, LockError> {
        self.profiles
            .get(profile)
            .ok_or_else(|| LockError::NoEntry {
                path: path.to_path_buf(),
                profile: profile.to_string(),
            })
    }

    /// Writes the lock file atomically (temporary name, then rename).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let body = toml::to_string_pretty(self).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# Written by `mkhost build`: the exact inputs of each profile's last build.\n# `mkhost build --locked` refuses to build when they differ.\n\n{body}"
        );
        mkhost_shared::fs::write_atomic(path, text.as_bytes(), 0o644).map_err(|source| {
            LockError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// Fails when `actual` is not what the lock recorded.
pub fn check(
    path: &Path,
    what: &str,
    locked: &InputRecord,
    actual: &InputRecord,
) -> Result<(), LockError> {
    if locked == actual {
        return Ok(());
    }
    let describe = |r: &InputRecord| {
        format!(
            "{} {} {} sha256 {}",
            r.source,
            r.package.as_deref().unwrap_or(&r.file),
            r.version.as_deref().unwrap_or(""),
            r.sha256
        )
    };
    Err(LockError::Mismatch {
        path: path.to_path_buf(),
        what: what.to_string(),
        locked: describe(locked),
        actual: describe(actual),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str) -> InputRecord {
        InputRecord {
            source: "deb".into(),
            requested: Some("linux-image-amd64".into()),
            package: Some("linux-image-6.1.0-56-amd64".into()),
            version: Some(version.into()),
            sha256: format!("sha-{version}"),
            file: "vmlinuz-6.1.0-56-amd64".into(),
            file_sha256: "f".into(),
        }
    }

    #[test]
    fn roundtrip_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mkhost.lock");
        assert!(LockFile::read(&path).unwrap().profiles.is_empty());
        let mut lock = LockFile::default();
        lock.profiles.insert(
            "qemu".into(),
            LockEntry {
                kernel: record("1"),
                stub: record("2"),
                images: BTreeMap::from([(
                    "docker.io/library/nginx:1.27".to_owned(),
                    ImageLock {
                        digest: format!("sha256:{}", "a".repeat(64)),
                    },
                )]),
            },
        );
        lock.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[profiles.qemu.images.\"docker.io/library/nginx:1.27\"]"),
            "{text}"
        );
        let back = LockFile::read(&path).unwrap();
        assert_eq!(back.profiles, lock.profiles);
        let entry = back.entry(&path, "qemu").unwrap();
        assert!(check(&path, "kernel", &entry.kernel, &record("1")).is_ok());
        let err = check(&path, "kernel", &entry.kernel, &record("9"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("locked: deb linux-image-6.1.0-56-amd64 1"),
            "{err}"
        );
        assert!(back
            .entry(&path, "rack")
            .unwrap_err()
            .to_string()
            .contains("no entry"));
        std::fs::write(&path, "profiles = 3").unwrap();
        assert!(LockFile::read(&path)
            .unwrap_err()
            .to_string()
            .contains("not valid"));
    }
}
