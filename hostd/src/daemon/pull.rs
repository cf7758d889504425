//! Pulls from registries into the image store: `hostd pull REF` and the
//! implicit pull of `run --pull missing|always`.
//!
//! The registry client ([`mkhost_registry`], shared with mkhost) downloads
//! into a staging directory on the store's file system ([`Store::incoming`])
//! as an OCI layout, verifying every blob while it streams and hard-linking
//! the blobs the store already has; the store then imports that layout like
//! any other, verifying it again, all-or-nothing. A failure or a killed
//! daemon leaves the store as it was (the staging directory goes with its
//! guard, or at the store's next open).

use std::path::PathBuf;
use std::sync::Mutex;

use mkhost_registry::{Client, ClientOptions, NameResolver, Progress, Reference};
use mkhost_shared::images::PullReport;
use mkhost_store::Store;

use crate::daemon::log::log;

/// Where registries' settings come from (daemon flags for now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// A PEM bundle of extra trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// A Docker `config.json` with credentials (`auths`).
    pub auth_file: Option<PathBuf>,
    /// Mirrors per registry (`docker.io` -> `mirror.lab:5000`), tried in
    /// order before the registry.
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
}

/// `host:port` to addresses with hostd's own resolver, reading the host's
/// `/etc/hosts` and `/etc/resolv.conf` at each call (DHCP rewrites them).
fn resolve_host(netloc: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
    let (host, port) = netloc
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{netloc:?} is not host:port"),
            )
        })?;
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let servers = crate::net::resolve::name_servers(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    Ok(crate::net::resolve::resolve(host, &hosts, &servers)?
        .into_iter()
        .map(|ip| std::net::SocketAddr::from((ip, port)))
        .collect())
}

/// The daemon's registry client and the pulls it runs.
pub struct Puller {
    client: Client,
    /// One pull at a time: two pulls of one image would download it twice.
    running: Mutex<()>,
}

impl Puller {
    /// A client with `options`; unreadable files are errors that name them.
    pub fn new(options: &RegistryOptions) -> Result<Puller, String> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
        };
        let ca_pem = match &options.ca_file {
            Some(path) => read(path, "registry CA bundle")?,
            None => Vec::new(),
        };
        let docker_config = match &options.auth_file {
            Some(path) if path.exists() => Some(read(path, "registry credentials")?),
            _ => None,
        };
        let client = Client::new(ClientOptions {
            insecure: options.insecure.clone(),
            ca_pem,
            docker_config,
            resolver: Some(NameResolver(std::sync::Arc::new(resolve_host))),
            mirrors: options.mirrors.clone(),
            ..ClientOptions::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(Puller {
            client,
            running: Mutex::new(()),
        })
    }

    /// Pulls `reference` into `store`; the image is named by the reference
    /// in its canonical form (which the store matches to `nginx:1.27`).
    pub fn pull(&self, store: &Store, reference: &str) -> Result<PullReport, String> {
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let name = parsed.canonical();
        let _one = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let staging = store.incoming().map_err(|e| e.to_string())?;
        log(&format!("pulling {name}"));
        let progress = |event: Progress| match event {
            Progress::Resolved {
                manifest_digest,
                layers,
                total_bytes,
            } => log(&format!(
                "pull {name}: {manifest_digest}, {layers} layers, {total_bytes} bytes"
            )),
            Progress::BlobDone { digest, reused } => log(&format!(
                "pull {name}: {digest} {}",
                if reused { "already present" } else { "done" }
            )),
            _ => {}
        };
        let pulled = self
            .client
            .pull_to_layout(
                &parsed,
                staging.path(),
                &|digest| store.blob_file(digest),
                &progress,
            )
            .map_err(|e| {
                log(&format!("pull {name} failed: {e}"));
                e.to_string()
            })?;
        let import = store
            .import_named(staging.path(), &name)
            .map_err(|e| format!("pull {name}: the store refused the image: {e}"))?;
        log(&format!(
            "pulled {name} ({}): {} bytes fetched, {} blobs present",
            pulled.manifest_digest, pulled.bytes_fetched, pulled.blobs_reused
        ));
        Ok(PullReport {
            reference: name,
            manifest_digest: pulled.manifest_digest,
            id: pulled.config_digest,
            layers: pulled.layers,
            bytes_fetched: pulled.bytes_fetched,
            blobs_reused: pulled.blobs_reused,
            import,
        })
    }
}
