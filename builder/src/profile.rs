//! Profiles: the TOML files that say what goes into a host image.
//!
//! A profile is found by name (`rack` -> `profiles/rack.toml`) or by path, may
//! `extends = "..."` another, and is resolved here into one validated [`Profile`].
//! Every error names the file, line and column of the value at fault.
//!
//! Profiles and the files they name are read with [`crate::input_file`]:
//! only regular files, at most [`MAX_PROFILE_BYTES`], never blocking; text
//! must be UTF-8 (the first bad byte is named by line and column). Values
//! quoted in errors are cut to their first 200 characters ([`crate::clip`]).
//!
//! Merge rules for `extends`: the child's scalars replace the parent's; the
//! `[kernel]` and `[stub]` tables replace the parent's table whole (a source kind
//! and its fields belong together); `[boot]` and `[initramfs]` merge field by
//! field; the lists `modules.sets`, `modules.load`, `modules.include`, `[[files]]`
//! and `[[binaries]]` append; `[module_sets.NAME]` replaces a set of the same name.
//! `[[container]]` tables append too (child after parent); a container name may
//! appear only once in the merged profile. Containers are checked here with
//! hostd's own request rules ([`mkhost_shared::container`]), so the build
//! refuses what hostd would refuse at boot; their archives are read by the
//! build ([`crate::containers`]). A container without `archive` names its
//! image by reference (`image = "docker.io/library/nginx:1.27"`, checked
//! with the registry client's parser and recorded canonical): mkhost pulls
//! it at build time ([`crate::pull`]), or hostd at boot with
//! `pull = "boot"`.
//!
//! `[registries]` (insecure registries, mirrors, `ca_file`) is the
//! registry settings' shared shape ([`RegistrySettings`]) with the CA read
//! from a file next to the profile; credentials (`auths`) are refused here,
//! since whatever a profile says may end up in the image. A child's
//! `[registries]` overlays the parent's field by field.
//!
//! `[docker] tls_dir` names a directory `mkhost certs server` wrote
//! (`ca.pem`, `cert.pem`, `key.pem`, relative to the profile); it is
//! checked here ([`crate::certs::check_server_dir`]: the key matches the
//! certificate, the CA issued it, no CA private key is there) and the build
//! puts the three files into the image for init to hand hostd. A child's
//! `[docker]` replaces the parent's.
//!
//! `[state]` (the state disk, [`mkhost_shared::state_disk::StateConfig`]) is
//! checked with the shared rules and goes into boot.json; a child's
//! `[state]` replaces the parent's as a whole table.
//!
//! `[hostd] memory_cgroups` (`"each"`, the default, or `"limited"`,
//! [`mkhost_shared::boot_config::MemoryCgroups`]) goes into boot.json for
//! init to hand hostd; a child's `[hostd]` replaces the parent's.
//!
//! `[target] kernel` ([`TargetKernel`]) says which kernel the image is for;
//! the build picks its writer from it ([`crate::target`]). Only `"linux"`,
//! the default, is implemented; any other value is refused here, pointing at
//! `docs/backends.md`. A child's `kernel` replaces the parent's.
//!
//! Checked after merging: no two `[[files]]`/`[[binaries]]` entries place the
//! same path, none places a path that is mkhost's own ([`crate::layout`]),
//! and the kernel command line a machine boots with fits the kernel's
//! [`KERNEL_CMDLINE_SIZE`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use mkhost_registry::Reference;
use mkhost_shared::container::{self as hostd_request, Limits, RequestError, RunRequest};
use mkhost_shared::registries::RegistrySettings;
use serde::Deserialize;
use toml::Spanned;

use crate::clip;
use crate::input_file::{self, InputError};
use crate::layout;

/// Where a value came from: `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {} not found (looked in {searched}); available profiles: {available}", clip::quoted(.name))]
    NotFound {
        name: String,
        searched: String,
        available: String,
    },
    #[error("cannot read profile {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A profile or machines file that is not a regular file or too large.
    #[error("{what} {error}")]
    Input {
        /// `profile` or `machines file`.
        what: &'static str,
        error: InputError,
    },
    #[error("{origin}: {}", clip::clip_message(.message))]
    Parse { origin: Origin, message: String },
    #[error("{origin}: {}", clip::clip_message(.message))]
    Invalid { origin: Origin, message: String },
    #[error("{path}: {}", clip::clip_message(.message))]
    Incomplete { path: PathBuf, message: String },
    #[error("{origin}: profile extends itself through {chain}")]
    Cycle { origin: Origin, chain: String },
}

/// Where the kernel or the systemd-stub comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The build host's newest `/boot/vmlinuz-*` (and its `/lib/modules`), or its
    /// installed systemd-stub.
    Host,
    /// Explicit files: a kernel image (plus its modules directory) or a stub.
    Path {
        path: PathBuf,
        modules: Option<PathBuf>,
    },
    /// A Debian package, fetched with the system's `apt-get download`.
    DebPackage { name: String },
    /// A `.deb` file on disk.
    DebFile { path: PathBuf },
}

/// `[target] kernel`: the kernel a host image is made for, which decides
/// the build's target writer ([`crate::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetKernel {
    /// Linux: an initramfs (cpio, zstd) in a UKI, a GPT disk and a PXE set.
    #[default]
    Linux,
}

impl TargetKernel {
    /// The value a profile gives for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKernel::Linux => "linux",
        }
    }

    /// The kernel a `[target] kernel` value names, if mkhost can build for it.
    fn parse(value: &str) -> Option<TargetKernel> {
        [TargetKernel::Linux]
            .into_iter()
            .find(|kernel| kernel.as_str() == value)
    }
}

/// When init loads a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadPolicy {
    /// Loaded by init at every boot.
    Boot,
    /// Shipped in the image; loaded when hardware asks for it (coldplug) or by hand.
    OnDemand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRequest {
    pub name: String,
    pub load: LoadPolicy,
    pub origin: Origin,
}

/// An extra file placed in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    pub dest: String,
    pub content: FileContent,
    pub mode: u32,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Source(PathBuf),
    Inline(String),
}

/// An extra executable; it brings its shared-library closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraBinary {
    pub source: PathBuf,
    pub dest: String,
    pub origin: Origin,
}

/// A container hostd starts at boot (a `[[container]]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// What hostd is asked to run; `name` is always set. Checked with
    /// [`RunRequest::validate`]. For a pulled image, `image` is the
    /// reference's canonical form.
    pub request: RunRequest,
    /// The image archive on the build host (relative paths resolved against
    /// the directory of the profile file that names it). For an image
    /// pulled at build time it is empty here, and the build's pull stage
    /// sets it to the OCI layout tar it made ([`crate::pull`]); for one
    /// pulled at boot it stays empty.
    pub archive: PathBuf,
    /// Set when the table has no `archive`: the image comes from its
    /// registry.
    pub pull: Option<PullSpec>,
    /// The `[[container]]` table.
    pub origin: Origin,
    /// The `archive` value (the `image` value for a pulled image).
    pub archive_origin: Origin,
    /// The `image` value.
    pub image_origin: Origin,
}

impl ContainerSpec {
    /// The container's name.
    pub fn name(&self) -> &str {
        self.request.name.as_deref().unwrap_or_default()
    }

    /// True when hostd pulls the image at boot (nothing is embedded).
    pub fn pulled_at_boot(&self) -> bool {
        self.pull.as_ref().is_some_and(|p| p.when == PullWhen::Boot)
    }
}

/// An image a container names by reference, without an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSpec {
    /// The parsed `image`.
    pub reference: Reference,
    /// Who pulls it.
    pub when: PullWhen,
}

/// `pull = "build"` (the default without `archive`) or `"boot"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullWhen {
    /// mkhost pulls it and embeds it as an OCI layout tar.
    Build,
    /// hostd pulls it at boot when its store lacks it.
    Boot,
}

impl PullWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            PullWhen::Build => "build",
            PullWhen::Boot => "boot",
        }
    }
}

/// A fully resolved, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// The profile file and every file it extends, leaf first.
    pub files_chain: Vec<PathBuf>,
    pub description: String,
    pub hostname: String,
    pub debug_shell: bool,
    pub kernel: Source,
    pub stub: Source,
    /// Kernel command line exactly as it goes into the UKI and boot.ipxe.
    pub cmdline: String,
    pub min_ram_mib: u64,
    pub ram_headroom_mib: u64,
    pub modules: Vec<ModuleRequest>,
    /// Every module set the profile chain defines (used or not), by name:
    /// the image names them when a device needs a module it lacks.
    pub module_sets: BTreeMap<String, Vec<String>>,
    pub files: Vec<ExtraFile>,
    pub binaries: Vec<ExtraBinary>,
    pub compression_level: i32,
    /// Kernel tunables init writes under /proc/sys at boot.
    pub sysctl: BTreeMap<String, String>,
    pub network: Network,
    /// `[container_networks.NAME]`: hostd's container networks.
    pub container_networks: BTreeMap<String, mkhost_shared::network::NetworkSpec>,
    /// Per-machine identities for netboot, keyed by MAC address.
    pub machines: Vec<Machine>,
    pub unknown_machines: UnknownMachines,
    /// Where the debug shell's busybox comes from on the build host.
    pub busybox: PathBuf,
    /// Containers hostd imports and starts at boot, in profile order.
    pub containers: Vec<ContainerSpec>,
    /// `[registries]`: for the build's pulls and, as they are (never with
    /// credentials), the image's defaults in boot.json. `ca` holds the PEM
    /// text of `ca_file`.
    pub registries: RegistrySettings,
    /// The `[registries]` table that set them last, for messages.
    pub registries_origin: Option<Origin>,
    /// `[state]`: the state disk (boot.json's; host.toml and the command
    /// line override it). `None`: state in RAM.
    pub state: Option<mkhost_shared::state_disk::StateConfig>,
    /// `[docker] tls_dir`: the server side of the Docker API's mutual TLS,
    /// checked ([`crate::certs::check_server_dir`]), and where it was set.
    /// `None`: the image has no TCP listener unless host.toml gives one.
    pub docker_tls: Option<(crate::certs::ServerTls, Origin)>,
    /// `[secure_boot]`: the db key and certificate that sign the UKI,
    /// checked when the profile is read, and where they were set. `None`:
    /// the image is not signed.
    pub secure_boot: Option<(crate::secure_boot::SecureBoot, Origin)>,
    /// `[hostd]`: how hostd runs containers (boot.json's).
    pub hostd: mkhost_shared::boot_config::HostdConfig,
    /// `[target] kernel`: the kernel the image is for (Linux when absent).
    pub target: TargetKernel,
}

/// Network settings init applies (overridable by host.toml and `mkhost.*`):
/// the boot configuration's own type, so what the profile says is what init reads.
pub use mkhost_shared::boot_config::{NetworkConfig as Network, StaticInterface};

/// One machine of a netbooted rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Lowercase, colon-separated: `52:54:00:12:34:56`.
    pub mac: String,
    pub hostname: Option<String>,
    /// Extra kernel command-line arguments for this machine.
    pub cmdline: String,
    pub origin: Origin,
}

/// What `mkhost serve` does for a MAC address not in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownMachines {
    /// Boot it with the profile's defaults.
    #[default]
    Default,
    /// Answer 403: only listed machines boot.
    Refuse,
}

pub const DEFAULT_DHCP_TIMEOUT_MS: u64 = 10_000;

/// The largest profile or machines file read (a machines file for ten
/// thousand machines is about 1 MiB).
pub const MAX_PROFILE_BYTES: u64 = 16 * 1024 * 1024;

/// The x86 kernel's command-line buffer, terminating NUL included
/// (`COMMAND_LINE_SIZE`; Debian's kernels say 2047 usable bytes in their boot
/// header's `cmdline_size`). The kernel cuts a longer line off without a word.
pub const KERNEL_CMDLINE_SIZE: usize = 2048;

pub const DEFAULT_RAM_HEADROOM_MIB: u64 = 32;
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 9;

// ---- raw TOML shapes (one file, before merging) ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    extends: Option<Spanned<String>>,
    description: Option<String>,
    hostname: Option<Spanned<String>>,
    debug_shell: Option<bool>,
    kernel: Option<Spanned<RawSource>>,
    stub: Option<Spanned<RawSource>>,
    boot: Option<RawBoot>,
    modules: Option<RawModules>,
    #[serde(default)]
    module_sets: BTreeMap<String, RawModuleSet>,
    #[serde(default)]
    files: Vec<Spanned<RawFile>>,
    #[serde(default)]
    binaries: Vec<Spanned<RawBinary>>,
    initramfs: Option<RawInitramfs>,
    #[serde(default)]
    sysctl: BTreeMap<String, Spanned<SysctlValue>>,
    network: Option<RawNetwork>,
    #[serde(default)]
    container_networks: BTreeMap<String, Spanned<mkhost_shared::network::NetworkSpec>>,
    #[serde(default)]
    machines: BTreeMap<Spanned<String>, Spanned<RawMachine>>,
    netboot: Option<RawNetboot>,
    debug: Option<RawDebug>,
    #[serde(default)]
    container: Vec<Spanned<RawContainer>>,
    registries: Option<Spanned<RawRegistries>>,
    state: Option<Spanned<mkhost_shared::state_disk::StateConfig>>,
    docker: Option<Spanned<RawDocker>>,
    secure_boot: Option<Spanned<RawSecureBoot>>,
    hostd: Option<mkhost_shared::boot_config::HostdConfig>,
    target: Option<RawTarget>,
}

/// `[target]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    /// `"linux"` (the default); checked with [`TargetKernel::parse`].
    kernel: Option<Spanned<String>>,
}

/// `[secure_boot]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecureBoot {
    /// The db key (PEM), relative to the profile.
    key: Spanned<String>,
    /// Its certificate (PEM), relative to the profile.
    certificate: Spanned<String>,
    /// The key that signs the PCR policy (`.pcrsig`, `.pcrpkey`), PEM,
    /// relative to the profile; optional.
    pcr_key: Option<Spanned<String>>,
}

/// `[docker]`: the server side of the Docker API's mutual TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    /// A directory from `mkhost certs server`, relative to the profile.
    tls_dir: Spanned<String>,
}

/// `[registries]` as written in a profile: [`RegistrySettings`] with
/// `ca_file` instead of `ca`; `ca` and `auths` are read only to be refused
/// with the fix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistries {
    insecure: Option<Spanned<Vec<String>>>,
    mirrors: Option<Spanned<BTreeMap<String, Vec<String>>>>,
    ca_file: Option<Spanned<String>>,
    ca: Option<Spanned<toml::Value>>,
    auths: Option<Spanned<toml::Value>>,
}

/// A `[[container]]` table. `memory` and `cpus` take several TOML types, so
/// they are read as values and converted with hostd's parsers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    name: Spanned<String>,
    archive: Option<Spanned<String>>,
    image: Spanned<String>,
    pull: Option<Spanned<String>>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: Vec<Spanned<String>>,
    restart: Option<Spanned<String>>,
    memory: Option<Spanned<toml::Value>>,
    cpus: Option<Spanned<toml::Value>>,
    cpu_weight: Option<Spanned<i64>>,
    pids: Option<Spanned<i64>>,
    cpuset_cpus: Option<Spanned<String>>,
    cpuset_mems: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    workdir: Option<Spanned<String>>,
    entrypoint: Option<Vec<String>>,
    hostname: Option<Spanned<String>>,
    #[serde(default)]
    read_only: bool,
    tmpfs: Option<Spanned<BTreeMap<String, String>>>,
    cap_add: Option<Spanned<Vec<String>>>,
    cap_drop: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    network: Option<Spanned<String>>,
    /// `-p` values: `"8080:80"`, `"127.0.0.1:53:53/udp"`.
    #[serde(default)]
    publish: Vec<Spanned<String>>,
    #[serde(default)]
    network_aliases: Vec<String>,
    ip: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SysctlValue {
    Text(String),
    Number(i64),
    Flag(bool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    dhcp: Option<bool>,
    dhcp_timeout_ms: Option<u64>,
    dns: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    interfaces: BTreeMap<String, Spanned<StaticInterface>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    hostname: Option<String>,
    #[serde(default)]
    cmdline: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetboot {
    unknown_machines: Option<UnknownMachines>,
    /// A TOML file of `[machines."MAC"]` tables, relative to the profile.
    machines_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebug {
    busybox: Option<String>,
}

/// A separate machines file: only `[machines."MAC"]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachinesFile {
    #[serde(default)]
    machines: BTreeMap<Spanned<String>, Spanned<RawMachine>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SourceKind {
    Host,
    Path,
    Deb,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    source: SourceKind,
    package: Option<String>,
    path: Option<String>,
    modules: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    cmdline: Option<Spanned<String>>,
    console: Option<Spanned<Vec<Spanned<String>>>>,
    min_ram_mib: Option<Spanned<u64>>,
    ram_headroom_mib: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModules {
    #[serde(default)]
    sets: Vec<Spanned<String>>,
    #[serde(default)]
    load: Vec<Spanned<String>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModuleSet {
    /// Documentation for people reading the profile; not used by the build.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    load: Option<LoadPolicy>,
    modules: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    dest: String,
    source: Option<String>,
    contents: Option<String>,
    mode: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinary {
    source: String,
    dest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInitramfs {
    compression_level: Option<Spanned<i32>>,
}

/// One parsed file with what is needed to point at its lines.
struct LoadedFile {
    path: PathBuf,
    text: String,
    raw: RawProfile,
}

impl LoadedFile {
    fn origin(&self, span: std::ops::Range<usize>) -> Origin {
        origin_at(&self.path, &self.text, span.start)
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

fn origin_at(path: &Path, text: &str, offset: usize) -> Origin {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    Origin {
        file: path.to_path_buf(),
        line,
        column,
    }
}

/// Directories searched for profiles given by name, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(extra) = std::env::var_os("MKHOST_PROFILES") {
        dirs.extend(std::env::split_paths(&extra));
    }
    dirs.push(PathBuf::from("profiles"));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    if let Ok(shipped) = shipped.canonicalize() {
        dirs.push(shipped);
    }
    dirs
}

/// Finds a profile file from a name (`rack`) or a path (`./my.toml`). A path
/// that is there but is not a regular file (a directory, fifo, device) is an
/// error saying what it is.
pub fn locate(name_or_path: &str, dirs: &[PathBuf]) -> Result<PathBuf, ProfileError> {
    let as_path = Path::new(name_or_path);
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return if present(as_path)? {
            Ok(as_path.to_path_buf())
        } else {
            Err(ProfileError::NotFound {
                name: name_or_path.to_string(),
                searched: as_path.display().to_string(),
                available: available_profiles(dirs).join(", "),
            })
        };
    }
    for dir in dirs {
        let candidate = dir.join(format!("{name_or_path}.toml"));
        if present(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(ProfileError::NotFound {
        name: name_or_path.to_string(),
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        available: available_profiles(dirs).join(", "),
    })
}

/// Whether a profile file is at `path`: `false` when nothing is there, an
/// error when something other than a regular file (or a link to one) is.
fn present(path: &Path) -> Result<bool, ProfileError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(meta) => Err(ProfileError::Input {
            what: "profile",
            error: InputError::NotRegular {
                path: path.to_path_buf(),
                kind: input_file::kind_of(&meta.file_type()),
            },
        }),
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                || err.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(false)
        }
        Err(source) => Err(ProfileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Profile names found in the search directories, sorted.
pub fn available_profiles(dirs: &[PathBuf]) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    names.insert(stem.to_string());
                }
            }
        }
    }
    names.into_iter().collect()
}

/// Loads and resolves a profile by name or path.
pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
    let dirs = search_dirs();
    let path = locate(name_or_path, &dirs)?;
    load_path(&path, &dirs)
}

/// Loads and resolves the profile at `path`; `extends` names are searched next to
/// the extending file first, then in `dirs`.
pub fn load_path(path: &Path, dirs: &[PathBuf]) -> Result<Profile, ProfileError> {
    let mut chain: Vec<LoadedFile> = Vec::new();
    // The next file to read, and the `extends` value that named it.
    let mut next = Some((path.to_path_buf(), None::<Origin>));
    while let Some((path, named_at)) = next.take() {
        let file = read_file(&path).map_err(|err| match (named_at, err) {
            (Some(origin), ProfileError::Read { path, source }) => ProfileError::Invalid {
                origin,
                message: format!("extends: cannot read profile {}: {source}", path.display()),
            },
            (Some(origin), err @ ProfileError::Input { .. }) => ProfileError::Invalid {
                origin,
                message: format!("extends: {err}"),
            },
            (_, err) => err,
        })?;
        if let Some(parent) = &file.raw.extends {
            let mut search = vec![file.dir().to_path_buf()];
            search.extend(dirs.iter().cloned());
            let parent_path =
                locate(parent.get_ref(), &search).map_err(|err| ProfileError::Invalid {
                    origin: file.origin(parent.span()),
                    message: format!("extends: {err}"),
                })?;
            let seen = |p: &Path| same_file(p, &parent_path);
            if seen(&file.path) || chain.iter().any(|f| seen(&f.path)) {
                let mut names: Vec<String> =
                    chain.iter().map(|f| f.path.display().to_string()).collect();
                names.push(file.path.display().to_string());
                names.push(parent_path.display().to_string());
                return Err(ProfileError::Cycle {
                    origin: file.origin(parent.span()),
                    chain: names.join(" -> "),
                });
            }
            next = Some((parent_path, Some(file.origin(parent.span()))));
        }
        chain.push(file);
    }
    resolve(path, chain)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A profile or machines file's text: a regular file of at most
/// [`MAX_PROFILE_BYTES`], in UTF-8 (else the line and column of the first bad
/// byte).
fn read_text(path: &Path, what: &'static str) -> Result<String, ProfileError> {
    let bytes = input_file::read(path, MAX_PROFILE_BYTES).map_err(|err| match err {
        InputError::Io { path, source } => ProfileError::Read { path, source },
        error => ProfileError::Input { what, error },
    })?;
    String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let bytes = err.as_bytes();
        let before = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
        ProfileError::Parse {
            origin: origin_at(path, before, valid),
            message: format!(
                "not UTF-8: byte {:#04x} cannot start or continue a character here; save the file as UTF-8",
                bytes[valid]
            ),
        }
    })
}

fn read_file(path: &Path) -> Result<LoadedFile, ProfileError> {
    let text = read_text(path, "profile")?;
    let raw: RawProfile = toml::from_str(&text).map_err(|err| {
        let offset = err.span().map_or(0, |s| s.start);
        ProfileError::Parse {
            origin: origin_at(path, &text, offset),
            message: err.message().trim().to_string(),
        }
    })?;
    Ok(LoadedFile {
        path: path.to_path_buf(),
        text,
        raw,
    })
}

/// Values accumulated over the chain, root ancestor first.
#[derive(Default)]
struct Merged {
    description: Option<String>,
    hostname: Option<(String, Origin)>,
    debug_shell: Option<bool>,
    kernel: Option<(Source, Origin)>,
    stub: Option<(Source, Origin)>,
    cmdline: Option<(String, Origin)>,
    console: Option<(Vec<String>, Origin)>,
    min_ram_mib: Option<(u64, Origin)>,
    ram_headroom_mib: Option<u64>,
    compression_level: Option<(i32, Origin)>,
    sysctl: BTreeMap<String, String>,
    container_networks: BTreeMap<String, mkhost_shared::network::NetworkSpec>,
    dhcp: Option<bool>,
    dhcp_timeout_ms: Option<u64>,
    dns: Option<Vec<String>>,
    interfaces: BTreeMap<String, StaticInterface>,
    machines: BTreeMap<String, Machine>,
    unknown_machines: Option<UnknownMachines>,
    busybox: Option<PathBuf>,
    set_refs: Vec<(String, Origin)>,
    load: Vec<(String, Origin)>,
    include: Vec<(String, Origin)>,
    module_sets: BTreeMap<String, (LoadPolicy, Vec<(String, Origin)>)>,
    files: Vec<ExtraFile>,
    binaries: Vec<ExtraBinary>,
    containers: Vec<ContainerSpec>,
    registries: RegistrySettings,
    registries_origin: Option<Origin>,
    state: Option<mkhost_shared::state_disk::StateConfig>,
    docker_tls: Option<(crate::certs::ServerTls, Origin)>,
    secure_boot: Option<(crate::secure_boot::SecureBoot, Origin)>,
    hostd: Option<mkhost_shared::boot_config::HostdConfig>,
    target: Option<TargetKernel>,
}

/// `[secure_boot]`, with the key and certificate read and checked now
/// (they match, the certificate is RSA and valid, an encrypted key has its
/// password), each error naming the line that gave the file.
fn secure_boot_from_raw(
    raw: &RawSecureBoot,
    file: &LoadedFile,
) -> Result<(crate::secure_boot::SecureBoot, Origin), ProfileError> {
    let key = file.dir().join(raw.key.get_ref());
    let certificate = file.dir().join(raw.certificate.get_ref());
    let origin = file.origin(raw.key.span());
    let checked = mkhost_signing::Signer::from_files(
        &key,
        &certificate,
        crate::secure_boot::key_password().as_deref(),
        crate::secure_boot::now(),
    );
    if let Err(e) = checked {
        let at = match e {
            mkhost_signing::SigningError::Certificate { .. }
            | mkhost_signing::SigningError::Validity { .. } => file.origin(raw.certificate.span()),
            _ => origin.clone(),
        };
        return Err(ProfileError::Invalid {
            origin: at,
            message: format!("[secure_boot] {}", error_chain(&e)),
        });
    }
    let pcr_key = match &raw.pcr_key {
        None => None,
        Some(pcr_key) => {
            let path = file.dir().join(pcr_key.get_ref());
            mkhost_signing::pcr_policy::PcrSigner::from_file(
                &path,
                crate::secure_boot::key_password().as_deref(),
            )
            .map_err(|e| ProfileError::Invalid {
                origin: file.origin(pcr_key.span()),
                message: format!("[secure_boot] pcr_key: {}", error_chain(&e)),
            })?;
            Some(path)
        }
    };
    Ok((
        crate::secure_boot::SecureBoot {
            key,
            certificate,
            pcr_key,
        },
        origin,
    ))
}

/// `[target] kernel`: a kernel mkhost can build for, else an error at the
/// value saying which one it can.
fn target_kernel(value: &Spanned<String>, file: &LoadedFile) -> Result<TargetKernel, ProfileError> {
    TargetKernel::parse(value.get_ref()).ok_or_else(|| ProfileError::Invalid {
        origin: file.origin(value.span()),
        message: format!(
            "[target] kernel = {}: only {:?} is implemented; other kernels (FreeBSD, illumos) are designs, not code: see docs/backends.md",
            clip::quoted(value.get_ref()),
            TargetKernel::Linux.as_str()
        ),
    })
}

fn resolve(top: &Path, chain: Vec<LoadedFile>) -> Result<Profile, ProfileError> {
    let mut merged = Merged::default();
    for file in chain.iter().rev() {
        merge_file(&mut merged, file)?;
    }
    check_destinations(&merged)?;
    let name = top
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("profile")
        .to_string();
    let incomplete = |message: &str| ProfileError::Incomplete {
        path: top.to_path_buf(),
        message: message.to_string(),
    };
    let (kernel, _) = merged.kernel.ok_or_else(|| {
        incomplete("no [kernel] table (e.g. source = \"deb\", package = \"linux-image-amd64\")")
    })?;
    let (stub, _) = merged.stub.ok_or_else(|| {
        incomplete("no [stub] table (e.g. source = \"deb\", package = \"systemd-boot-efi\")")
    })?;
    let (min_ram_mib, _) = merged
        .min_ram_mib
        .ok_or_else(|| incomplete("[boot] min_ram_mib is not set (the RAM floor in MiB)"))?;

    let hostname = match merged.hostname {
        Some((hostname, origin)) => {
            validate_hostname(&hostname)
                .map_err(|message| ProfileError::Invalid { origin, message })?;
            hostname
        }
        None => format!("mkhost-{name}"),
    };
    let compression_level = match merged.compression_level {
        Some((level, origin)) if !(1..=22).contains(&level) => {
            return Err(ProfileError::Invalid {
                origin,
                message: format!("compression_level {level} is out of range: use 1 to 22"),
            })
        }
        Some((level, _)) => level,
        None => DEFAULT_COMPRESSION_LEVEL,
    };

    let console_parts: Vec<String> = merged
        .console
        .as_ref()
        .map(|(consoles, _)| consoles.iter().map(|c| format!("console={c}")).collect())
        .unwrap_or_default();
    let extra_parts: Vec<&str> = merged
        .cmdline
        .as_ref()
        .map(|(extra, _)| extra.split_whitespace().collect())
        .unwrap_or_default();
    let mut cmdline_parts = console_parts.clone();
    cmdline_parts.extend(extra_parts.iter().map(|p| p.to_string()));
    let cmdline = cmdline_parts.join(" ");
    check_profile_cmdline(
        &cmdline,
        &hostname,
        merged
            .cmdline
            .as_ref()
            .map(|(_, origin)| (extra_parts.join(" ").len(), origin)),
        merged
            .console
            .as_ref()
            .map(|(_, origin)| (console_parts.iter().map(|c| c.len() + 1).sum(), origin)),
        top,
    )?;

    let modules = expand_modules(
        &merged.set_refs,
        &merged.load,
        &merged.include,
        &merged.module_sets,
    )?;

    let profile = Profile {
        name,
        files_chain: chain.iter().map(|f| f.path.clone()).collect(),
        description: merged.description.unwrap_or_default(),
        hostname,
        debug_shell: merged.debug_shell.unwrap_or(false),
        kernel,
        stub,
        cmdline,
        min_ram_mib,
        ram_headroom_mib: merged.ram_headroom_mib.unwrap_or(DEFAULT_RAM_HEADROOM_MIB),
        modules,
        module_sets: merged
            .module_sets
            .iter()
            .map(|(name, (_, modules))| {
                let names = modules.iter().map(|(m, _)| m.replace('-', "_")).collect();
                (name.clone(), names)
            })
            .collect(),
        files: merged.files,
        binaries: merged.binaries,
        compression_level,
        sysctl: merged.sysctl,
        container_networks: merged.container_networks,
        network: Network {
            dhcp: merged.dhcp.unwrap_or(true),
            dhcp_timeout_ms: merged.dhcp_timeout_ms.unwrap_or(DEFAULT_DHCP_TIMEOUT_MS),
            dns: merged.dns.unwrap_or_default(),
            interfaces: merged.interfaces,
        },
        machines: merged.machines.into_values().collect(),
        unknown_machines: merged.unknown_machines.unwrap_or_default(),
        busybox: merged
            .busybox
            .unwrap_or_else(|| PathBuf::from("/bin/busybox")),
        containers: merged.containers,
        registries: merged.registries,
        registries_origin: merged.registries_origin,
        state: merged.state,
        docker_tls: merged.docker_tls,
        secure_boot: merged.secure_boot,
        hostd: merged.hostd.unwrap_or_default(),
        target: merged.target.unwrap_or_default(),
    };
    for machine in &profile.machines {
        check_machine_cmdline(&profile, machine)?;
    }
    Ok(profile)
}

/// The kernel command line of a netbooted machine as `mkhost serve` writes
/// it into the boot script: the longest line mkhost hands a kernel (the
/// UKI's `.cmdline` and the build's own `pxe/boot.ipxe` carry less).
pub fn netboot_cmdline(cmdline: &str, hostname: &str, machine_cmdline: &str) -> String {
    let mut line = format!("initrd=initramfs.img {cmdline} mkhost.hostname={hostname}");
    if !machine_cmdline.is_empty() {
        line.push(' ');
        line.push_str(machine_cmdline);
    }
    line
}

/// The most bytes of a command line the kernel keeps.
const CMDLINE_MAX: usize = KERNEL_CMDLINE_SIZE - 1;

fn too_long(bytes: usize) -> String {
    format!(
        "the kernel command line would be {bytes} bytes, over the kernel's limit of {CMDLINE_MAX} bytes ({KERNEL_CMDLINE_SIZE} bytes with the terminating NUL, x86 COMMAND_LINE_SIZE; the kernel cuts a longer line off without a word)"
    )
}

/// The profile's command line, with what mkhost adds for netboot, fits the
/// kernel's; the error names the keys that make it up, with their sizes.
fn check_profile_cmdline(
    cmdline: &str,
    hostname: &str,
    extra: Option<(usize, &Origin)>,
    console: Option<(usize, &Origin)>,
    top: &Path,
) -> Result<(), ProfileError> {
    let bytes = netboot_cmdline(cmdline, hostname, "").len();
    if bytes <= CMDLINE_MAX {
        return Ok(());
    }
    let mut parts = Vec::new();
    let mut counted = 0;
    if let Some((n, origin)) = extra {
        parts.push(format!("[boot] cmdline ({n} bytes, {origin})"));
        counted += n;
    }
    if let Some((n, origin)) = console {
        parts.push(format!("[boot] console ({n} bytes, {origin})"));
        counted += n;
    }
    parts.push(format!(
        "mkhost's own initrd=initramfs.img and mkhost.hostname={hostname} ({} bytes)",
        bytes.saturating_sub(counted)
    ));
    let message = format!(
        "{}: {}; shorten [boot] cmdline",
        too_long(bytes),
        parts.join(", ")
    );
    Err(match extra.or(console) {
        Some((_, origin)) => ProfileError::Invalid {
            origin: origin.clone(),
            message,
        },
        None => ProfileError::Incomplete {
            path: top.to_path_buf(),
            message,
        },
    })
}

/// The command line `machine` boots with (the profile's, mkhost's own
/// arguments and the machine's) fits the kernel's. For the profile's own
/// machines and those of `mkhost serve --machines`.
pub fn check_machine_cmdline(profile: &Profile, machine: &Machine) -> Result<(), ProfileError> {
    let hostname = machine.hostname.as_deref().unwrap_or(&profile.hostname);
    let bytes = netboot_cmdline(&profile.cmdline, hostname, &machine.cmdline).len();
    if bytes <= CMDLINE_MAX {
        return Ok(());
    }
    let own = bytes - profile.cmdline.len() - machine.cmdline.len();
    Err(ProfileError::Invalid {
        origin: machine.origin.clone(),
        message: format!(
            "with this machine's arguments {}: [machines.\"{}\"] cmdline ({} bytes, {}), the profile's [boot] cmdline and console ({} bytes), mkhost's own initrd=initramfs.img and mkhost.hostname={hostname} ({own} bytes); shorten the machine's cmdline",
            too_long(bytes),
            machine.mac,
            machine.cmdline.len(),
            machine.origin,
            profile.cmdline.len(),
        ),
    })
}

fn merge_file(merged: &mut Merged, file: &LoadedFile) -> Result<(), ProfileError> {
    let raw = &file.raw;
    let spanned_list = |list: &[Spanned<String>]| -> Vec<(String, Origin)> {
        list.iter()
            .map(|s| (s.get_ref().clone(), file.origin(s.span())))
            .collect()
    };
    if let Some(d) = &raw.description {
        merged.description = Some(d.clone());
    }
    if let Some(h) = &raw.hostname {
        merged.hostname = Some((h.get_ref().clone(), file.origin(h.span())));
    }
    if let Some(d) = raw.debug_shell {
        merged.debug_shell = Some(d);
    }
    if let Some(k) = &raw.kernel {
        let origin = file.origin(k.span());
        merged.kernel = Some((source_from_raw(k.get_ref(), file, &origin, true)?, origin));
    }
    if let Some(s) = &raw.stub {
        let origin = file.origin(s.span());
        merged.stub = Some((source_from_raw(s.get_ref(), file, &origin, false)?, origin));
    }
    if let Some(boot) = &raw.boot {
        if let Some(c) = &boot.cmdline {
            merged.cmdline = Some((c.get_ref().clone(), file.origin(c.span())));
        }
        if let Some(consoles) = &boot.console {
            for c in consoles.get_ref() {
                if c.get_ref().trim().is_empty() || c.get_ref().contains(char::is_whitespace) {
                    return Err(ProfileError::Invalid {
                        origin: file.origin(c.span()),
                        message: format!(
                            "console {:?} must be one device like \"ttyS0,115200\"",
                            c.get_ref()
                        ),
                    });
                }
            }
            merged.console = Some((
                consoles
                    .get_ref()
                    .iter()
                    .map(|c| c.get_ref().clone())
                    .collect(),
                file.origin(consoles.span()),
            ));
        }
        if let Some(m) = &boot.min_ram_mib {
            merged.min_ram_mib = Some((*m.get_ref(), file.origin(m.span())));
        }
        if let Some(h) = boot.ram_headroom_mib {
            merged.ram_headroom_mib = Some(h);
        }
    }
    if let Some(modules) = &raw.modules {
        merged.set_refs.extend(spanned_list(&modules.sets));
        merged.load.extend(spanned_list(&modules.load));
        merged.include.extend(spanned_list(&modules.include));
    }
    for (name, set) in &raw.module_sets {
        merged.module_sets.insert(
            name.clone(),
            (
                set.load.unwrap_or(LoadPolicy::Boot),
                spanned_list(&set.modules),
            ),
        );
    }
    for f in &raw.files {
        merged.files.push(file_from_raw(f, file)?);
    }
    for b in &raw.binaries {
        let origin = file.origin(b.span());
        let raw_bin = b.get_ref();
        let source = file.dir().join(&raw_bin.source);
        let dest = raw_bin
            .dest
            .clone()
            .unwrap_or_else(|| raw_bin.source.clone());
        let dest = validate_dest(&dest).map_err(|message| ProfileError::Invalid {
            origin: origin.clone(),
            message,
        })?;
        merged.binaries.push(ExtraBinary {
            source,
            dest,
            origin,
        });
    }
    merge_host_settings(merged, file)?;
    if let Some(registries) = &raw.registries {
        merged.registries = merged
            .registries
            .overlaid(&registries_from_raw(registries, file)?);
        merged.registries_origin = Some(file.origin(registries.span()));
    }
    if let Some(state) = &raw.state {
        // A child's [state] replaces the parent's as a whole table.
        state
            .get_ref()
            .validate()
            .map_err(|message| ProfileError::Invalid {
                origin: file.origin(state.span()),
                message: format!("[state] {message}"),
            })?;
        merged.state = Some(state.get_ref().clone());
    }
    if let Some(docker) = &raw.docker {
        // A child's [docker] replaces the parent's.
        let tls_dir = &docker.get_ref().tls_dir;
        let origin = file.origin(tls_dir.span());
        let dir = file.dir().join(tls_dir.get_ref());
        let tls = crate::certs::check_server_dir(&dir).map_err(|e| ProfileError::Invalid {
            origin: origin.clone(),
            message: format!("[docker] tls_dir: {}", error_chain(&e)),
        })?;
        merged.docker_tls = Some((tls, origin));
    }
    if let Some(hostd) = &raw.hostd {
        // A child's [hostd] replaces the parent's.
        merged.hostd = Some(hostd.clone());
    }
    if let Some(secure_boot) = &raw.secure_boot {
        // A child's [secure_boot] replaces the parent's.
        merged.secure_boot = Some(secure_boot_from_raw(secure_boot.get_ref(), file)?);
    }
    if let Some(kernel) = raw.target.as_ref().and_then(|t| t.kernel.as_ref()) {
        // A child's kernel replaces the parent's.
        merged.target = Some(target_kernel(kernel, file)?);
    }
    for c in &raw.container {
        let spec = container_from_raw(c, file)?;
        if let Some(first) = merged
            .containers
            .iter()
            .find(|other| other.name() == spec.name())
        {
            let name_origin = file.origin(c.get_ref().name.span());
            return Err(ProfileError::Invalid {
                origin: name_origin,
                message: format!(
                    "container name {:?} is already used at {} (names must be unique across the profile and the profiles it extends)",
                    spec.name(),
                    first.origin
                ),
            });
        }
        merged.containers.push(spec);
    }
    if let Some(init) = &raw.initramfs {
        if let Some(level) = &init.compression_level {
            merged.compression_level = Some((*level.get_ref(), file.origin(level.span())));
        }
    }
    Ok(())
}

/// `[sysctl]`, `[network]`, `[machines]`, `[netboot]` and `[debug]`.
fn merge_host_settings(merged: &mut Merged, file: &LoadedFile) -> Result<(), ProfileError> {
    let raw = &file.raw;
    for (key, value) in &raw.sysctl {
        let invalid = |message: String| ProfileError::Invalid {
            origin: file.origin(value.span()),
            message,
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            || key.contains("..")
        {
            return Err(invalid(format!(
                "sysctl key {key:?} is not a name like \"net.ipv4.ip_forward\""
            )));
        }
        let text = match value.get_ref() {
            SysctlValue::Text(t) => t.clone(),
            SysctlValue::Number(n) => n.to_string(),
            SysctlValue::Flag(b) => u8::from(*b).to_string(),
        };
        merged.sysctl.insert(key.clone(), text);
    }
    for (name, def) in &raw.container_networks {
        def.get_ref()
            .named(name)
            .map_err(|e| ProfileError::Invalid {
                origin: file.origin(def.span()),
                message: format!("[container_networks.{name}]: {e}"),
            })?;
        merged
            .container_networks
            .insert(name.clone(), def.get_ref().clone());
    }
    if let Some(net) = &raw.network {
        if let Some(dhcp) = net.dhcp {
            merged.dhcp = Some(dhcp);
        }
        if let Some(timeout) = net.dhcp_timeout_ms {
            merged.dhcp_timeout_ms = Some(timeout);
        }
        if let Some(dns) = &net.dns {
            for server in dns {
                if server.get_ref().parse::<std::net::IpAddr>().is_err() {
                    return Err(ProfileError::Invalid {
                        origin: file.origin(server.span()),
                        message: format!("dns server {:?} is not an IP address", server.get_ref()),
                    });
                }
            }
            merged.dns = Some(dns.iter().map(|d| d.get_ref().clone()).collect());
        }
        for (name, iface) in &net.interfaces {
            validate_static(iface.get_ref()).map_err(|message| ProfileError::Invalid {
                origin: file.origin(iface.span()),
                message: format!("interface {name}: {message}"),
            })?;
            merged
                .interfaces
                .insert(name.clone(), iface.get_ref().clone());
        }
    }
    if let Some(netboot) = &raw.netboot {
        if let Some(policy) = netboot.unknown_machines {
            merged.unknown_machines = Some(policy);
        }
        if let Some(machines_file) = &netboot.machines_file {
            let path = file.dir().join(machines_file.get_ref());
            let extra = load_machines_file(&path).map_err(|err| match err {
                ProfileError::Read { .. } | ProfileError::Input { .. } => ProfileError::Invalid {
                    origin: file.origin(machines_file.span()),
                    message: format!("machines_file: {err}"),
                },
                other => other,
            })?;
            for machine in extra {
                insert_machine(&mut merged.machines, machine)?;
            }
        }
    }
    for machine in machines_from_raw(&raw.machines, file)? {
        insert_machine(&mut merged.machines, machine)?;
    }
    if let Some(debug) = &raw.debug {
        if let Some(busybox) = &debug.busybox {
            merged.busybox = Some(file.dir().join(busybox));
        }
    }
    Ok(())
}

/// Adds a machine; a MAC listed twice in one file or in files of one chain level
/// is an error, a child profile's entry replaces its parent's.
fn insert_machine(
    machines: &mut BTreeMap<String, Machine>,
    machine: Machine,
) -> Result<(), ProfileError> {
    if let Some(previous) = machines.get(&machine.mac) {
        if previous.origin.file == machine.origin.file {
            return Err(ProfileError::Invalid {
                origin: machine.origin.clone(),
                message: format!(
                    "MAC address {} is listed twice (first at {})",
                    machine.mac, previous.origin
                ),
            });
        }
    }
    machines.insert(machine.mac.clone(), machine);
    Ok(())
}

fn machines_from_raw(
    raw: &BTreeMap<Spanned<String>, Spanned<RawMachine>>,
    file: &LoadedFile,
) -> Result<Vec<Machine>, ProfileError> {
    let mut seen: BTreeMap<String, Origin> = BTreeMap::new();
    let mut machines = Vec::new();
    for (mac, entry) in raw {
        let origin = file.origin(mac.span());
        let normalized = normalize_mac(mac.get_ref()).ok_or_else(|| ProfileError::Invalid {
            origin: origin.clone(),
            message: format!(
                "{:?} is not a MAC address (write it like \"52:54:00:12:34:56\")",
                mac.get_ref()
            ),
        })?;
        if let Some(first) = seen.get(&normalized) {
            return Err(ProfileError::Invalid {
                origin,
                message: format!("MAC address {normalized} is listed twice (first at {first})"),
            });
        }
        let raw_machine = entry.get_ref();
        if let Some(hostname) = &raw_machine.hostname {
            validate_hostname(hostname).map_err(|message| ProfileError::Invalid {
                origin: file.origin(entry.span()),
                message,
            })?;
        }
        if raw_machine.cmdline.contains(['\n', '\r']) {
            return Err(ProfileError::Invalid {
                origin: file.origin(entry.span()),
                message: "cmdline must be one line".into(),
            });
        }
        seen.insert(normalized.clone(), origin.clone());
        machines.push(Machine {
            mac: normalized,
            hostname: raw_machine.hostname.clone(),
            cmdline: raw_machine
                .cmdline
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            origin,
        });
    }
    Ok(machines)
}

/// Reads a file of `[machines."MAC"]` tables (for `[netboot] machines_file` and
/// `mkhost serve --machines`).
pub fn load_machines_file(path: &Path) -> Result<Vec<Machine>, ProfileError> {
    let text = read_text(path, "machines file")?;
    let raw: RawMachinesFile = toml::from_str(&text).map_err(|err| ProfileError::Parse {
        origin: origin_at(path, &text, err.span().map_or(0, |s| s.start)),
        message: err.message().trim().to_string(),
    })?;
    let file = LoadedFile {
        path: path.to_path_buf(),
        text,
        raw: RawProfile::default(),
    };
    machines_from_raw(&raw.machines, &file)
}

/// `52-54-00-AB-cd-EF` -> `52:54:00:ab:cd:ef`; None if it is not six hex pairs.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

fn validate_static(iface: &StaticInterface) -> Result<(), String> {
    let (addr, prefix) = iface.address.split_once('/').ok_or_else(|| {
        format!(
            "address {:?} needs a prefix length, like 10.0.0.5/24",
            iface.address
        )
    })?;
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("address {addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => {}
        _ => return Err(format!("prefix length {prefix:?} must be 0 to {max}")),
    }
    if let Some(gateway) = &iface.gateway {
        gateway
            .parse::<std::net::IpAddr>()
            .map_err(|_| format!("gateway {gateway:?} is not an IP address"))?;
    }
    Ok(())
}

fn source_from_raw(
    raw: &RawSource,
    file: &LoadedFile,
    origin: &Origin,
    is_kernel: bool,
) -> Result<Source, ProfileError> {
    let invalid = |message: String| ProfileError::Invalid {
        origin: origin.clone(),
        message,
    };
    let what = if is_kernel { "kernel" } else { "stub" };
    let extra_field = |field: &str, kind: &str| {
        invalid(format!(
            "[{what}] field `{field}` does not go with source = \"{kind}\""
        ))
    };
    match raw.source {
        SourceKind::Host => {
            if raw.package.is_some() {
                return Err(extra_field("package", "host"));
            }
            if raw.path.is_some() {
                return Err(extra_field("path", "host"));
            }
            if raw.modules.is_some() {
                return Err(extra_field("modules", "host"));
            }
            Ok(Source::Host)
        }
        SourceKind::Path => {
            if raw.package.is_some() {
                return Err(extra_field("package", "path"));
            }
            let path = raw.path.as_ref().ok_or_else(|| {
                invalid(format!(
                    "[{what}] source = \"path\" needs `path = \"...\"` (the {})",
                    if is_kernel {
                        "kernel image, e.g. /boot/vmlinuz-6.1.0-26-amd64"
                    } else {
                        "stub, e.g. /usr/lib/systemd/boot/efi/linuxx64.efi.stub"
                    }
                ))
            })?;
            let modules = match (&raw.modules, is_kernel) {
                (Some(_), false) => return Err(extra_field("modules", "path")),
                (Some(m), true) => Some(file.dir().join(m)),
                (None, _) => None,
            };
            Ok(Source::Path {
                path: file.dir().join(path),
                modules,
            })
        }
        SourceKind::Deb => {
            if raw.path.is_some() {
                return Err(extra_field("path", "deb"));
            }
            if raw.modules.is_some() {
                return Err(extra_field("modules", "deb"));
            }
            let package = raw.package.as_ref().ok_or_else(|| {
                invalid(format!(
                    "[{what}] source = \"deb\" needs `package = \"...\"` (a package name such as {:?} or a .deb file)",
                    if is_kernel { "linux-image-amd64" } else { "systemd-boot-efi" }
                ))
            })?;
            if package.ends_with(".deb") || package.contains('/') {
                Ok(Source::DebFile {
                    path: file.dir().join(package),
                })
            } else if package.is_empty()
                || !package
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                Err(invalid(format!(
                    "package {package:?} is not a Debian package name or a .deb path"
                )))
            } else {
                Ok(Source::DebPackage {
                    name: package.clone(),
                })
            }
        }
    }
}

fn file_from_raw(f: &Spanned<RawFile>, file: &LoadedFile) -> Result<ExtraFile, ProfileError> {
    let origin = file.origin(f.span());
    let raw = f.get_ref();
    let invalid = |message: String| ProfileError::Invalid {
        origin: origin.clone(),
        message,
    };
    let content = match (&raw.source, &raw.contents) {
        (Some(source), None) => FileContent::Source(file.dir().join(source)),
        (None, Some(contents)) => FileContent::Inline(contents.clone()),
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "file {:?}: give either `source` or `contents`, not both",
                raw.dest
            )))
        }
        (None, None) => {
            return Err(invalid(format!(
                "file {:?}: needs `source = \"path\"` or `contents = \"...\"`",
                raw.dest
            )))
        }
    };
    let mode = raw.mode.unwrap_or(0o644);
    if mode > 0o7777 {
        return Err(invalid(format!(
            "file {:?}: mode {mode:#o} is not a permission mode (write it like 0o644)",
            raw.dest
        )));
    }
    let dest = validate_dest(&raw.dest).map_err(invalid)?;
    Ok(ExtraFile {
        dest,
        content,
        mode,
        origin,
    })
}

/// No `[[files]]` or `[[binaries]]` entry places a path that is mkhost's own
/// ([`layout::claim`]), and no two place the same path (in one file or
/// across `extends`): both are errors at the entry, the second naming the
/// first.
fn check_destinations(merged: &Merged) -> Result<(), ProfileError> {
    let placed = merged
        .files
        .iter()
        .map(|f| (&f.dest, &f.origin, "[[files]]"))
        .chain(
            merged
                .binaries
                .iter()
                .map(|b| (&b.dest, &b.origin, "[[binaries]]")),
        );
    let mut seen: BTreeMap<&str, (&Origin, &str)> = BTreeMap::new();
    for (dest, origin, entry) in placed {
        let invalid = |message: String| ProfileError::Invalid {
            origin: origin.clone(),
            message,
        };
        if let Some(conflict) = layout::claim(dest) {
            return Err(invalid(conflict.explain(&format!("/{dest}"), entry)));
        }
        if let Some((first, first_entry)) = seen.get(dest.as_str()) {
            return Err(invalid(format!(
                "/{dest} is also placed by the {first_entry} entry at {first}; a path may be placed once (in a profile and the profiles it extends)"
            )));
        }
        seen.insert(dest, (origin, entry));
    }
    Ok(())
}

/// Checks a `[[container]]` table with hostd's rules; each error points at the
/// value at fault.
fn container_from_raw(
    c: &Spanned<RawContainer>,
    file: &LoadedFile,
) -> Result<ContainerSpec, ProfileError> {
    let raw = c.get_ref();
    let at = |span: std::ops::Range<usize>, message: String| ProfileError::Invalid {
        origin: file.origin(span),
        message,
    };
    let name = raw.name.get_ref();
    if !hostd_request::valid_name(name) {
        return Err(at(
            raw.name.span(),
            RequestError::Name(name.clone()).to_string(),
        ));
    }
    let what = format!("container {name:?}");
    let pull = match &raw.archive {
        Some(archive) => {
            if raw.image.get_ref().trim().is_empty() {
                return Err(at(
                    raw.image.span(),
                    format!(
                        "{what}: image must name an image of the archive, like \"busybox:latest\""
                    ),
                ));
            }
            if archive.get_ref().is_empty() {
                return Err(at(
                    archive.span(),
                    format!("{what}: archive must be the path of an image archive (.tar)"),
                ));
            }
            if let Some(pull) = &raw.pull {
                return Err(at(
                    pull.span(),
                    format!(
                        "{what}: pull = {} with archive: an embedded archive is not pulled; drop `archive` to pull the image by reference, or drop `pull`",
                        clip::quoted(pull.get_ref())
                    ),
                ));
            }
            None
        }
        None => {
            let when = match raw.pull.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
                None | Some(("build", _)) => PullWhen::Build,
                Some(("boot", _)) => PullWhen::Boot,
                Some((other, span)) => {
                    return Err(at(
                        span,
                        format!(
                            "{what}: pull = {} is not \"build\" (mkhost pulls the image and embeds it, the default) or \"boot\" (hostd pulls it at boot)",
                            clip::quoted(other)
                        ),
                    ))
                }
            };
            let reference = Reference::parse(raw.image.get_ref()).map_err(|e| {
                at(
                    raw.image.span(),
                    format!(
                        "{what}: {e}; without `archive` the image is pulled from its registry, so give a reference like \"docker.io/library/nginx:1.27\" (or `archive` for an image archive)"
                    ),
                )
            })?;
            Some(PullSpec { reference, when })
        }
    };
    if let Some(bad) = raw.env.iter().find(|e| !e.get_ref().contains('=')) {
        return Err(at(
            bad.span(),
            format!("{what}: {}", RequestError::Env(bad.get_ref().clone())),
        ));
    }
    let restart = match &raw.restart {
        Some(r) => r
            .get_ref()
            .parse()
            .map_err(|e: String| at(r.span(), format!("{what}: {e}")))?,
        None => hostd_request::RestartPolicy::No,
    };
    let memory = match &raw.memory {
        Some(m) => Some(
            memory_value(m.get_ref()).map_err(|e| at(m.span(), format!("{what}: memory {e}")))?,
        ),
        None => None,
    };
    let nano_cpus = match &raw.cpus {
        Some(v) => {
            Some(cpus_value(v.get_ref()).map_err(|e| at(v.span(), format!("{what}: cpus {e}")))?)
        }
        None => None,
    };
    let cpu_weight = match &raw.cpu_weight {
        Some(w) => Some(u64::try_from(*w.get_ref()).map_err(|_| {
            at(
                w.span(),
                format!("{what}: cpu_weight {}: must be 1..=10000", w.get_ref()),
            )
        })?),
        None => None,
    };
    let limits = Limits {
        memory,
        nano_cpus,
        cpu_weight,
        pids: raw.pids.as_ref().map(|p| *p.get_ref()),
        cpuset_cpus: raw.cpuset_cpus.as_ref().map(|v| v.get_ref().clone()),
        cpuset_mems: raw.cpuset_mems.as_ref().map(|v| v.get_ref().clone()),
    };
    if let Err(err) = limits.validate() {
        let span = match &err {
            RequestError::Limit { field, .. } => match *field {
                "memory" => raw.memory.as_ref().map(Spanned::span),
                "cpus" => raw.cpus.as_ref().map(Spanned::span),
                "cpu_weight" => raw.cpu_weight.as_ref().map(Spanned::span),
                "pids" => raw.pids.as_ref().map(Spanned::span),
                "cpuset_cpus" => raw.cpuset_cpus.as_ref().map(Spanned::span),
                "cpuset_mems" => raw.cpuset_mems.as_ref().map(Spanned::span),
                _ => None,
            },
            _ => None,
        };
        return Err(at(span.unwrap_or(c.span()), format!("{what}: {err}")));
    }
    let request = RunRequest {
        image: match &pull {
            Some(pull) => pull.reference.canonical(),
            None => raw.image.get_ref().clone(),
        },
        name: Some(name.clone()),
        command: raw.command.clone(),
        env: raw.env.iter().map(|e| e.get_ref().clone()).collect(),
        limits,
        restart,
        user: raw.user.as_ref().map(|u| u.get_ref().clone()),
        workdir: raw.workdir.as_ref().map(|w| w.get_ref().clone()),
        entrypoint: raw.entrypoint.clone(),
        hostname: raw.hostname.as_ref().map(|h| h.get_ref().clone()),
        read_only: raw.read_only,
        tmpfs: raw
            .tmpfs
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_default(),
        cap_add: raw
            .cap_add
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default(),
        cap_drop: raw
            .cap_drop
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default(),
        labels: raw.labels.clone(),
        auto_remove: false,
        network: raw.network.as_ref().map(|n| n.get_ref().clone()),
        publish: {
            let mut ports = Vec::new();
            for p in &raw.publish {
                ports.extend(
                    mkhost_shared::network::parse_publish(p.get_ref())
                        .map_err(|e| at(p.span(), format!("{what}: publish: {e}")))?,
                );
            }
            ports
        },
        network_aliases: raw.network_aliases.clone(),
        ip: match &raw.ip {
            Some(ip) => Some(ip.get_ref().parse().map_err(|_| {
                at(
                    ip.span(),
                    format!("{what}: ip {:?} is not an IPv4 address", ip.get_ref()),
                )
            })?),
            None => None,
        },
        pull: Default::default(),
        volumes: Vec::new(),
        // A boot-time container has nobody at a terminal.
        ..RunRequest::default()
    };
    // Everything above is what validate checks; this keeps the two in step.
    request.validate().map_err(|err| {
        let span = match &err {
            RequestError::Hostname(_) => raw.hostname.as_ref().map(Spanned::span),
            RequestError::Path {
                field: "workdir", ..
            } => raw.workdir.as_ref().map(Spanned::span),
            RequestError::Path { .. } => raw.tmpfs.as_ref().map(Spanned::span),
            RequestError::Capability {
                flag: "cap_add", ..
            } => raw.cap_add.as_ref().map(Spanned::span),
            RequestError::Capability { .. } => raw.cap_drop.as_ref().map(Spanned::span),
            RequestError::Network(_) => raw.network.as_ref().map(Spanned::span),
            RequestError::Port(_) => raw.publish.first().map(Spanned::span),
            _ => None,
        };
        at(span.unwrap_or(c.span()), format!("{what}: {err}"))
    })?;
    let (archive, archive_origin) = match &raw.archive {
        Some(archive) => (
            file.dir().join(archive.get_ref()),
            file.origin(archive.span()),
        ),
        None => (PathBuf::new(), file.origin(raw.image.span())),
    };
    Ok(ContainerSpec {
        request,
        archive,
        pull,
        origin: file.origin(c.span()),
        archive_origin,
        image_origin: file.origin(raw.image.span()),
    })
}

/// `error` and its causes, joined by `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// The largest `ca_file` read.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// `[registries]` of one file, checked with the shared rules; errors point
/// at the field at fault.
fn registries_from_raw(
    table: &Spanned<RawRegistries>,
    file: &LoadedFile,
) -> Result<RegistrySettings, ProfileError> {
    let raw = table.get_ref();
    let at = |span: std::ops::Range<usize>, message: String| ProfileError::Invalid {
        origin: file.origin(span),
        message,
    };
    if let Some(auths) = &raw.auths {
        return Err(at(
            auths.span(),
            "[registries] auths: credentials never go into a profile (the profile's registry settings go into the image); mkhost build reads them from $DOCKER_CONFIG/config.json or ~/.docker/config.json (docker login), hosts from host.toml".into(),
        ));
    }
    if let Some(ca) = &raw.ca {
        return Err(at(
            ca.span(),
            "[registries] ca: in a profile the CA comes from a file: ca_file = \"lab-ca.pem\" (PEM, relative to the profile)".into(),
        ));
    }
    let ca = match &raw.ca_file {
        Some(ca_file) => {
            let path = file.dir().join(ca_file.get_ref());
            let bytes = input_file::read(&path, MAX_CA_FILE_BYTES)
                .map_err(|e| at(ca_file.span(), format!("[registries] ca_file: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                at(
                    ca_file.span(),
                    format!(
                        "[registries] ca_file: {} is not text; give the PEM file of the CA certificate(s)",
                        path.display()
                    ),
                )
            })?;
            Some(text)
        }
        None => None,
    };
    let settings = RegistrySettings {
        insecure: raw
            .insecure
            .as_ref()
            .map(|i| i.get_ref().clone())
            .unwrap_or_default(),
        mirrors: raw
            .mirrors
            .as_ref()
            .map(|m| m.get_ref().clone())
            .unwrap_or_default(),
        ca,
        auths: BTreeMap::new(),
    };
    settings.validate().map_err(|message| {
        let span = if message.starts_with("insecure") {
            raw.insecure.as_ref().map(Spanned::span)
        } else if message.starts_with("mirrors") {
            raw.mirrors.as_ref().map(Spanned::span)
        } else {
            raw.ca_file.as_ref().map(Spanned::span)
        };
        let message = match (message.strip_prefix("ca:"), &raw.ca_file) {
            (Some(rest), Some(ca_file)) => {
                format!(
                    "[registries] ca_file {}:{rest}",
                    clip::quoted(ca_file.get_ref())
                )
            }
            _ => format!("[registries] {message}"),
        };
        at(span.unwrap_or(table.span()), message)
    })?;
    Ok(settings)
}

/// `memory`: a size with a unit (`"64M"`) or a whole number of bytes.
fn memory_value(value: &toml::Value) -> Result<i64, String> {
    match value {
        toml::Value::String(text) => hostd_request::parse_size(text),
        toml::Value::Integer(bytes) => Ok(*bytes),
        other => Err(format!(
            "must be a size like \"64M\" or a whole number of bytes, not {}",
            describe(other)
        )),
    }
}

/// `cpus`: a number (`0.5`, `2`) or the same as a string, in billionths of a CPU.
fn cpus_value(value: &toml::Value) -> Result<i64, String> {
    match value {
        toml::Value::String(text) => hostd_request::parse_cpus(text),
        toml::Value::Integer(n) => hostd_request::parse_cpus(&n.to_string()),
        // Display never uses an exponent: 0.5 -> "0.5", 1e-3 -> "0.001".
        toml::Value::Float(f) => hostd_request::parse_cpus(&f.to_string()),
        other => Err(format!(
            "must be a number of CPUs like 0.5 or 2, not {}",
            describe(other)
        )),
    }
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(_) => "a string".into(),
        toml::Value::Integer(_) => "an integer".into(),
        toml::Value::Float(_) => "a float".into(),
        toml::Value::Boolean(b) => format!("a boolean ({b})"),
        toml::Value::Datetime(_) => "a date".into(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// An absolute path inside the image, without `..`: returned without the leading `/`.
fn validate_dest(dest: &str) -> Result<String, String> {
    if dest.contains('\0') {
        return Err(format!(
            "destination {} contains a NUL byte, which no path can hold",
            clip::quoted(dest)
        ));
    }
    let trimmed = dest.trim_start_matches('/');
    if !dest.starts_with('/') || trimmed.is_empty() {
        return Err(format!(
            "destination {dest:?} must be an absolute path inside the image, like \"/etc/motd\""
        ));
    }
    if trimmed
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(format!(
            "destination {dest:?} must not contain `..`, `.` or empty components"
        ));
    }
    Ok(trimmed.to_string())
}

fn validate_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hostname {name:?} is not valid: use 1-63 characters a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

type ModuleSets = BTreeMap<String, (LoadPolicy, Vec<(String, Origin)>)>;

/// Expands module sets and the explicit lists into one request per module name.
/// A module asked for at boot anywhere is loaded at boot.
fn expand_modules(
    set_refs: &[(String, Origin)],
    load: &[(String, Origin)],
    include: &[(String, Origin)],
    sets: &ModuleSets,
) -> Result<Vec<ModuleRequest>, ProfileError> {
    let mut requests: BTreeMap<String, ModuleRequest> = BTreeMap::new();
    let mut add = |name: &str, policy: LoadPolicy, origin: &Origin| {
        let name = name.replace('-', "_");
        let entry = requests.entry(name.clone()).or_insert(ModuleRequest {
            name,
            load: policy,
            origin: origin.clone(),
        });
        if policy == LoadPolicy::Boot {
            entry.load = LoadPolicy::Boot;
        }
    };
    for (set_name, origin) in set_refs {
        let (policy, modules) = sets.get(set_name).ok_or_else(|| ProfileError::Invalid {
            origin: origin.clone(),
            message: format!(
                "unknown module set {set_name:?}; defined sets: {}",
                sets.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        for (module, module_origin) in modules {
            add(module, *policy, module_origin);
        }
    }
    for (module, origin) in load {
        add(module, LoadPolicy::Boot, origin);
    }
    for (module, origin) in include {
        add(module, LoadPolicy::OnDemand, origin);
    }
    Ok(requests.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const BASE: &str = r#"
description = "base"
[kernel]
source = "deb"
package = "linux-image-amd64"
[stub]
source = "deb"
package = "systemd-boot-efi"
[boot]
console = ["ttyS0,115200"]
cmdline = "quiet"
min_ram_mib = 128
[module_sets.virtio]
modules = ["virtio_net", "virtio-blk"]
[module_sets.nics]
load = "on-demand"
modules = ["e1000e"]
[modules]
sets = ["virtio"]
"#;

    #[test]
    fn extends_merges_lists_and_replaces_scalars() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let child = write(
            dir.path(),
            "child.toml",
            "extends = \"base\"\nhostname = \"edge-1\"\n[boot]\nmin_ram_mib = 512\n[modules]\nsets = [\"nics\"]\nload = [\"overlay\"]\n",
        );
        let p = load_path(&child, &[]).unwrap();
        assert_eq!(p.name, "child");
        assert_eq!(p.hostname, "edge-1");
        assert_eq!(p.min_ram_mib, 512);
        assert_eq!(p.cmdline, "console=ttyS0,115200 quiet");
        let names: Vec<_> = p
            .modules
            .iter()
            .map(|m| (m.name.as_str(), m.load))
            .collect();
        assert_eq!(
            names,
            vec![
                ("e1000e", LoadPolicy::OnDemand),
                ("overlay", LoadPolicy::Boot),
                ("virtio_blk", LoadPolicy::Boot),
                ("virtio_net", LoadPolicy::Boot),
            ]
        );
        assert_eq!(
            p.kernel,
            Source::DebPackage {
                name: "linux-image-amd64".into()
            }
        );
        assert_eq!(p.files_chain.len(), 2);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "typo.toml",
            "description = \"x\"\n[boot]\nmin_ram_mb = 128\n",
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("typo.toml:3:1"), "{err}");
        assert!(err.contains("min_ram_mb"), "{err}");
    }

    #[test]
    fn wrong_type_names_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "wrong.toml", "[boot]\nmin_ram_mib = \"lots\"\n");
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("wrong.toml:2:15"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn unknown_source_kind_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "s.toml", "[kernel]\nsource = \"rpm\"\n");
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("s.toml:2:10"), "{err}");
        assert!(err.contains("host") && err.contains("deb"), "{err}");
    }

    #[test]
    fn unknown_module_set_points_at_reference() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let path = write(
            dir.path(),
            "c.toml",
            "extends = \"base\"\n[modules]\nsets = [\"virtoi\"]\n",
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("c.toml:3:9"), "{err}");
        assert!(err.contains("unknown module set \"virtoi\""), "{err}");
    }

    #[test]
    fn extends_cycle_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "extends = \"b\"\n");
        write(dir.path(), "b.toml", "extends = \"a\"\n");
        let err = load_path(&dir.path().join("a.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("extends itself"), "{err}");
    }

    #[test]
    fn missing_parent_and_missing_fields_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "orphan.toml", "extends = \"nope\"\n");
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("orphan.toml:1:11") && err.contains("\"nope\" not found"),
            "{err}"
        );
        let path = write(dir.path(), "empty.toml", "description = \"e\"\n");
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("no [kernel] table"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let cases = [
            ("hostname = \"Bad_Name\"\n", "hostname \"Bad_Name\""),
            (
                "[[files]]\ndest = \"/etc/../x\"\ncontents = \"a\"\n",
                "must not contain `..`",
            ),
            ("[[files]]\ndest = \"/etc/x\"\n", "needs `source"),
            (
                "[[files]]\ndest = \"etc/x\"\ncontents = \"a\"\n",
                "must be an absolute path",
            ),
            (
                "[initramfs]\ncompression_level = 40\n",
                "compression_level 40",
            ),
            (
                "[kernel]\nsource = \"host\"\npackage = \"x\"\n",
                "does not go with source = \"host\"",
            ),
            ("[kernel]\nsource = \"path\"\n", "needs `path"),
            (
                "[stub]\nsource = \"deb\"\npackage = \"bad name\"\n",
                "not a Debian package name",
            ),
        ];
        for (i, (body, want)) in cases.iter().enumerate() {
            let path = write(
                dir.path(),
                &format!("case{i}.toml"),
                &format!("extends = \"base\"\n{body}"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(want), "case {i}: {err}");
            assert!(err.contains(&format!("case{i}.toml:")), "case {i}: {err}");
        }
    }

    #[test]
    fn paths_resolve_relative_to_the_profile_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let path = write(
            dir.path(),
            "files.toml",
            "extends = \"base\"\n[[files]]\ndest = \"/etc/motd\"\nsource = \"motd.txt\"\n[[binaries]]\nsource = \"/bin/true\"\n",
        );
        let p = load_path(&path, &[]).unwrap();
        assert_eq!(
            p.files[0].content,
            FileContent::Source(dir.path().join("motd.txt"))
        );
        assert_eq!(p.files[0].dest, "etc/motd");
        assert_eq!(p.binaries[0].dest, "bin/true");
    }

    #[test]
    fn locate_by_name_lists_available_profiles() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let dirs = vec![dir.path().to_path_buf()];
        assert!(locate("base", &dirs).is_ok());
        let err = locate("rck", &dirs).unwrap_err().to_string();
        assert!(err.contains("available profiles: base"), "{err}");
    }

    #[test]
    fn host_settings_sysctl_network_and_machines() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        write(
            dir.path(),
            "rack-a.toml",
            "[machines.\"52:54:00:00:00:0b\"]\nhostname = \"node-b\"\n",
        );
        let path = write(
            dir.path(),
            "lab.toml",
            r#"extends = "base"
[sysctl]
"net.ipv4.ip_forward" = 1
"kernel.pid_max" = "4194304"
"net.ipv6.conf.all.disable_ipv6" = false
[network]
dhcp_timeout_ms = 3000
dns = ["10.0.0.1"]
[network.interfaces.eth1]
address = "10.0.0.5/24"
gateway = "10.0.0.1"
[netboot]
unknown_machines = "refuse"
machines_file = "rack-a.toml"
[machines."52-54-00-00-00-0A"]
hostname = "node-a"
cmdline = "mkhost.ip=eth0:10.0.0.10/24:10.0.0.1"
[container_networks.bridge]
subnet = "10.200.0.0/16"
[container_networks.rack]
driver = "direct"
parent = "eth1"
"#,
        );
        let p = load_path(&path, &[]).unwrap();
        assert_eq!(
            p.container_networks["bridge"].subnet.unwrap().to_string(),
            "10.200.0.0/16"
        );
        assert_eq!(p.container_networks["rack"].parent.as_deref(), Some("eth1"));
        assert_eq!(p.sysctl["net.ipv4.ip_forward"], "1");
        assert_eq!(p.sysctl["kernel.pid_max"], "4194304");
        assert_eq!(p.sysctl["net.ipv6.conf.all.disable_ipv6"], "0");
        assert!(p.network.dhcp);
        assert_eq!(p.network.dhcp_timeout_ms, 3000);
        assert_eq!(p.network.interfaces["eth1"].address, "10.0.0.5/24");
        assert_eq!(p.unknown_machines, UnknownMachines::Refuse);
        let macs: Vec<_> = p.machines.iter().map(|m| m.mac.as_str()).collect();
        assert_eq!(macs, vec!["52:54:00:00:00:0a", "52:54:00:00:00:0b"]);
        assert_eq!(p.machines[0].hostname.as_deref(), Some("node-a"));
        assert_eq!(p.machines[1].origin.file, dir.path().join("rack-a.toml"));
    }

    #[test]
    fn bad_machine_tables_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let cases = [
            ("[machines.\"52:54:00:00:00\"]\n", "is not a MAC address"),
            (
                "[machines.\"52:54:00:00:00:01\"]\n[machines.\"52-54-00-00-00-01\"]\n",
                "listed twice",
            ),
            (
                "[machines.\"52:54:00:00:00:01\"]\nhostname = \"Bad Host\"\n",
                "not valid",
            ),
            (
                "[machines.\"52:54:00:00:00:01\"]\nhost = \"x\"\n",
                "unknown field `host`",
            ),
            (
                "[network.interfaces.eth0]\naddress = \"10.0.0.5\"\n",
                "needs a prefix",
            ),
            ("[network]\ndns = [\"resolver\"]\n", "not an IP address"),
            (
                "[netboot]\nmachines_file = \"nope.toml\"\n",
                "machines_file",
            ),
            ("[sysctl]\n\"../../etc\" = 1\n", "sysctl key"),
            (
                "[container_networks.x]\nsubnet = \"10.0.0.1/8\"\n",
                "host bits are set",
            ),
            (
                "[container_networks.x]\ndriver = \"direct\"\n",
                "needs `parent`",
            ),
            (
                "[container_networks.x]\ndriver = \"vxlan\"\n",
                "unknown variant `vxlan`",
            ),
            (
                "[container_networks.x]\nmtu = 9000\n",
                "unknown field `mtu`",
            ),
        ];
        for (i, (body, want)) in cases.iter().enumerate() {
            let path = write(
                dir.path(),
                &format!("m{i}.toml"),
                &format!("extends = \"base\"\n{body}"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(want), "case {i}: {err}");
            assert!(err.contains(&format!("m{i}.toml:")), "case {i}: {err}");
        }
    }

    #[test]
    fn containers_parse_with_hostd_rules_and_append_across_extends() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            &format!(
                "{BASE}\n[[container]]\nname = \"db\"\narchive = \"/srv/images/db.tar\"\nimage = \"postgres:16\"\n"
            ),
        );
        let path = write(
            dir.path(),
            "web.toml",
            r#"extends = "base"
[[container]]
name = "web"
archive = "images/busybox.tar"
image = "busybox:latest"
command = ["httpd", "-f"]
env = ["A=b", "EMPTY="]
restart = "on-failure:3"
memory = "64M"
cpus = 0.5
cpu_weight = 50
pids = 100
cpuset_cpus = "0-1"
cpuset_mems = "0"
user = "www:staff"
workdir = "/srv"
entrypoint = ["/bin/sh", "-c"]
hostname = "web1"
read_only = true
tmpfs = { "/run" = "size=1m" }
cap_add = ["NET_ADMIN"]
cap_drop = ["MKNOD"]
labels = { tier = "front" }
network = "front"
publish = ["8080:80", "127.0.0.1:5353:53/udp"]
network_aliases = ["www"]
ip = "172.18.0.9"

[[container]]
name = "batch"
archive = "images/busybox.tar"
image = "busybox"
memory = 67108864
cpus = "0.25"

[[container]]
name = "two"
archive = "two.tar"
image = "x"
cpus = 2
"#,
        );
        let p = load_path(&path, &[]).unwrap();
        let names: Vec<&str> = p.containers.iter().map(ContainerSpec::name).collect();
        assert_eq!(names, ["db", "web", "batch", "two"], "parent first");
        let db = &p.containers[0];
        assert_eq!(db.archive, PathBuf::from("/srv/images/db.tar"));
        assert_eq!(db.request.restart, hostd_request::RestartPolicy::No);
        assert!(db.request.limits.is_empty());
        let web = &p.containers[1];
        assert_eq!(web.archive, dir.path().join("images/busybox.tar"));
        assert_eq!(web.origin.file, path);
        assert_eq!((web.origin.line, web.archive_origin.line), (2, 4));
        assert_eq!((web.image_origin.line, web.image_origin.column), (5, 9));
        assert_eq!(
            web.request,
            RunRequest {
                image: "busybox:latest".into(),
                name: Some("web".into()),
                command: vec!["httpd".into(), "-f".into()],
                env: vec!["A=b".into(), "EMPTY=".into()],
                limits: Limits {
                    memory: Some(64 << 20),
                    nano_cpus: Some(500_000_000),
                    cpu_weight: Some(50),
                    pids: Some(100),
                    cpuset_cpus: Some("0-1".into()),
                    cpuset_mems: Some("0".into()),
                },
                restart: hostd_request::RestartPolicy::OnFailure { max: Some(3) },
                user: Some("www:staff".into()),
                workdir: Some("/srv".into()),
                entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
                hostname: Some("web1".into()),
                read_only: true,
                tmpfs: [("/run".to_string(), "size=1m".to_string())].into(),
                cap_add: vec!["NET_ADMIN".into()],
                cap_drop: vec!["MKNOD".into()],
                labels: [("tier".to_string(), "front".to_string())].into(),
                auto_remove: false,
                network: Some("front".into()),
                publish: [
                    mkhost_shared::network::parse_publish("8080:80").unwrap(),
                    mkhost_shared::network::parse_publish("127.0.0.1:5353:53/udp").unwrap(),
                ]
                .concat(),
                network_aliases: vec!["www".into()],
                ip: Some("172.18.0.9".parse().unwrap()),
                pull: Default::default(),
                volumes: Vec::new(),
                ..RunRequest::default()
            }
        );
        assert_eq!(p.containers[2].request.limits.memory, Some(64 << 20));
        assert_eq!(p.containers[2].request.limits.nano_cpus, Some(250_000_000));
        assert_eq!(
            p.containers[3].request.limits.nano_cpus,
            Some(2_000_000_000)
        );
    }

    #[test]
    fn duplicate_container_names_name_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let one = "[[container]]\nname = \"web\"\narchive = \"a.tar\"\nimage = \"a\"\n";
        write(dir.path(), "base.toml", &format!("{BASE}{one}"));
        let path = write(
            dir.path(),
            "child.toml",
            &format!("extends = \"base\"\n{one}"),
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("child.toml:3:8"), "{err}");
        assert!(
            err.contains("container name \"web\" is already used at"),
            "{err}"
        );
        assert!(err.contains("base.toml:20:1"), "{err}");
        let path = write(dir.path(), "same.toml", &format!("{BASE}{one}\n{one}"));
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("same.toml:26:8") && err.contains("same.toml:20:1"),
            "{err}"
        );
    }

    #[test]
    fn images_by_reference_are_pulled_at_build_or_boot() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        write(
            dir.path(),
            "lab-ca.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        write(
            dir.path(),
            "parent.toml",
            "extends = \"base\"\n[registries]\ninsecure = [\"10.0.2.2:5000\"]\nmirrors = { \"docker.io\" = [\"mirror.lab:5000\"] }\n",
        );
        let path = write(
            dir.path(),
            "pulls.toml",
            r#"extends = "parent"
[registries]
ca_file = "lab-ca.pem"

[[container]]
name = "web"
image = "nginx:1.27"

[[container]]
name = "lazy"
image = "10.0.2.2:5000/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
pull = "boot"
"#,
        );
        let p = load_path(&path, &[]).unwrap();
        let web = &p.containers[0];
        assert_eq!(web.request.image, "docker.io/library/nginx:1.27");
        let pull = web.pull.as_ref().unwrap();
        assert_eq!(pull.when, PullWhen::Build);
        assert_eq!(pull.reference.repository, "library/nginx");
        assert!(web.archive.as_os_str().is_empty());
        assert!(!web.pulled_at_boot());
        let lazy = &p.containers[1];
        assert!(lazy.pulled_at_boot());
        assert!(lazy
            .request
            .image
            .starts_with("10.0.2.2:5000/team/app@sha256:0000"));
        // The child's ca_file on top of the parent's insecure and mirrors.
        assert_eq!(p.registries.insecure, ["10.0.2.2:5000"]);
        assert_eq!(p.registries.mirrors["docker.io"], ["mirror.lab:5000"]);
        assert!(p
            .registries
            .ca
            .as_deref()
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        assert_eq!(p.registries_origin.as_ref().unwrap().file, path);
    }

    #[test]
    fn bad_pulls_and_registries_point_at_the_value() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        write(dir.path(), "not-pem.txt", "hello\n");
        let cases = [
            (
                "[[container]]\nname = \"web\"\nimage = \"nginx\"\npull = \"sometimes\"\n",
                "5:8",
                "pull = \"sometimes\" is not \"build\"",
            ),
            (
                "[[container]]\nname = \"web\"\narchive = \"a.tar\"\nimage = \"a\"\npull = \"boot\"\n",
                "6:8",
                "pull = \"boot\" with archive",
            ),
            (
                "[[container]]\nname = \"web\"\nimage = \"nginx@sha256:abc\"\n",
                "4:9",
                "invalid image reference \"nginx@sha256:abc\"",
            ),
            (
                "[[container]]\nname = \"web\"\nimage = \"Upper/Case\"\n",
                "4:9",
                "without `archive` the image is pulled",
            ),
            (
                "[registries]\nauths = { \"r:5000\" = { username = \"u\", password = \"p\" } }\n",
                "3:9",
                "credentials never go into a profile",
            ),
            (
                "[registries]\nca = \"-----BEGIN CERTIFICATE-----\"\n",
                "3:6",
                "ca_file = \"lab-ca.pem\"",
            ),
            (
                "[registries]\nca_file = \"missing.pem\"\n",
                "3:11",
                "[registries] ca_file: cannot read",
            ),
            (
                "[registries]\nca_file = \"not-pem.txt\"\n",
                "3:11",
                "no \"-----BEGIN CERTIFICATE-----\"",
            ),
            (
                "[registries]\ninsecure = [\"http://lab:5000\"]\n",
                "3:12",
                "[registries] insecure[0]",
            ),
            (
                "[registries]\nmirrors = { \"docker.io\" = [] }\n",
                "3:11",
                "empty list",
            ),
            ("[registries]\ninsecur = []\n", "3:1", "unknown field `insecur`"),
        ];
        for (i, (body, at, want)) in cases.iter().enumerate() {
            let path = write(
                dir.path(),
                &format!("r{i}.toml"),
                &format!("extends = \"base\"\n{body}"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("r{i}.toml:{at}")), "case {i}: {err}");
            assert!(err.contains(want), "case {i}: {err}");
        }
    }

    #[test]
    fn docker_tls_dir_is_checked_and_replaced_by_a_child() {
        use crate::certs::{self, Role};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "base.toml", BASE);
        certs::create_ca(&d.join("ca"), certs::CA_DAYS).unwrap();
        let ca = certs::load_ca(&d.join("ca")).unwrap();
        let san = ["h.example".parse().unwrap()];
        certs::issue(&ca, Role::Server, &d.join("tls"), "h", &san, 1).unwrap();
        certs::issue(&ca, Role::Server, &d.join("tls2"), "h", &san, 1).unwrap();
        let path = write(
            d,
            "good.toml",
            "extends = \"base\"\n[docker]\ntls_dir = \"tls\"\n",
        );
        let p = load_path(&path, &[]).unwrap();
        let (tls, origin) = p.docker_tls.as_ref().unwrap();
        assert_eq!(origin.to_string(), format!("{}:3:11", path.display()));
        assert_eq!(
            tls.cert,
            std::fs::read_to_string(d.join("tls/cert.pem")).unwrap()
        );
        let child = write(
            d,
            "child.toml",
            "extends = \"good\"\n[docker]\ntls_dir = \"tls2\"\n",
        );
        let p = load_path(&child, &[]).unwrap();
        assert_eq!(
            p.docker_tls.unwrap().0.cert,
            std::fs::read_to_string(d.join("tls2/cert.pem")).unwrap()
        );

        // Bad directories: each error names file:line:col of tls_dir.
        let copy = |name: &str| {
            let to = d.join(name);
            std::fs::create_dir(&to).unwrap();
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::copy(d.join("tls").join(f), to.join(f)).unwrap();
            }
            to
        };
        let with_ca_key = copy("with-ca-key");
        std::fs::copy(d.join("ca/ca-key.pem"), with_ca_key.join("ca-key.pem")).unwrap();
        let missing = copy("missing");
        std::fs::remove_file(missing.join("key.pem")).unwrap();
        let mismatched = copy("mismatched");
        std::fs::copy(d.join("tls2/key.pem"), mismatched.join("key.pem")).unwrap();
        let ca_key = copy("ca-key-as-key");
        std::fs::copy(d.join("ca/ca-key.pem"), ca_key.join("key.pem")).unwrap();
        let cases = [
            (
                "tls_dir = \"with-ca-key\"",
                "3:11",
                "holds ca-key.pem: the CA's private key never enters an image",
            ),
            ("tls_dir = \"ca\"", "3:11", "holds ca-key.pem"),
            ("tls_dir = \"missing\"", "3:11", "key.pem is missing"),
            ("tls_dir = \"mismatched\"", "3:11", "does not belong to"),
            (
                "tls_dir = \"ca-key-as-key\"",
                "3:11",
                "is the CA's own private key",
            ),
            ("tls_dir = \"nowhere\"", "3:11", "ca.pem is missing"),
            (
                "tls_dir = 5",
                "3:11",
                "invalid type: integer `5`, expected a string",
            ),
            ("tls = \"tls\"", "3:1", "unknown field `tls`"),
            ("", "2:1", "missing field `tls_dir`"),
        ];
        for (i, (body, at, want)) in cases.iter().enumerate() {
            let path = write(
                d,
                &format!("d{i}.toml"),
                &format!("extends = \"base\"\n[docker]\n{body}\n"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("d{i}.toml:{at}")), "case {i}: {err}");
            assert!(err.contains(want), "case {i}: {err}");
            assert!(!err.contains("PRIVATE KEY"), "case {i}: {err}");
        }
    }

    #[test]
    fn hostd_memory_cgroups_default_replaced_and_checked() {
        use mkhost_shared::boot_config::MemoryCgroups;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "base.toml", BASE);
        let p = load_path(&d.join("base.toml"), &[]).unwrap();
        assert_eq!(p.hostd.memory_cgroups, MemoryCgroups::Each);
        let path = write(
            d,
            "dense.toml",
            "extends = \"base\"\n[hostd]\nmemory_cgroups = \"limited\"\n",
        );
        let p = load_path(&path, &[]).unwrap();
        assert_eq!(p.hostd.memory_cgroups, MemoryCgroups::Limited);
        let child = write(d, "child.toml", "extends = \"dense\"\n[hostd]\n");
        let p = load_path(&child, &[]).unwrap();
        assert_eq!(p.hostd.memory_cgroups, MemoryCgroups::Each);

        let cases = [
            (
                "memory_cgroups = \"some\"",
                "3:18",
                "unknown variant `some`, expected `each` or `limited`",
            ),
            ("memory_cgroups = 1", "3:18", "wanted string"),
            ("memory = \"each\"", "3:1", "unknown field `memory`"),
        ];
        for (i, (body, at, want)) in cases.iter().enumerate() {
            let path = write(
                d,
                &format!("h{i}.toml"),
                &format!("extends = \"base\"\n[hostd]\n{body}\n"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("h{i}.toml:{at}")), "case {i}: {err}");
            assert!(err.contains(want), "case {i}: {err}");
        }
    }

    #[test]
    fn target_kernel_is_linux_by_default_and_when_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "base.toml", BASE);
        let p = load_path(&d.join("base.toml"), &[]).unwrap();
        assert_eq!(p.target, TargetKernel::Linux);
        let named = write(
            d,
            "named.toml",
            "extends = \"base\"\n[target]\nkernel = \"linux\"\n",
        );
        assert_eq!(load_path(&named, &[]).unwrap().target, TargetKernel::Linux);
        // An empty [target] keeps the default.
        let empty = write(d, "empty.toml", "extends = \"base\"\n[target]\n");
        assert_eq!(load_path(&empty, &[]).unwrap().target, TargetKernel::Linux);
    }

    #[test]
    fn other_target_kernels_are_refused_at_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "base.toml", BASE);
        for kernel in ["freebsd", "illumos", "Linux"] {
            let path = write(
                d,
                "bsd.toml",
                &format!("extends = \"base\"\n[target]\nkernel = \"{kernel}\"\n"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "{}:3:10: [target] kernel = \"{kernel}\": only \"linux\" is implemented; other kernels (FreeBSD, illumos) are designs, not code: see docs/backends.md",
                    path.display()
                )
            );
        }
        // A parent's refused kernel is refused even when a child names linux:
        // every file of the chain is checked.
        let parent = write(
            d,
            "bsd.toml",
            "extends = \"base\"\n[target]\nkernel = \"freebsd\"\n",
        );
        let child = write(
            d,
            "child.toml",
            "extends = \"bsd\"\n[target]\nkernel = \"linux\"\n",
        );
        let err = load_path(&child, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:3:10: ", parent.display())),
            "{err}"
        );
    }

    #[test]
    fn target_of_the_wrong_type_is_refused_at_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "base.toml", BASE);
        let cases = [
            (
                "[target]\nkernel = 1",
                "3:10",
                "invalid type: integer `1`, expected a string",
            ),
            (
                "[target]\nkernel = [\"linux\"]",
                "3:10",
                "invalid type: sequence, expected a string",
            ),
            ("[target]\nos = \"linux\"", "3:1", "unknown field `os`"),
            (
                "target = \"linux\"",
                "2:10",
                "invalid type: string \"linux\"",
            ),
        ];
        for (i, (body, at, want)) in cases.iter().enumerate() {
            let path = write(
                d,
                &format!("t{i}.toml"),
                &format!("extends = \"base\"\n{body}\n"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("t{i}.toml:{at}: ")),
                "case {i}: {err}"
            );
            assert!(err.contains(want), "case {i}: {err}");
        }
    }

    #[test]
    fn state_table_replaces_the_parents_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            &format!(
                "{BASE}[state]\ndisk = \"serial:parent\"\nformat = \"if-blank\"\nwait_ms = 500\n"
            ),
        );
        let parent = load_path(&dir.path().join("base.toml"), &[]).unwrap();
        let state = parent.state.unwrap();
        assert_eq!(state.disk, "serial:parent");
        assert_eq!(state.wait_ms, 500);
        // The child's table replaces the parent's whole: format and wait_ms
        // fall back to the defaults.
        let path = write(
            dir.path(),
            "child.toml",
            "extends = \"base\"\n[state]\ndisk = \"label:data\"\n",
        );
        let state = load_path(&path, &[]).unwrap().state.unwrap();
        assert_eq!(state.disk, "label:data");
        assert_eq!(state.format, mkhost_shared::state_disk::FormatPolicy::Never);
        assert_eq!(state.wait_ms, 10_000);
        write(dir.path(), "plain.toml", BASE);
        assert!(load_path(&dir.path().join("plain.toml"), &[])
            .unwrap()
            .state
            .is_none());
        for (i, (body, at, want)) in [
            ("[state]\ndisk = \"vdb\"\n", "2:1", "[state] state.disk"),
            (
                "[state]\nformat = \"always\"\n",
                "3:10",
                "unknown variant `always`",
            ),
            (
                "[state]\nmirror = [\"label:a\", \"serial:b\"]\n",
                "2:1",
                "does not name a whole disk",
            ),
            (
                "[state]\ndisks = \"none\"\n",
                "3:1",
                "unknown field `disks`",
            ),
        ]
        .iter()
        .enumerate()
        {
            let path = write(
                dir.path(),
                &format!("s{i}.toml"),
                &format!("extends = \"base\"\n{body}"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("s{i}.toml:{at}")), "case {i}: {err}");
            assert!(err.contains(want), "case {i}: {err}");
        }
    }

    #[test]
    fn bad_container_values_point_at_the_value() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let head = "[[container]]\nname = \"web\"\narchive = \"a.tar\"\nimage = \"a\"\n";
        // (extra line 6 of the file, position expected, text expected)
        let cases = [
            ("memroy = \"64M\"", "6:1", "unknown field `memroy`"),
            (
                "restart = \"sometimes\"",
                "6:11",
                "unknown restart policy \"sometimes\"",
            ),
            ("restart = 3", "6:11", "invalid type"),
            (
                "memory = \"4k\"",
                "6:10",
                "memory 4096: is below the minimum of 6 MiB",
            ),
            ("memory = 1024", "6:10", "is below the minimum"),
            ("memory = \"99999999999T\"", "6:10", "too large"),
            ("memory = \"64Q\"", "6:10", "unknown unit"),
            ("memory = 1.5", "6:10", "must be a size like \"64M\""),
            ("memory = -5", "6:10", "is below the minimum"),
            ("cpus = true", "6:8", "must be a number of CPUs"),
            ("cpus = -1", "6:8", "is not a number of CPUs"),
            ("cpus = 0.001", "6:8", "cpus 0.001: must be at least 0.01"),
            ("cpus = \"lots\"", "6:8", "is not a number of CPUs"),
            ("cpu_weight = 0", "6:14", "cpu_weight 0: must be 1..=10000"),
            (
                "cpu_weight = -1",
                "6:14",
                "cpu_weight -1: must be 1..=10000",
            ),
            ("pids = 0", "6:8", "pids 0: must be at least 1"),
            ("cpuset_cpus = \"a-b\"", "6:15", "is not a list like 0-3,5"),
            ("cpuset_mems = \"0,\"", "6:15", "cpuset_mems"),
            (
                "env = [\"A=b\", \"JUSTNAME\"]",
                "6:15",
                "invalid environment entry \"JUSTNAME\"",
            ),
            ("command = \"httpd -f\"", "6:11", "invalid type"),
            ("hostname = \"a_b\"", "6:12", "invalid hostname \"a_b\""),
            (
                "workdir = \"srv\"",
                "6:11",
                "workdir \"srv\": expected an absolute path",
            ),
            ("tmpfs = { \"run\" = \"\" }", "6:9", "tmpfs \"run\""),
            (
                "cap_add = [\"frob\"]",
                "6:11",
                "unknown capability \"frob\"",
            ),
            (
                "cap_drop = [\"ALL\", \"x\"]",
                "6:12",
                "cap_drop: unknown capability \"x\"",
            ),
            ("read_only = \"yes\"", "6:13", "invalid type"),
            ("labels = [\"a\"]", "6:10", "invalid type"),
            ("publish = [\"8080:80:x\"]", "6:12", "not an IPv4 address"),
            ("publish = [\"70000:80\"]", "6:12", "outside 1-65535"),
            ("publish = \"8080:80\"", "6:11", "invalid type"),
            (
                "network = \"bad net\"",
                "6:11",
                "invalid network \"bad net\"",
            ),
            (
                "ip = \"10.0.0\"",
                "6:6",
                "ip \"10.0.0\" is not an IPv4 address",
            ),
        ];
        for (i, (line, at, want)) in cases.iter().enumerate() {
            let path = write(
                dir.path(),
                &format!("c{i}.toml"),
                &format!("extends = \"base\"\n{head}{line}\n"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("c{i}.toml:{at}")), "case {i}: {err}");
            assert!(err.contains(want), "case {i}: {err}");
        }
        let whole = [
            (
                "[[container]]\nname = \"-web\"\narchive = \"a.tar\"\nimage = \"a\"\n",
                "3:8",
                "invalid container name \"-web\"",
            ),
            (
                "[[container]]\nname = \"web\"\narchive = \"a.tar\"\nimage = \"\"\n",
                "5:9",
                "image must name an image",
            ),
            (
                "[[container]]\nname = \"web\"\narchive = \"a.tar\"\n",
                "2:1",
                "missing field `image`",
            ),
            (
                "[[container]]\nname = \"web\"\nimage = \"a\"\narchive = 7\n",
                "5:11",
                "invalid type",
            ),
            (
                "[[container]]\nname = \"web\"\narchive = \"a.tar\"\nimage = \"a\"\n[[files]]\ndest = \"/etc/hostd/containers.json\"\ncontents = \"{}\"\n",
                "6:1",
                "/etc/hostd/containers.json is mkhost's own (the boot-time containers hostd starts, made from the [[container]] tables)",
            ),
        ];
        for (i, (body, at, want)) in whole.iter().enumerate() {
            let path = write(
                dir.path(),
                &format!("w{i}.toml"),
                &format!("extends = \"base\"\n{body}"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("w{i}.toml:{at}")), "case {i}: {err}");
            assert!(err.contains(want), "case {i}: {err}");
        }
    }

    /// Runs `f` on another thread and fails the test if it takes more than
    /// 10 s (a read that blocks would hang the test otherwise).
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("blocked for 10 s")
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn profiles_that_are_not_regular_files_say_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        write(&d, "base.toml", BASE);
        std::fs::create_dir(d.join("sub.toml")).unwrap();
        mkfifo(&d.join("fifo.toml"));
        let socket = std::os::unix::net::UnixListener::bind(d.join("sock.toml")).unwrap();
        let cases = [
            ("\"sub\"", "is a directory"),
            ("SUB", "is a directory"),
            ("\"fifo\"", "is a fifo"),
            ("FIFO", "is a fifo"),
            ("SOCK", "is a socket"),
            ("\"/dev/null\"", "is a character device"),
            ("\"/dev/zero\"", "is a character device"),
            ("\"/proc/self/environ\"", "/proc"),
        ];
        for (i, (parent, want)) in cases.iter().enumerate() {
            // A path in `extends` is taken as it is (here: absolute).
            let parent = match *parent {
                "SUB" => format!("{:?}", d.join("sub.toml")),
                "FIFO" => format!("{:?}", d.join("fifo.toml")),
                "SOCK" => format!("{:?}", d.join("sock.toml")),
                other => other.to_string(),
            };
            let path = write(&d, &format!("e{i}.toml"), &format!("extends = {parent}\n"));
            let dirs = vec![d.clone()];
            let err = within_10s(move || load_path(&path, &dirs).unwrap_err().to_string());
            assert!(err.contains(&format!("e{i}.toml:1:11")), "case {i}: {err}");
            assert!(
                err.contains(want) && !err.contains("not found"),
                "case {i}: {err}"
            );
        }
        // Named directly, the same.
        for (name, want) in [
            ("./fifo.toml", "is a fifo"),
            ("/proc/self/environ", "/proc"),
            ("/dev/zero", "is a character device"),
        ] {
            let dirs = vec![d.clone()];
            let name = if name.starts_with('.') {
                d.join(name).display().to_string()
            } else {
                name.to_string()
            };
            let err = within_10s(move || {
                let path = locate(&name, &dirs)?;
                load_path(&path, &dirs)
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err}");
        }
        // A machines file too.
        let err = within_10s({
            let d = d.clone();
            move || {
                load_machines_file(&d.join("fifo.toml"))
                    .unwrap_err()
                    .to_string()
            }
        });
        assert!(err.contains("is a fifo"), "{err}");
        drop(socket);
    }

    #[test]
    fn huge_profiles_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_PROFILE_BYTES + 1).unwrap();
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("huge.toml") && err.contains("16 MiB"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, b"description = \"ok\"\nhostname = \"a\xffb\"\n").unwrap();
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("bad.toml:2:14"), "{err}");
        assert!(err.contains("not UTF-8") && err.contains("0xff"), "{err}");
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let long = "x".repeat(1_000_000);
        let cases = [
            format!("hostname = \"{long}\"\n"),
            format!("[boot]\nmin_ram_mib = \"{long}\"\n"),
            format!("{long} = 1\n"),
            format!("[[files]]\ndest = \"{long}\"\ncontents = \"a\"\n"),
            format!("[[binaries]]\nsource = \"/bin/{long}\"\ndest = \"etc/{long}\"\n"),
            format!("[stub]\nsource = \"deb\"\npackage = \"{long} x\"\n"),
            format!("[[container]]\nname = \"{long}\"\narchive = \"a.tar\"\nimage = \"a\"\n"),
            format!("[[container]]\nname = \"w\"\narchive = \"a.tar\"\nimage = \"a\"\nenv = [\"{long}\"]\n"),
        ];
        for (i, body) in cases.iter().enumerate() {
            let path = write(
                dir.path(),
                &format!("l{i}.toml"),
                &format!("extends = \"base\"\n{body}"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.len() < 1000, "case {i}: {} bytes", err.len());
            assert!(err.contains("bytes)"), "case {i}: {err}");
            assert!(err.contains(&format!("l{i}.toml:")), "case {i}: {err}");
        }
    }

    #[test]
    fn a_nul_in_dest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let path = write(
            dir.path(),
            "nul.toml",
            "extends = \"base\"\n[[files]]\ndest = \"/etc/a\\u0000b\"\ncontents = \"x\"\n",
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("nul.toml:2:1"), "{err}");
        assert!(err.contains("contains a NUL byte"), "{err}");
        assert!(!err.contains("`..`"), "{err}");
    }

    #[test]
    fn the_kernel_command_line_fits_the_kernels_limit() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let long = "a=b ".repeat(600);
        let path = write(
            dir.path(),
            "long.toml",
            &format!("extends = \"base\"\n[boot]\ncmdline = \"{long}\"\nconsole = [\"ttyS0,115200\", \"tty0\"]\n"),
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("2048 bytes"), "{err}");
        assert!(
            err.contains("[boot] cmdline (2399 bytes, /")
                && err.contains("long.toml:3:11), [boot] console (34 bytes, /")
                && err.contains("long.toml:4:11), mkhost's own"),
            "{err}"
        );
        assert!(err.len() < 1000, "{err}");
        // A machine's own arguments count for that machine.
        let machine = "m=1 ".repeat(500);
        let path = write(
            dir.path(),
            "machine.toml",
            &format!(
                "extends = \"base\"\n[machines.\"52:54:00:00:00:01\"]\ncmdline = \"{machine}\"\n"
            ),
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("machine.toml:2:11")
                && err.contains("[machines.\"52:54:00:00:00:01\"] cmdline (1999 bytes"),
            "{err}"
        );
        // Right at the limit is fine.
        let fits = "a".repeat(1000);
        let path = write(
            dir.path(),
            "fits.toml",
            &format!("extends = \"base\"\n[boot]\ncmdline = \"{fits}\"\n"),
        );
        assert!(load_path(&path, &[]).is_ok());
    }

    #[test]
    fn files_may_not_replace_mkhosts_own_or_each_other() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            &format!("{BASE}[[files]]\ndest = \"/etc/motd\"\ncontents = \"hi\"\n"),
        );
        let cases = [
            ("/init", "/init is mkhost's own"),
            ("/usr/bin/hostd", "/usr/bin/hostd is mkhost's own"),
            (
                "/etc/mkhost/boot.json",
                "/etc/mkhost/boot.json is mkhost's own",
            ),
            (
                "/etc/hostd/containers.json",
                "/etc/hostd/containers.json is mkhost's own",
            ),
            ("/sbin/modprobe", "/sbin/modprobe is mkhost's own"),
            (
                "/lib/modules/6.1.0-26-amd64/kernel/x.ko",
                "under /lib/modules",
            ),
            (
                "/usr/share/hostd/images/x.tar",
                "under /usr/share/hostd/images",
            ),
            ("/proc/cmdline", "under /proc"),
            ("/dev/console", "under /dev"),
            ("/usr/bin", "/usr/bin/hostd"),
            ("/init/x", "/init is mkhost's own"),
        ];
        for (i, (dest, want)) in cases.iter().enumerate() {
            let path = write(
                dir.path(),
                &format!("o{i}.toml"),
                &format!("extends = \"base\"\n[[files]]\ndest = \"{dest}\"\ncontents = \"x\"\n"),
            );
            let err = load_path(&path, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("o{i}.toml:2:1")), "case {i}: {err}");
            assert!(err.contains(want), "case {i}: {err}");
        }
        let path = write(
            dir.path(),
            "bin.toml",
            "extends = \"base\"\n[[binaries]]\nsource = \"/bin/true\"\ndest = \"/init\"\n",
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("bin.toml:2:1") && err.contains("/init is mkhost's own"),
            "{err}"
        );

        // One dest twice: in one file, across extends, a file and a binary.
        let path = write(
            dir.path(),
            "twice.toml",
            "extends = \"base\"\n[[files]]\ndest = \"/etc/a\"\ncontents = \"1\"\n[[files]]\ndest = \"//etc/a\"\ncontents = \"2\"\n",
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("twice.toml:5:1")
                && err.contains("/etc/a is also placed by the [[files]] entry at")
                && err.contains("twice.toml:2:1"),
            "{err}"
        );
        let path = write(
            dir.path(),
            "child.toml",
            "extends = \"base\"\n[[files]]\ndest = \"/etc/motd\"\ncontents = \"bye\"\n",
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("child.toml:2:1") && err.contains("base.toml:20:1"),
            "{err}"
        );
        let path = write(
            dir.path(),
            "mixed.toml",
            "extends = \"base\"\n[[binaries]]\nsource = \"/bin/true\"\ndest = \"/etc/motd\"\n",
        );
        let err = load_path(&path, &[]).unwrap_err().to_string();
        assert!(
            err.contains("mixed.toml:2:1") && err.contains("base.toml:20:1"),
            "{err}"
        );
    }

    #[test]
    fn mac_normalisation() {
        assert_eq!(
            normalize_mac("52-54-00-AB-cd-EF").as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(normalize_mac("5254.00ab.cdef"), None);
        assert_eq!(normalize_mac("52:54:00:ab:cd:eg"), None);
    }
}
