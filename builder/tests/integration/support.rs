//! Shared by the integration tests: running the real `mkhost` binary, building a
//! profile once per test binary, and booting artifacts in QEMU.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The fixed SOURCE_DATE_EPOCH the tests build with.
pub const EPOCH: &str = "1700000000";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A scratch directory for this test process, kept for inspection on failure.
pub fn scratch(name: &str) -> PathBuf {
    let dir = workspace()
        .join("target/test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn mkhost() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mkhost"));
    cmd.current_dir(workspace())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdin(Stdio::null());
    cmd
}

/// Runs `mkhost build` with the test's own out dir and lock file.
pub fn build(profile: &str, out: &Path, extra: &[&str]) -> Output {
    let lockfile = out.join("mkhost.lock");
    let output = mkhost()
        .args(["build", "--profile", profile, "--out"])
        .arg(out)
        .arg("--lockfile")
        .arg(&lockfile)
        .args(extra)
        .output()
        .expect("run mkhost");
    output
}

pub fn text(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Builds `profile` once per test binary; returns `out/<profile>`.
pub fn built(profile: &'static str) -> &'static Path {
    static QEMU: OnceLock<PathBuf> = OnceLock::new();
    static RACK: OnceLock<PathBuf> = OnceLock::new();
    let cell = match profile {
        "qemu" => &QEMU,
        "rack" => &RACK,
        other => panic!("no shared build for {other}"),
    };
    cell.get_or_init(|| {
        let out = scratch(&format!("built-{profile}"));
        let output = build(profile, &out, &["--quiet"]);
        assert!(output.status.success(), "{}", text(&output));
        out.join(profile)
    })
}

pub fn ovmf() -> PathBuf {
    let path = PathBuf::from("/usr/share/ovmf/OVMF.fd");
    assert!(
        path.is_file(),
        "{} missing: run ci/install-deps (package ovmf)",
        path.display()
    );
    path
}

/// A QEMU guest whose serial console is read line by line.
pub struct Guest {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Guest {
    /// Starts `qemu-system-x86_64` (TCG) with the given extra arguments.
    pub fn start(args: &[String]) -> Guest {
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-smp",
                "1",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-no-reboot",
                "-nodefaults",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 missing: run ci/install-deps");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(stdout);
            for line in reader.split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).replace('\r', "");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Guest {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a console line containing `needle`; panics with the log on timeout
    /// or when QEMU exits first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "QEMU exited before {needle:?}; console:\n{}",
                        self.log.join("\n")
                    )
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {needle:?} within {timeout:?}; console:\n{}",
                    self.log.join("\n")
                );
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `key=value` pairs after the ready marker.
pub fn ready_fields(line: &str) -> std::collections::BTreeMap<String, String> {
    let rest = &line[line.find("mkhost: ready").expect("ready line") + "mkhost: ready".len()..];
    rest.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
