//! Integration tests: the real `hostd` and `init` binaries, run as processes.
//!
//! One test binary with a module per area (`hostd_cli`, `images`, `init_boot`).

mod common;
mod hostd_cli;
mod images;
mod init_boot;
