//! The HTTP side of the client: TLS roots, which scheme and which hosts
//! (mirrors first) serve a registry, and one GET with authentication
//! (anonymous, Basic, Bearer tokens) and redirects done by hand.
//!
//! Redirects are followed here rather than by ureq so that a loop is named
//! as one, at most [`MAX_REDIRECTS`] are taken, and the `Authorization`
//! header is dropped when a redirect leaves the registry's host (blob
//! storage behind a redirect has its own signed URLs). A redirect from
//! https to http is followed as ureq would (the content is verified by its
//! digest either way).
//!
//! Name resolution is std's `getaddrinfo`; in the static binaries that
//! works for IP literals and `/etc/hosts` only (no NSS): callers pass
//! addresses or resolve names themselves.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;

use crate::auth::{self, AuthCache, Challenge, Credentials};
use crate::error::{Cause, RegistryError};
use crate::reference::endpoint_for;

/// Redirects followed for one request.
pub(crate) const MAX_REDIRECTS: usize = 5;
/// The system CA bundle read when present (Debian's path).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Error bodies are read up to this many bytes.
const ERROR_BODY_MAX: u64 = 16 * 1024;
/// Token answers are read up to this many bytes.
const TOKEN_BODY_MAX: u64 = 1024 * 1024;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra PEM CA certificates trusted besides the system's.
    pub ca_pem: Vec<u8>,
    /// Docker config.json `auths` map contents (the file's bytes), if any.
    pub docker_config: Option<Vec<u8>>,
    /// Mirrors per registry ("docker.io" -> ["mirror.lab:5000"]), tried in
    /// order before the registry itself.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Parallel blob downloads (default 3 when 0).
    pub concurrency: usize,
    /// A connection that delivers no byte for this long fails (default 30 s
    /// when zero).
    pub stall_timeout: Duration,
    /// Turns `host:port` into addresses (default: the C library's, which a
    /// static binary limits to IP literals and `/etc/hosts`).
    pub resolver: Option<NameResolver>,
}

/// Turns `host:port` into socket addresses.
pub type ResolveFn = dyn Fn(&str) -> std::io::Result<Vec<std::net::SocketAddr>> + Send + Sync;

/// A name resolver for connections: `host:port` to socket addresses.
#[derive(Clone)]
pub struct NameResolver(pub Arc<ResolveFn>);

impl std::fmt::Debug for NameResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameResolver")
    }
}

/// A registry client: TLS configuration, credentials and tokens, shared by
/// every pull made through it (it is `Sync`; pulls may run in parallel).
pub struct Client {
    pub(crate) agent: ureq::Agent,
    pub(crate) options: ClientOptions,
    pub(crate) stall_timeout: Duration,
    pub(crate) concurrency: usize,
    credentials: HashMap<String, Credentials>,
    /// Credentials given for one pull ([`Client::with_credentials`]) and
    /// the registry they are for: they win over `credentials`.
    given: Option<(String, Credentials)>,
    tokens: AuthCache,
}

/// One host serving a registry: a mirror or the registry itself.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` to connect to.
    pub host: String,
    /// The name credentials are looked up by.
    pub auth_key: String,
}

impl Endpoint {
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// A successful answer: the response and the URL it finally came from.
pub(crate) struct Answer {
    pub response: ureq::Response,
    pub url: String,
}

impl Client {
    /// Builds a client: system CA roots (the Debian bundle when present,
    /// else the Mozilla roots compiled in) plus `ca_pem`, and the
    /// credentials of `docker_config`.
    pub fn new(options: ClientOptions) -> Result<Client, RegistryError> {
        let mut roots = rustls::RootCertStore::empty();
        let system = std::fs::read(SYSTEM_BUNDLE).unwrap_or_default();
        for cert in CertificateDer::pem_slice_iter(&system).flatten() {
            // A certificate rustls cannot use is skipped, as ca-certificates
            // users expect.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if !options.ca_pem.is_empty() {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&options.ca_pem) {
                let cert = cert.map_err(|e| RegistryError::Setup {
                    reason: format!("the extra CA certificates are not valid PEM: {e}"),
                })?;
                roots.add(cert).map_err(|e| RegistryError::Setup {
                    reason: format!("an extra CA certificate cannot be used: {e}"),
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(RegistryError::Setup {
                    reason: "the extra CA PEM holds no certificate".into(),
                });
            }
        }
        // ring, not aws-lc-rs: it builds static without cmake or nasm.
        // rustls 0.23.48 deprecates it for lacking post-quantum key
        // exchange; classical ECDHE is what registries offer today.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RegistryError::Setup {
                reason: format!("TLS setup: {e}"),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let stall_timeout = if options.stall_timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            options.stall_timeout
        };
        let mut builder = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .redirects(0)
            .timeout_connect(stall_timeout)
            .timeout_read(stall_timeout)
            .timeout_write(stall_timeout)
            .user_agent(concat!("mkhost-registry/", env!("CARGO_PKG_VERSION")))
            .try_proxy_from_env(false);
        if let Some(NameResolver(resolve)) = options.resolver.clone() {
            builder = builder.resolver(move |netloc: &str| resolve(netloc));
        }
        let agent = builder.build();
        let credentials = match &options.docker_config {
            Some(bytes) => auth::parse_docker_config(bytes)?,
            None => HashMap::new(),
        };
        let concurrency = if options.concurrency == 0 {
            3
        } else {
            options.concurrency
        };
        Ok(Client {
            agent,
            options,
            stall_timeout,
            concurrency,
            credentials,
            given: None,
            tokens: AuthCache::default(),
        })
    }

    /// A client for one pull that authenticates to `registry` (not to its
    /// mirrors) with `credentials` instead of the configured ones, as
    /// dockerd does with a request's `X-Registry-Auth`. It shares the
    /// connections and settings of `self` but not its tokens: what one set
    /// of credentials earned is never sent on behalf of another.
    pub fn with_credentials(&self, registry: &str, credentials: Credentials) -> Client {
        Client {
            agent: self.agent.clone(),
            options: self.options.clone(),
            stall_timeout: self.stall_timeout,
            concurrency: self.concurrency,
            credentials: self.credentials.clone(),
            given: Some((auth::registry_key(registry), credentials)),
            tokens: AuthCache::default(),
        }
    }

    /// The credentials for `key` and where they come from.
    fn credentials_for(&self, key: &str) -> Option<(&Credentials, &'static str)> {
        match &self.given {
            Some((given, credentials)) if given == key => {
                Some((credentials, "the request's credentials (X-Registry-Auth)"))
            }
            _ => self
                .credentials
                .get(key)
                .map(|c| (c, "the docker config's entry")),
        }
    }

    /// The hosts to try for `registry`: its mirrors in order, then itself.
    pub(crate) fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mirrors = self.options.mirrors.get(registry).into_iter().flatten();
        mirrors
            .map(|mirror| self.endpoint(mirror, mirror))
            .chain(std::iter::once(self.endpoint(registry, registry)))
            .collect()
    }

    fn endpoint(&self, name: &str, auth_name: &str) -> Endpoint {
        let host = endpoint_for(name);
        let insecure = self
            .options
            .insecure
            .iter()
            .any(|i| i == name || *i == host);
        Endpoint {
            scheme: if insecure { "http" } else { "https" },
            host,
            auth_key: auth::registry_key(auth_name),
        }
    }

    /// GETs `/v2/<repository>/<path>` from `endpoint` with `accept`,
    /// authenticating on 401 and following redirects. Any status other than
    /// 2xx is an error.
    pub(crate) fn get(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Answer, Cause> {
        let url = format!("{}/v2/{repository}/{path}", endpoint.base());
        let mut authorization = self.tokens.get(&endpoint.host, repository);
        // What was sent after a challenge; a 401 to it ends the request.
        let mut fresh: Option<String> = None;
        loop {
            let answer =
                self.get_following(&url, &endpoint.host, authorization.as_deref(), accept)?;
            if answer.response.status() != 401 {
                return check_status(answer);
            }
            if let Some(sent) = fresh {
                return Err(Cause::Unauthorized {
                    host: endpoint.host.clone(),
                    detail: format!(
                        "{} {sent}; check the credentials and that they grant pull on {repository}",
                        error_detail(answer.response)
                    ),
                });
            }
            self.tokens.forget(&endpoint.host, repository);
            let challenge = answer
                .response
                .header("www-authenticate")
                .and_then(auth::parse_challenge);
            let (header, sent) = match challenge {
                Some(Challenge::Basic) => {
                    let (credentials, source) =
                        self.credentials_for(&endpoint.auth_key).ok_or_else(|| {
                            Cause::Unauthorized {
                                host: endpoint.host.clone(),
                                detail: format!(
                                    "it asks for a user and password and the docker config has none for {}",
                                    endpoint.auth_key
                                ),
                            }
                        })?;
                    let header = credentials.basic_header();
                    self.tokens
                        .put(&endpoint.host, repository, header.clone(), None);
                    let sent = format!(
                        "to user {:?} of {source} for {}",
                        credentials.user, endpoint.auth_key
                    );
                    (header, sent)
                }
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope = scope.unwrap_or_else(|| format!("repository:{repository}:pull"));
                    let (token, lifetime) =
                        self.fetch_token(endpoint, &realm, service.as_deref(), &scope)?;
                    let header = format!("Bearer {token}");
                    self.tokens
                        .put(&endpoint.host, repository, header.clone(), Some(lifetime));
                    (header, format!("to a fresh token from {realm} for {scope}"))
                }
                None => {
                    return Err(Cause::Unauthorized {
                        host: endpoint.host.clone(),
                        detail: format!(
                            "no usable WWW-Authenticate challenge ({:?})",
                            answer.response.header("www-authenticate").unwrap_or("none")
                        ),
                    })
                }
            };
            authorization = Some(header);
            fresh = Some(sent);
        }
    }

    /// Asks the token service `realm` for a token for `scope`, with the
    /// registry's Basic credentials when there are some.
    fn fetch_token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), Cause> {
        let bad = |detail: String| Cause::Token {
            realm: realm.to_owned(),
            detail,
        };
        let mut request = self.agent.get(realm).query("scope", scope);
        if let Some(service) = service {
            request = request.query("service", service);
        }
        let credentials = self.credentials_for(&endpoint.auth_key).map(|(c, _)| c);
        if let Some(credentials) = credentials {
            request = request.set("Authorization", &credentials.basic_header());
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(401, response)) | Err(ureq::Error::Status(403, response)) => {
                return Err(Cause::Unauthorized {
                    host: realm.to_owned(),
                    detail: format!(
                        "the token service refused {} for {scope}: {}",
                        if credentials.is_some() {
                            "the credentials"
                        } else {
                            "an anonymous request"
                        },
                        error_detail(response)
                    ),
                })
            }
            Err(ureq::Error::Status(status, response)) => {
                return Err(bad(format!("{status} {}", error_detail(response))))
            }
            Err(ureq::Error::Transport(transport)) => {
                return Err(transport_cause(realm, &transport, self.stall_timeout))
            }
        };
        let mut body = Vec::new();
        response
            .into_reader()
            .take(TOKEN_BODY_MAX + 1)
            .read_to_end(&mut body)
            .map_err(|source| Cause::Read {
                url: realm.to_owned(),
                source,
            })?;
        if body.len() as u64 > TOKEN_BODY_MAX {
            return Err(bad("the answer is larger than 1 MiB".into()));
        }
        let answer: auth::TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the answer is not a token JSON object: {e}")))?;
        answer
            .into_token()
            .ok_or_else(|| bad("the answer has neither token nor access_token".into()))
    }

    /// One GET, following up to [`MAX_REDIRECTS`] redirects; the
    /// Authorization header only goes to `auth_host`. Returns 2xx and 4xx/5xx
    /// answers alike.
    fn get_following(
        &self,
        first: &str,
        auth_host: &str,
        authorization: Option<&str>,
        accept: Option<&str>,
    ) -> Result<Answer, Cause> {
        let mut url = first.to_owned();
        let mut seen = vec![url.clone()];
        loop {
            let mut request = self.agent.get(&url);
            if let Some(accept) = accept {
                request = request.set("Accept", accept);
            }
            let parsed = request.url().to_owned();
            let same_host = host_of(&parsed).is_some_and(|h| h == auth_host);
            if let (Some(authorization), true) = (authorization, same_host) {
                request = request.set("Authorization", authorization);
            }
            let response = match request.call() {
                Ok(response) => response,
                Err(ureq::Error::Status(_, response)) => response,
                Err(ureq::Error::Transport(transport)) => {
                    return Err(transport_cause(&url, &transport, self.stall_timeout))
                }
            };
            if !(300..400).contains(&response.status()) || response.status() == 304 {
                return Ok(Answer { response, url });
            }
            let location = response.header("location").ok_or_else(|| Cause::Status {
                url: url.clone(),
                status: response.status(),
                detail: "a redirect without Location".into(),
            })?;
            let next = resolve_location(&url, location).ok_or_else(|| Cause::Redirect {
                url: first.to_owned(),
                detail: format!("bad redirect location {location:?}"),
            })?;
            if seen.contains(&next) {
                return Err(Cause::Redirect {
                    url: first.to_owned(),
                    detail: format!("redirect loop back to {next}"),
                });
            }
            if seen.len() > MAX_REDIRECTS {
                return Err(Cause::Redirect {
                    url: first.to_owned(),
                    detail: format!("more than {MAX_REDIRECTS} redirects"),
                });
            }
            seen.push(next.clone());
            url = next;
        }
    }
}

/// A 2xx answer, or the status as an error with the registry's messages.
fn check_status(answer: Answer) -> Result<Answer, Cause> {
    let status = answer.response.status();
    if (200..300).contains(&status) {
        return Ok(answer);
    }
    Err(Cause::Status {
        url: answer.url,
        status,
        detail: error_detail(answer.response),
    })
}

/// The messages of a registry error body (`{"errors":[{"code","message"}]}`)
/// or the start of the body.
pub(crate) fn error_detail(response: ureq::Response) -> String {
    let status_text = response.status_text().to_owned();
    let mut body = Vec::new();
    let _ = response
        .into_reader()
        .take(ERROR_BODY_MAX)
        .read_to_end(&mut body);
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(errors) = serde_json::from_slice::<Errors>(&body) {
        let text: Vec<String> = errors
            .errors
            .into_iter()
            .map(|e| {
                [e.code, e.message]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ")
            })
            .collect();
        if !text.is_empty() {
            return format!("{status_text} ({})", text.join("; "));
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text: String = text.trim().chars().take(200).collect();
    if text.is_empty() {
        status_text
    } else {
        format!("{status_text} ({text})")
    }
}

/// Maps a transport failure to a cause: TLS, stall, connect.
pub(crate) fn transport_cause(url: &str, transport: &ureq::Transport, stall: Duration) -> Cause {
    let host = host_of(url).unwrap_or(url).to_owned();
    let mut source: Option<&(dyn std::error::Error + 'static)> =
        std::error::Error::source(transport);
    while let Some(error) = source {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Cause::Tls {
                host,
                detail: tls.to_string(),
            };
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return Cause::Tls {
                    host,
                    detail: tls.to_string(),
                };
            }
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) && transport.kind() != ureq::ErrorKind::ConnectionFailed
            {
                return Cause::Stalled {
                    url: url.to_owned(),
                    seconds: stall.as_secs(),
                };
            }
        }
        source = error.source();
    }
    let detail = match transport.message() {
        Some(message) => format!("{}: {message}", transport.kind()),
        None => transport.kind().to_string(),
    };
    let detail = match std::error::Error::source(transport) {
        Some(source) => format!("{detail}: {source}"),
        None => detail,
    };
    Cause::Connect { host, detail }
}

/// The `host[:port]` of an absolute URL.
pub(crate) fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    Some(authority.rsplit_once('@').map_or(authority, |(_, h)| h))
}

/// An absolute URL for a Location header relative to `base`.
fn resolve_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    let (scheme, rest) = base.split_once("://")?;
    if let Some(rest_of_location) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest_of_location}"));
    }
    let host = host_of(base)?;
    if location.starts_with('/') {
        return Some(format!("{scheme}://{host}{location}"));
    }
    if location.is_empty() {
        return None;
    }
    let path_start = rest.find('/').map_or(rest.len(), |i| i);
    let path = &rest[path_start..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Some(format!("{scheme}://{host}{dir}{location}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let base = "http://a:5000/v2/x/blobs/sha256:1?q=2";
        assert_eq!(
            resolve_location(base, "https://b/c").as_deref(),
            Some("https://b/c")
        );
        assert_eq!(
            resolve_location(base, "//b/c").as_deref(),
            Some("http://b/c")
        );
        assert_eq!(
            resolve_location(base, "/d").as_deref(),
            Some("http://a:5000/d")
        );
        assert_eq!(
            resolve_location(base, "e?f").as_deref(),
            Some("http://a:5000/v2/x/blobs/e?f")
        );
        assert_eq!(resolve_location(base, ""), None);
        assert_eq!(host_of("https://u:p@h:1/x"), Some("h:1"));
        assert_eq!(host_of("http://h?x"), Some("h"));
    }

    #[test]
    fn endpoints_mirrors_first() {
        let mut options = ClientOptions {
            insecure: vec!["mirror.lab:5000".into()],
            ..ClientOptions::default()
        };
        options.mirrors.insert(
            "docker.io".into(),
            vec!["mirror.lab:5000".into(), "m2".into()],
        );
        let client = Client::new(options).unwrap();
        let endpoints: Vec<String> = client
            .endpoints("docker.io")
            .iter()
            .map(Endpoint::base)
            .collect();
        assert_eq!(
            endpoints,
            [
                "http://mirror.lab:5000",
                "https://m2",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(client.endpoints("docker.io")[2].auth_key, "docker.io");
        assert_eq!(client.endpoints("q:1").len(), 1);
    }

    #[test]
    fn bad_ca_is_a_setup_error() {
        let options = ClientOptions {
            ca_pem: b"not a certificate".to_vec(),
            ..ClientOptions::default()
        };
        assert!(matches!(
            Client::new(options),
            Err(RegistryError::Setup { .. })
        ));
    }

    #[test]
    fn given_credentials_win_for_their_registry_only() {
        let client = Client::new(ClientOptions {
            docker_config: Some(
                br#"{"auths":{"lab:5000":{"username":"host","password":"pw"},
                    "m:1":{"username":"mirror","password":"pw"}}}"#
                    .to_vec(),
            ),
            ..ClientOptions::default()
        })
        .unwrap();
        let given = client.with_credentials("https://lab:5000", Credentials::new("me", "secret"));
        let (c, source) = given.credentials_for("lab:5000").unwrap();
        assert_eq!(c.user, "me");
        assert!(source.contains("X-Registry-Auth"), "{source}");
        assert_eq!(given.credentials_for("m:1").unwrap().0.user, "mirror");
        assert_eq!(client.credentials_for("lab:5000").unwrap().0.user, "host");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
