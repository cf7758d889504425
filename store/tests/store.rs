//! Image store tests against real images, built offline with `umoci` and
//! converted with `skopeo` (Debian packages; `ci/install-deps` installs
//! them), plus hand-made corrupt and hostile images.
//!
//! They need root (whiteouts are device nodes, opaque directories use
//! `trusted.*` xattrs, and the layers are checked through a real overlayfs
//! mount). Without root, or without the tools, each test fails saying so
//! (`can_run`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mkhost_store::{Digest, Store, StoreError};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------- helpers

/// The store tests need root (overlayfs whiteouts are device nodes) and the
/// reference tools; without them they fail loudly rather than pass unchecked.
fn can_run() -> bool {
    let root = rustix::process::geteuid().is_root();
    let tools = ["umoci", "skopeo", "mount"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        root && tools,
        "the store tests need root, umoci and skopeo: run them as root after ci/install-deps"
    );
    true
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Everything under `root` (but the lock file): path -> (mode, size, sha256
/// of regular files), for "the store is unchanged" checks.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, u64, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, String)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            if rel == Path::new("lock") {
                continue;
            }
            let hash = if m.is_file() {
                sha256_hex(&fs::read(&p).unwrap())
            } else {
                String::new()
            };
            out.insert(rel, (m.mode(), m.len(), hash));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

/// A read-only overlayfs mount of `lower` (top first), unmounted on drop.
struct Overlay(PathBuf);

impl Overlay {
    fn mount(lower: &[PathBuf], at: &Path) -> Overlay {
        assert!(
            lower.len() >= 2,
            "overlayfs without upper needs two lowerdirs"
        );
        fs::create_dir_all(at).unwrap();
        let dirs: Vec<_> = lower.iter().map(|p| p.display().to_string()).collect();
        run(Command::new("mount")
            .args([
                "-t",
                "overlay",
                "overlay",
                "-o",
                &format!("lowerdir={}", dirs.join(":")),
            ])
            .arg(at));
        Overlay(at.to_owned())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

// --------------------------------------------------------------- fixtures

/// Real images, built once per test run.
struct Fixtures {
    /// OCI layout with tags base (no layers), v1 (busybox etc.), v2 (a file
    /// deleted), v3 (an opaque directory), v4 (v3 with a full config).
    layout: PathBuf,
    /// OCI layout with only v1.
    layout_v1: PathBuf,
    /// `docker save` (legacy form, via skopeo) of v4 as test/img:v4.
    docker: PathBuf,
    /// OCI layout as a tar, v4.
    oci_archive: PathBuf,
    /// OCI layout of v4 with zstd layers.
    zstd: PathBuf,
    /// OCI layout of v4 with uncompressed layers (labelled gzip by skopeo).
    plain: PathBuf,
    /// `docker save` in the docker >= 25 form (OCI layout + manifest.json).
    docker_oci: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(build_fixtures)
}

fn umoci(args: &[&str], cwd: &Path) {
    run(Command::new("umoci").args(args).current_dir(cwd));
}

fn skopeo(from: &str, to: &str, extra: &[&str], cwd: &Path) {
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q"])
        .args(extra)
        .args([from, to])
        .current_dir(cwd));
}

fn build_fixtures() -> Fixtures {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-fixtures");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();

    umoci(&["init", "--layout", "L"], &dir);
    umoci(&["new", "--image", "L:base"], &dir);
    umoci(&["unpack", "--image", "L:base", "B"], &dir);
    let rootfs = dir.join("B/rootfs");
    for d in ["bin", "etc", "opq/sub"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::write(rootfs.join("bin/suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(rootfs.join("bin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(rootfs.join("etc/gone"), b"delete me\n").unwrap();
    fs::write(rootfs.join("etc/keep"), b"keep me\n").unwrap();
    fs::write(rootfs.join("opq/lower"), b"hidden by the opaque dir\n").unwrap();
    fs::write(rootfs.join("opq/sub/x"), b"hidden too\n").unwrap();
    umoci(
        &["repack", "--refresh-bundle", "--image", "L:v1", "B"],
        &dir,
    );

    fs::remove_file(rootfs.join("etc/gone")).unwrap();
    fs::write(rootfs.join("etc/added"), b"new in v2\n").unwrap();
    umoci(&["repack", "--image", "L:v2", "B"], &dir);

    // umoci writes per-file whiteouts; an opaque directory needs a layer
    // made by hand.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"opq/", tar::EntryType::Directory, b"", b"", 0o755);
    raw_entry(
        &mut b,
        b"opq/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
        b"",
        0o644,
    );
    raw_entry(
        &mut b,
        b"opq/new",
        tar::EntryType::Regular,
        b"",
        b"only me\n",
        0o644,
    );
    fs::write(dir.join("opq.tar"), b.into_inner().unwrap()).unwrap();
    umoci(
        &[
            "raw",
            "add-layer",
            "--image",
            "L:v2",
            "--tag",
            "v3",
            "opq.tar",
        ],
        &dir,
    );
    umoci(
        &[
            "config",
            "--image",
            "L:v3",
            "--tag",
            "v4",
            "--config.entrypoint",
            "/bin/busybox",
            "--config.cmd",
            "sh",
            "--config.cmd",
            "-c",
            "--config.env",
            "FOO=bar",
            "--config.workingdir",
            "/tmp",
            "--config.user",
            "1000:1000",
            "--config.exposedports",
            "8080/tcp",
            "--config.label",
            "org.example.test=yes",
        ],
        &dir,
    );

    skopeo("oci:L:v1", "oci:L1:v1", &[], &dir);
    skopeo(
        "oci:L:v4",
        "docker-archive:docker.tar:test/img:v4",
        &[],
        &dir,
    );
    skopeo("oci:L:v4", "oci-archive:oci.tar:v4", &[], &dir);
    skopeo(
        "oci:L:v4",
        "oci:Z:v4",
        &["--dest-compress-format", "zstd"],
        &dir,
    );
    skopeo(
        "docker-archive:docker.tar",
        "oci:P:plain",
        &["--dest-oci-accept-uncompressed-layers"],
        &dir,
    );
    build_docker_oci(&dir.join("L"), "v4", &dir.join("docker-oci.tar"));

    Fixtures {
        layout: dir.join("L"),
        layout_v1: dir.join("L1"),
        docker: dir.join("docker.tar"),
        oci_archive: dir.join("oci.tar"),
        zstd: dir.join("Z"),
        plain: dir.join("P"),
        docker_oci: dir.join("docker-oci.tar"),
    }
}

/// Writes what `docker save` (>= 25) writes for image `tag` of `layout`: an
/// OCI layout plus a `manifest.json` pointing into `blobs/`.
fn build_docker_oci(layout: &Path, tag: &str, out: &Path) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let blob = |d: &str| format!("blobs/sha256/{}", &d["sha256:".len()..]);
    let manifest_digest = desc["digest"].as_str().unwrap().to_owned();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join(blob(&manifest_digest))).unwrap()).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut desc = desc;
    desc["annotations"]["io.containerd.image.name"] = "docker.io/library/newdocker:v4".into();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
    add("index.json", &serde_json::to_vec(&index).unwrap());
    for d in std::iter::once(&manifest_digest)
        .chain([&config])
        .chain(&layers)
    {
        add(&blob(d), &fs::read(layout.join(blob(d))).unwrap());
    }
    let docker_manifest = serde_json::json!([{
        "Config": blob(&config),
        "RepoTags": ["newdocker:v4"],
        "Layers": layers.iter().map(|l| blob(l)).collect::<Vec<_>>(),
    }]);
    add(
        "manifest.json",
        &serde_json::to_vec(&docker_manifest).unwrap(),
    );
    fs::write(out, b.into_inner().unwrap()).unwrap();
}

/// A tar entry with a raw, unchecked name (hostile tools write anything).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &[u8],
    kind: tar::EntryType,
    link: &[u8],
    data: &[u8],
    mode: u32,
) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(8).unwrap();
        h.set_device_minor(0).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

type Entry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        raw_entry(&mut b, name, *kind, link, data, 0o644);
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI layout with one image `name` made of `layers` (plain tars,
/// stored gzip-compressed). `diff_ids` overrides the config's diff_ids.
fn hand_layout(dir: &Path, name: &str, layers: &[Vec<u8>], diff_ids: Option<Vec<String>>) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut descs = Vec::new();
    let mut ids = Vec::new();
    for l in layers {
        ids.push(format!("sha256:{}", sha256_hex(l)));
        let (d, size) = put(&gzip(l));
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d, "size": size}));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.unwrap_or(ids)},
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": name}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A store in a fresh temporary directory.
fn new_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    (tmp, store)
}

/// Copies a directory tree (an OCI layout) so a test can damage it.
fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// The blob of a layout named by `digest` (`sha256:<hex>`).
fn layout_blob(layout: &Path, digest: &str) -> PathBuf {
    let digest = Digest::parse(digest).expect("a sha256 digest");
    layout.join("blobs/sha256").join(digest.hex())
}

// ------------------------------------------------------------------ tests

#[test]
fn oci_layout_dir_whiteouts_opaque_and_config() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let (tmp, store) = new_store();
    let report = store.import(&f.layout).unwrap();
    let mut names: Vec<_> = report.images.iter().flat_map(|i| i.names.clone()).collect();
    names.sort();
    assert_eq!(names, ["base", "v1", "v2", "v3", "v4"]);
    assert!(report.images.iter().all(|i| i.new));
    // Five images, three distinct layers: v2..v4 reuse the layers below them.
    assert_eq!(report.layers_added, 3);
    assert_eq!(count_entries(&store.root().join("layers")), 3);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let list = store.list().unwrap();
    assert_eq!(list.len(), 5);
    let v4 = list.iter().find(|i| i.names == ["v4"]).unwrap();
    assert_eq!(v4.layers, 3);
    assert!(v4.unpacked_size > 1_000_000, "busybox is in there");
    assert!(v4.size > 0 && v4.size < v4.unpacked_size, "gzip blobs");
    let base = list.iter().find(|i| i.names == ["base"]).unwrap();
    assert_eq!(base.layers, 0);
    assert!(store.lowerdirs("base").unwrap().is_empty());

    let info = store.inspect("v4").unwrap();
    assert_eq!(info.id, v4.id);
    assert_eq!(info.architecture.as_deref(), Some("amd64"));
    assert_eq!(
        info.config.entrypoint.as_deref(),
        Some(&["/bin/busybox".to_owned()][..])
    );
    assert_eq!(
        info.config.cmd.as_deref(),
        Some(&["sh".to_owned(), "-c".to_owned()][..])
    );
    assert!(info.config.env.contains(&"FOO=bar".to_owned()));
    assert_eq!(info.config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(info.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(info.config.exposed_ports, ["8080/tcp"]);
    assert_eq!(info.config.labels["org.example.test"], "yes");
    assert_eq!(info.layers.len(), 3);
    assert!(info
        .layers
        .iter()
        .all(|l| l.media_type.ends_with("tar+gzip") && l.size > 0 && l.path.is_dir()));
    assert_eq!(info.unpacked_size, v4.unpacked_size);
    // By id and by id prefix.
    assert_eq!(store.inspect(info.id.as_str()).unwrap().id, info.id);
    assert_eq!(
        store.inspect(&info.id["sha256:".len()..]).unwrap().id,
        info.id
    );
    assert_eq!(
        store.inspect(&info.id["sha256:".len()..][..12]).unwrap().id,
        info.id
    );
    assert!(matches!(
        store.inspect("nope"),
        Err(StoreError::NotFound { .. })
    ));

    let lower = store.lowerdirs("v4").unwrap();
    assert_eq!(lower.len(), 3);
    assert_eq!(lower[0], info.layers[2].path, "top layer first");

    let merged = tmp.path().join("merged");
    let _m = Overlay::mount(&lower, &merged);
    assert!(!merged.join("etc/gone").exists(), "whiteout hides the file");
    assert_eq!(fs::read(merged.join("etc/keep")).unwrap(), b"keep me\n");
    assert_eq!(fs::read(merged.join("etc/added")).unwrap(), b"new in v2\n");
    let mut opq: Vec<_> = fs::read_dir(merged.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    opq.sort();
    assert_eq!(opq, ["new"], "opaque dir hides everything below");
    let suid = fs::metadata(merged.join("bin/suid")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert_eq!(
        fs::read_link(merged.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let out = Command::new(merged.join("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n", "busybox survived the round trip");
}

#[test]
fn docker_archive_shares_layers_with_existing_image() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let (tmp, store) = new_store();
    let r1 = store.import(&f.layout_v1).unwrap();
    assert_eq!((r1.images.len(), r1.layers_added), (1, 1));
    let r2 = store.import(&f.docker).unwrap();
    assert_eq!(r2.images.len(), 1);
    assert_eq!(r2.images[0].names, ["docker.io/test/img:v4"]);
    assert_eq!(r2.layers_added, 2, "the busybox layer is shared");
    assert_eq!(count_entries(&store.root().join("layers")), 3);
    // Docker-style short names find it.
    let info = store.inspect("test/img:v4").unwrap();
    assert_eq!(info.layers.len(), 3);
    assert!(info.layers.iter().all(|l| l.media_type.ends_with(".tar")));
    assert_eq!(info.config.user.as_deref(), Some("1000:1000"));
    let merged = tmp.path().join("merged");
    let _m = Overlay::mount(&store.lowerdirs("test/img:v4").unwrap(), &merged);
    assert!(!merged.join("etc/gone").exists());
    assert!(merged.join("bin/busybox").is_file());

    // Importing the same image again adds nothing but is fine.
    let before = snapshot(store.root());
    let r3 = store.import(&f.docker).unwrap();
    assert!(!r3.images[0].new);
    assert_eq!((r3.blobs_added, r3.layers_added), (0, 0));
    assert_eq!(snapshot(store.root()), before);
}

#[test]
fn oci_archive_zstd_plain_and_new_docker_forms() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let mut ids = Vec::new();
    for (source, name, media) in [
        (&f.oci_archive, "v4", "tar+gzip"),
        (&f.zstd, "v4", "tar+zstd"),
        (&f.plain, "plain", "tar+gzip"), // skopeo labels the plain tars gzip
        (&f.docker_oci, "newdocker:v4", "tar+gzip"),
    ] {
        let (tmp, store) = new_store();
        let report = store
            .import(source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert_eq!(report.images.len(), 1, "{}", source.display());
        assert_eq!(report.layers_added, 3);
        let info = store.inspect(name).unwrap();
        assert!(info.layers.iter().all(|l| l.media_type.ends_with(media)));
        let merged = tmp.path().join("merged");
        let _m = Overlay::mount(&store.lowerdirs(name).unwrap(), &merged);
        assert!(!merged.join("etc/gone").exists());
        assert_eq!(count_entries(&merged.join("opq")), 1);
        ids.push(info.id);
    }
    // The zstd copy and the plain copy keep the diff_ids, so the layers
    // are the same; the id only changes where the config was rewritten.
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn new_docker_form_uses_repo_tags() {
    if !can_run() {
        return;
    }
    let (_tmp, store) = new_store();
    let report = store.import(&fixtures().docker_oci).unwrap();
    assert_eq!(report.images[0].names, ["newdocker:v4"]);
    // Docker normalisation: both spellings find it.
    assert_eq!(
        store.inspect("docker.io/library/newdocker:v4").unwrap().id,
        report.images[0].id
    );
}

#[test]
fn digest_mismatch_leaves_store_unchanged() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let (tmp, store) = new_store();
    store.import(&f.layout_v1).unwrap();
    let before = snapshot(store.root());

    // A flipped byte in a layer blob the store does not have yet (blobs it
    // has are not read from the source again).
    let bad = tmp.path().join("bad-layer");
    copy_tree(&f.layout, &bad);
    let v4 = {
        let (_t, s) = new_store();
        s.import(&f.layout).unwrap();
        s.inspect("v4").unwrap()
    };
    let blob = layout_blob(&bad, &v4.layers[1].digest);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    match store.import(&bad) {
        Err(StoreError::DigestMismatch { what, expected, .. }) => {
            assert!(
                what.contains(&v4.layers[1].digest["sha256:".len()..]),
                "{what}"
            );
            assert_eq!(expected, v4.layers[1].digest.to_string());
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(snapshot(store.root()), before);
    assert_eq!(count_entries(&store.root().join("tmp")), 0);

    // A flipped byte in a config.
    let bad = tmp.path().join("bad-config");
    copy_tree(&f.layout, &bad);
    let cfg = layout_blob(&bad, &v4.id);
    let mut bytes = fs::read(&cfg).unwrap();
    bytes[2] ^= 0x01;
    fs::write(&cfg, bytes).unwrap();
    assert!(matches!(
        store.import(&bad),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert_eq!(snapshot(store.root()), before);

    // A layer whose uncompressed content is not the config's diff_id.
    let bad = tmp.path().join("bad-diffid");
    let layer = layer_tar(&[(b"a", tar::EntryType::Regular, b"", b"a")]);
    hand_layout(
        &bad,
        "bad",
        &[layer],
        Some(vec![format!("sha256:{}", "0".repeat(64))]),
    );
    match store.import(&bad) {
        Err(e @ StoreError::DigestMismatch { .. }) => {
            assert!(e.to_string().contains("uncompressed"), "{e}")
        }
        other => panic!("expected a diff_id mismatch, got {other:?}"),
    }
    assert_eq!(snapshot(store.root()), before);
}

#[test]
fn incoming_layouts_are_linked_and_still_verified() {
    if !can_run() {
        return;
    }
    let (tmp, store) = new_store();
    let layer = layer_tar(&[(b"a", tar::EntryType::Regular, b"", b"pulled")]);
    let blob_digest = format!("sha256:{}", sha256_hex(&gzip(&layer)));

    // A layout elsewhere is copied: the store's blob is a file of its own.
    let outside = tmp.path().join("outside");
    hand_layout(&outside, "outside", std::slice::from_ref(&layer), None);
    store.import(&outside).unwrap();
    let source = layout_blob(&outside, &blob_digest);
    let kept = store.blob_file(&blob_digest).unwrap();
    assert_ne!(
        fs::metadata(&source).unwrap().ino(),
        fs::metadata(&kept).unwrap().ino()
    );

    // A download in the store's incoming/ is hard-linked, not copied.
    let (tmp2, store) = new_store();
    let incoming = store.incoming().unwrap();
    hand_layout(
        incoming.path(),
        "pulled",
        std::slice::from_ref(&layer),
        None,
    );
    store.import_named(incoming.path(), "pulled:1").unwrap();
    let source = layout_blob(incoming.path(), &blob_digest);
    let kept = store.blob_file(&blob_digest).unwrap();
    assert_eq!(
        fs::metadata(&source).unwrap().ino(),
        fs::metadata(&kept).unwrap().ino()
    );
    drop(incoming);
    assert_eq!(fs::read(&kept).unwrap(), gzip(&layer));
    assert_eq!(count_entries(&store.root().join("incoming")), 0);

    // ...and still hashed: a blob that does not match its digest is refused.
    let before = snapshot(store.root());
    let incoming = store.incoming().unwrap();
    let other = layer_tar(&[(b"b", tar::EntryType::Regular, b"", b"other")]);
    hand_layout(incoming.path(), "bad", std::slice::from_ref(&other), None);
    let other_digest = format!("sha256:{}", sha256_hex(&gzip(&other)));
    let blob = layout_blob(incoming.path(), &other_digest);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // the gzip trailer: the tar inside is unchanged
    fs::write(&blob, bytes).unwrap();
    match store.import_named(incoming.path(), "bad:1") {
        Err(StoreError::DigestMismatch { expected, .. }) => assert_eq!(expected, other_digest),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    drop(incoming);
    assert_eq!(snapshot(store.root()), before);
    assert_eq!(count_entries(&store.root().join("tmp")), 0);
    drop(tmp2);
}

#[test]
fn truncated_archive_is_refused() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let (tmp, store) = new_store();
    let before = snapshot(store.root());
    for source in [&f.docker, &f.oci_archive] {
        let bytes = fs::read(source).unwrap();
        let cut = tmp.path().join("cut.tar");
        fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = store.import(&cut).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::CorruptArchive { .. } | StoreError::Missing { .. }
            ),
            "{err:?}"
        );
        assert_eq!(snapshot(store.root()), before);
    }
    // Not an archive at all.
    let junk = tmp.path().join("junk");
    fs::write(&junk, b"hello").unwrap();
    assert!(store.import(&junk).is_err());
    assert_eq!(snapshot(store.root()), before);
    // Endless or blocking sources are refused at once, not read: a fifo
    // with no writer, /dev/zero, and a symlink to it.
    let fifo = tmp.path().join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let zero_link = tmp.path().join("zero.tar");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    for source in [fifo.as_path(), Path::new("/dev/zero"), zero_link.as_path()] {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = store.clone();
        let source = source.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(store.import(&source).map(|_| ()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("import hung")
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    assert_eq!(snapshot(store.root()), before);
}

#[test]
fn hostile_layers_are_refused_and_nothing_escapes() {
    if !can_run() {
        return;
    }
    use tar::EntryType as T;
    let (tmp, store) = new_store();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_s = outside.display().to_string();
    let before = snapshot(store.root());

    let abs = format!("{outside_s}/abs");
    let cases: Vec<(Vec<Entry<'_>>, &str, &str)> = vec![
        (vec![(b"../evil", T::Regular, b"", b"x")], "../evil", "`..`"),
        (
            vec![(b"../../../evil", T::Regular, b"", b"x")],
            "../../../evil",
            "`..`",
        ),
        (
            vec![(abs.as_bytes(), T::Regular, b"", b"x")],
            &abs,
            "absolute",
        ),
        (
            vec![
                (b"link", T::Symlink, outside_s.as_bytes(), b""),
                (b"link/passwd", T::Regular, b"", b"x"),
            ],
            "link/passwd",
            "symlink",
        ),
        (vec![(b"hard", T::Link, b"../../x", b"")], "hard", "`..`"),
        (
            vec![
                (b"link", T::Symlink, outside_s.as_bytes(), b""),
                (b"hard", T::Link, b"link/passwd", b""),
            ],
            "hard",
            "hard link to \"link/passwd\", which goes through the symlink",
        ),
    ];
    for (i, (entries, entry_name, why)) in cases.iter().enumerate() {
        let layout = tmp.path().join(format!("hostile-{i}"));
        hand_layout(&layout, "hostile", &[layer_tar(entries)], None);
        match store.import(&layout) {
            Err(e @ StoreError::UnsafeEntry { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("{entry_name:?}")), "{msg}");
                assert!(msg.contains(why), "{msg}");
            }
            other => panic!("case {i}: expected a refusal, got {other:?}"),
        }
        assert_eq!(snapshot(store.root()), before, "case {i}");
    }
    // Everything at once.
    let all: Vec<Entry<'_>> = cases.iter().flat_map(|(e, _, _)| e.clone()).collect();
    let layout = tmp.path().join("hostile-all");
    hand_layout(&layout, "hostile", &[layer_tar(&all)], None);
    assert!(matches!(
        store.import(&layout),
        Err(StoreError::UnsafeEntry { .. })
    ));
    assert_eq!(snapshot(store.root()), before);
    assert_eq!(count_entries(&outside), 0, "nothing written outside");
    for p in ["evil", "x", "hostile-0/evil"] {
        assert!(!tmp.path().join(p).exists(), "{p}");
    }

    // Device nodes and fifos are skipped, not refused; 0:0 is a whiteout.
    let layout = tmp.path().join("devices");
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, b"dev/sda", T::Block, b"", b"", 0o660);
    raw_entry(&mut b, b"dev/mem", T::Char, b"", b"", 0o660);
    raw_entry(&mut b, b"dev/fifo", T::Fifo, b"", b"", 0o660);
    raw_entry(&mut b, b"ok", T::Regular, b"", b"fine", 0o644);
    hand_layout(&layout, "devices", &[b.into_inner().unwrap()], None);
    let report = store.import(&layout).unwrap();
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|s| (s.entry.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("dev/sda", "device node"),
            ("dev/mem", "device node"),
            ("dev/fifo", "fifo")
        ]
    );
    let layer = &store.lowerdirs("devices").unwrap()[0];
    assert_eq!(count_entries(&layer.join("dev")), 0);
    assert_eq!(fs::read(layer.join("ok")).unwrap(), b"fine");
}

#[test]
fn remove_and_gc_free_blobs_and_layers() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let (_tmp, store) = new_store();
    store.import(&f.layout_v1).unwrap();
    let empty_gc = store.gc().unwrap();
    assert_eq!(empty_gc, mkhost_store::GcReport::default());
    let d = store.import(&f.docker).unwrap();
    let docker_id = d.images[0].id.clone();

    // Untag by a docker-normalised name: the last name, so the record goes.
    let removed = store.remove("test/img:v4").unwrap();
    assert_eq!(removed.id, docker_id);
    assert_eq!(removed.untagged, ["docker.io/test/img:v4"]);
    assert!(removed.deleted);
    assert!(matches!(
        store.inspect(docker_id.as_str()),
        Err(StoreError::NotFound { .. })
    ));
    // Still on disk until gc.
    assert_eq!(count_entries(&store.root().join("layers")), 3);
    let gc = store.gc().unwrap();
    assert_eq!(gc.layers_removed, 2, "the shared busybox layer stays");
    // Docker's blobs: config, synthesised manifest, three uncompressed layers
    // (the busybox one differs from v1's gzip blob).
    assert_eq!(gc.blobs_removed, 5);
    assert!(gc.bytes_freed > 1_000_000, "{gc:?}");
    assert_eq!(count_entries(&store.root().join("layers")), 1);
    store.lowerdirs("v1").unwrap();
    assert_eq!(store.gc().unwrap(), mkhost_store::GcReport::default());

    let v1 = store.inspect("v1").unwrap();
    let removed = store.remove(v1.id.as_str()).unwrap();
    assert_eq!(
        (removed.untagged.as_slice(), removed.deleted),
        (&["v1".to_owned()][..], true)
    );
    assert!(store.list().unwrap().is_empty());
    let gc = store.gc().unwrap();
    assert_eq!((gc.blobs_removed, gc.layers_removed), (3, 1));
    assert_eq!(count_entries(&store.root().join("blobs/sha256")), 0);
    assert_eq!(count_entries(&store.root().join("layers")), 0);
}

#[test]
fn names_move_and_untag_keeps_other_names() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let (_tmp, store) = new_store();
    // The OCI archive and the layout both call v4 "v4"; same image.
    store.import(&f.layout).unwrap();
    let r = store.import(&f.docker).unwrap();
    assert!(!r.images[0].new, "same config digest as the layout's v4");
    let info = store.inspect("v4").unwrap();
    assert_eq!(info.names, ["v4", "docker.io/test/img:v4"]);
    let removed = store.remove("v4").unwrap();
    assert!(!removed.deleted);
    assert_eq!(
        store.inspect("test/img:v4").unwrap().names,
        ["docker.io/test/img:v4"]
    );
    // Re-importing a layout moves "v1" etc. back; the store re-opens cleanly.
    let reopened = Store::open(store.root()).unwrap();
    assert_eq!(reopened.list().unwrap().len(), 5);

    // A tag adds a name, and moves it off the image that had it.
    store.tag("test/img:v4", "lab/web:1").unwrap();
    assert_eq!(
        store.inspect("lab/web:1").unwrap().id,
        store.inspect("test/img:v4").unwrap().id
    );
    let v1 = store.inspect("v1").unwrap().id;
    store.tag("v1", "lab/web:1").unwrap();
    assert_eq!(store.inspect("lab/web:1").unwrap().id, v1);
    assert!(!store
        .inspect("test/img:v4")
        .unwrap()
        .names
        .contains(&"lab/web:1".to_string()));
    assert!(matches!(
        store.tag("nope", "x:1"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.tag("v1", "bad name"),
        Err(StoreError::InvalidName { .. })
    ));
}

#[test]
fn index_without_media_types_and_compressed_docker_save() {
    if !can_run() {
        return;
    }
    use tar::EntryType as T;
    let (tmp, store) = new_store();
    // Old layouts may leave mediaType out of index.json.
    let layout = tmp.path().join("old");
    let layer = layer_tar(&[(b"a", T::Regular, b"", b"a")]);
    hand_layout(&layout, "old", &[layer], None);
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]
        .as_object_mut()
        .unwrap()
        .remove("mediaType");
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    assert_eq!(store.import(&layout).unwrap().images[0].names, ["old"]);

    // `docker save | gzip`.
    let gz = tmp.path().join("docker.tar.gz");
    fs::write(&gz, gzip(&fs::read(&fixtures().docker).unwrap())).unwrap();
    let report = store.import(&gz).unwrap();
    assert_eq!(report.images[0].names, ["docker.io/test/img:v4"]);
    assert_eq!(report.layers_added, 3);
}

#[test]
fn umoci_insert_root_entry_is_the_layer_root() {
    if !can_run() {
        return;
    }
    // `umoci insert --image L:x DIR /` writes a layer whose first entry is
    // the root directory itself, named `/`, carrying DIR's metadata.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    umoci(&["init", "--layout", "L"], dir);
    umoci(&["new", "--image", "L:x"], dir);
    let src = dir.join("D");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("etc/greeting"), b"hello from umoci\n").unwrap();
    fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    // umoci 0.4.7 (Debian) ends an inserted layer right after the last
    // file's data (`etc/greeting`, 17 bytes), without padding it to a tar
    // block and without the end-of-archive marker; Go's archive/tar reads
    // that, and so must the store.
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    fs::File::open(&src).unwrap().set_modified(mtime).unwrap();
    umoci(&["insert", "--image", "L:x", "D", "/"], dir);

    let (_store_tmp, store) = new_store();
    let report = store.import(dir.join("L")).unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].names, ["x"]);
    let layer_blob = layout_blob(
        &dir.join("L"),
        &store.inspect("x").unwrap().layers[0].digest,
    );
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(layer_blob).unwrap()),
        &mut tar,
    )
    .unwrap();
    assert_ne!(
        tar.len() % 512,
        0,
        "umoci padded the layer: the case is gone"
    );
    assert_eq!(report.layers_added, 1);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let info = store.inspect("x").unwrap();
    assert_eq!(info.layers.len(), 1);
    let layer = &info.layers[0].path;
    assert_eq!(
        fs::read(layer.join("etc/greeting")).unwrap(),
        b"hello from umoci\n"
    );
    assert_eq!(fs::read(layer.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    let tool = fs::metadata(layer.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755);
    let root = fs::metadata(layer).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o750, "the `/` entry's mode");
    assert_eq!(root.mtime(), 1_500_000_000, "the `/` entry's mtime");
    assert_eq!((root.uid(), root.gid()), (0, 0));
}

// ------------------------------------------- every format, entry by entry

/// One file system object as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    /// `d`irectory, `f`ile, `l`ink (symlink), `p` (fifo), `?`.
    kind: char,
    /// Permission bits with setuid, setgid and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    /// Modification time, whole seconds (tar keeps no more here).
    mtime: i64,
    /// Regular files: size and sha256.
    size: u64,
    hash: String,
    /// Symlinks: the target as written.
    target: PathBuf,
    /// Regular files: the first path (in sorted order) of the tree that is
    /// the same inode, so hard links compare by identity.
    inode_of: PathBuf,
}

/// Every entry under `root` and `root` itself (as ""), without following
/// symlinks.
fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Node, (u64, u64))>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            add(root, &p, out);
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    fn add(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, (Node, (u64, u64))>) {
        use std::os::unix::fs::FileTypeExt;
        let m = fs::symlink_metadata(p).unwrap();
        let t = m.file_type();
        let kind = if t.is_dir() {
            'd'
        } else if t.is_file() {
            'f'
        } else if t.is_symlink() {
            'l'
        } else if t.is_fifo() {
            'p'
        } else {
            '?'
        };
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            size: if kind == 'f' { m.len() } else { 0 },
            hash: if kind == 'f' {
                sha256_hex(&fs::read(p).unwrap())
            } else {
                String::new()
            },
            target: if kind == 'l' {
                fs::read_link(p).unwrap()
            } else {
                PathBuf::new()
            },
            inode_of: PathBuf::new(),
        };
        let rel = p.strip_prefix(root).unwrap().to_owned();
        out.insert(rel, (node, (m.dev(), m.ino())));
    }
    let mut raw = BTreeMap::new();
    add(root, root, &mut raw);
    walk(root, root, &mut raw);
    let mut first: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    raw.iter()
        .map(|(path, (node, ino))| {
            let mut node = node.clone();
            if node.kind == 'f' {
                node.inode_of = first.entry(*ino).or_insert_with(|| path.clone()).clone();
            }
            (path.clone(), node)
        })
        .collect()
}

/// Asserts that the unpacked layer `layer` is exactly the tree `source`,
/// fifos left out (the store skips them). Without `root`, the layer root's
/// own metadata is not compared (the tar had no entry for it).
fn assert_same_tree(source: &Path, layer: &Path, root: bool, what: &str) {
    let mut want = tree(source);
    want.retain(|_, n| n.kind != 'p');
    let mut got = tree(layer);
    if !root {
        want.remove(Path::new(""));
        got.remove(Path::new(""));
    }
    for (path, node) in &want {
        assert_eq!(got.get(path), Some(node), "{what}: {}", path.display());
    }
    let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    assert!(extra.is_empty(), "{what}: the layer has more: {extra:?}");
}

/// A small root file system with every kind of entry the store must keep:
/// busybox and applet symlinks, a setuid file, a hard link, an absolute
/// symlink, files owned by 1000:1000, an empty 0700 directory, a fifo, and
/// an odd-sized file sorted last.
fn build_rootfs(at: &Path) {
    use std::os::unix::fs::{chown, symlink};
    for d in ["bin", "etc", "home/user", "empty"] {
        fs::create_dir_all(at.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", at.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "ls"] {
        symlink("busybox", at.join("bin").join(applet)).unwrap();
    }
    fs::write(at.join("bin/su"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(at.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(at.join("etc/motd"), b"hello from the root file system\n").unwrap();
    fs::hard_link(at.join("etc/motd"), at.join("etc/motd.hard")).unwrap();
    symlink("/usr/share/zoneinfo/UTC", at.join("etc/localtime")).unwrap();
    fs::write(at.join("home/user/notes"), b"mine\n").unwrap();
    chown(at.join("home/user/notes"), Some(1000), Some(1000)).unwrap();
    chown(at.join("home/user"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(at.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    run(Command::new("mkfifo").arg(at.join("fifo")));
    fs::write(at.join("zz-odd"), b"odd").unwrap();
    fs::set_permissions(at, fs::Permissions::from_mode(0o755)).unwrap();
    // Whole-second times, a different one per entry: GNU tar truncates
    // sub-second times, Go's archive/tar (umoci) rounds them.
    let paths: Vec<PathBuf> = tree(at).keys().map(|p| at.join(p)).collect();
    for (i, p) in paths.iter().enumerate() {
        let t = rustix::fs::Timespec {
            tv_sec: 1_700_000_000 + 61 * i64::try_from(i).unwrap(),
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

/// The root file system, and the same content in every format the store
/// reads, made by the real tools.
struct Formats {
    /// The tree itself.
    rootfs: PathBuf,
    /// (what, source path, name the image gets, whether the layer carries
    /// an entry for the root directory).
    sources: Vec<(&'static str, PathBuf, &'static str, bool)>,
    /// `tar -C rootfs -c .`, plain, then gzip and zstd compressed.
    tars: [PathBuf; 3],
}

fn formats() -> &'static Formats {
    static F: OnceLock<Formats> = OnceLock::new();
    F.get_or_init(build_formats)
}

fn build_formats() -> Formats {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-formats");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let rootfs = dir.join("rootfs");
    build_rootfs(&rootfs);

    // umoci: one layer holding the tree, written by `insert` (whose layer
    // ends without tar padding or trailer, and names the root `/`).
    umoci(&["init", "--layout", "L"], &dir);
    umoci(&["new", "--image", "L:base"], &dir);
    umoci(
        &["insert", "--image", "L:base", "--tag", "v1", "rootfs", "/"],
        &dir,
    );
    let sk = |to: &str, extra: &[&str]| skopeo("oci:L:v1", to, extra, &dir);
    sk("oci:O:v1", &[]);
    sk("oci:Z:v1", &["--dest-compress-format", "zstd"]);
    sk("oci:V:v1", &["--format", "v2s2"]);
    sk("oci-archive:oci.tar:v1", &[]);
    sk("docker-archive:docker.tar:test/rootfs:v1", &[]);
    sk("dir:DG", &[]);
    // `--dest-decompress` only acts on `dir:` destinations; an OCI layout
    // with uncompressed layers is made from such a copy.
    sk("dir:DP", &["--dest-decompress"]);
    skopeo(
        "dir:DP",
        "oci:P:v1",
        &["--dest-oci-accept-uncompressed-layers"],
        &dir,
    );

    // `docker export` style: a plain tar of the tree, then compressed.
    run(Command::new("tar")
        .args(["--sort=name", "-C", "rootfs", "-cf", "rootfs.tar", "."])
        .current_dir(&dir));
    let plain = fs::read(dir.join("rootfs.tar")).unwrap();
    fs::write(dir.join("rootfs.tar.gz"), gzip(&plain)).unwrap();
    fs::write(
        dir.join("rootfs.tar.zst"),
        zstd::encode_all(&plain[..], 3).unwrap(),
    )
    .unwrap();
    // As `docker export` writes it: no `./` prefix and no root entry.
    let mut top: Vec<String> = fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    run(Command::new("tar")
        .args(["--sort=name", "-C", "rootfs", "-cf", "export.tar"])
        .args(&top)
        .current_dir(&dir));

    let at = |p: &str| dir.join(p);
    Formats {
        sources: vec![
            ("umoci layout", at("L/"), "v1", true),
            ("skopeo oci: gzip", at("O"), "v1", true),
            ("skopeo oci: zstd", at("Z"), "v1", true),
            ("skopeo oci: uncompressed", at("P"), "v1", true),
            ("skopeo oci: --format v2s2", at("V"), "v1", true),
            ("skopeo oci-archive:", at("oci.tar"), "v1", true),
            (
                "skopeo docker-archive:",
                at("docker.tar"),
                "docker.io/test/rootfs:v1",
                true,
            ),
            ("skopeo dir: gzip", at("DG"), "", true),
            ("skopeo dir: uncompressed", at("DP"), "", true),
            ("tar -c . (plain)", at("rootfs.tar"), "", true),
            ("tar -c . | gzip", at("rootfs.tar.gz"), "", true),
            ("tar -c . | zstd", at("rootfs.tar.zst"), "", true),
            ("docker export style", at("export.tar"), "", false),
        ],
        tars: [at("rootfs.tar"), at("rootfs.tar.gz"), at("rootfs.tar.zst")],
        rootfs,
    }
}

#[test]
fn every_format_imports_exactly_the_tree() {
    if !can_run() {
        return;
    }
    let f = formats();
    for (what, source, name, root) in &f.sources {
        let (_tmp, store) = new_store();
        let report = if source.ends_with("L/") {
            // The layout also holds `base` (no layers): take v1.
            store.import(source)
        } else {
            store.import_named(source, "named:it")
        }
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let v1 = report
            .images
            .iter()
            .find(|i| i.names.iter().any(|n| n == "named:it" || n == "v1"))
            .unwrap_or_else(|| panic!("{what}: {report:?}"));
        if !name.is_empty() {
            assert!(v1.names.iter().any(|n| n == name), "{what}: {v1:?}");
        }
        let skipped: Vec<_> = report.skipped.iter().map(|s| s.entry.as_str()).collect();
        assert!(
            skipped.len() == 1 && skipped[0].trim_start_matches("./") == "fifo",
            "{what}: {skipped:?}"
        );
        let lower = store.lowerdirs(&v1.id).unwrap();
        assert_eq!(lower.len(), 1, "{what}");
        assert_same_tree(&f.rootfs, &lower[0], *root, what);
        let out = Command::new(lower[0].join("bin/busybox"))
            .args(["echo", "runs"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"runs\n", "{what}");
        // Nothing left in staging.
        assert_eq!(count_entries(&store.root().join("tmp")), 0, "{what}");
    }
}

#[test]
fn rootfs_tar_is_a_one_layer_image_with_a_stable_id() {
    if !can_run() {
        return;
    }
    let f = formats();
    let (_tmp, store) = new_store();
    let mut ids = Vec::new();
    for tar in &f.tars {
        let report = store.import(tar).unwrap();
        assert_eq!(report.images.len(), 1);
        assert!(report.images[0].names.is_empty(), "untagged without a name");
        ids.push(report.images[0].id.clone());
    }
    // The same tar stream gives the same config whatever its compression:
    // one image, the first blob kept.
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(store.list().unwrap().len(), 1);
    let info = store.inspect(&ids[0]).unwrap();
    assert_eq!(info.os.as_deref(), Some("linux"));
    assert_eq!(info.architecture.as_deref(), Some("amd64"));
    assert_eq!(info.config.entrypoint, None);
    assert_eq!(info.config.cmd, None);
    assert_eq!(info.layers.len(), 1);
    assert_eq!(
        info.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    let plain = fs::read(&f.tars[0]).unwrap();
    assert_eq!(
        info.layers[0].diff_id,
        format!("sha256:{}", sha256_hex(&plain))
    );
    assert_eq!(info.layers[0].digest, info.layers[0].diff_id);
    // created: the newest modification time in the tar, not the clock.
    let newest = tree(&f.rootfs).values().map(|n| n.mtime).max().unwrap();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-d", &format!("@{newest}")])
        .output()
        .unwrap();
    assert_eq!(
        info.created.as_deref(),
        Some(String::from_utf8(date.stdout).unwrap().trim())
    );
    let again = {
        let (_t, other) = new_store();
        other.import(&f.tars[1]).unwrap().images[0].id.clone()
    };
    assert_eq!(again, ids[0], "another store, the same id");

    // A name given on import; a second name for the same tar adds to it.
    let r = store.import_named(&f.tars[0], "rootfs:v1").unwrap();
    assert!(!r.images[0].new);
    store.import_named(&f.tars[1], "rootfs:v2").unwrap();
    assert_eq!(
        store.inspect("rootfs:v1").unwrap().names,
        ["rootfs:v1", "rootfs:v2"]
    );
}

#[test]
fn a_name_needs_a_source_of_one_image() {
    if !can_run() {
        return;
    }
    let (_tmp, store) = new_store();
    let before = snapshot(store.root());
    // The fixture layout holds five images.
    match store.import_named(&fixtures().layout, "one") {
        Err(e @ StoreError::NameForMany { images: 5, .. }) => {
            assert!(e.to_string().contains("5 images"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.import_named(&formats().tars[0], "bad name"),
        Err(StoreError::InvalidName { .. })
    ));
    assert_eq!(snapshot(store.root()), before);
    // One image: the name is added to the archive's own.
    let r = store.import_named(&fixtures().docker, "mine:v4").unwrap();
    assert_eq!(r.images[0].names, ["docker.io/test/img:v4", "mine:v4"]);
}

#[test]
fn hostile_or_broken_rootfs_tars_are_refused() {
    if !can_run() {
        return;
    }
    use tar::EntryType as T;
    let (tmp, store) = new_store();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let before = snapshot(store.root());
    let path = tmp.path().join("rootfs.tar");

    let escape = layer_tar(&[
        (b"./", T::Directory, b"", b""),
        (b"../x", T::Regular, b"", b"x"),
    ]);
    fs::write(&path, &escape).unwrap();
    let err = store.import(&path).unwrap_err();
    assert!(err.to_string().contains("\"../x\""), "{err}");
    assert!(err.to_string().contains("`..`"), "{err}");
    assert_eq!(snapshot(store.root()), before);

    let outside_s = outside.display().to_string();
    let through = layer_tar(&[
        (b"./", T::Directory, b"", b""),
        (b"./etc", T::Symlink, outside_s.as_bytes(), b""),
        (b"./etc/passwd", T::Regular, b"", b"root::0:0::/:/bin/sh\n"),
    ]);
    fs::write(&path, &through).unwrap();
    match store.import(&path) {
        Err(e @ StoreError::UnsafeEntry { .. }) => {
            assert!(e.to_string().contains("goes through the symlink"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count_entries(&outside), 0, "nothing written outside");
    assert_eq!(snapshot(store.root()), before);

    // Cut short: gzip and zstd streams ending early, a tar cut inside an
    // entry's data, and one cut at an entry boundary (no end marker).
    let f = formats();
    let plain = fs::read(&f.tars[0]).unwrap();
    let gz = fs::read(&f.tars[1]).unwrap();
    let zst = fs::read(&f.tars[2]).unwrap();
    let boundary = {
        // The header of the last entry (zz-odd) starts 1536 bytes before
        // the end-of-archive blocks of a tar written in 10 KiB records...
        // find it instead: the last header is where "zz-odd" is named.
        let at = plain
            .windows(8)
            .rposition(|w| w == b"./zz-odd")
            .expect("zz-odd in the tar");
        at - at % 512
    };
    for (what, bytes) in [
        ("gzip", &gz[..gz.len() * 2 / 3]),
        ("gzip end", &gz[..gz.len() - 4]),
        ("zstd", &zst[..zst.len() / 2]),
        ("data", &plain[..plain.len() / 2 + 7]),
        ("boundary", &plain[..boundary]),
    ] {
        let cut = tmp.path().join(format!("cut-{what}"));
        fs::write(&cut, bytes).unwrap();
        match store.import(&cut) {
            Err(e @ StoreError::CorruptArchive { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&cut.display().to_string()), "{what}: {msg}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(snapshot(store.root()), before, "{what}");
    }
}

/// A download's staging directory: on the store's file system, empty,
/// removed with its guard and by the next `open`; the store's blobs are
/// found by digest for it to link instead of fetching.
#[test]
fn incoming_dirs_and_blob_files() {
    if !can_run() {
        return;
    }
    let f = fixtures();
    let (_tmp, store) = new_store();
    store.import(&f.layout_v1).unwrap();
    let info = store.inspect("v1").unwrap();
    let layer = &info.layers[0].digest;
    let blob = store.blob_file(layer).expect("the layer's blob");
    assert!(blob.starts_with(store.root()));
    assert_eq!(store.blob_file(&format!("sha256:{}", "0".repeat(64))), None);
    assert_eq!(store.blob_file("sha256:nothex"), None);

    let staging = store.incoming().unwrap();
    let dir = staging.path().to_path_buf();
    assert!(dir.is_dir() && count_entries(&dir) == 0);
    // A hard link from the store's blob works: same file system.
    fs::hard_link(&blob, dir.join("blob")).unwrap();
    drop(staging);
    assert!(!dir.exists());
    assert!(blob.is_file(), "the store's blob outlives the staging");

    // What a crashed download left is gone at the next open.
    let left = store.incoming().unwrap();
    let left_path = left.path().to_path_buf();
    std::mem::forget(left);
    fs::write(left_path.join("partial"), b"x").unwrap();
    let store = Store::open(store.root()).unwrap();
    assert!(!left_path.exists());
    assert!(store.inspect("v1").is_ok());
}
