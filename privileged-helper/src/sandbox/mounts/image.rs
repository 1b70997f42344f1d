//! The image as the sandbox sees it: a read-only overlay view of the image root with its
//! extensions, and its top-level entries cloned as detached mount trees while still in the host
//! mount namespace (a clone source must belong to the caller's namespace), then placed in the
//! new root read-only, nosuid, nodev; symlinks are recreated verbatim, never followed.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::mount::{MountAttrFlags, MoveMountFlags, OpenTreeFlags};

use super::at;
use crate::sandbox::Failure;
use crate::sandbox::syscalls::{AT_RECURSIVE, FsParam, MountSyscalls};

/// Names we provide ourselves; the image's entries of that name are ignored.
const RESERVED: [&[u8]; 5] = [b"proc", b"dev", b"tmp", b"run", b"sys"];

/// More top-level entries than any real image has; bounds the mounts a hostile image causes.
const MAX_ENTRIES: usize = 1024;
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
pub(in crate::sandbox) fn image_view(
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
pub(in crate::sandbox) struct Entry {
    name: CString,
    kind: Kind,
}

enum Kind {
    /// A detached clone of a directory or file (with submounts).
    Tree {
        fd: OwnedFd,
        dir: bool,
    },
    /// A directory tree of ours that stays writable (nosuid, nodev): the persistent /var.
    Writable(OwnedFd),
    Symlink(CString),
}

impl Entry {
    /// A writable directory tree at `/NAME`, in place of the image's.
    pub(super) fn writable(name: &CStr, fd: OwnedFd) -> Entry {
        Entry {
            name: name.to_owned(),
            kind: Kind::Writable(fd),
        }
    }
}

/// The image's top-level entry `name`, taken out of `entries`: `Ok(Some(fd))` for a directory
/// (its detached clone), `Ok(None)` when the image has none, an error for anything else.
pub(super) fn take_directory(
    entries: &mut Vec<Entry>,
    name: &CStr,
) -> Result<Option<OwnedFd>, Failure> {
    let Some(index) = entries.iter().position(|e| e.name.as_c_str() == name) else {
        return Ok(None);
    };
    match entries.remove(index).kind {
        Kind::Tree { fd, dir: true } | Kind::Writable(fd) => Ok(Some(fd)),
        Kind::Tree { dir: false, .. } | Kind::Symlink(_) => Err(Failure::setup(
            format!("{} in the image is not a directory", display(name)),
            rustix::io::Errno::NOTDIR,
        )),
    }
}

fn display(name: &CStr) -> String {
    format!("/{}", name.to_string_lossy())
}

/// Clones the top-level entries of the image root `root` (or its [`image_view`]). Must run in
/// the mount namespace `root` lives in (a detached view counts as ours).
pub(in crate::sandbox) fn clone_image(
    os: &impl MountSyscalls,
    root: &OwnedFd,
) -> Result<Vec<Entry>, Failure> {
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

pub(super) fn place(
    os: &impl MountSyscalls,
    newroot: &OwnedFd,
    entry: Entry,
) -> Result<(), Failure> {
    let name = entry.name.as_c_str();
    let stage = format!("bind {} from image", display(name));
    match entry.kind {
        Kind::Symlink(target) => os
            .symlinkat(target.as_c_str(), newroot.as_fd(), name)
            .map_err(|e| Failure::setup(format!("create symlink {}", display(name)), e)),
        Kind::Writable(fd) => {
            os.mkdirat(newroot.as_fd(), name, Mode::from_raw_mode(0o755))
                .map_err(at(&stage))?;
            let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
            move_onto(os, newroot, name, &fd, &stage, (attrs, "nosuid, nodev"))
        }
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
            let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV;
            move_onto(os, newroot, name, &fd, &stage, (attrs, "read-only"))
        }
    }
}

/// Moves the detached tree `fd` onto its mount point `name` of the new root (made by the
/// caller), then gives the mount and all below it `attrs`, named `said` in the error.
fn move_onto(
    os: &impl MountSyscalls,
    newroot: &OwnedFd,
    name: &CStr,
    fd: &OwnedFd,
    stage: &str,
    (attrs, said): (MountAttrFlags, &str),
) -> Result<(), Failure> {
    os.move_mount(
        fd.as_fd(),
        c"",
        newroot.as_fd(),
        name,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(at(stage))?;
    os.mount_setattr(
        Some(newroot.as_fd()),
        name,
        AT_RECURSIVE | AtFlags::SYMLINK_NOFOLLOW,
        attrs,
    )
    .map_err(|e| Failure::setup(format!("make {} {said}", display(name)), e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use rustix::io::Errno;

    use super::*;
    use crate::sandbox::mounts::test_support::*;
    use crate::sandbox::syscalls::{Call, RecordingSyscalls};

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
