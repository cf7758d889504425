//! What the daemon reads about running containers through `/proc`: their
//! processes (`docker top`) and files in their roots (`docker exec
//! --user`), and their terminals' sizes.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use crate::backend::ProcessRow;

/// The processes of the container whose init is `pid`: those in its PID
/// namespace, from `/proc`.
pub fn processes(pid: i32) -> Vec<ProcessRow> {
    let namespace = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(wanted) = namespace(&pid.to_string()) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit())
                || namespace(&name).as_ref() != Some(&wanted)
            {
                continue;
            }
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .unwrap_or("0")
                .to_string();
            let cmd = std::fs::read(format!("/proc/{name}/cmdline"))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            rows.push(ProcessRow {
                pid: name,
                ppid,
                command: cmd,
            });
        }
    }
    rows
}

/// Reads `path` in the root of the container whose init is `pid`
/// (`/proc/<pid>/root`), without following a link out of it; at most
/// 4 MiB.
pub fn read_in_container(pid: i32, path: &str) -> Option<String> {
    use std::io::Read;
    let root = format!("/proc/{pid}/root");
    let mut file = crate::runtime::sys::open_in_root(Path::new(&root), path).ok()?;
    let mut text = String::new();
    file.by_ref()
        .take(4 * 1024 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Sets a terminal's size (`TIOCSWINSZ`).
pub fn resize_terminal(terminal: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    crate::runtime::sys::set_window_size(terminal, rows, cols).map_err(io::Error::from)
}
