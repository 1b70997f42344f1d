//! One captured output line, as the supervisor writes it and berthd reads it back.
//!
//! On disk each record is `<usec> <stream> <text>\n`: microseconds since the epoch
//! (CLOCK_REALTIME), `stdout` or `stderr`, then the line without its newline. A message the
//! service sent to a log socket (`/dev/log`, the journal's socket) is
//! `<usec> <stream>:<priority>:<pid>:<identifier> <text>\n` with stream `syslog` or
//! `journal`, priority 0-7, the pid and identifier it named itself with (each possibly
//! empty; the identifier without whitespace or control characters). Lines longer than
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
    /// A syslog(3) message (`/dev/log`, `/run/systemd/journal/dev-log`): journald's
    /// `_TRANSPORT=syslog`.
    Syslog,
    /// A journal native-protocol entry (`/run/systemd/journal/socket`): `_TRANSPORT=journal`.
    Journal,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Syslog => "syslog",
            Stream::Journal => "journal",
        }
    }

    fn parse(name: &[u8]) -> Option<Stream> {
        Some(match name {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            b"syslog" => Stream::Syslog,
            b"journal" => Stream::Journal,
            _ => return None,
        })
    }
}

/// Longest identifier a record keeps (journald's SYSLOG_IDENTIFIER; syslog tags are far
/// shorter).
pub const MAX_IDENTIFIER: usize = 64;

/// What a message sent to a log socket said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// syslog's severity, 0 (emerg) to 7 (debug).
    pub priority: u8,
    pub pid: Option<u32>,
    pub identifier: Option<&'a [u8]>,
}

/// A parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub usec: u64,
    pub stream: Stream,
    pub text: String,
    /// The line's exact bytes, only when they are not valid UTF-8.
    pub bytes: Option<Vec<u8>>,
    /// Of a log socket's message: its priority (0-7), pid and identifier.
    pub priority: Option<u8>,
    pub pid: Option<u32>,
    pub identifier: Option<String>,
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

/// Appends the on-disk form of one line of a log socket's message to `out`.
pub fn encode_message(
    usec: u64,
    stream: Stream,
    origin: &Origin<'_>,
    text: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(usec.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b':');
    out.push(b'0' + origin.priority.min(7));
    out.push(b':');
    if let Some(pid) = origin.pid {
        out.extend_from_slice(pid.to_string().as_bytes());
    }
    out.push(b':');
    let identifier = origin.identifier.unwrap_or_default();
    // Whitespace would end the field, a newline the record.
    out.extend(
        identifier[..identifier.len().min(MAX_IDENTIFIER)]
            .iter()
            .map(|b| if *b <= b' ' || *b == 0x7f { b'_' } else { *b }),
    );
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// The stream field: the stream, with a log socket's message's priority, pid and identifier.
type StreamField = (Stream, Option<u8>, Option<u32>, Option<String>);

fn decode_stream(field: &[u8]) -> Option<StreamField> {
    let mut parts = field.splitn(4, |b| *b == b':');
    let stream = Stream::parse(parts.next()?)?;
    let Some(priority) = parts.next() else {
        return Some((stream, None, None, None));
    };
    let priority = match priority {
        [digit @ b'0'..=b'7'] => digit - b'0',
        _ => return None,
    };
    let pid = match parts.next()? {
        b"" => None,
        pid => Some(std::str::from_utf8(pid).ok()?.parse().ok()?),
    };
    let identifier = Some(parts.next()?)
        .filter(|i| !i.is_empty())
        .map(|i| String::from_utf8_lossy(i).into_owned());
    Some((stream, Some(priority), pid, identifier))
}

/// Parses one on-disk line (without its trailing newline). `None` for a corrupt line.
pub fn decode(line: &[u8]) -> Option<LogRecord> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let usec = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let (stream, priority, pid, identifier) = decode_stream(parts.next()?)?;
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
        priority,
        pid,
        identifier,
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
                priority: None,
                pid: None,
                identifier: None,
            })
        );
    }

    #[test]
    fn a_log_socket_message_keeps_its_priority_pid_and_identifier() {
        let mut buf = Vec::new();
        let origin = Origin {
            priority: 3,
            pid: Some(42),
            identifier: Some(b"my daemon\n"),
        };
        encode_message(5, Stream::Syslog, &origin, b"it broke: badly", &mut buf);

        let record = decode(buf.strip_suffix(b"\n").unwrap()).unwrap();

        assert_eq!(record.stream, Stream::Syslog);
        assert_eq!(record.priority, Some(3));
        assert_eq!(record.pid, Some(42));
        assert_eq!(record.identifier.as_deref(), Some("my_daemon_"));
        assert_eq!(record.text, "it broke: badly");
    }

    #[test]
    fn a_message_without_pid_or_identifier_has_none() {
        let origin = Origin {
            priority: 6,
            pid: None,
            identifier: None,
        };
        let mut buf = Vec::new();
        encode_message(5, Stream::Journal, &origin, b"x", &mut buf);

        let record = decode(buf.strip_suffix(b"\n").unwrap()).unwrap();

        assert_eq!(
            (
                record.stream,
                record.priority,
                record.pid,
                record.identifier
            ),
            (Stream::Journal, Some(6), None, None)
        );
    }

    #[test]
    fn a_bad_priority_or_pid_is_a_corrupt_line() {
        assert_eq!(decode(b"1 syslog:8:: x"), None);
        assert_eq!(decode(b"1 syslog:3:x: x"), None);
        assert_eq!(decode(b"1 syslog:3 x"), None);
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
