//! The per-service supervisor (DESIGN.md §6).
//!
//! Forked by [`crate::sandbox::launch`] (the helper ignores SIGCHLD, so none is reaped), it runs
//! as root in the host namespaces and outlives the helper. It binds `<unit>.sock` in the
//! control directory, forks the sandbox's init into a new pid namespace, waits until main has
//! exec'd and reports that to `launch`. Then a single-threaded `poll()` loop:
//! - copies the service's stdout/stderr, split into lines, to the log file as
//!   `log_line` records;
//! - serves [`SupervisorRequest`]s from the manager uid and root (JSON lines);
//! - on init's exit records the [`ExitStatus`], tells every client, and keeps it until a
//!   `Release`, after which it removes its socket and exits.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use berth_protocol::log_line::{self, Stream};
use berth_protocol::supervisor::{ExitStatus, SupervisorRequest, SupervisorStatus};
use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use rustix::process::{Pid, PidfdFlags};

use crate::launch_spec::{LaunchFds, LaunchSpec};
use crate::sandbox::cgroup::{CgroupError, ServiceCgroup};
use crate::sandbox::directories::PreparedDirectory;
use crate::sandbox::firewall;
use crate::sandbox::init::{self, InitFds};
use crate::sandbox::{Failure, Report, process_name, sys};

/// How long the sandbox may take from fork to main's exec (`launch` itself waits 10 s).
const EXEC_TIMEOUT: Duration = Duration::from_secs(8);
const MAX_CLIENTS: usize = 32;
/// Longest request line; a client sending more is disconnected.
const MAX_REQUEST: usize = 64 * 1024;
/// Descriptors a client may have sent ahead of the requests that use them.
const MAX_CLIENT_FDS: usize = 4;
/// Unsent replies a slow client may accumulate before it is disconnected.
const MAX_PENDING_REPLIES: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;
/// Chunks read from one output stream per loop turn, so one chatty stream cannot starve the
/// control socket.
const CHUNKS_PER_TURN: usize = 16;

/// Entry point of the supervisor process; never returns.
pub(crate) fn run(spec: &LaunchSpec, fds: LaunchFds, report: OwnedFd) -> ! {
    let (fds, report) = sanitize(fds, report);
    name(&spec.unit);
    let code = match start(spec, fds) {
        Ok(mut sup) => {
            let launched = Report::Launched {
                supervisor_pid: sup.pid,
                main_pid: sup.main_pid,
            };
            if launched.send(&report).is_ok() {
                drop(report);
                sup.serve()
            } else {
                // `launch` gave up waiting: nobody will ever manage this service.
                sup.abort();
                1
            }
        }
        Err(failure) => {
            let _ = Report::Failed(failure).send(&report);
            1
        }
    };
    sys::exit(code)
}

/// Resets what the helper left behind: signal state, parent-death signal, stray descriptors,
/// stdio (to /dev/null), umask and cwd.
fn sanitize(fds: LaunchFds, report: OwnedFd) -> (LaunchFds, OwnedFd) {
    let _ = rustix::process::set_parent_process_death_signal(None);
    // SIGPIPE ignored: a vanished client or reader must not kill us.
    let _ = sys::reset_signals(true);
    let Ok(report) = sys::above_stdio(report) else {
        sys::exit(1)
    };
    let fail = |report: &OwnedFd, stage: &str, e: std::io::Error| -> ! {
        let _ = Report::Failed(Failure::setup(stage, e)).send(report);
        sys::exit(1)
    };
    let lifted = (|| {
        Ok::<_, std::io::Error>(LaunchFds {
            root: sys::above_stdio(fds.root)?,
            log: sys::above_stdio(fds.log)?,
            control_dir: sys::above_stdio(fds.control_dir)?,
            extensions: fds
                .extensions
                .into_iter()
                .map(sys::above_stdio)
                .collect::<Result<_, _>>()?,
            directories: fds
                .directories
                .into_iter()
                .map(PreparedDirectory::above_stdio)
                .collect::<Result<_, _>>()?,
        })
    })();
    let fds = lifted.unwrap_or_else(|e| fail(&report, "move descriptors", e));
    let mut keep = vec![
        report.as_raw_fd(),
        fds.root.as_raw_fd(),
        fds.log.as_raw_fd(),
        fds.control_dir.as_raw_fd(),
    ];
    keep.extend(fds.extensions.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(fds.directories.iter().map(|d| d.fd.as_raw_fd()));
    // SAFETY: this is the freshly forked supervisor; the descriptors closed belong to helper
    // objects it never touches again (it only leaves through sys::exit).
    if let Err(e) = unsafe { sys::close_fds_except(&keep) } {
        fail(&report, "close inherited descriptors", e);
    }
    if let Err(e) = sys::stdio_to(c"/dev/null") {
        fail(&report, "open /dev/null", e);
    }
    rustix::process::umask(Mode::from_raw_mode(0o022));
    let _ = rustix::process::chdir(c"/");
    (fds, report)
}

/// Shows up in `ps` as `berth-supervise UNIT` (comm `berth-supervise`, the 15 bytes the kernel
/// keeps), not with the helper's command line and environment it inherited. Cosmetic, so a
/// kernel that refuses it does not stop the service.
fn name(unit: &str) {
    let _ = process_name::set(c"berth-supervise", &[b"berth-supervise", unit.as_bytes()]);
}

fn start(spec: &LaunchSpec, fds: LaunchFds) -> Result<Supervisor, Failure> {
    let LaunchFds {
        root,
        log,
        control_dir,
        extensions,
        directories,
    } = fds;
    let control = ControlSocket::bind(&spec.unit, control_dir)?;
    match spawn(spec, root, extensions, directories) {
        Ok(sandbox) => Ok(Supervisor::new(spec, control, log, sandbox)),
        Err(failure) => {
            control.remove();
            Err(failure)
        }
    }
}

/// The control socket `<unit>.sock` and the directory it lives in.
struct ControlSocket {
    listener: OwnedFd,
    dir: OwnedFd,
    name: CString,
    /// (st_dev, st_ino) of the socket we bound, so we never unlink a successor's.
    ident: (u64, u64),
    /// The directory's owner: the manager uid, the only non-root uid allowed to connect.
    owner: u32,
}

impl ControlSocket {
    fn bind(unit: &str, dir: OwnedFd) -> Result<Self, Failure> {
        let refuse = |reason: &str| Failure::ControlDir {
            reason: reason.to_string(),
        };
        let st =
            rustix::fs::fstat(&dir).map_err(|e| Failure::setup("stat the control directory", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(refuse("not a directory"));
        }
        if st.st_uid == 0 {
            return Err(refuse("owned by root, expected the manager's uid"));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(refuse("writable by group or others"));
        }
        let path = format!("{unit}.sock");
        let bind_err = |e: Errno| Failure::BindControlSocket {
            path: path.clone(),
            errno: e.raw_os_error(),
        };
        let name = CString::new(path.as_str()).map_err(|_| bind_err(Errno::INVAL))?;

        // A socket left by a dead supervisor of the same unit.
        if let Ok(old) = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            && FileType::from_raw_mode(old.st_mode) == FileType::Socket
        {
            rustix::fs::unlinkat(&dir, &name, AtFlags::empty()).map_err(bind_err)?;
        }
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(bind_err)?;
        // Bind by a name relative to the directory (as cwd), so no host path is involved,
        // with the directory owner's fs ids and umask 0177: the socket is the owner's and
        // 0600 from the start, and no chown by path (raceable in a directory the manager
        // controls) is needed.
        rustix::process::fchdir(&dir).map_err(bind_err)?;
        let old_mask = rustix::process::umask(Mode::from_raw_mode(0o177));
        let bound = sys::set_fs_ids(st.st_uid, st.st_gid)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::PERM))
            .and_then(|()| SocketAddrUnix::new(name.as_c_str()))
            .and_then(|addr| rustix::net::bind(&listener, &addr));
        let restored = sys::set_fs_ids(0, 0);
        rustix::process::umask(old_mask);
        let _ = rustix::process::chdir(c"/");
        // Cannot fail for root; if it did, we must not go on with the manager's fs ids (the
        // caller reports and exits).
        restored.map_err(|e| Failure::setup("restore the filesystem ids", e))?;
        bound.map_err(bind_err)?;

        let finish = || -> Result<(u64, u64), Errno> {
            rustix::net::listen(&listener, 16)?;
            let sock = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok((sock.st_dev, sock.st_ino))
        };
        match finish() {
            Ok(ident) => Ok(ControlSocket {
                listener,
                dir,
                name,
                ident,
                owner: st.st_uid,
            }),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
                Err(bind_err(e))
            }
        }
    }

    /// Removes the socket, if it is still the one we bound.
    fn remove(&self) {
        if let Ok(st) = rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW)
            && (st.st_dev, st.st_ino) == self.ident
        {
            let _ = rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty());
        }
    }

    fn allowed(&self, client: &OwnedFd) -> bool {
        rustix::net::sockopt::socket_peercred(client)
            .map(|cred| matches!(cred.uid.as_raw(), 0) || cred.uid.as_raw() == self.owner)
            .unwrap_or(false)
    }
}

/// A started sandbox, as the supervisor holds it.
struct Sandbox {
    init_pid: libc::pid_t,
    pidfd: OwnedFd,
    status: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    main_pid: u32,
    started_usec: u64,
    /// Removed when dropped, once init is gone.
    cgroup: Option<ServiceCgroup>,
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), Failure> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Failure::setup(format!("create the {what} pipe"), e))
}

fn nonblocking(fd: &OwnedFd) -> Result<(), Failure> {
    sys::set_nonblocking(fd).map_err(|e| Failure::setup("fcntl", e))
}

/// Forks init into a new pid namespace and waits until main has exec'd.
fn spawn(
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

fn millis(d: Duration) -> i32 {
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

fn decode_wait(status: i32) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
        }
    } else if libc::WIFSIGNALED(status) {
        ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
        }
    } else {
        ExitStatus {
            code: None,
            signal: None,
        }
    }
}

/// Splits one output stream into log records.
struct LineBuffer {
    stream: Stream,
    partial: Vec<u8>,
}

impl LineBuffer {
    fn new(stream: Stream) -> Self {
        LineBuffer {
            stream,
            partial: Vec::new(),
        }
    }

    /// Appends the records for every line completed by `data` to `out`.
    fn push(&mut self, data: &[u8], usec: u64, out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.emit(&rest[..pos], usec, out);
            } else {
                self.partial.extend_from_slice(&rest[..pos]);
                let line = std::mem::take(&mut self.partial);
                self.emit(&line, usec, out);
            }
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        // A line still growing past MAX_LINE is cut now; exactly MAX_LINE waits, since a
        // newline may follow.
        if self.partial.len() > log_line::MAX_LINE {
            let keep = self.partial.len() % log_line::MAX_LINE;
            let keep = if keep == 0 { log_line::MAX_LINE } else { keep };
            let full: Vec<u8> = self.partial.drain(..self.partial.len() - keep).collect();
            self.emit(&full, usec, out);
        }
    }

    /// Flushes an unterminated last line (at EOF).
    fn finish(&mut self, usec: u64, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, usec, out);
        }
    }

    fn emit(&self, line: &[u8], usec: u64, out: &mut Vec<u8>) {
        if line.is_empty() {
            log_line::encode(usec, self.stream, line, out);
        }
        for piece in line.chunks(log_line::MAX_LINE) {
            log_line::encode(usec, self.stream, piece, out);
        }
    }
}

struct Output {
    fd: Option<OwnedFd>,
    lines: LineBuffer,
}

struct Client {
    fd: OwnedFd,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Descriptors received with the input, oldest first (for `ReplaceLog`).
    fds: VecDeque<OwnedFd>,
    dead: bool,
}

impl Client {
    fn queue(&mut self, status: &SupervisorStatus) {
        if let Ok(mut line) = serde_json::to_vec(status) {
            line.push(b'\n');
            self.output.extend_from_slice(&line);
        }
        self.flush();
    }

    fn flush(&mut self) {
        while !self.output.is_empty() && !self.dead {
            match rustix::net::send(
                &self.fd,
                &self.output,
                SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            ) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break,
                Err(_) => self.dead = true,
            }
        }
        if self.output.len() > MAX_PENDING_REPLIES {
            self.dead = true;
        }
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Listener,
    Init,
    Output(usize),
    Client(usize),
}

struct Supervisor {
    unit: String,
    pid: u32,
    control: ControlSocket,
    log: OwnedFd,
    outputs: [Output; 2],
    /// Init's pid and pidfd while it runs.
    init: Option<(libc::pid_t, OwnedFd)>,
    status_pipe: OwnedFd,
    main_pid: u32,
    started_usec: u64,
    stop_requested: bool,
    kill_at: Option<Instant>,
    exit: Option<ExitStatus>,
    clients: Vec<Client>,
    released: bool,
    /// The service's cgroup while init lives.
    cgroup: Option<ServiceCgroup>,
}

impl Supervisor {
    fn new(spec: &LaunchSpec, control: ControlSocket, log: OwnedFd, sandbox: Sandbox) -> Self {
        Supervisor {
            unit: spec.unit.clone(),
            pid: rustix::process::getpid().as_raw_pid() as u32,
            control,
            log,
            outputs: [
                Output {
                    fd: Some(sandbox.stdout),
                    lines: LineBuffer::new(Stream::Stdout),
                },
                Output {
                    fd: Some(sandbox.stderr),
                    lines: LineBuffer::new(Stream::Stderr),
                },
            ],
            init: Some((sandbox.init_pid, sandbox.pidfd)),
            status_pipe: sandbox.status,
            main_pid: sandbox.main_pid,
            started_usec: sandbox.started_usec,
            stop_requested: false,
            kill_at: None,
            exit: None,
            clients: Vec::new(),
            released: false,
            cgroup: sandbox.cgroup,
        }
    }

    /// Ends the service at once and cleans up (used when `launch` is no longer listening).
    fn abort(&mut self) {
        if let Some((pid, _)) = self.init.take() {
            let _ = sys::kill(pid, libc::SIGKILL);
            let _ = sys::waitpid(pid, 0);
        }
        self.control.remove();
    }

    fn status(&self, error: Option<String>) -> SupervisorStatus {
        SupervisorStatus {
            unit: self.unit.clone(),
            supervisor_pid: self.pid,
            main_pid: self.main_pid,
            running: self.init.is_some(),
            stop_requested: self.stop_requested,
            exit: self.exit,
            started_usec: self.started_usec,
            error,
        }
    }

    /// The main loop; returns the supervisor's exit code after a `Release`.
    fn serve(&mut self) -> i32 {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let mut slots = Vec::with_capacity(4 + self.clients.len());
            let mut pfds = Vec::with_capacity(4 + self.clients.len());
            pfds.push(sys::pollfd(self.control.listener.as_fd(), libc::POLLIN));
            slots.push(Slot::Listener);
            if let Some((_, pidfd)) = &self.init {
                pfds.push(sys::pollfd(pidfd.as_fd(), libc::POLLIN));
                slots.push(Slot::Init);
            }
            for (i, out) in self.outputs.iter().enumerate() {
                if let Some(fd) = &out.fd {
                    pfds.push(sys::pollfd(fd.as_fd(), libc::POLLIN));
                    slots.push(Slot::Output(i));
                }
            }
            for (i, client) in self.clients.iter().enumerate() {
                let events = if client.output.is_empty() {
                    libc::POLLIN
                } else {
                    libc::POLLIN | libc::POLLOUT
                };
                pfds.push(sys::pollfd(client.fd.as_fd(), events));
                slots.push(Slot::Client(i));
            }
            let timeout = match self.kill_at {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    // Round up so we do not spin just before the deadline.
                    millis(left + Duration::from_micros(999))
                }
                None => -1,
            };
            if sys::poll(&mut pfds, timeout).is_err() {
                // Only EINVAL/ENOMEM are possible: back off rather than spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if let Some(at) = self.kill_at
                && Instant::now() >= at
            {
                self.kill_at = None;
                if let Some((pid, _)) = &self.init {
                    let _ = sys::kill(*pid, libc::SIGKILL);
                }
            }
            for (slot, pfd) in slots.iter().zip(&pfds) {
                if pfd.revents == 0 {
                    continue;
                }
                match *slot {
                    Slot::Listener => self.accept(),
                    Slot::Init => self.reap_init(&mut chunk),
                    Slot::Output(i) => self.read_output(i, &mut chunk, CHUNKS_PER_TURN),
                    Slot::Client(i) => self.client_io(i),
                }
            }
            self.clients.retain(|c| !c.dead);
            if self.released {
                for client in &mut self.clients {
                    client.flush();
                }
                self.control.remove();
                return 0;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match rustix::net::accept_with(
                &self.control.listener,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            ) {
                Ok(fd) => {
                    // Refused peers are just closed.
                    if self.control.allowed(&fd) && self.clients.len() < MAX_CLIENTS {
                        self.clients.push(Client {
                            fd,
                            input: Vec::new(),
                            output: Vec::new(),
                            fds: VecDeque::new(),
                            dead: false,
                        });
                    }
                }
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    fn read_output(&mut self, i: usize, chunk: &mut [u8], max_chunks: usize) {
        let mut records = Vec::new();
        for _ in 0..max_chunks {
            let out = &mut self.outputs[i];
            let Some(fd) = &out.fd else { break };
            match rustix::io::read(fd, &mut *chunk) {
                Ok(0) | Err(Errno::BADF | Errno::IO) => {
                    out.lines.finish(sys::realtime_usec(), &mut records);
                    out.fd = None;
                }
                Ok(n) => out
                    .lines
                    .push(&chunk[..n], sys::realtime_usec(), &mut records),
                Err(Errno::INTR) => continue,
                Err(_) => break,
            }
            // One write per batch of whole records.
            if !records.is_empty() {
                self.write_log(&records);
                records.clear();
            }
        }
    }

    fn write_log(&self, mut records: &[u8]) {
        while !records.is_empty() {
            match rustix::io::write(&self.log, records) {
                Ok(0) => return,
                Ok(n) => records = &records[n..],
                Err(Errno::INTR) => {}
                // A full disk or another write error: drop rather than stall the service.
                Err(_) => return,
            }
        }
    }

    fn reap_init(&mut self, chunk: &mut [u8]) {
        let Some((pid, _)) = &self.init else { return };
        let init_status = match sys::waitpid(*pid, libc::WNOHANG) {
            Ok(None) => return,
            Ok(Some((_, status))) => Some(status),
            Err(_) => None,
        };
        self.init = None;
        self.kill_at = None;
        // Everything in the pid namespace is dead now: drain the pipes so the log is complete
        // by the time the exit is announced.
        for i in 0..self.outputs.len() {
            self.read_output(i, chunk, 1024);
        }
        let mut raw = [0u8; 4];
        let main_status = match rustix::io::read(&self.status_pipe, &mut raw) {
            Ok(4) => Some(i32::from_ne_bytes(raw)),
            _ => None,
        };
        self.exit = Some(match (main_status, init_status) {
            (Some(status), _) | (None, Some(status)) => decode_wait(status),
            (None, None) => ExitStatus {
                code: None,
                signal: None,
            },
        });
        // Nothing of the service is left in it (init's death ended its pid namespace); gone
        // before the exit is told, so a successor never meets it.
        self.cgroup = None;
        let status = self.status(None);
        for client in &mut self.clients {
            client.queue(&status);
        }
    }

    fn client_io(&mut self, i: usize) {
        let mut buf = [0u8; 4096];
        loop {
            let client = &mut self.clients[i];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_CLIENT_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &client.fd,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            );
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    client.fds.extend(fds);
                }
            }
            // Only ReplaceLog uses descriptors; a client piling them up is dropped.
            if client.fds.len() > MAX_CLIENT_FDS {
                client.dead = true;
                break;
            }
            match received.map(|r| r.bytes) {
                Ok(0) => {
                    client.dead = true;
                    break;
                }
                Ok(n) => client.input.extend_from_slice(&buf[..n]),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break,
                Err(_) => {
                    client.dead = true;
                    break;
                }
            }
            if client.input.len() > MAX_REQUEST {
                client.dead = true;
                break;
            }
        }
        while let Some(pos) = self.clients[i].input.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.clients[i].input.drain(..=pos).collect();
            let mut fds = std::mem::take(&mut self.clients[i].fds);
            let reply = self.handle(&line[..pos], &mut fds);
            self.clients[i].fds = fds;
            self.clients[i].queue(&reply);
        }
        self.clients[i].flush();
    }

    /// Switches the output to the log that came with a `ReplaceLog` request.
    fn replace_log(&mut self, fds: &mut VecDeque<OwnedFd>) -> SupervisorStatus {
        let Some(log) = fds.pop_front() else {
            return self.status(Some("no log descriptor came with the request".into()));
        };
        match crate::floor::check_log_fd(&log, self.control.owner) {
            Ok(()) => {
                self.log = log;
                self.status(None)
            }
            Err(refusal) => self.status(Some(format!("log refused: {refusal}"))),
        }
    }

    fn handle(&mut self, line: &[u8], fds: &mut VecDeque<OwnedFd>) -> SupervisorStatus {
        let request = match serde_json::from_slice::<SupervisorRequest>(line) {
            Ok(request) => request,
            Err(e) => return self.status(Some(format!("invalid request: {e}"))),
        };
        match request {
            SupervisorRequest::Status => self.status(None),
            SupervisorRequest::Stop { timeout_ms } => {
                if let Some((pid, _)) = &self.init {
                    self.stop_requested = true;
                    let deadline = Instant::now().checked_add(Duration::from_millis(timeout_ms));
                    if timeout_ms == 0 {
                        let _ = sys::kill(*pid, libc::SIGKILL);
                    } else {
                        // Init forwards SIGTERM to main; SIGKILL to init ends the namespace.
                        let _ = sys::kill(*pid, libc::SIGTERM);
                        self.kill_at = match (self.kill_at, deadline) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
                self.status(None)
            }
            SupervisorRequest::Signal { signal } => {
                if !(1..=sys::SIGNAL_MAX).contains(&signal) {
                    return self.status(Some(format!("invalid signal {signal}")));
                }
                // Init (PID 1) ignores what it does not forward, except SIGSTOP, which would
                // freeze init alone; SIGKILL is allowed and ends the whole sandbox.
                if signal != libc::SIGKILL && !init::forwarded_signals().any(|s| s == signal) {
                    return self.status(Some(format!(
                        "signal {signal} cannot be forwarded to the service"
                    )));
                }
                let Some((pid, _)) = &self.init else {
                    return self.status(Some("the service is not running".into()));
                };
                match sys::kill(*pid, signal) {
                    Ok(()) => self.status(None),
                    Err(e) => self.status(Some(format!("cannot send signal {signal}: {e}"))),
                }
            }
            SupervisorRequest::ReplaceLog => self.replace_log(fds),
            SupervisorRequest::Release => {
                if self.init.is_some() {
                    return self.status(Some("the service is still running; stop it first".into()));
                }
                self.released = true;
                self.status(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&[u8]], finish: bool) -> Vec<(String, String)> {
        let mut lines = LineBuffer::new(Stream::Stdout);
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, 7, &mut out);
        }
        if finish {
            lines.finish(7, &mut out);
        }
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let r = log_line::decode(l).unwrap();
                (r.stream.as_str().to_string(), r.text)
            })
            .collect()
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let got = records(&[b"hel", b"lo\nwor", b"ld\n"], false);

        assert_eq!(
            got,
            vec![
                ("stdout".into(), "hello".into()),
                ("stdout".into(), "world".into())
            ]
        );
    }

    #[test]
    fn unterminated_last_line_is_flushed_at_eof() {
        assert!(records(&[b"tail"], false).is_empty());

        let got = records(&[b"tail"], true);

        assert_eq!(got, vec![("stdout".into(), "tail".into())]);
    }

    #[test]
    fn long_lines_are_split_at_max_line() {
        let long = vec![b'x'; log_line::MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');

        let got = records(&[&input[..100], &input[100..]], false);

        let lens: Vec<usize> = got.iter().map(|(_, t)| t.len()).collect();
        assert_eq!(lens, vec![log_line::MAX_LINE, log_line::MAX_LINE, 10]);
    }

    #[test]
    fn a_line_of_exactly_max_line_is_one_record() {
        let mut input = vec![b'y'; log_line::MAX_LINE];
        input.push(b'\n');

        let got = records(&[&input], false);

        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), log_line::MAX_LINE);
    }

    #[test]
    fn empty_lines_are_kept() {
        let mut lines = LineBuffer::new(Stream::Stderr);
        let mut out = Vec::new();

        lines.push(b"\n", 1, &mut out);

        assert_eq!(out, b"1 stderr \n");
    }

    #[test]
    fn wait_status_decodes_code_and_signal() {
        assert_eq!(
            decode_wait(3 << 8),
            ExitStatus {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            decode_wait(libc::SIGKILL),
            ExitStatus {
                code: None,
                signal: Some(9)
            }
        );
    }
}
