//! One unit's lifecycle state and record, as berthd keeps it in memory.

use berth_logging::Untrusted;
use berth_protocol::supervisor::{ExitStatus, SupervisorRequest};
use tokio::sync::mpsc;

use crate::unit::ServiceConfig;

/// Lifecycle state of a unit, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Exited,
    Failed,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Stopped => "stopped",
            UnitState::Starting => "starting",
            UnitState::Running => "running",
            UnitState::Stopping => "stopping",
            UnitState::Exited => "exited",
            UnitState::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            UnitState::Starting | UnitState::Running | UnitState::Stopping
        )
    }
}

/// An attached unit and what berthd knows of its current run.
#[derive(Debug)]
pub struct Unit {
    pub name: String,
    pub image: String,
    pub config: ServiceConfig,
    pub state: UnitState,
    pub main_pid: Option<u32>,
    pub uid: Option<u32>,
    pub exit: Option<ExitStatus>,
    pub since_usec: u64,
    pub failure: Option<String>,
    pub stop_requested: bool,
    /// Requests to the supervisor of the current run; `None` when no supervisor is linked.
    pub link: Option<mpsc::UnboundedSender<SupervisorRequest>>,
}

impl Unit {
    pub(crate) fn new(name: String, image: String, config: ServiceConfig) -> Unit {
        Unit {
            name,
            image,
            config,
            state: UnitState::Stopped,
            main_pid: None,
            uid: None,
            exit: None,
            since_usec: now_usec(),
            failure: None,
            stop_requested: false,
            link: None,
        }
    }

    /// Moves to `state` and logs the change; set the pid, exit and failure first, so the line
    /// carries them.
    pub fn set_state(&mut self, state: UnitState) {
        let from = self.state;
        self.state = state;
        self.since_usec = now_usec();
        // An exit belongs to the run that ended: shown once the unit is no longer active.
        let exit = (!state.is_active()).then_some(self.exit).flatten();
        let (exit_code, exit_signal) = (exit.and_then(|e| e.code), exit.and_then(|e| e.signal));
        let failure = self.failure.as_deref().map(Untrusted);
        macro_rules! log_change {
            ($level:ident) => {
                tracing::$level!(
                    unit = %Untrusted(&self.name),
                    from = %from.as_str(),
                    state = %state.as_str(),
                    pid = self.main_pid,
                    uid = self.uid,
                    exit_code,
                    exit_signal,
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
