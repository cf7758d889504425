//! Coldplug: load the drivers for the devices that exist at boot.
//!
//! There is no udev. Every device the kernel knows has a directory under
//! `/sys/devices`; those a module can drive carry a `modalias` file
//! (`pci:v00001AF4d00001000...`, `acpi:LNXPWRBN:`, `cpu:type:x86,...`).
//! [`scan`] collects them, [`ModuleDb::lookup`] matches them against
//! modules.alias, and the matching modules that are neither built in nor
//! loaded are loaded with their dependencies ([`crate::init::drivers::modules::run_plan`]).
//! Loading a bus driver can reveal new devices (virtio-pci creates the virtio
//! devices whose drivers are virtio_net, virtio_blk...), so this repeats until
//! a round loads nothing new.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::init::drivers::modules::{self, ModuleDb, ModuleError, ModuleLoad};

/// A device with a modalias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its sysfs directory.
    pub path: PathBuf,
    /// The modalias text.
    pub modalias: String,
}

/// Walks `sys_devices` (not following links) for `modalias` files.
pub fn scan(sys_devices: &Path) -> Vec<Device> {
    let mut out = Vec::new();
    walk(sys_devices, 0, &mut out);
    out
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<Device>) {
    if depth > 24 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&entry.path(), depth + 1, out);
        } else if ft.is_file() && entry.file_name() == "modalias" {
            if let Ok(text) = fs::read_to_string(entry.path()) {
                let modalias = text.trim();
                if !modalias.is_empty() {
                    out.push(Device {
                        path: dir.to_path_buf(),
                        modalias: modalias.to_string(),
                    });
                }
            }
        }
    }
}

/// What coldplug did.
#[derive(Debug, Default)]
pub struct Report {
    /// Devices with a modalias (after the last round).
    pub devices: usize,
    /// Modules loaded now, in completion order.
    pub loaded: Vec<String>,
    /// Modules that refused with ENODEV.
    pub no_device: Vec<String>,
    /// Load failures.
    pub failed: Vec<ModuleError>,
    /// Rounds run.
    pub rounds: usize,
    /// Devices no module matched and no driver is bound to, by bus
    /// (the modalias prefix), with up to three examples each.
    pub unclaimed: BTreeMap<String, (usize, Vec<String>)>,
    /// The modaliases of all those devices (unique), for naming the
    /// modules the image lacks.
    pub unclaimed_all: Vec<String>,
    /// Every module coldplug tried to load (loaded or not), so hotplug
    /// does not try it again.
    pub tried: HashSet<String>,
}

impl Report {
    /// `pci: 3, acpi: 5` style summary of [`Report::unclaimed`].
    pub fn unclaimed_summary(&self) -> String {
        self.unclaimed
            .iter()
            .map(|(bus, (n, _))| format!("{bus}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Number of unclaimed devices.
    pub fn unclaimed_count(&self) -> usize {
        self.unclaimed.values().map(|(n, _)| n).sum()
    }
}

/// The modules `devices` ask for, according to `db` (sorted, unique), and the
/// devices nothing matched.
pub fn wanted_modules<'a>(db: &ModuleDb, devices: &'a [Device]) -> (Vec<String>, Vec<&'a Device>) {
    let mut wanted = BTreeSet::new();
    let mut unmatched = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut cache: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for d in devices {
        let found = cache
            .entry(d.modalias.as_str())
            .or_insert_with(|| db.lookup(&d.modalias));
        if found.is_empty() {
            unmatched.push(d);
        } else if seen.insert(d.modalias.as_str()) {
            wanted.extend(found.iter().cloned());
        }
    }
    (wanted.into_iter().collect(), unmatched)
}

/// Runs coldplug below `root` (`/` on a real boot) with the modules in
/// `module_dir` (`/lib/modules/<release>`): scans, loads, repeats.
pub fn run(root: &Path, module_dir: &Path, db: &ModuleDb, workers: usize) -> Report {
    let mut report = Report::default();
    let sys_devices = root.join("sys/devices");
    let module_dir_of = |rel: &str| -> PathBuf { module_dir.join(rel) };
    let mut attempted: HashSet<String> = HashSet::new();
    loop {
        report.rounds += 1;
        let devices = scan(&sys_devices);
        report.devices = devices.len();
        let (wanted, unmatched) = wanted_modules(db, &devices);
        let present = modules::parse_proc_modules(
            &fs::read_to_string(root.join("proc/modules")).unwrap_or_default(),
        );
        let mut skip = present;
        skip.extend(attempted.iter().cloned());
        let wanted: Vec<String> = wanted.into_iter().filter(|m| !skip.contains(m)).collect();
        let (plan, _) = db.plan(&wanted, &skip);
        if plan.modules.is_empty() || report.rounds > 4 {
            report.unclaimed.clear();
            let mut all = BTreeSet::new();
            for d in unmatched {
                if d.path.join("driver").exists() {
                    continue;
                }
                all.insert(d.modalias.clone());
                let bus = d.modalias.split(':').next().unwrap_or("?").to_string();
                let entry = report.unclaimed.entry(bus).or_default();
                entry.0 += 1;
                if entry.1.len() < 3 {
                    entry.1.push(d.modalias.clone());
                }
            }
            report.unclaimed_all = all.into_iter().collect();
            report.tried = attempted;
            return report;
        }
        for m in &plan.modules {
            attempted.insert(m.name.clone());
        }
        let outcomes = modules::run_plan(&plan, workers, |m| {
            modules::load_module(&module_dir_of(&m.rel_path))
        });
        for o in outcomes {
            match o.result {
                Ok(ModuleLoad::Loaded) => report.loaded.push(o.name),
                Ok(ModuleLoad::AlreadyLoaded) => {}
                Ok(ModuleLoad::NoDevice) => report.no_device.push(o.name),
                Err(e) => report.failed.push(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_modaliases_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("pci0000:00/0000:00:02.0/virtio0")).unwrap();
        fs::write(
            d.join("pci0000:00/0000:00:02.0/modalias"),
            "pci:v00001AF4d00001000\n",
        )
        .unwrap();
        fs::write(
            d.join("pci0000:00/0000:00:02.0/virtio0/modalias"),
            "virtio:d00000001v00001AF4\n",
        )
        .unwrap();
        fs::write(d.join("pci0000:00/empty"), "").unwrap();
        std::os::unix::fs::symlink(
            d.join("pci0000:00"),
            d.join("pci0000:00/0000:00:02.0/subsystem"),
        )
        .unwrap();
        let mut found = scan(d);
        found.sort_by(|a, b| a.modalias.cmp(&b.modalias));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].modalias, "pci:v00001AF4d00001000");
        assert!(found[1].path.ends_with("virtio0"));
    }

    #[test]
    fn wanted_modules_match_and_collect_unmatched() {
        let db = ModuleDb::parse(
            "kernel/virtio_pci.ko:\nkernel/button.ko:\n",
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\nalias acpi*:LNXPWRBN:* button\n",
            "",
            "",
        );
        let dev = |m: &str| Device {
            path: PathBuf::from("/x"),
            modalias: m.to_string(),
        };
        let devices = vec![
            dev("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            dev("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
            dev("acpi:LNXPWRBN:"),
            dev("pci:v00008086d00007000sv0000sd0000bc06sc01i00"),
        ];
        let (wanted, unmatched) = wanted_modules(&db, &devices);
        assert_eq!(wanted, ["button", "virtio_pci"]);
        assert_eq!(unmatched.len(), 1);
    }
}
