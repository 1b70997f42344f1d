//! TRANSITIONAL, until the supervisor runs whole programs (issue 8, h-program): the supervisor
//! runs only `exec_start[0]`, so a oneshot's ExecStart= lines run one supervisor each, in turn,
//! and the `-` prefix is honoured here. The state machine sees one run: the steps' ends are
//! kept from it but the last one's (or a failing one's). Delete this file (and its three call
//! sites in engine.rs and supervisor_link.rs) once the supervisor runs oneshot lists itself.

use berth_protocol::service_program::{ServiceProgram, ServiceType};
use berth_protocol::supervisor::{Phase, RunResult, SupervisorStatus};

use super::engine::dispatch;
use super::state_machine::Event;
use crate::daemon::Shared;

/// Which ExecStart= of a oneshot one supervisor runs.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) index: usize,
    pub(super) count: usize,
    pub(super) ignore_failure: bool,
}

/// How a step's end goes on.
pub(super) enum StepEnd {
    /// Release this supervisor and spawn the next step.
    Next,
    /// The run is over: feed this snapshot to the machine.
    Feed(Box<SupervisorStatus>),
}

/// Narrows `program` to step `index` of a oneshot; `None` for other types (one supervisor).
pub(super) fn narrow(program: &mut ServiceProgram, index: usize) -> Option<Step> {
    if program.service_type != ServiceType::Oneshot {
        return None;
    }
    let count = program.exec_start.len();
    let command = program.exec_start.get(index)?.clone();
    let step = Step {
        index,
        count,
        ignore_failure: command.ignore_failure,
    };
    program.exec_start = vec![command];
    Some(step)
}

impl Step {
    /// What the end of this step (`status`, not running) means; `stopping` when a stop was
    /// asked for.
    pub(super) fn on_end(&self, status: &SupervisorStatus, stopping: bool) -> StepEnd {
        let ok = status.exit.is_some_and(|e| e.success()) || self.ignore_failure;
        if stopping || status.stop_requested || !ok {
            return StepEnd::Feed(Box::new(status.clone()));
        }
        if self.index + 1 < self.count {
            return StepEnd::Next;
        }
        let mut last = status.clone();
        // A `-` command's failure does not fail the run.
        last.result = Some(RunResult::Success);
        StepEnd::Feed(Box::new(last))
    }
}

/// A later step could not be spawned, or a stop came between two steps: the run ends with
/// `result` (and `failure`).
pub(super) fn end_run(shared: &Shared, unit: &str, result: RunResult, failure: Option<String>) {
    let end = SupervisorStatus {
        unit: unit.to_owned(),
        supervisor_pid: 0,
        main_pid: None,
        running: false,
        phase: Phase::Dead,
        result: Some(result),
        failure,
        status_text: None,
        notify_errno: None,
        reloads: 0,
        last_reload_ok: None,
        accounting: None,
        log_dropped: 0,
        stop_requested: false,
        exit: None,
        started_usec: 0,
        error: None,
    };
    dispatch(shared, unit, Event::Snapshot(&end));
    // No supervisor of that step will close a link.
    dispatch(shared, unit, Event::SupervisorGone);
}
