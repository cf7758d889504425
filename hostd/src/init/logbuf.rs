//! The host log: everything `init` and `hostd` print goes through one pipe to
//! a pump thread that copies each line to the console and to a size-capped
//! file under `/run/log` ([`RingLog`]).
//!
//! `init` points its own stdout/stderr and hostd's at the pipe's write end, so
//! the log keeps the order in which lines were written and survives hostd
//! restarts. The file is a two-generation ring: when `hostd.log` would exceed
//! its cap it becomes `hostd.log.1` (replacing the older one) and a new file
//! starts, so the log never takes more than twice the cap of RAM. Each file
//! line is stamped with seconds since boot.
//!
//! With a state disk, init hands the pump a second ring on the disk
//! ([`LogPump::persist_to`], [`PERSISTENT_LOG`] under the disk's `log/`):
//! it starts with a line marking the boot and this boot's lines so far, and
//! from then on gets every line too, so the log of earlier boots is there
//! after a reboot or a crash (at most the lines of the last moments are
//! lost: they are not fsynced one by one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::os;

/// The log file.
pub const LOG_PATH: &str = "/run/log/hostd.log";
/// Cap of one log generation.
pub const LOG_CAP: u64 = 512 * 1024;
/// The persistent log's name in the state disk's `log/` directory.
pub const PERSISTENT_LOG: &str = "hostd.log";
/// Cap of one persistent log generation.
pub const PERSISTENT_LOG_CAP: u64 = 16 << 20;
/// Longest line kept whole; longer ones are split.
pub const MAX_LINE: usize = 4096;

/// A size-capped log file with one older generation.
#[derive(Debug)]
pub struct RingLog {
    path: PathBuf,
    cap: u64,
    size: u64,
    file: Option<File>,
}

impl RingLog {
    /// Opens (appending to) `path`, creating its directory.
    pub fn open(path: &Path, cap: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            cap,
            size,
            file: Some(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The older generation's path (`hostd.log.1`).
    pub fn rotated_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Appends one line (a newline is added), rotating first if needed.
    pub fn write_line(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.cap {
            self.file = None;
            let _ = fs::rename(&self.path, self.rotated_path());
            self.file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&self.path)
                .ok();
            self.size = 0;
        }
        if let Some(f) = self.file.as_mut() {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if f.write_all(&buf).is_ok() {
                self.size += len;
            }
        }
    }
}

/// Splits a byte stream into lines (without the newline), cutting lines
/// longer than [`MAX_LINE`].
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; returns the lines completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(self.take());
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    out.push(self.take());
                }
            }
        }
        out
    }

    /// The unfinished last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        self.partial.clear();
        line
    }
}

/// Starts a persistent ring: a line marking a new boot, then the lines of
/// `so_far` (this boot's RAM log, older generation first).
fn catch_up(disk: &mut RingLog, so_far: Option<&Path>) {
    disk.write_line(&format!(
        "{} ---- boot (the lines before this one's state disk came from RAM) ----",
        stamp(os::boottime_ms())
    ));
    let Some(path) = so_far else { return };
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    for file in [PathBuf::from(rotated), path.to_path_buf()] {
        if let Ok(text) = fs::read_to_string(&file) {
            for line in text.lines() {
                disk.write_line(line);
            }
        }
    }
}

/// `[   12.345]` for a boot time in milliseconds.
pub fn stamp(ms: u64) -> String {
    format!("[{:>5}.{:03}]", ms / 1000, ms % 1000)
}

/// The running pump.
pub struct LogPump {
    /// Hands the pump thread a persistent ring ([`LogPump::persist_to`]).
    persist: mpsc::Sender<RingLog>,
    writer: File,
    console: File,
    done: mpsc::Receiver<()>,
    handle: Option<JoinHandle<()>>,
    captured: bool,
}

impl LogPump {
    /// Starts the pump: lines written to [`LogPump::writer`] go to `console`
    /// and, when given, to `ring`.
    pub fn start(console: File, mut ring: Option<RingLog>) -> io::Result<Self> {
        let (mut reader, writer) = os::pipe_blocking()?;
        let mut out = console.try_clone()?;
        let (tx, done) = mpsc::channel();
        let (persist, persisted) = mpsc::channel::<RingLog>();
        let handle = std::thread::Builder::new()
            .name("log".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut split = LineSplitter::default();
                let mut buf = [0u8; 4096];
                let mut disk: Option<RingLog> = None;
                let write = |ring: &mut Option<RingLog>, disk: &mut Option<RingLog>, line: &str| {
                    let stamped = format!("{} {line}", stamp(os::boottime_ms()));
                    for r in [ring.as_mut(), disk.as_mut()].into_iter().flatten() {
                        r.write_line(&stamped);
                    }
                };
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    if let Ok(mut new) = persisted.try_recv() {
                        catch_up(&mut new, ring.as_ref().map(RingLog::path));
                        disk = Some(new);
                    }
                    let _ = out.write_all(&buf[..n]);
                    for line in split.push(&buf[..n]) {
                        write(&mut ring, &mut disk, &line);
                    }
                }
                if let Some(line) = split.finish() {
                    write(&mut ring, &mut disk, &line);
                }
                let _ = tx.send(());
            })?;
        Ok(Self {
            persist,
            writer,
            console,
            done,
            handle: Some(handle),
            captured: false,
        })
    }

    /// From the next line on, the log goes to `ring` too (a file on the
    /// state disk); it first gets a boot marker and this boot's lines so far.
    pub fn persist_to(&self, ring: RingLog) {
        let _ = self.persist.send(ring);
    }

    /// The pipe's write end (give children a `try_clone` of it).
    pub fn writer(&self) -> &File {
        &self.writer
    }

    /// Points this process's stdout and stderr at the pipe.
    pub fn capture_stdio(&mut self) -> io::Result<()> {
        self.captured = true;
        os::dup2(self.writer.as_fd(), 1)?;
        os::dup2(self.writer.as_fd(), 2)
    }

    /// Puts stdout/stderr back on the console (if captured), closes our write end and waits
    /// up to `timeout` for the pump to drain what other writers left.
    pub fn stop(mut self, timeout: Duration) {
        if self.captured {
            let _ = os::dup2(self.console.as_fd(), 1);
            let _ = os::dup2(self.console.as_fd(), 2);
        }
        drop(self.writer);
        if self.done.recv_timeout(timeout).is_ok() {
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_rotates_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/hostd.log");
        let mut ring = RingLog::open(&path, 30).unwrap();
        for i in 0..10 {
            ring.write_line(&format!("line {i}"));
        }
        let now = fs::read_to_string(&path).unwrap();
        let old = fs::read_to_string(dir.path().join("log/hostd.log.1")).unwrap();
        assert_eq!(now, "line 8\nline 9\n");
        assert_eq!(old, "line 4\nline 5\nline 6\nline 7\n");
        assert!(fs::metadata(&path).unwrap().len() <= 30);
        // Reopening continues at the existing size.
        let mut ring = RingLog::open(&path, 30).unwrap();
        ring.write_line("again");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "line 8\nline 9\nagain\n"
        );
    }

    #[test]
    fn splitter_handles_partial_and_long_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"ab"), Vec::<String>::new());
        assert_eq!(s.push(b"c\r\nd\ne"), ["abc", "d"]);
        assert_eq!(s.finish().as_deref(), Some("e"));
        assert_eq!(s.finish(), None);
        let long = vec![b'x'; MAX_LINE + 10];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(s.finish().unwrap().len(), 10);
    }

    #[test]
    fn a_persistent_ring_gets_the_boot_so_far_and_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let console = File::create(dir.path().join("console")).unwrap();
        let ram = RingLog::open(&dir.path().join("run/hostd.log"), LOG_CAP).unwrap();
        let pump = LogPump::start(console, Some(ram)).unwrap();
        let mut w = pump.writer().try_clone().unwrap();
        w.write_all(b"before the disk\n").unwrap();
        // Let the pump write it to the RAM ring before the disk comes.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !fs::read_to_string(dir.path().join("run/hostd.log"))
            .unwrap_or_default()
            .contains("before the disk")
        {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        let disk_path = dir.path().join("disk/log/hostd.log");
        std::fs::create_dir_all(disk_path.parent().unwrap()).unwrap();
        std::fs::write(&disk_path, "an older boot\n").unwrap();
        pump.persist_to(RingLog::open(&disk_path, PERSISTENT_LOG_CAP).unwrap());
        w.write_all(b"after the disk\n").unwrap();
        drop(w);
        pump.stop(Duration::from_secs(5));
        let disk = fs::read_to_string(&disk_path).unwrap();
        let lines: Vec<&str> = disk.lines().collect();
        assert_eq!(lines[0], "an older boot", "{disk}");
        assert!(lines[1].contains("---- boot"), "{disk}");
        assert!(lines[2].ends_with("] before the disk"), "{disk}");
        assert!(lines[3].ends_with("] after the disk"), "{disk}");
        assert_eq!(lines.len(), 4, "{disk}");
    }

    #[test]
    fn pump_copies_to_console_and_ring() {
        let dir = tempfile::tempdir().unwrap();
        let console_path = dir.path().join("console");
        let console = File::create(&console_path).unwrap();
        let ring = RingLog::open(&dir.path().join("hostd.log"), LOG_CAP).unwrap();
        let pump = LogPump::start(console, Some(ring)).unwrap();
        let mut w = pump.writer().try_clone().unwrap();
        w.write_all(b"hello\nwor").unwrap();
        w.write_all(b"ld\n").unwrap();
        drop(w);
        pump.stop(Duration::from_secs(5));
        assert_eq!(fs::read_to_string(&console_path).unwrap(), "hello\nworld\n");
        let log = fs::read_to_string(dir.path().join("hostd.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with('[') && lines[0].ends_with("] hello"),
            "{log}"
        );
        assert!(lines[1].ends_with("] world"), "{log}");
    }

    #[test]
    fn stamps() {
        assert_eq!(stamp(1234), "[    1.234]");
        assert_eq!(stamp(0), "[    0.000]");
    }
}
