//! Starting and stopping services: berthd asks berth-helper to spawn (helper_client), then
//! follows each run through the supervisor's control socket (supervisor_link).

pub mod accounting;
mod helper_client;
mod supervisor_link;

use std::time::Duration;

use berth_protocol::manager::{ManagerError, UnitStatus};
use berth_protocol::supervisor::SupervisorRequest;
use tokio::sync::mpsc;

use crate::daemon::{Manager, Shared};
use crate::uid_release;
use crate::unit::ServiceType;
use crate::unit_state::UnitState;

use helper_client::{Plan, plan, spawn};
pub use supervisor_link::{adopt_running, follow_supervisor};

/// Extra time berthd waits past TimeoutStopSec= for the supervisor's SIGKILL to land.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Longest TimeoutStopSec= honoured (`infinity` included): after it the sandbox is SIGKILLed.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Waits until `done` holds for the manager's state.
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

fn status_of(shared: &Shared, unit: &str) -> Result<UnitStatus, ManagerError> {
    let m = shared.borrow();
    let u = m.unit(unit)?;
    Ok(m.status(u))
}

/// Starts a unit. Simple/exec: returns once the main process has exec'd. Oneshot: returns once
/// every ExecStart= has exited (state `exited`, or `failed`).
pub async fn start(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    shared.borrow_mut().instantiate(&unit_arg)?;
    let plan = {
        let m = shared.borrow();
        let unit = m.unit(&unit_arg)?;
        if unit.state.is_active() {
            return Ok(m.status(unit));
        }
        plan(&m, &unit_arg)?
    };
    let uid = uid_release::allocate(&shared, &plan.unit)
        .await
        .map_err(|e| ManagerError::StartFailed {
            unit: plan.unit.clone(),
            reason: e.to_string(),
        })?;
    let plan = {
        let mut m = shared.borrow_mut();
        let unit = m.unit(&unit_arg)?;
        // Another start may have won while this one waited for a uid; this one was never used.
        if unit.state.is_active() {
            let status = m.status(unit);
            m.users.release(uid);
            return Ok(status);
        }
        let unit = m.unit_mut(&unit_arg)?;
        unit.uid = Some(uid);
        unit.exit = None;
        unit.failure = None;
        unit.main_pid = None;
        unit.stop_requested = false;
        unit.set_state(UnitState::Starting);
        m.notify();
        plan
    };
    let result = run_commands(&shared, &plan).await;
    if let Err(e) = &result {
        let released = {
            let mut m = shared.borrow_mut();
            let mut released = None;
            if let Ok(unit) = m.unit_mut(&plan.unit)
                && unit.link.is_none()
            {
                unit.failure = Some(e.to_string());
                unit.set_state(UnitState::Failed);
                released = unit.uid.take();
            }
            m.notify();
            released
        };
        if let Some(uid) = released {
            uid_release::release(&shared, uid).await;
        }
    }
    result?;
    status_of(&shared, &plan.unit)
}

async fn run_commands(shared: &Shared, plan: &Plan) -> Result<(), ManagerError> {
    for (index, (argv, ignore_failure)) in plan.commands.iter().enumerate() {
        // A previous run's supervisor must be gone before the next binds the same socket.
        let unit = plan.unit.clone();
        wait_until(shared, Duration::from_secs(10), |m| {
            m.units.get(&unit).is_none_or(|u| u.link.is_none())
        })
        .await;
        let reply = spawn(shared, plan, argv).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut m = shared.borrow_mut();
            let unit = m.unit_mut(&plan.unit)?;
            unit.main_pid = u32::try_from(reply.main_pid).ok();
            unit.link = Some(tx);
            if plan.service_type != ServiceType::Oneshot {
                unit.set_state(UnitState::Running);
            }
            m.notify();
        }
        let socket = shared.borrow().paths.supervisor_socket(&plan.unit);
        tokio::task::spawn_local(follow_supervisor(
            shared.clone(),
            plan.unit.clone(),
            socket,
            rx,
        ));
        if plan.service_type == ServiceType::Oneshot {
            let unit = plan.unit.clone();
            let last = index + 1 == plan.commands.len();
            // Done once the exit is recorded; the supervisor's release finishes in the background.
            wait_until(shared, Duration::MAX, |m| {
                m.units.get(&unit).is_none_or(|u| {
                    u.link.is_none()
                        || !matches!(u.state, UnitState::Starting | UnitState::Stopping)
                })
            })
            .await;
            let next = {
                let mut m = shared.borrow_mut();
                let unit = m.unit_mut(&plan.unit)?;
                if unit.state == UnitState::Failed && *ignore_failure && !unit.stop_requested {
                    // `-` prefix: this command's failure does not fail the unit.
                    unit.failure = None;
                    unit.set_state(UnitState::Exited);
                }
                if unit.state != UnitState::Exited {
                    return Ok(());
                }
                let next = (!last).then(|| {
                    // The exit released the uid; the next command gets one again.
                    unit.set_state(UnitState::Starting);
                    unit.name.clone()
                });
                m.notify();
                next
            };
            let Some(name) = next else {
                continue;
            };
            let uid = uid_release::allocate(shared, &name).await.map_err(|e| {
                ManagerError::StartFailed {
                    unit: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            let mut m = shared.borrow_mut();
            m.unit_mut(&name)?.uid = Some(uid);
            m.notify();
        }
    }
    Ok(())
}

/// Stops a unit: SIGTERM, then SIGKILL of the whole sandbox after TimeoutStopSec=.
pub async fn stop(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    let (name, timeout) = {
        let mut m = shared.borrow_mut();
        let unit = m.unit_mut(&unit_arg)?;
        let name = unit.name.clone();
        if !unit.state.is_active() {
            return Ok(m.status(m.unit(&name)?));
        }
        let timeout = unit.config.timeout_stop.min(MAX_STOP_TIMEOUT);
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        unit.stop_requested = true;
        unit.set_state(UnitState::Stopping);
        let Some(link) = &unit.link else {
            return Err(ManagerError::internal(format!(
                "{name} has no supervisor link"
            )));
        };
        link.send(SupervisorRequest::Stop { timeout_ms })
            .map_err(ManagerError::internal)?;
        m.notify();
        (name, timeout)
    };
    let wait = timeout.saturating_add(STOP_GRACE);
    let stopped = wait_until(&shared, wait, |m| {
        m.units.get(&name).is_none_or(|u| u.link.is_none())
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
