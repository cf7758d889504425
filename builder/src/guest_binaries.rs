//! The image's own programs, `init` and `hostd`, built from this workspace as
//! static binaries. From a source checkout they are (re)built with cargo, which
//! is a quick no-op when up to date; otherwise they are taken from `--bin-dir`,
//! `MKHOST_BIN_DIR`, or the directory holding the `mkhost` executable.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile for the image's programs (see the workspace Cargo.toml).
pub const GUEST_PROFILE: &str = "guest";

#[derive(Debug, thiserror::Error)]
pub enum GuestBinaryError {
    #[error("`cargo build -p hostd` failed in {workspace}:\n{stderr}")]
    Cargo { workspace: PathBuf, stderr: String },
    #[error("could not run cargo to build init and hostd")]
    Spawn(#[source] std::io::Error),
    #[error("{path} not found: build it with `cargo build --profile guest -p hostd` or pass --bin-dir DIR holding `init` and `hostd`")]
    Missing { path: PathBuf },
    #[error("{path} is dynamically linked ({interpreter}); init and hostd must be static (build with the workspace's .cargo/config.toml)")]
    NotStatic { path: PathBuf, interpreter: String },
    #[error("cannot inspect {path}")]
    Elf {
        path: PathBuf,
        #[source]
        source: mkhost_initramfs::elf::ElfError,
    },
}

#[derive(Debug, Clone)]
pub struct GuestBinaries {
    pub init: PathBuf,
    pub hostd: PathBuf,
}

/// Finds (building if needed) `init` and `hostd`.
pub fn locate(bin_dir: Option<&Path>) -> Result<GuestBinaries, GuestBinaryError> {
    let dir = match bin_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("MKHOST_BIN_DIR").map(PathBuf::from))
    {
        Some(dir) => dir,
        None => match source_workspace() {
            Some(workspace) => build_in_workspace(&workspace)?,
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
        },
    };
    let binaries = GuestBinaries {
        init: dir.join("init"),
        hostd: dir.join("hostd"),
    };
    for path in [&binaries.init, &binaries.hostd] {
        check_static(path)?;
    }
    Ok(binaries)
}

/// The workspace this mkhost was built from, when it is still there.
fn source_workspace() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    (workspace.join("Cargo.toml").is_file() && workspace.join("hostd/Cargo.toml").is_file())
        .then(|| workspace.to_path_buf())
}

fn build_in_workspace(workspace: &Path) -> Result<PathBuf, GuestBinaryError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--profile",
            GUEST_PROFILE,
            "--quiet",
            "-p",
            "hostd",
            "--bins",
            "--target",
            TARGET,
        ])
        .current_dir(workspace)
        .output()
        .map_err(GuestBinaryError::Spawn)?;
    if !output.status.success() {
        return Err(GuestBinaryError::Cargo {
            workspace: workspace.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let target_dir = if target_dir.is_relative() {
        workspace.join(target_dir)
    } else {
        target_dir
    };
    Ok(target_dir.join(TARGET).join(GUEST_PROFILE))
}

fn check_static(path: &Path) -> Result<(), GuestBinaryError> {
    if !path.is_file() {
        return Err(GuestBinaryError::Missing {
            path: path.to_path_buf(),
        });
    }
    let closure =
        mkhost_initramfs::elf::library_closure(path).map_err(|source| GuestBinaryError::Elf {
            path: path.to_path_buf(),
            source,
        })?;
    match closure.interpreter {
        Some(interpreter) => Err(GuestBinaryError::NotStatic {
            path: path.to_path_buf(),
            interpreter: interpreter.display().to_string(),
        }),
        None => Ok(()),
    }
}
