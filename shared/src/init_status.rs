//! `/run/mkhost/init.json`: what `init` did with devices after coldplug,
//! written by init (PID 1) whenever it changes and read by `hostd status`
//! and by people (`cat /run/mkhost/init.json`).
//!
//! The lists are capped at [`MAX_ENTRIES`] each (the oldest entries stay);
//! the counters keep counting.

use serde::{Deserialize, Serialize};

/// Most entries one list keeps.
pub const MAX_ENTRIES: usize = 256;

/// A module init loaded for a device that appeared after coldplug.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateModule {
    /// The module's name.
    pub module: String,
    /// The modalias of the device that asked for it.
    pub device: String,
    /// Milliseconds since the kernel started.
    pub at_ms: u64,
}

/// A device whose driver the image does not ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingDriver {
    /// The module the kernel has for it.
    pub module: String,
    /// The device's modalias.
    pub device: String,
    /// The profile key that would add the module.
    pub profile_key: String,
}

/// init's device status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitStatus {
    /// Modules loaded after coldplug, in order.
    #[serde(default)]
    pub late_modules: Vec<LateModule>,
    /// Devices whose module is not in the image.
    #[serde(default)]
    pub missing: Vec<MissingDriver>,
    /// Disks that appeared after coldplug (`sda`), in order.
    #[serde(default)]
    pub late_disks: Vec<String>,
    /// Network interfaces configured after the network step, in order.
    #[serde(default)]
    pub late_nics: Vec<String>,
    /// Kernel uevents received.
    #[serde(default)]
    pub events: u64,
    /// Datagrams refused (not from the kernel, truncated, malformed).
    #[serde(default)]
    pub refused: u64,
    /// Times the kernel dropped events because init's queue was full.
    #[serde(default)]
    pub overflows: u64,
}

/// Appends `value` to `list` unless it is full.
pub fn push_capped<T>(list: &mut Vec<T>, value: T) {
    if list.len() < MAX_ENTRIES {
        list.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_defaults() {
        let mut s = InitStatus::default();
        push_capped(
            &mut s.late_modules,
            LateModule {
                module: "usb_storage".into(),
                device: "usb:v46F4p0001".into(),
                at_ms: 4200,
            },
        );
        s.events = 12;
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<InitStatus>(&text).unwrap(), s);
        // An older or partial file reads with empty lists.
        let old: InitStatus = serde_json::from_str("{\"events\":3}").unwrap();
        assert_eq!(old.events, 3);
        assert!(old.late_modules.is_empty());
        for _ in 0..MAX_ENTRIES + 5 {
            push_capped(&mut s.late_disks, "sda".to_string());
        }
        assert_eq!(s.late_disks.len(), MAX_ENTRIES);
    }
}
