//! The run's process work: init's reports in (untrusted: decoded strictly, pids checked), the
//! run's actions out (requests to init, signals), the notify state handed over.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags};

use super::event_loop::Supervisor;
use super::run::{Action, NotifyInput};
use super::service_pids;
use super::spawn::{EXEC_TIMEOUT, millis};
use crate::launch_spec::LaunchSpec;
use crate::sandbox::init::channel::{MAX_REPORT, Report, Request};
use crate::sandbox::{Failure, LaunchError, sys};

/// Reports taken per loop turn, so a flood cannot starve the rest of the loop.
const REPORTS_PER_TURN: usize = 256;

impl Supervisor {
    /// Takes init's queued reports. False once the channel is closed (init is gone).
    pub(super) fn read_channel(&mut self) -> bool {
        let mut buf = vec![0u8; MAX_REPORT + 1];
        for _ in 0..REPORTS_PER_TURN {
            let Some(channel) = &self.channel else {
                return false;
            };
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = match rustix::net::recvmsg(
                channel,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
            ) {
                Ok(msg) => msg,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => break,
                Err(_) => {
                    self.channel = None;
                    return false;
                }
            };
            if msg.bytes == 0 {
                self.channel = None;
                return false;
            }
            let sender = control.drain().find_map(|m| match m {
                RecvAncillaryMessage::ScmCredentials(cred) => Some(cred.pid.as_raw_pid() as u32),
                _ => None,
            });
            if let Some(report) = Report::decode(&buf[..msg.bytes.min(buf.len())]) {
                self.on_report(report, sender);
            }
        }
        self.carry_out();
        true
    }

    fn on_report(&mut self, report: Report, sender: Option<u32>) {
        let now = Instant::now();
        match report {
            Report::Started { seq, ns_pid } => {
                if seq == 1 {
                    self.first_host = sender;
                }
                self.run.started(seq, ns_pid, sender)
            }
            Report::Execd { seq } => {
                if seq == 1 {
                    self.first = Some(Ok(()));
                }
                self.run.execd(seq, now)
            }
            Report::ExecFailed { seq, failure } => {
                if seq == 1 {
                    self.first = Some(Err(failure.clone()));
                }
                self.run
                    .exec_failed(seq, LaunchError::from(failure).to_string())
            }
            Report::Exited {
                seq,
                ns_pid,
                status,
            } => self.run.exited(seq, ns_pid, status, now),
            Report::Empty { seq } => self.run.empty(seq, now),
            Report::Main(found) => {
                let found = found.map(|ns| {
                    let host = self.level.and_then(|level| {
                        service_pids::host_pid(ns, level, self.init_host(), self.cgroup.as_ref())
                    });
                    (ns, host)
                });
                self.run.main_found(found, now)
            }
            Report::MainPending => self.run.main_pending(now),
            // Only at the start (spawn.rs takes them).
            Report::Ready | Report::SetupFailed(_) => {}
        }
    }

    fn init_host(&self) -> u32 {
        self.init.as_ref().map_or(0, |(pid, _)| *pid as u32)
    }

    /// Hands the notify state to the run, and the clock.
    pub(super) fn advance(&mut self) {
        let now = Instant::now();
        let main_pid = self.notify.main_pid.take().and_then(|host| {
            let ns = service_pids::sandbox_pid(host, self.level?)?;
            Some((host, ns))
        });
        let input = NotifyInput {
            ready: self.notify.ready,
            reloading: self.notify.reloading,
            main_pid,
            last_watchdog: self.notify.last_watchdog,
            watchdog_trigger: std::mem::take(&mut self.notify.watchdog_trigger),
        };
        self.run.notify(input, now);
        self.run.tick(now);
        self.carry_out();
    }

    /// Carries out every action the run queued.
    pub(super) fn carry_out(&mut self) {
        loop {
            let actions = self.run.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.act(action);
            }
        }
    }

    /// Signals the main process (by its pid in the sandbox, through init).
    pub(super) fn signal_main(&self, ns_pid: u32, signal: i32) {
        self.tell_init(Request::Signal { ns_pid, signal });
    }

    /// Starts the run and waits until its first command has exec'd (or failed), which is when
    /// `launch` hears of it. Returns the host pid to report: main's, else the first
    /// command's (0 if it never became a process). A first command that cannot exec fails
    /// the launch (as before commands) unless the run has more to do about it: a `-` prefix,
    /// or ExecStopPost= to run.
    pub(super) fn begin(&mut self, spec: &LaunchSpec) -> Result<u32, Failure> {
        self.run.start(Instant::now());
        self.carry_out();
        let deadline = Instant::now() + EXEC_TIMEOUT;
        loop {
            match self.first.take() {
                Some(Ok(())) => {
                    return Ok(self.run.main_pid().or(self.first_host).unwrap_or(0));
                }
                Some(Err(failure)) => {
                    let first = spec
                        .program
                        .exec_start_pre
                        .first()
                        .or(spec.program.exec_start.first());
                    if first.is_some_and(|c| c.ignore_failure)
                        || !spec.program.exec_stop_post.is_empty()
                    {
                        return Ok(self.first_host.unwrap_or(0));
                    }
                    return Err(failure);
                }
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(channel) = self.channel.as_ref().filter(|_| !left.is_zero()) else {
                return Err(Failure::setup(
                    "wait for the service to exec",
                    Errno::TIMEDOUT,
                ));
            };
            let mut pfd = [sys::pollfd(channel.as_fd(), libc::POLLIN)];
            let _ = sys::poll(&mut pfd, millis(left).max(1));
            if !self.read_channel() && self.first.is_none() {
                return Err(Failure::InitDied {
                    detail: "it closed its channel before the first command ran".into(),
                });
            }
        }
    }

    fn tell_init(&self, request: Request) {
        if let Some(channel) = &self.channel {
            // A full or closed channel means init is stuck or gone: its pidfd tells the rest,
            // and the run's deadlines end a stuck one.
            let _ = rustix::net::send(channel, &request.encode(), SendFlags::NOSIGNAL);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Exec {
                seq,
                list,
                index,
                main,
                main_ns,
            } => self.tell_init(Request::Exec {
                list,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                seq,
                main,
                main_ns,
            }),
            Action::Signal { ns_pid, signal } => self.tell_init(Request::Signal { ns_pid, signal }),
            Action::SignalAll { signal } => {
                self.signal_service(signal);
            }
            Action::SetMain { ns_pid } => self.tell_init(Request::SetMain { ns_pid }),
            Action::FindMain => self.tell_init(Request::FindMain),
            Action::EndSandbox => self.tell_init(Request::End),
            Action::KillSandbox => self.kill_service(),
        }
    }

    /// Signals every process of the service but init: through the cgroup when there is one
    /// (it does not rely on init), else through init (`kill(-1)` in the sandbox).
    pub(super) fn signal_service(&self, signal: i32) -> usize {
        let init = self.init_host();
        if let Some(Ok(pids)) = self.cgroup.as_ref().map(|c| c.pids()) {
            let mut reached = 0;
            for pid in pids.into_iter().filter(|p| *p != init) {
                if let Ok(pid) = libc::pid_t::try_from(pid)
                    && sys::kill(pid, signal).is_ok()
                {
                    reached += 1;
                }
            }
            return reached;
        }
        self.tell_init(Request::SignalAll { signal });
        0
    }
}
