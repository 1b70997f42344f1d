//! The syscalls that change init itself rather than its mounts: namespaces (`unshare`), ids,
//! capabilities, resource limits, keyrings, `prctl` and Landlock, behind a trait as the mount
//! syscalls are behind [`super::syscalls::MountSyscalls`]. [`LinuxSyscalls`] forwards them to
//! the kernel (capabilities through the `caps` crate, Landlock through the `landlock` crate);
//! the test-only `RecordingProcess` records them, so the order and the arguments that
//! `credentials.rs`, `capabilities.rs`, `namespaces.rs`, `user_namespace.rs`, `rlimits.rs`,
//! `keyring.rs` and `landlock.rs` produce are checked without root.

use std::io;
use std::os::fd::BorrowedFd;

use caps::{CapSet, Capability, CapsHashSet};
use rustix::io::Errno;
use rustix::process::Resource;
use rustix::thread::UnshareFlags;

use super::sys;
use super::syscalls::LinuxSyscalls;

/// What became of a Landlock scoping request on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeOutcome {
    /// Every requested scope is enforced.
    Enforced,
    /// The kernel has Landlock but not every requested scope (ABI before 6).
    Partial,
    /// The kernel has no usable Landlock: nothing is enforced.
    NotEnforced,
}

/// The Landlock scopes to restrict the calling process (and its future children) to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scopes {
    pub abstract_unix_sockets: bool,
    pub signals: bool,
}

/// The operations that set up init's own namespaces and credentials.
pub(crate) trait ProcessSyscalls {
    /// `unshare(flags)` (never `CLONE_NEWUSER`: see [`Self::enter_user_namespace`]).
    fn unshare(&self, flags: UnshareFlags) -> Result<(), Errno>;
    /// `unshare(CLONE_NEWUSER)`, with `uid_map` and `gid_map` (the kernel's text format)
    /// written by a child left behind in the parent namespace: only a process with CAP_SETUID
    /// there may map more than its own id.
    fn enter_user_namespace(&self, uid_map: &str, gid_map: &str) -> Result<(), Errno>;
    /// `setns(userns, CLONE_NEWUSER)`: joins an existing user namespace (the image's own
    /// users, `block_namespace.rs`); the bounding set is full again afterwards.
    fn join_user_namespace(&self, userns: BorrowedFd<'_>) -> Result<(), Errno>;
    /// Brings the loopback interface of the current network namespace up.
    fn set_loopback_up(&self) -> Result<(), Errno>;
    /// `setrlimit(resource, {soft, hard})`; `None` is infinity.
    fn set_rlimit(
        &self,
        resource: Resource,
        soft: Option<u64>,
        hard: Option<u64>,
    ) -> Result<(), Errno>;
    /// `setgroups(gids)`.
    fn set_groups(&self, gids: &[u32]) -> Result<(), Errno>;
    /// `setresgid(gid, gid, gid)`.
    fn set_resgid(&self, gid: u32) -> Result<(), Errno>;
    /// `setresuid(uid, uid, uid)`.
    fn set_resuid(&self, uid: u32) -> Result<(), Errno>;
    /// `prctl(PR_SET_KEEPCAPS)`: whether the permitted set survives the uid change.
    fn set_keep_capabilities(&self, keep: bool) -> Result<(), Errno>;
    /// Drops `cap` from the bounding set.
    fn drop_bounding(&self, cap: Capability) -> Result<(), Errno>;
    /// Drops capability number `cap` from the bounding set: for the numbers of a kernel newer
    /// than the `caps` crate, which has no name for them.
    fn drop_bounding_number(&self, cap: u32) -> Result<(), Errno>;
    /// Sets the effective, permitted or inheritable set to exactly `caps`.
    fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> Result<(), Errno>;
    /// Empties the ambient set.
    fn clear_ambient(&self) -> Result<(), Errno>;
    /// Raises `cap` in the ambient set.
    fn raise_ambient(&self, cap: Capability) -> Result<(), Errno>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&self) -> Result<(), Errno>;
    /// `prctl(PR_SET_DUMPABLE, dumpable)`.
    fn set_dumpable(&self, dumpable: bool) -> Result<(), Errno>;
    /// `prctl(PR_SET_PDEATHSIG, signal)`.
    fn set_parent_death_signal(&self, signal: i32) -> Result<(), Errno>;
    /// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`: a new anonymous session keyring, owned by
    /// the current uid; returns its serial.
    fn join_session_keyring(&self) -> Result<i32, Errno>;
    /// `keyctl(KEYCTL_LINK, @u, @s)`: links the user keyring into the session keyring.
    fn link_user_keyring(&self) -> Result<(), Errno>;
    /// Restricts the calling process to a new Landlock domain with `scopes`, best effort.
    fn landlock_scope(&self, scopes: Scopes) -> Result<ScopeOutcome, Errno>;
}

/// The errno a `caps` call failed with. The crate keeps only a message, but it fails right
/// after the syscall and formatting that message does not touch errno.
fn caps_errno(_: caps::errors::CapsError) -> Errno {
    match Errno::from_io_error(&io::Error::last_os_error()) {
        Some(e) if e.raw_os_error() != 0 => e,
        _ => Errno::PERM,
    }
}

fn errno(e: io::Error) -> Errno {
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

/// `keyctl(2)` with integer arguments.
fn keyctl(operation: libc::c_long, arg2: libc::c_long, arg3: libc::c_long) -> Result<i64, Errno> {
    // SAFETY: the operations used here take integers (or a NULL name) only.
    let ret = unsafe { libc::syscall(libc::SYS_keyctl, operation, arg2, arg3, 0, 0) };
    if ret == -1 {
        Err(errno(io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_LINK: libc::c_long = 8;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
const KEY_SPEC_USER_KEYRING: libc::c_long = -4;

impl ProcessSyscalls for LinuxSyscalls {
    fn unshare(&self, flags: UnshareFlags) -> Result<(), Errno> {
        // SAFETY: no CLONE_FILES or CLONE_FS juggling; init is single-threaded.
        unsafe { rustix::thread::unshare_unsafe(flags) }
    }

    fn enter_user_namespace(&self, uid_map: &str, gid_map: &str) -> Result<(), Errno> {
        let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let parent = rustix::process::getpid().as_raw_nonzero().get();
        // SAFETY: init is single-threaded; the child ends in sys::exit.
        match unsafe { sys::fork() }.map_err(errno)? {
            sys::Forked::Child => {
                drop(go_w);
                let mut byte = [0u8; 1];
                let code = match rustix::io::read(&go_r, &mut byte) {
                    Ok(1) => write_id_maps(parent, uid_map, gid_map)
                        .map_or_else(|e| e.raw_os_error(), |()| 0),
                    // The parent failed to unshare: nothing to map.
                    _ => libc::ECANCELED,
                };
                sys::exit(code)
            }
            sys::Forked::Parent(child) => {
                drop(go_r);
                // SAFETY: as in `unshare` above.
                let unshared = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER) };
                if unshared.is_ok() {
                    // A failed write leaves the child at EOF, which it takes as cancel.
                    let _ = rustix::io::write(&go_w, b"m");
                }
                drop(go_w);
                let status = sys::waitpid(child, 0).map_err(errno)?;
                unshared?;
                match status {
                    Some((_, status)) if libc::WIFEXITED(status) => {
                        match libc::WEXITSTATUS(status) {
                            0 => Ok(()),
                            code => Err(Errno::from_raw_os_error(code)),
                        }
                    }
                    _ => Err(Errno::CHILD),
                }
            }
        }
    }

    fn join_user_namespace(&self, userns: BorrowedFd<'_>) -> Result<(), Errno> {
        rustix::thread::move_into_link_name_space(
            userns,
            Some(rustix::thread::LinkNameSpaceType::User),
        )
    }

    fn set_loopback_up(&self) -> Result<(), Errno> {
        use std::os::fd::AsRawFd;
        let socket = rustix::net::socket_with(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain data; all zeroes is a valid (empty) request.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags of the ifreq passed,
        // which lives across both calls.
        unsafe {
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) == -1 {
                return Err(errno(io::Error::last_os_error()));
            }
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) == -1 {
                return Err(errno(io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    fn set_rlimit(
        &self,
        resource: Resource,
        soft: Option<u64>,
        hard: Option<u64>,
    ) -> Result<(), Errno> {
        rustix::process::setrlimit(
            resource,
            rustix::process::Rlimit {
                current: soft,
                maximum: hard,
            },
        )
    }

    fn set_groups(&self, gids: &[u32]) -> Result<(), Errno> {
        // SAFETY: the pointer and length describe a valid slice of gid_t.
        let ret = unsafe { libc::setgroups(gids.len(), gids.as_ptr()) };
        if ret == -1 {
            Err(errno(io::Error::last_os_error()))
        } else {
            Ok(())
        }
    }

    fn set_resgid(&self, gid: u32) -> Result<(), Errno> {
        sys::setresgid(gid).map_err(errno)
    }

    fn set_resuid(&self, uid: u32) -> Result<(), Errno> {
        sys::setresuid(uid).map_err(errno)
    }

    fn set_keep_capabilities(&self, keep: bool) -> Result<(), Errno> {
        caps::securebits::set_keepcaps(keep).map_err(caps_errno)
    }

    fn drop_bounding(&self, cap: Capability) -> Result<(), Errno> {
        caps::drop(None, CapSet::Bounding, cap).map_err(caps_errno)
    }

    fn drop_bounding_number(&self, cap: u32) -> Result<(), Errno> {
        sys::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)).map_err(errno)
    }

    fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> Result<(), Errno> {
        caps::set(None, set, caps).map_err(caps_errno)
    }

    fn clear_ambient(&self) -> Result<(), Errno> {
        caps::clear(None, CapSet::Ambient).map_err(caps_errno)
    }

    fn raise_ambient(&self, cap: Capability) -> Result<(), Errno> {
        caps::raise(None, CapSet::Ambient, cap).map_err(caps_errno)
    }

    fn set_no_new_privs(&self) -> Result<(), Errno> {
        rustix::thread::set_no_new_privs(true)
    }

    fn set_dumpable(&self, dumpable: bool) -> Result<(), Errno> {
        sys::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(dumpable)).map_err(errno)
    }

    fn set_parent_death_signal(&self, signal: i32) -> Result<(), Errno> {
        sys::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong).map_err(errno)
    }

    fn join_session_keyring(&self) -> Result<i32, Errno> {
        keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0).map(|serial| serial as i32)
    }

    fn link_user_keyring(&self) -> Result<(), Errno> {
        keyctl(KEYCTL_LINK, KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING).map(drop)
    }

    fn landlock_scope(&self, scopes: Scopes) -> Result<ScopeOutcome, Errno> {
        use landlock::{
            CompatLevel, Compatible, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
        };
        let mut wanted = landlock::BitFlags::<Scope>::empty();
        if scopes.abstract_unix_sockets {
            wanted |= Scope::AbstractUnixSocket;
        }
        if scopes.signals {
            wanted |= Scope::Signal;
        }
        let status = landlock::Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .scope(wanted)
            .and_then(|ruleset| ruleset.create())
            // no_new_privs is the credentials' business (NoNewPrivileges=); init still holds
            // CAP_SYS_ADMIN here, which Landlock accepts instead.
            .map(|created| created.no_new_privs(false))
            .and_then(|created| created.restrict_self())
            .map_err(|e| landlock_errno(&e))?;
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => ScopeOutcome::Enforced,
            RulesetStatus::PartiallyEnforced => ScopeOutcome::Partial,
            RulesetStatus::NotEnforced => ScopeOutcome::NotEnforced,
        })
    }
}

/// The errno inside a `landlock` crate error, if it carries one.
fn landlock_errno(e: &landlock::RulesetError) -> Errno {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(errno) = Errno::from_io_error(io)
        {
            return errno;
        }
        source = err.source();
    }
    Errno::INVAL
}

/// Writes the id maps of process `pid` (run by the child of [`enter_user_namespace`]).
/// `setgroups` stays allowed: the writer has CAP_SETGID in the parent namespace, and init must
/// still set the service's supplementary groups inside.
pub(crate) fn write_id_maps(pid: i32, uid_map: &str, gid_map: &str) -> Result<(), Errno> {
    for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        let fd = rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        // The kernel takes a map in one write only.
        let written = rustix::io::write(&fd, map.as_bytes())?;
        if written != map.len() {
            return Err(Errno::IO);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) use fake::{ProcessCall, RecordingProcess};

#[cfg(test)]
mod fake {
    use std::cell::{Cell, RefCell};

    use super::*;

    /// One recorded call, with its arguments as passed (capability sets sorted by number).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum ProcessCall {
        Unshare(UnshareFlags),
        EnterUserNamespace {
            uid_map: String,
            gid_map: String,
        },
        /// The raw descriptor passed.
        JoinUserNamespace(i32),
        SetLoopbackUp,
        SetRlimit {
            resource: Resource,
            soft: Option<u64>,
            hard: Option<u64>,
        },
        SetGroups(Vec<u32>),
        SetResgid(u32),
        SetResuid(u32),
        SetKeepCapabilities(bool),
        DropBounding(Capability),
        DropBoundingNumber(u32),
        /// The set as `caps` names it (`Permitted`).
        SetCapabilities {
            set: String,
            caps: Vec<Capability>,
        },
        ClearAmbient,
        RaiseAmbient(Capability),
        SetNoNewPrivs,
        SetDumpable(bool),
        SetParentDeathSignal(i32),
        JoinSessionKeyring,
        LinkUserKeyring,
        LandlockScope(Scopes),
    }

    type FailRule = (Box<dyn Fn(&ProcessCall) -> bool>, Errno);

    /// Records every call and changes nothing. Bounding-set drops past the `caps` crate's last
    /// capability fail with EINVAL from [`RecordingProcess::kernel_last_cap`] on, as the
    /// kernel's do; Landlock answers [`RecordingProcess::landlock`]'s outcome.
    pub(crate) struct RecordingProcess {
        calls: RefCell<Vec<ProcessCall>>,
        fail: Vec<FailRule>,
        kernel_last_cap: u32,
        landlock: Cell<ScopeOutcome>,
    }

    impl RecordingProcess {
        pub(crate) fn new() -> Self {
            RecordingProcess {
                calls: RefCell::default(),
                fail: Vec::new(),
                kernel_last_cap: 40,
                landlock: Cell::new(ScopeOutcome::Enforced),
            }
        }

        /// Makes every call matching `when` fail with `errno` (it is still recorded).
        pub(crate) fn failing(
            mut self,
            when: impl Fn(&ProcessCall) -> bool + 'static,
            errno: Errno,
        ) -> Self {
            self.fail.push((Box::new(when), errno));
            self
        }

        /// A kernel whose last capability is `last`.
        pub(crate) fn kernel_last_cap(mut self, last: u32) -> Self {
            self.kernel_last_cap = last;
            self
        }

        /// What Landlock scoping achieves on this fake kernel.
        pub(crate) fn landlock(self, outcome: ScopeOutcome) -> Self {
            self.landlock.set(outcome);
            self
        }

        pub(crate) fn calls(&self) -> Vec<ProcessCall> {
            self.calls.borrow().clone()
        }

        fn record(&self, call: ProcessCall) -> Result<(), Errno> {
            let errno = self
                .fail
                .iter()
                .find(|(when, _)| when(&call))
                .map(|(_, errno)| *errno);
            self.calls.borrow_mut().push(call);
            errno.map_or(Ok(()), Err)
        }
    }

    fn sorted(caps: &CapsHashSet) -> Vec<Capability> {
        let mut caps: Vec<Capability> = caps.iter().copied().collect();
        caps.sort_by_key(|c| c.index());
        caps
    }

    impl ProcessSyscalls for RecordingProcess {
        fn unshare(&self, flags: UnshareFlags) -> Result<(), Errno> {
            self.record(ProcessCall::Unshare(flags))
        }

        fn enter_user_namespace(&self, uid_map: &str, gid_map: &str) -> Result<(), Errno> {
            self.record(ProcessCall::EnterUserNamespace {
                uid_map: uid_map.to_owned(),
                gid_map: gid_map.to_owned(),
            })
        }

        fn join_user_namespace(&self, userns: BorrowedFd<'_>) -> Result<(), Errno> {
            use std::os::fd::AsRawFd;
            self.record(ProcessCall::JoinUserNamespace(userns.as_raw_fd()))
        }

        fn set_loopback_up(&self) -> Result<(), Errno> {
            self.record(ProcessCall::SetLoopbackUp)
        }

        fn set_rlimit(
            &self,
            resource: Resource,
            soft: Option<u64>,
            hard: Option<u64>,
        ) -> Result<(), Errno> {
            self.record(ProcessCall::SetRlimit {
                resource,
                soft,
                hard,
            })
        }

        fn set_groups(&self, gids: &[u32]) -> Result<(), Errno> {
            self.record(ProcessCall::SetGroups(gids.to_vec()))
        }

        fn set_resgid(&self, gid: u32) -> Result<(), Errno> {
            self.record(ProcessCall::SetResgid(gid))
        }

        fn set_resuid(&self, uid: u32) -> Result<(), Errno> {
            self.record(ProcessCall::SetResuid(uid))
        }

        fn set_keep_capabilities(&self, keep: bool) -> Result<(), Errno> {
            self.record(ProcessCall::SetKeepCapabilities(keep))
        }

        fn drop_bounding(&self, cap: Capability) -> Result<(), Errno> {
            self.record(ProcessCall::DropBounding(cap))
        }

        fn drop_bounding_number(&self, cap: u32) -> Result<(), Errno> {
            self.record(ProcessCall::DropBoundingNumber(cap))?;
            if cap > self.kernel_last_cap {
                Err(Errno::INVAL)
            } else {
                Ok(())
            }
        }

        fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> Result<(), Errno> {
            self.record(ProcessCall::SetCapabilities {
                set: format!("{set:?}"),
                caps: sorted(caps),
            })
        }

        fn clear_ambient(&self) -> Result<(), Errno> {
            self.record(ProcessCall::ClearAmbient)
        }

        fn raise_ambient(&self, cap: Capability) -> Result<(), Errno> {
            self.record(ProcessCall::RaiseAmbient(cap))
        }

        fn set_no_new_privs(&self) -> Result<(), Errno> {
            self.record(ProcessCall::SetNoNewPrivs)
        }

        fn set_dumpable(&self, dumpable: bool) -> Result<(), Errno> {
            self.record(ProcessCall::SetDumpable(dumpable))
        }

        fn set_parent_death_signal(&self, signal: i32) -> Result<(), Errno> {
            self.record(ProcessCall::SetParentDeathSignal(signal))
        }

        fn join_session_keyring(&self) -> Result<i32, Errno> {
            self.record(ProcessCall::JoinSessionKeyring).map(|()| 1234)
        }

        fn link_user_keyring(&self) -> Result<(), Errno> {
            self.record(ProcessCall::LinkUserKeyring)
        }

        fn landlock_scope(&self, scopes: Scopes) -> Result<ScopeOutcome, Errno> {
            self.record(ProcessCall::LandlockScope(scopes))
                .map(|()| self.landlock.get())
        }
    }
}
