//! The unified (cgroup2) hierarchy: where it is, this process's place in it, and which of the
//! controllers berth uses it can give the services' cgroups.

use std::io;
use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags};

use super::CgroupError;

/// Where a cgroup2 hierarchy is looked for, in order.
pub(crate) const HIERARCHIES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// statfs(2)'s f_type of cgroup2.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// The v2 controllers berth asks for (their v1 counterparts: memory, pids, cpu, blkio).
pub(crate) const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "io"];

/// The mount point of the cgroup2 hierarchy, if there is one.
pub(crate) fn hierarchy() -> Option<&'static str> {
    HIERARCHIES.into_iter().find(|path| {
        rustix::fs::statfs(*path).is_ok_and(|st| st.f_type as u64 == CGROUP2_SUPER_MAGIC)
    })
}

/// This process's cgroup on the cgroup2 hierarchy (the `0::` line of /proc/self/cgroup), from
/// that file's text.
pub(crate) fn own_cgroup(text: &str) -> Result<String, CgroupError> {
    let invalid = || CgroupError::ReadOwn(io::Error::from_raw_os_error(libc::EINVAL));
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(invalid)?;
    // A cgroup namespace can show `/..` paths outside its root: nothing to build on.
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(invalid());
    }
    Ok(path.trim_end_matches('/').to_owned())
}

/// Enables for the children of `services` (the `berth` directory, child of `own`) what it can
/// of [`CONTROLLERS`], and returns the controllers they get. `own` can pass a controller down
/// only while it holds no process itself, or is the root (cgroup v2's rule); what cannot be
/// enabled is simply not returned.
pub(crate) fn enable(own: impl AsFd, services: impl AsFd) -> Vec<&'static str> {
    let wanted = |dir: &dyn AsFd, file| -> Vec<&'static str> {
        let listed = read_small(dir, file).unwrap_or_default();
        CONTROLLERS
            .into_iter()
            .filter(|c| listed.split_whitespace().any(|l| l == *c))
            .collect()
    };
    let available = wanted(&services, c"cgroup.controllers");
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !available.contains(c))
        .collect();
    // What `own` has and could pass down to `services` (a no-op where it already does).
    let from_own: Vec<&str> = wanted(&own, c"cgroup.controllers")
        .into_iter()
        .filter(|c| missing.contains(c))
        .collect();
    for controller in from_own {
        let _ = write_small(&own, c"cgroup.subtree_control", &format!("+{controller}"));
    }
    let available = wanted(&services, c"cgroup.controllers");
    let enabled = wanted(&services, c"cgroup.subtree_control");
    for controller in available.iter().filter(|c| !enabled.contains(c)) {
        let _ = write_small(
            &services,
            c"cgroup.subtree_control",
            &format!("+{controller}"),
        );
    }
    wanted(&services, c"cgroup.subtree_control")
}

fn read_small(dir: &dyn AsFd, file: &std::ffi::CStr) -> io::Result<String> {
    let fd = rustix::fs::openat(
        dir.as_fd(),
        file,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut text = String::new();
    io::Read::read_to_string(
        &mut io::Read::take(std::fs::File::from(fd), 4096),
        &mut text,
    )?;
    Ok(text)
}

fn write_small(dir: &dyn AsFd, file: &std::ffi::CStr, value: &str) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir.as_fd(),
        file,
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    crate::sandbox::sys::write_all(fd, value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_cgroup_is_the_unified_line() {
        let own = own_cgroup("4:memory:/a\n0::/system.slice/berthd.service/\n").unwrap();

        assert_eq!(own, "/system.slice/berthd.service");
    }

    #[test]
    fn a_path_outside_the_namespace_is_refused() {
        assert!(own_cgroup("0::/../../x\n").is_err());
        assert!(own_cgroup("4:memory:/a\n").is_err());
    }
}
