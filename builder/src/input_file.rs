//! Reading a file a profile names (a profile itself, a machines file, a
//! `[[files]]` source) without trusting what it is.
//!
//! Only a regular file, or a symlink to one, is read. A directory, fifo,
//! socket or device is refused by what it is before it is opened, and the
//! opened descriptor is checked again (it is opened non-blocking, so a path
//! swapped for a fifo in between cannot hang the build). Files of the
//! kernel's pseudo file systems (`/proc`, `/sys`, ...) are refused too: their
//! size says nothing and their content is made up as it is read
//! (`/proc/self/environ` is the build's environment). Nothing larger than the
//! caller's limit is read: the size is checked first, and at most limit + 1
//! bytes are read, so a file that grows meanwhile is caught as well.

use std::fs::{File, FileType};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path} is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is a file of the kernel's {fs} file system, not a regular file (its content is made up as it is read)")]
    Pseudo { path: PathBuf, fs: &'static str },
    #[error("{path} is {size} bytes, more than the limit of {}", amount(*.limit))]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InputError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputError::NotRegular { path, .. }
            | InputError::Pseudo { path, .. }
            | InputError::TooLarge { path, .. }
            | InputError::Io { path, .. } => path,
        }
    }
}

/// The largest `[[files]]` or `[[binaries]]` source read; never more than
/// the host's RAM either ([`source_limit`]), since the image could not hold
/// it.
pub const MAX_SOURCE_BYTES: u64 = 1 << 30;

/// The most bytes a `[[files]]` or `[[binaries]]` source of an image for a
/// host of `min_ram_mib` MiB may have.
pub fn source_limit(min_ram_mib: u64) -> u64 {
    MAX_SOURCE_BYTES.min(min_ram_mib.saturating_mul(1 << 20))
}

/// A file a profile entry names to copy into the image (a `[[files]]` or
/// `[[binaries]]` source) that is refused or cannot be read; the message
/// starts at the entry and ends with the fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceFileError {
    #[error("{origin}: {entry} source {error}; {}", source_hint(.error))]
    Refused {
        /// `file:line:column` of the entry.
        origin: String,
        /// `[[files]]`, `[[binaries]]`.
        entry: &'static str,
        error: InputError,
    },
    #[error("{origin}: cannot read {path}")]
    Unreadable {
        origin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SourceFileError {
    /// `error` about the source of the `entry` at `origin`.
    pub fn new(origin: &impl std::fmt::Display, entry: &'static str, error: InputError) -> Self {
        match error {
            InputError::Io { path, source } => SourceFileError::Unreadable {
                origin: origin.to_string(),
                path,
                source,
            },
            error => SourceFileError::Refused {
                origin: origin.to_string(),
                entry,
                error,
            },
        }
    }
}

/// The fix for a [`SourceFileError::Refused`].
fn source_hint(error: &InputError) -> String {
    match error {
        InputError::TooLarge { .. } => format!(
            "sources are limited to {} and to the host's RAM (min_ram_mib)",
            amount(MAX_SOURCE_BYTES)
        ),
        _ => "give a regular file (or a symlink to one)".into(),
    }
}

/// `16 MiB`, `1 GiB`, or bytes.
pub fn amount(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    // Whole units only (the limits are).
    if bytes >= GIB && bytes.trailing_zeros() >= 30 {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.trailing_zeros() >= 20 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// What a file that is not regular is, for a message: `a directory`, `a fifo`.
pub fn kind_of(kind: &FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a fifo"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// The size of the regular file at `path` (symlinks followed), without
/// opening it; an error if it is anything else or larger than `limit`.
pub fn check(path: &Path, limit: u64) -> Result<u64, InputError> {
    let meta = std::fs::metadata(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    Ok(meta.len())
}

/// The content of the regular file at `path`, at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    check(path, limit)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta.file_type()),
        });
    }
    if let Some(fs) = pseudo_file_system(&file) {
        return Err(InputError::Pseudo {
            path: path.to_path_buf(),
            fs,
        });
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len().min(limit)).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > limit {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: data.len() as u64,
            limit,
        });
    }
    Ok(data)
}

/// The name of the kernel pseudo file system `file` lives on, if it does.
fn pseudo_file_system(file: &File) -> Option<&'static str> {
    use rustix::fs::FsWord;
    // From linux/magic.h.
    const KNOWN: [(FsWord, &str); 7] = [
        (rustix::fs::PROC_SUPER_MAGIC, "/proc"),
        (0x6265_6572, "/sys (sysfs)"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0x6367_7270, "cgroup2"),
        (0x0027_e0eb, "cgroup"),
    ];
    let stat = rustix::fs::fstatfs(file).ok()?;
    KNOWN
        .iter()
        .find(|(magic, _)| *magic == stat.f_type)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_never_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        assert_eq!(read(&file, 5).unwrap(), b"hello");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&link, 5).unwrap(), b"hello");
        let err = read(&file, 4).unwrap_err().to_string();
        assert!(
            err.ends_with("is 5 bytes, more than the limit of 4 bytes"),
            "{err}"
        );
        assert_eq!(check(&file, 5).unwrap(), 5);

        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (path, want) in [
            (dir.path().to_path_buf(), "is a directory"),
            (fifo, "is a fifo"),
            (socket, "is a socket"),
            (PathBuf::from("/dev/zero"), "is a character device"),
        ] {
            let err = read(&path, 1 << 20).unwrap_err().to_string();
            assert!(
                err.ends_with(&format!("{want}, not a regular file")),
                "{err}"
            );
        }
        for path in ["/proc/self/environ", "/proc/self/status"] {
            let err = read(Path::new(path), 1 << 20).unwrap_err().to_string();
            assert!(err.contains("kernel's /proc file system"), "{err}");
        }
        assert_eq!(amount(16 << 20), "16 MiB");
        assert_eq!(amount(1 << 30), "1 GiB");
    }
}
