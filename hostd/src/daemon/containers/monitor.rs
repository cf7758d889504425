//! The monitor: one thread that watches every running container through a
//! single `epoll` set — no thread and no process per container.
//!
//! For each container it watches the read ends of the stdout and stderr
//! pipes and the init's pidfd:
//!
//! - output is split into lines and appended to `container.log` as
//!   `<RFC 3339 UTC time> <stdout|stderr> <line>` (a line longer than
//!   [`MAX_LINE`] is cut into pieces); the log is rotated to
//!   `container.log.1` when it passes [`LOG_ROTATE`] bytes, so a chatty
//!   container cannot fill a RAM-backed host;
//! - a readable pidfd means the init exited: the pipes are drained, and the
//!   exit is handed to [`Supervisor::exited`], which records it and may
//!   ask for a restart at a later time; the monitor keeps those timers.
//!
//! Other threads hand it work through a channel and wake it with an eventfd.
//! The monitor knows containers only through the [`Container`] and
//! [`Supervisor`] traits: the manager above implements them, and nothing
//! here reaches back into it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log::log;
use crate::os::{self, Epoll, EventFd};
use mkhost_shared::time::rfc3339_now;

/// A container's log file, in its directory.
pub const LOG_FILE: &str = "container.log";

/// Longest line kept whole in the log.
pub const MAX_LINE: usize = 16 * 1024;

/// Size at which `container.log` is rotated.
pub const LOG_ROTATE: u64 = 1024 * 1024;

/// Token of the wake-up eventfd.
const WAKE: u64 = 0;
/// Token of the zygote's pidfd (container tokens start at 4).
const ZYGOTE: u64 = 1;

/// A container as the monitor sees it: an id for its messages and a log.
pub trait Container: Send + Sync + 'static {
    /// Its id, for log lines.
    fn id(&self) -> &str;
    /// Output of `stream` as it was read, before it is cut into lines.
    fn output(&self, stream: &str, bytes: &[u8]);
    /// Appends lines of `stream` output to its log.
    fn append_log(&self, stream: &str, lines: &[Vec<u8>]);
    /// Closes its log: the init exited and its pipes are drained.
    fn close_log(&self);
}

/// What the monitor reports to: the owner of the containers' state.
pub trait Supervisor: Send + Sync + 'static {
    /// The containers it hands the monitor.
    type Container: Container;
    /// A container's init exited; answers when to restart it, if ever.
    fn exited(&self, container: &Self::Container) -> Option<Instant>;
    /// Restarts a container now; answers its descriptors to watch.
    fn restart(&self, container: &Self::Container) -> Option<Running>;
    /// The zygote died (called once).
    fn zygote_lost(&self);
}

pub use crate::backend::Running;

enum Command<C> {
    Watch(Arc<C>, Running),
    RestartAt(Arc<C>, Instant),
}

/// The handle other threads use.
pub struct MonitorHandle<C> {
    tx: Sender<Command<C>>,
    wake: Arc<EventFd>,
    /// Containers watched (whose descriptors the monitor holds).
    watched: Arc<AtomicU64>,
}

impl<C> Clone for MonitorHandle<C> {
    fn clone(&self) -> Self {
        MonitorHandle {
            tx: self.tx.clone(),
            wake: Arc::clone(&self.wake),
            watched: Arc::clone(&self.watched),
        }
    }
}

impl<C> MonitorHandle<C> {
    /// Starts watching a container.
    pub fn watch(&self, entry: Arc<C>, running: Running) {
        let _ = self.tx.send(Command::Watch(entry, running));
        self.wake.notify();
    }

    /// Calls [`Supervisor::restart`] for `entry` at `at`.
    pub fn restart_at(&self, entry: Arc<C>, at: Instant) {
        let _ = self.tx.send(Command::RestartAt(entry, at));
        self.wake.notify();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

struct Pipe {
    stream: Stream,
    /// `None` once closed.
    file: Option<File>,
    partial: Vec<u8>,
}

/// What the monitor keeps per container.
struct Watched<C> {
    entry: Arc<C>,
    pidfd: Arc<OwnedFd>,
    pipes: Vec<Pipe>,
    exited: bool,
}

/// An open log file and its size.
struct LogFile {
    file: File,
    size: u64,
}

struct Monitor<S: Supervisor> {
    /// The zygote's pidfd until it exits.
    zygote: Option<OwnedFd>,
    shared: Arc<S>,
    handle: MonitorHandle<S::Container>,
    rx: Receiver<Command<S::Container>>,
    epoll: Epoll,
    /// Token (container serial) -> container.
    watched: HashMap<u64, Watched<S::Container>>,
    /// Deadline -> containers to restart then.
    timers: BTreeMap<Instant, Vec<Arc<S::Container>>>,
    next: u64,
    buf: Vec<u8>,
}

/// Tokens: container serial << 2 | 0 pidfd, 1 stdout, 2 stderr.
fn token(serial: u64, slot: u64) -> u64 {
    serial << 2 | slot
}

/// Starts the monitor thread; `zygote` is the zygote's pidfd: when it
/// becomes readable the zygote is gone and [`Supervisor::zygote_lost`] is
/// called. `watched` counts the containers it holds descriptors for.
pub fn start<S: Supervisor>(
    shared: Arc<S>,
    zygote: OwnedFd,
    watched: Arc<AtomicU64>,
) -> io::Result<MonitorHandle<S::Container>> {
    let epoll = Epoll::new()?;
    let wake = Arc::new(EventFd::new()?);
    epoll.add(wake.fd(), WAKE)?;
    epoll.add(zygote.as_fd(), ZYGOTE)?;
    let (tx, rx) = mpsc::channel();
    let handle = MonitorHandle { tx, wake, watched };
    let mut monitor = Monitor {
        zygote: Some(zygote),
        shared,
        handle: handle.clone(),
        rx,
        epoll,
        watched: HashMap::new(),
        timers: BTreeMap::new(),
        next: 1,
        buf: vec![0u8; 64 * 1024],
    };
    std::thread::Builder::new()
        .name("hostd-monitor".into())
        .spawn(move || monitor.run())?;
    Ok(handle)
}

impl<S: Supervisor> Monitor<S> {
    fn run(&mut self) {
        let mut ready = Vec::new();
        loop {
            let timeout = self
                .timers
                .keys()
                .next()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.epoll.wait(timeout, &mut ready) {
                log(&format!("monitor: epoll failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            // Output first, so a container's last lines precede its exit.
            ready.sort_by_key(|t| (t & 3 == 0, *t));
            for &t in &ready {
                if t == WAKE {
                    self.handle.wake.drain();
                    self.commands();
                    continue;
                }
                if t == ZYGOTE {
                    if let Some(fd) = self.zygote.take() {
                        self.epoll.delete(fd.as_fd());
                        self.shared.zygote_lost();
                    }
                    continue;
                }
                let serial = t >> 2;
                match t & 3 {
                    0 => self.exited(serial),
                    slot => self.output(serial, (slot - 1) as usize),
                }
            }
            self.due_restarts();
        }
    }

    fn commands(&mut self) {
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Watch(entry, running) => self.watch(entry, running),
                Command::RestartAt(entry, at) => self.timers.entry(at).or_default().push(entry),
            }
        }
    }

    fn watch(&mut self, entry: Arc<S::Container>, running: Running) {
        self.handle.watched.fetch_add(1, Ordering::SeqCst);
        let serial = self.next;
        self.next += 1;
        let mut pipes = Vec::new();
        for (slot, (stream, fd)) in [
            (Stream::Stdout, running.stdout),
            (Stream::Stderr, running.stderr),
        ]
        .into_iter()
        .enumerate()
        {
            let added = os::set_nonblocking(fd.as_fd(), true)
                .and_then(|()| self.epoll.add(fd.as_fd(), token(serial, slot as u64 + 1)));
            match added {
                Ok(()) => pipes.push(Pipe {
                    stream,
                    file: Some(File::from(fd)),
                    partial: Vec::new(),
                }),
                Err(e) => log(&format!(
                    "{}: cannot watch its {}: {e}",
                    entry.id(),
                    stream.name()
                )),
            }
        }
        if let Err(e) = self.epoll.add(running.pidfd.as_fd(), token(serial, 0)) {
            log(&format!("{}: cannot watch its pidfd: {e}", entry.id()));
        }
        self.watched.insert(
            serial,
            Watched {
                entry,
                pidfd: running.pidfd,
                pipes,
                exited: false,
            },
        );
    }

    /// Reads what a pipe has; closes it at EOF.
    fn output(&mut self, serial: u64, index: usize) {
        let Some(w) = self.watched.get_mut(&serial) else {
            return;
        };
        let Some(pipe) = w.pipes.get_mut(index) else {
            return;
        };
        if pump(pipe, &*w.entry, &mut self.buf, false) {
            if let Some(file) = pipe.file.take() {
                self.epoll.delete(file.as_fd());
            }
            self.forget_if_done(serial);
        }
    }

    fn exited(&mut self, serial: u64) {
        let Some(w) = self.watched.get_mut(&serial) else {
            return;
        };
        if w.exited {
            return;
        }
        w.exited = true;
        self.epoll.delete(w.pidfd.as_fd());
        // The init is gone: whatever is left in the pipes is its last output.
        for pipe in &mut w.pipes {
            if pump(pipe, &*w.entry, &mut self.buf, true) {
                if let Some(file) = pipe.file.take() {
                    self.epoll.delete(file.as_fd());
                }
            }
        }
        let entry = Arc::clone(&w.entry);
        if let Some(at) = self.shared.exited(&entry) {
            self.timers.entry(at).or_default().push(entry);
        }
        self.forget_if_done(serial);
    }

    /// Forgets a container whose init exited and whose pipes are closed.
    fn forget_if_done(&mut self, serial: u64) {
        let done = self
            .watched
            .get(&serial)
            .is_some_and(|w| w.exited && w.pipes.iter().all(|p| p.file.is_none()));
        if done {
            if let Some(w) = self.watched.remove(&serial) {
                let _ = self
                    .handle
                    .watched
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                w.entry.close_log();
            }
        }
    }

    fn due_restarts(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > now {
                break;
            }
            for e in entry.remove() {
                if let Some(running) = self.shared.restart(&e) {
                    self.watch(e, running);
                }
            }
        }
    }
}

/// Reads the pipe until it would block (or to EOF); appends whole lines to
/// the log (and the rest too when `flush`). Answers whether it hit EOF.
fn pump(pipe: &mut Pipe, entry: &impl Container, buf: &mut [u8], flush: bool) -> bool {
    let Some(mut file) = pipe.file.as_ref() else {
        return true;
    };
    let mut eof = false;
    let fresh = pipe.partial.len();
    loop {
        match file.read(buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => pipe.partial.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                eof = true;
                break;
            }
        }
        if pipe.partial.len() > 4 * MAX_LINE {
            break;
        }
    }
    if pipe.partial.len() > fresh {
        entry.output(pipe.stream.name(), &pipe.partial[fresh..]);
    }
    let text = take_lines(&mut pipe.partial, flush || eof);
    if !text.is_empty() {
        entry.append_log(pipe.stream.name(), &text);
    }
    eof
}

/// Removes complete lines (and, with `all`, the unterminated rest; lines
/// longer than [`MAX_LINE`] in pieces) from `partial`.
fn take_lines(partial: &mut Vec<u8>, all: bool) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < partial.len() {
        let rest = &partial[start..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) if i <= MAX_LINE => {
                lines.push(rest[..i].to_vec());
                start += i + 1;
            }
            _ if rest.len() > MAX_LINE => {
                lines.push(rest[..MAX_LINE].to_vec());
                start += MAX_LINE;
            }
            _ if all => {
                lines.push(rest.to_vec());
                start = partial.len();
            }
            _ => break,
        }
    }
    partial.drain(..start);
    lines
}

/// A container's log: appends with rotation.
pub struct Log {
    path: PathBuf,
    open: Option<LogFile>,
}

impl Log {
    /// The log of the container in `dir`.
    pub fn new(dir: &Path) -> Log {
        Log {
            path: dir.join(LOG_FILE),
            open: None,
        }
    }

    /// Appends `lines` from `stream`, each with the time.
    pub fn append(&mut self, stream: &str, lines: &[Vec<u8>]) {
        let now = rfc3339_now();
        let mut text = Vec::new();
        for line in lines {
            text.extend_from_slice(now.as_bytes());
            text.push(b' ');
            text.extend_from_slice(stream.as_bytes());
            text.push(b' ');
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        if self.open.as_ref().is_some_and(|l| l.size >= LOG_ROTATE) {
            self.open = None;
            let _ = fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        if self.open.is_none() {
            match File::options().create(true).append(true).open(&self.path) {
                Ok(file) => {
                    let size = file.metadata().map_or(0, |m| m.len());
                    self.open = Some(LogFile { file, size });
                }
                Err(e) => {
                    log(&format!("cannot open {}: {e}", self.path.display()));
                    return;
                }
            }
        }
        if let Some(log) = self.open.as_mut() {
            if log.file.write_all(&text).is_ok() {
                log.size += text.len() as u64;
            }
        }
    }

    /// Closes the file (it is reopened on the next append).
    pub fn close(&mut self) {
        self.open = None;
    }

    /// The log's text: the rotated part, then the current one.
    pub fn read(dir: &Path) -> io::Result<String> {
        let mut text = Vec::new();
        for path in [
            dir.join(LOG_FILE).with_extension("log.1"),
            dir.join(LOG_FILE),
        ] {
            match fs::read(&path) {
                Ok(bytes) => text.extend_from_slice(&bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_cut() {
        let mut partial = b"a\nbb\ncc".to_vec();
        assert_eq!(
            take_lines(&mut partial, false),
            [b"a".to_vec(), b"bb".to_vec()]
        );
        assert_eq!(partial, b"cc");
        assert_eq!(take_lines(&mut partial, true), [b"cc".to_vec()]);
        assert!(partial.is_empty());
        let mut long = vec![b'x'; MAX_LINE * 2 + 5];
        let pieces = take_lines(&mut long, false);
        assert_eq!(pieces.len(), 2);
        assert_eq!(long.len(), 5);
        let mut empty_lines = b"\n\n".to_vec();
        assert_eq!(
            take_lines(&mut empty_lines, false),
            [Vec::<u8>::new(), Vec::new()]
        );
    }

    #[test]
    fn log_rotates_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::new(dir.path());
        let big = vec![b'y'; 1000];
        let lines: Vec<Vec<u8>> = (0..1100).map(|_| big.clone()).collect();
        log.append("stdout", &lines);
        log.append("stderr", &[b"last".to_vec()]);
        assert!(dir.path().join("container.log.1").exists());
        let text = Log::read(dir.path()).unwrap();
        assert!(
            text.ends_with(" stderr last\n"),
            "{}",
            &text[text.len() - 40..]
        );
        assert_eq!(text.lines().count(), 1101);
        let first = text.lines().next().unwrap();
        let (time, rest) = first.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
        assert!(rest.starts_with("stdout yyy"));
    }
}
