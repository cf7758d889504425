//! cgroup v2 management behind the [`CgroupManager`] trait.
//!
//! [`Cgroupfs`] is the real backend: it creates `<root>/<path>`, enables the
//! controllers in every ancestor's `cgroup.subtree_control`, writes the limits
//! (`memory.max`, `cpu.max`, `cpu.weight`, `cpuset.cpus`, `pids.max`, ...) and
//! hands back an fd of the directory for `clone3(CLONE_INTO_CGROUP)`, so the
//! container's init is born inside its cgroup. [`Cgroupfs::detect`] checks that
//! `/sys/fs/cgroup` really is a cgroup2 mount; on a v1 or hybrid host it
//! reports the backend unavailable and the runtime runs containers without
//! cgroups (and says so in its log), unless `linux.resources` asks for a
//! limit ([`limits`]): that is refused, since the limit would not exist.
//! Tests point [`Cgroupfs::at`] at a temporary directory and check the files
//! written.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::spec::Resources;

/// Errors from the cgroup backend.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A limit the kernel would refuse.
    #[error("linux.resources.{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cgroup already holds processes.
    #[error("cgroup {path} exists and is in use")]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// A controller could not be enabled for an ancestor's children.
    #[error("cannot enable the {controller} controller in {path}{hint}")]
    Delegate {
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// The controller.
        controller: &'static str,
        /// Why, when known.
        hint: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A control file could not be written.
    #[error("cannot write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A control file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Processes survived `kill_all`.
    #[error("cgroup {path} still has processes {pids:?} after SIGKILL")]
    Unkillable {
        /// The directory.
        path: PathBuf,
        /// What is left.
        pids: Vec<i32>,
    },
    /// The cgroup could not be removed.
    #[error("cannot remove cgroup {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The backend is not usable on this host.
    #[error("cgroups unavailable: {0}")]
    Unavailable(String),
    /// `linux.resources` asks for limits on a host without the backend.
    #[error(
        "{fields}: limits need cgroup v2, which this host lacks ({reason}); remove them \
         from config.json, or run on a host with cgroup2 mounted at {DEFAULT_ROOT}"
    )]
    NoCgroupForLimits {
        /// The fields that set limits, `linux.resources.memory.limit, ...`.
        fields: String,
        /// Why the backend is unavailable.
        reason: String,
    },
}

/// Usage numbers of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// `memory.current`.
    pub memory_current: Option<u64>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// `usage_usec` from `cpu.stat`.
    pub cpu_usage_usec: Option<u64>,
    /// `oom_kill` from `memory.events`.
    pub oom_kills: Option<u64>,
}

/// Whether a new cgroup gets a memory cgroup of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryCgroup {
    /// The memory controller is enabled for it (runc's way).
    #[default]
    Own,
    /// Its parent does not enable the memory controller for its children:
    /// its memory is counted in the parent's memory cgroup, shared with
    /// its siblings (for hosts of many containers: Linux keeps a slot per
    /// superblock of the host in every memory cgroup). The limits must
    /// not need the memory controller.
    Parent,
}

/// A cgroup backend. Paths are relative to the backend's root.
pub trait CgroupManager {
    /// `Ok` when the backend can be used, else why not.
    fn available(&self) -> Result<(), String>;
    /// Creates the cgroup with its limits; returns an fd of its directory for
    /// `CLONE_INTO_CGROUP`. Nothing is left behind on failure.
    fn create(
        &self,
        path: &str,
        resources: &Resources,
        memory: MemoryCgroup,
    ) -> Result<OwnedFd, CgroupError>;
    /// The `cgroup.procs` file, for joining by pid when `clone3` is missing.
    fn procs_file(&self, path: &str) -> PathBuf;
    /// Processes in the cgroup.
    fn pids(&self, path: &str) -> Result<Vec<i32>, CgroupError>;
    /// Kills every process left in the cgroup and waits until it is empty
    /// (processes outlive the container's init when it has no pid
    /// namespace). A missing or empty cgroup is not an error.
    fn kill_all(&self, path: &str) -> Result<(), CgroupError>;
    /// Removes the (empty) cgroup; a missing one is not an error.
    fn delete(&self, path: &str) -> Result<(), CgroupError>;
    /// Usage numbers.
    fn stats(&self, path: &str) -> Result<CgroupStats, CgroupError>;
    /// Freezes (or thaws) every process of the cgroup and waits until the
    /// kernel says it is done (`cgroup.events`), at most five seconds.
    fn freeze(&self, path: &str, frozen: bool) -> Result<(), CgroupError>;
}

/// The backend for hosts without cgroup v2.
#[derive(Debug, Clone)]
pub struct NoCgroups(pub String);

impl CgroupManager for NoCgroups {
    fn available(&self) -> Result<(), String> {
        Err(self.0.clone())
    }
    fn create(&self, _: &str, _: &Resources, _: MemoryCgroup) -> Result<OwnedFd, CgroupError> {
        Err(CgroupError::Unavailable(self.0.clone()))
    }
    fn procs_file(&self, _: &str) -> PathBuf {
        PathBuf::new()
    }
    fn pids(&self, _: &str) -> Result<Vec<i32>, CgroupError> {
        Ok(Vec::new())
    }
    fn kill_all(&self, _: &str) -> Result<(), CgroupError> {
        Ok(())
    }
    fn delete(&self, _: &str) -> Result<(), CgroupError> {
        Ok(())
    }
    fn stats(&self, _: &str) -> Result<CgroupStats, CgroupError> {
        Err(CgroupError::Unavailable(self.0.clone()))
    }
    fn freeze(&self, _: &str, _: bool) -> Result<(), CgroupError> {
        Err(CgroupError::Unavailable(self.0.clone()))
    }
}

/// How many times [`Cgroupfs::kill_all`] looks again, 10 ms apart.
const KILL_POLLS: u32 = 500;

/// The controllers hostd enables for containers.
const CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids"];

/// The cgroup2 file-system backend.
#[derive(Debug, Clone)]
pub struct Cgroupfs {
    root: PathBuf,
}

/// Where cgroup2 is mounted.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// A control file write: `(file name, value)`.
pub type Setting = (std::borrow::Cow<'static, str>, String);

impl Cgroupfs {
    /// A backend rooted at `root` without checking what is mounted there
    /// (tests use a temporary directory).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Cgroupfs { root: root.into() }
    }

    /// The backend for this host: [`Cgroupfs`] at `/sys/fs/cgroup` when that is
    /// a cgroup2 mount, else [`NoCgroups`] with the reason.
    pub fn detect() -> Box<dyn CgroupManager> {
        let root = Path::new(DEFAULT_ROOT);
        let magic = super::sys::statfs_type(root).ok();
        if magic != Some(libc::CGROUP2_SUPER_MAGIC) {
            return Box::new(NoCgroups(format!(
                "{DEFAULT_ROOT} is not a cgroup2 mount (cgroup v1 or hybrid host)"
            )));
        }
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let missing: Vec<&str> = ["memory", "pids"]
            .into_iter()
            .filter(|c| !controllers.split_whitespace().any(|x| x == *c))
            .collect();
        if !missing.is_empty() {
            return Box::new(NoCgroups(format!(
                "{DEFAULT_ROOT}/cgroup.controllers lacks {}",
                missing.join(", ")
            )));
        }
        Box::new(Cgroupfs::at(root))
    }

    /// The directory of `path`.
    pub fn dir(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn write(&self, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = dir.join(file);
        let result = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        result.map_err(|source| CgroupError::Write {
            path,
            value: value.to_string(),
            source,
        })
    }

    /// Enables [`CONTROLLERS`] (those `dir` offers, but not those in
    /// `left_off`) in its `cgroup.subtree_control`, one at a time. A
    /// controller the kernel refuses is skipped unless the limits need it
    /// (`needed`).
    fn enable_controllers(
        &self,
        dir: &Path,
        needed: &[&str],
        left_off: &[&str],
    ) -> Result<(), CgroupError> {
        let Ok(offered) = fs::read_to_string(dir.join("cgroup.controllers")) else {
            return Ok(());
        };
        let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        let wanted = CONTROLLERS
            .iter()
            .filter(|c| offered.split_whitespace().any(|o| o == **c))
            .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
            .filter(|c| !left_off.contains(c));
        for controller in wanted {
            let file = dir.join("cgroup.subtree_control");
            // O_APPEND changes nothing for the kernel; a stand-in file in the
            // tests keeps every request.
            let result = fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .and_then(|mut f| f.write_all(format!("+{controller}").as_bytes()));
            match result {
                Err(source) if needed.contains(controller) => {
                    // The "no internal processes" rule: a non-root cgroup
                    // holding processes cannot give controllers to children
                    // (the kernel says EBUSY or EOPNOTSUPP).
                    let busy = fs::read_to_string(dir.join("cgroup.procs"))
                        .is_ok_and(|p| !p.trim().is_empty());
                    return Err(CgroupError::Delegate {
                        path: file,
                        controller,
                        hint: if busy {
                            " (it holds processes, and a cgroup with processes cannot delegate controllers: move them into a leaf cgroup or pick another linux.cgroupsPath)"
                        } else {
                            ""
                        },
                        source,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates the ancestors and the leaf of `path` top-down, enabling the
    /// controllers on the way (in the leaf's parent not the memory
    /// controller, with [`MemoryCgroup::Parent`]), then writes the limits;
    /// records every directory it made in `created`.
    fn create_path(
        &self,
        path: &str,
        leaf: &Path,
        needed: &[&str],
        memory: MemoryCgroup,
        settings: &[Setting],
        created: &mut Vec<PathBuf>,
    ) -> Result<OwnedFd, CgroupError> {
        let left_off = |dir: &Path| -> &'static [&'static str] {
            match memory {
                MemoryCgroup::Parent if Some(dir) == leaf.parent() => &["memory"],
                _ => &[],
            }
        };
        let mut dir = self.root.clone();
        self.enable_controllers(&dir, needed, left_off(&dir))?;
        let rel = leaf.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let components: Vec<_> = rel.components().collect();
        for (i, c) in components.iter().enumerate() {
            dir.push(c);
            let is_leaf = i + 1 == components.len();
            match fs::create_dir(&dir) {
                Ok(()) => created.push(dir.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if is_leaf && !self.pids(path)?.is_empty() {
                        return Err(CgroupError::InUse { path: dir });
                    }
                }
                Err(source) => return Err(CgroupError::Create { path: dir, source }),
            }
            if !is_leaf {
                self.enable_controllers(&dir, needed, left_off(&dir))?;
            }
        }
        self.create_inner(leaf, settings)
    }

    fn create_inner(&self, leaf: &Path, settings: &[Setting]) -> Result<OwnedFd, CgroupError> {
        for (file, value) in settings {
            self.write(leaf, file, value)?;
        }
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(leaf)
            .map_err(|source| CgroupError::Create {
                path: leaf.to_path_buf(),
                source,
            })?;
        Ok(OwnedFd::from(dir))
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The number after `key ` in a flat keyed file (`memory.events`,
/// `cgroup.stat`, `cpu.stat`).
pub(crate) fn keyed(path: &Path, key: &str) -> Option<u64> {
    keyed_in(&fs::read_to_string(path).ok()?, key)
}

/// The number after `key ` in the text of a flat keyed file.
pub(crate) fn keyed_in(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The fields of `linux.resources` that ask for a limit (paths below
/// `linux.resources`): those [`settings`] turns into a value other than the
/// kernel's default. Zero means "not set" (Docker writes zeros) and -1
/// "unlimited"; a `cpu.period` without a quota limits nothing; any `unified`
/// entry counts. Device rules (`devices`, which `runc spec` writes) are not
/// read at all: hostd applies none (docs/runtime.md).
pub fn limits(r: &Resources) -> Vec<&'static str> {
    let mut out = Vec::new();
    let set = |v: Option<i64>| v.is_some_and(|v| v != 0 && v != -1);
    if let Some(m) = &r.memory {
        if set(m.limit) {
            out.push("memory.limit");
        }
        if m.reservation.is_some_and(|v| v != 0) {
            out.push("memory.reservation");
        }
        if set(m.swap) {
            out.push("memory.swap");
        }
    }
    if let Some(c) = &r.cpu {
        if c.shares.is_some_and(|v| v != 0) {
            out.push("cpu.shares");
        }
        if c.quota.is_some_and(|v| v > 0) {
            out.push("cpu.quota");
        }
        if c.cpus.as_deref().is_some_and(|v| !v.is_empty()) {
            out.push("cpu.cpus");
        }
        if c.mems.as_deref().is_some_and(|v| !v.is_empty()) {
            out.push("cpu.mems");
        }
    }
    if r.pids.as_ref().is_some_and(|p| p.limit > 0) {
        out.push("pids.limit");
    }
    if r.unified.as_ref().is_some_and(|u| !u.is_empty()) {
        out.push("unified");
    }
    out
}

/// The error for `resources` on a host whose backend is unavailable for
/// `reason`, when they ask for a limit.
pub fn check_without_cgroups(r: &Resources, reason: &str) -> Result<(), CgroupError> {
    let fields = limits(r);
    if fields.is_empty() {
        return Ok(());
    }
    Err(CgroupError::NoCgroupForLimits {
        fields: fields
            .iter()
            .map(|f| format!("linux.resources.{f}"))
            .collect::<Vec<_>>()
            .join(", "),
        reason: reason.to_string(),
    })
}

/// Turns `linux.resources` into cgroup v2 control-file writes, checking the
/// values first.
pub fn settings(r: &Resources) -> Result<Vec<Setting>, CgroupError> {
    let invalid = |field: &'static str, message: String| CgroupError::Invalid { field, message };
    let mut out: Vec<Setting> = Vec::new();
    if let Some(m) = &r.memory {
        let limit = m.limit.filter(|l| *l != 0);
        if let Some(l) = limit {
            if l < -1 {
                return Err(invalid("memory.limit", format!("{l} is negative")));
            }
            // The kernel needs room for at least a few pages.
            if l != -1 && l < 256 * 1024 {
                return Err(invalid(
                    "memory.limit",
                    format!("{l} bytes is below the minimum of 262144"),
                ));
            }
            out.push(("memory.max".into(), max_or(l)));
        }
        if let Some(res) = m.reservation.filter(|r| *r != 0) {
            out.push(("memory.low".into(), max_or(res)));
        }
        if let Some(swap) = m.swap.filter(|s| *s != 0) {
            let value = match (swap, limit) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l > 0 && s >= l => (s - l).to_string(),
                (s, Some(l)) if l > 0 => {
                    return Err(invalid(
                        "memory.swap",
                        format!("memory+swap {s} is below the memory limit {l}"),
                    ))
                }
                _ => {
                    return Err(invalid(
                        "memory.swap",
                        "needs memory.limit (it is memory+swap)".into(),
                    ))
                }
            };
            out.push(("memory.swap.max".into(), value));
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(shares) = c.shares.filter(|s| *s != 0) {
            if !(2..=262_144).contains(&shares) {
                return Err(invalid("cpu.shares", format!("{shares} is not 2..=262144")));
            }
            // runc's conversion from v1 shares to v2 weight (1..=10000).
            let weight = 1 + ((shares - 2) * 9999) / 262_142;
            out.push(("cpu.weight".into(), weight.to_string()));
        }
        if c.quota.is_some() || c.period.is_some() {
            let period = c.period.filter(|p| *p != 0).unwrap_or(100_000);
            if !(1000..=1_000_000).contains(&period) {
                return Err(invalid(
                    "cpu.period",
                    format!("{period} is not 1000..=1000000"),
                ));
            }
            let quota = match c.quota {
                Some(q) if q > 0 => {
                    if q < 1000 {
                        return Err(invalid("cpu.quota", format!("{q} is below 1000")));
                    }
                    q.to_string()
                }
                _ => "max".to_string(),
            };
            out.push(("cpu.max".into(), format!("{quota} {period}")));
        }
        for (field, file, value) in [
            ("cpu.cpus", "cpuset.cpus", &c.cpus),
            ("cpu.mems", "cpuset.mems", &c.mems),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                let ok = v
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b',' || b == b'-');
                if !ok {
                    return Err(invalid(field, format!("{v:?} is not a CPU/node list")));
                }
                out.push((file.into(), v.to_string()));
            }
        }
    }
    if let Some(p) = &r.pids {
        out.push((
            "pids.max".into(),
            if p.limit > 0 {
                p.limit.to_string()
            } else {
                "max".into()
            },
        ));
    }
    for (file, value) in r.unified.iter().flatten() {
        let controller = file.split_once('.').map(|(c, _)| c);
        let known = controller.is_some_and(|c| CONTROLLERS.contains(&c));
        let plain = file
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b));
        if !known || !plain || file.ends_with('.') {
            return Err(invalid(
                "unified",
                format!(
                    "{file:?} is not a file of the {} controllers",
                    CONTROLLERS.join(", ")
                ),
            ));
        }
        if value.contains('\n') {
            return Err(invalid(
                "unified",
                format!("{file}: value {value:?} has a newline"),
            ));
        }
        out.push((file.clone().into(), value.clone()));
    }
    Ok(out)
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

impl CgroupManager for Cgroupfs {
    fn available(&self) -> Result<(), String> {
        Ok(())
    }

    fn create(
        &self,
        path: &str,
        resources: &Resources,
        memory: MemoryCgroup,
    ) -> Result<OwnedFd, CgroupError> {
        let settings = settings(resources)?;
        let needed: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| {
                settings
                    .iter()
                    .any(|(file, _)| file.split_once('.').is_some_and(|(p, _)| p == *c))
            })
            .collect();
        let leaf = self.dir(path);
        // Directories made here, removed again (deepest first) on failure.
        let mut created: Vec<PathBuf> = Vec::new();
        if memory == MemoryCgroup::Parent && needed.contains(&"memory") {
            return Err(CgroupError::Invalid {
                field: "memory",
                message: "a container that shares its parent's memory cgroup cannot have \
                          memory limits of its own"
                    .into(),
            });
        }
        let result = self.create_path(path, &leaf, &needed, memory, &settings, &mut created);
        if result.is_err() {
            for dir in created.iter().rev() {
                let _ = remove_cgroup_dir(dir);
            }
        }
        result
    }

    fn procs_file(&self, path: &str) -> PathBuf {
        self.dir(path).join("cgroup.procs")
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>, CgroupError> {
        let file = self.procs_file(path);
        match fs::read_to_string(&file) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::Read { path: file, source }),
        }
    }

    fn kill_all(&self, path: &str) -> Result<(), CgroupError> {
        let mut pids = self.pids(path)?;
        if pids.is_empty() {
            return Ok(());
        }
        // cgroup.kill (Linux 5.14) kills the whole subtree at once, forks in
        // flight included; before it, SIGKILL each pid until none is left.
        let kill_file = self.dir(path).join("cgroup.kill");
        let whole = is_cgroupfs(&self.dir(path))
            && kill_file.exists()
            && self.write(&self.dir(path), "cgroup.kill", "1").is_ok();
        for _ in 0..KILL_POLLS {
            if !whole {
                for pid in &pids {
                    let _ = super::sys::kill(*pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
            pids = self.pids(path)?;
            if pids.is_empty() {
                return Ok(());
            }
        }
        Err(CgroupError::Unkillable {
            path: self.dir(path),
            pids,
        })
    }

    fn delete(&self, path: &str) -> Result<(), CgroupError> {
        let dir = self.dir(path);
        remove_cgroup_dir(&dir).map_err(|source| CgroupError::Remove { path: dir, source })
    }

    fn stats(&self, path: &str) -> Result<CgroupStats, CgroupError> {
        let dir = self.dir(path);
        if !dir.is_dir() {
            return Err(CgroupError::Read {
                path: dir,
                source: io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        Ok(CgroupStats {
            memory_current: read_u64(&dir.join("memory.current")),
            pids_current: read_u64(&dir.join("pids.current")),
            cpu_usage_usec: keyed(&dir.join("cpu.stat"), "usage_usec"),
            oom_kills: keyed(&dir.join("memory.events"), "oom_kill"),
        })
    }

    fn freeze(&self, path: &str, frozen: bool) -> Result<(), CgroupError> {
        let dir = self.dir(path);
        self.write(&dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = u64::from(frozen);
        for _ in 0..500 {
            match keyed(&dir.join("cgroup.events"), "frozen") {
                Some(now) if now == want => return Ok(()),
                // A stand-in directory (tests) has no events file.
                None => return Ok(()),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Err(CgroupError::Write {
            path: dir.join("cgroup.freeze"),
            value: want.to_string(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                "the kernel did not finish (un)freezing within 5 s",
            ),
        })
    }
}

/// Removes a cgroup directory; a missing one is not an error. The kernel may
/// still be tearing down the last task (EBUSY): retry briefly.
fn remove_cgroup_dir(dir: &Path) -> io::Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(10));
            }
            // A stand-in directory holds the files we wrote.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
                return fs::remove_dir_all(dir)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)))
}

fn is_cgroupfs(dir: &Path) -> bool {
    super::sys::statfs_type(dir).ok() == Some(libc::CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{Cpu, Memory, Pids};

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    #[test]
    fn writes_limits_and_enables_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();
        // An existing ancestor that offers what the root delegates.
        fs::create_dir(root.join("hostd")).unwrap();
        fs::write(
            root.join("hostd/cgroup.controllers"),
            "cpuset cpu memory pids\n",
        )
        .unwrap();
        fs::write(root.join("hostd/cgroup.subtree_control"), "").unwrap();
        let cg = Cgroupfs::at(root);
        let resources = Resources {
            memory: Some(Memory {
                limit: Some(64 << 20),
                swap: Some(96 << 20),
                reservation: None,
            }),
            cpu: Some(Cpu {
                shares: Some(1024),
                quota: Some(50_000),
                period: None,
                cpus: Some("0-1".into()),
                mems: None,
            }),
            pids: Some(Pids { limit: 100 }),
            unified: Some([("cpu.idle".to_string(), "1".to_string())].into()),
        };
        let fd = cg
            .create("hostd/c1", &resources, MemoryCgroup::Own)
            .unwrap();
        drop(fd);
        // Only controllers not yet enabled are added, one write each, in
        // hostd's order.
        assert_eq!(
            read(root, "cgroup.subtree_control"),
            "memory\n+cpu+cpuset+pids"
        );
        assert_eq!(
            read(&root.join("hostd"), "cgroup.subtree_control"),
            "+cpu+cpuset+memory+pids"
        );
        let leaf = root.join("hostd/c1");
        assert_eq!(read(&leaf, "memory.max"), "67108864");
        assert_eq!(read(&leaf, "cpu.idle"), "1");
        assert_eq!(read(&leaf, "memory.swap.max"), "33554432");
        assert_eq!(read(&leaf, "cpu.weight"), "39");
        assert_eq!(read(&leaf, "cpu.max"), "50000 100000");
        assert_eq!(read(&leaf, "cpuset.cpus"), "0-1");
        assert_eq!(read(&leaf, "pids.max"), "100");
        assert!(!leaf.join("memory.low").exists());

        fs::write(leaf.join("memory.current"), "4096\n").unwrap();
        fs::write(leaf.join("cpu.stat"), "usage_usec 77\nuser_usec 1\n").unwrap();
        fs::write(leaf.join("memory.events"), "low 0\noom 1\noom_kill 2\n").unwrap();
        let stats = cg.stats("hostd/c1").unwrap();
        assert_eq!(stats.memory_current, Some(4096));
        assert_eq!(stats.cpu_usage_usec, Some(77));
        assert_eq!(stats.oom_kills, Some(2));
        assert_eq!(stats.pids_current, None);

        // In use: a second create of the same path is refused.
        fs::write(leaf.join("cgroup.procs"), "1234\n").unwrap();
        assert!(matches!(
            cg.create("hostd/c1", &Resources::default(), MemoryCgroup::Own),
            Err(CgroupError::InUse { .. })
        ));
        assert_eq!(cg.pids("hostd/c1").unwrap(), vec![1234]);
        fs::write(leaf.join("cgroup.procs"), "").unwrap();

        cg.delete("hostd/c1").unwrap();
        assert!(!leaf.exists());
        cg.delete("hostd/c1").unwrap();
    }

    #[test]
    fn a_leaf_can_share_its_parents_memory_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        for dir in ["hostd", "hostd/shared"] {
            fs::create_dir(root.join(dir)).unwrap();
            fs::write(
                root.join(dir).join("cgroup.controllers"),
                "cpuset cpu memory pids\n",
            )
            .unwrap();
            fs::write(root.join(dir).join("cgroup.subtree_control"), "").unwrap();
        }
        let cg = Cgroupfs::at(root);
        let pids = Resources {
            pids: Some(Pids { limit: 10 }),
            ..Resources::default()
        };
        drop(
            cg.create("hostd/shared/c1", &pids, MemoryCgroup::Parent)
                .unwrap(),
        );
        // The parent's own memory cgroup is there (its parent enables it);
        // its children get every controller but memory.
        assert_eq!(
            read(&root.join("hostd"), "cgroup.subtree_control"),
            "+cpu+cpuset+memory+pids"
        );
        assert_eq!(
            read(&root.join("hostd/shared"), "cgroup.subtree_control"),
            "+cpu+cpuset+pids"
        );
        assert_eq!(read(&root.join("hostd/shared/c1"), "pids.max"), "10");

        // Memory limits need a memory cgroup of the container's own.
        let memory = Resources {
            memory: Some(Memory {
                limit: Some(64 << 20),
                swap: None,
                reservation: None,
            }),
            ..Resources::default()
        };
        let err = cg
            .create("hostd/shared/c2", &memory, MemoryCgroup::Parent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot have memory limits"), "{err}");
        assert!(!root.join("hostd/shared/c2").exists());
    }

    #[test]
    fn rejects_bad_limits_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = Cgroupfs::at(tmp.path());
        let tiny = Resources {
            memory: Some(Memory {
                limit: Some(4096),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = cg.create("c2", &tiny, MemoryCgroup::Own).unwrap_err();
        assert!(err.to_string().contains("memory.limit"), "{err}");
        assert!(!tmp.path().join("c2").exists());
        let shares = Resources {
            cpu: Some(Cpu {
                shares: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(cg.create("c2", &shares, MemoryCgroup::Own).is_err());
        let cpus = Resources {
            cpu: Some(Cpu {
                cpus: Some("0;rm".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(cg.create("c2", &cpus, MemoryCgroup::Own).is_err());
        assert!(!tmp.path().join("c2").exists());
    }

    #[test]
    fn unlimited_values() {
        let r = Resources {
            memory: Some(Memory {
                limit: Some(-1),
                swap: Some(-1),
                ..Default::default()
            }),
            cpu: Some(Cpu {
                quota: Some(-1),
                period: Some(20_000),
                ..Default::default()
            }),
            pids: Some(Pids { limit: 0 }),
            unified: None,
        };
        let s: Vec<(String, String)> = settings(&r)
            .unwrap()
            .into_iter()
            .map(|(f, v)| (f.into_owned(), v))
            .collect();
        assert_eq!(
            s,
            vec![
                ("memory.max".to_string(), "max".to_string()),
                ("memory.swap.max".to_string(), "max".to_string()),
                ("cpu.max".to_string(), "max 20000".to_string()),
                ("pids.max".to_string(), "max".to_string()),
            ]
        );
    }

    #[test]
    fn unified_files_are_checked() {
        for bad in ["../x", "io.max", "memory", "cpu.", "cpu.Max", "cpu/x.max"] {
            let r = Resources {
                unified: Some([(bad.to_string(), "1".to_string())].into()),
                ..Default::default()
            };
            let e = settings(&r).unwrap_err().to_string();
            assert!(e.contains("unified"), "{bad}: {e}");
        }
        let r = Resources {
            unified: Some([("cpu.weight".to_string(), "1\n2".to_string())].into()),
            ..Default::default()
        };
        assert!(settings(&r).unwrap_err().to_string().contains("newline"));
    }

    #[test]
    fn controllers_the_limits_need_must_be_enabled() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        fs::create_dir_all(root.join("busy/cgroup.subtree_control")).unwrap();
        fs::write(root.join("busy/cgroup.controllers"), "cpu memory pids\n").unwrap();
        let cg = Cgroupfs::at(root);
        let memory = Resources {
            memory: Some(Memory {
                limit: Some(64 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        // busy/ refuses every controller (its subtree_control cannot be
        // written): a memory limit cannot be had, and nothing is made.
        let err = cg
            .create("busy/a/c1", &memory, MemoryCgroup::Own)
            .unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::Delegate {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("holds processes"), "{err}");
        assert!(!root.join("busy/a").exists());
        // With processes in busy/, the message says why.
        fs::write(root.join("busy/cgroup.procs"), "77\n").unwrap();
        let err = cg
            .create("busy/a/c1", &memory, MemoryCgroup::Own)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("busy/cgroup.subtree_control (it holds processes"),
            "{err}"
        );
        fs::write(root.join("busy/cgroup.procs"), "").unwrap();
        assert!(root.join("busy").exists());
        // Without limits nothing is needed: the refusals are skipped.
        drop(
            cg.create("busy/a/c1", &Resources::default(), MemoryCgroup::Own)
                .unwrap(),
        );
        assert!(root.join("busy/a/c1").is_dir());
    }

    #[test]
    fn kill_all_kills_what_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = Cgroupfs::at(tmp.path());
        // Missing and empty cgroups: nothing to do.
        cg.kill_all("gone").unwrap();
        let leaf = tmp.path().join("c3");
        fs::create_dir(&leaf).unwrap();
        fs::write(leaf.join("cgroup.procs"), "").unwrap();
        cg.kill_all("c3").unwrap();

        // A stand-in has no cgroup.kill: each pid gets SIGKILL. The "kernel"
        // (this thread) drops the pid from cgroup.procs once it is dead.
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        fs::write(leaf.join("cgroup.procs"), format!("{}\n", child.id())).unwrap();
        let procs = leaf.join("cgroup.procs");
        let reaper = std::thread::spawn(move || {
            let status = child.wait().unwrap();
            fs::write(procs, "").unwrap();
            status
        });
        cg.kill_all("c3").unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(reaper.join().unwrap().signal(), Some(libc::SIGKILL));
        assert!(!leaf.join("cgroup.kill").exists());
    }

    #[test]
    fn what_counts_as_a_limit() {
        let parse = |json: &str| -> Resources { serde_json::from_str(json).unwrap() };
        // `runc spec`'s device rule, Docker's zeros, unlimited values and a
        // period without a quota limit nothing.
        for none in [
            r#"{}"#,
            r#"{"devices": [{"allow": false, "access": "rwm"}]}"#,
            r#"{"memory": {"limit": 0, "reservation": 0, "swap": 0}, "cpu": {"shares": 0,
                "quota": 0, "cpus": "", "mems": ""}, "pids": {"limit": 0}, "unified": {},
                "blockIO": {"weight": 0}}"#,
            r#"{"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1, "period": 100000},
                "pids": {"limit": -1}}"#,
        ] {
            let r = parse(none);
            assert_eq!(limits(&r), Vec::<&str>::new(), "{none}");
            assert!(check_without_cgroups(&r, "v1").is_ok());
            // What the v2 backend would write for them changes no limit.
            for (file, value) in settings(&r).unwrap() {
                assert!(
                    value == "max" || value.starts_with("max "),
                    "{file} {value}"
                );
            }
        }
        let r = parse(
            r#"{"memory": {"limit": 67108864, "reservation": 1, "swap": 134217728},
            "cpu": {"shares": 512, "quota": 50000, "cpus": "0", "mems": "0"},
            "pids": {"limit": 10}, "unified": {"memory.high": "1G"}}"#,
        );
        assert_eq!(
            limits(&r),
            [
                "memory.limit",
                "memory.reservation",
                "memory.swap",
                "cpu.shares",
                "cpu.quota",
                "cpu.cpus",
                "cpu.mems",
                "pids.limit",
                "unified"
            ]
        );
        let r = parse(r#"{"memory": {"limit": 67108864}, "pids": {"limit": 10}}"#);
        let err = check_without_cgroups(&r, "not cgroup2")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "linux.resources.memory.limit, linux.resources.pids.limit: \
                 limits need cgroup v2, which this host lacks (not cgroup2)"
            ),
            "{err}"
        );
    }

    #[test]
    fn no_cgroups_backend() {
        let cg = NoCgroups("v1 host".into());
        assert_eq!(cg.available(), Err("v1 host".into()));
        assert!(cg
            .create("x", &Resources::default(), MemoryCgroup::Own)
            .is_err());
        assert!(cg.kill_all("x").is_ok());
        assert!(cg.delete("x").is_ok());
    }
}
