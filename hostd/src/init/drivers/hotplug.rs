//! Hotplug: drivers, disks and NICs for devices that appear after coldplug,
//! for as long as the host runs.
//!
//! Coldplug ([`crate::init::drivers::coldplug`]) loads the drivers of the
//! devices present when it scans. Many devices come later: a USB stick
//! enumerates only once `xhci_pci` is loaded, a SCSI disk only once its
//! host adapter's driver scanned the bus, a USB NIC, a disk or NIC hot-added
//! to a running server. The kernel announces each one as a uevent
//! ([`crate::init::drivers::uevent`]).
//!
//! 1. [`Listener::open`] subscribes to uevents *before* the boot modules and
//!    coldplug run, with a large receive buffer, so every device added from
//!    then on is queued for us, however long coldplug takes.
//! 2. Coldplug scans and loads as before and reports the modules it tried.
//! 3. [`start`] hands the socket to one thread that first drains what queued
//!    up meanwhile, then waits for more. A device's `add` with a `MODALIAS`
//!    is looked up in the module index; modules already loaded
//!    (`/proc/modules`) or already tried (by the boot, coldplug or an
//!    earlier event) are not loaded again ([`Dedupe`]), so a device that
//!    appeared while coldplug ran is neither missed nor loaded twice. The
//!    rest is loaded with its dependencies, one event at a time, at most
//!    [`MAX_PLAN`] modules per event.
//! 4. Disks and partitions bump a generation counter the boot watches while
//!    it waits for the boot stick's ESP ([`Activity`]); disks that come or go
//!    after the boot get a console line.
//! 5. Physical NICs go to the network setup once it runs
//!    ([`Shared::set_nic_handler`]; before that they are kept, and the
//!    network step finds them itself).
//!
//! What the thread does not do: anything for devices under
//! `/devices/virtual` (veths, bridges, tun: containers create thousands),
//! events without a modalias, removals other than disks, datagrams not sent
//! by the kernel. A device that matches nothing in the image is looked up in
//! the index of absent modules ([`crate::init::drivers::absent`]) a second
//! after it appeared, unless a built-in driver took it meanwhile, and the
//! console names the module and the profile key that adds it.
//!
//! If the kernel drops events because the queue is full (`ENOBUFS`), the
//! thread rescans `/sys/devices` as coldplug does, and the network and the
//! boot's ESP wait look again. The module index is dropped after
//! [`INDEX_IDLE`] without driver work and read again when a device needs it,
//! so PID 1 stays small on a host whose hardware does not change. Nothing
//! here can stop init: every failure is a console line.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mkhost_shared::init_status::{self, InitStatus, LateModule, MissingDriver};
use mkhost_shared::paths;

use crate::init::drivers::absent;
use crate::init::drivers::coldplug;
use crate::init::drivers::modules::{self, ModuleDb, ModuleLoad};
use crate::init::drivers::uevent::{self, Work};
use crate::init::mounts::at;
use crate::init::timeline;
use crate::os;

/// The socket's receive buffer: room for tens of thousands of queued events
/// (the kernel only uses it while events wait).
pub const RECEIVE_BUFFER: usize = 16 << 20;
/// Most datagrams read before the thread looks at its timers again.
pub const BATCH: usize = 256;
/// Most modules (with dependencies) one event may load.
pub const MAX_PLAN: usize = 32;
/// How long a device without a driver may wait for a built-in one before
/// the missing module is named.
pub const UNMATCHED_GRACE: Duration = Duration::from_secs(1);
/// The module index is dropped after this long without a device to drive.
pub const INDEX_IDLE: Duration = Duration::from_secs(10);
/// Most devices waiting for the missing-module check at once.
pub const MAX_UNMATCHED: usize = 64;
/// Modaliases remembered as handled (then the memory starts over).
pub const MAX_SEEN: usize = 4096;
/// Least time between two rescans after lost events.
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);
/// The hotplug thread's nice value.
pub const THREAD_NICE: i32 = 10;
/// Least time between two status file writes.
pub const STATUS_EVERY: Duration = Duration::from_millis(500);

/// The uevent socket, open from before coldplug.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Subscribes to the kernel's uevents.
    pub fn open() -> io::Result<Listener> {
        Ok(Listener {
            fd: os::uevent_socket(RECEIVE_BUFFER)?,
        })
    }
}

/// Which modules to load for which device, without loading anything twice.
#[derive(Debug, Default)]
pub struct Dedupe {
    tried: HashSet<String>,
    seen: HashSet<String>,
}

impl Dedupe {
    /// Starts with the modules the boot and coldplug already tried.
    pub fn new(tried: impl IntoIterator<Item = String>) -> Self {
        Self {
            tried: tried.into_iter().map(|m| modules::normalize(&m)).collect(),
            seen: HashSet::new(),
        }
    }

    /// Whether `modalias` is new (and remembers it). A device type seen
    /// before was handled then: the same modalias asks for the same modules.
    pub fn first_time(&mut self, modalias: &str) -> bool {
        if self.seen.contains(modalias) {
            return false;
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        self.seen.insert(modalias.to_string());
        true
    }

    /// The modules of `wanted` that are neither loaded (`present`) nor
    /// tried before; they count as tried from now on.
    pub fn to_load(&mut self, wanted: &[String], present: &HashSet<String>) -> Vec<String> {
        let mut out = Vec::new();
        for m in wanted {
            let m = modules::normalize(m);
            if present.contains(&m) || self.tried.contains(&m) {
                continue;
            }
            self.tried.insert(m.clone());
            out.push(m);
        }
        out
    }

    /// Marks `name` as tried (a dependency loaded with a module).
    pub fn tried(&mut self, name: &str) {
        self.tried.insert(modules::normalize(name));
    }

    /// Forgets the modaliases (after lost events, so a rescan looks again).
    pub fn forget_devices(&mut self) {
        self.seen.clear();
    }
}

/// What the boot needs to know while it waits for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Bumped whenever a disk or partition appears or a disk goes away.
    pub block_generation: u64,
    /// How long since the last uevent or module load.
    pub quiet_for: Duration,
    /// A module is being loaded right now.
    pub busy: bool,
}

/// Handles a physical NIC that appeared (runs on the hotplug thread).
pub type NicHandler = Arc<dyn Fn(&str) + Send + Sync>;

struct SharedState {
    block_generation: u64,
    last_activity: Instant,
    busy: bool,
    nic_handler: Option<NicHandler>,
    pending_nics: Vec<String>,
    booted: bool,
}

/// State shared by the hotplug thread and the boot.
pub struct Shared {
    state: Mutex<SharedState>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            state: Mutex::new(SharedState {
                block_generation: 0,
                last_activity: Instant::now(),
                busy: false,
                nic_handler: None,
                pending_nics: Vec::new(),
                booted: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot for the boot's waits.
    pub fn activity(&self) -> Activity {
        let s = self.lock();
        Activity {
            block_generation: s.block_generation,
            quiet_for: s.last_activity.elapsed(),
            busy: s.busy,
        }
    }

    /// From now on NICs that appear go to `handler`; returns the ones that
    /// appeared before (the caller hands them over itself: the handler must
    /// ignore interfaces it already configured).
    pub fn set_nic_handler(&self, handler: NicHandler) -> Vec<String> {
        let mut s = self.lock();
        s.nic_handler = Some(handler);
        std::mem::take(&mut s.pending_nics)
    }

    /// The host is ready: the thread may do its low-priority work (naming
    /// the missing drivers of the devices coldplug found).
    pub fn set_booted(&self) {
        self.lock().booted = true;
    }

    fn touch(&self) {
        self.lock().last_activity = Instant::now();
    }

    fn bump_block(&self) {
        let mut s = self.lock();
        s.block_generation += 1;
        s.last_activity = Instant::now();
    }

    fn set_busy(&self, busy: bool) {
        let mut s = self.lock();
        s.busy = busy;
        s.last_activity = Instant::now();
    }

    fn nic(&self, name: &str) {
        let handler = {
            let mut s = self.lock();
            match &s.nic_handler {
                Some(h) => h.clone(),
                None => {
                    if !s.pending_nics.iter().any(|n| n == name) && s.pending_nics.len() < 256 {
                        s.pending_nics.push(name.to_string());
                    }
                    return;
                }
            }
        };
        handler(name);
    }

    fn booted(&self) -> bool {
        self.lock().booted
    }
}

/// The running hotplug thread.
pub struct Hotplug {
    shared: Arc<Shared>,
}

impl Hotplug {
    /// The state shared with the thread.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// What [`start`] takes over from the boot.
pub struct Context {
    /// `/` (or a test root).
    pub root: PathBuf,
    /// `/lib/modules/<release>`.
    pub module_dir: PathBuf,
    /// The index coldplug used (kept while boot-time events are handled).
    pub db: Option<ModuleDb>,
    /// Modules the boot and coldplug tried.
    pub tried: HashSet<String>,
    /// Modaliases of the devices coldplug found no module for.
    pub unclaimed: Vec<String>,
}

/// Starts the hotplug thread on `listener`.
pub fn start(listener: Listener, context: Context) -> io::Result<Hotplug> {
    let shared = Arc::new(Shared::new());
    let mut worker = Worker {
        fd: listener.fd,
        status_path: at(&context.root, paths::INIT_STATUS),
        sys_devices: at(&context.root, "/sys/devices"),
        proc_modules: at(&context.root, "/proc/modules"),
        root: context.root,
        module_dir: context.module_dir,
        db: context.db,
        db_used: Instant::now(),
        dedupe: Dedupe::new(context.tried),
        unmatched: Vec::new(),
        unclaimed: context.unclaimed,
        named: HashSet::new(),
        shared: shared.clone(),
        drained: false,
        rescan_due: false,
        last_rescan: None,
        status: InitStatus::default(),
        dirty: true,
        last_write: None,
        last_overflow_warning: None,
        burst: 0,
    };
    std::thread::Builder::new()
        .name("hotplug".into())
        .stack_size(256 * 1024)
        .spawn(move || worker.run())?;
    Ok(Hotplug { shared })
}

/// A device no module of the image matched, waiting for its grace period.
struct Unmatched {
    devpath: String,
    modalias: String,
    since: Instant,
}

struct Worker {
    fd: OwnedFd,
    root: PathBuf,
    status_path: PathBuf,
    sys_devices: PathBuf,
    proc_modules: PathBuf,
    module_dir: PathBuf,
    db: Option<ModuleDb>,
    db_used: Instant,
    dedupe: Dedupe,
    unmatched: Vec<Unmatched>,
    /// Coldplug's driverless devices, looked up once the host is ready.
    unclaimed: Vec<String>,
    /// Modules already named as missing.
    named: HashSet<String>,
    shared: Arc<Shared>,
    /// The backlog from before the thread started has been read.
    drained: bool,
    rescan_due: bool,
    last_rescan: Option<Instant>,
    status: InitStatus,
    dirty: bool,
    last_write: Option<Instant>,
    last_overflow_warning: Option<Instant>,
    /// Events since the heap was last trimmed.
    burst: usize,
}

impl Worker {
    fn run(&mut self) {
        // Behind the boot on a busy CPU (under TCG the boot-time backlog
        // cost PXE boots ~20 ms); when the boot waits for a device, the
        // CPU is free and this thread runs at once.
        let _ = os::set_thread_nice(THREAD_NICE);
        let mut buf = vec![0u8; uevent::MAX_PACKET];
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = os::poll_readable(&[self.fd.as_fd()], timeout) {
                timeline::error(&format!("hotplug: cannot wait for device events: {e}"));
                std::thread::sleep(Duration::from_secs(1));
            }
            for _ in 0..BATCH {
                match os::recv_uevent(self.fd.as_fd(), &mut buf) {
                    Ok(Some(packet)) => {
                        self.status.events += 1;
                        self.burst += 1;
                        self.dirty = true;
                        self.shared.touch();
                        if !packet.from_kernel || packet.truncated {
                            self.status.refused += 1;
                            continue;
                        }
                        match uevent::parse(&buf[..packet.len]) {
                            Ok(event) => self.handle(&event),
                            Err(_) => self.status.refused += 1,
                        }
                    }
                    Ok(None) => {
                        self.drained = true;
                        // After a flood (a thousand veths), give the heap
                        // back once it is over.
                        if self.burst >= BATCH {
                            self.burst = 0;
                            os::trim_heap();
                        }
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.overflowed(),
                    Err(e) => {
                        timeline::error(&format!("hotplug: cannot read device events: {e}"));
                        std::thread::sleep(Duration::from_secs(1));
                        break;
                    }
                }
            }
            self.housekeeping(Instant::now());
        }
    }

    /// When the thread must look at its timers again (`None`: only on events).
    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        let mut due: Vec<Instant> = Vec::new();
        if let Some(u) = self.unmatched.first() {
            due.push(u.since + UNMATCHED_GRACE);
        }
        if self.db.is_some() {
            due.push(self.db_used + INDEX_IDLE);
        }
        if self.dirty {
            due.push(self.last_write.map_or(now, |t| t + STATUS_EVERY));
        }
        if self.rescan_due {
            due.push(self.last_rescan.map_or(now, |t| t + RESCAN_EVERY));
        }
        if !self.unclaimed.is_empty() {
            // Polls for the ready flag; the list is empty once done.
            due.push(now + Duration::from_millis(500));
        }
        due.into_iter()
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    fn handle(&mut self, event: &uevent::Uevent<'_>) {
        match uevent::classify(event) {
            Work::Driver { modalias } => self.driver(event.devpath, modalias),
            Work::Disk { name, added } => {
                self.shared.bump_block();
                if added {
                    if self.drained {
                        let size = fs::read_to_string(
                            self.root.join("sys/class/block").join(name).join("size"),
                        )
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map_or(String::new(), |sectors| {
                            format!(" ({} MiB)", sectors / 2048)
                        });
                        timeline::phase(&format!("hotplug: disk {name} appeared{size}"));
                        init_status::push_capped(&mut self.status.late_disks, name.to_string());
                        self.dirty = true;
                    }
                } else {
                    timeline::warning(&format!("hotplug: disk {name} was removed"));
                }
            }
            Work::Partition { .. } => self.shared.bump_block(),
            Work::Nic { name } => {
                if self.drained {
                    init_status::push_capped(&mut self.status.late_nics, name.to_string());
                    self.dirty = true;
                }
                self.shared.nic(name);
            }
            Work::Ignore => {}
        }
    }

    fn index(&mut self) -> Option<&ModuleDb> {
        self.db_used = Instant::now();
        if self.db.is_none() {
            match ModuleDb::load(&self.module_dir) {
                Ok(db) => self.db = Some(db),
                Err(e) => {
                    timeline::warning(&format!("hotplug: {e}"));
                    return None;
                }
            }
        }
        self.db.as_ref()
    }

    /// A new device asks for `modalias`.
    fn driver(&mut self, devpath: &str, modalias: &str) {
        if !self.dedupe.first_time(modalias) {
            return;
        }
        let Some(db) = self.index() else { return };
        let wanted = db.lookup(modalias);
        if wanted.is_empty() {
            if self.unmatched.len() < MAX_UNMATCHED {
                self.unmatched.push(Unmatched {
                    devpath: devpath.to_string(),
                    modalias: modalias.to_string(),
                    since: Instant::now(),
                });
            }
            return;
        }
        let present = modules::parse_proc_modules(
            &fs::read_to_string(&self.proc_modules).unwrap_or_default(),
        );
        let to_load = self.dedupe.to_load(&wanted, &present);
        if to_load.is_empty() {
            return;
        }
        let Some(db) = self.db.as_ref() else { return };
        let (mut plan, _) = db.plan(&to_load, &present);
        plan.modules.truncate(MAX_PLAN);
        for m in &plan.modules {
            self.dedupe.tried(&m.name);
        }
        self.shared.set_busy(true);
        let t = Instant::now();
        let module_dir = &self.module_dir;
        let outcomes = modules::run_plan(&plan, 1, |m| {
            modules::load_module(&module_dir.join(&m.rel_path))
        });
        self.shared.set_busy(false);
        let mut loaded = Vec::new();
        for o in outcomes {
            match o.result {
                Ok(ModuleLoad::Loaded) => loaded.push(o.name),
                Ok(ModuleLoad::AlreadyLoaded) | Ok(ModuleLoad::NoDevice) => {}
                Err(e) => timeline::warning(&format!("hotplug: {e}")),
            }
        }
        if loaded.is_empty() {
            return;
        }
        let now_ms = os::boottime_ms();
        timeline::phase(&format!(
            "hotplug: loaded {} for {modalias} ({}) in {} ms",
            loaded.join(" "),
            uevent::short_devpath(devpath),
            t.elapsed().as_millis()
        ));
        for module in loaded {
            init_status::push_capped(
                &mut self.status.late_modules,
                LateModule {
                    module,
                    device: modalias.to_string(),
                    at_ms: now_ms,
                },
            );
        }
        self.dirty = true;
    }

    /// The kernel dropped events: look at every device again, soon.
    fn overflowed(&mut self) {
        self.status.overflows += 1;
        self.dirty = true;
        self.rescan_due = true;
        let now = Instant::now();
        if self
            .last_overflow_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_overflow_warning = Some(now);
            timeline::warning(
                "hotplug: the kernel dropped device events (queue full); rescanning devices",
            );
        }
    }

    fn rescan(&mut self) {
        self.rescan_due = false;
        self.last_rescan = Some(Instant::now());
        self.dedupe.forget_devices();
        // Not /sys/devices/virtual: with thousands of veths it is most of
        // sysfs, and nothing there needs a driver.
        let mut devices = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.sys_devices) {
            for entry in entries.flatten() {
                if entry.file_name() != "virtual" {
                    devices.extend(coldplug::scan(&entry.path()));
                }
            }
        }
        for device in devices {
            let devpath = device
                .path
                .strip_prefix(self.root.join("sys"))
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_default();
            self.driver(&devpath, &device.modalias);
        }
        // Disks and NICs: the ESP wait reads every disk on a new generation,
        // and the network handler ignores interfaces it knows.
        self.shared.bump_block();
        let names: Vec<String> = fs::read_dir(self.root.join("sys/class/net"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        fs::read_link(e.path()).is_ok_and(|target| {
                            !target.to_string_lossy().contains("/devices/virtual/")
                        })
                    })
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for name in names {
            self.shared.nic(&name);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        if self.rescan_due
            && self
                .last_rescan
                .is_none_or(|t| now.duration_since(t) >= RESCAN_EVERY)
        {
            self.rescan();
        }
        let due = self
            .unmatched
            .iter()
            .take_while(|u| now.duration_since(u.since) >= UNMATCHED_GRACE)
            .count();
        if due > 0 {
            let ripe: Vec<Unmatched> = self.unmatched.drain(..due).collect();
            let sys = self.root.join("sys");
            let driverless: Vec<&Unmatched> = ripe
                .iter()
                .filter(|u| {
                    !sys.join(u.devpath.trim_start_matches('/'))
                        .join("driver")
                        .exists()
                })
                .collect();
            let devices: Vec<(&str, &str)> = driverless
                .iter()
                .map(|u| (u.modalias.as_str(), uevent::short_devpath(&u.devpath)))
                .collect();
            self.name_missing(&devices, true);
        }
        if !self.unclaimed.is_empty() && self.drained && self.shared.booted() {
            let unclaimed = std::mem::take(&mut self.unclaimed);
            let devices: Vec<(&str, &str)> = unclaimed
                .iter()
                .map(|m| (m.as_str(), "present at boot"))
                .collect();
            self.name_missing(&devices, false);
        }
        if self.db.is_some() && now.duration_since(self.db_used) >= INDEX_IDLE {
            self.db = None;
            os::trim_heap();
        }

        if self.dirty
            && self
                .last_write
                .is_none_or(|t| now.duration_since(t) >= STATUS_EVERY)
        {
            self.write_status();
        }
    }

    /// Names the absent modules the `(modalias, where)` devices need: a
    /// warning for devices that came after coldplug, an informational line
    /// for the ones coldplug found. Each module is named once.
    fn name_missing(&mut self, devices: &[(&str, &str)], late: bool) {
        if devices.is_empty() {
            return;
        }
        let modaliases: Vec<&str> = devices.iter().map(|(m, _)| *m).collect();
        let found = absent::lookup(&self.module_dir, &modaliases);
        for ((modalias, place), missing) in devices.iter().zip(found) {
            let missing: Vec<absent::Missing> = missing
                .into_iter()
                .filter(|m| !self.named.contains(&m.module))
                .collect();
            let Some(first) = missing
                .iter()
                .find(|m| !m.sets.is_empty())
                .or(missing.first())
            else {
                continue;
            };
            let key = first.profile_key();
            let names: Vec<&str> = missing.iter().map(|m| m.module.as_str()).collect();
            let line = format!(
                "{}: no driver in the image for {modalias} ({place}): it needs module {}; \
                 add it to the profile with {key}",
                if late { "hotplug" } else { "coldplug" },
                names.join(" or ")
            );
            if late {
                timeline::warning(&line);
            } else {
                timeline::info(&line);
            }
            for m in missing {
                self.named.insert(m.module.clone());
                init_status::push_capped(
                    &mut self.status.missing,
                    MissingDriver {
                        profile_key: m.profile_key(),
                        module: m.module,
                        device: modalias.to_string(),
                    },
                );
            }
            self.dirty = true;
        }
    }

    fn write_status(&mut self) {
        self.dirty = false;
        self.last_write = Some(Instant::now());
        let Ok(mut text) = serde_json::to_vec(&self.status) else {
            return;
        };
        text.push(b'\n');
        if let Some(dir) = self.status_path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        if let Err(e) = mkhost_shared::fs::write_atomic(&self.status_path, &text, 0o644) {
            timeline::warning(&format!(
                "hotplug: cannot write {}: {e}",
                self.status_path.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_loads_each_module_once() {
        let mut d = Dedupe::new(["virtio-pci".to_string()]);
        let present: HashSet<String> = ["xhci_pci".to_string()].into();
        // Coldplug tried virtio_pci (named with a dash), xhci_pci is loaded.
        let wanted = vec![
            "virtio_pci".to_string(),
            "xhci_pci".to_string(),
            "usb_storage".to_string(),
        ];
        assert_eq!(d.to_load(&wanted, &present), ["usb_storage"]);
        // Asked again (a second stick, or the same event drained after
        // coldplug): nothing.
        assert!(d.to_load(&wanted, &present).is_empty());
        d.tried("sd-mod");
        assert!(d.to_load(&["sd_mod".to_string()], &present).is_empty());
    }

    #[test]
    fn dedupe_remembers_modaliases_bounded() {
        let mut d = Dedupe::default();
        assert!(d.first_time("pci:v1"));
        assert!(!d.first_time("pci:v1"));
        for i in 0..MAX_SEEN {
            d.first_time(&format!("usb:v{i}"));
        }
        assert!(d.seen.len() <= MAX_SEEN);
        d.forget_devices();
        assert!(d.first_time("pci:v1"));
    }

    #[test]
    fn nics_wait_for_the_network_then_go_to_it() {
        let shared = Shared::new();
        shared.nic("eth1");
        shared.nic("eth1");
        shared.nic("eth2");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        let pending = shared.set_nic_handler(Arc::new(move |n: &str| {
            sink.lock().unwrap().push(n.to_string())
        }));
        assert_eq!(pending, ["eth1", "eth2"]);
        shared.nic("eth3");
        assert_eq!(*seen.lock().unwrap(), ["eth3"]);
    }

    #[test]
    fn activity_counts_block_changes() {
        let shared = Shared::new();
        let a = shared.activity();
        shared.bump_block();
        shared.set_busy(true);
        let b = shared.activity();
        assert_eq!(b.block_generation, a.block_generation + 1);
        assert!(b.busy);
    }

    fn test_worker(root: &std::path::Path, module_dir: &std::path::Path) -> Worker {
        Worker {
            fd: os::uevent_socket(1 << 16).unwrap(),
            root: root.to_path_buf(),
            status_path: root.join("run/mkhost/init.json"),
            sys_devices: root.join("sys/devices"),
            proc_modules: root.join("proc/modules"),
            module_dir: module_dir.to_path_buf(),
            db: None,
            db_used: Instant::now(),
            dedupe: Dedupe::default(),
            unmatched: Vec::new(),
            unclaimed: Vec::new(),
            named: HashSet::new(),
            shared: Arc::new(Shared::new()),
            drained: true,
            rescan_due: false,
            last_rescan: None,
            status: InitStatus::default(),
            dirty: false,
            last_write: None,
            last_overflow_warning: None,
            burst: 0,
        }
    }

    #[test]
    fn lost_events_rescan_devices_but_not_virtual_ones() {
        let root = tempfile::tempdir().unwrap();
        let module_dir = root.path().join("lib/modules/0.0-test");
        fs::create_dir_all(&module_dir).unwrap();
        fs::write(
            module_dir.join("modules.dep"),
            "kernel/b.ko:\nkernel/v.ko:\n",
        )
        .unwrap();
        fs::write(
            module_dir.join("modules.alias"),
            "alias pci:v0002* b\nalias virt:* v\n",
        )
        .unwrap();
        let devices = root.path().join("sys/devices");
        fs::create_dir_all(devices.join("pci0000:00/0000:00:07.0")).unwrap();
        fs::write(
            devices.join("pci0000:00/0000:00:07.0/modalias"),
            "pci:v0002d1\n",
        )
        .unwrap();
        fs::create_dir_all(devices.join("virtual/net/veth0")).unwrap();
        fs::write(devices.join("virtual/net/veth0/modalias"), "virt:x\n").unwrap();
        let mut w = test_worker(root.path(), &module_dir);
        let generation = w.shared.activity().block_generation;
        w.overflowed();
        w.overflowed();
        assert_eq!(w.status.overflows, 2);
        w.housekeeping(Instant::now());
        assert!(!w.rescan_due);
        // b was tried (its file is missing: a warning), v never looked at.
        assert!(w.dedupe.tried.contains("b"));
        assert!(!w.dedupe.tried.contains("v"));
        assert!(w.shared.activity().block_generation > generation);
        // The next loss within RESCAN_EVERY waits for its turn.
        w.overflowed();
        w.housekeeping(Instant::now());
        assert!(w.rescan_due);
    }

    #[test]
    fn worker_handles_a_hostile_stream_without_loading_anything() {
        // A worker with an empty module index, fed events directly: veths,
        // garbage, a device nothing matches. Nothing is loaded, no panic.
        let root = tempfile::tempdir().unwrap();
        let module_dir = root.path().join("lib/modules/0.0-test");
        fs::create_dir_all(&module_dir).unwrap();
        fs::write(module_dir.join("modules.dep"), "kernel/a.ko:\n").unwrap();
        fs::write(module_dir.join("modules.alias"), "alias pci:v0001* a\n").unwrap();
        let mut w = test_worker(root.path(), &module_dir);
        let shared = w.shared.clone();
        for i in 0..1000 {
            let p = format!(
                "add@/devices/virtual/net/veth{i}\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=veth{i}\0"
            );
            w.handle(&uevent::parse(p.as_bytes()).unwrap());
        }
        assert!(w.db.is_none(), "veths made the index load");
        assert!(shared.lock().pending_nics.is_empty());
        // A device of module `a`, whose file is missing: a warning, tried once.
        let p = "add@/devices/pci0000:00/0000:00:09.0\0SUBSYSTEM=pci\0MODALIAS=pci:v0001d2\0";
        w.handle(&uevent::parse(p.as_bytes()).unwrap());
        w.handle(&uevent::parse(p.as_bytes()).unwrap());
        assert!(w.status.late_modules.is_empty());
        assert!(w.dedupe.tried.contains("a"));
        // A device nothing matches waits for its grace period, then is
        // looked up in modules.absent.
        fs::write(
            module_dir.join(absent::FILE),
            "module e1000\nset e1000 lab-nics\npci:v00008086d0000100E*\n",
        )
        .unwrap();
        let p = "add@/devices/pci0000:00/0000:00:04.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00008086d0000100Esv0\0";
        w.handle(&uevent::parse(p.as_bytes()).unwrap());
        assert_eq!(w.unmatched.len(), 1);
        w.housekeeping(Instant::now() + UNMATCHED_GRACE);
        assert!(w.unmatched.is_empty());
        assert_eq!(w.status.missing.len(), 1);
        assert_eq!(w.status.missing[0].module, "e1000");
        assert!(w.status.missing[0].profile_key.contains("lab-nics"));
        let written: InitStatus =
            serde_json::from_slice(&fs::read(root.path().join("run/mkhost/init.json")).unwrap())
                .unwrap();
        assert_eq!(written.missing, w.status.missing);
        // The index is dropped when idle.
        assert!(w.db.is_some());
        w.housekeeping(Instant::now() + INDEX_IDLE);
        assert!(w.db.is_none());
    }
}
