//! The boot transaction, as systemd builds one (pure: names in, jobs out): the enabled units,
//! the attached units they pull in (`Requires=`, `BindsTo=`, `Wants=`), and the order their
//! start jobs run in (`After=`, `Before=`). Only attached units take part: an ordering on
//! another unit means nothing, a `Wants=` of one is dropped, and a `Requires=`/`BindsTo=` of
//! one fails the job that needs it (systemd: "Unit ... not found").
//!
//! Ordering cycles are broken as systemd breaks them: the job whose ordering closed the cycle
//! is deleted, with every job that requires it, and a warning says so.

use std::collections::{BTreeMap, BTreeSet};

use crate::unit::Dependencies;

/// One start job of the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    pub unit: String,
    /// Jobs this one waits for (`After=` of it, `Before=` of them), all in the transaction.
    pub after: Vec<String>,
    /// Of [`Self::after`], those it requires (`Requires=`, `BindsTo=`): when one fails, this
    /// job fails too ("dependency"), as systemd's does.
    pub requires_after: Vec<String>,
    /// Jobs it is bound to (`BindsTo=`) without waiting for them: this unit is stopped when
    /// one of them fails.
    pub bound_to: Vec<String>,
    /// Required units that are not attached: the job fails without starting.
    pub missing: Vec<String>,
}

/// The jobs, in an order that runs every job after the jobs it waits for, and what was said
/// about building them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction {
    pub jobs: Vec<Job>,
    pub warnings: Vec<String>,
}

/// Builds the boot transaction of `enabled` over the attached units `units` (with their
/// dependencies). Templates and units not attached are left out of it.
pub fn transaction(units: &BTreeMap<String, Dependencies>, enabled: &[String]) -> Transaction {
    let mut warnings = Vec::new();
    let attached = |u: &str| units.contains_key(u) && !super::is_template(u);
    // Pulled in: the closure of the enabled units over Requires=, BindsTo= and Wants=.
    let mut members: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = enabled.iter().filter(|u| attached(u)).cloned().collect();
    for u in enabled.iter().filter(|u| !attached(u)) {
        let why = if units.contains_key(u) {
            "a template (only its instances run)"
        } else {
            "not an attached unit"
        };
        warnings.push(format!("{u} is enabled but {why}; not started"));
    }
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(u) = queue.pop() {
        if !members.insert(u.clone()) {
            continue;
        }
        let deps = &units[&u];
        for d in deps.requires.iter().chain(&deps.binds_to) {
            if attached(d) {
                queue.push(d.clone());
            } else if !d.ends_with(".service") {
                // A target, socket, mount...: the host's init's, which berth neither starts
                // nor watches.
                warnings.push(format!(
                    "{u} requires {d}, which is not a service berth runs; not waited for"
                ));
            } else if !missing.get(&u).is_some_and(|m| m.contains(d)) {
                missing.entry(u.clone()).or_default().push(d.clone());
            }
        }
        queue.extend(deps.wants.iter().filter(|d| attached(d)).cloned());
    }
    // Ordering among members: `waits[u]` are the jobs u starts after.
    let mut waits: BTreeMap<String, BTreeSet<String>> = members
        .iter()
        .map(|u| (u.clone(), BTreeSet::new()))
        .collect();
    for u in &members {
        let deps = &units[u];
        for a in deps
            .after
            .iter()
            .filter(|a| members.contains(*a) && *a != u)
        {
            waits.entry(u.clone()).or_default().insert(a.clone());
        }
        for b in deps
            .before
            .iter()
            .filter(|b| members.contains(*b) && *b != u)
        {
            waits.entry(b.clone()).or_default().insert(u.clone());
        }
    }
    while let Some((cycle, from)) = find_cycle(&waits) {
        let deleted = delete_job(&from, &mut waits, units);
        warnings.push(format!(
            "ordering cycle {}; {} not started, to break it (as systemd deletes a job)",
            cycle.join(" after "),
            deleted.join(", ")
        ));
    }
    let jobs = topological(&waits)
        .into_iter()
        .map(|u| {
            let deps = &units[&u];
            let after: Vec<String> = waits[&u].iter().cloned().collect();
            let requires_after = after
                .iter()
                .filter(|a| deps.requires.contains(a) || deps.binds_to.contains(a))
                .cloned()
                .collect();
            let bound_to = deps
                .binds_to
                .iter()
                .filter(|b| waits.contains_key(*b) && !after.contains(b))
                .cloned()
                .collect();
            Job {
                missing: missing.remove(&u).unwrap_or_default(),
                unit: u,
                after,
                requires_after,
                bound_to,
            }
        })
        .collect();
    Transaction { jobs, warnings }
}

/// The first ordering cycle a depth-first walk (by name) meets: the units on it, starting and
/// ending with the unit it was entered by, and the unit whose ordering closed it.
fn find_cycle(waits: &BTreeMap<String, BTreeSet<String>>) -> Option<(Vec<String>, String)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        u: &str,
        waits: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<(Vec<String>, String)> {
        marks.insert(u.to_string(), Mark::Open);
        path.push(u.to_string());
        for next in waits.get(u).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some((cycle, u.to_string()));
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(found) = visit(next, waits, marks, path) {
                        return Some(found);
                    }
                }
            }
        }
        path.pop();
        marks.insert(u.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for u in waits.keys() {
        if !marks.contains_key(u)
            && let Some(found) = visit(u, waits, &mut marks, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

/// Deletes the job of `unit` and, in turn, every job that requires a deleted one; returns the
/// units whose jobs went, `unit` first.
fn delete_job(
    unit: &str,
    waits: &mut BTreeMap<String, BTreeSet<String>>,
    units: &BTreeMap<String, Dependencies>,
) -> Vec<String> {
    let mut deleted = Vec::new();
    let mut queue = vec![unit.to_string()];
    while let Some(u) = queue.pop() {
        if waits.remove(&u).is_none() {
            continue;
        }
        for w in waits.values_mut() {
            w.remove(&u);
        }
        queue.extend(
            waits
                .keys()
                .filter(|other| {
                    let deps = &units[*other];
                    deps.requires.contains(&u) || deps.binds_to.contains(&u)
                })
                .cloned(),
        );
        deleted.push(u);
    }
    deleted
}

/// Every unit after the units it waits for; among those free to go, by name (Kahn's order).
/// The graph has no cycle by now.
fn topological(waits: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut left: BTreeMap<&str, usize> =
        waits.iter().map(|(u, w)| (u.as_str(), w.len())).collect();
    let mut ready: BTreeSet<&str> = left
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(u, _)| *u)
        .collect();
    let mut order = Vec::new();
    while let Some(u) = ready.pop_first() {
        left.remove(u);
        order.push(u.to_string());
        for (other, w) in waits {
            if w.contains(u)
                && let Some(n) = left.get_mut(other.as_str())
            {
                *n -= 1;
                if *n == 0 {
                    ready.insert(other.as_str());
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &str) -> Vec<String> {
        names
            .split_whitespace()
            .map(|n| format!("{n}.service"))
            .collect()
    }

    /// Units from lines `NAME: KEY=a b; KEY=c` (KEY: after, before, requires, wants, binds).
    fn units(spec: &[&str]) -> BTreeMap<String, Dependencies> {
        spec.iter()
            .map(|line| {
                let (name, rest) = line.split_once(':').unwrap_or((line, ""));
                let mut deps = Dependencies::default();
                for part in rest.split(';').filter(|p| !p.trim().is_empty()) {
                    let (key, value) = part.trim().split_once('=').unwrap();
                    let field = match key {
                        "after" => &mut deps.after,
                        "before" => &mut deps.before,
                        "requires" => &mut deps.requires,
                        "wants" => &mut deps.wants,
                        "binds" => &mut deps.binds_to,
                        other => panic!("{other}"),
                    };
                    field.extend(list(value));
                }
                (format!("{}.service", name.trim()), deps)
            })
            .collect()
    }

    fn order(t: &Transaction) -> Vec<String> {
        t.jobs.iter().map(|j| j.unit.clone()).collect()
    }

    fn job<'a>(t: &'a Transaction, unit: &str) -> &'a Job {
        t.jobs
            .iter()
            .find(|j| j.unit == format!("{unit}.service"))
            .unwrap()
    }

    #[test]
    fn after_and_before_order_the_jobs() {
        let u = units(&["a: after=b", "b", "c: before=b"]);

        let t = transaction(&u, &list("a b c"));

        assert_eq!(order(&t), list("c b a"));
        assert_eq!(job(&t, "a").after, list("b"));
        assert_eq!(job(&t, "b").after, list("c"));
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn only_enabled_units_and_what_they_pull_in_start() {
        let u = units(&["a: requires=b; wants=c", "b: binds=d", "c", "d", "idle"]);

        let t = transaction(&u, &list("a"));

        assert_eq!(order(&t), list("a b c d"));
    }

    #[test]
    fn ordering_alone_pulls_nothing_in() {
        let u = units(&["a: after=b", "b"]);

        let t = transaction(&u, &list("a"));

        assert_eq!(order(&t), list("a"));
        assert!(job(&t, "a").after.is_empty());
    }

    #[test]
    fn a_required_unit_ordered_before_fails_its_dependent_with_it() {
        let u = units(&[
            "a: requires=b; after=b",
            "b",
            "c: requires=b",
            "d: binds=b; after=b",
        ]);

        let t = transaction(&u, &list("a c d"));

        assert_eq!(job(&t, "a").requires_after, list("b"));
        assert!(job(&t, "c").requires_after.is_empty());
        assert_eq!(job(&t, "d").requires_after, list("b"));
    }

    #[test]
    fn a_unit_bound_without_ordering_is_stopped_when_its_binding_fails() {
        let u = units(&["a: binds=b", "b"]);

        let t = transaction(&u, &list("a"));

        assert_eq!(job(&t, "a").bound_to, list("b"));
    }

    #[test]
    fn a_required_unit_not_attached_fails_the_job_and_a_wanted_one_is_dropped() {
        let u = units(&["a: requires=gone; wants=away; after=gone", "b: binds=lost"]);

        let t = transaction(&u, &list("a b"));

        assert_eq!(job(&t, "a").missing, list("gone"));
        assert_eq!(job(&t, "b").missing, list("lost"));
        assert!(job(&t, "a").after.is_empty());
        assert_eq!(order(&t), list("a b"));
    }

    #[test]
    fn an_ordering_cycle_deletes_the_job_that_closed_it_with_a_warning() {
        let u = units(&["a: after=b", "b: after=c", "c: after=a", "d: after=c"]);

        let t = transaction(&u, &list("a b c d"));

        // The walk enters at a: a waits b, b waits c, c waits a (closing it at c).
        assert_eq!(order(&t), list("b a d"));
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        let w = &t.warnings[0];
        assert!(
            w.contains("a.service after b.service after c.service after a.service"),
            "{w}"
        );
        assert!(w.contains("c.service not started"), "{w}");
    }

    #[test]
    fn a_job_deleted_for_a_cycle_takes_the_jobs_requiring_it_along() {
        let u = units(&["a: after=b", "b: after=a", "r: requires=b", "w: wants=b"]);

        let t = transaction(&u, &list("a b r w"));

        // The walk closes the cycle at b: b goes, r (which requires it) with it, w stays.
        assert_eq!(order(&t), list("a w"));
        assert!(
            t.warnings[0].contains("b.service, r.service not started"),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn a_required_unit_of_the_host_init_fails_nothing_and_is_said() {
        let mut u = units(&["a"]);
        u.get_mut("a.service")
            .unwrap()
            .requires
            .push("network-online.target".into());

        let t = transaction(&u, &list("a"));

        assert!(job(&t, "a").missing.is_empty());
        assert!(
            t.warnings[0].contains("network-online.target"),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn templates_and_unknown_enabled_units_are_left_out() {
        let u = units(&["t@", "a: wants=t@"]);

        let t = transaction(&u, &list("t@ a ghost"));

        assert_eq!(order(&t), list("a"));
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    }

    #[test]
    fn a_self_ordering_is_ignored() {
        let u = units(&["a: after=a; before=a"]);

        let t = transaction(&u, &list("a"));

        assert_eq!(order(&t), list("a"));
        assert!(t.warnings.is_empty());
    }
}
