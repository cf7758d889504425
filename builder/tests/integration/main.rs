//! mkhost's integration tests, one module per area. They run the real `mkhost`
//! binary on the shipped profiles with Debian's kernel and stub (fetched with apt
//! into the cache), check artifacts with the standard tools, and boot them in QEMU.
//! The pull tests run a real registry from `mkhost_registry::testkit`.

mod boot;
mod build;
mod certs;
mod containers;
mod containers_guest;
mod docker_guest;
mod guest_runtime;
mod host;
mod hostile;
mod hotplug;
mod inspect;
mod netboot;
mod network_guest;
mod pulls;
mod secure_boot;
mod secure_boot_guest;
mod state_guest;
mod support;
mod tools;
