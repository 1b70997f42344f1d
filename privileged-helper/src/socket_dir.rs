//! The directory of the helper's socket, held by descriptor.
//!
//! The socket lives in `RUNTIME/private/`, which belongs to the manager's user, inside
//! `RUNTIME/`, which belongs to it too: a compromised manager can swap `private` for a symlink
//! (`renameat2(RENAME_EXCHANGE)`) at any moment. So the helper resolves the directory once,
//! without following a symlink at its name, checks what it got, and from then on reaches the
//! socket only through that descriptor: bind and connect through `/proc/self/fd/N/NAME` (the
//! magic link names the directory itself, not a path), unlink and chown with `*at` calls.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    #[error("socket path {0} has no directory and file name")]
    BadPath(PathBuf),
    #[error("cannot open {path} without following a symlink: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is owned by uid {owner}; the helper's socket directory must belong to root or \
         the manager (uid {manager})"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        manager: u32,
    },
    #[error("{path} is writable by group or others (mode {mode:o}); refusing to serve there")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path} is not a socket the helper just bound; refusing to hand it over")]
    NotOurSocket { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The checked directory of one socket, and the socket's name in it.
#[derive(Debug)]
pub struct SocketDir {
    dir: OwnedFd,
    name: PathBuf,
    /// The socket's path as given, for messages only.
    path: PathBuf,
}

impl SocketDir {
    /// Opens the directory of `socket` (`O_PATH | O_DIRECTORY | O_NOFOLLOW`) and checks that
    /// it belongs to root or `manager_uid` and that nobody else may write to it.
    pub fn open(socket: &Path, manager_uid: u32) -> Result<SocketDir, SocketDirError> {
        let bad = || SocketDirError::BadPath(socket.to_owned());
        let name = socket.file_name().ok_or_else(bad)?;
        let parent = socket.parent().ok_or_else(bad)?;
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let open_error = |e: Errno| SocketDirError::Open {
            path: parent.to_owned(),
            source: e.into(),
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::open(parent, flags, Mode::empty()).map_err(open_error)?;
        let st = rustix::fs::fstat(&dir).map_err(open_error)?;
        if st.st_uid != 0 && st.st_uid != manager_uid {
            return Err(SocketDirError::Owner {
                path: parent.to_owned(),
                owner: st.st_uid,
                manager: manager_uid,
            });
        }
        if Mode::from_raw_mode(st.st_mode).intersects(Mode::WGRP | Mode::WOTH) {
            return Err(SocketDirError::Writable {
                path: parent.to_owned(),
                mode: st.st_mode & 0o7777,
            });
        }
        Ok(SocketDir {
            dir,
            name: PathBuf::from(name),
            path: socket.to_owned(),
        })
    }

    /// The socket's path as given (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path to the socket that does not depend on the directory's name: the kernel resolves
    /// `/proc/self/fd/N` to the directory held open.
    pub fn through_fd(&self) -> PathBuf {
        Path::new("/proc/self/fd")
            .join(self.dir.as_raw_fd().to_string())
            .join(&self.name)
    }

    fn io_error(&self, action: &'static str) -> impl Fn(Errno) -> SocketDirError + '_ {
        move |e| SocketDirError::Io {
            action,
            path: self.path.clone(),
            source: e.into(),
        }
    }

    /// Whether a file of the socket's name exists in the directory (whatever it is).
    pub fn socket_exists(&self) -> Result<bool, SocketDirError> {
        match rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(self.io_error("look up")(e)),
        }
    }

    /// Removes the name from the directory (a symlink itself, never what it points at).
    pub fn remove_socket(&self) -> Result<(), SocketDirError> {
        match rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io_error("remove")(e)),
        }
    }

    /// Hands the socket just bound to `owner`. The name is opened `O_PATH | O_NOFOLLOW` and must
    /// be a socket owned by root with one link (what bind just made): the manager could have
    /// replaced it meanwhile, and root must not chown whatever stands there now. The owner is
    /// then changed through that descriptor, not the name.
    pub fn hand_over_socket(&self, owner: u32) -> Result<(), SocketDirError> {
        let fd = rustix::fs::openat(
            &self.dir,
            &self.name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.io_error("open"))?;
        let st = rustix::fs::fstat(&fd).map_err(self.io_error("inspect"))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket
            || st.st_uid != 0
            || st.st_nlink != 1
        {
            return Err(SocketDirError::NotOurSocket {
                path: self.path.clone(),
            });
        }
        rustix::fs::chownat(
            &fd,
            OsStr::new(""),
            Some(rustix::fs::Uid::from_raw(owner)),
            None,
            AtFlags::EMPTY_PATH,
        )
        .map_err(self.io_error("chown"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    use super::*;

    const MANAGER: u32 = 4321;

    fn private_dir(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, private)
    }

    #[test]
    fn a_symlink_in_place_of_the_directory_is_refused() {
        let (dir, private) = private_dir(0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();

        let result = SocketDir::open(&link.join("helper"), MANAGER);

        assert!(matches!(result, Err(SocketDirError::Open { .. })));
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let (_dir, private) = private_dir(0o733);

        let result = SocketDir::open(&private.join("helper"), MANAGER);

        assert!(matches!(result, Err(SocketDirError::Writable { .. })));
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let (_dir, private) = private_dir(0o700);
        std::os::unix::fs::chown(&private, Some(MANAGER + 1), None).unwrap();

        let result = SocketDir::open(&private.join("helper"), MANAGER);

        assert!(matches!(result, Err(SocketDirError::Owner { .. })));
    }

    #[test]
    fn the_socket_is_bound_in_the_directory_opened_even_after_a_swap() {
        let (dir, private) = private_dir(0o700);
        let socket_dir = SocketDir::open(&private.join("helper"), MANAGER).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&private, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &private).unwrap();

        let _listener = UnixListener::bind(socket_dir.through_fd()).unwrap();

        assert!(dir.path().join("moved/helper").exists());
        assert!(!elsewhere.join("helper").exists());
    }

    #[test]
    fn the_socket_is_handed_to_the_manager() {
        let (_dir, private) = private_dir(0o700);
        let socket_dir = SocketDir::open(&private.join("helper"), MANAGER).unwrap();
        let _listener = UnixListener::bind(socket_dir.through_fd()).unwrap();

        socket_dir.hand_over_socket(MANAGER).unwrap();

        let meta = std::fs::symlink_metadata(private.join("helper")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), MANAGER);
    }

    #[test]
    fn a_file_put_in_place_of_the_socket_is_not_chowned() {
        let (dir, private) = private_dir(0o700);
        let socket_dir = SocketDir::open(&private.join("helper"), MANAGER).unwrap();
        let target = dir.path().join("root-file");
        std::fs::write(&target, "x").unwrap();
        std::os::unix::fs::symlink(&target, private.join("helper")).unwrap();

        let result = socket_dir.hand_over_socket(MANAGER);

        assert!(result.is_err());
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    }
}
