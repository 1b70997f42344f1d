//! The service's own cgroups (DESIGN.md §6), with its resource limits.
//!
//! The supervisor creates them before it forks init, attaches what must hold from the first
//! instruction (the IP firewall, the limits), and init joins them before it unshares its
//! cgroup namespace, so the service and everything it forks live in them and see them as `/`.
//! The supervisor itself stays outside (its own memory and sockets are not the service's, and
//! a limit or a kill of the cgroup must not reach it).
//!
//! Where: `<hierarchy><the supervisor's cgroup>/berth/<unit>-<supervisor pid>`, on the
//! unified hierarchy (`/sys/fs/cgroup` on a pure cgroup2 host, `/sys/fs/cgroup/unified` beside
//! v1 controllers) and, on a hybrid host, in each v1 hierarchy holding a controller berth needs
//! that the unified one lacks ([`v1`]). [`limits`] says which files the limits go to and what
//! falls back. The pid keeps services of the same name apart (several berth instances on one
//! host, or a successor started while a predecessor's cgroup is still being removed).
//!
//! Removal: the supervisor gives up root after launch, so it cannot remove the cgroups
//! (rmdir needs write access to root's `berth` directory); berth-helper removes every empty
//! cgroup whose supervisor is gone ([`remove_stale`]) when it starts, at each spawn and each
//! uid release, and when it stops.

pub(crate) mod limits;
pub(crate) mod v1;
pub(crate) mod v2;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use berth_protocol::sandbox::Resources;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use limits::{Layout, Place};

pub(crate) use v2::HIERARCHIES;

/// The directory under the supervisor's cgroup that holds the services' cgroups.
const SERVICES_DIR: &str = "berth";
/// A cgroup is busy for a moment after its last process exited; how long removal waits.
const REMOVE_ATTEMPTS: u32 = 100;
const REMOVE_PAUSE: Duration = Duration::from_millis(5);
/// Longest unit name part of a cgroup's name (NAME_MAX less the pid suffix).
const MAX_NAME_UNIT: usize = 240;
/// Rounds of SIGKILL to every pid where there is no `cgroup.kill` (processes forked meanwhile
/// escape one round, never all of them).
const KILL_ROUNDS: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("no cgroup hierarchy is mounted (cgroup2 at {} or v1 controllers)", HIERARCHIES.join(" or "))]
    NoHierarchy,
    #[error("read the supervisor's own cgroup from /proc/self")]
    ReadOwn(#[source] io::Error),
    #[error("create cgroup {path}")]
    Create {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("open cgroup {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("set {path} to {value}")]
    Limit {
        path: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("remove cgroup {path}")]
    Remove {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl CgroupError {
    pub(crate) fn os_error(self) -> io::Error {
        match self {
            CgroupError::NoHierarchy => io::Error::from_raw_os_error(libc::ENOENT),
            CgroupError::ReadOwn(source)
            | CgroupError::Create { source, .. }
            | CgroupError::Open { source, .. }
            | CgroupError::Limit { source, .. }
            | CgroupError::Remove { source, .. } => source,
        }
    }
}

/// The mount point of the cgroup2 hierarchy, if there is one.
pub(crate) fn hierarchy() -> Option<&'static str> {
    v2::hierarchy()
}

/// The cgroup's name for `unit` started by the supervisor `pid`.
pub(crate) fn name_for(unit: &str, pid: u32) -> String {
    // Unit names are ASCII (the floor checks), so a byte cut is a character cut.
    let unit = unit.get(..unit.len().min(MAX_NAME_UNIT)).unwrap_or(unit);
    format!("{unit}-{pid}")
}

/// One cgroup directory of the service, in one hierarchy.
#[derive(Debug)]
struct Node {
    /// `.../berth`, which holds it.
    parent: OwnedFd,
    name: CString,
    dir: OwnedFd,
    path: String,
}

impl Node {
    /// Makes `<parent_path>/<name>` (and `parent_path` if missing; `parent_path` must exist
    /// up to its own parent).
    fn create(parent_path: &str, name: &str) -> Result<Node, CgroupError> {
        let path = format!("{parent_path}/{name}");
        let create = |source: Errno| CgroupError::Create {
            path: path.clone(),
            source: source.into(),
        };
        match rustix::fs::mkdir(parent_path, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(create(e)),
        }
        let parent = open_dir(None, parent_path).map_err(|source| CgroupError::Open {
            path: parent_path.to_owned(),
            source,
        })?;
        let cname = CString::new(name).map_err(|_| create(Errno::INVAL))?;
        match rustix::fs::mkdirat(&parent, &cname, Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            // A crashed supervisor's, with our pid: empty (or rmdir fails and so do we).
            Err(Errno::EXIST) => {
                rustix::fs::unlinkat(&parent, &cname, AtFlags::REMOVEDIR).map_err(create)?;
                rustix::fs::mkdirat(&parent, &cname, Mode::from_raw_mode(0o755)).map_err(create)?;
            }
            Err(e) => return Err(create(e)),
        }
        let node = Node {
            dir: open_dir(Some(parent.as_fd()), &path).map_err(|source| CgroupError::Open {
                path: path.clone(),
                source,
            })?,
            parent,
            name: cname,
            path,
        };
        Ok(node)
    }

    fn open(&self, file: &CStr, flags: OFlags) -> Result<OwnedFd, CgroupError> {
        rustix::fs::openat(&self.dir, file, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            CgroupError::Open {
                path: format!("{}/{}", self.path, file.to_string_lossy()),
                source: e.into(),
            }
        })
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let limit = |source: io::Error| CgroupError::Limit {
            path: format!("{}/{file}", self.path),
            value: value.to_owned(),
            source,
        };
        let cfile = CString::new(file).map_err(|_| limit(Errno::INVAL.into()))?;
        let fd = rustix::fs::openat(
            &self.dir,
            &cfile,
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| limit(e.into()))?;
        super::sys::write_all(fd, value.as_bytes()).map_err(limit)
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let mut attempt = 0;
        loop {
            match rustix::fs::unlinkat(&self.parent, &self.name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => return Ok(()),
                Err(Errno::BUSY) if attempt < REMOVE_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(REMOVE_PAUSE);
                }
                Err(e) => {
                    return Err(CgroupError::Remove {
                        path: self.path.clone(),
                        source: e.into(),
                    });
                }
            }
        }
    }
}

/// One service's cgroups, created by [`ServiceCgroup::create`].
#[derive(Debug)]
pub(crate) struct ServiceCgroup {
    /// On the unified hierarchy (what BPF programs attach to), if the host has one.
    unified: Option<Node>,
    /// In the v1 hierarchies of a hybrid host, with the controllers each carries.
    v1: Vec<(Vec<&'static str>, Node)>,
    /// The unified cgroup's `cgroup.kill`, opened while the supervisor is still root.
    kill: Option<OwnedFd>,
}

impl ServiceCgroup {
    /// Creates the cgroups of `unit` for the calling supervisor (see the module's doc) with
    /// `resources` applied. A limit the host has no controller for is left out (berthd's
    /// status says so, see `manager/src/lifecycle/accounting.rs`); one it refuses is an error.
    pub(crate) fn create(unit: &str, resources: &Resources) -> Result<ServiceCgroup, CgroupError> {
        let name = name_for(unit, rustix::process::getpid().as_raw_pid() as u32);
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(CgroupError::ReadOwn)?;
        let mut cgroup = ServiceCgroup {
            unified: None,
            v1: Vec::new(),
            kill: None,
        };
        let mut on_v2: Vec<&str> = Vec::new();
        if let Some(root) = v2::hierarchy() {
            let own_dir = format!("{root}{}", v2::own_cgroup(&own)?);
            let node = Node::create(&format!("{own_dir}/{SERVICES_DIR}"), &name)?;
            if let Ok(own_fd) = open_dir(None, &own_dir) {
                on_v2 = v2::enable(own_fd, &node.parent);
            }
            // Absent on kernels before 5.14: the kill then goes pid by pid.
            cgroup.kill = node.open(c"cgroup.kill", OFlags::WRONLY).ok();
            cgroup.unified = Some(node);
        }
        let place = |v2_name: &str, v1_name: &str, hierarchies: &[v1::Hierarchy]| {
            if on_v2.contains(&v2_name) {
                Place::V2
            } else if hierarchies.iter().any(|h| h.controllers.contains(&v1_name)) {
                Place::V1
            } else {
                Place::Missing
            }
        };
        let hierarchies = if on_v2.len() == v2::CONTROLLERS.len() {
            Vec::new()
        } else {
            let mountinfo =
                std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::ReadOwn)?;
            v1::hierarchies(&mountinfo, &own)
        };
        let layout = Layout {
            memory: place("memory", "memory", &hierarchies),
            pids: place("pids", "pids", &hierarchies),
            cpu: place("cpu", "cpu", &hierarchies),
            io: place("io", "blkio", &hierarchies),
        };
        // v1 cgroups cost a mkdir each: memory and pids always (accounting, and memory in
        // the service's tmpfs charged to it), cpu and blkio for their limits, cpuacct only
        // where no unified cgroup counts CPU time.
        let needed = |controller: &str| match controller {
            "memory" => layout.memory == Place::V1,
            "pids" => layout.pids == Place::V1,
            "cpu" => {
                layout.cpu == Place::V1
                    && (resources.cpu_quota_per_sec_usec.is_some()
                        || resources.cpu_weight.is_some())
            }
            "blkio" => layout.io == Place::V1 && resources.io_weight.is_some(),
            "cpuacct" => cgroup.unified.is_none(),
            _ => false,
        };
        let mut v1_nodes = Vec::new();
        for h in hierarchies {
            if h.controllers.iter().any(|c| needed(c)) {
                let node = Node::create(&format!("{}/{SERVICES_DIR}", h.own), &name)?;
                v1_nodes.push((h.controllers, node));
            }
        }
        cgroup.v1 = v1_nodes;
        if cgroup.unified.is_none() && cgroup.v1.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let (writes, _notes) = limits::plan(resources, layout);
        for write in writes {
            let node = match write.place {
                Place::V2 => cgroup.unified.as_ref(),
                _ => cgroup
                    .v1
                    .iter()
                    .find(|(controllers, _)| controllers.contains(&write.controller))
                    .map(|(_, node)| node),
            };
            let Some(node) = node else { continue };
            match node.write(write.file, &write.value) {
                Ok(()) => {}
                // A weight file the kernel does not have (bfq not built in): a weight is
                // advisory anyway.
                Err(CgroupError::Limit { source, .. })
                    if write.file.ends_with("weight")
                        && source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cgroup)
    }

    /// The unified cgroup's directory (what BPF programs attach to), if there is one.
    pub(crate) fn dir(&self) -> Option<BorrowedFd<'_>> {
        self.unified.as_ref().map(|n| n.dir.as_fd())
    }

    fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.unified.iter().chain(self.v1.iter().map(|(_, n)| n))
    }

    #[cfg(test)]
    pub(crate) fn paths(&self) -> Vec<String> {
        self.nodes().map(|n| n.path.clone()).collect()
    }

    /// Every `cgroup.procs`, open for [`join`]ing (CLOEXEC: only the process given them joins).
    pub(crate) fn procs(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.nodes()
            .map(|n| n.open(c"cgroup.procs", OFlags::WRONLY))
            .collect()
    }

    /// The host pids of every process in the cgroup (read by descriptor, so it works after the
    /// supervisor gave up root: `cgroup.procs` is readable by all).
    pub(crate) fn pids(&self) -> io::Result<Vec<u32>> {
        let node = self
            .nodes()
            .next()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let fd = node
            .open(c"cgroup.procs", OFlags::RDONLY)
            .map_err(CgroupError::os_error)?;
        let text = io::read_to_string(std::fs::File::from(fd))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Sends `signal` to every process in the cgroup; returns how many it reached. Processes
    /// forked meanwhile may escape one round; callers that must end everything use
    /// [`Self::kill_all`] (or end the pid namespace, which the kernel then empties).
    pub(crate) fn signal_all(&self, signal: i32) -> io::Result<usize> {
        let mut reached = 0;
        for pid in self.pids()? {
            let Ok(pid) = libc::pid_t::try_from(pid) else {
                continue;
            };
            if super::sys::kill(pid, signal).is_ok() {
                reached += 1;
            }
        }
        Ok(reached)
    }

    /// SIGKILLs every process of the service, init or not, and those they fork meanwhile:
    /// `cgroup.kill` where the kernel has it (one write, nothing escapes), else rounds of
    /// SIGKILL to every pid until none is left. Works without root (the file was opened
    /// before the supervisor gave it up; kill(2) needs only CAP_KILL).
    pub(crate) fn kill_all(&self) -> io::Result<()> {
        if let Some(kill) = &self.kill {
            return super::sys::write_all(kill, b"1");
        }
        for _ in 0..KILL_ROUNDS {
            if self.signal_all(libc::SIGKILL)? == 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Removes the cgroups, waiting briefly for the last processes to leave them (as root;
    /// after the supervisor gave root up, berth-helper does it, see [`remove_stale`]).
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        let mut first = Ok(());
        for node in self.nodes() {
            if let Err(e) = node.remove()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        // Without root (after launch) this fails at once and the helper removes them; a
        // cgroup still busy past the wait stays behind for it too.
        let _ = self.remove();
    }
}

/// Removes the cgroups under every `berth/` whose supervisor is gone (it gave up root, or was
/// killed before it could remove its own); the helper does this when it starts, at each spawn
/// and uid release, and when it stops. A cgroup that still holds a process is never removed
/// (the kernel refuses), nor one whose supervisor lives. Returns how many went.
pub fn remove_stale() -> usize {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return 0;
    };
    let mut parents = Vec::new();
    if let (Some(root), Ok(path)) = (v2::hierarchy(), v2::own_cgroup(&own)) {
        parents.push(format!("{root}{path}/{SERVICES_DIR}"));
    }
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        parents.extend(
            v1::hierarchies(&mountinfo, &own)
                .into_iter()
                .map(|h| format!("{}/{SERVICES_DIR}", h.own)),
        );
    }
    parents.iter().map(|p| remove_stale_in(p)).sum()
}

fn remove_stale_in(parent_path: &str) -> usize {
    let (Ok(parent), Ok(entries)) = (open_dir(None, parent_path), std::fs::read_dir(parent_path))
    else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| supervisor_gone(name))
        .filter(|name| {
            CString::new(name.as_str())
                .is_ok_and(|c| rustix::fs::unlinkat(&parent, &c, AtFlags::REMOVEDIR).is_ok())
        })
        .count()
}

/// Whether the supervisor named in cgroup `name` ([`name_for`]) no longer runs (gone, or a
/// zombie nobody reaped yet).
fn supervisor_gone(name: &str) -> bool {
    let Some(pid) = name
        .rsplit_once('-')
        .and_then(|(_, pid)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => true,
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`.
pub(crate) fn join(procs: impl AsFd) -> io::Result<()> {
    // "0" is the writer itself, whatever pid namespace it is in (v1 and v2 alike).
    super::sys::write_all(procs, b"0")
}

fn open_dir(at: Option<BorrowedFd<'_>>, path: &str) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let opened = match at {
        // The name relative to its parent: the last component of `path`.
        Some(dir) => rustix::fs::openat(
            dir,
            path.rsplit('/').next().unwrap_or(path),
            flags,
            Mode::empty(),
        ),
        None => rustix::fs::open(path, flags, Mode::empty()),
    };
    opened.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_holds_the_unit_and_the_pid() {
        assert_eq!(name_for("web.service", 4242), "web.service-4242");
    }

    #[test]
    fn a_long_unit_name_still_gives_a_valid_file_name() {
        let unit = format!("{}.service", "a".repeat(246));

        let name = name_for(&unit, 4_194_304);

        assert!(name.len() <= 255, "{}", name.len());
        assert!(name.ends_with("-4194304"));
    }

    #[test]
    fn a_cgroup_is_created_joinable_and_removed() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (cgroupfs)"
        );
        let cgroup = ServiceCgroup::create("cgroup-test.service", &Resources::default()).unwrap();
        let paths = cgroup.paths();

        let procs = cgroup.procs();
        let are_dirs = paths.iter().all(|p| std::path::Path::new(p).is_dir());
        drop(cgroup);

        assert!(procs.is_ok(), "{procs:?}");
        assert!(are_dirs && !paths.is_empty(), "{paths:?}");
        for path in paths {
            assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
        }
    }

    /// The file `file` of the service's cgroup in whichever hierarchy has it.
    fn read_limit(cgroup: &ServiceCgroup, file: &str) -> Option<String> {
        cgroup
            .paths()
            .iter()
            .find_map(|p| std::fs::read_to_string(format!("{p}/{file}")).ok())
            .map(|v| v.trim().to_owned())
    }

    #[test]
    fn the_limits_are_written_before_anything_joins() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (cgroupfs)"
        );
        let resources = Resources {
            memory_max: Some(64 << 20),
            tasks_max: Some(17),
            cpu_quota_per_sec_usec: Some(250_000),
            ..Resources::default()
        };

        let cgroup = ServiceCgroup::create("cgroup-limits.service", &resources).unwrap();

        assert_eq!(read_limit(&cgroup, "pids.max").as_deref(), Some("17"));
        let memory = read_limit(&cgroup, "memory.max")
            .or_else(|| read_limit(&cgroup, "memory.limit_in_bytes"));
        assert_eq!(memory.as_deref(), Some("67108864"));
        let cpu =
            read_limit(&cgroup, "cpu.max").or_else(|| read_limit(&cgroup, "cpu.cfs_quota_us"));
        assert!(
            matches!(cpu.as_deref(), Some("25000 100000" | "25000")),
            "{cpu:?}"
        );
    }

    #[test]
    fn kill_all_ends_every_process_of_the_cgroup() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (cgroupfs)"
        );
        let cgroup = ServiceCgroup::create("cgroup-kill.service", &Resources::default()).unwrap();
        let procs = cgroup.procs().unwrap();
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 60 & sleep 60 & wait"])
            .spawn()
            .unwrap();
        for fd in &procs {
            let pid = child.id().to_string();
            crate::sandbox::sys::write_all(fd, pid.as_bytes()).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cgroup.pids().unwrap().len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }

        cgroup.kill_all().unwrap();
        let _ = child.wait();
        while !cgroup.pids().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }

        assert_eq!(cgroup.pids().unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn the_cgroups_of_supervisors_that_are_gone_are_removed_and_the_others_kept() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (cgroupfs)"
        );
        let live = ServiceCgroup::create("stale-live.service", &Resources::default()).unwrap();
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let mut dead = Vec::new();
        for path in live.paths() {
            let parent = path.rsplit_once('/').unwrap().0.to_owned();
            let path = format!("{parent}/{}", name_for("stale-dead.service", dead_pid));
            std::fs::create_dir(&path).unwrap();
            dead.push(path);
        }

        let removed = remove_stale();

        assert!(removed >= dead.len(), "{removed}");
        for path in &dead {
            assert!(!std::path::Path::new(path).exists(), "{path} kept");
        }
        for path in live.paths() {
            assert!(std::path::Path::new(&path).is_dir(), "a live one removed");
        }
    }
}
