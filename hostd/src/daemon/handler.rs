//! The daemon's request handler: one answer for each control request, over
//! the image store, the containers, the networks, the volumes and the
//! registry client. Both doors use it: the control socket
//! ([`crate::daemon::server`]) and the Docker API ([`crate::daemon::docker`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::containers::{Manager, RunError, STOP_TIMEOUT};
use super::network::Networks;
use super::pull::{Puller, RegistryOptions};
use super::volumes::Volumes;
use crate::log::log;
use mkhost_shared::control::{check_stop_timeout, Request, Response, Status, MAX_WAIT_MS};
use mkhost_store::{Store, StoreError};

/// The daemon's request handler: start time and image store.
pub struct Handler {
    started: Instant,
    pub(crate) store_root: PathBuf,
    /// The open store; `None` until [`Store::open`] succeeds.
    store: Mutex<Option<Store>>,
    /// The containers; `None` without a zygote.
    pub(crate) containers: Option<Arc<Manager>>,
    /// The container networks; `None` without a zygote.
    networks: Option<Arc<Networks>>,
    /// The registry client, or why there is none.
    puller: Result<Arc<Puller>, String>,
    /// The named volumes; `None` until added.
    volumes: Option<Arc<Volumes>>,
}

impl Handler {
    /// A handler for a daemon that started at `started`, with its store at
    /// `store_root`. Opens (creates) the store now; a failure is logged and
    /// retried on the next image request.
    pub fn new(started: Instant, store_root: &Path) -> Self {
        let handler = Self {
            started,
            store_root: store_root.to_path_buf(),
            store: Mutex::new(None),
            containers: None,
            networks: None,
            puller: Err("no registry client".into()),
            volumes: None,
        };
        match handler.store() {
            Ok(store) => log(&format!("image store at {}", store.root().display())),
            Err(e) => log(&format!("image store unavailable: {e}")),
        }
        handler
    }

    /// Adds a registry client made with `options` (a bad option is logged
    /// and answered to every pull).
    pub fn with_registries(mut self, options: &RegistryOptions) -> Self {
        self.puller = Puller::new(options).map(Arc::new);
        if let Err(e) = &self.puller {
            log(&format!("registries unavailable: {e}"));
        }
        self
    }

    /// The registry client, or why there is none.
    pub(crate) fn puller(&self) -> Result<&Arc<Puller>, String> {
        self.puller.as_ref().map_err(Clone::clone)
    }

    /// Pulls `run`'s image if its policy says so.
    fn pull_for_run(
        &self,
        store: &Store,
        run: &mkhost_shared::container::RunRequest,
    ) -> Result<(), String> {
        if run.pull == mkhost_shared::container::PullPolicy::Never {
            return Ok(());
        }
        self.puller()?.ensure_image(store, run)
    }

    /// Adds container support.
    pub fn with_containers(mut self, containers: Arc<Manager>, networks: Arc<Networks>) -> Self {
        self.containers = Some(containers);
        self.networks = Some(networks);
        self
    }

    /// Adds the named volumes.
    pub fn with_volumes(mut self, volumes: Arc<Volumes>) -> Self {
        self.volumes = Some(volumes);
        self
    }

    fn volume_request(&self, request: &Request) -> Response {
        let Some(volumes) = self.volumes.as_deref() else {
            return Response::Error("volumes are not available".into());
        };
        let users = |name: &str| {
            self.containers
                .as_ref()
                .map(|m| m.volume_users(name))
                .unwrap_or_default()
        };
        let with_users = |mut info: mkhost_shared::control::VolumeInfo| {
            info.containers = users(&info.name);
            info
        };
        let answer = match request {
            Request::Volumes => volumes
                .list()
                .map(|list| Response::Volumes(list.into_iter().map(with_users).collect())),
            Request::VolumeCreate { name, labels } => volumes
                .create(name, labels)
                .map(|v| Response::Volumes(vec![with_users(v)])),
            Request::VolumeInspect { name } => volumes
                .info(name)
                .map(|v| Response::Volumes(vec![with_users(v)])),
            Request::VolumeRm { name } => volumes
                .remove(name, || users(name))
                .map(|v| Response::Volumes(vec![v])),
            _ => return Response::Error("not a volume request".into()),
        };
        answer.unwrap_or_else(|e| Response::Error(e.to_string()))
    }

    fn network_request(&self, request: &Request) -> Response {
        let Some(networks) = self.networks.as_deref() else {
            return Response::Error("networks are not available".into());
        };
        let answer = match request {
            Request::Networks => Ok(Response::Networks(networks.list())),
            Request::NetworkCreate(spec) => networks
                .create(spec.clone())
                .map(|n| Response::Networks(vec![n])),
            Request::NetworkRm { name } => {
                networks.remove(name).map(|n| Response::Networks(vec![n]))
            }
            Request::NetworkInspect { name } => {
                networks.inspect(name).map(|n| Response::Networks(vec![n]))
            }
            _ => Err("not a network request".into()),
        };
        answer.unwrap_or_else(Response::Error)
    }

    fn containers(&self) -> Result<&Manager, Response> {
        self.containers
            .as_deref()
            .ok_or_else(|| Response::Error("containers are not available".into()))
    }

    fn container_request(&self, request: &Request) -> Response {
        let manager = match self.containers() {
            Ok(m) => m,
            Err(response) => return response,
        };
        let answer = match request {
            Request::Run(run) => match self.store() {
                Ok(store) => match self
                    .pull_for_run(&store, run)
                    .map_err(RunError::from)
                    .and_then(|()| manager.run(&store, run))
                {
                    Ok(id) => Ok(Response::Started(id)),
                    Err(RunError {
                        message,
                        exec: Some(cause),
                    }) => Ok(Response::ExecFailed {
                        error: message,
                        cause,
                    }),
                    Err(e) => Err(e.message),
                },
                Err(e) => Err(e.to_string()),
            },
            Request::Ps => Ok(Response::Ps(manager.ps())),
            Request::Logs { name } => manager.logs(name).map(Response::Logs),
            Request::Stop { name, timeout_secs } => timeout_secs
                .map(check_stop_timeout)
                .transpose()
                .and_then(|secs| {
                    let timeout = secs.map_or(STOP_TIMEOUT, Duration::from_secs);
                    manager.stop(name, timeout)
                })
                .map(|r| Response::Container(Box::new(r))),
            Request::Start { name } => manager
                .start(name)
                .map(|r| Response::Container(Box::new(r)))
                .map_err(|e| e.message),
            Request::Wait { name, timeout_ms } => manager
                .wait(name, Duration::from_millis((*timeout_ms).min(MAX_WAIT_MS)))
                .map(|r| Response::Container(Box::new(r))),
            Request::Rm { name, force } => manager
                .rm(name, *force)
                .map(|r| Response::Container(Box::new(r))),
            Request::Port { name } => manager
                .record(name)
                .map(|r| Response::Ports(r.network.map(|n| n.ports).unwrap_or_default())),
            _ => Err("not a container request".into()),
        };
        answer.unwrap_or_else(Response::Error)
    }

    /// The open store, opening it first if an earlier attempt failed.
    pub(crate) fn store(&self) -> Result<Store, StoreError> {
        // A poisoned lock only means a thread panicked holding it; the slot
        // itself is still a valid Option.
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = Store::open(&self.store_root)?;
        *slot = Some(store.clone());
        Ok(store)
    }

    /// Answers one control request.
    pub fn handle(&self, request: &Request) -> Response {
        match request {
            Request::Status => Response::Status(Status {
                version: crate::VERSION.to_string(),
                pid: std::process::id(),
                uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                containers: self
                    .containers
                    .as_ref()
                    .map_or(0, |c| u64::try_from(c.running()).unwrap_or(u64::MAX)),
                late_modules: late_modules(Path::new(mkhost_shared::paths::INIT_STATUS)),
                network: self.networks.as_ref().map(|n| Box::new(n.status())),
                volumes: self.volumes.as_ref().map(|v| Box::new(v.status())),
                state: Some(Box::new(state_report(Path::new(
                    mkhost_shared::paths::STATE_REPORT,
                )))),
                limits: self.containers.as_ref().map(|c| Box::new(c.limits())),
                boot_security: std::fs::read(mkhost_shared::paths::BOOT_SECURITY)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .map(Box::new),
            }),
            Request::Volumes
            | Request::VolumeCreate { .. }
            | Request::VolumeInspect { .. }
            | Request::VolumeRm { .. } => self.volume_request(request),
            Request::Run(_)
            | Request::Ps
            | Request::Logs { .. }
            | Request::Stop { .. }
            | Request::Start { .. }
            | Request::Wait { .. }
            | Request::Rm { .. }
            | Request::Port { .. } => self.container_request(request),
            Request::Networks
            | Request::NetworkCreate(_)
            | Request::NetworkRm { .. }
            | Request::NetworkInspect { .. } => self.network_request(request),
            Request::Images => self.with_store(|s| s.list().map(Response::Images)),
            Request::Import { path, reference } => {
                if !path.is_absolute() {
                    return Response::Error(format!(
                        "import path {} is not absolute; the daemon does not know the client's directory",
                        path.display()
                    ));
                }
                let response = self.with_store(|s| {
                    match reference {
                        Some(name) => s.import_named(path, name),
                        None => s.import(path),
                    }
                    .map(Response::Imported)
                });
                let what = match reference {
                    Some(name) => format!("{} as {name:?}", path.display()),
                    None => path.display().to_string(),
                };
                match &response {
                    Response::Error(e) => log(&format!("import of {what} failed: {e}")),
                    _ => log(&format!("imported {what}")),
                }
                response
            }
            Request::InspectImage { image } => {
                self.with_store(|s| s.inspect(image).map(|i| Response::Image(Box::new(i))))
            }
            Request::RemoveImage { image } => {
                if let (Some(manager), Ok(info)) = (
                    self.containers.as_ref(),
                    self.store().and_then(|s| s.inspect(image)),
                ) {
                    // Taking one of several names off is no removal: the
                    // image stays for its containers (as `docker rmi TAG`).
                    let wanted = mkhost_store::normalize_name(image);
                    let only_untags = info.names.len() > 1
                        && info
                            .names
                            .iter()
                            .any(|n| mkhost_store::normalize_name(n) == wanted);
                    if let Some(user) = manager.uses_image(&info.id).filter(|_| !only_untags) {
                        return Response::Error(format!(
                            "image {image:?} is used by container {user:?}: remove the container first"
                        ));
                    }
                }
                let response = self.with_store(|s| s.remove(image).map(Response::Removed));
                if !matches!(response, Response::Error(_)) {
                    log(&format!("removed image {image:?}"));
                }
                response
            }
            Request::Gc => self.with_store(|s| s.gc().map(Response::Gc)),
            Request::Pull { reference } => match self.store() {
                Ok(store) => self
                    .puller()
                    .and_then(|p| p.pull(&store, reference))
                    .map(|r| Response::Pulled(Box::new(r)))
                    .unwrap_or_else(Response::Error),
                Err(e) => Response::Error(e.to_string()),
            },
            Request::PullProgress => Response::PullProgress(
                self.puller
                    .as_ref()
                    .map(|p| p.progress())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Runs `op` on the store: its answer, or its error's message.
    fn with_store<F>(&self, op: F) -> Response
    where
        F: FnOnce(&Store) -> Result<Response, StoreError>,
    {
        self.store()
            .and_then(|store| op(&store))
            .unwrap_or_else(|e| Response::Error(e.to_string()))
    }
}

/// The modules init loaded after coldplug, from its status file (none when
/// the file is missing or unreadable: hostd runs without init in tests).
pub(super) fn late_modules(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<mkhost_shared::init_status::InitStatus>(&b).ok())
        .map(|s| s.late_modules.into_iter().map(|m| m.module).collect())
        .unwrap_or_default()
}

/// init's state disk report; without one (hostd started by hand, or an
/// unreadable file) state is in RAM, and the note says why.
pub(super) fn state_report(path: &Path) -> mkhost_shared::state_disk::StateReport {
    let ram = |note: String| mkhost_shared::state_disk::StateReport {
        note: Some(note),
        ..Default::default()
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| ram(format!("{} is not a state report: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ram("no state report from init: state is in RAM".to_string())
        }
        Err(e) => ram(format!("cannot read {}: {e}", path.display())),
    }
}
