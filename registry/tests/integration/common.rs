//! Shared test fixtures: prerequisites, the registry process, test images
//! built with umoci and pushed with skopeo, and layout checks.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mkhost_registry::{Client, ClientOptions, Progress, Pulled, Reference, RegistryError};
use sha2::{Digest as _, Sha256};

/// True when `present`; otherwise skips the test, or fails it when `CI` is
/// set (CI must provide every prerequisite).
pub fn require(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(!ci, "{test}: needs {what}, which CI must provide");
    eprintln!("SKIPPED {test}: needs {what} (with CI set this fails)");
    false
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tools the registry tests need.
pub fn tools() -> bool {
    let missing: Vec<&str> = ["docker-registry", "skopeo", "umoci", "openssl", "htpasswd"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    let busybox = Path::new("/bin/busybox").exists();
    require(
        missing.is_empty() && busybox,
        &format!("docker-registry, skopeo, umoci, openssl, htpasswd and /bin/busybox (missing: {missing:?}, busybox: {busybox})"),
    )
}

/// Runs a setup tool and fails the test with its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry serve` process, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry storing into `storage`; `extra` is YAML appended
    /// to the config (`auth:` sections), `tls` a certificate and key.
    pub fn start(storage: &Path, extra: &str, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls = match tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{extra}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen: {}",
                fs::read_to_string(registry._dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test images, built once: an OCI layout `L` with tags `bb` (busybox, one
/// layer, amd64), `three` (three layers) and `arm` (`bb` marked arm64).
pub fn images() -> &'static Path {
    static IMAGES: OnceLock<tempfile::TempDir> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            build_images(dir.path());
            dir
        })
        .path()
}

fn build_images(dir: &Path) {
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(dir));
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:bb"]);
    umoci(&["unpack", "--image", "L:bb", "B"]);
    let rootfs = dir.join("B/rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    umoci(&["repack", "--image", "L:bb", "B"]);
    umoci(&["config", "--image", "L:bb", "--config.cmd", "sh"]);
    umoci(&[
        "config",
        "--image",
        "L:bb",
        "--tag",
        "arm",
        "--architecture",
        "arm64",
    ]);
    // Two more layers on top of bb.
    umoci(&["unpack", "--image", "L:bb", "C"]);
    fs::write(dir.join("C/rootfs/etc/two"), "2\n").unwrap();
    umoci(&["repack", "--image", "L:three", "C"]);
    fs::remove_dir_all(dir.join("C")).unwrap();
    umoci(&["unpack", "--image", "L:three", "C"]);
    fs::write(dir.join("C/rootfs/etc/three"), "3\n").unwrap();
    umoci(&["repack", "--image", "L:three", "C"]);
}

/// Pushes `L:<tag>` to `docker://<host>/<target>` over plain HTTP.
pub fn push(host: &str, tag: &str, target: &str) {
    let source = format!("oci:{}:{tag}", images().join("L").display());
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &source,
        &format!("docker://{host}/{target}"),
    ]));
}

/// A client speaking plain HTTP to `host`.
pub fn insecure_client(host: &str) -> Client {
    Client::new(ClientOptions {
        insecure: vec![host.to_owned()],
        ..ClientOptions::default()
    })
    .unwrap()
}

pub fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn no_blob(_: &str) -> Option<PathBuf> {
    None
}

fn no_progress(_: Progress) {}

/// Pulls without reuse or progress.
pub fn pull(client: &Client, text: &str, layout: &Path) -> Result<Pulled, RegistryError> {
    client.pull_to_layout(&reference(text), layout, &no_blob, &no_progress)
}

/// Every file in `layout/blobs/sha256` is named by the sha256 of its
/// content (no `*.tmp`, no unverified blob); returns how many there are.
pub fn check_blobs(layout: &Path) -> usize {
    let dir = layout.join("blobs/sha256");
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(!name.ends_with(".tmp"), "{name} left in {}", dir.display());
        let hex = format!("{:x}", Sha256::digest(fs::read(entry.path()).unwrap()));
        assert_eq!(name, hex, "blob {name} does not hold its content");
        count += 1;
    }
    count
}
