//! `$NOTIFY_SOCKET` inside the sandbox: init binds the supervisor's datagram socket (inherited
//! across the fork) at [`PATH`] in the sandbox's own `/run`, then closes its copy. Bound by
//! the socket itself, so the name exists only in the sandbox's mount namespace and only the
//! service can reach it; the supervisor keeps receiving on the same socket.
//!
//! Done in the new root while init is still root and before Landlock (which would refuse
//! making a socket): `/run/berth` 0755 root's, the socket 0666 so any uid of the service
//! (User=, PrivateUsers=) may send.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;
use rustix::net::SocketAddrUnix;

use super::Failure;

/// Where the service finds the socket (its `$NOTIFY_SOCKET`).
pub(crate) const PATH: &str = "/run/berth/notify";
const DIR: &std::ffi::CStr = c"/run/berth";

/// Binds `socket` at [`PATH`]; nothing to do without one. Init's cwd is the new root.
pub(crate) fn bind(socket: Option<OwnedFd>) -> Result<(), Failure> {
    let Some(socket) = socket else {
        return Ok(());
    };
    let fail = |e: Errno| Failure::setup(format!("bind the notify socket at {PATH}"), e);
    match rustix::fs::mkdir(DIR, Mode::from_raw_mode(0o755)) {
        Ok(()) => {}
        // RuntimeDirectory=berth made it; ours all the same (made by init, never a symlink:
        // /run is init's own tmpfs).
        Err(Errno::EXIST) => {
            let st = rustix::fs::statat(rustix::fs::CWD, DIR, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(fail)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(fail(Errno::NOTDIR));
            }
        }
        Err(e) => return Err(fail(e)),
    }
    let addr = SocketAddrUnix::new(PATH).map_err(fail)?;
    // The socket's mode comes from the umask: rw for everyone, no x.
    let old = rustix::process::umask(Mode::from_raw_mode(0o111));
    let bound = rustix::net::bind(&socket, &addr);
    rustix::process::umask(old);
    bound.map_err(fail)
}
