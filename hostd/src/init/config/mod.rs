//! Where a host's settings come from: the kernel command line ([`cmdline`]),
//! the boot stick's `mkhost/host.toml` ([`bootdisk`], [`host_config`]) and
//! the image's `/etc/mkhost/boot.json` ([`mkhost_shared::boot_config`]), and
//! how they are merged (command line > host.toml > boot.json).

pub mod bootdisk;
pub mod cmdline;
pub mod host_config;
