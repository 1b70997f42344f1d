//! The per-service IP firewall.

use berth_protocol::sandbox::IpFirewall;

use super::super::Refusal;
use super::not_supported;
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, firewall: &mut IpFirewall) -> Result<(), Refusal> {
    if !firewall.allow.is_empty() || !firewall.deny.is_empty() {
        return Err(not_supported(
            "sandbox.firewall",
            "IPAddressAllow=/IPAddressDeny=",
        ));
    }
    Ok(())
}
