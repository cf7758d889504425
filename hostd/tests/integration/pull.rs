//! `hostd pull` and `run --pull` against a real registry (Debian's
//! `docker-registry`, the CNCF distribution server), natively, inside the
//! test's network namespace with the daemon: a busybox image pushed with
//! skopeo is pulled, verified and run, with a progress line per blob on
//! stderr, the registry named insecure in a `--registries` settings file as
//! init writes it from host.toml; a second pull fetches no layer; a
//! run pulls what the store lacks unless told `--pull never`; a missing tag
//! fails with both reasons, and the store is as it was.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::{hostd, in_test_netns, ok, require, run, text, Daemon, HOSTD};

const PORT: u16 = 5000;

fn registry_host() -> String {
    format!("127.0.0.1:{PORT}")
}

/// A registry in the test's namespace, killed on drop.
struct Registry(Child);

impl Registry {
    fn start(work: &Path) -> Registry {
        Registry::start_with(work, "")
    }

    /// A registry whose config ends with `extra` (an `auth:` section).
    fn start_with(work: &Path, extra: &str) -> Registry {
        let config = work.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {}\n{extra}",
                work.join("registry").display(),
                registry_host()
            ),
        )
        .unwrap();
        let child = in_test_netns(work, "docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry");
        let registry = Registry(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // Any answer will do (401 with auth).
        while !in_test_netns(work, "curl")
            .args(["-s", &format!("http://{}/v2/", registry_host())])
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the registry never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An OCI layout `work/L` with busybox as `bb`, pushed as `test/bb:TAG`.
fn push(work: &Path, tag: &str) {
    layout(work);
    run(in_test_netns(work, "skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:bb", work.join("L").display()))
        .arg(format!("docker://{}/test/bb:{tag}", registry_host())));
}

/// The OCI layout `work/L` with busybox as `bb`, made once.
fn layout(work: &Path) {
    if !work.join("L").exists() {
        let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(work));
        umoci(&["init", "--layout", "L"]);
        umoci(&["new", "--image", "L:bb"]);
        umoci(&["unpack", "--image", "L:bb", "B"]);
        let rootfs = work.join("B/rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        umoci(&["repack", "--image", "L:bb", "B"]);
        umoci(&["config", "--image", "L:bb", "--config.cmd", "sh"]);
    }
}

/// Whether the registry and the tools to fill it are here (in CI they must be).
fn registry_tools() -> bool {
    let have = |p: &str| {
        Command::new("which")
            .arg(p)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    require(
        have("docker-registry") && have("skopeo") && have("umoci"),
        "docker-registry, skopeo and umoci",
    )
}

/// A daemon in `work` that speaks plain HTTP to the test's registry.
fn daemon_trusting_registry(work: &Path) -> Daemon<'_> {
    let settings = work.join("registries.json");
    fs::write(
        &settings,
        format!("{{\"insecure\": [\"{}\"]}}", registry_host()),
    )
    .unwrap();
    Daemon::start(
        work,
        Path::new(HOSTD),
        &["--registries", settings.to_str().unwrap()],
    )
}

#[test]
fn pull_and_run_from_a_real_registry() {
    if !registry_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let host = registry_host();
    let daemon = daemon_trusting_registry(work);
    let socket = daemon.socket();
    let _registry = Registry::start(work);
    push(work, "1");
    push(work, "3");
    let reference = format!("{host}/test/bb:1");

    let output = hostd(&socket, &["pull", &reference]);
    let pulled = ok(&output);
    // Not a terminal: plain lines, the image's, then one per blob.
    let progress = String::from_utf8_lossy(&output.stderr).to_string();
    let lines: Vec<&str> = progress.lines().collect();
    assert!(
        lines.len() == 3
            && lines[0].starts_with(&format!("{reference} (sha256:"))
            && lines[1..]
                .iter()
                .all(|l| l.starts_with("sha256:") && l.contains(": done, ")),
        "{progress}"
    );
    assert!(
        pulled.starts_with(&format!("pulled {reference} (sha256:"))
            && pulled.contains("1 layers")
            && pulled.contains("0 blobs already present"),
        "{pulled}"
    );
    let images = ok(&hostd(&socket, &["images"]));
    assert!(images.contains(&reference), "{images}");
    let ran = ok(&hostd(&socket, &["run", "--rm", &reference, "echo", "hi"]));
    assert_eq!(ran, "hi\n");

    // Again: the layer is there, only the manifest and config come.
    let output = hostd(&socket, &["pull", &reference]);
    let again = ok(&output);
    assert!(again.contains("1 blobs already present"), "{again}");
    let progress = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        progress.matches(": already present").count(),
        1,
        "{progress}"
    );

    // run pulls what the store lacks...
    let implicit = ok(&hostd(
        &socket,
        &[
            "run",
            "--rm",
            &format!("{host}/test/bb:3"),
            "echo",
            "pulled",
        ],
    ));
    assert_eq!(implicit, "pulled\n");
    // ...unless told not to; and a tag the registry lacks fails with both
    // reasons, leaving the store as it was.
    let images_before = ok(&hostd(&socket, &["images"]));
    let never = hostd(
        &socket,
        &[
            "run",
            "--rm",
            "--pull",
            "never",
            &format!("{host}/test/bb:2"),
            "true",
        ],
    );
    assert_eq!(never.status.code(), Some(125), "{}", text(&never));
    assert!(text(&never).contains("no image named"), "{}", text(&never));
    let missing = hostd(
        &socket,
        &["run", "--rm", &format!("{host}/test/bb:2"), "true"],
    );
    assert_eq!(missing.status.code(), Some(125), "{}", text(&missing));
    assert!(
        text(&missing).contains("no image named") && text(&missing).contains("pulling it failed"),
        "{}",
        text(&missing)
    );
    let bad = hostd(&socket, &["pull", "Upper/Case"]);
    assert!(!bad.status.success(), "{}", text(&bad));
    assert_eq!(ok(&hostd(&socket, &["images"])), images_before);
    assert_eq!(
        fs::read_dir(work.join("store/incoming")).unwrap().count(),
        0,
        "a staging directory was left"
    );
    daemon.terminate();
}

/// `docker pull` through the Docker API from a registry that wants a
/// password: the CLI sends its config's credentials in `X-Registry-Auth`
/// (no `docker login`), hostd uses them for that pull only and over the
/// host's own (none here); a wrong password is the registry's 401, named.
#[test]
fn docker_pull_with_credentials_in_x_registry_auth() {
    use base64::Engine;
    if !registry_tools()
        || !require(
            Path::new("/usr/local/bin/docker").exists(),
            "the docker CLI at /usr/local/bin/docker",
        )
        || !require(
            Command::new("which")
                .arg("htpasswd")
                .output()
                .is_ok_and(|o| o.status.success()),
            "htpasswd",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let host = registry_host();
    let daemon = daemon_trusting_registry(work);
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "puller", "s3cret:pw"])
        .output()
        .unwrap()
        .stdout;
    fs::write(work.join("htpasswd"), htpasswd).unwrap();
    let _registry = Registry::start_with(
        work,
        &format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            work.join("htpasswd").display()
        ),
    );
    // The image, pushed with the password.
    layout(work);
    let reference = format!("{host}/test/bb:1");
    run(in_test_netns(work, "skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "puller:s3cret:pw",
        ])
        .arg(format!("oci:{}:bb", work.join("L").display()))
        .arg(format!("docker://{reference}")));

    let docker = |config: &Path, args: &[&str]| {
        let out = Command::new("/usr/local/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", work.join("run/docker.sock").display()))
            .args(args)
            .env("DOCKER_CONFIG", config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap();
        (out.status.code(), text(&out))
    };
    let config = |name: &str, password: &str| {
        let path = work.join(name);
        fs::create_dir_all(&path).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("puller:{password}"));
        fs::write(
            path.join("config.json"),
            format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        path
    };
    let (good, wrong, none) = (
        config("good", "s3cret:pw"),
        config("wrong", "nope"),
        work.join("none"),
    );
    fs::create_dir_all(&none).unwrap();

    // Without credentials, and with a wrong password: refused, naming the
    // registry and the 401, never the password.
    let (code, said) = docker(&none, &["pull", &reference]);
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains(&host) && said.contains("401"), "{said}");
    let (code, said) = docker(&wrong, &["pull", &reference]);
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains(&host) && said.contains("401") && said.contains("X-Registry-Auth"),
        "{said}"
    );
    assert!(!said.contains("nope"), "{said}");
    // With the right one: pulled, and it runs.
    let (code, said) = docker(&good, &["pull", &reference]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("Downloaded newer image"), "{said}");
    let (code, said) = docker(
        &good,
        &["run", "--rm", "--network", "none", &reference, "echo", "hi"],
    );
    assert_eq!((code, said.as_str()), (Some(0), "hi\n"));
    // What one request's credentials earned is not another's: the wrong
    // password still fails after the right one worked.
    let (code, said) = docker(&wrong, &["pull", &reference]);
    assert_ne!(code, Some(0), "{said}");
    for entry in fs::read_dir(work).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("daemon-") {
            let log = fs::read_to_string(entry.path()).unwrap_or_default();
            assert!(!log.contains("s3cret"), "the daemon logged the password");
        }
    }
    daemon.terminate();
}

/// A proxy in the test's namespace, on `listen`, to the registry: it
/// passes everything, except that a response on a connection that asked
/// for a blob whose path contains `stall_on` stops after 64 KiB and hangs
/// (a server stalled mid-blob). Runs on threads that end with the test.
fn stalling_proxy(work: &Path, listen: u16, stall_on: String) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let netns = fs::File::open(crate::common::test_netns(work)).unwrap();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid descriptor.
        let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
        bound_tx.send(()).unwrap();
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            // Connecting from a thread that is in the namespace too.
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", PORT)) else {
                continue;
            };
            let stall = Arc::new(AtomicBool::new(false));
            let (mut from_client, mut to_upstream) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (flag, needle) = (Arc::clone(&stall), stall_on.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).contains(&needle) {
                        flag.store(true, Ordering::SeqCst);
                    }
                    if to_upstream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
            let (mut from_upstream, mut to_client) = (upstream, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut after_flag = 0usize;
                while let Ok(n @ 1..) = from_upstream.read(&mut buf) {
                    if stall.load(Ordering::SeqCst) {
                        after_flag += n;
                        if after_flag > 64 << 10 {
                            // Hold the connection open, send nothing more.
                            std::thread::sleep(Duration::from_secs(600));
                            return;
                        }
                    }
                    if to_client.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    bound_rx.recv().unwrap();
}

#[test]
fn a_pull_killed_mid_blob_leaves_the_store_as_it_was() {
    if !registry_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let host = registry_host();
    let proxied = "127.0.0.1:5001";
    let settings = work.join("registries.json");
    fs::write(
        &settings,
        format!("{{\"insecure\": [\"{host}\", \"{proxied}\"]}}"),
    )
    .unwrap();
    let flags = ["--registries", settings.to_str().unwrap()];
    let daemon = Daemon::start(work, Path::new(HOSTD), &flags);
    let socket = daemon.socket();
    let _registry = Registry::start(work);
    push(work, "1");
    // The layer: the only blob of the pushed image bigger than 64 KiB.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(work.join("L/index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(work.join("L/blobs/sha256").join(&manifest_digest[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    stalling_proxy(work, 5001, format!("/blobs/{layer}"));
    let images_before = ok(&hostd(&socket, &["images"]));

    // The pull stalls mid-layer: its partial blob is on disk when the
    // daemon is killed.
    let mut pull = Command::new(HOSTD)
        .args(["pull", "--socket"])
        .arg(&socket)
        .arg(format!("{proxied}/test/bb:1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = |dir: &Path| -> bool {
        walk(dir).iter().any(|p| {
            p.extension().is_some_and(|e| e == "tmp") && fs::metadata(p).is_ok_and(|m| m.len() > 0)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !partial(&work.join("store/incoming")) {
        assert!(Instant::now() < deadline, "the pull never began its layer");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill9();
    let _ = pull.wait();

    // A new daemon: the staging directory is gone, the store as it was,
    // and the pull from the registry itself works.
    let daemon = Daemon::start(work, Path::new(HOSTD), &flags);
    assert_eq!(
        fs::read_dir(work.join("store/incoming")).unwrap().count(),
        0,
        "a staging directory was left"
    );
    assert_eq!(ok(&hostd(&socket, &["images"])), images_before);
    let pulled = ok(&hostd(&socket, &["pull", &format!("{host}/test/bb:1")]));
    assert!(pulled.contains("0 blobs already present"), "{pulled}");
    let ran = ok(&hostd(
        &socket,
        &["run", "--rm", &format!("{host}/test/bb:1"), "echo", "whole"],
    ));
    assert_eq!(ran, "whole\n");
    daemon.terminate();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
