//! Networks and volumes through the Docker API: `docker network` and
//! `docker volume` (and docker-compose's project networks) mapped onto
//! hostd's own networks and named volumes, by way of the daemon's control
//! requests, so both doors see the same ones.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::create::parse_json;
use super::error::ApiError;
use mkhost_shared::control::{NetworkInfo, Request, Response, VolumeInfo};
use mkhost_shared::network::{Driver, NetworkSpec, MODE_HOST, MODE_NONE};

/// What the Docker API lists for a network.
pub fn network_view(info: &NetworkInfo) -> Value {
    let spec = &info.spec;
    let driver = match spec.driver {
        Driver::Bridge => "bridge",
        Driver::Direct => "macvlan",
    };
    let config: Vec<Value> = spec
        .subnet
        .iter()
        .map(|subnet| {
            let mut c = json!({ "Subnet": subnet.to_string() });
            if let Some(gateway) = spec.gateway {
                c["Gateway"] = Value::from(gateway.to_string());
            }
            c
        })
        .collect();
    let containers: Map<String, Value> = info
        .containers
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                json!({
                    "Name": m.name,
                    "EndpointID": m.id,
                    "MacAddress": "",
                    "IPv4Address": m.address,
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let mut options = Map::new();
    if let Some(parent) = &spec.parent {
        options.insert("parent".into(), Value::from(parent.clone()));
    }
    json!({
        "Name": spec.name,
        "Id": spec.name,
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": null, "Config": config },
        "Internal": spec.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": spec.labels,
    })
}

/// `host` and `none`, which Docker lists as networks too.
pub fn pseudo_networks() -> Vec<Value> {
    [(MODE_HOST, "host"), (MODE_NONE, "null")]
        .into_iter()
        .map(|(name, driver)| {
            json!({
                "Name": name, "Id": name, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
                "Driver": driver, "EnableIPv6": false,
                "IPAM": { "Driver": "default", "Options": null, "Config": [] },
                "Internal": false, "Attachable": false, "Ingress": false,
                "ConfigFrom": { "Network": "" }, "ConfigOnly": false,
                "Containers": {}, "Options": {}, "Labels": {},
            })
        })
        .collect()
}

/// `POST /networks/create`'s body as a network definition.
pub fn network_spec(body: &[u8]) -> Result<NetworkSpec, ApiError> {
    let value = parse_json(body)?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("");
    let name = text("Name");
    if name.is_empty() {
        return Err(ApiError::bad_request("Name: a network needs a name"));
    }
    let mut options = string_map(object, "Options")?;
    let driver = match text("Driver") {
        "" | "bridge" => Driver::Bridge,
        "macvlan" | "direct" => Driver::Direct,
        other => {
            return Err(ApiError::bad_request(format!(
                "Driver = {other:?} is not supported by this host: use bridge, or macvlan with -o parent=NIC"
            )))
        }
    };
    let parent = options.remove("parent");
    if let Some(key) = options.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Options.{key} is not supported by this host (only parent, for macvlan)"
        )));
    }
    // `Attachable` only matters to swarm: every local network is.
    for refused in ["EnableIPv6", "Ingress", "ConfigOnly"] {
        if object
            .get(refused)
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Err(ApiError::bad_request(format!(
                "{refused} is not supported by this host"
            )));
        }
    }
    let mut subnet = None;
    let mut gateway = None;
    if let Some(ipam) = object.get("IPAM").filter(|i| !i.is_null()) {
        let configs = ipam
            .get("Config")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if configs.len() > 1 {
            return Err(ApiError::bad_request(
                "IPAM.Config: one subnet per network on this host",
            ));
        }
        if let Some(config) = configs.first() {
            let field = |k: &str| {
                config
                    .get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            if let Some(s) = field("Subnet") {
                subnet = Some(
                    s.parse()
                        .map_err(|e| ApiError::bad_request(format!("IPAM.Config.Subnet: {e}")))?,
                );
            }
            if let Some(g) = field("Gateway") {
                gateway = Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "IPAM.Config.Gateway {g:?} is not an IPv4 address"
                    ))
                })?);
            }
            if field("IPRange").is_some() {
                return Err(ApiError::bad_request(
                    "IPAM.Config.IPRange is not supported by this host",
                ));
            }
        }
    }
    let labels = string_map(object, "Labels")?;
    Ok(NetworkSpec {
        name: name.to_string(),
        driver,
        subnet,
        gateway,
        parent,
        internal: object
            .get("Internal")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        labels,
    })
}

/// The string map at `key` of `object` (`Labels`, `Options`); missing or
/// null is empty.
fn string_map(
    object: &Map<String, Value>,
    key: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    object
        .get(key)
        .filter(|v| !v.is_null())
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("{key}: {e}")))
        .map(Option::unwrap_or_default)
}

/// What the Docker API shows for a volume.
pub fn volume_view(info: &VolumeInfo) -> Value {
    json!({
        "Name": info.name,
        "Driver": "local",
        "Mountpoint": info.mountpoint,
        "CreatedAt": info.created,
        "Labels": info.labels,
        "Scope": "local",
        "Options": null,
        "UsageData": { "Size": -1, "RefCount": info.containers.len() },
    })
}

/// `POST /volumes/create`'s body: the name and labels.
pub fn volume_create(body: &[u8]) -> Result<Request, ApiError> {
    let value = parse_json(body)?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let name = object.get("Name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "Name: anonymous volumes are not supported by this host; name the volume",
        ));
    }
    match object.get("Driver").and_then(Value::as_str).unwrap_or("") {
        "" | "local" => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "Driver = {other:?} is not supported by this host: volumes are local"
            )))
        }
    }
    if object
        .get("DriverOpts")
        .and_then(Value::as_object)
        .is_some_and(|o| !o.is_empty())
    {
        return Err(ApiError::bad_request(
            "DriverOpts are not supported by this host",
        ));
    }
    let labels = string_map(object, "Labels")?;
    Ok(Request::VolumeCreate {
        name: name.to_string(),
        labels,
    })
}

/// A control answer about networks or volumes as a Docker API result:
/// "no network/volume named" is 404, "in use" 409.
pub fn answer(response: Response, what: &str, name: &str) -> Result<Response, ApiError> {
    match response {
        Response::Error(message) => {
            let lower = message.to_lowercase();
            Err(
                if lower.contains("no network")
                    || lower.contains("no volume")
                    || lower.contains("not found")
                {
                    ApiError::not_found(match what {
                        // dockerd's words for each.
                        "volume" => format!("get {name}: no such volume"),
                        _ => format!("{what} {name} not found"),
                    })
                } else if ["in use", "used by", "attached", "exists"]
                    .iter()
                    .any(|w| lower.contains(w))
                {
                    ApiError::conflict(message)
                } else {
                    ApiError::bad_request(message)
                },
            )
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_network_bodies() {
        let spec = network_spec(br#"{"Name":"p_default","Driver":"bridge","Options":{},"IPAM":{"Driver":"default","Config":[]},"Internal":false,"Labels":{"com.docker.compose.project":"p"},"CheckDuplicate":true}"#).unwrap();
        assert_eq!(spec.name, "p_default");
        assert_eq!(spec.driver, Driver::Bridge);
        assert_eq!(spec.labels["com.docker.compose.project"], "p");
        let spec = network_spec(
            br#"{"Name":"n","IPAM":{"Config":[{"Subnet":"10.9.0.0/16","Gateway":"10.9.0.1"}]}}"#,
        )
        .unwrap();
        assert_eq!(spec.subnet.unwrap().to_string(), "10.9.0.0/16");
        for bad in [
            &br#"{"Name":"n","Driver":"overlay"}"#[..],
            br#"{"Driver":"bridge"}"#,
            br#"{"Name":"n","EnableIPv6":true}"#,
            br#"{"Name":"n","Options":{"mtu":"9000"}}"#,
            b"[]",
        ] {
            assert_eq!(network_spec(bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn volume_bodies() {
        assert!(matches!(
            volume_create(br#"{"Name":"data","Labels":{"a":"b"}}"#).unwrap(),
            Request::VolumeCreate { .. }
        ));
        assert_eq!(volume_create(br#"{}"#).unwrap_err().status, 400);
        assert_eq!(
            volume_create(br#"{"Name":"x","Driver":"nfs"}"#)
                .unwrap_err()
                .status,
            400
        );
    }
}
