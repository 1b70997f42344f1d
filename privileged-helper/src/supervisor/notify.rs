//! `$NOTIFY_SOCKET` (sd_notify): the supervisor's end of the datagram socket the sandbox's init
//! binds at [`notify_socket::PATH`], what the service's messages say, and whose count.
//!
//! The socket is made (SO_PASSCRED) before init is forked and inherited by it; init binds it
//! inside the sandbox and closes its copy, so only the service can send to it. The kernel puts
//! the sender's pid, as the supervisor's pid namespace numbers it, in SCM_CREDENTIALS: that is
//! what `NotifyAccess=` is checked against. Everything in a datagram is hostile input: at most
//! [`MAX_DATAGRAM`] bytes, no NUL, unknown or malformed assignments ignored, descriptors that
//! come with it closed (no FDSTORE=), `MAINPID=` only for a process of the service.
//!
//! What is accepted lands in [`NotifyState`], which the run reads after each loop turn
//! (level-triggered). STATUS= and ERRNO= go into every snapshot; a change of them is sent to
//! the clients at most every [`BROADCAST_INTERVAL`], so a service that floods STATUS= cannot
//! bury berthd in snapshots; at most [`DATAGRAMS_PER_TURN`] are read per loop turn, so it
//! cannot starve the control socket or the log either.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use berth_protocol::log_line::{self, Stream};
use berth_protocol::service_program::{NotifyAccess, ServiceProgram, ServiceType};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SocketFlags,
    SocketType,
};

use super::event_loop::Supervisor;
use super::service_pids;
use crate::sandbox::cgroup::ServiceCgroup;
use crate::sandbox::{Failure, notify_socket};

/// Longest datagram accepted (systemd reads at most a page too); longer ones are dropped.
pub(super) const MAX_DATAGRAM: usize = 4096;
/// Longest STATUS= text kept (cut at a character boundary).
pub(super) const MAX_STATUS: usize = 1024;
/// Datagrams read per loop turn; the rest wait in the socket (whose queue the kernel bounds,
/// blocking or failing the senders, not us).
pub(super) const DATAGRAMS_PER_TURN: usize = 64;
/// Least time between two snapshots sent for a STATUS=/ERRNO= change alone.
pub(super) const BROADCAST_INTERVAL: Duration = Duration::from_millis(20);
/// Least time between two notes about refused messages in the service's log.
const REFUSAL_NOTE_INTERVAL: Duration = Duration::from_secs(1);
/// Descriptors we make room for (to close them); the kernel closes any beyond.
const MAX_RIGHTS: usize = 8;

/// What the service said over `$NOTIFY_SOCKET` in this run (h-program's run reads it).
#[derive(Debug, Default)]
pub(super) struct NotifyState {
    /// READY=1 accepted this run (a count).
    pub(super) ready: u64,
    /// RELOADING=1 accepted this run (a count).
    pub(super) reloading: u64,
    /// STOPPING=1 seen.
    pub(super) stopping: bool,
    pub(super) status_text: Option<String>,
    pub(super) errno: Option<i32>,
    /// An accepted MAINPID= (host pid), taken by the run.
    pub(super) main_pid: Option<u32>,
    /// Last WATCHDOG=1.
    pub(super) last_watchdog: Option<Instant>,
    /// WATCHDOG=trigger.
    pub(super) watchdog_trigger: bool,
    /// WATCHDOG_USEC=: the service's own watchdog interval (systemd lets it override
    /// WatchdogSec=); stored, the run decides what to do with it.
    pub(super) watchdog_usec: Option<u64>,
}

/// One assignment of a notify datagram that berth understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Message {
    Ready,
    Reloading,
    Stopping,
    /// STATUS=, control characters dropped, at most [`MAX_STATUS`] bytes; empty clears it.
    Status(String),
    /// MAINPID=, as the service's pid namespace numbers it.
    MainPid(u32),
    Errno(i32),
    Watchdog,
    WatchdogTrigger,
    WatchdogUsec(u64),
}

/// Why a datagram was dropped whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum DatagramError {
    #[error("longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    #[error("contains a NUL byte")]
    Nul,
}

/// The assignments of one datagram (newline-separated `KEY=VALUE`), in order. Lines that are
/// not UTF-8, unknown keys and malformed values are skipped, as systemd does.
pub(super) fn parse(datagram: &[u8]) -> Result<Vec<Message>, DatagramError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(DatagramError::TooLong);
    }
    if datagram.contains(&0) {
        return Err(DatagramError::Nul);
    }
    Ok(datagram
        .split(|b| *b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter_map(parse_assignment)
        .collect())
}

fn parse_assignment(line: &str) -> Option<Message> {
    let (key, value) = line.split_once('=')?;
    Some(match (key, value) {
        ("READY", "1") => Message::Ready,
        ("RELOADING", "1") => Message::Reloading,
        ("STOPPING", "1") => Message::Stopping,
        ("STATUS", text) => Message::Status(status_text(text)),
        ("MAINPID", pid) => Message::MainPid(pid.parse().ok().filter(|p| *p > 0)?),
        ("ERRNO", errno) => Message::Errno(errno.parse().ok().filter(|e| *e >= 0)?),
        ("WATCHDOG", "1") => Message::Watchdog,
        ("WATCHDOG", "trigger") => Message::WatchdogTrigger,
        ("WATCHDOG_USEC", usec) => Message::WatchdogUsec(usec.parse().ok().filter(|u| *u > 0)?),
        _ => return None,
    })
}

/// STATUS= as it is kept: control characters dropped (it ends up on terminals), cut to
/// [`MAX_STATUS`] bytes at a character boundary.
fn status_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_STATUS));
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_STATUS {
            break;
        }
        out.push(c);
    }
    out
}

/// The service is given a `$NOTIFY_SOCKET` when its type waits for READY=1 or its
/// NotifyAccess= lets anyone speak.
pub(super) fn wanted(program: &ServiceProgram) -> bool {
    program.service_type == ServiceType::Notify || program.notify_access != NotifyAccess::None
}

/// The supervisor's end of `$NOTIFY_SOCKET`, unbound: init binds it in the sandbox.
pub(super) fn create_socket() -> Result<OwnedFd, Failure> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| Failure::setup("create the notify socket", e))?;
    rustix::net::sockopt::set_socket_passcred(&fd, true)
        .map_err(|e| Failure::setup("set SO_PASSCRED on the notify socket", e))?;
    Ok(fd)
}

/// The environment every command of the service gets: berthd's, with `NOTIFY_SOCKET` set to
/// the socket init binds when there is one (replacing any berthd sent).
pub(super) fn environment(environment: &[String], with_socket: bool) -> Vec<String> {
    let mut env: Vec<String> = environment
        .iter()
        .filter(|e| !with_socket || !e.starts_with("NOTIFY_SOCKET="))
        .cloned()
        .collect();
    if with_socket {
        env.push(format!("NOTIFY_SOCKET={}", notify_socket::PATH));
    }
    env
}

/// Who may speak, as the supervisor sees the service at the moment a datagram is read.
pub(super) struct Senders<'a> {
    pub(super) access: NotifyAccess,
    /// The main process's host pid, while it runs.
    pub(super) main: Option<u32>,
    /// Host pids of the Exec*= commands running now (NotifyAccess=exec).
    pub(super) commands: &'a [u32],
    /// The service's processes (NotifyAccess=all); none without a cgroup.
    pub(super) cgroup: Option<&'a ServiceCgroup>,
}

impl Senders<'_> {
    /// Whether a datagram from host pid `sender` counts (0: the kernel could not name one).
    pub(super) fn allow(&self, sender: u32) -> bool {
        if sender == 0 {
            return false;
        }
        let is_main = self.main == Some(sender);
        match self.access {
            NotifyAccess::None => false,
            NotifyAccess::Main => is_main,
            NotifyAccess::Exec => is_main || self.commands.contains(&sender),
            // Without a cgroup there is no way to tell the service's processes from others
            // (the socket is only reachable from the sandbox, but the check must not rest on
            // that alone): main only.
            NotifyAccess::All => {
                is_main
                    || self
                        .cgroup
                        .and_then(|c| c.pids().ok())
                        .is_some_and(|pids| pids.contains(&sender))
            }
        }
    }
}

/// Why a MAINPID= was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum MainPidError {
    #[error("pid 1 is berth's init, not a process of the service")]
    Init,
    #[error("no process of the service has that pid")]
    NotInService,
    #[error("the service's pid namespace cannot be read")]
    NoNamespace,
}

/// The supervisor's end of `$NOTIFY_SOCKET` and the bookkeeping of what it sends on.
pub(super) struct NotifySocket {
    fd: OwnedFd,
    access: NotifyAccess,
    last_broadcast: Option<Instant>,
    /// A STATUS=/ERRNO= change not yet sent to the clients is due then.
    broadcast_due: Option<Instant>,
    refusals: RefusalNotes,
}

/// Notes about refused messages at most once per [`REFUSAL_NOTE_INTERVAL`] (a flood of bad
/// messages must not become a flood of notes), each with the count of those in between.
#[derive(Debug, Default)]
pub(super) struct RefusalNotes {
    last_note: Option<Instant>,
    /// Refusals since the last note.
    unnoted: u64,
}

impl RefusalNotes {
    /// The note for refusing `what` now, or `None` when it is only counted.
    pub(super) fn note(&mut self, what: &str) -> Option<String> {
        let now = Instant::now();
        if self
            .last_note
            .is_some_and(|at| now.duration_since(at) < REFUSAL_NOTE_INTERVAL)
        {
            self.unnoted += 1;
            return None;
        }
        self.last_note = Some(now);
        Some(match std::mem::take(&mut self.unnoted) {
            0 => format!("refused {what}"),
            n => format!("refused {what} (and {n} more messages since the last note)"),
        })
    }
}

impl NotifySocket {
    pub(super) fn new(fd: OwnedFd, program: &ServiceProgram) -> Self {
        NotifySocket {
            fd,
            access: program.notify_access,
            last_broadcast: None,
            broadcast_due: None,
            refusals: RefusalNotes::default(),
        }
    }

    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// When the loop must wake up to send a pending change.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.broadcast_due
    }
}

/// One datagram as read: the sender's host pid (0 when unknown), its length and whether it
/// was longer than the buffer, and how many descriptors came with it (closed already).
pub(super) struct Datagram {
    pub(super) sender: u32,
    pub(super) len: usize,
    pub(super) truncated: bool,
    pub(super) descriptors: usize,
}

/// Reads one datagram into `buf` without waiting (`None`: none is queued); the sender is known
/// on a socket with SO_PASSCRED.
pub(super) fn receive(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    let mut space =
        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(MAX_RIGHTS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    loop {
        match rustix::net::recvmsg(
            fd,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Ok(msg) => {
                // Descriptors (FDSTORE=, BARRIER=1, a journal entry's memfd) are closed as the
                // buffer drains: berth keeps none, and a barrier's sender sees its descriptor
                // closed.
                let (mut sender, mut descriptors) = (0, 0);
                for message in control.drain() {
                    match message {
                        RecvAncillaryMessage::ScmCredentials(cred) => {
                            sender = cred.pid.as_raw_pid() as u32;
                        }
                        RecvAncillaryMessage::ScmRights(fds) => descriptors += fds.count(),
                        _ => {}
                    }
                }
                return Ok(Some(Datagram {
                    sender,
                    len: msg.bytes.min(buf.len()),
                    truncated: msg.flags.contains(ReturnFlags::TRUNC),
                    descriptors,
                }));
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Supervisor {
    /// Reads what the service sent (at most [`DATAGRAMS_PER_TURN`]) into `self.notify`.
    pub(super) fn receive_notify(&mut self) {
        // One byte more than accepted, so that an over-long datagram shows as truncated.
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        let mut changed = false;
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(socket) = &self.notify_socket else {
                return;
            };
            let datagram = match receive(&socket.fd, &mut buf) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                // Nothing else is possible on a healthy datagram socket; stop listening
                // rather than spin on it.
                Err(e) => {
                    self.note(&format!("stopped reading the notify socket: {e}"));
                    self.notify_socket = None;
                    return;
                }
            };
            changed |= self.accept_datagram(&datagram, &buf[..datagram.len]);
        }
        // An accepted MAINPID= stays in the state until the run takes it (run_actions.rs).
        if changed {
            self.notify_changed();
        }
    }

    /// Applies one datagram; true when the snapshot changed.
    fn accept_datagram(&mut self, datagram: &Datagram, bytes: &[u8]) -> bool {
        let messages = match (datagram.truncated, parse(bytes)) {
            (true, _) => Err(DatagramError::TooLong),
            (false, parsed) => parsed,
        };
        let messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                self.refuse(&format!(
                    "a notify message from pid {}: {e}",
                    datagram.sender
                ));
                return false;
            }
        };
        let access = self
            .notify_socket
            .as_ref()
            .map_or(NotifyAccess::None, |s| s.access);
        let commands = self.run.command_pids();
        let senders = Senders {
            access,
            // Also once main is gone: what it sent just before its exit still counts (nobody
            // else can reach the socket, whose namespace ends with the run).
            main: self.run.last_main_pid(),
            // The Exec*= command in flight (NotifyAccess=exec).
            commands: &commands,
            cgroup: self.cgroup.as_ref(),
        };
        if !senders.allow(datagram.sender) {
            self.refuse(&format!(
                "a notify message from pid {}: NotifyAccess={} does not allow it",
                datagram.sender,
                access_name(access)
            ));
            return false;
        }
        let before = (self.notify.status_text.clone(), self.notify.errno);
        for message in messages {
            self.apply(message, datagram.sender);
        }
        (self.notify.status_text.clone(), self.notify.errno) != before
    }

    fn apply(&mut self, message: Message, sender: u32) {
        let state = &mut self.notify;
        match message {
            Message::Ready => state.ready += 1,
            Message::Reloading => state.reloading += 1,
            Message::Stopping => state.stopping = true,
            Message::Status(text) => state.status_text = Some(text).filter(|t| !t.is_empty()),
            Message::Errno(errno) => state.errno = Some(errno),
            Message::Watchdog => state.last_watchdog = Some(Instant::now()),
            Message::WatchdogTrigger => state.watchdog_trigger = true,
            Message::WatchdogUsec(usec) => state.watchdog_usec = Some(usec),
            Message::MainPid(ns_pid) => match self.service_pid(ns_pid) {
                Ok(pid) => self.notify.main_pid = Some(pid),
                Err(e) => {
                    self.refuse(&format!("MAINPID={ns_pid} from pid {sender}: {e}"));
                }
            },
        }
    }

    /// The host pid of the service's process `ns_pid` (as the service numbers it).
    fn service_pid(&self, ns_pid: u32) -> Result<u32, MainPidError> {
        if ns_pid == 1 {
            return Err(MainPidError::Init);
        }
        let Some((init, _)) = &self.init else {
            return Err(MainPidError::NotInService);
        };
        let level = self.level.ok_or(MainPidError::NoNamespace)?;
        service_pids::host_pid(ns_pid, level, *init as u32, self.cgroup.as_ref())
            .ok_or(MainPidError::NotInService)
    }

    /// When the loop must wake up for the notify socket's sake.
    pub(super) fn notify_deadline(&self) -> Option<Instant> {
        self.notify_socket.as_ref().and_then(NotifySocket::deadline)
    }

    /// A line from berth itself in the service's log (stderr), for what the service should
    /// know went wrong.
    pub(super) fn note(&self, text: &str) {
        let mut record = Vec::new();
        let line = format!("berth-supervise: {text}");
        log_line::encode(
            crate::sandbox::sys::realtime_usec(),
            Stream::Stderr,
            line.as_bytes(),
            &mut record,
        );
        self.write_log(&record);
    }

    /// Notes a refused message in the service's log, at most once per
    /// [`REFUSAL_NOTE_INTERVAL`] (a flood of bad messages must not become a flood of notes).
    fn refuse(&mut self, what: &str) {
        let Some(socket) = &mut self.notify_socket else {
            return;
        };
        if let Some(text) = socket.refusals.note(what) {
            self.note(&text);
        }
    }

    /// STATUS= or ERRNO= changed: tell the clients now, or once [`BROADCAST_INTERVAL`] has
    /// passed since the last time.
    fn notify_changed(&mut self) {
        let Some(socket) = &mut self.notify_socket else {
            return;
        };
        let now = Instant::now();
        match socket.last_broadcast {
            Some(at) if now.duration_since(at) < BROADCAST_INTERVAL => {
                socket.broadcast_due = Some(at + BROADCAST_INTERVAL);
            }
            _ => self.broadcast_notify(now),
        }
    }

    /// Sends a pending STATUS=/ERRNO= change whose time has come (called every loop turn).
    pub(super) fn notify_timer(&mut self) {
        let now = Instant::now();
        if self
            .notify_socket
            .as_ref()
            .and_then(|s| s.broadcast_due)
            .is_some_and(|due| now >= due)
        {
            self.broadcast_notify(now);
        }
    }

    fn broadcast_notify(&mut self, now: Instant) {
        if let Some(socket) = &mut self.notify_socket {
            socket.last_broadcast = Some(now);
            socket.broadcast_due = None;
        }
        let status = self.status(None);
        for client in &mut self.clients {
            client.queue(&status);
        }
    }
}

fn access_name(access: NotifyAccess) -> &'static str {
    match access {
        NotifyAccess::None => "none",
        NotifyAccess::Main => "main",
        NotifyAccess::Exec => "exec",
        NotifyAccess::All => "all",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_with_every_known_assignment_parses_in_order() {
        let datagram = b"READY=1\nSTATUS=serving 3 clients\nMAINPID=42\nERRNO=2\nWATCHDOG=1\n\
                         WATCHDOG=trigger\nWATCHDOG_USEC=5000000\nRELOADING=1\nSTOPPING=1\n";

        let messages = parse(datagram).unwrap();

        assert_eq!(
            messages,
            vec![
                Message::Ready,
                Message::Status("serving 3 clients".into()),
                Message::MainPid(42),
                Message::Errno(2),
                Message::Watchdog,
                Message::WatchdogTrigger,
                Message::WatchdogUsec(5_000_000),
                Message::Reloading,
                Message::Stopping,
            ]
        );
    }

    #[test]
    fn unknown_and_malformed_assignments_are_skipped() {
        let datagram =
            b"READY=0\nFDSTORE=1\nMAINPID=-3\nMAINPID=0\nMAINPID=x\nERRNO=-1\nnoequals\n\
                         WATCHDOG=2\n\xff\xfe=1\nREADY=1";

        let messages = parse(datagram).unwrap();

        assert_eq!(messages, vec![Message::Ready]);
    }

    #[test]
    fn datagram_with_a_nul_byte_is_dropped() {
        assert_eq!(parse(b"READY=1\0STATUS=x"), Err(DatagramError::Nul));
    }

    #[test]
    fn datagram_over_the_limit_is_dropped() {
        let datagram = vec![b'A'; MAX_DATAGRAM + 1];

        assert_eq!(parse(&datagram), Err(DatagramError::TooLong));
    }

    #[test]
    fn status_text_loses_control_characters() {
        let messages = parse("STATUS=\x1b[31mred\x07 alert\t!".as_bytes()).unwrap();

        assert_eq!(messages, vec![Message::Status("[31mred alert!".into())]);
    }

    #[test]
    fn status_text_is_cut_at_a_character_boundary() {
        let long = format!("STATUS=a{}", "é".repeat(MAX_STATUS));

        let messages = parse(long.as_bytes()).unwrap();

        let Message::Status(text) = &messages[0] else {
            panic!("{messages:?}")
        };
        assert!(
            text.len() <= MAX_STATUS && text.len() >= MAX_STATUS - 1,
            "{}",
            text.len()
        );
        assert!(text.starts_with('a') && text.ends_with('é'));
    }

    #[test]
    fn socket_is_wanted_for_notify_or_any_access() {
        let mut program = ServiceProgram::simple(vec!["/bin/true".into()]);
        assert!(!wanted(&program));
        program.notify_access = NotifyAccess::All;
        assert!(wanted(&program));
        program.notify_access = NotifyAccess::None;
        program.service_type = ServiceType::Notify;
        assert!(wanted(&program));
    }

    #[test]
    fn environment_gets_the_socket_in_place_of_berthds() {
        let env = vec!["PATH=/bin".into(), "NOTIFY_SOCKET=/elsewhere".into()];

        assert_eq!(
            environment(&env, true),
            vec![
                "PATH=/bin".to_string(),
                "NOTIFY_SOCKET=/run/berth/notify".into()
            ]
        );
        assert_eq!(environment(&env, false), env);
    }

    fn senders(access: NotifyAccess, commands: &[u32]) -> Senders<'_> {
        Senders {
            access,
            main: Some(100),
            commands,
            cgroup: None,
        }
    }

    #[test]
    fn access_main_allows_only_the_main_pid() {
        let s = senders(NotifyAccess::Main, &[200]);

        assert!(s.allow(100));
        assert!(!s.allow(200));
        assert!(!s.allow(0));
    }

    #[test]
    fn access_exec_allows_main_and_running_commands() {
        let s = senders(NotifyAccess::Exec, &[200]);

        assert!(s.allow(100) && s.allow(200));
        assert!(!s.allow(300));
    }

    #[test]
    fn access_none_allows_nobody_and_all_without_cgroup_only_main() {
        assert!(!senders(NotifyAccess::None, &[]).allow(100));
        assert!(senders(NotifyAccess::All, &[]).allow(100));
        assert!(!senders(NotifyAccess::All, &[]).allow(300));
    }

    #[test]
    fn no_main_pid_means_nobody_is_main() {
        let s = Senders {
            main: None,
            ..senders(NotifyAccess::Main, &[])
        };

        assert!(!s.allow(100));
    }
}
