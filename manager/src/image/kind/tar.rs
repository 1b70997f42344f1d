//! A tarball (`.tar`, `.tar.gz`, `.tar.zst`), unpacked on import by berthd.
//! Not opened yet: refused with the format it holds.

use std::os::fd::OwnedFd;

use crate::image::{Format, ImageError, OpenedImage};

pub fn open(_fd: OwnedFd, format: Format, label: &str) -> Result<OpenedImage, ImageError> {
    Err(super::unsupported(label, &format))
}
