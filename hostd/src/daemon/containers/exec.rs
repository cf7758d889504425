//! Interactive use of containers: their input (`docker run -i`, `docker
//! attach` with stdin), terminal sizes, and exec instances (`docker exec`):
//! processes started in a running container, kept in memory (as dockerd
//! does) until their container is removed.
//!
//! An exec instance is created (its command and options checked against the
//! container), then started once: the zygote starts the process with the
//! container's namespaces, root, cgroup and security settings, and hands
//! back its pidfd, its output and (with `-i` or `-t`) its input. Whoever
//! started it waits for the pidfd and calls [`Manager::exec_exited`], which
//! reaps the process and keeps its exit code for `docker exec inspect`.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::config::{resolve_user, ConfigError};
use super::execs::{ExecConfig, ExecView};
use super::{lock, Manager, RunError, STATUS_CREATED};
use crate::backend::{ExecSpec, StartError, Started};
use mkhost_shared::container::ExecError;

/// A started exec's descriptors.
pub struct ExecIo {
    /// Its pidfd: readable once it exited.
    pub pidfd: OwnedFd,
    /// Its output (with a terminal: the terminal).
    pub stdout: OwnedFd,
    /// Its error output (empty with a terminal).
    pub stderr: OwnedFd,
    /// Its input, when asked for (with a terminal: the terminal).
    pub stdin: Option<OwnedFd>,
}

/// A container's input as an attaching client gets it.
pub struct ContainerInput {
    /// Where to write the client's bytes; `None`: the container was made
    /// without `-i`, or its input was closed.
    pub input: Option<Arc<OwnedFd>>,
    /// The container has a terminal.
    pub tty: bool,
}

impl Manager {
    /// Checks `config` against running container `name` and records a new
    /// exec instance; answers its id.
    pub fn exec_create(&self, name: &str, config: ExecConfig) -> Result<String, RunError> {
        let entry = self.find(name)?;
        let record = entry.record();
        if record.status != "running" || record.paused {
            let state = if record.paused {
                "paused"
            } else {
                "not running"
            };
            return Err(format!("container {} is {state}", record.id).into());
        }
        if config.cmd.is_empty() {
            return Err(RunError::from("no exec command specified".to_string()));
        }
        let mut bytes = [0u8; 32];
        crate::os::random_bytes_insecure(&mut bytes).map_err(|e| format!("no random id: {e}"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.shared.execs.prune(&record.id);
        let action = format!("exec_create: {}", config.cmd.join(" "));
        lock(&self.shared.execs.by_id).insert(
            id.clone(),
            ExecView {
                id: id.clone(),
                container: record.id.clone(),
                config,
                running: false,
                exit_code: None,
                pid: 0,
            },
        );
        self.shared
            .event(&record, &action, &[("execID", id.clone())]);
        Ok(id)
    }

    /// What `docker exec inspect` shows.
    pub fn exec_inspect(&self, id: &str) -> Result<ExecView, String> {
        lock(&self.shared.execs.by_id)
            .get(id)
            .cloned()
            .ok_or_else(|| format!("No such exec instance: {id}"))
    }

    /// Starts exec instance `id` (once), its terminal `console_size` if
    /// given (else the size it was created with).
    pub fn exec_start(
        &self,
        id: &str,
        console_size: Option<(u16, u16)>,
    ) -> Result<ExecIo, RunError> {
        let view = {
            let mut execs = lock(&self.shared.execs.by_id);
            let view = execs
                .get_mut(id)
                .ok_or_else(|| format!("No such exec instance: {id}"))?;
            if view.running || view.exit_code.is_some() || view.pid != 0 {
                return Err(format!("exec instance {id} has already been started").into());
            }
            // Taken: a second start fails even while this one is under way.
            view.pid = -1;
            if console_size.is_some() {
                view.config.console_size = console_size;
            }
            view.clone()
        };
        let result = self.spawn_exec(&view);
        let mut execs = lock(&self.shared.execs.by_id);
        if let Some(stored) = execs.get_mut(id) {
            match &result {
                Ok((pid, _)) => {
                    stored.pid = *pid;
                    stored.running = true;
                }
                // dockerd's exit code for any exec that could not start.
                Err(_) => {
                    stored.pid = 0;
                    stored.exit_code = Some(126);
                }
            }
        }
        drop(execs);
        let (_, io) = result?;
        self.exec_event(
            &view,
            &format!("exec_start: {}", view.config.cmd.join(" ")),
            &[],
        );
        if view.config.tty {
            if let Some(terminal) = io.stdin.as_ref().and_then(|t| t.try_clone().ok()) {
                lock(&self.shared.execs.terminals).insert(id.to_string(), Arc::new(terminal));
            }
        }
        Ok(io)
    }

    fn spawn_exec(&self, view: &ExecView) -> Result<(i32, ExecIo), RunError> {
        let entry = self.find(&view.container)?;
        if !entry.status_is("running") {
            return Err(format!("container {} is not running", view.container).into());
        }
        let spec = &entry.spec;
        let pid = entry.record().pid;
        let lookup = |path: &str| self.shared.backend.read_in_container(pid, path);
        let user = match &view.config.user {
            Some(user) if !user.is_empty() => {
                let user = resolve_user(user, &lookup).map_err(|e: ConfigError| e.to_string())?;
                Some((user.uid, user.gid, user.additional_gids))
            }
            _ => None,
        };
        let mut env = spec.env.clone();
        for entry in &view.config.env {
            let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != name);
            env.push(entry.clone());
        }
        let request = ExecSpec {
            container: view.container.clone(),
            id: view.id.clone(),
            bundle: spec.bundle.clone(),
            args: view.config.cmd.clone(),
            env,
            cwd: view.config.workdir.clone().filter(|w| !w.is_empty()),
            user,
            tty: view.config.tty,
            open_stdin: view.config.attach_stdin,
            console_size: view.config.console_size,
        };
        match self.shared.backend.exec(&request) {
            Ok(Started { pid, running }) => {
                let pidfd = Arc::try_unwrap(running.pidfd)
                    .map_err(|_| "the exec's pidfd is shared".to_string())?;
                let stdin = match running.stdin {
                    Some(fd) => Some(
                        Arc::try_unwrap(fd)
                            .map_err(|_| "the exec's input is shared".to_string())?,
                    ),
                    None => None,
                };
                Ok((
                    pid,
                    ExecIo {
                        pidfd,
                        stdout: running.stdout,
                        stderr: running.stderr,
                        stdin,
                    },
                ))
            }
            Err(StartError { message, exec }) => {
                let command = view.config.cmd.first().map_or("", String::as_str);
                Err(RunError {
                    message: runtime_exec_error(&message, exec, command),
                    exec,
                })
            }
        }
    }

    /// Exec instance `id`'s process exited (its pidfd is readable): reaps
    /// it and keeps its exit code.
    pub fn exec_exited(&self, id: &str) {
        lock(&self.shared.execs.terminals).remove(id);
        let code = match self.shared.backend.reap(id) {
            Ok(Some(exit)) => exit.code,
            // Not exited after all, or the backend lost it: take it down.
            _ => {
                let _ = self.shared.backend.delete(id);
                137
            }
        };
        let finished = lock(&self.shared.execs.by_id).get_mut(id).map(|view| {
            view.running = false;
            view.exit_code = Some(code);
            view.clone()
        });
        if let Some(view) = finished {
            self.exec_event(&view, "exec_die", &[("exitCode", code.to_string())]);
        }
    }

    /// Tells `docker events` about exec instance `view` of a container that
    /// is still there (dockerd's `exec_create`, `exec_start`, `exec_die`,
    /// with the `execID`).
    fn exec_event(&self, view: &ExecView, action: &str, extra: &[(&str, String)]) {
        if let Ok(entry) = self.find(&view.container) {
            let mut attributes = vec![("execID", view.id.clone())];
            attributes.extend(extra.iter().cloned());
            self.shared.event(&entry.record(), action, &attributes);
        }
    }

    /// Sets the terminal size of exec instance `id`.
    pub fn exec_resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), String> {
        let view = self.exec_inspect(id)?;
        if !view.config.tty {
            return Err(format!("exec instance {id} has no terminal"));
        }
        let Some(terminal) = lock(&self.shared.execs.terminals).get(id).cloned() else {
            return Err(format!("exec instance {id} is not running"));
        };
        set_size(self.shared.backend.as_ref(), &terminal, rows, cols)
    }

    /// The input of container `name` for an attaching client.
    pub fn input(&self, name: &str) -> Result<ContainerInput, String> {
        let entry = self.find(name)?;
        let input = lock(&entry.state).input.clone();
        Ok(ContainerInput {
            input: input.filter(|_| entry.spec.open_stdin),
            tty: entry.spec.tty,
        })
    }

    /// Closes container `name`'s input (`StdinOnce`: the client that
    /// attached it is gone), so its process reads end-of-file.
    pub fn close_input(&self, name: &str) -> Result<(), String> {
        let entry = self.find(name)?;
        if entry.spec.tty {
            return Ok(());
        }
        let mut state = lock(&entry.state);
        if state.input.take().is_some() {
            self.shared.backend.close_input(&entry.id)?;
        }
        Ok(())
    }

    /// Sets the terminal size of container `name` (`docker resize`).
    pub fn resize(&self, name: &str, rows: u16, cols: u16) -> Result<(), String> {
        let entry = self.find(name)?;
        if !entry.spec.tty {
            return Err(format!("container {name} has no terminal (run it with -t)"));
        }
        let record = entry.record();
        let terminal = lock(&entry.state).input.clone();
        match terminal {
            Some(terminal) => set_size(self.shared.backend.as_ref(), &terminal, rows, cols),
            None if record.status == STATUS_CREATED => Ok(()),
            None => Err(format!("container {name} is not running")),
        }
    }
}

/// A failed start as runc and dockerd word it (people grep for
/// "executable file not found").
fn runtime_exec_error(message: &str, exec: Option<ExecError>, command: &str) -> String {
    let detail = match exec {
        Some(ExecError::NotFound) => {
            format!("exec: {command:?}: executable file not found in $PATH")
        }
        Some(ExecError::NotExecutable) => format!("exec: {command:?}: permission denied"),
        None => message.to_string(),
    };
    format!("OCI runtime exec failed: exec failed: unable to start container process: {detail}: unknown")
}

fn set_size(
    backend: &dyn crate::backend::Backend,
    terminal: &OwnedFd,
    rows: u16,
    cols: u16,
) -> Result<(), String> {
    backend
        .resize_terminal(terminal.as_fd(), rows, cols)
        .map_err(|e| format!("cannot resize the terminal: {e}"))
}
