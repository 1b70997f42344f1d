//! Reading records back: the range of the last N, and batches after a cursor (following).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use berth_protocol::log_line;
use berth_protocol::manager::LogEntry;

use super::reply_size::size_of;
use super::{BATCH_BYTES, LogFiles};

/// Most reply bytes (by [`size_of`]) in one streamed batch: log text full of control characters
/// takes up to six times its size as JSON.
const BATCH_REPLY_BYTES: usize = 64 * 1024;

fn entry(line: &[u8]) -> Option<LogEntry> {
    let record = log_line::decode(line)?;
    Some(LogEntry {
        usec: i64::try_from(record.usec).unwrap_or(i64::MAX),
        stream: record.stream.as_str().to_string(),
        text: record.text,
        bytes: record.bytes,
        priority: record.priority.map(i64::from),
        pid: record.pid.map(i64::from),
        identifier: record.identifier,
    })
}

/// Parses the complete lines of `bytes`; returns the entries and how many bytes they used.
#[cfg(test)]
pub fn parse_complete(bytes: &[u8]) -> (Vec<LogEntry>, usize) {
    parse_batch(bytes, usize::MAX)
}

/// Like [`parse_complete`], but stops once the entries would pass `budget` bytes of reply
/// (by [`size_of`]); one entry is always taken.
fn parse_batch(bytes: &[u8], budget: usize) -> (Vec<LogEntry>, usize) {
    let mut entries = Vec::new();
    let mut used = 0;
    let mut size = 0;
    while let Some(len) = bytes[used..].iter().position(|b| *b == b'\n') {
        let line = &bytes[used..used + len];
        if let Some(e) = entry(line) {
            let add = size_of(&e);
            if !entries.is_empty() && size + add > budget {
                break;
            }
            size += add;
            entries.push(e);
        }
        used += len + 1;
    }
    (entries, used)
}

/// Which file a reader is in, whatever its name now (rotation renames files): its inode and
/// its birth time, since a freed inode number is soon given to a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileId {
    ino: u64,
    born: Option<std::time::SystemTime>,
}

/// How far a reader got: the file and the offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub file: FileId,
    pub offset: u64,
}

/// The open file at `path`, its identity and length; None when it does not exist.
fn open_log(path: &Path) -> std::io::Result<Option<(std::fs::File, FileId, u64)>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::File::open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            let id = FileId {
                ino: meta.ino(),
                born: meta.created().ok(),
            };
            Ok(Some((file, id, meta.len())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bytes read per step when scanning a log backwards.
const SCAN_CHUNK: usize = 64 * 1024;

/// The offset just after the last newline of `file` (of length `len`): where its complete
/// records end.
fn complete_end(file: &mut std::fs::File, len: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; SCAN_CHUNK];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(SCAN_CHUNK as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Scanning back from `end` (just after a newline) over at most `budget` bytes: where the last
/// `lines` records of `file` start (as far back as the budget goes when None or when there are
/// fewer), how many records that is, and whether the scan reached the start of the file.
fn records_start(
    file: &mut std::fs::File,
    end: u64,
    lines: Option<usize>,
    budget: u64,
) -> std::io::Result<(u64, usize, bool)> {
    if end == 0 || lines == Some(0) {
        return Ok((end, 0, end == 0));
    }
    let floor = end.saturating_sub(budget);
    let mut buf = vec![0u8; SCAN_CHUNK];
    // The newline at end - 1 ends the last record; each newline before it ends one more, and
    // the record after it starts right there.
    let mut scan_end = end - 1;
    let mut found = 0;
    let mut earliest = end;
    while scan_end > floor {
        let start = scan_end.saturating_sub(SCAN_CHUNK as u64).max(floor);
        let chunk = &mut buf[..(scan_end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            if *byte == b'\n' {
                found += 1;
                earliest = start + i as u64 + 1;
                if lines == Some(found) {
                    return Ok((earliest, found, false));
                }
            }
        }
        scan_end = start;
    }
    if floor == 0 {
        // The first record of the file, from offset 0, is complete too.
        return Ok((0, found + 1, true));
    }
    Ok((earliest, found, false))
}

/// Which records a `Logs` call returns: from `start` up to `end` (where `current.log`'s
/// complete records end now). `complete` is false when older records were left out because
/// they lie beyond the byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailRange {
    pub start: Cursor,
    pub end: Cursor,
    pub complete: bool,
}

/// The range of the last `lines` records (all when None), within `budget` bytes, reaching into
/// `previous.log` when `current.log` has fewer. Only positions are computed: the records are
/// read batch by batch later, so no call holds a whole log in memory.
pub fn tail_range(
    files: &LogFiles,
    lines: Option<usize>,
    budget: u64,
) -> std::io::Result<TailRange> {
    let Some((mut file, id, len)) = open_log(&files.current)? else {
        let none = Cursor {
            file: FileId::default(),
            offset: 0,
        };
        return Ok(TailRange {
            start: none,
            end: none,
            complete: true,
        });
    };
    let end = Cursor {
        file: id,
        offset: complete_end(&mut file, len)?,
    };
    let (start, found, whole_file) = records_start(&mut file, end.offset, lines, budget)?;
    let mut range = TailRange {
        start: Cursor {
            file: id,
            offset: start,
        },
        end,
        complete: whole_file || lines.is_some_and(|n| found >= n),
    };
    let wanted = lines.map(|n| n.saturating_sub(found));
    let left = budget.saturating_sub(end.offset);
    if whole_file
        && wanted != Some(0)
        && let Some((mut old, old_id, old_len)) = open_log(&files.previous)?
    {
        let old_end = complete_end(&mut old, old_len)?;
        let (old_start, old_found, old_whole) = records_start(&mut old, old_end, wanted, left)?;
        if old_start < old_end {
            range.start = Cursor {
                file: old_id,
                offset: old_start,
            };
        }
        range.complete = old_whole || wanted.is_some_and(|n| old_found >= n);
    }
    Ok(range)
}

/// The records of `range` (a small one: this holds them all), and whether it reached its end.
pub fn read_range(files: &LogFiles, range: TailRange) -> std::io::Result<Vec<LogEntry>> {
    let mut entries = Vec::new();
    let mut cursor = range.start;
    loop {
        if cursor.file == range.end.file && cursor.offset >= range.end.offset {
            return Ok(entries);
        }
        let (batch, next) = read_next(files, cursor)?;
        if batch.is_empty() && next == cursor {
            return Ok(entries);
        }
        entries.extend(batch);
        cursor = next;
    }
}

/// New complete entries after `cursor`, from at most [`BATCH_BYTES`] of log. When
/// `current.log` was moved aside since, the rest of it is read from `previous.log` first.
pub fn read_next(files: &LogFiles, cursor: Cursor) -> std::io::Result<(Vec<LogEntry>, Cursor)> {
    let Some((file, id, len)) = open_log(&files.current)? else {
        return Ok((Vec::new(), cursor));
    };
    if id == cursor.file {
        let (entries, offset) = read_after(file, len, cursor.offset)?;
        return Ok((entries, Cursor { file: id, offset }));
    }
    if let Some((old, old_id, old_len)) = open_log(&files.previous)?
        && old_id != id
    {
        // Our file was moved aside: finish it. Or it is gone, moved aside twice while we were
        // away: the one moved aside since comes next, from its start.
        let from = if old_id == cursor.file {
            cursor.offset
        } else {
            0
        };
        if old_len > from {
            let (entries, offset) = read_after(old, old_len, from)?;
            if !entries.is_empty() {
                return Ok((
                    entries,
                    Cursor {
                        file: old_id,
                        offset,
                    },
                ));
            }
        }
    }
    // A new file: start at its beginning.
    let (entries, offset) = read_after(file, len, 0)?;
    Ok((entries, Cursor { file: id, offset }))
}

/// Complete entries after `offset` in `file` (of length `len`), one batch at most.
fn read_after(
    mut file: std::fs::File,
    len: u64,
    offset: u64,
) -> std::io::Result<(Vec<LogEntry>, u64)> {
    // Truncated: start over.
    let offset = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take((len - offset).min(BATCH_BYTES))
        .read_to_end(&mut bytes)?;
    let (entries, used) = parse_batch(&bytes, BATCH_REPLY_BYTES);
    Ok((entries, offset + used as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::MAX_TAIL_BYTES;
    use crate::logs::test_log::{append_log, files, rotate, write_log};
    use berth_protocol::log_line::{Stream, encode};

    /// The texts of the last `lines` records, as a single `Logs` reply reads them.
    fn tail_texts(files: &LogFiles, lines: Option<usize>) -> Vec<String> {
        let range = tail_range(files, lines, MAX_TAIL_BYTES).unwrap();
        read_range(files, range)
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect()
    }

    /// Where following starts: the end of the existing records.
    fn end_cursor(files: &LogFiles) -> Cursor {
        tail_range(files, Some(0), MAX_TAIL_BYTES).unwrap().end
    }

    /// Everything `read_next` returns from `cursor` until it has nothing new.
    fn read_all(files: &LogFiles, mut cursor: Cursor) -> (Vec<String>, Cursor) {
        let mut texts = Vec::new();
        loop {
            let (batch, next) = read_next(files, cursor).unwrap();
            cursor = next;
            if batch.is_empty() {
                return (texts, cursor);
            }
            texts.extend(batch.into_iter().map(|e| e.text));
        }
    }

    #[test]
    fn tail_returns_the_last_n_entries() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["a", "b", "c"]);

        let texts = tail_texts(&files, Some(2));

        assert_eq!(texts, ["b", "c"]);
    }

    #[test]
    fn partial_last_line_is_left_for_later() {
        let (entries, used) = parse_complete(b"1 stdout a\n2 stdout par");

        assert_eq!((entries.len(), used), (1, 11));
    }

    #[test]
    fn read_next_returns_only_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["a"]);
        let cursor = end_cursor(&files);
        append_log(&files.current, &["b"]);

        let (texts, _) = read_all(&files, cursor);

        assert_eq!(texts, ["b"]);
    }

    #[test]
    fn a_follower_reads_the_rest_of_a_rotated_log_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["a"]);
        let cursor = end_cursor(&files);
        // Written after the follower's last read, then the log is moved aside.
        append_log(&files.current, &["b"]);
        rotate(&files);
        append_log(&files.current, &["c"]);

        let (texts, _) = read_all(&files, cursor);

        assert_eq!(texts, ["b", "c"]);
    }

    #[test]
    fn a_follower_away_for_two_rotations_reads_the_file_moved_aside_since() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["a"]);
        let cursor = end_cursor(&files);
        rotate(&files);
        append_log(&files.current, &["b"]);
        rotate(&files);
        append_log(&files.current, &["c"]);

        let (texts, _) = read_all(&files, cursor);

        assert_eq!(texts, ["b", "c"]);
    }

    #[test]
    fn tail_reaches_into_the_previous_log_for_more_lines() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.previous, &["a", "b"]);
        write_log(&files.current, &["c"]);

        let texts = tail_texts(&files, Some(2));

        assert_eq!(texts, ["b", "c"]);
    }

    #[test]
    fn a_batch_stops_at_its_reply_budget_and_resumes_there() {
        let mut bytes = Vec::new();
        let control = "\u{1}".repeat(1000);
        for _ in 0..100 {
            encode(1, Stream::Stdout, control.as_bytes(), &mut bytes);
        }

        let (first, used) = parse_batch(&bytes, 20_000);
        let (rest, rest_used) = parse_batch(&bytes[used..], usize::MAX);

        assert!(first.len() < 5, "{} entries", first.len());
        assert_eq!(first.len() + rest.len(), 100);
        assert_eq!(used + rest_used, bytes.len());
    }

    #[test]
    fn read_next_reads_one_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let line = "z".repeat(1000);
        let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), 100).collect();
        write_log(&files.current, &lines);
        let start = tail_range(&files, None, MAX_TAIL_BYTES).unwrap().start;

        let mut reads = Vec::new();
        let mut cursor = start;
        loop {
            let (batch, next) = read_next(&files, cursor).unwrap();
            if batch.is_empty() {
                break;
            }
            reads.push(batch.len());
            cursor = next;
        }

        assert!(reads.len() > 1, "one read took the whole log: {reads:?}");
        assert_eq!(reads.iter().sum::<usize>(), 100);
    }

    #[test]
    fn all_records_come_back_when_no_count_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.previous, &["a"]);
        write_log(&files.current, &["b", "c"]);

        assert_eq!(tail_texts(&files, None), ["a", "b", "c"]);
    }

    #[test]
    fn a_byte_budget_keeps_the_newest_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let line = "w".repeat(100);
        let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), 50).collect();
        write_log(&files.current, &lines);

        let range = tail_range(&files, None, 1000).unwrap();
        let texts: Vec<String> = read_range(&files, range)
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();

        assert!(!range.complete);
        assert!(!texts.is_empty() && texts.len() < 10, "{}", texts.len());
        assert!(
            texts.iter().all(|t| *t == line),
            "a partial record came back"
        );
    }

    #[test]
    fn a_count_larger_than_the_log_returns_everything_and_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["a", "b"]);

        let range = tail_range(&files, Some(10), MAX_TAIL_BYTES).unwrap();

        assert!(range.complete);
        assert_eq!(tail_texts(&files, Some(10)), ["a", "b"]);
    }

    #[test]
    fn missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();

        assert!(tail_texts(&files(dir.path()), None).is_empty());
    }
}
