//! Lower-case hex, as digests are written everywhere mkhost writes one
//! (manifests, lock files, PCR values, fingerprints).

use std::fmt::Write;

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The 32 bytes of a 64-digit hex string (either case); `None` otherwise.
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_32_bytes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 9) as u8);
        let text = encode(&bytes);
        assert_eq!(&text[..6], "000912");
        assert_eq!(decode32(&text), Some(bytes));
        assert_eq!(decode32(&text.to_ascii_uppercase()), Some(bytes));
        assert_eq!(decode32("zz"), None);
        assert_eq!(decode32(&"g".repeat(64)), None);
        assert_eq!(decode32(&"0".repeat(63)), None);
    }
}
