//! The attachment's persistent `/var` (DESIGN.md §5): a writable overlay in place of the
//! image's `/var`, its lower layer the image's `/var` as the service sees it (the clone of the
//! image view, idmapped where the image is), its upper layer `upper/` and its work directory
//! `work/` in the directory berthd passed (`STATE/var/<image>/`, owned by berthd's user).
//!
//! berthd owns that directory, so it is hostile: `upper/` and `work/` are created where
//! missing and opened one at a time with `O_NOFOLLOW | O_DIRECTORY` (never a symlink), and the
//! owner and mode are set on the opened inode. `upper/` is the overlay's root: it belongs to
//! the root of the service's user namespace ([`Identity::namespace_root`], host root without a
//! block) with the mode of the image's `/var`; `work/` is host root's, 0700. The upper layer is
//! not idmapped: on disk its files carry the block's host ids.
//!
//! Two overlays over one upper layer are undefined in overlayfs: the run holds an exclusive
//! `flock` on the directory for as long as init lives, and a second unit of the attachment
//! that wants it meanwhile fails to start, saying so.
//!
//! [`Identity::namespace_root`]: berth_protocol::sandbox::Identity::namespace_root

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;

use super::image::{Entry, take_directory};
use crate::sandbox::Failure;
use crate::sandbox::syscalls::{FsParam, MountSyscalls};

const UPPER: &CStr = c"upper";
const WORK: &CStr = c"work";
/// Mode of `upper/` when the image has no `/var` of its own.
const DEFAULT_VAR_MODE: u32 = 0o755;
/// An empty bottom layer for an image without `/var` (overlayfs wants a lower layer).
const EMPTY_LOWER_TMPFS: [(&CStr, &CStr); 2] = [(c"size", c"4k"), (c"mode", c"0755")];
/// Overlay options besides the layers: as the image view, nothing in the layers steers a
/// lookup (no redirects followed or made: renaming a directory of the image's /var gives
/// EXDEV, which `mv` handles by copying; no metacopy).
const OVERLAY_OPTIONS: [(&CStr, &CStr); 3] = [
    (c"source", c"berth-var"),
    (c"redirect_dir", c"nofollow"),
    (c"metacopy", c"off"),
];
/// How long a start waits for the previous run of the attachment (whose init may still be
/// exiting) to let go of the upper layer.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The overlay's writable layers, opened in the attachment's directory, and the lock that
/// keeps them to this run.
pub(in crate::sandbox) struct Layers {
    upper: OwnedFd,
    work: OwnedFd,
    /// The attachment's directory, locked (`flock`) while it is open.
    lock: OwnedFd,
}

fn fail(what: &str, e: impl Into<std::io::Error>) -> Failure {
    Failure::setup(format!("persistent /var: {what}"), e)
}

/// `name` below `dir`, created with `mode` where missing, as a directory descriptor (never
/// through a symlink), given to `owner` with `mode`.
fn layer_dir(dir: BorrowedFd<'_>, name: &CStr, owner: u32, mode: u32) -> Result<OwnedFd, Failure> {
    let shown = name.to_string_lossy();
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(fail(&format!("create {shown}/"), e)),
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => fail(&format!("{shown} is not a directory"), e),
        e => fail(&format!("open {shown}/"), e),
    })?;
    rustix::fs::fchown(&fd, Some(Uid::from_raw(owner)), Some(Gid::from_raw(owner)))
        .map_err(|e| fail(&format!("give {shown}/ to uid {owner}"), e))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
        .map_err(|e| fail(&format!("set the mode of {shown}/"), e))?;
    Ok(fd)
}

/// Takes the attachment's directory `dir` for this run (waiting a little for a previous run
/// to end) and opens its layers: `upper/` for `owner` with `mode`, `work/` for host root.
pub(in crate::sandbox) fn layers(dir: OwnedFd, owner: u32, mode: u32) -> Result<Layers, Failure> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(fail(
                    "the attachment's /var is in use by another running unit of the image \
                     (one runs at a time with a persistent /var)",
                    Errno::BUSY,
                ));
            }
            Err(e) => return Err(fail("lock the attachment's directory", e)),
        }
    }
    let upper = layer_dir(dir.as_fd(), UPPER, owner, mode & 0o7777)?;
    let work = layer_dir(dir.as_fd(), WORK, 0, 0o700)?;
    Ok(Layers {
        upper,
        work,
        lock: dir,
    })
}

/// In init, in the host mount namespace, after the image's entries are cloned: replaces the
/// image's `/var` among `entries` by the writable overlay over it, with the layers of `dir`.
/// `owner` is the namespace root's host uid. Returns the locked directory, which init keeps
/// open for as long as it lives.
pub(in crate::sandbox) fn mount(
    os: &impl MountSyscalls,
    entries: &mut Vec<Entry>,
    dir: OwnedFd,
    owner: u32,
) -> Result<OwnedFd, Failure> {
    let lower = match take_directory(entries, c"var")? {
        Some(lower) => lower,
        None => {
            let params: Vec<FsParam<'_>> = EMPTY_LOWER_TMPFS
                .iter()
                .map(|(k, v)| FsParam::String(k, v))
                .collect();
            os.fs_mount(c"tmpfs", &params, MountAttrFlags::MOUNT_ATTR_RDONLY)
                .map_err(|e| fail("mount an empty lower layer", e))?
        }
    };
    let mode = match os.node(lower.as_fd()) {
        Ok(node) => node.mode,
        Err(_) => DEFAULT_VAR_MODE,
    };
    let Layers { upper, work, lock } = layers(dir, owner, mode)?;
    let mut params = vec![
        FsParam::Fd(c"lowerdir+", lower.as_fd()),
        FsParam::Fd(c"upperdir", upper.as_fd()),
        FsParam::Fd(c"workdir", work.as_fd()),
    ];
    params.extend(OVERLAY_OPTIONS.iter().map(|(k, v)| FsParam::String(k, v)));
    let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
    // overlayfs names each layer in the service's mountinfo by its path as init sees it when
    // it gives it: with the attachment's directory as init's root meanwhile that is `/upper`,
    // not STATE's path on the host.
    let here = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = os.open(c"/", here).map_err(|e| fail("open /", e))?;
    let cwd = os.open(c".", here).map_err(|e| fail("open .", e))?;
    os.fchdir(lock.as_fd())
        .and_then(|()| os.chroot(c"."))
        .map_err(|e| fail("enter the attachment's directory", e))?;
    let mounted = os.fs_mount(c"overlay", &params, attrs);
    os.fchdir(root.as_fd())
        .and_then(|()| os.chroot(c"."))
        .and_then(|()| os.fchdir(cwd.as_fd()))
        .map_err(|e| fail("leave the attachment's directory", e))?;
    let overlay = mounted.map_err(|e| {
        fail(
            "mount the overlay (overlayfs with layers by descriptor, Linux 6.13 or later, and \
             an upper file system with trusted xattrs)",
            e,
        )
    })?;
    entries.push(Entry::writable(c"var", overlay));
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::*;
    use crate::sandbox::mounts::image::clone_image;
    use crate::sandbox::mounts::test_support::*;
    use crate::sandbox::syscalls::{Call, RecordingSyscalls};

    const BLOCK_ROOT: u32 = 524_288;

    fn state_dir() -> (tempfile::TempDir, OwnedFd) {
        let tmp = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            tmp.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        (tmp, fd)
    }

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (changes owners); run as root, as CI does"
        );
    }

    #[test]
    fn the_image_s_var_becomes_the_lower_layer_of_a_writable_overlay() {
        require_root();
        let os = RecordingSyscalls::new();
        let (_image, root) = image(&["usr", "var"]);
        let mut entries = clone_image(&os, &root).unwrap();
        let (_state, dir) = state_dir();

        mount(&os, &mut entries, dir, BLOCK_ROOT).unwrap();

        let overlay = os
            .calls()
            .into_iter()
            .find(|c| matches!(c, Call::FsMount { fstype, .. } if fstype == "overlay"))
            .unwrap();
        let Call::FsMount { params, attrs, .. } = overlay else {
            unreachable!()
        };
        assert_eq!(params[0], "lowerdir+=image:var");
        assert!(params[1].starts_with("upperdir=fd "), "{params:?}");
        assert!(params[2].starts_with("workdir=fd "), "{params:?}");
        assert_eq!(
            params[3..],
            ["source=berth-var", "redirect_dir=nofollow", "metacopy=off"]
        );
        assert_eq!(
            attrs,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV
        );
    }

    #[test]
    fn the_overlay_is_placed_writable_nosuid_nodev() {
        require_root();
        let os = RecordingSyscalls::new();
        let (_image, root) = image(&["var"]);
        let mut entries = clone_image(&os, &root).unwrap();
        let (_state, dir) = state_dir();
        mount(&os, &mut entries, dir, BLOCK_ROOT).unwrap();

        let calls = build(&os, entries);

        let var_attrs: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::MountSetattr { path, .. } if path == "var"))
            .collect();
        assert_eq!(var_attrs.len(), 1, "{calls:#?}");
        assert!(matches!(var_attrs[0], Call::MountSetattr { attr_set, .. }
            if *attr_set == MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV));
        assert!(
            calls
                .iter()
                .any(|c| matches!(c, Call::MoveMount { from_dir, to_path, .. }
            if from_dir == "fs:overlay" && to_path == "var"))
        );
    }

    #[test]
    fn upper_belongs_to_the_namespace_root_with_the_mode_of_the_image_s_var() {
        require_root();
        let (state, dir) = state_dir();

        let layers = layers(dir, BLOCK_ROOT, 0o751).unwrap();

        let upper = std::fs::metadata(state.path().join("upper")).unwrap();
        let work = std::fs::metadata(state.path().join("work")).unwrap();
        assert_eq!(
            (upper.uid(), upper.gid(), upper.mode() & 0o7777),
            (BLOCK_ROOT, BLOCK_ROOT, 0o751)
        );
        assert_eq!((work.uid(), work.mode() & 0o7777), (0, 0o700));
        drop(layers);
    }

    #[test]
    fn a_symlink_planted_as_upper_is_refused_not_followed() {
        require_root();
        let (state, dir) = state_dir();
        let victim = tempfile::tempdir().unwrap();
        symlink(victim.path(), state.path().join("upper")).unwrap();

        let refused = layers(dir, BLOCK_ROOT, 0o755);

        assert!(
            matches!(&refused, Err(Failure::Setup { stage, errno: libc::ELOOP | libc::ENOTDIR })
                if stage.contains("upper is not a directory")),
            "{:?}",
            refused.err()
        );
        assert_eq!(std::fs::metadata(victim.path()).unwrap().uid(), 0);
    }

    #[test]
    fn a_second_run_while_the_first_holds_the_layers_is_refused() {
        require_root();
        let (state, first) = state_dir();
        let held = layers(first, BLOCK_ROOT, 0o755).unwrap();
        let second = rustix::fs::open(
            state.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();

        let refused = layers(second, BLOCK_ROOT, 0o755);

        assert!(
            matches!(&refused, Err(Failure::Setup { stage, errno: libc::EBUSY })
                if stage.contains("in use")),
            "{:?}",
            refused.err()
        );
        drop(held);
    }

    #[test]
    fn an_image_without_var_gets_an_empty_lower_layer() {
        require_root();
        let os = RecordingSyscalls::new();
        let (_image, root) = image(&["usr"]);
        let mut entries = clone_image(&os, &root).unwrap();
        let (_state, dir) = state_dir();

        mount(&os, &mut entries, dir, BLOCK_ROOT).unwrap();

        let calls = os.calls();
        assert!(
            calls
                .iter()
                .any(|c| matches!(c, Call::FsMount { fstype, params, .. }
            if fstype == "overlay" && params[0] == "lowerdir+=fs:tmpfs"))
        );
    }

    #[test]
    fn an_image_whose_var_is_a_symlink_fails_clearly() {
        require_root();
        let os = RecordingSyscalls::new();
        let (image, root) = image(&["usr"]);
        symlink("/srv", image.path().join("var")).unwrap();
        let mut entries = clone_image(&os, &root).unwrap();
        let (_state, dir) = state_dir();

        let refused = mount(&os, &mut entries, dir, BLOCK_ROOT);

        assert!(
            matches!(&refused, Err(Failure::Setup { stage, errno: libc::ENOTDIR })
                if stage == "/var in the image is not a directory"),
            "{:?}",
            refused.err()
        );
    }
}
