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

use mkhost_registry::{Client, ClientOptions, Credentials, NameResolver, Progress, Reference};
use mkhost_shared::container::{PullPolicy, RunRequest};
use mkhost_shared::images::{BlobProgress, BlobState, PullProgress, PullReport};
use mkhost_shared::registries::RegistrySettings;
use mkhost_store::Store;

use crate::log::log;

/// Where registries' settings come from: the file init writes from the
/// image's and host.toml's `[registries]` ([`mkhost_shared::paths::REGISTRIES`]),
/// and daemon flags, which add to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// A [`RegistrySettings`] JSON file (`--registries`); a missing file
    /// is no settings.
    pub settings_file: Option<PathBuf>,
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

/// The settings file's contents: none when it is missing.
fn read_settings(path: Option<&PathBuf>) -> Result<RegistrySettings, String> {
    let Some(path) = path else {
        return Ok(RegistrySettings::default());
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RegistrySettings::default())
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let settings: RegistrySettings =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    settings
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(settings)
}

/// One Docker `config.json` from two: `auths` of `over` win per registry.
fn merge_docker_configs(base: Option<Vec<u8>>, over: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let (Some(base), Some(over)) = (&base, &over) else {
        return over.or(base);
    };
    let parse = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let (Some(mut merged), Some(top)) = (parse(base), parse(over)) else {
        // An unreadable file: the client reports it; keep it as given.
        return Some(base.clone());
    };
    if let (Some(into), Some(from)) = (
        merged
            .as_object_mut()
            .map(|m| m.entry("auths").or_insert_with(|| serde_json::json!({}))),
        top.get("auths").and_then(|a| a.as_object()),
    ) {
        if let Some(into) = into.as_object_mut() {
            for (registry, auth) in from {
                into.insert(registry.clone(), auth.clone());
            }
        }
    }
    serde_json::to_vec(&merged).ok()
}

/// The client options of `options`: the settings file, then the flags.
fn client_options(options: &RegistryOptions) -> Result<ClientOptions, String> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
    };
    let settings = read_settings(options.settings_file.as_ref())?;
    let mut ca_pem = settings.ca.clone().unwrap_or_default().into_bytes();
    if let Some(path) = &options.ca_file {
        ca_pem.push(b'\n');
        ca_pem.extend(read(path, "registry CA bundle")?);
    }
    let auth_file = match &options.auth_file {
        Some(path) if path.exists() => Some(read(path, "registry credentials")?),
        _ => None,
    };
    let mut insecure = settings.insecure.clone();
    insecure.extend(options.insecure.iter().cloned());
    let mut mirrors = settings.mirrors.clone();
    mirrors.extend(options.mirrors.clone());
    Ok(ClientOptions {
        insecure,
        ca_pem,
        docker_config: merge_docker_configs(auth_file, settings.docker_config()),
        resolver: Some(NameResolver(std::sync::Arc::new(resolve_host))),
        mirrors,
        ..ClientOptions::default()
    })
}

/// The daemon's registry client and the pulls it runs.
pub struct Puller {
    client: Client,
    /// One pull at a time: two pulls of one image would download it twice.
    running: Mutex<()>,
    /// The pull under way or the last one, for `hostd pull`'s progress.
    progress: Mutex<Option<PullProgress>>,
}

impl Puller {
    /// A client with `options`; unreadable or bad files are errors that
    /// name them.
    pub fn new(options: &RegistryOptions) -> Result<Puller, String> {
        let client = Client::new(client_options(options)?).map_err(|e| e.to_string())?;
        Ok(Puller {
            client,
            running: Mutex::new(()),
            progress: Mutex::new(None),
        })
    }

    /// The pull under way, or the last one (`finished`).
    pub fn progress(&self) -> Vec<PullProgress> {
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.iter().cloned().collect()
    }

    /// Notes `event` of the pull under way.
    fn track(&self, event: &Progress) {
        let mut guard = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pull) = guard.as_mut() else {
            return;
        };
        let blob = |pull: &mut PullProgress, digest: &str| -> usize {
            match pull.blobs.iter().position(|b| b.digest == digest) {
                Some(i) => i,
                None => {
                    pull.blobs.push(BlobProgress {
                        digest: digest.to_string(),
                        size: 0,
                        done: 0,
                        state: BlobState::Downloading,
                    });
                    pull.blobs.len() - 1
                }
            }
        };
        match event {
            Progress::Resolved {
                manifest_digest,
                total_bytes,
                ..
            } => {
                pull.manifest_digest = Some(manifest_digest.clone());
                pull.total_bytes = *total_bytes;
            }
            Progress::BlobStarted { digest, size } => {
                let i = blob(pull, digest);
                pull.blobs[i].size = *size;
            }
            Progress::BlobBytes { digest, done, size } => {
                let i = blob(pull, digest);
                pull.blobs[i].size = *size;
                pull.blobs[i].done = *done;
            }
            Progress::BlobDone { digest, reused } => {
                let i = blob(pull, digest);
                let b = &mut pull.blobs[i];
                if *reused {
                    b.state = BlobState::Present;
                } else {
                    b.state = BlobState::Done;
                    b.done = b.size;
                }
            }
        }
    }

    /// Makes sure `run`'s image is in `store` as its pull policy says:
    /// pulled always, when missing (the store's own error comes first when
    /// that pull fails), or never.
    pub fn ensure_image(&self, store: &Store, run: &RunRequest) -> Result<(), String> {
        match run.pull {
            PullPolicy::Never => Ok(()),
            PullPolicy::Always => self.pull(store, &run.image).map(drop),
            PullPolicy::Missing => match store.inspect(&run.image) {
                Ok(_) => Ok(()),
                Err(missing) => self
                    .pull(store, &run.image)
                    .map(drop)
                    .map_err(|e| format!("{missing}; pulling it failed: {e}")),
            },
        }
    }

    /// Pulls `reference` into `store`; the image is named by the reference
    /// in its canonical form (which the store matches to `nginx:1.27`).
    pub fn pull(&self, store: &Store, reference: &str) -> Result<PullReport, String> {
        self.pull_as(store, reference, None)
    }

    /// [`Puller::pull`] with `credentials` for the reference's registry
    /// instead of the host's (a Docker API client's `X-Registry-Auth`),
    /// used for this pull only.
    pub fn pull_as(
        &self,
        store: &Store,
        reference: &str,
        credentials: Option<Credentials>,
    ) -> Result<PullReport, String> {
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let given;
        let client = match credentials {
            Some(credentials) => {
                given = self.client.with_credentials(&parsed.registry, credentials);
                &given
            }
            None => &self.client,
        };
        let name = parsed.canonical();
        let _one = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let staging = store.incoming().map_err(|e| e.to_string())?;
        log(&format!("pulling {name}"));
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(PullProgress {
            reference: name.clone(),
            ..PullProgress::default()
        });
        let _done = FinishOnDrop(&self.progress);
        let progress = |event: Progress| {
            self.track(&event);
            log_event(&name, event)
        };
        let pulled = client
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

/// Marks the progress finished when the pull ends, however it ends.
struct FinishOnDrop<'a>(&'a Mutex<Option<PullProgress>>);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pull) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            pull.finished = true;
        }
    }
}

/// The daemon log's line for `event` of the pull of `name`, if any.
fn log_event(name: &str, event: Progress) {
    match event {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_file_and_flags_combine() {
        let dir = tempfile::tempdir().unwrap();
        let settings = dir.path().join("registries.json");
        std::fs::write(
            &settings,
            r#"{"insecure":["lab:5000"],"mirrors":{"docker.io":["m1"]},
                "auths":{"lab:5000":{"username":"ops","password":"pw"}}}"#,
        )
        .unwrap();
        let auth = dir.path().join("config.json");
        std::fs::write(
            &auth,
            r#"{"auths":{"lab:5000":{"auth":"b2xkOm9sZA=="},"other":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        let options = RegistryOptions {
            settings_file: Some(settings.clone()),
            insecure: vec!["flag:5000".into()],
            auth_file: Some(auth),
            ..Default::default()
        };
        let client = client_options(&options).unwrap();
        assert_eq!(client.insecure, ["lab:5000", "flag:5000"]);
        assert_eq!(client.mirrors["docker.io"], ["m1"]);
        let config: serde_json::Value =
            serde_json::from_slice(&client.docker_config.unwrap()).unwrap();
        assert_eq!(config["auths"]["lab:5000"]["auth"], "b3BzOnB3");
        assert_eq!(config["auths"]["other"]["auth"], "eDp5");

        std::fs::write(&settings, r#"{"insecure":["http://x"]}"#).unwrap();
        let e = client_options(&options).unwrap_err();
        assert!(
            e.contains("registries.json") && e.contains("insecure[0]"),
            "{e}"
        );
        std::fs::remove_file(&settings).unwrap();
        assert_eq!(client_options(&options).unwrap().insecure, ["flag:5000"]);
    }

    #[test]
    fn progress_follows_the_events() {
        let puller = Puller::new(&RegistryOptions::default()).unwrap();
        assert!(puller.progress().is_empty());
        *puller.progress.lock().unwrap() = Some(PullProgress {
            reference: "r".into(),
            ..Default::default()
        });
        for event in [
            Progress::Resolved {
                manifest_digest: "sha256:m".into(),
                layers: 2,
                total_bytes: 30,
            },
            Progress::BlobDone {
                digest: "sha256:a".into(),
                reused: true,
            },
            Progress::BlobStarted {
                digest: "sha256:b".into(),
                size: 20,
            },
            Progress::BlobBytes {
                digest: "sha256:b".into(),
                done: 5,
                size: 20,
            },
        ] {
            puller.track(&event);
        }
        let now = &puller.progress()[0];
        assert_eq!(now.total_bytes, 30);
        assert_eq!(now.blobs[0].state, BlobState::Present);
        assert_eq!(
            (now.blobs[1].done, now.blobs[1].state),
            (5, BlobState::Downloading)
        );
        puller.track(&Progress::BlobDone {
            digest: "sha256:b".into(),
            reused: false,
        });
        assert_eq!(puller.progress()[0].blobs[1].done, 20);
    }
}
