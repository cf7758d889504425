//! The table of exec instances (`docker exec`): what each was asked to
//! run, whether it runs, its exit code; kept in memory until its container
//! is removed. [`super::exec`] starts and reaps them.

use mkhost_shared::sync::lock;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// Finished exec instances kept per container beyond this many are dropped
/// (oldest first), so that a health check run every second does not grow
/// the daemon without bound.
pub const MAX_FINISHED_EXECS: usize = 64;

/// What `docker exec` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecConfig {
    /// `argv`.
    pub cmd: Vec<String>,
    /// `NAME=value` entries added to (or overriding) the container's.
    pub env: Vec<String>,
    /// `user[:group]`; `None`: the container's user.
    pub user: Option<String>,
    /// Working directory; `None`: the container's.
    pub workdir: Option<String>,
    /// A pseudo-terminal.
    pub tty: bool,
    /// The client sends input.
    pub attach_stdin: bool,
    /// The client wants stdout.
    pub attach_stdout: bool,
    /// The client wants stderr.
    pub attach_stderr: bool,
    /// The key sequence that detaches a client (`ctrl-p,ctrl-q`).
    pub detach_keys: Option<String>,
    /// The terminal's first size, `(rows, columns)`.
    pub console_size: Option<(u16, u16)>,
}

/// An exec instance as `docker exec inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecView {
    /// Its id.
    pub id: String,
    /// The container's id.
    pub container: String,
    /// What was asked.
    pub config: ExecConfig,
    /// Started and not yet exited.
    pub running: bool,
    /// Its exit code once it exited.
    pub exit_code: Option<i32>,
    /// Its pid (in the daemon's pid namespace), 0 before it started.
    pub pid: i32,
}

/// The exec instances of the daemon.
#[derive(Default)]
pub struct Execs {
    pub(super) by_id: Mutex<HashMap<String, ExecView>>,
    /// Terminals of running execs, for `resize`.
    pub(super) terminals: Mutex<HashMap<String, Arc<OwnedFd>>>,
}

impl Execs {
    /// Forgets the exec instances of a removed container.
    pub(super) fn forget(&self, container: &str) {
        lock(&self.by_id).retain(|_, v| v.container != container);
    }

    /// Drops the oldest finished instances of `container` beyond
    /// [`MAX_FINISHED_EXECS`].
    pub(super) fn prune(&self, container: &str) {
        let mut execs = lock(&self.by_id);
        let finished: Vec<String> = execs
            .values()
            .filter(|v| v.container == container && v.exit_code.is_some())
            .map(|v| v.id.clone())
            .collect();
        if finished.len() > MAX_FINISHED_EXECS {
            // No start times are kept: any order drops old ones eventually.
            for id in &finished[..finished.len() - MAX_FINISHED_EXECS] {
                execs.remove(id);
            }
        }
    }
}
