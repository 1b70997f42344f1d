//! The privileged syscalls that build the sandbox's root, behind a trait (as youki's
//! `Syscall`): [`LinuxSyscalls`] forwards them to the kernel; the test-only
//! `RecordingSyscalls` records them instead, so the mount plan in `mounts/` can be checked
//! without root.
//!
//! Only what needs privilege or changes the mount namespace is here. Reading the image
//! (readdir, `statat`, `readlinkat`, `fstat` of a clone) stays a direct call: it needs no
//! privilege, and unit tests point it at a real temporary directory.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

/// One `fsconfig` parameter of [`MountSyscalls::fs_mount`].
pub(crate) enum FsParam<'a> {
    /// `FSCONFIG_SET_STRING key value`.
    String(&'a CStr, &'a CStr),
    /// `FSCONFIG_SET_FD key fd`.
    Fd(&'a CStr, BorrowedFd<'a>),
}

/// What [`MountSyscalls::node`] tells of a file: its type, permission bits, owner, size and,
/// for a device, its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
}

#[cfg(test)]
impl Node {
    pub(crate) fn directory() -> Node {
        Node {
            kind: FileType::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
        }
    }
}

/// `AT_RECURSIVE` for [`MountSyscalls::mount_setattr`] (rustix's `AtFlags` lacks it).
pub(crate) const AT_RECURSIVE: AtFlags = AtFlags::from_bits_retain(libc::AT_RECURSIVE as u32);

/// The operations `mounts.rs` performs to clone the image and build the new root. Paths are
/// relative to the cwd unless absolute or given with a directory fd.
pub(crate) trait MountSyscalls {
    /// `mount(NULL, target, NULL, flags, NULL)`: changes the propagation type.
    fn mount_change(&self, target: &CStr, flags: MountPropagationFlags) -> Result<(), Errno>;
    /// `mount(source, target, fstype, flags, data)`: mounts a new file system.
    fn mount(
        &self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: MountFlags,
        data: Option<&CStr>,
    ) -> Result<(), Errno>;
    /// `mount(source, target, NULL, MS_BIND, NULL)`.
    fn mount_bind(&self, source: &CStr, target: &CStr) -> Result<(), Errno>;
    /// `mount_setattr(dir, path, flags, {attr_set})`; `dir` `None` is `AT_FDCWD`.
    fn mount_setattr(
        &self,
        dir: Option<BorrowedFd<'_>>,
        path: &CStr,
        flags: AtFlags,
        attr_set: MountAttrFlags,
    ) -> Result<(), Errno>;
    /// `open_tree(dir, path, flags)`.
    fn open_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &CStr,
        flags: OpenTreeFlags,
    ) -> Result<OwnedFd, Errno>;
    /// `fsopen(fstype)`, one `fsconfig` per parameter, `FSCONFIG_CMD_CREATE`, then
    /// `fsmount(attrs)`: a new file system as a detached mount.
    fn fs_mount(
        &self,
        fstype: &CStr,
        params: &[FsParam<'_>],
        attrs: MountAttrFlags,
    ) -> Result<OwnedFd, Errno>;
    /// `move_mount(from_dir, from_path, to_dir, to_path, flags)`.
    fn move_mount(
        &self,
        from_dir: BorrowedFd<'_>,
        from_path: &CStr,
        to_dir: BorrowedFd<'_>,
        to_path: &CStr,
        flags: MoveMountFlags,
    ) -> Result<(), Errno>;
    /// `open(path, flags)` (no `O_CREAT`).
    fn open(&self, path: &CStr, flags: OFlags) -> Result<OwnedFd, Errno>;
    /// `openat(dir, path, flags, mode)`.
    fn openat(
        &self,
        dir: BorrowedFd<'_>,
        path: &CStr,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, Errno>;
    /// `mkdirat(dir, path, mode)`.
    fn mkdirat(&self, dir: BorrowedFd<'_>, path: &CStr, mode: Mode) -> Result<(), Errno>;
    /// `symlinkat(target, dir, path)`.
    fn symlinkat(&self, target: &CStr, dir: BorrowedFd<'_>, path: &CStr) -> Result<(), Errno>;
    /// The file type of `path` (`stat`, following symlinks).
    fn file_type(&self, path: &CStr) -> Result<FileType, Errno>;
    /// `fchdir(dir)`.
    fn fchdir(&self, dir: BorrowedFd<'_>) -> Result<(), Errno>;
    /// `chdir(path)`.
    fn chdir(&self, path: &CStr) -> Result<(), Errno>;

    fn chroot(&self, path: &CStr) -> Result<(), Errno>;
    /// `pivot_root(new_root, put_old)`.
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno>;
    /// `umount2(target, flags)`.
    fn umount2(&self, target: &CStr, flags: UnmountFlags) -> Result<(), Errno>;
    /// `openat2(dir, path, flags | O_CLOEXEC, resolve)`, retried on `EAGAIN` (a concurrent
    /// rename raced with the lookup); `dir` `None` is `AT_FDCWD`.
    fn openat2(
        &self,
        dir: Option<BorrowedFd<'_>>,
        path: &CStr,
        flags: OFlags,
        resolve: ResolveFlags,
    ) -> Result<OwnedFd, Errno>;
    /// `fstat(fd)`, as a [`Node`].
    fn node(&self, fd: BorrowedFd<'_>) -> Result<Node, Errno>;
    /// Whether writes through `fd` fail for the mount or file system (`fstatvfs`'s
    /// `ST_RDONLY`).
    fn read_only(&self, fd: BorrowedFd<'_>) -> Result<bool, Errno>;
    /// `mount_setattr(dir, "", AT_EMPTY_PATH | flags, {attr_clr})`: clears mount attributes.
    fn mount_clear(
        &self,
        dir: BorrowedFd<'_>,
        flags: AtFlags,
        attr_clr: MountAttrFlags,
    ) -> Result<(), Errno>;
    /// `mknodat(dir, path, kind | mode, dev)`.
    fn mknodat(
        &self,
        dir: BorrowedFd<'_>,
        path: &CStr,
        kind: FileType,
        mode: Mode,
        dev: u64,
    ) -> Result<(), Errno>;
    /// `fchownat(dir, path, uid, gid, AT_SYMLINK_NOFOLLOW)`.
    fn chownat(&self, dir: BorrowedFd<'_>, path: &CStr, uid: u32, gid: u32) -> Result<(), Errno>;
    /// `mount_setattr(mount, "", AT_EMPTY_PATH, {MOUNT_ATTR_IDMAP, userns})`: idmaps the
    /// detached mount `mount` with the id maps of user namespace `userns`.
    fn mount_idmap(&self, mount: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Errno>;
}

/// The real syscalls.
pub(crate) struct LinuxSyscalls;

/// `mount_setattr(2)` (rustix lacks it); `userns` goes with `MOUNT_ATTR_IDMAP`.
fn setattr(
    dir: Option<BorrowedFd<'_>>,
    path: &CStr,
    flags: AtFlags,
    (attr_set, attr_clr): (MountAttrFlags, MountAttrFlags),
    userns: Option<BorrowedFd<'_>>,
) -> Result<(), Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: u64::from(attr_set.bits()),
        attr_clr: u64::from(attr_clr.bits()),
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: path is NUL-terminated and attr is a valid mount_attr of the size passed;
    // both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags.bits(),
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == -1 {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    } else {
        Ok(())
    }
}

impl MountSyscalls for LinuxSyscalls {
    fn mount_change(&self, target: &CStr, flags: MountPropagationFlags) -> Result<(), Errno> {
        rustix::mount::mount_change(target, flags)
    }

    fn mount(
        &self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: MountFlags,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        rustix::mount::mount(source, target, fstype, flags, data)
    }

    fn mount_bind(&self, source: &CStr, target: &CStr) -> Result<(), Errno> {
        rustix::mount::mount_bind(source, target)
    }

    fn mount_setattr(
        &self,
        dir: Option<BorrowedFd<'_>>,
        path: &CStr,
        flags: AtFlags,
        attr_set: MountAttrFlags,
    ) -> Result<(), Errno> {
        setattr(dir, path, flags, (attr_set, MountAttrFlags::empty()), None)
    }

    fn open_tree(
        &self,
        dir: BorrowedFd<'_>,
        path: &CStr,
        flags: OpenTreeFlags,
    ) -> Result<OwnedFd, Errno> {
        rustix::mount::open_tree(dir, path, flags)
    }

    fn fs_mount(
        &self,
        fstype: &CStr,
        params: &[FsParam<'_>],
        attrs: MountAttrFlags,
    ) -> Result<OwnedFd, Errno> {
        let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
        for param in params {
            match param {
                FsParam::String(key, value) => {
                    rustix::mount::fsconfig_set_string(&fs, *key, *value)?;
                }
                FsParam::Fd(key, fd) => rustix::mount::fsconfig_set_fd(&fs, *key, *fd)?,
            }
        }
        rustix::mount::fsconfig_create(&fs)?;
        rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
    }

    fn move_mount(
        &self,
        from_dir: BorrowedFd<'_>,
        from_path: &CStr,
        to_dir: BorrowedFd<'_>,
        to_path: &CStr,
        flags: MoveMountFlags,
    ) -> Result<(), Errno> {
        rustix::mount::move_mount(from_dir, from_path, to_dir, to_path, flags)
    }

    fn open(&self, path: &CStr, flags: OFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::open(path, flags, Mode::empty())
    }

    fn openat(
        &self,
        dir: BorrowedFd<'_>,
        path: &CStr,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, Errno> {
        rustix::fs::openat(dir, path, flags, mode)
    }

    fn mkdirat(&self, dir: BorrowedFd<'_>, path: &CStr, mode: Mode) -> Result<(), Errno> {
        rustix::fs::mkdirat(dir, path, mode)
    }

    fn symlinkat(&self, target: &CStr, dir: BorrowedFd<'_>, path: &CStr) -> Result<(), Errno> {
        rustix::fs::symlinkat(target, dir, path)
    }

    fn file_type(&self, path: &CStr) -> Result<FileType, Errno> {
        rustix::fs::stat(path).map(|st| FileType::from_raw_mode(st.st_mode))
    }

    fn fchdir(&self, dir: BorrowedFd<'_>) -> Result<(), Errno> {
        rustix::process::fchdir(dir)
    }

    fn chdir(&self, path: &CStr) -> Result<(), Errno> {
        rustix::process::chdir(path)
    }

    fn chroot(&self, path: &CStr) -> Result<(), Errno> {
        rustix::process::chroot(path)
    }

    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        rustix::process::pivot_root(new_root, put_old)
    }

    fn umount2(&self, target: &CStr, flags: UnmountFlags) -> Result<(), Errno> {
        rustix::mount::unmount(target, flags)
    }

    fn openat2(
        &self,
        dir: Option<BorrowedFd<'_>>,
        path: &CStr,
        flags: OFlags,
        resolve: ResolveFlags,
    ) -> Result<OwnedFd, Errno> {
        let dir = dir.unwrap_or(rustix::fs::CWD);
        let mut attempts = 0;
        loop {
            match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
                Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
                result => return result,
            }
        }
    }

    fn node(&self, fd: BorrowedFd<'_>) -> Result<Node, Errno> {
        let st = rustix::fs::fstat(fd)?;
        Ok(Node {
            kind: FileType::from_raw_mode(st.st_mode),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: u64::try_from(st.st_size).unwrap_or(0),
        })
    }

    fn read_only(&self, fd: BorrowedFd<'_>) -> Result<bool, Errno> {
        let st = rustix::fs::fstatvfs(fd)?;
        Ok(st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
    }

    fn mount_clear(
        &self,
        dir: BorrowedFd<'_>,
        flags: AtFlags,
        attr_clr: MountAttrFlags,
    ) -> Result<(), Errno> {
        setattr(
            Some(dir),
            c"",
            AtFlags::EMPTY_PATH | flags,
            (MountAttrFlags::empty(), attr_clr),
            None,
        )
    }

    fn mknodat(
        &self,
        dir: BorrowedFd<'_>,
        path: &CStr,
        kind: FileType,
        mode: Mode,
        dev: u64,
    ) -> Result<(), Errno> {
        rustix::fs::mknodat(dir, path, kind, mode, dev)
    }

    fn chownat(&self, dir: BorrowedFd<'_>, path: &CStr, uid: u32, gid: u32) -> Result<(), Errno> {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        rustix::fs::chownat(dir, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
    }

    fn mount_idmap(&self, mount: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Errno> {
        setattr(
            Some(mount),
            c"",
            AtFlags::EMPTY_PATH,
            (MountAttrFlags::MOUNT_ATTR_IDMAP, MountAttrFlags::empty()),
            Some(userns),
        )
    }
}

#[cfg(test)]
pub(crate) use fake::{Call, RecordingSyscalls};

#[cfg(test)]
mod fake {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::os::fd::RawFd;

    use super::*;

    /// One recorded call. Paths are as passed; a directory fd shows as the path it was opened
    /// at (`/tmp`, `/tmp/dev`), a clone made by `open_tree` as `image:NAME`, `AT_FDCWD` as `.`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Call {
        MountChange {
            target: String,
            flags: MountPropagationFlags,
        },
        Mount {
            source: String,
            target: String,
            fstype: String,
            flags: MountFlags,
            data: Option<String>,
        },
        MountBind {
            source: String,
            target: String,
        },
        MountSetattr {
            dir: String,
            path: String,
            flags: AtFlags,
            attr_set: MountAttrFlags,
        },
        OpenTree {
            dir: String,
            path: String,
            flags: OpenTreeFlags,
        },
        /// `params` as `key=value`, a descriptor as the name it stands for.
        FsMount {
            fstype: String,
            params: Vec<String>,
            attrs: MountAttrFlags,
        },
        MoveMount {
            from_dir: String,
            from_path: String,
            to_dir: String,
            to_path: String,
            flags: MoveMountFlags,
        },
        Open {
            path: String,
            flags: OFlags,
        },
        Openat {
            dir: String,
            path: String,
            flags: OFlags,
            mode: u32,
        },
        Mkdirat {
            dir: String,
            path: String,
            mode: u32,
        },
        Symlinkat {
            target: String,
            dir: String,
            path: String,
        },
        FileType {
            path: String,
        },
        Fchdir {
            dir: String,
        },
        Chdir {
            path: String,
        },
        Chroot {
            path: String,
        },
        PivotRoot {
            new_root: String,
            put_old: String,
        },
        Umount2 {
            target: String,
            flags: UnmountFlags,
        },
        Openat2 {
            dir: String,
            path: String,
            flags: OFlags,
            resolve: ResolveFlags,
        },
        Mknodat {
            dir: String,
            path: String,
            kind: FileType,
            mode: u32,
            dev: u64,
        },
        Chownat {
            dir: String,
            path: String,
            uid: u32,
            gid: u32,
        },
        MountClear {
            dir: String,
            flags: AtFlags,
            attr_clr: MountAttrFlags,
        },
        /// `userns` as the raw descriptor passed.
        MountIdmap {
            mount: String,
            userns: RawFd,
        },
    }

    type FailRule = (Box<dyn Fn(&Call) -> bool>, Errno);

    /// Records every call and changes nothing. Calls that return a descriptor get a real but
    /// harmless one (`O_PATH` of `/`; for `open_tree`, `O_PATH` of the entry itself, so the
    /// caller's `fstat` sees the real type; for `fs_mount`, a duplicate of its first
    /// descriptor parameter, so an overlay reads as its top layer). Host device nodes all exist unless removed with
    /// [`RecordingSyscalls::without_host_file`].
    pub(crate) struct RecordingSyscalls {
        calls: RefCell<Vec<Call>>,
        fd_names: RefCell<HashMap<RawFd, String>>,
        fail: Vec<FailRule>,
        missing: Vec<String>,
        absent: RefCell<Vec<String>>,
        nodes: HashMap<String, Node>,
        read_only: Vec<String>,
    }

    /// The path `name` in the directory a token stands for.
    fn joined(dir: &str, name: &str) -> String {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }

    fn text(s: &CStr) -> String {
        s.to_string_lossy().into_owned()
    }

    impl RecordingSyscalls {
        pub(crate) fn new() -> Self {
            RecordingSyscalls {
                calls: RefCell::default(),
                fd_names: RefCell::default(),
                fail: Vec::new(),
                missing: Vec::new(),
                absent: RefCell::default(),
                nodes: HashMap::new(),
                read_only: Vec::new(),
            }
        }

        /// Makes `openat2` of `path` fail with `ENOENT`, as if nothing were there, until a
        /// `mkdirat` or `openat` creates it.
        pub(crate) fn without_path(self, path: &str) -> Self {
            self.absent.borrow_mut().push(path.to_owned());
            self
        }

        /// Makes `read_only` report what `openat2` opened at `path` (or a clone of it) as
        /// on a read-only mount; everything else is writable.
        pub(crate) fn with_read_only(mut self, path: &str) -> Self {
            self.read_only.push(path.to_owned());
            self
        }

        fn created(&self, dir: &str, name: &str) {
            let path = joined(dir, name);
            self.absent.borrow_mut().retain(|p| *p != path);
        }

        /// Makes `node` of what `openat2` opened at `path` (or a clone of it) report `node`;
        /// anything else is a root-owned directory.
        pub(crate) fn with_node(mut self, path: &str, node: Node) -> Self {
            self.nodes.insert(path.to_owned(), node);
            self
        }

        /// Makes every call matching `when` fail with `errno` (it is still recorded).
        pub(crate) fn failing(
            mut self,
            when: impl Fn(&Call) -> bool + 'static,
            errno: Errno,
        ) -> Self {
            self.fail.push((Box::new(when), errno));
            self
        }

        /// Makes `file_type(path)` fail with `ENOENT`.
        pub(crate) fn without_host_file(mut self, path: &str) -> Self {
            self.missing.push(path.to_owned());
            self
        }

        /// The calls so far, in order.
        pub(crate) fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        fn record(&self, call: Call) -> Result<(), Errno> {
            let errno = self
                .fail
                .iter()
                .find(|(when, _)| when(&call))
                .map(|(_, errno)| *errno);
            self.calls.borrow_mut().push(call);
            errno.map_or(Ok(()), Err)
        }

        fn name_of(&self, fd: BorrowedFd<'_>) -> String {
            let raw = fd.as_raw_fd();
            self.fd_names
                .borrow()
                .get(&raw)
                .cloned()
                .unwrap_or_else(|| format!("fd {raw}"))
        }

        fn at_name(&self, dir: Option<BorrowedFd<'_>>) -> String {
            dir.map_or_else(|| ".".to_owned(), |d| self.name_of(d))
        }

        /// A descriptor standing for `name` in later records.
        fn token(&self, fd: OwnedFd, name: String) -> OwnedFd {
            self.fd_names.borrow_mut().insert(fd.as_raw_fd(), name);
            fd
        }

        fn root_token(&self, name: String) -> OwnedFd {
            let fd = rustix::fs::open(c"/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .expect("open / as a token descriptor");
            self.token(fd, name)
        }
    }

    impl MountSyscalls for RecordingSyscalls {
        fn mount_change(&self, target: &CStr, flags: MountPropagationFlags) -> Result<(), Errno> {
            self.record(Call::MountChange {
                target: text(target),
                flags,
            })
        }

        fn mount(
            &self,
            source: &CStr,
            target: &CStr,
            fstype: &CStr,
            flags: MountFlags,
            data: Option<&CStr>,
        ) -> Result<(), Errno> {
            self.record(Call::Mount {
                source: text(source),
                target: text(target),
                fstype: text(fstype),
                flags,
                data: data.map(text),
            })
        }

        fn mount_bind(&self, source: &CStr, target: &CStr) -> Result<(), Errno> {
            self.record(Call::MountBind {
                source: text(source),
                target: text(target),
            })
        }

        fn mount_setattr(
            &self,
            dir: Option<BorrowedFd<'_>>,
            path: &CStr,
            flags: AtFlags,
            attr_set: MountAttrFlags,
        ) -> Result<(), Errno> {
            self.record(Call::MountSetattr {
                dir: self.at_name(dir),
                path: text(path),
                flags,
                attr_set,
            })
        }

        fn open_tree(
            &self,
            dir: BorrowedFd<'_>,
            path: &CStr,
            flags: OpenTreeFlags,
        ) -> Result<OwnedFd, Errno> {
            self.record(Call::OpenTree {
                dir: self.name_of(dir),
                path: text(path),
                flags,
            })?;
            if path.is_empty() {
                let fd = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
                return Ok(self.token(fd, format!("clone:{}", self.name_of(dir))));
            }
            let fd = rustix::fs::openat(
                dir,
                path,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(self.token(fd, format!("image:{}", text(path))))
        }

        fn fs_mount(
            &self,
            fstype: &CStr,
            params: &[FsParam<'_>],
            attrs: MountAttrFlags,
        ) -> Result<OwnedFd, Errno> {
            let recorded = params
                .iter()
                .map(|p| match p {
                    FsParam::String(k, v) => format!("{}={}", text(k), text(v)),
                    FsParam::Fd(k, fd) => format!("{}={}", text(k), self.name_of(*fd)),
                })
                .collect();
            self.record(Call::FsMount {
                fstype: text(fstype),
                params: recorded,
                attrs,
            })?;
            let name = format!("fs:{}", text(fstype));
            match params.iter().find_map(|p| match p {
                FsParam::Fd(_, fd) => Some(*fd),
                FsParam::String(..) => None,
            }) {
                Some(top) => Ok(self.token(rustix::io::fcntl_dupfd_cloexec(top, 0)?, name)),
                None => Ok(self.root_token(name)),
            }
        }

        fn move_mount(
            &self,
            from_dir: BorrowedFd<'_>,
            from_path: &CStr,
            to_dir: BorrowedFd<'_>,
            to_path: &CStr,
            flags: MoveMountFlags,
        ) -> Result<(), Errno> {
            self.record(Call::MoveMount {
                from_dir: self.name_of(from_dir),
                from_path: text(from_path),
                to_dir: self.name_of(to_dir),
                to_path: text(to_path),
                flags,
            })
        }

        fn open(&self, path: &CStr, flags: OFlags) -> Result<OwnedFd, Errno> {
            self.record(Call::Open {
                path: text(path),
                flags,
            })?;
            Ok(self.root_token(text(path)))
        }

        fn openat(
            &self,
            dir: BorrowedFd<'_>,
            path: &CStr,
            flags: OFlags,
            mode: Mode,
        ) -> Result<OwnedFd, Errno> {
            let dir = self.name_of(dir);
            let name = format!("{dir}/{}", text(path));
            self.record(Call::Openat {
                dir: dir.clone(),
                path: text(path),
                flags,
                mode: mode.as_raw_mode(),
            })?;
            if flags.contains(OFlags::CREATE) {
                self.created(&dir, &text(path));
            }
            Ok(self.root_token(name))
        }

        fn mkdirat(&self, dir: BorrowedFd<'_>, path: &CStr, mode: Mode) -> Result<(), Errno> {
            let dir = self.name_of(dir);
            self.record(Call::Mkdirat {
                dir: dir.clone(),
                path: text(path),
                mode: mode.as_raw_mode(),
            })?;
            self.created(&dir, &text(path));
            Ok(())
        }

        fn symlinkat(&self, target: &CStr, dir: BorrowedFd<'_>, path: &CStr) -> Result<(), Errno> {
            self.record(Call::Symlinkat {
                target: text(target),
                dir: self.name_of(dir),
                path: text(path),
            })
        }

        fn file_type(&self, path: &CStr) -> Result<FileType, Errno> {
            let path = text(path);
            let missing = self.missing.contains(&path);
            self.record(Call::FileType { path })?;
            if missing {
                Err(Errno::NOENT)
            } else {
                Ok(FileType::CharacterDevice)
            }
        }

        fn fchdir(&self, dir: BorrowedFd<'_>) -> Result<(), Errno> {
            self.record(Call::Fchdir {
                dir: self.name_of(dir),
            })
        }

        fn chdir(&self, path: &CStr) -> Result<(), Errno> {
            self.record(Call::Chdir { path: text(path) })
        }

        fn chroot(&self, path: &CStr) -> Result<(), Errno> {
            self.record(Call::Chroot { path: text(path) })
        }

        fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
            self.record(Call::PivotRoot {
                new_root: text(new_root),
                put_old: text(put_old),
            })
        }

        fn umount2(&self, target: &CStr, flags: UnmountFlags) -> Result<(), Errno> {
            self.record(Call::Umount2 {
                target: text(target),
                flags,
            })
        }

        fn openat2(
            &self,
            dir: Option<BorrowedFd<'_>>,
            path: &CStr,
            flags: OFlags,
            resolve: ResolveFlags,
        ) -> Result<OwnedFd, Errno> {
            let path = text(path);
            let absent = self.absent.borrow().contains(&path);
            self.record(Call::Openat2 {
                dir: self.at_name(dir),
                path: path.clone(),
                flags,
                resolve,
            })?;
            if absent {
                return Err(Errno::NOENT);
            }
            Ok(self.root_token(path))
        }

        fn node(&self, fd: BorrowedFd<'_>) -> Result<Node, Errno> {
            let name = self.name_of(fd);
            let name = name.trim_start_matches("clone:");
            Ok(self
                .nodes
                .get(name)
                .copied()
                .unwrap_or_else(Node::directory))
        }

        fn read_only(&self, fd: BorrowedFd<'_>) -> Result<bool, Errno> {
            let name = self.name_of(fd);
            Ok(self
                .read_only
                .iter()
                .any(|p| *p == name.trim_start_matches("clone:")))
        }

        fn mount_clear(
            &self,
            dir: BorrowedFd<'_>,
            flags: AtFlags,
            attr_clr: MountAttrFlags,
        ) -> Result<(), Errno> {
            self.record(Call::MountClear {
                dir: self.name_of(dir),
                flags,
                attr_clr,
            })
        }

        fn mknodat(
            &self,
            dir: BorrowedFd<'_>,
            path: &CStr,
            kind: FileType,
            mode: Mode,
            dev: u64,
        ) -> Result<(), Errno> {
            self.record(Call::Mknodat {
                dir: self.name_of(dir),
                path: text(path),
                kind,
                mode: mode.as_raw_mode(),
                dev,
            })
        }

        fn chownat(
            &self,
            dir: BorrowedFd<'_>,
            path: &CStr,
            uid: u32,
            gid: u32,
        ) -> Result<(), Errno> {
            self.record(Call::Chownat {
                dir: self.name_of(dir),
                path: text(path),
                uid,
                gid,
            })
        }

        fn mount_idmap(&self, mount: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Errno> {
            self.record(Call::MountIdmap {
                mount: self.name_of(mount),
                userns: userns.as_raw_fd(),
            })
        }
    }
}
