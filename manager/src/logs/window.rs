//! A time window over a log (`berth logs --since/--until`).

use super::{Cursor, LogFiles, TailRange, read_next};

/// Entries from `since` to `until` (microseconds since the epoch, both included; either open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeWindow {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl TimeWindow {
    pub fn contains(&self, usec: i64) -> bool {
        self.since.is_none_or(|s| usec >= s) && self.until.is_none_or(|u| usec <= u)
    }

    /// `usec` lies after the window's end.
    pub fn past(&self, usec: i64) -> bool {
        self.until.is_some_and(|u| usec > u)
    }
}

/// How many entries of `range` lie in `window`, read batch by batch (nothing held).
pub fn count_in(files: &LogFiles, range: TailRange, window: TimeWindow) -> std::io::Result<u64> {
    let mut count = 0;
    let mut cursor: Cursor = range.start;
    while !(cursor.file == range.end.file && cursor.offset >= range.end.offset) {
        let (batch, next) = read_next(files, cursor)?;
        if batch.is_empty() && next == cursor {
            break;
        }
        if batch.last().is_some_and(|e| window.past(e.usec)) {
            count += batch.iter().filter(|e| window.contains(e.usec)).count() as u64;
            break;
        }
        count += batch.iter().filter(|e| window.contains(e.usec)).count() as u64;
        cursor = next;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::test_log::files;
    use crate::logs::{MAX_TAIL_BYTES, tail_range};
    use berth_protocol::log_line::{Stream, encode};

    #[test]
    fn a_window_holds_its_ends_and_an_open_end_holds_everything_that_way() {
        let w = TimeWindow {
            since: Some(10),
            until: Some(20),
        };

        assert!(w.contains(10) && w.contains(20));
        assert!(!w.contains(9) && !w.contains(21));
        assert!(w.past(21) && !w.past(20));
        assert!(TimeWindow::default().contains(i64::MIN));
    }

    #[test]
    fn the_entries_of_a_window_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let mut bytes = Vec::new();
        for usec in 0..100 {
            encode(usec, Stream::Stdout, b"x", &mut bytes);
        }
        std::fs::write(&files.current, bytes).unwrap();
        let range = tail_range(&files, None, MAX_TAIL_BYTES).unwrap();
        let window = TimeWindow {
            since: Some(10),
            until: Some(19),
        };

        assert_eq!(count_in(&files, range, window).unwrap(), 10);
    }
}
