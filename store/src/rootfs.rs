//! `docker import` for the store: a tar of a root file system (what `docker
//! export` writes, or `tar -C ROOT -c .`; plain, gzip or zstd) becomes an
//! image of one layer, the tar itself.
//!
//! The config is made here, from the tar alone, so that the same tar always
//! gives the same image id: `os` linux, `architecture` this machine's,
//! `rootfs.diff_ids` the digest of the uncompressed tar, no `Entrypoint` or
//! `Cmd` (a container of it needs a command, as with `docker import`), and
//! `created` the newest modification time among the entries (not the clock;
//! the epoch for an archive without any). The layer blob is then verified
//! and unpacked like any other (`import.rs`, `unpack.rs`), so the store
//! keeps exactly the tar's entries under the usual rules.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;

use super::digest::{Digest, HashingReader};
use super::error::StoreError;
use super::source::{StagedFile, Staging};
use super::spec;
use super::tarstream::BlockPadded;
use super::unpack::{decompressed, parse_pax_time};

/// Reads the staged root file system tar `blob` (from the source `archive`)
/// once as a stream and writes the config of its image into `staging`.
/// Returns the config and the layer's diff_id. The tar must be whole: every
/// entry complete and the end-of-archive marker present.
pub(crate) fn rootfs_config(
    blob: &StagedFile,
    archive: &Path,
    staging: &Staging,
) -> Result<(StagedFile, Digest), StoreError> {
    let corrupt = |detail: String| StoreError::CorruptArchive {
        path: archive.to_owned(),
        detail,
    };
    let io_corrupt = |e: io::Error| corrupt(e.to_string());
    let file = File::open(&blob.path).map_err(|source| StoreError::Read {
        path: blob.path.clone(),
        source,
    })?;
    let (_, reader) = decompressed(BufReader::new(file)).map_err(io_corrupt)?;
    let (reader, end) = BlockPadded::new(HashingReader::new(reader));
    let mut tar = tar::Archive::new(reader);
    let mut newest = 0i64;
    let mut last: Option<(String, u64)> = None;
    for entry in tar.entries().map_err(io_corrupt)? {
        let mut entry = entry.map_err(io_corrupt)?;
        if let Some((shown, stop)) = &last {
            end.check(shown, *stop).map_err(corrupt)?;
        }
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        last = Some((
            shown,
            entry.raw_file_position().saturating_add(entry.size()),
        ));
        newest = newest.max(entry_mtime(&mut entry).map_err(io_corrupt)?);
    }
    if let Some((shown, stop)) = &last {
        end.check(shown, *stop).map_err(corrupt)?;
    }
    if !end.marker_seen() {
        return Err(corrupt(match last {
            Some((shown, _)) => {
                format!("it ends after entry {shown:?} without tar's end-of-archive marker")
            }
            None => "it is empty".to_owned(),
        }));
    }
    let (diff_id, _) = tar.into_inner().into_inner().finish().map_err(io_corrupt)?;

    let created = rfc3339(newest);
    let config = Config {
        architecture: spec::host_arch(),
        config: Empty {},
        created: &created,
        history: [History {
            comment: "imported from a root file system tar",
            created: &created,
            created_by: "hostd import",
        }],
        os: "linux",
        rootfs: RootFs {
            diff_ids: [diff_id.as_str()],
            kind: "layers",
        },
    };
    let bytes = serde_json::to_vec(&config).expect("the config serialises");
    let path = staging.path("config");
    std::fs::write(&path, &bytes).map_err(|source| StoreError::Write {
        path: path.clone(),
        source,
    })?;
    let staged = StagedFile {
        path,
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
    };
    Ok((staged, diff_id))
}

/// The config of a root file system's image. Typed rather than a
/// `serde_json::Value` so that its bytes, and so the image id, cannot change
/// with serde_json's features: fields in this order, keys sorted.
#[derive(Serialize)]
struct Config<'a> {
    architecture: &'a str,
    config: Empty,
    created: &'a str,
    history: [History<'a>; 1],
    os: &'a str,
    rootfs: RootFs<'a>,
}

/// `{}`: no Cmd, Entrypoint, Env or anything else.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct History<'a> {
    comment: &'a str,
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    diff_ids: [&'a str; 1],
    #[serde(rename = "type")]
    kind: &'a str,
}

/// An entry's modification time in whole seconds: the PAX `mtime` record if
/// there is one, else the header's (an unreadable field counts as 0; the
/// unpacker refuses it later with the entry's name).
fn entry_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<i64> {
    let mut secs = entry
        .header()
        .mtime()
        .ok()
        .and_then(|m| i64::try_from(m).ok())
        .unwrap_or(0);
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if ext.key_bytes() == b"mtime" {
                if let Some((s, _)) = parse_pax_time(ext.value_bytes()) {
                    secs = s;
                }
            }
        }
    }
    Ok(secs)
}

/// Seconds since the epoch as RFC 3339, the form image configs use; times
/// before the epoch are the epoch.
fn rfc3339(secs: i64) -> String {
    mkhost_shared::time::rfc3339(secs.max(0), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bytes_are_fixed() {
        let d = Digest::of(b"");
        let config = Config {
            architecture: "amd64",
            config: Empty {},
            created: "1970-01-01T00:00:00Z",
            history: [History {
                comment: "c",
                created: "t",
                created_by: "b",
            }],
            os: "linux",
            rootfs: RootFs {
                diff_ids: [d.as_str()],
                kind: "layers",
            },
        };
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            format!(
                r#"{{"architecture":"amd64","config":{{}},"created":"1970-01-01T00:00:00Z","history":[{{"comment":"c","created":"t","created_by":"b"}}],"os":"linux","rootfs":{{"diff_ids":["{d}"],"type":"layers"}}}}"#
            )
        );
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_748_776), "2026-11-27T03:06:16Z");
    }
}
