//! End-to-end tests of the container runtime behind `hostd oci`.
//!
//! Each test builds an OCI bundle from Debian's busybox-static (a rootfs with
//! `/bin/busybox` and its applet links, `config.json` from `runc spec`), runs
//! it with `hostd oci` and, where a comparison makes sense, with `runc` on the
//! same bundle, and checks what the container sees from inside: pid 1, host
//! name, mount table, `/dev`, masked and read-only paths, capabilities,
//! no_new_privs, seccomp, rlimits, user, cwd, env and exit codes. Hostile
//! bundles must fail with an error naming the problem and leave no state
//! directory, process or mount behind.
//!
//! Needs root, namespaces, `runc` and `busybox` (ci/install-deps installs
//! them). Without them each test fails when `CI` is set, and otherwise prints
//! a `SKIPPED` line saying what is missing (see `require_prereqs`).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const HOSTD: &str = env!("CARGO_BIN_EXE_hostd");
const BUSYBOX: &str = "/usr/bin/busybox";

/// Whether this machine has what these tests need: root, `runc` and
/// busybox. With `CI` set a missing one fails the test (CI runs as root after
/// ci/install-deps, so a skip there would hide a broken setup); elsewhere the
/// test prints a skip line and the caller returns.
fn require_prereqs() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let runc = Command::new("runc").arg("--version").output().is_ok();
    let busybox = Path::new(BUSYBOX).exists();
    if root && runc && busybox {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let missing = format!("needs root ({root}), runc ({runc}) and {BUSYBOX} ({busybox})");
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(
        !ci,
        "{test}: {missing}; CI must provide them (ci/install-deps)"
    );
    eprintln!("SKIPPED {test}: {missing} (with CI set this fails)");
    false
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A bundle in a temporary directory, plus state roots for both runtimes.
struct Bundle {
    dir: tempfile::TempDir,
    hostd_root: PathBuf,
    runc_root: PathBuf,
}

impl Bundle {
    /// A busybox bundle whose config comes from `runc spec`, then `edit`.
    fn new(args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        // Reachable for a mapped root in a user namespace.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let rootfs = dir.path().join("rootfs");
        // The mount points an image normally has (a mapped root in a user
        // namespace could not create them in a directory owned by host root).
        for d in ["bin", "proc", "dev", "sys", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
        }
        let status = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let path = dir.path().join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        edit(&mut config);
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let hostd_root = dir.path().join("state-hostd");
        let runc_root = dir.path().join("state-runc");
        Bundle {
            dir,
            hostd_root,
            runc_root,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn hostd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(HOSTD);
        c.arg("oci").arg("--root").arg(&self.hostd_root).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn runc(&self, args: &[&str]) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.runc_root).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// `run` with both runtimes; returns (hostd, runc) outputs.
    fn run_both(&self) -> (Output, Output) {
        let bundle = self.path().to_str().unwrap().to_string();
        let h = self
            .hostd(&["run", "--bundle", &bundle, &unique("h")])
            .output()
            .unwrap();
        let r = self
            .runc(&["run", "--bundle", &bundle, &unique("r")])
            .output()
            .unwrap();
        (h, r)
    }

    /// Entries left in hostd's state root.
    fn hostd_state_entries(&self) -> Vec<String> {
        match fs::read_dir(&self.hostd_root) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mountinfo_mentioning(path: &Path) -> usize {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    info.lines().filter(|l| l.contains(p.as_ref())).count()
}

/// The script both runtimes run: facts about the container, one per line,
/// normalised so they can be compared.
const PROBE: &str = r#"
echo "pid=$$"
echo "hostname=$(hostname)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
echo "nofile=$(ulimit -n)/$(ulimit -Hn)"
echo "id=$(id)"
echo "cwd=$(pwd)"
echo "env=$FOO"
echo "umask=$(umask)"
# Mount points with type and ro/rw, as a sorted set (mount ids differ).
awk '{ split($0, a, " - "); split(a[2], b, " "); print "mount " $5 " " b[1] " " substr($6, 1, 2) }' /proc/self/mountinfo \
  | grep -v ' /sys/fs/cgroup' | sort
# /dev: type, permissions, device numbers or link targets.
for f in /dev/*; do stat -c 'dev %n %A %t:%T %N' $f; done
# Masked paths read empty or as an empty directory.
for p in /proc/kcore /proc/keys /proc/timer_list /proc/acpi /sys/firmware; do
  [ -e $p ] || continue
  if [ -d $p ]; then echo "masked $p entries=$(ls -A $p | wc -l)"; else echo "masked $p bytes=$(head -c 64 $p | wc -c)"; fi
done
# Read-only paths and root.
for p in /proc/sys/kernel/hostname /proc/sysrq-trigger /bin/probe-write; do
  if echo x 2>/dev/null > $p; then echo "write $p ok"; else echo "write $p refused"; fi
done
echo "lo=$(cat /sys/class/net/lo/operstate 2>/dev/null; ip link show lo | grep -o 'UP,LOWER_UP')"
unshare -U true 2>/dev/null; echo "unshare=$?"
mkdir /tmp/probe-dir 2>/dev/null; echo "mkdir=$?"; rmdir /tmp/probe-dir 2>/dev/null
exit 7
"#;

/// runc's default spec with hostd's default seccomp policy written in, so
/// both runtimes enforce the same filter (runc through libseccomp).
fn with_default_seccomp(config: &mut Value) {
    let bounding = config["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    let mask = hostd::runtime::caps::mask(&bounding).unwrap();
    let profile = hostd::runtime::seccomp::default_profile(mask).unwrap();
    config["linux"]["seccomp"] = serde_json::to_value(profile).unwrap();
}

fn probe_config(config: &mut Value) {
    config["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    config["process"]["cwd"] = json!("/tmp");
    config["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
    config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]);
    config["hostname"] = json!("probe");
    with_default_seccomp(config);
}

/// Without `HOME` in the config, both set it from the container's
/// `/etc/passwd` for the process's uid, else to `/`; a `HOME` given stays.
#[test]
fn home_from_the_containers_passwd_like_runc() {
    if !require_prereqs() {
        return;
    }
    for (uid, env, want) in [
        (33, vec!["PATH=/bin"], "HOME=/var/www"),
        (1234, vec!["PATH=/bin"], "HOME=/"),
        (33, vec!["PATH=/bin", "HOME=/mine"], "HOME=/mine"),
    ] {
        let bundle = Bundle::new(&["sh", "-c", "env | grep ^HOME="], |c| {
            c["process"]["env"] = json!(env);
            c["process"]["user"] = json!({"uid": uid, "gid": 0});
        });
        let etc = bundle.path().join("rootfs/etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        let (h, r) = bundle.run_both();
        assert_eq!(text(&r.stdout).trim(), want, "runc: {}", text(&r.stderr));
        assert_eq!(text(&h.stdout).trim(), want, "hostd: {}", text(&h.stderr));
    }
}

#[test]
fn same_view_as_runc() {
    if !require_prereqs() {
        return;
    }
    let bundle = Bundle::new(&["sh", "-c", PROBE], probe_config);
    let (h, r) = bundle.run_both();
    let (hout, rout) = (text(&h.stdout), text(&r.stdout));
    assert_eq!(r.status.code(), Some(7), "runc: {}", text(&r.stderr));
    assert_eq!(h.status.code(), Some(7), "hostd: {}", text(&h.stderr));
    assert_eq!(
        hout,
        rout,
        "hostd vs runc\nhostd stderr: {}",
        text(&h.stderr)
    );
    // And the facts themselves, so that a shared mistake is caught too.
    for want in [
        "pid=1",
        "hostname=probe",
        "CapBnd:\t0000000020000420",
        // uid 1000 execs without ambient capabilities: nothing effective.
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "nofile=512/1024",
        "id=uid=1000 gid=1000 groups=10,20",
        "cwd=/tmp",
        "env=bar",
        "umask=0022",
        "mount / ext4 ro",
        "mount /proc proc rw",
        "mount /dev tmpfs rw",
        "mount /dev/pts devpts rw",
        "mount /dev/shm tmpfs rw",
        "mount /dev/mqueue mqueue rw",
        "mount /sys sysfs ro",
        "mount /proc/sys proc ro",
        "dev /dev/null crw-rw-rw- 1:3",
        "dev /dev/urandom crw-rw-rw- 1:9",
        "dev /dev/tty crw-rw-rw- 5:0",
        "dev /dev/ptmx lrwxrwxrwx 0:0 '/dev/ptmx' -> 'pts/ptmx'",
        "dev /dev/fd lrwxrwxrwx",
        "masked /proc/keys bytes=0",
        "masked /sys/firmware entries=0",
        "write /proc/sys/kernel/hostname refused",
        "write /bin/probe-write refused",
        "unshare=1",
    ] {
        assert!(
            hout.lines().any(|l| l.starts_with(want)),
            "{want:?} missing in\n{hout}"
        );
    }
    assert!(bundle.hostd_state_entries().is_empty());
}

#[test]
fn default_seccomp_applies_without_a_spec_policy() {
    if !require_prereqs() {
        return;
    }
    let script = "grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo unshare=$?";
    let bundle = Bundle::new(&["sh", "-c", script], |_| {});
    let (h, r) = bundle.run_both();
    let (hout, rout) = (text(&h.stdout), text(&r.stdout));
    assert!(hout.contains("Seccomp:\t2"), "{hout}");
    assert!(hout.contains("Operation not permitted"), "{hout}");
    assert!(hout.contains("unshare=1"), "{hout}");
    // runc applies no filter when the spec has none: the call goes through.
    assert!(
        rout.contains("Seccomp:\t0") && rout.contains("unshare=0"),
        "{rout}"
    );
}

#[test]
fn spec_seccomp_policy_matches_libseccomp() {
    if !require_prereqs() {
        return;
    }
    // A deny-list: mkdir fails with EACCES, chmod of mode 0o700 with EPERM,
    // everything else is allowed. Both runtimes compile the same policy.
    let script = "mkdir /tmp/x 2>&1; echo mkdir=$?; touch /tmp/f; chmod 700 /tmp/f 2>&1; \
                  echo chmod700=$?; chmod 755 /tmp/f; echo chmod755=$?; grep Seccomp: /proc/self/status";
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        c["root"]["readonly"] = json!(false);
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 448, "op": "SCMP_CMP_EQ"}]},
                {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 2, "value": 448, "op": "SCMP_CMP_EQ"}]}
            ]
        });
    });
    let (h, r) = bundle.run_both();
    let (hout, rout) = (text(&h.stdout), text(&r.stdout));
    assert_eq!(hout, rout, "hostd stderr: {}", text(&h.stderr));
    assert!(
        hout.contains("Permission denied") && hout.contains("mkdir=1"),
        "{hout}"
    );
    assert!(
        hout.contains("chmod700=1") && hout.contains("chmod755=0"),
        "{hout}"
    );
    assert!(hout.contains("Seccomp:\t2"), "{hout}");
}

#[test]
fn clone_fallback_gives_the_same_container() {
    if !require_prereqs() {
        return;
    }
    let bundle = Bundle::new(&["sh", "-c", PROBE], probe_config);
    let bundle_path = bundle.path().to_str().unwrap().to_string();
    let run = |legacy: bool| {
        let mut c = bundle.hostd(&["run", "--bundle", &bundle_path, &unique("c")]);
        if legacy {
            c.env("HOSTD_OCI_LEGACY_CLONE", "1");
        }
        c.output().unwrap()
    };
    let (a, b) = (run(false), run(true));
    assert_eq!(a.status.code(), Some(7), "{}", text(&a.stderr));
    assert_eq!(b.status.code(), Some(7), "{}", text(&b.stderr));
    assert_eq!(text(&a.stdout), text(&b.stdout));
}

#[test]
fn user_namespace() {
    if !require_prereqs() {
        return;
    }
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id; stat -c '%u %g' /bin/busybox; \
                  head -c 1 /dev/zero | wc -c";
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
    });
    let (h, r) = bundle.run_both();
    let (hout, rout) = (text(&h.stdout), text(&r.stdout));
    assert!(h.status.success(), "{}", text(&h.stderr));
    assert_eq!(hout, rout);
    let lines: Vec<&str> = hout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(lines[2], "uid=0 gid=0");
    // Host root's files show as the overflow id.
    assert_eq!(lines[3], "65534 65534");
    assert_eq!(lines[4], "1");
}

/// Polls `state` until `status` or a timeout.
fn wait_status(cmd: impl Fn() -> Command, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cmd().output().unwrap();
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            if v["status"] == status || Instant::now() > deadline {
                return v;
            }
        } else if Instant::now() > deadline {
            panic!("state failed: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lifecycle_and_state_like_runc() {
    if !require_prereqs() {
        return;
    }
    let bundle = Bundle::new(&["sleep", "60"], |c| {
        c["annotations"] = json!({"org.example": "x"});
    });
    let b = bundle.path().to_str().unwrap().to_string();
    let hid = unique("lh");
    let rid = unique("lr");
    let pid_file = bundle.path().join("hostd.pid");
    let pid_arg = pid_file.to_str().unwrap().to_string();
    // The init of `create` inherits stdio, as with runc: a pipe would stay
    // open until the container exits, so stderr goes to a file.
    let err_file = bundle.path().join("stderr");
    let quiet = |mut c: Command| {
        let f = fs::File::create(&err_file).unwrap();
        let status = c.stdout(Stdio::null()).stderr(f).status().unwrap();
        (status.success(), fs::read_to_string(&err_file).unwrap())
    };

    let (ok, err) = quiet(bundle.hostd(&["create", "--bundle", &b, "--pid-file", &pid_arg, &hid]));
    assert!(ok, "{err}");
    let (ok, err) = quiet(bundle.runc(&["create", "--bundle", &b, &rid]));
    assert!(ok, "{err}");

    let hstate = || bundle.hostd(&["state", &hid]);
    let rstate = || bundle.runc(&["state", &rid]);
    let h = wait_status(hstate, "created");
    let r = wait_status(rstate, "created");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&h), keys(&r));
    for field in ["status", "bundle", "rootfs", "owner", "annotations"] {
        assert_eq!(h[field], r[field], "{field}");
    }
    let pid = h["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    assert!(h["created"].as_str().unwrap().ends_with('Z'));

    // A second create with the same id is refused and changes nothing.
    let (ok, err) = quiet(bundle.hostd(&["create", "--bundle", &b, &hid]));
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(wait_status(hstate, "created")["pid"], pid);

    // start -> running.
    assert!(quiet(bundle.hostd(&["start", &hid])).0);
    assert!(quiet(bundle.runc(&["start", &rid])).0);
    assert_eq!(wait_status(hstate, "running")["status"], "running");
    assert_eq!(wait_status(rstate, "running")["status"], "running");
    assert!(!bundle.hostd_root.join(&hid).join("exec.fifo").exists());
    // start again is refused.
    assert!(!quiet(bundle.hostd(&["start", &hid])).0);

    // delete without --force is refused while running.
    let (ok, err) = quiet(bundle.hostd(&["delete", &hid]));
    assert!(!ok && err.contains("running"), "{err}");
    assert!(!quiet(bundle.runc(&["delete", &rid])).0);

    // kill -> stopped, pid 0.
    assert!(quiet(bundle.hostd(&["kill", &hid, "KILL"])).0);
    assert!(quiet(bundle.runc(&["kill", &rid, "KILL"])).0);
    let h = wait_status(hstate, "stopped");
    let r = wait_status(rstate, "stopped");
    assert_eq!(
        (h["status"].clone(), h["pid"].clone()),
        (json!("stopped"), json!(0))
    );
    assert_eq!(
        (r["status"].clone(), r["pid"].clone()),
        (json!("stopped"), json!(0))
    );
    // kill of a stopped container fails in both.
    assert!(!quiet(bundle.hostd(&["kill", &hid])).0);
    assert!(!quiet(bundle.runc(&["kill", &rid])).0);

    assert!(quiet(bundle.hostd(&["delete", &hid])).0);
    assert!(quiet(bundle.runc(&["delete", &rid])).0);
    assert!(!quiet(bundle.hostd(&["state", &hid])).0);
    assert!(!quiet(bundle.runc(&["state", &rid])).0);
    assert!(bundle.hostd_state_entries().is_empty());
}

#[test]
fn force_delete_and_kill_of_run() {
    if !require_prereqs() {
        return;
    }
    let bundle = Bundle::new(&["sleep", "60"], |_| {});
    let b = bundle.path().to_str().unwrap().to_string();
    // A created-but-not-started container is deleted without --force.
    let id = unique("fc");
    assert!(bundle
        .hostd(&["create", "--bundle", &b, &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert!(bundle.hostd(&["delete", &id]).status().unwrap().success());
    // A running one with --force.
    let id = unique("fr");
    assert!(bundle
        .hostd(&["run", "--detach", "--bundle", &b, &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert!(bundle
        .hostd(&["delete", "--force", &id])
        .status()
        .unwrap()
        .success());
    // `run` in the foreground reports death by signal as 128 + n.
    let id = unique("fk");
    let mut child = bundle
        .hostd(&["run", "--bundle", &b, &id])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_status(|| bundle.hostd(&["state", &id]), "running");
    assert!(bundle
        .hostd(&["kill", &id, "9"])
        .status()
        .unwrap()
        .success());
    assert_eq!(child.wait().unwrap().code(), Some(137));
    assert!(bundle.hostd_state_entries().is_empty());
}

/// Runs `hostd oci run` on a hostile config; returns stderr after checking
/// that it failed and left no state or mount behind.
fn refused(args: &[&str], edit: impl FnOnce(&mut Value)) -> String {
    let bundle = Bundle::new(args, edit);
    let before = mountinfo_mentioning(bundle.path());
    let b = bundle.path().to_str().unwrap().to_string();
    let out = bundle
        .hostd(&["run", "--bundle", &b, &unique("bad")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    assert_nothing_left(&bundle, before);
    text(&out.stderr)
}

/// No state directory of hostd's is left, and no more mounts mention the
/// bundle than `before`.
fn assert_nothing_left(bundle: &Bundle, before: usize) {
    assert!(
        bundle.hostd_state_entries().is_empty(),
        "state left: {:?}",
        bundle.hostd_state_entries()
    );
    assert_eq!(mountinfo_mentioning(bundle.path()), before, "stray mount");
}

#[test]
fn hostile_configs_are_refused_cleanly() {
    if !require_prereqs() {
        return;
    }
    let err = refused(&["true"], |c| c["process"]["user"]["uid"] = json!("root"));
    assert!(err.contains("process.user.uid"), "{err}");
    let err = refused(&["true"], |c| c["process"]["args"] = json!("true"));
    assert!(err.contains("process.args"), "{err}");
    let err = refused(&["true"], |c| c["root"]["path"] = json!("no-such-rootfs"));
    assert!(
        err.contains("root.path") && err.contains("no-such-rootfs"),
        "{err}"
    );
    let err = refused(&["true"], |c| c["process"]["terminal"] = json!(true));
    assert!(err.contains("terminal"), "{err}");
    let err = refused(&["true"], |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time2"}));
    });
    assert!(
        err.contains("linux.namespaces[") && err.contains("time2"),
        "{err}"
    );
    let err = refused(&["true"], |c| {
        c["process"]["capabilities"]["bounding"] = json!(["CAP_TELEPORT"]);
    });
    assert!(err.contains("CAP_TELEPORT"), "{err}");
    // Failures inside the init name the step and what it worked on.
    let err = refused(&["no-such-program"], |_| {});
    assert!(
        err.contains("finding the executable") && err.contains("no-such-program"),
        "{err}"
    );
    let err = refused(&["true"], |c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/data", "type": "nosuchfs", "source": "x"}));
    });
    assert!(
        err.contains("/data") && err.contains("No such device"),
        "{err}"
    );
    let err = refused(&["true"], |c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]);
    });
    assert!(err.contains("RLIMIT_NOFILE"), "{err}");
    let err = refused(&["true"], |c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/host", "type": "bind", "source": "/no/such/dir", "options": ["rbind"]
        }));
    });
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn symlinks_in_the_image_cannot_redirect_mounts() {
    if !require_prereqs() {
        return;
    }
    // rootfs/evil -> /tmp: a mount at /evil/NAME must land inside the
    // rootfs (rootfs/tmp/NAME), never at the host's /tmp/NAME.
    let name = unique("escape");
    let dest = format!("/evil/{name}");
    let script = format!("grep -c ' /tmp/{name} ' /proc/self/mountinfo");
    let bundle = Bundle::new(&["sh", "-c", &script], |c| {
        c["root"]["readonly"] = json!(false);
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
    });
    symlink("/tmp", bundle.path().join("rootfs/evil")).unwrap();
    let b = bundle.path().to_str().unwrap().to_string();
    let out = bundle
        .hostd(&["run", "--bundle", &b, &unique("sym")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1");
    assert!(!Path::new("/tmp").join(&name).exists());
    assert!(bundle.path().join("rootfs/tmp").join(&name).is_dir());
}

// ---- seccomp, init errors, resources (issue 10 items 1-3) ----

/// Set in the environment of the copy of this test binary that runs inside a
/// container as [`seccomp_probe_inside_container`].
const PROBE_ENV: &str = "HOSTD_TEST_SECCOMP_PROBE";

/// Not a test on the host: inside a container (with [`PROBE_ENV`] set) it
/// makes system calls newer than an old seccomp profile and prints what each
/// returned, one `probe NAME=RESULT` line each, plus the process's capability
/// and seccomp lines. The copy of the test binary in the rootfs is static, so
/// it runs in a busybox bundle.
#[test]
fn seccomp_probe_inside_container() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    /// `ok`, or the errno's name, read right after the call.
    fn result(ret: libc::c_long) -> &'static str {
        if ret >= 0 {
            return "ok";
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSYS) => "ENOSYS",
            Some(libc::EPERM) => "EPERM",
            Some(libc::EINVAL) => "EINVAL",
            _ => "other",
        }
    }
    /// One raw system call with four arguments.
    fn call(nr: libc::c_long, args: [usize; 4]) -> &'static str {
        // SAFETY: the pointers among the arguments are null, a C string or
        // `how`, alive through the call; descriptors it returns are left to
        // the process's exit.
        result(unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) })
    }
    let root = c"/".as_ptr() as usize;
    // struct open_how: O_RDONLY, no mode, no resolve flags.
    let how = [0u64; 3];
    let cwd = libc::AT_FDCWD as usize;
    let x = libc::X_OK as usize;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as usize;
    // glibc tries faccessat2 first and falls back on ENOSYS only.
    // SAFETY: a valid C string; no flags beyond AT_EACCESS.
    let ret =
        unsafe { libc::faccessat(libc::AT_FDCWD, c"/".as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    let libc_faccessat = result(ret.into());
    let calls = [
        ("faccessat2", call(libc::SYS_faccessat2, [cwd, root, x, 0])),
        (
            "close_range",
            call(libc::SYS_close_range, [1000, 1000, 0, 0]),
        ),
        (
            "openat2",
            call(libc::SYS_openat2, [cwd, root, how.as_ptr() as usize, 24]),
        ),
        ("clone3", call(libc::SYS_clone3, [0; 4])),
        // Named by the profile and allowed.
        ("pidfd_open", call(libc::SYS_pidfd_open, [pid, 0, 0, 0])),
        // Not named, older than the newest named call: the default errno.
        ("acct", call(libc::SYS_acct, [0; 4])),
        ("libc_faccessat", libc_faccessat),
    ];
    // On a line of its own: libtest has written "test NAME ... " before.
    println!();
    for (name, result) in calls {
        println!("probe {name}={result}");
    }
    // glibc's pthread_create tries clone3 first, and clone on ENOSYS only.
    let thread = std::thread::Builder::new().spawn(|| 7).map(|t| t.join());
    println!(
        "probe thread={}",
        if matches!(thread, Ok(Ok(7))) {
            "ok"
        } else {
            "failed"
        }
    );
    let status = fs::read_to_string("/proc/self/status").unwrap();
    for line in status.lines() {
        let keys = [
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "NoNewPrivs",
            "Seccomp:",
        ];
        if keys.iter().any(|k| line.starts_with(k)) {
            println!("probe {line}");
        }
    }
}

/// hostd's default policy for this config's bounding set with every system
/// call numbered 435 or higher removed: like Docker's profiles before 2021,
/// it predates `clone3` (435), `close_range` (436), `openat2` (437) and
/// `faccessat2` (439); its newest call is `pidfd_open` (434).
fn pre_2021_profile(config: &Value) -> Value {
    let mut c = config.clone();
    with_default_seccomp(&mut c);
    let mut profile = c["linux"]["seccomp"].take();
    let rules = profile["syscalls"].as_array_mut().unwrap();
    for rule in rules.iter_mut() {
        rule["names"]
            .as_array_mut()
            .unwrap()
            .retain(|n| hostd::runtime::seccomp::syscall_number(n.as_str().unwrap()) < Some(435));
    }
    rules.retain(|r| !r["names"].as_array().unwrap().is_empty());
    let newest = rules
        .iter()
        .flat_map(|r| r["names"].as_array().unwrap())
        .filter_map(|n| hostd::runtime::seccomp::syscall_number(n.as_str().unwrap()))
        .max();
    assert_eq!(newest, Some(434));
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    profile
}

/// A bundle that runs the copy of this test binary as the probe.
fn probe_bundle(edit: impl FnOnce(&mut Value)) -> Bundle {
    let args = [
        "/probe",
        "--exact",
        "seccomp_probe_inside_container",
        "--nocapture",
        "--test-threads=1",
    ];
    let bundle = Bundle::new(&args, |c| {
        c["process"]["env"] = json!(["PATH=/bin", format!("{PROBE_ENV}=1")]);
        edit(c)
    });
    let exe = std::env::current_exe().unwrap();
    fs::copy(exe, bundle.path().join("rootfs/probe")).unwrap();
    bundle
}

fn probe_lines(out: &[u8]) -> Vec<String> {
    text(out)
        .lines()
        .filter(|l| l.starts_with("probe "))
        .map(str::to_string)
        .collect()
}

/// `create`, then `start`, with the init's output in a file: whether each
/// succeeded, `start`'s stderr, and what the container printed once stopped.
fn create_then_start(bundle: &Bundle, hostd: bool, id: &str) -> (bool, bool, String, String) {
    let b = bundle.path().to_str().unwrap().to_string();
    let cmd = |args: &[&str]| {
        if hostd {
            bundle.hostd(args)
        } else {
            bundle.runc(args)
        }
    };
    let out_path = bundle.path().join(format!("{id}.out"));
    let out = fs::File::create(&out_path).unwrap();
    let created = cmd(&["create", "--bundle", &b, id])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap()
        .success();
    let mut started = false;
    let mut start_err = String::new();
    if created {
        let start = cmd(&["start", id]).output().unwrap();
        started = start.status.success();
        start_err = text(&start.stderr);
        wait_status(|| cmd(&["state", id]), "stopped");
        let deleted = cmd(&["delete", "--force", id]).output().unwrap();
        assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    }
    (
        created,
        started,
        start_err,
        fs::read_to_string(&out_path).unwrap(),
    )
}

#[test]
fn pre_2021_seccomp_profile_runs_like_runc() {
    if !require_prereqs() {
        return;
    }
    let want = [
        "probe faccessat2=ENOSYS",
        "probe close_range=ENOSYS",
        "probe openat2=ENOSYS",
        "probe clone3=ENOSYS",
        "probe pidfd_open=ok",
        "probe acct=EPERM",
        "probe libc_faccessat=ok",
        "probe thread=ok",
        "probe Seccomp:\t2",
    ];
    // Docker runs containers without no_new_privs unless asked; runc's spec
    // sets it. Without it the filter needs CAP_SYS_ADMIN when it is loaded.
    // The container's capabilities: root has its bounding set, another user
    // none (runc's spec raises no ambient ones).
    for (no_new_privs, uid, caps) in [
        (false, 0, "0000000020000420"),
        (true, 0, "0000000020000420"),
        (false, 1000, "0000000000000000"),
    ] {
        let bundle = probe_bundle(|c| {
            c["process"]["noNewPrivileges"] = json!(no_new_privs);
            c["process"]["user"] = json!({"uid": uid, "gid": uid});
            c["linux"]["seccomp"] = pre_2021_profile(c);
        });
        let (h, r) = bundle.run_both();
        assert_eq!(r.status.code(), Some(0), "runc: {}", text(&r.stderr));
        assert_eq!(h.status.code(), Some(0), "hostd: {}", text(&h.stderr));
        let (hlines, rlines) = (probe_lines(&h.stdout), probe_lines(&r.stdout));
        assert_eq!(hlines, rlines, "no_new_privs {no_new_privs}: hostd vs runc");
        for line in want {
            assert!(
                hlines.iter().any(|l| l == line),
                "{line:?} missing in {hlines:#?}"
            );
        }
        // CAP_SYS_ADMIN, kept to load the filter without no_new_privs, is
        // gone once the container runs.
        let mut status = vec![
            format!("probe NoNewPrivs:\t{}", u8::from(no_new_privs)),
            "probe CapBnd:\t0000000020000420".to_string(),
        ];
        status.extend(["CapPrm", "CapEff"].map(|set| format!("probe {set}:\t{caps}")));
        for line in status {
            assert!(hlines.contains(&line), "{line:?} missing in {hlines:#?}");
        }

        // create and start as separate commands: both succeed, and the
        // container sees the same.
        let (created, started, err, out) = create_then_start(&bundle, true, &unique("hs"));
        assert!(created && started, "hostd: {err}{out}");
        let (rc, rs, rerr, rout) = create_then_start(&bundle, false, &unique("rs"));
        assert!(rc && rs, "runc: {rerr}{rout}");
        assert_eq!(probe_lines(out.as_bytes()), probe_lines(rout.as_bytes()));
        assert!(bundle.hostd_state_entries().is_empty());
    }
}

#[test]
fn init_failure_after_ready_fails_start() {
    if !require_prereqs() {
        return;
    }
    // Executable by its mode, so the lookup before READY finds it, but not a
    // format the kernel runs: execve fails after `start` released the init.
    let bundle = Bundle::new(&["/bin/notexec"], |_| {});
    let bad = bundle.path().join("rootfs/bin/notexec");
    fs::write(&bad, "not a program\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
    let before = mountinfo_mentioning(bundle.path());

    // `run`: both fail with 1.
    let (h, r) = bundle.run_both();
    assert_eq!(r.status.code(), Some(1), "runc: {}", text(&r.stderr));
    assert_eq!(h.status.code(), Some(1), "hostd: {}", text(&h.stderr));
    let err = text(&h.stderr);
    assert!(
        err.contains("execve /bin/notexec") && err.contains("Exec format error"),
        "{err}"
    );
    assert!(bundle.hostd_state_entries().is_empty());

    // `create` succeeds in both; hostd's `start` reports the failed execve
    // and exits 1, where runc's exits 0 with the error only on the
    // container's stderr.
    let (created, started, err, _) = create_then_start(&bundle, true, &unique("hx"));
    assert!(created && !started, "{err}");
    assert!(
        err.contains("container init failed execve /bin/notexec")
            && err.contains("Exec format error"),
        "{err}"
    );
    let (rc, rs, rerr, rout) = create_then_start(&bundle, false, &unique("rx"));
    assert!(rc && rs, "{rerr}");
    assert!(rout.contains("exec format error"), "{rout}");
    assert!(bundle.hostd_state_entries().is_empty());
    assert_eq!(mountinfo_mentioning(bundle.path()), before, "stray mount");
}

/// Whether this host has the cgroup v2 backend (then limits are applied,
/// not refused).
fn host_has_cgroup_v2() -> bool {
    hostd::runtime::cgroups::Cgroupfs::detect()
        .available()
        .is_ok()
}

#[test]
fn resources_without_cgroup_v2() {
    if !require_prereqs() {
        return;
    }
    let script = "echo ok";
    // `runc spec` writes a device rule list and nothing else: no limit, so
    // both run it. So do Docker's zero values, which mean "not set".
    let zeros = |c: &mut Value| {
        let devices = c["linux"]["resources"]["devices"].clone();
        assert!(devices.is_array());
        c["linux"]["resources"] = json!({
            "devices": devices,
            "memory": {"limit": 0, "swap": 0},
            "cpu": {"shares": 0, "quota": 0},
            "pids": {"limit": 0},
            "unified": {}
        });
    };
    for edit in [&(|_: &mut Value| {}) as &dyn Fn(&mut Value), &zeros] {
        let bundle = Bundle::new(&["sh", "-c", script], edit);
        let (h, r) = bundle.run_both();
        assert_eq!(r.status.code(), Some(0), "runc: {}", text(&r.stderr));
        assert_eq!(h.status.code(), Some(0), "hostd: {}", text(&h.stderr));
        assert_eq!(text(&h.stdout), text(&r.stdout));
    }
    if host_has_cgroup_v2() {
        eprintln!("resources_without_cgroup_v2: this host has cgroup v2; limits are applied there");
        return;
    }
    // A limit is refused by `create` and by `run`, naming the fields, with
    // nothing left behind.
    let limits = |c: &mut Value| {
        c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
        c["linux"]["resources"]["pids"] = json!({"limit": 10});
    };
    let err = refused(&["sh", "-c", script], limits);
    assert!(
        err.contains("linux.resources.memory.limit")
            && err.contains("linux.resources.pids.limit")
            && err.contains("cgroup v2"),
        "{err}"
    );
    let bundle = Bundle::new(&["sh", "-c", script], limits);
    let b = bundle.path().to_str().unwrap().to_string();
    let out = bundle
        .hostd(&["create", "--bundle", &b, &unique("lim")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("linux.resources.memory.limit"));
    assert!(bundle.hostd_state_entries().is_empty());
    // runc applies these through cgroup v1 here: hostd has no v1 backend.
    let r = bundle
        .runc(&["run", "--bundle", &b, &unique("rlim")])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "runc: {}", text(&r.stderr));

    // `unified` (cgroup v2 files) is refused by both.
    let unified = |c: &mut Value| {
        c["linux"]["resources"]["unified"] = json!({"pids.max": "10"});
    };
    let err = refused(&["sh", "-c", script], unified);
    assert!(err.contains("linux.resources.unified"), "{err}");
    let bundle = Bundle::new(&["sh", "-c", script], unified);
    let (_, r) = bundle.run_both();
    assert_eq!(r.status.code(), Some(1), "runc: {}", text(&r.stderr));
}

// ---- namespaces, root propagation, LSM labels (issue 10 items 4, 5, 7) ----

/// Runs `cmd`, which must succeed.
fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
}

/// A tmpfs mounted on the host at a path under a bundle, detached on drop
/// (declare it after the [`Bundle`], so that it goes first).
struct HostTmpfs(PathBuf);

impl HostTmpfs {
    fn new(dir: PathBuf, shared: bool) -> HostTmpfs {
        fs::create_dir_all(&dir).unwrap();
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&dir));
        let mount = HostTmpfs(dir);
        if shared {
            sh(Command::new("mount").arg("--make-shared").arg(&mount.0));
        }
        mount
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A process holding namespaces for a test to join, killed on drop.
struct NsHolder(std::process::Child);

impl NsHolder {
    /// `unshare ARGS sh -c 'SETUP; echo ready; exec sleep 60'`, once ready.
    fn new(args: &[&str], setup: &str) -> NsHolder {
        use std::io::BufRead;
        let script = format!("{setup} && echo ready && exec sleep 60");
        let mut child = Command::new("unshare")
            .args(args)
            .args(["sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "unshare {args:?} failed");
        NsHolder(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn ns(&self, kind: &str) -> String {
        format!("/proc/{}/ns/{kind}", self.pid())
    }
}

impl Drop for NsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kind:[inode]`, as `readlink /proc/self/ns/KIND` prints it.
fn ns_id(path: &str) -> String {
    fs::read_link(path).unwrap().to_string_lossy().into_owned()
}

/// `hostd oci run` and `runc run` of the same bundle must both fail (exit
/// 1) and leave no state or mount; returns hostd's stderr.
fn refused_like_runc(args: &[&str], edit: impl FnOnce(&mut Value)) -> String {
    let bundle = Bundle::new(args, edit);
    let before = mountinfo_mentioning(bundle.path());
    let (h, r) = bundle.run_both();
    assert_eq!(h.status.code(), Some(1), "hostd: {}", text(&h.stderr));
    assert_eq!(r.status.code(), Some(1), "runc: {}", text(&r.stderr));
    assert_nothing_left(&bundle, before);
    text(&h.stderr)
}

/// The propagation fields of the container's `/` in its mountinfo.
const ROOT_PROPAGATION: &str = r#"awk '$5 == "/" { s = "root"; for (i = 7; $i != "-"; i++) s = s " " $i; print s }' /proc/self/mountinfo"#;

#[test]
fn rootfs_propagation_like_runc() {
    if !require_prereqs() {
        return;
    }
    for word in [
        "private",
        "rprivate",
        "slave",
        "rslave",
        "shared",
        "rshared",
        "unbindable",
        "runbindable",
    ] {
        let bundle = Bundle::new(&["sh", "-c", ROOT_PROPAGATION], |c| {
            c["linux"]["rootfsPropagation"] = json!(word);
        });
        let (h, r) = bundle.run_both();
        let (hout, rout) = (text(&h.stdout), text(&r.stdout));
        assert_eq!(h.status.code(), Some(0), "{word}: {}", text(&h.stderr));
        let root = hout.trim();
        match word {
            "shared" | "rshared" => assert!(root.starts_with("root shared:"), "{word}: {root}"),
            "unbindable" | "runbindable" => assert_eq!(root, "root unbindable", "{word}"),
            // The host's `/` is private here (no master), or shared on a
            // systemd host (the slave modes then show `master:N`).
            _ => assert!(
                !root.contains("shared:") && !root.contains("unbindable"),
                "{word}: {root}"
            ),
        }
        let same = r.status.code() == h.status.code() && rout == hout;
        // runc 1.1 (Debian 12) leaves a shared root private, and fails to
        // bind the rootfs under an unbindable `/`; runc 1.2.7 and 1.3 apply
        // the propagation after pivot_root, as hostd does.
        let runc_1_1 = match word {
            "shared" | "rshared" => r.status.success() && rout.trim() == "root",
            "unbindable" | "runbindable" => {
                r.status.code() == Some(1) && text(&r.stderr).contains("invalid argument")
            }
            _ => false,
        };
        assert!(
            same || runc_1_1,
            "{word}: hostd {hout:?}, runc {:?} {rout:?} {}",
            r.status.code(),
            text(&r.stderr)
        );
    }
    let err = refused_like_runc(&["true"], |c| {
        c["linux"]["rootfsPropagation"] = json!("bogus");
    });
    assert!(
        err.contains("linux.rootfsPropagation: \"bogus\": not one of shared, slave"),
        "{err}"
    );
}

/// Runs the bundle with `runtime` until its init runs, mounts a tmpfs with
/// a flag file at `vol/sub` on the host, and returns what the container
/// saw at `/vol/sub`.
fn sees_later_host_mount(bundle: &Bundle, runtime: &str, vol: &Path) -> String {
    let b = bundle.path().to_str().unwrap().to_string();
    let id = unique(runtime);
    let cmd = |args: &[&str]| match runtime {
        "hostd" => bundle.hostd(args),
        _ => bundle.runc(args),
    };
    let child = cmd(&["run", "--bundle", &b, &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_status(|| cmd(&["state", &id]), "running");
    let sub = HostTmpfs::new(vol.join("sub"), false);
    fs::write(sub.0.join("flag"), "seen").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{runtime}");
    text(&out.stdout).trim().to_string()
}

#[test]
fn slave_root_receives_host_mounts_like_runc() {
    if !require_prereqs() {
        return;
    }
    let script = "i=0; while [ $i -lt 40 ] && [ ! -e /vol/sub/flag ]; do sleep 0.05; \
                  i=$((i+1)); done; cat /vol/sub/flag 2>/dev/null || echo missing";
    for (word, want) in [("rslave", "seen"), ("rprivate", "missing")] {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        let bundle = Bundle::new(&["sh", "-c", script], |c| {
            c["linux"]["rootfsPropagation"] = json!(word);
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/vol", "type": "bind", "source": vol, "options": ["rbind"]
            }));
        });
        let _vol = HostTmpfs::new(vol.clone(), true);
        fs::create_dir(vol.join("sub")).unwrap();
        assert_eq!(
            sees_later_host_mount(&bundle, "hostd", &vol),
            want,
            "{word}"
        );
        if word == "rslave" {
            assert_eq!(sees_later_host_mount(&bundle, "runc", &vol), want, "runc");
        }
    }
}

#[test]
fn shared_root_sends_container_mounts_to_the_host_like_runc() {
    if !require_prereqs() {
        return;
    }
    let script = "mount -t tmpfs from-container /vol/in && echo mounted";
    for (word, runtimes) in [
        ("rshared", &["hostd", "runc"][..]),
        ("rprivate", &["hostd"]),
    ] {
        for runtime in runtimes {
            let dir = tempfile::tempdir().unwrap();
            let vol = dir.path().join("vol");
            let bundle = Bundle::new(&["sh", "-c", script], |c| {
                c["linux"]["rootfsPropagation"] = json!(word);
                c["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/vol", "type": "bind", "source": vol, "options": ["rbind"]
                }));
                let caps = &mut c["process"]["capabilities"];
                for set in ["bounding", "effective", "permitted"] {
                    caps[set]
                        .as_array_mut()
                        .unwrap()
                        .push(json!("CAP_SYS_ADMIN"));
                }
            });
            let _vol = HostTmpfs::new(vol.clone(), true);
            fs::create_dir(vol.join("in")).unwrap();
            let b = bundle.path().to_str().unwrap().to_string();
            let args = ["run", "--bundle", &b, &unique(runtime)];
            let out = match *runtime {
                "hostd" => bundle.hostd(&args),
                _ => bundle.runc(&args),
            }
            .output()
            .unwrap();
            assert_eq!(
                text(&out.stdout).trim(),
                "mounted",
                "{runtime} {word}: {}",
                text(&out.stderr)
            );
            let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
            let point = format!(" {}/in ", vol.display());
            let on_host = info
                .lines()
                .any(|l| l.contains(&point) && l.contains(" from-container "));
            assert_eq!(on_host, word == "rshared", "{runtime} {word}:\n{info}");
        }
    }
}

/// Whether this machine's `/` propagates (`shared:N` in mountinfo).
fn root_is_shared() -> bool {
    hostd::os::root_is_shared(&fs::read_to_string("/proc/self/mountinfo").unwrap())
}

#[test]
fn unlisted_mount_namespace_is_the_runtimes_like_runc() {
    if !require_prereqs() {
        return;
    }
    let script = "echo mnt=$(readlink /proc/self/ns/mnt); hostname; ls /; \
                  awk '{ print $5 }' /proc/self/mountinfo | grep -v '^/sys/fs/cgroup' | sort";
    let no_mount_ns = |c: &mut Value| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "mount");
        // runc: "unable to restrict sys entries without a private MNT
        // namespace".
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
    };
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        no_mount_ns(c);
        // runc ignores root.readonly here; hostd honours it (below).
        c["root"]["readonly"] = json!(false);
    });
    let rootfs = bundle.path().join("rootfs");
    let before = mountinfo_mentioning(bundle.path());
    let b = bundle.path().to_str().unwrap().to_string();
    let h = bundle
        .hostd(&["run", "--bundle", &b, &unique("h")])
        .output()
        .unwrap();
    // hostd takes its mounts down again; runc leaves them on the host.
    assert_eq!(mountinfo_mentioning(bundle.path()), before, "stray mount");
    // runc, with no mount namespace of the container's own, makes the
    // host's `/` a slave (`MS_SLAVE|MS_REC`), which leaves a shared root
    // private: put back what this machine had (hostd's containers copy a
    // namespace that needs it shared, docs/containers.md).
    let root_was_shared = root_is_shared();
    let r = bundle
        .runc(&["run", "--bundle", &b, &unique("r")])
        .output()
        .unwrap();
    if root_was_shared && !root_is_shared() {
        sh(Command::new("mount").args(["--make-rshared", "/"]));
    }
    while mountinfo_mentioning(bundle.path()) > before {
        sh(Command::new("umount").arg("-R").arg("-l").arg(&rootfs));
    }
    assert_eq!(h.status.code(), Some(0), "{}", text(&h.stderr));
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let hout = text(&h.stdout);
    assert_eq!(hout, text(&r.stdout));
    let mine = ns_id("/proc/self/ns/mnt");
    assert!(hout.starts_with(&format!("mnt={mine}\n")), "{hout}");
    for want in ["bin", "/proc", "/dev/pts", "/sys"] {
        assert!(hout.lines().any(|l| l == want), "{want} in {hout}");
    }

    // create and delete: the mounts exist while the container does.
    let bundle = Bundle::new(&["sh", "-c", "touch /x 2>&1; sleep 60"], no_mount_ns);
    let b = bundle.path().to_str().unwrap().to_string();
    let before = mountinfo_mentioning(bundle.path());
    let id = unique("c");
    let out = bundle
        .hostd(&["run", "--detach", "--bundle", &b, &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    assert!(mountinfo_mentioning(bundle.path()) > before);
    // root.readonly holds in the runtime's mount namespace too.
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = format!(" {} ", bundle.path().join("rootfs").display());
    assert!(
        info.lines()
            .any(|l| l.contains(&root) && l.contains(" ro,")),
        "{info}"
    );
    sh(&mut bundle.hostd(&["delete", "--force", &id]));
    assert_eq!(mountinfo_mentioning(bundle.path()), before, "stray mount");

    // runc's default config masks paths: both refuse it.
    let err = refused_like_runc(&["true"], |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "mount");
    });
    assert!(
        err.contains("linux.maskedPaths: needs a mount namespace of the container's own"),
        "{err}"
    );
}

#[test]
fn namespaces_joined_by_path_like_runc() {
    if !require_prereqs() {
        return;
    }
    let script = "hostname; cat /mnt/marker; for t in uts ipc net mnt; do \
                  echo $t=$(readlink /proc/self/ns/$t); done";
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        c["hostname"] = json!("joined");
    });
    let rootfs = bundle.path().join("rootfs");
    fs::create_dir(rootfs.join("mnt")).unwrap();
    let config = bundle.path().join("config.json");
    let spec: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    let b = bundle.path().to_str().unwrap().to_string();
    let mut outputs = Vec::new();
    for runtime in ["hostd", "runc"] {
        // runc pivots the mount namespace it joins: one holder each, with a
        // tmpfs under the rootfs that only that namespace has.
        let holder = NsHolder::new(
            &[
                "--uts",
                "--ipc",
                "--net",
                "--mount",
                "--propagation",
                "private",
            ],
            &format!(
                "mount -t tmpfs marker {0}/mnt && echo in-namespace > {0}/mnt/marker",
                rootfs.display()
            ),
        );
        let mut spec = spec.clone();
        for n in spec["linux"]["namespaces"].as_array_mut().unwrap() {
            let kind = match n["type"].as_str().unwrap() {
                "uts" => "uts",
                "ipc" => "ipc",
                "network" => "net",
                "mount" => "mnt",
                _ => continue,
            };
            n["path"] = json!(holder.ns(kind));
        }
        fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let args = ["run", "--bundle", &b, &unique(runtime)];
        let out = match runtime {
            "hostd" => bundle.hostd(&args),
            _ => bundle.runc(&args),
        }
        .output()
        .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{runtime}: {}",
            text(&out.stderr)
        );
        let mut seen = text(&out.stdout);
        for kind in ["uts", "ipc", "net", "mnt"] {
            seen = seen.replace(&ns_id(&holder.ns(kind)), "joined");
        }
        // The host name was set in the joined namespace, for its holder too.
        let name = Command::new("nsenter")
            .arg(format!("--uts={}", holder.ns("uts")))
            .arg("hostname")
            .output()
            .unwrap();
        assert_eq!(text(&name.stdout).trim(), "joined", "{runtime}");
        outputs.push(seen);
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(
        outputs[0],
        "joined\nin-namespace\nuts=joined\nipc=joined\nnet=joined\nmnt=joined\n"
    );
    assert_eq!(mountinfo_mentioning(bundle.path()), 0, "stray mount");
}

#[test]
fn user_and_pid_namespaces_joined_by_path_like_runc() {
    if !require_prereqs() {
        return;
    }
    // A user namespace mapping 0-65535 to 100000-165535, and a pid
    // namespace it owns (its init is `sleep`).
    let holder = NsHolder::new(&["--user", "--pid", "--fork", "--kill-child"], "true");
    let pid = holder.pid();
    let map = "0 100000 65536";
    fs::write(format!("/proc/{pid}/uid_map"), map).unwrap();
    fs::write(format!("/proc/{pid}/gid_map"), map).unwrap();
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let sleeper = children.split_whitespace().next().unwrap().to_string();
    let user = format!("/proc/{sleeper}/ns/user");
    let pidns = format!("/proc/{sleeper}/ns/pid");
    let script = "cat /proc/self/uid_map; id; stat -c '%u %g' /bin/busybox; \
                  grep CapEff /proc/self/status; echo user=$(readlink /proc/self/ns/user); \
                  echo pid=$(readlink /proc/self/ns/pid); ps -o user,comm | grep sleep";
    let bundle = Bundle::new(&["sh", "-c", script], |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut().filter(|n| n["type"] == "pid") {
            n["path"] = json!(pidns);
        }
        ns.push(json!({"type": "user", "path": user}));
        // runc 1.1 wants the mappings even for a joined user namespace.
        let mapping = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["uidMappings"] = mapping.clone();
        c["linux"]["gidMappings"] = mapping;
    });
    let (h, r) = bundle.run_both();
    assert_eq!(h.status.code(), Some(0), "hostd: {}", text(&h.stderr));
    assert_eq!(r.status.code(), Some(0), "runc: {}", text(&r.stderr));
    let hout = text(&h.stdout);
    assert_eq!(hout, text(&r.stdout));
    let hout = hout
        .replace(&ns_id(&user), "joined")
        .replace(&ns_id(&pidns), "joined");
    let lines: Vec<&str> = hout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(lines[1], "uid=0 gid=0");
    assert_eq!(lines[2], "65534 65534");
    assert_eq!(&lines[4..6], ["user=joined", "pid=joined"]);
    // The holder's sleep is pid 1 of the joined pid namespace.
    assert!(lines[6].ends_with("sleep"), "{hout}");
}

#[test]
fn bad_namespace_paths_are_refused_like_runc() {
    if !require_prereqs() {
        return;
    }
    for (kind, path, want) in [
        (
            "uts",
            "/etc/hostname",
            "/etc/hostname: not a namespace file",
        ),
        (
            "uts",
            "/proc/self/ns/net",
            "is a network namespace, not a uts namespace",
        ),
        (
            "mount",
            "/proc/self/ns/uts",
            "is a uts namespace, not a mount namespace",
        ),
        ("network", "/no/such/netns", "/no/such/netns: No such file"),
        ("ipc", "proc/self/ns/ipc", "not an absolute path"),
    ] {
        let err = refused_like_runc(&["true"], |c| {
            for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == kind {
                    n["path"] = json!(path);
                }
            }
        });
        assert!(
            err.contains("linux.namespaces[") && err.contains(want),
            "{kind} {path}: {err}"
        );
    }
}

#[test]
fn security_labels_like_runc() {
    if !require_prereqs() {
        return;
    }
    let host = hostd::runtime::lsm::HostLsm::detect();
    let script = "cat /proc/self/attr/current";
    let apparmor = |c: &mut Value| c["process"]["apparmorProfile"] = json!("unconfined");
    if host.apparmor {
        // Without loading a profile, "unconfined" is the one to apply.
        let bundle = Bundle::new(&["sh", "-c", script], apparmor);
        let (h, r) = bundle.run_both();
        assert!(h.status.success(), "{}", text(&h.stderr));
        assert_eq!(text(&h.stdout), text(&r.stdout));
        assert!(text(&h.stdout).starts_with("unconfined"));
    } else {
        // runc's init fails writing /proc/self/attr/exec; hostd refuses
        // before making anything.
        let err = refused_like_runc(&["true"], apparmor);
        assert!(
            err.contains(
                "process.apparmorProfile: \"unconfined\" cannot be applied: \
                 AppArmor is not enabled on this host"
            ),
            "{err}"
        );
    }
    if !host.selinux {
        let err = refused_like_runc(&["true"], |c| {
            c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
        });
        assert!(err.contains("process.selinuxLabel") && err.contains("SELinux is not enabled"));
        // runc passes it to the kernel, which refuses `context=` on tmpfs.
        let err = refused_like_runc(&["true"], |c| {
            c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0");
        });
        assert!(err.contains("linux.mountLabel") && err.contains("SELinux is not enabled"));
    }
    // Empty means none, for both.
    let bundle = Bundle::new(&["true"], |c| {
        c["process"]["apparmorProfile"] = json!("");
        c["process"]["selinuxLabel"] = json!("");
    });
    let (h, r) = bundle.run_both();
    assert_eq!((h.status.code(), r.status.code()), (Some(0), Some(0)));
}

// ---- hooks (issue 10 item 6) ----
//
// Every hook runs one script that records what it saw (argv, env, working
// directory, uid, which namespaces it shares with the test, root, caps,
// host name, the state on stdin) into `<bundle>/hooks/<name>` and appends
// its name to `<bundle>/hooks/order`. That directory is bound into the
// container at the same path so that `startContainer` hooks (which run
// inside) can write there too. The same bundle runs under hostd and runc.

const HOOK_SCRIPT: &str = r#"#!/bin/sh
name=$1
shift
{
  echo "argv=$name $*"
  echo "env=$(env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort | tr '\n' ' ')"
  echo "cwd=$(pwd)"
  echo "uid=$(id -u)"
  for n in mnt pid net uts ipc user; do
    eval host=\$HOST_NS_$n
    if [ "$(readlink /proc/self/ns/$n)" = "$host" ]; then echo "ns $n test's"; else echo "ns $n other"; fi
  done
  if [ -e /.container-root ]; then echo "root=container"; else echo "root=host"; fi
  grep -E '^(CapEff|NoNewPrivs):' /proc/self/status
  echo "hostname=$(hostname)"
  echo "state=$(cat)"
} > "$HOOK_OUT/$name.tmp" 2>&1
mv "$HOOK_OUT/$name.tmp" "$HOOK_OUT/$name"
echo "$name" >> "$HOOK_OUT/order"
"#;

/// The hooks' output directory in a bundle.
fn hook_dir(bundle: &Path) -> PathBuf {
    bundle.join("hooks")
}

/// A recording hook named `name` (the script's first argument) for
/// `config.json`; `inside` for hooks that run in the container's root.
fn recording_hook(bundle: &Path, name: &str, inside: bool) -> Value {
    let path = if inside {
        "/bin/record-hook".to_string()
    } else {
        bundle.join("record-hook").to_string_lossy().into_owned()
    };
    let mut env = vec![
        format!("HOOK_OUT={}", hook_dir(bundle).display()),
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    ];
    for ns in ["mnt", "pid", "net", "uts", "ipc", "user"] {
        let link = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        env.push(format!("HOST_NS_{ns}={}", link.display()));
    }
    json!({"path": path, "args": ["record-hook", name, "extra arg"], "env": env, "timeout": 10})
}

/// A bundle whose config has `hooks` (built by `make`, given the bundle
/// path), with the recording script installed and the output directory
/// bound into the container.
fn hook_bundle(args: &[&str], make: impl FnOnce(&Path) -> Value) -> Bundle {
    let bundle = Bundle::new(args, |_| {});
    let path = bundle.path().to_path_buf();
    let out = hook_dir(&path);
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    for script in [
        path.join("record-hook"),
        path.join("rootfs/bin/record-hook"),
    ] {
        fs::write(&script, HOOK_SCRIPT).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(path.join("rootfs/.container-root"), "").unwrap();
    let config_path = path.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["hooks"] = make(&path);
    config["annotations"] = json!({"org.example.hooks": "yes"});
    let dest = out.to_str().unwrap();
    config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": dest, "type": "bind", "source": dest, "options": ["rbind", "rw"]}),
    );
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    bundle
}

/// One recording hook of every kind.
fn all_six(bundle: &Path) -> Value {
    let mut hooks = serde_json::Map::new();
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        let inside = kind == "startContainer";
        hooks.insert(kind.into(), json!([recording_hook(bundle, kind, inside)]));
    }
    Value::Object(hooks)
}

/// What the hooks recorded, by name, with the state JSON parsed and made
/// comparable between runtimes: `ociVersion` dropped, `pid` reduced to "1"
/// (the init in its own pid namespace) or "host" (a host pid).
fn recorded(bundle: &Path) -> std::collections::BTreeMap<String, (Vec<String>, Value)> {
    let mut out = std::collections::BTreeMap::new();
    for entry in fs::read_dir(hook_dir(bundle)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "order" || name.ends_with(".tmp") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let mut lines = Vec::new();
        let mut state = Value::Null;
        for line in text.lines() {
            match line.strip_prefix("state=") {
                Some(json) => {
                    state = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
                    let obj = state.as_object_mut().unwrap();
                    assert!(obj.remove("ociVersion").is_some());
                    if let Some(pid) = obj.get_mut("pid") {
                        let n = pid.as_i64().unwrap();
                        assert!(n > 0);
                        *pid = json!(if n == 1 { "1" } else { "host" });
                    }
                }
                None => lines.push(line.to_string()),
            }
        }
        out.insert(name, (lines, state));
    }
    out
}

fn order(bundle: &Path) -> Vec<String> {
    let text = fs::read_to_string(hook_dir(bundle).join("order")).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

fn clear_hook_output(bundle: &Path) {
    for entry in fs::read_dir(hook_dir(bundle)).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
}

#[test]
fn hooks_see_what_runcs_hooks_see() {
    if !require_prereqs() {
        return;
    }
    let bundle = hook_bundle(&["true"], all_six);
    let b = bundle.path().to_str().unwrap().to_string();
    // The same id under both state roots, so the states compare equal.
    let id = unique("hooks");
    let run = |mut c: Command| {
        let out = c.current_dir(bundle.path()).output().unwrap();
        let seen = recorded(bundle.path());
        let order = order(bundle.path());
        clear_hook_output(bundle.path());
        (out, seen, order)
    };
    let (h, hseen, horder) = run(bundle.hostd(&["run", "--bundle", &b, &id]));
    let (r, mut rseen, rorder) = run(bundle.runc(&["run", "--bundle", &b, &id]));
    assert_eq!(h.status.code(), Some(0), "hostd: {}", text(&h.stderr));
    assert_eq!(r.status.code(), Some(0), "runc: {}", text(&r.stderr));

    // The specification's order. runc 1.1 runs poststart during create,
    // before startContainer; hostd after the process started.
    let spec_order = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ];
    assert_eq!(horder, spec_order);
    let mut sorted = rorder.clone();
    sorted.sort();
    let mut want = spec_order.to_vec();
    want.sort();
    assert_eq!(sorted, want, "runc ran {rorder:?}");

    // Everything else the same; poststart's status is "created" in runc 1.1
    // (it runs before start) and "running" in hostd.
    assert_eq!(rseen["poststart"].1["status"], "created");
    assert_eq!(hseen["poststart"].1["status"], "running");
    rseen.get_mut("poststart").unwrap().1["status"] = json!("running");
    assert_eq!(
        hseen.keys().collect::<Vec<_>>(),
        rseen.keys().collect::<Vec<_>>()
    );
    for (name, (lines, state)) in &hseen {
        assert_eq!(lines, &rseen[name].0, "{name}: what the hook saw");
        assert_eq!(state, &rseen[name].1, "{name}: its state");
    }

    // And the facts themselves.
    let has = |name: &str, want: &str| {
        let lines = &hseen[name].0;
        assert!(
            lines.iter().any(|l| l == want),
            "{name}: {want:?} not in {lines:#?}"
        );
    };
    for name in spec_order {
        has(name, &format!("argv={name} extra arg"));
        has(name, "uid=0");
    }
    for name in ["prestart", "createRuntime", "poststart", "poststop"] {
        has(name, &format!("cwd={b}"));
        has(name, "root=host");
        for ns in ["mnt", "pid", "net", "uts", "ipc"] {
            has(name, &format!("ns {ns} test's"));
        }
    }
    // createContainer: the container's namespaces, before pivot_root.
    has("createContainer", &format!("cwd={b}/rootfs"));
    has("createContainer", "root=host");
    // startContainer: inside, with the container's capabilities.
    has("startContainer", "root=container");
    has("startContainer", "hostname=runc");
    has("startContainer", "CapEff:\t0000000020000420");
    has("startContainer", "NoNewPrivs:\t1");
    for name in ["createContainer", "startContainer"] {
        for ns in ["mnt", "pid", "net", "uts", "ipc"] {
            has(name, &format!("ns {ns} other"));
        }
    }
    let state = |name: &str| hseen[name].1.clone();
    let base = json!({"id": id, "bundle": b, "annotations": {"org.example.hooks": "yes"}});
    let with = |status: &str, pid: Option<&str>| {
        let mut v = base.clone();
        v["status"] = json!(status);
        if let Some(p) = pid {
            v["pid"] = json!(p);
        }
        v
    };
    assert_eq!(state("prestart"), with("creating", Some("host")));
    assert_eq!(state("createRuntime"), with("creating", Some("host")));
    assert_eq!(state("createContainer"), with("creating", Some("1")));
    assert_eq!(state("startContainer"), with("created", Some("1")));
    assert_eq!(state("poststart"), with("running", Some("host")));
    assert_eq!(state("poststop"), with("stopped", None));
    assert!(bundle.hostd_state_entries().is_empty());
}

#[test]
fn each_verb_runs_its_hooks() {
    if !require_prereqs() {
        return;
    }
    let bundle = hook_bundle(&["sleep", "60"], all_six);
    let b = bundle.path().to_str().unwrap().to_string();
    let id = unique("hv");
    let err_file = bundle.path().join("stderr");
    let quiet = |mut c: Command| {
        let f = fs::File::create(&err_file).unwrap();
        let status = c
            .current_dir(bundle.path())
            .stdout(Stdio::null())
            .stderr(f)
            .status();
        assert!(
            status.unwrap().success(),
            "{}",
            fs::read_to_string(&err_file).unwrap()
        );
        order(bundle.path())
    };
    assert_eq!(
        quiet(bundle.hostd(&["create", "--bundle", &b, &id])),
        ["prestart", "createRuntime", "createContainer"]
    );
    // start returns after the process was executed and poststart ran.
    assert_eq!(
        quiet(bundle.hostd(&["start", &id]))[3..],
        ["startContainer", "poststart"]
    );
    assert_eq!(
        wait_status(|| bundle.hostd(&["state", &id]), "running")["status"],
        "running"
    );
    assert!(quiet(bundle.hostd(&["kill", &id, "KILL"])).len() == 5);
    wait_status(|| bundle.hostd(&["state", &id]), "stopped");
    assert_eq!(quiet(bundle.hostd(&["delete", &id]))[5..], ["poststop"]);
    assert!(bundle.hostd_state_entries().is_empty());

    // delete of a container that was never started runs poststop too.
    clear_hook_output(bundle.path());
    let id = unique("hd");
    quiet(bundle.hostd(&["create", "--bundle", &b, &id]));
    assert_eq!(quiet(bundle.hostd(&["delete", &id]))[3..], ["poststop"]);
}

/// Runs the bundle with both runtimes; returns their outputs, checking for
/// each that no state or mount is left behind, nor a process whose command
/// line matches `hook` (a hook that timed out).
fn run_both_clean(bundle: &Bundle, hook: Option<&str>) -> (Output, Output) {
    let b = bundle.path().to_str().unwrap().to_string();
    let before = mountinfo_mentioning(bundle.path());
    let run = |mut c: Command, root: &Path| {
        let out = c.current_dir(bundle.path()).output().unwrap();
        let left: Vec<_> = fs::read_dir(root)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "state left in {}: {left:?}",
            root.display()
        );
        assert_eq!(mountinfo_mentioning(bundle.path()), before, "stray mount");
        if let Some(pattern) = hook {
            let stray = Command::new("pgrep")
                .args(["-f", pattern])
                .output()
                .unwrap();
            assert!(
                stray.stdout.is_empty(),
                "hook left: {}",
                text(&stray.stdout)
            );
        }
        out
    };
    let h = run(
        bundle.hostd(&["run", "--bundle", &b, &unique("hf")]),
        &bundle.hostd_root,
    );
    let r = run(
        bundle.runc(&["run", "--bundle", &b, &unique("rf")]),
        &bundle.runc_root,
    );
    (h, r)
}

#[test]
fn failing_create_hooks_fail_create_like_runc() {
    if !require_prereqs() {
        return;
    }
    let failing = [
        (json!({"path": "/bin/false"}), "exited with status 1"),
        (
            json!({"path": "/bin/sleep", "args": ["sleep", "6061"], "timeout": 1}),
            "ran past its timeout of 1s and was killed",
        ),
        (
            json!({"path": "/no/such/hook"}),
            "could not be executed: No such file or directory",
        ),
    ];
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
    ] {
        for (hook, message) in &failing {
            let bundle = hook_bundle(
                &["sh", "-c", "echo ran"],
                |b| json!({kind: [hook], "poststop": [recording_hook(b, "poststop", false)]}),
            );
            let started = Instant::now();
            let (h, r) = run_both_clean(&bundle, Some("sleep 6061"));
            let herr = text(&h.stderr);
            assert_eq!(h.status.code(), Some(1), "{kind} {hook}: {herr}");
            assert_eq!(
                r.status.code(),
                Some(1),
                "runc {kind} {hook}: {}",
                text(&r.stderr)
            );
            let want = format!(
                "{kind} hook #0 ({}) {message}",
                hook["path"].as_str().unwrap()
            );
            assert!(herr.contains(&want), "{want:?} not in {herr:?}");
            // The container never ran; the lifecycle went on at delete.
            assert_eq!(text(&h.stdout), "", "{kind}");
            assert_eq!(text(&r.stdout), "", "{kind}");
            assert_eq!(
                order(bundle.path()),
                ["poststop", "poststop"],
                "{kind} {hook}"
            );
            assert!(started.elapsed() < Duration::from_secs(8));
        }
    }
}

#[test]
fn failing_poststart_and_poststop_hooks_are_only_logged() {
    if !require_prereqs() {
        return;
    }
    for kind in ["poststart", "poststop"] {
        let bundle = hook_bundle(&["sh", "-c", "echo ran"], |b| {
            // The first fails, the second still runs.
            json!({kind: [{"path": "/bin/false"}, recording_hook(b, kind, false)]})
        });
        let (h, r) = run_both_clean(&bundle, None);
        let herr = text(&h.stderr);
        assert_eq!(h.status.code(), Some(0), "{kind}: {herr}");
        assert_eq!(text(&h.stdout), "ran\n");
        assert!(
            herr.contains("level=warning")
                && herr.contains(&format!("{kind} hook #0 (/bin/false) exited with status 1")),
            "{herr}"
        );
        // hostd ran the second hook; runc 1.1 stops at the first failure,
        // and fails `run` for a poststart one (it runs them during create).
        assert_eq!(order(bundle.path()), [kind], "{kind}");
        let want_runc = if kind == "poststart" { 1 } else { 0 };
        assert_eq!(
            r.status.code(),
            Some(want_runc),
            "runc {kind}: {}",
            text(&r.stderr)
        );
    }
}

#[test]
fn a_failing_start_container_hook_fails_start_and_stops_the_container() {
    if !require_prereqs() {
        return;
    }
    let bundle = hook_bundle(&["sleep", "60"], |b| {
        json!({"startContainer": [{"path": "/bin/false"}],
               "poststart": [recording_hook(b, "poststart", false)],
               "poststop": [recording_hook(b, "poststop", false)]})
    });
    let b = bundle.path().to_str().unwrap().to_string();
    let id = unique("sc");
    let err_file = bundle.path().join("stderr");
    let quiet = |mut c: Command| {
        let f = fs::File::create(&err_file).unwrap();
        let status = c.stdout(Stdio::null()).stderr(f).status().unwrap();
        (status.code(), fs::read_to_string(&err_file).unwrap())
    };
    assert_eq!(
        quiet(bundle.hostd(&["create", "--bundle", &b, &id])).0,
        Some(0)
    );
    // runc 1.1's start cannot tell (its init runs the hook after start
    // returned) and exits 0; hostd reports it, as the specification asks.
    let (code, err) = quiet(bundle.hostd(&["start", &id]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("startContainer hook #0 (/bin/false) exited with status 1"),
        "{err}"
    );
    assert_eq!(
        wait_status(|| bundle.hostd(&["state", &id]), "stopped")["status"],
        "stopped"
    );
    assert!(order(bundle.path()).is_empty(), "poststart must not run");
    assert_eq!(quiet(bundle.hostd(&["delete", &id])).0, Some(0));
    assert_eq!(order(bundle.path()), ["poststop"]);
    assert!(bundle.hostd_state_entries().is_empty());
}

#[test]
fn unusable_hooks_are_refused_before_anything_is_made() {
    if !require_prereqs() {
        return;
    }
    let err = refused(&["true"], |c| {
        c["hooks"] = json!({"poststop": [{"path": "relative/hook"}]});
    });
    assert!(
        err.contains("hooks.poststop[0].path: not an absolute path"),
        "{err}"
    );
    let err = refused(&["true"], |c| {
        c["hooks"] = json!({"prestart": [{"path": "/bin/true", "timeout": 0}]});
    });
    assert!(err.contains("hooks.prestart[0].timeout"), "{err}");
    let err = refused(&["true"], |c| {
        c["hooks"] = json!({"createRuntime": [{"path": 7}]});
    });
    assert!(err.contains("hooks.createRuntime[0].path"), "{err}");
}

// ---- hooks with seccomp and namespaces (the three features together) ----

/// Edits a bundle's `config.json` in place.
fn edit_config(bundle: &Bundle, edit: impl FnOnce(&mut Value)) {
    let path = bundle.path().join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn hooks_run_before_the_filter_and_poststart_only_after_execve() {
    if !require_prereqs() {
        return;
    }
    // No mount namespace (the init chroots in ours), and a filter that
    // refuses every way to fork: the startContainer hook (a shell script
    // that forks) still runs, since the filter comes after it.
    let no_fork = |c: &mut Value| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "mount");
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
        c["root"]["readonly"] = json!(false);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["clone", "clone3", "fork", "vfork"],
                          "action": "SCMP_ACT_ERRNO"}]
        });
    };
    let bundle = hook_bundle(&["true"], all_six);
    edit_config(&bundle, no_fork);
    let before = mountinfo_mentioning(bundle.path());
    let b = bundle.path().to_str().unwrap().to_string();
    let out = bundle
        .hostd(&["run", "--bundle", &b, &unique("hs")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        order(bundle.path()),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    let seen = recorded(bundle.path());
    let (lines, _) = &seen["startContainer"];
    assert!(lines.iter().any(|l| l == "root=container"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "ns mnt test's"), "{lines:?}");
    assert_eq!(mountinfo_mentioning(bundle.path()), before, "stray mount");
    assert!(bundle.hostd_state_entries().is_empty());

    // An execve that fails after the startContainer hook: start fails with
    // it, poststart never runs, poststop runs at delete.
    let bundle = hook_bundle(&["/bin/notexec"], all_six);
    edit_config(&bundle, no_fork);
    let bad = bundle.path().join("rootfs/bin/notexec");
    fs::write(&bad, "not a program\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
    let id = unique("hx");
    let (created, started, err, _) = create_then_start(&bundle, true, &id);
    assert!(created && !started, "{err}");
    assert!(
        err.contains("container init failed execve /bin/notexec")
            && err.contains("Exec format error"),
        "{err}"
    );
    assert_eq!(
        order(bundle.path()),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststop"
        ],
        "poststart must not run"
    );
    assert_eq!(mountinfo_mentioning(bundle.path()), before, "stray mount");
    assert!(bundle.hostd_state_entries().is_empty());
}

/// Creates container `id` with `--console-socket` (through `create`, a
/// `Command` of either runtime), takes the terminal's primary side it
/// sends, gives the terminal 30x90, starts it with `start` and reads the
/// terminal until the container is done: what it showed.
fn through_console_socket(dir: &Path, create: Command, start: Command) -> String {
    use std::io::Read;
    use std::os::fd::AsFd;
    let path = dir.join(format!("{}.sock", unique("console")));
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut create = create;
    create.arg("--console-socket").arg(&path);
    let err_file = dir.join(format!("{}.err", unique("create")));
    let mut child = create
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    listener.set_nonblocking(false).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let (n, fds) = hostd::os::recv_with_fds(conn.as_fd(), &mut buf).unwrap();
    assert!(n > 0, "nothing on the console socket");
    let primary = fds
        .into_iter()
        .next()
        .expect("a descriptor on the console socket");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        fs::read_to_string(&err_file).unwrap()
    );
    hostd::runtime::sys::set_window_size(primary.as_fd(), 30, 90).unwrap();
    let mut start = start;
    assert!(start.status().unwrap().success());
    let mut terminal = fs::File::from(primary);
    let mut shown = Vec::new();
    let mut chunk = [0u8; 4096];
    // EIO once the container's side is closed: the container is done.
    while let Ok(n) = terminal.read(&mut chunk) {
        if n == 0 {
            break;
        }
        shown.extend_from_slice(&chunk[..n]);
    }
    text(&shown)
}

/// `process.terminal` with `--console-socket`: both runtimes send the
/// primary side of a terminal from the container's own devpts, which is
/// the container's controlling terminal and takes the size set on it.
#[test]
fn terminal_through_a_console_socket_like_runc() {
    if !require_prereqs() {
        return;
    }
    let bundle = Bundle::new(
        &[
            "sh",
            "-c",
            "tty; stty size; [ -t 0 ] && echo stdin-is-a-tty; echo done",
        ],
        |c| c["process"]["terminal"] = json!(true),
    );
    let b = bundle.path().to_str().unwrap().to_string();
    let (hid, rid) = (unique("th"), unique("tr"));
    let hostd_shown = through_console_socket(
        bundle.path(),
        bundle.hostd(&["create", "--bundle", &b, &hid]),
        bundle.hostd(&["start", &hid]),
    );
    let runc_shown = through_console_socket(
        bundle.path(),
        bundle.runc(&["create", "--bundle", &b, &rid]),
        bundle.runc(&["start", &rid]),
    );
    assert_eq!(hostd_shown, runc_shown);
    assert_eq!(
        hostd_shown,
        "/dev/pts/0\r\n30 90\r\nstdin-is-a-tty\r\ndone\r\n"
    );
    for (cmd, id) in [
        (bundle.hostd(&["delete", "-f", &hid]), &hid),
        (bundle.runc(&["delete", "-f", &rid]), &rid),
    ] {
        let mut cmd = cmd;
        assert!(cmd.status().unwrap().success(), "delete {id}");
    }
    // Without a console socket, a terminal is refused before anything is made.
    let out = bundle
        .hostd(&["create", "--bundle", &b, &unique("tn")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--console-socket"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        bundle.hostd_state_entries().is_empty(),
        "{:?}",
        bundle.hostd_state_entries()
    );
}
