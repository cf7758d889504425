//! hostd's control protocol: any line from a client parses to a request or
//! an error, and a request's checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mkhost_shared::control::{parse_request, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_request(data) {
        let _ = request.client_timeout();
        if let Request::Run(run) = request {
            let _ = run.validate();
        }
    }
});
