//! Unified Kernel Image assembly: systemd-stub (a PE32+ EFI application) plus the
//! kernel, initrd, command line and os-release appended as new PE sections, the way
//! `ukify` / `objcopy --add-section` do it. Also a small reader for the section table
//! of any PE file (used by `mkhost inspect` and by our tests).
//!
//! How the stub finds its payload: at run time systemd-stub looks up its own image in
//! memory and reads the sections by name (`.linux`, `.initrd`, `.cmdline`, `.osrel`,
//! `.uname`). So the only job here is to add well-formed section headers and data:
//!
//! * the new headers go in the slack space after the stub's section table (inside
//!   `SizeOfHeaders`; we never move existing sections);
//! * each new section gets a page-aligned virtual address after everything the stub
//!   already maps, and its raw data is appended at a `FileAlignment`-aligned offset;
//! * `NumberOfSections`, `SizeOfImage`, `SizeOfInitializedData` and `CheckSum` are
//!   updated so firmware and tools (objdump, sbsign, pesign) agree on the layout.
//!
//! Parsing uses `object`'s PE structures; writing patches the same `#[repr(C)]`
//! structures in place through `object::pod`. The output depends only on the inputs.

use object::endian::{LittleEndian as LE, U16, U32};
use object::pe::{
    ImageDosHeader, ImageFileHeader, ImageNtHeaders32, ImageNtHeaders64, ImageOptionalHeader64,
    ImageSectionHeader, IMAGE_DIRECTORY_ENTRY_SECURITY, IMAGE_FILE_LINE_NUMS_STRIPPED,
    IMAGE_FILE_LOCAL_SYMS_STRIPPED, IMAGE_NT_OPTIONAL_HDR32_MAGIC, IMAGE_NT_OPTIONAL_HDR64_MAGIC,
    IMAGE_SCN_CNT_INITIALIZED_DATA, IMAGE_SCN_MEM_READ, IMAGE_SIZEOF_SECTION_HEADER,
};
use object::read::pe::{optional_header_magic, ImageNtHeaders, ImageOptionalHeader, SectionTable};
use object::read::StringTable;
use std::mem::offset_of;
use thiserror::Error;

/// Virtual addresses of added sections are aligned to at least one page.
const PAGE_SIZE: u32 = 4096;
/// Size of one COFF symbol table record.
const COFF_SYMBOL_SIZE: u64 = 18;

/// The payload of a UKI, one field per section the stub understands.
#[derive(Debug, Clone, Copy)]
pub struct UkiSections<'a> {
    /// `.osrel`: an os-release file (the boot menu shows `PRETTY_NAME`).
    pub osrel: &'a [u8],
    /// `.cmdline`: the kernel command line.
    pub cmdline: &'a [u8],
    /// `.uname`: the kernel release (`uname -r`), optional.
    pub uname: Option<&'a [u8]>,
    /// `.pcrpkey`: the public key (PEM) of signed PCR policies, optional
    /// (measured into PCR 11).
    pub pcrpkey: Option<&'a [u8]>,
    /// `.pcrsig`: the signed PCR policies (JSON), optional (not measured).
    pub pcrsig: Option<&'a [u8]>,
    /// `.linux`: the bzImage.
    pub linux: &'a [u8],
    /// `.initrd`: the (compressed) initramfs.
    pub initrd: &'a [u8],
}

impl<'a> UkiSections<'a> {
    /// The sections in the order they are appended.
    fn ordered(&self) -> Vec<(&'static str, &'a [u8])> {
        let mut out = vec![(".osrel", self.osrel), (".cmdline", self.cmdline)];
        for (name, data) in [
            (".uname", self.uname),
            (".pcrpkey", self.pcrpkey),
            (".pcrsig", self.pcrsig),
        ] {
            if let Some(data) = data {
                out.push((name, data));
            }
        }
        out.push((".linux", self.linux));
        out.push((".initrd", self.initrd));
        out
    }
}

/// One entry of a PE section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeSection {
    /// Section name (long `/nnn` names resolved through the COFF string table).
    pub name: String,
    /// RVA of the section (relative to `ImageBase`).
    pub virtual_address: u32,
    /// Bytes the section occupies in memory (`VirtualSize`).
    pub virtual_size: u32,
    /// File offset of the raw data (`PointerToRawData`).
    pub file_offset: u32,
    /// Bytes of raw data in the file (`SizeOfRawData`, aligned to `FileAlignment`).
    pub file_size: u32,
}

/// Why a PE could not be read or a UKI could not be assembled.
#[derive(Debug, Error)]
pub enum UkiError {
    #[error("cannot parse pe {what}")]
    Parse {
        what: &'static str,
        #[source]
        source: object::read::Error,
    },
    #[error("unknown pe optional header magic {magic:#06x}")]
    UnknownMagic { magic: u16 },
    #[error("stub is not pe32+ (optional header magic {magic:#06x}, expected 0x020b)")]
    NotPe32Plus { magic: u16 },
    #[error("stub has unusable alignment: SectionAlignment {section_alignment:#x}, FileAlignment {file_alignment:#x} (both must be powers of two)")]
    BadAlignment {
        section_alignment: u32,
        file_alignment: u32,
    },
    #[error("stub already has a {name} section (is it already a uki?)")]
    SectionExists { name: String },
    #[error(
        "stub is signed (security directory present): appending sections would break the signature"
    )]
    Signed,
    #[error("no room for {count} more section headers: the table would end at offset {needed:#x} but headers must end by {available:#x}")]
    NoHeaderRoom {
        count: usize,
        needed: u64,
        available: u64,
    },
    #[error("header area at offset {offset:#x} after the section table is not empty; refusing to overwrite it")]
    HeaderAreaInUse { offset: u64 },
    #[error("section {name} has raw data at {offset:#x}+{size:#x}, beyond the end of the file ({len} bytes)")]
    SectionOutOfBounds {
        name: String,
        offset: u32,
        size: u32,
        len: usize,
    },
    #[error("section {name} does not fit a pe image: {what} would exceed 4 GiB")]
    TooLarge { name: String, what: &'static str },
    #[error("too many sections: {count} (pe allows 65535)")]
    TooManySections { count: usize },
}

/// Builds a UKI: `stub` with the five payload sections appended.
///
/// Fails if the stub is not a PE32+ image, is signed, already contains one of the
/// sections we add, or has no slack after its section table for the new headers.
/// If the stub still carries a COFF symbol table at the end of the file (older
/// stubs do), it is dropped, as `ukify` does, so the new data can follow the last
/// section directly.
pub fn assemble_uki(stub: &[u8], sections: &UkiSections) -> Result<Vec<u8>, UkiError> {
    let magic = optional_header_magic(stub).map_err(|source| UkiError::Parse {
        what: "headers of the stub",
        source,
    })?;
    if magic != IMAGE_NT_OPTIONAL_HDR64_MAGIC {
        return Err(UkiError::NotPe32Plus { magic });
    }
    let layout = StubLayout::parse(stub)?;
    let new = sections.ordered();
    let table_end = check_header_room(stub, &layout, &new)?;
    let section_count = layout.names.len() + new.len();
    let section_count_u16 =
        u16::try_from(section_count).map_err(|_| UkiError::TooManySections {
            count: section_count,
        })?;

    let mut out = stub[..to_usize(layout.data_end)].to_vec();
    let appended = append_sections(&mut out, &layout, &new)?;
    let sizes = ImageSizes::new(&layout, &new, &appended, out.len())?;

    // Section headers, in the slack checked above.
    for (i, header) in appended.headers.iter().enumerate() {
        let at = to_usize(table_end) + i * IMAGE_SIZEOF_SECTION_HEADER;
        out[at..at + IMAGE_SIZEOF_SECTION_HEADER].copy_from_slice(object::pod::bytes_of(header));
    }
    patch_headers(&mut out, &layout, section_count_u16, &sizes);
    Ok(out)
}

/// Checks that the new sections are new, that the stub is not signed, and
/// that their headers fit between the existing table and the first
/// section's data, inside SizeOfHeaders, in bytes that nothing else uses.
/// Returns the offset where the new headers go (the end of the table).
fn check_header_room(
    stub: &[u8],
    layout: &StubLayout,
    new: &[(&'static str, &[u8])],
) -> Result<u64, UkiError> {
    // Refuse to build a UKI twice or to shadow sections the stub brought itself.
    for (name, _) in new {
        if layout.names.iter().any(|existing| existing == name) {
            return Err(UkiError::SectionExists {
                name: (*name).to_string(),
            });
        }
    }
    if layout.signed {
        return Err(UkiError::Signed);
    }

    let header_size = IMAGE_SIZEOF_SECTION_HEADER as u64;
    let table_end = layout.section_table + layout.names.len() as u64 * header_size;
    let needed = table_end + new.len() as u64 * header_size;
    let available = layout.headers_limit;
    if needed > available {
        return Err(UkiError::NoHeaderRoom {
            count: new.len(),
            needed,
            available,
        });
    }
    // `needed <= available <= stub.len()` (headers_limit is clamped to the file).
    let slack = &stub[to_usize(table_end)..to_usize(needed)];
    if let Some(pos) = slack.iter().position(|&b| b != 0) {
        return Err(UkiError::HeaderAreaInUse {
            offset: table_end + pos as u64,
        });
    }
    Ok(table_end)
}

/// What [`append_sections`] added.
struct Appended {
    /// The new section headers, in order.
    headers: Vec<ImageSectionHeader>,
    /// The first RVA past the new sections.
    next_va: u64,
    /// Raw bytes of initialized data added.
    initialized: u64,
}

/// Appends the sections' data to `out`, each at the next file-aligned
/// offset and page-aligned address, and makes their headers.
fn append_sections(
    out: &mut Vec<u8>,
    layout: &StubLayout,
    new: &[(&'static str, &[u8])],
) -> Result<Appended, UkiError> {
    let fa = layout.file_alignment;
    let va_align = layout.section_alignment.max(PAGE_SIZE);
    let mut next_va = u64::from(layout.mapped_end);
    let mut added_initialized: u64 = 0;
    let mut headers = Vec::with_capacity(new.len());

    for (name, data) in new {
        let too_large = |what| UkiError::TooLarge {
            name: (*name).to_string(),
            what,
        };
        let va = round_up(next_va, u64::from(va_align));
        let len = data.len() as u64;
        // An empty section still claims one page so every section has its own VA.
        next_va = va + len.max(1);
        let (raw_ptr, raw_size) = if data.is_empty() {
            (0, 0)
        } else {
            let raw_ptr = round_up(out.len() as u64, u64::from(fa));
            let raw_size = round_up(len, u64::from(fa));
            out.resize(to_usize(raw_ptr), 0);
            out.extend_from_slice(data);
            out.resize(to_usize(raw_ptr + raw_size), 0);
            (raw_ptr, raw_size)
        };
        added_initialized += raw_size;
        let u32_of = |v: u64, what| u32::try_from(v).map_err(|_| too_large(what));
        headers.push(ImageSectionHeader {
            name: section_name_bytes(name),
            virtual_size: U32::new(LE, u32_of(len, "VirtualSize")?),
            virtual_address: U32::new(LE, u32_of(va, "VirtualAddress")?),
            size_of_raw_data: U32::new(LE, u32_of(raw_size, "SizeOfRawData")?),
            pointer_to_raw_data: U32::new(LE, u32_of(raw_ptr, "PointerToRawData")?),
            pointer_to_relocations: U32::new(LE, 0),
            pointer_to_linenumbers: U32::new(LE, 0),
            number_of_relocations: U16::new(LE, 0),
            number_of_linenumbers: U16::new(LE, 0),
            characteristics: U32::new(LE, IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ),
        });
    }
    Ok(Appended {
        headers,
        next_va,
        initialized: added_initialized,
    })
}

/// The optional header's size fields of the finished image.
struct ImageSizes {
    size_of_image: u32,
    size_of_initialized_data: u32,
}

impl ImageSizes {
    /// Fails when a field, or the file of `file_len` bytes, exceeds 4 GiB.
    fn new(
        layout: &StubLayout,
        new: &[(&'static str, &[u8])],
        appended: &Appended,
        file_len: usize,
    ) -> Result<Self, UkiError> {
        let va_align = layout.section_alignment.max(PAGE_SIZE);
        let last_name = new.last().map(|(n, _)| *n).unwrap_or(".initrd");
        let size_of_image = u32::try_from(round_up(appended.next_va, u64::from(va_align)))
            .map_err(|_| UkiError::TooLarge {
                name: last_name.to_string(),
                what: "SizeOfImage",
            })?;
        let size_of_initialized_data =
            u32::try_from(u64::from(layout.size_of_initialized_data) + appended.initialized)
                .map_err(|_| UkiError::TooLarge {
                    name: last_name.to_string(),
                    what: "SizeOfInitializedData",
                })?;
        if u32::try_from(file_len).is_err() {
            return Err(UkiError::TooLarge {
                name: last_name.to_string(),
                what: "the file size",
            });
        }
        Ok(ImageSizes {
            size_of_image,
            size_of_initialized_data,
        })
    }
}

/// File and optional header fields, at offsets taken from object's
/// structures, then the checksum over the finished image. (Written as
/// bytes: the stub's headers need not be aligned in memory.)
fn patch_headers(out: &mut [u8], layout: &StubLayout, section_count: u16, sizes: &ImageSizes) {
    let nt = to_usize(layout.nt_offset);
    let fh = nt + offset_of!(ImageNtHeaders64, file_header);
    let opt = nt + offset_of!(ImageNtHeaders64, optional_header);
    put_u16(
        out,
        fh + offset_of!(ImageFileHeader, number_of_sections),
        section_count,
    );
    if layout.strip_symbols {
        put_u32(
            out,
            fh + offset_of!(ImageFileHeader, pointer_to_symbol_table),
            0,
        );
        put_u32(out, fh + offset_of!(ImageFileHeader, number_of_symbols), 0);
        let flags =
            layout.characteristics | IMAGE_FILE_LINE_NUMS_STRIPPED | IMAGE_FILE_LOCAL_SYMS_STRIPPED;
        put_u16(
            out,
            fh + offset_of!(ImageFileHeader, characteristics),
            flags,
        );
    }
    put_u32(
        out,
        opt + offset_of!(ImageOptionalHeader64, size_of_image),
        sizes.size_of_image,
    );
    put_u32(
        out,
        opt + offset_of!(ImageOptionalHeader64, size_of_initialized_data),
        sizes.size_of_initialized_data,
    );
    let checksum_offset = opt + offset_of!(ImageOptionalHeader64, check_sum);
    put_u32(out, checksum_offset, 0);
    let checksum = pe_checksum(out, checksum_offset);
    put_u32(out, checksum_offset, checksum);
}

/// What `assemble_uki` needs to know about the stub, all validated against its size.
struct StubLayout {
    nt_offset: u64,
    /// File offset of the first section header.
    section_table: u64,
    /// Names of the existing sections, in table order.
    names: Vec<String>,
    /// Headers may extend up to here: min(SizeOfHeaders, first raw data, file size).
    headers_limit: u64,
    /// First RVA past everything the stub maps (max of SizeOfImage and section ends).
    mapped_end: u32,
    /// Bytes of the stub we keep (the whole file, minus a trailing symbol table).
    data_end: u64,
    strip_symbols: bool,
    section_alignment: u32,
    file_alignment: u32,
    size_of_initialized_data: u32,
    /// File header `Characteristics`.
    characteristics: u16,
    signed: bool,
}

impl StubLayout {
    fn parse(stub: &[u8]) -> Result<Self, UkiError> {
        let parse = |what| move |source| UkiError::Parse { what, source };
        let dos = ImageDosHeader::parse(stub).map_err(parse("dos header"))?;
        let nt_offset = u64::from(dos.nt_headers_offset());
        let mut offset = nt_offset;
        let (nt, dirs) = ImageNtHeaders64::parse(stub, &mut offset).map_err(parse("nt headers"))?;
        let section_table = offset;
        let table = nt
            .sections(stub, section_table)
            .map_err(parse("section table"))?;
        let strings = string_table(nt, stub);
        let opt = nt.optional_header();

        let section_alignment = opt.section_alignment();
        let file_alignment = opt.file_alignment();
        if !section_alignment.is_power_of_two() || !file_alignment.is_power_of_two() {
            return Err(UkiError::BadAlignment {
                section_alignment,
                file_alignment,
            });
        }

        let mut names = Vec::with_capacity(table.len());
        let mut headers_limit = u64::from(opt.size_of_headers()).min(stub.len() as u64);
        let mut mapped_end = u64::from(opt.size_of_image());
        let mut raw_end = 0u64;
        for section in table.iter() {
            let name = section_name(section, strings);
            let va = u64::from(section.virtual_address.get(LE));
            let vsize = section.virtual_size.get(LE);
            let raw_ptr = section.pointer_to_raw_data.get(LE);
            let raw_size = section.size_of_raw_data.get(LE);
            mapped_end = mapped_end.max(va + u64::from(vsize.max(raw_size)));
            if raw_size > 0 {
                let end = u64::from(raw_ptr) + u64::from(raw_size);
                if end > stub.len() as u64 {
                    return Err(UkiError::SectionOutOfBounds {
                        name,
                        offset: raw_ptr,
                        size: raw_size,
                        len: stub.len(),
                    });
                }
                headers_limit = headers_limit.min(u64::from(raw_ptr));
                raw_end = raw_end.max(end);
            }
            names.push(name);
        }
        let mapped_end = u32::try_from(mapped_end).map_err(|_| UkiError::TooLarge {
            name: names.last().cloned().unwrap_or_default(),
            what: "the stub's mapped size",
        })?;

        // A COFF symbol table (+ string table) that ends exactly at the end of the
        // file is debugging leftovers; drop it like ukify does.
        let fh = nt.file_header();
        let symtab = u64::from(fh.pointer_to_symbol_table.get(LE));
        let mut data_end = stub.len() as u64;
        let mut strip_symbols = false;
        if symtab != 0 && symtab >= raw_end.max(headers_limit) {
            let strtab = symtab + COFF_SYMBOL_SIZE * u64::from(fh.number_of_symbols.get(LE));
            let strtab_size = stub
                .get(to_usize(strtab.min(usize::MAX as u64))..)
                .and_then(|rest| rest.get(..4))
                .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .unwrap_or(0);
            if strtab + strtab_size == stub.len() as u64 {
                data_end = symtab;
                strip_symbols = true;
            }
        }

        let signed = dirs.get(IMAGE_DIRECTORY_ENTRY_SECURITY).is_some();
        Ok(StubLayout {
            nt_offset,
            section_table,
            names,
            headers_limit,
            mapped_end,
            data_end,
            strip_symbols,
            section_alignment,
            file_alignment,
            size_of_initialized_data: opt.size_of_initialized_data(),
            characteristics: fh.characteristics.get(LE),
            signed,
        })
    }
}

/// Lists the section table of any PE file (PE32 or PE32+).
pub fn pe_sections(pe: &[u8]) -> Result<Vec<PeSection>, UkiError> {
    with_section_table(pe, |table, strings| {
        table
            .iter()
            .map(|s| PeSection {
                name: section_name(s, strings),
                virtual_address: s.virtual_address.get(LE),
                virtual_size: s.virtual_size.get(LE),
                file_offset: s.pointer_to_raw_data.get(LE),
                file_size: s.size_of_raw_data.get(LE),
            })
            .collect()
    })
}

/// The data of the first section called `name`, without the alignment padding
/// (`min(VirtualSize, SizeOfRawData)` bytes), or `None` if there is no such section.
pub fn pe_section_data<'a>(pe: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, UkiError> {
    let found = with_section_table(pe, |table, strings| {
        table
            .iter()
            .find(|s| section_name(s, strings) == name)
            .map(|s| s.pe_file_range())
    })?;
    let Some((offset, size)) = found else {
        return Ok(None);
    };
    let start = to_usize(u64::from(offset));
    let end = start.saturating_add(to_usize(u64::from(size)));
    pe.get(start..end)
        .map(Some)
        .ok_or(UkiError::SectionOutOfBounds {
            name: name.to_string(),
            offset,
            size,
            len: pe.len(),
        })
}

/// Parses the headers of a PE32 or PE32+ file and hands its section table to `f`.
fn with_section_table<'d, T>(
    pe: &'d [u8],
    f: impl FnOnce(&SectionTable<'d>, StringTable<'d>) -> T,
) -> Result<T, UkiError> {
    fn parse<'d, Pe: ImageNtHeaders>(
        pe: &'d [u8],
    ) -> Result<(SectionTable<'d>, StringTable<'d>), UkiError> {
        let parse = |what| move |source| UkiError::Parse { what, source };
        let dos = ImageDosHeader::parse(pe).map_err(parse("dos header"))?;
        let mut offset = u64::from(dos.nt_headers_offset());
        let (nt, _) = Pe::parse(pe, &mut offset).map_err(parse("nt headers"))?;
        let table = nt.sections(pe, offset).map_err(parse("section table"))?;
        Ok((table, string_table(nt, pe)))
    }
    let magic = optional_header_magic(pe).map_err(|source| UkiError::Parse {
        what: "headers",
        source,
    })?;
    let (table, strings) = match magic {
        IMAGE_NT_OPTIONAL_HDR64_MAGIC => parse::<ImageNtHeaders64>(pe)?,
        IMAGE_NT_OPTIONAL_HDR32_MAGIC => parse::<ImageNtHeaders32>(pe)?,
        magic => return Err(UkiError::UnknownMagic { magic }),
    };
    Ok(f(&table, strings))
}

/// The COFF string table (for `/nnn` long section names), or an empty one if the
/// file has none or it is damaged: names then fall back to the raw 8 bytes.
fn string_table<'d, Pe: ImageNtHeaders>(nt: &Pe, data: &'d [u8]) -> StringTable<'d> {
    nt.symbols(data)
        .map(|symbols| symbols.strings())
        .unwrap_or_default()
}

fn section_name(section: &ImageSectionHeader, strings: StringTable<'_>) -> String {
    let raw = section.name(strings).unwrap_or_else(|_| section.raw_name());
    String::from_utf8_lossy(raw).into_owned()
}

/// Our section names are all short (<= 8 bytes), so they fit the header directly.
fn section_name_bytes(name: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = name.len().min(8);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The PE image checksum (as computed by `imagehlp!CheckSumMappedFile`): a 16-bit
/// one's-complement-style sum of the file's little-endian words, with the 4 bytes of
/// the `CheckSum` field itself counted as zero, plus the file length.
pub(crate) fn pe_checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in data.chunks(2).enumerate() {
        let at = i * 2;
        if at >= checksum_offset && at < checksum_offset + 4 {
            continue;
        }
        let word = u16::from_le_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    // The checksum field is 32 bits; lengths over 4 GiB are rejected before this.
    (sum as u32).wrapping_add(data.len() as u32)
}

fn put_u16(out: &mut [u8], at: usize, value: u16) {
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// Offsets here are bounded by slice lengths, so they fit `usize` on our targets.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::stub;
    use std::process::Command;

    /// File offset of the PE32+ optional header.
    fn optional_header_offset(pe: &[u8]) -> usize {
        let nt = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
        nt + offset_of!(ImageNtHeaders64, optional_header)
    }

    fn checksum_offset(pe: &[u8]) -> usize {
        optional_header_offset(pe) + offset_of!(ImageOptionalHeader64, check_sum)
    }

    fn stored_checksum(pe: &[u8]) -> u32 {
        let at = checksum_offset(pe);
        u32::from_le_bytes(pe[at..at + 4].try_into().unwrap())
    }

    /// Deterministic filler that is not all zeros (so misplaced data shows).
    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    struct Payload {
        osrel: Vec<u8>,
        cmdline: Vec<u8>,
        uname: Vec<u8>,
        linux: Vec<u8>,
        initrd: Vec<u8>,
    }

    impl Payload {
        fn new() -> Self {
            Payload {
                osrel: b"ID=mkhost\nPRETTY_NAME=\"mkhost test\"\n".to_vec(),
                cmdline: b"console=ttyS0 quiet".to_vec(),
                uname: b"6.1.0-56-amd64".to_vec(),
                linux: payload(300_001, 7),
                initrd: payload(123_457, 99),
            }
        }
        fn sections(&self) -> UkiSections<'_> {
            UkiSections {
                osrel: &self.osrel,
                cmdline: &self.cmdline,
                uname: Some(&self.uname),
                pcrpkey: None,
                pcrsig: None,
                linux: &self.linux,
                initrd: &self.initrd,
            }
        }
    }

    fn write_temp(data: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), data).unwrap();
        f
    }

    #[test]
    fn checksum_matches_the_stub_linker() {
        // The stub was linked with a valid checksum: our algorithm must agree.
        let stub = stub();
        assert_eq!(
            pe_checksum(&stub, checksum_offset(&stub)),
            stored_checksum(&stub)
        );
    }

    #[test]
    fn appends_sections_with_the_expected_layout() {
        let stub = stub();
        let p = Payload::new();
        let uki = assemble_uki(&stub, &p.sections()).unwrap();
        let before = pe_sections(&stub).unwrap();
        let after = pe_sections(&uki).unwrap();
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "stub sections unchanged"
        );

        let added = &after[before.len()..];
        let names: Vec<_> = added.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".osrel", ".cmdline", ".uname", ".linux", ".initrd"]);

        let stub_end = before
            .iter()
            .map(|s| s.virtual_address + s.virtual_size.max(s.file_size))
            .max()
            .unwrap();
        let mut prev_end = stub_end;
        let data: [&[u8]; 5] = [&p.osrel, &p.cmdline, &p.uname, &p.linux, &p.initrd];
        for (s, d) in added.iter().zip(data) {
            assert_eq!(s.virtual_address % 4096, 0, "{} page aligned", s.name);
            assert!(s.virtual_address >= prev_end, "{} after previous", s.name);
            assert_eq!(s.file_offset % 0x200, 0, "{} file aligned", s.name);
            assert_eq!(s.virtual_size as usize, d.len());
            assert_eq!(s.file_size as usize, d.len().div_ceil(0x200) * 0x200);
            assert_eq!(pe_section_data(&uki, &s.name).unwrap(), Some(d));
            prev_end = s.virtual_address + s.virtual_size;
        }
        assert_eq!(pe_section_data(&uki, ".nope").unwrap(), None);

        // Header fields.
        let mut off = u64::from(ImageDosHeader::parse(&*uki).unwrap().nt_headers_offset());
        let (nt, _) = ImageNtHeaders64::parse(&*uki, &mut off).unwrap();
        let opt = nt.optional_header();
        let last = added.last().unwrap();
        assert_eq!(
            opt.size_of_image(),
            (last.virtual_address + last.virtual_size).div_ceil(4096) * 4096
        );
        let mut off = u64::from(ImageDosHeader::parse(&*stub).unwrap().nt_headers_offset());
        let (stub_nt, _) = ImageNtHeaders64::parse(&*stub, &mut off).unwrap();
        let added_raw: u32 = added.iter().map(|s| s.file_size).sum();
        assert_eq!(
            opt.size_of_initialized_data(),
            stub_nt.optional_header().size_of_initialized_data() + added_raw
        );
        assert_eq!(
            pe_checksum(&uki, checksum_offset(&uki)),
            stored_checksum(&uki)
        );
        assert_eq!(uki.len() as u32, last.file_offset + last.file_size);
        // The trailing COFF symbol table of the Debian stub is gone.
        assert_eq!(nt.file_header().pointer_to_symbol_table.get(LE), 0);
    }

    #[test]
    fn output_is_deterministic_and_uname_optional() {
        let stub = stub();
        let p = Payload::new();
        let a = assemble_uki(&stub, &p.sections()).unwrap();
        let b = assemble_uki(&stub, &p.sections()).unwrap();
        assert_eq!(a, b);

        let mut s = p.sections();
        s.uname = None;
        let c = assemble_uki(&stub, &s).unwrap();
        let names: Vec<_> = pe_sections(&c)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(!names.iter().any(|n| n == ".uname"));
        assert!(names.ends_with(&[
            ".osrel".into(),
            ".cmdline".into(),
            ".linux".into(),
            ".initrd".into()
        ]));
    }

    #[test]
    fn empty_cmdline_is_allowed() {
        let stub = stub();
        let p = Payload::new();
        let mut s = p.sections();
        s.cmdline = b"";
        let uki = assemble_uki(&stub, &s).unwrap();
        assert_eq!(pe_section_data(&uki, ".cmdline").unwrap(), Some(&b""[..]));
        let secs = pe_sections(&uki).unwrap();
        let vas: Vec<u32> = secs.iter().map(|s| s.virtual_address).collect();
        let mut dedup = vas.clone();
        dedup.dedup();
        assert_eq!(vas, dedup, "every section has its own address");
    }

    /// objdump (binutils) is an independent PE reader: names, VMAs, sizes and file
    /// offsets it prints must match what we wrote.
    #[test]
    fn objdump_agrees() {
        let stub = stub();
        let p = Payload::new();
        let uki = assemble_uki(&stub, &p.sections()).unwrap();
        let file = write_temp(&uki);
        let out = Command::new("objdump")
            .arg("-h")
            .arg(file.path())
            .output()
            .expect("objdump (binutils) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("file format pei-x86-64"), "{text}");
        // Lines look like: "  8 .osrel  00000024  000000000001a000  000000000001a000  00011400  2**2"
        let mut seen = Vec::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() == 7 && cols[0].parse::<u32>().is_ok() {
                let size = u32::from_str_radix(cols[2], 16).unwrap();
                let vma = u64::from_str_radix(cols[3], 16).unwrap();
                let off = u32::from_str_radix(cols[5], 16).unwrap();
                seen.push((cols[1].to_string(), size, vma, off));
            }
        }
        let ours: Vec<_> = pe_sections(&uki)
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.name,
                    s.virtual_size.min(s.file_size),
                    u64::from(s.virtual_address),
                    s.file_offset,
                )
            })
            .collect();
        assert_eq!(seen, ours, "objdump -h:\n{text}");

        // objcopy extracts exactly our bytes.
        for (name, want) in [(".cmdline", &p.cmdline), (".initrd", &p.initrd)] {
            let dump = tempfile::NamedTempFile::new().unwrap();
            let st = Command::new("objcopy")
                .args(["-O", "binary", &format!("--only-section={name}")])
                .arg(file.path())
                .arg(dump.path())
                .status()
                .expect("objcopy (binutils) must be installed");
            assert!(st.success());
            assert_eq!(&std::fs::read(dump.path()).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn refuses_to_add_linux_twice() {
        let stub = stub();
        let p = Payload::new();
        let uki = assemble_uki(&stub, &p.sections()).unwrap();
        let err = assemble_uki(&uki, &p.sections()).unwrap_err();
        assert!(
            matches!(&err, UkiError::SectionExists { name } if name == ".osrel"),
            "{err}"
        );
        // A stub that has only .linux is refused too.
        let mut hacked = stub.clone();
        let secs = pe_sections(&stub).unwrap();
        let idx = secs.iter().position(|s| s.name == ".sdmagic").unwrap();
        let mut off = u64::from(ImageDosHeader::parse(&*stub).unwrap().nt_headers_offset());
        ImageNtHeaders64::parse(&*stub, &mut off).unwrap();
        let at = off as usize + idx * 40;
        hacked[at..at + 8].copy_from_slice(b".linux\0\0");
        let err = assemble_uki(&hacked, &p.sections()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stub already has a .linux section (is it already a uki?)"
        );
    }

    #[test]
    fn rejects_non_pe32plus_and_garbage() {
        let p = Payload::new();
        let err = assemble_uki(b"not a pe file at all", &p.sections()).unwrap_err();
        assert!(matches!(err, UkiError::Parse { .. }), "{err}");
        assert!(pe_sections(&[0u8; 1024]).is_err());

        let mut pe32 = stub();
        let magic_at = optional_header_offset(&pe32);
        pe32[magic_at..magic_at + 2].copy_from_slice(&IMAGE_NT_OPTIONAL_HDR32_MAGIC.to_le_bytes());
        let err = assemble_uki(&pe32, &p.sections()).unwrap_err();
        assert!(
            matches!(err, UkiError::NotPe32Plus { magic: 0x10b }),
            "{err}"
        );
    }

    #[test]
    fn no_header_room_is_an_error() {
        let mut stub = stub();
        // Pretend the headers end right after the existing section table + 1 header.
        let mut off = u64::from(ImageDosHeader::parse(&*stub).unwrap().nt_headers_offset());
        let (nt, _) = ImageNtHeaders64::parse(&*stub, &mut off).unwrap();
        let n = u64::from(nt.file_header().number_of_sections.get(LE));
        let limit = (off + (n + 1) * 40) as u32;
        let soh_at =
            optional_header_offset(&stub) + offset_of!(ImageOptionalHeader64, size_of_headers);
        stub[soh_at..soh_at + 4].copy_from_slice(&limit.to_le_bytes());
        let p = Payload::new();
        let err = assemble_uki(&stub, &p.sections()).unwrap_err();
        assert!(
            matches!(err, UkiError::NoHeaderRoom { count: 5, available, .. } if available == u64::from(limit)),
            "{err}"
        );
    }

    #[test]
    fn signed_stub_is_refused() {
        let mut stub = stub();
        // Data directory 4 (security) follows the fixed PE32+ optional header.
        let at = optional_header_offset(&stub)
            + std::mem::size_of::<ImageOptionalHeader64>()
            + IMAGE_DIRECTORY_ENTRY_SECURITY * 8;
        stub[at..at + 4].copy_from_slice(&0x1234u32.to_le_bytes());
        stub[at + 4..at + 8].copy_from_slice(&0x10u32.to_le_bytes());
        let p = Payload::new();
        assert!(matches!(
            assemble_uki(&stub, &p.sections()),
            Err(UkiError::Signed)
        ));
    }

    #[test]
    fn truncated_or_corrupt_stubs_do_not_panic() {
        let stub = stub();
        let p = Payload::new();
        let s = p.sections();
        for len in (0..0x600).chain((0x600..stub.len()).step_by(997)) {
            let _ = assemble_uki(&stub[..len], &s);
            let _ = pe_sections(&stub[..len]);
            let _ = pe_section_data(&stub[..len], ".sbat");
        }
        // Flip every header byte in turn.
        for i in 0..0x400 {
            let mut bad = stub.clone();
            bad[i] ^= 0xff;
            let _ = assemble_uki(&bad, &s);
            let _ = pe_sections(&bad);
            let _ = pe_section_data(&bad, ".linux");
        }
    }
}
