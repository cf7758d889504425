//! Kernel modules: the module database and load plans ([`modules`]), loading
//! drivers for the devices present at boot ([`coldplug`]), reading kernel
//! [`uevent`]s, and answering the kernel's module autoloader as
//! `/sbin/modprobe` ([`modprobe`]).

pub mod coldplug;
pub mod modprobe;
pub mod modules;
pub mod uevent;
