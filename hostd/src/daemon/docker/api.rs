//! The Docker API's endpoints, each mapped onto the daemon's [`Handler`]:
//! the same store, containers, networks and registries as the control
//! socket, so a container started through one door shows in the other.
//! Blocking work runs on tokio's blocking threads; waits and streams are
//! async and end when their client goes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::archive;
use super::create;
use super::error::ApiError;
use super::resources;
use super::route::{self, flag, number, ContainerOp, Query, Route, API_VERSION, MIN_API_VERSION};
use super::stats;
use super::stream::{self, ChannelBody};
use super::views;
use crate::backend::{CreateSpec, Sample};
use crate::daemon::containers::{Manager, OutputLine, Stream, STATUS_CREATED};
use crate::daemon::handler::Handler;
use crate::log::log;
use mkhost_registry::Credentials;
use mkhost_shared::control::{Request as ControlRequest, Response as ControlResponse};
use mkhost_store::{Store, StoreError};

/// An answer's body.
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// Largest JSON body (a container config is a few KiB).
pub const MAX_JSON_BODY: usize = 1 << 20;
/// Largest image archive `docker load` takes.
pub const MAX_LOAD_BODY: u64 = 16 << 30;
/// How long a client may take to send a JSON body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// How often waits look at their container when nothing woke them.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Serves the Docker API for one daemon.
pub struct Api {
    handler: Arc<Handler>,
}

pub(super) type Answer = Result<Response<ApiBody>, ApiError>;

fn full(bytes: impl Into<Bytes>) -> ApiBody {
    Full::new(bytes.into()).boxed()
}

pub(super) fn empty() -> ApiBody {
    full(Bytes::new())
}

pub(super) fn json_answer(status: StatusCode, value: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(value).unwrap_or_default()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn no_content() -> Answer {
    status_only(StatusCode::NO_CONTENT)
}

pub(super) fn status_only(status: StatusCode) -> Answer {
    Response::builder()
        .status(status)
        .body(empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A streamed answer of content type `kind`.
pub(super) fn streamed(kind: &str, body: ChannelBody) -> Answer {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, kind)
        .body(body.boxed())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `value` as one JSON line of a streamed answer, ended by `end`.
fn json_line(value: &Value, end: &[u8]) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.extend_from_slice(end);
    Bytes::from(bytes)
}

/// The answer for an error.
pub fn error_response(error: &ApiError) -> Response<ApiBody> {
    let mut response = Response::new(full(error.body()));
    *response.status_mut() =
        StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Runs blocking `work` off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
}

/// Reads a whole JSON body of at most [`MAX_JSON_BODY`] bytes.
pub(super) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = Limited::new(body, MAX_JSON_BODY);
    match tokio::time::timeout(BODY_DEADLINE, limited.collect()).await {
        Err(_) => Err(ApiError::bad_request(format!(
            "the request body did not arrive within {} s",
            BODY_DEADLINE.as_secs()
        ))),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read the request body (at most {MAX_JSON_BODY} bytes): {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Most of a refused upload read away before the answer (what is left
/// after it, or after [`BODY_DEADLINE`], is dropped with the connection).
const MAX_DRAIN: usize = 64 << 20;

/// Reads and drops a request body, at most [`MAX_DRAIN`] bytes for at
/// most [`BODY_DEADLINE`].
async fn drain_body(body: Incoming) {
    let drain = async {
        let mut body = body;
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > MAX_DRAIN {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(BODY_DEADLINE, drain).await;
}

/// A store error as Docker would answer it.
fn store_error(error: StoreError, reference: &str) -> ApiError {
    match error {
        StoreError::NotFound { .. } => ApiError::not_found(format!("No such image: {reference}")),
        StoreError::Ambiguous { .. } => ApiError::bad_request(error.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

impl Api {
    /// The API over `handler`.
    pub fn new(handler: Arc<Handler>) -> Self {
        Api { handler }
    }

    pub(super) fn manager(&self) -> Result<Arc<Manager>, ApiError> {
        self.handler
            .containers
            .clone()
            .ok_or_else(|| ApiError::internal("containers are not available on this daemon"))
    }

    fn store(&self) -> Result<Store, ApiError> {
        self.handler
            .store()
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// A manager error about container `name`: 404 when it does not exist.
    pub(super) fn container_error(&self, name: &str, message: String) -> ApiError {
        match self.manager().map(|m| m.record(name)) {
            Ok(Err(_)) if !message.contains("ambiguous") => {
                ApiError::not_found(format!("No such container: {name}"))
            }
            _ => ApiError::bad_request(message),
        }
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ApiBody> {
        let method = request.method().as_str().to_string();
        let path = request.uri().path().to_string();
        let answer = self.dispatch(request).await;
        let mut response = answer.unwrap_or_else(|e| {
            if e.status >= 500 && e.status != 501 {
                log(&format!("docker api: {method} {path}: {}", e.message));
            }
            error_response(&e)
        });
        let headers = response.headers_mut();
        for (name, value) in [
            ("api-version", API_VERSION),
            ("docker-experimental", "false"),
            ("ostype", "linux"),
            (
                "server",
                concat!(
                    "Docker/mkhost-hostd-",
                    env!("CARGO_PKG_VERSION"),
                    " (linux)"
                ),
            ),
        ] {
            headers.insert(name, header::HeaderValue::from_static(value));
        }
        response
    }

    async fn dispatch(self: &Arc<Self>, request: Request<Incoming>) -> Answer {
        let (_version, path) = route::split_version(request.uri().path())?;
        let route = route::route(request.method().as_str(), path)?;
        let query = route::parse_query(request.uri().query().unwrap_or(""))?;
        match route {
            Route::Ping => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
                .header(header::PRAGMA, "no-cache")
                .body(if request.method() == hyper::Method::HEAD {
                    empty()
                } else {
                    full("OK")
                })
                .map_err(|e| ApiError::internal(e.to_string())),
            Route::Version => json_answer(StatusCode::OK, &self.version()),
            Route::Info => {
                let api = Arc::clone(self);
                let info = blocking(move || Ok(api.info())).await?;
                json_answer(StatusCode::OK, &info)
            }
            Route::Images => self.images().await,
            Route::ImageInspect(name) => self.image_inspect(name, false).await,
            Route::ImageHistory(name) => self.image_inspect(name, true).await,
            Route::ImageRemove(name) => self.image_remove(name).await,
            Route::ImageCreate => self.image_pull(&request, &query).await,
            Route::ImageLoad => self.image_load(request, &query).await,
            Route::ImagePrune => self.image_prune().await,
            Route::ImageTag(name) => self.image_tag(name, &query).await,
            Route::Containers => self.containers(&query).await,
            Route::ContainerCreate => {
                let body = read_body(request.into_body()).await?;
                self.create(body, &query).await
            }
            Route::ContainerPrune => self.container_prune().await,
            Route::Container(id, ContainerOp::Attach) => self.attach(request, id, &query).await,
            Route::Container(id, ContainerOp::Resize) => self.container_resize(id, &query).await,
            Route::ExecCreate(id) => self.exec_create(request, id).await,
            Route::Exec(id, op) => self.exec(request, id, op, &query).await,
            Route::Container(id, ContainerOp::ArchiveStat) => {
                self.archive_stat(id, &query, false).await
            }
            Route::Container(id, ContainerOp::ArchiveGet) => {
                self.archive_stat(id, &query, true).await
            }
            Route::Container(id, ContainerOp::ArchivePut) => {
                self.archive_put(request, id, &query).await
            }
            Route::Container(id, op) => self.container_op(id, op, &query).await,
            Route::Networks
            | Route::NetworkInspect(_)
            | Route::NetworkRemove(_)
            | Route::NetworkPrune
            | Route::Volumes
            | Route::VolumeInspect(_)
            | Route::VolumeRemove(_)
            | Route::VolumePrune => self.resource(route, &query, Bytes::new()).await,
            Route::NetworkCreate | Route::VolumeCreate => {
                let body = read_body(request.into_body()).await?;
                self.resource(route, &query, body).await
            }
            Route::Events => self.events(&query),
            Route::SystemDf => self.system_df().await,
            Route::Unsupported(what) => Err(ApiError::unsupported(what)),
        }
    }

    /// `GET /events`: the kept events from `since`, then live ones until
    /// `until` (or for ever), filtered by `type`, `event`, `container`,
    /// `image` and `label`, one JSON object per line.
    fn events(self: &Arc<Self>, query: &Query) -> Answer {
        let filters = views::parse_filters(query.get("filters")).map_err(ApiError::bad_request)?;
        for key in filters.keys() {
            if !matches!(
                key.as_str(),
                "type" | "event" | "container" | "image" | "label"
            ) {
                return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
            }
        }
        let nanos = |key: &str| -> Result<Option<u128>, ApiError> {
            Ok(time_bound(query, key)?.map(|s| (s.max(0.0) * 1e9) as u128))
        };
        let (since, until) = (nanos("since")?, nanos("until")?);
        let manager = self.manager()?;
        let (past, mut live) = manager.events().listen(since.or(until.map(|_| 0)));
        let (sender, body) = ChannelBody::new(64);
        let keep = move |e: &crate::daemon::events::Event| {
            let any = |key: &str, test: &dyn Fn(&str) -> bool| {
                filters
                    .get(key)
                    .is_none_or(|v| v.is_empty() || v.iter().any(|x| test(x)))
            };
            let name = e.attributes.get("name").map(String::as_str).unwrap_or("");
            let image = e.attributes.get("image").map(String::as_str).unwrap_or("");
            any("type", &|v| v == e.kind)
                // `exec_start` matches `exec_start: sh -c …`, as with dockerd.
                && any("event", &|v| {
                    v == e.action || e.action.split_once(": ").is_some_and(|(a, _)| a == v)
                })
                && any("container", &|v| {
                    e.kind == "container" && (e.id.starts_with(v) || v == name)
                })
                && any("image", &|v| v == image || (e.kind == "image" && v == e.id))
                && any("label", &|v| match v.split_once('=') {
                    Some((k, val)) => e.attributes.get(k).is_some_and(|x| x == val),
                    None => e.attributes.contains_key(v),
                })
        };
        let line = |e: &crate::daemon::events::Event| {
            let secs = (e.time_nano / 1_000_000_000) as u64;
            let mut value = json!({
                "Type": e.kind,
                "Action": e.action,
                "Actor": { "ID": e.id, "Attributes": e.attributes },
                "scope": "local",
                "time": secs,
                "timeNano": e.time_nano as u64,
            });
            if e.kind == "container" {
                value["status"] = Value::from(e.action.clone());
                value["id"] = Value::from(e.id.clone());
                value["from"] = Value::from(e.attributes.get("image").cloned().unwrap_or_default());
            }
            json_line(&value, b"\n")
        };
        tokio::spawn(async move {
            let past_until =
                |e: &crate::daemon::events::Event| until.is_none_or(|u| e.time_nano <= u);
            for event in past.iter().filter(|e| keep(e) && past_until(e)) {
                if sender.send(line(event)).await.is_err() {
                    return;
                }
            }
            let deadline = until.map(|u| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                Duration::from_nanos(u64::try_from(u.saturating_sub(now)).unwrap_or(u64::MAX))
            });
            let stop = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(86_400 * 365)));
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    received = live.recv() => match received {
                        Ok(event) if keep(&event) => {
                            if sender.send(line(&event)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        // A listener that fell RECENT events behind skips them.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = &mut stop => return,
                    () = sender.closed() => return,
                }
            }
        });
        streamed("application/json", body)
    }

    /// Networks and volumes, through the daemon's control requests.
    async fn resource(self: &Arc<Self>, route: Route, query: &Query, body: Bytes) -> Answer {
        let api = Arc::clone(self);
        let filters = views::parse_filters(query.get("filters")).map_err(ApiError::bad_request)?;
        blocking(move || {
            let handle = |request: ControlRequest| api.handler.handle(&request);
            let networks = |response: ControlResponse| match response {
                ControlResponse::Networks(list) => Ok(list),
                other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
            };
            let volumes = |response: ControlResponse| match response {
                ControlResponse::Volumes(list) => Ok(list),
                other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
            };
            let by_name = |names: Option<&Vec<String>>, name: &str| {
                names.is_none_or(|n| n.is_empty() || n.iter().any(|w| name.contains(w.as_str())))
            };
            match route {
                Route::Networks => {
                    let list = networks(handle(ControlRequest::Networks))?;
                    let mut rows: Vec<Value> = list
                        .iter()
                        .filter(|n| by_name(filters.get("name"), &n.spec.name))
                        .map(resources::network_view)
                        .collect();
                    rows.extend(resources::pseudo_networks().into_iter().filter(|n| {
                        by_name(filters.get("name"), n["Name"].as_str().unwrap_or(""))
                    }));
                    json_answer(StatusCode::OK, &Value::Array(rows))
                }
                Route::NetworkInspect(name) => {
                    if let Some(pseudo) = resources::pseudo_networks()
                        .into_iter()
                        .find(|n| n["Name"] == name.as_str())
                    {
                        return json_answer(StatusCode::OK, &pseudo);
                    }
                    let answer = resources::answer(
                        handle(ControlRequest::NetworkInspect { name: name.clone() }),
                        "network",
                        &name,
                    )?;
                    let list = networks(answer)?;
                    let info = list
                        .first()
                        .ok_or_else(|| ApiError::not_found(format!("network {name} not found")))?;
                    json_answer(StatusCode::OK, &resources::network_view(info))
                }
                Route::NetworkCreate => {
                    let spec = resources::network_spec(&body)?;
                    let name = spec.name.clone();
                    let existing = networks(handle(ControlRequest::Networks))?;
                    if existing.iter().any(|n| n.spec.name == name)
                        || [
                            mkhost_shared::network::MODE_HOST,
                            mkhost_shared::network::MODE_NONE,
                        ]
                        .contains(&name.as_str())
                    {
                        return Err(ApiError::conflict(format!(
                            "network with name {name} already exists"
                        )));
                    }
                    resources::answer(
                        handle(ControlRequest::NetworkCreate(spec)),
                        "network",
                        &name,
                    )?;
                    json_answer(StatusCode::CREATED, &json!({ "Id": name, "Warning": "" }))
                }
                Route::NetworkRemove(name) => {
                    resources::answer(
                        handle(ControlRequest::NetworkRm { name: name.clone() }),
                        "network",
                        &name,
                    )?;
                    no_content()
                }
                Route::NetworkPrune => {
                    let mut deleted = Vec::new();
                    for info in networks(handle(ControlRequest::Networks))? {
                        if info.containers.is_empty()
                            && info.origin == "api"
                            && resources::answer(
                                handle(ControlRequest::NetworkRm {
                                    name: info.spec.name.clone(),
                                }),
                                "network",
                                &info.spec.name,
                            )
                            .is_ok()
                        {
                            deleted.push(info.spec.name);
                        }
                    }
                    json_answer(StatusCode::OK, &json!({ "NetworksDeleted": deleted }))
                }
                Route::Volumes => {
                    let list = volumes(handle(ControlRequest::Volumes))?;
                    let rows: Vec<Value> = list
                        .iter()
                        .filter(|v| by_name(filters.get("name"), &v.name))
                        .filter(|v| {
                            match filters
                                .get("dangling")
                                .and_then(|d| d.first())
                                .map(String::as_str)
                            {
                                Some("true" | "1") => v.containers.is_empty(),
                                Some("false" | "0") => !v.containers.is_empty(),
                                _ => true,
                            }
                        })
                        .map(resources::volume_view)
                        .collect();
                    json_answer(StatusCode::OK, &json!({ "Volumes": rows, "Warnings": [] }))
                }
                Route::VolumeInspect(name) => {
                    let answer = resources::answer(
                        handle(ControlRequest::VolumeInspect { name: name.clone() }),
                        "volume",
                        &name,
                    )?;
                    let list = volumes(answer)?;
                    let info = list.first().ok_or_else(|| {
                        ApiError::not_found(format!("get {name}: no such volume"))
                    })?;
                    json_answer(StatusCode::OK, &resources::volume_view(info))
                }
                Route::VolumeCreate => {
                    let request = resources::volume_create(&body)?;
                    let answer = resources::answer(handle(request), "volume", "")?;
                    let list = volumes(answer)?;
                    let info = list
                        .first()
                        .ok_or_else(|| ApiError::internal("no volume in the answer"))?;
                    json_answer(StatusCode::CREATED, &resources::volume_view(info))
                }
                Route::VolumeRemove(name) => {
                    resources::answer(
                        handle(ControlRequest::VolumeRm { name: name.clone() }),
                        "volume",
                        &name,
                    )?;
                    no_content()
                }
                Route::VolumePrune => {
                    let mut deleted = Vec::new();
                    for info in volumes(handle(ControlRequest::Volumes))? {
                        if info.containers.is_empty()
                            && resources::answer(
                                handle(ControlRequest::VolumeRm {
                                    name: info.name.clone(),
                                }),
                                "volume",
                                &info.name,
                            )
                            .is_ok()
                        {
                            deleted.push(info.name);
                        }
                    }
                    json_answer(
                        StatusCode::OK,
                        &json!({ "VolumesDeleted": deleted, "SpaceReclaimed": 0 }),
                    )
                }
                _ => Err(ApiError::internal("routed elsewhere")),
            }
        })
        .await
    }

    fn version(&self) -> Value {
        let kernel = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let version = crate::VERSION;
        json!({
            "Platform": { "Name": "mkhost hostd" },
            "Components": [{
                "Name": "Engine",
                "Version": version,
                "Details": {
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": MIN_API_VERSION,
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": kernel,
                }
            }],
            "Version": version,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": kernel,
            "BuildTime": "",
        })
    }

    fn info(&self) -> Value {
        let records = self.manager().map(|m| m.ps()).unwrap_or_default();
        let count = |status: &str| records.iter().filter(|r| r.status == status).count();
        let images = self
            .store()
            .and_then(|s| s.list().map_err(|e| ApiError::internal(e.to_string())));
        let uname = rustix::system::uname();
        let memory = self.manager().map_or(0, |m| m.host_memory());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        json!({
            "ID": format!("mkhost-{}", uname.nodename().to_string_lossy()),
            "Containers": records.len(),
            "ContainersRunning": count("running"),
            "ContainersPaused": 0,
            "ContainersStopped": records.len() - count("running"),
            "Images": images.map_or(0, |i| i.len()),
            "Driver": "overlay",
            "DriverStatus": [],
            "Plugins": { "Volume": ["local"], "Network": ["bridge", "host", "none", "direct"], "Authorization": null, "Log": ["json-file"] },
            "MemoryLimit": true,
            "SwapLimit": false,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "CPUShares": true,
            "CPUSet": true,
            "PidsLimit": true,
            "IPv4Forwarding": true,
            "Debug": false,
            "NFd": 0,
            "NGoroutines": 0,
            "SystemTime": mkhost_shared::time::rfc3339_now(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2",
            "NEventsListener": 0,
            "KernelVersion": uname.release().to_string_lossy(),
            "OperatingSystem": "mkhost",
            "OSVersion": crate::VERSION,
            "OSType": "linux",
            "Architecture": "x86_64",
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": null,
            "NCPU": cpus,
            "MemTotal": memory,
            "DockerRootDir": self.handler.store_root.display().to_string(),
            "Name": uname.nodename().to_string_lossy(),
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": crate::VERSION,
            "Runtimes": { "hostd": { "path": "hostd" } },
            "DefaultRuntime": "hostd",
            "Swarm": { "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null },
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": "",
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": [],
        })
    }

    async fn images(self: &Arc<Self>) -> Answer {
        let api = Arc::clone(self);
        let list = blocking(move || {
            api.store()?
                .list()
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
        let rows: Vec<Value> = list.iter().map(views::image_summary).collect();
        json_answer(StatusCode::OK, &Value::Array(rows))
    }

    async fn image_inspect(self: &Arc<Self>, name: String, history: bool) -> Answer {
        let api = Arc::clone(self);
        let info = blocking(move || {
            api.store()?
                .inspect(&name)
                .map_err(|e| store_error(e, &name))
        })
        .await?;
        let view = match history {
            true => views::image_history(&info),
            false => views::image_inspect(&info),
        };
        json_answer(StatusCode::OK, &view)
    }

    async fn image_remove(self: &Arc<Self>, name: String) -> Answer {
        let api = Arc::clone(self);
        let answer = blocking(move || {
            // Docker's 404 before the handler's checks.
            let info = api
                .store()?
                .inspect(&name)
                .map_err(|e| store_error(e, &name))?;
            match api.handler.handle(&ControlRequest::RemoveImage {
                image: name.clone(),
            }) {
                ControlResponse::Removed(removed) => Ok((info, removed)),
                ControlResponse::Error(message) if message.contains("used by container") => {
                    Err(ApiError::conflict(format!(
                        "conflict: unable to remove image {name}: {message}"
                    )))
                }
                ControlResponse::Error(message) => Err(ApiError::internal(message)),
                other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
            }
        })
        .await?;
        let (info, removed) = answer;
        if let Ok(manager) = self.manager() {
            for name in &removed.untagged {
                manager
                    .events()
                    .emit("image", "untag", name, BTreeMap::new());
            }
            if removed.deleted {
                manager.events().emit(
                    "image",
                    "delete",
                    &views::image_id(&info.id),
                    BTreeMap::new(),
                );
            }
        }
        let mut rows: Vec<Value> = removed
            .untagged
            .iter()
            .map(|n| json!({ "Untagged": views::familiar(n) }))
            .collect();
        if removed.deleted {
            rows.push(json!({ "Deleted": views::image_id(&info.id) }));
        }
        json_answer(StatusCode::OK, &Value::Array(rows))
    }

    /// `GET /system/df`: images (unpacked sizes; shared layers counted
    /// once in `LayersSize`), containers and volumes.
    async fn system_df(self: &Arc<Self>) -> Answer {
        let api = Arc::clone(self);
        let view = blocking(move || {
            let store = api.store()?;
            let images = store
                .list()
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let records = api.manager().map(|m| m.ps()).unwrap_or_default();
            let now = views::now_seconds();
            let mut layers = BTreeMap::new();
            let mut rows = Vec::new();
            for image in &images {
                let users = records
                    .iter()
                    .filter(|r| views::image_id(&r.image_id) == views::image_id(&image.id))
                    .count();
                if let Ok(info) = store.inspect(&image.id) {
                    for layer in &info.layers {
                        layers.insert(layer.diff_id.clone(), layer.unpacked_size);
                    }
                }
                let mut row = views::image_summary(image);
                row["Containers"] = Value::from(users);
                rows.push(row);
            }
            let containers: Vec<Value> = records
                .iter()
                .map(|r| views::container_summary(r, now))
                .collect();
            let volumes = match api.handler.handle(&ControlRequest::Volumes) {
                ControlResponse::Volumes(list) => list.iter().map(resources::volume_view).collect(),
                _ => Vec::new(),
            };
            Ok(json!({
                "LayersSize": layers.values().sum::<u64>(),
                "Images": rows,
                "Containers": containers,
                "Volumes": volumes,
                "BuildCache": [],
            }))
        })
        .await?;
        json_answer(StatusCode::OK, &view)
    }

    /// `POST /images/{name}/tag?repo=&tag=` (`docker tag`).
    async fn image_tag(self: &Arc<Self>, name: String, query: &Query) -> Answer {
        let repo = query
            .get("repo")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ApiError::bad_request("repo: give the new name"))?;
        let tag = query
            .get("tag")
            .filter(|t| !t.is_empty())
            .map_or("latest", String::as_str);
        let last = repo.rsplit('/').next().unwrap_or(repo);
        let new_name = match last.contains(':') || repo.contains('@') {
            true => repo.clone(),
            false => format!("{repo}:{tag}"),
        };
        let api = Arc::clone(self);
        let tagged = new_name.clone();
        blocking(move || {
            api.store()?.tag(&name, &tagged).map_err(|e| match e {
                StoreError::InvalidName { .. } => ApiError::bad_request(e.to_string()),
                other => store_error(other, &name),
            })
        })
        .await?;
        if let Ok(manager) = self.manager() {
            manager
                .events()
                .emit("image", "tag", &new_name, BTreeMap::new());
        }
        status_only(StatusCode::CREATED)
    }

    async fn image_prune(self: &Arc<Self>) -> Answer {
        let api = Arc::clone(self);
        let report = blocking(move || {
            api.store()?
                .gc()
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
        json_answer(
            StatusCode::OK,
            &json!({ "ImagesDeleted": null, "SpaceReclaimed": report.bytes_freed }),
        )
    }

    /// `POST /images/create?fromImage=…&tag=…`: a pull, with Docker's
    /// progress messages streamed as JSON lines.
    async fn image_pull(self: &Arc<Self>, request: &Request<Incoming>, query: &Query) -> Answer {
        if query.get("fromSrc").is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported("docker import (fromSrc)"));
        }
        let image = query
            .get("fromImage")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::bad_request("fromImage: name the image to pull"))?;
        let credentials = match request.headers().get("x-registry-auth") {
            Some(auth) => registry_auth(auth.as_bytes())?,
            None => None,
        };
        let reference = match query.get("tag").filter(|t| !t.is_empty()) {
            Some(tag) if tag.starts_with("sha256:") => format!("{image}@{tag}"),
            Some(tag) => format!("{image}:{tag}"),
            None if image.contains(':') || image.contains('@') => image.clone(),
            None => format!("{image}:latest"),
        };
        let (sender, body) = ChannelBody::new(16);
        let api = Arc::clone(self);
        tokio::spawn(async move {
            // Progress messages end in CRLF, as dockerd's.
            let message = |value: Value| json_line(&value, b"\r\n");
            let (_, tag) = reference.rsplit_once(':').unwrap_or(("", "latest"));
            let _ = sender
                .send(message(
                    json!({ "status": format!("Pulling from {reference}"), "id": tag }),
                ))
                .await;
            let events = api.manager().ok().map(|m| Arc::clone(m.events()));
            let pulled = {
                let reference = reference.clone();
                blocking(move || {
                    let store = api.store()?;
                    let puller = api.handler.puller().map_err(ApiError::internal)?;
                    puller
                        .pull_as(&store, &reference, credentials)
                        .map_err(ApiError::not_found)
                })
                .await
            };
            let last = match pulled {
                Ok(report) => {
                    let _ = sender
                        .send(message(
                            json!({ "status": format!("Digest: {}", report.manifest_digest) }),
                        ))
                        .await;
                    if let Some(events) = &events {
                        events.emit("image", "pull", &reference, BTreeMap::new());
                    }
                    let done = match report.bytes_fetched {
                        0 => format!("Status: Image is up to date for {reference}"),
                        _ => format!("Status: Downloaded newer image for {reference}"),
                    };
                    json!({ "status": done })
                }
                Err(e) => json!({ "errorDetail": { "message": e.message }, "error": e.message }),
            };
            let _ = sender.send(message(last)).await;
        });
        streamed("application/json", body)
    }

    /// `POST /images/load`: a `docker save` or OCI archive, streamed to a
    /// file next to the store and imported all-or-nothing.
    async fn image_load(self: &Arc<Self>, request: Request<Incoming>, query: &Query) -> Answer {
        // `quiet` silences dockerd's progress bars only (this daemon sends
        // none): the "Loaded image" lines go out either way, and the CLI
        // asks for quiet whenever its stdout is not a terminal.
        flag(query, "quiet")?;
        let store = {
            let api = Arc::clone(self);
            blocking(move || api.store()).await?
        };
        let staging = Staging::create(store.root(), "load")?;
        staging.fill(request.into_body()).await?;
        let report = blocking(move || {
            let report = store
                .import(&staging.path)
                .map_err(|e| ApiError::bad_request(e.to_string()));
            drop(staging);
            report
        })
        .await?;
        let mut lines = Vec::new();
        for image in &report.images {
            if let Ok(manager) = self.manager() {
                let name = image
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| views::image_id(&image.id));
                manager
                    .events()
                    .emit("image", "load", &name, BTreeMap::new());
            }
            let text = match image.names.first() {
                Some(name) => format!("Loaded image: {name}\n"),
                None => format!("Loaded image ID: {}\n", views::image_id(&image.id)),
            };
            lines.extend_from_slice(&json_line(&json!({ "stream": text }), b"\r\n"));
        }
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(lines))
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    async fn containers(self: &Arc<Self>, query: &Query) -> Answer {
        let all = flag(query, "all")?;
        // -1 (docker-py's default) and 0: no limit, as dockerd takes them.
        let limit: Option<i64> = number(query, "limit")?;
        let filters = views::parse_filters(query.get("filters")).map_err(ApiError::bad_request)?;
        let manager = self.manager()?;
        let records = blocking(move || Ok(manager.ps())).await?;
        let now = views::now_seconds();
        let mut rows = Vec::new();
        // Newest first, as docker ps lists them.
        for record in records.iter().rev() {
            if !all && record.status != "running" && !filters.contains_key("status") {
                continue;
            }
            if views::matches_filters(record, &filters).map_err(ApiError::bad_request)? {
                rows.push(views::container_summary(record, now));
            }
        }
        if let Some(limit) = limit
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l > 0)
        {
            rows.truncate(limit);
        }
        json_answer(StatusCode::OK, &Value::Array(rows))
    }

    async fn create(self: &Arc<Self>, body: Bytes, query: &Query) -> Answer {
        if let Some(platform) = query.get("platform").filter(|p| !p.is_empty()) {
            if !matches!(platform.as_str(), "linux" | "linux/amd64") {
                return Err(ApiError::bad_request(format!(
                    "platform {platform:?} is not supported by this host: it runs linux/amd64"
                )));
            }
        }
        let mut run = create::run_request(&body, query.get("name").map(String::as_str))?;
        // Docker's create never pulls: the client pulls on a 404 and asks again.
        run.pull = mkhost_shared::container::PullPolicy::Never;
        let api = Arc::clone(self);
        let id = blocking(move || {
            let manager = api.manager()?;
            let store = api.store()?;
            store.inspect(&run.image).map_err(|e| store_error(e, &run.image))?;
            if let Some(name) = &run.name {
                if let Ok(existing) = manager.record(name) {
                    if existing.name == *name {
                        return Err(ApiError::conflict(format!(
                            "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                            existing.id
                        )));
                    }
                }
            }
            manager
                .create(&store, &run)
                .map_err(|e| ApiError::bad_request(e.message))
        })
        .await?;
        json_answer(StatusCode::CREATED, &json!({ "Id": id, "Warnings": [] }))
    }

    async fn container_prune(self: &Arc<Self>) -> Answer {
        let manager = self.manager()?;
        let deleted = blocking(move || {
            let mut deleted = Vec::new();
            for record in manager.ps() {
                if matches!(record.status.as_str(), "exited" | STATUS_CREATED)
                    && manager.rm(&record.id, false).is_ok()
                {
                    deleted.push(record.id);
                }
            }
            Ok(deleted)
        })
        .await?;
        json_answer(
            StatusCode::OK,
            &json!({ "ContainersDeleted": deleted, "SpaceReclaimed": 0 }),
        )
    }

    async fn container_op(self: &Arc<Self>, id: String, op: ContainerOp, query: &Query) -> Answer {
        match op {
            ContainerOp::Wait => return self.wait(id, query).await,
            ContainerOp::Logs => return self.logs(id, query).await,
            ContainerOp::Stats => return self.stats(id, query).await,
            _ => {}
        }
        let manager = self.manager()?;
        let api = Arc::clone(self);
        let query = query.clone();
        blocking(move || match op {
            ContainerOp::Inspect => {
                let (record, request, spec) = manager
                    .details(&id)
                    .map_err(|e| api.container_error(&id, e))?;
                let image = api.store().ok().and_then(|s| s.inspect(&record.image_id).ok());
                json_answer(
                    StatusCode::OK,
                    &views::container_inspect(&record, request.as_ref(), &spec, image.as_ref()),
                )
            }
            ContainerOp::Start => {
                let record = manager.record(&id).map_err(|e| api.container_error(&id, e))?;
                if record.status == "running" {
                    return status_only(StatusCode::NOT_MODIFIED);
                }
                manager
                    .start(&id)
                    .map_err(|e| ApiError::bad_request(start_error(&e.message, e.exec)))?;
                no_content()
            }
            ContainerOp::Stop | ContainerOp::Restart => {
                let record = manager.record(&id).map_err(|e| api.container_error(&id, e))?;
                let timeout = match number::<i64>(&query, "t")? {
                    // -1: wait for ever (a day, the longest hostd waits).
                    Some(t) if t < 0 => Duration::from_secs(mkhost_shared::control::MAX_STOP_TIMEOUT_SECS),
                    Some(t) => Duration::from_secs(t.unsigned_abs().min(mkhost_shared::control::MAX_STOP_TIMEOUT_SECS)),
                    None => crate::daemon::containers::STOP_TIMEOUT,
                };
                if op == ContainerOp::Stop && record.status != "running" && record.status != "restarting" {
                    return status_only(StatusCode::NOT_MODIFIED);
                }
                manager
                    .stop(&id, timeout)
                    .map_err(|e| api.container_error(&id, e))?;
                if op == ContainerOp::Restart {
                    manager
                        .start(&id)
                        .map_err(|e| ApiError::bad_request(start_error(&e.message, e.exec)))?;
                }
                no_content()
            }
            ContainerOp::Kill => {
                let signal = parse_signal(query.get("signal").map(String::as_str).unwrap_or(""))?;
                let record = manager.record(&id).map_err(|e| api.container_error(&id, e))?;
                if record.status != "running" {
                    return Err(ApiError::conflict(format!(
                        "Cannot kill container: {id}: Container {} is not running",
                        record.id
                    )));
                }
                manager.kill(&id, signal).map_err(|e| api.container_error(&id, e))?;
                no_content()
            }
            ContainerOp::Remove => {
                let force = flag(&query, "force")?;
                let record = manager.record(&id).map_err(|e| api.container_error(&id, e))?;
                if record.status == "running" && !force {
                    return Err(ApiError::conflict(format!(
                        "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                        record.id
                    )));
                }
                if flag(&query, "link")? {
                    return Err(ApiError::unsupported("links"));
                }
                manager.rm(&id, force).map_err(|e| api.container_error(&id, e))?;
                no_content()
            }
            ContainerOp::Top => {
                let record = manager.record(&id).map_err(|e| api.container_error(&id, e))?;
                if record.status != "running" {
                    return Err(ApiError::conflict(format!(
                        "Container {} is not running",
                        record.id
                    )));
                }
                let rows: Vec<Value> = manager
                    .processes(&id)
                    .map_err(|e| api.container_error(&id, e))?
                    .into_iter()
                    .map(|p| json!([p.pid, p.ppid, p.command]))
                    .collect();
                json_answer(
                    StatusCode::OK,
                    &json!({ "Titles": ["PID", "PPID", "CMD"], "Processes": rows }),
                )
            }
            ContainerOp::Pause | ContainerOp::Unpause => {
                let record = manager.record(&id).map_err(|e| api.container_error(&id, e))?;
                let result = match op {
                    ContainerOp::Pause if record.status != "running" => Err(format!(
                        "Container {} is not running",
                        record.id
                    )),
                    ContainerOp::Pause if record.paused => {
                        Err(format!("Container {} is already paused", record.id))
                    }
                    ContainerOp::Unpause if !record.paused => {
                        Err(format!("Container {} is not paused", record.id))
                    }
                    ContainerOp::Pause => manager.pause(&id).map_err(|e| format!("Cannot pause container {id}: {e}")),
                    _ => manager.unpause(&id).map_err(|e| format!("Cannot unpause container {id}: {e}")),
                };
                result.map_err(ApiError::conflict)?;
                no_content()
            }
            ContainerOp::Rename => {
                let new_name = query
                    .get("name")
                    .map(|n| n.trim_start_matches('/').to_string())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ApiError::bad_request("name: give the new name"))?;
                let record = manager.record(&id).map_err(|e| api.container_error(&id, e))?;
                if let Ok(other) = manager.record(&new_name) {
                    if other.name == new_name {
                        return Err(ApiError::conflict(format!(
                            "Error when allocating new name: Conflict. The container name \"/{new_name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                            other.id
                        )));
                    }
                }
                manager
                    .rename(&record.id, &new_name)
                    .map_err(ApiError::bad_request)?;
                no_content()
            }
            ContainerOp::Wait
            | ContainerOp::Logs
            | ContainerOp::Attach
            | ContainerOp::Stats
            | ContainerOp::Resize
            | ContainerOp::ArchiveStat
            | ContainerOp::ArchiveGet
            | ContainerOp::ArchivePut => Err(ApiError::internal("routed elsewhere")),
        })
        .await
    }

    /// The root of container `id` as an open directory, for `docker cp`:
    /// a running container's init's root (its mounts included), else its
    /// root mounted for this copy alone (no volumes); and its create spec.
    fn container_root(
        &self,
        id: &str,
    ) -> Result<(std::os::fd::OwnedFd, bool, CreateSpec), ApiError> {
        self.manager()?
            .open_root(id)
            .map_err(|e| self.container_error(id, e))
    }

    /// `HEAD /containers/{id}/archive?path=` (the stat of a path, in
    /// `X-Docker-Container-Path-Stat`) and, with `tar`, `GET` (the same
    /// header and a tar of the path, streamed).
    async fn archive_stat(self: &Arc<Self>, id: String, query: &Query, tar: bool) -> Answer {
        let path = archive_path(query)?;
        let api = Arc::clone(self);
        let (found, header) = blocking(move || {
            let (root, _, _) = api.container_root(&id)?;
            let found = archive::find(root.as_fd(), &path)
                .map_err(|e| archive::path_error(e, &path, &id))?;
            let target = archive::link_target(root.as_fd(), &found);
            let header = archive::stat_header(&found.path.base(), &found.stat, &target);
            Ok((found, header))
        })
        .await?;
        let response = Response::builder()
            .status(StatusCode::OK)
            .header(archive::STAT_HEADER, header);
        if !tar {
            return response
                .body(empty())
                .map_err(|e| ApiError::internal(e.to_string()));
        }
        let (sender, body) = ChannelBody::new(4);
        tokio::task::spawn_blocking(move || {
            let shown = found.path.absolute();
            let written = archive::write_tar(&found, archive::ChannelWriter::new(sender))
                .and_then(|mut w| w.flush());
            if let Err(e) = written {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    log(&format!(
                        "docker api: the tar of {shown} was cut short: {e}"
                    ));
                }
            }
        });
        response
            .header(header::CONTENT_TYPE, "application/x-tar")
            .body(body.boxed())
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// `PUT /containers/{id}/archive?path=DIR`: a tar (or gzip or zstd
    /// tar) extracted into the directory DIR of the container. The body is
    /// staged next to the store and checked whole first: a hostile archive
    /// is refused before anything is written.
    async fn archive_put(
        self: &Arc<Self>,
        request: Request<Incoming>,
        id: String,
        query: &Query,
    ) -> Answer {
        let path = archive_path(query)?;
        let no_overwrite = flag(query, "noOverwriteDirNonDir")?;
        let copy_owner = flag(query, "copyUIDGID")?;
        let api = Arc::clone(self);
        let (name, shown) = (id.clone(), path.clone());
        let checked = blocking(move || {
            let (root, running, spec) = api.container_root(&name)?;
            if spec.read_only && !running {
                return Err(ApiError::bad_request(
                    "container rootfs is marked read-only",
                ));
            }
            let dest = archive::open_destination(root.as_fd(), &shown, &name)?;
            let owner = copy_owner.then_some((spec.uid, spec.gid));
            Ok(((dest, owner), api.store()?.root().to_path_buf()))
        })
        .await;
        let body = request.into_body();
        let (dest, store_root) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                // The client is still sending the tar: read it away, so it
                // gets the answer rather than a broken pipe.
                drain_body(body).await;
                return Err(e);
            }
        };
        let staging = Staging::create(&store_root, "cp")?;
        staging.fill(body).await?;
        let (dest, owner) = dest;
        blocking(move || {
            let what = format!("the archive for {path}");
            let reopen = || {
                staging
                    .file
                    .try_clone()
                    .and_then(|mut f| std::io::Seek::rewind(&mut f).map(|()| f))
                    .map_err(|e| ApiError::internal(format!("cannot read the archive back: {e}")))
            };
            mkhost_store::check_archive(reopen()?, &what)
                .map_err(|e| extract_error(e, "nothing was extracted"))?;
            let options = mkhost_store::ExtractOptions {
                no_overwrite_dir_non_dir: no_overwrite,
                owner,
            };
            mkhost_store::extract_archive(reopen()?, dest, options, &what)
                .map_err(|e| extract_error(e, "the entries before it were extracted"))?;
            drop(staging);
            Ok(())
        })
        .await?;
        status_only(StatusCode::OK)
    }

    /// `GET /containers/{id}/stats`: a sample a second while the client
    /// reads (`stream`, the default), or one answer (`stream=false`: two
    /// samples a second apart, so the CLI can compute CPU use; `one-shot`:
    /// one sample at once).
    async fn stats(self: &Arc<Self>, id: String, query: &Query) -> Answer {
        let streaming = match query.get("stream").map(String::as_str) {
            None | Some("") => true,
            Some(_) => flag(query, "stream")?,
        };
        let one_shot = flag(query, "one-shot")?;
        let manager = self.manager()?;
        let record = manager
            .record(&id)
            .map_err(|e| self.container_error(&id, e))?;
        let sample = {
            let (manager, id) = (Arc::clone(&manager), record.id.clone());
            move || {
                // A stopped container reads as zeros, as dockerd shows it.
                let mut s = manager.sample(&id).ok().flatten().unwrap_or_default();
                if s.read.is_empty() {
                    s.read = mkhost_shared::time::rfc3339_now();
                }
                s
            }
        };
        let line = |value: &Value| json_line(value, b"\n");
        if !streaming {
            let first = sample();
            if one_shot {
                return json_answer(
                    StatusCode::OK,
                    &stats::view(&record, &first, &Sample::default()),
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let second = sample();
            return json_answer(StatusCode::OK, &stats::view(&record, &second, &first));
        }
        let (sender, body) = ChannelBody::new(2);
        tokio::spawn(async move {
            let mut previous = Sample::default();
            loop {
                let record = match manager.record(&record.id) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                let now = sample();
                if sender
                    .send(line(&stats::view(&record, &now, &previous)))
                    .await
                    .is_err()
                {
                    return;
                }
                previous = now;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = sender.closed() => return,
                }
            }
        });
        streamed("application/json", body)
    }

    /// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`:
    /// the headers go out at once (the CLI starts the container only then),
    /// the status code when the condition holds.
    async fn wait(self: &Arc<Self>, id: String, query: &Query) -> Answer {
        let condition = query
            .get("condition")
            .cloned()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "not-running".into());
        if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
            return Err(ApiError::bad_request(format!(
                "invalid condition {condition:?}: want not-running, next-exit or removed"
            )));
        }
        let manager = self.manager()?;
        let mut watch = manager
            .watch(&id)
            .map_err(|e| self.container_error(&id, e))?;
        let baseline = watch.snapshot();
        let (sender, body) = ChannelBody::new(1);
        tokio::spawn(async move {
            let done = loop {
                let now = watch.snapshot();
                let exited = now.exits > baseline.exits;
                let stopped = matches!(now.status.as_str(), "exited" | STATUS_CREATED);
                let holds = match condition.as_str() {
                    "next-exit" => exited || now.removed,
                    "removed" => now.removed,
                    _ => stopped || now.removed,
                };
                if holds {
                    break now;
                }
                tokio::select! {
                    () = watch.changed() => {}
                    () = tokio::time::sleep(WAIT_POLL) => {}
                    () = sender.closed() => return,
                }
            };
            // dockerd's `Error` is about waiting (a removal that failed),
            // never the container's own failure, which its exit code tells.
            let answer = json!({ "StatusCode": done.exit_code.unwrap_or(0), "Error": null });
            let _ = sender.send(json_line(&answer, b"\n")).await;
        });
        streamed("application/json", body)
    }

    /// `GET /containers/{id}/logs`: the log (filtered by `since`, `until`
    /// and `tail`), then, with `follow`, new lines until the container
    /// stops.
    async fn logs(self: &Arc<Self>, id: String, query: &Query) -> Answer {
        let (stdout, stderr) = (flag(query, "stdout")?, flag(query, "stderr")?);
        if !stdout && !stderr {
            return Err(ApiError::bad_request(
                "Bad parameters: you must choose at least one stream",
            ));
        }
        let follow = flag(query, "follow")?;
        let timestamps = flag(query, "timestamps")?;
        let since = time_bound(query, "since")?;
        let until = time_bound(query, "until")?;
        let tail: Option<usize> = match query.get("tail").map(String::as_str) {
            None | Some("" | "all") => None,
            Some(n) => Some(n.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid tail {n:?}: want a number or all"))
            })?),
        };
        let manager = self.manager()?;
        let name = id.clone();
        let (text, follower) =
            blocking(move || manager.follow_logs(&name).map_err(ApiError::internal))
                .await
                .map_err(|e| match self.manager().map(|m| m.record(&id)) {
                    Ok(Err(_)) => ApiError::not_found(format!("No such container: {id}")),
                    _ => e,
                })?;
        let wanted = move |s: Stream| match s {
            Stream::Stdout => stdout,
            Stream::Stderr => stderr,
        };
        let in_range = move |time: &str| {
            let t = mkhost_shared::time::parse_rfc3339(time)
                .map_or(0.0, |(s, n)| s as f64 + f64::from(n) / 1e9);
            since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
        };
        let mut frames: Vec<Bytes> = text
            .lines()
            .filter_map(stream::parse_log_line)
            .filter(|(time, s, _)| wanted(*s) && in_range(time))
            .map(|(time, s, line)| stream::line_frame(s, time, line.as_bytes(), timestamps))
            .collect();
        if let Some(tail) = tail {
            let skip = frames.len().saturating_sub(tail);
            frames.drain(..skip);
        }
        let follower = follower.filter(|_| follow && until.is_none());
        let (sender, body) = ChannelBody::new(64);
        tokio::spawn(async move {
            for frame in frames {
                if sender.send(frame).await.is_err() {
                    return;
                }
            }
            if let Some(mut follower) = follower {
                forward(&mut follower, &sender, wanted, timestamps).await;
            }
        });
        streamed("application/vnd.docker.raw-stream", body)
    }
}

/// An uploaded archive's file next to the store, removed when dropped.
struct Staging {
    path: std::path::PathBuf,
    file: std::fs::File,
}

/// The kinds of upload [`Staging`] files are made for.
const UPLOAD_KINDS: [&str; 2] = ["load", "cp"];

/// Removes the staging files (`.load-*.tar`, `.cp-*.tar`) a daemon left in
/// the store directory `dir` when it was killed mid-upload; call it before
/// the API serves. Answers what it removed.
pub fn remove_stale_uploads(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let stale = |name: &str| {
        UPLOAD_KINDS.iter().any(|kind| {
            name.strip_prefix(&format!(".{kind}-"))
                .and_then(|rest| rest.strip_suffix(".tar"))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(stale))
        .map(|e| e.path())
        .filter(|path| std::fs::remove_file(path).is_ok())
        .collect()
}

impl Staging {
    /// A new file `.<kind>-<random>.tar` in `dir`.
    fn create(dir: &std::path::Path, kind: &str) -> Result<Staging, ApiError> {
        let mut random = [0u8; 8];
        crate::os::random_bytes_insecure(&mut random)
            .map_err(|e| ApiError::internal(format!("no random name: {e}")))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!(".{kind}-{name}.tar"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", path.display())))?;
        Ok(Staging { path, file })
    }

    /// Writes a request's body (at most [`MAX_LOAD_BODY`] bytes) to the file.
    async fn fill(&self, mut body: Incoming) -> Result<(), ApiError> {
        let mut file = tokio::fs::File::from_std(
            self.file
                .try_clone()
                .map_err(|e| ApiError::internal(format!("cannot store the archive: {e}")))?,
        );
        let mut written: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("cannot read the archive: {e}")))?;
            if let Ok(data) = frame.into_data() {
                written += data.len() as u64;
                if written > MAX_LOAD_BODY {
                    return Err(ApiError::bad_request(format!(
                        "the archive is larger than {MAX_LOAD_BODY} bytes"
                    )));
                }
                tokio::io::AsyncWriteExt::write_all(&mut file, &data)
                    .await
                    .map_err(|e| ApiError::internal(format!("cannot store the archive: {e}")))?;
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| ApiError::internal(format!("cannot store the archive: {e}")))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies a container's output lines to a stream's sender as frames.
pub(super) async fn forward(
    follower: &mut tokio::sync::mpsc::Receiver<OutputLine>,
    sender: &tokio::sync::mpsc::Sender<Bytes>,
    wanted: impl Fn(Stream) -> bool,
    timestamps: bool,
) {
    loop {
        tokio::select! {
            line = follower.recv() => {
                let Some(line) = line else { return };
                if wanted(line.stream)
                    && sender
                        .send(stream::line_frame(line.stream, &line.time, &line.line, timestamps))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            () = sender.closed() => return,
        }
    }
}

/// The `path` of an archive query (dockerd's 400 without it).
fn archive_path(query: &Query) -> Result<String, ApiError> {
    query
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("path: give a path in the container"))
}

/// An extraction's error: a refused or broken archive is the client's
/// (400), anything else the daemon's; `then` says what was written.
fn extract_error(error: StoreError, then: &str) -> ApiError {
    match error {
        StoreError::UnsafeEntry { entry, reason, .. } => ApiError::bad_request(format!(
            "refusing the archive: its entry {entry:?} {reason}; {then}"
        )),
        StoreError::CorruptLayer { detail, .. } => ApiError::bad_request(format!(
            "the archive is not a readable tar ({detail}); {then}"
        )),
        StoreError::Unpack { entry, source, .. } => {
            ApiError::internal(format!("cannot extract {entry:?}: {source}; {then}"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// `since`/`until` of a logs query: Unix seconds, with a fraction.
fn time_bound(query: &Query, key: &str) -> Result<Option<f64>, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("" | "0") => Ok(None),
        Some(text) => text.parse::<f64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid {key} {text:?}: want Unix seconds"))
        }),
    }
}

/// A start error as dockerd words it: the docker CLI maps "executable file
/// not found" to exit code 127 and "permission denied" to 126.
pub(super) fn start_error(
    message: &str,
    exec: Option<mkhost_shared::container::ExecError>,
) -> String {
    use mkhost_shared::container::ExecError;
    match exec {
        Some(ExecError::NotFound) => {
            format!("failed to create task: exec: executable file not found in $PATH: {message}")
        }
        Some(ExecError::NotExecutable) => {
            format!("failed to create task: exec: permission denied: {message}")
        }
        None => message.to_string(),
    }
}

/// `SIGKILL`, `KILL`, `9` or empty (SIGKILL).
pub fn parse_signal(text: &str) -> Result<i32, ApiError> {
    const NAMES: &[(&str, i32)] = &[
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("TERM", libc::SIGTERM),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("WINCH", libc::SIGWINCH),
        ("ALRM", libc::SIGALRM),
    ];
    if text.is_empty() {
        return Ok(libc::SIGKILL);
    }
    if let Ok(number) = text.parse::<i32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {text}")))
}

/// The credentials of an `X-Registry-Auth` header: base64url (or
/// standard base64) of JSON `{"username", "password"}` or `{"auth":
/// base64 of "user:password"}`, with `serveraddress` naming the registry
/// (the pull's own registry is what they are used for). An empty header
/// or `{}` (what the CLI sends without a login) is none. Identity and
/// registry tokens are refused (501). The password is never logged nor
/// echoed in an error.
fn registry_auth(header: &[u8]) -> Result<Option<Credentials>, ApiError> {
    use base64::Engine;
    let text = String::from_utf8_lossy(header);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let decode = |text: &str| {
        base64::engine::general_purpose::URL_SAFE
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
    };
    let decoded =
        decode(text).map_err(|_| ApiError::bad_request("X-Registry-Auth is not base64"))?;
    let value: Value = serde_json::from_slice(&decoded)
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not JSON"))?;
    let field = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if field("identitytoken").is_some() || field("registrytoken").is_some() {
        return Err(ApiError::unsupported(
            "an identity or registry token in X-Registry-Auth (give a user and password)",
        ));
    }
    if let (Some(user), Some(password)) = (field("username"), field("password")) {
        return Ok(Some(Credentials::new(user, password)));
    }
    if let Some(auth) = field("auth") {
        let pair = decode(auth.trim())
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| {
                ApiError::bad_request("X-Registry-Auth: auth is not base64 of user:password")
            })?;
        let (user, password) = pair.split_once(':').ok_or_else(|| {
            ApiError::bad_request("X-Registry-Auth: auth lacks the ':' between user and password")
        })?;
        return Ok(Some(Credentials::new(user, password)));
    }
    match field("username").or(field("password")) {
        Some(_) => Err(ApiError::bad_request(
            "X-Registry-Auth: give both username and password",
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_uploads_and_only_they_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".load-00aa11.tar",
            ".cp-ff.tar",
            ".cp-zz.tar",
            ".cp-.tar",
            "x.tar",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        let mut removed: Vec<String> = remove_stale_uploads(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(removed, [".cp-ff.tar", ".load-00aa11.tar"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".cp-.tar", ".cp-zz.tar", "blobs", "x.tar"]);
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), libc::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGNOPE").unwrap_err().status, 400);
        assert_eq!(parse_signal("0").unwrap_err().status, 400);
    }

    #[test]
    fn registry_auth_headers() {
        use base64::Engine;
        let url = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        let std = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(registry_auth(url("{}").as_bytes()).unwrap(), None);
        assert_eq!(registry_auth(b"").unwrap(), None);
        let given = registry_auth(
            url(r#"{"username":"u","password":"p?>","serveraddress":"lab:5000"}"#).as_bytes(),
        );
        assert_eq!(given.unwrap(), Some(Credentials::new("u", "p?>")));
        let auth = format!(r#"{{"auth":"{}"}}"#, std("u:p:w"));
        assert_eq!(
            registry_auth(std(&auth).as_bytes()).unwrap(),
            Some(Credentials::new("u", "p:w"))
        );
        let token = registry_auth(url(r#"{"identitytoken":"t"}"#).as_bytes());
        assert_eq!(token.unwrap_err().status, 501);
        let half = registry_auth(url(r#"{"username":"u"}"#).as_bytes());
        assert_eq!(half.unwrap_err().status, 400);
        assert_eq!(registry_auth(b"%%%").unwrap_err().status, 400);
        let bad = registry_auth(url(r#"{"auth":"bm9jb2xvbg=="}"#).as_bytes()).unwrap_err();
        assert!(!bad.message.contains("nocolon"), "{}", bad.message);
    }
}
