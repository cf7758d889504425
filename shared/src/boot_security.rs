//! What the firmware and the TPM say about this boot, as init found it
//! (`/run/mkhost/boot-security.json`, [`crate::paths::BOOT_SECURITY`]):
//! whether UEFI Secure Boot was enforced, and the TPM's PCR 11 (SHA-256
//! bank), which systemd-stub extended with the UKI's sections. The build
//! predicts PCR 11 (manifest.json `measured_boot.pcr11_sha256`, `mkhost
//! inspect`): equal values mean the host runs the UKI that was built.
//! When the UKI carries a signed PCR policy (`.pcrsig`), systemd-stub
//! hands it to the initrd and init checks that the policy's digest is the
//! one of the PCR 11 the TPM holds ([`policy_pcr_digest`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `TPM_CC_PolicyPCR`.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
/// `TPM_ALG_SHA256`.
const TPM_ALG_SHA256: u16 = 0x000B;

/// The `PolicyPCR` digest (TPM 2.0 Part 3, 23.7) of a fresh policy
/// session for SHA-256 PCR `INDEX` (0 to 23, checked when compiled) holding
/// `value`:
/// `SHA-256(zeros || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || SHA-256(value))`.
///
/// A PCR that does not exist does not compile:
///
/// ```compile_fail
/// mkhost_shared::boot_security::policy_pcr_digest::<24>(&[0; 32]);
/// ```
pub fn policy_pcr_digest<const INDEX: u8>(value: &[u8; 32]) -> [u8; 32] {
    const { assert!(INDEX < 24, "a PCR index is 0 to 23") };
    let mut selection = Vec::with_capacity(10);
    selection.extend_from_slice(&1u32.to_be_bytes()); // one selection
    selection.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    selection.push(3); // sizeofSelect: PCRs 0-23
    let mut bitmap = [0u8; 3];
    bitmap[usize::from(INDEX / 8)] |= 1 << (INDEX % 8);
    selection.extend_from_slice(&bitmap);
    let mut hash = Sha256::new();
    hash.update([0u8; 32]);
    hash.update(TPM_CC_POLICY_PCR.to_be_bytes());
    hash.update(&selection);
    hash.update(Sha256::digest(value));
    hash.finalize().into()
}

/// Whether the PCR 11 the TPM holds is the one a signed policy names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignedPolicy {
    /// The UKI carries none (or there is no PCR 11 to compare).
    #[default]
    None,
    /// Its digest is the one of PCR 11: the host booted the image the
    /// policy was signed for.
    Match,
    /// It names another PCR 11: something else was measured.
    Mismatch,
}

impl SignedPolicy {
    /// The word of the console line.
    pub fn as_str(self) -> &'static str {
        match self {
            SignedPolicy::None => "none",
            SignedPolicy::Match => "match",
            SignedPolicy::Mismatch => "mismatch",
        }
    }
}

/// The firmware's Secure Boot state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecureBoot {
    /// Enforced: the firmware ran only an image its db allows.
    On,
    /// Not enforced (`SecureBoot` is 0).
    Off,
    /// No platform key is enrolled (`SetupMode` is 1): nothing is checked.
    SetupMode,
    /// The machine did not boot through UEFI (BIOS, or `-kernel` in QEMU).
    NotUefi,
    /// UEFI, but the variables could not be read.
    #[default]
    Unknown,
}

impl SecureBoot {
    /// The word of the console line and of `hostd status`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecureBoot::On => "on",
            SecureBoot::Off => "off",
            SecureBoot::SetupMode => "setup-mode",
            SecureBoot::NotUefi => "not-uefi",
            SecureBoot::Unknown => "unknown",
        }
    }
}

/// init's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSecurity {
    /// Whether Secure Boot was enforced.
    pub secure_boot: SecureBoot,
    /// PCR 11 of the SHA-256 bank, lowercase hex; `None` without a TPM (or
    /// without that bank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr11_sha256: Option<String>,
    /// The TPM, e.g. `tpm0 (TPM 2.0)`, or why there is no PCR value.
    pub tpm: String,
    /// PCR 11 against the UKI's signed PCR policy, if it has one.
    #[serde(default)]
    pub signed_policy: SignedPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_digest_selects_the_pcr_and_hashes_its_value() {
        // TPM 2.0 Part 3's PolicyPCR formula, written out byte by byte
        // for PCR 11 of the SHA-256 bank holding zeros.
        let zeros = [0u8; 32];
        let mut expected = Sha256::new();
        expected.update([0u8; 32]);
        expected.update([0x00, 0x00, 0x01, 0x7F]);
        expected.update([0, 0, 0, 1, 0x00, 0x0B, 3, 0x00, 0x08, 0x00]);
        expected.update(Sha256::digest(zeros));
        assert_eq!(
            policy_pcr_digest::<11>(&zeros),
            <[u8; 32]>::from(expected.finalize())
        );
        // PCR 0 sets the first bit of the first byte instead.
        assert_ne!(
            policy_pcr_digest::<0>(&zeros),
            policy_pcr_digest::<11>(&zeros)
        );
        assert_ne!(
            policy_pcr_digest::<11>(&[1u8; 32]),
            policy_pcr_digest::<11>(&zeros)
        );
    }

    #[test]
    fn serializes_in_kebab_case() {
        let report = BootSecurity {
            secure_boot: SecureBoot::SetupMode,
            pcr11_sha256: None,
            tpm: "none".into(),
            signed_policy: SignedPolicy::None,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(
            json,
            r#"{"secure_boot":"setup-mode","tpm":"none","signed_policy":"none"}"#
        );
        assert_eq!(serde_json::from_str::<BootSecurity>(&json).unwrap(), report);
    }
}
