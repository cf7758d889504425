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
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::common::{in_test_netns, ok, require, run, Daemon, HOSTD};

const PORT: u16 = 5000;

fn registry_host() -> String {
    format!("127.0.0.1:{PORT}")
}

/// A registry in the test's namespace, killed on drop.
struct Registry(Child);

impl Registry {
    fn start(work: &Path) -> Registry {
        let config = work.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {}\n",
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
        while !in_test_netns(work, "curl")
            .args(["-sf", &format!("http://{}/v2/", registry_host())])
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
    run(in_test_netns(work, "skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:bb", work.join("L").display()))
        .arg(format!("docker://{}/test/bb:{tag}", registry_host())));
}

fn hostd(socket: &Path, args: &[&str]) -> Output {
    let (command, rest) = args.split_first().unwrap();
    Command::new(HOSTD)
        .arg(command)
        .arg("--socket")
        .arg(socket)
        .args(rest)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pull_and_run_from_a_real_registry() {
    let have = |p: &str| {
        Command::new("which")
            .arg(p)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !require(
        have("docker-registry") && have("skopeo") && have("umoci"),
        "docker-registry, skopeo and umoci",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let host = registry_host();
    let settings = work.join("registries.json");
    fs::write(&settings, format!("{{\"insecure\": [\"{host}\"]}}")).unwrap();
    let daemon = Daemon::start(
        work,
        Path::new(HOSTD),
        &["--registries", settings.to_str().unwrap()],
    );
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
