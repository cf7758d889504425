//! Build inputs: where the kernel, its modules and the systemd-stub come from
//! (`host`, `path`, `deb` package or `.deb` file), fetched and unpacked into the
//! cache, each described by an [`InputRecord`] for the manifest and the lock file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apt::{self, AptError, AptPackage};
use crate::deb::{self, DebError};
use crate::hashing::sha256_file;
use crate::profile::Source;
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Apt(#[from] AptError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error("{what}: {path} does not exist ({hint})")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: String,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no kernel (no boot/vmlinuz-*): {hint}")]
    NoKernel { path: PathBuf, hint: String },
    #[error("{path} holds {count} kernels ({names}); use a package with exactly one")]
    ManyKernels {
        path: PathBuf,
        count: usize,
        names: String,
    },
    #[error("{path} holds no systemd-stub (usr/lib/systemd/boot/efi/linuxx64.efi.stub); is it the systemd-boot-efi package?")]
    NoStub { path: PathBuf },
    #[error("kernel {release}: no modules directory at {tried}")]
    NoModules { release: String, tried: String },
    #[error("cache directory {path} is not usable")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {path}: {source}")]
    Kernel {
        path: PathBuf,
        #[source]
        source: mkhost_image::bzimage::BzImageError,
    },
    #[error("generating the module index of {path}")]
    ModuleIndex {
        path: PathBuf,
        #[source]
        source: mkhost_initramfs::modules::ModuleError,
    },
}

/// What an input was, precisely enough to fetch it again and to detect change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// `deb`, `deb-file`, `host` or `path`.
    pub source: String,
    /// The package name the profile asked for, when apt resolved it to another
    /// (a metapackage like `linux-image-amd64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// sha256 of the `.deb` for packages, of the file itself otherwise.
    pub sha256: String,
    /// The file taken from the input (`vmlinuz-6.1.0-26-amd64`, `linuxx64.efi.stub`).
    pub file: String,
    /// sha256 of that file.
    pub file_sha256: String,
}

#[derive(Debug, Clone)]
pub struct ResolvedKernel {
    pub image: PathBuf,
    pub modules_dir: PathBuf,
    pub release: String,
    pub record: InputRecord,
}

#[derive(Debug, Clone)]
pub struct ResolvedStub {
    pub path: PathBuf,
    pub record: InputRecord,
}

/// The download and unpack cache (`~/.cache/mkhost` unless told otherwise).
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("MKHOST_CACHE") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("mkhost");
        }
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(".cache/mkhost");
        }
        std::env::temp_dir().join("mkhost-cache")
    }

    fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// Unpacked packages, by the .deb's sha256; the prefix names the layout
    /// version so a newer mkhost never trusts an older, narrower unpack.
    fn unpacked(&self, sha256: &str) -> PathBuf {
        self.root.join("unpacked").join(format!("v2-{sha256}"))
    }
}

const STUB_PATHS: [&str; 2] = [
    "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    "lib/systemd/boot/efi/linuxx64.efi.stub",
];

/// Resolves the kernel. `pin`, from the lock file, selects the exact package
/// version to fetch (the caller still compares the result with the pin).
pub fn resolve_kernel(
    source: &Source,
    cache: &Cache,
    pin: Option<&InputRecord>,
    progress: &Progress,
) -> Result<ResolvedKernel, SourceError> {
    match source {
        Source::Host => {
            let (image, release) = newest_host_kernel(Path::new("/boot"))?;
            let modules_dir = PathBuf::from("/lib/modules").join(&release);
            if !modules_dir.is_dir() {
                return Err(SourceError::NoModules {
                    release,
                    tried: modules_dir.display().to_string(),
                });
            }
            let record = file_record("host", &image)?;
            Ok(ResolvedKernel {
                image,
                modules_dir,
                release,
                record,
            })
        }
        Source::Path { path, modules } => {
            let bytes = read(path, "kernel")?;
            let info = mkhost_image::bzimage::parse_bzimage(&bytes).map_err(|source| {
                SourceError::Kernel {
                    path: path.clone(),
                    source,
                }
            })?;
            let modules_dir = modules
                .clone()
                .unwrap_or_else(|| PathBuf::from("/lib/modules").join(&info.release));
            if !modules_dir.is_dir() {
                return Err(SourceError::NoModules {
                    release: info.release,
                    tried: modules_dir.display().to_string(),
                });
            }
            let record = file_record("path", path)?;
            Ok(ResolvedKernel {
                image: path.clone(),
                modules_dir,
                release: info.release,
                record,
            })
        }
        Source::DebPackage { name } => {
            let package = match pin.filter(|p| p.source == "deb") {
                Some(pin) => apt::show(&pinned_spec(pin, name))?,
                None => {
                    let candidate = apt::show(name)?;
                    match apt::kernel_dependency(&candidate.depends) {
                        Some((dep, version)) if !candidate.name.contains("-unsigned") => {
                            let spec = version.map_or(dep.clone(), |v| format!("{dep}={v}"));
                            apt::show(&spec)?
                        }
                        _ => candidate,
                    }
                }
            };
            let deb = fetch_with_progress(&package, cache, progress)?;
            let tree = unpack_kernel(&deb, &package.sha256, cache, progress)?;
            let (image, modules_dir, release) = kernel_in_tree(&tree, &deb)?;
            Ok(ResolvedKernel {
                record: deb_record(
                    "deb",
                    (package.name != *name).then(|| name.clone()),
                    package.name,
                    package.version,
                    package.sha256,
                    &image,
                )?,
                image,
                modules_dir,
                release,
            })
        }
        Source::DebFile { path } => {
            let (control, deb_sha) = open_deb_file(path, "kernel")?;
            let tree = unpack_kernel(path, &deb_sha, cache, progress)?;
            let (image, modules_dir, release) = kernel_in_tree(&tree, path)?;
            Ok(ResolvedKernel {
                record: deb_record(
                    "deb-file",
                    None,
                    control.package,
                    control.version,
                    deb_sha,
                    &image,
                )?,
                image,
                modules_dir,
                release,
            })
        }
    }
}

/// Resolves the systemd-stub.
pub fn resolve_stub(
    source: &Source,
    cache: &Cache,
    pin: Option<&InputRecord>,
    progress: &Progress,
) -> Result<ResolvedStub, SourceError> {
    match source {
        Source::Host => {
            let path = STUB_PATHS
                .iter()
                .map(|p| Path::new("/").join(p))
                .find(|p| p.is_file())
                .ok_or_else(|| SourceError::Missing {
                    what: "systemd-stub",
                    path: PathBuf::from("/").join(STUB_PATHS[0]),
                    hint: "install systemd-boot-efi, or use [stub] source = \"deb\"".into(),
                })?;
            Ok(ResolvedStub {
                record: file_record("host", &path)?,
                path,
            })
        }
        Source::Path { path, .. } => {
            if !path.is_file() {
                return Err(SourceError::Missing {
                    what: "systemd-stub",
                    path: path.clone(),
                    hint: "fix [stub] path in the profile".into(),
                });
            }
            Ok(ResolvedStub {
                record: file_record("path", path)?,
                path: path.clone(),
            })
        }
        Source::DebPackage { name } => {
            let package = match pin.filter(|p| p.source == "deb") {
                Some(pin) => apt::show(&pinned_spec(pin, name))?,
                None => apt::show(name)?,
            };
            let deb = fetch_with_progress(&package, cache, progress)?;
            let tree = unpack_cached(
                &deb,
                &package.sha256,
                cache,
                &is_stub_path,
                progress,
                &|_| Ok(()),
            )?;
            let path = stub_in_tree(&tree, &deb)?;
            Ok(ResolvedStub {
                record: deb_record(
                    "deb",
                    None,
                    package.name,
                    package.version,
                    package.sha256,
                    &path,
                )?,
                path,
            })
        }
        Source::DebFile { path: deb_path } => {
            let (control, deb_sha) = open_deb_file(deb_path, "stub")?;
            let tree = unpack_cached(deb_path, &deb_sha, cache, &is_stub_path, progress, &|_| {
                Ok(())
            })?;
            let path = stub_in_tree(&tree, deb_path)?;
            Ok(ResolvedStub {
                record: deb_record(
                    "deb-file",
                    None,
                    control.package,
                    control.version,
                    deb_sha,
                    &path,
                )?,
                path,
            })
        }
    }
}

/// A `.deb` named by the profile: its control fields and sha256.
fn open_deb_file(path: &Path, table: &'static str) -> Result<(deb::Control, String), SourceError> {
    if !path.is_file() {
        return Err(SourceError::Missing {
            what: if table == "kernel" {
                "kernel package"
            } else {
                "stub package"
            },
            path: path.to_path_buf(),
            hint: format!("fix [{table}] package in the profile"),
        });
    }
    Ok((deb::read_control(path)?, sha256(path)?))
}

fn pinned_spec(pin: &InputRecord, requested: &str) -> String {
    match (&pin.package, &pin.version) {
        (Some(package), Some(version)) => format!("{package}={version}"),
        _ => requested.to_string(),
    }
}

fn is_stub_path(path: &str) -> bool {
    STUB_PATHS.contains(&path)
}

fn is_kernel_path(path: &str) -> bool {
    path.starts_with("boot/vmlinuz-")
        || path.starts_with("boot/config-")
        || path.starts_with("lib/modules/")
        || path.starts_with("usr/lib/modules/")
}

fn fetch_with_progress(
    package: &AptPackage,
    cache: &Cache,
    progress: &Progress,
) -> Result<PathBuf, SourceError> {
    let cached = cache.debs().join(package.deb_file_name());
    if cached.is_file() {
        return Ok(apt::fetch(package, &cache.debs())?);
    }
    let stage = progress.stage(&format!("downloading {} {}", package.name, package.version));
    let path = apt::fetch(package, &cache.debs())?;
    stage.finish(&crate::progress::size(
        std::fs::metadata(&path).map_or(0, |m| m.len()),
    ));
    Ok(path)
}

fn unpack_kernel(
    deb: &Path,
    deb_sha: &str,
    cache: &Cache,
    progress: &Progress,
) -> Result<PathBuf, SourceError> {
    unpack_cached(deb, deb_sha, cache, &is_kernel_path, progress, &|tree| {
        // Debian's packages ship without modules.dep (depmod runs at install):
        // generate the depmod files once, so later builds read them directly.
        for modules_root in ["lib/modules", "usr/lib/modules"] {
            let Ok(entries) = std::fs::read_dir(tree.join(modules_root)) else {
                continue;
            };
            for entry in entries.flatten() {
                let dir = entry.path();
                if dir.join("modules.dep").is_file() {
                    continue;
                }
                let index =
                    mkhost_initramfs::modules::ModuleIndex::load(&dir).map_err(|source| {
                        SourceError::ModuleIndex {
                            path: dir.clone(),
                            source,
                        }
                    })?;
                index
                    .write_depmod_files(&dir)
                    .map_err(|source| SourceError::ModuleIndex {
                        path: dir.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    })
}

/// Unpacks the wanted part of a .deb into `unpacked/<sha256>/` once; a later call
/// finds it complete. Work happens in a temporary directory renamed at the end,
/// so an interrupted unpack never looks complete.
fn unpack_cached(
    deb: &Path,
    deb_sha: &str,
    cache: &Cache,
    wanted: &dyn Fn(&str) -> bool,
    progress: &Progress,
    finish: &dyn Fn(&Path) -> Result<(), SourceError>,
) -> Result<PathBuf, SourceError> {
    let final_dir = cache.unpacked(deb_sha);
    if final_dir.is_dir() {
        return Ok(final_dir);
    }
    let parent = final_dir.parent().unwrap_or(&cache.root).to_path_buf();
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Cache { path, source }
    };
    std::fs::create_dir_all(&parent).map_err(cache_err(&parent))?;
    // A fresh directory per unpack, removed on failure; renamed when complete.
    let staging_dir = tempfile::Builder::new()
        .prefix(&format!(".tmp-{deb_sha}-"))
        .tempdir_in(&parent)
        .map_err(cache_err(&parent))?;
    let staging = staging_dir.path().to_path_buf();
    let stage = progress.stage(&format!("unpacking {}", file_name(deb)));
    let result = deb::unpack_data(deb, &staging, wanted, &|done, total| {
        stage.set_position(done, total)
    })
    .map_err(SourceError::from)
    .and_then(|stats| {
        finish(&staging)?;
        Ok(stats)
    });
    match result {
        Ok(stats) => {
            stage.finish(&format!(
                "{} files, {}",
                stats.files,
                crate::progress::size(stats.bytes)
            ));
            match std::fs::rename(staging_dir.keep(), &final_dir) {
                Ok(()) => Ok(final_dir),
                // Another build finished the same unpack first: use theirs.
                Err(_) if final_dir.is_dir() => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Ok(final_dir)
                }
                Err(source) => Err(SourceError::Cache {
                    path: final_dir,
                    source,
                }),
            }
        }
        Err(err) => Err(err),
    }
}

fn kernel_in_tree(tree: &Path, deb: &Path) -> Result<(PathBuf, PathBuf, String), SourceError> {
    let kernels: Vec<PathBuf> = std::fs::read_dir(tree.join("boot"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| file_name(p).starts_with("vmlinuz-"))
                .collect()
        })
        .unwrap_or_default();
    let image = match kernels.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(SourceError::NoKernel {
                path: deb.to_path_buf(),
                hint: "for a metapackage such as linux-image-amd64 give the package name, not the .deb, or the linux-image-<version> .deb".into(),
            })
        }
        many => {
            return Err(SourceError::ManyKernels {
                path: deb.to_path_buf(),
                count: many.len(),
                names: many.iter().map(|p| file_name(p)).collect::<Vec<_>>().join(", "),
            })
        }
    };
    let release = file_name(&image)["vmlinuz-".len()..].to_string();
    let candidates = [
        tree.join("lib/modules").join(&release),
        tree.join("usr/lib/modules").join(&release),
    ];
    let modules_dir = candidates
        .iter()
        .find(|d| d.is_dir())
        .cloned()
        .ok_or_else(|| SourceError::NoModules {
            release: release.clone(),
            tried: format!("{} (package {})", candidates[0].display(), deb.display()),
        })?;
    Ok((image, modules_dir, release))
}

fn stub_in_tree(tree: &Path, deb: &Path) -> Result<PathBuf, SourceError> {
    STUB_PATHS
        .iter()
        .map(|p| tree.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| SourceError::NoStub {
            path: deb.to_path_buf(),
        })
}

/// The newest `vmlinuz-*` in `/boot` by version order, and its release.
fn newest_host_kernel(boot: &Path) -> Result<(PathBuf, String), SourceError> {
    let mut kernels: Vec<(Vec<VersionPart>, String, PathBuf)> = std::fs::read_dir(boot)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let release = name.strip_prefix("vmlinuz-")?.to_string();
                    Some((version_key(&release), release, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    kernels.sort();
    let (_, release, path) = kernels.pop().ok_or_else(|| SourceError::NoKernel {
        path: boot.to_path_buf(),
        hint: "this build host has no kernel installed: use [kernel] source = \"deb\" (package linux-image-amd64) or install one".into(),
    })?;
    Ok((path, release))
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VersionPart {
    Number(u64),
    Text(String),
}

/// Splits `6.1.0-26-amd64` into comparable numeric and text runs.
fn version_key(version: &str) -> Vec<VersionPart> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut numeric = false;
    for c in version.chars() {
        let is_digit = c.is_ascii_digit();
        if !current.is_empty() && is_digit != numeric {
            parts.push(version_part(&current, numeric));
            current.clear();
        }
        numeric = is_digit;
        current.push(c);
    }
    if !current.is_empty() {
        parts.push(version_part(&current, numeric));
    }
    parts
}

fn version_part(text: &str, numeric: bool) -> VersionPart {
    match (numeric, text.parse()) {
        (true, Ok(n)) => VersionPart::Number(n),
        _ => VersionPart::Text(text.to_string()),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SourceError::Missing {
            what,
            path: path.to_path_buf(),
            hint: "fix the path in the profile".into(),
        },
        _ => SourceError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn sha256(path: &Path) -> Result<String, SourceError> {
    sha256_file(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The record of a file taken from a package.
fn deb_record(
    source: &str,
    requested: Option<String>,
    package: String,
    version: String,
    deb_sha256: String,
    file: &Path,
) -> Result<InputRecord, SourceError> {
    Ok(InputRecord {
        source: source.into(),
        requested,
        package: Some(package),
        version: Some(version),
        sha256: deb_sha256,
        file: file_name(file),
        file_sha256: sha256(file)?,
    })
}

fn file_record(kind: &str, path: &Path) -> Result<InputRecord, SourceError> {
    let sum = sha256(path)?;
    Ok(InputRecord {
        source: kind.into(),
        requested: None,
        package: None,
        version: None,
        sha256: sum.clone(),
        file: file_name(path),
        file_sha256: sum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_uses_version_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-26-amd64",
            "config-x",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let (_, release) = newest_host_kernel(dir.path()).unwrap();
        assert_eq!(release, "6.1.0-26-amd64");
        let empty = tempfile::tempdir().unwrap();
        let err = newest_host_kernel(empty.path()).unwrap_err().to_string();
        assert!(err.contains("source = \"deb\""), "{err}");
    }

    /// A .deb made of `control` and `files`, and an empty cache, in a tempdir.
    fn deb_and_cache(
        control: &str,
        files: &[(&str, &[u8])],
    ) -> (tempfile::TempDir, PathBuf, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("test.deb");
        std::fs::write(&deb, crate::deb::tests::make_deb(control, files)).unwrap();
        let cache = Cache {
            root: dir.path().join("cache"),
        };
        (dir, deb, cache)
    }

    #[test]
    fn deb_file_without_kernel_is_explained() {
        let (_dir, deb, cache) = deb_and_cache(
            "Package: linux-image-amd64\nVersion: 1\nArchitecture: amd64\n",
            &[("./usr/share/doc/linux-image-amd64/copyright", b"c")],
        );
        let progress = Progress::new(true);
        let err = resolve_kernel(&Source::DebFile { path: deb }, &cache, None, &progress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no kernel"), "{err}");
    }

    #[test]
    fn stub_from_deb_file_is_unpacked_once() {
        let (_dir, deb, cache) = deb_and_cache(
            "Package: systemd-boot-efi\nVersion: 252-1\nArchitecture: amd64\n",
            &[("./usr/lib/systemd/boot/efi/linuxx64.efi.stub", b"MZstub")],
        );
        let progress = Progress::new(true);
        let stub = resolve_stub(
            &Source::DebFile { path: deb.clone() },
            &cache,
            None,
            &progress,
        )
        .unwrap();
        assert_eq!(std::fs::read(&stub.path).unwrap(), b"MZstub");
        assert_eq!(stub.record.version.as_deref(), Some("252-1"));
        assert_eq!(stub.record.source, "deb-file");
        let again = resolve_stub(&Source::DebFile { path: deb }, &cache, None, &progress).unwrap();
        assert_eq!(again.path, stub.path);
    }
}
