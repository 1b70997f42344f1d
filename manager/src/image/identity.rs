//! Which directory an attached image is, so that `start` runs the image `attach` checked.
//!
//! The attachment records the identity of the directory whose units it copied: device, inode,
//! birth time, and the mount it was reached through. `start` reopens the recorded path and
//! refuses it unless it is still that directory: whoever can write a parent directory of the
//! image could otherwise swap it for a symlink to the host's `/usr` between attach and start.
//!
//! Mount ids are unique only while the system runs, so the record carries the boot id with it;
//! after a reboot only device, inode and birth time are compared. A refusal is safe to get
//! wrong in that direction: attaching the image again records what its path names now.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use serde::{Deserialize, Serialize};

/// The identity of an image directory, as recorded in `attachment.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIdentity {
    pub dev_major: u32,
    pub dev_minor: u32,
    pub ino: u64,
    /// Birth time (seconds, nanoseconds) where the filesystem keeps one: a freed inode number
    /// is soon given to a new directory.
    pub birth: Option<(i64, u32)>,
    /// `STATX_MNT_ID` (Linux 5.8+), meaningful only within boot `boot_id`.
    pub mount_id: Option<u64>,
    pub boot_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot open image {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot identify image {path}: {source}")]
    Identify {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The path names another directory than the one attached.
    #[error("{path}: {reason}")]
    Changed { path: String, reason: String },
}

impl ImageIdentity {
    /// The identity of the directory `fd` refers to (any descriptor, `O_PATH` included).
    pub fn of(fd: impl AsFd) -> std::io::Result<ImageIdentity> {
        let st = rustix::fs::statx(
            fd,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::TYPE | StatxFlags::INO | StatxFlags::BTIME | StatxFlags::MNT_ID,
        )?;
        let has = |flag: StatxFlags| StatxFlags::from_bits_retain(st.stx_mask).contains(flag);
        Ok(ImageIdentity {
            dev_major: st.stx_dev_major,
            dev_minor: st.stx_dev_minor,
            ino: st.stx_ino,
            birth: has(StatxFlags::BTIME).then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec)),
            mount_id: has(StatxFlags::MNT_ID).then_some(st.stx_mnt_id),
            boot_id: boot_id().map(str::to_owned),
        })
    }

    /// Why `found` is not this image; `None` when it is.
    pub fn mismatch(&self, found: &ImageIdentity) -> Option<String> {
        if (self.dev_major, self.dev_minor, self.ino)
            != (found.dev_major, found.dev_minor, found.ino)
        {
            return Some(format!(
                "the path now names inode {} on device {}:{}, the attached image was inode {} on \
                 device {}:{}",
                found.ino,
                found.dev_major,
                found.dev_minor,
                self.ino,
                self.dev_major,
                self.dev_minor
            ));
        }
        if let (Some(recorded), Some(now)) = (self.birth, found.birth)
            && recorded != now
        {
            return Some(
                "the directory at the path was created after the image was attached".into(),
            );
        }
        let same_boot = self.boot_id.is_some() && self.boot_id == found.boot_id;
        if let (true, Some(recorded), Some(now)) = (same_boot, self.mount_id, found.mount_id)
            && recorded != now
        {
            return Some(format!(
                "the path now reaches it through mount {now}, the image was attached through \
                 mount {recorded}"
            ));
        }
        None
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
pub(crate) fn boot_id() -> Option<&'static str> {
    static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .as_deref()
}

/// Opens the image directory at `path` for reading, as the helper wants it, and only if it is
/// the directory `recorded` identifies. `None` (an attachment made before berth recorded
/// identities) is refused too: there is nothing to tell the attached image from another.
pub fn open_attached(
    path: &Path,
    recorded: Option<&ImageIdentity>,
) -> Result<OwnedFd, IdentityError> {
    let shown = || path.display().to_string();
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| IdentityError::Open {
        path: shown(),
        source: e.into(),
    })?;
    let found = ImageIdentity::of(&fd).map_err(|source| IdentityError::Identify {
        path: shown(),
        source,
    })?;
    check_recorded(path, recorded, &found)?;
    Ok(fd)
}

/// `Ok` when `found`, what `path` names now, is the image `recorded` identifies (`None`, an
/// attachment that records no identity, is refused).
pub fn check_recorded(
    path: &Path,
    recorded: Option<&ImageIdentity>,
    found: &ImageIdentity,
) -> Result<(), IdentityError> {
    let reason = match recorded {
        None => Some("the attachment records no identity of the image".to_owned()),
        Some(recorded) => recorded.mismatch(found),
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(IdentityError::Changed {
            path: path.display().to_string(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(path: &Path) -> ImageIdentity {
        ImageIdentity::of(std::fs::File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn the_same_directory_opens() {
        let dir = tempfile::tempdir().unwrap();
        let recorded = identity_of(dir.path());

        assert!(open_attached(dir.path(), Some(&recorded)).is_ok());
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("image");
        let host = tmp.path().join("host");
        std::fs::create_dir(&image).unwrap();
        std::fs::create_dir(&host).unwrap();
        let recorded = identity_of(&image);
        std::fs::rename(&image, tmp.path().join("image.old")).unwrap();
        std::os::unix::fs::symlink(&host, &image).unwrap();

        let result = open_attached(&image, Some(&recorded));

        assert!(
            matches!(&result, Err(IdentityError::Changed { reason, .. }) if reason.contains("inode")),
            "{result:?}"
        );
    }

    #[test]
    fn an_attachment_without_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let result = open_attached(dir.path(), None);

        assert!(matches!(result, Err(IdentityError::Changed { .. })));
    }

    #[test]
    fn another_mount_of_the_same_boot_is_a_mismatch_and_of_another_boot_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let recorded = identity_of(dir.path());
        let elsewhere = ImageIdentity {
            mount_id: recorded.mount_id.map(|m| m + 1).or(Some(1)),
            ..recorded.clone()
        };
        let after_reboot = ImageIdentity {
            boot_id: Some("another boot".into()),
            ..elsewhere.clone()
        };

        assert!(recorded.mismatch(&elsewhere).is_some());
        assert_eq!(recorded.mismatch(&after_reboot), None);
    }

    #[test]
    fn a_new_directory_with_the_same_inode_number_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let recorded = identity_of(dir.path());
        let reborn = ImageIdentity {
            birth: Some((1, 0)),
            ..recorded.clone()
        };

        let reason = recorded.mismatch(&reborn);

        assert!(
            recorded.birth.is_none() || reason.is_some(),
            "a different birth time went unnoticed"
        );
    }
}
