//! The log sockets (`SandboxSpec.capture_log_sockets`): the supervisor's ends of `/dev/log`
//! (syslog(3)) and of the journal's native socket, which init binds in the sandbox
//! (`sandbox/log_sockets.rs`). Each message lands in the service's own log like a line of its
//! stdout, as stream `syslog` or `journal` (journald's `_TRANSPORT=`), with the priority, pid and
//! identifier it named, and goes to the host's journal with them when the output does.
//!
//! Everything in a datagram is hostile input; parsing is bounded by the datagram, which is at
//! most [`MAX_DATAGRAM`] bytes (a longer syslog message is kept cut, a longer journal entry
//! refused):
//! - syslog: `<PRI>` (else priority 6, as journald takes it), then RFC 5424
//!   (`1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) or RFC 3164's optional `Mmm dd hh:mm:ss `
//!   and `TAG[PID]: `; the rest is the message.
//! - journal: `NAME=value\n` fields and the binary-safe `NAME\n<le64 size><value>\n`; MESSAGE=,
//!   PRIORITY=, SYSLOG_IDENTIFIER= and SYSLOG_PID= are kept, other fields ignored; an empty line
//!   separates entries. A malformed datagram is refused whole; an entry passed as a descriptor
//!   (a memfd, for entries too large for a datagram) is refused and the descriptor closed.
//!
//! Refusals are noted in the log at most once a second with a count (as notify's are). At
//! most [`DATAGRAMS_PER_TURN`] are read per socket and loop turn (the kernel's queue holds the
//! rest, and blocks the senders), and at most [`RATE_BURST`] messages per [`RATE_INTERVAL`]
//! are kept, as journald's RateLimitBurst=/RateLimitIntervalSec= defaults do: a note says when
//! the limit starts dropping and how many it dropped, and the dropped ones count in the
//! snapshots' `log_dropped`.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use berth_protocol::log_line::{self, MAX_IDENTIFIER, Origin, Stream};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::event_loop::Supervisor;
use super::notify::{self, RefusalNotes};
use crate::sandbox::log_sockets::{self, LogSocketFds};
use crate::sandbox::{Failure, sys};

/// Longest datagram read whole.
pub(super) const MAX_DATAGRAM: usize = 64 * 1024;
/// Datagrams read per socket and loop turn.
pub(super) const DATAGRAMS_PER_TURN: usize = 64;
/// Messages kept per [`RATE_INTERVAL`]; the rest are dropped (and counted).
pub(super) const RATE_BURST: u64 = 10_000;
pub(super) const RATE_INTERVAL: Duration = Duration::from_secs(30);
/// journald's priority of a message that names none: LOG_INFO.
const DEFAULT_PRIORITY: u8 = 6;

/// Which socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Syslog,
    Journal,
}

impl Kind {
    fn stream(self) -> Stream {
        match self {
            Kind::Syslog => Stream::Syslog,
            Kind::Journal => Stream::Journal,
        }
    }
}

/// One message, borrowing the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message<'a> {
    pub(super) priority: u8,
    pub(super) pid: Option<u32>,
    pub(super) identifier: Option<&'a [u8]>,
    pub(super) text: &'a [u8],
}

/// Why a journal datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum JournalError {
    #[error("a field does not end in a newline")]
    Unterminated,
    #[error("a binary field's size is missing or larger than the datagram")]
    BadSize,
    #[error("it holds no MESSAGE=")]
    NoMessage,
}

/// Parses one syslog datagram; anything is a message (the worst case is no priority, pid or
/// identifier, and the whole datagram as text).
pub(super) fn parse_syslog(datagram: &[u8]) -> Message<'_> {
    let datagram = trim_end(datagram);
    let (priority, rest) = match syslog_priority(datagram) {
        Some((priority, rest)) => (priority, rest),
        None => (DEFAULT_PRIORITY, datagram),
    };
    if let Some(message) = rest.strip_prefix(b"1 ").and_then(|r| rfc5424(priority, r)) {
        return message;
    }
    let rest = skip_rfc3164_timestamp(rest);
    let (identifier, pid, text) = match syslog_tag(rest) {
        Some((identifier, pid, text)) => (Some(identifier), pid, text),
        None => (None, None, rest),
    };
    Message {
        priority,
        pid,
        identifier,
        text,
    }
}

/// Trailing newlines and NULs (some libcs send them) are not part of the message.
fn trim_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\0'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `<PRI>`: 1 to 3 digits, at most 191 (facility 23, severity 7); the severity and the rest.
fn syslog_priority(datagram: &[u8]) -> Option<(u8, &[u8])> {
    let rest = datagram.strip_prefix(b"<")?;
    let end = rest.iter().take(4).position(|b| *b == b'>')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u16 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    if value > 191 {
        return None;
    }
    Some(((value & 7) as u8, &rest[end + 1..]))
}

/// `Mmm dd hh:mm:ss ` (RFC 3164, as glibc's syslog(3) writes it) is skipped when there.
fn skip_rfc3164_timestamp(rest: &[u8]) -> &[u8] {
    let Some(stamp) = rest.get(..16) else {
        return rest;
    };
    let digit = |i: usize| stamp[i].is_ascii_digit();
    let shaped = stamp[..3].iter().all(u8::is_ascii_alphabetic)
        && stamp[3] == b' '
        && (stamp[4] == b' ' || digit(4))
        && digit(5)
        && stamp[6] == b' '
        && digit(7)
        && digit(8)
        && stamp[9] == b':'
        && digit(10)
        && digit(11)
        && stamp[12] == b':'
        && digit(13)
        && digit(14)
        && stamp[15] == b' ';
    if shaped { &rest[16..] } else { rest }
}

/// `TAG[PID]: ` or `TAG: `: the tag, the pid if it is a number, and the text after it. `None`
/// when the message does not start with one (no colon after a word of at most
/// [`MAX_IDENTIFIER`] bytes).
fn syslog_tag(rest: &[u8]) -> Option<(&[u8], Option<u32>, &[u8])> {
    let end = rest
        .iter()
        .take(MAX_IDENTIFIER + 1)
        .position(|b| matches!(b, b'[' | b':' | b' ' | b'\t'))?;
    if end == 0 {
        return None;
    }
    let tag = &rest[..end];
    let (pid, after) = match rest[end] {
        b'[' => {
            let inside = &rest[end + 1..];
            let close = inside.iter().take(21).position(|b| *b == b']')?;
            let pid = std::str::from_utf8(&inside[..close])
                .ok()
                .and_then(|p| p.parse().ok());
            (pid, &inside[close + 1..])
        }
        _ => (None, &rest[end..]),
    };
    let text = after.strip_prefix(b":")?;
    Some((tag, pid, text.strip_prefix(b" ").unwrap_or(text)))
}

/// RFC 5424 after its version: `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`, `-` for
/// a field it leaves out. `None` when the header is not complete.
fn rfc5424(priority: u8, rest: &[u8]) -> Option<Message<'_>> {
    let mut fields = rest.splitn(6, |b| *b == b' ');
    let (_time, _host) = (fields.next()?, fields.next()?);
    let app = fields.next()?;
    let procid = fields.next()?;
    let _msgid = fields.next()?;
    let rest = fields.next()?;
    let text = skip_structured_data(rest)?;
    let text = text.strip_prefix(b" ").unwrap_or(text);
    // A UTF-8 message may start with a byte order mark.
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let present = |f: &'_ [u8]| f != b"-" && !f.is_empty();
    Some(Message {
        priority,
        pid: std::str::from_utf8(procid)
            .ok()
            .and_then(|p| p.parse().ok()),
        identifier: Some(app).filter(|a| present(a) && a.len() <= MAX_IDENTIFIER),
        text,
    })
}

/// Skips `-` or `[...]` elements (quoted values may hold `\]`, `\"`); what follows them.
fn skip_structured_data(rest: &[u8]) -> Option<&[u8]> {
    if let Some(after) = rest.strip_prefix(b"-") {
        return Some(after);
    }
    let mut i = 0;
    while rest.get(i) == Some(&b'[') {
        let (mut quoted, mut escaped) = (false, false);
        i += 1;
        loop {
            let b = *rest.get(i)?;
            i += 1;
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
        }
    }
    (i > 0).then(|| &rest[i..])
}

/// Parses one journal datagram into its entries (an empty line ends one). Entries without a
/// MESSAGE= are left out; a datagram with none is refused.
pub(super) fn parse_journal(datagram: &[u8]) -> Result<Vec<Message<'_>>, JournalError> {
    let mut entries = Vec::new();
    let mut entry = Entry::default();
    let mut rest = datagram;
    while !rest.is_empty() {
        let nl = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(JournalError::Unterminated)?;
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.is_empty() {
            entries.extend(std::mem::take(&mut entry).message());
            continue;
        }
        let (name, value) = match line.iter().position(|b| *b == b'=') {
            Some(eq) => (&line[..eq], &line[eq + 1..]),
            None => {
                let size = rest.get(..8).ok_or(JournalError::BadSize)?;
                let size = u64::from_le_bytes(size.try_into().map_err(|_| JournalError::BadSize)?);
                let after = &rest[8..];
                let size = usize::try_from(size)
                    .ok()
                    .filter(|s| *s < after.len())
                    .ok_or(JournalError::BadSize)?;
                if after[size] != b'\n' {
                    return Err(JournalError::Unterminated);
                }
                rest = &after[size + 1..];
                (line, &after[..size])
            }
        };
        entry.field(name, value);
    }
    entries.extend(entry.message());
    if entries.is_empty() {
        return Err(JournalError::NoMessage);
    }
    Ok(entries)
}

/// The fields of one journal entry berth keeps (the first of each).
#[derive(Default)]
struct Entry<'a> {
    message: Option<&'a [u8]>,
    priority: Option<u8>,
    identifier: Option<&'a [u8]>,
    pid: Option<u32>,
}

impl<'a> Entry<'a> {
    fn field(&mut self, name: &[u8], value: &'a [u8]) {
        match name {
            b"MESSAGE" => {
                self.message.get_or_insert(value);
            }
            b"PRIORITY" => {
                if let [digit @ b'0'..=b'7'] = value {
                    self.priority.get_or_insert(digit - b'0');
                }
            }
            b"SYSLOG_IDENTIFIER" if !value.is_empty() => {
                self.identifier.get_or_insert(value);
            }
            b"SYSLOG_PID" => {
                if let Some(pid) = std::str::from_utf8(value).ok().and_then(|p| p.parse().ok()) {
                    self.pid.get_or_insert(pid);
                }
            }
            // Other fields (CODE_FILE=, ...) are not kept, nor trusted ones (`_PID=`): journald
            // itself ignores those from a client.
            _ => {}
        }
    }

    fn message(self) -> Option<Message<'a>> {
        Some(Message {
            priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
            pid: self.pid,
            identifier: self.identifier,
            text: trim_end(self.message?),
        })
    }
}

/// Appends the records of `message` to `out`: one per line, lines longer than
/// [`log_line::MAX_LINE`] split.
pub(super) fn encode(stream: Stream, message: &Message<'_>, usec: u64, out: &mut Vec<u8>) {
    let origin = origin(message);
    for line in message.text.split(|b| *b == b'\n') {
        if line.is_empty() {
            log_line::encode_message(usec, stream, &origin, line, out);
        }
        for piece in line.chunks(log_line::MAX_LINE) {
            log_line::encode_message(usec, stream, &origin, piece, out);
        }
    }
}

fn origin<'a>(message: &Message<'a>) -> Origin<'a> {
    Origin {
        priority: message.priority,
        pid: message.pid,
        identifier: message.identifier,
    }
}

/// journald's rate limit: [`RATE_BURST`] messages per [`RATE_INTERVAL`].
#[derive(Debug)]
struct RateLimit {
    window: Instant,
    kept: u64,
    dropped: u64,
}

/// What the limit says of one more message.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Keep,
    /// Keep it; a window that dropped this many is over.
    KeepAfterDropping(u64),
    /// Drop it; the first dropped of its window.
    DropFirst,
    Drop,
}

impl RateLimit {
    fn new(now: Instant) -> Self {
        RateLimit {
            window: now,
            kept: 0,
            dropped: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        if now.duration_since(self.window) >= RATE_INTERVAL {
            self.window = now;
            self.kept = 1;
            return match std::mem::take(&mut self.dropped) {
                0 => Admit::Keep,
                n => Admit::KeepAfterDropping(n),
            };
        }
        if self.kept < RATE_BURST {
            self.kept += 1;
            return Admit::Keep;
        }
        self.dropped += 1;
        if self.dropped == 1 {
            Admit::DropFirst
        } else {
            Admit::Drop
        }
    }
}

/// The supervisor's ends of the log sockets and their bookkeeping.
pub(super) struct LogSockets {
    syslog: Option<OwnedFd>,
    journal: Option<OwnedFd>,
    /// The receive buffer, allocated on first use (its pages are touched only by large
    /// datagrams).
    buffer: Vec<u8>,
    rate: RateLimit,
    refusals: RefusalNotes,
}

/// Makes the two sockets: the supervisor's, and the copies init binds in the sandbox.
pub(super) fn create() -> Result<(LogSockets, LogSocketFds), Failure> {
    let socket = |what: &str| {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| Failure::setup(format!("create the {what} log socket"), e))?;
        let copy = fd
            .try_clone()
            .map_err(|e| Failure::setup(format!("duplicate the {what} log socket"), e))?;
        Ok::<_, Failure>((fd, copy))
    };
    let (syslog, syslog_copy) = socket("syslog")?;
    let (journal, journal_copy) = socket("journal")?;
    Ok((
        LogSockets {
            syslog: Some(syslog),
            journal: Some(journal),
            buffer: Vec::new(),
            rate: RateLimit::new(Instant::now()),
            refusals: RefusalNotes::default(),
        },
        LogSocketFds {
            syslog: syslog_copy,
            journal: journal_copy,
        },
    ))
}

impl LogSockets {
    pub(super) fn fd(&self, kind: Kind) -> Option<&OwnedFd> {
        match kind {
            Kind::Syslog => self.syslog.as_ref(),
            Kind::Journal => self.journal.as_ref(),
        }
    }

    fn close(&mut self, kind: Kind) {
        match kind {
            Kind::Syslog => self.syslog = None,
            Kind::Journal => self.journal = None,
        }
    }

    /// Closes the sockets init could not bind in the sandbox; their paths.
    fn close_unbound(&mut self) -> Vec<&'static str> {
        let mut unbound = Vec::new();
        for (kind, path) in [
            (Kind::Syslog, log_sockets::SYSLOG_SOCKET),
            (Kind::Journal, log_sockets::JOURNAL_SOCKET),
        ] {
            if self.fd(kind).is_some_and(|fd| !is_bound(fd)) {
                self.close(kind);
                unbound.push(path);
            }
        }
        unbound
    }
}

/// Whether the socket has a path (init bound it; an unbound one has none).
fn is_bound(fd: &OwnedFd) -> bool {
    rustix::net::getsockname(fd)
        .ok()
        .and_then(|address| SocketAddrUnix::try_from(address).ok())
        .is_some_and(|address| address.path().is_some_and(|p| !p.is_empty()))
}

impl Supervisor {
    /// Tells in the log which log sockets init could not bind (the unit made its `/run`
    /// unusable, e.g. `InaccessiblePaths=/run`): the service runs without them.
    pub(super) fn check_log_sockets(&mut self) {
        let Some(sockets) = &mut self.log_sockets else {
            return;
        };
        let unbound = sockets.close_unbound();
        if !unbound.is_empty() {
            self.note(&format!(
                "could not make {} in the sandbox: what the service logs there is lost",
                unbound.join(" and ")
            ));
        }
    }

    /// Reads what the service sent to one log socket (at most [`DATAGRAMS_PER_TURN`]) into its
    /// log.
    pub(super) fn receive_log(&mut self, kind: Kind) {
        let Some(sockets) = &mut self.log_sockets else {
            return;
        };
        let mut buffer = std::mem::take(&mut sockets.buffer);
        if buffer.len() != MAX_DATAGRAM {
            buffer = vec![0u8; MAX_DATAGRAM];
        }
        let mut records = Vec::new();
        let mut rate_dropped = 0;
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(fd) = self.log_sockets.as_ref().and_then(|s| s.fd(kind)) else {
                break;
            };
            let datagram = match notify::receive(fd, &mut buffer) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                // Nothing else is possible on a healthy datagram socket; stop listening
                // rather than spin on it.
                Err(e) => {
                    self.note(&format!("stopped reading the {kind:?} log socket: {e}"));
                    if let Some(sockets) = &mut self.log_sockets {
                        sockets.close(kind);
                    }
                    break;
                }
            };
            let bytes = &buffer[..datagram.len];
            let usec = sys::realtime_usec();
            let messages = match (kind, datagram.descriptors, datagram.truncated) {
                (_, 1.., _) => Err("an entry passed as a descriptor (memfd) is not taken".into()),
                (Kind::Journal, _, true) => {
                    Err(format!("a journal entry longer than {MAX_DATAGRAM} bytes"))
                }
                (Kind::Journal, _, false) => {
                    parse_journal(bytes).map_err(|e| format!("a malformed journal entry ({e})"))
                }
                (Kind::Syslog, _, _) => Ok(vec![parse_syslog(bytes)]),
            };
            let messages = match messages {
                Ok(messages) => messages,
                Err(why) => {
                    self.refuse_log_message(&why);
                    continue;
                }
            };
            for message in messages {
                if self.admit_log_message(&mut rate_dropped) {
                    encode(kind.stream(), &message, usec, &mut records);
                    if let Some(journal) = &mut self.journal {
                        journal.send_message(&origin(&message), message.text);
                    }
                }
            }
        }
        if let Some(sockets) = &mut self.log_sockets {
            sockets.buffer = buffer;
        }
        if rate_dropped > 0 {
            self.log.count_dropped(rate_dropped);
        }
        let dropped = !records.is_empty() && self.write_log(&records);
        if dropped || rate_dropped > 0 {
            self.log_drops_changed(false);
        }
    }

    /// Whether the rate limit keeps one more message; notes where it starts and stops
    /// dropping, and counts what it drops into `dropped`.
    fn admit_log_message(&mut self, dropped: &mut u64) -> bool {
        let Some(sockets) = &mut self.log_sockets else {
            return false;
        };
        match sockets.rate.admit(Instant::now()) {
            Admit::Keep => true,
            Admit::KeepAfterDropping(n) => {
                self.note(&format!(
                    "dropped {n} messages of the log sockets: more than {RATE_BURST} in {} s",
                    RATE_INTERVAL.as_secs()
                ));
                true
            }
            Admit::DropFirst => {
                *dropped += 1;
                self.note(&format!(
                    "more than {RATE_BURST} messages in {} s on the log sockets: dropping \
                     the others until {} s have passed",
                    RATE_INTERVAL.as_secs(),
                    RATE_INTERVAL.as_secs()
                ));
                false
            }
            Admit::Drop => {
                *dropped += 1;
                false
            }
        }
    }

    /// Notes a refused datagram in the service's log (see [`RefusalNotes`]).
    fn refuse_log_message(&mut self, what: &str) {
        let Some(sockets) = &mut self.log_sockets else {
            return;
        };
        if let Some(text) = sockets.refusals.note(what) {
            self.note(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(
        priority: u8,
        identifier: Option<&'a [u8]>,
        pid: Option<u32>,
        text: &'a [u8],
    ) -> Message<'a> {
        Message {
            priority,
            pid,
            identifier,
            text,
        }
    }

    #[test]
    fn glibcs_syslog_line_gives_priority_tag_pid_and_text() {
        let got = parse_syslog(b"<11>Dec  1 17:03:22 food[42]: it broke: badly\n");

        assert_eq!(got, message(3, Some(b"food"), Some(42), b"it broke: badly"));
    }

    #[test]
    fn a_line_without_timestamp_or_pid_still_has_its_tag() {
        assert_eq!(
            parse_syslog(b"<14>food: hi"),
            message(6, Some(b"food"), None, b"hi")
        );
    }

    #[test]
    fn a_line_without_priority_or_tag_is_all_text_at_info() {
        assert_eq!(
            parse_syslog(b"just words here"),
            message(6, None, None, b"just words here")
        );
        assert_eq!(
            parse_syslog(b"<999> oops"),
            message(6, None, None, b"<999> oops")
        );
    }

    #[test]
    fn rfc5424_gives_app_name_procid_and_message_after_structured_data() {
        let got = parse_syslog(
            b"<165>1 2026-12-01T17:00:00Z host app 77 ID47 [ex@1 a=\"x\\]y\"][b@2] \xef\xbb\xbfhello",
        );

        assert_eq!(got, message(5, Some(b"app"), Some(77), b"hello"));
    }

    #[test]
    fn rfc5424_without_structured_data_or_app() {
        let got = parse_syslog(b"<13>1 - - - - - - hi there");

        assert_eq!(got, message(5, None, None, b"hi there"));
    }

    #[test]
    fn hostile_syslog_input_is_text_not_a_crash() {
        for input in [
            &b""[..],
            b"<",
            b"<1",
            b"<12>",
            b"<12>1 ",
            b"<12>1 a b c d e [unterminated",
            b"tag[123",
            b"tag[99999999999999999999]: x",
            b"\xff\xfe:",
        ] {
            let got = parse_syslog(input);
            assert!(got.priority <= 7);
        }
    }

    #[test]
    fn a_journal_datagram_of_plain_fields() {
        let got = parse_journal(
            b"CODE_FILE=a.c\nMESSAGE=hello\nPRIORITY=2\nSYSLOG_IDENTIFIER=food\nSYSLOG_PID=9\n",
        );

        assert_eq!(got, Ok(vec![message(2, Some(b"food"), Some(9), b"hello")]));
    }

    #[test]
    fn a_binary_safe_field_holds_newlines() {
        let mut datagram = b"MESSAGE\n".to_vec();
        datagram.extend_from_slice(&5u64.to_le_bytes());
        datagram.extend_from_slice(b"a\nb\x00c\n");
        datagram.extend_from_slice(b"PRIORITY=4\n");

        let got = parse_journal(&datagram);

        assert_eq!(got, Ok(vec![message(4, None, None, b"a\nb\x00c")]));
    }

    #[test]
    fn malformed_journal_datagrams_are_refused() {
        let mut oversized = b"MESSAGE\n".to_vec();
        oversized.extend_from_slice(&u64::MAX.to_le_bytes());
        oversized.extend_from_slice(b"x\n");
        let mut unterminated = b"MESSAGE\n".to_vec();
        unterminated.extend_from_slice(&1u64.to_le_bytes());
        unterminated.extend_from_slice(b"xy");

        assert_eq!(parse_journal(&oversized), Err(JournalError::BadSize));
        assert_eq!(parse_journal(b"MESSAGE\n\x01"), Err(JournalError::BadSize));
        assert_eq!(
            parse_journal(&unterminated),
            Err(JournalError::Unterminated)
        );
        assert_eq!(
            parse_journal(b"MESSAGE=no newline"),
            Err(JournalError::Unterminated)
        );
        assert_eq!(parse_journal(b"PRIORITY=3\n"), Err(JournalError::NoMessage));
    }

    #[test]
    fn an_empty_line_separates_entries_and_bad_values_are_ignored() {
        let got = parse_journal(b"MESSAGE=a\nPRIORITY=9\n\nMESSAGE=b\nSYSLOG_PID=x\n");

        assert_eq!(
            got,
            Ok(vec![
                message(6, None, None, b"a"),
                message(6, None, None, b"b")
            ])
        );
    }

    #[test]
    fn a_multi_line_message_is_one_record_per_line() {
        let mut out = Vec::new();

        encode(
            Stream::Journal,
            &message(3, Some(b"x"), None, b"one\ntwo"),
            7,
            &mut out,
        );

        let records: Vec<_> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| log_line::decode(l).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].text, "two");
        assert_eq!(records[1].priority, Some(3));
        assert_eq!(records[1].stream, Stream::Journal);
    }

    #[test]
    fn the_rate_limit_keeps_a_burst_per_interval_and_tells_the_count_after() {
        let start = Instant::now();
        let mut rate = RateLimit::new(start);

        let kept = (0..RATE_BURST)
            .filter(|_| rate.admit(start) == Admit::Keep)
            .count() as u64;
        let first = rate.admit(start);
        let second = rate.admit(start);
        let later = rate.admit(start + RATE_INTERVAL);

        assert_eq!(kept, RATE_BURST);
        assert_eq!(first, Admit::DropFirst);
        assert_eq!(second, Admit::Drop);
        assert_eq!(later, Admit::KeepAfterDropping(2));
    }
}
