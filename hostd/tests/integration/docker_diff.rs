//! `hostd run` against Debian's dockerd, side by side (issue 11).
//!
//! One image (busybox, a `www` user in groups `adm` and `staff`) is imported
//! into a private dockerd, `docker save`d, and that archive imported into a
//! hostd daemon, so both run exactly the same image. Each case of [`cases`]
//! then runs as `docker run --rm --network none FLAGS IMAGE CMD...` and as
//! `hostd run --rm --network none FLAGS IMAGE CMD...`, and the two exit codes, stdouts and
//! stderrs are compared after a small normalisation:
//!
//! - container ids (and the host names made from them: 12 or 64 hex
//!   digits) read `<id>` ([`mask_ids`]);
//! - `/proc/self/mountinfo` is reduced to mount point, mount options, file
//!   system type and super options per line, without overlay's layer
//!   paths ([`mount_table`]): mount ids, device numbers, bind sources and
//!   propagation name each daemon's own directories;
//! - `env` with `-e` or `--env-file` variables: `PATH` and `HOSTNAME` come
//!   first on both, the rest is compared as a set, because Docker 20.10's
//!   order of those variables changes from run to run ([`View::Env`]);
//! - a failure to start (exit 125, 126, 127) is compared by exit code and
//!   by what both messages name, not by their wording ([`Stderr::Mentions`]).
//!
//! Any other difference fails the test, unless it is one of [`KNOWN`]: the
//! differences hostd has on purpose, each with its reason, listed the same
//! in docs/containers.md ("Differences from Docker, checked against
//! dockerd"). Every case must also have run on dockerd with the expected
//! exit code and some output, so the test cannot pass by comparing nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    capture, mask_ids, ok, require, run, Daemon, Dockerd, Ran, DOCKER, DOCKERD, HOSTD,
};

/// The busybox applets the cases run, linked in the image's `/bin`.
const APPLETS: [&str; 14] = [
    "sh", "id", "env", "pwd", "ls", "cat", "echo", "hostname", "touch", "grep", "stat", "seq",
    "printf", "tr",
];

/// Writes the image's root file system to `dir/rootfs.tar`: busybox with
/// [`APPLETS`], `/etc/passwd` with root and `www` (uid 33, gid 44, home
/// `/var/www`), `/etc/group` listing `www` in `adm` (4) and `staff` (50),
/// and `/bin/noexec`, a script without execute permission.
fn build_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "root", "var/www"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:44:www:/var/www:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nadm:x:4:www\nwww:x:44:\nstaff:x:50:other,www\n",
    )
    .unwrap();
    fs::write(root.join("bin/noexec"), "#!/bin/sh\necho never\n").unwrap();
    fs::set_permissions(root.join("bin/noexec"), fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(root.join("var/www"), Some(33), Some(44)).unwrap();
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

/// The two images, one layer each (the same tar): `diff:plain` with an
/// `Env` only, and `diff:ep` with `PATH`, `Entrypoint`, `Cmd`, `WorkingDir`
/// and `User`.
const IMAGES: [(&str, &[&str]); 2] = [
    ("diff:plain", &["ENV GREETING=hello"]),
    (
        "diff:ep",
        &[
            "ENV PATH=/bin:/usr/bin",
            r#"ENTRYPOINT ["echo", "from-ep"]"#,
            r#"CMD ["echo", "from-cmd"]"#,
            "WORKDIR /var/www",
            "USER www",
        ],
    ),
];

/// How a case's stdout is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// As text.
    Text,
    /// `env`: the first two lines (`PATH`, `HOSTNAME`) in order, the rest
    /// as a set: Docker 20.10 orders the user's variables differently from
    /// run to run.
    Env,
    /// `/proc/self/mountinfo`, reduced by [`mount_table`], in order. (Docker
    /// orders `--tmpfs` mounts of the same depth by a Go map's iteration,
    /// which changes from run to run: a case gives one per depth.)
    Mounts,
}

/// How a case's stderr is compared.
#[derive(Clone, Copy, Debug)]
enum Stderr {
    /// Equal (after [`mask_ids`]).
    Same,
    /// Both non-empty and naming each of these (case-insensitive): the
    /// daemons word their refusals differently.
    Mentions(&'static [&'static str]),
}

/// One command, run through both.
struct Case {
    name: &'static str,
    flags: Vec<String>,
    image: &'static str,
    command: Vec<String>,
    view: View,
    stderr: Stderr,
    /// Docker's exit code, checked so that a broken setup cannot pass as
    /// agreement; `None` where it depends on the machine.
    expect: Option<i32>,
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The table of cases; `env_file` and `bad_env_file` are paths of the
/// `--env-file` cases' files.
fn cases(env_file: &Path, bad_env_file: &Path) -> Vec<Case> {
    let case = |name, flags: &[&str], image, command: &[&str]| Case {
        name,
        flags: strings(flags),
        image,
        command: strings(command),
        view: View::Text,
        stderr: Stderr::Same,
        expect: Some(0),
    };
    let refused = |name, flags: &[&str], image, command: &[&str], code, words| Case {
        stderr: Stderr::Mentions(words),
        expect: Some(code),
        ..case(name, flags, image, command)
    };
    let view = |view, c: Case| Case { view, ..c };
    let id_home = ["sh", "-c", "id; echo HOME=$HOME"];
    let workdir = ["sh", "-c", "pwd; stat -c '%A %U %G %n' /new /new/dir"];
    let caps = ["grep", "Cap", "/proc/self/status"];
    let mountinfo = ["cat", "/proc/self/mountinfo"];
    let env_file = env_file.to_str().unwrap();
    let bad_env_file = bad_env_file.to_str().unwrap();
    vec![
        case("id", &[], "diff:plain", &["id"]),
        // Without -e the order is Docker's own: compared as text.
        case("env", &[], "diff:plain", &["env"]),
        case("env-image", &["--entrypoint", "env"], "diff:ep", &[]),
        case(
            "pid-umask-stdin",
            &[],
            "diff:plain",
            &["sh", "-c", "echo $$; umask; cat; echo end"],
        ),
        case("user-www", &["-u", "www"], "diff:plain", &id_home),
        case("user-33", &["-u", "33"], "diff:plain", &id_home),
        case("user-33:50", &["-u", "33:50"], "diff:plain", &id_home),
        case("user-1234", &["-u", "1234"], "diff:plain", &id_home),
        case(
            "user-www:staff",
            &["-u", "www:staff"],
            "diff:plain",
            &id_home,
        ),
        case("user-0:4", &["-u", "0:4"], "diff:plain", &id_home),
        refused(
            "user-unknown",
            &["-u", "nobody"],
            "diff:plain",
            &["id"],
            125,
            &["nobody"],
        ),
        refused(
            "group-unknown",
            &["-u", "www:wheel"],
            "diff:plain",
            &["id"],
            125,
            &["wheel"],
        ),
        case("image-user", &["--entrypoint", "id"], "diff:ep", &[]),
        case("workdir-new", &["-w", "/new/dir"], "diff:plain", &workdir),
        case(
            "workdir-new-as-www",
            &["-u", "www", "-w", "/new/dir"],
            "diff:plain",
            &workdir,
        ),
        case("workdir-image", &["--entrypoint", "pwd"], "diff:ep", &[]),
        case("entrypoint-image", &[], "diff:ep", &[]),
        case("entrypoint-image-args", &[], "diff:ep", &["a", "b"]),
        case("entrypoint-flag", &["--entrypoint", "echo"], "diff:ep", &[]),
        case(
            "entrypoint-flag-args",
            &["--entrypoint", "echo"],
            "diff:ep",
            &["a", "b"],
        ),
        // An empty entrypoint drops the image's Cmd too.
        refused(
            "entrypoint-empty",
            &["--entrypoint", ""],
            "diff:ep",
            &[],
            125,
            &["command"],
        ),
        case(
            "entrypoint-empty-args",
            &["--entrypoint", ""],
            "diff:ep",
            &["echo", "given"],
        ),
        refused("no-command", &[], "diff:plain", &[], 125, &["command"]),
        case(
            "hostname-flag",
            &["-h", "myname"],
            "diff:plain",
            &[
                "sh",
                "-c",
                "hostname; echo $HOSTNAME; cat /etc/hostname /etc/hosts",
            ],
        ),
        case(
            "hostname-default",
            &[],
            "diff:plain",
            &["sh", "-c", "hostname; cat /etc/hostname /etc/hosts"],
        ),
        view(
            View::Env,
            case(
                "env-flags",
                &[
                    "-e",
                    "FOO=bar",
                    "-e",
                    "GREETING=override",
                    "-e",
                    "EMPTY=",
                    "-e",
                    "FROMHOST",
                    "-e",
                    "UNSETX",
                    "-e",
                    "HOME=/h",
                ],
                "diff:plain",
                &["env"],
            ),
        ),
        view(
            View::Env,
            case(
                "env-file",
                &["--env-file", env_file, "-e", "LATER=1"],
                "diff:plain",
                &["env"],
            ),
        ),
        case(
            "env-image-path",
            &["--entrypoint", "env", "-e", "PATH=/usr/bin:/bin"],
            "diff:ep",
            &[],
        ),
        refused(
            "env-file-bad",
            &["--env-file", bad_env_file],
            "diff:plain",
            &["env"],
            125,
            &["B "],
        ),
        Case {
            expect: Some(1),
            ..case(
                "read-only",
                &["--read-only"],
                "diff:plain",
                &[
                    "sh",
                    "-c",
                    "touch /x; touch /etc/hosts; touch /etc/hostname; \
                           touch /dev/shm/x && echo shm ok; touch /var/www/x",
                ],
            )
        },
        view(
            View::Mounts,
            case(
                "read-only-mounts",
                &["--read-only"],
                "diff:plain",
                &mountinfo,
            ),
        ),
        case(
            "tmpfs",
            &["--tmpfs", "/run", "--tmpfs", "/t:size=1m,mode=700"],
            "diff:plain",
            &[
                "sh",
                "-c",
                "stat -c '%A %U %G %n' /run /t; touch /t/x && echo ok",
            ],
        ),
        view(
            View::Mounts,
            case(
                "tmpfs-mounts",
                // One per depth (see View::Mounts); /etc/x comes after the
                // /etc files of the same depth on both.
                &[
                    "--tmpfs",
                    "/run",
                    "--tmpfs",
                    "/etc/x:size=1m,mode=700",
                    "--tmpfs",
                    "/etc/deep/er",
                ],
                "diff:plain",
                &mountinfo,
            ),
        ),
        case("caps", &[], "diff:plain", &caps),
        case("caps-as-www", &["-u", "www"], "diff:plain", &caps),
        case(
            "caps-net-admin-only",
            &["--cap-drop", "ALL", "--cap-add", "net_admin"],
            "diff:plain",
            &caps,
        ),
        case(
            "caps-drop-chown",
            &["--cap-drop", "CAP_CHOWN"],
            "diff:plain",
            &caps,
        ),
        // Fails on both where this process lacks a capability (here
        // CAP_SYS_RESOURCE), runs on both elsewhere.
        Case {
            expect: None,
            stderr: Stderr::Mentions(&["not permitted"]),
            ..case("caps-all", &["--cap-add", "ALL"], "diff:plain", &caps)
        },
        case(
            "caps-all-but-sys-resource",
            &["--cap-add", "ALL", "--cap-drop", "sys_resource"],
            "diff:plain",
            &caps,
        ),
        refused(
            "caps-unknown",
            &["--cap-add", "bogus"],
            "diff:plain",
            &["true"],
            125,
            &["bogus"],
        ),
        case(
            "status",
            &[],
            "diff:plain",
            &[
                "grep",
                "-E",
                "^(NoNewPrivs|Seccomp|Seccomp_filters):",
                "/proc/self/status",
            ],
        ),
        case(
            "oom-score-adj",
            &[],
            "diff:plain",
            &["cat", "/proc/self/oom_score_adj"],
        ),
        case(
            "sysctls",
            &[],
            "diff:plain",
            &[
                "cat",
                "/proc/sys/net/ipv4/ip_unprivileged_port_start",
                "/proc/sys/net/ipv4/ping_group_range",
            ],
        ),
        case("limits", &[], "diff:plain", &["cat", "/proc/self/limits"]),
        case(
            "limits-as-www",
            &["-u", "www"],
            "diff:plain",
            &["cat", "/proc/self/limits"],
        ),
        view(View::Mounts, case("mounts", &[], "diff:plain", &mountinfo)),
        case(
            "dev",
            &[],
            "diff:plain",
            &["sh", "-c", "cd /dev && stat -c '%A %U %G %t:%T %N' *"],
        ),
        case(
            "resolv.conf",
            &[],
            "diff:plain",
            &["cat", "/etc/resolv.conf"],
        ),
        case(
            "etc-files",
            &[],
            "diff:plain",
            &[
                "stat",
                "-c",
                "%A %U %G %s %n",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/passwd",
                "/etc/group",
            ],
        ),
        Case {
            expect: Some(3),
            ..case(
                "exit-3",
                &[],
                "diff:plain",
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
            )
        },
        // The command is its pid namespace's init: a signal from inside
        // without a handler does nothing, SIGKILL included.
        case(
            "pid1-ignores-kill",
            &[],
            "diff:plain",
            &["sh", "-c", "kill -9 $$; echo still here"],
        ),
        case("no-newline", &[], "diff:plain", &["printf", "a\\nb"]),
        case("many-lines", &[], "diff:plain", &["seq", "1", "5000"]),
        refused("not-found", &[], "diff:plain", &["nope"], 127, &["nope"]),
        refused(
            "not-found-path",
            &[],
            "diff:plain",
            &["/nope/x"],
            127,
            &["/nope/x"],
        ),
        refused(
            "not-executable",
            &[],
            "diff:plain",
            &["/bin/noexec"],
            126,
            &["/bin/noexec", "permission denied"],
        ),
        refused(
            "not-executable-in-path",
            &[],
            "diff:plain",
            &["noexec"],
            127,
            &["noexec"],
        ),
        refused(
            "directory",
            &[],
            "diff:plain",
            &["/bin"],
            126,
            &["/bin", "permission denied"],
        ),
    ]
}

/// A difference hostd has on purpose.
struct Known {
    name: &'static str,
    /// Why (docs/containers.md gives the same reason).
    reason: &'static str,
    /// The cases it may show in.
    cases: &'static [&'static str],
    /// Applied to both sides' normalised output: makes the difference go
    /// away, and nothing else.
    rewrite: fn(&str) -> String,
}

const MOUNT_CASES: &[&str] = &["mounts", "read-only-mounts", "tmpfs-mounts"];

/// The differences hostd has on purpose (docs/containers.md lists them).
const KNOWN: &[Known] = &[
    Known {
        name: "cgroup v1 host: /sys/fs/cgroup",
        reason: "on a cgroup v1 host Docker mounts a tmpfs at /sys/fs/cgroup with one read-only \
                 cgroup v1 hierarchy per controller; hostd targets cgroup v2 hosts and always \
                 mounts cgroup2 read-only there, in the container's own cgroup namespace; on a \
                 cgroup v2 host Docker 20.10 does the same",
        cases: MOUNT_CASES,
        rewrite: |text| lines_without(text, |l| l.starts_with("/sys/fs/cgroup")),
    },
    Known {
        name: "overlay uuid=on",
        reason: "Linux 6.6 and later show uuid=on on the first mount of a new overlay (it then \
                 stores a uuid in the upper directory); dockerd mounts a container's layer once \
                 when it creates it and again to start it, and the second mount finds the stored \
                 uuid and shows the default. Both roots behave the same",
        cases: MOUNT_CASES,
        rewrite: |text| text.replace(",uuid=on", ""),
    },
    Known {
        name: "--cap-add ALL: CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE",
        reason: "hostd's ALL is every capability the kernel has, as in Docker 23 and later; \
                 Docker 20.10 leaves out CAP_PERFMON, CAP_BPF and CAP_CHECKPOINT_RESTORE \
                 (38-40), a workaround for runc releases that did not know them (moby#41563, \
                 reverted for 23.0 in moby#42011), and refuses them by name",
        cases: &["caps-all", "caps-all-but-sys-resource"],
        rewrite: |text| {
            let newer: u64 = 0b111 << 38;
            text.lines()
                .map(|line| match line.split_once(":\t") {
                    Some((name, hex)) if name.starts_with("Cap") => {
                        match u64::from_str_radix(hex, 16) {
                            Ok(set) => format!("{name}:\t{:016x}\n", set & !newer),
                            Err(_) => format!("{line}\n"),
                        }
                    }
                    _ => format!("{line}\n"),
                })
                .collect()
        },
    },
    Known {
        name: "output ends with a newline",
        reason: "hostd run prints the container's log, which stores lines: a last line without a \
                 newline is printed with one (as hostd logs prints it); docker run copies the raw \
                 stream",
        cases: &["no-newline"],
        rewrite: |text| {
            if text.is_empty() || text.ends_with('\n') {
                text.to_string()
            } else {
                format!("{text}\n")
            }
        },
    },
];

fn lines_without(text: &str, drop: impl Fn(&str) -> bool) -> String {
    text.lines()
        .filter(|l| !drop(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `/proc/self/mountinfo` as `MOUNT-POINT OPTIONS FSTYPE SUPER-OPTIONS`
/// lines, in order, with overlay's `lowerdir`, `upperdir` and `workdir`
/// left out (each daemon's store has its own paths, and Docker adds an
/// init layer).
fn mount_table(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            out.push_str(&format!("unparsed: {line}\n"));
            continue;
        };
        let fstype = fields.get(dash + 1).copied().unwrap_or("?");
        let options: Vec<&str> = fields
            .get(dash + 3)
            .copied()
            .unwrap_or("")
            .split(',')
            .filter(|o| {
                fstype != "overlay"
                    || !["lowerdir=", "upperdir=", "workdir="]
                        .iter()
                        .any(|k| o.starts_with(k))
            })
            .collect();
        out.push_str(&format!(
            "{} {} {fstype} {}\n",
            fields.get(4).copied().unwrap_or("?"),
            fields.get(5).copied().unwrap_or("?"),
            options.join(",")
        ));
    }
    out
}

/// `ran`'s stdout and stderr as compared: ids masked, stdout in `view`.
fn normalise(ran: &Ran, view: View) -> (String, String) {
    let stdout = mask_ids(&ran.stdout);
    let stdout = match view {
        View::Text => stdout,
        View::Mounts => mount_table(&stdout),
        View::Env => {
            let mut lines: Vec<&str> = stdout.lines().collect();
            let head = lines.len().min(2);
            lines[head..].sort_unstable();
            lines.iter().map(|l| format!("{l}\n")).collect()
        }
    };
    (stdout, mask_ids(&ran.stderr))
}

/// What differs between the two runs of `case`, with the known
/// differences in `allowed` rewritten away: an empty list if nothing.
fn differences(case: &Case, docker: &Ran, hostd: &Ran, allowed: &[&Known]) -> Vec<String> {
    let rewrite = |text: String| allowed.iter().fold(text, |t, k| (k.rewrite)(&t));
    let (d_out, d_err) = normalise(docker, case.view);
    let (h_out, h_err) = normalise(hostd, case.view);
    let (d_out, h_out) = (rewrite(d_out), rewrite(h_out));
    let mut found = Vec::new();
    if docker.code != hostd.code {
        found.push(format!(
            "exit code: docker {}, hostd {}",
            docker.code, hostd.code
        ));
    }
    if d_out != h_out {
        found.push(format!(
            "stdout:\n--- docker\n{d_out}--- hostd\n{h_out}---\n{}",
            line_diff(&d_out, &h_out)
        ));
    }
    match stderr_mode(case, docker) {
        Stderr::Same => {
            let (d_err, h_err) = (rewrite(d_err), rewrite(h_err));
            if d_err != h_err {
                found.push(format!("stderr:\n--- docker\n{d_err}--- hostd\n{h_err}---"));
            }
        }
        Stderr::Mentions(words) => {
            let h_lower = h_err.to_lowercase();
            let missing: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| !h_lower.contains(&w.to_lowercase()))
                .collect();
            if h_err.trim().is_empty() || !missing.is_empty() {
                found.push(format!(
                    "hostd's stderr does not name {missing:?}: {h_err:?}"
                ));
            }
        }
    }
    found
}

/// How `case`'s stderr is compared: [`Stderr::Mentions`] only applies
/// to a refusal (125, 126, 127); output of a command that ran must be the
/// same.
fn stderr_mode(case: &Case, docker: &Ran) -> Stderr {
    match case.stderr {
        Stderr::Mentions(_) if !(125..=127).contains(&docker.code) => Stderr::Same,
        mode => mode,
    }
}

/// Lines only one side has, for a quicker read of a long difference.
fn line_diff(docker: &str, hostd: &str) -> String {
    let d: Vec<&str> = docker.lines().collect();
    let h: Vec<&str> = hostd.lines().collect();
    let mut out = String::new();
    for l in d.iter().filter(|l| !h.contains(l)) {
        out.push_str(&format!("only docker: {l}\n"));
    }
    for l in h.iter().filter(|l| !d.contains(l)) {
        out.push_str(&format!("only hostd:  {l}\n"));
    }
    if out.is_empty() {
        out.push_str("same lines, another order\n");
    }
    out
}

/// What is wrong with docker's run of `case`, if anything: not the
/// expected exit code, no output where it should have some, a refusal
/// that is not the daemon's, or one that does not name what it should.
/// So a broken setup cannot pass as agreement.
fn docker_problems(case: &Case, docker: &Ran) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(code) = case.expect {
        if docker.code != code {
            problems.push(format!("docker exited {} (expected {code})", docker.code));
        }
    }
    match docker.code {
        125..=127 if !docker.stderr.contains("docker:") => {
            problems.push("docker's refusal is not its own".to_string());
        }
        125..=127 => {}
        _ if docker.stdout.is_empty() && docker.stderr.is_empty() => {
            problems.push("docker printed nothing".to_string());
        }
        _ => {}
    }
    if let Stderr::Mentions(words) = stderr_mode(case, docker) {
        let lower = docker.stderr.to_lowercase();
        for w in words.iter().filter(|w| !lower.contains(&w.to_lowercase())) {
            problems.push(format!("docker's stderr does not name {w:?}"));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("docker's run: {docker:?}"));
    }
    problems
}

#[test]
fn hostd_run_matches_docker_run() {
    let installed = Path::new(DOCKERD).exists() && Path::new(DOCKER).exists();
    if !require(installed, "Debian's docker.io (dockerd, /usr/bin/docker)")
        || !require(
            hostd::os::geteuid() == 0,
            "root (dockerd and hostd's daemon)",
        )
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let tar = build_rootfs(work);
    let dockerd = Dockerd::start(&work.join("d"));
    // dockerd's start events, as they come (it keeps only the last 256
    // events for a later `docker events --since`).
    let events_file = work.join("events.txt");
    let mut events = dockerd
        .docker()
        .args([
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=start",
        ])
        .args(["--format", "{{.ID}}"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&events_file).unwrap())
        .spawn()
        .unwrap();
    for (name, changes) in IMAGES {
        let mut import = dockerd.docker();
        import.arg("import");
        for change in changes {
            import.args(["-c", change]);
        }
        run(import.arg(&tar).arg(name));
    }
    let saved = work.join("saved.tar");
    run(dockerd
        .docker()
        .arg("save")
        .arg("-o")
        .arg(&saved)
        .args(IMAGES.map(|(name, _)| name)));

    let hostd_dir = work.join("h");
    fs::create_dir_all(&hostd_dir).unwrap();
    let daemon = Daemon::start(&hostd_dir, Path::new(HOSTD), &[]);
    let socket = daemon.socket();
    let report = ok(&Command::new(HOSTD)
        .arg("import")
        .arg(&saved)
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap());
    assert!(report.contains("2 images"), "{report}");
    assert!(report.contains("1 new layers"), "{report}");

    let env_file = work.join("env.list");
    fs::write(
        &env_file,
        "# a comment\n\nA=1\nFROMHOST\n  LEADING=x\nSPACES=a b \nQUOTED=\"q\"\nNOTSET\n\
         GREETING=from-file\nA=2\n",
    )
    .unwrap();
    let bad_env_file = work.join("bad.list");
    fs::write(&bad_env_file, "GOOD=1\nB = 2\n").unwrap();

    let cases = cases(&env_file, &bad_env_file);
    let mut failures = Vec::new();
    let mut needed = vec![false; KNOWN.len()];
    let mut started = 0;
    let mut table = String::new();
    for case in &cases {
        let (docker, hostd) = std::thread::scope(|s| {
            let docker = s.spawn(|| {
                capture(
                    dockerd
                        .docker()
                        .args(["run", "--rm", "--network", "none"])
                        .args(&case.flags)
                        .arg(case.image)
                        .args(&case.command)
                        .env("FROMHOST", "from-the-client"),
                )
            });
            let hostd = capture(
                Command::new(HOSTD)
                    .args(["run", "--socket"])
                    .arg(&socket)
                    .args(["--rm", "--network", "none"])
                    .args(&case.flags)
                    .arg(case.image)
                    .args(&case.command)
                    .env("FROMHOST", "from-the-client"),
            );
            (docker.join().unwrap(), hostd)
        });
        let problems = docker_problems(case, &docker);
        if !problems.is_empty() {
            failures.push(format!("== {}: {}", case.name, problems.join("\n")));
            table.push_str(&format!(
                "{:<28} docker {:>3}  SETUP\n",
                case.name, docker.code
            ));
            continue;
        }
        if !(125..=127).contains(&docker.code) {
            started += 1;
        }
        let allowed: Vec<&Known> = KNOWN
            .iter()
            .filter(|k| k.cases.contains(&case.name))
            .collect();
        let found = differences(case, &docker, &hostd, &allowed);
        for (i, known) in KNOWN.iter().enumerate() {
            let others: Vec<&Known> = allowed
                .iter()
                .copied()
                .filter(|k| !std::ptr::eq(*k, known))
                .collect();
            if others.len() < allowed.len()
                && found.is_empty()
                && !differences(case, &docker, &hostd, &others).is_empty()
            {
                needed[i] = true;
            }
        }
        table.push_str(&format!(
            "{:<28} docker {:>3}  hostd {:>3}  {}\n",
            case.name,
            docker.code,
            hostd.code,
            if found.is_empty() {
                "same"
            } else {
                "DIFFERENT"
            }
        ));
        if !found.is_empty() {
            failures.push(format!(
                "== {} ({} {} {:?})\n{}",
                case.name,
                case.flags.join(" "),
                case.image,
                case.command,
                found.join("\n")
            ));
        }
    }
    eprintln!("{table}");
    for (known, needed) in KNOWN.iter().zip(&needed) {
        if *needed {
            eprintln!("known difference {:?}: {}", known.name, known.reason);
        } else {
            eprintln!("note: known difference {:?} did not show here", known.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from docker run:\n{}\n(dockerd's log: {})",
        failures.len(),
        cases.len(),
        failures.join("\n\n"),
        work.join("d/dockerd.log").display()
    );

    // dockerd did start a container for every case that ran, and --rm
    // left nothing on either side.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&events_file).unwrap().lines().count() < started
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = events.kill();
    let _ = events.wait();
    let starts = fs::read_to_string(&events_file).unwrap();
    assert_eq!(starts.lines().count(), started, "{starts}");
    let left = ok(&dockerd.docker().args(["ps", "-aq"]).output().unwrap());
    assert_eq!(left, "", "docker run --rm left containers");
    let left = ok(&Command::new(HOSTD)
        .args(["ps", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap());
    assert_eq!(left.trim(), "[]", "hostd run --rm left containers");
    daemon.terminate();
    drop(dockerd);
}
