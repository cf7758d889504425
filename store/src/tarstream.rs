//! Reading a tar stream the way Go's `archive/tar` (what dockerd and
//! containerd unpack layers with) reads it, and telling a clean end from a
//! truncated one.
//!
//! A tar stream is 512-byte blocks: each entry a header block and its data
//! padded to a whole block, then two zero blocks (the end-of-archive marker).
//! Some writers stop short of that: umoci 0.4.7's `insert` ends its layer
//! right after the last file's data, with neither the padding nor the zero
//! blocks. Go reads such a stream to its end without complaint; the `tar`
//! crate refuses it ("unexpected EOF during skip").
//!
//! [`BlockPadded`] sits between the (decompressed) stream and the `tar`
//! crate. Where the stream ends off a block boundary it reads on as zeros up
//! to the boundary and records where the real stream ended, so the tar
//! reader sees the end of the archive there. A reader of the entries then
//! asks [`TarEnd::check`] whether an entry lies wholly before that point:
//! an entry whose data was cut short (zeros read in place of data) is still
//! an error, only the padding and the end-of-archive marker may be missing.
//! [`TarEnd::marker_seen`] says whether the archive ended with the zero
//! block, which an import archive without digests must have.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// The tar block size.
const BLOCK: u64 = 512;

/// A reader that pads a stream ending off a block boundary with zeros up
/// to the boundary; see the module documentation.
pub(crate) struct BlockPadded<R> {
    inner: R,
    /// Bytes returned so far (the `tar` crate's own positions count the same).
    pos: u64,
    end: TarEnd,
}

/// Where the real stream ended, shared between a [`BlockPadded`] inside a
/// `tar::Archive` and the code walking its entries.
#[derive(Clone, Default)]
pub(crate) struct TarEnd(Rc<Cell<Option<u64>>>);

impl TarEnd {
    /// The offset at which the real stream ended, once the tar reader has
    /// read that far.
    pub(crate) fn eof(&self) -> Option<u64> {
        self.0.get()
    }

    /// Checks that everything up to `offset` (the end of an entry's data)
    /// came from the real stream; the error says how much was missing.
    pub(crate) fn check(&self, entry: &str, offset: u64) -> Result<(), String> {
        match self.eof() {
            Some(eof) if eof < offset => Err(format!(
                "entry {entry:?} is truncated: the stream ends at byte {eof}, \
                 {} bytes before the end of the entry",
                offset - eof
            )),
            _ => Ok(()),
        }
    }

    /// True when the tar reader stopped at an end-of-archive block, before
    /// the real stream ended; false when it stopped because the stream did.
    /// Meaningful once the entries have all been read.
    pub(crate) fn marker_seen(&self) -> bool {
        self.eof().is_none()
    }
}

impl<R: Read> BlockPadded<R> {
    pub(crate) fn new(inner: R) -> (BlockPadded<R>, TarEnd) {
        let end = TarEnd::default();
        let reader = BlockPadded {
            inner,
            pos: 0,
            end: end.clone(),
        };
        (reader, end)
    }

    /// The wrapped reader, positioned where the tar reader stopped.
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for BlockPadded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.end.eof().is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            self.end.0.set(Some(self.pos));
        }
        let padding = self.pos.next_multiple_of(BLOCK) - self.pos;
        let n = usize::try_from(padding).map_or(buf.len(), |p| p.min(buf.len()));
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with the given regular files (name, data).
    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Reads every entry of `bytes`; the entries' data and whether the
    /// marker was seen, or the first error.
    fn read_all(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, bool), String> {
        let (reader, end) = BlockPadded::new(bytes);
        let mut archive = tar::Archive::new(reader);
        let mut out = Vec::new();
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let stop = entry.raw_file_position() + entry.size();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
            end.check("x", stop)?;
            out.push(data);
        }
        Ok((out, end.marker_seen()))
    }

    #[test]
    fn missing_padding_and_marker_read_as_the_end() {
        let full = tar(&[("a", b"first"), ("b", b"odd")]);
        let (data, marker) = read_all(&full).unwrap();
        assert_eq!(data, [b"first".to_vec(), b"odd".to_vec()]);
        assert!(marker);
        // As umoci insert writes it: headers and data, nothing after the
        // last byte of data.
        let cut = &full[..3 * 512 + 3];
        let (data, marker) = read_all(cut).unwrap();
        assert_eq!(data, [b"first".to_vec(), b"odd".to_vec()]);
        assert!(!marker);
        // Padding present, marker missing; one zero block only.
        assert!(!read_all(&full[..4 * 512]).unwrap().1);
        assert!(read_all(&full[..5 * 512]).unwrap().1);
    }

    #[test]
    fn data_cut_short_is_still_truncated() {
        let full = tar(&[("a", b"first"), ("b", &[7u8; 1000])]);
        // In the last entry's data, within its last block and before it.
        for cut in [3 * 512 + 900, 3 * 512 + 100, 3 * 512 + 1] {
            let err = read_all(&full[..cut]).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("EOF"),
                "{cut}: {err}"
            );
        }
        // In a header: its checksum fails, or its entry is missing.
        for cut in [2 * 512 + 1, 2 * 512 + 100, 2 * 512 + 511] {
            assert!(read_all(&full[..cut]).is_err(), "{cut}");
        }
    }
}
