//! Helpers shared by the unit tests of the mount plan.

use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use rustix::mount::MountFlags;

use berth_protocol::sandbox::SandboxSpec;

use super::image::Entry;
use super::root::build_root;
use super::sources::{Prepared, prepare};
use crate::sandbox::syscalls::{Call, RecordingSyscalls};

/// A prepared mount plan with no step: the baseline's less its private `/var/tmp` and its
/// extra `/proc` entries, so that only the root itself is built.
pub(super) fn no_plan(os: &RecordingSyscalls) -> Prepared {
    let mut spec = SandboxSpec::baseline(61200, 61200, "probe").mounts;
    spec.private_tmp = false;
    spec.protect_kernel_tunables = false;
    prepare(os, &spec, Vec::new()).unwrap()
}

pub(super) fn build(os: &RecordingSyscalls, entries: Vec<Entry>) -> Vec<Call> {
    build_root(os, entries, no_plan(os)).unwrap();
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
