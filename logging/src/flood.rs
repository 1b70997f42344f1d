//! A bound on the log lines callers can cause. Any local user may call berthd, and each refused
//! call is worth a line; without a bound, one user repeating a refused call in a loop would fill
//! the disk behind berthd's stderr, or drown everyone else's lines in the journal's rate limit.
//! Each caller (by uid) gets [`BURST`] lines per [`WINDOW`]; the lines it caused beyond that are
//! counted and the count is reported with its next line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one caller may cause per window.
pub const BURST: u32 = 20;
/// The window [`BURST`] counts over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most callers tracked at once; a new caller beyond them is not logged until a window ends.
const MAX_CALLERS: usize = 4096;

/// Lines caused so far in the current window, per caller (`None`: a caller whose uid is
/// unknown, counted together).
#[derive(Debug, Default)]
pub struct FloodLimit {
    callers: BTreeMap<Option<u32>, Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    lines: u32,
    suppressed: u64,
}

impl FloodLimit {
    pub const fn new() -> FloodLimit {
        FloodLimit {
            callers: BTreeMap::new(),
        }
    }

    /// Whether `caller` may cause one more line at `now`: `Some(n)` with the number of its lines
    /// suppressed since its last logged one, or `None` to leave this one out.
    pub fn allow(&mut self, caller: Option<u32>, now: Instant) -> Option<u64> {
        if !self.callers.contains_key(&caller) && self.callers.len() >= MAX_CALLERS {
            self.callers
                .retain(|_, w| now.duration_since(w.start) < WINDOW);
            if self.callers.len() >= MAX_CALLERS {
                return None;
            }
        }
        let window = self.callers.entry(caller).or_insert(Window {
            start: now,
            lines: 0,
            suppressed: 0,
        });
        if now.duration_since(window.start) >= WINDOW {
            window.start = now;
            window.lines = 0;
        }
        if window.lines >= BURST {
            window.suppressed += 1;
            return None;
        }
        window.lines += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

/// The process's limit, shared by everything that logs on a caller's behalf.
static LIMIT: Mutex<FloodLimit> = Mutex::new(FloodLimit::new());

/// [`FloodLimit::allow`] on the process's limit, now.
pub fn allow(caller: Option<u32>) -> Option<u64> {
    let mut limit = LIMIT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    limit.allow(caller, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_burst_then_nothing_until_the_window_ends() {
        let mut limit = FloodLimit::new();
        let start = Instant::now();

        let allowed = (0..BURST + 5)
            .filter(|_| limit.allow(Some(1000), start).is_some())
            .count();
        let next_window = limit.allow(Some(1000), start + WINDOW);

        assert_eq!(allowed, BURST as usize);
        assert_eq!(next_window, Some(5), "the suppressed lines are reported");
        assert_eq!(limit.allow(Some(1000), start + WINDOW), Some(0));
    }

    #[test]
    fn one_callers_flood_leaves_others_their_lines() {
        let mut limit = FloodLimit::new();
        let now = Instant::now();
        for _ in 0..BURST * 10 {
            limit.allow(Some(1000), now);
        }

        assert_eq!(limit.allow(Some(0), now), Some(0));
        assert_eq!(limit.allow(Some(1001), now), Some(0));
        assert_eq!(limit.allow(None, now), Some(0));
    }

    #[test]
    fn the_callers_tracked_are_bounded() {
        let mut limit = FloodLimit::new();
        let now = Instant::now();
        for uid in 0..MAX_CALLERS as u32 {
            limit.allow(Some(uid), now);
        }

        let newcomer = limit.allow(Some(u32::MAX), now);
        let later = limit.allow(Some(u32::MAX), now + WINDOW);

        assert_eq!(newcomer, None);
        assert_eq!(later, Some(0));
        assert!(limit.callers.len() <= MAX_CALLERS);
    }
}
