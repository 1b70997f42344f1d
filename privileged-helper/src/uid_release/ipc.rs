//! RemoveIPC=: the System V IPC objects and POSIX message queues a uid owns or created, in
//! the helper's own (the host's) IPC namespace.
//!
//! A service with PrivateIPC= has its own IPC namespace, and everything in it goes with the
//! namespace; one sharing the host's leaves its objects there for the next holder of its uid.
//! Objects are found by index (`SHM_STAT` and its kind, from 0 to the highest index in use
//! that `*_INFO` reports), as systemd's clean-ipc does; POSIX message queues through a private,
//! detached instance of the mqueue file system of this IPC namespace, so no host path (such
//! as /dev/mqueue, which may not be mounted) is involved.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// The `*_STAT` and `*_INFO` commands of shmctl(2), semctl(2) and msgctl(2) (linux/shm.h,
/// linux/sem.h, linux/msg.h; libc has only some of them).
const SHM_STAT: libc::c_int = 13;
const SHM_INFO: libc::c_int = 14;
const SEM_STAT: libc::c_int = 18;
const SEM_INFO: libc::c_int = 19;
const MSG_STAT: libc::c_int = 11;
const MSG_INFO: libc::c_int = 12;

/// More indices than the kernel allows (IPCMNI is 32768, 16 M with ipcmni_extend): bounds the
/// scan whatever `*_INFO` says.
const MAX_INDEX: libc::c_int = 1 << 24;

/// What was removed, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub shared_memory: usize,
    pub semaphores: usize,
    pub message_queues: usize,
    pub posix_message_queues: usize,
}

impl Removed {
    pub fn total(&self) -> usize {
        self.shared_memory + self.semaphores + self.message_queues + self.posix_message_queues
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("cannot list the {kind}: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {kind} {id}: {source}")]
    Remove {
        kind: &'static str,
        id: String,
        #[source]
        source: io::Error,
    },
}

/// True when an object with these owner and creator ids belongs to `uid` (and its gid).
fn owned_by(perm: &libc::ipc_perm, uid: u32) -> bool {
    perm.uid == uid || perm.cuid == uid || perm.gid == uid || perm.cgid == uid
}

/// Removes every IPC object of `uid` (whose gid is the same number).
pub fn remove_ipc(uid: u32) -> Result<Removed, IpcError> {
    Ok(Removed {
        shared_memory: remove_shared_memory(uid)?,
        semaphores: remove_semaphores(uid)?,
        message_queues: remove_message_queues(uid)?,
        posix_message_queues: remove_posix_message_queues(uid)?,
    })
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Scans the indices `0..=max` with `stat` (which returns the object's id and its permissions,
/// or None for an unused index) and removes those of `uid` with `remove`.
fn scan(
    kind: &'static str,
    max: libc::c_int,
    uid: u32,
    stat: impl Fn(libc::c_int) -> Option<(libc::c_int, libc::ipc_perm)>,
    remove: impl Fn(libc::c_int) -> libc::c_int,
) -> Result<usize, IpcError> {
    if max < 0 {
        return Err(IpcError::List {
            kind,
            source: last_error(),
        });
    }
    let mut removed = 0;
    for index in 0..=max.min(MAX_INDEX) {
        let Some((id, perm)) = stat(index) else {
            continue;
        };
        if !owned_by(&perm, uid) {
            continue;
        }
        if remove(id) == -1 {
            let source = last_error();
            // Gone meanwhile (removed by its last user, or already marked for removal).
            if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) {
                continue;
            }
            return Err(IpcError::Remove {
                kind,
                id: id.to_string(),
                source,
            });
        }
        removed += 1;
    }
    Ok(removed)
}

fn remove_shared_memory(uid: u32) -> Result<usize, IpcError> {
    // SAFETY: all-zero is a valid shmid_ds (plain integers).
    let mut info: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: SHM_INFO writes a struct shm_info, smaller than the shmid_ds it is given.
    let max = unsafe { libc::shmctl(0, SHM_INFO, &mut info) };
    scan(
        "shared memory segments",
        max,
        uid,
        |index| {
            // SAFETY: as above; SHM_STAT fills the shmid_ds.
            let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: `ds` is a valid, writable shmid_ds.
            let id = unsafe { libc::shmctl(index, SHM_STAT, &mut ds) };
            (id >= 0).then_some((id, ds.shm_perm))
        },
        // SAFETY: IPC_RMID ignores the buffer.
        |id| unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
    )
}

fn remove_semaphores(uid: u32) -> Result<usize, IpcError> {
    // SAFETY: all-zero is a valid semid_ds (plain integers).
    let mut info: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: SEM_INFO writes a struct seminfo (ten ints), smaller than the semid_ds whose
    // address is passed as the semun argument.
    let max = unsafe { libc::semctl(0, 0, SEM_INFO, &mut info as *mut libc::semid_ds) };
    scan(
        "semaphore sets",
        max,
        uid,
        |index| {
            // SAFETY: as above.
            let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: SEM_STAT fills the semid_ds passed as the semun argument.
            let id = unsafe { libc::semctl(index, 0, SEM_STAT, &mut ds as *mut libc::semid_ds) };
            (id >= 0).then_some((id, ds.sem_perm))
        },
        // SAFETY: IPC_RMID takes no fourth argument.
        |id| unsafe { libc::semctl(id, 0, libc::IPC_RMID) },
    )
}

fn remove_message_queues(uid: u32) -> Result<usize, IpcError> {
    // SAFETY: all-zero is a valid msqid_ds (plain integers).
    let mut info: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: MSG_INFO writes a struct msginfo (eight ints), smaller than a msqid_ds.
    let max = unsafe { libc::msgctl(0, MSG_INFO, &mut info) };
    scan(
        "message queues",
        max,
        uid,
        |index| {
            // SAFETY: as above.
            let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: MSG_STAT fills the msqid_ds.
            let id = unsafe { libc::msgctl(index, MSG_STAT, &mut ds) };
            (id >= 0).then_some((id, ds.msg_perm))
        },
        // SAFETY: IPC_RMID ignores the buffer.
        |id| unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
    )
}

/// A detached mount of this IPC namespace's mqueue file system.
fn mqueue_instance() -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen(c"mqueue", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_create(&fs)?;
    let mount = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    Ok(mount)
}

fn remove_posix_message_queues(uid: u32) -> Result<usize, IpcError> {
    const KIND: &str = "POSIX message queues";
    let list = |source: io::Error| IpcError::List { kind: KIND, source };
    let mount = mqueue_instance().map_err(list)?;
    let dir = rustix::fs::openat(
        &mount,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| list(e.into()))?;
    let dup = dir.try_clone().map_err(list)?;
    let mut entries = rustix::fs::Dir::new(dup).map_err(|e| list(e.into()))?;
    let mut names = Vec::new();
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| list(e.into()))?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_uid == uid || st.st_gid == uid => names.push(name.to_owned()),
            Ok(_) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(list(e.into())),
        }
    }
    let mut removed = 0;
    for name in names {
        match rustix::fs::unlinkat(&dir, name.as_c_str(), AtFlags::empty()) {
            Ok(()) => removed += 1,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(IpcError::Remove {
                    kind: KIND,
                    id: name.to_string_lossy().into_owned(),
                    source: e.into(),
                });
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: u32 = 61901;
    const OTHER: u32 = 61902;

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (IPC objects of other uids); run as root, as CI does"
        );
    }

    /// A private shared memory segment handed to `uid` (root may set any owner).
    fn segment_of(uid: u32) -> libc::c_int {
        // SAFETY: plain integer arguments.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", last_error());
        // SAFETY: all-zero is a valid shmid_ds; IPC_STAT fills it.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is valid and writable.
        assert_eq!(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) }, 0);
        ds.shm_perm.uid = uid;
        ds.shm_perm.gid = uid;
        // SAFETY: IPC_SET reads the shmid_ds.
        assert_eq!(unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) }, 0);
        id
    }

    fn segment_exists(id: libc::c_int) -> bool {
        // SAFETY: as above.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is valid and writable.
        unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 }
    }

    fn queue_of(uid: u32) -> libc::c_int {
        // SAFETY: plain integer arguments.
        let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "msgget: {}", last_error());
        // SAFETY: all-zero is a valid msqid_ds; IPC_STAT fills it.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is valid and writable.
        assert_eq!(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) }, 0);
        ds.msg_perm.uid = uid;
        // SAFETY: IPC_SET reads the msqid_ds.
        assert_eq!(unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) }, 0);
        id
    }

    fn queue_exists(id: libc::c_int) -> bool {
        // SAFETY: as above.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is valid and writable.
        unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) == 0 }
    }

    fn semaphores_of(uid: u32) -> libc::c_int {
        // SAFETY: plain integer arguments.
        let id = unsafe { libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "semget: {}", last_error());
        // SAFETY: all-zero is a valid semid_ds; IPC_STAT fills it.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: the semid_ds is passed as the semun argument.
        let stat = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
        assert_eq!(stat, 0);
        ds.sem_perm.uid = uid;
        // SAFETY: IPC_SET reads the semid_ds.
        let set = unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) };
        assert_eq!(set, 0);
        id
    }

    fn semaphores_exist(id: libc::c_int) -> bool {
        // SAFETY: as above.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: the semid_ds is passed as the semun argument.
        unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) == 0 }
    }

    #[test]
    fn the_uids_system_v_objects_go_and_anothers_stay() {
        require_root();
        let (shm, msg, sem) = (segment_of(OWNER), queue_of(OWNER), semaphores_of(OWNER));
        let (kept_shm, kept_msg, kept_sem) =
            (segment_of(OTHER), queue_of(OTHER), semaphores_of(OTHER));

        let removed = remove_ipc(OWNER).unwrap();

        let gone = (
            !segment_exists(shm),
            !queue_exists(msg),
            !semaphores_exist(sem),
        );
        let kept = (
            segment_exists(kept_shm),
            queue_exists(kept_msg),
            semaphores_exist(kept_sem),
        );
        remove_ipc(OTHER).unwrap();
        assert_eq!(gone, (true, true, true), "{removed:?}");
        assert_eq!(kept, (true, true, true));
        assert!(removed.shared_memory >= 1 && removed.message_queues >= 1);
        assert!(removed.semaphores >= 1);
    }

    #[test]
    fn the_uids_posix_message_queues_go_and_anothers_stay() {
        require_root();
        let mount = mqueue_instance().unwrap();
        let create = |name: &std::ffi::CStr, uid: u32| {
            let fd = rustix::fs::openat(
                &mount,
                name,
                OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .unwrap();
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(uid)),
            )
            .unwrap();
        };
        create(c"berth-test-owner-queue", OWNER + 10);
        create(c"berth-test-other-queue", OTHER + 10);
        let exists = |name: &std::ffi::CStr| {
            rustix::fs::statat(&mount, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
        };

        let removed = remove_ipc(OWNER + 10).unwrap();

        let (gone, kept) = (
            !exists(c"berth-test-owner-queue"),
            exists(c"berth-test-other-queue"),
        );
        let _ = rustix::fs::unlinkat(&mount, c"berth-test-other-queue", AtFlags::empty());
        assert!(gone, "{removed:?}");
        assert!(kept);
        assert_eq!(removed.posix_message_queues, 1);
    }
}
