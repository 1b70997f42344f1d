//! Starting the enabled units when berthd starts at boot, in the order of the boot transaction
//! ([`super::boot_order`]): each job starts once the jobs it is ordered after are done (a
//! simple service exec'd, a oneshot exited), jobs without an order between them at once.
//!
//! Only once per boot: a berthd that restarts (crashed, upgraded, its helper died) re-adopts
//! the services that kept running and leaves the others as they are, so a unit stopped on
//! purpose stays stopped. The boot is told by its id, recorded in `RUNTIME/boot-started` once
//! the transaction is done; the runtime directory (`/run/berth`) is emptied at every boot
//! anyway. A berthd killed before the end does the transaction again: what runs by then is
//! re-adopted, not started twice.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use berth_logging::Untrusted;
use tokio::sync::watch;

use super::boot_order::{self, Job};
use crate::atomic_write::write_atomic;
use crate::daemon::{Manager, Shared};
use crate::lifecycle;
use crate::unit::Dependencies;

/// How long the boot start waits for the services that kept running to be re-adopted.
const ADOPTION_WAIT: Duration = Duration::from_secs(30);

/// Starts the enabled units, unless they were started at this boot already.
pub async fn start_enabled(shared: Shared) {
    let marker = shared.borrow().paths.boot_marker();
    let boot = crate::image::identity::boot_id().unwrap_or("unknown");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == boot) {
        tracing::info!("enabled units were started at this boot already; not starting them again");
        return;
    }
    // A unit whose supervisor is being re-linked is not started a second time.
    lifecycle::wait_until(&shared, ADOPTION_WAIT, adoption_settled).await;
    let transaction = {
        let mut m = shared.borrow_mut();
        make_instances(&mut m);
        boot_order::transaction(&dependencies(&m), &enabled(&m))
    };
    for warning in &transaction.warnings {
        tracing::warn!(warning = %Untrusted(warning), "boot start");
    }
    tracing::info!(jobs = transaction.jobs.len(), "starting the enabled units");
    run(&shared, transaction.jobs).await;
    if let Err(e) = write_atomic(&marker, boot.as_bytes()) {
        tracing::warn!(error = %e, path = %marker.display(), "cannot record the boot start; a berthd restart will start the enabled units again");
    }
}

/// Every unit linked to a supervisor has said how it is.
fn adoption_settled(m: &Manager) -> bool {
    m.units.values().all(|u| u.link.is_none() || u.is_active())
}

/// Makes the instances of attached templates that the boot transaction may take in (enabled
/// ones, and those units name as dependencies), so that they are units like the others. One
/// that cannot be made stays out and is said.
fn make_instances(m: &mut Manager) {
    let mut tried = BTreeSet::new();
    loop {
        let wanted: Vec<String> = enabled(m)
            .into_iter()
            .chain(m.units.values().flat_map(|u| {
                let d = &u.config.dependencies;
                [&d.requires, &d.binds_to, &d.wants]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
            }))
            .filter(|u| super::template_of(u).is_some() && !m.units.contains_key(u))
            .filter(|u| !tried.contains(u))
            .collect();
        if wanted.is_empty() {
            return;
        }
        for unit in wanted {
            // Not an instance of an attached template: the transaction says so.
            if let Err(e) = m.instantiate(&unit)
                && !matches!(e, berth_protocol::manager::ManagerError::NoSuchUnit { .. })
            {
                tracing::warn!(unit = %Untrusted(&unit), error = %e, "cannot make the instance");
            }
            tried.insert(unit);
        }
    }
}

fn dependencies(m: &Manager) -> BTreeMap<String, Dependencies> {
    m.units
        .iter()
        .map(|(name, u)| (name.clone(), u.config.dependencies.clone()))
        .collect()
}

fn enabled(m: &Manager) -> Vec<String> {
    m.attachments
        .values()
        .flat_map(|a| a.enabled.iter().cloned())
        .collect()
}

/// Runs the jobs, each once those it is ordered after are done; then stops the units bound
/// (`BindsTo=`, unordered) to a unit that did not start.
async fn run(shared: &Shared, jobs: Vec<Job>) {
    // Finished jobs, by unit: whether the unit started.
    let (done, _) = watch::channel(BTreeMap::<String, bool>::new());
    let done = Rc::new(done);
    let tasks = jobs.into_iter().map(|job| {
        let (shared, done) = (shared.clone(), done.clone());
        async move {
            let mut rx = done.subscribe();
            let failed: Vec<String> = match rx
                .wait_for(|d| job.after.iter().all(|a| d.contains_key(a)))
                .await
            {
                Ok(d) => job
                    .requires_after
                    .iter()
                    .filter(|r| d.get(*r) == Some(&false))
                    .cloned()
                    .collect(),
                Err(_) => Vec::new(),
            };
            let started = run_job(&shared, &job, &failed).await;
            done.send_modify(|d| {
                d.insert(job.unit.clone(), started);
            });
            (job, started)
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let failed: BTreeSet<&str> = results
        .iter()
        .filter(|(_, started)| !started)
        .map(|(job, _)| job.unit.as_str())
        .collect();
    for (job, started) in &results {
        let Some(bound) = job.bound_to.iter().find(|b| failed.contains(b.as_str())) else {
            continue;
        };
        if *started {
            tracing::warn!(unit = %Untrusted(&job.unit), bound_to = %Untrusted(bound), "stopping: the unit it is bound to did not start (BindsTo=)");
            if let Err(e) = lifecycle::stop(shared.clone(), job.unit.clone()).await {
                tracing::warn!(unit = %Untrusted(&job.unit), error = %e, "cannot stop");
            }
        }
    }
}

/// One start job: fails without starting when a unit it requires is missing or did not
/// start (`failed`); true when the unit is up (running, or a oneshot that exited).
async fn run_job(shared: &Shared, job: &Job, failed: &[String]) -> bool {
    let unit = Untrusted(&job.unit);
    if !job.missing.is_empty() {
        tracing::warn!(%unit, missing = %Untrusted(&job.missing.join(" ")), "dependency failed: a unit it requires is not attached; not started");
        return false;
    }
    if !failed.is_empty() {
        tracing::warn!(%unit, failed = %Untrusted(&failed.join(" ")), "dependency failed: a unit it requires did not start; not started");
        return false;
    }
    tracing::info!(%unit, "starting enabled unit");
    match lifecycle::start(shared.clone(), job.unit.clone()).await {
        Ok(status) if status.state != "failed" => true,
        Ok(status) => {
            let failure = status.failure.unwrap_or_default();
            tracing::warn!(%unit, failure = %Untrusted(&failure), "enabled unit failed to start");
            false
        }
        Err(e) => {
            tracing::warn!(%unit, error = %e, "enabled unit failed to start");
            false
        }
    }
}
