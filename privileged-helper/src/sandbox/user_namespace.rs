//! PrivateUsers=: the service runs in a user namespace where only root, its own uid (and gid,
//! and its supplementary gids) and nobody exist; every other id of the host shows as nobody
//! (65534, the kernel's overflow id). `/etc/passwd` and `/etc/group` of the image are covered
//! with synthesized ones that name exactly these, as systemd's PrivateUsers= with DynamicUser=
//! shows them.
//!
//! The namespace is created last, after the mounts and limits: the mount, IPC, UTS and network
//! namespaces stay owned by the host's user namespace, so nothing in the new one has any
//! capability over them, and the root mapped inside is no root of anything outside.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use berth_protocol::sandbox::Identity;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::mount::{MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};

use super::Failure;
use super::block_namespace::BlockNamespaces;
use super::process_syscalls::ProcessSyscalls;
use super::syscalls::{FsParam, MountSyscalls};

/// The overflow uid and gid: what every unmapped id reads as.
const NOBODY: u32 = 65534;
/// Where the tmpfs holding the synthesized files sits while they are bound (stacked over the
/// sandbox's own /run, which it covers only for that moment).
const STAGING: &CStr = c"/run";

fn gids(identity: &Identity) -> Vec<u32> {
    let mut gids = vec![identity.gid];
    for gid in &identity.supplementary_groups {
        if *gid != 0 && !gids.contains(gid) {
            gids.push(*gid);
        }
    }
    gids
}

/// The uid and gid maps (the kernel's `inside outside count` lines): root and the service's
/// ids onto themselves, nothing else.
pub(super) fn id_maps(identity: &Identity) -> (String, String) {
    let uid_map = format!("0 0 1\n{0} {0} 1\n", identity.uid);
    let mut gid_map = String::from("0 0 1\n");
    for gid in gids(identity) {
        gid_map.push_str(&format!("{gid} {gid} 1\n"));
    }
    (uid_map, gid_map)
}

/// The synthesized `/etc/passwd`. The floor allows only user names without `:`, newlines or
/// other separators, so a name cannot add an entry.
pub(super) fn passwd(identity: &Identity) -> String {
    let name = &identity.user_name;
    format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         {name}:x:{uid}:{gid}:{name}:/:/usr/sbin/nologin\n\
         nobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/usr/sbin/nologin\n",
        uid = identity.uid,
        gid = identity.gid,
    )
}

/// The synthesized `/etc/group`.
pub(super) fn group(identity: &Identity) -> String {
    format!(
        "root:x:0:\n{name}:x:{gid}:\nnogroup:x:{NOBODY}:\n",
        name = identity.user_name,
        gid = identity.gid,
    )
}

/// Covers the image's `/etc/passwd` and `/etc/group` (read-only binds of files on a private
/// tmpfs). Runs after `pivot_root`, in the sandbox's mount namespace. A file the image lacks,
/// or has as anything but a regular file under a real `/etc` directory, is left alone: the
/// image is read-only, so there is nothing to bind onto, and a symlink is never followed.
pub(super) fn bind_databases(os: &impl MountSyscalls, identity: &Identity) -> Result<(), Failure> {
    let at = |stage: &'static str| move |e| Failure::setup(stage, e);
    let tmpfs = os
        .fs_mount(
            c"tmpfs",
            &[
                FsParam::String(c"size", c"64k"),
                FsParam::String(c"mode", c"0755"),
            ],
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(at("mount the tmpfs of the user databases"))?;
    for (name, text) in [(c"passwd", passwd(identity)), (c"group", group(identity))] {
        write_new_file(&tmpfs, name, &text)
            .map_err(|e| Failure::setup(format!("write {}", name.to_string_lossy()), e))?;
    }
    os.move_mount(
        tmpfs.as_fd(),
        c"",
        rustix::fs::CWD,
        STAGING,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(at("attach the tmpfs of the user databases"))?;
    let result = [c"passwd", c"group"]
        .into_iter()
        .try_for_each(|name| bind_over_etc(os, name));
    // Uncovers /run again whatever happened: the binds keep the tmpfs alive.
    os.umount2(STAGING, UnmountFlags::DETACH)
        .map_err(at("detach the tmpfs of the user databases"))?;
    result
}

fn write_new_file(dir: &OwnedFd, name: &CStr, text: &str) -> Result<(), rustix::io::Errno> {
    let file = rustix::fs::openat(
        dir,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    let mut bytes = text.as_bytes();
    while !bytes.is_empty() {
        let n = rustix::io::write(&file, bytes)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Binds `STAGING/name` read-only over `/etc/name` when that is a regular file.
fn bind_over_etc(os: &impl MountSyscalls, name: &CStr) -> Result<(), Failure> {
    let stage = || format!("cover /etc/{}", name.to_string_lossy());
    let Some(target) = etc_file(name).map_err(|e| Failure::setup(stage(), e))? else {
        return Ok(());
    };
    let source_path = format!("{}/{}", STAGING.to_string_lossy(), name.to_string_lossy());
    let source_path = std::ffi::CString::new(source_path)
        .map_err(|_| Failure::setup(stage(), rustix::io::Errno::INVAL))?;
    let clone = os
        .open_tree(
            rustix::fs::CWD,
            &source_path,
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Failure::setup(stage(), e))?;
    os.mount_setattr(
        Some(clone.as_fd()),
        c"",
        AtFlags::EMPTY_PATH,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(|e| Failure::setup(stage(), e))?;
    os.move_mount(
        clone.as_fd(),
        c"",
        target.as_fd(),
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| Failure::setup(stage(), e))
}

/// `/etc/name` of the new root as an `O_PATH` descriptor, reached without following any
/// symlink; `None` when it is missing or not a regular file in a directory.
fn etc_file(name: &CStr) -> Result<Option<OwnedFd>, rustix::io::Errno> {
    use rustix::io::Errno;
    let nofollow = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let etc = match rustix::fs::openat(
        rustix::fs::CWD,
        c"/etc",
        nofollow | OFlags::DIRECTORY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = match rustix::fs::openat(&etc, name, nofollow, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let stat = rustix::fs::fstat(&file)?;
    Ok((FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile).then_some(file))
}

/// Moves init into its user namespace: the block's (`block_namespace.rs`) when it has one,
/// else with PrivateUsers= a new one with [`id_maps`]; without either it stays in the host's.
pub(super) fn enter(
    os: &impl ProcessSyscalls,
    identity: &Identity,
    block: Option<&BlockNamespaces>,
) -> Result<(), Failure> {
    if let Some(namespaces) = block {
        return super::block_namespace::enter(os, namespaces);
    }
    if !identity.private_users {
        return Ok(());
    }
    let (uid_map, gid_map) = id_maps(identity);
    os.enter_user_namespace(&uid_map, &gid_map)
        .map_err(|e| Failure::setup("create the private user namespace", e))
}

#[cfg(test)]
mod tests {
    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::*;

    fn identity(supplementary: &[u32]) -> Identity {
        Identity {
            uid: 61500,
            gid: 61501,
            supplementary_groups: supplementary.to_vec(),
            private_users: true,
            user_name: "web".into(),
            user_block: None,
        }
    }

    #[test]
    fn root_and_the_service_ids_are_mapped_onto_themselves() {
        let (uid_map, gid_map) = id_maps(&identity(&[]));

        assert_eq!(uid_map, "0 0 1\n61500 61500 1\n");
        assert_eq!(gid_map, "0 0 1\n61501 61501 1\n");
    }

    #[test]
    fn supplementary_groups_are_mapped_once_each() {
        let (_, gid_map) = id_maps(&identity(&[61502, 61501, 61502, 0]));

        assert_eq!(gid_map, "0 0 1\n61501 61501 1\n61502 61502 1\n");
    }

    #[test]
    fn passwd_names_root_the_service_and_nobody() {
        assert_eq!(
            passwd(&identity(&[])),
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             web:x:61500:61501:web:/:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        );
    }

    #[test]
    fn group_names_root_the_service_and_nogroup() {
        assert_eq!(
            group(&identity(&[])),
            "root:x:0:\nweb:x:61501:\nnogroup:x:65534:\n"
        );
    }

    #[test]
    fn entering_writes_both_maps() {
        let os = RecordingProcess::new();

        enter(&os, &identity(&[]), None).unwrap();

        assert_eq!(
            os.calls(),
            [ProcessCall::EnterUserNamespace {
                uid_map: "0 0 1\n61500 61500 1\n".into(),
                gid_map: "0 0 1\n61501 61501 1\n".into(),
            }]
        );
    }
}
