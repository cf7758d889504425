//! A hostile registry (a TcpListener in the test, plain HTTP): corrupt,
//! truncated, oversized and stalling answers, wrong media types, endless
//! 401s and redirect loops. Each must be a clear error, and nothing that
//! failed its checks may be left in `blobs/`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mkhost_registry::{Cause, Client, ClientOptions, Reference, RegistryError};
use sha2::{Digest as _, Sha256};

use crate::common::*;

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn layer() -> Vec<u8> {
    (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn manifest_for(layer_digest: &str, layer_size: usize) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{layer_size}}}]}}"#,
        digest(CONFIG),
        CONFIG.len()
    )
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// The hostile server: one request per connection; returns its port and a
/// request counter.
fn serve(handler: fn(&str, &mut TcpStream, u16, &AtomicUsize)) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                handler(&path, &mut stream, port, &counter);
            });
        }
    });
    (port, count)
}

/// The routes of the hostile registry, by repository.
fn hostile(path: &str, stream: &mut TcpStream, port: u16, count: &AtomicUsize) {
    count.fetch_add(1, Ordering::SeqCst);
    let layer = layer();
    let good = digest(&layer);
    let oci = ("Content-Type", mkhost_registry::OCI_MANIFEST.to_owned());
    let repo = path
        .strip_prefix("/v2/")
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    if path.ends_with(&format!("/blobs/{}", digest(CONFIG))) {
        return respond(stream, "200 OK", &[], CONFIG);
    }
    if path.contains("/manifests/") {
        let manifest = manifest_for(&good, layer.len());
        return match repo {
            "big" => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
                    mkhost_registry::OCI_MANIFEST,
                    100 << 20
                );
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..100 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
            "bigchunked" => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nConnection: close\r\n\r\n",
                    mkhost_registry::OCI_MANIFEST
                );
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..100 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
            "mediatype" => respond(
                stream,
                "200 OK",
                &[("Content-Type", "text/html".into())],
                br#"{"hello":1}"#,
            ),
            "schema1" => respond(
                stream,
                "200 OK",
                &[(
                    "Content-Type",
                    "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
                )],
                br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}"#,
            ),
            "headerdigest" => respond(
                stream,
                "200 OK",
                &[oci, ("Docker-Content-Digest", digest(b"other"))],
                manifest.as_bytes(),
            ),
            "basic401" => respond(
                stream,
                "401 Unauthorized",
                &[("WWW-Authenticate", r#"Basic realm="x""#.into())],
                b"",
            ),
            "bearer401" => respond(
                stream,
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate",
                    format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="s""#),
                )],
                b"",
            ),
            _ => respond(stream, "200 OK", &[oci], manifest.as_bytes()),
        };
    }
    if path.starts_with("/token") {
        return respond(stream, "200 OK", &[], br#"{"token":"t"}"#);
    }
    match repo {
        "corrupt" => {
            let mut bad = layer.clone();
            bad[1000] ^= 1;
            respond(stream, "200 OK", &[], &bad)
        }
        "truncated" => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                layer.len()
            );
            let _ = stream.write_all(&layer[..layer.len() / 2]);
        }
        "long" => {
            let mut more = layer.clone();
            more.extend_from_slice(b"extra");
            respond(stream, "200 OK", &[], &more)
        }
        "stall" => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                layer.len()
            );
            let _ = stream.write_all(&layer[..300_000]);
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(5));
        }
        "loop" => {
            let next = if path.ends_with("/a") {
                "/v2/loop/b"
            } else {
                "/v2/loop/a"
            };
            respond(
                stream,
                "307 Temporary Redirect",
                &[("Location", next.into())],
                b"",
            )
        }
        "endless" => {
            let n: u32 = path
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            respond(
                stream,
                "302 Found",
                &[("Location", format!("/v2/endless/r/{}", n + 1))],
                b"",
            )
        }
        "redirected" if !path.contains("/elsewhere") => respond(
            stream,
            "302 Found",
            &[(
                "Location",
                format!("http://127.0.0.1:{port}/v2/redirected/elsewhere"),
            )],
            b"",
        ),
        _ => respond(stream, "200 OK", &[], &layer),
    }
}

fn client(port: u16) -> Client {
    Client::new(ClientOptions {
        insecure: vec![format!("127.0.0.1:{port}")],
        stall_timeout: Duration::from_secs(1),
        docker_config: Some(
            format!(r#"{{"auths":{{"127.0.0.1:{port}":{{"username":"u","password":"p"}}}}}}"#)
                .into_bytes(),
        ),
        ..ClientOptions::default()
    })
    .unwrap()
}

fn fails(client: &Client, port: u16, repo: &str, layout: &Path) -> RegistryError {
    let err = pull(client, &format!("127.0.0.1:{port}/{repo}:1"), layout).expect_err(repo);
    check_blobs(layout);
    assert!(
        err.to_string()
            .starts_with(&format!("pull 127.0.0.1:{port}/{repo}:1: ")),
        "{err}"
    );
    err
}

#[test]
fn hostile_registry() {
    let (port, count) = serve(hostile);
    let client = client(port);
    let work = tempfile::tempdir().unwrap();
    let dir = |name: &str| work.path().join(name);
    let layer_digest = digest(&layer());

    // The well-behaved route works, including a redirect for the blob.
    let ok = pull(&client, &format!("127.0.0.1:{port}/fine:1"), &dir("fine")).unwrap();
    assert_eq!(check_blobs(&dir("fine")), 3);
    assert_eq!(
        ok.bytes_fetched,
        (manifest_for(&layer_digest, 600_000).len() + CONFIG.len() + 600_000) as u64
    );
    pull(
        &client,
        &format!("127.0.0.1:{port}/redirected:1"),
        &dir("redirected"),
    )
    .unwrap();

    let err = fails(&client, port, "corrupt", &dir("corrupt"));
    assert!(
        matches!(err.cause(), Some(Cause::DigestMismatch { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "blob {layer_digest}: digest mismatch (got sha256:"
        )),
        "{message}"
    );
    assert!(
        message.ends_with("the registry sent corrupt data"),
        "{message}"
    );
    assert_eq!(check_blobs(&dir("corrupt")), 2, "manifest and config only");

    let err = fails(&client, port, "truncated", &dir("truncated"));
    assert!(
        matches!(
            err.cause(),
            Some(Cause::SizeMismatch {
                expected: 600_000,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");

    let err = fails(&client, port, "long", &dir("long"));
    assert!(
        matches!(
            err.cause(),
            Some(Cause::SizeMismatch {
                expected: 600_000,
                got: 600_005
            })
        ),
        "{err}"
    );

    let start = Instant::now();
    let err = fails(&client, port, "big", &dir("big"));
    assert!(
        matches!(
            err.cause(),
            Some(Cause::TooLarge {
                what: "manifest",
                ..
            })
        ),
        "{err}"
    );
    let err = fails(&client, port, "bigchunked", &dir("bigchunked"));
    assert!(
        matches!(
            err.cause(),
            Some(Cause::TooLarge {
                what: "manifest",
                ..
            })
        ),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));

    let err = fails(&client, port, "mediatype", &dir("mediatype"));
    assert!(
        matches!(err.cause(), Some(Cause::MediaType { .. })),
        "{err}"
    );
    let err = fails(&client, port, "schema1", &dir("schema1"));
    assert!(matches!(err.cause(), Some(Cause::Schema1 { .. })), "{err}");
    assert!(err.to_string().contains("schema 1"), "{err}");
    let err = fails(&client, port, "headerdigest", &dir("headerdigest"));
    assert!(
        matches!(err.cause(), Some(Cause::HeaderDigest { .. })),
        "{err}"
    );

    // Endless 401s: one retry with credentials, then an error.
    let before = count.load(Ordering::SeqCst);
    let err = fails(&client, port, "basic401", &dir("basic401"));
    assert!(
        matches!(err.cause(), Some(Cause::Unauthorized { .. })),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst) - before, 2);
    let before = count.load(Ordering::SeqCst);
    let err = fails(&client, port, "bearer401", &dir("bearer401"));
    assert!(
        matches!(err.cause(), Some(Cause::Unauthorized { .. })),
        "{err}"
    );
    assert_eq!(
        count.load(Ordering::SeqCst) - before,
        3,
        "manifest, token, manifest"
    );

    let err = fails(&client, port, "loop", &dir("loop"));
    assert!(matches!(err.cause(), Some(Cause::Redirect { .. })), "{err}");
    assert!(err.to_string().contains("loop"), "{err}");
    let err = fails(&client, port, "endless", &dir("endless"));
    assert!(matches!(err.cause(), Some(Cause::Redirect { .. })), "{err}");
    assert!(err.to_string().contains("more than 5 redirects"), "{err}");

    let start = Instant::now();
    let err = fails(&client, port, "stall", &dir("stall"));
    assert!(matches!(err.cause(), Some(Cause::Stalled { .. })), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn bad_references_and_unreachable_hosts() {
    let err = Reference::parse("127.0.0.1:5000/x@sha256:zz").unwrap_err();
    assert!(err.to_string().contains("sha256:zz"), "{err}");
    let client = Client::new(ClientOptions {
        stall_timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    })
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let err = pull(&client, "no-such-host.invalid/x:1", &work.path().join("a")).unwrap_err();
    assert!(
        matches!(err.cause(), Some(Cause::Connect { host, .. }) if host == "no-such-host.invalid"),
        "{err}"
    );
    // A port nobody listens on.
    let port = free_port();
    let err = client
        .resolve(&Reference::parse(&format!("127.0.0.1:{port}/x")).unwrap())
        .unwrap_err();
    assert!(matches!(err.cause(), Some(Cause::Connect { .. })), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "resolve 127.0.0.1:{port}/x:latest: resolve: cannot connect"
        )),
        "{err}"
    );
}

#[test]
fn mirrors_are_tried_first_then_the_registry() {
    let (port, _) = serve(hostile);
    let live = format!("127.0.0.1:{port}");
    let dead = format!("127.0.0.1:{}", free_port());
    let work = tempfile::tempdir().unwrap();
    let with_mirrors = |registry: &str, mirror: &str| {
        let mut options = ClientOptions {
            insecure: vec![live.clone(), dead.clone()],
            stall_timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        };
        options
            .mirrors
            .insert(registry.to_owned(), vec![mirror.to_owned()]);
        Client::new(options).unwrap()
    };
    // The registry is down, its mirror serves.
    let pulled = pull(
        &with_mirrors(&dead, &live),
        &format!("{dead}/fine:1"),
        &work.path().join("a"),
    )
    .unwrap();
    assert_eq!(pulled.layers, 1);
    assert_eq!(check_blobs(&work.path().join("a")), 3);
    // The mirror is down, the registry serves.
    pull(
        &with_mirrors(&live, &dead),
        &format!("{live}/fine:1"),
        &work.path().join("b"),
    )
    .unwrap();
    assert_eq!(check_blobs(&work.path().join("b")), 3);
}
