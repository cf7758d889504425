//! Containers across a reboot.
//!
//! A container lives in two places. Its **directory** under the containers
//! root (`--containers`, [`mkhost_shared::paths::CONTAINERS`], on the state
//! disk when there is one) holds what must survive a reboot: the record
//! (`state.json`), what a start needs (`spec.json`), the writable layer
//! (`upper/`, `work/`) and the log. Its **bundle** under the run-time state
//! directory (`<state>/bundles/<id>`, RAM) holds what the running container
//! uses and a reboot wipes: the overlay mount point `rootfs/`, the runtime's
//! `config.json`, the generated `/etc` files; its network namespace is
//! `<state>/netns/<id>`.
//!
//! A daemon that finds a record whose bundle is gone knows the host
//! rebooted under that container (a restarted daemon, or one whose zygote
//! died, finds the bundle still there). [`after_reboot`] decides, from the
//! record alone, whether the container is started again or recorded as
//! exited; the backend
//! ([`Backend::make_bundle`](crate::backend::Backend::make_bundle)) makes
//! the bundle again before it starts, and the network is set up again from
//! the record.
//!
//! [`classify`] sorts what the containers root holds, so that a directory
//! that a power cut left half made never stops the daemon.

use std::path::{Path, PathBuf};

use mkhost_shared::container::{Record, RestartPolicy};

/// The exit code recorded for a container that was running when the host
/// went down (Docker's, for a container its daemon lost).
pub const LOST_EXIT_CODE: i32 = 255;

/// The error recorded for it.
pub const LOST_IN_REBOOT: &str = "the host restarted while it ran";

/// What happens to a container whose host rebooted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReboot {
    /// Started again (`always`; `unless-stopped` unless the user stopped it).
    Start,
    /// It had exited before, and stays as it was.
    Keep,
    /// It was running: recorded as exited ([`LOST_EXIT_CODE`]) and left so.
    MarkExited,
    /// It was running with `--rm`: removed, as when it exits.
    Remove,
}

/// Decides what becomes of the container of `record` after a reboot, by
/// Docker's rules for a daemon start: `always` comes back even if the user
/// had stopped it, `unless-stopped` unless the user had stopped it; `no`
/// and `on-failure` are not started: one that was running is recorded as
/// exited (or removed, with `--rm`), one that had exited stays as it was.
pub fn after_reboot(record: &Record) -> AfterReboot {
    let was_running = record.status != "exited";
    if record.status == mkhost_shared::container::STATUS_CREATED {
        // Never started: a restart policy applies once it has run.
        return AfterReboot::Keep;
    }
    match record.restart {
        RestartPolicy::Always => AfterReboot::Start,
        RestartPolicy::UnlessStopped if !record.stopped_by_user => AfterReboot::Start,
        _ if !was_running => AfterReboot::Keep,
        _ if record.auto_remove => AfterReboot::Remove,
        _ => AfterReboot::MarkExited,
    }
}

/// Records that the container of `record` died with its host at `now`.
pub fn mark_lost(record: &mut Record, now: String) {
    record.status = "exited".into();
    record.pid = 0;
    record.exit_code = Some(LOST_EXIT_CODE);
    record.finished = Some(now);
    record.error = Some(LOST_IN_REBOOT.into());
}

/// Whether `name` (an entry of the containers root) names a container:
/// 16 lowercase hex digits, as `run` makes ids.
pub fn is_container_id(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What an entry of the containers root is.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A container directory with a record.
    Container(PathBuf),
    /// A container directory without a record: a `run` cut off before it
    /// answered (a crash, a power cut). Nothing names it; it is removed.
    Unfinished(PathBuf),
    /// Something else (`networks/`, a temporary file): left alone.
    Other,
}

/// Sorts the entry `path` of the containers root.
pub fn classify(path: &Path, record_file: &str) -> Found {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !is_container_id(&name) || !path.is_dir() {
        return Found::Other;
    }
    if path.join(record_file).exists() {
        Found::Container(path.to_path_buf())
    } else {
        Found::Unfinished(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn record(restart: &str, status: &str, stopped_by_user: bool) -> Record {
        let mut r: Record = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "name": "c", "image": "bb", "image_id": "sha256:x",
            "command": ["sh"], "pid": 7, "created": "2026-01-01T00:00:00Z",
            "status": status, "restart": restart,
        }))
        .unwrap();
        r.stopped_by_user = stopped_by_user;
        r
    }

    #[test]
    fn policies_decide_what_comes_back() {
        use AfterReboot::*;
        let cases = [
            // (policy, status at the reboot, stopped by the user) -> decision
            ("always", "running", false, Start),
            ("always", "restarting", false, Start),
            ("always", "exited", true, Start),
            ("always", "exited", false, Start),
            ("unless-stopped", "running", false, Start),
            ("unless-stopped", "restarting", false, Start),
            ("unless-stopped", "exited", true, Keep),
            ("unless-stopped", "exited", false, Start),
            ("no", "running", false, MarkExited),
            ("no", "exited", false, Keep),
            ("no", "exited", true, Keep),
            ("on-failure", "running", false, MarkExited),
            ("on-failure:3", "restarting", false, MarkExited),
            ("on-failure", "exited", false, Keep),
        ];
        for (policy, status, stopped, want) in cases {
            assert_eq!(
                after_reboot(&record(policy, status, stopped)),
                want,
                "{policy} {status} stopped={stopped}"
            );
        }
        let mut rm = record("no", "running", false);
        rm.auto_remove = true;
        assert_eq!(after_reboot(&rm), Remove);
        rm.status = "exited".into();
        assert_eq!(after_reboot(&rm), Keep);
    }

    #[test]
    fn a_lost_container_says_why() {
        let mut r = record("no", "running", false);
        mark_lost(&mut r, "2026-01-02T00:00:00Z".into());
        assert_eq!(
            (r.status.as_str(), r.pid, r.exit_code),
            ("exited", 0, Some(LOST_EXIT_CODE))
        );
        assert_eq!(r.error.as_deref(), Some(LOST_IN_REBOOT));
        assert_eq!(r.finished.as_deref(), Some("2026-01-02T00:00:00Z"));
    }

    #[test]
    fn the_containers_root_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("0123456789abcdef");
        fs::create_dir(&id).unwrap();
        assert_eq!(classify(&id, "state.json"), Found::Unfinished(id.clone()));
        fs::write(id.join("state.json"), b"{").unwrap();
        assert_eq!(classify(&id, "state.json"), Found::Container(id.clone()));
        for other in ["networks", "0123456789ABCDEF", "0123", ".x.tmp-1"] {
            let p = dir.path().join(other);
            fs::create_dir(&p).unwrap();
            assert_eq!(classify(&p, "state.json"), Found::Other, "{other}");
        }
        let file = dir.path().join("fedcba9876543210");
        fs::write(&file, b"").unwrap();
        assert_eq!(classify(&file, "state.json"), Found::Other);
        assert!(is_container_id("0123456789abcdef"));
        assert!(!is_container_id("0123456789abcdeg"));
    }
}
