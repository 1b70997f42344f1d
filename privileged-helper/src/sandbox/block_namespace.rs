//! The image's own users (DESIGN.md §5; block mode: `identity.user_block` is set).
//!
//! The service runs in a user namespace that maps ids 0-65535 onto its attachment's block of
//! host ids, and sees the image (with its extensions) idmapped onto the same namespace, so
//! its files keep their image owners inside while on the host they are block ids; files of
//! the host that are not idmapped (binds, /proc) show as nobody.
//!
//! The supervisor, still root, creates the namespace before it forks init ([`create`]): a
//! child of it that has become the manager's uid unshares `CLONE_NEWUSER`, so the namespace
//! is owned by the manager uid (the supervisor, once it has given up root to that uid, has
//! every capability over the service through that ownership, which `pidfd_getfd` needs), and
//! the supervisor writes the maps and keeps `/proc/CHILD/ns/user` open. With PrivateUsers=
//! a second namespace, owned the same way, maps only root, the service's uid and its gids onto
//! their block ids: init joins that one, while the mounts use the full one.
//!
//! Init idmaps detached clones of the image root and the extensions ([`idmap_layers`]) before
//! it builds its overlay view of them, and joins the namespace ([`enter`]) where it would
//! create PrivateUsers='s namespace otherwise: last, after mounts, limits and Landlock, so
//! that its mount, pid, IPC, UTS, network and cgroup namespaces stay owned by the host's user
//! namespace. Credentials are then set with the ids inside ([`InsideIds`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use berth_protocol::sandbox::{Identity, UidBlock};
use rustix::io::Errno;
use rustix::mount::OpenTreeFlags;

use super::Failure;
use super::process_syscalls::{ProcessSyscalls, write_id_maps};
use super::sys;
use super::syscalls::MountSyscalls;

/// The user namespaces of one block-mode sandbox.
pub(crate) struct BlockNamespaces {
    /// Maps 0-65535 onto the whole block: the image's mounts are idmapped with it.
    pub mounts: OwnedFd,
    /// With PrivateUsers=: the namespace of root, the service's uid and its gids only, which
    /// init joins instead of `mounts`.
    pub private: Option<OwnedFd>,
}

impl BlockNamespaces {
    /// The namespace init joins.
    pub(crate) fn service(&self) -> BorrowedFd<'_> {
        self.private.as_ref().unwrap_or(&self.mounts).as_fd()
    }

    /// Their raw descriptors, to keep across init's close of inherited descriptors.
    pub(crate) fn raw_fds(&self) -> Vec<i32> {
        std::iter::once(&self.mounts)
            .chain(&self.private)
            .map(|fd| fd.as_raw_fd())
            .collect()
    }
}

/// The service's ids as its user namespace sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InsideIds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Root of the block's namespace (block mode without User=): it keeps its bounding set.
    pub namespace_root: bool,
}

impl InsideIds {
    /// The ids setresuid/setresgid/setgroups take: the identity's own without a block, the
    /// block-relative ones with it. The floor has checked that every id lies in the block;
    /// one outside is refused again here rather than run as some other id.
    pub(crate) fn of(identity: &Identity) -> Result<InsideIds, Failure> {
        let Some(block) = identity.user_block else {
            return Ok(InsideIds {
                uid: identity.uid,
                gid: identity.gid,
                groups: identity.supplementary_groups.clone(),
                namespace_root: false,
            });
        };
        let inside = |host: u32, what: &str| {
            block.inside_id(host).ok_or_else(|| {
                Failure::setup(
                    format!(
                        "{what} {host} lies outside the user block {}-{}",
                        block.first,
                        block.last()
                    ),
                    Errno::INVAL,
                )
            })
        };
        let uid = inside(identity.uid, "uid")?;
        let groups = identity
            .supplementary_groups
            .iter()
            .map(|gid| inside(*gid, "supplementary gid"))
            .collect::<Result<_, _>>()?;
        Ok(InsideIds {
            uid,
            gid: inside(identity.gid, "gid")?,
            groups,
            namespace_root: uid == 0,
        })
    }
}

/// The maps of the full namespace: 0-65535 onto the block, for uids and gids alike.
pub(crate) fn block_maps(block: UidBlock) -> (String, String) {
    let map = format!("0 {} {}\n", block.first, block.size);
    (map.clone(), map)
}

/// The maps of PrivateUsers='s namespace in block mode: root, the service's uid, its gid and
/// supplementary gids, each onto its block id; every other id shows as nobody.
pub(crate) fn private_maps(
    identity: &Identity,
    block: UidBlock,
) -> Result<(String, String), Failure> {
    let ids = InsideIds::of(identity)?;
    let line = |inside: u32| {
        format!(
            "{inside} {} 1\n",
            u64::from(block.first) + u64::from(inside)
        )
    };
    let mut uid_map = line(0);
    if ids.uid != 0 {
        uid_map.push_str(&line(ids.uid));
    }
    let mut gids = vec![0];
    for gid in std::iter::once(ids.gid).chain(ids.groups) {
        if !gids.contains(&gid) {
            gids.push(gid);
        }
    }
    let gid_map = gids.into_iter().map(line).collect();
    Ok((uid_map, gid_map))
}

/// Creates the sandbox's user namespaces, owned by `owner` (the manager's uid and gid), when
/// the identity has a block; `None` otherwise. Runs in the supervisor, as root, while it is
/// single-threaded and before it unshares the pid namespace (the helper child would become
/// its init).
pub(crate) fn create(
    identity: &Identity,
    owner: (u32, u32),
) -> Result<Option<BlockNamespaces>, Failure> {
    let Some(block) = identity.user_block else {
        return Ok(None);
    };
    let (uid_map, gid_map) = block_maps(block);
    let mounts = new_namespace(owner, &uid_map, &gid_map)
        .map_err(|e| Failure::setup("create the user namespace of the user block", e))?;
    let private = if identity.private_users {
        let (uid_map, gid_map) = private_maps(identity, block)?;
        let ns = new_namespace(owner, &uid_map, &gid_map).map_err(|e| {
            Failure::setup("create the private user namespace of the user block", e)
        })?;
        Some(ns)
    } else {
        None
    };
    Ok(Some(BlockNamespaces { mounts, private }))
}

/// A new user namespace owned by `owner`, with the maps given, as an `nsfs` descriptor. A
/// child becomes `owner` and unshares; we (root in the parent namespace) write its maps, which
/// only a writer with CAP_SETUID/CAP_SETGID there may do for more than its own id, and keep
/// the namespace by its descriptor once the child is gone.
fn new_namespace(owner: (u32, u32), uid_map: &str, gid_map: &str) -> Result<OwnedFd, Errno> {
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (done_r, done_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // SAFETY: the supervisor is single-threaded here; the child ends in sys::exit.
    match unsafe { sys::fork() }.map_err(errno)? {
        sys::Forked::Child => {
            let keep = [ready_w.as_raw_fd(), done_r.as_raw_fd()];
            // SAFETY: fresh child; the closed descriptors belong to supervisor objects this
            // process never uses. It runs as the manager's uid: it holds nothing else.
            let result = unsafe { sys::close_fds_except(&keep) }
                .map_err(errno)
                .and_then(|()| become_owner_and_unshare(owner));
            let code = match result {
                Ok(()) => 0u8,
                Err(e) => u8::try_from(e.raw_os_error()).unwrap_or(libc::EIO as u8),
            };
            let _ = rustix::io::write(&ready_w, &[code]);
            // Lives, and so keeps the namespace, until the parent has what it needs.
            let mut byte = [0u8; 1];
            let _ = rustix::io::read(&done_r, &mut byte);
            sys::exit(0)
        }
        sys::Forked::Parent(child) => {
            drop((ready_w, done_r));
            let result = parent_side(child, &ready_r, uid_map, gid_map);
            drop(done_w);
            let _ = sys::waitpid(child, 0);
            result
        }
    }
}

fn become_owner_and_unshare((uid, gid): (u32, u32)) -> Result<(), Errno> {
    // SAFETY: setgroups with an empty list.
    if unsafe { libc::setgroups(0, std::ptr::null()) } == -1 {
        return Err(errno(std::io::Error::last_os_error()));
    }
    sys::setresgid(gid).map_err(errno)?;
    sys::setresuid(uid).map_err(errno)?;
    // SAFETY: single-threaded child; no CLONE_FILES or CLONE_FS juggling.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) }
}

fn parent_side(
    child: libc::pid_t,
    ready: &OwnedFd,
    uid_map: &str,
    gid_map: &str,
) -> Result<OwnedFd, Errno> {
    let mut code = [0u8; 1];
    match rustix::io::read(ready, &mut code)? {
        1 if code[0] == 0 => {}
        1 => return Err(Errno::from_raw_os_error(i32::from(code[0]))),
        _ => return Err(Errno::CHILD),
    }
    let ns = rustix::fs::open(
        format!("/proc/{child}/ns/user").as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    write_id_maps(child, uid_map, gid_map)?;
    Ok(ns)
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

/// Detached clones of `root` and each of `layers`, idmapped onto `userns`, in their order.
/// Runs in init before it builds the image view from them, in the host's mount namespace.
pub(crate) fn idmap_layers(
    os: &impl MountSyscalls,
    userns: BorrowedFd<'_>,
    root: &OwnedFd,
    layers: &[OwnedFd],
) -> Result<(OwnedFd, Vec<OwnedFd>), Failure> {
    let root = idmapped_clone(os, userns, root, "the image root")?;
    let layers = layers
        .iter()
        .enumerate()
        .map(|(index, layer)| {
            idmapped_clone(os, userns, layer, &format!("extension layer {}", index + 1))
        })
        .collect::<Result<_, _>>()?;
    Ok((root, layers))
}

fn idmapped_clone(
    os: &impl MountSyscalls,
    userns: BorrowedFd<'_>,
    tree: &OwnedFd,
    what: &str,
) -> Result<OwnedFd, Failure> {
    let clone = os
        .open_tree(
            tree.as_fd(),
            c"",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| Failure::setup(format!("clone {what} to idmap it"), e))?;
    os.mount_idmap(clone.as_fd(), userns).map_err(|e| match e {
        // The file system (or the kernel) cannot idmap: say so, not just EINVAL.
        Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM => Failure::setup(
            format!(
                "idmap {what} onto the service's user namespace: the image's own users need \
                 idmapped mounts, which this kernel does not support for its file system"
            ),
            e,
        ),
        e => Failure::setup(format!("idmap {what} onto the service's user namespace"), e),
    })?;
    Ok(clone)
}

/// Joins the service's namespace of the block (the last namespace change of init).
pub(crate) fn enter(
    os: &impl ProcessSyscalls,
    namespaces: &BlockNamespaces,
) -> Result<(), Failure> {
    os.join_user_namespace(namespaces.service())
        .map_err(|e| Failure::setup("join the user namespace of the user block", e))
}

#[cfg(test)]
mod tests {
    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::super::syscalls::{Call, RecordingSyscalls};
    use super::*;

    const FIRST: u32 = 524_288;

    fn identity(uid: u32, gid: u32, groups: &[u32], private_users: bool) -> Identity {
        Identity {
            uid: FIRST + uid,
            gid: FIRST + gid,
            supplementary_groups: groups.iter().map(|g| FIRST + g).collect(),
            private_users,
            user_name: "redis".into(),
            user_block: Some(UidBlock::at(FIRST)),
        }
    }

    fn token(path: &str) -> OwnedFd {
        rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn inside_ids_are_relative_to_the_block() {
        let ids = InsideIds::of(&identity(100, 101, &[4, 33], false)).unwrap();

        assert_eq!(
            ids,
            InsideIds {
                uid: 100,
                gid: 101,
                groups: vec![4, 33],
                namespace_root: false
            }
        );
    }

    #[test]
    fn without_a_block_the_ids_are_the_identity_s_own() {
        let mut identity = identity(100, 100, &[], false);
        identity.user_block = None;

        let ids = InsideIds::of(&identity).unwrap();

        assert_eq!((ids.uid, ids.gid), (FIRST + 100, FIRST + 100));
        assert!(!ids.namespace_root);
    }

    #[test]
    fn uid_0_of_the_block_is_root_of_the_namespace() {
        assert!(
            InsideIds::of(&identity(0, 0, &[], false))
                .unwrap()
                .namespace_root
        );
    }

    #[test]
    fn an_id_outside_the_block_is_refused() {
        let mut identity = identity(100, 100, &[], false);
        identity.supplementary_groups.push(1000);

        let failure = InsideIds::of(&identity).unwrap_err();

        assert_eq!(
            failure,
            Failure::Setup {
                stage: "supplementary gid 1000 lies outside the user block 524288-589823".into(),
                errno: libc::EINVAL
            }
        );
    }

    #[test]
    fn the_block_namespace_maps_all_65536_ids() {
        let (uid_map, gid_map) = block_maps(UidBlock::at(FIRST));

        assert_eq!(uid_map, "0 524288 65536\n");
        assert_eq!(gid_map, "0 524288 65536\n");
    }

    #[test]
    fn private_users_maps_root_the_service_and_its_groups_onto_their_block_ids() {
        let (uid_map, gid_map) =
            private_maps(&identity(100, 101, &[4, 101, 0], true), UidBlock::at(FIRST)).unwrap();

        assert_eq!(uid_map, "0 524288 1\n100 524388 1\n");
        assert_eq!(gid_map, "0 524288 1\n101 524389 1\n4 524292 1\n");
    }

    #[test]
    fn private_users_as_root_maps_root_once() {
        let (uid_map, gid_map) =
            private_maps(&identity(0, 0, &[], true), UidBlock::at(FIRST)).unwrap();

        assert_eq!(uid_map, "0 524288 1\n");
        assert_eq!(gid_map, "0 524288 1\n");
    }

    #[test]
    fn the_root_and_each_layer_are_cloned_then_idmapped_onto_the_namespace() {
        let os = RecordingSyscalls::new();
        let userns = token("/");
        let root = os
            .open_tree(token("/").as_fd(), c"tmp", OpenTreeFlags::empty())
            .unwrap();
        let layer = os
            .open_tree(token("/").as_fd(), c"usr", OpenTreeFlags::empty())
            .unwrap();

        let (root, layers) = idmap_layers(&os, userns.as_fd(), &root, &[layer]).unwrap();

        let calls = os.calls();
        let idmaps: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::MountIdmap { .. }))
            .collect();
        assert_eq!(
            idmaps,
            [
                &Call::MountIdmap {
                    mount: "clone:image:tmp".into(),
                    userns: userns.as_raw_fd()
                },
                &Call::MountIdmap {
                    mount: "clone:image:usr".into(),
                    userns: userns.as_raw_fd()
                },
            ]
        );
        assert_eq!(layers.len(), 1);
        drop(root);
    }

    #[test]
    fn a_file_system_that_cannot_be_idmapped_says_so() {
        let os = RecordingSyscalls::new()
            .failing(|c| matches!(c, Call::MountIdmap { .. }), Errno::INVAL);
        let userns = token("/");
        let root = token("/");

        let Err(Failure::Setup { stage, errno }) = idmap_layers(&os, userns.as_fd(), &root, &[])
        else {
            panic!("idmapping did not fail");
        };

        assert!(stage.contains("need idmapped mounts"), "{stage}");
        assert_eq!(errno, libc::EINVAL);
    }

    #[test]
    fn init_joins_the_private_namespace_when_there_is_one() {
        let os = RecordingProcess::new();
        let namespaces = BlockNamespaces {
            mounts: token("/"),
            private: Some(token("/")),
        };

        enter(&os, &namespaces).unwrap();

        let private = namespaces.private.as_ref().unwrap().as_raw_fd();
        assert_eq!(os.calls(), [ProcessCall::JoinUserNamespace(private)]);
    }

    #[test]
    fn init_joins_the_block_namespace_without_private_users() {
        let os = RecordingProcess::new();
        let namespaces = BlockNamespaces {
            mounts: token("/"),
            private: None,
        };

        enter(&os, &namespaces).unwrap();

        assert_eq!(
            os.calls(),
            [ProcessCall::JoinUserNamespace(
                namespaces.mounts.as_raw_fd()
            )]
        );
    }
}
