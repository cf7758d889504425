//! Reads what the firmware and the TPM say about this boot: the UEFI
//! `SecureBoot` and `SetupMode` variables (efivarfs) and PCR 11 of the
//! TPM's SHA-256 bank (`/sys/class/tpm/tpm0/pcr-sha256/11`, Linux 5.12),
//! which systemd-stub extended with the UKI's sections before Linux ran.
//! init prints it on the console and hands it to hostd
//! ([`mkhost_shared::paths::BOOT_SECURITY`]); the build's manifest
//! predicts PCR 11, so the operator (and the tests) compare the two. When
//! the UKI carries a signed PCR policy, systemd-stub puts it into the
//! initramfs as `/.extra/tpm2-pcr-signature.json`, and init checks the
//! policy against the PCR the TPM holds: the host's own answer to "did I
//! boot the image that was signed?".

use std::fs;
use std::path::Path;

use mkhost_shared::boot_security::{policy_pcr_digest, BootSecurity, SecureBoot, SignedPolicy};
use mkhost_shared::hex;

use super::mounts::at;

/// The EFI global variable vendor GUID (`SecureBoot`, `SetupMode`).
const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The value byte of a one-byte efivarfs variable (after its 4 attribute
/// bytes).
fn efi_flag(data: &[u8]) -> Option<bool> {
    match data {
        [_, _, _, _, value] => Some(*value == 1),
        _ => None,
    }
}

/// Secure Boot's state from efivarfs below `root`.
fn secure_boot(root: &Path) -> SecureBoot {
    if !at(root, "/sys/firmware/efi").is_dir() {
        return SecureBoot::NotUefi;
    }
    let var = |name: &str| {
        fs::read(at(
            root,
            &format!("/sys/firmware/efi/efivars/{name}-{EFI_GLOBAL_VARIABLE}"),
        ))
        .ok()
        .and_then(|data| efi_flag(&data))
    };
    match (var("SecureBoot"), var("SetupMode")) {
        (_, Some(true)) => SecureBoot::SetupMode,
        (Some(true), _) => SecureBoot::On,
        (Some(false), _) => SecureBoot::Off,
        // OVMF without Secure Boot support has no SecureBoot variable.
        (None, Some(false)) => SecureBoot::Off,
        (None, None) => SecureBoot::Unknown,
    }
}

/// A PCR as sysfs shows it (hex, either case, a newline), as lowercase
/// hex; `None` unless it is 32 bytes.
fn parse_pcr(text: &str) -> Option<String> {
    let hex = text.trim().to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// PCR 11 of the first TPM below `root`, and a word on the TPM.
fn pcr11(root: &Path) -> (Option<String>, String) {
    let tpm = at(root, "/sys/class/tpm/tpm0");
    if !tpm.exists() {
        return (None, "none".to_string());
    }
    let major = fs::read_to_string(tpm.join("tpm_version_major")).unwrap_or_default();
    let name = format!("tpm0 (TPM {}.0)", major.trim());
    match fs::read_to_string(tpm.join("pcr-sha256/11")) {
        Ok(text) => match parse_pcr(&text) {
            Some(hex) => (Some(hex), name),
            None => (None, format!("{name}: PCR 11 reads {:?}", text.trim())),
        },
        Err(e) => (None, format!("{name}: no SHA-256 PCR 11 ({e})")),
    }
}

/// Where systemd-stub puts the UKI's `.pcrsig`.
pub const PCR_SIGNATURE: &str = "/.extra/tpm2-pcr-signature.json";

/// The largest `.pcrsig` read.
const MAX_PCR_SIGNATURE: u64 = 64 * 1024;

/// PCR 11 (`pcr11`, hex) against the signed policy below `root`: a match
/// when an entry of the SHA-256 bank for PCR 11 alone has the policy
/// digest of that value.
fn signed_policy(root: &Path, pcr11: Option<&str>) -> SignedPolicy {
    let path = at(root, PCR_SIGNATURE);
    let Some(value) = pcr11.and_then(hex::decode32) else {
        return SignedPolicy::None;
    };
    let json: Option<serde_json::Value> = fs::metadata(&path)
        .ok()
        .filter(|m| m.len() <= MAX_PCR_SIGNATURE)
        .and_then(|_| fs::read(&path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let Some(json) = json else {
        return SignedPolicy::None;
    };
    let want = hex::encode(&policy_pcr_digest::<11>(&value));
    let entries = json["sha256"].as_array().cloned().unwrap_or_default();
    let for_pcr11: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["pcrs"] == serde_json::json!([11]))
        .collect();
    if for_pcr11.is_empty() {
        SignedPolicy::None
    } else if for_pcr11.iter().any(|e| {
        e["pol"]
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case(&want))
    }) {
        SignedPolicy::Match
    } else {
        SignedPolicy::Mismatch
    }
}

/// What this boot's firmware and TPM say, below `root`.
pub fn read(root: &Path) -> BootSecurity {
    let (pcr11_sha256, tpm) = pcr11(root);
    BootSecurity {
        secure_boot: secure_boot(root),
        signed_policy: signed_policy(root, pcr11_sha256.as_deref()),
        pcr11_sha256,
        tpm,
    }
}

/// The console line: `boot security: secure_boot=on pcr11_sha256=<hex>
/// tpm=<tpm>`.
pub fn format(report: &BootSecurity) -> String {
    format!(
        "boot security: secure_boot={} pcr11_sha256={} tpm={} signed_policy={}",
        report.secure_boot.as_str(),
        report.pcr11_sha256.as_deref().unwrap_or("none"),
        report.tpm.replace(' ', "_"),
        report.signed_policy.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(root: &Path, name: &str, value: u8) {
        let dir = at(root, "/sys/firmware/efi/efivars");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("{name}-{EFI_GLOBAL_VARIABLE}")),
            [6, 0, 0, 0, value],
        )
        .unwrap();
    }

    #[test]
    fn secure_boot_from_the_efi_variables() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(secure_boot(r), SecureBoot::NotUefi);
        fs::create_dir_all(at(r, "/sys/firmware/efi")).unwrap();
        assert_eq!(secure_boot(r), SecureBoot::Unknown);
        var(r, "SetupMode", 0);
        assert_eq!(secure_boot(r), SecureBoot::Off);
        var(r, "SecureBoot", 1);
        assert_eq!(secure_boot(r), SecureBoot::On);
        var(r, "SecureBoot", 0);
        assert_eq!(secure_boot(r), SecureBoot::Off);
        var(r, "SetupMode", 1);
        assert_eq!(secure_boot(r), SecureBoot::SetupMode);
        // A truncated variable is not read as a value.
        assert_eq!(efi_flag(&[6, 0, 0]), None);
    }

    #[test]
    fn pcr_11_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(pcr11(r), (None, "none".to_string()));
        let tpm = at(r, "/sys/class/tpm/tpm0");
        fs::create_dir_all(tpm.join("pcr-sha256")).unwrap();
        fs::write(tpm.join("tpm_version_major"), "2\n").unwrap();
        let (value, name) = pcr11(r);
        assert_eq!(value, None);
        assert!(
            name.starts_with("tpm0 (TPM 2.0): no SHA-256 PCR 11"),
            "{name}"
        );
        let hex = "AB".repeat(32);
        fs::write(tpm.join("pcr-sha256/11"), format!("{hex}\n")).unwrap();
        let report = read(r);
        assert_eq!(report.pcr11_sha256, Some("ab".repeat(32)));
        assert_eq!(
            format(&report),
            format!(
                "boot security: secure_boot=not-uefi pcr11_sha256={} tpm=tpm0_(TPM_2.0) signed_policy=none",
                "ab".repeat(32)
            )
        );
        fs::write(tpm.join("pcr-sha256/11"), "xyz\n").unwrap();
        assert_eq!(pcr11(r).0, None);
        assert!(pcr11(r).1.contains("PCR 11 reads \"xyz\""));
    }

    #[test]
    fn a_signed_policy_is_checked_against_pcr_11() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let pcr = "cd".repeat(32);
        let value = hex::decode32(&pcr).unwrap();
        assert_eq!(signed_policy(r, Some(&pcr)), SignedPolicy::None);
        let write = |json: String| {
            let path = at(r, PCR_SIGNATURE);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, json).unwrap();
        };
        let entry = |pcrs: &str, policy: &[u8; 32]| {
            format!(
                r#"{{"pcrs":{pcrs},"pkfp":"00","pol":"{}","sig":"AA=="}}"#,
                hex::encode(policy)
            )
        };
        let good = policy_pcr_digest::<11>(&value);
        let other = policy_pcr_digest::<11>(&[0u8; 32]);
        write(format!(r#"{{"sha256":[{}]}}"#, entry("[11]", &good)));
        assert_eq!(signed_policy(r, Some(&pcr)), SignedPolicy::Match);
        // systemd-measure signs one entry per boot phase: any may match.
        write(format!(
            r#"{{"sha256":[{},{}]}}"#,
            entry("[11]", &other),
            entry("[11]", &good)
        ));
        assert_eq!(signed_policy(r, Some(&pcr)), SignedPolicy::Match);
        write(format!(r#"{{"sha256":[{}]}}"#, entry("[11]", &other)));
        assert_eq!(signed_policy(r, Some(&pcr)), SignedPolicy::Mismatch);
        // Another PCR set, garbage, no PCR value: nothing to say.
        write(format!(r#"{{"sha256":[{}]}}"#, entry("[7,11]", &good)));
        assert_eq!(signed_policy(r, Some(&pcr)), SignedPolicy::None);
        write("not json".into());
        assert_eq!(signed_policy(r, Some(&pcr)), SignedPolicy::None);
        assert_eq!(signed_policy(r, None), SignedPolicy::None);
        assert_eq!(hex::decode32("zz"), None);
    }
}
