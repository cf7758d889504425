//! `mkhost keys`: a Secure Boot key set in one directory, as firmware
//! setup screens and enrollment tools take it.
//!
//! For each of PK, KEK and db: `NAME.key` (RSA, PKCS #8 PEM, 0600),
//! `NAME.crt` (a self-signed X.509 certificate, PEM), `NAME.cer` (the same,
//! DER, for setup screens), `NAME.esl` (an EFI signature list of it) and
//! `NAME.auth` (the authenticated write that enrolls it: PK signed by
//! itself, KEK by PK, db by KEK). `GUID` holds the owner GUID the lists
//! carry. [`create`] makes new keys; [`enroll_files`] writes the `.esl`,
//! `.cer` and `.auth` files again from keys already there (keys made
//! elsewhere, or after a certificate was renewed). An existing key is never
//! replaced. A profile's `[secure_boot]` names `db.key` and `db.crt`.

use std::path::{Path, PathBuf};

use crate::efivars::{authenticated_write, signature_list, Variable};
use crate::error::SigningError;
use crate::signer::Signer;
use crate::signer::{generate_key, read_pem_file};

/// The variables of a key set, in enrollment order (db, KEK, then PK:
/// enrolling PK leaves setup mode).
pub const VARIABLES: [Variable; 3] = [Variable::Db, Variable::Kek, Variable::Pk];

/// The file holding the owner GUID.
pub const GUID_FILE: &str = "GUID";

/// How to make a key set.
#[derive(Debug, Clone)]
pub struct KeySetOptions {
    /// The certificates' organisation; each common name is this plus the
    /// variable's name.
    pub name: String,
    /// 2048 or 4096.
    pub bits: usize,
    /// Validity, days from `now`.
    pub days: u32,
    /// Seconds since the epoch.
    pub now: u64,
}

/// Paths of one variable's files in `dir`.
pub fn key_path(dir: &Path, variable: Variable) -> PathBuf {
    dir.join(format!("{}.key", variable.name()))
}

/// The certificate of `variable` in `dir`.
pub fn certificate_path(dir: &Path, variable: Variable) -> PathBuf {
    dir.join(format!("{}.crt", variable.name()))
}

/// The key that signs PCR policies (`[secure_boot] pcr_key`), in `dir`.
pub fn pcr_key_path(dir: &Path) -> PathBuf {
    dir.join("pcr.key")
}

/// Its public half (PEM), what the UKI's `.pcrpkey` holds and
/// `systemd-cryptenroll --tpm2-public-key` takes.
pub fn pcr_public_key_path(dir: &Path) -> PathBuf {
    dir.join("pcr.pem")
}

/// Makes a new key set in `dir` (created if missing): PK, KEK and db with
/// their certificates, and the PCR policy key; refuses a directory that
/// already holds any of its keys. The files written.
pub fn create(dir: &Path, options: &KeySetOptions) -> Result<Vec<PathBuf>, SigningError> {
    let pcr_paths = [pcr_key_path(dir), pcr_public_key_path(dir)];
    let existing = VARIABLES
        .iter()
        .flat_map(|&variable| [key_path(dir, variable), certificate_path(dir, variable)])
        .chain(pcr_paths.iter().cloned())
        .find(|path| path.exists());
    if let Some(file) = existing {
        return Err(SigningError::Exists {
            dir: dir.to_path_buf(),
            file,
        });
    }
    // Everything that can fail but I/O first, so that a refused key size
    // or a failed generation leaves nothing behind.
    let mut made = Vec::new();
    for variable in VARIABLES {
        let key_pem = generate_key(options.bits)?;
        let cert_pem = self_signed(&key_pem, variable, options)?;
        made.push((variable, key_pem, cert_pem));
    }
    let pcr_key_pem = generate_key(options.bits)?;
    let pcr_public_pem = crate::pcr_policy::PcrSigner::from_pem(&pcr_key_pem, &pcr_paths[0], None)?
        .public_key_pem()
        .to_string();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| SigningError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let mut written = Vec::new();
    for (variable, key_pem, cert_pem) in made {
        let key = key_path(dir, variable);
        write(&key, key_pem.as_bytes(), 0o600)?;
        let cert = certificate_path(dir, variable);
        write(&cert, cert_pem.as_bytes(), 0o644)?;
        written.extend([key, cert]);
    }
    write(&pcr_paths[0], pcr_key_pem.as_bytes(), 0o600)?;
    write(&pcr_paths[1], pcr_public_pem.as_bytes(), 0o644)?;
    written.extend(pcr_paths);
    written.extend(enroll_files(dir, None, options.now)?);
    Ok(written)
}

/// A self-signed RSA SHA-256 certificate for `variable`'s key.
fn self_signed(
    key_pem: &str,
    variable: Variable,
    options: &KeySetOptions,
) -> Result<String, SigningError> {
    let generate = |e: rcgen::Error| SigningError::Generate(e.to_string());
    let key = rcgen::KeyPair::from_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(generate)?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::OrganizationName, options.name.clone());
    name.push(
        rcgen::DnType::CommonName,
        format!("{} {}", options.name, variable.name()),
    );
    params.distinguished_name = name;
    let at = |secs: u64| {
        time::OffsetDateTime::from_unix_timestamp(secs as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    params.not_before = at(options.now.saturating_sub(3600));
    params.not_after = at(options.now + u64::from(options.days) * 86_400);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    Ok(params.self_signed(&key).map_err(generate)?.pem())
}

/// Writes `NAME.cer`, `NAME.esl` and `NAME.auth` for PK, KEK and db from
/// the keys and certificates in `dir` (an encrypted key needs
/// `password`), at time `now`. The files written.
pub fn enroll_files(
    dir: &Path,
    password: Option<&[u8]>,
    now: u64,
) -> Result<Vec<PathBuf>, SigningError> {
    let guid_path = dir.join(GUID_FILE);
    let mut written = Vec::new();
    let owner = if guid_path.exists() {
        let guid_text = read_pem_file(&guid_path)?;
        uuid::Uuid::parse_str(guid_text.trim()).map_err(|e| SigningError::Key {
            path: guid_path.clone(),
            why: format!("not a GUID: {e}"),
        })?
    } else {
        let guid = uuid::Uuid::new_v4();
        write(&guid_path, format!("{guid}\n").as_bytes(), 0o644)?;
        written.push(guid_path.clone());
        guid
    };
    let load = |variable| {
        Signer::from_files(
            &key_path(dir, variable),
            &certificate_path(dir, variable),
            password,
            now,
        )
    };
    let (pk, kek, db) = (
        load(Variable::Pk)?,
        load(Variable::Kek)?,
        load(Variable::Db)?,
    );
    for (variable, own, signed_by) in [
        (Variable::Pk, &pk, &pk),
        (Variable::Kek, &kek, &pk),
        (Variable::Db, &db, &kek),
    ] {
        let name = variable.name();
        let esl = signature_list(own.certificate_der(), owner)?;
        let auth = authenticated_write(variable, &esl, signed_by, now)?;
        for (extension, bytes) in [
            ("cer", own.certificate_der()),
            ("esl", &esl[..]),
            ("auth", &auth[..]),
        ] {
            let path = dir.join(format!("{name}.{extension}"));
            write(&path, bytes, 0o644)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SigningError> {
    mkhost_shared::fs::write_atomic(path, bytes, mode).map_err(|source| SigningError::Write {
        path: path.to_path_buf(),
        source,
    })
}
