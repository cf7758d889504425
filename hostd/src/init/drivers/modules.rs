//! Kernel modules: the depmod index the builder ships, alias matching, load
//! plans in dependency order, and a loader that runs independent modules in
//! parallel.
//!
//! The image carries `/lib/modules/<release>/modules.{dep,alias,softdep,builtin}`
//! in depmod's text formats, filtered to the modules it ships. [`ModuleDb`]
//! parses them (pure, see [`ModuleDb::parse`]). [`ModuleDb::plan`] turns a list
//! of wanted modules into a [`LoadPlan`]: every module after its dependencies
//! and soft `pre:` dependencies, minus what is built in or already loaded.
//! [`run_plan`] loads a plan with a pool of workers; a module starts once all
//! its dependencies were attempted, so on a machine with many CPUs unrelated
//! drivers load side by side. The loading itself is a closure, so the
//! scheduling is tested without a kernel.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use mkhost_shared::glob;

use crate::os;

/// Errors of module handling.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// An index file could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Index {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A module file could not be opened.
    #[error("cannot open module {path}: {source}", path = path.display())]
    Open {
        /// The module file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// finit_module failed (other than "already loaded" or "no device").
    #[error("cannot load module {path}: {source}", path = path.display())]
    Load {
        /// The module file.
        path: PathBuf,
        /// The I/O error (errno).
        #[source]
        source: io::Error,
    },
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
pub fn load_module(path: &Path) -> Result<ModuleLoad, ModuleError> {
    let file = fs::File::open(path).map_err(|source| ModuleError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.to_string_lossy();
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.ends_with(ext));
    let flags = if compressed {
        os::MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = CString::default();
    match os::finit_module(file.as_fd(), &params, flags) {
        Ok(()) => Ok(ModuleLoad::Loaded),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(ModuleLoad::AlreadyLoaded),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(ModuleLoad::NoDevice),
        Err(source) => Err(ModuleError::Load {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `kernel/arch/x86/crypto/crc32c-intel.ko` -> `crc32c_intel` (the kernel's
/// name: `-` becomes `_`).
pub fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// Module names compare with `-` and `_` as the same character.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// One module of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedModule {
    /// Kernel name (`virtio_net`).
    pub name: String,
    /// File below the module directory.
    pub rel_path: String,
    /// Indices (into [`LoadPlan::modules`]) of modules to attempt first.
    pub after: Vec<usize>,
}

/// Modules in a valid load order with their dependency edges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadPlan {
    /// The modules; each one's `after` indices are smaller than its own.
    pub modules: Vec<PlannedModule>,
}

/// The shipped depmod index.
#[derive(Debug, Clone, Default)]
pub struct ModuleDb {
    paths: HashMap<String, String>,
    deps: HashMap<String, Vec<String>>,
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
    /// Exact aliases (no wildcard): alias -> modules.
    exact: HashMap<String, Vec<String>>,
    /// Wildcard aliases, bucketed by the text before the first ':' when that
    /// part has no wildcard (`pci`, `usb`, `acpi`...); the rest under "".
    wild: HashMap<String, Vec<(String, String)>>,
    builtin: HashSet<String>,
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

fn bucket_of(s: &str) -> &str {
    match s.split_once(':') {
        Some((prefix, _)) if !has_wildcard(prefix) => prefix,
        _ => "",
    }
}

impl ModuleDb {
    /// Parses the four depmod files' contents (any may be empty).
    pub fn parse(dep: &str, alias: &str, softdep: &str, builtin: &str) -> Self {
        let mut db = ModuleDb::default();
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let name = module_name(path);
            db.paths.insert(name.clone(), path.to_string());
            db.deps
                .insert(name, rest.split_whitespace().map(module_name).collect());
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                continue;
            }
            let (Some(pattern), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            let module = normalize(module);
            if has_wildcard(pattern) {
                db.wild
                    .entry(bucket_of(pattern).to_string())
                    .or_default()
                    .push((pattern.to_string(), module));
            } else {
                db.exact
                    .entry(pattern.to_string())
                    .or_default()
                    .push(module);
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let entry = db.softdeps.entry(normalize(module)).or_default();
            let mut post = false;
            for w in words {
                match w {
                    "pre:" => post = false,
                    "post:" => post = true,
                    other if post => entry.1.push(other.to_string()),
                    other => entry.0.push(other.to_string()),
                }
            }
        }
        db.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        db
    }

    /// Reads `dir`'s depmod files; only modules.dep is required.
    pub fn load(dir: &Path) -> Result<Self, ModuleError> {
        let read = |name: &str, required: bool| -> Result<String, ModuleError> {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(t) => Ok(t),
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
                Err(source) => Err(ModuleError::Index { path, source }),
            }
        };
        Ok(Self::parse(
            &read("modules.dep", true)?,
            &read("modules.alias", false)?,
            &read("modules.softdep", false)?,
            &read("modules.builtin", false)?,
        ))
    }

    /// Number of module files in the index.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the index has no modules.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The file of module `name`, if shipped.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.paths.get(&normalize(name)).map(String::as_str)
    }

    /// Modules whose aliases match `modalias` (sorted, without duplicates).
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(mods) = self.exact.get(modalias) {
            out.extend(mods.iter().cloned());
        }
        for bucket in [bucket_of(modalias), ""] {
            if let Some(list) = self.wild.get(bucket) {
                for (pattern, module) in list {
                    if glob::matches(pattern, modalias) {
                        out.push(module.clone());
                    }
                }
            }
            if bucket.is_empty() {
                break;
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// A module name, or an alias resolved to shipped/built-in modules.
    pub fn resolve_name(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.paths.contains_key(&n) || self.builtin.contains(&n) {
            return vec![n];
        }
        self.lookup(name)
    }

    /// The plan to load `wanted` (module names; in this order where the
    /// dependencies allow), skipping modules in `present` (loaded already)
    /// and built-in ones. Names the index does not know are returned apart.
    pub fn plan(&self, wanted: &[String], present: &HashSet<String>) -> (LoadPlan, Vec<String>) {
        let mut plan = LoadPlan::default();
        let mut index: HashMap<String, Option<usize>> = HashMap::new();
        let mut unknown = Vec::new();
        for name in wanted {
            let n = normalize(name);
            if !self.paths.contains_key(&n) && !self.builtin.contains(&n) {
                unknown.push(name.clone());
                continue;
            }
            self.visit(&n, present, &mut plan, &mut index, 0);
        }
        (plan, unknown)
    }

    /// Depth-first: soft pre-deps and deps first, then `name`, then soft
    /// post-deps. Returns the plan index of `name` if it is to be loaded.
    fn visit(
        &self,
        name: &str,
        present: &HashSet<String>,
        plan: &mut LoadPlan,
        index: &mut HashMap<String, Option<usize>>,
        depth: usize,
    ) -> Option<usize> {
        if let Some(done) = index.get(name) {
            return *done;
        }
        let Some(path) = self.paths.get(name) else {
            return None; // built in, or not shipped
        };
        if present.contains(name) || self.builtin.contains(name) || depth > 64 {
            index.insert(name.to_string(), None);
            return None;
        }
        index.insert(name.to_string(), None); // breaks cycles
        let mut after = Vec::new();
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for soft in &pre {
            for m in self.resolve_name(soft) {
                after.extend(self.visit(&m, present, plan, index, depth + 1));
            }
        }
        for dep in self.deps.get(name).into_iter().flatten() {
            after.extend(self.visit(dep, present, plan, index, depth + 1));
        }
        after.sort_unstable();
        after.dedup();
        let me = plan.modules.len();
        plan.modules.push(PlannedModule {
            name: name.to_string(),
            rel_path: path.clone(),
            after,
        });
        index.insert(name.to_string(), Some(me));
        for soft in &post {
            for m in self.resolve_name(soft) {
                self.visit(&m, present, plan, index, depth + 1);
            }
        }
        Some(me)
    }
}

/// Names of the loaded modules, from `/proc/modules` text.
pub fn parse_proc_modules(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(normalize)
        .collect()
}

/// The outcome of one module of a plan.
#[derive(Debug)]
pub struct Outcome {
    /// Module name.
    pub name: String,
    /// What happened.
    pub result: Result<ModuleLoad, ModuleError>,
}

struct Scheduler {
    waiting_on: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    ready: Vec<usize>,
    running: usize,
    done: usize,
}

/// Loads every module of `plan` with `load`, using up to `workers` threads
/// (1 = in the calling thread, in plan order). A module starts once every
/// module in its `after` list finished (loaded or not: a failed dependency
/// makes the dependant fail on its own, with its own message). Outcomes are
/// returned in completion order.
pub fn run_plan<F>(plan: &LoadPlan, workers: usize, load: F) -> Vec<Outcome>
where
    F: Fn(&PlannedModule) -> Result<ModuleLoad, ModuleError> + Sync,
{
    let n = plan.modules.len();
    if workers <= 1 || n <= 1 {
        return plan
            .modules
            .iter()
            .map(|m| Outcome {
                name: m.name.clone(),
                result: load(m),
            })
            .collect();
    }
    let mut dependents = vec![Vec::new(); n];
    let mut waiting_on = vec![0; n];
    for (i, m) in plan.modules.iter().enumerate() {
        for &d in &m.after {
            if d < n && d != i {
                dependents[d].push(i);
                waiting_on[i] += 1;
            }
        }
    }
    // Lowest index first keeps the plan's order where there is a choice.
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting_on[i] == 0).rev().collect();
    ready.sort_unstable_by(|a, b| b.cmp(a));
    let state = Mutex::new(Scheduler {
        waiting_on,
        dependents,
        ready,
        running: 0,
        done: 0,
    });
    let wake = Condvar::new();
    let outcomes = Mutex::new(Vec::with_capacity(n));
    let work = || loop {
        let next = {
            let Ok(mut s) = state.lock() else { return };
            loop {
                if let Some(i) = s.ready.pop() {
                    s.running += 1;
                    break Some(i);
                }
                if s.done == n || s.running == 0 {
                    break None; // finished (or stuck on a cycle)
                }
                s = match wake.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
        };
        let Some(i) = next else {
            wake.notify_all();
            return;
        };
        let module = &plan.modules[i];
        let result = load(module);
        if let Ok(mut o) = outcomes.lock() {
            o.push(Outcome {
                name: module.name.clone(),
                result,
            });
        }
        if let Ok(mut s) = state.lock() {
            s.running -= 1;
            s.done += 1;
            let deps = std::mem::take(&mut s.dependents[i]);
            for d in deps {
                s.waiting_on[d] -= 1;
                if s.waiting_on[d] == 0 {
                    s.ready.push(d);
                }
            }
            s.ready.sort_unstable_by(|a, b| b.cmp(a));
        }
        wake.notify_all();
    };
    std::thread::scope(|scope| {
        for _ in 1..workers.min(n) {
            let spawned = std::thread::Builder::new()
                .name("modules".into())
                .stack_size(256 * 1024)
                .spawn_scoped(scope, work);
            if spawned.is_err() {
                break; // fewer workers; the calling thread still works
            }
        }
        work();
    });
    outcomes.into_inner().unwrap_or_default()
}

/// How many module loads to run at once: one per CPU, at most 8.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/net/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/drivers/net/failover.ko
kernel/drivers/net/failover.ko:
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/acpi/button.ko:
";
    const ALIAS: &str = "\
# comment
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias acpi*:LNXPWRBN:* button
alias crc32c crc32c_generic
alias crc32c crc32c_intel
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
";
    const SOFTDEP: &str = "softdep libcrc32c pre: crc32c\n";
    const BUILTIN: &str = "kernel/drivers/block/loop.ko\n";

    fn db() -> ModuleDb {
        ModuleDb::parse(DEP, ALIAS, SOFTDEP, BUILTIN)
    }

    #[test]
    fn alias_lookup_matches_modaliases() {
        let db = db();
        assert_eq!(
            db.lookup("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(db.lookup("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(db.lookup("acpi:LNXPWRBN:"), ["button"]);
        assert_eq!(db.lookup("crc32c"), ["crc32c_generic", "crc32c_intel"]);
        assert!(db
            .lookup("pci:v00008086d00007000sv0000sd0000bc06sc01i00")
            .is_empty());
        assert!(db.is_builtin("loop"));
        assert_eq!(
            db.path_of("crc32c-intel"),
            Some("kernel/arch/x86/crypto/crc32c-intel.ko")
        );
    }

    #[test]
    fn plan_orders_dependencies_and_skips_present() {
        let db = db();
        let present: HashSet<String> = ["failover".to_string()].into();
        let (plan, unknown) = db.plan(
            &[
                "virtio_net".into(),
                "virtio_pci".into(),
                "loop".into(),
                "nope".into(),
            ],
            &present,
        );
        assert_eq!(unknown, ["nope"]);
        let names: Vec<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "virtio_pci"
            ]
        );
        assert_eq!(plan.modules[3].after, [0, 1, 2]);
        assert_eq!(plan.modules[4].after, [1, 2]);
        for (i, m) in plan.modules.iter().enumerate() {
            assert!(m.after.iter().all(|&d| d < i));
        }
    }

    #[test]
    fn softdeps_resolve_aliases() {
        let (plan, _) = db().plan(&["libcrc32c".into()], &HashSet::new());
        let names: Vec<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["crc32c_generic", "crc32c_intel", "libcrc32c"]);
        assert_eq!(plan.modules[2].after, [0, 1]);
    }

    #[test]
    fn parallel_run_respects_dependencies() {
        let db = db();
        let wanted: Vec<String> = ["virtio_net", "virtio_pci", "button", "libcrc32c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (plan, _) = db.plan(&wanted, &HashSet::new());
        for workers in [1, 2, 4] {
            let outcomes = run_plan(&plan, workers, |m| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                if m.name == "button" {
                    Err(ModuleError::Load {
                        path: m.rel_path.clone().into(),
                        source: io::Error::from_raw_os_error(libc::EINVAL),
                    })
                } else {
                    Ok(ModuleLoad::Loaded)
                }
            });
            assert_eq!(outcomes.len(), plan.modules.len());
            let pos = |n: &str| outcomes.iter().position(|o| o.name == n).unwrap();
            for (i, m) in plan.modules.iter().enumerate() {
                for &d in &m.after {
                    assert!(pos(&plan.modules[d].name) < pos(&plan.modules[i].name));
                }
            }
            assert_eq!(outcomes.iter().filter(|o| o.result.is_err()).count(), 1);
        }
    }

    #[test]
    fn proc_modules() {
        let text = "virtio_net 61440 0 - Live 0x0\ncrc32c_intel 24576 0 - Live 0x0\n";
        let set = parse_proc_modules(text);
        assert!(set.contains("virtio_net") && set.contains("crc32c_intel"));
    }

    #[test]
    fn names_normalize() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko"),
            "crc32c_intel"
        );
        assert_eq!(
            module_name("kernel/fs/nls/nls_iso8859-1.ko.zst"),
            "nls_iso8859_1"
        );
    }

    #[test]
    fn missing_module_file_is_an_error() {
        let err = load_module(Path::new("/nonexistent/x.ko")).unwrap_err();
        assert!(matches!(err, ModuleError::Open { .. }), "{err}");
    }
}
