//! A `.raw` file holding one file system (squashfs, erofs, ext4): berth-helper mounts it
//! read-only, `nosuid,nodev`, from a loop device ([`crate::image::mount`]), and the image root
//! is that mount's root. Whether a file system is mounted at all is the helper's floor's call
//! (squashfs and erofs unless its helper.toml allows more).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::image::mount::{self, Mount};
use crate::image::{Format, ImageError, ImageRoot, OpenedImage};

/// The sector the loop device counts in: a file system ends at the last whole one (mksquashfs
/// pads to 4 KiB, erofs and ext4 are made of whole blocks).
const SECTOR: u64 = 512;

pub fn open(fd: OwnedFd, format: Format, label: &str) -> Result<OpenedImage, ImageError> {
    let Some(fstype) = fstype(&format) else {
        return Err(super::unsupported(label, &format));
    };
    let failed = |source| ImageError::Mount {
        image: label.to_owned(),
        format: format.to_string(),
        source: Box::new(source),
    };
    let length = rustix::fs::fstat(&fd)
        .map(|st| u64::try_from(st.st_size).unwrap_or(0))
        .map_err(|e| ImageError::OpenImage {
            path: label.to_owned(),
            source: e.into(),
        })?;
    let Mount { root, .. } =
        mount::mount_image(&fd, fstype, 0, length / SECTOR * SECTOR).map_err(failed)?;
    Ok(OpenedImage {
        root: ImageRoot::from_mount(root, fd, PathBuf::from(label))?,
        format,
        keep_alive: Vec::new(),
        partition: None,
    })
}

/// The kernel's name of the file system `format` is, for the raw formats.
pub fn fstype(format: &Format) -> Option<&'static str> {
    match format {
        Format::Squashfs => Some("squashfs"),
        Format::Erofs => Some("erofs"),
        Format::Ext4 => Some("ext4"),
        _ => None,
    }
}
