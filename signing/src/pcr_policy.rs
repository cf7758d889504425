//! Signed PCR policies as systemd-stub carries them: the UKI's `.pcrpkey`
//! section holds a public key (PEM), its `.pcrsig` section a JSON document
//! with, per PCR bank, the TPM2 `PolicyPCR` digest of the PCR 11 value the
//! UKI will leave and an RSA signature of that digest by the matching
//! private key (systemd-measure's format):
//!
//! ```json
//! {"sha256":[{"pcrs":[11],"pkfp":"<SHA-256 of the public key, DER>","pol":"<policy digest>","sig":"<base64>"}]}
//! ```
//!
//! systemd-stub hands both to the initrd (`/.extra/tpm2-pcr-signature.json`,
//! `/.extra/tpm2-pcr-public-key.pem`), where a secret sealed with
//! `systemd-cryptenroll --tpm2-public-key` unseals only for a PCR 11 that a
//! signed policy names: the exact image, and later images signed with the
//! same key. `.pcrpkey` is measured into PCR 11 (so the prediction includes
//! it); `.pcrsig` is not (it cannot contain itself).

use std::path::Path;

use base64::Engine;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use crate::error::SigningError;

/// The PCR systemd-stub measures the UKI into.
pub const PCR_UKI: u8 = 11;

pub use mkhost_shared::boot_security::policy_pcr_digest;

/// A key that signs PCR policies (RSA, no certificate).
pub struct PcrSigner {
    key: rsa::RsaPrivateKey,
    public_pem: String,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for PcrSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcrSigner")
            .field(
                "fingerprint",
                &mkhost_shared::hex::encode(&self.fingerprint),
            )
            .finish_non_exhaustive()
    }
}

impl PcrSigner {
    /// Reads an RSA private key (PKCS #8 or PKCS #1 PEM; an encrypted one
    /// needs `password`).
    pub fn from_file(path: &Path, password: Option<&[u8]>) -> Result<PcrSigner, SigningError> {
        let pem = crate::signer::read_pem_file(path)?;
        PcrSigner::from_pem(&pem, path, password)
    }

    /// [`PcrSigner::from_file`] on PEM text; `path` names it in errors.
    pub fn from_pem(
        pem: &str,
        path: &Path,
        password: Option<&[u8]>,
    ) -> Result<PcrSigner, SigningError> {
        let key = crate::signer::parse_private_key(pem, path, password)?;
        let public = rsa::RsaPublicKey::from(&key);
        let bad = |e: String| SigningError::Key {
            path: path.to_path_buf(),
            why: format!("cannot encode its public key: {e}"),
        };
        let der = public.to_public_key_der().map_err(|e| bad(e.to_string()))?;
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| bad(e.to_string()))?;
        Ok(PcrSigner {
            key,
            public_pem,
            fingerprint: Sha256::digest(der.as_bytes()).into(),
        })
    }

    /// The `.pcrpkey` section: the public key, PEM (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// SHA-256 of the public key's DER (`pkfp`).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The `.pcrsig` section for a UKI whose PCR 11 (SHA-256) will be
    /// `pcr11`: its policy digest signed with RSA PKCS #1 v1.5 (SHA-256).
    pub fn sign_pcr11(&self, pcr11: &[u8; 32]) -> Result<String, SigningError> {
        let policy = policy_pcr_digest::<PCR_UKI>(pcr11);
        let signature = self
            .key
            .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &policy)
            .map_err(|_| SigningError::Sign)?;
        let entry = serde_json::json!({
            "pcrs": [PCR_UKI],
            "pkfp": mkhost_shared::hex::encode(&self.fingerprint),
            "pol": mkhost_shared::hex::encode(&policy),
            "sig": base64::engine::general_purpose::STANDARD.encode(signature),
        });
        Ok(serde_json::json!({ "sha256": [entry] }).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_policy_that_the_public_key_verifies() {
        use rsa::pkcs8::DecodePublicKey;
        let pem = crate::signer::generate_key(2048).unwrap();
        let signer = PcrSigner::from_pem(&pem, Path::new("pcr.key"), None).unwrap();
        let pcr11 = [7u8; 32];
        let json: serde_json::Value =
            serde_json::from_str(&signer.sign_pcr11(&pcr11).unwrap()).unwrap();
        let entry = &json["sha256"][0];
        assert_eq!(entry["pcrs"], serde_json::json!([11]));
        let policy = policy_pcr_digest::<11>(&pcr11);
        assert_eq!(entry["pol"], mkhost_shared::hex::encode(&policy));
        let public = rsa::RsaPublicKey::from_public_key_pem(signer.public_key_pem()).unwrap();
        assert_eq!(
            entry["pkfp"],
            mkhost_shared::hex::encode(&Sha256::digest(
                public.to_public_key_der().unwrap().as_bytes()
            ))
        );
        let signature = base64::engine::general_purpose::STANDARD
            .decode(entry["sig"].as_str().unwrap())
            .unwrap();
        public
            .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &policy, &signature)
            .unwrap();
        // Deterministic: the same key and PCR give the same section.
        assert_eq!(
            signer.sign_pcr11(&pcr11).unwrap(),
            signer.sign_pcr11(&pcr11).unwrap()
        );
    }
}
