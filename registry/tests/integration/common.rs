//! Shared test fixtures: the registry process, test images and pushing
//! come from [`mkhost_registry::testkit`] (mkhost's tests use them too);
//! here are the client helpers and layout checks.

use std::fs;
use std::path::{Path, PathBuf};

pub use mkhost_registry::testkit::*;
use mkhost_registry::{Client, ClientOptions, Progress, Pulled, Reference, RegistryError};
use sha2::{Digest as _, Sha256};

/// The tools the registry tests need.
pub fn tools() -> bool {
    require_tools(&["docker-registry", "skopeo", "umoci", "openssl", "htpasswd"])
}

/// A client speaking plain HTTP to `host`.
pub fn insecure_client(host: &str) -> Client {
    Client::new(ClientOptions {
        insecure: vec![host.to_owned()],
        ..ClientOptions::default()
    })
    .unwrap()
}

pub fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn no_blob(_: &str) -> Option<PathBuf> {
    None
}

fn no_progress(_: Progress) {}

/// Pulls without reuse or progress.
pub fn pull(client: &Client, text: &str, layout: &Path) -> Result<Pulled, RegistryError> {
    client.pull_to_layout(&reference(text), layout, &no_blob, &no_progress)
}

/// Every file in `layout/blobs/sha256` is named by the sha256 of its
/// content (no `*.tmp`, no unverified blob); returns how many there are.
pub fn check_blobs(layout: &Path) -> usize {
    let dir = layout.join("blobs/sha256");
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(!name.ends_with(".tmp"), "{name} left in {}", dir.display());
        let hex = format!("{:x}", Sha256::digest(fs::read(entry.path()).unwrap()));
        assert_eq!(name, hex, "blob {name} does not hold its content");
        count += 1;
    }
    count
}
