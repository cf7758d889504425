//! `mkhost certs` read back by OpenSSL: the chain verifies, the names and
//! key usages are there, key files are 0600, and a real mutual-TLS
//! handshake on loopback accepts the client certificate and refuses a
//! client without one or with one from another CA.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{mkhost, run, scratch, text};

fn certs(args: &[&str], dir: &Path) -> std::process::Output {
    mkhost()
        .arg("certs")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mkhost")
}

fn ok(args: &[&str], dir: &Path) -> String {
    let output = certs(args, dir);
    assert!(output.status.success(), "{args:?}\n{}", text(&output));
    text(&output)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The lab's CA, a server certificate for 127.0.0.1, a client certificate,
/// and a second CA's client certificate.
fn lab(dir: &Path) {
    ok(&["ca", "--dir", "ca"], dir);
    ok(
        &[
            "server",
            "--ca",
            "ca",
            "--out",
            "server",
            "--san",
            "host1.lab",
            "--san",
            "127.0.0.1",
        ],
        dir,
    );
    ok(
        &["client", "--ca", "ca", "--out", "client", "--name", "ops"],
        dir,
    );
    ok(&["ca", "--dir", "other-ca"], dir);
    ok(&["client", "--ca", "other-ca", "--out", "stranger"], dir);
}

#[test]
fn certs_verify_with_openssl_and_carry_names_and_usages() {
    let dir = scratch("certs-verify");
    lab(&dir);
    for (cert, purpose) in [
        ("server/cert.pem", "sslserver"),
        ("client/cert.pem", "sslclient"),
    ] {
        let out = run(Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile", "ca/ca.pem", cert])
            .current_dir(&dir));
        assert!(out.contains(": OK"), "{out}");
    }
    // A certificate's own role is not the other's.
    let wrong = Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            "ca/ca.pem",
            "client/cert.pem",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "{}", text(&wrong));
    // Another CA's certificate does not verify.
    let stranger = Command::new("openssl")
        .args(["verify", "-CAfile", "ca/ca.pem", "stranger/cert.pem"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!stranger.status.success(), "{}", text(&stranger));

    let server = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "server/cert.pem"])
        .current_dir(&dir));
    assert!(server.contains("DNS:host1.lab"), "{server}");
    assert!(server.contains("IP Address:127.0.0.1"), "{server}");
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    assert!(server.contains("CA:FALSE"), "{server}");
    let client = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "client/cert.pem"])
        .current_dir(&dir));
    assert!(client.contains("TLS Web Client Authentication"), "{client}");
    assert!(client.contains("Subject: CN = ops"), "{client}");
    let ca = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "ca/ca.pem"])
        .current_dir(&dir));
    assert!(ca.contains("CA:TRUE"), "{ca}");

    // The docker CLI's layout, keys 0600; the CA's key only in its own dir.
    for d in ["server", "client"] {
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            assert!(dir.join(d).join(f).is_file(), "{d}/{f}");
        }
        assert_eq!(mode(&dir.join(d).join("key.pem")), 0o600);
        assert!(!dir.join(d).join("ca-key.pem").exists());
    }
    assert_eq!(mode(&dir.join("ca/ca-key.pem")), 0o600);

    // Nothing printed is key material.
    let said = ok(
        &[
            "server", "--ca", "ca", "--out", "server2", "--san", "h2.lab",
        ],
        &dir,
    );
    assert!(!said.contains("PRIVATE"), "{said}");

    // A second `certs ca` on the same dir is refused, naming the file.
    let again = certs(&["ca", "--dir", "ca"], &dir);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("ca/ca-key.pem already exists"),
        "{}",
        text(&again)
    );
    let bad = certs(
        &["server", "--ca", "ca", "--out", "x", "--san", "no_way"],
        &dir,
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("\"no_way\""), "{}", text(&bad));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_server_certificate_per_machine() {
    let dir = scratch("certs-machines");
    std::fs::write(
        dir.join("machines.toml"),
        "[machines.\"52:54:00:00:00:01\"]\nhostname = \"node1\"\ncmdline = \"mkhost.ip=eth0:10.0.0.11/24:10.0.0.1\"\n\
         [machines.\"52:54:00:00:00:02\"]\nhostname = \"node2\"\n",
    )
    .unwrap();
    ok(&["ca", "--dir", "ca"], &dir);
    ok(
        &[
            "server",
            "--ca",
            "ca",
            "--machines",
            "machines.toml",
            "--domain",
            "rack.example",
            "--out",
            "hosts",
        ],
        &dir,
    );
    let node1 = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "hosts/node1/cert.pem"])
        .current_dir(&dir));
    assert!(
        node1.contains("DNS:node1, DNS:node1.rack.example"),
        "{node1}"
    );
    assert!(node1.contains("IP Address:10.0.0.11"), "{node1}");
    run(Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            "ca/ca.pem",
            "hosts/node1/cert.pem",
            "hosts/node2/cert.pem",
        ])
        .current_dir(&dir));
    assert_eq!(mode(&dir.join("hosts/node2/key.pem")), 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `openssl s_server` demanding a client certificate from `ca.pem`, for
/// one connection; answers once it accepts.
fn tls_server(dir: &Path, port: u16) -> Child {
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-Verify",
            "1",
            "-verify_return_error",
            "-CAfile",
            "ca/ca.pem",
            "-cert",
            "server/cert.pem",
            "-key",
            "server/key.pem",
            "-www",
            "-naccept",
            "1",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ACCEPT") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("s_server did not start");
    child
}

/// What a client with `cert` (or none) gets for `GET /`.
fn tls_client(dir: &Path, port: u16, cert: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-CAfile",
            "ca/ca.pem",
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ]);
    if let Some(cert) = cert {
        cmd.args([
            "-cert",
            &format!("{cert}/cert.pem"),
            "-key",
            &format!("{cert}/key.pem"),
        ]);
    }
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
    std::thread::sleep(Duration::from_millis(1500));
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    text(&output)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn mutual_tls_accepts_the_cas_clients_only() {
    let dir = scratch("certs-mtls");
    lab(&dir);
    for (who, cert, accepted) in [
        ("client of the CA", Some("client"), true),
        ("client without a certificate", None, false),
        ("client of another CA", Some("stranger"), false),
    ] {
        let port = free_port();
        let mut server = tls_server(&dir, port);
        let said = tls_client(&dir, port, cert);
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(said.contains("HTTP/1.0 200 ok"), accepted, "{who}:\n{said}");
        if accepted {
            assert!(
                said.contains("Verify return code: 0 (ok)"),
                "{who}:\n{said}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
