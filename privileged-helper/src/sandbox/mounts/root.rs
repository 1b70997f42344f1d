//! The new root: a small tmpfs holding the image's entries and our own `/proc`, `/dev`, `/tmp`,
//! `/run` and `/sys` (an empty read-only directory: no sysfs is mounted in the sandbox), then
//! `pivot_root` into it. The host's files (`host_files.rs`) are bound over the image's
//! placeholders in it, then the service's mount plan (`plan.rs`) is carried out, just before.

use std::ffi::CStr;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, OFlags};
use rustix::mount::{MountAttrFlags, MountFlags, MountPropagationFlags, UnmountFlags};

use super::image::{Entry, place};
use super::sources::Prepared;
use super::{apply, at, dev, host_files, mkdir, proc, tmpfs};
use crate::sandbox::Failure;
use crate::sandbox::syscalls::MountSyscalls;

/// Size limits of our tmpfs mounts, as systemd sets them for private mounts. Without them each
/// tmpfs may grow to half the host's RAM. The root and `/dev` hold only mount points, symlinks
/// and device nodes.
const ROOT_TMPFS: &CStr = c"mode=0755,size=4m,nr_inodes=4k";
const TMP_TMPFS: &CStr = c"mode=1777,size=10%,nr_inodes=400k";
const RUN_TMPFS: &CStr = c"mode=0755,size=10%,nr_inodes=400k";
/// Builds the new root from `entries`, carries out `plan` in it and pivots into it. Must run
/// right after `unshare(CLONE_NEWNS)`. Leaves the cwd at the new `/`.
pub(in crate::sandbox) fn build_root(
    os: &impl MountSyscalls,
    entries: Vec<Entry>,
    mut plan: Prepared,
) -> Result<(), Failure> {
    os.mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(at("make / private"))?;
    let owner = plan.tmpfs_owner;
    // Scratch place for the new root, only visible in this mount namespace (as bubblewrap).
    tmpfs(
        os,
        c"/tmp",
        MountFlags::NOSUID | MountFlags::NODEV,
        (ROOT_TMPFS, owner),
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
    proc::mount_proc(os, &plan.plan.proc_options)?;
    dev::mount_dev(os, &newroot, owner)?;
    // Needs our /dev/null, so after /dev.
    proc::mask_proc(os)?;
    tmpfs(
        os,
        c"tmp",
        MountFlags::NOSUID | MountFlags::NODEV,
        (TMP_TMPFS, owner),
        "mount /tmp",
    )?;
    tmpfs(
        os,
        c"run",
        MountFlags::NOSUID | MountFlags::NODEV,
        (RUN_TMPFS, owner),
        "mount /run",
    )?;
    host_files::bind(os, &newroot, std::mem::take(&mut plan.host_files))?;
    apply::apply(os, &newroot, plan)?;
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

#[cfg(test)]
mod tests {
    use rustix::io::Errno;

    use super::*;
    use crate::sandbox::mounts::test_support::*;
    use crate::sandbox::syscalls::{Call, RecordingSyscalls};

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
    fn in_block_mode_the_root_tmp_run_dev_and_shm_belong_to_root_of_the_namespace() {
        let os = RecordingSyscalls::new();

        build_root(&os, Vec::new(), no_plan(&os).owned_by(524_288)).unwrap();

        let calls = os.calls();
        for (target, mode) in [
            ("/tmp", "0755,size=4m,nr_inodes=4k"),
            ("tmp", "1777,size=10%,nr_inodes=400k"),
            ("run", "0755,size=10%,nr_inodes=400k"),
            ("dev", "0755,size=4m,nr_inodes=64k"),
            ("dev/shm", "1777,size=10%,nr_inodes=400k"),
        ] {
            let data = format!("mode={mode},uid=524288,gid=524288");
            assert!(
                mounts_at(&calls, target)
                    .iter()
                    .any(|c| matches!(c, Call::Mount { data: Some(d), .. } if *d == data)),
                "{target}: {calls:#?}"
            );
        }
    }

    #[test]
    fn the_mount_plan_is_carried_out_in_the_new_root_before_pivot_root() {
        let os = RecordingSyscalls::new();
        let spec = berth_protocol::sandbox::SandboxSpec::baseline(61200, 61200, "p").mounts;
        let plan = crate::sandbox::mounts::sources::prepare(&os, &spec, Vec::new()).unwrap();

        build_root(&os, Vec::new(), plan).unwrap();

        let calls = os.calls();
        let var_tmp = calls
            .iter()
            .position(|c| matches!(c, Call::MoveMount { to_dir, .. } if to_dir == "/var/tmp"))
            .expect("the private /var/tmp");
        let run = index_of(&calls, &mounts_at(&calls, "run")[0]);
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot { .. }))
            .unwrap();
        assert!(run < var_tmp && var_tmp < pivot, "{calls:#?}");
    }

    #[test]
    fn host_files_are_bound_before_the_mount_plan_so_that_the_unit_s_own_mounts_win() {
        let regular = crate::sandbox::syscalls::Node {
            kind: rustix::fs::FileType::RegularFile,
            ..crate::sandbox::syscalls::Node::directory()
        };
        let os = RecordingSyscalls::new().with_node("/etc/machine-id", regular);
        let spec = berth_protocol::sandbox::SandboxSpec::baseline(61200, 61200, "p").mounts;
        let mut plan = crate::sandbox::mounts::sources::prepare(&os, &spec, Vec::new()).unwrap();
        let wanted = berth_protocol::sandbox::HostFiles {
            machine_id: true,
            ..Default::default()
        };
        plan.host_files =
            crate::sandbox::mounts::host_files::prepare(&os, &wanted, Default::default()).unwrap();

        build_root(&os, Vec::new(), plan).unwrap();

        let calls = os.calls();
        let onto = |path: &str| {
            calls
                .iter()
                .position(|c| matches!(c, Call::MoveMount { to_dir, .. } if to_dir == path))
                .unwrap_or_else(|| panic!("nothing mounted at {path}: {calls:#?}"))
        };
        let run = index_of(&calls, &mounts_at(&calls, "run")[0]);
        assert!(run < onto("/etc/machine-id") && onto("/etc/machine-id") < onto("/var/tmp"));
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

        let result = build_root(&os, Vec::new(), no_plan(&os));

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

        let _ = build_root(&os, Vec::new(), no_plan(&os));

        let calls = os.calls();
        assert_eq!(calls.last(), mounts_at(&calls, "dev").first());
    }
}
