//! One captured output line, as the supervisor writes it and berthd reads it back.
//!
//! On disk each record is `<usec> <stream> <text>\n`: microseconds since the epoch
//! (CLOCK_REALTIME), `stdout` or `stderr`, then the line without its newline. Lines longer than
//! [`MAX_LINE`] are split; invalid UTF-8 is kept as bytes on disk; on read the text has U+FFFD
//! in its place and the exact bytes come along in [`LogRecord::bytes`].

use serde::{Deserialize, Serialize};

/// Longest text of one record; longer output lines are split into several records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub usec: u64,
    pub stream: Stream,
    pub text: String,
    /// The line's exact bytes, only when they are not valid UTF-8.
    pub bytes: Option<Vec<u8>>,
}

/// Appends the on-disk form of one record to `out`.
pub fn encode(usec: u64, stream: Stream, text: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(usec.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Parses one on-disk line (without its trailing newline). `None` for a corrupt line.
pub fn decode(line: &[u8]) -> Option<LogRecord> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let usec = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let raw = parts.next().unwrap_or_default();
    let (text, bytes) = match std::str::from_utf8(raw) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(raw).into_owned(),
            Some(raw.to_vec()),
        ),
    };
    Some(LogRecord {
        usec,
        stream,
        text,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_record_decodes_to_the_same_fields() {
        let mut buf = Vec::new();
        encode(42, Stream::Stderr, b"hello world", &mut buf);

        let record = decode(buf.strip_suffix(b"\n").unwrap());

        assert_eq!(
            record,
            Some(LogRecord {
                usec: 42,
                stream: Stream::Stderr,
                text: "hello world".into(),
                bytes: None,
            })
        );
    }

    #[test]
    fn invalid_utf8_decodes_to_replaced_text_and_the_exact_bytes() {
        let record = decode(b"7 stdout a\xffb").unwrap();

        assert_eq!(record.text, "a\u{fffd}b");
        assert_eq!(record.bytes.as_deref(), Some(&b"a\xffb"[..]));
    }

    #[test]
    fn corrupt_line_decodes_to_none() {
        assert_eq!(decode(b"notanumber stdout x"), None);
        assert_eq!(decode(b"12 stdin x"), None);
    }
}
