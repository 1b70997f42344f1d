//! The sandbox's own `/proc` (a new instance: the sandbox has its own pid namespace), with the
//! entries that would leak or change kernel state made read-only or masked.

use std::ffi::{CStr, CString};

use rustix::fs::AtFlags;
use rustix::mount::{MountAttrFlags, MountFlags};

use super::at;
use crate::sandbox::Failure;
use crate::sandbox::syscalls::MountSyscalls;

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
/// Mounts `/proc` with `options` (ProtectProc='s `hidepid=`, ProcSubset='s `subset=`; empty
/// for none).
pub(super) fn mount_proc(os: &impl MountSyscalls, options: &str) -> Result<(), Failure> {
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let options = CString::new(options)
        .map_err(|_| Failure::setup("mount /proc (options)", rustix::io::Errno::INVAL))?;
    let data = (!options.is_empty()).then_some(options.as_c_str());
    os.mount(c"proc", c"proc", c"proc", flags, data)
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
pub(super) fn mask_proc(os: &impl MountSyscalls) -> Result<(), Failure> {
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

#[cfg(test)]
mod tests {
    use rustix::io::Errno;

    use super::*;
    use crate::sandbox::mounts::root::build_root;
    use crate::sandbox::mounts::test_support::*;
    use crate::sandbox::syscalls::{Call, RecordingSyscalls};

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

        let built = build_root(&os, Vec::new(), no_plan(&os));

        assert!(built.is_ok(), "{built:?}");
    }

    #[test]
    fn a_mask_that_fails_otherwise_fails_the_launch() {
        let os = RecordingSyscalls::new().failing(
            |c| matches!(c, Call::MountBind { target, .. } if target == "proc/kcore"),
            Errno::PERM,
        );

        let built = build_root(&os, Vec::new(), no_plan(&os));

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
    fn protect_proc_and_proc_subset_become_options_of_the_proc_mount() {
        let os = RecordingSyscalls::new();
        let mut spec = berth_protocol::sandbox::SandboxSpec::baseline(61200, 61200, "p").mounts;
        spec.protect_proc = berth_protocol::sandbox::ProtectProc::Invisible;
        spec.proc_subset = berth_protocol::sandbox::ProcSubset::Pid;
        let plan = crate::sandbox::mounts::sources::prepare(&os, &spec, Vec::new()).unwrap();

        build_root(&os, Vec::new(), plan).unwrap();

        let proc = mounts_at(&os.calls(), "proc");
        assert!(
            matches!(&proc[..], [Call::Mount { data: Some(data), .. }]
                if data == "hidepid=invisible,subset=pid"),
            "{proc:?}"
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
}
