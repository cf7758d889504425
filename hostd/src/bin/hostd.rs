//! `hostd`: mkhost's host daemon, its command-line client and a
//! runc-compatible OCI runtime (`hostd oci`).
//!
//! `hostd --help` lists the commands (the text is `cli::USAGE`). This file
//! only parses the command line (`cli`) and dispatches: to the daemon, to
//! the client commands (`hostd::client`) or to the OCI runtime.

// A module of this binary, not a binary of its own (src/bin/*.rs would be).
#[path = "hostd/cli.rs"]
mod cli;

use std::process::ExitCode;

use cli::{Cli, Oci, OciCli};
use hostd::client;
use hostd::daemon;
use hostd::runtime::{self, Runtime};

fn main() -> ExitCode {
    match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => run(command),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs what the command line asks for.
fn run(command: Cli) -> ExitCode {
    match command {
        // SAFETY: `main` parses its arguments and comes here on its only
        // thread; nothing before this starts a thread.
        Cli::Daemon(options) => match unsafe { daemon::run(&options) } {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                hostd::log::log(&e.to_string());
                ExitCode::FAILURE
            }
        },
        Cli::Status(socket) => client::status(&socket),
        Cli::Images { socket, json } => client::images(&socket, json),
        Cli::Import {
            socket,
            path,
            reference,
        } => client::import(&socket, &path, reference.as_deref()),
        Cli::Inspect { socket, image } => client::inspect(&socket, &image),
        Cli::Rmi { socket, image } => client::rmi(&socket, &image),
        Cli::Gc(socket) => client::gc(&socket),
        Cli::Container { socket, request } => client::container(&socket, &request),
        Cli::Run {
            socket,
            request,
            detach,
        } => client::run(&socket, &request, detach),
        Cli::Ps { socket, json } => client::ps(&socket, json),
        Cli::Pull { socket, reference } => client::pull(&socket, &reference),
        Cli::Network {
            socket,
            request,
            json,
        } => client::network(&socket, &request, json),
        Cli::Volume {
            socket,
            request,
            json,
        } => client::volume(&socket, &request, json),
        Cli::Follow { socket, name } => client::follow_logs(&socket, &name),
        Cli::Oci(oci) => oci_main(oci),
        Cli::Zygote {
            state,
            conn,
            listener,
        } => hostd::backend::linux::zygote::resume(&state, conn, listener),
        Cli::Version => {
            println!("hostd {}", hostd::VERSION);
            ExitCode::SUCCESS
        }
        Cli::Help(usage) => {
            println!("{usage}");
            ExitCode::SUCCESS
        }
    }
}

/// `hostd oci ...`: exit 0 on success, 1 on a runtime error, 2 on a usage
/// error; `run` exits with the container's code.
fn oci_main(cli: OciCli) -> ExitCode {
    if cli.command == Oci::Help {
        println!("{}", cli::OCI_USAGE);
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
