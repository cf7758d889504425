//! The settings a host boots with, from three layers: the image's
//! `boot.json`, the stick's `mkhost/host.toml`, and the kernel command line.
//!
//! Precedence: command line > host.toml > boot.json, field by field (a static
//! address is replaced per interface). `host.toml` has the shape of boot.json's
//! hostname and network settings:
//!
//! ```toml
//! hostname = "edge-7"
//!
//! [network]
//! dhcp = true
//! dhcp_timeout_ms = 5000
//! dns = ["1.1.1.1"]
//!
//! [network.interfaces.eth0]
//! address = "10.0.0.5/24"
//! gateway = "10.0.0.1"
//!
//! [container_networks.bridge]      # the default network's subnet
//! subnet = "10.200.0.0/16"
//!
//! [container_networks.rack]        # containers' own addresses on eth1
//! driver = "direct"
//! parent = "eth1"
//!
//! [registries]                     # overlays the image's, field by field
//! insecure = ["10.0.2.2:5000"]
//! ca = """-----BEGIN CERTIFICATE-----
//! ...
//! -----END CERTIFICATE-----"""
//!
//! [registries.auths."registry.lab:5000"]
//! username = "ops"
//! password = "secret"
//!
//! [state]                          # replaces the image's table whole
//! disk = "serial:S3YJNX0K"
//! format = "if-blank"
//!
//! [docker]                         # replaces the image's [docker] tls_dir
//! tls_dir = "docker-tls"           # ca.pem, cert.pem, key.pem; relative to host.toml
//! ```
//!
//! `[docker] tls_dir` is read from the ESP while it is mounted
//! ([`read_docker_tls_dir`]); init hands the three files to hostd in
//! [`mkhost_shared::paths::DOCKER_TLS`]. A directory that also holds the
//! CA's private key (`ca-key.pem`) is refused.
//!
//! [`parse_host_toml`] reports any problem with its line and column; the
//! caller ignores a broken file as a whole and boots with the other layers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;

use mkhost_shared::boot_config::BootConfig;
use mkhost_shared::network::NetworkSpec;
use mkhost_shared::registries::RegistrySettings;
use mkhost_shared::state_disk::{FormatPolicy, StateConfig};

/// The path of host.toml on the ESP.
pub const HOST_TOML: &str = "mkhost/host.toml";

/// A static IPv4 address on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAddr {
    /// The address.
    pub address: Ipv4Addr,
    /// The prefix length (0-32).
    pub prefix: u8,
    /// The default gateway through this interface.
    pub gateway: Option<Ipv4Addr>,
}

impl StaticAddr {
    /// Parses `ADDR/PREFIX` and an optional gateway.
    pub fn parse(cidr: &str, gateway: Option<&str>) -> Result<Self, String> {
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} needs a /PREFIX"))?;
        let address: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("prefix {prefix:?} is not 0-32"))?;
        let gateway = gateway
            .map(|g| {
                g.parse::<Ipv4Addr>()
                    .map_err(|_| format!("gateway {g:?} is not an IPv4 address"))
            })
            .transpose()?;
        Ok(Self {
            address,
            prefix,
            gateway,
        })
    }
}

impl std::fmt::Display for StaticAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        Ok(())
    }
}

/// `0/1`, `no/yes`, `off/on`, `false/true`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" | "y" => Some(true),
        "0" | "no" | "off" | "false" | "n" => Some(false),
        _ => None,
    }
}

/// One layer of settings; `None` leaves the lower layer's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Hostname.
    pub hostname: Option<String>,
    /// Run DHCP.
    pub dhcp: Option<bool>,
    /// DHCP wait at boot.
    pub dhcp_timeout_ms: Option<u64>,
    /// DNS servers (replaces the list).
    pub dns: Option<Vec<IpAddr>>,
    /// Static addresses (merged per interface).
    pub interfaces: Option<BTreeMap<String, StaticAddr>>,
    /// Debug shell on the console.
    pub debug_shell: Option<bool>,
    /// Container networks (replaced or added by name).
    pub container_networks: BTreeMap<String, NetworkSpec>,
    /// Registry settings (overlaid field by field).
    pub registries: Option<RegistrySettings>,
    /// The state disk's table (replaces the lower layer's whole).
    pub state: Option<StateConfig>,
    /// The state disk's selector alone (`mkhost.state=`): replaces the
    /// lower layer's `disk`, keeps its other fields.
    pub state_disk: Option<String>,
    /// The format policy alone (`mkhost.state.format=`).
    pub state_format: Option<FormatPolicy>,
    /// `[docker] tls_dir`, relative to host.toml's directory.
    pub docker_tls_dir: Option<String>,
    /// The files of `docker_tls_dir` as read from the ESP (set by the
    /// caller that read them; replaces the image's).
    pub docker_tls: Option<DockerTls>,
}

/// The server side of the Docker API's mutual TLS: the PEM files init
/// writes into [`mkhost_shared::paths::DOCKER_TLS`].
#[derive(Clone, PartialEq, Eq)]
pub struct DockerTls {
    /// `ca.pem`: the CA clients must be signed by.
    pub ca: Vec<u8>,
    /// `cert.pem`: the server's certificate.
    pub cert: Vec<u8>,
    /// `key.pem`: the server's private key (never logged).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for DockerTls {
    // Never the key's bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerTls")
            .field("ca", &self.ca.len())
            .field("cert", &self.cert.len())
            .field("key", &"<not shown>")
            .finish()
    }
}

/// Largest file of a TLS directory read.
pub const MAX_TLS_FILE: u64 = 64 * 1024;

/// Reads `ca.pem`, `cert.pem` and `key.pem` of `dir` (each at most
/// [`MAX_TLS_FILE`], PEM of the right kind). Refuses a directory holding
/// `ca-key.pem`: the CA's private key stays with whoever signs. The error
/// names the file, never its contents.
pub fn read_docker_tls_dir(dir: &std::path::Path) -> Result<DockerTls, String> {
    use std::io::Read as _;
    if std::fs::symlink_metadata(dir.join("ca-key.pem")).is_ok() {
        return Err(format!(
            "{} holds ca-key.pem, the CA's private key: refused; copy only ca.pem, cert.pem and key.pem there",
            dir.display()
        ));
    }
    let read = |name: &str, marker: &str| -> Result<Vec<u8>, String> {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() || meta.len() > MAX_TLS_FILE {
            return Err(format!(
                "{}: not a regular file of at most {MAX_TLS_FILE} bytes",
                path.display()
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_TLS_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        if !(text.contains("-----BEGIN ") && text.contains(marker)) {
            return Err(format!("{}: not a PEM {marker}", path.display()));
        }
        Ok(bytes)
    };
    let [ca, cert, key] = mkhost_shared::paths::DOCKER_TLS_FILES;
    Ok(DockerTls {
        ca: read(ca, "CERTIFICATE-----")?,
        cert: read(cert, "CERTIFICATE-----")?,
        key: read(key, "PRIVATE KEY-----")?,
    })
}

/// `[docker] tls_dir` of host.toml: relative, inside host.toml's
/// directory tree (no `..`), not empty.
fn check_tls_dir(dir: &str) -> Result<(), String> {
    let path = std::path::Path::new(dir);
    if dir.is_empty() || path.is_absolute() {
        return Err(format!(
            "{dir:?} must be a directory relative to host.toml's, like \"docker-tls\""
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "{dir:?} may not leave host.toml's directory (no ..)"
        ));
    }
    Ok(())
}

/// A problem in host.toml, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct TomlProblem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostToml {
    hostname: Option<toml::Spanned<String>>,
    network: Option<HostNetwork>,
    container_networks: Option<BTreeMap<String, toml::Spanned<NetworkSpec>>>,
    registries: Option<toml::Spanned<RegistrySettings>>,
    state: Option<toml::Spanned<StateConfig>>,
    docker: Option<HostDocker>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostDocker {
    tls_dir: toml::Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostNetwork {
    dhcp: Option<bool>,
    dhcp_timeout_ms: Option<u64>,
    dns: Option<Vec<toml::Spanned<String>>>,
    interfaces: Option<BTreeMap<String, HostInterface>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostInterface {
    address: toml::Spanned<String>,
    gateway: Option<toml::Spanned<String>>,
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn problem(text: &str, span: std::ops::Range<usize>, message: String) -> TomlProblem {
    let (line, column) = line_column(text, span.start);
    TomlProblem {
        line,
        column,
        message,
    }
}

/// Parses and checks host.toml.
pub fn parse_host_toml(text: &str) -> Result<Overrides, TomlProblem> {
    let doc: HostToml = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        problem(text, span, e.message().trim().replace('\n', " "))
    })?;
    let mut out = Overrides::default();
    if let Some(name) = doc.hostname {
        mkhost_shared::boot_config::check_hostname(name.get_ref())
            .map_err(|why| problem(text, name.span(), format!("hostname {why}")))?;
        out.hostname = Some(name.into_inner());
    }
    if let Some(net) = doc.network {
        out.dhcp = net.dhcp;
        out.dhcp_timeout_ms = net.dhcp_timeout_ms;
        if let Some(dns) = net.dns {
            let mut list = Vec::new();
            for item in dns {
                let ip = item.get_ref().parse::<IpAddr>().map_err(|_| {
                    problem(
                        text,
                        item.span(),
                        format!("{:?} is not an IP address", item.get_ref()),
                    )
                })?;
                list.push(ip);
            }
            out.dns = Some(list);
        }
        if let Some(ifaces) = net.interfaces {
            let mut map = BTreeMap::new();
            for (name, iface) in ifaces {
                let gateway = iface.gateway.as_ref();
                let addr = StaticAddr::parse(
                    iface.address.get_ref(),
                    gateway.map(|g| g.get_ref().as_str()),
                )
                .map_err(|why| {
                    let span = if why.starts_with("gateway") {
                        gateway.map_or(iface.address.span(), |g| g.span())
                    } else {
                        iface.address.span()
                    };
                    problem(text, span, format!("interface {name}: {why}"))
                })?;
                map.insert(name, addr);
            }
            out.interfaces = Some(map);
        }
    }
    for (name, def) in doc.container_networks.unwrap_or_default() {
        let spec = def.get_ref().named(&name).map_err(|e| {
            problem(
                text,
                def.span(),
                format!("[container_networks.{name}]: {e}"),
            )
        })?;
        out.container_networks.insert(name, spec);
    }
    if let Some(registries) = doc.registries {
        registries
            .get_ref()
            .validate()
            .map_err(|e| problem(text, registries.span(), format!("[registries]: {e}")))?;
        out.registries = Some(registries.into_inner());
    }
    if let Some(state) = doc.state {
        state
            .get_ref()
            .validate()
            .map_err(|e| problem(text, state.span(), format!("[state]: {e}")))?;
        out.state = Some(state.into_inner());
    }
    if let Some(docker) = doc.docker {
        check_tls_dir(docker.tls_dir.get_ref())
            .map_err(|e| problem(text, docker.tls_dir.span(), format!("[docker] tls_dir {e}")))?;
        out.docker_tls_dir = Some(docker.tls_dir.into_inner());
    }
    Ok(out)
}

/// Where a setting came from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The image (boot.json) or the built-in default.
    Image,
    /// host.toml on the ESP.
    HostToml,
    /// The kernel command line.
    Cmdline,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Image => "image",
            Source::HostToml => "host.toml",
            Source::Cmdline => "cmdline",
        })
    }
}

/// The settings the host runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Hostname.
    pub hostname: String,
    /// Where the hostname came from.
    pub hostname_source: Source,
    /// Run DHCP on links without a static address.
    pub dhcp: bool,
    /// How long boot waits for DHCP.
    pub dhcp_timeout_ms: u64,
    /// DNS servers configured statically (DHCP adds its own).
    pub dns: Vec<IpAddr>,
    /// Static addresses by interface.
    pub interfaces: BTreeMap<String, StaticAddr>,
    /// Start the debug shell.
    pub debug_shell: bool,
    /// Container networks by name, with where each came from.
    pub container_networks: BTreeMap<String, (NetworkSpec, Source)>,
    /// Registry settings: the image's, overlaid by host.toml's.
    pub registries: RegistrySettings,
    /// The state disk; `None`: state in RAM.
    pub state: Option<StateConfig>,
    /// Where the state disk's settings came from (the last layer that
    /// touched them).
    pub state_source: Source,
    /// The Docker API's TLS files from host.toml; `None`: the image's
    /// (if it has any).
    pub docker_tls: Option<DockerTls>,
}

impl Settings {
    /// The image's settings (boot.json). Unusable entries (a bad address or DNS
    /// server) are left out and returned as warnings.
    pub fn from_boot_config(boot: &BootConfig) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut dns = Vec::new();
        for d in &boot.network.dns {
            match d.parse() {
                Ok(ip) => dns.push(ip),
                Err(_) => warnings.push(format!("boot.json: dns {d:?} is not an IP address")),
            }
        }
        let mut interfaces = BTreeMap::new();
        for (name, iface) in &boot.network.interfaces {
            match StaticAddr::parse(&iface.address, iface.gateway.as_deref()) {
                Ok(addr) => {
                    interfaces.insert(name.clone(), addr);
                }
                Err(why) => warnings.push(format!("boot.json: interface {name}: {why}")),
            }
        }
        let mut container_networks = BTreeMap::new();
        for (name, def) in &boot.container_networks {
            match def.named(name) {
                Ok(spec) => {
                    container_networks.insert(name.clone(), (spec, Source::Image));
                }
                Err(e) => warnings.push(format!("boot.json: {e}")),
            }
        }
        let state = match boot.state.as_ref().map(StateConfig::validate) {
            Some(Err(e)) => {
                warnings.push(format!("boot.json: {e}; the image's [state] is ignored"));
                None
            }
            _ => boot.state.clone(),
        };
        let registries = match boot.registries.validate() {
            Ok(()) => boot.registries.clone(),
            Err(e) => {
                warnings.push(format!("boot.json: registries: {e}"));
                RegistrySettings::default()
            }
        };
        (
            Self {
                container_networks,
                registries,
                state,
                state_source: Source::Image,
                hostname: boot.hostname.clone(),
                hostname_source: Source::Image,
                dhcp: boot.network.dhcp,
                dhcp_timeout_ms: boot.network.dhcp_timeout_ms,
                dns,
                interfaces,
                debug_shell: boot.debug_shell,
                docker_tls: None,
            },
            warnings,
        )
    }

    /// Applies one layer on top.
    pub fn apply(&mut self, layer: &Overrides, source: Source) {
        if let Some(h) = &layer.hostname {
            self.hostname = h.clone();
            self.hostname_source = source;
        }
        if let Some(v) = layer.dhcp {
            self.dhcp = v;
        }
        if let Some(v) = layer.dhcp_timeout_ms {
            self.dhcp_timeout_ms = v;
        }
        if let Some(v) = &layer.dns {
            self.dns = v.clone();
        }
        if let Some(map) = &layer.interfaces {
            for (k, v) in map {
                self.interfaces.insert(k.clone(), *v);
            }
        }
        if let Some(v) = layer.debug_shell {
            self.debug_shell = v;
        }
        for (name, spec) in &layer.container_networks {
            self.container_networks
                .insert(name.clone(), (spec.clone(), source));
        }
        if let Some(registries) = &layer.registries {
            self.registries = self.registries.overlaid(registries);
        }
        if let Some(state) = &layer.state {
            self.state = Some(state.clone());
            self.state_source = source;
        }
        if let Some(disk) = &layer.state_disk {
            self.state.get_or_insert_with(StateConfig::default).disk = disk.clone();
            self.state_source = source;
        }
        if let Some(tls) = &layer.docker_tls {
            self.docker_tls = Some(tls.clone());
        }
        if let Some(format) = layer.state_format {
            self.state.get_or_insert_with(StateConfig::default).format = format;
            self.state_source = source;
        }
    }

    /// The container networks as hostd reads them ([`mkhost_shared::paths::NETWORKS`]).
    pub fn network_definitions(&self) -> mkhost_shared::network::NetworkDefinitions {
        mkhost_shared::network::NetworkDefinitions {
            networks: self
                .container_networks
                .values()
                .map(|(spec, source)| mkhost_shared::network::DefinedNetwork {
                    spec: spec.clone(),
                    origin: match source {
                        Source::Image => "profile".to_string(),
                        other => other.to_string(),
                    },
                })
                .collect(),
        }
    }

    /// boot.json, then host.toml, then the command line.
    pub fn resolve(
        boot: &BootConfig,
        host_toml: Option<&Overrides>,
        cmdline: &Overrides,
    ) -> (Self, Vec<String>) {
        let (mut settings, warnings) = Self::from_boot_config(boot);
        if let Some(layer) = host_toml {
            settings.apply(layer, Source::HostToml);
        }
        settings.apply(cmdline, Source::Cmdline);
        (settings, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mkhost_shared::boot_config::{NetworkConfig, StaticInterface};

    const EXAMPLE: &str = r#"
hostname = "edge-7"

[network]
dhcp = true
dhcp_timeout_ms = 5000
dns = ["1.1.1.1", "9.9.9.9"]

[network.interfaces.eth0]
address = "10.0.0.5/24"
gateway = "10.0.0.1"
"#;

    fn boot() -> BootConfig {
        let mut interfaces = BTreeMap::new();
        interfaces.insert(
            "eth0".to_string(),
            StaticInterface {
                address: "192.168.0.2/24".into(),
                gateway: None,
            },
        );
        interfaces.insert(
            "eth1".to_string(),
            StaticInterface {
                address: "172.16.0.2/12".into(),
                gateway: Some("172.16.0.1".into()),
            },
        );
        BootConfig {
            profile: "qemu".into(),
            kernel_release: "6.1".into(),
            hostname: "mkhost-qemu".into(),
            debug_shell: true,
            modules: vec![],
            sysctl: Default::default(),
            network: NetworkConfig {
                dhcp: true,
                dhcp_timeout_ms: 10_000,
                dns: vec!["8.8.8.8".into()],
                interfaces,
            },
            container_networks: Default::default(),
            registries: Default::default(),
            state: None,
            hostd: Default::default(),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let o = parse_host_toml(EXAMPLE).unwrap();
        assert_eq!(o.hostname.as_deref(), Some("edge-7"));
        assert_eq!(o.dhcp, Some(true));
        assert_eq!(o.dhcp_timeout_ms, Some(5000));
        assert_eq!(o.dns.as_ref().unwrap().len(), 2);
        let eth0 = o.interfaces.as_ref().unwrap()["eth0"];
        assert_eq!(eth0.to_string(), "10.0.0.5/24 via 10.0.0.1");
        assert_eq!(parse_host_toml("").unwrap(), Overrides::default());
        assert_eq!(
            parse_host_toml("# only comments\n").unwrap(),
            Overrides::default()
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = parse_host_toml("hostname = \"a\"\n[network\ndhcp = true\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().starts_with("line 2, column "), "{e}");
        let e = parse_host_toml("hostname = \"a\"\ncolour = \"red\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse_host_toml("[network]\ndhcp = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn bad_values_carry_their_position() {
        let e = parse_host_toml("hostname = \"no spaces\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 12), "{e}");
        assert!(e.message.contains("hostname"), "{e}");
        let e = parse_host_toml(
            "[network.interfaces.eth0]\naddress = \"10.0.0.5/24\"\ngateway = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (3, 11), "{e}");
        let e = parse_host_toml("[network]\ndns = [\"1.1.1.1\", \"dns.example\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 19), "{e}");
        let e = parse_host_toml("[container_networks.bridge]\nsubnet = \"10.200.0.1/16\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.column), (2, 10), "{e}");
        assert!(e.message.contains("host bits are set"), "{e}");
        let e = parse_host_toml("\n[container_networks.rack]\ndriver = \"direct\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.message.contains(
                "[container_networks.rack]: network \"rack\": a direct network needs `parent`"
            ),
            "{e}"
        );
    }

    #[test]
    fn registries_overlay_the_images_and_bad_ones_name_their_line() {
        let mut boot = boot();
        boot.registries.insecure = vec!["10.0.2.2:5000".into()];
        boot.registries.mirrors = BTreeMap::from([("docker.io".into(), vec!["m:5000".into()])]);
        let (mut settings, warnings) = Settings::from_boot_config(&boot);
        assert!(warnings.is_empty(), "{warnings:?}");
        let host = parse_host_toml(
            "[registries]\ninsecure = [\"lab:5000\"]\n[registries.auths.\"lab:5000\"]\nusername = \"ops\"\npassword = \"pw\"\n",
        )
        .unwrap();
        settings.apply(&host, Source::HostToml);
        assert_eq!(settings.registries.insecure, ["lab:5000"]);
        assert_eq!(settings.registries.mirrors["docker.io"], ["m:5000"]);
        assert_eq!(settings.registries.auths["lab:5000"].username, "ops");
        let e = parse_host_toml("hostname = \"a\"\n[registries]\ninsecure = [\"http://lab\"]\n")
            .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.message.contains("insecure[0]") && e.message.contains("scheme"),
            "{e}"
        );
        let e = parse_host_toml("[registries]\nca = 5\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    fn tls_dir(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            d.join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            d.join("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn docker_tls_dir_overrides_the_images_and_is_checked() {
        let o = parse_host_toml("hostname = \"a\"\n[docker]\ntls_dir = \"docker-tls\"\n").unwrap();
        assert_eq!(o.docker_tls_dir.as_deref(), Some("docker-tls"));
        for (text, line, want) in [
            (
                "[docker]\ntls_dir = \"/etc/x\"\n",
                2,
                "relative to host.toml",
            ),
            ("[docker]\ntls_dir = \"../x\"\n", 2, "no .."),
            ("[docker]\ntls_dir = \"\"\n", 2, "relative"),
            ("[docker]\ntls_dir = 5\n", 2, "invalid type"),
            ("\n[docker]\ntls = \"x\"\n", 3, "unknown field `tls`"),
        ] {
            let e = parse_host_toml(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }

        let dir = tempfile::tempdir().unwrap();
        let good = tls_dir(dir.path(), "good");
        let tls = read_docker_tls_dir(&good).unwrap();
        assert!(!format!("{tls:?}").contains("secret"), "{tls:?}");
        let mut layer = o;
        layer.docker_tls = Some(tls.clone());
        let (s, _) = Settings::resolve(&boot(), None, &Overrides::default());
        assert_eq!(s.docker_tls, None, "the image's, if any, is init's to find");
        let (s, _) = Settings::resolve(&boot(), Some(&layer), &Overrides::default());
        assert_eq!(s.docker_tls.as_ref(), Some(&tls));

        let with_ca_key = tls_dir(dir.path(), "with-ca-key");
        std::fs::write(with_ca_key.join("ca-key.pem"), "x").unwrap();
        let e = read_docker_tls_dir(&with_ca_key).unwrap_err();
        assert!(
            e.contains("ca-key.pem, the CA's private key: refused"),
            "{e}"
        );
        let missing = tls_dir(dir.path(), "missing");
        std::fs::remove_file(missing.join("cert.pem")).unwrap();
        let e = read_docker_tls_dir(&missing).unwrap_err();
        assert!(e.contains("cert.pem"), "{e}");
        let wrong = tls_dir(dir.path(), "wrong");
        std::fs::write(wrong.join("key.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let e = read_docker_tls_dir(&wrong).unwrap_err();
        assert!(e.contains("key.pem: not a PEM PRIVATE KEY"), "{e}");
        let big = tls_dir(dir.path(), "big");
        std::fs::write(big.join("ca.pem"), vec![b'a'; MAX_TLS_FILE as usize + 1]).unwrap();
        assert!(read_docker_tls_dir(&big).unwrap_err().contains("at most"));
    }

    #[test]
    fn container_networks_replace_the_images_by_name() {
        let mut boot = boot();
        boot.container_networks.insert(
            "bridge".into(),
            mkhost_shared::network::NetworkSpec {
                subnet: Some("10.1.0.0/16".parse().unwrap()),
                ..Default::default()
            },
        );
        boot.container_networks.insert(
            "back".into(),
            mkhost_shared::network::NetworkSpec::default(),
        );
        let host = parse_host_toml(
            "[container_networks.bridge]\nsubnet = \"10.200.0.0/16\"\n\
             [container_networks.rack]\ndriver = \"direct\"\nparent = \"eth1\"\n",
        )
        .unwrap();
        let (s, _) = Settings::resolve(&boot, Some(&host), &Overrides::default());
        let defs = s.network_definitions().networks;
        let summary: Vec<(String, String, String)> = defs
            .iter()
            .map(|d| {
                (
                    d.spec.name.clone(),
                    d.spec.subnet.map(|s| s.to_string()).unwrap_or_default(),
                    d.origin.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("back".into(), String::new(), "profile".into()),
                ("bridge".into(), "10.200.0.0/16".into(), "host.toml".into()),
                ("rack".into(), String::new(), "host.toml".into()),
            ]
        );
    }

    #[test]
    fn precedence_cmdline_over_host_toml_over_image() {
        let host = parse_host_toml(EXAMPLE).unwrap();
        let cmdline = Overrides {
            dhcp: Some(false),
            ..Overrides::default()
        };
        let (s, warnings) = Settings::resolve(&boot(), Some(&host), &cmdline);
        assert!(warnings.is_empty());
        assert_eq!(s.hostname, "edge-7");
        assert_eq!(s.hostname_source, Source::HostToml);
        assert!(!s.dhcp, "cmdline wins");
        assert_eq!(s.dhcp_timeout_ms, 5000, "host.toml wins over image");
        assert_eq!(s.dns.len(), 2);
        assert_eq!(s.interfaces["eth0"].address, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(
            s.interfaces["eth1"].address,
            Ipv4Addr::new(172, 16, 0, 2),
            "per-interface merge keeps the image's eth1"
        );
        assert!(s.debug_shell);

        let cmdline = Overrides {
            hostname: Some("from-cmdline".into()),
            debug_shell: Some(false),
            ..Overrides::default()
        };
        let (s, _) = Settings::resolve(&boot(), Some(&host), &cmdline);
        assert_eq!(s.hostname, "from-cmdline");
        assert_eq!(s.hostname_source, Source::Cmdline);
        assert!(!s.debug_shell);

        let (s, _) = Settings::resolve(&boot(), None, &Overrides::default());
        assert_eq!(s.hostname, "mkhost-qemu");
        assert_eq!(s.hostname_source, Source::Image);
        assert_eq!(s.dns, [IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))]);
    }

    #[test]
    fn state_precedence_cmdline_over_host_toml_over_image() {
        use mkhost_shared::state_disk::FormatPolicy;
        // Nothing anywhere: RAM.
        let (s, _) = Settings::resolve(&boot(), None, &Overrides::default());
        assert_eq!(s.state, None);
        let mut b = boot();
        b.state = Some(StateConfig {
            disk: "serial:image".into(),
            wait_ms: 500,
            ..StateConfig::default()
        });
        let (s, _) = Settings::resolve(&b, None, &Overrides::default());
        assert_eq!(s.state.as_ref().unwrap().disk, "serial:image");
        assert_eq!(s.state_source, Source::Image);
        // host.toml replaces the table whole (wait_ms back to the default).
        let host =
            parse_host_toml("[state]\ndisk = \"label:host\"\nformat = \"if-blank\"\n").unwrap();
        let (s, _) = Settings::resolve(&b, Some(&host), &Overrides::default());
        let state = s.state.as_ref().unwrap();
        assert_eq!(
            (state.disk.as_str(), state.format, state.wait_ms),
            ("label:host", FormatPolicy::IfBlank, 10_000)
        );
        assert_eq!(s.state_source, Source::HostToml);
        // The command line replaces the selector and the policy only.
        let cmdline = Overrides {
            state_disk: Some("serial:cmd".into()),
            state_format: Some(FormatPolicy::Never),
            ..Overrides::default()
        };
        let (s, _) = Settings::resolve(&b, Some(&host), &cmdline);
        let state = s.state.as_ref().unwrap();
        assert_eq!(
            (state.disk.as_str(), state.format),
            ("serial:cmd", FormatPolicy::Never)
        );
        assert_eq!(s.state_source, Source::Cmdline);
        // A selector on the command line alone is enough.
        let (s, _) = Settings::resolve(&boot(), None, &cmdline);
        assert_eq!(s.state.unwrap().disk, "serial:cmd");
        // Bad tables name their line; a bad image table is a warning.
        let e = parse_host_toml("hostname = \"a\"\n[state]\ndisk = \"sdb\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("[state]: state.disk"), "{e}");
        let e = parse_host_toml("[state]\nformat = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        b.state = Some(StateConfig {
            disk: "vdb".into(),
            ..StateConfig::default()
        });
        let (s, warnings) = Settings::resolve(&b, None, &Overrides::default());
        assert_eq!(s.state, None);
        assert!(warnings[0].contains("state.disk"), "{warnings:?}");
    }

    #[test]
    fn bad_image_entries_become_warnings() {
        let mut b = boot();
        b.network.dns.push("nope".into());
        b.network.interfaces.insert(
            "eth2".into(),
            StaticInterface {
                address: "10.0.0.1".into(),
                gateway: None,
            },
        );
        let (s, warnings) = Settings::resolve(&b, None, &Overrides::default());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(!s.interfaces.contains_key("eth2"));
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
