//! One run of a [`ServiceProgram`] as a pure state type: phases, the command in flight, the
//! main process, timeouts and the result (systemd's service state machine, in one sandbox).
//!
//! [`Run`] takes events (what init reported, requests, the notify state, the clock) and
//! queues [`Action`]s (fork a command, signal, find the main process, end the sandbox) that
//! the supervisor carries out (`run_glue.rs`). It does no I/O, so every path through it is
//! tested here without processes.

use std::time::{Duration, Instant};

use berth_protocol::service_program::{KillMode, ServiceProgram, ServiceType};
use berth_protocol::supervisor::{ExitStatus, Phase, RunResult};

use super::exit::decode_wait;
use crate::sandbox::init::channel::CommandList;

/// What the run asks the supervisor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Fork `list[index]` as command `seq`; `main`: it is (becomes) the main process;
    /// `main_ns`: `$MAINPID` (0: none).
    Exec {
        seq: u32,
        list: CommandList,
        index: usize,
        main: bool,
        main_ns: u32,
    },
    /// Signal one process of the sandbox (its pid there).
    Signal { ns_pid: u32, signal: i32 },
    /// Signal every process of the service but init.
    SignalAll { signal: i32 },
    /// The process init forwards signals to (0: none).
    SetMain { ns_pid: u32 },
    /// Ask init for the main process of a forking service.
    FindMain,
    /// The run is over: init exits, the kernel ends what is left.
    EndSandbox,
    /// Init did not end in time: SIGKILL it (the kernel ends the whole pid namespace).
    KillSandbox,
}

/// A process the run follows: its pid in the sandbox, on the host, and its command's seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    seq: Option<u32>,
    ns: Option<u32>,
    host: Option<u32>,
}

/// The command whose exit moves the run on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Control {
    seq: u32,
    list: CommandList,
    index: usize,
    ns: Option<u32>,
    host: Option<u32>,
    exec_error: Option<String>,
}

/// What the notify socket said, as far as the run cares (level-triggered counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct NotifyInput {
    pub(super) ready: u64,
    pub(super) reloading: u64,
    /// An accepted MAINPID=: (host pid, pid in the sandbox).
    pub(super) main_pid: Option<(u32, u32)>,
    pub(super) last_watchdog: Option<Instant>,
    pub(super) watchdog_trigger: bool,
}

#[derive(Debug)]
pub(super) struct Run {
    program: ServiceProgram,
    phase: Phase,
    result: Option<RunResult>,
    failure: Option<String>,
    stop_requested: bool,
    /// TimeoutStopSec= for this run (a Stop request may give its own).
    stop_timeout: Option<Duration>,
    next_seq: u32,
    control: Option<Control>,
    main: Option<Proc>,
    /// Host pid of the last main process (its notify messages count after its exit).
    last_main_host: Option<u32>,
    main_exit: Option<ExitStatus>,
    /// The status of the last command that failed (the exit when no main ever exited).
    failed_exit: Option<ExitStatus>,
    /// Init reported an empty sandbox after this command seq.
    empty_after: Option<u32>,
    deadline: Option<Instant>,
    /// When to ask init again for a forking service's PID file.
    find_main_at: Option<Instant>,
    watchdog_from: Option<Instant>,
    ready_seen: u64,
    reloading_seen: u64,
    /// A reload the service announced with RELOADING=1 (ends with READY=1).
    notify_reload: bool,
    reloads: u64,
    last_reload_ok: Option<bool>,
    /// Signal of the stop-sigterm step (KillSignal=, or WatchdogSignal= after the watchdog).
    term_signal: i32,
    ending: bool,
    actions: Vec<Action>,
}

/// How often a forking service's PID file is looked for until it exists.
const PID_FILE_RETRY: Duration = Duration::from_millis(50);

fn ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// systemd's clean signals for a daemon: SIGHUP, SIGINT, SIGTERM, SIGPIPE.
fn clean_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGHUP | libc::SIGINT | libc::SIGTERM | libc::SIGPIPE
    )
}

/// Words for an exit status in a failure message.
fn describe(status: ExitStatus) -> String {
    match (status.code, status.signal) {
        (_, Some(sig)) => format!("was killed by signal {sig}"),
        (Some(code), None) => format!("exited with code {code}"),
        _ => "ended".into(),
    }
}

impl Run {
    pub(super) fn new(program: ServiceProgram) -> Run {
        let term_signal = program.kill.signal;
        Run {
            stop_timeout: ms(program.timeout_stop_ms),
            program,
            phase: Phase::StartPre,
            result: None,
            failure: None,
            stop_requested: false,
            next_seq: 1,
            control: None,
            main: None,
            last_main_host: None,
            main_exit: None,
            failed_exit: None,
            empty_after: None,
            deadline: None,
            find_main_at: None,
            watchdog_from: None,
            ready_seen: 0,
            reloading_seen: 0,
            notify_reload: false,
            reloads: 0,
            last_reload_ok: None,
            term_signal,
            ending: false,
            actions: Vec::new(),
        }
    }

    // ---- what the snapshot shows ----

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }
    pub(super) fn result(&self) -> Option<RunResult> {
        self.result
    }
    pub(super) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
    pub(super) fn stop_requested(&self) -> bool {
        self.stop_requested
    }
    pub(super) fn reloads(&self) -> (u64, Option<bool>) {
        (self.reloads, self.last_reload_ok)
    }
    /// Host pid of the main process while it runs.
    pub(super) fn main_pid(&self) -> Option<u32> {
        self.main.and_then(|m| m.host)
    }
    /// Host pid of the main process, or of the last one once it has exited.
    pub(super) fn last_main_pid(&self) -> Option<u32> {
        self.main_pid().or(self.last_main_host)
    }
    /// Host pids of the `Exec*=` command in flight (none, or one).
    pub(super) fn command_pids(&self) -> Vec<u32> {
        self.control.iter().filter_map(|c| c.host).collect()
    }
    /// Pid of the main process in the sandbox while it runs.
    pub(super) fn main_ns_pid(&self) -> Option<u32> {
        self.main.and_then(|m| m.ns)
    }
    /// How the run's main process ended (or the failed command, when there was no main).
    pub(super) fn exit(&self) -> Option<ExitStatus> {
        self.main_exit.or(if self.phase == Phase::Dead {
            Some(self.failed_exit.unwrap_or(ExitStatus {
                code: Some(0),
                signal: None,
            }))
        } else {
            None
        })
    }
    /// The actions queued since the last call, in order.
    pub(super) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// When [`Run::tick`] must run next.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [self.deadline, self.watchdog_deadline(), self.find_main_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn watchdog_deadline(&self) -> Option<Instant> {
        let ms = ms(self.program.watchdog_ms)?;
        if self.phase != Phase::Running {
            return None;
        }
        Some(self.watchdog_from? + ms)
    }

    // ---- commands ----

    fn spawn(&mut self, list: CommandList, index: usize, main: bool) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let main_ns = self.main_ns_pid().unwrap_or(0);
        self.actions.push(Action::Exec {
            seq,
            list,
            index,
            main,
            main_ns,
        });
        if main {
            self.main = Some(Proc {
                seq: Some(seq),
                ns: None,
                host: None,
            });
        }
        seq
    }

    /// Starts `list[index]` as the control command; false when the list is done.
    fn run_control(&mut self, list: CommandList, index: usize, main: bool) -> bool {
        if index >= list.of(&self.program).len() {
            self.control = None;
            return false;
        }
        let seq = self.spawn(list, index, main);
        self.control = Some(Control {
            seq,
            list,
            index,
            ns: None,
            host: None,
            exec_error: None,
        });
        true
    }

    fn last_seq(&self) -> u32 {
        self.next_seq - 1
    }

    fn fail(&mut self, result: RunResult, failure: String) {
        if self.result.is_none() {
            self.result = Some(result);
            self.failure = Some(failure);
        }
    }

    // ---- phases ----

    /// Begins the run.
    pub(super) fn start(&mut self, now: Instant) {
        self.deadline = ms(self.program.timeout_start_ms).map(|d| now + d);
        self.phase = Phase::StartPre;
        if !self.run_control(CommandList::StartPre, 0, false) {
            self.enter_start(now);
        }
    }

    fn enter_start(&mut self, now: Instant) {
        self.phase = Phase::Start;
        match self.program.service_type {
            ServiceType::Simple | ServiceType::Exec | ServiceType::Notify => {
                if self.program.exec_start.is_empty() {
                    self.fail(RunResult::Resources, "no ExecStart= command".into());
                    self.enter_stop_sigterm(now);
                    return;
                }
                self.spawn(CommandList::Start, 0, true);
            }
            ServiceType::Oneshot => {
                if !self.run_control(CommandList::Start, 0, true) {
                    self.enter_start_post(now);
                }
            }
            ServiceType::Forking => {
                if !self.run_control(CommandList::Start, 0, false) {
                    self.fail(RunResult::Resources, "no ExecStart= command".into());
                    self.enter_stop_sigterm(now);
                }
            }
        }
    }

    fn enter_start_post(&mut self, now: Instant) {
        self.phase = Phase::StartPost;
        if !self.run_control(CommandList::StartPost, 0, false) {
            self.enter_running(now);
        }
    }

    fn enter_running(&mut self, now: Instant) {
        self.deadline = None;
        if self.main.is_none() {
            // Nothing runs (oneshot done, or main gone during start-post).
            if self.program.remain_after_exit && self.result.is_none() {
                self.phase = Phase::Exited;
            } else {
                self.enter_stop(now);
            }
            return;
        }
        self.phase = Phase::Running;
        self.watchdog_from = Some(now);
    }

    fn enter_stop(&mut self, now: Instant) {
        self.phase = Phase::Stop;
        self.deadline = self.stop_timeout.map(|d| now + d);
        if !self.run_control(CommandList::Stop, 0, false) {
            self.enter_stop_sigterm(now);
        }
    }

    /// The kill targets of a step: every process, or main and the control command.
    fn signal_step(&mut self, signal: i32, all: bool) {
        if all {
            self.actions.push(Action::SignalAll { signal });
            if signal != libc::SIGKILL {
                self.actions.push(Action::SignalAll {
                    signal: libc::SIGCONT,
                });
            }
            return;
        }
        let targets = [self.main_ns_pid(), self.control.as_ref().and_then(|c| c.ns)];
        for ns_pid in targets.into_iter().flatten() {
            self.actions.push(Action::Signal { ns_pid, signal });
        }
    }

    fn enter_stop_sigterm(&mut self, now: Instant) {
        self.phase = Phase::StopSigterm;
        self.deadline = self.stop_timeout.map(|d| now + d);
        match self.program.kill.mode {
            KillMode::ControlGroup => self.signal_step(self.term_signal, true),
            KillMode::Mixed | KillMode::Process => self.signal_step(self.term_signal, false),
            KillMode::None => {}
        }
        self.check_stopped(now);
    }

    fn enter_stop_sigkill(&mut self, now: Instant) {
        self.phase = Phase::StopSigkill;
        self.deadline = self.stop_timeout.map(|d| now + d);
        let signal = self.program.kill.final_signal;
        match self.program.kill.mode {
            KillMode::ControlGroup | KillMode::Mixed => self.signal_step(signal, true),
            KillMode::Process => self.signal_step(signal, false),
            KillMode::None => {}
        }
        self.check_stopped(now);
    }

    /// Nothing the stop step waits for is left.
    fn stopped(&self) -> bool {
        let mine_gone = self.main.is_none() && self.control.is_none();
        match self.program.kill.mode {
            KillMode::ControlGroup | KillMode::Mixed => {
                mine_gone && self.empty_after == Some(self.last_seq())
            }
            KillMode::Process | KillMode::None => mine_gone,
        }
    }

    fn check_stopped(&mut self, now: Instant) {
        if matches!(self.phase, Phase::StopSigterm | Phase::StopSigkill) && self.stopped() {
            self.enter_stop_post(now);
        }
    }

    fn enter_stop_post(&mut self, now: Instant) {
        self.phase = Phase::StopPost;
        self.deadline = self.stop_timeout.map(|d| now + d);
        // Main is gone, or left to the end of the sandbox (SendSIGKILL=no, KillMode=none).
        if !self.run_control(CommandList::StopPost, 0, false) {
            self.finish(now);
        }
    }

    fn finish(&mut self, now: Instant) {
        self.ending = true;
        self.control = None;
        // Init exits at once; if it does not, it is killed.
        self.deadline = Some(now + Duration::from_secs(5));
        self.actions.push(Action::EndSandbox);
    }

    // ---- events ----

    /// Command `seq` is about to exec: its pids.
    pub(super) fn started(&mut self, seq: u32, ns_pid: u32, host_pid: Option<u32>) {
        if let Some(c) = self.control.as_mut().filter(|c| c.seq == seq) {
            c.ns = Some(ns_pid);
            c.host = host_pid;
        }
        if let Some(m) = self.main.as_mut().filter(|m| m.seq == Some(seq)) {
            m.ns = Some(ns_pid);
            m.host = host_pid;
            self.last_main_host = host_pid;
        }
    }

    /// Command `seq` exec'd: a simple or exec service is started.
    pub(super) fn execd(&mut self, seq: u32, now: Instant) {
        let is_main = self.main.is_some_and(|m| m.seq == Some(seq));
        if is_main
            && self.phase == Phase::Start
            && matches!(
                self.program.service_type,
                ServiceType::Simple | ServiceType::Exec
            )
        {
            self.enter_start_post(now);
        }
    }

    /// Command `seq` could not be exec'd; its exit (code 127) follows.
    pub(super) fn exec_failed(&mut self, seq: u32, message: String) {
        if let Some(c) = self.control.as_mut().filter(|c| c.seq == seq) {
            c.exec_error = Some(message);
            return;
        }
        if self.main.is_some_and(|m| m.seq == Some(seq)) {
            // Its exit (code 127) follows and ends the start.
            self.fail(
                RunResult::ExitCode,
                format!("ExecStart= command could not start: {message}"),
            );
        }
    }

    /// A child of init ended (`seq` 0: not a command).
    pub(super) fn exited(&mut self, seq: u32, ns_pid: u32, raw: i32, now: Instant) {
        let status = decode_wait(raw);
        let main_matches = self.main.is_some_and(|m| {
            (seq != 0 && m.seq == Some(seq)) || (m.ns == Some(ns_pid) && m.ns.is_some())
        });
        let control_matches = seq != 0 && self.control.as_ref().is_some_and(|c| c.seq == seq);
        if main_matches {
            self.main = None;
            self.main_exit = Some(status);
            // A oneshot's main is also the control command: its list moves on below.
            if !control_matches {
                self.main_failed(status, raw);
                self.after_main_exit(now);
            }
        }
        if control_matches && let Some(control) = self.control.take() {
            self.control_exited(control, status, raw, now);
        }
        self.check_stopped(now);
    }

    /// Sets the result for a main process that ended on its own.
    fn main_failed(&mut self, status: ExitStatus, raw: i32) {
        if self.is_stopping() {
            // During a stop, the signals of the stop are what was asked for.
            let asked = [
                self.term_signal,
                self.program.kill.signal,
                self.program.kill.final_signal,
                libc::SIGKILL,
            ];
            if status
                .signal
                .is_some_and(|s| asked.contains(&s) || clean_signal(s))
            {
                return;
            }
        }
        let result = match (status.code, status.signal) {
            (Some(0), None) => return,
            (_, Some(sig)) if clean_signal(sig) => return,
            (_, Some(_)) if libc::WCOREDUMP(raw) => RunResult::CoreDump,
            (_, Some(_)) => RunResult::Signal,
            _ => RunResult::ExitCode,
        };
        self.fail(result, format!("main process {}", describe(status)));
    }

    fn is_stopping(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stop | Phase::StopSigterm | Phase::StopSigkill | Phase::StopPost | Phase::Dead
        )
    }

    fn after_main_exit(&mut self, now: Instant) {
        match self.phase {
            Phase::Start => {
                if self.result.is_none() {
                    self.fail(
                        RunResult::Protocol,
                        format!(
                            "main process exited before the service was ready (Type={})",
                            self.program.service_type.as_str()
                        ),
                    );
                }
                self.enter_stop_sigterm(now);
            }
            Phase::Running | Phase::Reload => {
                self.notify_reload = false;
                if let Some(control) = self.control.take() {
                    // The reload command goes with the stop.
                    self.finish_reload(false);
                    drop(control);
                }
                if self.program.remain_after_exit && self.result.is_none() {
                    self.phase = Phase::Exited;
                    self.deadline = None;
                } else {
                    self.enter_stop(now);
                }
            }
            // Start-post goes on; running then sees main gone. Stop steps check below.
            _ => {}
        }
    }

    fn control_exited(&mut self, control: Control, status: ExitStatus, raw: i32, now: Instant) {
        // A command of an earlier phase, ended by a stop step: nothing follows from it.
        let current = match self.phase {
            Phase::StartPre => Some(CommandList::StartPre),
            Phase::Start => Some(CommandList::Start),
            Phase::StartPost => Some(CommandList::StartPost),
            Phase::Reload => Some(CommandList::Reload),
            Phase::Stop => Some(CommandList::Stop),
            Phase::StopPost => Some(CommandList::StopPost),
            _ => None,
        };
        if current != Some(control.list) {
            return;
        }
        let command = control.list.of(&self.program).get(control.index);
        let ignore = command.is_some_and(|c| c.ignore_failure);
        let ok = status.success();
        if !ok && !ignore {
            self.failed_exit = Some(status);
        }
        let name = command
            .and_then(|c| c.argv.first())
            .map_or("?", String::as_str);
        let failure = || match &control.exec_error {
            Some(e) => format!(
                "{} command {name} could not start: {e}",
                control.list.directive()
            ),
            None => format!(
                "{} command {name} {}",
                control.list.directive(),
                describe(status)
            ),
        };
        let failed = !ok && !ignore;
        let next = control.index + 1;
        match control.list {
            CommandList::StartPre => {
                if failed {
                    self.fail(RunResult::ExitCode, failure());
                    self.enter_stop_sigterm(now);
                } else if !self.run_control(CommandList::StartPre, next, false) {
                    self.enter_start(now);
                }
            }
            CommandList::Start => match self.program.service_type {
                ServiceType::Oneshot => {
                    if failed {
                        let result = if status.signal.is_some() && libc::WCOREDUMP(raw) {
                            RunResult::CoreDump
                        } else if status.signal.is_some() {
                            RunResult::Signal
                        } else {
                            RunResult::ExitCode
                        };
                        self.fail(result, failure());
                        self.enter_stop_sigterm(now);
                    } else if !self.run_control(CommandList::Start, next, true) {
                        self.enter_start_post(now);
                    }
                }
                ServiceType::Forking => {
                    if failed {
                        self.fail(RunResult::ExitCode, failure());
                        self.enter_stop_sigterm(now);
                    } else {
                        self.actions.push(Action::FindMain);
                    }
                }
                // Their ExecStart= is main, never a control command.
                _ => {}
            },
            CommandList::StartPost => {
                if failed {
                    self.fail(RunResult::ExitCode, failure());
                    self.enter_stop(now);
                } else if !self.run_control(CommandList::StartPost, next, false) {
                    self.enter_running(now);
                }
            }
            CommandList::Reload => {
                if failed {
                    self.finish_reload(false);
                } else if !self.run_control(CommandList::Reload, next, false) {
                    self.finish_reload(true);
                }
            }
            CommandList::Stop => {
                if failed {
                    self.fail(RunResult::ExitCode, failure());
                }
                if failed || !self.run_control(CommandList::Stop, next, false) {
                    self.enter_stop_sigterm(now);
                }
            }
            CommandList::StopPost => {
                if failed {
                    self.fail(RunResult::ExitCode, failure());
                }
                if !self.run_control(CommandList::StopPost, next, false) {
                    self.finish(now);
                }
            }
        }
    }

    fn finish_reload(&mut self, ok: bool) {
        self.reloads += 1;
        self.last_reload_ok = Some(ok);
        self.control = None;
        if self.phase == Phase::Reload {
            self.phase = Phase::Running;
            self.deadline = None;
        }
    }

    /// Init empty after command `seq`: nothing of the service runs.
    pub(super) fn empty(&mut self, seq: u32, now: Instant) {
        self.empty_after = Some(seq);
        self.check_stopped(now);
    }

    /// Init found no PID file yet: ask again shortly (TimeoutStartSec= bounds the wait).
    pub(super) fn main_pending(&mut self, now: Instant) {
        if self.phase == Phase::Start {
            self.find_main_at = Some(now + PID_FILE_RETRY);
        }
    }

    /// Init's answer to [`Action::FindMain`], with the host pid of the process found.
    pub(super) fn main_found(&mut self, found: Result<(u32, Option<u32>), String>, now: Instant) {
        if self.phase != Phase::Start {
            return;
        }
        match found {
            Ok((ns, host)) if host.is_some() => {
                self.last_main_host = host;
                self.main = Some(Proc {
                    seq: None,
                    ns: Some(ns),
                    host,
                });
                self.enter_start_post(now);
            }
            Ok((ns, _)) => {
                self.fail(
                    RunResult::Protocol,
                    format!("the main process (pid {ns} in the sandbox) is not in the service"),
                );
                self.enter_stop_sigterm(now);
            }
            Err(why) => {
                self.fail(RunResult::Protocol, why);
                self.enter_stop_sigterm(now);
            }
        }
    }

    /// The notify socket's state after a loop turn.
    pub(super) fn notify(&mut self, input: NotifyInput, now: Instant) {
        if let Some((host, ns)) = input.main_pid
            && matches!(
                self.phase,
                Phase::Start | Phase::StartPost | Phase::Running | Phase::Reload
            )
            && self.program.service_type != ServiceType::Oneshot
        {
            self.main = Some(Proc {
                seq: None,
                ns: Some(ns),
                host: Some(host),
            });
            self.last_main_host = Some(host);
            self.actions.push(Action::SetMain { ns_pid: ns });
        }
        if input.reloading > self.reloading_seen {
            self.reloading_seen = input.reloading;
            if self.phase == Phase::Running {
                self.phase = Phase::Reload;
                self.notify_reload = true;
            }
        }
        if input.ready > self.ready_seen {
            self.ready_seen = input.ready;
            if self.phase == Phase::Start
                && self.program.service_type == ServiceType::Notify
                && self.main.is_some()
            {
                self.enter_start_post(now);
            } else if self.phase == Phase::Reload && self.notify_reload {
                self.notify_reload = false;
                self.finish_reload(true);
            }
        }
        if let Some(at) = input.last_watchdog
            && self.watchdog_from.is_none_or(|from| at > from)
        {
            self.watchdog_from = Some(at);
        }
        if input.watchdog_trigger && self.phase == Phase::Running {
            self.watchdog_expired(now);
        }
    }

    fn watchdog_expired(&mut self, now: Instant) {
        self.fail(
            RunResult::Watchdog,
            format!(
                "watchdog timeout: no WATCHDOG=1 within {} ms",
                self.program.watchdog_ms
            ),
        );
        self.term_signal = self.program.kill.watchdog_signal;
        self.enter_stop_sigterm(now);
    }

    /// The clock: timeouts, the watchdog, and asking again for a PID file.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.find_main_at.is_some_and(|at| now >= at) {
            self.find_main_at = None;
            if self.phase == Phase::Start {
                self.actions.push(Action::FindMain);
            }
        }
        if self.watchdog_deadline().is_some_and(|at| now >= at) {
            self.watchdog_expired(now);
            return;
        }
        if self.deadline.is_none_or(|at| now < at) {
            return;
        }
        self.deadline = None;
        if self.ending {
            self.actions.push(Action::KillSandbox);
            return;
        }
        let timed_out = |what: &str, ms: u64| format!("{what} timed out after {ms} ms");
        let start_ms = self.program.timeout_start_ms;
        let stop_ms = self.stop_timeout.map_or(0, |d| d.as_millis() as u64);
        match self.phase {
            Phase::StartPre | Phase::Start => {
                self.fail(RunResult::Timeout, timed_out("start", start_ms));
                self.enter_stop_sigterm(now);
            }
            Phase::StartPost => {
                self.fail(RunResult::Timeout, timed_out("start", start_ms));
                self.enter_stop(now);
            }
            Phase::Reload => {
                if let Some(ns_pid) = self.control.as_ref().and_then(|c| c.ns) {
                    self.actions.push(Action::Signal {
                        ns_pid,
                        signal: libc::SIGKILL,
                    });
                }
                self.notify_reload = false;
                self.finish_reload(false);
            }
            Phase::Stop => {
                self.fail(RunResult::Timeout, timed_out("ExecStop=", stop_ms));
                self.enter_stop_sigterm(now);
            }
            Phase::StopSigterm => {
                self.fail(RunResult::Timeout, timed_out("stop", stop_ms));
                if self.program.kill.send_sigkill {
                    self.enter_stop_sigkill(now);
                } else {
                    self.enter_stop_post(now);
                }
            }
            Phase::StopSigkill => self.enter_stop_post(now),
            Phase::StopPost => {
                self.fail(RunResult::Timeout, timed_out("ExecStopPost=", stop_ms));
                self.finish(now);
            }
            Phase::Running | Phase::Exited | Phase::Dead => {}
        }
    }

    // ---- requests ----

    /// `Stop`: `timeout` overrides TimeoutStopSec= for this run (none: the program's).
    pub(super) fn request_stop(&mut self, timeout: Option<Duration>, now: Instant) {
        if let Some(t) = timeout {
            self.stop_timeout = Some(t);
        }
        if self.stop_requested || self.is_stopping() {
            self.stop_requested = true;
            // A shorter timeout asked for applies to the step in progress too.
            if let Some(t) = timeout
                && !self.ending
            {
                let at = now + t;
                self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
            }
            return;
        }
        self.stop_requested = true;
        match self.phase {
            Phase::StartPre | Phase::Start => self.enter_stop_sigterm(now),
            Phase::StartPost | Phase::Reload => {
                // The command in flight is left to the kill step.
                if self.phase == Phase::Reload {
                    self.notify_reload = false;
                    self.finish_reload(false);
                }
                self.control = None;
                self.enter_stop(now);
            }
            Phase::Running | Phase::Exited => self.enter_stop(now),
            _ => {}
        }
    }

    /// `Reload`: runs ExecReload=; an error text when it cannot.
    pub(super) fn request_reload(&mut self, now: Instant) -> Result<(), String> {
        if self.phase != Phase::Running {
            return Err(format!(
                "cannot reload in phase {} (only while running)",
                self.phase.as_str()
            ));
        }
        if self.program.exec_reload.is_empty() {
            return Err("the service has no ExecReload=".into());
        }
        self.phase = Phase::Reload;
        self.deadline = ms(self.program.timeout_start_ms).map(|d| now + d);
        self.run_control(CommandList::Reload, 0, false);
        Ok(())
    }

    /// The sandbox is gone (init exited or was killed): the run is over.
    pub(super) fn sandbox_gone(&mut self) {
        if self.main.take().is_some() && self.main_exit.is_none() {
            // Killed with the pid namespace.
            self.main_exit = Some(ExitStatus {
                code: None,
                signal: Some(libc::SIGKILL),
            });
            if !self.ending && !self.stop_requested {
                self.fail(RunResult::Signal, "the sandbox was killed".into());
            }
        }
        if !self.ending && self.result.is_none() && !self.stop_requested {
            self.fail(
                RunResult::Resources,
                "the sandbox's init ended before the run was over".into(),
            );
        }
        self.control = None;
        self.deadline = None;
        self.ending = false;
        self.phase = Phase::Dead;
        if self.result.is_none() {
            self.result = Some(RunResult::Success);
        }
    }
}

#[cfg(test)]
mod tests;
