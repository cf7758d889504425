//! Naming the driver a device needs when the image does not ship it.
//!
//! The builder writes `/lib/modules/<release>/modules.absent` next to the
//! depmod files: the aliases of the kernel's modules that the image leaves
//! out, for the buses devices are plugged into (pci, usb, virtio, scsi, hid,
//! sdio, vmbus), and the profile's module sets that would bring each in.
//! Each module's block is a `module` line, its `set` lines, then its aliases
//! (without the trailing wildcard fields every modalias of the bus has):
//!
//! ```text
//! # modules of 6.1.0-57-amd64 that this image does not ship
//! module e1000
//! set e1000 lab-nics
//! pci:v00008086d0000100Esv*
//! ```
//!
//! A device whose modalias matches nothing in `modules.alias` is looked up
//! here, so the console can say which module is missing and which profile
//! key adds it. The file is read line by line for each lookup and nothing of
//! it is kept: misses are rare, and PID 1's memory stays small.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use mkhost_shared::glob;

/// The file's name in the module directory.
pub const FILE: &str = "modules.absent";

/// A module the image lacks, and how a profile adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The module's name.
    pub module: String,
    /// Module sets of the profile that contain it.
    pub sets: Vec<String>,
}

impl Missing {
    /// The profile keys that would add the module, for a console line:
    /// `[modules] sets = ["lab-nics"] or include = ["e1000"]`.
    pub fn profile_key(&self) -> String {
        let include = format!("include = [\"{}\"]", self.module);
        if self.sets.is_empty() {
            format!("[modules] {include}")
        } else {
            let sets: Vec<String> = self.sets.iter().map(|s| format!("\"{s}\"")).collect();
            format!("[modules] sets = [{}] or {include}", sets.join(", "))
        }
    }
}

fn bucket(pattern: &str) -> &str {
    pattern.split(':').next().unwrap_or("")
}

/// Looks every modalias of `wanted` up in the text of `modules.absent`
/// (any `BufRead`): for each, the absent modules whose aliases match, sorted.
pub fn lookup_in<R: BufRead>(reader: R, wanted: &[&str]) -> Vec<Vec<Missing>> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); wanted.len()];
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut module = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("module"), Some(name), None) => module = name.to_string(),
            (Some("set"), Some(name), Some(set)) => {
                sets.entry(name.to_string())
                    .or_default()
                    .push(set.to_string());
            }
            (Some(pattern), None, None) if !module.is_empty() && !pattern.starts_with('#') => {
                let prefix = bucket(pattern);
                for (i, modalias) in wanted.iter().enumerate() {
                    if bucket(modalias) == prefix
                        && !found[i].contains(&module)
                        && glob::matches(pattern, modalias)
                    {
                        found[i].push(module.clone());
                    }
                }
            }
            _ => {}
        }
    }
    found
        .into_iter()
        .map(|mut modules| {
            modules.sort();
            modules
                .into_iter()
                .map(|module| Missing {
                    sets: sets.get(&module).cloned().unwrap_or_default(),
                    module,
                })
                .collect()
        })
        .collect()
}

/// [`lookup_in`] on `module_dir/modules.absent`; nothing when the file is
/// missing (an image from before it existed).
pub fn lookup(module_dir: &Path, wanted: &[&str]) -> Vec<Vec<Missing>> {
    match fs::File::open(module_dir.join(FILE)) {
        Ok(f) => lookup_in(BufReader::new(f), wanted),
        Err(_) => vec![Vec::new(); wanted.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# modules of 6.1.0-test that this image does not ship
pci:v*
module e1000
set e1000 lab-nics
pci:v00008086d0000100Esv*
module igb
set igb lab-nics
set igb server-nics
pci:v00008086d000010C9sv*
module r8152
usb:v0BDAp8153d*
usb:v0BDAp8153d*dc*dsc*dp*icFF
garbage line with words
# usb:v*
";

    #[test]
    fn names_the_missing_module_and_its_sets() {
        let found = lookup_in(
            TEXT.as_bytes(),
            &[
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                "usb:v0BDAp8153d3000dc00dsc00dp00icFFisc00ip00in00",
                "pci:v00008086d000010C9sv0sd0bc02sc00i00",
                "virtio:d00000001v00001AF4",
            ],
        );
        assert_eq!(
            found[0],
            [Missing {
                module: "e1000".into(),
                sets: vec!["lab-nics".into()]
            }]
        );
        assert_eq!(
            found[0][0].profile_key(),
            "[modules] sets = [\"lab-nics\"] or include = [\"e1000\"]"
        );
        // A pattern before any `module` line and comments name nothing; two
        // aliases of one module count once; no set: include only.
        assert_eq!(found[1].len(), 1);
        assert_eq!(found[1][0].profile_key(), "[modules] include = [\"r8152\"]");
        assert_eq!(found[2][0].sets, ["lab-nics", "server-nics"]);
        assert!(found[3].is_empty());
    }

    #[test]
    fn missing_file_names_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lookup(dir.path(), &["pci:v1"]), vec![Vec::new()]);
    }
}
