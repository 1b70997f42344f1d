//! The service's own cgroup on the cgroup2 hierarchy (DESIGN.md §6).
//!
//! The supervisor creates it before it forks init, attaches what must hold from the first
//! instruction (the IP firewall), and init joins it before it unshares its cgroup namespace,
//! so the service and everything it forks live in it and see it as `/`. The supervisor itself
//! stays outside (its own sockets are not the service's, and a limit or a kill of the cgroup
//! must not reach it) and removes the cgroup once init is gone.
//!
//! Where: `<hierarchy><the supervisor's cgroup>/berth/<unit>-<supervisor pid>`. The hierarchy
//! is `/sys/fs/cgroup` on a pure cgroup2 host, `/sys/fs/cgroup/unified` beside v1 controllers
//! (a hybrid host). The pid keeps services of the same name apart (several berth instances
//! on one host, or a successor started while a predecessor's cgroup is still being removed).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// Where a cgroup2 hierarchy is looked for, in order.
pub(crate) const HIERARCHIES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// statfs(2)'s f_type of cgroup2.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// The directory under the supervisor's cgroup that holds the services' cgroups.
const SERVICES_DIR: &str = "berth";
/// A cgroup is busy for a moment after its last process exited; how long removal waits.
const REMOVE_ATTEMPTS: u32 = 100;
const REMOVE_PAUSE: Duration = Duration::from_millis(5);
/// Longest unit name part of a cgroup's name (NAME_MAX less the pid suffix).
const MAX_NAME_UNIT: usize = 240;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("no cgroup2 hierarchy is mounted at {}", HIERARCHIES.join(" or "))]
    NoHierarchy,
    #[error("read the supervisor's own cgroup from /proc/self/cgroup")]
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
            | CgroupError::Remove { source, .. } => source,
        }
    }
}

/// The mount point of the cgroup2 hierarchy, if there is one.
pub(crate) fn hierarchy() -> Option<&'static str> {
    HIERARCHIES.into_iter().find(|path| {
        rustix::fs::statfs(*path).is_ok_and(|st| st.f_type as u64 == CGROUP2_SUPER_MAGIC)
    })
}

/// This process's cgroup on the cgroup2 hierarchy (the `0::` line of /proc/self/cgroup).
fn own_cgroup() -> Result<String, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/cgroup").map_err(CgroupError::ReadOwn)?;
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

/// The cgroup's name for `unit` started by the supervisor `pid`.
pub(crate) fn name_for(unit: &str, pid: u32) -> String {
    // Unit names are ASCII (the floor checks), so a byte cut is a character cut.
    let unit = unit.get(..unit.len().min(MAX_NAME_UNIT)).unwrap_or(unit);
    format!("{unit}-{pid}")
}

/// One service's cgroup, created by [`ServiceCgroup::create`].
#[derive(Debug)]
pub(crate) struct ServiceCgroup {
    /// `.../berth`, which holds it.
    parent: OwnedFd,
    name: CString,
    dir: OwnedFd,
    path: String,
}

impl ServiceCgroup {
    /// Creates the cgroup of `unit` for the calling supervisor (see the module's doc).
    pub(crate) fn create(unit: &str) -> Result<ServiceCgroup, CgroupError> {
        let root = hierarchy().ok_or(CgroupError::NoHierarchy)?;
        let parent_path = format!("{root}{}/{SERVICES_DIR}", own_cgroup()?);
        let name = name_for(unit, rustix::process::getpid().as_raw_pid() as u32);
        let path = format!("{parent_path}/{name}");
        let create = |source: Errno| CgroupError::Create {
            path: path.clone(),
            source: source.into(),
        };
        match rustix::fs::mkdir(parent_path.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(create(e)),
        }
        let parent = open_dir(None, &parent_path).map_err(|source| CgroupError::Open {
            path: parent_path.clone(),
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
        let cgroup = ServiceCgroup {
            dir: open_dir(Some(parent.as_fd()), &path).map_err(|source| CgroupError::Open {
                path: path.clone(),
                source,
            })?,
            parent,
            name: cname,
            path,
        };
        Ok(cgroup)
    }

    /// The cgroup's directory (what BPF programs attach to).
    pub(crate) fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// `cgroup.procs`, open for [`join`]ing (CLOEXEC: only the process given it joins).
    pub(crate) fn procs(&self) -> Result<OwnedFd, CgroupError> {
        rustix::fs::openat(
            &self.dir,
            c"cgroup.procs",
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CgroupError::Open {
            path: format!("{}/cgroup.procs", self.path),
            source: e.into(),
        })
    }

    /// The host pids of every process in the cgroup (read by descriptor, so it works after the
    /// supervisor gave up root: `cgroup.procs` is readable by all).
    pub(crate) fn pids(&self) -> io::Result<Vec<u32>> {
        let fd = rustix::fs::openat(
            &self.dir,
            c"cgroup.procs",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let text = io::read_to_string(std::fs::File::from(fd))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Sends `signal` to every process in the cgroup; returns how many it reached. Processes
    /// forked meanwhile may escape one round; callers that must end everything repeat it (or
    /// end the pid namespace, which the kernel then empties).
    #[allow(dead_code)] // the run signals all but init (supervisor/run_actions.rs)
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

    /// Removes the cgroup, waiting briefly for the last processes to leave it.
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
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

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        // A cgroup still busy past the wait stays behind, empty or not; nothing better to do.
        let _ = self.remove();
    }
}

/// Removes the cgroups under `berth/` whose supervisor is gone (killed before it could
/// remove its own, as SIGKILL does); the helper does this when it starts. A cgroup that still
/// holds a process is never removed (the kernel refuses), nor one whose pid lives. Returns how
/// many went.
pub fn remove_stale() -> usize {
    let Some(root) = hierarchy() else { return 0 };
    let Ok(own) = own_cgroup() else { return 0 };
    let parent_path = format!("{root}{own}/{SERVICES_DIR}");
    let (Ok(parent), Ok(entries)) = (
        open_dir(None, &parent_path),
        std::fs::read_dir(&parent_path),
    ) else {
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

/// Whether the supervisor named in cgroup `name` ([`name_for`]) no longer exists.
fn supervisor_gone(name: &str) -> bool {
    name.rsplit_once('-')
        .and_then(|(_, pid)| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`.
pub(crate) fn join(procs: impl AsFd) -> io::Result<()> {
    // "0" is the writer itself, whatever pid namespace it is in.
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
        let cgroup = ServiceCgroup::create("cgroup-test.service").unwrap();
        let path = cgroup.path().to_owned();

        let procs = cgroup.procs();
        let is_dir = std::path::Path::new(&path).is_dir();
        drop(cgroup);

        assert!(procs.is_ok(), "{procs:?}");
        assert!(is_dir, "{path}");
        assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
    }

    #[test]
    fn the_cgroups_of_supervisors_that_are_gone_are_removed_and_the_others_kept() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (cgroupfs)"
        );
        let live = ServiceCgroup::create("stale-live.service").unwrap();
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let parent = live.path().rsplit_once('/').unwrap().0.to_owned();
        let dead = format!("{parent}/{}", name_for("stale-dead.service", dead_pid));
        std::fs::create_dir(&dead).unwrap();

        let removed = remove_stale();

        assert!(removed >= 1);
        assert!(!std::path::Path::new(&dead).exists(), "{dead} kept");
        assert!(
            std::path::Path::new(live.path()).is_dir(),
            "a live one removed"
        );
    }
}
