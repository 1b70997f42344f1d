//! Resource limits, the service's cgroup limits, the umask, the keyring and IPC clean-up.
//!
//! Limit*= may only lower limits: a hard limit above the helper's own (what root started it
//! with) is refused, so berthd cannot hand a service, say, real-time priorities or unlimited
//! locked memory that the host never gave berth. The cgroup limits are checked against what
//! the kernel takes, so a limit asked is a limit applied, never a failed write at start.

use berth_protocol::sandbox::{MAX_ENTRIES, Resources, Rlimit, SandboxSpec};
use rustix::process::Resource;

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;
use crate::sandbox::rlimits::resource_named;

pub(super) fn check(_policy: &FloorPolicy, spec: &mut SandboxSpec) -> Result<(), Refusal> {
    check_rlimits(&mut spec.rlimits, |resource| {
        rustix::process::getrlimit(resource).maximum
    })?;
    check_cgroup_limits(&mut spec.resources)?;
    if spec.umask > 0o777 {
        return Err(refuse("sandbox.umask", "must be at most 0777"));
    }
    // RemoveIPC= holds whatever the spec says: berthd releases every dynamic uid through
    // ReleaseUser when its run ends, which removes the uid's IPC objects (uid_release/ipc.rs).
    // `false` gets that too, the tighter outcome.
    spec.remove_ipc = true;
    Ok(())
}

/// Checks `limits` against `ceiling`, the hard limit of a resource (`None` = infinity): a
/// limit above it is lowered to it, soft and hard, as systemd does when it may not raise one
/// (`setrlimit_closest`): stock units ask for more than some hosts give (redis-server.service
/// has LimitNOFILE=65535), and a service gets the closest the host allows, never more.
fn check_rlimits(
    limits: &mut [Rlimit],
    ceiling: impl Fn(Resource) -> Option<u64>,
) -> Result<(), Refusal> {
    const FIELD: &str = "sandbox.rlimits";
    bounded(FIELD, limits, MAX_ENTRIES)?;
    let infinite = |limit: Option<u64>| limit.unwrap_or(u64::MAX);
    for index in 0..limits.len() {
        let (before, rest) = limits.split_at_mut(index);
        let Some(limit) = rest.first_mut() else {
            break;
        };
        let name = &limit.resource;
        let Some(resource) = resource_named(name) else {
            return Err(refuse(FIELD, format!("{name:?} is not a Limit*= resource")));
        };
        if before.iter().any(|l| l.resource == *name) {
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
            tracing::info!(
                limit = %name,
                asked = ?limit.hard,
                given = ?most,
                "Limit{name}= lowered to berth-helper's own hard limit"
            );
            limit.hard = most;
        }
        if infinite(limit.soft) > infinite(limit.hard) {
            limit.soft = limit.hard;
        }
    }
    Ok(())
}

/// The most tasks a pid limit can name (the kernel's PID_MAX_LIMIT; pids.max refuses more).
const PID_MAX_LIMIT: u64 = 4 * 1024 * 1024;
/// The most bytes a memory limit names (the kernel parses a signed 64-bit number).
const MAX_MEMORY_BYTES: u64 = i64::MAX as u64;
/// CPUQuota= bounds: 1% of one CPU (systemd's least) up to 4096 CPUs.
const MIN_CPU_QUOTA_PER_SEC_USEC: u64 = 10_000;
const MAX_CPU_QUOTA_PER_SEC_USEC: u64 = 4096 * 1_000_000;
/// CPUWeight= and IOWeight= range.
const WEIGHTS: std::ops::RangeInclusive<u64> = 1..=10_000;

/// Checks the cgroup limits: weights in range, a CPU quota the kernel takes, memory limits it
/// parses; a task limit above the kernel's own pid limit is lowered to it (the same limit).
fn check_cgroup_limits(resources: &mut Resources) -> Result<(), Refusal> {
    for (field, weight) in [
        ("sandbox.resources.cpu_weight", resources.cpu_weight),
        ("sandbox.resources.io_weight", resources.io_weight),
    ] {
        if weight.is_some_and(|w| !WEIGHTS.contains(&w)) {
            return Err(refuse(field, "must be from 1 to 10000"));
        }
    }
    if resources
        .cpu_quota_per_sec_usec
        .is_some_and(|q| !(MIN_CPU_QUOTA_PER_SEC_USEC..=MAX_CPU_QUOTA_PER_SEC_USEC).contains(&q))
    {
        return Err(refuse(
            "sandbox.resources.cpu_quota_per_sec_usec",
            "must be from 1% of one CPU (10000) to 4096 CPUs",
        ));
    }
    for (field, bytes) in [
        ("sandbox.resources.memory_max", resources.memory_max),
        ("sandbox.resources.memory_high", resources.memory_high),
    ] {
        if bytes.is_some_and(|b| b > MAX_MEMORY_BYTES) {
            return Err(refuse(field, "is above what the kernel can limit"));
        }
    }
    if let Some(tasks) = &mut resources.tasks_max {
        *tasks = (*tasks).min(PID_MAX_LIMIT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_in_range_pass_unchanged() {
        let mut resources = Resources {
            memory_max: Some(1 << 30),
            memory_high: Some(1 << 29),
            tasks_max: Some(4915),
            cpu_quota_per_sec_usec: Some(500_000),
            cpu_weight: Some(1),
            io_weight: Some(10_000),
        };
        let before = resources.clone();

        check_cgroup_limits(&mut resources).unwrap();

        assert_eq!(resources, before);
    }

    #[test]
    fn a_weight_out_of_range_is_refused_naming_it() {
        let mut resources = Resources {
            io_weight: Some(0),
            ..Resources::default()
        };

        let refusal = check_cgroup_limits(&mut resources).unwrap_err();

        assert_eq!(refusal.field, "sandbox.resources.io_weight");
    }

    #[test]
    fn a_cpu_quota_below_one_percent_is_refused() {
        let mut resources = Resources {
            cpu_quota_per_sec_usec: Some(9_999),
            ..Resources::default()
        };

        let refusal = check_cgroup_limits(&mut resources).unwrap_err();

        assert_eq!(refusal.field, "sandbox.resources.cpu_quota_per_sec_usec");
    }

    #[test]
    fn a_memory_limit_the_kernel_cannot_parse_is_refused() {
        let mut resources = Resources {
            memory_max: Some(u64::MAX),
            ..Resources::default()
        };

        assert!(check_cgroup_limits(&mut resources).is_err());
    }

    #[test]
    fn a_task_limit_above_the_kernels_is_lowered_to_it() {
        let mut resources = Resources {
            tasks_max: Some(u64::MAX),
            ..Resources::default()
        };

        check_cgroup_limits(&mut resources).unwrap();

        assert_eq!(resources.tasks_max, Some(PID_MAX_LIMIT));
    }

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
            &mut [
                limit("NOFILE", Some(256), Some(1024)),
                limit("CORE", Some(0), None),
            ],
            ceiling,
        )
        .unwrap();
    }

    #[test]
    fn a_hard_limit_above_the_helpers_own_is_lowered_to_it() {
        let mut limits = [limit("NOFILE", Some(256), Some(65535))];

        check_rlimits(&mut limits, ceiling).unwrap();

        assert_eq!(limits[0], limit("NOFILE", Some(256), Some(1024)));
    }

    #[test]
    fn an_infinite_limit_above_a_finite_own_is_lowered_to_it_soft_and_hard() {
        let mut limits = [limit("NOFILE", None, None)];

        check_rlimits(&mut limits, ceiling).unwrap();

        assert_eq!(limits[0], limit("NOFILE", Some(1024), Some(1024)));
    }

    #[test]
    fn a_soft_limit_above_the_hard_one_is_refused() {
        let refusal =
            check_rlimits(&mut [limit("NOFILE", Some(512), Some(256))], ceiling).unwrap_err();

        assert!(refusal.reason.contains("soft limit is above"), "{refusal}");
    }

    #[test]
    fn an_unknown_resource_is_refused() {
        let refusal = check_rlimits(&mut [limit("nofile", None, Some(1))], ceiling).unwrap_err();

        assert!(
            refusal.reason.contains("not a Limit*= resource"),
            "{refusal}"
        );
    }

    #[test]
    fn a_resource_given_twice_is_refused() {
        let refusal = check_rlimits(
            &mut [
                limit("CORE", Some(0), Some(0)),
                limit("CORE", Some(0), Some(0)),
            ],
            ceiling,
        )
        .unwrap_err();

        assert!(refusal.reason.contains("given twice"), "{refusal}");
    }

    #[test]
    fn a_real_time_priority_the_helper_lacks_is_not_given() {
        let mut limits = [limit("RTPRIO", Some(99), Some(99))];

        check_rlimits(&mut limits, |r| (r == Resource::Rtprio).then_some(0)).unwrap();

        assert_eq!(limits[0], limit("RTPRIO", Some(0), Some(0)));
    }
}
