//! `mkhost inspect`: any file (disk image, UKI, initramfs) gives a report or
//! an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mkhost::inspect::{inspect, InspectOptions};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("image");
    std::fs::write(&path, data).expect("write image");
    let _ = inspect(&path, InspectOptions { all_files: true });
});
