//! HTTPS with a test CA and htpasswd Basic auth; token auth with a tiny
//! token issuer whose JWTs (RS256, signed by openssl, the certificate in
//! `x5c`) the registry trusts.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use mkhost_registry::{Cause, Client, ClientOptions};

use crate::common::*;

/// A registry storage holding `test/bb:1`, pushed through a plain registry
/// that is stopped again.
fn seeded_storage() -> tempfile::TempDir {
    let storage = tempfile::tempdir().unwrap();
    let seed = Registry::start(storage.path(), "", None);
    push(&seed.host(), "bb", "test/bb:1");
    storage
}

/// A CA and a server certificate for IP 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mkhost test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "server.pem",
    ]);
}

fn docker_config(host: &str, user: &str, password: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths":{{"https://{host}":{{"auth":"{auth}"}}}}}}"#).into_bytes()
}

#[test]
fn https_with_basic_auth() {
    if !tools() {
        return;
    }
    let storage = seeded_storage();
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let htpasswd = run(Command::new("htpasswd").args(["-Bbn", "tester", "s3cret"]));
    fs::write(dir.path().join("htpasswd"), htpasswd).unwrap();
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        dir.path().join("htpasswd").display()
    );
    let registry = Registry::start(
        storage.path(),
        &auth,
        Some((
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        )),
    );
    let host = registry.host();
    let ca_pem = fs::read(dir.path().join("ca.pem")).unwrap();
    let text = format!("{host}/test/bb:1");
    let work = tempfile::tempdir().unwrap();

    let client = Client::new(ClientOptions {
        ca_pem: ca_pem.clone(),
        docker_config: Some(docker_config(&host, "tester", "s3cret")),
        ..ClientOptions::default()
    })
    .unwrap();
    let pulled = pull(&client, &text, &work.path().join("ok")).unwrap();
    assert_eq!(check_blobs(&work.path().join("ok")), 3);
    assert_eq!(pulled.layers, 1);

    // Wrong password: a clear 401.
    let wrong = Client::new(ClientOptions {
        ca_pem: ca_pem.clone(),
        docker_config: Some(docker_config(&host, "tester", "wrong")),
        ..ClientOptions::default()
    })
    .unwrap();
    let err = pull(&wrong, &text, &work.path().join("wrong")).unwrap_err();
    assert!(
        matches!(err.cause(), Some(Cause::Unauthorized { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("401"), "{err}");

    // No credentials at all.
    let anonymous = Client::new(ClientOptions {
        ca_pem: ca_pem.clone(),
        ..ClientOptions::default()
    })
    .unwrap();
    let err = pull(&anonymous, &text, &work.path().join("anon")).unwrap_err();
    assert!(err.to_string().contains("docker config has none"), "{err}");

    // Without the CA: a TLS error naming the registry.
    let untrusting = Client::new(ClientOptions {
        docker_config: Some(docker_config(&host, "tester", "s3cret")),
        ..ClientOptions::default()
    })
    .unwrap();
    let err = pull(&untrusting, &text, &work.path().join("noca")).unwrap_err();
    assert!(matches!(err.cause(), Some(Cause::Tls { .. })), "{err}");
    assert!(err.to_string().contains(&host), "{err}");
    assert_eq!(check_blobs(&work.path().join("noca")), 0);
}

/// Signs a registry token for `access` (RS256 with `key`, `cert` in x5c).
fn sign_token(dir: &Path, access: &str) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    run(Command::new("openssl")
        .args([
            "x509",
            "-in",
            "token.pem",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ])
        .current_dir(dir));
    let der = fs::read(dir.join("token.der")).unwrap();
    let x5c = base64::engine::general_purpose::STANDARD.encode(der);
    let header = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{x5c}"]}}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(
        r#"{{"iss":"test-issuer","sub":"tester","aud":"test-registry","exp":{},"nbf":{},"iat":{},"jti":"{now}","access":{access}}}"#,
        now + 3600,
        now - 60,
        now - 60
    );
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    fs::write(dir.join("input"), &signing_input).unwrap();
    run(Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-sign",
            "token.key",
            "-out",
            "sig",
            "input",
        ])
        .current_dir(dir));
    let signature = fs::read(dir.join("sig")).unwrap();
    format!("{signing_input}.{}", b64(&signature))
}

#[test]
fn token_auth() {
    if !tools() {
        return;
    }
    let storage = seeded_storage();
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-issuer",
            "-keyout",
            "token.key",
            "-out",
            "token.pem",
        ])
        .current_dir(dir.path()));
    let token = sign_token(
        dir.path(),
        r#"[{"type":"repository","name":"test/bb","actions":["pull"]}]"#,
    );

    // The issuer: answers every GET with the token, counting requests.
    let issuer = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer_port = issuer.local_addr().unwrap().port();
    let issued = Arc::new(AtomicUsize::new(0));
    let queries = Arc::new(Mutex::new(Vec::new()));
    {
        let (issued, queries) = (issued.clone(), queries.clone());
        std::thread::spawn(move || {
            for stream in issuer.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                queries.lock().unwrap().push(line.clone());
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                issued.fetch_add(1, Ordering::SeqCst);
                let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{issuer_port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
        dir.path().join("token.pem").display()
    );
    let registry = Registry::start(storage.path(), &auth, None);
    let host = registry.host();
    let client = insecure_client(&host);
    let work = tempfile::tempdir().unwrap();

    let pulled = pull(
        &client,
        &format!("{host}/test/bb:1"),
        &work.path().join("a"),
    )
    .unwrap();
    assert_eq!(pulled.layers, 1);
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "one token for manifest, config and layer"
    );
    let query = queries.lock().unwrap()[0].clone();
    assert!(query.contains("service=test-registry"), "{query}");
    assert!(
        query.contains("scope=repository%3Atest%2Fbb%3Apull"),
        "{query}"
    );

    // The token is kept for the next pull.
    pull(
        &client,
        &format!("{host}/test/bb:1"),
        &work.path().join("b"),
    )
    .unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 1);

    // A token that does not grant the repository: one fresh token, then a
    // clear 401, no loop.
    let err = pull(
        &client,
        &format!("{host}/test/other:1"),
        &work.path().join("c"),
    )
    .unwrap_err();
    assert!(
        matches!(err.cause(), Some(Cause::Unauthorized { .. })),
        "{err}"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}
