//! A directory image: the directory is the root.

use std::os::fd::OwnedFd;

use crate::image::{Format, ImageError, ImageRoot, OpenedImage};

/// Opens the directory `fd` as an image (`fd` may be `O_PATH`).
pub fn open(fd: OwnedFd, label: &str) -> Result<OpenedImage, ImageError> {
    Ok(OpenedImage {
        root: ImageRoot::from_fd(fd, label.into())?,
        format: Format::Directory,
        keep_alive: Vec::new(),
        partition: None,
    })
}
