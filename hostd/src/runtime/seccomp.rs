//! Seccomp: policies as data, compiled to a classic-BPF program in the parent.
//!
//! Two kinds of input end up in the same [`Seccomp`] (OCI) form:
//!
//! - `linux.seccomp` from the bundle's `config.json`, as given;
//! - hostd's default policy, the text file `seccomp_default.policy` compiled
//!   into the binary, read by [`default_profile`] for the container's bounding
//!   capability set (rules may depend on capabilities, as in Docker's profile).
//!
//! [`compile`] then turns the OCI form into a BPF program: an architecture
//! check (anything but native x86_64 is killed, x32 calls are refused), then
//! runc's rule for calls newer than the profile (below), then one block per
//! system call that tests the rules for that call in order and returns the
//! first matching rule's action, and finally the default action.
//!
//! A profile cannot name a call that did not exist when it was written, and
//! its default action (usually `EPERM`) would make libc believe the call is
//! forbidden rather than missing: glibc tries `faccessat2` before `faccessat`
//! and `clone3` before `clone`, and falls back only on `ENOSYS`. So unless the
//! default action allows (or logs, or traces) the call, or is already
//! `ENOSYS`, every call numbered above the highest one the profile names
//! returns `ENOSYS`, as runc does (its `patchbpf`).
//! Arguments are compared as 64-bit values, high word first, like libseccomp.
//! Unknown call names in a bundle's policy are skipped (runc does the same);
//! in hostd's own policy they are an error.

use std::collections::BTreeMap;

use super::caps;
use super::spec::{Seccomp, SeccompAction, SeccompArg, SeccompOp, SeccompSyscall};
use super::sys::{AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use super::syscalls_x86_64::SYSCALLS;

/// The default policy's text.
pub const DEFAULT_POLICY: &str = include_str!("seccomp_default.policy");

/// Errors from reading a policy or compiling a filter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeccompError {
    /// A line of the policy text is malformed.
    #[error("seccomp policy line {line}: {message}")]
    Policy {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An argument index is out of range.
    #[error("seccomp rule for {name}: argument index {index} is not 0..=5")]
    ArgIndex {
        /// The call.
        name: String,
        /// The index given.
        index: u32,
    },
    /// An unknown `SECCOMP_FILTER_FLAG_*`.
    #[error("unknown seccomp flag {0}")]
    Flag(String),
    /// The program is too long for the kernel or for an 8-bit jump.
    #[error("seccomp program too large: {0}")]
    TooLarge(String),
}

/// The number of a system call on x86_64.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| SYSCALLS[i].1)
}

fn errno_number(word: &str) -> Option<u32> {
    Some(match word {
        "EPERM" => libc::EPERM,
        "ENOENT" => libc::ENOENT,
        "EACCES" => libc::EACCES,
        "EINVAL" => libc::EINVAL,
        "ENOSYS" => libc::ENOSYS,
        "EOPNOTSUPP" => libc::EOPNOTSUPP,
        _ => return word.parse().ok(),
    } as u32)
}

/// Reads hostd's default policy text for a container whose bounding set is
/// `bounding` (a capability mask), giving the equivalent OCI profile.
pub fn default_profile(bounding: u64) -> Result<Seccomp, SeccompError> {
    parse_policy(DEFAULT_POLICY, bounding)
}

/// Parses policy text (grammar in `seccomp_default.policy`).
pub fn parse_policy(text: &str, bounding: u64) -> Result<Seccomp, SeccompError> {
    let mut profile = Seccomp {
        default_action: SeccompAction::Errno,
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: vec!["SCMP_ARCH_X86_64".into()],
        ..Seccomp::default()
    };
    // Join continuation lines, remembering where each logical line started.
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let code = raw.split('#').next().unwrap_or("").trim_end();
        let (body, continues) = match code.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (code, false),
        };
        let entry = pending.get_or_insert_with(|| (i + 1, String::new()));
        entry.1.push(' ');
        entry.1.push_str(body);
        if !continues {
            lines.extend(pending.take());
        }
    }
    lines.extend(pending.take());

    for (line, text) in lines {
        let err = |message: String| SeccompError::Policy { line, message };
        let mut rest = text.trim();
        if rest.is_empty() {
            continue;
        }
        // Capability condition.
        let mut applies = true;
        for (prefix, want) in [("when ", true), ("unless ", false)] {
            if let Some(r) = rest.strip_prefix(prefix) {
                let (cap, r) = r
                    .split_once(':')
                    .ok_or_else(|| err(format!("`{prefix}CAP_X:` needs a colon")))?;
                let n = caps::number(cap.trim())
                    .ok_or_else(|| err(format!("unknown capability {}", cap.trim())))?;
                applies = (bounding & (1 << n) != 0) == want;
                rest = r.trim();
            }
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (action, errno, names_from) = match words.as_slice() {
            ["default", "errno", e] => {
                let e = errno_number(e).ok_or_else(|| err(format!("unknown errno {e}")))?;
                profile.default_errno_ret = Some(e);
                continue;
            }
            ["default", "allow"] => {
                profile.default_action = SeccompAction::Allow;
                continue;
            }
            ["allow", ..] => (SeccompAction::Allow, None, 1),
            ["errno", e, ..] => (
                SeccompAction::Errno,
                Some(errno_number(e).ok_or_else(|| err(format!("unknown errno {e}")))?),
                2,
            ),
            _ => return Err(err(format!("cannot parse `{rest}`"))),
        };
        let tail = &words[names_from..];
        let (names, test) = match tail.iter().position(|w| *w == "if") {
            Some(i) => (&tail[..i], Some(parse_test(&tail[i + 1..]).map_err(err)?)),
            None => (tail, None),
        };
        if names.is_empty() {
            return Err(err("no system call names".into()));
        }
        for name in names {
            if syscall_number(name).is_none() {
                return Err(err(format!("unknown system call {name}")));
            }
        }
        if applies {
            profile.syscalls.push(SeccompSyscall {
                names: names.iter().map(|s| s.to_string()).collect(),
                action,
                errno_ret: errno,
                args: test.into_iter().collect(),
            });
        }
    }
    Ok(profile)
}

fn parse_number(word: &str) -> Result<u64, String> {
    let parsed = match word.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => word.parse(),
    };
    parsed.map_err(|_| format!("bad number {word}"))
}

/// `argN OP V` or `argN &MASK == V`.
fn parse_test(words: &[&str]) -> Result<SeccompArg, String> {
    let arg = words.first().ok_or("`if` needs a test")?;
    let index: u32 = arg
        .strip_prefix("arg")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n <= 5)
        .ok_or_else(|| format!("bad argument {arg}, want arg0..arg5"))?;
    match words[1..] {
        [mask, "==", value] if mask.starts_with('&') => Ok(SeccompArg {
            index,
            value: parse_number(&mask[1..])?,
            value_two: parse_number(value)?,
            op: SeccompOp::MaskedEq,
        }),
        [op, value] => {
            let op = match op {
                "==" => SeccompOp::Eq,
                "!=" => SeccompOp::Ne,
                "<" => SeccompOp::Lt,
                "<=" => SeccompOp::Le,
                ">" => SeccompOp::Gt,
                ">=" => SeccompOp::Ge,
                _ => return Err(format!("unknown comparison {op}")),
            };
            Ok(SeccompArg {
                index,
                value: parse_number(value)?,
                value_two: 0,
                op,
            })
        }
        _ => Err(format!("cannot parse test `{}`", words.join(" "))),
    }
}

/// A compiled filter, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Debug, Clone)]
pub struct Program {
    /// The instructions.
    pub instructions: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*` bits.
    pub flags: libc::c_ulong,
}

fn action_value(action: SeccompAction, errno: Option<u32>) -> u32 {
    let data = errno.unwrap_or(libc::EPERM as u32) & libc::SECCOMP_RET_DATA;
    match action {
        SeccompAction::Kill => libc::SECCOMP_RET_KILL_THREAD,
        SeccompAction::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        SeccompAction::Trap => libc::SECCOMP_RET_TRAP,
        SeccompAction::Errno => libc::SECCOMP_RET_ERRNO | data,
        SeccompAction::Trace => libc::SECCOMP_RET_TRACE | data,
        SeccompAction::Allow => libc::SECCOMP_RET_ALLOW,
        SeccompAction::Log => libc::SECCOMP_RET_LOG,
    }
}

/// Whether the profile filters nothing (default allow, no rules): then no
/// filter is loaded at all.
pub fn is_unconfined(profile: &Seccomp) -> bool {
    profile.default_action == SeccompAction::Allow && profile.syscalls.is_empty()
}

// A tiny assembler: instructions whose jump targets are labels, resolved to
// 8-bit relative offsets at the end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Next,
    Label(usize),
}

enum Ins {
    Stmt(u16, u32),
    Jump(u16, u32, Target, Target),
    Label(usize),
}

struct Asm {
    code: Vec<Ins>,
    labels: usize,
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const AND: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.code.push(Ins::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.code.push(Ins::Jump(code, k, jt, jf));
    }
    fn place(&mut self, label: usize) {
        self.code.push(Ins::Label(label));
    }

    fn finish(self) -> Result<Vec<libc::sock_filter>, SeccompError> {
        let mut at = vec![0usize; self.labels];
        let mut pos = 0;
        for ins in &self.code {
            match ins {
                Ins::Label(l) => at[*l] = pos,
                _ => pos += 1,
            }
        }
        let mut out = Vec::with_capacity(pos);
        for ins in &self.code {
            let here = out.len();
            let offset = |t: Target| -> Result<u8, SeccompError> {
                match t {
                    Target::Next => Ok(0),
                    Target::Label(l) => u8::try_from(at[l] - here - 1).map_err(|_| {
                        SeccompError::TooLarge(format!("jump of {} instructions", at[l] - here))
                    }),
                }
            };
            match *ins {
                Ins::Label(_) => {}
                Ins::Stmt(code, k) => out.push(libc::sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Ins::Jump(code, k, jt, jf) => out.push(libc::sock_filter {
                    code,
                    jt: offset(jt)?,
                    jf: offset(jf)?,
                    k,
                }),
            }
        }
        if out.len() > libc::BPF_MAXINSNS as usize {
            return Err(SeccompError::TooLarge(format!(
                "{} instructions (the kernel takes {})",
                out.len(),
                libc::BPF_MAXINSNS
            )));
        }
        Ok(out)
    }

    /// One argument test; falls through when it holds, jumps to `fail`
    /// otherwise.
    fn arg_test(&mut self, arg: &SeccompArg, fail: Target) {
        let lo_off = DATA_ARGS + 8 * arg.index;
        let hi_off = lo_off + 4;
        let (hi, lo) = ((arg.value >> 32) as u32, arg.value as u32);
        let pass = self.label();
        let p = Target::Label(pass);
        let n = Target::Next;
        match arg.op {
            SeccompOp::Eq => {
                self.stmt(LD_ABS, hi_off);
                self.jump(JEQ, hi, n, fail);
                self.stmt(LD_ABS, lo_off);
                self.jump(JEQ, lo, n, fail);
            }
            SeccompOp::Ne => {
                self.stmt(LD_ABS, hi_off);
                self.jump(JEQ, hi, n, p);
                self.stmt(LD_ABS, lo_off);
                self.jump(JEQ, lo, fail, n);
            }
            SeccompOp::MaskedEq => {
                let (want_hi, want_lo) = ((arg.value_two >> 32) as u32, arg.value_two as u32);
                self.stmt(LD_ABS, hi_off);
                self.stmt(AND, hi);
                self.jump(JEQ, want_hi, n, fail);
                self.stmt(LD_ABS, lo_off);
                self.stmt(AND, lo);
                self.jump(JEQ, want_lo, n, fail);
            }
            SeccompOp::Gt | SeccompOp::Ge => {
                let last = if arg.op == SeccompOp::Gt { JGT } else { JGE };
                self.stmt(LD_ABS, hi_off);
                self.jump(JGT, hi, p, n);
                self.jump(JEQ, hi, n, fail);
                self.stmt(LD_ABS, lo_off);
                self.jump(last, lo, n, fail);
            }
            SeccompOp::Lt | SeccompOp::Le => {
                // arg < v is !(arg >= v); arg <= v is !(arg > v).
                let last = if arg.op == SeccompOp::Lt { JGE } else { JGT };
                self.stmt(LD_ABS, hi_off);
                self.jump(JGT, hi, fail, n);
                self.jump(JEQ, hi, n, p);
                self.stmt(LD_ABS, lo_off);
                self.jump(last, lo, fail, n);
            }
        }
        self.place(pass);
    }
}

/// The highest call number `profile` names when calls above it must return
/// `ENOSYS` (see the module docs), else `None`.
pub fn enosys_above(profile: &Seccomp) -> Option<u32> {
    let permissive = matches!(
        profile.default_action,
        SeccompAction::Allow | SeccompAction::Log | SeccompAction::Trace
    );
    let default_enosys = profile.default_action == SeccompAction::Errno
        && profile.default_errno_ret == Some(libc::ENOSYS as u32);
    if permissive || default_enosys {
        return None;
    }
    profile
        .syscalls
        .iter()
        .flat_map(|rule| &rule.names)
        .filter_map(|name| syscall_number(name))
        .max()
}

/// Compiles an OCI seccomp profile for x86_64.
pub fn compile(profile: &Seccomp) -> Result<Program, SeccompError> {
    let mut flags: libc::c_ulong = 0;
    for flag in &profile.flags {
        flags |= match flag.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => libc::SECCOMP_FILTER_FLAG_TSYNC,
            "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            other => return Err(SeccompError::Flag(other.to_string())),
        };
    }
    let default = action_value(profile.default_action, profile.default_errno_ret);

    // Rules grouped by call number, in profile order within each call; calls
    // in order of first appearance (the policy lists common calls first).
    let mut order: Vec<u32> = Vec::new();
    let mut by_nr: BTreeMap<u32, Vec<(u32, &[SeccompArg])>> = BTreeMap::new();
    for rule in &profile.syscalls {
        let ret = action_value(rule.action, rule.errno_ret);
        for arg in &rule.args {
            if arg.index > 5 {
                return Err(SeccompError::ArgIndex {
                    name: rule.names.join(","),
                    index: arg.index,
                });
            }
        }
        for name in &rule.names {
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            let rules = by_nr.entry(nr).or_default();
            if rules.is_empty() {
                order.push(nr);
            }
            // A rule after an unconditional one can never match.
            if rules.last().is_some_and(|(_, args)| args.is_empty()) {
                continue;
            }
            rules.push((ret, &rule.args));
        }
    }

    let mut asm = Asm {
        code: Vec::new(),
        labels: 0,
    };
    // Architecture check: only native x86_64 calls reach the rules.
    let native = asm.label();
    asm.stmt(LD_ABS, DATA_ARCH);
    asm.jump(JEQ, AUDIT_ARCH_X86_64, Target::Label(native), Target::Next);
    asm.stmt(RET, libc::SECCOMP_RET_KILL_PROCESS);
    asm.place(native);
    // x32 calls (the x32 bit set) are refused.
    let not_x32 = asm.label();
    asm.stmt(LD_ABS, DATA_NR);
    asm.jump(JGE, X32_SYSCALL_BIT, Target::Next, Target::Label(not_x32));
    asm.stmt(RET, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
    asm.place(not_x32);
    // Calls newer than the profile: ENOSYS, so that libc falls back.
    if let Some(newest) = enosys_above(profile) {
        let known = asm.label();
        asm.jump(JGT, newest, Target::Next, Target::Label(known));
        asm.stmt(RET, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        asm.place(known);
    }
    for nr in order {
        let rules = &by_nr[&nr];
        // Rules that only repeat the default action change nothing.
        if rules.iter().all(|(ret, _)| *ret == default) {
            continue;
        }
        let next_call = asm.label();
        asm.jump(JEQ, nr, Target::Next, Target::Label(next_call));
        for (ret, args) in rules {
            let next_rule = asm.label();
            for arg in args.iter() {
                asm.arg_test(arg, Target::Label(next_rule));
            }
            asm.stmt(RET, *ret);
            asm.place(next_rule);
        }
        asm.stmt(RET, default);
        asm.place(next_call);
    }
    asm.stmt(RET, default);
    Ok(Program {
        instructions: asm.finish()?,
        flags,
    })
}

/// A classic-BPF interpreter for the subset [`compile`] emits, for tests:
/// the action a call with this arch, number and arguments gets.
pub fn evaluate(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u32; 16];
    data[0] = nr;
    data[1] = arch;
    for (i, a) in args.iter().enumerate() {
        data[4 + 2 * i] = *a as u32;
        data[5 + 2 * i] = (*a >> 32) as u32;
    }
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let ins = program[pc];
        pc += 1;
        match ins.code {
            LD_ABS => acc = data[ins.k as usize / 4],
            AND => acc &= ins.k,
            RET => return ins.k,
            JEQ | JGT | JGE => {
                let hit = match ins.code {
                    JEQ => acc == ins.k,
                    JGT => acc > ins.k,
                    _ => acc >= ins.k,
                };
                pc += usize::from(if hit { ins.jt } else { ins.jf });
            }
            other => panic!("unexpected BPF opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERRNO_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn nr(name: &str) -> u32 {
        syscall_number(name).unwrap()
    }

    fn run(p: &Program, name: &str, args: [u64; 6]) -> u32 {
        evaluate(&p.instructions, AUDIT_ARCH_X86_64, nr(name), args)
    }

    #[test]
    fn syscall_table_is_sorted_and_known() {
        assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("unshare"), Some(272));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("nope"), None);
    }

    #[test]
    fn default_policy_without_sys_admin() {
        let bounding = caps::mask(&["CAP_KILL", "CAP_CHOWN"]).unwrap();
        let profile = default_profile(bounding).unwrap();
        let p = compile(&profile).unwrap();
        let zero = [0; 6];
        assert_eq!(run(&p, "read", zero), ALLOW);
        assert_eq!(run(&p, "execve", zero), ALLOW);
        assert_eq!(run(&p, "mount", zero), ERRNO_EPERM);
        assert_eq!(run(&p, "unshare", zero), ERRNO_EPERM);
        assert_eq!(run(&p, "reboot", zero), ERRNO_EPERM);
        assert_eq!(run(&p, "kexec_load", zero), ERRNO_EPERM);
        // clone: only without namespace flags.
        assert_eq!(
            run(&p, "clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            ALLOW
        );
        let newns = libc::CLONE_NEWNS as u64 | libc::SIGCHLD as u64;
        assert_eq!(run(&p, "clone", [newns, 0, 0, 0, 0, 0]), ERRNO_EPERM);
        assert_eq!(
            run(&p, "clone3", zero),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        // socket: everything but AF_VSOCK.
        assert_eq!(run(&p, "socket", [2, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "socket", [40, 1, 0, 0, 0, 0]), ERRNO_EPERM);
        // personality: the listed personas only.
        assert_eq!(run(&p, "personality", [8, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&p, "personality", [0x0040_0000, 0, 0, 0, 0, 0]),
            ERRNO_EPERM
        );
        // Other architectures are killed, x32 calls refused.
        assert_eq!(
            evaluate(&p.instructions, 0x4000_0003, 0, zero),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            evaluate(&p.instructions, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, zero),
            ERRNO_EPERM
        );
    }

    #[test]
    fn default_policy_with_sys_admin() {
        let bounding = caps::mask(&["CAP_SYS_ADMIN"]).unwrap();
        let p = compile(&default_profile(bounding).unwrap()).unwrap();
        assert_eq!(run(&p, "mount", [0; 6]), ALLOW);
        assert_eq!(run(&p, "clone3", [0; 6]), ALLOW);
        let newns = libc::CLONE_NEWNS as u64;
        assert_eq!(run(&p, "clone", [newns, 0, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn comparisons_are_64_bit() {
        let cases = [
            (SeccompOp::Eq, 0x1_0000_0005u64),
            (SeccompOp::Ne, 0x1_0000_0005),
            (SeccompOp::Lt, 0x1_0000_0005),
            (SeccompOp::Le, 0x1_0000_0005),
            (SeccompOp::Gt, 0x1_0000_0005),
            (SeccompOp::Ge, 0x1_0000_0005),
        ];
        let probes = [
            0u64,
            4,
            5,
            6,
            0x1_0000_0004,
            0x1_0000_0005,
            0x1_0000_0006,
            0x2_0000_0000,
            u64::MAX,
        ];
        for (op, value) in cases {
            let profile = Seccomp {
                default_action: SeccompAction::Errno,
                syscalls: vec![SeccompSyscall {
                    names: vec!["read".into()],
                    action: SeccompAction::Allow,
                    args: vec![SeccompArg {
                        index: 2,
                        value,
                        value_two: 0,
                        op,
                    }],
                    ..SeccompSyscall::default()
                }],
                ..Seccomp::default()
            };
            let p = compile(&profile).unwrap();
            for probe in probes {
                let want = match op {
                    SeccompOp::Eq => probe == value,
                    SeccompOp::Ne => probe != value,
                    SeccompOp::Lt => probe < value,
                    SeccompOp::Le => probe <= value,
                    SeccompOp::Gt => probe > value,
                    SeccompOp::Ge => probe >= value,
                    SeccompOp::MaskedEq => unreachable!(),
                };
                let got = run(&p, "read", [0, 0, probe, 0, 0, 0]) == ALLOW;
                assert_eq!(got, want, "{op:?} {value:#x} probe {probe:#x}");
            }
        }
    }

    #[test]
    fn masked_eq_and_first_match() {
        let profile = Seccomp {
            default_action: SeccompAction::Allow,
            syscalls: vec![
                SeccompSyscall {
                    names: vec!["ioctl".into(), "no_such_call".into()],
                    action: SeccompAction::Errno,
                    errno_ret: Some(13),
                    args: vec![SeccompArg {
                        index: 1,
                        value: 0xff00,
                        value_two: 0x5400,
                        op: SeccompOp::MaskedEq,
                    }],
                },
                SeccompSyscall {
                    names: vec!["ioctl".into()],
                    action: SeccompAction::KillProcess,
                    ..SeccompSyscall::default()
                },
            ],
            ..Seccomp::default()
        };
        let p = compile(&profile).unwrap();
        assert_eq!(
            run(&p, "ioctl", [0, 0x5413, 0, 0, 0, 0]),
            libc::SECCOMP_RET_ERRNO | 13
        );
        assert_eq!(
            run(&p, "ioctl", [0, 0x8913, 0, 0, 0, 0]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(run(&p, "read", [0; 6]), ALLOW);
    }

    #[test]
    fn policy_errors_name_the_line() {
        let err = parse_policy("default errno EPERM\nallow frobnicate\n", 0).unwrap_err();
        assert_eq!(
            err,
            SeccompError::Policy {
                line: 2,
                message: "unknown system call frobnicate".into()
            }
        );
        assert!(parse_policy("allow read if arg9 == 1", 0).is_err());
        assert!(parse_policy("when CAP_NOPE: allow read", 0).is_err());
        assert!(parse_policy("allow \\\n read write", 0).is_ok());
    }

    /// A profile from before 2021 (newest call `pidfd_open`, 434), like
    /// Docker's then: it names neither `clone3`, `close_range`, `openat2`
    /// nor `faccessat2`.
    fn pre_2021(default_action: SeccompAction, errno: Option<u32>) -> Seccomp {
        Seccomp {
            default_action,
            default_errno_ret: errno,
            syscalls: vec![
                SeccompSyscall {
                    names: vec!["read".into(), "faccessat".into(), "pidfd_open".into()],
                    action: SeccompAction::Allow,
                    ..SeccompSyscall::default()
                },
                SeccompSyscall {
                    names: vec!["not_a_call_yet".into()],
                    action: SeccompAction::Allow,
                    ..SeccompSyscall::default()
                },
            ],
            ..Seccomp::default()
        }
    }

    #[test]
    fn calls_newer_than_the_profile_are_enosys() {
        const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let profile = pre_2021(SeccompAction::Errno, None);
        assert_eq!(enosys_above(&profile), Some(434));
        let p = compile(&profile).unwrap();
        let zero = [0; 6];
        for newer in [
            "clone3",
            "close_range",
            "openat2",
            "faccessat2",
            "cachestat",
        ] {
            assert_eq!(run(&p, newer, zero), ENOSYS, "{newer}");
        }
        // Numbers no kernel has yet, and the x32-only range.
        for nr in [467, 512, 1000, X32_SYSCALL_BIT - 1] {
            assert_eq!(
                evaluate(&p.instructions, AUDIT_ARCH_X86_64, nr, zero),
                ENOSYS
            );
        }
        // The named ones keep their rule, older unnamed ones the default.
        assert_eq!(run(&p, "pidfd_open", zero), ALLOW);
        assert_eq!(run(&p, "faccessat", zero), ALLOW);
        assert_eq!(run(&p, "acct", zero), ERRNO_EPERM);
        assert_eq!(run(&p, "pidfd_send_signal", zero), ERRNO_EPERM);
        // The arch check still comes first, then the x32 refusal.
        assert_eq!(
            evaluate(&p.instructions, 0x4000_0003, 439, zero),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            evaluate(
                &p.instructions,
                AUDIT_ARCH_X86_64,
                X32_SYSCALL_BIT | 439,
                zero
            ),
            ERRNO_EPERM
        );

        // Every other non-permissive default gets the rule too.
        for action in [
            SeccompAction::Kill,
            SeccompAction::KillProcess,
            SeccompAction::Trap,
        ] {
            let p = compile(&pre_2021(action, None)).unwrap();
            assert_eq!(run(&p, "faccessat2", zero), ENOSYS, "{action:?}");
            assert_eq!(run(&p, "acct", zero), action_value(action, None));
        }
        // Not when the default allows, logs or traces, nor when it is
        // ENOSYS already, nor for a profile naming no call.
        for action in [
            SeccompAction::Allow,
            SeccompAction::Log,
            SeccompAction::Trace,
        ] {
            let profile = pre_2021(action, None);
            assert_eq!(enosys_above(&profile), None, "{action:?}");
            let p = compile(&profile).unwrap();
            assert_eq!(run(&p, "faccessat2", zero), action_value(action, None));
        }
        let enosys_default = pre_2021(SeccompAction::Errno, Some(libc::ENOSYS as u32));
        assert_eq!(enosys_above(&enosys_default), None);
        let empty = Seccomp {
            default_action: SeccompAction::Errno,
            ..Seccomp::default()
        };
        assert_eq!(enosys_above(&empty), None);
        let p = compile(&empty).unwrap();
        assert_eq!(run(&p, "faccessat2", zero), ERRNO_EPERM);
    }

    #[test]
    fn default_policy_names_the_newest_calls() {
        // Calls newer than hostd's own policy are ENOSYS too; everything it
        // names keeps its rule.
        let p = compile(&default_profile(0).unwrap()).unwrap();
        let newest = enosys_above(&default_profile(0).unwrap()).unwrap();
        assert!(newest >= syscall_number("faccessat2").unwrap());
        assert_eq!(run(&p, "faccessat2", [0; 6]), ALLOW);
        assert_eq!(run(&p, "close_range", [0; 6]), ALLOW);
        assert_eq!(
            evaluate(&p.instructions, AUDIT_ARCH_X86_64, newest + 1, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn unconfined_profile() {
        let profile = Seccomp {
            default_action: SeccompAction::Allow,
            ..Seccomp::default()
        };
        assert!(is_unconfined(&profile));
        let bad = Seccomp {
            flags: vec!["SECCOMP_FILTER_FLAG_BOGUS".into()],
            ..profile
        };
        assert!(compile(&bad).is_err());
    }
}
