//! What `hostd pull` shows while the daemon pulls: a bar per blob on a
//! terminal (redrawn in place), a plain line per finished blob otherwise
//! (logs, pipes). The daemon reports progress only when asked
//! ([`Request::PullProgress`]); a thread asks every [`POLL`] on a
//! connection of its own while the pull request waits on another.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use mkhost_shared::control::{self, Request, Response};
use mkhost_shared::images::{BlobProgress, BlobState, PullProgress};

/// How often the view asks the daemon.
const POLL: Duration = Duration::from_millis(200);

/// Width of a bar, in cells.
const BAR: usize = 30;

/// The view of one pull, drawn on `out`.
pub struct PullView {
    /// Draw bars in place (a terminal) or print plain lines.
    terminal: bool,
    /// Lines drawn last time (terminal), to draw over.
    drawn: usize,
    /// What was printed already (plain): the resolved line, finished blobs.
    printed: Vec<String>,
}

impl PullView {
    /// A view for a terminal or for plain lines.
    pub fn new(terminal: bool) -> Self {
        Self {
            terminal,
            drawn: 0,
            printed: Vec::new(),
        }
    }

    /// Shows `progress`.
    pub fn update(&mut self, progress: &PullProgress, out: &mut impl Write) {
        if self.terminal {
            self.redraw(progress, out);
        } else {
            self.print_new_lines(progress, out);
        }
        let _ = out.flush();
    }

    fn redraw(&mut self, progress: &PullProgress, out: &mut impl Write) {
        if self.drawn > 0 {
            // To the start of the first line drawn last time.
            let _ = write!(out, "\x1b[{}F", self.drawn);
        }
        let mut lines = vec![header(progress)];
        lines.extend(progress.blobs.iter().map(bar_line));
        for line in &lines {
            let _ = writeln!(out, "\x1b[2K{line}");
        }
        self.drawn = lines.len();
    }

    fn print_new_lines(&mut self, progress: &PullProgress, out: &mut impl Write) {
        let mut lines = Vec::new();
        if progress.manifest_digest.is_some() {
            lines.push(header(progress));
        }
        lines.extend(
            progress
                .blobs
                .iter()
                .filter(|b| b.state != BlobState::Downloading)
                .map(|b| format!("{}: {}", short(&b.digest), state_text(b))),
        );
        for line in lines {
            if !self.printed.contains(&line) {
                let _ = writeln!(out, "{line}");
                self.printed.push(line);
            }
        }
    }
}

fn header(progress: &PullProgress) -> String {
    match &progress.manifest_digest {
        Some(digest) => format!(
            "{} ({digest}): {}",
            progress.reference,
            mib(progress.total_bytes)
        ),
        None => format!("{}: resolving", progress.reference),
    }
}

fn bar_line(blob: &BlobProgress) -> String {
    let filled = if blob.state == BlobState::Downloading && blob.size > 0 {
        let ratio = blob.done.min(blob.size) as f64 / blob.size as f64;
        (ratio * BAR as f64) as usize
    } else {
        BAR
    };
    format!(
        "{} [{}{}] {}",
        short(&blob.digest),
        "#".repeat(filled),
        "-".repeat(BAR - filled),
        state_text(blob)
    )
}

fn state_text(blob: &BlobProgress) -> String {
    match blob.state {
        BlobState::Downloading => format!("{} / {}", mib(blob.done), mib(blob.size)),
        BlobState::Done => format!("done, {}", mib(blob.size)),
        BlobState::Present => "already present".into(),
    }
}

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A thread drawing the daemon's progress of the pull of `reference` (in
/// canonical form) on stderr until [`Watcher::stop`].
pub struct Watcher {
    /// Dropped (or sent on) to stop the thread at once, mid-wait.
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Watcher {
    /// Starts watching.
    pub fn start(socket: &Path, reference: String, terminal: bool) -> Option<Watcher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let socket: PathBuf = socket.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("pull-progress".into())
            .spawn(move || {
                let mut view = PullView::new(terminal);
                let mut show = |only_running: bool| {
                    let asked =
                        control::request(&socket, &Request::PullProgress, Duration::from_secs(5));
                    if let Ok(Response::PullProgress(pulls)) = asked {
                        let ours = pulls
                            .iter()
                            .find(|p| p.reference == reference && !(only_running && p.finished));
                        if let Some(ours) = ours {
                            view.update(ours, &mut std::io::stderr());
                        }
                    }
                };
                // A finished pull of the same image is an earlier one.
                show(true);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                    show(true);
                }
                // The daemon keeps the last pull: ours, now that it answered.
                show(false);
            })
            .ok()?;
        Some(Watcher { stop, thread })
    }

    /// Stops watching, after showing how the pull ended.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(done: u64, state: BlobState) -> PullProgress {
        PullProgress {
            reference: "docker.io/library/a:1".into(),
            manifest_digest: Some(format!("sha256:{}", "m".repeat(64))),
            total_bytes: 4 << 20,
            blobs: vec![
                BlobProgress {
                    digest: format!("sha256:{}", "a".repeat(64)),
                    size: 0,
                    done: 0,
                    state: BlobState::Present,
                },
                BlobProgress {
                    digest: format!("sha256:{}", "b".repeat(64)),
                    size: 2 << 20,
                    done,
                    state,
                },
            ],
            finished: false,
        }
    }

    #[test]
    fn plain_lines_say_each_finished_blob_once() {
        let mut view = PullView::new(false);
        let mut out = Vec::new();
        view.update(&progress(1 << 20, BlobState::Downloading), &mut out);
        view.update(&progress(1 << 20, BlobState::Downloading), &mut out);
        view.update(&progress(2 << 20, BlobState::Done), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "docker.io/library/a:1 (sha256:{}): 4.0 MiB\nsha256:aaaaaaaaaaaa: already present\nsha256:bbbbbbbbbbbb: done, 2.0 MiB\n",
                "m".repeat(64)
            )
        );
    }

    #[test]
    fn a_terminal_gets_bars_redrawn_in_place() {
        let mut view = PullView::new(true);
        let mut out = Vec::new();
        view.update(&progress(1 << 20, BlobState::Downloading), &mut out);
        let first = String::from_utf8(out.clone()).unwrap();
        assert!(!first.contains("\x1b[3F"), "{first:?}");
        assert!(
            first.contains(&format!(
                "[{}{}] 1.0 MiB / 2.0 MiB",
                "#".repeat(15),
                "-".repeat(15)
            )),
            "{first:?}"
        );
        out.clear();
        view.update(&progress(2 << 20, BlobState::Done), &mut out);
        let last = String::from_utf8(out).unwrap();
        assert!(last.starts_with("\x1b[3F"), "{last:?}");
        assert!(
            last.contains(&format!("[{}] done, 2.0 MiB", "#".repeat(30))),
            "{last:?}"
        );
    }
}
