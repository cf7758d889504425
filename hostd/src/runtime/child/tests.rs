//! The init's system-call sequence, recorded by a fake instead of made.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::RawFd;

use super::*;
use crate::runtime::plan::tests::sample_spec;
use crate::runtime::plan::Plan;

/// Records calls as text; fds resolve back to the paths they were opened
/// with, so `/proc/self/fd/N` targets read as in-root paths.
#[derive(Default)]
struct Fake {
    calls: RefCell<Vec<String>>,
    fds: RefCell<HashMap<RawFd, String>>,
    next_fd: RefCell<RawFd>,
    fail: Option<(&'static str, i32)>,
    /// Messages read from the sync socket (GO).
    reads: std::cell::Cell<usize>,
}

impl Fake {
    fn record(&self, call: String) -> SysResult<()> {
        let failing = self
            .fail
            .is_some_and(|(prefix, _)| call.starts_with(prefix));
        self.calls.borrow_mut().push(call);
        match self.fail {
            Some((_, errno)) if failing => Err(Errno(errno)),
            _ => Ok(()),
        }
    }
    fn name(&self, p: &CStr) -> String {
        let s = p.to_string_lossy().into_owned();
        match s.strip_prefix("/proc/self/fd/") {
            Some(n) => self.fds.borrow()[&n.parse::<RawFd>().unwrap()].clone(),
            None => s,
        }
    }
    fn open(&self, path: String) -> RawFd {
        let mut n = self.next_fd.borrow_mut();
        *n += 1;
        let fd = 100 + *n;
        self.fds.borrow_mut().insert(fd, path);
        fd
    }
    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

fn opt(s: Option<&CStr>) -> String {
    s.map_or("-".into(), |s| s.to_string_lossy().into_owned())
}

impl ChildSys for Fake {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> SysResult<()> {
        self.record(format!(
            "mount {} {} {} {flags:#x} {}",
            opt(source),
            self.name(target),
            opt(fstype),
            opt(data)
        ))
    }
    fn umount2(&self, target: &CStr, _: libc::c_int) -> SysResult<()> {
        self.record(format!("umount2 {}", self.name(target)))
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> SysResult<()> {
        self.record(format!(
            "pivot_root {} {}",
            opt(Some(new_root)),
            opt(Some(put_old))
        ))
    }
    fn chdir(&self, path: &CStr) -> SysResult<()> {
        self.record(format!("chdir {}", opt(Some(path))))
    }
    fn chroot(&self, path: &CStr) -> SysResult<()> {
        self.record(format!("chroot {}", opt(Some(path))))
    }
    fn fchdir(&self, fd: RawFd) -> SysResult<()> {
        let path = self.fds.borrow()[&fd].clone();
        self.record(format!("fchdir {path}"))
    }
    fn openat2(&self, _: RawFd, path: &CStr, _: i32, resolve: u64) -> SysResult<RawFd> {
        assert_ne!(resolve & libc::RESOLVE_IN_ROOT, 0);
        Ok(self.open(opt(Some(path))))
    }
    fn openat(&self, _: RawFd, path: &CStr, _: i32, _: libc::mode_t) -> SysResult<RawFd> {
        let name = opt(Some(path));
        self.record(format!("open {name}"))?;
        Ok(self.open(name))
    }
    fn mkdirat(&self, dirfd: RawFd, path: &CStr, _: libc::mode_t) -> SysResult<()> {
        let dir = self.fds.borrow()[&dirfd].clone();
        self.record(format!("mkdir {dir}/{}", opt(Some(path))))
    }
    fn mknodat(
        &self,
        dirfd: RawFd,
        path: &CStr,
        mode: libc::mode_t,
        dev: libc::dev_t,
    ) -> SysResult<()> {
        let dir = self.fds.borrow()[&dirfd].clone();
        self.record(format!("mknod {dir}/{} {mode:o} {dev:#x}", opt(Some(path))))
    }
    fn fchownat(&self, _: RawFd, path: &CStr, uid: u32, gid: u32) -> SysResult<()> {
        self.record(format!("chown {} {uid} {gid}", opt(Some(path))))
    }
    fn symlinkat(&self, to: &CStr, dirfd: RawFd, path: &CStr) -> SysResult<()> {
        let dir = self.fds.borrow()[&dirfd].clone();
        self.record(format!(
            "symlink {dir}/{} -> {}",
            opt(Some(path)),
            opt(Some(to))
        ))
    }
    fn close(&self, _: RawFd) {}
    fn read(&self, _: RawFd, buf: &mut [u8]) -> SysResult<usize> {
        self.reads.set(self.reads.get() + 1);
        buf.copy_from_slice(&Message::new(MSG_GO).to_bytes());
        Ok(buf.len())
    }
    fn write(&self, fd: RawFd, buf: &[u8]) -> SysResult<usize> {
        let to = self
            .fds
            .borrow()
            .get(&fd)
            .cloned()
            .unwrap_or(fd.to_string());
        self.record(format!("write {} to {to}", buf.len()))?;
        Ok(buf.len())
    }
    fn sethostname(&self, name: &[u8]) -> SysResult<()> {
        self.record(format!("sethostname {}", String::from_utf8_lossy(name)))
    }
    fn setdomainname(&self, name: &[u8]) -> SysResult<()> {
        self.record(format!("setdomainname {}", String::from_utf8_lossy(name)))
    }
    fn prctl(
        &self,
        option: libc::c_int,
        a2: libc::c_ulong,
        a3: libc::c_ulong,
    ) -> SysResult<libc::c_int> {
        self.record(format!("prctl {option} {a2} {a3}")).map(|()| 0)
    }
    fn capset(&self, sets: CapSets) -> SysResult<()> {
        self.record(format!(
            "capset e={:#x} p={:#x} i={:#x}",
            sets.effective, sets.permitted, sets.inheritable
        ))
    }
    fn setgroups(&self, groups: &[libc::gid_t]) -> SysResult<()> {
        self.record(format!("setgroups {groups:?}"))
    }
    fn setresgid(&self, gid: libc::gid_t) -> SysResult<()> {
        self.record(format!("setresgid {gid}"))
    }
    fn setresuid(&self, uid: libc::uid_t) -> SysResult<()> {
        self.record(format!("setresuid {uid}"))
    }
    fn setrlimit(&self, resource: libc::c_int, soft: u64, hard: u64) -> SysResult<()> {
        self.record(format!("setrlimit {resource} {soft} {hard}"))
    }
    fn seccomp(&self, program: &[libc::sock_filter], _: libc::c_ulong) -> SysResult<()> {
        self.record(format!("seccomp {}", program.len()))
    }
    fn access(&self, path: &CStr, _: libc::c_int) -> SysResult<()> {
        let p = opt(Some(path));
        self.record(format!("access {p}"))?;
        if p == "/bin/sh" {
            Ok(())
        } else {
            Err(Errno(libc::ENOENT))
        }
    }
    fn execve(
        &self,
        path: &CStr,
        argv: &[*const libc::c_char],
        _: &[*const libc::c_char],
    ) -> Errno {
        let _ = self.record(format!(
            "execve {} argc={}",
            opt(Some(path)),
            argv.len() - 1
        ));
        Errno(libc::ENOEXEC)
    }
    fn cloexec_from(&self, first: u32) -> SysResult<()> {
        self.record(format!("cloexec_from {first}"))
    }
    fn close_range(&self, first: u32, last: u32) -> SysResult<()> {
        self.record(format!("close_range {first} {last}"))
    }
    fn clear_cloexec(&self, fd: RawFd) -> SysResult<()> {
        self.record(format!("clear_cloexec {fd}"))
    }
    fn statfs_flags(&self, path: &CStr) -> SysResult<u64> {
        self.record(format!("statfs {}", self.name(path)))
            .map(|()| libc::ST_NOSUID)
    }
    fn is_directory(&self, path: &CStr) -> SysResult<bool> {
        let name = self.name(path);
        self.record(format!("stat {name}"))?;
        match name.as_str() {
            "/proc/acpi" | "/sys/firmware" => Ok(true),
            "/proc/missing" => Err(Errno(libc::ENOENT)),
            _ => Ok(false),
        }
    }
    fn loopback_up(&self) -> SysResult<()> {
        self.record("loopback_up".into())
    }
    fn reset_signals(&self) -> SysResult<()> {
        self.record("reset_signals".into())
    }
    fn setsid(&self) -> SysResult<()> {
        self.record("setsid".into())
    }
    fn umask(&self, mask: libc::mode_t) {
        let _ = self.record(format!("umask {mask:o}"));
    }
    fn setns(&self, fd: RawFd, nstype: libc::c_int) -> SysResult<()> {
        self.record(format!("setns {fd} {nstype:#x}"))
    }
    fn unshare(&self, flags: libc::c_int) -> SysResult<()> {
        self.record(format!("unshare {flags:#x}"))
    }
    fn open_pty_pair(&self) -> SysResult<(RawFd, RawFd)> {
        self.record("open_pty_pair".into()).map(|()| (40, 41))
    }
    fn send_fd(&self, sock: RawFd, _data: &[u8], fd: RawFd) -> SysResult<()> {
        self.record(format!("send_fd {sock} {fd}"))
    }
    fn dup2(&self, from: RawFd, to: RawFd) -> SysResult<()> {
        self.record(format!("dup2 {from} {to}"))
    }
    fn set_controlling_terminal(&self, fd: RawFd) -> SysResult<()> {
        self.record(format!("set_controlling_terminal {fd}"))
    }
}

const FDS: ChildFds<'static> = ChildFds {
    sync: 3,
    fifo: 4,
    proc: 5,
    join: &[],
    preserve_fds: 0,
    wait_for_go: true,
};

fn plan() -> (tempfile::TempDir, Plan) {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new("c1", dir.path(), &sample_spec()).unwrap();
    (dir, plan)
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
}

#[test]
fn builds_the_container_in_order() {
    let (_dir, plan) = plan();
    let fake = Fake::default();
    let failure = run_with(&fake, &plan, FDS);
    // The fake's execve "fails", which ends the run.
    assert_eq!(failure.step, Step::Exec);
    let calls = fake.calls();
    let root = plan.rootfs.to_string_lossy().into_owned();
    let order = [
        "setsid".to_string(),
        "reset_signals".into(),
        "mount - / - 0x44000".into(),
        format!("mount {root} {root} - 0x5000"),
        "mkdir ./proc".into(),
        "mount proc proc proc 0x0 -".into(),
        "mkdir ./dev".into(),
        "mount tmpfs dev tmpfs 0x2 mode=755".into(),
        "mkdir dev/pts".into(),
        "mount devpts dev/pts devpts 0x0 newinstance,ptmxmode=0666".into(),
        "mount sysfs sys sysfs 0x3 -".into(),
        "mknod dev/null 20666 0x103".into(),
        "symlink dev/ptmx -> pts/ptmx".into(),
        "open /".into(),
        format!("fchdir {root}"),
        "pivot_root . .".into(),
        // The old root, not the new one, is made a slave and detached.
        "fchdir /".into(),
        "mount - . - 0x84000".into(),
        "umount2 .".into(),
        "chdir /".into(),
        "loopback_up".into(),
        "sethostname box".into(),
        "mount /proc/sys /proc/sys - 0x5000".into(),
        "statfs /proc/sys".into(),
        "mount - /proc/sys - 0x1023".into(),
        "stat /proc/kcore".into(),
        "mount /dev/null /proc/kcore - 0x1000".into(),
        "statfs /".into(),
        "mount - / - 0x1023".into(),
        format!("prctl {} 0 0", libc::PR_CAPBSET_DROP),
        format!("prctl {} 1 0", libc::PR_SET_KEEPCAPS),
        "setgroups []".into(),
        "setresgid 0".into(),
        "setresuid 0".into(),
        // CAP_SYS_ADMIN (21) stays until the filter is loaded.
        "capset e=0x200000 p=0x200000 i=0x0".into(),
        "chdir /".into(),
        "access /bin/sh".into(),
        "umask 22".into(),
        "cloexec_from 3".into(),
        "write 16 to 3".into(),
        "open self/fd/4".into(),
        "write 1 to self/fd/4".into(),
        "seccomp".into(),
        "execve /bin/sh argc=3".into(),
    ];
    let mut from = 0;
    for want in order {
        let at = calls[from..]
            .iter()
            .position(|c| c.starts_with(&want))
            .unwrap_or_else(|| panic!("{want:?} not found after call {from} in {calls:#?}"));
        from += at + 1;
    }
    // CAP_KILL (5) stays in the bounding set; the others are dropped.
    let kill = format!("prctl {} 5 0", libc::PR_CAPBSET_DROP);
    assert!(!calls.contains(&kill));
    // The filter is the last thing before execve, with or without
    // no_new_privs.
    assert_eq!(position(&calls, "seccomp") + 1, position(&calls, "execve"));
    // No access() beyond the first hit.
    assert!(!calls.iter().any(|c| c == "access /usr/bin/sh"));
}

#[test]
fn waits_for_go_only_when_the_parent_has_work_before_it() {
    let (_dir, plan) = plan();
    let waiting = Fake::default();
    run_with(&waiting, &plan, FDS);
    let going = Fake::default();
    let fds = ChildFds {
        wait_for_go: false,
        ..FDS
    };
    run_with(&going, &plan, fds);
    assert_eq!(waiting.reads.get(), going.reads.get() + 1);
    // The container is built all the same.
    assert_eq!(waiting.calls(), going.calls());
}

#[test]
fn cgroup_namespace_is_made_after_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = Plan::new("c1", dir.path(), &sample_spec()).unwrap();
    let fake = Fake::default();
    run_with(&fake, &plan, FDS);
    assert!(!fake.calls().iter().any(|c| c.starts_with("unshare")));

    plan.unshare_flags = libc::CLONE_NEWCGROUP as u64;
    let fake = Fake::default();
    run_with(&fake, &plan, FDS);
    let calls = fake.calls();
    let unshare = format!("unshare {:#x}", libc::CLONE_NEWCGROUP);
    // GO (the read) came first; the namespace exists before any mount.
    assert!(position(&calls, &unshare) < position(&calls, "setsid"));
    assert!(position(&calls, &unshare) < position(&calls, "mount"));

    let fake = Fake {
        fail: Some(("unshare", libc::EPERM)),
        ..Default::default()
    };
    let failure = run_with(&fake, &plan, FDS);
    assert_eq!(failure.step, Step::Unshare);
    assert_eq!(failure.errno, Errno(libc::EPERM));
}

#[test]
fn reports_the_failing_mount() {
    let (_dir, plan) = plan();
    let fake = Fake {
        fail: Some(("mount devpts", libc::EPERM)),
        ..Fake::default()
    };
    let failure = run_with(&fake, &plan, FDS);
    assert_eq!(failure.step, Step::Mount);
    assert_eq!(failure.index, 2);
    assert_eq!(failure.errno, Errno(libc::EPERM));
    assert!(!fake.calls().iter().any(|c| c.starts_with("pivot_root")));
}

#[test]
fn missing_executable_fails_before_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sample_spec();
    spec.process.as_mut().unwrap().args[0] = "nosuch".into();
    let mut plan = Plan::new("c1", dir.path(), &spec).unwrap();
    plan.no_new_privs = true;
    let fake = Fake::default();
    let failure = run_with(&fake, &plan, FDS);
    assert_eq!(failure.step, Step::FindExecutable);
    assert_eq!(failure.errno, Errno(libc::ENOENT));
    let calls = fake.calls();
    assert!(!calls.iter().any(|c| c.starts_with("write")));
    // With no_new_privs the filter waits until just before execve.
    assert!(!calls.iter().any(|c| c.starts_with("seccomp")));
}

#[test]
fn messages_round_trip() {
    let m = Message {
        kind: MSG_ERROR,
        step: Step::Rlimit as u32,
        index: 3,
        errno: libc::EPERM,
    };
    assert_eq!(Message::from_bytes(&m.to_bytes()), m);
    for s in Step::ALL {
        assert_eq!(Step::from_u32(s as u32), Some(s));
    }
    let mut buf = [0u8; 48];
    assert_eq!(
        fd_path(&mut buf, b"/proc/self/fd/", 1234).to_str(),
        Ok("/proc/self/fd/1234")
    );
    assert_eq!(fd_path(&mut buf, b"x", 0).to_str(), Ok("x0"));
}

#[test]
fn inherited_descriptors_are_closed_around_the_kept_ones() {
    let (_dir, plan) = plan();
    let fake = Fake::default();
    let join = [(40, libc::CLONE_NEWNET)];
    let fds = ChildFds {
        sync: 9,
        fifo: 7,
        proc: 8,
        join: &join,
        preserve_fds: 2,
        wait_for_go: true,
    };
    run_with(&fake, &plan, fds);
    let closes: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("close_range"))
        .collect();
    // Kept: 0-2, the preserved 3-4, 7-9 and 40.
    let max = u32::MAX;
    assert_eq!(
        closes,
        [
            "close_range 5 6".to_string(),
            "close_range 10 39".into(),
            format!("close_range 41 {max}")
        ]
    );
}

#[test]
fn seccomp_comes_last_and_sys_admin_only_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = Plan::new("c1", dir.path(), &sample_spec()).unwrap();
    let capset = |plan: &Plan| {
        let fake = Fake::default();
        run_with(&fake, plan, FDS);
        let calls = fake.calls();
        assert_eq!(
            position(&calls, "seccomp") + 1,
            position(&calls, "execve"),
            "{calls:#?}"
        );
        assert!(position(&calls, "cloexec_from") < position(&calls, "write 16"));
        calls[position(&calls, "capset")].clone()
    };
    // Without no_new_privs the filter needs CAP_SYS_ADMIN.
    assert_eq!(capset(&plan), "capset e=0x200000 p=0x200000 i=0x0");
    // With it, or when the container has the capability anyway, the sets
    // are the spec's.
    plan.no_new_privs = true;
    assert_eq!(capset(&plan), "capset e=0x0 p=0x0 i=0x0");
    plan.no_new_privs = false;
    plan.caps.effective = 1 << 21 | 1 << 5;
    plan.caps.permitted = 1 << 21 | 1 << 5;
    assert_eq!(capset(&plan), "capset e=0x200020 p=0x200020 i=0x0");
    // Without a filter there is nothing to keep it for.
    plan.caps.effective = 0;
    plan.caps.permitted = 0;
    plan.seccomp = None;
    let fake = Fake::default();
    run_with(&fake, &plan, FDS);
    let calls = fake.calls();
    assert!(calls.contains(&"capset e=0x0 p=0x0 i=0x0".to_string()));
    assert!(!calls.iter().any(|c| c.starts_with("seccomp")));
}

#[test]
fn failures_after_ready_are_reported_on_the_fifo() {
    let (_dir, plan) = plan();
    // A filter the kernel refuses: reported to `start`, with the command.
    let fake = Fake {
        fail: Some(("seccomp", libc::EINVAL)),
        ..Fake::default()
    };
    let failure = run_and_report(&fake, &plan, FDS);
    assert_eq!(failure.step, Step::Seccomp);
    let calls = fake.calls();
    let n = calls.len();
    assert!(calls[n - 3].starts_with("seccomp "), "{calls:#?}");
    assert_eq!(
        calls[n - 2..],
        ["write 16 to self/fd/4", "write 2 to self/fd/4"]
    );
    assert!(!calls.iter().any(|c| c.starts_with("execve")));

    // execve failing: the same channel (the fake's execve fails).
    let fake = Fake::default();
    let failure = run_and_report(&fake, &plan, FDS);
    assert_eq!(failure.step, Step::Exec);
    assert_eq!(
        fake.calls().last().map(String::as_str),
        Some("write 2 to self/fd/4")
    );

    // Before READY, the parent is told on the sync socket, without the
    // command (it has the plan).
    let fake = Fake {
        fail: Some(("cloexec_from", libc::EPERM)),
        ..Fake::default()
    };
    let failure = run_and_report(&fake, &plan, FDS);
    assert_eq!(failure.step, Step::PreserveFds);
    let calls = fake.calls();
    assert_eq!(calls.last().map(String::as_str), Some("write 16 to 3"));
    assert!(!calls.iter().any(|c| c.starts_with("open self/fd/4")));
}

// ---- namespaces, root propagation, LSM labels ----

use crate::runtime::spec::NamespaceKind;

fn plan_with(edit: impl FnOnce(&mut crate::runtime::spec::Spec)) -> (tempfile::TempDir, Plan) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sample_spec();
    edit(&mut spec);
    let host = crate::runtime::lsm::HostLsm::default();
    let plan = Plan::with_lsm("c1", dir.path(), &spec, host).unwrap();
    (dir, plan)
}

/// Each of `want` occurs in `calls`, in this order.
fn in_order(calls: &[String], want: &[String]) {
    let mut from = 0;
    for w in want {
        let at = calls[from..]
            .iter()
            .position(|c| c.starts_with(w.as_str()))
            .unwrap_or_else(|| panic!("{w:?} not found after call {from} in {calls:#?}"));
        from += at + 1;
    }
}

#[test]
fn shared_propagation_is_applied_after_the_root_is_built() {
    let (_dir, plan) = plan_with(|s| {
        s.linux.as_mut().unwrap().rootfs_propagation = Some("shared".into());
    });
    let root = plan.rootfs.to_string_lossy().into_owned();
    let parent = plan.rootfs.parent().unwrap().to_string_lossy().into_owned();
    // The rootfs is no mount point: the walk goes on to its parent.
    let fake = Fake {
        fail: Some((
            Box::leak(format!("mount - {root} ").into_boxed_str()),
            libc::EINVAL,
        )),
        ..Default::default()
    };
    assert_eq!(run_with(&fake, &plan, FDS).step, Step::Exec);
    let (shared, private) = (libc::MS_SHARED, libc::MS_PRIVATE);
    in_order(
        &fake.calls(),
        &[
            format!("mount - / - {shared:#x}"),
            format!("mount - {root} - {private:#x}"),
            format!("mount - {parent} - {private:#x}"),
            format!("mount {root} {root} - 0x5000"),
            "pivot_root . .".into(),
            "umount2 .".into(),
            "sethostname box".into(),
            "mount /dev/null /proc/kcore".into(),
            format!("mount - / - {shared:#x}"),
        ],
    );
}

#[test]
fn shared_mount_namespace_uses_chroot() {
    let (_dir, plan) = plan_with(|s| {
        let linux = s.linux.as_mut().unwrap();
        linux.namespaces.retain(|n| n.kind != NamespaceKind::Mount);
        linux.masked_paths.clear();
        linux.readonly_paths.clear();
    });
    let fake = Fake::default();
    assert_eq!(run_with(&fake, &plan, FDS).step, Step::Exec);
    let calls = fake.calls();
    let root = plan.rootfs.to_string_lossy().into_owned();
    // `/` is the host's: its propagation is left alone.
    let chroot = position(&calls, "chroot");
    assert!(
        !calls[..chroot].iter().any(|c| c.starts_with("mount - / ")),
        "{calls:#?}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("pivot_root")));
    in_order(
        &calls,
        &[
            format!("mount {root} {root} - 0x5000"),
            format!("mount - {root} - {:#x}", libc::MS_PRIVATE | libc::MS_REC),
            "mount proc proc proc".into(),
            format!("fchdir {root}"),
            "chroot .".into(),
            "chdir /".into(),
            "sethostname box".into(),
            "mount - / - 0x1023".into(),
        ],
    );
}

#[test]
fn a_joined_user_namespace_is_entered_first() {
    use crate::runtime::spec::{Namespace, NamespaceKind as K};
    let (_dir, plan) = plan_with(|s| {
        let ns = &mut s.linux.as_mut().unwrap().namespaces;
        ns.retain(|n| !matches!(n.kind, K::Pid | K::Uts));
        for (kind, path) in [
            (K::Uts, "/proc/self/ns/uts"),
            (K::User, "/proc/self/ns/user"),
        ] {
            ns.push(Namespace {
                kind,
                path: Some(path.into()),
            });
        }
    });
    let join: Vec<(RawFd, libc::c_int)> = plan
        .join
        .iter()
        .enumerate()
        .map(|(i, j)| (60 + i as RawFd, j.kind.clone_flag() as libc::c_int))
        .collect();
    let fds = ChildFds { join: &join, ..FDS };
    let fake = Fake::default();
    assert_eq!(run_with(&fake, &plan, fds).step, Step::Exec);
    let new = (libc::CLONE_NEWNS | libc::CLONE_NEWNET) as u64;
    in_order(
        &fake.calls(),
        &[
            format!("setns 60 {:#x}", libc::CLONE_NEWUSER),
            "setresgid 0".into(),
            "setresuid 0".into(),
            format!("setns 61 {:#x}", libc::CLONE_NEWUTS),
            format!("unshare {new:#x}"),
            "setsid".into(),
            "mount - / -".into(),
            "sethostname box".into(),
        ],
    );
}

#[test]
fn security_labels_are_written_before_the_user_switch() {
    let (_dir, mut plan) = plan_with(|_| {});
    plan.lsm_exec.push(crate::runtime::lsm::AttrWrite {
        path: c"thread-self/attr/apparmor/exec".into(),
        value: c"exec docker-default".into(),
        field: "process.apparmorProfile",
    });
    let fake = Fake::default();
    assert_eq!(run_with(&fake, &plan, FDS).step, Step::Exec);
    let calls = fake.calls();
    in_order(
        &calls,
        &[
            "open thread-self/attr/apparmor/exec".into(),
            "write 19".into(),
            "setresuid 0".into(),
        ],
    );
    let fake = Fake {
        fail: Some(("open thread-self", libc::EINVAL)),
        ..Default::default()
    };
    let failure = run_with(&fake, &plan, FDS);
    assert_eq!(
        (failure.step, failure.errno),
        (Step::SecurityLabel, Errno(libc::EINVAL))
    );
}

#[test]
fn start_container_hooks_run_before_the_filter_and_report_on_the_fifo() {
    let hooks = |path: &str| {
        let path = path.to_string();
        move |spec: &mut crate::runtime::spec::Spec| {
            spec.hooks = Some(serde_json::json!({"startContainer": [{"path": path}]}));
        }
    };
    // A hook that succeeds: the filter and execve still come last, after
    // the fifo's byte (the hook runs for real, between the two).
    let (_dir, plan) = plan_with(hooks("/bin/true"));
    let fake = Fake::default();
    assert_eq!(run_and_report(&fake, &plan, FDS).step, Step::Exec);
    let calls = fake.calls();
    assert!(position(&calls, "write 1 to self/fd/4") < position(&calls, "seccomp"));
    assert_eq!(position(&calls, "seccomp") + 1, position(&calls, "execve"));

    // A failing one: reported to `start` on exec.fifo, with nothing of the
    // container's loaded or executed.
    let (_dir, plan) = plan_with(hooks("/bin/false"));
    let fake = Fake::default();
    let failure = run_and_report(&fake, &plan, FDS);
    assert_eq!((failure.step, failure.index), (Step::StartContainerHook, 0));
    assert_eq!(
        crate::runtime::hooks::Failure::from_wire(failure.errno.0),
        crate::runtime::hooks::Failure::Exited(1)
    );
    let calls = fake.calls();
    let n = calls.len();
    assert_eq!(calls[n - 3], "write 1 to self/fd/4", "{calls:#?}");
    assert_eq!(calls[n - 2], "write 16 to self/fd/4");
    assert!(calls[n - 1].starts_with("write ") && calls[n - 1].ends_with(" to self/fd/4"));
    assert!(!calls.iter().any(|c| c.starts_with("seccomp")));
    assert!(!calls.iter().any(|c| c.starts_with("execve")));
}

#[test]
fn a_terminal_is_made_in_the_container_and_its_primary_sent_to_the_parent() {
    let (_dir, mut plan) = plan();
    plan.terminal = true;
    let fake = Fake::default();
    let failure = run_with(&fake, &plan, FDS);
    assert_eq!(failure.step, Step::Exec);
    let calls = fake.calls();
    // After the root (its own devpts) is built, before the user changes.
    in_order(
        &calls,
        &[
            "pivot_root . .".into(),
            "mount - / - 0x1023".into(),
            "open_pty_pair".into(),
            "send_fd 3 40".into(),
            "dup2 41 0".into(),
            "dup2 41 1".into(),
            "dup2 41 2".into(),
            "set_controlling_terminal 0".into(),
            format!("prctl {} 1 0", libc::PR_SET_KEEPCAPS),
            "execve /bin/sh".into(),
        ],
    );
    // Without a terminal there is none of it.
    let (_dir, plan) = self::plan();
    let fake = Fake::default();
    run_with(&fake, &plan, FDS);
    assert!(!fake.calls().iter().any(|c| c.starts_with("open_pty_pair")));
    // A failure is the terminal step's.
    let (_dir, mut plan) = self::plan();
    plan.terminal = true;
    let fake = Fake {
        fail: Some(("send_fd", libc::EPIPE)),
        ..Fake::default()
    };
    let failure = run_with(&fake, &plan, FDS);
    assert_eq!(
        (failure.step, failure.errno.0),
        (Step::Terminal, libc::EPIPE)
    );
}

#[test]
fn an_exec_joins_the_init_and_skips_building_a_root() {
    let (_dir, mut plan) = plan();
    plan.terminal = true;
    let fake = Fake::default();
    fake.fds.borrow_mut().insert(9, "/proc/42/root".into());
    let target = ExecTarget {
        pidfd: 8,
        namespaces: libc::CLONE_NEWNS | libc::CLONE_NEWNET,
        root: 9,
    };
    let fds = ChildFds {
        sync: 3,
        fifo: -1,
        proc: 5,
        join: &[],
        preserve_fds: 0,
        wait_for_go: true,
    };
    let failure = run_exec_with(&fake, &plan, fds, target);
    assert_eq!(failure.step, Step::Exec);
    let calls = fake.calls();
    in_order(
        &calls,
        &[
            format!("setns 8 {:#x}", libc::CLONE_NEWNS | libc::CLONE_NEWNET),
            "fchdir /proc/42/root".into(),
            "chroot .".into(),
            "chdir /".into(),
            "setsid".into(),
            "reset_signals".into(),
            "open_pty_pair".into(),
            "set_controlling_terminal 0".into(),
            "setresuid 0".into(),
            "access /bin/sh".into(),
            "cloexec_from 3".into(),
            "seccomp".into(),
            "execve /bin/sh".into(),
        ],
    );
    // No root is built, nothing mounted, no exec.fifo.
    for absent in [
        "mount",
        "pivot_root",
        "mknod",
        "open self/fd/4",
        "sethostname",
    ] {
        assert!(
            !calls.iter().any(|c| c.starts_with(absent)),
            "{absent} in {calls:#?}"
        );
    }
}

/// hostd's annotation: the init mounts the overlay on its root in its own
/// mount namespace, after `/` is made a slave and before the root's bind;
/// with the runtime's mount namespace shared it is refused.
#[test]
fn root_overlay_is_mounted_first_in_the_containers_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let options = "lowerdir=/l1:/l2,upperdir=/c/upper,workdir=/c/work";
    let mut spec = sample_spec();
    spec.annotations.insert(
        crate::runtime::plan::ROOT_OVERLAY_ANNOTATION.into(),
        options.into(),
    );
    let plan = Plan::new("c1", dir.path(), &spec).unwrap();
    let fake = Fake::default();
    run_with(&fake, &plan, FDS);
    let calls = fake.calls();
    let root = plan.rootfs.to_string_lossy().into_owned();
    let slave = position(&calls, "mount - / - 0x44000");
    let overlay = position(
        &calls,
        &format!("mount overlay {root} overlay 0x0 {options}"),
    );
    let bind = position(&calls, &format!("mount {root} {root} - 0x5000"));
    assert!(slave < overlay && overlay < bind, "{calls:#?}");

    spec.linux
        .as_mut()
        .unwrap()
        .namespaces
        .retain(|n| n.kind != crate::runtime::spec::NamespaceKind::Mount);
    spec.linux.as_mut().unwrap().masked_paths.clear();
    spec.linux.as_mut().unwrap().readonly_paths.clear();
    let err = Plan::new("c1", dir.path(), &spec).unwrap_err().to_string();
    assert!(err.contains("org.mkhost.rootfs.overlay"), "{err}");
}

#[test]
fn masked_directories_get_a_read_only_tmpfs_and_files_dev_null() {
    let (_dir, plan) = plan_with(|s| {
        s.linux.as_mut().unwrap().masked_paths = vec![
            "/proc/acpi".into(),
            "/proc/kcore".into(),
            "/proc/missing".into(),
            "/sys/firmware".into(),
        ];
    });
    let fake = Fake::default();
    assert_eq!(run_with(&fake, &plan, FDS).step, Step::Exec);
    let calls = fake.calls();
    let ro = libc::MS_RDONLY;
    in_order(
        &calls,
        &[
            "stat /proc/acpi".into(),
            format!("mount tmpfs /proc/acpi tmpfs {ro:#x}"),
            "stat /proc/kcore".into(),
            "mount /dev/null /proc/kcore - 0x1000".into(),
            "stat /proc/missing".into(),
            "stat /sys/firmware".into(),
            format!("mount tmpfs /sys/firmware tmpfs {ro:#x}"),
        ],
    );
    // Each is asked once, and nothing is bound onto the missing path or
    // tried as /dev/null onto a directory.
    assert!(!calls
        .iter()
        .any(|c| c.contains("/proc/missing") && c.starts_with("mount")));
    assert!(!calls
        .iter()
        .any(|c| c.starts_with("mount /dev/null /proc/acpi")));
}
