//! `exec`: another process in a running container (`docker exec`), with
//! the container's namespaces, root, cgroup and security settings and a
//! process of its own (arguments, environment, user, working directory,
//! terminal).

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use super::runtime::{Runtime, RuntimeError};
use crate::runtime::plan::Plan;
use crate::runtime::process::{self, ExecInto, Spawned};
use crate::runtime::spec::{Process, Spec};
use crate::runtime::state::Status;
use crate::runtime::sys;

/// The namespaces `exec` joins, with their `/proc/PID/ns` names.
const NAMESPACES: [(&str, libc::c_int); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
];

impl Runtime {
    /// Starts `process` in running container `id`: its capabilities,
    /// seccomp filter, no_new_privs, AppArmor profile and rlimits come from
    /// `process` as they would for an init (build it from the container's
    /// `config.json`'s process, as Docker does); the namespaces, root and
    /// cgroup are the init's. Returns once the process `execve`d; with
    /// `process.terminal` its [`Spawned::console`] is the primary side of
    /// a new pseudo-terminal from the container's `/dev/pts`. Otherwise the
    /// caller's stdin, stdout and stderr are the process's.
    ///
    /// The caller must have a single thread (see [`process::spawn_exec`]).
    pub fn exec(&self, id: &str, process: &Process) -> Result<Spawned, RuntimeError> {
        let (_dir, record, status) = self.load(id)?;
        if status != Status::Running {
            return Err(RuntimeError::Status {
                id: id.to_string(),
                status,
                action: "exec into",
            });
        }
        let mut spec = Spec::load(&record.bundle)?;
        spec.process = Some(process.clone());
        // Hooks belong to the container's lifecycle, not to its processes.
        spec.hooks = None;
        let plan = Plan::new(id, &record.bundle, &spec)?;
        let process_err = |what: &'static str| {
            let id = id.to_string();
            move |source: sys::Errno| RuntimeError::Process { what, id, source }
        };
        let init = sys::pidfd_open(record.pid).map_err(process_err("cannot open the init of"))?;
        let namespaces = differing_namespaces(record.pid);
        let root = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(format!("/proc/{}/root", record.pid))
            .map_err(|e| {
                process_err("cannot open the root of")(sys::Errno(
                    e.raw_os_error().unwrap_or(libc::EIO),
                ))
            })?;
        let spawned = process::spawn_exec(
            &plan,
            &ExecInto {
                init: init.as_fd(),
                namespaces,
                root: root.as_fd(),
                cgroup: None,
                cgroup_procs: record.cgroup.as_ref().map(|c| self.cgroups.procs_file(c)),
            },
        )?;
        Ok(spawned)
    }
}

/// The `CLONE_NEW*` flags of the namespaces of `pid` that are not ours.
fn differing_namespaces(pid: i32) -> libc::c_int {
    let inode = |path: String| fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    NAMESPACES
        .iter()
        .filter(|(name, _)| {
            let theirs = inode(format!("/proc/{pid}/ns/{name}"));
            theirs.is_some() && theirs != inode(format!("/proc/self/ns/{name}"))
        })
        .fold(0, |flags, (_, flag)| flags | flag)
}
