//! The host trees a [`Plan`] binds, opened and cloned while init is still in the host mount
//! namespace (a clone source must belong to the caller's namespace, and after `pivot_root`
//! the host is gone): BindPaths= sources, the descriptors of [`FdBind`]s, DeviceAllow= nodes.
//!
//! A BindPaths= source is resolved from the host root without following any symlink
//! (`RESOLVE_NO_SYMLINKS`): the floor allowed the path as written, and a symlink planted
//! under an allowed directory must not redirect it. A device is never the host's node itself
//! but a new node of the same number, type and owner, with its mode narrowed to the access
//! DeviceAllow= gives, on a small tmpfs of our own (the only mount in the sandbox that is not
//! `nodev`, and read-only).

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use berth_protocol::sandbox::MountPlan;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MountAttrFlags, OpenTreeFlags};

use super::plan::{FdBind, Plan, Source};
use crate::sandbox::Failure;
use crate::sandbox::syscalls::{AT_RECURSIVE, FsParam, MountSyscalls};

/// The tmpfs holding DeviceAllow= nodes: a few inodes, no data.
const DEVICES_TMPFS: [(&std::ffi::CStr, &std::ffi::CStr); 3] =
    [(c"mode", c"0755"), (c"size", c"4k"), (c"nr_inodes", c"256")];

/// A detached tree ready to be moved into the new root.
#[derive(Debug)]
pub(super) struct Tree {
    pub fd: OwnedFd,
    pub dir: bool,
}

/// A plan and its host trees, by source index (`None`: a source that was missing and may be),
/// and the host's files bound over the image's placeholders before it (`host_files.rs`).
pub(in crate::sandbox) struct Prepared {
    pub(super) plan: Plan,
    pub(super) trees: Vec<Option<Tree>>,
    pub(in crate::sandbox) host_files: Vec<super::host_files::HostFile>,
    /// Owner (uid and gid) of the roots of the tmpfs mounts berth makes: `/`, `/tmp`, `/run`,
    /// `/dev`, `/dev/shm`, PrivateTmp='s `/var/tmp`, TemporaryFileSystem=, ProtectHome=tmpfs.
    pub(super) tmpfs_owner: u32,
}

impl Prepared {
    /// The same, with the tmpfs roots owned by `uid`: root of the sandbox's user namespace
    /// (`Identity::namespace_root`), so that its root may write them (host root: 0).
    pub(in crate::sandbox) fn owned_by(self, uid: u32) -> Prepared {
        Prepared {
            tmpfs_owner: uid,
            ..self
        }
    }
}

pub(super) fn cstring(path: &str, what: &str) -> Result<CString, Failure> {
    CString::new(path).map_err(|_| {
        Failure::setup(
            format!("{what}: the path contains a NUL byte"),
            Errno::INVAL,
        )
    })
}

/// A detached copy of the tree at `fd` (with its submounts if `recursive`).
pub(super) fn clone_at(
    os: &impl MountSyscalls,
    fd: BorrowedFd<'_>,
    recursive: bool,
) -> Result<OwnedFd, Errno> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    os.open_tree(fd, c"", flags)
}

/// Builds the plan for `spec` and `fd_binds` and opens its host trees. Must run in the host
/// mount namespace.
pub(in crate::sandbox) fn prepare(
    os: &impl MountSyscalls,
    spec: &MountPlan,
    fd_binds: Vec<FdBind>,
) -> Result<Prepared, Failure> {
    let targets: Vec<(String, bool)> = fd_binds
        .iter()
        .map(|b| (b.target.clone(), b.read_only))
        .collect();
    let plan = Plan::new(spec, &targets);
    let mut devices = None;
    let mut trees = Vec::with_capacity(plan.sources.len());
    for (index, source) in plan.sources.iter().enumerate() {
        let tree = match source {
            Source::Host {
                path,
                recursive,
                ignore_missing,
            } => host_tree(os, path, *recursive, *ignore_missing)?,
            Source::Fd(n) => {
                let bind = &fd_binds[*n];
                let stage = format!("bind the service directory at {}", bind.target);
                Some(fd_tree(os, bind.source.as_fd()).map_err(|e| Failure::setup(stage, e))?)
            }
            Source::Device { path, read, write } => {
                Some(device_node(os, &mut devices, index, path, *read, *write)?)
            }
        };
        trees.push(tree);
    }
    Ok(Prepared {
        plan,
        trees,
        host_files: Vec::new(),
        tmpfs_owner: 0,
    })
}

fn fd_tree(os: &impl MountSyscalls, fd: BorrowedFd<'_>) -> Result<Tree, Errno> {
    let dir = os.node(fd)?.kind == FileType::Directory;
    Ok(Tree {
        fd: clone_at(os, fd, false)?,
        dir,
    })
}

fn host_tree(
    os: &impl MountSyscalls,
    path: &str,
    recursive: bool,
    ignore_missing: bool,
) -> Result<Option<Tree>, Failure> {
    let stage = format!("open the bind source {path} (without following symlinks)");
    let c_path = cstring(path, &stage)?;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let fd = match os.openat2(None, &c_path, OFlags::PATH, resolve) {
        Ok(fd) => fd,
        Err(Errno::NOENT) if ignore_missing => return Ok(None),
        Err(e) => return Err(Failure::setup(stage, e)),
    };
    let dir = os
        .node(fd.as_fd())
        .map_err(|e| Failure::setup(&stage, e))?
        .kind
        == FileType::Directory;
    let fd = clone_at(os, fd.as_fd(), recursive)
        .map_err(|e| Failure::setup(format!("clone the bind source {path}"), e))?;
    Ok(Some(Tree { fd, dir }))
}

/// A new node for the host's device at `path`, named `index` on the devices tmpfs (made on
/// first use), cloned read-only, nosuid, noexec.
fn device_node(
    os: &impl MountSyscalls,
    devices: &mut Option<OwnedFd>,
    index: usize,
    path: &str,
    read: bool,
    write: bool,
) -> Result<Tree, Failure> {
    let directive = format!("DeviceAllow={path}");
    let fail = |what: &str, e: Errno| Failure::setup(format!("{directive} ({what})"), e);
    let c_path = cstring(path, &directive)?;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let host = os
        .openat2(None, &c_path, OFlags::PATH, resolve)
        .map_err(|e| fail("open the host's node", e))?;
    let node = os
        .node(host.as_fd())
        .map_err(|e| fail("stat the host's node", e))?;
    if !matches!(node.kind, FileType::CharacterDevice | FileType::BlockDevice) {
        return Err(fail("the host's node is not a device", Errno::NODEV));
    }
    let fs = match devices {
        Some(fs) => fs,
        None => {
            let params: Vec<FsParam<'_>> = DEVICES_TMPFS
                .iter()
                .map(|(k, v)| FsParam::String(k, v))
                .collect();
            let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC;
            devices.insert(
                os.fs_mount(c"tmpfs", &params, attrs)
                    .map_err(|e| fail("mount the devices tmpfs", e))?,
            )
        }
    };
    let name = cstring(&index.to_string(), &directive)?;
    let mut access = 0;
    if read {
        access |= 0o444;
    }
    if write {
        access |= 0o222;
    }
    let mode = Mode::from_raw_mode(node.mode & access);
    os.mknodat(fs.as_fd(), &name, node.kind, mode, node.rdev)
        .map_err(|e| fail("create its node", e))?;
    os.chownat(fs.as_fd(), &name, node.uid, node.gid)
        .map_err(|e| fail("give its node the host's owner", e))?;
    let own = os
        .openat2(
            Some(fs.as_fd()),
            &name,
            OFlags::PATH,
            ResolveFlags::NO_SYMLINKS,
        )
        .map_err(|e| fail("open its node", e))?;
    let fd = clone_at(os, own.as_fd(), false).map_err(|e| fail("clone its node", e))?;
    // Read-only keeps the node's mode and owner as made; device access is not a write to
    // the mount.
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    os.mount_setattr(
        Some(fd.as_fd()),
        c"",
        rustix::fs::AtFlags::EMPTY_PATH | AT_RECURSIVE,
        attrs,
    )
    .map_err(|e| fail("make its node read-only", e))?;
    Ok(Tree { fd, dir: false })
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::{BindPath, DeviceAccess, SandboxSpec};

    use super::*;
    use crate::sandbox::syscalls::{Call, Node, RecordingSyscalls};

    fn bind(source: &str, ignore_missing: bool) -> MountPlan {
        let mut spec = SandboxSpec::baseline(61200, 61200, "probe").mounts;
        spec.bind_paths = vec![BindPath {
            source: source.into(),
            target: "/data".into(),
            read_only: true,
            recursive: false,
            ignore_missing,
        }];
        spec
    }

    fn device(read: bool, write: bool) -> MountPlan {
        let mut spec = SandboxSpec::baseline(61200, 61200, "probe").mounts;
        spec.device_allow = vec![DeviceAccess {
            path: "/dev/fuse".into(),
            read,
            write,
            mknod: false,
        }];
        spec
    }

    fn fuse() -> Node {
        Node {
            kind: FileType::CharacterDevice,
            mode: 0o666,
            uid: 0,
            gid: 0,
            rdev: libc::makedev(10, 229),
            size: 0,
        }
    }

    #[test]
    fn a_bind_source_is_opened_without_following_symlinks_then_cloned() {
        let os = RecordingSyscalls::new();

        let prepared = prepare(&os, &bind("/srv/data", false), Vec::new()).unwrap();

        assert!(prepared.trees[0].as_ref().is_some_and(|t| t.dir));
        let calls = os.calls();
        assert_eq!(
            calls[0],
            Call::Openat2 {
                dir: ".".into(),
                path: "/srv/data".into(),
                flags: OFlags::PATH,
                resolve: ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            }
        );
        assert!(matches!(&calls[1], Call::OpenTree { dir, path, flags }
            if dir == "/srv/data" && path.is_empty()
                && !flags.contains(OpenTreeFlags::AT_RECURSIVE)));
    }

    #[test]
    fn a_missing_bind_source_fails_unless_it_may_be_missing() {
        let os = || RecordingSyscalls::new().without_path("/srv/gone");

        let failed = prepare(&os(), &bind("/srv/gone", false), Vec::new());
        let skipped = prepare(&os(), &bind("/srv/gone", true), Vec::new()).unwrap();

        assert!(
            matches!(&failed, Err(Failure::Setup { stage, errno: libc::ENOENT })
                if stage.contains("/srv/gone")),
            "{:?}",
            failed.err()
        );
        assert!(skipped.trees[0].is_none());
    }

    #[test]
    fn a_device_is_a_new_node_of_the_host_s_number_owner_and_narrowed_mode() {
        let os = RecordingSyscalls::new().with_node("/dev/fuse", fuse());

        prepare(&os, &device(true, false), Vec::new()).unwrap();

        let calls = os.calls();
        assert!(
            calls
                .iter()
                .any(|c| matches!(c, Call::FsMount { fstype, attrs, .. }
            if fstype == "tmpfs" && !attrs.contains(MountAttrFlags::MOUNT_ATTR_NODEV)))
        );
        assert!(calls.contains(&Call::Mknodat {
            dir: "fs:tmpfs".into(),
            path: "0".into(),
            kind: FileType::CharacterDevice,
            mode: 0o444,
            dev: libc::makedev(10, 229),
        }));
        assert!(calls.contains(&Call::Chownat {
            dir: "fs:tmpfs".into(),
            path: "0".into(),
            uid: 0,
            gid: 0,
        }));
    }

    #[test]
    fn a_device_never_gets_more_than_the_host_s_mode() {
        let host = Node {
            mode: 0o600,
            ..fuse()
        };
        let os = RecordingSyscalls::new().with_node("/dev/fuse", host);

        prepare(&os, &device(true, true), Vec::new()).unwrap();

        assert!(
            os.calls()
                .iter()
                .any(|c| matches!(c, Call::Mknodat { mode: 0o600, .. }))
        );
    }

    #[test]
    fn a_device_path_that_is_no_device_is_refused() {
        let os = RecordingSyscalls::new();

        let result = prepare(&os, &device(true, true), Vec::new());

        assert!(
            matches!(&result, Err(Failure::Setup { stage, errno: libc::ENODEV })
                if stage.starts_with("DeviceAllow=/dev/fuse")),
            "{:?}",
            result.err()
        );
    }
}
