//! A unit's captured output on disk: reading it back ([`reader`]: the last N records, and
//! following new ones), moving a full log aside ([`rotation`]), keeping replies small
//! ([`reply_size`]) and keeping a time window ([`window`]); and what berthd asks of forwarding
//! it to the host's journal ([`journal_fields`]).

pub mod journal_fields;
mod reader;
mod reply_size;
mod rotation;
#[cfg(test)]
mod test_log;
mod window;

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_protocol::log_line;

pub use reader::{Cursor, FileId, TailRange, read_next, read_range, tail_range};
pub use reply_size::newest_within;
pub use rotation::{abandon_rotation, begin_rotation, finish_rotation, interrupted_rotation};
pub use window::{TimeWindow, count_in};

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
/// Largest single (non-`more`) `Logs` reply, in entry bytes; older entries are left out.
pub const REPLY_MAX_BYTES: usize = 64 * 1024;

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
