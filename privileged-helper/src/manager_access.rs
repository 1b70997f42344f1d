//! What the manager itself may do with a directory, asked of the kernel.
//!
//! An image root comes from the manager as a descriptor. A descriptor opened for reading proves
//! that the manager could list the directory, not that it could enter it: `open(O_RDONLY)` of a
//! directory needs only read permission. The helper then builds the sandbox from the root as
//! root, which bypasses search permission, and the service would see files the manager could
//! never reach (a root-owned 0744 directory, say). So the floor asks the kernel, with the
//! manager's credentials, whether it may read and search the root.
//!
//! The question is asked of the descriptor itself (`faccessat2(fd, ".")`), not of a path: it
//! is about the directory, and any directory above it does not count. That stays sound for an
//! image a client passed to the manager by descriptor (root attaching `/root/img`, where the
//! manager may not search `/root`): holding the descriptor, the manager can read everything
//! below it that its read and search permission on the image directory allows, so the sandbox
//! shows nothing the manager could not reach through the same descriptor. What the check
//! keeps out is a directory whose own mode shuts the manager out (0744, 0700 of another user).
//!
//! The check switches this thread's filesystem uid and gid and its supplementary groups to the
//! manager's, calls `faccessat2(AT_EACCESS)` (which honours them, and with a non-zero fsuid
//! the capabilities that bypass permissions are off), and switches back. The helper is
//! single-threaded, and these credentials are per thread.

use std::os::fd::{AsFd, AsRawFd};

use rustix::process::Gid;

/// The credentials of the manager as the kernel saw them on its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot take the manager's credentials for the check: {0}")]
    Switch(#[source] std::io::Error),
    #[error("cannot ask the kernel: {0}")]
    Check(#[source] std::io::Error),
}

/// True when `who` may read and search `dir` (`R_OK | X_OK`).
pub fn may_read_and_search(dir: impl AsFd, who: &Credentials) -> Result<bool, AccessError> {
    let switched = AsManager::enter(who)?;
    let result = faccessat2_eaccess(dir.as_fd(), libc::R_OK | libc::X_OK);
    drop(switched);
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(false),
        Err(e) => Err(AccessError::Check(e)),
    }
}

/// `faccessat2(dir, ".", mode, AT_EACCESS)`: called directly, because a fallback to plain
/// `faccessat` on a kernel without it (before 5.8) would check with the real uid, root's, and
/// answer yes. Without faccessat2 the check fails (ENOSYS), so the spawn is refused.
fn faccessat2_eaccess(dir: std::os::fd::BorrowedFd<'_>, mode: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the path is a NUL-terminated static string and the descriptor is borrowed live
    // for the call; faccessat2 only reads its arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            dir.as_raw_fd(),
            c".".as_ptr(),
            mode,
            libc::AT_EACCESS,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// This thread's filesystem credentials switched to the manager's until dropped.
struct AsManager {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<Gid>,
    dumpable: libc::c_int,
}

impl AsManager {
    fn enter(who: &Credentials) -> Result<AsManager, AccessError> {
        // SAFETY: prctl(PR_GET_DUMPABLE) takes no pointers.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
        let groups = rustix::process::getgroups().map_err(|e| AccessError::Switch(e.into()))?;
        let manager_groups: Vec<Gid> = who.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        rustix::thread::set_thread_groups(&manager_groups)
            .map_err(|e| AccessError::Switch(e.into()))?;
        // setfsgid/setfsuid return the previous value and report no error; asking again with
        // an invalid id (-1 changes nothing) tells whether the switch took.
        // SAFETY: plain integer arguments; these change only this thread's fs credentials.
        let (fsgid, fsuid) = unsafe { (libc::setfsgid(who.gid), libc::setfsuid(who.uid)) };
        let restore = AsManager {
            fsuid: fsuid as u32,
            fsgid: fsgid as u32,
            groups,
            dumpable,
        };
        if current_fsuid() != who.uid || current_fsgid() != who.gid {
            return Err(AccessError::Switch(std::io::Error::other(
                "setfsuid/setfsgid did not take",
            )));
        }
        Ok(restore)
    }
}

fn current_fsuid() -> u32 {
    // SAFETY: -1 is no valid uid, so this changes nothing and returns the current fsuid.
    unsafe { libc::setfsuid(u32::MAX) as u32 }
}

fn current_fsgid() -> u32 {
    // SAFETY: as in current_fsuid.
    unsafe { libc::setfsgid(u32::MAX) as u32 }
}

impl Drop for AsManager {
    fn drop(&mut self) {
        // SAFETY: plain integer arguments; back to the helper's own fs credentials.
        unsafe {
            libc::setfsuid(self.fsuid);
            libc::setfsgid(self.fsgid);
        }
        let groups_back = rustix::thread::set_thread_groups(&self.groups).is_ok();
        if !groups_back || current_fsuid() != self.fsuid || current_fsgid() != self.fsgid {
            // Going on as root with another's credentials half in place is worse than stopping.
            std::process::abort();
        }
        // Changing the fsuid made the process non-dumpable (the kernel does so on any credential
        // change); put back what it was.
        // SAFETY: prctl(PR_SET_DUMPABLE, 0 or 1) takes no pointers.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, self.dumpable as libc::c_ulong) };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const MANAGER: Credentials = Credentials {
        uid: 4321,
        gid: 4321,
        groups: Vec::new(),
    };

    fn dir_with(mode: u32, group: u32) -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(0), Some(group)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        (dir, fd)
    }

    #[test]
    fn a_directory_the_manager_may_list_but_not_enter_is_refused() {
        let (_dir, fd) = dir_with(0o744, 0);

        assert!(!may_read_and_search(&fd, &MANAGER).unwrap());
    }

    #[test]
    fn a_directory_open_to_others_is_accepted() {
        let (_dir, fd) = dir_with(0o755, 0);

        assert!(may_read_and_search(&fd, &MANAGER).unwrap());
    }

    #[test]
    fn the_managers_groups_count_and_only_they() {
        let (_dir, fd) = dir_with(0o750, 5555);
        let in_group = Credentials {
            groups: vec![5555],
            ..MANAGER
        };
        let primary = Credentials {
            gid: 5555,
            ..MANAGER
        };

        assert!(may_read_and_search(&fd, &in_group).unwrap());
        assert!(may_read_and_search(&fd, &primary).unwrap());
        assert!(!may_read_and_search(&fd, &MANAGER).unwrap());
    }

    #[test]
    fn the_thread_is_root_again_after_the_check() {
        let (dir, fd) = dir_with(0o700, 0);
        std::os::unix::fs::chown(dir.path(), Some(9999), None).unwrap();
        let groups_before = rustix::process::getgroups().unwrap();

        let refused = !may_read_and_search(&fd, &MANAGER).unwrap();

        assert!(refused);
        assert_eq!((current_fsuid(), current_fsgid()), (0, 0));
        assert_eq!(rustix::process::getgroups().unwrap(), groups_before);
        // Root's bypass is back: another user's 0700 directory can be listed.
        assert!(std::fs::read_dir(dir.path()).is_ok());
    }

    #[test]
    fn a_directory_below_one_the_manager_cannot_enter_is_judged_by_its_own_mode() {
        let (outer, _) = dir_with(0o700, 0);
        let image = outer.path().join("img");
        std::fs::create_dir(&image).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fd = std::fs::File::open(&image).unwrap();

        assert!(may_read_and_search(&fd, &MANAGER).unwrap());
    }
}
