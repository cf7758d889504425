//! Bad input: each is a clear error naming the problem and the fix, exits 1,
//! never panics, and leaves no artifact under its final name.

use std::path::Path;
use std::time::Duration;

use crate::support::{build, build_within, built, scratch, text};

/// Builds `dir/bad.toml` (with `profile_body`) and expects exit code 1, no
/// panic and nothing published; returns the output.
pub fn failing_build(dir: &Path, profile_body: &str) -> String {
    failing_build_within(dir, profile_body, Duration::from_secs(600))
}

/// [`failing_build`] that must also end within `limit`.
pub fn failing_build_within(dir: &Path, profile_body: &str, limit: Duration) -> String {
    let profile = dir.join("bad.toml");
    std::fs::write(&profile, profile_body).unwrap();
    let out = dir.join("out");
    let output = build_within(profile.to_str().unwrap(), &out, &["--quiet"], limit);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    assert!(
        !out.join("bad").exists(),
        "an artifact dir was published:\n{all}"
    );
    if out.is_dir() {
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "mkhost.lock")
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }
    all
}

#[test]
fn profile_typo_names_file_line_and_column() {
    let dir = scratch("typo");
    let err = failing_build(&dir, "extends = \"qemu\"\n\n[boot]\nmin_ram_mb = 256\n");
    assert!(err.contains("bad.toml:4:1"), "{err}");
    assert!(err.contains("unknown field `min_ram_mb`"), "{err}");
    let err = failing_build(&dir, "extends = \"qemu\"\n[boot]\nmin_ram_mib = \"lots\"\n");
    assert!(
        err.contains("bad.toml:3:15") && err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn unknown_profile_lists_the_available_ones() {
    let out = scratch("noprofile");
    let output = build("rck", &out, &["--quiet"]);
    let err = text(&output);
    assert!(!output.status.success());
    assert!(err.contains("profile \"rck\" not found"), "{err}");
    assert!(err.contains("lab, qemu, rack"), "{err}");
}

#[test]
fn unknown_module_suggests_close_names() {
    let dir = scratch("badmodule");
    built("qemu"); // the kernel is in the cache
    let err = failing_build(
        &dir,
        "extends = \"qemu\"\n[modules]\nload = [\"virtio_nte\"]\n",
    );
    assert!(err.contains("bad.toml:3:9"), "{err}");
    assert!(err.contains("unknown module \"virtio_nte\""), "{err}");
    assert!(err.contains("virtio_net"), "{err}");
}

#[test]
fn missing_kernel_path_and_corrupt_debs_are_named() {
    let dir = scratch("badkernel");
    let err = failing_build(
        &dir,
        "extends = \"qemu\"\n[kernel]\nsource = \"path\"\npath = \"/nonexistent/vmlinuz\"\n",
    );
    assert!(err.contains("/nonexistent/vmlinuz"), "{err}");

    std::fs::write(dir.join("garbage.deb"), b"not a deb").unwrap();
    let err = failing_build(
        &dir,
        "extends = \"qemu\"\n[kernel]\nsource = \"deb\"\npackage = \"garbage.deb\"\n",
    );
    assert!(err.contains("garbage.deb is not a Debian package"), "{err}");

    // A real package, truncated as by an interrupted download.
    let cache = mkhost::sources::Cache::default_root().join("debs");
    built("qemu");
    let stub_deb = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("systemd-boot-efi_")
        })
        .expect("stub .deb in cache");
    let bytes = std::fs::read(&stub_deb).unwrap();
    std::fs::write(dir.join("truncated.deb"), &bytes[..bytes.len() / 2]).unwrap();
    let err = failing_build(
        &dir,
        "extends = \"qemu\"\n[stub]\nsource = \"deb\"\npackage = \"truncated.deb\"\n",
    );
    assert!(err.contains("truncated.deb"), "{err}");
    assert!(
        err.contains("truncated") || err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn unknown_apt_package_says_how_to_fix() {
    let dir = scratch("badpackage");
    let err = failing_build(
        &dir,
        "extends = \"qemu\"\n[stub]\nsource = \"deb\"\npackage = \"systemd-boot-efi-nonexistent\"\n",
    );
    assert!(
        err.contains("apt does not know package \"systemd-boot-efi-nonexistent\""),
        "{err}"
    );
}

#[test]
fn ram_budget_is_enforced_with_numbers() {
    let dir = scratch("ram");
    let err = failing_build(&dir, "extends = \"qemu\"\n[boot]\nmin_ram_mib = 64\n");
    assert!(
        err.contains("needs") && err.contains("min_ram_mib = 64"),
        "{err}"
    );
    assert!(err.contains("kernel") && err.contains("headroom"), "{err}");
    // Without containers there is no boot-time images term.
    assert!(!err.contains("boot-time images"), "{err}");
}

#[test]
fn unwritable_output_dir_is_reported() {
    let output = build("qemu", Path::new("/proc/mkhost-out"), &["--quiet"]);
    let err = text(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("cannot write to output directory /proc/mkhost-out"),
        "{err}"
    );
    assert!(err.contains("--out"), "{err}");
}

#[test]
fn interrupted_build_never_leaves_a_partial_artifact() {
    built("qemu");
    let out = scratch("interrupted");
    for delay_ms in [300u64, 1200] {
        let mut child = crate::support::mkhost()
            .args(["build", "--quiet", "--profile", "qemu", "--out"])
            .arg(&out)
            .arg("--lockfile")
            .arg(out.join("mkhost.lock"))
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let final_dir = out.join("qemu");
        if final_dir.exists() {
            // Only a complete, self-consistent set may sit under the final name.
            let check = std::process::Command::new("sha256sum")
                .args(["--check", "--strict", "--quiet", "SHA256SUMS"])
                .current_dir(&final_dir)
                .output()
                .unwrap();
            assert!(check.status.success(), "{}", text(&check));
        }
    }
    // The next build succeeds and sweeps the dead build's staging directory.
    let output = build("qemu", &out, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output));
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.contains("staging")), "{names:?}");
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn files_sources_are_regular_files_read_with_a_limit() {
    built("qemu");
    let dir = scratch("badsource");
    mkfifo(&dir.join("fifo"));
    std::fs::create_dir(dir.join("adir")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
    // Sparse: larger than the qemu profile's RAM, nothing to read.
    let big = std::fs::File::create(dir.join("big")).unwrap();
    big.set_len(3 << 30).unwrap();
    for (source, want) in [
        ("fifo", "is a fifo, not a regular file"),
        ("/dev/zero", "is a character device, not a regular file"),
        ("adir", "is a directory, not a regular file"),
        ("sock", "is a socket, not a regular file"),
        ("/proc/self/environ", "kernel's /proc file system"),
        ("big", "is 3221225472 bytes, more than the limit of"),
    ] {
        let err = failing_build_within(
            &dir,
            &format!("extends = \"qemu\"\n[[files]]\ndest = \"/etc/x\"\nsource = \"{source}\"\n"),
            Duration::from_secs(120),
        );
        assert!(
            err.contains("bad.toml:2:1: [[files]] source ") && err.contains(want),
            "{source}: {err}"
        );
    }
}

#[test]
fn bad_profiles_fail_at_load_with_positions_and_short_messages() {
    let dir = scratch("badprofile");
    mkfifo(&dir.join("fifo.toml"));
    let fifo = dir.join("fifo.toml").display().to_string();
    let long = "x".repeat(1_000_000);
    let cases = [
        (
            "extends = \"qemu\"\n[[files]]\ndest = \"/init\"\ncontents = \"#!/bin/sh\"\n"
                .to_string(),
            "bad.toml:2:1: /init is mkhost's own (PID 1, mkhost's init)",
        ),
        (
            "extends = \"qemu\"\n[[files]]\ndest = \"/etc/a\"\ncontents = \"1\"\n[[files]]\ndest = \"/etc/a\"\ncontents = \"2\"\n"
                .to_string(),
            "bad.toml:5:1: /etc/a is also placed by the [[files]] entry at",
        ),
        (
            format!("extends = {fifo:?}\n"),
            "is a fifo, not a regular file",
        ),
        (
            format!("extends = \"qemu\"\nhostname = \"{long}\"\n"),
            "(1000000 bytes)",
        ),
        (
            format!("extends = \"qemu\"\n[boot]\ncmdline = \"{}\"\n", "x=y ".repeat(600)),
            "over the kernel's limit of 2047 bytes",
        ),
        (
            "extends = \"qemu\"\n[[files]]\ndest = \"/etc/a\\u0000\"\ncontents = \"1\"\n"
                .to_string(),
            "contains a NUL byte",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let err = failing_build_within(&dir, body, Duration::from_secs(60));
        assert!(
            err.contains(want),
            "case {i}: {}",
            &err[..err.len().min(2000)]
        );
        assert!(err.len() < 2000, "case {i}: {} bytes of error", err.len());
    }
    // Invalid UTF-8: the line and column of the first bad byte.
    let profile = dir.join("bad.toml");
    std::fs::write(&profile, b"extends = \"qemu\"\ndescription = \"caf\xe9\"\n").unwrap();
    let output = build_within(
        profile.to_str().unwrap(),
        &dir.join("out"),
        &["--quiet"],
        Duration::from_secs(60),
    );
    let err = text(&output);
    assert!(err.contains("bad.toml:2:19: not UTF-8: byte 0xe9"), "{err}");
}
