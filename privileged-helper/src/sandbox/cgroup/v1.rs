//! The cgroup v1 hierarchies of a hybrid host (v1 controllers beside a unified hierarchy that
//! has none of them, as systemd's "hybrid" mode and many container hosts set it up).
//!
//! A service gets a cgroup in each v1 hierarchy that holds a controller berth uses and the
//! unified hierarchy lacks; init joins them all. Found from `/proc/self/mountinfo` (where each
//! hierarchy is mounted, and which controllers it carries) and `/proc/self/cgroup` (where this
//! process is in it).

use std::collections::BTreeMap;

/// The v1 controllers berth uses: limits (memory, pids, cpu, blkio) and accounting (cpuacct).
pub(crate) const CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "blkio"];

/// One mounted v1 hierarchy holding controllers berth uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// The controllers mounted together there (`cpu`, `cpuacct` on one mount, say), only those
    /// of [`CONTROLLERS`].
    pub(crate) controllers: Vec<&'static str>,
    /// The directory of this process's cgroup in it (mount point plus the cgroup's path).
    pub(crate) own: String,
}

/// The v1 hierarchies this process is in, from the texts of `/proc/self/mountinfo` and
/// `/proc/self/cgroup`. A hierarchy mounted from below its root (a cgroup namespace's view)
/// whose path this process cannot be placed in is left out.
pub(crate) fn hierarchies(mountinfo: &str, cgroup: &str) -> Vec<Hierarchy> {
    // Controllers (as the kernel lists them, comma-separated) → this process's path.
    let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
    for line in cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !controllers.is_empty() {
            paths.insert(controllers, path);
        }
    }
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS`.
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let super_options = right.nth(1).unwrap_or("");
        let mut left = left.split(' ');
        let (Some(root), Some(mount_point)) = (left.nth(3), left.next()) else {
            continue;
        };
        let controllers: Vec<&'static str> = CONTROLLERS
            .into_iter()
            .filter(|c| super_options.split(',').any(|o| o == *c))
            .collect();
        if controllers.is_empty() || mount_point.contains('\\') {
            continue;
        }
        let Some(path) = paths.iter().find_map(|(names, path)| {
            let names: Vec<&str> = names.split(',').collect();
            controllers
                .iter()
                .all(|c| names.contains(c))
                .then_some(*path)
        }) else {
            continue;
        };
        let Some(relative) = below(path, root) else {
            continue;
        };
        // The same hierarchy mounted twice (bind mounts): the first mount serves.
        if found.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        found.push(Hierarchy {
            controllers,
            own: format!("{mount_point}{relative}"),
        });
    }
    found
}

/// `path` relative to the mount's `root` (`""` when equal), or `None` when outside it or
/// climbing (`..`).
fn below<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return None;
    }
    let path = path.trim_end_matches('/');
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's layout: every v1 controller on a mount of its own, cgroup2 without them.
    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
35 30 0:31 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
36 30 0:32 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP: &str = "\
8:pids:/
7:blkio:/
5:devices:/
4:memory:/process_api/6ddf
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn each_v1_hierarchy_berth_uses_is_found_at_this_processs_cgroup() {
        let found = hierarchies(MOUNTINFO, CGROUP);

        let dirs: Vec<(Vec<&str>, &str)> = found
            .iter()
            .map(|h| (h.controllers.clone(), h.own.as_str()))
            .collect();
        assert_eq!(
            dirs,
            [
                (vec!["cpu"], "/sys/fs/cgroup/cpu"),
                (vec!["cpuacct"], "/sys/fs/cgroup/cpuacct"),
                (vec!["memory"], "/sys/fs/cgroup/memory/process_api/6ddf"),
                (vec!["blkio"], "/sys/fs/cgroup/blkio"),
                (vec!["pids"], "/sys/fs/cgroup/pids"),
            ]
        );
    }

    #[test]
    fn controllers_mounted_together_make_one_hierarchy() {
        let mountinfo =
            "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let cgroup = "3:cpu,cpuacct:/system.slice/berthd.service\n0::/\n";

        let found = hierarchies(mountinfo, cgroup);

        assert_eq!(
            found,
            [Hierarchy {
                controllers: vec!["cpu", "cpuacct"],
                own: "/sys/fs/cgroup/cpu,cpuacct/system.slice/berthd.service".into(),
            }]
        );
    }

    #[test]
    fn a_pure_cgroup2_host_has_none() {
        let mountinfo = "37 25 0:33 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";

        assert!(hierarchies(mountinfo, "0::/user.slice\n").is_empty());
    }

    #[test]
    fn a_mount_of_a_subtree_places_the_path_relative_to_it() {
        let mountinfo =
            "33 30 0:29 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

        let inside = hierarchies(mountinfo, "4:memory:/docker/abc/x\n");
        let outside = hierarchies(mountinfo, "4:memory:/other\n");
        let climbing = hierarchies(mountinfo, "4:memory:/docker/abc/../..\n");

        assert_eq!(inside[0].own, "/sys/fs/cgroup/memory/x");
        assert!(outside.is_empty() && climbing.is_empty());
    }
}
