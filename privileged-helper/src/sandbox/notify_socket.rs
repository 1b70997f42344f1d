//! `$NOTIFY_SOCKET` inside the sandbox: init binds the supervisor's datagram socket (inherited
//! across the fork) at [`PATH`] in the sandbox's own `/run`, then closes its copy. Bound by
//! the socket itself, so the name exists only in the sandbox's mount namespace and only the
//! service can reach it; the supervisor keeps receiving on the same socket.
//!
//! Done in the new root while init is still root and before Landlock (which would refuse
//! making a socket): `/run/berth` 0755 root's, the socket 0666 so any uid of the service
//! (User=, PrivateUsers=) may send. A unit whose `/run` is read-only (`ReadOnlyPaths=/run` or
//! `/`) still gets it: `/run`'s mount is made writable for the bind and read-only again.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;
use rustix::net::SocketAddrUnix;

use super::Failure;
use super::syscalls::{LinuxSyscalls, MountSyscalls};

/// Where the service finds the socket (its `$NOTIFY_SOCKET`).
pub(crate) const PATH: &str = "/run/berth/notify";
const DIR: &std::ffi::CStr = c"/run/berth";

/// Binds `socket` at [`PATH`]; nothing to do without one. Init's cwd is the new root.
pub(crate) fn bind(socket: Option<OwnedFd>) -> Result<(), Failure> {
    let Some(socket) = socket else {
        return Ok(());
    };
    let fail = |e: Errno| Failure::setup(format!("bind the notify socket at {PATH}"), e);
    match bind_at_path(&socket) {
        // ReadOnlyPaths= over /run (or /): the socket is made with /run's mount writable for
        // that moment, before the service exists; sending to it needs no writable mount.
        Err(Errno::ROFS) => with_run_writable(|| bind_at_path(&socket)).map_err(fail),
        other => other.map_err(fail),
    }
}

fn bind_at_path(socket: &OwnedFd) -> Result<(), Errno> {
    match rustix::fs::mkdir(DIR, Mode::from_raw_mode(0o755)) {
        Ok(()) => {}
        // RuntimeDirectory=berth made it; ours all the same (made by init, never a symlink:
        // /run is init's own tmpfs).
        Err(Errno::EXIST) => {
            let st = rustix::fs::statat(rustix::fs::CWD, DIR, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(Errno::NOTDIR);
            }
        }
        Err(e) => return Err(e),
    }
    let addr = SocketAddrUnix::new(PATH)?;
    // The socket's mode comes from the umask: rw for everyone, no x.
    let old = rustix::process::umask(Mode::from_raw_mode(0o111));
    let bound = rustix::net::bind(socket, &addr);
    rustix::process::umask(old);
    bound
}

/// Runs `f` with the mount at `/run` writable, read-only again after it (whatever `f` did).
pub(crate) fn with_run_writable(f: impl FnOnce() -> Result<(), Errno>) -> Result<(), Errno> {
    let os = LinuxSyscalls;
    let run = os.open(
        c"/run",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
    )?;
    if !os.read_only(run.as_fd())? {
        // Not /run's mount, then: nothing here to change.
        return Err(Errno::ROFS);
    }
    os.mount_clear(
        run.as_fd(),
        AtFlags::empty(),
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )?;
    let done = f();
    os.mount_setattr(
        Some(run.as_fd()),
        c"",
        AtFlags::EMPTY_PATH,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )?;
    done
}
