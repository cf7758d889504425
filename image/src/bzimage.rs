//! Reads the x86 Linux boot protocol header of a `bzImage` kernel: the version string,
//! the release (what `uname -r` will print, and the `/lib/modules/<release>` to use),
//! the boot protocol version and `init_size` (how much memory the kernel needs to
//! decompress and start itself).
//!
//! Layout (Documentation/arch/x86/boot.rst): the "real-mode kernel header" starts at
//! offset 0x1f1. Offsets below are from the start of the file.

use thiserror::Error;

/// Offset of the `HdrS` magic (`header` field).
const HEADER_MAGIC_OFFSET: usize = 0x202;
/// The magic itself: "HdrS" in little-endian byte order.
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the boot protocol version (`version`, u16, major << 8 | minor).
const PROTOCOL_OFFSET: usize = 0x206;
/// Offset of `kernel_version`, a pointer to the version string minus 0x200.
const KERNEL_VERSION_PTR_OFFSET: usize = 0x20e;
/// Offset of `loadflags`; bit 0 (`LOADED_HIGH`) marks a bzImage.
const LOADFLAGS_OFFSET: usize = 0x211;
const LOADED_HIGH: u8 = 0x01;
/// Offset of `init_size` (u32, protocol 2.10+).
const INIT_SIZE_OFFSET: usize = 0x260;
/// First protocol version that has `init_size`.
const PROTOCOL_WITH_INIT_SIZE: u16 = 0x020a;
/// bzImage (`LOADED_HIGH`) needs protocol 2.00 or later.
const PROTOCOL_MIN: u16 = 0x0200;
/// Upper bound on the version string we are willing to scan for its NUL.
const MAX_VERSION_LEN: usize = 512;

/// What the boot header says about a kernel image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// The whole version string, e.g. `6.1.0-56-amd64 (debian-kernel@...) #1 SMP ...`.
    pub version: String,
    /// Its first word, e.g. `6.1.0-56-amd64` (`uname -r`).
    pub release: String,
    /// Bytes of memory the kernel needs to decompress itself (`init_size`); 0 when
    /// the boot protocol is older than 2.10 and does not carry the field.
    pub init_size: u64,
    /// Boot protocol version, major in the high byte (0x020f = 2.15).
    pub protocol: u16,
}

/// Why a byte string is not a usable bzImage.
#[derive(Debug, Error)]
pub enum BzImageError {
    #[error("kernel image is truncated: {len} bytes, the boot header needs at least {needed}")]
    Truncated { len: usize, needed: usize },
    #[error("not a linux boot image: no \"HdrS\" magic at offset {offset:#x}")]
    NoHeaderMagic { offset: usize },
    #[error("boot protocol {major}.{minor:02} is too old (bzImage needs 2.00 or later)")]
    ProtocolTooOld { major: u8, minor: u8 },
    #[error("not a bzImage: LOADED_HIGH is not set in loadflags at offset {offset:#x} (zImage?)")]
    NotBzImage { offset: usize },
    #[error(
        "kernel_version pointer at offset {offset:#x} is zero: the image carries no version string"
    )]
    NoVersion { offset: usize },
    #[error("kernel version string at offset {offset:#x} lies beyond the end of the image ({len} bytes)")]
    VersionOutOfBounds { offset: usize, len: usize },
    #[error(
        "kernel version string at offset {offset:#x} has no terminating NUL within {max} bytes"
    )]
    VersionUnterminated { offset: usize, max: usize },
    #[error("kernel version string at offset {offset:#x} is not UTF-8")]
    VersionNotUtf8 {
        offset: usize,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("kernel version string at offset {offset:#x} is empty")]
    VersionEmpty { offset: usize },
}

/// Parses the boot header of a bzImage.
///
/// Only the header is read; `kernel` may be the whole file or just its first few KiB
/// (enough to cover the version string, which lives in the setup code).
pub fn parse_bzimage(kernel: &[u8]) -> Result<KernelInfo, BzImageError> {
    let needed = LOADFLAGS_OFFSET + 1;
    if kernel.len() < needed {
        return Err(BzImageError::Truncated {
            len: kernel.len(),
            needed,
        });
    }
    if &kernel[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4] != HEADER_MAGIC {
        return Err(BzImageError::NoHeaderMagic {
            offset: HEADER_MAGIC_OFFSET,
        });
    }
    let protocol = read_u16(kernel, PROTOCOL_OFFSET);
    if protocol < PROTOCOL_MIN {
        let [major, minor] = protocol.to_be_bytes();
        return Err(BzImageError::ProtocolTooOld { major, minor });
    }
    if kernel[LOADFLAGS_OFFSET] & LOADED_HIGH == 0 {
        return Err(BzImageError::NotBzImage {
            offset: LOADFLAGS_OFFSET,
        });
    }

    let init_size = if protocol >= PROTOCOL_WITH_INIT_SIZE {
        let needed = INIT_SIZE_OFFSET + 4;
        if kernel.len() < needed {
            return Err(BzImageError::Truncated {
                len: kernel.len(),
                needed,
            });
        }
        u64::from(read_u32(kernel, INIT_SIZE_OFFSET))
    } else {
        0
    };

    let version = read_version(kernel)?;
    let release = version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(KernelInfo {
        version,
        release,
        init_size,
        protocol,
    })
}

/// Follows the `kernel_version` pointer and returns the NUL-terminated string.
fn read_version(kernel: &[u8]) -> Result<String, BzImageError> {
    let ptr = read_u16(kernel, KERNEL_VERSION_PTR_OFFSET);
    if ptr == 0 {
        return Err(BzImageError::NoVersion {
            offset: KERNEL_VERSION_PTR_OFFSET,
        });
    }
    let offset = usize::from(ptr) + 0x200;
    let rest = kernel.get(offset..).filter(|rest| !rest.is_empty()).ok_or(
        BzImageError::VersionOutOfBounds {
            offset,
            len: kernel.len(),
        },
    )?;
    let window = &rest[..rest.len().min(MAX_VERSION_LEN)];
    let end = window
        .iter()
        .position(|&b| b == 0)
        .ok_or(BzImageError::VersionUnterminated {
            offset,
            max: MAX_VERSION_LEN,
        })?;
    let version = std::str::from_utf8(&window[..end])
        .map_err(|source| BzImageError::VersionNotUtf8 { offset, source })?
        .trim();
    if version.is_empty() {
        return Err(BzImageError::VersionEmpty { offset });
    }
    Ok(version.to_string())
}

/// Little-endian u16 at `offset`; callers have checked the bounds.
fn read_u16(data: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([data[offset], data[offset + 1]])
}

/// Little-endian u32 at `offset`; callers have checked the bounds.
fn read_u32(data: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        data[offset],
        data[offset + 1],
        data[offset + 2],
        data[offset + 3],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_KERNEL: &str = "/tmp/k/root/boot/vmlinuz-6.1.0-56-amd64";

    /// A minimal synthetic bzImage header: protocol 2.15, LOADED_HIGH, version string
    /// at 0x200 + 0x300, init_size 0x1234_5000.
    fn synthetic_kernel(version: &str) -> Vec<u8> {
        let mut k = vec![0u8; 0x1000];
        k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        k[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4].copy_from_slice(HEADER_MAGIC);
        k[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        k[KERNEL_VERSION_PTR_OFFSET..KERNEL_VERSION_PTR_OFFSET + 2]
            .copy_from_slice(&0x300u16.to_le_bytes());
        k[LOADFLAGS_OFFSET] = LOADED_HIGH;
        k[INIT_SIZE_OFFSET..INIT_SIZE_OFFSET + 4].copy_from_slice(&0x1234_5000u32.to_le_bytes());
        k[0x500..0x500 + version.len()].copy_from_slice(version.as_bytes());
        k
    }

    #[test]
    fn parses_synthetic_header() {
        let k = synthetic_kernel("6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        let info = parse_bzimage(&k).unwrap();
        assert_eq!(info.release, "6.1.0-56-amd64");
        assert!(info.version.starts_with("6.1.0-56-amd64 (debian"));
        assert_eq!(info.protocol, 0x020f);
        assert_eq!(info.init_size, 0x1234_5000);
    }

    #[test]
    fn old_protocol_has_no_init_size() {
        let mut k = synthetic_kernel("2.6.30 #1");
        k[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x0209u16.to_le_bytes());
        let info = parse_bzimage(&k).unwrap();
        assert_eq!(info.init_size, 0);
        assert_eq!(info.release, "2.6.30");
    }

    #[test]
    fn rejects_non_kernels() {
        assert!(matches!(
            parse_bzimage(b"hello"),
            Err(BzImageError::Truncated { len: 5, .. })
        ));
        assert!(matches!(
            parse_bzimage(&[0u8; 4096]),
            Err(BzImageError::NoHeaderMagic { offset: 0x202 })
        ));
        let mut k = synthetic_kernel("6.1 #1");
        k[LOADFLAGS_OFFSET] = 0;
        assert!(matches!(
            parse_bzimage(&k),
            Err(BzImageError::NotBzImage { .. })
        ));
        let mut k = synthetic_kernel("6.1 #1");
        k[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x0105u16.to_le_bytes());
        let err = parse_bzimage(&k).unwrap_err();
        assert_eq!(
            err.to_string(),
            "boot protocol 1.05 is too old (bzImage needs 2.00 or later)"
        );
    }

    #[test]
    fn bad_version_strings_are_errors() {
        // Pointer beyond the end.
        let mut k = synthetic_kernel("x");
        k[KERNEL_VERSION_PTR_OFFSET..KERNEL_VERSION_PTR_OFFSET + 2]
            .copy_from_slice(&0xff00u16.to_le_bytes());
        assert!(matches!(
            parse_bzimage(&k),
            Err(BzImageError::VersionOutOfBounds { .. })
        ));
        // Zero pointer.
        let mut k = synthetic_kernel("x");
        k[KERNEL_VERSION_PTR_OFFSET..KERNEL_VERSION_PTR_OFFSET + 2].fill(0);
        assert!(matches!(
            parse_bzimage(&k),
            Err(BzImageError::NoVersion { .. })
        ));
        // No NUL before the end of the image.
        let mut k = synthetic_kernel("x");
        k.truncate(0x501);
        assert!(matches!(
            parse_bzimage(&k),
            Err(BzImageError::VersionUnterminated { .. })
        ));
        // Empty string.
        let k = synthetic_kernel("");
        assert!(matches!(
            parse_bzimage(&k),
            Err(BzImageError::VersionEmpty { .. })
        ));
        // Truncated right after loadflags with protocol >= 2.10.
        let k = synthetic_kernel("x");
        assert!(matches!(
            parse_bzimage(&k[..0x220]),
            Err(BzImageError::Truncated { needed: 0x264, .. })
        ));
    }

    #[test]
    fn every_prefix_is_handled_without_panic() {
        let k = synthetic_kernel("6.1.0 #1");
        for len in 0..k.len() {
            let _ = parse_bzimage(&k[..len]);
        }
    }

    #[test]
    fn real_debian_kernel_if_present() {
        // The Debian kernel is a build input that is not always on the machine; the
        // synthetic tests above cover the logic, this one checks a real header.
        let Ok(k) = std::fs::read(REAL_KERNEL) else {
            eprintln!("skipping: {REAL_KERNEL} not present");
            return;
        };
        let info = parse_bzimage(&k).unwrap();
        assert_eq!(info.release, "6.1.0-56-amd64");
        assert!(info.protocol >= 0x020f, "protocol {:#x}", info.protocol);
        assert!(info.init_size > 0);
    }
}
