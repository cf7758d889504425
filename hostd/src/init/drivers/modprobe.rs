//! `init` as `/sbin/modprobe`: the kernel's module autoloader.
//!
//! When something needs a driver that is shipped but not loaded (mounting
//! overlay, creating a veth pair, an nftables rule), the kernel runs its
//! usermode helper `modprobe -q -- NAME`, where NAME is a module name or an alias
//! such as `fs-overlay` or `rtnl-link-veth`. The image has no kmod; the builder
//! links `/sbin/modprobe` to `/init`, and this module answers: it resolves the
//! name through the shipped depmod files and loads the module with its
//! dependencies, exactly as boot and coldplug do.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::init::drivers::modules::{self, ModuleDb, ModuleLoad};

/// What the arguments ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Module names or aliases, in order.
    pub names: Vec<String>,
    /// `-q`: say nothing about names that resolve to no module.
    pub quiet: bool,
}

/// Parses `modprobe` arguments as the kernel passes them (`-q -- NAME`); other
/// flags are accepted and ignored, as this modprobe only ever inserts.
pub fn parse_args(args: &[String]) -> Request {
    use lexopt::prelude::*;
    let mut request = Request::default();
    let mut p = lexopt::Parser::from_args(args);
    // No option takes a value: `-x=y` is a cluster of ignored letters.
    p.set_short_equals(false);
    // `next` fails only on an unused `--option=value`, and every long
    // option's value is taken below: the loop sees every argument.
    while let Ok(Some(arg)) = p.next() {
        match arg {
            Short('q') => request.quiet = true,
            Short(_) => {}
            Long(name) => {
                request.quiet |= name == "quiet";
                let _ = p.optional_value();
            }
            Value(name) => request.names.push(name.to_string_lossy().into()),
        }
    }
    request
}

/// The module directory of the running kernel below `root`.
pub fn module_dir(root: &Path) -> Option<PathBuf> {
    let release = fs::read_to_string(root.join("proc/sys/kernel/osrelease")).ok()?;
    Some(root.join("lib/modules").join(release.trim()))
}

/// Loads what `request` names; returns the process exit code (0 when every
/// name is loaded, already loaded or built in).
pub fn run(root: &Path, request: &Request) -> u8 {
    let Some(dir) = module_dir(root) else {
        eprintln!("modprobe: cannot read the kernel release from /proc");
        return 1;
    };
    let db = match ModuleDb::load(&dir) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("modprobe: {e}");
            return 1;
        }
    };
    let present: HashSet<String> = fs::read_to_string(root.join("proc/modules"))
        .map(|t| modules::parse_proc_modules(&t))
        .unwrap_or_default();
    // The kernel asks by alias (`fs-overlay`) as often as by name.
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    for name in &request.names {
        let resolved = db.resolve_name(name);
        if resolved.is_empty() {
            unknown.push(name.clone());
        }
        wanted.extend(resolved);
    }
    let (plan, unshipped) = db.plan(&wanted, &present);
    unknown.extend(unshipped);
    let mut failed = false;
    for name in &unknown {
        failed = true;
        if !request.quiet {
            eprintln!("modprobe: module {name} not found in {}", dir.display());
        }
    }
    for outcome in modules::run_plan(&plan, 1, |m| modules::load_module(&dir.join(&m.rel_path))) {
        match outcome.result {
            Ok(ModuleLoad::Loaded | ModuleLoad::AlreadyLoaded) => {}
            Ok(ModuleLoad::NoDevice) => {
                failed = true;
                if !request.quiet {
                    eprintln!("modprobe: {}: no such device", outcome.name);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("modprobe: {e}");
            }
        }
    }
    u8::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kernel_style_arguments() {
        let r = parse_args(&args(&["-q", "--", "fs-overlay"]));
        assert_eq!(r.names, vec!["fs-overlay"]);
        assert!(r.quiet);
        let r = parse_args(&args(&["-b", "veth", "--", "-odd-name"]));
        assert_eq!(r.names, vec!["veth", "-odd-name"]);
        assert!(!r.quiet);
        // Attached values go with their (ignored) option; -q in a cluster counts.
        let r = parse_args(&args(&["--config=/etc/x", "-a=b", "-bq", "overlay"]));
        assert_eq!(r.names, vec!["overlay"]);
        assert!(r.quiet);
        assert!(parse_args(&args(&["--quiet", "veth"])).quiet);
    }

    #[test]
    fn unknown_names_fail_and_missing_proc_is_reported() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(run(root.path(), &parse_args(&args(&["x"]))), 1);
        let dir = root.path().join("lib/modules/0.0-test");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        fs::write(root.path().join("proc/sys/kernel/osrelease"), "0.0-test\n").unwrap();
        fs::write(dir.join("modules.dep"), "kernel/a.ko:\n").unwrap();
        fs::write(dir.join("modules.alias"), "alias fs-a a\n").unwrap();
        // Known through its alias, but the file is absent: a load failure.
        assert_eq!(
            run(root.path(), &parse_args(&args(&["-q", "--", "fs-a"]))),
            1
        );
        assert_eq!(
            run(root.path(), &parse_args(&args(&["-q", "--", "nope"]))),
            1
        );
    }
}
