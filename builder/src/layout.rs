//! The paths of the initramfs that are mkhost's own: the files the build
//! writes into every image and the directories init mounts over at boot. One
//! list, [`OWNED`]: the build writes these paths by these names, the profile
//! check refuses a `[[files]]` or `[[binaries]]` destination that would
//! replace, hide in or stand in the way of one of them ([`claim`]), and a
//! test of the build checks that everything it writes on its own is listed.
//!
//! What the build writes only for some profiles (firmware the modules name,
//! the debug shell's busybox, the libraries of `[[binaries]]`) is checked
//! when the initramfs is assembled, against what is actually there.

use mkhost_shared::paths;

/// `/sbin/modprobe`: the kernel runs it to load modules; a link to `/init`.
pub const MODPROBE: &str = "/sbin/modprobe";
/// `/etc/os-release`, made from the profile.
pub const OS_RELEASE: &str = "/etc/os-release";
/// `/etc/hostname`, made from the profile's `hostname`.
pub const HOSTNAME: &str = "/etc/hostname";
/// Where the kernel modules go (`/lib/modules/<release>/...`).
pub const MODULES: &str = "/lib/modules";
/// Where firmware for the modules goes.
pub const FIRMWARE: &str = "/lib/firmware";
/// The device nodes every image carries before devtmpfs is mounted.
pub const CONSOLE: &str = "/dev/console";
pub const NULL: &str = "/dev/null";

/// How much of the tree an entry claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Exactly this path (a file, link or device).
    File,
    /// This directory and everything below it.
    Tree,
}

/// One path that is mkhost's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    /// Absolute, as in the booted host.
    pub path: &'static str,
    pub claim: Claim,
    /// What it is, for messages.
    pub what: &'static str,
}

/// The directories init mounts file systems on at boot (see
/// `hostd/src/init/mounts.rs`): whatever the initramfs holds there is hidden.
/// The build creates them empty.
pub const MOUNTED: [&str; 5] = ["/dev", "/proc", "/sys", "/run", "/tmp"];

/// Every path that is mkhost's own in every image.
pub const OWNED: &[Owned] = &[
    Owned {
        path: paths::INIT,
        claim: Claim::File,
        what: "PID 1, mkhost's init",
    },
    Owned {
        path: MODPROBE,
        claim: Claim::File,
        what: "the kernel's module loader, a link to /init",
    },
    Owned {
        path: paths::HOSTD,
        claim: Claim::File,
        what: "the host daemon",
    },
    Owned {
        path: paths::BOOT_CONFIG,
        claim: Claim::File,
        what: "init's boot configuration, made from the profile",
    },
    Owned {
        path: paths::BOOT_MANIFEST,
        claim: Claim::File,
        what: "the boot-time containers hostd starts, made from the [[container]] tables",
    },
    Owned {
        path: paths::BOOT_IMAGES_DIR,
        claim: Claim::Tree,
        what: "the boot-time container images, from the [[container]] tables",
    },
    Owned {
        path: paths::DOCKER_TLS_IMAGE,
        claim: Claim::Tree,
        what: "the Docker API's server certificate and key, from [docker] tls_dir",
    },
    Owned {
        path: OS_RELEASE,
        claim: Claim::File,
        what: "made from the profile",
    },
    Owned {
        path: HOSTNAME,
        claim: Claim::File,
        what: "made from the profile's hostname",
    },
    Owned {
        path: MODULES,
        claim: Claim::Tree,
        what: "the kernel modules chosen by [modules], with their index files",
    },
    Owned {
        path: "/dev",
        claim: Claim::Tree,
        what: "devtmpfs is mounted on it at boot",
    },
    Owned {
        path: "/proc",
        claim: Claim::Tree,
        what: "procfs is mounted on it at boot",
    },
    Owned {
        path: "/sys",
        claim: Claim::Tree,
        what: "sysfs is mounted on it at boot",
    },
    Owned {
        path: "/run",
        claim: Claim::Tree,
        what: "a tmpfs is mounted on it at boot",
    },
    Owned {
        path: "/tmp",
        claim: Claim::Tree,
        what: "a tmpfs is mounted on it at boot",
    },
];

/// How a destination meets an owned path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// It is the owned path.
    Same(&'static Owned),
    /// It lies under an owned tree, or would need an owned file to be a
    /// directory.
    Inside(&'static Owned),
    /// It is a directory that holds an owned path: a file cannot replace it.
    Holds(&'static Owned),
}

impl Conflict {
    /// Why `dest` (absolute) cannot be placed, for a message; `entry` names
    /// the kind of profile entry (`[[files]]`).
    pub fn explain(&self, dest: &str, entry: &str) -> String {
        match self {
            Conflict::Same(owned) => format!(
                "{} is mkhost's own ({}); a {entry} entry may not replace it: choose another dest",
                owned.path, owned.what
            ),
            Conflict::Inside(owned) if owned.claim == Claim::Tree => format!(
                "{dest} is under {}, which is mkhost's own ({}): choose another dest",
                owned.path, owned.what
            ),
            Conflict::Inside(owned) => format!(
                "{dest} cannot be placed: {} is mkhost's own ({}) and not a directory",
                owned.path, owned.what
            ),
            Conflict::Holds(owned) => format!(
                "{dest} is a directory in the image holding mkhost's own {} ({}); a file cannot replace it",
                owned.path, owned.what
            ),
        }
    }
}

/// Whether `dest` (with or without its leading `/`, no `.`/`..` or empty
/// components) collides with a path of [`OWNED`].
pub fn claim(dest: &str) -> Option<Conflict> {
    let dest = dest.trim_start_matches('/');
    let under = |path: &str, dir: &str| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    OWNED.iter().find_map(|owned| {
        let path = paths::in_archive(owned.path);
        if dest == path {
            Some(Conflict::Same(owned))
        } else if under(dest, path) {
            Some(Conflict::Inside(owned))
        } else if under(path, dest) {
            Some(Conflict::Holds(owned))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims() {
        assert_eq!(claim("/init"), Some(Conflict::Same(&OWNED[0])));
        assert_eq!(claim("usr/bin/hostd"), Some(Conflict::Same(&OWNED[2])));
        assert!(matches!(claim("/init/x"), Some(Conflict::Inside(o)) if o.path == "/init"));
        assert!(
            matches!(claim("/lib/modules/6.1/x.ko"), Some(Conflict::Inside(o)) if o.path == MODULES)
        );
        assert!(matches!(claim("/usr"), Some(Conflict::Holds(o)) if o.path == paths::HOSTD));
        assert!(matches!(claim("/dev/console"), Some(Conflict::Inside(o)) if o.path == "/dev"));
        for free in [
            "/initrd",
            "/usr/bin/hostdx",
            "/etc/motd",
            "/lib/firmware/x.bin",
            "/devices",
        ] {
            assert_eq!(claim(free), None, "{free}");
        }
        for owned in OWNED {
            assert!(owned.path.starts_with('/') && !owned.path.ends_with('/'));
        }
        for mounted in MOUNTED {
            assert!(OWNED
                .iter()
                .any(|o| o.path == mounted && o.claim == Claim::Tree));
        }
    }
}
