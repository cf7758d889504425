//! `hostd run -v` and `hostd volume` against a real daemon: named volumes
//! shared by successive containers, read-only mounts, bind mounts under an
//! allowed root (and refused outside it, symlinks included), a mount
//! target that is a symlink in the image, `volume rm` while in use, and
//! volumes across a daemon killed with SIGKILL.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use mkhost_shared::container::{RunRequest, VolumeMount};
use mkhost_shared::control::{self, Request, Response, VolumeInfo};

use crate::common::{ok, run, Daemon, HOSTD};
use crate::containers::{build_image, hostd, stderr_of};

/// `dir/vb.tar`: busybox (`bb`, from [`build_image`]) plus `/seed/hello`,
/// `/escape`, an absolute symlink to `outside`, a directory both on the
/// host and in the image, which must resolve inside the container's root,
/// and `/dangling`, a symlink to `host_only`, which only the host has.
fn build_volume_image(dir: &Path, outside: &Path, host_only: &Path) {
    build_image(dir);
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(dir));
    umoci(&["unpack", "--image", "L:bb", "V"]);
    let rootfs = dir.join("V/rootfs");
    fs::create_dir_all(rootfs.join("seed")).unwrap();
    fs::write(rootfs.join("seed/hello"), "from the image\n").unwrap();
    std::os::unix::fs::symlink(outside, rootfs.join("escape")).unwrap();
    fs::create_dir_all(rootfs.join(outside.strip_prefix("/").unwrap())).unwrap();
    std::os::unix::fs::symlink(host_only, rootfs.join("dangling")).unwrap();
    umoci(&["repack", "--image", "L:vb", "V"]);
    run(Command::new("tar")
        .args(["-C", "L", "-cf", "vb.tar", "."])
        .current_dir(dir));
}

/// `hostd run --rm --network none ARGS...` in the foreground.
fn run_rm(socket: &Path, args: &[&str]) -> Output {
    Command::new(HOSTD)
        .args(["run", "--socket"])
        .arg(socket)
        .args(["--rm", "--network", "none"])
        .args(args)
        .output()
        .unwrap()
}

fn volume_names(socket: &Path) -> Vec<String> {
    match control::request(socket, &Request::Volumes, std::time::Duration::from_secs(5)) {
        Ok(Response::Volumes(list)) => list.into_iter().map(|v| v.name).collect(),
        other => panic!("{other:?}"),
    }
}

fn start(work: &Path) -> Daemon<'_> {
    let volumes = work.join("volumes");
    let srv = work.join("srv");
    Daemon::start(
        work,
        Path::new(HOSTD),
        &[
            "--volumes",
            volumes.to_str().unwrap(),
            "--bind-root",
            srv.to_str().unwrap(),
        ],
    )
}

#[test]
fn volumes_and_bind_mounts_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (srv, outside) = (work.join("srv"), work.join("outside"));
    fs::create_dir_all(srv.join("www")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(srv.join("www/index.html"), "page\n").unwrap();
    fs::write(outside.join("secret"), "secret\n").unwrap();
    std::os::unix::fs::symlink("../outside", srv.join("link")).unwrap();
    build_volume_image(work, &outside, &srv);
    let daemon = start(work);
    let socket = daemon.socket();
    ok(&hostd(
        &socket,
        &["import", work.join("vb.tar").to_str().unwrap()],
    ));
    let root = work.join("volumes");

    // A named volume, created on first use, written by one container and
    // read by the next; its mount point did not exist in the image.
    let out = run_rm(
        &socket,
        &["-v", "data:/data", "vb", "sh", "-c", "echo hi > /data/f"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        fs::read_to_string(root.join("data/_data/f")).unwrap(),
        "hi\n"
    );
    let out = run_rm(
        &socket,
        &["-v", "data:/var/x", "vb", "sh", "-c", "cat /var/x/f"],
    );
    assert_eq!(ok(&out), "hi\n");

    // Read-only: writes fail with EROFS.
    let out = run_rm(
        &socket,
        &["-v", "data:/data:ro", "vb", "sh", "-c", "echo x > /data/g"],
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr_of(&out).contains("Read-only file system"), "{out:?}");
    assert!(!root.join("data/_data/g").exists());

    // A new volume on a path where the image has files gets a copy of them
    // (and the directory's mode); an existing, non-empty one does not.
    let out = run_rm(
        &socket,
        &["-v", "seeded:/seed", "vb", "sh", "-c", "cat /seed/hello"],
    );
    assert_eq!(ok(&out), "from the image\n");
    let seeded = root.join("seeded/_data");
    assert_eq!(
        fs::read_to_string(seeded.join("hello")).unwrap(),
        "from the image\n"
    );
    let out = run_rm(&socket, &["-v", "data:/seed", "vb", "sh", "-c", "ls /seed"]);
    assert_eq!(ok(&out), "f\n");

    // A mount target that is a symlink in the image to a path the host has
    // too resolves inside the container's root: the host is untouched. One
    // to a path only the host has is refused (the runtime does not create
    // a symlink's missing target, as runc would), and touches nothing.
    let out = run_rm(
        &socket,
        &[
            "-v",
            "data:/escape",
            "vb",
            "sh",
            "-c",
            "echo in > /escape/z; ls /escape",
        ],
    );
    assert_eq!(ok(&out), "f\nz\n");
    assert!(!outside.join("z").exists(), "the mount left the root");
    assert!(root.join("data/_data/z").exists());
    let out = run_rm(&socket, &["-v", "data:/dangling", "vb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr_of(&out).contains("mount point /dangling: No such file"),
        "{out:?}"
    );
    let mut host_srv: Vec<_> = fs::read_dir(&srv)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    host_srv.sort();
    assert_eq!(
        host_srv,
        ["link", "www"],
        "the host's {} changed",
        srv.display()
    );

    // Bind mounts of directories under the allowed root, read-write and
    // read-only.
    let www = srv.join("www");
    let bind = format!("{}:/usr/share/www", www.display());
    let out = run_rm(
        &socket,
        &[
            "-v",
            &bind,
            "vb",
            "sh",
            "-c",
            "cat /usr/share/www/index.html; echo new > /usr/share/www/n",
        ],
    );
    assert_eq!(ok(&out), "page\n");
    assert_eq!(fs::read_to_string(www.join("n")).unwrap(), "new\n");
    let bind_ro = format!("{bind}:ro");
    let out = run_rm(
        &socket,
        &[
            "-v",
            &bind_ro,
            "vb",
            "sh",
            "-c",
            "echo x > /usr/share/www/m",
        ],
    );
    assert!(stderr_of(&out).contains("Read-only file system"), "{out:?}");

    // Outside the allowed root, directly or through a symlink under it:
    // refused, naming the root and the flag; nothing is created.
    let before = fs::read_dir(work.join("containers")).unwrap().count();
    for source in [outside.clone(), srv.join("link")] {
        let arg = format!("{}:/x", source.display());
        let out = run_rm(&socket, &["-v", "fresh:/a", "-v", &arg, "vb", "true"]);
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        let e = stderr_of(&out);
        assert!(
            e.contains("outside the allowed roots")
                && e.contains(&srv.display().to_string())
                && e.contains("--bind-root"),
            "{e}"
        );
    }
    let missing = format!("{}:/x", srv.join("missing").display());
    let out = run_rm(&socket, &["-v", &missing, "vb", "true"]);
    assert!(stderr_of(&out).contains("existing directory"), "{out:?}");
    // Bad names, from the command line and straight over the socket.
    for (arg, words) in [
        (
            "../x:/x",
            "for a host directory give its absolute path (/srv/x:/x)",
        ),
        ("a/b:/x", "cannot hold '/' or '..'"),
        ("a:/x/../y", "without '..'"),
    ] {
        let out = run_rm(&socket, &["-v", arg, "vb", "true"]);
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert!(stderr_of(&out).contains(words), "{arg}: {out:?}");
    }
    let request = Request::Run(Box::new(RunRequest {
        image: "vb".into(),
        volumes: vec![VolumeMount {
            source: "../../etc".into(),
            target: "/x".into(),
            read_only: false,
        }],
        ..RunRequest::default()
    }));
    let answer = control::request(&socket, &request, std::time::Duration::from_secs(30)).unwrap();
    assert!(
        matches!(&answer, Response::Error(m) if m.contains("invalid volume name \"../../etc\"")),
        "{answer:?}"
    );
    // A run that fails once its new volume exists takes the volume back.
    let out = run_rm(&socket, &["-v", "fresh:/a", "vb", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert_eq!(volume_names(&socket), ["data", "seeded"]);
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        2,
        "leftovers in the root"
    );
    assert_eq!(
        fs::read_dir(work.join("containers")).unwrap().count(),
        before
    );

    // `volume rm` is refused while a container (running or stopped) names it.
    ok(&hostd(
        &socket,
        &["volume", "create", "-l", "tier=db", "kept"],
    ));
    let id = ok(&Command::new(HOSTD)
        .args(["run", "-d", "--socket"])
        .arg(&socket)
        .args([
            "--name",
            "user",
            "--network",
            "none",
            "-v",
            "kept:/k",
            "vb",
            "sleep",
            "1000",
        ])
        .output()
        .unwrap());
    assert_eq!(id.trim().len(), 16);
    let out = hostd(&socket, &["volume", "rm", "kept"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("volume \"kept\" is in use by container(s) user"),
        "{out:?}"
    );
    ok(&hostd(&socket, &["stop", "-t", "0", "user"]));
    let out = hostd(&socket, &["volume", "rm", "kept"]);
    assert!(
        stderr_of(&out).contains("in use by container(s) user"),
        "{out:?}"
    );
    let ls = ok(&hostd(&socket, &["volume", "ls"]));
    let lines: Vec<&str> = ls.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CONTAINERS"),
        "{ls}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("kept ") && l.ends_with(" user")),
        "{ls}"
    );
    let inspect: VolumeInfo =
        serde_json::from_str(&ok(&hostd(&socket, &["volume", "inspect", "kept"]))).unwrap();
    assert_eq!(
        inspect.mountpoint,
        root.join("kept/_data").display().to_string()
    );
    assert_eq!(inspect.containers, ["user"]);
    assert_eq!(inspect.labels.get("tier").map(String::as_str), Some("db"));
    let ps: Vec<hostd::daemon::containers::Record> =
        serde_json::from_str(&ok(&hostd(&socket, &["ps", "--json"]))).unwrap();
    assert_eq!(ps[0].volumes, [VolumeMount::parse("kept:/k").unwrap()]);
    ok(&hostd(&socket, &["rm", "user"]));
    assert_eq!(ok(&hostd(&socket, &["volume", "rm", "kept"])), "kept\n");
    assert!(!root.join("kept").exists());
    let out = hostd(&socket, &["volume", "inspect", "kept"]);
    assert!(
        stderr_of(&out).contains("no volume named \"kept\""),
        "{out:?}"
    );

    // status: count, root, and whether the root is in RAM.
    let status: serde_json::Value =
        serde_json::from_str(&ok(&hostd(&socket, &["status"]))).unwrap();
    let fs_type = ok(&Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&root)
        .output()
        .unwrap());
    let in_ram = matches!(fs_type.trim(), "tmpfs" | "ramfs");
    assert_eq!(status["volumes"]["count"], 2, "{status}");
    assert_eq!(
        status["volumes"]["root"],
        root.display().to_string().as_str()
    );
    assert_eq!(
        status["volumes"]["persistent"], !in_ram,
        "{status} {fs_type}"
    );

    // A daemon killed with SIGKILL: the next one lists the volumes, with
    // their data.
    daemon.kill9();
    let daemon = start(work);
    let socket = daemon.socket();
    assert_eq!(volume_names(&socket), ["data", "seeded"]);
    let out = run_rm(
        &socket,
        &["-v", "data:/data", "vb", "sh", "-c", "cat /data/f"],
    );
    assert_eq!(ok(&out), "hi\n");
}
