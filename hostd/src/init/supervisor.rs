//! Keeping a service alive: start it, wait until it answers, restart it with
//! exponential backoff when it exits.
//!
//! [`Service`] is a pure state machine driven by three inputs: the time
//! ([`Service::tick`]), the exit of a child ([`Service::child_exited`]) and the
//! answers of a [`Runtime`], which performs the side effects (spawn, readiness
//! probe, kill) and receives [`Event`]s to report. `init` plugs in the real
//! runtime; the tests plug in a scripted one, so restart and timeout behaviour is
//! checked without processes or clocks. Today `init` supervises one service
//! (hostd); more services become more `Service` values in the same loop.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Exponential backoff: `initial`, doubling on every call, capped at `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff that starts at `initial` and never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay to wait now; the following call returns twice as much.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the initial delay (after a run that was stable).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// What to run and how to tell that it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Short name for messages, e.g. `hostd`.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The control socket whose answer means "ready".
    pub socket: PathBuf,
    /// How often to probe while starting.
    pub probe_interval: Duration,
    /// How long a start may take before the process is killed and restarted.
    pub ready_timeout: Duration,
    /// A run at least this long resets the backoff.
    pub stable_after: Duration,
    /// First restart delay.
    pub backoff_initial: Duration,
    /// Largest restart delay.
    pub backoff_max: Duration,
}

impl ServiceSpec {
    /// hostd's spec with the standard timings: probe every 20 ms, give up on a
    /// start after 30 s, restart after 100 ms doubling to 5 s, reset after 10 s up.
    pub fn hostd(program: PathBuf, args: Vec<String>, socket: PathBuf) -> Self {
        Self {
            name: "hostd".to_string(),
            program,
            args,
            socket,
            probe_interval: Duration::from_millis(20),
            ready_timeout: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Something worth reporting on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The process was started.
    Started {
        /// Service name.
        name: String,
        /// Its pid.
        pid: i32,
    },
    /// The process could not be started.
    SpawnFailed {
        /// Service name.
        name: String,
        /// The program path.
        program: PathBuf,
        /// Why.
        error: String,
        /// When the next attempt happens.
        retry_in: Duration,
    },
    /// The service answered its first probe after a start.
    Ready {
        /// Service name.
        name: String,
        /// Its pid.
        pid: i32,
        /// True only the first time this service ever became ready.
        first: bool,
    },
    /// The service did not answer in time and was killed.
    ReadyTimeout {
        /// Service name.
        name: String,
        /// Its pid.
        pid: i32,
        /// How long it had.
        waited: Duration,
    },
    /// The process ended and will be restarted.
    Exited {
        /// Service name.
        name: String,
        /// Its pid.
        pid: i32,
        /// How it ended.
        status: ExitStatus,
        /// When it is restarted.
        restart_in: Duration,
    },
}

/// The side effects a [`Service`] needs.
pub trait Runtime {
    /// Starts the program; returns its pid.
    fn spawn(&mut self, spec: &ServiceSpec) -> io::Result<i32>;
    /// Whether the service answers on its socket now.
    fn probe(&mut self, spec: &ServiceSpec) -> bool;
    /// Kills process `pid` (its exit arrives later through `child_exited`).
    fn kill(&mut self, pid: i32);
    /// Reports an event.
    fn event(&mut self, event: Event);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not running; start at `restart_at`.
    Down { restart_at: Instant },
    /// Running, not yet answering.
    Starting {
        pid: i32,
        started: Instant,
        next_probe: Instant,
    },
    /// Running and answered once.
    Up { pid: i32, started: Instant },
    /// Killed for not answering; waiting for its exit.
    Stopping { pid: i32 },
}

/// One supervised service.
#[derive(Debug)]
pub struct Service {
    spec: ServiceSpec,
    state: State,
    backoff: Backoff,
    ever_ready: bool,
}

impl Service {
    /// A service that is started at the first [`Service::tick`] at or after `now`.
    pub fn new(spec: ServiceSpec, now: Instant) -> Self {
        let backoff = Backoff::new(spec.backoff_initial, spec.backoff_max);
        Self {
            spec,
            state: State::Down { restart_at: now },
            backoff,
            ever_ready: false,
        }
    }

    /// The spec.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    /// The running process, if any.
    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Down { .. } => None,
            State::Starting { pid, .. } | State::Up { pid, .. } | State::Stopping { pid } => {
                Some(pid)
            }
        }
    }

    /// Whether the service has answered since its last start.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    /// When [`Service::tick`] next has something to do (`None`: only a child's
    /// exit can change anything).
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Down { restart_at } => Some(restart_at),
            State::Starting { next_probe, .. } => Some(next_probe),
            State::Up { .. } | State::Stopping { .. } => None,
        }
    }

    /// Does what is due at `now`: start, probe, or give up on a slow start.
    pub fn tick(&mut self, now: Instant, rt: &mut dyn Runtime) {
        match self.state {
            State::Down { restart_at } if now >= restart_at => match rt.spawn(&self.spec) {
                Ok(pid) => {
                    self.state = State::Starting {
                        pid,
                        started: now,
                        next_probe: now,
                    };
                    rt.event(Event::Started {
                        name: self.spec.name.clone(),
                        pid,
                    });
                    // Probe right away: a fast service is ready by the next tick.
                }
                Err(error) => {
                    let retry_in = self.backoff.next_delay();
                    self.state = State::Down {
                        restart_at: now + retry_in,
                    };
                    rt.event(Event::SpawnFailed {
                        name: self.spec.name.clone(),
                        program: self.spec.program.clone(),
                        error: error.to_string(),
                        retry_in,
                    });
                }
            },
            State::Starting {
                pid,
                started,
                next_probe,
            } if now >= next_probe => {
                if rt.probe(&self.spec) {
                    self.state = State::Up { pid, started };
                    let first = !self.ever_ready;
                    self.ever_ready = true;
                    rt.event(Event::Ready {
                        name: self.spec.name.clone(),
                        pid,
                        first,
                    });
                } else if now.duration_since(started) >= self.spec.ready_timeout {
                    self.state = State::Stopping { pid };
                    rt.event(Event::ReadyTimeout {
                        name: self.spec.name.clone(),
                        pid,
                        waited: self.spec.ready_timeout,
                    });
                    rt.kill(pid);
                } else {
                    self.state = State::Starting {
                        pid,
                        started,
                        next_probe: now + self.spec.probe_interval,
                    };
                }
            }
            _ => {}
        }
    }

    /// Handles the exit of child `pid` (raw wait `status`). Returns whether it
    /// was this service's process; if so a restart is scheduled.
    pub fn child_exited(
        &mut self,
        pid: i32,
        status: i32,
        now: Instant,
        rt: &mut dyn Runtime,
    ) -> bool {
        if self.pid() != Some(pid) {
            return false;
        }
        let stable = match self.state {
            State::Starting { started, .. } | State::Up { started, .. } => {
                now.duration_since(started) >= self.spec.stable_after
            }
            State::Down { .. } | State::Stopping { .. } => false,
        };
        if stable {
            self.backoff.reset();
        }
        let restart_in = self.backoff.next_delay();
        self.state = State::Down {
            restart_at: now + restart_in,
        };
        rt.event(Event::Exited {
            name: self.spec.name.clone(),
            pid,
            status: ExitStatus::from_raw(status),
            restart_in,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        next_pid: i32,
        spawn_fails: bool,
        answers: bool,
        killed: Vec<i32>,
        events: Vec<Event>,
    }

    impl Runtime for Fake {
        fn spawn(&mut self, _spec: &ServiceSpec) -> io::Result<i32> {
            if self.spawn_fails {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            self.next_pid += 1;
            Ok(self.next_pid)
        }
        fn probe(&mut self, _spec: &ServiceSpec) -> bool {
            self.answers
        }
        fn kill(&mut self, pid: i32) {
            self.killed.push(pid);
        }
        fn event(&mut self, event: Event) {
            self.events.push(event);
        }
    }

    fn spec() -> ServiceSpec {
        ServiceSpec::hostd(
            "/usr/bin/hostd".into(),
            vec![],
            "/run/hostd/hostd.sock".into(),
        )
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::new(100 * MS, Duration::from_secs(5));
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
    }

    #[test]
    fn start_probe_ready_once_then_restart_with_backoff() {
        let t0 = Instant::now();
        let mut rt = Fake::default();
        let mut svc = Service::new(spec(), t0);
        svc.tick(t0, &mut rt);
        assert_eq!(svc.pid(), Some(1));
        assert_eq!(svc.next_deadline(), Some(t0));

        // Not answering yet: probe again after the interval.
        svc.tick(t0, &mut rt);
        assert_eq!(svc.next_deadline(), Some(t0 + 20 * MS));
        rt.answers = true;
        svc.tick(t0 + 20 * MS, &mut rt);
        assert!(svc.is_up());
        assert_eq!(svc.next_deadline(), None);

        // Crash: restart after 100 ms, then 200 ms.
        assert!(!svc.child_exited(99, 0, t0 + 30 * MS, &mut rt));
        assert!(svc.child_exited(1, 1 << 8, t0 + 30 * MS, &mut rt));
        assert_eq!(svc.next_deadline(), Some(t0 + 130 * MS));
        svc.tick(t0 + 129 * MS, &mut rt);
        assert_eq!(svc.pid(), None);
        svc.tick(t0 + 130 * MS, &mut rt);
        assert_eq!(svc.pid(), Some(2));
        svc.tick(t0 + 130 * MS, &mut rt);
        assert!(svc.child_exited(2, libc::SIGKILL, t0 + 140 * MS, &mut rt));
        assert_eq!(svc.next_deadline(), Some(t0 + 340 * MS));

        let ready: Vec<bool> = rt
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Ready { first, .. } => Some(*first),
                _ => None,
            })
            .collect();
        assert_eq!(ready, [true, false]);
        let exits: Vec<String> = rt
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Exited { status, .. } => Some(status.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(exits, ["exit status: 1", "signal: 9 (SIGKILL)"]);
    }

    #[test]
    fn stable_run_resets_backoff() {
        let t0 = Instant::now();
        let mut rt = Fake {
            answers: true,
            ..Fake::default()
        };
        let mut svc = Service::new(spec(), t0);
        svc.tick(t0, &mut rt);
        svc.child_exited(1, 0, t0, &mut rt); // 100 ms
        svc.tick(t0 + 100 * MS, &mut rt);
        svc.child_exited(2, 0, t0 + 100 * MS, &mut rt); // 200 ms
        svc.tick(t0 + 300 * MS, &mut rt);
        let later = t0 + 300 * MS + Duration::from_secs(11);
        svc.child_exited(3, 0, later, &mut rt);
        assert_eq!(svc.next_deadline(), Some(later + 100 * MS));
    }

    #[test]
    fn slow_start_is_killed_and_restarted() {
        let t0 = Instant::now();
        let mut rt = Fake::default();
        let mut svc = Service::new(spec(), t0);
        svc.tick(t0, &mut rt);
        svc.tick(t0 + Duration::from_secs(30), &mut rt);
        assert_eq!(rt.killed, [1]);
        assert_eq!(svc.next_deadline(), None);
        svc.tick(t0 + Duration::from_secs(31), &mut rt);
        assert_eq!(rt.killed, [1], "killed only once");
        assert!(svc.child_exited(1, libc::SIGKILL, t0 + Duration::from_secs(31), &mut rt));
        assert!(matches!(rt.events.last(), Some(Event::Exited { .. })));
    }

    #[test]
    fn spawn_failure_retries_with_backoff() {
        let t0 = Instant::now();
        let mut rt = Fake {
            spawn_fails: true,
            ..Fake::default()
        };
        let mut svc = Service::new(spec(), t0);
        svc.tick(t0, &mut rt);
        assert_eq!(svc.next_deadline(), Some(t0 + 100 * MS));
        svc.tick(t0 + 100 * MS, &mut rt);
        assert_eq!(svc.next_deadline(), Some(t0 + 300 * MS));
        assert!(matches!(
            &rt.events[0],
            Event::SpawnFailed { retry_in, .. } if *retry_in == 100 * MS
        ));
    }
}
