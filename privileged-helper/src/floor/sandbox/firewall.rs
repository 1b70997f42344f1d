//! The per-service IP firewall: bounded lists of address prefixes the helper parses itself,
//! rewritten in their one canonical spelling (host bits cleared), and a cgroup2 hierarchy to
//! carry them out on (or the spawn is refused: a firewall asked for is never dropped).

use berth_protocol::ip_prefix::IpPrefix;
use berth_protocol::sandbox::{IpFirewall, MAX_ENTRIES};

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;
use crate::sandbox::cgroup;

/// Longest prefix text worth parsing (`ffff:...:ffff/128` has 43 bytes).
const MAX_PREFIX_BYTES: usize = 64;

pub(super) fn check(_policy: &FloorPolicy, firewall: &mut IpFirewall) -> Result<(), Refusal> {
    for (field, list) in [
        ("sandbox.firewall.allow", &mut firewall.allow),
        ("sandbox.firewall.deny", &mut firewall.deny),
    ] {
        bounded(field, list, MAX_ENTRIES)?;
        for entry in list.iter_mut() {
            if entry.len() > MAX_PREFIX_BYTES {
                return Err(refuse(
                    field,
                    format!("prefixes are at most {MAX_PREFIX_BYTES} bytes"),
                ));
            }
            let prefix = IpPrefix::parse(entry).map_err(|e| refuse(field, e.to_string()))?;
            *entry = prefix.to_string();
        }
    }
    if !firewall.deny.is_empty() && cgroup::hierarchy().is_none() {
        return Err(refuse(
            "sandbox.firewall",
            format!(
                "IPAddressDeny= needs a cgroup2 hierarchy, and none is mounted at {}",
                cgroup::HIERARCHIES.join(" or ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall(allow: &[&str], deny: &[&str]) -> IpFirewall {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        IpFirewall {
            allow: list(allow),
            deny: list(deny),
        }
    }

    #[test]
    fn prefixes_are_rewritten_canonically() {
        let mut fw = firewall(&["127.0.0.1", "10.1.2.3/8"], &["::/0"]);

        check(&FloorPolicy::default(), &mut fw).unwrap();

        assert_eq!(fw, firewall(&["127.0.0.1/32", "10.0.0.0/8"], &["::/0"]));
    }

    #[test]
    fn a_malformed_prefix_is_refused_by_its_list() {
        let mut fw = firewall(&[], &["10.0.0.0/8", "any"]);

        let refusal = check(&FloorPolicy::default(), &mut fw).unwrap_err();

        assert_eq!(refusal.field, "sandbox.firewall.deny");
        assert!(refusal.reason.contains("\"any\""), "{}", refusal.reason);
    }

    #[test]
    fn more_prefixes_than_the_bound_are_refused() {
        let many: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        let mut fw = IpFirewall {
            allow: many,
            deny: vec!["0.0.0.0/0".into()],
        };

        let refusal = check(&FloorPolicy::default(), &mut fw).unwrap_err();

        assert_eq!(refusal.field, "sandbox.firewall.allow");
    }

    #[test]
    fn an_overlong_entry_is_refused_before_parsing() {
        let mut fw = firewall(&[], &[&"1".repeat(10_000)]);

        let refusal = check(&FloorPolicy::default(), &mut fw).unwrap_err();

        assert!(refusal.reason.contains("at most"), "{}", refusal.reason);
    }
}
