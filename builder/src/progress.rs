//! Progress reporting: an indicatif spinner or bar per stage on a terminal, plain
//! `mkhost: ...` lines otherwise, nothing with `--quiet`. Output goes to stderr.
//!
//! Image pulls report per blob ([`Stage::blobs`]): a bar per blob being
//! downloaded under the stage's spinner on a terminal, one line per blob
//! done otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mkhost_registry::Progress as PullEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Plain,
    Bars,
}

pub struct Progress {
    mode: Mode,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        };
        Progress { mode }
    }

    /// Starts a stage; finish it with [`Stage::finish`].
    pub fn stage(&self, name: &str) -> Stage {
        let bar = match self.mode {
            Mode::Bars => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
            Mode::Plain => {
                eprintln!("mkhost: {name} ...");
                None
            }
            Mode::Quiet => None,
        };
        Stage {
            name: name.to_string(),
            started: Instant::now(),
            bar,
            mode: self.mode,
        }
    }

    /// A line that is not a stage (warnings, summaries).
    pub fn line(&self, text: &str) {
        if self.mode != Mode::Quiet {
            eprintln!("{text}");
        }
    }
}

pub struct Stage {
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
    mode: Mode,
}

impl Stage {
    /// Switches the stage to a byte bar and sets its position.
    pub fn set_position(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if bar.length() != Some(total) {
                bar.set_length(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.cyan} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {elapsed:.dim}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
            }
            bar.set_position(done);
        }
    }

    /// Per-blob progress of a pull within this stage; `image` (the
    /// reference being pulled) prefixes the plain lines.
    pub fn blobs(&self, image: &str) -> BlobProgress {
        let multi = self.bar.as_ref().map(|bar| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            multi.add(bar.clone());
            multi
        });
        BlobProgress {
            mode: self.mode,
            image: image.to_owned(),
            multi,
            blobs: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn finish(self, detail: &str) {
        let elapsed = self.started.elapsed();
        let line = format!(
            "{} {}: {} ({:.2} s)",
            if self.mode == Mode::Bars {
                "✓"
            } else {
                "mkhost:"
            },
            self.name,
            detail,
            elapsed.as_secs_f64()
        );
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.finish_and_clear(),
            (None, Mode::Quiet) => return,
            (None, _) => {}
        }
        eprintln!("{line}");
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The blobs of one pull: a bar each on a terminal, a line per blob done
/// in plain mode. Fed from the downloading threads.
pub struct BlobProgress {
    mode: Mode,
    image: String,
    multi: Option<MultiProgress>,
    /// Blobs seen: their size and bar.
    blobs: Mutex<BTreeMap<String, (u64, Option<ProgressBar>)>>,
}

impl BlobProgress {
    /// Takes one event of the registry client.
    pub fn event(&self, event: PullEvent) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            PullEvent::Resolved { .. } => {}
            PullEvent::BlobStarted { digest, size: len } => {
                let bar = self.multi.as_ref().map(|multi| {
                    let bar = multi.add(ProgressBar::new(len));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "  {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_message(short(&digest).to_owned());
                    bar
                });
                blobs.insert(digest, (len, bar));
            }
            PullEvent::BlobBytes { digest, done, .. } => {
                if let Some((_, Some(bar))) = blobs.get(&digest) {
                    bar.set_position(done);
                }
            }
            PullEvent::BlobDone { digest, reused } => {
                let (len, bar) = blobs.remove(&digest).unwrap_or((0, None));
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                if self.mode == Mode::Plain {
                    let how = if reused {
                        "already in the cache"
                    } else {
                        "downloaded"
                    };
                    let len = if reused {
                        String::new()
                    } else {
                        format!(" ({})", size(len))
                    };
                    eprintln!("mkhost: {}: blob {}{len} {how}", self.image, short(&digest));
                }
            }
        }
    }
}

impl Drop for BlobProgress {
    fn drop(&mut self) {
        let blobs = self.blobs.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, bar) in blobs.values() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        }
    }
}

/// `sha256:` and the first 12 hex digits, as docker shows blobs.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// A byte count for people: `12.3 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(24 * 1024 * 1024), "24.0 MiB");
    }
}
