//! Boot-time containers on the builder side: `[[container]]` tables embed
//! their image archives (made here with umoci and busybox-static, one
//! converted to `docker save` form with skopeo) and the
//! manifest hostd reads at boot; the initramfs is read back with zstd and
//! cpio. Bad archives and values fail the build with the profile position and
//! the fix. (Starting the containers at boot is hostd's side.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mkhost::hashing::sha256_file;
use mkhost_shared::container::BootManifest;

use crate::hostile::failing_build;
use crate::support::{
    build, build_custom, built, mkhost, run, scratch, text, unpack_initramfs, workspace,
};

/// `dir/NAME.tar`: an OCI layout tar made with umoci (its layout stays in
/// `dir/NAME`) holding one image tagged `tag`: Debian's static busybox with
/// a few applet links, with `cmd` as its command.
pub fn image_archive(dir: &Path, name: &str, tag: &str, cmd: &str) -> PathBuf {
    image_archive_with(dir, name, tag, cmd, &|_| {})
}

/// [`image_archive`], with `extra` adding files to the root file system
/// (given its path) before the layer is made.
pub fn image_archive_with(
    dir: &Path,
    name: &str,
    tag: &str,
    cmd: &str,
    extra: &dyn Fn(&Path),
) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let layout = format!("{name}:{tag}");
    let bundle = format!("{name}-bundle");
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(dir));
    umoci(&["init", "--layout", name]);
    umoci(&["new", "--image", &layout]);
    umoci(&["unpack", "--rootless", "--image", &layout, &bundle]);
    let rootfs = dir.join(&bundle).join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "true", "head", "tr", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    extra(&rootfs);
    umoci(&["repack", "--image", &layout, &bundle]);
    umoci(&["config", "--image", &layout, "--config.cmd", cmd]);
    let tar = dir.join(format!("{name}.tar"));
    run(Command::new("tar")
        .arg("-C")
        .arg(dir.join(name))
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn inspect(path: &Path) -> String {
    let output = mkhost().arg("inspect").arg(path).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn containers_embed_their_archives_and_the_boot_manifest() {
    let work = scratch("boot-containers");
    let bb = image_archive(&work.join("images"), "bb", "bb", "sh");
    let tools = image_archive(&work.join("elsewhere"), "tools", "tools:1", "echo");
    // The same busybox image as a `docker save` archive, converted by skopeo.
    let saved = work.join("elsewhere/saved.tar");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q"])
        .arg(format!("oci:{}:bb", work.join("images/bb").display()))
        .arg(format!("docker-archive:{}:test/saved:2", saved.display())));
    let (bb_sha, tools_sha) = (sha256_file(&bb).unwrap(), sha256_file(&tools).unwrap());
    let saved_sha = sha256_file(&saved).unwrap();
    let dir = build_custom(
        &work,
        "boxes",
        "qemu.toml",
        &format!(
            r#"
# Four boot-time images (5 MiB in the store) beside the qemu image: 129 MiB
# since hostd carries the Docker API (+0.9 MiB unpacked, each budget term
# rounded up). This test is about embedding; the budget has its own.
[boot]
min_ram_mib = 160

[[container]]
name = "web"
archive = "images/bb.tar"
image = "bb"
command = ["httpd", "-f", "-p", "80"]
env = ["GREETING=hi"]
restart = "always"
memory = "64M"
cpus = 0.5
cpu_weight = 50
pids = 100
cpuset_cpus = "0"

[[container]]
name = "job"
archive = "{}"
image = "tools:1"
restart = "on-failure:3"

[[container]]
name = "shell"
archive = "./elsewhere/../images/bb.tar"
image = "docker.io/library/bb:latest"

[[container]]
name = "saved"
archive = "elsewhere/saved.tar"
image = "test/saved:2"
"#,
            tools.display()
        ),
    );

    // The artifact manifest records each container and its archive.
    let m = manifest(&dir);
    let containers = m["containers"].as_array().unwrap();
    let field = |key: &str| -> Vec<&str> {
        containers
            .iter()
            .map(|c| c[key].as_str().unwrap())
            .collect()
    };
    assert_eq!(field("name"), ["web", "job", "shell", "saved"]);
    assert_eq!(
        field("image"),
        [
            "bb",
            "tools:1",
            "docker.io/library/bb:latest",
            "test/saved:2"
        ]
    );
    assert_eq!(field("restart"), ["always", "on-failure:3", "no", "no"]);
    assert_eq!(
        field("archive_sha256"),
        [&bb_sha, &tools_sha, &bb_sha, &saved_sha]
    );
    let ids = field("image_id");
    assert!(ids.iter().all(|id| id.starts_with("sha256:")), "{ids:?}");
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[1]);
    assert_eq!(
        containers[0]["archive_bytes"].as_u64().unwrap(),
        fs::metadata(&bb).unwrap().len()
    );
    // The store hostd fills at boot is in the RAM budget: the layer blobs
    // (bb and tools share theirs; saved stores it uncompressed) and
    // busybox unpacked, at least once.
    let ram = &m["ram"];
    let term = |key: &str| ram[key].as_u64().unwrap();
    assert!(term("boot_images_mib") >= 3, "{ram}");
    assert_eq!(
        term("required_mib"),
        term("kernel_mib")
            + term("initramfs_compressed_mib")
            + term("initramfs_unpacked_mib")
            + term("boot_images_mib")
            + term("headroom_mib"),
        "{ram}"
    );

    // Read back with zstd and cpio: the manifest and each archive once,
    // named by content, mode 0644.
    let (cpio, root) = unpack_initramfs(
        &dir.join("pxe/initramfs.img"),
        &work,
        &["etc/hostd/containers.json", "usr/share/hostd/images/*"],
    );
    let listing = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&cpio)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let mut embedded: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("usr/share/hostd/images/"))
        .collect();
    embedded.sort_unstable();
    let mut want = vec![
        format!("usr/share/hostd/images/{bb_sha}.tar"),
        format!("usr/share/hostd/images/{tools_sha}.tar"),
        format!("usr/share/hostd/images/{saved_sha}.tar"),
    ];
    want.sort();
    assert_eq!(embedded, want, "{listing}");
    for (source, sha) in [(&bb, &bb_sha), (&tools, &tools_sha), (&saved, &saved_sha)] {
        let inside = root.join(format!("usr/share/hostd/images/{sha}.tar"));
        assert_eq!(&sha256_file(&inside).unwrap(), sha);
        assert!(fs::read(&inside).unwrap() == fs::read(source).unwrap());
        let mode = fs::metadata(&inside).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644, "{}", inside.display());
    }

    let json = fs::read(root.join("etc/hostd/containers.json")).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let expected = serde_json::json!({
        "archives": [
            {"path": format!("/usr/share/hostd/images/{bb_sha}.tar"), "sha256": bb_sha},
            {"path": format!("/usr/share/hostd/images/{tools_sha}.tar"), "sha256": tools_sha},
            {"path": format!("/usr/share/hostd/images/{saved_sha}.tar"), "sha256": saved_sha},
        ],
        "containers": [
            {
                "image": "bb",
                "name": "web",
                "command": ["httpd", "-f", "-p", "80"],
                "env": ["GREETING=hi"],
                "limits": {
                    "memory": 67108864,
                    "nano_cpus": 500000000,
                    "cpu_weight": 50,
                    "pids": 100,
                    "cpuset_cpus": "0"
                },
                "restart": "always",
                "pull": "never"
            },
            {"image": "tools:1", "name": "job", "restart": "on-failure:3", "pull": "never"},
            {"image": "docker.io/library/bb:latest", "name": "shell", "pull": "never"},
            {"image": "test/saved:2", "name": "saved", "pull": "never"},
        ]
    });
    assert_eq!(value, expected);
    // hostd's own type reads it, and would accept every request.
    let boot: BootManifest = serde_json::from_slice(&json).unwrap();
    for request in &boot.containers {
        request.validate().unwrap();
    }

    // inspect shows them.
    let shown = inspect(&dir.join("pxe/initramfs.img"));
    for want in [
        "boot-time containers: 4 (3 image archives)",
        "container web: image bb, restart always, memory 64.0 MiB, cpus 0.5, pids 100",
        "container job: image tools:1, restart on-failure:3",
        "container shell: image docker.io/library/bb:latest, restart no",
        &format!("archive /usr/share/hostd/images/{bb_sha}.tar: 1."),
    ] {
        assert!(shown.contains(want), "{want:?} missing:\n{shown}");
    }
    assert!(!shown.contains("NOT match"), "{shown}");
}

#[test]
fn a_profile_without_containers_has_no_boot_manifest() {
    let dir = built("qemu");
    assert_eq!(manifest(dir)["containers"], serde_json::json!([]));
    let shown = inspect(&dir.join("pxe/initramfs.img"));
    assert!(!shown.contains("/etc/hostd"), "{shown}");
    assert!(!shown.contains("/usr/share/hostd"), "{shown}");
    assert!(!shown.contains("boot-time containers"), "{shown}");
}

#[test]
fn builds_with_containers_are_reproducible_wherever_the_archive_lives() {
    let work = scratch("boot-containers-repro");
    let archive = image_archive(&work.join("made"), "bb", "bb", "sh");
    // The same profile and archive bytes in two places, built three times
    // (the second build of the first reads the archive's image list from the cache).
    let mut outputs = Vec::new();
    for (place, out) in [("a", "out1"), ("a", "out2"), ("b", "out3")] {
        let dir = work.join(place);
        fs::create_dir_all(dir.join("images")).unwrap();
        fs::copy(&archive, dir.join("images/bb.tar")).unwrap();
        let profile = dir.join("repro.toml");
        fs::write(
            &profile,
            "extends = \"qemu\"\n[[container]]\nname = \"web\"\narchive = \"images/bb.tar\"\nimage = \"bb\"\nrestart = \"always\"\n",
        )
        .unwrap();
        let out = work.join(out);
        let output = build(profile.to_str().unwrap(), &out, &["--quiet"]);
        assert!(output.status.success(), "{}", text(&output));
        outputs.push(out.join("repro"));
    }
    for rel in [
        "mkhost-repro.img",
        "mkhost-repro.efi",
        "pxe/vmlinuz",
        "pxe/initramfs.img",
        "pxe/boot.ipxe",
        "manifest.json",
        "SHA256SUMS",
    ] {
        let first = fs::read(outputs[0].join(rel)).unwrap();
        for other in &outputs[1..] {
            assert!(
                fs::read(other.join(rel)).unwrap() == first,
                "{rel} differs between {} and {}",
                outputs[0].display(),
                other.display()
            );
        }
    }
}

#[test]
fn hostile_archives_and_values_fail_with_position_and_fix() {
    built("qemu"); // the kernel is in the cache
    let dir = scratch("boot-containers-hostile");
    let images = dir.join("images");
    let bb = image_archive(&images, "bb", "bb", "sh");
    image_archive(&images, "other", "bb", "echo");
    std::os::unix::fs::symlink("/dev/zero", images.join("zero.tar")).unwrap();
    run(Command::new("mkfifo").arg(images.join("fifo.tar")));
    let bytes = fs::read(&bb).unwrap();
    fs::write(images.join("cut.tar"), &bytes[..bytes.len() / 2]).unwrap();
    // A layout whose layer blob was changed after the manifest named it.
    let layers = images.join("bb/blobs/sha256");
    let layer = fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut blob = fs::read(&layer).unwrap();
    let last = blob.len() - 100;
    blob[last] ^= 0xff;
    fs::write(&layer, blob).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(images.join("bb"))
        .arg("-cf")
        .arg(images.join("corrupt.tar"))
        .arg("."));
    run(Command::new("tar")
        .arg("-C")
        .arg(&images)
        .arg("-cf")
        .arg(images.join("plain.tar"))
        .arg("bb-bundle/config.json"));

    let container = |archive: &str, image: &str, extra: &str| {
        format!(
            "extends = \"qemu\"\n[[container]]\nname = \"web\"\narchive = \"{archive}\"\nimage = \"{image}\"\n{extra}"
        )
    };
    let resolved = |name: &str| dir.join(name).display().to_string();
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            container("images/nope.tar", "bb", ""),
            vec![
                "bad.toml:4:11".into(),
                format!("cannot read archive {}", resolved("images/nope.tar")),
                "No such file".into(),
            ],
        ),
        (
            container("images", "bb", ""),
            vec![
                "bad.toml:4:11".into(),
                "is a directory".into(),
                "tar -C DIR -cf IMAGE.tar .".into(),
            ],
        ),
        (
            container("images/zero.tar", "bb", ""),
            vec![
                "bad.toml:4:11".into(),
                "is a character device, not a regular file".into(),
            ],
        ),
        (
            container("images/fifo.tar", "bb", ""),
            vec![
                "bad.toml:4:11".into(),
                "is a fifo, not a regular file".into(),
            ],
        ),
        (
            container("images/cut.tar", "bb", ""),
            vec![
                "bad.toml:4:11".into(),
                "is not a usable image archive".into(),
                "truncated or corrupt".into(),
                "copy it again".into(),
            ],
        ),
        (
            container("images/corrupt.tar", "bb", ""),
            vec![
                "bad.toml:4:11".into(),
                "but should have".into(),
                "fetch it again".into(),
            ],
        ),
        (
            container("images/plain.tar", "bb", ""),
            vec!["bad.toml:4:11".into(), "neither an OCI image layout".into()],
        ),
        (
            container("images/bb.tar", "busybox", ""),
            vec![
                "bad.toml:5:9".into(),
                format!(
                    "image \"busybox\" not in archive {} (it has: \"bb\")",
                    resolved("images/bb.tar")
                ),
                "set `image` to one of these".into(),
            ],
        ),
        (
            container("images/bb.tar", "bb", "memory = \"99999999999T\"\n"),
            vec!["bad.toml:6:10".into(), "is too large".into()],
        ),
        (
            container("images/bb.tar", "bb", "memory = 1024\n"),
            vec!["bad.toml:6:10".into(), "below the minimum of 6 MiB".into()],
        ),
        (
            container("images/bb.tar", "bb", "memory = true\n"),
            vec!["bad.toml:6:10".into(), "must be a size like \"64M\"".into()],
        ),
        (
            container("images/bb.tar", "bb", "cpus = \"lots\"\n"),
            vec!["bad.toml:6:8".into(), "expected e.g. 0.5 or 2".into()],
        ),
        (
            container("images/bb.tar", "bb", "restart = \"sometimes\"\n"),
            vec![
                "bad.toml:6:11".into(),
                "use no, always, unless-stopped, on-failure or on-failure:N".into(),
            ],
        ),
        (
            container("images/bb.tar", "bb", "command = \"httpd -f\"\n"),
            vec!["bad.toml:6:11".into(), "expected a sequence".into()],
        ),
        (
            container("images/bb.tar", "bb", "imagee = \"x\"\n"),
            vec!["bad.toml:6:1".into(), "unknown field `imagee`".into()],
        ),
        (
            format!(
                "{}[[container]]\nname = \"db\"\narchive = \"images/other.tar\"\nimage = \"bb\"\n",
                container("images/bb.tar", "bb", "")
            ),
            vec![
                "bad.toml:5:9".into(),
                "at boot it would mean \"bb\" from archive".into(),
                "bad.toml:6:1".into(),
                "give the images distinct names, or use the id sha256:".into(),
            ],
        ),
    ];
    for (body, wants) in &cases {
        let err = failing_build(&dir, body);
        for want in wants {
            assert!(err.contains(want.as_str()), "{want:?} missing:\n{err}");
        }
    }

    // A name used again in a profile that extends another: both places named.
    fs::write(
        dir.join("parent.toml"),
        "extends = \"qemu\"\n[[container]]\nname = \"web\"\narchive = \"images/bb.tar\"\nimage = \"bb\"\n",
    )
    .unwrap();
    let err = failing_build(
        &dir,
        "extends = \"parent\"\n[[container]]\nname = \"web\"\narchive = \"images/other.tar\"\nimage = \"bb\"\n",
    );
    assert!(err.contains("bad.toml:3:8"), "{err}");
    assert!(
        err.contains("container name \"web\" is already used at"),
        "{err}"
    );
    assert!(err.contains("parent.toml:2:1"), "{err}");
}

/// The `N` of "boot-time images N MiB" in a budget error.
fn boot_images_mib(err: &str) -> u64 {
    let (_, rest) = err
        .split_once("boot-time images ")
        .unwrap_or_else(|| panic!("no boot-time images term: {err}"));
    rest.split_once(" MiB (store blobs + unpacked layers)")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("malformed term: {err}"))
}

#[test]
fn boot_time_images_count_unpacked_in_the_ram_budget() {
    let work = scratch("boot-containers-ram");
    // 64 MiB of zeros: the archive stays small (the layer is gzip), the
    // store hostd makes of it at boot does not.
    let big = image_archive_with(&work.join("images"), "big", "big", "sh", &|rootfs| {
        fs::write(rootfs.join("zeros"), vec![0u8; 64 << 20]).unwrap();
        // Unique bytes, so no cached listing from another run is used.
        fs::write(rootfs.join("etc/test-run"), work.display().to_string()).unwrap();
    });
    let archive_bytes = fs::metadata(&big).unwrap().len();
    assert!(archive_bytes < 4 << 20, "{archive_bytes}");
    let profile = |min_ram_mib: u64| {
        format!(
            "extends = \"{}\"\n[boot]\nmin_ram_mib = {min_ram_mib}\n\n\
             [[container]]\nname = \"big\"\narchive = \"images/big.tar\"\nimage = \"big\"\n",
            workspace().join("profiles/qemu.toml").display()
        )
    };

    // Layers that unpack to more than the whole RAM are refused while they
    // are read (a decompression bomb stops there), before the budget.
    let err = failing_build(&work, &profile(48));
    assert!(
        err.contains("container \"big\": the layers of archive")
            && err.contains("unpack to more than 48 MiB (min_ram_mib)"),
        "{err}"
    );

    // qemu's 128 MiB holds the kernel, the initramfs and the archive, but
    // not the store hostd unpacks it into at boot.
    let err = failing_build(&work, &profile(128));
    assert!(
        err.contains("the image needs") && err.contains("above min_ram_mib = 128"),
        "{err}"
    );
    assert!(err.contains("or use smaller boot-time images"), "{err}");
    let images = boot_images_mib(&err);
    assert!((64..72).contains(&images), "{err}");

    // With the RAM raised it builds, and the manifest carries the term.
    let dir = build_custom(
        &work,
        "big",
        "qemu.toml",
        "[boot]\nmin_ram_mib = 256\n\n[[container]]\nname = \"big\"\narchive = \"images/big.tar\"\nimage = \"big\"\n",
    );
    let ram = &manifest(&dir)["ram"];
    assert_eq!(ram["boot_images_mib"].as_u64().unwrap(), images, "{ram}");
    assert!(ram["required_mib"].as_u64().unwrap() > 128, "{ram}");
    assert_eq!(ram["min_ram_mib"].as_u64().unwrap(), 256, "{ram}");
}
