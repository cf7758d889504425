//! The client side of `hostd`'s commands: each sends one request over the
//! control socket ([`mkhost_shared::control`]) and prints the typed answer for
//! a person (tables like docker's) or as JSON. Exit codes: 0 on success, 1
//! when the daemon or the store says no or cannot be reached.

mod pull_view;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use mkhost_shared::container::{Record, RunRequest};
use mkhost_shared::control::{self, Request, Response};
use mkhost_shared::images::ImageSummary;

/// How long `hostd status` waits for an answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a container command and prints its answer.
pub fn container(socket: &Path, request: &Request) -> ExitCode {
    client(socket, request, request.client_timeout(), |response| {
        match response {
            Response::Started(id) => println!("{id}"),
            Response::Logs(text) => print!("{text}"),
            Response::Container(record) => println!("{}", record.id),
            Response::Ps(rows) => print!("{}", ps_table(&rows)),
            Response::Ports(ports) => {
                for port in ports {
                    println!("{port}");
                }
            }
            other => return Err(unexpected(&other)),
        }
        Ok(())
    })
}

/// What `text` (the whole log) has after the line `last` (printed before):
/// everything if `last` is gone (rotated away) or none was printed. Lines
/// carry nanosecond timestamps, so a line is found again exactly.
fn log_after<'t>(text: &'t str, last: Option<&str>) -> &'t str {
    let Some(last) = last else { return text };
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        if line.trim_end_matches('\n') == last {
            return &text[at..];
        }
    }
    text
}

/// `logs -f`: prints the log, then polls for more until the container is
/// no longer running (or the daemon goes away).
pub fn follow_logs(socket: &Path, name: &str) -> ExitCode {
    use std::io::Write;
    let mut last: Option<String> = None;
    loop {
        let logs = Request::Logs {
            name: name.to_string(),
        };
        let text = match control::request(socket, &logs, logs.client_timeout()) {
            Ok(Response::Logs(text)) => text,
            Ok(Response::Error(message)) => {
                eprintln!("hostd: {message}");
                return ExitCode::FAILURE;
            }
            Ok(other) => {
                eprintln!("hostd: {}", unexpected(&other));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("hostd: {e}");
                return ExitCode::FAILURE;
            }
        };
        let new = log_after(&text, last.as_deref());
        // Only whole lines: a half-written last line comes with the next poll.
        let whole = &new[..new.rfind('\n').map_or(0, |i| i + 1)];
        if !whole.is_empty() {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(whole.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::SUCCESS; // the reader went away
            }
            last = whole.lines().last().map(str::to_string);
        }
        let running = match control::request(socket, &Request::Ps, Request::Ps.client_timeout()) {
            Ok(Response::Ps(rows)) => rows
                .iter()
                .any(|r| (r.name == name || r.id.starts_with(name)) && r.status != "exited"),
            _ => false,
        };
        if !running && whole.is_empty() {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `run`: starts the container; with `detach`, prints its id. Otherwise
/// prints its stdout and stderr lines to ours as they come and answers its
/// exit code, as `docker run` does (125 when the daemon refuses the run,
/// 127 or 126 when the command is not found or not executable); `--rm`
/// then removes it.
pub fn run(socket: &Path, request: &RunRequest, detach: bool) -> ExitCode {
    let mut sent = request.clone();
    // In the foreground this client removes the container once it has
    // printed everything; the daemon would race it for the log.
    sent.auto_remove = request.auto_remove && detach;
    let run = Request::Run(Box::new(sent));
    let id = match control::request(socket, &run, run.client_timeout()) {
        Ok(Response::Started(id)) => id,
        Ok(Response::Error(message)) => {
            eprintln!("hostd: {message}");
            return ExitCode::from(125);
        }
        Ok(Response::ExecFailed { error, cause }) => {
            eprintln!("hostd: {error}");
            return ExitCode::from(cause.exit_code());
        }
        Ok(other) => {
            eprintln!("hostd: {}", unexpected(&other));
            return ExitCode::from(125);
        }
        Err(e) => {
            eprintln!("hostd: {e}");
            return ExitCode::from(125);
        }
    };
    if detach {
        println!("{id}");
        return ExitCode::SUCCESS;
    }
    let code = match attach(socket, &id) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostd: {e}");
            return ExitCode::from(125);
        }
    };
    if request.auto_remove {
        let rm = Request::Rm {
            name: id.clone(),
            force: false,
        };
        if let Ok(Response::Error(e)) | Err(e) =
            control::request(socket, &rm, rm.client_timeout()).map_err(|e| e.to_string())
        {
            eprintln!("hostd: cannot remove {id}: {e}");
        }
    }
    // Exit codes are 0..=255; a negative one (never reaped) is a failure.
    ExitCode::from(u8::try_from(code).unwrap_or(125))
}

/// Prints the log of container `id` to stdout and stderr, by stream,
/// until it has exited for good; answers its exit code.
fn attach(socket: &Path, id: &str) -> Result<i32, String> {
    let mut last: Option<String> = None;
    loop {
        let wait = Request::Wait {
            name: id.to_string(),
            timeout_ms: 200,
        };
        let record = match control::request(socket, &wait, wait.client_timeout()) {
            Ok(Response::Container(record)) => record,
            Ok(Response::Error(message)) => return Err(message),
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => return Err(e.to_string()),
        };
        let logs = Request::Logs {
            name: id.to_string(),
        };
        let text = match control::request(socket, &logs, logs.client_timeout()) {
            Ok(Response::Logs(text)) => text,
            Ok(Response::Error(message)) => return Err(message),
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => return Err(e.to_string()),
        };
        let new = log_after(&text, last.as_deref());
        let whole = &new[..new.rfind('\n').map_or(0, |i| i + 1)];
        print_by_stream(whole);
        if let Some(line) = whole.lines().last() {
            last = Some(line.to_string());
        }
        if record.status == "exited" {
            return Ok(record.exit_code.unwrap_or(-1));
        }
    }
}

/// Writes each `TIME STREAM TEXT` log line's text to stdout or stderr.
fn print_by_stream(lines: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for line in lines.lines() {
        let mut parts = line.splitn(3, ' ');
        let (_time, stream, text) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
        let sink: &mut dyn Write = if stream == Some("stderr") {
            &mut err
        } else {
            &mut out
        };
        let _ = writeln!(sink, "{text}");
    }
    let _ = out.flush();
    let _ = err.flush();
}

/// `ps`: a table, or every record as JSON.
pub fn ps(socket: &Path, json: bool) -> ExitCode {
    client(
        socket,
        &Request::Ps,
        Request::Ps.client_timeout(),
        |response| {
            let Response::Ps(rows) = response else {
                return Err(unexpected(&response));
            };
            if json {
                let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", ps_table(&rows));
            }
            Ok(())
        },
    )
}

/// `pull REF`: progress on stderr while it runs (bars on a terminal, a
/// line per blob otherwise), then what was fetched and what was there
/// already.
pub fn pull(socket: &Path, reference: &str) -> ExitCode {
    let request = Request::Pull {
        reference: reference.to_string(),
    };
    let watcher = mkhost_registry::Reference::parse(reference)
        .ok()
        .and_then(|r| {
            pull_view::Watcher::start(socket, r.canonical(), std::io::stderr().is_terminal())
        });
    let answer = control::request(socket, &request, request.client_timeout());
    if let Some(watcher) = watcher {
        watcher.stop();
    }
    answered(answer, |response| {
        let Response::Pulled(report) = response else {
            return Err(unexpected(&response));
        };
        println!(
            "pulled {} ({}): {} layers, {} bytes fetched, {} blobs already present",
            report.reference,
            report.manifest_digest,
            report.layers,
            report.bytes_fetched,
            report.blobs_reused
        );
        println!("image {}", report.id);
        Ok(())
    })
}

/// `network ls|create|inspect|rm`: a table for `ls`, JSON for `inspect`
/// (and `ls --json`), the name for `create` and `rm`.
pub fn network(socket: &Path, request: &Request, json: bool) -> ExitCode {
    client(socket, request, request.client_timeout(), |response| {
        let Response::Networks(list) = response else {
            return Err(unexpected(&response));
        };
        match request {
            Request::Networks if !json => print!("{}", network_table(&list)),
            Request::Networks => print_json(&list)?,
            Request::NetworkInspect { .. } => print_json(&list.first())?,
            _ => {
                for n in list {
                    println!("{}", n.spec.name);
                }
            }
        }
        Ok(())
    })
}

/// Prints `value` as indented JSON.
fn print_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

/// `volume ls|create|inspect|rm`: a table for `ls`, JSON for `inspect`
/// (and `ls --json`), the name for `create` and `rm`, as docker volume.
pub fn volume(socket: &Path, request: &Request, json: bool) -> ExitCode {
    client(socket, request, request.client_timeout(), |response| {
        let Response::Volumes(list) = response else {
            return Err(unexpected(&response));
        };
        match request {
            Request::Volumes if !json => print!("{}", volume_table(&list)),
            Request::Volumes => print_json(&list)?,
            Request::VolumeInspect { .. } => print_json(&list.first())?,
            _ => {
                for v in list {
                    println!("{}", v.name);
                }
            }
        }
        Ok(())
    })
}

fn volume_table(list: &[mkhost_shared::control::VolumeInfo]) -> String {
    let mut out = format!("{:<30} {:<25} {}\n", "NAME", "CREATED", "CONTAINERS");
    for v in list {
        let users = if v.containers.is_empty() {
            "-".to_string()
        } else {
            v.containers.join(",")
        };
        out.push_str(&format!("{:<30} {:<25} {users}\n", v.name, v.created));
    }
    out
}

fn network_table(list: &[mkhost_shared::control::NetworkInfo]) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:<18} {:<15} {:<10} {:<10} {}\n",
        "NAME", "DRIVER", "SUBNET", "GATEWAY", "PARENT", "ORIGIN", "CONTAINERS"
    );
    for n in list {
        let dash = || "-".to_string();
        out.push_str(&format!(
            "{:<20} {:<8} {:<18} {:<15} {:<10} {:<10} {}\n",
            n.spec.name,
            n.spec.driver.to_string(),
            n.spec
                .subnet
                .map_or_else(|| "dhcp".to_string(), |s| s.to_string()),
            n.spec.gateway.map_or_else(dash, |g| g.to_string()),
            n.spec.parent.clone().unwrap_or_else(dash),
            n.origin,
            n.containers.len()
        ));
    }
    out
}

/// What `ps` shows of a container's network: its address (or mode) and
/// published ports, as `docker ps` writes them.
fn network_column(r: &Record) -> (String, String) {
    let Some(a) = &r.network else {
        return ("-".into(), String::new());
    };
    let address = match a.address {
        Some(ip) => format!("{}:{ip}", a.network),
        None => a.network.clone(),
    };
    let ports = a
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                p.host_port,
                p.container_port,
                p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    (address, ports)
}

/// `ps`: one row per container.
fn ps_table(rows: &[Record]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<20} {:<18} {:<8} {:<8} {:<25} {:<26} {}\n",
        "NAME", "ID", "IMAGE", "STATUS", "PID", "RESTARTS", "CREATED", "NETWORK", "PORTS"
    );
    for r in rows {
        let status = match (r.status.as_str(), r.exit_code) {
            ("exited", Some(code)) if r.oom_killed => format!("exited({code},oom)"),
            ("exited", Some(code)) => format!("exited({code})"),
            ("exited", None) => "exited(?)".to_string(),
            (other, _) => other.to_string(),
        };
        let (address, ports) = network_column(r);
        out.push_str(
            format!(
                "{:<20} {:<16} {:<20} {:<18} {:<8} {:<8} {:<25} {:<26} {}",
                r.name, r.id, r.image, status, r.pid, r.restart_count, r.created, address, ports
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}

/// Sends `request` and hands a successful answer to `show`. A daemon that is
/// not running, a failed exchange and an error answer all exit 1.
fn client(
    socket: &Path,
    request: &Request,
    timeout: Duration,
    show: impl FnOnce(Response) -> Result<(), String>,
) -> ExitCode {
    answered(control::request(socket, request, timeout), show)
}

/// Hands a successful `answer` to `show`; see [`client`].
fn answered(
    answer: Result<Response, control::ClientError>,
    show: impl FnOnce(Response) -> Result<(), String>,
) -> ExitCode {
    match answer {
        Ok(Response::Error(message)) => {
            eprintln!("hostd: {message}");
            ExitCode::FAILURE
        }
        Ok(response) => match show(response) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hostd: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e @ control::ClientError::Connect { .. }) => {
            eprintln!("hostd: daemon not running? {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hostd: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn status(socket: &Path) -> ExitCode {
    match control::request(socket, &Request::Status, STATUS_TIMEOUT) {
        Ok(response) => {
            print!("{}", response.to_line());
            match response {
                Response::Status(_) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Err(e @ control::ClientError::Connect { .. }) => {
            eprintln!("hostd: daemon not running? {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hostd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first 12 hex digits of an image id, as docker shows it.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Bytes in docker's units (powers of 1000).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

fn unexpected(response: &Response) -> String {
    format!(
        "unexpected answer from the daemon: {}",
        response.to_line().trim_end()
    )
}

/// One table row per name (an image without names gets one `<none>` row).
fn images_table(rows: &[ImageSummary]) -> String {
    let mut lines = vec![[
        "NAME".to_string(),
        "ID".to_string(),
        "LAYERS".to_string(),
        "SIZE".to_string(),
        "CREATED".to_string(),
    ]];
    for row in rows {
        let created = row
            .created
            .as_deref()
            .map(|c| c.get(..19).unwrap_or(c).replace('T', " "))
            .unwrap_or_else(|| "-".to_string());
        let none = ["<none>".to_string()];
        let names = if row.names.is_empty() {
            &none[..]
        } else {
            &row.names[..]
        };
        for name in names {
            lines.push([
                name.clone(),
                short_id(&row.id).to_string(),
                row.layers.to_string(),
                human_size(row.unpacked_size),
                created.clone(),
            ]);
        }
    }
    let mut widths = [0usize; 5];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

pub fn images(socket: &Path, json: bool) -> ExitCode {
    let request = Request::Images;
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Images(list) = response else {
            return Err(unexpected(&response));
        };
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
            return Ok(());
        }
        print!("{}", images_table(&list));
        Ok(())
    })
}

pub fn import(socket: &Path, path: &Path, reference: Option<&str>) -> ExitCode {
    // The daemon does not know our directory: send the path absolute.
    let path = match std::path::absolute(path) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("hostd: cannot make {} absolute: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if path.to_str().is_none() {
        eprintln!("hostd: {} is not valid UTF-8; rename it", path.display());
        return ExitCode::FAILURE;
    }
    let request = Request::Import {
        path,
        reference: reference.map(str::to_owned),
    };
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Imported(report) = response else {
            return Err(unexpected(&response));
        };
        for image in &report.images {
            let names = if image.names.is_empty() {
                "<none>".to_string()
            } else {
                image.names.join(", ")
            };
            let already = if image.new { "" } else { " (already present)" };
            println!("imported {names} {}{already}", short_id(&image.id));
        }
        println!(
            "{} images, {} new blobs, {} new layers",
            report.images.len(),
            report.blobs_added,
            report.layers_added
        );
        if !report.skipped.is_empty() || report.xattrs_dropped > 0 {
            println!(
                "skipped {} entries (device nodes, fifos), dropped {} extended attributes",
                report.skipped.len(),
                report.xattrs_dropped
            );
        }
        Ok(())
    })
}

pub fn inspect(socket: &Path, image: &str) -> ExitCode {
    let request = Request::InspectImage {
        image: image.to_string(),
    };
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Image(info) = response else {
            return Err(unexpected(&response));
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&info).unwrap_or_default()
        );
        Ok(())
    })
}

pub fn rmi(socket: &Path, image: &str) -> ExitCode {
    let request = Request::RemoveImage {
        image: image.to_string(),
    };
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Removed(removed) = response else {
            return Err(unexpected(&response));
        };
        for name in &removed.untagged {
            println!("untagged: {name}");
        }
        if removed.deleted {
            println!("deleted: {} (run `hostd gc` to free its space)", removed.id);
        }
        Ok(())
    })
}

pub fn gc(socket: &Path) -> ExitCode {
    let request = Request::Gc;
    client(socket, &request, request.client_timeout(), |response| {
        let Response::Gc(report) = response else {
            return Err(unexpected(&response));
        };
        println!(
            "removed {} blobs and {} layers, freed {}",
            report.blobs_removed,
            report.layers_removed,
            human_size(report.bytes_freed)
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_prints_what_comes_after_the_last_line() {
        let text = "t1 stdout a\nt2 stdout b\nt3 stderr c\n";
        assert_eq!(log_after(text, None), text);
        assert_eq!(
            log_after(text, Some("t1 stdout a")),
            "t2 stdout b\nt3 stderr c\n"
        );
        assert_eq!(log_after(text, Some("t3 stderr c")), "");
        // Rotated away: everything again.
        assert_eq!(log_after(text, Some("t0 stdout z")), text);
    }

    #[test]
    fn images_table_one_row_per_name() {
        let rows = vec![
            ImageSummary {
                id: format!("sha256:{}", "ab".repeat(32)),
                names: vec!["hello:latest".into(), "hi".into()],
                created: Some("2024-05-06T07:08:09.123Z".into()),
                layers: 2,
                size: 1_000,
                unpacked_size: 1_234_567,
            },
            ImageSummary {
                id: format!("sha256:{}", "cd".repeat(32)),
                names: vec![],
                created: None,
                layers: 0,
                size: 0,
                unpacked_size: 12,
            },
        ];
        let table = images_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(lines[1].starts_with("hello:latest"), "{table}");
        assert!(lines[1].contains("abababababab "), "{table}");
        assert!(lines[1].contains("1.2MB"), "{table}");
        assert!(lines[1].ends_with("2024-05-06 07:08:09"), "{table}");
        assert!(lines[2].starts_with("hi "), "{table}");
        assert!(lines[3].starts_with("<none>"), "{table}");
        assert!(lines[3].contains("12B"), "{table}");
        assert_eq!(short_id("sha256:abc"), "abc");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1.0kB");
    }
}
