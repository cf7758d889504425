//! hostd's Docker API request parsing: any path, query and create body gets
//! a route or an error with a status, and a create body either becomes a
//! valid run request or a 400 naming the problem; exec bodies and detach
//! keys parse or are refused; nothing panics.
#![no_main]

use hostd::daemon::docker::{create, interactive, resources, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (path, query) = head.split_once('?').unwrap_or((head, ""));
    for method in ["GET", "POST", "DELETE", "HEAD"] {
        if let Ok((_, rest)) = route::split_version(path) {
            if let Err(e) = route::route(method, rest) {
                assert!(matches!(e.status, 400 | 404), "{e}");
            }
        }
    }
    let _ = route::parse_query(query);
    match create::run_request(body.as_bytes(), Some("fuzz")) {
        Ok(run) => assert!(run.validate().is_ok()),
        Err(e) => assert_eq!(e.status, 400, "{e}"),
    }
    // An exec body, and detach keys from anywhere.
    if let Ok(exec) = create::exec_config(body.as_bytes()) {
        assert!(!exec.cmd.is_empty());
    }
    if let Ok(keys) = interactive::parse_detach_keys(head) {
        let mut watch = interactive::DetachKeys::new(keys);
        let (passed, _) = watch.feed(body.as_bytes());
        assert!(passed.len() <= body.len() + head.len());
    }
    for parsed in [
        resources::network_spec(body.as_bytes()).err(),
        resources::volume_create(body.as_bytes()).err(),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(parsed.status, 400, "{parsed}");
    }
});
