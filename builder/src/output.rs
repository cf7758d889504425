//! Writing results safely: files go to a temporary name and are renamed into
//! place; a build's artifacts are staged in a hidden directory next to
//! `out/<profile>/` and swapped in whole, so no half-written artifact ever sits
//! under its final name, even after an interrupted build.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::hashing::sha256_file;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write to output directory {path}: {source} (choose another with --out DIR)")]
    Unwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot publish {staging} as {final_dir}")]
    Publish {
        staging: PathBuf,
        final_dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A build's output directory while it is being written.
pub struct Staging {
    pub dir: PathBuf,
    final_dir: PathBuf,
    published: bool,
}

impl Staging {
    /// Creates `<out>/.<name>.staging-<pid>`, removing stale staging directories
    /// left by interrupted builds.
    pub fn create(out: &Path, name: &str) -> Result<Staging, OutputError> {
        let unwritable = |source| OutputError::Unwritable {
            path: out.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(out).map_err(unwritable)?;
        if let Ok(entries) = std::fs::read_dir(out) {
            let prefix = format!(".{name}.staging-");
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let pid: Option<u32> = entry.file_name().to_string_lossy()[prefix.len()..]
                        .parse()
                        .ok();
                    let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    if !alive {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
        }
        let dir = out.join(format!(".{name}.staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(unwritable)?;
        Ok(Staging {
            dir,
            final_dir: out.join(name),
            published: false,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes one artifact (relative path) into the staging directory.
    pub fn write(&self, rel: &str, data: &[u8]) -> Result<PathBuf, OutputError> {
        let path = self.dir.join(rel);
        let write_err = |source| OutputError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        let mut file = File::create(&path).map_err(write_err)?;
        file.write_all(data).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        Ok(path)
    }

    /// Writes `SHA256SUMS` over every file in the staging directory.
    pub fn write_sums(&self) -> Result<String, OutputError> {
        let mut files = Vec::new();
        collect_files(&self.dir, &self.dir, &mut files).map_err(|source| OutputError::Write {
            path: self.dir.clone(),
            source,
        })?;
        files.sort();
        let mut text = String::new();
        for rel in files.iter().filter(|r| r.as_str() != "SHA256SUMS") {
            let path = self.dir.join(rel);
            let sum = sha256_file(&path).map_err(|source| OutputError::Write { path, source })?;
            text.push_str(&format!("{sum}  {rel}\n"));
        }
        self.write("SHA256SUMS", text.as_bytes())?;
        Ok(text)
    }

    /// Replaces `<out>/<name>` with the staged directory.
    pub fn publish(mut self) -> Result<PathBuf, OutputError> {
        let publish_err = |source| OutputError::Publish {
            staging: self.dir.clone(),
            final_dir: self.final_dir.clone(),
            source,
        };
        let old = self.final_dir.with_file_name(format!(
            ".{}.old-{}",
            file_name(&self.final_dir),
            std::process::id()
        ));
        if self.final_dir.exists() {
            std::fs::rename(&self.final_dir, &old).map_err(publish_err)?;
        }
        std::fs::rename(&self.dir, &self.final_dir).map_err(publish_err)?;
        let _ = std::fs::remove_dir_all(&old);
        self.published = true;
        Ok(self.final_dir.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_publishes_whole_and_cleans_up_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        {
            let staging = Staging::create(&out, "qemu").unwrap();
            staging.write("a.txt", b"new").unwrap();
            // Dropped without publish: nothing appears under the final name.
        }
        assert!(!out.join("qemu").exists());
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        let staging = Staging::create(&out, "qemu").unwrap();
        staging.write("a.txt", b"one").unwrap();
        staging.write("pxe/b", b"two").unwrap();
        let sums = staging.write_sums().unwrap();
        assert!(sums.contains("  a.txt\n") && sums.contains("  pxe/b\n"));
        let final_dir = staging.publish().unwrap();
        assert_eq!(std::fs::read(final_dir.join("a.txt")).unwrap(), b"one");
        let staging = Staging::create(&out, "qemu").unwrap();
        staging.write("a.txt", b"two").unwrap();
        staging.publish().unwrap();
        assert_eq!(std::fs::read(out.join("qemu/a.txt")).unwrap(), b"two");
        assert!(!out.join("qemu/pxe").exists());
    }

    #[test]
    fn unwritable_output_is_a_clear_error() {
        let err = Staging::create(Path::new("/proc/mkhost-out"), "x")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--out"), "{err}");
    }
}
