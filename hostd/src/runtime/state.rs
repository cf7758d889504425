//! On-disk container state under the runtime root (`/run/hostd/oci/<id>/`).
//!
//! Each container has a directory (mode 0711) holding `state.json` (0600,
//! written to a temporary name and renamed, so readers never see half a file)
//! and, between `create` and `start`, the `exec.fifo` its init blocks on.
//! The status is derived, as runc does: `stopped` when the recorded pid is
//! gone, a zombie, or a different process (start time differs), `created`
//! while the fifo exists, `running` otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use mkhost_shared::fs::replace_atomic;

/// The OCI spec version hostd reports.
pub const OCI_VERSION: &str = "1.0.2";
/// The state file's name.
pub const STATE_FILE: &str = "state.json";
/// The fifo's name.
pub const FIFO: &str = "exec.fifo";

/// What hostd records about a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Init pid in hostd's pid namespace.
    pub pid: i32,
    /// The init's start time (field 22 of `/proc/PID/stat`), to detect pid
    /// reuse.
    pub start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute root file-system path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 with nanoseconds, UTC.
    pub created: String,
    /// Annotations from the spec.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The cgroup path, when the container has one.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// The spec's `hooks`, for the verbs after `create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<serde_json::Value>,
    /// Without a mount namespace of its own: the id of the mount the init
    /// made on `rootfs` in the runtime's mount namespace, which holds the
    /// container's mounts and is detached when the container is destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mount: Option<u64>,
}

/// A container's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Set up, blocked before `execve`.
    Created,
    /// The user's process runs.
    Running,
    /// The process is gone.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// The JSON `state` prints, field for field as runc's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Init pid, 0 when stopped.
    pub pid: i32,
    /// Status.
    pub status: Status,
    /// Bundle.
    pub bundle: PathBuf,
    /// Root file system.
    pub rootfs: PathBuf,
    /// Creation time.
    pub created: String,
    /// Owner (empty, as runc reports for root).
    pub owner: String,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Record {
    /// The public view for a status.
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: OCI_VERSION.into(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Saves the record in `dir`, whole but not fsynced: it describes a live
/// process, which a power cut ends with it (runc's `state.json` is written
/// so too), and the fsyncs were two disk round trips per container start.
pub fn save(dir: &Path, record: &Record) -> io::Result<()> {
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    replace_atomic(&dir.join(STATE_FILE), &json, 0o600)
}

/// Loads the record from `dir`.
pub fn load(dir: &Path) -> io::Result<Record> {
    let bytes = fs::read(dir.join(STATE_FILE))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Fields of `/proc/PID/stat` after the command name: `(state, starttime)`.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, starttime field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Whether the recorded process still exists (and is not a zombie).
pub fn alive(record: &Record) -> bool {
    match proc_stat(record.pid) {
        Some((state, start)) => start == record.start_time && state != 'Z' && state != 'X',
        None => false,
    }
}

/// The status of the container whose state directory is `dir`.
pub fn status(dir: &Path, record: &Record) -> Status {
    if !alive(record) {
        Status::Stopped
    } else if dir.join(FIFO).exists() {
        Status::Created
    } else {
        Status::Running
    }
}

pub use mkhost_shared::time::{rfc3339, rfc3339_now};

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saves_atomically_and_derives_status() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let (_, start) = proc_stat(me).unwrap();
        let record = Record {
            id: "c".into(),
            pid: me,
            start_time: start,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: rfc3339_now(),
            annotations: BTreeMap::new(),
            cgroup: None,
            hooks: None,
            host_mount: None,
        };
        save(tmp.path(), &record).unwrap();
        let mode = fs::metadata(tmp.path().join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(tmp.path()).unwrap(), record);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        assert_eq!(status(tmp.path(), &record), Status::Running);
        fs::write(tmp.path().join(FIFO), "").unwrap();
        assert_eq!(status(tmp.path(), &record), Status::Created);
        let reused = Record {
            start_time: start + 1,
            ..record.clone()
        };
        assert_eq!(status(tmp.path(), &reused), Status::Stopped);
        let json = serde_json::to_value(reused.oci_state(Status::Stopped)).unwrap();
        assert_eq!(json["pid"], 0);
        assert_eq!(json["status"], "stopped");
        assert_eq!(json["ociVersion"], OCI_VERSION);
        assert!(json.get("annotations").is_none());
    }
}
