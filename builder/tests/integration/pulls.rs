//! Images a profile names by reference: `mkhost build` pulls them from a real
//! registry (Debian's `docker-registry` on loopback, images pushed with
//! skopeo: [`mkhost_registry::testkit`]), embeds them as OCI layout tars,
//! records their digests in `mkhost.lock` and `manifest.json`, rebuilds the
//! same bytes from the lock after the tag moved and with the registry gone,
//! and leaves `pull = "boot"` images to hostd. Bad references, missing tags,
//! unreachable registries and corrupt blobs fail with the profile, the
//! container, the reference and the step. Nothing is booted here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mkhost::hashing::sha256_file;
use mkhost_registry::testkit::{free_port, images, push, registry_tools, require_tools, Registry};
use mkhost_shared::boot_config::BootConfig;
use mkhost_shared::container::{BootManifest, PullPolicy};

use crate::hostile::failing_build_within;
use crate::support::{built, mkhost, run, scratch, text, unpack_initramfs, workspace};

/// The tools these tests need besides the registry's.
fn tools() -> bool {
    registry_tools() && require_tools(&["zstd", "cpio"])
}

/// Builds `dir/NAME.toml` (`body` under `extends = "qemu"`) into `out`
/// with the lock file `lock` and `extra` flags.
fn build_with(
    dir: &Path,
    name: &str,
    body: &str,
    out: &Path,
    lock: &Path,
    extra: &[&str],
) -> Output {
    let profile = dir.join(format!("{name}.toml"));
    fs::write(
        &profile,
        format!(
            "extends = \"{}\"\n{body}",
            workspace().join("profiles/qemu.toml").display()
        ),
    )
    .unwrap();
    mkhost()
        .args(["build", "--profile"])
        .arg(&profile)
        .arg("--out")
        .arg(out)
        .arg("--lockfile")
        .arg(lock)
        .args(extra)
        .output()
        .expect("run mkhost")
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The manifest digest the registry serves for `reference` (skopeo's view).
fn registry_digest(reference: &str) -> String {
    run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{reference}"),
    ]))
    .trim()
    .to_owned()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn locked_digest(lock: &Path, profile: &str, reference: &str) -> Option<String> {
    let lock: toml::Value = toml::from_str(&fs::read_to_string(lock).unwrap()).unwrap();
    lock["profiles"][profile]
        .get("images")?
        .get(reference)?
        .get("digest")?
        .as_str()
        .map(str::to_owned)
}

#[test]
fn pulled_images_are_embedded_locked_and_rebuilt_from_the_lock() {
    if !tools() {
        return;
    }
    built("qemu"); // the kernel is in the cache
    let work = scratch("pulls");
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), "", None);
    let host = registry.host();
    push(&host, "bb", "test/bb:1");
    let web = format!("{host}/test/bb:1");
    let lazy = format!("{host}/test/lazy:2");
    let body = format!(
        r#"
[registries]
insecure = ["{host}"]
mirrors = {{ "docker.io" = ["mirror.invalid:5000"] }}

[[container]]
name = "web"
image = "{web}"
command = ["sh", "-c", "sleep 1000"]
restart = "always"

[[container]]
name = "lazy"
image = "{lazy}"
pull = "boot"
"#
    );
    let lock = work.join("mkhost.lock");
    let out = |n: &str| work.join(n);

    // 1. A first build pulls (without --locked: the tag is resolved).
    // (The blobs may be in the shared cache already: another test pulls
    // the same test image.)
    let log = ok(build_with(&work, "pulled", &body, &out("a"), &lock, &[]));
    assert!(
        log.contains("mkhost: pulling container images: 1 images"),
        "{log}"
    );
    // Without a terminal: a plain line per blob fetched.
    assert!(
        log.contains(", 0 B fetched") || log.contains(&format!("mkhost: {web}: blob sha256:")),
        "{log}"
    );
    let digest1 = registry_digest(&web);
    assert_eq!(
        locked_digest(&lock, "pulled", &web).as_deref(),
        Some(digest1.as_str())
    );
    assert_eq!(
        locked_digest(&lock, "pulled", &lazy),
        None,
        "boot pulls are not locked"
    );
    let dir = out("a/pulled");
    let m = manifest(&dir);
    let containers = m["containers"].as_array().unwrap();
    assert_eq!(containers[0]["image"], web.as_str());
    assert_eq!(containers[0]["pull"], "build");
    assert_eq!(containers[0]["manifest_digest"], digest1.as_str());
    let archive_sha = containers[0]["archive_sha256"].as_str().unwrap().to_owned();
    assert!(containers[0]["image_id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(containers[1]["image"], lazy.as_str());
    assert_eq!(containers[1]["pull"], "boot");
    assert!(containers[1].get("archive_sha256").is_none(), "{m}");
    assert!(containers[1].get("image_id").is_none(), "{m}");

    // The initramfs: one archive (web's), the manifest, boot.json's registries.
    let (_, root) = unpack_initramfs(
        &dir.join("pxe/initramfs.img"),
        &work,
        &[
            "etc/hostd/containers.json",
            "etc/mkhost/boot.json",
            "usr/share/hostd/images/*",
        ],
    );
    let boot: BootManifest =
        serde_json::from_slice(&fs::read(root.join("etc/hostd/containers.json")).unwrap()).unwrap();
    assert_eq!(boot.archives.len(), 1);
    assert_eq!(boot.archives[0].sha256, archive_sha);
    assert_eq!(boot.containers[0].image, web);
    assert_eq!(boot.containers[1].image, lazy);
    assert_eq!(boot.containers[1].pull, PullPolicy::Missing);
    for request in &boot.containers {
        request.validate().unwrap();
    }
    let config: BootConfig =
        serde_json::from_slice(&fs::read(root.join("etc/mkhost/boot.json")).unwrap()).unwrap();
    assert_eq!(config.registries.insecure, [host.as_str()]);
    assert_eq!(
        config.registries.mirrors["docker.io"],
        ["mirror.invalid:5000"]
    );
    assert!(config.registries.auths.is_empty());
    // hostd's store code reads the embedded tar and names the image by the
    // canonical reference the container asks for.
    let embedded = root.join(format!("usr/share/hostd/images/{archive_sha}.tar"));
    assert_eq!(sha256_file(&embedded).unwrap(), archive_sha);
    let scratch_dir = tempfile::tempdir().unwrap();
    let listed = mkhost_store::archive_images(&embedded, scratch_dir.path(), 1 << 30).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].names, [web.as_str()]);
    let initrd = |o: &str| fs::read(work.join(o).join("pulled/pxe/initramfs.img")).unwrap();

    // 2. The tag moves; --locked still builds the locked image, to the bit.
    push(&host, "three", "test/bb:1");
    let digest2 = registry_digest(&web);
    assert_ne!(digest1, digest2);
    ok(build_with(
        &work,
        "pulled",
        &body,
        &out("b"),
        &lock,
        &["--locked"],
    ));
    assert!(
        initrd("b") == initrd("a"),
        "--locked did not reproduce the bytes"
    );
    assert!(
        fs::read(out("b/pulled/manifest.json")).unwrap()
            == fs::read(out("a/pulled/manifest.json")).unwrap()
    );

    // 3. Without --locked the tag is resolved again and the lock follows.
    ok(build_with(&work, "pulled", &body, &out("c"), &lock, &[]));
    assert_eq!(
        locked_digest(&lock, "pulled", &web).as_deref(),
        Some(digest2.as_str())
    );
    assert!(initrd("c") != initrd("a"));
    assert_eq!(
        manifest(&out("c/pulled"))["containers"][0]["manifest_digest"],
        digest2.as_str()
    );

    // 4. With the registry gone, --locked builds from the cache alone.
    drop(registry);
    let log = ok(build_with(
        &work,
        "pulled",
        &body,
        &out("d"),
        &lock,
        &["--locked"],
    ));
    assert!(log.contains("no registry contacted"), "{log}");
    assert!(initrd("d") == initrd("c"));
    // A tag cannot be resolved without it: the error says where and what.
    let output = build_with(&work, "pulled", &body, &out("e"), &lock, &[]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    for want in [
        "pulled.toml:",
        "profile \"pulled\"",
        "container \"web\"",
        &format!("image {web}"),
        "resolving the tag failed",
        "cannot connect",
    ] {
        assert!(all.contains(want), "{want:?} missing:\n{all}");
    }
    assert!(!out("e/pulled").exists());

    // 5. --locked refuses an image the lock lacks, naming the fix.
    let more =
        format!("{body}\n[[container]]\nname = \"extra\"\nimage = \"{host}/test/other:1\"\n");
    let output = build_with(&work, "pulled", &more, &out("f"), &lock, &["--locked"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    for want in [
        "--locked:",
        &format!("has no digest for image {host}/test/other:1"),
        "container \"extra\"",
        "profile \"pulled\"",
        "build once without --locked",
    ] {
        assert!(all.contains(want), "{want:?} missing:\n{all}");
    }
}

/// The cache's pull blobs directory.
fn cache_blobs() -> PathBuf {
    let cache = match std::env::var_os("MKHOST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("XDG_CACHE_HOME") {
            Some(dir) => PathBuf::from(dir).join("mkhost"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/mkhost"),
        },
    };
    cache.join("oci/blobs/sha256")
}

#[test]
fn bad_references_tags_registries_and_blobs_fail_with_the_step() {
    if !tools() {
        return;
    }
    built("qemu");
    let work = scratch("pulls-bad");
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), "", None);
    let host = registry.host();
    let profile = |image: &str| {
        format!(
            "extends = \"{}\"\n[registries]\ninsecure = [\"{host}\"]\n\n[[container]]\nname = \"web\"\nimage = \"{image}\"\n",
            workspace().join("profiles/qemu.toml").display()
        )
    };
    let fails = |image: &str, wants: &[&str]| {
        let err = failing_build_within(&work, &profile(image), std::time::Duration::from_secs(300));
        for want in ["bad.toml:7:9", "container \"web\""].iter().chain(wants) {
            assert!(err.contains(want), "{image}: {want:?} missing:\n{err}");
        }
    };
    // A bad digest is refused when the profile is read.
    fails(
        &format!("{host}/test/bb@sha256:abc"),
        &["invalid image reference", "give a reference like"],
    );
    // An unknown host, a port nobody serves, a tag the registry lacks.
    fails(
        "no-such-registry.invalid:5000/test/bb:1",
        &[
            "profile \"bad\"",
            "image no-such-registry.invalid:5000/test/bb:1",
            "resolving the tag failed",
        ],
    );
    let dead = format!("127.0.0.1:{}/test/bb:1", free_port());
    fails(
        &dead,
        &[
            &format!("image {dead}"),
            "resolving the tag failed",
            "cannot connect",
        ],
    );
    push(&host, "bb", "test/bb:1");
    fails(
        &format!("{host}/test/bb:nope"),
        &[
            &format!("image {host}/test/bb:nope"),
            "resolving the tag failed",
            "404",
        ],
    );

    // A blob the registry serves corrupt: an image with a config of its
    // own (so no cache has it), whose bytes are changed in the registry's
    // storage. The pull fails at that step and the cache never holds it.
    let layout = work.join("L");
    run(Command::new("cp")
        .arg("-a")
        .arg(images().join("L"))
        .arg(&layout));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{}:bb", layout.display()),
        "--tag",
        "unique",
        "--config.env",
        &format!("RUN={}", work.display()),
    ]));
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:unique", layout.display()),
        &format!("docker://{host}/test/unique:1"),
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "unique")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest[7..]);
    let image_manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config = image_manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = storage
        .path()
        .join("docker/registry/v2/blobs/sha256")
        .join(&config[7..9])
        .join(&config[7..])
        .join("data");
    let mut bytes = fs::read(&stored).unwrap();
    for b in bytes.iter_mut().take(8) {
        *b = b'x';
    }
    fs::write(&stored, &bytes).unwrap();
    fails(
        &format!("{host}/test/unique:1"),
        &[
            &format!("image {host}/test/unique:1"),
            "pulling failed",
            "config",
            "sha256",
        ],
    );
    assert!(
        !cache_blobs().join(&config[7..]).exists(),
        "a corrupt blob was cached"
    );
    let leftovers: Vec<_> = fs::read_dir(cache_blobs())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() != 64)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
