//! Integration tests of mkhost-registry: pulls from a real registry
//! (Debian's `docker-registry`, CNCF distribution 2.8) over HTTP, HTTPS with
//! Basic auth and with token auth, and from hostile servers the tests run.

mod common;
mod hostile;
mod plain;
mod secure;
