//! The shell-style wildcard matcher (`fnmatch(3)` without flags) that module
//! aliases (`modules.alias`), module sets and `/etc/ld.so.conf` `include`
//! lines use, on the build machine and on the host alike: `*`, `?`, `[...]`
//! classes with ranges and `!`/`^` negation, `\` escapes. It works on bytes
//! and never fails: an unclosed `[` matches itself.

/// Whether `text` matches the wildcard `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    match_bytes(pattern.as_bytes(), text.as_bytes())
}

/// Whether `pattern` contains any wildcard syntax.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern
        .bytes()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

fn match_bytes(p: &[u8], t: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == b'[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                // `\x` matches `x`; a trailing `\` matches itself.
                b'\\' if pi + 1 < p.len() && p[pi + 1] == t[ti] => {
                    pi += 2;
                    ti += 1;
                    continue;
                }
                b'\\' if pi + 1 < p.len() => {}
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Matches `c` against the class starting at `p[start] == b'['`. Returns
/// whether it matched and the index after the class, or `None` when the class
/// is not closed (then `[` is literal).
fn match_class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&b| b != b']') {
            let hi = p[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*.conf", "libc.conf"));
        assert!(!matches("*.conf", "libc.conf.bak"));
        assert!(matches(
            "pci:v00001AF4d*sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001000sv1sd2bc3sc4i5"
        ));
        assert!(!matches("pci:v00001AF4d*", "pci:v00008086d00001000"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("fs-*", "fs-ext4"));
        assert!(matches("", ""));
        assert!(matches("*", ""));
        assert!(matches(
            "*:feature:*0094*",
            "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0094,00E8"
        ));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn classes() {
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[!a-c]x", "bx"));
        assert!(matches("x[0-9]y", "x5y"));
        assert!(!matches("x[!0-9]y", "x5y"));
        assert!(matches("x[^0-9]y", "xay"));
        assert!(matches("x[]]y", "x]y"));
        assert!(matches("[abc", "[abc"), "unclosed class is literal");
        assert!(matches("a[b", "a[b"));
    }

    #[test]
    fn escapes() {
        assert!(matches("a\\*b", "a*b"));
        assert!(!matches("a\\*b", "axb"));
        assert!(matches("a\\", "a\\"), "a trailing backslash is literal");
        assert!(has_wildcard("x*"));
        assert!(has_wildcard("a\\*"));
        assert!(!has_wildcard("crc32c"));
    }
}
