//! berthd's lifecycle of one unit as a pure state machine: a state and an event give a new
//! state and the actions to carry out (lifecycle/engine.rs does). No processes, no clock, no
//! I/O: time comes in with each event, so every transition is tested as data (in the manner of
//! systemd's job engine tests).
//!
//! A run is the supervisor's (protocol/src/service_program.rs): berthd asks for one Spawn per
//! run and learns the run's course from the supervisor's snapshots. Across runs is this
//! machine's: Restart=, RestartSec=, the start rate limit, stop requests, reset-failed.

use std::collections::VecDeque;
use std::time::Duration;

use berth_protocol::supervisor::{ExitStatus, KillWhom, Phase, RunResult, SupervisorStatus};
use serde::{Deserialize, Serialize};

use crate::unit::{RestartPolicy, ServiceConfig, ServiceType};

/// Lifecycle state of a unit, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Exited,
    Failed,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Stopped => "stopped",
            UnitState::Starting => "starting",
            UnitState::Running => "running",
            UnitState::Stopping => "stopping",
            UnitState::Exited => "exited",
            UnitState::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            UnitState::Starting | UnitState::Running | UnitState::Stopping
        )
    }
}

/// How the unit's last run ended (systemd's `Result=`), or why it could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitResult {
    Run(RunResult),
    /// StartLimitBurst= starts within StartLimitIntervalSec=.
    StartLimitHit,
}

impl UnitResult {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitResult::Run(r) => r.as_str(),
            UnitResult::StartLimitHit => "start-limit-hit",
        }
    }

    fn is_success(self) -> bool {
        self == UnitResult::Run(RunResult::Success)
    }
}

/// What of the unit's configuration the machine decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub service_type: ServiceType,
    /// Up once Spawn answers (the first command has exec'd): simple and exec without
    /// ExecStartPre=/ExecStartPost=. The others are up when a snapshot says so.
    pub up_at_spawn: bool,
    pub restart: RestartPolicy,
    pub restart_sec: Duration,
    /// Zero turns the rate limit off.
    pub start_limit_interval: Duration,
    /// Zero turns the rate limit off.
    pub start_limit_burst: u32,
}

impl Policy {
    pub fn of(config: &ServiceConfig) -> Policy {
        Policy {
            service_type: config.service_type,
            up_at_spawn: matches!(config.service_type, ServiceType::Simple | ServiceType::Exec)
                && config.exec_start_pre.is_empty()
                && config.exec_start_post.is_empty(),
            restart: config.restart,
            restart_sec: config.restart_sec,
            start_limit_interval: config.start_limit_interval,
            start_limit_burst: config.start_limit_burst,
        }
    }
}

/// What happens to a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A client asked to start it.
    StartRequested,
    /// A client asked to stop it.
    StopRequested,
    /// A client asked for a signal to its processes.
    KillRequested { signal: i32, whom: KillWhom },
    /// A client asked for a reload.
    ReloadRequested,
    /// A client asked to forget a failure (and the rate limit's count).
    ResetFailed,
    /// The helper spawned the run's supervisor; the main pid as the Spawn reply gives it.
    Spawned { main_pid: Option<u32> },
    /// The run could not be spawned.
    SpawnFailed { reason: String },
    /// A line from the run's supervisor: a full snapshot of the run.
    Snapshot(&'a SupervisorStatus),
    /// The connection to the run's supervisor ended.
    SupervisorGone,
    /// The RestartSec= timer of generation `generation` expired.
    RestartDue { generation: u64 },
}

/// What the engine must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Allocate a uid and spawn the run (one Spawn with the whole program).
    Spawn,
    /// Ask the supervisor to stop the run (TimeoutStopSec= is the program's).
    SendStop,
    SendSignal {
        signal: i32,
        whom: KillWhom,
    },
    SendReload,
    /// The run is over and its end recorded: the supervisor may exit, its uid be released.
    Release,
    /// Deliver [`Event::RestartDue`] with this generation after `delay`.
    ScheduleRestart {
        delay: Duration,
        generation: u64,
    },
}

/// A request the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "start request repeated too quickly: {burst} starts within {interval:?} \
         (StartLimitBurst=, StartLimitIntervalSec=); `berth reset-failed` clears it"
    )]
    StartLimitHit { burst: u32, interval: Duration },
    #[error("the unit is not running")]
    NotRunning,
}

/// Where the current run is, as far as berthd is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RunLink {
    /// No run.
    #[default]
    None,
    /// Spawn asked for, not answered yet.
    Spawning,
    /// A supervisor carries the run out.
    Live,
    /// The run is over and recorded; the supervisor is being released.
    Ended,
}

/// What of a unit survives a berthd restart (`STATE/units/<unit>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub state: UnitState,
    #[serde(default)]
    pub result: Option<UnitResult>,
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub restarts: u64,
    pub since_usec: u64,
    #[serde(default)]
    pub main_pid: Option<u32>,
    /// A restart was pending (RestartSec=) when berthd went down.
    #[serde(default)]
    pub restart_pending: bool,
}

/// One unit's lifecycle.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: UnitState,
    main_pid: Option<u32>,
    exit: Option<ExitStatus>,
    result: Option<UnitResult>,
    failure: Option<String>,
    status_text: Option<String>,
    since_usec: u64,
    restarts: u64,
    stop_requested: bool,
    link: RunLink,
    /// Counts runs asked for; a start waits for the run it asked for.
    run: u64,
    /// The last run that ended, and whether it ended well (its failure otherwise).
    ended: Option<(u64, Result<(), String>)>,
    /// The generation of the pending restart timer, if one is pending.
    restart_pending: Option<u64>,
    generation: u64,
    /// When the recent starts happened, oldest first (for the rate limit).
    starts: VecDeque<u64>,
}

/// Signals that end a non-oneshot main process cleanly (systemd's "clean" signals).
const CLEAN_SIGNALS: [i32; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE];

impl Lifecycle {
    pub fn new(now_usec: u64) -> Lifecycle {
        Lifecycle {
            state: UnitState::Stopped,
            main_pid: None,
            exit: None,
            result: None,
            failure: None,
            status_text: None,
            since_usec: now_usec,
            restarts: 0,
            stop_requested: false,
            link: RunLink::None,
            run: 0,
            ended: None,
            restart_pending: None,
            generation: 0,
            starts: VecDeque::new(),
        }
    }

    pub fn state(&self) -> UnitState {
        self.state
    }
    /// The main pid while the unit is active.
    pub fn main_pid(&self) -> Option<u32> {
        self.main_pid.filter(|_| self.state.is_active())
    }
    /// The last run's exit, once it is no longer active.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.exit
    }
    pub fn result(&self) -> Option<UnitResult> {
        self.result
    }
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
    pub fn status_text(&self) -> Option<&str> {
        self.status_text.as_deref()
    }
    pub fn since_usec(&self) -> u64 {
        self.since_usec
    }
    /// Automatic restarts since the last manual start or reset-failed.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
    /// A supervisor is (or is being) linked: the run is not over for berthd.
    pub fn has_run(&self) -> bool {
        self.link != RunLink::None
    }
    pub fn run(&self) -> u64 {
        self.run
    }
    pub fn restart_pending(&self) -> bool {
        self.restart_pending.is_some()
    }

    /// Whether the start that asked for run `run` is over: `Some(Ok)` once the run is up
    /// (running, exited) or superseded, `Some(Err)` with the failure when it ended badly.
    pub fn start_outcome(&self, run: u64) -> Option<Result<(), String>> {
        if let Some((ended, outcome)) = &self.ended
            && *ended == run
        {
            return Some(outcome.clone());
        }
        if self.run != run {
            return Some(Ok(()));
        }
        if self.link == RunLink::Spawning {
            return None;
        }
        match self.state {
            // A run winding down on its own (a failure's stop sequence) is not up: its end says.
            UnitState::Starting => None,
            UnitState::Stopping if !self.stop_requested => None,
            _ => Some(Ok(())),
        }
    }

    /// What a berthd restart keeps.
    pub fn record(&self) -> Record {
        Record {
            state: self.state,
            result: self.result,
            exit: self.exit,
            failure: self.failure.clone(),
            restarts: self.restarts,
            since_usec: self.since_usec,
            main_pid: self.main_pid,
            restart_pending: self.restart_pending.is_some(),
        }
    }

    /// The lifecycle as a previous berthd left it. A run that was active is taken to be live:
    /// its supervisor's snapshot (or its absence: [`Event::SupervisorGone`]) says what became
    /// of it. A pending restart is scheduled again.
    pub fn restore(record: Record, policy: &Policy) -> (Lifecycle, Vec<Action>) {
        let mut l = Lifecycle::new(record.since_usec);
        l.state = record.state;
        l.result = record.result;
        l.exit = record.exit;
        l.failure = record.failure;
        l.restarts = record.restarts;
        l.main_pid = record.main_pid;
        let mut actions = Vec::new();
        if record.restart_pending {
            l.state = UnitState::Starting;
            actions.push(l.schedule_restart(policy));
        } else if record.state.is_active() {
            l.link = RunLink::Live;
        }
        (l, actions)
    }

    /// Applies `event` at `now_usec` (CLOCK_REALTIME, µs).
    pub fn handle(
        &mut self,
        policy: &Policy,
        event: Event<'_>,
        now_usec: u64,
    ) -> Result<Vec<Action>, Refusal> {
        match event {
            Event::StartRequested => self.start_requested(policy, now_usec),
            Event::StopRequested => Ok(self.stop_requested(now_usec)),
            Event::KillRequested { signal, whom } => match self.link {
                RunLink::Live => Ok(vec![Action::SendSignal { signal, whom }]),
                _ => Err(Refusal::NotRunning),
            },
            Event::ReloadRequested => match (self.link, self.state) {
                (RunLink::Live, UnitState::Running) => Ok(vec![Action::SendReload]),
                _ => Err(Refusal::NotRunning),
            },
            Event::ResetFailed => {
                self.starts.clear();
                self.restarts = 0;
                if self.state == UnitState::Failed {
                    self.result = None;
                    self.failure = None;
                    self.set(UnitState::Stopped, now_usec);
                }
                Ok(Vec::new())
            }
            Event::Spawned { main_pid } => Ok(self.spawned(policy, main_pid, now_usec)),
            Event::SpawnFailed { reason } => {
                if self.link != RunLink::Spawning {
                    return Ok(Vec::new());
                }
                self.link = RunLink::None;
                self.exit = None;
                Ok(self.run_over(
                    policy,
                    UnitResult::Run(RunResult::Resources),
                    Some(reason),
                    now_usec,
                ))
            }
            Event::Snapshot(status) => Ok(self.snapshot(policy, status, now_usec)),
            Event::SupervisorGone => Ok(self.supervisor_gone(policy, now_usec)),
            Event::RestartDue { generation } => {
                if self.restart_pending != Some(generation) {
                    return Ok(Vec::new());
                }
                self.restart_pending = None;
                self.restarts += 1;
                // A refused automatic restart leaves the unit failed; no client to tell.
                Ok(self.begin_start(policy, now_usec).unwrap_or_default())
            }
        }
    }

    fn set(&mut self, state: UnitState, now_usec: u64) {
        if self.state != state {
            self.state = state;
            self.since_usec = now_usec;
        }
    }

    fn start_requested(&mut self, policy: &Policy, now: u64) -> Result<Vec<Action>, Refusal> {
        if self.restart_pending.take().is_some() {
            // A start while waiting out RestartSec= starts at once (as systemd's does).
            return self.begin_start(policy, now);
        }
        // A run that ended may still be releasing its supervisor: the spawn waits for that.
        if matches!(self.link, RunLink::Spawning | RunLink::Live) || self.state.is_active() {
            return Ok(Vec::new());
        }
        self.restarts = 0;
        self.begin_start(policy, now)
    }

    fn begin_start(&mut self, policy: &Policy, now: u64) -> Result<Vec<Action>, Refusal> {
        if let Some(refusal) = self.rate_limited(policy, now) {
            self.result = Some(UnitResult::StartLimitHit);
            self.failure = Some(refusal.to_string());
            self.main_pid = None;
            self.set(UnitState::Failed, now);
            return Err(refusal);
        }
        self.starts.push_back(now);
        self.run += 1;
        self.link = RunLink::Spawning;
        self.exit = None;
        self.result = None;
        self.failure = None;
        self.status_text = None;
        self.main_pid = None;
        self.stop_requested = false;
        // Re-entering `starting` from a pending restart is a new start: since moves.
        self.state = UnitState::Starting;
        self.since_usec = now;
        Ok(vec![Action::Spawn])
    }

    /// Refuses a start beyond StartLimitBurst= within StartLimitIntervalSec=.
    fn rate_limited(&mut self, policy: &Policy, now: u64) -> Option<Refusal> {
        let interval = policy.start_limit_interval;
        let burst = policy.start_limit_burst;
        if interval.is_zero() || burst == 0 {
            return None;
        }
        let window = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        while self
            .starts
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= window)
        {
            self.starts.pop_front();
        }
        (self.starts.len() >= burst as usize).then_some(Refusal::StartLimitHit { burst, interval })
    }

    fn stop_requested(&mut self, now: u64) -> Vec<Action> {
        if self.restart_pending.take().is_some() {
            // The pending restart is cancelled; what the last run left is kept.
            if self.state == UnitState::Starting {
                let state = match self.result {
                    Some(r) if !r.is_success() => UnitState::Failed,
                    _ => UnitState::Stopped,
                };
                self.set(state, now);
            }
            return Vec::new();
        }
        match self.link {
            RunLink::None | RunLink::Ended => Vec::new(),
            RunLink::Spawning => {
                // The stop goes out once the spawn has answered.
                self.stop_requested = true;
                self.set(UnitState::Stopping, now);
                Vec::new()
            }
            RunLink::Live => {
                let first = !self.stop_requested;
                self.stop_requested = true;
                self.set(UnitState::Stopping, now);
                if first {
                    vec![Action::SendStop]
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn spawned(&mut self, policy: &Policy, main_pid: Option<u32>, now: u64) -> Vec<Action> {
        if self.link != RunLink::Spawning {
            return Vec::new();
        }
        self.link = RunLink::Live;
        self.main_pid = main_pid;
        if self.stop_requested {
            return vec![Action::SendStop];
        }
        // Simple and exec are up once the main process has exec'd (when Spawn answers, if
        // it is the first command).
        if policy.up_at_spawn {
            self.set(UnitState::Running, now);
        }
        Vec::new()
    }

    fn snapshot(&mut self, policy: &Policy, s: &SupervisorStatus, now: u64) -> Vec<Action> {
        if s.error.is_some() {
            return Vec::new();
        }
        match self.link {
            RunLink::Live => {}
            // Adoption of a run berthd did not know was live (its record was lost).
            RunLink::None if s.running => {
                self.link = RunLink::Live;
                self.run += 1;
            }
            // The answer to Release, a late line: the run's end is recorded already.
            _ => return Vec::new(),
        }
        self.main_pid = s.main_pid;
        if s.status_text.is_some() {
            self.status_text = s.status_text.clone();
        }
        if s.stop_requested {
            self.stop_requested = true;
        }
        if s.running && s.phase != Phase::Dead {
            let state = if self.stop_requested {
                UnitState::Stopping
            } else {
                match s.phase {
                    Phase::StartPre | Phase::StartPost => UnitState::Starting,
                    Phase::Start => match policy.service_type {
                        ServiceType::Simple | ServiceType::Exec => UnitState::Running,
                        _ => UnitState::Starting,
                    },
                    // A oneshot is up once its commands are done (dead, or exited with
                    // RemainAfterExit=); a supervisor that says running means still running.
                    Phase::Running if policy.service_type == ServiceType::Oneshot => {
                        UnitState::Starting
                    }
                    Phase::Running | Phase::Reload => UnitState::Running,
                    Phase::Exited => UnitState::Exited,
                    // Winding down on its own (after the main process ended or a failure):
                    // the unit stays as it was until the run's end says how it went.
                    Phase::Stop | Phase::StopSigterm | Phase::StopSigkill | Phase::StopPost => {
                        self.state
                    }
                    Phase::Dead => self.state,
                }
            };
            self.set(state, now);
            return Vec::new();
        }
        // The run is over.
        self.exit = s.exit;
        let stop_requested = self.stop_requested;
        let result = s
            .result
            .unwrap_or_else(|| result_of_exit(s.exit, policy.service_type, stop_requested));
        let failure = s
            .failure
            .clone()
            .or_else(|| failure_of_exit(s.exit, result));
        self.link = RunLink::Ended;
        let mut actions = vec![Action::Release];
        actions.extend(self.run_over(policy, UnitResult::Run(result), failure, now));
        actions
    }

    fn supervisor_gone(&mut self, policy: &Policy, now: u64) -> Vec<Action> {
        match self.link {
            RunLink::Ended => {
                self.link = RunLink::None;
                Vec::new()
            }
            RunLink::Live => {
                // It vanished without reporting the end of the run.
                self.link = RunLink::None;
                self.exit = None;
                self.run_over(
                    policy,
                    UnitResult::Run(RunResult::Resources),
                    Some("supervisor disappeared".into()),
                    now,
                )
            }
            RunLink::None | RunLink::Spawning => Vec::new(),
        }
    }

    /// Records the end of a run and decides on a restart. `Release` (when the supervisor
    /// is still there) comes before the restart, so the next run finds the socket free.
    fn run_over(
        &mut self,
        policy: &Policy,
        result: UnitResult,
        failure: Option<String>,
        now: u64,
    ) -> Vec<Action> {
        self.main_pid = None;
        self.result = Some(result);
        let ok = result.is_success();
        self.failure = if ok { None } else { failure };
        self.ended = Some((
            self.run,
            if ok || self.stop_requested {
                Ok(())
            } else {
                Err(self
                    .failure
                    .clone()
                    .unwrap_or_else(|| result.as_str().to_string()))
            },
        ));
        if self.stop_requested {
            // A stop asked for ends stopped, as berth has always shown it; `result` says when
            // it needed the final SIGKILL (timeout).
            self.set(UnitState::Stopped, now);
            return Vec::new();
        }
        self.set(
            if ok {
                UnitState::Exited
            } else {
                UnitState::Failed
            },
            now,
        );
        if !shall_restart(policy.restart, result) {
            return Vec::new();
        }
        // systemd shows a unit waiting out RestartSec= as activating (auto-restart).
        self.set(UnitState::Starting, now);
        vec![self.schedule_restart(policy)]
    }

    fn schedule_restart(&mut self, policy: &Policy) -> Action {
        self.generation += 1;
        self.restart_pending = Some(self.generation);
        Action::ScheduleRestart {
            delay: policy.restart_sec,
            generation: self.generation,
        }
    }
}

#[cfg(test)]
impl Lifecycle {
    /// A lifecycle at rest in `state` (no run), for the tests of other modules.
    pub(crate) fn at_rest(state: UnitState) -> Lifecycle {
        let mut l = Lifecycle::new(0);
        l.state = state;
        l
    }
}

/// The result of a run whose supervisor did not say (one that predates results).
/// A requested stop ends well whatever the exit (as berth has always shown it); a supervisor
/// that reports results says otherwise when the stop itself failed (a timeout).
fn result_of_exit(exit: Option<ExitStatus>, service_type: ServiceType, stop: bool) -> RunResult {
    if stop {
        return RunResult::Success;
    }
    match exit {
        Some(e) if e.success() => RunResult::Success,
        Some(ExitStatus {
            signal: Some(sig), ..
        }) => {
            if service_type != ServiceType::Oneshot && CLEAN_SIGNALS.contains(&sig) {
                RunResult::Success
            } else {
                RunResult::Signal
            }
        }
        Some(_) => RunResult::ExitCode,
        None => RunResult::Resources,
    }
}

fn failure_of_exit(exit: Option<ExitStatus>, result: RunResult) -> Option<String> {
    if result == RunResult::Success {
        return None;
    }
    Some(match exit.map(|e| (e.code, e.signal)) {
        Some((_, Some(sig))) => format!("main process killed by signal {sig}"),
        Some((Some(code), _)) => format!("main process exited with code {code}"),
        _ => format!("the run ended with result {}", result.as_str()),
    })
}

/// systemd's table (systemd.service(5), Restart=): whether a run that ended with `result`
/// (and not by request) is restarted.
pub fn shall_restart(policy: RestartPolicy, result: UnitResult) -> bool {
    let UnitResult::Run(result) = result else {
        return false;
    };
    use RunResult as R;
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnSuccess => result == R::Success,
        RestartPolicy::OnFailure => result != R::Success,
        RestartPolicy::OnAbnormal => !matches!(result, R::Success | R::ExitCode),
        RestartPolicy::OnWatchdog => result == R::Watchdog,
        RestartPolicy::OnAbort => matches!(result, R::Signal | R::CoreDump),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn policy(service_type: ServiceType, restart: RestartPolicy) -> Policy {
        Policy {
            service_type,
            up_at_spawn: matches!(service_type, ServiceType::Simple | ServiceType::Exec),
            restart,
            restart_sec: Duration::from_millis(100),
            start_limit_interval: Duration::from_secs(10),
            start_limit_burst: 5,
        }
    }

    fn simple(restart: RestartPolicy) -> Policy {
        policy(ServiceType::Simple, restart)
    }

    fn snapshot(phase: Phase, exit: Option<ExitStatus>) -> SupervisorStatus {
        SupervisorStatus {
            unit: "a.service".into(),
            supervisor_pid: 10,
            main_pid: (phase != Phase::Dead).then_some(42),
            running: phase != Phase::Dead,
            phase,
            result: None,
            failure: None,
            status_text: None,
            notify_errno: None,
            reloads: 0,
            last_reload_ok: None,
            accounting: None,
            log_dropped: 0,
            stop_requested: false,
            exit,
            started_usec: 0,
            error: None,
        }
    }

    fn code(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus {
            code: Some(code),
            signal: None,
        })
    }

    fn signal(signal: i32) -> Option<ExitStatus> {
        Some(ExitStatus {
            code: None,
            signal: Some(signal),
        })
    }

    /// A unit of `policy` started and running (Spawn answered).
    fn running(policy: &Policy) -> Lifecycle {
        let mut l = Lifecycle::new(0);
        l.handle(policy, Event::StartRequested, SEC).unwrap();
        l.handle(policy, Event::Spawned { main_pid: Some(42) }, SEC)
            .unwrap();
        l
    }

    /// The run ends with `exit`; the supervisor, released, closes the link.
    fn exits(
        l: &mut Lifecycle,
        policy: &Policy,
        exit: Option<ExitStatus>,
        now: u64,
    ) -> Vec<Action> {
        let mut actions = l
            .handle(policy, Event::Snapshot(&snapshot(Phase::Dead, exit)), now)
            .unwrap();
        actions.extend(l.handle(policy, Event::SupervisorGone, now).unwrap());
        actions
    }

    fn restart_generation(actions: &[Action]) -> Option<u64> {
        actions.iter().find_map(|a| match a {
            Action::ScheduleRestart { generation, .. } => Some(*generation),
            _ => None,
        })
    }

    #[test]
    fn a_start_spawns_once_and_a_simple_service_runs_when_spawn_answers() {
        let p = simple(RestartPolicy::No);
        let mut l = Lifecycle::new(0);

        let actions = l.handle(&p, Event::StartRequested, SEC).unwrap();
        let state_while_spawning = l.state();
        l.handle(&p, Event::Spawned { main_pid: Some(42) }, 2 * SEC)
            .unwrap();

        assert_eq!(actions, vec![Action::Spawn]);
        assert_eq!(state_while_spawning, UnitState::Starting);
        assert_eq!(l.state(), UnitState::Running);
        assert_eq!(l.main_pid(), Some(42));
        assert_eq!(l.since_usec(), 2 * SEC);
    }

    #[test]
    fn a_second_start_of_an_active_unit_does_nothing() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);

        let actions = l.handle(&p, Event::StartRequested, 2 * SEC).unwrap();

        assert!(actions.is_empty());
        assert_eq!(l.run(), 1);
    }

    #[test]
    fn a_notify_service_is_starting_until_its_supervisor_says_running() {
        let p = policy(ServiceType::Notify, RestartPolicy::No);
        let mut l = running(&p);
        let before_ready = l.state();

        l.handle(
            &p,
            Event::Snapshot(&snapshot(Phase::Running, None)),
            2 * SEC,
        )
        .unwrap();

        assert_eq!(before_ready, UnitState::Starting);
        assert_eq!(l.start_outcome(1), Some(Ok(())));
        assert_eq!(l.state(), UnitState::Running);
    }

    #[test]
    fn a_simple_service_with_start_pre_is_starting_until_its_supervisor_says_running() {
        let mut p = simple(RestartPolicy::No);
        p.up_at_spawn = false;
        let mut l = running(&p);
        let at_spawn = l.state();

        l.handle(
            &p,
            Event::Snapshot(&snapshot(Phase::Running, None)),
            2 * SEC,
        )
        .unwrap();

        assert_eq!(at_spawn, UnitState::Starting);
        assert_eq!(l.state(), UnitState::Running);
    }

    #[test]
    fn start_pre_and_start_post_are_starting_even_for_simple() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);

        l.handle(
            &p,
            Event::Snapshot(&snapshot(Phase::StartPost, None)),
            2 * SEC,
        )
        .unwrap();

        assert_eq!(l.state(), UnitState::Starting);
        assert_eq!(l.start_outcome(1), None);
    }

    #[test]
    fn a_oneshot_is_starting_until_its_commands_are_done() {
        let p = policy(ServiceType::Oneshot, RestartPolicy::No);
        let mut l = running(&p);

        l.handle(
            &p,
            Event::Snapshot(&snapshot(Phase::Running, None)),
            2 * SEC,
        )
        .unwrap();
        let while_running = l.state();
        exits(&mut l, &p, code(0), 3 * SEC);

        assert_eq!(while_running, UnitState::Starting);
        assert_eq!(l.state(), UnitState::Exited);
        assert_eq!(l.start_outcome(1), Some(Ok(())));
    }

    #[test]
    fn a_start_right_after_an_exit_starts_while_the_old_supervisor_goes() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);
        l.handle(
            &p,
            Event::Snapshot(&snapshot(Phase::Dead, code(0))),
            2 * SEC,
        )
        .unwrap();

        let start = l.handle(&p, Event::StartRequested, 2 * SEC).unwrap();
        let old_link_closes = l.handle(&p, Event::SupervisorGone, 2 * SEC).unwrap();

        assert_eq!(start, vec![Action::Spawn]);
        assert!(old_link_closes.is_empty());
        assert_eq!(l.state(), UnitState::Starting);
        assert!(l.has_run());
    }

    #[test]
    fn a_start_is_not_over_while_a_failed_run_winds_down() {
        let p = policy(ServiceType::Oneshot, RestartPolicy::No);
        let mut l = running(&p);
        let mut winding = snapshot(Phase::StopPost, None);
        winding.result = Some(RunResult::ExitCode);

        l.handle(&p, Event::Snapshot(&winding), 2 * SEC).unwrap();
        let while_winding = l.start_outcome(1);
        exits(&mut l, &p, code(2), 3 * SEC);

        assert_eq!(while_winding, None);
        assert!(matches!(l.start_outcome(1), Some(Err(_))));
    }

    #[test]
    fn a_clean_exit_without_restart_is_exited_and_releases_the_supervisor() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);

        let actions = exits(&mut l, &p, code(0), 2 * SEC);

        assert_eq!(actions, vec![Action::Release]);
        assert_eq!(l.state(), UnitState::Exited);
        assert_eq!(l.result(), Some(UnitResult::Run(RunResult::Success)));
        assert_eq!(l.main_pid(), None);
    }

    #[test]
    fn a_failed_exit_without_restart_is_failed_with_the_reason() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);

        exits(&mut l, &p, code(3), 2 * SEC);

        assert_eq!(l.state(), UnitState::Failed);
        assert_eq!(l.result(), Some(UnitResult::Run(RunResult::ExitCode)));
        assert_eq!(l.failure(), Some("main process exited with code 3"));
        assert_eq!(l.exit(), code(3));
        assert!(matches!(l.start_outcome(1), Some(Err(_))));
    }

    #[test]
    fn sigterm_from_outside_is_a_clean_end_for_simple_but_not_for_oneshot() {
        let simple_policy = simple(RestartPolicy::No);
        let oneshot = policy(ServiceType::Oneshot, RestartPolicy::No);
        let mut a = running(&simple_policy);
        let mut b = running(&oneshot);

        exits(&mut a, &simple_policy, signal(libc::SIGTERM), 2 * SEC);
        exits(&mut b, &oneshot, signal(libc::SIGTERM), 2 * SEC);

        assert_eq!(a.state(), UnitState::Exited);
        assert_eq!(b.state(), UnitState::Failed);
        assert_eq!(b.result(), Some(UnitResult::Run(RunResult::Signal)));
    }

    #[test]
    fn the_supervisors_result_wins_over_the_exit() {
        let p = policy(ServiceType::Notify, RestartPolicy::No);
        let mut l = running(&p);
        let mut s = snapshot(Phase::Dead, code(0));
        s.result = Some(RunResult::Protocol);
        s.failure = Some("exited before READY=1".into());

        l.handle(&p, Event::Snapshot(&s), 2 * SEC).unwrap();

        assert_eq!(l.state(), UnitState::Failed);
        assert_eq!(l.result(), Some(UnitResult::Run(RunResult::Protocol)));
        assert_eq!(l.failure(), Some("exited before READY=1"));
    }

    #[test]
    fn on_failure_schedules_a_restart_after_restart_sec_and_counts_it() {
        let p = simple(RestartPolicy::OnFailure);
        let mut l = running(&p);

        let actions = exits(&mut l, &p, code(1), 2 * SEC);
        let waiting = l.state();
        let generation = restart_generation(&actions).unwrap();
        let again = l
            .handle(&p, Event::RestartDue { generation }, 3 * SEC)
            .unwrap();

        assert_eq!(actions[0], Action::Release);
        assert_eq!(
            actions[1],
            Action::ScheduleRestart {
                delay: Duration::from_millis(100),
                generation
            }
        );
        assert_eq!(waiting, UnitState::Starting);
        assert_eq!(again, vec![Action::Spawn]);
        assert_eq!(l.restarts(), 1);
        assert_eq!(l.run(), 2);
    }

    #[test]
    fn the_restart_table_is_systemds() {
        use RestartPolicy as P;
        use RunResult as R;
        let results = [
            R::Success,
            R::ExitCode,
            R::Signal,
            R::CoreDump,
            R::Timeout,
            R::Watchdog,
            R::Protocol,
        ];
        // One row per policy: restart for each result above, in order.
        let table = [
            (P::No, [false, false, false, false, false, false, false]),
            (P::Always, [true, true, true, true, true, true, true]),
            (
                P::OnSuccess,
                [true, false, false, false, false, false, false],
            ),
            (P::OnFailure, [false, true, true, true, true, true, true]),
            (P::OnAbnormal, [false, false, true, true, true, true, true]),
            (
                P::OnWatchdog,
                [false, false, false, false, false, true, false],
            ),
            (P::OnAbort, [false, false, true, true, false, false, false]),
        ];

        for (policy, row) in table {
            for (result, expected) in results.iter().zip(row) {
                assert_eq!(
                    shall_restart(policy, UnitResult::Run(*result)),
                    expected,
                    "{policy:?} {result:?}"
                );
            }
            assert!(!shall_restart(policy, UnitResult::StartLimitHit));
        }
    }

    #[test]
    fn a_requested_stop_never_restarts() {
        let p = simple(RestartPolicy::Always);
        let mut l = running(&p);

        let stop = l.handle(&p, Event::StopRequested, 2 * SEC).unwrap();
        let stopping = l.state();
        let end = exits(&mut l, &p, signal(libc::SIGKILL), 3 * SEC);

        assert_eq!(stop, vec![Action::SendStop]);
        assert_eq!(stopping, UnitState::Stopping);
        assert_eq!(end, vec![Action::Release]);
        assert_eq!(l.state(), UnitState::Stopped);
    }

    #[test]
    fn a_stop_that_timed_out_is_stopped_with_result_timeout() {
        let p = simple(RestartPolicy::Always);
        let mut l = running(&p);
        l.handle(&p, Event::StopRequested, 2 * SEC).unwrap();
        let mut s = snapshot(Phase::Dead, signal(libc::SIGKILL));
        s.result = Some(RunResult::Timeout);

        let end = l.handle(&p, Event::Snapshot(&s), 3 * SEC).unwrap();

        assert_eq!(end, vec![Action::Release]);
        assert_eq!(l.state(), UnitState::Stopped);
        assert_eq!(l.result(), Some(UnitResult::Run(RunResult::Timeout)));
    }

    #[test]
    fn a_stop_while_waiting_to_restart_cancels_the_restart() {
        let p = simple(RestartPolicy::Always);
        let mut l = running(&p);
        let generation = restart_generation(&exits(&mut l, &p, code(1), 2 * SEC)).unwrap();

        let stop = l.handle(&p, Event::StopRequested, 2 * SEC).unwrap();
        let late_timer = l
            .handle(&p, Event::RestartDue { generation }, 3 * SEC)
            .unwrap();

        assert!(stop.is_empty());
        assert!(late_timer.is_empty());
        assert_eq!(l.state(), UnitState::Failed);
        assert!(!l.restart_pending());
    }

    #[test]
    fn a_start_while_waiting_to_restart_spawns_at_once_and_the_timer_is_void() {
        let p = simple(RestartPolicy::Always);
        let mut l = running(&p);
        let generation = restart_generation(&exits(&mut l, &p, code(1), 2 * SEC)).unwrap();

        let start = l.handle(&p, Event::StartRequested, 2 * SEC).unwrap();
        let late_timer = l
            .handle(&p, Event::RestartDue { generation }, 3 * SEC)
            .unwrap();

        assert_eq!(start, vec![Action::Spawn]);
        assert!(late_timer.is_empty());
        assert_eq!(l.run(), 2);
    }

    /// Crashes the running unit and lets its restart timer fire, `times` times.
    fn crash_loop(l: &mut Lifecycle, p: &Policy, times: u64, start: u64) -> Result<(), ()> {
        for i in 0..times {
            let now = start + i * SEC / 10;
            l.handle(p, Event::Spawned { main_pid: Some(42) }, now)
                .unwrap();
            let Some(generation) = restart_generation(&exits(l, p, code(1), now)) else {
                return Err(());
            };
            if l.handle(p, Event::RestartDue { generation }, now)
                .unwrap()
                .is_empty()
            {
                return Err(());
            }
        }
        Ok(())
    }

    #[test]
    fn restarts_beyond_the_burst_leave_the_unit_failed_with_start_limit_hit() {
        let mut p = simple(RestartPolicy::Always);
        p.start_limit_burst = 3;
        let mut l = Lifecycle::new(0);
        l.handle(&p, Event::StartRequested, SEC).unwrap();

        // Start 1 is the manual one; restarts 2 and 3 fit; the third restart is the 4th start.
        let ended = crash_loop(&mut l, &p, 3, SEC);

        assert_eq!(ended, Err(()));
        assert_eq!(l.state(), UnitState::Failed);
        assert_eq!(l.result(), Some(UnitResult::StartLimitHit));
        assert!(l.failure().unwrap().contains("repeated too quickly"));
        assert!(!l.has_run());
        assert_eq!(l.restarts(), 3);
    }

    #[test]
    fn a_manual_start_past_the_limit_is_refused_until_reset_failed() {
        let mut p = simple(RestartPolicy::No);
        p.start_limit_burst = 2;
        let mut l = Lifecycle::new(0);
        for t in 1..=2 {
            l.handle(&p, Event::StartRequested, t * SEC).unwrap();
            l.handle(&p, Event::Spawned { main_pid: None }, t * SEC)
                .unwrap();
            exits(&mut l, &p, code(1), t * SEC);
        }

        let refused = l.handle(&p, Event::StartRequested, 3 * SEC);
        let after_refusal = (l.state(), l.result());
        l.handle(&p, Event::ResetFailed, 4 * SEC).unwrap();
        let after_reset = l.state();
        let started = l.handle(&p, Event::StartRequested, 5 * SEC);

        assert!(matches!(
            refused,
            Err(Refusal::StartLimitHit { burst: 2, .. })
        ));
        assert_eq!(
            after_refusal,
            (UnitState::Failed, Some(UnitResult::StartLimitHit))
        );
        assert_eq!(after_reset, UnitState::Stopped);
        assert_eq!(started, Ok(vec![Action::Spawn]));
        assert_eq!(l.result(), None);
    }

    #[test]
    fn starts_older_than_the_interval_do_not_count() {
        let mut p = simple(RestartPolicy::No);
        p.start_limit_burst = 1;
        let mut l = Lifecycle::new(0);
        l.handle(&p, Event::StartRequested, SEC).unwrap();
        l.handle(&p, Event::Spawned { main_pid: None }, SEC)
            .unwrap();
        exits(&mut l, &p, code(0), SEC);

        let started = l.handle(&p, Event::StartRequested, 11 * SEC);

        assert_eq!(started, Ok(vec![Action::Spawn]));
    }

    #[test]
    fn a_zero_interval_turns_the_limit_off() {
        let mut p = simple(RestartPolicy::Always);
        p.start_limit_interval = Duration::ZERO;
        let mut l = Lifecycle::new(0);
        l.handle(&p, Event::StartRequested, SEC).unwrap();

        let looped = crash_loop(&mut l, &p, 50, SEC);

        assert_eq!(looped, Ok(()));
        assert_eq!(l.restarts(), 50);
    }

    #[test]
    fn reset_failed_clears_the_restart_count() {
        let p = simple(RestartPolicy::OnFailure);
        let mut l = Lifecycle::new(0);
        l.handle(&p, Event::StartRequested, SEC).unwrap();
        crash_loop(&mut l, &p, 2, SEC).unwrap();
        let counted = l.restarts();

        l.handle(&p, Event::ResetFailed, 2 * SEC).unwrap();

        assert_eq!(counted, 2);
        assert_eq!(l.restarts(), 0);
    }

    #[test]
    fn a_supervisor_gone_without_an_end_fails_the_unit_and_the_policy_applies() {
        let p = simple(RestartPolicy::OnFailure);
        let mut l = running(&p);

        let actions = l.handle(&p, Event::SupervisorGone, 2 * SEC).unwrap();

        assert!(restart_generation(&actions).is_some());
        assert_eq!(l.result(), Some(UnitResult::Run(RunResult::Resources)));
        assert_eq!(l.failure(), Some("supervisor disappeared"));
    }

    #[test]
    fn the_answer_to_release_and_the_link_closing_change_nothing() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);
        exits(&mut l, &p, code(0), 2 * SEC);

        let again = exits(&mut l, &p, code(0), 3 * SEC);
        let gone = l.handle(&p, Event::SupervisorGone, 3 * SEC).unwrap();

        assert!(again.is_empty());
        assert!(gone.is_empty());
        assert_eq!(l.state(), UnitState::Exited);
        assert!(!l.has_run());
        assert_eq!(l.since_usec(), 2 * SEC);
    }

    #[test]
    fn a_stop_while_spawning_goes_out_when_the_spawn_answers() {
        let p = simple(RestartPolicy::No);
        let mut l = Lifecycle::new(0);
        l.handle(&p, Event::StartRequested, SEC).unwrap();

        let stop = l.handle(&p, Event::StopRequested, SEC).unwrap();
        let spawned = l
            .handle(&p, Event::Spawned { main_pid: Some(42) }, SEC)
            .unwrap();

        assert!(stop.is_empty());
        assert_eq!(spawned, vec![Action::SendStop]);
        assert_eq!(l.state(), UnitState::Stopping);
    }

    #[test]
    fn a_stopping_unit_stays_stopping_whatever_phase_a_late_snapshot_shows() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);
        l.handle(&p, Event::StopRequested, 2 * SEC).unwrap();

        l.handle(
            &p,
            Event::Snapshot(&snapshot(Phase::Running, None)),
            2 * SEC,
        )
        .unwrap();

        assert_eq!(l.state(), UnitState::Stopping);
    }

    #[test]
    fn a_spawn_failure_fails_the_unit_with_the_reason() {
        let p = simple(RestartPolicy::No);
        let mut l = Lifecycle::new(0);
        l.handle(&p, Event::StartRequested, SEC).unwrap();

        let actions = l
            .handle(
                &p,
                Event::SpawnFailed {
                    reason: "no such file".into(),
                },
                SEC,
            )
            .unwrap();

        assert!(actions.is_empty());
        assert_eq!(l.state(), UnitState::Failed);
        assert_eq!(l.failure(), Some("no such file"));
        assert_eq!(l.start_outcome(1), Some(Err("no such file".into())));
    }

    #[test]
    fn kill_and_reload_need_a_live_run() {
        let p = simple(RestartPolicy::No);
        let mut idle = Lifecycle::new(0);
        let mut live = running(&p);
        let kill = Event::KillRequested {
            signal: 10,
            whom: KillWhom::All,
        };

        let idle_kill = idle.handle(&p, kill.clone(), SEC);
        let idle_reload = idle.handle(&p, Event::ReloadRequested, SEC);
        let live_kill = live.handle(&p, kill, SEC);
        let live_reload = live.handle(&p, Event::ReloadRequested, SEC);

        assert_eq!(idle_kill, Err(Refusal::NotRunning));
        assert_eq!(idle_reload, Err(Refusal::NotRunning));
        assert_eq!(
            live_kill,
            Ok(vec![Action::SendSignal {
                signal: 10,
                whom: KillWhom::All
            }])
        );
        assert_eq!(live_reload, Ok(vec![Action::SendReload]));
    }

    #[test]
    fn remain_after_exit_shows_exited_while_the_sandbox_lives_and_can_be_stopped() {
        let p = policy(ServiceType::Oneshot, RestartPolicy::No);
        let mut l = running(&p);
        l.handle(&p, Event::Snapshot(&snapshot(Phase::Exited, None)), 2 * SEC)
            .unwrap();
        let exited = l.state();

        let stop = l.handle(&p, Event::StopRequested, 3 * SEC).unwrap();

        assert_eq!(exited, UnitState::Exited);
        assert_eq!(l.start_outcome(1), Some(Ok(())));
        assert_eq!(stop, vec![Action::SendStop]);
    }

    #[test]
    fn a_record_survives_a_round_trip_through_json() {
        let p = simple(RestartPolicy::No);
        let mut l = running(&p);
        exits(&mut l, &p, code(7), 2 * SEC);

        let json = serde_json::to_string(&l.record()).unwrap();
        let (restored, actions) = Lifecycle::restore(serde_json::from_str(&json).unwrap(), &p);

        assert!(actions.is_empty());
        assert_eq!(restored.record(), l.record());
        assert_eq!(restored.state(), UnitState::Failed);
        assert_eq!(restored.exit(), code(7));
    }

    #[test]
    fn an_exit_while_berthd_was_down_is_acted_on_by_the_restart_policy() {
        let p = simple(RestartPolicy::OnFailure);
        let record = running(&p).record();
        let (mut l, restored) = Lifecycle::restore(record, &p);

        let actions = exits(&mut l, &p, code(1), 5 * SEC);

        assert!(restored.is_empty());
        assert_eq!(actions[0], Action::Release);
        assert!(restart_generation(&actions).is_some());
        assert_eq!(l.exit(), code(1));
    }

    #[test]
    fn a_live_supervisors_snapshot_wins_over_the_record() {
        let p = simple(RestartPolicy::No);
        let mut old = running(&p);
        exits(&mut old, &p, code(1), 2 * SEC);
        let (mut l, _) = Lifecycle::restore(old.record(), &p);

        l.handle(
            &p,
            Event::Snapshot(&snapshot(Phase::Running, None)),
            3 * SEC,
        )
        .unwrap();

        assert_eq!(l.state(), UnitState::Running);
        assert_eq!(l.main_pid(), Some(42));
        assert!(l.has_run());
    }

    #[test]
    fn a_pending_restart_is_scheduled_again_after_a_berthd_restart() {
        let p = simple(RestartPolicy::Always);
        let mut old = running(&p);
        exits(&mut old, &p, code(1), 2 * SEC);

        let (l, actions) = Lifecycle::restore(old.record(), &p);

        assert!(restart_generation(&actions).is_some());
        assert_eq!(l.state(), UnitState::Starting);
        assert!(!l.has_run());
    }

    #[test]
    fn an_active_record_whose_supervisor_is_gone_fails() {
        let p = simple(RestartPolicy::No);
        let (mut l, _) = Lifecycle::restore(running(&p).record(), &p);

        l.handle(&p, Event::SupervisorGone, 2 * SEC).unwrap();

        assert_eq!(l.state(), UnitState::Failed);
        assert_eq!(l.failure(), Some("supervisor disappeared"));
    }
}
