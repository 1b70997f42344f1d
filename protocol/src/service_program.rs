//! The `ServiceProgram`: what one run of a service executes inside its sandbox, and how it is
//! ended (DESIGN.md §5 Execution, §6).
//!
//! berthd builds it from the unit (`Type=`, the `Exec*=` lists, `PIDFile=`, the timeouts, the
//! kill policy, `NotifyAccess=`, `WatchdogSec=`); it travels in `io.berth.Helper.Spawn`; the
//! supervisor carries out one run with it, autonomously, so that a run goes on (and times out,
//! and is killed) while berthd is down. Across runs (restarts, rate limits, dependencies)
//! berthd decides.
//!
//! One run, as the supervisor carries it out (systemd's service state machine, one sandbox):
//! `start-pre` (each ExecStartPre= in turn) → `start` (ExecStart=; ready per `Type=`) →
//! `start-post` → `running` → on stop: `stop` (ExecStop=, with `$MAINPID`) → `stop-sigterm`
//! (KillSignal= per KillMode=) → `stop-sigkill` (after TimeoutStopSec=, if SendSIGKILL=) →
//! `stop-post` (ExecStopPost=, also after a failure) → `dead`. Every command runs in the same
//! sandbox (namespaces, mounts, credentials, seccomp), forked by the sandbox's init.

use serde::{Deserialize, Serialize};
use zlink::introspect;

/// Most commands in each list of a [`ServiceProgram`].
pub const MAX_COMMANDS: usize = 32;
/// Longest `PIDFile=` path and most bytes of a PID file read.
pub const MAX_PID_FILE_BYTES: usize = 4095;

/// `Type=`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType,
)]
#[serde(rename_all = "snake_case")]
#[zlink(rename_all = "snake_case")]
pub enum ServiceType {
    // Started as soon as the main process is forked (systemd's default).
    #[default]
    Simple,
    // Started once `execve()` of the main process succeeded.
    Exec,
    // Started once the main process sends `READY=1` to `$NOTIFY_SOCKET`.
    Notify,
    // Runs each `ExecStart=` to completion, in order; started when the last one has exited.
    Oneshot,
    // Started when the ExecStart= process exits (having forked the daemon); the main process
    // is then the one `PIDFile=` names, else the only process left.
    Forking,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Simple => "simple",
            ServiceType::Exec => "exec",
            ServiceType::Notify => "notify",
            ServiceType::Oneshot => "oneshot",
            ServiceType::Forking => "forking",
        }
    }
}

/// One `Exec*=` command, its `$VAR`s already expanded by berthd except `$MAINPID`, which the
/// sandbox's init substitutes (and sets in the environment) when the command runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Command {
    // argv[0] is the absolute path of the executable inside the image.
    pub argv: Vec<String>,
    // The `-` prefix: a failure of this command does not fail the run.
    pub ignore_failure: bool,
}

/// `KillMode=`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType,
)]
#[serde(rename_all = "snake_case")]
#[zlink(rename_all = "snake_case")]
pub enum KillMode {
    // KillSignal= to every process of the service's cgroup (systemd's default).
    #[default]
    ControlGroup,
    // KillSignal= to the main process, the final SIGKILL to every process.
    Mixed,
    // Only the main process is signalled; the rest go when the sandbox ends.
    Process,
    // Nothing is signalled by berth (ExecStop= must stop it); the rest go when the sandbox
    // ends.
    None,
}

/// How a run is ended: `KillMode=`, `KillSignal=`, `FinalKillSignal=`, `SendSIGKILL=`,
/// `WatchdogSignal=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct KillPolicy {
    pub mode: KillMode,
    // KillSignal=, default SIGTERM.
    pub signal: i32,
    // FinalKillSignal=, default SIGKILL: sent after TimeoutStopSec= when send_sigkill.
    pub final_signal: i32,
    // SendSIGKILL=, default true.
    pub send_sigkill: bool,
    // WatchdogSignal=, default SIGABRT: sent when the watchdog expires.
    pub watchdog_signal: i32,
}

impl Default for KillPolicy {
    fn default() -> Self {
        KillPolicy {
            mode: KillMode::ControlGroup,
            signal: 15,
            final_signal: 9,
            send_sigkill: true,
            watchdog_signal: 6,
        }
    }
}

/// `NotifyAccess=`: whose `$NOTIFY_SOCKET` messages count.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType,
)]
#[serde(rename_all = "snake_case")]
#[zlink(rename_all = "snake_case")]
pub enum NotifyAccess {
    // No message counts (the default for every type but notify).
    #[default]
    None,
    // Only the main process's (the default for Type=notify).
    Main,
    // The main process's and those of the Exec*= commands.
    Exec,
    // Every process of the service's cgroup.
    All,
}

/// What one run executes and how it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct ServiceProgram {
    pub service_type: ServiceType,
    pub exec_start_pre: Vec<Command>,
    // One command; more only for oneshot, run one after the other.
    pub exec_start: Vec<Command>,
    pub exec_start_post: Vec<Command>,
    pub exec_reload: Vec<Command>,
    pub exec_stop: Vec<Command>,
    pub exec_stop_post: Vec<Command>,
    // PIDFile=, an absolute path inside the sandbox; read by the sandbox's init (forking).
    pub pid_file: Option<String>,
    // RemainAfterExit=: once every process has exited successfully the sandbox stays (phase
    // `exited`), so that ExecStop= runs on stop.
    pub remain_after_exit: bool,
    // TimeoutStartSec= in milliseconds, 0 for none: from the fork of the first command to
    // `running`.
    pub timeout_start_ms: u64,
    // TimeoutStopSec= in milliseconds, 0 for none: for ExecStop= and again for the kill.
    pub timeout_stop_ms: u64,
    pub kill: KillPolicy,
    pub notify_access: NotifyAccess,
    // WatchdogSec= in milliseconds, 0 for off: a running service that sends no WATCHDOG=1
    // for that long gets the watchdog signal and the run ends with result `watchdog`.
    pub watchdog_ms: u64,
}

impl ServiceProgram {
    /// A `Type=simple` program of one command, with systemd's defaults otherwise.
    pub fn simple(argv: Vec<String>) -> ServiceProgram {
        ServiceProgram {
            service_type: ServiceType::Simple,
            exec_start_pre: Vec::new(),
            exec_start: vec![Command {
                argv,
                ignore_failure: false,
            }],
            exec_start_post: Vec::new(),
            exec_reload: Vec::new(),
            exec_stop: Vec::new(),
            exec_stop_post: Vec::new(),
            pid_file: None,
            remain_after_exit: false,
            timeout_start_ms: 90_000,
            timeout_stop_ms: 10_000,
            kill: KillPolicy::default(),
            notify_access: NotifyAccess::None,
            watchdog_ms: 0,
        }
    }

    /// Every command of the program, in the order of the lists.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.exec_start_pre
            .iter()
            .chain(&self.exec_start)
            .chain(&self.exec_start_post)
            .chain(&self.exec_reload)
            .chain(&self.exec_stop)
            .chain(&self.exec_stop_post)
    }
}

/// Describes the program's types for the IDL.
pub fn describe(builder: crate::idl::InterfaceBuilder) -> crate::idl::InterfaceBuilder {
    builder
        .custom_type::<ServiceProgram>()
        .custom_type::<ServiceType>()
        .custom_type::<Command>()
        .custom_type::<KillPolicy>()
        .custom_type::<KillMode>()
        .custom_type::<NotifyAccess>()
}
