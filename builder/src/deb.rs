//! Debian packages read in Rust: the `ar` container, the `control` fields and the
//! data tarball (xz, gzip, zstd or plain), unpacked without `dpkg`.
//!
//! A `.deb` is untrusted input: members are bounds-checked, and only regular files
//! and directories whose paths stay inside the destination are written; links,
//! devices and paths with `..` or a leading `/` are refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a Debian package: {reason} (delete it, re-download it, or point the profile at a valid .deb)")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: member {member} is corrupt or truncated")]
    Member {
        path: PathBuf,
        member: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refusing unsafe entry {entry:?} in {member}: {reason}")]
    Unsafe {
        path: PathBuf,
        member: String,
        entry: String,
        reason: String,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The fields of a package's `control` file that mkhost uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub depends: String,
}

struct Member {
    name: String,
    offset: u64,
    size: u64,
}

fn format_err(path: &Path, reason: impl Into<String>) -> DebError {
    DebError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Lists the members of the `ar` archive.
fn members(path: &Path, file: &mut File) -> Result<Vec<Member>, DebError> {
    let len = file
        .metadata()
        .map_err(|source| DebError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| format_err(path, "file is shorter than the ar magic"))?;
    if &magic != b"!<arch>\n" {
        return Err(format_err(path, "bad ar magic"));
    }
    let mut members = Vec::new();
    let mut offset = 8u64;
    while offset + 60 <= len {
        let mut header = [0u8; 60];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut header))
            .map_err(|_| format_err(path, format!("truncated ar header at offset {offset}")))?;
        if &header[58..60] != b"`\n" {
            return Err(format_err(
                path,
                format!("bad ar header terminator at offset {offset}"),
            ));
        }
        let name = String::from_utf8_lossy(&header[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format_err(path, format!("bad ar member size at offset {offset}")))?;
        let data = offset + 60;
        if data + size > len {
            return Err(format_err(
                path,
                format!("member {name} claims {size} bytes but the file ends at {len} (truncated download?)"),
            ));
        }
        members.push(Member {
            name,
            offset: data,
            size,
        });
        offset = data + size + (size & 1);
    }
    if members.first().map(|m| m.name.as_str()) != Some("debian-binary") {
        return Err(format_err(path, "first member is not debian-binary"));
    }
    Ok(members)
}

fn find_member<'m>(
    path: &Path,
    members: &'m [Member],
    prefix: &str,
) -> Result<&'m Member, DebError> {
    members
        .iter()
        .find(|m| m.name.starts_with(prefix))
        .ok_or_else(|| format_err(path, format!("no {prefix}* member")))
}

/// Reads the package's `control` fields.
pub fn read_control(path: &Path) -> Result<Control, DebError> {
    let mut file = File::open(path).map_err(|source| DebError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let members = members(path, &mut file)?;
    let member = find_member(path, &members, "control.tar")?;
    let member_err = |source| DebError::Member {
        path: path.to_path_buf(),
        member: member.name.clone(),
        source,
    };
    file.seek(SeekFrom::Start(member.offset))
        .map_err(member_err)?;
    let reader = decompressor(path, (&mut file).take(member.size), member)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(member_err)? {
        let mut entry = entry.map_err(member_err)?;
        let entry_path = entry.path().map_err(member_err)?.into_owned();
        if entry_path.file_name().is_some_and(|n| n == "control") {
            let mut text = String::new();
            entry
                .by_ref()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(member_err)?;
            return parse_control(&text).ok_or_else(|| {
                format_err(path, "control file lacks Package, Version or Architecture")
            });
        }
    }
    Err(format_err(path, "control.tar has no control file"))
}

/// Parses RFC 822-style `Key: value` fields (continuation lines are joined).
pub fn parse_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(key) = &last {
                if let Some(v) = fields.get_mut(key) {
                    let v: &mut String = v;
                    v.push(' ');
                    v.push_str(line.trim());
                }
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.insert(key.trim().to_string(), value.trim().to_string());
            last = Some(key.trim().to_string());
        }
    }
    fields
}

fn parse_control(text: &str) -> Option<Control> {
    let fields = parse_fields(text);
    Some(Control {
        package: fields.get("Package")?.clone(),
        version: fields.get("Version")?.clone(),
        architecture: fields.get("Architecture")?.clone(),
        depends: fields.get("Depends").cloned().unwrap_or_default(),
    })
}

/// What an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub bytes: u64,
    pub skipped: u64,
}

/// Unpacks the data tarball's regular files and directories for which `wanted`
/// (given the path without a leading `./`) is true into `dest`, which must exist.
/// `on_progress` gets the count of compressed bytes consumed so far.
pub fn unpack_data(
    path: &Path,
    dest: &Path,
    wanted: &dyn Fn(&str) -> bool,
    on_progress: &dyn Fn(u64, u64),
) -> Result<UnpackStats, DebError> {
    let mut file = File::open(path).map_err(|source| DebError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let members = members(path, &mut file)?;
    let member = find_member(path, &members, "data.tar")?;
    let member_name = member.name.clone();
    let total = member.size;
    let member_err = |source| DebError::Member {
        path: path.to_path_buf(),
        member: member_name.clone(),
        source,
    };
    file.seek(SeekFrom::Start(member.offset))
        .map_err(member_err)?;
    let counted = CountingReader {
        inner: &mut file,
        count: 0,
        on_progress: &|n| on_progress(n, total),
    };
    let reader = decompressor(path, counted.take(total), member)?;
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    for entry in archive.entries().map_err(member_err)? {
        let mut entry = entry.map_err(member_err)?;
        let raw_path = entry.path().map_err(member_err)?.into_owned();
        let display = raw_path.display().to_string();
        let unsafe_entry = |reason: &str| DebError::Unsafe {
            path: path.to_path_buf(),
            member: member_name.clone(),
            entry: display.clone(),
            reason: reason.to_string(),
        };
        let rel = safe_relative(&raw_path).ok_or_else(|| {
            unsafe_entry("absolute path or `..` component escapes the package root")
        })?;
        let rel_str = rel.to_string_lossy().to_string();
        if rel_str.is_empty() || !wanted(&rel_str) {
            stats.skipped += 1;
            continue;
        }
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|source| DebError::Write {
                path: target.clone(),
                source,
            })?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|source| DebError::Write {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let mut out = File::create(&target).map_err(|source| DebError::Write {
                path: target.clone(),
                source,
            })?;
            let n = io::copy(&mut entry, &mut out).map_err(member_err)?;
            stats.files += 1;
            stats.bytes += n;
        } else if kind.is_symlink() || kind.is_hard_link() {
            // Links are not needed from kernel or stub packages and could point
            // outside the tree; leave them out.
            stats.skipped += 1;
        } else {
            return Err(unsafe_entry(
                "device nodes, fifos and other special files are refused",
            ));
        }
    }
    Ok(stats)
}

fn decompressor<'a, R: Read + 'a>(
    path: &Path,
    raw: R,
    member: &Member,
) -> Result<Box<dyn Read + 'a>, DebError> {
    let raw = BufReader::new(raw);
    let name = member.name.as_str();
    Ok(if name.ends_with(".tar.xz") {
        Box::new(liblzma::read::XzDecoder::new(raw))
    } else if name.ends_with(".tar.gz") {
        Box::new(flate2::read::GzDecoder::new(raw))
    } else if name.ends_with(".tar.zst") {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(raw).map_err(|source| DebError::Member {
                path: path.to_path_buf(),
                member: member.name.clone(),
                source,
            })?,
        )
    } else if name.ends_with(".tar") {
        Box::new(raw)
    } else {
        return Err(format_err(
            path,
            format!("unsupported member compression {name}"),
        ));
    })
}

/// The path with `./` removed, or None if it is absolute or climbs out with `..`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

struct CountingReader<'a, R> {
    inner: R,
    count: u64,
    on_progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let before = self.count >> 20;
        self.count += n as u64;
        if self.count >> 20 != before {
            (self.on_progress)(self.count);
        }
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // Write the name bytes directly so hostile names survive.
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn ar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        writeln!(
            out,
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`",
            name,
            0,
            0,
            0,
            "100644",
            data.len()
        )
        .unwrap();
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }

    /// Builds a small .deb with gzip-compressed control and data members.
    pub(crate) fn make_deb(control: &str, data: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = |bytes: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap()
        };
        let mut out = b"!<arch>\n".to_vec();
        ar_member(&mut out, "debian-binary", b"2.0\n");
        ar_member(
            &mut out,
            "control.tar.gz",
            &gz(&tar_with(&[("./control", control.as_bytes())])),
        );
        ar_member(&mut out, "data.tar.gz", &gz(&tar_with(data)));
        out
    }

    const CONTROL: &str =
        "Package: demo\nVersion: 1.2-3\nArchitecture: amd64\nDepends: libc6 (>= 2.36),\n foo\n";

    #[test]
    fn reads_control_and_unpacks_wanted_files() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("demo.deb");
        std::fs::write(
            &deb,
            make_deb(
                CONTROL,
                &[
                    ("./boot/vmlinuz-1", b"kernel"),
                    ("./usr/share/doc/x", b"doc"),
                ],
            ),
        )
        .unwrap();
        let control = read_control(&deb).unwrap();
        assert_eq!(control.package, "demo");
        assert_eq!(control.version, "1.2-3");
        assert_eq!(control.depends, "libc6 (>= 2.36), foo");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let stats = unpack_data(&deb, &out, &|p| p.starts_with("boot/"), &|_, _| {}).unwrap();
        assert_eq!(stats.files, 1);
        assert_eq!(
            std::fs::read(out.join("boot/vmlinuz-1")).unwrap(),
            b"kernel"
        );
        assert!(!out.join("usr").exists());
    }

    #[test]
    fn refuses_path_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("evil.deb");
        std::fs::write(&deb, make_deb(CONTROL, &[("../../etc/evil", b"x")])).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let err = unpack_data(&deb, &out, &|_| true, &|_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing unsafe entry"), "{err}");
        assert!(!dir.path().join("etc/evil").exists());
    }

    #[test]
    fn truncated_and_garbage_debs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = make_deb(CONTROL, &[("./boot/vmlinuz-1", b"kernel")]);
        let truncated = dir.path().join("t.deb");
        std::fs::write(&truncated, &good[..good.len() - 40]).unwrap();
        let err = read_control(&truncated).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let garbage = dir.path().join("g.deb");
        std::fs::write(&garbage, b"this is not an archive at all").unwrap();
        let err = read_control(&garbage).unwrap_err().to_string();
        assert!(err.contains("bad ar magic"), "{err}");
        // Corrupt compressed data inside a structurally valid ar.
        let mut corrupt = good.clone();
        let n = corrupt.len();
        for b in &mut corrupt[n - 60..n - 20] {
            *b ^= 0x5a;
        }
        let corrupt_path = dir.path().join("c.deb");
        std::fs::write(&corrupt_path, &corrupt).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert!(unpack_data(&corrupt_path, &out, &|_| true, &|_, _| {}).is_err());
    }
}
