//! Helpers shared by the unit tests of the mount plan.

use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use rustix::mount::MountFlags;

use super::image::Entry;
use super::root::build_root;
use crate::sandbox::syscalls::{Call, RecordingSyscalls};

pub(super) fn build(os: &RecordingSyscalls, entries: Vec<Entry>) -> Vec<Call> {
    build_root(os, entries).unwrap();
    os.calls()
}

pub(super) fn mounts_at(calls: &[Call], at: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| matches!(c, Call::Mount { target, .. } if target == at))
        .cloned()
        .collect()
}

pub(super) fn tmpfs_call(target: &str, flags: MountFlags, data: &str) -> Call {
    Call::Mount {
        source: "tmpfs".into(),
        target: target.into(),
        fstype: "tmpfs".into(),
        flags,
        data: Some(data.into()),
    }
}

pub(super) fn index_of(calls: &[Call], call: &Call) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call:?} not in {calls:#?}"))
}

/// A temporary image root with the given top-level directories, and its fd.
pub(super) fn image(dirs: &[&str]) -> (tempfile::TempDir, OwnedFd) {
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

pub(super) fn bind(source: &str, target: &str) -> Call {
    Call::MountBind {
        source: source.into(),
        target: target.into(),
    }
}
