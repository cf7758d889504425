//! The PE side of Authenticode signatures (the UKI, `BOOTX64.EFI`): the
//! image digest that a signature covers, the certificate table that carries
//! the signature, and reading it back. The cryptography (the PKCS #7
//! `SignedData` over the digest) is the caller's: this module only moves
//! bytes, as the PE/COFF specification and Microsoft's "Windows Authenticode
//! Portable Executable Signature Format" define them.
//!
//! The digest is SHA-256 over, in order: the headers up to `SizeOfHeaders`
//! without the `CheckSum` field and the certificate-table entry of the data
//! directory; each section's raw data, by file offset; and whatever follows
//! the last section, up to the certificate table. Signing pads the file to 8
//! bytes (that padding is hashed too), appends one `WIN_CERTIFICATE` of type
//! `WIN_CERT_TYPE_PKCS_SIGNED_DATA`, points the data directory at it and
//! recomputes `CheckSum`, as `sbsign` and `pesign` do.

use object::endian::LittleEndian as LE;
use object::pe::{ImageDosHeader, ImageNtHeaders64, IMAGE_DIRECTORY_ENTRY_SECURITY};
use object::read::pe::{optional_header_magic, ImageNtHeaders, ImageOptionalHeader};
use sha2::{Digest, Sha256};
use std::mem::offset_of;
use thiserror::Error;

use crate::uki::pe_checksum;

/// `WIN_CERTIFICATE.wRevision` of the current format.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType` for a PKCS #7 `SignedData`.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// Bytes of `WIN_CERTIFICATE` before the signature.
const WIN_CERTIFICATE_HEADER: usize = 8;
/// Size of one data-directory entry.
const DATA_DIRECTORY_SIZE: usize = 8;

/// Why a PE could not be hashed, signed or read.
#[derive(Debug, Error)]
pub enum AuthenticodeError {
    #[error("not a PE image: cannot parse its {what}")]
    Parse {
        what: &'static str,
        #[source]
        source: object::read::Error,
    },
    #[error("not a PE32+ image (optional header magic {magic:#06x}); EFI applications for x86-64 are PE32+")]
    NotPe32Plus { magic: u16 },
    #[error("the PE's {what} ({offset:#x}+{size:#x}) lies outside the file ({len} bytes)")]
    OutOfBounds {
        what: String,
        offset: u64,
        size: u64,
        len: usize,
    },
    #[error("the PE's certificate table at {offset:#x} is not at the end of the file ({len} bytes); refusing to sign a file laid out this way")]
    TableNotLast { offset: u64, len: usize },
    #[error("the PE is already signed; sign the unsigned image")]
    AlreadySigned,
    #[error("the signature ({size} bytes) is too large for a certificate table")]
    TooLarge { size: usize },
    #[error("the certificate table's entry at {offset:#x} is malformed: {why}")]
    BadTable { offset: u64, why: String },
}

/// Where the parts the digest skips or covers lie in one PE32+ file.
struct Layout {
    checksum: usize,
    security_entry: usize,
    size_of_headers: usize,
    /// `(offset, size)` of each section's raw data, by offset.
    sections: Vec<(usize, usize)>,
    /// The certificate table, if the file has one: `(offset, size)`.
    table: Option<(usize, usize)>,
}

impl Layout {
    fn parse(pe: &[u8]) -> Result<Layout, AuthenticodeError> {
        let parse = |what| move |source| AuthenticodeError::Parse { what, source };
        let magic = optional_header_magic(pe).map_err(parse("headers"))?;
        if magic != object::pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC {
            return Err(AuthenticodeError::NotPe32Plus { magic });
        }
        let dos = ImageDosHeader::parse(pe).map_err(parse("DOS header"))?;
        let nt_offset = dos.nt_headers_offset() as usize;
        let mut offset = nt_offset as u64;
        let (nt, dirs) = ImageNtHeaders64::parse(pe, &mut offset).map_err(parse("NT headers"))?;
        let optional = nt_offset + offset_of!(ImageNtHeaders64, optional_header);
        let checksum = optional + offset_of!(object::pe::ImageOptionalHeader64, check_sum);
        let security_entry = optional
            + std::mem::size_of::<object::pe::ImageOptionalHeader64>()
            + IMAGE_DIRECTORY_ENTRY_SECURITY * DATA_DIRECTORY_SIZE;
        let opt = nt.optional_header();
        let size_of_headers = opt.size_of_headers() as usize;
        let within = |what: String, at: usize, size: usize| {
            if at.checked_add(size).is_some_and(|end| end <= pe.len()) {
                Ok(())
            } else {
                Err(AuthenticodeError::OutOfBounds {
                    what,
                    offset: at as u64,
                    size: size as u64,
                    len: pe.len(),
                })
            }
        };
        within("headers".into(), 0, size_of_headers)?;
        if opt.number_of_rva_and_sizes() <= IMAGE_DIRECTORY_ENTRY_SECURITY as u32
            || security_entry + DATA_DIRECTORY_SIZE > size_of_headers
        {
            return Err(AuthenticodeError::OutOfBounds {
                what: "certificate-table entry of the data directory".into(),
                offset: security_entry as u64,
                size: DATA_DIRECTORY_SIZE as u64,
                len: size_of_headers,
            });
        }
        let table = match dirs.get(IMAGE_DIRECTORY_ENTRY_SECURITY) {
            Some(entry) => {
                let (at, size) = (
                    entry.virtual_address.get(LE) as usize,
                    entry.size.get(LE) as usize,
                );
                within("certificate table".into(), at, size)?;
                if at + size != pe.len() {
                    return Err(AuthenticodeError::TableNotLast {
                        offset: at as u64,
                        len: pe.len(),
                    });
                }
                Some((at, size))
            }
            None => None,
        };
        let sections_table = nt.sections(pe, offset).map_err(parse("section table"))?;
        let mut sections = Vec::new();
        for section in sections_table.iter() {
            let (at, size) = (
                section.pointer_to_raw_data.get(LE) as usize,
                section.size_of_raw_data.get(LE) as usize,
            );
            if size == 0 {
                continue;
            }
            let name = String::from_utf8_lossy(section.raw_name()).into_owned();
            within(format!("section {name}"), at, size)?;
            sections.push((at, size));
        }
        sections.sort_unstable();
        Ok(Layout {
            checksum,
            security_entry,
            size_of_headers,
            sections,
            table,
        })
    }

    /// The end of what the digest covers: the certificate table's start,
    /// or the end of the file.
    fn signed_end(&self, len: usize) -> usize {
        self.table.map_or(len, |(at, _)| at)
    }
}

/// The Authenticode SHA-256 digest of a PE32+ image (signed or not: the
/// certificate table is not part of it).
pub fn digest(pe: &[u8]) -> Result<[u8; 32], AuthenticodeError> {
    let layout = Layout::parse(pe)?;
    Ok(digest_of(pe, &layout))
}

fn digest_of(pe: &[u8], layout: &Layout) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(&pe[..layout.checksum]);
    hash.update(&pe[layout.checksum + 4..layout.security_entry]);
    hash.update(&pe[layout.security_entry + DATA_DIRECTORY_SIZE..layout.size_of_headers]);
    let mut hashed = layout.size_of_headers;
    let end = layout.signed_end(pe.len());
    for &(at, size) in &layout.sections {
        // Sections overlapping the headers or each other are hashed as
        // laid out, as the specification says; only the end is bounded.
        let stop = (at + size).min(end);
        if at < stop {
            hash.update(&pe[at..stop]);
        }
        hashed = hashed.max(at + size);
    }
    if hashed < end {
        hash.update(&pe[hashed..end]);
    }
    hash.finalize().into()
}

/// An unsigned PE32+ image made ready to sign: padded to 8 bytes, so that
/// the certificate table can follow. Its [`digest`] is what the signature
/// must cover.
pub fn prepare(pe: &[u8]) -> Result<Vec<u8>, AuthenticodeError> {
    let layout = Layout::parse(pe)?;
    if layout.table.is_some() {
        return Err(AuthenticodeError::AlreadySigned);
    }
    let mut out = pe.to_vec();
    out.resize(pe.len().next_multiple_of(8), 0);
    Ok(out)
}

/// Appends `signed_data` (a DER PKCS #7 `ContentInfo` of `SignedData`) as
/// the certificate table of `prepared` (from [`prepare`]), points the data
/// directory at it and updates `CheckSum`.
pub fn attach(prepared: &[u8], signed_data: &[u8]) -> Result<Vec<u8>, AuthenticodeError> {
    let layout = Layout::parse(prepared)?;
    if layout.table.is_some() {
        return Err(AuthenticodeError::AlreadySigned);
    }
    let entry_len = WIN_CERTIFICATE_HEADER + signed_data.len();
    let table_len = entry_len.next_multiple_of(8);
    let (Ok(entry_len32), Ok(table_len32), Ok(at)) = (
        u32::try_from(entry_len),
        u32::try_from(table_len),
        u32::try_from(prepared.len().next_multiple_of(8)),
    ) else {
        return Err(AuthenticodeError::TooLarge {
            size: signed_data.len(),
        });
    };
    let mut out = prepared.to_vec();
    out.resize(at as usize, 0);
    out.extend_from_slice(&entry_len32.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(signed_data);
    out.resize(at as usize + table_len, 0);
    let entry = layout.security_entry;
    out[entry..entry + 4].copy_from_slice(&at.to_le_bytes());
    out[entry + 4..entry + 8].copy_from_slice(&table_len32.to_le_bytes());
    let checksum = pe_checksum(&out, layout.checksum);
    out[layout.checksum..layout.checksum + 4].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// The PKCS #7 signatures in a PE's certificate table (empty when it has
/// none), in order.
pub fn signatures(pe: &[u8]) -> Result<Vec<&[u8]>, AuthenticodeError> {
    let layout = Layout::parse(pe)?;
    let Some((start, size)) = layout.table else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let mut at = start;
    while at < start + size {
        let bad = |why: String| AuthenticodeError::BadTable {
            offset: at as u64,
            why,
        };
        let header = pe
            .get(at..at + WIN_CERTIFICATE_HEADER)
            .ok_or_else(|| bad("truncated header".into()))?;
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let revision = u16::from_le_bytes([header[4], header[5]]);
        let kind = u16::from_le_bytes([header[6], header[7]]);
        if length < WIN_CERTIFICATE_HEADER || at + length > start + size {
            return Err(bad(format!("length {length} does not fit the table")));
        }
        if revision != WIN_CERT_REVISION_2_0 || kind != WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            return Err(bad(format!(
                "revision {revision:#06x}, type {kind:#06x} (expected 0x0200, 0x0002)"
            )));
        }
        found.push(&pe[at + WIN_CERTIFICATE_HEADER..at + length]);
        at += length.next_multiple_of(8);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::{run, stub};
    use std::process::Command;

    /// The digest against its definition; `sbverify` checks it for real
    /// in the signing crate's tests.
    #[test]
    fn digest_skips_checksum_and_table_entry_and_covers_sections() {
        let pe = stub();
        let layout = Layout::parse(&pe).unwrap();
        let base = digest(&pe).unwrap();
        // The checksum field is not covered.
        let mut changed = pe.clone();
        changed[layout.checksum] ^= 0xff;
        assert_eq!(digest(&changed).unwrap(), base);
        // A byte of a section is.
        let (at, _) = layout.sections[0];
        let mut changed = pe.clone();
        changed[at] ^= 0xff;
        assert_ne!(digest(&changed).unwrap(), base);
        // A byte after the last section is.
        let mut longer = pe.clone();
        longer.extend_from_slice(&[0u8; 8]);
        assert_ne!(digest(&longer).unwrap(), base);
    }

    #[test]
    fn attached_signature_reads_back_and_keeps_the_digest() {
        let pe = prepare(&stub()).unwrap();
        let blob = vec![0x30u8, 0x03, 0x02, 0x01, 0x01];
        let signed = attach(&pe, &blob).unwrap();
        assert_eq!(signed.len() % 8, 0);
        assert_eq!(signatures(&signed).unwrap(), vec![&blob[..]]);
        // The table is outside the digest, so the signed file's digest is
        // the prepared file's.
        assert_eq!(digest(&signed).unwrap(), digest(&pe).unwrap());
        // Signing twice is refused; so is a table that is not last.
        assert!(matches!(
            attach(&signed, &blob),
            Err(AuthenticodeError::AlreadySigned)
        ));
        let mut trailing = signed.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert!(matches!(
            signatures(&trailing),
            Err(AuthenticodeError::TableNotLast { .. })
        ));
        // objdump still reads it and finds the checksum right.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signed.efi");
        std::fs::write(&path, &signed).unwrap();
        let (ok, out) = run(Command::new("objdump").arg("-p").arg(&path));
        assert!(ok, "{out}");
        let checksum = out
            .lines()
            .find(|l| l.starts_with("CheckSum"))
            .unwrap_or_default()
            .to_string();
        let expected = pe_checksum(&signed, Layout::parse(&signed).unwrap().checksum);
        assert!(
            checksum.contains(&format!("{expected:08x}")),
            "{checksum} vs {expected:08x}"
        );
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let pe = stub();
        for cut in [0, 64, 300, pe.len() / 2] {
            assert!(digest(&pe[..cut]).is_err(), "cut at {cut}");
        }
        assert!(digest(b"MZ not really").is_err());
    }
}
