//! Start-up as root: lay out the directories, take the instance lock, start berth-helper as
//! root on the private socket, then drop to the berth user for good (like OpenSSH's privilege
//! separation). Runs before any other thread exists.
//!
//! Root works here in directories a previous berthd (as `berth`) owned, so a compromised berthd
//! may have left anything in them, and may still be swapping names while root restarts it.
//! Decision: the directories stay owned by `berth` (berthd needs to bind and remove its sockets
//! in them after the drop), and root never resolves a path through them. Each directory is
//! opened once with `O_NOFOLLOW` relative to its parent's descriptor, and every later step (the
//! next directory, mode and owner, the lock file, the helper's readiness check) goes through
//! that descriptor. A symlink put in place of a name is refused, not followed; a name swapped
//! after the open no longer matters. The two top directories (`--runtime-dir`, `--state-dir`)
//! are root's choice: their parents must not be writable by `berth`.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::paths::Paths;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "user '{0}' does not exist; create it with: useradd --system --no-create-home --shell /usr/sbin/nologin {0}"
    )]
    NoSuchUser(String),
    #[error("user '{0}' is root; berthd must run unprivileged")]
    UserIsRoot(String),
    #[error(
        "{0} is not a regular file with one link (a symlink or another file put there by the \
         berth user?); refusing to open it as root; remove it and start again"
    )]
    LockNotRegular(PathBuf),
    #[error(
        "{0} is not a directory (a symlink the berth user put there?); refusing to follow it as \
         root; remove it and start again"
    )]
    NotADirectory(PathBuf),
    #[error("cannot prepare {path}: {source}")]
    PrepareDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another berthd is already running for {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start berth-helper ({path}): {source}")]
    SpawnHelper {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("berth-helper exited during start-up ({0})")]
    HelperExited(std::process::ExitStatus),
    #[error("berth-helper did not open {0} within 10 s")]
    HelperTimeout(PathBuf),
    #[error("cannot drop privileges to {user}: {source}")]
    DropPrivileges {
        user: String,
        #[source]
        source: std::io::Error,
    },
}

/// A user from the host database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in a passwd-format file.
pub fn lookup_user(passwd: &Path, name: &str) -> Result<User, StartupError> {
    let entry = crate::host_users::lookup(passwd, name)
        .ok_or_else(|| StartupError::NoSuchUser(name.to_string()))?;
    let gid = entry
        .gid
        .ok_or_else(|| StartupError::NoSuchUser(name.to_string()))?;
    Ok(User {
        name: entry.name,
        uid: entry.id,
        gid,
    })
}

/// The instance lock; held for the life of the process.
pub struct InstanceLock(#[allow(dead_code)] File);

/// Takes the instance lock, so a second berthd cannot take over the first one's sockets.
///
/// Opened relative to the runtime directory's descriptor with `O_NOFOLLOW` (a symlink planted
/// there would have root create a file anywhere) and `O_NONBLOCK` (a FIFO would block the open
/// for ever); anything but a regular file is refused.
pub fn lock_instance(dirs: &PreparedDirs, paths: &Paths) -> Result<InstanceLock, StartupError> {
    let path = paths.lock_file();
    let lock_error = |e: Errno| StartupError::Lock {
        path: path.clone(),
        source: e.into(),
    };
    let name = path.file_name().ok_or_else(|| lock_error(Errno::INVAL))?;
    let fd = rustix::fs::openat(
        &dirs.runtime,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| match e {
        // ELOOP: a symlink; ENXIO: a FIFO nobody reads.
        Errno::LOOP | Errno::NXIO => StartupError::LockNotRegular(path.clone()),
        e => lock_error(e),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(lock_error)?;
    // A second link would be another file's name (a hard link berth made to a root file).
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || stat.st_nlink != 1 {
        return Err(StartupError::LockNotRegular(path));
    }
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(InstanceLock(File::from(fd))),
        Err(Errno::WOULDBLOCK) => Err(StartupError::AlreadyRunning(paths.runtime.clone())),
        Err(e) => Err(lock_error(e)),
    }
}

/// Descriptors of the directories root still works in after [`prepare_dirs`].
pub struct PreparedDirs {
    runtime: OwnedFd,
    private: OwnedFd,
}

/// The directory `path`, created (if missing) and opened by its last name relative to
/// `parent` (its parent directory's descriptor) without following a symlink, then given `mode`
/// and `owner` through its own descriptor.
fn make_dir_at(
    parent: &OwnedFd,
    path: &Path,
    mode: u32,
    owner: Option<&User>,
) -> Result<OwnedFd, StartupError> {
    let err = |e: Errno| StartupError::PrepareDir {
        path: path.to_owned(),
        source: e.into(),
    };
    let name = path.file_name().ok_or_else(|| err(Errno::INVAL))?;
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(err(e)),
    }
    let dir = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        // O_NOFOLLOW on a symlink: ELOOP; O_DIRECTORY on anything else but a directory: ENOTDIR.
        Errno::LOOP | Errno::NOTDIR => StartupError::NotADirectory(path.to_owned()),
        e => err(e),
    })?;
    secure_dir(&dir, path, mode, owner)?;
    Ok(dir)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// One of the two top directories: its parents are created as needed (they are root's own
/// paths, chosen on the command line), the directory itself is opened without following a
/// symlink at its name.
fn make_top_dir(path: &Path, mode: u32, owner: Option<&User>) -> Result<OwnedFd, StartupError> {
    let err = |source| StartupError::PrepareDir {
        path: path.to_owned(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(err(std::io::Error::other("not a directory name"))),
    };
    std::fs::create_dir_all(parent).map_err(err)?;
    let parent = rustix::fs::open(
        parent,
        DIR_FLAGS.difference(OFlags::NOFOLLOW),
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    make_dir_at(&parent, path, mode, owner)
}

/// Mode and owner of a directory already open, so a name swapped meanwhile changes nothing.
fn secure_dir(
    dir: &OwnedFd,
    path: &Path,
    mode: u32,
    owner: Option<&User>,
) -> Result<(), StartupError> {
    let err = |e: Errno| StartupError::PrepareDir {
        path: path.to_owned(),
        source: e.into(),
    };
    rustix::fs::fchmod(dir, Mode::from_raw_mode(mode)).map_err(err)?;
    if let Some(user) = owner {
        rustix::fs::fchown(
            dir,
            Some(rustix::fs::Uid::from_raw(user.uid)),
            Some(rustix::fs::Gid::from_raw(user.gid)),
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Creates the runtime and state layout, owned by `owner` (None when not running as root),
/// each directory reached through its parent's descriptor (see the module comment).
pub fn prepare_dirs(paths: &Paths, owner: Option<&User>) -> Result<PreparedDirs, StartupError> {
    let runtime = make_top_dir(&paths.runtime, 0o755, owner)?;
    let private = make_dir_at(&runtime, &paths.private_dir(), 0o700, owner)?;
    make_dir_at(&private, &paths.supervise_dir(), 0o700, owner)?;
    make_dir_at(&runtime, &paths.host_files_dir(), 0o755, owner)?;
    let state = make_top_dir(&paths.state, 0o755, owner)?;
    for (path, mode) in [
        (paths.images_dir(), 0o755),
        (paths.attached_dir(), 0o755),
        (paths.logs_dir(), 0o750),
    ] {
        make_dir_at(&state, &path, mode, owner)?;
    }
    // StateDirectory= and its kind (the private/ parent is DESIGN.md §3's).
    for path in crate::service_directories::parents(paths) {
        make_dir_at(&state, &path, 0o700, owner)?;
    }
    Ok(PreparedDirs { runtime, private })
}

/// Starts berth-helper (next to this executable) as root and waits until its socket accepts
/// connections. The helper exits when berthd does (through its lifeline pipe). It logs at
/// berthd's level to berthd's log target (it clears its environment, so RUST_LOG would not reach it).
pub fn start_helper(
    dirs: &PreparedDirs,
    paths: &Paths,
    manager: &User,
    logging: &berth_logging::Logging,
) -> Result<Child, StartupError> {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-helper")))
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/berth-helper"));
    let socket = paths.helper_socket();
    let mut command = Command::new(&exe);
    command
        .arg("--socket")
        .arg(&socket)
        .arg("--manager-uid")
        .arg(manager.uid.to_string())
        .arg("--log-level")
        .arg(&logging.level)
        .arg("--log-target")
        .arg(logging.target.to_string())
        .arg("--lifeline");
    let spawn_error = |source| StartupError::SpawnHelper {
        path: exe.clone(),
        source,
    };
    // The helper's stdin is the read end of a pipe whose write end berthd keeps (close-on-exec,
    // so no child inherits it) until it exits: the helper then sees end of file and exits too.
    let (lifeline_read, lifeline_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| spawn_error(e.into()))?;
    command.stdin(Stdio::from(lifeline_read));
    let mut child = command.spawn().map_err(spawn_error)?;
    // Deliberately never closed: the kernel closes it when berthd exits.
    std::mem::forget(lifeline_write);
    // Root connects through the private directory's descriptor, not by name: a symlink swapped in
    // for `private` must not make it take another socket for the helper's.
    let socket_name = socket.file_name().unwrap_or_default();
    let through_fd = Path::new("/proc/self/fd")
        .join(dirs.private.as_raw_fd().to_string())
        .join(socket_name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Only this helper's socket counts: the previous berthd's helper may still answer on
        // the old socket for a moment while it exits (the new one waits for that before it
        // binds), and calls sent to it would be cut off.
        if std::os::unix::net::UnixStream::connect(&through_fd).is_ok_and(|stream| {
            rustix::net::sockopt::socket_peercred(&stream)
                .is_ok_and(|cred| cred.pid.as_raw_nonzero().get().cast_unsigned() == child.id())
        }) {
            tracing::info!(pid = child.id(), socket = %socket.display(), "berth-helper started");
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartupError::HelperExited(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(StartupError::HelperTimeout(socket));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Drops to `user` for good: no supplementary groups, no capabilities, no_new_privs.
pub fn drop_privileges(user: &User) -> Result<(), StartupError> {
    let err = |source| StartupError::DropPrivileges {
        user: user.name.clone(),
        source,
    };
    // SAFETY: plain libc credential calls with valid arguments; berthd has a single thread here,
    // and glibc applies them to every thread anyway.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(user.gid, user.gid, user.gid) != 0
            || libc::setresuid(user.uid, user.uid, user.uid) != 0
        {
            return Err(err(std::io::Error::last_os_error()));
        }
    }
    rustix::thread::set_no_new_privs(true).map_err(|e| err(e.into()))?;
    // Switching from uid 0 to a non-zero uid clears the permitted and effective sets; check it.
    let status = std::fs::read_to_string("/proc/self/status").map_err(err)?;
    let cap_eff_zero = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .is_some_and(|v| v.trim().chars().all(|c| c == '0'));
    if !cap_eff_zero {
        return Err(err(std::io::Error::other(
            "capabilities remain after setresuid",
        )));
    }
    tracing::info!(
        user = %user.name,
        uid = user.uid,
        gid = user.gid,
        "dropped privileges: no capabilities, no_new_privs"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_user_finds_uid_and_gid() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nberth:x:998:997::/:/usr/sbin/nologin\n",
        )
        .unwrap();

        let user = lookup_user(&passwd, "berth").unwrap();

        assert_eq!(
            user,
            User {
                name: "berth".into(),
                uid: 998,
                gid: 997
            }
        );
    }

    #[test]
    fn lookup_of_a_missing_user_says_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();

        let err = lookup_user(&passwd, "berth").unwrap_err();

        assert!(err.to_string().contains("useradd --system"), "{err}");
    }

    fn instance(dir: &Path) -> Paths {
        Paths::new(&dir.join("run"), &dir.join("state"))
    }

    #[test]
    fn second_lock_on_the_same_runtime_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let paths = instance(dir.path());
        let dirs = prepare_dirs(&paths, None).unwrap();
        let _first = lock_instance(&dirs, &paths).unwrap();

        let second = lock_instance(&dirs, &paths);

        assert!(matches!(second, Err(StartupError::AlreadyRunning(_))));
    }

    #[test]
    fn a_lock_file_that_is_a_symlink_is_refused_and_its_target_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let paths = instance(dir.path());
        let dirs = prepare_dirs(&paths, None).unwrap();
        let target = dir.path().join("nologin");
        std::os::unix::fs::symlink(&target, paths.lock_file()).unwrap();

        let result = lock_instance(&dirs, &paths);

        assert!(matches!(result, Err(StartupError::LockNotRegular(_))));
        assert!(!target.exists(), "root created the symlink's target");
    }

    #[test]
    fn a_lock_file_that_is_a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let paths = instance(dir.path());
        let dirs = prepare_dirs(&paths, None).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            paths.lock_file(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();

        let result = lock_instance(&dirs, &paths);

        assert!(matches!(result, Err(StartupError::LockNotRegular(_))));
    }

    #[test]
    fn a_symlink_in_place_of_private_is_refused_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = instance(dir.path());
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("supervise")).unwrap();
        std::fs::set_permissions(
            elsewhere.join("supervise"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir_all(&paths.runtime).unwrap();
        std::os::unix::fs::symlink(&elsewhere, paths.private_dir()).unwrap();

        let result = prepare_dirs(&paths, None);

        assert!(matches!(result, Err(StartupError::NotADirectory(_))));
        let mode = std::fs::metadata(elsewhere.join("supervise"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "root changed a directory elsewhere");
    }
}
