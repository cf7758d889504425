//! The hostd daemon: binds the control socket, answers requests, and exits
//! cleanly (removing the socket) on SIGTERM or SIGINT.
//!
//! Signals are handled synchronously: the main thread blocks SIGTERM/SIGINT
//! before any other thread exists (so every thread inherits the mask), and one
//! dedicated thread `sigwait`s for them and triggers the server's [`Shutdown`].
//! No code runs in signal-handler context.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::control::{self, ControlError, ControlSocket, Request, Response, Shutdown, Status};
use crate::sys::SignalSet;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The termination signals could not be blocked.
    #[error("cannot block termination signals: {0}")]
    Signals(#[source] std::io::Error),
    /// The signal-waiting thread could not be started.
    #[error("cannot start the signal thread: {0}")]
    SignalThread(#[source] std::io::Error),
    /// The control socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// How to run the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonOptions {
    /// Where to put the control socket.
    pub socket: PathBuf,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(control::SOCKET_PATH),
        }
    }
}

/// Writes `hostd: <message>` to stderr, ignoring errors (the console may be gone).
pub fn log(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "hostd: {message}");
}

/// Answers one control request for a daemon that started at `started`.
pub fn handle(request: &Request, started: Instant) -> Response {
    match request {
        Request::Status => Response::Status(Status {
            version: crate::VERSION.to_string(),
            pid: std::process::id(),
            uptime_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            containers: 0,
        }),
    }
}

/// Runs the daemon until SIGTERM or SIGINT; returns after removing the socket.
pub fn run(options: &DaemonOptions) -> Result<(), DaemonError> {
    let started = Instant::now();
    let signals = SignalSet::new(&[libc::SIGTERM, libc::SIGINT]).map_err(DaemonError::Signals)?;
    signals.block().map_err(DaemonError::Signals)?;

    let socket = ControlSocket::bind(&options.socket)?;
    let shutdown = Shutdown::new()?;
    let stop = shutdown.clone();
    std::thread::Builder::new()
        .name("hostd-signals".into())
        .spawn(move || match signals.wait() {
            Ok(signal) => {
                let name = if signal == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                log(&format!("received {name}, shutting down"));
                stop.trigger();
            }
            Err(e) => log(&format!("cannot wait for signals: {e}")),
        })
        .map_err(DaemonError::SignalThread)?;

    log(&format!(
        "listening on {} (pid {}, version {})",
        socket.path().display(),
        std::process::id(),
        crate::VERSION
    ));
    let served = socket.serve(move |request| handle(request, started), &shutdown);
    let removed = socket.remove();
    served?;
    removed?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reports_this_process() {
        let started = Instant::now();
        match handle(&Request::Status, started) {
            Response::Status(s) => {
                assert_eq!(s.pid, std::process::id());
                assert_eq!(s.version, crate::VERSION);
                assert_eq!(s.containers, 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
