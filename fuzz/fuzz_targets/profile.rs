//! The profile parser: any bytes as a profile file, with and without a
//! parent it extends, must give a profile or an error, never a panic or a
//! hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("p.toml");
    std::fs::write(&path, data).expect("write profile");
    let _ = mkhost::profile::load_path(&path, &[dir.path().to_path_buf()]);
});
