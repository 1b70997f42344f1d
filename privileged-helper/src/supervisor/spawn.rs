//! Starting the sandbox: the service's cgroup, init forked into a new pid namespace, and the
//! wait until main has exec'd.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, PidfdFlags};

use super::exit::decode_wait;
use super::notify;
use crate::launch_spec::LaunchSpec;
use crate::sandbox::cgroup::{CgroupError, ServiceCgroup};
use crate::sandbox::directories::PreparedDirectory;
use crate::sandbox::firewall;
use crate::sandbox::init::{self, InitFds};
use crate::sandbox::{Failure, sys};

/// How long the sandbox may take from fork to main's exec (`launch` itself waits 10 s).
const EXEC_TIMEOUT: Duration = Duration::from_secs(8);

/// A started sandbox, as the supervisor holds it.
pub(super) struct Sandbox {
    pub(super) init_pid: libc::pid_t,
    pub(super) pidfd: OwnedFd,
    pub(super) status: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) main_pid: u32,
    pub(super) started_usec: u64,
    /// Removed when dropped, once init is gone.
    pub(super) cgroup: Option<ServiceCgroup>,
    /// The receiving end of `$NOTIFY_SOCKET`, when the program has one.
    pub(super) notify: Option<OwnedFd>,
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), Failure> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Failure::setup(format!("create the {what} pipe"), e))
}

fn nonblocking(fd: &OwnedFd) -> Result<(), Failure> {
    sys::set_nonblocking(fd).map_err(|e| Failure::setup("fcntl", e))
}

/// Forks init into a new pid namespace and waits until main has exec'd.
pub(super) fn spawn(
    spec: &LaunchSpec,
    root: OwnedFd,
    extensions: Vec<OwnedFd>,
    directories: Vec<PreparedDirectory>,
) -> Result<Sandbox, Failure> {
    let (stdout, stdout_w) = pipe("stdout")?;
    let (stderr, stderr_w) = pipe("stderr")?;
    let (status, status_w) = pipe("status")?;
    for fd in [&stdout, &stderr, &status] {
        nonblocking(fd)?;
    }
    let (report, report_w) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Failure::setup("create the report socket", e))?;
    // The kernel then translates main's pid into ours (the host's) in SCM_CREDENTIALS.
    rustix::net::sockopt::set_socket_passcred(&report, true)
        .map_err(|e| Failure::setup("set SO_PASSCRED", e))?;
    let cgroup = service_cgroup(spec)?;
    // Init binds its copy in the sandbox and closes it; the environment names it.
    let (notify, init_notify, with_socket) = if notify::wanted(&spec.program) {
        let socket = notify::create_socket()?;
        let copy = socket
            .try_clone()
            .map_err(|e| Failure::setup("duplicate the notify socket", e))?;
        let spec = LaunchSpec {
            environment: notify::environment(&spec.environment, true),
            ..spec.clone()
        };
        (Some(socket), Some(copy), Some(spec))
    } else {
        (None, None, None)
    };
    let spec = with_socket.as_ref().unwrap_or(spec);
    let cgroup_procs = match &cgroup {
        Some(cgroup) => Some(cgroup.procs().map_err(cgroup_failure)?),
        None => None,
    };

    // SAFETY: no CLONE_FILES; this process is single-threaded.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWPID) }
        .map_err(|e| Failure::setup("unshare the pid namespace", e))?;
    // Blocked across the fork, so init queues a stop request that arrives early.
    let old_mask = init::init_signals()
        .block()
        .map_err(|e| Failure::setup("block signals", e))?;
    // SAFETY: single-threaded; init ends in sys::exit.
    let forked = unsafe { sys::fork() };
    let init_pid = match forked {
        Ok(sys::Forked::Child) => init::run(
            spec,
            InitFds {
                root,
                extensions,
                directories,
                stdout: stdout_w,
                stderr: stderr_w,
                status: status_w,
                report: report_w,
                cgroup_procs,
                notify: init_notify,
            },
        ),
        Ok(sys::Forked::Parent(pid)) => pid,
        Err(e) => return Err(Failure::setup("fork the sandbox's init", e)),
    };
    let _ = old_mask.set_mask();
    drop((
        root,
        extensions,
        directories,
        stdout_w,
        stderr_w,
        status_w,
        report_w,
        cgroup_procs,
        init_notify,
    ));
    let kill_init = || {
        let _ = sys::kill(init_pid, libc::SIGKILL);
        let _ = sys::waitpid(init_pid, 0);
    };
    let pidfd = match Pid::from_raw(init_pid)
        .map(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()))
    {
        Some(Ok(fd)) => fd,
        other => {
            kill_init();
            let e = other.map_or(Errno::SRCH, |r| r.err().unwrap_or(Errno::SRCH));
            return Err(Failure::setup("pidfd_open", e));
        }
    };
    match await_exec(&report, &pidfd, init_pid) {
        Ok(main_pid) => Ok(Sandbox {
            init_pid,
            pidfd,
            status,
            stdout,
            stderr,
            main_pid,
            started_usec: sys::realtime_usec(),
            cgroup,
            notify,
        }),
        Err(failure) => {
            kill_init();
            Err(failure)
        }
    }
}

/// The service's own cgroup with its IP firewall attached, made before init exists so that
/// the service's first packet already meets the firewall. Without a firewall, a host where
/// no cgroup can be made runs the service in the supervisor's cgroup, as before cgroups.
fn service_cgroup(spec: &LaunchSpec) -> Result<Option<ServiceCgroup>, Failure> {
    let rules = firewall::rules(&spec.sandbox.firewall)
        .map_err(|e| Failure::setup(format!("read the IP firewall ({e})"), Errno::INVAL))?;
    let cgroup = match ServiceCgroup::create(&spec.unit) {
        Ok(cgroup) => cgroup,
        Err(_) if !rules.filters() => return Ok(None),
        Err(e) => return Err(cgroup_failure(e)),
    };
    // On failure the cgroup is dropped, hence removed.
    firewall::install(cgroup.dir(), &rules)
        .map_err(|e| Failure::setup(e.to_string(), e.os_error()))?;
    Ok(Some(cgroup))
}

fn cgroup_failure(e: CgroupError) -> Failure {
    Failure::setup(e.to_string(), e.os_error())
}

pub(super) fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Reads init's and main's reports until EOF; returns main's host pid.
fn await_exec(report: &OwnedFd, pidfd: &OwnedFd, init_pid: libc::pid_t) -> Result<u32, Failure> {
    let deadline = Instant::now() + EXEC_TIMEOUT;
    let mut main_pid = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::setup(
                "wait for the service to exec",
                Errno::TIMEDOUT,
            ));
        }
        let mut pfd = [sys::pollfd(report.as_fd(), libc::POLLIN)];
        if sys::poll(&mut pfd, millis(left).max(1)).map_err(|e| Failure::setup("poll", e))? == 0 {
            continue;
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match rustix::net::recvmsg(
            report,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Failure::setup("read the sandbox's report", e)),
        };
        if msg.bytes == 0 {
            break;
        }
        let sender = control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmCredentials(cred) => Some(cred.pid.as_raw_pid() as u32),
            _ => None,
        });
        match buf[0] {
            init::MSG_PID => main_pid = sender,
            init::MSG_FAILURE => {
                return Err(
                    serde_json::from_slice(&buf[1..msg.bytes]).unwrap_or_else(|_| {
                        Failure::setup("decode the sandbox's report", Errno::PROTO)
                    }),
                );
            }
            _ => return Err(Failure::setup("decode the sandbox's report", Errno::PROTO)),
        }
    }
    main_pid.ok_or_else(|| Failure::InitDied {
        detail: init_death(pidfd, init_pid),
    })
}

/// Describes how init ended, waiting briefly for it to do so.
fn init_death(pidfd: &OwnedFd, init_pid: libc::pid_t) -> String {
    let mut pfd = [sys::pollfd(pidfd.as_fd(), libc::POLLIN)];
    let _ = sys::poll(&mut pfd, 1000);
    match sys::waitpid(init_pid, libc::WNOHANG) {
        Ok(Some((_, status))) => {
            let st = decode_wait(status);
            match (st.code, st.signal) {
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (Some(code), None) => format!("exit code {code}"),
                _ => "unknown status".into(),
            }
        }
        _ => "it closed its report channel".into(),
    }
}
