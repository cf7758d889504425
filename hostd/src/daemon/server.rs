//! The daemon's side of the control protocol ([`mkhost_shared::control`]):
//! a root-only unix socket, bound at a path it removes again ([`ControlSocket`]),
//! and the accept loop ([`serve`]) that hands each request to a handler.
//!
//! The server gives each connection its own thread with read and write
//! timeouts, caps line length and connection count, and answers anything
//! malformed with an error object instead of failing. A [`Shutdown`] handle
//! stops the accept loop from another thread (e.g. the one that received
//! SIGTERM).

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mkhost_shared::control::{parse_request, Request, Response, MAX_LINE};

use crate::os;

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
        let (wake_read, wake_write) = os::pipe().map_err(ControlError::Pipe)?;
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
        let ready = os::poll_readable(&fds, None).map_err(ControlError::Poll)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use mkhost_shared::control::{request, Status};

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_ms: 7,
            containers: 0,
        }
    }
    use std::thread::JoinHandle;

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
}
