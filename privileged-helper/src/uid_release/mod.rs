//! `ReleaseUser`: what a dynamic uid leaves behind outside its own directories is removed
//! before berthd hands the uid out again, so its next holder never finds it (ISSUE 7 item 2,
//! research/sandbox-peers.md §4 case 20).
//!
//! Files need nothing here: a service writes only to its private /tmp, /dev/shm and /run
//! (tmpfs of its own mount namespace, gone with it) and to its own service directories, which
//! no other service is shown and which are re-owned to each new uid at start.

mod ipc;
mod keyring;

pub use ipc::{IpcError, Removed, remove_ipc};
pub use keyring::{KeyringError, clear_user_keyrings};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Ipc(#[from] IpcError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Removes the IPC objects of `uid` and clears its keyrings; returns what was removed.
pub fn release_user(uid: u32) -> Result<Removed, ReleaseError> {
    let removed = remove_ipc(uid)?;
    clear_user_keyrings(uid)?;
    Ok(removed)
}
