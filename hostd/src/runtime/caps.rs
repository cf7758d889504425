//! Capability names and the 64-bit masks the kernel takes.

/// Capability names in kernel order: the index is the capability number.
pub use mkhost_shared::container::CAPABILITIES as NAMES;

/// The number of a capability name (`CAP_KILL` -> 5). Case-insensitive; the
/// `CAP_` prefix is optional, as in runc.
pub fn number(name: &str) -> Option<u32> {
    let full = mkhost_shared::container::capability_name(name)?;
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// Turns a list of names into a mask. Returns the first unknown name.
pub fn mask<S: AsRef<str>>(names: &[S]) -> Result<u64, String> {
    names.iter().try_fold(0u64, |acc, name| {
        number(name.as_ref())
            .map(|n| acc | (1u64 << n))
            .ok_or_else(|| name.as_ref().to_string())
    })
}

/// The highest capability the running kernel knows
/// (`/proc/sys/kernel/cap_last_cap`), or the highest we know.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks() {
        assert_eq!(number("CAP_KILL"), Some(5));
        assert_eq!(number("kill"), Some(5));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        // runc's default spec: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
        assert_eq!(
            mask(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            Ok(0x2000_0420)
        );
        assert_eq!(mask(&["CAP_KILL", "CAP_BOGUS"]), Err("CAP_BOGUS".into()));
    }
}
