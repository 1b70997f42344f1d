//! Starting the sandbox: the service's cgroup, init forked into a new pid namespace, and the
//! wait until init has built the sandbox and takes commands.

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
use super::log_sockets::{self, LogSockets};
use super::notify;
use crate::launch_spec::{HostFileFds, LaunchSpec};
use crate::sandbox::block_namespace;
use crate::sandbox::cgroup::{CgroupError, ServiceCgroup};
use crate::sandbox::credentials_dir::LoadedCredentials;
use crate::sandbox::directories::PreparedDirectory;
use crate::sandbox::firewall;
use crate::sandbox::init::channel::Report;
use crate::sandbox::init::{self, InitFds};
use crate::sandbox::{Failure, sys};

/// How long the sandbox may take from fork to the first command's exec (`launch` itself
/// waits 10 s).
pub(super) const EXEC_TIMEOUT: Duration = Duration::from_secs(8);

/// A started sandbox, as the supervisor holds it.
pub(super) struct Sandbox {
    pub(super) init_pid: libc::pid_t,
    pub(super) pidfd: OwnedFd,
    /// The channel to init (`sandbox/init/channel.rs`), non-blocking.
    pub(super) channel: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) started_usec: u64,
    /// Removed when dropped, once init is gone.
    pub(super) cgroup: Option<ServiceCgroup>,
    /// The receiving end of `$NOTIFY_SOCKET`, when the program has one.
    pub(super) notify: Option<OwnedFd>,
    /// The bind(2) notification's listener, when the spec grants privileged ports.
    pub(super) bind_listener: Option<OwnedFd>,
    /// The log sockets' receiving ends, when the spec captures them.
    pub(super) log_sockets: Option<LogSockets>,
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), Failure> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Failure::setup(format!("create the {what} pipe"), e))
}

fn nonblocking(fd: &OwnedFd) -> Result<(), Failure> {
    sys::set_nonblocking(fd).map_err(|e| Failure::setup("fcntl", e))
}

/// Forks init into a new pid namespace and waits until it has built the sandbox. `manager`
/// (uid, gid) owns the user namespaces of a block-mode sandbox.
pub(super) fn spawn(
    spec: &LaunchSpec,
    (root, extensions): (OwnedFd, Vec<OwnedFd>),
    directories: Vec<PreparedDirectory>,
    // The host-side trees bound or laid over the image, each only when the spec asks.
    (host_files, persistent_var): (HostFileFds, Option<OwnedFd>),
    credentials: LoadedCredentials,
    manager: (u32, u32),
) -> Result<Sandbox, Failure> {
    let (stdout, stdout_w) = pipe("stdout")?;
    let (stderr, stderr_w) = pipe("stderr")?;
    for fd in [&stdout, &stderr] {
        nonblocking(fd)?;
    }
    let (channel, channel_w) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Failure::setup("create init's channel", e))?;
    // The kernel then translates each command's pid into ours (the host's) in SCM_CREDENTIALS.
    rustix::net::sockopt::set_socket_passcred(&channel, true)
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
    // Init binds its copies in the sandbox, as with the notify socket.
    let (log_sockets, init_log_sockets) = if spec.sandbox.capture_log_sockets {
        let (sockets, copies) = log_sockets::create()?;
        (Some(sockets), Some(copies))
    } else {
        (None, None)
    };
    let cgroup_procs = match &cgroup {
        Some(cgroup) => cgroup.procs().map_err(cgroup_failure)?,
        None => Vec::new(),
    };
    // Before the pid namespace: the child that creates them would become its init.
    let block = block_namespace::create(&spec.sandbox.identity, manager)?;

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
                host_files,
                persistent_var,
                stdout: stdout_w,
                stderr: stderr_w,
                channel: channel_w,
                cgroup_procs,
                notify: init_notify,
                log_sockets: init_log_sockets,
                credentials,
                block,
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
        host_files,
        persistent_var,
        stdout_w,
        stderr_w,
        channel_w,
        cgroup_procs,
        init_notify,
        init_log_sockets,
        // Zeroed here: only init keeps them.
        credentials,
        // The namespaces live on in init.
        block,
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
    let ready = await_ready(&channel, &pidfd, init_pid)
        .and_then(|listener| bind_listener(spec, listener))
        .and_then(|listener| nonblocking(&channel).map(|()| listener));
    match ready {
        Ok(bind_listener) => Ok(Sandbox {
            init_pid,
            pidfd,
            channel,
            stdout,
            stderr,
            started_usec: sys::realtime_usec(),
            cgroup,
            notify,
            bind_listener,
            log_sockets,
        }),
        Err(failure) => {
            kill_init();
            Err(failure)
        }
    }
}

/// Ends a started sandbox the supervisor will not serve: every process of the service, then
/// init reaped.
pub(super) fn end(sandbox: Sandbox) {
    if let Some(cgroup) = &sandbox.cgroup {
        let _ = cgroup.kill_all();
    }
    let _ = sys::kill(sandbox.init_pid, libc::SIGKILL);
    let _ = sys::waitpid(sandbox.init_pid, 0);
}

/// The service's own cgroups with its limits and its IP firewall attached, made before init
/// exists so that the service's first instruction is already limited and its first packet
/// meets the firewall. Without a firewall or limits, a host where no cgroup can be made runs
/// the service in the supervisor's cgroup, as before cgroups.
fn service_cgroup(spec: &LaunchSpec) -> Result<Option<ServiceCgroup>, Failure> {
    let rules = firewall::rules(&spec.sandbox.firewall)
        .map_err(|e| Failure::setup(format!("read the IP firewall ({e})"), Errno::INVAL))?;
    let limited = spec.sandbox.resources != Default::default();
    let cgroup = match ServiceCgroup::create(&spec.unit, &spec.sandbox.resources) {
        Ok(cgroup) => cgroup,
        Err(CgroupError::NoHierarchy) if !rules.filters() && !limited => return Ok(None),
        Err(e) => return Err(cgroup_failure(e)),
    };
    if rules.filters() {
        let Some(dir) = cgroup.dir() else {
            return Err(Failure::setup(
                "attach the IP firewall: the host has no cgroup2 hierarchy",
                Errno::NOENT,
            ));
        };
        // On failure the cgroup is dropped, hence removed.
        firewall::install(dir, &rules).map_err(|e| Failure::setup(e.to_string(), e.os_error()))?;
    }
    Ok(Some(cgroup))
}

fn cgroup_failure(e: CgroupError) -> Failure {
    Failure::setup(e.to_string(), e.os_error())
}

pub(super) fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// The listener init sent with its ready report: there exactly when the spec grants ports.
fn bind_listener(spec: &LaunchSpec, listener: Option<OwnedFd>) -> Result<Option<OwnedFd>, Failure> {
    match (spec.sandbox.privileged_ports.is_empty(), listener) {
        (true, _) => Ok(None),
        (false, Some(listener)) => Ok(Some(listener)),
        (false, None) => Err(Failure::setup(
            "receive the bind(2) notification's listener from the sandbox's init",
            Errno::PROTO,
        )),
    }
}

/// Waits for init's first report: ready (with the descriptor init sent along, if any), or
/// why the sandbox could not be built.
fn await_ready(
    channel: &OwnedFd,
    pidfd: &OwnedFd,
    init_pid: libc::pid_t,
) -> Result<Option<OwnedFd>, Failure> {
    let deadline = Instant::now() + EXEC_TIMEOUT;
    let mut buf = vec![0u8; crate::sandbox::init::channel::MAX_REPORT + 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::setup("wait for the sandbox", Errno::TIMEDOUT));
        }
        let mut pfd = [sys::pollfd(channel.as_fd(), libc::POLLIN)];
        if sys::poll(&mut pfd, millis(left).max(1)).map_err(|e| Failure::setup("poll", e))? == 0 {
            continue;
        }
        // SO_PASSCRED is on: every message carries init's credentials too.
        let mut space =
            [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let n = match rustix::net::recvmsg(
            channel,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg.bytes,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Failure::setup("read the sandbox's report", e)),
        };
        let fd = control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        if n == 0 {
            return Err(Failure::InitDied {
                detail: init_death(pidfd, init_pid),
            });
        }
        return match Report::decode(&buf[..n.min(buf.len())]) {
            Some(Report::Ready) => Ok(fd),
            Some(Report::SetupFailed(failure)) => Err(failure),
            _ => Err(Failure::setup("decode the sandbox's report", Errno::PROTO)),
        };
    }
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

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

    use super::*;

    #[test]
    fn the_ready_report_brings_the_descriptor_init_sent_with_it() {
        // As spawn makes the channel: SO_PASSCRED on the supervisor's end, so the message
        // carries credentials besides the descriptor.
        let (channel, init_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_passcred(&channel, true).unwrap();
        let (sent, _keep) = rustix::pipe::pipe().unwrap();
        let fds = [sent.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        rustix::net::sendmsg(
            &init_end,
            &[IoSlice::new(&Report::Ready.encode())],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        let me = rustix::process::getpid();
        let pidfd = rustix::process::pidfd_open(me, PidfdFlags::empty()).unwrap();

        let received = await_ready(&channel, &pidfd, me.as_raw_pid()).unwrap();

        let received = received.expect("no descriptor with the ready report");
        let (a, b) = (
            rustix::fs::fstat(&received).unwrap(),
            rustix::fs::fstat(&sent).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
    }
}
