//! `mkhost serve`: the HTTP server that netboots a lab or a rack.
//!
//! It serves a fixed set of verified artifacts (see [`crate::artifacts`]) and an
//! iPXE script rendered per request (see [`crate::ipxe`]):
//!
//! | path | what |
//! | --- | --- |
//! | `/boot.ipxe`, `/pxe/boot.ipxe` | without `?mac=`: a script that asks again with the MAC; with it: that machine's boot script (403 when refused) |
//! | `/vmlinuz`, `/pxe/vmlinuz` | the kernel |
//! | `/initramfs.img`, `/pxe/initramfs.img` | the initramfs |
//! | `/mkhost-<profile>.efi` | the UKI, for UEFI HTTP boot |
//! | `/manifest.json` | what was built (inputs, modules, artifact hashes) |
//!
//! A decoded request path is only ever looked up in that table; it is never
//! joined onto a directory, so `..`, absolute paths, percent-encoded tricks and
//! symlinks planted in the output directory all end in 404. Files are read from
//! the descriptors that were hashed at start, and only verified bytes are sent:
//! a file's length and modification time are checked before each response
//! (a changed file gets 500, naming it in the log), and every block is
//! re-hashed before it is written, so a change that hides from the metadata
//! breaks the transfer off (see [`crate::artifacts`]).
//!
//! HTTP/1.1 with keep-alive, GET and HEAD, one byte range per request (206, or
//! 416 with `Content-Range: bytes */LEN`), one thread per connection up to a
//! limit (503 beyond it). Slow clients cannot hold a connection: a request head
//! must arrive whole within [`ServeOptions::head_timeout`] (counted from the
//! connection's start, or from the first byte of a later request), a kept-alive
//! connection may wait [`ServeOptions::idle_timeout`] for its next request, and
//! each block of a response must be taken within [`ServeOptions::send_timeout`],
//! however the bytes trickle. Every request is logged as one `key=value` line,
//! and so is a connection cut off at a deadline. [`ShutdownHandle::shutdown`]
//! stops the accept loop, closes open connections and lets [`Server::run`]
//! return.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::artifacts::{self, Artifacts, VerifiedFile, BLOCK};
use crate::clip;
use crate::http::{self, HttpError, Range, Request};
use crate::ipxe::{self, Answer, Defaults, MachineTable};
use crate::profile::normalize_mac;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// The URL clients reach the server at (checked with
    /// [`ipxe::check_public_url`]); default: from each request's Host header.
    pub public_url: Option<String>,
    /// A request head must arrive whole within this long: counted from the
    /// connection's start for its first request, from the first byte of the
    /// head for later ones. A client past it gets 408 and is logged.
    pub head_timeout: Duration,
    /// A kept-alive connection waits this long for the next request, then it
    /// is closed (silently: that is the normal end of keep-alive).
    pub idle_timeout: Duration,
    /// Each block of a response (at most [`BLOCK`] bytes) must be taken by the
    /// client within this long, or the transfer is broken off.
    pub send_timeout: Duration,
    /// Connections served at once; more get 503.
    pub max_connections: usize,
}

impl ServeOptions {
    pub fn new(listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            listen,
            public_url: None,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            send_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("address {addr} is already in use (another mkhost serve or web server?); choose a free one with --listen ADDR:PORT")]
    AddrInUse {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (ports below 1024 need root; choose another with --listen ADDR:PORT)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    PublicUrl(String),
}

/// What one served request is: a rendered script or a verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Script,
    File(String),
}

/// The fixed table of paths the server answers.
fn routes(artifacts: &Artifacts) -> BTreeMap<String, Route> {
    let mut routes = BTreeMap::new();
    for prefix in ["", "/pxe"] {
        routes.insert(format!("{prefix}/boot.ipxe"), Route::Script);
        routes.insert(
            format!("{prefix}/vmlinuz"),
            Route::File(artifacts::KERNEL.into()),
        );
        routes.insert(
            format!("{prefix}/initramfs.img"),
            Route::File(artifacts::INITRD.into()),
        );
    }
    for rel in [artifacts.uki_name(), artifacts::MANIFEST.to_string()] {
        routes.insert(format!("/{rel}"), Route::File(rel));
    }
    routes
}

fn content_type(rel: &str) -> &'static str {
    if rel.ends_with(".efi") {
        // What UEFI HTTP boot expects for an EFI application.
        "application/efi"
    } else if rel.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// Counters reported when the server stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    pub requests: u64,
    pub bytes: u64,
}

struct Shared {
    artifacts: Artifacts,
    routes: BTreeMap<String, Route>,
    table: MachineTable,
    defaults: Defaults,
    public_url: Option<String>,
    head_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    log: Mutex<Box<dyn Write + Send>>,
    stop: Arc<AtomicBool>,
    /// Open connections, so a shutdown can close them.
    open: Mutex<BTreeMap<u64, TcpStream>>,
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Locks a mutex; a thread that panicked while holding it does not stop the rest.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn log_line(&self, line: &str) {
        let mut log = lock(&self.log);
        let _ = log.write_all(format!("{line}\n").as_bytes());
        let _ = log.flush();
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    max_connections: usize,
}

/// Stops a running [`Server`] from another thread (or a signal handler thread).
#[derive(Clone)]
pub struct ShutdownHandle {
    stop: Arc<AtomicBool>,
    wake: SocketAddr,
}

impl ShutdownHandle {
    /// Asks the server to stop; [`Server::run`] returns soon after.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
    }
}

impl Server {
    /// Binds the listening socket. `log` receives one line per request.
    pub fn bind(
        options: &ServeOptions,
        artifacts: Artifacts,
        table: MachineTable,
        log: Box<dyn Write + Send>,
    ) -> Result<Server, ServeError> {
        let public_url = match &options.public_url {
            Some(url) => Some(ipxe::check_public_url(url).map_err(ServeError::PublicUrl)?),
            None => None,
        };
        let listener = TcpListener::bind(options.listen).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                ServeError::AddrInUse {
                    addr: options.listen,
                    source,
                }
            } else {
                ServeError::Bind {
                    addr: options.listen,
                    source,
                }
            }
        })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
        let defaults = Defaults {
            profile: artifacts.profile.clone(),
            hostname: artifacts.hostname.clone(),
            cmdline: artifacts.cmdline.clone(),
        };
        Ok(Server {
            listener,
            local,
            max_connections: options.max_connections.max(1),
            shared: Arc::new(Shared {
                routes: routes(&artifacts),
                artifacts,
                table,
                defaults,
                public_url,
                head_timeout: nonzero(options.head_timeout),
                idle_timeout: nonzero(options.idle_timeout),
                send_timeout: nonzero(options.send_timeout),
                log: Mutex::new(log),
                stop: Arc::new(AtomicBool::new(false)),
                open: Mutex::new(BTreeMap::new()),
                requests: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        let ip = match self.local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        ShutdownHandle {
            stop: Arc::clone(&self.shared.stop),
            wake: SocketAddr::new(ip, self.local.port()),
        }
    }

    /// The paths served, for the startup message.
    pub fn paths(&self) -> Vec<String> {
        self.shared.routes.keys().cloned().collect()
    }

    /// Serves until [`ShutdownHandle::shutdown`] is called.
    pub fn run(self) -> ServeSummary {
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id: u64 = 0;
        for incoming in self.listener.incoming() {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match incoming {
                Ok(stream) => stream,
                Err(err) => {
                    self.shared.log_line(&format!("accept failed: {err}"));
                    // Out of file descriptors and the like: let connections finish.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            workers.retain(|w| !w.is_finished());
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
            if workers.len() >= self.max_connections {
                self.refuse_busy(stream, &peer);
                continue;
            }
            next_id += 1;
            let id = next_id;
            if let Ok(clone) = stream.try_clone() {
                lock(&self.shared.open).insert(id, clone);
            }
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name(format!("mkhost-serve-{id}"))
                .spawn(move || {
                    serve_connection(&shared, stream, &peer);
                    lock(&shared.open).remove(&id);
                });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(err) => {
                    self.shared
                        .log_line(&format!("cannot start a connection thread: {err}"));
                    if let Some(stream) = lock(&self.shared.open).remove(&id) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            }
        }
        for stream in lock(&self.shared.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for worker in workers {
            let _ = worker.join();
        }
        ServeSummary {
            requests: self.shared.requests.load(Ordering::SeqCst),
            bytes: self.shared.bytes.load(Ordering::SeqCst),
        }
    }

    /// Answers 503 without blocking the accept loop: the socket is
    /// non-blocking, and what the client already sent is read and dropped so
    /// that closing does not reset the connection before the answer is read.
    fn refuse_busy(&self, mut stream: TcpStream, peer: &str) {
        let _ = stream.set_nonblocking(true);
        let drain = |mut stream: &TcpStream| {
            let mut scratch = [0u8; 4096];
            for _ in 0..4 {
                if !matches!(stream.read(&mut scratch), Ok(n) if n > 0) {
                    break;
                }
            }
        };
        drain(&stream);
        let body = b"mkhost serve: too many connections, try again\n";
        let _ = http::write_head(
            &mut stream,
            503,
            &[
                ("Content-Length", body.len().to_string()),
                ("Retry-After", "1".into()),
                ("Connection", "close".into()),
            ],
        );
        let _ = stream.write_all(body);
        let _ = stream.shutdown(Shutdown::Write);
        drain(&stream);
        self.shared.log_line(&format!(
            "client={peer} mac=- request=- status=503 bytes=0 note=\"too many connections\""
        ));
    }
}

/// A zero timeout would mean "none" to the socket calls: at least 1 ms.
fn nonzero(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
}

/// `10 s`, `1.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The read side of a connection. Every read waits at most until one deadline,
/// so a client cannot stretch a request head by sending a byte now and then.
struct Incoming {
    stream: TcpStream,
    deadline: Instant,
    head_timeout: Duration,
    /// The current request head has begun: its deadline is set.
    started: bool,
    /// This is the connection's first request.
    first: bool,
    /// Bytes received since the current wait began.
    received: u64,
}

impl Incoming {
    fn new(stream: TcpStream, head_timeout: Duration) -> Incoming {
        Incoming {
            stream,
            deadline: Instant::now() + head_timeout,
            head_timeout,
            started: true,
            first: true,
            received: 0,
        }
    }

    /// Before waiting for the next request of a kept-alive connection;
    /// `pending` when some of it is already buffered.
    fn next_request(&mut self, idle_timeout: Duration, pending: bool) {
        self.first = false;
        self.started = pending;
        self.received = 0;
        self.deadline = Instant::now()
            + if pending {
                self.head_timeout
            } else {
                idle_timeout
            };
    }

    /// Why a timed-out wait ended the connection, for the log; `None` for a
    /// kept-alive connection that simply sent nothing more.
    fn timeout_note(&self) -> Option<String> {
        let limit = seconds(self.head_timeout);
        if self.first && self.received == 0 {
            Some(format!("no request within {limit} of connecting"))
        } else if self.started {
            Some(format!(
                "request head not complete within {limit} ({} bytes received)",
                self.received
            ))
        } else {
            None
        }
    }
}

impl Read for Incoming {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        self.stream.set_read_timeout(Some(left))?;
        match self.stream.read(buf) {
            Ok(n) => {
                if n > 0 && !self.started {
                    self.started = true;
                    self.deadline = Instant::now() + self.head_timeout;
                }
                self.received += n as u64;
                Ok(n)
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(timed_out())
            }
            Err(err) => Err(err),
        }
    }
}

/// The write side of a connection: each `write_all` (one response head, one
/// block of a file) must be taken by the client within the send timeout, so
/// a client reading a byte now and then cannot hold the connection.
struct Outgoing {
    stream: TcpStream,
    timeout: Duration,
}

impl Write for Outgoing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.timeout))?;
        self.stream.write(buf)
    }

    fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        let deadline = Instant::now() + self.timeout;
        while !buf.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let timed_out = || {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the client took more than {} to take {} bytes",
                        seconds(self.timeout),
                        buf.len()
                    ),
                )
            };
            if left.is_zero() {
                return Err(timed_out());
            }
            self.stream.set_write_timeout(Some(left))?;
            match self.stream.write(buf) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out())
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// One connection: requests until the client closes, asks to close, errs or
/// misses a deadline, or the server stops.
fn serve_connection(shared: &Shared, stream: TcpStream, peer: &str) {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(Incoming::new(read_half, shared.head_timeout));
    let mut writer = Outgoing {
        stream,
        timeout: shared.send_timeout,
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let request = match http::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(HttpError::Io(err)) if err.kind() == std::io::ErrorKind::TimedOut => {
                if let Some(note) = reader.get_ref().timeout_note() {
                    let mut entry = LogEntry::new(peer, "-");
                    entry.note = Some(note);
                    // Whatever the client makes of it, it is not waited for.
                    writer.timeout = writer.timeout.min(Duration::from_secs(1));
                    let body = "mkhost serve: request head not received in time\n";
                    let sent = send_text(&mut writer, 408, body, false, true);
                    entry.finish(shared, 408, sent.unwrap_or(0));
                }
                break;
            }
            Err(HttpError::Io(_)) => break,
            Err(err) => {
                let status = match err {
                    HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
                    HttpError::Version(_) => 505,
                    _ => 400,
                };
                let mut entry = LogEntry::new(peer, "-");
                entry.note = Some(err.to_string());
                let sent = send_text(&mut writer, status, &format!("{err}\n"), false, true);
                entry.finish(shared, status, sent.unwrap_or(0));
                break;
            }
        };
        if !handle(shared, &request, &mut writer, peer, local) {
            break;
        }
        let pending = !reader.buffer().is_empty();
        reader.get_mut().next_request(shared.idle_timeout, pending);
    }
}

/// One log line in the making.
struct LogEntry {
    started: Instant,
    peer: String,
    request: String,
    mac: Option<String>,
    hostname: Option<String>,
    note: Option<String>,
    aborted: bool,
    /// Body bytes written before a transfer broke off.
    partial: u64,
}

impl LogEntry {
    fn new(peer: &str, request: &str) -> LogEntry {
        LogEntry {
            started: Instant::now(),
            peer: peer.to_string(),
            request: request.to_string(),
            mac: None,
            hostname: None,
            note: None,
            aborted: false,
            partial: 0,
        }
    }

    fn finish(self, shared: &Shared, status: u16, bytes: u64) {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        shared.bytes.fetch_add(bytes, Ordering::SeqCst);
        let mut line = format!(
            "client={} mac={} request=\"{}\" status={status} bytes={bytes} ms={}",
            self.peer,
            self.mac.as_deref().unwrap_or("-"),
            self.request,
            self.started.elapsed().as_millis()
        );
        if let Some(hostname) = &self.hostname {
            line.push_str(&format!(" hostname={hostname}"));
        }
        if self.aborted {
            line.push_str(" aborted");
        }
        if let Some(note) = &self.note {
            let note = clip::clip_message(note).replace('"', "'");
            line.push_str(&format!(" note=\"{note}\""));
        }
        shared.log_line(&line);
    }
}

/// Answers one request; returns whether the connection stays open.
fn handle(
    shared: &Shared,
    request: &Request,
    out: &mut Outgoing,
    peer: &str,
    local: SocketAddr,
) -> bool {
    let mut entry = LogEntry::new(
        peer,
        &format!("{} {}", request.method, http::loggable(&request.target)),
    );
    let head_only = request.method == "HEAD";
    let mut keep = request.keep_alive() && !request.has_body();

    let (status, sent) = 'answer: {
        if request.method != "GET" && !head_only {
            keep = false;
            let sent = send(
                out,
                405,
                "text/plain; charset=utf-8",
                b"only GET and HEAD\n",
                &[("Allow", "GET, HEAD".into())],
                false,
                true,
            );
            break 'answer (405, sent);
        }
        if request.has_body() {
            let sent = send_text(out, 400, "GET and HEAD take no body\n", head_only, true);
            break 'answer (400, sent);
        }
        let target = match http::parse_target(&request.target) {
            Ok(target) => target,
            Err(err) => {
                entry.note = Some(err.to_string());
                let sent = send_text(out, 400, "bad request target\n", head_only, !keep);
                break 'answer (400, sent);
            }
        };
        entry.mac = target
            .query_value("mac")
            .and_then(|m| normalize_mac(m.trim()));
        match shared.routes.get(&target.path) {
            None => {
                let sent = send_text(out, 404, "not found\n", head_only, !keep);
                (404, sent)
            }
            Some(Route::Script) => {
                let base = match &shared.public_url {
                    Some(url) => url.clone(),
                    None if request.headers.iter().filter(|(n, _)| n == "host").count() > 1 => {
                        let text = "more than one Host header\n";
                        entry.note = Some(text.trim_end().into());
                        break 'answer (400, send_text(out, 400, text, head_only, !keep));
                    }
                    None => match ipxe::base_url(request.header("host"), local) {
                        Ok(base) => base,
                        Err(err) => {
                            entry.note = Some(err.to_string());
                            let text = format!("{err}\n");
                            break 'answer (400, send_text(out, 400, &text, head_only, !keep));
                        }
                    },
                };
                match ipxe::answer(
                    &shared.table,
                    &shared.defaults,
                    &base,
                    target.query_value("mac"),
                ) {
                    Ok(Answer::Chain { script }) => {
                        (200, send_script(out, &script, head_only, !keep))
                    }
                    Ok(Answer::Boot {
                        script,
                        hostname,
                        listed,
                        ..
                    }) => {
                        entry.hostname = Some(hostname);
                        if !listed {
                            entry.note = Some("not listed: profile defaults".into());
                        }
                        (200, send_script(out, &script, head_only, !keep))
                    }
                    Ok(Answer::Refused { mac }) => {
                        entry.note = Some("not listed: refused".into());
                        let body = format!(
                            "mkhost serve: {mac} is not in the machine table, and profile {} boots only listed machines\n",
                            shared.defaults.profile
                        );
                        (403, send_text(out, 403, &body, head_only, !keep))
                    }
                    Err(err) => {
                        entry.note = Some(err.to_string());
                        (
                            400,
                            send_text(out, 400, &format!("{err}\n"), head_only, !keep),
                        )
                    }
                }
            }
            Some(Route::File(rel)) => match shared.artifacts.file(rel) {
                Ok(file) => send_file(out, file, request, head_only, !keep, &mut entry),
                Err(err) => {
                    entry.note = Some(err.to_string());
                    (404, send_text(out, 404, "not found\n", head_only, !keep))
                }
            },
        }
    };
    let bytes = match sent {
        Ok(bytes) => bytes,
        Err(_) => {
            entry.aborted = true;
            keep = false;
            entry.partial
        }
    };
    entry.finish(shared, status, bytes);
    keep
}

fn connection_header(close: bool) -> (&'static str, String) {
    (
        "Connection",
        if close { "close" } else { "keep-alive" }.into(),
    )
}

/// Sends a complete small response; returns the body bytes sent.
fn send(
    out: &mut Outgoing,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, String)],
    head_only: bool,
    close: bool,
) -> std::io::Result<u64> {
    let mut headers = vec![
        (
            "Server",
            concat!("mkhost/", env!("CARGO_PKG_VERSION")).to_string(),
        ),
        ("Content-Type", content_type.to_string()),
        ("Content-Length", body.len().to_string()),
        ("Cache-Control", "no-store".into()),
        connection_header(close),
    ];
    headers.extend(extra.iter().cloned());
    let mut response = Vec::with_capacity(256 + body.len());
    http::write_head(&mut response, status, &headers)?;
    if !head_only {
        response.extend_from_slice(body);
    }
    out.write_all(&response)?;
    Ok(if head_only { 0 } else { body.len() as u64 })
}

fn send_text(
    out: &mut Outgoing,
    status: u16,
    text: &str,
    head_only: bool,
    close: bool,
) -> std::io::Result<u64> {
    send(
        out,
        status,
        "text/plain; charset=utf-8",
        text.as_bytes(),
        &[],
        head_only,
        close,
    )
}

fn send_script(
    out: &mut Outgoing,
    script: &str,
    head_only: bool,
    close: bool,
) -> std::io::Result<u64> {
    send(
        out,
        200,
        "text/plain; charset=utf-8",
        script.as_bytes(),
        &[],
        head_only,
        close,
    )
}

/// Sends a verified file, whole or one range of it.
fn send_file(
    out: &mut Outgoing,
    file: &VerifiedFile,
    request: &Request,
    head_only: bool,
    close: bool,
    entry: &mut LogEntry,
) -> (u16, std::io::Result<u64>) {
    // Nothing about a file that changed since it was verified is promised:
    // no length, no ETag, no byte.
    if let Err(err) = file.check_unchanged() {
        entry.note = Some(err.to_string());
        let body = format!(
            "mkhost serve: {} changed on disk after it was verified; it is not served until mkhost serve is restarted on a fresh build\n",
            file.rel
        );
        return (500, send_text(out, 500, &body, head_only, close));
    }
    let etag = format!("\"{}\"", &file.sha256[..32]);
    // If-Range with another validator: the client's copy is stale, send it all.
    let range_header = match request.header("if-range") {
        Some(validator) if validator.trim() != etag => None,
        _ => request.header("range"),
    };
    let range = http::parse_range(range_header, file.len);
    let server = (
        "Server",
        concat!("mkhost/", env!("CARGO_PKG_VERSION")).to_string(),
    );
    let (status, start, end) = match range {
        Range::Full => (200, 0, file.len),
        Range::Partial { start, end } => (206, start, end + 1),
        Range::Unsatisfiable => {
            entry.note = Some(format!(
                "unsatisfiable range {:?}",
                range_header.unwrap_or_default()
            ));
            let sent = send(
                out,
                416,
                "text/plain; charset=utf-8",
                b"range not satisfiable\n",
                &[("Content-Range", format!("bytes */{}", file.len))],
                head_only,
                close,
            );
            return (416, sent);
        }
    };
    let mut headers = vec![
        server,
        ("Content-Type", content_type(&file.rel).to_string()),
        ("Content-Length", (end - start).to_string()),
        ("Accept-Ranges", "bytes".into()),
        ("ETag", etag),
        connection_header(close),
    ];
    if status == 206 {
        headers.push((
            "Content-Range",
            format!("bytes {start}-{}/{}", end - 1, file.len),
        ));
    }
    let result = (|| {
        let mut head = Vec::new();
        http::write_head(&mut head, status, &headers)?;
        out.write_all(&head)?;
        if head_only {
            return Ok(0);
        }
        // Whole blocks are read and checked; the part in range is sent.
        let block = BLOCK as u64;
        let mut buf = Vec::with_capacity(BLOCK);
        let mut sent = 0u64;
        for index in start / block..end.div_ceil(block) {
            let data = match file.read_block(index, &mut buf) {
                Ok(data) => data,
                Err(err) => {
                    entry.partial = sent;
                    let text = err.to_string();
                    entry.note = Some(text.clone());
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, text));
                }
            };
            let at = index * block;
            let from = usize::try_from(start.max(at) - at).unwrap_or(0);
            let to = usize::try_from(end.min(at + data.len() as u64) - at).unwrap_or(0);
            if let Err(err) = out.write_all(&data[from..to]) {
                entry.partial = sent;
                if err.kind() == std::io::ErrorKind::TimedOut {
                    entry.note = Some(err.to_string());
                }
                return Err(err);
            }
            sent += (to - from) as u64;
        }
        Ok(end - start)
    })();
    (status, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::tests::{fake_output, replace_artifact};
    use crate::profile::{Machine, Origin, UnknownMachines};
    use std::io::Read;
    use std::path::Path;

    /// A log sink the test can read.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    struct Running {
        addr: SocketAddr,
        handle: ShutdownHandle,
        thread: Option<JoinHandle<ServeSummary>>,
        log: Log,
        _tmp: tempfile::TempDir,
    }

    impl Running {
        fn stop(mut self) -> ServeSummary {
            self.handle.shutdown();
            self.thread.take().unwrap().join().unwrap()
        }
    }

    fn start(unknown: UnknownMachines) -> Running {
        start_with(unknown, |_| {}, |_| {})
    }

    /// Starts a server on a fake build; `tune` adjusts the options, `prepare`
    /// the output directory before it is verified.
    fn start_with(
        unknown: UnknownMachines,
        tune: impl FnOnce(&mut ServeOptions),
        prepare: impl FnOnce(&Path),
    ) -> Running {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_output(tmp.path(), "lab");
        prepare(&dir);
        let artifacts = Artifacts::open(&dir).unwrap();
        let machines = [Machine {
            mac: "52:54:00:00:00:0a".into(),
            hostname: Some("node-a".into()),
            cmdline: "x=1".into(),
            origin: Origin {
                file: "m.toml".into(),
                line: 1,
                column: 1,
            },
        }];
        let (table, _) = MachineTable::new(&machines, &[], unknown);
        let log = Log::default();
        let mut options = ServeOptions::new("127.0.0.1:0".parse().unwrap());
        tune(&mut options);
        let server = Server::bind(&options, artifacts, table, Box::new(log.clone())).unwrap();
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        Running {
            addr,
            handle,
            thread: Some(thread),
            log,
            _tmp: tmp,
        }
    }

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends raw request bytes (with `Connection: close`) and reads the response.
    fn raw(addr: SocketAddr, request: &str) -> Response {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut all = Vec::new();
        // A server that closes with the request unread may reset the
        // connection after its answer: what arrived is still the answer.
        if let Err(err) = stream.read_to_end(&mut all) {
            assert!(!all.is_empty(), "{err}");
        }
        parse_response(&all)
    }

    fn parse_response(all: &[u8]) -> Response {
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&all[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        Response {
            status,
            headers,
            body: all[split + 4..].to_vec(),
        }
    }

    fn get(addr: SocketAddr, target: &str, extra: &str) -> Response {
        raw(
            addr,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: 10.0.2.2:8080\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
    }

    #[test]
    fn serves_files_ranges_and_head() {
        let server = start(UnknownMachines::Default);
        let kernel: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        for path in ["/vmlinuz", "/pxe/vmlinuz", "/pxe%2Fvmlinuz"] {
            let r = get(server.addr, path, "");
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.body, kernel);
            assert_eq!(r.header("content-length"), Some("50000"));
            assert_eq!(r.header("accept-ranges"), Some("bytes"));
        }
        let r = get(server.addr, "/vmlinuz", "Range: bytes=1000-1999\r\n");
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &kernel[1000..2000]);
        assert_eq!(r.header("content-range"), Some("bytes 1000-1999/50000"));
        let r = get(server.addr, "/vmlinuz", "Range: bytes=-10\r\n");
        assert_eq!((r.status, r.body.as_slice()), (206, &kernel[49_990..]));
        let r = get(server.addr, "/vmlinuz", "Range: bytes=49999-\r\n");
        assert_eq!((r.status, r.body.as_slice()), (206, &kernel[49_999..]));
        for bad in ["bytes=50000-", "bytes=9-3", "bytes=x-"] {
            let r = get(server.addr, "/vmlinuz", &format!("Range: {bad}\r\n"));
            assert_eq!(r.status, 416, "{bad}");
            assert_eq!(r.header("content-range"), Some("bytes */50000"));
        }
        // If-Range with a stale validator: the whole file.
        let r = get(
            server.addr,
            "/vmlinuz",
            "Range: bytes=0-0\r\nIf-Range: \"old\"\r\n",
        );
        assert_eq!((r.status, r.body.len()), (200, 50_000));
        let etag = get(server.addr, "/vmlinuz", "")
            .header("etag")
            .unwrap()
            .to_string();
        let r = get(
            server.addr,
            "/vmlinuz",
            &format!("Range: bytes=0-0\r\nIf-Range: {etag}\r\n"),
        );
        assert_eq!((r.status, r.body.len()), (206, 1));

        let r = raw(
            server.addr,
            "HEAD /mkhost-lab.efi HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("6"));
        assert_eq!(r.header("content-type"), Some("application/efi"));
        assert!(r.body.is_empty());
        let r = raw(
            server.addr,
            "HEAD /vmlinuz HTTP/1.1\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((r.status, r.header("content-length")), (206, Some("10")));
        assert!(r.body.is_empty());
        let summary = server.stop();
        assert!(summary.requests >= 14, "{summary:?}");
    }

    #[test]
    fn nothing_outside_the_set_is_served() {
        let server = start(UnknownMachines::Default);
        let dir = server._tmp.path().join("lab");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("pxe/passwd")).unwrap();
        for target in [
            "/../etc/passwd",
            "/pxe/../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "//etc/passwd",
            "/etc/passwd",
            "http://x/etc/passwd",
            "/passwd",
            "/pxe/passwd",
            "/pxe/boot.ipxe/..",
            "/mkhost-lab.img",
            "/",
            "/pxe/",
            "/vmlinuz/",
            "/VMLINUZ",
        ] {
            let r = get(server.addr, target, "");
            assert_eq!(r.status, 404, "{target}");
            assert_eq!(r.body, b"not found\n", "{target}");
        }
        for target in ["etc/passwd", "/%zz", "/a%00"] {
            assert_eq!(get(server.addr, target, "").status, 400, "{target}");
        }
        let r = raw(
            server.addr,
            "POST /vmlinuz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
        let r = raw(server.addr, "GET / HTTP/3\r\n\r\n");
        assert_eq!(r.status, 505);
        let r = raw(server.addr, "nonsense\r\n\r\n");
        assert_eq!(r.status, 400);
        server.stop();
    }

    #[test]
    fn boot_scripts_per_mac_and_the_log() {
        let server = start(UnknownMachines::Default);
        let r = get(server.addr, "/boot.ipxe", "");
        assert_eq!(r.status, 200);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "#!ipxe\n# mkhost lab: ask again with this machine's MAC address\nchain http://10.0.2.2:8080/boot.ipxe?mac=${netX/mac}\n"
        );
        let r = get(
            server.addr,
            "/boot.ipxe?mac=52%3A54%3A00%3A00%3A00%3A0A",
            "",
        );
        let script = String::from_utf8(r.body).unwrap();
        assert!(
            script.contains("kernel --name vmlinuz http://10.0.2.2:8080/vmlinuz?mac=52:54:00:00:00:0a initrd=initramfs.img console=ttyS0,115200 quiet mkhost.hostname=node-a x=1\n"),
            "{script}"
        );
        let r = get(server.addr, "/pxe/boot.ipxe?mac=52-54-00-ff-ff-ff", "");
        let script = String::from_utf8(r.body).unwrap();
        assert!(script.contains("mkhost.hostname=mkhost-lab\n"), "{script}");
        assert_eq!(get(server.addr, "/boot.ipxe?mac=", "").status, 400);
        assert_eq!(get(server.addr, "/boot.ipxe?mac=nope", "").status, 400);
        // Without a Host header the base is the address the client reached.
        let r = raw(server.addr, "GET /boot.ipxe HTTP/1.0\r\n\r\n");
        let script = String::from_utf8(r.body).unwrap();
        assert!(
            script.contains(&format!("chain http://{}/boot.ipxe", server.addr)),
            "{script}"
        );
        get(
            server.addr,
            "/vmlinuz?mac=52:54:00:00:00:0a",
            "Range: bytes=0-99\r\n",
        );
        let log = server.log.clone();
        server.stop();
        let log = log.text();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 7, "{log}");
        assert!(
            lines[0].starts_with("client=127.0.0.1:")
                && lines[0].contains(" mac=- request=\"GET /boot.ipxe\" status=200 bytes="),
            "{log}"
        );
        assert!(
            lines[1].contains("mac=52:54:00:00:00:0a") && lines[1].contains("hostname=node-a"),
            "{log}"
        );
        assert!(
            lines[2].contains("mac=52:54:00:ff:ff:ff")
                && lines[2].contains("not listed: profile defaults"),
            "{log}"
        );
        assert!(lines[3].contains("status=400"), "{log}");
        assert!(lines[6].contains("mac=52:54:00:00:00:0a request=\"GET /vmlinuz?mac=52:54:00:00:00:0a\" status=206 bytes=100"), "{log}");
    }

    #[test]
    fn hostile_mac_and_host_values_are_refused_and_cut() {
        let server = start(UnknownMachines::Default);
        let huge = "A".repeat(15_000);
        let r = get(server.addr, &format!("/boot.ipxe?mac={huge}"), "");
        assert_eq!(r.status, 400);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            body.len() < 400 && body.contains("(15000 bytes)") && body.contains("not a MAC"),
            "{body}"
        );
        for host in [
            "x:y:z",
            "a b",
            "[::1",
            "[zz::1]:80",
            "boot.lab:99999",
            "boot.lab:",
            "-x.lab",
            "a..b",
            "1.2.3.4.5",
            "h\tx",
        ] {
            let r = raw(
                server.addr,
                &format!("GET /boot.ipxe HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            );
            assert_eq!(r.status, 400, "{host}");
            assert!(
                !String::from_utf8_lossy(&r.body).contains("chain"),
                "{host}"
            );
        }
        let r = raw(
            server.addr,
            "GET /boot.ipxe HTTP/1.1\r\nHost: a.lab\r\nHost: b.lab\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 400);
        for (host, base) in [
            ("10.0.2.2:8080", "http://10.0.2.2:8080"),
            ("[fe80::1]:8080", "http://[fe80::1]:8080"),
            ("[::1]", "http://[::1]"),
            ("Boot-1.lab.", "http://Boot-1.lab."),
        ] {
            let r = raw(
                server.addr,
                &format!("GET /boot.ipxe HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            );
            assert_eq!(r.status, 200, "{host}");
            let script = String::from_utf8_lossy(&r.body);
            assert!(
                script.contains(&format!("chain {base}/boot.ipxe?mac=")),
                "{script}"
            );
        }
        let log = server.log.clone();
        server.stop();
        let log = log.text();
        for line in log.lines() {
            assert!(line.len() < 1000, "{line}");
        }
        assert!(
            log.lines().next().unwrap().contains("(15000 bytes)"),
            "{log}"
        );
        assert!(log.contains("note=\"bad Host header 'x:y:z': "), "{log}");
        assert!(log.contains("note=\"more than one Host header\""), "{log}");
    }

    #[test]
    fn refused_machines_get_403() {
        let server = start(UnknownMachines::Refuse);
        let r = get(server.addr, "/boot.ipxe?mac=52:54:00:ff:ff:ff", "");
        assert_eq!(r.status, 403);
        assert!(String::from_utf8_lossy(&r.body)
            .contains("52:54:00:ff:ff:ff is not in the machine table"));
        assert_eq!(
            get(server.addr, "/boot.ipxe?mac=52:54:00:00:00:0a", "").status,
            200
        );
        let log = server.log.clone();
        server.stop();
        assert!(log.text().contains("status=403 bytes="), "{}", log.text());
    }

    #[test]
    fn keep_alive_serves_several_requests_on_one_connection() {
        let server = start(UnknownMachines::Default);
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .write_all(b"GET /initramfs.img HTTP/1.1\r\nHost: a\r\n\r\nHEAD /vmlinuz HTTP/1.1\r\nHost: a\r\n\r\nGET /initramfs.img HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        let text = String::from_utf8_lossy(&all);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
        assert_eq!(text.matches("initramfs bytes").count(), 2, "{text}");
        // An idle keep-alive connection does not hold up the shutdown.
        let idle = TcpStream::connect(server.addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(3));
        let mut rest = Vec::new();
        let _ = (&idle).read_to_end(&mut rest);
    }

    /// A slowloris client: sends a request head that never ends, one byte every
    /// 200 ms, until the server closes the connection or `give_up` passes.
    /// Returns how long the server kept it open and what it answered.
    fn trickle(addr: SocketAddr, give_up: Duration) -> (Duration, Vec<u8>) {
        let stream = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let mut stream = stream.try_clone().unwrap();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let head = b"GET /vmlinuz HTTP/1.1\r\nX-Slow: ";
                let mut sent = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let byte = head.get(sent).copied().unwrap_or(b'a');
                    if stream.write_all(&[byte]).is_err() {
                        break;
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        let mut reader = stream;
        reader.set_read_timeout(Some(give_up)).unwrap();
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        (took, answer)
    }

    #[test]
    fn slow_clients_are_cut_off_at_the_head_deadline() {
        let server = start_with(
            UnknownMachines::Default,
            |o| {
                o.head_timeout = Duration::from_secs(1);
                o.idle_timeout = Duration::from_secs(1);
                o.max_connections = 2;
            },
            |_| {},
        );
        let addr = server.addr;
        let slow: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || trickle(addr, Duration::from_secs(8))))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // Both slots are taken: another client is refused at once.
        let started = Instant::now();
        let r = get(addr, "/vmlinuz", "");
        assert_eq!(r.status, 503);
        assert!(started.elapsed() < Duration::from_secs(1));
        for client in slow {
            let (took, answer) = client.join().unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert!(took < Duration::from_secs(4), "held for {took:?}");
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        }
        // The slots are free again.
        assert_eq!(get(addr, "/vmlinuz", "").status, 200);
        let log = server.log.clone();
        server.stop();
        let log = log.text();
        let cut: Vec<&str> = log.lines().filter(|l| l.contains("status=408")).collect();
        assert_eq!(cut.len(), 2, "{log}");
        for line in cut {
            assert!(
                line.contains("note=\"request head not complete within 1 s"),
                "{log}"
            );
        }
    }

    #[test]
    fn silent_and_idle_connections_are_closed() {
        let server = start_with(
            UnknownMachines::Default,
            |o| {
                o.head_timeout = Duration::from_secs(1);
                o.idle_timeout = Duration::from_secs(1);
            },
            |_| {},
        );
        // Connects and never sends a byte: closed and logged.
        let mut silent = TcpStream::connect(server.addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = silent.read_to_end(&mut answer);
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "),
            "{answer:?}"
        );
        // One request, then idle: closed without a word.
        let mut idle = TcpStream::connect(server.addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        idle.write_all(b"GET /initramfs.img HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = idle.read_to_end(&mut answer);
        assert!(started.elapsed() < Duration::from_secs(4));
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("initramfs bytes"),
            "{answer}"
        );
        let log = server.log.clone();
        server.stop();
        let log = log.text();
        assert_eq!(log.lines().count(), 2, "{log}");
        assert!(
            log.contains("status=408") && log.contains("no request within 1 s"),
            "{log}"
        );
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_off() {
        // More than the socket buffers on both ends hold.
        let kernel = vec![7u8; 24 << 20];
        let server = start_with(
            UnknownMachines::Default,
            |o| o.send_timeout = Duration::from_secs(1),
            |dir| replace_artifact(dir, artifacts::KERNEL, &kernel),
        );
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .write_all(b"GET /vmlinuz HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let started = Instant::now();
        let log = server.log.clone();
        while !log.text().contains(" aborted") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}",
                log.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = log.text();
        assert!(
            text.contains("status=200")
                && text.contains("note=\"the client took more than 1 s to take "),
            "{text}"
        );
        drop(stream);
        server.stop();
    }

    /// A kernel of several blocks, so a change can sit in the middle.
    fn big_kernel() -> Vec<u8> {
        (0..(1u32 << 20) + 7).map(|i| (i % 253) as u8).collect()
    }

    #[test]
    fn an_artifact_changed_after_start_is_not_served() {
        let kernel = big_kernel();
        let server = start_with(
            UnknownMachines::Default,
            |_| {},
            |dir| replace_artifact(dir, artifacts::KERNEL, &kernel),
        );
        let dir = server._tmp.path().join("lab");
        let r = get(server.addr, "/vmlinuz", "");
        assert_eq!((r.status, r.body.len()), (200, kernel.len()));
        // Rewritten in place, same inode and length (`dd conv=notrunc`).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(artifacts::KERNEL))
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&file, b"EVIL", 600_000).unwrap();
        drop(file);
        for extra in ["", "Range: bytes=599000-601000\r\n", "Range: bytes=0-9\r\n"] {
            let r = get(server.addr, "/vmlinuz", extra);
            assert_eq!(r.status, 500, "{extra}");
            assert!(r.header("etag").is_none(), "{extra}");
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                body.contains("pxe/vmlinuz changed on disk after it was verified"),
                "{body}"
            );
        }
        // Truncated: never served with its old length.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(artifacts::INITRD))
            .unwrap();
        file.set_len(5).unwrap();
        drop(file);
        let r = get(server.addr, "/initramfs.img", "");
        assert_eq!(r.status, 500);
        assert!(r.header("etag").is_none());
        // The other files are still served.
        assert_eq!(get(server.addr, "/manifest.json", "").status, 200);
        let log = server.log.clone();
        server.stop();
        let log = log.text();
        let changed: Vec<&str> = log.lines().filter(|l| l.contains("status=500")).collect();
        assert_eq!(changed.len(), 4, "{log}");
        assert!(changed[0].contains("pxe/vmlinuz changed on disk"), "{log}");
        assert!(
            changed[3].contains("pxe/initramfs.img changed on disk")
                && changed[3].contains("15 bytes when verified, 5 now"),
            "{log}"
        );
    }

    #[test]
    fn a_change_that_hides_from_the_metadata_is_caught_while_sending() {
        let kernel = big_kernel();
        let server = start_with(
            UnknownMachines::Default,
            |_| {},
            |dir| replace_artifact(dir, artifacts::KERNEL, &kernel),
        );
        let path = server._tmp.path().join("lab").join(artifacts::KERNEL);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_at(&file, b"EVIL", 600_000).unwrap();
        // Same length, and the modification time put back.
        file.set_modified(modified).unwrap();
        drop(file);
        let r = get(server.addr, "/vmlinuz", "");
        // Whatever arrived is a prefix of what was verified, and short.
        assert!(r.body.len() < kernel.len(), "{}", r.body.len());
        assert_eq!(r.body, kernel[..r.body.len()]);
        // From then on the file is refused before anything is sent.
        let r = get(server.addr, "/vmlinuz", "Range: bytes=0-9\r\n");
        assert_eq!(r.status, 500);
        let log = server.log.clone();
        server.stop();
        let log = log.text();
        assert!(
            log.contains(" aborted note=\"") && log.contains("pxe/vmlinuz changed on disk"),
            "{log}"
        );
    }

    #[test]
    fn a_busy_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(&fake_output(tmp.path(), "lab")).unwrap();
        let (table, _) = MachineTable::new(&[], &[], UnknownMachines::Default);
        let err = Server::bind(
            &ServeOptions::new(addr),
            artifacts,
            table,
            Box::new(std::io::sink()),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains(&addr.to_string())
                && err.contains("already in use")
                && err.contains("--listen"),
            "{err}"
        );
    }

    #[test]
    fn public_url_is_used_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_output(tmp.path(), "lab");
        let (table, _) = MachineTable::new(&[], &[], UnknownMachines::Default);
        let mut options = ServeOptions::new("127.0.0.1:0".parse().unwrap());
        options.public_url = Some("http://boot.lab/x y".into());
        assert!(Server::bind(
            &options,
            Artifacts::open(&dir).unwrap(),
            table.clone(),
            Box::new(std::io::sink())
        )
        .is_err());
        options.public_url = Some("http://boot.lab:9000/".into());
        let server = Server::bind(
            &options,
            Artifacts::open(&dir).unwrap(),
            table,
            Box::new(std::io::sink()),
        )
        .unwrap();
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let r = get(addr, "/boot.ipxe", "");
        assert!(
            String::from_utf8_lossy(&r.body).contains("chain http://boot.lab:9000/boot.ipxe?mac=")
        );
        handle.shutdown();
        thread.join().unwrap();
    }
}
