//! The `mkhost` command: parses arguments, calls the library, prints errors with
//! their causes and picks the exit code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use mkhost::artifacts::{self, Artifacts, Freshness};
use mkhost::build::{self, BuildOptions};
use mkhost::certs::{self, Role, San};
use mkhost::clip;
use mkhost::inspect::{self, InspectOptions};
use mkhost::ipxe::MachineTable;
use mkhost::profile::{self, UnknownMachines};
use mkhost::progress::{size, Progress};
use mkhost::run::{self, Accel, AccelChoice, BootMode, Forward, RunOptions};
use mkhost::serve::{ServeOptions, Server};
use mkhost::sources::Cache;

#[derive(Parser)]
#[command(
    name = "mkhost",
    version,
    about = "Build bootable, RAM-only container-host images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the image, UKI and PXE set of a profile into OUT/<profile>/.
    Build {
        /// Profile name (profiles/NAME.toml) or path to a .toml file.
        #[arg(short, long, default_value = "rack")]
        profile: String,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Netboot a profile over HTTP: iPXE scripts per MAC address, kernel,
    /// initramfs and UKI (builds first unless --no-build).
    Serve {
        /// Profile name (profiles/NAME.toml) or path to a .toml file.
        #[arg(short, long, default_value = "lab")]
        profile: String,
        /// Address and port to listen on (port 0: any free port).
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// A TOML file of [machines."MAC"] tables (hostname, cmdline); its
        /// entries replace the profile's for the same MAC.
        #[arg(long)]
        machines: Option<PathBuf>,
        /// Serve what is in OUT/<profile>/ as it is (still verified) instead of
        /// building first.
        #[arg(long)]
        no_build: bool,
        /// The URL machines reach this server at [default: from each request's
        /// Host header].
        #[arg(long)]
        public_url: Option<String>,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Boot a profile's artifacts in QEMU, serial console on this terminal
    /// (builds first unless --no-build). Ctrl-A X quits.
    Run {
        /// Profile name (profiles/NAME.toml) or path to a .toml file.
        #[arg(short, long, default_value = "qemu")]
        profile: String,
        /// Boot the GPT image as a USB stick under OVMF (the default).
        #[arg(long, conflicts_with_all = ["pxe", "uki"])]
        usb: bool,
        /// Boot the PXE kernel and initramfs directly.
        #[arg(long, conflicts_with = "uki")]
        pxe: bool,
        /// Boot the UKI alone under OVMF.
        #[arg(long)]
        uki: bool,
        /// Guest memory in MiB [default: the profile's RAM floor; +32 MiB (at
        /// least 160) under OVMF].
        #[arg(long, value_name = "MIB")]
        mem: Option<u64>,
        /// Guest CPUs.
        #[arg(long, default_value_t = 1, value_name = "N")]
        cpus: u32,
        /// Forward TCP 127.0.0.1:HOSTPORT to the guest's GUESTPORT (repeatable).
        #[arg(long = "forward", value_name = "HOSTPORT:GUESTPORT")]
        forwards: Vec<Forward>,
        /// Accelerator: KVM when it can run the guest, else TCG.
        #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
        accel: AccelArg,
        /// UEFI firmware for --usb and --uki.
        #[arg(long, default_value = run::OVMF)]
        ovmf: PathBuf,
        /// Boot what is in OUT/<profile>/ as it is (still verified).
        #[arg(long)]
        no_build: bool,
        /// Print the QEMU command line instead of running it.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Show what is inside an image, UKI, kernel or initramfs.
    Inspect {
        path: PathBuf,
        /// List every initramfs file, module files included.
        #[arg(long)]
        all: bool,
    },
    /// List the profiles found in the profile directories.
    Profiles,
    /// Make the Docker API's mutual-TLS certificates: a CA, server
    /// certificates for hosts, client certificates for the docker CLI.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Secure Boot: make a key set (PK, KEK, db) and the files that enroll
    /// it, and sign EFI applications. Encrypted keys take their password
    /// from MKHOST_KEY_PASSWORD.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// A new key set in DIR: PK, KEK and db as .key (0600), .crt, .cer,
    /// .esl and .auth, and the owner GUID. Refuses to replace keys.
    Create {
        /// Where the keys go. Keep it off every image.
        #[arg(long)]
        dir: PathBuf,
        /// The certificates' organisation; their names add PK, KEK, db.
        #[arg(long, default_value = "mkhost")]
        name: String,
        /// RSA key size: 2048 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Write .cer, .esl and .auth again from the keys in DIR (PK.key,
    /// PK.crt, KEK.key, KEK.crt, db.key, db.crt made elsewhere or
    /// renewed); a missing GUID file gets a new GUID.
    Enroll {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Sign an EFI application (PE32+) with a key and its certificate.
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        certificate: PathBuf,
        /// The unsigned EFI application.
        input: PathBuf,
        /// The signed one.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a new CA: DIR/ca.pem and DIR/ca-key.pem (0600). Refuses to
    /// replace an existing CA.
    Ca {
        /// The CA's directory (made 0700 if new). Keep it off every image.
        #[arg(long)]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = certs::CA_DAYS)]
        days: u32,
    },
    /// Issue a host's server certificate: OUT/ca.pem, cert.pem, key.pem
    /// (0600); with --machines, one OUT/<hostname>/ per listed machine.
    Server {
        /// The CA's directory (from `mkhost certs ca`).
        #[arg(long)]
        ca: PathBuf,
        /// Where the files go (a profile's [docker] tls_dir, or host.toml's).
        #[arg(long)]
        out: PathBuf,
        /// The certificate's name [default: the first --san].
        #[arg(long, conflicts_with = "machines")]
        name: Option<String>,
        /// A DNS name or IP address clients reach the host by (repeatable);
        /// with --machines, added to every machine's.
        #[arg(long = "san", value_name = "NAME|IP")]
        sans: Vec<String>,
        /// A machines file (as for `mkhost serve --machines`): one
        /// certificate per machine, named by its hostname, with its static
        /// addresses from `mkhost.ip=IFACE:ADDR/PREFIX` in its cmdline.
        #[arg(long)]
        machines: Option<PathBuf>,
        /// With --machines: also HOSTNAME.DOMAIN as a name (repeatable).
        #[arg(long = "domain", requires = "machines")]
        domains: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = certs::CERT_DAYS)]
        days: u32,
    },
    /// Issue a client certificate for the docker CLI: OUT/ca.pem, cert.pem,
    /// key.pem (0600), for DOCKER_CERT_PATH=OUT docker --tlsverify.
    Client {
        /// The CA's directory (from `mkhost certs ca`).
        #[arg(long)]
        ca: PathBuf,
        /// Where the files go (e.g. ~/.docker/mkhost-lab).
        #[arg(long)]
        out: PathBuf,
        /// The certificate's name (who holds it).
        #[arg(long, default_value = "docker-client")]
        name: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = certs::CERT_DAYS)]
        days: u32,
    },
}

/// How a build is made (shared by build, serve and run).
#[derive(Args)]
struct BuildArgs {
    /// Output directory.
    #[arg(short, long, default_value = "out")]
    out: PathBuf,
    /// Download and unpack cache [default: $MKHOST_CACHE or ~/.cache/mkhost].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Refuse to build when inputs differ from the lock file.
    #[arg(long)]
    locked: bool,
    /// Lock file recording each profile's exact inputs.
    #[arg(long, default_value = "mkhost.lock")]
    lockfile: PathBuf,
    /// Directory holding prebuilt static `init` and `hostd` binaries.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where firmware named by modules is looked up.
    #[arg(long, default_value = "/lib/firmware")]
    firmware_dir: PathBuf,
    /// Print only errors while building.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Values from outside are cut where they are quoted; this is the
            // net under messages that reach here whole.
            eprintln!("mkhost: error: {}", clip::clip_message(&err.to_string()));
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {}", clip::clip_message(&cause.to_string()));
            }
            ExitCode::FAILURE
        }
    }
}

fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds since 1970")
        }),
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(err) => bail!("SOURCE_DATE_EPOCH is not valid: {err}"),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build {
            profile,
            build: args,
        } => {
            let options = build_options(&profile, &args)?;
            let progress = Progress::new(args.quiet);
            let report = build::build(&options, &progress)
                .with_context(|| format!("building profile {profile:?}"))?;
            progress.line(&format!(
                "\nmkhost: built profile {} in {:.2} s -> {}",
                report.profile,
                report.elapsed.as_secs_f64(),
                report.out_dir.display()
            ));
            for (name, len) in &report.artifacts {
                progress.line(&format!("  {name:<24} {:>10}", size(*len)));
            }
            let m = &report.manifest;
            progress.line(&format!(
                "  kernel {}, {} modules, initramfs {} -> {} (zstd), RAM floor {} of {} MiB{}",
                m.kernel.release,
                m.modules.boot.len() + m.modules.on_demand.len(),
                size(m.initramfs.uncompressed_bytes),
                size(m.initramfs.compressed_bytes),
                m.ram.required_mib,
                m.ram.min_ram_mib,
                if m.ram.boot_images_mib > 0 {
                    format!(" (boot-time images {} MiB)", m.ram.boot_images_mib)
                } else {
                    String::new()
                }
            ));
            for c in &m.containers {
                let what = match &c.image_id {
                    Some(id) => id.get(..19).unwrap_or(id).to_owned(),
                    None => "pulled by hostd at boot".to_owned(),
                };
                progress.line(&format!(
                    "  boot-time container {}: {} ({what}), restart {}",
                    c.name, c.image, c.restart
                ));
            }
            if !m.firmware.missing.is_empty() {
                progress.line(&format!(
                    "  note: {} firmware files named by modules are not on this host (listed in manifest.json)",
                    m.firmware.missing.len()
                ));
            }
            Ok(())
        }
        Command::Serve {
            profile,
            listen,
            machines,
            no_build,
            public_url,
            build,
        } => serve(
            &profile,
            listen,
            machines.as_deref(),
            no_build,
            public_url,
            &build,
        ),
        Command::Run {
            profile,
            usb: _,
            pxe,
            uki,
            mem,
            cpus,
            forwards,
            accel,
            ovmf,
            no_build,
            dry_run,
            build,
        } => {
            let mode = if pxe {
                BootMode::Pxe
            } else if uki {
                BootMode::Uki
            } else {
                BootMode::Usb
            };
            let accel = match accel {
                AccelArg::Auto => AccelChoice::Auto,
                AccelArg::Kvm => AccelChoice::Kvm,
                AccelArg::Tcg => AccelChoice::Tcg,
            };
            let options = RunOptions {
                mode,
                mem_mib: mem,
                cpus,
                forwards,
                ovmf,
            };
            run_qemu(&profile, options, accel, no_build, dry_run, &build)
        }
        Command::Inspect { path, all } => {
            let text = inspect::inspect(&path, InspectOptions { all_files: all })?;
            print!("{text}");
            Ok(())
        }
        Command::Profiles => {
            let dirs = profile::search_dirs();
            for name in profile::available_profiles(&dirs) {
                match profile::load(&name) {
                    Ok(p) => println!("{name:<12} {}", p.description),
                    Err(err) => println!("{name:<12} (invalid: {err})"),
                }
            }
            Ok(())
        }
        Command::Certs { command } => run_certs(command),
        Command::Keys { command } => run_keys(command),
    }
}

fn run_keys(command: KeysCommand) -> anyhow::Result<()> {
    use mkhost_signing::keys;
    const WHO: &str = "mkhost keys";
    let listed = |files: &[PathBuf]| {
        for file in files {
            eprintln!("{WHO}: wrote {}", file.display());
        }
    };
    match command {
        KeysCommand::Create {
            dir,
            name,
            bits,
            days,
        } => {
            let options = keys::KeySetOptions {
                name,
                bits,
                days,
                now: mkhost::secure_boot::now(),
            };
            listed(&keys::create(&dir, &options)?);
            eprintln!(
                "{WHO}: enroll db.auth, KEK.auth, then PK.auth (or the .cer files in the firmware's \
                 setup screen); name {} and {} in the profile's [secure_boot] as key and \
                 certificate, and {} as pcr_key for a signed PCR policy",
                keys::key_path(&dir, mkhost_signing::efivars::Variable::Db).display(),
                keys::certificate_path(&dir, mkhost_signing::efivars::Variable::Db).display(),
                keys::pcr_key_path(&dir).display()
            );
        }
        KeysCommand::Enroll { dir } => {
            listed(&keys::enroll_files(
                &dir,
                mkhost::secure_boot::key_password().as_deref(),
                mkhost::secure_boot::now(),
            )?);
        }
        KeysCommand::Sign {
            key,
            certificate,
            input,
            output,
        } => {
            let signer = mkhost_signing::Signer::from_files(
                &key,
                &certificate,
                mkhost::secure_boot::key_password().as_deref(),
                mkhost::secure_boot::now(),
            )?;
            let pe =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let signed = mkhost_signing::sign_pe(&pe, &signer)
                .with_context(|| format!("signing {}", input.display()))?;
            mkhost_shared::fs::write_atomic(&output, &signed, 0o644)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "{WHO}: {} signed by {} -> {}",
                input.display(),
                signer.subject(),
                output.display()
            );
        }
    }
    Ok(())
}

fn run_certs(command: CertsCommand) -> anyhow::Result<()> {
    const WHO: &str = "mkhost certs";
    let parse_sans = |sans: &[String]| -> anyhow::Result<Vec<San>> {
        sans.iter()
            .map(|s| s.parse::<San>().context("--san"))
            .collect()
    };
    let said = |written: &certs::Written| {
        let sans: Vec<String> = written.sans.iter().map(San::to_string).collect();
        eprintln!(
            "{WHO}: {} ({} days{}) -> {}",
            written.name,
            written.days,
            if sans.is_empty() {
                String::new()
            } else {
                format!("; {}", sans.join(", "))
            },
            written.dir.display()
        );
    };
    match command {
        CertsCommand::Ca { dir, days } => {
            let written = certs::create_ca(&dir, days)?;
            said(&written);
            eprintln!(
                "{WHO}: {} is the CA's private key: keep it here, off every image and stick",
                dir.join(certs::CA_KEY).display()
            );
        }
        CertsCommand::Server {
            ca,
            out,
            name,
            sans,
            machines,
            domains,
            days,
        } => {
            let sans = parse_sans(&sans)?;
            let ca = certs::load_ca(&ca)?;
            match machines {
                None => {
                    let name = match (name, sans.first()) {
                        (Some(name), _) => name,
                        (None, Some(San::Dns(dns))) => dns.clone(),
                        (None, Some(San::Ip(ip))) => ip.to_string(),
                        (None, None) => bail!(certs::CertsError::NoSans),
                    };
                    said(&certs::issue(&ca, Role::Server, &out, &name, &sans, days)?);
                }
                Some(file) => {
                    let machines = profile::load_machines_file(&file)?;
                    if machines.is_empty() {
                        bail!("{} lists no [machines.\"MAC\"] tables", file.display());
                    }
                    // Every machine's names first: one without a hostname
                    // stops the run before any file is written.
                    let mut plans = Vec::new();
                    let mut seen = std::collections::BTreeMap::new();
                    for machine in &machines {
                        let names = certs::MachineNames {
                            mac: machine.mac.clone(),
                            hostname: machine.hostname.clone(),
                            cmdline: machine.cmdline.clone(),
                            origin: machine.origin.to_string(),
                        };
                        let plan = certs::server_names(&names, &domains, &sans)?;
                        if let Some(first) = seen.insert(plan.0.clone(), &machine.origin) {
                            bail!(
                                "{}: hostname {} is also that of the machine at {first}: each machine's certificate goes into OUT/<hostname>/",
                                machine.origin,
                                plan.0
                            );
                        }
                        plans.push(plan);
                    }
                    for (hostname, names) in &plans {
                        let dir = out.join(hostname);
                        said(&certs::issue(
                            &ca,
                            Role::Server,
                            &dir,
                            hostname,
                            names,
                            days,
                        )?);
                    }
                    eprintln!(
                        "{WHO}: {} server certificates; each machine's host.toml takes [docker] tls_dir from its directory",
                        plans.len()
                    );
                }
            }
        }
        CertsCommand::Client {
            ca,
            out,
            name,
            days,
        } => {
            let ca = certs::load_ca(&ca)?;
            let written = certs::issue(&ca, Role::Client, &out, &name, &[], days)?;
            said(&written);
            eprintln!(
                "{WHO}: use it with: DOCKER_CERT_PATH={} DOCKER_TLS_VERIFY=1 docker -H tcp://HOST:{}",
                out.display(),
                mkhost_shared::paths::DOCKER_TLS_PORT
            );
        }
    }
    Ok(())
}

fn build_options(profile: &str, args: &BuildArgs) -> anyhow::Result<BuildOptions> {
    Ok(BuildOptions {
        profile: profile.to_string(),
        out_dir: args.out.clone(),
        cache: Cache {
            root: args.cache_dir.clone().unwrap_or_else(Cache::default_root),
        },
        lockfile: args.lockfile.clone(),
        locked: args.locked,
        bin_dir: args.bin_dir.clone(),
        source_date_epoch: source_date_epoch()?,
        firmware_dir: args.firmware_dir.clone(),
    })
}

/// Builds (unless `no_build`), says what that did, and opens the verified output.
fn prepare(
    who: &str,
    profile_name: &str,
    profile: &profile::Profile,
    no_build: bool,
    args: &BuildArgs,
) -> anyhow::Result<Artifacts> {
    let dir = args.out.join(&profile.name);
    if no_build {
        eprintln!("{who}: --no-build: using {} as it is", dir.display());
    } else {
        let options = build_options(profile_name, args)?;
        let progress = Progress::new(args.quiet);
        let (report, freshness) = artifacts::ensure_built(&options, &progress)
            .with_context(|| format!("building profile {:?}", profile.name))?;
        let took = report.elapsed.as_secs_f64();
        match freshness {
            Freshness::Built => eprintln!(
                "{who}: built {} in {took:.1} s (there was no complete build)",
                dir.display()
            ),
            Freshness::Unchanged => eprintln!(
                "{who}: {} is up to date (rebuilt in {took:.1} s, identical)",
                dir.display()
            ),
            Freshness::Rebuilt { changed } => eprintln!(
                "{who}: {} was stale; rebuilt in {took:.1} s, changed: {}",
                dir.display(),
                changed.join(", ")
            ),
        }
    }
    let artifacts = Artifacts::open(&dir)?;
    if artifacts.profile != profile.name {
        bail!(
            "{} holds a build of profile {:?}, not {:?}",
            dir.display(),
            artifacts.profile,
            profile.name
        );
    }
    eprintln!(
        "{who}: {} verified: {} files match SHA256SUMS",
        dir.display(),
        artifacts.files().count()
    );
    Ok(artifacts)
}

fn serve(
    profile_name: &str,
    listen: SocketAddr,
    machines: Option<&Path>,
    no_build: bool,
    public_url: Option<String>,
    args: &BuildArgs,
) -> anyhow::Result<()> {
    const WHO: &str = "mkhost serve";
    // Profile and machine tables first: a bad MAC fails before any build.
    let profile = profile::load(profile_name)?;
    let extra = match machines {
        Some(path) => profile::load_machines_file(path)?,
        None => Vec::new(),
    };
    for machine in &extra {
        profile::check_machine_cmdline(&profile, machine)?;
    }
    let (table, overrides) = MachineTable::new(&profile.machines, &extra, profile.unknown_machines);
    for o in &overrides {
        eprintln!(
            "{WHO}: note: {} from {} replaces its entry at {}",
            o.mac, o.by, o.replaced
        );
    }
    let artifacts = prepare(WHO, profile_name, &profile, no_build, args)?;
    let unknown = match table.unknown {
        UnknownMachines::Default => format!(
            "other machines boot with the defaults (hostname {})",
            artifacts.hostname
        ),
        UnknownMachines::Refuse => "other machines are refused (403)".to_string(),
    };
    eprintln!("{WHO}: machine table: {} listed; {unknown}", table.len());
    let uki = artifacts.uki_name();
    let options = ServeOptions {
        public_url,
        ..ServeOptions::new(listen)
    };
    let server = Server::bind(&options, artifacts, table, Box::new(std::io::stderr()))?;
    let local = server.local_addr();
    let handle = server.shutdown_handle();
    ctrlc::set_handler(move || handle.shutdown())
        .context("cannot install the Ctrl-C/SIGTERM handler")?;
    let base = match &options.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if local.ip().is_unspecified() => {
            format!("http://<this host>:{}", local.port())
        }
        None => format!("http://{local}"),
    };
    eprintln!("{WHO}: listening on http://{local}");
    eprintln!("{WHO}:   iPXE (DHCP boot file): {base}/boot.ipxe");
    eprintln!("{WHO}:   UEFI HTTP boot:        {base}/{uki}");
    eprintln!("{WHO}: Ctrl-C stops");
    let summary = server.run();
    eprintln!(
        "{WHO}: stopped after {} requests, {} sent",
        summary.requests,
        size(summary.bytes)
    );
    Ok(())
}

fn run_qemu(
    profile_name: &str,
    options: RunOptions,
    accel: AccelChoice,
    no_build: bool,
    dry_run: bool,
    args: &BuildArgs,
) -> anyhow::Result<()> {
    const WHO: &str = "mkhost run";
    let profile = profile::load(profile_name)?;
    let artifacts = prepare(WHO, profile_name, &profile, no_build, args)?;
    let qemu = run::check_tools(options.mode, &options.ovmf)?;
    let accel = Accel::decide(accel);
    let esp = match options.mode {
        BootMode::Uki => Some(run::prepare_esp_dir(&artifacts, &args.out)?),
        _ => None,
    };
    let plan = run::plan(&artifacts, &options, &accel, esp.as_deref())?;
    eprintln!("{WHO}: {}", plan.summary);
    for warning in &plan.warnings {
        eprintln!("{WHO}: warning: {warning}");
    }
    for forward in &options.forwards {
        eprintln!(
            "{WHO}: 127.0.0.1:{} on this host reaches port {} in the guest",
            forward.host, forward.guest
        );
    }
    let command = plan.command_line(&qemu);
    if dry_run {
        println!("{command}");
        return Ok(());
    }
    eprintln!("{WHO}: {command}");
    eprintln!("{WHO}: serial console follows; Ctrl-A X quits, Ctrl-A C switches to QEMU's monitor");
    Err(run::exec(&qemu, &plan).into())
}
