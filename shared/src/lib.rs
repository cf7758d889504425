//! What crosses mkhost's build/host boundary, defined once.
//!
//! `mkhost` (the builder) writes files into an image that `init` and `hostd`
//! read at boot, and clients talk to `hostd` over its control socket. Each of
//! those formats lives here, as plain data with its parsers and checks, so
//! that both sides agree by construction:
//!
//! - [`boot_config`]: `/etc/mkhost/boot.json`, the image's boot configuration;
//! - [`container`]: what a container is asked to be (the `run` request, its
//!   limits and restart policy), its record as `ps` shows it, and the
//!   boot-time container manifest;
//! - [`network`]: container networks, published ports and attachments;
//! - [`images`]: what the image store reports;
//! - [`init_status`]: what init did with devices that appeared after boot;
//! - [`control`]: hostd's control protocol (requests, typed responses, line
//!   framing and the client side);
//! - [`registries`]: registry settings (profile, host.toml, hostd);
//! - [`state_disk`]: the state disk's settings and what init did with it;
//! - [`paths`]: the paths inside an image both sides name;
//! - [`glob`]: the shell-style wildcard matcher module sets and aliases use;
//! - [`fs`]: writing a file atomically;
//! - [`time`]: RFC 3339 timestamps.
//!
//! Nothing here implements the daemon, the store or the build: this crate
//! depends on no other crate of the workspace.

pub mod boot_config;
pub mod boot_security;
pub mod container;
pub mod control;
pub mod fs;
pub mod glob;
pub mod hex;
pub mod images;
pub mod init_status;
pub mod network;
pub mod paths;
pub mod percent;
pub mod registries;
pub mod state_disk;
pub mod sync;
pub mod time;
