//! Starting and stopping services. A unit's lifecycle is a pure state machine
//! (state_machine); the engine carries out what it decides: one Spawn per run through
//! berth-helper (helper_client, with the whole program: program), the run followed through its
//! supervisor's control socket (supervisor_link), restarts after RestartSec=, and the record
//! kept across berthd restarts (persistence).

pub mod accounting;
mod engine;
mod helper_client;
pub mod persistence;
pub mod program;
pub mod state_machine;
mod supervisor_link;

use std::time::Duration;

use berth_protocol::manager::{ManagerError, UnitStatus};
use berth_protocol::supervisor::KillWhom;

use crate::daemon::Shared;
pub(crate) use engine::wait_until;
use engine::{carry_out, feed, spawn_run};
use program::MAX_STOP_TIMEOUT;
use state_machine::{Event, Refusal};

pub use supervisor_link::adopt_running;

/// Extra time berthd waits past TimeoutStopSec= for the supervisor's SIGKILL to land.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn status_of(shared: &Shared, unit: &str) -> Result<UnitStatus, ManagerError> {
    let m = shared.borrow();
    let u = m.unit(unit)?;
    Ok(m.status(u))
}

/// The canonical name of the unit `unit_arg` names.
fn name_of(shared: &Shared, unit_arg: &str) -> Result<String, ManagerError> {
    Ok(shared.borrow().unit(unit_arg)?.name.clone())
}

fn refused(unit: &str, refusal: Refusal) -> ManagerError {
    ManagerError::StartFailed {
        unit: unit.to_owned(),
        reason: refusal.to_string(),
    }
}

/// Starts a unit. Returns once its run is up (simple/exec: the main process has exec'd;
/// notify: READY=1; oneshot: every ExecStart= has exited), or with the run's failure.
pub async fn start(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    shared.borrow_mut().instantiate(&unit_arg)?;
    let name = name_of(&shared, &unit_arg)?;
    let actions = feed(&shared, &name, Event::StartRequested).map_err(|r| refused(&name, r))?;
    let run = shared.borrow().unit(&name)?.lifecycle().run();
    if carry_out(&shared, &name, actions) {
        spawn_run(&shared, &name).await?;
    }
    wait_until(&shared, Duration::MAX, |m| {
        m.units
            .get(&name)
            .is_none_or(|u| u.lifecycle().start_outcome(run).is_some())
    })
    .await;
    let outcome = shared
        .borrow()
        .units
        .get(&name)
        .and_then(|u| u.lifecycle().start_outcome(run));
    if let Some(Err(reason)) = outcome {
        return Err(ManagerError::StartFailed { unit: name, reason });
    }
    status_of(&shared, &name)
}

/// Stops a unit: the supervisor runs the stop sequence (SIGKILL after TimeoutStopSec=). A
/// pending restart is cancelled.
pub async fn stop(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    let name = name_of(&shared, &unit_arg)?;
    let timeout = shared
        .borrow()
        .unit(&name)?
        .config
        .timeout_stop
        .min(MAX_STOP_TIMEOUT);
    let actions = feed(&shared, &name, Event::StopRequested).map_err(ManagerError::internal)?;
    carry_out(&shared, &name, actions);
    let wait = timeout.saturating_add(STOP_GRACE);
    let stopped = wait_until(&shared, wait, |m| {
        m.units
            .get(&name)
            .is_none_or(|u| u.link.is_none() && !u.lifecycle().has_run())
    })
    .await;
    if !stopped {
        return Err(ManagerError::internal(format!(
            "{name} did not stop within {wait:?}"
        )));
    }
    status_of(&shared, &name)
}

/// Stops (if active) and starts again.
pub async fn restart(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    stop(shared.clone(), unit_arg.clone()).await?;
    start(shared, unit_arg).await
}

/// Reloads a running unit (ExecReload=, or a notify service's RELOADING=1 ... READY=1);
/// returns once the supervisor has the request: the reload's outcome shows in `status`.
pub async fn reload(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    let name = name_of(&shared, &unit_arg)?;
    let actions =
        feed(&shared, &name, Event::ReloadRequested).map_err(|r| not_running(&name, r))?;
    carry_out(&shared, &name, actions);
    status_of(&shared, &name)
}

/// Sends `signal` to the unit's main process or to all its processes.
pub async fn kill(
    shared: Shared,
    unit_arg: String,
    signal: i32,
    whom: KillWhom,
) -> Result<UnitStatus, ManagerError> {
    let name = name_of(&shared, &unit_arg)?;
    let actions = feed(&shared, &name, Event::KillRequested { signal, whom })
        .map_err(|r| not_running(&name, r))?;
    carry_out(&shared, &name, actions);
    status_of(&shared, &name)
}

/// Forgets the failure of each unit named (every unit when none is): `failed` becomes
/// `stopped`, and the start rate limit and restart count start again.
pub fn reset_failed(shared: &Shared, units: &[String]) -> Result<Vec<UnitStatus>, ManagerError> {
    let names: Vec<String> = if units.is_empty() {
        shared.borrow().units.keys().cloned().collect()
    } else {
        units
            .iter()
            .map(|u| name_of(shared, u))
            .collect::<Result<_, _>>()?
    };
    for name in &names {
        feed(shared, name, Event::ResetFailed).map_err(ManagerError::internal)?;
    }
    names.iter().map(|n| status_of(shared, n)).collect()
}

/// The signal and whom of a `Kill` (SIGTERM to every process when not given, as systemctl's).
pub fn kill_request(
    signal: Option<&str>,
    whom: Option<&str>,
) -> Result<(i32, KillWhom), ManagerError> {
    let number = match signal {
        None => libc::SIGTERM,
        Some(name) => berth_protocol::signal_names::signal_number(name).ok_or_else(|| {
            ManagerError::InvalidSignal {
                signal: name.to_owned(),
            }
        })?,
    };
    let whom = match whom {
        None | Some("all") => KillWhom::All,
        Some("main") => KillWhom::Main,
        Some(other) => {
            return Err(ManagerError::InvalidSignal {
                signal: format!("kill_whom {other} (main or all)"),
            });
        }
    };
    Ok((number, whom))
}

fn not_running(unit: &str, refusal: Refusal) -> ManagerError {
    ManagerError::UnitNotRunning {
        unit: unit.to_owned(),
        reason: refusal.to_string(),
    }
}
