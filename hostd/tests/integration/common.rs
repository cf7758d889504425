//! Helpers shared by the integration tests.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hostd::daemon::containers::Record;
use mkhost_shared::control::{self, Request, Response, Status};

pub const HOSTD: &str = env!("CARGO_BIN_EXE_hostd");
pub const INIT: &str = env!("CARGO_BIN_EXE_init");

/// `present`, or a skip: a test whose prerequisite (`what`) is missing
/// prints a `SKIPPED` line and returns early, except with `CI` set, where it
/// fails (CI runs as root after ci/install-deps, so a skip would hide a
/// broken setup).
pub use mkhost_registry::testkit::require;

/// Runs a setup tool (umoci, tar...) and fails the test with its stderr.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stdout of a command that must have succeeded (else the test fails
/// with its stderr).
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{out:?}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `hostd COMMAND --socket SOCKET REST...`: a client command against the
/// daemon at `socket` (`args` starts with the command).
pub fn hostd(socket: &Path, args: &[&str]) -> std::process::Output {
    let (command, rest) = args.split_first().expect("a command");
    Command::new(HOSTD)
        .arg(command)
        .arg("--socket")
        .arg(socket)
        .args(rest)
        .output()
        .expect("run hostd")
}

/// A command's stdout and stderr, for assertions and their messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asks the daemon at `socket` for its status until it answers or `timeout` passes.
pub fn wait_for_status(socket: &Path, timeout: Duration) -> Status {
    try_wait_for_status(socket, timeout).expect("the daemon never answered")
}

/// [`wait_for_status`], `None` when the time is up.
pub fn try_wait_for_status(socket: &Path, timeout: Duration) -> Option<Status> {
    let deadline = Instant::now() + timeout;
    loop {
        match control::request(socket, &Request::Status, Duration::from_secs(1)) {
            Ok(Response::Status(status)) => return Some(status),
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(_) if Instant::now() >= deadline => return None,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits until `check` holds, asking every 100 ms; panics naming `what`
/// after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` to exit within `timeout`; kills it and panics otherwise.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child whose stdout and stderr lines arrive on one channel.
pub struct Console {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Console {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `pred`, returning it; panics with everything seen
    /// so far on timeout.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching line within {timeout:?}; console so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Collects what arrives within `period`.
    pub fn drain(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }
}

/// The mounts under `dir` a daemon made (overlay roots, network namespace
/// files).
pub fn overlay_mounts_under(dir: &Path) -> Vec<String> {
    let text = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&text))
        .map(str::to_string)
        .collect()
}

/// The network namespaces of the tests' daemons, by work directory. Each
/// is held open by this process, not bind-mounted: it ends with the test
/// process, and no test leaves a mount (or its directory) behind however
/// it ends, a daemon killed or stopped on purpose included.
static NETNS: Mutex<Vec<(PathBuf, fs::File)>> = Mutex::new(Vec::new());

/// The network namespace every daemon of the test in `work` runs in
/// (`/proc/<this process>/fd/<n>`): made on first use, so the daemons of
/// one test (a restart, an upgrade) share it, and this machine's own
/// network is never touched.
pub fn test_netns(work: &Path) -> PathBuf {
    let mut held = NETNS.lock().unwrap_or_else(|p| p.into_inner());
    let index = match held.iter().position(|(dir, _)| dir == work) {
        Some(index) => index,
        None => {
            held.push((work.to_path_buf(), new_netns()));
            held.len() - 1
        }
    };
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        held[index].1.as_raw_fd()
    ))
}

/// A new network namespace (as `unshare --net` makes it), made by a thread
/// of its own: unshare moves only the calling thread.
fn new_netns() -> fs::File {
    std::thread::spawn(|| {
        hostd::os::unshare(hostd::os::UnshareFlags::NEWNET).unwrap();
        fs::File::open("/proc/thread-self/ns/net").unwrap()
    })
    .join()
    .unwrap()
}

/// A command run inside the test's network namespace.
pub fn in_test_netns(work: &Path, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", test_netns(work).display()))
        .arg("--")
        .arg(program);
    cmd
}

/// A daemon under test, with its output in `<work>/daemon-N.log` (not the
/// test's pipes: the zygote outlives the daemon). On drop it kills the
/// daemon, the zygote and the containers, and unmounts their roots, so a
/// failing test leaves nothing behind.
pub struct Daemon<'a> {
    pub child: std::process::Child,
    work: &'a Path,
    log: std::path::PathBuf,
}

static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl<'a> Daemon<'a> {
    pub fn start(work: &'a Path, binary: &Path, extra: &[&str]) -> Daemon<'a> {
        Daemon::start_wrapped(work, binary, extra, &[])
    }

    /// [`Daemon::start`] through `wrapper` (a command that execs its
    /// arguments, as `prlimit` and `setpriv` do: the daemon keeps the pid).
    pub fn start_wrapped(
        work: &'a Path,
        binary: &Path,
        extra: &[&str],
        wrapper: &[&str],
    ) -> Daemon<'a> {
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = work.join(format!("daemon-{n}.log"));
        let out = fs::File::create(&log).unwrap();
        let netns = test_netns(work);
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg("nsenter");
                c
            }
            None => Command::new("nsenter"),
        };
        let child = command
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(binary)
            .args(["daemon", "--socket"])
            .arg(work.join("run/hostd.sock"))
            .arg("--store")
            .arg(work.join("store"))
            .arg("--state")
            .arg(work.join("state"))
            .arg("--containers")
            .arg(work.join("containers"))
            // The machine's own files never: a test's flags after these win.
            .arg("--volumes")
            .arg(work.join("volumes"))
            .arg("--networks")
            .arg(work.join("networks.json"))
            .arg("--registries")
            .arg(work.join("registries.json"))
            .arg("--docker-socket")
            .arg(work.join("run/docker.sock"))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let daemon = Daemon { child, work, log };
        if try_wait_for_status(&daemon.socket(), Duration::from_secs(20)).is_none() {
            panic!(
                "the daemon never answered within 20 s; its log:\n{}",
                daemon.output()
            );
        }
        daemon
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.work.join("run/hostd.sock")
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::forget(self);
    }

    pub fn terminate(mut self) {
        hostd::os::kill(i32::try_from(self.child.id()).unwrap(), libc::SIGTERM).unwrap();
        assert!(wait_exit(&mut self.child, Duration::from_secs(10)).success());
        std::mem::forget(self);
    }
}

pub fn zygote_pid(work: &Path) -> Option<i32> {
    fs::read_to_string(work.join("state/zygote.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup(self.work);
    }
}

/// Kills what a test left: the zygote, the containers it recorded, and any
/// process still running this test's daemon command line (a container init
/// cut off half-way through its creation), then unmounts the roots.
fn cleanup(work: &Path) {
    let mut pids: Vec<i32> = zygote_pid(work).into_iter().collect();
    if let Ok(dirs) = fs::read_dir(work.join("containers")) {
        for dir in dirs.flatten() {
            if let Ok(bytes) = fs::read(dir.path().join("state.json")) {
                if let Ok(r) = serde_json::from_slice::<Record>(&bytes) {
                    pids.push(r.pid);
                }
            }
        }
    }
    let needle = work.to_string_lossy().into_owned();
    for proc_dir in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(proc_dir.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            pids.push(pid);
        }
    }
    let me = i32::try_from(std::process::id()).unwrap();
    for pid in pids.into_iter().filter(|p| *p > 1 && *p != me) {
        let _ = hostd::os::kill(pid, libc::SIGKILL);
    }
    for line in overlay_mounts_under(work) {
        if let Some(target) = line.split(' ').nth(4) {
            let _ = hostd::os::unmount(Path::new(target), hostd::os::UnmountFlags::DETACH);
        }
    }
}

/// Debian's docker CLI (not `/usr/local/bin/docker`, another one).
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";

/// A private dockerd (and the containerd it starts) under `dir`, with
/// docker.service's resource limits as far as this machine allows. On
/// drop it stops them (SIGTERM, then SIGKILL to every process whose
/// command line names `dir`: containerd, shims) and unmounts what they
/// left under `dir`, so a failing test leaves nothing behind.
pub struct Dockerd {
    child: Child,
    dir: PathBuf,
}

impl Dockerd {
    pub fn start(dir: &Path) -> Dockerd {
        fs::create_dir_all(dir.join("cli")).unwrap();
        // An empty configuration: not the host's /etc/docker/daemon.json.
        fs::write(dir.join("daemon.json"), "{}\n").unwrap();
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("prlimit")
            .args(service_limits())
            .arg("--")
            .arg(DOCKERD)
            .arg("--data-root")
            .arg(dir.join("data"))
            // containerd's sockets live here: the path must stay short.
            .arg("--exec-root")
            .arg(dir.join("e"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("d.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut dockerd = Dockerd {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let version = dockerd
                .docker()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .unwrap();
            if version.status.success() {
                break;
            }
            let exited = dockerd.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "dockerd did not come up ({exited:?}):\n{}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dockerd
    }

    /// The docker CLI, talking to this dockerd only, with its own config
    /// directory (not the host's credential helpers).
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.dir.join("d.sock").display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    /// Its socket, as the docker CLI's `-H` wants it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("d.sock").display())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = hostd::os::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let needle = self.dir.to_string_lossy().into_owned();
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid > 1 && pid != me && String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = hostd::os::kill(pid, libc::SIGKILL);
            }
        }
        // Deepest first: an overlay inside dockerd's data root before the
        // root itself.
        let mut targets: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|t| Path::new(t).starts_with(&self.dir))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for target in targets {
            let _ = hostd::os::unmount(Path::new(&target), hostd::os::UnmountFlags::DETACH);
        }
    }
}

/// prlimit's options for docker.service's `LimitNOFILE=1048576`,
/// `LimitNPROC=infinity` and `LimitCORE=infinity`: soft and hard limit at
/// that value where this process may set it (raising a hard limit needs
/// `CAP_SYS_RESOURCE`), else both at the hard limit, which is also what
/// hostd's zygote does for its containers.
fn service_limits() -> Vec<String> {
    use rustix::process::Resource;
    let wanted = [
        ("nofile", Resource::Nofile, "1048576"),
        ("nproc", Resource::Nproc, "unlimited"),
        ("core", Resource::Core, "unlimited"),
    ];
    wanted
        .iter()
        .map(|(name, resource, want)| {
            let option = format!("--{name}={want}:{want}");
            let allowed = Command::new("prlimit")
                .arg(&option)
                .arg("true")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if allowed {
                return option;
            }
            let hard = rustix::process::getrlimit(*resource)
                .maximum
                .map_or("unlimited".to_string(), |h| h.to_string());
            format!("--{name}={hard}:{hard}")
        })
        .collect()
}

/// Replaces each word of exactly 12 or 64 lowercase hex digits (a
/// container id, or the host name made from one) with `<id>`.
pub fn mask_ids(text: &str) -> String {
    mask_hex_words(text, &[12, 64])
}

/// Replaces each word of lowercase hex digits whose length is one of
/// `lengths` with `<id>`.
pub fn mask_hex_words(text: &str, lengths: &[usize]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hex = word
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex && lengths.contains(&word.len()) {
            out.push_str("<id>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// What one side printed and answered.
#[derive(Debug, Clone)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with stdin on /dev/null, collecting its output; fails the
/// test if it takes longer than a minute.
pub fn capture(cmd: &mut Command) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = out.read_to_end(&mut text);
        text
    });
    let mut stderr = Vec::new();
    let _ = err.read_to_end(&mut stderr);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let stdout = reader.join().unwrap();
    Ran {
        code: status
            .code()
            .unwrap_or_else(|| panic!("{cmd:?} was killed: {status:?}")),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// One process as `/proc/PID/stat` tells it.
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    /// `R`, `S`, `Z`, ...
    pub state: String,
    pub ppid: i32,
}

/// Every process on the machine.
pub fn processes() -> Vec<ProcStat> {
    let mut all = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (Some(state), Some(Ok(ppid)), Ok(pid)) = (
            rest.next(),
            rest.next().map(str::parse),
            stat[..open].trim().parse(),
        ) else {
            continue;
        };
        all.push(ProcStat {
            pid,
            comm: stat[open + 1..close].to_string(),
            state: state.to_string(),
            ppid,
        });
    }
    all
}
