//! An OCI distribution client: resolves image references against
//! registries (Docker Hub, ghcr.io, a `docker-registry` on the LAN) and
//! pulls images into OCI image layouts that `mkhost-store` imports. hostd
//! uses it for `hostd pull`, mkhost for build-time pulls.
//!
//! # What a pull does
//!
//! 1. [`Reference::parse`] normalizes the text as Docker does
//!    (`nginx` is `docker.io/library/nginx:latest`).
//! 2. `GET /v2/<repository>/manifests/<tag or digest>` on the registry's
//!    mirrors, then the registry, asking for OCI and Docker schema 2
//!    manifests and indexes. An index leads to its linux/amd64 manifest.
//!    Manifests are capped at 4 MiB, checked against the digest that names
//!    them (the reference's, the index entry's) and against
//!    `Docker-Content-Digest`. Docker schema 1 is refused.
//! 3. The config (capped at 8 MiB) and the layers are streamed to
//!    `blobs/sha256/<hex>.tmp`, hashed on the way, and renamed into place
//!    only when the sha256 and the size match the descriptor. Layers
//!    download [`ClientOptions::concurrency`] at a time; layers the caller
//!    already has are hard-linked instead.
//! 4. `index.json` and `oci-layout` are written last.
//!
//! # Transport
//!
//! HTTPS (rustls with the ring provider; the system CA bundle, or the
//! Mozilla roots compiled in when there is none, plus
//! [`ClientOptions::ca_pem`]); plain HTTP only for registries listed in
//! [`ClientOptions::insecure`]. On 401 the client answers the registry's
//! challenge: Basic with the docker config's credentials, or a Bearer token
//! from the token service (anonymous or with those credentials), kept per
//! registry and repository until it expires. Redirects are followed by hand
//! (at most 5, loops refused). A connection that delivers nothing for
//! [`ClientOptions::stall_timeout`] fails.
//!
//! Names are resolved with the C library's `getaddrinfo`: the static
//! binaries resolve IP literals and `/etc/hosts` only.

mod auth;
mod client;
mod error;
mod manifest;
mod pull;
mod reference;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use auth::{registry_key, Credentials};
pub use client::{Client, ClientOptions, NameResolver, ResolveFn};
pub use error::{Cause, RegistryError, Step};
pub use manifest::{
    image_blobs, BlobRef, ImageBlobs, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
pub use pull::{Progress, Pulled, Resolved, CONFIG_MAX, MANIFEST_MAX};
pub use reference::{Reference, DOCKER_HUB, DOCKER_HUB_ENDPOINT};
