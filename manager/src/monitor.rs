//! `Monitor`: every state change of every unit, for scripts and UIs (`berth monitor`).
//!
//! [`Manager::notify`](crate::daemon::Manager::notify) runs on every change; while anyone
//! monitors, it compares each unit's state, main pid and result with what it saw last and
//! sends the differences to a broadcast channel. Sending never waits: each monitor's stream
//! reads the channel at the pace its client reads, and one that falls more than
//! [`BACKLOG`] events behind loses the oldest, is told how many, and gets every unit's current
//! state again. A slow client therefore costs berthd a bounded queue, never a stall.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use berth_protocol::manager::{MonitorReply, UnitEvent, UnitStatus};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::daemon::Shared;

/// Events one monitor may fall behind by before it loses some.
pub const BACKLOG: usize = 4096;
/// Events per reply at most (replies are kept small, as `Logs` keeps its batches).
const BATCH: usize = 256;
/// Longest silence on a stream: an empty reply is sent after it, since only a write tells the
/// server that a client has gone away.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// What a monitor compares between two looks at a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: String,
    main_pid: Option<i64>,
    result: Option<String>,
}

impl Seen {
    fn of(status: &UnitStatus) -> Seen {
        Seen {
            state: status.state.clone(),
            main_pid: status.main_pid,
            result: status.result.clone(),
        }
    }
}

pub struct Monitors {
    events: broadcast::Sender<UnitEvent>,
    /// Each unit as last seen; kept only while someone monitors.
    seen: RefCell<BTreeMap<String, Seen>>,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors {
            events: broadcast::channel(BACKLOG).0,
            seen: RefCell::new(BTreeMap::new()),
        }
    }
}

impl Monitors {
    fn watched(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// Compares `units` (every unit now; only asked for while someone monitors) with what was
    /// seen last and sends the changes.
    pub fn observe(&self, units: impl FnOnce() -> Vec<UnitStatus>) {
        if !self.watched() {
            return;
        }
        let units = units();
        let usec = now_usec();
        let mut seen = self.seen.borrow_mut();
        let mut now = BTreeMap::new();
        for status in units {
            let current = Seen::of(&status);
            let before = seen.remove(&status.unit);
            if before.as_ref() != Some(&current) {
                let _ =
                    self.events
                        .send(event(&status.unit, &current, before.map(|b| b.state), usec));
            }
            now.insert(status.unit, current);
        }
        for (unit, before) in std::mem::replace(&mut *seen, now) {
            let gone = Seen {
                state: "detached".into(),
                main_pid: None,
                result: before.result.clone(),
            };
            let _ = self
                .events
                .send(event(&unit, &gone, Some(before.state), usec));
        }
    }

    /// A new monitor: its receiver, and the current state of every unit (`units`) as the
    /// events its stream starts with.
    fn subscribe(
        &self,
        units: Vec<UnitStatus>,
    ) -> (broadcast::Receiver<UnitEvent>, Vec<UnitEvent>) {
        if !self.watched() {
            // Nobody watched, so nothing was kept up to date: start from now.
            *self.seen.borrow_mut() = units
                .iter()
                .map(|u| (u.unit.clone(), Seen::of(u)))
                .collect();
        }
        (self.events.subscribe(), current(units))
    }
}

fn event(unit: &str, seen: &Seen, previous_state: Option<String>, usec: i64) -> UnitEvent {
    UnitEvent {
        unit: unit.to_string(),
        state: seen.state.clone(),
        previous_state,
        result: seen.result.clone(),
        main_pid: seen.main_pid,
        usec,
    }
}

/// Every unit's current state as events (no previous state).
fn current(units: Vec<UnitStatus>) -> Vec<UnitEvent> {
    let usec = now_usec();
    units
        .iter()
        .map(|u| event(&u.unit, &Seen::of(u), None, usec))
        .collect()
}

fn now_usec() -> i64 {
    i64::try_from(crate::unit_state::now_usec()).unwrap_or(i64::MAX)
}

/// The replies of one `Monitor` call: the current states, then (with `more`) the changes.
pub fn stream(shared: Shared, more: bool) -> berth_varlink::service::Outcome {
    use berth_varlink::service::{Outcome, stream_item};
    let (receiver, first) = {
        let m = shared.borrow();
        m.monitors.subscribe(m.list_without_usage())
    };
    let reply = |events, lost| MonitorReply { events, lost };
    if !more {
        return Outcome::reply(&reply(first, None));
    }
    let head = futures_util::stream::once(async move { stream_item(&reply(first, None), true) });
    let changes = futures_util::stream::unfold(receiver, move |mut receiver| {
        let shared = shared.clone();
        async move {
            let (events, lost) = next_batch(&mut receiver, &shared).await?;
            Some((stream_item(&reply(events, lost), true), receiver))
        }
    });
    Outcome::Stream(Box::pin(head.chain(changes)))
}

/// The next reply's events: those waiting (at least one, or none after [`KEEPALIVE`]); after
/// a lag, the count lost and every unit's current state. `None` when berthd is going away.
async fn next_batch(
    receiver: &mut broadcast::Receiver<UnitEvent>,
    shared: &Shared,
) -> Option<(Vec<UnitEvent>, Option<i64>)> {
    use broadcast::error::{RecvError, TryRecvError};
    let lagged = |n: u64| {
        let units = shared.borrow().list_without_usage();
        Some((current(units), Some(i64::try_from(n).unwrap_or(i64::MAX))))
    };
    let first = match tokio::time::timeout(KEEPALIVE, receiver.recv()).await {
        Err(_) => return Some((Vec::new(), None)),
        Ok(Ok(event)) => event,
        Ok(Err(RecvError::Lagged(n))) => return lagged(n),
        Ok(Err(RecvError::Closed)) => return None,
    };
    let mut events = vec![first];
    while events.len() < BATCH {
        match receiver.try_recv() {
            Ok(event) => events.push(event),
            Err(TryRecvError::Lagged(n)) => return lagged(n),
            Err(_) => break,
        }
    }
    Some((events, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, state: &str, pid: Option<i64>) -> UnitStatus {
        let json = serde_json::json!({
            "unit": name, "image": "img", "state": state, "main_pid": pid, "uid": null,
            "profile": "default@2", "description": null, "service_type": "simple",
            "exit_code": null, "exit_signal": null, "since_usec": null, "failure": null,
            "result": null, "status_text": null, "restarts": null, "enabled": null,
            "cpu_usec": null, "memory_current": null, "memory_peak": null, "tasks": null,
            "log_dropped": null, "resource_notes": null,
        });
        serde_json::from_value(json).unwrap()
    }

    fn drain(
        receiver: &mut broadcast::Receiver<UnitEvent>,
    ) -> Vec<(String, String, Option<String>)> {
        let mut out = Vec::new();
        while let Ok(e) = receiver.try_recv() {
            out.push((e.unit, e.state, e.previous_state));
        }
        out
    }

    #[test]
    fn a_change_of_state_is_sent_with_the_state_before() {
        let monitors = Monitors::default();
        let (mut rx, first) = monitors.subscribe(vec![unit("a.service", "stopped", None)]);

        monitors.observe(|| vec![unit("a.service", "running", Some(7))]);

        assert_eq!(first.len(), 1);
        assert_eq!(
            drain(&mut rx),
            [("a.service".into(), "running".into(), Some("stopped".into()))]
        );
    }

    #[test]
    fn nothing_is_sent_when_nothing_changed() {
        let monitors = Monitors::default();
        let (mut rx, _) = monitors.subscribe(vec![unit("a.service", "running", Some(7))]);

        monitors.observe(|| vec![unit("a.service", "running", Some(7))]);

        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn attached_and_detached_units_are_told() {
        let monitors = Monitors::default();
        let (mut rx, _) = monitors.subscribe(vec![unit("old.service", "stopped", None)]);

        monitors.observe(|| vec![unit("new.service", "stopped", None)]);

        assert_eq!(
            drain(&mut rx),
            [
                ("new.service".into(), "stopped".into(), None),
                (
                    "old.service".into(),
                    "detached".into(),
                    Some("stopped".into())
                ),
            ]
        );
    }

    #[test]
    fn a_monitor_that_falls_behind_loses_the_oldest_and_never_blocks() {
        let monitors = Monitors::default();
        let (mut rx, _) = monitors.subscribe(vec![unit("a.service", "stopped", None)]);

        for i in 0..(BACKLOG as i64 + 10) {
            monitors.observe(|| vec![unit("a.service", "running", Some(i))]);
        }

        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(n)) if n > 0
        ));
    }
}
