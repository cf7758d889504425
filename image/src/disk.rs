//! The bootable disk image: a GPT disk (protective MBR, primary and backup
//! partition tables) with one "EFI System" partition holding the ESP, written with
//! the `gpt` crate, plus readers for tests and `mkhost inspect`.
//!
//! Layout (512-byte sectors):
//!
//! ```text
//! LBA 0         protective MBR (one 0xEE partition covering the disk)
//! LBA 1         primary GPT header
//! LBA 2..33     primary partition array (128 entries of 128 bytes)
//! LBA 2048      the ESP (1 MiB aligned), exactly as many sectors as the ESP image
//! ...           zero padding to a whole MiB, then a 1 MiB tail holding
//! last 33 LBAs  the backup partition array and, in the last LBA, the backup header
//! ```
//!
//! `gpt` picks random GUIDs for new disks and partitions; we pass the disk GUID in
//! and overwrite the partition GUID, so the same inputs give the same bytes. The
//! reader is our own (it checks both CRCs and never trusts a size or offset), so
//! tests compare two independent implementations, plus `sgdisk`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::{partition_types, GptConfig};
use thiserror::Error;
use uuid::Uuid;

/// The EFI System Partition type GUID, C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
pub const ESP_TYPE_GUID: Uuid = Uuid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// The ESP starts at 1 MiB, the usual alignment for partitions.
const ESP_FIRST_LBA: u64 = MIB / SECTOR;
/// Name of the partition in the GPT (what `sgdisk -p` and `lsblk` show).
const ESP_NAME: &str = "EFI System";
/// Size of a GPT header we check (the UEFI 2.x header is 92 bytes).
const GPT_HEADER_SIZE: usize = 92;
/// The only partition entry size we (and `gpt`) read.
const GPT_ENTRY_SIZE: u32 = 128;

/// One used entry of a GPT partition array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number (1-based, as in `/dev/sda1`).
    pub number: u32,
    pub name: String,
    pub type_guid: Uuid,
    pub part_guid: Uuid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub size_bytes: u64,
}

/// Why a disk image could not be written or read.
#[derive(Debug, Error)]
pub enum DiskError {
    #[error("esp image is empty")]
    EmptyEsp,
    #[error("esp image of {len} bytes is not a whole number of 512-byte sectors")]
    EspNotSectorAligned { len: usize },
    #[error("cannot create disk image {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write disk image {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the gpt of {path}")]
    GptWrite {
        path: PathBuf,
        #[source]
        source: gpt::GptError,
    },
    #[error("cannot write the protective mbr of {path}")]
    MbrWrite {
        path: PathBuf,
        #[source]
        source: gpt::mbr::MBRError,
    },
    #[error("cannot open disk image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read disk image {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no valid gpt: primary header: {primary}; backup header: {backup}")]
    NoGpt {
        path: PathBuf,
        primary: String,
        backup: String,
    },
    #[error("partition {number} of {path} has first lba {first_lba} after last lba {last_lba}")]
    BadPartition {
        path: PathBuf,
        number: u32,
        first_lba: u64,
        last_lba: u64,
    },
    #[error("partition {number} of {path} (lba {first_lba}..={last_lba}) lies outside the {len}-byte image")]
    PartitionOutOfBounds {
        path: PathBuf,
        number: u32,
        first_lba: u64,
        last_lba: u64,
        len: u64,
    },
}

/// Writes a GPT disk image to `path` (created or truncated) holding `esp` as
/// partition 1, and returns the image size in bytes.
///
/// The size is 1 MiB (MBR, primary GPT, alignment gap) + the ESP rounded up to
/// 1 MiB + 1 MiB (backup GPT). The file is synced before returning; the caller
/// writes to a temporary name and renames.
pub fn write_gpt_disk(
    path: &Path,
    esp: &[u8],
    disk_guid: Uuid,
    esp_guid: Uuid,
) -> Result<u64, DiskError> {
    if esp.is_empty() {
        return Err(DiskError::EmptyEsp);
    }
    if esp.len() as u64 % SECTOR != 0 {
        return Err(DiskError::EspNotSectorAligned { len: esp.len() });
    }
    let esp_sectors = esp.len() as u64 / SECTOR;
    let total = MIB + (esp.len() as u64).div_ceil(MIB) * MIB + MIB;

    let path_buf = || path.to_path_buf();
    let write_err = |source| DiskError::Write {
        path: path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| DiskError::Create {
            path: path_buf(),
            source,
        })?;
    // A sparse file of the final size: everything we do not write reads as zeros.
    file.set_len(total).map_err(write_err)?;
    file.seek(SeekFrom::Start(ESP_FIRST_LBA * SECTOR))
        .map_err(write_err)?;
    file.write_all(esp).map_err(write_err)?;

    let gpt_err = |source| DiskError::GptWrite {
        path: path_buf(),
        source,
    };
    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(file, Some(disk_guid))
        .map_err(gpt_err)?;
    disk.add_partition_at(
        ESP_NAME,
        1,
        ESP_FIRST_LBA,
        esp_sectors,
        partition_types::EFI,
        0,
    )
    .map_err(gpt_err)?;
    // add_partition_at draws a random partition GUID: replace it with ours.
    let mut partitions = disk.take_partitions();
    for partition in partitions.values_mut() {
        partition.part_guid = esp_guid;
    }
    disk.update_partitions(partitions).map_err(gpt_err)?;
    let mut file = disk.write().map_err(gpt_err)?;

    // Sector count of the protective partition: the whole disk after LBA 0,
    // capped at what the 32-bit MBR field can hold (as the UEFI spec says).
    let mbr_sectors = u32::try_from(total / SECTOR - 1).unwrap_or(u32::MAX);
    ProtectiveMBR::with_lb_size(mbr_sectors)
        .overwrite_lba0(&mut file)
        .map_err(|source| DiskError::MbrWrite {
            path: path_buf(),
            source,
        })?;
    file.sync_all().map_err(write_err)?;
    Ok(total)
}

/// Reads the GPT of a disk image: the disk GUID and the used partitions, by number.
///
/// The primary table is used if its header and partition array are valid
/// (signature, CRC32s, location, 128-byte entries), else the backup. This is our own
/// parser, independent of the `gpt` crate that wrote the table.
pub fn read_gpt_disk(path: &Path) -> Result<(Uuid, Vec<PartitionInfo>), DiskError> {
    let mut file = File::open(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| DiskError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let table = match read_table(&mut file, len, 1) {
        Ok(table) => table,
        Err(primary) => {
            let backup = match (len / SECTOR).checked_sub(1) {
                Some(last) if last > 1 => read_table(&mut file, len, last),
                _ => Err(format!("image of {len} bytes has no room for one")),
            };
            backup.map_err(|backup| DiskError::NoGpt {
                path: path.to_path_buf(),
                primary,
                backup,
            })?
        }
    };
    let mut out = Vec::new();
    for (index, entry) in table
        .entries
        .chunks_exact(GPT_ENTRY_SIZE as usize)
        .enumerate()
    {
        let type_guid = Uuid::from_bytes_le(entry[0..16].try_into().unwrap_or([0; 16]));
        if type_guid.is_nil() {
            continue;
        }
        // At most 2^32 entries of 128 bytes were read, so the index fits.
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let first_lba = le_u64(&entry[32..40]);
        let last_lba = le_u64(&entry[40..48]);
        let sectors = last_lba
            .checked_sub(first_lba)
            .and_then(|n| n.checked_add(1))
            .ok_or(DiskError::BadPartition {
                path: path.to_path_buf(),
                number,
                first_lba,
                last_lba,
            })?;
        let name: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        out.push(PartitionInfo {
            number,
            name: String::from_utf16_lossy(&name),
            type_guid,
            part_guid: Uuid::from_bytes_le(entry[16..32].try_into().unwrap_or([0; 16])),
            first_lba,
            last_lba,
            size_bytes: sectors.saturating_mul(SECTOR),
        });
    }
    Ok((table.disk_guid, out))
}

/// Reads the bytes of one partition (as returned by [`read_gpt_disk`]).
pub fn read_partition(path: &Path, part: &PartitionInfo) -> Result<Vec<u8>, DiskError> {
    let read_err = |source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let len = file.metadata().map_err(read_err)?.len();
    let out_of_bounds = || DiskError::PartitionOutOfBounds {
        path: path.to_path_buf(),
        number: part.number,
        first_lba: part.first_lba,
        last_lba: part.last_lba,
        len,
    };
    if part.last_lba < part.first_lba {
        return Err(DiskError::BadPartition {
            path: path.to_path_buf(),
            number: part.number,
            first_lba: part.first_lba,
            last_lba: part.last_lba,
        });
    }
    let start = part
        .first_lba
        .checked_mul(SECTOR)
        .ok_or_else(out_of_bounds)?;
    let end = part
        .last_lba
        .checked_add(1)
        .and_then(|n| n.checked_mul(SECTOR))
        .ok_or_else(out_of_bounds)?;
    if end > len {
        return Err(out_of_bounds());
    }
    let size = usize::try_from(end - start).map_err(|_| out_of_bounds())?;
    let mut data = vec![0u8; size];
    file.seek(SeekFrom::Start(start)).map_err(read_err)?;
    file.read_exact(&mut data).map_err(read_err)?;
    Ok(data)
}

/// A validated GPT: the disk GUID and the raw partition array.
struct Table {
    disk_guid: Uuid,
    entries: Vec<u8>,
}

/// Reads and validates the GPT header at `lba` and its partition array; the error
/// says what is wrong, with offsets.
fn read_table(file: &mut File, len: u64, lba: u64) -> Result<Table, String> {
    let offset = lba * SECTOR;
    let header = read_at(file, len, offset, GPT_HEADER_SIZE as u64)
        .map_err(|e| format!("at offset {offset:#x}: {e}"))?;
    if &header[..8] != b"EFI PART" {
        return Err(format!("no \"EFI PART\" signature at offset {offset:#x}"));
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
    let mut zeroed = header.clone();
    zeroed[16..20].fill(0);
    if crc32(&zeroed) != u32_at(16) {
        return Err(format!("header crc32 mismatch at offset {offset:#x}"));
    }
    let current = le_u64(&header[24..32]);
    if current != lba {
        return Err(format!(
            "header at lba {lba} says it lives at lba {current}"
        ));
    }
    let part_start = le_u64(&header[72..80]);
    let num_parts = u32_at(80);
    let entry_size = u32_at(84);
    if entry_size != GPT_ENTRY_SIZE {
        return Err(format!(
            "partition entry size {entry_size} at offset {:#x} (only 128 is supported)",
            offset + 84
        ));
    }
    let array_offset = part_start
        .checked_mul(SECTOR)
        .ok_or_else(|| format!("partition array lba {part_start} overflows"))?;
    let array_len = u64::from(num_parts) * u64::from(entry_size);
    let entries = read_at(file, len, array_offset, array_len)
        .map_err(|e| format!("partition array at offset {array_offset:#x}: {e}"))?;
    if crc32(&entries) != u32_at(88) {
        return Err(format!(
            "partition array crc32 mismatch (array at offset {array_offset:#x})"
        ));
    }
    Ok(Table {
        disk_guid: Uuid::from_bytes_le(header[56..72].try_into().unwrap_or([0; 16])),
        entries,
    })
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

/// Reads `size` bytes at `offset`, refusing ranges beyond the end of the file.
fn read_at(file: &mut File, len: u64, offset: u64, size: u64) -> Result<Vec<u8>, String> {
    let end = offset
        .checked_add(size)
        .filter(|&end| end <= len)
        .ok_or_else(|| format!("{size} bytes do not fit the {len}-byte image"))?;
    let mut buf = vec![0u8; usize::try_from(end - offset).map_err(|e| e.to_string())?];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as GPT uses.
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &byte| {
        CRC32_TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8)
    })
}

/// Byte-at-a-time lookup table for [`crc32`], computed at compile time.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::{build_esp, esp_list, esp_size_for, EspFile};
    use crate::test_tools::run;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    const DISK_GUID: Uuid = Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
    const ESP_GUID: Uuid = Uuid::from_u128(0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0000);

    fn esp() -> Vec<u8> {
        let uki: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
        let files = [EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            data: &uki,
        }];
        build_esp(
            &files,
            esp_size_for(uki.len() as u64),
            0xfeed,
            "MKHOST",
            1_700_000_000,
        )
        .unwrap()
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(partition_types::EFI.guid, ESP_TYPE_GUID);
    }

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let esp = esp();
        let size = write_gpt_disk(&path, &esp, DISK_GUID, ESP_GUID).unwrap();
        assert_eq!(
            size,
            MIB + esp.len().div_ceil(MIB as usize) as u64 * MIB + MIB
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);

        let (guid, parts) = read_gpt_disk(&path).unwrap();
        assert_eq!(guid, DISK_GUID);
        assert_eq!(
            parts,
            vec![PartitionInfo {
                number: 1,
                name: "EFI System".into(),
                type_guid: ESP_TYPE_GUID,
                part_guid: ESP_GUID,
                first_lba: 2048,
                last_lba: 2048 + esp.len() as u64 / 512 - 1,
                size_bytes: esp.len() as u64,
            }]
        );
        let data = read_partition(&path, &parts[0]).unwrap();
        assert!(data == esp, "partition bytes differ from the esp");
        assert_eq!(esp_list(&data).unwrap()[0].0, "EFI/BOOT/BOOTX64.EFI");

        // Protective MBR: one 0xEE partition from LBA 1 over the rest of the disk.
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[510..512], &[0x55, 0xaa]);
        assert_eq!(raw[446 + 4], 0xee);
        assert_eq!(u32::from_le_bytes(raw[454..458].try_into().unwrap()), 1);
        assert_eq!(
            u64::from(u32::from_le_bytes(raw[458..462].try_into().unwrap())),
            size / 512 - 1
        );
    }

    #[test]
    fn deterministic_and_truncates_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        let esp = esp();
        // b starts out as a bigger file full of junk: it must be replaced, not patched.
        std::fs::write(&b, vec![0xa5u8; 60 * MIB as usize]).unwrap();
        write_gpt_disk(&a, &esp, DISK_GUID, ESP_GUID).unwrap();
        write_gpt_disk(&b, &esp, DISK_GUID, ESP_GUID).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    }

    /// sgdisk (gdisk) and fsck.vfat are independent readers of what we wrote.
    #[test]
    fn sgdisk_and_fsck_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let esp = esp();
        write_gpt_disk(&path, &esp, DISK_GUID, ESP_GUID).unwrap();

        let (ok, text) = run(Command::new("sgdisk").arg("-v").arg(&path));
        assert!(ok, "sgdisk -v failed:\n{text}");
        assert!(text.contains("No problems found"), "sgdisk -v:\n{text}");

        let (ok, text) = run(Command::new("sgdisk").arg("-p").arg(&path));
        assert!(ok, "sgdisk -p failed:\n{text}");
        assert!(
            text.contains(&format!(
                "Disk identifier (GUID): {}",
                DISK_GUID.hyphenated().to_string().to_uppercase()
            )),
            "{text}"
        );
        // "   1            2048           69631   33.0 MiB    EF00  EFI System"
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .unwrap_or_else(|| panic!("no partition 1 in:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], "2048", "{line}");
        assert_eq!(
            cols[2].parse::<u64>().unwrap(),
            2048 + esp.len() as u64 / 512 - 1,
            "{line}"
        );
        assert_eq!(cols[5], "EF00", "{line}");
        assert!(line.ends_with("EFI System"), "{line}");

        let (ok, text) = run(Command::new("sgdisk").args(["-i", "1"]).arg(&path));
        assert!(ok, "{text}");
        assert!(
            text.contains("Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "Partition unique GUID: {}",
                ESP_GUID.hyphenated().to_string().to_uppercase()
            )),
            "{text}"
        );

        let (_, parts) = read_gpt_disk(&path).unwrap();
        let part = dir.path().join("esp.img");
        std::fs::write(&part, read_partition(&path, &parts[0]).unwrap()).unwrap();
        let (ok, text) = run(Command::new("fsck.vfat").arg("-n").arg(&part));
        assert!(ok, "fsck.vfat -n on the partition failed:\n{text}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        assert!(matches!(
            write_gpt_disk(&path, &[], DISK_GUID, ESP_GUID),
            Err(DiskError::EmptyEsp)
        ));
        assert!(matches!(
            write_gpt_disk(&path, &[0; 100], DISK_GUID, ESP_GUID),
            Err(DiskError::EspNotSectorAligned { len: 100 })
        ));
        assert!(matches!(
            read_gpt_disk(&dir.path().join("missing.img")),
            Err(DiskError::Open { .. })
        ));
    }

    #[test]
    fn damaged_images_give_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.img");
        let esp = esp();
        write_gpt_disk(&good, &esp, DISK_GUID, ESP_GUID).unwrap();
        let raw = std::fs::read(&good).unwrap();
        let bad = dir.path().join("bad.img");
        let check = |bytes: &[u8]| {
            std::fs::write(&bad, bytes).unwrap();
            read_gpt_disk(&bad)
        };

        // Truncated images.
        for len in [
            0,
            511,
            512,
            1024,
            1536,
            34 * 512,
            MIB as usize,
            raw.len() / 2,
        ] {
            let result = check(&raw[..len]);
            if let Ok((_, parts)) = &result {
                // The primary table survives truncation; the data does not.
                assert!(matches!(
                    read_partition(&bad, &parts[0]),
                    Err(DiskError::PartitionOutOfBounds { .. })
                ));
            }
            if len < 34 * 512 {
                assert!(matches!(result, Err(DiskError::NoGpt { .. })), "{len}");
            }
        }

        // Primary header gone: the backup still describes the disk.
        let mut no_primary = raw.clone();
        no_primary[512..1024].fill(0);
        let (guid, parts) = check(&no_primary).unwrap();
        assert_eq!((guid, parts.len()), (DISK_GUID, 1));

        // Both headers gone.
        let mut none = no_primary.clone();
        let last = none.len() - 512;
        none[last..].fill(0);
        let err = check(&none).unwrap_err();
        assert!(err.to_string().contains("no valid gpt"), "{err}");

        // A flipped bit in the partition arrays is caught by their CRC.
        let mut entry = raw.clone();
        entry[1024 + 40] ^= 1;
        let backup_array = raw.len() - 33 * 512;
        entry[backup_array + 40] ^= 1;
        assert!(matches!(check(&entry), Err(DiskError::NoGpt { .. })));

        // Entry size 256 with a valid header CRC: `gpt` would assert; we refuse.
        let mut big_entries = raw.clone();
        for hdr in [512, raw.len() - 512] {
            big_entries[hdr + 84..hdr + 88].copy_from_slice(&256u32.to_le_bytes());
            big_entries[hdr + 16..hdr + 20].fill(0);
            let crc = crc32(&big_entries[hdr..hdr + 92]);
            big_entries[hdr + 16..hdr + 20].copy_from_slice(&crc.to_le_bytes());
        }
        assert!(matches!(check(&big_entries), Err(DiskError::NoGpt { .. })));

        // Flip each byte of the first 34 sectors (MBR, header, array) in turn, in
        // place, on a small disk (any sector-aligned bytes do as an "esp").
        let small = dir.path().join("small.img");
        write_gpt_disk(&small, &[0x5a; 4096], DISK_GUID, ESP_GUID).unwrap();
        let raw = std::fs::read(&small).unwrap();
        let file = OpenOptions::new().write(true).open(&small).unwrap();
        for i in (0..2 * 512u64).chain((2 * 512..34 * 512).step_by(5)) {
            let byte = raw[i as usize];
            file.write_all_at(&[!byte], i).unwrap();
            if let Ok((_, parts)) = read_gpt_disk(&small) {
                for p in &parts {
                    let _ = read_partition(&small, p);
                }
            }
            file.write_all_at(&[byte], i).unwrap();
        }
        assert!(std::fs::read(&small).unwrap() == raw);
    }
}
