//! The control socket `<unit>.sock`: bound with the manager's ownership, accepting only the
//! manager uid and root.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::sandbox::{Failure, sys};

/// The control socket `<unit>.sock` and the directory it lives in.
pub(super) struct ControlSocket {
    pub(super) listener: OwnedFd,
    dir: OwnedFd,
    name: CString,
    /// (st_dev, st_ino) of the socket we bound, so we never unlink a successor's.
    ident: (u64, u64),
    /// The directory's owner: the manager uid, the only non-root uid allowed to connect.
    pub(super) owner: u32,
    /// The directory's group: the manager's primary gid (berthd makes it).
    pub(super) group: u32,
}

impl ControlSocket {
    pub(super) fn bind(unit: &str, dir: OwnedFd) -> Result<Self, Failure> {
        let refuse = |reason: &str| Failure::ControlDir {
            reason: reason.to_string(),
        };
        let st =
            rustix::fs::fstat(&dir).map_err(|e| Failure::setup("stat the control directory", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(refuse("not a directory"));
        }
        if st.st_uid == 0 {
            return Err(refuse("owned by root, expected the manager's uid"));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(refuse("writable by group or others"));
        }
        let path = format!("{unit}.sock");
        let bind_err = |e: Errno| Failure::BindControlSocket {
            path: path.clone(),
            errno: e.raw_os_error(),
        };
        let name = CString::new(path.as_str()).map_err(|_| bind_err(Errno::INVAL))?;

        // A socket left by a dead supervisor of the same unit.
        if let Ok(old) = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            && FileType::from_raw_mode(old.st_mode) == FileType::Socket
        {
            rustix::fs::unlinkat(&dir, &name, AtFlags::empty()).map_err(bind_err)?;
        }
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(bind_err)?;
        // Bind by a name relative to the directory (as cwd), so no host path is involved,
        // with the directory owner's fs ids and umask 0177: the socket is the owner's and
        // 0600 from the start, and no chown by path (raceable in a directory the manager
        // controls) is needed.
        rustix::process::fchdir(&dir).map_err(bind_err)?;
        let old_mask = rustix::process::umask(Mode::from_raw_mode(0o177));
        let bound = sys::set_fs_ids(st.st_uid, st.st_gid)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::PERM))
            .and_then(|()| SocketAddrUnix::new(name.as_c_str()))
            .and_then(|addr| rustix::net::bind(&listener, &addr));
        let restored = sys::set_fs_ids(0, 0);
        rustix::process::umask(old_mask);
        let _ = rustix::process::chdir(c"/");
        // Cannot fail for root; if it did, we must not go on with the manager's fs ids (the
        // caller reports and exits).
        restored.map_err(|e| Failure::setup("restore the filesystem ids", e))?;
        bound.map_err(bind_err)?;

        let finish = || -> Result<(u64, u64), Errno> {
            rustix::net::listen(&listener, 16)?;
            let sock = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok((sock.st_dev, sock.st_ino))
        };
        match finish() {
            Ok(ident) => Ok(ControlSocket {
                listener,
                dir,
                name,
                ident,
                owner: st.st_uid,
                group: st.st_gid,
            }),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
                Err(bind_err(e))
            }
        }
    }

    /// Removes the socket, if it is still the one we bound.
    pub(super) fn remove(&self) {
        if let Ok(st) = rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW)
            && (st.st_dev, st.st_ino) == self.ident
        {
            let _ = rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty());
        }
    }

    pub(super) fn allowed(&self, client: &OwnedFd) -> bool {
        rustix::net::sockopt::socket_peercred(client)
            .map(|cred| matches!(cred.uid.as_raw(), 0) || cred.uid.as_raw() == self.owner)
            .unwrap_or(false)
    }
}
