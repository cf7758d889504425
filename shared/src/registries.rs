//! Registry settings, one shape for the three places that give them: a
//! profile's `[registries]` (for the build's own pulls and, without
//! credentials, as the image's defaults in boot.json), a host's
//! `mkhost/host.toml` `[registries]` (CA, mirrors, insecure registries and
//! credentials for that host), and the file init hands hostd
//! ([`crate::paths::REGISTRIES`]).
//!
//! ```toml
//! [registries]
//! insecure = ["10.0.2.2:5000"]                  # plain HTTP, by host[:port]
//! mirrors = { "docker.io" = ["mirror.lab:5000"] } # tried in order first
//! ca = """
//! -----BEGIN CERTIFICATE-----
//! ...
//! -----END CERTIFICATE-----
//! """
//!
//! [registries.auths."registry.lab:5000"]        # host.toml only
//! username = "ops"
//! password = "secret"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where and how images are pulled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure: Vec<String>,
    /// Mirrors per registry (`docker.io` -> `["mirror.lab:5000"]`), tried in
    /// order before the registry itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Extra trusted CA certificates, PEM text (added to the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Credentials per registry (`host[:port]`, `docker.io` for Docker Hub).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auths: BTreeMap<String, Credentials>,
}

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl RegistrySettings {
    /// Checks every value; the error names the field (`insecure[1]`,
    /// `mirrors."docker.io"[0]`, `ca`, `auths."x"`) and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (i, host) in self.insecure.iter().enumerate() {
            check_host(host).map_err(|e| format!("insecure[{i}]: {e}"))?;
        }
        for (registry, mirrors) in &self.mirrors {
            check_host(registry).map_err(|e| format!("mirrors.{registry:?}: {e}"))?;
            if mirrors.is_empty() {
                return Err(format!(
                    "mirrors.{registry:?}: an empty list; name at least one mirror or drop the entry"
                ));
            }
            for (i, mirror) in mirrors.iter().enumerate() {
                check_host(mirror).map_err(|e| format!("mirrors.{registry:?}[{i}]: {e}"))?;
            }
        }
        if let Some(ca) = &self.ca {
            if !ca.contains("-----BEGIN CERTIFICATE-----") {
                return Err(
                    "ca: no \"-----BEGIN CERTIFICATE-----\" in it; give the PEM text of the CA certificate(s)"
                        .into(),
                );
            }
        }
        for (registry, credentials) in &self.auths {
            check_host(registry).map_err(|e| format!("auths.{registry:?}: {e}"))?;
            if credentials.username.is_empty() {
                return Err(format!("auths.{registry:?}: username is empty"));
            }
        }
        Ok(())
    }

    /// `over` on top of `self`, field by field: a field `over` sets
    /// replaces this one (host.toml over the image's defaults).
    pub fn overlaid(&self, over: &RegistrySettings) -> RegistrySettings {
        RegistrySettings {
            insecure: if over.insecure.is_empty() {
                self.insecure.clone()
            } else {
                over.insecure.clone()
            },
            mirrors: if over.mirrors.is_empty() {
                self.mirrors.clone()
            } else {
                over.mirrors.clone()
            },
            ca: over.ca.clone().or_else(|| self.ca.clone()),
            auths: if over.auths.is_empty() {
                self.auths.clone()
            } else {
                over.auths.clone()
            },
        }
    }

    /// These settings without credentials (what may go into an image).
    pub fn without_credentials(&self) -> RegistrySettings {
        RegistrySettings {
            auths: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// The credentials as a Docker `config.json` (`{"auths": {REGISTRY:
    /// {"auth": base64(user:password)}}}`), which the registry client reads;
    /// `None` without credentials.
    pub fn docker_config(&self) -> Option<Vec<u8>> {
        if self.auths.is_empty() {
            return None;
        }
        let auths: serde_json::Map<String, serde_json::Value> = self
            .auths
            .iter()
            .map(|(registry, c)| {
                let token = base64(format!("{}:{}", c.username, c.password).as_bytes());
                (registry.clone(), serde_json::json!({ "auth": token }))
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "auths": auths })).ok()
    }
}

/// `host[:port]`: a host name or IPv4 address, an optional port, nothing
/// else (no scheme, no path).
fn check_host(value: &str) -> Result<(), String> {
    let fix = "give host[:port], e.g. \"10.0.2.2:5000\" or \"registry.lab\"";
    if value.contains("://") || value.contains('/') {
        return Err(format!("{value:?} has a scheme or path; {fix}"));
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (value, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if !host_ok {
        return Err(format!("{value:?} is not a host name; {fix}"));
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(format!("{value:?}: port {port:?} is not 1-65535; {fix}"));
        }
    }
    Ok(())
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_json: serde_json::Value) -> Result<RegistrySettings, String> {
        serde_json::from_value(toml_json).map_err(|e| e.to_string())
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn good_settings_validate_and_give_a_docker_config() {
        let s = settings(serde_json::json!({
            "insecure": ["10.0.2.2:5000", "lab"],
            "mirrors": {"docker.io": ["mirror.lab:5000"]},
            "ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "auths": {"registry.lab:5000": {"username": "ops", "password": "pw"}}
        }))
        .unwrap();
        s.validate().unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&s.docker_config().unwrap()).unwrap();
        assert_eq!(config["auths"]["registry.lab:5000"]["auth"], "b3BzOnB3");
        assert!(s.without_credentials().docker_config().is_none());
        assert!(!format!("{s:?}").contains("pw"));
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (value, want) in [
            (
                serde_json::json!({"insecure": ["http://x:5000"]}),
                "insecure[0]",
            ),
            (serde_json::json!({"insecure": ["x:0"]}), "port"),
            (serde_json::json!({"insecure": ["a b"]}), "not a host name"),
            (
                serde_json::json!({"mirrors": {"docker.io": []}}),
                "empty list",
            ),
            (
                serde_json::json!({"mirrors": {"docker.io": ["m/x"]}}),
                "mirrors.\"docker.io\"[0]",
            ),
            (serde_json::json!({"ca": "not pem"}), "BEGIN CERTIFICATE"),
            (
                serde_json::json!({"auths": {"r": {"username": "", "password": "x"}}}),
                "username is empty",
            ),
        ] {
            let e = settings(value.clone()).unwrap().validate().unwrap_err();
            assert!(e.contains(want), "{value}: {e}");
        }
        assert!(settings(serde_json::json!({"insecur": []})).is_err());
    }

    #[test]
    fn host_settings_overlay_the_images_field_by_field() {
        let image = RegistrySettings {
            insecure: vec!["a:1".into()],
            ca: Some("image ca".into()),
            ..Default::default()
        };
        let host = RegistrySettings {
            mirrors: BTreeMap::from([("docker.io".into(), vec!["m".into()])]),
            ca: Some("host ca".into()),
            ..Default::default()
        };
        let merged = image.overlaid(&host);
        assert_eq!(merged.insecure, ["a:1"]);
        assert_eq!(merged.ca.as_deref(), Some("host ca"));
        assert_eq!(merged.mirrors["docker.io"], ["m"]);
    }
}
