//! Host pids and sandbox pids of the service's processes, from the world-readable
//! `/proc/<pid>/status` (`NSpid:`) and `/proc/<pid>/stat`, so it works after the supervisor
//! gave up root.

use crate::sandbox::cgroup::ServiceCgroup;

/// Deepest ancestor chain walked to find init.
const MAX_DEPTH: usize = 64;

fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
}

fn nspids(pid: u32) -> Option<Vec<u32>> {
    let field = status_field(pid, "NSpid:")?;
    field.split_whitespace().map(|p| p.parse().ok()).collect()
}

/// Where the sandbox's pid sits in `NSpid:`: init's own depth (init is 1 there).
pub(super) fn sandbox_level(init_host: u32) -> Option<usize> {
    let pids = nspids(init_host)?;
    (pids.last() == Some(&1)).then(|| pids.len() - 1)
}

/// The pid of host process `host` in the sandbox.
pub(super) fn sandbox_pid(host: u32, level: usize) -> Option<u32> {
    nspids(host)?.get(level).copied()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` descends from init (so it lives in the sandbox's pid namespace).
fn below_init(pid: u32, init_host: u32) -> bool {
    let mut at = pid;
    for _ in 0..MAX_DEPTH {
        match parent(at) {
            Some(p) if p == init_host => return true,
            Some(p) if p > 1 => at = p,
            _ => return false,
        }
    }
    false
}

/// The host pid of the service's process whose pid in the sandbox is `ns`: looked up among
/// the cgroup's processes, else among init's descendants.
pub(super) fn host_pid(
    ns: u32,
    level: usize,
    init_host: u32,
    cgroup: Option<&ServiceCgroup>,
) -> Option<u32> {
    let candidates: Vec<u32> = match cgroup.map(ServiceCgroup::pids) {
        Some(Ok(pids)) => pids,
        _ => std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    };
    candidates
        .into_iter()
        .filter(|pid| *pid != init_host)
        .find(|pid| sandbox_pid(*pid, level) == Some(ns) && below_init(*pid, init_host))
}
