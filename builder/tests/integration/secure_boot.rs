//! Secure Boot and measured boot at build time (issue 19): `mkhost keys
//! create` makes a key set; a profile's `[secure_boot]` signs the UKI,
//! which `sbverify` accepts with the db certificate, and the USB image's
//! `BOOTX64.EFI` with it; the signed build is reproducible; the manifest
//! names the signer and the PCR 11 value, which `mkhost inspect` shows
//! too; the key never enters an artifact; bad keys are refused with the
//! profile line that names them.

use std::path::Path;
use std::process::Command;

use crate::support::{build, mkhost, scratch, text};

/// Runs `cmd`, failing the test unless it succeeds; its output.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    text(&out)
}

/// A profile `name` in `work` extending the qemu profile, with `body`.
pub(crate) fn profile(work: &Path, name: &str, body: &str) -> String {
    let path = work.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "extends = \"{}\"\n{body}",
            crate::support::workspace()
                .join("profiles/qemu.toml")
                .display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn signed_build_verifies_measures_and_keeps_the_key_out() {
    let work = scratch("secure-boot");
    let keys = work.join("keys");
    run_ok(
        mkhost()
            .args(["keys", "create", "--name", "mkhost lab", "--dir"])
            .arg(&keys),
    );
    for file in ["PK.auth", "KEK.auth", "db.auth", "db.cer", "db.esl", "GUID"] {
        assert!(keys.join(file).is_file(), "{file} missing");
    }
    let body = format!(
        "[secure_boot]\nkey = \"{}\"\ncertificate = \"{}\"\n",
        keys.join("db.key").display(),
        keys.join("db.crt").display()
    );
    let signed_profile = profile(&work, "signed", &body);
    let out = work.join("out");
    let output = build(&signed_profile, &out, &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output));
    let dir = out.join("signed");
    let efi = dir.join("mkhost-signed.efi");

    // sbverify takes it with the db certificate, not with the KEK's.
    run_ok(
        Command::new("sbverify")
            .arg("--cert")
            .arg(keys.join("db.crt"))
            .arg(&efi),
    );
    let other = Command::new("sbverify")
        .arg("--cert")
        .arg(keys.join("KEK.crt"))
        .arg(&efi)
        .output()
        .unwrap();
    assert!(!other.status.success(), "{}", text(&other));

    // The USB image boots the same signed UKI.
    let bootx64 = work.join("BOOTX64.EFI");
    let esp = format!("{}@@1M", dir.join("mkhost-signed.img").display());
    run_ok(
        Command::new("mcopy")
            .args(["-i", &esp, "::/EFI/BOOT/BOOTX64.EFI"])
            .arg(&bootx64),
    );
    assert_eq!(
        std::fs::read(&bootx64).unwrap(),
        std::fs::read(&efi).unwrap()
    );

    // The manifest names the signer and the PCR 11 value; inspect agrees.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["secure_boot"]["signer"], "CN=mkhost lab db,O=mkhost lab",
        "{manifest}"
    );
    let pcr = manifest["measured_boot"]["pcr11_sha256"].as_str().unwrap();
    assert_eq!(pcr.len(), 64);
    assert_eq!(
        manifest["measured_boot"]["pcr11_sections"],
        serde_json::json!([".linux", ".osrel", ".cmdline", ".initrd"]),
        "Debian 12's systemd-stub 252 measures these"
    );
    let inspected = run_ok(mkhost().arg("inspect").arg(&efi));
    assert!(
        inspected.contains("signature: valid; signed by CN=mkhost lab db,O=mkhost lab"),
        "{inspected}"
    );
    assert!(inspected.contains(pcr), "{inspected}");
    let inspected = run_ok(mkhost().arg("inspect").arg(dir.join("mkhost-signed.img")));
    assert!(inspected.contains("signature: valid"), "{inspected}");

    // The private key is in no artifact, and its path is not in the manifest.
    let key_pem = std::fs::read_to_string(keys.join("db.key")).unwrap();
    let key_line = key_pem.lines().nth(5).unwrap().as_bytes().to_vec();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !contains(&bytes, &key_line),
                "{} holds the key",
                entry.path().display()
            );
            assert!(
                !contains(&bytes, b"db.key"),
                "{} names the key",
                entry.path().display()
            );
        }
    }

    // Reproducible: the same key and inputs, the same signed bytes.
    let again = work.join("again");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::copy(out.join("mkhost.lock"), again.join("mkhost.lock")).unwrap();
    let output = build(&signed_profile, &again, &["--quiet", "--locked"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        std::fs::read(again.join("signed/mkhost-signed.efi")).unwrap()
            == std::fs::read(&efi).unwrap(),
        "two signed builds differ"
    );

    // Another command line: another PCR 11.
    let cmdline_profile = profile(
        &work,
        "other",
        &format!("{body}[boot]\ncmdline = \"mkhost.x=1\"\n"),
    );
    let output = build(&cmdline_profile, &work.join("out-other"), &["--quiet"]);
    assert!(output.status.success(), "{}", text(&output));
    let other: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("out-other/other/manifest.json")).unwrap())
            .unwrap();
    assert_ne!(
        other["measured_boot"]["pcr11_sha256"].as_str().unwrap(),
        pcr
    );
}

#[test]
fn bad_keys_in_a_profile_are_refused_with_their_line() {
    let work = scratch("secure-boot-bad");
    let keys = work.join("keys");
    run_ok(mkhost().args(["keys", "create", "--dir"]).arg(&keys));
    // Keys are never replaced.
    let again = mkhost()
        .args(["keys", "create", "--dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already holds a key set"),
        "{}",
        text(&again)
    );

    let encrypted = work.join("encrypted.key");
    run_ok(
        Command::new("openssl")
            .args(["pkcs8", "-topk8", "-passout", "pass:sesame", "-in"])
            .arg(keys.join("db.key"))
            .arg("-out")
            .arg(&encrypted),
    );
    let cases = [
        // The KEK's key with the db certificate.
        (
            keys.join("KEK.key"),
            keys.join("db.crt"),
            "does not match certificate",
        ),
        (
            encrypted.clone(),
            keys.join("db.crt"),
            "MKHOST_KEY_PASSWORD",
        ),
        (work.join("missing.key"), keys.join("db.crt"), "missing.key"),
        (keys.join("db.key"), keys.join("GUID"), "no PEM block"),
    ];
    // Each refused with the profile line that names the file; nothing
    // written.
    let refused = |name: &str, body: &str, words: &str, at: &str| {
        let path = profile(&work, name, body);
        let out = work.join(format!("out-{name}"));
        let output = build(&path, &out, &["--quiet"]);
        let said = text(&output);
        assert!(!output.status.success(), "{said}");
        assert!(said.contains(words), "{name}: {said}");
        assert!(
            said.contains(&format!("{name}.toml:{at}")),
            "{name} names no line: {said}"
        );
        assert!(!out.join(name).exists(), "{name} left an output");
    };
    for (i, (key, certificate, words)) in cases.iter().enumerate() {
        let body = format!(
            "[secure_boot]\nkey = \"{}\"\ncertificate = \"{}\"\n",
            key.display(),
            certificate.display()
        );
        refused(&format!("bad{i}"), &body, words, "");
    }
    // With its password the encrypted key signs.
    let body = format!(
        "[secure_boot]\nkey = \"{}\"\ncertificate = \"{}\"\n",
        encrypted.display(),
        keys.join("db.crt").display()
    );
    let path = profile(&work, "withpassword", &body);
    let output = crate::support::mkhost()
        .env("MKHOST_KEY_PASSWORD", "sesame")
        .args(["build", "--quiet", "--profile", &path, "--out"])
        .arg(work.join("out-pw"))
        .arg("--lockfile")
        .arg(work.join("out-pw.lock"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    // A bad PCR key: named with its own line (5), nothing written.
    for (i, (pcr_key, words)) in [
        (keys.join("db.crt"), "pcr_key"),
        (encrypted.clone(), "MKHOST_KEY_PASSWORD"),
        (work.join("nowhere.key"), "nowhere.key"),
    ]
    .iter()
    .enumerate()
    {
        let body = format!(
            "[secure_boot]\nkey = \"{}\"\ncertificate = \"{}\"\npcr_key = \"{}\"\n",
            keys.join("db.key").display(),
            keys.join("db.crt").display(),
            pcr_key.display()
        );
        refused(&format!("badpcr{i}"), &body, words, "5:");
    }
    // A wrong type in the table.
    let path = profile(
        &work,
        "wrongtype",
        "[secure_boot]\nkey = 5\ncertificate = \"x\"\n",
    );
    let output = build(&path, &work.join("out-type"), &["--quiet"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("wrongtype.toml:3"),
        "{}",
        text(&output)
    );
}
