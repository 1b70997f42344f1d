//! Images: opening them, reading them safely, naming them, finding them.
//!
//! Images are hostile input (DESIGN §1): every path read from an image is resolved inside its
//! root ([`root`]), every read is bounded, and nothing here ever follows a path out of the
//! image. Downstream code (scan, attach, spawn) works on an [`ImageRoot`] and never cares which
//! kind of image it came from.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use berth_protocol::names::NameError;
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use thiserror::Error;

pub mod descriptor;
pub mod identity;
pub mod kind;
pub mod mount;
pub mod naming;
pub mod os_release;
pub mod pool;
pub mod root;
pub mod scan;
pub mod sniff;
pub mod store;
pub mod strict_modes;
#[cfg(test)]
pub(crate) mod test_fixture;
pub mod verity;

pub use naming::{image_name_from_path, validate_image_name};
pub use root::ImageRoot;
pub use scan::{FoundUnit, check_prefixes, unit_matches_prefix};
pub use sniff::Format;

/// Where an image comes from.
#[derive(Debug)]
pub enum ImageSource<'a> {
    /// A path berthd opens itself, with its own rights (images in its search directories).
    Path(&'a Path),
    /// A descriptor someone else opened (the CLI opens a local image with the caller's
    /// rights); `label` names the image in messages.
    Fd { fd: OwnedFd, label: &'a str },
}

/// An image opened for reading, of any kind.
#[derive(Debug)]
pub struct OpenedImage {
    /// The image's root directory: the directory itself, or the root of a read-only mount.
    pub root: ImageRoot,
    /// What the image file is.
    pub format: Format,
    /// What keeps `root` readable besides its own descriptor (such as the backing file of a
    /// mount); empty for a directory.
    pub keep_alive: Vec<OwnedFd>,
    /// For a GPT disk image: the partition mounted, and its verity data.
    pub partition: Option<kind::gpt::RootPartition>,
}

/// Opens an image of any kind: finds what it is from its type and magic bytes
/// ([`sniff::sniff`]) and hands it to that kind's opener ([`kind::open`]).
pub fn open(source: ImageSource<'_>) -> Result<OpenedImage, ImageError> {
    let (fd, label) = match source {
        ImageSource::Path(path) => (open_path(path)?, path.display().to_string()),
        ImageSource::Fd { fd, label } => (fd, label.to_owned()),
    };
    let format = sniff::sniff(&fd).map_err(|e| ImageError::Sniff {
        image: label.clone(),
        source: e.into(),
    })?;
    kind::open(format, fd, &label)
}

/// What the image at `path` is, without opening it as an image (for listings).
pub fn format_of(path: &Path) -> Option<Format> {
    sniff::sniff(open_path(path).ok()?).ok()
}

/// Opens the attached image at `path` for Spawn, only if it is still the image `recorded`
/// identifies: a directory opened for reading, or the root of the helper's mount of an image
/// file (identified by the file).
pub fn open_attached(
    path: &Path,
    recorded: Option<&identity::ImageIdentity>,
) -> Result<OwnedFd, identity::IdentityError> {
    let is_file = rfs::stat(path)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
    if !is_file {
        return identity::open_attached(path, recorded);
    }
    let opened = open(ImageSource::Path(path)).map_err(|e| identity::IdentityError::Open {
        path: path.display().to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    let found = opened
        .root
        .identity()
        .map_err(|source| identity::IdentityError::Identify {
            path: path.display().to_string(),
            source,
        })?;
    identity::check_recorded(path, recorded, &found)?;
    Ok(opened.root.into_fd())
}

/// The image root Spawn gets for an image berthd holds open by `fd`: a directory as it is, an
/// image file mounted by the helper (its root).
pub fn spawn_root(fd: OwnedFd, label: &str) -> Result<OwnedFd, ImageError> {
    let is_file = rfs::fstat(&fd)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
    if !is_file {
        return Ok(fd);
    }
    Ok(open(ImageSource::Fd { fd, label })?.root.into_fd())
}

/// What berthd keeps of an image attached by descriptor while it is attached: the image's
/// root, or for an image file the file alone. The file is mounted again at each start (the
/// helper shares the loop device among running services), so a stopped service leaves no loop
/// device or mount behind however long the image stays attached.
#[derive(Debug)]
pub enum HeldImage {
    Root(OpenedImage),
    File {
        fd: OwnedFd,
        format: Format,
        label: String,
    },
}

impl HeldImage {
    /// Keeps `opened`: its mount let go when it is one.
    pub fn keep(opened: OpenedImage, label: &str) -> HeldImage {
        let OpenedImage {
            root,
            format,
            keep_alive,
            partition,
        } = opened;
        match root.into_backing() {
            Ok(fd) => HeldImage::File {
                fd,
                format,
                label: label.to_owned(),
            },
            Err(root) => HeldImage::Root(OpenedImage {
                root,
                format,
                keep_alive,
                partition,
            }),
        }
    }

    /// What the image is.
    pub fn format(&self) -> &Format {
        match self {
            HeldImage::Root(opened) => &opened.format,
            HeldImage::File { format, .. } => format,
        }
    }

    /// The fd Spawn's image root is made from ([`spawn_root`]).
    pub fn spawn_fd(&self) -> io::Result<OwnedFd> {
        match self {
            HeldImage::Root(opened) => opened.root.fd().try_clone_to_owned(),
            HeldImage::File { fd, .. } => fd.try_clone(),
        }
    }

    /// The image's os-release (an image file is mounted for the read).
    pub fn os_release(&self) -> Option<os_release::OsRelease> {
        match self {
            HeldImage::Root(opened) => opened.root.os_release().ok(),
            HeldImage::File { fd, label, .. } => open(ImageSource::Fd {
                fd: fd.try_clone().ok()?,
                label,
            })
            .ok()?
            .root
            .os_release()
            .ok(),
        }
    }
}

/// Opens `path` for [`open`]: a directory as `O_PATH` (nothing is read through the directory
/// fd itself; search rights on the path are enough), anything else for reading, without
/// blocking on a FIFO and only if it is still the file first looked at.
fn open_path(path: &Path) -> Result<OwnedFd, ImageError> {
    let open_error = |e: rustix::io::Errno| ImageError::OpenImage {
        path: path.display().to_string(),
        source: e.into(),
    };
    let probe =
        rfs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(open_error)?;
    let probed = rfs::fstat(&probe).map_err(open_error)?;
    if FileType::from_raw_mode(probed.st_mode) != FileType::RegularFile {
        // A directory, or something sniff names and refuses.
        return Ok(probe);
    }
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rfs::open(path, flags, Mode::empty()).map_err(open_error)?;
    let opened = rfs::fstat(&fd).map_err(open_error)?;
    if (opened.st_dev, opened.st_ino) != (probed.st_dev, probed.st_ino) {
        return Err(ImageError::OpenImage {
            path: path.display().to_string(),
            source: io::Error::other("the file was replaced while it was being opened"),
        });
    }
    rfs::fcntl_setfl(&fd, OFlags::empty()).map_err(open_error)?;
    Ok(fd)
}

/// Largest os-release file read (os-release is a few hundred bytes in practice).
pub const MAX_OS_RELEASE_SIZE: u64 = 64 * 1024;
/// Largest unit file read.
pub const MAX_UNIT_FILE_SIZE: u64 = 1024 * 1024;
/// Most unit files considered in one image, over all unit directories.
pub const MAX_UNITS: usize = 4096;
/// Most bytes of unit files read from one image in one scan.
pub const MAX_UNITS_TOTAL_SIZE: u64 = 16 * 1024 * 1024;
/// Most directory entries read from one unit directory, so a huge directory cannot make a
/// scan run unbounded even when its entries are not units.
pub const MAX_DIR_ENTRIES: usize = 65_536;

/// The image's unit directories, in priority order: the first that has a unit name wins.
pub const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The unit types an image may carry (portabled's list). Only `.service` is runnable so far.
pub const UNIT_SUFFIXES: [&str; 5] = [".service", ".socket", ".target", ".timer", ".path"];

/// Errors from opening or reading an image.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("cannot open image {path}: {source}")]
    OpenImage {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot tell what image {image} is: {source}")]
    Sniff {
        image: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount image {image} ({format}): {source}")]
    Mount {
        image: String,
        format: String,
        #[source]
        source: Box<mount::MountError>,
    },
    #[error("image {image}: unsupported image format: {found}")]
    UnsupportedFormat { image: String, found: String },
    #[error("image {image} (GPT disk image): {source}")]
    Gpt {
        image: String,
        #[source]
        source: kind::gpt::table::GptError,
    },
    #[error(
        "image {image} (GPT disk image): its {partition} holds a {found}, not a filesystem berth mounts (squashfs, erofs, ext4)"
    )]
    GptPartitionFormat {
        image: String,
        partition: String,
        found: String,
    },
    #[error("image {path} is not a directory")]
    NotADirectory { path: String },
    #[error(
        "cannot resolve paths inside image {image}: the kernel lacks openat2() (Linux 5.6 or \
         newer is needed)"
    )]
    Openat2Unavailable { image: String },
    #[error("{path} does not exist in image {image}")]
    NotFound { image: String, path: String },
    #[error("cannot open {path} in image {image}: {source}")]
    OpenInImage {
        image: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} in image {image} is not a regular file, refusing")]
    NotRegularFile { image: String, path: String },
    #[error("cannot read {path} in image {image}: {source}")]
    Read {
        image: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} in image {image} is larger than {max} bytes, refusing")]
    TooLarge {
        image: String,
        path: String,
        max: u64,
    },
    #[error("{path} in image {image} is not valid UTF-8, refusing")]
    NotUtf8 { image: String, path: String },
    #[error(
        "image {image} lacks os-release data (neither /etc/os-release nor /usr/lib/os-release \
         exists), refusing"
    )]
    NoOsRelease { image: String },
    #[error("cannot read unit directory {dir} in image {image}: {source}")]
    ReadUnitDir {
        image: String,
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("unit directory {dir} in image {image} has more than {max} entries, refusing")]
    UnitDirTooLarge {
        image: String,
        dir: String,
        max: usize,
    },
    #[error("image {image} has more than {max} unit files, refusing")]
    TooManyUnits { image: String, max: usize },
    #[error("unit files in image {image} total more than {max} bytes, refusing")]
    UnitsTooLarge { image: String, max: u64 },
    #[error(
        "unit {unit} in image {image} is a symlink to {target:?}, which does not exist inside \
         the image: it points outside the image (to a host file), refusing"
    )]
    UnitPointsOutsideImage {
        image: String,
        unit: String,
        target: String,
    },
    #[error(
        "selected match {prefix:?} is not compatible with the image's PORTABLE_PREFIXES \
         (acceptable prefix matches are: {})",
        allowed.join(", ")
    )]
    PrefixNotAllowed {
        prefix: String,
        allowed: Vec<String>,
    },
    #[error("invalid unit prefix {prefix:?}")]
    InvalidPrefix { prefix: String },
    #[error("invalid image name {name:?}: {reason}")]
    InvalidImageName { name: String, reason: NameError },
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};

    use super::*;
    use crate::image::test_fixture::Fixture;

    #[test]
    fn open_path_opens_a_directory_image() {
        let fx = Fixture::new();
        fx.write("etc/os-release", "ID=dir\n");

        let opened = open(ImageSource::Path(&fx.image)).unwrap();

        assert_eq!(opened.format, Format::Directory);
        assert!(opened.keep_alive.is_empty());
        assert_eq!(opened.root.os_release().unwrap().get("ID"), Some("dir"));
    }

    #[test]
    fn open_fd_opens_a_directory_image() {
        let fx = Fixture::new();
        fx.write("etc/os-release", "ID=fd\n");
        let fd: OwnedFd = File::open(&fx.image).unwrap().into();

        let opened = open(ImageSource::Fd {
            fd,
            label: "passed",
        })
        .unwrap();

        assert_eq!(opened.root.os_release().unwrap().get("ID"), Some("fd"));
    }

    #[test]
    fn a_squashfs_file_goes_to_the_helper_and_a_failed_mount_names_the_format() {
        let fx = Fixture::new();
        let mut bytes = vec![0u8; 4096];
        bytes[..4].copy_from_slice(b"hsqs");
        fs::write(fx.path("foo_1.raw"), bytes).unwrap();

        // No helper in unit tests: the mount is asked for and fails.
        let err = open(ImageSource::Path(&fx.path("foo_1.raw"))).unwrap_err();

        assert!(matches!(err, ImageError::Mount { .. }), "{err:?}");
        assert!(err.to_string().contains("(squashfs filesystem)"), "{err}");
    }

    #[test]
    fn garbage_is_an_unsupported_format_that_shows_its_bytes() {
        let fx = Fixture::new();
        fs::write(fx.path("junk.raw"), b"junkjunkjunk").unwrap();

        let err = open(ImageSource::Path(&fx.path("junk.raw"))).unwrap_err();

        assert!(
            err.to_string()
                .contains("unknown format (first bytes 6a 75 6e 6b"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_path_is_an_open_error() {
        let fx = Fixture::new();

        let err = open(ImageSource::Path(&fx.path("missing"))).unwrap_err();

        assert!(matches!(err, ImageError::OpenImage { .. }), "{err:?}");
    }
}
