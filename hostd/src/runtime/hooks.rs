//! OCI lifecycle hooks: programs named in `config.json` that the runtime runs
//! at fixed points of a container's life, each with the container's state as
//! JSON on its standard input.
//!
//! Where each kind runs, and what its failure does (runc 1.1 places them the
//! same way, apart from `poststart`, see `docs/runtime.md`):
//!
//! | kind | run by | namespaces, directory | when | a failure |
//! | --- | --- | --- | --- | --- |
//! | `prestart` | `create` | the runtime's, the bundle | the init waits after its mounts, before `pivot_root` | fails `create` |
//! | `createRuntime` | `create` | the same | after `prestart` | fails `create` |
//! | `createContainer` | the init | the container's, before `pivot_root`; the rootfs path | after `createRuntime` | fails `create` |
//! | `startContainer` | the init | the container's, as its process (user, capabilities) | `start`, before `execve` | fails `start`, the container stops |
//! | `poststart` | `start` | the runtime's, the bundle | after `execve` | a warning |
//! | `poststop` | `delete` | the runtime's, the bundle | after the container is gone | a warning |
//!
//! `createContainer` and `startContainer` hooks get the container's
//! namespaces by being run from the init itself, as runc does, rather than
//! by a helper joining them with `setns`: a `startContainer` hook (whose
//! program comes from the image) then has the container's credentials, not
//! the runtime's. A `create` that fails once the init exists (a hook or
//! anything else) and a failed `startContainer` hook continue the lifecycle
//! at delete, so `poststop` runs then too, as the specification asks.
//!
//! [`run`] is what every hook goes through, and it allocates nothing, so the
//! init can use it between `clone` and `execve`. The state is written into a
//! memfd that becomes the hook's standard input (a regular file: nothing to
//! fill, no `SIGPIPE` when the hook does not read it); its output goes to a
//! second memfd, shown only when it fails (runc keeps it the same way). The
//! hook is forked with a pidfd into a process group of its own, polled with
//! its timeout, and the whole group is killed when the timeout passes. An
//! `execve` failure comes back over a close-on-exec pipe, so a missing
//! program is told apart from one that exits 127.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{MemfdFlags, SeekFrom};
use rustix::io::FdFlags;
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, Signal};

use serde_json::Value;

use super::state::OCI_VERSION;
use super::sys::{self, Errno, Forked, WaitStatus};

/// The state's `status` while `create` runs.
pub const CREATING: &str = "creating";
/// ... once the init waits for `start`.
pub const CREATED: &str = "created";
/// ... once the process runs.
pub const RUNNING: &str = "running";
/// ... once it is gone.
pub const STOPPED: &str = "stopped";

/// The six kinds, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    /// Every kind, in lifecycle order.
    pub const ALL: [Kind; 6] = [
        Kind::Prestart,
        Kind::CreateRuntime,
        Kind::CreateContainer,
        Kind::StartContainer,
        Kind::Poststart,
        Kind::Poststop,
    ];

    /// The name in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hook `config.json` gets wrong.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field, e.g. `hooks.prestart[0].timeout`.
    pub field: String,
    /// What is wrong.
    pub message: &'static str,
}

fn config_error(field: String, message: &'static str) -> ConfigError {
    ConfigError { field, message }
}

/// How a hook failed. One `i32` on the wire ([`Failure::to_wire`]), so the
/// init can report it over the sync socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Starting it failed (memfd, pipe, fork, `chdir`): the runtime's side.
    Setup(Errno),
    /// `execve` failed: a missing or non-executable path.
    Exec(Errno),
    /// It exited with this non-zero status.
    Exited(i32),
    /// This signal killed it.
    Signaled(i32),
    /// It ran past its timeout and was killed.
    TimedOut,
}

impl Failure {
    /// Encodes as `kind << 16 | value`.
    pub fn to_wire(self) -> i32 {
        let (tag, value) = match self {
            Failure::Setup(e) => (1, e.0),
            Failure::Exec(e) => (2, e.0),
            Failure::Exited(c) => (3, c),
            Failure::Signaled(s) => (4, s),
            Failure::TimedOut => (5, 0),
        };
        (tag << 16) | (value & 0xffff)
    }

    /// Decodes [`Failure::to_wire`].
    pub fn from_wire(w: i32) -> Failure {
        let value = w & 0xffff;
        match w >> 16 {
            2 => Failure::Exec(Errno(value)),
            3 => Failure::Exited(value),
            4 => Failure::Signaled(value),
            5 => Failure::TimedOut,
            _ => Failure::Setup(Errno(value)),
        }
    }
}

/// A failed hook, for `create`'s and `start`'s errors and the log.
#[derive(Debug, thiserror::Error)]
pub struct HookError {
    /// The kind.
    pub kind: Kind,
    /// Position in its list.
    pub index: usize,
    /// The hook's path.
    pub path: String,
    /// What happened.
    pub failure: Failure,
    /// Its timeout in seconds.
    pub timeout: Option<u32>,
    /// What it wrote to stdout and stderr (the start of it), when known.
    pub output: String,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} hook #{} ({}) ", self.kind, self.index, self.path)?;
        match self.failure {
            Failure::Setup(e) => write!(f, "could not be started: {e}")?,
            Failure::Exec(e) => write!(f, "could not be executed: {e}")?,
            Failure::Exited(c) => write!(f, "exited with status {c}")?,
            Failure::Signaled(s) => write!(f, "was killed by signal {s}")?,
            Failure::TimedOut => write!(
                f,
                "ran past its timeout of {}s and was killed",
                self.timeout.unwrap_or(0)
            )?,
        }
        if !self.output.is_empty() {
            write!(f, "; output: {}", self.output)?;
        }
        Ok(())
    }
}

/// A hook ready to run: C strings and pointer arrays made before any fork.
#[derive(Debug)]
pub struct Prepared {
    path: CString,
    args: Pointers,
    env: Pointers,
    timeout: Option<u32>,
}

/// C strings and the NUL-terminated pointer array `execve` takes. (The
/// plan's `CStringArray` does the same; `plan` uses this module, so this
/// one does not use `plan`.)
#[derive(Debug)]
struct Pointers {
    _strings: Vec<CString>,
    pointers: Vec<*const libc::c_char>,
}

impl Pointers {
    fn new(strings: Vec<CString>) -> Self {
        let mut pointers: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        // Moving the Vec<CString> does not move the strings' heap data.
        Pointers {
            _strings: strings,
            pointers,
        }
    }
}

impl Prepared {
    /// Checks and prepares `hooks.KIND[index]`, `{path, args, env,
    /// timeout}`, read from its JSON (unknown fields are ignored, null is
    /// absent, as runc reads it).
    fn new(
        kind: Kind,
        index: usize,
        hook: &Value,
        inherited: &mut Option<Vec<CString>>,
    ) -> Result<Prepared, ConfigError> {
        let err = |field: &str, message| {
            let dot = if field.is_empty() { "" } else { "." };
            config_error(format!("hooks.{kind}[{index}]{dot}{field}"), message)
        };
        let Value::Object(hook) = hook else {
            return Err(err("", "expected an object"));
        };
        let field = |name| hook.get(name).filter(|v| !v.is_null());
        let c_string =
            |name, s: &str| CString::new(s).map_err(|_| err(name, "contains a NUL byte"));
        let strings = |name| -> Result<Option<Vec<CString>>, ConfigError> {
            let Some(v) = field(name) else {
                return Ok(None);
            };
            let list = v
                .as_array()
                .ok_or_else(|| err(name, "expected an array of strings"))?;
            let strings = list.iter().map(|s| match s {
                Value::String(s) => c_string(name, s),
                _ => Err(err(name, "expected an array of strings")),
            });
            strings.collect::<Result<_, _>>().map(Some)
        };
        let path = match field("path") {
            Some(Value::String(p)) if p.starts_with('/') => c_string("path", p)?,
            Some(Value::String(_)) => return Err(err("path", "not an absolute path")),
            Some(_) => return Err(err("path", "expected a string")),
            None => return Err(err("path", "missing")),
        };
        let args = match strings("args")? {
            Some(args) if !args.is_empty() => args,
            _ => vec![path.clone()],
        };
        let env = match strings("env")? {
            Some(env) => env,
            // Like runc (Go's exec), no `env` means the runtime's own.
            None => inherited.get_or_insert_with(own_environment).clone(),
        };
        let timeout = match field("timeout") {
            None => None,
            Some(t) => match t.as_i64() {
                Some(t) if t > 0 => Some(u32::try_from(t).unwrap_or(u32::MAX)),
                Some(_) => return Err(err("timeout", "must be a positive number of seconds")),
                None => return Err(err("timeout", "expected an integer")),
            },
        };
        Ok(Prepared {
            path,
            args: Pointers::new(args),
            env: Pointers::new(env),
            timeout,
        })
    }

    fn timeout_ms(&self) -> i32 {
        match self.timeout {
            Some(s) => i32::try_from(u64::from(s) * 1000).unwrap_or(i32::MAX),
            None => -1,
        }
    }

    fn error(&self, kind: Kind, index: usize, failure: Failure, output: String) -> HookError {
        HookError {
            kind,
            index,
            path: self.path.to_string_lossy().into_owned(),
            failure,
            timeout: self.timeout,
            output,
        }
    }
}

fn own_environment() -> Vec<CString> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}

/// The state JSON of the specification (`ociVersion`, `id`, `status`,
/// `pid`, `bundle`, `annotations`, in runc's order), rendered around the
/// status and pid so the init can fill in its own pid without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTemplate {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl StateTemplate {
    /// The template for a container.
    pub fn new(id: &str, bundle: &Path, annotations: &BTreeMap<String, String>) -> Self {
        let mut head = br#"{"ociVersion":"#.to_vec();
        head.extend(json(OCI_VERSION));
        head.extend(br#","id":"#);
        head.extend(json(id));
        head.extend(br#","status":""#);
        let mut tail = br#","bundle":"#.to_vec();
        tail.extend(json(&bundle.to_string_lossy()));
        if !annotations.is_empty() {
            tail.extend(br#","annotations":"#);
            tail.extend(json(annotations));
        }
        tail.push(b'}');
        StateTemplate { head, tail }
    }

    /// The JSON for `status` and `pid` (`pid` is left out when `None`, as
    /// runc leaves out a zero pid).
    pub fn render(&self, status: &str, pid: Option<u32>) -> Vec<u8> {
        let mut digits = [0u8; 10];
        let mut out = Vec::new();
        for part in self.parts(status, pid, &mut digits) {
            out.extend_from_slice(part);
        }
        out
    }

    fn parts<'a>(
        &'a self,
        status: &'a str,
        pid: Option<u32>,
        digits: &'a mut [u8; 10],
    ) -> [&'a [u8]; 6] {
        let (key, number): (&[u8], &[u8]) = match pid {
            Some(p) => (br#","pid":"#, decimal(p, digits)),
            None => (b"", b""),
        };
        [
            &self.head,
            status.as_bytes(),
            b"\"",
            key,
            number,
            &self.tail,
        ]
    }
}

/// A value as JSON (strings and string maps: this cannot fail).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

/// `n` in decimal, without allocating.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Writes all of `buf`, retrying short writes.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match sys::write(fd.as_raw_fd(), buf)? {
            0 => return Err(Errno(libc::EIO)),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// A memfd for a hook's input or output. Its name shows in
/// `/proc/PID/fd`.
fn memfd(name: &CStr) -> Result<OwnedFd, Errno> {
    Ok(rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC)?)
}

/// Runs one hook and waits for it: the state (`status`, `pid`) on its
/// standard input, its stdout and stderr into `output`, in `cwd` when
/// given (else in ours). Allocates nothing (see the module docs).
pub fn run(
    hook: &Prepared,
    state: &StateTemplate,
    status: &str,
    pid: Option<u32>,
    cwd: Option<&CStr>,
    output: BorrowedFd<'_>,
) -> Result<(), Failure> {
    let input = memfd(c"oci-hook-state").map_err(Failure::Setup)?;
    let mut digits = [0u8; 10];
    for part in state.parts(status, pid, &mut digits) {
        write_all(input.as_fd(), part).map_err(Failure::Setup)?;
    }
    rustix::fs::seek(&input, SeekFrom::Start(0)).map_err(|e| Failure::Setup(e.into()))?;
    let (report_read, report_write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Failure::Setup(e.into()))?;

    // SAFETY: the child only makes system calls on what was prepared above
    // (`exec_hook` allocates nothing) and leaves through execve or _exit.
    let forked = unsafe { sys::clone_legacy(0, true) }.map_err(Failure::Setup)?;
    let (child, pidfd) = match forked {
        Forked::Child => exec_hook(hook, input.as_fd(), output, cwd, report_write.as_fd()),
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(report_write);
    let Some(pidfd) = pidfd else {
        // CLONE_PIDFD is older than every kernel the runtime runs on.
        let _ = sys::kill(child, libc::SIGKILL);
        let _ = sys::waitid_pid(child, true);
        return Err(Failure::Setup(Errno(libc::ENOSYS)));
    };

    let exited = sys::poll_readable([pidfd.as_fd()], hook.timeout_ms());
    if exited != Ok([true]) {
        // Timed out (or poll failed): the hook and whatever it started in
        // its process group go.
        if let Some(group) = Pid::from_raw(child) {
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::waitid_pidfd(pidfd.as_fd(), true);
        return Err(match exited {
            Err(e) => Failure::Setup(e),
            Ok(_) => Failure::TimedOut,
        });
    }
    let status = sys::waitid_pidfd(pidfd.as_fd(), true)
        .map_err(Failure::Setup)?
        .ok_or(Failure::Setup(Errno(libc::ECHILD)))?;
    // The child's report of a failed setup or execve: (stage, errno).
    let mut report = [0u8; 8];
    if let Ok(8) = sys::read_fd(report_read.as_fd(), &mut report) {
        let word =
            |i: usize| i32::from_ne_bytes([report[i], report[i + 1], report[i + 2], report[i + 3]]);
        let errno = Errno(word(4));
        return Err(if word(0) == 0 {
            Failure::Exec(errno)
        } else {
            Failure::Setup(errno)
        });
    }
    match status {
        WaitStatus::Exited(0) => Ok(()),
        WaitStatus::Exited(code) => Err(Failure::Exited(code)),
        WaitStatus::Signaled(sig) => Err(Failure::Signaled(sig)),
    }
}

/// The forked child of [`run`]: stdio, its own process group, default
/// signals, the directory, then `execve`. On failure it writes
/// `(stage, errno)` to `report` (stage 0: execve) and exits 127.
fn exec_hook(
    hook: &Prepared,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    cwd: Option<&CStr>,
    report: BorrowedFd<'_>,
) -> ! {
    let setup = || -> Result<(), Errno> {
        use rustix::stdio;
        stdio::dup2_stdin(input)?;
        stdio::dup2_stdout(output)?;
        stdio::dup2_stderr(output)?;
        // dup2 onto itself keeps close-on-exec: clear it either way.
        for fd in [stdio::stdin(), stdio::stdout(), stdio::stderr()] {
            rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
        }
        rustix::process::setpgid(None, None)?;
        sys::reset_signals()?;
        if let Some(dir) = cwd {
            sys::chdir(dir)?;
        }
        // Only stdio reaches the hook (the report pipe closes on exec).
        sys::cloexec_from(3)
    };
    let (stage, errno) = match setup() {
        Err(e) => (1, e),
        Ok(()) => (
            0,
            sys::execve(&hook.path, &hook.args.pointers, &hook.env.pointers),
        ),
    };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&i32::to_ne_bytes(stage));
    msg[4..].copy_from_slice(&errno.0.to_ne_bytes());
    let _ = sys::write(report.as_raw_fd(), &msg);
    sys::exit_now(127)
}

/// Reads up to 4 KiB of a hook's output, for its error.
fn read_output(fd: &OwnedFd) -> String {
    const LIMIT: usize = 4096;
    let mut buf = vec![0u8; LIMIT + 1];
    let mut len = 0;
    if rustix::fs::seek(fd, SeekFrom::Start(0)).is_ok() {
        while len < buf.len() {
            match sys::read_fd(fd.as_fd(), &mut buf[len..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    }
    let mut text = String::from_utf8_lossy(&buf[..len.min(LIMIT)])
        .trim()
        .to_string();
    if len > LIMIT {
        text.push_str(" ...");
    }
    text
}

/// Copies a hook's output to our stderr, without allocating (the init's
/// report of a failed hook: the parent only gets the failure's number).
fn copy_output_to_stderr(fd: BorrowedFd<'_>) {
    if rustix::fs::seek(fd, SeekFrom::Start(0)).is_err() {
        return;
    }
    let mut buf = [0u8; 512];
    for _ in 0..128 {
        match sys::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if write_all(rustix::stdio::stderr(), &buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// A container's hooks, checked and prepared: the lists in lifecycle order,
/// the state template and the bundle directory (where the runtime's hooks
/// run).
#[derive(Debug)]
pub struct Hooks {
    lists: [Vec<Prepared>; 6],
    state: StateTemplate,
    bundle: CString,
}

impl Hooks {
    /// Checks and prepares the `hooks` object of `config.json` (none: no
    /// hooks) for container `id`. A hook without `env` gets the calling
    /// process's environment.
    pub fn new(
        spec: Option<&Value>,
        id: &str,
        bundle: &Path,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Hooks, ConfigError> {
        let mut inherited = None;
        let mut lists: [Vec<Prepared>; 6] = Default::default();
        let spec = match spec {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => return Err(config_error("hooks".into(), "expected an object")),
        };
        for (list, kind) in lists.iter_mut().zip(Kind::ALL) {
            let entries = match spec.and_then(|o| o.get(kind.name())) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(entries)) => entries,
                Some(_) => return Err(config_error(format!("hooks.{kind}"), "expected an array")),
            };
            for (i, hook) in entries.iter().enumerate() {
                list.push(Prepared::new(kind, i, hook, &mut inherited)?);
            }
        }
        Ok(Hooks {
            lists,
            state: StateTemplate::new(id, bundle, annotations),
            bundle: CString::new(bundle.as_os_str().as_bytes()).unwrap_or_default(),
        })
    }

    /// The hooks of one kind.
    pub fn get(&self, kind: Kind) -> &[Prepared] {
        &self.lists[kind as usize]
    }

    /// The state template.
    pub fn state(&self) -> &StateTemplate {
        &self.state
    }

    /// Whether the init must stop for `prestart`/`createRuntime` hooks
    /// before `pivot_root` (sync step 3a in [`super::child`]).
    pub fn runtime_hooks_before_pivot(&self) -> bool {
        !self.get(Kind::Prestart).is_empty() || !self.get(Kind::CreateRuntime).is_empty()
    }

    /// The longest the hooks of `kind` can take together, in milliseconds:
    /// the sum of their timeouts, `None` when one has none.
    pub fn time_limit_ms(&self, kind: Kind) -> Option<u64> {
        self.get(kind)
            .iter()
            .map(|h| h.timeout.map(|s| u64::from(s) * 1000))
            .sum()
    }

    /// In `create`, while the init waits before `pivot_root`: `prestart`
    /// then `createRuntime`, in the bundle, with the init's `pid`. The first
    /// failure ends it.
    pub fn run_create_runtime(&self, pid: i32) -> Result<(), HookError> {
        for kind in [Kind::Prestart, Kind::CreateRuntime] {
            self.run_all(kind, CREATING, u32::try_from(pid).ok(), &mut Err)?;
        }
        Ok(())
    }

    /// Runs every hook of `kind` in the bundle; `on_failure` decides whether
    /// a failure ends the list (`Err`) or is only reported (`Ok`).
    pub fn run_all(
        &self,
        kind: Kind,
        status: &str,
        pid: Option<u32>,
        on_failure: &mut dyn FnMut(HookError) -> Result<(), HookError>,
    ) -> Result<(), HookError> {
        for (i, hook) in self.get(kind).iter().enumerate() {
            let output = memfd(c"oci-hook-output");
            let result = match &output {
                Ok(out) => run(
                    hook,
                    &self.state,
                    status,
                    pid,
                    Some(&self.bundle),
                    out.as_fd(),
                ),
                Err(e) => Err(Failure::Setup(*e)),
            };
            if let Err(failure) = result {
                let text = output.as_ref().map(read_output).unwrap_or_default();
                on_failure(hook.error(kind, i, failure, text))?;
            }
        }
        Ok(())
    }

    /// In the init: the hooks of `kind` (`createContainer`,
    /// `startContainer`) with the init's own pid, in `cwd` or the init's
    /// directory. Allocates nothing; a failed hook's output is copied to
    /// stderr and `(index, failure)` returned.
    pub fn run_in_init(
        &self,
        kind: Kind,
        status: &str,
        cwd: Option<&CStr>,
    ) -> Result<(), (usize, Failure)> {
        let list = self.get(kind);
        if list.is_empty() {
            return Ok(());
        }
        let pid = rustix::process::getpid().as_raw_pid();
        for (i, hook) in list.iter().enumerate() {
            let output = memfd(c"oci-hook-output").map_err(|e| (i, Failure::Setup(e)))?;
            let result = run(
                hook,
                &self.state,
                status,
                pid.try_into().ok(),
                cwd,
                output.as_fd(),
            );
            if let Err(failure) = result {
                copy_output_to_stderr(output.as_fd());
                return Err((i, failure));
            }
        }
        Ok(())
    }

    /// The error for a failure the init reported for hook `index` of
    /// `kind`.
    pub fn init_error(&self, kind: Kind, index: usize, failure: Failure) -> HookError {
        match self.get(kind).get(index) {
            Some(hook) => hook.error(kind, index, failure, String::new()),
            None => HookError {
                kind,
                index,
                path: "?".into(),
                failure,
                timeout: None,
                output: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use serde_json::json;

    fn hook(path: &str, args: &[&str]) -> Value {
        json!({"path": path, "args": args, "env": ["PATH=/usr/bin:/bin", "K=v"]})
    }

    fn hooks(kind: Kind, list: Vec<Value>) -> Hooks {
        let spec = json!({ kind.name(): list });
        let annotations = BTreeMap::from([("a".to_string(), "b\"c".to_string())]);
        Hooks::new(Some(&spec), "c1", Path::new("/tmp"), &annotations).unwrap()
    }

    fn run_one(h: Value) -> Result<(), HookError> {
        hooks(Kind::Poststop, vec![h]).run_all(Kind::Poststop, RUNNING, Some(42), &mut Err)
    }

    #[test]
    fn state_json_is_the_specs() {
        let annotations = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let t = StateTemplate::new("c\"1", Path::new("/b"), &annotations);
        let v: serde_json::Value = serde_json::from_slice(&t.render(CREATING, Some(17))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": OCI_VERSION, "id": "c\"1", "status": "creating",
                               "pid": 17, "bundle": "/b", "annotations": {"k": "v"}})
        );
        let t = StateTemplate::new("c", Path::new("/b"), &BTreeMap::new());
        assert_eq!(
            String::from_utf8(t.render(STOPPED, None)).unwrap(),
            format!(
                r#"{{"ociVersion":"{OCI_VERSION}","id":"c","status":"stopped","bundle":"/b"}}"#
            )
        );
        let mut buf = [0u8; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
    }

    #[test]
    fn checks_the_config() {
        let bad = |h: Value| {
            let spec = json!({"poststop": [hook("/bin/true", &[]), h]});
            Hooks::new(Some(&spec), "c", Path::new("/"), &BTreeMap::new())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(hook("true", &[])),
            "hooks.poststop[1].path: not an absolute path"
        );
        let timeout = |t: i64| json!({"path": "/bin/true", "timeout": t});
        assert!(bad(timeout(0)).starts_with("hooks.poststop[1].timeout: must be a positive"));
        assert!(bad(timeout(-1)).contains("timeout"));
        assert!(bad(hook("/bin/true", &["a\0b"])).contains("args: contains a NUL"));
        // Types, with the field's path (the spec keeps `hooks` as JSON).
        assert_eq!(
            bad(json!({"path": 7})),
            "hooks.poststop[1].path: expected a string"
        );
        assert_eq!(bad(json!({})), "hooks.poststop[1].path: missing");
        assert_eq!(
            bad(json!("/bin/true")),
            "hooks.poststop[1]: expected an object"
        );
        let args = bad(json!({"path": "/bin/true", "args": [1]}));
        assert_eq!(args, "hooks.poststop[1].args: expected an array of strings");
        let t = bad(json!({"path": "/bin/true", "timeout": "1"}));
        assert_eq!(t, "hooks.poststop[1].timeout: expected an integer");
        let whole = |spec: Value| {
            let h = Hooks::new(Some(&spec), "c", Path::new("/"), &BTreeMap::new());
            h.map(|h| h.get(Kind::Prestart).len())
                .map_err(|e| e.to_string())
        };
        assert_eq!(whole(json!([])), Err("hooks: expected an object".into()));
        let list = whole(json!({"prestart": {}}));
        assert_eq!(list, Err("hooks.prestart: expected an array".into()));
        // null is absent, unknown kinds are ignored, as in runc.
        assert_eq!(whole(json!({"prestart": null, "other": 1})), Ok(0));
        let nulls = json!({"prestart": [{"path": "/bin/true", "args": null, "env": null}]});
        assert_eq!(whole(nulls), Ok(1));
    }

    #[test]
    fn wire_encoding_round_trips() {
        for f in [
            Failure::Setup(Errno(libc::EMFILE)),
            Failure::Exec(Errno(libc::ENOENT)),
            Failure::Exited(1),
            Failure::Exited(255),
            Failure::Signaled(9),
            Failure::TimedOut,
        ] {
            assert_eq!(Failure::from_wire(f.to_wire()), f);
        }
    }

    #[test]
    fn the_hook_gets_state_args_env_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "{{ echo \"$0 $1\"; echo \"K=$K\"; pwd; cat; }} > {}",
            out.display()
        );
        run_one(hook("/bin/sh", &["sh", "-c", &script, "x"])).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..3], ["x ", "K=v", "/tmp"]);
        let state: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(state["status"], "running");
        assert_eq!(state["pid"], 42);
        assert_eq!(state["annotations"]["a"], "b\"c");
    }

    #[test]
    fn failures_are_told_apart() {
        let e = run_one(hook("/bin/sh", &["sh", "-c", "echo oops >&2; exit 3"])).unwrap_err();
        assert_eq!(e.failure, Failure::Exited(3));
        assert_eq!(e.output, "oops");
        assert_eq!(
            e.to_string(),
            "poststop hook #0 (/bin/sh) exited with status 3; output: oops"
        );
        let e = run_one(hook("/bin/sh", &["sh", "-c", "exit 127"])).unwrap_err();
        assert_eq!(e.failure, Failure::Exited(127));
        let e = run_one(hook("/no/such/hook", &[])).unwrap_err();
        assert_eq!(e.failure, Failure::Exec(Errno(libc::ENOENT)));
        assert!(e.to_string().contains("could not be executed"), "{e}");
        let e = run_one(hook("/bin/sh", &["sh", "-c", "kill -9 $$"])).unwrap_err();
        assert_eq!(e.failure, Failure::Signaled(9));
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let mut h = hook("/bin/sh", &["sh", "-c", &script]);
        h["timeout"] = json!(1);
        let started = Instant::now();
        let e = run_one(h).unwrap_err();
        assert_eq!(e.failure, Failure::TimedOut);
        assert!(e.to_string().contains("timeout of 1s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The background sleep was in the hook's process group.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::runtime::state::proc_stat(pid).is_some_and(|(s, _)| s != 'Z') {
            assert!(Instant::now() < deadline, "sleep {pid} survived");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn lists_stop_at_the_first_failure_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("second-ran");
        let touch = format!("touch {}", mark.display());
        let list = vec![
            hook("/bin/false", &[]),
            hook("/bin/sh", &["sh", "-c", &touch]),
        ];
        let h = hooks(Kind::Poststop, list);
        assert!(h.run_all(Kind::Poststop, STOPPED, None, &mut Err).is_err());
        assert!(!mark.exists());
        let mut seen = Vec::new();
        h.run_all(Kind::Poststop, STOPPED, None, &mut |e| {
            seen.push(e.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["poststop hook #0 (/bin/false) exited with status 1"]);
        assert!(mark.exists());
    }
}
