//! The PCR 11 value systemd-stub leaves in the TPM when it boots a UKI, as
//! `systemd-measure calculate --phase=` predicts it (SHA-256 bank): for each
//! UKI section the stub knows, in its canonical order, the stub extends PCR
//! 11 with the SHA-256 of the section's name (with its NUL) and then with the
//! SHA-256 of its contents (`VirtualSize` bytes). Which sections it knows
//! depends on its version, read from its `.sdmagic` section: systemd 252
//! and 253 measure `.linux`, `.osrel`, `.cmdline`, `.initrd`, `.splash`,
//! `.dtb` and `.pcrpkey`; 254 and later also `.ucode`, `.uname` and `.sbat`
//! (and the stub's own `.sbat`, if it has one). `.pcrsig` is never
//! measured. mkhost's init runs no systemd-pcrphase, so this is the value a
//! booted host reads.

use sha2::{Digest, Sha256};

use crate::uki::{pe_section_data, pe_sections, UkiError};

/// Sections systemd 252 and 253 measure, in order.
const SECTIONS_252: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// Sections systemd 254 and later measure, in order (the UKI
/// specification's canonical order, without `.pcrsig`).
const SECTIONS_254: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey", ".profile", ".dtbauto", ".hwids", ".efifw",
];

/// A predicted PCR 11.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcr11 {
    /// The SHA-256 bank's value.
    pub sha256: [u8; 32],
    /// The sections measured, in order.
    pub sections: Vec<String>,
    /// The stub's version (`252.39-1~deb12u2`), from its `.sdmagic`.
    pub stub_version: Option<String>,
}

/// The stub's version from its `.sdmagic` section
/// (`#### LoaderInfo: systemd-stub 252.39 ####`).
pub fn stub_version(uki: &[u8]) -> Result<Option<String>, UkiError> {
    let Some(magic) = pe_section_data(uki, ".sdmagic")? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(magic);
    Ok(text
        .split("systemd-stub ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string))
}

/// PCR 11 after systemd-stub has measured `uki`.
pub fn predict_pcr11(uki: &[u8]) -> Result<Pcr11, UkiError> {
    let version = stub_version(uki)?;
    let major: u32 = version
        .as_deref()
        .and_then(|v| v.split(['.', '-', '~']).next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(252);
    let known = if major < 254 {
        SECTIONS_252
    } else {
        SECTIONS_254
    };
    let table = pe_sections(uki)?;
    let mut pcr = [0u8; 32];
    let mut measured = Vec::new();
    for &name in known {
        let Some(section) = table.iter().find(|s| s.name == name) else {
            continue;
        };
        let data = pe_section_data(uki, name)?.unwrap_or_default();
        // In memory the section is VirtualSize bytes, zero-filled past its
        // raw data.
        let mut contents = Sha256::new();
        contents.update(data);
        let virtual_size = section.virtual_size as usize;
        if virtual_size > data.len() {
            contents.update(vec![0u8; virtual_size - data.len()]);
        }
        let mut name_nul = name.as_bytes().to_vec();
        name_nul.push(0);
        extend(&mut pcr, &Sha256::digest(&name_nul).into());
        extend(&mut pcr, &contents.finalize().into());
        measured.push(name.to_string());
    }
    Ok(Pcr11 {
        sha256: pcr,
        sections: measured,
        stub_version: version,
    })
}

/// `pcr := SHA-256(pcr || digest)`, a TPM extend.
fn extend(pcr: &mut [u8; 32], digest: &[u8; 32]) {
    let mut hash = Sha256::new();
    hash.update(*pcr);
    hash.update(digest);
    *pcr = hash.finalize().into();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::run;
    use crate::uki::{assemble_uki, UkiSections};
    use std::process::Command;

    const MEASURE: &str = "/usr/lib/systemd/systemd-measure";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn prediction_equals_systemd_measure() {
        let stub = crate::test_tools::stub();
        let (linux, initrd) = (vec![0x4du8; 5000], vec![7u8; 12345]);
        let (osrel, cmdline) = (b"ID=mkhost\n".to_vec(), b"console=ttyS0 quiet".to_vec());
        let uki = assemble_uki(
            &stub,
            &UkiSections {
                osrel: &osrel,
                cmdline: &cmdline,
                uname: Some(b"6.1.0-test"),
                pcrpkey: None,
                pcrsig: None,
                linux: &linux,
                initrd: &initrd,
            },
        )
        .unwrap();
        let predicted = predict_pcr11(&uki).unwrap();
        assert!(
            predicted
                .stub_version
                .as_deref()
                .unwrap_or("")
                .starts_with("25"),
            "{predicted:?}"
        );
        if !std::path::Path::new(MEASURE).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{MEASURE} is missing (package systemd)"
            );
            eprintln!("SKIPPED the comparison: {MEASURE} is missing (package systemd)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let mut cmd = Command::new(MEASURE);
        cmd.arg("calculate")
            .arg(format!("--linux={}", file("linux", &linux).display()))
            .arg(format!("--osrel={}", file("osrel", &osrel).display()))
            .arg(format!("--cmdline={}", file("cmdline", &cmdline).display()))
            .arg(format!("--initrd={}", file("initrd", &initrd).display()))
            .args(["--bank=sha256", "--phase="]);
        let major: u32 = predicted.stub_version.as_deref().unwrap()[..3]
            .parse()
            .unwrap();
        if major >= 254 {
            cmd.arg(format!(
                "--uname={}",
                file("uname", b"6.1.0-test").display()
            ));
            if let Some(sbat) = pe_section_data(&uki, ".sbat").unwrap() {
                cmd.arg(format!("--sbat={}", file("sbat", sbat).display()));
            }
        }
        let (ok, out) = run(&mut cmd);
        assert!(ok, "{out}");
        let expected = out
            .lines()
            .find_map(|l| l.strip_prefix("11:sha256="))
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(hex(&predicted.sha256), expected, "{predicted:?}");
        // One byte of the command line changes it.
        let mut other = cmdline.clone();
        other[0] ^= 1;
        let changed = assemble_uki(
            &stub,
            &UkiSections {
                osrel: &osrel,
                cmdline: &other,
                uname: Some(b"6.1.0-test"),
                pcrpkey: None,
                pcrsig: None,
                linux: &linux,
                initrd: &initrd,
            },
        )
        .unwrap();
        assert_ne!(predict_pcr11(&changed).unwrap().sha256, predicted.sha256);

        // A signed PCR policy: `.pcrpkey` is measured, `.pcrsig` is not.
        let pcrpkey = b"-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
        let with_key = |pcrsig: Option<&[u8]>| {
            assemble_uki(
                &stub,
                &UkiSections {
                    osrel: &osrel,
                    cmdline: &cmdline,
                    uname: Some(b"6.1.0-test"),
                    pcrpkey: Some(pcrpkey),
                    pcrsig,
                    linux: &linux,
                    initrd: &initrd,
                },
            )
            .unwrap()
        };
        let keyed = predict_pcr11(&with_key(None)).unwrap();
        assert_eq!(keyed.sections.last().map(String::as_str), Some(".pcrpkey"));
        assert_eq!(
            predict_pcr11(&with_key(Some(b"{\"sha256\":[]}"))).unwrap(),
            keyed
        );
        let (ok, out) = run(cmd.arg(format!("--pcrpkey={}", file("pcrpkey", pcrpkey).display())));
        assert!(ok, "{out}");
        let expected = out
            .lines()
            .find_map(|l| l.strip_prefix("11:sha256="))
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(hex(&keyed.sha256), expected, "{keyed:?}");
    }
}
