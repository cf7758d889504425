//! Shared-library closure of an ELF binary: the files that must sit next to it in the
//! initramfs for it to run, found the way glibc's `ld.so` finds them.
//!
//! For the binary and then every library it pulls in, we read the program headers:
//! `PT_INTERP` names the dynamic loader, and the `PT_DYNAMIC` segment lists `DT_NEEDED`
//! sonames plus `DT_RPATH`/`DT_RUNPATH` search paths (with `$ORIGIN` expanded). Each
//! soname is searched in RUNPATH (or RPATH, inherited from the loading objects), then
//! the directories of `/etc/ld.so.conf` (following `include` globs), then the default
//! multiarch and plain lib directories. A candidate that is not ELF64 x86-64 is skipped,
//! as `ld.so` does. Paths are returned as looked up, without resolving symlinks: the
//! builder copies the contents to exactly that path. Only section-less program headers
//! are used, so stripped binaries work.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use object::elf::{
    FileHeader64, DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ, DT_STRTAB,
    EM_X86_64, PT_LOAD,
};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Endianness, ReadCache, ReadRef};

/// Where `ld.so` reads its extra library directories.
const LD_SO_CONF: &str = "/etc/ld.so.conf";

/// Searched after the ld.so.conf directories, in this order.
const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Errors from computing a library closure.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path:?} is not an ELF file")]
    NotElf { path: PathBuf },
    #[error("{path:?} is not an ELF64 x86-64 file ({what})")]
    WrongArch { path: PathBuf, what: String },
    #[error("malformed ELF file {path:?}: {what}")]
    Malformed {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Option<object::read::Error>,
    },
    #[error("library {library:?} needed by {needed_by:?} not found")]
    MissingLibrary { library: String, needed_by: PathBuf },
    #[error("interpreter {interpreter:?} of {binary:?} not found")]
    MissingInterpreter {
        interpreter: PathBuf,
        binary: PathBuf,
    },
}

/// The dynamic loader and the shared libraries a binary needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LibraryClosure {
    /// `PT_INTERP` of the binary; `None` for a static binary.
    pub interpreter: Option<PathBuf>,
    /// Every library in the `DT_NEEDED` closure, sorted, without the interpreter.
    pub libraries: Vec<PathBuf>,
}

/// Compute the library closure of `binary` with this machine's `ld.so` configuration.
pub fn library_closure(binary: &Path) -> Result<LibraryClosure, ElfError> {
    let mut search = ld_so_conf_dirs(Path::new(LD_SO_CONF));
    search.extend(DEFAULT_DIRS.iter().map(PathBuf::from));
    closure_with(binary, &search)
}

/// What the dynamic section of one object says.
#[derive(Debug, Default)]
struct DynInfo {
    interpreter: Option<String>,
    soname: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

/// A library still to be parsed, with the RPATHs it inherits from its loaders.
struct Pending {
    path: PathBuf,
    inherited_rpath: Vec<PathBuf>,
}

fn closure_with(binary: &Path, system_dirs: &[PathBuf]) -> Result<LibraryClosure, ElfError> {
    let main = read_dyn_info(binary)?;
    let mut result = LibraryClosure::default();
    // Sonames already loaded (by DT_SONAME or by the name they were needed as).
    let mut loaded: HashMap<String, PathBuf> = HashMap::new();
    let mut libraries = BTreeSet::new();

    if let Some(interp) = &main.interpreter {
        let interp = PathBuf::from(interp);
        if !interp.is_file() {
            return Err(ElfError::MissingInterpreter {
                interpreter: interp,
                binary: binary.to_path_buf(),
            });
        }
        let info = read_dyn_info(&interp)?;
        if let Some(name) = interp.file_name().and_then(|n| n.to_str()) {
            loaded.insert(name.to_string(), interp.clone());
        }
        if let Some(soname) = info.soname {
            loaded.insert(soname, interp.clone());
        }
        result.interpreter = Some(interp);
    }

    let mut queue = VecDeque::new();
    queue.push_back((
        Pending {
            path: binary.to_path_buf(),
            inherited_rpath: Vec::new(),
        },
        main,
    ));
    while let Some((object, info)) = queue.pop_front() {
        let origin = origin_of(&object.path);
        let expand = |list: &[String]| -> Vec<PathBuf> {
            list.iter()
                .map(|dir| PathBuf::from(expand_origin(dir, &origin)))
                .collect()
        };
        // glibc: RUNPATH replaces RPATH, and is not inherited; RPATH is inherited.
        let (dirs, inherited) = if info.runpath.is_empty() {
            let mut own = expand(&info.rpath);
            own.extend(object.inherited_rpath.iter().cloned());
            (own.clone(), own)
        } else {
            (expand(&info.runpath), object.inherited_rpath.clone())
        };
        for needed in &info.needed {
            if loaded.contains_key(needed) {
                continue;
            }
            let found = if needed.contains('/') {
                let p = PathBuf::from(needed);
                is_compatible(&p).then_some(p)
            } else {
                dirs.iter()
                    .chain(system_dirs)
                    .map(|d| d.join(needed))
                    .find(|p| is_compatible(p))
            };
            let Some(path) = found else {
                return Err(ElfError::MissingLibrary {
                    library: needed.clone(),
                    needed_by: object.path.clone(),
                });
            };
            let lib_info = read_dyn_info(&path)?;
            loaded.insert(needed.clone(), path.clone());
            if let Some(soname) = &lib_info.soname {
                loaded.entry(soname.clone()).or_insert_with(|| path.clone());
            }
            libraries.insert(path.clone());
            queue.push_back((
                Pending {
                    path,
                    inherited_rpath: inherited.clone(),
                },
                lib_info,
            ));
        }
    }
    if let Some(interp) = &result.interpreter {
        libraries.remove(interp);
    }
    result.libraries = libraries.into_iter().collect();
    Ok(result)
}

/// The directory `$ORIGIN` stands for: where the object really lives.
fn origin_of(path: &Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    real.parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn expand_origin(dir: &str, origin: &str) -> String {
    dir.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
}

/// Whether `path` is a regular file that `ld.so` on x86-64 could load.
fn is_compatible(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let cache = ReadCache::new(file);
    FileHeader64::<Endianness>::parse(&cache)
        .ok()
        .and_then(|h| Some(h.e_machine(h.endian().ok()?)))
        == Some(EM_X86_64)
}

/// Read PT_INTERP and the dynamic section of an ELF64 x86-64 file.
fn read_dyn_info(path: &Path) -> Result<DynInfo, ElfError> {
    let file = File::open(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let data = &cache;
    let malformed = |what| {
        move |source| ElfError::Malformed {
            path: path.to_path_buf(),
            what,
            source: Some(source),
        }
    };
    let ident = data.read_bytes_at(0, 5).map_err(|_| ElfError::NotElf {
        path: path.to_path_buf(),
    })?;
    if &ident[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf {
            path: path.to_path_buf(),
        });
    }
    if ident[4] != object::elf::ELFCLASS64 {
        return Err(ElfError::WrongArch {
            path: path.to_path_buf(),
            what: "32-bit".into(),
        });
    }
    let header = FileHeader64::<Endianness>::parse(data).map_err(malformed("header"))?;
    let endian = header.endian().map_err(malformed("endianness"))?;
    let machine = header.e_machine(endian);
    if machine != EM_X86_64 {
        return Err(ElfError::WrongArch {
            path: path.to_path_buf(),
            what: format!("machine {machine}"),
        });
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(malformed("program headers"))?;

    let mut info = DynInfo::default();
    let mut dynamic = None;
    for ph in phdrs {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(malformed("PT_INTERP"))?
        {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
        if let Some(d) = ph.dynamic(endian, data).map_err(malformed("PT_DYNAMIC"))? {
            dynamic = Some(d);
        }
    }
    let Some(dynamic) = dynamic else {
        return Ok(info); // static
    };

    // DT_STRTAB is a virtual address; map it to a file offset through PT_LOAD.
    let mut strtab_addr = None;
    let mut strsz = None;
    for d in dynamic {
        match d.d_tag(endian) as u32 {
            DT_NULL => break,
            DT_STRTAB => strtab_addr = Some(d.d_val(endian)),
            DT_STRSZ => strsz = Some(d.d_val(endian)),
            _ => {}
        }
    }
    let no_strtab = || ElfError::Malformed {
        path: path.to_path_buf(),
        what: "dynamic string table",
        source: None,
    };
    let (Some(addr), Some(size)) = (strtab_addr, strsz) else {
        if dynamic.iter().any(|d| d.d_tag(endian) as u32 == DT_NEEDED) {
            return Err(no_strtab());
        }
        return Ok(info);
    };
    let offset = phdrs
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .find_map(|ph| {
            let vaddr = ph.p_vaddr(endian);
            let filesz = ph.p_filesz(endian);
            (vaddr <= addr && addr < vaddr.saturating_add(filesz))
                .then(|| ph.p_offset(endian) + (addr - vaddr))
        })
        .ok_or_else(no_strtab)?;
    let string_at = |index: u64| -> Result<String, ElfError> {
        if index >= size {
            return Err(no_strtab());
        }
        let bytes = data
            .read_bytes_at_until(offset + index..offset + size, 0)
            .map_err(|()| no_strtab())?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    };
    let split = |s: String| -> Vec<String> {
        s.split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    for d in dynamic {
        let tag = d.d_tag(endian) as u32;
        let val = d.d_val(endian);
        match tag {
            DT_NULL => break,
            DT_NEEDED => info.needed.push(string_at(val)?),
            DT_SONAME => info.soname = Some(string_at(val)?),
            DT_RPATH => info.rpath.extend(split(string_at(val)?)),
            DT_RUNPATH => info.runpath.extend(split(string_at(val)?)),
            _ => {}
        }
    }
    Ok(info)
}

/// Directories listed in an ld.so.conf file, following `include` lines.
fn ld_so_conf_dirs(conf: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_conf(conf, &mut dirs, 0);
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

fn read_conf(conf: &Path, dirs: &mut Vec<PathBuf>, depth: usize) {
    // A missing or unreadable ld.so.conf just means no extra directories, as in ld.so.
    if depth > 8 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(conf) else {
        return;
    };
    let base = conf.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("include") {
            if rest.starts_with(char::is_whitespace) {
                for pattern in rest.split_whitespace() {
                    for file in expand_glob(&base.join(pattern)) {
                        read_conf(&file, dirs, depth + 1);
                    }
                }
                continue;
            }
        }
        if line.starts_with("hwcap") {
            continue;
        }
        for dir in line.split([' ', '\t', ',', ':']).filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(dir));
        }
    }
}

/// Expand a wildcard in the last component of `pattern` (sorted matches).
fn expand_glob(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !mkhost_shared::glob::has_wildcard(&name) {
        return if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !n.starts_with('.') && mkhost_shared::glob::matches(&name, &n)
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `ldd`'s answer: (interpreter, libraries) from `name => path` lines.
    fn ldd(binary: &Path) -> (Option<PathBuf>, Vec<PathBuf>) {
        let out = Command::new("ldd").arg(binary).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut interp = None;
        let mut libs = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some((_, rest)) = line.split_once(" => ") {
                if let Some(path) = rest.split_whitespace().next() {
                    libs.push(PathBuf::from(path));
                }
            } else if line.starts_with('/') {
                interp = line.split_whitespace().next().map(PathBuf::from);
            }
        }
        libs.sort();
        (interp, libs)
    }

    #[test]
    fn dynamic_binary_matches_ldd() {
        let ls = Path::new("/bin/ls");
        let closure = library_closure(ls).unwrap();
        assert_eq!(
            closure.interpreter.as_deref(),
            Some(Path::new("/lib64/ld-linux-x86-64.so.2"))
        );
        assert!(
            closure
                .libraries
                .iter()
                .any(|p| p.file_name().unwrap() == "libc.so.6"),
            "{closure:?}"
        );
        let (interp, libs) = ldd(ls);
        assert_eq!(closure.interpreter, interp);
        assert_eq!(closure.libraries, libs);
        let mut sorted = closure.libraries.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, closure.libraries);
    }

    #[test]
    fn more_binaries_match_ldd() {
        for bin in [
            "/usr/bin/cpio",
            "/usr/bin/zstd",
            "/bin/bash",
            "/usr/bin/ssh",
        ] {
            let bin = Path::new(bin);
            if !bin.exists() {
                continue;
            }
            let closure = library_closure(bin).unwrap();
            let (interp, libs) = ldd(bin);
            assert_eq!(closure.interpreter, interp, "{bin:?}");
            assert_eq!(closure.libraries, libs, "{bin:?}");
        }
    }

    #[test]
    fn static_binary_has_no_libraries() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("skipping: busybox-static not installed");
            return;
        }
        let closure = library_closure(busybox).unwrap();
        assert_eq!(closure, LibraryClosure::default());
    }

    #[test]
    fn non_elf_and_missing_input() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let err = library_closure(&script).unwrap_err();
        assert!(matches!(err, ElfError::NotElf { .. }), "{err}");
        assert!(err.to_string().contains("script.sh"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            library_closure(&empty),
            Err(ElfError::NotElf { .. })
        ));
        let mut truncated = std::fs::read("/bin/ls").unwrap();
        truncated.truncate(100);
        let t = dir.path().join("truncated");
        std::fs::write(&t, truncated).unwrap();
        assert!(library_closure(&t).is_err());
        assert!(matches!(
            library_closure(&dir.path().join("nope")),
            Err(ElfError::Read { .. })
        ));
    }

    #[test]
    fn ld_so_conf_includes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("ld.so.conf"),
            "# comment\ninclude conf.d/*.conf\n/opt/first\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/b.conf"), "/opt/b1 /opt/b2\n").unwrap();
        std::fs::write(d.join("conf.d/a.conf"), "/opt/a # trailing\n").unwrap();
        std::fs::write(d.join("conf.d/ignored.txt"), "/opt/no\n").unwrap();
        let dirs = ld_so_conf_dirs(&d.join("ld.so.conf"));
        let want: Vec<PathBuf> = ["/opt/a", "/opt/b1", "/opt/b2", "/opt/first"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, want);
    }

    fn cc(args: &[&str], cwd: &Path) -> bool {
        Command::new("cc")
            .args(args)
            .current_dir(cwd)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A binary with RUNPATH=$ORIGIN/lib needing a private library; then the library
    /// removed to check the error names both sides.
    #[test]
    fn origin_runpath_and_missing_library() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("lib")).unwrap();
        std::fs::write(d.join("lib.c"), "int mkhost_t(void) { return 7; }\n").unwrap();
        std::fs::write(
            d.join("main.c"),
            "int mkhost_t(void);\nint main(void) { return mkhost_t(); }\n",
        )
        .unwrap();
        if !cc(&["-shared", "-fPIC", "-o", "lib/libmkt.so", "lib.c"], d)
            || !cc(
                &[
                    "-o",
                    "main",
                    "main.c",
                    "-Llib",
                    "-lmkt",
                    "-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib",
                ],
                d,
            )
        {
            eprintln!("skipping: no working C compiler");
            return;
        }
        let closure = library_closure(&d.join("main")).unwrap();
        assert!(
            closure.libraries.contains(&d.join("lib").join("libmkt.so"))
                || closure
                    .libraries
                    .contains(&std::fs::canonicalize(d).unwrap().join("lib/libmkt.so")),
            "{closure:?}"
        );
        let (_, libs) = ldd(&d.join("main"));
        assert_eq!(closure.libraries.len(), libs.len(), "{libs:?}");

        std::fs::remove_file(d.join("lib/libmkt.so")).unwrap();
        let err = library_closure(&d.join("main")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ElfError::MissingLibrary { .. }));
        assert!(msg.contains("libmkt.so") && msg.contains("main"), "{msg}");
    }
}
