//! Capabilities: only those helper.toml's `allowed_capabilities` lists (none by default), by
//! their kernel names; ambient ones must be in the bounding set.

use berth_protocol::sandbox::{Capabilities, MAX_ENTRIES};

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;
use crate::sandbox::capabilities::capability_named;

pub(super) fn check(policy: &FloorPolicy, caps: &mut Capabilities) -> Result<(), Refusal> {
    for (field, names) in [
        ("sandbox.capabilities.bounding", &mut caps.bounding),
        ("sandbox.capabilities.ambient", &mut caps.ambient),
    ] {
        bounded(field, names, MAX_ENTRIES)?;
        for name in names.iter() {
            if capability_named(name).is_none() {
                return Err(refuse(field, format!("{name:?} is not a capability")));
            }
            if !policy.allowed_capabilities.contains(name) {
                return Err(refuse(
                    field,
                    format!("{name} is not in helper.toml's allowed_capabilities"),
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
        )
        .unwrap_err();

        assert_eq!(refusal.field, "sandbox.capabilities.bounding");
        assert!(refusal.reason.contains("allowed_capabilities"), "{refusal}");
    }

    #[test]
    fn an_allowed_capability_may_be_ambient() {
        let mut asked = caps(&["CAP_NET_BIND_SERVICE"], &["CAP_NET_BIND_SERVICE"]);

        check(&allowing(&["CAP_NET_BIND_SERVICE"]), &mut asked).unwrap();

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
        )
        .unwrap_err();

        assert_eq!(refusal.field, "sandbox.capabilities.ambient");
    }

    #[test]
    fn an_ambient_capability_outside_the_bounding_set_is_refused() {
        let refusal = check(
            &allowing(&["CAP_NET_BIND_SERVICE"]),
            &mut caps(&[], &["CAP_NET_BIND_SERVICE"]),
        )
        .unwrap_err();

        assert_eq!(refusal.field, "sandbox.capabilities.ambient");
        assert!(refusal.reason.contains("bounding set"), "{refusal}");
    }

    #[test]
    fn an_unknown_name_is_refused_even_if_listed() {
        let refusal = check(&allowing(&["cap_chown"]), &mut caps(&["cap_chown"], &[])).unwrap_err();

        assert!(refusal.reason.contains("is not a capability"), "{refusal}");
    }

    #[test]
    fn repeated_names_are_kept_once() {
        let mut asked = caps(&["CAP_KILL", "CAP_CHOWN", "CAP_KILL"], &[]);

        check(&allowing(&["CAP_KILL", "CAP_CHOWN"]), &mut asked).unwrap();

        assert_eq!(asked.bounding, ["CAP_CHOWN", "CAP_KILL"]);
    }
}
