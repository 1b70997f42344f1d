//! IPAddressAllow=/IPAddressDeny= (systemd.resource-control(5)): the value syntax, and what
//! "only tighten" means for the pair of lists.
//!
//! A value is a space-separated list of address prefixes (`10.0.0.0/8`, `::1`, a bare address
//! meaning itself) and the words `any`, `localhost`, `link-local` and `multicast`; an empty
//! value resets the list; a word that is none of these is ignored with a warning, the rest
//! of the value kept, as systemd does. A packet's remote address is allowed if it is in the
//! allow list, else dropped if it is in the deny list, else allowed.

use berth_protocol::ip_prefix::IpPrefix;
use berth_protocol::sandbox::{IpFirewall, MAX_ENTRIES};

use super::{Listed, Source};

/// What the words stand for, as systemd expands them.
const KEYWORDS: &[(&str, &[&str])] = &[
    ("any", &["0.0.0.0/0", "::/0"]),
    ("localhost", &["127.0.0.0/8", "::1/128"]),
    ("link-local", &["169.254.0.0/16", "fe80::/64"]),
    ("multicast", &["224.0.0.0/4", "ff00::/8"]),
];

/// The prefixes `value` lists, and the words that are neither a keyword nor a prefix.
pub(super) fn parse_list(value: &str) -> (Vec<IpPrefix>, Vec<String>) {
    let mut prefixes = Vec::new();
    let mut invalid = Vec::new();
    for word in value.split_whitespace() {
        if let Some((_, expansion)) = KEYWORDS.iter().find(|(k, _)| *k == word) {
            prefixes.extend(expansion.iter().filter_map(|p| IpPrefix::parse(p).ok()));
        } else {
            match IpPrefix::parse(word) {
                Ok(prefix) => prefixes.push(prefix),
                Err(_) => invalid.push(word.to_owned()),
            }
        }
    }
    (prefixes, invalid)
}

/// The two lists, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Lists {
    allow: Vec<IpPrefix>,
    deny: Vec<IpPrefix>,
}

impl Lists {
    fn of(spec: &IpFirewall) -> Lists {
        // The base was built by this code (or is the baseline): nothing to drop in practice.
        let parse = |l: &[String]| l.iter().filter_map(|s| IpPrefix::parse(s).ok()).collect();
        Lists {
            allow: parse(&spec.allow),
            deny: parse(&spec.deny),
        }
    }

    fn to_spec(&self) -> IpFirewall {
        let text = |l: &[IpPrefix]| l.iter().map(IpPrefix::to_string).collect();
        IpFirewall {
            allow: text(&self.allow),
            deny: text(&self.deny),
        }
    }

    /// Whether the address range `q` (no listed prefix strictly inside it) gets through.
    fn allows(&self, q: &IpPrefix) -> bool {
        self.allow.iter().any(|p| p.contains(q)) || !self.deny.iter().any(|p| p.contains(q))
    }

    /// Whether every address `self` lets through, `base` lets through too.
    fn no_looser_than(&self, base: &Lists) -> bool {
        let listed: Vec<IpPrefix> = [&self.allow, &self.deny, &base.allow, &base.deny]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|root| IpPrefix::parse(root).ok())
            .all(|root| self.no_looser_within(base, root, &listed))
    }

    /// [`Lists::no_looser_than`] within `q`, given the listed prefixes that overlap it: where
    /// none lies strictly inside `q`, both verdicts are the same for all of `q`; otherwise
    /// each half is judged on its own.
    fn no_looser_within(&self, base: &Lists, q: IpPrefix, listed: &[IpPrefix]) -> bool {
        let inside: Vec<IpPrefix> = listed
            .iter()
            .filter(|p| q.contains(p) && p.prefix_len() > q.prefix_len())
            .copied()
            .collect();
        match q.halves() {
            Some((low, high)) if !inside.is_empty() => {
                self.no_looser_within(base, low, &inside)
                    && self.no_looser_within(base, high, &inside)
            }
            _ => !self.allows(&q) || base.allows(&q),
        }
    }
}

/// `list` laid over `base` as systemd combines assignments: an empty one drops what came
/// before, the others append (once each).
fn combined(base: &[IpPrefix], list: &Listed<IpPrefix>) -> Vec<IpPrefix> {
    let mut out = if list.reset.is_some() {
        Vec::new()
    } else {
        base.to_vec()
    };
    for (prefix, _) in &list.items {
        if !out.contains(prefix) {
            out.push(*prefix);
        }
    }
    out
}

/// The assignment a warning about `list` names: its last one.
fn last_source(list: &Listed<IpPrefix>) -> Option<&Source> {
    list.items.last().map(|(_, s)| s).or(list.reset.as_ref())
}

/// Lays one layer's IPAddressAllow= and IPAddressDeny= over `firewall`. A trusted profile
/// (`replace`) sets them; any other layer only tightens: if the two together would let
/// through an address the base drops, the deny list's change alone is tried, then the
/// allow list's, and what still loosens is ignored with a warning.
pub(super) fn merge(
    firewall: &mut IpFirewall,
    allow: Listed<IpPrefix>,
    deny: Listed<IpPrefix>,
    replace: bool,
    warnings: &mut Vec<String>,
) {
    if !allow.touched() && !deny.touched() {
        return;
    }
    let base = Lists::of(firewall);
    let asked = Lists {
        allow: combined(&base.allow, &allow),
        deny: combined(&base.deny, &deny),
    };
    let too_long = [(&allow, &asked.allow), (&deny, &asked.deny)]
        .into_iter()
        .filter(|(_, merged)| merged.len() > MAX_ENTRIES)
        .filter_map(|(list, _)| last_source(list))
        .map(|source| {
            format!(
                "{} is ignored: more than {MAX_ENTRIES} address prefixes in all",
                source.at()
            )
        })
        .collect::<Vec<_>>();
    if !too_long.is_empty() {
        warnings.extend(too_long);
        return;
    }
    if replace {
        *firewall = asked.to_spec();
        return;
    }
    let deny_only = Lists {
        allow: base.allow.clone(),
        deny: asked.deny.clone(),
    };
    let allow_only = Lists {
        allow: asked.allow.clone(),
        deny: base.deny.clone(),
    };
    let (kept, ignored): (Lists, Vec<&Listed<IpPrefix>>) = if asked.no_looser_than(&base) {
        (asked, vec![])
    } else if deny_only.no_looser_than(&base) {
        (deny_only, vec![&allow])
    } else if allow_only.no_looser_than(&base) {
        (allow_only, vec![&deny])
    } else {
        (base, vec![&allow, &deny])
    };
    for source in ignored.into_iter().filter_map(last_source) {
        warnings.push(format!(
            "{} is ignored: it would let through addresses the sandbox it tightens drops",
            source.at()
        ));
    }
    *firewall = kept.to_spec();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Vec<IpPrefix> {
        list.iter().map(|s| IpPrefix::parse(s).unwrap()).collect()
    }

    fn lists(allow: &[&str], deny: &[&str]) -> Lists {
        Lists {
            allow: prefixes(allow),
            deny: prefixes(deny),
        }
    }

    #[test]
    fn keywords_expand_to_both_families() {
        let (list, invalid) = parse_list("any localhost link-local multicast");

        let text: Vec<String> = list.iter().map(IpPrefix::to_string).collect();
        assert_eq!(
            text,
            [
                "0.0.0.0/0",
                "::/0",
                "127.0.0.0/8",
                "::1/128",
                "169.254.0.0/16",
                "fe80::/64",
                "224.0.0.0/4",
                "ff00::/8"
            ]
        );
        assert!(invalid.is_empty());
    }

    #[test]
    fn a_bad_word_is_reported_and_the_rest_kept() {
        let (list, invalid) = parse_list("10.0.0.0/8  example.com 192.168.1.7 10.0.0.0/40");

        assert_eq!(list, prefixes(&["10.0.0.0/8", "192.168.1.7/32"]));
        assert_eq!(invalid, ["example.com", "10.0.0.0/40"]);
    }

    #[test]
    fn a_deny_list_tightens_no_firewall() {
        assert!(lists(&["127.0.0.1"], &["0.0.0.0/0"]).no_looser_than(&lists(&[], &[])));
    }

    #[test]
    fn allowing_more_under_deny_all_loosens() {
        let base = lists(&["127.0.0.0/8"], &["0.0.0.0/0", "::/0"]);

        assert!(
            !lists(&["127.0.0.0/8", "10.0.0.0/8"], &["0.0.0.0/0", "::/0"]).no_looser_than(&base)
        );
        assert!(lists(&["127.0.0.1"], &["0.0.0.0/0", "::/0"]).no_looser_than(&base));
    }

    #[test]
    fn an_allowed_range_inside_a_denied_one_of_the_base_loosens() {
        let base = lists(&[], &["10.0.0.0/8"]);

        assert!(!lists(&["10.1.0.0/16"], &["0.0.0.0/0"]).no_looser_than(&base));
        assert!(lists(&["11.0.0.0/8"], &["0.0.0.0/0"]).no_looser_than(&base));
    }

    #[test]
    fn dropping_a_deny_entry_loosens_and_adding_one_tightens() {
        let base = lists(&[], &["10.0.0.0/8", "fd00::/8"]);

        assert!(!lists(&[], &["10.0.0.0/8"]).no_looser_than(&base));
        assert!(lists(&[], &["10.0.0.0/8", "fd00::/8", "::/0"]).no_looser_than(&base));
    }

    #[test]
    fn the_same_policy_in_other_words_is_no_looser() {
        let base = lists(&[], &["10.0.0.0/8"]);

        assert!(lists(&[], &["10.0.0.0/9", "10.128.0.0/9"]).no_looser_than(&base));
        assert!(base.no_looser_than(&lists(&[], &["10.0.0.0/9", "10.128.0.0/9"])));
    }

    fn source(line: usize) -> Source {
        Source {
            label: "web.service".into(),
            line,
            key: "IPAddressAllow".into(),
            value: "10.0.0.0/8".into(),
        }
    }

    fn listed(items: &[&str], reset: bool) -> Listed<IpPrefix> {
        let mut list = Listed::default();
        if reset {
            list.reset(&source(1));
        }
        list.push_all(prefixes(items), &source(2));
        list
    }

    fn spec(allow: &[&str], deny: &[&str]) -> IpFirewall {
        lists(allow, deny).to_spec()
    }

    #[test]
    fn a_layer_appends_to_the_base_lists() {
        let mut fw = spec(&[], &["10.0.0.0/8"]);
        let mut warnings = Vec::new();

        merge(
            &mut fw,
            listed(&[], false),
            listed(&["::/0"], false),
            false,
            &mut warnings,
        );

        assert_eq!(fw, spec(&[], &["10.0.0.0/8", "::/0"]));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_allow_that_loosens_is_ignored_and_the_deny_kept() {
        let mut fw = spec(&["127.0.0.0/8"], &["0.0.0.0/0"]);
        let mut warnings = Vec::new();

        merge(
            &mut fw,
            listed(&["10.0.0.0/8"], false),
            listed(&["::/0"], false),
            false,
            &mut warnings,
        );

        assert_eq!(fw, spec(&["127.0.0.0/8"], &["0.0.0.0/0", "::/0"]));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("web.service:2: [Service] IPAddressAllow="),
            "{warnings:?}"
        );
    }

    #[test]
    fn resetting_the_deny_list_is_ignored() {
        let mut fw = spec(&[], &["0.0.0.0/0"]);
        let mut warnings = Vec::new();

        merge(
            &mut fw,
            listed(&[], false),
            listed(&[], true),
            false,
            &mut warnings,
        );

        assert_eq!(fw, spec(&[], &["0.0.0.0/0"]));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn resetting_the_allow_list_narrows_it() {
        let mut fw = spec(&["127.0.0.0/8"], &["0.0.0.0/0"]);
        let mut warnings = Vec::new();

        merge(
            &mut fw,
            listed(&["127.0.0.1"], true),
            listed(&[], false),
            false,
            &mut warnings,
        );

        assert_eq!(fw, spec(&["127.0.0.1/32"], &["0.0.0.0/0"]));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_trusted_profile_sets_the_lists() {
        let mut fw = spec(&[], &["0.0.0.0/0"]);
        let mut warnings = Vec::new();

        merge(
            &mut fw,
            listed(&[], false),
            listed(&[], true),
            true,
            &mut warnings,
        );

        assert_eq!(fw, spec(&[], &[]));
    }

    #[test]
    fn more_prefixes_than_the_bound_are_ignored() {
        let many: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut fw = spec(&[], &[]);
        let mut warnings = Vec::new();

        merge(
            &mut fw,
            listed(&[], false),
            listed(&many, false),
            false,
            &mut warnings,
        );

        assert_eq!(fw, spec(&[], &[]));
        assert_eq!(warnings.len(), 1);
    }

    /// The unit's `[Service]` lines, then a host drop-in's, through the directive table.
    fn through_table(unit: &str, drop_in: &str) -> (IpFirewall, Vec<String>) {
        let parse = |l: &str| crate::unit::syntax::parse(&format!("[Service]\n{l}")).unwrap();
        let (unit, drop_in) = (parse(unit), parse(drop_in));
        let (spec, warnings) = super::super::sandbox_from(
            "web.service",
            &berth_protocol::sandbox::SandboxSpec::baseline(0, 0, ""),
            &[
                ("web.service", &unit),
                ("web.service.d/10-host.conf", &drop_in),
            ],
        );
        (spec.firewall, warnings)
    }

    #[test]
    fn a_unit_allowing_localhost_and_denying_any_gets_that_firewall() {
        let (fw, warnings) = through_table("IPAddressAllow=localhost\nIPAddressDeny=any", "");

        assert_eq!(fw, spec(&["127.0.0.0/8", "::1"], &["0.0.0.0/0", "::/0"]));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_host_drop_in_cannot_widen_what_the_unit_allows() {
        let (fw, warnings) = through_table(
            "IPAddressAllow=localhost\nIPAddressDeny=any",
            "IPAddressAllow=10.0.0.0/8",
        );

        assert_eq!(fw, spec(&["127.0.0.0/8", "::1"], &["0.0.0.0/0", "::/0"]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("web.service.d/10-host.conf:2: [Service] IPAddressAllow="),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_host_drop_in_narrows_the_units_allow_list_after_a_reset() {
        let (fw, warnings) = through_table(
            "IPAddressAllow=localhost\nIPAddressDeny=any",
            "IPAddressAllow=\nIPAddressAllow=127.0.0.1",
        );

        assert_eq!(fw, spec(&["127.0.0.1"], &["0.0.0.0/0", "::/0"]));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_unknown_word_is_warned_about_and_the_rest_applies() {
        let (fw, warnings) = through_table("IPAddressDeny=10.0.0.0/8 intranet", "");

        assert_eq!(fw, spec(&[], &["10.0.0.0/8"]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("intranet"), "{warnings:?}");
    }
}
