//! `mkhost run`: boots a build's artifacts in QEMU for a local trial.
//!
//! Three ways in, matching the three ways a real machine boots:
//!
//! - `usb` (default): the GPT image under OVMF, attached as a USB stick
//!   (`qemu-xhci` + `usb-storage`), as it would be after `dd` to a stick;
//! - `pxe`: the PXE kernel and initramfs loaded directly (`-kernel`/`-initrd`)
//!   with the profile's command line, as iPXE would;
//! - `uki`: the UKI alone under OVMF, from a FAT directory QEMU presents as a disk
//!   (`fat:DIR` holding `EFI/BOOT/BOOTX64.EFI`), as UEFI HTTP boot would.
//!
//! The serial console is the terminal (`-serial mon:stdio`: Ctrl-A X quits,
//! Ctrl-A C toggles QEMU's monitor), networking is QEMU's user mode with host
//! port forwards on 127.0.0.1, and `mkhost` replaces itself with QEMU (exec), so
//! the exit status and signals are QEMU's own.
//!
//! KVM is used only where it can run this guest: `/dev/kvm` must open read-write
//! and be backed by hardware virtualisation (`kvm_intel` or `kvm_amd`). Nested or
//! paravirtual KVM (such as `kvm_pvm`) accepts QEMU and then fails on the first
//! real guest code, so there TCG is chosen up front. [`plan`] is pure: the QEMU
//! command line is built and tested without starting anything.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::artifacts::{self, ArtifactError, Artifacts};

pub const QEMU: &str = "qemu-system-x86_64";
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{program} not found in PATH: install it with `apt-get install qemu-system-x86`")]
    QemuMissing { program: String },
    #[error("UEFI firmware {path} not found: install it with `apt-get install ovmf` (or pass --ovmf PATH; --pxe needs none)")]
    OvmfMissing { path: PathBuf },
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error("cannot prepare the EFI directory {path}")]
    Esp {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Exec {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Usb,
    Pxe,
    Uki,
}

impl BootMode {
    fn uses_ovmf(self) -> bool {
        self != BootMode::Pxe
    }
}

/// `HOSTPORT:GUESTPORT`: TCP on 127.0.0.1:HOSTPORT reaches the guest's GUESTPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

impl FromStr for Forward {
    type Err = String;

    fn from_str(text: &str) -> Result<Forward, String> {
        let port = |p: &str| match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!(
                "{p:?} in {text:?} is not a port (1-65535); write HOSTPORT:GUESTPORT, like 8080:80"
            )),
        };
        let (host, guest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: write HOSTPORT:GUESTPORT, like 8080:80"))?;
        Ok(Forward {
            host: port(host)?,
            guest: port(guest)?,
        })
    }
}

/// `--accel`: what the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// The accelerator chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accel {
    pub kvm: bool,
    pub reason: String,
}

impl Accel {
    pub fn decide(choice: AccelChoice) -> Accel {
        match choice {
            AccelChoice::Auto => probe_kvm(Path::new("/dev/kvm"), Path::new("/sys/module")),
            AccelChoice::Kvm => Accel {
                kvm: true,
                reason: "asked for with --accel kvm".into(),
            },
            AccelChoice::Tcg => Accel {
                kvm: false,
                reason: "asked for with --accel tcg".into(),
            },
        }
    }
}

/// Whether KVM at `dev` can run an ordinary guest (see the module docs).
pub fn probe_kvm(dev: &Path, sys_module: &Path) -> Accel {
    let tcg = |reason: String| Accel { kvm: false, reason };
    if !dev.exists() {
        return tcg(format!("no {}", dev.display()));
    }
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return tcg(format!(
            "cannot open {}: {err} (join the kvm group?)",
            dev.display()
        ));
    }
    match ["kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| sys_module.join(m).exists())
    {
        Some(module) => Accel {
            kvm: true,
            reason: format!("{} works ({module})", dev.display()),
        },
        None => tcg(format!(
            "{} is not hardware KVM (no kvm_intel or kvm_amd; nested or paravirtual KVM cannot run this guest)",
            dev.display()
        )),
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub mode: BootMode,
    pub mem_mib: Option<u64>,
    pub cpus: u32,
    pub forwards: Vec<Forward>,
    pub ovmf: PathBuf,
}

/// A QEMU command line and what to tell the user about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuPlan {
    pub args: Vec<String>,
    pub mem_mib: u64,
    /// One line: what boots, how much memory, accelerator.
    pub summary: String,
    pub warnings: Vec<String>,
}

impl QemuPlan {
    /// The whole command, quoted for a POSIX shell (for `--dry-run` and the log).
    pub fn command_line(&self, qemu: &Path) -> String {
        std::iter::once(qemu.display().to_string())
            .chain(self.args.iter().cloned())
            .map(|arg| shell_quote(&arg))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes an argument for a POSIX shell when it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Memory when `--mem` is not given: the profile's RAM floor, and under OVMF 32
/// MiB more for the firmware (at least 160 MiB: with 128 the kernel's EFI stub
/// runs out of room before Linux starts).
pub fn default_mem_mib(mode: BootMode, min_ram_mib: u64) -> u64 {
    if mode.uses_ovmf() {
        (min_ram_mib + 32).max(160)
    } else {
        min_ram_mib.max(128)
    }
}

/// QEMU's option syntax doubles commas inside a value.
fn qemu_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Builds the QEMU arguments (without the program name). `esp_dir` is the
/// directory holding `EFI/BOOT/BOOTX64.EFI` for [`BootMode::Uki`].
pub fn plan(
    artifacts: &Artifacts,
    options: &RunOptions,
    accel: &Accel,
    esp_dir: Option<&Path>,
) -> Result<QemuPlan, ArtifactError> {
    let mem_mib = options
        .mem_mib
        .unwrap_or_else(|| default_mem_mib(options.mode, artifacts.min_ram_mib));
    let cpus = options.cpus.max(1);
    let mut warnings = Vec::new();
    if mem_mib < artifacts.min_ram_mib {
        warnings.push(format!(
            "--mem {mem_mib} is below profile {}'s RAM floor of {} MiB; the guest may not boot",
            artifacts.profile, artifacts.min_ram_mib
        ));
    }
    let mut args: Vec<String> = vec!["-name".into(), format!("mkhost-{}", artifacts.profile)];
    if accel.kvm {
        // If KVM fails to initialise after all, QEMU falls back to TCG.
        args.extend(["-accel", "kvm", "-accel", "tcg"].map(String::from));
    } else {
        args.extend(["-accel", "tcg"].map(String::from));
    }
    args.extend([
        "-m".into(),
        mem_mib.to_string(),
        "-smp".into(),
        cpus.to_string(),
        "-nodefaults".into(),
        "-no-reboot".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "mon:stdio".into(),
    ]);
    let mut netdev = "user,id=net0".to_string();
    for forward in &options.forwards {
        netdev.push_str(&format!(
            ",hostfwd=tcp:127.0.0.1:{}-:{}",
            forward.host, forward.guest
        ));
    }
    args.extend([
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
        "-device".into(),
        "virtio-rng-pci".into(),
    ]);
    let what = match options.mode {
        BootMode::Usb => {
            let image = artifacts.file(&artifacts.image_name())?;
            args.extend([
                "-bios".into(),
                qemu_value(&options.ovmf),
                "-drive".into(),
                format!(
                    "if=none,id=stick,format=raw,snapshot=on,file={}",
                    qemu_value(&image.path)
                ),
                "-device".into(),
                "qemu-xhci,id=xhci".into(),
                "-device".into(),
                "usb-storage,bus=xhci.0,drive=stick,removable=on,bootindex=0".into(),
            ]);
            format!("{} as a USB stick under OVMF", image.rel)
        }
        BootMode::Uki => {
            let uki = artifacts.file(&artifacts.uki_name())?;
            let dir = esp_dir.unwrap_or(Path::new("esp"));
            args.extend([
                "-bios".into(),
                qemu_value(&options.ovmf),
                "-drive".into(),
                format!(
                    "if=none,id=esp,format=raw,readonly=on,file=fat:{}",
                    qemu_value(dir)
                ),
                "-device".into(),
                "virtio-blk-pci,drive=esp,bootindex=0".into(),
            ]);
            format!("{} alone under OVMF", uki.rel)
        }
        BootMode::Pxe => {
            let kernel = artifacts.file(artifacts::KERNEL)?;
            let initrd = artifacts.file(artifacts::INITRD)?;
            args.extend([
                "-kernel".into(),
                kernel.path.display().to_string(),
                "-initrd".into(),
                initrd.path.display().to_string(),
                "-append".into(),
                artifacts.cmdline.clone(),
            ]);
            format!("{} + {} directly", kernel.rel, initrd.rel)
        }
    };
    let accel_text = if accel.kvm {
        format!("KVM: {}", accel.reason)
    } else {
        format!("TCG (software): {}", accel.reason)
    };
    let summary = format!(
        "profile {}: {what}, {mem_mib} MiB, {cpus} CPU{}, {accel_text}",
        artifacts.profile,
        if cpus == 1 { "" } else { "s" }
    );
    Ok(QemuPlan {
        args,
        mem_mib,
        summary,
        warnings,
    })
}

/// Writes the verified UKI as `<out>/.<profile>.run-uki/EFI/BOOT/BOOTX64.EFI`
/// (next to the output directory, not in it, so SHA256SUMS still covers that
/// exactly) and returns the directory to hand QEMU.
pub fn prepare_esp_dir(artifacts: &Artifacts, out_dir: &Path) -> Result<PathBuf, RunError> {
    let uki = artifacts.file(&artifacts.uki_name())?;
    let dir = out_dir.join(format!(".{}.run-uki", artifacts.profile));
    let boot = dir.join("EFI/BOOT");
    let esp_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Esp { path, source }
    };
    std::fs::create_dir_all(&boot).map_err(esp_err(&boot))?;
    let target = boot.join("BOOTX64.EFI");
    let tmp = boot.join(format!(".BOOTX64.EFI.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::copy(&mut uki.reader(), &mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(RunError::Esp {
            path: target,
            source,
        });
    }
    dir.canonicalize().map_err(esp_err(&dir))
}

/// Finds `program` in `PATH` (or takes it as a path when it has a `/`).
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Checks that QEMU (and OVMF, when the mode needs it) are installed.
pub fn check_tools(mode: BootMode, ovmf: &Path) -> Result<PathBuf, RunError> {
    let qemu = find_program(QEMU).ok_or_else(|| RunError::QemuMissing {
        program: QEMU.into(),
    })?;
    if mode.uses_ovmf() && !ovmf.is_file() {
        return Err(RunError::OvmfMissing {
            path: ovmf.to_path_buf(),
        });
    }
    Ok(qemu)
}

/// Replaces this process with QEMU; returns only if that fails.
pub fn exec(qemu: &Path, plan: &QemuPlan) -> RunError {
    use std::os::unix::process::CommandExt;
    let source = std::process::Command::new(qemu).args(&plan.args).exec();
    RunError::Exec {
        program: qemu.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::tests::fake_output;

    fn options(mode: BootMode) -> RunOptions {
        RunOptions {
            mode,
            mem_mib: None,
            cpus: 1,
            forwards: vec![],
            ovmf: PathBuf::from(OVMF),
        }
    }

    fn tcg() -> Accel {
        Accel {
            kvm: false,
            reason: "test".into(),
        }
    }

    fn joined(plan: &QemuPlan) -> String {
        plan.args.join(" ")
    }

    #[test]
    fn forwards_parse() {
        assert_eq!(
            "8080:80".parse::<Forward>().unwrap(),
            Forward {
                host: 8080,
                guest: 80
            }
        );
        for bad in ["8080", "0:80", "8080:", "a:b", "70000:80", "1:2:3"] {
            assert!(bad.parse::<Forward>().is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_defaults() {
        assert_eq!(default_mem_mib(BootMode::Pxe, 128), 128);
        assert_eq!(default_mem_mib(BootMode::Usb, 128), 160);
        assert_eq!(default_mem_mib(BootMode::Uki, 128), 160);
        assert_eq!(default_mem_mib(BootMode::Pxe, 256), 256);
        assert_eq!(default_mem_mib(BootMode::Uki, 256), 288);
        assert_eq!(default_mem_mib(BootMode::Pxe, 64), 128);
    }

    #[test]
    fn qemu_command_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_output(tmp.path(), "lab");
        let artifacts = Artifacts::open(&dir).unwrap();

        let mut o = options(BootMode::Usb);
        o.forwards = vec!["8080:80".parse().unwrap(), "2222:22".parse().unwrap()];
        let p = plan(&artifacts, &o, &tcg(), None).unwrap();
        let line = joined(&p);
        assert!(line.starts_with("-name mkhost-lab -accel tcg -m 288 -smp 1 -nodefaults -no-reboot -display none -serial mon:stdio"), "{line}");
        assert!(line.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-pci,netdev=net0"), "{line}");
        assert!(line.contains(&format!("-bios {OVMF}")), "{line}");
        assert!(
            line.contains(&format!("file={}", dir.join("mkhost-lab.img").display())),
            "{line}"
        );
        assert!(
            line.contains("usb-storage,bus=xhci.0,drive=stick,removable=on,bootindex=0"),
            "{line}"
        );
        assert!(
            p.summary
                .contains("mkhost-lab.img as a USB stick under OVMF, 288 MiB, 1 CPU, TCG"),
            "{}",
            p.summary
        );

        let mut o = options(BootMode::Pxe);
        o.mem_mib = Some(200);
        o.cpus = 2;
        let p = plan(
            &artifacts,
            &o,
            &Accel {
                kvm: true,
                reason: "r".into(),
            },
            None,
        )
        .unwrap();
        assert_eq!(p.args[p.args.len() - 1], "console=ttyS0,115200 quiet");
        assert_eq!(p.args[p.args.len() - 2], "-append");
        let line = joined(&p);
        assert!(
            line.contains("-accel kvm -accel tcg -m 200 -smp 2"),
            "{line}"
        );
        assert!(!line.contains("-bios"), "{line}");
        assert!(
            line.contains(&format!("-kernel {}", dir.join("pxe/vmlinuz").display())),
            "{line}"
        );
        assert_eq!(
            p.warnings.len(),
            1,
            "200 MiB is below the fake profile's 256"
        );
        assert!(p.summary.contains("2 CPUs, KVM"), "{}", p.summary);

        let esp = prepare_esp_dir(&artifacts, tmp.path()).unwrap();
        assert_eq!(
            std::fs::read(esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            b"MZ uki"
        );
        let mut o = options(BootMode::Uki);
        o.ovmf = PathBuf::from("/fw,with,commas.fd");
        let p = plan(&artifacts, &o, &tcg(), Some(&esp)).unwrap();
        let line = joined(&p);
        assert!(line.contains("-bios /fw,,with,,commas.fd"), "{line}");
        assert!(
            line.contains(&format!(
                "readonly=on,file=fat:{} -device virtio-blk-pci,drive=esp,bootindex=0",
                esp.display()
            )),
            "{line}"
        );
        // The EFI directory sits beside the output directory: SHA256SUMS still holds.
        assert!(Artifacts::open(&dir).is_ok());
    }

    #[test]
    fn command_lines_quote_for_the_shell() {
        let plan = QemuPlan {
            args: vec![
                "-append".into(),
                "console=ttyS0 quiet".into(),
                "it's".into(),
                "".into(),
            ],
            mem_mib: 128,
            summary: String::new(),
            warnings: vec![],
        };
        assert_eq!(
            plan.command_line(Path::new("/usr/bin/qemu-system-x86_64")),
            r#"/usr/bin/qemu-system-x86_64 -append 'console=ttyS0 quiet' 'it'\''s' ''"#
        );
    }

    #[test]
    fn kvm_only_when_it_is_hardware_kvm() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("kvm");
        let sys = tmp.path().join("module");
        std::fs::create_dir_all(&sys).unwrap();
        let a = probe_kvm(&dev, &sys);
        assert!(!a.kvm && a.reason.contains("no "), "{a:?}");
        std::fs::write(&dev, b"").unwrap();
        std::fs::create_dir_all(sys.join("kvm_pvm")).unwrap();
        let a = probe_kvm(&dev, &sys);
        assert!(!a.kvm && a.reason.contains("not hardware KVM"), "{a:?}");
        std::fs::create_dir_all(sys.join("kvm_intel")).unwrap();
        let a = probe_kvm(&dev, &sys);
        assert!(a.kvm && a.reason.contains("kvm_intel"), "{a:?}");
    }

    #[test]
    fn missing_tools_name_their_packages() {
        let err = check_tools(BootMode::Uki, Path::new("/nonexistent/OVMF.fd"));
        if find_program(QEMU).is_some() {
            let err = err.unwrap_err().to_string();
            assert!(err.contains("apt-get install ovmf"), "{err}");
            assert!(check_tools(BootMode::Pxe, Path::new("/nonexistent/OVMF.fd")).is_ok());
        }
        assert_eq!(find_program("/nonexistent/qemu"), None);
        assert!(RunError::QemuMissing {
            program: QEMU.into()
        }
        .to_string()
        .contains("apt-get install qemu-system-x86"));
    }
}
