//! `POST /containers/create`: Docker's container config (`Config`,
//! `HostConfig`, `NetworkingConfig`) becomes hostd's [`RunRequest`]. Every
//! field is either honoured or, when set to anything but its zero value,
//! refused with its name: nothing is silently ignored. Pure, fuzzed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::daemon::containers::execs::ExecConfig;
use mkhost_shared::container::{RestartPolicy, RunRequest, VolumeMount};
use mkhost_shared::network::{PortMapping, Protocol, MODE_HOST, MODE_NONE};

/// Largest JSON nesting accepted (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 32;

/// Fields that only describe the image or the client's attach wishes, or
/// whose value has no effect here: accepted whatever they say.
const INFORMATIONAL: &[&str] = &[
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "ArgsEscaped",
    "OnBuild",
    "Shell",
];

/// A JSON object whose fields are taken one by one; what is left must be
/// zero.
struct Fields {
    /// `Config`, `HostConfig.`: prefixes the names in errors.
    prefix: &'static str,
    map: Map<String, Value>,
}

impl Fields {
    fn new(prefix: &'static str, value: Option<Value>) -> Result<Self, ApiError> {
        let map = match value {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "{}: want an object, got {}",
                    prefix.trim_end_matches('.'),
                    kind(&other)
                )))
            }
        };
        Ok(Fields { prefix, map })
    }

    /// Takes `key`, decoded as `T`; missing or null is `None`.
    fn take<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ApiError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("{}{key}: {e}", self.prefix))),
        }
    }

    /// Takes a string; empty is `None`.
    fn string(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        Ok(self.take::<String>(key)?.filter(|s| !s.is_empty()))
    }

    /// Takes a number where 0 and -1 mean unset.
    fn limit(&mut self, key: &str) -> Result<Option<i64>, ApiError> {
        Ok(self.take::<i64>(key)?.filter(|n| *n > 0))
    }

    /// Refuses `key` unless it is zero (or `allowed`).
    fn refuse_unless(&mut self, key: &str, allowed: &[Value], why: &str) -> Result<(), ApiError> {
        match self.map.remove(key) {
            Some(value) if !is_zero(&value) && !allowed.contains(&value) => {
                Err(ApiError::bad_request(format!(
                    "{}{key} = {} is not supported by this host: {why}",
                    self.prefix,
                    short(&value)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Every field not taken must be zero: the first that is not is named.
    fn finish(self) -> Result<(), ApiError> {
        for (key, value) in &self.map {
            if INFORMATIONAL.contains(&key.as_str()) || is_zero(value) {
                continue;
            }
            return Err(ApiError::bad_request(format!(
                "{}{key} = {} is not supported by this host (docs/docker-api.md lists what is)",
                self.prefix,
                short(value)
            )));
        }
        Ok(())
    }
}

/// A value as Go's zero value would encode it, or an unset limit (-1).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f == 0.0 || f == -1.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.iter().all(is_zero),
        Value::Object(map) => map.values().all(is_zero),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message, cut.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// How deep `value` nests.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses a JSON body, refusing nesting deeper than [`MAX_DEPTH`].
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if depth(&value) > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "the JSON body nests deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(value)
}

/// The run request of a create body, for a container called `name`.
pub fn run_request(body: &[u8], name: Option<&str>) -> Result<RunRequest, ApiError> {
    let mut top = Fields::new("", Some(parse_json(body)?))?;
    let host = Fields::new("HostConfig.", top.map.remove("HostConfig"))?;
    let networking = Fields::new("NetworkingConfig.", top.map.remove("NetworkingConfig"))?;
    let mut run = RunRequest {
        name: name
            .filter(|n| !n.is_empty())
            .map(|n| n.trim_start_matches('/').to_string()),
        ..RunRequest::default()
    };
    config(&mut top, &mut run)?;
    host_config(host, &mut run)?;
    networking_config(networking, &mut run)?;
    top.finish()?;
    run.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(run)
}

/// The exec config of a `POST /containers/{id}/exec` body.
pub fn exec_config(body: &[u8]) -> Result<ExecConfig, ApiError> {
    let mut c = Fields::new("", Some(parse_json(body)?))?;
    let mut config = ExecConfig {
        cmd: c.take("Cmd")?.unwrap_or_default(),
        env: c.take("Env")?.unwrap_or_default(),
        user: c.string("User")?,
        workdir: c.string("WorkingDir")?,
        tty: c.take("Tty")?.unwrap_or(false),
        attach_stdin: c.take("AttachStdin")?.unwrap_or(false),
        attach_stdout: c.take("AttachStdout")?.unwrap_or(false),
        attach_stderr: c.take("AttachStderr")?.unwrap_or(false),
        detach_keys: c.string("DetachKeys")?,
        console_size: None,
    };
    if config.cmd.is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    for entry in &config.env {
        if !entry.contains('=') || entry.starts_with('=') {
            return Err(ApiError::bad_request(format!(
                "Env: {entry:?} is not NAME=value"
            )));
        }
    }
    if let Some(dir) = &config.workdir {
        if !dir.starts_with('/') {
            return Err(ApiError::bad_request(format!(
                "WorkingDir: {dir:?} is not an absolute path"
            )));
        }
    }
    config.console_size = console_size(&mut c)?;
    // The start request says it again; that one counts.
    c.take::<bool>("Detach")?;
    c.refuse_unless(
        "Privileged",
        &[],
        "exec runs with the container's own privileges",
    )?;
    c.finish()?;
    Ok(config)
}

/// `ConsoleSize`: `[rows, columns]`, `None` when unset or zero.
fn console_size(c: &mut Fields) -> Result<Option<(u16, u16)>, ApiError> {
    Ok(c.take::<[u16; 2]>("ConsoleSize")?
        .filter(|[rows, cols]| *rows > 0 && *cols > 0)
        .map(|[rows, cols]| (rows, cols)))
}

/// `Config` (the body's top level).
fn config(c: &mut Fields, run: &mut RunRequest) -> Result<(), ApiError> {
    run.image = c
        .string("Image")?
        .ok_or_else(|| ApiError::bad_request("Image: a container needs an image"))?;
    run.command = c.take("Cmd")?.unwrap_or_default();
    run.entrypoint = c.take::<Vec<String>>("Entrypoint")?.map(|e| {
        // `--entrypoint ""` arrives as [""]: no entrypoint.
        match e.as_slice() {
            [only] if only.is_empty() => Vec::new(),
            _ => e,
        }
    });
    run.env = c.take("Env")?.unwrap_or_default();
    run.user = c.string("User")?;
    run.workdir = c.string("WorkingDir")?;
    run.hostname = c.string("Hostname")?;
    run.labels = c.take("Labels")?.unwrap_or_default();
    run.tty = c.take::<bool>("Tty")?.unwrap_or(false);
    run.open_stdin = c.take::<bool>("OpenStdin")?.unwrap_or(false);
    run.stdin_once = c.take::<bool>("StdinOnce")?.unwrap_or(false);
    c.refuse_unless("Domainname", &[], "no domain names")?;
    // A set (`{"/data": {}}`): any key is a volume, whatever its value.
    let volumes: Map<String, Value> = c.take("Volumes")?.unwrap_or_default();
    if let Some(path) = volumes.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Volumes: anonymous volume {path} is not supported by this host: name it (-v NAME:{path})"
        )));
    }
    c.refuse_unless("Healthcheck", &[], "no health checks")?;
    c.refuse_unless(
        "StopSignal",
        &[Value::from("SIGTERM")],
        "stop sends SIGTERM",
    )?;
    c.refuse_unless("StopTimeout", &[], "give the timeout to stop (-t)")?;
    c.refuse_unless("NetworkDisabled", &[], "use --network none")?;
    c.refuse_unless("MacAddress", &[], "addresses come from the network")?;
    Ok(())
}

/// `HostConfig`.
fn host_config(mut h: Fields, run: &mut RunRequest) -> Result<(), ApiError> {
    run.console_size = console_size(&mut h)?;
    for bind in h.take::<Vec<String>>("Binds")?.unwrap_or_default() {
        run.volumes.push(
            VolumeMount::parse(&bind)
                .map_err(|e| ApiError::bad_request(format!("HostConfig.Binds: {e}")))?,
        );
    }
    for mount in h.take::<Vec<Value>>("Mounts")?.unwrap_or_default() {
        mount_entry(mount, run)?;
    }
    let tmpfs: BTreeMap<String, String> = h.take("Tmpfs")?.unwrap_or_default();
    run.tmpfs.extend(tmpfs);
    run.network = match h.string("NetworkMode")?.as_deref() {
        None | Some("default" | "bridge") => None,
        Some(mode @ (MODE_HOST | MODE_NONE)) => Some(mode.to_string()),
        Some(mode) if mode.starts_with("container:") => {
            return Err(ApiError::bad_request(format!(
                "HostConfig.NetworkMode = {mode:?} is not supported by this host: containers do not share network namespaces"
            )))
        }
        Some(name) => Some(name.to_string()),
    };
    let bindings: BTreeMap<String, Option<Vec<Value>>> =
        h.take("PortBindings")?.unwrap_or_default();
    for (port, hosts) in bindings {
        for binding in hosts.unwrap_or_default() {
            run.publish.push(port_binding(&port, &binding)?);
        }
    }
    if let Some(policy) = h.take::<Value>("RestartPolicy")? {
        run.restart = restart_policy(&policy)?;
    }
    run.auto_remove = h.take("AutoRemove")?.unwrap_or(false);
    run.cap_add = h.take("CapAdd")?.unwrap_or_default();
    run.cap_drop = h.take("CapDrop")?.unwrap_or_default();
    run.read_only = h.take("ReadonlyRootfs")?.unwrap_or(false);
    run.oom_score_adj = h.take("OomScoreAdj")?.unwrap_or(0);
    run.limits.memory = h.limit("Memory")?;
    run.limits.nano_cpus = h.limit("NanoCpus")?;
    run.limits.pids = h.limit("PidsLimit")?;
    run.limits.cpu_weight = h.limit("CpuShares")?.map(shares_to_weight);
    run.limits.cpuset_cpus = h.string("CpusetCpus")?;
    run.limits.cpuset_mems = h.string("CpusetMems")?;
    if let Some(swap) = h.take::<i64>("MemorySwap")? {
        // Docker's default: swap as large as the memory limit; hosts run
        // from RAM without swap, so only "unlimited" and "the same" mean
        // something here.
        if swap > 0
            && Some(swap) != run.limits.memory.map(|m| m * 2)
            && Some(swap) != run.limits.memory
        {
            return Err(ApiError::bad_request(format!(
                "HostConfig.MemorySwap = {swap} is not supported by this host: it has no swap"
            )));
        }
    }
    if let Some(log) = h.take::<Value>("LogConfig")? {
        let kind = log.get("Type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "" | "json-file" | "local") {
            return Err(ApiError::bad_request(format!(
                "HostConfig.LogConfig.Type = {kind:?} is not supported by this host: logs stay on the host (docker logs)"
            )));
        }
    }
    h.refuse_unless(
        "Privileged",
        &[],
        "add the capabilities it needs (--cap-add)",
    )?;
    h.refuse_unless("Init", &[], "the image's own init runs as PID 1")?;
    h.refuse_unless(
        "PublishAllPorts",
        &[],
        "publish each port (-p HOST:CONTAINER)",
    )?;
    h.refuse_unless("Links", &[], "use a network and its DNS names")?;
    h.refuse_unless("VolumesFrom", &[], "name the volumes (-v)")?;
    h.refuse_unless("Devices", &[], "no devices are passed to containers")?;
    h.refuse_unless(
        "CgroupnsMode",
        &[Value::from("private")],
        "cgroup namespaces are private",
    )?;
    h.refuse_unless(
        "IpcMode",
        &[Value::from("private"), Value::from("shareable")],
        "IPC namespaces are private",
    )?;
    h.refuse_unless("PidMode", &[], "PID namespaces are private")?;
    h.refuse_unless("UTSMode", &[], "UTS namespaces are private")?;
    h.refuse_unless("UsernsMode", &[], "no user namespaces")?;
    h.refuse_unless("Runtime", &[Value::from("runc")], "hostd is the runtime")?;
    h.refuse_unless(
        "Isolation",
        &[Value::from("default")],
        "Linux namespaces are the isolation",
    )?;
    h.finish()
}

/// One of `HostConfig.Mounts`.
fn mount_entry(mount: Value, run: &mut RunRequest) -> Result<(), ApiError> {
    let mut m = Fields::new("HostConfig.Mounts[].", Some(mount))?;
    let kind = m.string("Type")?.unwrap_or_else(|| "volume".into());
    let target = m
        .string("Target")?
        .ok_or_else(|| ApiError::bad_request("HostConfig.Mounts[].Target is missing"))?;
    let read_only = m.take("ReadOnly")?.unwrap_or(false);
    match kind.as_str() {
        "bind" | "volume" => {
            let source = m.string("Source")?.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "HostConfig.Mounts[].Source is missing for {target}: anonymous volumes are not supported, name the volume"
                ))
            })?;
            let spec = format!("{source}:{target}{}", if read_only { ":ro" } else { "" });
            run.volumes.push(
                VolumeMount::parse(&spec)
                    .map_err(|e| ApiError::bad_request(format!("HostConfig.Mounts: {e}")))?,
            );
            // `docker run --mount` sends these empty.
            m.refuse_unless("BindOptions", &[], "no bind propagation options")?;
            m.refuse_unless("VolumeOptions", &[], "no volume options")?;
        }
        "tmpfs" => {
            let mut options = Vec::new();
            if let Some(t) = m.take::<Value>("TmpfsOptions")? {
                if let Some(size) = t.get("SizeBytes").and_then(Value::as_i64).filter(|s| *s > 0) {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = t.get("Mode").and_then(Value::as_u64).filter(|m| *m > 0) {
                    options.push(format!("mode={mode:o}"));
                }
            }
            if read_only {
                options.push("ro".into());
            }
            run.tmpfs.insert(target, options.join(","));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "HostConfig.Mounts[].Type = {other:?} is not supported by this host: use bind, volume or tmpfs"
            )))
        }
    }
    m.refuse_unless("Consistency", &[Value::from("default")], "one consistency")?;
    m.finish()
}

/// `"80/tcp"` and `{"HostIp": "", "HostPort": "8080"}`.
fn port_binding(port: &str, binding: &Value) -> Result<PortMapping, ApiError> {
    let bad =
        |why: String| ApiError::bad_request(format!("HostConfig.PortBindings[{port:?}]: {why}"));
    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(bad(format!("protocol {other:?}: want tcp or udp"))),
    };
    let container_port: u16 = number
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("{number:?} is not a port")))?;
    let host_ip = match binding.get("HostIp").and_then(Value::as_str).unwrap_or("") {
        "" | "0.0.0.0" => None,
        ip => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| bad(format!("HostIp {ip:?} is not an IPv4 address")))?,
        ),
    };
    let host_port = binding
        .get("HostPort")
        .and_then(Value::as_str)
        .unwrap_or("");
    if host_port.is_empty() {
        return Err(bad(
            "no HostPort: this host does not pick one (publish HOST:CONTAINER)".into(),
        ));
    }
    let host_port: u16 = host_port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        bad(format!(
            "HostPort {host_port:?} is not a port (a range is not supported)"
        ))
    })?;
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

/// `{"Name": "on-failure", "MaximumRetryCount": 3}`.
fn restart_policy(policy: &Value) -> Result<RestartPolicy, ApiError> {
    let name = policy.get("Name").and_then(Value::as_str).unwrap_or("");
    let max = policy
        .get("MaximumRetryCount")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    match name {
        "" | "no" if max == 0 => Ok(RestartPolicy::No),
        "always" if max == 0 => Ok(RestartPolicy::Always),
        "unless-stopped" if max == 0 => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => Ok(RestartPolicy::OnFailure {
            max: u32::try_from(max).ok().filter(|m| *m > 0),
        }),
        _ if max != 0 => Err(ApiError::bad_request(format!(
            "HostConfig.RestartPolicy: maximum retry count can only be used with 'on-failure' (got {name:?})"
        ))),
        other => Err(ApiError::bad_request(format!(
            "HostConfig.RestartPolicy.Name = {other:?}: want no, always, unless-stopped or on-failure"
        ))),
    }
}

/// Docker's `--cpu-shares` (2–262144, default 1024) as a cgroup v2 weight
/// (1–10000), by runc's formula.
fn shares_to_weight(shares: i64) -> u64 {
    let shares = shares.clamp(2, 262_144) as u64;
    1 + ((shares - 2) * 9999) / 262_142
}

/// `NetworkingConfig`: the container's one network's aliases and address.
fn networking_config(mut n: Fields, run: &mut RunRequest) -> Result<(), ApiError> {
    let endpoints: BTreeMap<String, Value> = n.take("EndpointsConfig")?.unwrap_or_default();
    if endpoints.len() > 1 {
        return Err(ApiError::bad_request(
            "NetworkingConfig.EndpointsConfig: a container joins one network on this host",
        ));
    }
    for (network, endpoint) in endpoints {
        let wanted = run.network.clone().unwrap_or_else(|| network.clone());
        if wanted != network && !matches!(network.as_str(), "bridge" | "default") {
            return Err(ApiError::bad_request(format!(
                "NetworkingConfig.EndpointsConfig names {network:?} but HostConfig.NetworkMode is {wanted:?}"
            )));
        }
        if run.network.is_none() && !matches!(network.as_str(), "bridge" | "default") {
            run.network = Some(network.clone());
        }
        let mut e = Fields::new("NetworkingConfig.EndpointsConfig[].", Some(endpoint))?;
        run.network_aliases = e.take("Aliases")?.unwrap_or_default();
        if let Some(ipam) = e.take::<Value>("IPAMConfig")? {
            if let Some(ip) = ipam
                .get("IPv4Address")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                run.ip = Some(ip.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "NetworkingConfig: IPv4Address {ip:?} is not an IPv4 address"
                    ))
                })?);
            }
        }
        // Filled in by some clients with what they know of the network.
        for informational in [
            "NetworkID",
            "EndpointID",
            "Gateway",
            "IPAddress",
            "IPPrefixLen",
            "MacAddress",
            "DriverOpts",
        ] {
            e.map.remove(informational);
        }
        e.refuse_unless("Links", &[], "use the network's DNS names")?;
        e.finish()?;
    }
    n.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the docker CLI 28 sends for `docker run --rm busybox echo hi`.
    const CLI_BODY: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":[],"Cmd":["echo","hi"],"Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":null,"OomKillDisable":null,"PidsLimit":null,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{}}}"#;

    #[test]
    fn the_clis_body_for_a_plain_run() {
        let run = run_request(CLI_BODY.as_bytes(), Some("web")).unwrap();
        assert_eq!(run.image, "busybox");
        assert_eq!(run.command, ["echo", "hi"]);
        assert_eq!(run.name.as_deref(), Some("web"));
        assert!(run.auto_remove);
        assert_eq!(run.network, None);
        assert_eq!(run.restart, RestartPolicy::No);
        assert!(run.limits.is_empty());
    }

    #[test]
    fn host_config_fields_are_honoured() {
        let body = r#"{"Image":"nginx","Entrypoint":[""],"User":"1000:1000","WorkingDir":"/w","Hostname":"h","Labels":{"a":"b"},"Env":["A=1"],
            "HostConfig":{"Binds":["data:/data:ro"],"Tmpfs":{"/t":"size=1m"},"NetworkMode":"lab","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},
            "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},"CapAdd":["NET_ADMIN"],"CapDrop":["MKNOD"],"ReadonlyRootfs":true,
            "Memory":67108864,"NanoCpus":500000000,"CpuShares":512,"PidsLimit":-1,"CpusetCpus":"0","Mounts":[{"Type":"tmpfs","Target":"/m","TmpfsOptions":{"SizeBytes":1048576}}]}}"#;
        let run = run_request(body.as_bytes(), None).unwrap();
        assert_eq!(run.entrypoint, Some(vec![]));
        assert_eq!(run.user.as_deref(), Some("1000:1000"));
        assert_eq!(run.volumes.len(), 1);
        assert!(run.volumes[0].read_only);
        assert_eq!(run.tmpfs["/t"], "size=1m");
        assert_eq!(run.tmpfs["/m"], "size=1048576");
        assert_eq!(run.network.as_deref(), Some("lab"));
        assert_eq!(run.publish[0].host_port, 8080);
        assert_eq!(run.restart, RestartPolicy::OnFailure { max: Some(3) });
        assert_eq!(run.limits.memory, Some(64 << 20));
        assert_eq!(run.limits.nano_cpus, Some(500_000_000));
        assert_eq!(run.limits.pids, None);
        assert_eq!(run.limits.cpu_weight, Some(20));
        assert!(run.read_only);
    }

    #[test]
    fn unsupported_fields_are_named_not_ignored() {
        for (body, named) in [
            (
                r#"{"Image":"a","HostConfig":{"Privileged":true}}"#,
                "HostConfig.Privileged",
            ),
            (
                r#"{"Image":"a","HostConfig":{"CpuQuota":5000}}"#,
                "HostConfig.CpuQuota",
            ),
            (
                r#"{"Image":"a","HostConfig":{"Dns":["1.1.1.1"]}}"#,
                "HostConfig.Dns",
            ),
            (r#"{"Image":"a","Volumes":{"/data":{}}}"#, "Volumes"),
            (r#"{"Image":"a","Bogus":1}"#, "Bogus"),
            (
                r#"{"Image":"a","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":""}]}}}"#,
                "HostPort",
            ),
            (
                r#"{"Image":"a","HostConfig":{"NetworkMode":"container:x"}}"#,
                "container:x",
            ),
            (
                r#"{"Image":"a","HostConfig":{"Mounts":[{"Type":"npipe","Target":"/x"}]}}"#,
                "npipe",
            ),
        ] {
            let e = run_request(body.as_bytes(), None).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.contains(named), "{body}: {}", e.message);
        }
    }

    #[test]
    fn hostile_bodies_are_clear_errors() {
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"Image\":5}",
            b"{\"Image\":\"a\",\"HostConfig\":[]}",
            b"{\"Image\":\"a\",\"Cmd\":\"sh\"}",
            b"{}",
            b"\xff\xfe",
        ] {
            let e = run_request(body, None).unwrap_err();
            assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = run_request(deep.as_bytes(), None).unwrap_err();
        assert!(e.message.contains("deeper"), "{}", e.message);
    }

    #[test]
    fn compose_networking_config() {
        let body = r#"{"Image":"a","HostConfig":{"NetworkMode":"proj_default"},"NetworkingConfig":{"EndpointsConfig":{"proj_default":{"Aliases":["web","abc"],"IPAMConfig":{}}}}}"#;
        let run = run_request(body.as_bytes(), Some("proj_web_1")).unwrap();
        assert_eq!(run.network.as_deref(), Some("proj_default"));
        assert_eq!(run.network_aliases, ["web", "abc"]);
    }

    #[test]
    fn weights_follow_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
