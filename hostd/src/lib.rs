//! The library behind mkhost's two on-host programs.
//!
//! An mkhost image boots a kernel with an initramfs that holds little more than
//! two static binaries built from this crate:
//!
//! - `init` ([`init`]) is PID 1. It moves the root into a tmpfs ([`rootfs`]),
//!   mounts the API file systems and cgroup2 ([`mounts`]), reads the boot
//!   configuration the builder wrote ([`boot_config`]), the kernel command line
//!   ([`cmdline`]) and the boot stick's host.toml ([`bootdisk`],
//!   [`host_config`]), loads modules and coldplugs drivers ([`modules`],
//!   [`coldplug`]), applies sysctls ([`sysctl`]), brings up the network over
//!   netlink with its own DHCP client ([`network`], [`netlink`], [`dhcp`]),
//!   starts `hostd` and keeps it running ([`supervisor`]), offers a debug shell
//!   ([`shell`]), logs to the console and `/run/log` ([`logbuf`], [`timeline`])
//!   and shuts down on the power button or a signal ([`power`]). See
//!   docs/init.md.
//! - `hostd` ([`daemon`]) is the host daemon. It answers on a root-only unix
//!   socket ([`control`]), keeps OCI images ([`store`]), runs containers
//!   ([`containers`]: a zygote, one epoll monitor, restart policies,
//!   re-adoption after its own restart, boot-time containers) with its OCI
//!   runtime ([`runtime`], also `hostd oci`, runc-compatible).
//!
//! The layers, from the bottom: [`os`] is the system-call layer (wrappers on
//! rustix; the few hand-written `unsafe` calls left sit there and in the OCI
//! runtime's `runtime::sys`); [`boot_config`], [`timeline`] and [`control`] are
//! formats and protocols with pure, unit-tested cores; [`supervisor`] is a state
//! machine with its side effects behind a trait; [`init`] and [`daemon`] wire
//! them together. The binaries in `src/bin` only parse arguments and map errors
//! to exit codes. Release builds abort on panic; PID 1 catches that case in a
//! panic hook and halts instead of exiting, because a PID 1 exit panics the
//! kernel.

pub mod daemon;
pub mod init;
pub mod os;
pub mod runtime;

/// Version of `init` and `hostd` (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
