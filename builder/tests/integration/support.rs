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

/// Like [`build`], but a build still running after `limit` is killed and
/// the test fails (for inputs that could make a careless reader hang).
pub fn build_within(profile: &str, out: &Path, extra: &[&str], limit: Duration) -> Output {
    let mut child = mkhost()
        .args(["build", "--profile", profile, "--out"])
        .arg(out)
        .arg("--lockfile")
        .arg(out.join("mkhost.lock"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mkhost");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "mkhost build of {profile} still running after {limit:?}\n{}",
                text(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
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
    /// The console's input (interactive guests only).
    stdin: Option<std::process::ChildStdin>,
    /// The human monitor's unix socket (interactive guests only).
    monitor: Option<PathBuf>,
    /// Counter for the markers of [`Guest::run`].
    commands: u32,
}

impl Guest {
    /// Starts `qemu-system-x86_64` (TCG) with the given extra arguments.
    pub fn start(args: &[String]) -> Guest {
        Self::spawn(args, None)
    }

    /// Like [`Guest::start`], but the console takes input ([`Guest::send_line`],
    /// [`Guest::run`]) and the QEMU monitor listens on a unix socket in
    /// `scratch_dir` ([`Guest::monitor`]).
    pub fn start_interactive(args: &[String], scratch_dir: &Path) -> Guest {
        Self::spawn(args, Some(scratch_dir.join("monitor.sock")))
    }

    fn spawn(args: &[String], monitor: Option<PathBuf>) -> Guest {
        let monitor_arg = match &monitor {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                format!("unix:{},server,nowait", path.display())
            }
            None => "none".to_string(),
        };
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
                &monitor_arg,
                "-no-reboot",
                "-nodefaults",
            ])
            .args(args)
            .stdin(if monitor.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 missing: run ci/install-deps");
        let stdin = child.stdin.take();
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
            stdin,
            monitor,
            commands: 0,
        }
    }

    /// Types `line` and Enter on the serial console.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .expect("send_line needs Guest::start_interactive");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the QEMU console");
    }

    /// Runs `command` in the guest's shell and returns the lines it printed.
    /// The output is framed by markers the shell computes (`$((n+0))`), so the
    /// echo of the typed line never matches them.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Vec<String> {
        self.commands += 1;
        let n = self.commands;
        let begin = format!("@B{n}@");
        let end = format!("@E{n}@");
        self.send_line(&format!(
            "echo @B$(({n}+0))@; {command}; echo @E$(({n}+0))@"
        ));
        self.wait_for(&begin, timeout);
        let mut out = Vec::new();
        loop {
            let line = self.next_line(timeout, &end);
            if line.contains(&end) {
                return out;
            }
            out.push(line);
        }
    }

    /// Sends one command to the QEMU human monitor and returns its answer.
    pub fn monitor(&mut self, command: &str) -> String {
        use std::io::{Read, Write};
        let path = self
            .monitor
            .clone()
            .expect("monitor needs Guest::start_interactive");
        let mut sock = std::os::unix::net::UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("connect to the QEMU monitor {}: {e}", path.display()));
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let mut read_until_prompt = |sock: &mut std::os::unix::net::UnixStream,
                                     answer: &mut Vec<u8>| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        if String::from_utf8_lossy(answer).contains("(qemu)") {
                            break;
                        }
                    }
                    Err(_) => {}
                }
            }
        };
        read_until_prompt(&mut sock, &mut answer);
        answer.clear();
        sock.write_all(format!("{command}\n").as_bytes()).unwrap();
        read_until_prompt(&mut sock, &mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Waits up to `timeout` for QEMU to exit on its own, collecting the
    /// console meanwhile; panics with the log if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.log.push(line);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF; take what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(line);
                }
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "QEMU still running after {timeout:?}; console:\n{}",
                    self.log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The next console line; panics (naming `what`) on timeout or exit.
    fn next_line(&mut self, timeout: Duration, what: &str) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.log.push(line.clone());
                line
            }
            Err(e) => panic!(
                "no console line while waiting for {what:?} ({e}); console:\n{}",
                self.log.join("\n")
            ),
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

/// Runs a standard tool, fails the test with its output unless it succeeds,
/// and answers its stdout.
pub fn run(cmd: &mut Command) -> String {
    let output = cmd.output().expect("tool missing: run ci/install-deps");
    assert!(output.status.success(), "{:?}\n{}", cmd, text(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Parses `key=value` pairs after the ready marker.
pub fn ready_fields(line: &str) -> std::collections::BTreeMap<String, String> {
    let rest = &line[line.find("mkhost: ready").expect("ready line") + "mkhost: ready".len()..];
    rest.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The kernel command line of a build's PXE set (from its boot.ipxe).
pub fn pxe_cmdline(dir: &Path) -> String {
    let ipxe = std::fs::read_to_string(dir.join("pxe/boot.ipxe")).unwrap();
    ipxe.lines()
        .find_map(|l| l.strip_prefix("kernel vmlinuz initrd=initramfs.img "))
        .expect("kernel line in boot.ipxe")
        .to_string()
}

/// QEMU arguments booting a build's PXE kernel and initramfs directly, with
/// `extra_cmdline` appended to the profile's command line.
pub fn pxe_args(dir: &Path, ram_mib: &str, extra_cmdline: &str) -> Vec<String> {
    vec![
        "-m".into(),
        ram_mib.into(),
        "-kernel".into(),
        dir.join("pxe/vmlinuz").display().to_string(),
        "-initrd".into(),
        dir.join("pxe/initramfs.img").display().to_string(),
        "-append".into(),
        format!("{} {extra_cmdline}", pxe_cmdline(dir))
            .trim_end()
            .to_string(),
    ]
}

/// QEMU arguments booting a GPT image under OVMF from a virtio disk (never
/// written: snapshot=on).
pub fn uefi_args(img: &Path, ram_mib: &str) -> Vec<String> {
    let mut args = ovmf_with_drive(img, ram_mib, "stick");
    args.extend(["-device".into(), "virtio-blk-pci,drive=stick".into()]);
    args
}

/// QEMU arguments booting a GPT image under OVMF from a USB stick, as
/// `mkhost run --usb` attaches it: `qemu-xhci` (id `xhci`) with a
/// `usb-storage` device (id `stick`) that enumerates only once the guest
/// loaded `xhci_pci` (never written: snapshot=on).
pub fn usb_args(img: &Path, ram_mib: &str) -> Vec<String> {
    let mut args = ovmf_with_drive(img, ram_mib, "stickdrive");
    args.extend([
        "-device".into(),
        "qemu-xhci,id=xhci".into(),
        "-device".into(),
        "usb-storage,id=stick,bus=xhci.0,drive=stickdrive,removable=on,bootindex=0".into(),
    ]);
    args
}

/// RAM, OVMF, and `img` as drive `drive_id` (snapshot=on), attached to no
/// device yet.
fn ovmf_with_drive(img: &Path, ram_mib: &str, drive_id: &str) -> Vec<String> {
    vec![
        "-m".into(),
        ram_mib.into(),
        "-bios".into(),
        ovmf().display().to_string(),
        "-drive".into(),
        format!(
            "if=none,id={drive_id},format=raw,snapshot=on,file={}",
            img.display()
        ),
    ]
}

/// Copies `image` into `work/stick.img` and puts `host_toml` on its ESP as
/// `mkhost/host.toml` (with mtools, at the ESP's 1 MiB offset).
pub fn stick_with_host_toml(image: &Path, work: &Path, host_toml: &str) -> PathBuf {
    let img = work.join("stick.img");
    std::fs::copy(image, &img).unwrap();
    let toml = work.join("host.toml");
    std::fs::write(&toml, host_toml).unwrap();
    let esp = format!("{}@@1M", img.display());
    // The directory may already be there (the image ships a template).
    let _ = Command::new("mmd").args(["-i", &esp, "::/mkhost"]).output();
    let out = Command::new("mcopy")
        .args(["-o", "-i", &esp])
        .arg(&toml)
        .arg("::/mkhost/host.toml")
        .output()
        .expect("mcopy missing: run ci/install-deps (mtools)");
    assert!(out.status.success(), "{out:?}");
    img
}

/// Writes `NAME.toml` (extending `parent`, a shipped profile file name, plus
/// `body`) into `work`, builds it into `work/out`, and returns `work/out/NAME`.
pub fn build_custom(work: &Path, name: &str, parent: &str, body: &str) -> PathBuf {
    let profile = work.join(format!("{name}.toml"));
    std::fs::write(
        &profile,
        format!(
            "extends = \"{}\"\n{body}",
            workspace().join("profiles").join(parent).display()
        ),
    )
    .unwrap();
    let out = work.join("out");
    let output = build(profile.to_str().unwrap(), &out, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output));
    out.join(name)
}

/// Unpacks a build's zstd initramfs with the standard tools: `zstd -d` into
/// `work/initramfs.cpio`, then `cpio -i` of `files` (all when empty) into
/// `work/root`. Returns the cpio file and the root directory.
pub fn unpack_initramfs(initrd: &Path, work: &Path, files: &[&str]) -> (PathBuf, PathBuf) {
    let run = |cmd: &mut Command| {
        let output = cmd.output().expect("tool missing: run ci/install-deps");
        assert!(output.status.success(), "{:?}\n{}", cmd, text(&output));
    };
    let cpio_path = work.join("initramfs.cpio");
    run(Command::new("zstd")
        .args(["-q", "-d", "-f", "-o"])
        .arg(&cpio_path)
        .arg(initrd));
    let root = work.join("root");
    std::fs::create_dir_all(&root).unwrap();
    run(Command::new("cpio")
        .args(["-i", "-d", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&cpio_path)
        .args(files)
        .current_dir(&root));
    (cpio_path, root)
}
