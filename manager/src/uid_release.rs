//! Handing dynamic uids out and taking them back (DESIGN.md §5, ISSUE 7 item 2).
//!
//! A uid whose run has ended is released through berth-helper (`io.berth.Helper.ReleaseUser`:
//! its System V IPC objects and POSIX message queues removed, its keyrings cleared) before it
//! is free again, so its next holder never finds what the previous one left. Until then the
//! uid stays taken ([`DynamicUsers::begin_release`]); one the helper could not clean stays
//! taken until berthd restarts. An allocation whose uid is still being released waits for it
//! (a range of one uid, a quick restart).

use std::time::Duration;

use berth_protocol::helper::{HelperError, ReleaseUserParams, ReleaseUserReply};
use berth_varlink::client::ClientError;

use crate::daemon::Shared;
use crate::dynamic_user::DynamicUserError;
use crate::helper_connection::call_helper;

/// How long an allocation waits for a releasing uid.
const ALLOCATE_WAIT: Duration = Duration::from_secs(10);
/// Attempts at a release while berth-helper cannot be reached, and the pause between them.
const RELEASE_ATTEMPTS: u32 = 3;
const RELEASE_RETRY: Duration = Duration::from_millis(200);

/// Allocates a uid for `unit`, waiting up to [`ALLOCATE_WAIT`] when the one it would get is
/// being released (a quick restart gets the same uid, as it did before releases took time). A uid this berthd has not released itself yet (a run that ended while no
/// berthd was there to see it, or one that berthd kept out of use before it restarted) is
/// released first; one whose release fails stays out of use and another is tried.
pub async fn allocate(shared: &Shared, unit: &str) -> Result<u32, DynamicUserError> {
    let deadline = tokio::time::Instant::now() + ALLOCATE_WAIT;
    let mut changed = shared.borrow().changed.subscribe();
    loop {
        let allocated = {
            let mut m = shared.borrow_mut();
            match m.users.allocate(unit) {
                Ok(uid) => Ok((uid, m.users.was_released(uid))),
                Err(e @ DynamicUserError::Releasing { .. }) => Err(e),
                Err(e) => return Err(e),
            }
        };
        match allocated {
            Ok((uid, true)) => return Ok(uid),
            Ok((uid, false)) => match clean(shared, uid).await {
                Ok(()) => {
                    shared.borrow_mut().users.mark_released(uid);
                    return Ok(uid);
                }
                // The spawn will be refused the same way, with the floor's reason.
                Err(Unclean::Refused(_)) => return Ok(uid),
                Err(Unclean::Failed(reason)) => keep_out_of_use(shared, uid, &reason),
            },
            Err(error) => match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(error),
            },
        }
    }
}

/// Releases `uid`, whose run has ended (every process of it gone), and frees it once
/// berth-helper has cleaned up after it.
pub async fn release(shared: &Shared, uid: u32) {
    shared.borrow_mut().users.begin_release(uid);
    match clean(shared, uid).await {
        Ok(()) => {
            let mut m = shared.borrow_mut();
            m.users.mark_released(uid);
            m.users.release(uid);
            m.notify();
        }
        // No service ever runs as a uid the floor refuses: nothing of it to remove.
        Err(Unclean::Refused(reason)) => {
            tracing::warn!(uid, %reason, "berth-helper does not release this uid");
            let mut m = shared.borrow_mut();
            m.users.release(uid);
            m.notify();
        }
        Err(Unclean::Failed(reason)) => keep_out_of_use(shared, uid, &reason),
    }
}

/// Why a uid could not be released.
enum Unclean {
    /// The helper's floor refuses the uid (outside its range, a host user's): the helper runs
    /// no service as it either.
    Refused(String),
    /// The helper could not remove what the uid left, or could not be reached.
    Failed(String),
}

fn keep_out_of_use(shared: &Shared, uid: u32, reason: &str) {
    tracing::error!(uid, %reason, "cannot release the uid; it stays out of use until berthd restarts");
    let mut m = shared.borrow_mut();
    m.users.keep_out_of_use(uid);
    m.notify();
}

/// Asks berth-helper to remove what `uid` left (retrying while it cannot be reached).
async fn clean(shared: &Shared, uid: u32) -> Result<(), Unclean> {
    let params = ReleaseUserParams {
        uid: i64::from(uid),
    };
    let mut attempt = 1;
    loop {
        let result: Result<ReleaseUserReply, ClientError> =
            call_helper(shared, "io.berth.Helper.ReleaseUser", &params, Vec::new()).await;
        match result {
            Ok(reply) => {
                if reply.ipc_removed > 0 {
                    tracing::info!(
                        uid,
                        ipc_removed = reply.ipc_removed,
                        "removed the IPC objects the uid left"
                    );
                }
                return Ok(());
            }
            Err(ClientError::Remote(e)) => {
                return Err(match e.typed::<HelperError>() {
                    Some(refused @ HelperError::RequestRefused { .. }) => {
                        Unclean::Refused(refused.to_string())
                    }
                    Some(other) => Unclean::Failed(other.to_string()),
                    None => Unclean::Failed(e.to_string()),
                });
            }
            Err(e) if attempt < RELEASE_ATTEMPTS => {
                tracing::debug!(uid, error = %e, "berth-helper unreachable, retrying the release");
                attempt += 1;
                tokio::time::sleep(RELEASE_RETRY).await;
            }
            Err(e) => return Err(Unclean::Failed(format!("berth-helper unreachable: {e}"))),
        }
    }
}
