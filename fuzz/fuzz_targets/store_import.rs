//! The image store's importer (tar archives, OCI layouts, docker save,
//! rootfs tars, compressed layers): any file is imported or refused, and a
//! refusal leaves the store as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = mkhost_store::Store::open(dir.path().join("store")).expect("store");
    let file = dir.path().join("image.tar");
    std::fs::write(&file, data).expect("write archive");
    if store.import(&file).is_err() {
        assert!(store.list().expect("list").is_empty());
    }
});
