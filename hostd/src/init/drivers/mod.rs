//! Kernel modules: the module database and load plans ([`modules`]), loading
//! drivers for the devices present at boot ([`coldplug`]) and for those that
//! appear later ([`hotplug`], reading kernel [`uevent`]s; [`absent`] names
//! the modules a device needs that the image lacks), and answering the
//! kernel's module autoloader as `/sbin/modprobe` ([`modprobe`]).

pub mod absent;
pub mod coldplug;
pub mod hotplug;
pub mod modprobe;
pub mod modules;
pub mod uevent;
