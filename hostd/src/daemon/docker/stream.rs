//! Streamed answers: a body fed by a channel (pull progress, `wait`,
//! `logs -f`) and Docker's multiplexed stream format (an 8-byte header per
//! frame: the stream, three zero bytes, the length big-endian).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};

use crate::daemon::containers::Stream;

/// A response body whose chunks come from a channel; it ends when every
/// sender is gone.
pub struct ChannelBody {
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it (`capacity` chunks may wait).
    pub fn new(capacity: usize) -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
        (sender, ChannelBody { receiver })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// One frame of the multiplexed stream: `payload` from `stream`.
pub fn frame(stream: Stream, payload: &[u8]) -> Bytes {
    let kind = match stream {
        Stream::Stdout => 1u8,
        Stream::Stderr => 2u8,
    };
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&payload[..length as usize]);
    Bytes::from(out)
}

/// A log line as a frame, with its time first if `timestamps`.
pub fn line_frame(stream: Stream, time: &str, line: &[u8], timestamps: bool) -> Bytes {
    let mut payload = Vec::with_capacity(line.len() + 40);
    if timestamps {
        payload.extend_from_slice(time.as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(line);
    payload.push(b'\n');
    frame(stream, &payload)
}

/// One line of `container.log`: `<time> <stdout|stderr> <text>`.
pub fn parse_log_line(line: &str) -> Option<(&str, Stream, &str)> {
    let (time, rest) = line.split_once(' ')?;
    let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let stream = match stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    Some((time, stream, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_dockers_header() {
        assert_eq!(
            &frame(Stream::Stderr, b"hi\n")[..],
            &[2, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']
        );
        assert_eq!(
            &line_frame(Stream::Stdout, "T", b"x", true)[..],
            &[1, 0, 0, 0, 0, 0, 0, 4, b'T', b' ', b'x', b'\n']
        );
    }

    #[test]
    fn log_lines_parse() {
        assert_eq!(
            parse_log_line("2026-01-01T00:00:00Z stdout a b"),
            Some(("2026-01-01T00:00:00Z", Stream::Stdout, "a b"))
        );
        assert_eq!(
            parse_log_line("2026-01-01T00:00:00Z stderr"),
            Some(("2026-01-01T00:00:00Z", Stream::Stderr, ""))
        );
        assert_eq!(parse_log_line("garbage"), None);
    }
}
