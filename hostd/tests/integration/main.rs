//! Integration tests: the real `hostd` and `init` binaries, run as processes.
//!
//! One test binary with a module per area (`containers`, `docker_api`, `docker_diff`, `docker_interactive`,
//! `hostd_cli`, `images`, `init_boot`, `network`, `pull`, `reboot`, `volumes`).

mod common;
mod containers;
mod density;
mod docker_api;
mod docker_diff;
mod docker_interactive;
mod hostd_cli;
mod images;
mod init_boot;
mod network;
mod pull;
mod reboot;
mod volumes;
