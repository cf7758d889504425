//! Containers run by the daemon from store images.
//!
//! `run` goes through three stages, each undone if a later one fails:
//!
//! 1. **Pure** ([`config`]): the image's config (`Entrypoint`, `Cmd`, `Env`,
//!    `WorkingDir`, `User`) merged with the request; a user name is looked up
//!    in the image's `/etc/passwd`. A missing image or unknown user fails
//!    here, before anything exists.
//! 2. **Root file system**: `<state>/containers/<id>/` gets `upper/`, `work/`
//!    and `rootfs/`, where the daemon mounts overlayfs with the image's layers
//!    (top first) as `lowerdir`.
//! 3. **Process** ([`zygote`]): the single-threaded zygote creates and starts
//!    the container with the runtime and hands back a pidfd and the read end
//!    of the container's stdout/stderr pipe.
//!
//! One thread per container copies the pipe into `container.log`, each line
//! prefixed with an RFC 3339 UTC timestamp, then waits for the pidfd and has
//! the zygote reap the init; the exit code goes into `state.json` (written
//! atomically). `stop` signals through the pidfd (SIGTERM, SIGKILL after a
//! timeout); `rm` deletes the runtime state, unmounts the overlay and removes
//! the directory.

pub mod config;
pub mod request;
pub mod sys;
pub mod zygote;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::runtime::state::{rfc3339_now, write_atomic};
use crate::store::Store;
use config::CreateSpec;
use request::valid_name;
pub use request::{Limits, RestartPolicy, RunRequest};
use zygote::{Zygote, ZygoteReply, ZygoteRequest};

/// The per-container state file.
pub const STATE_FILE: &str = "state.json";
/// The per-container log file.
pub const LOG_FILE: &str = "container.log";
/// Default time between SIGTERM and SIGKILL in `stop`.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A container's record, as in `state.json` and `ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Container id (16 hex digits).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The image as requested.
    pub image: String,
    /// The image id.
    pub image_id: String,
    /// `argv`.
    pub command: Vec<String>,
    /// The init's pid (in the daemon's pid namespace).
    pub pid: i32,
    /// Creation time, RFC 3339.
    pub created: String,
    /// `running` or `exited`.
    pub status: String,
    /// Exit code once exited (128 + signal when killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

struct Entry {
    dir: PathBuf,
    record: Mutex<Record>,
    exited: Condvar,
    pidfd: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Entry {
    fn save(&self, record: &Record) {
        let path = self.dir.join(STATE_FILE);
        let json = serde_json::to_vec(record).unwrap_or_default();
        if let Err(e) = write_atomic(&path, &json, 0o600) {
            crate::daemon::log(&format!("cannot write {}: {e}", path.display()));
        }
    }

    fn running(&self) -> bool {
        lock(&self.record).exit_code.is_none()
    }

    /// Waits until the container exited or `timeout` passed; true if exited.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut record = lock(&self.record);
        while record.exit_code.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            record = self
                .exited
                .wait_timeout(record, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    fn signal(&self, signal: libc::c_int) {
        let _ = crate::runtime::sys::pidfd_send_signal(self.pidfd.as_fd(), signal);
    }
}

/// The daemon's containers.
pub struct Manager {
    root: PathBuf,
    zygote: Arc<Mutex<Zygote>>,
    containers: Mutex<BTreeMap<String, Arc<Entry>>>,
}

/// Undoes a half-made container.
struct Cleanup {
    dir: Option<PathBuf>,
    mounted: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if self.mounted {
                let _ = crate::sys::umount2(&dir.join("rootfs"), libc::MNT_DETACH);
            }
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Manager {
    /// Containers under `state/containers`, created through `zygote`.
    pub fn new(state: &Path, zygote: Zygote) -> std::io::Result<Manager> {
        let root = state.join("containers");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)?;
        Ok(Manager {
            root,
            zygote: Arc::new(Mutex::new(zygote)),
            containers: Mutex::new(BTreeMap::new()),
        })
    }

    /// Running containers.
    pub fn running(&self) -> usize {
        lock(&self.containers)
            .values()
            .filter(|e| e.running())
            .count()
    }

    fn find(&self, name: &str) -> Result<Arc<Entry>, String> {
        let map = lock(&self.containers);
        let mut found = map
            .values()
            .filter(|e| {
                let r = lock(&e.record);
                r.name == name || r.id == name
            })
            .cloned();
        if let Some(entry) = found.next() {
            return Ok(entry);
        }
        let prefixed: Vec<_> = map
            .values()
            .filter(|e| name.len() >= 4 && lock(&e.record).id.starts_with(name))
            .cloned()
            .collect();
        match prefixed.len() {
            1 => Ok(prefixed
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!())),
            0 => Err(format!("no container named {name:?}")),
            _ => Err(format!("container id prefix {name:?} is ambiguous")),
        }
    }

    /// Creates and starts a container; answers its id.
    pub fn run(&self, store: &Store, req: &RunRequest) -> Result<String, String> {
        // (1) Pure checks.
        if let Some(name) = &req.name {
            if !valid_name(name) {
                return Err(format!(
                    "invalid container name {name:?} (letters, digits, '_', '.', '-')"
                ));
            }
            if self.find(name).is_ok() {
                return Err(format!("a container named {name:?} already exists"));
            }
        }
        let info = store.inspect(&req.image).map_err(|e| e.to_string())?;
        let lowerdirs = store.lowerdirs(&req.image).map_err(|e| e.to_string())?;
        let process = config::merge(&info.config, &req.command, &req.env, &|file: &str| {
            config::read_from_layers(&lowerdirs, file)
        })
        .map_err(|e| e.to_string())?;
        let mut bytes = [0u8; 8];
        crate::sys::random_bytes_insecure(&mut bytes).map_err(|e| format!("no random id: {e}"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let name = req.name.clone().unwrap_or_else(|| id[..12].to_string());

        // (2) Root file system.
        let dir = self.root.join(&id);
        let mut cleanup = Cleanup {
            dir: Some(dir.clone()),
            mounted: false,
        };
        let rootfs = dir.join("rootfs");
        let mut lower: Vec<String> = lowerdirs.iter().map(|p| p.display().to_string()).collect();
        for sub in ["upper", "work", "rootfs", "empty"] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        if lower.is_empty() {
            lower.push(dir.join("empty").display().to_string());
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        crate::sys::mount("overlay", &rootfs, "overlay", 0, Some(&options))
            .map_err(|e| format!("cannot mount the overlay root at {}: {e}", rootfs.display()))?;
        cleanup.mounted = true;

        // (3) Process.
        let spec = CreateSpec {
            id: id.clone(),
            bundle: dir.clone(),
            rootfs,
            args: process.args.clone(),
            env: process.env,
            cwd: process.cwd,
            uid: process.user.0,
            gid: process.user.1,
            hostname: id[..12].to_string(),
            limits: req.limits.clone(),
        };
        let (reply, fds) = lock(&self.zygote)
            .call(&ZygoteRequest::Create(Box::new(spec)))
            .map_err(|e| e.to_string())?;
        let pid = match reply {
            ZygoteReply::Created { pid } => pid,
            ZygoteReply::Error { message } => return Err(message),
            other => return Err(format!("unexpected zygote answer {other:?}")),
        };
        let mut fds = fds.into_iter();
        let (Some(pidfd), Some(pipe)) = (fds.next(), fds.next()) else {
            return Err("the zygote sent no pidfd".into());
        };
        let record = Record {
            id: id.clone(),
            name,
            image: req.image.clone(),
            image_id: info.id.to_string(),
            command: process.args,
            pid,
            created: rfc3339_now(),
            status: "running".into(),
            exit_code: None,
        };
        let entry = Arc::new(Entry {
            dir,
            record: Mutex::new(record.clone()),
            exited: Condvar::new(),
            pidfd,
        });
        entry.save(&record);
        cleanup.dir = None;
        lock(&self.containers).insert(id.clone(), Arc::clone(&entry));
        let zygote = Arc::clone(&self.zygote);
        let watcher = Arc::clone(&entry);
        let spawned = std::thread::Builder::new()
            .name("hostd-ctr".into())
            .spawn(move || watch(&watcher, pipe, &zygote));
        if let Err(e) = spawned {
            crate::daemon::log(&format!("{id}: cannot start its log thread: {e}"));
        }
        crate::daemon::log(&format!(
            "started container {id} ({}) pid {pid}",
            record.name
        ));
        Ok(id)
    }

    /// All containers, oldest first.
    pub fn ps(&self) -> Vec<Record> {
        let mut list: Vec<Record> = lock(&self.containers)
            .values()
            .map(|e| lock(&e.record).clone())
            .collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        list
    }

    /// The container's log.
    pub fn logs(&self, name: &str) -> Result<String, String> {
        let entry = self.find(name)?;
        let path = entry.dir.join(LOG_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`; answers the final record.
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<Record, String> {
        let entry = self.find(name)?;
        if entry.running() {
            entry.signal(libc::SIGTERM);
            if !entry.wait(timeout) {
                entry.signal(libc::SIGKILL);
                if !entry.wait(Duration::from_secs(10)) {
                    return Err(format!("container {name:?} did not die after SIGKILL"));
                }
            }
        }
        let record = lock(&entry.record).clone();
        Ok(record)
    }

    /// Removes a container (a running one only with `force`, which kills it).
    pub fn rm(&self, name: &str, force: bool) -> Result<Record, String> {
        let entry = self.find(name)?;
        if entry.running() {
            if !force {
                return Err(format!(
                    "container {name:?} is running: stop it first or use force"
                ));
            }
            entry.signal(libc::SIGKILL);
            if !entry.wait(Duration::from_secs(10)) {
                return Err(format!("container {name:?} did not die after SIGKILL"));
            }
        }
        let record = lock(&entry.record).clone();
        let (reply, _) = lock(&self.zygote)
            .call(&ZygoteRequest::Delete {
                id: record.id.clone(),
            })
            .map_err(|e| e.to_string())?;
        if let ZygoteReply::Error { message } = reply {
            return Err(message);
        }
        let rootfs = entry.dir.join("rootfs");
        match crate::sys::umount2(&rootfs, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(format!("cannot unmount {}: {e}", rootfs.display())),
        }
        fs::remove_dir_all(&entry.dir)
            .map_err(|e| format!("cannot remove {}: {e}", entry.dir.display()))?;
        lock(&self.containers).remove(&record.id);
        crate::daemon::log(&format!(
            "removed container {} ({})",
            record.id, record.name
        ));
        Ok(record)
    }
}

/// Copies the container's output into its log, then waits for its exit and
/// records the code.
fn watch(entry: &Entry, pipe: OwnedFd, zygote: &Mutex<Zygote>) {
    let path = entry.dir.join(LOG_FILE);
    let mut log = match fs::File::options().create(true).append(true).open(&path) {
        Ok(f) => Some(f),
        Err(e) => {
            crate::daemon::log(&format!("cannot open {}: {e}", path.display()));
            None
        }
    };
    let mut reader = BufReader::new(fs::File::from(pipe));
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if let Some(f) = log.as_mut() {
            let mut text = format!("{} ", rfc3339_now()).into_bytes();
            text.extend_from_slice(&line);
            let _ = f.write_all(&text);
        }
    }
    let id = lock(&entry.record).id.clone();
    let _ = crate::runtime::sys::poll_readable([entry.pidfd.as_fd()], -1);
    let code = loop {
        let answer = lock(zygote).call(&ZygoteRequest::Reap { id: id.clone() });
        match answer {
            Ok((ZygoteReply::Reaped { code: Some(code) }, _)) => break code,
            Ok((ZygoteReply::Reaped { code: None }, _)) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((other, _)) => {
                crate::daemon::log(&format!("{id}: cannot reap: {other:?}"));
                break -1;
            }
            Err(e) => {
                crate::daemon::log(&format!("{id}: cannot reap: {e}"));
                break -1;
            }
        }
    };
    let mut record = lock(&entry.record);
    record.status = "exited".into();
    record.exit_code = Some(code);
    entry.save(&record);
    drop(record);
    entry.exited.notify_all();
    crate::daemon::log(&format!("container {id} exited with code {code}"));
}
