//! Kernel-module index of one `/lib/modules/<release>` tree, and the dependency closure
//! of the modules an image asks for.
//!
//! Two ways in. When depmod has run, `modules.dep` (plus `modules.softdep` and
//! `modules.alias`) already says everything, and loading is a text parse. Debian's
//! `linux-image` packages ship without it (depmod runs at install time), so otherwise
//! every `.ko` is opened and its `.modinfo` ELF section read: NUL-separated
//! `key=value` strings naming the module (`name`), its hard dependencies (`depends`),
//! soft dependencies (`softdep`), device aliases (`alias`) and firmware (`firmware`).
//! Only the ELF header, section headers, section-name table and `.modinfo` are read,
//! over a few threads. [`ModuleIndex::write_depmod_files`] caches the result in
//! depmod's formats so the next load takes the fast path.
//!
//! Names are normalised as the kernel does (`-` becomes `_`), for lookups too.
//! [`ModuleIndex::closure`] returns modules in load order: every module after its
//! dependencies and its `pre:` soft dependencies, `post:` soft dependencies after it.
//! Names built into the kernel (`modules.builtin`) need no file and are listed apart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use object::elf::FileHeader64;
use object::read::elf::{FileHeader, SectionHeader};
use object::{Endianness, ReadCache, ReadRef};

use crate::compress::{self, CompressError};

/// Largest decompressed `.ko.zst` we accept.
const MAX_MODULE_SIZE: usize = 512 << 20;

/// How many suggestions an unknown-module error offers.
const MAX_SUGGESTIONS: usize = 3;

/// Errors from indexing modules or computing a closure.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read directory {path:?}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path:?} line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot parse kernel module {path:?} as ELF64")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::read::Error,
    },
    #[error("kernel module {path:?} has no .modinfo section")]
    NoModinfo { path: PathBuf },
    #[error("cannot decompress kernel module {path:?}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: CompressError,
    },
    #[error("module {name:?} is compressed ({path}); only .ko and .ko.zst can be indexed without modules.dep")]
    UnsupportedCompression { name: String, path: String },
    #[error("unknown module {name:?}{}", did_you_mean(.suggestions))]
    Unknown {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("module {module:?} depends on {dependency:?}, which is neither a module nor built in")]
    MissingDependency { module: String, dependency: String },
    #[error("dependency cycle through module {module:?}")]
    Cycle { module: String },
    #[error("cannot write {path:?}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(" (did you mean: {}?)", suggestions.join(", "))
    }
}

/// What the index knows about one module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Normalised name (`-` replaced by `_`).
    pub name: String,
    /// Path relative to `/lib/modules/<release>`, e.g. `kernel/fs/ext4/ext4.ko`.
    pub rel_path: String,
    /// Hard dependencies by name: direct ones from `.modinfo`, or depmod's full list.
    pub depends: Vec<String>,
    /// Names (or aliases) to load before this module, if available.
    pub softdep_pre: Vec<String>,
    /// Names (or aliases) to load after this module, if available.
    pub softdep_post: Vec<String>,
    /// Device/alias patterns, as written by the module (e.g. `pci:v00008086d*...`).
    pub aliases: Vec<String>,
}

/// The modules of one kernel release.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    modules: BTreeMap<String, ModuleInfo>,
    builtin: BTreeSet<String>,
    /// Normalised literal alias -> module names.
    alias_exact: HashMap<String, BTreeSet<String>>,
    /// Normalised wildcard alias pattern -> module name.
    alias_patterns: Vec<(String, String)>,
    /// Modules we found but could not read (e.g. `.ko.xz` without modules.dep).
    unsupported: BTreeMap<String, String>,
}

/// The result of [`ModuleIndex::closure`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Closure {
    /// Module files in load order (every module after its dependencies).
    pub modules: Vec<ModuleInfo>,
    /// Requested or needed names that are built into the kernel (sorted).
    pub builtin: Vec<String>,
}

/// Normalise a module name as the kernel does.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Normalise an alias like kmod does: `-` becomes `_` outside bracket expressions.
fn normalize_alias(alias: &str) -> String {
    let mut depth = 0u32;
    alias
        .chars()
        .map(|c| match c {
            '[' => {
                depth += 1;
                c
            }
            ']' => {
                depth = depth.saturating_sub(1);
                c
            }
            '-' if depth == 0 => '_',
            c => c,
        })
        .collect()
}

/// Module name from a path: file name without `.ko[.xz|.zst|.gz]`, normalised.
fn name_from_path(rel: &str) -> Option<String> {
    let file = rel.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    (!stem.is_empty()).then(|| normalize(stem))
}

/// Split a softdep value (`pre: a b post: c`) into (pre, post) names, kept as written
/// (they may be aliases such as `crypto-crc32c`; lookups normalise them). Words before
/// any `pre:`/`post:` are ignored, as modprobe does.
fn parse_softdep(value: &str) -> (Vec<String>, Vec<String>) {
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    let mut target: Option<&mut Vec<String>> = None;
    for token in value.split_whitespace() {
        match token {
            "pre:" => target = Some(&mut pre),
            "post:" => target = Some(&mut post),
            name => {
                if let Some(list) = target.as_deref_mut() {
                    list.push(name.to_string());
                }
            }
        }
    }
    (pre, post)
}

/// The fields of a `.modinfo` section we use.
#[derive(Debug, Default, PartialEq, Eq)]
struct Modinfo {
    name: Option<String>,
    depends: Vec<String>,
    softdep_pre: Vec<String>,
    softdep_post: Vec<String>,
    aliases: Vec<String>,
    firmware: Vec<String>,
}

fn parse_modinfo(section: &[u8]) -> Modinfo {
    let mut info = Modinfo::default();
    for entry in section.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(normalize(value)),
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "softdep" => {
                let (pre, post) = parse_softdep(value);
                info.softdep_pre.extend(pre);
                info.softdep_post.extend(post);
            }
            "alias" => info.aliases.push(value.to_string()),
            "firmware" if !info.firmware.iter().any(|f| f == value) => {
                info.firmware.push(value.to_string());
            }
            _ => {}
        }
    }
    info
}

/// Find `.modinfo` in an ELF64 object, reading only headers, names and the section.
fn modinfo_section<'a, R: ReadRef<'a>>(data: R) -> Result<Option<&'a [u8]>, object::read::Error> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.section_headers(endian, data)?;
    let shstrndx = header.shstrndx(endian, data)? as usize;
    let Some(names_header) = sections.get(shstrndx) else {
        return Ok(None); // no section names: cannot find .modinfo
    };
    let names = names_header.data(endian, data)?;
    for section in sections {
        let start = section.sh_name(endian) as usize;
        let name = names
            .get(start..)
            .and_then(|rest| rest.split(|&b| b == 0).next());
        if name == Some(b".modinfo".as_slice()) {
            return section.data(endian, data).map(Some);
        }
    }
    Ok(None)
}

/// Read and parse the `.modinfo` of a module file (`.ko` or `.ko.zst`).
fn read_modinfo(path: &Path) -> Result<Modinfo, ModuleError> {
    let elf_err = |source| ModuleError::Elf {
        path: path.to_path_buf(),
        source,
    };
    let section = if path.to_string_lossy().ends_with(".zst") {
        let raw = std::fs::read(path).map_err(|source| ModuleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let elf = compress::zstd_decompress(&raw, MAX_MODULE_SIZE).map_err(|source| {
            ModuleError::Decompress {
                path: path.to_path_buf(),
                source,
            }
        })?;
        modinfo_section(elf.as_slice())
            .map_err(elf_err)?
            .map(parse_modinfo)
    } else {
        let file = File::open(path).map_err(|source| ModuleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cache = ReadCache::new(file);
        modinfo_section(&cache).map_err(elf_err)?.map(parse_modinfo)
    };
    section.ok_or_else(|| ModuleError::NoModinfo {
        path: path.to_path_buf(),
    })
}

/// Relative paths of every module file under `dir`, sorted; symlinks are not followed
/// (Debian's `build` and `source` link to header trees).
fn find_module_files(dir: &Path) -> Result<Vec<String>, ModuleError> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&abs).map_err(|source| ModuleError::ReadDir {
            path: abs.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ModuleError::ReadDir {
                path: abs.clone(),
                source,
            })?;
            let file_type = entry.file_type().map_err(|source| ModuleError::Read {
                path: entry.path(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if file_type.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if file_type.is_file() && name_from_path(&name).is_some() {
                found.push(child_rel);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Parse module files on a few threads; results come back in input order.
fn scan_modinfo(dir: &Path, rels: &[String]) -> Vec<Result<Option<Modinfo>, ModuleError>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let chunk = rels.len().div_ceil(threads).max(1);
    let parse_one = |rel: &String| -> Result<Option<Modinfo>, ModuleError> {
        if rel.ends_with(".ko") || rel.ends_with(".ko.zst") {
            read_modinfo(&dir.join(rel)).map(Some)
        } else {
            Ok(None) // compressed in a format we do not read
        }
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = rels
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(parse_one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

impl ModuleIndex {
    /// Index `/lib/modules/<release>`: from modules.dep if present, else by reading
    /// every module's `.modinfo`.
    pub fn load(dir: &Path) -> Result<Self, ModuleError> {
        let mut index = ModuleIndex {
            dir: dir.to_path_buf(),
            ..Self::default()
        };
        // Probe the directory itself so a wrong path says so.
        std::fs::read_dir(dir).map_err(|source| ModuleError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(text) = read_optional(&dir.join("modules.builtin"))? {
            index.builtin = text
                .lines()
                .filter_map(|l| name_from_path(l.trim()))
                .collect();
        }
        if dir.join("modules.dep").exists() {
            index.load_depmod_files()?;
        } else {
            index.scan()?;
        }
        index.build_alias_maps();
        Ok(index)
    }

    /// The directory this index describes; `rel_path`s are relative to it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, name: &str) -> Option<&ModuleInfo> {
        self.modules.get(&normalize(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Number of module files indexed.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// All indexed modules, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &ModuleInfo> {
        self.modules.values()
    }

    fn load_depmod_files(&mut self) -> Result<(), ModuleError> {
        let dep_path = self.dir.join("modules.dep");
        let text = read_optional(&dep_path)?.unwrap_or_default();
        let parse_err = |line, reason: &str| ModuleError::Parse {
            path: dep_path.clone(),
            line,
            reason: reason.to_string(),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (module, deps) = line
                .split_once(':')
                .ok_or_else(|| parse_err(n + 1, "expected \"path: deps\""))?;
            let name =
                name_from_path(module).ok_or_else(|| parse_err(n + 1, "not a module path"))?;
            let depends = deps
                .split_whitespace()
                .map(|d| name_from_path(d).ok_or_else(|| parse_err(n + 1, "bad dependency path")))
                .collect::<Result<Vec<_>, _>>()?;
            self.modules.entry(name.clone()).or_insert(ModuleInfo {
                name,
                rel_path: module.to_string(),
                depends,
                softdep_pre: Vec::new(),
                softdep_post: Vec::new(),
                aliases: Vec::new(),
            });
        }

        let softdep_path = self.dir.join("modules.softdep");
        if let Some(text) = read_optional(&softdep_path)? {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut words = line.splitn(3, char::is_whitespace);
                let (Some("softdep"), Some(name)) = (words.next(), words.next()) else {
                    return Err(ModuleError::Parse {
                        path: softdep_path,
                        line: n + 1,
                        reason: "expected \"softdep NAME pre: ... post: ...\"".into(),
                    });
                };
                let (pre, post) = parse_softdep(words.next().unwrap_or(""));
                if let Some(m) = self.modules.get_mut(&normalize(name)) {
                    m.softdep_pre.extend(pre);
                    m.softdep_post.extend(post);
                }
            }
        }

        let alias_path = self.dir.join("modules.alias");
        if let Some(text) = read_optional(&alias_path)? {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                let ["alias", pattern, name] = words[..] else {
                    return Err(ModuleError::Parse {
                        path: alias_path,
                        line: n + 1,
                        reason: "expected \"alias PATTERN NAME\"".into(),
                    });
                };
                if let Some(m) = self.modules.get_mut(&normalize(name)) {
                    m.aliases.push(pattern.to_string());
                }
            }
        }
        Ok(())
    }

    fn scan(&mut self) -> Result<(), ModuleError> {
        let mut rels = find_module_files(&self.dir)?;
        // Like depmod, modules under updates/ win over others of the same name.
        rels.sort_by_key(|r| !r.starts_with("updates/"));
        let results = scan_modinfo(&self.dir, &rels);
        for (rel, result) in rels.iter().zip(results) {
            let stem = name_from_path(rel).unwrap_or_default();
            let Some(info) = result? else {
                self.unsupported.entry(stem).or_insert_with(|| rel.clone());
                continue;
            };
            let name = info.name.unwrap_or(stem);
            if self.modules.contains_key(&name) {
                continue;
            }
            self.modules.insert(
                name.clone(),
                ModuleInfo {
                    name,
                    rel_path: rel.clone(),
                    depends: info.depends,
                    softdep_pre: info.softdep_pre,
                    softdep_post: info.softdep_post,
                    aliases: info.aliases,
                },
            );
        }
        self.unsupported
            .retain(|name, _| !self.modules.contains_key(name));
        Ok(())
    }

    fn build_alias_maps(&mut self) {
        for m in self.modules.values() {
            for alias in &m.aliases {
                let alias = normalize_alias(alias);
                if mkhost_shared::glob::has_wildcard(&alias) {
                    self.alias_patterns.push((alias, m.name.clone()));
                } else {
                    self.alias_exact
                        .entry(alias)
                        .or_default()
                        .insert(m.name.clone());
                }
            }
        }
    }

    /// Write modules.dep, modules.softdep and modules.alias for the whole index into
    /// `dir` (each to a temporary name, then renamed).
    pub fn write_depmod_files(&self, dir: &Path) -> Result<(), ModuleError> {
        let mut all: Vec<ModuleInfo> = self.modules.values().cloned().collect();
        all.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        let files = [
            ("modules.dep", render_modules_dep(&all)),
            ("modules.softdep", render_modules_softdep(&all)),
            ("modules.alias", render_modules_alias(&all)),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            let tmp = dir.join(format!("{name}.tmp"));
            let write_err = |source| ModuleError::Write {
                path: path.clone(),
                source,
            };
            std::fs::write(&tmp, text).map_err(write_err)?;
            std::fs::rename(&tmp, &path).map_err(write_err)?;
        }
        Ok(())
    }

    /// The modules needed to load `requested` (names, aliases or built-ins), with
    /// their dependencies and available soft dependencies, in load order.
    ///
    /// The order is deterministic: requests are handled in the order given, each
    /// module's soft `pre:` and hard dependencies before it, soft `post:` after it.
    pub fn closure(&self, requested: &[String]) -> Result<Closure, ModuleError> {
        let mut walk = Walk {
            index: self,
            state: HashMap::new(),
            order: Vec::new(),
            builtin: BTreeSet::new(),
        };
        for name in requested {
            let name = name.trim();
            match self.resolve(name)? {
                Some(Target::Modules(mods)) => {
                    for m in mods {
                        walk.visit(&m, true)?;
                    }
                }
                Some(Target::Builtin(builtin)) => {
                    walk.builtin.insert(builtin);
                }
                None => {
                    return Err(ModuleError::Unknown {
                        suggestions: self.suggest(&normalize(name)),
                        name: name.to_string(),
                    })
                }
            }
        }
        Ok(Closure {
            modules: walk
                .order
                .iter()
                .filter_map(|n| self.modules.get(n).cloned())
                .collect(),
            builtin: walk.builtin.into_iter().collect(),
        })
    }

    /// Firmware files (relative to `/lib/firmware`) the module declares.
    pub fn firmware(&self, module: &ModuleInfo) -> Result<Vec<String>, ModuleError> {
        Ok(read_modinfo(&self.dir.join(&module.rel_path))?.firmware)
    }

    /// What a name means: module, built-in, or alias of modules.
    fn resolve(&self, raw: &str) -> Result<Option<Target>, ModuleError> {
        let name = normalize(raw);
        if self.modules.contains_key(&name) {
            return Ok(Some(Target::Modules(vec![name])));
        }
        if self.builtin.contains(&name) {
            return Ok(Some(Target::Builtin(name)));
        }
        if let Some(path) = self.unsupported.get(&name) {
            return Err(ModuleError::UnsupportedCompression {
                name,
                path: path.clone(),
            });
        }
        let alias = normalize_alias(raw);
        if let Some(mods) = self.alias_exact.get(&alias) {
            return Ok(Some(Target::Modules(mods.iter().cloned().collect())));
        }
        let matched: BTreeSet<String> = self
            .alias_patterns
            .iter()
            .filter(|(pattern, _)| mkhost_shared::glob::matches(pattern, &alias))
            .map(|(_, m)| m.clone())
            .collect();
        if matched.is_empty() {
            Ok(None)
        } else {
            Ok(Some(Target::Modules(matched.into_iter().collect())))
        }
    }

    /// Up to three known names closest to `name` by edit distance.
    fn suggest(&self, name: &str) -> Vec<String> {
        let limit = 3.max(name.len() / 3);
        let mut scored: Vec<(usize, &String)> = self
            .modules
            .keys()
            .chain(self.builtin.iter())
            .map(|candidate| (levenshtein(name, candidate), candidate))
            .filter(|(d, _)| *d <= limit)
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored
            .into_iter()
            .take(MAX_SUGGESTIONS)
            .map(|(_, n)| n.clone())
            .collect()
    }
}

enum Target {
    /// Normalised names of module files.
    Modules(Vec<String>),
    /// Normalised name of a built-in.
    Builtin(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Visiting,
    Done,
}

/// Depth-first walk that emits modules in post-order (dependencies first).
struct Walk<'a> {
    index: &'a ModuleIndex,
    state: HashMap<String, Mark>,
    order: Vec<String>,
    builtin: BTreeSet<String>,
}

impl Walk<'_> {
    /// Visit module `name`; `hard` says whether the edge leading here is a hard one.
    fn visit(&mut self, name: &str, hard: bool) -> Result<(), ModuleError> {
        match self.state.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) if hard => {
                return Err(ModuleError::Cycle {
                    module: name.to_string(),
                })
            }
            Some(Mark::Visiting) => return Ok(()), // soft edges may loop; ignore
            None => {}
        }
        let Some(module) = self.index.modules.get(name) else {
            return Ok(());
        };
        self.state.insert(name.to_string(), Mark::Visiting);
        for soft in &module.softdep_pre {
            self.visit_soft(soft)?;
        }
        for dep in &module.depends {
            match self.index.resolve(dep)? {
                Some(Target::Modules(mods)) if mods.len() == 1 && mods[0] == *dep => {
                    self.visit(dep, true)?;
                }
                Some(Target::Builtin(builtin)) => {
                    self.builtin.insert(builtin);
                }
                _ => {
                    return Err(ModuleError::MissingDependency {
                        module: name.to_string(),
                        dependency: dep.clone(),
                    })
                }
            }
        }
        self.state.insert(name.to_string(), Mark::Done);
        self.order.push(name.to_string());
        for soft in &module.softdep_post {
            self.visit_soft(soft)?;
        }
        Ok(())
    }

    /// Soft dependencies are optional: missing or unreadable ones are skipped.
    fn visit_soft(&mut self, name: &str) -> Result<(), ModuleError> {
        match self.index.resolve(name) {
            Ok(Some(Target::Modules(mods))) => {
                for m in mods {
                    self.visit(&m, false)?;
                }
            }
            Ok(Some(Target::Builtin(builtin))) => {
                self.builtin.insert(builtin);
            }
            Ok(None) | Err(_) => {}
        }
        Ok(())
    }
}

/// Edit distance (insertions, deletions, substitutions) between two strings.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn read_optional(path: &Path) -> Result<Option<String>, ModuleError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModuleError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `modules.dep` for exactly `modules`: each line lists the module's full dependency
/// set among them, most dependent first (depmod's order; modprobe loads it reversed).
pub fn render_modules_dep(modules: &[ModuleInfo]) -> String {
    let by_name: HashMap<&str, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    // Load position of each module within the set (post-order DFS, deps first).
    let mut position = vec![usize::MAX; modules.len()];
    let mut on_stack = vec![false; modules.len()];
    let mut next = 0;
    for start in 0..modules.len() {
        if position[start] != usize::MAX {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        on_stack[start] = true;
        while let Some(top) = stack.last_mut() {
            let i = top.0;
            if let Some(dep) = modules[i].depends.get(top.1) {
                top.1 += 1;
                if let Some(&j) = by_name.get(dep.as_str()) {
                    if position[j] == usize::MAX && !on_stack[j] {
                        on_stack[j] = true;
                        stack.push((j, 0));
                    }
                }
            } else {
                position[i] = next;
                next += 1;
                on_stack[i] = false;
                stack.pop();
            }
        }
    }
    let mut out = String::new();
    for m in modules {
        // Transitive dependencies within the set.
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = m.depends.iter().map(String::as_str).collect();
        while let Some(dep) = todo.pop() {
            if let Some(&j) = by_name.get(dep) {
                if seen.insert(j) {
                    todo.extend(modules[j].depends.iter().map(String::as_str));
                }
            }
        }
        let mut deps: Vec<usize> = seen
            .into_iter()
            .filter(|&j| modules[j].name != m.name)
            .collect();
        deps.sort_by_key(|&j| std::cmp::Reverse(position[j]));
        out.push_str(&m.rel_path);
        out.push(':');
        for j in deps {
            out.push(' ');
            out.push_str(&modules[j].rel_path);
        }
        out.push('\n');
    }
    out
}

/// `modules.alias` for exactly `modules`, in depmod's text format.
pub fn render_modules_alias(modules: &[ModuleInfo]) -> String {
    let mut out = String::from("# Aliases extracted from modules themselves.\n");
    for m in modules {
        for alias in &m.aliases {
            let _ = writeln!(out, "alias {alias} {}", m.name);
        }
    }
    out
}

/// The buses whose devices are plugged in, and whose drivers
/// `modules.absent` names (see [`render_modules_absent`]).
pub const ABSENT_BUSES: &[&str] = &["pci", "usb", "virtio", "scsi", "hid", "sdio", "vmbus"];

/// The kernel subtrees whose missing modules `modules.absent` names: the
/// hardware of a container host (NICs, storage, virtio, USB hosts and
/// sticks, RNG/TPM/crypto, SD/eMMC, memory errors, device passthrough).
/// Sound, video, media, wireless, serial adapters and input are left out:
/// thousands of aliases no server needs (they would triple the file).
pub const ABSENT_DIRS: &[&str] = &[
    "kernel/drivers/net/",
    "kernel/drivers/scsi/",
    "kernel/drivers/ata/",
    "kernel/drivers/nvme/",
    "kernel/drivers/block/",
    "kernel/drivers/md/",
    "kernel/drivers/virtio/",
    "kernel/drivers/message/",
    "kernel/drivers/infiniband/",
    "kernel/drivers/usb/host/",
    "kernel/drivers/usb/storage/",
    "kernel/drivers/mmc/",
    "kernel/drivers/char/",
    "kernel/drivers/crypto/",
    "kernel/drivers/edac/",
    "kernel/drivers/vfio/",
    "kernel/drivers/pci/",
];

/// Subtrees of [`ABSENT_DIRS`] left out all the same.
pub const ABSENT_SKIP: &[&str] = &[
    "kernel/drivers/net/wireless/",
    "kernel/drivers/net/can/",
    "kernel/drivers/net/wwan/",
    "kernel/drivers/net/ieee802154/",
];

/// `modules.absent`, mkhost's own index of what the image leaves out: for
/// every module of `index` under [`ABSENT_DIRS`] (but not [`ABSENT_SKIP`])
/// that is neither in `shipped` nor built in and has aliases on
/// [`ABSENT_BUSES`], a `module NAME` line, a `set NAME SET` line
/// per set of `sets` (set name -> module names) that holds it, then its
/// aliases one per line, shortened by [`short_alias`]. init reads it when a
/// device matches nothing in the image, to name the module and the profile
/// key that adds it. Compact because every file of the initramfs is copied
/// into the tmpfs root at each boot (Debian's 6.1 kernel: ~180 KiB).
pub fn render_modules_absent(
    index: &ModuleIndex,
    shipped: &[ModuleInfo],
    sets: &BTreeMap<String, Vec<String>>,
    release: &str,
) -> String {
    let shipped: BTreeSet<&str> = shipped.iter().map(|m| m.name.as_str()).collect();
    let mut out = format!("# modules of {release} that this image does not ship\n");
    for m in index.iter() {
        let wanted_dir = ABSENT_DIRS.iter().any(|d| m.rel_path.starts_with(d))
            && !ABSENT_SKIP.iter().any(|d| m.rel_path.starts_with(d));
        if !wanted_dir || shipped.contains(m.name.as_str()) || index.is_builtin(&m.name) {
            continue;
        }
        let aliases: BTreeSet<&str> = m
            .aliases
            .iter()
            .filter(|a| {
                a.split_once(':')
                    .is_some_and(|(bus, _)| ABSENT_BUSES.contains(&bus))
            })
            .map(|a| short_alias(a))
            .collect();
        if aliases.is_empty() {
            continue;
        }
        let _ = writeln!(out, "module {}", m.name);
        for (set, members) in sets {
            if members.iter().any(|n| normalize(n) == m.name) {
                let _ = writeln!(out, "set {} {set}", m.name);
            }
        }
        for alias in aliases {
            out.push_str(alias);
            out.push('\n');
        }
    }
    out
}

/// An alias without its trailing wildcard fields, which every modalias of
/// its bus carries: `pci:v00008086d0000100Esv*sd*bc*sc*i*` ->
/// `pci:v00008086d0000100Esv*`, `usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in*` ->
/// `usb:v0BDAp8153d*`. Matches the same devices.
pub fn short_alias(alias: &str) -> &str {
    let mut end = alias.len();
    while alias[..end].ends_with('*') {
        let body = &alias[..end - 1];
        let letters = body.len()
            - body
                .trim_end_matches(|c: char| c.is_ascii_lowercase())
                .len();
        let token_start = body.len() - letters;
        if letters == 0 || letters > 3 || !body[..token_start].ends_with('*') {
            break;
        }
        end = token_start;
    }
    &alias[..end]
}

/// `modules.softdep` for exactly `modules`, in depmod's text format.
pub fn render_modules_softdep(modules: &[ModuleInfo]) -> String {
    let mut out = String::from("# Soft dependencies extracted from modules themselves.\n");
    for m in modules {
        if m.softdep_pre.is_empty() && m.softdep_post.is_empty() {
            continue;
        }
        out.push_str("softdep ");
        out.push_str(&m.name);
        if !m.softdep_pre.is_empty() {
            let _ = write!(out, " pre: {}", m.softdep_pre.join(" "));
        }
        if !m.softdep_post.is_empty() {
            let _ = write!(out, " post: {}", m.softdep_post.join(" "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::Object;
    use object::{Architecture, BinaryFormat, SectionKind};

    /// A relocatable ELF object with the given `.modinfo` entries, like a real `.ko`.
    fn fake_ko(entries: &[&str]) -> Vec<u8> {
        let mut obj = Object::new(
            BinaryFormat::Elf,
            Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0xC3], 16);
        let modinfo = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        let mut data = Vec::new();
        for e in entries {
            data.extend_from_slice(e.as_bytes());
            data.push(0);
        }
        obj.append_section_data(modinfo, &data, 1);
        obj.write().unwrap()
    }

    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            Tree {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self) -> &Path {
            self.dir.path()
        }
        fn ko(&self, rel: &str, entries: &[&str]) {
            let p = self.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, fake_ko(entries)).unwrap();
        }
        fn file(&self, rel: &str, text: &str) {
            let p = self.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    /// A small kernel tree without modules.dep, shaped like Debian's.
    fn synthetic_tree() -> Tree {
        let t = Tree::new();
        t.ko(
            "kernel/fs/ext4/ext4.ko",
            &[
                "alias=fs-ext4",
                "alias=ext3",
                "softdep=pre: crc32c",
                "depends=mbcache,jbd2,crc16",
                "name=ext4",
            ],
        );
        t.ko("kernel/fs/jbd2/jbd2.ko", &["depends=", "name=jbd2"]);
        t.ko("kernel/fs/mbcache.ko", &["name=mbcache"]);
        t.ko("kernel/lib/crc16.ko", &["name=crc16"]);
        t.ko(
            "kernel/crypto/crc32c_generic.ko",
            &["alias=crypto-crc32c", "alias=crc32c", "name=crc32c_generic"],
        );
        t.ko("kernel/net/core/failover.ko", &["name=failover"]);
        t.ko(
            "kernel/drivers/net/net_failover.ko",
            &["depends=failover", "name=net_failover"],
        );
        t.ko(
            "kernel/drivers/net/virtio_net.ko",
            &[
                "alias=virtio:d00000001v*",
                "depends=net_failover",
                "name=virtio_net",
            ],
        );
        t.ko(
            "kernel/drivers/char/hw_random/virtio-rng.ko",
            &["alias=virtio:d00000004v*", "name=virtio_rng"],
        );
        t.ko(
            "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
            &[
                "firmware=e1000e/a.bin",
                "firmware=e1000e/b.bin",
                "firmware=e1000e/a.bin",
            ],
        );
        t.ko(
            "kernel/fs/overlayfs/overlay.ko",
            &["softdep=post: missing_thing", "name=overlay"],
        );
        t.file("kernel/drivers/old/legacy.ko.xz", "not really xz");
        t.file(
            "modules.builtin",
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\nkernel/lib/crc-t10dif.ko\n",
        );
        // A dangling symlink like Debian's build -> /usr/src/...
        std::os::unix::fs::symlink("/nonexistent/headers", t.path().join("build")).unwrap();
        t
    }

    fn names(c: &Closure) -> Vec<&str> {
        c.modules.iter().map(|m| m.name.as_str()).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn assert_load_order(c: &Closure) {
        for (i, m) in c.modules.iter().enumerate() {
            for dep in &m.depends {
                let pos = c.modules.iter().position(|x| &x.name == dep);
                if let Some(pos) = pos {
                    assert!(pos < i, "{} loads before its dependency {dep}", m.name);
                }
            }
        }
    }

    #[test]
    fn parse_modinfo_fields() {
        let info = parse_modinfo(
            b"license=GPL\0name=foo-bar\0depends=a-b,c\0softdep=pre: x post: y-z\0alias=pci:v*\0firmware=f.bin\0\0\0",
        );
        assert_eq!(info.name.as_deref(), Some("foo_bar"));
        assert_eq!(info.depends, ["a_b", "c"]);
        assert_eq!(info.softdep_pre, ["x"]);
        assert_eq!(info.softdep_post, ["y-z"]);
        assert_eq!(info.aliases, ["pci:v*"]);
        assert_eq!(info.firmware, ["f.bin"]);
        assert_eq!(parse_modinfo(b""), Modinfo::default());
    }

    #[test]
    fn scan_and_closure() {
        let t = synthetic_tree();
        let index = ModuleIndex::load(t.path()).unwrap();
        assert_eq!(index.len(), 11);
        assert!(index.is_builtin("virtio_ring"));
        assert!(index.is_builtin("crc-t10dif"));
        let rng = index.get("virtio-rng").unwrap();
        assert_eq!(rng.rel_path, "kernel/drivers/char/hw_random/virtio-rng.ko");
        // No name= field: the file stem names it.
        assert!(index.get("e1000e").is_some());

        let c = index
            .closure(&strings(&["virtio_net", "ext4", "virtio", "overlay"]))
            .unwrap();
        assert_eq!(
            names(&c),
            [
                "failover",
                "net_failover",
                "virtio_net",
                "crc32c_generic",
                "mbcache",
                "jbd2",
                "crc16",
                "ext4",
                "overlay"
            ]
        );
        assert_eq!(c.builtin, ["virtio"]);
        assert_load_order(&c);
        // Deterministic.
        assert_eq!(
            c,
            index
                .closure(&strings(&["virtio_net", "ext4", "virtio", "overlay"]))
                .unwrap()
        );
        // Aliases resolve too.
        let c = index.closure(&strings(&["fs-ext4"])).unwrap();
        assert_eq!(names(&c).last(), Some(&"ext4"));
    }

    #[test]
    fn unknown_module_suggests() {
        let t = synthetic_tree();
        let index = ModuleIndex::load(t.path()).unwrap();
        let err = index.closure(&strings(&["virtio_nte"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown module \"virtio_nte\" (did you mean: virtio_net, virtio_rng?)"
        );
        let err = index
            .closure(&strings(&["zzzzzzzzzzzzzzzzzzzzzzzz"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown module \"zzzzzzzzzzzzzzzzzzzzzzzz\""
        );
        let err = index.closure(&strings(&["legacy"])).unwrap_err();
        assert!(
            matches!(err, ModuleError::UnsupportedCompression { .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_dependency_and_cycle() {
        let t = Tree::new();
        t.ko("kernel/a.ko", &["depends=b", "name=a"]);
        t.ko("kernel/c.ko", &["depends=d", "name=c"]);
        t.ko("kernel/d.ko", &["depends=c", "name=d"]);
        t.ko("kernel/e.ko", &["softdep=pre: f", "name=e"]);
        t.ko("kernel/f.ko", &["softdep=pre: e", "name=f"]);
        let index = ModuleIndex::load(t.path()).unwrap();
        let err = index.closure(&strings(&["a"])).unwrap_err();
        assert!(
            matches!(err, ModuleError::MissingDependency { .. }),
            "{err}"
        );
        assert!(matches!(
            index.closure(&strings(&["c"])),
            Err(ModuleError::Cycle { .. })
        ));
        // Soft loops are tolerated.
        let c = index.closure(&strings(&["e"])).unwrap();
        assert_eq!(names(&c), ["f", "e"]);
    }

    #[test]
    fn firmware_and_bad_elf() {
        let t = synthetic_tree();
        let index = ModuleIndex::load(t.path()).unwrap();
        let e1000e = index.get("e1000e").unwrap();
        assert_eq!(
            index.firmware(e1000e).unwrap(),
            ["e1000e/a.bin", "e1000e/b.bin"]
        );
        assert!(index
            .firmware(index.get("ext4").unwrap())
            .unwrap()
            .is_empty());

        t.file("kernel/broken.ko", "garbage");
        let err = ModuleIndex::load(t.path()).unwrap_err();
        assert!(matches!(err, ModuleError::Elf { .. }), "{err}");
        assert!(err.to_string().contains("broken.ko"));
        assert!(matches!(
            ModuleIndex::load(&t.path().join("nope")),
            Err(ModuleError::ReadDir { .. })
        ));
    }

    #[test]
    fn zstd_compressed_module() {
        let t = Tree::new();
        let ko = fake_ko(&["name=zmod", "depends=", "firmware=z.bin"]);
        let z = crate::compress::zstd_compress(&ko, 3).unwrap();
        std::fs::create_dir_all(t.path().join("kernel")).unwrap();
        std::fs::write(t.path().join("kernel/zmod.ko.zst"), z).unwrap();
        let index = ModuleIndex::load(t.path()).unwrap();
        let m = index.get("zmod").unwrap();
        assert_eq!(m.rel_path, "kernel/zmod.ko.zst");
        assert_eq!(index.firmware(m).unwrap(), ["z.bin"]);
    }

    #[test]
    fn depmod_files_roundtrip() {
        let t = synthetic_tree();
        let scanned = ModuleIndex::load(t.path()).unwrap();
        scanned.write_depmod_files(t.path()).unwrap();
        let dep = std::fs::read_to_string(t.path().join("modules.dep")).unwrap();
        assert!(dep.contains(
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
        ), "{dep}");
        assert!(dep.contains("kernel/lib/crc16.ko:\n"));
        let softdep = std::fs::read_to_string(t.path().join("modules.softdep")).unwrap();
        assert!(softdep.contains("softdep ext4 pre: crc32c\n"), "{softdep}");
        assert!(softdep.contains("softdep overlay post: missing_thing\n"));
        let alias = std::fs::read_to_string(t.path().join("modules.alias")).unwrap();
        assert!(alias.contains("alias crc32c crc32c_generic\n"), "{alias}");
        assert!(!t.path().join("modules.dep.tmp").exists());

        // Move the .ko files' contents away: the fast path must not open them.
        let fast = ModuleIndex::load(t.path()).unwrap();
        assert_eq!(fast.len(), scanned.len());
        let req = strings(&["virtio_net", "ext4", "overlay", "virtio_ring"]);
        let a = scanned.closure(&req).unwrap();
        let b = fast.closure(&req).unwrap();
        let paths = |c: &Closure| {
            c.modules
                .iter()
                .map(|m| m.rel_path.clone())
                .collect::<Vec<_>>()
        };
        let (pa, pb) = (paths(&a), paths(&b));
        assert_eq!(
            pa.iter().collect::<BTreeSet<_>>(),
            pb.iter().collect::<BTreeSet<_>>()
        );
        assert_load_order(&b);
        assert_eq!(a.builtin, b.builtin);
        assert_eq!(fast.get("ext4").unwrap().aliases, ["fs-ext4", "ext3"]);
    }

    #[test]
    fn absent_modules_are_named_with_their_sets() {
        let t = Tree::new();
        t.file(
            "modules.dep",
            "kernel/drivers/net/virtio_net.ko:\nkernel/drivers/net/e1000.ko:\n\
             kernel/drivers/net/r8152.ko:\nkernel/fs/isofs.ko:\n\
             kernel/sound/usb/snd-usb-audio.ko:\nkernel/drivers/net/wireless/ath9k.ko:\n",
        );
        t.file(
            "modules.alias",
            "alias virtio:d00000001v* virtio_net\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
             alias usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in* r8152\n\
             alias fs-iso9660 isofs\nalias acpi*:PNP0C0A:* e1000\n\
             alias usb:v0D8Cp0102d*dc*dsc*dp*ic*isc*ip*in* snd_usb_audio\n\
             alias pci:v0000168Cd00000029sv*sd*bc*sc*i* ath9k\n",
        );
        let index = ModuleIndex::load(t.path()).unwrap();
        let shipped = index.closure(&strings(&["virtio_net"])).unwrap().modules;
        let sets: BTreeMap<String, Vec<String>> = [
            ("lab-nics".to_string(), strings(&["e1000", "igb"])),
            ("virtio".to_string(), strings(&["virtio_net"])),
        ]
        .into();
        let text = render_modules_absent(&index, &shipped, &sets, "6.1.0-test");
        assert_eq!(
            text,
            "# modules of 6.1.0-test that this image does not ship\n\
             module e1000\n\
             set e1000 lab-nics\n\
             pci:v00008086d0000100Esv*\n\
             module r8152\n\
             usb:v0BDAp8153d*\n"
        );
    }

    #[test]
    fn short_aliases_drop_trailing_wildcard_fields_only() {
        assert_eq!(
            short_alias("pci:v00008086d0000100Esv*sd*bc*sc*i*"),
            "pci:v00008086d0000100Esv*"
        );
        assert_eq!(
            short_alias("usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in*"),
            "usb:v0BDAp8153d*"
        );
        assert_eq!(
            short_alias("usb:v*p*d*dc*dsc*dp*ic02isc06ip00in*"),
            "usb:v*p*d*dc*dsc*dp*ic02isc06ip00in*"
        );
        assert_eq!(short_alias("virtio:d00000001v*"), "virtio:d00000001v*");
        assert_eq!(
            short_alias("hid:b0003g*v0000046Dp0000C52B"),
            "hid:b0003g*v0000046Dp0000C52B"
        );
        assert_eq!(
            short_alias("pci:v*d*sv*sd*bc02sc00i*"),
            "pci:v*d*sv*sd*bc02sc00i*"
        );
        assert_eq!(short_alias("*"), "*");
        for alias in [
            "pci:v00008086d0000100Esv*sd*bc*sc*i*",
            "usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in*",
        ] {
            let short = short_alias(alias);
            for modalias in [
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                "usb:v0BDAp8153d3000dc00dsc00dp00icFFisc00ip00in00",
            ] {
                assert_eq!(
                    mkhost_shared::glob::matches(alias, modalias),
                    mkhost_shared::glob::matches(short, modalias)
                );
            }
        }
    }

    #[test]
    fn depmod_fast_path_parses_real_format() {
        let t = Tree::new();
        t.file(
            "modules.dep",
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/lib/crc16.ko:\n\
             kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\nkernel/net/core/failover.ko:\n",
        );
        t.file(
            "modules.softdep",
            "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crc32c\n",
        );
        t.file(
            "modules.alias",
            "# Aliases extracted from modules themselves.\nalias fs-ext4 ext4\nalias virtio:d00000001v* virtio_net\n",
        );
        let index = ModuleIndex::load(t.path()).unwrap();
        assert_eq!(index.len(), 7);
        let c = index
            .closure(&strings(&["virtio:d00000001v00001AF4", "fs-ext4"]))
            .unwrap();
        assert_eq!(
            names(&c),
            [
                "failover",
                "net_failover",
                "virtio_net",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4"
            ]
        );
        assert_load_order(&c);
        // Rendering the closure reproduces depmod's lines for it.
        let dep = render_modules_dep(&c.modules);
        assert!(dep.contains("kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"), "{dep}");
        assert_eq!(dep.lines().count(), 7);
        assert!(dep.starts_with("kernel/net/core/failover.ko:\n"));
        let only_ext4: Vec<ModuleInfo> = c
            .modules
            .iter()
            .filter(|m| m.name == "ext4")
            .cloned()
            .collect();
        assert_eq!(render_modules_dep(&only_ext4), "kernel/fs/ext4/ext4.ko:\n");
        assert_eq!(
            render_modules_alias(&only_ext4),
            "# Aliases extracted from modules themselves.\nalias fs-ext4 ext4\n"
        );
        assert_eq!(
            render_modules_softdep(&only_ext4),
            "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crc32c\n"
        );

        t.file("modules.dep", "no colon here\n");
        let err = ModuleIndex::load(t.path()).unwrap_err();
        assert!(matches!(err, ModuleError::Parse { line: 1, .. }), "{err}");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("virtio_nte", "virtio_net"), 2);
    }

    /// Against a real Debian kernel's module tree, named by
    /// `MKHOST_KERNEL_MODULES=<root>/lib/modules/<release>`. `ci/test` runs it
    /// on the kernel the build tests unpacked:
    /// `MKHOST_KERNEL_MODULES=... cargo test -p mkhost-initramfs -- --ignored real_kernel`
    #[test]
    #[ignore = "needs a real kernel's module tree in MKHOST_KERNEL_MODULES (ci/test sets it)"]
    fn real_kernel_tree() {
        let dir = std::env::var_os("MKHOST_KERNEL_MODULES")
            .map(std::path::PathBuf::from)
            .expect("MKHOST_KERNEL_MODULES=<root>/lib/modules/<release>");
        let dir = dir.as_path();
        let release = dir.file_name().unwrap().to_str().unwrap();
        let base = dir.parent().unwrap().parent().unwrap().parent().unwrap();
        let start = std::time::Instant::now();
        let index = ModuleIndex::load(dir).unwrap();
        let scan = start.elapsed();
        eprintln!("scanned {} modules in {scan:?}", index.len());
        let req = strings(&["virtio_net", "overlay", "ext4", "mlx5_core", "nf_tables"]);
        let c = index.closure(&req).unwrap();
        eprintln!(
            "closure: {} modules, builtin {:?}",
            c.modules.len(),
            c.builtin
        );
        for m in &c.modules {
            eprintln!("  {}", m.rel_path);
        }
        assert_load_order(&c);
        let ext4 = index.get("ext4").unwrap();
        assert!(ext4.depends.contains(&"jbd2".to_string()), "{ext4:?}");
        assert!(ext4.depends.contains(&"mbcache".to_string()));
        let fw = index.firmware(index.get("bnx2").unwrap()).unwrap();
        eprintln!("bnx2 firmware: {fw:?}");
        assert!(fw.iter().any(|f| f.starts_with("bnx2/")), "{fw:?}");

        let out = tempfile::tempdir().unwrap();
        index.write_depmod_files(out.path()).unwrap();
        // Fast path: a copy of the depmod files plus modules.builtin.
        std::fs::copy(
            dir.join("modules.builtin"),
            out.path().join("modules.builtin"),
        )
        .unwrap();
        let start = std::time::Instant::now();
        let fast = ModuleIndex::load(out.path()).unwrap();
        eprintln!("modules.dep load in {:?}", start.elapsed());
        let c2 = fast.closure(&req).unwrap();
        assert_eq!(
            c.modules
                .iter()
                .map(|m| &m.rel_path)
                .collect::<BTreeSet<_>>(),
            c2.modules
                .iter()
                .map(|m| &m.rel_path)
                .collect::<BTreeSet<_>>()
        );
        assert!(index
            .closure(&strings(&["virtio_nte"]))
            .unwrap_err()
            .to_string()
            .contains("virtio_net"));

        // Independent check: kmod's depmod, when installed, writes the same files.
        let Ok(depmod) = std::process::Command::new("depmod")
            .arg("-n")
            .arg("-b")
            .arg(base)
            .arg(release)
            .output()
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "depmod (kmod) is not installed: ci/install-deps installs it"
            );
            eprintln!("SKIPPED the depmod comparison: depmod (kmod) is not installed");
            return;
        };
        let theirs = String::from_utf8(depmod.stdout).unwrap();
        let section = |text: &str, start: &str, end: &str| -> BTreeSet<String> {
            let from = text.find(start).map_or(0, |i| i + start.len());
            let to = text[from..].find(end).map_or(text.len(), |i| from + i);
            text[from..to]
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        let ours = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap();
        let alias_hdr = "# Aliases extracted from modules themselves.\n";
        let softdep_hdr = "# Soft dependencies extracted from modules themselves.\n";
        // modules.dep: the same dependency set per module. Ties between unrelated
        // dependencies may be ordered differently; check ours is a valid order instead.
        let as_map = |lines: BTreeSet<String>| -> BTreeMap<String, Vec<String>> {
            lines
                .iter()
                .map(|l| {
                    let (m, deps) = l.split_once(':').unwrap();
                    (
                        m.to_string(),
                        deps.split_whitespace().map(str::to_string).collect(),
                    )
                })
                .collect()
        };
        let dep_theirs = as_map(section(&theirs, "", alias_hdr));
        let dep_ours = as_map(section(&ours("modules.dep"), "", "\0"));
        assert_eq!(dep_theirs.len(), dep_ours.len());
        for (module, deps) in &dep_ours {
            let theirs: BTreeSet<_> = dep_theirs[module].iter().collect();
            assert_eq!(deps.iter().collect::<BTreeSet<_>>(), theirs, "{module}");
            // Most dependent first: nothing listed depends on an earlier entry.
            for (i, d) in deps.iter().enumerate() {
                for earlier in &deps[..i] {
                    assert!(
                        !dep_ours[d].contains(earlier),
                        "{module}: {d} before {earlier}"
                    );
                }
            }
        }
        assert_eq!(
            section(&theirs, alias_hdr, "# "),
            section(&ours("modules.alias"), alias_hdr, "\0")
        );
        // modules.softdep: kmod 30 writes one line per softdep= entry (and modprobe
        // then honours only the first); we merge them. Compare per module.
        let merge =
            |lines: BTreeSet<String>| -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
                let mut map: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> =
                    BTreeMap::new();
                for line in lines {
                    let rest = line.strip_prefix("softdep ").unwrap();
                    let (name, value) = rest.split_once(' ').unwrap();
                    let (pre, post) = parse_softdep(value);
                    let entry = map.entry(name.to_string()).or_default();
                    entry.0.extend(pre);
                    entry.1.extend(post);
                }
                map.retain(|_, (pre, post)| !pre.is_empty() || !post.is_empty());
                map
            };
        assert_eq!(
            merge(section(&theirs, softdep_hdr, "# ")),
            merge(section(&ours("modules.softdep"), softdep_hdr, "\0"))
        );
    }
}
