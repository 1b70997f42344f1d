//! Log capture: the service's stdout and stderr, split into lines, written to the log file
//! as `log_line` records.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use berth_protocol::log_line::{self, Stream};
use berth_protocol::supervisor::SupervisorStatus;
use rustix::io::Errno;

use super::event_loop::Supervisor;
use super::journal::Journal;
use crate::sandbox::sys;

pub(super) struct LineBuffer {
    stream: Stream,
    partial: Vec<u8>,
}

impl LineBuffer {
    pub(super) fn new(stream: Stream) -> Self {
        LineBuffer {
            stream,
            partial: Vec::new(),
        }
    }

    /// Appends the records for every line completed by `data` to `out`, and sends each line to
    /// `journal` when there is one.
    fn push(&mut self, data: &[u8], usec: u64, out: &mut Vec<u8>, journal: &mut Option<Journal>) {
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.emit(&rest[..pos], usec, out, journal);
            } else {
                self.partial.extend_from_slice(&rest[..pos]);
                let line = std::mem::take(&mut self.partial);
                self.emit(&line, usec, out, journal);
            }
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        // A line still growing past MAX_LINE is cut now; exactly MAX_LINE waits, since a
        // newline may follow.
        if self.partial.len() > log_line::MAX_LINE {
            let keep = self.partial.len() % log_line::MAX_LINE;
            let keep = if keep == 0 { log_line::MAX_LINE } else { keep };
            let full: Vec<u8> = self.partial.drain(..self.partial.len() - keep).collect();
            self.emit(&full, usec, out, journal);
        }
    }

    /// Flushes an unterminated last line (at EOF).
    fn finish(&mut self, usec: u64, out: &mut Vec<u8>, journal: &mut Option<Journal>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, usec, out, journal);
        }
    }

    fn emit(&self, line: &[u8], usec: u64, out: &mut Vec<u8>, journal: &mut Option<Journal>) {
        if line.is_empty() {
            log_line::encode(usec, self.stream, line, out);
        }
        for piece in line.chunks(log_line::MAX_LINE) {
            log_line::encode(usec, self.stream, piece, out);
        }
        if let Some(journal) = journal {
            // The journal takes long lines whole (journald splits at its own LineMax=).
            journal.send(self.stream, line);
        }
    }
}

pub(super) struct Output {
    pub(super) fd: Option<OwnedFd>,
    pub(super) lines: LineBuffer,
}

/// Shortest time between two unasked snapshots telling a growing drop count.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl Supervisor {
    pub(super) fn read_output(&mut self, i: usize, chunk: &mut [u8], max_chunks: usize) {
        let mut records = Vec::new();
        for _ in 0..max_chunks {
            let out = &mut self.outputs[i];
            let Some(fd) = &out.fd else { break };
            match rustix::io::read(fd, &mut *chunk) {
                Ok(0) | Err(Errno::BADF | Errno::IO) => {
                    let usec = sys::realtime_usec();
                    out.lines.finish(usec, &mut records, &mut self.journal);
                    out.fd = None;
                }
                Ok(n) => {
                    let usec = sys::realtime_usec();
                    out.lines
                        .push(&chunk[..n], usec, &mut records, &mut self.journal)
                }
                Err(Errno::INTR) => continue,
                Err(_) => break,
            }
            // One write per batch of whole records.
            if !records.is_empty() {
                if self.write_log(&records) {
                    self.log_drops_changed(false);
                }
                records.clear();
            }
        }
        if self.outputs.iter().all(|o| o.fd.is_none()) {
            // The output ended: the note about the last drops, then everything written out,
            // so the log is complete when the exit is told.
            self.log.flush_note();
            self.log.drain();
            self.log_drops_changed(true);
        }
    }

    /// Queues whole records for the log (the service's output, or the supervisor's own notes);
    /// true when they were dropped.
    pub(super) fn write_log(&self, records: &[u8]) -> bool {
        self.log.push(records)
    }

    /// Tells the clients the drop count (a snapshot) when it changed: at most once per
    /// [`DROP_REPORT_INTERVAL`] while lines keep being dropped, and at the end of the output
    /// (`now`). Any request's reply carries the count too.
    pub(super) fn log_drops_changed(&mut self, now: bool) {
        let dropped = self.log.dropped();
        if dropped == self.drops_reported.0 {
            return;
        }
        let at = Instant::now();
        if !now && at.duration_since(self.drops_reported.1) < DROP_REPORT_INTERVAL {
            return;
        }
        self.drops_reported = (dropped, at);
        let status = self.status(None);
        for client in &mut self.clients {
            client.queue(&status);
        }
    }

    /// Switches the output to the log that came with a `ReplaceLog` request.
    pub(super) fn replace_log(&mut self, fds: &mut VecDeque<OwnedFd>) -> SupervisorStatus {
        let Some(log) = fds.pop_front() else {
            return self.status(Some("no log descriptor came with the request".into()));
        };
        match crate::floor::check_log_fd(&log, self.control.owner) {
            Ok(()) => {
                self.log.replace(log);
                self.status(None)
            }
            Err(refusal) => self.status(Some(format!("log refused: {refusal}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&[u8]], finish: bool) -> Vec<(String, String)> {
        let mut lines = LineBuffer::new(Stream::Stdout);
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, 7, &mut out, &mut None);
        }
        if finish {
            lines.finish(7, &mut out, &mut None);
        }
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let r = log_line::decode(l).unwrap();
                (r.stream.as_str().to_string(), r.text)
            })
            .collect()
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let got = records(&[b"hel", b"lo\nwor", b"ld\n"], false);

        assert_eq!(
            got,
            vec![
                ("stdout".into(), "hello".into()),
                ("stdout".into(), "world".into())
            ]
        );
    }

    #[test]
    fn unterminated_last_line_is_flushed_at_eof() {
        assert!(records(&[b"tail"], false).is_empty());

        let got = records(&[b"tail"], true);

        assert_eq!(got, vec![("stdout".into(), "tail".into())]);
    }

    #[test]
    fn long_lines_are_split_at_max_line() {
        let long = vec![b'x'; log_line::MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');

        let got = records(&[&input[..100], &input[100..]], false);

        let lens: Vec<usize> = got.iter().map(|(_, t)| t.len()).collect();
        assert_eq!(lens, vec![log_line::MAX_LINE, log_line::MAX_LINE, 10]);
    }

    #[test]
    fn a_line_of_exactly_max_line_is_one_record() {
        let mut input = vec![b'y'; log_line::MAX_LINE];
        input.push(b'\n');

        let got = records(&[&input], false);

        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), log_line::MAX_LINE);
    }

    #[test]
    fn empty_lines_are_kept() {
        let mut lines = LineBuffer::new(Stream::Stderr);
        let mut out = Vec::new();

        lines.push(b"\n", 1, &mut out, &mut None);

        assert_eq!(out, b"1 stderr \n");
    }
}
