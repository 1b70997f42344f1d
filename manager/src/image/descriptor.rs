//! Images passed in by a client as a descriptor (DESIGN.md §1): the client opened the image
//! with its own rights, so the descriptor is the proof that it may read it, and berthd reads
//! the image through it instead of opening the path with its own (lesser) rights.
//!
//! Only what proves read access is taken: a descriptor opened for reading, not `O_PATH` (which
//! needs no permission on the file itself) and not open for writing (an image is read-only
//! everywhere in berth), of a directory or a regular file. Anything else (a socket, a pipe, a
//! device) is refused with what it is.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, OFlags};

use crate::image::{self, ImageError, ImageSource, OpenedImage};

#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("cannot inspect the descriptor passed for {path}: {source}")]
    Inspect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the descriptor passed for {path} is opened with O_PATH; pass one opened for reading")]
    PathOnly { path: String },
    #[error("the descriptor passed for {path} is open for writing; pass one opened read-only")]
    Writable { path: String },
    #[error("the descriptor passed for {path} is a {kind}, not a directory or an image file")]
    WrongType { path: String, kind: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The image behind `fd`, a descriptor a client passed for the image at `path` (the path it
/// named, used in messages and for reopening after a restart), opened as [`image::open`] opens
/// any image.
pub fn open_passed(fd: OwnedFd, path: &Path) -> Result<OpenedImage, DescriptorError> {
    let shown = || path.display().to_string();
    let inspect = |e: rustix::io::Errno| DescriptorError::Inspect {
        path: shown(),
        source: e.into(),
    };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd).map_err(inspect)?.st_mode);
    if !matches!(kind, FileType::Directory | FileType::RegularFile) {
        return Err(DescriptorError::WrongType {
            path: shown(),
            kind: kind_name(kind).to_owned(),
        });
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(inspect)?;
    if flags.contains(OFlags::PATH) {
        return Err(DescriptorError::PathOnly { path: shown() });
    }
    if flags.intersects(OFlags::WRONLY | OFlags::RDWR) {
        return Err(DescriptorError::Writable { path: shown() });
    }
    let label = shown();
    Ok(image::open(ImageSource::Fd { fd, label: &label })?)
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Socket => "socket",
        FileType::Fifo => "pipe",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symbolic link",
        _ => "file of unknown type",
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn a_directory_opened_for_reading_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let fd: OwnedFd = File::open(dir.path()).unwrap().into();

        assert!(open_passed(fd, dir.path()).is_ok());
    }

    #[test]
    fn an_o_path_descriptor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();

        let result = open_passed(fd, dir.path());

        assert!(
            matches!(result, Err(DescriptorError::PathOnly { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn a_pipe_is_refused_as_a_pipe() {
        let (read, _write) = rustix::pipe::pipe().unwrap();

        let result = open_passed(read, Path::new("/srv/img"));

        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("is a pipe, not a directory"), "{message}");
    }

    #[test]
    fn a_file_open_for_writing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.raw");
        let fd: OwnedFd = File::create(&path).unwrap().into();

        let result = open_passed(fd, &path);

        assert!(
            matches!(result, Err(DescriptorError::Writable { .. })),
            "{result:?}"
        );
    }
}
