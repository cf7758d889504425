//! The JSON documents of the OCI image spec and of `docker save`, as far as
//! the store reads them, and the image config it hands to the runtime.
//!
//! Unknown fields are ignored everywhere: images carry plenty of metadata
//! (history, annotations, healthchecks) that hostd does not need.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ImageConfig;

/// OCI image manifest media type.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image manifest (schema 2) media type.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI layer media types by compression.
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Annotation holding a tag or full reference of a manifest in an OCI index.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd and docker (>= 25) write with the full image name.
pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// True for the layer media types the store can unpack: plain, gzip or zstd
/// tar, OCI or docker spelling, distributable or not. The actual compression
/// is detected from the content, not trusted from here.
pub(crate) fn is_layer_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER_TAR
            | OCI_LAYER_GZIP
            | OCI_LAYER_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// `oci-layout` at the root of an OCI image layout.
#[derive(Debug, Deserialize)]
pub(crate) struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// A content descriptor: what a manifest or index points at.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// An OCI image index (also `index.json` of a layout) or docker manifest list.
#[derive(Debug, Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An OCI image manifest or docker schema 2 manifest.
#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An OCI image manifest as the store writes it for `docker save` archives,
/// which have no manifest of their own.
#[derive(Debug, Serialize)]
pub(crate) struct SynthManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: &'static str,
    pub config: SynthDescriptor,
    pub layers: Vec<SynthDescriptor>,
}

/// A descriptor the store writes.
#[derive(Debug, Serialize)]
pub(crate) struct SynthDescriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// One entry of a `docker save` `manifest.json`.
#[derive(Debug, Deserialize)]
pub(crate) struct DockerSaveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// The image config blob (OCI and docker spell it the same way).
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<RawConfig>,
    pub rootfs: RootFs,
}

/// `rootfs` of the image config.
#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `config` of the image config, as written (`null` allowed everywhere).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

impl From<RawConfig> for ImageConfig {
    fn from(raw: RawConfig) -> ImageConfig {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: raw.entrypoint,
            cmd: raw.cmd,
            env: raw.env.unwrap_or_default(),
            working_dir: non_empty(raw.working_dir),
            user: non_empty(raw.user),
            exposed_ports: raw.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: raw.volumes.unwrap_or_default().into_keys().collect(),
            labels: raw.labels.unwrap_or_default(),
            stop_signal: non_empty(raw.stop_signal),
        }
    }
}

/// This machine's architecture in OCI spelling (`amd64`, `arm64`, ...).
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_nulls_become_empty() {
        let cfg: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux",
                "config":{"Entrypoint":null,"Cmd":["sh"],"Env":null,"WorkingDir":"",
                          "ExposedPorts":{"80/tcp":{},"53/udp":{}},"Labels":null},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let c = ImageConfig::from(cfg.config.unwrap());
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.cmd, Some(vec!["sh".to_owned()]));
        assert!(c.env.is_empty());
        assert_eq!(c.working_dir, None);
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
    }
}
