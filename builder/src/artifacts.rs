//! A finished build, read back for `mkhost serve` and `mkhost run`.
//!
//! [`Artifacts::open`] checks `out/<profile>/SHA256SUMS` file by file and keeps
//! each checked file open: what is served or booted afterwards is read from the
//! very file descriptor that was hashed, so a rebuild (which renames a new
//! directory into place) or a file swapped after the check cannot change it.
//! A listed file that is missing, differs, is a symlink or sits under a symlinked
//! directory is an error naming that file.
//!
//! An open descriptor does not stop anyone from writing into the same inode
//! (`dd conv=notrunc`) or truncating it, so only verified bytes ever leave a
//! [`VerifiedFile`]: the pass that computes the file's sha256 also records the
//! sha256 of every [`BLOCK`] bytes, and [`VerifiedFile::read_block`] reads a
//! whole block and checks it against that record before handing it out.
//! [`VerifiedFile::check_unchanged`] compares the length and modification time
//! with those seen when verifying, so a changed file is usually refused before
//! anything is sent; once a change is seen the file stays refused. This costs
//! no copy (no memory or disk beyond 32 bytes per block) and one sha256 pass
//! over what is sent. The profile's name, hostname and
//! kernel command line come from the verified `manifest.json`, so they always
//! match the artifacts even when the profile changed since the build.
//!
//! [`ensure_built`] runs the build first and says whether anything changed. The
//! build is reproducible and takes about a second when its inputs are cached, so
//! "stale" needs no guessing: build, then compare the old and new `SHA256SUMS`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::build::{self, BuildError, BuildOptions, BuildReport};
use crate::profile;
use crate::progress::Progress;
use mkhost_shared::hex::encode as hex;

pub const SUMS: &str = "SHA256SUMS";
pub const MANIFEST: &str = "manifest.json";
pub const KERNEL: &str = "pxe/vmlinuz";
pub const INITRD: &str = "pxe/initramfs.img";

/// The unit in which file content is checked: bytes are handed out only a
/// whole, re-hashed block at a time.
pub const BLOCK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("no {SUMS} in {dir}: build the profile first (mkhost build, or leave out --no-build)")]
    NoSums { dir: PathBuf },
    #[error("cannot read {path}")]
    ReadSums {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    BadSums {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{file} is listed in {SUMS} but cannot be opened ({source}); rebuild, or leave out --no-build")]
    Missing {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is not a regular file inside the output directory (a symlink or special file); refusing it")]
    NotRegular { file: PathBuf },
    #[error("{file} does not match {SUMS} (expected sha256 {expected}, found {actual}): the artifacts are stale or were tampered with; rebuild, or leave out --no-build")]
    Mismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path} is a symlink or not a directory; refusing to read listed files through it")]
    NotDirectory { path: PathBuf },
    #[error("cannot read {file}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}/{SUMS} does not list {name}: not a complete mkhost build")]
    NotListed { dir: PathBuf, name: String },
    #[error("{file}: {message}")]
    Manifest { file: PathBuf, message: String },
    #[error("{file} changed on disk after it was verified ({detail}); it is not served any more: rebuild, then restart")]
    Changed { file: PathBuf, detail: String },
}

/// One listed file, verified and held open.
#[derive(Debug)]
pub struct VerifiedFile {
    /// Path relative to the output directory, as listed in `SHA256SUMS`.
    pub rel: String,
    pub path: PathBuf,
    pub len: u64,
    pub sha256: String,
    file: File,
    /// The sha256 of each [`BLOCK`] of the content, from the verifying pass.
    blocks: Vec<[u8; 32]>,
    /// The modification time seen when verifying.
    modified: Option<SystemTime>,
    /// Why the file is refused, from the first change seen.
    changed: OnceLock<String>,
}

impl VerifiedFile {
    /// The number of blocks the content spans.
    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// Checks that the file still has the length and modification time it had
    /// when verified, and that no change was seen since. Cheap (one `fstat`):
    /// done before a response promises a length and an ETag.
    pub fn check_unchanged(&self) -> Result<(), ArtifactError> {
        if let Some(detail) = self.changed.get() {
            return Err(self.changed_error(detail.clone()));
        }
        let meta = self.file.metadata().map_err(|source| ArtifactError::Read {
            file: self.path.clone(),
            source,
        })?;
        if meta.len() != self.len {
            return Err(self.mark_changed(format!(
                "{} bytes when verified, {} now",
                self.len,
                meta.len()
            )));
        }
        if meta.modified().ok() != self.modified {
            return Err(self.mark_changed("modified since".into()));
        }
        Ok(())
    }

    /// Reads block `index` whole into `buf` and checks it against the hash
    /// recorded when verifying; returns the checked bytes. A difference or a
    /// short read marks the file changed.
    pub fn read_block<'b>(
        &self,
        index: u64,
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], ArtifactError> {
        if let Some(detail) = self.changed.get() {
            return Err(self.changed_error(detail.clone()));
        }
        let Some(expected) = usize::try_from(index).ok().and_then(|i| self.blocks.get(i)) else {
            return Err(ArtifactError::Read {
                file: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("block {index} is past the end"),
                ),
            });
        };
        let start = index * BLOCK as u64;
        let want = usize::try_from((self.len - start).min(BLOCK as u64)).unwrap_or(BLOCK);
        buf.clear();
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match self.file.read_at(&mut buf[filled..], start + filled as u64) {
                Ok(0) => {
                    return Err(self.mark_changed(format!(
                        "{} bytes when verified, ends at {} now",
                        self.len,
                        start + filled as u64
                    )))
                }
                Ok(n) => filled += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ArtifactError::Read {
                        file: self.path.clone(),
                        source,
                    })
                }
            }
        }
        if Sha256::digest(&buf[..]).as_slice() != expected {
            return Err(self.mark_changed(format!(
                "the {want} bytes at offset {start} differ from those verified"
            )));
        }
        Ok(&buf[..])
    }

    /// A reader over the verified content from its start; it fails (with
    /// `InvalidData`) where the file no longer matches.
    pub fn reader(&self) -> VerifiedReader<'_> {
        VerifiedReader {
            file: self,
            offset: 0,
            block: Vec::new(),
            block_index: None,
        }
    }

    fn mark_changed(&self, detail: String) -> ArtifactError {
        let detail = self.changed.get_or_init(|| detail).clone();
        self.changed_error(detail)
    }

    fn changed_error(&self, detail: String) -> ArtifactError {
        ArtifactError::Changed {
            file: self.path.clone(),
            detail,
        }
    }
}

/// Reads a [`VerifiedFile`] from the start, a checked block at a time,
/// independently of other readers.
pub struct VerifiedReader<'a> {
    file: &'a VerifiedFile,
    offset: u64,
    block: Vec<u8>,
    block_index: Option<u64>,
}

impl Read for VerifiedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.offset >= self.file.len || buf.is_empty() {
            return Ok(0);
        }
        let index = self.offset / BLOCK as u64;
        if self.block_index != Some(index) {
            self.block_index = None;
            self.file
                .read_block(index, &mut self.block)
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?;
            self.block_index = Some(index);
        }
        let within = usize::try_from(self.offset - index * BLOCK as u64).unwrap_or(0);
        let n = (self.block.len() - within).min(buf.len());
        buf[..n].copy_from_slice(&self.block[within..within + n]);
        self.offset += n as u64;
        Ok(n)
    }
}

/// A verified output directory.
#[derive(Debug)]
pub struct Artifacts {
    pub dir: PathBuf,
    /// From the manifest: the profile the artifacts were built from.
    pub profile: String,
    pub hostname: String,
    /// The kernel command line baked into the UKI and the PXE script.
    pub cmdline: String,
    pub min_ram_mib: u64,
    files: BTreeMap<String, VerifiedFile>,
}

impl Artifacts {
    /// Verifies every file listed in `dir/SHA256SUMS` and reads the manifest.
    pub fn open(dir: &Path) -> Result<Artifacts, ArtifactError> {
        let sums_path = dir.join(SUMS);
        let text = match std::fs::read_to_string(&sums_path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ArtifactError::NoSums {
                    dir: dir.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ArtifactError::ReadSums {
                    path: sums_path,
                    source,
                })
            }
        };
        let entries = parse_sums(&text).map_err(|(line, message)| ArtifactError::BadSums {
            path: sums_path.clone(),
            line,
            message,
        })?;
        let mut files = BTreeMap::new();
        for (expected, rel) in entries {
            let verified = verify_file(dir, &rel, &expected)?;
            files.insert(rel, verified);
        }
        let manifest = files
            .get(MANIFEST)
            .ok_or_else(|| ArtifactError::NotListed {
                dir: dir.to_path_buf(),
                name: MANIFEST.into(),
            })?;
        let summary = read_manifest(manifest)?;
        let artifacts = Artifacts {
            dir: dir.to_path_buf(),
            profile: summary.name,
            hostname: summary.hostname,
            cmdline: summary.cmdline,
            min_ram_mib: summary.min_ram_mib,
            files,
        };
        for rel in [
            KERNEL,
            INITRD,
            &artifacts.uki_name(),
            &artifacts.image_name(),
        ] {
            artifacts.file(rel)?;
        }
        Ok(artifacts)
    }

    /// A verified file by its relative path.
    pub fn file(&self, rel: &str) -> Result<&VerifiedFile, ArtifactError> {
        self.files.get(rel).ok_or_else(|| ArtifactError::NotListed {
            dir: self.dir.clone(),
            name: rel.to_string(),
        })
    }

    /// Every verified file, by relative path.
    pub fn files(&self) -> impl Iterator<Item = &VerifiedFile> {
        self.files.values()
    }

    /// `mkhost-<profile>.efi`: the UKI.
    pub fn uki_name(&self) -> String {
        format!("mkhost-{}.efi", self.profile)
    }

    /// `mkhost-<profile>.img`: the GPT disk image.
    pub fn image_name(&self) -> String {
        format!("mkhost-{}.img", self.profile)
    }
}

/// Parses `sha256sum` output: `<64 hex>  <relative path>` per line. Returns the
/// 1-based line number and a message for the first bad line.
pub fn parse_sums(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (hash, name) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .ok_or_else(|| (number, format!("not a `SHA256  FILE` line: {line:?}")))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err((number, format!("{hash:?} is not a sha256 in hex")));
        }
        if !is_plain_relative(name) {
            return Err((
                number,
                format!("{name:?} is not a plain relative path inside the output directory"),
            ));
        }
        if entries.iter().any(|(_, n)| n == name) {
            return Err((number, format!("{name:?} is listed twice")));
        }
        entries.push((hash.to_ascii_lowercase(), name.to_string()));
    }
    Ok(entries)
}

/// `a/b.c`: relative, no `.`/`..`/empty components, no backslash or NUL.
fn is_plain_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['\\', '\0'])
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn verify_file(dir: &Path, rel: &str, expected: &str) -> Result<VerifiedFile, ArtifactError> {
    let path = dir.join(rel);
    let missing = |source| ArtifactError::Missing {
        file: path.clone(),
        source,
    };
    // Every directory on the way must be a real directory, not a symlink.
    let mut walked = dir.to_path_buf();
    let components: Vec<&str> = rel.split('/').collect();
    for component in &components[..components.len() - 1] {
        walked.push(component);
        let meta = std::fs::symlink_metadata(&walked).map_err(missing)?;
        if !meta.is_dir() {
            return Err(ArtifactError::NotDirectory { path: walked });
        }
    }
    let before = std::fs::symlink_metadata(&path).map_err(missing)?;
    if !before.file_type().is_file() {
        return Err(ArtifactError::NotRegular { file: path });
    }
    let file = File::open(&path).map_err(missing)?;
    let read_err = |source| ArtifactError::Read {
        file: path.clone(),
        source,
    };
    let opened = file.metadata().map_err(read_err)?;
    // The file opened is the one inspected above (not swapped for a symlink since).
    if opened.dev() != before.dev() || opened.ino() != before.ino() || !opened.is_file() {
        return Err(ArtifactError::NotRegular { file: path });
    }
    let (actual, blocks, read) = hash_blocks(&file).map_err(read_err)?;
    if actual != expected {
        return Err(ArtifactError::Mismatch {
            file: path,
            expected: expected.to_string(),
            actual,
        });
    }
    // Written to while it was hashed: what was hashed may be no single state.
    let after = file.metadata().map_err(read_err)?;
    if after.len() != opened.len()
        || read != opened.len()
        || after.modified().ok() != opened.modified().ok()
    {
        return Err(ArtifactError::Changed {
            file: path,
            detail: "while it was being verified".into(),
        });
    }
    Ok(VerifiedFile {
        rel: rel.to_string(),
        len: read,
        sha256: actual,
        path,
        file,
        blocks,
        modified: opened.modified().ok(),
        changed: OnceLock::new(),
    })
}

/// The sha256 of the whole file, the sha256 of each [`BLOCK`] of it, and the
/// bytes read, in one pass.
fn hash_blocks(file: &File) -> std::io::Result<(String, Vec<[u8; 32]>, u64)> {
    let mut whole = Sha256::new();
    let mut blocks = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    let mut offset = 0u64;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if filled == 0 {
            break;
        }
        whole.update(&buf[..filled]);
        blocks.push(Sha256::digest(&buf[..filled]).into());
        offset += filled as u64;
        if filled < BLOCK {
            break;
        }
    }
    Ok((hex(&whole.finalize()), blocks, offset))
}

struct ManifestSummary {
    name: String,
    hostname: String,
    cmdline: String,
    min_ram_mib: u64,
}

fn read_manifest(file: &VerifiedFile) -> Result<ManifestSummary, ArtifactError> {
    let mut text = Vec::new();
    file.reader()
        .read_to_end(&mut text)
        .map_err(|source| ArtifactError::Read {
            file: file.path.clone(),
            source,
        })?;
    let bad = |message: String| ArtifactError::Manifest {
        file: file.path.clone(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|err| bad(format!("not JSON: {err}")))?;
    let profile = &value["profile"];
    let text_field = |name: &str| {
        profile[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("profile.{name} is missing")))
    };
    let summary = ManifestSummary {
        name: text_field("name")?,
        hostname: text_field("hostname")?,
        cmdline: text_field("cmdline")?,
        min_ram_mib: profile["min_ram_mib"]
            .as_u64()
            .ok_or_else(|| bad("profile.min_ram_mib is missing".into()))?,
    };
    if !is_plain_relative(&summary.name) || summary.name.contains('/') {
        return Err(bad(format!(
            "profile.name {:?} is not a plain name",
            summary.name
        )));
    }
    if summary.cmdline.contains(['\n', '\r']) || summary.hostname.contains(['\n', '\r']) {
        return Err(bad("profile.cmdline and hostname must be one line".into()));
    }
    Ok(summary)
}

/// What [`ensure_built`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// There was no complete earlier build.
    Built,
    /// The rebuild produced exactly the files that were there.
    Unchanged,
    /// These files were added, removed or changed by the rebuild.
    Rebuilt { changed: Vec<String> },
}

/// Builds the profile (reproducibly) and compares the new `SHA256SUMS` with the
/// one that was there before.
pub fn ensure_built(
    options: &BuildOptions,
    progress: &Progress,
) -> Result<(BuildReport, Freshness), BuildError> {
    let name = profile::load(&options.profile)?.name;
    let sums = options.out_dir.join(&name).join(SUMS);
    let before = std::fs::read_to_string(&sums).ok();
    let report = build::build(options, progress)?;
    let after = std::fs::read_to_string(report.out_dir.join(SUMS)).unwrap_or_default();
    Ok((report, compare_sums(before.as_deref(), &after)))
}

/// Compares two `SHA256SUMS` texts; `None` for "there was none".
pub fn compare_sums(before: Option<&str>, after: &str) -> Freshness {
    let Some(before) = before else {
        return Freshness::Built;
    };
    let (Ok(old), Ok(new)) = (parse_sums(before), parse_sums(after)) else {
        return Freshness::Built;
    };
    let old: BTreeMap<_, _> = old.into_iter().map(|(h, n)| (n, h)).collect();
    let new: BTreeMap<_, _> = new.into_iter().map(|(h, n)| (n, h)).collect();
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(name, hash)| old.get(*name) != Some(hash))
        .map(|(name, _)| name.clone())
        .chain(old.keys().filter(|n| !new.contains_key(*n)).cloned())
        .collect();
    changed.sort();
    if changed.is_empty() {
        Freshness::Unchanged
    } else {
        Freshness::Rebuilt { changed }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hashing::sha256_hex;

    /// Writes a small but complete output directory for profile `name`.
    pub(crate) fn fake_output(out: &Path, name: &str) -> PathBuf {
        let dir = out.join(name);
        std::fs::create_dir_all(dir.join("pxe")).unwrap();
        let kernel: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let files: Vec<(String, Vec<u8>)> = vec![
            (KERNEL.into(), kernel),
            (INITRD.into(), b"initramfs bytes".to_vec()),
            ("pxe/boot.ipxe".into(), b"#!ipxe\n".to_vec()),
            (format!("mkhost-{name}.efi"), b"MZ uki".to_vec()),
            (format!("mkhost-{name}.img"), b"disk".to_vec()),
            (
                MANIFEST.into(),
                format!(
                    r#"{{"profile":{{"name":"{name}","hostname":"mkhost-{name}","cmdline":"console=ttyS0,115200 quiet","min_ram_mib":256}}}}"#
                )
                .into_bytes(),
            ),
        ];
        let mut sums = String::new();
        for (rel, data) in &files {
            std::fs::write(dir.join(rel), data).unwrap();
            sums.push_str(&format!("{}  {rel}\n", sha256_hex(data)));
        }
        std::fs::write(dir.join(SUMS), sums).unwrap();
        dir
    }

    /// Gives `rel` in a fake output directory new content (and SHA256SUMS its hash).
    pub(crate) fn replace_artifact(dir: &Path, rel: &str, data: &[u8]) {
        std::fs::write(dir.join(rel), data).unwrap();
        let sums = std::fs::read_to_string(dir.join(SUMS)).unwrap();
        let sums: String = sums
            .lines()
            .map(|line| match line.split_once("  ") {
                Some((_, name)) if name == rel => format!("{}  {rel}\n", sha256_hex(data)),
                _ => format!("{line}\n"),
            })
            .collect();
        std::fs::write(dir.join(SUMS), sums).unwrap();
    }

    #[test]
    fn changes_after_verifying_are_caught() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_output(tmp.path(), "lab");
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
        replace_artifact(&dir, KERNEL, &data);
        let a = Artifacts::open(&dir).unwrap();
        let kernel = a.file(KERNEL).unwrap();
        assert_eq!(kernel.block_count(), 3);
        let mut all = Vec::new();
        kernel.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        kernel.check_unchanged().unwrap();

        // Written in place with the modification time put back: the
        // metadata looks the same, the block does not.
        let path = dir.join(KERNEL);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_at(b"x", 300_000).unwrap();
        file.set_modified(modified).unwrap();
        kernel.check_unchanged().unwrap();
        let mut buf = Vec::new();
        assert_eq!(kernel.read_block(0, &mut buf).unwrap(), &data[..BLOCK]);
        let err = kernel.read_block(1, &mut buf).unwrap_err().to_string();
        assert!(
            err.contains("pxe/vmlinuz changed on disk after it was verified")
                && err.contains("the 262144 bytes at offset 262144 differ"),
            "{err}"
        );
        // From then on it is refused as a whole.
        assert!(kernel.read_block(0, &mut buf).is_err());
        assert!(kernel.check_unchanged().is_err());
        let err = kernel.reader().read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

        // Truncated: the length tells.
        let initrd = a.file(INITRD).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(INITRD))
            .unwrap()
            .set_len(3)
            .unwrap();
        let err = initrd.check_unchanged().unwrap_err().to_string();
        assert!(err.contains("15 bytes when verified, 3 now"), "{err}");
    }

    #[test]
    fn verifies_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_output(tmp.path(), "lab");
        let a = Artifacts::open(&dir).unwrap();
        assert_eq!(a.profile, "lab");
        assert_eq!(a.hostname, "mkhost-lab");
        assert_eq!(a.cmdline, "console=ttyS0,115200 quiet");
        assert_eq!(a.min_ram_mib, 256);
        assert_eq!(a.uki_name(), "mkhost-lab.efi");
        let kernel = a.file(KERNEL).unwrap();
        assert_eq!(kernel.len, 50_000);
        assert_eq!(kernel.block_count(), 1);
        let mut buf = Vec::new();
        let block = kernel.read_block(0, &mut buf).unwrap();
        assert_eq!(block.len(), 50_000);
        assert_eq!(block[251..255], [0, 1, 2, 3]);
        assert_eq!(a.files().count(), 6);
        // A rebuild that replaces the directory does not change what is held open.
        std::fs::remove_file(dir.join(KERNEL)).unwrap();
        std::fs::write(dir.join(KERNEL), b"new").unwrap();
        let mut all = Vec::new();
        kernel.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 50_000);
    }

    #[test]
    fn tampered_missing_and_symlinked_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_output(tmp.path(), "lab");
        std::fs::write(dir.join(INITRD), b"evil").unwrap();
        let err = Artifacts::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains("pxe/initramfs.img") && err.contains("does not match"),
            "{err}"
        );

        let dir = fake_output(tmp.path(), "lab");
        std::fs::remove_file(dir.join("mkhost-lab.efi")).unwrap();
        let err = Artifacts::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains("mkhost-lab.efi") && err.contains("cannot be opened"),
            "{err}"
        );

        // Same content through a symlink is still refused.
        let dir = fake_output(tmp.path(), "lab");
        let copy = tmp.path().join("copy");
        std::fs::copy(dir.join(INITRD), &copy).unwrap();
        std::fs::remove_file(dir.join(INITRD)).unwrap();
        std::os::unix::fs::symlink(&copy, dir.join(INITRD)).unwrap();
        let err = Artifacts::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains("initramfs.img") && err.contains("symlink"),
            "{err}"
        );

        // A symlinked directory on the way is refused too.
        let dir = fake_output(tmp.path(), "lab");
        let moved = tmp.path().join("pxe-elsewhere");
        std::fs::rename(dir.join("pxe"), &moved).unwrap();
        std::os::unix::fs::symlink(&moved, dir.join("pxe")).unwrap();
        let err = Artifacts::open(&dir).unwrap_err().to_string();
        assert!(err.contains("/pxe ") && err.contains("symlink"), "{err}");

        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = Artifacts::open(&empty).unwrap_err().to_string();
        assert!(err.contains("no SHA256SUMS"), "{err}");
    }

    #[test]
    fn sums_lines_are_checked() {
        let h = "a".repeat(64);
        assert_eq!(
            parse_sums(&format!("{h}  pxe/vmlinuz\n\n{h} *x.img\n")).unwrap(),
            vec![
                (h.clone(), "pxe/vmlinuz".into()),
                (h.clone(), "x.img".into())
            ]
        );
        for (text, want) in [
            (format!("{h} x"), "not a `SHA256  FILE` line"),
            ("abc  x".to_string(), "not a sha256"),
            (format!("{h}  ../etc/passwd"), "not a plain relative path"),
            (format!("{h}  /etc/passwd"), "not a plain relative path"),
            (format!("{h}  a//b"), "not a plain relative path"),
            (format!("{h}  ./a"), "not a plain relative path"),
            (format!("{h}  a\n{h}  a"), "listed twice"),
        ] {
            let (_, message) = parse_sums(&text).unwrap_err();
            assert!(message.contains(want), "{text}: {message}");
        }
    }

    #[test]
    fn freshness_from_sums() {
        let a = format!("{}  x\n{}  y\n", "a".repeat(64), "b".repeat(64));
        let b = format!("{}  x\n{}  y\n", "a".repeat(64), "c".repeat(64));
        assert_eq!(compare_sums(None, &a), Freshness::Built);
        assert_eq!(compare_sums(Some(&a), &a), Freshness::Unchanged);
        assert_eq!(
            compare_sums(Some(&a), &b),
            Freshness::Rebuilt {
                changed: vec!["y".into()]
            }
        );
        let c = format!("{}  x\n", "a".repeat(64));
        assert_eq!(
            compare_sums(Some(&a), &c),
            Freshness::Rebuilt {
                changed: vec!["y".into()]
            }
        );
    }
}
