//! hostd's OCI runtime next to Debian's `crun` inside a QEMU guest booted from
//! our own image, where the kernel has a full cgroup v2 hierarchy (this
//! machine's hybrid layout has none, and crun refuses to run on it).
//!
//! One image (the `qemu` profile plus crun and a set of bundles) and one boot
//! for everything. The bundles come from `runc spec` with a cgroup namespace
//! added, all sharing a busybox root file system made in the guest. For each
//! one, `hostd oci run` and `crun run` are compared from inside the
//! container: exit codes, hostname, `CapEff`/`NoNewPrivs`/`Seccomp`, the mount
//! list, and the cgroup v2 limits of `linux.resources` (and `unified`) as the
//! container sees them at `/sys/fs/cgroup`. Then the limits at work: an OOM
//! kill, a fork bomb stopped by `pids.max`; the lifecycle verbs with the host's
//! view of the cgroup; processes left behind without a pid namespace; a limit
//! the kernel cannot honour; and after every container, no cgroup left.
//! Intentional differences from crun are asserted as such (docs/runtime.md).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{build_custom, pxe_args, scratch, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// The image lives in RAM, and so does every container's memory.
const RAM_MIB: &str = "512";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Facts the container reports about itself, one per line.
const PROBE: &str = r#"echo "hostname=$(hostname)"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
echo "cgroup=$(cat /proc/self/cgroup)"
awk '{ split($0, a, " - "); split(a[2], b, " "); print "mount " $5 " " b[1] " " substr($6, 1, 2) }' /proc/self/mountinfo | sort
cd /sys/fs/cgroup
for f in memory.max memory.swap.max pids.max cpu.max cpu.weight cpuset.cpus; do echo "$f=$(cat $f)"; done
echo "own-procs=$(grep -c . cgroup.procs)"
unshare -U true 2>/dev/null; echo "unshare=$?"
exit 3"#;

/// The masked files: hostd (as runc) binds the container's own `/dev/null`
/// (on the container's tmpfs `/dev`) over them; crun binds the host's
/// (devtmpfs, read-only). Compared by mount point only.
const MASKED_FILES: &[&str] = &["/proc/kcore", "/proc/keys", "/proc/timer_list"];

/// A bundle: `/bundles/NAME/config.json` in the guest.
struct Bundle {
    name: &'static str,
    config: Value,
}

/// `runc spec`, made for sharing one read-only busybox root and run without
/// a terminal, with a cgroup namespace so the container's own cgroup is its
/// `/sys/fs/cgroup`.
fn base_spec(work: &Path) -> Value {
    let dir = work.join("runc-spec");
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("config.json"));
    let status = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&dir)
        .status()
        .expect("runc missing: run ci/install-deps");
    assert!(status.success());
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(false);
    spec["root"] = json!({"path": "/rootfs", "readonly": true});
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    spec
}

fn bundle(base: &Value, name: &'static str, script: &str, edit: impl FnOnce(&mut Value)) -> Bundle {
    let mut config = base.clone();
    config["process"]["args"] = json!(["sh", "-c", script]);
    edit(&mut config);
    Bundle { name, config }
}

/// A seccomp policy both runtimes compile the same way: allow all but
/// `unshare` (EPERM).
fn seccomp_policy() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    })
}

fn bundles(work: &Path) -> Vec<Bundle> {
    let base = base_spec(work);
    // Grows a shell variable far beyond 8 MiB.
    let hog = r#"x=$(head -c 64000000 /dev/zero | tr "\0" a); echo "survived ${#x}""#;
    vec![
        bundle(&base, "probe", PROBE, |c| {
            c["hostname"] = json!("probe");
            c["linux"]["seccomp"] = seccomp_policy();
            c["linux"]["resources"] = json!({
                "memory": {"limit": 64 << 20, "swap": 96 << 20},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                "pids": {"limit": 64}
            });
        }),
        bundle(
            &base,
            "unified",
            "cd /sys/fs/cgroup; for f in cpu.weight memory.high pids.max; do echo \"$f=$(cat $f)\"; done",
            |c| {
                c["linux"]["resources"] = json!({"unified": {
                    "cpu.weight": "50", "memory.high": "41943040", "pids.max": "42"
                }});
            },
        ),
        bundle(&base, "seccomp-default", "grep Seccomp: /proc/self/status", |_| {}),
        bundle(&base, "oom", hog, |c| {
            c["linux"]["resources"] = json!({"memory": {"limit": 8 << 20}});
        }),
        bundle(
            &base,
            "oom-events",
            &format!(
                "sh -c '{}'; echo \"inner=$?\"; grep oom_kill /sys/fs/cgroup/memory.events",
                hog.replace('\'', "'\\''")
            ),
            |c| {
                c["linux"]["resources"] = json!({"memory": {"limit": 8 << 20}});
            },
        ),
        bundle(
            &base,
            "pids",
            "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done; echo all-started",
            |c| {
                c["linux"]["resources"] = json!({"pids": {"limit": 5}});
            },
        ),
        bundle(&base, "tiny", "true", |c| {
            c["linux"]["resources"] = json!({"memory": {"limit": 4096}});
        }),
        // No pid namespace: the background sleep outlives the init.
        bundle(&base, "nopidns", "sleep 3 & echo started; exit 4", |c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "pid");
        }),
        bundle(&base, "life", "exec sleep 1000", |c| {
            c["linux"]["resources"] = json!({"pids": {"limit": 10}});
        }),
        // The kernel refuses a CPU the guest does not have, after the
        // ancestors of the cgroup were made.
        bundle(&base, "badcpu", "true", |c| {
            c["linux"]["cgroupsPath"] = json!("/t1/t2/c");
            c["linux"]["resources"] = json!({"cpu": {"cpus": "7"}});
        }),
        // A parent cgroup holding a process cannot delegate controllers.
        bundle(&base, "busy", "true", |c| {
            c["linux"]["cgroupsPath"] = json!("/busy/c");
            c["linux"]["resources"] = json!({"memory": {"limit": 32 << 20}});
        }),
    ]
}

/// The profile: `qemu` plus crun (with its libraries) and the bundles.
fn profile_body(work: &Path, bundles: &[Bundle]) -> String {
    let mut body = String::from(
        "description = \"hostd oci and crun side by side\"\n\
         [boot]\nmin_ram_mib = 512\n\
         [[binaries]]\nsource = \"/usr/bin/crun\"\n",
    );
    std::fs::create_dir_all(work.join("bundles")).unwrap();
    for b in bundles {
        let file = work.join("bundles").join(format!("{}.json", b.name));
        std::fs::write(&file, serde_json::to_vec_pretty(&b.config).unwrap()).unwrap();
        body.push_str(&format!(
            "[[files]]\ndest = \"/bundles/{}/config.json\"\nsource = \"bundles/{}.json\"\nmode = 0o644\n",
            b.name, b.name
        ));
    }
    body
}

/// What one `run` printed (stdout and stderr) and its exit code.
#[derive(Debug)]
struct Run {
    code: i32,
    out: Vec<String>,
}

impl Run {
    fn text(&self) -> String {
        self.out.join("\n")
    }
    fn has(&self, needle: &str) -> bool {
        self.out.iter().any(|l| l.contains(needle))
    }
}

/// The two runtimes as typed in the guest, and where each puts the cgroup
/// of container `id` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rt {
    Hostd,
    Crun,
}

impl Rt {
    fn cmd(self) -> &'static str {
        match self {
            Rt::Hostd => "hostd oci",
            Rt::Crun => "crun",
        }
    }
    fn cgroup(self, id: &str) -> String {
        match self {
            Rt::Hostd => format!("{CGROUP_ROOT}/hostd/{id}"),
            Rt::Crun => format!("{CGROUP_ROOT}/{id}"),
        }
    }
}

fn sh(guest: &mut Guest, command: &str) -> Vec<String> {
    guest.run(command, COMMAND_TIMEOUT)
}

/// `RT run ID` in `/bundles/NAME` with `env` before it.
fn run(guest: &mut Guest, rt: Rt, env: &str, bundle: &str, id: &str) -> Run {
    let mut out = sh(
        guest,
        &format!(
            "cd /bundles/{bundle}; {env} {} run {id} 2>&1; echo \"@rc=$?\"; cd /",
            rt.cmd()
        ),
    );
    let last = out.pop().unwrap_or_default();
    let code = last
        .strip_prefix("@rc=")
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("no exit code after {rt:?} run {bundle}: {last:?} {out:?}"));
    let run = Run { code, out };
    assert_no_cgroup(guest, rt, id, &run);
    run
}

fn run_both(guest: &mut Guest, bundle: &str) -> (Run, Run) {
    let h = run(guest, Rt::Hostd, "", bundle, &format!("h-{bundle}"));
    let c = run(guest, Rt::Crun, "", bundle, &format!("c-{bundle}"));
    (h, c)
}

/// After `run` (or `delete`), the container's cgroup is gone.
fn assert_no_cgroup(guest: &mut Guest, rt: Rt, id: &str, context: &Run) {
    let path = rt.cgroup(id);
    let left = sh(guest, &format!("[ -e {path} ] && echo LEFT; true"));
    assert!(
        !left.iter().any(|l| l == "LEFT"),
        "{rt:?} left {path} behind; its output:\n{}",
        context.text()
    );
}

fn cgroup_dirs(guest: &mut Guest) -> Vec<String> {
    let mut dirs = sh(
        guest,
        &format!("find {CGROUP_ROOT} -mindepth 1 -type d | sort"),
    );
    dirs.retain(|d| d.starts_with(CGROUP_ROOT));
    dirs
}

/// The probe's output with the masked files reduced to their mount point.
fn normalised(run: &Run) -> Vec<String> {
    run.out
        .iter()
        .map(|l| {
            let mut words = l.split(' ');
            match (words.next(), words.next()) {
                (Some("mount"), Some(p)) if MASKED_FILES.contains(&p) => format!("mount {p}"),
                _ => l.clone(),
            }
        })
        .collect()
}

fn line_after<'a>(run: &'a Run, prefix: &str) -> &'a str {
    run.out
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in\n{}", run.text()))
}

#[test]
fn hostd_oci_and_crun_agree_in_a_guest() {
    let work = scratch("guest-runtime");
    let bundles = bundles(&work);
    let body = profile_body(&work, &bundles);
    let dir = build_custom(&work, "guest-runtime", "qemu.toml", &body);
    let mut guest = Guest::start_interactive(&pxe_args(&dir, RAM_MIB, "mkhost.dhcp=0"), &work);
    guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    guest.wait_for("debug shell on", BOOT_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));

    // Kernel messages (the OOM killer's) stay off the console; the shared
    // busybox root; the cgroups before any container.
    let setup = sh(
        &mut guest,
        "dmesg -n 1; mkdir -p /rootfs/bin /rootfs/proc /rootfs/dev /rootfs/sys /rootfs/tmp \
         && cp /bin/busybox /rootfs/bin/ \
         && for a in $(busybox --list); do [ $a = busybox ] || ln -s busybox /rootfs/bin/$a; done; \
         crun --version | head -1; grep -o memory /sys/fs/cgroup/cgroup.subtree_control",
    );
    assert!(
        setup.iter().any(|l| l.starts_with("crun version")),
        "{setup:?}"
    );
    assert!(setup.iter().any(|l| l == "memory"), "{setup:?}");
    let baseline = cgroup_dirs(&mut guest);

    same_view_and_limits(&mut guest);
    limits_at_work(&mut guest);
    refused_limits_leave_nothing(&mut guest);
    lifecycle_and_leftovers(&mut guest);

    // Nothing left but hostd's parent cgroup, and that one empty.
    let mut want = baseline.clone();
    let parent = format!("{CGROUP_ROOT}/hostd");
    if !want.contains(&parent) {
        want.push(parent);
        want.sort();
    }
    assert_eq!(cgroup_dirs(&mut guest), want, "stray cgroups");
    let _ = std::fs::remove_dir_all(&work);
}

/// The probe bundle: the same view from both runtimes, and the limits of
/// `linux.resources` and `linux.resources.unified` where the container sees
/// them. Also the `clone` fallback (the container's cgroup namespace must
/// still be rooted at its own cgroup).
fn same_view_and_limits(guest: &mut Guest) {
    let (h, c) = run_both(guest, "probe");
    assert_eq!(h.code, 3, "hostd exit code:\n{}", h.text());
    assert_eq!(c.code, 3, "crun exit code:\n{}", c.text());
    assert_eq!(normalised(&h), normalised(&c), "hostd vs crun");
    // The facts themselves, so that a shared mistake is caught too.
    for want in [
        "hostname=probe",
        "CapEff:\t0000000020000420",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "cgroup=0::/",
        "mount / tmpfs ro",
        "mount /proc proc rw",
        "mount /sys sysfs ro",
        "mount /sys/fs/cgroup cgroup2 ro",
        "mount /proc/kcore tmpfs rw",
        "memory.max=67108864",
        "memory.swap.max=33554432",
        "pids.max=64",
        "cpu.max=50000 100000",
        "cpu.weight=20",
        "cpuset.cpus=0",
        "unshare=1",
    ] {
        assert!(
            h.out.iter().any(|l| l == want),
            "{want:?} missing in\n{}",
            h.text()
        );
    }
    // Only the container's own processes are in its cgroup.
    let procs: u32 = line_after(&h, "own-procs=").parse().unwrap();
    assert!((1..10).contains(&procs), "{}", h.text());

    let legacy = run(
        guest,
        Rt::Hostd,
        "HOSTD_OCI_LEGACY_CLONE=1",
        "probe",
        "h-legacy",
    );
    assert_eq!(legacy.code, 3, "{}", legacy.text());
    assert_eq!(
        legacy.out, h.out,
        "clone fallback vs clone3 (CLONE_INTO_CGROUP)"
    );

    let (h, c) = run_both(guest, "unified");
    assert_eq!((h.code, c.code), (0, 0), "{}\n{}", h.text(), c.text());
    assert_eq!(h.out, c.out, "unified: hostd vs crun");
    assert_eq!(
        h.out,
        ["cpu.weight=50", "memory.high=41943040", "pids.max=42"],
        "{}",
        h.text()
    );

    // Intentional difference: without linux.seccomp hostd applies its
    // default policy (Docker's); crun, like runc, applies none.
    let (h, c) = run_both(guest, "seccomp-default");
    assert_eq!(h.out, ["Seccomp:\t2"], "{}", h.text());
    assert_eq!(c.out, ["Seccomp:\t0"], "{}", c.text());
}

/// An OOM kill under an 8 MiB limit and a fork bomb under `pids.max`.
fn limits_at_work(guest: &mut Guest) {
    let (h, c) = run_both(guest, "oom");
    assert_eq!(h.code, 137, "hostd:\n{}", h.text());
    assert_eq!(c.code, 137, "crun:\n{}", c.text());
    assert!(!h.has("survived") && !c.has("survived"));

    let (h, c) = run_both(guest, "oom-events");
    for (name, r) in [("hostd", &h), ("crun", &c)] {
        assert_eq!(r.code, 0, "{name}:\n{}", r.text());
        assert_eq!(line_after(r, "inner="), "137", "{name}:\n{}", r.text());
        let kills: u64 = line_after(r, "oom_kill ").parse().unwrap();
        assert!(kills >= 1, "{name}:\n{}", r.text());
    }

    let (h, c) = run_both(guest, "pids");
    for (name, r) in [("hostd", &h), ("crun", &c)] {
        assert!(r.has("can't fork"), "{name}:\n{}", r.text());
        assert!(!r.has("all-started"), "{name}:\n{}", r.text());
    }
    assert_eq!(h.code, c.code, "{}\n{}", h.text(), c.text());
    assert_ne!(h.code, 0);
}

/// Limits the kernel cannot honour: refused, and no cgroup is left (nor the
/// ancestors hostd made on the way).
fn refused_limits_leave_nothing(guest: &mut Guest) {
    // Intentional difference: hostd refuses a memory limit below 256 KiB
    // before creating anything; crun tries and its init is OOM-killed.
    let (h, c) = run_both(guest, "tiny");
    assert_eq!(h.code, 1, "{}", h.text());
    assert!(
        h.has("linux.resources.memory.limit: 4096 bytes is below the minimum of 262144"),
        "{}",
        h.text()
    );
    assert_ne!(c.code, 0, "{}", c.text());

    let before = cgroup_dirs(guest);
    let r = run(guest, Rt::Hostd, "", "badcpu", "h-badcpu");
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.has("cpuset.cpus"), "{}", r.text());
    assert_eq!(cgroup_dirs(guest), before, "badcpu left cgroups");

    // A process in /busy: the memory controller cannot be enabled for its
    // children. The error says why; nothing is created under /busy. (SIGKILL
    // at the end: the debug shell's children inherit a blocked SIGTERM.)
    sh(
        guest,
        "mkdir /sys/fs/cgroup/busy; sh -c 'sleep 600 & echo $! > /sys/fs/cgroup/busy/cgroup.procs'",
    );
    let r = run(guest, Rt::Hostd, "", "busy", "h-busy");
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(
        r.has("cannot enable the memory controller in /sys/fs/cgroup/busy/cgroup.subtree_control (it holds processes"),
        "{}",
        r.text()
    );
    let left = sh(
        guest,
        "ls -d /sys/fs/cgroup/busy/*/ 2>/dev/null; kill -9 $(cat /sys/fs/cgroup/busy/cgroup.procs); \
         sleep 1; rmdir /sys/fs/cgroup/busy && echo removed",
    );
    assert_eq!(left, ["removed"], "busy parent");
}

/// create/start/state/kill/delete with the host's view of the cgroup, delete
/// of a never-started container, and processes that outlive an init
/// without a pid namespace.
fn lifecycle_and_leftovers(guest: &mut Guest) {
    for rt in [Rt::Hostd, Rt::Crun] {
        let cmd = rt.cmd();
        let id = match rt {
            Rt::Hostd => "h-life",
            Rt::Crun => "c-life",
        };
        let out = sh(
            guest,
            &format!(
                "cd /bundles/life; {cmd} create {id}; \
                 pid=$({cmd} state {id} | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'); \
                 {cmd} state {id} | grep -o '\"status\": *\"[a-z]*\"'; \
                 echo \"host-view=$(cat /proc/$pid/cgroup)\"; cat {cg}/pids.max; \
                 {cmd} start {id}; {cmd} state {id} | grep -o '\"status\": *\"[a-z]*\"'; \
                 {cmd} kill {id} KILL; sleep 1; {cmd} state {id} | grep -o '\"status\": *\"[a-z]*\"'; \
                 {cmd} delete {id}; echo \"delete=$?\"; cd /",
                cg = rt.cgroup(id)
            ),
        );
        let text = out.join("\n");
        let statuses: Vec<&str> = out.iter().filter_map(|l| l.split('"').nth(3)).collect();
        assert_eq!(
            statuses,
            ["created", "running", "stopped"],
            "{rt:?}:\n{text}"
        );
        let want_cgroup = rt.cgroup(id).replace(CGROUP_ROOT, "");
        assert!(
            out.iter()
                .any(|l| *l == format!("host-view=0::{want_cgroup}")),
            "{rt:?}:\n{text}"
        );
        assert!(out.iter().any(|l| l == "10"), "{rt:?} pids.max:\n{text}");
        assert!(out.iter().any(|l| l == "delete=0"), "{rt:?}:\n{text}");
        let context = Run { code: 0, out };
        assert_no_cgroup(guest, rt, id, &context);

        // Deleting a created (never started) container kills its init.
        let out = sh(
            guest,
            &format!("cd /bundles/life; {cmd} create {id}-2; {cmd} delete {id}-2; echo \"delete=$?\"; cd /"),
        );
        assert!(out.iter().any(|l| l == "delete=0"), "{rt:?}: {out:?}");
        assert_no_cgroup(guest, rt, &format!("{id}-2"), &Run { code: 0, out });
    }

    // Without a pid namespace the init's children survive it. hostd, like
    // runc, kills what is left in the cgroup when the init exits; crun's run
    // waits for them. Either way: the init's exit code, then nothing left.
    let (h, c) = run_both(guest, "nopidns");
    assert_eq!(h.code, 4, "hostd:\n{}", h.text());
    assert_eq!(c.code, 4, "crun:\n{}", c.text());
    let sleeping = sh(guest, "ps | grep -c '[s]leep 3'");
    assert_eq!(sleeping, ["0"], "processes left behind");
}
