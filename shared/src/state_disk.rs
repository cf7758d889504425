//! The state disk: which disk keeps a host's images, containers, volumes
//! and logs across reboots (`[state]` in a profile, `mkhost/host.toml`, or
//! `mkhost.state=` on the kernel command line), and what init found and
//! did with it ([`StateReport`] at [`crate::paths::STATE_REPORT`], which
//! hostd's status and the ready line show).
//!
//! ```toml
//! [state]
//! disk = "label:mkhost-state"   # the default; also type:GUID, serial:S, wwn:W, path:/dev/X
//! format = "if-blank"           # or "never" (the default): format only a blank disk
//! filesystem = "ext4"           # for formatting; an existing xfs is mounted too
//! mirror = ["serial:S1", "serial:S2"]  # optional: md RAID 1 of two whole disks
//! wait_ms = 10000               # how long boot waits for the disk to appear
//! ```
//!
//! Without `[state]`, or with `disk = "none"`, everything stays in RAM.

use serde::{Deserialize, Serialize};

/// The default partition label of a state disk.
pub const DEFAULT_LABEL: &str = "mkhost-state";

/// How to find the state disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The disk or partition: `label:NAME` (a GPT partition name),
    /// `type:GUID` (a GPT partition type), `serial:S` or `wwn:W` (a whole
    /// disk), `path:/dev/X`, or `none` (RAM only).
    #[serde(default = "default_disk")]
    pub disk: String,
    /// When init may create a file system: never, or only on a blank disk.
    #[serde(default)]
    pub format: FormatPolicy,
    /// The file system init creates when it formats.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// Two whole disks (selectors as in `disk`, no `label:`/`type:`) for an
    /// md RAID 1 mirror instead of `disk`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror: Vec<String>,
    /// How long boot waits for the disk(s) to appear, in milliseconds.
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            disk: default_disk(),
            format: FormatPolicy::default(),
            filesystem: Filesystem::default(),
            mirror: Vec::new(),
            wait_ms: default_wait_ms(),
        }
    }
}

fn default_disk() -> String {
    format!("label:{DEFAULT_LABEL}")
}

fn default_wait_ms() -> u64 {
    10_000
}

/// When init may format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormatPolicy {
    /// Never: a disk without a file system is reported, not touched.
    #[default]
    Never,
    /// Only a disk (or partition) with no partition table, file system or
    /// RAID signature.
    IfBlank,
}

/// The file system of the state disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// ext4 (created by init when formatting).
    #[default]
    Ext4,
    /// xfs (mounted when present; not created).
    Xfs,
}

/// A parsed disk selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSelector {
    /// No state disk.
    None,
    /// A GPT partition name.
    Label(String),
    /// A GPT partition type GUID (lowercase).
    Type(String),
    /// A whole disk's serial number (`/sys/block/X/device/serial`).
    Serial(String),
    /// A whole disk's WWN (`/sys/block/X/device/wwid` or `wwn`).
    Wwn(String),
    /// A device path.
    Path(String),
}

impl DiskSelector {
    /// Parses `label:NAME`, `type:GUID`, `serial:S`, `wwn:W`, `path:/dev/X`
    /// or `none`; the error says what is accepted.
    pub fn parse(text: &str) -> Result<DiskSelector, String> {
        let accepted = "use label:NAME, type:GUID, serial:S, wwn:W, path:/dev/X or none";
        if text == "none" {
            return Ok(DiskSelector::None);
        }
        let (kind, value) = text
            .split_once(':')
            .ok_or_else(|| format!("disk {text:?} has no kind; {accepted}"))?;
        if value.is_empty() {
            return Err(format!("disk {text:?} has an empty value; {accepted}"));
        }
        match kind {
            "label" => Ok(DiskSelector::Label(value.to_string())),
            "type" => {
                let guid = value.to_ascii_lowercase();
                let shape_ok = guid.len() == 36
                    && guid.chars().enumerate().all(|(i, c)| {
                        if [8, 13, 18, 23].contains(&i) {
                            c == '-'
                        } else {
                            c.is_ascii_hexdigit()
                        }
                    });
                if shape_ok {
                    Ok(DiskSelector::Type(guid))
                } else {
                    Err(format!(
                        "disk {text:?}: {value:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
                    ))
                }
            }
            "serial" => Ok(DiskSelector::Serial(value.to_string())),
            "wwn" => Ok(DiskSelector::Wwn(value.to_string())),
            "path" if value.starts_with("/dev/") && !value.contains("..") => {
                Ok(DiskSelector::Path(value.to_string()))
            }
            "path" => Err(format!(
                "disk {text:?}: a path must be under /dev/ (path:/dev/nvme0n1p3)"
            )),
            other => Err(format!("disk {text:?}: unknown kind {other:?}; {accepted}")),
        }
    }
}

impl StateConfig {
    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), String> {
        DiskSelector::parse(&self.disk).map_err(|e| format!("state.disk: {e}"))?;
        if !self.mirror.is_empty() {
            if self.mirror.len() != 2 {
                return Err(format!(
                    "state.mirror: {} disks given; a mirror is exactly two",
                    self.mirror.len()
                ));
            }
            for (i, m) in self.mirror.iter().enumerate() {
                match DiskSelector::parse(m).map_err(|e| format!("state.mirror[{i}]: {e}"))? {
                    DiskSelector::Serial(_) | DiskSelector::Wwn(_) | DiskSelector::Path(_) => {}
                    _ => {
                        return Err(format!(
                            "state.mirror[{i}]: {m:?} does not name a whole disk; use serial:, wwn: or path:"
                        ))
                    }
                }
            }
        }
        if self.wait_ms > 300_000 {
            return Err(format!(
                "state.wait_ms: {} is more than 300000 (5 minutes)",
                self.wait_ms
            ));
        }
        Ok(())
    }
}

/// What init did about the state disk, for hostd's status and the ready line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    /// True when state is on a disk, false when in RAM.
    pub persistent: bool,
    /// The device mounted (`/dev/vdb1`, or `/dev/md127` for a mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The file system mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    /// Where it is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    /// Its size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Init created the file system at this boot.
    #[serde(default)]
    pub formatted: bool,
    /// The state disk is an md mirror running on one of its two disks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// Why state is in RAM, or what went wrong (a problem found by fsck,
    /// a missing disk, two disks with one label), for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_or_say_what_is_accepted() {
        assert_eq!(
            DiskSelector::parse("label:mkhost-state"),
            Ok(DiskSelector::Label("mkhost-state".into()))
        );
        assert_eq!(
            DiskSelector::parse("type:0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            Ok(DiskSelector::Type(
                "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
            ))
        );
        assert_eq!(DiskSelector::parse("none"), Ok(DiskSelector::None));
        for (bad, want) in [
            ("vdb", "no kind"),
            ("label:", "empty value"),
            ("type:1234", "not a GUID"),
            ("path:vdb", "under /dev/"),
            ("path:/dev/../etc/x", "under /dev/"),
            ("uuid:x", "unknown kind"),
        ] {
            let e = DiskSelector::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn configs_validate_and_default_to_the_label() {
        let config: StateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config.disk, "label:mkhost-state");
        assert_eq!(config.format, FormatPolicy::Never);
        config.validate().unwrap();
        let config: StateConfig =
            serde_json::from_str(r#"{"format": "if-blank", "mirror": ["serial:a", "label:b"]}"#)
                .unwrap();
        assert!(config.validate().unwrap_err().contains("mirror[1]"));
        assert!(serde_json::from_str::<StateConfig>(r#"{"format": "always"}"#).is_err());
    }
}
