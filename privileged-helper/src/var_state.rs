//! `RemoveVarState`: removing an attachment's persistent /var (`berth detach --clean`).
//!
//! The attachment's directory is berthd's and everything below it was written by a hostile
//! service, so the tree is removed by descriptors only: each directory opened below its parent
//! with `O_NOFOLLOW | O_DIRECTORY` (a symlink is unlinked, never followed), no directory on
//! another mount than the top's entered (a mount is never crossed), and only entries host root
//! or an id of the attachment's block owns are removed; meeting anything else (a host user's
//! file moved in) stops the removal with an error naming it, leaving the rest. The directory's
//! `flock` is taken first: a running unit holds it (see `sandbox::mounts::persistent_var`).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use berth_protocol::sandbox::UidBlock;
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

/// Deepest directory removed (one descriptor open per level).
const MAX_DEPTH: usize = 256;
/// The layers the helper keeps in the attachment's directory.
const LAYERS: [&CStr; 2] = [c"upper", c"work"];

#[derive(Debug, thiserror::Error)]
pub enum VarStateError {
    #[error("a unit of the attachment is running with it")]
    InUse,
    #[error("cannot lock the attachment's directory: {0}")]
    Lock(#[source] Errno),
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: String,
        #[source]
        source: Errno,
    },
    #[error("{path} belongs to uid {uid}, neither host root nor the attachment's block: left")]
    Foreign { path: String, uid: u32 },
    #[error("{path} is another mount: not crossed")]
    Mount { path: String },
    #[error("{path}: more than {MAX_DEPTH} levels of directories")]
    TooDeep { path: String },
}

/// Removes `upper/` and `work/` in the attachment's directory `dir`; how many entries went.
pub fn remove(dir: OwnedFd, block: UidBlock) -> Result<u64, VarStateError> {
    match rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Err(VarStateError::InUse),
        Err(e) => return Err(VarStateError::Lock(e)),
    }
    let top = mount_id(dir.as_fd()).map_err(|source| VarStateError::Remove {
        path: ".".into(),
        source,
    })?;
    let mut walk = Walk {
        block,
        mount: top,
        removed: 0,
    };
    for layer in LAYERS {
        walk.entry(dir.as_fd(), layer, &layer.to_string_lossy(), 0)?;
    }
    Ok(walk.removed)
}

fn mount_id(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).map(|s| s.stx_mnt_id)
}

struct Walk {
    block: UidBlock,
    mount: u64,
    removed: u64,
}

impl Walk {
    fn owned(&self, uid: u32) -> bool {
        uid == 0 || self.block.inside_id(uid).is_some()
    }

    /// Removes `name` below `parent` (shown as `path`), a directory with all below it.
    fn entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &str,
        depth: usize,
    ) -> Result<(), VarStateError> {
        let failed = |source| VarStateError::Remove {
            path: path.to_owned(),
            source,
        };
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(failed(e)),
        };
        if !self.owned(st.st_uid) {
            return Err(VarStateError::Foreign {
                path: path.to_owned(),
                uid: st.st_uid,
            });
        }
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {
                    self.removed += 1;
                    Ok(())
                }
                Err(e) => Err(failed(e)),
            };
        }
        if depth >= MAX_DEPTH {
            return Err(VarStateError::TooDeep {
                path: path.to_owned(),
            });
        }
        let dir = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed)?;
        // What was opened is what is judged: it may have been swapped since statat.
        let opened = rustix::fs::fstat(&dir).map_err(failed)?;
        if !self.owned(opened.st_uid) {
            return Err(VarStateError::Foreign {
                path: path.to_owned(),
                uid: opened.st_uid,
            });
        }
        if mount_id(dir.as_fd()).map_err(failed)? != self.mount {
            return Err(VarStateError::Mount {
                path: path.to_owned(),
            });
        }
        self.children(&dir, path, depth)?;
        match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {
                self.removed += 1;
                Ok(())
            }
            Err(e) => Err(failed(e)),
        }
    }

    fn children(&mut self, dir: &OwnedFd, path: &str, depth: usize) -> Result<(), VarStateError> {
        let failed = |source| VarStateError::Remove {
            path: path.to_owned(),
            source,
        };
        // Listed in rounds: removing entries while reading a directory may skip some.
        loop {
            let reading = rustix::fs::openat(
                dir,
                c".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(failed)?;
            let mut names = Vec::new();
            for entry in rustix::fs::Dir::new(reading).map_err(failed)? {
                let entry = entry.map_err(failed)?;
                let name = entry.file_name();
                if !matches!(name.to_bytes(), b"." | b"..") {
                    names.push(name.to_owned());
                }
                if names.len() == 4096 {
                    break;
                }
            }
            if names.is_empty() {
                return Ok(());
            }
            for name in names {
                let child = format!("{path}/{}", name.to_string_lossy());
                self.entry(dir.as_fd(), &name, &child, depth + 1)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::path::Path;

    use super::*;

    const BLOCK: UidBlock = UidBlock {
        first: 524_288,
        size: berth_protocol::sandbox::UID_BLOCK_SIZE,
    };

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (changes owners); run as root, as CI does"
        );
    }

    fn open(path: &Path) -> OwnedFd {
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    /// An attachment directory with a used upper layer and work directory.
    fn state() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(upper.join("lib/app/deep")).unwrap();
        std::fs::write(upper.join("lib/app/deep/data"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("work/work")).unwrap();
        for p in ["upper", "upper/lib", "upper/lib/app", "upper/lib/app/deep"] {
            chown(&dir.path().join(p), BLOCK.first);
        }
        chown(&upper.join("lib/app/deep/data"), BLOCK.first + 100);
        dir
    }

    #[test]
    fn upper_and_work_are_removed_and_nothing_else() {
        require_root();
        let dir = state();
        std::fs::write(dir.path().join("berthd-note"), "mine").unwrap();

        let removed = remove(open(dir.path()), BLOCK).unwrap();

        assert_eq!(removed, 7);
        assert!(!dir.path().join("upper").exists());
        assert!(!dir.path().join("work").exists());
        assert!(dir.path().join("berthd-note").exists());
    }

    #[test]
    fn a_symlink_is_removed_not_followed() {
        require_root();
        let dir = state();
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("precious"), "x").unwrap();
        let link = dir.path().join("upper/lib/escape");
        symlink(victim.path(), &link).unwrap();
        chown(&link, BLOCK.first);

        remove(open(dir.path()), BLOCK).unwrap();

        assert!(victim.path().join("precious").exists());
    }

    #[test]
    fn a_host_users_file_stops_the_removal_and_stays() {
        require_root();
        let dir = state();
        let foreign = dir.path().join("upper/lib/app/foreign");
        std::fs::write(&foreign, "a host user's").unwrap();
        chown(&foreign, 1000);

        let refused = remove(open(dir.path()), BLOCK);

        assert!(
            matches!(&refused, Err(VarStateError::Foreign { uid: 1000, path })
                if path == "upper/lib/app/foreign"),
            "{refused:?}"
        );
        assert_eq!(std::fs::metadata(&foreign).unwrap().uid(), 1000);
    }

    #[test]
    fn a_mount_below_is_not_crossed() {
        require_root();
        let dir = state();
        let point = dir.path().join("upper/lib/mnt");
        std::fs::create_dir(&point).unwrap();
        chown(&point, BLOCK.first);
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("kept"), "x").unwrap();
        let bound = std::process::Command::new("mount")
            .arg("--bind")
            .arg(source.path())
            .arg(&point)
            .status()
            .unwrap();
        assert!(bound.success());

        let refused = remove(open(dir.path()), BLOCK);

        let _ = std::process::Command::new("umount").arg(&point).status();
        assert!(
            matches!(&refused, Err(VarStateError::Mount { .. })),
            "{refused:?}"
        );
        assert!(source.path().join("kept").exists());
    }

    #[test]
    fn a_directory_a_run_holds_is_refused() {
        require_root();
        let dir = state();
        let held = open(dir.path());
        rustix::fs::flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();

        let refused = remove(open(dir.path()), BLOCK);

        assert!(matches!(refused, Err(VarStateError::InUse)), "{refused:?}");
        assert!(dir.path().join("upper").exists());
    }

    #[test]
    fn a_directory_without_layers_removes_nothing() {
        require_root();
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(remove(open(dir.path()), BLOCK).unwrap(), 0);
    }
}
