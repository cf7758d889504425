//! `create`: everything up to the init blocked on `exec.fifo`.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::runtime::{check_id, state_err, Runtime, RuntimeError};
use crate::runtime::cgroups;
use crate::runtime::hooks::{self, Hooks, Kind};
use crate::runtime::plan::{Plan, PlanError};
use crate::runtime::process::{self, SpawnOptions, Spawned};
use crate::runtime::spec::Spec;
use crate::runtime::state::{self, Record};
use crate::runtime::sys;

/// Options of `create` (runc's flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// The bundle directory (`--bundle`, default the current directory).
    pub bundle: PathBuf,
    /// Write the init's pid here (`--pid-file`).
    pub pid_file: Option<PathBuf>,
    /// Pass fds 3..3+n into the container (`--preserve-fds`).
    pub preserve_fds: u32,
    /// Where the primary side of a `process.terminal` goes.
    pub console: Console,
}

/// Who receives the pseudo-terminal of a container whose
/// `process.terminal` is true.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Console {
    /// Nobody: such a container is refused (runc without
    /// `--console-socket`).
    #[default]
    Refuse,
    /// Sent with `SCM_RIGHTS` to the unix stream socket at this path
    /// (`--console-socket`), as runc does.
    Socket(PathBuf),
    /// Left in the created container's [`Spawned::console`].
    Keep,
}

/// A created container, as seen by the process that created it.
#[derive(Debug)]
pub struct Container {
    /// Its id.
    pub id: String,
    /// The init process.
    pub process: Spawned,
    /// The validated plan.
    pub plan: Plan,
    /// The state directory.
    pub dir: PathBuf,
    /// The state record.
    pub record: Record,
}

/// Undoes a half-made `create` when dropped before [`Cleanup::disarm`].
/// Once the init was started, that is a delete: `poststop` hooks run.
struct Cleanup<'a> {
    rt: &'a Runtime,
    dir: Option<PathBuf>,
    cgroup: Option<String>,
    poststop: Option<(&'a Hooks, &'a str)>,
    /// Without a mount namespace: the rootfs and the id of the mount it was
    /// on before the init bound it (see [`Runtime::detach_host_mounts`]).
    host_root: Option<(PathBuf, u64)>,
}

impl Cleanup<'_> {
    fn disarm(mut self) {
        self.dir = None;
        self.cgroup = None;
        self.poststop = None;
        self.host_root = None;
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some((rootfs, before)) = self.host_root.take() {
            if sys::mount_id(&rootfs).is_ok_and(|now| now != before) {
                self.rt.detach_host_mounts(&rootfs);
            }
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = self.rt.cgroups.delete(&cg) {
                self.rt.log.warn(&format!("cleanup: {e}"));
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
        if let Some((list, id)) = self.poststop.take() {
            let _ = list.run_all(Kind::Poststop, hooks::STOPPED, None, &mut |e| {
                self.rt.log.warn(&format!("{id}: {e}"));
                Ok(())
            });
        }
    }
}

impl Runtime {
    /// Creates container `id` from the bundle: namespaces, root file system,
    /// cgroup, and an init blocked before `execve` until [`Runtime::start`].
    /// On failure nothing is left behind (no state directory, cgroup or
    /// process; mounts only ever exist in the container's mount namespace).
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Container, RuntimeError> {
        check_id(id)?;
        // Everything that can be checked without side effects comes first.
        let spec = Spec::load(&opts.bundle)?;
        let plan = Plan::new(id, &opts.bundle, &spec)?;
        if plan.terminal && opts.console == Console::Refuse {
            return Err(PlanError::Terminal.into());
        }
        for w in &plan.warnings {
            self.log.warn(w);
        }
        // Limits that no cgroup would hold are refused, not dropped.
        let backend = self.cgroups.available();
        if let Err(reason) = &backend {
            cgroups::check_without_cgroups(&plan.resources, reason)?;
        }

        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(state_err(&self.root))?;
        let dir = self.dir(id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::Exists(id.to_string()))
            }
            Err(e) => return Err(state_err(&dir)(e)),
        }
        let mut cleanup = Cleanup {
            rt: self,
            dir: Some(dir.clone()),
            cgroup: None,
            poststop: None,
            host_root: None,
        };

        // exec.fifo: the init opens it for writing and blocks until `start`.
        let fifo_path = dir.join(state::FIFO);
        let fifo = sys::mkfifo(&fifo_path, 0o622)
            .map_err(io::Error::from)
            .and_then(|()| fs::set_permissions(&fifo_path, fs::Permissions::from_mode(0o622)))
            .and_then(|()| {
                File::options()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                    .open(&fifo_path)
            })
            .map_err(state_err(&fifo_path))?;

        // cgroup.
        let mut cgroup_fd: Option<OwnedFd> = None;
        match backend {
            Ok(()) => {
                cgroup_fd = Some(self.cgroups.create(
                    &plan.cgroup_path,
                    &plan.resources,
                    plan.memory_cgroup,
                )?);
                cleanup.cgroup = Some(plan.cgroup_path.clone());
            }
            Err(reason) => self
                .log
                .info(&format!("{id}: running without a cgroup: {reason}")),
        }

        // Without a mount namespace the init mounts in ours (as runc does):
        // a failure must take that down again.
        if plan.shared_mount_ns {
            let before =
                sys::mount_id(&plan.rootfs).map_err(|e| state_err(&plan.rootfs)(e.into()))?;
            cleanup.host_root = Some((plan.rootfs.clone(), before));
        }
        cleanup.poststop = Some((&plan.hooks, id));
        let mut spawned = process::spawn(
            &plan,
            &SpawnOptions {
                fifo: fifo.as_fd(),
                cgroup: cgroup_fd.as_ref().map(|f| f.as_fd()),
                cgroup_procs: cleanup.cgroup.as_ref().map(|c| self.cgroups.procs_file(c)),
                preserve_fds: opts.preserve_fds,
                legacy_clone: self.legacy_clone,
                mount_source: self.mount_source.as_ref(),
            },
        )?;
        if !spawned.clone3 {
            self.log
                .info(&format!("{id}: clone3 unavailable, used clone"));
        }

        let record = Record {
            id: id.to_string(),
            pid: spawned.pid,
            start_time: state::proc_stat(spawned.pid).map_or(0, |(_, t)| t),
            bundle: plan.bundle.clone(),
            rootfs: plan.rootfs.clone(),
            created: state::rfc3339_now(),
            annotations: plan.annotations.clone(),
            cgroup: cleanup.cgroup.clone(),
            hooks: spec.hooks.clone(),
            host_mount: cleanup
                .host_root
                .as_ref()
                .and_then(|(rootfs, _)| sys::mount_id(rootfs).ok()),
        };
        let saved = state::save(&dir, &record)
            .map_err(state_err(&dir.join(state::STATE_FILE)))
            .and_then(|()| match &opts.pid_file {
                Some(p) => {
                    mkhost_shared::fs::write_atomic(p, spawned.pid.to_string().as_bytes(), 0o644)
                        .map_err(state_err(p))
                }
                None => Ok(()),
            });
        let saved = saved.and_then(|()| match &opts.console {
            Console::Socket(path) => send_console(path, &mut spawned),
            Console::Refuse | Console::Keep => Ok(()),
        });
        if let Err(e) = saved {
            spawned.kill();
            return Err(e);
        }
        cleanup.disarm();
        Ok(Container {
            id: id.to_string(),
            process: spawned,
            plan,
            dir,
            record,
        })
    }
}

/// Sends the terminal's primary side to the `--console-socket` at `path`
/// (a unix stream socket; the message is the terminal's name, as runc's).
fn send_console(path: &Path, spawned: &mut Spawned) -> Result<(), RuntimeError> {
    let Some(console) = spawned.console.take() else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixStream::connect(path).map_err(state_err(path))?;
    crate::os::send_with_fds(sock.as_fd(), b"/dev/ptmx", &[console.as_fd()])
        .map_err(state_err(path))
}
