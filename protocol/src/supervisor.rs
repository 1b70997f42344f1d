//! The control channel between berthd and a per-service supervisor.
//!
//! A supervisor listens on `<unit>.sock` in the directory berthd gave at spawn time and accepts
//! connections only from the manager uid (and root). Each message is one JSON object on one
//! line. Every request gets a [`SupervisorStatus`] line back; when the service exits, the
//! supervisor also sends an unsolicited status line to every connected client. The supervisor
//! keeps the exit status until a client sends [`SupervisorRequest::Release`].
//!
//! Every line the supervisor sends is a complete snapshot of the run ([`SupervisorStatus`]):
//! one in answer to each request, and one unasked whenever the phase, the main pid, the
//! notify state (STATUS=, ERRNO=, reloads) or the exit changes. berthd never needs to see
//! every line: the last snapshot says everything, which is what a re-adopting berthd relies on
//! after a restart.

use serde::{Deserialize, Serialize};

/// A request from berthd to a supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum SupervisorRequest {
    /// Report the current status.
    Status,
    /// SIGTERM the main process (through the sandbox's init), SIGKILL the whole sandbox after
    /// `timeout_ms`. The reply is sent at once; the exit arrives as an unsolicited status.
    Stop { timeout_ms: u64 },
    /// Send a signal to the main process, or to every process of the service (`whom`).
    Signal {
        signal: i32,
        #[serde(default)]
        whom: KillWhom,
    },
    /// Run ExecReload= (phase `reload`, back to `running` when it has exited; `reloads` counts
    /// it). Refused when the program has no ExecReload= and the service is not Type=notify
    /// (whose RELOADING=1 ... READY=1 is the other way a reload is seen).
    Reload,
    /// The exit status has been recorded: the supervisor may exit. Refused while running.
    Release,
    /// From now on, write the service's output to the log file whose descriptor comes with this
    /// request (SCM_RIGHTS on its first byte). berthd sends it after moving a full log aside.
    /// The file must be regular, owned by the manager and opened for appending.
    ReplaceLog,
}

/// Whom a [`SupervisorRequest::Signal`] goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillWhom {
    /// The main process (through the sandbox's init).
    #[default]
    Main,
    /// Every process in the service's cgroup.
    All,
}

/// Where a run is (see `service_program` for the order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// ExecStartPre= commands.
    StartPre,
    /// ExecStart=, until the service is ready (per Type=).
    #[default]
    Start,
    /// ExecStartPost= commands.
    StartPost,
    /// Started and ready.
    Running,
    /// RemainAfterExit=: every process exited successfully; the sandbox is kept for ExecStop=.
    Exited,
    /// ExecReload=, or between RELOADING=1 and READY=1.
    Reload,
    /// ExecStop= commands.
    Stop,
    /// KillSignal= sent, waiting up to TimeoutStopSec=.
    StopSigterm,
    /// FinalKillSignal= sent to every process.
    StopSigkill,
    /// ExecStopPost= commands.
    StopPost,
    /// Over: `result` and `exit` say how; the sandbox is gone.
    Dead,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::StartPre => "start-pre",
            Phase::Start => "start",
            Phase::StartPost => "start-post",
            Phase::Running => "running",
            Phase::Exited => "exited",
            Phase::Reload => "reload",
            Phase::Stop => "stop",
            Phase::StopSigterm => "stop-sigterm",
            Phase::StopSigkill => "stop-sigkill",
            Phase::StopPost => "stop-post",
            Phase::Dead => "dead",
        }
    }
}

/// How a run ended, in systemd's words (`Result=` of a service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    Success,
    /// A command or the main process exited with a non-zero code.
    ExitCode,
    /// The main process was killed by a signal (not one of a requested stop).
    Signal,
    /// The main process dumped core.
    CoreDump,
    /// TimeoutStartSec= or TimeoutStopSec= passed.
    Timeout,
    /// WatchdogSec= passed without WATCHDOG=1.
    Watchdog,
    /// The service broke the protocol of its type: no PID file, a MAINPID= outside the
    /// service, ERRNO=, or it exited before READY=1.
    Protocol,
    /// The sandbox could not be set up.
    Resources,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::ExitCode => "exit-code",
            RunResult::Signal => "signal",
            RunResult::CoreDump => "core-dump",
            RunResult::Timeout => "timeout",
            RunResult::Watchdog => "watchdog",
            RunResult::Protocol => "protocol",
            RunResult::Resources => "resources",
        }
    }
}

/// The service's cgroup accounting, read by the supervisor (v2 or the v1 controllers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub cpu_usec: Option<u64>,
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    pub tasks: Option<u64>,
}

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when the process exited.
    pub code: Option<i32>,
    /// Signal number, when the process was killed by a signal.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// True for a clean `exit(0)`.
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }
}

/// The supervisor's view of its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub unit: String,
    pub supervisor_pid: u32,
    /// Host PID of the main process; none before it is known (forking), once it has exited,
    /// and while `exited` (RemainAfterExit=).
    pub main_pid: Option<u32>,
    /// The sandbox (its init) is still alive: the run is not over.
    pub running: bool,
    #[serde(default)]
    pub phase: Phase,
    /// Set with phase `dead`; also while stopping after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RunResult>,
    /// What failed, in words (which command, what the protocol broke), with `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The last STATUS= the service sent (at most 1 KiB, control characters dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// The last ERRNO= the service sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_errno: Option<i32>,
    /// Reloads finished in this run, and whether the last one succeeded.
    #[serde(default)]
    pub reloads: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_ok: Option<bool>,
    /// Read at the time of the snapshot; none without cgroup accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<Accounting>,
    /// Log lines dropped because the log could not keep up (the service never waits on it).
    #[serde(default)]
    pub log_dropped: u64,
    /// A stop was requested (so an exit by SIGTERM/SIGKILL is not a failure).
    pub stop_requested: bool,
    /// Set once the main process has exited.
    pub exit: Option<ExitStatus>,
    /// CLOCK_REALTIME of the exec, in microseconds since the epoch.
    pub started_usec: u64,
    /// An error message when the request was refused (e.g. `Release` while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
