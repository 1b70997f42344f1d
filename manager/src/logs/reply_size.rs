//! What an entry costs in a reply, and keeping a single reply within its bound.

use berth_protocol::manager::LogEntry;

/// What an entry adds to a reply besides its text: timestamp, stream, keys and quotes.
const ENTRY_OVERHEAD: usize = 48;

/// What `entry` adds to a reply: its text as JSON (a control character takes six bytes as
/// `\u00XX`, a quote or backslash two), its bytes if any (up to four each, `255,`) plus the fixed
/// fields.
pub(super) fn size_of(entry: &LogEntry) -> usize {
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
    // A log socket's message: its priority, pid and identifier (whose bytes are printable,
    // but may be U+FFFD's three).
    let origin = entry.priority.map_or(0, |_| {
        ENTRY_OVERHEAD + entry.identifier.as_ref().map_or(0, String::len)
    });
    escaped + bytes + origin + ENTRY_OVERHEAD
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

    fn entries(texts: &[&str]) -> Vec<LogEntry> {
        texts
            .iter()
            .map(|t| LogEntry {
                usec: 1,
                stream: "stdout".into(),
                text: (*t).into(),
                bytes: None,
                priority: None,
                pid: None,
                identifier: None,
            })
            .collect()
    }

    fn texts(batch: &[LogEntry]) -> Vec<&str> {
        batch.iter().map(|e| e.text.as_str()).collect()
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
    fn a_reply_that_fits_is_not_truncated() {
        let (kept, truncated) = newest_within(entries(&["a", "b"]), 1024);

        assert_eq!((texts(&kept), truncated), (vec!["a", "b"], false));
    }
}
