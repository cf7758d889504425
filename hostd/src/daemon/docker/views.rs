//! How hostd's records look through the Docker API: container and image
//! lists and inspections, in the shapes (and field names) the docker CLI,
//! docker-py and docker-compose read. Pure.

use serde_json::{json, Map, Value};

use crate::backend::CreateSpec;
use mkhost_shared::container::{Record, RestartPolicy, RunRequest};
use mkhost_shared::images::{ImageInfo, ImageSummary};
use mkhost_shared::network::{Attachment, PortMapping, Protocol, MODE_NONE};
use mkhost_shared::time::parse_rfc3339;

/// What stands for a time that is not set, as Go prints its zero time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Docker's ids are 64 hex digits; hostd's are 16 and shown as they are.
pub fn image_id(id: &str) -> String {
    match id.starts_with("sha256:") {
        true => id.to_string(),
        false => format!("sha256:{id}"),
    }
}

/// A name as the docker CLI shows it: `docker.io/library/busybox:1` is
/// `busybox:1`, `docker.io/a/b:1` is `a/b:1`.
pub fn familiar(name: &str) -> String {
    let short = name.strip_prefix("docker.io/").unwrap_or(name);
    short.strip_prefix("library/").unwrap_or(short).to_string()
}

/// Seconds since the epoch of an RFC 3339 time (0 if unset or bad).
pub fn unix_seconds(time: &str) -> i64 {
    parse_rfc3339(time).map_or(0, |(secs, _)| secs)
}

/// Docker's state names: hostd's `restarting` is Docker's too; a frozen
/// running container is `paused`.
fn state(record: &Record) -> &str {
    match record.paused && record.status == "running" {
        true => "paused",
        false => record.status.as_str(),
    }
}

/// `Up 3 minutes`, `Exited (0) 5 seconds ago`, `Created`.
fn status_text(record: &Record, now: i64) -> String {
    let ago = |time: &str| human_duration(now - unix_seconds(time));
    match record.status.as_str() {
        "running" if record.paused => format!("Up {} (Paused)", ago(&record.started)),
        "running" => format!("Up {}", ago(&record.started)),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            record.exit_code.unwrap_or(0),
            ago(record.finished.as_deref().unwrap_or(""))
        ),
        "exited" => match &record.finished {
            Some(finished) => format!(
                "Exited ({}) {} ago",
                record.exit_code.unwrap_or(0),
                ago(finished)
            ),
            None => format!("Exited ({})", record.exit_code.unwrap_or(0)),
        },
        _ => "Created".to_string(),
    }
}

/// Go's `units.HumanDuration`, as `docker ps` shows it.
fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 14 * 86_400 => format!("{} days", s / 86_400),
        s if s < 60 * 86_400 => format!("{} weeks", s / (7 * 86_400)),
        s if s < 2 * 365 * 86_400 => format!("{} months", s / (30 * 86_400)),
        s => format!("{} years", s / (365 * 86_400)),
    }
}

/// The network mode a record's container runs in.
fn network_mode(record: &Record) -> String {
    match record.network.as_ref().map(|n| n.network.as_str()) {
        None | Some("") => MODE_NONE.to_string(),
        Some(name) => name.to_string(),
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn host_ip(port: &PortMapping) -> String {
    port.host_ip
        .map_or("0.0.0.0".to_string(), |ip| ip.to_string())
}

/// `docker ps`'s `Ports`.
fn summary_ports(attachment: Option<&Attachment>) -> Value {
    let ports: Vec<Value> = attachment
        .map(|a| a.ports.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            json!({
                "IP": host_ip(p),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": protocol(p.protocol),
            })
        })
        .collect();
    Value::Array(ports)
}

/// `NetworkSettings.Ports` of an inspection: `{"80/tcp": [{HostIp, HostPort}]}`.
fn inspect_ports(attachment: Option<&Attachment>) -> Value {
    let mut ports = Map::new();
    for p in attachment.map(|a| a.ports.as_slice()).unwrap_or_default() {
        let key = format!("{}/{}", p.container_port, protocol(p.protocol));
        let entry = ports.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({ "HostIp": host_ip(p), "HostPort": p.host_port.to_string() }));
        }
    }
    Value::Object(ports)
}

/// One network endpoint, as inspect and list show it.
fn endpoint(record: &Record, attachment: &Attachment) -> Value {
    json!({
        "IPAMConfig": null,
        "Links": null,
        "Aliases": attachment.aliases,
        "NetworkID": attachment.network,
        "EndpointID": record.id,
        "Gateway": attachment.gateway.map(|g| g.to_string()).unwrap_or_default(),
        "IPAddress": attachment.address.map(|a| a.to_string()).unwrap_or_default(),
        "IPPrefixLen": if attachment.address.is_some() { attachment.prefix } else { 0 },
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": attachment.mac.clone().unwrap_or_default(),
        "DriverOpts": null,
    })
}

fn networks(record: &Record) -> Value {
    let mut map = Map::new();
    if let Some(a) = record.network.as_ref().filter(|a| !a.network.is_empty()) {
        map.insert(a.network.clone(), endpoint(record, a));
    }
    Value::Object(map)
}

/// Mounts as `docker inspect` and `docker ps` show them.
fn mounts(record: &Record, spec: Option<&CreateSpec>) -> Value {
    let mut list = Vec::new();
    for v in &record.volumes {
        let bind = v.is_bind();
        let source = spec
            .and_then(|s| s.binds.iter().find(|b| b.target == v.target))
            .map(|b| b.source.display().to_string())
            .unwrap_or_else(|| v.source.clone());
        list.push(json!({
            "Type": if bind { "bind" } else { "volume" },
            "Name": if bind { Value::Null } else { Value::from(v.source.clone()) },
            "Source": source,
            "Destination": v.target,
            "Driver": if bind { "" } else { "local" },
            "Mode": if v.read_only { "ro" } else { "" },
            "RW": !v.read_only,
            "Propagation": if bind { "rprivate" } else { "" },
        }));
    }
    if let Some(spec) = spec {
        for path in spec.tmpfs.keys() {
            list.push(json!({
                "Type": "tmpfs", "Source": "", "Destination": path, "Mode": "",
                "RW": true, "Propagation": "",
            }));
        }
    }
    Value::Array(list)
}

/// A command as `docker ps` shows it: dockerd joins the arguments with
/// spaces, each one that has a space in single quotes.
fn command_line(command: &[String]) -> String {
    command
        .iter()
        .map(|arg| {
            if arg.contains(' ') {
                format!("'{arg}'")
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A row of `GET /containers/json`.
pub fn container_summary(record: &Record, now: i64) -> Value {
    json!({
        "Id": record.id,
        "Names": [format!("/{}", record.name)],
        "Image": record.image,
        "ImageID": image_id(&record.image_id),
        "Command": command_line(&record.command),
        "Created": unix_seconds(&record.created),
        "Ports": summary_ports(record.network.as_ref()),
        "Labels": record.labels,
        "State": state(record),
        "Status": status_text(record, now),
        "HostConfig": { "NetworkMode": network_mode(record) },
        "NetworkSettings": { "Networks": networks(record) },
        "Mounts": mounts(record, None),
    })
}

fn restart_json(policy: RestartPolicy) -> Value {
    match policy {
        RestartPolicy::No => json!({ "Name": "no", "MaximumRetryCount": 0 }),
        RestartPolicy::Always => json!({ "Name": "always", "MaximumRetryCount": 0 }),
        RestartPolicy::UnlessStopped => {
            json!({ "Name": "unless-stopped", "MaximumRetryCount": 0 })
        }
        RestartPolicy::OnFailure { max } => {
            json!({ "Name": "on-failure", "MaximumRetryCount": max.unwrap_or(0) })
        }
    }
}

/// What `docker inspect CONTAINER` shows. `image` is the image's config
/// (for `Config.Cmd` and `Config.Entrypoint`), when the store still has it.
pub fn container_inspect(
    record: &Record,
    request: Option<&RunRequest>,
    spec: &CreateSpec,
    image: Option<&ImageInfo>,
) -> Value {
    let running = record.status == "running";
    let (path, args) = match record.command.split_first() {
        Some((path, args)) => (path.clone(), args.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let image_config = image.map(|i| &i.config);
    let entrypoint = request
        .and_then(|r| r.entrypoint.clone())
        .or_else(|| image_config.and_then(|c| c.entrypoint.clone()));
    let cmd = match request {
        Some(r) if !r.command.is_empty() => Some(r.command.clone()),
        Some(r) if r.entrypoint.is_some() => None,
        _ => image_config.and_then(|c| c.cmd.clone()),
    };
    let limits = &record.limits;
    let bundle = spec.bundle.display().to_string();
    let user = request.and_then(|r| r.user.clone()).unwrap_or_default();
    json!({
        "Id": record.id,
        "Created": record.created,
        "Path": path,
        "Args": args,
        "State": {
            "Status": state(record),
            "Running": running,
            "Paused": record.paused,
            "Restarting": record.status == "restarting",
            "OOMKilled": record.oom_killed,
            "Dead": false,
            "Pid": if running { record.pid } else { 0 },
            "ExitCode": record.exit_code.unwrap_or(0),
            "Error": record.error.clone().unwrap_or_default(),
            "StartedAt": if record.started.is_empty() { ZERO_TIME } else { record.started.as_str() },
            "FinishedAt": record.finished.clone().unwrap_or_else(|| ZERO_TIME.to_string()),
        },
        "Image": image_id(&record.image_id),
        "ResolvConfPath": format!("{bundle}/resolv.conf"),
        "HostnamePath": format!("{bundle}/hostname"),
        "HostsPath": format!("{bundle}/hosts"),
        "LogPath": "",
        "Name": format!("/{}", record.name),
        "RestartCount": record.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": {
            "Binds": record.volumes.iter().map(|v| format!("{}:{}{}", v.source, v.target, if v.read_only { ":ro" } else { "" })).collect::<Vec<_>>(),
            "NetworkMode": network_mode(record),
            "PortBindings": inspect_ports(record.network.as_ref()),
            "RestartPolicy": restart_json(record.restart),
            "AutoRemove": record.auto_remove,
            "CapAdd": request.map(|r| r.cap_add.clone()).unwrap_or_default(),
            "CapDrop": request.map(|r| r.cap_drop.clone()).unwrap_or_default(),
            "Privileged": false,
            "ReadonlyRootfs": spec.read_only,
            "OomScoreAdj": spec.oom_score_adj,
            "Tmpfs": spec.tmpfs,
            "Memory": limits.memory.unwrap_or(0),
            "NanoCpus": limits.nano_cpus.unwrap_or(0),
            "CpuShares": 0,
            "PidsLimit": limits.pids,
            "CpusetCpus": limits.cpuset_cpus.clone().unwrap_or_default(),
            "CpusetMems": limits.cpuset_mems.clone().unwrap_or_default(),
            "LogConfig": { "Type": "json-file", "Config": {} },
            "Init": null,
        },
        "GraphDriver": { "Name": "overlay", "Data": { "MergedDir": spec.rootfs.display().to_string() } },
        "Mounts": mounts(record, Some(spec)),
        "Config": {
            "Hostname": spec.hostname,
            "Domainname": "",
            "User": user,
            "AttachStdin": spec.open_stdin,
            "AttachStdout": true,
            "AttachStderr": true,
            "Tty": spec.tty,
            "OpenStdin": spec.open_stdin,
            "StdinOnce": request.is_some_and(|r| r.stdin_once),
            "Env": spec.env,
            "Cmd": cmd,
            "Image": record.image,
            "Volumes": null,
            // What was asked for (or the image's), as dockerd shows it; the
            // process runs in / without either.
            "WorkingDir": request
                .and_then(|r| r.workdir.clone())
                .or_else(|| image_config.and_then(|c| c.working_dir.clone()))
                .unwrap_or_default(),
            "Entrypoint": entrypoint,
            "OnBuild": null,
            "Labels": record.labels,
            "StopSignal": "SIGTERM",
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": record.id,
            "HairpinMode": false,
            "Ports": inspect_ports(record.network.as_ref()),
            "SandboxKey": record.network.as_ref().and_then(|n| n.netns.clone()).unwrap_or_default(),
            "IPAddress": record.network.as_ref().and_then(|n| n.address).map(|a| a.to_string()).unwrap_or_default(),
            "IPPrefixLen": record.network.as_ref().filter(|n| n.address.is_some()).map_or(0, |n| n.prefix),
            "Gateway": record.network.as_ref().and_then(|n| n.gateway).map(|g| g.to_string()).unwrap_or_default(),
            "MacAddress": record.network.as_ref().and_then(|n| n.mac.clone()).unwrap_or_default(),
            "Networks": networks(record),
        },
    })
}

/// Splits `name:tag` names and `name@digest` references for `RepoTags`
/// and `RepoDigests`. A name without a tag (an OCI archive's `bb`) is
/// `bb:latest`, as dockerd lists it: the docker CLI skips a `RepoTags`
/// entry without a tag, so `docker images` would not show the image.
fn repo_names(names: &[String]) -> (Vec<String>, Vec<String>) {
    let (tags, digests): (Vec<String>, Vec<String>) =
        names.iter().cloned().partition(|n| !n.contains('@'));
    let tags = tags
        .into_iter()
        .map(|n| {
            let last = n.rsplit('/').next().unwrap_or(&n);
            if last.contains(':') {
                n
            } else {
                format!("{n}:latest")
            }
        })
        .collect();
    (tags, digests)
}

/// A row of `GET /images/json`.
pub fn image_summary(image: &ImageSummary) -> Value {
    let (tags, digests) = repo_names(&image.names);
    json!({
        "Id": image_id(&image.id),
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": image.created.as_deref().map_or(0, unix_seconds),
        "Size": image.unpacked_size,
        "SharedSize": -1,
        "VirtualSize": image.unpacked_size,
        "Labels": {},
        "Containers": -1,
    })
}

/// What `docker image inspect` shows.
pub fn image_inspect(image: &ImageInfo) -> Value {
    let (tags, digests) = repo_names(&image.names);
    let c = &image.config;
    let set = |items: &[String]| -> Value {
        match items.is_empty() {
            true => Value::Null,
            false => Value::Object(items.iter().map(|i| (i.clone(), json!({}))).collect()),
        }
    };
    json!({
        "Id": image_id(&image.id),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": "",
        "Created": image.created.clone().unwrap_or_else(|| ZERO_TIME.to_string()),
        "Container": "",
        "DockerVersion": "",
        "Author": "",
        "Config": {
            "Env": c.env,
            "Cmd": c.cmd,
            "Entrypoint": c.entrypoint,
            "WorkingDir": c.working_dir.clone().unwrap_or_default(),
            "User": c.user.clone().unwrap_or_default(),
            "ExposedPorts": set(&c.exposed_ports),
            "Volumes": set(&c.volumes),
            "Labels": c.labels,
            "StopSignal": c.stop_signal,
        },
        "Architecture": image.architecture.clone().unwrap_or_else(|| "amd64".into()),
        "Os": image.os.clone().unwrap_or_else(|| "linux".into()),
        "Size": image.unpacked_size,
        "VirtualSize": image.unpacked_size,
        "GraphDriver": { "Name": "overlay", "Data": null },
        "RootFS": {
            "Type": "layers",
            "Layers": image.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": ZERO_TIME },
    })
}

/// `GET /images/{name}/history`: one entry per layer, newest first.
pub fn image_history(image: &ImageInfo) -> Value {
    let created = image.created.as_deref().map_or(0, unix_seconds);
    let mut rows: Vec<Value> = image
        .layers
        .iter()
        .map(|l| {
            json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": "",
                "Tags": null,
                "Size": l.unpacked_size,
                "Comment": l.digest,
            })
        })
        .collect();
    rows.reverse();
    if let Some(first) = rows.first_mut() {
        first["Id"] = Value::from(image_id(&image.id));
        let (tags, _) = repo_names(&image.names);
        first["Tags"] = json!(tags);
    }
    Value::Array(rows)
}

/// Whether a `docker ps` filter set (`{"status": ["exited"], …}`) keeps
/// `record`. Unknown filters are errors.
pub fn matches_filters(
    record: &Record,
    filters: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<bool, String> {
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let any = |test: &dyn Fn(&str) -> bool| values.iter().any(|v| test(v));
        let keep = match key.as_str() {
            "id" => any(&|v| record.id.starts_with(v)),
            "name" => any(&|v| record.name.contains(v.trim_start_matches('/'))),
            "status" => any(&|v| v == state(record)),
            "label" => any(&|v| match v.split_once('=') {
                Some((k, val)) => record.labels.get(k).is_some_and(|x| x == val),
                None => record.labels.contains_key(v),
            }),
            "ancestor" => any(&|v| {
                record.image == v
                    || image_id(&record.image_id) == image_id(v)
                    || (v.len() >= 4 && image_id(&record.image_id).starts_with(&image_id(v)))
            }),
            "exited" => any(&|v| {
                record.status == "exited"
                    && record.exit_code.map(|c| c.to_string()).as_deref() == Some(v)
            }),
            "network" => any(&|v| record.network.as_ref().is_some_and(|n| n.network == v)),
            other => return Err(format!("invalid filter '{other}'")),
        };
        if !keep {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The text of a `filters` query value: `{"name":["web"]}`, or the old
/// form `{"name":{"web":true}}`.
pub fn parse_filters(
    text: Option<&String>,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    let mut filters = std::collections::BTreeMap::new();
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(filters);
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("invalid filters {text:?}: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!("invalid filters {text:?}: want an object"));
    };
    for (key, values) in map {
        let list = match values {
            Value::Array(items) => items
                .into_iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            Value::Object(map) => Some(
                map.into_iter()
                    .filter(|(_, v)| v == &Value::Bool(true))
                    .map(|(k, _)| k)
                    .collect(),
            ),
            _ => None,
        }
        .ok_or_else(|| {
            format!("invalid filters {text:?}: the values of {key:?} must be strings")
        })?;
        filters.insert(key, list);
    }
    Ok(filters)
}

/// The time now, for status texts.
pub fn now_seconds() -> i64 {
    unix_seconds(&mkhost_shared::time::rfc3339_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3 * 86_400), "3 days");
    }

    #[test]
    fn filters_parse_both_forms() {
        let f = parse_filters(Some(
            &r#"{"name":["web"],"status":{"exited":true}}"#.to_string(),
        ))
        .unwrap();
        assert_eq!(f["name"], ["web"]);
        assert_eq!(f["status"], ["exited"]);
        assert!(parse_filters(Some(&"[1]".to_string())).is_err());
        assert!(parse_filters(Some(&r#"{"name":[1]}"#.to_string())).is_err());
    }

    #[test]
    fn repo_tags_always_have_a_tag() {
        let names = [
            "bb".to_string(),
            "host:5000/a/b".to_string(),
            "busybox:1.36".to_string(),
            "busybox@sha256:00".to_string(),
        ];
        let (tags, digests) = repo_names(&names);
        assert_eq!(tags, ["bb:latest", "host:5000/a/b:latest", "busybox:1.36"]);
        assert_eq!(digests, ["busybox@sha256:00"]);
    }

    #[test]
    fn commands_quote_arguments_with_spaces() {
        let command = ["sh", "-c", "echo a; sleep 1"].map(String::from);
        assert_eq!(command_line(&command), "sh -c 'echo a; sleep 1'");
    }
}
