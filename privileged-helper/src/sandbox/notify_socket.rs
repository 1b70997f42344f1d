//! `$NOTIFY_SOCKET` inside the sandbox: init binds the supervisor's datagram socket at
//! [`PATH`] in the sandbox's own `/run` (`bound_socket.rs`), then closes its copy.

use std::os::fd::OwnedFd;

use rustix::io::Errno;

use super::{Failure, bound_socket};

/// Where the service finds the socket (its `$NOTIFY_SOCKET`).
pub(crate) const PATH: &str = "/run/berth/notify";

/// Binds `socket` at [`PATH`]; nothing to do without one. Init's cwd is the new root.
pub(crate) fn bind(socket: Option<OwnedFd>) -> Result<(), Failure> {
    let Some(socket) = socket else {
        return Ok(());
    };
    bound_socket::bind(&socket, c"/run", &[c"/run/berth"], PATH)
        .map_err(|e: Errno| Failure::setup(format!("bind the notify socket at {PATH}"), e))
}
