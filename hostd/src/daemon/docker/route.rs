//! Docker Engine API routing: a request's method, path and query become a
//! [`Route`], with the API version prefix (`/v1.43/…`) checked. Pure: no
//! I/O, so it is unit-tested and fuzzed on its own.

use std::collections::BTreeMap;

use super::error::ApiError;

/// The API version this daemon speaks (Docker Engine 24).
pub const API_VERSION: &str = "1.43";
/// The oldest API version it accepts (as dockerd's minimum).
pub const MIN_API_VERSION: &str = "1.24";

/// A request's query: the last value of each key, percent-decoded.
pub type Query = BTreeMap<String, String>;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET|HEAD /_ping`.
    Ping,
    /// `GET /version`.
    Version,
    /// `GET /info`.
    Info,
    /// `GET /images/json`.
    Images,
    /// `POST /images/create?fromImage=…&tag=…`: a pull.
    ImageCreate,
    /// `GET /images/{name}/json`.
    ImageInspect(String),
    /// `GET /images/{name}/history`.
    ImageHistory(String),
    /// `POST /images/{name}/tag?repo=…&tag=…`.
    ImageTag(String),
    /// `DELETE /images/{name}`.
    ImageRemove(String),
    /// `POST /images/load`.
    ImageLoad,
    /// `POST /images/prune`.
    ImagePrune,
    /// `GET /containers/json`.
    Containers,
    /// `POST /containers/create?name=…`.
    ContainerCreate,
    /// `POST /containers/prune`.
    ContainerPrune,
    /// `/containers/{id}/…`: one container, and what to do with it.
    Container(String, ContainerOp),
    /// `GET /events?since=&until=&filters=`.
    Events,
    /// `GET /system/df`.
    SystemDf,
    /// `GET /networks`.
    Networks,
    /// `GET /networks/{id}`.
    NetworkInspect(String),
    /// `POST /networks/create`.
    NetworkCreate,
    /// `DELETE /networks/{id}`.
    NetworkRemove(String),
    /// `POST /networks/prune`.
    NetworkPrune,
    /// `GET /volumes`.
    Volumes,
    /// `GET /volumes/{name}`.
    VolumeInspect(String),
    /// `POST /volumes/create`.
    VolumeCreate,
    /// `DELETE /volumes/{name}`.
    VolumeRemove(String),
    /// `POST /volumes/prune`.
    VolumePrune,
    /// `POST /containers/{id}/exec`.
    ExecCreate(String),
    /// `/exec/{id}/…`.
    Exec(String, ExecOp),
    /// `/build`, `/swarm`, … : recognised but not
    /// served (yet); the message says which.
    Unsupported(&'static str),
}

/// What to do with one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    /// `GET /containers/{id}/json`.
    Inspect,
    /// `POST …/start`.
    Start,
    /// `POST …/stop`.
    Stop,
    /// `POST …/restart`.
    Restart,
    /// `POST …/kill`.
    Kill,
    /// `POST …/wait`.
    Wait,
    /// `POST …/attach`.
    Attach,
    /// `GET …/logs`.
    Logs,
    /// `DELETE /containers/{id}`.
    Remove,
    /// `GET …/top`.
    Top,
    /// `POST …/pause`.
    Pause,
    /// `POST …/unpause`.
    Unpause,
    /// `POST …/rename?name=`.
    Rename,
    /// `GET …/stats?stream=&one-shot=`.
    Stats,
    /// `POST …/resize?h=&w=`.
    Resize,
    /// `HEAD …/archive?path=`: a path's stat (`docker cp`).
    ArchiveStat,
    /// `GET …/archive?path=`: a tar of a path.
    ArchiveGet,
    /// `PUT …/archive?path=`: a tar extracted into a directory.
    ArchivePut,
}

/// What to do with one exec instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOp {
    /// `POST /exec/{id}/start`.
    Start,
    /// `POST /exec/{id}/resize?h=&w=`.
    Resize,
    /// `GET /exec/{id}/json`.
    Inspect,
}

/// Splits the version prefix off `path`: `/v1.41/info` gives `("1.41",
/// "/info")`; a path without one gives the current version.
pub fn split_version(path: &str) -> Result<(String, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((API_VERSION.to_string(), path));
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    if parse_version(version).is_none() {
        // `/version` itself, or another word beginning with v.
        return Ok((API_VERSION.to_string(), path));
    }
    if compare_versions(version, API_VERSION) == std::cmp::Ordering::Greater {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if compare_versions(version, MIN_API_VERSION) == std::cmp::Ordering::Less {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok((version.to_string(), &rest[end..]))
}

/// `1.41` as (1, 41).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Compares two versions (unparsable ones as 0.0).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    parse_version(a)
        .unwrap_or((0, 0))
        .cmp(&parse_version(b).unwrap_or((0, 0)))
}

/// The route of `method` on `path` (without its version prefix).
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_found = || ApiError::not_found(format!("page not found: {method} {path}"));
    let route = match (method, parts.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => Route::Ping,
        ("GET", ["version"]) => Route::Version,
        ("GET", ["info"]) => Route::Info,
        ("GET", ["images", "json"]) => Route::Images,
        ("POST", ["images", "create"]) => Route::ImageCreate,
        ("POST", ["images", "load"]) => Route::ImageLoad,
        ("POST", ["images", "prune"]) => Route::ImagePrune,
        ("GET", ["images", "search"]) => Route::Unsupported("image search"),
        ("POST", ["images", "push"]) | ("POST", ["images", .., "push"]) => {
            Route::Unsupported("image push")
        }
        ("GET", ["images", "get"]) | ("GET", ["images", .., "get"]) => {
            Route::Unsupported("image save")
        }
        // Image names have slashes: `/images/host:5000/a/b/json`.
        ("GET", ["images", name @ .., "json"]) if !name.is_empty() => {
            Route::ImageInspect(name.join("/"))
        }
        ("GET", ["images", name @ .., "history"]) if !name.is_empty() => {
            Route::ImageHistory(name.join("/"))
        }
        ("POST", ["images", name @ .., "tag"]) if !name.is_empty() => {
            Route::ImageTag(name.join("/"))
        }
        ("DELETE", ["images", name @ ..]) if !name.is_empty() => Route::ImageRemove(name.join("/")),
        ("GET", ["containers", "json"]) => Route::Containers,
        ("POST", ["containers", "create"]) => Route::ContainerCreate,
        ("POST", ["containers", "prune"]) => Route::ContainerPrune,
        ("DELETE", ["containers", id]) => Route::Container(id.to_string(), ContainerOp::Remove),
        (_, ["containers", id, op]) => {
            let op = match (method, *op) {
                ("GET", "json") => ContainerOp::Inspect,
                ("POST", "start") => ContainerOp::Start,
                ("POST", "stop") => ContainerOp::Stop,
                ("POST", "restart") => ContainerOp::Restart,
                ("POST", "kill") => ContainerOp::Kill,
                ("POST", "wait") => ContainerOp::Wait,
                ("POST", "attach") => ContainerOp::Attach,
                ("GET", "logs") => ContainerOp::Logs,
                ("GET", "top") => ContainerOp::Top,
                ("GET", "stats") => ContainerOp::Stats,
                ("POST", "pause") => ContainerOp::Pause,
                ("POST", "unpause") => ContainerOp::Unpause,
                ("POST", "rename") => ContainerOp::Rename,
                ("POST", "update") => return Ok(Route::Unsupported("container update")),
                ("POST", "resize") => ContainerOp::Resize,
                ("POST", "exec") => return Ok(Route::ExecCreate(id.to_string())),
                ("HEAD", "archive") => ContainerOp::ArchiveStat,
                ("GET", "archive") => ContainerOp::ArchiveGet,
                ("PUT", "archive") => ContainerOp::ArchivePut,
                ("GET", "export") => return Ok(Route::Unsupported("container export")),
                ("GET", "changes") => return Ok(Route::Unsupported("container diff")),
                _ => return Err(not_found()),
            };
            Route::Container(id.to_string(), op)
        }
        (_, ["exec", id, op]) => {
            let op = match (method, *op) {
                ("POST", "start") => ExecOp::Start,
                ("POST", "resize") => ExecOp::Resize,
                ("GET", "json") => ExecOp::Inspect,
                _ => return Err(not_found()),
            };
            Route::Exec(id.to_string(), op)
        }
        ("GET", ["events"]) => Route::Events,
        ("GET", ["system", "df"]) => Route::SystemDf,
        ("GET", ["networks"]) => Route::Networks,
        ("POST", ["networks", "create"]) => Route::NetworkCreate,
        ("POST", ["networks", "prune"]) => Route::NetworkPrune,
        ("GET", ["networks", id]) => Route::NetworkInspect(id.to_string()),
        ("DELETE", ["networks", id]) => Route::NetworkRemove(id.to_string()),
        ("POST", ["networks", _, "connect" | "disconnect"]) => Route::Unsupported(
            "connecting a container to another network (a container joins one network, when it is created)",
        ),
        ("GET", ["volumes"]) => Route::Volumes,
        ("POST", ["volumes", "create"]) => Route::VolumeCreate,
        ("POST", ["volumes", "prune"]) => Route::VolumePrune,
        ("GET", ["volumes", name]) => Route::VolumeInspect(name.to_string()),
        ("DELETE", ["volumes", name]) => Route::VolumeRemove(name.to_string()),
        (_, ["build", ..]) => Route::Unsupported("build"),
        (_, ["swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs", ..]) => {
            Route::Unsupported("swarm")
        }
        (_, ["plugins", ..]) => Route::Unsupported("plugins"),
        (_, ["session"]) => Route::Unsupported("build sessions"),
        (_, ["distribution", ..]) => Route::Unsupported("distribution inspect"),
        (_, ["commit"]) => Route::Unsupported("commit"),
        (_, ["auth"]) => Route::Unsupported("login (pass credentials with X-Registry-Auth)"),
        _ => return Err(not_found()),
    };
    Ok(route)
}

/// Parses a query string (`a=1&b=x%20y`): the last value of each key wins.
pub fn parse_query(query: &str) -> Result<Query, ApiError> {
    let mut map = Query::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(percent_decode_form(key)?, percent_decode_form(value)?);
    }
    Ok(map)
}

/// Decodes `%XX` escapes of a path segment.
fn percent_decode(text: &str) -> Result<String, ApiError> {
    decode(text, false)
}

/// Decodes a query component: `%XX` escapes and `+` for a space.
fn percent_decode_form(text: &str) -> Result<String, ApiError> {
    decode(text, true)
}

fn decode(text: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let bytes = mkhost_shared::percent::decode(text, plus_is_space)
        .ok_or_else(|| ApiError::bad_request(format!("bad percent-encoding in {text:?}")))?;
    String::from_utf8(bytes).map_err(|_| ApiError::bad_request(format!("{text:?} is not UTF-8")))
}

/// A query flag: `1`, `true` or `True` (as Go's `strconv.ParseBool`).
pub fn flag(query: &Query, key: &str) -> Result<bool, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid value {other:?} for {key}: want true or false"
        ))),
    }
}

/// A numeric query value, if given.
pub fn number<T: std::str::FromStr>(query: &Query, key: &str) -> Result<Option<T>, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid value {text:?} for {key}: want a number"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_split_and_checked() {
        assert_eq!(
            split_version("/v1.41/info").unwrap(),
            ("1.41".to_string(), "/info")
        );
        assert_eq!(
            split_version("/version").unwrap(),
            (API_VERSION.to_string(), "/version")
        );
        assert_eq!(
            split_version("/_ping").unwrap(),
            (API_VERSION.to_string(), "/_ping")
        );
        let new = split_version("/v9.99/info").unwrap_err();
        assert_eq!(new.status, 400);
        assert!(new.message.contains("too new"), "{}", new.message);
        assert!(split_version("/v1.12/info")
            .unwrap_err()
            .message
            .contains("too old"));
        assert_eq!(compare_versions("1.9", "1.10"), std::cmp::Ordering::Less);
    }

    #[test]
    fn routes() {
        assert_eq!(route("HEAD", "/_ping").unwrap(), Route::Ping);
        assert_eq!(
            route("GET", "/images/host:5000/a/b:1/json").unwrap(),
            Route::ImageInspect("host:5000/a/b:1".into())
        );
        assert_eq!(
            route("DELETE", "/images/busybox:latest").unwrap(),
            Route::ImageRemove("busybox:latest".into())
        );
        assert_eq!(
            route("POST", "/containers/web/start").unwrap(),
            Route::Container("web".into(), ContainerOp::Start)
        );
        assert_eq!(
            route("DELETE", "/containers/web").unwrap(),
            Route::Container("web".into(), ContainerOp::Remove)
        );
        assert!(matches!(
            route("POST", "/build").unwrap(),
            Route::Unsupported("build")
        ));
        assert_eq!(
            route("HEAD", "/containers/web/archive").unwrap(),
            Route::Container("web".into(), ContainerOp::ArchiveStat)
        );
        assert_eq!(
            route("PUT", "/containers/web/archive").unwrap(),
            Route::Container("web".into(), ContainerOp::ArchivePut)
        );
        assert_eq!(route("GET", "/nope").unwrap_err().status, 404);
        assert_eq!(
            route("PUT", "/containers/web/start").unwrap_err().status,
            404
        );
        assert_eq!(route("GET", "/images/%zz/json").unwrap_err().status, 400);
    }

    #[test]
    fn queries() {
        let q = parse_query("name=a%2Fb&all=1&x=y+z&all=0").unwrap();
        assert_eq!(q["name"], "a/b");
        assert_eq!(q["x"], "y z");
        assert!(!flag(&q, "all").unwrap());
        assert!(flag(&parse_query("f=True").unwrap(), "f").unwrap());
        assert!(flag(&parse_query("f=maybe").unwrap(), "f").is_err());
        assert_eq!(
            number::<u32>(&parse_query("t=5").unwrap(), "t").unwrap(),
            Some(5)
        );
        assert!(number::<u32>(&parse_query("t=-").unwrap(), "t").is_err());
        assert!(parse_query("a=%ff").is_err());
    }
}
