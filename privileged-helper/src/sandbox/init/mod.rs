//! PID 1 of the sandbox and the service's main process.
//!
//! Init builds the sandbox as the spec says, in this order: namespaces (mount and cgroup, ipc,
//! uts and network as asked), new root, `lo` up, the synthesized user databases, resource
//! limits, the Landlock domain, the user namespace (PrivateUsers=), then the service's
//! credentials (bounding set, ids, capabilities, session keyring, no_new_privs); it forks main, then only forwards signals to main and reaps orphans. It catches
//! no signal with a handler: it keeps the forwarded ones and SIGCHLD blocked and takes them with
//! `sigwaitinfo`, which cannot race with reaping; blocked signals are queued even for a
//! pid-namespace init (which otherwise drops signals it has no handler for).
//!
//! Exit status: when main exits, init writes main's raw wait status (4 bytes, native endian)
//! to the status pipe, then exits with main's exit code, or 128 + signal; the kernel then kills
//! whatever is left in the pid namespace. The supervisor takes the exact status from the pipe;
//! without it (init SIGKILLed by a stop timeout) it uses init's own wait status, i.e. SIGKILL.
//!
//! Init and main talk to the supervisor over a SOCK_SEQPACKET socket (CLOEXEC): main sends
//! [`MSG_PID`] with SCM_CREDENTIALS just before execve, so the supervisor learns main's host
//! pid; any failure is sent as [`MSG_FAILURE`] + JSON [`Failure`]. EOF after the pid message
//! means the exec succeeded.

use std::convert::Infallible;
use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, UCred};

use super::capabilities::CapabilityPlan;
use super::credentials::Credentials;
use super::directories::{self, PreparedDirectory};
use super::syscalls::LinuxSyscalls;
use super::{
    Failure, cgroup, credentials, landlock, mounts, namespaces, notify_socket, process_name,
    rlimits, seccomp, sys, user_namespace,
};
use crate::launch_spec::LaunchSpec;

/// Report message: "this is main, about to exec" (carries SCM_CREDENTIALS).
pub(crate) const MSG_PID: u8 = b'P';
/// Report message: a failure, followed by the JSON of a [`Failure`].
pub(crate) const MSG_FAILURE: u8 = b'E';

/// Descriptors init receives from the supervisor; all CLOEXEC.
pub(crate) struct InitFds {
    pub root: OwnedFd,
    /// Extension image roots, lowest layer first.
    pub extensions: Vec<OwnedFd>,
    /// The service directories kept on the host, ready to bind.
    pub directories: Vec<PreparedDirectory>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub status: OwnedFd,
    pub report: OwnedFd,
    /// `cgroup.procs` of the service's cgroup, which init joins first (none without cgroup2).
    pub cgroup_procs: Option<OwnedFd>,
    /// The supervisor's `$NOTIFY_SOCKET`, which init binds in the sandbox (notify_socket.rs).
    pub notify: Option<OwnedFd>,
}

/// Signals init forwards to main: all but SIGCHLD, the unblockable ones, the synchronous
/// fault signals and glibc's two reserved real-time signals.
pub(crate) fn forwarded_signals() -> impl Iterator<Item = i32> {
    (1..=sys::SIGNAL_MAX).filter(|sig| {
        !matches!(
            *sig,
            libc::SIGCHLD
                | libc::SIGKILL
                | libc::SIGSTOP
                | libc::SIGILL
                | libc::SIGTRAP
                | libc::SIGABRT
                | libc::SIGBUS
                | libc::SIGFPE
                | libc::SIGSEGV
                | libc::SIGSYS
                | 32
                | 33
        )
    })
}

/// The signals init waits for: the forwarded ones and SIGCHLD. The supervisor blocks them
/// before forking init so none is lost before init's loop runs.
pub(crate) fn init_signals() -> sys::SigSet {
    sys::SigSet::with(forwarded_signals().chain(std::iter::once(libc::SIGCHLD)))
}

/// Entry point of init, in a fresh child of the supervisor inside the new pid namespace.
pub(crate) fn run(spec: &LaunchSpec, fds: InitFds) -> ! {
    let InitFds {
        root,
        extensions,
        directories,
        stdout,
        stderr,
        status,
        report,
        cgroup_procs,
        notify,
    } = fds;
    let mut keep = vec![
        root.as_raw_fd(),
        stdout.as_raw_fd(),
        stderr.as_raw_fd(),
        status.as_raw_fd(),
        report.as_raw_fd(),
    ];
    keep.extend(extensions.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(directories.iter().map(|d| d.fd.as_raw_fd()));
    keep.extend(cgroup_procs.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(notify.iter().map(|fd| fd.as_raw_fd()));
    // SAFETY: fresh single-threaded child; the closed descriptors belong to supervisor objects
    // this process never uses.
    let closed = unsafe { sys::close_fds_except(&keep) };
    let result = closed
        .map_err(|e| Failure::setup("close inherited descriptors", e))
        .and_then(|()| join_cgroup(cgroup_procs))
        .and_then(|()| setup(spec, root, extensions, directories, notify))
        .and_then(|exec| spawn_main(&exec, stdout, stderr, &report));
    match result {
        Ok(main) => {
            drop(report);
            reap(main, status)
        }
        Err(failure) => {
            send_failure(&report, &failure);
            sys::exit(127)
        }
    }
}

/// Moves init, and so everything the service forks, into its cgroup (before the cgroup
/// namespace is unshared in `setup`, so that the namespace's root is the service's cgroup).
fn join_cgroup(procs: Option<OwnedFd>) -> Result<(), Failure> {
    match procs {
        Some(procs) => {
            cgroup::join(procs).map_err(|e| Failure::setup("join the service's cgroup", e))
        }
        None => Ok(()),
    }
}

/// What main needs for its exec, prepared before the fork.
struct Exec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    path_str: String,
    cwd_str: String,
    /// UMask=.
    umask: u32,
    // Installed right before the exec.
    seccomp: Arc<seccomp::CompiledFilter>,
}

fn cstring(s: &str, what: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| {
        Failure::setup(
            format!("{what} contains a NUL byte"),
            rustix::io::Errno::INVAL,
        )
    })
}

fn setup(
    spec: &LaunchSpec,
    root: OwnedFd,
    mut extensions: Vec<OwnedFd>,
    directories: Vec<PreparedDirectory>,
    notify: Option<OwnedFd>,
) -> Result<Exec, Failure> {
    // Forked without exec, init would show the helper's argv and environment in /proc/1 (the
    // command line is readable by the service).
    process_name::set(c"berth-init", &[b"berth-init"])
        .map_err(|e| Failure::setup("name the sandbox's init", e))?;
    // Modes of what we create are given explicitly.
    rustix::process::umask(rustix::fs::Mode::empty());
    let sandbox = &spec.sandbox;
    // The service directories' mount points lie in a layer over the image (which is
    // read-only).
    let (service_dirs, mount_points) =
        directories::mount_plan_binds(&LinuxSyscalls, &root, directories)?;
    extensions.extend(mount_points);
    let view = mounts::image_view(&LinuxSyscalls, &root, &extensions)?;
    let entries = mounts::clone_image(&LinuxSyscalls, view.as_ref().unwrap_or(&root))?;
    drop((root, extensions, view));
    // Host trees the plan binds are cloned here, in the host mount namespace.
    let plan = mounts::prepare(&LinuxSyscalls, &sandbox.mounts, service_dirs)?;
    namespaces::unshare(&LinuxSyscalls, &sandbox.namespaces)?;
    mounts::build_root(&LinuxSyscalls, entries, plan)?;
    let identity = &sandbox.identity;
    directories::make_runtime(
        &LinuxSyscalls,
        &sandbox.directories,
        (identity.uid, identity.gid),
    )?;
    namespaces::finish(&LinuxSyscalls, &sandbox.namespaces)?;
    notify_socket::bind(notify)?;
    if sandbox.identity.private_users {
        user_namespace::bind_databases(&LinuxSyscalls, &sandbox.identity)?;
    }
    // Our stdio still points at the host's /dev/null; use the sandbox's.
    sys::stdio_to(c"/dev/null").map_err(|e| Failure::setup("open /dev/null", e))?;
    // Raising a hard limit needs CAP_SYS_RESOURCE of the host's user namespace: before ours.
    rlimits::apply(&LinuxSyscalls, &sandbox.rlimits)?;
    // While init still holds CAP_SYS_ADMIN, which Landlock takes instead of no_new_privs.
    landlock::restrict(&LinuxSyscalls, &sandbox.landlock)?;
    if sandbox.identity.private_users {
        user_namespace::enter(&LinuxSyscalls, &sandbox.identity)?;
    }
    credentials::drop_to(
        &LinuxSyscalls,
        &Credentials {
            identity: &sandbox.identity,
            capabilities: CapabilityPlan::of(&sandbox.capabilities)?,
            no_new_privileges: sandbox.no_new_privileges,
            keyring: sandbox.keyring,
        },
    )?;
    // Compiled by the helper when its floor checked the spawn; this copy of its cache has it.
    let seccomp = seccomp::cache::compiled(&spec.sandbox.syscalls).map_err(|e| {
        Failure::setup(
            format!("compile the seccomp filter ({e})"),
            rustix::io::Errno::INVAL,
        )
    })?;

    let main_argv = spec.main_argv();
    let path_str = main_argv.first().cloned().unwrap_or_default();
    Ok(Exec {
        path: cstring(&path_str, "argv[0]")?,
        argv: main_argv
            .iter()
            .map(|a| cstring(a, "argv"))
            .collect::<Result<_, _>>()?,
        env: spec
            .environment
            .iter()
            .map(|e| cstring(e, "environment"))
            .collect::<Result<_, _>>()?,
        cwd: cstring(&spec.working_directory, "working directory")?,
        path_str,
        cwd_str: spec.working_directory.clone(),
        umask: sandbox.umask,
        seccomp,
    })
}

fn spawn_main(
    exec: &Exec,
    stdout: OwnedFd,
    stderr: OwnedFd,
    report: &OwnedFd,
) -> Result<libc::pid_t, Failure> {
    if exec.argv.is_empty() {
        return Err(Failure::Exec {
            path: String::new(),
            errno: libc::EINVAL,
        });
    }
    // SAFETY: init is single-threaded; main ends in execve or sys::exit.
    match unsafe { sys::fork() }.map_err(|e| Failure::setup("fork the main process", e))? {
        sys::Forked::Child => {
            let Err(failure) = become_main(exec, stdout, stderr, report);
            send_failure(report, &failure);
            sys::exit(127)
        }
        sys::Forked::Parent(pid) => Ok(pid),
    }
}

fn become_main(
    exec: &Exec,
    stdout: OwnedFd,
    stderr: OwnedFd,
    report: &OwnedFd,
) -> Result<Infallible, Failure> {
    rustix::stdio::dup2_stdout(&stdout).map_err(|e| Failure::setup("set up stdout", e))?;
    rustix::stdio::dup2_stderr(&stderr).map_err(|e| Failure::setup("set up stderr", e))?;
    drop((stdout, stderr));
    let null = rustix::fs::open(
        c"/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Failure::setup("open /dev/null", e))?;
    rustix::stdio::dup2_stdin(&null).map_err(|e| Failure::setup("set up stdin", e))?;
    drop(null);
    // No controlling terminal, own session.
    rustix::process::setsid().map_err(|e| Failure::setup("setsid", e))?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(exec.umask));
    rustix::process::chdir(exec.cwd.as_c_str()).map_err(|e| Failure::WorkingDirectory {
        path: exec.cwd_str.clone(),
        errno: e.raw_os_error(),
    })?;
    sys::reset_signals(false).map_err(|e| Failure::setup("reset signals", e))?;
    // Only 0, 1 and 2 survive the exec (the report socket closes with it, which is the signal
    // of success).
    sys::cloexec_from_3().map_err(|e| Failure::setup("close descriptors", e))?;

    let ucred = UCred {
        pid: rustix::process::getpid(),
        uid: rustix::process::getuid(),
        gid: rustix::process::getgid(),
    };
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmCredentials(ucred));
    rustix::net::sendmsg(
        report,
        &[IoSlice::new(&[MSG_PID])],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| Failure::setup("report the main pid", e))?;

    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut env: Vec<*const libc::c_char> = exec.env.iter().map(|e| e.as_ptr()).collect();
    env.push(std::ptr::null());
    // The last step before the exec: from here on only the service's syscalls run, and
    // nothing more is allocated or reported unless the exec fails.
    seccomp::install(&exec.seccomp).map_err(|e| Failure::setup("install the seccomp filter", e))?;
    // SAFETY: path and every element are NUL-terminated strings alive for the call; both
    // arrays end with a null pointer.
    unsafe { libc::execve(exec.path.as_ptr(), argv.as_ptr(), env.as_ptr()) };
    let errno = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    Err(Failure::Exec {
        path: exec.path_str.clone(),
        errno,
    })
}

/// Sends a failure to the supervisor; best effort (the supervisor also sees EOF).
pub(crate) fn send_failure(report: impl AsFd, failure: &Failure) {
    let mut msg = vec![MSG_FAILURE];
    if serde_json::to_writer(&mut msg, failure).is_ok() {
        let _ = rustix::net::send(report, &msg, SendFlags::NOSIGNAL);
    }
}

/// Init's life after main is running: forward signals, reap everything, follow main's exit.
fn reap(main: libc::pid_t, status_pipe: OwnedFd) -> ! {
    let signals = init_signals();
    // Already blocked by the supervisor before the fork; this only makes sure.
    let _ = signals.block();
    loop {
        let sig = match signals.wait() {
            Ok(sig) => sig,
            Err(_) => libc::SIGCHLD,
        };
        if sig != libc::SIGCHLD {
            // ESRCH just means main is gone; its SIGCHLD is on its way.
            let _ = sys::kill(main, sig);
            continue;
        }
        loop {
            match sys::waitpid(-1, libc::WNOHANG) {
                Ok(Some((pid, status))) if pid == main => {
                    let _ = sys::write_all(&status_pipe, &status.to_ne_bytes());
                    sys::exit(exit_code(status))
                }
                Ok(Some(_)) => continue,
                Ok(None) => break,
                // No children at all: main is gone without us seeing it (cannot happen).
                Err(_) => sys::exit(255),
            }
        }
    }
}

/// Init's own exit code for main's wait status: the code, or 128 + signal.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}
