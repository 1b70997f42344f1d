//! The manager's connections: accepting them, reading requests, queueing replies, and what
//! each request does.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use berth_protocol::supervisor::{KillWhom, SupervisorRequest, SupervisorStatus};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags, SocketFlags};

use super::event_loop::Supervisor;
use crate::sandbox::{init, sys};

const MAX_CLIENTS: usize = 32;
/// Longest request line; a client sending more is disconnected.
const MAX_REQUEST: usize = 64 * 1024;
/// Descriptors a client may have sent ahead of the requests that use them.
const MAX_CLIENT_FDS: usize = 4;
/// Unsent replies a slow client may accumulate before it is disconnected.
const MAX_PENDING_REPLIES: usize = 1 << 20;

pub(super) struct Client {
    pub(super) fd: OwnedFd,
    pub(super) input: Vec<u8>,
    pub(super) output: Vec<u8>,
    /// Descriptors received with the input, oldest first (for `ReplaceLog`).
    pub(super) fds: VecDeque<OwnedFd>,
    pub(super) dead: bool,
    /// The last snapshot this client got (as a reply or unasked), without its error.
    pub(super) seen: Option<SupervisorStatus>,
}

impl Client {
    /// Sends `status` unless this client has already seen it. STATUS= and ERRNO= alone are
    /// left to notify.rs, which paces them (a flood must not overrun a client).
    pub(super) fn tell(&mut self, status: &SupervisorStatus) {
        let Some(seen) = &self.seen else {
            return self.queue(status);
        };
        let paced = SupervisorStatus {
            status_text: seen.status_text.clone(),
            notify_errno: seen.notify_errno,
            ..status.clone()
        };
        if *seen != paced {
            self.queue(status);
        }
    }

    pub(super) fn queue(&mut self, status: &SupervisorStatus) {
        self.seen = Some(SupervisorStatus {
            error: None,
            ..status.clone()
        });
        if let Ok(mut line) = serde_json::to_vec(status) {
            line.push(b'\n');
            self.output.extend_from_slice(&line);
        }
        self.flush();
    }

    pub(super) fn flush(&mut self) {
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

impl Supervisor {
    pub(super) fn accept(&mut self) {
        loop {
            match rustix::net::accept_with(
                &self.control.listener,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            ) {
                Ok(fd) => {
                    // Refused peers are just closed.
                    if self.control.allowed(&fd) && self.clients.len() < MAX_CLIENTS {
                        // A new client hears of changes from now on; its first request
                        // tells it the present.
                        let seen = Some(self.status(None));
                        self.clients.push(Client {
                            fd,
                            input: Vec::new(),
                            output: Vec::new(),
                            fds: VecDeque::new(),
                            dead: false,
                            seen,
                        });
                    }
                }
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(_) => return,
            }
        }
    }

    pub(super) fn client_io(&mut self, i: usize) {
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

    /// Sends `signal` to every process of the service but init.
    fn signal_all(&self, signal: i32) -> SupervisorStatus {
        if self.init.is_none() {
            return self.status(Some("the service is not running".into()));
        }
        self.signal_service(signal);
        self.status(None)
    }

    fn handle(&mut self, line: &[u8], fds: &mut VecDeque<OwnedFd>) -> SupervisorStatus {
        let request = match serde_json::from_slice::<SupervisorRequest>(line) {
            Ok(request) => request,
            Err(e) => return self.status(Some(format!("invalid request: {e}"))),
        };
        match request {
            SupervisorRequest::Status => self.status(None),
            SupervisorRequest::Stop { timeout_ms } => {
                if self.init.is_some() {
                    // 0: the program's TimeoutStopSec=.
                    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
                    self.run.request_stop(timeout, Instant::now());
                    self.carry_out();
                }
                self.status(None)
            }
            SupervisorRequest::Signal { signal, whom } => {
                if !(1..=sys::SIGNAL_MAX).contains(&signal) {
                    return self.status(Some(format!("invalid signal {signal}")));
                }
                if whom == KillWhom::All {
                    return self.signal_all(signal);
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
                if signal == libc::SIGKILL && self.run.main_ns_pid().is_none() {
                    // No main to kill: SIGKILL to init ends the whole sandbox, as before.
                    return match sys::kill(*pid, signal) {
                        Ok(()) => self.status(None),
                        Err(e) => self.status(Some(format!("cannot send signal {signal}: {e}"))),
                    };
                }
                let Some(ns_pid) = self.run.main_ns_pid() else {
                    return self.status(Some("the service has no main process".into()));
                };
                self.signal_main(ns_pid, signal);
                self.status(None)
            }
            SupervisorRequest::ReplaceLog => self.replace_log(fds),
            SupervisorRequest::Reload => {
                let outcome = self.run.request_reload(Instant::now());
                self.carry_out();
                self.status(outcome.err())
            }
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
