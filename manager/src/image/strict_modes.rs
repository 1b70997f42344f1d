//! sshd's StrictModes for image paths: whoever may write a directory on the path of an image
//! may swap the image for something else, so `attach` wants every component of the path, the
//! image directory included, owned by root or berthd's own user and writable by nobody else.
//!
//! One deliberate difference from sshd: a sticky directory above the image (`/tmp`) may be
//! group- or world-writable. Its entry on the path must itself belong to root or berth (every
//! component is checked), and the sticky bit keeps anyone else from renaming or removing an
//! entry they do not own, so nobody else can swap it. The image directory itself gets no such
//! exception. ACL write grants show in the group bits (the ACL mask), so they count as group
//! write.

use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode};

#[derive(Debug, thiserror::Error)]
pub enum StrictModesError {
    #[error("cannot inspect {path}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is owned by uid {owner}, not by root or berthd's user: that user could replace \
         the image"
    )]
    Owner { path: PathBuf, owner: u32 },
    #[error(
        "{path} is writable by group or others (mode {mode:04o}): they could replace the image"
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// Checks every component of `canonical` (an absolute path without symlinks, such as
/// `std::fs::canonicalize` returns) for owner and mode; `trusted_uid` is berthd's own uid.
pub fn check(canonical: &Path, trusted_uid: u32) -> Result<(), StrictModesError> {
    for component in canonical.ancestors() {
        let st = rustix::fs::stat(component).map_err(|e| StrictModesError::Stat {
            path: component.to_owned(),
            source: e.into(),
        })?;
        if st.st_uid != 0 && st.st_uid != trusted_uid {
            return Err(StrictModesError::Owner {
                path: component.to_owned(),
                owner: st.st_uid,
            });
        }
        let mode = Mode::from_raw_mode(st.st_mode);
        let sticky_dir =
            FileType::from_raw_mode(st.st_mode) == FileType::Directory && mode.contains(Mode::SVTX);
        let is_image = component == canonical;
        if mode.intersects(Mode::WGRP | Mode::WOTH) && (is_image || !sticky_dir) {
            return Err(StrictModesError::Writable {
                path: component.to_owned(),
                mode: st.st_mode & 0o7777,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const BERTH: u32 = 4321;

    /// `base/parent/image`, root-owned 0755, under a fresh 0755 directory.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let parent = base.join("parent");
        let image = parent.join("image");
        std::fs::create_dir_all(&image).unwrap();
        for d in [&parent, &image] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        (tmp, parent, image)
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_path_of_root_owned_directories_passes() {
        let (_tmp, _parent, image) = tree();

        assert!(check(&image, BERTH).is_ok());
    }

    #[test]
    fn components_owned_by_berth_pass() {
        let (_tmp, parent, image) = tree();
        std::os::unix::fs::chown(&parent, Some(BERTH), None).unwrap();

        assert!(check(&image, BERTH).is_ok());
    }

    #[test]
    fn a_parent_owned_by_another_user_is_refused() {
        let (_tmp, parent, image) = tree();
        std::os::unix::fs::chown(&parent, Some(BERTH + 1), None).unwrap();

        let result = check(&image, BERTH);

        assert!(
            matches!(&result, Err(StrictModesError::Owner { path, owner }) if *path == parent && *owner == BERTH + 1),
            "{result:?}"
        );
    }

    #[test]
    fn a_group_writable_parent_is_refused() {
        let (_tmp, parent, image) = tree();
        chmod(&parent, 0o775);

        let result = check(&image, BERTH);

        assert!(
            matches!(&result, Err(StrictModesError::Writable { path, .. }) if *path == parent),
            "{result:?}"
        );
    }

    #[test]
    fn a_sticky_world_writable_parent_passes() {
        let (_tmp, parent, image) = tree();
        chmod(&parent, 0o1777);

        assert!(check(&image, BERTH).is_ok());
    }

    #[test]
    fn a_world_writable_parent_without_the_sticky_bit_is_refused() {
        let (_tmp, parent, image) = tree();
        chmod(&parent, 0o777);

        assert!(matches!(
            check(&image, BERTH),
            Err(StrictModesError::Writable { .. })
        ));
    }

    #[test]
    fn a_sticky_world_writable_image_directory_is_refused() {
        let (_tmp, _parent, image) = tree();
        chmod(&image, 0o1777);

        assert!(matches!(
            check(&image, BERTH),
            Err(StrictModesError::Writable { .. })
        ));
    }
}
