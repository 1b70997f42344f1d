//! A directory image, opened once and read safely.
//!
//! Images are hostile input (DESIGN §1). Every path read from an image is resolved inside the
//! image root with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and absolute
//! symlinks stay inside the image and never reach host files; only regular files are read,
//! and every read is bounded. The root is held as a directory fd, so a symlink in the path
//! the image was opened from is resolved once, at open (portabled issues #14634/#14635).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_protocol::names::{self, NameError};
use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use thiserror::Error;

use crate::os_release::{self, OsRelease};

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

/// os-release locations inside an image, in priority order.
const OS_RELEASE_PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// The symlink target that marks a unit as masked.
const MASKED_TARGET: &[u8] = b"/dev/null";

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

/// A unit file found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUnit {
    /// The unit name, e.g. `foo.service`.
    pub name: String,
    /// Where it was found, e.g. `/usr/lib/systemd/system/foo.service` (the entry itself, which
    /// may be a symlink resolved inside the image).
    pub path_in_image: String,
    /// The unit file text (bounded by [`MAX_UNIT_FILE_SIZE`]).
    pub contents: String,
}

/// The root directory of an image, held open.
#[derive(Debug)]
pub struct ImageRoot {
    fd: OwnedFd,
    path: PathBuf,
}

impl ImageRoot {
    /// Opens the directory at `path` as an image root (`O_PATH`: nothing is read yet).
    pub fn open(path: &Path) -> Result<ImageRoot, ImageError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rfs::open(path, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOTDIR => ImageError::NotADirectory {
                path: path.display().to_string(),
            },
            e => ImageError::OpenImage {
                path: path.display().to_string(),
                source: e.into(),
            },
        })?;
        Ok(ImageRoot {
            fd,
            path: path.to_owned(),
        })
    }

    /// Wraps a directory fd opened by someone else (the CLI opens local images with the
    /// caller's rights and passes the fd); `path` is only for messages.
    #[cfg(test)]
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<ImageRoot, ImageError> {
        let stat = rfs::fstat(&fd).map_err(|e| ImageError::OpenImage {
            path: path.display().to_string(),
            source: e.into(),
        })?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
            return Err(ImageError::NotADirectory {
                path: path.display().to_string(),
            });
        }
        Ok(ImageRoot { fd, path })
    }

    fn image(&self) -> String {
        self.path.display().to_string()
    }

    /// Which directory this root is (see [`crate::image_identity`]).
    pub fn identity(&self) -> io::Result<crate::image_identity::ImageIdentity> {
        crate::image_identity::ImageIdentity::of(&self.fd)
    }

    /// `openat2` below the root with in-root resolution. EAGAIN happens when a concurrent
    /// rename races with `..` resolution; the kernel asks for a retry.
    fn openat2_in_root(&self, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        // openat2 refuses O_PATH combined with flags that only matter for a real open.
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC
        } else {
            flags | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        let mut attempts = 0;
        loop {
            match rfs::openat2(&self.fd, path, flags, Mode::empty(), resolve) {
                Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
                result => return result,
            }
        }
    }

    fn open_error(&self, path: &str, errno: Errno) -> ImageError {
        match errno {
            Errno::NOENT | Errno::NOTDIR => ImageError::NotFound {
                image: self.image(),
                path: path.to_owned(),
            },
            Errno::NOSYS => ImageError::Openat2Unavailable {
                image: self.image(),
            },
            e => ImageError::OpenInImage {
                image: self.image(),
                path: path.to_owned(),
                source: e.into(),
            },
        }
    }

    /// Opens the regular file at `path_in_image`, resolved inside the image root: absolute
    /// symlinks and `..` never leave the image, magic links (`/proc/*/fd`) are refused.
    /// Anything but a regular file is refused.
    pub fn open_file(&self, path_in_image: &str) -> Result<File, ImageError> {
        let not_regular = || ImageError::NotRegularFile {
            image: self.image(),
            path: path_in_image.to_owned(),
        };
        let stat_error = |e: Errno| ImageError::OpenInImage {
            image: self.image(),
            path: path_in_image.to_owned(),
            source: e.into(),
        };
        // Look first through an O_PATH fd: opening a FIFO for reading would block and opening
        // a device node has side effects, so only a regular file is opened for real.
        let probe = self
            .openat2_in_root(path_in_image, OFlags::PATH)
            .map_err(|e| self.open_error(path_in_image, e))?;
        let probed = rfs::fstat(&probe).map_err(stat_error)?;
        if FileType::from_raw_mode(probed.st_mode) != FileType::RegularFile {
            return Err(not_regular());
        }
        // O_NONBLOCK keeps the second open harmless even if the entry was swapped for a FIFO
        // in between; the inode check below catches any swap.
        let fd = self
            .openat2_in_root(path_in_image, OFlags::RDONLY | OFlags::NONBLOCK)
            .map_err(|e| self.open_error(path_in_image, e))?;
        let opened = rfs::fstat(&fd).map_err(stat_error)?;
        if FileType::from_raw_mode(opened.st_mode) != FileType::RegularFile
            || (opened.st_dev, opened.st_ino) != (probed.st_dev, probed.st_ino)
        {
            return Err(not_regular());
        }
        rfs::fcntl_setfl(&fd, OFlags::empty()).map_err(stat_error)?;
        Ok(File::from(fd))
    }

    /// Reads the regular file at `path_in_image` (resolved inside the root), refusing files
    /// larger than `max` bytes.
    pub fn read_bounded(&self, path_in_image: &str, max: u64) -> Result<Vec<u8>, ImageError> {
        let file = self.open_file(path_in_image)?;
        let mut bytes = Vec::new();
        // Read one byte past the limit to tell "exactly max" from "more than max" without
        // trusting st_size (which a special filesystem may report as 0).
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::Read {
                image: self.image(),
                path: path_in_image.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > max {
            return Err(ImageError::TooLarge {
                image: self.image(),
                path: path_in_image.to_owned(),
                max,
            });
        }
        Ok(bytes)
    }

    /// The image's os-release: `/etc/os-release`, else `/usr/lib/os-release` (both resolved
    /// inside the image). Missing in both is [`ImageError::NoOsRelease`].
    pub fn os_release(&self) -> Result<OsRelease, ImageError> {
        self.os_release_text().map(|text| os_release::parse(&text))
    }

    /// The text of the image's os-release, found as [`ImageRoot::os_release`] finds it.
    pub fn os_release_text(&self) -> Result<String, ImageError> {
        for path in OS_RELEASE_PATHS {
            match self.read_bounded(path, MAX_OS_RELEASE_SIZE) {
                // Lossy: os-release is parsed leniently, a stray byte must not hide the rest.
                Ok(bytes) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Err(ImageError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ImageError::NoOsRelease {
            image: self.image(),
        })
    }

    /// Finds the `.service` units of the image whose names match one of `prefixes` (all of
    /// them when `prefixes` is empty, as portabled's daemon does), sorted by name.
    ///
    /// Unit directories are scanned in [`UNIT_DIRS`] order and the first entry of a name wins,
    /// so `/etc` overrides `/usr/lib`. Entries must be valid unit names of a known type,
    /// regular files or symlinks. A symlink to `/dev/null` or an empty file masks the name.
    /// A symlink whose target does not exist inside the image is refused with
    /// [`ImageError::UnitPointsOutsideImage`] (systemd issue #43049: on the host it would have
    /// named a host file).
    pub fn find_units(&self, prefixes: &[String]) -> Result<Vec<FoundUnit>, ImageError> {
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        let mut total_size = 0u64;
        for dir in UNIT_DIRS {
            let Some(dir_fd) = self.open_unit_dir(dir)? else {
                continue;
            };
            for entry in self.list_unit_dir(dir, &dir_fd)? {
                if seen.len() >= MAX_UNITS {
                    return Err(ImageError::TooManyUnits {
                        image: self.image(),
                        max: MAX_UNITS,
                    });
                }
                if !seen.insert(entry.name.clone()) {
                    continue;
                }
                let wanted = entry.name.ends_with(".service")
                    && (prefixes.is_empty()
                        || prefixes.iter().any(|p| unit_matches_prefix(&entry.name, p)));
                if !wanted {
                    continue;
                }
                let Some(unit) = self.read_unit(dir, &dir_fd, &entry)? else {
                    continue;
                };
                total_size += unit.contents.len() as u64;
                if total_size > MAX_UNITS_TOTAL_SIZE {
                    return Err(ImageError::UnitsTooLarge {
                        image: self.image(),
                        max: MAX_UNITS_TOTAL_SIZE,
                    });
                }
                found.push(unit);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Opens a unit directory for listing; `None` when the image does not have it.
    fn open_unit_dir(&self, dir: &str) -> Result<Option<OwnedFd>, ImageError> {
        match self.openat2_in_root(dir, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(self.open_error(dir, e)),
        }
    }

    /// The unit-file entries of one directory (valid names of a known unit type, regular
    /// files or symlinks), in directory order.
    fn list_unit_dir(&self, dir: &str, dir_fd: &OwnedFd) -> Result<Vec<UnitEntry>, ImageError> {
        let read_error = |e: Errno| ImageError::ReadUnitDir {
            image: self.image(),
            dir: dir.to_owned(),
            source: e.into(),
        };
        let mut entries = Vec::new();
        let mut count = 0usize;
        for entry in Dir::read_from(dir_fd).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            count += 1;
            if count > MAX_DIR_ENTRIES {
                return Err(ImageError::UnitDirTooLarge {
                    image: self.image(),
                    dir: dir.to_owned(),
                    max: MAX_DIR_ENTRIES,
                });
            }
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if names::check_unit_name(name).is_err()
                || !UNIT_SUFFIXES.iter().any(|s| name.ends_with(s))
            {
                continue;
            }
            let file_type = match entry.file_type() {
                // Some filesystems do not fill d_type; ask without following the entry.
                FileType::Unknown => rfs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode))
                    .map_err(read_error)?,
                t => t,
            };
            let symlink = match file_type {
                FileType::RegularFile => false,
                FileType::Symlink => true,
                _ => continue,
            };
            entries.push(UnitEntry {
                name: name.to_owned(),
                symlink,
            });
        }
        Ok(entries)
    }

    /// Reads one unit entry; `None` when it is masked (empty, or a symlink to `/dev/null`).
    fn read_unit(
        &self,
        dir: &str,
        dir_fd: &OwnedFd,
        entry: &UnitEntry,
    ) -> Result<Option<FoundUnit>, ImageError> {
        let path_in_image = format!("{dir}/{}", entry.name);
        let mut target = None;
        if entry.symlink {
            let link = rfs::readlinkat(dir_fd, entry.name.as_str(), Vec::new()).map_err(|e| {
                ImageError::OpenInImage {
                    image: self.image(),
                    path: path_in_image.clone(),
                    source: e.into(),
                }
            })?;
            if link.as_bytes() == MASKED_TARGET {
                return Ok(None);
            }
            target = Some(String::from_utf8_lossy(link.as_bytes()).into_owned());
        }
        // Resolve from the image root, not from the unit directory: a relative target like
        // `../../lib/systemd/system/x.service` must resolve as it would in the image.
        let bytes = match self.read_bounded(&path_in_image, MAX_UNIT_FILE_SIZE) {
            Ok(bytes) => bytes,
            Err(ImageError::NotFound { .. }) if target.is_some() => {
                return Err(ImageError::UnitPointsOutsideImage {
                    image: self.image(),
                    unit: entry.name.clone(),
                    target: target.unwrap_or_default(),
                });
            }
            Err(e) => return Err(e),
        };
        if bytes.is_empty() {
            return Ok(None);
        }
        let contents = String::from_utf8(bytes).map_err(|_| ImageError::NotUtf8 {
            image: self.image(),
            path: path_in_image.clone(),
        })?;
        Ok(Some(FoundUnit {
            name: entry.name.clone(),
            path_in_image,
            contents,
        }))
    }
}

/// A unit-file entry found while listing a unit directory.
struct UnitEntry {
    name: String,
    symlink: bool,
}

/// portabled's `prefix_match`: `unit` starts with `prefix` followed by `-`, `.`, `@` or the end
/// of the name. So `foo` matches `foo.service`, `foo-bar.service` and `foo@.service` but not
/// `foobar.service`.
pub fn unit_matches_prefix(unit: &str, prefix: &str) -> bool {
    !prefix.is_empty()
        && unit
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', '@']))
}

/// The effective unit prefixes for an attach: the requested ones, or the image name when none
/// are requested (portablectl's default). When the image sets `PORTABLE_PREFIXES`, every
/// effective prefix must be one of them.
pub fn check_prefixes(
    requested: &[String],
    os: &OsRelease,
    image_name: &str,
) -> Result<Vec<String>, ImageError> {
    let mut effective: Vec<String> = Vec::new();
    let candidates = if requested.is_empty() {
        vec![image_name.to_owned()]
    } else {
        requested.to_vec()
    };
    for prefix in candidates {
        if names::check_unit_prefix(&prefix).is_err() {
            return Err(ImageError::InvalidPrefix { prefix });
        }
        if !effective.contains(&prefix) {
            effective.push(prefix);
        }
    }
    let allowed = os.portable_prefixes();
    // An empty PORTABLE_PREFIXES means the image does not restrict prefixes.
    if !allowed.is_empty()
        && let Some(prefix) = effective.iter().find(|p| !allowed.contains(p))
    {
        return Err(ImageError::PrefixNotAllowed {
            prefix: prefix.clone(),
            allowed,
        });
    }
    Ok(effective)
}

/// portabled's image naming: the base name without `.raw`, split at the first `_` into name
/// and version (`foo_1.2.raw` is `foo`, version `1.2`). The name is not validated here; see
/// [`validate_image_name`].
pub fn image_name_from_path(path: &Path) -> (String, Option<String>) {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = base.strip_suffix(".raw").unwrap_or(&base);
    match stem.split_once('_') {
        Some((name, version)) => (
            name.to_owned(),
            (!version.is_empty()).then(|| version.to_owned()),
        ),
        None => (stem.to_owned(), None),
    }
}

/// Checks an image name (see [`names::check_image_name`]).
pub fn validate_image_name(name: &str) -> Result<(), ImageError> {
    names::check_image_name(name).map_err(|reason| ImageError::InvalidImageName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A temporary image directory, plus a sibling "host" directory outside the image.
    struct Fixture {
        _tmp: tempfile::TempDir,
        image: PathBuf,
        host: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let image = tmp.path().join("image");
            let host = tmp.path().join("host");
            fs::create_dir(&image).unwrap();
            fs::create_dir(&host).unwrap();
            Fixture {
                _tmp: tmp,
                image,
                host,
            }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.image.join(rel.trim_start_matches('/'))
        }

        fn write(&self, rel: &str, contents: &str) {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }

        fn link(&self, rel: &str, target: &str) {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
        }

        fn root(&self) -> ImageRoot {
            ImageRoot::open(&self.image).unwrap()
        }
    }

    fn names(units: &[FoundUnit]) -> Vec<&str> {
        units.iter().map(|u| u.name.as_str()).collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn open_refuses_a_regular_file() {
        let fx = Fixture::new();
        fx.write("file", "x");

        let result = ImageRoot::open(&fx.path("file"));

        assert!(matches!(result, Err(ImageError::NotADirectory { .. })));
    }

    #[test]
    fn open_reports_a_missing_directory() {
        let fx = Fixture::new();

        let result = ImageRoot::open(&fx.path("missing"));

        assert!(matches!(result, Err(ImageError::OpenImage { .. })));
    }

    #[test]
    fn from_fd_refuses_a_non_directory() {
        let fx = Fixture::new();
        fx.write("file", "x");
        let fd: OwnedFd = File::open(fx.path("file")).unwrap().into();

        let result = ImageRoot::from_fd(fd, fx.path("file"));

        assert!(matches!(result, Err(ImageError::NotADirectory { .. })));
    }

    #[test]
    fn open_file_reads_a_regular_file() {
        let fx = Fixture::new();
        fx.write("etc/hello", "hi");

        let bytes = fx.root().read_bounded("/etc/hello", 10).unwrap();

        assert_eq!(bytes, b"hi");
    }

    #[test]
    fn absolute_symlink_resolves_inside_the_image() {
        let fx = Fixture::new();
        fx.write("usr/lib/os-release", "ID=berthtest\n");
        fx.link("etc/os-release", "/usr/lib/os-release");

        let os = fx.root().os_release().unwrap();

        assert_eq!(os.id(), Some("berthtest"));
    }

    #[test]
    fn absolute_self_symlink_never_reaches_the_host_file() {
        // On the host, `/etc/os-release` exists; inside the image the link points at itself.
        let fx = Fixture::new();
        fx.link("etc/os-release", "/etc/os-release");
        fx.write("usr/lib/os-release", "ID=image\n");

        let result = fx.root().open_file("/etc/os-release");

        assert!(
            matches!(result, Err(ImageError::OpenInImage { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn dotdot_symlink_is_clamped_at_the_image_root() {
        let fx = Fixture::new();
        fs::write(fx.host.join("secret"), "HOST").unwrap();
        let escape = format!(
            "../../../../../../../..{}",
            fx.host.join("secret").display()
        );
        fx.link("etc/escape", &escape);

        let result = fx.root().read_bounded("/etc/escape", 100);

        assert!(
            matches!(result, Err(ImageError::NotFound { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn dotdot_in_the_path_is_clamped_at_the_image_root() {
        let fx = Fixture::new();
        fx.write("etc/hello", "in image");

        let bytes = fx.root().read_bounded("/../../../etc/hello", 100).unwrap();

        assert_eq!(bytes, b"in image");
    }

    #[test]
    fn open_file_refuses_a_directory() {
        let fx = Fixture::new();
        fs::create_dir_all(fx.path("etc/dir")).unwrap();

        let result = fx.root().open_file("/etc/dir");

        assert!(matches!(result, Err(ImageError::NotRegularFile { .. })));
    }

    #[test]
    fn open_file_refuses_a_fifo_without_blocking() {
        let fx = Fixture::new();
        let dir = rfs::open(&fx.image, OFlags::DIRECTORY, Mode::empty()).unwrap();
        rfs::mknodat(&dir, "fifo", FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();

        let result = fx.root().open_file("/fifo");

        assert!(matches!(result, Err(ImageError::NotRegularFile { .. })));
    }

    #[test]
    fn read_bounded_accepts_exactly_max_bytes() {
        let fx = Fixture::new();
        fx.write("f", "12345");

        let bytes = fx.root().read_bounded("/f", 5).unwrap();

        assert_eq!(bytes.len(), 5);
    }

    #[test]
    fn read_bounded_refuses_a_larger_file() {
        let fx = Fixture::new();
        fx.write("f", "123456");

        let result = fx.root().read_bounded("/f", 5);

        assert!(matches!(result, Err(ImageError::TooLarge { max: 5, .. })));
    }

    #[test]
    fn os_release_prefers_etc() {
        let fx = Fixture::new();
        fx.write("etc/os-release", "ID=etc\n");
        fx.write("usr/lib/os-release", "ID=usr\n");

        let os = fx.root().os_release().unwrap();

        assert_eq!(os.id(), Some("etc"));
    }

    #[test]
    fn os_release_falls_back_to_usr_lib() {
        let fx = Fixture::new();
        fx.write("usr/lib/os-release", "ID=usr\n");

        let os = fx.root().os_release().unwrap();

        assert_eq!(os.id(), Some("usr"));
    }

    #[test]
    fn os_release_missing_everywhere_is_an_error() {
        let fx = Fixture::new();

        let err = fx.root().os_release().unwrap_err();

        assert!(matches!(err, ImageError::NoOsRelease { .. }));
        assert!(err.to_string().contains("lacks os-release data"));
    }

    #[test]
    fn os_release_too_large_is_refused() {
        let fx = Fixture::new();
        let big = "X=1\n".repeat(20_000);
        fx.write("etc/os-release", &big);

        let result = fx.root().os_release();

        assert!(matches!(result, Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn find_units_matches_prefix_followed_by_dash_dot_at_or_end() {
        let fx = Fixture::new();
        for unit in [
            "foo.service",
            "foo-bar.service",
            "foo@.service",
            "foobar.service",
            "other.service",
        ] {
            fx.write(&format!("usr/lib/systemd/system/{unit}"), "[Service]\n");
        }

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(
            names(&units),
            ["foo-bar.service", "foo.service", "foo@.service"]
        );
    }

    #[test]
    fn find_units_with_no_prefixes_returns_all_services() {
        let fx = Fixture::new();
        fx.write("usr/lib/systemd/system/a.service", "[Service]\n");
        fx.write("usr/lib/systemd/system/b.service", "[Service]\n");

        let units = fx.root().find_units(&[]).unwrap();

        assert_eq!(names(&units), ["a.service", "b.service"]);
    }

    #[test]
    fn find_units_returns_only_services() {
        let fx = Fixture::new();
        for unit in [
            "foo.service",
            "foo.socket",
            "foo.timer",
            "foo.target",
            "foo.path",
        ] {
            fx.write(&format!("usr/lib/systemd/system/{unit}"), "[Unit]\n");
        }

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(names(&units), ["foo.service"]);
    }

    #[test]
    fn find_units_first_directory_wins() {
        let fx = Fixture::new();
        fx.write("etc/systemd/system/foo.service", "from etc");
        fx.write("usr/lib/systemd/system/foo.service", "from usr");
        fx.write("lib/systemd/system/foo.service", "from lib");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(units.len(), 1);
        assert_eq!(units[0].contents, "from etc");
        assert_eq!(units[0].path_in_image, "/etc/systemd/system/foo.service");
    }

    #[test]
    fn find_units_searches_all_four_directories() {
        let fx = Fixture::new();
        fx.write("etc/systemd/system/foo-a.service", "a");
        fx.write("usr/local/lib/systemd/system/foo-b.service", "b");
        fx.write("usr/lib/systemd/system/foo-c.service", "c");
        fx.write("lib/systemd/system/foo-d.service", "d");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(
            names(&units),
            [
                "foo-a.service",
                "foo-b.service",
                "foo-c.service",
                "foo-d.service"
            ]
        );
    }

    #[test]
    fn find_units_skips_invalid_names_and_non_files() {
        let fx = Fixture::new();
        fx.write("usr/lib/systemd/system/foo.service", "ok");
        fx.write("usr/lib/systemd/system/.foo.service", "hidden");
        fx.write("usr/lib/systemd/system/foo bar.service", "space");
        fx.write(
            "usr/lib/systemd/system/foo.service.d/override.conf",
            "dropin",
        );
        fs::create_dir_all(fx.path("usr/lib/systemd/system/foo-dir.service")).unwrap();

        let units = fx.root().find_units(&[]).unwrap();

        assert_eq!(names(&units), ["foo.service"]);
    }

    #[test]
    fn find_units_skips_empty_units_and_they_mask_lower_ones() {
        let fx = Fixture::new();
        fx.write("etc/systemd/system/foo.service", "");
        fx.write("usr/lib/systemd/system/foo.service", "[Service]\n");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert!(units.is_empty());
    }

    #[test]
    fn find_units_skips_units_masked_by_dev_null() {
        let fx = Fixture::new();
        fx.link("etc/systemd/system/foo.service", "/dev/null");
        fx.write("usr/lib/systemd/system/foo.service", "[Service]\n");

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert!(units.is_empty());
    }

    #[test]
    fn find_units_follows_symlinks_inside_the_image() {
        let fx = Fixture::new();
        fx.write("opt/app/foo.service", "real");
        fx.link("etc/systemd/system/foo.service", "/opt/app/foo.service");
        fx.link(
            "usr/lib/systemd/system/foo-rel.service",
            "../../../../opt/app/foo.service",
        );

        let units = fx.root().find_units(&strings(&["foo"])).unwrap();

        assert_eq!(names(&units), ["foo-rel.service", "foo.service"]);
        assert!(units.iter().all(|u| u.contents == "real"));
    }

    #[test]
    fn find_units_refuses_an_absolute_symlink_to_a_host_file() {
        // The image links its unit to a path only the host has; resolved on the host (the
        // bug in systemd issue #43049) it would read the host's file.
        let fx = Fixture::new();
        let marker = fx.host.join("shadow-host-marker");
        fs::write(&marker, "HOST-SECRET-CONTENT").unwrap();
        let target = marker.to_str().unwrap();
        fx.link("etc/systemd/system/evil.service", target);

        let err = fx.root().find_units(&strings(&["evil"])).unwrap_err();

        assert!(
            matches!(&err, ImageError::UnitPointsOutsideImage { unit, target: t, .. }
                if unit == "evil.service" && t == target),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("evil.service"));
        assert!(message.contains("points outside the image"));
        assert!(!message.contains("HOST-SECRET-CONTENT"));
    }

    #[test]
    fn find_units_ignores_a_bad_symlink_that_does_not_match() {
        let fx = Fixture::new();
        fx.link("etc/systemd/system/evil.service", "/nonexistent");
        fx.write("usr/lib/systemd/system/good.service", "ok");

        let units = fx.root().find_units(&strings(&["good"])).unwrap();

        assert_eq!(names(&units), ["good.service"]);
    }

    #[test]
    fn find_units_refuses_a_unit_that_is_too_large() {
        let fx = Fixture::new();
        let big = "#".repeat(MAX_UNIT_FILE_SIZE as usize + 1);
        fx.write("usr/lib/systemd/system/foo.service", &big);

        let result = fx.root().find_units(&strings(&["foo"]));

        assert!(matches!(result, Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn find_units_refuses_a_unit_that_is_not_utf8() {
        let fx = Fixture::new();
        let path = fx.path("usr/lib/systemd/system/foo.service");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"\xff\xfe").unwrap();

        let result = fx.root().find_units(&strings(&["foo"]));

        assert!(matches!(result, Err(ImageError::NotUtf8 { .. })));
    }

    #[test]
    fn find_units_without_unit_directories_finds_nothing() {
        let fx = Fixture::new();

        let units = fx.root().find_units(&[]).unwrap();

        assert!(units.is_empty());
    }

    #[test]
    fn prefix_match_requires_a_separator_or_the_end() {
        assert!(unit_matches_prefix("foo.service", "foo"));
        assert!(unit_matches_prefix("foo-bar.service", "foo"));
        assert!(unit_matches_prefix("foo@.service", "foo"));
        assert!(unit_matches_prefix("foo", "foo"));
        assert!(!unit_matches_prefix("foobar.service", "foo"));
        assert!(!unit_matches_prefix("fo.service", "foo"));
        assert!(!unit_matches_prefix("foo.service", ""));
    }

    #[test]
    fn check_prefixes_defaults_to_the_image_name() {
        let os = os_release::parse("ID=x\n");

        let prefixes = check_prefixes(&[], &os, "foo").unwrap();

        assert_eq!(prefixes, ["foo"]);
    }

    #[test]
    fn check_prefixes_accepts_anything_without_portable_prefixes() {
        let os = os_release::parse("ID=x\n");

        let prefixes = check_prefixes(&strings(&["a", "b", "a"]), &os, "foo").unwrap();

        assert_eq!(prefixes, ["a", "b"]);
    }

    #[test]
    fn check_prefixes_accepts_listed_prefixes() {
        let os = os_release::parse("PORTABLE_PREFIXES=\"foo bar\"\n");

        let prefixes = check_prefixes(&strings(&["bar"]), &os, "img").unwrap();

        assert_eq!(prefixes, ["bar"]);
    }

    #[test]
    fn check_prefixes_rejects_a_prefix_outside_portable_prefixes() {
        let os = os_release::parse("PORTABLE_PREFIXES=\"foo bar\"\n");

        let err = check_prefixes(&strings(&["foo", "evil"]), &os, "img").unwrap_err();

        assert!(
            matches!(&err, ImageError::PrefixNotAllowed { prefix, allowed }
                if prefix == "evil" && allowed == &strings(&["foo", "bar"]))
        );
        assert!(err.to_string().contains("foo, bar"));
    }

    #[test]
    fn check_prefixes_checks_the_default_image_name_too() {
        let os = os_release::parse("PORTABLE_PREFIXES=app\n");

        let result = check_prefixes(&[], &os, "img");

        assert!(matches!(result, Err(ImageError::PrefixNotAllowed { .. })));
    }

    #[test]
    fn check_prefixes_rejects_invalid_prefixes() {
        let os = os_release::parse("");
        for prefix in ["", ".x", "a/b", "a b"] {
            let result = check_prefixes(&strings(&[prefix]), &os, "img");

            assert!(
                matches!(result, Err(ImageError::InvalidPrefix { .. })),
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn image_name_splits_name_and_version() {
        assert_eq!(
            image_name_from_path(Path::new("/var/lib/portables/foo_1.2.raw")),
            ("foo".into(), Some("1.2".into()))
        );
    }

    #[test]
    fn image_name_without_version() {
        assert_eq!(
            image_name_from_path(Path::new("/images/foo.raw")),
            ("foo".into(), None)
        );
        assert_eq!(
            image_name_from_path(Path::new("/images/foo/")),
            ("foo".into(), None)
        );
    }

    #[test]
    fn image_name_splits_at_the_first_underscore() {
        assert_eq!(
            image_name_from_path(Path::new("foo_1_2")),
            ("foo".into(), Some("1_2".into()))
        );
        assert_eq!(
            image_name_from_path(Path::new("foo_")),
            ("foo".into(), None)
        );
    }

    #[test]
    fn image_name_validation_accepts_portable_names() {
        assert!(validate_image_name("foo").is_ok());
        assert!(validate_image_name("foo-bar.v2_x").is_ok());
        assert!(validate_image_name(&"a".repeat(names::IMAGE_NAME_MAX)).is_ok());
    }

    #[test]
    fn image_name_validation_rejects_bad_names() {
        let long = "a".repeat(names::IMAGE_NAME_MAX + 1);
        for name in ["", ".hidden", "a/b", "a b", "ä", long.as_str()] {
            assert!(
                matches!(
                    validate_image_name(name),
                    Err(ImageError::InvalidImageName { .. })
                ),
                "{name:?}"
            );
        }
    }
}
