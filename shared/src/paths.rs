//! Paths inside a host image that both sides must agree on: the builder
//! writes these files, init and hostd read them.

/// The boot configuration mkhost writes and init reads.
pub const BOOT_CONFIG: &str = "/etc/mkhost/boot.json";

/// The boot-time container manifest mkhost writes and hostd reads.
pub const BOOT_MANIFEST: &str = "/etc/hostd/containers.json";

/// Where mkhost embeds boot-time image archives (`<sha256>.tar`).
pub const BOOT_IMAGES_DIR: &str = "/usr/share/hostd/images";

/// The host daemon's binary.
pub const HOSTD: &str = "/usr/bin/hostd";

/// PID 1; `/sbin/modprobe` links to it.
pub const INIT: &str = "/init";

/// hostd's control socket on a booted host.
pub const CONTROL_SOCKET: &str = "/run/hostd/hostd.sock";

/// hostd's Docker Engine API socket on a booted host (root only).
pub const DOCKER_SOCKET: &str = "/run/hostd/docker.sock";

/// Where the docker CLI looks by default: a link to [`DOCKER_SOCKET`].
pub const DOCKER_SOCKET_LINK: &str = "/var/run/docker.sock";

/// The TCP port of the Docker Engine API, mutual TLS only.
pub const DOCKER_TLS_PORT: u16 = 2376;

/// The server side of the Docker API's mutual TLS, as init hands it to
/// hostd: a directory (0700) with `ca.pem` (the CA clients must be signed
/// by), `cert.pem` and `key.pem` (0600). Without all three, hostd opens no
/// TCP listener.
pub const DOCKER_TLS: &str = "/run/mkhost/docker-tls";

/// Where an image carries the profile's `[docker] tls_dir` (dir 0700:
/// `ca.pem`, `cert.pem`, `key.pem` 0600); init copies it to
/// [`DOCKER_TLS`] unless host.toml gives its own.
pub const DOCKER_TLS_IMAGE: &str = "/etc/mkhost/docker-tls";

/// The files of [`DOCKER_TLS`] and [`DOCKER_TLS_IMAGE`]: the CA clients
/// must be signed by, the server's certificate and its key.
pub const DOCKER_TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

/// hostd's image store on a booted host.
pub const STORE: &str = "/var/lib/hostd";

/// hostd's named volumes (`<name>/_data`) on a booted host: RAM unless a
/// state disk is mounted here.
pub const VOLUMES: &str = "/var/lib/hostd-volumes";

/// The host directory under which bind mounts (`-v /srv/x:/x`) are allowed
/// by default.
pub const BIND_ROOT: &str = "/srv";

/// hostd's run-time state (containers, zygote socket) on a booted host.
pub const STATE: &str = "/run/hostd";

/// The state root of `hostd oci` (runc's `--root`).
pub const OCI_ROOT: &str = "/run/hostd/oci";

/// init's device status ([`crate::init_status`]).
pub const INIT_STATUS: &str = "/run/mkhost/init.json";

/// The container networks init hands hostd (profile and host.toml merged).
pub const NETWORKS: &str = "/run/mkhost/networks.json";

/// The registry settings init hands hostd (boot.json's, then host.toml's,
/// credentials included; mode 0600).
pub const REGISTRIES: &str = "/run/mkhost/registries.json";

/// init's log of its own and hostd's lines.
pub const LOG: &str = "/run/log/hostd.log";

/// The path `p` relative to the image root (no leading `/`), as cpio entries
/// name it.
pub fn in_archive(p: &str) -> &str {
    p.trim_start_matches('/')
}

/// Where init mounts the state disk.
pub const STATE_DISK: &str = "/var/lib/mkhost-state";

/// What init found about Secure Boot and PCR 11
/// ([`crate::boot_security::BootSecurity`]).
pub const BOOT_SECURITY: &str = "/run/mkhost/boot-security.json";

/// What init did about the state disk ([`crate::state_disk::StateReport`]).
pub const STATE_REPORT: &str = "/run/mkhost/state.json";

/// Container records and writable layers (persistent with a state disk).
pub const CONTAINERS: &str = "/var/lib/hostd-containers";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_relative() {
        assert_eq!(in_archive(BOOT_CONFIG), "etc/mkhost/boot.json");
        assert_eq!(in_archive(BOOT_IMAGES_DIR), "usr/share/hostd/images");
        for p in [
            BOOT_CONFIG,
            BOOT_MANIFEST,
            BOOT_IMAGES_DIR,
            HOSTD,
            INIT,
            CONTROL_SOCKET,
            INIT_STATUS,
        ] {
            assert!(p.starts_with('/'), "{p}");
        }
    }
}
