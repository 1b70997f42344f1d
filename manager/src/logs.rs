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

/// How far a reader got: the file (by inode, since rotation renames it) and the offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ino: u64,
    pub offset: u64,
}

/// The open file at `path`, its inode and length; None when it does not exist.
fn open_log(path: &Path) -> std::io::Result<Option<(std::fs::File, u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::File::open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            Ok(Some((file, meta.ino(), meta.len())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The complete entries in the last `max` bytes of `file` (of length `len`), and the offset
/// after the last of them.
fn tail_of(file: &mut std::fs::File, len: u64, max: u64) -> std::io::Result<(Vec<LogEntry>, u64)> {
    let start = len.saturating_sub(max);
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
    let (entries, used) = parse_complete(&bytes[skip..]);
    Ok((entries, start + (skip + used) as u64))
}

/// The last `lines` entries (all when None, up to [`MAX_TAIL_BYTES`] of log), taken from
/// `previous.log` too when `current.log` has fewer, and the cursor where following continues.
pub fn tail(files: &LogFiles, lines: Option<usize>) -> std::io::Result<(Vec<LogEntry>, Cursor)> {
    let (mut entries, cursor, used) = match open_log(&files.current)? {
        Some((mut file, ino, len)) => {
            let (entries, offset) = tail_of(&mut file, len, MAX_TAIL_BYTES)?;
            (entries, Cursor { ino, offset }, len.min(MAX_TAIL_BYTES))
        }
        None => (Vec::new(), Cursor { ino: 0, offset: 0 }, 0),
    };
    let wanted_more = lines.is_none_or(|n| entries.len() < n);
    if wanted_more
        && used < MAX_TAIL_BYTES
        && let Some((mut file, _, len)) = open_log(&files.previous)?
    {
        let (mut older, _) = tail_of(&mut file, len, MAX_TAIL_BYTES - used)?;
        older.append(&mut entries);
        entries = older;
    }
    if let Some(n) = lines {
        let drop = entries.len().saturating_sub(n);
        entries.drain(..drop);
    }
    Ok((entries, cursor))
}

/// New complete entries after `cursor`, from at most [`BATCH_BYTES`] of log. When
/// `current.log` was moved aside since, the rest of it is read from `previous.log` first.
pub fn read_next(files: &LogFiles, cursor: Cursor) -> std::io::Result<(Vec<LogEntry>, Cursor)> {
    let Some((file, ino, len)) = open_log(&files.current)? else {
        return Ok((Vec::new(), cursor));
    };
    if ino == cursor.ino {
        let (entries, offset) = read_after(file, len, cursor.offset)?;
        return Ok((entries, Cursor { ino, offset }));
    }
    if let Some((old, old_ino, old_len)) = open_log(&files.previous)?
        && old_ino == cursor.ino
        && old_len > cursor.offset
    {
        let (entries, offset) = read_after(old, old_len, cursor.offset)?;
        if !entries.is_empty() {
            return Ok((
                entries,
                Cursor {
                    ino: old_ino,
                    offset,
                },
            ));
        }
    }
    // A new file (rotated, or rotated twice since): start at its beginning.
    let (entries, offset) = read_after(file, len, 0)?;
    Ok((entries, Cursor { ino, offset }))
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
    let (entries, used) = parse_complete(&bytes);
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
    std::fs::rename(&files.current, &files.previous)?;
    std::fs::rename(&files.incoming, &files.current)
}

/// Undoes step 1 when the supervisor refused the new file.
pub fn abandon_rotation(files: &LogFiles) -> std::io::Result<()> {
    match std::fs::remove_file(&files.incoming) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
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

        let (entries, _) = tail(&files, Some(2)).unwrap();

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
    fn read_next_returns_only_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        write_log(&files.current, &["a"]);
        let (_, cursor) = tail(&files, None).unwrap();
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
        let (_, cursor) = tail(&files, None).unwrap();
        // Written after the follower's last read, then the log is moved aside.
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

        let (entries, _) = tail(&files, Some(2)).unwrap();

        assert_eq!(
            entries.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
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
    fn read_next_reads_one_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let line = "z".repeat(1000);
        let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), 100).collect();
        write_log(&files.current, &lines);
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&files.current).unwrap());

        let mut reads = Vec::new();
        let mut cursor = Cursor { ino, offset: 0 };
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
    fn missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();

        assert!(tail(&files(dir.path()), None).unwrap().0.is_empty());
    }
}
