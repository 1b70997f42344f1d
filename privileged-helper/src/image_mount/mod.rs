//! Image files mounted for berthd: a loop device over the checked range of the backing file
//! ([`loop_device`]), the file system mounted from it read-only, `nosuid,nodev`, as a
//! detached mount (`fsmount`) attached to no path ([`filesystem`]). The mount's fd goes back
//! to berthd, and it lives as long as someone holds it: berthd's fd, or the clones in the
//! mount namespaces of running services. The floor checks the request first
//! (`floor/image.rs`).

pub mod filesystem;
pub mod loop_device;
pub(crate) mod syscalls;

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;
use rustix::mount::MountAttrFlags;

pub use filesystem::Filesystem;
pub use loop_device::LoopError;
use loop_device::Range;
use syscalls::{ImageSyscalls, LinuxImageSyscalls};

/// A mount request that passed the floor.
#[derive(Debug)]
pub struct MountRequest {
    pub filesystem: Filesystem,
    /// The backing file: a regular file opened read-only.
    pub backing: OwnedFd,
    pub offset: u64,
    pub size: u64,
}

/// A mounted image.
#[derive(Debug)]
pub struct Mounted {
    /// The detached mount (an `O_PATH`-like fd of its root).
    pub mount: OwnedFd,
    /// The loop device, e.g. `/dev/loop3`.
    pub device: String,
    /// The loop device was bound before (another mount of the same range).
    pub shared: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageMountError {
    #[error("cannot stat the backing file: {0}")]
    StatBacking(#[source] Errno),
    #[error(transparent)]
    AttachLoop(#[from] LoopError),
    #[error("the kernel refused {fstype} on {device}: {source}{}", kernel_says(.messages))]
    Mount {
        fstype: &'static str,
        device: String,
        #[source]
        source: Errno,
        messages: Vec<String>,
    },
}

fn kernel_says(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(" ({})", messages.join("; "))
    }
}

/// The attributes of every image mount.
pub(crate) const MOUNT_ATTRS: MountAttrFlags = MountAttrFlags::MOUNT_ATTR_RDONLY
    .union(MountAttrFlags::MOUNT_ATTR_NOSUID)
    .union(MountAttrFlags::MOUNT_ATTR_NODEV);

/// Mounts the request's range of its backing file.
pub fn mount_image(request: MountRequest) -> Result<Mounted, ImageMountError> {
    mount_with(&LinuxImageSyscalls, request)
}

fn mount_with(os: &impl ImageSyscalls, request: MountRequest) -> Result<Mounted, ImageMountError> {
    let st = rustix::fs::fstat(&request.backing).map_err(ImageMountError::StatBacking)?;
    let range = Range {
        backing_dev: st.st_dev,
        backing_ino: st.st_ino,
        offset: request.offset,
        size: request.size,
    };
    let attached = loop_device::attach(os, request.backing.as_fd(), &range)?;
    let device = format!("/dev/loop{}", attached.number);
    let fstype = request.filesystem;
    let failed = |failure: syscalls::MountFailure| ImageMountError::Mount {
        fstype: fstype.name(),
        device: device.clone(),
        source: failure.errno,
        messages: failure.messages,
    };
    let path = CString::new(device.clone()).map_err(|_| {
        failed(syscalls::MountFailure {
            errno: Errno::INVAL,
            messages: Vec::new(),
        })
    })?;
    // The device fd is closed only after the mount holds the device: closed first, autoclear
    // would unbind it. On failure its close unbinds it (unless another mount holds it).
    let mount = os
        .mount_device(fstype.kernel_name(), &path, fstype.flags(), MOUNT_ATTRS)
        .map_err(failed)?;
    drop(attached.device);
    Ok(Mounted {
        mount,
        device,
        shared: attached.shared,
    })
}

#[cfg(test)]
mod tests {
    use super::loop_device::tests::{FakeLoops, range, status_of};
    use super::syscalls::MountFailure;
    use super::*;

    fn request(filesystem: Filesystem) -> MountRequest {
        MountRequest {
            filesystem,
            backing: std::fs::File::open("/dev/null").unwrap().into(),
            offset: 0,
            size: 4096,
        }
    }

    #[test]
    fn the_file_system_is_mounted_read_only_nosuid_nodev_from_the_loop_device() {
        let os = FakeLoops::default();

        let mounted = mount_with(&os, request(Filesystem::Squashfs)).unwrap();

        assert_eq!(mounted.device, "/dev/loop0");
        let mounts = os.mounts.borrow();
        let (fstype, device, flags, attrs) = &mounts[0];
        assert_eq!(
            (fstype.as_str(), device.as_str()),
            ("squashfs", "/dev/loop0")
        );
        assert!(flags.is_empty());
        assert_eq!(
            *attrs,
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
        );
    }

    #[test]
    fn ext4_is_mounted_without_replaying_its_journal() {
        let os = FakeLoops::default();

        mount_with(&os, request(Filesystem::Ext4)).unwrap();

        assert_eq!(os.mounts.borrow()[0].2, ["norecovery"]);
    }

    #[test]
    fn a_refused_mount_reports_what_the_file_system_said() {
        let os = FakeLoops {
            mount_error: Some(MountFailure {
                errno: Errno::INVAL,
                messages: vec!["squashfs: Can't find a SQUASHFS superblock on loop0".into()],
            }),
            ..FakeLoops::default()
        };

        let error = mount_with(&os, request(Filesystem::Squashfs)).unwrap_err();

        let text = error.to_string();
        assert!(text.contains("Can't find a SQUASHFS superblock"), "{text}");
        assert!(text.contains("/dev/loop0"), "{text}");
    }

    #[test]
    fn a_second_mount_of_the_same_range_shares_the_device() {
        let os = FakeLoops::default();
        let r = range();
        os.bound
            .borrow_mut()
            .insert(5, status_of(&r, loop_device::FLAGS));
        let null = rustix::fs::stat("/dev/null").unwrap();
        os.bound.borrow_mut().insert(
            6,
            status_of(
                &Range {
                    backing_dev: null.st_dev,
                    backing_ino: null.st_ino,
                    offset: 0,
                    size: 4096,
                },
                loop_device::FLAGS,
            ),
        );

        let mounted = mount_with(&os, request(Filesystem::Erofs)).unwrap();

        assert_eq!(
            (mounted.device.as_str(), mounted.shared),
            ("/dev/loop6", true)
        );
    }
}
