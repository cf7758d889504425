//! `init`: mkhost's PID 1. Parses arguments and hands over to `hostd::init::run`,
//! which never returns.

use std::process::ExitCode;

use hostd::init::{self, Invocation};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let is_pid1 = std::process::id() == 1;
    match init::parse_args(&args, is_pid1) {
        Ok(Invocation::Boot(options)) => init::run(&options),
        Ok(Invocation::Version) => {
            println!("init {}", hostd::VERSION);
            ExitCode::SUCCESS
        }
        Ok(Invocation::Help) => {
            println!("{}", init::USAGE);
            ExitCode::SUCCESS
        }
        // As PID 1 only a malformed --test-root/--skip gets here. PID 1 must not
        // exit, so boot with the defaults.
        Err(e) if is_pid1 => {
            hostd::timeline::error(&format!("{e}; booting with defaults"));
            init::run(&init::Options::default())
        }
        Err(e) => {
            eprintln!("init: {e}");
            ExitCode::from(2)
        }
    }
}
