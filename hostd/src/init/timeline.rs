//! Console output of `init`: the boot timeline and the final ready line.
//!
//! Tests (and people) watch the console for these lines, so their shape is part
//! of the interface (see docs/interfaces.md):
//!
//! ```text
//! mkhost: +<ms>ms <phase>
//! mkhost: ready hostname=<h> profile=<p> kernel=<release> boot_ms=<ms> modules=<loaded>/<total> coldplug=<n> addresses=<iface>:<addr>/<prefix>,... state=<device>(<fs>[,formatted])|ram(<why>)
//! mkhost: boot security: secure_boot=<state> pcr11_sha256=<hex>|none tpm=<tpm> signed_policy=<match|mismatch|none>
//! mkhost: error: <message>
//! mkhost: warning: <message>
//! ```
//!
//! `<ms>` counts milliseconds since the kernel started (`CLOCK_BOOTTIME`). The
//! formatting functions are pure; the `emit`-style functions write to stdout and
//! ignore write errors, because a PID 1 must never die over a console problem
//! (`println!` panics when the write fails).

use std::io::Write;

/// Prefix of every console line `init` writes.
pub const PREFIX: &str = "mkhost:";

/// What the ready line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The hostname that was set.
    pub hostname: String,
    /// The image's profile.
    pub profile: String,
    /// The kernel release from the boot config.
    pub kernel: String,
    /// Milliseconds from kernel start until hostd answered.
    pub boot_ms: u64,
    /// Modules loaded (including ones that were already loaded).
    pub modules_loaded: usize,
    /// Modules the boot config lists.
    pub modules_total: usize,
    /// Modules coldplug loaded for the devices found.
    pub coldplug: usize,
    /// Configured addresses, `eth0:10.0.2.15/24`.
    pub addresses: Vec<String>,
    /// Where state lives: `/dev/vdb(ext4,formatted)` or `ram(why)`.
    pub state: String,
}

/// `mkhost: +<ms>ms <phase>`.
pub fn format_phase(ms: u64, phase: &str) -> String {
    format!("{PREFIX} +{ms}ms {phase}")
}

/// `mkhost: ready hostname=.. profile=.. kernel=.. boot_ms=.. modules=../..
/// coldplug=.. addresses=.. state=..` (`addresses=-` when there are none).
pub fn format_ready(info: &ReadyInfo) -> String {
    format!(
        "{PREFIX} ready hostname={} profile={} kernel={} boot_ms={} modules={}/{} coldplug={} addresses={} state={}",
        field(&info.hostname),
        field(&info.profile),
        field(&info.kernel),
        info.boot_ms,
        info.modules_loaded,
        info.modules_total,
        info.coldplug,
        field(&info.addresses.join(",")),
        field(&info.state)
    )
}

/// `mkhost: error: <message>`.
pub fn format_error(message: &str) -> String {
    format!("{PREFIX} error: {message}")
}

/// `mkhost: warning: <message>`.
pub fn format_warning(message: &str) -> String {
    format!("{PREFIX} warning: {message}")
}

/// Makes `value` safe as one `key=value` token: whitespace and control
/// characters become `_`, and an empty value becomes `-`.
pub fn field(value: &str) -> String {
    if value.is_empty() {
        return "-".to_string();
    }
    value
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Writes one line to stdout (the console), ignoring errors.
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Emits a timeline line stamped with the current boot time.
pub fn phase(phase: &str) {
    emit(&format_phase(crate::os::boottime_ms(), phase));
}

/// Emits an error line.
pub fn error(message: &str) {
    emit(&format_error(message));
}

/// Emits a warning line.
pub fn warning(message: &str) {
    emit(&format_warning(message));
}

/// Emits an informational line: `mkhost: <message>`.
pub fn info(message: &str) {
    emit(&format!("{PREFIX} {message}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_line() {
        assert_eq!(
            format_phase(1234, "filesystems mounted"),
            "mkhost: +1234ms filesystems mounted"
        );
        assert_eq!(format_phase(0, "init started"), "mkhost: +0ms init started");
    }

    #[test]
    fn ready_line() {
        let info = ReadyInfo {
            hostname: "mkhost-qemu".into(),
            profile: "qemu".into(),
            kernel: "6.1.0-56-amd64".into(),
            boot_ms: 2870,
            modules_loaded: 11,
            modules_total: 12,
            coldplug: 2,
            addresses: vec!["eth0:10.0.2.15/24".into(), "eth1:10.1.0.2/16".into()],
            state: "/dev/vdb(ext4,formatted)".into(),
        };
        assert_eq!(
            format_ready(&info),
            "mkhost: ready hostname=mkhost-qemu profile=qemu kernel=6.1.0-56-amd64 \
             boot_ms=2870 modules=11/12 coldplug=2 addresses=eth0:10.0.2.15/24,eth1:10.1.0.2/16 \
             state=/dev/vdb(ext4,formatted)"
        );
    }

    #[test]
    fn ready_fields_stay_single_tokens() {
        let info = ReadyInfo {
            hostname: String::new(),
            profile: "my profile\n".into(),
            kernel: "k".into(),
            boot_ms: 1,
            modules_loaded: 0,
            modules_total: 0,
            coldplug: 0,
            addresses: vec![],
            state: "ram(no state disk configured)".into(),
        };
        assert_eq!(
            format_ready(&info),
            "mkhost: ready hostname=- profile=my_profile_ kernel=k boot_ms=1 modules=0/0 \
             coldplug=0 addresses=- state=ram(no_state_disk_configured)"
        );
    }

    #[test]
    fn error_and_warning_lines() {
        assert_eq!(format_error("boom"), "mkhost: error: boom");
        assert_eq!(format_warning("hmm"), "mkhost: warning: hmm");
    }
}
