//! Capabilities: only those helper.toml's `allowed_capabilities` lists (none by default), by
//! their kernel names; ambient ones must be in the bounding set. In block mode (the service in
//! a user namespace of its own, on its block of host ids) also the fixed set of
//! [`NAMESPACE_CAPABILITIES`]: there they act only on what the block owns, so the admin need
//! not allow them. Outside block mode they are capabilities of the host's namespace and need
//! helper.toml as before.

use berth_protocol::sandbox::{Capabilities, MAX_ENTRIES, NAMESPACE_CAPABILITIES};

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;
use crate::sandbox::capabilities::capability_named;

/// `block_mode`: the spec runs the service in its own user namespace (`identity.user_block`).
pub(super) fn check(
    policy: &FloorPolicy,
    caps: &mut Capabilities,
    block_mode: bool,
) -> Result<(), Refusal> {
    let allowed = |name: &String| {
        policy.allowed_capabilities.contains(name)
            || (block_mode && NAMESPACE_CAPABILITIES.contains(&name.as_str()))
    };
    for (field, names) in [
        ("sandbox.capabilities.bounding", &mut caps.bounding),
        ("sandbox.capabilities.ambient", &mut caps.ambient),
    ] {
        bounded(field, names, MAX_ENTRIES)?;
        for name in names.iter() {
            if capability_named(name).is_none() {
                return Err(refuse(field, format!("{name:?} is not a capability")));
            }
            if !allowed(name) {
                let confined = if block_mode {
                    " nor confined to the service's user namespace"
                } else {
                    ""
                };
                return Err(refuse(
                    field,
                    format!("{name} is not in helper.toml's allowed_capabilities{confined}"),
                ));
            }
        }
        names.sort_unstable();
        names.dedup();
    }
    if let Some(outside) = caps.ambient.iter().find(|c| !caps.bounding.contains(c)) {
        return Err(refuse(
            "sandbox.capabilities.ambient",
            format!("{outside} is not in the bounding set"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(bounding: &[&str], ambient: &[&str]) -> Capabilities {
        Capabilities {
            bounding: bounding.iter().map(|s| s.to_string()).collect(),
            ambient: ambient.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn allowing(names: &[&str]) -> FloorPolicy {
        FloorPolicy {
            allowed_capabilities: names.iter().map(|s| s.to_string()).collect(),
            ..FloorPolicy::default()
        }
    }

    #[test]
    fn by_default_no_capability_is_allowed() {
        let refusal = check(
            &FloorPolicy::default(),
            &mut caps(&["CAP_NET_BIND_SERVICE"], &[]),
            false,
        )
        .unwrap_err();

        assert_eq!(refusal.field, "sandbox.capabilities.bounding");
        assert!(refusal.reason.contains("allowed_capabilities"), "{refusal}");
    }

    #[test]
    fn an_allowed_capability_may_be_ambient() {
        let mut asked = caps(&["CAP_NET_BIND_SERVICE"], &["CAP_NET_BIND_SERVICE"]);

        check(&allowing(&["CAP_NET_BIND_SERVICE"]), &mut asked, false).unwrap();

        assert_eq!(
            asked,
            caps(&["CAP_NET_BIND_SERVICE"], &["CAP_NET_BIND_SERVICE"])
        );
    }

    #[test]
    fn a_capability_the_policy_does_not_list_is_refused_as_ambient_too() {
        let refusal = check(
            &allowing(&["CAP_NET_BIND_SERVICE"]),
            &mut caps(&["CAP_NET_BIND_SERVICE"], &["CAP_SYS_ADMIN"]),
            false,
        )
        .unwrap_err();

        assert_eq!(refusal.field, "sandbox.capabilities.ambient");
    }

    #[test]
    fn an_ambient_capability_outside_the_bounding_set_is_refused() {
        let refusal = check(
            &allowing(&["CAP_NET_BIND_SERVICE"]),
            &mut caps(&[], &["CAP_NET_BIND_SERVICE"]),
            false,
        )
        .unwrap_err();

        assert_eq!(refusal.field, "sandbox.capabilities.ambient");
        assert!(refusal.reason.contains("bounding set"), "{refusal}");
    }

    #[test]
    fn an_unknown_name_is_refused_even_if_listed() {
        let refusal = check(
            &allowing(&["cap_chown"]),
            &mut caps(&["cap_chown"], &[]),
            true,
        )
        .unwrap_err();

        assert!(refusal.reason.contains("is not a capability"), "{refusal}");
    }

    #[test]
    fn repeated_names_are_kept_once() {
        let mut asked = caps(&["CAP_KILL", "CAP_CHOWN", "CAP_KILL"], &[]);

        check(&allowing(&["CAP_KILL", "CAP_CHOWN"]), &mut asked, false).unwrap();

        assert_eq!(asked.bounding, ["CAP_CHOWN", "CAP_KILL"]);
    }

    #[test]
    fn in_block_mode_the_namespace_confined_set_needs_no_allowance() {
        let all: Vec<&str> = NAMESPACE_CAPABILITIES.to_vec();
        let mut asked = caps(&all, &["CAP_NET_BIND_SERVICE"]);

        check(&FloorPolicy::default(), &mut asked, true).unwrap();

        assert_eq!(asked.bounding.len(), NAMESPACE_CAPABILITIES.len());
        assert_eq!(asked.ambient, ["CAP_NET_BIND_SERVICE"]);
    }

    #[test]
    fn outside_block_mode_the_namespace_confined_set_is_refused_as_before() {
        for name in NAMESPACE_CAPABILITIES {
            let refusal =
                check(&FloorPolicy::default(), &mut caps(&[name], &[]), false).unwrap_err();

            assert!(refusal.reason.contains("allowed_capabilities"), "{refusal}");
        }
    }

    #[test]
    fn in_block_mode_a_capability_beyond_the_set_still_needs_helper_toml() {
        for name in [
            "CAP_SYS_ADMIN",
            "CAP_NET_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_NET_RAW",
        ] {
            let refusal =
                check(&FloorPolicy::default(), &mut caps(&[name], &[]), true).unwrap_err();

            assert_eq!(refusal.field, "sandbox.capabilities.bounding");
            assert!(refusal.reason.contains(name), "{refusal}");
        }
        check(
            &allowing(&["CAP_NET_RAW"]),
            &mut caps(&["CAP_NET_RAW"], &[]),
            true,
        )
        .unwrap();
    }
}
