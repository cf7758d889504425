//! mkhost's PID 1: the boot steps and the supervision loop behind the `init`
//! binary.
//!
//! Boot, in order (each step a function here, each failure logged and survived):
//!
//! 1. mount `/proc`, `/sys`, `/dev` (devtmpfs) and `/run` (tmpfs, 0755)
//! 2. reopen `/dev/console` onto fds 0, 1, 2
//! 3. read `/etc/mkhost/boot.json` ([`crate::boot_config`])
//! 4. set the hostname
//! 5. load the listed kernel modules in order with `finit_module`
//! 6. start `/usr/bin/hostd`, probe its socket until it answers, print the ready
//!    line once, then reap zombies and restart hostd whenever it exits, forever
//!
//! PID 1 must never exit (the kernel panics), so [`run`] returns `!` and nothing
//! after argument parsing is fatal. For testing, `--test-root DIR` runs the same
//! steps against a directory (mount points, config, modules and hostd below DIR)
//! without touching the console, and may run as an ordinary process; `--skip`
//! leaves out steps that need namespaces or privileges.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::boot_config::{BootConfig, BootConfigError, BOOT_CONFIG_PATH};
use crate::control::{self, Request, Response};
use crate::supervisor::{Event, Runtime, Service, ServiceSpec};
use crate::sys::{self, Reaped, SignalSet};
use crate::timeline::{self, ReadyInfo};

/// Where hostd lives in the image.
pub const HOSTD_PATH: &str = "/usr/bin/hostd";

/// Usage text of the `init` binary.
pub const USAGE: &str = "\
usage: init                     (as PID 1, started by the kernel)
       init --test-root DIR [--skip STEP,...]
       init --version | --help

--test-root DIR  run the boot steps against DIR instead of / (console untouched);
                 allowed when not PID 1. Mounts go below DIR: use a mount namespace.
--skip STEPS     comma-separated steps to leave out: mounts, console, hostname, modules";

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
    /// A mount point could not be created.
    #[error("cannot create mount point {path}: {source}", path = path.display())]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// mount(2) failed.
    #[error("cannot mount {fstype} on {target}: {source}", target = target.display())]
    Mount {
        /// File system type.
        fstype: String,
        /// The mount point.
        target: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
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
    /// A module file could not be opened.
    #[error("cannot open module {path}: {source}", path = path.display())]
    ModuleOpen {
        /// The module file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// finit_module failed (other than "already loaded").
    #[error("cannot load module {path}: {source}", path = path.display())]
    ModuleLoad {
        /// The module file.
        path: PathBuf,
        /// The I/O error (errno).
        #[source]
        source: io::Error,
    },
}

/// Steps `--skip` can leave out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skip {
    /// Do not mount /proc, /sys, /dev, /run.
    pub mounts: bool,
    /// Do not reopen /dev/console onto 0, 1, 2.
    pub console: bool,
    /// Do not set the hostname.
    pub hostname: bool,
    /// Do not load kernel modules.
    pub modules: bool,
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
    /// Command-line words ignored as PID 1 (leftovers of the kernel command line).
    pub ignored_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            test: false,
            skip: Skip::default(),
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
    let mut options = Options::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, InitError> {
            inline
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| InitError::Usage(format!("{name} needs a value")))
        };
        match flag {
            "--version" | "-V" if !is_pid1 => return Ok(Invocation::Version),
            "--help" | "-h" if !is_pid1 => return Ok(Invocation::Help),
            "--test-root" => {
                let dir = PathBuf::from(value("--test-root")?);
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
            "--skip" => {
                for step in value("--skip")?.split(',').filter(|s| !s.is_empty()) {
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
            _ if is_pid1 => options.ignored_args.push(arg.clone()),
            _ => return Err(InitError::Usage(format!("unknown argument: {arg}"))),
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

/// `abs` (an absolute path in the image) below `root`.
pub fn at(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// One file system `init` mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    /// Source (device name shown in /proc/mounts).
    pub source: &'static str,
    /// Mount point in the image.
    pub target: &'static str,
    /// File system type.
    pub fstype: &'static str,
    /// MS_* flags.
    pub flags: libc::c_ulong,
    /// File-system specific options.
    pub data: Option<&'static str>,
}

/// The API file systems, in mount order.
pub const MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=0755"),
    },
];

/// Creates the mount point and mounts `spec` below `root`.
pub fn mount_one(root: &Path, spec: &MountSpec) -> Result<(), InitError> {
    let target = at(root, spec.target);
    fs::create_dir_all(&target).map_err(|source| InitError::MountPoint {
        path: target.clone(),
        source,
    })?;
    sys::mount(spec.source, &target, spec.fstype, spec.flags, spec.data).map_err(|source| {
        InitError::Mount {
            fstype: spec.fstype.to_string(),
            target,
            source,
        }
    })
}

/// Mounts all of [`MOUNTS`]; returns the failures (the rest is still mounted).
pub fn mount_filesystems(root: &Path) -> Vec<InitError> {
    MOUNTS
        .iter()
        .filter_map(|spec| mount_one(root, spec).err())
        .collect()
}

/// Opens `/dev/console` (below `root`) and makes it fds 0, 1 and 2.
pub fn reopen_console(root: &Path) -> Result<(), InitError> {
    let path = at(root, "/dev/console");
    let err = |source| InitError::Console {
        path: path.clone(),
        source,
    };
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(err)?;
    for fd in 0..=2 {
        sys::dup2(console.as_fd(), fd).map_err(err)?;
    }
    // If fds 0-2 were closed, the console itself landed on one of them: keep it.
    if std::os::fd::AsRawFd::as_raw_fd(&console) <= 2 {
        let _ = std::os::fd::IntoRawFd::into_raw_fd(console);
    }
    Ok(())
}

/// Reads the boot config below `root`.
pub fn load_config(root: &Path) -> Result<BootConfig, InitError> {
    Ok(BootConfig::load(&at(root, BOOT_CONFIG_PATH))?)
}

/// Sets the hostname.
pub fn set_hostname(name: &str) -> Result<(), InitError> {
    sys::sethostname(name).map_err(|source| InitError::Hostname {
        name: name.to_string(),
        source,
    })
}

/// The outcome of loading one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleLoad {
    /// The kernel loaded it now.
    Loaded,
    /// A module of that name was already loaded (`EEXIST`).
    AlreadyLoaded,
    /// The module refused with `ENODEV`: the hardware or CPU feature it drives
    /// is absent on this machine (e.g. crc32c-intel without SSE4.2). Not an error.
    NoDevice,
}

/// Loads one module file with `finit_module`. Compressed files (`.ko.xz`,
/// `.ko.zst`, `.ko.gz`) are handed to the kernel to decompress.
pub fn load_module(path: &Path) -> Result<ModuleLoad, InitError> {
    let file = fs::File::open(path).map_err(|source| InitError::ModuleOpen {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.to_string_lossy();
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.ends_with(ext));
    let flags = if compressed {
        sys::MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = CString::default();
    match sys::finit_module(file.as_fd(), &params, flags) {
        Ok(()) => Ok(ModuleLoad::Loaded),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(ModuleLoad::AlreadyLoaded),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(ModuleLoad::NoDevice),
        Err(source) => Err(InitError::ModuleLoad {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What [`load_modules`] did.
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
    /// The failures, in order.
    pub failed: Vec<InitError>,
}

impl ModuleReport {
    /// Modules present after the step (loaded now or before).
    pub fn present(&self) -> usize {
        self.loaded + self.already
    }
}

/// Loads the config's modules in order; a failure is recorded and the next
/// module is tried (its dependants will fail too, and say so).
pub fn load_modules(root: &Path, config: &BootConfig) -> ModuleReport {
    let mut report = ModuleReport {
        total: config.modules.len(),
        ..ModuleReport::default()
    };
    for rel in &config.modules {
        match load_module(&config.module_path(root, rel)) {
            Ok(ModuleLoad::Loaded) => report.loaded += 1,
            Ok(ModuleLoad::AlreadyLoaded) => report.already += 1,
            Ok(ModuleLoad::NoDevice) => report.no_device.push(module_name(rel)),
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

/// `kernel/arch/x86/crypto/crc32c-intel.ko` -> `crc32c-intel`.
fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.split(".ko").next().unwrap_or(file).to_string()
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
    ready: ReadyInfo,
}

impl Runtime for ConsoleRuntime {
    fn spawn(&mut self, spec: &ServiceSpec) -> io::Result<i32> {
        let mut command = Command::new(&spec.program);
        command.args(&spec.args).stdin(Stdio::null());
        if std::env::var_os("PATH").is_none() {
            command.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        }
        let child = command.spawn()?;
        // The child is reaped by `reap_children` (waitpid(-1)), not through `Child`.
        i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))
    }

    fn probe(&mut self, spec: &ServiceSpec) -> bool {
        matches!(
            control::request(&spec.socket, &Request::Status, Duration::from_secs(1)),
            Ok(Response::Status(_))
        )
    }

    fn kill(&mut self, pid: i32) {
        if let Err(e) = sys::kill(pid, libc::SIGKILL) {
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
                    self.ready.boot_ms = sys::boottime_ms();
                    timeline::emit(&timeline::format_ready(&self.ready));
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

/// Runs the boot steps (1-5) and returns what the supervisor needs.
fn boot(options: &Options) -> (ServiceSpec, ReadyInfo) {
    let root = options.root.as_path();

    if !options.skip.mounts {
        let failures = mount_filesystems(root);
        for e in &failures {
            timeline::error(&e.to_string());
        }
        if failures.is_empty() {
            timeline::phase("filesystems mounted");
        } else {
            timeline::phase(&format!("filesystems mounted, {} failed", failures.len()));
        }
    }
    if !options.skip.console {
        if let Err(e) = reopen_console(root) {
            timeline::error(&e.to_string());
        }
    }

    let running = running_kernel(root);
    let cmdline = fs::read_to_string(at(root, "/proc/cmdline")).unwrap_or_default();
    let config = match load_config(root) {
        Ok(mut config) => {
            if let Some(hostname) = cmdline_value(&cmdline, "mkhost.hostname") {
                config.hostname = hostname.to_string();
            }
            timeline::phase(&format!(
                "boot config loaded profile={} kernel={} modules={}",
                config.profile,
                config.kernel_release,
                config.modules.len()
            ));
            if let Some(running) = running.as_deref() {
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
    };

    let mut ready = ReadyInfo {
        hostname: String::new(),
        profile: "unknown".to_string(),
        kernel: running.unwrap_or_default(),
        boot_ms: 0,
        modules_loaded: 0,
        modules_total: 0,
    };
    if let Some(config) = &config {
        ready.profile = config.profile.clone();
        ready.kernel = config.kernel_release.clone();
        if options.skip.hostname {
            ready.hostname = config.hostname.clone();
        } else {
            match set_hostname(&config.hostname) {
                Ok(()) => {
                    ready.hostname = config.hostname.clone();
                    timeline::phase(&format!("hostname set to {}", config.hostname));
                }
                Err(e) => timeline::error(&e.to_string()),
            }
        }
        ready.modules_total = config.modules.len();
        if !options.skip.modules {
            let report = load_modules(root, config);
            for e in &report.failed {
                timeline::warning(&e.to_string());
            }
            ready.modules_loaded = report.present();
            timeline::phase(&format!(
                "modules loaded {}/{} ({} already loaded, {} not for this machine, {} failed)",
                report.present(),
                report.total,
                report.already,
                report.no_device.len(),
                report.failed.len()
            ));
            if !report.no_device.is_empty() {
                timeline::info(&format!("no device for: {}", report.no_device.join(" ")));
            }
        }
        if config.debug_shell {
            timeline::warning("debug_shell is set but this init has no debug shell yet");
        }
    }
    if ready.hostname.is_empty() {
        ready.hostname = fs::read_to_string(at(root, "/proc/sys/kernel/hostname"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    }

    let socket = at(root, control::SOCKET_PATH);
    let mut args = vec!["daemon".to_string()];
    if options.test {
        args.push("--socket".to_string());
        args.push(socket.to_string_lossy().into_owned());
    }
    (
        ServiceSpec::hostd(at(root, HOSTD_PATH), args, socket),
        ready,
    )
}

/// Collects every ended child; hands hostd's exit to the supervisor.
fn reap_children(service: &mut Service, rt: &mut ConsoleRuntime) {
    loop {
        match sys::reap_child() {
            Ok(Reaped::Child { pid, status }) => {
                service.child_exited(pid, status, Instant::now(), rt);
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

/// Boots and supervises forever. Never returns, whatever fails.
pub fn run(options: &Options) -> ! {
    let pid1 = std::process::id() == 1;
    if pid1 {
        install_pid1_panic_hook();
    }
    timeline::phase(&format!("init started version={}", crate::VERSION));
    if !options.ignored_args.is_empty() {
        timeline::warning(&format!(
            "ignoring arguments: {}",
            options.ignored_args.join(" ")
        ));
    }
    if !pid1 {
        if let Err(e) = sys::set_child_subreaper() {
            timeline::warning(&format!("cannot become child subreaper: {e}"));
        }
    }
    // SIGCHLD is blocked so the loop can sleep in sigtimedwait and wake the moment
    // a child exits. Children started with `Command` get an empty mask again.
    let sigchld = match SignalSet::new(&[libc::SIGCHLD]).and_then(|set| set.block().map(|()| set)) {
        Ok(set) => Some(set),
        Err(e) => {
            timeline::warning(&format!("cannot block SIGCHLD, polling instead: {e}"));
            None
        }
    };

    let (spec, ready) = boot(options);
    let mut rt = ConsoleRuntime { ready };
    let mut service = Service::new(spec, Instant::now());
    let idle = if sigchld.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(100)
    };
    loop {
        service.tick(Instant::now(), &mut rt);
        let wait = service
            .next_deadline()
            .map_or(idle, |d| d.saturating_duration_since(Instant::now()))
            .min(idle);
        match &sigchld {
            Some(set) => {
                if let Err(e) = set.wait_timeout(wait) {
                    timeline::error(&format!("sigtimedwait failed: {e}"));
                    std::thread::sleep(wait);
                }
            }
            None => std::thread::sleep(wait),
        }
        reap_children(&mut service, &mut rt);
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
    fn pid1_ignores_kernel_words() {
        let inv = parse_args(&args(&["splash", "--help"]), true).unwrap();
        let expected = Options {
            ignored_args: args(&["splash", "--help"]),
            ..Options::default()
        };
        assert_eq!(inv, Invocation::Boot(expected));
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
        let Invocation::Boot(options) = inv else {
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
        assert!(parse_args(&args(&["--test-root", "/r", "--skip", "disk"]), false).is_err());
        assert!(parse_args(&args(&["--test-root"]), false).is_err());
        assert!(parse_args(&args(&["--skip", "mounts"]), true).is_err());
    }

    #[test]
    fn paths_below_root() {
        assert_eq!(at(Path::new("/"), "/proc"), Path::new("/proc"));
        assert_eq!(
            at(Path::new("/tmp/r"), control::SOCKET_PATH),
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
        };
        let report = load_modules(dir.path(), &config);
        assert_eq!(report.total, 2);
        assert_eq!(report.present(), 0);
        assert_eq!(report.failed.len(), 2);
        let msg = report.failed[0].to_string();
        assert!(
            msg.contains("lib/modules/0.0-test/kernel/missing.ko") && msg.contains("os error 2"),
            "{msg}"
        );
    }
}
