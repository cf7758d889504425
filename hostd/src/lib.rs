//! The library behind mkhost's two on-host programs.
//!
//! An mkhost image boots a kernel with an initramfs that holds little more than
//! two static binaries built from this crate:
//!
//! - `init` ([`init`]) is PID 1. It mounts the API file systems, reads the boot
//!   configuration the builder wrote ([`boot_config`]), sets the hostname, loads
//!   the kernel modules, starts `hostd` and keeps it running ([`supervisor`]),
//!   reporting progress as console lines ([`timeline`]) that tests wait for.
//! - `hostd` ([`daemon`]) is the host daemon. Today it answers status requests
//!   on a root-only unix socket ([`control`]); it will grow into the container
//!   runtime.
//!
//! The layers, from the bottom: [`sys`] is the only module with `unsafe` (small
//! wrappers around libc calls); [`boot_config`], [`timeline`] and [`control`] are
//! formats and protocols with pure, unit-tested cores; [`supervisor`] is a state
//! machine with its side effects behind a trait; [`init`] and [`daemon`] wire
//! them together. The binaries in `src/bin` only parse arguments and map errors
//! to exit codes. Release builds abort on panic; PID 1 catches that case in a
//! panic hook and halts instead of exiting, because a PID 1 exit panics the
//! kernel.

pub mod boot_config;
pub mod control;
pub mod daemon;
pub mod init;
pub mod supervisor;
pub mod sys;
pub mod timeline;

/// Version of `init` and `hostd` (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
