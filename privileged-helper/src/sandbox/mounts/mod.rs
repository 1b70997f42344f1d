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

mod apply;
mod dev;
pub(super) mod host_files;
mod image;
mod persistent_var;
mod plan;
mod proc;
mod root;
mod sources;
#[cfg(test)]
mod test_support;

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::Mode;
use rustix::mount::MountFlags;

pub(super) use image::{clone_image, image_view};
pub(super) use persistent_var::mount as mount_persistent_var;
// The service directories (StateDirectory= and its kind) bind their descriptors with it.
pub(crate) use plan::FdBind;
pub(super) use root::build_root;
pub(super) use sources::prepare;

use super::Failure;
use super::syscalls::MountSyscalls;

fn at<'a>(stage: &'a str) -> impl Fn(rustix::io::Errno) -> Failure + 'a {
    move |e| Failure::setup(stage, e)
}

fn mkdir(os: &impl MountSyscalls, dir: &OwnedFd, name: &CStr, mode: u32) -> Result<(), Failure> {
    os.mkdirat(dir.as_fd(), name, Mode::from_raw_mode(mode))
        .map_err(|e| Failure::setup(format!("create {}", name.to_string_lossy()), e))
}

/// Mounts a tmpfs at `target` (relative to the cwd unless absolute), its root owned by
/// `owner` (uid and gid; root of the sandbox's user namespace, see `Prepared::owned_by`).
fn tmpfs(
    os: &impl MountSyscalls,
    target: &CStr,
    flags: MountFlags,
    (data, owner): (&CStr, u32),
    stage: &str,
) -> Result<(), Failure> {
    let data = owned_options(data, owner).map_err(at(stage))?;
    os.mount(c"tmpfs", target, c"tmpfs", flags, Some(&data))
        .map_err(at(stage))
}

/// tmpfs options `data` with the root's owner added (none for host root, the default).
fn owned_options(data: &CStr, owner: u32) -> Result<std::ffi::CString, rustix::io::Errno> {
    if owner == 0 {
        return Ok(data.to_owned());
    }
    let data = format!("{},uid={owner},gid={owner}", data.to_string_lossy());
    std::ffi::CString::new(data).map_err(|_| rustix::io::Errno::INVAL)
}
