//! The Docker API of a booted guest, from the build machine over mutual TLS
//! (a `hostfwd` to the guest's port 2376), with the stock docker CLI: the
//! image's server certificate (from a profile's `[docker] tls_dir`, made by
//! `mkhost certs`), a container started with limits that land in its
//! cgroup, paused (frozen) and measured there, a published port reached
//! from the build machine, renamed, the same
//! containers through both doors, and clients without a certificate, with
//! another CA's and with an expired one refused. It rides on the network
//! guest's boot (network_guest.rs): one boot checks both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{self, Guest};

/// The certificates a guest test uses.
pub struct Certs {
    /// The server side, for the profile's `[docker] tls_dir`.
    pub server: PathBuf,
    /// A client of the host's CA (`DOCKER_CERT_PATH`).
    client: PathBuf,
    /// A client of another CA.
    other: PathBuf,
    /// A client of the host's CA whose certificate expired.
    expired: PathBuf,
    /// The docker CLI's own (empty) configuration directory.
    config: PathBuf,
}

fn certs_run(args: &[&str]) {
    let out = support::mkhost().arg("certs").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mkhost certs {args:?}: {}",
        support::text(&out)
    );
}

/// Makes a CA, the guest's server certificate (for 127.0.0.1, where the
/// `hostfwd` lands), a client, another CA's client and an expired client.
pub fn make_certs(work: &Path) -> Certs {
    let dir = work.join("pki");
    let path = |name: &str| dir.join(name).display().to_string();
    certs_run(&["ca", "--dir", &path("ca")]);
    certs_run(&[
        "server",
        "--ca",
        &path("ca"),
        "--out",
        &path("server"),
        "--san",
        "127.0.0.1",
        "--san",
        "localhost",
    ]);
    certs_run(&["client", "--ca", &path("ca"), "--out", &path("client")]);
    certs_run(&["ca", "--dir", &path("ca2")]);
    certs_run(&["client", "--ca", &path("ca2"), "--out", &path("other")]);
    // An expired client of the right CA: `openssl ca` signs with dates in
    // the past (mkhost certs never makes one).
    let expired = dir.join("expired");
    std::fs::create_dir_all(&expired).unwrap();
    let conf = dir.join("openssl-ca.cnf");
    std::fs::write(
        &conf,
        format!(
            "[ca]\ndefault_ca = x\n[x]\ndatabase = {db}\nnew_certs_dir = {out}\nserial = {serial}\n\
             default_md = sha256\npolicy = any\ncopy_extensions = none\nx509_extensions = ext\n\
             [any]\ncommonName = supplied\n[ext]\nextendedKeyUsage = clientAuth\n",
            db = dir.join("index.txt").display(),
            out = expired.display(),
            serial = dir.join("serial").display(),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    let key = expired.join("key.pem");
    let csr = expired.join("req.csr");
    for args in [
        vec![
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            key.to_str().unwrap(),
        ],
        vec![
            "req",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            "/CN=expired",
            "-out",
            csr.to_str().unwrap(),
        ],
        vec![
            "ca",
            "-batch",
            "-config",
            conf.to_str().unwrap(),
            "-cert",
            &format!("{}/ca.pem", path("ca")),
            "-keyfile",
            &format!("{}/ca-key.pem", path("ca")),
            "-in",
            csr.to_str().unwrap(),
            "-out",
            expired.join("cert.pem").to_str().unwrap(),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-notext",
        ],
    ] {
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            support::text(&out)
        );
    }
    std::fs::copy(dir.join("ca/ca.pem"), expired.join("ca.pem")).unwrap();
    let config = dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    Certs {
        server: dir.join("server"),
        client: dir.join("client"),
        other: dir.join("other"),
        expired,
        config,
    }
}

/// The docker CLI against the guest's port `port` with the client `client`.
fn docker(certs: &Certs, port: u16, args: &[&str]) -> Output {
    Command::new("docker")
        .env("DOCKER_CONFIG", &certs.config)
        .env("DOCKER_CERT_PATH", &certs.client)
        .env("DOCKER_TLS_VERIFY", "1")
        .env_remove("DOCKER_HOST")
        .arg("-H")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `docker ARGS` against the guest on a new 24x80 pseudo-terminal,
/// driven by hostd's `pty_drive.py` through `steps`: the exit code and
/// what the terminal showed.
fn on_terminal(certs: &Certs, port: u16, args: &[&str], steps: &str) -> (i32, String) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hostd/tests/integration/pty_drive.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(steps)
        .args(["--", "docker", "-H"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(args)
        .env("DOCKER_CONFIG", &certs.config)
        .env("DOCKER_CERT_PATH", &certs.client)
        .env("DOCKER_TLS_VERIFY", "1")
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "pty_drive.py said {stdout:?} ({e}): {}",
            support::text(&out)
        )
    });
    let shown = result["output"].as_str().unwrap_or_default().to_string();
    if let Some(error) = result.get("error") {
        panic!("docker {args:?} on a terminal: {error}; it showed:\n{shown}");
    }
    (result["code"].as_i64().unwrap_or(-1) as i32, shown)
}

/// A shell session on a terminal (under TCG, so with time to spare): the
/// prompt, `stty size` before and after a resize, Ctrl-C ending a long
/// command, `exit CODE`.
fn shell_session(code: i32) -> String {
    serde_json::json!([
        ["expect", "/ # ", 60],
        ["send", "busybox stty size\r"],
        ["expect", "\r\n24 80\r\n", 30],
        ["resize", 40, 120],
        ["sleep", 2],
        ["send", "busybox stty size\r"],
        ["expect", "\r\n40 120\r\n", 30],
        ["send", "sleep 300\r"],
        ["sleep", 2],
        ["send", "\u{3}"],
        ["expect", "/ # ", 30],
        ["within", 30],
        ["send", format!("exit {code}\r")],
    ])
    .to_string()
}

fn ok(certs: &Certs, port: u16, args: &[&str]) -> String {
    let out = docker(certs, port, args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        support::text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `GET /_ping` with curl and the client certificate in `client` (or none):
/// the body, or `None` when the TLS connection is refused.
fn ping(certs: &Certs, port: u16, client: Option<&Path>) -> Option<String> {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(certs.server.join("ca.pem"));
    if let Some(dir) = client {
        curl.arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"));
    }
    let out = curl
        .arg(format!("https://127.0.0.1:{port}/_ping"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs every check against the booted `guest` whose port 2376 is
/// `docker_port` on the build machine and whose port 8081 is `web_port`.
/// `image` is a busybox image in the guest's store.
pub fn check(guest: &mut Guest, certs: &Certs, docker_port: u16, web_port: u16, image: &str) {
    // The API answers over mutual TLS, and negotiates without a warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ping(certs, docker_port, Some(&certs.client)).as_deref() != Some("OK") {
        assert!(
            Instant::now() < deadline,
            "the guest's Docker API never answered"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let version = docker(certs, docker_port, &["version"]);
    let text = support::text(&version);
    assert!(
        version.status.success() && text.contains("mkhost hostd"),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("warning"), "{text}");

    // Refused in the handshake: no certificate, another CA's, an expired one.
    assert_eq!(
        ping(certs, docker_port, None),
        None,
        "a client without a certificate got in"
    );
    assert_eq!(
        ping(certs, docker_port, Some(&certs.other)),
        None,
        "another CA's client got in"
    );
    assert_eq!(
        ping(certs, docker_port, Some(&certs.expired)),
        None,
        "an expired client got in"
    );

    // Same state, any door: the boot-time containers are docker's too.
    let names = ok(certs, docker_port, &["ps", "--format", "{{.Names}}"]);
    assert!(names.lines().any(|n| n == "web"), "{names}");

    // A container with limits and a published port, started from here.
    let id = ok(
        certs,
        docker_port,
        &[
            "run", "-d", "--name", "dweb", "-p", "8081:80", "--memory", "64m", "--cpus", "0.5",
            "--pids-limit", "50", image, "sh", "-c",
            "mkdir -p /www; echo hello-docker > /www/index.html; exec busybox httpd -f -p 80 -h /www",
        ],
    );
    assert_eq!(id.len(), 16, "{id}");
    let cg = format!("/sys/fs/cgroup/hostd/{id}");
    let limits = guest.run(
        &format!("cat {cg}/memory.max {cg}/cpu.max {cg}/pids.max"),
        Duration::from_secs(60),
    );
    assert_eq!(limits, ["67108864", "50000 100000", "50"], "{limits:?}");
    crate::network_guest::fetch_until(web_port, "hello-docker");
    let listed = guest.run("hostd ps", Duration::from_secs(60)).join("\n");
    assert!(listed.lines().any(|l| l.starts_with("dweb ")), "{listed}");
    let inspect = ok(
        certs,
        docker_port,
        &[
            "inspect",
            "-f",
            "{{.State.Status}} {{.HostConfig.Memory}} {{.NetworkSettings.Ports}}",
            "dweb",
        ],
    );
    assert_eq!(inspect, "running 67108864 map[80/tcp:[{0.0.0.0 8081}]]");
    let port = ok(certs, docker_port, &["port", "dweb"]);
    assert_eq!(port, "80/tcp -> 0.0.0.0:8081");

    // Pause freezes the cgroup, unpause thaws it; stats read the cgroup.
    ok(certs, docker_port, &["pause", "dweb"]);
    let frozen = guest.run(&format!("cat {cg}/cgroup.freeze"), Duration::from_secs(60));
    assert_eq!(frozen, ["1"], "{frozen:?}");
    let paused = ok(
        certs,
        docker_port,
        &[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "dweb",
        ],
    );
    assert_eq!(paused, "paused true");
    ok(certs, docker_port, &["unpause", "dweb"]);
    crate::network_guest::fetch_until(web_port, "hello-docker");
    let stats = ok(
        certs,
        docker_port,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}} {{.PIDs}}",
            "dweb",
        ],
    );
    assert!(
        stats.starts_with("dweb ") && stats.contains("/ 64MiB"),
        "{stats}"
    );
    ok(certs, docker_port, &["rename", "dweb", "dweb2"]);
    let renamed = guest.run("hostd ps", Duration::from_secs(60)).join("\n");
    assert!(
        renamed.lines().any(|l| l.starts_with("dweb2 ")),
        "{renamed}"
    );
    ok(certs, docker_port, &["rename", "dweb2", "dweb"]);

    // An attached run passes output and the exit code back over TLS.
    let out = docker(
        certs,
        docker_port,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            "echo over-tls; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", support::text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-tls");

    // Interactive, over TLS: docker run -it and docker exec -it get a real
    // terminal (resize, Ctrl-C, exit codes); an exec'd process is in the
    // container's cgroup, under its limits.
    let (code, shown) = on_terminal(
        certs,
        docker_port,
        &["run", "-it", "--rm", "--network", "none", image, "sh"],
        &shell_session(3),
    );
    assert_eq!(code, 3, "{shown}");
    let (code, shown) = on_terminal(
        certs,
        docker_port,
        &["exec", "-it", "dweb", "sh"],
        &shell_session(5),
    );
    assert_eq!(code, 5, "{shown}");
    ok(certs, docker_port, &["exec", "-d", "dweb", "sleep", "301"]);
    let members = guest.run(
        &format!(
            "for p in $(cat {cg}/cgroup.procs); do cat /proc/$p/cmdline | tr '\\0' ' '; echo; done"
        ),
        Duration::from_secs(60),
    );
    assert!(
        members.iter().any(|m| m.trim() == "sleep 301"),
        "the exec'd process is not in the container's cgroup: {members:?}"
    );
    let exec = docker(
        certs,
        docker_port,
        &["exec", "dweb", "sh", "-c", "echo in-exec; exit 9"],
    );
    assert_eq!(exec.status.code(), Some(9), "{}", support::text(&exec));
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "in-exec");

    ok(certs, docker_port, &["rm", "-f", "dweb"]);
    let gone = guest.run("hostd ps -a", Duration::from_secs(60)).join("\n");
    assert!(!gone.lines().any(|l| l.starts_with("dweb ")), "{gone}");
}
