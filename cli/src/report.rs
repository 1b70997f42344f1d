//! The messages a user reads when something fails: the `berth: ...` line on stderr, and a
//! client error turned into it.

use std::io::Write;

use anyhow::anyhow;
use berth_protocol::manager::ManagerError;
use berth_varlink::client::{ClientError, remote_error_of};

use crate::escape::escape;
use crate::remote_error::describe;

/// The one-line `berth: ...` message on stderr, escaped: errors name units, images and reasons
/// that come from images.
pub fn report(error: &anyhow::Error) {
    let line = format!("{error:#}");
    // Nothing better to do when stderr is gone too.
    let _ = writeln!(std::io::stderr(), "berth: {}", escape(&line));
}

pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Turns a client error into the one line a user should read; a typed error stays one, so
/// callers can tell a missing unit apart ([`is_no_such_unit`]).
pub(crate) fn explain(error: ClientError) -> anyhow::Error {
    if let Some(remote) = remote_error_of(&error) {
        if let Some(typed) = remote.typed::<ManagerError>() {
            return anyhow::Error::new(typed);
        }
        return anyhow!("{}", describe(&remote));
    }
    anyhow!("{error}")
}

pub(crate) fn is_no_such_unit(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<ManagerError>(),
        Some(ManagerError::NoSuchUnit { .. })
    )
}
