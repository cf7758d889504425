//! A signer: an RSA private key and the X.509 certificate that names its
//! public key, read from PEM files and checked before anything is signed
//! with them: the key matches the certificate, the certificate is valid now
//! and is RSA (what UEFI firmware verifies), an encrypted key comes with its
//! password. Signatures are RSA PKCS #1 v1.5 with SHA-256 by ring (constant
//! time, deterministic: the same key and bytes give the same signature).

use std::path::Path;

use der::Encode;
use pkcs8::{DecodePrivateKey, EncodePrivateKey};
use x509_cert::Certificate;

use crate::error::SigningError;

/// The largest key or certificate file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// An RSA key with its certificate, ready to sign.
pub struct Signer {
    key: ring::signature::RsaKeyPair,
    certificate: Certificate,
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

/// What a certificate says of itself, for `mkhost inspect` and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    /// Seconds since the epoch.
    pub not_before: u64,
    pub not_after: u64,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
}

impl Signer {
    /// Reads `key` (PKCS #8 or PKCS #1 PEM; an encrypted PKCS #8 key needs
    /// `password`) and `certificate` (PEM), and checks them at time `now`
    /// (seconds since the epoch).
    pub fn from_files(
        key: &Path,
        certificate: &Path,
        password: Option<&[u8]>,
        now: u64,
    ) -> Result<Signer, SigningError> {
        let key_pem = read_pem_file(key)?;
        let cert_pem = read_pem_file(certificate)?;
        Signer::from_pem(&key_pem, key, &cert_pem, certificate, password, now)
    }

    /// [`Signer::from_files`] on PEM text; the paths name the files in
    /// errors.
    pub fn from_pem(
        key_pem: &str,
        key_path: &Path,
        cert_pem: &str,
        cert_path: &Path,
        password: Option<&[u8]>,
        now: u64,
    ) -> Result<Signer, SigningError> {
        let private = parse_private_key(key_pem, key_path, password)?;
        let certificate = parse_certificate(cert_pem, cert_path)?;
        let certificate_der = certificate
            .to_der()
            .map_err(|e| SigningError::Certificate {
                path: cert_path.to_path_buf(),
                why: format!("cannot encode it: {e}"),
            })?;
        check_certificate(&certificate, cert_path, now)?;
        let public = rsa::RsaPublicKey::from(&private);
        let spki =
            spki::EncodePublicKey::to_public_key_der(&public).map_err(|e| SigningError::Key {
                path: key_path.to_path_buf(),
                why: format!("cannot encode its public key: {e}"),
            })?;
        let cert_spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| SigningError::Certificate {
                path: cert_path.to_path_buf(),
                why: format!("cannot encode its public key: {e}"),
            })?;
        if spki.as_bytes() != cert_spki.as_slice() {
            return Err(SigningError::KeyMismatch {
                key: key_path.to_path_buf(),
                certificate: cert_path.to_path_buf(),
            });
        }
        let pkcs8 = private.to_pkcs8_der().map_err(|e| SigningError::Key {
            path: key_path.to_path_buf(),
            why: format!("cannot encode it: {e}"),
        })?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).map_err(|e| {
            SigningError::Key {
                path: key_path.to_path_buf(),
                why: format!("ring refuses it: {e}"),
            }
        })?;
        Ok(Signer {
            key,
            certificate,
            certificate_der,
        })
    }

    /// RSA PKCS #1 v1.5 SHA-256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| SigningError::Sign)?;
        Ok(signature)
    }

    /// The certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The certificate's subject.
    pub fn subject(&self) -> String {
        self.certificate.tbs_certificate.subject.to_string()
    }

    /// What the certificate says of itself.
    pub fn info(&self) -> CertificateInfo {
        info_of(&self.certificate, &self.certificate_der)
    }
}

/// What a parsed `certificate`, whose DER is `der_bytes`, says of itself.
pub(crate) fn info_of(certificate: &Certificate, der_bytes: &[u8]) -> CertificateInfo {
    let tbs = &certificate.tbs_certificate;
    CertificateInfo {
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
        not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
        fingerprint: mkhost_shared::hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(der_bytes)),
    }
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`].
pub(crate) fn read_pem_file(path: &Path) -> Result<String, SigningError> {
    use std::io::Read;
    let io = |source| SigningError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(io(std::io::Error::other(format!(
            "larger than {MAX_PEM_BYTES} bytes; not a PEM key or certificate"
        ))));
    }
    Ok(text)
}

/// An RSA private key from PEM: PKCS #8 (`PRIVATE KEY`), encrypted PKCS #8
/// (`ENCRYPTED PRIVATE KEY`, with `password`) or PKCS #1 (`RSA PRIVATE
/// KEY`).
pub(crate) fn parse_private_key(
    pem: &str,
    path: &Path,
    password: Option<&[u8]>,
) -> Result<rsa::RsaPrivateKey, SigningError> {
    let bad = |why: String| SigningError::Key {
        path: path.to_path_buf(),
        why,
    };
    let label = pem_label(pem).ok_or_else(|| bad("no PEM block in it".into()))?;
    match label.as_str() {
        "PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| bad(format!("not an RSA PKCS #8 key: {e}"))),
        "ENCRYPTED PRIVATE KEY" => {
            let Some(password) = password else {
                return Err(SigningError::KeyPassword {
                    path: path.to_path_buf(),
                });
            };
            rsa::RsaPrivateKey::from_pkcs8_encrypted_pem(pem, password)
                .map_err(|e| bad(format!("cannot decrypt it with the password given: {e}")))
        }
        "RSA PRIVATE KEY" if pem.contains("Proc-Type: 4,ENCRYPTED") => Err(bad(
            "an OpenSSL-encrypted PKCS #1 key; convert it with `openssl pkcs8 -topk8` \
             (encrypted PKCS #8 keys are read with their password)"
                .into(),
        )),
        "RSA PRIVATE KEY" => rsa::pkcs1::DecodeRsaPrivateKey::from_pkcs1_pem(pem)
            .map_err(|e| bad(format!("not an RSA PKCS #1 key: {e}"))),
        other => Err(bad(format!(
            "a PEM {other:?} block, not a private key; UEFI firmware verifies RSA keys \
             (PRIVATE KEY or RSA PRIVATE KEY)"
        ))),
    }
}

/// The label of the first PEM block (`-----BEGIN LABEL-----`).
fn pem_label(pem: &str) -> Option<String> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = pem[start..].find("-----")?;
    Some(pem[start..start + end].to_string())
}

fn parse_certificate(pem: &str, path: &Path) -> Result<Certificate, SigningError> {
    let bad = |why: String| SigningError::Certificate {
        path: path.to_path_buf(),
        why,
    };
    match pem_label(pem).as_deref() {
        Some("CERTIFICATE") => {}
        Some(other) => return Err(bad(format!("a PEM {other:?} block, not a CERTIFICATE"))),
        None => return Err(bad("no PEM block in it".into())),
    }
    <Certificate as der::DecodePem>::from_pem(pem)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))
}

/// The OID of `rsaEncryption`.
const RSA_ENCRYPTION: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

fn check_certificate(certificate: &Certificate, path: &Path, now: u64) -> Result<(), SigningError> {
    let tbs = &certificate.tbs_certificate;
    let algorithm = tbs.subject_public_key_info.algorithm.oid;
    if algorithm != RSA_ENCRYPTION {
        return Err(SigningError::Certificate {
            path: path.to_path_buf(),
            why: format!(
                "its key is {algorithm}, not RSA; UEFI firmware verifies RSA 2048 (or 4096) signatures"
            ),
        });
    }
    let (from, until) = (
        tbs.validity.not_before.to_unix_duration().as_secs(),
        tbs.validity.not_after.to_unix_duration().as_secs(),
    );
    if now < from || now > until {
        return Err(SigningError::Validity {
            path: path.to_path_buf(),
            not_before: crate::text::rfc3339(from),
            not_after: crate::text::rfc3339(until),
        });
    }
    Ok(())
}

/// A new RSA key of `bits` (2048 or 4096), PKCS #8 PEM.
pub fn generate_key(bits: usize) -> Result<String, SigningError> {
    if bits != 2048 && bits != 4096 {
        return Err(SigningError::KeySize(bits));
    }
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
        .map_err(|e| SigningError::Generate(e.to_string()))?;
    let pem = key
        .to_pkcs8_pem(pkcs8::LineEnding::LF)
        .map_err(|e| SigningError::Generate(e.to_string()))?;
    Ok(pem.to_string())
}
