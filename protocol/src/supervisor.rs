//! The control channel between berthd and a per-service supervisor.
//!
//! A supervisor listens on `<unit>.sock` in the directory berthd gave at spawn time and accepts
//! connections only from the manager uid (and root). Each message is one JSON object on one
//! line. Every request gets a [`SupervisorStatus`] line back; when the service exits, the
//! supervisor also sends an unsolicited status line to every connected client. The supervisor
//! keeps the exit status until a client sends [`SupervisorRequest::Release`].

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
    /// Send a signal to the main process.
    Signal { signal: i32 },
    /// The exit status has been recorded: the supervisor may exit. Refused while running.
    Release,
    /// From now on, write the service's output to the log file whose descriptor comes with this
    /// request (SCM_RIGHTS on its first byte). berthd sends it after moving a full log aside.
    /// The file must be regular, owned by the manager and opened for appending.
    ReplaceLog,
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
    /// Host PID of the main process.
    pub main_pid: u32,
    /// The main process is still alive.
    pub running: bool,
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
