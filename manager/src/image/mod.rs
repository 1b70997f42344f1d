//! Images: opening them, reading them safely, naming them, finding them.
//!
//! Images are hostile input (DESIGN §1): every path read from an image is resolved inside its
//! root ([`root`]), every read is bounded, and nothing here ever follows a path out of the
//! image. Downstream code (scan, attach, spawn) works on an [`ImageRoot`] and never cares which
//! kind of image it came from.

use std::io;

use berth_protocol::names::NameError;
use thiserror::Error;

pub mod identity;
pub mod naming;
pub mod os_release;
pub mod root;
pub mod scan;
pub mod strict_modes;
#[cfg(test)]
mod test_fixture;

pub use naming::{image_name_from_path, validate_image_name};
pub use root::ImageRoot;
pub use scan::{FoundUnit, check_prefixes, unit_matches_prefix};

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
