//! Pulls over plain HTTP from an anonymous registry: by tag and digest, a
//! three-layer image, a multi-arch index, reuse of blobs the caller has;
//! the layouts are read back by skopeo and imported into the store.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use mkhost_registry::{Cause, Progress};

use crate::common::*;

#[test]
fn pull_by_tag_and_digest_into_a_layout_others_read() {
    if !tools() {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), "", None);
    let host = registry.host();
    push(&host, "bb", "test/bb:1");
    let client = insecure_client(&host);
    let work = tempfile::tempdir().unwrap();

    let by_tag = work.path().join("tag");
    let events = Mutex::new(Vec::new());
    let pulled = client
        .pull_to_layout(
            &reference(&format!("{host}/test/bb:1")),
            &by_tag,
            &|_| None,
            &|p: Progress| events.lock().unwrap().push(p),
        )
        .unwrap();
    assert_eq!(pulled.layers, 1);
    assert_eq!(pulled.blobs_reused, 0);
    assert_eq!(check_blobs(&by_tag), 3, "manifest, config, layer");
    let events = events.into_inner().unwrap();
    assert!(
        matches!(&events[0], Progress::Resolved { layers: 1, manifest_digest, .. } if *manifest_digest == pulled.manifest_digest)
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::BlobDone { reused: false, .. })));
    let index = std::fs::read_to_string(by_tag.join("index.json")).unwrap();
    assert!(
        index.contains(r#""org.opencontainers.image.ref.name":"1""#),
        "{index}"
    );

    // A real reader accepts the layout.
    let inspect =
        run(Command::new("skopeo").args(["inspect", &format!("oci:{}:1", by_tag.display())]));
    assert!(inspect.contains(&pulled.manifest_digest), "{inspect}");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:1", by_tag.display()),
        &format!("oci:{}:copy", work.path().join("copy").display()),
    ]));

    // resolve agrees, and a pull by digest gives the same image.
    let resolved = client
        .resolve(&reference(&format!("{host}/test/bb:1")))
        .unwrap();
    assert_eq!(resolved.manifest_digest, pulled.manifest_digest);
    assert_eq!(resolved.media_type, mkhost_registry::OCI_MANIFEST);
    let by_digest = work.path().join("digest");
    let text = format!("{host}/test/bb@{}", pulled.manifest_digest);
    let again = pull(&client, &text, &by_digest).unwrap();
    assert_eq!(again.manifest_digest, pulled.manifest_digest);
    assert_eq!(again.config_digest, pulled.config_digest);
    let index = std::fs::read_to_string(by_digest.join("index.json")).unwrap();
    assert!(
        index.contains(r#""org.opencontainers.image.ref.name":"latest""#),
        "{index}"
    );

    // The store imports it: the image id is the config digest.
    let store = mkhost_store::Store::open(work.path().join("store")).unwrap();
    let name = reference(&format!("{host}/test/bb:1")).canonical();
    store.import_named(&by_tag, &name).unwrap();
    let info = store.inspect(&name).unwrap();
    assert_eq!(info.id, pulled.config_digest);
    assert_eq!(info.layers.len(), 1);

    // A tag that is not there: 404 with the registry's message.
    let missing = pull(
        &client,
        &format!("{host}/test/bb:nope"),
        &work.path().join("nope"),
    )
    .unwrap_err();
    assert!(
        matches!(missing.cause(), Some(Cause::Status { status: 404, .. })),
        "{missing}"
    );
    let message = missing.to_string();
    assert!(
        message.starts_with(&format!("pull {host}/test/bb:nope: resolve: ")),
        "{message}"
    );
    assert!(message.contains("MANIFEST_UNKNOWN"), "{message}");
}

#[test]
fn three_layers_multi_arch_and_reuse() {
    if !tools() {
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), "", None);
    let host = registry.host();
    push(&host, "three", "test/three:1");
    push(&host, "bb", "test/multi:amd64");
    push(&host, "arm", "test/multi:arm64");
    let client = insecure_client(&host);
    let work = tempfile::tempdir().unwrap();

    let first = work.path().join("first");
    let pulled = pull(&client, &format!("{host}/test/three:1"), &first).unwrap();
    assert_eq!(pulled.layers, 3);
    assert_eq!(check_blobs(&first), 5);

    // Again, with the first pull's blobs at hand: only manifest and config
    // travel.
    let second = work.path().join("second");
    let have = |digest: &str| -> Option<PathBuf> {
        let path = first
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:")?);
        path.exists().then_some(path)
    };
    let reused = client
        .pull_to_layout(
            &reference(&format!("{host}/test/three:1")),
            &second,
            &have,
            &|_| {},
        )
        .unwrap();
    assert_eq!(reused.blobs_reused, 3);
    assert_eq!(reused.manifest_digest, pulled.manifest_digest);
    let manifest_size = client
        .resolve(&reference(&format!("{host}/test/three:1")))
        .unwrap()
        .size;
    let config_size = std::fs::metadata(
        first
            .join("blobs/sha256")
            .join(&pulled.config_digest["sha256:".len()..]),
    )
    .unwrap()
    .len();
    assert_eq!(reused.bytes_fetched, manifest_size + config_size);
    assert!(pulled.bytes_fetched > reused.bytes_fetched + 500_000);
    assert_eq!(check_blobs(&second), 5);
    let store = mkhost_store::Store::open(work.path().join("store")).unwrap();
    store.import_named(&second, "three:1").unwrap();
    assert_eq!(store.inspect("three:1").unwrap().layers.len(), 3);

    // A multi-arch index: linux/amd64 is chosen.
    let amd64 = client
        .resolve(&reference(&format!("{host}/test/multi:amd64")))
        .unwrap();
    let arm64 = client
        .resolve(&reference(&format!("{host}/test/multi:arm64")))
        .unwrap();
    let entry = |r: &mkhost_registry::Resolved, arch: &str| {
        format!(
            r#"{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
            r.media_type, r.manifest_digest, r.size
        )
    };
    let put_index = |tag: &str, entries: &[String]| {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            entries.join(",")
        );
        ureq::put(&format!("http://{host}/v2/test/multi/manifests/{tag}"))
            .set("Content-Type", "application/vnd.oci.image.index.v1+json")
            .send_string(&body)
            .unwrap_or_else(|e| panic!("PUT index {tag}: {e}"));
    };
    put_index("all", &[entry(&arm64, "arm64"), entry(&amd64, "amd64")]);
    put_index("armonly", &[entry(&arm64, "arm64")]);
    let multi = pull(
        &client,
        &format!("{host}/test/multi:all"),
        &work.path().join("multi"),
    )
    .unwrap();
    assert_eq!(multi.manifest_digest, amd64.manifest_digest);
    assert_eq!(
        client
            .resolve(&reference(&format!("{host}/test/multi:all")))
            .unwrap(),
        amd64
    );
    let err = pull(
        &client,
        &format!("{host}/test/multi:armonly"),
        &work.path().join("arm"),
    )
    .unwrap_err();
    assert!(
        matches!(err.cause(), Some(Cause::NoPlatform { available }) if available == &["linux/arm64"]),
        "{err}"
    );
    assert!(err.to_string().contains("linux/arm64"), "{err}");
}
