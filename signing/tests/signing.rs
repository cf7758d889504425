//! Signing checked against the reference tools: `sbverify` (Debian's
//! sbsigntool) accepts our Authenticode signatures and refuses a changed
//! byte; efitools' `cert-to-efi-sig-list` and `sign-efi-sig-list` write the
//! very signature lists and `.auth` files we write. Bad keys and
//! certificates are refused by name.

use mkhost_shared::hex::encode as hex;
use std::path::{Path, PathBuf};
use std::process::Command;

use mkhost_signing::efivars::Variable;
use mkhost_signing::keys::{self, KeySetOptions};
use mkhost_signing::{sign_pe, verify_pe, Signer, SigningError};

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// 2026-12-05T00:00:00Z.
const NOW: u64 = 1_796_428_800;

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // Under CI, ci/install-deps must have provided it.
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing: ci/install-deps installs it"
        );
        eprintln!("SKIPPED: {tool} is missing (ci/install-deps installs it)");
    }
    found
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One key set for all the tests (RSA key generation takes a while),
/// copied into `dir`.
fn key_set(dir: &Path) {
    static MADE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let made = MADE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let options = KeySetOptions {
            name: "mkhost test".into(),
            bits: 2048,
            days: 30,
            now: NOW,
        };
        keys::create(tmp.path(), &options).unwrap();
        tmp
    });
    for entry in std::fs::read_dir(made.path()).unwrap().flatten() {
        let to = dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to).unwrap();
    }
}

fn db_signer(dir: &Path) -> Signer {
    Signer::from_files(
        &keys::key_path(dir, Variable::Db),
        &keys::certificate_path(dir, Variable::Db),
        None,
        NOW,
    )
    .unwrap()
}

#[test]
fn sbverify_accepts_our_signature_and_refuses_a_changed_byte() {
    if !have("sbverify") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_set(dir);
    let signer = db_signer(dir);
    let stub = std::fs::read(STUB).unwrap();
    let signed = sign_pe(&stub, &signer).unwrap();
    // Deterministic: the same key and image, the same bytes.
    assert_eq!(sign_pe(&stub, &signer).unwrap(), signed);
    let path = dir.join("signed.efi");
    std::fs::write(&path, &signed).unwrap();
    let db_crt = keys::certificate_path(dir, Variable::Db);
    let (ok, out) = run(Command::new("sbverify")
        .arg("--cert")
        .arg(&db_crt)
        .arg(&path));
    assert!(ok, "sbverify: {out}");
    let checked = verify_pe(&signed).unwrap();
    assert_eq!(checked.len(), 1);
    assert!(
        checked[0].digest_matches && checked[0].signature_valid,
        "{checked:?}"
    );
    assert!(
        checked[0].certificate.subject.contains("mkhost test db"),
        "{checked:?}"
    );

    // Another key's certificate does not verify it.
    let (ok, _) = run(Command::new("sbverify")
        .arg("--cert")
        .arg(keys::certificate_path(dir, Variable::Kek))
        .arg(&path));
    assert!(!ok, "sbverify took the KEK's certificate");

    // One byte of a section changed: refused by both.
    let text = mkhost_image::uki::pe_sections(&signed)
        .unwrap()
        .into_iter()
        .find(|s| s.name == ".text")
        .unwrap();
    let mut changed = signed.clone();
    changed[text.file_offset as usize + 100] ^= 1;
    let changed_path = dir.join("changed.efi");
    std::fs::write(&changed_path, &changed).unwrap();
    let (ok, out) = run(Command::new("sbverify")
        .arg("--cert")
        .arg(&db_crt)
        .arg(&changed_path));
    assert!(!ok, "sbverify accepted a changed image: {out}");
    let checked = verify_pe(&changed).unwrap();
    assert!(!checked[0].digest_matches, "{checked:?}");

    // A signed image is not signed again.
    assert!(matches!(
        sign_pe(&signed, &signer),
        Err(SigningError::Pe(_))
    ));
}

#[test]
fn signature_lists_and_auth_files_match_efitools() {
    if !have("sign-efi-sig-list") || !have("cert-to-efi-sig-list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_set(dir);
    let guid = std::fs::read_to_string(dir.join(keys::GUID_FILE)).unwrap();
    let guid = guid.trim();
    for (variable, signed_by) in [
        (Variable::Pk, Variable::Pk),
        (Variable::Kek, Variable::Pk),
        (Variable::Db, Variable::Kek),
    ] {
        let name = variable.name();
        let theirs_esl = dir.join(format!("{name}.theirs.esl"));
        let (ok, out) = run(Command::new("cert-to-efi-sig-list")
            .args(["-g", guid])
            .arg(keys::certificate_path(dir, variable))
            .arg(&theirs_esl));
        assert!(ok, "{out}");
        let ours_esl = std::fs::read(dir.join(format!("{name}.esl"))).unwrap();
        assert_eq!(ours_esl, std::fs::read(&theirs_esl).unwrap(), "{name}.esl");

        // The .auth at the same time stamp.
        let theirs_auth = dir.join(format!("{name}.theirs.auth"));
        let (ok, out) = run(Command::new("sign-efi-sig-list")
            .args(["-t", "2026-12-05 00:00:00", "-g", guid, "-k"])
            .arg(keys::key_path(dir, signed_by))
            .arg("-c")
            .arg(keys::certificate_path(dir, signed_by))
            .arg(name)
            .arg(&theirs_esl)
            .arg(&theirs_auth));
        assert!(ok, "{out}");
        let ours_auth = std::fs::read(dir.join(format!("{name}.auth"))).unwrap();
        assert_eq!(
            hex(&ours_auth),
            hex(&std::fs::read(&theirs_auth).unwrap()),
            "{name}.auth"
        );
    }
}

fn openssl(args: &[&str]) {
    let (ok, out) = run(Command::new("openssl").args(args));
    assert!(ok, "openssl {args:?}: {out}");
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn bad_keys_and_certificates_are_refused_by_name() {
    if !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_set(dir);
    let db_key = keys::key_path(dir, Variable::Db);
    let db_crt = keys::certificate_path(dir, Variable::Db);
    let kek_key = keys::key_path(dir, Variable::Kek);
    let load = |key: &Path, cert: &Path, password: Option<&[u8]>, now: u64| {
        Signer::from_files(key, cert, password, now).map(|_| ())
    };

    // A key that is not the certificate's.
    let err = load(&kek_key, &db_crt, None, NOW).unwrap_err();
    assert!(matches!(err, SigningError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("KEK.key"), "{err}");

    // Expired, and not yet valid.
    let err = load(&db_key, &db_crt, None, NOW + 31 * 86_400).unwrap_err();
    assert!(matches!(err, SigningError::Validity { .. }), "{err}");
    assert!(err.to_string().contains("db.crt"), "{err}");
    assert!(load(&db_key, &db_crt, None, NOW - 86_400).is_err());

    // An encrypted key: its password is needed, and must be right.
    let encrypted: PathBuf = dir.join("encrypted.key");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        path_str(&db_key),
        "-out",
        path_str(&encrypted),
        "-passout",
        "pass:sesame",
        "-v2",
        "aes-256-cbc",
    ]);
    let err = load(&encrypted, &db_crt, None, NOW).unwrap_err();
    assert!(matches!(err, SigningError::KeyPassword { .. }), "{err}");
    assert!(err.to_string().contains("MKHOST_KEY_PASSWORD"), "{err}");
    assert!(load(&encrypted, &db_crt, Some(b"wrong"), NOW).is_err());
    load(&encrypted, &db_crt, Some(b"sesame"), NOW).unwrap();

    // A PKCS #1 key works; an EC key and certificate are refused.
    let pkcs1 = dir.join("pkcs1.key");
    openssl(&[
        "rsa",
        "-in",
        path_str(&db_key),
        "-out",
        path_str(&pkcs1),
        "-traditional",
    ]);
    load(&pkcs1, &db_crt, None, NOW).unwrap();
    let ec_key = dir.join("ec.key");
    let ec_crt = dir.join("ec.crt");
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        path_str(&ec_key),
    ]);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        path_str(&ec_key),
        "-out",
        path_str(&ec_crt),
        "-subj",
        "/CN=ec",
        "-days",
        "30000",
    ]);
    let err = load(&db_key, &ec_crt, None, NOW).unwrap_err();
    assert!(err.to_string().contains("not RSA"), "{err}");
    assert!(load(&ec_key, &db_crt, None, NOW).is_err());

    // Not PEM at all, a truncated certificate, a missing file.
    let junk = dir.join("junk");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(load(&junk, &db_crt, None, NOW).is_err());
    let cut = dir.join("cut.crt");
    let text = std::fs::read_to_string(&db_crt).unwrap();
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    assert!(load(&db_key, &cut, None, NOW).is_err());
    let err = load(&dir.join("nope.key"), &db_crt, None, NOW).unwrap_err();
    assert!(err.to_string().contains("nope.key"), "{err}");

    // A key size firmware does not take: refused, nothing written.
    let odd = dir.join("odd");
    let options = KeySetOptions {
        name: "odd".into(),
        bits: 1024,
        days: 30,
        now: NOW,
    };
    assert!(matches!(
        keys::create(&odd, &options),
        Err(SigningError::KeySize(1024))
    ));
    assert!(!odd.exists());

    // Keys are never replaced.
    let options = KeySetOptions {
        name: "again".into(),
        bits: 2048,
        days: 30,
        now: NOW,
    };
    assert!(matches!(
        keys::create(dir, &options),
        Err(SigningError::Exists { .. })
    ));
    // Private keys are 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&db_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
