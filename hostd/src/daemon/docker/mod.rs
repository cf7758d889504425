//! The Docker Engine API: what lets the stock docker CLI, docker-py and
//! docker-compose drive a host. This module owns the listener (a root-only
//! unix socket), hyper's HTTP/1 connections on a small tokio runtime, and
//! their limits; [`api`] maps each endpoint onto the daemon's handler.
//!
//! - [`route`]: paths, versions and queries (pure);
//! - [`create`]: `POST /containers/create` bodies into run requests (pure);
//! - [`views`]: records as Docker's JSON (pure);
//! - [`stream`]: streamed bodies and the multiplexed frame format;
//! - [`archive`]: `docker cp`: container paths, their tars and extractions;
//! - [`api`]: the endpoints.

pub mod api;
pub mod archive;
pub mod create;
pub mod error;
pub mod interactive;
pub mod resources;
pub mod route;
pub mod stats;
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

use crate::daemon::handler::Handler;
use crate::log::log;
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
    let runtime = runtime("hostd-docker").map_err(DockerApiError::Runtime)?;
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

/// A listener's runtime: two async workers, at most 64 threads for the
/// blocking work (store, manager) of its requests.
fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name(name)
        .enable_io()
        .enable_time()
        .build()
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
            serve_connection(stream, api).await;
            drop(permit);
        });
    }
}

/// Serves HTTP/1 requests (and upgrades) on one connection until it ends.
async fn serve_connection<S>(stream: S, api: Arc<Api>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
}

/// How long a TLS client may take to finish its handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The server side of the mutual TLS: the server's certificate and key,
/// and the CA a client's certificate must chain to. There is no other
/// way onto the TCP port.
pub fn tls_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let file = |name: &str| dir.join(name);
    let certs = |name: &str| -> Result<Vec<CertificateDer<'static>>, String> {
        let list = CertificateDer::pem_file_iter(file(name))
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", file(name).display()))?;
        match list.is_empty() {
            true => Err(format!("{}: no certificate in it", file(name).display())),
            false => Ok(list),
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs("ca.pem")? {
        roots
            .add(ca)
            .map_err(|e| format!("{}: {e}", file("ca.pem").display()))?;
    }
    // Key material is never logged: only the file's name and the kind
    // of problem.
    let key = PrivateKeyDer::from_pem_file(file("key.pem")).map_err(|e| {
        format!(
            "{}: not a usable private key ({e})",
            file("key.pem").display()
        )
    })?;
    // ring, not aws-lc-rs: it builds static without cmake or nasm (as the
    // registry client); rustls 0.23.48 deprecates it for lacking
    // post-quantum key exchange, which the docker CLI does not need.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| format!("{}: {e}", file("ca.pem").display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("cert.pem")?, key)
        .map_err(|e| format!("{} and key.pem: {e}", file("cert.pem").display()))?;
    Ok(Arc::new(config))
}

/// Listens on `address` for clients with a certificate of the CA in
/// `tls_dir`, if the directory holds `ca.pem`, `cert.pem` and `key.pem`;
/// answers why not otherwise (nothing listens then).
pub fn start_tls(
    address: std::net::SocketAddr,
    tls_dir: &Path,
    handler: Arc<Handler>,
) -> Result<(), String> {
    let missing: Vec<&str> = ["ca.pem", "cert.pem", "key.pem"]
        .into_iter()
        .filter(|f| !tls_dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "no TCP listener: {} lacks {} (make them with mkhost certs; docs/docker-certs.md)",
            tls_dir.display(),
            missing.join(", ")
        ));
    }
    let config = tls_config(tls_dir).map_err(|e| format!("no TCP listener: {e}"))?;
    let listener = std::net::TcpListener::bind(address)
        .map_err(|e| format!("no TCP listener: cannot listen on {address}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("no TCP listener: {e}"))?;
    let runtime = runtime("hostd-docker-tls").map_err(|e| format!("no TCP listener: {e}"))?;
    let api = Arc::new(Api::new(handler));
    std::thread::Builder::new()
        .name("hostd-docker-tls".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve_tls(listener, config, api).await,
                    Err(e) => log(&format!("docker api: no TCP listener: {e}")),
                }
            })
        })
        .map_err(|e| format!("no TCP listener: {e}"))?;
    log(&format!(
        "docker api: listening on {address} (mutual TLS, CA {})",
        tls_dir.join("ca.pem").display()
    ));
    Ok(())
}

/// Accepts TLS clients for ever: a failed handshake (no certificate,
/// another CA's, an expired one) is logged and closed.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log(&format!("docker api: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (api, acceptor) = (Arc::clone(&api), acceptor.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, api).await,
                Ok(Err(e)) => log(&format!("docker api: refused {peer}: {e}")),
                Err(_) => log(&format!(
                    "docker api: refused {peer}: no TLS handshake within {} s",
                    HANDSHAKE_DEADLINE.as_secs()
                )),
            }
            drop(permit);
        });
    }
}
