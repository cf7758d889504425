//! Cutting text that came from outside (a profile value, a request's query)
//! to a length fit for one error message or log line, saying how long it was.
//!
//! [`quoted`] is for a value put into a message; [`clip_message`] is the net
//! under whole messages, for values that reached them through other code
//! (serde's "invalid type: string ..." repeats the value it refused).

use std::borrow::Cow;

/// Characters of a value kept in a message.
pub const MAX_VALUE_CHARS: usize = 200;

/// Characters of a whole message kept.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// `text` if it has at most `max` characters, else its first `max` followed
/// by `… (N bytes)`.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len())),
    }
}

/// `text` quoted and escaped as `{:?}` would, its first
/// [`MAX_VALUE_CHARS`] characters only, with the length after a cut:
/// `"AAAA…"… (15000 bytes)`.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_VALUE_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

/// Every quoted value (between `"` as `{:?}` writes them, escapes
/// honoured, or between backticks) of more than [`MAX_VALUE_CHARS`]
/// characters cut with [`cut`], then the whole cut at [`MAX_MESSAGE_CHARS`].
/// Text outside quotes is the message's own words and kept. Clipping a
/// clipped message changes nothing (a cut value keeps its first length).
pub fn clip_message(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_VALUE_CHARS {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len().min(2 * MAX_MESSAGE_CHARS));
    // (quote, where its value starts)
    let mut open: Option<(char, usize)> = None;
    let mut copied = 0;
    let mut chars = message.char_indices();
    while let Some((i, c)) = chars.next() {
        match open {
            None if c == '"' || c == '`' => open = Some((c, i + 1)),
            None => {}
            Some(('"', _)) if c == '\\' => {
                chars.next();
            }
            Some((quote, start)) if c == quote => {
                out.push_str(&message[copied..start]);
                out.push_str(&cut_value(&message[start..i]));
                copied = i;
                open = None;
            }
            Some(_) => {}
        }
    }
    match open {
        Some((_, start)) => {
            out.push_str(&message[copied..start]);
            out.push_str(&cut_value(&message[start..]));
        }
        None => out.push_str(&message[copied..]),
    }
    if out.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        return Cow::Owned(cut(&out, MAX_MESSAGE_CHARS).into_owned());
    }
    if out == message {
        Cow::Borrowed(message)
    } else {
        Cow::Owned(out)
    }
}

/// A quoted value cut to [`MAX_VALUE_CHARS`], unless it is at most a
/// `… (N bytes)` longer: then it was cut before, or nearly fits.
fn cut_value(value: &str) -> Cow<'_, str> {
    const SLACK: usize = 32;
    if value.chars().nth(MAX_VALUE_CHARS + SLACK).is_none() {
        Cow::Borrowed(value)
    } else {
        cut(value, MAX_VALUE_CHARS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_long_text_cut_with_its_length() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc… (4 bytes)");
        // Characters, not bytes: never inside a UTF-8 sequence.
        assert_eq!(cut("ééé", 2), "éé… (6 bytes)");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        let long = "x".repeat(1_000_000);
        let q = quoted(&long);
        assert!(q.len() < 240 && q.ends_with("\"… (1000000 bytes)"), "{q}");
    }

    #[test]
    fn messages_keep_their_words_and_lose_long_values() {
        let short = "invalid type: string \"lots\", expected u64";
        assert_eq!(clip_message(short), short);
        let long = format!(
            "invalid type: string \"{}\", expected u64; unknown field `{}`",
            "v".repeat(5000),
            "k".repeat(300)
        );
        let clipped = clip_message(&long);
        assert!(clipped.len() < 600, "{clipped}");
        assert!(
            clipped.starts_with("invalid type: string \"vvv"),
            "{clipped}"
        );
        assert!(clipped.contains("… (5000 bytes)\", expected u64; unknown field `kk"));
        assert!(clipped.ends_with("… (300 bytes)`"), "{clipped}");
        assert_eq!(clip_message(&clipped), clipped);
        // Prose is not a value, however long; escaped quotes do not end one.
        let prose = format!("{} \"a\\\"{}\"", "word ".repeat(100), "b".repeat(300));
        let clipped = clip_message(&prose);
        assert!(clipped.starts_with(&"word ".repeat(100)), "{clipped}");
        assert!(clipped.ends_with("… (303 bytes)\""), "{clipped}");
        // Many short pieces still make one bounded message.
        let many = "\"a\"".repeat(100_000);
        assert!(clip_message(&many).chars().count() < MAX_MESSAGE_CHARS + 40);
    }
}
