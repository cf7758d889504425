//! hostd's control protocol: JSON lines over a root-only unix socket.
//!
//! A client connects to [`paths::CONTROL_SOCKET`](crate::paths::CONTROL_SOCKET),
//! writes one JSON object per line and reads one JSON object per line back:
//!
//! ```text
//! -> {"op":"status"}
//! <- {"ok":true,"version":"0.1.0","pid":57,"uptime_ms":1200,"containers":0}
//! -> {"op":"images"}
//! <- {"ok":true,"images":[{"id":"sha256:…","names":["hello:latest"],"created":null,"layers":1,"size":160,"unpacked_size":6}]}
//! -> {"op":"import","path":"/root/hello.tar"}
//! <- {"ok":true,"imported":{"images":[…],"blobs_added":3,"layers_added":1,"skipped":[],"xattrs_dropped":0}}
//! -> {"op":"nope"}
//! <- {"ok":false,"error":"invalid request: unknown variant `nope`, expected `status` at line 1 column 12"}
//! ```
//!
//! Requests are a [`Request`], answers a typed [`Response`]: the image
//! answers carry the report types of [`crate::images`], the container answers
//! [`Record`]s. This module owns the format and the client side ([`request`],
//! used by `hostd`'s commands and `init`'s readiness probe); the daemon's
//! server lives in hostd and depends on this module, never the other way.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::container::{ExecError, Record, RunRequest};
use crate::images::{
    GcReport, ImageInfo, ImageSummary, ImportReport, PullProgress, PullReport, Removed,
};
use crate::network::{NetworkSpec, PortMapping};

/// Longest request line the server accepts, in bytes (newline excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// Longest response line a client accepts, in bytes (newline excluded): image
/// lists and import reports grow with the store.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Client timeout for quick requests (status).
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Client timeout for requests that read the store (images, inspect_image).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Client timeout for requests that write the store (import, remove_image, gc):
/// they unpack or delete whole images and may wait for another writer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Errors of the client side: connecting, sending, reading the answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request could not be encoded (a path that is not UTF-8).
    #[error("cannot encode request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The client could not connect.
    #[error("cannot connect to {path}: {source}", path = path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The client could not send its request or read the answer.
    #[error("cannot talk to {path}: {source}", path = path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No answer within the timeout.
    #[error("no answer from {path} within {} ms", timeout.as_millis(), path = path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The daemon closed the connection without a complete answer.
    #[error("{path} closed the connection without answering", path = path.display())]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// The answer is not a valid response.
    #[error("invalid response from {path}: {source}", path = path.display())]
    BadResponse {
        /// The socket path.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// A request, tagged by `op`: `{"op":"status"}`. Unknown ops are errors; extra
/// fields next to `op` are ignored, so newer clients can add optional ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Report the daemon's version, pid and uptime.
    Status,
    /// List the images in the store.
    Images,
    /// Import every image of an OCI layout, `docker save` archive or skopeo
    /// `dir:` copy, or a root file system tar as a one-layer image.
    Import {
        /// Absolute path of the file or directory, as the daemon sees it.
        path: PathBuf,
        /// A name for the image: the root file system's, or one more for
        /// the one image of a layout or archive (several images: an error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Show one image: config and layers.
    InspectImage {
        /// A name, id or unique id prefix.
        image: String,
    },
    /// Untag a name, or delete an image given by id.
    RemoveImage {
        /// A name, id or unique id prefix.
        image: String,
    },
    /// Delete blobs and layers no image uses.
    Gc,
    /// Create and start a container from a store image; answers its id.
    Run(Box<RunRequest>),
    /// List containers.
    Ps,
    /// A container's log (timestamped lines).
    Logs {
        /// Name, id or unique id prefix.
        name: String,
    },
    /// SIGTERM, then SIGKILL after `timeout_secs` (default 10).
    Stop {
        /// Name, id or unique id prefix.
        name: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
    /// Start an exited container again (same root, log and id).
    Start {
        /// Name, id or unique id prefix.
        name: String,
    },
    /// Wait until the container has exited for good (not running, no
    /// restart due) or `timeout_ms` passed; answers its record either way.
    Wait {
        /// Name, id or unique id prefix.
        name: String,
        /// How long to wait, in milliseconds (at most [`MAX_WAIT_MS`]).
        timeout_ms: u64,
    },
    /// Remove a container; a running one only with `force`.
    Rm {
        /// Name, id or unique id prefix.
        name: String,
        /// Kill it first if running.
        #[serde(default)]
        force: bool,
    },
    /// Pulls an image from its registry into the store.
    Pull {
        /// The reference (`nginx:1.27`, `host:5000/a/b@sha256:…`).
        reference: String,
    },
    /// The pulls in progress (to draw their progress).
    PullProgress,
    /// Every container network.
    Networks,
    /// Creates a network.
    NetworkCreate(NetworkSpec),
    /// Removes a network no container uses.
    NetworkRm {
        /// Its name.
        name: String,
    },
    /// One network with its containers.
    NetworkInspect {
        /// Its name.
        name: String,
    },
    /// A container's published ports.
    Port {
        /// Container name or id.
        name: String,
    },
    /// Every named volume.
    Volumes,
    /// Creates a named volume (an existing one is answered as it is, as
    /// `docker volume create` does).
    VolumeCreate {
        /// Its name.
        name: String,
        /// Labels kept with it.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
    /// One named volume with the containers that use it.
    VolumeInspect {
        /// Its name.
        name: String,
    },
    /// Removes a named volume no container uses, with its data.
    VolumeRm {
        /// Its name.
        name: String,
    },
}

impl Request {
    /// How long a client should wait for the answer to this request.
    pub fn client_timeout(&self) -> Duration {
        match self {
            Request::Status => SHORT_TIMEOUT,
            Request::Images | Request::InspectImage { .. } => READ_TIMEOUT,
            Request::Import { .. } | Request::RemoveImage { .. } | Request::Gc => WRITE_TIMEOUT,
            Request::Ps | Request::Logs { .. } => READ_TIMEOUT,
            Request::Networks
            | Request::NetworkInspect { .. }
            | Request::Port { .. }
            | Request::Volumes
            | Request::VolumeInspect { .. }
            | Request::PullProgress => READ_TIMEOUT,
            // Removing a volume deletes its data, however large.
            Request::VolumeCreate { .. } | Request::VolumeRm { .. } => WRITE_TIMEOUT,
            Request::NetworkCreate(_) | Request::NetworkRm { .. } | Request::Pull { .. } => {
                WRITE_TIMEOUT
            }
            Request::Run(_) | Request::Rm { .. } | Request::Start { .. } => WRITE_TIMEOUT,
            Request::Stop { timeout_secs, .. } => READ_TIMEOUT.saturating_add(Duration::from_secs(
                timeout_secs.unwrap_or(10).min(MAX_STOP_TIMEOUT_SECS),
            )),
            Request::Wait { timeout_ms, .. } => {
                READ_TIMEOUT.saturating_add(Duration::from_millis((*timeout_ms).min(MAX_WAIT_MS)))
            }
        }
    }
}

/// The longest `stop` timeout (a day): SIGTERM, then SIGKILL at the latest
/// this many seconds later. Larger values are refused.
pub const MAX_STOP_TIMEOUT_SECS: u64 = 86_400;

/// Checks a `stop` timeout from outside.
pub fn check_stop_timeout(secs: u64) -> Result<u64, String> {
    if secs > MAX_STOP_TIMEOUT_SECS {
        return Err(format!(
            "stop timeout {secs} s is out of range (0 to {MAX_STOP_TIMEOUT_SECS}, a day)"
        ));
    }
    Ok(secs)
}

/// The longest [`Request::Wait`] the daemon honours in one request.
pub const MAX_WAIT_MS: u64 = 60_000;

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// hostd's version.
    pub version: String,
    /// hostd's process id (in its own pid namespace).
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Containers the daemon runs.
    pub containers: u64,
    /// Modules init loaded for devices that appeared after coldplug
    /// ([`crate::init_status`]; left out of the answer when empty).
    pub late_modules: Vec<String>,
    /// Containers attached to a network, addresses leased on the networks,
    /// and rules in hostd's nftables table (None without networks).
    pub network: Option<Box<NetworkCounts>>,
    /// The named volumes: how many, where, and whether they survive a
    /// reboot (None from daemons without volumes).
    pub volumes: Option<Box<VolumeStatus>>,
    /// Where the host's state lives: init's state disk report
    /// ([`crate::paths::STATE_REPORT`]); None from daemons that do not
    /// read it.
    pub state: Option<Box<crate::state_disk::StateReport>>,
    /// What bounds the number of containers on this host (None from
    /// daemons that do not say).
    pub limits: Option<Box<HostLimits>>,
    /// Secure Boot and PCR 11 as init found them
    /// ([`crate::paths::BOOT_SECURITY`]); None when init did not say (a
    /// daemon started by hand).
    pub boot_security: Option<Box<crate::boot_security::BootSecurity>>,
}

/// A count and the limit it runs into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// In use now.
    pub used: u64,
    /// The most allowed.
    pub limit: u64,
}

/// What bounds the number of containers on a host, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLimits {
    /// The daemon's open descriptors and its `RLIMIT_NOFILE`.
    pub daemon_files: Usage,
    /// The zygote's open descriptors and its `RLIMIT_NOFILE`.
    pub zygote_files: Usage,
    /// Descriptors a running container holds in the daemon (pidfd, stdout,
    /// stderr; one more with an open stdin).
    pub daemon_files_per_container: u64,
    /// Descriptors a running container holds in the zygote (stdout,
    /// stderr; one more with an open stdin).
    pub zygote_files_per_container: u64,
    /// Tasks on the host and the smaller of `kernel.pid_max` and
    /// `kernel.threads-max`.
    pub tasks: Usage,
    /// The smallest `user.max_*_namespaces` of the kinds a container makes.
    pub namespaces_limit: u64,
    /// `fs.inotify.max_user_instances`.
    pub inotify_instances: u64,
    /// `fs.inotify.max_user_watches`.
    pub inotify_watches: u64,
    /// `MemAvailable`, KiB.
    pub memory_available_kib: u64,
    /// Which containers get a memory cgroup of their own: `each` or
    /// `limited` (only those with a memory limit).
    #[serde(default)]
    pub memory_cgroups: String,
    /// Memory cgroups on the host now (`/proc/cgroups`).
    #[serde(default)]
    pub memory_cgroups_now: u64,
    /// About what the next container takes of the host's memory, KiB.
    #[serde(default)]
    pub next_container_kib: u64,
    /// About how many more containers fit before the first limit.
    pub room: u64,
    /// That first limit.
    pub bound_by: String,
    /// The daemon's `oom_score_adj`: [`DAEMON_OOM_SCORE_ADJ`] once it has
    /// protected itself, so that the kernel's OOM killer picks a container
    /// before the daemon that manages them all.
    #[serde(default)]
    pub oom_score_adj: i32,
}

/// The `oom_score_adj` the daemon (and the zygote it forks) gives itself,
/// dockerd's: containers set their own (0 unless `--oom-score-adj`).
pub const DAEMON_OOM_SCORE_ADJ: i32 = -500;

/// What `status` says about the named volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatus {
    /// Named volumes.
    pub count: u64,
    /// The directory they live in.
    pub root: String,
    /// The root's file system is not in RAM (tmpfs, ramfs): a state disk.
    pub persistent: bool,
    /// The root's file system type (`tmpfs`, `ext4`, ...), or why it is
    /// not known.
    pub filesystem: String,
}

/// A named volume as `volume ls` and `volume inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// The host directory holding its data.
    pub mountpoint: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Labels given at creation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The containers (any state) whose record names it.
    #[serde(default)]
    pub containers: Vec<String>,
}

/// What the daemon's networks hold, for `status` (and leak checks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCounts {
    /// Networks defined.
    pub networks: u64,
    /// Containers with a network namespace of hostd's.
    pub attached: u64,
    /// Addresses handed out (pools and DHCP leases).
    pub leases: u64,
    /// Rules in the `ip mkhost` nftables table.
    pub nft_rules: u64,
}

/// A network as `network ls` and `network inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The definition, with the subnet and gateway hostd chose filled in.
    pub spec: NetworkSpec,
    /// Where it was defined: `default`, `profile`, `host.toml` or `api`.
    pub origin: String,
    /// The containers on it: name and address.
    #[serde(default)]
    pub containers: Vec<NetworkMember>,
}

/// A container on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMember {
    /// Container name.
    pub name: String,
    /// Container id.
    pub id: String,
    /// Its address (CIDR form).
    pub address: String,
}

/// A response: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
///
/// Each answer sits under its own key in one flat object (see
/// `WireResponse`); a client knows which one it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireResponse", into = "WireResponse")]
pub enum Response {
    /// A successful status answer.
    Status(Status),
    /// `images`: the store's image list.
    Images(Vec<ImageSummary>),
    /// `imported`: what an import did.
    Imported(ImportReport),
    /// `image`: one image, inspected.
    Image(Box<ImageInfo>),
    /// `removed`: what removing an image did.
    Removed(Removed),
    /// `gc`: what a gc freed.
    Gc(GcReport),
    /// `id`: the id of a container `run` started.
    Started(String),
    /// `ps`: every container's record.
    Ps(Vec<Record>),
    /// `logs`: a container's log text.
    Logs(String),
    /// `container`: the record of the container `stop`, `start` or `rm` acted on.
    Container(Box<Record>),
    /// `networks`: every network (`network ls`, and one for create and inspect).
    Networks(Vec<NetworkInfo>),
    /// `ports`: a container's published ports.
    Ports(Vec<PortMapping>),
    /// `volume_list`: named volumes (`volume ls`, and one for create,
    /// inspect and rm).
    Volumes(Vec<VolumeInfo>),
    /// `pulled`: what a pull did.
    Pulled(Box<PullReport>),
    /// The pulls in progress.
    PullProgress(Vec<PullProgress>),
    /// The request failed; the message says why.
    Error(String),
    /// `run` failed because the container's command could not be started
    /// (`{"ok":false,"error":"...","exec_error":"not_found"}`).
    ExecFailed {
        /// Why, for a person.
        error: String,
        /// Which way it failed.
        cause: ExecError,
    },
}

/// The flat JSON shape of [`Response`]: `ok`, then the one key that holds
/// the answer (`ok` decides which fields matter).
#[derive(Default, Serialize, Deserialize)]
struct WireResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uptime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    containers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    late_modules: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<Box<NetworkCounts>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    volumes: Option<Box<VolumeStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<Box<crate::state_disk::StateReport>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<Box<HostLimits>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_security: Option<Box<crate::boot_security::BootSecurity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    volume_list: Option<Vec<VolumeInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    images: Option<Vec<ImageSummary>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported: Option<ImportReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<Box<ImageInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed: Option<Removed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gc: Option<GcReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ps: Option<Vec<Record>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container: Option<Box<Record>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    networks: Option<Vec<NetworkInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pulled: Option<Box<PullReport>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pulls: Option<Vec<PullProgress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec_error: Option<ExecError>,
}

impl From<Response> for WireResponse {
    fn from(response: Response) -> Self {
        let ok = WireResponse {
            ok: true,
            ..WireResponse::default()
        };
        match response {
            Response::Status(s) => WireResponse {
                version: Some(s.version),
                pid: Some(s.pid),
                uptime_ms: Some(s.uptime_ms),
                containers: Some(s.containers),
                late_modules: (!s.late_modules.is_empty()).then_some(s.late_modules),
                network: s.network,
                volumes: s.volumes,
                state: s.state,
                limits: s.limits,
                boot_security: s.boot_security,
                ..ok
            },
            Response::Images(v) => WireResponse {
                images: Some(v),
                ..ok
            },
            Response::Imported(v) => WireResponse {
                imported: Some(v),
                ..ok
            },
            Response::Image(v) => WireResponse {
                image: Some(v),
                ..ok
            },
            Response::Removed(v) => WireResponse {
                removed: Some(v),
                ..ok
            },
            Response::Gc(v) => WireResponse { gc: Some(v), ..ok },
            Response::Started(id) => WireResponse { id: Some(id), ..ok },
            Response::Ps(v) => WireResponse { ps: Some(v), ..ok },
            Response::Logs(text) => WireResponse {
                logs: Some(text),
                ..ok
            },
            Response::Container(v) => WireResponse {
                container: Some(v),
                ..ok
            },
            Response::Networks(v) => WireResponse {
                networks: Some(v),
                ..ok
            },
            Response::Ports(v) => WireResponse {
                ports: Some(v),
                ..ok
            },
            Response::Volumes(v) => WireResponse {
                volume_list: Some(v),
                ..ok
            },
            Response::Pulled(v) => WireResponse {
                pulled: Some(v),
                ..ok
            },
            Response::PullProgress(v) => WireResponse {
                pulls: Some(v),
                ..ok
            },
            Response::Error(error) => WireResponse {
                ok: false,
                error: Some(error),
                ..ok
            },
            Response::ExecFailed { error, cause } => WireResponse {
                ok: false,
                error: Some(error),
                exec_error: Some(cause),
                ..ok
            },
        }
    }
}

impl TryFrom<WireResponse> for Response {
    type Error = String;

    fn try_from(wire: WireResponse) -> Result<Self, String> {
        if !wire.ok {
            let error = wire
                .error
                .unwrap_or_else(|| "unspecified error".to_string());
            return Ok(match wire.exec_error {
                Some(cause) => Response::ExecFailed { error, cause },
                None => Response::Error(error),
            });
        }
        fn need<T>(value: Option<T>, name: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("missing field `{name}`"))
        }
        let answer = None
            .or(wire.images.map(Response::Images))
            .or(wire.imported.map(Response::Imported))
            .or(wire.image.map(Response::Image))
            .or(wire.removed.map(Response::Removed))
            .or(wire.gc.map(Response::Gc))
            .or(wire.id.map(Response::Started))
            .or(wire.ps.map(Response::Ps))
            .or(wire.logs.map(Response::Logs))
            .or(wire.container.map(Response::Container))
            .or(wire.networks.map(Response::Networks))
            .or(wire.ports.map(Response::Ports))
            .or(wire.volume_list.map(Response::Volumes))
            .or(wire.pulled.map(Response::Pulled))
            .or(wire.pulls.map(Response::PullProgress));
        if let Some(answer) = answer {
            return Ok(answer);
        }
        Ok(Response::Status(Status {
            version: need(wire.version, "version")?,
            pid: need(wire.pid, "pid")?,
            uptime_ms: need(wire.uptime_ms, "uptime_ms")?,
            containers: need(wire.containers, "containers")?,
            late_modules: wire.late_modules.unwrap_or_default(),
            network: wire.network,
            volumes: wire.volumes,
            state: wire.state,
            limits: wire.limits,
            boot_security: wire.boot_security,
        }))
    }
}

impl Response {
    /// The response as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        // The answer types serialise strings, integers and maps with string
        // keys only: encoding cannot fail.
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode response"}"#.to_string());
        line.push('\n');
        line
    }
}

/// Parses one request line; the error is the message the client gets back.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("empty request".to_string());
    }
    serde_json::from_str(text).map_err(|e| format!("invalid request: {e}"))
}

/// Sends `request` to the daemon at `path` and waits up to `timeout` for the
/// answer (connect, send and receive each get the timeout).
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    exchange(path, request, timeout)
}

/// Asks the daemon at `path` for its status: `Ok(Err(message))` when it
/// answers with an error. Decodes only a status answer, so a small client
/// (init's readiness probe) carries no decoder for the other answers.
pub fn status(path: &Path, timeout: Duration) -> Result<Result<Status, String>, ClientError> {
    let answer: StatusAnswer = exchange(path, &Request::Status, timeout)?;
    Ok(Status::try_from(answer))
}

/// The fields of a status answer (others are ignored).
#[derive(Deserialize)]
struct StatusAnswer {
    ok: bool,
    version: Option<String>,
    pid: Option<u32>,
    uptime_ms: Option<u64>,
    containers: Option<u64>,
    late_modules: Option<Vec<String>>,
    error: Option<String>,
}

impl TryFrom<StatusAnswer> for Status {
    type Error = String;

    fn try_from(answer: StatusAnswer) -> Result<Status, String> {
        match Response::try_from(WireResponse {
            ok: answer.ok,
            version: answer.version,
            pid: answer.pid,
            uptime_ms: answer.uptime_ms,
            containers: answer.containers,
            late_modules: answer.late_modules,
            error: answer.error,
            ..WireResponse::default()
        })? {
            Response::Status(status) => Ok(status),
            Response::Error(message) => Err(message),
            _ => Err("the answer is not a status".to_string()),
        }
    }
}

/// The error a daemon answers when every connection slot runs a request:
/// the request did not run, and may be sent again.
pub const BUSY: &str = "too many connections";

/// How long a client keeps asking a busy daemon again.
const BUSY_RETRY: Duration = Duration::from_secs(30);

/// Sends one request line and decodes the one answer line as `T`. A daemon
/// too busy to take the connection ([`BUSY`]) is asked again, with a
/// growing pause, for up to [`BUSY_RETRY`]: a hundred clients started at
/// once are all served, one slot after another.
fn exchange<T: serde::de::DeserializeOwned>(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ClientError> {
    /// Just enough of an answer to tell a busy daemon.
    #[derive(Deserialize)]
    struct Refusal {
        ok: bool,
        error: Option<String>,
    }
    let give_up = std::time::Instant::now() + BUSY_RETRY;
    let mut pause = Duration::from_millis(10);
    loop {
        let answer = exchange_once(path, request, timeout)?;
        let busy = serde_json::from_slice::<Refusal>(&answer)
            .is_ok_and(|r| !r.ok && r.error.as_deref() == Some(BUSY));
        if !busy || std::time::Instant::now() + pause > give_up {
            return serde_json::from_slice(&answer).map_err(|source| ClientError::BadResponse {
                path: path.to_path_buf(),
                source,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Sends one request line and answers the one answer line.
fn exchange_once(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let io_err = |source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ClientError::Timeout {
                path: path.to_path_buf(),
                timeout,
            }
        } else {
            ClientError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    // Only a path that is not UTF-8 cannot be encoded.
    let mut line = serde_json::to_vec(request).map_err(ClientError::Encode)?;
    line.push(b'\n');
    let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    // A daemon that refuses the connection (all slots busy) answers and
    // closes at once, maybe before the request is written: the write then
    // fails with EPIPE, but its answer is still there to read.
    if let Err(error) = (&stream).write_all(&line) {
        if !matches!(
            error.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Err(io_err(error));
        }
    }
    let limit = u64::try_from(MAX_RESPONSE).unwrap_or(u64::MAX) + 1;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .take(limit)
        .read_until(b'\n', &mut answer)
        .map_err(io_err)?;
    if !answer.ends_with(b"\n") {
        return Err(ClientError::Closed {
            path: path.to_path_buf(),
        });
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Limits, RestartPolicy};
    use serde_json::{json, Value};

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            uptime_ms: 7,
            containers: 0,
            late_modules: Vec::new(),
            network: None,
            volumes: None,
            state: None,
            limits: None,
            boot_security: None,
        }
    }

    /// A daemon that refuses a connection answers and closes without
    /// reading: a request too big for the socket's buffer then fails to
    /// send (EPIPE), yet the client still reads the daemon's answer; that
    /// answer is [`BUSY`], so the client asks again until served.
    #[test]
    fn a_busy_answer_before_the_request_is_sent_is_read_and_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let refusal = Response::Error(BUSY.into()).to_line();
                (&stream).write_all(refusal.as_bytes()).unwrap();
            }
            let (stream, _) = listener.accept().unwrap();
            let mut line = Vec::new();
            BufReader::new(&stream)
                .read_until(b'\n', &mut line)
                .unwrap();
            assert!(line.len() > 4 << 20);
            let answer = Response::Error("no container named x".into()).to_line();
            (&stream).write_all(answer.as_bytes()).unwrap();
        });
        let huge = Request::Logs {
            name: "x".repeat(4 << 20),
        };
        let answer = request(&path, &huge, Duration::from_secs(10)).unwrap();
        assert_eq!(answer, Response::Error("no container named x".into()));
        server.join().unwrap();
    }

    /// `response` encodes to `wire` (as JSON, key order aside) and back.
    fn round_trip(response: Response, wire: Value) {
        let line = response.to_line();
        assert!(line.ends_with('\n'));
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), wire);
        let back: Response = serde_json::from_value(wire).unwrap();
        assert_eq!(back, response);
    }

    fn record() -> Record {
        Record {
            id: "ab".into(),
            name: "web".into(),
            image: "busybox".into(),
            image_id: "sha256:cd".into(),
            command: vec!["sh".into()],
            pid: 7,
            created: "2026-01-01T00:00:00Z".into(),
            status: "running".into(),
            exit_code: None,
            oom_killed: false,
            restart_count: 0,
            restart: RestartPolicy::No,
            limits: Limits::default(),
            started: "2026-01-01T00:00:00Z".into(),
            finished: None,
            error: None,
            labels: Default::default(),
            auto_remove: false,
            network: None,
            volumes: Vec::new(),
            stopped_by_user: false,
            paused: false,
        }
    }

    #[test]
    fn volume_requests_and_answers_round_trip() {
        let info = VolumeInfo {
            name: "data".into(),
            mountpoint: "/var/lib/hostd-volumes/data/_data".into(),
            created: "2026-01-01T00:00:00Z".into(),
            labels: [("k".to_string(), "v".to_string())].into(),
            containers: vec!["web".into()],
        };
        round_trip(
            Response::Volumes(vec![info]),
            json!({"ok": true, "volume_list": [{"name": "data",
                   "mountpoint": "/var/lib/hostd-volumes/data/_data",
                   "created": "2026-01-01T00:00:00Z", "labels": {"k": "v"},
                   "containers": ["web"]}]}),
        );
        let mut with_volumes = status();
        with_volumes.volumes = Some(Box::new(VolumeStatus {
            count: 2,
            root: "/var/lib/hostd-volumes".into(),
            persistent: false,
            filesystem: "tmpfs".into(),
        }));
        round_trip(
            Response::Status(with_volumes.clone()),
            json!({"ok": true, "version": "0.1.0", "pid": 42, "uptime_ms": 7, "containers": 0,
                   "volumes": {"count": 2, "root": "/var/lib/hostd-volumes",
                               "persistent": false, "filesystem": "tmpfs"}}),
        );
        let mut with_state = with_volumes;
        with_state.volumes = None;
        with_state.state = Some(Box::new(crate::state_disk::StateReport {
            persistent: true,
            device: Some("/dev/vdb".into()),
            filesystem: Some("ext4".into()),
            mountpoint: Some("/var/lib/mkhost-state".into()),
            size: 1 << 30,
            formatted: true,
            degraded: false,
            note: None,
        }));
        round_trip(
            Response::Status(with_state),
            json!({"ok": true, "version": "0.1.0", "pid": 42, "uptime_ms": 7, "containers": 0,
                   "state": {"persistent": true, "device": "/dev/vdb", "filesystem": "ext4",
                             "mountpoint": "/var/lib/mkhost-state", "size": 1073741824,
                             "formatted": true}}),
        );
        for (request, line) in [
            (Request::Volumes, r#"{"op":"volumes"}"#),
            (
                Request::VolumeCreate {
                    name: "a".into(),
                    labels: BTreeMap::new(),
                },
                r#"{"op":"volume_create","name":"a"}"#,
            ),
            (
                Request::VolumeInspect { name: "a".into() },
                r#"{"op":"volume_inspect","name":"a"}"#,
            ),
            (
                Request::VolumeRm { name: "a".into() },
                r#"{"op":"volume_rm","name":"a"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&request).unwrap(), line);
            assert_eq!(parse_request(line.as_bytes()).unwrap(), request);
        }
        assert_eq!(
            Request::VolumeRm { name: "a".into() }.client_timeout(),
            WRITE_TIMEOUT
        );
    }

    #[test]
    fn network_answers_round_trip() {
        let spec = crate::network::NetworkSpec {
            name: "front".into(),
            subnet: Some("172.18.0.0/16".parse().unwrap()),
            gateway: Some("172.18.0.1".parse().unwrap()),
            ..Default::default()
        };
        round_trip(
            Response::Networks(vec![NetworkInfo {
                spec: spec.clone(),
                origin: "api".into(),
                containers: vec![NetworkMember {
                    name: "a".into(),
                    id: "ab".into(),
                    address: "172.18.0.2/16".into(),
                }],
            }]),
            json!({"ok": true, "networks": [{
                "spec": {"name": "front", "driver": "bridge", "subnet": "172.18.0.0/16",
                         "gateway": "172.18.0.1"},
                "origin": "api",
                "containers": [{"name": "a", "id": "ab", "address": "172.18.0.2/16"}]
            }]}),
        );
        round_trip(
            Response::Ports(crate::network::parse_publish("127.0.0.1:8080:80").unwrap()),
            json!({"ok": true, "ports": [{"host_ip": "127.0.0.1", "host_port": 8080,
                   "container_port": 80, "protocol": "tcp"}]}),
        );
        let line = serde_json::to_string(&Request::NetworkCreate(spec)).unwrap();
        assert_eq!(
            line,
            r#"{"op":"network_create","name":"front","driver":"bridge","subnet":"172.18.0.0/16","gateway":"172.18.0.1"}"#
        );
        assert!(
            parse_request(br#"{"op":"network_create","name":"x","subnet":"1.2.3.4/8"}"#)
                .unwrap_err()
                .contains("host bits are set")
        );
    }

    #[test]
    fn wire_format_matches_interface() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        assert_eq!(
            Response::Status(status()).to_line(),
            "{\"ok\":true,\"version\":\"0.1.0\",\"pid\":42,\"uptime_ms\":7,\"containers\":0}\n"
        );
        assert_eq!(
            Response::Error("boom".into()).to_line(),
            "{\"ok\":false,\"error\":\"boom\"}\n"
        );
        let mut late = status();
        late.late_modules = vec!["usb_storage".into(), "sd_mod".into()];
        round_trip(
            Response::Status(late),
            json!({"ok": true, "version": "0.1.0", "pid": 42, "uptime_ms": 7, "containers": 0,
                   "late_modules": ["usb_storage", "sd_mod"]}),
        );
        let back: Response = serde_json::from_str(
            r#"{"ok":true,"version":"1","pid":1,"uptime_ms":2,"containers":3,"future":1}"#,
        )
        .unwrap();
        assert!(matches!(back, Response::Status(Status { pid: 1, .. })));
        let err = serde_json::from_str::<Response>(r#"{"ok":true,"version":"1"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `pid`"), "{err}");
        let back: Response = serde_json::from_str(r#"{"ok":false}"#).unwrap();
        assert_eq!(back, Response::Error("unspecified error".into()));
        let failed = Response::ExecFailed {
            error: "no such file".into(),
            cause: ExecError::NotFound,
        };
        let line = failed.to_line();
        assert_eq!(
            line,
            "{\"ok\":false,\"error\":\"no such file\",\"exec_error\":\"not_found\"}\n"
        );
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), failed);
    }

    #[test]
    fn image_request_wire_formats() {
        let cases = [
            (Request::Images, json!({"op":"images"})),
            (
                Request::Import {
                    path: "/root/a.tar".into(),
                    reference: None,
                },
                json!({"op":"import","path":"/root/a.tar"}),
            ),
            (
                Request::Import {
                    path: "/root/rootfs.tar".into(),
                    reference: Some("app:1".into()),
                },
                json!({"op":"import","path":"/root/rootfs.tar","reference":"app:1"}),
            ),
            (
                Request::InspectImage { image: "a".into() },
                json!({"op":"inspect_image","image":"a"}),
            ),
            (
                Request::RemoveImage { image: "a".into() },
                json!({"op":"remove_image","image":"a"}),
            ),
            (Request::Gc, json!({"op":"gc"})),
        ];
        for (request, wire) in cases {
            assert_eq!(serde_json::to_value(&request).unwrap(), wire);
            assert_eq!(parse_request(wire.to_string().as_bytes()), Ok(request));
        }
    }

    #[test]
    fn image_response_wire_formats() {
        let summary = ImageSummary {
            id: "sha256:ab".into(),
            names: vec!["hello:latest".into()],
            created: None,
            layers: 1,
            size: 160,
            unpacked_size: 6,
        };
        round_trip(
            Response::Images(vec![summary]),
            json!({"ok":true,"images":[{"id":"sha256:ab","names":["hello:latest"],"created":null,"layers":1,"size":160,"unpacked_size":6}]}),
        );
        round_trip(
            Response::Gc(GcReport {
                blobs_removed: 3,
                layers_removed: 1,
                bytes_freed: 42,
            }),
            json!({"ok":true,"gc":{"blobs_removed":3,"layers_removed":1,"bytes_freed":42}}),
        );
        round_trip(
            Response::Removed(Removed {
                id: "sha256:ab".into(),
                untagged: vec![],
                deleted: true,
            }),
            json!({"ok":true,"removed":{"id":"sha256:ab","untagged":[],"deleted":true}}),
        );
        round_trip(
            Response::Imported(ImportReport::default()),
            json!({"ok":true,"imported":{"images":[],"blobs_added":0,"layers_added":0,"skipped":[],"xattrs_dropped":0}}),
        );
        // A wrong shape is an error, not a silently different answer.
        assert!(serde_json::from_str::<Response>(r#"{"ok":true,"images":{}}"#).is_err());
        assert!(serde_json::from_str::<Response>(r#"{"ok":true,"gc":[]}"#).is_err());
        assert!(serde_json::from_str::<Response>(r#"{"ok":true,"image":{"id":"x"}}"#).is_err());
        // A store error is an ordinary error answer.
        let back: Response =
            serde_json::from_str(r#"{"ok":false,"error":"no image named \"x\""}"#).unwrap();
        assert_eq!(back, Response::Error("no image named \"x\"".into()));
    }

    #[test]
    fn client_timeouts_of_huge_values_do_not_overflow() {
        let stop = Request::Stop {
            name: "x".into(),
            timeout_secs: Some(u64::MAX),
        };
        assert!(stop.client_timeout() < Duration::from_secs(2 * MAX_STOP_TIMEOUT_SECS));
        let wait = Request::Wait {
            name: "x".into(),
            timeout_ms: u64::MAX,
        };
        assert!(wait.client_timeout() <= READ_TIMEOUT + Duration::from_millis(MAX_WAIT_MS));
        assert!(check_stop_timeout(u64::MAX)
            .unwrap_err()
            .contains("out of range"));
        assert_eq!(check_stop_timeout(10), Ok(10));
    }

    #[test]
    fn container_wire_formats() {
        let run = parse_request(
            br#"{"op":"run","image":"busybox","name":"web","command":["sh"],"env":["A=1"]}"#,
        )
        .unwrap();
        assert_eq!(
            run,
            Request::Run(Box::new(RunRequest {
                image: "busybox".into(),
                name: Some("web".into()),
                command: vec!["sh".into()],
                env: vec!["A=1".into()],
                ..Default::default()
            }))
        );
        assert_eq!(
            parse_request(br#"{"op":"rm","name":"web"}"#),
            Ok(Request::Rm {
                name: "web".into(),
                force: false
            })
        );
        assert_eq!(parse_request(br#"{"op":"ps"}"#), Ok(Request::Ps));
        round_trip(
            Response::Started("abcd".into()),
            json!({"ok":true,"id":"abcd"}),
        );
        round_trip(Response::Ps(vec![]), json!({"ok":true,"ps":[]}));
        round_trip(
            Response::Logs("x\n".into()),
            json!({"ok":true,"logs":"x\n"}),
        );
        let wire = json!({"ok":true,"container":serde_json::to_value(record()).unwrap()});
        assert_eq!(wire["container"]["restart"], "no");
        round_trip(Response::Container(Box::new(record())), wire);
    }

    #[test]
    fn parse_request_errors_are_messages() {
        assert_eq!(parse_request(b"{\"op\":\"status\"}\n"), Ok(Request::Status));
        assert!(parse_request(b"{\"op\":\"nope\"}")
            .unwrap_err()
            .contains("unknown variant `nope`"));
        assert_eq!(
            parse_request(b"{\"op\":\"status\",\"x\":1}"),
            Ok(Request::Status)
        );
        assert!(parse_request(b"{}")
            .unwrap_err()
            .contains("missing field `op`"));
        assert_eq!(parse_request(b"  \n").unwrap_err(), "empty request");
        assert_eq!(parse_request(b"\xff").unwrap_err(), "request is not UTF-8");
    }

    #[test]
    fn status_answers_decode_alone() {
        let decode =
            |line: &str| Status::try_from(serde_json::from_str::<StatusAnswer>(line).unwrap());
        assert_eq!(
            decode(r#"{"ok":true,"version":"0.1.0","pid":42,"uptime_ms":7,"containers":0,"x":1}"#),
            Ok(status())
        );
        assert_eq!(
            decode(r#"{"ok":false,"error":"busy"}"#),
            Err("busy".to_string())
        );
        assert_eq!(
            decode(r#"{"ok":true,"version":"1"}"#),
            Err("missing field `pid`".to_string())
        );
        // Another answer is not mistaken for a status.
        assert!(
            serde_json::from_str::<StatusAnswer>(r#"{"ok":true,"ps":[]}"#)
                .map(Status::try_from)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn client_reports_missing_daemon_and_timeout() {
        let dir = std::env::temp_dir().join(format!("mkhost-shared-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("none.sock");
        let err = request(&path, &Request::Status, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");

        // A listener that never answers.
        let silent = dir.join("silent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        let err = request(&silent, &Request::Status, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
