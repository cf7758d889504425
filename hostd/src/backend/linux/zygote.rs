//! The zygote: a single-threaded helper forked by the daemon before it starts
//! any thread. Cloning a container's init from a multi-threaded process is
//! unsafe (another thread may hold the allocator's lock at clone time), so
//! the daemon asks the zygote instead, over `SOCK_SEQPACKET` connections:
//! one JSON packet per request, one per answer, descriptors attached with
//! `SCM_RIGHTS`.
//!
//! **Creates run in parallel.** The daemon keeps a pool of connections
//! (a few per core) with one request in flight on each, and the zygote
//! polls them all. For `create` and `exec` it has a short-lived *creator*
//! forked and goes on serving. Creators come from the zygote's *spawner*,
//! a child holding a handful of descriptors (forking from the zygote would
//! copy its two per container every time), which forks with
//! `CLONE_PARENT` so that each creator is the zygote's child. The zygote
//! waits for nothing on the way: the spawner says each creator's pid in
//! turn, read when the zygote next polls, and a creator that has answered
//! is reaped once its pidfd shows it has exited (the zygote is the one
//! serial step of every start, so it must not sleep in one; waiting for
//! the fork and the exit took it about 0.4 ms a start). The creator
//! writes the bundle's
//! `config.json`, points its stdout and stderr at two new pipes (and stdin
//! at a third with `-i`), runs the runtime's `create` and `start` (or
//! `exec`), sends back the pid, a pidfd, the pipes' read ends and the
//! input's write end, and exits. With a terminal (`-t`) the runtime hands
//! back the primary side of the process's pseudo-terminal, which stands
//! for stdout and stdin. The zygote is the creators' subreaper, so once a
//! creator exits its init (or exec'd process) is the zygote's child; the
//! zygote keeps its own copies of the pipe ends and forwards the answer to
//! the connection that asked. One process per create is what the kernel
//! needs anyway (the init is cloned from it), so parallel creates cost no
//! extra process that lives, and nothing is shared between them but the
//! runtime's state directory, one subdirectory per container. Several
//! long-lived workers would have needed the same subreaper hand-over, and
//! a fixed count.
//!
//! **Descriptors.** The zygote holds two per container (the read ends of
//! stdout and stderr; three with an open stdin) and no pidfd: it is the
//! inits' parent and reaps them by pid (`reap`, with the OOM-kill count of
//! the cgroup) once the daemon has seen the pidfd it was given become
//! readable. Before forking a creator it checks that its open-file limit
//! leaves room, and refuses with the limit named otherwise.
//!
//! **The zygote outlives the daemon.** Its copies of the pipe read ends
//! keep the containers' output open when the daemon is killed or upgraded:
//! the containers keep running (their writes block once a pipe is full;
//! nothing is lost) and their exit statuses wait, as zombies, for the
//! zygote. It listens on `<state>/zygote.sock` (root only); a new daemon
//! connects, says `hello`, and `attach_many`s the running containers, in
//! batches of [`ATTACH_BATCH`], to get their descriptors back (new
//! pidfds). Only the daemon being served may open more connections
//! (checked by pid); another is hung up on. A creator
//! whose daemon left before it answered has its process killed and its
//! container deleted: nobody would ever watch it. The exec'd processes of
//! a daemon that left become orphans: no later daemon knows them, so
//! the zygote reaps them itself (a PID namespace's init cannot finish
//! exiting while one of them is unreaped). A zygote whose daemon
//! left while it had no container exits. When the new daemon's binary
//! differs from the zygote's, the daemon asks for an `upgrade`: the zygote
//! `exec`s the new binary (`hostd zygote --resume ...`), keeping its
//! children, its sockets and its table of containers (handed over in a
//! file), and the new code answers. `hello` and `upgrade` are the stable
//! part of the protocol.

use mkhost_shared::sync::lock;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits;
use super::oci::{cgroup_path, oci_config, CONTAINER_LIMITS};
use crate::backend::{CreateSpec, ExecSpec};
use crate::os;
use crate::runtime::cgroups::{CgroupManager, Cgroupfs};
use crate::runtime::child::Step;
use crate::runtime::mount_source::{MountSource, MountSourceError};
use crate::runtime::process::{SpawnError, Spawned};
use crate::runtime::{Console, CreateOptions, Log, Runtime, RuntimeError};
use mkhost_shared::container::ExecError;

/// Largest packet either side sends.
const MAX_PACKET: usize = 64 * 1024;

/// The zygote's socket under the state directory.
pub const SOCKET: &str = "zygote.sock";

/// The zygote's pid, for people and tests.
pub const PID_FILE: &str = "zygote.pid";

/// The hand-over file an upgrading zygote writes for its new image.
const HANDOFF: &str = "zygote.handoff.json";

/// Version of the requests below `hello` and `upgrade`.
pub const PROTOCOL: u32 = 3;

/// Most containers one `attach_many` names: each brings up to 4
/// descriptors, and one packet carries at most [`os::MAX_FDS`].
pub const ATTACH_BATCH: usize = os::MAX_FDS / 4;

/// A request to the zygote.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ZygoteRequest {
    /// Who are you (stable).
    Hello,
    /// Replace your code with `exe`, keeping the containers (stable).
    Upgrade {
        /// The new binary.
        exe: PathBuf,
    },
    /// Create and start a container.
    Create(Box<CreateSpec>),
    /// Start another process in a running container (`docker exec`).
    Exec(Box<ExecSpec>),
    /// The descriptors of containers created before this daemon started,
    /// at most [`ATTACH_BATCH`] in one round trip (a daemon re-adopts ten
    /// thousand).
    AttachMany {
        /// Container ids.
        ids: Vec<String>,
    },
    /// Reap an exited container's init: its exit code, or `None` if running.
    Reap {
        /// Container id.
        id: String,
    },
    /// Close the zygote's copy of a process's input, so that it reads
    /// end-of-file once the daemon closes its own (`StdinOnce`).
    CloseInput {
        /// Container or exec id.
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
    /// Answer to `hello` and `upgrade` (stable).
    Hello(Hello),
    /// Created and started; the packet carries the pidfd,
    /// the stdout and stderr read ends and, when it has one, the write end
    /// of its standard input (a fourth descriptor). With a terminal, stdout
    /// and stdin are the primary side of its pseudo-terminal and stderr is
    /// empty.
    Created {
        /// The init's pid.
        pid: i32,
    },
    /// Answer to `attach_many`, in the order asked; the packet carries
    /// each attached container's descriptors (as for `created`), one after
    /// the other.
    AttachedMany {
        /// One per id.
        containers: Vec<Attached>,
    },
    /// Reap result.
    Reaped {
        /// Exit code (128 + signal when killed); `None`: still running.
        code: Option<i32>,
        /// The cgroup's OOM killer fired.
        #[serde(default)]
        oom_killed: bool,
    },
    /// Deleted.
    Deleted,
    /// The input is closed.
    InputClosed,
    /// The request failed.
    Error {
        /// Why.
        message: String,
        /// For `create`: the container's command could not be started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec: Option<ExecError>,
    },
}

/// A container's init's pid and descriptors, or why it was not attached.
pub type AttachResult = Result<(i32, Vec<OwnedFd>), String>;

/// One container of an `attach_many`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// Its id.
    pub id: String,
    /// Its init's pid; 0 with an error.
    pub pid: i32,
    /// How many of the packet's descriptors are its (3 or 4; 0 with an
    /// error).
    pub descriptors: usize,
    /// Why it was not attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a zygote says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`] of its code.
    pub protocol: u32,
    /// Its pid.
    pub pid: i32,
    /// Identity of its binary ([`exe_identity`]).
    pub exe: String,
    /// Containers it holds.
    pub containers: usize,
}

/// Errors talking to the zygote.
#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    /// The socket or fork failed.
    #[error("cannot start the zygote: {0}")]
    Start(#[source] std::io::Error),
    /// The socket failed or the zygote is gone.
    #[error("zygote unavailable: {0}")]
    Io(#[source] std::io::Error),
    /// The zygote answered something unexpected.
    #[error("zygote protocol error: {0}")]
    Protocol(String),
}

/// The daemon's handle on the zygote: a pool of connections, one request
/// in flight on each, so that requests from several threads are served at
/// once (the zygote forks a creator per create or exec).
#[derive(Debug)]
pub struct Zygote {
    socket: PathBuf,
    pool: Mutex<Pool>,
    freed: Condvar,
    max_connections: usize,
    hello: Hello,
}

/// The connections not in use, and how many are open in all.
#[derive(Debug)]
struct Pool {
    idle: Vec<OwnedFd>,
    open: usize,
}

/// Connections a daemon opens at most: creates are mostly CPU work, so a
/// few per core keep every core busy without a crowd of creators.
fn max_connections() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * 2).clamp(4, 64)
}

/// Identity of a binary: device, inode, size and mtime of what
/// `/proc/<pid>/exe` points to. A replaced binary has a new one.
pub fn exe_identity(pid: &str) -> String {
    match fs::metadata(format!("/proc/{pid}/exe")) {
        Ok(m) => format!("{}:{}:{}:{}", m.dev(), m.ino(), m.size(), m.mtime()),
        Err(e) => format!("unknown ({e})"),
    }
}

impl Zygote {
    /// Connects to the zygote a previous daemon left under `state`, if any.
    /// `Ok(None)`: there is none (no socket, or nobody listening).
    pub fn connect(state: &Path) -> Result<Option<Zygote>, ZygoteError> {
        let path = state.join(SOCKET);
        let sock = match os::seqpacket_connect(&path) {
            Ok(sock) => sock,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTSOCK)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(ZygoteError::Io(e)),
        };
        // A zygote still serving another daemon would never answer.
        os::set_receive_timeout(sock.as_fd(), Some(Duration::from_secs(10)))
            .map_err(ZygoteError::Io)?;
        let mut zygote = Zygote::with_connection(
            &path,
            sock,
            Hello {
                protocol: 0,
                pid: 0,
                exe: String::new(),
                containers: 0,
            },
        );
        // A zygote serving another daemon hangs up (an older one never answers).
        zygote.hello = match zygote.say_hello(&ZygoteRequest::Hello) {
            Err(ZygoteError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Err(ZygoteError::Protocol(format!(
                    "the zygote at {} did not answer: it serves another daemon \
                     (is another hostd running with the same --state?)",
                    path.display()
                )))
            }
            other => other?,
        };
        for conn in &lock(&zygote.pool).idle {
            os::set_receive_timeout(conn.as_fd(), None).map_err(ZygoteError::Io)?;
        }
        Ok(Some(zygote))
    }

    /// Forks a new zygote; `state` is the daemon's state directory (runtime
    /// state under `state/oci`, the zygote's log in `state/zygote.log`, its
    /// socket at `state/zygote.sock`).
    ///
    /// # Safety
    ///
    /// The process must have a single thread (it forks, and the child runs
    /// the zygote's code, which allocates): call it before starting any.
    pub unsafe fn start(state: &Path) -> Result<Zygote, ZygoteError> {
        let path = state.join(SOCKET);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ZygoteError::Start(e)),
        }
        let listener = os::seqpacket_listen(&path).map_err(ZygoteError::Start)?;
        let (parent, child) = crate::runtime::sys::seqpacket_pair()
            .map_err(|e| ZygoteError::Start(std::io::Error::from_raw_os_error(e.0)))?;
        // SAFETY: the caller guarantees the process has a single thread.
        match unsafe { os::fork() }.map_err(ZygoteError::Start)? {
            None => {
                drop(parent);
                let daemon = i32::try_from(std::os::unix::process::parent_id()).unwrap_or(0);
                Server::new(state, listener, HashMap::new()).serve(child, daemon)
            }
            Some(pid) => Ok(Zygote::with_connection(
                &path,
                parent,
                Hello {
                    protocol: PROTOCOL,
                    pid,
                    exe: exe_identity("self"),
                    containers: 0,
                },
            )),
        }
    }

    /// What the zygote said about itself.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The zygote's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.hello.pid
    }

    /// Has the zygote `exec` the binary at `exe` (keeping its containers)
    /// and checks that the new code answers with this daemon's identity.
    pub fn upgrade(&mut self, exe: &Path) -> Result<(), ZygoteError> {
        let hello = self.say_hello(&ZygoteRequest::Upgrade {
            exe: exe.to_path_buf(),
        })?;
        if hello.protocol != PROTOCOL {
            return Err(ZygoteError::Protocol(format!(
                "upgraded zygote speaks protocol {}, this daemon {PROTOCOL}",
                hello.protocol
            )));
        }
        self.hello = hello;
        Ok(())
    }

    fn say_hello(&self, request: &ZygoteRequest) -> Result<Hello, ZygoteError> {
        match self.call(request)? {
            (ZygoteReply::Hello(hello), _) => Ok(hello),
            (ZygoteReply::Error { message, .. }, _) => Err(ZygoteError::Protocol(message)),
            (other, _) => Err(ZygoteError::Protocol(format!(
                "unexpected answer to hello: {other:?}"
            ))),
        }
    }

    fn with_connection(socket: &Path, conn: OwnedFd, hello: Hello) -> Zygote {
        Zygote {
            socket: socket.to_path_buf(),
            pool: Mutex::new(Pool {
                idle: vec![conn],
                open: 1,
            }),
            freed: Condvar::new(),
            max_connections: max_connections(),
            hello,
        }
    }

    /// Sends `request` on a free connection and waits for the answer and
    /// its descriptors. Other threads' requests go on meanwhile on other
    /// connections.
    pub fn call(
        &self,
        request: &ZygoteRequest,
    ) -> Result<(ZygoteReply, Vec<OwnedFd>), ZygoteError> {
        let conn = self.take_connection()?;
        let answer = exchange(conn.as_fd(), request);
        let mut pool = lock(&self.pool);
        match answer {
            Ok(_) => pool.idle.push(conn),
            // Out of step, or the zygote is gone: this one is not reused.
            Err(_) => pool.open -= 1,
        }
        drop(pool);
        self.freed.notify_one();
        answer
    }

    /// Attaches `ids` (at most [`ATTACH_BATCH`]) in one round trip: for
    /// each, its init's pid and descriptors, or why not.
    pub fn attach_many(&self, ids: &[String]) -> Result<Vec<(String, AttachResult)>, ZygoteError> {
        let request = ZygoteRequest::AttachMany { ids: ids.to_vec() };
        let (containers, fds) = match self.call(&request)? {
            (ZygoteReply::AttachedMany { containers }, fds) => (containers, fds),
            (ZygoteReply::Error { message, .. }, _) => return Err(ZygoteError::Protocol(message)),
            (other, _) => {
                return Err(ZygoteError::Protocol(format!(
                    "unexpected answer to attach_many: {other:?}"
                )))
            }
        };
        split_attached(ids, containers, fds)
    }

    /// An idle connection, a new one while fewer than the most are open,
    /// or the next one freed.
    fn take_connection(&self) -> Result<OwnedFd, ZygoteError> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < self.max_connections {
                pool.open += 1;
                drop(pool);
                return os::seqpacket_connect(&self.socket).map_err(|e| {
                    lock(&self.pool).open -= 1;
                    self.freed.notify_one();
                    ZygoteError::Io(e)
                });
            }
            pool = self.freed.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// One request and its answer on `conn`.
fn exchange(
    conn: BorrowedFd<'_>,
    request: &ZygoteRequest,
) -> Result<(ZygoteReply, Vec<OwnedFd>), ZygoteError> {
    let bytes = serde_json::to_vec(request).map_err(|e| ZygoteError::Protocol(e.to_string()))?;
    os::send_with_fds(conn, &bytes, &[]).map_err(ZygoteError::Io)?;
    let mut buf = vec![0u8; MAX_PACKET];
    let (n, fds) = os::recv_with_fds(conn, &mut buf).map_err(ZygoteError::Io)?;
    if n == 0 {
        return Err(ZygoteError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let reply =
        serde_json::from_slice(&buf[..n]).map_err(|e| ZygoteError::Protocol(e.to_string()))?;
    Ok((reply, fds))
}

/// Deals the descriptors of an `attached_many` answer out to its
/// containers, checking that the answer matches the ids asked.
fn split_attached(
    ids: &[String],
    containers: Vec<Attached>,
    fds: Vec<OwnedFd>,
) -> Result<Vec<(String, AttachResult)>, ZygoteError> {
    let wanted: usize = containers.iter().map(|c| c.descriptors).sum();
    let same_ids =
        containers.len() == ids.len() && containers.iter().zip(ids).all(|(c, id)| &c.id == id);
    if !same_ids || wanted != fds.len() {
        return Err(ZygoteError::Protocol(format!(
            "attach_many of {} containers answered for {} with {} descriptors (expected {wanted})",
            ids.len(),
            containers.len(),
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    Ok(containers
        .into_iter()
        .map(|c| {
            let result = match c.error {
                Some(message) => Err(message),
                None => Ok((c.pid, fds.by_ref().take(c.descriptors).collect())),
            };
            (c.id, result)
        })
        .collect())
}

/// One container init (or exec'd process) the zygote holds: its pid (the
/// zygote is its parent, so the pid stays its own until the zygote reaps
/// it) and the read ends of its output (and the write end of its input),
/// which keep its pipes open while no daemon reads them.
struct Live {
    pid: libc::pid_t,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// The write end of its input (with a terminal: the primary side).
    stdin: Option<OwnedFd>,
    /// For an exec'd process, its container's id.
    exec_of: Option<String>,
}

/// An exec'd process whose daemon is gone: no later daemon knows it (exec
/// instances live in the daemon's memory, as in dockerd), so the zygote
/// reaps it itself when it exits. Left unreaped, it would also hold its
/// container's init back from exiting (a PID namespace's init waits for
/// every process in it to be reaped), and the container could never be
/// stopped again.
#[derive(Debug, Serialize, Deserialize)]
struct Orphan {
    pid: libc::pid_t,
    /// Its container's id.
    container: String,
}

/// The orphans handed across an upgrade's `exec`, by pid: they stay the
/// zygote's children.
const ORPHANS_HANDOFF: &str = "zygote.orphans.json";

/// A container in the hand-over file: descriptor numbers kept across `exec`.
/// `pidfd` and `sync` are what zygotes before 0.2 kept; a new image takes
/// and closes them.
#[derive(Debug, Serialize, Deserialize)]
struct Handed {
    id: String,
    pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pidfd: Option<RawFd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sync: Option<RawFd>,
    stdout: RawFd,
    stderr: RawFd,
    #[serde(default)]
    stdin: Option<RawFd>,
    /// For an exec'd process, its container's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec_of: Option<String>,
}

/// One connection of the daemon being served. The daemon sends one
/// request at a time on each; it opens more to have several served at once.
struct Conn {
    serial: u64,
    fd: OwnedFd,
}

/// A create or exec in progress in a forked creator.
struct Creating {
    /// This creation, by serial (the spawner's answers name it).
    serial: u64,
    /// The connection that asked, by serial.
    conn: u64,
    /// Container or exec id.
    id: String,
    /// A container (deleted if its answer cannot be delivered).
    container: bool,
    /// For an exec, its container's id.
    exec_of: Option<String>,
    /// The creator's pid (the zygote's child), once the spawner said it.
    creator: Option<libc::pid_t>,
    /// Where the creator sends its answer and descriptors.
    answer: OwnedFd,
}

/// What a creator sends the zygote on its answer socket: the answer to
/// forward, and its own pid, so that it is reaped even when the spawner
/// that forked it died before saying that pid.
#[derive(Debug, Serialize, Deserialize)]
struct CreatorAnswer {
    creator: libc::pid_t,
    reply: ZygoteReply,
}

/// The zygote process's state.
struct Server {
    state: PathBuf,
    listener: OwnedFd,
    live: HashMap<String, Live>,
    rt: Runtime,
    cgroups: Box<dyn CgroupManager>,
    /// Forks the creators; `None` until started again after it died.
    spawner: Option<Spawner>,
    /// The pid of the daemon served, while it has a connection.
    daemon: Option<i32>,
    conns: Vec<Conn>,
    next_conn: u64,
    creating: Vec<Creating>,
    next_creation: u64,
    /// Creators that answered and are exiting, reaped once they have.
    exiting: Vec<Exiting>,
    /// Exec'd processes no daemon knows any more.
    orphans: Vec<Watched>,
    /// Its open-file limit.
    files_limit: u64,
}

/// What woke the zygote, gathered before any of it is handled (handling
/// changes the lists polled).
enum Ready {
    /// The spawner said which creator it forked.
    Spawner,
    /// A creator answered (by creation serial).
    Answer(u64),
    Conn(u64),
    Listener,
    /// An orphan exited (by pid).
    Orphan(libc::pid_t),
    /// A creator that answered has exited (by pid).
    CreatorExited(libc::pid_t),
}

/// A creator that has answered: its exit is polled and reaped without
/// waiting for it. Its children (the inits) are the zygote's only once it
/// has exited, so anything that waits for one of them first reaps the
/// creators still exiting ([`Server::wait_child`]).
struct Exiting {
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

/// What woke for each of `items` whose flag in `ready` is set.
fn those_ready<'a, T>(
    items: &'a [T],
    ready: &'a [bool],
    woke: impl Fn(&T) -> Ready + 'a,
) -> impl Iterator<Item = Ready> + 'a {
    items
        .iter()
        .zip(ready)
        .filter(|(_, &r)| r)
        .map(move |(item, _)| woke(item))
}

/// An [`Orphan`] and the pidfd the zygote polls for its exit.
struct Watched {
    orphan: Orphan,
    pidfd: OwnedFd,
}

impl Server {
    fn new(state: &Path, listener: OwnedFd, live: HashMap<String, Live>) -> Server {
        // The containers inherit the zygote's limits, as Docker's inherit
        // dockerd's: raise them to what Debian's docker.service gives it.
        for (limit, value) in CONTAINER_LIMITS {
            os::raise_limit(limit, value);
        }
        let files_limit = os::raise_limit(os::Limit::OpenFiles, 0);
        // Creators fork the inits and exit: the inits become the zygote's
        // children, so that it alone reaps them.
        let _ = os::set_child_subreaper();
        // The inits get /dev/null as stdin; stdout and stderr are set per create.
        if let Ok(null) = fs::File::open("/dev/null") {
            let _ = os::dup2(null.as_fd(), 0);
        }
        let spawner = Spawner::start(state).ok();
        let log = Log::new(Some(&state.join("zygote.log")), false).unwrap_or_default();
        let rt = Runtime::detect(state.join("oci"), log);
        let _ = mkhost_shared::fs::write_atomic(
            &state.join(PID_FILE),
            std::process::id().to_string().as_bytes(),
            0o644,
        );
        Server {
            state: state.to_path_buf(),
            listener,
            live,
            rt,
            cgroups: Cgroupfs::detect(),
            spawner,
            daemon: None,
            conns: Vec::new(),
            next_conn: 1,
            creating: Vec::new(),
            next_creation: 1,
            exiting: Vec::new(),
            orphans: Vec::new(),
            files_limit,
        }
    }

    fn hello(&self) -> ZygoteReply {
        ZygoteReply::Hello(Hello {
            protocol: PROTOCOL,
            pid: i32::try_from(std::process::id()).unwrap_or(-1),
            exe: exe_identity("self"),
            containers: self.live.len(),
        })
    }

    /// Takes `conn` as a connection of daemon `pid`.
    fn add_conn(&mut self, fd: OwnedFd, pid: i32) {
        self.daemon = Some(pid);
        self.conns.push(Conn {
            serial: self.next_conn,
            fd,
        });
        self.next_conn += 1;
    }

    /// Serves `first` (from daemon `daemon`), the connections that daemon
    /// opens after it, and each daemon that connects after it leaves; exits
    /// when a daemon leaves and no container is left.
    fn serve(mut self, first: OwnedFd, daemon: i32) -> ! {
        self.add_conn(first, daemon);
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            for ready in self.wait() {
                match ready {
                    Ready::Spawner => self.take_spawner_reply(),
                    Ready::Answer(serial) => self.finish_creation(serial),
                    Ready::CreatorExited(pid) => self.reap_creator(pid),
                    Ready::Conn(serial) => self.serve_request(serial, &mut buf),
                    Ready::Listener => self.accept(),
                    Ready::Orphan(pid) => self.reap_orphan(pid),
                }
            }
            if self.conns.is_empty() {
                self.forget_daemon();
                if self.live.is_empty() && self.creating.is_empty() {
                    let _ = fs::remove_file(self.state.join(SOCKET));
                    let _ = fs::remove_file(self.state.join(PID_FILE));
                    std::process::exit(0);
                }
            }
        }
    }

    /// Polls the spawner (while it owes answers), the creators' answers,
    /// the connections, the listener, the orphans and the exiting
    /// creators. The spawner comes first, so that a creator's pid is known
    /// before its answer is taken, and the connections before the
    /// listener, so that hang-ups are seen before a new daemon is accepted.
    fn wait(&self) -> Vec<Ready> {
        use rustix::event::{PollFd, PollFlags};
        let mut polled: Vec<PollFd<'_>> = Vec::new();
        let spawner = self.spawner.as_ref().filter(|s| !s.awaiting.is_empty());
        if let Some(spawner) = spawner {
            polled.push(PollFd::new(&spawner.sock, PollFlags::IN));
        }
        for c in &self.creating {
            polled.push(PollFd::new(&c.answer, PollFlags::IN));
        }
        for c in &self.conns {
            polled.push(PollFd::new(&c.fd, PollFlags::IN));
        }
        polled.push(PollFd::new(&self.listener, PollFlags::IN));
        for watched in &self.orphans {
            polled.push(PollFd::new(&watched.pidfd, PollFlags::IN));
        }
        for exiting in &self.exiting {
            polled.push(PollFd::new(&exiting.pidfd, PollFlags::IN));
        }
        loop {
            match rustix::event::poll(&mut polled, None) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    return Vec::new();
                }
                Ok(_) => break,
            }
        }
        let ready: Vec<bool> = polled.iter().map(|p| !p.revents().is_empty()).collect();
        let (spawner_ready, rest) = ready.split_at(usize::from(spawner.is_some()));
        let (answers, rest) = rest.split_at(self.creating.len());
        let (conns, rest) = rest.split_at(self.conns.len());
        let (listener, rest) = rest.split_at(1);
        let (orphans, exited) = rest.split_at(self.orphans.len());
        let mut woke: Vec<Ready> = Vec::new();
        if spawner_ready.first() == Some(&true) {
            woke.push(Ready::Spawner);
        }
        woke.extend(those_ready(&self.creating, answers, |c| {
            Ready::Answer(c.serial)
        }));
        woke.extend(those_ready(&self.conns, conns, |c| Ready::Conn(c.serial)));
        if listener[0] {
            woke.push(Ready::Listener);
        }
        woke.extend(those_ready(&self.orphans, orphans, |w| {
            Ready::Orphan(w.orphan.pid)
        }));
        woke.extend(those_ready(&self.exiting, exited, |e| {
            Ready::CreatorExited(e.pid)
        }));
        woke
    }

    /// The daemon is gone, and with it its exec instances: their processes
    /// become [`Orphan`]s, reaped by the zygote when they exit. Its copies
    /// of their pipes are closed: nobody will read them again.
    fn orphan_execs(&mut self) {
        let execs: Vec<String> = self
            .live
            .iter()
            .filter(|(_, live)| live.exec_of.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in execs {
            if let Some(Live {
                pid,
                exec_of: Some(container),
                ..
            }) = self.live.remove(&id)
            {
                self.watch(Orphan { pid, container });
            }
        }
    }

    /// Polls `orphan` until it exits; one that cannot be opened is gone
    /// (reaped) already.
    fn watch(&mut self, orphan: Orphan) {
        if let Ok(pidfd) = crate::runtime::sys::pidfd_open(orphan.pid) {
            self.orphans.push(Watched { orphan, pidfd });
        }
    }

    /// Reaps orphan `pid`, which exited.
    fn reap_orphan(&mut self, pid: libc::pid_t) {
        let Some(index) = self.orphans.iter().position(|w| w.orphan.pid == pid) else {
            return;
        };
        if !matches!(self.wait_child(pid, false), Ok(None)) {
            self.orphans.swap_remove(index);
        }
    }

    /// Kills and reaps the orphans in `container`, which is being deleted:
    /// its init cannot finish exiting before they are reaped.
    fn end_orphans_in(&mut self, container: &str) {
        let (ending, staying) = std::mem::take(&mut self.orphans)
            .into_iter()
            .partition(|watched| watched.orphan.container == container);
        self.orphans = staying;
        for watched in ending {
            let _ = crate::runtime::sys::pidfd_send_signal(watched.pidfd.as_fd(), libc::SIGKILL);
            let _ = self.wait_child(watched.orphan.pid, true);
        }
    }

    /// Accepts a connection: from the daemon served (another of its
    /// connections), or, when none is, from a root daemon that becomes
    /// the one served. Anyone else is hung up on at once.
    fn accept(&mut self) {
        let Ok((fd, uid)) = os::accept_with_uid(self.listener.as_fd()) else {
            return;
        };
        if uid != 0 && uid != os::geteuid() {
            return;
        }
        let Some(pid) = os::peer_pid(fd.as_fd()) else {
            return;
        };
        // The daemon served may have hung up its last connection in the
        // same poll that brought this one: it is gone, not another daemon.
        if self.conns.is_empty() {
            self.forget_daemon();
        }
        match self.daemon {
            Some(daemon) if daemon != pid => {}
            _ => self.add_conn(fd, pid),
        }
    }

    /// The daemon served has hung up every connection: its exec'd
    /// processes become orphans, and the next daemon to connect is served.
    fn forget_daemon(&mut self) {
        if self.daemon.take().is_some() {
            self.orphan_execs();
        }
    }

    /// Reads one request from connection `serial` and answers it, or, for
    /// a create or an exec, starts a creator that answers later.
    fn serve_request(&mut self, serial: u64, buf: &mut [u8]) {
        let Some(index) = self.conns.iter().position(|c| c.serial == serial) else {
            return;
        };
        let n = match os::recv_with_fds(self.conns[index].fd.as_fd(), buf) {
            Ok((0, _)) | Err(_) => {
                self.conns.remove(index);
                return;
            }
            Ok((n, _)) => n,
        };
        let (reply, fds) = match serde_json::from_slice::<ZygoteRequest>(&buf[..n]) {
            Err(e) => (error(format!("invalid request: {e}")), Vec::new()),
            Ok(ZygoteRequest::Upgrade { exe }) => (self.upgrade(&exe, index), Vec::new()),
            Ok(ZygoteRequest::Create(spec)) => match self.start_create(serial, *spec) {
                None => return,
                Some(refused) => (refused, Vec::new()),
            },
            Ok(ZygoteRequest::Exec(spec)) => match self.start_exec(serial, *spec) {
                None => return,
                Some(refused) => (refused, Vec::new()),
            },
            Ok(request) => self.handle(request),
        };
        if send_reply(self.conns[index].fd.as_fd(), &reply, &fds).is_err() {
            self.conns.remove(index);
        }
    }

    fn handle(&mut self, request: ZygoteRequest) -> (ZygoteReply, Vec<OwnedFd>) {
        match request {
            ZygoteRequest::Hello => (self.hello(), Vec::new()),
            ZygoteRequest::Upgrade { .. } | ZygoteRequest::Create(_) | ZygoteRequest::Exec(_) => {
                (error("handled by serve".into()), vec![])
            }
            ZygoteRequest::AttachMany { ids } => self.attach_many(&ids),
            ZygoteRequest::Reap { id } => (self.reap(&id), Vec::new()),
            ZygoteRequest::CloseInput { id } => match self.live.get_mut(&id) {
                None => (error(format!("no container {id:?}")), Vec::new()),
                Some(live) => {
                    live.stdin = None;
                    (ZygoteReply::InputClosed, Vec::new())
                }
            },
            ZygoteRequest::Delete { id } => {
                if self.is_creating(&id) {
                    return (error(format!("{id} is being created")), Vec::new());
                }
                if let Some(live) = self.live.remove(&id) {
                    // Its orphans first: the init's exit waits for them.
                    self.end_orphans_in(&id);
                    self.kill_child(live.pid);
                }
                match self.rt.delete(&id, true) {
                    Ok(()) | Err(crate::runtime::RuntimeError::NotFound(_)) => {
                        (ZygoteReply::Deleted, Vec::new())
                    }
                    Err(e) => (error(chain(&e)), Vec::new()),
                }
            }
        }
    }

    /// The descriptors of each of `ids`, in one packet.
    fn attach_many(&self, ids: &[String]) -> (ZygoteReply, Vec<OwnedFd>) {
        if ids.len() > ATTACH_BATCH {
            return (
                error(format!(
                    "attach_many of {} containers: at most {ATTACH_BATCH} at a time",
                    ids.len()
                )),
                Vec::new(),
            );
        }
        let mut fds = Vec::new();
        let containers = ids
            .iter()
            .map(|id| {
                let shared = match self.live.get(id) {
                    None => Err(format!("no container {id:?}")),
                    Some(live) => live
                        .descriptors()
                        .map(|descriptors| (live.pid, descriptors))
                        .map_err(|e| format!("cannot share descriptors: {e}")),
                };
                match shared {
                    Ok((pid, descriptors)) => {
                        let attached = Attached {
                            id: id.clone(),
                            pid,
                            descriptors: descriptors.len(),
                            error: None,
                        };
                        fds.extend(descriptors);
                        attached
                    }
                    Err(message) => Attached {
                        id: id.clone(),
                        pid: 0,
                        descriptors: 0,
                        error: Some(message),
                    },
                }
            })
            .collect();
        (ZygoteReply::AttachedMany { containers }, fds)
    }

    fn is_creating(&self, id: &str) -> bool {
        self.creating.iter().any(|c| c.id == id)
    }

    /// Checks a create and forks its creator; `Some`: refused at once.
    fn start_create(&mut self, conn: u64, spec: CreateSpec) -> Option<ZygoteReply> {
        if self.live.contains_key(&spec.id) || self.is_creating(&spec.id) {
            return Some(error(format!("container {} exists", spec.id)));
        }
        if !spec.limits.is_empty() {
            if let Err(reason) = self.cgroups.available() {
                return Some(error(format!(
                    "resource limits need cgroup v2, which this host lacks: {reason}"
                )));
            }
        }
        let id = spec.id.clone();
        self.fork_creator(conn, id, true, ZygoteRequest::Create(Box::new(spec)))
    }

    /// Checks an exec and forks its creator; `Some`: refused at once.
    fn start_exec(&mut self, conn: u64, spec: ExecSpec) -> Option<ZygoteReply> {
        if self.live.contains_key(&spec.id) || self.is_creating(&spec.id) {
            return Some(error(format!("exec instance {} exists", spec.id)));
        }
        let id = spec.id.clone();
        self.fork_creator(conn, id, false, ZygoteRequest::Exec(Box::new(spec)))
    }

    /// Has a creator run `request` and send its answer back: the zygote
    /// goes on serving meanwhile, so creates run in parallel, one process
    /// each. The creator is forked by the spawner (whose descriptor table
    /// is small, unlike the zygote's) as the zygote's child; its own
    /// children (the inits) become the zygote's when it exits (the zygote
    /// is their subreaper).
    fn fork_creator(
        &mut self,
        conn: u64,
        id: String,
        container: bool,
        request: ZygoteRequest,
    ) -> Option<ZygoteReply> {
        let processes = (self.live.len() + self.creating.len()) as u64;
        let held = processes * limits::ZYGOTE_FILES_PER_CONTAINER
            + self.conns.len() as u64
            + limits::ZYGOTE_FILES_RESERVE;
        if held + limits::ZYGOTE_FILES_PER_CONTAINER + 1 > self.files_limit {
            return Some(error(format!(
                "no room for another process: the zygote's open-file limit (RLIMIT_NOFILE) \
                 is {} and {processes} processes hold {} descriptors each in it; raise the \
                 hard limit (LimitNOFILE=, ulimit -Hn; hostd raises it to fs.nr_open when it \
                 has CAP_SYS_RESOURCE) or remove containers",
                self.files_limit,
                limits::ZYGOTE_FILES_PER_CONTAINER
            )));
        }
        let (answer, creator_end) = match crate::runtime::sys::seqpacket_pair() {
            Ok(pair) => pair,
            Err(e) => return Some(error(format!("cannot create a socket pair: {e}"))),
        };
        let exec_of = match &request {
            ZygoteRequest::Exec(spec) => Some(spec.container.clone()),
            _ => None,
        };
        let serial = self.next_creation;
        self.next_creation += 1;
        match self.spawn_creator(serial, &request, creator_end) {
            Err(message) => Some(error(message)),
            Ok(()) => {
                self.creating.push(Creating {
                    serial,
                    conn,
                    id,
                    container,
                    exec_of,
                    creator: None,
                    answer,
                });
                None
            }
        }
    }

    /// Sends `request` to the spawner, which forks a creator that answers
    /// on `answer` and says its pid later ([`Server::take_spawner_reply`]):
    /// the zygote does not wait for the fork. A spawner that is gone is
    /// started again once.
    fn spawn_creator(
        &mut self,
        serial: u64,
        request: &ZygoteRequest,
        answer: OwnedFd,
    ) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..2 {
            let mut spawner = match self.spawner.take() {
                Some(spawner) => spawner,
                None => Spawner::start(&self.state)?,
            };
            match spawner.send(serial, request, &answer) {
                Ok(()) => {
                    self.spawner = Some(spawner);
                    return Ok(());
                }
                Err(e) => {
                    last = format!("the zygote's spawner is gone: {e}");
                    spawner.end();
                }
            }
        }
        Err(last)
    }

    /// Reads one answer of the spawner: the pid of a creator it forked,
    /// or why it could not (said to the connection that asked). A spawner
    /// that is gone is replaced at the next create; the creators it owed a
    /// pid for answer all the same, with their own pid, and are reaped;
    /// one that dies without answering is left unreaped: its pid is
    /// unknown.
    fn take_spawner_reply(&mut self) {
        let Some(spawner) = self.spawner.as_mut() else {
            return;
        };
        match spawner.read_reply() {
            Ok((serial, SpawnerReply::Forked { pid })) => {
                if let Some(c) = self.creating.iter_mut().find(|c| c.serial == serial) {
                    c.creator = Some(pid);
                }
            }
            Ok((serial, SpawnerReply::Failed { message })) => {
                if let Some(index) = self.creating.iter().position(|c| c.serial == serial) {
                    let creating = self.creating.swap_remove(index);
                    if let Some(conn) = self.conns.iter().find(|c| c.serial == creating.conn) {
                        let _ = send_reply(conn.fd.as_fd(), &error(message), &[]);
                    }
                }
            }
            Err(_) => {
                if let Some(spawner) = self.spawner.take() {
                    spawner.end();
                }
            }
        }
    }

    /// Takes the answer of creation `serial`: keeps the new process's
    /// descriptors and forwards the answer to the connection that asked.
    /// When that connection is gone, nobody will ever watch the process:
    /// it is killed (and its container deleted).
    fn finish_creation(&mut self, serial: u64) {
        // A creator may answer before the spawner has said its pid (the
        // spawner has not run since it forked): wait for that first.
        while self
            .spawner
            .as_ref()
            .is_some_and(|s| s.awaiting.contains(&serial))
        {
            self.take_spawner_reply();
        }
        let Some(index) = self.creating.iter().position(|c| c.serial == serial) else {
            return;
        };
        let creating = self.creating.swap_remove(index);
        let (reply, fds) = self.creator_answer(&creating);
        let conn = self
            .conns
            .iter()
            .find(|c| c.serial == creating.conn)
            .map(|c| c.fd.as_fd());
        let ZygoteReply::Created { pid } = reply else {
            if let Some(conn) = conn {
                let _ = send_reply(conn, &reply, &fds);
            }
            return;
        };
        let kept = keep(pid, &fds, creating.exec_of.clone());
        let delivered = match (&kept, conn) {
            (Ok(_), Some(conn)) => send_reply(conn, &reply, &fds).is_ok(),
            (Err(e), Some(conn)) => {
                let refused = error(format!("cannot keep its descriptors: {e}"));
                let _ = send_reply(conn, &refused, &[]);
                false
            }
            (_, None) => false,
        };
        match kept {
            Ok(live) if delivered => {
                self.live.insert(creating.id, live);
            }
            // Refused, or asked by a daemon that is gone.
            _ => {
                self.kill_child(pid);
                if creating.container {
                    let _ = self.rt.delete(&creating.id, true);
                }
            }
        }
    }

    /// Receives a creator's answer. The creator exits right after
    /// answering and is reaped once it has ([`Exiting`]); one that died
    /// without answering is reaped at once, for its status.
    fn creator_answer(&mut self, creating: &Creating) -> (ZygoteReply, Vec<OwnedFd>) {
        let mut buf = vec![0u8; MAX_PACKET];
        let parsed = match os::recv_with_fds(creating.answer.as_fd(), &mut buf) {
            Ok((n, fds)) if n > 0 => match serde_json::from_slice::<CreatorAnswer>(&buf[..n]) {
                Ok(answer) => {
                    self.watch_exiting(creating.creator.or(Some(answer.creator)));
                    Ok((answer.reply, fds))
                }
                Err(e) => {
                    self.watch_exiting(creating.creator);
                    Err(format!(
                        "the creator of {} answered badly: {e}",
                        creating.id
                    ))
                }
            },
            _ => Err(match creating.creator {
                Some(pid) => format!(
                    "the creator of {} died without answering ({:?})",
                    creating.id,
                    crate::runtime::sys::waitid_pid(pid, true)
                ),
                None => format!(
                    "the zygote's spawner died before it started the creator of {}; nothing \
                     was created, try again",
                    creating.id
                ),
            }),
        };
        parsed.unwrap_or_else(|message| {
            if creating.container {
                let _ = self.rt.delete(&creating.id, true);
            }
            (error(message), Vec::new())
        })
    }

    /// Polls the exit of creator `pid`, which has answered.
    fn watch_exiting(&mut self, creator: Option<libc::pid_t>) {
        let Some(pid) = creator else {
            return;
        };
        match crate::runtime::sys::pidfd_open(pid) {
            Ok(pidfd) => self.exiting.push(Exiting { pid, pidfd }),
            Err(_) => {
                let _ = crate::runtime::sys::waitid_pid(pid, true);
            }
        }
    }

    /// Reaps creator `pid`, which has exited.
    fn reap_creator(&mut self, pid: libc::pid_t) {
        if !matches!(crate::runtime::sys::waitid_pid(pid, false), Ok(None)) {
            self.exiting.retain(|e| e.pid != pid);
        }
    }

    /// Reaps every creator still exiting, waiting for them: they exit
    /// right after answering.
    fn settle_creators(&mut self) {
        for exiting in self.exiting.drain(..) {
            let _ = crate::runtime::sys::waitid_pid(exiting.pid, true);
        }
    }

    /// `waitid` for child `pid` of the zygote: an init (or exec'd
    /// process) whose creator has not finished exiting is still the
    /// creator's child, so on `ECHILD` the exiting creators are reaped
    /// first and it is asked again.
    fn wait_child(
        &mut self,
        pid: libc::pid_t,
        block: bool,
    ) -> crate::runtime::sys::SysResult<Option<crate::runtime::sys::WaitStatus>> {
        match crate::runtime::sys::waitid_pid(pid, block) {
            Err(e) if e.0 == libc::ECHILD && !self.exiting.is_empty() => {
                self.settle_creators();
                crate::runtime::sys::waitid_pid(pid, block)
            }
            waited => waited,
        }
    }

    /// Kills child `pid` and reaps it.
    fn kill_child(&mut self, pid: libc::pid_t) {
        let _ = crate::runtime::sys::kill(pid, libc::SIGKILL);
        let _ = self.wait_child(pid, true);
    }

    fn reap(&mut self, id: &str) -> ZygoteReply {
        let Some(pid) = self.live.get(id).map(|live| live.pid) else {
            return error(format!("no container {id:?}"));
        };
        match self.wait_child(pid, false) {
            Ok(Some(s)) => {
                self.live.remove(id);
                // A container without a memory cgroup of its own has no
                // OOM kill count: its cgroup is not there.
                let oom_kills = self
                    .cgroups
                    .stats(&cgroup_path(id, false))
                    .ok()
                    .and_then(|s| s.oom_kills);
                ZygoteReply::Reaped {
                    code: Some(s.code()),
                    oom_killed: oom_kills.unwrap_or(0) > 0,
                }
            }
            Ok(None) => ZygoteReply::Reaped {
                code: None,
                oom_killed: false,
            },
            Err(e) => error(format!("cannot wait for {id}: {e}")),
        }
    }

    /// `exec`s `exe` as `hostd zygote --resume`; answers only on failure.
    /// Only with nothing in flight: one connection, no creator.
    fn upgrade(&mut self, exe: &Path, index: usize) -> ZygoteReply {
        if self.conns.len() != 1 || !self.creating.is_empty() {
            return error("cannot upgrade while serving several requests".into());
        }
        // The new image would never know them.
        self.settle_creators();
        // The spawner is this image's: the new one starts its own. Ended
        // and reaped here, since the new image would never reap it (a
        // zombie child for good). Should the exec fail, the next create
        // starts another.
        if let Some(spawner) = self.spawner.take() {
            spawner.end();
        }
        let conn = self.conns[index].fd.as_fd();
        let handed: Vec<Handed> = self
            .live
            .iter()
            .map(|(id, l)| Handed {
                id: id.clone(),
                pid: l.pid,
                pidfd: None,
                sync: None,
                stdout: l.stdout.as_raw_fd(),
                stderr: l.stderr.as_raw_fd(),
                stdin: l.stdin.as_ref().map(|f| f.as_raw_fd()),
                exec_of: l.exec_of.clone(),
            })
            .collect();
        let path = self.state.join(HANDOFF);
        let json = serde_json::to_vec(&handed).unwrap_or_default();
        if let Err(e) = mkhost_shared::fs::write_atomic(&path, &json, 0o600) {
            return error(format!("cannot write {}: {e}", path.display()));
        }
        let orphans_path = self.state.join(ORPHANS_HANDOFF);
        let orphans: Vec<&Orphan> = self.orphans.iter().map(|w| &w.orphan).collect();
        let json = serde_json::to_vec(&orphans).unwrap_or_default();
        if let Err(e) = mkhost_shared::fs::write_atomic(&orphans_path, &json, 0o600) {
            let _ = fs::remove_file(&path);
            return error(format!("cannot write {}: {e}", orphans_path.display()));
        }
        let mut kept: Vec<BorrowedFd<'_>> = vec![conn, self.listener.as_fd()];
        for l in self.live.values() {
            kept.extend([l.stdout.as_fd(), l.stderr.as_fd()]);
            kept.extend(l.stdin.as_ref().map(|f| f.as_fd()));
        }
        let cloexec = |on: bool| kept.iter().try_for_each(|fd| os::set_cloexec(*fd, on));
        let args = vec![
            "hostd".to_string(),
            "zygote".to_string(),
            "--state".to_string(),
            self.state.display().to_string(),
            "--conn".to_string(),
            conn.as_raw_fd().to_string(),
            "--listener".to_string(),
            self.listener.as_raw_fd().to_string(),
        ];
        let failure = match cloexec(false) {
            Ok(()) => os::execv(exe, &args),
            Err(e) => e,
        };
        let _ = cloexec(true);
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(&orphans_path);
        error(format!("cannot run {}: {failure}", exe.display()))
    }
}

/// The zygote's spawner: a child forked when the zygote starts, holding
/// no container's descriptors, that forks the creators. A process forked
/// from the zygote itself would copy (and then close) the zygote's two
/// descriptors per container, a cost that grows with every container; the
/// spawner's table stays a handful. It forks with `CLONE_PARENT`, so each
/// creator is the zygote's child, as are, through the subreaper, the inits.
struct Spawner {
    sock: OwnedFd,
    pid: libc::pid_t,
    /// The creations it has been asked for and not answered yet, oldest
    /// first (it answers in order).
    awaiting: std::collections::VecDeque<u64>,
}

/// The spawner's answer to a request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
enum SpawnerReply {
    /// A creator runs as the zygote's child.
    Forked { pid: libc::pid_t },
    /// It could not fork one.
    Failed { message: String },
}

impl Spawner {
    /// Forks the spawner: it closes every descriptor but its socket and
    /// the standard ones, and serves [`spawner_main`].
    fn start(state: &Path) -> Result<Spawner, String> {
        let (sock, theirs) = crate::runtime::sys::seqpacket_pair()
            .map_err(|e| format!("cannot create the spawner's socket: {e}"))?;
        // SAFETY: the zygote has a single thread.
        match unsafe { os::fork() } {
            Err(e) => Err(format!("cannot fork the spawner: {e}")),
            Ok(None) => spawner_main(theirs, state),
            Ok(Some(pid)) => Ok(Spawner {
                sock,
                pid,
                awaiting: Default::default(),
            }),
        }
    }

    /// Closes its socket, kills it and reaps it.
    fn end(self) {
        drop(self.sock);
        kill_child(self.pid);
    }

    /// Sends `request` (creation `serial`) with the creator's end of its
    /// answer socket; the answer is read later.
    fn send(
        &mut self,
        serial: u64,
        request: &ZygoteRequest,
        answer: &OwnedFd,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(request).unwrap_or_default();
        os::send_with_fds(self.sock.as_fd(), &bytes, &[answer.as_fd()])?;
        self.awaiting.push_back(serial);
        Ok(())
    }

    /// Reads the answer to the oldest request it has not answered; an
    /// error: the spawner is gone.
    fn read_reply(&mut self) -> std::io::Result<(u64, SpawnerReply)> {
        let mut buf = [0u8; 4096];
        let n = match os::recv_with_fds(self.sock.as_fd(), &mut buf)? {
            (0, _) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            (n, _) => n,
        };
        let serial = self
            .awaiting
            .pop_front()
            .ok_or_else(|| std::io::Error::other("the spawner answered nothing asked"))?;
        let reply = serde_json::from_slice(&buf[..n]).unwrap_or_else(|e| SpawnerReply::Failed {
            message: format!("the spawner answered badly: {e}"),
        });
        Ok((serial, reply))
    }
}

/// The spawner's life: for each request on `sock` (a create or an exec,
/// with the socket its creator answers on), forks a creator as the
/// zygote's child and answers its pid. Exits when the zygote closes
/// `sock`.
fn spawner_main(sock: OwnedFd, state: &Path) -> ! {
    // Only the standard descriptors and the socket, as fd 3, stay open.
    // What the zygote's objects own is closed under them; they are never
    // used (nor dropped) here.
    if sock.as_raw_fd() != 3 {
        // SAFETY: dup2(2) onto fd 3, which nothing in this process uses
        // afterwards but the socket itself.
        if unsafe { libc::dup2(sock.as_raw_fd(), 3) } != 3 {
            std::process::exit(1);
        }
    }
    std::mem::forget(sock);
    let _ = crate::runtime::sys::close_range(4, u32::MAX);
    // SAFETY: fd 3 is the socket, open and owned by nothing else now.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3) };
    let log = Log::new(Some(&state.join("zygote.log")), false).unwrap_or_default();
    let mut rt = Runtime::detect(state.join("oci"), log);
    // The spawner has a single thread, as MountSource::new needs.
    match MountSource::new() {
        Ok(source) => rt.set_mount_source(Some(source)),
        Err(e @ MountSourceError::NotShared) => rt.log().info(&e.to_string()),
        Err(e) => rt.log().warn(&format!(
            "containers copy the host's mount table: no mount namespace without its \
             network namespace files: {e}"
        )),
    }
    let saved = (
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
        std::io::stderr().as_fd().try_clone_to_owned(),
    );
    let (Ok(stdin), Ok(stdout), Ok(stderr)) = saved else {
        std::process::exit(1)
    };
    let saved = SavedStdio {
        stdin,
        stdout,
        stderr,
    };
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let (n, mut fds) = match os::recv_with_fds(sock.as_fd(), &mut buf) {
            Ok((0, _)) | Err(_) => std::process::exit(0),
            Ok(got) => got,
        };
        let reply = match (
            serde_json::from_slice::<ZygoteRequest>(&buf[..n]),
            fds.pop(),
        ) {
            (Ok(request), Some(answer)) => {
                // SAFETY: the spawner has a single thread.
                match unsafe { os::fork_sibling() } {
                    Err(e) => SpawnerReply::Failed {
                        message: format!("cannot fork a creator: {e}"),
                    },
                    Ok(None) => {
                        drop(sock);
                        creator_main(&rt, &saved, &request, &answer)
                    }
                    Ok(Some(pid)) => SpawnerReply::Forked { pid },
                }
            }
            (Err(e), _) => SpawnerReply::Failed {
                message: format!("invalid request: {e}"),
            },
            (Ok(_), None) => SpawnerReply::Failed {
                message: "a request without its answer socket".into(),
            },
        };
        let bytes = serde_json::to_vec(&reply).unwrap_or_default();
        if os::send_with_fds(sock.as_fd(), &bytes, &[]).is_err() {
            std::process::exit(0);
        }
    }
}

/// A creator: runs a create or an exec, sends the answer and the new
/// process's descriptors on `answer`, and exits.
fn creator_main(rt: &Runtime, saved: &SavedStdio, request: &ZygoteRequest, answer: &OwnedFd) -> ! {
    let (made, container) = match request {
        ZygoteRequest::Create(spec) => (create(rt, spec, saved), Some(spec.id.as_str())),
        ZygoteRequest::Exec(spec) => (exec(rt, spec, saved), None),
        _ => (Err(CreateError::from("not a create".to_string())), None),
    };
    let (reply, fds) = match made {
        Ok(live) => match live.descriptors() {
            Ok(fds) => (live.created(), fds),
            Err(e) => {
                live.kill();
                if let Some(id) = container {
                    let _ = rt.delete(id, true);
                }
                (error(format!("cannot open a pidfd: {e}")), Vec::new())
            }
        },
        Err(e) => (
            ZygoteReply::Error {
                message: e.message,
                exec: e.exec,
            },
            Vec::new(),
        ),
    };
    let answer_packet = CreatorAnswer {
        creator: std::process::id() as libc::pid_t,
        reply,
    };
    let code = i32::from(send_reply(answer.as_fd(), &answer_packet, &fds).is_err());
    // SAFETY: _exit(2) ends this forked copy at once, running none of the
    // spawner's destructors or exit handlers.
    unsafe { libc::_exit(code) }
}

/// Sends `reply` (a [`ZygoteReply`], or a creator's [`CreatorAnswer`])
/// with `fds` attached as one packet.
fn send_reply<T: Serialize>(
    conn: BorrowedFd<'_>,
    reply: &T,
    fds: &[OwnedFd],
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(reply).unwrap_or_default();
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    os::send_with_fds(conn, &bytes, &borrowed)
}

impl Live {
    /// A new pidfd, the stdout, the stderr and (if any) the stdin, for the
    /// daemon.
    fn descriptors(&self) -> std::io::Result<Vec<OwnedFd>> {
        let pidfd = crate::runtime::sys::pidfd_open(self.pid)
            .map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
        let mut fds = vec![pidfd, self.stdout.try_clone()?, self.stderr.try_clone()?];
        if let Some(stdin) = &self.stdin {
            fds.push(stdin.try_clone()?);
        }
        Ok(fds)
    }

    /// The answer that goes with [`Live::descriptors`].
    fn created(&self) -> ZygoteReply {
        ZygoteReply::Created { pid: self.pid }
    }

    /// Kills the process and reaps it.
    fn kill(&self) {
        kill_child(self.pid);
    }
}

/// Kills child `pid` and reaps it.
fn kill_child(pid: libc::pid_t) {
    let _ = crate::runtime::sys::kill(pid, libc::SIGKILL);
    let _ = crate::runtime::sys::waitid_pid(pid, true);
}

/// The zygote's copies of a new process's descriptors (`fds`: pidfd,
/// stdout, stderr and maybe stdin, as a creator sends them); `exec_of`:
/// the container of an exec'd process. An exec's input is the daemon's
/// alone: when its client goes, the process reads end-of-file.
fn keep(pid: libc::pid_t, fds: &[OwnedFd], exec_of: Option<String>) -> std::io::Result<Live> {
    let [_pidfd, stdout, stderr, rest @ ..] = fds else {
        return Err(std::io::Error::other(
            "the creator sent too few descriptors",
        ));
    };
    let stdin = match (&exec_of, rest.first()) {
        (None, Some(fd)) => Some(fd.try_clone()?),
        _ => None,
    };
    Ok(Live {
        pid,
        stdout: stdout.try_clone()?,
        stderr: stderr.try_clone()?,
        stdin,
        exec_of,
    })
}

/// Reads and removes a hand-over file an old image wrote before its
/// `exec`; none, or one that does not parse, hands nothing over.
fn take_handed<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let handed = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let _ = fs::remove_file(path);
    handed
}

/// `hostd zygote --state S --conn N --listener M`: the new image of an
/// upgraded zygote. Takes over the descriptors named in the hand-over file,
/// answers the pending `upgrade` with `hello`, and serves on.
pub fn resume(state: &Path, conn: RawFd, listener: RawFd) -> ! {
    let handed: Vec<Handed> = take_handed(&state.join(HANDOFF));
    // The old image cleared close-on-exec on exactly these descriptors for
    // this one to own.
    let mut numbers = vec![conn, listener];
    for h in &handed {
        numbers.extend(h.pidfd);
        numbers.extend(h.sync);
        numbers.extend([h.stdout, h.stderr]);
        numbers.extend(h.stdin);
    }
    let taken = match os::take_inherited_fds(&numbers) {
        Ok(taken) => taken,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "hostd zygote: cannot take the descriptors {numbers:?} over: {e}"
            );
            std::process::exit(1);
        }
    };
    // One descriptor per number, in the order asked.
    let mut taken = taken.into_iter();
    let (Some(conn), Some(listener)) = (taken.next(), taken.next()) else {
        std::process::exit(1)
    };
    let mut live = HashMap::new();
    for h in handed {
        // An older image's pidfd and sync socket: no longer kept.
        for _ in h.pidfd.iter().chain(h.sync.iter()) {
            drop(taken.next());
        }
        let (Some(stdout), Some(stderr)) = (taken.next(), taken.next()) else {
            std::process::exit(1)
        };
        let stdin = match h.stdin {
            Some(_) => match taken.next() {
                Some(fd) => Some(fd),
                None => std::process::exit(1),
            },
            None => None,
        };
        live.insert(
            h.id,
            Live {
                pid: h.pid,
                stdout,
                stderr,
                stdin,
                exec_of: h.exec_of,
            },
        );
    }
    let mut server = Server::new(state, listener, live);
    // The old image's orphans, by pid: still this process's children. An
    // image from before orphans were kept wrote no such file.
    for orphan in take_handed::<Orphan>(&state.join(ORPHANS_HANDOFF)) {
        server.watch(orphan);
    }
    if send_reply(conn.as_fd(), &server.hello(), &[]).is_err() {
        std::process::exit(1);
    }
    let daemon = os::peer_pid(conn.as_fd()).unwrap_or(0);
    server.serve(conn, daemon)
}

fn error(message: String) -> ZygoteReply {
    ZygoteReply::Error {
        message,
        exec: None,
    }
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

/// A failed `create`: why, and whether it was the container's command that
/// could not be started.
struct CreateError {
    message: String,
    exec: Option<ExecError>,
}

impl From<String> for CreateError {
    fn from(message: String) -> Self {
        CreateError {
            message,
            exec: None,
        }
    }
}

impl CreateError {
    /// `e`, from creating or starting a container whose argv starts with
    /// `command`.
    fn runtime(e: &RuntimeError, command: &str) -> Self {
        CreateError {
            message: chain(e),
            exec: exec_error(e, command),
        }
    }
}

/// Whether `e` is the container's command failing to start, told apart as
/// `docker run` does with runc: a bare name that is not found as an
/// executable anywhere in `PATH` is "not found" whatever the reason (Go's
/// `exec.LookPath`); otherwise `ENOENT` is "not found" and `EACCES` (no
/// permission, a directory) "not executable". Anything else is a plain
/// failure (exit 125).
fn exec_error(e: &RuntimeError, command: &str) -> Option<ExecError> {
    let RuntimeError::Spawn(SpawnError::Init { step, errno, .. }) = e else {
        return None;
    };
    match (step, errno.0) {
        (Step::FindExecutable, _) if !command.contains('/') => Some(ExecError::NotFound),
        (Step::FindExecutable | Step::Exec, libc::ENOENT) => Some(ExecError::NotFound),
        (Step::FindExecutable | Step::Exec, libc::EACCES) => Some(ExecError::NotExecutable),
        _ => None,
    }
}

/// The zygote's own standard descriptors, put back after each process
/// it starts (stdin is `/dev/null`).
struct SavedStdio {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The standard descriptors of a process being started: pipes for its
/// output and, when asked, its input. With a terminal the process replaces
/// them with the terminal; its stderr pipe then stays empty.
struct NewStdio {
    out_read: OwnedFd,
    err_read: OwnedFd,
    stdin_write: Option<OwnedFd>,
    /// What goes on the process's 0, 1 and 2 (`None`: `/dev/null`).
    child: (Option<OwnedFd>, OwnedFd, OwnedFd),
}

impl NewStdio {
    fn new(tty: bool, open_stdin: bool) -> Result<NewStdio, String> {
        let pipe = || os::pipe_blocking().map_err(|e| format!("cannot create a pipe: {e}"));
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (stdin_read, stdin_write) = match open_stdin && !tty {
            true => {
                let (r, w) = pipe()?;
                (Some(OwnedFd::from(r)), Some(OwnedFd::from(w)))
            }
            false => (None, None),
        };
        Ok(NewStdio {
            out_read: out_read.into(),
            err_read: err_read.into(),
            stdin_write,
            child: (stdin_read, out_write.into(), err_write.into()),
        })
    }

    /// Runs `start` with the child's descriptors on 0, 1 and 2, then puts
    /// `saved` back and closes the child's ends.
    fn around<T>(
        &mut self,
        saved: &SavedStdio,
        start: impl FnOnce() -> Result<T, CreateError>,
    ) -> Result<T, CreateError> {
        let (stdin, stdout, stderr) = &self.child;
        let redirect = stdin
            .as_ref()
            .map_or(Ok(()), |fd| os::dup2(fd.as_fd(), 0))
            .and_then(|()| os::dup2(stdout.as_fd(), 1))
            .and_then(|()| os::dup2(stderr.as_fd(), 2));
        let result = redirect
            .map_err(|e| CreateError::from(format!("cannot redirect standard descriptors: {e}")))
            .and_then(|()| start());
        let _ = os::dup2(saved.stdin.as_fd(), 0);
        let _ = os::dup2(saved.stdout.as_fd(), 1);
        let _ = os::dup2(saved.stderr.as_fd(), 2);
        self.child.0 = None;
        result
    }

    /// The process's descriptors as the zygote keeps them; `console` is
    /// the primary side of its terminal, if it has one.
    fn into_live(self, spawned: Spawned, console: Option<OwnedFd>) -> std::io::Result<Live> {
        let (stdout, stdin) = match console {
            Some(primary) => {
                let input = primary.try_clone()?;
                (primary, Some(input))
            }
            None => (self.out_read, self.stdin_write),
        };
        Ok(Live {
            pid: spawned.pid,
            stdout,
            stderr: self.err_read,
            stdin,
            // The creator's own record, for its answer: the zygote keeps its
            // copies with [`keep`].
            exec_of: None,
        })
    }
}

/// Writes `config.json`, creates the container with its standard
/// descriptors from [`NewStdio`] (or a terminal), starts it and checks its
/// `execve`.
fn create(rt: &Runtime, spec: &CreateSpec, saved: &SavedStdio) -> Result<Live, CreateError> {
    let config = serde_json::to_vec_pretty(&oci_config(spec)).map_err(|e| e.to_string())?;
    let path = spec.bundle.join("config.json");
    fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut stdio = NewStdio::new(spec.tty, spec.open_stdin)?;
    let command = spec.args.first().map_or("", String::as_str);
    let options = CreateOptions {
        bundle: spec.bundle.clone(),
        pid_file: None,
        preserve_fds: 0,
        console: Console::Keep,
    };
    let container = stdio.around(saved, || {
        rt.create(&spec.id, &options)
            .map_err(|e| CreateError::runtime(&e, command))
    })?;
    let mut process = container.process;
    let console = process.console.take();
    // The first size, before the process runs: a shell asks at once.
    if let (Some(console), Some((rows, cols))) = (&console, spec.console_size) {
        let _ = crate::runtime::sys::set_window_size(console.as_fd(), rows, cols);
    }
    // `start` also fails when the init fails before or in `execve`.
    if let Err(e) = rt.start(&spec.id) {
        let e = CreateError::runtime(&e, command);
        process.kill();
        let _ = rt.delete(&spec.id, true);
        return Err(e);
    }
    stdio
        .into_live(process, console)
        .map_err(|e| CreateError::from(format!("cannot keep the container's terminal: {e}")))
}

/// Starts the process of `spec` in its running container, as
/// [`create`] does an init.
fn exec(rt: &Runtime, spec: &ExecSpec, saved: &SavedStdio) -> Result<Live, CreateError> {
    let config = crate::runtime::spec::Spec::load(&spec.bundle)
        .map_err(|e| format!("cannot read the container's config.json: {}", chain(&e)))?;
    let mut process = config
        .process
        .ok_or_else(|| "the container's config.json has no process".to_string())?;
    process.args = spec.args.clone();
    process.env = spec.env.clone();
    process.terminal = spec.tty;
    if let Some(cwd) = &spec.cwd {
        process.cwd = cwd.clone();
    }
    if let Some((uid, gid, groups)) = &spec.user {
        process.user.uid = *uid;
        process.user.gid = *gid;
        process.user.additional_gids = groups.clone();
    }
    let mut stdio = NewStdio::new(spec.tty, spec.open_stdin)?;
    let command = spec.args.first().map_or("", String::as_str);
    let mut spawned = stdio.around(saved, || {
        rt.exec(&spec.container, &process)
            .map_err(|e| CreateError::runtime(&e, command))
    })?;
    let console = spawned.console.take();
    if let (Some(console), Some((rows, cols))) = (&console, spec.console_size) {
        let _ = crate::runtime::sys::set_window_size(console.as_fd(), rows, cols);
    }
    stdio
        .into_live(spawned, console)
        .map_err(|e| CreateError::from(format!("cannot keep the process's terminal: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(id: &str, descriptors: usize, error: Option<&str>) -> Attached {
        Attached {
            id: id.into(),
            pid: if error.is_some() { 0 } else { 100 },
            descriptors,
            error: error.map(str::to_string),
        }
    }

    fn descriptors(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| fs::File::open("/dev/null").unwrap().into())
            .collect()
    }

    #[test]
    fn attach_many_deals_descriptors_out_in_order() {
        let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let answer = vec![
            attached("a", 3, None),
            attached("b", 0, Some("no container \"b\"")),
            attached("c", 4, None),
        ];
        let fds = descriptors(7);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let split = split_attached(&ids, answer, fds).unwrap();
        let (a, b, c) = (&split[0], &split[1], &split[2]);
        let got = |r: &AttachResult| -> Vec<RawFd> {
            r.as_ref()
                .unwrap()
                .1
                .iter()
                .map(|f| f.as_raw_fd())
                .collect()
        };
        assert_eq!((a.0.as_str(), got(&a.1)), ("a", raw[..3].to_vec()));
        assert_eq!(b.1.as_ref().unwrap_err(), "no container \"b\"");
        assert_eq!((c.0.as_str(), got(&c.1)), ("c", raw[3..].to_vec()));
    }

    #[test]
    fn attach_many_answers_that_do_not_match_are_refused() {
        let ids: Vec<String> = ["a", "b"].map(String::from).to_vec();
        // Too few descriptors for what the answer claims.
        let short = split_attached(
            &ids,
            vec![attached("a", 3, None), attached("b", 3, None)],
            descriptors(5),
        );
        assert!(short.unwrap_err().to_string().contains("expected 6"));
        // Another container than asked.
        let other = split_attached(
            &ids,
            vec![attached("a", 3, None), attached("x", 3, None)],
            descriptors(6),
        );
        assert!(other.is_err());
        // Fewer containers than asked.
        assert!(split_attached(&ids, vec![attached("a", 3, None)], descriptors(3)).is_err());
    }
}
