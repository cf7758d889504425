//! The build host's own apt: `apt-cache show` to learn a package's version and
//! sha256, `apt-get download` to fetch it. Nothing is installed and no root is
//! needed; the downloaded file is checked against apt's sha256 before use.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::deb::parse_fields;
use crate::hashing::sha256_file;

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("`{command}` could not run ({source}); on a non-Debian build host use source = \"path\" or a .deb file in the profile")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("apt does not know package {spec:?}: {stderr} (run `apt-get update`, check the name, or use a .deb file)")]
    Unknown { spec: String, stderr: String },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("apt's record for {spec:?} lacks the field {field}")]
    Incomplete { spec: String, field: &'static str },
    #[error("downloaded {path} has sha256 {actual}, but apt's index says {expected}: the mirror or cache is corrupt; delete the file and retry")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One version of one package as apt's index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub depends: String,
    pub sha256: String,
}

impl AptPackage {
    /// The file name `apt-get download` writes (epoch colon escaped as `%3a`).
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }
}

/// Looks up `spec` (`name` for the candidate version, or `name=version`).
pub fn show(spec: &str) -> Result<AptPackage, AptError> {
    let mut command = Command::new("apt-cache");
    command.args(["show", "--no-all-versions", spec]);
    let output = command.output().map_err(|source| AptError::Spawn {
        command: format!("apt-cache show {spec}"),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || stdout.trim().is_empty() {
        return Err(AptError::Unknown {
            spec: spec.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let first = stdout.split("\n\n").next().unwrap_or_default();
    let fields = parse_fields(first);
    let get = |field: &'static str| {
        fields
            .get(field)
            .cloned()
            .ok_or_else(|| AptError::Incomplete {
                spec: spec.to_string(),
                field,
            })
    };
    Ok(AptPackage {
        name: get("Package")?,
        version: get("Version")?,
        architecture: get("Architecture")?,
        depends: fields.get("Depends").cloned().unwrap_or_default(),
        sha256: get("SHA256")?,
    })
}

/// Makes sure `dir` holds the package's .deb with the right sha256, downloading it
/// with `apt-get download` when missing. Returns its path.
pub fn fetch(package: &AptPackage, dir: &Path) -> Result<PathBuf, AptError> {
    let final_path = dir.join(package.deb_file_name());
    if final_path.is_file() {
        if let Ok(sum) = sha256_file(&final_path) {
            if sum == package.sha256 {
                return Ok(final_path);
            }
        }
    }
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AptError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // A fresh directory per download: concurrent builds never share one.
    let staging_dir = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(io_err(dir))?;
    let staging = staging_dir.path();
    let spec = format!("{}={}", package.name, package.version);
    let output = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(staging)
        .output()
        .map_err(|source| AptError::Spawn {
            command: format!("apt-get download {spec}"),
            source,
        })?;
    if !output.status.success() {
        return Err(AptError::Failed {
            command: format!("apt-get download {spec}"),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let downloaded = staging.join(package.deb_file_name());
    let actual = sha256_file(&downloaded).map_err(io_err(&downloaded))?;
    if actual != package.sha256 {
        return Err(AptError::Checksum {
            path: downloaded,
            expected: package.sha256.clone(),
            actual,
        });
    }
    std::fs::rename(&downloaded, &final_path).map_err(io_err(&final_path))?;
    Ok(final_path)
}

/// For a metapackage like `linux-image-amd64`, the one versioned `linux-image-*`
/// package it depends on (`linux-image-6.1.0-26-amd64 (= 6.1.112-1)`).
pub fn kernel_dependency(depends: &str) -> Option<(String, Option<String>)> {
    depends.split(',').find_map(|alternatives| {
        let first = alternatives.split('|').next()?.trim();
        let (name, rest) = first.split_once(' ').unwrap_or((first, ""));
        if !name.starts_with("linux-image-") {
            return None;
        }
        let version = rest
            .trim()
            .strip_prefix("(=")
            .and_then(|v| v.strip_suffix(')'))
            .map(|v| v.trim().to_string());
        Some((name.to_string(), version))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_of_metapackage() {
        assert_eq!(
            kernel_dependency("linux-image-6.1.0-56-amd64 (= 6.1.192-2)"),
            Some((
                "linux-image-6.1.0-56-amd64".to_string(),
                Some("6.1.192-2".to_string())
            ))
        );
        assert_eq!(kernel_dependency("libc6 (>= 2.36), kmod"), None);
    }

    #[test]
    fn deb_file_name_escapes_epoch() {
        let p = AptPackage {
            name: "x".into(),
            version: "1:2.0-1".into(),
            architecture: "amd64".into(),
            depends: String::new(),
            sha256: String::new(),
        };
        assert_eq!(p.deb_file_name(), "x_1%3a2.0-1_amd64.deb");
    }
}
