//! Privileged-port grants (`SandboxSpec.privileged_ports`): only ports of helper.toml's
//! `grantable_ports`, and only in block mode, where the service's user namespace belongs to
//! the manager uid the supervisor becomes, which its port broker needs (pidfd_getfd) and which
//! keeps a grant from ever binding for a host user.

use berth_protocol::sandbox::{Identity, MAX_ENTRIES};

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;

const FIELD: &str = "sandbox.privileged_ports";

/// Checks the grants; returns them sorted, each once.
pub(super) fn check(
    policy: &FloorPolicy,
    ports: &mut Vec<u16>,
    identity: &Identity,
) -> Result<(), Refusal> {
    if ports.is_empty() {
        return Ok(());
    }
    bounded(FIELD, ports, MAX_ENTRIES)?;
    if identity.user_block.is_none() {
        return Err(refuse(
            FIELD,
            "ports are granted only to services running as the image's own users (a uid block)",
        ));
    }
    if let Some(port) = ports.iter().find(|p| !policy.grantable_ports.contains(p)) {
        return Err(refuse(
            FIELD,
            format!("port {port} is not in this berth-helper's grantable_ports"),
        ));
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(())
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::{SandboxSpec, UidBlock};

    use super::*;

    fn block_identity() -> Identity {
        let mut identity = SandboxSpec::baseline(524288 + 100, 524288 + 100, "www").identity;
        identity.user_block = Some(UidBlock::at(524288));
        identity
    }

    #[test]
    fn granted_ports_pass_sorted_and_once() {
        let mut ports = vec![443, 80, 443];

        check(&FloorPolicy::default(), &mut ports, &block_identity()).unwrap();

        assert_eq!(ports, [80, 443]);
    }

    #[test]
    fn a_port_outside_grantable_ports_is_refused() {
        let policy = FloorPolicy {
            grantable_ports: vec![80, 443],
            ..FloorPolicy::default()
        };
        let mut ports = vec![80, 22];

        let refusal = check(&policy, &mut ports, &block_identity()).unwrap_err();

        assert_eq!(refusal.field, FIELD);
        assert!(refusal.reason.contains("port 22"), "{}", refusal.reason);
    }

    #[test]
    fn ports_of_1024_and_above_are_not_grantable_by_default() {
        let mut ports = vec![1024];

        let refusal = check(&FloorPolicy::default(), &mut ports, &block_identity());

        assert!(refusal.is_err());
    }

    #[test]
    fn grants_without_a_uid_block_are_refused() {
        let identity = SandboxSpec::baseline(61200, 61200, "hello").identity;
        let mut ports = vec![80];

        let refusal = check(&FloorPolicy::default(), &mut ports, &identity).unwrap_err();

        assert!(refusal.reason.contains("uid block"), "{}", refusal.reason);
    }

    #[test]
    fn no_grants_need_nothing() {
        let identity = SandboxSpec::baseline(61200, 61200, "hello").identity;
        let mut ports = Vec::new();

        check(&FloorPolicy::default(), &mut ports, &identity).unwrap();
    }
}
