//! The Docker Engine API: what lets the stock docker CLI, docker-py and
//! docker-compose drive a host. This module owns the listener (a root-only
//! unix socket), hyper's HTTP/1 connections on a small tokio runtime, and
//! their limits; [`api`] maps each endpoint onto the daemon's handler.
//!
//! - [`route`]: paths, versions and queries (pure);
//! - [`create`]: `POST /containers/create` bodies into run requests (pure);
//! - [`views`]: records as Docker's JSON (pure);
//! - [`stream`]: streamed bodies and the multiplexed frame format;
//! - [`api`]: the endpoints.

pub mod api;
pub mod create;
pub mod error;
pub mod resources;
pub mod route;
pub mod stream;
pub mod views;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::daemon::log::log;
use crate::daemon::Handler;
use api::Api;

/// How long a client may take to send a request's head.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(30);
/// Most connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 1024;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum DockerApiError {
    /// Another process serves the socket.
    #[error("{path} is served by another process; stop it, or give hostd another --docker-socket", path = path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The socket could not be made.
    #[error("cannot listen on {path}: {source}", path = path.display())]
    Listen {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime's threads could not start.
    #[error("cannot start the Docker API's threads: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The running API; its socket goes when this is dropped.
pub struct DockerApi {
    path: PathBuf,
}

impl Drop for DockerApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (mode 0600; a stale socket is replaced, a live one is
/// not) and serves the API over `handler` on threads of its own.
pub fn start(path: &Path, handler: Arc<Handler>) -> Result<DockerApi, DockerApiError> {
    let listen_error = |source| DockerApiError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if StdUnixStream::connect(path).is_ok() {
        return Err(DockerApiError::InUse {
            path: path.to_path_buf(),
        });
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(listen_error(e)),
        _ => {}
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(listen_error)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(listen_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("hostd-docker")
        .enable_io()
        .enable_time()
        .build()
        .map_err(DockerApiError::Runtime)?;
    let api = Arc::new(Api::new(handler));
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("hostd-docker-accept".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return log(&format!("docker api: cannot listen on {shown}: {e}")),
                };
                serve(listener, api).await;
            })
        })
        .map_err(DockerApiError::Runtime)?;
    log(&format!("docker api: listening on {}", path.display()));
    Ok(DockerApi {
        path: path.to_path_buf(),
    })
}

/// Accepts connections for ever, at most [`MAX_CONNECTIONS`] at once.
async fn serve(listener: tokio::net::UnixListener, api: Arc<Api>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log(&format!("docker api: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let api = Arc::clone(&api);
                async move { Ok::<_, std::convert::Infallible>(api.handle(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            // A client that goes away mid-request is its own business.
            let _ = connection.await;
            drop(permit);
        });
    }
}
