//! A GPT disk image following the Discoverable Partitions Specification.
//! Not opened yet: refused with the format it holds.

use std::os::fd::OwnedFd;

use crate::image::{Format, ImageError, OpenedImage};

pub fn open(_fd: OwnedFd, label: &str) -> Result<OpenedImage, ImageError> {
    Err(super::unsupported(label, &Format::Gpt))
}
