//! Forwarding each output line to the host's journal with journald's native protocol: one
//! datagram per line on `/run/systemd/journal/socket` (helper.toml `journal_socket`), with
//! MESSAGE=, PRIORITY= (6 for stdout, 3 for stderr, as journald's stdout streams default to),
//! SYSLOG_IDENTIFIER=, BERTH_UNIT=, UNIT= and PORTABLE=; a message the service sent to a log
//! socket goes with its own PRIORITY=, SYSLOG_IDENTIFIER= and SYSLOG_PID=. The socket is
//! connected before the
//! supervisor gives up root and written without ever waiting: a journal that does not keep up
//! loses lines (counted), never holds the loop.

use std::os::fd::OwnedFd;

use berth_protocol::log_line::{Origin, Stream};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

use crate::launch_spec::JournalTarget;

pub(super) struct Journal {
    socket: OwnedFd,
    /// SYSLOG_IDENTIFIER= of the output's lines.
    identifier: Vec<u8>,
    /// The fields every entry carries, encoded once.
    fixed: Vec<u8>,
    /// The datagram being built (kept to reuse its allocation).
    datagram: Vec<u8>,
    /// Lines the journal did not take (its socket's queue was full, or it went away).
    pub(super) dropped: u64,
}

impl Journal {
    /// Connects to the journal; `None` when there is none to connect to (no journald: the
    /// log file is all there is, as berthd.toml's `forward_to_journal = auto` means).
    pub(super) fn connect(target: &JournalTarget, unit: &str) -> Option<Journal> {
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .ok()?;
        let address = SocketAddrUnix::new(target.socket.as_path()).ok()?;
        rustix::net::connect(&socket, &address).ok()?;
        let mut fixed = Vec::new();
        field(&mut fixed, "BERTH_UNIT", unit.as_bytes());
        field(&mut fixed, "UNIT", unit.as_bytes());
        field(&mut fixed, "PORTABLE", target.fields.portable.as_bytes());
        Some(Journal {
            socket,
            identifier: target.fields.identifier.as_bytes().to_vec(),
            fixed,
            datagram: Vec::new(),
            dropped: 0,
        })
    }

    /// Sends one output line (without its newline) as an entry; never waits.
    pub(super) fn send(&mut self, stream: Stream, line: &[u8]) {
        let priority = match stream {
            Stream::Stderr => 3,
            _ => 6,
        };
        let origin = Origin {
            priority,
            pid: None,
            identifier: None,
        };
        self.send_message(&origin, line);
    }

    /// Sends one message (a line of output, or what the service sent a log socket) with the
    /// priority, pid and identifier it came with; never waits.
    pub(super) fn send_message(&mut self, origin: &Origin<'_>, message: &[u8]) {
        self.datagram.clear();
        let identifier = origin.identifier.unwrap_or(&self.identifier);
        field(&mut self.datagram, "SYSLOG_IDENTIFIER", identifier);
        self.datagram.extend_from_slice(&self.fixed);
        if let Some(pid) = origin.pid {
            field(&mut self.datagram, "SYSLOG_PID", pid.to_string().as_bytes());
        }
        field(
            &mut self.datagram,
            "PRIORITY",
            &[b'0' + origin.priority.min(7)],
        );
        field(&mut self.datagram, "MESSAGE", message);
        loop {
            match rustix::net::send(
                &self.socket,
                &self.datagram,
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(_) => return,
                Err(Errno::INTR) => {}
                Err(_) => {
                    self.dropped += 1;
                    return;
                }
            }
        }
    }
}

/// Appends `name=value` in the native protocol's binary-safe form (`NAME\n`, the value's
/// length as 64-bit little endian, the value, `\n`), which holds any byte.
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    use berth_protocol::helper::JournalFields;

    /// Parses a native-protocol datagram of binary-safe fields.
    fn fields(mut datagram: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(nl) = datagram.iter().position(|b| *b == b'\n') {
            let name = String::from_utf8(datagram[..nl].to_vec()).unwrap();
            let len = u64::from_le_bytes(datagram[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = datagram[nl + 9..nl + 9 + len].to_vec();
            assert_eq!(datagram[nl + 9 + len], b'\n');
            out.push((name, value));
            datagram = &datagram[nl + 10 + len..];
        }
        assert!(datagram.is_empty());
        out
    }

    #[test]
    fn a_line_becomes_one_datagram_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let target = JournalTarget {
            socket: path,
            fields: JournalFields {
                identifier: "hello".into(),
                portable: "hello_1.0".into(),
            },
        };
        let mut journal = Journal::connect(&target, "hello.service").unwrap();

        journal.send(Stream::Stderr, b"bad \x01 bytes\xff");

        let mut buf = vec![0u8; 4096];
        let n = receiver.recv(&mut buf).unwrap();
        let got = fields(&buf[..n]);
        let want: Vec<(String, Vec<u8>)> = [
            ("SYSLOG_IDENTIFIER", &b"hello"[..]),
            ("BERTH_UNIT", b"hello.service"),
            ("UNIT", b"hello.service"),
            ("PORTABLE", b"hello_1.0"),
            ("PRIORITY", b"3"),
            ("MESSAGE", b"bad \x01 bytes\xff"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_journal_that_does_not_read_loses_lines_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let _receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let target = JournalTarget {
            socket: path,
            fields: JournalFields {
                identifier: "x".into(),
                portable: "x".into(),
            },
        };
        let mut journal = Journal::connect(&target, "x.service").unwrap();

        for _ in 0..10_000 {
            journal.send(Stream::Stdout, &[b'y'; 1000]);
        }

        assert!(journal.dropped > 0);
    }

    #[test]
    fn no_journal_socket_means_no_forwarding() {
        let dir = tempfile::tempdir().unwrap();
        let target = JournalTarget {
            socket: dir.path().join("none"),
            fields: JournalFields {
                identifier: "x".into(),
                portable: "x".into(),
            },
        };

        assert!(Journal::connect(&target, "x.service").is_none());
    }
}
