//! The newc cpio reader `mkhost inspect` uses on initramfs images.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mkhost_initramfs::cpio::read_newc(data);
});
