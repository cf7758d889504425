//! Linux security modules: the AppArmor profile and SELinux labels of a
//! container.
//!
//! `process.apparmorProfile` and `process.selinuxLabel` are applied the way
//! runc applies them: the init writes `exec <profile>` to
//! `/proc/thread-self/attr/apparmor/exec` (`attr/exec` on kernels without
//! the per-module directory), or the SELinux label to `attr/exec`, so that
//! its `execve` switches to them. `linux.mountLabel` becomes a
//! `context="..."` option of the container's file-system mounts (not `proc`,
//! `sysfs` or cgroups, which take no label). A profile or label that the
//! host cannot apply, because the module is not enabled, is refused before
//! anything is made: runc refuses it too (AppArmor when its init's write
//! fails, SELinux up front). Empty strings mean "none", as in runc.
//!
//! Which modules are enabled is read once per `create` ([`HostLsm::detect`]);
//! the rest is pure and takes the answer as an argument.

use std::ffi::CString;
use std::path::Path;

use super::spec::{Linux, Process};

/// A profile or label that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The module the field needs is not enabled on this host.
    #[error("{field}: {value:?} cannot be applied: {module} is not enabled on this host")]
    NotEnabled {
        /// `process.apparmorProfile`, ...
        field: &'static str,
        /// The profile or label.
        value: String,
        /// `AppArmor` or `SELinux`.
        module: &'static str,
    },
    /// The value holds a character it cannot hold.
    #[error("{field}: contains {what}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// `a NUL byte`, `a double quote`.
        what: &'static str,
    },
}

/// The security modules enabled on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostLsm {
    /// AppArmor is enabled.
    pub apparmor: bool,
    /// The kernel has `/proc/PID/attr/apparmor/` (5.8 and later); older
    /// ones take AppArmor's attributes in `/proc/PID/attr/`.
    pub apparmor_dir: bool,
    /// SELinux is enabled (`selinuxfs` is mounted).
    pub selinux: bool,
}

impl HostLsm {
    /// Reads what this host has: the module list in securityfs when it is
    /// mounted, AppArmor's `enabled` parameter, `selinuxfs`.
    pub fn detect() -> HostLsm {
        let listed = std::fs::read_to_string("/sys/kernel/security/lsm").ok();
        let listed = |name: &str| {
            listed
                .as_deref()
                .is_none_or(|l| l.trim().split(',').any(|m| m == name))
        };
        let apparmor = std::fs::read("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.starts_with(b"Y"))
            && listed("apparmor");
        HostLsm {
            apparmor,
            apparmor_dir: Path::new("/proc/self/attr/apparmor").is_dir(),
            selinux: Path::new("/sys/fs/selinux/enforce").exists() && listed("selinux"),
        }
    }
}

/// A write the init makes before `execve`: `value` into `path`, relative
/// to the host's `/proc`.
#[derive(Debug)]
pub struct AttrWrite {
    /// E.g. `thread-self/attr/apparmor/exec`.
    pub path: CString,
    /// E.g. `exec docker-default`.
    pub value: CString,
    /// The field it comes from, for messages.
    pub field: &'static str,
}

/// What the container's labels turn into.
#[derive(Debug, Default)]
pub struct Labels {
    /// Attribute writes for the init, in order.
    pub exec: Vec<AttrWrite>,
    /// `context="..."` for the mount options, with SELinux.
    pub mount_context: Option<String>,
}

fn given(value: Option<&String>) -> Option<&str> {
    value.map(String::as_str).filter(|v| !v.is_empty())
}

fn cstring(field: &'static str, s: String) -> Result<CString, LsmError> {
    CString::new(s).map_err(|_| LsmError::Invalid {
        field,
        what: "a NUL byte",
    })
}

/// Checks the spec's profile and labels against what `host` has.
pub fn labels(process: &Process, linux: &Linux, host: HostLsm) -> Result<Labels, LsmError> {
    let mut out = Labels::default();
    let refuse = |field, value: &str, module| LsmError::NotEnabled {
        field,
        value: value.to_string(),
        module,
    };
    if let Some(profile) = given(process.apparmor_profile.as_ref()) {
        let field = "process.apparmorProfile";
        if !host.apparmor {
            return Err(refuse(field, profile, "AppArmor"));
        }
        let path = if host.apparmor_dir {
            "thread-self/attr/apparmor/exec"
        } else {
            "thread-self/attr/exec"
        };
        out.exec.push(AttrWrite {
            path: cstring(field, path.into())?,
            value: cstring(field, format!("exec {profile}"))?,
            field,
        });
    }
    if let Some(label) = given(process.selinux_label.as_ref()) {
        let field = "process.selinuxLabel";
        if !host.selinux {
            return Err(refuse(field, label, "SELinux"));
        }
        out.exec.push(AttrWrite {
            path: cstring(field, "thread-self/attr/exec".into())?,
            value: cstring(field, label.to_string())?,
            field,
        });
    }
    if let Some(label) = given(linux.mount_label.as_ref()) {
        let field = "linux.mountLabel";
        if !host.selinux {
            return Err(refuse(field, label, "SELinux"));
        }
        if label.contains('"') {
            return Err(LsmError::Invalid {
                field,
                what: "a double quote",
            });
        }
        out.mount_context = Some(format!("context=\"{label}\""));
    }
    Ok(out)
}

/// Whether mounts of this file-system type carry the mount label (runc's
/// rule: not `proc` and `sysfs`, whose contexts the kernel sets itself, nor
/// cgroups).
pub fn labels_mounts_of(fstype: &str) -> bool {
    !matches!(fstype, "proc" | "sysfs" | "cgroup" | "cgroup2")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(apparmor: &str, selinux: &str, mount: &str) -> (Process, Linux) {
        let process = Process {
            apparmor_profile: Some(apparmor.into()),
            selinux_label: Some(selinux.into()),
            ..Default::default()
        };
        let linux = Linux {
            mount_label: Some(mount.into()),
            ..Default::default()
        };
        (process, linux)
    }

    #[test]
    fn empty_values_need_nothing() {
        let (p, l) = spec("", "", "");
        let out = labels(&p, &l, HostLsm::default()).unwrap();
        assert!(out.exec.is_empty() && out.mount_context.is_none());
    }

    #[test]
    fn refused_without_the_module() {
        let (p, l) = spec("docker-default", "", "");
        let e = labels(&p, &l, HostLsm::default()).unwrap_err().to_string();
        assert_eq!(
            e,
            "process.apparmorProfile: \"docker-default\" cannot be applied: \
             AppArmor is not enabled on this host"
        );
        let (p, l) = spec("", "system_u:system_r:container_t:s0", "");
        let e = labels(&p, &l, HostLsm::default()).unwrap_err().to_string();
        assert!(e.starts_with("process.selinuxLabel:") && e.contains("SELinux"));
        let (p, l) = spec("", "", "system_u:object_r:container_file_t:s0");
        let apparmor_only = HostLsm {
            apparmor: true,
            ..Default::default()
        };
        let e = labels(&p, &l, apparmor_only).unwrap_err().to_string();
        assert!(e.starts_with("linux.mountLabel:"), "{e}");
    }

    #[test]
    fn applied_where_enabled() {
        let (p, l) = spec("docker-default", "", "");
        let host = HostLsm {
            apparmor: true,
            apparmor_dir: true,
            selinux: false,
        };
        let out = labels(&p, &l, host).unwrap();
        assert_eq!(
            out.exec[0].path.to_str(),
            Ok("thread-self/attr/apparmor/exec")
        );
        assert_eq!(out.exec[0].value.to_str(), Ok("exec docker-default"));
        let old_kernel = HostLsm {
            apparmor_dir: false,
            ..host
        };
        let out = labels(&p, &l, old_kernel).unwrap();
        assert_eq!(out.exec[0].path.to_str(), Ok("thread-self/attr/exec"));

        let (p, l) = spec("", "u:r:t:s0", "u:object_r:f:s0");
        let host = HostLsm {
            selinux: true,
            ..Default::default()
        };
        let out = labels(&p, &l, host).unwrap();
        assert_eq!(out.exec[0].path.to_str(), Ok("thread-self/attr/exec"));
        assert_eq!(out.exec[0].value.to_str(), Ok("u:r:t:s0"));
        assert_eq!(
            out.mount_context.as_deref(),
            Some("context=\"u:object_r:f:s0\"")
        );
        assert!(labels_mounts_of("tmpfs") && !labels_mounts_of("proc"));
    }
}
