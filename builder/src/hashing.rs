//! Content hashes: sha256 of files and buffers, and the GUIDs and volume ids
//! derived from them (never random, so builds are reproducible).

use std::io::Read;
use std::path::Path;

use mkhost_shared::hex::encode as hex;
use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_reader(std::fs::File::open(path)?)
}

/// The sha256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// A version-4-shaped GUID derived from `label` and the content hash `seed`.
pub fn derived_uuid(seed: &str, label: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("{label}\0{seed}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A FAT volume id derived from the content hash `seed`.
pub fn derived_volume_id(seed: &str) -> u32 {
    let digest = Sha256::digest(format!("fat-volume-id\0{seed}").as_bytes());
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sha256_and_stable_derivations() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let a = derived_uuid("seed", "disk");
        assert_eq!(a, derived_uuid("seed", "disk"));
        assert_ne!(a, derived_uuid("seed", "esp"));
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(derived_volume_id("s"), derived_volume_id("s"));
    }
}
