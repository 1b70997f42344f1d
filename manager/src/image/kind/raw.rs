//! A `.raw` file holding one filesystem (squashfs, erofs, ext4), mounted read-only by the helper.
//! Not opened yet: refused with the format it holds.

use std::os::fd::OwnedFd;

use crate::image::{Format, ImageError, OpenedImage};

pub fn open(_fd: OwnedFd, format: Format, label: &str) -> Result<OpenedImage, ImageError> {
    Err(super::unsupported(label, &format))
}
