//! Image references (`nginx`, `ghcr.io/org/app:v1`, `host:5000/a/b@sha256:…`):
//! parsing with Docker's grammar and normalization, and the names derived
//! from them (canonical, familiar, the host to contact).
//!
//! The grammar is docker/distribution's `reference` package:
//!
//! ```text
//! reference      := name [ ":" tag ] [ "@" digest ]
//! name           := [domain "/"] path-component ["/" path-component]*
//! domain         := domain-component ["." domain-component]* [":" port]
//! path-component := [a-z0-9]+ (separator [a-z0-9]+)*     separator := [_.] | "__" | "-"+
//! tag            := [\w][\w.-]{0,127}
//! digest         := "sha256:" 64 lowercase hex digits      (other algorithms are refused)
//! ```
//!
//! The first component is a domain when it contains `.` or `:`, is
//! `localhost`, or has an uppercase letter (as Docker decides); otherwise the
//! name is on `docker.io`, and a one-component name there is under `library/`.

use std::fmt;

use crate::error::RegistryError;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

const NAME_MAX: usize = 255;

/// A parsed image reference, normalized as Docker does.
///
/// `tag` is `Some("latest")` when the text names neither a tag nor a digest;
/// it is `None` only for digest-only references. When both are given the
/// digest decides what is pulled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry as written in references: `docker.io`, `host:5000`.
    pub registry: String,
    /// The repository path: `library/nginx`.
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The manifest digest (`sha256:…`), if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `text`. Errors name the text and what is wrong.
    pub fn parse(text: &str) -> Result<Reference, RegistryError> {
        let bad = |reason: String| RegistryError::Reference {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!("it contains {c:?}")));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest).map_err(bad)?)),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        if name.is_empty() {
            return Err(bad("the repository name is empty".into()));
        }
        let (registry, path) = split_domain(name);
        if let Some(domain) = registry {
            check_domain(domain).map_err(bad)?;
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad(format!("repository name {path:?} must be lowercase")));
        }
        if registry.is_none() && is_sha256_hex(path) {
            return Err(bad(
                "a 64-digit hexadecimal string is an image id, not a repository name".into(),
            ));
        }
        for component in path.split('/') {
            check_path_component(component).map_err(|reason| {
                bad(format!("repository path component {component:?} {reason}"))
            })?;
        }
        if name.len() > NAME_MAX {
            return Err(bad(format!(
                "the repository name is longer than {NAME_MAX} characters"
            )));
        }
        let registry = match registry {
            None | Some("index.docker.io") => DOCKER_HUB.to_owned(),
            Some(domain) => domain.to_owned(),
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The name the store records: `docker.io/library/nginx:1.27`, or
    /// `docker.io/library/nginx@sha256:…` when there is only a digest.
    pub fn canonical(&self) -> String {
        let name = format!("{}/{}", self.registry, self.repository);
        match (&self.tag, &self.digest) {
            (Some(tag), _) => format!("{name}:{tag}"),
            (None, Some(digest)) => format!("{name}@{digest}"),
            (None, None) => format!("{name}:latest"),
        }
    }

    /// Docker's short form for people: `nginx:1.27`, `ghcr.io/org/app:v1`,
    /// `user/app@sha256:…`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        match (&self.tag, &self.digest) {
            (Some(tag), _) => format!("{name}:{tag}"),
            (None, Some(digest)) => format!("{name}@{digest}"),
            (None, None) => name,
        }
    }

    /// The host (and port) to contact: `registry-1.docker.io` for
    /// `docker.io`, else `registry`.
    pub fn endpoint_host(&self) -> String {
        endpoint_for(&self.registry)
    }

    /// What the manifest is fetched by: the digest when there is one, else
    /// the tag.
    pub fn manifest_key(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// The host serving `registry` (a registry name or a mirror).
pub(crate) fn endpoint_for(registry: &str) -> String {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_ENDPOINT.to_owned()
    } else {
        registry.to_owned()
    }
}

/// Splits off the domain as Docker decides.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// Validates `sha256:<64 lowercase hex>`; other algorithms are refused.
pub(crate) fn parse_digest(text: &str) -> Result<String, String> {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return Err(format!("digest {text:?} lacks an algorithm (sha256:…)"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported (only sha256)"
        ));
    }
    if !is_sha256_hex(hex) {
        return Err(format!(
            "digest {text:?} must be sha256: and 64 lowercase hexadecimal digits"
        ));
    }
    Ok(text.to_owned())
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = match chars.next() {
        Some(first) => word(first) && chars.all(|c| word(c) || c == '.' || c == '-'),
        None => false,
    };
    if !ok || tag.len() > 128 {
        return Err(format!(
            "tag {tag:?} is invalid: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry {domain:?} has an invalid port"));
        }
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(format!("registry {domain:?} is not a valid host name"));
    }
    Ok(())
}

fn check_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("is empty".into());
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let invalid = || {
        Err(
            "is invalid: lowercase letters and digits, separated by '.', '_', '__' or dashes"
                .into(),
        )
    };
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return invalid();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return invalid();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ffd3c4fd9e1b2a3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4";

    fn parse(text: &str) -> Reference {
        Reference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn canonical(text: &str) -> String {
        parse(text).canonical()
    }

    fn refused(text: &str) -> String {
        match Reference::parse(text) {
            Ok(r) => panic!("{text:?} parsed as {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn normalizes_as_docker() {
        // docker/distribution reference/normalize_test.go
        assert_eq!(canonical("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            canonical("library/nginx:1.27"),
            "docker.io/library/nginx:1.27"
        );
        assert_eq!(
            canonical("docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            canonical("docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            canonical("index.docker.io/nginx:1"),
            "docker.io/library/nginx:1"
        );
        assert_eq!(
            canonical("dmcgowan/myapp"),
            "docker.io/dmcgowan/myapp:latest"
        );
        assert_eq!(
            canonical("dmcgowan/myapp/sub"),
            "docker.io/dmcgowan/myapp/sub:latest"
        );
        assert_eq!(canonical("localhost/x"), "localhost/x:latest");
        assert_eq!(canonical("localhost:5000/x:y"), "localhost:5000/x:y");
        assert_eq!(canonical("host:5000/a/b:tag"), "host:5000/a/b:tag");
        assert_eq!(canonical("example.com/a"), "example.com/a:latest");
        assert_eq!(canonical("Foo/bar"), "Foo/bar:latest"); // an uppercase first part is a domain
        assert_eq!(
            canonical("xn--n3h.com/myimage:xn--n3h.com"),
            "xn--n3h.com/myimage:xn--n3h.com"
        );
        assert_eq!(
            canonical("127.0.0.1:5000/test/bb:1"),
            "127.0.0.1:5000/test/bb:1"
        );
        let digest = format!("sha256:{HEX}");
        let r = parse(&format!("ghcr.io/org/app@{digest}"));
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(r.canonical(), format!("ghcr.io/org/app@{digest}"));
        assert_eq!(r.manifest_key(), digest);
        let both = parse(&format!("nginx:1.27@{digest}"));
        assert_eq!(both.tag.as_deref(), Some("1.27"));
        assert_eq!(both.manifest_key(), digest, "the digest wins");
        assert_eq!(both.canonical(), "docker.io/library/nginx:1.27");
        assert_eq!(parse("a_b.c__d-e--f").repository, "library/a_b.c__d-e--f");
    }

    #[test]
    fn familiar_and_endpoint() {
        assert_eq!(parse("nginx").familiar(), "nginx:latest");
        assert_eq!(
            parse("docker.io/library/nginx:1.27").familiar(),
            "nginx:1.27"
        );
        assert_eq!(parse("user/app:2").familiar(), "user/app:2");
        assert_eq!(
            parse("docker.io/library/a/b").familiar(),
            "library/a/b:latest"
        );
        assert_eq!(parse("ghcr.io/org/app:v1").familiar(), "ghcr.io/org/app:v1");
        assert_eq!(parse("nginx").endpoint_host(), "registry-1.docker.io");
        assert_eq!(parse("host:5000/a").endpoint_host(), "host:5000");
    }

    #[test]
    fn refuses_what_docker_refuses() {
        // docker/distribution reference/reference_test.go and normalize_test.go
        assert!(refused("").contains("empty"));
        assert!(refused("Uppercase:tag").contains("lowercase"));
        assert!(refused("docker.io/Uppercase").contains("lowercase"));
        assert!(refused("test:5000/Uppercase/lowercase:tag").contains("lowercase"));
        assert!(refused(HEX).contains("image id"));
        refused("a/a/a/a/a:tag-puts-this-over-max/");
        assert!(refused(":justtag").contains("empty"));
        refused("@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
        refused("validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
        assert!(refused("repo@sha256:fffff").contains("64"));
        assert!(refused(&format!("repo@sha256:{}", HEX.to_uppercase())).contains("64"));
        assert!(refused(&format!("repo@sha512:{HEX}")).contains("sha512"));
        refused("repo@sha256");
        assert!(refused("nginx:-bad").contains("tag"));
        assert!(refused("nginx:.bad").contains("tag"));
        assert!(refused("nginx:a/b").contains("empty") || refused("nginx:a/b").contains("invalid"));
        assert!(refused(&format!("nginx:{}", "a".repeat(129))).contains("128"));
        assert!(refused("nginx:").contains("tag"));
        refused("aa/asdf$$^/aa");
        refused("a//b");
        refused("-foo/bar");
        refused("foo-/bar");
        refused("foo/-bar");
        refused("foo/bar-");
        refused("foo/bar.");
        refused("foo/bar..baz");
        refused("foo/bar___baz");
        refused("foo bar");
        refused("host:port/x");
        refused("host:/x");
        refused("-host.com/x");
        refused("host-.com:5000/x");
        assert!(refused(&format!("a/{}", "b".repeat(255))).contains("255"));
        // A long but legal name is accepted.
        parse(&format!("a/{}", "b".repeat(250)));
        parse(&format!("nginx:{}", "a".repeat(128)));
    }

    #[test]
    fn errors_name_the_text() {
        let message = refused("Nginx");
        assert!(message.contains("\"Nginx\""), "{message}");
    }
}
