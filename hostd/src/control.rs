//! hostd's control protocol: JSON lines over a root-only unix socket.
//!
//! A client connects to [`SOCKET_PATH`], writes one JSON object per line and reads
//! one JSON object per line back:
//!
//! ```text
//! -> {"op":"status"}
//! <- {"ok":true,"version":"0.1.0","pid":57,"uptime_ms":1200,"containers":0}
//! -> {"op":"images"}
//! <- {"ok":true,"images":[{"id":"sha256:…","names":["hello:latest"],"created":null,"layers":1,"size":160,"unpacked_size":6}]}
//! -> {"op":"import","path":"/root/hello.tar"}
//! <- {"ok":true,"imported":{"images":[…],"blobs_added":3,"layers_added":1,"skipped":[],"xattrs_dropped":0}}
//! -> {"op":"nope"}
//! <- {"ok":false,"error":"invalid request: unknown variant `nope`, expected `status` at line 1 column 12"}
//! ```
//!
//! The image requests (`images`, `import`, `inspect_image`, `remove_image`, `gc`)
//! answer with the image store's own serde output ([`crate::store::ImageSummary`]
//! list, [`crate::store::ImportReport`], [`crate::store::ImageInfo`],
//! [`crate::store::Removed`], [`crate::store::GcReport`]) under one key each;
//! clients get it as JSON values. Store errors are `{"ok":false,"error":"..."}`
//! with the store's message.
//!
//! This module owns both ends: [`ControlSocket`] (bind, [`serve`], cleanup) for the
//! daemon and [`request`] for clients (`hostd status`, `init`'s readiness probe).
//! The server gives each connection its own thread with read and write timeouts,
//! caps line length and connection count, and answers anything malformed with an
//! error object instead of failing. A [`Shutdown`] handle stops the accept loop
//! from another thread (e.g. the one that received SIGTERM).

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sys;

/// Where hostd listens on a booted host.
pub const SOCKET_PATH: &str = "/run/hostd/hostd.sock";

/// Longest request line the server accepts, in bytes (newline excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// Longest response line a client accepts, in bytes (newline excluded): image
/// lists and import reports grow with the store.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// How long the server waits for a client to send a line or take an answer.
/// Only reads and writes of lines are bounded: a request that takes long
/// (an import) runs in its connection's thread for as long as it needs.
pub const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Client timeout for quick requests (status).
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Client timeout for requests that read the store (images, inspect_image).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Client timeout for requests that write the store (import, remove_image, gc):
/// they unpack or delete whole images and may wait for another writer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Connections served at once; more are answered with an error and closed.
const MAX_CONNECTIONS: usize = 64;

/// Errors of the control socket, server and client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket's directory could not be created.
    #[error("cannot create socket directory {path}: {source}", path = path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The socket path could not be inspected.
    #[error("cannot inspect {path}: {source}", path = path.display())]
    Stat {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Something other than a socket is in the way.
    #[error("{path} exists and is not a socket", path = path.display())]
    NotSocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another daemon answers on the socket.
    #[error("{path} is in use by a running daemon", path = path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A stale socket could not be removed.
    #[error("cannot remove stale socket {path}: {source}", path = path.display())]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// bind(2) failed.
    #[error("cannot bind {path}: {source}", path = path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The socket's mode could not be set.
    #[error("cannot chmod {path}: {source}", path = path.display())]
    Chmod {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Removing the socket at shutdown failed.
    #[error("cannot remove socket {path}: {source}", path = path.display())]
    Remove {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The shutdown pipe could not be created.
    #[error("cannot create shutdown pipe: {0}")]
    Pipe(#[source] io::Error),
    /// Waiting for connections failed.
    #[error("cannot wait for connections: {0}")]
    Poll(#[source] io::Error),
    /// accept(2) failed in a way that will not go away.
    #[error("cannot accept connections: {0}")]
    Accept(#[source] io::Error),
    /// The request could not be encoded (a path that is not UTF-8).
    #[error("cannot encode request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The client could not connect.
    #[error("cannot connect to {path}: {source}", path = path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The client could not send its request or read the answer.
    #[error("cannot talk to {path}: {source}", path = path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No answer within the timeout.
    #[error("no answer from {path} within {} ms", timeout.as_millis(), path = path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The daemon closed the connection without a complete answer.
    #[error("{path} closed the connection without answering", path = path.display())]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// The answer is not a valid response.
    #[error("invalid response from {path}: {source}", path = path.display())]
    BadResponse {
        /// The socket path.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// A request, tagged by `op`: `{"op":"status"}`. Unknown ops are errors; extra
/// fields next to `op` are ignored, so newer clients can add optional ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Report the daemon's version, pid and uptime.
    Status,
    /// List the images in the store.
    Images,
    /// Import every image of an OCI layout or `docker save` archive.
    Import {
        /// Absolute path of the file or directory, as the daemon sees it.
        path: PathBuf,
    },
    /// Show one image: config and layers.
    InspectImage {
        /// A name, id or unique id prefix.
        image: String,
    },
    /// Untag a name, or delete an image given by id.
    RemoveImage {
        /// A name, id or unique id prefix.
        image: String,
    },
    /// Delete blobs and layers no image uses.
    Gc,
    /// Create and start a container from a store image; answers its id.
    Run(crate::containers::RunRequest),
    /// List containers.
    Ps,
    /// A container's log (timestamped lines).
    Logs {
        /// Name, id or unique id prefix.
        name: String,
    },
    /// SIGTERM, then SIGKILL after `timeout_secs` (default 10).
    Stop {
        /// Name, id or unique id prefix.
        name: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
    /// Start an exited container again (same root, log and id).
    Start {
        /// Name, id or unique id prefix.
        name: String,
    },
    /// Remove a container; a running one only with `force`.
    Rm {
        /// Name, id or unique id prefix.
        name: String,
        /// Kill it first if running.
        #[serde(default)]
        force: bool,
    },
}

impl Request {
    /// How long a client should wait for the answer to this request.
    pub fn client_timeout(&self) -> Duration {
        match self {
            Request::Status => SHORT_TIMEOUT,
            Request::Images | Request::InspectImage { .. } => READ_TIMEOUT,
            Request::Import { .. } | Request::RemoveImage { .. } | Request::Gc => WRITE_TIMEOUT,
            Request::Ps | Request::Logs { .. } => READ_TIMEOUT,
            Request::Run(_) | Request::Rm { .. } | Request::Start { .. } => WRITE_TIMEOUT,
            Request::Stop { timeout_secs, .. } => {
                READ_TIMEOUT + Duration::from_secs(timeout_secs.unwrap_or(10))
            }
        }
    }
}

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// hostd's version.
    pub version: String,
    /// hostd's process id (in its own pid namespace).
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Containers the daemon runs.
    pub containers: u64,
}

/// A response: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
///
/// The image answers carry the store's serde output as JSON values, under
/// the key named on each variant; a client knows which one it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireResponse", into = "WireResponse")]
pub enum Response {
    /// A successful status answer.
    Status(Status),
    /// `images`: an array of [`crate::store::ImageSummary`].
    Images(Value),
    /// `imported`: an [`crate::store::ImportReport`].
    Imported(Value),
    /// `image`: an [`crate::store::ImageInfo`].
    Image(Value),
    /// `removed`: a [`crate::store::Removed`].
    Removed(Value),
    /// `gc`: a [`crate::store::GcReport`].
    Gc(Value),
    /// `id`: the id of a container `run` started.
    Started(String),
    /// `ps`: an array of [`crate::containers::Record`].
    Ps(Value),
    /// `logs`: a container's log text.
    Logs(String),
    /// `container`: the [`crate::containers::Record`] `stop` or `rm` acted on.
    Container(Value),
    /// The request failed; the message says why.
    Error(String),
}

/// The flat JSON shape of [`Response`] (`ok` decides which fields matter).
#[derive(Serialize, Deserialize)]
struct WireResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uptime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    containers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    images: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gc: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ps: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl WireResponse {
    fn ok() -> Self {
        WireResponse {
            ok: true,
            version: None,
            pid: None,
            uptime_ms: None,
            containers: None,
            images: None,
            imported: None,
            image: None,
            removed: None,
            gc: None,
            id: None,
            ps: None,
            logs: None,
            container: None,
            error: None,
        }
    }
}

impl From<Response> for WireResponse {
    fn from(response: Response) -> Self {
        let ok = WireResponse::ok();
        match response {
            Response::Status(s) => WireResponse {
                version: Some(s.version),
                pid: Some(s.pid),
                uptime_ms: Some(s.uptime_ms),
                containers: Some(s.containers),
                ..ok
            },
            Response::Images(v) => WireResponse {
                images: Some(v),
                ..ok
            },
            Response::Imported(v) => WireResponse {
                imported: Some(v),
                ..ok
            },
            Response::Image(v) => WireResponse {
                image: Some(v),
                ..ok
            },
            Response::Removed(v) => WireResponse {
                removed: Some(v),
                ..ok
            },
            Response::Gc(v) => WireResponse { gc: Some(v), ..ok },
            Response::Started(id) => WireResponse { id: Some(id), ..ok },
            Response::Ps(v) => WireResponse { ps: Some(v), ..ok },
            Response::Logs(text) => WireResponse {
                logs: Some(text),
                ..ok
            },
            Response::Container(v) => WireResponse {
                container: Some(v),
                ..ok
            },
            Response::Error(error) => WireResponse {
                ok: false,
                error: Some(error),
                ..ok
            },
        }
    }
}

impl TryFrom<WireResponse> for Response {
    type Error = String;

    fn try_from(wire: WireResponse) -> Result<Self, String> {
        if !wire.ok {
            return Ok(Response::Error(
                wire.error
                    .unwrap_or_else(|| "unspecified error".to_string()),
            ));
        }
        fn need<T>(value: Option<T>, name: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("missing field `{name}`"))
        }
        fn object(value: Value, name: &str) -> Result<Value, String> {
            if value.is_object() {
                Ok(value)
            } else {
                Err(format!("field `{name}` is not an object"))
            }
        }
        if let Some(images) = wire.images {
            if !images.is_array() {
                return Err("field `images` is not an array".to_string());
            }
            return Ok(Response::Images(images));
        }
        if let Some(v) = wire.imported {
            return object(v, "imported").map(Response::Imported);
        }
        if let Some(v) = wire.image {
            return object(v, "image").map(Response::Image);
        }
        if let Some(v) = wire.removed {
            return object(v, "removed").map(Response::Removed);
        }
        if let Some(v) = wire.gc {
            return object(v, "gc").map(Response::Gc);
        }
        if let Some(id) = wire.id {
            return Ok(Response::Started(id));
        }
        if let Some(ps) = wire.ps {
            if !ps.is_array() {
                return Err("field `ps` is not an array".to_string());
            }
            return Ok(Response::Ps(ps));
        }
        if let Some(text) = wire.logs {
            return Ok(Response::Logs(text));
        }
        if let Some(v) = wire.container {
            return object(v, "container").map(Response::Container);
        }
        Ok(Response::Status(Status {
            version: need(wire.version, "version")?,
            pid: need(wire.pid, "pid")?,
            uptime_ms: need(wire.uptime_ms, "uptime_ms")?,
            containers: need(wire.containers, "containers")?,
        }))
    }
}

impl Response {
    /// An answer carrying `value` (one of the store's serde types) in the
    /// variant `wrap`; an error response if it cannot be encoded.
    pub fn with<T: Serialize>(wrap: fn(Value) -> Response, value: &T) -> Response {
        match serde_json::to_value(value) {
            Ok(v) => wrap(v),
            Err(e) => Response::Error(format!("cannot encode response: {e}")),
        }
    }

    /// The response as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        // Serialising strings, integers and JSON values cannot fail.
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode response"}"#.to_string());
        line.push('\n');
        line
    }
}

/// Parses one request line; the error is the message the client gets back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("empty request".to_string());
    }
    serde_json::from_str(text).map_err(|e| format!("invalid request: {e}"))
}

/// Stops [`serve`] from another thread. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

struct ShutdownInner {
    triggered: AtomicBool,
    wake_read: File,
    wake_write: File,
}

impl Shutdown {
    /// A new, untriggered handle.
    pub fn new() -> Result<Self, ControlError> {
        let (wake_read, wake_write) = sys::pipe().map_err(ControlError::Pipe)?;
        Ok(Self {
            inner: Arc::new(ShutdownInner {
                triggered: AtomicBool::new(false),
                wake_read,
                wake_write,
            }),
        })
    }

    /// Asks [`serve`] to return; it does so promptly even while idle.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        // The pipe is non-blocking: if it is full, a wake-up is already pending.
        let _ = (&self.inner.wake_write).write(&[1]);
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }
}

/// The daemon's listening socket, bound at a path that it removes again.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    identity: (u64, u64),
}

/// Fails with [`ControlError::InUse`] when a daemon answers on `path`.
pub fn refuse_if_served(path: &Path) -> Result<(), ControlError> {
    if UnixStream::connect(path).is_ok() {
        return Err(ControlError::InUse {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

impl ControlSocket {
    /// Binds a root-only socket at `path`.
    ///
    /// A missing parent directory is created with mode 0700 (existing directories
    /// are left alone); a stale socket nobody answers on is removed first; the
    /// socket itself gets mode 0600.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| ControlError::CreateDir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
        }
        match fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.file_type().is_socket() {
                    return Err(ControlError::NotSocket {
                        path: path.to_path_buf(),
                    });
                }
                refuse_if_served(path)?;
                fs::remove_file(path).map_err(|source| ControlError::RemoveStale {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ControlError::Stat {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(|source| {
            ControlError::Chmod {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let meta = fs::symlink_metadata(path).map_err(|source| ControlError::Stat {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The path the socket is bound at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Serves requests until `shutdown` is triggered (see [`serve`]).
    pub fn serve<H>(&self, handler: H, shutdown: &Shutdown) -> Result<(), ControlError>
    where
        H: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        serve(&self.listener, handler, shutdown)
    }

    /// Closes the socket and removes its file, unless the path now names a
    /// different file (someone else's socket).
    pub fn remove(self) -> Result<(), ControlError> {
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        drop(self.listener);
        if ours {
            fs::remove_file(&self.path).map_err(|source| ControlError::Remove {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Accepts connections on `listener` and answers each request line with
/// `handler`, one thread per connection, until `shutdown` is triggered.
///
/// Returns `Ok(())` after a shutdown and an error only if waiting for or
/// accepting connections fails for good.
pub fn serve<H>(
    listener: &UnixListener,
    handler: H,
    shutdown: &Shutdown,
) -> Result<(), ControlError>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    listener
        .set_nonblocking(true)
        .map_err(ControlError::Accept)?;
    let handler = Arc::new(handler);
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let fds = [listener.as_fd(), shutdown.inner.wake_read.as_fd()];
        let ready = sys::poll_readable(&fds, None).map_err(ControlError::Poll)?;
        if ready[1] || shutdown.is_triggered() {
            return Ok(());
        }
        if !ready[0] {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => start_connection(stream, &handler, &active),
            Err(e) => match e.raw_os_error() {
                Some(libc::EBADF) | Some(libc::EINVAL) | Some(libc::ENOTSOCK) => {
                    return Err(ControlError::Accept(e));
                }
                // EAGAIN, EINTR, ECONNABORTED: try again. EMFILE, ENOBUFS, ...:
                // back off briefly instead of spinning on a readable listener.
                Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => {}
                _ => std::thread::sleep(Duration::from_millis(50)),
            },
        }
    }
}

fn start_connection<H>(stream: UnixStream, handler: &Arc<H>, active: &Arc<AtomicUsize>)
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::SeqCst);
        reject(&stream, "too many connections");
        return;
    }
    let handler = Arc::clone(handler);
    let counter = Arc::clone(active);
    let spawned = std::thread::Builder::new()
        .name("hostd-conn".into())
        .spawn(move || {
            handle_connection(&stream, &*handler);
            counter.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        // The stream moved into the failed closure and is closed with it.
        active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reject(stream: &UnixStream, message: &str) {
    let _ = stream.set_write_timeout(Some(SERVER_IO_TIMEOUT));
    let _ = (&*stream).write_all(Response::Error(message.to_string()).to_line().as_bytes());
}

/// Serves one connection: request lines in, response lines out, until the client
/// closes, stalls past [`SERVER_IO_TIMEOUT`], or sends an over-long line.
fn handle_connection<H>(stream: &UnixStream, handler: &H)
where
    H: Fn(&Request) -> Response,
{
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(SERVER_IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(SERVER_IO_TIMEOUT)).is_err()
    {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = line.ends_with(b"\n");
        if !complete && line.len() > MAX_LINE {
            let msg = format!("request longer than {MAX_LINE} bytes");
            let _ = writer.write_all(Response::Error(msg).to_line().as_bytes());
            return;
        }
        let response = match parse_request(&line) {
            Ok(request) => handler(&request),
            Err(message) => Response::Error(message),
        };
        if writer.write_all(response.to_line().as_bytes()).is_err() || !complete {
            return;
        }
    }
}

/// Sends `request` to the daemon at `path` and waits up to `timeout` for the
/// answer (connect, send and receive each get the timeout).
pub fn request(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let io_err = |source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ControlError::Timeout {
                path: path.to_path_buf(),
                timeout,
            }
        } else {
            ControlError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    // Only a path that is not UTF-8 cannot be encoded.
    let mut line = serde_json::to_vec(request).map_err(ControlError::Encode)?;
    line.push(b'\n');
    let stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    (&stream).write_all(&line).map_err(io_err)?;
    let limit = u64::try_from(MAX_RESPONSE).unwrap_or(u64::MAX) + 1;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .take(limit)
        .read_until(b'\n', &mut answer)
        .map_err(io_err)?;
    if !answer.ends_with(b"\n") {
        return Err(ControlError::Closed {
            path: path.to_path_buf(),
        });
    }
    serde_json::from_slice(&answer).map_err(|source| ControlError::BadResponse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::JoinHandle;

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_ms: 7,
            containers: 0,
        }
    }

    fn start(dir: &Path) -> (PathBuf, Shutdown, JoinHandle<ControlSocket>) {
        let path = dir.join("run/hostd/hostd.sock");
        let socket = ControlSocket::bind(&path).unwrap();
        let shutdown = Shutdown::new().unwrap();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            socket
                .serve(|_req: &Request| Response::Status(status()), &stop)
                .unwrap();
            socket
        });
        (path, shutdown, thread)
    }

    fn raw_exchange(path: &Path, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn wire_format_matches_interface() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        assert_eq!(
            Response::Status(status()).to_line(),
            "{\"ok\":true,\"version\":\"0.1.0\",\"pid\":42,\"uptime_ms\":7,\"containers\":0}\n"
        );
        assert_eq!(
            Response::Error("boom".into()).to_line(),
            "{\"ok\":false,\"error\":\"boom\"}\n"
        );
        let back: Response = serde_json::from_str(
            r#"{"ok":true,"version":"1","pid":1,"uptime_ms":2,"containers":3,"future":1}"#,
        )
        .unwrap();
        assert!(matches!(back, Response::Status(Status { pid: 1, .. })));
        assert!(serde_json::from_str::<Response>(r#"{"ok":true}"#).is_err());
    }

    #[test]
    fn image_request_wire_formats() {
        let cases = [
            (Request::Images, r#"{"op":"images"}"#),
            (
                Request::Import {
                    path: "/tmp/a b.tar".into(),
                },
                r#"{"op":"import","path":"/tmp/a b.tar"}"#,
            ),
            (
                Request::InspectImage {
                    image: "busybox".into(),
                },
                r#"{"op":"inspect_image","image":"busybox"}"#,
            ),
            (
                Request::RemoveImage {
                    image: "sha256:abcd".into(),
                },
                r#"{"op":"remove_image","image":"sha256:abcd"}"#,
            ),
            (Request::Gc, r#"{"op":"gc"}"#),
        ];
        for (request, wire) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), wire);
            assert_eq!(parse_request(wire.as_bytes()), Ok(request));
        }
        assert!(parse_request(br#"{"op":"import"}"#)
            .unwrap_err()
            .contains("missing field `path`"));
        assert!(parse_request(br#"{"op":"inspect_image","image":7}"#).is_err());
        assert_eq!(Request::Status.client_timeout(), SHORT_TIMEOUT);
        assert!(Request::Import { path: "/x".into() }.client_timeout() >= Duration::from_secs(600));
    }

    #[test]
    fn image_response_wire_formats() {
        let gc = crate::store::GcReport {
            blobs_removed: 3,
            layers_removed: 1,
            bytes_freed: 42,
        };
        // Key order inside the store's object is not part of the format.
        let line = Response::with(Response::Gc, &gc).to_line();
        assert!(line.starts_with(r#"{"ok":true,"gc":{"#), "{line}");
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"ok":true,"gc":{"blobs_removed":3,"layers_removed":1,"bytes_freed":42}})
        );
        let cases = [
            (
                r#"{"ok":true,"images":[{"id":"sha256:ab","names":[]}]}"#,
                Response::Images(serde_json::json!([{"id":"sha256:ab","names":[]}])),
            ),
            (
                r#"{"ok":true,"imported":{"images":[],"blobs_added":0}}"#,
                Response::Imported(serde_json::json!({"images":[],"blobs_added":0})),
            ),
            (
                r#"{"ok":true,"image":{"id":"sha256:ab"}}"#,
                Response::Image(serde_json::json!({"id":"sha256:ab"})),
            ),
            (
                r#"{"ok":true,"removed":{"id":"sha256:ab","untagged":[],"deleted":true}}"#,
                Response::Removed(
                    serde_json::json!({"id":"sha256:ab","untagged":[],"deleted":true}),
                ),
            ),
            (
                r#"{"ok":true,"gc":{"blobs_removed":0}}"#,
                Response::Gc(serde_json::json!({"blobs_removed":0})),
            ),
        ];
        for (wire, response) in cases {
            let back: Response = serde_json::from_str(wire).unwrap();
            assert_eq!(back, response);
            let line = response.to_line();
            assert!(line.ends_with('\n'));
            let again: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(again, serde_json::from_str::<Value>(wire).unwrap());
        }
        assert!(serde_json::from_str::<Response>(r#"{"ok":true,"images":{}}"#).is_err());
        assert!(serde_json::from_str::<Response>(r#"{"ok":true,"gc":[]}"#).is_err());
        // A store error is an ordinary error answer.
        let back: Response =
            serde_json::from_str(r#"{"ok":false,"error":"no image named \"x\""}"#).unwrap();
        assert_eq!(back, Response::Error("no image named \"x\"".into()));
    }

    #[test]
    fn container_wire_formats() {
        let run = parse_request(
            br#"{"op":"run","image":"busybox","name":"web","command":["sh"],"env":["A=1"]}"#,
        )
        .unwrap();
        assert_eq!(
            run,
            Request::Run(crate::containers::RunRequest {
                image: "busybox".into(),
                name: Some("web".into()),
                command: vec!["sh".into()],
                env: vec!["A=1".into()],
                ..Default::default()
            })
        );
        assert_eq!(
            parse_request(br#"{"op":"rm","name":"web"}"#),
            Ok(Request::Rm {
                name: "web".into(),
                force: false
            })
        );
        assert_eq!(parse_request(br#"{"op":"ps"}"#), Ok(Request::Ps));
        let cases = [
            (
                r#"{"ok":true,"id":"abcd"}"#,
                Response::Started("abcd".into()),
            ),
            (
                r#"{"ok":true,"ps":[]}"#,
                Response::Ps(serde_json::json!([])),
            ),
            (r#"{"ok":true,"logs":"x\n"}"#, Response::Logs("x\n".into())),
            (
                r#"{"ok":true,"container":{"id":"ab"}}"#,
                Response::Container(serde_json::json!({"id":"ab"})),
            ),
        ];
        for (wire, response) in cases {
            assert_eq!(serde_json::from_str::<Response>(wire).unwrap(), response);
            let again: Value = serde_json::from_str(&response.to_line()).unwrap();
            assert_eq!(again, serde_json::from_str::<Value>(wire).unwrap());
        }
    }

    #[test]
    fn parse_request_errors_are_messages() {
        assert_eq!(parse_request(b"{\"op\":\"status\"}\n"), Ok(Request::Status));
        assert!(parse_request(b"{\"op\":\"nope\"}")
            .unwrap_err()
            .contains("unknown variant `nope`"));
        assert_eq!(
            parse_request(b"{\"op\":\"status\",\"x\":1}"),
            Ok(Request::Status)
        );
        assert!(parse_request(b"{}")
            .unwrap_err()
            .contains("missing field `op`"));
        assert_eq!(parse_request(b"  \n").unwrap_err(), "empty request");
        assert_eq!(parse_request(b"\xff").unwrap_err(), "request is not UTF-8");
    }

    #[test]
    fn status_roundtrip_and_socket_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (path, shutdown, thread) = start(dir.path());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        let answer = request(&path, &Request::Status, Duration::from_secs(5)).unwrap();
        assert_eq!(answer, Response::Status(status()));

        shutdown.trigger();
        let socket = thread.join().unwrap();
        socket.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn malformed_requests_get_error_json_and_server_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (path, shutdown, thread) = start(dir.path());

        let line = raw_exchange(&path, b"this is not json\n");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ok"], false);
        assert!(value["error"].as_str().unwrap().contains("invalid request"));

        let line = raw_exchange(&path, b"{\"op\":\"reboot\"}\n");
        assert!(line.contains("unknown variant"), "{line}");

        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        let line = raw_exchange(&path, &long);
        assert!(line.contains("request longer than"), "{line}");

        // Several requests on one connection, the last without a newline.
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .write_all(b"{\"op\":\"status\"}\n{\"op\":\"status\"}")
            .unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = String::new();
        stream.read_to_string(&mut all).unwrap();
        assert_eq!(all.lines().count(), 2, "{all}");

        // A client that connects and says nothing does not block others.
        let _idle = UnixStream::connect(&path).unwrap();
        assert!(request(&path, &Request::Status, Duration::from_secs(5)).is_ok());

        shutdown.trigger();
        thread.join().unwrap().remove().unwrap();
    }

    #[test]
    fn slow_handler_outlives_the_server_io_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.sock");
        let socket = ControlSocket::bind(&path).unwrap();
        let shutdown = Shutdown::new().unwrap();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let slow = |_req: &Request| {
                std::thread::sleep(SERVER_IO_TIMEOUT + Duration::from_secs(1));
                Response::Status(status())
            };
            socket.serve(slow, &stop).unwrap();
            socket
        });
        let answer = request(&path, &Request::Gc, Request::Gc.client_timeout()).unwrap();
        assert_eq!(answer, Response::Status(status()));
        shutdown.trigger();
        thread.join().unwrap().remove().unwrap();
    }

    #[test]
    fn stale_socket_is_replaced_and_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "stale socket left behind");
        let socket = ControlSocket::bind(&path).unwrap();
        let err = ControlSocket::bind(&path).err().unwrap();
        assert!(matches!(err, ControlError::InUse { .. }), "{err}");
        socket.remove().unwrap();

        fs::write(&path, b"not a socket").unwrap();
        let err = ControlSocket::bind(&path).err().unwrap();
        assert!(matches!(err, ControlError::NotSocket { .. }), "{err}");
    }

    #[test]
    fn client_reports_missing_daemon_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let err = request(&path, &Request::Status, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ControlError::Connect { .. }), "{err}");

        // A listener that never answers.
        let silent = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&silent).unwrap();
        let err = request(&silent, &Request::Status, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ControlError::Timeout { .. }), "{err}");
    }
}
