//! The image pool on disk (`STATE/images/`): importing an image from a descriptor, removing
//! one, marking one read-only, and what `image list` shows of each.
//!
//! Import reads the source through the descriptor the caller passed and walks a directory by
//! descriptors, one name at a time with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV)`: nothing is followed out of the tree, and no other filesystem mounted
//! inside it is entered. Symlinks are copied as symlinks (they resolve inside the image root
//! when read), a hard link is copied as content (never linked to the file it shared an inode
//! with), device nodes, FIFOs and sockets are left out with a warning, and set-user-ID,
//! set-group-ID and sticky bits are dropped (images mount `nosuid` anyway). The copy is built
//! under a hidden name and renamed into place without replacing anything.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Timestamps,
};
use rustix::io::Errno;
use thiserror::Error;

use super::Format;

/// Deepest directory nesting imported (each level holds one descriptor while it is copied).
pub const MAX_DEPTH: usize = 256;
/// Most entries [`usage`] counts before it gives up (the listing shows no size then).
pub const MAX_USAGE_ENTRIES: usize = 100_000;
/// Bytes copied between progress updates and checks for cancellation.
const CHUNK: usize = 8 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the image pool {path}: {source}")]
    OpenPool {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("an image named {name} exists already in the pool")]
    Exists { name: String },
    #[error("cannot read {path} of the image: {source}{hint}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("cannot write {path} into the pool: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} of the image is another mounted filesystem; berth imports one filesystem")]
    MountPoint { path: String },
    #[error("{path} of the image is nested more than {MAX_DEPTH} directories deep")]
    TooDeep { path: String },
    #[error("{path} changed while it was being copied")]
    Changed { path: String },
    #[error("{reason}")]
    Unpack { reason: String },
    #[error("the import was cancelled (the client went away)")]
    Cancelled,
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot change {path}: {source}")]
    Chmod {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Shared between an import and whoever reports on it.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub cancelled: AtomicBool,
}

/// What an import made.
#[derive(Debug)]
pub struct Imported {
    pub path: PathBuf,
    pub warnings: Vec<String>,
}

/// Copies the image `source` (a directory or a regular file, already sniffed as `format`) into
/// `pool` as `file_name`.
pub fn import(
    source: OwnedFd,
    format: &Format,
    pool: &Path,
    file_name: &str,
    progress: &Progress,
) -> Result<Imported, StoreError> {
    let pool_fd = open_pool(pool)?;
    if rfs::statat(&pool_fd, file_name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
        return Err(StoreError::Exists {
            name: file_name.to_owned(),
        });
    }
    let temp = format!("{IMPORT_PREFIX}{}-{}", std::process::id(), unique());
    let mut copy = Copy {
        progress,
        warnings: Vec::new(),
    };
    let result = if *format == Format::Directory {
        copy.directory(&source, &pool_fd, &temp)
    } else {
        copy.file_into(&source, &pool_fd, &temp, ".")
    };
    let renamed = result.and_then(|()| {
        rfs::renameat_with(&pool_fd, &temp, &pool_fd, file_name, RenameFlags::NOREPLACE).map_err(
            |e| match e {
                Errno::EXIST => StoreError::Exists {
                    name: file_name.to_owned(),
                },
                e => StoreError::Write {
                    path: file_name.to_owned(),
                    source: e.into(),
                },
            },
        )
    });
    if let Err(e) = renamed {
        // Best effort: what is left is a hidden entry no listing shows.
        let _ = remove_entry(&pool_fd, &temp);
        return Err(e);
    }
    rfs::fsync(&pool_fd).map_err(|e| StoreError::Write {
        path: pool.display().to_string(),
        source: e.into(),
    })?;
    Ok(Imported {
        path: pool.join(file_name),
        warnings: copy.warnings,
    })
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Copy<'a> {
    progress: &'a Progress,
    warnings: Vec<String>,
}

/// One name below `dir`, never following a symlink, never leaving `dir`, never entering
/// another mount.
fn open_beneath(dir: BorrowedFd<'_>, name: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV;
    rfs::openat2(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        resolve,
    )
}

/// The permission bits kept on a copy: no set-user-ID, set-group-ID or sticky bit.
fn kept_mode(st_mode: u32) -> Mode {
    Mode::from_raw_mode(st_mode & 0o777)
}

impl Copy<'_> {
    fn check_cancelled(&self) -> Result<(), StoreError> {
        if self.progress.cancelled.load(Ordering::Relaxed) {
            return Err(StoreError::Cancelled);
        }
        Ok(())
    }

    /// Copies the directory `source` as `name` in `parent`.
    fn directory(
        &mut self,
        source: &OwnedFd,
        parent: &OwnedFd,
        name: &str,
    ) -> Result<(), StoreError> {
        let st = rfs::fstat(source).map_err(|e| read_error(".", e))?;
        let dest = make_dir(parent, name, name)?;
        self.tree(source, &dest, ".", 0)?;
        finish_dir(&dest, &st, name)
    }

    fn tree(
        &mut self,
        source: &OwnedFd,
        dest: &OwnedFd,
        at: &str,
        depth: usize,
    ) -> Result<(), StoreError> {
        if depth >= MAX_DEPTH {
            return Err(StoreError::TooDeep {
                path: at.to_owned(),
            });
        }
        let mut names = Vec::new();
        for entry in Dir::read_from(source).map_err(|e| read_error(at, e))? {
            let entry = entry.map_err(|e| read_error(at, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        for name in names {
            self.check_cancelled()?;
            let path = if at == "." {
                name.clone()
            } else {
                format!("{at}/{name}")
            };
            // Names that are not UTF-8 were made lossy above and so no longer name the entry.
            let st = rfs::statat(source, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| read_error(&path, e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let child =
                        open_beneath(source.as_fd(), &name, OFlags::RDONLY | OFlags::DIRECTORY)
                            .map_err(|e| beneath_error(&path, e))?;
                    let copy = make_dir(dest, &name, &path)?;
                    self.tree(&child, &copy, &path, depth + 1)?;
                    finish_dir(&copy, &st, &path)?;
                }
                FileType::RegularFile => {
                    let file =
                        open_beneath(source.as_fd(), &name, OFlags::RDONLY | OFlags::NONBLOCK)
                            .map_err(|e| beneath_error(&path, e))?;
                    self.file_into(&file, dest, &name, &path)?;
                }
                FileType::Symlink => {
                    let target = rfs::readlinkat(source, name.as_str(), Vec::new())
                        .map_err(|e| read_error(&path, e))?;
                    rfs::symlinkat(target.as_c_str(), dest, name.as_str())
                        .map_err(|e| write_error(&path, e))?;
                }
                other => self.warnings.push(format!(
                    "{path}: {} left out",
                    match other {
                        FileType::BlockDevice | FileType::CharacterDevice => "device node",
                        FileType::Fifo => "FIFO",
                        FileType::Socket => "socket",
                        _ => "file of unknown type",
                    }
                )),
            }
        }
        Ok(())
    }

    /// Copies the regular file `source` as `name` in `dest` (`path` is for messages).
    fn file_into(
        &mut self,
        source: &OwnedFd,
        dest: &OwnedFd,
        name: &str,
        path: &str,
    ) -> Result<(), StoreError> {
        let st = rfs::fstat(source).map_err(|e| read_error(path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(StoreError::Changed {
                path: path.to_owned(),
            });
        }
        rfs::fcntl_setfl(source, OFlags::empty()).map_err(|e| read_error(path, e))?;
        let out = rfs::openat(
            dest,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| write_error(path, e))?;
        self.data(source, &out, path)?;
        rfs::fchmod(&out, kept_mode(st.st_mode)).map_err(|e| write_error(path, e))?;
        let times = Timestamps {
            last_access: st_time(st.st_atime, st.st_atime_nsec),
            last_modification: st_time(st.st_mtime, st.st_mtime_nsec),
        };
        rfs::futimens(&out, &times).map_err(|e| write_error(path, e))?;
        rfs::fsync(&out).map_err(|e| write_error(path, e))
    }

    /// The bytes of `source` into `out`: `copy_file_range` (a reflink where the filesystem
    /// shares extents), else read and write.
    fn data(&mut self, source: &OwnedFd, out: &OwnedFd, path: &str) -> Result<(), StoreError> {
        loop {
            self.check_cancelled()?;
            match rfs::copy_file_range(source, None, out, None, CHUNK) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.progress.done.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => break,
                Err(e) => return Err(read_error(path, e)),
            }
        }
        // Read and write go on from where copy_file_range stopped: it moved both file offsets.
        let mut input = File::from(
            source
                .try_clone()
                .map_err(|e| read_error(path, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?,
        );
        let mut output = File::from(
            out.try_clone()
                .map_err(|e| write_error(path, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?,
        );
        let mut buffer = vec![0u8; 1024 * 1024];
        loop {
            self.check_cancelled()?;
            let n = match input.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Read {
                        path: path.to_owned(),
                        source,
                        hint: "",
                    });
                }
            };
            output
                .write_all(&buffer[..n])
                .map_err(|source| StoreError::Write {
                    path: path.to_owned(),
                    source,
                })?;
            self.progress.done.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn st_time(sec: i64, nsec: u64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec.try_into().unwrap_or(0),
    }
}

/// A new directory `name` in `parent`, private until it is finished.
fn make_dir(parent: &OwnedFd, name: &str, path: &str) -> Result<OwnedFd, StoreError> {
    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(|e| write_error(path, e))?;
    rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| write_error(path, e))
}

/// The mode and times of the source directory, once its entries are in.
fn finish_dir(dest: &OwnedFd, st: &rfs::Stat, path: &str) -> Result<(), StoreError> {
    // The owner keeps write and search permission, or berthd could not remove the copy later.
    let mode = kept_mode(st.st_mode) | Mode::RWXU;
    rfs::fchmod(dest, mode).map_err(|e| write_error(path, e))?;
    let times = Timestamps {
        last_access: st_time(st.st_atime, st.st_atime_nsec),
        last_modification: st_time(st.st_mtime, st.st_mtime_nsec),
    };
    rfs::futimens(dest, &times).map_err(|e| write_error(path, e))
}

fn read_error(path: &str, e: Errno) -> StoreError {
    StoreError::Read {
        path: path.to_owned(),
        source: e.into(),
        hint: if e == Errno::ACCESS {
            " (berthd reads the entries below the directory it was given with its own rights: \
             make them readable to it, or pack the image with 'berth image pack' and import the \
             file)"
        } else {
            ""
        },
    }
}

fn beneath_error(path: &str, e: Errno) -> StoreError {
    match e {
        Errno::XDEV => StoreError::MountPoint {
            path: path.to_owned(),
        },
        // Swapped for a symlink between the listing and the open.
        Errno::LOOP => StoreError::Changed {
            path: path.to_owned(),
        },
        e => read_error(path, e),
    }
}

fn write_error(path: &str, e: Errno) -> StoreError {
    StoreError::Write {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// Removes `name` from `parent`: a directory with everything below it (never following a
/// symlink, never entering another mount), anything else by unlinking it (a symlink, not what
/// it points at).
pub fn remove_entry(parent: &OwnedFd, name: &str) -> Result<(), StoreError> {
    remove_below(parent, name, name, 0)
}

fn remove_below(parent: &OwnedFd, name: &str, path: &str, depth: usize) -> Result<(), StoreError> {
    let remove_error = |e: Errno| StoreError::Remove {
        path: path.to_owned(),
        source: e.into(),
    };
    let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(remove_error)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rfs::unlinkat(parent, name, AtFlags::empty()).map_err(remove_error);
    }
    if depth >= MAX_DEPTH {
        return Err(StoreError::TooDeep {
            path: path.to_owned(),
        });
    }
    let dir = open_beneath(parent.as_fd(), name, OFlags::RDONLY | OFlags::DIRECTORY)
        .map_err(remove_error)?;
    // Removing entries needs write and search permission on the directory.
    rfs::fchmod(&dir, Mode::from_raw_mode(st.st_mode & 0o777) | Mode::RWXU)
        .map_err(remove_error)?;
    let mut names = Vec::new();
    for entry in Dir::read_from(&dir).map_err(remove_error)? {
        let entry = entry.map_err(remove_error)?;
        let entry_name = entry.file_name().to_bytes();
        if entry_name != b"." && entry_name != b".." {
            names.push(entry.file_name().to_owned());
        }
    }
    for entry_name in names {
        let shown = format!("{path}/{}", entry_name.to_string_lossy());
        let Ok(entry_str) = entry_name.into_string() else {
            // Not UTF-8: unlink by bytes (a directory of such a name is left, and then the
            // removal of its parent says so).
            continue;
        };
        remove_below(&dir, &entry_str, &shown, depth + 1)?;
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(remove_error)
}

/// Opens the pool directory `pool`, the parent of every entry the store creates or removes.
pub(crate) fn open_pool(pool: &Path) -> Result<OwnedFd, StoreError> {
    rfs::open(
        pool,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StoreError::OpenPool {
        path: pool.display().to_string(),
        source: e.into(),
    })
}

/// Removes the pool image at `path` (an entry of the pool directory).
pub fn remove(path: &Path) -> Result<(), StoreError> {
    let (parent, name) = split(path)?;
    let parent_fd = rfs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StoreError::Remove {
        path: parent.display().to_string(),
        source: e.into(),
    })?;
    remove_entry(&parent_fd, name)?;
    rfs::fsync(&parent_fd).map_err(|e| StoreError::Remove {
        path: parent.display().to_string(),
        source: e.into(),
    })
}

fn split(path: &Path) -> Result<(&Path, &str), StoreError> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(StoreError::Remove {
            path: path.display().to_string(),
            source: io::Error::other("not an entry of a directory"),
        }),
    }
}

/// Marks the image at `path` read-only or writable: the write permission bits of the image
/// file or top-level directory. (portabled sets the immutable flag on a directory; that needs
/// CAP_LINUX_IMMUTABLE, which berthd does not have. Services never write an image either way:
/// the sandbox mounts it read-only.)
pub fn set_read_only(path: &Path, read_only: bool) -> Result<(), StoreError> {
    let chmod_error = |e: Errno| StoreError::Chmod {
        path: path.display().to_string(),
        source: e.into(),
    };
    let st = rfs::lstat(path).map_err(chmod_error)?;
    let mode = st.st_mode & 0o7777;
    let mode = if read_only {
        mode & !0o222
    } else {
        mode | 0o200
    };
    rfs::chmod(path, Mode::from_raw_mode(mode)).map_err(chmod_error)
}

/// Whether the image at `path` is read-only: no write permission on it, or berthd may not
/// change the directory it is in (portabled: not writable).
pub fn is_read_only(path: &Path) -> bool {
    let no_write_bits = rfs::stat(path).is_ok_and(|st| st.st_mode & 0o222 == 0);
    let parent_writable = path
        .parent()
        .is_some_and(|p| rfs::access(p, rfs::Access::WRITE_OK).is_ok());
    no_write_bits || !parent_writable
}

/// Bytes of the files of the image at `path` (its own size for a file), and its modification
/// time in microseconds; the size is `None` past [`MAX_USAGE_ENTRIES`] entries.
pub fn usage(path: &Path) -> (Option<u64>, Option<i64>) {
    let Ok(st) = rfs::stat(path) else {
        return (None, None);
    };
    let mtime = st
        .st_mtime
        .checked_mul(1_000_000)
        .map(|us| us + (st.st_mtime_nsec / 1000) as i64);
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return (Some(st.st_size as u64), mtime);
    }
    let Ok(root) = rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return (None, mtime);
    };
    let mut budget = MAX_USAGE_ENTRIES;
    (tree_bytes(&root, &mut budget, 0), mtime)
}

fn tree_bytes(dir: &OwnedFd, budget: &mut usize, depth: usize) -> Option<u64> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let mut total = 0u64;
    for entry in Dir::read_from(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        *budget = budget.checked_sub(1)?;
        let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let child = rfs::openat2(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
                )
                .ok()?;
                total += tree_bytes(&child, budget, depth + 1)?;
            }
            FileType::RegularFile => total += st.st_size as u64,
            _ => {}
        }
    }
    Some(total)
}

/// What every import in progress is named in the pool until it is renamed into place.
pub const IMPORT_PREFIX: &str = ".import-";

/// Removes what imports cut short by a crash of berthd left in `pool`: the hidden
/// [`IMPORT_PREFIX`] entries. Only at start, before any import can run. Returns their names.
pub fn remove_interrupted_imports(pool: &Path) -> Result<Vec<String>, StoreError> {
    let pool_fd = open_pool(pool)?;
    let mut stale = Vec::new();
    let listing = Dir::read_from(&pool_fd).map_err(|e| StoreError::OpenPool {
        path: pool.display().to_string(),
        source: e.into(),
    })?;
    for entry in listing {
        let entry = entry.map_err(|e| StoreError::OpenPool {
            path: pool.display().to_string(),
            source: e.into(),
        })?;
        if let Ok(name) = entry.file_name().to_str()
            && name.starts_with(IMPORT_PREFIX)
        {
            stale.push(name.to_owned());
        }
    }
    for name in &stale {
        remove_entry(&pool_fd, name)?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    use super::*;

    #[test]
    fn interrupted_imports_are_removed_and_nothing_else() {
        let pool = tempfile::tempdir().unwrap();
        let p = pool.path();
        fs::create_dir_all(p.join(".import-7-0/usr/bin")).unwrap();
        fs::write(p.join(".import-7-0/usr/bin/x"), "x").unwrap();
        fs::set_permissions(p.join(".import-7-0/usr"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::write(p.join(".import-app-7-1"), "half a file").unwrap();
        fs::create_dir(p.join("app")).unwrap();
        fs::write(p.join(".hidden"), "").unwrap();

        let mut removed = remove_interrupted_imports(p).unwrap();

        removed.sort();
        assert_eq!(removed, [".import-7-0", ".import-app-7-1"]);
        let mut left: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".hidden", "app"]);
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        src: PathBuf,
        pool: PathBuf,
        host: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let (src, pool, host) = (
            tmp.path().join("src"),
            tmp.path().join("pool"),
            tmp.path().join("host"),
        );
        for d in [&src, &pool, &host] {
            fs::create_dir(d).unwrap();
        }
        Fixture {
            _tmp: tmp,
            src,
            pool,
            host,
        }
    }

    fn import_dir(fx: &Fixture, name: &str) -> Result<Imported, StoreError> {
        let fd: OwnedFd = File::open(&fx.src).unwrap().into();
        import(fd, &Format::Directory, &fx.pool, name, &Progress::default())
    }

    #[test]
    fn a_directory_is_copied_with_its_files_modes_and_symlinks() {
        let fx = fixture();
        fs::create_dir_all(fx.src.join("usr/bin")).unwrap();
        fs::write(fx.src.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            fx.src.join("usr/bin/tool"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        symlink("/usr/bin/tool", fx.src.join("tool-link")).unwrap();

        let imported = import_dir(&fx, "img").unwrap();

        let copy = imported.path;
        assert_eq!(
            fs::read_to_string(copy.join("usr/bin/tool")).unwrap(),
            "#!/bin/sh\n"
        );
        // The set-user-ID bit is dropped, the rest kept.
        assert_eq!(
            fs::metadata(copy.join("usr/bin/tool")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(
            fs::read_link(copy.join("tool-link")).unwrap(),
            Path::new("/usr/bin/tool")
        );
    }

    #[test]
    fn a_symlinked_directory_is_copied_as_a_link_never_followed_out_of_the_tree() {
        let fx = fixture();
        fs::write(fx.host.join("secret"), "HOST").unwrap();
        symlink(&fx.host, fx.src.join("etc")).unwrap();

        let imported = import_dir(&fx, "img").unwrap();

        let link = imported.path.join("etc");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(&link).unwrap(), fx.host);
        assert_eq!(fs::read_dir(&imported.path).unwrap().count(), 1);
    }

    #[test]
    fn a_hard_link_to_a_host_file_is_copied_as_content_not_linked() {
        let fx = fixture();
        fs::write(fx.host.join("passwd"), "host data").unwrap();
        fs::hard_link(fx.host.join("passwd"), fx.src.join("passwd")).unwrap();

        let imported = import_dir(&fx, "img").unwrap();

        let copy = imported.path.join("passwd");
        assert_eq!(fs::read_to_string(&copy).unwrap(), "host data");
        assert_ne!(
            fs::metadata(&copy).unwrap().ino(),
            fs::metadata(fx.host.join("passwd")).unwrap().ino()
        );
        fs::write(&copy, "changed").unwrap();
        assert_eq!(
            fs::read_to_string(fx.host.join("passwd")).unwrap(),
            "host data"
        );
    }

    #[test]
    fn fifos_are_left_out_with_a_warning() {
        let fx = fixture();
        let dir = rfs::open(&fx.src, OFlags::DIRECTORY, Mode::empty()).unwrap();
        rfs::mknodat(&dir, "fifo", FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();

        let imported = import_dir(&fx, "img").unwrap();

        assert!(!imported.path.join("fifo").exists());
        assert_eq!(imported.warnings, ["fifo: FIFO left out"]);
    }

    #[test]
    fn an_existing_name_is_refused_and_left_alone() {
        let fx = fixture();
        fs::create_dir(fx.pool.join("img")).unwrap();
        fs::write(fx.pool.join("img/mine"), "x").unwrap();

        let err = import_dir(&fx, "img").unwrap_err();

        assert!(matches!(err, StoreError::Exists { .. }), "{err:?}");
        assert!(fx.pool.join("img/mine").exists());
    }

    #[test]
    fn a_file_is_copied_with_its_bytes_and_progress() {
        let fx = fixture();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        fs::write(fx.src.join("foo_1.raw"), &bytes).unwrap();
        let fd: OwnedFd = File::open(fx.src.join("foo_1.raw")).unwrap().into();
        let progress = Progress::default();

        let imported = import(fd, &Format::Squashfs, &fx.pool, "foo_1.raw", &progress).unwrap();

        assert_eq!(fs::read(imported.path).unwrap(), bytes);
        assert_eq!(progress.done.load(Ordering::Relaxed), 3_000_000);
    }

    #[test]
    fn a_cancelled_import_leaves_nothing_in_the_pool() {
        let fx = fixture();
        fs::write(fx.src.join("f"), "x").unwrap();
        let progress = Progress::default();
        progress.cancelled.store(true, Ordering::Relaxed);
        let fd: OwnedFd = File::open(&fx.src).unwrap().into();

        let err = import(fd, &Format::Directory, &fx.pool, "img", &progress).unwrap_err();

        assert!(matches!(err, StoreError::Cancelled), "{err:?}");
        assert_eq!(fs::read_dir(&fx.pool).unwrap().count(), 0);
    }

    #[test]
    fn remove_deletes_a_tree_without_following_its_symlinks() {
        let fx = fixture();
        fs::write(fx.host.join("keep"), "x").unwrap();
        fs::create_dir_all(fx.pool.join("img/sub")).unwrap();
        fs::write(fx.pool.join("img/sub/file"), "x").unwrap();
        fs::set_permissions(fx.pool.join("img/sub"), fs::Permissions::from_mode(0o555)).unwrap();
        symlink(&fx.host, fx.pool.join("img/host")).unwrap();

        remove(&fx.pool.join("img")).unwrap();

        assert!(!fx.pool.join("img").exists());
        assert!(fx.host.join("keep").exists());
    }

    #[test]
    fn read_only_clears_and_restores_the_write_bits() {
        let fx = fixture();
        let image = fx.pool.join("foo.raw");
        fs::write(&image, "x").unwrap();

        set_read_only(&image, true).unwrap();
        let read_only = is_read_only(&image);
        set_read_only(&image, false).unwrap();

        assert!(read_only);
        assert!(!is_read_only(&image));
    }

    #[test]
    fn usage_sums_the_files_of_a_directory() {
        let fx = fixture();
        fs::create_dir(fx.src.join("d")).unwrap();
        fs::write(fx.src.join("a"), "12345").unwrap();
        fs::write(fx.src.join("d/b"), "123").unwrap();

        let (size, mtime) = usage(&fx.src);

        assert_eq!(size, Some(8));
        assert!(mtime.is_some());
    }
}
