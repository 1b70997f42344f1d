//! The log sockets inside the sandbox (`SandboxSpec.capture_log_sockets`): init binds the
//! supervisor's two datagram sockets where a systemd host has journald's, the native one at
//! [`JOURNAL_SOCKET`] and the syslog one at [`SYSLOG_SOCKET`] (`bound_socket.rs`, in the
//! sandbox's own `/run`), and makes `/dev/log` lead to the syslog one, as systemd's
//! `/dev/log -> /run/systemd/journal/dev-log` does, so that syslog(3) and sd_journal_*() reach
//! the supervisor. Only `/run/systemd/journal` is made: nothing that would tell a program it
//! runs under systemd as PID 1 (`/run/systemd/system`).
//!
//! `/dev/log`: on the sandbox's own `/dev` (a tmpfs, PrivateDevices=) a symlink is made. On the
//! host's `/dev` nothing is ever created: a socket there (a host syslog daemon's) gets ours
//! bound over it in the sandbox's mount namespace; a symlink into `/run` already leads to ours.
//!
//! Best effort: logging must not keep a service from starting, and a unit may have made its
//! `/run` unusable (`InaccessiblePaths=/run`). A socket that could not be bound stays unbound,
//! which the supervisor sees (its address) and notes in the log.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::bound_socket;
use super::syscalls::{LinuxSyscalls, MountSyscalls};

/// The journal's native protocol socket (sd_journal_send).
pub(crate) const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The syslog socket, which `/dev/log` leads to.
pub(crate) const SYSLOG_SOCKET: &str = "/run/systemd/journal/dev-log";
const SYSLOG_SOCKET_C: &CStr = c"/run/systemd/journal/dev-log";
const DEV_LOG: &CStr = c"/dev/log";
const DIRS: [&CStr; 2] = [c"/run/systemd", c"/run/systemd/journal"];

/// The supervisor's log sockets, unbound (init's copies).
pub(crate) struct LogSocketFds {
    pub(crate) syslog: OwnedFd,
    pub(crate) journal: OwnedFd,
}

impl LogSocketFds {
    pub(crate) fn raw(&self) -> [RawFd; 2] {
        [self.syslog.as_raw_fd(), self.journal.as_raw_fd()]
    }
}

/// Binds the sockets and makes `/dev/log`, each as far as it goes (see above); nothing to do
/// without them. Init's cwd is the new root, `/dev` the sandbox's own when `private_devices`.
pub(crate) fn bind(sockets: Option<LogSocketFds>, private_devices: bool) {
    let Some(sockets) = sockets else {
        return;
    };
    // Unbound on failure: the supervisor tells (supervisor/log_sockets.rs).
    let _ = bound_socket::bind(&sockets.journal, c"/run", &DIRS, JOURNAL_SOCKET);
    if bound_socket::bind(&sockets.syslog, c"/run", &DIRS, SYSLOG_SOCKET).is_ok() {
        // Without it syslog(3) finds no socket, as without the syslog socket itself.
        let _ = dev_log(private_devices);
    }
}

fn dev_log(private_devices: bool) -> Result<(), Errno> {
    let existing = match rustix::fs::statat(rustix::fs::CWD, DEV_LOG, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
        Err(Errno::NOENT) => None,
        Err(e) => return Err(e),
    };
    match existing {
        None if private_devices => {
            let link = || rustix::fs::symlink(SYSLOG_SOCKET_C, DEV_LOG);
            match link() {
                // ReadOnlyPaths=/dev or /: made before the service exists, as the sockets are.
                Err(Errno::ROFS) => bound_socket::with_writable(c"/dev", link),
                other => other,
            }
        }
        Some(FileType::Socket) => LinuxSyscalls.mount_bind(SYSLOG_SOCKET_C, DEV_LOG),
        // The host's /dev without a /dev/log, or with a symlink (into /run: ours): as it is.
        _ => Ok(()),
    }
}
