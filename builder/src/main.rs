//! The `mkhost` command: parses arguments, calls the library, prints errors with
//! their causes and picks the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use mkhost::build::{self, BuildOptions};
use mkhost::inspect::{self, InspectOptions};
use mkhost::profile;
use mkhost::progress::{size, Progress};
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
        /// Print only errors.
        #[arg(short, long)]
        quiet: bool,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mkhost: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
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
            out,
            cache_dir,
            locked,
            lockfile,
            bin_dir,
            firmware_dir,
            quiet,
        } => {
            let options = BuildOptions {
                profile: profile.clone(),
                out_dir: out,
                cache: Cache {
                    root: cache_dir.unwrap_or_else(Cache::default_root),
                },
                lockfile,
                locked,
                bin_dir,
                source_date_epoch: source_date_epoch()?,
                firmware_dir,
            };
            let progress = Progress::new(quiet);
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
                "  kernel {}, {} modules, initramfs {} -> {} (zstd), RAM floor {} of {} MiB",
                m.kernel.release,
                m.modules.boot.len() + m.modules.on_demand.len(),
                size(m.initramfs.uncompressed_bytes),
                size(m.initramfs.compressed_bytes),
                m.ram.required_mib,
                m.ram.min_ram_mib
            ));
            if !m.firmware.missing.is_empty() {
                progress.line(&format!(
                    "  note: {} firmware files named by modules are not on this host (listed in manifest.json)",
                    m.firmware.missing.len()
                ));
            }
            Ok(())
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
    }
}
