//! A running service's accounting (CPU time, memory now and at its peak, tasks) and what of its
//! limits fell back, read by berthd itself from the world-readable files of the service's
//! cgroups (no helper or supervisor round trip per `status`).
//!
//! The service's cgroups are those `/proc/<main pid>/cgroup` names below a `berth/` directory
//! (berth-helper's layout, privileged-helper/src/sandbox/cgroup): on the unified hierarchy
//! and, on a hybrid host, in v1 hierarchies. A controller the service is in on v2 is read
//! there, else from its v1 hierarchy; the notes say which limits went to v1 files, changed
//! meaning on the way, or had nowhere to go (the helper writes the same files).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use berth_protocol::sandbox::Resources;

/// The unified hierarchy's mount points, in the order the helper looks.
const UNIFIED: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// The directory that holds the services' cgroups in each hierarchy.
const SERVICES_DIR: &str = "/berth/";

/// What the service's cgroups say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usec: Option<u64>,
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    pub tasks: Option<u64>,
    pub notes: Vec<String>,
}

/// Where the hierarchies are mounted (read once: mounts of cgroupfs do not move).
#[derive(Debug, Default)]
struct Mounts {
    unified: Option<String>,
    /// A v1 hierarchy's controllers as `/proc/PID/cgroup` lists them → its mount point.
    v1: BTreeMap<String, String>,
}

fn mounts() -> &'static Mounts {
    static MOUNTS: OnceLock<Mounts> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        parse_mounts(&text)
    })
}

fn parse_mounts(mountinfo: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let options = right.nth(1).unwrap_or("");
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        // Only mounts of a hierarchy's root, where paths of /proc/PID/cgroup start.
        if left.split(' ').nth(3) != Some("/") {
            continue;
        }
        match fstype {
            "cgroup2" if mounts.unified.is_none() && UNIFIED.contains(&point) => {
                mounts.unified = Some(point.to_owned());
            }
            "cgroup" => {
                // The kernel lists a hierarchy's controllers in /proc/PID/cgroup in its own
                // order, which is the order of the mount's options.
                let controllers: Vec<&str> = options
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .collect();
                if !controllers.is_empty() {
                    mounts
                        .v1
                        .entry(controllers.join(","))
                        .or_insert_with(|| point.to_owned());
                }
            }
            _ => {}
        }
    }
    mounts
}

/// The service's cgroup directories: the unified one and v1 ones by controller.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dirs {
    unified: Option<String>,
    v1: BTreeMap<&'static str, String>,
}

fn service_dirs(proc_cgroup: &str, mounts: &Mounts) -> Dirs {
    let mut dirs = Dirs::default();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !path.contains(SERVICES_DIR) || path.split('/').any(|c| c == "..") {
            continue;
        }
        if controllers.is_empty() {
            dirs.unified = mounts.unified.as_ref().map(|root| format!("{root}{path}"));
        } else if let Some(point) = mounts.v1.get(controllers) {
            for controller in ["memory", "pids", "cpu", "cpuacct", "blkio"] {
                if controllers.split(',').any(|c| c == controller) {
                    dirs.v1.insert(controller, format!("{point}{path}"));
                }
            }
        }
    }
    dirs
}

fn read_number(dir: &str, file: &str) -> Option<u64> {
    std::fs::read_to_string(format!("{dir}/{file}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn has(dir: Option<&String>, file: &str) -> bool {
    dir.is_some_and(|d| std::path::Path::new(&format!("{d}/{file}")).exists())
}

/// The accounting of the service whose main process is `main_pid`, and the notes on
/// `resources`; `None` when the process is gone or in no cgroup of berth's.
pub fn read(main_pid: u32, resources: &Resources) -> Option<Usage> {
    let text = std::fs::read_to_string(format!("/proc/{main_pid}/cgroup")).ok()?;
    let dirs = service_dirs(&text, mounts());
    if dirs.unified.is_none() && dirs.v1.is_empty() {
        return None;
    }
    let unified = dirs.unified.as_ref();
    let v1 = |controller: &str| dirs.v1.get(controller);
    let mut usage = Usage::default();
    if has(unified, "memory.current") {
        let dir = unified?;
        usage.memory_current = read_number(dir, "memory.current");
        usage.memory_peak = read_number(dir, "memory.peak");
    } else if let Some(dir) = v1("memory") {
        usage.memory_current = read_number(dir, "memory.usage_in_bytes");
        usage.memory_peak = read_number(dir, "memory.max_usage_in_bytes");
    }
    if has(unified, "pids.current") {
        usage.tasks = unified.and_then(|d| read_number(d, "pids.current"));
    } else if let Some(dir) = v1("pids") {
        usage.tasks = read_number(dir, "pids.current");
    }
    usage.cpu_usec = match unified {
        // cgroup v2 counts CPU time in every cgroup, controller or not.
        Some(dir) => std::fs::read_to_string(format!("{dir}/cpu.stat"))
            .ok()
            .and_then(|stat| {
                stat.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
            }),
        None => v1("cpuacct")
            .and_then(|d| read_number(d, "cpuacct.usage"))
            .map(|ns| ns / 1000),
    };
    usage.notes = notes(resources, &dirs);
    Some(usage)
}

/// What of `resources` fell back, given where the service's cgroups are.
fn notes(resources: &Resources, dirs: &Dirs) -> Vec<String> {
    let unified = dirs.unified.as_ref();
    let in_v1 = |controller: &str| dirs.v1.contains_key(controller);
    let mut notes = Vec::new();
    let missing = |directive: &str, controller: &str| {
        format!("{directive} is not applied: the host has no {controller} controller berth can use")
    };
    let memory_v2 = has(unified, "memory.max");
    if resources.memory_max.is_some() && !memory_v2 && !in_v1("memory") {
        notes.push(missing("MemoryMax=", "memory"));
    }
    if resources.memory_high.is_some() && !memory_v2 {
        if in_v1("memory") {
            notes.push(
                "MemoryHigh= is not applied: cgroup v1's memory controller (this host's) has no \
                 throttling limit"
                    .to_owned(),
            );
        } else {
            notes.push(missing("MemoryHigh=", "memory"));
        }
    }
    if resources.tasks_max.is_some() && !has(unified, "pids.max") && !in_v1("pids") {
        notes.push(missing("TasksMax=", "pids"));
    }
    let cpu_v2 = has(unified, "cpu.max");
    if resources.cpu_quota_per_sec_usec.is_some() && !cpu_v2 && !in_v1("cpu") {
        notes.push(missing("CPUQuota=", "cpu"));
    }
    if let Some(weight) = resources.cpu_weight.filter(|_| !cpu_v2) {
        if in_v1("cpu") {
            notes.push(format!(
                "CPUWeight={weight} is applied as cgroup v1 cpu.shares (1024 for weight 100)"
            ));
        } else {
            notes.push(missing("CPUWeight=", "cpu"));
        }
    }
    if let Some(weight) = resources.io_weight.filter(|_| !has(unified, "io.weight")) {
        if in_v1("blkio") {
            notes.push(format!(
                "IOWeight={weight} is applied as cgroup v1 blkio.bfq.weight, which holds only on \
                 devices using the bfq scheduler"
            ));
        } else {
            notes.push(missing("IOWeight=", "io"));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
38 30 0:34 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn a_hybrid_services_cgroups_are_found_in_each_hierarchy_below_berth() {
        let proc_cgroup = "\
8:pids:/berth/web.service-42
4:memory:/process_api/x/berth/web.service-42
2:cpuacct:/
1:cpu:/
0::/berth/web.service-42
";

        let dirs = service_dirs(proc_cgroup, &parse_mounts(MOUNTINFO));

        assert_eq!(
            dirs.unified.as_deref(),
            Some("/sys/fs/cgroup/unified/berth/web.service-42")
        );
        assert_eq!(
            dirs.v1.into_iter().collect::<Vec<_>>(),
            [
                (
                    "memory",
                    "/sys/fs/cgroup/memory/process_api/x/berth/web.service-42".to_owned()
                ),
                (
                    "pids",
                    "/sys/fs/cgroup/pids/berth/web.service-42".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_process_outside_berths_cgroups_has_none() {
        let dirs = service_dirs(
            "4:memory:/user.slice\n0::/user.slice\n",
            &parse_mounts(MOUNTINFO),
        );

        assert_eq!(dirs, Dirs::default());
    }

    #[test]
    fn on_v1_memory_high_and_the_weights_are_noted() {
        let dirs = Dirs {
            unified: None,
            v1: BTreeMap::from([
                ("memory", "/nonexistent/m".to_owned()),
                ("cpu", "/nonexistent/c".to_owned()),
            ]),
        };
        let resources = Resources {
            memory_max: Some(1),
            memory_high: Some(1),
            cpu_weight: Some(50),
            io_weight: Some(50),
            ..Resources::default()
        };

        let notes = notes(&resources, &dirs);

        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("MemoryHigh= is not applied"));
        assert!(notes[1].contains("cpu.shares"));
        assert!(notes[2].starts_with("IOWeight= is not applied"));
    }
}
