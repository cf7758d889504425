//! `mkhost serve`'s request-head reader and the helpers it feeds: any bytes
//! from a client give a request, "no request" or an error.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use mkhost::http;

fuzz_target!(|data: &[u8]| {
    let mut reader = BufReader::new(data);
    while let Ok(Some(request)) = http::read_request(&mut reader) {
        let _ = request.keep_alive();
        let _ = http::parse_range(request.header("range"), 1 << 20);
        if let Ok(target) = http::parse_target(&request.target) {
            let _ = target.query_value("mac");
        }
        let _ = http::loggable(&request.target);
    }
});
