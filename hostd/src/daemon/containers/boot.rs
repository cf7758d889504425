//! Boot-time containers: the manifest mkhost writes into an image from a
//! profile's `[[container]]` tables ([`mkhost_shared::container::BootManifest`] at
//! [`mkhost_shared::paths::BOOT_MANIFEST`]). When the daemon starts it imports the
//! embedded archives (each once per boot: a marker under the state
//! directory remembers it), deletes each archive once imported (the root is
//! in RAM), and starts every declared container that does
//! not exist yet — so a restarted daemon, which re-adopted them, starts
//! nothing twice. Declared containers run once per boot: the first daemon
//! of a boot (a marker under the state directory, which a reboot wipes)
//! also starts again those whose records outlived a reboot exited (a `no`
//! container the reboot cut off, one that had finished), unless the user
//! had stopped them. A container whose profile said `pull = "boot"` has a pull
//! policy: its image is pulled from its registry first when the store lacks
//! it, tried again a few times while the host's network comes up. Problems
//! are logged per archive and per container; one bad entry does not keep
//! the others from starting.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::Manager;
use crate::daemon::pull::Puller;
use mkhost_shared::container::{BootManifest, PullPolicy, RunRequest};
use mkhost_store::{HashingReader, Store};

/// The marker, under the state directory, of a boot whose declared
/// containers were started.
pub const BOOT_STARTED: &str = "boot-started";

/// What [`start`] did, for the log and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootReport {
    /// Archives imported now.
    pub imported: usize,
    /// Containers started now.
    pub started: Vec<String>,
    /// Containers that already existed.
    pub existing: Vec<String>,
    /// Problems, one line each.
    pub errors: Vec<String>,
}

/// Reads the manifest at `path`: `Ok(None)` if there is none.
pub fn load(path: &Path) -> Result<Option<BootManifest>, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The file's sha256, hex.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let (digest, _) = HashingReader::new(fs::File::open(path)?).finish()?;
    Ok(digest.hex().to_string())
}

/// Waits between boot-time pull attempts: the network may still be coming
/// up (a DHCP lease, a switch port in STP listening) when hostd starts.
pub const PULL_RETRIES: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(8),
    Duration::from_secs(20),
];

/// Pulls `request`'s image as its policy says, trying again after each of
/// `waits`; the last error if every attempt failed.
fn pull_with_retries(
    puller: Option<&Puller>,
    store: &Store,
    request: &RunRequest,
    waits: &[Duration],
) -> Result<(), String> {
    if request.pull == PullPolicy::Never {
        return Ok(());
    }
    let Some(puller) = puller else {
        return Err(format!(
            "image {:?} is to be pulled at boot, but there is no registry client",
            request.image
        ));
    };
    let mut attempt = puller.ensure_image(store, request);
    for wait in waits {
        let Err(e) = &attempt else { break };
        crate::log::log(&format!(
            "boot pull of {} failed, trying again in {} s: {e}",
            request.image,
            wait.as_secs()
        ));
        std::thread::sleep(*wait);
        attempt = puller.ensure_image(store, request);
    }
    attempt
}

/// Imports the archives and starts the containers of `manifest`, pulling
/// the images of those with a pull policy (trying again after each of
/// `pull_waits`).
pub fn start(
    manifest: &BootManifest,
    manager: &Manager,
    store: &Store,
    state: &Path,
    puller: Option<&Puller>,
    pull_waits: &[Duration],
) -> BootReport {
    let mut report = BootReport::default();
    let markers = state.join("boot-imported");
    let _ = fs::create_dir_all(&markers);
    for archive in &manifest.archives {
        let marker = markers.join(&archive.sha256);
        if marker.exists() {
            continue;
        }
        let path = Path::new(&archive.path);
        let checked = sha256_file(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|sum| {
                if sum == archive.sha256 {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: sha256 {sum} does not match the manifest's {}",
                        path.display(),
                        archive.sha256
                    ))
                }
            })
            .and_then(|()| store.import(path).map_err(|e| e.to_string()));
        match checked {
            Ok(_) => {
                report.imported += 1;
                let _ = fs::write(&marker, b"");
                // The root is RAM too: the store has the image now, so the
                // archive would only hold its size a second time.
                if let Err(e) = fs::remove_file(path) {
                    report
                        .errors
                        .push(format!("cannot free {} after import: {e}", path.display()));
                }
            }
            Err(e) => report.errors.push(format!("boot image import failed: {e}")),
        }
    }
    let first_of_boot = !state.join(BOOT_STARTED).exists();
    if let Err(e) = fs::write(state.join(BOOT_STARTED), b"") {
        report.errors.push(format!(
            "cannot write {}: {e}",
            state.join(BOOT_STARTED).display()
        ));
    }
    let existing = manager.ps();
    for request in &manifest.containers {
        let name = request.name.clone().unwrap_or_default();
        if let Some(record) = existing.iter().find(|r| r.name == name) {
            if first_of_boot && record.status == "exited" && !record.stopped_by_user {
                match manager.start(&name) {
                    Ok(_) => report.started.push(name),
                    Err(e) => report
                        .errors
                        .push(format!("boot container {name:?} did not start again: {e}")),
                }
            } else {
                report.existing.push(name);
            }
            continue;
        }
        if let Err(e) = pull_with_retries(puller, store, request, pull_waits) {
            report
                .errors
                .push(format!("boot container {name:?} did not start: {e}"));
            continue;
        }
        match manager.run(store, request) {
            Ok(_) => report.started.push(name),
            Err(e) => report
                .errors
                .push(format!("boot container {name:?} did not start: {e}")),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_load_or_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containers.json");
        assert_eq!(load(&path), Ok(None));
        std::fs::write(&path, br#"{"containers":[{"image":"bb","name":"a"}]}"#).unwrap();
        let m = load(&path).unwrap().unwrap();
        assert_eq!(m.containers[0].name.as_deref(), Some("a"));
        assert!(m.archives.is_empty());
        for bad in [
            &b"{"[..],
            br#"{"containers":[{"image":"bb","memroy":1}]}"#,
            br#"{"containers":[{"image":"bb","restart":"sometimes"}]}"#,
            br#"{"archives":[{"path":"/x"}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = load(&path).unwrap_err();
            assert!(e.starts_with(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
