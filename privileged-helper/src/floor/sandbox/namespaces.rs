//! Namespaces: pid, mount and cgroup ones are always new; these are the others.

use berth_protocol::sandbox::Namespaces;

use super::super::{Refusal, refuse};
use super::not_supported;
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, ns: &mut Namespaces) -> Result<(), Refusal> {
    if ns.private_network {
        return Err(not_supported(
            "sandbox.namespaces.private_network",
            "PrivateNetwork=",
        ));
    }
    if !ns.private_ipc || !ns.private_uts {
        return Err(refuse(
            "sandbox.namespaces",
            "this berth-helper always gives a service its own IPC and UTS namespaces",
        ));
    }
    Ok(())
}
