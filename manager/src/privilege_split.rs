//! Start-up as root: take the instance lock, lay out the directories, start berth-helper as
//! root on the private socket, then drop to the berth user for good (like OpenSSH's privilege
//! separation). Runs before any other thread exists.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use crate::paths::Paths;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "user '{0}' does not exist; create it with: useradd --system --no-create-home --shell /usr/sbin/nologin {0}"
    )]
    NoSuchUser(String),
    #[error("user '{0}' is root; berthd must run unprivileged")]
    UserIsRoot(String),
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
pub fn lock_instance(paths: &Paths) -> Result<InstanceLock, StartupError> {
    let path = paths.lock_file();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartupError::Lock {
            path: path.clone(),
            source,
        })?;
    match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(InstanceLock(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            Err(StartupError::AlreadyRunning(paths.runtime.clone()))
        }
        Err(e) => Err(StartupError::Lock {
            path,
            source: e.into(),
        }),
    }
}

fn make_dir(path: &Path, mode: u32, owner: Option<&User>) -> Result<(), StartupError> {
    let err = |source| StartupError::PrepareDir {
        path: path.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(err)?;
    // Still root here, in directories a previous berthd (as `berth`) owned: mode and owner
    // are set through a descriptor of the directory itself, so a symlink put in its place
    // (to /etc, say) is refused instead of followed.
    let dir = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(mode)).map_err(|e| err(e.into()))?;
    if let Some(user) = owner {
        rustix::fs::fchown(
            &dir,
            Some(rustix::fs::Uid::from_raw(user.uid)),
            Some(rustix::fs::Gid::from_raw(user.gid)),
        )
        .map_err(|e| err(e.into()))?;
    }
    Ok(())
}

/// Creates the runtime and state layout, owned by `owner` (None when not running as root).
pub fn prepare_dirs(paths: &Paths, owner: Option<&User>) -> Result<(), StartupError> {
    make_dir(&paths.runtime, 0o755, owner)?;
    make_dir(&paths.private_dir(), 0o700, owner)?;
    make_dir(&paths.supervise_dir(), 0o700, owner)?;
    make_dir(&paths.state, 0o755, owner)?;
    make_dir(&paths.images_dir(), 0o755, owner)?;
    make_dir(&paths.attached_dir(), 0o755, owner)?;
    make_dir(&paths.logs_dir(), 0o750, owner)?;
    make_dir(&paths.private_state_dir(), 0o700, owner)?;
    Ok(())
}

/// Starts berth-helper (next to this executable) as root and waits until its socket accepts
/// connections. The helper exits when berthd does (through its lifeline pipe). It logs at
/// berthd's level to berthd's log target (it clears its environment, so RUST_LOG would not reach it).
pub fn start_helper(
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
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

    #[test]
    fn second_lock_on_the_same_runtime_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path());
        let _first = lock_instance(&paths).unwrap();

        let second = lock_instance(&paths);

        assert!(matches!(second, Err(StartupError::AlreadyRunning(_))));
    }
}
