//! `hostd`: mkhost's host daemon and its command-line client.
//!
//! ```text
//! hostd [daemon] [--socket PATH]   run the daemon (default socket /run/hostd/hostd.sock)
//! hostd status [--socket PATH]     ask the daemon for its status, print the JSON answer
//! hostd oci [GLOBAL] COMMAND ...   runc-compatible OCI runtime (see `hostd oci --help`)
//! hostd --version | --help
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hostd::control::{self, Request, Response};
use hostd::daemon::{self, DaemonOptions};
use hostd::runtime::{self, CreateOptions, RunOptions, Runtime};

const USAGE: &str = "\
usage: hostd [daemon] [--socket PATH]   run the daemon
       hostd status [--socket PATH]     print the daemon's status as JSON
       hostd oci [GLOBAL] COMMAND ...   runc-compatible OCI runtime
       hostd --version | --help";

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
    Daemon(PathBuf),
    Status(PathBuf),
    Version,
    Help,
}

fn parse(args: &[String]) -> Result<Cli, String> {
    let mut command: Option<&str> = None;
    let mut socket = PathBuf::from(control::SOCKET_PATH);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--version" | "-V" => return Ok(Cli::Version),
            "--help" | "-h" => return Ok(Cli::Help),
            "--socket" => {
                socket = iter
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--socket needs a path")?;
            }
            s if s.starts_with("--socket=") => socket = PathBuf::from(&s["--socket=".len()..]),
            "daemon" | "status" if command.is_none() => command = Some(arg),
            other => return Err(format!("unexpected argument: {other}")),
        }
    }
    Ok(match command {
        Some("status") => Cli::Status(socket),
        _ => Cli::Daemon(socket),
    })
}

fn status(socket: &std::path::Path) -> ExitCode {
    match control::request(socket, &Request::Status, STATUS_TIMEOUT) {
        Ok(response) => {
            print!("{}", response.to_line());
            match response {
                Response::Status(_) => ExitCode::SUCCESS,
                Response::Error(_) => ExitCode::FAILURE,
            }
        }
        Err(e @ control::ControlError::Connect { .. }) => {
            eprintln!("hostd: daemon not running? {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hostd: {e}");
            ExitCode::FAILURE
        }
    }
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("oci") {
        return oci_main(&args[1..]);
    }
    match parse(&args) {
        Ok(Cli::Version) => {
            println!("hostd {}", hostd::VERSION);
            ExitCode::SUCCESS
        }
        Ok(Cli::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Cli::Status(socket)) => status(&socket),
        Ok(Cli::Daemon(socket)) => match daemon::run(&DaemonOptions { socket }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                daemon::log(&e.to_string());
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

    #[test]
    fn parses_commands() {
        let default = PathBuf::from(control::SOCKET_PATH);
        assert_eq!(parse_str(&[]), Ok(Cli::Daemon(default.clone())));
        assert_eq!(parse_str(&["daemon"]), Ok(Cli::Daemon(default.clone())));
        assert_eq!(parse_str(&["status"]), Ok(Cli::Status(default)));
        assert_eq!(
            parse_str(&["status", "--socket", "/tmp/s"]),
            Ok(Cli::Status("/tmp/s".into()))
        );
        assert_eq!(
            parse_str(&["--socket=/tmp/s"]),
            Ok(Cli::Daemon("/tmp/s".into()))
        );
        assert_eq!(parse_str(&["--version"]), Ok(Cli::Version));
        assert!(parse_str(&["status", "daemon"]).is_err());
        assert!(parse_str(&["--socket"]).is_err());
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
