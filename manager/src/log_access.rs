//! Who may read the captured logs on disk (DESIGN.md §3: `STATE/logs/<unit>/` is readable by
//! root, the admin group and `log_group`). The files belong to berthd's user, which cannot give
//! them to another group; as journald does for `adm` and `wheel`, read access is granted by
//! POSIX ACLs instead: one entry per reader group, on `STATE/logs` and every unit's directory
//! both as access and as default ACL, so that the directories and files berthd creates later
//! inherit them, and on the files that exist already. Everyone else gets nothing (mode 0750 /
//! 0640).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Dir, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

/// Why the readers of the logs could not be set.
#[derive(Debug, thiserror::Error)]
pub enum LogAccessError {
    #[error("{path}: the filesystem has no POSIX ACLs; logs on disk stay readable by root and berthd's user only", path = path.display())]
    Unsupported { path: PathBuf },
    #[error("setting who may read {path}: {source}", path = path.display())]
    SetAcl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

// Tags and permissions of the kernel's ACL format (linux/posix_acl_xattr.h, acl/libacl.h).
const ACL_VERSION: u32 = 2;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;
const READ: u16 = 4;
const WRITE: u16 = 2;
const SEARCH: u16 = 1;

const ACCESS: &str = "system.posix_acl_access";
const DEFAULT: &str = "system.posix_acl_default";

/// An ACL in the kernel's xattr format: the owner has `owner`, the owning group and each of
/// `groups` have `readers`, everyone else nothing. `groups` must be sorted and unique.
fn acl(owner: u16, readers: u16, groups: &[u32]) -> Vec<u8> {
    let mut entries = vec![
        (TAG_USER_OBJ, owner, UNDEFINED_ID),
        (TAG_GROUP_OBJ, readers, UNDEFINED_ID),
    ];
    entries.extend(groups.iter().map(|&gid| (TAG_GROUP, readers, gid)));
    entries.push((TAG_MASK, readers, UNDEFINED_ID));
    entries.push((TAG_OTHER, 0, UNDEFINED_ID));
    let mut bytes = ACL_VERSION.to_ne_bytes().to_vec();
    for (tag, perm, id) in entries {
        bytes.extend_from_slice(&tag.to_ne_bytes());
        bytes.extend_from_slice(&perm.to_ne_bytes());
        bytes.extend_from_slice(&id.to_ne_bytes());
    }
    bytes
}

/// Lets members of `groups` read every log under `logs_dir` (`STATE/logs`), now and later.
pub fn grant_readers(logs_dir: &Path, groups: &[u32]) -> Result<(), LogAccessError> {
    let mut groups = groups.to_vec();
    groups.sort_unstable();
    groups.dedup();
    let dir_acl = acl(READ | WRITE | SEARCH, READ | SEARCH, &groups);
    let file_acl = acl(READ | WRITE, READ, &groups);
    let top = open_dir(logs_dir, None)?;
    set_dir(&top, logs_dir, &dir_acl)?;
    for unit in entries(&top, logs_dir)? {
        let unit_path = logs_dir.join(&unit);
        let Ok(unit_dir) = open_dir(&unit_path, Some(&top)) else {
            continue;
        };
        set_dir(&unit_dir, &unit_path, &dir_acl)?;
        for file in entries(&unit_dir, &unit_path)? {
            let path = unit_path.join(&file);
            if let Some(fd) = open_regular(&unit_dir, &file) {
                set(&fd, &path, ACCESS, &file_acl)?;
            }
        }
    }
    Ok(())
}

fn set_dir(dir: &OwnedFd, path: &Path, acl: &[u8]) -> Result<(), LogAccessError> {
    set(dir, path, ACCESS, acl)?;
    set(dir, path, DEFAULT, acl)
}

fn set(fd: &OwnedFd, path: &Path, name: &str, acl: &[u8]) -> Result<(), LogAccessError> {
    rustix::fs::fsetxattr(fd, name, acl, XattrFlags::empty()).map_err(|e| match e {
        Errno::OPNOTSUPP => LogAccessError::Unsupported {
            path: path.to_owned(),
        },
        e => LogAccessError::SetAcl {
            path: path.to_owned(),
            source: e.into(),
        },
    })
}

/// Opens a directory without following a symlink in its place (relative to `parent` if given).
fn open_dir(path: &Path, parent: Option<&OwnedFd>) -> Result<OwnedFd, LogAccessError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let opened = match (parent, path.file_name()) {
        (Some(parent), Some(name)) => rustix::fs::openat(parent, name, flags, Mode::empty()),
        _ => rustix::fs::open(path, flags, Mode::empty()),
    };
    opened.map_err(|e| LogAccessError::SetAcl {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// A regular file of `dir` opened for its ACL (never a symlink, FIFO or device).
fn open_regular(dir: &OwnedFd, name: &str) -> Option<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then_some(fd)
}

/// The names in a directory, but `.` and `..`.
fn entries(dir: &OwnedFd, path: &Path) -> Result<Vec<String>, LogAccessError> {
    let read_error = |e: Errno| LogAccessError::SetAcl {
        path: path.to_owned(),
        source: e.into(),
    };
    let mut names = Vec::new();
    for entry in Dir::read_from(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        match entry.file_name().to_str() {
            Ok("." | "..") | Err(_) => {}
            Ok(name) => names.push(name.to_owned()),
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acl_lists_owner_group_readers_mask_and_other_in_order() {
        let bytes = acl(READ | WRITE, READ, &[4, 50]);

        let words: Vec<(u16, u16, u32)> = bytes[4..]
            .chunks(8)
            .map(|c| {
                (
                    u16::from_ne_bytes([c[0], c[1]]),
                    u16::from_ne_bytes([c[2], c[3]]),
                    u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();

        assert_eq!(
            u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            2
        );
        assert_eq!(
            words,
            [
                (TAG_USER_OBJ, 6, UNDEFINED_ID),
                (TAG_GROUP_OBJ, 4, UNDEFINED_ID),
                (TAG_GROUP, 4, 4),
                (TAG_GROUP, 4, 50),
                (TAG_MASK, 4, UNDEFINED_ID),
                (TAG_OTHER, 0, UNDEFINED_ID),
            ]
        );
    }

    #[test]
    fn files_created_after_the_grant_inherit_it() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();

        grant_readers(&logs, &[4]).unwrap();
        std::fs::create_dir(logs.join("a.service")).unwrap();
        std::fs::write(logs.join("a.service").join("current.log"), "x").unwrap();

        let fd = rustix::fs::open(
            logs.join("a.service").join("current.log"),
            OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        let mut buf = vec![0u8; 256];
        let n = rustix::fs::fgetxattr(&fd, ACCESS, &mut buf).unwrap();
        assert!(
            buf[4..n]
                .chunks(8)
                .any(|c| u16::from_ne_bytes([c[0], c[1]]) == TAG_GROUP
                    && u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) == 4),
            "no entry for group 4"
        );
    }
}
