//! Resource limits, the umask, the keyring and IPC clean-up.
//!
//! Limit*= may only lower limits: a hard limit above the helper's own (what root started it
//! with) is refused, so berthd cannot hand a service, say, real-time priorities or unlimited
//! locked memory that the host never gave berth.

use berth_protocol::sandbox::{MAX_ENTRIES, Rlimit, SandboxSpec};
use rustix::process::Resource;

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;
use crate::sandbox::rlimits::resource_named;

pub(super) fn check(_policy: &FloorPolicy, spec: &mut SandboxSpec) -> Result<(), Refusal> {
    check_rlimits(&spec.rlimits, |resource| {
        rustix::process::getrlimit(resource).maximum
    })?;
    if spec.umask > 0o777 {
        return Err(refuse("sandbox.umask", "must be at most 0777"));
    }
    // RemoveIPC= holds whatever the spec says: berthd releases every dynamic uid through
    // ReleaseUser when its run ends, which removes the uid's IPC objects (uid_release/ipc.rs).
    // `false` gets that too, the tighter outcome.
    spec.remove_ipc = true;
    Ok(())
}

/// Checks `limits` against `ceiling`, the hard limit of a resource (`None` = infinity).
fn check_rlimits(
    limits: &[Rlimit],
    ceiling: impl Fn(Resource) -> Option<u64>,
) -> Result<(), Refusal> {
    const FIELD: &str = "sandbox.rlimits";
    bounded(FIELD, limits, MAX_ENTRIES)?;
    let infinite = |limit: Option<u64>| limit.unwrap_or(u64::MAX);
    for (index, limit) in limits.iter().enumerate() {
        let name = &limit.resource;
        let Some(resource) = resource_named(name) else {
            return Err(refuse(FIELD, format!("{name:?} is not a Limit*= resource")));
        };
        if limits[..index].iter().any(|l| l.resource == *name) {
            return Err(refuse(FIELD, format!("Limit{name}= is given twice")));
        }
        if infinite(limit.soft) > infinite(limit.hard) {
            return Err(refuse(
                FIELD,
                format!("Limit{name}=: the soft limit is above the hard limit"),
            ));
        }
        let most = ceiling(resource);
        if infinite(limit.hard) > infinite(most) {
            let most = most.map_or("infinity".to_owned(), |m| m.to_string());
            return Err(refuse(
                FIELD,
                format!("Limit{name}= may not exceed berth-helper's own hard limit ({most})"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(resource: &str, soft: Option<u64>, hard: Option<u64>) -> Rlimit {
        Rlimit {
            resource: resource.into(),
            soft,
            hard,
        }
    }

    /// A helper started with 1024 open files at most, nothing else bounded.
    fn ceiling(resource: Resource) -> Option<u64> {
        (resource == Resource::Nofile).then_some(1024)
    }

    #[test]
    fn limits_within_the_helpers_own_pass() {
        check_rlimits(
            &[
                limit("NOFILE", Some(256), Some(1024)),
                limit("CORE", Some(0), None),
            ],
            ceiling,
        )
        .unwrap();
    }

    #[test]
    fn a_hard_limit_above_the_helpers_own_is_refused() {
        let refusal =
            check_rlimits(&[limit("NOFILE", Some(256), Some(1025))], ceiling).unwrap_err();

        assert_eq!(refusal.field, "sandbox.rlimits");
        assert!(
            refusal.reason.contains("own hard limit (1024)"),
            "{refusal}"
        );
    }

    #[test]
    fn an_infinite_hard_limit_above_a_finite_own_is_refused() {
        let refusal = check_rlimits(&[limit("NOFILE", None, None)], ceiling).unwrap_err();

        assert!(refusal.reason.contains("LimitNOFILE="), "{refusal}");
    }

    #[test]
    fn a_soft_limit_above_the_hard_one_is_refused() {
        let refusal = check_rlimits(&[limit("NOFILE", Some(512), Some(256))], ceiling).unwrap_err();

        assert!(refusal.reason.contains("soft limit is above"), "{refusal}");
    }

    #[test]
    fn an_unknown_resource_is_refused() {
        let refusal = check_rlimits(&[limit("nofile", None, Some(1))], ceiling).unwrap_err();

        assert!(
            refusal.reason.contains("not a Limit*= resource"),
            "{refusal}"
        );
    }

    #[test]
    fn a_resource_given_twice_is_refused() {
        let refusal = check_rlimits(
            &[
                limit("CORE", Some(0), Some(0)),
                limit("CORE", Some(0), Some(0)),
            ],
            ceiling,
        )
        .unwrap_err();

        assert!(refusal.reason.contains("given twice"), "{refusal}");
    }

    #[test]
    fn a_real_time_priority_the_helper_lacks_is_refused() {
        let refusal = check_rlimits(&[limit("RTPRIO", Some(99), Some(99))], |r| {
            (r == Resource::Rtprio).then_some(0)
        })
        .unwrap_err();

        assert!(refusal.reason.contains("LimitRTPRIO="), "{refusal}");
    }
}
