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

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

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
        check_component(component, &st, component == canonical, trusted_uid)?;
    }
    Ok(())
}

/// [`check`] for an image a client passed as a descriptor `image` for the path it named,
/// `named`. The directories above the image are found from the descriptor itself (`..`, which
/// needs search permission only on the directory it starts from), so they are the image's real
/// ancestors and berthd sees them even below a directory it may not enter: the walk checks each
/// one up to the root, or up to the first directory berthd may not search (root's 0700 home,
/// say: itself checked), above which the named path's components are checked where berthd can
/// reach them. What lies above two directories berthd may not search is left to whoever attached
/// the image, who could open it. While berthd runs it keeps the descriptor, so a swapped path
/// changes nothing it runs; after a restart it reopens the path and checks the image's identity.
pub fn check_passed(
    image: impl AsFd,
    named: &Path,
    trusted_uid: u32,
) -> Result<(), StrictModesError> {
    let stat_error = |path: &Path| {
        let path = path.to_owned();
        move |e: rustix::io::Errno| StrictModesError::Stat {
            path,
            source: e.into(),
        }
    };
    let host_root = rustix::fs::stat("/").map_err(stat_error(Path::new("/")))?;
    let mut dir = image
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| StrictModesError::Stat {
            path: named.to_owned(),
            source: e,
        })?;
    let mut levels = 0;
    loop {
        let shown = if levels == 0 {
            named.to_owned()
        } else {
            real_path(&dir).unwrap_or_else(|| named.to_owned())
        };
        let st = rustix::fs::fstat(&dir).map_err(stat_error(&shown))?;
        check_component(&shown, &st, levels == 0, trusted_uid)?;
        if (st.st_dev, st.st_ino) == (host_root.st_dev, host_root.st_ino) {
            return Ok(());
        }
        let parent = match rustix::fs::openat(
            &dir,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(parent) => parent,
            // Not searchable by berthd (or not a directory): the named path goes on from here.
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::NOTDIR) => break,
            Err(e) => return Err(stat_error(&shown)(e)),
        };
        let parent_st = rustix::fs::fstat(&parent).map_err(stat_error(&shown))?;
        if (parent_st.st_dev, parent_st.st_ino) == (st.st_dev, st.st_ino) {
            // The root of a mount that is attached nowhere: nothing above it.
            return Ok(());
        }
        dir = parent;
        levels += 1;
    }
    for component in named.ancestors().skip(levels + 1) {
        match rustix::fs::stat(component) {
            Ok(st) => check_component(component, &st, false, trusted_uid)?,
            Err(rustix::io::Errno::ACCESS) => {}
            Err(e) => return Err(stat_error(component)(e)),
        }
    }
    Ok(())
}

/// Where berthd's own descriptor `fd` is, for messages (the kernel knows it whatever the
/// permissions on the way).
fn real_path(fd: &std::os::fd::OwnedFd) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

fn check_component(
    component: &Path,
    st: &rustix::fs::Stat,
    is_image: bool,
    trusted_uid: u32,
) -> Result<(), StrictModesError> {
    if st.st_uid != 0 && st.st_uid != trusted_uid {
        return Err(StrictModesError::Owner {
            path: component.to_owned(),
            owner: st.st_uid,
        });
    }
    let mode = Mode::from_raw_mode(st.st_mode);
    let sticky_dir =
        FileType::from_raw_mode(st.st_mode) == FileType::Directory && mode.contains(Mode::SVTX);
    if mode.intersects(Mode::WGRP | Mode::WOTH) && (is_image || !sticky_dir) {
        return Err(StrictModesError::Writable {
            path: component.to_owned(),
            mode: st.st_mode & 0o7777,
        });
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

    #[test]
    fn a_passed_image_is_checked_through_its_descriptor() {
        let (_tmp, _parent, image) = tree();
        chmod(&image, 0o777);
        let fd = std::fs::File::open(&image).unwrap();

        let result = check_passed(&fd, &image, BERTH);

        assert!(
            matches!(&result, Err(StrictModesError::Writable { path, .. }) if *path == image),
            "{result:?}"
        );
    }

    #[test]
    fn a_passed_image_is_checked_above_as_far_as_berthd_reaches() {
        let (_tmp, parent, image) = tree();
        std::os::unix::fs::chown(&parent, Some(BERTH + 1), None).unwrap();
        let fd = std::fs::File::open(&image).unwrap();

        let result = check_passed(&fd, &image, BERTH);

        assert!(
            matches!(&result, Err(StrictModesError::Owner { path, .. }) if *path == parent),
            "{result:?}"
        );
    }
}
