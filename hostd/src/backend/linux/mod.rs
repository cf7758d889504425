//! The Linux backend: containers in namespaces and cgroup v2, created by
//! the [`zygote`] with the OCI runtime ([`crate::runtime`]) from the
//! `config.json` [`oci`] writes, with overlayfs roots ([`root`]); what
//! bounds the host ([`limits`]) and what a container uses ([`stats`]) read
//! from `/proc` and the cgroup files.

pub mod inspect;
pub mod limits;
pub mod network;
pub mod oci;
pub mod root;
pub mod stats;
pub mod zygote;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use mkhost_shared::boot_config::MemoryCgroups;
use mkhost_shared::container::Limits;

use crate::backend::{
    Attached, Backend, CreateSpec, ExecSpec, Exit, HostLimits, Networking, ProcessRow, Running,
    Sample, StartError, Started,
};
use crate::log::log;
use crate::runtime::cgroups::Cgroupfs;
use zygote::{Zygote, ZygoteError, ZygoteReply, ZygoteRequest, ATTACH_BATCH};

/// Containers on this Linux host.
pub struct Linux {
    zygote: Zygote,
    /// The daemon's open-file limit, raised at start.
    files_limit: u64,
    /// Which containers get a memory cgroup of their own.
    memory_cgroups: MemoryCgroups,
    /// Its networking side.
    networking: Arc<network::LinuxNetworking>,
    /// The host's superblocks, for the cost of the next container.
    host_superblocks: limits::HostSuperblocks,
}

impl Linux {
    /// Lowers the daemon's OOM score (the zygote and the containers
    /// inherit it), takes over the zygote a previous daemon left under
    /// `state` (upgrading it to this binary if it runs another) or forks a
    /// new one, and raises the daemon's open-file limit. Containers without
    /// a memory limit share one memory cgroup when `memory_cgroups` says
    /// [`MemoryCgroups::Limited`].
    ///
    /// # Safety
    ///
    /// The process must have a single thread: this may fork.
    pub unsafe fn start(state: &Path, memory_cgroups: MemoryCgroups) -> Result<Linux, ZygoteError> {
        if let Err(e) = limits::protect_from_oom_killer() {
            log(&e);
        }
        // SAFETY: the caller guarantees the process has a single thread.
        let zygote = unsafe { take_over_or_start_zygote(state) }?;
        Ok(Linux {
            zygote,
            files_limit: crate::os::raise_nofile(1 << 20),
            memory_cgroups,
            networking: Arc::default(),
            host_superblocks: limits::HostSuperblocks::default(),
        })
    }

    fn call(&self, request: &ZygoteRequest) -> Result<(ZygoteReply, Vec<OwnedFd>), String> {
        self.zygote.call(request).map_err(|e| e.to_string())
    }

    /// A `created` answer: the pid and its descriptors, or why not.
    fn started(&self, request: &ZygoteRequest) -> Result<Started, StartError> {
        match self.call(request)? {
            (ZygoteReply::Created { pid }, fds) => Ok(Started {
                pid,
                running: running_from(fds)?,
            }),
            (ZygoteReply::Error { message, exec }, _) => Err(StartError { message, exec }),
            (other, _) => Err(format!("unexpected zygote answer {other:?}").into()),
        }
    }
}

/// The zygote a previous daemon left (upgraded to this binary if it runs
/// another), or a new one.
///
/// # Safety
///
/// The process must have a single thread: this may fork ([`Zygote::start`]).
unsafe fn take_over_or_start_zygote(state: &Path) -> Result<Zygote, ZygoteError> {
    let mut zygote = match Zygote::connect(state)? {
        None => {
            // SAFETY: the caller guarantees the process has a single thread.
            let zygote = unsafe { Zygote::start(state) }?;
            log(&format!("zygote running as pid {}", zygote.pid()));
            return Ok(zygote);
        }
        Some(z) => z,
    };
    let hello = zygote.hello().clone();
    log(&format!(
        "took over zygote pid {} holding {} containers",
        hello.pid, hello.containers
    ));
    let mine = zygote::exe_identity("self");
    if hello.exe != mine || hello.protocol != zygote::PROTOCOL {
        let exe = std::env::current_exe().map_err(ZygoteError::Start)?;
        zygote.upgrade(&exe)?;
        log(&format!(
            "zygote pid {} now runs {} (upgraded)",
            hello.pid,
            exe.display()
        ));
    }
    Ok(zygote)
}

/// Takes the pidfd, the pipe read ends and the input's write end (if
/// any) a `created` or `attached` answer carries.
fn running_from(fds: Vec<OwnedFd>) -> Result<Running, String> {
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(pidfd), Some(stdout), Some(stderr)) => Ok(Running {
            pidfd: Arc::new(pidfd),
            stdout,
            stderr,
            stdin: fds.next().map(Arc::new),
        }),
        _ => Err("the zygote sent too few descriptors".into()),
    }
}

impl Backend for Linux {
    fn create(&self, spec: &CreateSpec) -> Result<Started, StartError> {
        self.started(&ZygoteRequest::Create(Box::new(spec.clone())))
    }

    fn exec(&self, spec: &ExecSpec) -> Result<Started, StartError> {
        self.started(&ZygoteRequest::Exec(Box::new(spec.clone())))
    }

    fn attach_many(&self, ids: &[String]) -> Result<Vec<(String, Attached)>, String> {
        let attached = self.zygote.attach_many(ids).map_err(|e| e.to_string())?;
        Ok(attached
            .into_iter()
            .map(|(id, result)| {
                let started = result.and_then(|(pid, fds)| {
                    Ok(Started {
                        pid,
                        running: running_from(fds)?,
                    })
                });
                (id, started)
            })
            .collect())
    }

    fn attach_batch(&self) -> usize {
        ATTACH_BATCH
    }

    fn reap(&self, id: &str) -> Result<Option<Exit>, String> {
        match self.call(&ZygoteRequest::Reap { id: id.to_string() })? {
            (ZygoteReply::Reaped { code, oom_killed }, _) => {
                Ok(code.map(|code| Exit { code, oom_killed }))
            }
            (ZygoteReply::Error { message, .. }, _) => Err(message),
            (other, _) => Err(format!("unexpected zygote answer {other:?}")),
        }
    }

    fn close_input(&self, id: &str) -> Result<(), String> {
        // Any answer will do: the zygote refuses only a process it no
        // longer holds, whose input is closed already.
        self.call(&ZygoteRequest::CloseInput { id: id.to_string() })
            .map(drop)
    }

    fn delete(&self, id: &str) -> Result<(), String> {
        match self.call(&ZygoteRequest::Delete { id: id.to_string() })? {
            (ZygoteReply::Deleted, _) => Ok(()),
            (ZygoteReply::Error { message, .. }, _) => Err(message),
            (other, _) => Err(format!("unexpected zygote answer {other:?}")),
        }
    }

    fn signal(&self, process: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
        crate::runtime::sys::pidfd_send_signal(process, signal).map_err(io::Error::from)
    }

    fn resize_terminal(&self, terminal: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
        inspect::resize_terminal(terminal, rows, cols)
    }

    fn processes(&self, pid: i32) -> Vec<ProcessRow> {
        inspect::processes(pid)
    }

    fn read_in_container(&self, pid: i32, path: &str) -> Option<String> {
        inspect::read_in_container(pid, path)
    }

    fn networking(&self) -> Arc<dyn Networking> {
        self.networking.clone()
    }

    fn helper_gone(&self) -> io::Result<OwnedFd> {
        crate::runtime::sys::pidfd_open(self.zygote.pid()).map_err(io::Error::from)
    }

    fn sample(&self, spec: &CreateSpec) -> Option<Sample> {
        stats::sample(&oci::cgroup_path(&spec.id, spec.shared_memory_cgroup))
    }

    fn host_memory(&self) -> u64 {
        stats::host_memory()
    }

    fn freeze(&self, spec: &CreateSpec, frozen: bool) -> Result<(), String> {
        let cgroup = oci::cgroup_path(&spec.id, spec.shared_memory_cgroup);
        Cgroupfs::detect()
            .freeze(&cgroup, frozen)
            .map_err(|e| e.to_string())
    }

    fn limits(&self, running: u64) -> HostLimits {
        limits::host_limits(
            self.zygote.pid(),
            running,
            self.files_limit,
            self.memory_cgroups,
        )
    }

    fn check_room(&self, others: u64, spec: &CreateSpec) -> Result<(), String> {
        limits::check_room(
            others,
            self.files_limit,
            !spec.shared_memory_cgroup,
            &self.host_superblocks,
        )
    }

    fn shares_memory_accounting(&self, limits: &Limits) -> bool {
        self.memory_cgroups == MemoryCgroups::Limited && limits.memory.is_none()
    }

    fn make_bundle(&self, dir: &Path, spec: &CreateSpec) -> Result<(), String> {
        root::make_bundle(dir, spec)
    }

    fn root_options(&self, dir: &Path, spec: &CreateSpec) -> Option<String> {
        Some(root::overlay_options(dir, spec))
    }

    fn mount_root(&self, dir: &Path, spec: &CreateSpec) -> Result<(), String> {
        root::mount_root(dir, spec)
    }

    fn unmount_root(&self, rootfs: &Path) -> Result<(), String> {
        root::unmount_root(rootfs)
    }

    fn detach_root(&self, rootfs: &Path) {
        root::detach_root(rootfs)
    }

    fn open_root(
        &self,
        dir: &Path,
        spec: &CreateSpec,
        pid: i32,
    ) -> Result<(OwnedFd, bool), String> {
        root::open_root(dir, spec, pid)
    }

    fn fill_volume(&self, rootfs: &Path, target: &str, data: &Path) -> io::Result<()> {
        root::fill_from_image(rootfs, target, data)
    }
}
