//! Integration tests: the real `hostd` and `init` binaries, run as processes.
//!
//! One test binary with a module per area (`containers`, `hostd_cli`, `images`,
//! `init_boot`).

mod common;
mod containers;
mod hostd_cli;
mod images;
mod init_boot;
