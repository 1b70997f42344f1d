//! One unit as berthd keeps it in memory: its configuration, its lifecycle (the pure state
//! machine of lifecycle/state_machine.rs, changed only through [`Unit::handle`]) and the
//! resources of its current run (the uid it holds, the link to its supervisor).

use berth_logging::Untrusted;
use berth_protocol::supervisor::SupervisorRequest;
use tokio::sync::mpsc;

use crate::lifecycle::state_machine::{Action, Event, Lifecycle, Policy, Refusal};
use crate::unit::ServiceConfig;

pub use crate::lifecycle::state_machine::UnitState;

/// The image's user a run runs as (see [`crate::image_users`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    /// Its name in the image.
    pub name: String,
    /// Its host uid: the block's first id plus its uid in the image.
    pub uid: u32,
}

/// An attached unit and what berthd knows of its current run.
#[derive(Debug)]
pub struct Unit {
    pub name: String,
    pub image: String,
    pub config: ServiceConfig,
    lifecycle: Lifecycle,
    /// The dynamic uid the current run holds.
    pub(crate) uid: Option<u32>,
    /// The image's user the current (or last) run runs as, when it runs as the image's own
    /// users (no dynamic uid then).
    pub(crate) run_user: Option<RunUser>,
    /// Requests to the supervisor of the current run; `None` when no supervisor is linked.
    pub(crate) link: Option<mpsc::UnboundedSender<SupervisorRequest>>,
    /// Output lines the last run's supervisor dropped (its log could not keep up); `None`
    /// before any report of a run.
    pub log_dropped: Option<u64>,
}

impl Unit {
    pub(crate) fn new(name: String, image: String, config: ServiceConfig) -> Unit {
        Unit {
            name,
            image,
            config,
            lifecycle: Lifecycle::new(now_usec()),
            uid: None,
            run_user: None,
            link: None,
            log_dropped: None,
        }
    }

    pub fn state(&self) -> UnitState {
        self.lifecycle.state()
    }

    /// Starting, running or stopping, or with a run still going (RemainAfterExit=): the unit
    /// cannot be detached or replaced now.
    pub fn is_active(&self) -> bool {
        self.state().is_active() || self.lifecycle.has_run()
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Replaces the lifecycle (one a previous berthd left, or the one of the unit this one
    /// replaces on reattach).
    pub(crate) fn set_lifecycle(&mut self, lifecycle: Lifecycle) {
        self.lifecycle = lifecycle;
    }

    pub fn policy(&self) -> Policy {
        Policy::of(&self.config)
    }

    /// Feeds `event` to the unit's state machine and logs a change of state.
    pub(crate) fn handle(&mut self, event: Event<'_>) -> Result<Vec<Action>, Refusal> {
        let from = self.lifecycle.state();
        let result = self.lifecycle.handle(&self.policy(), event, now_usec());
        let state = self.lifecycle.state();
        if state != from {
            self.log_change(from);
        }
        result
    }

    fn log_change(&self, from: UnitState) {
        let l = &self.lifecycle;
        let state = l.state();
        let exit = (!state.is_active()).then_some(l.exit()).flatten();
        let (exit_code, exit_signal) = (exit.and_then(|e| e.code), exit.and_then(|e| e.signal));
        let failure = l.failure().map(Untrusted);
        let result = l.result().map(|r| r.as_str());
        macro_rules! log_change {
            ($level:ident) => {
                tracing::$level!(
                    unit = %Untrusted(&self.name),
                    from = %from.as_str(),
                    state = %state.as_str(),
                    pid = l.main_pid(),
                    uid = self.uid.or(self.run_user.as_ref().map(|r| r.uid)),
                    exit_code,
                    exit_signal,
                    result,
                    restarts = l.restarts(),
                    failure = failure.as_ref().map(tracing::field::display),
                    "unit {}",
                    state.as_str()
                )
            };
        }
        if state == UnitState::Failed {
            log_change!(warn);
        } else {
            log_change!(info);
        }
    }
}

pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
