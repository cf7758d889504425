//! Interactive streams of the Docker API: `attach` with standard input,
//! exec instances (`docker exec`, create, start, inspect), terminal sizes
//! (`resize`) and detach keys.
//!
//! A hijacked connection (`Upgrade: tcp`) carries the process's output to
//! the client (raw with a terminal, multiplexed 8-byte frames without) and
//! the client's bytes to the process's input, scanned for the detach keys
//! (`ctrl-p,ctrl-q` unless the client names others). Detaching ends the
//! connection and leaves the process running; the client closing its write
//! side closes a `StdinOnce` container's input, as dockerd does. The
//! process's descriptors are read and written without blocking a thread.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};

use super::api::{
    blocking, empty, forward, json_answer, read_body, status_only, streamed, Answer, Api,
};
use super::create;
use super::error::ApiError;
use super::route::{flag, number, ExecOp, Query};
use super::stream::{self, ChannelBody};
use crate::daemon::containers::exec::ExecIo;
use crate::daemon::containers::execs::ExecView;
use crate::daemon::containers::{Manager, Stream};

/// Docker's default detach keys.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// The detach keys as bytes: `ctrl-p,ctrl-q` is `[0x10, 0x11]`; a key is
/// one character or `ctrl-` and one of `a`-`z`, `@`, `[`, `\`, `]`, `^`,
/// `_`.
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("Invalid detach keys ({text}) provided");
    let mut keys = Vec::new();
    for key in text.split(',') {
        let byte = match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => match c.as_bytes()[0].to_ascii_lowercase() {
                c @ b'a'..=b'z' => c - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(invalid()),
            },
            Some(_) => return Err(invalid()),
            None if key.len() == 1 => key.as_bytes()[0],
            None => return Err(invalid()),
        };
        keys.push(byte);
    }
    if keys.is_empty() {
        return Err(invalid());
    }
    Ok(keys)
}

/// Watches a client's input for the detach keys: bytes that might start
/// the sequence are held back until it completes or breaks.
#[derive(Debug, Clone)]
pub struct DetachKeys {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachKeys {
    /// Watches for `keys` (empty: never detach).
    pub fn new(keys: Vec<u8>) -> Self {
        DetachKeys { keys, matched: 0 }
    }

    /// Feeds `input`: the bytes to pass on, and whether the sequence
    /// completed (what follows it is dropped).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &byte in input {
            if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            // A broken sequence: what was held back goes through, and this
            // byte may start a new one.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if byte == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.push(byte);
            }
        }
        (out, false)
    }
}

/// A process's descriptor, read and written without blocking a thread.
struct AsyncPipe(AsyncFd<OwnedFd>);

impl AsyncPipe {
    fn new(fd: OwnedFd) -> io::Result<AsyncPipe> {
        crate::os::set_nonblocking(fd.as_fd(), true)?;
        Ok(AsyncPipe(watch(
            fd,
            Interest::READABLE | Interest::WRITABLE,
        )?))
    }

    /// Reads what is there; 0 at the end (a terminal whose other side is
    /// closed answers `EIO`, which is the end too).
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| rustix::io::read(fd, &mut *buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| rustix::io::write(fd, buf).map_err(io::Error::from)) {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Registers `fd` with tokio's reactor.
fn watch(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd`, which stays open and the same
    // descriptor until it is dropped.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// Where a client's input goes.
struct InputSink {
    pipe: AsyncPipe,
    keys: DetachKeys,
    /// Called when the client closes its side (`StdinOnce`).
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

/// An input that may appear later: a container attached before `start`
/// has none until its process exists.
type PendingInput = std::pin::Pin<Box<dyn std::future::Future<Output = Option<InputSink>> + Send>>;

/// How a client's input ended.
#[derive(Debug, PartialEq, Eq)]
enum InputEnd {
    /// The detach keys: the client leaves, the process stays.
    Detached,
    /// The client closed its side, or the process its input.
    Closed,
}

/// Copies the client's bytes to the process until the detach keys, the
/// client's end or the process's.
async fn copy_input(mut reader: impl AsyncRead + Unpin, mut sink: InputSink) -> InputEnd {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if let Some(on_end) = sink.on_end.take() {
                    tokio::task::spawn_blocking(on_end);
                }
                return InputEnd::Closed;
            }
            Ok(n) => n,
        };
        let (bytes, detached) = sink.keys.feed(&buf[..n]);
        if !bytes.is_empty() && sink.pipe.write_all(&bytes).await.is_err() {
            return InputEnd::Closed;
        }
        if detached {
            return InputEnd::Detached;
        }
    }
}

/// Runs a hijacked connection: `output` to the client until it ends (or
/// the client detaches), the client's bytes to `input`.
async fn hijacked(
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut output: ChannelBody,
    input: Option<PendingInput>,
) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let (reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let mut to_client = pin!(async move {
        while let Some(Ok(frame)) = output.frame().await {
            if let Ok(data) = frame.into_data() {
                if writer.write_all(&data).await.is_err() {
                    return;
                }
            }
        }
        let _ = writer.shutdown().await;
    });
    let from_client = async {
        match input {
            Some(pending) => match pending.await {
                Some(sink) => copy_input(reader, sink).await,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = &mut to_client => {}
        end = from_client => {
            if end == InputEnd::Closed {
                (&mut to_client).await;
            }
        }
    }
}

/// The 101 answer that hands the connection over.
fn switching_protocols() -> Answer {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")
        .body(empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Whether the client asked to hijack the connection.
fn wants_upgrade(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"))
}

/// The detach keys a client named, or the default.
fn detach_keys(text: Option<&str>) -> Result<DetachKeys, ApiError> {
    let text = text
        .filter(|t| !t.is_empty())
        .unwrap_or(DEFAULT_DETACH_KEYS);
    parse_detach_keys(text)
        .map(DetachKeys::new)
        .map_err(ApiError::bad_request)
}

/// `h` and `w` of a resize query.
fn size(query: &Query) -> Result<(u16, u16), ApiError> {
    let rows = number::<u16>(query, "h")?.unwrap_or(0);
    let cols = number::<u16>(query, "w")?.unwrap_or(0);
    Ok((rows, cols))
}

/// Container `id`'s input once it has one: at once when it runs, when it
/// starts if it is created; `None` when it was made without `-i` (or its
/// input is closed) or it is gone. With `once` the client's end closes it.
async fn container_input(
    manager: Arc<Manager>,
    id: String,
    keys: DetachKeys,
    once: bool,
) -> Option<InputSink> {
    let mut watch = manager.watch(&id).ok()?;
    let fd = loop {
        let snapshot = watch.snapshot();
        if snapshot.removed {
            return None;
        }
        if let Some(fd) = manager.input(&id).ok()?.input {
            break fd;
        }
        if snapshot.status != crate::daemon::containers::STATUS_CREATED {
            return None;
        }
        watch.changed().await;
    };
    let pipe = fd.try_clone().and_then(AsyncPipe::new).ok()?;
    let on_end: Option<Box<dyn FnOnce() + Send>> = once.then(|| {
        Box::new(move || {
            let _ = manager.close_input(&id);
        }) as Box<dyn FnOnce() + Send>
    });
    Some(InputSink { pipe, keys, on_end })
}

impl Api {
    /// `POST /containers/{id}/attach`: hijacks the connection (`Upgrade:
    /// tcp`) and streams the container's output until its run ends, and
    /// with `stdin=1` the client's input to the container's.
    pub(super) async fn attach(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        id: String,
        query: &Query,
    ) -> Answer {
        let (stdout, stderr) = (flag(query, "stdout")?, flag(query, "stderr")?);
        let with_stdin = flag(query, "stdin")?;
        let with_logs = flag(query, "logs")?;
        let streaming = flag(query, "stream")?;
        let keys = detach_keys(query.get("detachKeys").map(String::as_str))?;
        let manager = self.manager()?;
        let (record, follower) = manager
            .attach(&id)
            .map_err(|e| self.container_error(&id, e))?;
        let input = manager
            .input(&record.id)
            .map_err(|e| self.container_error(&id, e))?;
        let tty = input.tty;
        let past = match with_logs {
            true => manager.logs(&record.id).unwrap_or_default(),
            false => String::new(),
        };
        let wanted = move |s: Stream| match s {
            Stream::Stdout => stdout,
            Stream::Stderr => stderr,
        };
        let upgrade = wants_upgrade(&request);
        let (sender, body) = ChannelBody::new(64);
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        tokio::spawn(async move {
            for (time, s, line) in past.lines().filter_map(stream::parse_log_line) {
                if wanted(s)
                    && sender
                        .send(stream::line_frame(s, time, line.as_bytes(), false))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            let Some(mut follower) = follower.filter(|_| streaming) else {
                return;
            };
            if !tty {
                return forward(&mut follower, &sender, wanted, false).await;
            }
            // A terminal's output comes as it was written, unframed.
            while let Some(chunk) = follower.recv().await {
                if sender.send(Bytes::from(chunk.line)).await.is_err() {
                    return;
                }
            }
        });
        let Some(on_upgrade) = on_upgrade else {
            return streamed("application/vnd.docker.raw-stream", body);
        };
        let once = self
            .handler_request(&record.id)
            .is_some_and(|r| r.stdin_once);
        let sink = with_stdin.then(|| {
            Box::pin(container_input(
                Arc::clone(&manager),
                record.id.clone(),
                keys,
                once,
            )) as PendingInput
        });
        tokio::spawn(hijacked(on_upgrade, body, sink));
        switching_protocols()
    }

    /// The request container `id` was made from, if it is known.
    fn handler_request(&self, id: &str) -> Option<mkhost_shared::container::RunRequest> {
        self.manager().ok()?.details(id).ok()?.1
    }

    /// `POST /containers/{id}/resize?h=&w=`.
    pub(super) async fn container_resize(self: &Arc<Self>, id: String, query: &Query) -> Answer {
        let (rows, cols) = size(query)?;
        let manager = self.manager()?;
        let api = Arc::clone(self);
        blocking(move || {
            manager
                .resize(&id, rows, cols)
                .map_err(|e| api.container_error(&id, e))
        })
        .await?;
        status_only(StatusCode::OK)
    }

    /// `POST /containers/{id}/exec`: a new exec instance.
    pub(super) async fn exec_create(
        self: &Arc<Self>,
        request: Request<Incoming>,
        id: String,
    ) -> Answer {
        let body = read_body(request.into_body()).await?;
        let config = create::exec_config(&body)?;
        if let Some(keys) = &config.detach_keys {
            // dockerd's words for exec.
            parse_detach_keys(keys).map_err(|_| {
                ApiError::bad_request(format!("Invalid escape keys ({keys}) provided"))
            })?;
        }
        let manager = self.manager()?;
        let api = Arc::clone(self);
        let exec_id = blocking(move || {
            let record = manager
                .record(&id)
                .map_err(|e| api.container_error(&id, e))?;
            if record.paused {
                return Err(ApiError::conflict(format!(
                    "Container {} is paused, unpause the container before exec",
                    record.id
                )));
            }
            if record.status != "running" {
                return Err(ApiError::conflict(format!(
                    "Container {} is not running",
                    record.id
                )));
            }
            manager
                .exec_create(&record.id, config)
                .map_err(|e| ApiError::conflict(e.message))
        })
        .await?;
        json_answer(StatusCode::CREATED, &json!({ "Id": exec_id }))
    }

    /// `/exec/{id}/…`.
    pub(super) async fn exec(
        self: &Arc<Self>,
        request: Request<Incoming>,
        id: String,
        op: ExecOp,
        query: &Query,
    ) -> Answer {
        let manager = self.manager()?;
        let view = manager.exec_inspect(&id).map_err(ApiError::not_found)?;
        match op {
            ExecOp::Inspect => json_answer(StatusCode::OK, &exec_json(&view)),
            ExecOp::Resize => {
                let (rows, cols) = size(query)?;
                blocking(move || {
                    manager
                        .exec_resize(&id, rows, cols)
                        .map_err(ApiError::conflict)
                })
                .await?;
                status_only(StatusCode::CREATED)
            }
            ExecOp::Start => self.exec_start(request, manager, view).await,
        }
    }

    /// `POST /exec/{id}/start`: starts the process; with `Detach` answers
    /// at once, else streams its output (hijacked with `Upgrade: tcp`, with
    /// its input) until it exits, its exit code kept for inspect first.
    async fn exec_start(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        manager: Arc<Manager>,
        view: ExecView,
    ) -> Answer {
        let upgrade = wants_upgrade(&request);
        let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let body = read_body(request.into_body()).await?;
        let start = create::parse_json(&body)?;
        let detach = start
            .get("Detach")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let console = start
            .get("ConsoleSize")
            .and_then(|v| serde_json::from_value::<[u16; 2]>(v.clone()).ok())
            .filter(|[h, w]| *h > 0 && *w > 0)
            .map(|[h, w]| (h, w));
        let keys = detach_keys(view.config.detach_keys.as_deref())?;
        if view.running || view.exit_code.is_some() || view.pid != 0 {
            return Err(ApiError::conflict(format!(
                "exec instance {} has already been started",
                view.id
            )));
        }
        let tty = view.config.tty;
        if detach {
            let io = start_exec(&manager, &view.id, console).await?;
            let started = StartedExec::new(io, &view)?;
            tokio::spawn(started.stream(manager, (false, false), None));
            return status_only(StatusCode::OK);
        }
        // As dockerd: the connection is handed over first; a process that
        // cannot start is told on it, its exit code kept for inspect.
        let (sender, body) = ChannelBody::new(64);
        let (input_tx, input_rx) = tokio::sync::oneshot::channel::<InputSink>();
        tokio::spawn(async move {
            let started = start_exec(&manager, &view.id, console)
                .await
                .and_then(|io| StartedExec::new(io, &view));
            match started {
                Err(e) => {
                    let text = format!("{}\r\n", e.message);
                    let data = match tty {
                        true => Bytes::from(text),
                        false => stream::frame(Stream::Stdout, text.as_bytes()),
                    };
                    let _ = sender.send(data).await;
                }
                Ok(mut started) => {
                    if let Some(input) = started.input.take().filter(|_| view.config.attach_stdin) {
                        let _ = input_tx.send(InputSink {
                            pipe: input,
                            keys,
                            on_end: None,
                        });
                    }
                    let wanted = (view.config.attach_stdout, view.config.attach_stderr);
                    started.stream(manager, wanted, Some(sender)).await;
                }
            }
        });
        let Some(on_upgrade) = on_upgrade else {
            return streamed("application/vnd.docker.raw-stream", body);
        };
        let pending = Box::pin(async move { input_rx.await.ok() }) as PendingInput;
        tokio::spawn(hijacked(on_upgrade, body, Some(pending)));
        switching_protocols()
    }
}

/// Starts exec instance `id` on a blocking thread.
async fn start_exec(
    manager: &Arc<Manager>,
    id: &str,
    console: Option<(u16, u16)>,
) -> Result<ExecIo, ApiError> {
    let manager = Arc::clone(manager);
    let id = id.to_string();
    blocking(move || {
        manager.exec_start(&id, console).map_err(|e| {
            if e.message.contains("already been started") {
                ApiError::conflict(e.message)
            } else {
                ApiError::bad_request(e.message)
            }
        })
    })
    .await
}

/// A started exec's descriptors, ready to stream.
struct StartedExec {
    id: String,
    pidfd: OwnedFd,
    output: [AsyncPipe; 2],
    input: Option<AsyncPipe>,
    tty: bool,
}

impl StartedExec {
    fn new(io: ExecIo, view: &ExecView) -> Result<StartedExec, ApiError> {
        let watch = |fd: OwnedFd| {
            AsyncPipe::new(fd)
                .map_err(|e| ApiError::internal(format!("cannot watch the exec's streams: {e}")))
        };
        Ok(StartedExec {
            id: view.id.clone(),
            pidfd: io.pidfd,
            output: [watch(io.stdout)?, watch(io.stderr)?],
            input: io.stdin.map(watch).transpose()?,
            tty: view.config.tty,
        })
    }

    /// Streams the output (the `wanted` streams, to `sender` if any) until
    /// it ends, then reaps the process.
    async fn stream(
        self,
        manager: Arc<Manager>,
        wanted: (bool, bool),
        sender: Option<tokio::sync::mpsc::Sender<Bytes>>,
    ) {
        let (sender, wanted) = match sender {
            Some(sender) => (sender, wanted),
            // Nobody listens: a closed channel, the output drained.
            None => (tokio::sync::mpsc::channel(1).0, (false, false)),
        };
        // The input, if not taken, is dropped here: the process reads
        // end-of-file.
        drop(self.input);
        exec_output(
            manager,
            self.id,
            self.pidfd,
            self.output,
            self.tty,
            wanted,
            sender,
        )
        .await;
    }
}

/// Streams an exec's output to `sender` (while someone listens; it is
/// drained either way, so the process never blocks on a full pipe), then
/// waits for it to exit and keeps its exit code before the stream ends.
async fn exec_output(
    manager: Arc<Manager>,
    id: String,
    pidfd: OwnedFd,
    pipes: [AsyncPipe; 2],
    tty: bool,
    wanted: (bool, bool),
    sender: tokio::sync::mpsc::Sender<Bytes>,
) {
    let [stdout, stderr] = pipes;
    let pump = |pipe: AsyncPipe, stream: Stream, wanted: bool| {
        let sender = sender.clone();
        async move {
            let mut buf = vec![0u8; 32 * 1024];
            let mut listening = wanted;
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if !listening {
                    continue;
                }
                let data = match tty {
                    true => Bytes::copy_from_slice(&buf[..n]),
                    false => stream::frame(stream, &buf[..n]),
                };
                listening = sender.send(data).await.is_ok();
            }
        }
    };
    tokio::join!(
        pump(stdout, Stream::Stdout, wanted.0),
        pump(stderr, Stream::Stderr, wanted.1)
    );
    if let Ok(pidfd) = watch(pidfd, Interest::READABLE) {
        let _ = pidfd.readable().await;
    }
    let _ = tokio::task::spawn_blocking(move || manager.exec_exited(&id)).await;
    drop(sender);
}

/// An exec instance as `GET /exec/{id}/json` shows it.
fn exec_json(view: &ExecView) -> Value {
    let (entrypoint, arguments) = match view.config.cmd.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    json!({
        "ID": view.id,
        "Running": view.running,
        "ExitCode": view.exit_code,
        "ProcessConfig": {
            "tty": view.config.tty,
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": false,
            "user": view.config.user.clone().unwrap_or_default(),
        },
        "OpenStdin": view.config.attach_stdin,
        "OpenStderr": view.config.attach_stderr,
        "OpenStdout": view.config.attach_stdout,
        "CanRemove": false,
        "ContainerID": view.container,
        "DetachKeys": view.config.detach_keys.clone().unwrap_or_default(),
        "Pid": view.pid.max(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_does() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("a,ctrl-@,ctrl-_").unwrap(),
            vec![b'a', 0, 31]
        );
        assert_eq!(parse_detach_keys("ctrl-A").unwrap(), vec![1]);
        for bad in ["", "ctrl-", "ctrl-1", "ab", "ctrl-p,", "shift-a"] {
            let e = parse_detach_keys(bad).unwrap_err();
            assert!(e.contains("Invalid detach keys"), "{bad}: {e}");
        }
    }

    #[test]
    fn detach_keys_hold_back_a_prefix_and_let_a_broken_one_through() {
        let mut keys = DetachKeys::new(vec![16, 17]);
        assert_eq!(keys.feed(b"ab\x10"), (b"ab".to_vec(), false));
        // Broken: the held byte goes through with what broke it.
        assert_eq!(keys.feed(b"c"), (b"\x10c".to_vec(), false));
        // Split across reads, and what follows the keys is dropped.
        assert_eq!(keys.feed(b"x\x10"), (b"x".to_vec(), false));
        assert_eq!(keys.feed(b"\x11tail"), (Vec::new(), true));
        // A repeated first key restarts the sequence.
        let mut keys = DetachKeys::new(vec![16, 17]);
        assert_eq!(keys.feed(b"\x10\x10\x11"), (b"\x10".to_vec(), true));
        // No keys: everything passes.
        let mut none = DetachKeys::new(Vec::new());
        assert_eq!(none.feed(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }
}
