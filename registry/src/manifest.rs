//! Manifests and indexes as the registry serves them: media types, the
//! fields we read, the choice of linux/amd64 from an index, and the checks
//! that make descriptors safe to use as file names.

use serde::Deserialize;

use crate::error::Cause;
use crate::reference::parse_digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (refused).
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1, signed (refused).
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The Accept header of manifest requests: the four types we read.
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The platform chosen from an index.
pub(crate) const OS: &str = "linux";
/// The architecture chosen from an index.
pub(crate) const ARCHITECTURE: &str = "amd64";

/// What a manifest response turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Image,
    Index,
}

/// A content descriptor, as manifests and indexes list them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// The fields of an image manifest we use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageManifest {
    #[serde(default)]
    pub schema_version: Option<u32>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    schema_version: Option<u32>,
}

/// Decides what `bytes` (served with `content_type`) are: the media type
/// and whether it is an image or an index. Schema 1 and unknown types are
/// errors.
pub(crate) fn classify(content_type: Option<&str>, bytes: &[u8]) -> Result<(String, Kind), Cause> {
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
        .filter(|c| !c.is_empty());
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Cause::Invalid {
        what: "manifest",
        detail: format!("not JSON: {e}"),
    })?;
    for candidate in [probe.media_type.as_deref(), header.as_deref()]
        .into_iter()
        .flatten()
    {
        if candidate == DOCKER_SCHEMA1 || candidate == DOCKER_SCHEMA1_SIGNED {
            return Err(Cause::Schema1 {
                media_type: candidate.to_owned(),
            });
        }
    }
    if probe.schema_version == Some(1) {
        return Err(Cause::Schema1 {
            media_type: header.unwrap_or_else(|| "schemaVersion 1".into()),
        });
    }
    // The body's own mediaType wins; OCI manifests may omit it, then the
    // header decides.
    let media_type = probe.media_type.or(header).unwrap_or_default();
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
        OCI_INDEX | DOCKER_LIST => Kind::Index,
        _ => return Err(Cause::MediaType { media_type }),
    };
    Ok((media_type, kind))
}

/// Picks the linux/amd64 entry of an index (the first, preferring one
/// without a variant or with `v1`).
pub(crate) fn choose_platform(bytes: &[u8]) -> Result<Descriptor, Cause> {
    let index: Index = serde_json::from_slice(bytes).map_err(|e| Cause::Invalid {
        what: "index",
        detail: e.to_string(),
    })?;
    let matching = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == OS && p.architecture == ARCHITECTURE)
    };
    let best = index
        .manifests
        .iter()
        .filter(matching)
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| matches!(p.variant.as_deref(), None | Some("") | Some("v1")))
        })
        .or_else(|| index.manifests.iter().find(matching));
    match best {
        Some(descriptor) => {
            check_descriptor(descriptor, "index")?;
            Ok(descriptor.clone())
        }
        None => {
            let mut available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| match p.variant.as_deref().filter(|v| !v.is_empty()) {
                    Some(variant) => format!("{}/{}/{variant}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            available.dedup();
            Err(Cause::NoPlatform { available })
        }
    }
}

/// Parses an image manifest and checks its descriptors.
pub(crate) fn parse_image(bytes: &[u8]) -> Result<ImageManifest, Cause> {
    let manifest: ImageManifest = serde_json::from_slice(bytes).map_err(|e| Cause::Invalid {
        what: "manifest",
        detail: e.to_string(),
    })?;
    if manifest.schema_version.is_some_and(|v| v != 2) {
        return Err(Cause::Invalid {
            what: "manifest",
            detail: format!("schemaVersion {:?} (expected 2)", manifest.schema_version),
        });
    }
    check_descriptor(&manifest.config, "manifest")?;
    for layer in &manifest.layers {
        check_descriptor(layer, "manifest")?;
    }
    Ok(manifest)
}

/// A blob an image manifest names: its digest (`sha256:…`, checked) and
/// size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// `sha256:` and 64 lowercase hex digits.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What an image manifest names, checked as a pull checks it: for callers
/// that keep pulled blobs (mkhost's build cache) and read a manifest back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBlobs {
    /// The manifest's media type (OCI or Docker schema 2; OCI when the
    /// manifest does not say).
    pub media_type: String,
    /// The image config.
    pub config: BlobRef,
    /// The layers, bottom first.
    pub layers: Vec<BlobRef>,
}

/// Reads an image manifest (not an index): its media type, config and
/// layers, every digest checked to be sha256 (so it can name a file).
pub fn image_blobs(bytes: &[u8]) -> Result<ImageBlobs, Cause> {
    let (media_type, kind) = classify(Some(OCI_MANIFEST), bytes)?;
    if kind != Kind::Image {
        return Err(Cause::Invalid {
            what: "manifest",
            detail: format!("{media_type} is an index, not an image manifest"),
        });
    }
    let manifest = parse_image(bytes)?;
    let blob = |d: &Descriptor| BlobRef {
        digest: d.digest.clone(),
        size: d.size,
    };
    Ok(ImageBlobs {
        media_type,
        config: blob(&manifest.config),
        layers: manifest.layers.iter().map(blob).collect(),
    })
}

/// A descriptor's digest must be sha256 (it becomes a file name).
fn check_descriptor(descriptor: &Descriptor, what: &'static str) -> Result<(), Cause> {
    parse_digest(&descriptor.digest)
        .map(|_| ())
        .map_err(|detail| Cause::Invalid { what, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn classifies() {
        let oci =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D}","size":1}},"layers":[]}}"#);
        assert_eq!(
            classify(Some(OCI_MANIFEST), oci.as_bytes()).unwrap().1,
            Kind::Image
        );
        assert_eq!(
            classify(
                Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
                br#"{"manifests":[]}"#
            )
            .unwrap()
            .1,
            Kind::Index
        );
        assert!(matches!(
            classify(Some(DOCKER_SCHEMA1_SIGNED), br#"{"schemaVersion":1}"#),
            Err(Cause::Schema1 { .. })
        ));
        assert!(matches!(
            classify(
                Some("application/json"),
                br#"{"schemaVersion":1,"fsLayers":[]}"#
            ),
            Err(Cause::Schema1 { .. })
        ));
        assert!(matches!(
            classify(Some("text/html"), b"{}"),
            Err(Cause::MediaType { .. })
        ));
        assert!(matches!(
            classify(None, b"<html>"),
            Err(Cause::Invalid { .. })
        ));
    }

    #[test]
    fn chooses_amd64() {
        let index = format!(
            r#"{{"manifests":[
            {{"digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"digest":"{D}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"digest":"{D}","size":3,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        assert_eq!(choose_platform(index.as_bytes()).unwrap().size, 2);
        let arm = format!(
            r#"{{"manifests":[{{"digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#
        );
        let err = choose_platform(arm.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("linux/arm64/v8, linux/arm/v7"), "{err}");
        let bad = r#"{"manifests":[{"digest":"sha256:../../x","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert!(matches!(
            choose_platform(bad.as_bytes()),
            Err(Cause::Invalid { .. })
        ));
    }

    #[test]
    fn image_blobs_lists_config_and_layers() {
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D}","size":3}},"layers":[{{"digest":"{D}","size":5}}]}}"#
        );
        let blobs = image_blobs(oci.as_bytes()).unwrap();
        assert_eq!(blobs.media_type, OCI_MANIFEST);
        assert_eq!(blobs.config.size, 3);
        assert_eq!(blobs.layers.len(), 1);
        let docker = oci.replacen('{', &format!(r#"{{"mediaType":"{DOCKER_MANIFEST}","#), 1);
        assert_eq!(
            image_blobs(docker.as_bytes()).unwrap().media_type,
            DOCKER_MANIFEST
        );
        let index = format!(r#"{{"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(image_blobs(index.as_bytes()).is_err());
        let bad = oci.replace(D, "sha256:../../x");
        assert!(image_blobs(bad.as_bytes()).is_err());
    }

    #[test]
    fn refuses_path_like_digests() {
        let m = r#"{"schemaVersion":2,"config":{"digest":"sha256:../x","size":1},"layers":[]}"#;
        assert!(parse_image(m.as_bytes()).is_err());
    }
}
