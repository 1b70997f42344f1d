//! The host's files bound read-only over the image's placeholders, as portable services
//! expect (`MountPlan.host_files`): `/etc/resolv.conf` and `/etc/hosts` from berthd's copies
//! (which it rewrites in place when the host's change, so the bind never goes stale: systemd
//! #17155), `/etc/machine-id` and `/etc/localtime` the host's own, opened here.
//!
//! Each goes only over a regular file the image has: an image without the placeholder is left
//! as it is, and `/etc/hosts` only where the image's is empty (an image with hosts of its own
//! keeps them). The placeholder is resolved in the new root without following symlinks, but
//! for `/etc/localtime`, which is a symlink into the zoneinfo tree by convention: it is followed
//! inside the new root (`RESOLVE_IN_ROOT`), never to a host path, and the host's zone is bound
//! over the file it names. The sources are cloned in the host mount namespace (`prepare`) and
//! bound before the unit's own mount plan, so that a unit's BindReadOnlyPaths=,
//! InaccessiblePaths= or TemporaryFileSystem= over the same path still wins.

use std::os::fd::{AsFd, OwnedFd};

use berth_protocol::sandbox::HostFiles;
use rustix::fs::{AtFlags, FileType, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MountAttrFlags, MoveMountFlags};

use super::sources::{clone_at, cstring};
use crate::launch_spec::HostFileFds;
use crate::sandbox::Failure;
use crate::sandbox::syscalls::{AT_RECURSIVE, MountSyscalls};

const RESOLV_CONF: &str = "/etc/resolv.conf";
const HOSTS: &str = "/etc/hosts";
const MACHINE_ID: &str = "/etc/machine-id";
const LOCALTIME: &str = "/etc/localtime";

/// One host file ready to bind: a detached clone of its source.
#[derive(Debug)]
pub(in crate::sandbox) struct HostFile {
    tree: OwnedFd,
    /// The placeholder, absolute in the sandbox.
    target: &'static str,
    /// Bound only over an empty placeholder.
    only_if_empty: bool,
    /// The image's symlink at `target` is followed (inside the new root).
    follow: bool,
}

/// Clones the sources `spec` asks for: berthd's copies in `fds` (the floor checked that each
/// asked for is there, a regular file) and the host's own machine-id and localtime (following
/// the host's symlinks: the host is not hostile; a host without one, or where it is no
/// regular file, binds none). Must run in the host mount namespace.
pub(in crate::sandbox) fn prepare(
    os: &impl MountSyscalls,
    spec: &HostFiles,
    fds: HostFileFds,
) -> Result<Vec<HostFile>, Failure> {
    let mut files = Vec::new();
    let copies = [
        (spec.resolv_conf, fds.resolv_conf, RESOLV_CONF, false),
        (spec.hosts, fds.hosts, HOSTS, true),
    ];
    for (wanted, fd, target, only_if_empty) in copies {
        let Some(fd) = fd.filter(|_| wanted) else {
            continue;
        };
        let tree = clone_at(os, fd.as_fd(), false)
            .map_err(|e| Failure::setup(format!("clone berthd's copy of {target}"), e))?;
        files.push(HostFile {
            tree,
            target,
            only_if_empty,
            follow: false,
        });
    }
    let own = [
        (spec.machine_id, MACHINE_ID, false),
        (spec.localtime, LOCALTIME, true),
    ];
    for (wanted, path, follow) in own {
        if !wanted {
            continue;
        }
        if let Some(tree) = host_source(os, path)? {
            files.push(HostFile {
                tree,
                target: path,
                only_if_empty: false,
                follow,
            });
        }
    }
    Ok(files)
}

/// A clone of the host's regular file at `path`, `None` if the host has none.
fn host_source(os: &impl MountSyscalls, path: &'static str) -> Result<Option<OwnedFd>, Failure> {
    let stage = format!("open the host's {path}");
    let c_path = cstring(path, &stage)?;
    let fd = match os.openat2(None, &c_path, OFlags::PATH, ResolveFlags::NO_MAGICLINKS) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Failure::setup(stage, e)),
    };
    let node = os.node(fd.as_fd()).map_err(|e| Failure::setup(&stage, e))?;
    if node.kind != FileType::RegularFile {
        return Ok(None);
    }
    clone_at(os, fd.as_fd(), false)
        .map(Some)
        .map_err(|e| Failure::setup(format!("clone the host's {path}"), e))
}

/// Binds each of `files` read-only over its placeholder in the new root `root` (still at its
/// scratch place, before the mount plan), where the image has one.
pub(in crate::sandbox) fn bind(
    os: &impl MountSyscalls,
    root: &OwnedFd,
    files: Vec<HostFile>,
) -> Result<(), Failure> {
    for file in files {
        let fail = |what: &str, e: Errno| {
            Failure::setup(format!("bind the host's {} ({what})", file.target), e)
        };
        let Some(placeholder) = placeholder(os, root, &file).map_err(|e| fail("resolve it", e))?
        else {
            continue;
        };
        let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        os.mount_setattr(
            Some(file.tree.as_fd()),
            c"",
            AtFlags::EMPTY_PATH | AT_RECURSIVE,
            attrs,
        )
        .map_err(|e| fail("make it read-only", e))?;
        os.move_mount(
            file.tree.as_fd(),
            c"",
            placeholder.as_fd(),
            c"",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| fail("mount it", e))?;
    }
    Ok(())
}

/// The image's placeholder for `file`, `None` where the image has none to bind over: nothing
/// there, a symlink (but for localtime) or one that leads nowhere, no regular file, or a
/// non-empty hosts file.
fn placeholder(
    os: &impl MountSyscalls,
    root: &OwnedFd,
    file: &HostFile,
) -> Result<Option<OwnedFd>, Errno> {
    let mut resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    if !file.follow {
        resolve |= ResolveFlags::NO_SYMLINKS;
    }
    let c_path = std::ffi::CString::new(file.target).map_err(|_| Errno::INVAL)?;
    let fd = match os.openat2(Some(root.as_fd()), &c_path, OFlags::PATH, resolve) {
        Ok(fd) => fd,
        // ELOOP: a symlink not followed, or a loop; ENOTDIR: /etc is no directory.
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e),
    };
    let node = os.node(fd.as_fd())?;
    if node.kind != FileType::RegularFile || (file.only_if_empty && node.size != 0) {
        return Ok(None);
    }
    Ok(Some(fd))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::sandbox::syscalls::{Call, Node, RecordingSyscalls};

    fn all() -> HostFiles {
        HostFiles {
            resolv_conf: true,
            hosts: true,
            machine_id: true,
            localtime: true,
        }
    }

    fn regular(size: u64) -> Node {
        Node {
            kind: FileType::RegularFile,
            mode: 0o644,
            size,
            ..Node::directory()
        }
    }

    /// A real regular file standing for one of berthd's copies.
    fn copy() -> OwnedFd {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"nameserver 192.0.2.1\n").unwrap();
        file.into()
    }

    fn copies() -> HostFileFds {
        HostFileFds {
            resolv_conf: Some(copy()),
            hosts: Some(copy()),
        }
    }

    /// Every placeholder of the image an empty regular file, the host's files regular too.
    fn image_with_placeholders() -> RecordingSyscalls {
        [RESOLV_CONF, HOSTS, MACHINE_ID, LOCALTIME]
            .into_iter()
            .fold(RecordingSyscalls::new(), |os, path| {
                os.with_node(path, regular(0))
            })
    }

    fn root(os: &RecordingSyscalls) -> OwnedFd {
        os.open(c"/tmp", OFlags::PATH).unwrap()
    }

    /// Prepares and binds `spec` with `fds`; the calls binding made.
    fn run(os: &RecordingSyscalls, spec: &HostFiles, fds: HostFileFds) -> Vec<Call> {
        let files = prepare(os, spec, fds).unwrap();
        let root = root(os);
        let before = os.calls().len();
        bind(os, &root, files).unwrap();
        os.calls()[before..].to_vec()
    }

    /// The placeholders a mount was moved onto, in order.
    fn bound(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::MoveMount { to_dir, .. } => Some(to_dir.clone()),
                _ => None,
            })
            .collect()
    }

    fn placeholder_lookup(calls: &[Call], path: &str) -> Option<ResolveFlags> {
        calls.iter().find_map(|c| match c {
            Call::Openat2 {
                dir,
                path: p,
                resolve,
                ..
            } if dir == "/tmp" && p == path => Some(*resolve),
            _ => None,
        })
    }

    #[test]
    fn every_host_file_is_bound_over_its_placeholder() {
        let os = image_with_placeholders();

        let calls = run(&os, &all(), copies());

        assert_eq!(bound(&calls), [RESOLV_CONF, HOSTS, MACHINE_ID, LOCALTIME]);
    }

    #[test]
    fn each_bind_is_read_only_nosuid_nodev_noexec_before_it_is_moved() {
        let os = image_with_placeholders();
        let spec = HostFiles {
            resolv_conf: true,
            ..HostFiles::default()
        };

        let calls = run(&os, &spec, copies());

        let setattr = calls
            .iter()
            .position(|c| {
                matches!(c, Call::MountSetattr { attr_set, .. }
                if attr_set.contains(MountAttrFlags::MOUNT_ATTR_RDONLY
                    | MountAttrFlags::MOUNT_ATTR_NOSUID
                    | MountAttrFlags::MOUNT_ATTR_NODEV
                    | MountAttrFlags::MOUNT_ATTR_NOEXEC))
            })
            .expect("the bind's flags");
        let moved = calls
            .iter()
            .position(|c| matches!(c, Call::MoveMount { .. }))
            .unwrap();
        assert!(setattr < moved, "{calls:#?}");
    }

    #[test]
    fn nothing_is_bound_that_the_spec_does_not_ask_for() {
        let os = image_with_placeholders();

        let calls = run(&os, &HostFiles::default(), copies());

        assert!(bound(&calls).is_empty());
        assert!(
            os.calls()
                .iter()
                .all(|c| !matches!(c, Call::OpenTree { .. }))
        );
    }

    #[test]
    fn an_image_without_a_placeholder_is_left_as_it_is() {
        let os = image_with_placeholders().without_path(RESOLV_CONF);

        let calls = run(&os, &all(), copies());

        assert!(
            !bound(&calls).contains(&RESOLV_CONF.to_owned()),
            "{calls:#?}"
        );
        assert_eq!(bound(&calls).len(), 3);
    }

    #[test]
    fn an_image_with_hosts_of_its_own_keeps_them() {
        let os = image_with_placeholders().with_node(HOSTS, regular(27));

        let calls = run(&os, &all(), copies());

        assert!(!bound(&calls).contains(&HOSTS.to_owned()), "{calls:#?}");
        assert!(bound(&calls).contains(&RESOLV_CONF.to_owned()));
    }

    #[test]
    fn a_placeholder_that_is_no_regular_file_gets_no_bind() {
        let os = image_with_placeholders().with_node(MACHINE_ID, Node::directory());

        let calls = run(&os, &all(), copies());

        assert!(
            !bound(&calls).contains(&MACHINE_ID.to_owned()),
            "{calls:#?}"
        );
    }

    #[test]
    fn only_localtime_follows_the_image_s_symlinks_and_only_inside_the_root() {
        let os = image_with_placeholders();

        let calls = run(&os, &all(), copies());

        let in_root = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        assert_eq!(placeholder_lookup(&calls, LOCALTIME), Some(in_root));
        for path in [RESOLV_CONF, HOSTS, MACHINE_ID] {
            assert_eq!(
                placeholder_lookup(&calls, path),
                Some(in_root | ResolveFlags::NO_SYMLINKS),
                "{path}"
            );
        }
    }

    #[test]
    fn a_symlinked_or_looping_placeholder_is_skipped() {
        let os = image_with_placeholders().failing(
            |c| matches!(c, Call::Openat2 { dir, path, .. } if dir == "/tmp" && path == RESOLV_CONF),
            Errno::LOOP,
        );

        let calls = run(&os, &all(), copies());

        assert!(
            !bound(&calls).contains(&RESOLV_CONF.to_owned()),
            "{calls:#?}"
        );
    }

    #[test]
    fn a_host_without_machine_id_binds_none() {
        let os = image_with_placeholders().failing(
            |c| matches!(c, Call::Openat2 { dir, path, .. } if dir == "." && path == MACHINE_ID),
            Errno::NOENT,
        );

        let calls = run(&os, &all(), copies());

        assert!(
            !bound(&calls).contains(&MACHINE_ID.to_owned()),
            "{calls:#?}"
        );
    }

    #[test]
    fn the_host_s_own_files_are_opened_from_the_host_root_following_its_symlinks() {
        let os = image_with_placeholders();

        prepare(&os, &all(), copies()).unwrap();

        assert!(os.calls().contains(&Call::Openat2 {
            dir: ".".into(),
            path: LOCALTIME.into(),
            flags: OFlags::PATH,
            resolve: ResolveFlags::NO_MAGICLINKS,
        }));
    }

    #[test]
    fn a_failing_bind_names_the_file() {
        let os = image_with_placeholders().failing(
            |c| matches!(c, Call::MoveMount { to_dir, .. } if to_dir == HOSTS),
            Errno::PERM,
        );
        let files = prepare(&os, &all(), copies()).unwrap();

        let result = bind(&os, &root(&os), files);

        assert!(
            matches!(&result, Err(Failure::Setup { stage, errno: libc::EPERM })
                if stage.contains("/etc/hosts")),
            "{result:?}"
        );
    }
}
