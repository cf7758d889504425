//! `hostd`: mkhost's host daemon and its command-line client.
//!
//! ```text
//! hostd [daemon] [--socket PATH] [--store DIR] [--state DIR] [--boot-manifest FILE]   run the daemon
//! hostd status [--socket PATH]     ask the daemon for its status, print the JSON answer
//! hostd images [--json]            list the images in the daemon's store
//! hostd import FILE                import an OCI layout (dir or tar) or `docker save` archive
//! hostd inspect IMAGE              print an image's config and layers as JSON
//! hostd rmi IMAGE                  untag a name, or remove an image given by id
//! hostd gc                         free blobs and layers no image uses
//! hostd run [--name N] [-e K=V]... [--restart P] [--memory SIZE] [--cpus N]
//!           [--cpu-weight W] [--pids N] [--cpuset-cpus L] [--cpuset-mems L] IMAGE [CMD...]
//!                                  start a container, print its id
//! hostd ps                         list containers
//! hostd logs [-f] NAME             print a container's log (-f: and follow it)
//! hostd stop [-t SECS] NAME        SIGTERM, SIGKILL after SECS (10)
//! hostd start NAME                 start an exited container again
//! hostd rm [-f] NAME               remove a container (-f: kill it if running)
//! hostd oci [GLOBAL] COMMAND ...   runc-compatible OCI runtime (see `hostd oci --help`)
//! hostd --version | --help
//! ```
//!
//! The client commands take `--socket PATH` (default /run/hostd/hostd.sock) and
//! exit 0 on success, 1 when the daemon or the store says no, 2 on a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hostd::daemon::{self, DaemonOptions};
use hostd::runtime::{self, CreateOptions, RunOptions, Runtime};
use mkhost_shared::container::Record;
use mkhost_shared::container::{parse_cpus, parse_size};
use mkhost_shared::control::{self, Request, Response};
use mkhost_shared::images::ImageSummary;
use mkhost_shared::paths;

const USAGE: &str = "\
usage: hostd [daemon] [--socket PATH] [--store DIR] [--state DIR] [--boot-manifest FILE]
                                        run the daemon (store: /var/lib/hostd, state: /run/hostd,
                                        boot manifest: /etc/hostd/containers.json)
       hostd status [--socket PATH]     print the daemon's status as JSON
       hostd images [--json]            list images
       hostd import FILE                import an OCI layout or docker save archive
       hostd inspect IMAGE              print an image's config and layers as JSON
       hostd rmi IMAGE                  untag a name, or remove an image by id
       hostd gc                         free unused blobs and layers
       hostd run [--name N] [-e K=V]... [--restart no|always|on-failure[:N]]
                 [--memory SIZE] [--cpus N] [--cpu-weight 1-10000] [--pids N]
                 [--cpuset-cpus LIST] [--cpuset-mems LIST] IMAGE [CMD...]
                                        start a container, print its id
       hostd ps                         list containers
       hostd logs [-f] NAME             print a container's log (-f: follow it)
       hostd stop [-t SECS] NAME        SIGTERM, then SIGKILL after SECS (default 10)
       hostd start NAME                 start an exited container again
       hostd rm [-f] NAME               remove a container (-f: kill it if running)
       hostd oci [GLOBAL] COMMAND ...   runc-compatible OCI runtime
       hostd --version | --help
Client commands take --socket PATH (default /run/hostd/hostd.sock).";

const OCI_USAGE: &str = "\
usage: hostd oci [--root DIR] [--log FILE] [--debug] COMMAND
  create [--bundle DIR] [--pid-file FILE] [--preserve-fds N] ID
  start ID
  state ID
  kill [--all] ID [SIGNAL]
  delete [--force] ID
  run [--bundle DIR] [--detach] [--keep] [--pid-file FILE] [--preserve-fds N] ID
  list [--quiet]
The state root defaults to /run/hostd/oci, the bundle to the current directory.";

/// How long `hostd status` waits for an answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Daemon(DaemonOptions),
    Status(PathBuf),
    Images {
        socket: PathBuf,
        json: bool,
    },
    Import {
        socket: PathBuf,
        path: PathBuf,
    },
    Inspect {
        socket: PathBuf,
        image: String,
    },
    Rmi {
        socket: PathBuf,
        image: String,
    },
    Gc(PathBuf),
    Container {
        socket: PathBuf,
        request: Request,
    },
    /// `logs -f`: print the log, then what it gains, until the container stops.
    Follow {
        socket: PathBuf,
        name: String,
    },
    Version,
    Help,
}

/// Parses the command line without touching anything (relative import paths
/// are made absolute later, in [`import`]).
fn parse(args: &[String]) -> Result<Cli, String> {
    let mut command: Option<&str> = None;
    let mut socket: Option<PathBuf> = None;
    let mut store: Option<PathBuf> = None;
    let mut state: Option<PathBuf> = None;
    let mut boot_manifest: Option<PathBuf> = None;
    let mut json = false;
    let mut positional: Vec<&str> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        // The path flags, as `--flag VALUE` or `--flag=VALUE`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (arg.as_str(), None),
        };
        let slot = match flag {
            "--socket" => Some((&mut socket, "a path")),
            "--store" => Some((&mut store, "a directory")),
            "--state" => Some((&mut state, "a directory")),
            "--boot-manifest" => Some((&mut boot_manifest, "a file")),
            _ => None,
        };
        if let Some((slot, what)) = slot {
            let value = inline.or_else(|| iter.next().map(String::as_str));
            *slot = Some(PathBuf::from(
                value.ok_or_else(|| format!("{flag} needs {what}"))?,
            ));
            continue;
        }
        match arg.as_str() {
            "--version" | "-V" => return Ok(Cli::Version),
            "--help" | "-h" => return Ok(Cli::Help),
            "--json" => json = true,
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown flag {s}")),
            "daemon" | "status" | "images" | "import" | "inspect" | "rmi" | "gc"
                if command.is_none() =>
            {
                command = Some(arg)
            }
            other if command.is_some() => positional.push(other),
            other => return Err(format!("unexpected argument: {other}")),
        }
    }
    let socket = socket.unwrap_or_else(|| PathBuf::from(paths::CONTROL_SOCKET));
    let command = command.unwrap_or("daemon");
    if (store.is_some() || state.is_some() || boot_manifest.is_some()) && command != "daemon" {
        return Err(format!(
            "{command}: --store, --state and --boot-manifest are daemon options"
        ));
    }
    if json && command != "images" {
        return Err(format!("{command}: --json is only for images"));
    }
    let takes_one = matches!(command, "import" | "inspect" | "rmi");
    let mut positional = positional.into_iter();
    let argument = if takes_one {
        let what = if command == "import" { "FILE" } else { "IMAGE" };
        Some(
            positional
                .next()
                .ok_or(format!("{command}: missing {what}"))?
                .to_string(),
        )
    } else {
        None
    };
    if let Some(extra) = positional.next() {
        return Err(format!("unexpected argument: {extra}"));
    }
    let argument = argument.unwrap_or_default();
    Ok(match command {
        "status" => Cli::Status(socket),
        "images" => Cli::Images { socket, json },
        "import" => Cli::Import {
            socket,
            path: PathBuf::from(argument),
        },
        "inspect" => Cli::Inspect {
            socket,
            image: argument,
        },
        "rmi" => Cli::Rmi {
            socket,
            image: argument,
        },
        "gc" => Cli::Gc(socket),
        _ => Cli::Daemon(DaemonOptions {
            socket,
            store: store.unwrap_or_else(|| PathBuf::from(paths::STORE)),
            state: state.unwrap_or_else(|| PathBuf::from(paths::STATE)),
            boot_manifest: Some(
                boot_manifest.unwrap_or_else(|| PathBuf::from(mkhost_shared::paths::BOOT_MANIFEST)),
            ),
        }),
    })
}

/// Parses `run|ps|logs|stop|start|rm ...` (the container commands): flags come
/// before the image, everything after the image is the command, verbatim.
fn parse_container(command: &str, args: &[String]) -> Result<Cli, String> {
    let mut socket = PathBuf::from(paths::CONTROL_SOCKET);
    let mut name: Option<String> = None;
    let mut env: Vec<String> = Vec::new();
    let mut force = false;
    let mut follow = false;
    let mut timeout: Option<u64> = None;
    let mut limits = hostd::daemon::containers::Limits::default();
    let mut restart = hostd::daemon::containers::RestartPolicy::No;
    let mut positional: Vec<String> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if !positional.is_empty() && command == "run" {
            positional.push(arg.clone());
            continue;
        }
        let mut value = |flag: &str| {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{command}: {flag} needs a value"))
        };
        match arg.as_str() {
            "--socket" => socket = PathBuf::from(value("--socket")?),
            s if s.starts_with("--socket=") => socket = PathBuf::from(&s["--socket=".len()..]),
            "--name" if command == "run" => name = Some(value("--name")?),
            "-e" | "--env" if command == "run" => {
                let entry = value("-e")?;
                if !entry.contains('=') {
                    return Err(format!("run: -e {entry}: expected NAME=value"));
                }
                env.push(entry);
            }
            "--restart" if command == "run" => restart = value("--restart")?.parse()?,
            "-m" | "--memory" if command == "run" => {
                let v = value("--memory")?;
                limits.memory = Some(parse_size(&v).map_err(|e| format!("run: --memory {e}"))?);
            }
            "--cpus" if command == "run" => {
                let v = value("--cpus")?;
                limits.nano_cpus = Some(parse_cpus(&v).map_err(|e| format!("run: --cpus {e}"))?);
            }
            "--cpu-weight" if command == "run" => {
                let v = value("--cpu-weight")?;
                limits.cpu_weight = Some(
                    v.parse()
                        .map_err(|_| format!("run: --cpu-weight {v:?}: not a number 1-10000"))?,
                );
            }
            "--pids" | "--pids-limit" if command == "run" => {
                let v = value("--pids")?;
                limits.pids = Some(
                    v.parse()
                        .map_err(|_| format!("run: --pids {v:?}: not a number"))?,
                );
            }
            "--cpuset-cpus" if command == "run" => {
                limits.cpuset_cpus = Some(value("--cpuset-cpus")?)
            }
            "--cpuset-mems" if command == "run" => {
                limits.cpuset_mems = Some(value("--cpuset-mems")?)
            }
            "-f" | "--force" if command == "rm" => force = true,
            "-f" | "--follow" if command == "logs" => follow = true,
            "-t" | "--time" if command == "stop" => {
                let text = value("-t")?;
                timeout = Some(
                    text.parse()
                        .map_err(|_| format!("stop: -t {text}: not a number of seconds"))?,
                );
            }
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("{command}: unknown flag {s}"))
            }
            other => positional.push(other.to_string()),
        }
    }
    let mut positional = positional.into_iter();
    let request = match command {
        "ps" => Request::Ps,
        _ => {
            let what = if command == "run" { "IMAGE" } else { "NAME" };
            let first = positional
                .next()
                .ok_or(format!("{command}: missing {what}"))?;
            match command {
                "run" => Request::Run(hostd::daemon::containers::RunRequest {
                    image: first,
                    name,
                    command: positional.by_ref().collect(),
                    env,
                    limits: limits.clone(),
                    restart,
                }),
                "logs" => Request::Logs { name: first },
                "start" => Request::Start { name: first },
                "stop" => Request::Stop {
                    name: first,
                    timeout_secs: timeout,
                },
                _ => Request::Rm { name: first, force },
            }
        }
    };
    if let Some(extra) = positional.next() {
        return Err(format!("unexpected argument: {extra}"));
    }
    if let Request::Run(run) = &request {
        run.validate().map_err(|e| format!("run: {e}"))?;
    }
    if let (true, Request::Logs { name }) = (follow, &request) {
        return Ok(Cli::Follow {
            socket,
            name: name.clone(),
        });
    }
    Ok(Cli::Container { socket, request })
}

/// Runs a container command and prints its answer.
fn container(socket: &Path, request: &Request) -> ExitCode {
    client(socket, request, request.client_timeout(), |response| {
        match response {
            Response::Started(id) => println!("{id}"),
            Response::Logs(text) => print!("{text}"),
            Response::Container(record) => println!("{}", record.id),
            Response::Ps(rows) => print!("{}", ps_table(&rows)),
            other => return Err(unexpected(&other)),
        }
        Ok(())
    })
}

/// What `text` (the whole log) has after the line `last` (printed before):
/// everything if `last` is gone (rotated away) or none was printed. Lines
/// carry nanosecond timestamps, so a line is found again exactly.
fn log_after<'t>(text: &'t str, last: Option<&str>) -> &'t str {
    let Some(last) = last else { return text };
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        if line.trim_end_matches('\n') == last {
            return &text[at..];
        }
    }
    text
}

/// `logs -f`: prints the log, then polls for more until the container is
/// no longer running (or the daemon goes away).
fn follow_logs(socket: &Path, name: &str) -> ExitCode {
    use std::io::Write;
    let mut last: Option<String> = None;
    loop {
        let logs = Request::Logs {
            name: name.to_string(),
        };
        let text = match control::request(socket, &logs, logs.client_timeout()) {
            Ok(Response::Logs(text)) => text,
            Ok(Response::Error(message)) => {
                eprintln!("hostd: {message}");
                return ExitCode::FAILURE;
            }
            Ok(other) => {
                eprintln!("hostd: {}", unexpected(&other));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("hostd: {e}");
                return ExitCode::FAILURE;
            }
        };
        let new = log_after(&text, last.as_deref());
        // Only whole lines: a half-written last line comes with the next poll.
        let whole = &new[..new.rfind('\n').map_or(0, |i| i + 1)];
        if !whole.is_empty() {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(whole.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::SUCCESS; // the reader went away
            }
            last = whole.lines().last().map(str::to_string);
        }
        let running = match control::request(socket, &Request::Ps, Request::Ps.client_timeout()) {
            Ok(Response::Ps(rows)) => rows
                .iter()
                .any(|r| (r.name == name || r.id.starts_with(name)) && r.status != "exited"),
            _ => false,
        };
        if !running && whole.is_empty() {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `ps`: one row per container.
fn ps_table(rows: &[Record]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<20} {:<18} {:<8} {:<8} {}\n",
        "NAME", "ID", "IMAGE", "STATUS", "PID", "RESTARTS", "CREATED"
    );
    for r in rows {
        let status = match (r.status.as_str(), r.exit_code) {
            ("exited", Some(code)) if r.oom_killed => format!("exited({code},oom)"),
            ("exited", Some(code)) => format!("exited({code})"),
            ("exited", None) => "exited(?)".to_string(),
            (other, _) => other.to_string(),
        };
        out.push_str(&format!(
            "{:<20} {:<16} {:<20} {:<18} {:<8} {:<8} {}\n",
            r.name, r.id, r.image, status, r.pid, r.restart_count, r.created
        ));
    }
    out
}

/// Sends `request` and hands a successful answer to `show`. A daemon that is
/// not running, a failed exchange and an error answer all exit 1.
fn client(
    socket: &Path,
    request: &Request,
    timeout: Duration,
    show: impl FnOnce(Response) -> Result<(), String>,
) -> ExitCode {
    match control::request(socket, request, timeout) {
        Ok(Response::Error(message)) => {
            eprintln!("hostd: {message}");
            ExitCode::FAILURE
        }
        Ok(response) => match show(response) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hostd: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e @ control::ClientError::Connect { .. }) => {
            eprintln!("hostd: daemon not running? {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hostd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(socket: &Path) -> ExitCode {
    match control::request(socket, &Request::Status, STATUS_TIMEOUT) {
        Ok(response) => {
            print!("{}", response.to_line());
            match response {
                Response::Status(_) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Err(e @ control::ClientError::Connect { .. }) => {
            eprintln!("hostd: daemon not running? {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hostd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first 12 hex digits of an image id, as docker shows it.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Bytes in docker's units (powers of 1000).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

fn unexpected(response: &Response) -> String {
    format!(
        "unexpected answer from the daemon: {}",
        response.to_line().trim_end()
    )
}

/// One table row per name (an image without names gets one `<none>` row).
fn images_table(rows: &[ImageSummary]) -> String {
    let mut lines = vec![[
        "NAME".to_string(),
        "ID".to_string(),
        "LAYERS".to_string(),
        "SIZE".to_string(),
        "CREATED".to_string(),
    ]];
    for row in rows {
        let created = row
            .created
            .as_deref()
            .map(|c| c.get(..19).unwrap_or(c).replace('T', " "))
            .unwrap_or_else(|| "-".to_string());
        let none = ["<none>".to_string()];
        let names = if row.names.is_empty() {
            &none[..]
        } else {
            &row.names[..]
        };
        for name in names {
            lines.push([
                name.clone(),
                short_id(&row.id).to_string(),
                row.layers.to_string(),
                human_size(row.unpacked_size),
                created.clone(),
            ]);
        }
    }
    let mut widths = [0usize; 5];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn images(socket: &Path, json: bool) -> ExitCode {
    let request = Request::Images;
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Images(list) = response else {
            return Err(unexpected(&response));
        };
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
            return Ok(());
        }
        print!("{}", images_table(&list));
        Ok(())
    })
}

fn import(socket: &Path, path: &Path) -> ExitCode {
    // The daemon does not know our directory: send the path absolute.
    let path = match std::path::absolute(path) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("hostd: cannot make {} absolute: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if path.to_str().is_none() {
        eprintln!("hostd: {} is not valid UTF-8; rename it", path.display());
        return ExitCode::FAILURE;
    }
    let request = Request::Import { path };
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Imported(report) = response else {
            return Err(unexpected(&response));
        };
        for image in &report.images {
            let names = if image.names.is_empty() {
                "<none>".to_string()
            } else {
                image.names.join(", ")
            };
            let already = if image.new { "" } else { " (already present)" };
            println!("imported {names} {}{already}", short_id(&image.id));
        }
        println!(
            "{} images, {} new blobs, {} new layers",
            report.images.len(),
            report.blobs_added,
            report.layers_added
        );
        if !report.skipped.is_empty() || report.xattrs_dropped > 0 {
            println!(
                "skipped {} entries (device nodes, fifos), dropped {} extended attributes",
                report.skipped.len(),
                report.xattrs_dropped
            );
        }
        Ok(())
    })
}

fn inspect(socket: &Path, image: &str) -> ExitCode {
    let request = Request::InspectImage {
        image: image.to_string(),
    };
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Image(info) = response else {
            return Err(unexpected(&response));
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&info).unwrap_or_default()
        );
        Ok(())
    })
}

fn rmi(socket: &Path, image: &str) -> ExitCode {
    let request = Request::RemoveImage {
        image: image.to_string(),
    };
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Removed(removed) = response else {
            return Err(unexpected(&response));
        };
        for name in &removed.untagged {
            println!("untagged: {name}");
        }
        if removed.deleted {
            println!("deleted: {} (run `hostd gc` to free its space)", removed.id);
        }
        Ok(())
    })
}

fn gc(socket: &Path) -> ExitCode {
    let request = Request::Gc;
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Gc(report) = response else {
            return Err(unexpected(&response));
        };
        println!(
            "removed {} blobs and {} layers, freed {}",
            report.blobs_removed,
            report.layers_removed,
            human_size(report.bytes_freed)
        );
        Ok(())
    })
}

/// A parsed `hostd oci` command line.
#[derive(Debug, PartialEq)]
struct OciCli {
    root: PathBuf,
    log: Option<PathBuf>,
    debug: bool,
    command: Oci,
}

#[derive(Debug, PartialEq)]
enum Oci {
    Create(String, CreateOptions),
    Start(String),
    State(String),
    Kill { id: String, signal: i32, all: bool },
    Delete { id: String, force: bool },
    Run(String, RunOptions),
    List { quiet: bool },
    Help,
}

/// Splits `--name=value` / `-name value` forms into (name, inline value).
fn flag(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

fn parse_oci(args: &[String]) -> Result<OciCli, String> {
    let mut cli = OciCli {
        root: PathBuf::from(runtime::DEFAULT_ROOT),
        log: None,
        debug: false,
        command: Oci::Help,
    };
    let mut iter = args.iter().map(String::as_str).peekable();
    // Global flags, up to the command.
    let command = loop {
        let Some(arg) = iter.next() else {
            return Ok(cli);
        };
        let Some((name, inline)) = flag(arg) else {
            break arg;
        };
        let mut value = |what: &str| {
            inline
                .map(str::to_string)
                .or_else(|| iter.next().map(str::to_string))
                .ok_or(format!("--{what} needs a value"))
        };
        match name {
            "root" => cli.root = PathBuf::from(value("root")?),
            "log" => cli.log = Some(PathBuf::from(value("log")?)),
            "log-format" => drop(value("log-format")?),
            "debug" => cli.debug = true,
            "systemd-cgroup" => return Err("--systemd-cgroup is not supported".into()),
            "help" | "h" => return Ok(cli),
            other => return Err(format!("unknown global flag --{other}")),
        }
    };
    // Command flags and positional arguments.
    let mut positional: Vec<String> = Vec::new();
    let mut create = CreateOptions {
        bundle: PathBuf::from("."),
        ..CreateOptions::default()
    };
    let (mut detach, mut keep, mut all, mut force, mut quiet) = (false, false, false, false, false);
    while let Some(arg) = iter.next() {
        let Some((name, inline)) = flag(arg) else {
            positional.push(arg.to_string());
            continue;
        };
        let mut value = |what: &str| {
            inline
                .map(str::to_string)
                .or_else(|| iter.next().map(str::to_string))
                .ok_or(format!("--{what} needs a value"))
        };
        let runs = matches!(command, "create" | "run");
        match name {
            "bundle" | "b" if runs => create.bundle = PathBuf::from(value("bundle")?),
            "pid-file" if runs => create.pid_file = Some(PathBuf::from(value("pid-file")?)),
            "preserve-fds" if runs => {
                create.preserve_fds = value("preserve-fds")?
                    .parse()
                    .map_err(|_| "--preserve-fds needs a number".to_string())?
            }
            "no-pivot" | "no-new-keyring" if runs => {}
            "console-socket" if runs => {
                return Err("--console-socket: terminals are not supported".into())
            }
            "detach" | "d" if command == "run" => detach = true,
            "keep" if command == "run" => keep = true,
            "all" | "a" if command == "kill" => all = true,
            "force" | "f" if command == "delete" => force = true,
            "quiet" | "q" if command == "list" => quiet = true,
            "help" | "h" => return Ok(cli),
            other => return Err(format!("{command}: unknown flag --{other}")),
        }
    }
    let mut positional = positional.into_iter();
    let mut id = || {
        positional
            .next()
            .ok_or(format!("{command}: missing container id"))
    };
    cli.command = match command {
        "create" => Oci::Create(id()?, create),
        "start" => Oci::Start(id()?),
        "state" => Oci::State(id()?),
        "kill" => {
            let id = id()?;
            let signal = match positional.next() {
                None => libc::SIGTERM,
                Some(s) => runtime::container::parse_signal(&s)
                    .ok_or(format!("kill: unknown signal {s:?}"))?,
            };
            Oci::Kill { id, signal, all }
        }
        "delete" => Oci::Delete { id: id()?, force },
        "run" => Oci::Run(
            id()?,
            RunOptions {
                create,
                detach,
                keep,
            },
        ),
        "list" => Oci::List { quiet },
        "help" => Oci::Help,
        other => return Err(format!("unknown command {other:?}")),
    };
    if let Some(extra) = positional.next() {
        return Err(format!("{command}: unexpected argument {extra:?}"));
    }
    Ok(cli)
}

/// `hostd oci ...`: exit 0 on success, 1 on a runtime error, 2 on a usage
/// error; `run` exits with the container's code.
fn oci_main(args: &[String]) -> ExitCode {
    let cli = match parse_oci(args) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("hostd oci: {e}\n{OCI_USAGE}");
            return ExitCode::from(2);
        }
    };
    if cli.command == Oci::Help {
        println!("{OCI_USAGE}");
        return ExitCode::SUCCESS;
    }
    let log = match runtime::Log::new(cli.log.as_deref(), cli.debug) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("hostd oci: --log: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = Runtime::detect(cli.root, log);
    let result: Result<u8, runtime::RuntimeError> = match cli.command {
        Oci::Create(id, opts) => rt.create(&id, &opts).map(|_| 0),
        Oci::Start(id) => rt.start(&id).map(|()| 0),
        Oci::State(id) => rt.state(&id).map(|s| {
            print!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            0
        }),
        Oci::Kill { id, signal, all } => rt.kill(&id, signal, all).map(|()| 0),
        Oci::Delete { id, force } => rt.delete(&id, force).map(|()| 0),
        Oci::Run(id, opts) => rt.run(&id, &opts).map(|code| code.clamp(0, 255) as u8),
        Oci::List { quiet } => rt.list().map(|list| {
            for s in list {
                if quiet {
                    println!("{}", s.id);
                } else {
                    println!("{}\t{}\t{}\t{}", s.id, s.pid, s.status, s.bundle.display());
                }
            }
            0
        }),
        Oci::Help => Ok(0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            rt.log().error(&text);
            ExitCode::FAILURE
        }
    }
}

/// `hostd zygote --state DIR --conn FD --listener FD`: internal; the new
/// image of a zygote that a daemon asked to upgrade (see
/// `hostd::daemon::zygote`).
fn zygote_main(args: &[String]) -> ExitCode {
    let mut state = None;
    let mut conn = None;
    let mut listener = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = iter.next();
        match (arg.as_str(), value) {
            ("--state", Some(v)) => state = Some(PathBuf::from(v)),
            ("--conn", Some(v)) => conn = v.parse().ok(),
            ("--listener", Some(v)) => listener = v.parse().ok(),
            _ => {
                eprintln!("hostd zygote: internal command; started only by an upgrading zygote");
                return ExitCode::from(2);
            }
        }
    }
    match (state, conn, listener) {
        (Some(state), Some(conn), Some(listener)) => {
            hostd::daemon::zygote::resume(&state, conn, listener)
        }
        _ => {
            eprintln!("hostd zygote: needs --state, --conn and --listener");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("oci") {
        return oci_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("zygote") {
        return zygote_main(&args[1..]);
    }
    let parsed = match args.first().map(String::as_str) {
        Some(c @ ("run" | "ps" | "logs" | "stop" | "start" | "rm")) => {
            parse_container(c, &args[1..])
        }
        _ => parse(&args),
    };
    match parsed {
        Ok(Cli::Container { socket, request }) => container(&socket, &request),
        Ok(Cli::Follow { socket, name }) => follow_logs(&socket, &name),
        Ok(Cli::Version) => {
            println!("hostd {}", hostd::VERSION);
            ExitCode::SUCCESS
        }
        Ok(Cli::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Cli::Status(socket)) => status(&socket),
        Ok(Cli::Images { socket, json }) => images(&socket, json),
        Ok(Cli::Import { socket, path }) => import(&socket, &path),
        Ok(Cli::Inspect { socket, image }) => inspect(&socket, &image),
        Ok(Cli::Rmi { socket, image }) => rmi(&socket, &image),
        Ok(Cli::Gc(socket)) => gc(&socket),
        Ok(Cli::Daemon(options)) => match daemon::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                daemon::log::log(&e.to_string());
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("hostd: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(list: &[&str]) -> Result<Cli, String> {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn daemon_at(socket: &str, store: &str) -> Cli {
        Cli::Daemon(DaemonOptions {
            socket: socket.into(),
            store: store.into(),
            state: paths::STATE.into(),
            boot_manifest: Some(mkhost_shared::paths::BOOT_MANIFEST.into()),
        })
    }

    #[test]
    fn follow_prints_what_comes_after_the_last_line() {
        let text = "t1 stdout a\nt2 stdout b\nt3 stderr c\n";
        assert_eq!(log_after(text, None), text);
        assert_eq!(
            log_after(text, Some("t1 stdout a")),
            "t2 stdout b\nt3 stderr c\n"
        );
        assert_eq!(log_after(text, Some("t3 stderr c")), "");
        // Rotated away: everything again.
        assert_eq!(log_after(text, Some("t0 stdout z")), text);
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_container("logs", &v(&["-f", "web"])),
            Ok(Cli::Follow {
                socket: paths::CONTROL_SOCKET.into(),
                name: "web".into()
            })
        );
        assert!(parse_container("ps", &v(&["-f"])).is_err());
    }

    #[test]
    fn parses_container_commands() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let run = parse_container(
            "run",
            &v(&[
                "--socket", "/s", "--name", "web", "-e", "A=1", "bb", "sh", "-c", "echo hi",
            ]),
        )
        .unwrap();
        assert_eq!(
            run,
            Cli::Container {
                socket: "/s".into(),
                request: Request::Run(hostd::daemon::containers::RunRequest {
                    image: "bb".into(),
                    name: Some("web".into()),
                    command: v(&["sh", "-c", "echo hi"]),
                    env: v(&["A=1"]),
                    ..Default::default()
                }),
            }
        );
        let limited = parse_container(
            "run",
            &v(&[
                "--memory",
                "64M",
                "--cpus",
                "0.5",
                "--cpu-weight",
                "20",
                "--pids",
                "50",
                "--cpuset-cpus",
                "0",
                "--restart",
                "on-failure:3",
                "bb",
            ]),
        )
        .unwrap();
        let Cli::Container {
            request: Request::Run(run),
            ..
        } = limited
        else {
            panic!("{limited:?}")
        };
        assert_eq!(run.limits.memory, Some(64 << 20));
        assert_eq!(run.limits.nano_cpus, Some(500_000_000));
        assert_eq!(run.limits.cpu_weight, Some(20));
        assert_eq!(run.limits.pids, Some(50));
        assert_eq!(run.limits.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(run.restart.to_string(), "on-failure:3");
        for (args, wanted) in [
            (&["--memory", "4k", "bb"][..], "6 MiB"),
            (&["--memory", "lots", "bb"][..], "--memory"),
            (&["--cpus", "0.001", "bb"][..], "cpus"),
            (&["--restart", "sometimes", "bb"][..], "on-failure:N"),
            (&["--cpu-weight", "0", "bb"][..], "1..=10000"),
            (&["--name", "-bad", "bb"][..], "invalid container name"),
        ] {
            let e = parse_container("run", &v(args)).unwrap_err();
            assert!(e.contains(wanted), "{args:?}: {e}");
        }
        assert_eq!(
            parse_container("start", &v(&["web"])),
            Ok(Cli::Container {
                socket: paths::CONTROL_SOCKET.into(),
                request: Request::Start { name: "web".into() },
            })
        );
        assert!(parse_container("start", &v(&[])).is_err());
        assert!(matches!(
            parse_container("rm", &v(&["-f", "web"])),
            Ok(Cli::Container {
                request: Request::Rm { force: true, .. },
                ..
            })
        ));
        assert!(matches!(
            parse_container("stop", &v(&["-t", "3", "web"])),
            Ok(Cli::Container {
                request: Request::Stop {
                    timeout_secs: Some(3),
                    ..
                },
                ..
            })
        ));
        assert!(matches!(
            parse_container("ps", &[]),
            Ok(Cli::Container {
                request: Request::Ps,
                ..
            })
        ));
        assert!(parse_container("run", &[]).is_err());
        assert!(parse_container("run", &v(&["-e", "novalue", "bb"])).is_err());
        assert!(parse_container("logs", &v(&["a", "b"])).is_err());
        assert!(parse_container("rm", &v(&["-x", "a"])).is_err());
        assert!(parse_str(&["daemon", "--state", "/st"]).is_ok());
        assert!(parse_str(&["status", "--state", "/st"]).is_err());
    }

    #[test]
    fn parses_commands() {
        let default = PathBuf::from(paths::CONTROL_SOCKET);
        let sock = paths::CONTROL_SOCKET;
        let store = paths::STORE;
        assert_eq!(parse_str(&[]), Ok(daemon_at(sock, store)));
        assert_eq!(parse_str(&["daemon"]), Ok(daemon_at(sock, store)));
        assert_eq!(parse_str(&["status"]), Ok(Cli::Status(default)));
        assert_eq!(
            parse_str(&["status", "--socket", "/tmp/s"]),
            Ok(Cli::Status("/tmp/s".into()))
        );
        assert_eq!(
            parse_str(&["--socket=/tmp/s"]),
            Ok(daemon_at("/tmp/s", store))
        );
        assert_eq!(
            parse_str(&["daemon", "--store", "/tmp/st", "--socket", "/s"]),
            Ok(daemon_at("/s", "/tmp/st"))
        );
        assert_eq!(parse_str(&["--version"]), Ok(Cli::Version));
        assert!(parse_str(&["status", "daemon"]).is_err());
        assert!(parse_str(&["--socket"]).is_err());
        assert_eq!(
            parse_str(&["daemon", "--state"]),
            Err("--state needs a directory".to_string())
        );
        assert_eq!(
            parse_str(&["daemon", "--store=/tmp/st", "--socket=/s"]),
            Ok(daemon_at("/s", "/tmp/st"))
        );
        assert!(matches!(
            parse_str(&["daemon", "--boot-manifest=/b.json"]),
            Ok(Cli::Daemon(DaemonOptions { boot_manifest: Some(p), .. })) if p == Path::new("/b.json")
        ));
        assert!(parse_str(&["--store"]).is_err());
    }

    #[test]
    fn parses_image_commands() {
        let s = || PathBuf::from("/s");
        assert_eq!(
            parse_str(&["images", "--socket", "/s"]),
            Ok(Cli::Images {
                socket: s(),
                json: false
            })
        );
        assert_eq!(
            parse_str(&["images", "--json", "--socket=/s"]),
            Ok(Cli::Images {
                socket: s(),
                json: true
            })
        );
        assert_eq!(
            parse_str(&["import", "img.tar", "--socket", "/s"]),
            Ok(Cli::Import {
                socket: s(),
                path: "img.tar".into()
            })
        );
        assert_eq!(
            parse_str(&["--socket", "/s", "inspect", "busybox"]),
            Ok(Cli::Inspect {
                socket: s(),
                image: "busybox".into()
            })
        );
        assert_eq!(
            parse_str(&["rmi", "sha256:ab", "--socket", "/s"]),
            Ok(Cli::Rmi {
                socket: s(),
                image: "sha256:ab".into()
            })
        );
        assert_eq!(parse_str(&["gc", "--socket", "/s"]), Ok(Cli::Gc(s())));
        assert!(parse_str(&["import"]).is_err());
        assert!(parse_str(&["inspect"]).is_err());
        assert!(parse_str(&["rmi", "a", "b"]).is_err());
        assert!(parse_str(&["gc", "x"]).is_err());
        assert!(parse_str(&["status", "--json"]).is_err());
        assert!(parse_str(&["images", "--store", "/x"]).is_err());
        assert!(parse_str(&["images", "--frob"]).is_err());
    }

    #[test]
    fn images_table_one_row_per_name() {
        let rows = vec![
            ImageSummary {
                id: format!("sha256:{}", "ab".repeat(32)),
                names: vec!["hello:latest".into(), "hi".into()],
                created: Some("2024-05-06T07:08:09.123Z".into()),
                layers: 2,
                size: 1_000,
                unpacked_size: 1_234_567,
            },
            ImageSummary {
                id: format!("sha256:{}", "cd".repeat(32)),
                names: vec![],
                created: None,
                layers: 0,
                size: 0,
                unpacked_size: 12,
            },
        ];
        let table = images_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(lines[1].starts_with("hello:latest"), "{table}");
        assert!(lines[1].contains("abababababab "), "{table}");
        assert!(lines[1].contains("1.2MB"), "{table}");
        assert!(lines[1].ends_with("2024-05-06 07:08:09"), "{table}");
        assert!(lines[2].starts_with("hi "), "{table}");
        assert!(lines[3].starts_with("<none>"), "{table}");
        assert!(lines[3].contains("12B"), "{table}");
        assert_eq!(short_id("sha256:abc"), "abc");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1.0kB");
    }

    fn oci(list: &[&str]) -> Result<OciCli, String> {
        parse_oci(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_oci_commands() {
        let cli = oci(&[
            "--root",
            "/r",
            "create",
            "--bundle=/b",
            "--pid-file",
            "/p",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.root, PathBuf::from("/r"));
        match cli.command {
            Oci::Create(id, opts) => {
                assert_eq!(id, "c1");
                assert_eq!(opts.bundle, PathBuf::from("/b"));
                assert_eq!(opts.pid_file, Some(PathBuf::from("/p")));
            }
            other => panic!("{other:?}"),
        }
        let cli = oci(&["kill", "c1", "KILL"]).unwrap();
        assert_eq!(cli.root, PathBuf::from(runtime::DEFAULT_ROOT));
        assert_eq!(
            cli.command,
            Oci::Kill {
                id: "c1".into(),
                signal: 9,
                all: false
            }
        );
        assert_eq!(
            oci(&["delete", "-f", "c1"]).unwrap().command,
            Oci::Delete {
                id: "c1".into(),
                force: true
            }
        );
        match oci(&["run", "-b", "b", "-d", "x"]).unwrap().command {
            Oci::Run(id, opts) => {
                assert_eq!(id, "x");
                assert!(opts.detach && !opts.keep);
                assert_eq!(opts.create.bundle, PathBuf::from("b"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(oci(&[]).unwrap().command, Oci::Help);
        assert!(oci(&["start"]).is_err());
        assert!(oci(&["kill", "c1", "BOGUS"]).is_err());
        assert!(oci(&["state", "a", "b"]).is_err());
        assert!(oci(&["start", "--force", "a"]).is_err());
        assert!(oci(&["frob", "a"]).is_err());
    }
}
