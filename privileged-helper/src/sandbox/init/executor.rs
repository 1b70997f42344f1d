//! Init's life once the sandbox is built: take the supervisor's requests, fork each command,
//! reap every child and report it, forward signals to main.

use std::convert::Infallible;
use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, UCred};

use super::channel::{CommandList, MAX_REPORT, REQUEST_LEN, Report, Request};
use super::{Template, cstring, init_signals};
use crate::launch_spec::LaunchSpec;
use crate::sandbox::{Failure, seccomp, sys};

/// What init keeps for its commands.
pub(super) struct Io {
    pub(super) template: Template,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) channel: OwnedFd,
}

/// Sends one report; best effort (a supervisor that is gone cannot be told anything).
pub(super) fn send(channel: &OwnedFd, report: &Report) {
    let _ = rustix::net::send(channel, &report.encode(), SendFlags::NOSIGNAL);
}

/// Sends one report with a descriptor (SCM_RIGHTS), which is closed here afterwards.
fn send_with_fd(channel: &OwnedFd, report: &Report, fd: OwnedFd) {
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let _ = rustix::net::sendmsg(
        channel,
        &[IoSlice::new(&report.encode())],
        &mut control,
        SendFlags::NOSIGNAL,
    );
}

struct Executor<'a> {
    spec: &'a LaunchSpec,
    io: Io,
    /// Where forwarded signals go.
    main: Option<libc::pid_t>,
    /// The commands still running: pid and seq.
    commands: Vec<(libc::pid_t, u32)>,
    /// The seq of the last command started (requests with a seq not above it are ignored).
    last_seq: u32,
    /// The supervisor closed the channel.
    orphaned: bool,
}

/// Serves the supervisor until it asks init to end. `bind_listener` goes with the ready
/// report; init keeps no copy (with the supervisor gone, a bind fails rather than waits).
pub(super) fn serve(spec: &LaunchSpec, io: Io, bind_listener: Option<OwnedFd>) -> ! {
    let signals = init_signals();
    // Already blocked by the supervisor before the fork; this only makes sure.
    let _ = signals.block();
    let signalfd = match signal_fd(&signals) {
        Ok(fd) => fd,
        Err(e) => {
            send(
                &io.channel,
                &Report::SetupFailed(Failure::setup("create init's signalfd", e)),
            );
            sys::exit(127)
        }
    };
    let mut ex = Executor {
        spec,
        io,
        main: None,
        commands: Vec::new(),
        last_seq: 0,
        orphaned: false,
    };
    match bind_listener {
        Some(listener) => send_with_fd(&ex.io.channel, &Report::Ready, listener),
        None => send(&ex.io.channel, &Report::Ready),
    }
    loop {
        let mut pfds = vec![sys::pollfd(signalfd.as_fd(), libc::POLLIN)];
        if !ex.orphaned {
            pfds.push(sys::pollfd(ex.io.channel.as_fd(), libc::POLLIN));
        }
        if sys::poll(&mut pfds, -1).is_err() {
            continue;
        }
        if pfds[0].revents != 0 {
            ex.take_signals(&signalfd);
        }
        if pfds.len() > 1 && pfds[1].revents != 0 {
            ex.take_requests();
        }
    }
}

/// A non-blocking signalfd for `signals` (which are blocked).
fn signal_fd(signals: &sys::SigSet) -> std::io::Result<OwnedFd> {
    // SAFETY: the set is a valid sigset_t; -1 asks for a new descriptor.
    let fd =
        unsafe { libc::signalfd(-1, signals.as_ptr(), libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Executor<'_> {
    fn take_signals(&mut self, signalfd: &OwnedFd) {
        let mut reap = false;
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>() * 16];
        loop {
            let n = match rustix::io::read(signalfd, &mut buf) {
                Ok(n) if n > 0 => n,
                Err(Errno::INTR) => continue,
                _ => break,
            };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            for info in buf[..n].chunks_exact(size) {
                // ssi_signo is the first field, a u32.
                let sig = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
                if sig == libc::SIGCHLD {
                    reap = true;
                } else if let Some(main) = self.main {
                    // ESRCH just means main is gone; its SIGCHLD is on its way.
                    let _ = sys::kill(main, sig);
                }
            }
        }
        if reap {
            self.reap();
        }
    }

    fn reap(&mut self) {
        loop {
            match sys::waitpid(-1, libc::WNOHANG) {
                Ok(Some((pid, status))) => {
                    let seq = match self.commands.iter().position(|(p, _)| *p == pid) {
                        Some(i) => self.commands.swap_remove(i).1,
                        None => 0,
                    };
                    let was_main = self.main == Some(pid);
                    if was_main {
                        self.main = None;
                    }
                    send(
                        &self.io.channel,
                        &Report::Exited {
                            seq,
                            ns_pid: pid as u32,
                            status,
                        },
                    );
                    if was_main && self.orphaned {
                        // Nobody supervises the rest: end it with main, as before commands.
                        sys::exit(0)
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    send(&self.io.channel, &Report::Empty { seq: self.last_seq });
                    if self.orphaned {
                        sys::exit(0)
                    }
                    return;
                }
            }
        }
    }

    fn take_requests(&mut self) {
        let mut buf = [0u8; REQUEST_LEN + 1];
        loop {
            match rustix::net::recv(&self.io.channel, &mut buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => {
                    self.orphaned = true;
                    if self.main.is_none() {
                        sys::exit(0)
                    }
                    return;
                }
                Ok((n, _)) => {
                    if let Some(request) = Request::decode(&buf[..n.min(buf.len())]) {
                        self.handle(request);
                    }
                }
                Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Exec {
                list,
                index,
                seq,
                main,
                main_ns,
            } => {
                if seq > self.last_seq {
                    self.last_seq = seq;
                    self.exec(list, index, seq, main, main_ns);
                }
            }
            Request::Signal { ns_pid, signal } => {
                // Never init itself, never a process group or everyone.
                if let Ok(pid) = libc::pid_t::try_from(ns_pid)
                    && pid > 1
                {
                    let _ = sys::kill(pid, signal);
                }
            }
            Request::SignalAll { signal } => {
                // For PID 1 of a namespace, -1 is every process of it but itself.
                let _ = sys::kill(-1, signal);
            }
            Request::SetMain { ns_pid } => {
                self.main = libc::pid_t::try_from(ns_pid).ok().filter(|p| *p > 1);
            }
            Request::FindMain => {
                let report = match find_main(self.spec) {
                    Ok(pid) => {
                        self.main = libc::pid_t::try_from(pid).ok();
                        Report::Main(Ok(pid))
                    }
                    Err(FindMain::Pending) => Report::MainPending,
                    Err(FindMain::Failed(why)) => Report::Main(Err(why)),
                };
                send(&self.io.channel, &report);
            }
            Request::End => sys::exit(0),
        }
    }

    /// A command that never became a process: reported as failed and exited with 127, like
    /// one whose exec failed, so the supervisor sees every command end the same way.
    fn not_forked(&mut self, seq: u32, failure: Failure) {
        send(&self.io.channel, &Report::ExecFailed { seq, failure });
        send(
            &self.io.channel,
            &Report::Exited {
                seq,
                ns_pid: 0,
                status: 127 << 8,
            },
        );
        // Tells the supervisor when nothing else runs either.
        self.reap();
    }

    /// Forks command `seq`; reports it exec'd or why not once the exec is over.
    fn exec(&mut self, list: CommandList, index: u32, seq: u32, main: bool, main_ns: u32) {
        let command = usize::try_from(index)
            .ok()
            .and_then(|i| list.of(&self.spec.program).get(i));
        let prepared = match command {
            Some(command) => prepare(&self.io.template, &command.argv, main_ns),
            None => Err(Failure::setup(
                format!("find {} command {index}", list.directive()),
                Errno::INVAL,
            )),
        };
        let prepared = prepared.and_then(|p| {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map(|pipe| (p, pipe))
                .map_err(|e| Failure::setup("create the exec pipe", e))
        });
        let (command, (pipe_r, pipe_w)) = match prepared {
            Ok(ok) => ok,
            Err(failure) => return self.not_forked(seq, failure),
        };
        // SAFETY: init is single-threaded; the child ends in execve or sys::exit.
        let pid = match unsafe { sys::fork() } {
            Ok(sys::Forked::Child) => {
                drop(pipe_r);
                let Err(failure) = become_command(&command, &self.io, seq);
                let mut json = Vec::new();
                let _ = serde_json::to_writer(&mut json, &failure);
                let _ = sys::write_all(&pipe_w, &json);
                sys::exit(127)
            }
            Ok(sys::Forked::Parent(pid)) => pid,
            Err(e) => return self.not_forked(seq, Failure::setup("fork the command", e)),
        };
        drop(pipe_w);
        self.commands.push((pid, seq));
        if main {
            self.main = Some(pid);
        }
        // EOF without a word: the exec succeeded (the pipe is CLOEXEC); the child runs only
        // our code until then, so this wait is short.
        let mut failure = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rustix::io::read(&pipe_r, &mut buf) {
                Ok(0) => break,
                Ok(n) if failure.len() + n <= MAX_REPORT => failure.extend_from_slice(&buf[..n]),
                Ok(_) => break,
                Err(Errno::INTR) => {}
                Err(_) => break,
            }
        }
        let report = if failure.is_empty() {
            Report::Execd { seq }
        } else {
            Report::ExecFailed {
                seq,
                failure: serde_json::from_slice(&failure)
                    .unwrap_or_else(|_| Failure::setup("start the command", Errno::PROTO)),
            }
        };
        send(&self.io.channel, &report);
    }
}

/// One command ready to exec.
struct Prepared<'a> {
    path: CString,
    path_str: String,
    argv: Vec<CString>,
    env: Vec<CString>,
    template: &'a Template,
}

/// `$MAINPID` and `${MAINPID}` replaced by the main process's pid in the sandbox (empty when
/// there is none, as systemd does).
fn substitute_main_pid(arg: &str, main_ns: u32) -> String {
    if !arg.contains("MAINPID") {
        return arg.to_string();
    }
    let value = if main_ns == 0 {
        String::new()
    } else {
        main_ns.to_string()
    };
    arg.replace("${MAINPID}", &value)
        .replace("$MAINPID", &value)
}

fn prepare<'a>(
    template: &'a Template,
    argv: &[String],
    main_ns: u32,
) -> Result<Prepared<'a>, Failure> {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| substitute_main_pid(a, main_ns))
        .collect();
    let path_str = argv.first().cloned().unwrap_or_default();
    if path_str.is_empty() {
        return Err(Failure::Exec {
            path: String::new(),
            errno: libc::EINVAL,
        });
    }
    let mut env: Vec<CString> = template
        .env
        .iter()
        .filter(|e| !e.starts_with("MAINPID="))
        .map(|e| cstring(e, "environment"))
        .collect::<Result<_, _>>()?;
    if main_ns != 0 {
        env.push(cstring(&format!("MAINPID={main_ns}"), "environment")?);
    }
    Ok(Prepared {
        path: cstring(&path_str, "argv[0]")?,
        path_str,
        argv: argv
            .iter()
            .map(|a| cstring(a, "argv"))
            .collect::<Result<_, _>>()?,
        env,
        template,
    })
}

fn become_command(command: &Prepared<'_>, io: &Io, seq: u32) -> Result<Infallible, Failure> {
    let template = command.template;
    rustix::stdio::dup2_stdout(&io.stdout).map_err(|e| Failure::setup("set up stdout", e))?;
    rustix::stdio::dup2_stderr(&io.stderr).map_err(|e| Failure::setup("set up stderr", e))?;
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
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(template.umask));
    rustix::process::chdir(template.cwd.as_c_str()).map_err(|e| Failure::WorkingDirectory {
        path: template.cwd_str.clone(),
        errno: e.raw_os_error(),
    })?;
    sys::reset_signals(false).map_err(|e| Failure::setup("reset signals", e))?;
    // Only 0, 1 and 2 survive the exec (the channel closes with it).
    sys::cloexec_from_3().map_err(|e| Failure::setup("close descriptors", e))?;

    let pid = rustix::process::getpid();
    let ucred = UCred {
        pid,
        uid: rustix::process::getuid(),
        gid: rustix::process::getgid(),
    };
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmCredentials(ucred));
    let started = Report::Started {
        seq,
        ns_pid: pid.as_raw_nonzero().get() as u32,
    }
    .encode();
    rustix::net::sendmsg(
        &io.channel,
        &[IoSlice::new(&started)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| Failure::setup("report the command's pid", e))?;

    let mut argv: Vec<*const libc::c_char> = command.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut env: Vec<*const libc::c_char> = command.env.iter().map(|e| e.as_ptr()).collect();
    env.push(std::ptr::null());
    // The last step before the exec: from here on only the service's syscalls run, and
    // nothing more is allocated or reported unless the exec fails.
    seccomp::install(&template.seccomp)
        .map_err(|e| Failure::setup("install the seccomp filter", e))?;
    // SAFETY: path and every element are NUL-terminated strings alive for the call; both
    // arrays end with a null pointer.
    unsafe { libc::execve(command.path.as_ptr(), argv.as_ptr(), env.as_ptr()) };
    let errno = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    Err(Failure::Exec {
        path: command.path_str.clone(),
        errno,
    })
}

/// The main process of a forking service, as a pid of the sandbox: the one `PIDFile=` names
/// (it must be a process of the sandbox other than init), else the only process left (or the
/// only child of init).
fn find_main(spec: &LaunchSpec) -> Result<u32, FindMain> {
    match &spec.program.pid_file {
        // Not there yet: a daemon may write it after its parent exited.
        Some(path) if rustix::fs::stat(path.as_str()).err() == Some(Errno::NOENT) => {
            Err(FindMain::Pending)
        }
        Some(path) => read_pid_file(path).map_err(FindMain::Failed),
        None => guess_main().map_err(FindMain::Failed),
    }
}

/// Why [`find_main`] found no main process.
enum FindMain {
    /// The PID file does not exist yet: ask again (until TimeoutStartSec=, as systemd waits).
    Pending,
    Failed(String),
}

fn read_pid_file(path: &str) -> Result<u32, String> {
    use berth_protocol::service_program::MAX_PID_FILE_BYTES;
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NOCTTY
            | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("cannot open PIDFile= {path}: {e}"))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| format!("cannot stat PIDFile= {path}: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(format!("PIDFile= {path} is not a regular file"));
    }
    let mut buf = vec![0u8; MAX_PID_FILE_BYTES];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(format!("cannot read PIDFile= {path}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("PIDFile= {path} does not hold a pid"))?;
    let outside =
        || format!("PIDFile= {path} names pid {pid}, which is not a process of the service");
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Err(outside());
    };
    if raw <= 1 {
        return Err(outside());
    }
    // Only the sandbox's processes have pids here; EPERM still means it exists.
    match sys::kill(raw, 0) {
        Ok(()) => Ok(pid),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(pid),
        Err(_) => Err(outside()),
    }
}

/// The processes of the sandbox but init, from its /proc, with their parents; zombies left out.
fn processes() -> Result<Vec<(u32, u32)>, String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    let mut out = Vec::new();
    for entry in dir.flatten().take(1 << 16) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command's name in parentheses: state, ppid.
        let mut rest = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let state = rest.next().unwrap_or("");
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state != "Z" && state != "X" {
            out.push((pid, ppid));
        }
    }
    Ok(out)
}

fn guess_main() -> Result<u32, String> {
    let procs = processes()?;
    match procs.as_slice() {
        [] => Err("no process of the service is left to be its main process".into()),
        [(pid, _)] => Ok(*pid),
        _ => {
            let children: Vec<u32> = procs
                .iter()
                .filter(|(_, ppid)| *ppid == 1)
                .map(|(p, _)| *p)
                .collect();
            match children.as_slice() {
                [pid] => Ok(*pid),
                _ => Err(format!(
                    "cannot tell the main process among {} processes (set PIDFile=)",
                    procs.len()
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_pid_is_substituted_in_both_spellings() {
        assert_eq!(substitute_main_pid("kill -HUP $MAINPID", 7), "kill -HUP 7");
        assert_eq!(substitute_main_pid("${MAINPID}x", 12), "12x");
        assert_eq!(substitute_main_pid("$MAINPID", 0), "");
        assert_eq!(substitute_main_pid("plain", 3), "plain");
    }
}
