//! The root directory of an image, held open, and every read below it.
//!
//! Every path read from an image is resolved inside the image root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and absolute symlinks stay inside
//! the image and never reach host files; only regular files are read, and every read is
//! bounded. The root is held as a directory fd, so a symlink in the path the image was opened
//! from is resolved once, at open (portabled issues #14634/#14635).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::ImageError;

/// The root directory of an image, held open.
#[derive(Debug)]
pub struct ImageRoot {
    fd: OwnedFd,
    path: PathBuf,
    /// For the mount of an image file, the file: its identity is the image's (the mount's
    /// root is on a loop device, another one at every mount).
    backing: Option<OwnedFd>,
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
            backing: None,
        })
    }

    /// Wraps a directory fd opened by someone else (the CLI opens local images with the
    /// caller's rights and passes the fd); `path` is only for messages.
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
        Ok(ImageRoot {
            fd,
            path,
            backing: None,
        })
    }

    /// The root of the helper's mount `mount` of the image file `backing`.
    pub fn from_mount(
        mount: OwnedFd,
        backing: OwnedFd,
        path: PathBuf,
    ) -> Result<ImageRoot, ImageError> {
        let mut root = Self::from_fd(mount, path)?;
        root.backing = Some(backing);
        Ok(root)
    }

    /// The image file this root is a mount of (the mount let go), or the root itself back
    /// when it is no mount.
    pub fn into_backing(self) -> Result<OwnedFd, ImageRoot> {
        match self.backing {
            Some(backing) => Ok(backing),
            None => Err(self),
        }
    }

    /// The root's fd, as Spawn takes it.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub(super) fn image(&self) -> String {
        self.path.display().to_string()
    }

    /// The root's descriptor (berthd hands a copy of a held one to the helper for a spawn).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// Where the root was opened from (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names in directory `dir` (resolved inside the root), at most `max` of them read;
    /// names that are not UTF-8 are skipped.
    pub fn list_dir(&self, dir: &str, max: usize) -> Result<Vec<String>, ImageError> {
        let fd = self
            .openat2_in_root(dir, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| self.open_error(dir, e))?;
        let read_error = |e: Errno| ImageError::Read {
            image: self.image(),
            path: dir.to_owned(),
            source: e.into(),
        };
        let mut names = Vec::new();
        for entry in rfs::Dir::read_from(&fd).map_err(read_error)?.take(max) {
            let entry = entry.map_err(read_error)?;
            if let Ok(name) = entry.file_name().to_str()
                && name != "."
                && name != ".."
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Which directory this root is (see [`crate::image::identity`]).
    pub fn identity(&self) -> io::Result<crate::image::identity::ImageIdentity> {
        crate::image::identity::ImageIdentity::of(self.backing.as_ref().unwrap_or(&self.fd))
    }

    /// `openat2` below the root with in-root resolution. EAGAIN happens when a concurrent
    /// rename races with `..` resolution; the kernel asks for a retry.
    pub(super) fn openat2_in_root(&self, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
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

    pub(super) fn open_error(&self, path: &str, errno: Errno) -> ImageError {
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
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rustix::fs::{self as rfs, FileType, Mode, OFlags};

    use super::*;
    use crate::image::test_fixture::Fixture;

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
}
