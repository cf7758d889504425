//! The state disk as an md RAID 1 mirror of two whole disks
//! (`mirror = ["serial:A", "serial:B"]`): reading the md v1.2 superblock a
//! member carries, and deciding from what the two disks hold whether init
//! assembles the array, creates it or leaves both disks alone. Pure: the
//! parent module finds the disks, runs mdadm and mounts the array.
//!
//! | disk A | disk B | plan |
//! |---|---|---|
//! | member of X | member of X | assemble both |
//! | member of X | missing or blank | assemble degraded with A (B untouched) |
//! | blank | blank | create (only with `format = "if-blank"`) |
//! | member of X | member of Y | refuse |
//! | anything else (a file system, a partition table, md 0.90/1.0/1.1, not RAID 1 of two) | | refuse |
//!
//! A blank disk next to a member is never added by init: the operator adds
//! it (`mdadm /dev/md127 --add /dev/NEW`, docs/state.md).

use std::path::PathBuf;

use mkhost_shared::state_disk::FormatPolicy;

/// The md superblock magic, little-endian on disk.
pub const MD_MAGIC: u32 = 0xa92b_4efc;
/// Where a version 1.2 superblock sits: 4 KiB from the device's start.
pub const SB_1_2_OFFSET: usize = 4096;
/// The array init makes and assembles.
pub const MD_DEVICE: &str = "/dev/md127";
/// Its name in `/sys/class/block`.
pub const MD_NAME: &str = "md127";
/// The array name init records when it creates the mirror.
pub const ARRAY_NAME: &str = "mkhost-state";

/// What init needs from an md version 1.2 superblock (`struct
/// mdp_superblock_1` in the kernel's `md_p.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdSuperblock {
    /// The array's set UUID: equal on every member of one array.
    pub uuid: [u8; 16],
    /// The array name (`any:mkhost-state`).
    pub name: String,
    /// The RAID level (1 for a mirror).
    pub level: i32,
    /// How many members the array has when whole.
    pub raid_disks: u32,
    /// The event count (which member is newer).
    pub events: u64,
}

impl MdSuperblock {
    /// The UUID as mdadm prints it (`3f2c...:....:....:....`).
    pub fn uuid_text(&self) -> String {
        self.uuid
            .chunks(4)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn le_u32(b: &[u8], offset: usize) -> Option<u32> {
    b.get(offset..offset + 4)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

fn le_u64(b: &[u8], offset: usize) -> Option<u64> {
    b.get(offset..offset + 8)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

/// The version 1.2 superblock in `head` (a device's first bytes, at least
/// 4 KiB + 256), or `None`: no magic at 4 KiB, another major version, or a
/// superblock that says it lives elsewhere.
pub fn md_superblock(head: &[u8]) -> Option<MdSuperblock> {
    let sb = head.get(SB_1_2_OFFSET..SB_1_2_OFFSET + 256)?;
    if le_u32(sb, 0)? != MD_MAGIC || le_u32(sb, 4)? != 1 {
        return None;
    }
    // super_offset, in 512-byte sectors: 8 for version 1.2.
    if le_u64(sb, 144)? != (SB_1_2_OFFSET / 512) as u64 {
        return None;
    }
    let uuid: [u8; 16] = sb.get(16..32)?.try_into().ok()?;
    let name_bytes = sb.get(32..64)?;
    let end = name_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(name_bytes.len());
    Some(MdSuperblock {
        uuid,
        name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
        level: i32::from_le_bytes(sb.get(72..76)?.try_into().ok()?),
        raid_disks: le_u32(sb, 92)?,
        events: le_u64(sb, 200)?,
    })
}

/// What a found disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// No signature at all.
    Blank,
    /// A member of an md array (version 1.2).
    Member(MdSuperblock),
    /// Something else (what, for the note).
    Other(String),
}

/// One of the two disks the configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorDisk {
    /// The selector as configured (`serial:m1`).
    pub selector: String,
    /// The device found and what it holds; `None`: not found in time.
    pub found: Option<(PathBuf, Holds)>,
}

/// What init does with the two disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `mdadm --assemble` with these members; `degraded` says why one is
    /// left out.
    Assemble {
        /// The members to assemble.
        devices: Vec<PathBuf>,
        /// Why the array runs on one disk, when it does.
        degraded: Option<String>,
    },
    /// `mdadm --create` of a new mirror of both (blank) disks.
    Create {
        /// Both disks.
        devices: [PathBuf; 2],
    },
}

/// Why init leaves both disks alone; state stays in RAM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorRefusal {
    /// Neither disk was found.
    #[error("mirror: no disk matches {0} or {1}")]
    NoneFound(String, String),
    /// Both selectors name one device.
    #[error("mirror: {0} and {1} are the same disk {device}", device = .2.display())]
    SameDisk(String, String, PathBuf),
    /// A disk holds something that is not a member of an md mirror.
    #[error("mirror: {selector} ({device}) holds {what}; neither disk touched", device = device.display())]
    Occupied {
        /// The selector.
        selector: String,
        /// The device.
        device: PathBuf,
        /// What it holds.
        what: String,
    },
    /// A disk is a member of an array that is not a RAID 1 of two.
    #[error("mirror: {selector} ({device}) is a member of md array {name} (level {level}, {raid_disks} devices), not a mirror of two; neither disk touched", device = device.display())]
    NotAMirror {
        /// The selector.
        selector: String,
        /// The device.
        device: PathBuf,
        /// The array name.
        name: String,
        /// Its RAID level.
        level: i32,
        /// Its member count.
        raid_disks: u32,
    },
    /// The two disks belong to different arrays.
    #[error("mirror: {0} and {1} are members of different md arrays ({2} and {3}); neither disk touched")]
    DifferentArrays(String, String, String, String),
    /// Both disks are blank and the configuration forbids creating.
    #[error("mirror: {0} and {1} are blank and format = \"never\"; set format = \"if-blank\" to let init create the mirror")]
    BlankNotCreated(String, String),
    /// One disk is blank and the other missing: no mirror is created from one.
    #[error("mirror: {present} is blank and {missing} is missing; a mirror is created only from two blank disks")]
    Incomplete {
        /// The blank disk's selector.
        present: String,
        /// The missing disk's selector.
        missing: String,
    },
}

fn display(selector: &str, device: &std::path::Path) -> String {
    format!("{selector} ({})", device.display())
}

/// Decides from what `disks` hold. Pure, for the tests.
pub fn decide(disks: &[MirrorDisk; 2], format: FormatPolicy) -> Result<Plan, MirrorRefusal> {
    let [a, b] = disks;
    if let (Some((da, _)), Some((db, _))) = (&a.found, &b.found) {
        if da == db {
            return Err(MirrorRefusal::SameDisk(
                a.selector.clone(),
                b.selector.clone(),
                da.clone(),
            ));
        }
    }
    let mut members: Vec<(&MirrorDisk, &PathBuf, &MdSuperblock)> = Vec::new();
    for disk in disks {
        match &disk.found {
            Some((device, Holds::Other(what))) => {
                return Err(MirrorRefusal::Occupied {
                    selector: disk.selector.clone(),
                    device: device.clone(),
                    what: what.clone(),
                })
            }
            Some((device, Holds::Member(sb))) => {
                if sb.level != 1 || sb.raid_disks != 2 {
                    return Err(MirrorRefusal::NotAMirror {
                        selector: disk.selector.clone(),
                        device: device.clone(),
                        name: sb.name.clone(),
                        level: sb.level,
                        raid_disks: sb.raid_disks,
                    });
                }
                members.push((disk, device, sb));
            }
            Some((_, Holds::Blank)) | None => {}
        }
    }
    match members.as_slice() {
        [(da, _, sa), (db, _, sb)] if sa.uuid != sb.uuid => Err(MirrorRefusal::DifferentArrays(
            da.selector.clone(),
            db.selector.clone(),
            format!("{} {}", sa.name, sa.uuid_text()),
            format!("{} {}", sb.name, sb.uuid_text()),
        )),
        [(_, d1, _), (_, d2, _)] => Ok(Plan::Assemble {
            devices: vec![(*d1).clone(), (*d2).clone()],
            degraded: None,
        }),
        [(member, device, _)] => {
            let other = if std::ptr::eq(*member, a) { b } else { a };
            let why = match &other.found {
                Some((blank, _)) => format!(
                    "{} is blank, not added (mdadm {MD_DEVICE} --add {})",
                    display(&other.selector, blank),
                    blank.display()
                ),
                None => format!("{} is missing", other.selector),
            };
            Ok(Plan::Assemble {
                devices: vec![(*device).clone()],
                degraded: Some(format!(
                    "mirror degraded: running on {} only; {why}",
                    display(&member.selector, device)
                )),
            })
        }
        _ => match (&a.found, &b.found) {
            (Some((da, _)), Some((db, _))) => match format {
                FormatPolicy::IfBlank => Ok(Plan::Create {
                    devices: [da.clone(), db.clone()],
                }),
                FormatPolicy::Never => Err(MirrorRefusal::BlankNotCreated(
                    display(&a.selector, da),
                    display(&b.selector, db),
                )),
            },
            (Some((d, _)), None) => Err(MirrorRefusal::Incomplete {
                present: display(&a.selector, d),
                missing: b.selector.clone(),
            }),
            (None, Some((d, _))) => Err(MirrorRefusal::Incomplete {
                present: display(&b.selector, d),
                missing: a.selector.clone(),
            }),
            (None, None) => Err(MirrorRefusal::NoneFound(
                a.selector.clone(),
                b.selector.clone(),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device head with a version 1.2 superblock of `uuid`.
    fn member_head(uuid: u8, level: i32, raid_disks: u32) -> Vec<u8> {
        let mut head = vec![0u8; 128 * 1024];
        let sb = &mut head[SB_1_2_OFFSET..];
        sb[0..4].copy_from_slice(&MD_MAGIC.to_le_bytes());
        sb[4..8].copy_from_slice(&1u32.to_le_bytes());
        sb[16..32].copy_from_slice(&[uuid; 16]);
        sb[32..48].copy_from_slice(b"any:mkhost-state");
        sb[72..76].copy_from_slice(&level.to_le_bytes());
        sb[92..96].copy_from_slice(&raid_disks.to_le_bytes());
        sb[144..152].copy_from_slice(&8u64.to_le_bytes());
        sb[200..208].copy_from_slice(&42u64.to_le_bytes());
        head
    }

    fn sb(uuid: u8) -> MdSuperblock {
        md_superblock(&member_head(uuid, 1, 2)).unwrap()
    }

    #[test]
    fn a_version_1_2_superblock_is_read() {
        let found = sb(0xab);
        assert_eq!(found.uuid, [0xab; 16]);
        assert_eq!(found.name, "any:mkhost-state");
        assert_eq!((found.level, found.raid_disks, found.events), (1, 2, 42));
        assert_eq!(found.uuid_text(), "abababab:abababab:abababab:abababab");
        // No magic, another major version, another offset, too short: none.
        assert_eq!(md_superblock(&vec![0u8; 128 * 1024]), None);
        let mut head = member_head(1, 1, 2);
        head[SB_1_2_OFFSET + 4] = 0;
        assert_eq!(md_superblock(&head), None);
        let mut head = member_head(1, 1, 2);
        head[SB_1_2_OFFSET + 144] = 0;
        assert_eq!(md_superblock(&head), None);
        assert_eq!(md_superblock(&member_head(1, 1, 2)[..4200]), None);
    }

    fn disk(selector: &str, found: Option<(&str, Holds)>) -> MirrorDisk {
        MirrorDisk {
            selector: selector.into(),
            found: found.map(|(d, h)| (PathBuf::from(d), h)),
        }
    }

    #[test]
    fn both_members_of_one_array_are_assembled() {
        let disks = [
            disk("serial:m1", Some(("/dev/vda", Holds::Member(sb(7))))),
            disk("serial:m2", Some(("/dev/vdb", Holds::Member(sb(7))))),
        ];
        assert_eq!(
            decide(&disks, FormatPolicy::Never),
            Ok(Plan::Assemble {
                devices: vec!["/dev/vda".into(), "/dev/vdb".into()],
                degraded: None
            })
        );
    }

    #[test]
    fn one_member_is_assembled_degraded_and_a_blank_partner_is_not_touched() {
        let missing = [
            disk("serial:m1", None),
            disk("serial:m2", Some(("/dev/vda", Holds::Member(sb(7))))),
        ];
        let Ok(Plan::Assemble { devices, degraded }) = decide(&missing, FormatPolicy::IfBlank)
        else {
            panic!("not assembled")
        };
        assert_eq!(devices, [PathBuf::from("/dev/vda")]);
        let why = degraded.unwrap();
        assert!(why.contains("serial:m1 is missing"), "{why}");
        let blank = [
            disk("serial:m1", Some(("/dev/vda", Holds::Member(sb(7))))),
            disk("serial:m2", Some(("/dev/vdb", Holds::Blank))),
        ];
        let Ok(Plan::Assemble { devices, degraded }) = decide(&blank, FormatPolicy::IfBlank) else {
            panic!("not assembled")
        };
        assert_eq!(devices, [PathBuf::from("/dev/vda")]);
        assert!(degraded.unwrap().contains("--add /dev/vdb"));
    }

    #[test]
    fn two_blank_disks_are_made_a_mirror_only_if_allowed() {
        let disks = [
            disk("serial:m1", Some(("/dev/vda", Holds::Blank))),
            disk("serial:m2", Some(("/dev/vdb", Holds::Blank))),
        ];
        assert_eq!(
            decide(&disks, FormatPolicy::IfBlank),
            Ok(Plan::Create {
                devices: ["/dev/vda".into(), "/dev/vdb".into()]
            })
        );
        let err = decide(&disks, FormatPolicy::Never).unwrap_err();
        assert!(err.to_string().contains("format = \"never\""), "{err}");
        let one = [
            disk("serial:m1", Some(("/dev/vda", Holds::Blank))),
            disk("serial:m2", None),
        ];
        assert!(matches!(
            decide(&one, FormatPolicy::IfBlank),
            Err(MirrorRefusal::Incomplete { .. })
        ));
    }

    #[test]
    fn anything_else_is_refused_naming_the_disks() {
        let ext4 = [
            disk("serial:m1", Some(("/dev/vda", Holds::Blank))),
            disk(
                "serial:m2",
                Some(("/dev/vdb", Holds::Other("an ext2/3/4 file system".into()))),
            ),
        ];
        let err = decide(&ext4, FormatPolicy::IfBlank)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("serial:m2 (/dev/vdb) holds an ext2/3/4 file system"),
            "{err}"
        );
        let two_arrays = [
            disk("serial:m1", Some(("/dev/vda", Holds::Member(sb(1))))),
            disk("serial:m2", Some(("/dev/vdb", Holds::Member(sb(2))))),
        ];
        let err = decide(&two_arrays, FormatPolicy::IfBlank)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("different md arrays")
                && err.contains("01010101:")
                && err.contains("02020202:"),
            "{err}"
        );
        let raid0 = [
            disk(
                "serial:m1",
                Some((
                    "/dev/vda",
                    Holds::Member(md_superblock(&member_head(1, 0, 2)).unwrap()),
                )),
            ),
            disk("serial:m2", None),
        ];
        assert!(matches!(
            decide(&raid0, FormatPolicy::IfBlank),
            Err(MirrorRefusal::NotAMirror { level: 0, .. })
        ));
        let same = [
            disk("serial:m1", Some(("/dev/vda", Holds::Blank))),
            disk("path:/dev/vda", Some(("/dev/vda", Holds::Blank))),
        ];
        assert!(matches!(
            decide(&same, FormatPolicy::IfBlank),
            Err(MirrorRefusal::SameDisk(..))
        ));
        assert!(matches!(
            decide(
                &[disk("a:1", None), disk("b:2", None)],
                FormatPolicy::IfBlank
            ),
            Err(MirrorRefusal::NoneFound(..))
        ));
    }
}
