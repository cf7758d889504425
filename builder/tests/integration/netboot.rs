//! Netboot tests: `mkhost serve` as a child process on 127.0.0.1 and `mkhost run`.
//!
//! QEMU's own iPXE ROM (SeaBIOS, virtio-net, user networking whose DHCP hands out
//! `http://10.0.2.2:PORT/boot.ipxe`) netboots two machines from `mkhost serve
//! --profile lab` and each must come up with the hostname its MAC is given in a
//! machines file; `mkhost run --uki` boots the UKI alone under OVMF. The server's
//! HTTP behaviour (ranges, HEAD, 404s for everything outside the set, 403 for
//! refused machines, the log) and its refusals at start (tampered artifacts, bad
//! machine tables, a busy port) are checked against a small hand-made output
//! directory over raw TCP, so the paths reach the server exactly as written.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mkhost::hashing::sha256_hex;

use crate::support::{built, mkhost, ready_fields, scratch, text, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Starting `mkhost serve` may include a build (and `cargo build` of init/hostd).
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// A running `mkhost serve`, its stderr read line by line (the Secure Boot
/// guest test serves with it too); killed on drop.
pub(crate) struct Serve {
    child: Child,
    pub(crate) addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Serve {
    /// Starts `mkhost serve --listen 127.0.0.1:0 ARGS` and waits for its
    /// "listening on" line; `Err` with everything it printed if it exits first.
    pub(crate) fn start(args: &[&str]) -> Result<Serve, String> {
        let mut child = mkhost()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mkhost serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            lines,
            log: Vec::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            match serve.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    serve.log.push(line.clone());
                    if let Some(addr) = line.strip_prefix("mkhost serve: listening on http://") {
                        serve.addr = addr.trim().parse().unwrap();
                        return Ok(serve);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = serve.child.wait().unwrap();
                    return Err(format!("exit {status}\n{}", serve.log.join("\n")));
                }
            }
        }
        panic!("mkhost serve did not start:\n{}", serve.log.join("\n"));
    }

    /// Everything printed so far, after giving the log a moment to catch up.
    fn log_text(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    /// Sends `signal` (e.g. "INT", "TERM") and waits for the exit.
    fn stop_with(&mut self, signal: &str) -> (ExitStatus, String, Duration) {
        let started = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let elapsed = started.elapsed();
                return (status, self.log_text(), elapsed);
            }
            assert!(
                Instant::now() < deadline,
                "mkhost serve ignored SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake kernel of [`fake_out`]: 200 KB of a pattern, so ranges can be compared.
fn fake_kernel() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 253) as u8).collect()
}

/// A small, complete output directory `OUT/<name>` with a valid SHA256SUMS.
fn fake_out(out: &Path, name: &str) -> PathBuf {
    let dir = out.join(name);
    std::fs::create_dir_all(dir.join("pxe")).unwrap();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("pxe/vmlinuz".into(), fake_kernel()),
        ("pxe/initramfs.img".into(), b"initramfs".to_vec()),
        ("pxe/boot.ipxe".into(), b"#!ipxe\n".to_vec()),
        (format!("mkhost-{name}.efi"), b"MZ uki".to_vec()),
        (format!("mkhost-{name}.img"), b"disk".to_vec()),
        (
            "manifest.json".into(),
            format!(
                r#"{{"profile":{{"name":"{name}","hostname":"mkhost-{name}","cmdline":"console=ttyS0,115200 quiet panic=-1","min_ram_mib":256}}}}"#
            )
            .into_bytes(),
        ),
    ];
    let mut sums = String::new();
    for (rel, data) in &files {
        std::fs::write(dir.join(rel), data).unwrap();
        sums.push_str(&format!("{}  {rel}\n", sha256_hex(data)));
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
    dir
}

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One request over raw TCP, exactly as written (no client-side path cleanup).
fn request(addr: SocketAddr, method: &str, target: &str, extra: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Response {
        status,
        head,
        body: all[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, "")
}

fn arg(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn serve_ranges_head_and_nothing_outside_the_set() {
    let out = scratch("netboot-http");
    let dir = fake_out(&out, "lab");
    // Planted symlinks out of the output directory must not be followed.
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("pxe/etc")).unwrap();
    let mut serve = Serve::start(&["--profile", "lab", "--no-build", "--out", &arg(&out)]).unwrap();
    let addr = serve.addr;
    let kernel = fake_kernel();

    let r = get(addr, "/vmlinuz");
    assert_eq!((r.status, r.body == kernel), (200, true));
    assert_eq!(r.header("content-length").as_deref(), Some("200000"));
    for (range, start, end) in [
        ("bytes=0-0", 0, 1),
        ("bytes=1000-65535", 1000, 65536),
        ("bytes=199990-", 199_990, 200_000),
        ("bytes=-7", 199_993, 200_000),
        ("bytes=150000-999999", 150_000, 200_000),
    ] {
        let r = request(addr, "GET", "/pxe/vmlinuz", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &kernel[start..end], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{}/200000", end - 1)),
            "{range}"
        );
    }
    for range in ["bytes=200000-", "bytes=10-5", "bytes=abc"] {
        let r = request(addr, "GET", "/vmlinuz", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range").as_deref(), Some("bytes */200000"));
    }

    let r = request(addr, "HEAD", "/mkhost-lab.efi", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").as_deref(), Some("6"));
    assert_eq!(r.header("content-type").as_deref(), Some("application/efi"));
    assert!(r.body.is_empty());
    let r = request(addr, "HEAD", "/initramfs.img", "Range: bytes=2-4\r\n");
    assert_eq!(
        (r.status, r.header("content-length")),
        (206, Some("3".into()))
    );
    assert!(r.body.is_empty());
    assert_eq!(get(addr, "/pxe/initramfs.img").body, b"initramfs");
    assert_eq!(get(addr, "/manifest.json").status, 200);

    for target in [
        "/../etc/passwd",
        "/../../../../etc/passwd",
        "/pxe/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/..%2f..%2fetc%2fpasswd",
        "/etc/passwd",
        "//etc/passwd",
        "http://evil/etc/passwd",
        "/passwd",
        "/pxe/etc/passwd",
        "/pxe/etc",
        "/mkhost-lab.img",
        "/manifest.json/",
        "/SHA256SUMS",
        "/",
    ] {
        let r = get(addr, target);
        assert_eq!(r.status, 404, "{target}");
        assert_eq!(r.body, b"not found\n", "{target}");
    }
    assert_eq!(get(addr, "/%00").status, 400);
    assert_eq!(request(addr, "DELETE", "/vmlinuz", "").status, 405);

    let (status, log, took) = serve.stop_with("INT");
    assert!(status.success(), "{log}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(log.contains("mkhost serve: stopped after"), "{log}");
    // One line per request, with client, MAC, request, status and bytes.
    let requests: Vec<&str> = log.lines().filter(|l| l.starts_with("client=")).collect();
    assert_eq!(requests.len(), 31, "{log}");
    assert!(
        requests
            .iter()
            .any(|l| l.contains("mac=- request=\"GET /pxe/vmlinuz\" status=206 bytes=64536 ")),
        "{log}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("request=\"GET /../etc/passwd\" status=404 bytes=10 ")),
        "{log}"
    );
}

#[test]
fn serve_boot_scripts_per_mac_and_refusal() {
    let out = scratch("netboot-refuse");
    let profile = out.join("rack-a.toml");
    std::fs::write(
        &profile,
        "extends = \"lab\"\n[netboot]\nunknown_machines = \"refuse\"\n\
         [machines.\"52:54:00:00:00:0a\"]\nhostname = \"node-a\"\ncmdline = \"mkhost.ip=eth0:10.0.0.10/24:10.0.0.1\"\n",
    )
    .unwrap();
    fake_out(&out, "rack-a");
    let mut serve = Serve::start(&[
        "--profile",
        &arg(&profile),
        "--no-build",
        "--out",
        &arg(&out),
    ])
    .unwrap();
    let addr = serve.addr;
    assert!(serve
        .log_text()
        .contains("machine table: 1 listed; other machines are refused (403)"));

    let r = get(addr, "/boot.ipxe");
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        format!("#!ipxe\n# mkhost rack-a: ask again with this machine's MAC address\nchain http://{addr}/boot.ipxe?mac=${{netX/mac}}\n")
    );
    let r = get(addr, "/boot.ipxe?mac=52-54-00-00-00-0A");
    assert_eq!(r.status, 200);
    let script = String::from_utf8(r.body).unwrap();
    assert_eq!(
        script,
        format!(
            "#!ipxe\n# mkhost rack-a for 52:54:00:00:00:0a: node-a (listed machine)\n\
             kernel --name vmlinuz http://{addr}/vmlinuz?mac=52:54:00:00:00:0a initrd=initramfs.img console=ttyS0,115200 quiet panic=-1 mkhost.hostname=node-a mkhost.ip=eth0:10.0.0.10/24:10.0.0.1\n\
             initrd --name initramfs.img http://{addr}/initramfs.img?mac=52:54:00:00:00:0a\n\
             boot\n"
        )
    );
    let r = get(addr, "/boot.ipxe?mac=52:54:00:00:00:0b");
    assert_eq!(r.status, 403);
    assert!(
        String::from_utf8_lossy(&r.body).contains("52:54:00:00:00:0b is not in the machine table")
    );
    assert_eq!(get(addr, "/boot.ipxe?mac=garbage").status, 400);

    let (status, log, _) = serve.stop_with("TERM");
    assert!(status.success(), "{log}");
    assert!(
        log.contains(
            "mac=52:54:00:00:00:0b request=\"GET /boot.ipxe?mac=52:54:00:00:00:0b\" status=403"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "mac=52:54:00:00:00:0a request=\"GET /boot.ipxe?mac=52-54-00-00-00-0A\" status=200"
        ),
        "{log}"
    );
}

#[test]
fn serve_refuses_to_start_on_bad_input() {
    let out = scratch("netboot-refusals");
    let dir = fake_out(&out, "lab");
    let out_arg = arg(&out);
    let start_err = |extra: &[&str]| -> String {
        let output = mkhost()
            .args(["serve", "--profile", "lab", "--no-build", "--out", &out_arg])
            .args(extra)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    // Duplicate and malformed MACs in a machines file, with file:line:column.
    let machines = out.join("machines.toml");
    std::fs::write(
        &machines,
        "[machines.\"52:54:00:00:00:01\"]\nhostname = \"a\"\n[machines.\"52-54-00-00-00-01\"]\nhostname = \"b\"\n",
    )
    .unwrap();
    let err = start_err(&["--listen", "127.0.0.1:0", "--machines", &arg(&machines)]);
    assert!(
        err.contains(&format!("{}:3:", machines.display())) && err.contains("listed twice"),
        "{err}"
    );
    std::fs::write(
        &machines,
        "[machines.\"52:54:00:00:01\"]\nhostname = \"a\"\n",
    )
    .unwrap();
    let err = start_err(&["--listen", "127.0.0.1:0", "--machines", &arg(&machines)]);
    assert!(err.contains("is not a MAC address"), "{err}");

    // A port already in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let err = start_err(&["--listen", &busy]);
    assert!(
        err.contains(&busy) && err.contains("already in use") && err.contains("--listen"),
        "{err}"
    );

    // A tampered artifact, then a missing one: named, and nothing is served.
    let initrd = dir.join("pxe/initramfs.img");
    std::fs::write(&initrd, b"initramfs, modified").unwrap();
    let err = start_err(&["--listen", "127.0.0.1:0"]);
    assert!(
        err.contains(&initrd.display().to_string()) && err.contains("does not match SHA256SUMS"),
        "{err}"
    );
    std::fs::remove_file(&initrd).unwrap();
    let err = start_err(&["--listen", "127.0.0.1:0"]);
    assert!(err.contains(&initrd.display().to_string()), "{err}");
    // A listed file replaced by a symlink to identical content elsewhere.
    let copy = out.join("initramfs-copy");
    std::fs::write(&copy, b"initramfs").unwrap();
    std::os::unix::fs::symlink(&copy, &initrd).unwrap();
    let err = start_err(&["--listen", "127.0.0.1:0"]);
    assert!(
        err.contains(&initrd.display().to_string()) && err.contains("symlink"),
        "{err}"
    );
    std::fs::remove_file(dir.join("SHA256SUMS")).unwrap();
    let err = start_err(&["--listen", "127.0.0.1:0"]);
    assert!(
        err.contains("no SHA256SUMS") && err.contains("--no-build"),
        "{err}"
    );

    // `mkhost run` names the missing firmware's package.
    let run_uki = || {
        mkhost()
            .args([
                "run",
                "--profile",
                "lab",
                "--uki",
                "--no-build",
                "--out",
                &out_arg,
            ])
            .args(["--ovmf", "/nonexistent/OVMF.fd"])
            .output()
            .unwrap()
    };
    let output = run_uki();
    assert!(!output.status.success());
    assert!(text(&output).contains("no SHA256SUMS"), "{}", text(&output));
    std::fs::remove_file(&initrd).unwrap();
    fake_out(&out, "lab");
    let output = run_uki();
    assert!(!output.status.success());
    assert!(
        text(&output).contains("apt-get install ovmf"),
        "{}",
        text(&output)
    );
}

#[test]
fn serve_builds_first_then_finds_the_build_up_to_date() {
    let out = scratch("netboot-fresh");
    let lockfile = arg(&out.join("mkhost.lock"));
    let args = [
        "--profile",
        "lab",
        "--quiet",
        "--out",
        &arg(&out),
        "--lockfile",
        &lockfile,
    ];
    let mut serve = Serve::start(&args).unwrap();
    let log = serve.log_text();
    assert!(log.contains("(there was no complete build)"), "{log}");
    assert!(log.contains("verified: 6 files match SHA256SUMS"), "{log}");
    let (status, log, _) = serve.stop_with("TERM");
    assert!(status.success(), "{log}");
    let mut serve = Serve::start(&args).unwrap();
    let log = serve.log_text();
    assert!(log.contains("is up to date (rebuilt in"), "{log}");
}

/// Boots one guest from the server with QEMU's iPXE ROM; returns its ready line.
fn netboot(port: u16, mac: &str) -> Guest {
    Guest::start(&[
        "-m".into(),
        "256".into(),
        "-netdev".into(),
        format!("user,id=n0,bootfile=http://10.0.2.2:{port}/boot.ipxe"),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac}"),
    ])
}

#[test]
fn ipxe_netboots_two_machines_with_their_hostnames() {
    let out = scratch("netboot-ipxe");
    let machines = out.join("machines.toml");
    std::fs::write(
        &machines,
        "# two lab machines\n\
         [machines.\"52:54:00:4d:48:01\"]\nhostname = \"lab-node-1\"\n\n\
         [machines.\"52-54-00-4D-48-02\"]\nhostname = \"lab-node-2\"\ncmdline = \"loglevel=7\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut serve = Serve::start(&[
        "--profile",
        "lab",
        "--quiet",
        "--out",
        &arg(&out),
        "--lockfile",
        &arg(&out.join("mkhost.lock")),
        "--machines",
        &arg(&machines),
    ])
    .unwrap_or_else(|log| panic!("mkhost serve did not start: {log}"));
    let built = started.elapsed();
    let port = serve.addr.port();

    let boot_started = Instant::now();
    let mut one = netboot(port, "52:54:00:4d:48:01");
    let mut two = netboot(port, "52:54:00:4d:48:02");
    let line_one = one.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let line_two = two.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let booted = boot_started.elapsed();
    eprintln!(
        "netboot: serve started (build included) in {built:?}, two guests ready in {booted:?}"
    );
    for (line, hostname) in [(&line_one, "lab-node-1"), (&line_two, "lab-node-2")] {
        let fields = ready_fields(line);
        assert_eq!(
            fields.get("hostname").map(String::as_str),
            Some(hostname),
            "{line}"
        );
        assert_eq!(
            fields.get("profile").map(String::as_str),
            Some("lab"),
            "{line}"
        );
    }
    // The machine's own arguments reach its kernel (loglevel=7 also lifts the
    // profile's `quiet`, so the kernel prints its command line).
    assert!(
        two.log.iter().any(|l| l.contains("Kernel command line:")
            && l.contains("mkhost.hostname=lab-node-2 loglevel=7")),
        "{}",
        two.log.join("\n")
    );
    drop(one);
    drop(two);

    let (status, log, _) = serve.stop_with("TERM");
    assert!(status.success(), "{log}");
    for mac in ["52:54:00:4d:48:01", "52:54:00:4d:48:02"] {
        for path in ["/boot.ipxe?mac=", "/vmlinuz?mac=", "/initramfs.img?mac="] {
            assert!(
                log.lines()
                    .any(|l| l.contains(&format!("mac={mac} request=\"GET {path}"))
                        && l.contains("status=200")),
                "no {path} fetch by {mac}:\n{log}"
            );
        }
    }
    assert!(
        log.lines()
            .filter(|l| l.contains("request=\"GET /boot.ipxe\" status=200"))
            .count()
            == 2,
        "each machine first fetches the plain boot file:\n{log}"
    );
}

#[test]
fn mkhost_run_boots_the_uki_alone_under_ovmf() {
    let dir = built("qemu");
    let out = dir.parent().unwrap();
    let started = Instant::now();
    let mut child = mkhost()
        .args([
            "run",
            "--profile",
            "qemu",
            "--uki",
            "--no-build",
            "--out",
            &arg(out),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).replace('\r', ""))
                .is_err()
            {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let ready = loop {
        match lines.recv_timeout(BOOT_TIMEOUT.saturating_sub(started.elapsed())) {
            Ok(line) if line.contains("mkhost: ready") => break line,
            Ok(line) => console.push(line),
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "no ready line; console:\n{}\n{}",
                    console.join("\n"),
                    text(&output)
                );
            }
        }
    };
    eprintln!("mkhost run --uki: ready in {:?}", started.elapsed());
    let fields = ready_fields(&ready);
    assert_eq!(
        fields.get("hostname").map(String::as_str),
        Some("mkhost-qemu"),
        "{ready}"
    );
    assert!(
        out.join(".qemu.run-uki/EFI/BOOT/BOOTX64.EFI").is_file(),
        "the UKI is handed to OVMF as \\EFI\\BOOT\\BOOTX64.EFI"
    );
    // Ctrl-A X on the console quits QEMU, and mkhost run exits with QEMU's status.
    child.stdin.as_mut().unwrap().write_all(b"\x01x").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("QEMU did not quit on Ctrl-A X");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("mkhost-qemu.efi alone under OVMF, 160 MiB"),
        "{stderr}"
    );
    assert!(stderr.contains("TCG") || stderr.contains("KVM"), "{stderr}");
}
