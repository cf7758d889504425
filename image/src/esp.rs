//! The EFI System Partition: a FAT32 filesystem built in memory with the `fatfs`
//! crate, holding the UKI at `EFI/BOOT/BOOTX64.EFI` and any operator files, plus a
//! reader (`esp_list`, `esp_read`) for tests and `mkhost inspect`.
//!
//! Reproducibility: `fatfs` stamps directory entries with "now" from a
//! `TimeProvider`; ours returns the caller's `mtime_epoch` (SOURCE_DATE_EPOCH)
//! converted to a FAT date, so no clock is read. Files are written in sorted path
//! order, so the layout does not depend on the order the caller lists them in.
//!
//! Sizing: UEFI wants FAT32 on disks, and a FAT32 volume must have at least 65525
//! clusters. We use 512-byte clusters up to 260 MiB (so the smallest valid ESP is
//! about 33 MiB) and larger clusters beyond, like Microsoft's format table.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::sync::{Mutex, OnceLock};

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, ReadWriteSeek, Time,
    TimeProvider,
};
use thiserror::Error;

const MIB: u64 = 1024 * 1024;
const SECTOR: u64 = 512;
/// Fewer clusters than this and a volume is FAT16 by definition.
const FAT32_MIN_CLUSTERS: u64 = 65525;
/// Cluster numbers are 28 bits; the top few values are reserved.
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;
/// Reserved sectors `fatfs` puts before the first FAT on FAT32 volumes.
const FATFS_RESERVED_SECTORS: u64 = 8;
/// Directory-tree depth and entry count limits for reading untrusted images.
const MAX_DEPTH: usize = 64;
/// Seconds from 1970-01-01 to 1980-01-01, the first instant a FAT date can hold.
const FAT_EPOCH: u64 = 315_532_800;
/// 2107-12-31 23:59:58, the last instant a FAT date can hold.
const FAT_LAST: u64 = 4_354_819_198;

/// A file to put on the ESP.
#[derive(Debug, Clone, Copy)]
pub struct EspFile<'a> {
    /// `/`-separated path relative to the root, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: &'a str,
    /// The file's contents.
    pub data: &'a [u8],
}

/// Why an ESP could not be built or read.
#[derive(Debug, Error)]
pub enum EspError {
    #[error("esp size {size} bytes is unusable: {reason}")]
    BadSize { size: u64, reason: String },
    #[error("invalid volume label {label:?}: {reason}")]
    BadLabel { label: String, reason: &'static str },
    #[error("invalid esp path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("esp path {path:?} is given twice (fat names ignore case)")]
    Duplicate { path: String },
    #[error("esp path {file:?} is a file, but {other:?} needs it to be a directory")]
    PathConflict { file: String, other: String },
    #[error("files do not fit the esp: they need {needed} bytes, the {size}-byte esp has {available} bytes of free space")]
    NoSpace {
        needed: u64,
        available: u64,
        size: u64,
    },
    #[error("cannot format a fat32 filesystem of {size} bytes")]
    Format {
        size: u64,
        #[source]
        source: io::Error,
    },
    #[error("formatting {size} bytes gave {fat_type}, not fat32")]
    NotFat32 { size: u64, fat_type: String },
    #[error("cannot create directory {path} in the esp")]
    CreateDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path} into the esp")]
    WriteFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot finish the esp (flushing fat metadata)")]
    Unmount {
        #[source]
        source: io::Error,
    },
    #[error("cannot open the fat filesystem in the esp image ({len} bytes)")]
    Open {
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot list directory {path:?} of the esp")]
    ListDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the esp has no file {path}")]
    NotFound { path: String },
    #[error("cannot read {path} from the esp")]
    ReadFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("esp image is corrupt: {what}")]
    Corrupt { what: String },
}

/// Picks an ESP size (bytes, a multiple of 1 MiB) for `payload_bytes` of files.
///
/// The result is a valid FAT32 volume (>= 65525 clusters) whose free space after
/// the payload is at least 25% of the payload plus 8 MiB, room for operator files
/// (host.toml, archives) added after the build.
pub fn esp_size_for(payload_bytes: u64) -> u64 {
    let spare = payload_bytes / 4 + 8 * MIB;
    let mut size = round_up(payload_bytes.saturating_add(spare), MIB).max(33 * MIB);
    // FAT32 tops out at 2^32 sectors; beyond that no size works, return the estimate.
    while size < (u64::from(u32::MAX) + 1) * SECTOR {
        let cluster = cluster_size_for(size);
        let clusters = fat32_clusters(size, cluster);
        // Payload rounded to whole clusters, plus slack for per-file rounding and
        // directory clusters.
        let needed = round_up(payload_bytes, cluster) + 64 * cluster + spare;
        if (FAT32_MIN_CLUSTERS..=FAT32_MAX_CLUSTERS).contains(&clusters)
            && clusters * cluster >= needed
        {
            return size;
        }
        size += MIB;
    }
    size
}

/// Builds a FAT32 image of exactly `size` bytes holding `files`.
///
/// `volume_id` is the serial number (derive it from content for reproducibility),
/// `label` the volume label (<= 11 characters of `A-Z 0-9 _ -` and space; lower
/// case is upper-cased; empty means `NO NAME`), and every timestamp is
/// `mtime_epoch` (UNIX seconds, clamped to the FAT range 1980..2107).
pub fn build_esp(
    files: &[EspFile],
    size: u64,
    volume_id: u32,
    label: &str,
    mtime_epoch: u64,
) -> Result<Vec<u8>, EspError> {
    let cluster = check_size(size)?;
    let label = volume_label(label)?;
    let files = check_paths(files)?;

    // Fail early, with numbers, if the files cannot fit.
    let dirs: std::collections::BTreeSet<String> = files
        .iter()
        .flat_map(|f| parents(f.path))
        .map(|d| d.to_lowercase())
        .collect();
    let needed: u64 = files
        .iter()
        .map(|f| round_up(f.data.len() as u64, cluster))
        .sum::<u64>()
        + dirs.len() as u64 * cluster;
    // One cluster is the root directory.
    let available = (fat32_clusters(size, cluster) - 1) * cluster;
    if needed > available {
        return Err(EspError::NoSpace {
            needed,
            available,
            size,
        });
    }

    let len = usize::try_from(size).map_err(|_| EspError::BadSize {
        size,
        reason: "too large for this machine's memory".into(),
    })?;
    let mut image = Cursor::new(vec![0u8; len]);
    let format = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_cluster(u32::try_from(cluster).unwrap_or(512))
        .volume_id(volume_id)
        .volume_label(label);
    fatfs::format_volume(&mut image, format).map_err(|source| EspError::Format { size, source })?;
    image.set_position(0);

    {
        let options = FsOptions::new().time_provider(clock_for(mtime_epoch));
        let fs = FileSystem::new(&mut image, options)
            .map_err(|source| EspError::Format { size, source })?;
        if fs.fat_type() != FatType::Fat32 {
            return Err(EspError::NotFat32 {
                size,
                fat_type: format!("{:?}", fs.fat_type()).to_lowercase(),
            });
        }
        write_files(&fs.root_dir(), &files)?;
        // Counting the free clusters makes fatfs record the count in FSInfo.
        fs.stats().map_err(|source| EspError::Unmount { source })?;
        fs.unmount()
            .map_err(|source| EspError::Unmount { source })?;
    }
    let mut image = image.into_inner();
    fix_dot_entries(&mut image)?;
    Ok(image)
}

/// Creates each file (and its parent directories) under `root`.
fn write_files<T: ReadWriteSeek>(root: &fatfs::Dir<T>, files: &[EspFile]) -> Result<(), EspError> {
    {
        for file in files {
            for dir in parents(file.path) {
                root.create_dir(dir).map_err(|source| EspError::CreateDir {
                    path: dir.to_string(),
                    source,
                })?;
            }
            let write_err = |source| EspError::WriteFile {
                path: file.path.to_string(),
                source,
            };
            let mut f = root.create_file(file.path).map_err(write_err)?;
            f.write_all(file.data).map_err(write_err)?;
            f.flush().map_err(write_err)?;
        }
    }
    Ok(())
}

/// Lists the files (not directories) of an ESP image, recursively, as
/// (`DIR/FILE` path, size in bytes), sorted by path.
///
/// Reads with the small FAT32 reader below, not `fatfs`: it is bounds-checked
/// throughout, so damaged images give errors, and it doubles as an independent
/// check of what `fatfs` wrote.
pub fn esp_list(esp: &[u8]) -> Result<Vec<(String, u64)>, EspError> {
    let fat = Fat32::parse(esp)?;
    let mut out = Vec::new();
    fat.walk(|path, entry, _| {
        if !entry.is_dir() {
            out.push((path.to_string(), u64::from(entry.size)));
        }
    })?;
    out.sort();
    Ok(out)
}

/// Reads one file (path as in [`esp_list`]; FAT names match without case) from an
/// ESP image.
pub fn esp_read(esp: &[u8], path: &str) -> Result<Vec<u8>, EspError> {
    check_path(path)?;
    let fat = Fat32::parse(esp)?;
    let mut dir = fat.root_cluster;
    let mut components = path.split('/').peekable();
    while let Some(name) = components.next() {
        let last = components.peek().is_none();
        let entry = fat
            .read_dir(dir)?
            .into_iter()
            .find(|e| e.name.to_lowercase() == name.to_lowercase())
            .ok_or_else(|| EspError::NotFound {
                path: path.to_string(),
            })?;
        match (last, entry.is_dir()) {
            (true, false) => return fat.read_file(&entry, path),
            (false, true) => dir = entry.first_cluster,
            _ => {
                return Err(EspError::NotFound {
                    path: path.to_string(),
                })
            }
        }
    }
    Err(EspError::NotFound {
        path: path.to_string(),
    })
}

/// Works around fatfs 0.3.6 (rafalh/rust-fatfs#117): `create_dir` writes long-name
/// entries in front of `.` and `..`, so they are not the first two slots as FAT
/// requires (fsck.fat "fixes" that by deleting them), and `..` of a directory in
/// the root points at the root cluster instead of 0. Rewrites each directory's
/// first slots as `.`, `..`, and two deleted entries.
fn fix_dot_entries(image: &mut [u8]) -> Result<(), EspError> {
    let fat = Fat32::parse(image)?;
    let mut dirs = Vec::new();
    fat.walk(|_, entry, parent| {
        if entry.is_dir() {
            let parent = if parent == fat.root_cluster {
                0
            } else {
                parent
            };
            dirs.push((entry.first_cluster, parent));
        }
    })?;
    let cluster_size = to_usize(fat.cluster_size);
    let offsets: Vec<(usize, u32)> = dirs
        .iter()
        .map(|&(cluster, parent)| (to_usize(fat.cluster_offset(cluster)), parent))
        .collect();
    for (offset, parent) in offsets {
        let slots = &mut image[offset..offset + cluster_size.min(4 * DIR_ENTRY)];
        let entry = |i: usize| i * DIR_ENTRY..(i + 1) * DIR_ENTRY;
        let is_lfn = |e: &[u8]| e[11] == ATTR_LONG_NAME;
        if is_lfn(&slots[entry(0)])
            && slots[entry(1)][..11] == DOT
            && is_lfn(&slots[entry(2)])
            && slots[entry(3)][..11] == DOTDOT
        {
            slots.copy_within(entry(1), 0);
            slots.copy_within(entry(3), DIR_ENTRY);
            for i in [2, 3] {
                slots[entry(i)].fill(0);
                slots[entry(i)][0] = DELETED;
            }
        } else if !(slots[entry(0)][..11] == DOT && slots[entry(1)][..11] == DOTDOT) {
            return Err(EspError::Corrupt {
                what: format!("directory at offset {offset:#x} does not start with '.' and '..'"),
            });
        }
        let dotdot = &mut slots[entry(1)];
        dotdot[20..22].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
        dotdot[26..28].copy_from_slice(&(parent as u16).to_le_bytes());
    }
    Ok(())
}

/// Checks `size` and returns the cluster size we use for it.
fn check_size(size: u64) -> Result<u64, EspError> {
    let bad = |reason: String| EspError::BadSize { size, reason };
    if size % SECTOR != 0 {
        return Err(bad("not a multiple of 512-byte sectors".into()));
    }
    if size / SECTOR > u64::from(u32::MAX) {
        return Err(bad("more than 2^32 sectors".into()));
    }
    let cluster = cluster_size_for(size);
    let clusters = fat32_clusters(size, cluster);
    if clusters < FAT32_MIN_CLUSTERS {
        return Err(bad(format!(
            "only {clusters} clusters of {cluster} bytes, fat32 needs at least {FAT32_MIN_CLUSTERS} (use at least 33 MiB)"
        )));
    }
    if clusters > FAT32_MAX_CLUSTERS {
        return Err(bad(format!(
            "{clusters} clusters is more than fat32 allows"
        )));
    }
    Ok(cluster)
}

/// Cluster size for a volume of `size` bytes: 512 B up to 260 MiB, then as in
/// Microsoft's FAT32 table (4 KiB to 8 GiB, 8 KiB to 16 GiB, ...), capped at 32 KiB.
fn cluster_size_for(size: u64) -> u64 {
    const GIB: u64 = 1024 * MIB;
    match size {
        s if s <= 260 * MIB => 512,
        s if s <= 8 * GIB => 4096,
        s if s <= 16 * GIB => 8192,
        s if s <= 32 * GIB => 16384,
        _ => 32768,
    }
}

/// Data clusters `fatfs` will create on a FAT32 volume of `size` bytes (the same
/// arithmetic as its formatter: 8 reserved sectors, 2 FATs sized for the clusters).
fn fat32_clusters(size: u64, cluster: u64) -> u64 {
    let total = size / SECTOR;
    let per_cluster = cluster / SECTOR;
    let Some(t0) = total.checked_sub(FATFS_RESERVED_SECTORS) else {
        return 0;
    };
    let t1 = t0 + 2 * per_cluster;
    let t2 = cluster * 8 / 32 + 2;
    let sectors_per_fat = t1.div_ceil(t2);
    t0.saturating_sub(2 * sectors_per_fat) / per_cluster
}

/// Validates a volume label and pads it to the 11 bytes FAT stores.
fn volume_label(label: &str) -> Result<[u8; 11], EspError> {
    let bad = |reason| EspError::BadLabel {
        label: label.to_string(),
        reason,
    };
    if label.is_empty() {
        return Ok(*b"NO NAME    ");
    }
    if label.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'_' || b == b'-')
    {
        return Err(bad("only A-Z, 0-9, space, '_' and '-' are allowed"));
    }
    let mut out = [b' '; 11];
    for (dst, src) in out.iter_mut().zip(label.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    Ok(out)
}

fn check_path(path: &str) -> Result<(), EspError> {
    let bad = |reason| EspError::BadPath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("empty"));
    }
    if path.starts_with('/') {
        return Err(bad("must be relative to the esp root (no leading '/')"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("'.' and '..' are not allowed")),
            c if c
                .chars()
                .any(|ch| ch.is_control() || "\\:*?\"<>|".contains(ch)) =>
            {
                return Err(bad("contains a character fat does not allow"))
            }
            c if c.len() > 255 => return Err(bad("component longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(())
}

/// Validates all paths and returns the files sorted by path. FAT compares names
/// without case, so duplicates and file/directory clashes are found that way.
fn check_paths<'a>(files: &[EspFile<'a>]) -> Result<Vec<EspFile<'a>>, EspError> {
    let mut by_key: BTreeMap<String, EspFile<'a>> = BTreeMap::new();
    for file in files {
        check_path(file.path)?;
        if by_key.insert(file.path.to_lowercase(), *file).is_some() {
            return Err(EspError::Duplicate {
                path: file.path.to_string(),
            });
        }
    }
    for file in files {
        for dir in parents(file.path) {
            if let Some(clash) = by_key.get(&dir.to_lowercase()) {
                return Err(EspError::PathConflict {
                    file: clash.path.to_string(),
                    other: file.path.to_string(),
                });
            }
        }
    }
    let mut sorted: Vec<EspFile<'a>> = by_key.into_values().collect();
    sorted.sort_by(|a, b| a.path.cmp(b.path));
    Ok(sorted)
}

/// The parent directories of a path, outermost first: `A/B/C` -> `A`, `A/B`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Bytes per directory entry.
const DIR_ENTRY: usize = 32;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
/// Attribute value marking a long-file-name (VFAT) entry.
const ATTR_LONG_NAME: u8 = 0x0f;
/// First name byte of a deleted entry.
const DELETED: u8 = 0xe5;
const DOT: [u8; 11] = *b".          ";
const DOTDOT: [u8; 11] = *b"..         ";
/// FAT entries at or above this end a cluster chain; 0x0ffffff7 marks a bad cluster.
const END_OF_CHAIN: u32 = 0x0fff_fff8;
const BAD_CLUSTER: u32 = 0x0fff_fff7;

/// A read-only view of a FAT32 image: just enough to walk directories and read
/// files. Every offset is checked against the image, every cluster chain against
/// the cluster count (so loops end), and the directory walk against cycles.
struct Fat32<'a> {
    img: &'a [u8],
    /// Offset of the first FAT.
    fat_offset: u64,
    /// Offset of cluster 2, the first data cluster.
    data_offset: u64,
    cluster_size: u64,
    /// Number of data clusters; valid cluster numbers are `2..clusters + 2`.
    clusters: u64,
    root_cluster: u32,
}

/// One directory entry, long name resolved.
#[derive(Debug)]
struct RawEntry {
    name: String,
    attr: u8,
    first_cluster: u32,
    size: u32,
}

impl RawEntry {
    fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }
}

impl<'a> Fat32<'a> {
    /// Reads and checks the boot sector (BPB).
    fn parse(img: &'a [u8]) -> Result<Self, EspError> {
        let corrupt = |what: String| EspError::Corrupt { what };
        if img.len() < 512 {
            return Err(corrupt(format!(
                "{} bytes is too short for a boot sector",
                img.len()
            )));
        }
        if img[510..512] != [0x55, 0xaa] {
            return Err(corrupt(
                "no boot sector signature 55 aa at offset 0x1fe".into(),
            ));
        }
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([img[o], img[o + 1]]));
        let u32_at = |o: usize| {
            u64::from(u32::from_le_bytes([
                img[o],
                img[o + 1],
                img[o + 2],
                img[o + 3],
            ]))
        };
        let bytes_per_sector = u16_at(0x0b);
        let sectors_per_cluster = u64::from(img[0x0d]);
        let reserved = u16_at(0x0e);
        let fats = u64::from(img[0x10]);
        let total = match u16_at(0x13) {
            0 => u32_at(0x20),
            n => n,
        };
        let sectors_per_fat = u32_at(0x24);
        let root_cluster = u32_at(0x2c);

        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
            return Err(corrupt(format!(
                "bytes per sector {bytes_per_sector} at offset 0xb"
            )));
        }
        if !sectors_per_cluster.is_power_of_two() {
            return Err(corrupt(format!(
                "sectors per cluster {sectors_per_cluster} at offset 0xd"
            )));
        }
        if reserved == 0 || fats == 0 {
            return Err(corrupt(
                "zero reserved sectors or fats in the boot sector".into(),
            ));
        }
        if u16_at(0x11) != 0 || u16_at(0x16) != 0 || sectors_per_fat == 0 {
            return Err(corrupt(
                "boot sector is not fat32 (fat12/16 fields are set)".into(),
            ));
        }
        if total * bytes_per_sector > img.len() as u64 {
            return Err(corrupt(format!(
                "filesystem claims {} bytes, the image has {}",
                total * bytes_per_sector,
                img.len()
            )));
        }
        let meta = reserved + fats * sectors_per_fat;
        let clusters = total.saturating_sub(meta) / sectors_per_cluster;
        if clusters < FAT32_MIN_CLUSTERS {
            return Err(corrupt(format!(
                "{clusters} data clusters: that is fat12/16, not fat32"
            )));
        }
        if sectors_per_fat * bytes_per_sector / 4 < clusters + 2 {
            return Err(corrupt(format!(
                "{sectors_per_fat} sectors per fat cannot map {clusters} clusters"
            )));
        }
        if !(2..clusters + 2).contains(&root_cluster) {
            return Err(corrupt(format!("root cluster {root_cluster} out of range")));
        }
        Ok(Fat32 {
            img,
            fat_offset: reserved * bytes_per_sector,
            data_offset: meta * bytes_per_sector,
            cluster_size: sectors_per_cluster * bytes_per_sector,
            clusters,
            root_cluster: root_cluster as u32,
        })
    }

    /// Offset of a cluster already checked to be in range.
    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + (u64::from(cluster) - 2) * self.cluster_size
    }

    fn cluster(&self, cluster: u32) -> Result<&'a [u8], EspError> {
        if !(2..self.clusters + 2).contains(&u64::from(cluster)) {
            return Err(EspError::Corrupt {
                what: format!("cluster {cluster} out of range"),
            });
        }
        // parse() checked that all clusters lie inside the image.
        let start = to_usize(self.cluster_offset(cluster));
        Ok(&self.img[start..start + to_usize(self.cluster_size)])
    }

    /// The clusters of the chain starting at `first`.
    fn chain(&self, first: u32) -> Result<Vec<u32>, EspError> {
        let mut out = Vec::new();
        let mut cluster = first;
        loop {
            self.cluster(cluster)?;
            out.push(cluster);
            if out.len() as u64 > self.clusters {
                return Err(EspError::Corrupt {
                    what: format!("cluster chain from {first} loops"),
                });
            }
            // In range, so the FAT entry lies inside the FAT (checked in parse()).
            let at = to_usize(self.fat_offset + 4 * u64::from(cluster));
            let next = u32::from_le_bytes([
                self.img[at],
                self.img[at + 1],
                self.img[at + 2],
                self.img[at + 3],
            ]) & 0x0fff_ffff;
            match next {
                n if n >= END_OF_CHAIN => return Ok(out),
                BAD_CLUSTER | 0 | 1 => {
                    return Err(EspError::Corrupt {
                        what: format!(
                        "cluster chain from {first} reaches entry {next:#x} at cluster {cluster}"
                    ),
                    })
                }
                n => cluster = n,
            }
        }
    }

    /// The entries of the directory starting at `first`, with long names resolved.
    fn read_dir(&self, first: u32) -> Result<Vec<RawEntry>, EspError> {
        let mut entries = Vec::new();
        let mut lfn: Vec<&[u8]> = Vec::new();
        for cluster in self.chain(first)? {
            for e in self.cluster(cluster)?.chunks_exact(DIR_ENTRY) {
                if e[0] == 0 {
                    return Ok(entries);
                }
                if e[0] == DELETED {
                    lfn.clear();
                    continue;
                }
                let attr = e[11];
                if attr & 0x3f == ATTR_LONG_NAME {
                    lfn.push(e);
                    continue;
                }
                if attr & ATTR_VOLUME_ID != 0 {
                    lfn.clear();
                    continue;
                }
                let short: &[u8; 11] = e[..11].try_into().unwrap_or(&[b' '; 11]);
                let name = long_name(&lfn, short).unwrap_or_else(|| short_name(short, e[12]));
                lfn.clear();
                let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
                let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
                entries.push(RawEntry {
                    name,
                    attr,
                    first_cluster: hi << 16 | lo,
                    size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
                });
            }
        }
        Ok(entries)
    }

    fn read_file(&self, entry: &RawEntry, path: &str) -> Result<Vec<u8>, EspError> {
        let size = to_usize(u64::from(entry.size));
        if size == 0 {
            return Ok(Vec::new());
        }
        let chain = self.chain(entry.first_cluster)?;
        let needed = size.div_ceil(to_usize(self.cluster_size));
        if chain.len() < needed {
            return Err(EspError::Corrupt {
                what: format!(
                    "{path} is {size} bytes but its cluster chain holds only {} clusters",
                    chain.len()
                ),
            });
        }
        let mut data = Vec::with_capacity(size);
        for cluster in &chain[..needed] {
            let bytes = self.cluster(*cluster)?;
            let take = bytes.len().min(size - data.len());
            data.extend_from_slice(&bytes[..take]);
        }
        Ok(data)
    }

    /// Calls `f(path, entry, parent_cluster)` for every entry below the root
    /// (depth first, `.` and `..` skipped).
    fn walk(&self, mut f: impl FnMut(&str, &RawEntry, u32)) -> Result<(), EspError> {
        let mut seen = std::collections::BTreeSet::from([self.root_cluster]);
        self.walk_dir(self.root_cluster, "", 0, &mut seen, &mut f)
    }

    fn walk_dir(
        &self,
        dir: u32,
        prefix: &str,
        depth: usize,
        seen: &mut std::collections::BTreeSet<u32>,
        f: &mut impl FnMut(&str, &RawEntry, u32),
    ) -> Result<(), EspError> {
        if depth > MAX_DEPTH {
            return Err(EspError::Corrupt {
                what: format!("{prefix:?} is nested more than {MAX_DEPTH} directories deep"),
            });
        }
        for entry in self.read_dir(dir)? {
            if entry.name == "." || entry.name == ".." {
                continue;
            }
            let path = if prefix.is_empty() {
                entry.name.clone()
            } else {
                format!("{prefix}/{}", entry.name)
            };
            f(&path, &entry, dir);
            if entry.is_dir() {
                if !seen.insert(entry.first_cluster) {
                    return Err(EspError::Corrupt {
                        what: format!(
                            "directory {path} loops back to cluster {}",
                            entry.first_cluster
                        ),
                    });
                }
                self.walk_dir(entry.first_cluster, &path, depth + 1, seen, f)?;
            }
        }
        Ok(())
    }
}

/// The long name spelled by the VFAT entries in front of a short entry, if they
/// are complete, in order and carry the short name's checksum.
fn long_name(parts: &[&[u8]], short: &[u8; 11]) -> Option<String> {
    let checksum = short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b));
    let count = parts.len();
    let mut units = Vec::with_capacity(count * 13);
    // Stored last part first: orders count | 0x40, count - 1, ..., 1.
    for (i, part) in parts.iter().rev().enumerate() {
        let expected = (i + 1) as u8 | if i + 1 == count { 0x40 } else { 0 };
        if part[0] != expected || part[13] != checksum {
            return None;
        }
        for range in [1..11, 14..26, 28..32] {
            units.extend(
                part[range]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]])),
            );
        }
    }
    if units.is_empty() {
        return None;
    }
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16(&units[..end]).ok()
}

/// `NAME    EXT` -> `NAME.EXT`, honouring the lower-case flags Windows NT stores in
/// byte 12 (0x08: base, 0x10: extension).
fn short_name(short: &[u8; 11], flags: u8) -> String {
    let mut base: Vec<u8> = short[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = DELETED;
    }
    let trim = |v: &[u8]| {
        let end = v.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
        v[..end].iter().map(|&b| char::from(b)).collect::<String>()
    };
    let mut name = trim(&base);
    if flags & 0x08 != 0 {
        name = name.to_lowercase();
    }
    let mut ext = trim(&short[8..]);
    if flags & 0x10 != 0 {
        ext = ext.to_lowercase();
    }
    if !ext.is_empty() {
        name.push('.');
        name.push_str(&ext);
    }
    name
}

/// Offsets are bounded by slice lengths, so they fit `usize` on our targets.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align).saturating_mul(align)
}

/// A `TimeProvider` that always answers the same instant.
#[derive(Debug)]
struct FixedClock(DateTime);

impl TimeProvider for FixedClock {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// `fatfs` keeps its time provider as a `&'static dyn TimeProvider`, so each distinct
/// timestamp gets one leaked `FixedClock`, interned here: a process leaks one small
/// struct per SOURCE_DATE_EPOCH value it ever uses, and no clock is read.
fn clock_for(epoch: u64) -> &'static FixedClock {
    static CLOCKS: OnceLock<Mutex<BTreeMap<u64, &'static FixedClock>>> = OnceLock::new();
    // FAT stores seconds / 2; intern on what is actually stored.
    let key = epoch.clamp(FAT_EPOCH, FAT_LAST) / 2 * 2;
    let mut clocks = CLOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    clocks
        .entry(key)
        .or_insert_with(|| Box::leak(Box::new(FixedClock(fat_datetime(key)))))
}

/// Converts UNIX seconds (UTC) to a FAT date and time, clamped to 1980..=2107.
fn fat_datetime(epoch: u64) -> DateTime {
    let epoch = epoch.clamp(FAT_EPOCH, FAT_LAST);
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (year, month, day) = civil_from_days(days);
    // Clamping keeps every field in range, so the narrowing below is lossless.
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::run;
    use std::process::Command;

    const EPOCH: u64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

    fn uki_like(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn sample() -> (Vec<u8>, Vec<u8>) {
        (
            uki_like(3 * 1024 * 1024 + 123),
            b"[host]\nname = \"r1\"\n".to_vec(),
        )
    }

    fn build(uki: &[u8], toml: &[u8]) -> Vec<u8> {
        let files = [
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: uki,
            },
            EspFile {
                path: "host.toml",
                data: toml,
            },
        ];
        let size = esp_size_for((uki.len() + toml.len()) as u64);
        build_esp(&files, size, 0x1234_abcd, "MKHOST", EPOCH).unwrap()
    }

    /// Mounts an image with fatfs (on a copy: fatfs wants to be able to write).
    fn mount(img: &[u8]) -> FileSystem<Cursor<Vec<u8>>> {
        FileSystem::new(Cursor::new(img.to_vec()), FsOptions::new()).unwrap()
    }

    fn write_temp(data: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), data).unwrap();
        f
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(EPOCH / 86_400), (2023, 11, 14));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let dt = fat_datetime(EPOCH);
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2023, 11, 14));
        assert_eq!((dt.time.hour, dt.time.min, dt.time.sec), (22, 13, 20));
        let early = fat_datetime(0);
        assert_eq!(
            (early.date.year, early.date.month, early.date.day),
            (1980, 1, 1)
        );
        let late = fat_datetime(u64::MAX);
        assert_eq!(
            (late.date.year, late.date.month, late.date.day),
            (2107, 12, 31)
        );
        assert_eq!((late.time.hour, late.time.min, late.time.sec), (23, 59, 58));
    }

    #[test]
    fn size_rule() {
        for payload in [
            0,
            1,
            20 * MIB,
            25 * MIB,
            100 * MIB,
            200 * MIB,
            215 * MIB,
            1000 * MIB,
        ] {
            let size = esp_size_for(payload);
            assert_eq!(size % MIB, 0);
            let cluster = cluster_size_for(size);
            let clusters = fat32_clusters(size, cluster);
            assert!(clusters >= FAT32_MIN_CLUSTERS, "{payload}: {clusters}");
            let free = clusters * cluster - round_up(payload, cluster);
            assert!(free >= payload / 4 + 8 * MIB, "{payload}: free {free}");
        }
        // Small payloads get the smallest valid FAT32 volume.
        assert!(esp_size_for(0) <= 34 * MIB);
    }

    #[test]
    fn cluster_arithmetic_matches_fatfs() {
        for mib in [33, 34, 64, 200, 260, 261, 300, 1024] {
            let size = mib * MIB;
            let cluster = cluster_size_for(size);
            let img = build_esp(&[], size, 1, "", EPOCH).unwrap();
            let fs = mount(&img);
            let stats = fs.stats().unwrap();
            assert_eq!(fs.fat_type(), FatType::Fat32, "{mib} MiB");
            assert_eq!(u64::from(stats.cluster_size()), cluster, "{mib} MiB");
            assert_eq!(
                u64::from(stats.total_clusters()),
                fat32_clusters(size, cluster),
                "{mib} MiB"
            );
        }
    }

    #[test]
    fn too_small_or_odd_sizes_are_errors() {
        let err = build_esp(&[], 32 * MIB, 1, "", EPOCH).unwrap_err();
        assert!(matches!(err, EspError::BadSize { .. }), "{err}");
        assert!(err.to_string().contains("at least 65525"), "{err}");
        let err = build_esp(&[], 40 * MIB + 100, 1, "", EPOCH).unwrap_err();
        assert!(matches!(err, EspError::BadSize { .. }), "{err}");
    }

    #[test]
    fn files_that_do_not_fit_are_an_error() {
        let big = vec![1u8; 40 * MIB as usize];
        let files = [EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            data: &big,
        }];
        let err = build_esp(&files, 34 * MIB, 1, "", EPOCH).unwrap_err();
        assert!(matches!(err, EspError::NoSpace { .. }), "{err}");
    }

    #[test]
    fn bad_paths_and_labels() {
        let d = b"x";
        let one = |path| [EspFile { path, data: d }];
        for path in ["", "/EFI/x", "EFI//x", "EFI/../x", "a:b", "EFI/"] {
            let err = build_esp(&one(path), 34 * MIB, 1, "", EPOCH).unwrap_err();
            assert!(matches!(err, EspError::BadPath { .. }), "{path}: {err}");
        }
        let dup = [
            EspFile {
                path: "EFI/a",
                data: d,
            },
            EspFile {
                path: "efi/A",
                data: d,
            },
        ];
        assert!(matches!(
            build_esp(&dup, 34 * MIB, 1, "", EPOCH),
            Err(EspError::Duplicate { .. })
        ));
        let clash = [
            EspFile {
                path: "EFI",
                data: d,
            },
            EspFile {
                path: "EFI/a",
                data: d,
            },
        ];
        assert!(matches!(
            build_esp(&clash, 34 * MIB, 1, "", EPOCH),
            Err(EspError::PathConflict { .. })
        ));
        for label in ["TOO LONG LABEL", "a.b", "é"] {
            assert!(matches!(
                build_esp(&[], 34 * MIB, 1, label, EPOCH),
                Err(EspError::BadLabel { .. })
            ));
        }
    }

    #[test]
    fn reads_back_and_is_deterministic() {
        let (uki, toml) = sample();
        let img = build(&uki, &toml);
        assert_eq!(
            esp_list(&img).unwrap(),
            vec![
                ("EFI/BOOT/BOOTX64.EFI".to_string(), uki.len() as u64),
                ("host.toml".to_string(), toml.len() as u64),
            ]
        );
        assert_eq!(esp_read(&img, "EFI/BOOT/BOOTX64.EFI").unwrap(), uki);
        assert_eq!(esp_read(&img, "host.toml").unwrap(), toml);
        assert!(matches!(
            esp_read(&img, "EFI/BOOT/nope"),
            Err(EspError::NotFound { .. })
        ));

        // Same inputs, in a different order, later in wall-clock time: same bytes.
        let again = build_esp(
            &[
                EspFile {
                    path: "host.toml",
                    data: &toml,
                },
                EspFile {
                    path: "EFI/BOOT/BOOTX64.EFI",
                    data: &uki,
                },
            ],
            img.len() as u64,
            0x1234_abcd,
            "MKHOST",
            EPOCH,
        )
        .unwrap();
        assert!(again == img, "two builds differ");

        // The timestamp is the one we asked for.
        let fs = mount(&img);
        let entry = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "host.toml")
            .unwrap();
        let m = entry.modified();
        assert_eq!((m.date.year, m.date.month, m.date.day), (2023, 11, 14));
        assert_eq!((m.time.hour, m.time.min, m.time.sec), (22, 13, 20));
        assert_eq!(fs.volume_id(), 0x1234_abcd);
        assert_eq!(fs.volume_label(), "MKHOST");
    }

    /// dosfstools' fsck and mtools are independent FAT implementations.
    #[test]
    fn fsck_and_mtools_accept_the_image() {
        let (uki, toml) = sample();
        let img = build(&uki, &toml);
        let file = write_temp(&img);

        let (ok, text) = run(Command::new("fsck.vfat").arg("-n").arg(file.path()));
        assert!(ok, "fsck.vfat -n failed:\n{text}");
        assert!(!text.contains("differ"), "{text}");

        let (ok, text) = run(Command::new("mdir")
            .arg("-i")
            .arg(file.path())
            .arg("::/EFI/BOOT"));
        assert!(ok, "mdir failed:\n{text}");
        assert!(text.contains("BOOTX64"), "{text}");

        let out = Command::new("mcopy")
            .arg("-i")
            .arg(file.path())
            .args(["::/EFI/BOOT/BOOTX64.EFI", "-"])
            .output()
            .expect("mcopy (mtools) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == uki, "mcopy returned different bytes");

        let (ok, text) = run(Command::new("minfo").arg("-i").arg(file.path()).arg("::"));
        assert!(ok, "minfo failed:\n{text}");
        assert!(text.contains("MKHOST"), "{text}");
    }

    #[test]
    fn corrupt_images_give_errors_not_panics() {
        let (uki, toml) = sample();
        let img = build(&uki, &toml);
        assert!(esp_list(&[]).is_err());
        assert!(esp_list(&img[..511]).is_err());
        assert!(esp_list(&vec![0u8; 40 * MIB as usize]).is_err());
        // Damage the boot sector, the FAT and the first data clusters (root, EFI,
        // EFI/BOOT directories) byte by byte.
        let sectors_per_fat = u32::from_le_bytes(img[0x24..0x28].try_into().unwrap()) as usize;
        let data_start = (FATFS_RESERVED_SECTORS as usize + 2 * sectors_per_fat) * 512;
        let fat = 4096..4096 + 512;
        let dirs = data_start..data_start + 4 * 512;
        let mut bad = img.clone();
        for offset in (0..512).chain(fat).chain(dirs.step_by(3)) {
            for flip in [0x5a, 0xff] {
                bad[offset] ^= flip;
                let _ = esp_list(&bad);
                let _ = esp_read(&bad, "EFI/BOOT/BOOTX64.EFI");
                bad[offset] ^= flip;
            }
        }
        assert!(bad == img);
        // A directory that contains itself, and a chain that loops.
        let mut looped = img.clone();
        let fat0 = 4096;
        let root = 2usize;
        looped[fat0 + 4 * root..fat0 + 4 * root + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(esp_list(&looped), Err(EspError::Corrupt { .. })));
    }
}
