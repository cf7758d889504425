//! The hostd daemon: binds the control socket, answers requests, and exits
//! cleanly (removing the socket) on SIGTERM or SIGINT.
//!
//! Signals are handled synchronously: the main thread blocks SIGTERM/SIGINT
//! before any other thread exists (so every thread inherits the mask), and one
//! dedicated thread `sigwait`s for them and triggers the server's [`Shutdown`].
//! No code runs in signal-handler context.
//!
//! Image requests go to the image store ([`mkhost_store::Store`]) at
//! [`DaemonOptions::store`], opened (and created) at start. A store that cannot
//! be opened does not stop the daemon: it logs why, keeps answering `status`,
//! answers image requests with the error and tries to open the store again on
//! the next one. Store errors are answers, never exits. An import runs in its
//! connection's thread; a daemon stopped in the middle of one leaves the store
//! as it was (imports are all-or-nothing and staging is cleared at open).
//!
//! Containers ([`crate::daemon::containers`]) are created by a zygote that
//! [`run`] forks first thing, while the process still has one thread — or
//! finds already running, left by the daemon before this one, and takes
//! over (asking it to `exec` this binary when it runs another). Their
//! records and writable layers live under [`DaemonOptions::containers`]
//! (persistent), what a reboot wipes under [`DaemonOptions::state`]. Without a zygote (unit tests)
//! container requests are answered with an error. Once serving, a thread
//! imports and starts the boot-time containers of
//! [`DaemonOptions::boot_manifest`].

pub mod containers;
pub mod docker;
pub mod events;
pub mod handler;
pub mod network;
pub mod pull;
pub mod server;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::log::log;
use crate::os::SignalSet;
use containers::Manager;
use mkhost_shared::paths;
use network::{Definition, NetworkOptions, Networks};
use pull::RegistryOptions;
use server::{ControlError, ControlSocket, Shutdown};
use volumes::Volumes;

pub use handler::Handler;
#[cfg(test)]
use handler::{late_modules, state_report};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The termination signals could not be blocked.
    #[error("cannot block termination signals: {0}")]
    Signals(#[source] std::io::Error),
    /// The signal-waiting thread could not be started.
    #[error("cannot start the signal thread: {0}")]
    SignalThread(#[source] std::io::Error),
    /// The control socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The backend (on Linux: the zygote) could not be started.
    #[error(transparent)]
    Backend(#[from] crate::backend::host::StartFailed),
    /// The zygote died; init restarts the daemon, which starts a new one.
    #[error("the zygote died; exiting so that a new daemon takes the containers over")]
    ZygoteLost,
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}", path = path.display())]
    State {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Registry credentials, where the docker CLI keeps them for root.
pub const DOCKER_AUTH_FILE: &str = "/root/.docker/config.json";

/// How to run the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonOptions {
    /// Where to put the control socket.
    pub socket: PathBuf,
    /// The image store's root directory.
    pub store: PathBuf,
    /// The run-time state directory: what a reboot wipes (the OCI
    /// runtime's state, container bundles, network namespace files, the
    /// zygote's socket).
    pub state: PathBuf,
    /// What must survive a reboot: each container's record, writable layer
    /// and log, and the networks created over the socket
    /// ([`paths::CONTAINERS`]).
    pub containers: PathBuf,
    /// The boot-time container manifest, if any.
    pub boot_manifest: Option<PathBuf>,
    /// The container networks init defined ([`paths::NETWORKS`]), if any.
    pub networks: Option<PathBuf>,
    /// How to reach registries.
    pub registries: RegistryOptions,
    /// Where named volumes live ([`paths::VOLUMES`]).
    pub volumes: PathBuf,
    /// The host directories under which bind mounts are allowed
    /// ([`paths::BIND_ROOT`]).
    pub bind_roots: Vec<PathBuf>,
    /// The Docker Engine API's socket ([`paths::DOCKER_SOCKET`]); `None`:
    /// no Docker API.
    pub docker_socket: Option<PathBuf>,
    /// The mutual-TLS server files of the Docker API's TCP port
    /// ([`paths::DOCKER_TLS`]); `None`, or a directory without them: no
    /// TCP listener.
    pub docker_tls: Option<PathBuf>,
    /// Where the TCP port listens (all addresses, [`paths::DOCKER_TLS_PORT`]).
    pub docker_tls_listen: std::net::SocketAddr,
    /// Which containers get a memory cgroup of their own.
    pub memory_cgroups: mkhost_shared::boot_config::MemoryCgroups,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(paths::CONTROL_SOCKET),
            store: PathBuf::from(paths::STORE),
            state: PathBuf::from(paths::STATE),
            containers: PathBuf::from(paths::CONTAINERS),
            boot_manifest: Some(PathBuf::from(mkhost_shared::paths::BOOT_MANIFEST)),
            networks: Some(PathBuf::from(paths::NETWORKS)),
            registries: RegistryOptions {
                settings_file: Some(PathBuf::from(paths::REGISTRIES)),
                auth_file: Some(PathBuf::from(DOCKER_AUTH_FILE)),
                ..RegistryOptions::default()
            },
            volumes: PathBuf::from(paths::VOLUMES),
            bind_roots: vec![PathBuf::from(paths::BIND_ROOT)],
            docker_socket: Some(PathBuf::from(paths::DOCKER_SOCKET)),
            docker_tls: Some(PathBuf::from(paths::DOCKER_TLS)),
            docker_tls_listen: std::net::SocketAddr::from(([0, 0, 0, 0], paths::DOCKER_TLS_PORT)),
            memory_cgroups: Default::default(),
        }
    }
}

/// The networks init defined (none when the file is missing: hostd runs
/// without init in tests; a bad file is logged and ignored).
fn load_definitions(path: Option<&Path>) -> Vec<Definition> {
    let Some(path) = path else {
        return Vec::new();
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log(&format!("networks: cannot read {}: {e}", path.display()));
            return Vec::new();
        }
    };
    match serde_json::from_slice::<mkhost_shared::network::NetworkDefinitions>(&bytes) {
        Ok(defs) => defs
            .networks
            .into_iter()
            .map(|d| Definition {
                spec: d.spec,
                origin: d.origin,
            })
            .collect(),
        Err(e) => {
            log(&format!("networks: ignoring {}: {e}", path.display()));
            Vec::new()
        }
    }
}

/// Imports and starts the boot-time containers in a thread of their own, so
/// the daemon answers `status` meanwhile.
fn start_boot_containers(path: &Path, containers: Arc<Manager>, handler: &Handler, state: &Path) {
    let manifest = match crate::daemon::containers::boot::load(path) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            log(&format!("boot-time containers not started: {e}"));
            return;
        }
    };
    let store = match handler.store() {
        Ok(store) => store,
        Err(e) => {
            log(&format!("boot-time containers not started: {e}"));
            return;
        }
    };
    let state = state.to_path_buf();
    let puller = handler.puller().ok().cloned();
    let spawned = std::thread::Builder::new()
        .name("hostd-boot".into())
        .spawn(move || {
            let report = crate::daemon::containers::boot::start(
                &manifest,
                &containers,
                &store,
                &state,
                puller.as_deref(),
                &crate::daemon::containers::boot::PULL_RETRIES,
            );
            for e in &report.errors {
                log(e);
            }
            log(&format!(
                "boot-time containers: {} archives imported, started [{}], already there [{}], {} errors",
                report.imported,
                report.started.join(", "),
                report.existing.join(", "),
                report.errors.len()
            ));
        });
    if let Err(e) = spawned {
        log(&format!("cannot start the boot-container thread: {e}"));
    }
}

/// Runs the daemon until SIGTERM or SIGINT; returns after removing the socket.
/// Containers keep running (in the zygote) for the next daemon.
///
/// # Safety
///
/// It may fork the zygote, which then runs on in the child: the process must
/// not have started any thread yet (hostd's `main` calls it first thing). It
/// starts its own threads only after the fork.
pub unsafe fn run(options: &DaemonOptions) -> Result<(), DaemonError> {
    let started = Instant::now();
    let signals = SignalSet::new(&[libc::SIGTERM, libc::SIGINT]).map_err(DaemonError::Signals)?;
    signals.block().map_err(DaemonError::Signals)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&options.state)
        .map_err(|source| DaemonError::State {
            path: options.state.clone(),
            source,
        })?;
    // Another daemon on the socket owns the zygote too: stop before touching it.
    server::refuse_if_served(&options.socket)?;
    // SAFETY: no thread has been started yet: the caller promises `run` runs
    // before any other thread exists (its safety contract), and this function
    // starts the signal, monitor, boot-container and connection threads only
    // below.
    let backend = unsafe { crate::backend::host::start(&options.state, options.memory_cgroups) }?;
    let shutdown = Shutdown::new()?;
    let zygote_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_lost = {
        let (shutdown, lost) = (shutdown.clone(), Arc::clone(&zygote_lost));
        Box::new(move || {
            lost.store(true, std::sync::atomic::Ordering::SeqCst);
            shutdown.trigger();
        })
    };
    let networks = Arc::new(Networks::start(
        NetworkOptions {
            state: options.state.clone(),
            saved: options.containers.join("networks"),
            definitions: load_definitions(options.networks.as_deref()),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            dhcp_timeout: network::DHCP_TIMEOUT,
        },
        backend.networking(),
    ));
    let volumes = Arc::new(Volumes::new(&options.volumes, &options.bind_roots));
    let containers = Manager::new(
        &options.containers,
        &options.state,
        backend,
        Arc::clone(&networks),
        Arc::clone(&volumes),
        on_lost,
    )
    .map_err(|source| DaemonError::State {
        path: options.containers.clone(),
        source,
    })?;
    let containers = Arc::new(containers);

    let socket = ControlSocket::bind(&options.socket)?;
    let handler = Handler::new(started, &options.store)
        .with_containers(Arc::clone(&containers), networks)
        .with_volumes(volumes)
        .with_registries(&options.registries);
    if let Some(path) = options.boot_manifest.clone() {
        start_boot_containers(&path, containers, &handler, &options.state);
    }
    let handler = Arc::new(handler);
    // Uploads a killed daemon was staging (`docker load`, `docker cp`).
    for path in docker::api::remove_stale_uploads(&options.store) {
        log(&format!(
            "docker api: removed the unfinished upload {}",
            path.display()
        ));
    }
    // The Docker API is a second door to the same handler; the control
    // socket stays the first: a Docker API that cannot start is logged.
    let _docker_api = match &options.docker_socket {
        Some(path) => docker::start(path, Arc::clone(&handler))
            .map_err(|e| log(&format!("docker api: {e}")))
            .ok(),
        None => None,
    };
    if let Some(dir) = &options.docker_tls {
        if let Err(e) = docker::start_tls(options.docker_tls_listen, dir, Arc::clone(&handler)) {
            log(&format!("docker api: {e}"));
        }
    }
    let stop = shutdown.clone();
    std::thread::Builder::new()
        .name("hostd-signals".into())
        .spawn(move || match signals.wait() {
            Ok(signal) => {
                let name = if signal == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                log(&format!("received {name}, shutting down"));
                stop.trigger();
            }
            Err(e) => log(&format!("cannot wait for signals: {e}")),
        })
        .map_err(DaemonError::SignalThread)?;

    log(&format!(
        "listening on {} (pid {}, version {})",
        socket.path().display(),
        std::process::id(),
        crate::VERSION
    ));
    let served = socket.serve(move |request| handler.handle(request), &shutdown);
    let removed = socket.remove();
    served?;
    removed?;
    if zygote_lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(DaemonError::ZygoteLost);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mkhost_shared::control::{Request, Response};
    use mkhost_store::Store;

    #[test]
    fn late_modules_come_from_inits_status_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.json");
        assert!(late_modules(&path).is_empty());
        std::fs::write(&path, "not json").unwrap();
        assert!(late_modules(&path).is_empty());
        std::fs::write(
            &path,
            r#"{"late_modules":[{"module":"nvme","device":"pci:v1B36d10","at_ms":9000}],"events":4}"#,
        )
        .unwrap();
        assert_eq!(late_modules(&path), ["nvme"]);
    }

    #[test]
    fn state_comes_from_inits_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let r = state_report(&path);
        assert!(!r.persistent);
        assert!(r.note.unwrap().contains("no state report"));
        std::fs::write(
            &path,
            r#"{"persistent":true,"device":"/dev/vdb","filesystem":"ext4","size":5}"#,
        )
        .unwrap();
        let r = state_report(&path);
        assert!(r.persistent);
        assert_eq!(r.device.as_deref(), Some("/dev/vdb"));
        std::fs::write(&path, "nope").unwrap();
        assert!(state_report(&path)
            .note
            .unwrap()
            .contains("not a state report"));
    }

    #[test]
    fn status_reports_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let handler = Handler::new(Instant::now(), &dir.path().join("store"));
        match handler.handle(&Request::Status) {
            Response::Status(s) => {
                assert_eq!(s.pid, std::process::id());
                assert_eq!(s.version, crate::VERSION);
                assert_eq!(s.containers, 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn volume_requests_go_to_the_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let handler = Handler::new(Instant::now(), &dir.path().join("store"));
        assert_eq!(
            handler.handle(&Request::Volumes),
            Response::Error("volumes are not available".into())
        );
        let root = dir.path().join("volumes");
        let handler = handler.with_volumes(Arc::new(Volumes::new(&root, &[])));
        let create = Request::VolumeCreate {
            name: "data".into(),
            labels: Default::default(),
        };
        let Response::Volumes(made) = handler.handle(&create) else {
            panic!("no volume made");
        };
        assert_eq!(made[0].name, "data");
        assert_eq!(
            handler.handle(&Request::Volumes),
            Response::Volumes(made.clone())
        );
        let inspect = Request::VolumeInspect {
            name: "data".into(),
        };
        assert_eq!(handler.handle(&inspect), Response::Volumes(made.clone()));
        let Response::Status(status) = handler.handle(&Request::Status) else {
            panic!("no status");
        };
        let volumes = status.volumes.unwrap();
        assert_eq!(
            (volumes.count, volumes.root),
            (1, root.display().to_string())
        );
        assert_eq!(
            handler.handle(&Request::VolumeRm {
                name: "data".into()
            }),
            Response::Volumes(made)
        );
        assert!(matches!(
            handler.handle(&inspect),
            Response::Error(m) if m == "no volume named \"data\""
        ));
        let bad = handler.handle(&Request::VolumeCreate {
            name: "../x".into(),
            labels: Default::default(),
        });
        assert!(matches!(bad, Response::Error(m) if m.contains("\"../x\"")));
    }

    #[test]
    fn image_requests_go_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let handler = Handler::new(Instant::now(), &root);
        assert!(
            root.join("blobs/sha256").is_dir(),
            "store not created at start"
        );
        assert_eq!(handler.handle(&Request::Images), Response::Images(vec![]));
        assert!(matches!(handler.handle(&Request::Gc), Response::Gc(_)));
        assert_eq!(
            handler.handle(&Request::Ps),
            Response::Error("containers are not available".into())
        );
        let missing = handler.handle(&Request::InspectImage {
            image: "nope".into(),
        });
        let Response::Error(message) = missing else {
            panic!("{missing:?}");
        };
        assert!(message.contains("no image named"), "{message}");
        let relative = handler.handle(&Request::Import {
            path: "img.tar".into(),
            reference: None,
        });
        assert!(
            matches!(&relative, Response::Error(m) if m.contains("not absolute")),
            "{relative:?}"
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello").unwrap();
        let answer = handler.handle(&Request::Import {
            path: junk.clone(),
            reference: None,
        });
        let expected = Store::open(dir.path().join("other"))
            .unwrap()
            .import(&junk)
            .unwrap_err()
            .to_string();
        assert_eq!(answer, Response::Error(expected));
    }

    #[test]
    fn unusable_store_is_an_answer_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let root = blocker.join("store");
        let handler = Handler::new(Instant::now(), &root);
        assert!(matches!(
            handler.handle(&Request::Images),
            Response::Error(m) if m.contains("cannot set up image store")
        ));
        assert!(matches!(
            handler.handle(&Request::Status),
            Response::Status(_)
        ));
        std::fs::remove_file(&blocker).unwrap();
        std::fs::create_dir(&blocker).unwrap();
        assert_eq!(handler.handle(&Request::Images), Response::Images(vec![]));
    }
}
