//! Sockets of the supervisor named inside the sandbox: init binds a datagram socket it inherited
//! across the fork at a path of the new root and closes its copy, so the name exists only in
//! the sandbox's mount namespace and only the service can reach it, while the supervisor keeps
//! receiving on the same socket (`$NOTIFY_SOCKET`, the log sockets).
//!
//! Done in the new root while init is still root and before Landlock (which would refuse
//! making a socket). The directories leading to it are made 0755 root's (or must be
//! directories already, never symlinks: they lie on init's own tmpfs), the socket 0666 so any
//! uid of the service (User=, PrivateUsers=) may send. A unit whose mount there is read-only
//! (`ReadOnlyPaths=/run` or `/`) still gets it: the mount is made writable for the bind and
//! read-only again.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;
use rustix::net::SocketAddrUnix;

use super::syscalls::{LinuxSyscalls, MountSyscalls};

/// Binds `socket` at `path` (absolute, in the new root: init's cwd), after making each of
/// `dirs` (absolute, parents first), all on the mount at `mount` (made writable for the moment
/// when it is read-only).
pub(crate) fn bind(
    socket: &OwnedFd,
    mount: &CStr,
    dirs: &[&CStr],
    path: &str,
) -> Result<(), Errno> {
    let make = || {
        for dir in dirs {
            make_dir(dir)?;
        }
        bind_at_path(socket, path)
    };
    match make() {
        // The socket is made with the mount writable for that moment, before the service
        // exists; sending to it needs no writable mount.
        Err(Errno::ROFS) => with_writable(mount, make),
        other => other,
    }
}

/// Makes `dir` 0755, or checks that what is there is a directory (not followed).
pub(crate) fn make_dir(dir: &CStr) -> Result<(), Errno> {
    match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o755)) {
        Ok(()) => Ok(()),
        // RuntimeDirectory= made it; ours all the same (made by init, never a symlink: the
        // mount is init's own tmpfs).
        Err(Errno::EXIST) => {
            let st = rustix::fs::statat(rustix::fs::CWD, dir, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(Errno::NOTDIR);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn bind_at_path(socket: &OwnedFd, path: &str) -> Result<(), Errno> {
    let addr = SocketAddrUnix::new(path)?;
    // The socket's mode comes from the umask: rw for everyone, no x.
    let old = rustix::process::umask(Mode::from_raw_mode(0o111));
    let bound = rustix::net::bind(socket, &addr);
    rustix::process::umask(old);
    bound
}

/// Runs `f` with the mount at `mount` writable, read-only again after it (whatever `f` did).
/// `ROFS` when `mount` is not the root of the read-only mount.
pub(crate) fn with_writable(
    mount: &CStr,
    f: impl FnOnce() -> Result<(), Errno>,
) -> Result<(), Errno> {
    let os = LinuxSyscalls;
    let dir = os.open(
        mount,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
    )?;
    if !os.read_only(dir.as_fd())? {
        // Not the read-only mount, then: nothing here to change.
        return Err(Errno::ROFS);
    }
    os.mount_clear(
        dir.as_fd(),
        AtFlags::empty(),
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )?;
    let done = f();
    os.mount_setattr(
        Some(dir.as_fd()),
        c"",
        AtFlags::EMPTY_PATH,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )?;
    done
}
