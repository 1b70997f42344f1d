//! What a service's [`Resources`] become in cgroup files: the cgroup v2 interface files where
//! the unified hierarchy has the controller, else the v1 controller's, with a note for each
//! limit that has no place to go or changes meaning on the way (systemd's conversions).
//!
//! Pure: the caller says which hierarchy holds each controller ([`Layout`]) and writes the
//! result ([`Write`]) into the cgroups it created.

use berth_protocol::sandbox::Resources;

/// The CFS period berth uses for CPUQuota= (systemd's default, 100 ms).
pub(crate) const CPU_PERIOD_USEC: u64 = 100_000;
/// The smallest quota the kernel accepts per period (1 ms).
const MIN_QUOTA_PER_PERIOD_USEC: u64 = 1_000;

/// Where a controller lives for this service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Enabled for the service's cgroup on the unified hierarchy.
    V2,
    /// A v1 hierarchy of its own (a hybrid host).
    V1,
    /// Nowhere the helper can use.
    Missing,
}

/// Where each controller berth uses lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) memory: Place,
    pub(crate) pids: Place,
    pub(crate) cpu: Place,
    pub(crate) io: Place,
}

/// One interface file to write, in the hierarchy of `controller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    /// The controller (its v1 name: `memory`, `pids`, `cpu`, `blkio`; on v2 `io` is `blkio`'s).
    pub(crate) controller: &'static str,
    pub(crate) place: Place,
    pub(crate) file: &'static str,
    pub(crate) value: String,
}

/// The files that carry `resources` out under `layout`, and what fell back.
pub(crate) fn plan(resources: &Resources, layout: Layout) -> (Vec<Write>, Vec<String>) {
    let mut writes = Vec::new();
    let mut notes = Vec::new();
    let mut write = |controller, place, file, value: String| {
        writes.push(Write {
            controller,
            place,
            file,
            value,
        })
    };
    let missing = |directive: &str, controller: &str| {
        format!("{directive} is not applied: the host has no {controller} controller berth can use")
    };

    if let Some(max) = resources.memory_max {
        match layout.memory {
            Place::V2 => write("memory", Place::V2, "memory.max", max.to_string()),
            Place::V1 => write(
                "memory",
                Place::V1,
                "memory.limit_in_bytes",
                max.to_string(),
            ),
            Place::Missing => notes.push(missing("MemoryMax=", "memory")),
        }
    }
    if let Some(high) = resources.memory_high {
        match layout.memory {
            Place::V2 => write("memory", Place::V2, "memory.high", high.to_string()),
            Place::V1 => notes.push(
                "MemoryHigh= is not applied: cgroup v1's memory controller (this host's) has no \
                 throttling limit"
                    .to_owned(),
            ),
            Place::Missing => notes.push(missing("MemoryHigh=", "memory")),
        }
    }
    if let Some(tasks) = resources.tasks_max {
        match layout.pids {
            Place::V2 | Place::V1 => write("pids", layout.pids, "pids.max", tasks.to_string()),
            Place::Missing => notes.push(missing("TasksMax=", "pids")),
        }
    }
    if let Some(per_sec) = resources.cpu_quota_per_sec_usec {
        let quota = (per_sec * CPU_PERIOD_USEC / 1_000_000).max(MIN_QUOTA_PER_PERIOD_USEC);
        match layout.cpu {
            Place::V2 => write(
                "cpu",
                Place::V2,
                "cpu.max",
                format!("{quota} {CPU_PERIOD_USEC}"),
            ),
            Place::V1 => {
                write(
                    "cpu",
                    Place::V1,
                    "cpu.cfs_period_us",
                    CPU_PERIOD_USEC.to_string(),
                );
                write("cpu", Place::V1, "cpu.cfs_quota_us", quota.to_string());
            }
            Place::Missing => notes.push(missing("CPUQuota=", "cpu")),
        }
    }
    if let Some(weight) = resources.cpu_weight {
        match layout.cpu {
            Place::V2 => write("cpu", Place::V2, "cpu.weight", weight.to_string()),
            Place::V1 => {
                let shares = cpu_shares(weight);
                write("cpu", Place::V1, "cpu.shares", shares.to_string());
                notes.push(format!(
                    "CPUWeight={weight} is applied as cgroup v1 cpu.shares={shares}"
                ));
            }
            Place::Missing => notes.push(missing("CPUWeight=", "cpu")),
        }
    }
    if let Some(weight) = resources.io_weight {
        match layout.io {
            Place::V2 => write("blkio", Place::V2, "io.weight", format!("default {weight}")),
            Place::V1 => {
                let bfq = bfq_weight(weight);
                write("blkio", Place::V1, "blkio.bfq.weight", bfq.to_string());
                notes.push(format!(
                    "IOWeight={weight} is applied as cgroup v1 blkio.bfq.weight={bfq}, which \
                     holds only on devices using the bfq scheduler"
                ));
            }
            Place::Missing => notes.push(missing("IOWeight=", "io")),
        }
    }
    (writes, notes)
}

/// CPUWeight= (1..10000, default 100) as v1 cpu.shares (default 1024), as systemd converts.
fn cpu_shares(weight: u64) -> u64 {
    (weight * 1024 / 100).clamp(2, 262_144)
}

/// IOWeight= (1..10000, default 100) as bfq's weight (1..1000, default 100), as systemd
/// converts: linear on each side of the default.
fn bfq_weight(weight: u64) -> u64 {
    let weight = weight.clamp(1, 10_000);
    if weight <= 100 {
        weight
    } else {
        100 + (weight - 100) * 900 / 9_900
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: Layout = Layout {
        memory: Place::V2,
        pids: Place::V2,
        cpu: Place::V2,
        io: Place::V2,
    };
    const HYBRID: Layout = Layout {
        memory: Place::V1,
        pids: Place::V1,
        cpu: Place::V1,
        io: Place::V1,
    };

    fn all() -> Resources {
        Resources {
            memory_max: Some(64 << 20),
            memory_high: Some(48 << 20),
            tasks_max: Some(4915),
            cpu_quota_per_sec_usec: Some(500_000),
            cpu_weight: Some(50),
            io_weight: Some(1000),
        }
    }

    fn files(writes: &[Write]) -> Vec<(&str, &str)> {
        writes.iter().map(|w| (w.file, w.value.as_str())).collect()
    }

    #[test]
    fn on_cgroup_v2_every_limit_has_its_file_and_nothing_falls_back() {
        let (writes, notes) = plan(&all(), V2);

        assert_eq!(
            files(&writes),
            [
                ("memory.max", "67108864"),
                ("memory.high", "50331648"),
                ("pids.max", "4915"),
                ("cpu.max", "50000 100000"),
                ("cpu.weight", "50"),
                ("io.weight", "default 1000"),
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn on_a_hybrid_host_limits_go_to_the_v1_files_and_memory_high_is_reported() {
        let (writes, notes) = plan(&all(), HYBRID);

        assert_eq!(
            files(&writes),
            [
                ("memory.limit_in_bytes", "67108864"),
                ("pids.max", "4915"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("cpu.shares", "512"),
                ("blkio.bfq.weight", "181"),
            ]
        );
        assert!(
            notes[0].starts_with("MemoryHigh= is not applied"),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("cpu.shares=512")));
        assert!(notes.iter().any(|n| n.contains("bfq scheduler")));
    }

    #[test]
    fn a_missing_controller_says_which_directive_is_not_applied() {
        let layout = Layout {
            pids: Place::Missing,
            ..V2
        };
        let resources = Resources {
            tasks_max: Some(10),
            ..Resources::default()
        };

        let (writes, notes) = plan(&resources, layout);

        assert!(writes.is_empty());
        assert_eq!(
            notes,
            ["TasksMax= is not applied: the host has no pids controller berth can use"]
        );
    }

    #[test]
    fn no_limit_writes_nothing() {
        let (writes, notes) = plan(&Resources::default(), HYBRID);

        assert!(writes.is_empty() && notes.is_empty());
    }

    #[test]
    fn a_tiny_quota_is_raised_to_the_kernels_least() {
        let resources = Resources {
            cpu_quota_per_sec_usec: Some(1_000),
            ..Resources::default()
        };

        let (writes, _) = plan(&resources, V2);

        assert_eq!(files(&writes), [("cpu.max", "1000 100000")]);
    }

    #[test]
    fn weights_convert_as_systemd_does() {
        assert_eq!(cpu_shares(100), 1024);
        assert_eq!(cpu_shares(1), 10);
        assert_eq!(cpu_shares(10_000), 102_400);
        assert_eq!(bfq_weight(100), 100);
        assert_eq!(bfq_weight(1), 1);
        assert_eq!(bfq_weight(10_000), 1000);
    }
}
