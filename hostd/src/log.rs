//! The daemon's own lines: `hostd: <message>` on stderr, which init's log
//! pump timestamps, shows on the console and keeps in `/run/log/hostd.log`.
//! Every part of the daemon and its backend logs through here, so nothing
//! below the daemon's entry point needs to know how it is run.

use std::io::Write;

/// Writes `hostd: <message>` to stderr, ignoring errors (the console may be gone).
pub fn log(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "hostd: {message}");
}
