//! Test fixtures shared by the registry's own tests and mkhost's build-time
//! pull tests (feature `testkit`, for dev-dependencies only): the
//! prerequisite check, a real registry process (Debian's `docker-registry`
//! on loopback), test images built with umoci from Debian's static busybox,
//! and pushing them with skopeo.
//!
//! Everything here panics on failure: it runs inside tests.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// True when `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// [`require`]s each of `programs` on `PATH` and `/bin/busybox` (the test
/// images' content).
pub fn require_tools(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !on_path(p)).collect();
    let busybox = Path::new("/bin/busybox").exists();
    require(
        missing.is_empty() && busybox,
        &format!(
            "{} and /bin/busybox (missing: {missing:?}, busybox: {busybox})",
            programs.join(", ")
        ),
    )
}

/// What [`Registry`], [`images`] and [`push`] need.
pub fn registry_tools() -> bool {
    require_tools(&["docker-registry", "skopeo", "umoci"])
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

/// A loopback TCP port nobody listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A `docker-registry serve` process on loopback, killed on drop.
pub struct Registry {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry storing into `storage`; `extra` is YAML appended
    /// to the config (`auth:` sections), `tls` a certificate and key.
    pub fn start(storage: &Path, extra: &str, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::tempdir().expect("a temporary directory");
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
        fs::write(&config_path, config).expect("write the registry config");
        let log = fs::File::create(dir.path().join("log")).expect("create the registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("the registry log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen: {}",
                fs::read_to_string(registry.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
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

/// Test images, built once per test process: an OCI layout `L` with tags
/// `bb` (busybox, one layer, amd64), `three` (three layers) and `arm` (`bb`
/// marked arm64).
pub fn images() -> &'static Path {
    static IMAGES: OnceLock<tempfile::TempDir> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
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
    fs::create_dir_all(rootfs.join("bin")).expect("mkdir bin");
    fs::create_dir_all(rootfs.join("etc")).expect("mkdir etc");
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("link sh");
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
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
    fs::write(dir.join("C/rootfs/etc/two"), "2\n").expect("write two");
    umoci(&["repack", "--image", "L:three", "C"]);
    fs::remove_dir_all(dir.join("C")).expect("remove C");
    umoci(&["unpack", "--image", "L:three", "C"]);
    fs::write(dir.join("C/rootfs/etc/three"), "3\n").expect("write three");
    umoci(&["repack", "--image", "L:three", "C"]);
}

/// Pushes `L:<tag>` of [`images`] to `docker://<host>/<target>` over plain
/// HTTP (pushing to an existing tag moves it).
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
