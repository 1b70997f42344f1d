//! Capabilities: none at all, so far.

use berth_protocol::sandbox::Capabilities;

use super::super::Refusal;
use super::not_supported;
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, caps: &mut Capabilities) -> Result<(), Refusal> {
    if !caps.bounding.is_empty() || !caps.ambient.is_empty() {
        return Err(not_supported(
            "sandbox.capabilities",
            "granting capabilities",
        ));
    }
    Ok(())
}
