//! Namespaces: pid, mount and cgroup ones are always new; these are the others.
//!
//! PrivateNetwork= is as asked (berthd's default is the host network). The IPC and UTS
//! namespaces are always the service's own: sharing the host's would be a relaxation no
//! profile needs.

use berth_protocol::sandbox::Namespaces;

use super::super::{Refusal, refuse};
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, ns: &mut Namespaces) -> Result<(), Refusal> {
    if !ns.private_ipc || !ns.private_uts {
        return Err(refuse(
            "sandbox.namespaces",
            "this berth-helper always gives a service its own IPC and UTS namespaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces(network: bool, ipc: bool, uts: bool) -> Namespaces {
        Namespaces {
            private_network: network,
            private_ipc: ipc,
            private_uts: uts,
        }
    }

    #[test]
    fn a_private_network_is_carried_out() {
        let mut ns = namespaces(true, true, true);

        check(&FloorPolicy::default(), &mut ns).unwrap();

        assert!(ns.private_network);
    }

    #[test]
    fn the_host_ipc_namespace_is_refused() {
        let refusal =
            check(&FloorPolicy::default(), &mut namespaces(false, false, true)).unwrap_err();

        assert_eq!(refusal.field, "sandbox.namespaces");
    }

    #[test]
    fn the_host_uts_namespace_is_refused() {
        let refusal =
            check(&FloorPolicy::default(), &mut namespaces(false, true, false)).unwrap_err();

        assert_eq!(refusal.field, "sandbox.namespaces");
    }
}
