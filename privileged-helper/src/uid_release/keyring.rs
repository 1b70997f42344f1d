//! The keys a uid leaves in the kernel: its user keyring (`@u`), user-session keyring (`@us`)
//! and persistent keyring outlive its processes, and the next holder of the uid would find
//! them there (the session keyring is fresh per start and goes with the service).
//!
//! Only the uid itself reaches its own keyrings by their special ids, so a forked child takes
//! on the uid (no capabilities left, every inherited descriptor but its report pipe closed, not
//! dumpable) and clears each keyring. A hostile holder may have taken away the rights a clear
//! needs (write, and setattr to give it back): the keyring is then invalidated (which needs
//! search, as any lookup of a key in it does). When neither is possible the release fails, and
//! berthd keeps the uid out of use rather than hand it to a new holder. The child runs only
//! raw syscalls, no allocation, so the fork is safe from a multi-threaded caller too.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::sandbox::sys;

// keyctl(2) operations and special keyring ids (linux/keyctl.h).
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_LINK: libc::c_long = 8;
const KEYCTL_CLEAR: libc::c_long = 7;
const KEYCTL_INVALIDATE: libc::c_long = 21;
const KEYCTL_GET_PERSISTENT: libc::c_long = 22;
const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
const KEY_SPEC_USER_SESSION_KEYRING: libc::c_long = -5;
/// The rights the kernel gives a user's keyrings when it creates them: all to the possessor
/// but setattr, all to the owner, nothing to others.
const DEFAULT_PERM: libc::c_long = 0x1f3f_0000;

/// The child's report: the step that failed and its errno (0 and 0 for success).
const REPORT_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot fork the keyring cleaner: {0}")]
    Fork(#[source] io::Error),
    #[error("cannot create the keyring cleaner's pipe: {0}")]
    Pipe(#[source] io::Error),
    #[error("the keyring cleaner reported nothing (it died)")]
    NoReport,
    #[error("cannot {step}: {source}")]
    Step {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The steps the child reports by number.
const STEPS: [&str; 6] = [
    "take on the uid",
    "find the user keyring",
    "clear the user keyring",
    "find the user-session keyring",
    "clear the user-session keyring",
    "clear the persistent keyring",
];

/// Clears the user, user-session and persistent keyrings of `uid` (gid the same number) in the
/// helper's user namespace.
pub fn clear_user_keyrings(uid: u32) -> Result<(), KeyringError> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| KeyringError::Pipe(e.into()))?;
    // SAFETY: the child runs only raw syscalls (no allocation, no locks) and ends in
    // sys::exit, so forking from any process, threaded or not, is sound.
    match unsafe { sys::fork() }.map_err(KeyringError::Fork)? {
        sys::Forked::Child => {
            drop(read);
            let (step, errno) = clear_as(uid, &write);
            let mut report = [0u8; REPORT_BYTES];
            report[..4].copy_from_slice(&step.to_ne_bytes());
            report[4..].copy_from_slice(&errno.to_ne_bytes());
            // SAFETY: writing a stack buffer to a descriptor we own.
            unsafe { libc::write(write.as_raw_fd(), report.as_ptr().cast(), REPORT_BYTES) };
            sys::exit(0)
        }
        sys::Forked::Parent(pid) => {
            drop(write);
            let report = read_report(&read);
            // Reaped here unless SIGCHLD is ignored (the helper), where the kernel does.
            let _ = sys::waitpid(pid, 0);
            let (step, errno) = report.ok_or(KeyringError::NoReport)?;
            if errno == 0 {
                return Ok(());
            }
            Err(KeyringError::Step {
                step: STEPS
                    .get(usize::try_from(step).unwrap_or(0))
                    .copied()
                    .unwrap_or("clear the keyrings"),
                source: io::Error::from_raw_os_error(errno),
            })
        }
    }
}

fn read_report(pipe: &OwnedFd) -> Option<(i32, i32)> {
    let mut buf = [0u8; REPORT_BYTES];
    let mut got = 0;
    while got < REPORT_BYTES {
        match rustix::io::read(pipe, &mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    let step = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((step, errno))
}

fn errno() -> i32 {
    // SAFETY: reading the thread's errno location.
    unsafe { *libc::__errno_location() }
}

fn keyctl(op: libc::c_long, a: libc::c_long, b: libc::c_long) -> libc::c_long {
    // SAFETY: integer-only keyctl operations.
    unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            op,
            a,
            b,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    }
}

/// Empties keyring `id` (restoring the owner's rights first, where the holder left setattr),
/// else invalidates it; 0 or the clear's errno.
fn scrub(id: libc::c_long) -> i32 {
    // Fails without setattr; the clear or the invalidation then says what holds.
    keyctl(KEYCTL_SETPERM, id, DEFAULT_PERM);
    if keyctl(KEYCTL_CLEAR, id, 0) == 0 {
        return 0;
    }
    let clear = errno();
    if keyctl(KEYCTL_INVALIDATE, id, 0) == 0 {
        0
    } else {
        clear
    }
}

/// In the child: becomes `uid` and clears its keyrings; returns (step, errno), errno 0 when
/// everything was cleared.
fn clear_as(uid: u32, report: &OwnedFd) -> (i32, i32) {
    // Only the report pipe stays open: the uid must not reach the helper's descriptors
    // through this process.
    let fd = report.as_fd().as_raw_fd();
    // SAFETY: closing descriptor ranges of this forked child; none is used again but `fd`.
    unsafe {
        if fd > 3 {
            libc::close_range(3, (fd - 1) as libc::c_uint, 0);
        }
        libc::close_range((fd + 1) as libc::c_uint, libc::c_uint::MAX, 0);
    }
    let id = libc::c_long::from(uid);
    // SAFETY: integer-only syscalls on this process's own credentials.
    let became = unsafe {
        libc::syscall(libc::SYS_prctl, libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
            && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
            && libc::syscall(libc::SYS_setresgid, id, id, id) == 0
            && libc::syscall(libc::SYS_setresuid, id, id, id) == 0
    };
    if !became {
        return (0, errno());
    }
    // The user-session keyring first: once the user keyring is invalidated, the kernel finds
    // neither until it has collected it.
    for (find, clear, spec) in [
        (3, 4, KEY_SPEC_USER_SESSION_KEYRING),
        (1, 2, KEY_SPEC_USER_KEYRING),
    ] {
        let keyring = keyctl(KEYCTL_GET_KEYRING_ID, spec, 1);
        if keyring == -1 {
            let e = errno();
            // An invalidated one not collected yet: nothing left in it to find.
            if e == libc::ENOKEY {
                continue;
            }
            return (find, e);
        }
        let e = scrub(keyring);
        if e != 0 {
            return (clear, e);
        }
    }
    // The user-session keyring links the user keyring from its creation, which is how a
    // process without a session keyring of its own possesses its user keyring's keys; the
    // clear took that link too. Fails only if the user-session keyring was invalidated, and
    // the kernel makes the new one with the link.
    keyctl(
        KEYCTL_LINK,
        KEY_SPEC_USER_KEYRING,
        KEY_SPEC_USER_SESSION_KEYRING,
    );
    // -1: our own uid. Linked into this child's process keyring, which goes with it.
    let persistent = keyctl(KEYCTL_GET_PERSISTENT, -1, KEY_SPEC_PROCESS_KEYRING);
    if persistent == -1 {
        let e = errno();
        // A kernel without persistent keyrings has none to clear.
        return if e == libc::EOPNOTSUPP {
            (0, 0)
        } else {
            (5, e)
        };
    }
    let e = scrub(persistent);
    (if e == 0 { 0 } else { 5 }, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_SPEC: libc::c_long = KEY_SPEC_USER_KEYRING;

    /// Runs `f` in a child as `uid`; returns what it returned (a small integer) or -1.
    fn as_uid(uid: u32, f: fn() -> i64) -> i64 {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        // SAFETY: the child runs raw syscalls only (f does too) and _exits.
        match unsafe { sys::fork() }.unwrap() {
            sys::Forked::Child => {
                let id = libc::c_long::from(uid);
                // SAFETY: integer-only syscalls.
                let ok = unsafe {
                    libc::syscall(libc::SYS_setresgid, id, id, id) == 0
                        && libc::syscall(libc::SYS_setresuid, id, id, id) == 0
                };
                let value: i64 = if ok { f() } else { -2 };
                let bytes = value.to_ne_bytes();
                // SAFETY: writing a stack buffer.
                unsafe { libc::write(write.as_raw_fd(), bytes.as_ptr().cast(), 8) };
                sys::exit(0)
            }
            sys::Forked::Parent(pid) => {
                drop(write);
                let mut buf = [0u8; 8];
                let n = rustix::io::read(&read, &mut buf).unwrap();
                sys::waitpid(pid, 0).unwrap();
                assert_eq!(n, 8);
                i64::from_ne_bytes(buf)
            }
        }
    }

    /// Adds user key `berth-test` to the caller's user keyring; its serial or -1.
    fn add_key() -> i64 {
        // SAFETY: NUL-terminated strings and a 6-byte payload, all static.
        unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"berth-test".as_ptr(),
                b"secret".as_ptr(),
                6usize,
                KEY_SPEC,
            )
        }
    }

    /// Adds user key `berth-test-new` and reads it back; its length or -1.
    fn add_and_read() -> i64 {
        // SAFETY: as in add_key.
        let id = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"berth-test-new".as_ptr(),
                b"secret".as_ptr(),
                6usize,
                KEY_SPEC,
            )
        };
        let mut buf = [0u8; 16];
        // SAFETY: the kernel writes at most 16 bytes into `buf`.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                11 as libc::c_long, // KEYCTL_READ
                id,
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    }

    /// Looks up user key `berth-test` from the caller's user keyring; its serial or -1.
    fn find_key() -> i64 {
        // SAFETY: NUL-terminated static strings; no destination keyring.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                10 as libc::c_long, // KEYCTL_SEARCH
                KEY_SPEC,
                c"user".as_ptr(),
                c"berth-test".as_ptr(),
                0 as libc::c_long,
            )
        }
    }

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (takes on other uids); run as root, as CI does"
        );
    }

    #[test]
    fn the_uids_user_key_is_gone_and_anothers_stays() {
        require_root();
        let (owner, other) = (61911, 61912);
        assert!(
            as_uid(owner, add_key) > 0,
            "the control key could not be added"
        );
        assert!(as_uid(other, add_key) > 0);

        clear_user_keyrings(owner).unwrap();

        let (gone, kept) = (as_uid(owner, find_key), as_uid(other, find_key));
        clear_user_keyrings(other).unwrap();
        assert_eq!(gone, -1, "the previous holder's key is still found");
        assert!(kept > 0, "another uid's key went too");
    }

    #[test]
    fn the_next_holder_reads_the_keys_it_adds_as_on_a_fresh_uid() {
        require_root();
        let uid = 61914;
        assert!(as_uid(uid, add_key) > 0);

        clear_user_keyrings(uid).unwrap();

        assert_eq!(
            as_uid(uid, add_and_read),
            6,
            "its own new key is not readable"
        );
        clear_user_keyrings(uid).unwrap();
    }

    #[test]
    fn a_keyring_whose_holder_took_away_its_write_right_is_still_cleared() {
        require_root();
        let uid = 61913;
        fn add_and_lock() -> i64 {
            let key = add_key();
            // View and search only, for everyone: a clear needs write.
            keyctl(KEYCTL_SETPERM, KEY_SPEC, 0x0909_0909);
            key
        }
        assert!(as_uid(uid, add_and_lock) > 0);
        assert!(as_uid(uid, find_key) > 0, "the locked key is not found");

        clear_user_keyrings(uid).unwrap();

        assert_eq!(as_uid(uid, find_key), -1);
    }
}
