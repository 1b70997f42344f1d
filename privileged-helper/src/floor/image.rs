//! The floor of `MountImage`, and how a mount the helper made is recognised when berthd hands
//! it back as a `Spawn` image root.
//!
//! Recognising needs no memory of past calls (the helper keeps no state it cannot rebuild, and
//! berthd's mounts outlive a helper restart): a helper mount is the root of a read-only,
//! `nosuid,nodev` mount of an allowed file system on a read-only, autoclear loop device,
//! attached nowhere in the helper's (the host's) mount namespace. Only root binds loop devices
//! and mounts these file systems, and berthd cannot reach another process's private mounts;
//! what it could pass otherwise is a host mount, attached, which the last check refuses.

use std::os::fd::OwnedFd;

use berth_protocol::helper::MountImageParams;
use rustix::fs::{AtFlags, FileType, OFlags, StatVfsMountFlags, StatxAttributes, StatxFlags};

use super::{Refusal, fd_path, refuse};
use crate::config::FloorPolicy;
use crate::image_mount::{Filesystem, MountRequest};

/// Loop devices' block major (linux/major.h).
const LOOP_MAJOR: u32 = 7;

/// Offsets and sizes are in whole sectors: the loop device's size is counted in them.
const SECTOR: u64 = 512;

impl FloorPolicy {
    /// Checks a `MountImage` call and its one fd, the backing file.
    pub fn check_mount_image(
        &self,
        params: MountImageParams,
        fds: Vec<OwnedFd>,
    ) -> Result<MountRequest, Refusal> {
        let filesystem = self.allowed_filesystem(&params.fstype)?;
        let [backing]: [OwnedFd; 1] = fds
            .try_into()
            .map_err(|_| refuse("fds", "expected exactly 1 file descriptor, the image file"))?;
        let offset = u64::try_from(params.offset).map_err(|_| refuse("offset", "negative"))?;
        let size = u64::try_from(params.size).map_err(|_| refuse("size", "negative"))?;
        if offset % SECTOR != 0 {
            return Err(refuse(
                "offset",
                format!("{offset} is not a multiple of 512"),
            ));
        }
        if size == 0 || size % SECTOR != 0 {
            return Err(refuse(
                "size",
                format!("{size} is not a positive multiple of 512"),
            ));
        }
        let st = rustix::fs::fstat(&backing).map_err(|e| refuse("image file", e.to_string()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(refuse("image file", "not a regular file"));
        }
        let flags =
            rustix::fs::fcntl_getfl(&backing).map_err(|e| refuse("image file", e.to_string()))?;
        // O_PATH proves no read permission; a writable fd could change the file system under
        // the kernel while mounted (and the loop device would take it read-write).
        if flags.contains(OFlags::PATH) {
            return Err(refuse(
                "image file",
                "must be opened for reading, not O_PATH",
            ));
        }
        if flags & OFlags::RWMODE != OFlags::RDONLY {
            return Err(refuse("image file", "must be opened read-only"));
        }
        let length = u64::try_from(st.st_size).unwrap_or(0);
        if offset.checked_add(size).is_none_or(|end| end > length) {
            return Err(refuse(
                "size",
                format!("{offset}+{size} lies beyond the end of the file ({length} bytes)"),
            ));
        }
        self.check_under_image_roots("image file", &backing)?;
        Ok(MountRequest {
            filesystem,
            backing,
            offset,
            size,
        })
    }

    fn allowed_filesystem(&self, name: &str) -> Result<Filesystem, Refusal> {
        let allowed = || self.image_filesystems.join(", ");
        match Filesystem::named(name) {
            Some(fs) if self.image_filesystems.iter().any(|a| a == name) => Ok(fs),
            _ => Err(refuse(
                "fstype",
                format!(
                    "{} is not allowed by helper.toml's image_filesystems ({})",
                    berth_logging::untrusted(name),
                    allowed()
                ),
            )),
        }
    }

    /// With `image_roots` set, the file `fd` refers to must lie under one of them.
    pub(super) fn check_under_image_roots(&self, field: &str, fd: &OwnedFd) -> Result<(), Refusal> {
        if self.image_roots.is_empty() {
            return Ok(());
        }
        let path = fd_path(fd).ok_or_else(|| refuse(field, "cannot resolve its path"))?;
        if self
            .image_roots
            .iter()
            .any(|allowed| path.starts_with(allowed))
        {
            Ok(())
        } else {
            Err(refuse(
                field,
                format!("{} is not under an allowed image root", path.display()),
            ))
        }
    }

    /// `Ok` when `root` is the root of a mount `MountImage` made (see the module comment),
    /// else why not.
    pub(super) fn check_helper_mount(&self, root: &OwnedFd) -> Result<(), String> {
        let stx = rustix::fs::statx(root, c"", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
            .map_err(|e| format!("statx: {e}"))?;
        if !stx
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
            || !stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        {
            return Err("not the root of a mount".into());
        }
        let statfs = rustix::fs::fstatfs(root).map_err(|e| format!("statfs: {e}"))?;
        // f_type's integer type differs between architectures.
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        let magic = statfs.f_type as u64;
        if !self
            .image_filesystems
            .iter()
            .filter_map(|name| Filesystem::named(name))
            .any(|fs| fs.magic() == magic)
        {
            return Err(format!(
                "file system {magic:#x} is not an allowed image file system"
            ));
        }
        let vfs = rustix::fs::fstatvfs(root).map_err(|e| format!("statvfs: {e}"))?;
        let needed =
            StatVfsMountFlags::RDONLY | StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV;
        if !vfs.f_flag.contains(needed) {
            return Err("not mounted read-only, nosuid, nodev".into());
        }
        let (major, minor) = (stx.stx_dev_major, stx.stx_dev_minor);
        if major != LOOP_MAJOR {
            return Err(format!("device {major}:{minor} is not a loop device"));
        }
        let sys = format!("/sys/dev/block/{major}:{minor}");
        let flag = |file: &str| {
            std::fs::read_to_string(format!("{sys}/{file}")).is_ok_and(|v| v.trim() == "1")
        };
        if !flag("ro") || !flag("loop/autoclear") {
            return Err(format!(
                "loop device {major}:{minor} is not read-only and autoclear"
            ));
        }
        if attached_in_host_namespace(stx.stx_mnt_id)? {
            return Err("a mount attached in the host's mount namespace".into());
        }
        Ok(())
    }
}

/// True when mount `id` appears in the helper's own mount table.
fn attached_in_host_namespace(id: u64) -> Result<bool, String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    Ok(table
        .lines()
        .any(|line| line.split(' ').next().and_then(|f| f.parse::<u64>().ok()) == Some(id)))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    use super::*;

    fn params(fstype: &str, offset: i64, size: i64) -> MountImageParams {
        MountImageParams {
            fstype: fstype.into(),
            offset,
            size,
        }
    }

    fn image_file(dir: &Path, len: u64) -> OwnedFd {
        let path = dir.join("image.raw");
        File::create(&path).unwrap().set_len(len).unwrap();
        File::open(&path).unwrap().into()
    }

    fn check(params: MountImageParams, fd: OwnedFd) -> Result<MountRequest, Refusal> {
        FloorPolicy::default().check_mount_image(params, vec![fd])
    }

    #[test]
    fn a_read_only_regular_file_and_range_inside_it_pass() {
        let dir = tempfile::tempdir().unwrap();

        let request = check(params("squashfs", 512, 4096), image_file(dir.path(), 8192)).unwrap();

        assert_eq!(
            (request.filesystem, request.offset, request.size),
            (Filesystem::Squashfs, 512, 4096)
        );
    }

    #[test]
    fn a_directory_is_not_an_image_file() {
        let dir = tempfile::tempdir().unwrap();
        let fd: OwnedFd = File::open(dir.path()).unwrap().into();

        let refused = check(params("squashfs", 0, 4096), fd).unwrap_err();

        assert_eq!(refused.field, "image file");
        assert!(refused.reason.contains("regular file"), "{refused}");
    }

    #[test]
    fn a_writable_fd_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(image_file(dir.path(), 8192));
        let fd: OwnedFd = File::options()
            .read(true)
            .write(true)
            .open(dir.path().join("image.raw"))
            .unwrap()
            .into();

        let refused = check(params("squashfs", 0, 4096), fd).unwrap_err();

        assert!(refused.reason.contains("read-only"), "{refused}");
    }

    #[test]
    fn a_range_past_the_end_of_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let refused = check(params("erofs", 4096, 8192), image_file(dir.path(), 8192)).unwrap_err();

        assert_eq!(refused.field, "size");
        assert!(refused.reason.contains("beyond the end"), "{refused}");
    }

    #[test]
    fn an_overflowing_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let refused = check(
            params("erofs", i64::MAX - 511, 1024),
            image_file(dir.path(), 8192),
        )
        .unwrap_err();

        assert_eq!(refused.field, "size");
    }

    #[test]
    fn unaligned_or_negative_offsets_and_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (offset, size, field) in [
            (100, 4096, "offset"),
            (-512, 4096, "offset"),
            (0, 1000, "size"),
            (0, 0, "size"),
        ] {
            let refused = check(
                params("squashfs", offset, size),
                image_file(dir.path(), 8192),
            )
            .unwrap_err();

            assert_eq!(refused.field, field, "{offset}+{size}: {refused}");
        }
    }

    #[test]
    fn ext4_is_refused_unless_helper_toml_allows_it() {
        let dir = tempfile::tempdir().unwrap();
        let allowing = FloorPolicy {
            image_filesystems: vec!["squashfs".into(), "ext4".into()],
            ..FloorPolicy::default()
        };

        let refused = check(params("ext4", 0, 4096), image_file(dir.path(), 8192)).unwrap_err();
        let allowed =
            allowing.check_mount_image(params("ext4", 0, 4096), vec![image_file(dir.path(), 8192)]);

        assert_eq!(refused.field, "fstype");
        assert!(refused.reason.contains("squashfs, erofs"), "{refused}");
        assert_eq!(allowed.unwrap().filesystem, Filesystem::Ext4);
    }

    #[test]
    fn a_call_without_its_fd_is_refused() {
        let refused = FloorPolicy::default()
            .check_mount_image(params("squashfs", 0, 4096), Vec::new())
            .unwrap_err();

        assert_eq!(refused.field, "fds");
    }

    #[test]
    fn an_image_file_outside_the_image_roots_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = FloorPolicy {
            image_roots: vec!["/var/lib/berth/images".into()],
            ..FloorPolicy::default()
        };

        let refused = policy
            .check_mount_image(
                params("squashfs", 0, 4096),
                vec![image_file(dir.path(), 8192)],
            )
            .unwrap_err();

        assert!(refused.reason.contains("allowed image root"), "{refused}");
    }

    #[test]
    fn a_plain_directory_is_not_a_helper_mount() {
        let dir = tempfile::tempdir().unwrap();
        let fd: OwnedFd = File::open(dir.path()).unwrap().into();

        assert!(FloorPolicy::default().check_helper_mount(&fd).is_err());
    }

    #[test]
    fn an_attached_mount_root_is_not_a_helper_mount() {
        // /proc is a mount root in the host's namespace (and no image file system).
        let fd: OwnedFd = File::open("/proc").unwrap().into();
        assert!(fd.as_raw_fd() >= 0);

        let reason = FloorPolicy::default().check_helper_mount(&fd).unwrap_err();

        assert!(reason.contains("file system"), "{reason}");
    }
}
