//! One opener per kind of image, behind [`open`]: each yields an [`OpenedImage`] whose root the
//! rest of berthd reads without caring about the kind.

use std::os::fd::OwnedFd;

use super::{Format, ImageError, OpenedImage};

pub mod directory;
pub mod gpt;
pub mod raw;
pub mod tar;

/// Opens the image `fd` refers to, which [`super::sniff::sniff`] found to be `format`; `label`
/// names it in messages.
pub fn open(format: Format, fd: OwnedFd, label: &str) -> Result<OpenedImage, ImageError> {
    match format {
        Format::Directory => directory::open(fd, label),
        Format::Squashfs | Format::Erofs | Format::Ext4 => raw::open(fd, format, label),
        Format::Gpt => gpt::open(fd, label),
        Format::Tar | Format::Gzip | Format::Zstd => tar::open(fd, format, label),
        Format::Unknown { .. } | Format::NotAnImage { .. } => Err(unsupported(label, &format)),
    }
}

/// The error for an image of a format berth does not open.
pub fn unsupported(label: &str, format: &Format) -> ImageError {
    ImageError::UnsupportedFormat {
        image: label.to_owned(),
        found: format.to_string(),
    }
}
