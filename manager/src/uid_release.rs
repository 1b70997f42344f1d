//! Handing dynamic uids out and taking them back (DESIGN.md §5, ISSUE 7 item 2).
//!
//! A uid whose run has ended is released through berth-helper (`io.berth.Helper.ReleaseUser`:
//! its System V IPC objects and POSIX message queues removed, its keyrings cleared) before it
//! is free again, so its next holder never finds what the previous one left. Until then the
//! uid stays taken ([`DynamicUsers::begin_release`]); one the helper could not clean stays
//! taken until berthd restarts. An allocation that finds every uid taken while one is being
//! released waits for it (a range of one uid, a quick restart).

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

/// Allocates a uid for `unit`, waiting up to [`ALLOCATE_WAIT`] when none is free but one is
/// being released.
pub async fn allocate(shared: &Shared, unit: &str) -> Result<u32, DynamicUserError> {
    let deadline = tokio::time::Instant::now() + ALLOCATE_WAIT;
    let mut changed = shared.borrow().changed.subscribe();
    loop {
        let error = {
            let mut m = shared.borrow_mut();
            match m.users.allocate(unit) {
                Ok(uid) => return Ok(uid),
                Err(e) if !m.users.is_releasing() => return Err(e),
                Err(e) => e,
            }
        };
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(error),
        }
    }
}

/// Releases `uid`, whose run has ended (every process of it gone), and frees it once
/// berth-helper has cleaned up after it.
pub async fn release(shared: &Shared, uid: u32) {
    shared.borrow_mut().users.begin_release(uid);
    let params = ReleaseUserParams {
        uid: i64::from(uid),
    };
    let mut attempt = 1;
    let outcome = loop {
        let result: Result<ReleaseUserReply, ClientError> =
            call_helper(shared, "io.berth.Helper.ReleaseUser", &params, Vec::new()).await;
        match result {
            Ok(reply) => break Ok(reply),
            Err(ClientError::Remote(e)) => {
                break Err(e
                    .typed::<HelperError>()
                    .map_or_else(|| e.to_string(), |h| h.to_string()));
            }
            Err(e) if attempt < RELEASE_ATTEMPTS => {
                tracing::debug!(uid, error = %e, "berth-helper unreachable, retrying the release");
                attempt += 1;
                tokio::time::sleep(RELEASE_RETRY).await;
            }
            Err(e) => break Err(format!("berth-helper unreachable: {e}")),
        }
    };
    let mut m = shared.borrow_mut();
    match outcome {
        Ok(reply) => {
            if reply.ipc_removed > 0 {
                tracing::info!(
                    uid,
                    ipc_removed = reply.ipc_removed,
                    "removed the IPC objects the uid left"
                );
            }
            m.users.release(uid);
        }
        Err(reason) => {
            tracing::error!(uid, %reason, "cannot release the uid; it stays out of use until berthd restarts");
            m.users.keep_out_of_use(uid);
        }
    }
    m.notify();
}
