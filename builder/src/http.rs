//! The small part of HTTP/1.1 that `mkhost serve` speaks, as pure functions:
//! reading a request head with a size limit, splitting and percent-decoding the
//! request target and its query, parsing a `Range` header against a file length,
//! and writing a response head.
//!
//! Nothing here touches the file system: the server maps a decoded path to one of
//! a fixed set of artifacts and never joins request text onto a directory, so
//! `..`, absolute paths and percent-encoded tricks can only fail to match.

use std::io::{BufRead, Write};

/// The most bytes a request head (request line and headers) may take.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request head longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("connection closed in the middle of a request head")]
    Incomplete,
    #[error("malformed request line {0:?}")]
    RequestLine(String),
    #[error("unsupported protocol version {0:?}")]
    Version(String),
    #[error("malformed header line {0:?}")]
    Header(String),
    #[error("reading the request")]
    Io(#[source] std::io::Error),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("request target {0:?} is not an absolute path")]
    NotAbsolute(String),
    #[error("bad percent-encoding in {0:?}")]
    Encoding(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A request head as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    pub version: Version,
    /// Header fields in order; names in lowercase.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header field named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        let has = |token: &str| {
            connection
                .as_deref()
                .is_some_and(|c| c.split(',').any(|t| t.trim() == token))
        };
        match self.version {
            Version::Http11 => !has("close"),
            Version::Http10 => has("keep-alive"),
        }
    }

    /// Whether the request announces a body (which GET and HEAD have no use for).
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self
                .header("content-length")
                .is_some_and(|v| v.trim() != "0")
    }
}

/// Reads one request head. `Ok(None)` when the peer closed the connection
/// before sending anything (the normal end of a keep-alive connection).
pub fn read_request<R: BufRead>(reader: &mut R) -> Result<Option<Request>, HttpError> {
    let mut budget = MAX_HEAD_BYTES;
    // RFC 9112 2.2: ignore empty lines before the request line.
    let request_line = loop {
        match read_line(reader, &mut budget)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::RequestLine(request_line));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || target.is_empty() {
        return Err(HttpError::RequestLine(request_line));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        other => return Err(HttpError::Version(other.to_string())),
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut budget)?.ok_or(HttpError::Incomplete)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::TooManyHeaders);
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(is_token_byte))
            .ok_or_else(|| HttpError::Header(line.clone()))?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        version,
        headers,
    }))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One line without its CRLF (or bare LF); `None` at end of input before any byte.
fn read_line<R: BufRead>(reader: &mut R, budget: &mut usize) -> Result<Option<String>, HttpError> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(HttpError::Io(err)),
        };
        if available.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(HttpError::Incomplete)
            };
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if taken > *budget {
            return Err(HttpError::HeadTooLarge);
        }
        *budget -= taken;
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

/// A request target split into its decoded path and query pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Target {
    /// The first query value named `name`.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `/path?query` (or the absolute form `http://host/path?query`) and
/// percent-decodes both parts. A decoded path containing NUL or invalid UTF-8 is
/// refused; whatever else it decodes to is only ever compared, never opened.
pub fn parse_target(raw: &str) -> Result<Target, TargetError> {
    let mut rest = raw;
    for scheme in ["http://", "https://"] {
        // `get`, not indexing: the target may have a multi-byte character
        // where the scheme would end (found by the http_request fuzz target).
        if rest
            .get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
        {
            let after = &rest[scheme.len()..];
            rest = after.find('/').map_or("/", |i| &after[i..]);
            break;
        }
    }
    if !rest.starts_with('/') {
        return Err(TargetError::NotAbsolute(raw.to_string()));
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let encoding = || TargetError::Encoding(raw.to_string());
    let path = mkhost_shared::percent::decode(path, false)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|p| !p.contains('\0'))
        .ok_or_else(encoding)?;
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            mkhost_shared::percent::decode(s, true)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(encoding)
        };
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(Target { path, query: pairs })
}

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// No usable range: send the whole file (200).
    Full,
    /// One satisfiable range, inclusive bounds (206).
    Partial { start: u64, end: u64 },
    /// A byte range that is malformed or lies outside the file (416).
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `len` bytes.
///
/// One `bytes=` range is served: `a-b`, `a-` or `-suffix`. A range unit other
/// than `bytes` is ignored (whole file, as RFC 9110 asks), and so is a list of
/// several ranges (servers may ignore Range; iPXE and firmware never send one).
/// A malformed byte range (`bytes=5-3`, `bytes=x-`) or one starting past the end
/// is unsatisfiable.
pub fn parse_range(header: Option<&str>, len: u64) -> Range {
    let Some(header) = header else {
        return Range::Full;
    };
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return Range::Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Range::Full;
    }
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Unsatisfiable;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            Some(n) if n > 0 && len > 0 => Range::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            _ => Range::Unsatisfiable,
        },
        // bytes=A-: from A to the end.
        (false, true) => match number(first) {
            Some(start) if start < len => Range::Partial {
                start,
                end: len - 1,
            },
            _ => Range::Unsatisfiable,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end && start < len => Range::Partial {
                start,
                end: end.min(len - 1),
            },
            _ => Range::Unsatisfiable,
        },
        (true, true) => Range::Unsatisfiable,
    }
}

/// The reason phrase for the status codes the server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes a status line and header fields, then the blank line.
pub fn write_head<W: Write>(
    out: &mut W,
    status: u16,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

/// A request target made safe for one log line: printable ASCII kept, anything
/// else percent-escaped, long targets cut (`… (N bytes)`).
pub fn loggable(target: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for b in target.bytes() {
        if out.len() >= MAX {
            out.push_str(&format!("… ({} bytes)", target.len()));
            break;
        }
        if (0x21..0x7f).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Option<Request>, HttpError> {
        read_request(&mut std::io::Cursor::new(text.as_bytes().to_vec()))
    }

    #[test]
    fn reads_request_heads() {
        let r = req("GET /vmlinuz HTTP/1.1\r\nHost: 10.0.2.2:8080\r\nRange:  bytes=0-9 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/vmlinuz");
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.header("host"), Some("10.0.2.2:8080"));
        assert_eq!(r.header("range"), Some("bytes=0-9"));
        assert!(r.keep_alive());
        // Bare LF line ends and a leading empty line are accepted.
        let r = req("\r\nHEAD / HTTP/1.0\nConnection: keep-alive\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.version, Version::Http10);
        assert!(r.keep_alive());
        let r = req("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive());
        assert!(req("").unwrap().is_none());
    }

    #[test]
    fn bad_request_heads_are_errors() {
        for (text, want) in [
            ("GET /\r\n\r\n", "malformed request line"),
            ("GET / HTTP/1.1 x\r\n\r\n", "malformed request line"),
            ("G3T / HTTP/1.1\r\n\r\n", "malformed request line"),
            ("GET / HTTP/2\r\n\r\n", "unsupported protocol"),
            ("GET / HTTP/1.1\r\nno colon\r\n\r\n", "malformed header"),
            ("GET / HTTP/1.1\r\nbad name: x\r\n\r\n", "malformed header"),
            ("GET / HTTP/1.1\r\nHost: x\r\n", "closed in the middle"),
        ] {
            let err = req(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(req(&long), Err(HttpError::HeadTooLarge)));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(req(&many), Err(HttpError::TooManyHeaders)));
    }

    #[test]
    fn request_bodies_are_noticed() {
        let r = req("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.has_body());
        let r = req("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.has_body());
    }

    #[test]
    fn targets_split_and_decode() {
        let t = parse_target("/boot.ipxe?mac=52%3A54%3A00%3AAA%3Abb%3A01&x=a+b").unwrap();
        assert_eq!(t.path, "/boot.ipxe");
        assert_eq!(t.query_value("mac"), Some("52:54:00:AA:bb:01"));
        assert_eq!(t.query_value("x"), Some("a b"));
        assert_eq!(t.query_value("y"), None);
        let t = parse_target("/%2e%2e/%2E%2E/etc/passwd").unwrap();
        assert_eq!(t.path, "/../../etc/passwd");
        let t = parse_target("HTTP://server:8080/pxe/vmlinuz").unwrap();
        assert_eq!(t.path, "/pxe/vmlinuz");
        assert_eq!(parse_target("http://server").unwrap().path, "/");
        let t = parse_target("/boot.ipxe?mac").unwrap();
        assert_eq!(t.query_value("mac"), Some(""));
        // A multi-byte character where a scheme would end: no panic (a
        // remote client could otherwise abort `serve`; found by fuzzing).
        assert_eq!(
            parse_target("/boo\u{fffd}xe").unwrap().path,
            "/boo\u{fffd}xe"
        );
        assert!(parse_target("htt\u{fffd}://x/").is_err());
        for bad in ["etc/passwd", "*", "../x", "/a%2", "/a%zz", "/a%00b", "/%ff"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let p = |start, end| Range::Partial { start, end };
        assert_eq!(parse_range(None, 100), Range::Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), p(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 100), p(10, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), p(90, 99));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), p(0, 99));
        assert_eq!(parse_range(Some("bytes=90-1000"), 100), p(90, 99));
        assert_eq!(parse_range(Some("Bytes = 99-99"), 100), p(99, 99));
        assert_eq!(parse_range(Some("items=0-9"), 100), Range::Full);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Range::Full);
        for bad in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=5-3",
            "bytes=-0",
            "bytes=-",
            "bytes=x-1",
            "bytes=1-y",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "bytes",
        ] {
            assert_eq!(parse_range(Some(bad), 100), Range::Unsatisfiable, "{bad}");
        }
        assert_eq!(parse_range(Some("bytes=-5"), 0), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Range::Unsatisfiable);
    }

    #[test]
    fn response_heads_and_log_text() {
        let mut out = Vec::new();
        write_head(&mut out, 206, &[("Content-Length", "10".into())]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n"
        );
        assert_eq!(loggable("/a b\n\u{7f}"), "/a%20b%0A%7F");
        assert!(loggable(&"x".repeat(500)).ends_with("x… (500 bytes)"));
    }
}
