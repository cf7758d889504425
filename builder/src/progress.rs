//! Progress reporting: an indicatif spinner or bar per stage on a terminal, plain
//! `mkhost: ...` lines otherwise, nothing with `--quiet`. Output goes to stderr.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
