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

/// New complete entries after `offset`; returns them and the new offset.
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
    file.take((len - offset).min(MAX_TAIL_BYTES))
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

    #[test]
    fn missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();

        assert!(tail(&dir.path().join("none"), None).unwrap().0.is_empty());
    }
}
