//! Carrying out a [`Plan`] in the new root, before `pivot_root`: the only mount syscalls of the
//! plan, all through [`MountSyscalls`].
//!
//! Every path is resolved inside the new root (`openat2` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`: the image's symlinks resolve as the service will see them, never to
//! a host path, never through `/proc/*/fd`), and every mount goes onto the descriptor that
//! resolution gave (`move_mount` with `MOVE_MOUNT_T_EMPTY_PATH`), so no path is looked up
//! twice. A missing mount point is created with `mkdirat` under its resolved parent; in the
//! image, which is read-only, that fails (`EROFS`) and names the path.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MountAttrFlags, MoveMountFlags};

use super::plan::{Action, Missing, Step, is_under};
use super::sources::{Prepared, Tree, clone_at, cstring};
use crate::sandbox::Failure;
use crate::sandbox::syscalls::{AT_RECURSIVE, FsParam, MountSyscalls};

/// Flags every mount the plan adds carries.
const NOSUID_NODEV: MountAttrFlags =
    MountAttrFlags::MOUNT_ATTR_NOSUID.union(MountAttrFlags::MOUNT_ATTR_NODEV);

fn fail(step: &Step, what: &str, errno: Errno) -> Failure {
    Failure::setup(format!("{} ({what})", step.directive), errno)
}

/// Resolves `path` inside the root `root`.
fn resolve(os: &impl MountSyscalls, root: &OwnedFd, path: &str) -> Result<OwnedFd, Errno> {
    let c_path = CString::new(path).map_err(|_| Errno::INVAL)?;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    os.openat2(Some(root.as_fd()), &c_path, OFlags::PATH, resolve)
}

/// Creates `path` (a directory, or an empty file if not `dir`) and its missing parents,
/// each under its resolved parent.
fn create(os: &impl MountSyscalls, root: &OwnedFd, step: &Step, dir: bool) -> Result<(), Failure> {
    let components: Vec<&str> = step.path.split('/').filter(|c| !c.is_empty()).collect();
    let mut parent = String::new();
    for (i, name) in components.iter().enumerate() {
        let here = format!("{parent}/{name}");
        match resolve(os, root, &here) {
            Ok(_) => {
                parent = here;
                continue;
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(fail(step, &format!("resolve {here}"), e)),
        }
        let what = format!("create the mount point {here}");
        let at = if parent.is_empty() { "/" } else { &parent };
        let parent_fd = resolve(os, root, at).map_err(|e| fail(step, &what, e))?;
        let c_name = cstring(name, &step.directive)?;
        let last = i + 1 == components.len();
        let made = if last && !dir {
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            os.openat(
                parent_fd.as_fd(),
                &c_name,
                flags,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            os.mkdirat(parent_fd.as_fd(), &c_name, Mode::from_raw_mode(0o755))
        };
        made.map_err(|e| match e {
            // It did not resolve, yet it is there: a symlink to nothing in the sandbox.
            Errno::EXIST => fail(step, &format!("{what}: a dangling symlink"), e),
            e => fail(step, &what, e),
        })?;
        parent = here;
    }
    Ok(())
}

/// Moves the detached tree `tree` onto `target`.
fn attach(os: &impl MountSyscalls, tree: BorrowedFd<'_>, target: &OwnedFd) -> Result<(), Errno> {
    os.move_mount(
        tree,
        c"",
        target.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

fn set_attrs(os: &impl MountSyscalls, tree: &OwnedFd, attrs: MountAttrFlags) -> Result<(), Errno> {
    os.mount_setattr(
        Some(tree.as_fd()),
        c"",
        AtFlags::EMPTY_PATH | AT_RECURSIVE,
        attrs,
    )
}

/// The nodes InaccessiblePaths= puts over a path: an empty directory and an empty file, both
/// mode 0000, on a tmpfs of our own (never a node the image could have swapped).
struct Inaccessible {
    dir: OwnedFd,
    file: OwnedFd,
    // Closing the detached mount dissolves it, and nothing in a dissolved mount can be
    // cloned any more: kept open as long as the nodes are used.
    _fs: OwnedFd,
}

impl Inaccessible {
    fn new(os: &impl MountSyscalls) -> Result<Inaccessible, Errno> {
        let params = [
            FsParam::String(c"mode", c"0000"),
            FsParam::String(c"size", c"4k"),
            FsParam::String(c"nr_inodes", c"4"),
        ];
        let fs = os.fs_mount(c"tmpfs", &params, NOSUID_NODEV)?;
        os.mkdirat(fs.as_fd(), c"dir", Mode::empty())?;
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        drop(os.openat(fs.as_fd(), c"file", flags, Mode::empty())?);
        let open = |name| {
            os.openat2(
                Some(fs.as_fd()),
                name,
                OFlags::PATH,
                ResolveFlags::NO_SYMLINKS,
            )
        };
        Ok(Inaccessible {
            dir: open(c"dir")?,
            file: open(c"file")?,
            _fs: fs,
        })
    }
}

/// Whether a step's mount ends read-only (pass 2 makes it so, with everything below it).
fn wants_read_only(action: &Action) -> bool {
    match action {
        Action::ReadOnly => true,
        Action::Bind { read_only, .. } | Action::Tmpfs { read_only, .. } => *read_only,
        Action::Inaccessible | Action::ReadWrite => false,
    }
}

/// Whether a step's mount stays writable below a read-only parent (if it was writable).
fn stays_writable(action: &Action) -> bool {
    match action {
        Action::ReadWrite => true,
        Action::Bind { read_only, .. } | Action::Tmpfs { read_only, .. } => !*read_only,
        Action::Inaccessible | Action::ReadOnly => false,
    }
}

/// Carries out the plan in the root at `root` (the new root, still at its scratch place), in
/// systemd's two passes: first every mount, parents first, all writable where they can be (so
/// that mount points below can still be created); then read-only where asked, each
/// read-only step over its whole subtree except the writable steps below it. A writable step
/// is made writable again only if it was before: ReadWritePaths= over the image stays
/// read-only.
pub(super) fn apply(
    os: &impl MountSyscalls,
    root: &OwnedFd,
    prepared: Prepared,
) -> Result<(), Failure> {
    let Prepared {
        plan,
        mut trees,
        tmpfs_owner,
        ..
    } = prepared;
    let mut inaccessible = None;
    // Steps whose mount is in place, with whether it was writable at the end of pass 1.
    let mut placed: Vec<Option<bool>> = vec![None; plan.steps.len()];
    for (index, step) in plan.steps.iter().enumerate() {
        let tree = match step.action {
            Action::Bind { source, .. } => match trees.get_mut(source).and_then(Option::take) {
                Some(tree) => Some(tree),
                // A source that may be missing and is.
                None => continue,
            },
            _ => None,
        };
        let Some(target) = mount_point(os, root, step, tree.as_ref())? else {
            continue;
        };
        match &step.action {
            Action::Bind { read_only, .. } => {
                if let Some(Tree { fd, .. }) = tree {
                    bind(os, step, &fd, &target, *read_only)?;
                }
            }
            Action::Tmpfs { options, .. } => tmpfs(os, step, (options, tmpfs_owner), &target)?,
            Action::Inaccessible => {
                let nodes = match &mut inaccessible {
                    Some(nodes) => nodes,
                    None => inaccessible.insert(
                        Inaccessible::new(os)
                            .map_err(|e| fail(step, "make the inaccessible nodes", e))?,
                    ),
                };
                hide(os, step, nodes, &target)?;
            }
            // The root is a mount already (and a mount over it would hide it from `root`).
            Action::ReadOnly | Action::ReadWrite if step.path == "/" => {}
            // A mount of its own, so that its flags can change alone.
            Action::ReadOnly | Action::ReadWrite => {
                let clone =
                    clone_at(os, target.as_fd(), true).map_err(|e| fail(step, "clone it", e))?;
                attach(os, clone.as_fd(), &target).map_err(|e| fail(step, "mount it", e))?;
            }
        }
        placed[index] = Some(false);
    }
    for (index, step) in plan.steps.iter().enumerate() {
        if placed[index].is_some() && stays_writable(&step.action) {
            let top = resolve(os, root, &step.path).map_err(|e| fail(step, "resolve it", e))?;
            let writable = !os
                .read_only(top.as_fd())
                .map_err(|e| fail(step, "statvfs", e))?;
            placed[index] = Some(writable);
        }
    }
    for (index, step) in plan.steps.iter().enumerate() {
        if placed[index].is_none() || !wants_read_only(&step.action) {
            continue;
        }
        let top = resolve(os, root, &step.path).map_err(|e| fail(step, "resolve it", e))?;
        set_attrs(os, &top, MountAttrFlags::MOUNT_ATTR_RDONLY)
            .map_err(|e| fail(step, "make it read-only", e))?;
        for (below, inner) in plan.steps.iter().enumerate().skip(index + 1) {
            if placed[below] != Some(true)
                || !stays_writable(&inner.action)
                || !is_under(&inner.path, &step.path)
            {
                continue;
            }
            let top = resolve(os, root, &inner.path).map_err(|e| fail(inner, "resolve it", e))?;
            os.mount_clear(
                top.as_fd(),
                AtFlags::empty(),
                MountAttrFlags::MOUNT_ATTR_RDONLY,
            )
            .map_err(|e| fail(inner, "keep it writable", e))?;
        }
    }
    Ok(())
}

/// The mount point of `step`, resolved inside the root, created if missing and the step says
/// so (a directory, unless `tree` is not one); `None` to skip the step.
fn mount_point(
    os: &impl MountSyscalls,
    root: &OwnedFd,
    step: &Step,
    tree: Option<&Tree>,
) -> Result<Option<OwnedFd>, Failure> {
    match resolve(os, root, &step.path) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => match step.missing {
            Missing::Skip => Ok(None),
            Missing::Fail => {
                let what = format!("{} does not exist in the sandbox", step.path);
                Err(fail(step, &what, Errno::NOENT))
            }
            Missing::Create => {
                create(os, root, step, tree.is_none_or(|t| t.dir))?;
                resolve(os, root, &step.path)
                    .map(Some)
                    .map_err(|e| fail(step, "resolve the mount point", e))
            }
        },
        Err(e) => Err(fail(step, "resolve it in the sandbox", e)),
    }
}

/// A read-only bind is read-only from the start, so that no mount point below it is ever
/// created in the host's directory.
fn bind(
    os: &impl MountSyscalls,
    step: &Step,
    tree: &OwnedFd,
    target: &OwnedFd,
    read_only: bool,
) -> Result<(), Failure> {
    // A device node keeps the flags it was made with (it must not be nodev).
    let device = matches!(os.node(tree.as_fd()), Ok(n)
        if matches!(n.kind, FileType::CharacterDevice | FileType::BlockDevice));
    if !device {
        let mut attrs = NOSUID_NODEV;
        if read_only {
            attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
        }
        set_attrs(os, tree, attrs).map_err(|e| fail(step, "set its mount flags", e))?;
    }
    attach(os, tree.as_fd(), target).map_err(|e| fail(step, "mount it", e))
}

/// A tmpfs with `options`, its root owned by `owner` (see `Prepared::owned_by`).
fn tmpfs(
    os: &impl MountSyscalls,
    step: &Step,
    (options, owner): (&str, u32),
    target: &OwnedFd,
) -> Result<(), Failure> {
    let owned = format!("{options},uid={owner},gid={owner}");
    let options = if owner == 0 { options } else { owned.as_str() };
    let mut pairs = Vec::new();
    for option in options.split(',') {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        pairs.push((
            cstring(key, &step.directive)?,
            cstring(value, &step.directive)?,
        ));
    }
    let params: Vec<FsParam<'_>> = pairs.iter().map(|(k, v)| FsParam::String(k, v)).collect();
    let fs = os
        .fs_mount(c"tmpfs", &params, NOSUID_NODEV)
        .map_err(|e| fail(step, "mount a tmpfs", e))?;
    attach(os, fs.as_fd(), target).map_err(|e| fail(step, "mount it", e))
}

fn hide(
    os: &impl MountSyscalls,
    step: &Step,
    nodes: &Inaccessible,
    target: &OwnedFd,
) -> Result<(), Failure> {
    let dir = os
        .node(target.as_fd())
        .map_err(|e| fail(step, "stat it", e))?
        .kind
        == FileType::Directory;
    let node = if dir { &nodes.dir } else { &nodes.file };
    let clone = clone_at(os, node.as_fd(), false).map_err(|e| fail(step, "clone the node", e))?;
    let attrs =
        NOSUID_NODEV | MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    set_attrs(os, &clone, attrs).map_err(|e| fail(step, "make the node read-only", e))?;
    attach(os, clone.as_fd(), target).map_err(|e| fail(step, "mount it", e))
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::{
        BindPath, MountPlan, ProtectHome, SandboxPath, SandboxSpec, TemporaryFileSystem,
    };

    use super::*;
    use crate::sandbox::mounts::sources::prepare;
    use crate::sandbox::syscalls::{Call, Node, RecordingSyscalls};

    fn spec() -> MountPlan {
        let mut spec = SandboxSpec::baseline(61200, 61200, "probe").mounts;
        // Only what each test asks.
        spec.private_tmp = false;
        spec.protect_kernel_tunables = false;
        spec
    }

    fn path(p: &str) -> SandboxPath {
        SandboxPath {
            path: p.into(),
            ignore_missing: false,
        }
    }

    fn root(os: &RecordingSyscalls) -> OwnedFd {
        os.open(c"/tmp", OFlags::PATH).unwrap()
    }

    /// Runs the plan for `spec`; the calls it made after preparing.
    fn run(os: &RecordingSyscalls, spec: &MountPlan) -> Result<Vec<Call>, Failure> {
        let prepared = prepare(os, spec, Vec::new())?;
        let root = root(os);
        let before = os.calls().len();
        apply(os, &root, prepared)?;
        Ok(os.calls()[before..].to_vec())
    }

    /// BindPaths= (or BindReadOnlyPaths=) of the host's /srv/data at /data.
    fn data_bind(read_only: bool) -> BindPath {
        BindPath {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only,
            recursive: true,
            ignore_missing: false,
        }
    }

    fn in_root(path: &str) -> Call {
        Call::Openat2 {
            dir: "/tmp".into(),
            path: path.into(),
            flags: OFlags::PATH,
            resolve: ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        }
    }

    fn moved_onto(from: &str, to: &str) -> Call {
        Call::MoveMount {
            from_dir: from.into(),
            from_path: "".into(),
            to_dir: to.into(),
            to_path: "".into(),
            flags: MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        }
    }

    fn setattr(on: &str, attrs: MountAttrFlags) -> Call {
        Call::MountSetattr {
            dir: on.into(),
            path: "".into(),
            flags: AtFlags::EMPTY_PATH | AT_RECURSIVE,
            attr_set: attrs,
        }
    }

    #[test]
    fn a_read_only_path_becomes_a_mount_of_its_own_then_read_only_with_all_below() {
        let os = RecordingSyscalls::new();
        let mut spec = spec();
        spec.read_only_paths = vec![path("/run/x")];

        let calls = run(&os, &spec).unwrap();

        assert_eq!(calls[0], in_root("/run/x"));
        assert!(matches!(&calls[1], Call::OpenTree { dir, path, flags }
            if dir == "/run/x" && path.is_empty()
                && flags.contains(rustix::mount::OpenTreeFlags::AT_RECURSIVE)));
        assert_eq!(
            calls[2..],
            [
                moved_onto("clone:/run/x", "/run/x"),
                in_root("/run/x"),
                setattr("/run/x", MountAttrFlags::MOUNT_ATTR_RDONLY),
            ]
        );
    }

    #[test]
    fn a_missing_read_only_path_fails_unless_it_may_be_missing() {
        let os = || RecordingSyscalls::new().without_path("/nope");
        let mut strict = spec();
        strict.read_only_paths = vec![path("/nope")];
        let mut lenient = spec();
        lenient.read_only_paths = vec![SandboxPath {
            path: "/nope".into(),
            ignore_missing: true,
        }];

        let failed = run(&os(), &strict);
        let skipped = run(&os(), &lenient).unwrap();

        assert_eq!(
            failed.err(),
            Some(Failure::Setup {
                stage: "ReadOnlyPaths=/nope (/nope does not exist in the sandbox)".into(),
                errno: libc::ENOENT,
            })
        );
        assert_eq!(skipped, [in_root("/nope")]);
    }

    #[test]
    fn an_inaccessible_directory_gets_an_empty_mode_0000_directory_read_only() {
        let os = RecordingSyscalls::new();
        let mut spec = spec();
        spec.inaccessible_paths = vec![path("/srv")];

        let calls = run(&os, &spec).unwrap();

        assert!(calls.contains(&Call::Mkdirat {
            dir: "fs:tmpfs".into(),
            path: "dir".into(),
            mode: 0,
        }));
        let all =
            NOSUID_NODEV | MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        assert_eq!(
            calls[calls.len() - 2..],
            [setattr("clone:dir", all), moved_onto("clone:dir", "/srv")]
        );
    }

    #[test]
    fn an_inaccessible_file_gets_the_empty_file() {
        let file = Node {
            kind: FileType::RegularFile,
            ..Node::directory()
        };
        let os = RecordingSyscalls::new().with_node("/etc/secret", file);
        let mut spec = spec();
        spec.inaccessible_paths = vec![path("/etc/secret")];

        let calls = run(&os, &spec).unwrap();

        assert_eq!(calls.last(), Some(&moved_onto("clone:file", "/etc/secret")));
    }

    #[test]
    fn protect_home_yes_skips_the_home_directories_the_image_lacks() {
        let os = RecordingSyscalls::new()
            .without_path("/home")
            .without_path("/run/user");
        let mut spec = spec();
        spec.protect_home = ProtectHome::Yes;

        let calls = run(&os, &spec).unwrap();

        let moved: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::MoveMount { .. }))
            .collect();
        assert_eq!(moved, [&moved_onto("clone:dir", "/root")]);
    }

    #[test]
    fn a_read_only_bind_is_read_only_from_the_start_and_over_all_below() {
        let os = RecordingSyscalls::new();
        let mut spec = spec();
        spec.bind_paths = vec![data_bind(true)];

        let calls = run(&os, &spec).unwrap();

        assert_eq!(
            calls[1..],
            [
                setattr(
                    "clone:/srv/data",
                    NOSUID_NODEV | MountAttrFlags::MOUNT_ATTR_RDONLY
                ),
                moved_onto("clone:/srv/data", "/data"),
                in_root("/data"),
                setattr("/data", MountAttrFlags::MOUNT_ATTR_RDONLY),
            ]
        );
    }

    #[test]
    fn a_writable_bind_is_mounted_nosuid_nodev_only() {
        let os = RecordingSyscalls::new();
        let mut spec = spec();
        spec.bind_paths = vec![data_bind(false)];

        let calls = run(&os, &spec).unwrap();

        assert!(calls.contains(&setattr("clone:/srv/data", NOSUID_NODEV)));
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::MountSetattr { dir, .. } if dir == "/data"))
        );
    }

    #[test]
    fn a_missing_mount_point_is_created_under_its_resolved_parent() {
        let os = RecordingSyscalls::new()
            .without_path("/scratch")
            .without_path("/scratch/a");
        let mut spec = spec();
        spec.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/scratch/a".into(),
            read_only: false,
            mode: 0o755,
            size: 4096,
        }];

        let calls = run(&os, &spec).unwrap();

        let made: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::Mkdirat { .. }))
            .collect();
        assert_eq!(
            made,
            [
                &Call::Mkdirat {
                    dir: "/".into(),
                    path: "scratch".into(),
                    mode: 0o755,
                },
                &Call::Mkdirat {
                    dir: "/scratch".into(),
                    path: "a".into(),
                    mode: 0o755,
                },
            ]
        );
        assert!(calls.contains(&moved_onto("fs:tmpfs", "/scratch/a")));
    }

    #[test]
    fn a_mount_point_the_read_only_image_cannot_hold_names_the_path() {
        let os = RecordingSyscalls::new()
            .without_path("/usr/scratch")
            .failing(|c| matches!(c, Call::Mkdirat { .. }), Errno::ROFS);
        let mut spec = spec();
        spec.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/usr/scratch".into(),
            read_only: false,
            mode: 0o755,
            size: 4096,
        }];

        let result = run(&os, &spec);

        assert_eq!(
            result.err(),
            Some(Failure::Setup {
                stage: "TemporaryFileSystem=/usr/scratch (create the mount point /usr/scratch)"
                    .into(),
                errno: libc::EROFS,
            })
        );
    }

    #[test]
    fn a_temporary_file_system_is_a_new_tmpfs_moved_onto_its_path_then_read_only() {
        let os = RecordingSyscalls::new();
        let mut spec = spec();
        spec.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/scratch".into(),
            read_only: true,
            mode: 0o700,
            size: 4096,
        }];

        let calls = run(&os, &spec).unwrap();

        assert_eq!(
            calls[1..],
            [
                Call::FsMount {
                    fstype: "tmpfs".into(),
                    params: vec![
                        "mode=0700".into(),
                        "size=4096".into(),
                        "nr_inodes=400k".into()
                    ],
                    attrs: NOSUID_NODEV,
                },
                moved_onto("fs:tmpfs", "/scratch"),
                in_root("/scratch"),
                setattr("/scratch", MountAttrFlags::MOUNT_ATTR_RDONLY),
            ]
        );
    }

    #[test]
    fn in_block_mode_a_temporary_file_system_belongs_to_root_of_the_namespace() {
        let os = RecordingSyscalls::new();
        let mut spec = spec();
        spec.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/scratch".into(),
            read_only: false,
            mode: 0o755,
            size: 4096,
        }];
        let prepared = prepare(&os, &spec, Vec::new()).unwrap().owned_by(524_288);

        apply(&os, &root(&os), prepared).unwrap();

        assert!(os.calls().contains(&Call::FsMount {
            fstype: "tmpfs".into(),
            params: vec![
                "mode=0755".into(),
                "size=4096".into(),
                "nr_inodes=400k".into(),
                "uid=524288".into(),
                "gid=524288".into(),
            ],
            attrs: NOSUID_NODEV,
        }));
    }

    fn read_only_run_with_writable_keep(os: &RecordingSyscalls) -> Vec<Call> {
        let mut spec = spec();
        spec.read_only_paths = vec![path("/run")];
        spec.read_write_paths = vec![path("/run/keep")];
        run(os, &spec).unwrap()
    }

    #[test]
    fn read_write_below_a_read_only_path_is_made_writable_again_after_it() {
        let os = RecordingSyscalls::new();

        let calls = read_only_run_with_writable_keep(&os);

        let read_only = calls
            .iter()
            .position(|c| *c == setattr("/run", MountAttrFlags::MOUNT_ATTR_RDONLY))
            .unwrap();
        assert_eq!(
            calls[read_only + 1..],
            [
                in_root("/run/keep"),
                Call::MountClear {
                    dir: "/run/keep".into(),
                    flags: AtFlags::empty(),
                    attr_clr: MountAttrFlags::MOUNT_ATTR_RDONLY,
                },
            ]
        );
    }

    #[test]
    fn a_read_only_root_is_no_new_mount_only_read_only_with_its_writable_steps_cleared() {
        let os = RecordingSyscalls::new();
        let mut spec = spec();
        spec.read_only_paths = vec![path("/")];
        spec.read_write_paths = vec![path("/tmp")];

        let calls = run(&os, &spec).unwrap();

        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::MoveMount { to_dir, .. } if to_dir == "/")),
            "{calls:#?}"
        );
        let read_only = calls
            .iter()
            .position(|c| *c == setattr("/", MountAttrFlags::MOUNT_ATTR_RDONLY))
            .unwrap();
        assert_eq!(
            calls.last(),
            Some(&Call::MountClear {
                dir: "/tmp".into(),
                flags: AtFlags::empty(),
                attr_clr: MountAttrFlags::MOUNT_ATTR_RDONLY,
            })
        );
        assert!(read_only < calls.len() - 1);
    }

    #[test]
    fn read_write_over_what_was_read_only_stays_read_only() {
        let os = RecordingSyscalls::new().with_read_only("/run/keep");

        let calls = read_only_run_with_writable_keep(&os);

        assert!(
            !calls.iter().any(|c| matches!(c, Call::MountClear { .. })),
            "{calls:#?}"
        );
    }

    #[test]
    fn a_mount_point_below_a_read_only_path_is_created_before_it_turns_read_only() {
        let os = RecordingSyscalls::new().without_path("/run/app");
        let mut spec = spec();
        spec.read_only_paths = vec![path("/run")];
        spec.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/run/app".into(),
            read_only: false,
            mode: 0o755,
            size: 4096,
        }];

        let calls = run(&os, &spec).unwrap();

        let made = calls
            .iter()
            .position(|c| matches!(c, Call::Mkdirat { path, .. } if path == "app"))
            .unwrap();
        let read_only = calls
            .iter()
            .position(|c| *c == setattr("/run", MountAttrFlags::MOUNT_ATTR_RDONLY))
            .unwrap();
        assert!(made < read_only);
        assert!(calls.contains(&Call::MountClear {
            dir: "/run/app".into(),
            flags: AtFlags::empty(),
            attr_clr: MountAttrFlags::MOUNT_ATTR_RDONLY,
        }));
    }
}
