//! Tarball images (`.tar`, `.tar.gz`, `.tar.zst`): unpacked by berthd itself (user berth, no
//! capabilities, never root) into a directory image.
//!
//! The archive is hostile. Each entry's header is read and judged before anything is written:
//! absolute names, `..`, links that leave the tree, device nodes, FIFOs and entry kinds without
//! a meaning in an image are refused with an error naming the entry. Every write goes through
//! directory fds below the destination: a parent is opened one component at a time with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, entries are created with `O_EXCL` /
//! `O_NOFOLLOW`, so a symlink an earlier entry made is never followed. The `tar` crate only
//! parses (raw iteration: long names and pax records are read here, bounded; its `unpack` is
//! not used).
//!
//! Ownership and special bits: berthd cannot chown, so every file belongs to berth; the
//! archive's uid/gid, xattrs (file capabilities included) and setuid/setgid bits are dropped (a
//! setuid file owned by berth would only ever grant berth's uid, and images mount nosuid). The
//! permission bits and the sticky bit of directories are kept, as are modification times.
//!
//! Limits bound a tarball bomb: unpacked bytes, entries, path and name length, depth, and the
//! compression ratio once past a first 32 MiB.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{
    self as rfs, AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;
use tar::EntryType;
use thiserror::Error;

use crate::image::store::{IMPORT_PREFIX, remove_entry};
use crate::image::{Format, ImageError, OpenedImage};

/// Below this many decompressed bytes the compression ratio is not checked: small archives of
/// text or zeros legitimately compress far better than large ones.
const RATIO_GRACE_BYTES: u64 = 32 * 1024 * 1024;

/// Largest pax extended header read (paths, link targets and a few numbers fit many times).
const MAX_PAX_BYTES: u64 = 64 * 1024;

/// Longest name shown in an error: a hostile name may be megabytes long.
const MAX_NAME_SHOWN: usize = 200;

/// Bounds on what one archive may unpack to (berthd.toml `tarball_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarLimits {
    /// Total bytes of file data.
    pub max_bytes: u64,
    /// Entries of any kind.
    pub max_entries: u64,
    /// Bytes of one entry's path (after removing `./`) or symlink target.
    pub max_path_bytes: usize,
    /// Bytes of one path component.
    pub max_name_bytes: usize,
    /// Components of one path; at most [`crate::image::store::MAX_DEPTH`], which bounds the fds held while
    /// a failed import is removed.
    pub max_depth: usize,
    /// Decompressed bytes per compressed byte, checked once `ratio_grace_bytes` are out.
    pub max_ratio: u64,
    pub ratio_grace_bytes: u64,
}

impl Default for TarLimits {
    fn default() -> Self {
        TarLimits {
            max_bytes: 8 * 1024 * 1024 * 1024,
            max_entries: 1_000_000,
            max_path_bytes: 4095,
            max_name_bytes: 255,
            max_depth: 128,
            // Root filesystems compress 3-10x; only runs of zeros get near gzip's 1032x.
            max_ratio: 200,
            ratio_grace_bytes: RATIO_GRACE_BYTES,
        }
    }
}

/// How the archive was compressed (found from its first bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What an unpack produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub compression: Compression,
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Bytes read from the archive file.
    pub input_bytes: u64,
}

#[derive(Debug, Error)]
pub enum TarError {
    #[error("reading the archive: {source}")]
    Read { source: io::Error },
    #[error(
        "the archive is compressed with {found}, which berth does not unpack (gzip and zstd only)"
    )]
    UnsupportedCompression { found: &'static str },
    #[error("entry {entry:?}: absolute names are refused")]
    AbsoluteName { entry: String },
    #[error("entry {entry:?}: names with `..` are refused")]
    DotDot { entry: String },
    #[error("entry {entry:?}: the name is empty or holds a NUL byte")]
    BadName { entry: String },
    #[error("entry {entry:?}: link to {target:?} leaves the image")]
    LinkEscapes { entry: String, target: String },
    #[error("entry {entry:?}: a {kind} is refused (images hold no device nodes or FIFOs)")]
    SpecialFile { entry: String, kind: &'static str },
    #[error("entry {entry:?}: entry type {kind:?} is not supported")]
    UnsupportedType { entry: String, kind: char },
    #[error("entry {entry:?}: a name component is longer than {max} bytes")]
    NameTooLong { entry: String, max: usize },
    #[error("entry {entry:?}: the path or link target is longer than {max} bytes")]
    PathTooLong { entry: String, max: usize },
    #[error("entry {entry:?}: deeper than {max} directories")]
    TooDeep { entry: String, max: usize },
    #[error("the archive has more than {max} entries")]
    TooManyEntries { max: u64 },
    #[error("entry {entry:?}: the files would unpack to more than {max} bytes")]
    TooLarge { entry: String, max: u64 },
    #[error(
        "the archive decompresses to more than {max} times its size ({decompressed} bytes from \
         {compressed}): a tarball bomb?"
    )]
    CompressionRatio {
        decompressed: u64,
        compressed: u64,
        max: u64,
    },
    #[error("entry {entry:?}: {reason}")]
    Malformed { entry: String, reason: &'static str },
    #[error("entry {entry:?}: appears twice in the archive")]
    Duplicate { entry: String },
    #[error("entry {entry:?}: a parent in its path is not a directory (a symlink or a file)")]
    ParentNotDirectory { entry: String },
    #[error("entry {entry:?}: creating it: {source}")]
    Create { entry: String, source: io::Error },
    #[error("finishing directory {entry:?}: {source}")]
    Finish { entry: String, source: io::Error },
    #[error("the import was cancelled")]
    Cancelled,
    #[error("image {name:?} already exists")]
    Exists { name: String },
    #[error("{operation} {name:?} in the image directory: {source}")]
    Store {
        operation: &'static str,
        name: String,
        source: io::Error,
    },
}

/// A tarball is not read in place: `berth image import` unpacks it into a directory image.
pub fn open(_fd: OwnedFd, format: Format, label: &str) -> Result<OpenedImage, ImageError> {
    Err(ImageError::UnsupportedFormat {
        image: label.to_owned(),
        found: format!(
            "{format}: a tarball is unpacked by `berth image import`, not used as it is"
        ),
    })
}

/// Shows a raw name in messages: lossy UTF-8, cut at [`MAX_NAME_SHOWN`] characters.
fn shown(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    if text.chars().count() > MAX_NAME_SHOWN {
        let cut: String = text.chars().take(MAX_NAME_SHOWN).collect();
        format!("{cut}...")
    } else {
        text.into_owned()
    }
}

fn io_err(e: Errno) -> io::Error {
    e.into()
}

/// Counts the bytes read through it into a shared cell (the readers nest inside decoders).
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// A zstd stream of one or more frames (ruzstd decodes one frame at a time).
struct ZstdFrames<R: BufRead> {
    decoder: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> io::Result<Self> {
        let decoder = ruzstd::decoding::StreamingDecoder::new(source).map_err(io::Error::other)?;
        Ok(ZstdFrames {
            decoder: Some(decoder),
        })
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // End of a frame: another may follow (pzstd, concatenated files).
            let Some(decoder) = self.decoder.take() else {
                return Ok(0);
            };
            let mut source = decoder.into_inner();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.decoder =
                Some(ruzstd::decoding::StreamingDecoder::new(source).map_err(io::Error::other)?);
        }
    }
}

/// The decompressed archive, with the compression found from the first bytes.
fn open_decompressed<R: Read + 'static>(raw: R) -> Result<(Compression, Box<dyn Read>), TarError> {
    let mut buffered = BufReader::with_capacity(64 * 1024, raw);
    let head = buffered
        .fill_buf()
        .map_err(|source| TarError::Read { source })?;
    let compression = match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', ..] => {
            return Err(TarError::UnsupportedCompression { found: "xz" });
        }
        [b'B', b'Z', b'h', ..] => return Err(TarError::UnsupportedCompression { found: "bzip2" }),
        _ => Compression::None,
    };
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(ZstdFrames::new(buffered).map_err(|source| TarError::Read { source })?)
        }
    };
    Ok((compression, reader))
}

/// An entry's path split into its components, checked against the limits.
fn components<'a>(raw: &'a [u8], limits: &TarLimits) -> Result<Vec<&'a [u8]>, TarError> {
    let entry = || shown(raw);
    if raw.contains(&0) {
        return Err(TarError::BadName { entry: entry() });
    }
    if raw.starts_with(b"/") {
        return Err(TarError::AbsoluteName { entry: entry() });
    }
    let parts: Vec<&[u8]> = raw
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let mut length = 0;
    for part in &parts {
        if *part == b".." {
            return Err(TarError::DotDot { entry: entry() });
        }
        if part.len() > limits.max_name_bytes {
            return Err(TarError::NameTooLong {
                entry: entry(),
                max: limits.max_name_bytes,
            });
        }
        length += part.len() + 1;
    }
    if length > limits.max_path_bytes + 1 {
        return Err(TarError::PathTooLong {
            entry: entry(),
            max: limits.max_path_bytes,
        });
    }
    if parts.len() > limits.max_depth {
        return Err(TarError::TooDeep {
            entry: entry(),
            max: limits.max_depth,
        });
    }
    Ok(parts)
}

/// Whether a symlink at `parent` (components below the root) pointing at `target` stays inside
/// the tree when resolved as it would be inside the image: relative to the link's directory, an
/// absolute target from the image root. Lexical: a chain of links is not followed here, which
/// is safe because everything that reads an image resolves in its root (`RESOLVE_IN_ROOT`) and
/// the sandbox makes it `/`; this refuses the links whose only purpose is to climb out.
fn symlink_stays_inside(parent: &[&[u8]], target: &[u8]) -> bool {
    let mut depth = if target.starts_with(b"/") {
        0
    } else {
        parent.len()
    };
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

/// Opens the directory `parts` below `root` one component at a time, never through a symlink,
/// creating missing ones (an archive need not list its directories) and recording them.
fn open_dir(
    root: BorrowedFd<'_>,
    parts: &[&[u8]],
    entry: &[u8],
    dirs: &mut DeferredDirs,
) -> Result<OwnedFd, TarError> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut current =
        rfs::openat(root, c".", flags, Mode::empty()).map_err(|e| create_error(entry, e))?;
    for (i, part) in parts.iter().enumerate() {
        let opened = match rfs::openat2(&current, *part, flags, Mode::empty(), resolve) {
            Err(Errno::NOENT) => {
                rfs::mkdirat(&current, *part, Mode::from_raw_mode(0o700))
                    .map_err(|e| create_error(entry, e))?;
                dirs.implied(parts[..=i].join(&b'/'));
                rfs::openat2(&current, *part, flags, Mode::empty(), resolve)
            }
            other => other,
        };
        current = opened.map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR | Errno::XDEV => TarError::ParentNotDirectory {
                entry: shown(entry),
            },
            e => create_error(entry, e),
        })?;
    }
    Ok(current)
}

fn create_error(entry: &[u8], errno: Errno) -> TarError {
    match errno {
        Errno::EXIST => TarError::Duplicate {
            entry: shown(entry),
        },
        e => TarError::Create {
            entry: shown(entry),
            source: e.into(),
        },
    }
}

/// Directories get their mode and mtime last: a read-only directory must stay writable while
/// its entries are created.
#[derive(Default)]
struct DeferredDirs {
    /// Path below the root (empty for the root itself) → (mode, mtime), in creation order.
    order: Vec<Vec<u8>>,
    attrs: HashMap<Vec<u8>, (u32, Option<u64>)>,
}

impl DeferredDirs {
    /// A directory created for an entry below it, before (or without) its own entry.
    fn implied(&mut self, path: Vec<u8>) {
        if !self.attrs.contains_key(&path) {
            self.order.push(path.clone());
            self.attrs.insert(path, (0o755, None));
        }
    }

    fn explicit(&mut self, path: Vec<u8>, mode: u32, mtime: u64) {
        if !self.attrs.contains_key(&path) {
            self.order.push(path.clone());
        }
        self.attrs.insert(path, (mode, Some(mtime)));
    }

    /// Deepest first, so a directory without owner search permission is closed last.
    fn apply(mut self, root: BorrowedFd<'_>) -> Result<(), TarError> {
        self.order.sort_by_key(|path| {
            std::cmp::Reverse(
                path.iter().filter(|&&b| b == b'/').count() + !path.is_empty() as usize,
            )
        });
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        for path in &self.order {
            let (mode, mtime) = self.attrs[path];
            // Nobody but berth writes the image root (attach checks its path as StrictModes).
            let mode = if path.is_empty() { mode & !0o022 } else { mode };
            let finish = |e: io::Error| TarError::Finish {
                entry: shown(path),
                source: e,
            };
            let name: &[u8] = if path.is_empty() { b"." } else { path };
            let fd = rfs::openat2(
                root,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            )
            .map_err(|e| finish(e.into()))?;
            if let Some(mtime) = mtime {
                rfs::futimens(&fd, &times(mtime)).map_err(|e| finish(e.into()))?;
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(mode & 0o1777)).map_err(|e| finish(e.into()))?;
        }
        Ok(())
    }
}

fn times(mtime: u64) -> Timestamps {
    let at = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// The name and link target an entry really has: GNU long names and pax records come as
/// entries of their own before it.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    /// A pax sparse file (`GNU.sparse.*` records): its data starts with a map, not the file.
    sparse: bool,
}

/// Reads a metadata entry (long name, pax record) whole, refusing one larger than `max`.
fn read_metadata<R: Read>(entry: &mut tar::Entry<'_, R>, max: u64) -> Result<Vec<u8>, TarError> {
    if entry.size() > max {
        return Err(TarError::PathTooLong {
            entry: shown(&entry.path_bytes()),
            max: max as usize,
        });
    }
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|source| TarError::Read { source })?;
    Ok(bytes)
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    progress: &'a mut dyn FnMut(u64) -> ControlFlow<()>,
    limits: &'a TarLimits,
    compression: Compression,
    compressed: Rc<Cell<u64>>,
    decompressed: Rc<Cell<u64>>,
    stats: UnpackStats,
    dirs: DeferredDirs,
}

impl Unpacker<'_> {
    /// Reports the archive bytes read so far; the receiver may cancel.
    fn report(&mut self) -> Result<(), TarError> {
        match (self.progress)(self.compressed.get()) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(TarError::Cancelled),
        }
    }

    fn check_ratio(&self) -> Result<(), TarError> {
        let (decompressed, compressed) = (self.decompressed.get(), self.compressed.get());
        if self.compression != Compression::None
            && decompressed > self.limits.ratio_grace_bytes
            && decompressed > compressed.saturating_mul(self.limits.max_ratio)
        {
            return Err(TarError::CompressionRatio {
                decompressed,
                compressed,
                max: self.limits.max_ratio,
            });
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pending: Pending,
    ) -> Result<(), TarError> {
        let raw_name = pending
            .path
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let name = raw_name.as_slice();
        let header = entry.header();
        let kind = header.entry_type();
        let malformed = |reason| TarError::Malformed {
            entry: shown(name),
            reason,
        };
        if pending.sparse {
            return Err(TarError::UnsupportedType {
                entry: shown(name),
                kind: 'S',
            });
        }
        if let Some(size) = pending.size {
            // Two parsers disagreeing on a size is how archives smuggle entries.
            if size != entry.size() {
                return Err(malformed("its pax size disagrees with its header"));
            }
        }
        match kind {
            EntryType::Char => {
                return Err(TarError::SpecialFile {
                    entry: shown(name),
                    kind: "character device",
                });
            }
            EntryType::Block => {
                return Err(TarError::SpecialFile {
                    entry: shown(name),
                    kind: "block device",
                });
            }
            EntryType::Fifo => {
                return Err(TarError::SpecialFile {
                    entry: shown(name),
                    kind: "FIFO",
                });
            }
            _ => {}
        }
        let parts = components(name, self.limits)?;
        let mode = header
            .mode()
            .map_err(|_| malformed("its mode is not a number"))?;
        let mtime = header
            .mtime()
            .map_err(|_| malformed("its mtime is not a number"))?;
        let link = pending
            .link
            .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));

        if kind == EntryType::Directory {
            if let Some((_, parents)) = parts.split_last() {
                let parent = open_dir(self.root, parents, name, &mut self.dirs)?;
                let last = parts[parts.len() - 1];
                match rfs::mkdirat(&parent, last, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    // A directory listed twice, or after entries below it: fine, unless what
                    // is there is not a directory.
                    Err(Errno::EXIST) => drop(open_dir(self.root, &parts, name, &mut self.dirs)?),
                    Err(e) => return Err(create_error(name, e)),
                }
            }
            self.dirs.explicit(parts.join(&b'/'), mode, mtime);
            return Ok(());
        }

        let Some((last, parents)) = parts.split_last() else {
            return Err(TarError::BadName { entry: shown(name) });
        };
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                if self.stats.bytes.saturating_add(size) > self.limits.max_bytes {
                    return Err(TarError::TooLarge {
                        entry: shown(name),
                        max: self.limits.max_bytes,
                    });
                }
                let parent = open_dir(self.root, parents, name, &mut self.dirs)?;
                let fd = rfs::openat(
                    &parent,
                    *last,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| create_error(name, e))?;
                let mut file = File::from(fd);
                let write_error = |source| TarError::Create {
                    entry: shown(name),
                    source,
                };
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let n = entry
                        .read(&mut buffer)
                        .map_err(|source| TarError::Read { source })?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buffer[..n]).map_err(write_error)?;
                    self.stats.bytes += n as u64;
                    self.check_ratio()?;
                    self.report()?;
                }
                let fd = OwnedFd::from(file);
                rfs::futimens(&fd, &times(mtime)).map_err(|e| write_error(io_err(e)))?;
                // No setuid/setgid: see the module comment.
                rfs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
                    .map_err(|e| write_error(io_err(e)))?;
            }
            EntryType::Symlink => {
                let target = link.ok_or_else(|| malformed("a symlink without a target"))?;
                if target.is_empty() || target.contains(&0) {
                    return Err(malformed("a symlink with an empty target or a NUL byte"));
                }
                if target.len() > self.limits.max_path_bytes {
                    return Err(TarError::PathTooLong {
                        entry: shown(name),
                        max: self.limits.max_path_bytes,
                    });
                }
                if !symlink_stays_inside(parents, &target) {
                    return Err(TarError::LinkEscapes {
                        entry: shown(name),
                        target: shown(&target),
                    });
                }
                let parent = open_dir(self.root, parents, name, &mut self.dirs)?;
                rfs::symlinkat(target.as_slice(), &parent, *last)
                    .map_err(|e| create_error(name, e))?;
            }
            EntryType::Link => {
                let target = link.ok_or_else(|| malformed("a hard link without a target"))?;
                let escapes = || TarError::LinkEscapes {
                    entry: shown(name),
                    target: shown(&target),
                };
                // A hard link names another member of the archive, so the same rules apply.
                let target_parts = match components(&target, self.limits) {
                    Ok(parts) => parts,
                    Err(TarError::AbsoluteName { .. } | TarError::DotDot { .. }) => {
                        return Err(escapes());
                    }
                    Err(e) => return Err(e),
                };
                let Some((target_last, target_parents)) = target_parts.split_last() else {
                    return Err(escapes());
                };
                let target_parent = open_dir(self.root, target_parents, name, &mut self.dirs)?;
                let parent = open_dir(self.root, parents, name, &mut self.dirs)?;
                rfs::linkat(
                    &target_parent,
                    *target_last,
                    &parent,
                    *last,
                    AtFlags::empty(),
                )
                .map_err(|e| create_error(name, e))?;
            }
            EntryType::GNUSparse => {
                return Err(TarError::UnsupportedType {
                    entry: shown(name),
                    kind: 'S',
                });
            }
            other => {
                return Err(TarError::UnsupportedType {
                    entry: shown(name),
                    kind: char::from(other.as_byte()),
                });
            }
        }
        Ok(())
    }
}

/// Unpacks the archive read from `reader` (plain, gzip or zstd, found from its first bytes)
/// into the empty directory `destination`. `progress` is called with the archive bytes read
/// so far after each entry and each 64 KiB of a file; `Break` cancels the unpack. On error the destination holds a partial tree: the caller removes
/// it ([`import`] does).
pub fn unpack<R: Read + 'static>(
    reader: R,
    destination: BorrowedFd<'_>,
    limits: &TarLimits,
    progress: &mut dyn FnMut(u64) -> ControlFlow<()>,
) -> Result<UnpackStats, TarError> {
    let compressed = Rc::new(Cell::new(0));
    let decompressed = Rc::new(Cell::new(0));
    let (compression, reader) = decompressed_reader(reader, &compressed)?;
    let reader = Counting {
        inner: reader,
        count: decompressed.clone(),
    };
    let mut unpacker = Unpacker {
        root: destination,
        progress,
        limits,
        compression,
        compressed: compressed.clone(),
        decompressed,
        stats: UnpackStats {
            compression,
            entries: 0,
            bytes: 0,
            input_bytes: 0,
        },
        dirs: DeferredDirs::default(),
    };
    // The image root is searchable by the services' users even if the archive has no `./`.
    unpacker.dirs.implied(Vec::new());
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|source| TarError::Read { source })?
        .raw(true);
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = entry.map_err(|source| TarError::Read { source })?;
        unpacker.stats.entries += 1;
        if unpacker.stats.entries > limits.max_entries {
            return Err(TarError::TooManyEntries {
                max: limits.max_entries,
            });
        }
        let path_max = limits.max_path_bytes as u64 + 1;
        match entry.header().entry_type() {
            EntryType::GNULongName => {
                pending.path = Some(trim_nul(read_metadata(&mut entry, path_max)?));
            }
            EntryType::GNULongLink => {
                pending.link = Some(trim_nul(read_metadata(&mut entry, path_max)?));
            }
            EntryType::XHeader => {
                let record = read_metadata(&mut entry, MAX_PAX_BYTES)?;
                for extension in tar::PaxExtensions::new(&record) {
                    let extension = extension.map_err(|source| TarError::Read { source })?;
                    match extension.key_bytes() {
                        b"path" => pending.path = Some(extension.value_bytes().to_vec()),
                        b"linkpath" => pending.link = Some(extension.value_bytes().to_vec()),
                        b"size" => {
                            let size = extension.value().ok().and_then(|v| v.parse().ok());
                            pending.size = Some(size.ok_or_else(|| TarError::Malformed {
                                entry: shown(&entry.path_bytes()),
                                reason: "a pax size that is not a number",
                            })?);
                        }
                        key if key.starts_with(b"GNU.sparse.") => pending.sparse = true,
                        // uid/gid, times with fractions, xattrs: not kept (module comment).
                        _ => {}
                    }
                }
            }
            // Global pax records describe the archive, not files.
            EntryType::XGlobalHeader => drop(read_metadata(&mut entry, MAX_PAX_BYTES)?),
            _ => unpacker.entry(&mut entry, std::mem::take(&mut pending))?,
        }
        unpacker.check_ratio()?;
        unpacker.report()?;
    }
    let stats = UnpackStats {
        input_bytes: compressed.get(),
        ..unpacker.stats
    };
    unpacker.dirs.apply(destination)?;
    Ok(stats)
}

fn decompressed_reader<R: Read + 'static>(
    reader: R,
    compressed: &Rc<Cell<u64>>,
) -> Result<(Compression, Box<dyn Read>), TarError> {
    open_decompressed(Counting {
        inner: reader,
        count: compressed.clone(),
    })
}

/// Imports the archive `file` as the directory image `name` in `images` (STATE/images): it is
/// unpacked into a hidden temporary directory there, renamed into place when complete and
/// removed on any error, so a failed import leaves nothing behind.
pub fn import(
    file: File,
    images: BorrowedFd<'_>,
    name: &str,
    limits: &TarLimits,
    progress: &mut dyn FnMut(u64) -> ControlFlow<()>,
) -> Result<UnpackStats, TarError> {
    let store = |operation, name: &str| {
        let name = name.to_owned();
        move |e: Errno| TarError::Store {
            operation,
            name,
            source: e.into(),
        }
    };
    // Unique per import: two imports of one name may run at once (the rename decides).
    static IMPORTS: AtomicU64 = AtomicU64::new(0);
    let serial = IMPORTS.fetch_add(1, Ordering::Relaxed);
    let temporary = format!("{IMPORT_PREFIX}{name}-{}-{serial}", std::process::id());
    rfs::mkdirat(images, temporary.as_str(), Mode::from_raw_mode(0o700))
        .map_err(store("creating", &temporary))?;
    let result = rfs::openat(
        images,
        temporary.as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(store("opening", &temporary))
    .and_then(|destination| unpack(file, destination.as_fd(), limits, progress))
    .and_then(|stats| {
        rfs::renameat_with(
            images,
            temporary.as_str(),
            images,
            name,
            RenameFlags::NOREPLACE,
        )
        .map_err(|e| match e {
            Errno::EXIST | Errno::NOTEMPTY => TarError::Exists {
                name: name.to_owned(),
            },
            e => store("renaming into place", name)(e),
        })?;
        Ok(stats)
    });
    if result.is_err() {
        // The unpack error is the one to report; a failure to clean up is logged.
        let removed = images
            .try_clone_to_owned()
            .map_err(|e| e.to_string())
            .and_then(|pool| remove_entry(&pool, &temporary).map_err(|e| e.to_string()));
        if let Err(e) = removed {
            tracing::warn!("removing the failed import {temporary:?}: {e}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use super::*;

    const MTIME: u64 = 1_700_000_000;

    /// A header written as given: the `tar` crate's Builder refuses hostile names itself.
    fn header(kind: EntryType, name: &[u8], link: &[u8], size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(MTIME);
        header.set_cksum();
        header
    }

    fn file(name: &str, data: &[u8], mode: u32) -> (tar::Header, Vec<u8>) {
        (
            header(
                EntryType::Regular,
                name.as_bytes(),
                b"",
                data.len() as u64,
                mode,
            ),
            data.to_vec(),
        )
    }

    fn dir(name: &str, mode: u32) -> (tar::Header, Vec<u8>) {
        (
            header(EntryType::Directory, name.as_bytes(), b"", 0, mode),
            Vec::new(),
        )
    }

    fn link(kind: EntryType, name: &str, target: &str) -> (tar::Header, Vec<u8>) {
        (
            header(kind, name.as_bytes(), target.as_bytes(), 0, 0o777),
            Vec::new(),
        )
    }

    fn archive(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (header, data) in entries {
            builder.append(header, data.as_slice()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// A destination `dest` next to a `canary` directory holding one file: nothing outside
    /// `dest` may change.
    struct Place {
        base: tempfile::TempDir,
    }

    impl Place {
        fn new() -> Place {
            let base = tempfile::tempdir().unwrap();
            std::fs::create_dir(base.path().join("dest")).unwrap();
            std::fs::create_dir(base.path().join("canary")).unwrap();
            std::fs::write(base.path().join("canary/file"), "canary").unwrap();
            Place { base }
        }

        fn dest(&self) -> std::path::PathBuf {
            self.base.path().join("dest")
        }

        fn unpack(&self, bytes: Vec<u8>, limits: &TarLimits) -> Result<UnpackStats, TarError> {
            let dest = File::open(self.dest()).unwrap();
            unpack(Cursor::new(bytes), dest.as_fd(), limits, &mut |_| {
                ControlFlow::Continue(())
            })
        }

        fn assert_canary_untouched(&self) {
            let mut names: Vec<_> = std::fs::read_dir(self.base.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names, ["canary", "dest"]);
            let canary: Vec<_> = std::fs::read_dir(self.base.path().join("canary"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(canary, ["file"]);
            assert_eq!(
                std::fs::read_to_string(self.base.path().join("canary/file")).unwrap(),
                "canary"
            );
        }
    }

    fn refused(entries: &[(tar::Header, Vec<u8>)]) -> TarError {
        let place = Place::new();
        let error = place
            .unpack(archive(entries), &TarLimits::default())
            .expect_err("the archive should be refused");
        place.assert_canary_untouched();
        error
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn files_directories_and_links_are_unpacked() {
        let place = Place::new();
        let bytes = archive(&[
            dir("./", 0o755),
            dir("./usr/", 0o755),
            file("./usr/bin/busybox", b"#!busybox", 0o755),
            link(EntryType::Symlink, "./bin", "usr/bin"),
            link(EntryType::Symlink, "./usr/sh", "/usr/bin/busybox"),
            link(EntryType::Symlink, "./usr/up", "../usr/bin"),
            link(EntryType::Link, "./usr/hard", "./usr/bin/busybox"),
        ]);

        let stats = place.unpack(bytes, &TarLimits::default()).unwrap();

        let dest = place.dest();
        assert_eq!(
            std::fs::read(dest.join("usr/bin/busybox")).unwrap(),
            b"#!busybox"
        );
        assert_eq!(
            std::fs::read_link(dest.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            std::fs::read_link(dest.join("usr/sh")).unwrap(),
            Path::new("/usr/bin/busybox")
        );
        let original = std::fs::metadata(dest.join("usr/bin/busybox")).unwrap();
        assert_eq!(
            std::fs::metadata(dest.join("usr/hard")).unwrap().ino(),
            original.ino()
        );
        assert_eq!(original.mtime() as u64, MTIME);
        assert_eq!(mode(&dest.join("usr/bin")), 0o755, "an implied directory");
        assert_eq!(
            (stats.compression, stats.entries, stats.bytes),
            (Compression::None, 7, 9)
        );
        place.assert_canary_untouched();
    }

    #[test]
    fn the_root_is_searchable_without_an_entry_and_never_group_or_other_writable() {
        for (entries, expected) in [
            (vec![file("f", b"x", 0o644)], 0o755),
            (vec![dir("./", 0o777), file("f", b"x", 0o644)], 0o755),
            (vec![dir(".", 0o750)], 0o750),
        ] {
            let place = Place::new();
            std::fs::set_permissions(place.dest(), std::fs::Permissions::from_mode(0o700)).unwrap();

            place
                .unpack(archive(&entries), &TarLimits::default())
                .unwrap();

            assert_eq!(mode(&place.dest()), expected);
        }
    }

    #[test]
    fn setuid_and_setgid_are_dropped_and_sticky_directories_kept() {
        let place = Place::new();
        let bytes = archive(&[file("su", b"x", 0o6755), dir("tmp", 0o1777)]);

        place.unpack(bytes, &TarLimits::default()).unwrap();

        assert_eq!(mode(&place.dest().join("su")), 0o755);
        assert_eq!(mode(&place.dest().join("tmp")), 0o1777);
    }

    #[test]
    fn a_read_only_directory_gets_its_mode_after_its_entries() {
        let place = Place::new();
        let bytes = archive(&[dir("ro", 0o555), file("ro/inside", b"x", 0o444)]);

        place.unpack(bytes, &TarLimits::default()).unwrap();

        assert_eq!(mode(&place.dest().join("ro")), 0o555);
        assert_eq!(mode(&place.dest().join("ro/inside")), 0o444);
        assert_eq!(
            std::fs::metadata(place.dest().join("ro")).unwrap().mtime() as u64,
            MTIME
        );
    }

    #[test]
    fn an_absolute_name_is_refused_naming_it() {
        let error = refused(&[file("/etc/passwd", b"x", 0o644)]);

        assert!(matches!(&error, TarError::AbsoluteName { entry } if entry == "/etc/passwd"));
        assert!(error.to_string().contains("/etc/passwd"), "{error}");
    }

    #[test]
    fn a_name_with_dot_dot_is_refused() {
        let error = refused(&[file("a/../../canary/file", b"x", 0o644)]);

        assert!(matches!(error, TarError::DotDot { .. }), "{error}");
    }

    #[test]
    fn a_relative_symlink_climbing_out_is_refused() {
        let error = refused(&[link(EntryType::Symlink, "a/b", "../../canary")]);

        assert!(
            matches!(&error, TarError::LinkEscapes { entry, target } if entry == "a/b" && target == "../../canary"),
            "{error}"
        );
    }

    #[test]
    fn an_absolute_symlink_climbing_out_is_refused() {
        let error = refused(&[link(EntryType::Symlink, "a", "/../canary")]);

        assert!(matches!(error, TarError::LinkEscapes { .. }), "{error}");
    }

    #[test]
    fn a_hard_link_out_of_the_tree_is_refused() {
        for target in ["../canary/file", "/etc/passwd"] {
            let error = refused(&[link(EntryType::Link, "pw", target)]);

            assert!(
                matches!(error, TarError::LinkEscapes { .. }),
                "{target}: {error}"
            );
        }
    }

    #[test]
    fn a_character_device_is_refused() {
        let error = refused(&[(header(EntryType::Char, b"dev/null", b"", 0, 0o666), vec![])]);

        assert!(
            matches!(&error, TarError::SpecialFile { entry, kind: "character device" } if entry == "dev/null"),
            "{error}"
        );
    }

    #[test]
    fn a_block_device_is_refused() {
        let error = refused(&[(header(EntryType::Block, b"dev/sda", b"", 0, 0o660), vec![])]);

        assert!(
            matches!(
                error,
                TarError::SpecialFile {
                    kind: "block device",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_fifo_is_refused() {
        let error = refused(&[(
            header(EntryType::Fifo, b"etc/os-release", b"", 0, 0o644),
            vec![],
        )]);

        assert!(
            matches!(error, TarError::SpecialFile { kind: "FIFO", .. }),
            "{error}"
        );
    }

    #[test]
    fn a_gnu_sparse_file_is_refused() {
        let error = refused(&[(header(EntryType::GNUSparse, b"big", b"", 0, 0o644), vec![])]);

        assert!(
            matches!(error, TarError::UnsupportedType { kind: 'S', .. }),
            "{error}"
        );
    }

    #[test]
    fn a_pax_sparse_file_is_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("GNU.sparse.realsize", b"1000000".as_slice())])
            .unwrap();
        let (header, data) = file("GNUSparseFile.0/big", b"map", 0o644);
        builder.append(&header, data.as_slice()).unwrap();

        let error = Place::new()
            .unpack(builder.into_inner().unwrap(), &TarLimits::default())
            .unwrap_err();

        assert!(
            matches!(error, TarError::UnsupportedType { kind: 'S', .. }),
            "{error}"
        );
    }

    #[test]
    fn a_symlink_made_by_an_earlier_entry_is_never_followed() {
        let place = Place::new();
        let canary = place.base.path().join("canary");
        // Allowed as a link (an absolute target resolves inside the image), never followed.
        let bytes = archive(&[
            link(EntryType::Symlink, "evil", canary.to_str().unwrap()),
            file("evil/pwned", b"x", 0o644),
        ]);

        let error = place.unpack(bytes, &TarLimits::default()).unwrap_err();

        assert!(
            matches!(&error, TarError::ParentNotDirectory { entry } if entry == "evil/pwned"),
            "{error}"
        );
        place.assert_canary_untouched();
    }

    #[test]
    fn a_file_over_an_earlier_entry_is_refused() {
        let error = refused(&[
            link(EntryType::Symlink, "etc", "/tmp"),
            file("etc", b"x", 0o644),
        ]);

        assert!(
            matches!(&error, TarError::Duplicate { entry } if entry == "etc"),
            "{error}"
        );
    }

    #[test]
    fn a_pax_path_is_the_name_judged() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("path", b"../../canary/file".as_slice())])
            .unwrap();
        let (benign, data) = file("benign", b"x", 0o644);
        builder.append(&benign, data.as_slice()).unwrap();
        let place = Place::new();

        let error = place
            .unpack(builder.into_inner().unwrap(), &TarLimits::default())
            .unwrap_err();

        assert!(matches!(error, TarError::DotDot { .. }), "{error}");
        place.assert_canary_untouched();
    }

    #[test]
    fn a_pax_size_disagreeing_with_the_header_is_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("size", b"0".as_slice())])
            .unwrap();
        let (header, data) = file("f", b"hidden", 0o644);
        builder.append(&header, data.as_slice()).unwrap();

        let error = Place::new()
            .unpack(builder.into_inner().unwrap(), &TarLimits::default())
            .unwrap_err();

        assert!(matches!(error, TarError::Malformed { .. }), "{error}");
    }

    #[test]
    fn long_gnu_names_are_read() {
        let long = format!("{}/file", "d".repeat(150));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &long, b"hi".as_slice())
            .unwrap();
        let place = Place::new();

        place
            .unpack(builder.into_inner().unwrap(), &TarLimits::default())
            .unwrap();

        assert_eq!(std::fs::read(place.dest().join(&long)).unwrap(), b"hi");
    }

    #[test]
    fn a_long_name_record_past_the_path_limit_is_refused_unread() {
        let huge = vec![b'a'; 1024 * 1024];
        let error = refused(&[
            (
                header(
                    EntryType::GNULongName,
                    b"././@LongLink",
                    b"",
                    huge.len() as u64,
                    0o644,
                ),
                huge,
            ),
            file("short", b"x", 0o644),
        ]);

        assert!(matches!(error, TarError::PathTooLong { .. }), "{error}");
    }

    #[test]
    fn more_entries_than_the_limit_are_refused() {
        let limits = TarLimits {
            max_entries: 2,
            ..TarLimits::default()
        };
        let bytes = archive(&[dir("a", 0o755), dir("b", 0o755), dir("c", 0o755)]);

        let error = Place::new().unpack(bytes, &limits).unwrap_err();

        assert!(
            matches!(error, TarError::TooManyEntries { max: 2 }),
            "{error}"
        );
    }

    #[test]
    fn more_bytes_than_the_limit_are_refused_before_the_file_is_written() {
        let limits = TarLimits {
            max_bytes: 10,
            ..TarLimits::default()
        };
        let place = Place::new();
        let bytes = archive(&[
            file("small", b"12345", 0o644),
            file("big", b"123456", 0o644),
        ]);

        let error = place.unpack(bytes, &limits).unwrap_err();

        assert!(
            matches!(&error, TarError::TooLarge { entry, max: 10 } if entry == "big"),
            "{error}"
        );
        assert!(!place.dest().join("big").exists());
    }

    #[test]
    fn a_name_component_past_the_limit_is_refused() {
        let limits = TarLimits {
            max_name_bytes: 8,
            ..TarLimits::default()
        };

        let error = Place::new()
            .unpack(archive(&[file("a/ninechars", b"", 0o644)]), &limits)
            .unwrap_err();

        assert!(
            matches!(error, TarError::NameTooLong { max: 8, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_path_past_the_limit_is_refused() {
        let limits = TarLimits {
            max_path_bytes: 10,
            ..TarLimits::default()
        };

        let error = Place::new()
            .unpack(archive(&[file("abcde/fghij", b"", 0o644)]), &limits)
            .unwrap_err();

        assert!(
            matches!(error, TarError::PathTooLong { max: 10, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_symlink_target_past_the_path_limit_is_refused() {
        let limits = TarLimits {
            max_path_bytes: 10,
            ..TarLimits::default()
        };

        let error = Place::new()
            .unpack(
                archive(&[link(EntryType::Symlink, "l", "abcdefghijk")]),
                &limits,
            )
            .unwrap_err();

        assert!(matches!(error, TarError::PathTooLong { .. }), "{error}");
    }

    #[test]
    fn a_path_deeper_than_the_limit_is_refused() {
        let limits = TarLimits {
            max_depth: 3,
            ..TarLimits::default()
        };

        let error = Place::new()
            .unpack(archive(&[dir("a/b/c/d", 0o755)]), &limits)
            .unwrap_err();

        assert!(matches!(error, TarError::TooDeep { max: 3, .. }), "{error}");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn a_compression_ratio_past_the_limit_is_refused() {
        let limits = TarLimits {
            max_ratio: 50,
            ratio_grace_bytes: 1024 * 1024,
            ..TarLimits::default()
        };
        let zeros = vec![0u8; 8 * 1024 * 1024];

        let error = Place::new()
            .unpack(gzip(&archive(&[file("zeros", &zeros, 0o644)])), &limits)
            .unwrap_err();

        assert!(
            matches!(error, TarError::CompressionRatio { max: 50, .. }),
            "{error}"
        );
    }

    #[test]
    fn gzip_and_zstd_archives_are_unpacked() {
        let plain = archive(&[file("etc/os-release", b"ID=test\n", 0o644)]);
        for (compressed, expected) in [
            (gzip(&plain), Compression::Gzip),
            (zstd(&plain), Compression::Zstd),
        ] {
            let place = Place::new();
            let size = compressed.len() as u64;

            let stats = place.unpack(compressed, &TarLimits::default()).unwrap();

            assert_eq!((stats.compression, stats.input_bytes), (expected, size));
            assert_eq!(
                std::fs::read(place.dest().join("etc/os-release")).unwrap(),
                b"ID=test\n"
            );
        }
    }

    #[test]
    fn a_zstd_stream_of_several_frames_is_unpacked_whole() {
        let plain = archive(&[file("a", b"first", 0o644), file("b", b"second", 0o644)]);
        let (head, tail) = plain.split_at(512 * 2);
        let mut frames = zstd(head);
        frames.extend(zstd(tail));
        let place = Place::new();

        place.unpack(frames, &TarLimits::default()).unwrap();

        assert_eq!(std::fs::read(place.dest().join("b")).unwrap(), b"second");
    }

    #[test]
    fn xz_is_refused_naming_it() {
        let error = Place::new()
            .unpack(b"\xfd7zXZ\0rest".to_vec(), &TarLimits::default())
            .unwrap_err();

        assert!(error.to_string().contains("xz"), "{error}");
    }

    #[test]
    fn garbage_is_a_read_error() {
        let error = Place::new()
            .unpack(vec![b'x'; 1024], &TarLimits::default())
            .unwrap_err();

        assert!(matches!(error, TarError::Read { .. }), "{error}");
    }

    #[test]
    fn progress_reports_the_archive_bytes_read() {
        let bytes = gzip(&archive(&[file("a", &[7u8; 100_000], 0o644)]));
        let size = bytes.len() as u64;
        let place = Place::new();
        let dest = File::open(place.dest()).unwrap();
        let mut seen = Vec::new();

        unpack(
            Cursor::new(bytes),
            dest.as_fd(),
            &TarLimits::default(),
            &mut |n| {
                seen.push(n);
                ControlFlow::Continue(())
            },
        )
        .unwrap();

        assert_eq!(seen.last(), Some(&size));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn the_progress_receiver_cancels_and_the_import_leaves_nothing() {
        let images = tempfile::tempdir().unwrap();
        let archive_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            archive_file.path(),
            archive(&[file("a", &[1u8; 300_000], 0o644)]),
        )
        .unwrap();
        let dir = File::open(images.path()).unwrap();
        let mut calls = 0;

        let error = import(
            File::open(archive_file.path()).unwrap(),
            dir.as_fd(),
            "app",
            &TarLimits::default(),
            &mut |_| {
                calls += 1;
                if calls > 1 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap_err();

        assert!(matches!(error, TarError::Cancelled), "{error}");
        assert!(names(images.path()).is_empty());
    }

    fn import_into(images: &Path, bytes: Vec<u8>) -> Result<UnpackStats, TarError> {
        let archive_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(archive_file.path(), &bytes).unwrap();
        let dir = File::open(images).unwrap();
        let file = File::open(archive_file.path()).unwrap();
        import(file, dir.as_fd(), "app", &TarLimits::default(), &mut |_| {
            ControlFlow::Continue(())
        })
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_import_is_renamed_into_place_when_complete() {
        let images = tempfile::tempdir().unwrap();

        import_into(
            images.path(),
            archive(&[file("etc/os-release", b"ID=x\n", 0o644)]),
        )
        .unwrap();

        assert_eq!(names(images.path()), ["app"]);
        assert!(images.path().join("app/etc/os-release").is_file());
    }

    #[test]
    fn a_failed_import_leaves_nothing_behind() {
        let images = tempfile::tempdir().unwrap();
        let bytes = archive(&[
            dir("ro", 0o555),
            file("ro/a", b"written first", 0o444),
            link(EntryType::Symlink, "l", "/x"),
            (header(EntryType::Char, b"dev/null", b"", 0, 0o666), vec![]),
        ]);

        let error = import_into(images.path(), bytes).unwrap_err();

        assert!(matches!(error, TarError::SpecialFile { .. }), "{error}");
        assert!(
            names(images.path()).is_empty(),
            "{:?}",
            names(images.path())
        );
    }

    #[test]
    fn an_import_over_an_existing_image_is_refused_and_keeps_it() {
        let images = tempfile::tempdir().unwrap();
        std::fs::create_dir(images.path().join("app")).unwrap();
        std::fs::write(images.path().join("app/old"), "old").unwrap();

        let error = import_into(images.path(), archive(&[file("new", b"", 0o644)])).unwrap_err();

        assert!(matches!(error, TarError::Exists { .. }), "{error}");
        assert_eq!(names(images.path()), ["app"]);
        assert_eq!(names(&images.path().join("app")), ["old"]);
    }

    #[test]
    fn a_tarball_opened_as_an_image_says_to_import_it() {
        let fd = OwnedFd::from(tempfile::tempfile().unwrap());

        let error = open(fd, Format::Gzip, "/x/app.tar.gz").unwrap_err();

        assert!(error.to_string().contains("berth image import"), "{error}");
    }
}
