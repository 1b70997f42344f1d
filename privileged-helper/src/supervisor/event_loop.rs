//! The supervisor's single-threaded `poll()` loop over the control socket, init's pidfd and
//! channel, the output pipes and the clients; after each turn the run looks at the notify
//! state and the clock, and every client gets the snapshot if it changed.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use berth_protocol::log_line::Stream;
use berth_protocol::supervisor::SupervisorStatus;

use super::clients::Client;
use super::control_socket::ControlSocket;
use super::journal::Journal;
use super::log_capture::{LineBuffer, Output};
use super::log_sockets::{self, LogSockets};
use super::log_writer::LogWriter;
use super::notify::{NotifySocket, NotifyState};
use super::port_broker::PortBroker;
use super::run::Run;
use super::service_pids;
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
    Channel,
    Output(usize),
    Client(usize),
    Notify,
    Ports,
    LogSocket(log_sockets::Kind),
}

pub(super) struct Supervisor {
    pub(super) unit: String,
    pub(super) pid: u32,
    pub(super) control: ControlSocket,
    pub(super) log: LogWriter,
    /// The host's journal, when the output is forwarded there too.
    pub(super) journal: Option<Journal>,
    /// The drop count last told to the clients, and when.
    pub(super) drops_reported: (u64, Instant),
    pub(super) outputs: [Output; 2],
    /// Init's pid and pidfd while it runs.
    pub(super) init: Option<(libc::pid_t, OwnedFd)>,
    /// The channel to init while it is open.
    pub(super) channel: Option<OwnedFd>,
    /// Where the sandbox's pid is in `NSpid:` (none if /proc would not say).
    pub(super) level: Option<usize>,
    pub(super) started_usec: u64,
    /// The run of the program (phases, result, main process).
    pub(super) run: Run,
    /// The first command of the run: its host pid, and whether it exec'd (for `launch`).
    pub(super) first_host: Option<u32>,
    pub(super) first: Option<Result<(), crate::sandbox::Failure>>,
    pub(super) clients: Vec<Client>,
    pub(super) released: bool,
    /// The service's cgroup while init lives.
    pub(super) cgroup: Option<ServiceCgroup>,
    /// `$NOTIFY_SOCKET`'s receiving end, while the service may use it.
    pub(super) notify_socket: Option<NotifySocket>,
    /// What the service said on it (notify.rs).
    pub(super) notify: NotifyState,
    /// The broker of the granted privileged ports, while the service may bind.
    pub(super) ports: Option<PortBroker>,
    /// The broker told the log about a failure already (once per run is enough).
    pub(super) ports_noted: bool,
    /// `/dev/log` and the journal's socket, when the spec captures them (log_sockets.rs).
    pub(super) log_sockets: Option<LogSockets>,
}

impl Supervisor {
    pub(super) fn new(
        spec: &LaunchSpec,
        control: ControlSocket,
        log: OwnedFd,
        sandbox: Sandbox,
        journal: Option<Journal>,
    ) -> Self {
        let mut log = LogWriter::new(log);
        log.start();
        let mut supervisor = Supervisor {
            unit: spec.unit.clone(),
            pid: rustix::process::getpid().as_raw_pid() as u32,
            control,
            log,
            journal,
            drops_reported: (0, Instant::now()),
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
            channel: Some(sandbox.channel),
            level: service_pids::sandbox_level(sandbox.init_pid as u32),
            started_usec: sandbox.started_usec,
            run: Run::new(spec.program.clone()),
            first_host: None,
            first: None,
            clients: Vec::new(),
            released: false,
            cgroup: sandbox.cgroup,
            notify_socket: sandbox
                .notify
                .map(|fd| NotifySocket::new(fd, &spec.program)),
            notify: NotifyState::default(),
            ports: sandbox
                .bind_listener
                .map(|listener| PortBroker::new(listener, &spec.sandbox.privileged_ports)),
            ports_noted: false,
            log_sockets: sandbox.log_sockets,
        };
        supervisor.check_log_sockets();
        supervisor
    }

    /// Ends the service at once and cleans up (used when `launch` is no longer listening).
    pub(super) fn abort(&mut self) {
        self.kill_service();
        if let Some((pid, _)) = self.init.take() {
            let _ = sys::waitpid(pid, 0);
        }
        self.control.remove();
    }

    /// SIGKILL to the whole service without relying on init: every process of its cgroup
    /// (`cgroup.kill`, or pid by pid), and init, whose death ends the pid namespace.
    pub(super) fn kill_service(&self) {
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.kill_all();
        }
        if let Some((pid, _)) = &self.init {
            let _ = sys::kill(*pid, libc::SIGKILL);
        }
    }

    pub(super) fn status(&self, error: Option<String>) -> SupervisorStatus {
        let (reloads, last_reload_ok) = self.run.reloads();
        SupervisorStatus {
            unit: self.unit.clone(),
            supervisor_pid: self.pid,
            main_pid: self.run.main_pid(),
            running: self.init.is_some(),
            stop_requested: self.run.stop_requested(),
            exit: self.run.exit(),
            started_usec: self.started_usec,
            error,
            phase: self.run.phase(),
            result: self.run.result(),
            failure: self.run.failure().map(str::to_string),
            status_text: self.notify.status_text.clone(),
            notify_errno: self.notify.errno,
            reloads,
            last_reload_ok,
            accounting: None,
            log_dropped: self.log.dropped(),
        }
    }

    /// Sends the snapshot to every client that has not seen it yet.
    pub(super) fn broadcast(&mut self) {
        let status = self.status(None);
        for client in &mut self.clients {
            client.tell(&status);
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
            if let Some((_, pidfd)) = &self.init {
                pfds.push(sys::pollfd(pidfd.as_fd(), libc::POLLIN));
                slots.push(Slot::Init);
            }
            if let Some(channel) = &self.channel {
                pfds.push(sys::pollfd(channel.as_fd(), libc::POLLIN));
                slots.push(Slot::Channel);
            }
            // After init's channel: a command reports its pid there before it execs, so a
            // datagram it sent is read once the run knows whose it is.
            if let Some(socket) = &self.notify_socket {
                pfds.push(sys::pollfd(socket.fd().as_fd(), libc::POLLIN));
                slots.push(Slot::Notify);
            }
            // A bind waits for the answer: served before the output.
            if let Some(broker) = &self.ports {
                pfds.push(sys::pollfd(broker.fd(), libc::POLLIN));
                slots.push(Slot::Ports);
            }
            for kind in [log_sockets::Kind::Syslog, log_sockets::Kind::Journal] {
                if let Some(fd) = self.log_sockets.as_ref().and_then(|s| s.fd(kind)) {
                    pfds.push(sys::pollfd(fd.as_fd(), libc::POLLIN));
                    slots.push(Slot::LogSocket(kind));
                }
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
            let wake_at = match (self.run.next_deadline(), self.notify_deadline()) {
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
            for (slot, pfd) in slots.iter().zip(&pfds) {
                if pfd.revents == 0 {
                    continue;
                }
                match *slot {
                    Slot::Listener => self.accept(),
                    Slot::Init => self.reap_init(&mut chunk),
                    Slot::Channel => {
                        self.read_channel();
                    }
                    Slot::Output(i) => self.read_output(i, &mut chunk, CHUNKS_PER_TURN),
                    Slot::Client(i) => self.client_io(i),
                    Slot::Notify => self.receive_notify(),
                    Slot::Ports => self.serve_ports(pfd.revents),
                    Slot::LogSocket(kind) => self.receive_log(kind),
                }
            }
            self.notify_timer();
            self.advance();
            self.broadcast();
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
