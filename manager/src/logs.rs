//! Reading captured output back: the last N records, and following new ones.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_protocol::log_line;
use berth_protocol::manager::LogEntry;

/// Most bytes read from the end of a log for one `logs` call.
pub const MAX_TAIL_BYTES: u64 = 16 * 1024 * 1024;
/// How often `logs -f` looks for new output.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Longest silence on a `logs -f` stream: an empty batch is sent after it.
pub const FOLLOW_KEEPALIVE: Duration = Duration::from_secs(5);
/// Log bytes per streamed batch. zlink serializes a reply into a buffer that grows 256 bytes
/// per failed attempt, so a reply's cost is quadratic in its size: a 1 MiB reply costs seconds of
/// CPU, during which berthd serves nobody. Small batches keep every reply cheap. The read size
/// leaves room for one record of the longest line.
pub const BATCH_BYTES: u64 = 32 * 1024 + log_line::MAX_LINE as u64;
/// Most reply bytes (by [`size_of`]) in one streamed batch: log text full of control characters
/// takes up to six times its size as JSON.
const BATCH_REPLY_BYTES: usize = 64 * 1024;
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
        bytes: record.bytes,
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

/// A unit's log: `current.log`, which its supervisor appends to; `previous.log`, where berthd
/// moves it once it is full; and `incoming.log`, the next `current.log` while the supervisor
/// is switching to it.
#[derive(Debug, Clone)]
pub struct LogFiles {
    pub current: PathBuf,
    pub previous: PathBuf,
    pub incoming: PathBuf,
}

impl LogFiles {
    pub fn of(paths: &crate::paths::Paths, unit: &str) -> LogFiles {
        LogFiles::in_dir(&paths.unit_log_dir(unit))
    }

    pub fn in_dir(dir: &Path) -> LogFiles {
        LogFiles {
            current: dir.join("current.log"),
            previous: dir.join("previous.log"),
            incoming: dir.join("incoming.log"),
        }
    }
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

/// Rotation, in three steps that readers in berthd never see half done:
/// 1. [`begin_rotation`]: once `current.log` has grown past the limit, create `incoming.log`,
///    which berthd hands to the supervisor;
/// 2. the supervisor switches to it, so `current.log` receives no more output;
/// 3. [`finish_rotation`]: move `current.log` to `previous.log` (replacing it) and
///    `incoming.log` to `current.log`.
///
/// A follower therefore reads the old file to its true end before the new one starts, and
/// loses no line. If the supervisor refuses the file, [`abandon_rotation`] removes it.
pub fn begin_rotation(files: &LogFiles, max: u64) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::metadata(&files.current) {
        Ok(meta) if meta.len() > max => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let incoming = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&files.incoming)?;
    incoming.set_len(0)?;
    Ok(Some(incoming))
}

/// `incoming.log` left by a rotation a berthd restart interrupted, opened for appending, to be
/// handed to the supervisor again.
pub fn interrupted_rotation(files: &LogFiles) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&files.incoming)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Step 3 of a rotation (see [`begin_rotation`]), once the supervisor writes to `incoming.log`.
pub fn finish_rotation(files: &LogFiles) -> std::io::Result<()> {
    if !files.incoming.exists() {
        return Ok(());
    }
    match std::fs::rename(&files.current, &files.previous) {
        // Already moved by a berthd that stopped between the two renames.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::rename(&files.incoming, &files.current)
}

/// Undoes step 1 when the supervisor refused the new file.
pub fn abandon_rotation(files: &LogFiles) -> std::io::Result<()> {
    match std::fs::remove_file(&files.incoming) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// What `entry` adds to a reply: its text as JSON (a control character takes six bytes as
/// `\u00XX`, a quote or backslash two), its bytes if any (up to four each, `255,`) plus the fixed
/// fields.
fn size_of(entry: &LogEntry) -> usize {
    let escaped: usize = entry
        .text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum();
    let bytes = entry
        .bytes
        .as_ref()
        .map_or(0, |b| b.len() * 4 + ENTRY_OVERHEAD);
    escaped + bytes + ENTRY_OVERHEAD
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
        .count()
        // The newest entry always, even one larger than `max` on its own.
        .max(entries.len().min(1));
    let dropped = entries.len() - kept;
    entries.drain(..dropped);
    (entries, dropped > 0)
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

    fn append_log(path: &Path, texts: &[&str]) {
        use std::io::Write;
        let mut bytes = Vec::new();
        for t in texts {
            encode(9, Stream::Stdout, t.as_bytes(), &mut bytes);
        }
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&bytes).unwrap();
    }

    fn files(dir: &Path) -> LogFiles {
        LogFiles::in_dir(dir)
    }

    /// A whole rotation, as berthd and a cooperating supervisor do it.
    fn rotate(files: &LogFiles) {
        begin_rotation(files, 1).unwrap().unwrap();
        finish_rotation(files).unwrap();
    }

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
    fn a_full_log_gets_an_incoming_file_and_is_moved_aside_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["old"]);

        let incoming = begin_rotation(&files, 1).unwrap();
        let untouched = std::fs::read_to_string(&files.current).unwrap();
        finish_rotation(&files).unwrap();

        assert!(incoming.is_some());
        assert!(
            untouched.contains("old"),
            "current.log moved before the switch"
        );
        assert_eq!(std::fs::metadata(&files.current).unwrap().len(), 0);
        assert!(
            std::fs::read_to_string(&files.previous)
                .unwrap()
                .contains("old")
        );
        assert!(!files.incoming.exists());
    }

    #[test]
    fn an_interrupted_rotation_hands_over_the_same_incoming_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["old"]);
        assert!(interrupted_rotation(&files).unwrap().is_none());
        begin_rotation(&files, 1).unwrap().unwrap();
        append_log(&files.incoming, &["new"]);

        let again = interrupted_rotation(&files).unwrap();
        finish_rotation(&files).unwrap();

        assert!(again.is_some());
        assert!(
            std::fs::read_to_string(&files.current)
                .unwrap()
                .contains("new")
        );
        assert!(
            std::fs::read_to_string(&files.previous)
                .unwrap()
                .contains("old")
        );
    }

    #[test]
    fn a_log_under_its_limit_stays() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["small"]);

        assert!(begin_rotation(&files, 1 << 20).unwrap().is_none());
        assert!(!files.incoming.exists());
    }

    #[test]
    fn an_abandoned_rotation_leaves_the_log_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["kept"]);
        begin_rotation(&files, 1).unwrap().unwrap();

        abandon_rotation(&files).unwrap();
        finish_rotation(&files).unwrap();

        assert!(
            std::fs::read_to_string(&files.current)
                .unwrap()
                .contains("kept")
        );
        assert!(!files.previous.exists() && !files.incoming.exists());
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

    fn entries(texts: &[&str]) -> Vec<LogEntry> {
        texts
            .iter()
            .map(|t| LogEntry {
                usec: 1,
                stream: "stdout".into(),
                text: (*t).into(),
                bytes: None,
            })
            .collect()
    }

    fn texts(batch: &[LogEntry]) -> Vec<&str> {
        batch.iter().map(|e| e.text.as_str()).collect()
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
    fn control_characters_count_as_their_escaped_size() {
        let plain = entries(&["ab"]).remove(0);
        let control = entries(&["\u{1}\u{2}"]).remove(0);

        assert_eq!(size_of(&control) - size_of(&plain), 10);
    }

    #[test]
    fn a_single_reply_keeps_the_newest_entries_that_fit() {
        let one = 1 + ENTRY_OVERHEAD;

        let (kept, truncated) = newest_within(entries(&["a", "b", "c"]), 2 * one);

        assert_eq!((texts(&kept), truncated), (vec!["b", "c"], true));
    }

    #[test]
    fn a_single_reply_keeps_the_newest_entry_even_when_it_is_larger() {
        let big = "\u{1}".repeat(20_000);

        let (kept, truncated) = newest_within(entries(&["a", &big]), 1024);

        assert_eq!((kept.len(), truncated), (1, true));
        assert_eq!(kept[0].text, big);
    }

    #[test]
    fn a_rotation_interrupted_between_its_renames_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["old"]);
        begin_rotation(&files, 1).unwrap().unwrap();
        std::fs::rename(&files.current, &files.previous).unwrap();

        finish_rotation(&files).unwrap();

        assert!(files.current.exists() && !files.incoming.exists());
    }

    #[test]
    fn a_reply_that_fits_is_not_truncated() {
        let (kept, truncated) = newest_within(entries(&["a", "b"]), 1024);

        assert_eq!((texts(&kept), truncated), (vec!["a", "b"], false));
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
