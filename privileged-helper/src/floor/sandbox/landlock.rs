//! Landlock scopes.

use berth_protocol::sandbox::Landlock;

use super::super::Refusal;
use super::not_supported;
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, landlock: &mut Landlock) -> Result<(), Refusal> {
    if landlock.scope_abstract_unix_sockets || landlock.scope_signals {
        return Err(not_supported("sandbox.landlock", "Landlock scoping"));
    }
    Ok(())
}
