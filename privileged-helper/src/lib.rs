//! berth-helper, the root half of berth.
//!
//! It does only what needs root: build sandboxes (namespaces, mounts, credentials), spawn and
//! supervise services. It trusts nothing it is sent: every request passes the floor policy in
//! [`floor`] before anything happens.

pub mod args;
pub mod config;
pub mod floor;
pub mod image_mount;
pub mod launch_spec;
pub mod lifeline;
pub mod manager_access;
pub mod sandbox;
pub mod sanitize;
pub mod server;
pub mod socket_dir;
pub mod supervisor;
pub mod uid_release;
pub mod var_state;

#[cfg(test)]
mod test_support {
    /// The single-threaded runtime the helper itself runs on.
    #[allow(clippy::unwrap_used)]
    pub(crate) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}
