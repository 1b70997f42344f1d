//! Thin wrappers over the syscalls rustix does not offer (fork, close_range, poll without the
//! `event` feature, signal masks), each keeping its `unsafe` in one place.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Highest signal number on Linux (SIGRTMAX).
pub(crate) const SIGNAL_MAX: i32 = 64;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Which side of a `fork()` we are on.
pub(crate) enum Forked {
    Child,
    Parent(libc::pid_t),
}

/// `fork()`.
///
/// # Safety
/// The caller must be single-threaded (or the child must only call async-signal-safe code),
/// and the child must end with [`exit`], never by returning into the caller's frames.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller upholds the single-thread requirement documented above.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// `_exit(code)`: leaves without running destructors or atexit handlers of the forked-from
/// process.
/// Sets O_NONBLOCK on `fd`'s open file description.
pub(crate) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor >= 3 except those in `keep`.
///
/// # Safety
/// Descriptors owned by live Rust objects get closed behind their back: call this only in a
/// freshly forked process that never uses (or drops) those objects again.
pub(crate) unsafe fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|fd| **fd >= 3)
        .map(|fd| *fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > first {
            let last = if fd == u32::MAX { u32::MAX } else { fd - 1 };
            // SAFETY: the caller accepts that these descriptors vanish (see above).
            cvt(unsafe { libc::close_range(first, last, 0) })?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// Marks every descriptor >= 3 close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`).
pub(crate) fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: setting FD_CLOEXEC closes nothing now; it only affects a later execve.
    cvt(unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) })
        .map(drop)
}

/// Moves `fd` to a number >= 3 (so stdio can be replaced) and makes it close-on-exec.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() < 3 {
        Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
    } else {
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(fd)
    }
}

/// Points descriptors 0, 1 and 2 at `path` (opened read-write).
pub(crate) fn stdio_to(path: &CStr) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let raw = fd.as_raw_fd();
    for target in 0..3 {
        if target != raw {
            // SAFETY: dup2 onto 0..=2 replaces stdio, which no Rust object owns here.
            cvt(unsafe { libc::dup2(raw, target) })?;
        }
    }
    if raw < 3 {
        // It became one of the stdio descriptors itself: keep it, without CLOEXEC.
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
        std::mem::forget(fd);
    }
    Ok(())
}

/// `poll()` with a timeout in milliseconds (-1 = forever). EINTR yields `Ok(0)`.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a valid, exclusively borrowed slice.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    match cvt(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
        Err(e) => Err(e),
    }
}

pub(crate) fn pollfd(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// `prctl(option, arg2, 0, 0, 0)`.
pub(crate) fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: only integer-argument prctl options are passed through here.
    cvt(unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
    .map(drop)
}

pub(crate) fn setresgid(gid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    cvt(unsafe { libc::setresgid(gid, gid, gid) }).map(drop)
}

pub(crate) fn setresuid(uid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    cvt(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// Sets the filesystem uid and gid (ownership of created files, permission checks); verifies
/// the change, since setfsuid/setfsgid report no errors.
pub(crate) fn set_fs_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments; -1 only queries the current value.
    let (fsgid, fsuid) = unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        (
            libc::setfsgid(u32::MAX) as u32,
            libc::setfsuid(u32::MAX) as u32,
        )
    };
    if (fsuid, fsgid) == (uid, gid) {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// `kill(pid, sig)`.
pub(crate) fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `waitpid(pid, flags)`, retrying on EINTR. `Ok(None)` when WNOHANG found nothing.
pub(crate) fn waitpid(
    pid: libc::pid_t,
    flags: libc::c_int,
) -> io::Result<Option<(libc::pid_t, i32)>> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        match cvt(unsafe { libc::waitpid(pid, &mut status, flags) }) {
            Ok(0) => return Ok(None),
            Ok(p) => return Ok(Some((p, status))),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A signal set.
#[derive(Clone, Copy)]
pub(crate) struct SigSet(libc::sigset_t);

impl SigSet {
    pub(crate) fn empty() -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset initializes it fully.
        let mut set = unsafe { std::mem::zeroed::<libc::sigset_t>() };
        // SAFETY: set is a valid sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        SigSet(set)
    }

    pub(crate) fn with(signals: impl IntoIterator<Item = i32>) -> Self {
        let mut set = Self::empty();
        for sig in signals {
            // SAFETY: set is a valid sigset_t; invalid numbers only make this fail.
            unsafe { libc::sigaddset(&mut set.0, sig) };
        }
        set
    }

    /// The set, for syscalls that take one (signalfd).
    pub(crate) fn as_ptr(&self) -> *const libc::sigset_t {
        &self.0
    }

    /// Blocks these signals; returns the previous mask.
    pub(crate) fn block(&self) -> io::Result<SigSet> {
        let mut old = Self::empty();
        // SAFETY: both pointers are valid sigset_t.
        cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &self.0, &mut old.0) })?;
        Ok(old)
    }

    /// Makes this set the signal mask.
    pub(crate) fn set_mask(&self) -> io::Result<()> {
        // SAFETY: the pointer is a valid sigset_t; a null old-set pointer is allowed.
        cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) })
            .map(drop)
    }
}

/// Sets every signal's disposition to default (SIGPIPE to ignore if `ignore_sigpipe`) and
/// unblocks all signals.
pub(crate) fn reset_signals(ignore_sigpipe: bool) -> io::Result<()> {
    for sig in 1..=SIGNAL_MAX {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let handler = if ignore_sigpipe && sig == libc::SIGPIPE {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: installing SIG_DFL/SIG_IGN runs no code; glibc-reserved numbers just fail.
        unsafe { libc::signal(sig, handler) };
    }
    SigSet::empty().set_mask()
}

/// Current CLOCK_REALTIME in microseconds since the epoch.
pub(crate) fn realtime_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Writes all of `buf` to a blocking descriptor.
pub(crate) fn write_all(fd: impl AsFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd.as_fd(), buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
