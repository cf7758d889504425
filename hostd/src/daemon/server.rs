//! The daemon's side of the control protocol ([`mkhost_shared::control`]):
//! a root-only unix socket, bound at a path it removes again ([`ControlSocket`]),
//! and the accept loop ([`serve`]) that hands each request to a handler.
//!
//! The server gives each connection its own thread, caps line length and
//! connection count, and answers anything malformed with an error object
//! instead of failing. A request line must arrive whole within a deadline
//! however its bytes trickle in (an idle connection between requests is
//! under the same deadline), and when every slot is taken a new connection
//! evicts the one that has waited longest for its request, so slow or idle
//! clients cannot lock others out; only connections whose requests are
//! running count against a newcomer. An evicted or refused connection is
//! answered [`BUSY`] (its request did not run), and the client
//! ([`mkhost_shared::control`]) asks again after a pause. Refused, evicted, timed-out and
//! malformed requests are logged with the peer's pid, at most
//! [`LOG_BURST`] lines a minute. A [`Shutdown`] handle stops the accept
//! loop from another thread (e.g. the one that received SIGTERM).

use mkhost_shared::sync::lock;
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mkhost_shared::control::{parse_request, Request, Response, BUSY, MAX_LINE};

use crate::log::log;
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

/// How long an evicted connection's refusal may take to write: the
/// accept loop writes it.
const EVICTION_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// Connections served at once (see [`ServerLimits`]).
const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send one whole request line, counted from the
/// connection (or its previous answer).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Log lines about misbehaving clients per minute; the rest are counted.
pub const LOG_BURST: u32 = 20;

/// The server's limits; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to send one whole request line.
    pub request_deadline: Duration,
    /// Time to take an answer.
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: MAX_CONNECTIONS,
            request_deadline: REQUEST_DEADLINE,
            write_timeout: SERVER_IO_TIMEOUT,
        }
    }
}

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
/// `handler`, one thread per connection, until `shutdown` is triggered,
/// with the default [`ServerLimits`].
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
    serve_with(listener, handler, shutdown, ServerLimits::default())
}

/// [`serve`] with explicit limits.
pub fn serve_with<H>(
    listener: &UnixListener,
    handler: H,
    shutdown: &Shutdown,
    limits: ServerLimits,
) -> Result<(), ControlError>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    listener
        .set_nonblocking(true)
        .map_err(ControlError::Accept)?;
    let server = Arc::new(Server {
        handler,
        limits,
        table: Mutex::new(Table::default()),
        events: EventLog::new(),
    });
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
            Ok((stream, _)) => start_connection(stream, &server),
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

/// What every connection thread shares.
struct Server<H> {
    handler: H,
    limits: ServerLimits,
    table: Mutex<Table>,
    events: EventLog,
}

/// The open connections.
#[derive(Default)]
struct Table {
    next: u64,
    slots: BTreeMap<u64, Slot>,
}

/// One open connection.
struct Slot {
    /// Since when it waits for a request; `None` while one runs.
    waiting_since: Option<Instant>,
    /// A handle to shut it down when it is evicted.
    stream: UnixStream,
    /// The peer's pid, for the log.
    pid: Option<i32>,
}

impl<H> Server<H> {
    /// Takes a slot for `stream`: evicts the connection that has waited
    /// longest for its request if every slot is taken; `None` if all of
    /// them run requests.
    fn admit(&self, stream: &UnixStream, pid: Option<i32>) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut table = lock(&self.table);
        if table.slots.len() >= self.limits.max_connections {
            let oldest = table
                .slots
                .iter()
                .filter_map(|(id, slot)| slot.waiting_since.map(|since| (since, *id)))
                .min()?;
            let evicted = table.slots.remove(&oldest.1)?;
            // It sent no request (or half of one): told it was turned away,
            // a client knows it may ask again.
            reject(&evicted.stream, BUSY, EVICTION_WRITE_TIMEOUT);
            let _ = evicted.stream.shutdown(std::net::Shutdown::Both);
            self.events.note(&format!(
                "control socket full: closed the connection of {} idle for {:.1} s",
                peer(evicted.pid),
                oldest.0.elapsed().as_secs_f64()
            ));
        }
        let id = table.next;
        table.next += 1;
        table.slots.insert(
            id,
            Slot {
                waiting_since: Some(Instant::now()),
                stream: handle,
                pid,
            },
        );
        Some(id)
    }

    /// Marks connection `id` as waiting for a request (or not); `false`
    /// if it was evicted meanwhile (it was told [`BUSY`], so its request
    /// must not run).
    fn set_waiting(&self, id: u64, waiting: bool) -> bool {
        match lock(&self.table).slots.get_mut(&id) {
            Some(slot) => {
                slot.waiting_since = waiting.then(Instant::now);
                true
            }
            None => false,
        }
    }

    fn leave(&self, id: u64) {
        lock(&self.table).slots.remove(&id);
    }
}

fn peer(pid: Option<i32>) -> String {
    pid.map_or_else(|| "a client".to_string(), |pid| format!("pid {pid}"))
}

/// Log lines about misbehaving clients, at most [`LOG_BURST`] a minute;
/// the lines beyond are counted and the count logged with the next line
/// that gets through.
struct EventLog {
    window: Mutex<(Instant, u32, u64)>,
}

impl EventLog {
    fn new() -> EventLog {
        EventLog {
            window: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    fn note(&self, message: &str) {
        let mut window = lock(&self.window);
        let (start, count, suppressed) = &mut *window;
        if start.elapsed() >= Duration::from_secs(60) {
            *start = Instant::now();
            *count = 0;
        }
        if *count >= LOG_BURST {
            *suppressed += 1;
            return;
        }
        *count += 1;
        if *suppressed > 0 {
            log(&format!(
                "{suppressed} more control-socket events were not logged"
            ));
            *suppressed = 0;
        }
        log(message);
    }
}

/// At most 200 characters of `text`, for the log.
fn cut(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

fn start_connection<H>(stream: UnixStream, server: &Arc<Server<H>>)
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let pid = os::peer_pid(stream.as_fd());
    let Some(id) = server.admit(&stream, pid) else {
        server.events.note(&format!(
            "refused a connection of {}: all {} slots run requests",
            peer(pid),
            server.limits.max_connections
        ));
        reject(&stream, BUSY, server.limits.write_timeout);
        return;
    };
    let conn = Arc::clone(server);
    let spawned = std::thread::Builder::new()
        .name("hostd-conn".into())
        .spawn(move || {
            handle_connection(&stream, &conn, id, pid);
            conn.leave(id);
        });
    if spawned.is_err() {
        // The stream moved into the failed closure and is closed with it.
        server.leave(id);
    }
}

fn reject(stream: &UnixStream, message: &str, timeout: Duration) {
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = (&*stream).write_all(Response::Error(message.to_string()).to_line().as_bytes());
}

/// How reading one request line ended without a whole line.
enum ReadEnd {
    /// The client closed (or was evicted).
    Closed,
    /// The deadline passed first.
    Deadline,
    /// Longer than [`MAX_LINE`].
    TooLong,
}

/// Reads one line (up to and with its `\n`, or what came before EOF)
/// before `deadline`, whatever the pace of its bytes.
fn read_line_by(
    reader: &mut BufReader<&UnixStream>,
    stream: &UnixStream,
    deadline: Instant,
) -> Result<Vec<u8>, ReadEnd> {
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadEnd::Deadline);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| ReadEnd::Closed)?;
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadEnd::Deadline)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(ReadEnd::Closed),
        };
        if buf.is_empty() {
            return if line.is_empty() {
                Err(ReadEnd::Closed)
            } else {
                Ok(line)
            };
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if line.len() > MAX_LINE + 1 || (!done && line.len() > MAX_LINE) {
            return Err(ReadEnd::TooLong);
        }
        if done {
            return Ok(line);
        }
    }
}

/// Serves one connection: request lines in, response lines out, until the
/// client closes, misses the request deadline, sends an over-long line, or
/// is evicted.
fn handle_connection<H>(stream: &UnixStream, server: &Server<H>, id: u64, pid: Option<i32>)
where
    H: Fn(&Request) -> Response,
{
    let limits = server.limits;
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_write_timeout(Some(limits.write_timeout))
            .is_err()
    {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut served = 0u64;
    loop {
        if !server.set_waiting(id, true) {
            return;
        }
        let deadline = Instant::now() + limits.request_deadline;
        let line = match read_line_by(&mut reader, stream, deadline) {
            Ok(line) => line,
            Err(ReadEnd::Closed) => return,
            Err(ReadEnd::Deadline) => {
                // An idle keep-alive connection ending is normal; a request
                // begun and not finished in time is not.
                if served == 0 || !reader.buffer().is_empty() {
                    server.events.note(&format!(
                        "closed the connection of {}: no whole request within {} s",
                        peer(pid),
                        limits.request_deadline.as_secs_f64()
                    ));
                }
                return;
            }
            Err(ReadEnd::TooLong) => {
                server.events.note(&format!(
                    "refused a request of {}: longer than {MAX_LINE} bytes",
                    peer(pid)
                ));
                let msg = format!("request longer than {MAX_LINE} bytes");
                let _ = writer.write_all(Response::Error(msg).to_line().as_bytes());
                return;
            }
        };
        if !server.set_waiting(id, false) {
            return;
        }
        let complete = line.ends_with(b"\n");
        let response = match parse_request(&line) {
            Ok(request) => (server.handler)(&request),
            Err(message) => {
                server.events.note(&format!(
                    "malformed request of {}: {}",
                    peer(pid),
                    cut(&message)
                ));
                Response::Error(message)
            }
        };
        served += 1;
        if writer.write_all(response.to_line().as_bytes()).is_err() || !complete {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mkhost_shared::control::{request, Status};
    use std::io::Read;

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_ms: 7,
            containers: 0,
            late_modules: Vec::new(),
            network: None,
            volumes: None,
            state: None,
            limits: None,
            boot_security: None,
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
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // The server may answer and close before reading (a refusal): the
        // write then fails with EPIPE and the answer is still readable.
        if let Err(error) = stream.write_all(bytes) {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
        }
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

    /// A server with `limits` whose handler answers status after `delay`.
    /// The server, and a count of the requests its handler has begun.
    fn start_limited(
        dir: &Path,
        limits: ServerLimits,
        delay: Duration,
    ) -> (
        PathBuf,
        Shutdown,
        JoinHandle<ControlSocket>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let path = dir.join("limited.sock");
        let socket = ControlSocket::bind(&path).unwrap();
        let shutdown = Shutdown::new().unwrap();
        let stop = shutdown.clone();
        let begun = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&begun);
        let thread = std::thread::spawn(move || {
            let handler = move |_req: &Request| {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                Response::Status(status())
            };
            serve_with(socket.listener(), handler, &stop, limits).unwrap();
            socket
        });
        (path, shutdown, thread, begun)
    }

    fn limits(max_connections: usize) -> ServerLimits {
        ServerLimits {
            max_connections,
            request_deadline: Duration::from_millis(800),
            write_timeout: Duration::from_secs(2),
        }
    }

    /// Slowloris: one byte at a time, each well within any per-read
    /// timeout, never makes a request last past the deadline.
    #[test]
    fn a_request_trickling_in_is_cut_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (path, shutdown, thread, _) = start_limited(dir.path(), limits(8), Duration::ZERO);
        let mut slow = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        let mut cut_off = false;
        for byte in b"{\"op\":\"status\"}\n" {
            if slow.write_all(&[*byte]).is_err() {
                cut_off = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        // The server closed it: reading gives EOF, not an answer.
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = String::new();
        let _ = slow.read_to_string(&mut rest);
        assert!(rest.is_empty(), "{rest}");
        assert!(cut_off || started.elapsed() >= Duration::from_millis(800));
        assert!(started.elapsed() < Duration::from_secs(5));
        shutdown.trigger();
        thread.join().unwrap().remove().unwrap();
    }

    /// Every slot held by clients that send nothing (or trickle): a new
    /// client still gets its answer, at once, by evicting the longest idle.
    #[test]
    fn idle_and_slow_clients_cannot_lock_others_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut limits = limits(4);
        limits.request_deadline = Duration::from_secs(30);
        let (path, shutdown, thread, _) = start_limited(dir.path(), limits, Duration::ZERO);
        let mut idle: Vec<UnixStream> = (0..50)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        // The last four hold the slots (the earlier ones were evicted by
        // them, so writing to those may fail with EPIPE): half a request each.
        for stream in idle.iter_mut().rev().take(4) {
            let _ = stream.write_all(b"{\"op\":");
        }
        for _ in 0..5 {
            let started = Instant::now();
            let answer = request(&path, &Request::Status, Duration::from_secs(5)).unwrap();
            assert_eq!(answer, Response::Status(status()));
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        shutdown.trigger();
        thread.join().unwrap().remove().unwrap();
    }

    /// Slots busy with running requests are not evicted: the newcomer is
    /// told, and served once one frees up.
    #[test]
    fn running_requests_keep_their_slots() {
        let dir = tempfile::tempdir().unwrap();
        let (path, shutdown, thread, begun) =
            start_limited(dir.path(), limits(2), Duration::from_secs(2));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || request(&path, &Request::Gc, Duration::from_secs(10)))
            })
            .collect();
        // Both requests are running (not merely connected) before the newcomer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while begun.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the two requests never began");
            std::thread::sleep(Duration::from_millis(10));
        }
        let line = raw_exchange(&path, b"{\"op\":\"status\"}\n");
        assert!(line.contains("too many connections"), "{line}");
        for b in busy {
            assert_eq!(b.join().unwrap().unwrap(), Response::Status(status()));
        }
        assert!(request(&path, &Request::Status, Duration::from_secs(5)).is_ok());
        shutdown.trigger();
        thread.join().unwrap().remove().unwrap();
    }

    #[test]
    fn log_lines_are_cut() {
        let long = "x".repeat(5000);
        let short = cut(&long);
        assert!(
            short.len() < 300 && short.ends_with("(5000 bytes)"),
            "{short}"
        );
        assert_eq!(cut("fine"), "fine");
    }
}
