//! The cgroup limits (`systemd.resource-control(5)`): MemoryMax=, MemoryHigh=, TasksMax=,
//! CPUQuota=, CPUWeight=, IOWeight=, each read into a number of [`Resources`] (percentages
//! resolved against this host, as systemd resolves them when it loads a unit) and laid over
//! the base only tightening it: a lower limit or weight wins, a higher one is ignored with a
//! warning.

use std::collections::BTreeMap;

use berth_protocol::sandbox::Resources;

use super::super::super::values::parse_size;
use super::{Layer, Refused, Source};

/// The weight the kernel and systemd give a cgroup that sets none.
const DEFAULT_WEIGHT: u64 = 100;

/// One cgroup limit of [`Resources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Limit {
    MemoryMax,
    MemoryHigh,
    TasksMax,
    CpuQuota,
    CpuWeight,
    IoWeight,
}

impl Limit {
    fn field(self, resources: &mut Resources) -> &mut Option<u64> {
        match self {
            Limit::MemoryMax => &mut resources.memory_max,
            Limit::MemoryHigh => &mut resources.memory_high,
            Limit::TasksMax => &mut resources.tasks_max,
            Limit::CpuQuota => &mut resources.cpu_quota_per_sec_usec,
            Limit::CpuWeight => &mut resources.cpu_weight,
            Limit::IoWeight => &mut resources.io_weight,
        }
    }

    /// What an unset field means, for comparing: no limit, or the default weight.
    fn effective(self, value: Option<u64>) -> u64 {
        match self {
            Limit::CpuWeight | Limit::IoWeight => value.unwrap_or(DEFAULT_WEIGHT),
            _ => value.unwrap_or(u64::MAX),
        }
    }
}

/// The host's totals that percentages are of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Host {
    pub(super) memory_bytes: u64,
    pub(super) tasks: u64,
}

impl Host {
    /// This host: its physical memory, and its task limit as systemd counts it (the lower of
    /// `kernel.pid_max` less one and `kernel.threads-max`).
    pub(super) fn current() -> Host {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        // SAFETY: sysconf reads a value and has no preconditions.
        let (pages, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let memory_bytes = u64::try_from(pages)
            .unwrap_or(0)
            .saturating_mul(u64::try_from(page_size).unwrap_or(0));
        let pid_max = read("/proc/sys/kernel/pid_max").map_or(u64::MAX, |p| p.saturating_sub(1));
        let threads = read("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
        Host {
            memory_bytes,
            tasks: pid_max.min(threads),
        }
    }
}

/// `N%` of `total` (N up to 100, as systemd allows), or `None` when `value` is no percentage.
fn percent_of(value: &str, total: u64) -> Option<Result<u64, ()>> {
    let number = value.strip_suffix('%')?;
    let Ok(percent) = number.trim().parse::<u64>() else {
        return Some(Err(()));
    };
    if percent > 100 {
        return Some(Err(()));
    }
    Some(Ok(u64::try_from(
        u128::from(total) * u128::from(percent) / 100,
    )
    .unwrap_or(u64::MAX)))
}

/// A value of a limit: `Some(None)` for infinity, `Some(Some(n))` a number, `None` invalid.
pub(super) fn parse(limit: Limit, value: &str, host: Host) -> Result<Option<u64>, Refused> {
    match limit {
        Limit::MemoryMax | Limit::MemoryHigh => {
            if value == "infinity" {
                return Ok(None);
            }
            match percent_of(value, host.memory_bytes) {
                Some(Ok(bytes)) => Ok(Some(bytes)),
                Some(Err(())) => Err(Refused::Invalid(MEMORY)),
                None => parse_size(value).map(Some).ok_or(Refused::Invalid(MEMORY)),
            }
        }
        Limit::TasksMax => {
            if value == "infinity" {
                return Ok(None);
            }
            match percent_of(value, host.tasks) {
                Some(Ok(tasks)) => Ok(Some(tasks.max(1))),
                Some(Err(())) => Err(Refused::Invalid(TASKS)),
                None => match value.parse::<u64>() {
                    Ok(tasks) if tasks > 0 => Ok(Some(tasks)),
                    _ => Err(Refused::Invalid(TASKS)),
                },
            }
        }
        Limit::CpuQuota => {
            let percent = value
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u64>().ok())
                .filter(|p| *p > 0 && *p <= 409_600)
                .ok_or(Refused::Invalid(
                    "a percentage above 0%, such as 20% or 200%",
                ))?;
            // 1% of one CPU is 10 ms of CPU time each second.
            Ok(Some(percent * 10_000))
        }
        Limit::CpuWeight | Limit::IoWeight => {
            if value == "idle" && limit == Limit::CpuWeight {
                return Err(Refused::Never(
                    "CPUWeight=idle is not supported; use a low weight such as 1",
                ));
            }
            match value.parse::<u64>() {
                Ok(weight) if (1..=10_000).contains(&weight) => Ok(Some(weight)),
                _ => Err(Refused::Invalid("a weight from 1 to 10000")),
            }
        }
    }
}

const MEMORY: &str = "a size in bytes (K, M, G, T suffixes), a percentage or infinity";
const TASKS: &str = "a positive number, a percentage or infinity";

impl Layer {
    /// Reads one limit's assignment; an empty one returns the limit to the base's.
    pub(super) fn resource(
        &mut self,
        limit: Limit,
        source: &Source,
        value: &str,
    ) -> Result<(), Refused> {
        if value.is_empty() {
            self.resources.remove(&limit);
            return Ok(());
        }
        let parsed = parse(limit, value, Host::current())?;
        self.resources.insert(limit, (parsed, source.clone()));
        Ok(())
    }
}

/// Lays the layer's limits over `out`: each only lowers the base's (unless `replace`); the
/// sources of those that would raise it are returned.
pub(super) fn merge(
    out: &mut Resources,
    limits: BTreeMap<Limit, (Option<u64>, Source)>,
    replace: bool,
) -> Vec<Source> {
    let mut loosening = Vec::new();
    for (limit, (value, source)) in limits {
        let field = limit.field(out);
        if replace || limit.effective(value) <= limit.effective(*field) {
            *field = value;
        } else {
            loosening.push(source);
        }
    }
    loosening
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Host = Host {
        memory_bytes: 8 << 30,
        tasks: 32_767,
    };

    fn ok(limit: Limit, value: &str) -> Option<u64> {
        match parse(limit, value, HOST) {
            Ok(v) => v,
            Err(_) => panic!("{value} refused"),
        }
    }

    #[test]
    fn memory_takes_sizes_percentages_and_infinity() {
        assert_eq!(ok(Limit::MemoryMax, "64M"), Some(64 << 20));
        assert_eq!(ok(Limit::MemoryHigh, "1G"), Some(1 << 30));
        assert_eq!(ok(Limit::MemoryMax, "50%"), Some(4 << 30));
        assert_eq!(ok(Limit::MemoryMax, "infinity"), None);
        assert!(parse(Limit::MemoryMax, "lots", HOST).is_err());
        assert!(parse(Limit::MemoryMax, "101%", HOST).is_err());
    }

    #[test]
    fn tasks_max_percentages_are_of_the_hosts_task_limit_as_systemd_counts_it() {
        assert_eq!(ok(Limit::TasksMax, "15%"), Some(4915));
        assert_eq!(ok(Limit::TasksMax, "512"), Some(512));
        assert_eq!(ok(Limit::TasksMax, "infinity"), None);
        assert!(parse(Limit::TasksMax, "0", HOST).is_err());
    }

    #[test]
    fn cpu_quota_is_a_percentage_of_one_cpu() {
        assert_eq!(ok(Limit::CpuQuota, "20%"), Some(200_000));
        assert_eq!(ok(Limit::CpuQuota, "200%"), Some(2_000_000));
        assert!(parse(Limit::CpuQuota, "20", HOST).is_err());
        assert!(parse(Limit::CpuQuota, "0%", HOST).is_err());
    }

    #[test]
    fn weights_are_from_1_to_10000() {
        assert_eq!(ok(Limit::CpuWeight, "1"), Some(1));
        assert_eq!(ok(Limit::IoWeight, "10000"), Some(10_000));
        assert!(parse(Limit::IoWeight, "0", HOST).is_err());
        assert!(parse(Limit::CpuWeight, "10001", HOST).is_err());
    }

    fn source() -> Source {
        Source {
            label: "u.service".into(),
            line: 3,
            key: "TasksMax".into(),
            value: "x".into(),
        }
    }

    #[test]
    fn a_lower_limit_tightens_and_a_higher_one_is_refused() {
        let mut out = Resources {
            tasks_max: Some(100),
            memory_max: Some(1 << 30),
            ..Resources::default()
        };
        let limits = BTreeMap::from([
            (Limit::TasksMax, (Some(50), source())),
            (Limit::MemoryMax, (None, source())),
        ]);

        let loosening = merge(&mut out, limits, false);

        assert_eq!(out.tasks_max, Some(50));
        assert_eq!(out.memory_max, Some(1 << 30), "infinity does not loosen");
        assert_eq!(loosening.len(), 1);
    }

    #[test]
    fn a_weight_above_the_default_is_a_loosening_and_below_it_a_tightening() {
        let mut out = Resources::default();

        let raised = merge(
            &mut out,
            BTreeMap::from([(Limit::CpuWeight, (Some(500), source()))]),
            false,
        );
        let lowered = merge(
            &mut out,
            BTreeMap::from([(Limit::IoWeight, (Some(10), source()))]),
            false,
        );

        assert_eq!(raised.len(), 1);
        assert!(lowered.is_empty());
        assert_eq!((out.cpu_weight, out.io_weight), (None, Some(10)));
    }

    #[test]
    fn a_trusted_profile_replaces() {
        let mut out = Resources {
            tasks_max: Some(100),
            ..Resources::default()
        };

        let loosening = merge(
            &mut out,
            BTreeMap::from([(Limit::TasksMax, (None, source()))]),
            true,
        );

        assert!(loosening.is_empty());
        assert_eq!(out.tasks_max, None);
    }
}
