#![recursion_limit = "256"]
//! The library behind mkhost's two on-host programs.
//!
//! An mkhost image boots a kernel with an initramfs that holds little more than
//! two static binaries built from this crate:
//!
//! - `init` ([`init`]) is PID 1. It moves the root into a tmpfs, mounts the
//!   API file systems and cgroup2, reads its configuration (the image's
//!   boot.json, the kernel command line and the boot stick's host.toml:
//!   [`init::config`]), loads modules and coldplugs drivers
//!   ([`init::drivers`]), applies sysctls, brings up the network over netlink
//!   with its own DHCP client ([`init::net`]), starts `hostd` and keeps it
//!   running ([`init::supervisor`]), offers a debug shell, logs to the console
//!   and `/run/log`, and shuts down on the power button or a signal. See
//!   docs/init.md.
//! - `hostd` ([`daemon`]) is the host daemon. It answers on a root-only unix
//!   socket ([`daemon::server`], speaking [`mkhost_shared::control`]), keeps
//!   OCI images ([`mkhost_store`]), runs containers ([`daemon::containers`]
//!   through [`backend`]: a zygote, one epoll monitor, restart policies,
//!   re-adoption after its own restart, boot-time containers) with its OCI
//!   runtime ([`runtime`], also `hostd oci`, runc-compatible). [`client`] is
//!   the command-line side of the same socket.
//!
//! The layers, from the bottom: [`os`] is the system-call layer (wrappers on
//! rustix; the few hand-written `unsafe` calls left sit there and in the OCI
//! runtime's `runtime::sys`); [`runtime`] and [`net`] (rtnetlink,
//! nf_tables, network namespaces, DHCP) build on it; [`backend`] makes
//! containers out of them behind one trait (the Linux backend: the zygote,
//! the OCI config, roots, limits, stats, networking's kernel side), which is
//! all of the kernel the [`daemon`] sees;
//! [`init`] and [`daemon`] wire everything together and never use each other
//! (init talks to hostd over the socket like any client). The formats that
//! cross the build/host boundary live in the `mkhost-shared` crate. The
//! binaries in `src/bin` only parse arguments and dispatch. Release builds
//! abort on panic; PID 1 catches that case in a panic hook and halts instead
//! of exiting, because a PID 1 exit panics the kernel. docs/architecture.md
//! draws the whole picture.

pub mod backend;
pub mod client;
pub mod daemon;
pub mod init;
pub mod log;
pub mod net;
pub mod os;
pub mod runtime;

/// Version of `init` and `hostd` (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
