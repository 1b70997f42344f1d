//! The supervisor's single-threaded `poll()` loop over the control socket, init's pidfd, the
//! output pipes and the clients.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use berth_protocol::log_line::Stream;
use berth_protocol::supervisor::{ExitStatus, Phase, SupervisorStatus};

use super::clients::Client;
use super::control_socket::ControlSocket;
use super::log_capture::{LineBuffer, Output};
use super::notify::{NotifySocket, NotifyState};
use super::spawn::{Sandbox, millis};
use crate::launch_spec::LaunchSpec;
use crate::sandbox::cgroup::ServiceCgroup;
use crate::sandbox::sys;

const READ_CHUNK: usize = 64 * 1024;
/// Chunks read from one output stream per loop turn, so one chatty stream cannot starve the
/// control socket.
const CHUNKS_PER_TURN: usize = 16;

#[derive(Clone, Copy)]
enum Slot {
    Listener,
    Init,
    Output(usize),
    Client(usize),
    Notify,
}

pub(super) struct Supervisor {
    pub(super) unit: String,
    pub(super) pid: u32,
    pub(super) control: ControlSocket,
    pub(super) log: OwnedFd,
    pub(super) outputs: [Output; 2],
    /// Init's pid and pidfd while it runs.
    pub(super) init: Option<(libc::pid_t, OwnedFd)>,
    pub(super) status_pipe: OwnedFd,
    pub(super) main_pid: u32,
    pub(super) started_usec: u64,
    pub(super) stop_requested: bool,
    pub(super) kill_at: Option<Instant>,
    pub(super) exit: Option<ExitStatus>,
    pub(super) clients: Vec<Client>,
    pub(super) released: bool,
    /// The service's cgroup while init lives.
    pub(super) cgroup: Option<ServiceCgroup>,
    /// `$NOTIFY_SOCKET`'s receiving end, while the service may use it.
    pub(super) notify_socket: Option<NotifySocket>,
    /// What the service said on it (notify.rs).
    pub(super) notify: NotifyState,
}

impl Supervisor {
    pub(super) fn new(
        spec: &LaunchSpec,
        control: ControlSocket,
        log: OwnedFd,
        sandbox: Sandbox,
    ) -> Self {
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
            notify_socket: sandbox
                .notify
                .map(|fd| NotifySocket::new(fd, &spec.program)),
            notify: NotifyState::default(),
        }
    }

    /// Ends the service at once and cleans up (used when `launch` is no longer listening).
    pub(super) fn abort(&mut self) {
        if let Some((pid, _)) = self.init.take() {
            let _ = sys::kill(pid, libc::SIGKILL);
            let _ = sys::waitpid(pid, 0);
        }
        self.control.remove();
    }

    pub(super) fn status(&self, error: Option<String>) -> SupervisorStatus {
        SupervisorStatus {
            unit: self.unit.clone(),
            supervisor_pid: self.pid,
            main_pid: Some(self.main_pid),
            running: self.init.is_some(),
            stop_requested: self.stop_requested,
            exit: self.exit,
            started_usec: self.started_usec,
            error,
            phase: match (self.init.is_some(), self.stop_requested) {
                (true, false) => Phase::Running,
                (true, true) => Phase::StopSigterm,
                (false, _) => Phase::Dead,
            },
            result: None,
            failure: None,
            status_text: self.notify.status_text.clone(),
            notify_errno: self.notify.errno,
            reloads: 0,
            last_reload_ok: None,
            accounting: None,
            log_dropped: 0,
        }
    }

    /// The main loop; returns the supervisor's exit code after a `Release`.
    pub(super) fn serve(&mut self) -> i32 {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let mut slots = Vec::with_capacity(4 + self.clients.len());
            let mut pfds = Vec::with_capacity(4 + self.clients.len());
            pfds.push(sys::pollfd(self.control.listener.as_fd(), libc::POLLIN));
            slots.push(Slot::Listener);
            // Before init: what the service said before its exit is taken in first.
            if let Some(socket) = &self.notify_socket {
                pfds.push(sys::pollfd(socket.fd().as_fd(), libc::POLLIN));
                slots.push(Slot::Notify);
            }
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
            let wake_at = match (self.kill_at, self.notify_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = match wake_at {
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
                    Slot::Notify => self.receive_notify(),
                }
            }
            self.notify_timer();
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
}
