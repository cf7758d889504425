//! Secure Boot and measured boot in a guest (issue 19): OVMF's Secure Boot
//! firmware (Debian's `OVMF_CODE_4M.secboot.fd`, SMM on q35) with a
//! variable store that enrolls the keys `mkhost keys create` made
//! (PyPI's virt-firmware, `virt-fw-vars`), and a TPM 2.0 (`swtpm`).
//!
//! - the signed image boots; init says Secure Boot was on and reads PCR
//!   11 from the TPM, equal to what the build predicted (manifest.json),
//!   and matching the UKI's signed PCR policy (`.pcrsig`, which
//!   systemd-stub hands to the initramfs); `hostd status` reports the same;
//! - an image whose command line differs by one byte measures another PCR
//!   11, again the one its build predicted;
//! - UEFI HTTP boot of the signed UKI from `mkhost serve` (no iPXE: the
//!   firmware fetches and verifies it) runs with Secure Boot on, and
//!   measures the same PCR 11 as the disk boot;
//! - the firmware refuses, each with "Access Denied" and no line of ours:
//!   the unsigned image, the UKI signed with another key set, and the
//!   signed UKI with one byte changed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::secure_boot::{profile, run_ok};
use crate::support::{build, mkhost, scratch, text, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(180);
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A variable store `name` with `keys`' PK, KEK and db enrolled, Secure
/// Boot on, and more `virt-fw-vars` arguments (run as the module pip
/// installed: ci/install-deps).
fn enrolled_vars(keys: &Path, out: &Path, name: &str, more: &[&str]) -> PathBuf {
    let guid = std::fs::read_to_string(keys.join("GUID")).unwrap();
    let guid = guid.trim();
    let vars = out.join(name);
    run_ok(
        Command::new("python3")
            .args(["-m", "virt.firmware.vars", "--input", OVMF_VARS, "--output"])
            .arg(&vars)
            .args(["--set-pk", guid])
            .arg(keys.join("PK.crt"))
            .args(["--add-kek", guid])
            .arg(keys.join("KEK.crt"))
            .args(["--add-db", guid])
            .arg(keys.join("db.crt"))
            .arg("--secure-boot")
            .args(more),
    );
    vars
}

/// swtpm, a TPM 2.0 on a socket in `dir`; killed on drop.
struct Swtpm {
    child: Child,
    socket: PathBuf,
}

impl Swtpm {
    fn start(dir: &Path) -> Swtpm {
        let state = dir.join("tpm");
        std::fs::create_dir_all(&state).unwrap();
        let socket = dir.join("swtpm.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--ctrl"])
            .arg(format!("type=unixio,path={}", socket.display()))
            .spawn()
            .expect("swtpm missing: run ci/install-deps (package swtpm)");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(socket.exists(), "swtpm made no socket");
        Swtpm { child, socket }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QEMU arguments: q35 with SMM, the Secure Boot firmware with a copy of
/// `vars` (a boot writes to its store), `disk` on virtio (snapshot=on) if
/// the boot is from a disk, and the TPM when given.
fn secure_boot_args(
    vars: &Path,
    disk: Option<&Path>,
    work: &Path,
    tpm: Option<&Swtpm>,
) -> Vec<String> {
    let stem = |p: &Path| p.file_stem().unwrap().to_string_lossy().into_owned();
    let copy = work.join(format!(
        "{}-{}.fd",
        stem(vars),
        disk.map_or("net".into(), stem)
    ));
    std::fs::copy(vars, &copy).unwrap();
    let mut args: Vec<String> = [
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-m",
        "256",
    ]
    .map(String::from)
    .to_vec();
    args.push("-drive".into());
    args.push(format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
    ));
    args.push("-drive".into());
    args.push(format!(
        "if=pflash,format=raw,unit=1,file={}",
        copy.display()
    ));
    if let Some(disk) = disk {
        args.push("-drive".into());
        args.push(format!(
            "if=none,id=disk,format=raw,snapshot=on,file={}",
            disk.display()
        ));
        args.push("-device".into());
        args.push("virtio-blk-pci,drive=disk".into());
    }
    if let Some(tpm) = tpm {
        args.extend([
            "-chardev".into(),
            format!("socket,id=chrtpm,path={}", tpm.socket.display()),
            "-tpmdev".into(),
            "emulator,id=tpm0,chardev=chrtpm".into(),
            "-device".into(),
            "tpm-tis,tpmdev=tpm0".into(),
        ]);
    }
    args
}

/// A copy of disk image `img` named `name` whose ESP holds `efi` as
/// `EFI/BOOT/BOOTX64.EFI`.
fn with_bootx64(img: &Path, efi: &Path, work: &Path, name: &str) -> PathBuf {
    let copy = work.join(format!("{name}.img"));
    std::fs::copy(img, &copy).unwrap();
    let esp = format!("{}@@1M", copy.display());
    run_ok(
        Command::new("mcopy")
            .args(["-o", "-i", &esp])
            .arg(efi)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
    );
    copy
}

/// Where section `name` of PE `pe` is in the file: (offset, raw size).
fn pe_section(pe: &[u8], name: &str) -> (usize, usize) {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([pe[at], pe[at + 1]]));
    let u32_at = |at: usize| u32::from_le_bytes(pe[at..at + 4].try_into().unwrap()) as usize;
    let coff = u32_at(0x3c) + 4;
    let table = coff + 20 + u16_at(coff + 16);
    (0..u16_at(coff + 2))
        .map(|i| table + 40 * i)
        .find(|&at| pe[at..at + 8].starts_with(name.as_bytes()))
        .map(|at| (u32_at(at + 20), u32_at(at + 16)))
        .unwrap_or_else(|| panic!("no {name} section"))
}

/// Waits for init's boot security line and checks it: Secure Boot on,
/// PCR 11 as `predicted`, the signed policy matched.
fn assert_measured_as_signed(guest: &mut Guest, predicted: &str, what: &str) {
    let security = guest.wait_for("mkhost: boot security:", BOOT_TIMEOUT);
    assert_eq!(
        security.trim_end(),
        format!(
            "mkhost: boot security: secure_boot=on pcr11_sha256={predicted} \
             tpm=tpm0_(TPM_2.0) signed_policy=match"
        ),
        "{what}: PCR 11 is not the predicted {predicted}, or Secure Boot was off"
    );
}

/// Boots `img` and expects the firmware to refuse it.
fn assert_refused(img: &Path, vars: &Path, work: &Path, what: &str) {
    let mut guest = Guest::start(&secure_boot_args(vars, Some(img), work, None));
    let line = guest.wait_for("Access Denied", REFUSAL_TIMEOUT);
    assert!(line.contains("failed to load"), "{what}: {line}");
    assert!(
        !guest.log.iter().any(|l| l.contains("mkhost:")),
        "{what} ran: {}",
        guest.log.join("\n")
    );
}

#[test]
fn secure_boot_firmware_boots_the_signed_image_and_refuses_others() {
    for tool in [OVMF_CODE, OVMF_VARS] {
        assert!(
            Path::new(tool).is_file(),
            "{tool} missing: run ci/install-deps (package ovmf)"
        );
    }
    let work = scratch("secure-boot-guest");
    let keys = work.join("keys");
    let other_keys = work.join("other-keys");
    for (dir, name) in [(&keys, "mkhost lab"), (&other_keys, "someone else")] {
        run_ok(
            mkhost()
                .args(["keys", "create", "--name", name, "--dir"])
                .arg(dir),
        );
    }
    let body = format!(
        "[secure_boot]\nkey = \"{}\"\ncertificate = \"{}\"\npcr_key = \"{}\"\n",
        keys.join("db.key").display(),
        keys.join("db.crt").display(),
        keys.join("pcr.key").display()
    );
    // The base profile's command line is "quiet panic=-1".
    let one_byte_off = format!("{body}[boot]\ncmdline = \"quiet panic=-2\"\n");
    let out = work.join("out");
    for (name, body) in [
        ("sbsigned", body.as_str()),
        ("sbplain", ""),
        ("sbcmdline", one_byte_off.as_str()),
    ] {
        let output = build(&profile(&work, name, body), &out, &["--quiet"]);
        assert!(output.status.success(), "{}", text(&output));
    }
    let signed = out.join("sbsigned");
    let signed_img = signed.join("mkhost-sbsigned.img");
    let signed_efi = signed.join("mkhost-sbsigned.efi");
    let predicted = |dir: &Path| {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert!(
            manifest["measured_boot"]["pcr11_sections"]
                .as_array()
                .unwrap()
                .contains(&".pcrpkey".into()),
            "{manifest}"
        );
        manifest["measured_boot"]["pcr11_sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let predicted_signed = predicted(&signed);
    let predicted_cmdline = predicted(&out.join("sbcmdline"));
    assert_ne!(predicted_signed, predicted_cmdline);
    let vars = enrolled_vars(&keys, &work, "vars.fd", &[]);

    // The image whose command line differs by one byte boots to another
    // PCR 11: the one its build predicted.
    let tpm = Swtpm::start(&work.join("tpm-cmdline"));
    let mut guest = Guest::start(&secure_boot_args(
        &vars,
        Some(&out.join("sbcmdline/mkhost-sbcmdline.img")),
        &work,
        Some(&tpm),
    ));
    let security = guest.wait_for("mkhost: boot security:", BOOT_TIMEOUT);
    assert!(
        security.contains(&format!("pcr11_sha256={predicted_cmdline} "))
            && security.contains("signed_policy=match"),
        "{security}"
    );
    drop(guest);
    drop(tpm);

    // The signed image boots with Secure Boot on, and the TPM's PCR 11 is
    // what the build predicted and what its signed policy names.
    let tpm = Swtpm::start(&work);
    let mut guest = Guest::start_interactive(
        &secure_boot_args(&vars, Some(&signed_img), &work, Some(&tpm)),
        &work,
    );
    let predicted = predicted_signed;
    assert_measured_as_signed(&mut guest, &predicted, "disk boot");
    guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    if !guest.log.iter().any(|l| l.contains("debug shell on")) {
        guest.wait_for("debug shell on", BOOT_TIMEOUT);
    }
    let status = guest.run("hostd status", Duration::from_secs(60)).join("");
    assert!(
        status.contains(&format!(
            r#""boot_security":{{"secure_boot":"on","pcr11_sha256":"{predicted}","tpm":"tpm0 (TPM 2.0)","signed_policy":"match"}}"#
        )),
        "{status}"
    );
    drop(guest);
    drop(tpm);

    // UEFI HTTP boot of the signed UKI from mkhost serve, Secure Boot on:
    // the firmware fetches it (a NIC without iPXE's option ROM) and checks
    // it against db; the TPM measures what the disk boot measured.
    let signed_profile = profile(&work, "sbsigned", &body);
    let out_arg = out.display().to_string();
    let serve = crate::netboot::Serve::start(&[
        "--no-build",
        "--profile",
        &signed_profile,
        "--out",
        &out_arg,
    ])
    .unwrap();
    let uri = format!("http://10.0.2.2:{}/mkhost-sbsigned.efi", serve.addr.port());
    let http_vars = enrolled_vars(&keys, &work, "vars-http.fd", &["--set-boot-uri", &uri]);
    let tpm = Swtpm::start(&work.join("tpm-http"));
    // No disk: the boot comes from the network.
    let mut args = secure_boot_args(&http_vars, None, &work, Some(&tpm));
    args.extend([
        "-netdev".into(),
        "user,id=n".into(),
        "-device".into(),
        "virtio-net-pci,netdev=n,romfile=".into(),
    ]);
    let mut guest = Guest::start(&args);
    guest.wait_for(&uri, BOOT_TIMEOUT);
    assert_measured_as_signed(&mut guest, &predicted, "HTTP boot");
    drop(guest);
    drop(tpm);
    drop(serve);

    // Refused: the unsigned image, another key set's signature, one byte
    // changed in the signed UKI.
    assert_refused(
        &out.join("sbplain/mkhost-sbplain.img"),
        &vars,
        &work,
        "the unsigned image",
    );
    let foreign = work.join("foreign.efi");
    run_ok(
        mkhost()
            .args(["keys", "sign", "--key"])
            .arg(other_keys.join("db.key"))
            .arg("--certificate")
            .arg(other_keys.join("db.crt"))
            .arg(out.join("sbplain/mkhost-sbplain.efi"))
            .arg("-o")
            .arg(&foreign),
    );
    let foreign_img = with_bootx64(&signed_img, &foreign, &work, "foreign");
    assert_refused(&foreign_img, &vars, &work, "a UKI signed with another key");
    let mut bytes = std::fs::read(&signed_efi).unwrap();
    let (initrd_at, initrd_len) = pe_section(&bytes, ".initrd");
    bytes[initrd_at + initrd_len / 2] ^= 1;
    let tampered = work.join("tampered.efi");
    std::fs::write(&tampered, &bytes).unwrap();
    let tampered_img = with_bootx64(&signed_img, &tampered, &work, "tampered");
    assert_refused(
        &tampered_img,
        &vars,
        &work,
        "the signed UKI with a byte changed",
    );
}
