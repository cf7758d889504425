//! What every verb shares: the [`Runtime`] (state root, cgroup backend, log),
//! its errors, the log, and the container id rule.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::runtime::cgroups::{CgroupError, CgroupManager, Cgroupfs};
use crate::runtime::hooks::{self, HookError, Hooks, Kind};
use crate::runtime::mount_source::MountSource;
use crate::runtime::plan::PlanError;
use crate::runtime::process::SpawnError;
use crate::runtime::spec::SpecError;
use crate::runtime::state::{self, Record, Status};
use crate::runtime::sys::{self, Errno};

/// The default state root.
pub const DEFAULT_ROOT: &str = "/run/hostd/oci";

/// Errors of the lifecycle verbs.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The id has characters runc would refuse.
    #[error("invalid container id {0:?} (use letters, digits, '_', '+', '-', '.')")]
    InvalidId(String),
    /// `config.json` could not be read.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `config.json` asks for something impossible.
    #[error("invalid config.json")]
    Plan(#[from] PlanError),
    /// The id is taken.
    #[error("container with id {0:?} already exists")]
    Exists(String),
    /// No such container.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// State directory or file trouble.
    #[error("{path}")]
    State {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// cgroup trouble.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The init could not be created.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The verb does not fit the container's status.
    #[error("cannot {action} container {id:?}: it is {status}")]
    Status {
        /// Container id.
        id: String,
        /// Current status.
        status: Status,
        /// The verb.
        action: &'static str,
    },
    /// A system call on the container's process failed.
    #[error("{what} container {id:?}")]
    Process {
        /// What was attempted.
        what: &'static str,
        /// Container id.
        id: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The init died between create and start.
    #[error("container {0:?} exited before it was started")]
    DiedBeforeStart(String),
    /// A `startContainer` hook failed; the container was stopped.
    #[error(transparent)]
    Hook(#[from] HookError),
}

pub(super) fn state_err(path: &Path) -> impl FnOnce(io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::State {
        path: path.to_path_buf(),
        source,
    }
}

/// A line-oriented log: stderr, or a file given with `--log`.
#[derive(Debug, Default)]
pub struct Log {
    file: Option<File>,
    debug: bool,
}

impl Log {
    /// Logs to `file` (append) or stderr; `debug` also shows info lines.
    pub fn new(file: Option<&Path>, debug: bool) -> io::Result<Log> {
        let file = file
            .map(|p| File::options().create(true).append(true).open(p))
            .transpose()?;
        Ok(Log { file, debug })
    }

    fn line(&self, level: &str, msg: &str) {
        let text = format!(
            "time=\"{}\" level={level} msg=\"{}\"\n",
            state::rfc3339_now(),
            msg.replace('"', "'")
        );
        let _ = match &self.file {
            Some(f) => (&*f).write_all(text.as_bytes()),
            None => io::stderr().write_all(text.as_bytes()),
        };
    }

    /// A failed command: always on stderr, and in the log file if any.
    pub fn error(&self, msg: &str) {
        if self.file.is_some() {
            self.line("error", msg);
        }
        let _ = writeln!(io::stderr(), "hostd oci: {msg}");
    }

    /// Something the user should know.
    pub fn warn(&self, msg: &str) {
        self.line("warning", msg);
    }

    /// Something worth recording: always in a log file, on stderr only with
    /// `--debug`.
    pub fn info(&self, msg: &str) {
        if self.file.is_some() || self.debug {
            self.line("info", msg);
        }
    }
}

/// The container runtime: state root, cgroup backend, log.
pub struct Runtime {
    pub(super) root: PathBuf,
    pub(super) cgroups: Box<dyn CgroupManager>,
    pub(super) log: Log,
    pub(super) legacy_clone: bool,
    pub(super) mount_source: Option<MountSource>,
}

impl Runtime {
    /// A runtime with an explicit cgroup backend.
    pub fn new(root: impl Into<PathBuf>, cgroups: Box<dyn CgroupManager>, log: Log) -> Self {
        Runtime {
            root: root.into(),
            cgroups,
            log,
            legacy_clone: std::env::var_os("HOSTD_OCI_LEGACY_CLONE").is_some(),
            mount_source: None,
        }
    }

    /// A runtime with the host's cgroup backend ([`Cgroupfs::detect`]).
    pub fn detect(root: impl Into<PathBuf>, log: Log) -> Self {
        Runtime::new(root, Cgroupfs::detect(), log)
    }

    /// Forces the `clone` fallback instead of `clone3` (also set by the
    /// environment variable `HOSTD_OCI_LEGACY_CLONE`).
    pub fn set_legacy_clone(&mut self, on: bool) {
        self.legacy_clone = on;
    }

    /// Has containers copy their mount namespace from `source` instead of
    /// the caller's ([`MountSource`]).
    pub fn set_mount_source(&mut self, source: Option<MountSource>) {
        self.mount_source = source;
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    pub(super) fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Loads a container's record and current status.
    pub(super) fn load(&self, id: &str) -> Result<(PathBuf, Record, Status), RuntimeError> {
        check_id(id)?;
        let dir = self.dir(id);
        let record = match state::load(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()))
            }
            Err(e) => return Err(state_err(&dir.join(state::STATE_FILE))(e)),
        };
        let status = state::status(&dir, &record);
        Ok((dir, record, status))
    }

    /// Removes what a container leaves behind: processes still in its
    /// cgroup (its init is gone; without a pid namespace its children may
    /// not be, as with runc they are killed), the cgroup, and its state
    /// directory. Then the `poststop` hooks run.
    pub(super) fn destroy(&self, dir: &Path, record: &Record) -> Result<(), RuntimeError> {
        if let Some(cg) = &record.cgroup {
            self.cgroups.kill_all(cg)?;
            self.cgroups.delete(cg)?;
        }
        // Only while the init's mount is still the one on the rootfs.
        if let Some(id) = record.host_mount {
            if sys::mount_id(&record.rootfs) == Ok(id) {
                self.detach_host_mounts(&record.rootfs);
            }
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(state_err(dir)(e)),
            _ => {}
        }
        self.run_hooks_logged(record, Kind::Poststop, hooks::STOPPED, None);
        Ok(())
    }

    /// The recorded hooks of a container, prepared.
    pub(super) fn hooks(&self, record: &Record) -> Option<Hooks> {
        record.hooks.as_ref()?;
        let hooks = Hooks::new(
            record.hooks.as_ref(),
            &record.id,
            &record.bundle,
            &record.annotations,
        );
        hooks
            .map_err(|e| self.log.warn(&format!("{}: {e}", record.id)))
            .ok()
    }

    /// Runs the recorded `poststart` or `poststop` hooks: a failure is a
    /// warning, and the remaining hooks still run (the specification's
    /// rule for these two kinds).
    pub(super) fn run_hooks_logged(
        &self,
        record: &Record,
        kind: Kind,
        status: &str,
        pid: Option<u32>,
    ) {
        if let Some(hooks) = self.hooks(record) {
            let _ = hooks.run_all(kind, status, pid, &mut |e| {
                self.log.warn(&format!("{}: {e}", record.id));
                Ok(())
            });
        }
    }

    /// Detaches the mount a container without a mount namespace of its own
    /// made on its rootfs in the runtime's mount namespace (runc leaves it),
    /// with the container's mounts below it.
    pub(super) fn detach_host_mounts(&self, rootfs: &Path) {
        if let Err(e) = sys::detach(rootfs) {
            self.log
                .warn(&format!("cannot unmount {}: {e}", rootfs.display()));
        }
    }
}

/// runc's id rule: `[A-Za-z0-9_+.-]+`, not `.` or `..`.
pub fn check_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
