//! mkhost's PID 1: the boot steps, the supervision loop and the shutdown
//! behind the `init` binary.
//!
//! Boot, in order (each step logged on the timeline, each failure survived):
//!
//! 1. move the initramfs into a fresh tmpfs and re-exec from it ([`crate::init::rootfs`])
//! 2. mount the API file systems and cgroup2, enable every cgroup controller
//!    ([`crate::init::mounts`])
//! 3. reopen the console; start the log pump (console + `/run/log/hostd.log`,
//!    [`crate::init::logbuf`])
//! 4. read `mkhost.*` from the kernel command line ([`crate::init::config::cmdline`]) and
//!    `/etc/mkhost/boot.json` ([`mkhost_shared::boot_config`])
//! 5. subscribe to kernel uevents; load the boot modules, dependencies first,
//!    in parallel where possible; mount efivarfs; coldplug drivers for the
//!    devices present; start the hotplug thread for the devices that come
//!    later ([`crate::init::drivers::modules`], [`crate::init::drivers::coldplug`],
//!    [`crate::init::drivers::hotplug`]); write sysctls ([`crate::init::sysctl`]);
//!    watch the power button ([`crate::init::power`])
//! 6. read `mkhost/host.toml` from the boot ESP ([`crate::init::config::bootdisk`]) and
//!    resolve the settings (command line > host.toml > boot.json,
//!    [`crate::init::config::host_config`]); set the hostname. When the boot
//!    partition is not there yet (a USB stick), the main loop waits for it by
//!    event, and hostd waits with it; then find, check and mount the state
//!    disk the settings name ([`crate::init::state_disk`]), or say that state
//!    stays in RAM
//! 7. bring up the network: static addresses, DHCP threads, resolv.conf
//!    ([`crate::init::net`]); NICs that appear later are configured by hotplug
//! 8. start hostd and keep it running ([`crate::init::supervisor`]); once it answers,
//!    the settings are applied and the network has settled, print the ready
//!    line once; start the debug shell when enabled ([`crate::init::shell`])
//! 9. on SIGTERM, SIGINT (Ctrl-Alt-Del), SIGPWR (power button), SIGUSR1/2:
//!    stop hostd, kill the rest, sync, unmount, power off (or reboot)
//!
//! PID 1 must never exit (the kernel panics), so [`run`] returns `!` and nothing
//! after argument parsing is fatal. For testing, `--test-root DIR` runs the
//! steps that only touch DIR (mounts below it, config, modules, hostd, log)
//! without the console, the root switch, drivers, network or power, and may run
//! as an ordinary process; `--skip` leaves out more. In test mode SIGTERM stops
//! hostd and exits.

pub mod config;
pub mod drivers;
pub mod logbuf;
pub mod measured_boot;
pub mod mounts;
pub mod net;
pub mod power;
pub mod rootfs;
pub mod shell;
pub mod state_disk;
pub mod supervisor;
pub mod sysctl;
pub mod timeline;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::init::config::bootdisk::{EspStep, EspWait};
use crate::init::config::host_config::{self, Settings, Source};
use crate::init::config::{bootdisk, cmdline};
use crate::init::drivers::coldplug;
use crate::init::drivers::hotplug::{self, Hotplug};
use crate::init::drivers::modules::{self, LoadPlan, ModuleDb, ModuleLoad, PlannedModule};
use crate::init::logbuf::{LogPump, RingLog, LOG_CAP};
use crate::init::supervisor::{Event, Runtime, Service, ServiceSpec};
use crate::os::{self, Reaped, SignalSet};
use mkhost_shared::boot_config::{BootConfig, BootConfigError};
use mkhost_shared::control;
use mkhost_shared::paths;
use mounts::at;
use net::Network;
use shell::DebugShell;
use timeline::ReadyInfo;

/// How long shutdown waits for hostd after SIGTERM.
pub const HOSTD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the other processes after SIGTERM.
pub const OTHERS_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// The debug shell starts at the ready line, or this long after init started
/// if the host is not ready by then.
pub const SHELL_LATEST: Duration = Duration::from_secs(30);

/// Usage text of the `init` binary.
pub const USAGE: &str = "\
usage: init                     (as PID 1, started by the kernel)
       init --test-root DIR [--skip STEP,...]
       init --version | --help

--test-root DIR  run the boot steps against DIR instead of / (console untouched);
                 allowed when not PID 1. Mounts go below DIR: use a mount namespace.
--skip STEPS     comma-separated steps to leave out: mounts, console, hostname, modules";

/// The argument the first stage passes to the re-executed init.
pub const SWITCHED_ARG: &str = "--mkhost-switched-root";

/// Errors of the boot steps. None of them stops `init`; they are logged.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Bad command line.
    #[error("{0}\n{USAGE}")]
    Usage(String),
    /// Started by hand instead of by the kernel.
    #[error(
        "refusing to run as pid {pid}: init is mkhost's PID 1 and must be started by the \
         kernel (use --test-root DIR to try it)"
    )]
    NotPid1 {
        /// Our pid.
        pid: u32,
    },
    /// The console could not be opened or duplicated.
    #[error("cannot reopen console {path}: {source}", path = path.display())]
    Console {
        /// The console device.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The boot config is missing or invalid.
    #[error(transparent)]
    Config(#[from] BootConfigError),
    /// sethostname failed.
    #[error("cannot set hostname {name}: {source}")]
    Hostname {
        /// The hostname.
        name: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Steps `--skip` can leave out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skip {
    /// Do not mount the API file systems.
    pub mounts: bool,
    /// Do not reopen /dev/console onto 0, 1, 2.
    pub console: bool,
    /// Do not set the hostname.
    pub hostname: bool,
    /// Do not load kernel modules.
    pub modules: bool,
}

/// What the first stage did before re-executing init from the new root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switched {
    /// Boot time (ms) when the first stage started.
    pub started_ms: u64,
    /// Boot time (ms) when the root was switched.
    pub switched_ms: u64,
    /// Entries moved.
    pub entries: u64,
    /// Bytes moved.
    pub bytes: u64,
}

impl Switched {
    /// `STARTED:SWITCHED:ENTRIES:BYTES`.
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.started_ms, self.switched_ms, self.entries, self.bytes
        )
    }

    /// The inverse of [`Switched::encode`].
    pub fn decode(text: &str) -> Option<Self> {
        let mut it = text.split(':').map(|p| p.parse::<u64>().ok());
        Some(Self {
            started_ms: it.next()??,
            switched_ms: it.next()??,
            entries: it.next()??,
            bytes: it.next()??,
        })
    }
}

/// How `init` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Root of the tree to boot: `/`, or the `--test-root` directory.
    pub root: PathBuf,
    /// Test mode (`--test-root`): runs when not PID 1, passes `--socket` to hostd.
    pub test: bool,
    /// Steps to leave out.
    pub skip: Skip,
    /// Set in the second stage, after the root switch.
    pub switched: Option<Switched>,
    /// Command-line words ignored as PID 1 (leftovers of the kernel command line).
    pub ignored_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            test: false,
            skip: Skip::default(),
            switched: None,
            ignored_args: Vec::new(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Boot.
    Boot(Options),
    /// Print the version.
    Version,
    /// Print the usage.
    Help,
}

/// Parses `init`'s arguments (without argv\[0\]).
///
/// As PID 1 the kernel hands us every word of its command line it did not
/// understand, so unknown words land in [`Options::ignored_args`] (for a
/// warning) instead of being errors. Otherwise unknown words are errors and
/// `--test-root` is required.
pub fn parse_args(args: &[String], is_pid1: bool) -> Result<Invocation, InitError> {
    use lexopt::prelude::*;
    let usage = |e: lexopt::Error| InitError::Usage(e.to_string());
    let mut options = Options::default();
    let mut p = lexopt::Parser::from_args(args);
    // No short option takes a value: `-a=b` stays one word (ignored as PID 1).
    p.set_short_equals(false);
    while let Some(arg) = p.next().map_err(usage)? {
        match arg {
            Short('V') | Long("version") if !is_pid1 => return Ok(Invocation::Version),
            Short('h') | Long("help") if !is_pid1 => return Ok(Invocation::Help),
            Long(name) if is_pid1 && SWITCHED_ARG.strip_prefix("--") == Some(name) => {
                let value = p.optional_value();
                options.switched = value.as_deref().and_then(|v| Switched::decode(v.to_str()?));
            }
            Long("test-root") => {
                let dir = PathBuf::from(p.value().map_err(usage)?);
                options.root = if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir()
                        .map_err(|e| {
                            InitError::Usage(format!("cannot resolve {}: {e}", dir.display()))
                        })?
                        .join(dir)
                };
                options.test = true;
                options.skip.console = true;
            }
            Long("skip") => {
                let steps = p.value().and_then(|v| v.string()).map_err(usage)?;
                for step in steps.split(',').filter(|s| !s.is_empty()) {
                    match step {
                        "mounts" => options.skip.mounts = true,
                        "console" => options.skip.console = true,
                        "hostname" => options.skip.hostname = true,
                        "modules" => options.skip.modules = true,
                        other => {
                            return Err(InitError::Usage(format!("unknown step to skip: {other}")))
                        }
                    }
                }
            }
            // As PID 1, words of the kernel command line, kept whole.
            Value(word) if is_pid1 => options.ignored_args.push(word.to_string_lossy().into()),
            Short(c) if is_pid1 => {
                let mut word = format!("-{c}");
                if let Some(rest) = p.optional_value() {
                    word.push_str(&rest.to_string_lossy());
                }
                options.ignored_args.push(word);
            }
            Long(name) if is_pid1 => {
                let mut word = format!("--{name}");
                if let Some(value) = p.optional_value() {
                    word.push('=');
                    word.push_str(&value.to_string_lossy());
                }
                options.ignored_args.push(word);
            }
            _ => return Err(usage(arg.unexpected())),
        }
    }
    if !is_pid1 && !options.test {
        return Err(InitError::NotPid1 {
            pid: std::process::id(),
        });
    }
    if options.skip != Skip::default() && !options.test {
        return Err(InitError::Usage("--skip needs --test-root".to_string()));
    }
    Ok(Invocation::Boot(options))
}

/// Opens `/dev/console` (below `root`) and makes it fds 0, 1 and 2.
pub fn reopen_console(root: &Path) -> Result<(), InitError> {
    let path = at(root, "/dev/console");
    let err = |source| InitError::Console {
        path: path.clone(),
        source,
    };
    let console = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(err)?;
    for fd in 0..=2 {
        os::dup2(console.as_fd(), fd).map_err(err)?;
    }
    // If fds 0-2 were closed, the console itself landed on one of them: keep it.
    if std::os::fd::AsRawFd::as_raw_fd(&console) <= 2 {
        let _ = std::os::fd::IntoRawFd::into_raw_fd(console);
    }
    Ok(())
}

/// Reads the boot config below `root`.
pub fn load_config(root: &Path) -> Result<BootConfig, InitError> {
    Ok(BootConfig::load(&at(root, paths::BOOT_CONFIG))?)
}

/// Sets the hostname.
pub fn set_hostname(name: &str) -> Result<(), InitError> {
    os::sethostname(name).map_err(|source| InitError::Hostname {
        name: name.to_string(),
        source,
    })
}

/// `/etc/hosts` for a host called `hostname`.
pub fn render_hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
}

/// What loading the boot modules did.
#[derive(Debug, Default)]
pub struct ModuleReport {
    /// Modules listed.
    pub total: usize,
    /// Loaded now.
    pub loaded: usize,
    /// Already loaded before.
    pub already: usize,
    /// Modules whose hardware or CPU feature is absent (`ENODEV`).
    pub no_device: Vec<String>,
    /// The failures.
    pub failed: Vec<modules::ModuleError>,
}

impl ModuleReport {
    /// Modules present after the step (loaded now or before).
    pub fn present(&self) -> usize {
        self.loaded + self.already
    }
}

/// The boot modules as a plan: boot.json's order, with dependency edges from
/// modules.dep/softdep (`db`) between modules of the list.
pub fn boot_plan(config: &BootConfig, db: Option<&ModuleDb>) -> LoadPlan {
    let names: Vec<String> = config
        .modules
        .iter()
        .map(|m| modules::module_name(m))
        .collect();
    let (deps_plan, _) = match db {
        Some(db) => db.plan(&names, &HashSet::new()),
        None => (LoadPlan::default(), Vec::new()),
    };
    let mut plan = LoadPlan::default();
    for (i, rel) in config.modules.iter().enumerate() {
        let name = &names[i];
        // The dependencies of `name` per the index, mapped to boot-list positions.
        let wanted: HashSet<&str> = deps_plan
            .modules
            .iter()
            .position(|m| &m.name == name)
            .map(|p| {
                deps_plan.modules[p]
                    .after
                    .iter()
                    .map(|&d| deps_plan.modules[d].name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let after = if db.is_some() {
            (0..i)
                .filter(|&j| wanted.contains(names[j].as_str()))
                .collect()
        } else {
            // No index: keep the list's order strictly.
            i.checked_sub(1).into_iter().collect()
        };
        plan.modules.push(PlannedModule {
            name: name.clone(),
            rel_path: rel.clone(),
            after,
        });
    }
    plan
}

/// Loads the config's modules (see [`boot_plan`]); failures are recorded and
/// the rest goes on (dependants of a failed module fail on their own).
pub fn load_modules(
    root: &Path,
    config: &BootConfig,
    db: Option<&ModuleDb>,
    workers: usize,
) -> ModuleReport {
    let mut report = ModuleReport {
        total: config.modules.len(),
        ..ModuleReport::default()
    };
    let plan = boot_plan(config, db);
    let outcomes = modules::run_plan(&plan, workers, |m| {
        modules::load_module(&config.module_path(root, &m.rel_path))
    });
    for o in outcomes {
        match o.result {
            Ok(ModuleLoad::Loaded) => report.loaded += 1,
            Ok(ModuleLoad::AlreadyLoaded) => report.already += 1,
            Ok(ModuleLoad::NoDevice) => report.no_device.push(o.name),
            Err(e) => report.failed.push(e),
        }
    }
    report
}

/// The value of `key=value` on the kernel command line (the last one wins).
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// The running kernel's release, from /proc (below `root`).
fn running_kernel(root: &Path) -> Option<String> {
    fs::read_to_string(at(root, "/proc/sys/kernel/osrelease"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The real [`Runtime`]: processes, the control socket and the console.
struct ConsoleRuntime {
    /// Where children's stdout/stderr go (the log pipe), if any.
    log: Option<fs::File>,
    /// Set when hostd answered for the first time.
    answered: bool,
}

impl Runtime for ConsoleRuntime {
    fn spawn(&mut self, spec: &ServiceSpec) -> io::Result<i32> {
        let mut command = Command::new(&spec.program);
        command.args(&spec.args).stdin(Stdio::null());
        if let Some(log) = &self.log {
            command
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log.try_clone()?));
        }
        if std::env::var_os("PATH").is_none() {
            command.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        }
        os::unblock_signals_on_exec(&mut command);
        let child = command.spawn()?;
        // The child is reaped by `reap_children` (waitpid(-1)), not through `Child`.
        i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))
    }

    fn probe(&mut self, spec: &ServiceSpec) -> bool {
        matches!(
            control::status(&spec.socket, Duration::from_secs(1)),
            Ok(Ok(_))
        )
    }

    fn kill(&mut self, pid: i32) {
        if let Err(e) = os::kill(pid, libc::SIGKILL) {
            timeline::error(&format!("cannot kill pid {pid}: {e}"));
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Started { name, pid } => timeline::phase(&format!("{name} started pid={pid}")),
            Event::SpawnFailed {
                name: _,
                program,
                error,
                retry_in,
            } => timeline::error(&format!(
                "cannot start {}: {error}; retrying in {} ms",
                program.display(),
                retry_in.as_millis()
            )),
            Event::Ready { name, pid, first } => {
                timeline::phase(&format!("{name} answering pid={pid}"));
                if first {
                    self.answered = true;
                }
            }
            Event::ReadyTimeout { name, pid, waited } => timeline::error(&format!(
                "{name} pid={pid} did not answer within {} ms; killing it",
                waited.as_millis()
            )),
            Event::Exited {
                name,
                pid: _,
                status,
                restart_in,
            } => timeline::emit(&format!(
                "{} {name} exited ({status}), restarting in {} ms",
                timeline::PREFIX,
                restart_in.as_millis()
            )),
        }
    }
}

/// Everything the boot hands to the supervision loop.
struct Booted {
    spec: ServiceSpec,
    ready: ReadyInfo,
    network: Network,
    shell: Option<DebugShell>,
    reboot: bool,
    pump: Option<LogPump>,
    /// The hotplug thread, if the uevent socket could be opened.
    hotplug: Option<Hotplug>,
    /// Settings still waiting for the boot partition (hostd waits too:
    /// the state disk they may name is mounted before it starts).
    unsettled: Option<Unsettled>,
    /// The ESP host.toml was read from (its disk is never a state disk).
    host_toml_device: Option<PathBuf>,
    /// When init started (the debug shell's latest start counts from it).
    t0: Instant,
}

/// The host settings, held back until the boot partition appears.
struct Unsettled {
    config: Option<BootConfig>,
    params: cmdline::KernelParams,
    partuuid: String,
    wait: EspWait,
}

fn exit_status(raw: i32) -> std::process::ExitStatus {
    <std::process::ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(raw)
}

fn elapsed_ms(since: Instant) -> u128 {
    since.elapsed().as_millis()
}

/// Stage 1: move the initramfs into a tmpfs and exec /init from it. Returns
/// only if that failed (then the boot goes on from rootfs).
fn switch_root_and_reexec(args: &[String]) {
    let started_ms = os::boottime_ms();
    match rootfs::switch_to_tmpfs() {
        Ok(stats) => {
            let switched = Switched {
                started_ms,
                switched_ms: os::boottime_ms(),
                entries: stats.entries,
                bytes: stats.bytes,
            };
            let err = Command::new("/init")
                .arg(format!("{SWITCHED_ARG}={}", switched.encode()))
                .args(args)
                .exec();
            timeline::error(&format!("cannot re-execute /init from the new root: {err}"));
        }
        Err(e) => timeline::error(&format!(
            "{e}; staying in the initramfs (container runtimes cannot pivot_root)"
        )),
    }
}

/// Runs the boot steps and returns what the supervision loop needs.
fn boot(options: &Options, t0: Instant) -> Booted {
    let root = options.root.as_path();
    let real = !options.test;

    // Mounts. Their lines wait until the log runs (it needs /run), stamped
    // with the time they happened.
    let early = if options.skip.mounts {
        Vec::new()
    } else {
        mount_api_filesystems(root, real)
    };
    if !options.skip.console {
        if let Err(e) = reopen_console(root) {
            timeline::error(&e.to_string());
        }
    }

    // The log pump: from here on, everything printed goes to the console and
    // to /run/log/hostd.log.
    let pump = start_log(root);
    log_start(options, early);

    let params = read_cmdline(root, real);
    let running = running_kernel(root);
    let config = read_boot_config(root, running.as_deref());
    let mut ready = ReadyInfo {
        hostname: String::new(),
        profile: "unknown".to_string(),
        kernel: running.clone().unwrap_or_default(),
        boot_ms: 0,
        modules_loaded: 0,
        modules_total: 0,
        coldplug: 0,
        addresses: Vec::new(),
        state: String::new(),
    };
    let hotplug = load_drivers(options, config.as_ref(), running, &mut ready);
    if real {
        if let Some(config) = &config {
            apply_sysctls(root, config);
        }
        watch_power_button(root);
    }

    let mut booted = Booted {
        spec: hostd_spec(options, config.as_ref()),
        ready,
        network: Network::none(),
        shell: None,
        reboot: params.reboot,
        pump,
        hotplug,
        unsettled: None,
        host_toml_device: None,
        t0,
    };

    // Host settings: host.toml from the boot partition if it is there (or
    // there is none to wait for); otherwise the main loop waits for it.
    let mut host_toml = None;
    if real {
        match bootdisk::loader_partuuid(root) {
            Some(partuuid) => match bootdisk::boot_partition(root, &partuuid) {
                Some(p) => {
                    let t = Instant::now();
                    host_toml = host_toml_layer(bootdisk::read_boot_partition(root, p), t);
                }
                None => {
                    timeline::phase(&format!(
                        "waiting for the boot partition {partuuid} to appear (the boot stick's ESP); hostd starts once its settings are read"
                    ));
                    booted.unsettled = Some(Unsettled {
                        config,
                        params,
                        partuuid,
                        wait: EspWait::new(Instant::now()),
                    });
                    return booted;
                }
            },
            None => {
                let t = Instant::now();
                let found = bootdisk::find_host_toml_by_type(root);
                booted.host_toml_device = found.as_ref().map(|h| h.device.clone());
                host_toml = host_toml_layer(Ok(found), t);
            }
        }
    }
    apply_settings(
        options,
        &mut booted,
        config.as_ref(),
        &params,
        host_toml.as_ref(),
    );
    booted
}

/// Boot, host settings: resolves them (command line > host.toml >
/// boot.json), sets the hostname, starts the network (and hands it the NICs
/// hotplug saw) and schedules the debug shell.
fn apply_settings(
    options: &Options,
    booted: &mut Booted,
    config: Option<&BootConfig>,
    params: &cmdline::KernelParams,
    host_toml: Option<&host_config::Overrides>,
) {
    let root = options.root.as_path();
    let real = !options.test;
    let settings = config.map(|config| resolve_settings(config, host_toml, params));
    apply_hostname(options, settings.as_ref(), &mut booted.ready);
    write_network_definitions(options, settings.as_ref());
    write_registry_settings(options, settings.as_ref());
    write_docker_tls(options, settings.as_ref());
    link_docker_socket(options);
    prepare_state_disk(options, booted, settings.as_ref());
    if let (Some(settings), true) = (&settings, real) {
        booted.network = net::start(settings);
        if let Some(hotplug) = &booted.hotplug {
            let network = booted.network.clone();
            let earlier = hotplug
                .shared()
                .set_nic_handler(std::sync::Arc::new(move |name: &str| network.adopt(name)));
            for name in earlier {
                booted.network.adopt(&name);
            }
        }
    }
    let debug_shell = settings.as_ref().is_some_and(|s| s.debug_shell);
    if real && debug_shell {
        let mut sh = DebugShell::new(shell::console_device(root, params.console.as_deref()));
        sh.schedule(booted.t0 + SHELL_LATEST);
        booted.shell = Some(sh);
    }
}

/// Boot, state disk: finds, checks, formats if allowed and mounts it
/// before hostd starts ([`state_disk`]); writes the report for hostd and
/// puts it in the ready line.
fn prepare_state_disk(options: &Options, booted: &mut Booted, settings: Option<&Settings>) {
    let root = options.root.as_path();
    let config = settings.and_then(|s| s.state.as_ref());
    let report = if options.test {
        match config {
            None => state_disk::ram("no state disk configured"),
            Some(_) => state_disk::ram("state disks are not prepared in test mode"),
        }
    } else {
        if let (Some(config), Some(settings)) = (config, settings) {
            let what = if config.mirror.is_empty() {
                config.disk.clone()
            } else {
                format!("the mirror of {}", config.mirror.join(" and "))
            };
            timeline::phase(&format!(
                "state: looking for {what} (from {}, format = {}, wait {} ms)",
                settings.state_source,
                match config.format {
                    mkhost_shared::state_disk::FormatPolicy::Never => "never",
                    mkhost_shared::state_disk::FormatPolicy::IfBlank => "if-blank",
                },
                config.wait_ms
            ));
        }
        let boot_disks = state_disk::boot_disks(root, booted.host_toml_device.as_deref());
        let hotplug = booted.hotplug.as_ref().map(|h| h.shared());
        let mut activity = |waited: Duration| match hotplug {
            Some(shared) => shared.activity(),
            // No hotplug thread: look every 250 ms, as if the kernel were quiet.
            None => hotplug::Activity {
                block_generation: u64::try_from(waited.as_millis() / 250).unwrap_or(0),
                quiet_for: waited,
                busy: false,
            },
        };
        state_disk::prepare(root, config, &boot_disks, &mut activity)
    };
    match (&report.device, &report.note) {
        (Some(device), note) => timeline::phase(&format!(
            "state: {device} mounted on {}{}{}",
            mkhost_shared::paths::STATE_DISK,
            if report.formatted {
                " (formatted now)"
            } else {
                ""
            },
            note.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
        )),
        (None, Some(note)) if config.is_some() => {
            timeline::warning(&format!("state: {note}; state stays in RAM"))
        }
        (None, _) => timeline::phase("state: in RAM (no state disk configured)"),
    }
    booted.ready.state = state_disk::ready_field(&report);
    if report.persistent {
        persist_log(root, booted);
    }
    write_json_for_hostd(options, mkhost_shared::paths::STATE_REPORT, &report, 0o644);
}

/// With a state disk, the host log is kept on it too (`log/hostd.log`).
fn persist_log(root: &Path, booted: &Booted) {
    let Some(pump) = booted.pump.as_ref() else {
        return;
    };
    let path = at(root, mkhost_shared::paths::STATE_DISK)
        .join("log")
        .join(crate::init::logbuf::PERSISTENT_LOG);
    match RingLog::open(&path, crate::init::logbuf::PERSISTENT_LOG_CAP) {
        Ok(ring) => {
            pump.persist_to(ring);
            timeline::phase(&format!(
                "log: kept on the state disk too, {}",
                path.display()
            ));
        }
        Err(e) => timeline::warning(&format!(
            "cannot open {}: {e}; log in RAM only",
            path.display()
        )),
    }
}

/// The main loop's part of the wait for the boot partition: looks for it
/// when disks changed, reads host.toml once it is there, gives up when the
/// kernel went quiet. Returns whether the settings are applied now.
fn poll_boot_partition(options: &Options, booted: &mut Booted, now: Instant) -> bool {
    let root = options.root.as_path();
    let Some(unsettled) = booted.unsettled.as_mut() else {
        return true;
    };
    let waited = now.saturating_duration_since(unsettled.wait.started());
    let activity = match &booted.hotplug {
        Some(h) => h.shared().activity(),
        // No hotplug thread: look every 250 ms, as if the kernel were quiet.
        None => hotplug::Activity {
            block_generation: u64::try_from(waited.as_millis() / 250).unwrap_or(0),
            quiet_for: waited,
            busy: false,
        },
    };
    let step = unsettled.wait.step(
        now,
        activity.block_generation,
        activity.quiet_for,
        activity.busy,
    );
    let host_toml = match step {
        EspStep::Wait => return false,
        EspStep::Look => match bootdisk::boot_partition(root, &unsettled.partuuid) {
            Some(p) => {
                timeline::phase(&format!(
                    "boot partition {} appeared after {} ms",
                    p.device.display(),
                    waited.as_millis()
                ));
                host_toml_layer(bootdisk::read_boot_partition(root, p), now)
            }
            None => return false,
        },
        EspStep::GiveUp { waited, why } => {
            timeline::warning(&format!(
                "boot partition {} did not appear within {} ms ({why}; was the stick removed, \
                 or is its USB or disk driver missing from the image?); booting with the image's settings",
                unsettled.partuuid,
                waited.as_millis()
            ));
            None
        }
    };
    if let Some(u) = booted.unsettled.take() {
        apply_settings(
            options,
            booted,
            u.config.as_ref(),
            &u.params,
            host_toml.as_ref(),
        );
    }
    true
}

/// Boot, mounts: the API file systems and, on a real boot, cgroup2's
/// controllers. Returns the timeline lines, for when the log runs.
fn mount_api_filesystems(root: &Path, real: bool) -> Vec<String> {
    let mut early: Vec<String> = Vec::new();
    let t = Instant::now();
    let failures = mounts::mount_filesystems(root);
    for e in &failures {
        early.push(timeline::format_error(&e.to_string()));
    }
    if real {
        if let Err(e) = mounts::make_root_shared() {
            early.push(timeline::format_warning(&format!(
                "cannot make / shared: {e}"
            )));
        }
    }
    let failed = if failures.is_empty() {
        String::new()
    } else {
        format!(", {} failed", failures.len())
    };
    early.push(timeline::format_phase(
        os::boottime_ms(),
        &format!("filesystems mounted{failed} ({} ms)", elapsed_ms(t)),
    ));
    if real {
        let (enabled, failed) = mounts::enable_cgroup_controllers(&at(root, "/sys/fs/cgroup"));
        for e in &failed {
            early.push(timeline::format_warning(&e.to_string()));
        }
        early.push(timeline::format_phase(
            os::boottime_ms(),
            &format!(
                "cgroup2 controllers enabled: {}",
                if enabled.is_empty() {
                    "-".to_string()
                } else {
                    enabled.join(" ")
                }
            ),
        ));
    }
    early
}

/// Boot, log: a pump from a pipe on stdout and stderr to the console and
/// the log ring; `None` (console only) when that fails.
fn start_log(root: &Path) -> Option<LogPump> {
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(console) => {
            let ring = match RingLog::open(&at(root, paths::LOG), LOG_CAP) {
                Ok(r) => Some(r),
                Err(e) => {
                    timeline::warning(&format!("cannot open {}: {e}; console only", paths::LOG));
                    None
                }
            };
            match LogPump::start(fs::File::from(console), ring) {
                Ok(mut pump) => {
                    if let Err(e) = pump.capture_stdio() {
                        timeline::warning(&format!("cannot route output through the log: {e}"));
                    }
                    Some(pump)
                }
                Err(e) => {
                    timeline::warning(&format!("cannot start the log: {e}"));
                    None
                }
            }
        }
        Err(e) => {
            timeline::warning(&format!("cannot duplicate the console: {e}"));
            None
        }
    }
}

/// Boot, first lines of the log: the start (and root switch) of init, the
/// mount lines held back until now, the ignored arguments.
fn log_start(options: &Options, early: Vec<String>) {
    match &options.switched {
        Some(s) => {
            timeline::emit(&timeline::format_phase(
                s.started_ms,
                &format!("init started version={}", crate::VERSION),
            ));
            timeline::emit(&timeline::format_phase(
                s.switched_ms,
                &format!(
                    "root moved to tmpfs: {} entries, {} KiB in {} ms",
                    s.entries,
                    s.bytes / 1024,
                    s.switched_ms.saturating_sub(s.started_ms)
                ),
            ));
        }
        None => timeline::phase(&format!("init started version={}", crate::VERSION)),
    }
    for line in early {
        timeline::emit(&line);
    }
    if !options.ignored_args.is_empty() {
        timeline::warning(&format!(
            "ignoring arguments: {}",
            options.ignored_args.join(" ")
        ));
    }
}

/// Boot, kernel command line: the `mkhost.*` words; on a real boot,
/// Ctrl-Alt-Del is routed to init as SIGINT.
fn read_cmdline(root: &Path, real: bool) -> cmdline::KernelParams {
    let cmdline_text = fs::read_to_string(at(root, "/proc/cmdline")).unwrap_or_default();
    let params = cmdline::parse(&cmdline_text);
    for p in &params.problems {
        timeline::warning(&format!("kernel command line: {p}"));
    }
    if real {
        if let Err(e) = os::set_ctrl_alt_del(false) {
            timeline::warning(&format!("cannot route Ctrl-Alt-Del to init: {e}"));
        }
    }
    params
}

/// Boot, boot config: `/etc/mkhost/boot.json`, checked against the running
/// kernel; `None` when it is missing or invalid.
fn read_boot_config(root: &Path, running: Option<&str>) -> Option<BootConfig> {
    match load_config(root) {
        Ok(config) => {
            timeline::phase(&format!(
                "boot config loaded profile={} kernel={} modules={}",
                config.profile,
                config.kernel_release,
                config.modules.len()
            ));
            if let Some(running) = running {
                if running != config.kernel_release {
                    timeline::warning(&format!(
                        "boot config is for kernel {} but {running} is running; \
                         modules will likely fail to load",
                        config.kernel_release
                    ));
                }
            }
            Some(config)
        }
        Err(e) => {
            timeline::error(&format!("{e}; continuing without it"));
            None
        }
    }
}

/// Boot, drivers: on a real boot the uevent socket first; the boot
/// modules; on a real boot, efivarfs, coldplug for the devices present and
/// the hotplug thread for those that come later.
fn load_drivers(
    options: &Options,
    config: Option<&BootConfig>,
    running: Option<String>,
    ready: &mut ReadyInfo,
) -> Option<Hotplug> {
    let root = options.root.as_path();
    // Subscribed before any module loads, so no device added from here on
    // is missed, however long coldplug takes.
    let listener = if options.test {
        None
    } else {
        match hotplug::Listener::open() {
            Ok(l) => Some(l),
            Err(e) => {
                timeline::warning(&format!(
                    "cannot listen for kernel device events: {e}; devices that appear after coldplug get no driver"
                ));
                None
            }
        }
    };
    let release = config
        .map(|c| c.kernel_release.clone())
        .or(running)
        .unwrap_or_default();
    let module_dir = at(root, &format!("/lib/modules/{release}"));
    let db = ModuleDb::load(&module_dir).ok();
    let workers = modules::default_workers();
    if let Some(config) = config {
        ready.profile = config.profile.clone();
        ready.kernel = config.kernel_release.clone();
        ready.modules_total = config.modules.len();
        if !options.skip.modules {
            load_boot_modules(root, config, db.as_ref(), workers, ready);
        }
    }
    if !options.test {
        match mounts::mount_efivarfs(root) {
            Ok(true) => timeline::phase("efivarfs mounted"),
            Ok(false) => {}
            Err(e) => timeline::warning(&e.to_string()),
        }
        let security = measured_boot::read(root);
        timeline::info(&measured_boot::format(&security));
        write_json_for_hostd(options, paths::BOOT_SECURITY, &security, 0o644);
        let report = match &db {
            Some(db) => Some(coldplug_devices(root, &module_dir, db, workers, ready)),
            None => {
                timeline::warning(&format!(
                    "no module index in {}; skipping coldplug",
                    module_dir.display()
                ));
                None
            }
        };
        let listener = listener?;
        let (tried, unclaimed) = report
            .map(|r| (r.tried, r.unclaimed_all))
            .unwrap_or_default();
        let context = hotplug::Context {
            root: root.to_path_buf(),
            module_dir,
            db,
            tried,
            unclaimed,
        };
        return match hotplug::start(listener, context) {
            Ok(h) => Some(h),
            Err(e) => {
                timeline::warning(&format!("cannot start the hotplug thread: {e}"));
                None
            }
        };
    }
    None
}

/// The boot config's modules, with their line on the timeline.
fn load_boot_modules(
    root: &Path,
    config: &BootConfig,
    db: Option<&ModuleDb>,
    workers: usize,
    ready: &mut ReadyInfo,
) {
    let t = Instant::now();
    let report = load_modules(root, config, db, workers);
    for e in &report.failed {
        timeline::warning(&e.to_string());
    }
    ready.modules_loaded = report.present();
    timeline::phase(&format!(
        "modules loaded {}/{} ({} already loaded, {} not for this machine, {} failed) in {} ms",
        report.present(),
        report.total,
        report.already,
        report.no_device.len(),
        report.failed.len(),
        elapsed_ms(t)
    ));
    if !report.no_device.is_empty() {
        timeline::info(&format!("no device for: {}", report.no_device.join(" ")));
    }
}

/// Coldplug: drivers for the devices present, with their line on the timeline.
fn coldplug_devices(
    root: &Path,
    module_dir: &Path,
    db: &ModuleDb,
    workers: usize,
    ready: &mut ReadyInfo,
) -> coldplug::Report {
    let t = Instant::now();
    let report = coldplug::run(root, module_dir, db, workers);
    for e in &report.failed {
        timeline::warning(&e.to_string());
    }
    ready.coldplug = report.loaded.len();
    timeline::phase(&format!(
        "coldplug: {} devices, loaded {} module(s){}{}, {} device(s) without driver{} in {} ms",
        report.devices,
        report.loaded.len(),
        if report.loaded.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.loaded.join(" "))
        },
        if report.failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", report.failed.len())
        },
        report.unclaimed_count(),
        if report.unclaimed.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.unclaimed_summary())
        },
        elapsed_ms(t)
    ));
    report
}

/// Boot, host settings: the layer of `mkhost/host.toml` as read from the
/// boot ESP (since `t`), if there is one and it parses.
fn host_toml_layer(
    read: Result<Option<bootdisk::HostToml>, bootdisk::BootDiskError>,
    t: Instant,
) -> Option<host_config::Overrides> {
    match read {
        Ok(Some(found)) => {
            let origin = format!("{}:{}", found.device.display(), host_config::HOST_TOML);
            match host_config::parse_host_toml(&found.text) {
                Ok(mut layer) => {
                    match found.docker_tls {
                        Some(Ok(tls)) => layer.docker_tls = Some(tls),
                        Some(Err(e)) => timeline::error(&format!(
                            "{origin}: [docker] tls_dir: {e}; the Docker API's TLS comes from the image, if it has one"
                        )),
                        None => {}
                    }
                    timeline::phase(&format!(
                        "host config {origin} read ({}) in {} ms",
                        match found.found {
                            bootdisk::Found::LoaderPartUuid => "boot partition",
                            bootdisk::Found::EspType => "ESP by type",
                        },
                        elapsed_ms(t)
                    ));
                    Some(layer)
                }
                Err(problem) => {
                    timeline::error(&format!(
                        "{origin}: {problem}; ignoring the file, booting with the image's settings"
                    ));
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            timeline::warning(&format!("host config: {e}"));
            None
        }
    }
}

/// The settings: command line > host.toml > boot.json.
fn resolve_settings(
    config: &BootConfig,
    host_toml: Option<&host_config::Overrides>,
    params: &cmdline::KernelParams,
) -> Settings {
    let (s, warnings) = Settings::resolve(config, host_toml, &params.overrides);
    for w in warnings {
        timeline::warning(&w);
    }
    s
}

/// Writes the container networks (profile, then host.toml) for hostd.
fn write_network_definitions(options: &Options, settings: Option<&Settings>) {
    let Some(settings) = settings else {
        return;
    };
    write_json_for_hostd(
        options,
        mkhost_shared::paths::NETWORKS,
        &settings.network_definitions(),
        0o644,
    );
}

/// Writes `value` as JSON at `path` (under the root) with `mode`; a failure
/// is logged: hostd then runs without it.
fn write_json_for_hostd(options: &Options, path: &str, value: &impl serde::Serialize, mode: u32) {
    let path = at(&options.root, path);
    let mut json = serde_json::to_vec_pretty(value).unwrap_or_default();
    json.push(b'\n');
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| mkhost_shared::fs::write_atomic(&path, &json, mode));
    if let Err(e) = written {
        timeline::error(&format!("cannot write {}: {e}", path.display()));
    }
}

/// Writes the registry settings (image, then host.toml) for hostd, readable
/// by root alone: host.toml's credentials are in it.
fn write_registry_settings(options: &Options, settings: Option<&Settings>) {
    let Some(settings) = settings else {
        return;
    };
    write_json_for_hostd(
        options,
        mkhost_shared::paths::REGISTRIES,
        &settings.registries,
        0o600,
    );
}

/// Hands hostd the server side of the Docker API's mutual TLS: host.toml's
/// `[docker] tls_dir` if it gave one, else the image's
/// ([`paths::DOCKER_TLS_IMAGE`]), written into [`paths::DOCKER_TLS`]
/// (0700; files 0600). Without either, nothing is written and hostd opens
/// no TCP listener. The files' contents are never logged.
fn write_docker_tls(options: &Options, settings: Option<&Settings>) {
    let root = options.root.as_path();
    let (tls, from) = match settings.and_then(|s| s.docker_tls.clone()) {
        Some(tls) => (tls, "host.toml"),
        None => {
            let image = at(root, paths::DOCKER_TLS_IMAGE);
            if !image.exists() {
                return;
            }
            match host_config::read_docker_tls_dir(&image) {
                Ok(tls) => (tls, "the image"),
                Err(e) => {
                    timeline::error(&format!("Docker API TLS: {e}; no TCP listener"));
                    return;
                }
            }
        }
    };
    match write_tls_dir(&at(root, paths::DOCKER_TLS), &tls) {
        Ok(()) => timeline::phase(&format!(
            "Docker API TLS: server certificate from {from} in {} (port {})",
            paths::DOCKER_TLS,
            paths::DOCKER_TLS_PORT
        )),
        Err(e) => timeline::error(&format!(
            "cannot write {}: {e}; no TCP listener",
            paths::DOCKER_TLS
        )),
    }
}

/// Points `/var/run/docker.sock`, where the docker CLI and docker-py look
/// first, at hostd's Docker API socket (root-only, like the socket).
fn link_docker_socket(options: &Options) {
    let link = at(&options.root, paths::DOCKER_SOCKET_LINK);
    let made =
        link.parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| match fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => std::os::unix::fs::symlink(paths::DOCKER_SOCKET, &link),
            });
    if let Err(e) = made {
        timeline::warning(&format!("cannot link {}: {e}", link.display()));
    }
}

/// Writes `tls` into `dir` (made 0700), each file 0600; on error, what
/// was written is removed so hostd never finds a partial set.
fn write_tls_dir(dir: &Path, tls: &host_config::DockerTls) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let [ca, cert, key] = paths::DOCKER_TLS_FILES;
    let result = (|| {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        for (name, bytes) in [(ca, &tls.ca), (cert, &tls.cert), (key, &tls.key)] {
            mkhost_shared::fs::write_atomic(&dir.join(name), bytes, 0o600)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for name in paths::DOCKER_TLS_FILES {
            let _ = fs::remove_file(dir.join(name));
        }
    }
    result
}

/// Sets the hostname (and on a real boot writes /etc/hosts); records the
/// hostname the host ends up with in `ready`.
fn apply_hostname(options: &Options, settings: Option<&Settings>, ready: &mut ReadyInfo) {
    let root = options.root.as_path();
    if let Some(settings) = settings {
        if options.skip.hostname {
            ready.hostname = settings.hostname.clone();
        } else {
            match set_hostname(&settings.hostname) {
                Ok(()) => {
                    ready.hostname = settings.hostname.clone();
                    let from = match settings.hostname_source {
                        Source::Image => String::new(),
                        other => format!(" (from {other})"),
                    };
                    timeline::phase(&format!("hostname set to {}{from}", settings.hostname));
                }
                Err(e) => timeline::error(&e.to_string()),
            }
        }
        if !options.test {
            let hosts = render_hosts(&settings.hostname);
            if let Err(e) =
                mkhost_shared::fs::write_atomic(&at(root, "/etc/hosts"), hosts.as_bytes(), 0o644)
            {
                timeline::warning(&format!("cannot write /etc/hosts: {e}"));
            }
        }
    }
    if ready.hostname.is_empty() {
        ready.hostname = fs::read_to_string(at(root, "/proc/sys/kernel/hostname"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    }
}

/// Writes the boot config's sysctls.
fn apply_sysctls(root: &Path, config: &BootConfig) {
    let (applied, failed) = sysctl::apply(&at(root, "/proc/sys"), &config.sysctl);
    for f in &failed {
        timeline::warning(&format!("sysctl {f}"));
    }
    timeline::phase(&format!(
        "sysctl: {applied}/{} applied",
        config.sysctl.len()
    ));
}

/// Watches the power button, warning when there is none.
fn watch_power_button(root: &Path) {
    match power::watch(&power::power_buttons(root)) {
        Ok(0) => timeline::warning("no power button found; use SIGTERM/Ctrl-Alt-Del to shut down"),
        Ok(_) => {}
        Err(e) => timeline::warning(&format!("cannot watch the power button: {e}")),
    }
}

/// How to start hostd, with boot.json's `[hostd]` settings; in test mode
/// its paths are below the test root.
fn hostd_spec(options: &Options, config: Option<&BootConfig>) -> ServiceSpec {
    let root = options.root.as_path();
    let socket = at(root, paths::CONTROL_SOCKET);
    let mut args = vec!["daemon".to_string()];
    if let Some(config) = config {
        let memory_cgroups = config.hostd.memory_cgroups;
        if memory_cgroups != Default::default() {
            args.push("--memory-cgroups".to_string());
            args.push(memory_cgroups.as_str().to_string());
        }
    }
    if options.test {
        args.push("--socket".to_string());
        args.push(socket.to_string_lossy().into_owned());
        // Every path hostd would use, below the test root: a test never
        // touches the machine's /var/lib or /run/mkhost.
        for (flag, path) in [
            ("--store", paths::STORE),
            ("--state", paths::STATE),
            ("--containers", paths::CONTAINERS),
            ("--volumes", paths::VOLUMES),
            ("--networks", paths::NETWORKS),
            ("--registries", paths::REGISTRIES),
            ("--boot-manifest", paths::BOOT_MANIFEST),
            ("--docker-socket", paths::DOCKER_SOCKET),
        ] {
            args.push(flag.to_string());
            args.push(at(root, path).to_string_lossy().into_owned());
        }
    }
    ServiceSpec::hostd(at(root, paths::HOSTD), args, socket)
}

/// Collects every ended child; hands hostd's and the shell's exits on.
fn reap_children(service: &mut Service, shell: &mut Option<DebugShell>, rt: &mut ConsoleRuntime) {
    loop {
        match os::reap_child() {
            Ok(Reaped::Child { pid, status }) => {
                let now = Instant::now();
                if service.child_exited(pid, status, now, rt) {
                    continue;
                }
                if let Some(sh) = shell.as_mut() {
                    if sh.exited(pid, now) {
                        timeline::info(&format!(
                            "debug shell exited ({}); starting a new one",
                            exit_status(status)
                        ));
                    }
                }
            }
            Ok(Reaped::NothingYet) | Ok(Reaped::NoChildren) => return,
            Err(e) => {
                timeline::error(&format!("waitpid failed: {e}"));
                return;
            }
        }
    }
}

/// When PID 1 panics the kernel panics too, so instead of aborting, report the
/// panic and stop here forever: the machine stays up for inspection.
pub fn install_pid1_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        timeline::error(&format!(
            "init panicked: {info}; halting supervision (PID 1 must not exit)"
        ));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }));
}

/// The signals init handles synchronously.
const SIGNALS: &[libc::c_int] = &[
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT (Ctrl-Alt-Del)",
        libc::SIGPWR => "power button",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

/// Waits up to `timeout` for `pid` to exit (or, with `None`, for every child),
/// reaping whatever ends. Returns hostd's raw status when it was waited for.
fn wait_children(
    signals: Option<&SignalSet>,
    pid: Option<i32>,
    timeout: Duration,
) -> Option<Option<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        loop {
            match os::reap_child() {
                Ok(Reaped::Child { pid: p, status }) if Some(p) == pid => {
                    return Some(Some(status))
                }
                Ok(Reaped::Child { .. }) => continue,
                Ok(Reaped::NoChildren) => return Some(None),
                Ok(Reaped::NothingYet) | Err(_) => break,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let step = left.min(Duration::from_millis(50));
        match signals {
            Some(set) => {
                let _ = set.wait_timeout(step);
            }
            None => std::thread::sleep(step),
        }
    }
}

/// Stops everything and powers off (or reboots). In test mode, stops hostd
/// and exits.
fn shutdown(
    reason: &str,
    options: &Options,
    service: &Service,
    booted: &mut Booted,
    signals: Option<&SignalSet>,
) -> ! {
    let real = !options.test;
    timeline::phase(&format!("shutdown: {reason}"));
    if let Some(sh) = booted.shell.as_mut() {
        sh.disable();
    }
    if let Some(pid) = service.pid() {
        timeline::phase(&format!("shutdown: stopping hostd pid={pid} (SIGTERM)"));
        let t = Instant::now();
        let _ = os::kill(pid, libc::SIGTERM);
        match wait_children(signals, Some(pid), HOSTD_STOP_TIMEOUT) {
            Some(Some(status)) => timeline::phase(&format!(
                "shutdown: hostd stopped ({}) after {} ms",
                exit_status(status),
                elapsed_ms(t)
            )),
            Some(None) => timeline::phase("shutdown: hostd is gone"),
            None => {
                timeline::warning(&format!(
                    "shutdown: hostd did not stop within {} s; killing it",
                    HOSTD_STOP_TIMEOUT.as_secs()
                ));
                let _ = os::kill(pid, libc::SIGKILL);
                let _ = wait_children(signals, Some(pid), Duration::from_secs(2));
            }
        }
    }
    if !real {
        if let Some(pump) = booted.pump.take() {
            pump.stop(Duration::from_secs(2));
        }
        std::process::exit(0);
    }
    if matches!(os::kill_all(libc::SIGTERM), Ok(true)) {
        // SIGHUP too: interactive shells ignore SIGTERM but leave on a hangup.
        let _ = os::kill_all(libc::SIGHUP);
        timeline::phase("shutdown: sent SIGTERM and SIGHUP to all remaining processes");
        if wait_children(signals, None, OTHERS_STOP_TIMEOUT).is_none() {
            if matches!(os::kill_all(libc::SIGKILL), Ok(true)) {
                timeline::phase("shutdown: killed the remaining processes (SIGKILL)");
            }
            let _ = wait_children(signals, None, Duration::from_secs(1));
        }
    }
    timeline::phase("shutdown: syncing file systems");
    if let Some(pump) = booted.pump.take() {
        pump.stop(Duration::from_secs(2));
    }
    let report = mounts::unmount_all();
    timeline::phase(&format!(
        "shutdown: unmounted {} file systems{}{}",
        report.unmounted,
        if report.lazy.is_empty() {
            String::new()
        } else {
            format!(", detached busy: {}", report.lazy.join(" "))
        },
        if report.failed.is_empty() {
            String::new()
        } else {
            format!(", failed: {}", report.failed.join("; "))
        }
    ));
    let action = if booted.reboot {
        timeline::phase("shutdown: rebooting");
        os::RebootAction::Restart
    } else {
        timeline::phase("shutdown: powering off");
        os::RebootAction::PowerOff
    };
    let err = os::reboot(action);
    timeline::error(&format!("reboot(2) failed: {err}; halting here"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Boots and supervises forever. Never returns, whatever fails.
pub fn run(options: &Options) -> ! {
    let t0 = Instant::now();
    let pid1 = std::process::id() == 1;
    if pid1 {
        install_pid1_panic_hook();
    }
    os::limit_malloc_arenas();
    if pid1 && !options.test && options.switched.is_none() {
        switch_root_and_reexec(&options.ignored_args);
    }
    if !pid1 {
        if let Err(e) = os::set_child_subreaper() {
            timeline::warning(&format!("cannot become child subreaper: {e}"));
        }
    }
    // Signals are blocked before any thread starts (threads inherit the mask),
    // so the loop can sleep in sigtimedwait and take them synchronously.
    // Children started with `Command` get an empty mask again.
    let signals = match SignalSet::new(SIGNALS).and_then(|set| set.block().map(|()| set)) {
        Ok(set) => Some(set),
        Err(e) => {
            timeline::warning(&format!("cannot block signals, polling instead: {e}"));
            None
        }
    };

    let mut booted = boot(options, t0);
    // The module index, device lists and parsers are gone: give their heap back.
    os::trim_heap();
    let mut rt = ConsoleRuntime {
        log: booted
            .pump
            .as_ref()
            .and_then(|p| p.writer().try_clone().ok()),
        answered: false,
    };
    let mut service = Service::new(booted.spec.clone(), Instant::now());
    let mut ready_printed = false;
    let mut said_waiting = false;
    loop {
        let now = Instant::now();
        // hostd starts once the settings are applied: the state disk they
        // name is mounted under its store first.
        let settled = poll_boot_partition(options, &mut booted, now);
        let now = Instant::now();
        if settled {
            service.tick(now, &mut rt);
        }
        if let Some(sh) = booted.shell.as_mut() {
            if let Some(msg) = sh.tick(now) {
                timeline::info(&msg);
            }
        }
        if !ready_printed && rt.answered && settled {
            if booted.network.settled(now) {
                ready_printed = true;
                if let Some(h) = &booted.hotplug {
                    h.shared().set_booted();
                }
                booted.ready.boot_ms = os::boottime_ms();
                booted.ready.addresses = booted.network.addresses();
                timeline::emit(&timeline::format_ready(&booted.ready));
                os::trim_heap();
                if let Some(sh) = booted.shell.as_mut() {
                    sh.disable();
                    sh.schedule(now);
                    if let Some(msg) = sh.tick(now) {
                        timeline::info(&msg);
                    }
                }
            } else if !said_waiting {
                said_waiting = true;
                timeline::phase("hostd is up; waiting for the network");
            }
        }
        let idle = if ready_printed && signals.is_some() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(20)
        };
        let wait = [
            service.next_deadline().filter(|_| settled),
            booted.shell.as_ref().and_then(|s| s.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .map(|d| d.saturating_duration_since(Instant::now()))
        .fold(idle, Duration::min);
        let signal = match &signals {
            Some(set) => match set.wait_timeout(wait) {
                Ok(s) => s,
                Err(e) => {
                    timeline::error(&format!("sigtimedwait failed: {e}"));
                    std::thread::sleep(wait);
                    None
                }
            },
            None => {
                std::thread::sleep(wait);
                None
            }
        };
        match signal {
            Some(libc::SIGCHLD) | None => {}
            Some(sig) => {
                // Our copy of the log pipe goes, so the pump sees the end of
                // the stream once hostd and the rest are gone.
                rt.log = None;
                let reason = format!("received {}", signal_name(sig));
                shutdown(&reason, options, &service, &mut booted, signals.as_ref());
            }
        }
        reap_children(&mut service, &mut booted.shell, &mut rt);
    }
}

#[cfg(test)]
mod cmdline_tests {
    use super::cmdline_value;

    #[test]
    fn cmdline_values() {
        let line = "console=ttyS0 mkhost.hostname=a quiet mkhost.hostname=lab-b\n";
        assert_eq!(cmdline_value(line, "mkhost.hostname"), Some("lab-b"));
        assert_eq!(cmdline_value(line, "console"), Some("ttyS0"));
        assert_eq!(cmdline_value(line, "quiet"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn docker_tls_comes_from_host_toml_else_the_image() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let options = Options {
            root: root.path().to_path_buf(),
            test: true,
            ..Options::default()
        };
        let out = at(root.path(), paths::DOCKER_TLS);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let pem = |kind: &str, body: &str| {
            format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n").into_bytes()
        };
        // Neither: nothing, so hostd opens no TCP listener.
        write_docker_tls(&options, None);
        assert!(!out.exists());
        // The image's.
        let image = at(root.path(), paths::DOCKER_TLS_IMAGE);
        fs::create_dir_all(&image).unwrap();
        fs::write(image.join("ca.pem"), pem("CERTIFICATE", "image-ca")).unwrap();
        fs::write(image.join("cert.pem"), pem("CERTIFICATE", "image-cert")).unwrap();
        fs::write(image.join("key.pem"), pem("PRIVATE KEY", "image-key")).unwrap();
        write_docker_tls(&options, None);
        assert_eq!(mode(&out), 0o700);
        for name in paths::DOCKER_TLS_FILES {
            assert_eq!(mode(&out.join(name)), 0o600, "{name}");
        }
        assert_eq!(
            fs::read(out.join("key.pem")).unwrap(),
            pem("PRIVATE KEY", "image-key")
        );
        // host.toml's replaces it.
        let boot: BootConfig = serde_json::from_str(
            r#"{"profile":"t","kernel_release":"6.1","hostname":"h","debug_shell":false,"modules":[]}"#,
        )
        .unwrap();
        let layer = host_config::Overrides {
            docker_tls: Some(host_config::DockerTls {
                ca: pem("CERTIFICATE", "stick-ca"),
                cert: pem("CERTIFICATE", "stick-cert"),
                key: pem("PRIVATE KEY", "stick-key"),
            }),
            ..Default::default()
        };
        let (settings, _) =
            Settings::resolve(&boot, Some(&layer), &host_config::Overrides::default());
        write_docker_tls(&options, Some(&settings));
        assert_eq!(
            fs::read(out.join("cert.pem")).unwrap(),
            pem("CERTIFICATE", "stick-cert")
        );
        assert_eq!(
            fs::read(out.join("key.pem")).unwrap(),
            pem("PRIVATE KEY", "stick-key")
        );
        assert_eq!(mode(&out.join("key.pem")), 0o600);
    }

    #[test]
    fn pid1_ignores_kernel_words() {
        let words = ["splash", "--help", "-abc", "--a=b", "-x=y", "-V"];
        let inv = parse_args(&args(&words), true).unwrap();
        let expected = Options {
            ignored_args: args(&words),
            ..Options::default()
        };
        assert_eq!(inv, Invocation::Boot(expected));
        // A malformed flag is an error even as PID 1 (bin/init.rs then boots
        // with the defaults).
        assert!(parse_args(&args(&["--test-root"]), true).is_err());
    }

    #[test]
    fn non_pid1_needs_test_root() {
        let err = parse_args(&[], false).unwrap_err();
        assert!(matches!(err, InitError::NotPid1 { .. }));
        assert!(err.to_string().contains("--test-root"), "{err}");
        assert!(matches!(
            parse_args(&args(&["--bogus"]), false),
            Err(InitError::Usage(_))
        ));
        assert_eq!(
            parse_args(&args(&["--version"]), false).unwrap(),
            Invocation::Version
        );
    }

    #[test]
    fn test_root_and_skip() {
        let inv = parse_args(
            &args(&["--test-root=/tmp/r", "--skip", "mounts,hostname"]),
            false,
        )
        .unwrap();
        let Invocation::Boot(options) = inv.clone() else {
            panic!("{inv:?}")
        };
        assert_eq!(options.root, Path::new("/tmp/r"));
        assert!(options.test);
        assert_eq!(
            options.skip,
            Skip {
                mounts: true,
                console: true,
                hostname: true,
                modules: false
            }
        );
        assert_eq!(
            parse_args(
                &args(&["--test-root", "/tmp/r", "--skip=mounts,hostname"]),
                false
            )
            .unwrap(),
            inv
        );
        assert!(parse_args(&args(&["--test-root", "/r", "--skip", "disk"]), false).is_err());
        let e = parse_args(&args(&["--test-root=/r", "--skip"]), false).unwrap_err();
        assert!(e.to_string().contains("--skip"), "{e}");
        let e = parse_args(&args(&["--test-root=/r", "--frob"]), false).unwrap_err();
        assert!(e.to_string().contains("--frob"), "{e}");
        assert!(parse_args(&args(&["--test-root"]), false).is_err());
        assert!(parse_args(&args(&["--skip", "mounts"]), true).is_err());
    }

    #[test]
    fn paths_below_root() {
        assert_eq!(at(Path::new("/"), "/proc"), Path::new("/proc"));
        assert_eq!(
            at(Path::new("/tmp/r"), paths::CONTROL_SOCKET),
            Path::new("/tmp/r/run/hostd/hostd.sock")
        );
    }

    #[test]
    fn missing_and_unloadable_modules_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let config = BootConfig {
            profile: "test".into(),
            kernel_release: "0.0-test".into(),
            hostname: "h".into(),
            debug_shell: false,
            modules: vec!["kernel/missing.ko".into(), "kernel/also-missing.ko".into()],
            sysctl: Default::default(),
            network: Default::default(),
            container_networks: Default::default(),
            registries: Default::default(),
            state: None,
            hostd: Default::default(),
        };
        let report = load_modules(dir.path(), &config, None, 1);
        assert_eq!(report.total, 2);
        assert_eq!(report.present(), 0);
        assert_eq!(report.failed.len(), 2);
        let msg = report.failed[0].to_string();
        assert!(
            msg.contains("lib/modules/0.0-test/kernel/missing.ko") && msg.contains("os error 2"),
            "{msg}"
        );
    }

    #[test]
    fn switched_roundtrip_and_pid1_flag() {
        let s = Switched {
            started_ms: 1500,
            switched_ms: 1540,
            entries: 396,
            bytes: 10_000_000,
        };
        assert_eq!(Switched::decode(&s.encode()), Some(s));
        assert_eq!(Switched::decode("1:2:3"), None);
        let inv = parse_args(
            &args(&[&format!("{SWITCHED_ARG}={}", s.encode()), "splash"]),
            true,
        )
        .unwrap();
        let Invocation::Boot(options) = inv else {
            panic!()
        };
        assert_eq!(options.switched, Some(s));
        assert_eq!(options.ignored_args, ["splash"]);
    }

    #[test]
    fn boot_plan_keeps_order_and_adds_edges() {
        let config = BootConfig {
            profile: "t".into(),
            kernel_release: "r".into(),
            hostname: "h".into(),
            debug_shell: false,
            modules: vec![
                "kernel/a.ko".into(),
                "kernel/b.ko".into(),
                "kernel/c-x.ko".into(),
            ],
            sysctl: Default::default(),
            network: Default::default(),
            container_networks: Default::default(),
            registries: Default::default(),
            state: None,
            hostd: Default::default(),
        };
        let db = ModuleDb::parse(
            "kernel/a.ko:\nkernel/b.ko:\nkernel/c-x.ko: kernel/a.ko\n",
            "",
            "",
            "",
        );
        let plan = boot_plan(&config, Some(&db));
        let after: Vec<Vec<usize>> = plan.modules.iter().map(|m| m.after.clone()).collect();
        assert_eq!(after, [vec![], vec![], vec![0]]);
        assert_eq!(plan.modules[2].name, "c_x");
        let plan = boot_plan(&config, None);
        let after: Vec<Vec<usize>> = plan.modules.iter().map(|m| m.after.clone()).collect();
        assert_eq!(after, [vec![], vec![0], vec![1]]);
    }

    #[test]
    fn hosts_file() {
        assert!(render_hosts("edge-1").contains("127.0.1.1\tedge-1\n"));
    }
}
