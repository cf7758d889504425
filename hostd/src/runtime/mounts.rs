//! Mount options and paths inside the root, the pure half of mounting.
//!
//! `mount(8)`-style option words become `MS_*` flags, a propagation type and
//! the file-system data string. Destinations are cleaned lexically into a
//! [`Target`]: the path relative to the root plus the chain of directories to
//! create. The container's init resolves each of them with
//! `openat2(RESOLVE_IN_ROOT)` against the root, so a symlink in the image can
//! never point a mount outside the container.

use std::ffi::CString;

/// Parsed mount options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags to set.
    pub flags: libc::c_ulong,
    /// `MS_*` flags explicitly cleared (`rw`, `suid`, ...).
    pub cleared: libc::c_ulong,
    /// Propagation flags (`MS_PRIVATE|MS_REC`, ...), 0 when none was given.
    pub propagation: libc::c_ulong,
    /// `bind` or `rbind` was given.
    pub bind: bool,
    /// `rbind` (recursive bind).
    pub recursive: bool,
    /// Everything else, joined with commas for the data argument.
    pub data: Vec<String>,
}

impl MountOptions {
    /// The data argument, if any.
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Parses option words. Unknown words go to the data string, where the file
/// system judges them.
pub fn parse_options<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut out = MountOptions::default();
    for option in options {
        let option = option.as_ref();
        let set = |flag: libc::c_ulong| (flag, false);
        let clear = |flag: libc::c_ulong| (flag, true);
        let flag = match option {
            "defaults" => continue,
            "ro" => set(libc::MS_RDONLY),
            "rw" => clear(libc::MS_RDONLY),
            "nosuid" => set(libc::MS_NOSUID),
            "suid" => clear(libc::MS_NOSUID),
            "nodev" => set(libc::MS_NODEV),
            "dev" => clear(libc::MS_NODEV),
            "noexec" => set(libc::MS_NOEXEC),
            "exec" => clear(libc::MS_NOEXEC),
            "sync" => set(libc::MS_SYNCHRONOUS),
            "async" => clear(libc::MS_SYNCHRONOUS),
            "dirsync" => set(libc::MS_DIRSYNC),
            "remount" => set(libc::MS_REMOUNT),
            "mand" => set(libc::MS_MANDLOCK),
            "nomand" => clear(libc::MS_MANDLOCK),
            "atime" => clear(libc::MS_NOATIME),
            "noatime" => set(libc::MS_NOATIME),
            "diratime" => clear(libc::MS_NODIRATIME),
            "nodiratime" => set(libc::MS_NODIRATIME),
            "relatime" => set(libc::MS_RELATIME),
            "norelatime" => clear(libc::MS_RELATIME),
            "strictatime" => set(libc::MS_STRICTATIME),
            "nostrictatime" => clear(libc::MS_STRICTATIME),
            "bind" => {
                out.bind = true;
                continue;
            }
            "rbind" => {
                out.bind = true;
                out.recursive = true;
                continue;
            }
            _ => {
                if let Some(p) = propagation(option) {
                    out.propagation = p;
                } else {
                    out.data.push(option.to_string());
                }
                continue;
            }
        };
        match flag {
            (f, false) => {
                out.flags |= f;
                out.cleared &= !f;
            }
            (f, true) => {
                out.flags &= !f;
                out.cleared |= f;
            }
        }
    }
    out
}

/// A propagation word (`rprivate`, `slave`, ...) as mount flags.
pub fn propagation(word: &str) -> Option<libc::c_ulong> {
    Some(match word {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// A path inside the container's root, prepared for the init process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The cleaned absolute path, for messages (`/dev/pts`).
    pub display: String,
    /// Relative to the root (`dev/pts`).
    pub path: CString,
    /// The parent directory relative to the root (`dev`, or `.`).
    pub parent: CString,
    /// The last component (`pts`).
    pub name: CString,
    /// `(parent, name)` of every ancestor directory, outermost first; the init
    /// creates the missing ones.
    pub ancestors: Vec<(CString, CString)>,
}

/// Why a path cannot be a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not absolute.
    Relative,
    /// The root itself.
    Root,
    /// Contains a NUL byte.
    Nul,
}

fn cstring(s: &str) -> Result<CString, TargetError> {
    CString::new(s).map_err(|_| TargetError::Nul)
}

impl Target {
    /// Cleans an absolute container path: drops empty and `.` components and
    /// applies `..` lexically without ever leaving the root.
    pub fn new(path: &str) -> Result<Target, TargetError> {
        if !path.starts_with('/') {
            return Err(TargetError::Relative);
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let (name, dirs) = parts.split_last().ok_or(TargetError::Root)?;
        let mut ancestors = Vec::with_capacity(dirs.len());
        for i in 0..dirs.len() {
            let parent = if i == 0 {
                ".".into()
            } else {
                dirs[..i].join("/")
            };
            ancestors.push((cstring(&parent)?, cstring(dirs[i])?));
        }
        let parent = if dirs.is_empty() {
            ".".to_string()
        } else {
            dirs.join("/")
        };
        Ok(Target {
            display: format!("/{}", parts.join("/")),
            path: cstring(&parts.join("/"))?,
            parent: cstring(&parent)?,
            name: cstring(name)?,
            ancestors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC);
        assert_eq!(
            o.data_string().as_deref(),
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5")
        );
        let o = parse_options(&["rbind", "ro", "rprivate"]);
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, libc::MS_RDONLY);
        assert_eq!(o.propagation, libc::MS_PRIVATE | libc::MS_REC);
        let o = parse_options(&["ro", "rw"]);
        assert_eq!(o.flags, 0);
        assert_eq!(o.cleared, libc::MS_RDONLY);
        assert_eq!(o.data_string(), None);
    }

    #[test]
    fn targets() {
        let t = Target::new("/dev/pts").unwrap();
        assert_eq!(t.display, "/dev/pts");
        assert_eq!(t.path.to_str().unwrap(), "dev/pts");
        assert_eq!(t.parent.to_str().unwrap(), "dev");
        assert_eq!(t.name.to_str().unwrap(), "pts");
        assert_eq!(t.ancestors.len(), 1);
        assert_eq!(t.ancestors[0].0.to_str().unwrap(), ".");
        assert_eq!(t.ancestors[0].1.to_str().unwrap(), "dev");
        let t = Target::new("//a/./b/../../../c/d/").unwrap();
        assert_eq!(t.display, "/c/d");
        assert_eq!(t.ancestors[0].1.to_str().unwrap(), "c");
        let t = Target::new("/proc").unwrap();
        assert_eq!(t.parent.to_str().unwrap(), ".");
        assert!(t.ancestors.is_empty());
        assert_eq!(Target::new("proc"), Err(TargetError::Relative));
        assert_eq!(Target::new("/.."), Err(TargetError::Root));
    }
}
