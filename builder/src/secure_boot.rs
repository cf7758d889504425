//! The build's Secure Boot and measured-boot stage: the PCR 11 value
//! systemd-stub will measure for the UKI, and, with a profile's
//! `[secure_boot]`, the Authenticode signature of the UKI (which is also
//! the USB image's `BOOTX64.EFI`) by the db key (mkhost-signing). The key
//! is read when the profile is checked and when the UKI is signed; neither
//! it nor its path goes into the image or the manifest.

use std::path::PathBuf;

use serde::Serialize;

/// `[secure_boot]`: the key and certificate (PEM, paths resolved against
/// the profile's directory) that sign the UKI and `BOOTX64.EFI`. The key
/// never enters the image or the manifest; an encrypted key takes its
/// password from `MKHOST_KEY_PASSWORD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureBoot {
    pub key: PathBuf,
    pub certificate: PathBuf,
    /// The key of the signed PCR policy (`.pcrsig`), if any.
    pub pcr_key: Option<PathBuf>,
}

/// The password of encrypted keys, from `MKHOST_KEY_PASSWORD`.
pub fn key_password() -> Option<Vec<u8>> {
    std::env::var_os("MKHOST_KEY_PASSWORD").map(|p| p.into_encoded_bytes())
}

/// Seconds since the epoch: certificates are checked against the clock.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What `manifest.json` says of the measured boot.
#[derive(Debug, Clone, Serialize)]
pub struct MeasuredBoot {
    /// PCR 11 (sha256 bank) once systemd-stub has measured the UKI, as
    /// `systemd-measure calculate --phase=` computes it.
    pub pcr11_sha256: String,
    /// The sections measured, in order.
    pub pcr11_sections: Vec<String>,
    /// The stub's version, which decides the sections.
    pub stub_version: Option<String>,
    /// The signed PCR policy the UKI carries (`.pcrsig`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcr_signature: Option<PcrSignature>,
}

/// What `manifest.json` says of the signed PCR policy.
#[derive(Debug, Clone, Serialize)]
pub struct PcrSignature {
    /// SHA-256 of the public key (DER) in `.pcrpkey`: systemd's `pkfp`.
    pub public_key_sha256: String,
    /// The `PolicyPCR` digest signed for PCR 11.
    pub policy_sha256: String,
}

/// The PCR key of `settings`, read (a password from `MKHOST_KEY_PASSWORD`).
pub fn pcr_signer(
    settings: &SecureBoot,
) -> Result<Option<mkhost_signing::pcr_policy::PcrSigner>, mkhost_signing::SigningError> {
    settings
        .pcr_key
        .as_deref()
        .map(|path| {
            mkhost_signing::pcr_policy::PcrSigner::from_file(path, key_password().as_deref())
        })
        .transpose()
}

/// What `manifest.json` says of the signature.
#[derive(Debug, Clone, Serialize)]
pub struct SecureBootSummary {
    /// The certificate's subject.
    pub signer: String,
    pub issuer: String,
    /// SHA-256 of the DER certificate: the one to enroll in db.
    pub certificate_sha256: String,
    /// RFC 3339.
    pub not_after: String,
}

/// What the manifest says of a UKI whose PCR 11 prediction is `pcr`, and
/// whose `.pcrsig` (if any) `signer` signed.
pub fn measured_boot(
    pcr: mkhost_image::pcr::Pcr11,
    signer: Option<&mkhost_signing::pcr_policy::PcrSigner>,
) -> MeasuredBoot {
    use mkhost_signing::pcr_policy::{policy_pcr_digest, PCR_UKI};
    let pcr_signature = signer.map(|signer| PcrSignature {
        public_key_sha256: mkhost_shared::hex::encode(&signer.fingerprint()),
        policy_sha256: mkhost_shared::hex::encode(&policy_pcr_digest::<PCR_UKI>(&pcr.sha256)),
    });
    MeasuredBoot {
        pcr11_sha256: mkhost_shared::hex::encode(&pcr.sha256),
        pcr11_sections: pcr.sections,
        stub_version: pcr.stub_version,
        pcr_signature,
    }
}

/// `uki` signed with the profile's key: the signed image and what the
/// manifest says of it.
pub fn sign(
    uki: &[u8],
    settings: &SecureBoot,
) -> Result<(Vec<u8>, SecureBootSummary), mkhost_signing::SigningError> {
    let signer = mkhost_signing::Signer::from_files(
        &settings.key,
        &settings.certificate,
        key_password().as_deref(),
        now(),
    )?;
    let signed = mkhost_signing::sign_pe(uki, &signer)?;
    let info = signer.info();
    Ok((
        signed,
        SecureBootSummary {
            signer: info.subject,
            issuer: info.issuer,
            certificate_sha256: info.fingerprint,
            not_after: mkhost_signing::rfc3339(info.not_after),
        },
    ))
}
