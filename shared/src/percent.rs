//! Percent-decoding of URL paths and query parts, for the two HTTP servers
//! (`mkhost serve` and hostd's Docker API).

/// Decodes `%XX` escapes (and `+` as a space in query parts); `None` on a bad escape.
pub fn decode(text: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_plus() {
        assert_eq!(decode("a%20b+c", false).unwrap(), b"a b+c");
        assert_eq!(decode("a%20b+c", true).unwrap(), b"a b c");
        assert_eq!(decode("%2F%2f", false).unwrap(), b"//");
        assert!(decode("%", false).is_none());
        assert!(decode("%4", false).is_none());
        assert!(decode("%+1", false).is_none());
    }
}
