//! The engine: feeds events to a unit's state machine (state_machine.rs) and carries out the
//! actions it returns: the Spawn of a run through berth-helper, requests to the run's
//! supervisor, RestartSec= timers, and the record on disk.

use std::time::Duration;

use berth_protocol::manager::ManagerError;
use berth_protocol::supervisor::SupervisorRequest;
use tokio::sync::mpsc;

use super::helper_client::{plan, spawn};
use super::persistence;
use super::program::MAX_STOP_TIMEOUT;
use super::state_machine::{Action, Event, Refusal};
use super::supervisor_link::follow_supervisor;
use crate::daemon::{Manager, Shared};
use crate::uid_release;

/// Feeds `event` to `unit`'s machine, records the change on disk, tells the waiters, and
/// returns the actions to carry out (none for a unit that is gone).
pub(crate) fn feed(shared: &Shared, unit: &str, event: Event<'_>) -> Result<Vec<Action>, Refusal> {
    let mut m = shared.borrow_mut();
    let Some(u) = m.units.get_mut(unit) else {
        return Ok(Vec::new());
    };
    let before = u.lifecycle().record();
    let result = u.handle(event);
    let after = u.lifecycle().record();
    if after != before
        && let Err(e) = persistence::save(&m.paths, unit, &after)
    {
        tracing::warn!(unit = %berth_logging::Untrusted(unit), error = %e, "cannot record the unit's state");
    }
    m.notify();
    result
}

/// Feeds `event` and carries out every action, a spawn in the background.
pub(crate) fn dispatch(shared: &Shared, unit: &str, event: Event<'_>) {
    match feed(shared, unit, event) {
        Ok(actions) => {
            if carry_out(shared, unit, actions) {
                spawn_in_background(shared, unit);
            }
        }
        Err(refusal) => tracing::warn!(unit = %berth_logging::Untrusted(unit), %refusal, "refused"),
    }
}

fn spawn_in_background(shared: &Shared, unit: &str) {
    let (shared, unit) = (shared.clone(), unit.to_owned());
    tokio::task::spawn_local(async move {
        if let Err(e) = spawn_run(&shared, &unit).await {
            tracing::warn!(unit = %berth_logging::Untrusted(&unit), error = %e, "restart failed");
        }
    });
}

/// Carries out every action but `Spawn`; true when `Spawn` was among them (the caller runs
/// [`spawn_run`], so that a client's start gets the spawn's own error).
pub(crate) fn carry_out(shared: &Shared, unit: &str, actions: Vec<Action>) -> bool {
    let mut spawn = false;
    for action in actions {
        match action {
            Action::Spawn => spawn = true,
            Action::SendStop => {
                let timeout = shared
                    .borrow()
                    .units
                    .get(unit)
                    .map_or(MAX_STOP_TIMEOUT, |u| {
                        u.config.timeout_stop.min(MAX_STOP_TIMEOUT)
                    });
                let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                send(shared, unit, SupervisorRequest::Stop { timeout_ms });
            }
            Action::SendSignal { signal, whom } => {
                send(shared, unit, SupervisorRequest::Signal { signal, whom });
            }
            Action::SendReload => send(shared, unit, SupervisorRequest::Reload),
            Action::Release => send(shared, unit, SupervisorRequest::Release),
            Action::ScheduleRestart { delay, generation } => {
                let (shared, unit) = (shared.clone(), unit.to_owned());
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(delay).await;
                    dispatch(&shared, &unit, Event::RestartDue { generation });
                });
            }
        }
    }
    spawn
}

fn send(shared: &Shared, unit: &str, request: SupervisorRequest) {
    let m = shared.borrow();
    let link = m.units.get(unit).and_then(|u| u.link.as_ref());
    // Without a link the run is over: its end (or disappearance) reaches the machine anyway.
    if let Some(link) = link
        && link.send(request).is_err()
    {
        tracing::warn!(unit = %berth_logging::Untrusted(unit), "the supervisor link is closed");
    }
}

/// How long a new run waits for the previous one's supervisor to go (it binds the same
/// control socket).
const PREVIOUS_RUN_WAIT: Duration = Duration::from_secs(10);

/// Spawns the run the machine asked for: a uid, one Spawn with the whole program, then the
/// supervisor link. A failure is fed to the machine and returned.
pub(crate) async fn spawn_run(shared: &Shared, unit: &str) -> Result<(), ManagerError> {
    let result = try_spawn_run(shared, unit).await;
    if let Err(e) = &result {
        let released = shared
            .borrow_mut()
            .units
            .get_mut(unit)
            .and_then(|u| u.uid.take());
        if let Some(uid) = released {
            uid_release::release(shared, uid).await;
        }
        let reason = match e {
            ManagerError::StartFailed { reason, .. } => reason.clone(),
            e => e.to_string(),
        };
        dispatch(shared, unit, Event::SpawnFailed { reason });
    }
    result
}

async fn try_spawn_run(shared: &Shared, unit: &str) -> Result<(), ManagerError> {
    wait_until(shared, PREVIOUS_RUN_WAIT, |m| {
        m.units.get(unit).is_none_or(|u| u.link.is_none())
    })
    .await;
    let plan = plan(&shared.borrow(), unit)?;
    let start_failed = |reason: String| ManagerError::StartFailed {
        unit: unit.to_owned(),
        reason,
    };
    if plan.image_users.is_some() {
        // The image's own users: the attachment's block, kept across runs; no dynamic uid.
        let mut m = shared.borrow_mut();
        m.uid_blocks
            .allocate(&plan.image)
            .map_err(|e| start_failed(e.to_string()))?;
    } else {
        let uid = uid_release::allocate(shared, unit)
            .await
            .map_err(|e| start_failed(e.to_string()))?;
        match shared.borrow_mut().units.get_mut(unit) {
            Some(u) => u.uid = Some(uid),
            None => return Err(ManagerError::NoSuchUnit { unit: unit.into() }),
        }
    }
    let reply = spawn(shared, &plan).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(u) = shared.borrow_mut().units.get_mut(unit) {
        u.link = Some(tx);
    }
    let main_pid = u32::try_from(reply.main_pid).ok();
    dispatch(shared, unit, Event::Spawned { main_pid });
    let socket = shared.borrow().paths.supervisor_socket(unit);
    tokio::task::spawn_local(follow_supervisor(
        shared.clone(),
        unit.to_owned(),
        socket,
        rx,
    ));
    Ok(())
}

/// Waits until `done` holds for the manager's state; false when `timeout` passed first.
pub(crate) async fn wait_until(
    shared: &Shared,
    timeout: Duration,
    done: impl Fn(&Manager) -> bool,
) -> bool {
    let mut rx = shared.borrow().changed.subscribe();
    let wait = async {
        loop {
            if done(&shared.borrow()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.is_ok()
}
