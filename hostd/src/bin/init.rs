//! `init`: mkhost's PID 1. Parses arguments and hands over to `hostd::init::run`,
//! which never returns. Invoked as `modprobe` it is the kernel's module
//! autoloader instead (`hostd::init::drivers::modprobe`).

use std::process::ExitCode;

use hostd::init::{self, Invocation};

fn main() -> ExitCode {
    let invoked_as = std::env::args().next().unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The builder links /sbin/modprobe to /init: the kernel's module autoloader.
    if invoked_as.rsplit('/').next() == Some("modprobe") {
        let request = hostd::init::drivers::modprobe::parse_args(&args);
        return ExitCode::from(hostd::init::drivers::modprobe::run(
            std::path::Path::new("/"),
            &request,
        ));
    }
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
            hostd::init::timeline::error(&format!("{e}; booting with defaults"));
            init::run(&init::Options::default())
        }
        Err(e) => {
            eprintln!("init: {e}");
            ExitCode::from(2)
        }
    }
}
