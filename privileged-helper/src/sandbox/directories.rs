//! StateDirectory=, CacheDirectory=, LogsDirectory=, ConfigurationDirectory= and
//! RuntimeDirectory= (DESIGN.md §5): each directory created where missing, given to the
//! service's new uid, and bound at its place in the sandbox.
//!
//! The host directories live below parents berthd passes as descriptors (one per kind, see
//! `berth_protocol::helper::SPAWN_FDS`); everything below them is reached from those by
//! `openat` with `O_NOFOLLOW`, one component at a time: no path is resolved, no symlink
//! followed. A previous holder of the directory is hostile, and so is berthd, which owns the
//! parents: re-owning walks the tree by descriptors and changes only what a dynamic uid owns
//! (the helper's own range), never a file a host user owns (root included), never a file with
//! more than one hard link (it may be a host file linked in), and ownership is changed on the
//! very inode that was checked (`fchownat(fd, "", AT_EMPTY_PATH)`). The kernel drops set-uid,
//! set-group-id and file capabilities of every file it re-owns, so nothing one holder leaves
//! gives the next one privileges (research/sandbox-peers.md §4 case 5). As systemd does, a
//! tree whose top already belongs to the uid is not walked again.
//!
//! ConfigurationDirectory= belongs to the administrator: created root-owned if missing, never
//! re-owned, bound read-only. RuntimeDirectory= is made by init in the sandbox's own `/run`
//! (a tmpfs that goes with the sandbox), see [`create_runtime`].

use std::ffi::{CStr, CString};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use berth_protocol::sandbox::{DirectoryKind, ServiceDirectory};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;

use super::Failure;
use super::mounts::FdBind;
use super::syscalls::{FsParam, MountSyscalls};

/// Deepest tree re-owned; a deeper one fails the start (a previous holder may build one to
/// exhaust the helper's descriptors).
const MAX_DEPTH: usize = 128;
/// Most entries re-owned in one directory tree.
const MAX_ENTRIES: usize = 1_000_000;
/// Mode of the intermediate directories of a name like `a/b` (systemd makes them 0755).
const PARENT_MODE: u32 = 0o755;

/// A service directory ready to be bound into the sandbox.
#[derive(Debug)]
pub struct PreparedDirectory {
    /// The directory itself (`O_RDONLY | O_DIRECTORY`).
    pub fd: OwnedFd,
    /// Where it appears in the sandbox, e.g. `/var/lib/NAME`.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{directive}={name}: cannot open or create {component}: {source}")]
    Open {
        directive: &'static str,
        name: String,
        component: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{directive}={name}: {component} is not a directory (a symlink is never followed)")]
    NotADirectory {
        directive: &'static str,
        name: String,
        component: String,
    },
    #[error(
        "{directive}={name}: the directory belongs to uid {owner}, which is neither a dynamic \
         user nor this service's: refusing to give it to the service (remove it, or give it to \
         a uid of the dynamic range)"
    )]
    HostOwned {
        directive: &'static str,
        name: String,
        owner: u32,
    },
    #[error("{directive}={name}: cannot give {entry} to the service: {source}")]
    Reown {
        directive: &'static str,
        name: String,
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{directive}={name}: more than {limit} {what}")]
    TooLarge {
        directive: &'static str,
        name: String,
        limit: usize,
        what: &'static str,
    },
    #[error("no host directory was passed for {directive}=")]
    NoParent { directive: &'static str },
}

/// Who gets the directories, and whose files may be taken from.
#[derive(Debug, Clone)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The helper's dynamic range: only files of these uids are re-owned.
    pub dynamic: RangeInclusive<u32>,
}

/// Creates (where missing) and re-owns every directory of `directories` kept on the host,
/// each below its kind's parent in `parents`; returns them in the order to bind them (a name
/// before the names below it).
pub fn prepare(
    directories: &[ServiceDirectory],
    parents: &[(DirectoryKind, OwnedFd)],
    owner: &Owner,
) -> Result<Vec<PreparedDirectory>, DirectoryError> {
    let mut ordered: Vec<&ServiceDirectory> = directories
        .iter()
        .filter(|d| d.kind.kept_on_host())
        .collect();
    ordered.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
    let mut prepared = Vec::with_capacity(ordered.len());
    for directory in ordered {
        let directive = directory.kind.directive();
        let parent = parents
            .iter()
            .find(|(kind, _)| *kind == directory.kind)
            .map(|(_, fd)| fd)
            .ok_or(DirectoryError::NoParent { directive })?;
        let fd = prepare_one(parent.as_fd(), directory, owner)?;
        prepared.push(PreparedDirectory {
            fd,
            target: directory.sandbox_path(),
            read_only: !directory.kind.owned_by_service(),
        });
    }
    Ok(prepared)
}

fn prepare_one(
    parent: BorrowedFd<'_>,
    directory: &ServiceDirectory,
    owner: &Owner,
) -> Result<OwnedFd, DirectoryError> {
    let directive = directory.kind.directive();
    let (top, created) = open_or_create(parent, directory, directory.mode)?;
    if !directory.kind.owned_by_service() {
        return Ok(top);
    }
    let st = rustix::fs::fstat(&top).map_err(|e| reown_error(directory, ".", e))?;
    let already = st.st_uid == owner.uid && st.st_gid == owner.gid;
    if !already {
        if !created && !owner.dynamic.contains(&st.st_uid) {
            return Err(DirectoryError::HostOwned {
                directive,
                name: directory.name.clone(),
                owner: st.st_uid,
            });
        }
        let mut walk = Walk {
            directory,
            owner,
            entries: 0,
        };
        walk.children(&top, 0, &directory.name)?;
        set_owner(top.as_fd(), owner).map_err(|e| reown_error(directory, ".", e))?;
    }
    // StateDirectoryMode= holds at every start; fchmod also drops set-id bits the holder set.
    rustix::fs::fchmod(&top, Mode::from_raw_mode(directory.mode))
        .map_err(|e| reown_error(directory, ".", e))?;
    Ok(top)
}

fn reown_error(directory: &ServiceDirectory, entry: &str, e: Errno) -> DirectoryError {
    DirectoryError::Reown {
        directive: directory.kind.directive(),
        name: directory.name.clone(),
        entry: entry.to_owned(),
        source: e.into(),
    }
}

/// Opens `name` below `parent` one component at a time without following symlinks, creating
/// what is missing: intermediate directories root-owned 0755, the last one with `mode`
/// (root-owned too; re-owning comes after). True when the last one was created here.
fn open_or_create(
    parent: BorrowedFd<'_>,
    directory: &ServiceDirectory,
    mode: u32,
) -> Result<(OwnedFd, bool), DirectoryError> {
    walk_creating(parent, &directory.name, mode, |component, source| {
        if source == Errno::NOTDIR || source == Errno::LOOP {
            DirectoryError::NotADirectory {
                directive: directory.kind.directive(),
                name: directory.name.clone(),
                component: component.to_owned(),
            }
        } else {
            DirectoryError::Open {
                directive: directory.kind.directive(),
                name: directory.name.clone(),
                component: component.to_owned(),
                source: source.into(),
            }
        }
    })
}

/// The component walk of [`open_or_create`], errors made by `error(component, errno)`.
fn walk_creating<E>(
    parent: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    error: impl Fn(&str, Errno) -> E,
) -> Result<(OwnedFd, bool), E> {
    let components: Vec<&str> = name.split('/').collect();
    let mut current: Option<OwnedFd> = None;
    let mut created = false;
    for (index, component) in components.iter().enumerate() {
        let last = index + 1 == components.len();
        let at = current.as_ref().map_or(parent, |fd| fd.as_fd());
        let c_name = CString::new(*component).map_err(|_| error(component, Errno::INVAL))?;
        let want = if last { mode } else { PARENT_MODE };
        created = match rustix::fs::mkdirat(at, &c_name, Mode::from_raw_mode(want)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(error(component, e)),
        };
        let fd = open_dir(at, &c_name).map_err(|e| error(component, e))?;
        if created {
            // mkdirat's mode passed through the umask; the mode asked for holds exactly.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(want)).map_err(|e| error(component, e))?;
        }
        current = Some(fd);
    }
    current
        .map(|fd| (fd, created))
        .ok_or_else(|| error(name, Errno::INVAL))
}

/// `name` below `dir` as a directory descriptor, never through a symlink.
fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Gives the inode `fd` refers to (any type, `O_PATH` included) to the owner.
fn set_owner(fd: BorrowedFd<'_>, owner: &Owner) -> Result<(), Errno> {
    rustix::fs::chownat(
        fd,
        c"",
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// One re-owning walk of a directory tree.
struct Walk<'a> {
    directory: &'a ServiceDirectory,
    owner: &'a Owner,
    entries: usize,
}

impl Walk<'_> {
    fn too_large(&self, limit: usize, what: &'static str) -> DirectoryError {
        DirectoryError::TooLarge {
            directive: self.directory.kind.directive(),
            name: self.directory.name.clone(),
            limit,
            what,
        }
    }

    /// Re-owns everything below `dir` (whose path, for errors, is `path`), children first.
    fn children(&mut self, dir: &OwnedFd, depth: usize, path: &str) -> Result<(), DirectoryError> {
        if depth >= MAX_DEPTH {
            return Err(self.too_large(MAX_DEPTH, "levels of directories"));
        }
        let reading =
            open_dir(dir.as_fd(), c".").map_err(|e| reown_error(self.directory, path, e))?;
        let mut entries =
            rustix::fs::Dir::new(reading).map_err(|e| reown_error(self.directory, path, e))?;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(|e| reown_error(self.directory, path, e))?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(self.too_large(MAX_ENTRIES, "entries"));
            }
            let child_path = format!("{path}/{}", name.to_string_lossy());
            self.child(dir, name, depth, &child_path)?;
        }
        Ok(())
    }

    fn child(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        depth: usize,
        path: &str,
    ) -> Result<(), DirectoryError> {
        let error = |e| reown_error(self.directory, path, e);
        let node = match rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Gone since the listing.
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(error(e)),
        };
        let st = rustix::fs::fstat(&node).map_err(error)?;
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir {
            // Entered by a real open of the same inode, so that its entries can be listed.
            let sub = match open_dir(dir.as_fd(), name) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(()),
                Err(e) => return Err(error(e)),
            };
            let again = rustix::fs::fstat(&sub).map_err(error)?;
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
                return Ok(());
            }
            if !self.may_take(&st, true) {
                // Not the service's to have: nothing below it is walked either.
                return Ok(());
            }
            self.children(&sub, depth + 1, path)?;
            set_owner(sub.as_fd(), self.owner).map_err(error)?;
            if st.st_mode & 0o6000 != 0 {
                rustix::fs::fchmod(&sub, Mode::from_raw_mode(st.st_mode & 0o1777))
                    .map_err(error)?;
            }
            return Ok(());
        }
        if self.may_take(&st, false) {
            set_owner(node.as_fd(), self.owner).map_err(error)?;
        }
        Ok(())
    }

    /// Whether the entry `st` describes is re-owned: one a dynamic uid owns, not already the
    /// owner's, and (for anything but a directory) with a single hard link.
    fn may_take(&self, st: &rustix::fs::Stat, is_dir: bool) -> bool {
        let owner = self.owner;
        if st.st_uid == owner.uid && st.st_gid == owner.gid {
            return false;
        }
        owner.dynamic.contains(&st.st_uid) && (is_dir || st.st_nlink == 1)
    }
}

/// RuntimeDirectory=: creates each one in `run` (the sandbox's own `/run`, a fresh tmpfs),
/// owned by the service's uid with its mode. Runs in init, in the new root.
pub fn create_runtime(
    run: BorrowedFd<'_>,
    directories: &[ServiceDirectory],
    uid: u32,
    gid: u32,
) -> Result<(), DirectoryError> {
    let owner = Owner {
        uid,
        gid,
        dynamic: uid..=uid,
    };
    for directory in directories
        .iter()
        .filter(|d| d.kind == DirectoryKind::Runtime)
    {
        let (fd, _) = open_or_create(run, directory, directory.mode)?;
        set_owner(fd.as_fd(), &owner).map_err(|e| reown_error(directory, ".", e))?;
    }
    Ok(())
}

impl PreparedDirectory {
    /// The same, its descriptor moved above stdio (the supervisor replaces 0 to 2).
    pub(crate) fn above_stdio(self) -> std::io::Result<PreparedDirectory> {
        Ok(PreparedDirectory {
            fd: super::sys::above_stdio(self.fd)?,
            ..self
        })
    }
}

/// Mode of the mount-point layer's root and of its directories that the image lacks.
const LAYER_MODE: u32 = 0o755;
/// The mount-point layer holds only empty directories.
const LAYER_TMPFS: [(&CStr, &CStr); 3] =
    [(c"size", c"64k"), (c"nr_inodes", c"1k"), (c"mode", c"0755")];

/// In init, before the mount namespace is unshared: the prepared directories as binds of the
/// mount plan (`nosuid,nodev`, read-only when asked; the plan clones them in the host's
/// namespace and orders them among the other mounts), and the layer that holds their mount
/// points. The image is read-only, so `/var/lib/NAME` cannot be made in it; instead an empty
/// tmpfs holding the targets' paths is laid over the image (as the top layer of its read-only
/// overlay). Each of its directories takes the mode and owner of the image's directory at
/// that path, if there is one; a path that is something else than a directory in the image (a
/// symlink, never followed) fails.
pub(crate) fn mount_plan_binds(
    os: &impl MountSyscalls,
    image_root: &OwnedFd,
    prepared: Vec<PreparedDirectory>,
) -> Result<(Vec<FdBind>, Option<OwnedFd>), Failure> {
    if prepared.is_empty() {
        return Ok((Vec::new(), None));
    }
    let params: Vec<FsParam<'_>> = LAYER_TMPFS
        .iter()
        .map(|(k, v)| FsParam::String(k, v))
        .collect();
    let layer = os
        .fs_mount(c"tmpfs", &params, MountAttrFlags::empty())
        .map_err(|e| Failure::setup("mount the service directories' mount points", e))?;
    for directory in &prepared {
        mount_point(image_root, &layer, &directory.target)?;
    }
    let binds = prepared
        .into_iter()
        .map(|d| FdBind {
            source: d.fd,
            target: d.target,
            read_only: d.read_only,
        })
        .collect();
    Ok((binds, Some(layer)))
}

/// Makes `target`'s directories in the mount-point `layer`, as the image has them.
fn mount_point(image: &OwnedFd, layer: &OwnedFd, target: &str) -> Result<(), Failure> {
    let stage = |what: &str| format!("make the mount point {target} ({what})");
    let mut in_layer: Option<OwnedFd> = None;
    let mut in_image: Option<OwnedFd> = None;
    for component in target.split('/').filter(|c| !c.is_empty()) {
        let name = CString::new(component)
            .map_err(|_| Failure::setup(stage("a NUL byte"), Errno::INVAL))?;
        let image_dir = in_image.as_ref().map_or(image.as_fd(), |fd| fd.as_fd());
        let (mode, ids, next_image) =
            match rustix::fs::statat(image_dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    let fd = rustix::fs::openat(
                        image_dir,
                        &name,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Failure::setup(stage("open it in the image"), e))?;
                    (st.st_mode & 0o7777, Some((st.st_uid, st.st_gid)), Some(fd))
                }
                Ok(_) => {
                    let what = format!("/{component} is not a directory in the image");
                    return Err(Failure::setup(stage(&what), Errno::NOTDIR));
                }
                Err(Errno::NOENT) => (LAYER_MODE, None, None),
                Err(e) => return Err(Failure::setup(stage("look it up in the image"), e)),
            };
        let layer_dir = in_layer.as_ref().map_or(layer.as_fd(), |fd| fd.as_fd());
        match rustix::fs::mkdirat(layer_dir, &name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Failure::setup(stage("create it"), e)),
        }
        let fd = open_dir(layer_dir, &name).map_err(|e| Failure::setup(stage("open it"), e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Failure::setup(stage("set its mode"), e))?;
        if let Some((uid, gid)) = ids {
            rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| Failure::setup(stage("set its owner"), e))?;
        }
        in_layer = Some(fd);
        in_image = next_image;
    }
    Ok(())
}

/// In init, in the new root (cwd `/`), still root: makes the RuntimeDirectory= ones in `/run`,
/// owned by `ids`.
pub(crate) fn make_runtime(
    os: &impl MountSyscalls,
    directories: &[ServiceDirectory],
    ids: (u32, u32),
) -> Result<(), Failure> {
    if !directories.iter().any(|d| d.kind == DirectoryKind::Runtime) {
        return Ok(());
    }
    let root = os
        .open(c"/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)
        .map_err(|e| Failure::setup("open the new root", e))?;
    let run = resolve_dir(os, &root, "/run")
        .map_err(|e| Failure::setup("open /run for RuntimeDirectory=", e))?;
    create_runtime(run.as_fd(), directories, ids.0, ids.1)
        .map_err(|e| Failure::setup(format!("create the runtime directories ({e})"), Errno::IO))
}

/// `path` (absolute, in the new root) as an `O_PATH` directory descriptor, one component at a
/// time, never through a symlink.
fn resolve_dir(os: &impl MountSyscalls, root: &OwnedFd, path: &str) -> Result<OwnedFd, Errno> {
    let mut current = os.openat(
        root.as_fd(),
        c".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for component in path.split('/').filter(|c| !c.is_empty()) {
        let name = CString::new(component).map_err(|_| Errno::INVAL)?;
        current = os.openat(
            current.as_fd(),
            &name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::Path;

    use super::*;

    const PREVIOUS: u32 = 61960;
    const NEW: u32 = 61961;

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (changes owners); run as root, as CI does"
        );
    }

    fn owner() -> Owner {
        Owner {
            uid: NEW,
            gid: NEW,
            dynamic: 61184..=65519,
        }
    }

    fn state(name: &str, mode: u32) -> ServiceDirectory {
        ServiceDirectory {
            kind: DirectoryKind::State,
            name: name.into(),
            mode,
        }
    }

    fn parent_fd(dir: &Path) -> Vec<(DirectoryKind, OwnedFd)> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        vec![(DirectoryKind::State, fd)]
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    fn uid_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().uid()
    }

    #[test]
    fn a_missing_directory_is_created_with_its_mode_for_the_new_uid() {
        require_root();
        let parent = tempfile::tempdir().unwrap();

        let prepared = prepare(
            &[state("app/data", 0o750)],
            &parent_fd(parent.path()),
            &owner(),
        )
        .unwrap();

        let top = parent.path().join("app/data");
        let meta = std::fs::metadata(&top).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (NEW, NEW, 0o750)
        );
        let middle = std::fs::metadata(parent.path().join("app")).unwrap();
        assert_eq!((middle.uid(), middle.mode() & 0o7777), (0, 0o755));
        assert_eq!(prepared[0].target, "/var/lib/app/data");
        assert!(!prepared[0].read_only);
    }

    #[test]
    fn the_previous_holders_tree_is_given_to_the_new_uid() {
        require_root();
        let parent = tempfile::tempdir().unwrap();
        let top = parent.path().join("app");
        std::fs::create_dir_all(top.join("sub/deeper")).unwrap();
        std::fs::write(top.join("sub/deeper/file"), "x").unwrap();
        symlink("/etc/shadow", top.join("link")).unwrap();
        for p in ["", "sub", "sub/deeper", "sub/deeper/file", "link"] {
            chown(&top.join(p), PREVIOUS);
        }

        prepare(&[state("app", 0o700)], &parent_fd(parent.path()), &owner()).unwrap();

        for p in ["", "sub", "sub/deeper", "sub/deeper/file", "link"] {
            assert_eq!(uid_of(&top.join(p)), NEW, "{p}");
        }
        assert_eq!(
            uid_of(Path::new("/etc/shadow")),
            0,
            "the symlink was followed"
        );
    }

    #[test]
    fn a_host_users_file_and_a_hard_link_are_left_alone() {
        require_root();
        let parent = tempfile::tempdir().unwrap();
        let top = parent.path().join("app");
        std::fs::create_dir(&top).unwrap();
        let outside = parent.path().join("outside");
        std::fs::write(&outside, "host").unwrap();
        chown(&outside, PREVIOUS);
        std::fs::hard_link(&outside, top.join("linked")).unwrap();
        std::fs::write(top.join("roots"), "root's").unwrap();
        std::fs::write(top.join("mine"), "mine").unwrap();
        for p in ["", "mine"] {
            chown(&top.join(p), PREVIOUS);
        }

        prepare(&[state("app", 0o700)], &parent_fd(parent.path()), &owner()).unwrap();

        assert_eq!(uid_of(&outside), PREVIOUS, "a hard link was re-owned");
        assert_eq!(
            uid_of(&top.join("roots")),
            0,
            "a host user's file was re-owned"
        );
        assert_eq!(uid_of(&top.join("mine")), NEW);
    }

    #[test]
    fn a_set_uid_file_the_previous_holder_left_loses_its_set_uid_bit() {
        require_root();
        let parent = tempfile::tempdir().unwrap();
        let top = parent.path().join("app");
        std::fs::create_dir(&top).unwrap();
        let file = top.join("sh");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        for p in [&top, &file] {
            chown(p, PREVIOUS);
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o6755)).unwrap();

        prepare(&[state("app", 0o700)], &parent_fd(parent.path()), &owner()).unwrap();

        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (NEW, 0o755));
    }

    #[test]
    fn a_symlink_in_place_of_the_directory_is_refused_not_followed() {
        require_root();
        let parent = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        symlink(victim.path(), parent.path().join("app")).unwrap();

        let refused = prepare(&[state("app", 0o700)], &parent_fd(parent.path()), &owner());

        assert!(
            matches!(refused, Err(DirectoryError::NotADirectory { .. })),
            "{refused:?}"
        );
        assert_eq!(uid_of(victim.path()), 0);
    }

    #[test]
    fn a_directory_a_host_user_owns_is_refused() {
        require_root();
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("app")).unwrap();
        chown(&parent.path().join("app"), 1000);

        let refused = prepare(&[state("app", 0o700)], &parent_fd(parent.path()), &owner());

        assert!(
            matches!(refused, Err(DirectoryError::HostOwned { owner: 1000, .. })),
            "{refused:?}"
        );
        assert_eq!(uid_of(&parent.path().join("app")), 1000);
    }

    #[test]
    fn a_configuration_directory_is_never_re_owned_and_is_bound_read_only() {
        require_root();
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("app")).unwrap();
        chown(&parent.path().join("app"), PREVIOUS);
        let config = ServiceDirectory {
            kind: DirectoryKind::Configuration,
            ..state("app", 0o755)
        };
        let fd = rustix::fs::open(
            parent.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();

        let prepared = prepare(&[config], &[(DirectoryKind::Configuration, fd)], &owner()).unwrap();

        assert_eq!(uid_of(&parent.path().join("app")), PREVIOUS);
        assert!(prepared[0].read_only);
        assert_eq!(prepared[0].target, "/etc/app");
    }

    #[test]
    fn a_tree_deeper_than_the_bound_fails_and_re_owns_nothing_above() {
        require_root();
        let parent = tempfile::tempdir().unwrap();
        let top = parent.path().join("app");
        let mut deep = top.clone();
        std::fs::create_dir(&deep).unwrap();
        chown(&deep, PREVIOUS);
        for _ in 0..=MAX_DEPTH {
            deep.push("d");
            std::fs::create_dir(&deep).unwrap();
            chown(&deep, PREVIOUS);
        }

        let refused = prepare(&[state("app", 0o700)], &parent_fd(parent.path()), &owner());

        assert!(
            matches!(refused, Err(DirectoryError::TooLarge { .. })),
            "{refused:?}"
        );
        assert_eq!(uid_of(&top), PREVIOUS);
    }
}
