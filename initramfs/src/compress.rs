//! zstd compression of the initramfs, pinned for reproducibility and for the kernel.
//!
//! Two settings matter. Multi-threaded zstd splits the input differently from the
//! single-threaded encoder, so we never enable workers: one input, one output. And the
//! kernel decompresses the initramfs in streaming mode, keeping the whole match window
//! in memory; an 8 MiB window ([`WINDOW_LOG`] = 23) is what it can be trusted with
//! early in boot, so the window log is set explicitly (high levels would pick more).
//! Frames carry their content size and a checksum.

use std::io::{self, Read};

use zstd::stream::read::Decoder;
use zstd::zstd_safe::{CParameter, DParameter};

/// 8 MiB: the kernel unpacks initramfs streaming.
pub const WINDOW_LOG: u32 = 23;

/// Largest window [`zstd_decompress`] accepts (128 MiB, zstd's own default limit).
const DECODE_WINDOW_LOG_MAX: u32 = 27;

/// The four bytes every zstd frame starts with.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Errors from compressing or decompressing.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("cannot set up the zstd encoder ({setting})")]
    Setup {
        setting: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("zstd compression of {len} bytes failed")]
    Compress {
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("input is not zstd data (bad magic)")]
    NotZstd,
    #[error("corrupt zstd data after {produced} bytes of output")]
    Corrupt {
        produced: usize,
        #[source]
        source: io::Error,
    },
    #[error("zstd data decompresses to more than the limit of {max_output} bytes")]
    TooLarge { max_output: usize },
}

/// Compress `data` as one zstd frame: single-threaded, window <= 8 MiB, content size
/// and checksum in the frame. `level` is a zstd level (1..=22; 0 = zstd's default).
pub fn zstd_compress(data: &[u8], level: i32) -> Result<Vec<u8>, CompressError> {
    let setup = |setting| move |source| CompressError::Setup { setting, source };
    let mut c = zstd::bulk::Compressor::new(level).map_err(setup("level"))?;
    c.set_parameter(CParameter::WindowLog(WINDOW_LOG))
        .map_err(setup("window log"))?;
    c.set_parameter(CParameter::ChecksumFlag(true))
        .map_err(setup("checksum"))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(setup("content size"))?;
    c.set_pledged_src_size(Some(data.len() as u64))
        .map_err(setup("pledged size"))?;
    c.compress(data).map_err(|source| CompressError::Compress {
        len: data.len(),
        source,
    })
}

/// Decompress zstd data (one or more concatenated frames), refusing to produce more
/// than `max_output` bytes.
pub fn zstd_decompress(data: &[u8], max_output: usize) -> Result<Vec<u8>, CompressError> {
    if !is_zstd(data) {
        return Err(CompressError::NotZstd);
    }
    let corrupt = |source| CompressError::Corrupt {
        produced: 0,
        source,
    };
    let mut decoder = Decoder::with_buffer(data).map_err(corrupt)?;
    decoder
        .set_parameter(DParameter::WindowLogMax(DECODE_WINDOW_LOG_MAX))
        .map_err(corrupt)?;
    let mut out = Vec::new();
    let limit = (max_output as u64).saturating_add(1);
    let result = decoder.take(limit).read_to_end(&mut out);
    if let Err(source) = result {
        return Err(CompressError::Corrupt {
            produced: out.len(),
            source,
        });
    }
    if out.len() > max_output {
        return Err(CompressError::TooLarge { max_output });
    }
    Ok(out)
}

/// Whether `data` starts with the zstd frame magic.
pub fn is_zstd(data: &[u8]) -> bool {
    data.starts_with(&ZSTD_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Compressible but not trivial input, larger than one zstd block.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    b"initramfs"[i % 9]
                }
            })
            .collect()
    }

    #[test]
    fn roundtrip_and_determinism() {
        let data = sample(1024 * 1024);
        let a = zstd_compress(&data, 19).unwrap();
        let b = zstd_compress(&data, 19).unwrap();
        assert_eq!(a, b);
        assert!(is_zstd(&a));
        assert!(a.len() < data.len() / 2);
        assert_eq!(zstd_decompress(&a, data.len()).unwrap(), data);
        let empty = zstd_compress(&[], 3).unwrap();
        assert_eq!(zstd_decompress(&empty, 0).unwrap(), b"");
    }

    #[test]
    fn bounded_and_corrupt_input() {
        let data = sample(100_000);
        let z = zstd_compress(&data, 3).unwrap();
        assert!(matches!(
            zstd_decompress(&z, 99_999),
            Err(CompressError::TooLarge { max_output: 99_999 })
        ));
        assert!(matches!(
            zstd_decompress(b"not zstd", 10),
            Err(CompressError::NotZstd)
        ));
        let mut bad = z.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xFF;
        bad[mid + 1] ^= 0x55;
        assert!(zstd_decompress(&bad, 1 << 20).is_err());
        assert!(matches!(
            zstd_decompress(&z[..z.len() - 10], 1 << 20),
            Err(CompressError::Corrupt { .. })
        ));
    }

    fn zstd_cli(args: &[&str], input: &[u8]) -> std::process::Output {
        let mut child = Command::new("zstd")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the zstd CLI must be installed for this test");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    }

    /// Level 22 alone would pick a 128 MiB window; ours must stay at 8 MiB, with the
    /// content size and checksum in the frame header, and the reference CLI must agree.
    #[test]
    fn window_is_capped_and_zstd_cli_agrees() {
        let data = sample(9 * 1024 * 1024);
        let z = zstd_compress(&data, 22).unwrap();
        // Frame header descriptor: bit 2 = checksum, bits 6-7 = content size field,
        // bit 5 = single segment (no window descriptor: window = content size).
        let fhd = z[4];
        assert_ne!(fhd & 0x04, 0, "checksum flag");
        assert_eq!(fhd & 0x20, 0, "9 MiB must not be a single segment");
        assert_ne!(fhd >> 6, 0, "content size present");
        let wd = z[5];
        let window = (1u64 << (10 + (wd >> 3))) * (8 + u64::from(wd & 7)) / 8;
        assert_eq!(window, 8 << 20);

        let out = zstd_cli(&["-d", "-c", "-q"], &z);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data, "zstd -d output differs");

        // `zstd -lv` needs a file; it prints e.g. "Window Size: 8.00 MiB (8388608 B)".
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.zst");
        std::fs::write(&path, &z).unwrap();
        let out = Command::new("zstd")
            .args(["-lv"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        let window_line = text
            .lines()
            .find(|l| l.contains("Window Size"))
            .unwrap_or_else(|| panic!("no window size in: {text}"));
        let bytes: u64 = window_line
            .rsplit('(')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse {window_line:?}"));
        assert!(bytes <= 8 << 20, "{window_line}");
        assert!(text.contains("Check: XXH64"), "{text}");
    }
}
