//! The boot configuration the builder writes to `/etc/mkhost/boot.json` and
//! `init` reads: which profile this image is, for which kernel, its hostname, and
//! the kernel modules to load (already in dependency order).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
const HOSTNAME_MAX: usize = 64;

/// Errors reading or checking a boot configuration.
#[derive(Debug, thiserror::Error)]
pub enum BootConfigError {
    /// The file could not be read.
    #[error("cannot read boot config {path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape; serde's message carries
    /// the line and column.
    #[error("invalid boot config {path}: {source}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The JSON is well formed but a value is unusable.
    #[error("invalid boot config {path}: {field}: {reason}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending field, e.g. `hostname` or `modules[3]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The contents of `/etc/mkhost/boot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// The profile the image was built from, e.g. `qemu` or `rack`.
    pub profile: String,
    /// The kernel release the modules belong to (`uname -r`).
    pub kernel_release: String,
    /// Hostname to set at boot.
    pub hostname: String,
    /// Whether the image asks for a debug shell on the console.
    pub debug_shell: bool,
    /// Module files relative to `/lib/modules/<kernel_release>`, in load order.
    pub modules: Vec<String>,
    /// Kernel tunables to write under /proc/sys (`net.ipv4.ip_forward` -> `1`).
    #[serde(default)]
    pub sysctl: std::collections::BTreeMap<String, String>,
    /// Network settings (overridable by host.toml and `mkhost.*` parameters).
    #[serde(default)]
    pub network: NetworkConfig,
    /// Container networks by name (`[container_networks.NAME]`; host.toml
    /// replaces or adds entries by name).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub container_networks: std::collections::BTreeMap<String, crate::network::NetworkSpec>,
    /// Registry settings for pulls on the host (`[registries]` of the
    /// profile, never with credentials; host.toml overlays them).
    #[serde(default, skip_serializing_if = "is_default")]
    pub registries: crate::registries::RegistrySettings,
    /// The state disk (`[state]` of the profile; host.toml and the command
    /// line override it). `None`: state in RAM unless host.toml says more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::state_disk::StateConfig>,
    /// How hostd runs containers (`[hostd]` of the profile).
    #[serde(default, skip_serializing_if = "is_default")]
    pub hostd: HostdConfig,
}

/// `[hostd]`: how the host daemon runs containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostdConfig {
    /// Which containers get a memory cgroup of their own.
    #[serde(default)]
    pub memory_cgroups: MemoryCgroups,
}

/// Which containers get a memory cgroup of their own. Linux keeps, for
/// every memory cgroup, a slot per superblock of the host (the shrinker
/// arrays), so per-container memory cgroups cost memory that grows with
/// containers x containers: `limited` is for hosts of many thousands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryCgroups {
    /// Every container (Docker's way): each has its `memory.current`
    /// (`docker stats`) and its own OOM kill count.
    #[default]
    Each,
    /// Only containers with a memory limit; the others share one memory
    /// cgroup (`hostd/shared`), keeping their own cpu and pids cgroups.
    Limited,
}

impl MemoryCgroups {
    /// The word of the profile and of `hostd --memory-cgroups`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryCgroups::Each => "each",
            MemoryCgroups::Limited => "limited",
        }
    }

    /// Parses [`Self::as_str`]'s words.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "each" => Some(MemoryCgroups::Each),
            "limited" => Some(MemoryCgroups::Limited),
            _ => None,
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Network settings of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Run DHCPv4 on wired links with carrier that have no static address.
    #[serde(default = "default_true")]
    pub dhcp: bool,
    /// How long to wait for a first lease before declaring the host ready.
    #[serde(default = "default_dhcp_timeout_ms")]
    pub dhcp_timeout_ms: u64,
    /// DNS servers for /etc/resolv.conf, besides those DHCP hands out.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Static addresses by interface name.
    #[serde(default)]
    pub interfaces: std::collections::BTreeMap<String, StaticInterface>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            dhcp: true,
            dhcp_timeout_ms: default_dhcp_timeout_ms(),
            dns: Vec::new(),
            interfaces: std::collections::BTreeMap::new(),
        }
    }
}

/// A static address on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticInterface {
    /// `ADDRESS/PREFIX`, e.g. `10.0.0.5/24`.
    pub address: String,
    /// Default gateway reached through this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_dhcp_timeout_ms() -> u64 {
    10_000
}

impl BootConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, BootConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| BootConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, BootConfigError> {
        let config: Self = serde_json::from_str(text).map_err(|source| BootConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks values serde cannot: a usable hostname, a kernel release that is a
    /// single path component, and module paths that stay inside the module tree.
    pub fn validate(&self, path: &Path) -> Result<(), BootConfigError> {
        let invalid = |field: &str, reason: &str| BootConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason: reason.to_string(),
        };
        if let Err(reason) = check_hostname(&self.hostname) {
            return Err(invalid("hostname", reason));
        }
        if self.kernel_release.is_empty()
            || self.kernel_release.contains('/')
            || self.kernel_release.starts_with('.')
        {
            return Err(invalid(
                "kernel_release",
                "must be a non-empty name without '/' that does not start with '.'",
            ));
        }
        if self.profile.is_empty() {
            return Err(invalid("profile", "must not be empty"));
        }
        for (i, module) in self.modules.iter().enumerate() {
            if let Err(reason) = check_module_path(module) {
                return Err(invalid(&format!("modules[{i}]"), reason));
            }
        }
        Ok(())
    }

    /// The absolute path of module file `rel` below `root` (`/` on a real boot).
    pub fn module_path(&self, root: &Path, rel: &str) -> PathBuf {
        root.join("lib/modules")
            .join(&self.kernel_release)
            .join(rel)
    }
}

/// Checks a hostname: 1-64 letters, digits, `-` and `.`.
pub fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > HOSTNAME_MAX {
        return Err("must be 1 to 64 characters");
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok {
        return Err("may only contain letters, digits, '-' and '.'");
    }
    Ok(())
}

fn check_module_path(rel: &str) -> Result<(), &'static str> {
    if rel.is_empty() {
        return Err("must not be empty");
    }
    let path = Path::new(rel);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("must be a relative path without '.' or '..' components");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"profile":"qemu","kernel_release":"6.1.0-56-amd64",
        "hostname":"mkhost-qemu","debug_shell":false,
        "modules":["kernel/drivers/virtio/virtio.ko","kernel/drivers/net/virtio_net.ko"]}"#;

    fn parse(text: &str) -> Result<BootConfig, BootConfigError> {
        BootConfig::parse(text, Path::new("/etc/mkhost/boot.json"))
    }

    #[test]
    fn parses_good_file() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.profile, "qemu");
        assert_eq!(config.kernel_release, "6.1.0-56-amd64");
        assert_eq!(config.hostname, "mkhost-qemu");
        assert!(!config.debug_shell);
        assert_eq!(config.modules.len(), 2);
        assert_eq!(
            config.module_path(Path::new("/"), &config.modules[0]),
            Path::new("/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko")
        );
    }

    #[test]
    fn loads_from_file_and_names_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.json");
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(BootConfig::load(&path).unwrap().profile, "qemu");
        let missing = dir.path().join("nope.json");
        let err = BootConfig::load(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.json"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_position() {
        let text = "{\"profile\":\"qemu\",\n\"kernel_release\":\"6.1\",\n\"colour\":\"red\"}";
        let err = parse(text).unwrap_err();
        assert!(matches!(err, BootConfigError::Parse { .. }));
        let msg = err.to_string();
        assert!(msg.contains("/etc/mkhost/boot.json"), "{msg}");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn wrong_type_mentions_line() {
        let text = GOOD.replace("\"debug_shell\":false", "\"debug_shell\":\"no\"");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("invalid type"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn missing_field_is_rejected() {
        let msg = parse(r#"{"profile":"qemu"}"#).unwrap_err().to_string();
        assert!(msg.contains("missing field"), "{msg}");
    }

    #[test]
    fn module_paths_must_stay_inside_the_tree() {
        for bad in ["../../etc/shadow", "/abs/x.ko", "", "./x.ko", "a/../b.ko"] {
            let text = GOOD.replace("kernel/drivers/virtio/virtio.ko", bad);
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("modules[0]"), "{bad}: {msg}");
        }
    }

    #[test]
    fn hostname_and_release_are_checked() {
        let msg = parse(&GOOD.replace("mkhost-qemu", "bad host"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("hostname"), "{msg}");
        let msg = parse(&GOOD.replace("6.1.0-56-amd64", "../x"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("kernel_release"), "{msg}");
    }

    #[test]
    fn roundtrips_through_json() {
        let config = parse(GOOD).unwrap();
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(parse(&text).unwrap(), config);
    }
}
