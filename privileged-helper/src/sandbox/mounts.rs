//! Building the sandbox's root file system.
//!
//! The image is hostile: every path in it is reached through the image root fd with
//! `AT_SYMLINK_NOFOLLOW`, and only its top-level entries are used. Directories and files are
//! cloned as detached mount trees (`open_tree`) while still in the host mount namespace
//! (a clone source must belong to the caller's namespace), then attached read-only, nosuid,
//! nodev under a fresh tmpfs; symlinks are recreated verbatim, never followed. `/proc`, `/dev`,
//! `/tmp`, `/run` and `/sys` always come from us, whatever the image has there.
//!
//! `/dev` is a nodev tmpfs: the bound host nodes keep their own (dev) mount flags, and nothing
//! else in it can act as a device. `/sys` is an empty read-only directory for now: no sysfs is
//! mounted in the sandbox.
//!
//! Every mount-namespace change goes through [`MountSyscalls`] (`LinuxSyscalls` in init), so
//! the plan is unit-tested below with the recording fake; reading the image is direct.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::mount::{
    MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use super::Failure;
use super::syscalls::{AT_RECURSIVE, FsParam, MountSyscalls};

/// Names we provide ourselves; the image's entries of that name are ignored.
const RESERVED: [&[u8]; 5] = [b"proc", b"dev", b"tmp", b"run", b"sys"];

/// More top-level entries than any real image has; bounds the mounts a hostile image causes.
const MAX_ENTRIES: usize = 1024;

/// Size limits of our tmpfs mounts, as systemd sets them for private mounts. Without them each
/// tmpfs may grow to half the host's RAM. The root and `/dev` hold only mount points, symlinks
/// and device nodes.
const ROOT_TMPFS: &CStr = c"mode=0755,size=4m,nr_inodes=4k";
const DEV_TMPFS: &CStr = c"mode=0755,size=4m,nr_inodes=64k";
const SHM_TMPFS: &CStr = c"mode=1777,size=10%,nr_inodes=400k";
const TMP_TMPFS: &CStr = c"mode=1777,size=10%,nr_inodes=400k";
const RUN_TMPFS: &CStr = c"mode=0755,size=10%,nr_inodes=400k";

/// `/proc` entries that stay read-only, each bound over itself (as OCI's readonlyPaths).
const PROC_READ_ONLY: [&CStr; 5] = [
    c"proc/sys",
    c"proc/sysrq-trigger",
    c"proc/bus",
    c"proc/fs",
    c"proc/irq",
];
/// `/proc` files that would leak kernel or other tenants' state; `/dev/null` is bound over each
/// (as OCI's maskedPaths).
const PROC_MASKED_FILES: [&CStr; 7] = [
    c"proc/kcore",
    c"proc/keys",
    c"proc/latency_stats",
    c"proc/timer_list",
    c"proc/timer_stats",
    c"proc/sched_debug",
    c"proc/interrupts",
];
/// `/proc` directories masked with an empty read-only tmpfs.
const PROC_MASKED_DIRS: [&CStr; 3] = [c"proc/acpi", c"proc/asound", c"proc/scsi"];

/// Host device nodes bound into the sandbox's `/dev` (skipped when the host lacks one): name,
/// host path, mount point relative to the new root.
const DEVICES: [(&CStr, &CStr, &CStr); 6] = [
    (c"null", c"/dev/null", c"dev/null"),
    (c"zero", c"/dev/zero", c"dev/zero"),
    (c"full", c"/dev/full", c"dev/full"),
    (c"random", c"/dev/random", c"dev/random"),
    (c"urandom", c"/dev/urandom", c"dev/urandom"),
    (c"tty", c"/dev/tty", c"dev/tty"),
];

/// The empty bottom layer of the image view without extensions: overlayfs wants two layers
/// when none is writable.
const EMPTY_LAYER_TMPFS: [(&CStr, &CStr); 2] = [(c"size", c"4k"), (c"mode", c"0555")];

/// Overlayfs options of the image view besides its layers. Redirects and metacopy are
/// explicitly off whatever the module defaults, so no xattr in the image steers a lookup (only
/// root can set `trusted.overlay.*` anyway; `userxattr`, which would honour `user.overlay.*`
/// set by an image's owner, stays off).
const VIEW_OPTIONS: [(&CStr, &CStr); 3] = [
    (c"source", c"berth-image"),
    (c"redirect_dir", c"nofollow"),
    (c"metacopy", c"off"),
];

/// A read-only overlay presenting the image root with no host path in its mountinfo, as a
/// detached mount, with the `extensions` (lowest first) laid over it: the last one's files win,
/// as overlay order says. `None` when this kernel cannot build one and there are no extensions
/// (see the module comment); the caller then clones from `root` itself. Extensions cannot do
/// without the overlay, so then it fails. Must run in the mount namespace `root` lives in.
pub(super) fn image_view(
    os: &impl MountSyscalls,
    root: &OwnedFd,
    extensions: &[OwnedFd],
) -> Result<Option<OwnedFd>, Failure> {
    let clone = |fd: &OwnedFd, stage: &str| {
        os.open_tree(
            fd.as_fd(),
            c"",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| Failure::setup(stage, e))
    };
    let image = clone(root, "clone the image root")?;
    // Overlayfs takes its lower layers top first.
    let mut layers = Vec::with_capacity(extensions.len() + 2);
    for (index, extension) in extensions.iter().enumerate().rev() {
        layers.push(clone(extension, &format!("clone extension {}", index + 1))?);
    }
    layers.push(image);
    if extensions.is_empty() {
        // Overlayfs wants two layers when none is writable.
        let empty: Vec<FsParam<'_>> = EMPTY_LAYER_TMPFS
            .iter()
            .map(|(k, v)| FsParam::String(k, v))
            .collect();
        let bottom = os
            .fs_mount(c"tmpfs", &empty, MountAttrFlags::MOUNT_ATTR_RDONLY)
            .map_err(at("mount the image view's empty layer"))?;
        layers.push(bottom);
    }
    let mut params: Vec<FsParam<'_>> = layers
        .iter()
        .map(|layer| FsParam::Fd(c"lowerdir+", layer.as_fd()))
        .collect();
    params.extend(VIEW_OPTIONS.iter().map(|(k, v)| FsParam::String(k, v)));
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV;
    match os.fs_mount(c"overlay", &params, attrs) {
        Ok(view) => Ok(Some(view)),
        // No overlayfs (ENODEV), or one that takes no layers by descriptor or from detached
        // mounts, or an image already two file-system stacks deep (EINVAL).
        Err(rustix::io::Errno::NODEV | rustix::io::Errno::INVAL) if extensions.is_empty() => {
            Ok(None)
        }
        Err(e) if extensions.is_empty() => Err(Failure::setup("mount the image view", e)),
        Err(e) => Err(Failure::setup(
            format!(
                "mount the image view with {} extension(s) (read-only overlayfs)",
                extensions.len()
            ),
            e,
        )),
    }
}

/// One top-level entry of the image, ready to be placed in the new root.
pub(super) struct Entry {
    name: CString,
    kind: Kind,
}

enum Kind {
    /// A detached clone of a directory or file (with submounts).
    Tree {
        fd: OwnedFd,
        dir: bool,
    },
    Symlink(CString),
}

fn display(name: &CStr) -> String {
    format!("/{}", name.to_string_lossy())
}

/// Clones the top-level entries of the image root `root` (or its [`image_view`]). Must run in
/// the mount namespace `root` lives in (a detached view counts as ours).
pub(super) fn clone_image(os: &impl MountSyscalls, root: &OwnedFd) -> Result<Vec<Entry>, Failure> {
    let dir = rustix::fs::openat(
        root,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Failure::setup("open the image root", e))?;
    let mut dir =
        rustix::fs::Dir::new(dir).map_err(|e| Failure::setup("read the image root", e))?;
    let mut entries = Vec::new();
    while let Some(item) = dir.read() {
        let item = item.map_err(|e| Failure::setup("read the image root", e))?;
        let name = item.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." || RESERVED.contains(&bytes) {
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            let stage = format!("read the image root (more than {MAX_ENTRIES} entries)");
            return Err(Failure::setup(stage, rustix::io::Errno::TOOBIG));
        }
        let stat = rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Failure::setup(format!("stat {} in image", display(name)), e))?;
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => clone_tree(os, root, name, true)?,
            FileType::RegularFile => clone_tree(os, root, name, false)?,
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(root, name, Vec::new()).map_err(|e| {
                    Failure::setup(format!("read symlink {} in image", display(name)), e)
                })?;
                Kind::Symlink(target)
            }
            // Devices, fifos and sockets have no business at the top of an image.
            _ => continue,
        };
        entries.push(Entry {
            name: name.to_owned(),
            kind,
        });
    }
    Ok(entries)
}

fn clone_tree(
    os: &impl MountSyscalls,
    root: &OwnedFd,
    name: &CStr,
    dir: bool,
) -> Result<Kind, Failure> {
    let stage = || format!("bind {} from image", display(name));
    let fd = os
        .open_tree(
            root.as_fd(),
            name,
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE
                | OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Failure::setup(stage(), e))?;
    // The entry may have been swapped since statat: trust only what we cloned.
    let stat = rustix::fs::fstat(&fd).map_err(|e| Failure::setup(stage(), e))?;
    let expected = if dir {
        FileType::Directory
    } else {
        FileType::RegularFile
    };
    if FileType::from_raw_mode(stat.st_mode) != expected {
        return Err(Failure::setup(stage(), rustix::io::Errno::STALE));
    }
    Ok(Kind::Tree { fd, dir })
}

fn at<'a>(stage: &'a str) -> impl Fn(rustix::io::Errno) -> Failure + 'a {
    move |e| Failure::setup(stage, e)
}

/// Builds the new root from `entries` and pivots into it. Must run right after
/// `unshare(CLONE_NEWNS)`. Leaves the cwd at the new `/`.
pub(super) fn build_root(os: &impl MountSyscalls, entries: Vec<Entry>) -> Result<(), Failure> {
    os.mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(at("make / private"))?;
    // Scratch place for the new root, only visible in this mount namespace (as bubblewrap).
    tmpfs(
        os,
        c"/tmp",
        MountFlags::NOSUID | MountFlags::NODEV,
        ROOT_TMPFS,
        "mount the root tmpfs",
    )?;
    let newroot = os
        .open(
            c"/tmp",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        )
        .map_err(at("open the root tmpfs"))?;
    os.fchdir(newroot.as_fd())
        .map_err(at("enter the root tmpfs"))?;

    for entry in entries {
        place(os, &newroot, entry)?;
    }
    for name in [c"proc", c"dev", c"tmp", c"run", c"sys"] {
        mkdir(os, &newroot, name, 0o755)?;
    }
    mount_proc(os)?;
    mount_dev(os, &newroot)?;
    // Needs our /dev/null, so after /dev.
    mask_proc(os)?;
    tmpfs(
        os,
        c"tmp",
        MountFlags::NOSUID | MountFlags::NODEV,
        TMP_TMPFS,
        "mount /tmp",
    )?;
    tmpfs(
        os,
        c"run",
        MountFlags::NOSUID | MountFlags::NODEV,
        RUN_TMPFS,
        "mount /run",
    )?;
    drop(newroot);

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
    // removes the old root and leaves the new one.
    os.pivot_root(c".", c".").map_err(at("pivot_root"))?;
    os.umount2(c".", UnmountFlags::DETACH)
        .map_err(at("detach the old root"))?;
    os.chdir(c"/").map_err(at("chdir to the new root"))?;
    os.mount_setattr(
        None,
        c"/",
        AtFlags::empty(),
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )
    .map_err(at("make / read-only"))?;
    Ok(())
}

fn place(os: &impl MountSyscalls, newroot: &OwnedFd, entry: Entry) -> Result<(), Failure> {
    let name = entry.name.as_c_str();
    let stage = format!("bind {} from image", display(name));
    match entry.kind {
        Kind::Symlink(target) => os
            .symlinkat(target.as_c_str(), newroot.as_fd(), name)
            .map_err(|e| Failure::setup(format!("create symlink {}", display(name)), e)),
        Kind::Tree { fd, dir } => {
            if dir {
                os.mkdirat(newroot.as_fd(), name, Mode::from_raw_mode(0o755))
                    .map_err(at(&stage))?;
            } else {
                os.openat(
                    newroot.as_fd(),
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(at(&stage))?;
            }
            os.move_mount(
                fd.as_fd(),
                c"",
                newroot.as_fd(),
                name,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(at(&stage))?;
            let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV;
            os.mount_setattr(
                Some(newroot.as_fd()),
                name,
                AT_RECURSIVE | AtFlags::SYMLINK_NOFOLLOW,
                attrs,
            )
            .map_err(|e| Failure::setup(format!("make {} read-only", display(name)), e))
        }
    }
}

fn mkdir(os: &impl MountSyscalls, dir: &OwnedFd, name: &CStr, mode: u32) -> Result<(), Failure> {
    os.mkdirat(dir.as_fd(), name, Mode::from_raw_mode(mode))
        .map_err(|e| Failure::setup(format!("create {}", name.to_string_lossy()), e))
}

/// Mounts a tmpfs at `target` (relative to the cwd unless absolute).
fn tmpfs(
    os: &impl MountSyscalls,
    target: &CStr,
    flags: MountFlags,
    data: &CStr,
    stage: &str,
) -> Result<(), Failure> {
    os.mount(c"tmpfs", target, c"tmpfs", flags, Some(data))
        .map_err(at(stage))
}

fn mount_proc(os: &impl MountSyscalls) -> Result<(), Failure> {
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    os.mount(c"proc", c"proc", c"proc", flags, None)
        .map_err(at("mount /proc"))?;
    for path in PROC_READ_ONLY {
        let stage = format!("make /{} read-only", path.to_string_lossy());
        match os.mount_bind(path, path) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Failure::setup(stage, e)),
        }
        let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        os.mount_setattr(None, path, AtFlags::SYMLINK_NOFOLLOW, attrs)
            .map_err(|e| Failure::setup(stage, e))?;
    }
    Ok(())
}

/// Hides the `/proc` entries of [`PROC_MASKED_FILES`] (under the sandbox's `/dev/null`, itself
/// the host's null device) and [`PROC_MASKED_DIRS`]. Entries this kernel lacks are skipped; any
/// other failure fails the launch, as an unmasked entry would be a silent leak.
fn mask_proc(os: &impl MountSyscalls) -> Result<(), Failure> {
    for path in PROC_MASKED_FILES {
        match os.mount_bind(c"dev/null", path) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(Failure::setup(
                    format!("mask /{}", path.to_string_lossy()),
                    e,
                ));
            }
        }
    }
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    for path in PROC_MASKED_DIRS {
        match os.mount(c"tmpfs", path, c"tmpfs", flags, Some(c"mode=0555,size=4k")) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(Failure::setup(
                    format!("mask /{}", path.to_string_lossy()),
                    e,
                ));
            }
        }
    }
    Ok(())
}

fn mount_dev(os: &impl MountSyscalls, newroot: &OwnedFd) -> Result<(), Failure> {
    tmpfs(
        os,
        c"dev",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        DEV_TMPFS,
        "mount /dev",
    )?;
    let dev = os
        .openat(
            newroot.as_fd(),
            c"dev",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(at("open /dev"))?;
    for (name, host, target) in DEVICES {
        let stage = format!("bind {}", host.to_string_lossy());
        // The host's /dev is trusted, but bind only what really is a character device.
        match os.file_type(host) {
            Ok(FileType::CharacterDevice) => {}
            _ => continue,
        }
        os.openat(
            dev.as_fd(),
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(at(&stage))?;
        os.mount_bind(host, target).map_err(at(&stage))?;
    }
    mkdir(os, &dev, c"pts", 0o755)?;
    os.mount(
        c"devpts",
        c"dev/pts",
        c"devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(at("mount /dev/pts"))?;
    mkdir(os, &dev, c"shm", 0o755)?;
    tmpfs(
        os,
        c"dev/shm",
        MountFlags::NOSUID | MountFlags::NODEV,
        SHM_TMPFS,
        "mount /dev/shm",
    )?;
    for (name, target) in [
        (c"ptmx", c"pts/ptmx"),
        (c"fd", c"/proc/self/fd"),
        (c"stdin", c"/proc/self/fd/0"),
        (c"stdout", c"/proc/self/fd/1"),
        (c"stderr", c"/proc/self/fd/2"),
    ] {
        os.symlinkat(target, dev.as_fd(), name)
            .map_err(|e| Failure::setup(format!("create /dev/{}", name.to_string_lossy()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use rustix::io::Errno;

    use super::*;
    use crate::sandbox::syscalls::{Call, RecordingSyscalls};

    fn build(os: &RecordingSyscalls, entries: Vec<Entry>) -> Vec<Call> {
        build_root(os, entries).unwrap();
        os.calls()
    }

    fn mounts_at(calls: &[Call], at: &str) -> Vec<Call> {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Mount { target, .. } if target == at))
            .cloned()
            .collect()
    }

    fn tmpfs_call(target: &str, flags: MountFlags, data: &str) -> Call {
        Call::Mount {
            source: "tmpfs".into(),
            target: target.into(),
            fstype: "tmpfs".into(),
            flags,
            data: Some(data.into()),
        }
    }

    fn index_of(calls: &[Call], call: &Call) -> usize {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("{call:?} not in {calls:#?}"))
    }

    /// A temporary image root with the given top-level directories, and its fd.
    fn image(dirs: &[&str]) -> (tempfile::TempDir, OwnedFd) {
        let tmp = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        let fd = rustix::fs::open(
            tmp.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        (tmp, fd)
    }

    #[test]
    fn tmp_is_a_size_limited_nosuid_nodev_tmpfs_with_mode_1777() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        assert_eq!(
            mounts_at(&calls, "tmp"),
            [tmpfs_call(
                "tmp",
                MountFlags::NOSUID | MountFlags::NODEV,
                "mode=1777,size=10%,nr_inodes=400k"
            )]
        );
    }

    #[test]
    fn run_is_a_size_limited_nosuid_nodev_tmpfs_with_mode_0755() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        assert_eq!(
            mounts_at(&calls, "run"),
            [tmpfs_call(
                "run",
                MountFlags::NOSUID | MountFlags::NODEV,
                "mode=0755,size=10%,nr_inodes=400k"
            )]
        );
    }

    #[test]
    fn dev_shm_is_a_size_limited_nosuid_nodev_tmpfs_with_mode_1777() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        assert_eq!(
            mounts_at(&calls, "dev/shm"),
            [tmpfs_call(
                "dev/shm",
                MountFlags::NOSUID | MountFlags::NODEV,
                "mode=1777,size=10%,nr_inodes=400k"
            )]
        );
    }

    fn bind(source: &str, target: &str) -> Call {
        Call::MountBind {
            source: source.into(),
            target: target.into(),
        }
    }

    #[test]
    fn kernel_state_files_of_proc_are_masked_with_the_sandbox_dev_null() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        let null_bound = index_of(&calls, &bind("/dev/null", "dev/null"));
        for file in [
            "kcore",
            "keys",
            "timer_list",
            "sched_debug",
            "latency_stats",
        ] {
            let masked = index_of(&calls, &bind("dev/null", &format!("proc/{file}")));
            assert!(
                masked > null_bound,
                "/proc/{file} masked before /dev/null exists"
            );
        }
    }

    #[test]
    fn proc_directories_are_masked_with_an_empty_read_only_tmpfs() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        let flags =
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        for dir in ["acpi", "asound", "scsi"] {
            let target = format!("proc/{dir}");
            assert_eq!(
                mounts_at(&calls, &target),
                [tmpfs_call(&target, flags, "mode=0555,size=4k")]
            );
        }
    }

    #[test]
    fn proc_bus_fs_and_irq_are_read_only() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        for path in ["proc/bus", "proc/fs", "proc/irq"] {
            index_of(&calls, &bind(path, path));
        }
    }

    #[test]
    fn a_proc_entry_this_kernel_lacks_is_skipped() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::MountBind { target, .. } if target == "proc/timer_stats"),
            Errno::NOENT,
        );

        let built = build_root(&os, Vec::new());

        assert!(built.is_ok(), "{built:?}");
    }

    #[test]
    fn a_mask_that_fails_otherwise_fails_the_launch() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::MountBind { target, .. } if target == "proc/kcore"),
            Errno::PERM,
        );

        let built = build_root(&os, Vec::new());

        assert!(
            matches!(&built, Err(Failure::Setup { stage, .. }) if stage == "mask /proc/kcore"),
            "{built:?}"
        );
    }

    #[test]
    fn proc_is_mounted_nosuid_nodev_noexec() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        assert_eq!(
            mounts_at(&calls, "proc"),
            [Call::Mount {
                source: "proc".into(),
                target: "proc".into(),
                fstype: "proc".into(),
                flags: MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                data: None,
            }]
        );
    }

    #[test]
    fn proc_sys_is_rebound_read_only_after_proc_is_mounted() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        let proc = index_of(&calls, &mounts_at(&calls, "proc")[0]);
        let bind = index_of(
            &calls,
            &Call::MountBind {
                source: "proc/sys".into(),
                target: "proc/sys".into(),
            },
        );
        assert!(proc < bind);
        assert_eq!(
            calls[bind + 1],
            Call::MountSetattr {
                dir: ".".into(),
                path: "proc/sys".into(),
                flags: AtFlags::SYMLINK_NOFOLLOW,
                attr_set: MountAttrFlags::MOUNT_ATTR_RDONLY
                    | MountAttrFlags::MOUNT_ATTR_NOSUID
                    | MountAttrFlags::MOUNT_ATTR_NODEV
                    | MountAttrFlags::MOUNT_ATTR_NOEXEC,
            }
        );
    }

    #[test]
    fn proc_entry_missing_from_the_kernel_is_not_made_read_only() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::MountBind { source, .. } if source == "proc/sysrq-trigger"),
            Errno::NOENT,
        );

        let calls = build(&os, Vec::new());

        assert!(
            !calls.iter().any(
                |c| matches!(c, Call::MountSetattr { path, .. } if path == "proc/sysrq-trigger")
            )
        );
    }

    #[test]
    fn dev_is_a_small_nosuid_nodev_noexec_tmpfs_with_mode_0755() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        assert_eq!(
            mounts_at(&calls, "dev"),
            [tmpfs_call(
                "dev",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                "mode=0755,size=4m,nr_inodes=64k"
            )]
        );
    }

    #[test]
    fn dev_gets_the_six_host_device_nodes_bound_onto_new_files() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        for name in ["null", "zero", "full", "random", "urandom", "tty"] {
            let bind = index_of(
                &calls,
                &Call::MountBind {
                    source: format!("/dev/{name}"),
                    target: format!("dev/{name}"),
                },
            );
            assert_eq!(
                calls[bind - 1],
                Call::Openat {
                    dir: "/tmp/dev".into(),
                    path: name.into(),
                    flags: OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    mode: 0o666,
                }
            );
        }
        let binds = calls
            .iter()
            .filter(|c| matches!(c, Call::MountBind { target, .. } if target.starts_with("dev/")))
            .count();
        assert_eq!(binds, 6);
    }

    #[test]
    fn dev_skips_a_device_node_the_host_lacks() {
        let os = RecordingSyscalls::new().without_host_file("/dev/tty");

        let calls = build(&os, Vec::new());

        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::MountBind { source, .. } if source == "/dev/tty"))
        );
    }

    #[test]
    fn dev_pts_is_a_new_devpts_instance() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        assert_eq!(
            mounts_at(&calls, "dev/pts"),
            [Call::Mount {
                source: "devpts".into(),
                target: "dev/pts".into(),
                fstype: "devpts".into(),
                flags: MountFlags::NOSUID | MountFlags::NOEXEC,
                data: Some("newinstance,ptmxmode=0666,mode=0620".into()),
            }]
        );
    }

    #[test]
    fn root_ends_read_only_after_pivot_root() {
        let os = RecordingSyscalls::new();

        let calls = build(&os, Vec::new());

        assert_eq!(
            calls[calls.len() - 4..],
            [
                Call::PivotRoot {
                    new_root: ".".into(),
                    put_old: ".".into(),
                },
                Call::Umount2 {
                    target: ".".into(),
                    flags: UnmountFlags::DETACH,
                },
                Call::Chdir { path: "/".into() },
                Call::MountSetattr {
                    dir: ".".into(),
                    path: "/".into(),
                    flags: AtFlags::empty(),
                    attr_set: MountAttrFlags::MOUNT_ATTR_RDONLY,
                },
            ]
        );
    }

    #[test]
    fn failing_proc_mount_is_reported_with_its_stage() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::Mount { fstype, .. } if fstype == "proc"),
            Errno::PERM,
        );

        let result = build_root(&os, Vec::new());

        assert_eq!(
            result,
            Err(Failure::Setup {
                stage: "mount /proc".into(),
                errno: libc::EPERM,
            })
        );
    }

    #[test]
    fn setup_stops_at_the_first_failing_call() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::Mount { target, .. } if target == "dev"),
            Errno::NOMEM,
        );

        let _ = build_root(&os, Vec::new());

        let calls = os.calls();
        assert_eq!(calls.last(), mounts_at(&calls, "dev").first());
    }

    #[test]
    fn reserved_image_names_are_never_mount_sources() {
        let os = RecordingSyscalls::new();
        let (_tmp, root) = image(&["proc", "dev", "tmp", "run", "sys", "usr"]);

        let entries = clone_image(&os, &root).unwrap();
        let calls = build(&os, entries);

        // Image content becomes a mount only by open_tree + move_mount.
        let sources: Vec<&str> = calls
            .iter()
            .filter_map(|c| match c {
                Call::OpenTree { path, .. } => Some(path.as_str()),
                Call::MoveMount { from_dir, .. } => Some(from_dir.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sources, ["usr", "image:usr"]);
    }

    #[test]
    fn image_directory_is_attached_read_only_nosuid_nodev() {
        let os = RecordingSyscalls::new();
        let (_tmp, root) = image(&["usr"]);

        let entries = clone_image(&os, &root).unwrap();
        let calls = build(&os, entries);

        let mkdir = Call::Mkdirat {
            dir: "/tmp".into(),
            path: "usr".into(),
            mode: 0o755,
        };
        let at = index_of(&calls, &mkdir);
        assert_eq!(
            calls[at..at + 3],
            [
                mkdir,
                Call::MoveMount {
                    from_dir: "image:usr".into(),
                    from_path: "".into(),
                    to_dir: "/tmp".into(),
                    to_path: "usr".into(),
                    flags: MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
                },
                Call::MountSetattr {
                    dir: "/tmp".into(),
                    path: "usr".into(),
                    flags: AT_RECURSIVE | AtFlags::SYMLINK_NOFOLLOW,
                    attr_set: MountAttrFlags::MOUNT_ATTR_RDONLY
                        | MountAttrFlags::MOUNT_ATTR_NOSUID
                        | MountAttrFlags::MOUNT_ATTR_NODEV,
                },
            ]
        );
    }

    #[test]
    fn image_file_is_attached_onto_a_new_empty_file() {
        let os = RecordingSyscalls::new();
        let (tmp, root) = image(&[]);
        std::fs::write(tmp.path().join("init"), b"#!/bin/sh\n").unwrap();

        let entries = clone_image(&os, &root).unwrap();
        let calls = build(&os, entries);

        let create = Call::Openat {
            dir: "/tmp".into(),
            path: "init".into(),
            flags: OFlags::CREATE
                | OFlags::EXCL
                | OFlags::WRONLY
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC,
            mode: 0o644,
        };
        let at = index_of(&calls, &create);
        assert!(
            matches!(&calls[at + 1], Call::MoveMount { from_dir, to_path, .. }
                if from_dir == "image:init" && to_path == "init")
        );
    }

    #[test]
    fn image_symlink_is_recreated_verbatim_not_cloned() {
        let os = RecordingSyscalls::new();
        let (tmp, root) = image(&[]);
        symlink("/etc/shadow", tmp.path().join("bin")).unwrap();

        let entries = clone_image(&os, &root).unwrap();
        let calls = build(&os, entries);

        assert!(!calls.iter().any(|c| matches!(c, Call::OpenTree { .. })));
        index_of(
            &calls,
            &Call::Symlinkat {
                target: "/etc/shadow".into(),
                dir: "/tmp".into(),
                path: "bin".into(),
            },
        );
    }

    #[test]
    fn image_view_is_an_overlay_of_a_detached_clone_over_an_empty_tmpfs() {
        let os = RecordingSyscalls::new();
        let (_tmp, root) = image(&["usr"]);

        let view = image_view(&os, &root, &[]).unwrap();

        assert!(view.is_some());
        let calls = os.calls();
        assert!(
            matches!(&calls[0], Call::OpenTree { path, flags, .. } if path.is_empty()
                && *flags == OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_EMPTY_PATH),
            "{calls:#?}"
        );
        assert_eq!(
            calls[1..],
            [
                Call::FsMount {
                    fstype: "tmpfs".into(),
                    params: vec!["size=4k".into(), "mode=0555".into()],
                    attrs: MountAttrFlags::MOUNT_ATTR_RDONLY,
                },
                Call::FsMount {
                    fstype: "overlay".into(),
                    params: vec![
                        format!(
                            "lowerdir+=clone:fd {}",
                            std::os::fd::AsRawFd::as_raw_fd(&root)
                        ),
                        "lowerdir+=fs:tmpfs".into(),
                        "source=berth-image".into(),
                        "redirect_dir=nofollow".into(),
                        "metacopy=off".into(),
                    ],
                    attrs: MountAttrFlags::MOUNT_ATTR_RDONLY
                        | MountAttrFlags::MOUNT_ATTR_NOSUID
                        | MountAttrFlags::MOUNT_ATTR_NODEV,
                },
            ]
        );
    }

    #[test]
    fn extensions_are_cloned_and_laid_over_the_image_last_one_on_top() {
        let os = RecordingSyscalls::new();
        let (_tmp, root) = image(&["usr"]);
        let (_a, first) = image(&["usr"]);
        let (_b, second) = image(&["opt"]);
        let fd = |f: &OwnedFd| std::os::fd::AsRawFd::as_raw_fd(f);

        let view = image_view(&os, &root, &[first, second]);

        assert!(matches!(view, Ok(Some(_))), "{view:?}");
        let calls = os.calls();
        let overlay = calls
            .iter()
            .find_map(|c| match c {
                Call::FsMount {
                    fstype,
                    params,
                    attrs,
                } if fstype == "overlay" => Some((params.clone(), *attrs)),
                _ => None,
            })
            .expect("an overlay");
        // No empty tmpfs layer: the image and an extension are two layers already.
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::FsMount { fstype, .. } if fstype == "tmpfs")),
            "{calls:#?}"
        );
        let lower: Vec<&str> = overlay
            .0
            .iter()
            .filter_map(|p| p.strip_prefix("lowerdir+="))
            .collect();
        let clones = calls
            .iter()
            .filter(|c| matches!(c, Call::OpenTree { path, .. } if path.is_empty()))
            .count();
        assert_eq!(clones, 3);
        assert_eq!(lower.len(), 3);
        assert!(
            lower[2].ends_with(&format!("fd {}", fd(&root))),
            "{lower:?}"
        );
        assert_eq!(
            overlay.1,
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
        );
        assert!(overlay.0.contains(&"redirect_dir=nofollow".to_string()));
    }

    #[test]
    fn the_top_extension_is_the_first_lower_layer() {
        let os = RecordingSyscalls::new();
        let (_tmp, root) = image(&["usr"]);
        let (_a, first) = image(&["usr"]);
        let (_b, second) = image(&["opt"]);
        let second_fd = std::os::fd::AsRawFd::as_raw_fd(&second);
        let first_fd = std::os::fd::AsRawFd::as_raw_fd(&first);

        let _ = image_view(&os, &root, &[first, second]).unwrap();

        let params = os
            .calls()
            .into_iter()
            .find_map(|c| match c {
                Call::FsMount { fstype, params, .. } if fstype == "overlay" => Some(params),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            params[..2],
            [
                format!("lowerdir+=clone:fd {second_fd}"),
                format!("lowerdir+=clone:fd {first_fd}"),
            ]
        );
    }

    #[test]
    fn extensions_on_a_kernel_that_refuses_the_view_fail_the_launch() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::FsMount { fstype, .. } if fstype == "overlay"),
            Errno::INVAL,
        );
        let (_tmp, root) = image(&["usr"]);
        let (_a, ext) = image(&["usr"]);

        let view = image_view(&os, &root, &[ext]);

        assert!(
            matches!(&view, Err(Failure::Setup { stage, errno: libc::EINVAL })
                if stage.contains("1 extension")),
            "{view:?}"
        );
    }

    #[test]
    fn a_failing_extension_clone_names_the_extension() {
        let (_tmp, root) = image(&["usr"]);
        let (_a, ext) = image(&["usr"]);
        let ext_fd = std::os::fd::AsRawFd::as_raw_fd(&ext);
        let os = RecordingSyscalls::new().failing(
            move |c| matches!(c, Call::OpenTree { dir, .. } if *dir == format!("fd {ext_fd}")),
            Errno::PERM,
        );

        let view = image_view(&os, &root, &[ext]);

        assert!(
            matches!(&view, Err(Failure::Setup { stage, .. }) if stage == "clone extension 1"),
            "{view:?}"
        );
    }

    #[test]
    fn image_entries_are_cloned_from_the_view() {
        let os = RecordingSyscalls::new();
        let (_tmp, root) = image(&["usr"]);
        let view = image_view(&os, &root, &[]).unwrap().unwrap();

        let entries = clone_image(&os, &view).unwrap();

        assert_eq!(entries.len(), 1);
        assert!(
            os.calls()
                .iter()
                .any(|c| matches!(c, Call::OpenTree { dir, path, .. }
                if dir == "fs:overlay" && path == "usr")),
            "{:#?}",
            os.calls()
        );
    }

    #[test]
    fn a_kernel_that_refuses_the_view_leaves_the_image_cloned_directly() {
        for errno in [Errno::INVAL, Errno::NODEV] {
            let os = RecordingSyscalls::new().failing(
                |c| matches!(c, Call::FsMount { fstype, .. } if fstype == "overlay"),
                errno,
            );
            let (_tmp, root) = image(&["usr"]);

            let view = image_view(&os, &root, &[]);

            assert!(matches!(view, Ok(None)), "{errno:?}: {view:?}");
        }
    }

    #[test]
    fn any_other_failure_of_the_view_fails_the_launch() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::FsMount { fstype, .. } if fstype == "overlay"),
            Errno::NOMEM,
        );
        let (_tmp, root) = image(&["usr"]);

        let view = image_view(&os, &root, &[]);

        assert_eq!(
            view.err(),
            Some(Failure::Setup {
                stage: "mount the image view".into(),
                errno: libc::ENOMEM,
            })
        );
    }

    #[test]
    fn failing_clone_names_the_image_entry() {
        let os =
            RecordingSyscalls::new().failing(|c| matches!(c, Call::OpenTree { .. }), Errno::PERM);
        let (_tmp, root) = image(&["usr"]);

        let result = clone_image(&os, &root);

        assert!(
            matches!(result, Err(Failure::Setup { ref stage, errno: libc::EPERM })
                if stage == "bind /usr from image")
        );
    }
}
