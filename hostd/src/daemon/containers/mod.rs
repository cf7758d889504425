//! Containers run by the daemon from store images.
//!
//! `run` goes through three stages, each undone if a later one fails:
//!
//! 1. **Pure** ([`mkhost_shared::container`], [`config`]): the request is checked (name,
//!    env, limits the kernel would refuse), then the image's config
//!    (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`) is merged with it; a
//!    user name is looked up in the image's `/etc/passwd`. A missing image or
//!    unknown user fails here, before anything exists.
//! 2. **Root file system**: the container's directory `<containers>/<id>/`
//!    (persistent: [`mkhost_shared::paths::CONTAINERS`], on the state disk
//!    when there is one) gets the writable layer `upper/` and `work/`; its
//!    bundle `<state>/bundles/<id>/` (run-time state, RAM) gets `rootfs/`,
//!    where the daemon mounts overlayfs with the image's layers (top first)
//!    as `lowerdir`; `spec.json` keeps what a restart needs. The directory,
//!    its layer and its records (spec, request, state) are fsynced into
//!    place together, one fsync per file and one per directory, before the
//!    process starts.
//! 3. **Process** ([`Backend::create`]): the backend creates and starts
//!    the container (on Linux the single-threaded zygote, with the OCI
//!    runtime, in cgroup `hostd/<id>` with the limits) and hands back a
//!    descriptor that stands for its process (a pidfd) and the read ends
//!    of its stdout and stderr pipes.
//!
//! From then on the [`monitor`] thread writes its output to `container.log`
//! and sees it exit; `Shared::exited` reaps it through the zygote, records
//! the exit code and whether the OOM killer fired in `state.json` (written
//! atomically), and applies the restart policy with a doubling back-off.
//! `stop` signals through the pidfd (SIGTERM, SIGKILL after a timeout) and
//! turns restarts off; `rm` deletes the runtime state and cgroup, unmounts
//! the overlay and removes the directory.
//!
//! **Re-adoption.** The records live in the containers directory, the
//! running containers in the zygote, which outlives the daemon. A new daemon
//! ([`Manager::new`]) reads every `state.json`, gets each running
//! container's descriptors back from the zygote, and goes on; a container
//! that exited meanwhile is reaped then, with its real exit code. See
//! docs/containers.md.
//!
//! **Reboots** ([`reboot`]): a record whose bundle is gone outlived its
//! host; its restart policy decides whether it starts again (root mounted
//! and network set up again) or is recorded as exited. See docs/state.md.

pub mod boot;
pub mod config;
pub mod exec;
pub mod execs;
pub mod monitor;
pub mod reboot;

use mkhost_shared::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::{Attached, Backend, BindMount, CreateSpec, Exit, NetnsMode, Started};
use crate::daemon::network::Networks;
use crate::daemon::volumes::{self, Volumes};
use crate::log::log;
use mkhost_shared::container::capability_set;
pub use mkhost_shared::container::{Limits, Record, RestartPolicy, RunRequest};
use mkhost_shared::fs::{sync_dir, write_atomic, write_atomic_in};
use mkhost_shared::time::rfc3339_now;
use mkhost_store::Store;
use monitor::{MonitorHandle, Running};

/// The per-container state file.
pub const STATE_FILE: &str = "state.json";

pub use mkhost_shared::container::STATUS_CREATED;

/// Why [`Manager::run`] failed: the backend's
/// [`StartError`](crate::backend::StartError) or the daemon's own message
/// (`hostd run` exits 127 or 126 when the command could not be started, as
/// `docker run`).
pub use crate::backend::StartError as RunError;

/// The host's resolver configuration, the source of each container's
/// `/etc/resolv.conf`.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The host's hosts file, which `--network host` containers get.
const HOST_HOSTS: &str = "/etc/hosts";
/// What a restart needs, per container.
pub const SPEC_FILE: &str = "spec.json";
/// The request a container was made from (for `docker inspect`'s
/// `Config`; containers made before it have none).
pub const REQUEST_FILE: &str = "request.json";
/// How long `status` waits for a container's lock before it counts the
/// container as being changed (not running).
pub const COUNT_PATIENCE: Duration = Duration::from_millis(20);
/// Default time between SIGTERM and SIGKILL in `stop`.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// First delay before a restart; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A container that ran this long restarts after [`FIRST_BACKOFF`] again.
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// What the daemon knows about a container beyond its record.
struct EntryState {
    record: Record,
    /// The init's pidfd while it runs.
    pidfd: Option<Arc<OwnedFd>>,
    /// Its input while it runs (`-i`; with `-t`, the terminal's primary
    /// side, also for `resize`).
    input: Option<Arc<OwnedFd>>,
    /// `stop` or `rm` asked: no more restarts.
    stopping: bool,
    /// When the current run started (for the back-off reset).
    started: Instant,
    /// The next restart's delay.
    backoff: Duration,
    /// How many times it has exited (or failed to start) so far: a
    /// `wait --condition next-exit` waits for this to grow.
    exits: u64,
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// A line of a container's output, as followers get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Where it came from.
    pub stream: Stream,
    /// When the daemon read it (RFC 3339, UTC).
    pub time: String,
    /// The line, without its newline.
    pub line: Vec<u8>,
}

/// How many lines a follower may fall behind before it is dropped (its
/// stream ends): a slow client must not hold the host's memory.
pub const FOLLOW_BACKLOG: usize = 4096;

/// What a container is doing, for those waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its status (`created`, `running`, `restarting`, `exited`).
    pub status: String,
    /// How many times it has exited so far.
    pub exits: u64,
    /// Its last exit code.
    pub exit_code: Option<i32>,
    /// Whether it has been removed.
    pub removed: bool,
}

/// A container watched for changes (`docker wait`).
pub struct Watch {
    entry: Arc<Entry>,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl Watch {
    /// What the container is doing now.
    pub fn snapshot(&self) -> Snapshot {
        let state = lock(&self.entry.state);
        Snapshot {
            status: state.record.status.clone(),
            exits: state.exits,
            exit_code: state.record.exit_code,
            removed: self.entry.removed.load(Ordering::SeqCst),
        }
    }

    /// Waits until something changed since the last call.
    pub async fn changed(&mut self) {
        // The sender lives in the entry this holds: it never goes away.
        let _ = self.changes.changed().await;
    }
}

/// One container.
pub struct Entry {
    id: String,
    dir: PathBuf,
    spec: CreateSpec,
    state: Mutex<EntryState>,
    changed: Condvar,
    /// Bumped with every `changed` notification, for async waiters.
    changes: tokio::sync::watch::Sender<u64>,
    /// Set once it is removed.
    removed: AtomicBool,
    log: Mutex<monitor::Log>,
    /// Those following its output (`docker attach`, `logs -f`); guarded
    /// by `log`'s order: lines are appended, then sent, under that lock.
    followers: Mutex<Vec<tokio::sync::mpsc::Sender<OutputLine>>>,
}

/// Whether a container with `status` has no process and none is due:
/// created and never started, or exited.
fn is_stopped(status: &str) -> bool {
    matches!(status, STATUS_CREATED | "exited")
}

/// What re-adoption made of one container directory.
enum Adopted {
    /// Running, watched again.
    Running,
    /// To start again now (its policy says so).
    Due(Arc<Entry>),
    /// Recorded as it is (stopped, exited, lost, removed).
    Other,
    /// Unreadable; logged and left alone.
    Skipped,
    /// It outlived a reboot; what became of it.
    AfterReboot(Box<Adopted>),
}

/// A container directory read for re-adoption.
struct Loaded {
    dir: PathBuf,
    record: Record,
    spec: CreateSpec,
    /// What its record says to do, when the host rebooted since (its
    /// bundle, run-time state, is gone).
    after_reboot: Option<reboot::AfterReboot>,
}

impl Loaded {
    /// Reads `dir`'s record and spec; `None` (logged) when it cannot.
    fn read(dir: &Path) -> Option<Loaded> {
        let load = |file: &str| -> Result<Vec<u8>, String> {
            fs::read(dir.join(file)).map_err(|e| format!("{}: {e}", dir.join(file).display()))
        };
        let loaded = load(STATE_FILE).and_then(|state| {
            let record: Record = serde_json::from_slice(&state)
                .map_err(|e| format!("{}: {e}", dir.join(STATE_FILE).display()))?;
            let spec: CreateSpec = serde_json::from_slice(&load(SPEC_FILE)?)
                .map_err(|e| format!("{}: {e}", dir.join(SPEC_FILE).display()))?;
            Ok((record, spec))
        });
        match loaded {
            Ok((record, spec)) => {
                let after_reboot = (!spec.bundle.exists()).then(|| reboot::after_reboot(&record));
                Some(Loaded {
                    dir: dir.to_path_buf(),
                    record,
                    spec,
                    after_reboot,
                })
            }
            Err(e) => {
                log(&format!(
                    "skipping container directory {}: {e} (remove it by hand)",
                    dir.display()
                ));
                None
            }
        }
    }

    /// Its process ran in this boot when the last daemon left: the zygote
    /// holds it (or knows it is gone).
    fn had_process(&self) -> bool {
        self.after_reboot.is_none() && !is_stopped(&self.record.status)
    }
}

/// One more in a counter while it lives.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicU64) -> Counted<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The containers by id, with an index of their names: finding one by
/// name, id or id prefix costs no scan.
#[derive(Default)]
struct Table {
    /// id -> (name, container).
    by_id: BTreeMap<String, (String, Arc<Entry>)>,
    /// name -> id.
    names: HashMap<String, String>,
}

impl Table {
    /// Adds (or puts back) `entry` under `name`.
    fn insert(&mut self, name: String, entry: Arc<Entry>) {
        self.names.insert(name.clone(), entry.id.clone());
        self.by_id.insert(entry.id.clone(), (name, entry));
    }

    /// Adds `entry` unless `name` is taken.
    fn insert_new(&mut self, name: String, entry: Arc<Entry>) -> bool {
        if self.taken(&name) {
            return false;
        }
        self.insert(name, entry);
        true
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Entry>> {
        let (name, entry) = self.by_id.remove(id)?;
        if self.names.get(&name).is_some_and(|owner| owner == id) {
            self.names.remove(&name);
        }
        Some(entry)
    }

    /// Gives container `id` the name `new`, unless another has it.
    fn rename(&mut self, id: &str, new: &str) -> bool {
        if self.names.get(new).is_some_and(|owner| owner != id) || self.by_id.contains_key(new) {
            return false;
        }
        let Some((name, _)) = self.by_id.get_mut(id) else {
            return false;
        };
        let old = std::mem::replace(name, new.to_string());
        self.names.remove(&old);
        self.names.insert(new.to_string(), id.to_string());
        true
    }

    fn get(&self, id: &str) -> Option<&Arc<Entry>> {
        self.by_id.get(id).map(|(_, e)| e)
    }

    fn named(&self, name: &str) -> Option<&Arc<Entry>> {
        self.names.get(name).and_then(|id| self.get(id))
    }

    /// A container's name or full id.
    fn taken(&self, name: &str) -> bool {
        self.names.contains_key(name) || self.by_id.contains_key(name)
    }

    /// The containers whose id starts with `prefix`, in id order.
    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.by_id
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(id, _)| id.starts_with(prefix))
            .map(|(_, (_, e))| e)
    }

    fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.by_id.values().map(|(_, e)| e)
    }
}

impl Entry {
    /// Sends `chunks` of `stream` to the followers (under the log's
    /// lock), dropping those that fell behind.
    fn send_to_followers(&self, stream: &str, chunks: &[Vec<u8>]) {
        let mut followers = lock(&self.followers);
        if followers.is_empty() {
            return;
        }
        let stream = match stream {
            "stderr" => Stream::Stderr,
            _ => Stream::Stdout,
        };
        let time = rfc3339_now();
        followers.retain(|follower| {
            chunks.iter().all(|line| {
                follower
                    .try_send(OutputLine {
                        stream,
                        time: time.clone(),
                        line: line.clone(),
                    })
                    .is_ok()
            })
        });
    }

    fn new(dir: PathBuf, spec: CreateSpec, record: Record, running: Option<&Running>) -> Entry {
        Entry {
            id: record.id.clone(),
            log: Mutex::new(monitor::Log::new(&dir)),
            dir,
            spec,
            state: Mutex::new(EntryState {
                record,
                pidfd: running.map(|r| Arc::clone(&r.pidfd)),
                input: running.and_then(|r| r.stdin.clone()),
                stopping: false,
                started: Instant::now(),
                backoff: FIRST_BACKOFF,
                exits: 0,
            }),
            changed: Condvar::new(),
            changes: tokio::sync::watch::Sender::new(0),
            removed: AtomicBool::new(false),
            followers: Mutex::new(Vec::new()),
        }
    }

    /// Wakes those waiting for a change, blocking and async.
    fn notify(&self) {
        self.changed.notify_all();
        self.changes.send_modify(|n| *n += 1);
    }

    fn save(&self, record: &Record) {
        let path = self.dir.join(STATE_FILE);
        let json = serde_json::to_vec(record).unwrap_or_default();
        if let Err(e) = write_atomic(&path, &json, 0o600) {
            log(&format!("cannot write {}: {e}", path.display()));
        }
    }

    fn record(&self) -> Record {
        lock(&self.state).record.clone()
    }

    fn status_is(&self, status: &str) -> bool {
        lock(&self.state).record.status == status
    }

    /// Whether it runs, unless its lock stays held for [`COUNT_PATIENCE`]
    /// (a change under way: not running yet, or no longer).
    fn is_running_now(&self) -> bool {
        let deadline = Instant::now() + COUNT_PATIENCE;
        loop {
            match self.state.try_lock() {
                Ok(state) => return state.record.status == "running",
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    return p.into_inner().record.status == "running"
                }
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    return false
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
            }
        }
    }

    /// Waits until the container is not running or `timeout` passed; true
    /// if it is not running.
    fn wait(&self, timeout: Duration) -> bool {
        self.wait_while(timeout, |status| status == "running")
    }

    /// Waits while `busy(status)` holds, for at most `timeout`; true if it
    /// no longer holds.
    fn wait_while(&self, timeout: Duration, busy: impl Fn(&str) -> bool) -> bool {
        // A timeout too long to add is as good as forever.
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let deadline = Instant::now().checked_add(timeout).unwrap_or(far).min(far);
        let mut state = lock(&self.state);
        while busy(&state.record.status) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    fn signal(&self, backend: &dyn Backend, signal: libc::c_int) {
        if let Some(fd) = lock(&self.state).pidfd.as_ref() {
            let _ = backend.signal(fd.as_fd(), signal);
        }
    }
}

impl monitor::Container for Entry {
    fn id(&self) -> &str {
        &self.id
    }

    fn output(&self, stream: &str, bytes: &[u8]) {
        // A terminal's followers get what it writes as it comes (a prompt
        // has no newline); the log still gets lines.
        if self.spec.tty {
            let _log = lock(&self.log);
            self.send_to_followers(stream, &[bytes.to_vec()]);
        }
    }

    fn append_log(&self, stream: &str, lines: &[Vec<u8>]) {
        let mut log = lock(&self.log);
        log.append(stream, lines);
        if !self.spec.tty {
            self.send_to_followers(stream, lines);
        }
        drop(log);
    }

    fn close_log(&self) {
        let mut log = lock(&self.log);
        log.close();
        // The run is over: every follower's stream ends.
        lock(&self.followers).clear();
    }
}

impl monitor::Supervisor for Shared {
    type Container = Entry;

    fn exited(&self, entry: &Entry) -> Option<Instant> {
        Shared::exited(self, entry)
    }

    fn restart(&self, entry: &Entry) -> Option<Running> {
        Shared::restart(self, entry).map(|(running, _)| running)
    }

    fn zygote_lost(&self) {
        Shared::zygote_lost(self)
    }
}

/// Called once if the zygote dies under the daemon.
pub type OnZygoteLost = Box<dyn Fn() + Send + Sync>;

/// What the daemon's threads and the monitor share.
pub struct Shared {
    /// The containers' directories (persistent).
    root: PathBuf,
    /// Their bundles (run-time state): `<state>/bundles`.
    bundles: PathBuf,
    /// Where earlier daemons kept both: `<state>/containers`.
    legacy_root: PathBuf,
    networks: Arc<Networks>,
    /// What makes the containers out of kernel objects.
    backend: Arc<dyn Backend>,
    containers: Mutex<Table>,
    on_zygote_lost: OnZygoteLost,
    /// What happened to containers, for `docker events`.
    events: Arc<crate::daemon::events::Events>,
    /// Exec instances.
    execs: execs::Execs,
    /// Running containers the monitor holds descriptors for.
    watched: Arc<AtomicU64>,
    /// Containers being started (not yet watched).
    starting: AtomicU64,
}

/// The daemon's containers.
pub struct Manager {
    shared: Arc<Shared>,
    monitor: MonitorHandle<Entry>,
    volumes: Arc<Volumes>,
}

/// Undoes a half-made container.
struct Cleanup {
    /// Its directory and bundle, until the container is made.
    dirs: Vec<PathBuf>,
    /// Its root, mounted on the host by the backend.
    mounted: Option<(Arc<dyn Backend>, PathBuf)>,
    /// The container's network, while it has one to give back.
    network: Option<(Arc<Networks>, String)>,
}

impl Cleanup {
    /// The container is made: nothing to undo.
    fn disarm(&mut self) {
        self.dirs.clear();
        self.mounted = None;
        self.network = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((networks, id)) = self.network.take() {
            networks.release(&id);
        }
        if let Some((backend, rootfs)) = self.mounted.take() {
            backend.detach_root(&rootfs);
        }
        for dir in self.dirs.drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Removes a directory tree; one already gone is fine.
fn remove_tree(dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
    }
}

/// Writes the generated `/etc` files (`hosts`, `hostname`, `resolv.conf`)
/// of a container with `hostname` on `prepared`'s network into `bundle`.
/// Fresh files in a fresh directory of the run-time state, made again with
/// the bundle: no rename or fsync needed.
fn write_etc_files(
    bundle: &Path,
    hostname: &str,
    prepared: &crate::daemon::network::Prepared,
) -> Result<(), String> {
    let host_network = prepared.attachment.network == mkhost_shared::network::MODE_HOST;
    let host_resolv_conf = fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    let host_hosts = host_network
        .then(|| fs::read_to_string(HOST_HOSTS).ok())
        .flatten();
    let mut files = config::etc_files(
        hostname,
        &prepared.hosts_extra,
        prepared.resolv_conf.as_deref(),
        &host_resolv_conf,
    );
    if let Some(hosts) = host_hosts {
        files[1].1 = hosts;
    }
    for (name, text) in files {
        let path = bundle.join(name);
        fs::write(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

impl Shared {
    /// Tells the event stream that `action` happened to the container of
    /// `record`, with `extra` attributes.
    fn event(&self, record: &Record, action: &str, extra: &[(&str, String)]) {
        let mut attributes = record.labels.clone();
        attributes.insert("name".into(), record.name.clone());
        attributes.insert("image".into(), record.image.clone());
        for (key, value) in extra {
            attributes.insert((*key).to_string(), value.clone());
        }
        self.events
            .emit("container", action, &record.id, attributes);
    }

    /// The zygote exited: nothing can be created, reaped or deleted any
    /// more, and a daemon cannot fork a new one safely once it has threads.
    /// The daemon's answer ([`OnZygoteLost`]) is to exit, so that init starts
    /// a new one, which forks a fresh zygote and takes the containers over.
    fn zygote_lost(&self) {
        log("the zygote died; containers cannot be managed until hostd restarts");
        (self.on_zygote_lost)();
    }

    /// Has the backend create the process of `spec`.
    fn spawn(&self, spec: &CreateSpec) -> Result<(i32, Running), RunError> {
        // Counted from before the check until the backend answers (then the
        // monitor holds it), so that starts in parallel all count against
        // the limit.
        let _starting = Counted::new(&self.starting);
        let others = self.watched.load(Ordering::SeqCst) + self.starting.load(Ordering::SeqCst) - 1;
        self.backend.check_room(others, spec)?;
        let Started { pid, running } = self.backend.create(spec)?;
        Ok((pid, running))
    }

    /// Reaps an exited init through the backend: (exit code, OOM-killed).
    fn reap(&self, id: &str) -> (i32, bool) {
        for _ in 0..250 {
            match self.backend.reap(id) {
                Ok(Some(Exit { code, oom_killed })) => return (code, oom_killed),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    log(&format!("{id}: cannot reap: {e}"));
                    return (-1, false);
                }
            }
        }
        log(&format!(
            "{id}: its pidfd is readable but it cannot be reaped"
        ));
        (-1, false)
    }

    /// Records the exit of `entry`'s init; answers when to restart it, if
    /// the policy says so.
    fn exited(&self, entry: &Entry) -> Option<Instant> {
        let (code, oom_killed) = self.reap(&entry.id);
        let mut state = lock(&entry.state);
        state.pidfd = None;
        state.input = None;
        let record = &mut state.record;
        record.exit_code = Some(code);
        record.oom_killed = oom_killed;
        record.paused = false;
        state.exits += 1;
        let record = &mut state.record;
        record.finished = Some(rfc3339_now());
        record.pid = 0;
        let restart = !state.stopping
            && state
                .record
                .restart
                .restarts(code, state.record.restart_count);
        let at = if restart {
            if state.started.elapsed() >= BACKOFF_RESET {
                state.backoff = FIRST_BACKOFF;
            }
            let delay = state.backoff;
            state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
            state.record.status = "restarting".into();
            Some(Instant::now() + delay)
        } else {
            state.record.status = "exited".into();
            None
        };
        entry.save(&state.record);
        self.event(&state.record, "die", &[("exitCode", code.to_string())]);
        let name = state.record.name.clone();
        drop(state);
        entry.notify();
        log(&format!(
            "container {} ({name}) exited with code {code}{}{}",
            entry.id,
            if oom_killed { " (OOM-killed)" } else { "" },
            if at.is_some() { "; restarting" } else { "" }
        ));
        let removable = at.is_none() && entry.record().auto_remove;
        let this = lock(&self.containers).get(&entry.id).cloned();
        if let Some(this) = this.filter(|_| removable) {
            if let Err(e) = self.remove(&this) {
                log(&format!("{}: cannot remove it (--rm): {e}", entry.id));
            }
        }
        at
    }

    /// Deletes the runtime state and cgroup of `entry` (which is not
    /// running), unmounts its root and removes its directory and record.
    fn remove(&self, entry: &Arc<Entry>) -> Result<(), String> {
        // Whoever takes it out of the table removes it (`rm` and `--rm`
        // may race); a failure puts it back.
        if lock(&self.containers).remove(&entry.id).is_none() {
            return Ok(());
        }
        let result = self.remove_files(entry);
        match &result {
            Ok(()) => {
                entry.removed.store(true, Ordering::SeqCst);
                self.execs.forget(&entry.id);
                entry.notify();
                self.event(&entry.record(), "destroy", &[]);
                log(&format!(
                    "removed container {} ({})",
                    entry.id,
                    entry.record().name
                ))
            }
            Err(_) => {
                let name = entry.record().name;
                lock(&self.containers).insert(name, Arc::clone(entry));
            }
        }
        result
    }

    fn remove_files(&self, entry: &Entry) -> Result<(), String> {
        self.backend.delete(&entry.id)?;
        self.backend.unmount_root(&entry.spec.rootfs)?;
        self.networks.release(&entry.id);
        // The bundle first: a crash in between leaves a record without a
        // bundle, which the next daemon takes for a container after a reboot.
        remove_tree(&entry.spec.bundle)?;
        remove_tree(&entry.dir)?;
        let _ = sync_dir(&self.root);
        Ok(())
    }

    /// Makes the bundle of `entry` again when the host rebooted under it
    /// (the bundle is gone): mounts its root over its writable layer, sets
    /// its network up again from the record (same address if free) and
    /// writes its `/etc` files. Does nothing while the bundle exists.
    fn rebuild_bundle(&self, entry: &Entry, record: &mut Record) -> Result<(), String> {
        let spec = &entry.spec;
        if spec.bundle.exists() {
            return Ok(());
        }
        let mut cleanup = Cleanup {
            dirs: vec![spec.bundle.clone()],
            mounted: None,
            network: None,
        };
        self.backend.make_bundle(&entry.dir, spec)?;
        let last = record.network.clone().unwrap_or_default();
        let prepared = match last.network.as_str() {
            // A record from before networks had none.
            "" => self.networks.prepare(
                &entry.id,
                &record.name,
                &spec.hostname,
                mkhost_shared::network::MODE_NONE,
                &[],
                &[],
                None,
            )?,
            _ => self
                .networks
                .reattach(&entry.id, &record.name, &spec.hostname, &last)?,
        };
        cleanup.network = Some((Arc::clone(&self.networks), entry.id.clone()));
        write_etc_files(&spec.bundle, &spec.hostname, &prepared)?;
        if let (Some(now), Some(was)) = (prepared.attachment.address, last.address) {
            if now != was {
                log(&format!(
                    "container {} ({}) has address {now} now ({was} was taken)",
                    entry.id, record.name
                ));
            }
        }
        if record.network.is_some() {
            record.network = Some(prepared.attachment);
        }
        cleanup.disarm();
        Ok(())
    }

    /// Starts `entry` again (a restart it is still due); answers its new
    /// descriptors for the monitor.
    fn restart(&self, entry: &Entry) -> Option<(Running, i32)> {
        let mut state = lock(&entry.state);
        if state.stopping || state.record.status != "restarting" {
            return None;
        }
        self.respawn(entry, &mut state, true).ok()
    }

    /// Creates `entry`'s process again (after deleting the last one's
    /// runtime state and cgroup) and records it; a restart by the policy
    /// counts in `restart_count`.
    fn respawn(
        &self,
        entry: &Entry,
        state: &mut MutexGuard<'_, EntryState>,
        by_policy: bool,
    ) -> Result<(Running, i32), RunError> {
        let first = state.record.status == STATUS_CREATED;
        if !first {
            let _ = self.backend.delete(&entry.id);
        }
        let rebuilt = self
            .rebuild_bundle(entry, &mut state.record)
            .map_err(RunError::from);
        // The init mounts its root itself; a root an older daemon mounted
        // on the host goes first (two mounts must not share an upper layer).
        let spec = CreateSpec {
            root_overlay: self.backend.root_options(&entry.dir, &entry.spec),
            ..entry.spec.clone()
        };
        let rebuilt = rebuilt.and_then(|()| {
            self.backend
                .unmount_root(&spec.rootfs)
                .map_err(RunError::from)
        });
        match rebuilt.and_then(|()| self.spawn(&spec)) {
            Ok((pid, running)) => {
                state.record.pid = pid;
                state.record.status = "running".into();
                if by_policy {
                    state.record.restart_count += 1;
                }
                state.record.exit_code = None;
                state.record.oom_killed = false;
                state.record.finished = None;
                state.record.started = rfc3339_now();
                state.record.error = None;
                state.record.stopped_by_user = false;
                state.started = Instant::now();
                state.pidfd = Some(Arc::clone(&running.pidfd));
                state.input = running.stdin.clone();
                entry.save(&state.record);
                entry.notify();
                self.event(&state.record, "start", &[]);
                match first {
                    true => log(&format!(
                        "started container {} ({}) pid {pid}",
                        entry.id, state.record.name
                    )),
                    false => log(&format!(
                        "restarted container {} ({}) pid {pid}, restart {}",
                        entry.id, state.record.name, state.record.restart_count
                    )),
                }
                Ok((running, pid))
            }
            Err(error) => {
                // A container that never ran stays created, as in Docker,
                // with the exit code of its command's failure.
                if !first {
                    state.record.status = "exited".into();
                }
                state.exits += 1;
                state.record.exit_code = error.exec.map(|e| i32::from(e.exit_code()));
                state.record.error = Some(match first {
                    true => error.message.clone(),
                    false => format!("restart failed: {}", error.message),
                });
                entry.save(&state.record);
                entry.notify();
                log(&format!("{}: start failed: {}", entry.id, error.message));
                Err(error)
            }
        }
    }
}

impl Manager {
    /// Containers with their directories under `containers` and their
    /// bundles under `state/bundles`, created through `backend`. Takes over
    /// what an earlier daemon left: containers the zygote still holds are
    /// watched again; the others (their zygote died) are killed if still
    /// alive, since nobody holds their output or exit status any more,
    /// recorded as lost, and restarted if their policy says so. Containers
    /// whose bundle is gone outlived a reboot: [`reboot::after_reboot`]
    /// decides. `on_zygote_lost` runs if the zygote dies later.
    pub fn new(
        containers: &Path,
        state: &Path,
        backend: Arc<dyn Backend>,
        networks: Arc<Networks>,
        volumes: Arc<Volumes>,
        on_zygote_lost: OnZygoteLost,
    ) -> std::io::Result<Manager> {
        let bundles = state.join("bundles");
        for dir in [containers, &bundles] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let helper_gone = backend.helper_gone()?;
        let shared = Arc::new(Shared {
            root: containers.to_path_buf(),
            bundles,
            legacy_root: state.join("containers"),
            networks,
            backend,
            containers: Mutex::new(Table::default()),
            on_zygote_lost,
            events: Arc::new(crate::daemon::events::Events::new()),
            execs: execs::Execs::default(),
            watched: Arc::new(AtomicU64::new(0)),
            starting: AtomicU64::new(0),
        });
        let monitor = monitor::start(
            Arc::clone(&shared),
            helper_gone,
            Arc::clone(&shared.watched),
        )?;
        let manager = Manager {
            shared,
            monitor,
            volumes,
        };
        let due = manager.adopt();
        let removed = manager.shared.networks.reconcile();
        if !removed.is_empty() {
            log(&format!(
                "networks: removed {} stale leftovers: {}",
                removed.len(),
                removed.join(", ")
            ));
        }
        // After `reconcile`, which would take a new namespace or veth for
        // a leftover.
        for entry in due {
            manager.monitor.restart_at(entry, Instant::now());
        }
        Ok(manager)
    }

    /// A container directory with no record: a `run` cut off before it
    /// answered. Its process (if the zygote made one), root and bundle go.
    fn remove_unfinished(&self, dir: &Path) {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = self.shared.backend.delete(&id);
        let bundle = self.shared.bundles.join(&id);
        let result = self
            .shared
            .backend
            .unmount_root(&bundle.join("rootfs"))
            .and_then(|()| remove_tree(&bundle))
            .and_then(|()| remove_tree(dir));
        match result {
            Ok(()) => log(&format!(
                "removed {}: a container whose creation was cut off (no {STATE_FILE})",
                dir.display()
            )),
            Err(e) => log(&format!(
                "cannot remove the unfinished container directory {}: {e}",
                dir.display()
            )),
        }
    }

    /// Loads every container directory and re-attaches the running ones;
    /// answers the containers to start again now.
    fn adopt(&self) -> Vec<Arc<Entry>> {
        let mut dirs = Vec::new();
        for root in [&self.shared.root, &self.shared.legacy_root] {
            let Ok(entries) = fs::read_dir(root) else {
                continue;
            };
            for path in entries.flatten().map(|d| d.path()) {
                match reboot::classify(&path, STATE_FILE) {
                    reboot::Found::Container(dir) => dirs.push(dir),
                    reboot::Found::Unfinished(dir) if root == &self.shared.root => {
                        self.remove_unfinished(&dir);
                    }
                    _ => {}
                }
            }
        }
        // Batches of [`Backend::attach_batch`], several at once: each
        // container is a few file reads, and a batch one round trip to the
        // backend (the zygote); a daemon
        // re-adopting ten thousand must answer init well within its 30 s.
        let (mut adopted, mut rebooted) = (0, 0);
        let mut due = Vec::new();
        let batches: Vec<&[PathBuf]> = dirs.chunks(self.shared.backend.attach_batch()).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let outcomes = Mutex::new(Vec::with_capacity(dirs.len()));
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some(batch) = batches.get(next.fetch_add(1, Ordering::SeqCst)) {
                        let batch_outcomes = self.adopt_batch(batch);
                        lock(&outcomes).extend(batch_outcomes);
                    }
                });
            }
        });
        for outcome in outcomes.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let outcome = match outcome {
                Adopted::AfterReboot(kind) => {
                    rebooted += 1;
                    *kind
                }
                other => other,
            };
            match outcome {
                Adopted::Running => adopted += 1,
                Adopted::Due(entry) => due.push(entry),
                _ => {}
            }
        }
        if adopted > 0 {
            log(&format!("re-adopted {adopted} running containers"));
        }
        if rebooted > 0 {
            log(&format!(
                "{rebooted} containers outlived a reboot; starting {} again",
                due.len()
            ));
        }
        due
    }

    /// Loads a batch of container directories, attaches the running ones
    /// in one zygote round trip, and re-adopts each.
    fn adopt_batch(&self, dirs: &[PathBuf]) -> Vec<Adopted> {
        let loaded: Vec<Option<Loaded>> = dirs.iter().map(|dir| Loaded::read(dir)).collect();
        let ids: Vec<String> = loaded
            .iter()
            .flatten()
            .filter(|l| l.had_process())
            .map(|l| l.record.id.clone())
            .collect();
        let mut attached: HashMap<String, Attached> = if ids.is_empty() {
            HashMap::new()
        } else {
            attach_each_if_needed(&ids, |ids| self.shared.backend.attach_many(ids))
        };
        loaded
            .into_iter()
            .map(|loaded| match loaded {
                None => Adopted::Skipped,
                Some(loaded) => {
                    let attached = loaded.had_process().then(|| {
                        attached
                            .remove(&loaded.record.id)
                            .unwrap_or_else(|| Err("the zygote did not answer for it".into()))
                    });
                    self.adopt_loaded(loaded, attached)
                }
            })
            .collect()
    }

    /// Re-adopts one loaded container; `attached` is what the zygote
    /// answered for it, if it had a process.
    fn adopt_loaded(&self, loaded: Loaded, attached: Option<Attached>) -> Adopted {
        let Loaded {
            dir,
            mut record,
            spec,
            after_reboot,
        } = loaded;
        let as_loaded = record.clone();
        let mut running = None;
        if let Some(attached) = attached {
            match attached {
                Ok(started) => {
                    record.pid = started.pid;
                    running = Some(started.running);
                }
                Err(message) => record.error = Some(format!("lost with its zygote: {message}")),
            }
            if running.is_none() {
                // Still alive, it is an orphan nobody can read or reap:
                // the runtime kills it (checking it is the same process)
                // and drops its cgroup.
                let _ = self.shared.backend.delete(&record.id);
            }
        }
        let restart_lost = match after_reboot {
            Some(reboot::AfterReboot::Start) => true,
            Some(reboot::AfterReboot::Keep) => false,
            Some(reboot::AfterReboot::MarkExited | reboot::AfterReboot::Remove) => {
                reboot::mark_lost(&mut record, rfc3339_now());
                false
            }
            None => {
                running.is_none()
                    && !is_stopped(&record.status)
                    && record.restart != RestartPolicy::No
            }
        };
        if restart_lost {
            record.status = "restarting".into();
            record.pid = 0;
        } else if running.is_none() && !is_stopped(&record.status) {
            record.status = "exited".into();
            record.pid = 0;
        }
        // After a reboot the network is set up again when it starts.
        if let (Some(attachment), None) = (&record.network, after_reboot) {
            self.shared
                .networks
                .adopt(&record.id, &record.name, &spec.hostname, attachment);
        }
        let entry = Arc::new(Entry::new(dir, spec, record.clone(), running.as_ref()));
        // After a reboot, a container to start again keeps its record on
        // the disk as it is: `after_reboot` decides the same from it at
        // the next boot, and the restart writes the new one. Saving
        // "restarting" here would cost two fsyncs per container before
        // the daemon answers (1.1 s for 200 under QEMU TCG). A record
        // that did not change (a container re-adopted as it was) is not
        // written again either: ten thousand fsyncs on a state disk.
        if after_reboot != Some(reboot::AfterReboot::Start) && record != as_loaded {
            entry.save(&record);
        }
        lock(&self.shared.containers).insert(record.name.clone(), Arc::clone(&entry));
        let kind = if let Some(r) = running {
            self.monitor.watch(Arc::clone(&entry), r);
            Adopted::Running
        } else if restart_lost {
            Adopted::Due(entry)
        } else {
            if after_reboot == Some(reboot::AfterReboot::Remove) {
                if let Err(e) = self.shared.remove(&entry) {
                    log(&format!("{}: cannot remove it (--rm): {e}", entry.id));
                }
            }
            Adopted::Other
        };
        match after_reboot {
            Some(_) => Adopted::AfterReboot(Box::new(kind)),
            None => kind,
        }
    }

    /// What bounds the number of containers here ([`Backend::limits`]).
    pub fn limits(&self) -> mkhost_shared::control::HostLimits {
        self.shared
            .backend
            .limits(self.shared.watched.load(Ordering::SeqCst))
    }

    /// Containers running now, for `status`, without waiting on a
    /// restart: a restart holds its container's lock through the zygote's
    /// spawn (some 200 ms under TCG), and `status` is init's readiness
    /// probe, which waited for the first of 200 restarts after a reboot. A
    /// container whose lock stays held for [`COUNT_PATIENCE`] (readers like
    /// `ps` hold it for microseconds) is being restarted, stopped or
    /// started, and is not counted as running yet.
    pub fn running(&self) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.shared.containers).entries().cloned().collect();
        entries.iter().filter(|e| e.is_running_now()).count()
    }

    /// Whether `name` is a container's name or full id.
    fn name_taken(&self, name: &str) -> bool {
        lock(&self.shared.containers).taken(name)
    }

    fn find(&self, name: &str) -> Result<Arc<Entry>, String> {
        let map = lock(&self.shared.containers);
        if let Some(entry) = map.get(name).or_else(|| map.named(name)) {
            return Ok(Arc::clone(entry));
        }
        let prefixed: Vec<_> = match name.len() >= 4 {
            true => map.with_prefix(name).take(2).cloned().collect(),
            false => Vec::new(),
        };
        match prefixed.len() {
            1 => Ok(prefixed
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!())),
            0 => Err(format!("no container named {name:?}")),
            _ => Err(format!("container id prefix {name:?} is ambiguous")),
        }
    }

    /// Whether a container (in any state) uses the image with id `image_id`.
    pub fn uses_image(&self, image_id: &str) -> Option<String> {
        lock(&self.shared.containers)
            .entries()
            .map(|e| e.record())
            .find(|r| r.image_id == image_id)
            .map(|r| r.name)
    }

    /// The containers (any state) whose record names volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        lock(&self.shared.containers)
            .entries()
            .map(|e| e.record())
            .filter(|r| r.volumes.iter().any(|v| !v.is_bind() && v.source == name))
            .map(|r| r.name)
            .collect()
    }

    /// Creates and starts a container; answers its id. A container that
    /// cannot start is removed again, with the volumes made for it.
    pub fn run(&self, store: &Store, req: &RunRequest) -> Result<String, RunError> {
        let (entry, mut lease) = self.create_entry(store, req)?;
        match self.start_entry(&entry) {
            Ok(_) => {
                lease.keep();
                Ok(entry.id.clone())
            }
            Err(e) => {
                if let Err(removal) = self.shared.remove(&entry) {
                    log(&format!("{}: cannot remove it: {removal}", entry.id));
                }
                Err(e)
            }
        }
    }

    /// Creates a container without starting it (`docker create`): its
    /// root, network and volumes are ready, its status is `created`.
    pub fn create(&self, store: &Store, req: &RunRequest) -> Result<String, RunError> {
        let (entry, mut lease) = self.create_entry(store, req)?;
        lease.keep();
        log(&format!(
            "created container {} ({})",
            entry.id,
            entry.record().name
        ));
        Ok(entry.id.clone())
    }

    /// Makes a container's directory, root, network and record; answers
    /// the entry (in the table, `created`) and the lease of the volumes
    /// made for it, which the caller keeps or drops.
    fn create_entry<'a>(
        &'a self,
        store: &Store,
        req: &RunRequest,
    ) -> Result<(Arc<Entry>, volumes::Lease<'a>), RunError> {
        // (1) Pure checks.
        req.validate().map_err(|e| e.to_string())?;
        if let Some(name) = &req.name {
            // Names (and full ids) only: `find` also takes an id prefix, and
            // a new name that happens to begin another container's id (`c189`
            // and id `c1892612...`) is no conflict.
            if self.name_taken(name) {
                return Err(format!("a container named {name:?} already exists").into());
            }
        }
        let info = store.inspect(&req.image).map_err(|e| e.to_string())?;
        let lowerdirs = store.lowerdirs(&req.image).map_err(|e| e.to_string())?;
        let mut bytes = [0u8; 8];
        crate::os::random_bytes_insecure(&mut bytes).map_err(|e| format!("no random id: {e}"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let host_network = req.network_name() == mkhost_shared::network::MODE_HOST;
        let hostname = match (&req.hostname, host_network) {
            (Some(h), _) => h.clone(),
            (None, true) => crate::os::hostname().unwrap_or_else(|_| id[..12].to_string()),
            (None, false) => id[..12].to_string(),
        };
        let process = config::merge(&info.config, req, &hostname, &|file: &str| {
            config::read_from_layers(&lowerdirs, file)
        })
        .map_err(|e| e.to_string())?;
        let capabilities = capability_set(&req.cap_add, &req.cap_drop)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| c.to_string())
            .collect();
        let name = req.name.clone().unwrap_or_else(|| id[..12].to_string());
        // Bind sources checked, named volumes created on first use (and
        // removed again if the run fails).
        let (mounts, lease) = self
            .volumes
            .prepare(&req.volumes)
            .map_err(|e| e.to_string())?;

        // (2) Root file system: the writable layer in the container's
        // directory (fsynced with the records below, before the process
        // starts); the mounted root in its bundle.
        let dir = self.shared.root.join(&id);
        let bundle = self.shared.bundles.join(&id);
        let mut cleanup = Cleanup {
            dirs: vec![bundle.clone(), dir.clone()],
            mounted: None,
            network: None,
        };
        for sub in ["upper", "work"] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        let mut spec = CreateSpec {
            id: id.clone(),
            rootfs: bundle.join("rootfs"),
            root_overlay: None,
            bundle,
            lower: lowerdirs,
            args: process.args.clone(),
            env: process.env,
            cwd: process.cwd,
            uid: process.user.uid,
            gid: process.user.gid,
            additional_gids: process.user.additional_gids,
            hostname,
            limits: req.limits.clone(),
            capabilities: Some(capabilities),
            read_only: req.read_only,
            tmpfs: req.tmpfs.clone(),
            binds: Vec::new(),
            etc_files: true,
            netns: NetnsMode::Own,
            tty: req.tty,
            open_stdin: req.open_stdin,
            console_size: req.console_size,
            oom_score_adj: req.oom_score_adj,
            shared_memory_cgroup: self.shared.backend.shares_memory_accounting(&req.limits),
        };
        self.shared.backend.make_bundle(&dir, &spec)?;
        let fills: Vec<_> = mounts.iter().filter(|v| v.fill).collect();
        if !fills.is_empty() {
            self.shared.backend.mount_root(&dir, &spec)?;
            cleanup.mounted = Some((Arc::clone(&self.shared.backend), spec.rootfs.clone()));
        }
        for volume in fills {
            self.shared
                .backend
                .fill_volume(&spec.rootfs, &volume.target, &volume.source)
                .map_err(|e| {
                    format!(
                        "cannot copy the image's {} into volume {}: {e}",
                        volume.target,
                        volume.source.display()
                    )
                })?;
        }
        if let Some((backend, rootfs)) = cleanup.mounted.take() {
            backend.unmount_root(&rootfs)?;
        }
        // On a created network the short id is a name too, as in Docker
        // (docker-compose looks for it among the aliases).
        let mut aliases = req.network_aliases.clone();
        let created_network = !matches!(
            req.network_name(),
            mkhost_shared::network::DEFAULT_NETWORK
                | mkhost_shared::network::MODE_HOST
                | mkhost_shared::network::MODE_NONE
        );
        if created_network && !aliases.iter().any(|a| a == &id[..12]) {
            aliases.push(id[..12].to_string());
        }
        let prepared = self.shared.networks.prepare(
            &id,
            &name,
            &spec.hostname,
            req.network_name(),
            &req.publish,
            &aliases,
            req.ip,
        )?;
        cleanup.network = Some((Arc::clone(&self.shared.networks), id.clone()));
        spec.netns = match (&prepared.netns, host_network) {
            (Some(path), _) => NetnsMode::Path(path.clone()),
            (None, true) => NetnsMode::Host,
            (None, false) => NetnsMode::Own,
        };
        write_etc_files(&spec.bundle, &spec.hostname, &prepared)?;
        spec.binds = mounts
            .into_iter()
            .map(|v| BindMount {
                source: v.source,
                target: v.target,
                read_only: v.read_only,
            })
            .collect();
        // (3) Record.
        let now = rfc3339_now();
        let record = Record {
            id: id.clone(),
            name,
            image: req.image.clone(),
            image_id: info.id.to_string(),
            command: process.args,
            pid: 0,
            created: now,
            status: STATUS_CREATED.into(),
            exit_code: None,
            oom_killed: false,
            restart_count: 0,
            restart: req.restart,
            limits: req.limits.clone(),
            started: String::new(),
            finished: None,
            error: None,
            labels: req.labels.clone(),
            auto_remove: req.auto_remove,
            network: Some(prepared.attachment),
            volumes: req.volumes.clone(),
            stopped_by_user: false,
            paused: false,
        };
        // The spec, the request and the record, with one fsync of the
        // directory for the three and its upper/ and work/; then the
        // directory's own entry.
        let spec_json = serde_json::to_vec(&spec).unwrap_or_default();
        let request_json = serde_json::to_vec(req).unwrap_or_default();
        let record_json = serde_json::to_vec(&record).unwrap_or_default();
        let files: [(&str, &[u8]); 3] = [
            (SPEC_FILE, &spec_json),
            (REQUEST_FILE, &request_json),
            (STATE_FILE, &record_json),
        ];
        write_atomic_in(&dir, &files, 0o600)
            .map_err(|e| format!("cannot write the records in {}: {e}", dir.display()))?;
        sync_dir(&self.shared.root)
            .map_err(|e| format!("cannot sync {}: {e}", self.shared.root.display()))?;
        let entry = Arc::new(Entry::new(dir, spec, record.clone(), None));
        // The name was free when checked above; a run for the same name
        // in parallel may have taken it since (the cleanup undoes this one).
        // The record names its volumes now: `volume rm` sees it.
        if !lock(&self.shared.containers).insert_new(record.name.clone(), Arc::clone(&entry)) {
            return Err(format!("a container named {:?} already exists", record.name).into());
        }
        self.shared.event(&record, "create", &[]);
        cleanup.disarm();
        Ok((entry, lease))
    }

    /// All containers, oldest first.
    pub fn ps(&self) -> Vec<Record> {
        let mut list: Vec<Record> = lock(&self.shared.containers)
            .entries()
            .map(|e| e.record())
            .collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        list
    }

    /// The container's log.
    pub fn logs(&self, name: &str) -> Result<String, String> {
        let entry = self.find(name)?;
        monitor::Log::read(&entry.dir).map_err(|e| format!("cannot read the log of {name}: {e}"))
    }

    /// Turns restarts off and ends the container: SIGTERM, then SIGKILL
    /// after `timeout`. Answers the final record.
    fn halt(&self, entry: &Entry, timeout: Duration) -> Result<Record, String> {
        {
            let mut state = lock(&entry.state);
            state.stopping = true;
            if state.record.status == "restarting" {
                state.record.status = "exited".into();
                entry.save(&state.record);
            }
        }
        if !entry.status_is("running") {
            return Ok(entry.record());
        }
        // A frozen container handles no signal: thawed first, as dockerd does.
        if entry.record().paused {
            let _ = self.set_paused(entry, false);
        }
        if !timeout.is_zero() {
            entry.signal(self.shared.backend.as_ref(), libc::SIGTERM);
            if entry.wait(timeout) {
                return Ok(entry.record());
            }
        }
        entry.signal(self.shared.backend.as_ref(), libc::SIGKILL);
        if !entry.wait(Duration::from_secs(10)) {
            return Err(format!("container {} did not die after SIGKILL", entry.id));
        }
        Ok(entry.record())
    }

    /// SIGTERM, then SIGKILL after `timeout`; answers the final record.
    /// The record remembers that the user stopped it (an `unless-stopped`
    /// container then stays stopped after a reboot) until it starts again.
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<Record, String> {
        let entry = self.find(name)?;
        {
            let mut state = lock(&entry.state);
            state.record.stopped_by_user = true;
            entry.save(&state.record);
        }
        let record = self.halt(&entry, timeout)?;
        self.shared.event(&record, "stop", &[]);
        Ok(record)
    }

    /// Starts a created container, or an exited one again: same id, root
    /// (with what its last run wrote), log and restart policy (turned back
    /// on).
    pub fn start(&self, name: &str) -> Result<Record, RunError> {
        let entry = self.find(name)?;
        self.start_entry(&entry)
    }

    fn start_entry(&self, entry: &Arc<Entry>) -> Result<Record, RunError> {
        let mut state = lock(&entry.state);
        if !matches!(state.record.status.as_str(), STATUS_CREATED | "exited") {
            return Err(format!(
                "container {:?} is {}: stop it first",
                state.record.name, state.record.status
            )
            .into());
        }
        state.stopping = false;
        state.backoff = FIRST_BACKOFF;
        let (running, _) = match self.shared.respawn(entry, &mut state, false) {
            Ok(started) => started,
            Err(e) => {
                // `--rm`: a container that cannot start is removed too, as
                // dockerd does (the docker CLI waits for that).
                let auto_remove = state.record.auto_remove;
                drop(state);
                if auto_remove {
                    if let Err(removal) = self.shared.remove(entry) {
                        log(&format!("{}: cannot remove it (--rm): {removal}", entry.id));
                    }
                }
                return Err(e);
            }
        };
        let record = state.record.clone();
        drop(state);
        self.monitor.watch(Arc::clone(entry), running);
        Ok(record)
    }

    /// Waits until the container has exited for good (not running, no
    /// restart due) or `timeout` passed; answers its record.
    pub fn wait(&self, name: &str, timeout: Duration) -> Result<Record, String> {
        let entry = self.find(name)?;
        entry.wait_while(timeout, |status| status != "exited");
        Ok(entry.record())
    }

    /// The event stream (`docker events`).
    pub fn events(&self) -> &Arc<crate::daemon::events::Events> {
        &self.shared.events
    }

    /// Watches a container for changes (`docker wait`).
    pub fn watch(&self, name: &str) -> Result<Watch, String> {
        let entry = self.find(name)?;
        let changes = entry.changes.subscribe();
        Ok(Watch { entry, changes })
    }

    /// Follows a container's output from now on (`docker attach`): lines
    /// come until its current (or, if created, its first) run ends. `None`
    /// for a container that is not running, restarting or created.
    pub fn attach(
        &self,
        name: &str,
    ) -> Result<(Record, Option<tokio::sync::mpsc::Receiver<OutputLine>>), String> {
        let entry = self.find(name)?;
        let _log = lock(&entry.log);
        Ok((entry.record(), self.follow_locked(&entry)))
    }

    /// The container's log so far and, while it runs, a follower for the
    /// lines after it (`docker logs -f`): nothing is lost or repeated in
    /// between.
    pub fn follow_logs(
        &self,
        name: &str,
    ) -> Result<(String, Option<tokio::sync::mpsc::Receiver<OutputLine>>), String> {
        let entry = self.find(name)?;
        let _log = lock(&entry.log);
        let text = monitor::Log::read(&entry.dir)
            .map_err(|e| format!("cannot read the log of {name}: {e}"))?;
        let follower = match entry.status_is(STATUS_CREATED) {
            // `logs -f` of a container never started ends at once, as
            // Docker's does.
            true => None,
            false => self.follow_locked(&entry),
        };
        Ok((text, follower))
    }

    /// A new follower of `entry`, whose log lock the caller holds.
    fn follow_locked(&self, entry: &Entry) -> Option<tokio::sync::mpsc::Receiver<OutputLine>> {
        let status = entry.record().status;
        if !matches!(status.as_str(), STATUS_CREATED | "running" | "restarting") {
            return None;
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(FOLLOW_BACKLOG);
        lock(&entry.followers).push(sender);
        Some(receiver)
    }

    /// Sends `signal` to a running container's init (`docker kill`). As
    /// with dockerd, a kill is a manual stop: the restart policy no longer
    /// brings the container back (`start` turns it on again).
    pub fn kill(&self, name: &str, signal: i32) -> Result<Record, String> {
        let entry = self.find(name)?;
        if !entry.status_is("running") {
            return Err(format!("container {name:?} is not running"));
        }
        if entry.record().paused {
            let _ = self.set_paused(&entry, false);
        }
        let mut state = lock(&entry.state);
        state.stopping = true;
        state.record.stopped_by_user = true;
        entry.save(&state.record);
        let Some(fd) = state.pidfd.as_ref() else {
            return Err(format!("container {name:?} is not running"));
        };
        self.shared
            .backend
            .signal(fd.as_fd(), signal)
            .map_err(|e| format!("cannot send signal {signal} to {name}: {e}"))?;
        self.shared
            .event(&state.record, "kill", &[("signal", signal.to_string())]);
        Ok(state.record.clone())
    }

    /// One container in full: its record, what it was made from (if known)
    /// and what it runs.
    pub fn details(&self, name: &str) -> Result<(Record, Option<RunRequest>, CreateSpec), String> {
        let entry = self.find(name)?;
        let request = fs::read(entry.dir.join(REQUEST_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Ok((entry.record(), request, entry.spec.clone()))
    }

    /// Gives a container another name (`docker rename`); its DNS name on
    /// its network follows.
    pub fn rename(&self, name: &str, new_name: &str) -> Result<Record, String> {
        let entry = self.find(name)?;
        if !mkhost_shared::container::valid_name(new_name) {
            return Err(format!(
                "invalid container name {new_name:?}: letters, digits, '_', '.' and '-', beginning with a letter or digit"
            ));
        }
        if !lock(&self.shared.containers).rename(&entry.id, new_name) {
            return Err(format!("a container named {new_name:?} already exists"));
        }
        let mut state = lock(&entry.state);
        let old = std::mem::replace(&mut state.record.name, new_name.to_string());
        entry.save(&state.record);
        self.shared.networks.rename(&entry.id, new_name);
        self.shared
            .event(&state.record, "rename", &[("oldName", format!("/{old}"))]);
        log(&format!(
            "renamed container {} from {old} to {new_name}",
            entry.id
        ));
        Ok(state.record.clone())
    }

    /// Freezes a running container's processes (`docker pause`).
    pub fn pause(&self, name: &str) -> Result<Record, String> {
        let entry = self.find(name)?;
        let record = entry.record();
        if record.status != "running" {
            return Err(format!("container {name:?} is not running"));
        }
        if record.paused {
            return Err(format!("container {name:?} is already paused"));
        }
        self.set_paused(&entry, true)
    }

    /// Thaws a paused container (`docker unpause`).
    pub fn unpause(&self, name: &str) -> Result<Record, String> {
        let entry = self.find(name)?;
        if !entry.record().paused {
            return Err(format!("container {name:?} is not paused"));
        }
        self.set_paused(&entry, false)
    }

    fn set_paused(&self, entry: &Entry, paused: bool) -> Result<Record, String> {
        self.shared
            .backend
            .freeze(&entry.spec, paused)
            .map_err(|e| {
                format!(
                    "cannot {} {}: {e}",
                    if paused { "pause" } else { "unpause" },
                    entry.id
                )
            })?;
        let mut state = lock(&entry.state);
        state.record.paused = paused;
        entry.save(&state.record);
        entry.notify();
        self.shared
            .event(&state.record, if paused { "pause" } else { "unpause" }, &[]);
        Ok(state.record.clone())
    }

    /// One container's record.
    pub fn record(&self, name: &str) -> Result<Record, String> {
        Ok(self.find(name)?.record())
    }

    /// A sample of what container `name` uses now (`docker stats`);
    /// `None` when it does not run.
    pub fn sample(&self, name: &str) -> Result<Option<crate::backend::Sample>, String> {
        let entry = self.find(name)?;
        Ok(self.shared.backend.sample(&entry.spec))
    }

    /// The processes of running container `name` (`docker top`).
    pub fn processes(&self, name: &str) -> Result<Vec<crate::backend::ProcessRow>, String> {
        let record = self.find(name)?.record();
        Ok(self.shared.backend.processes(record.pid))
    }

    /// The host's memory, bytes.
    pub fn host_memory(&self) -> u64 {
        self.shared.backend.host_memory()
    }

    /// The root of container `name` as an open directory, for `docker cp`
    /// ([`Backend::open_root`]), and its create spec.
    pub fn open_root(&self, name: &str) -> Result<(OwnedFd, bool, CreateSpec), String> {
        let entry = self.find(name)?;
        let record = entry.record();
        let pid = if record.status == "running" {
            record.pid
        } else {
            0
        };
        let (fd, live) = self
            .shared
            .backend
            .open_root(&entry.dir, &entry.spec, pid)?;
        Ok((fd, live, entry.spec.clone()))
    }

    /// Removes a container (a running one only with `force`, which kills it).
    pub fn rm(&self, name: &str, force: bool) -> Result<Record, String> {
        let entry = self.find(name)?;
        if entry.status_is("running") && !force {
            return Err(format!(
                "container {name:?} is running: stop it first or use force"
            ));
        }
        let record = self.halt(&entry, Duration::ZERO)?;
        self.shared.remove(&entry)?;
        Ok(record)
    }
}

/// A batch attach's answer: per id its process or why not, or why the
/// whole call failed.
type BatchAnswer<T> = Result<Vec<(String, Result<T, String>)>, String>;

/// What `attach` answers for `ids`: one call for all of them, or, when that
/// call fails as a whole (the round trip, not a container), one call each,
/// so that a failed round trip does not cost a batch of running
/// containers, each then taken for lost and killed.
fn attach_each_if_needed<T>(
    ids: &[String],
    attach: impl Fn(&[String]) -> BatchAnswer<T>,
) -> HashMap<String, Result<T, String>> {
    match attach(ids) {
        Ok(list) => list.into_iter().collect(),
        Err(e) => {
            log(&format!(
                "attaching {} containers in one round trip failed ({e}); one at a time",
                ids.len()
            ));
            let mut answers = HashMap::new();
            for id in ids {
                match attach(std::slice::from_ref(id)) {
                    Ok(list) => answers.extend(list),
                    Err(e) => {
                        answers.insert(id.clone(), Err(format!("cannot attach: {e}")));
                    }
                }
            }
            answers
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_is_attached_one_at_a_time() {
        let ids: Vec<String> = ["a", "b", "gone"].map(String::from).to_vec();
        let calls = std::cell::Cell::new(0);
        // A batch of more than one fails as a whole; "gone" fails alone.
        let attach = |ids: &[String]| -> BatchAnswer<u32> {
            calls.set(calls.get() + 1);
            match ids {
                [one] if one == "gone" => Err("connection reset".into()),
                [one] => Ok(vec![(one.clone(), Ok(7))]),
                _ => Err("reply too long".into()),
            }
        };
        let got = attach_each_if_needed(&ids, attach);
        assert_eq!(calls.get(), 4);
        assert_eq!(got["a"], Ok(7));
        assert_eq!(got["b"], Ok(7));
        assert_eq!(got["gone"], Err("cannot attach: connection reset".into()));

        // A batch that works is one call, its answers as they are.
        calls.set(0);
        let whole = |ids: &[String]| -> BatchAnswer<u32> {
            calls.set(calls.get() + 1);
            Ok(ids
                .iter()
                .map(|id| (id.clone(), Err("exited".into())))
                .collect())
        };
        let got = attach_each_if_needed(&ids, whole);
        assert_eq!(calls.get(), 1);
        assert_eq!(got["b"], Err("exited".into()));
    }
}
