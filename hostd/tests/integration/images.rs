//! `hostd images|import|inspect|rmi|gc` against a real daemon with its own
//! store, on a small OCI image built with `umoci` (one layer, one file), and
//! a `docker export`-style root file system tar imported by name and run.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostd::daemon::containers::RunRequest;
use mkhost_shared::control::{self, Request, Response};
use mkhost_store::Store;

use crate::common::Daemon;
use crate::common::{ok, require, run, wait_exit, wait_for_status, HOSTD};

/// Builds `dir/img.tar`: an OCI layout tar with one image named `hello`, one
/// layer holding `/hello.txt`, entrypoint `/hello` and one env variable.
fn build_image(dir: &Path) {
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(dir));
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:hello"]);
    umoci(&["unpack", "--image", "L:hello", "B"]);
    fs::write(dir.join("B/rootfs/hello.txt"), b"hello from the layer\n").unwrap();
    umoci(&["repack", "--image", "L:hello", "B"]);
    umoci(&[
        "config",
        "--image",
        "L:hello",
        "--config.entrypoint",
        "/hello",
        "--config.env",
        "GREETING=hi",
    ]);
    run(Command::new("tar")
        .args(["-C", "L", "-cf", "img.tar", "."])
        .current_dir(dir));
}

/// Runs `hostd ARGS --socket SOCKET` in `cwd`.
fn hostd(cwd: &Path, socket: &Path, args: &[&str]) -> Output {
    Command::new(HOSTD)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn entries(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn import_list_inspect_remove_gc_through_the_daemon() {
    let have_umoci = Command::new("sh")
        .args(["-c", "command -v umoci"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_umoci,
        "this test needs umoci: run it after ci/install-deps"
    );
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    build_image(work);
    let socket = work.join("run/hostd.sock");
    let store = work.join("store");
    let mut daemon = Command::new(HOSTD)
        .args(["daemon", "--socket"])
        .arg(&socket)
        .arg("--store")
        .arg(&store)
        .arg("--state")
        .arg(work.join("state"))
        .arg("--containers")
        .arg(work.join("containers"))
        .args(["--docker-socket", "none"])
        .spawn()
        .unwrap();
    wait_for_status(&socket, Duration::from_secs(10));
    assert!(store.join("blobs/sha256").is_dir(), "store opened at start");

    // Empty store: just the header.
    let table = ok(&hostd(work, &socket, &["images"]));
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(table.starts_with("NAME"), "{table}");

    // A relative path is sent absolute: the daemon (another cwd) refuses
    // relative ones, so success means the client resolved it.
    let out = ok(&hostd(work, &socket, &["import", "img.tar"]));
    assert!(out.contains("imported hello "), "{out}");
    assert!(out.contains("1 new layers"), "{out}");

    let list: serde_json::Value =
        serde_json::from_str(&ok(&hostd(work, &socket, &["images", "--json"]))).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["names"], serde_json::json!(["hello"]));
    assert_eq!(list[0]["layers"], 1);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let hex12 = id.strip_prefix("sha256:").unwrap().get(..12).unwrap();

    let table = ok(&hostd(work, &socket, &["images"]));
    let row = table.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.starts_with("hello "), "{table}");
    assert!(row.contains(hex12), "{table}");

    let info: serde_json::Value =
        serde_json::from_str(&ok(&hostd(work, &socket, &["inspect", "hello"]))).unwrap();
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["config"]["entrypoint"], serde_json::json!(["/hello"]));
    assert_eq!(info["config"]["env"], serde_json::json!(["GREETING=hi"]));
    let layer = Path::new(info["layers"][0]["path"].as_str().unwrap()).join("hello.txt");
    assert_eq!(fs::read(&layer).unwrap(), b"hello from the layer\n");

    // A corrupt archive: the store's own message, exit 1, daemon still up.
    let bytes = fs::read(work.join("img.tar")).unwrap();
    let cut = work.join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 4]).unwrap();
    let expected = Store::open(work.join("scratch"))
        .unwrap()
        .import(&cut)
        .unwrap_err()
        .to_string();
    let out = hostd(work, &socket, &["import", "cut.tar"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!("hostd: {expected}")
    );
    ok(&hostd(work, &socket, &["status"]));
    let missing = hostd(work, &socket, &["inspect", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no image named"));

    // rmi, then gc frees the blobs and the layer.
    assert!(entries(&store.join("blobs/sha256")) > 0);
    let out = ok(&hostd(work, &socket, &["rmi", "hello"]));
    assert!(out.contains("untagged: hello"), "{out}");
    assert!(out.contains(&format!("deleted: {id}")), "{out}");
    let out = ok(&hostd(work, &socket, &["gc"]));
    assert!(out.starts_with("removed 3 blobs and 1 layers"), "{out}");
    assert_eq!(entries(&store.join("blobs/sha256")), 0);
    assert_eq!(entries(&store.join("layers")), 0);
    let table = ok(&hostd(work, &socket, &["images"]));
    assert_eq!(table.lines().count(), 1, "{table}");

    // Usage errors exit 2.
    assert_eq!(hostd(work, &socket, &["rmi"]).status.code(), Some(2));

    hostd::os::kill(i32::try_from(daemon.id()).unwrap(), libc::SIGTERM).unwrap();
    assert!(wait_exit(&mut daemon, Duration::from_secs(10)).success());

    // No daemon: the usual clear message.
    let out = hostd(work, &socket, &["images"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon not running"));
}

/// Sends `request` to the daemon at `socket`.
fn ask(socket: &Path, request: &Request) -> Response {
    control::request(socket, request, Duration::from_secs(30)).unwrap()
}

#[test]
fn rootfs_tar_imports_by_name_and_runs() {
    let busybox = Path::new("/bin/busybox");
    if !require(busybox.is_file(), "/bin/busybox (busybox-static)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // A root file system as `docker export` gives it: busybox, a shell, a
    // file to read; no image config at all.
    let root = work.join("root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/motd"), "the root file system tar\n").unwrap();
    run(Command::new("tar")
        .args(["-C", "root", "-czf", "rootfs.tar.gz", "."])
        .current_dir(work));
    run(Command::new("tar")
        .args(["-C", "root", "-cf", "rootfs.tar", "."])
        .current_dir(work));

    let daemon = Daemon::start(work, Path::new(HOSTD), &[]);
    let socket = daemon.socket();
    let out = ok(&hostd(
        work,
        &socket,
        &["import", "rootfs.tar.gz", "fromtar:1"],
    ));
    assert!(out.contains("imported fromtar:1 "), "{out}");
    assert!(out.contains("1 new layers"), "{out}");
    let info: serde_json::Value =
        serde_json::from_str(&ok(&hostd(work, &socket, &["inspect", "fromtar:1"]))).unwrap();
    assert_eq!(info["os"], "linux");
    assert_eq!(info["architecture"], "amd64");
    assert_eq!(info["layers"].as_array().unwrap().len(), 1);
    assert!(info["config"]["cmd"].is_null(), "{info}");
    assert!(info["config"]["entrypoint"].is_null(), "{info}");
    let id = info["id"].as_str().unwrap().to_string();

    // The same tar uncompressed, without a name: the same image (the config
    // is made from the tar stream), still reported by id.
    let out = ok(&hostd(work, &socket, &["import", "rootfs.tar"]));
    let hex12 = &id["sha256:".len()..][..12];
    assert!(
        out.contains(&format!("imported <none> {hex12} (already present)")),
        "{out}"
    );

    // A container of it: the command is ours, the image has none.
    let answer = ask(
        &socket,
        &Request::Run(Box::new(RunRequest {
            image: "fromtar:1".into(),
            name: Some("fromtar".into()),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo from $(cat /etc/motd)".into(),
            ],
            ..Default::default()
        })),
    );
    assert!(matches!(answer, Response::Started(_)), "{answer:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let record = loop {
        let Response::Ps(rows) = ask(&socket, &Request::Ps) else {
            panic!("ps");
        };
        if let Some(r) = rows.into_iter().find(|r| r.name == "fromtar") {
            if r.exit_code.is_some() {
                break r;
            }
        }
        assert!(Instant::now() < deadline, "the container never exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(record.exit_code, Some(0), "{record:?}");
    let Response::Logs(logs) = ask(
        &socket,
        &Request::Logs {
            name: "fromtar".into(),
        },
    ) else {
        panic!("logs");
    };
    assert!(
        logs.contains("stdout from the root file system tar"),
        "{logs}"
    );
    let answer = ask(
        &socket,
        &Request::Rm {
            name: "fromtar".into(),
            force: false,
        },
    );
    assert!(matches!(answer, Response::Container(_)), "{answer:?}");
    daemon.terminate();
}

/// What buildah writes: an image committed from `scratch` with a copied
/// root and a config, pushed as an OCI archive and as a docker archive,
/// imports as one image (the same id from both) and runs with its own Cmd.
#[test]
fn buildah_images_import_and_run() {
    let have = |tool: &str| Path::new(tool).is_file();
    if !require(have("/usr/bin/buildah"), "buildah (ci/install-deps)")
        || !require(have("/bin/busybox"), "/bin/busybox (busybox-static)")
        || !require(
            hostd::os::geteuid() == 0,
            "root (buildah's storage, hostd's daemon)",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let root = work.join("root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    // buildah's own storage under the test's directory (vfs: no overlay
    // mounts to clean up).
    let buildah = |args: &[&str]| -> String {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(work.join("storage"))
            .arg("--runroot")
            .arg(work.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .current_dir(work)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let container = buildah(&["from", "scratch"]);
    buildah(&["copy", &container, "root/", "/"]);
    buildah(&[
        "config",
        "--cmd",
        r#"["sh","-c","echo from-buildah"]"#,
        &container,
    ]);
    buildah(&["commit", "-q", &container, "built:1"]);
    buildah(&["push", "-q", "built:1", "oci-archive:built-oci.tar:built:1"]);
    buildah(&[
        "push",
        "-q",
        "built:1",
        "docker-archive:built-docker.tar:built:2",
    ]);

    let daemon = Daemon::start(work, Path::new(HOSTD), &[]);
    let socket = daemon.socket();
    let oci = ok(&hostd(work, &socket, &["import", "built-oci.tar"]));
    assert!(oci.contains("imported built:1 "), "{oci}");
    let docker = ok(&hostd(work, &socket, &["import", "built-docker.tar"]));
    assert!(
        docker.contains("(already present)"),
        "the two archives differ: {oci} / {docker}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(&hostd(work, &socket, &["inspect", "built:1"]))).unwrap();
    assert_eq!(info["layers"].as_array().unwrap().len(), 1, "{info}");
    let ran = Command::new(HOSTD)
        .args(["run", "--socket"])
        .arg(&socket)
        .args(["--rm", "--network", "none", "built:1"])
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "from-buildah\n");
}
