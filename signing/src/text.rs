//! Times as text: RFC 3339 dates, EFI time fields.

/// `(year, month, day, hour, minute, second)` of `unix` seconds, UTC.
pub(crate) fn civil(unix: u64) -> (i64, i64, i64, i64, i64, i64) {
    mkhost_shared::time::civil(i64::try_from(unix).unwrap_or(i64::MAX))
}

/// `unix` seconds as RFC 3339, UTC.
pub fn rfc3339(unix: u64) -> String {
    mkhost_shared::time::rfc3339(i64::try_from(unix).unwrap_or(i64::MAX), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_428_800 + 3661), "2026-12-05T01:01:01Z");
    }
}
