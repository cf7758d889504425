//! Registry authentication: the `WWW-Authenticate` challenges a registry
//! answers 401 with, the credentials of a docker `config.json`, and the
//! tokens fetched from a token service (kept per registry and repository
//! until they expire).
//!
//! Only the `auths` map of the docker config is read (`auth` as base64
//! `user:password`, or `username`/`password`); credential helpers
//! (`credsStore`, `credHelpers`) and `identitytoken` are not supported.
//! A caller with credentials of its own for one pull (a Docker API
//! client's `X-Registry-Auth`) passes [`Credentials`] to
//! [`crate::Client::with_credentials`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::RegistryError;
use crate::reference::DOCKER_HUB;

/// Tokens live this long when the service does not say (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they run out.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value; `None` for schemes we do not
/// speak or a Bearer challenge without a realm.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `key="value", key=value` pairs (keys lowercased; quoted values may hold
/// commas and `\"`).
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        params.insert(key, value);
    }
    params
}

/// A user name and password for a registry's Basic auth or its token
/// service. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password (or a personal access token).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.user)
    }
}

impl Credentials {
    /// Credentials of `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The `Authorization` header value for Basic auth.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Reads the `auths` of a docker config.json into credentials keyed by
/// registry host (`docker.io` for Docker Hub's spellings).
pub(crate) fn parse_docker_config(
    bytes: &[u8],
) -> Result<HashMap<String, Credentials>, RegistryError> {
    let config: DockerConfig = serde_json::from_slice(bytes).map_err(|e| RegistryError::Setup {
        reason: format!("docker config is not valid JSON: {e}"),
    })?;
    let mut out = HashMap::new();
    for (key, entry) in config.auths {
        let host = registry_key(&key);
        let credentials = if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| RegistryError::Setup {
                    reason: format!(
                        "docker config: auths[{key:?}].auth is not base64 of user:password"
                    ),
                })?;
            let (user, password) =
                decoded
                    .split_once(':')
                    .ok_or_else(|| RegistryError::Setup {
                        reason: format!(
                            "docker config: auths[{key:?}].auth lacks the ':' between user and password"
                        ),
                    })?;
            Credentials {
                user: user.to_owned(),
                password: password.to_owned(),
            }
        } else if let (Some(user), Some(password)) = (entry.username, entry.password) {
            Credentials { user, password }
        } else {
            continue;
        };
        out.insert(host, credentials);
    }
    Ok(out)
}

/// The key a docker config `auths` entry stands for: the `host[:port]`,
/// without scheme or path, with Docker Hub's names folded to `docker.io`.
pub fn registry_key(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        host => host.to_owned(),
    }
}

/// Registry host and repository.
type CacheKey = (String, String);
/// An `Authorization` value and when it expires (never, for Basic).
type CacheEntry = (String, Option<Instant>);

/// `Authorization` values that worked, per registry host and repository.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl AuthCache {
    /// The header to send to `host` for `repository`, if one is known and
    /// not about to expire.
    pub fn get(&self, host: &str, repository: &str) -> Option<String> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (host.to_owned(), repository.to_owned());
        match entries.get(&key) {
            Some((_, Some(expiry))) if Instant::now() + TOKEN_MARGIN >= *expiry => {
                entries.remove(&key);
                None
            }
            Some((header, _)) => Some(header.clone()),
            None => None,
        }
    }

    /// Remembers `header` for `host` and `repository`, for `lifetime` (or
    /// for ever, for Basic credentials).
    pub fn put(&self, host: &str, repository: &str, header: String, lifetime: Option<Duration>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            (host.to_owned(), repository.to_owned()),
            (header, lifetime.map(|l| Instant::now() + l)),
        );
    }

    /// Forgets what was kept for `host` and `repository`.
    pub fn forget(&self, host: &str, repository: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&(host.to_owned(), repository.to_owned()));
    }
}

/// A token service's answer.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token (`token`, else `access_token`) and how long it lives.
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = self
            .expires_in
            .filter(|s| *s > 0)
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        Some((token, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t, service=reg"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("reg".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn docker_config() {
        let config = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "https://ghcr.io": {"auth": ""},
            "quay.io": {}
        }, "credsStore": "desktop"}"#;
        let creds = parse_docker_config(config).unwrap();
        assert_eq!(creds["docker.io"].user, "user");
        assert_eq!(creds["docker.io"].password, "pa:ss");
        assert_eq!(creds["127.0.0.1:5000"].basic_header(), "Basic dTpw");
        assert!(!creds.contains_key("ghcr.io"));
        assert!(!creds.contains_key("quay.io"));
        assert!(parse_docker_config(b"{").is_err());
        assert!(parse_docker_config(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
        assert!(parse_docker_config(br#"{"auths":{"x":{"auth":"bm9jb2xvbg=="}}}"#).is_err());
        assert!(parse_docker_config(b"{}").unwrap().is_empty());
    }

    #[test]
    fn tokens_expire() {
        let cache = AuthCache::default();
        cache.put("h", "r", "Bearer a".into(), Some(Duration::from_secs(300)));
        assert_eq!(cache.get("h", "r").as_deref(), Some("Bearer a"));
        assert_eq!(cache.get("h", "other"), None);
        cache.put("h", "r", "Bearer b".into(), Some(Duration::from_secs(1)));
        assert_eq!(cache.get("h", "r"), None, "within the renewal margin");
        cache.put("h", "r", "Basic c".into(), None);
        assert_eq!(cache.get("h", "r").as_deref(), Some("Basic c"));
        cache.forget("h", "r");
        assert_eq!(cache.get("h", "r"), None);
    }
}
