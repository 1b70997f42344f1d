//! The sandbox's own `/dev`: a nodev tmpfs (the bound host nodes keep their own mount flags,
//! and nothing else in it can act as a device) with the pseudo devices, a new devpts instance
//! and `/dev/shm`.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::MountFlags;

use super::{at, mkdir, tmpfs};
use crate::sandbox::Failure;
use crate::sandbox::syscalls::MountSyscalls;

const DEV_TMPFS: &CStr = c"mode=0755,size=4m,nr_inodes=64k";
const SHM_TMPFS: &CStr = c"mode=1777,size=10%,nr_inodes=400k";
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

/// `owner` owns the roots of /dev and /dev/shm (see `Prepared::owned_by`).
pub(super) fn mount_dev(
    os: &impl MountSyscalls,
    newroot: &OwnedFd,
    owner: u32,
) -> Result<(), Failure> {
    tmpfs(
        os,
        c"dev",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        (DEV_TMPFS, owner),
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
        (SHM_TMPFS, owner),
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
    use super::*;
    use crate::sandbox::mounts::test_support::*;
    use crate::sandbox::syscalls::{Call, RecordingSyscalls};

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
}
