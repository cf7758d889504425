//! The zygote: a single-threaded helper forked by the daemon before it starts
//! any thread. Cloning a container's init from a multi-threaded process is
//! unsafe (another thread may hold the allocator's lock at clone time), so
//! the daemon asks the zygote instead, over a `SOCK_SEQPACKET` socketpair:
//! one JSON packet per request, one per answer, descriptors attached with
//! `SCM_RIGHTS`.
//!
//! For `create` the zygote writes the bundle's `config.json`, points its own
//! stdout and stderr at a new pipe, and runs the runtime's `create` (which
//! builds the [`crate::runtime::plan::Plan`] and calls
//! [`crate::runtime::process::spawn`]) and `start`; then it restores its
//! stdio and sends back the pid with the init's pidfd and the pipe's read end.
//! The inits are the zygote's children, so it also reaps them (`reap`) when
//! the daemon has seen their pidfd become readable. The zygote exits when the
//! daemon's end of the socket closes.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{oci_config, CreateSpec};
use super::sys;
use crate::runtime::process::{self, Spawned};
use crate::runtime::{CreateOptions, Log, Runtime};

/// Largest packet either side sends.
const MAX_PACKET: usize = 256 * 1024;

/// A request to the zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ZygoteRequest {
    /// Create and start a container.
    Create(Box<CreateSpec>),
    /// Reap an exited container's init: its exit code, or `None` if running.
    Reap {
        /// Container id.
        id: String,
    },
    /// Forget a container and delete its runtime state (and cgroup).
    Delete {
        /// Container id.
        id: String,
    },
}

/// An answer from the zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ZygoteReply {
    /// Created and started; the packet carries the pidfd and the log pipe.
    Created {
        /// The init's pid.
        pid: i32,
    },
    /// Reap result.
    Reaped {
        /// Exit code (128 + signal when killed); `None`: still running.
        code: Option<i32>,
    },
    /// Deleted.
    Deleted,
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Errors talking to the zygote.
#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    /// The socketpair or fork failed.
    #[error("cannot start the zygote: {0}")]
    Start(#[source] std::io::Error),
    /// The socket failed or the zygote is gone.
    #[error("zygote unavailable: {0}")]
    Io(#[source] std::io::Error),
    /// The zygote answered something unexpected.
    #[error("zygote protocol error: {0}")]
    Protocol(String),
}

/// The daemon's handle on the zygote.
#[derive(Debug)]
pub struct Zygote {
    sock: OwnedFd,
    pid: libc::pid_t,
}

impl Zygote {
    /// Forks the zygote; `state` is the daemon's state directory (runtime
    /// state under `state/oci`, the zygote's log in `state/zygote.log`).
    ///
    /// Must be called while the process has a single thread.
    pub fn start(state: &Path) -> Result<Zygote, ZygoteError> {
        let (parent, child) = crate::runtime::sys::seqpacket_pair()
            .map_err(|e| ZygoteError::Start(std::io::Error::from_raw_os_error(e.0)))?;
        // SAFETY: the caller (daemon::run) forks before starting any thread.
        match unsafe { sys::fork() }.map_err(ZygoteError::Start)? {
            None => {
                drop(parent);
                serve(child, state)
            }
            Some(pid) => Ok(Zygote { sock: parent, pid }),
        }
    }

    /// The zygote's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Sends `request` and waits for the answer and its descriptors.
    pub fn call(
        &self,
        request: &ZygoteRequest,
    ) -> Result<(ZygoteReply, Vec<OwnedFd>), ZygoteError> {
        let bytes =
            serde_json::to_vec(request).map_err(|e| ZygoteError::Protocol(e.to_string()))?;
        sys::send(self.sock.as_fd(), &bytes, &[]).map_err(ZygoteError::Io)?;
        let mut buf = vec![0u8; MAX_PACKET];
        let (n, fds) = sys::recv(self.sock.as_fd(), &mut buf).map_err(ZygoteError::Io)?;
        if n == 0 {
            return Err(ZygoteError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let reply =
            serde_json::from_slice(&buf[..n]).map_err(|e| ZygoteError::Protocol(e.to_string()))?;
        Ok((reply, fds))
    }
}

/// The zygote's main loop; never returns.
fn serve(sock: OwnedFd, state: &Path) -> ! {
    let log = Log::new(Some(&state.join("zygote.log")), false).unwrap_or_default();
    let rt = Runtime::detect(state.join("oci"), log);
    // The inits get /dev/null as stdin; stdout and stderr are set per create.
    if let Ok(null) = fs::File::open("/dev/null") {
        let _ = crate::sys::dup2(null.as_fd(), 0);
    }
    let saved = (
        std::io::stdout().as_fd().try_clone_to_owned(),
        std::io::stderr().as_fd().try_clone_to_owned(),
    );
    let (Ok(out), Ok(err)) = saved else {
        std::process::exit(1)
    };
    let mut live: HashMap<String, Spawned> = HashMap::new();
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let (n, _) = match sys::recv(sock.as_fd(), &mut buf) {
            Ok((0, _)) | Err(_) => std::process::exit(0),
            Ok(got) => got,
        };
        let (reply, fds) = match serde_json::from_slice::<ZygoteRequest>(&buf[..n]) {
            Err(e) => (error(format!("invalid request: {e}")), Vec::new()),
            Ok(ZygoteRequest::Create(spec)) => match create(&rt, &spec, (&out, &err)) {
                Ok((spawned, log_read)) => {
                    let pidfd = match &spawned.pidfd {
                        Some(fd) => fd.try_clone(),
                        None => crate::runtime::sys::pidfd_open(spawned.pid)
                            .map_err(|e| std::io::Error::from_raw_os_error(e.0)),
                    };
                    match pidfd {
                        Ok(pidfd) => {
                            let pid = spawned.pid;
                            live.insert(spec.id.clone(), spawned);
                            (ZygoteReply::Created { pid }, vec![pidfd, log_read])
                        }
                        Err(e) => {
                            spawned.kill();
                            let _ = rt.delete(&spec.id, true);
                            (error(format!("cannot open pidfd: {e}")), Vec::new())
                        }
                    }
                }
                Err(message) => (error(message), Vec::new()),
            },
            Ok(ZygoteRequest::Reap { id }) => match live.get(&id) {
                None => (error(format!("no container {id:?}")), Vec::new()),
                Some(spawned) => {
                    let status = match &spawned.pidfd {
                        Some(fd) => crate::runtime::sys::waitid_pidfd(fd.as_fd(), false),
                        None => crate::runtime::sys::waitid_pid(spawned.pid, false),
                    };
                    match status {
                        Ok(Some(s)) => {
                            live.remove(&id);
                            (
                                ZygoteReply::Reaped {
                                    code: Some(s.code()),
                                },
                                Vec::new(),
                            )
                        }
                        Ok(None) => (ZygoteReply::Reaped { code: None }, Vec::new()),
                        Err(e) => (error(format!("cannot wait for {id}: {e}")), Vec::new()),
                    }
                }
            },
            Ok(ZygoteRequest::Delete { id }) => {
                if let Some(spawned) = live.remove(&id) {
                    spawned.kill();
                }
                match rt.delete(&id, true) {
                    Ok(()) | Err(crate::runtime::RuntimeError::NotFound(_)) => {
                        (ZygoteReply::Deleted, Vec::new())
                    }
                    Err(e) => (error(chain(&e)), Vec::new()),
                }
            }
        };
        let bytes = serde_json::to_vec(&reply).unwrap_or_default();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if sys::send(sock.as_fd(), &bytes, &borrowed).is_err() {
            std::process::exit(0);
        }
    }
}

fn error(message: String) -> ZygoteReply {
    ZygoteReply::Error { message }
}

/// An error with its causes, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Writes `config.json`, creates the container with stdout and stderr on a
/// new pipe, starts it and checks its `execve`.
fn create(
    rt: &Runtime,
    spec: &CreateSpec,
    stdio: (&OwnedFd, &OwnedFd),
) -> Result<(Spawned, OwnedFd), String> {
    let config = serde_json::to_vec_pretty(&oci_config(spec)).map_err(|e| e.to_string())?;
    let path = spec.bundle.join("config.json");
    fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let (read, write) =
        crate::sys::pipe_blocking().map_err(|e| format!("cannot create log pipe: {e}"))?;
    let redirect =
        crate::sys::dup2(write.as_fd(), 1).and_then(|()| crate::sys::dup2(write.as_fd(), 2));
    let created = redirect
        .map_err(|e| format!("cannot redirect output: {e}"))
        .and_then(|()| {
            rt.create(
                &spec.id,
                &CreateOptions {
                    bundle: spec.bundle.clone(),
                    pid_file: None,
                    preserve_fds: 0,
                },
            )
            .map_err(|e| chain(&e))
        });
    let _ = crate::sys::dup2(stdio.0.as_fd(), 1);
    let _ = crate::sys::dup2(stdio.1.as_fd(), 2);
    drop(write);
    let container = created?;
    let started = rt.start(&spec.id).map_err(|e| chain(&e)).and_then(|()| {
        process::exec_result(&container.process, &container.plan).map_err(|e| chain(&e))
    });
    if let Err(e) = started {
        container.process.kill();
        let _ = rt.delete(&spec.id, true);
        return Err(e);
    }
    Ok((container.process, read.into()))
}
