//! The ACPI power button: watch the evdev devices named "Power Button" and
//! turn a KEY_POWER press into a shutdown request.
//!
//! The kernel's `button` driver reports the ACPI power button (QEMU's
//! `system_powerdown`, a server's front button) as an input device; `evdev`
//! exposes it as `/dev/input/eventN`. A thread reads `struct input_event`s
//! ([`parse_event`]) and, on a press, sends SIGPWR to PID 1, whose main loop
//! waits for signals and runs the shutdown.

use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::init::mounts::at;
use crate::os;

/// `EV_KEY`.
pub const EV_KEY: u16 = 1;
/// `KEY_POWER`.
pub const KEY_POWER: u16 = 116;
/// Size of `struct input_event` on 64-bit Linux (timeval + type + code + value).
pub const EVENT_SIZE: usize = 24;

/// One input event's type, code and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    /// `EV_*`.
    pub ty: u16,
    /// `KEY_*` etc.
    pub code: u16,
    /// 1 press, 0 release, 2 repeat.
    pub value: i32,
}

/// Parses one `struct input_event`.
pub fn parse_event(b: &[u8]) -> Option<InputEvent> {
    Some(InputEvent {
        ty: u16::from_ne_bytes(b.get(16..18)?.try_into().ok()?),
        code: u16::from_ne_bytes(b.get(18..20)?.try_into().ok()?),
        value: i32::from_ne_bytes(b.get(20..24)?.try_into().ok()?),
    })
}

/// Whether `e` is a power button press.
pub fn is_power_press(e: &InputEvent) -> bool {
    e.ty == EV_KEY && e.code == KEY_POWER && e.value == 1
}

/// `/dev/input/eventN` of every input device named "Power Button".
pub fn power_buttons(root: &Path) -> Vec<PathBuf> {
    let class = at(root, "/sys/class/input");
    let Ok(entries) = fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") {
                return None;
            }
            let label = fs::read_to_string(class.join(&name).join("device/name")).ok()?;
            (label.trim() == "Power Button").then(|| at(root, &format!("/dev/input/{name}")))
        })
        .collect();
    out.sort();
    out
}

/// Starts the watcher thread on `devices`; on a press it sends SIGPWR to
/// this process. Returns how many devices are watched.
pub fn watch(devices: &[PathBuf]) -> std::io::Result<usize> {
    let files: Vec<fs::File> = devices
        .iter()
        .filter_map(|d| fs::File::open(d).ok())
        .collect();
    let count = files.len();
    if count == 0 {
        return Ok(0);
    }
    std::thread::Builder::new()
        .name("power-button".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut files = files;
            let mut buf = [0u8; EVENT_SIZE * 16];
            loop {
                let ready = {
                    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
                    match os::poll_readable(&fds, None) {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                };
                for (i, is_ready) in ready.into_iter().enumerate() {
                    if !is_ready {
                        continue;
                    }
                    let Ok(n) = files[i].read(&mut buf) else {
                        continue;
                    };
                    let pressed = buf[..n]
                        .chunks_exact(EVENT_SIZE)
                        .filter_map(parse_event)
                        .any(|e| is_power_press(&e));
                    if pressed {
                        let pid = i32::try_from(std::process::id()).unwrap_or(1);
                        let _ = os::kill(pid, libc::SIGPWR);
                    }
                }
            }
        })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        b.extend_from_slice(&value.to_ne_bytes());
        b
    }

    #[test]
    fn parses_power_press() {
        let e = parse_event(&event(EV_KEY, KEY_POWER, 1)).unwrap();
        assert!(is_power_press(&e));
        assert!(!is_power_press(
            &parse_event(&event(EV_KEY, KEY_POWER, 0)).unwrap()
        ));
        assert!(!is_power_press(&parse_event(&event(0, 0, 0)).unwrap()));
        assert!(parse_event(&[0; 23]).is_none());
    }

    #[test]
    fn finds_power_buttons_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (ev, name) in [
            ("event0", "Power Button"),
            ("event1", "AT Keyboard"),
            ("event2", "Power Button"),
        ] {
            let d = dir.path().join("sys/class/input").join(ev).join("device");
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        fs::create_dir_all(dir.path().join("sys/class/input/input3")).unwrap();
        let found = power_buttons(dir.path());
        assert_eq!(
            found,
            [
                dir.path().join("dev/input/event0"),
                dir.path().join("dev/input/event2")
            ]
        );
    }
}
