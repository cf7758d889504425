//! `start`: release the init blocked on `exec.fifo`; then the `poststart`
//! hooks.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::runtime::{state_err, Runtime, RuntimeError};
use crate::runtime::child::{Message, Step, MSG_ERROR};
use crate::runtime::hooks::{self, Failure, Kind};
use crate::runtime::state::{self, Record, Status};
use crate::runtime::sys::{self, Errno};

/// How long `start` waits for the init to take the fifo's byte.
const START_TIMEOUT_MS: i32 = 10_000;

impl Runtime {
    /// Starts a created container: its init runs the `startContainer`
    /// hooks and `execve`, then the `poststart` hooks run here.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (dir, record, status) = self.load(id)?;
        if status != Status::Created {
            return Err(RuntimeError::Status {
                id: id.to_string(),
                status,
                action: "start",
            });
        }
        self.release(&dir, &record)?;
        self.poststart(&record);
        Ok(())
    }

    /// The `poststart` hooks of a container whose process runs.
    pub(super) fn poststart(&self, record: &Record) {
        let pid = u32::try_from(record.pid).ok();
        self.run_hooks_logged(record, Kind::Poststart, hooks::RUNNING, pid);
    }

    /// Opens `exec.fifo` for reading, which lets the init's blocked open for
    /// writing complete; the init writes one byte, runs the `startContainer`
    /// hooks and goes on to `execve`, which closes its end of the fifo. A
    /// failed hook's report arrives there instead; the container is then
    /// stopped.
    pub(super) fn release(&self, dir: &Path, record: &Record) -> Result<(), RuntimeError> {
        let Some(msg) = release_fifo(dir, record)? else {
            return Ok(());
        };
        let failure = Failure::from_wire(msg.errno);
        let index = msg.index as usize;
        if let Ok(pidfd) = sys::pidfd_open(record.pid) {
            if state::alive(record) {
                let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            }
        }
        Err(match self.hooks(record) {
            Some(h) => h.init_error(Kind::StartContainer, index, failure).into(),
            None => RuntimeError::DiedBeforeStart(record.id.clone()),
        })
    }
}

/// The fifo side of [`Runtime::release`]: `Some` when the init reported a
/// failed `startContainer` hook.
fn release_fifo(dir: &Path, record: &Record) -> Result<Option<Message>, RuntimeError> {
    let id = &record.id;
    let fifo_path = dir.join(state::FIFO);
    let process_err = |what: &'static str| {
        move |source: Errno| RuntimeError::Process {
            what,
            id: id.clone(),
            source,
        }
    };
    // Pin the process first, then check it is still ours.
    let pidfd = sys::pidfd_open(record.pid).map_err(process_err("cannot open pidfd of"))?;
    if !state::alive(record) {
        return Err(RuntimeError::DiedBeforeStart(id.clone()));
    }
    // Non-blocking: a dead init must not hang us.
    let mut fifo = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .map_err(state_err(&fifo_path))?;
    let [fifo_ready, died] = sys::poll_readable([fifo.as_fd(), pidfd.as_fd()], START_TIMEOUT_MS)
        .map_err(process_err("cannot wait for"))?;
    let mut byte = [0u8; 1];
    let got = if fifo_ready {
        match fifo.read(&mut byte) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(state_err(&fifo_path)(e)),
        }
    } else {
        0
    };
    if got != 1 {
        if died {
            return Err(RuntimeError::DiedBeforeStart(id.clone()));
        }
        return Err(RuntimeError::Process {
            what: "timed out starting",
            id: id.clone(),
            source: Errno(libc::ETIMEDOUT),
        });
    }
    fs::remove_file(&fifo_path).map_err(state_err(&fifo_path))?;
    wait_for_exec(&mut fifo).map_err(state_err(&fifo_path))
}

/// Reads the fifo until EOF: the init's `execve` closed it (or the init
/// died). A failed `startContainer` hook sends its [`Message`] first.
fn wait_for_exec(fifo: &mut File) -> io::Result<Option<Message>> {
    let mut buf = [0u8; Message::SIZE];
    loop {
        sys::poll_readable([fifo.as_fd()], -1)?;
        match fifo.read(&mut buf) {
            Ok(Message::SIZE) => {
                let msg = Message::from_bytes(&buf);
                let hook = msg.kind == MSG_ERROR && msg.step == Step::StartContainerHook as u32;
                return Ok(hook.then_some(msg));
            }
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
