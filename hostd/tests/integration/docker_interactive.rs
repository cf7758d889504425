//! Interactive use through the Docker API (issue 17): `docker run -it`,
//! `docker exec -it`, `docker attach` and detach keys driven through a
//! real pseudo-terminal (`pty_drive.py`), and standard input, exec options
//! and exit codes without one.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::docker_api::{daemon_with_image, prerequisites, wait_status, Cli};

/// Runs `docker ARGS` on a new 24x80 terminal through the `steps` of
/// `pty_drive.py`: the exit code and everything the terminal showed.
pub(crate) fn on_terminal(cli: &Cli, args: &[&str], steps: &Value) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/pty_drive.py");
    let docker = cli.command(args);
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg(steps.to_string())
        .arg("--")
        .arg(docker.get_program())
        .args(docker.get_args());
    for (key, value) in docker.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "pty_drive.py for docker {args:?} said {stdout:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let output = result["output"].as_str().unwrap_or_default().to_string();
    if let Some(error) = result.get("error") {
        panic!("docker {args:?} on a terminal: {error}; the terminal showed:\n{output}");
    }
    (result["code"].as_i64().unwrap_or(-1) as i32, output)
}

/// A shell session's checks: the prompt, `stty size` before and after a
/// resize, output of a command, `tty` naming the container's own terminal,
/// Ctrl-C interrupting a long command, and `exit CODE`.
pub(crate) fn shell_session(code: i32) -> Value {
    json!([
        ["expect", "/ # ", 20],
        ["send", "stty size\r"],
        ["expect", "\r\n24 80\r\n", 10],
        // The resize reaches the container through its own API request,
        // so ask until it has landed (on a loaded machine one ask 0.5 s
        // after the resize was too early).
        ["until", "stty size\r", "\r\n31 101\r\n", 10, [31, 101]],
        ["send", "echo $((6*7))\r"],
        ["expect", "\r\n42\r\n", 10],
        ["send", "tty\r"],
        ["expect", "\r\n/dev/pts/\\d+\r\n", 10],
        ["send", "sleep 60\r"],
        ["sleep", 0.5],
        ["send", "\u{3}"],
        ["expect", "/ # ", 10],
        ["within", 10],
        ["send", format!("exit {code}\r")],
    ])
}

#[test]
fn docker_run_exec_and_attach_on_a_terminal() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (_daemon, cli) = daemon_with_image(work);

    // docker run -it: a shell on the container's own terminal.
    let (code, shown) = on_terminal(
        &cli,
        &["run", "-it", "--rm", "--network", "none", "bb", "sh"],
        &shell_session(3),
    );
    assert_eq!(code, 3, "the shell's exit code comes back:\n{shown}");

    // docker exec -it into a running container.
    cli.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--network",
        "none",
        "-e",
        "FROM=run",
        "bb",
        "sleep",
        "1000",
    ]);
    let (code, shown) = on_terminal(&cli, &["exec", "-it", "box", "sh"], &shell_session(5));
    assert_eq!(code, 5, "{shown}");
    // The exec'd shell is in the container's pid namespace, not its init.
    let (code, shown) = on_terminal(
        &cli,
        &["exec", "-it", "box", "sh"],
        &json!([
            ["expect", "/ # ", 20],
            ["send", "echo pid=$$ init=$(cat /proc/1/comm)\r"],
            ["expect", "pid=\\d+ init=sleep\r\n", 10],
            ["send", "exit\r"],
        ]),
    );
    assert_eq!(code, 0, "{shown}");

    // Detach keys leave the container running; docker attach comes back
    // to the same shell, and its exit code is docker attach's.
    let (code, shown) = on_terminal(
        &cli,
        &[
            "run",
            "-it",
            "--name",
            "det",
            "--network",
            "none",
            "bb",
            "sh",
        ],
        &json!([
            ["expect", "/ # ", 20],
            ["send", "echo before > /etc/mark\r"],
            ["expect", "/ # ", 10],
            ["send", "\u{10}\u{11}"],
        ]),
    );
    assert_eq!(code, 0, "detaching is no failure:\n{shown}");
    wait_status(&cli, "det", "running");
    let (code, shown) = on_terminal(
        &cli,
        &["attach", "det"],
        &json!([
            ["send", "cat /etc/mark\r"],
            ["expect", "\r\nbefore\r\n", 10],
            ["send", "exit 4\r"],
        ]),
    );
    assert_eq!(code, 4, "{shown}");
    wait_status(&cli, "det", "exited");
    let exit = cli.ok(&["inspect", "--format", "{{.State.ExitCode}}", "det"]);
    assert_eq!(exit, "4\n");
    // Other detach keys, named by the client: the docker CLI itself
    // notices them on exec, says so and exits 1, as with dockerd.
    let (code, shown) = on_terminal(
        &cli,
        &["exec", "-it", "--detach-keys", "ctrl-x,x", "box", "sh"],
        &json!([["expect", "/ # ", 20], ["send", "\u{18}x"],]),
    );
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("read escape sequence"), "{shown}");
    let bad = cli.run(&["exec", "--detach-keys", "ctrl-1", "box", "true"]);
    assert_ne!(bad.code, 0, "{bad:?}");
    assert!(
        bad.stderr.contains("Invalid escape keys (ctrl-1) provided"),
        "{bad:?}"
    );
    cli.ok(&["rm", "-f", "box", "det"]);
}

/// Runs `docker ARGS` with `input` on its stdin: (code, stdout, stderr).
fn with_input(cli: &Cli, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut child = cli
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn docker_exec_and_stdin_without_a_terminal() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (_daemon, cli) = daemon_with_image(work);

    // docker run -i: the input reaches the container, and its end ends it.
    let (code, out, err) = with_input(
        &cli,
        &[
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            "bb",
            "sh",
            "-c",
            "wc -l; echo done",
        ],
        b"a\nb\nc\n",
    );
    assert_eq!((code, out.as_str(), err.as_str()), (0, "3\ndone\n", ""));

    cli.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--network",
        "none",
        "-e",
        "FROM=run",
        "-w",
        "/etc",
        "bb",
        "sleep",
        "1000",
    ]);
    // Output apart, exit codes back, the container's environment and
    // working directory unless the exec names others.
    let ran = cli.run(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo out $FROM $(pwd); echo err >&2; exit 7",
    ]);
    assert_eq!(
        (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
        (7, "out run /etc\n", "err\n")
    );
    let ran = cli.ok(&[
        "exec",
        "-e",
        "FROM=exec",
        "-w",
        "/bin",
        "-u",
        "1000:1000",
        "box",
        "sh",
        "-c",
        "echo $FROM $(pwd) $(id -u):$(id -g)",
    ]);
    assert_eq!(ran, "exec /bin 1000:1000\n");
    // docker exec -i: the input, then its end.
    let (code, out, _) = with_input(&cli, &["exec", "-i", "box", "cat"], b"through\n");
    assert_eq!((code, out.as_str()), (0, "through\n"));
    // -d: it runs on its own.
    cli.ok(&["exec", "-d", "box", "sh", "-c", "echo detached > /etc/d"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ran = cli.run(&["exec", "box", "cat", "/etc/d"]);
        if ran.stdout == "detached\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ran:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A command that is not there: 127, as docker says it.
    // (dockerd writes it on the stream's stdout, and so do we; any exec
    // that cannot start is 126 with dockerd.)
    let ran = cli.run(&["exec", "box", "nosuchcommand"]);
    assert_eq!(ran.code, 126, "{ran:?}");
    assert!(
        ran.stdout
            .contains("exec: \"nosuchcommand\": executable file not found in $PATH"),
        "{ran:?}"
    );
    // A working directory that is not there.
    let ran = cli.run(&["exec", "-w", "/nonexistent", "box", "true"]);
    assert_eq!(ran.code, 126, "{ran:?}");
    assert!(ran.stdout.contains("/nonexistent"), "{ran:?}");
    // A user that is not there.
    let ran = cli.run(&["exec", "-u", "nobody-here", "box", "true"]);
    assert_eq!(ran.code, 126, "{ran:?}");
    assert!(ran.stdout.contains("nobody-here"), "{ran:?}");
    // docker events has the execs, as dockerd tells them.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let (since, until) = ((now() - 120).to_string(), (now() + 1).to_string());
    let events = |filter: &str, format: &str| {
        cli.ok(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "container=box",
            "--filter",
            filter,
            "--format",
            format,
        ])
    };
    let died = events(
        "event=exec_die",
        "{{.Action}} {{.Actor.Attributes.exitCode}}",
    );
    assert!(died.lines().any(|l| l == "exec_die 7"), "{died}");
    let started = events("event=exec_start", "{{.Action}}");
    assert!(started.lines().any(|l| l == "exec_start: cat"), "{started}");
    // Not into a stopped container.
    cli.ok(&["stop", "-t", "1", "box"]);
    let ran = cli.run(&["exec", "box", "true"]);
    assert_ne!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains("is not running"), "{ran:?}");
    cli.ok(&["rm", "box"]);
}
