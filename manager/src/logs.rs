//! Reading captured output back: the last N records, and following new ones.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_protocol::log_line;
use berth_protocol::manager::LogEntry;

/// Most bytes read from the end of a log for one `logs` call.
const MAX_TAIL_BYTES: u64 = 16 * 1024 * 1024;
/// How often `logs -f` looks for new output.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Longest silence on a `logs -f` stream: an empty batch is sent after it.
pub const FOLLOW_KEEPALIVE: Duration = Duration::from_secs(5);
/// Log bytes per streamed batch. zlink serializes a reply into a buffer that grows 256 bytes
/// per failed attempt, so a reply's cost is quadratic in its size: a 1 MiB reply costs seconds of
/// CPU, during which berthd serves nobody. Small batches keep every reply cheap. The read size
/// leaves room for one record of the longest line.
pub const BATCH_BYTES: u64 = 32 * 1024 + log_line::MAX_LINE as u64;
/// Largest single (non-`more`) `Logs` reply, in entry bytes; older entries are left out.
pub const REPLY_MAX_BYTES: usize = 64 * 1024;
/// What an entry adds to a reply besides its text: timestamp, stream, keys and quotes.
const ENTRY_OVERHEAD: usize = 48;

fn entry(line: &[u8]) -> Option<LogEntry> {
    let record = log_line::decode(line)?;
    Some(LogEntry {
        usec: i64::try_from(record.usec).unwrap_or(i64::MAX),
        stream: record.stream.as_str().to_string(),
        text: record.text,
    })
}

/// Parses the complete lines of `bytes`; returns the entries and how many bytes they used.
pub fn parse_complete(bytes: &[u8]) -> (Vec<LogEntry>, usize) {
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return (Vec::new(), 0);
    };
    let entries = bytes[..end]
        .split(|b| *b == b'\n')
        .filter_map(entry)
        .collect();
    (entries, end + 1)
}

/// The last `lines` entries (all when None) and the offset where following continues.
pub fn tail(path: &Path, lines: Option<usize>) -> std::io::Result<(Vec<LogEntry>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(MAX_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(len - start).read_to_end(&mut bytes)?;
    // When the read started mid-file, its first line may be partial.
    let skip = if start > 0 {
        bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |p| p + 1)
    } else {
        0
    };
    let (mut entries, used) = parse_complete(&bytes[skip..]);
    if let Some(n) = lines {
        let drop = entries.len().saturating_sub(n);
        entries.drain(..drop);
    }
    Ok((entries, start + (skip + used) as u64))
}

fn size_of(entry: &LogEntry) -> usize {
    entry.text.len() + ENTRY_OVERHEAD
}

/// Splits `entries` into batches of at most `max` bytes (one entry per batch at least).
pub fn batches(entries: Vec<LogEntry>, max: usize) -> Vec<Vec<LogEntry>> {
    let mut all = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for entry in entries {
        let add = size_of(&entry);
        if !current.is_empty() && size + add > max {
            all.push(std::mem::take(&mut current));
            size = 0;
        }
        size += add;
        current.push(entry);
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// The newest of `entries` that fit in `max` bytes, and whether older ones were left out.
pub fn newest_within(mut entries: Vec<LogEntry>, max: usize) -> (Vec<LogEntry>, bool) {
    let mut size = 0;
    let kept = entries
        .iter()
        .rev()
        .take_while(|e| {
            size += size_of(e);
            size <= max
        })
        .count();
    let dropped = entries.len() - kept;
    entries.drain(..dropped);
    (entries, dropped > 0)
}

/// New complete entries after `offset`, from at most [`BATCH_BYTES`] of the log; returns them
/// and the new offset.
pub fn read_from(path: &PathBuf, offset: u64) -> std::io::Result<(Vec<LogEntry>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len < offset {
        // Truncated or replaced: start over.
        return read_from(path, 0);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take((len - offset).min(BATCH_BYTES))
        .read_to_end(&mut bytes)?;
    let (entries, used) = parse_complete(&bytes);
    Ok((entries, offset + used as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_protocol::log_line::{Stream, encode};

    fn write_log(path: &Path, texts: &[&str]) {
        let mut bytes = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            encode(i as u64, Stream::Stdout, t.as_bytes(), &mut bytes);
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn tail_returns_the_last_n_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_log(&path, &["a", "b", "c"]);

        let (entries, _) = tail(&path, Some(2)).unwrap();

        assert_eq!(
            entries.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn partial_last_line_is_left_for_later() {
        let (entries, used) = parse_complete(b"1 stdout a\n2 stdout par");

        assert_eq!((entries.len(), used), (1, 11));
    }

    #[test]
    fn read_from_returns_only_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write_log(&path, &["a"]);
        let (_, offset) = tail(&path, None).unwrap();
        write_log(&path, &["a", "b"]);

        let (entries, _) = read_from(&path.to_path_buf(), offset).unwrap();

        assert_eq!(
            entries.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
    }

    fn entries(texts: &[&str]) -> Vec<LogEntry> {
        texts
            .iter()
            .map(|t| LogEntry {
                usec: 1,
                stream: "stdout".into(),
                text: (*t).into(),
            })
            .collect()
    }

    fn texts(batch: &[LogEntry]) -> Vec<&str> {
        batch.iter().map(|e| e.text.as_str()).collect()
    }

    #[test]
    fn batches_stay_within_their_size() {
        let ten = "x".repeat(10);
        let all = entries(&[&ten, &ten, &ten]);
        let two_fit = 2 * (10 + ENTRY_OVERHEAD);

        let split = batches(all, two_fit);

        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn an_entry_larger_than_a_batch_gets_a_batch_of_its_own() {
        let big = "y".repeat(1000);

        let split = batches(entries(&["a", &big, "b"]), 100);

        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
    }

    #[test]
    fn a_single_reply_keeps_the_newest_entries_that_fit() {
        let one = 1 + ENTRY_OVERHEAD;

        let (kept, truncated) = newest_within(entries(&["a", "b", "c"]), 2 * one);

        assert_eq!((texts(&kept), truncated), (vec!["b", "c"], true));
    }

    #[test]
    fn a_reply_that_fits_is_not_truncated() {
        let (kept, truncated) = newest_within(entries(&["a", "b"]), 1024);

        assert_eq!((texts(&kept), truncated), (vec!["a", "b"], false));
    }

    #[test]
    fn read_from_reads_one_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let line = "z".repeat(1000);
        let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), 100).collect();
        write_log(&path, &lines);

        let mut reads = Vec::new();
        let mut offset = 0;
        loop {
            let (batch, next) = read_from(&path.to_path_buf(), offset).unwrap();
            if batch.is_empty() {
                break;
            }
            reads.push(batch.len());
            offset = next;
        }

        assert!(reads.len() > 1, "one read took the whole log: {reads:?}");
        assert_eq!(reads.iter().sum::<usize>(), 100);
    }

    #[test]
    fn missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();

        assert!(tail(&dir.path().join("none"), None).unwrap().0.is_empty());
    }
}
