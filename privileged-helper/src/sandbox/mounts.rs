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

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::mount::{
    MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use super::Failure;
use super::sys;

/// Names we provide ourselves; the image's entries of that name are ignored.
const RESERVED: [&[u8]; 5] = [b"proc", b"dev", b"tmp", b"run", b"sys"];

/// More top-level entries than any real image has; bounds the mounts a hostile image causes.
const MAX_ENTRIES: usize = 1024;

/// Host device nodes bound into the sandbox's `/dev` (skipped when the host lacks one).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

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

/// Clones the image's top-level entries. Must run in the mount namespace `root` lives in.
pub(super) fn clone_image(root: &OwnedFd) -> Result<Vec<Entry>, Failure> {
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
            FileType::Directory => clone_tree(root, name, true)?,
            FileType::RegularFile => clone_tree(root, name, false)?,
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

fn clone_tree(root: &OwnedFd, name: &CStr, dir: bool) -> Result<Kind, Failure> {
    let stage = || format!("bind {} from image", display(name));
    let fd = rustix::mount::open_tree(
        root,
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
pub(super) fn build_root(entries: Vec<Entry>) -> Result<(), Failure> {
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(at("make / private"))?;
    // Scratch place for the new root, only visible in this mount namespace (as bubblewrap).
    tmpfs(
        c"/tmp",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=0755",
        "mount the root tmpfs",
    )?;
    let newroot = rustix::fs::open(
        c"/tmp",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at("open the root tmpfs"))?;
    rustix::process::fchdir(&newroot).map_err(at("enter the root tmpfs"))?;

    for entry in entries {
        place(&newroot, entry)?;
    }
    for name in [c"proc", c"dev", c"tmp", c"run", c"sys"] {
        mkdir(&newroot, name, 0o755)?;
    }
    mount_proc()?;
    mount_dev(&newroot)?;
    tmpfs(
        c"tmp",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=1777",
        "mount /tmp",
    )?;
    tmpfs(
        c"run",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=0755",
        "mount /run",
    )?;
    drop(newroot);

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
    // removes the old root and leaves the new one.
    rustix::process::pivot_root(c".", c".").map_err(at("pivot_root"))?;
    rustix::mount::unmount(c".", UnmountFlags::DETACH).map_err(at("detach the old root"))?;
    rustix::process::chdir(c"/").map_err(at("chdir to the new root"))?;
    sys::mount_setattr(CWD, c"/", 0, libc::MOUNT_ATTR_RDONLY)
        .map_err(|e| Failure::setup("make / read-only", e))?;
    Ok(())
}

fn place(newroot: &OwnedFd, entry: Entry) -> Result<(), Failure> {
    let name = entry.name.as_c_str();
    let stage = format!("bind {} from image", display(name));
    match entry.kind {
        Kind::Symlink(target) => rustix::fs::symlinkat(target.as_c_str(), newroot, name)
            .map_err(|e| Failure::setup(format!("create symlink {}", display(name)), e)),
        Kind::Tree { fd, dir } => {
            if dir {
                rustix::fs::mkdirat(newroot, name, Mode::from_raw_mode(0o755))
                    .map_err(|e| Failure::setup(stage.as_str(), e))?;
            } else {
                rustix::fs::openat(
                    newroot,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(|e| Failure::setup(stage.as_str(), e))?;
            }
            rustix::mount::move_mount(
                &fd,
                c"",
                newroot,
                name,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| Failure::setup(stage.as_str(), e))?;
            let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
            sys::mount_setattr(
                newroot.as_fd(),
                name,
                (libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
                attrs,
            )
            .map_err(|e| Failure::setup(format!("make {} read-only", display(name)), e))
        }
    }
}

fn mkdir(dir: &OwnedFd, name: &CStr, mode: u32) -> Result<(), Failure> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))
        .map_err(|e| Failure::setup(format!("create {}", name.to_string_lossy()), e))
}

/// Mounts a tmpfs at `target` (relative to the cwd unless absolute).
fn tmpfs(target: &CStr, flags: MountFlags, data: &CStr, stage: &str) -> Result<(), Failure> {
    rustix::mount::mount(c"tmpfs", target, c"tmpfs", flags, data).map_err(at(stage))
}

fn mount_proc() -> Result<(), Failure> {
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount(c"proc", c"proc", c"proc", flags, None).map_err(at("mount /proc"))?;
    // Kernel tunables and the sysrq trigger stay read-only, bound over themselves.
    for path in [c"proc/sys", c"proc/sysrq-trigger"] {
        let stage = format!("make /{} read-only", path.to_string_lossy());
        match rustix::mount::mount_bind(path, path) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Failure::setup(stage, e)),
        }
        let attrs = libc::MOUNT_ATTR_RDONLY
            | libc::MOUNT_ATTR_NOSUID
            | libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOEXEC;
        sys::mount_setattr(CWD, path, libc::AT_SYMLINK_NOFOLLOW as libc::c_uint, attrs)
            .map_err(|e| Failure::setup(stage, e))?;
    }
    Ok(())
}

fn mount_dev(newroot: &OwnedFd) -> Result<(), Failure> {
    tmpfs(
        c"dev",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        c"mode=0755",
        "mount /dev",
    )?;
    let dev = rustix::fs::openat(
        newroot,
        c"dev",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at("open /dev"))?;
    for name in DEVICES {
        let host = format!("/dev/{name}");
        let stage = format!("bind {host}");
        // The host's /dev is trusted, but bind only what really is a character device.
        match rustix::fs::stat(host.as_str()) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice => {}
            _ => continue,
        }
        rustix::fs::openat(
            &dev,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(|e| Failure::setup(stage.as_str(), e))?;
        rustix::mount::mount_bind(host.as_str(), format!("dev/{name}").as_str())
            .map_err(|e| Failure::setup(stage.as_str(), e))?;
    }
    mkdir(&dev, c"pts", 0o755)?;
    rustix::mount::mount(
        c"devpts",
        c"dev/pts",
        c"devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        c"newinstance,ptmxmode=0666,mode=0620",
    )
    .map_err(at("mount /dev/pts"))?;
    mkdir(&dev, c"shm", 0o755)?;
    tmpfs(
        c"dev/shm",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=1777",
        "mount /dev/shm",
    )?;
    for (name, target) in [
        (c"ptmx", c"pts/ptmx"),
        (c"fd", c"/proc/self/fd"),
        (c"stdin", c"/proc/self/fd/0"),
        (c"stdout", c"/proc/self/fd/1"),
        (c"stderr", c"/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(target, &dev, name)
            .map_err(|e| Failure::setup(format!("create /dev/{}", name.to_string_lossy()), e))?;
    }
    Ok(())
}
