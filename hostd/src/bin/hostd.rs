//! `hostd`: mkhost's host daemon and its command-line client.
//!
//! ```text
//! hostd [daemon] [--socket PATH]   run the daemon (default socket /run/hostd/hostd.sock)
//! hostd status [--socket PATH]     ask the daemon for its status, print the JSON answer
//! hostd --version | --help
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hostd::control::{self, Request, Response};
use hostd::daemon::{self, DaemonOptions};

const USAGE: &str = "\
usage: hostd [daemon] [--socket PATH]   run the daemon
       hostd status [--socket PATH]     print the daemon's status as JSON
       hostd --version | --help";

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
}
