//! Reading a mount table: the lines of `/proc/<pid>/mountinfo`
//! (proc(5)), one per mount of the namespace the file was opened in.

/// One line of a mount table, the parts hostd uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the file system: mounts with the same one share a
    /// superblock (bind mounts, network namespace files).
    pub device: String,
    /// The mount point (octal escapes decoded).
    pub target: String,
    /// Whether it is in a peer group (`shared:N`): mounts made below it
    /// propagate to its peers and slaves.
    pub shared: bool,
    /// The file system type.
    pub fstype: String,
}

/// Parses a mount table, in its order (mount order); a line that is not
/// one (too few fields, no `-` separator) is skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let optional = fields.get(6..sep)?;
            Some(MountEntry {
                device: (*fields.get(2)?).to_string(),
                target: unescape(fields.get(4)?),
                shared: optional.iter().any(|f| f.starts_with("shared:")),
                fstype: (*fields.get(sep + 1)?).to_string(),
            })
        })
        .collect()
}

/// Whether the root mount of a table (its last mount on `/`) is shared:
/// mounts made later propagate to copies of it made as slaves.
pub fn root_is_shared(table: &str) -> bool {
    parse_mountinfo(table)
        .iter()
        .rev()
        .find(|mount| mount.target == "/")
        .is_some_and(|root| root.shared)
}

/// Decodes mountinfo's `\040`-style octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let value = bytes
                .get(i + 1..i + 4)
                .and_then(|oct| std::str::from_utf8(oct).ok())
                .and_then(|oct| u8::from_str_radix(oct, 8).ok());
            if let Some(v) = value {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parses_and_unescapes() {
        let entries = parse_mountinfo(
            "22 1 0:21 / / rw,relatime shared:1 - tmpfs tmpfs rw\n\
             23 22 0:5 / /proc rw,nosuid,nodev,noexec - proc proc rw\n\
             29 27 8:1 / /run/my\\040disk ro shared:4 master:1 - vfat /dev/vda1 ro\n\
             30 27 0:4 net:[4026532301] /run/hostd/netns/a rw master:7 - nsfs nsfs rw\n\
             not a mount line\n",
        );
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[0],
            MountEntry {
                device: "0:21".into(),
                target: "/".into(),
                shared: true,
                fstype: "tmpfs".into(),
            }
        );
        assert!(!entries[1].shared);
        assert_eq!(entries[2].target, "/run/my disk");
        assert!(entries[2].shared);
        assert_eq!(entries[2].fstype, "vfat");
        assert!(!entries[3].shared, "a slave only is not shared");
        assert_eq!(entries[3].fstype, "nsfs");
    }

    #[test]
    fn the_root_is_the_last_mount_on_slash() {
        let shared = "1 0 8:1 / / rw shared:1 - ext4 /dev/sda rw\n";
        assert!(root_is_shared(shared));
        // A private mount stacked over it decides.
        let over = format!("{shared}2 1 0:30 / / rw - tmpfs tmpfs rw\n");
        assert!(!root_is_shared(&over));
        assert!(!root_is_shared(
            "1 0 8:1 / / rw master:3 - ext4 /dev/sda rw\n"
        ));
        assert!(!root_is_shared(""));
    }
}
