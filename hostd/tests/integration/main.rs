//! Integration tests: the real `hostd` and `init` binaries, run as processes.
//!
//! One test binary with a module per area (`hostd_cli`, `init_boot`).

mod common;
mod hostd_cli;
mod init_boot;
