//! A store's directory layout: where the index, blobs, layers, staging and
//! the writer lock live below its root. Every other part of the store finds
//! its files through here.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::digest::Digest;
use crate::error::StoreError;

/// An image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root`, as it is on disk (see `Store::open`).
    pub(crate) fn at(root: PathBuf) -> Store {
        Store { root }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn incoming_dir(&self) -> PathBuf {
        self.root.join("incoming")
    }

    /// True when `path` is a directory directly under `incoming/` (the
    /// store's own downloads; symlinks and `..` resolved first).
    pub(crate) fn owns_incoming(&self, path: &Path) -> bool {
        match (
            fs::canonicalize(path),
            fs::canonicalize(self.incoming_dir()),
        ) {
            (Ok(path), Ok(incoming)) => path.parent() == Some(incoming.as_path()),
            _ => false,
        }
    }

    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub(crate) fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Takes the store's writer lock; it is released when the file drops.
    pub(crate) fn lock(&self) -> Result<File, StoreError> {
        let path = self.root.join("lock");
        let setup = |source| StoreError::Setup {
            path: path.clone(),
            source,
        };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(setup)?;
        // Blocks until this open file holds the exclusive lock; the lock goes
        // away when the descriptor is closed.
        rustix::io::retry_on_intr(|| rustix::fs::flock(&f, FlockOperation::LockExclusive))
            .map_err(io::Error::from)
            .map_err(setup)?;
        Ok(f)
    }

    /// Flushes the store's file system (before the index points at new data).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        File::open(&self.root)
            .and_then(|f| rustix::fs::syncfs(&f).map_err(io::Error::from))
            .map_err(|source| StoreError::Write {
                path: self.root.clone(),
                source,
            })
    }
}
