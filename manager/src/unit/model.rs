//! What berthd runs: the service configuration built from a unit and its errors.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_protocol::sandbox::SandboxSpec;
use thiserror::Error;

use super::exec_command::{ExecCommand, ExecCommandError};
use super::syntax::UnitFileError;

/// `TimeoutStopSec=` when the unit does not set it (systemd's `DefaultTimeoutStopSec=`, which
/// berth lowers from 90 s: a portable service that ignores SIGTERM is killed sooner).
pub const DEFAULT_TIMEOUT_STOP: Duration = Duration::from_secs(10);

/// The time span meaning "no timeout" (`infinity`, or `0` for the stop timeout). Callers must
/// use checked arithmetic (`Instant::checked_add`) with it.
pub const TIMEOUT_INFINITY: Duration = Duration::MAX;

/// Errors that make a unit unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServiceConfigError {
    #[error("{unit}: no [Service] section")]
    MissingServiceSection { unit: String },
    #[error("{unit}: [Service] has no ExecStart=, so there is nothing to run")]
    MissingExecStart { unit: String },
    #[error(
        "{unit}: {count} ExecStart= commands, but only Type=oneshot services may have more \
         than one"
    )]
    MultipleExecStart { unit: String, count: usize },
    #[error("{unit}:{line}: Type={value} is not supported yet")]
    UnsupportedType {
        unit: String,
        line: usize,
        value: String,
    },
    #[error(
        "{unit}: Restart={restart} is not allowed for Type=oneshot services (a oneshot that \
         succeeded would run again at once); use on-failure, or Type=simple"
    )]
    OneshotRestart { unit: String, restart: &'static str },
    #[error("{unit}:{line}: unknown service type Type={value}")]
    UnknownType {
        unit: String,
        line: usize,
        value: String,
    },
    #[error("{unit}:{line}: invalid {key}=: {source}")]
    Exec {
        unit: String,
        line: usize,
        key: String,
        #[source]
        source: ExecCommandError,
    },
    #[error("{unit}:{line}: more than {max} {key}= commands")]
    TooManyCommands {
        unit: String,
        line: usize,
        key: String,
        max: usize,
    },
    #[error("{unit}:{line}: invalid Environment=: {source}")]
    Environment {
        unit: String,
        line: usize,
        #[source]
        source: UnitFileError,
    },
    #[error("{unit}:{line}: WorkingDirectory={value}: {reason}")]
    WorkingDirectory {
        unit: String,
        line: usize,
        value: String,
        reason: &'static str,
    },
    #[error("{unit}:{line}: {key}={value} is not {expected}")]
    InvalidValue {
        unit: String,
        line: usize,
        key: String,
        value: String,
        expected: &'static str,
    },
}

pub use berth_protocol::service_program::{KillMode, NotifyAccess, ServiceType};

/// `TimeoutStartSec=` when the unit does not set it (systemd's `DefaultTimeoutStartSec=`).
pub const DEFAULT_TIMEOUT_START: Duration = Duration::from_secs(90);
/// `RestartSec=` when the unit does not set it (systemd's 100 ms).
pub const DEFAULT_RESTART_SEC: Duration = Duration::from_millis(100);
/// systemd's `DefaultStartLimitIntervalSec=` and `DefaultStartLimitBurst=`.
pub const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_START_LIMIT_BURST: u32 = 5;

/// `Restart=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    #[default]
    No,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnWatchdog,
    OnAbort,
    Always,
}

impl RestartPolicy {
    /// The name `Restart=` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnSuccess => "on-success",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::OnAbnormal => "on-abnormal",
            RestartPolicy::OnWatchdog => "on-watchdog",
            RestartPolicy::OnAbort => "on-abort",
            RestartPolicy::Always => "always",
        }
    }
}

/// The kill policy (`KillMode=`, `KillSignal=`, `FinalKillSignal=`, `SendSIGKILL=`,
/// `WatchdogSignal=`); signals as numbers.
pub use berth_protocol::service_program::KillPolicy;

/// `[Unit]` dependencies, as unit names (`foo.service`), among attached units only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies {
    pub after: Vec<String>,
    pub before: Vec<String>,
    pub requires: Vec<String>,
    pub wants: Vec<String>,
    pub binds_to: Vec<String>,
}

/// One `LoadCredential=`/`LoadCredentialEncrypted=`/`SetCredential=`, as the sandbox spec
/// carries it.
pub use berth_protocol::sandbox::Credential;

/// What berthd needs to run one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The unit name, e.g. `hello.service`.
    pub name: String,
    /// `[Unit] Description=`.
    pub description: Option<String>,
    pub service_type: ServiceType,
    pub exec_start_pre: Vec<ExecCommand>,
    /// At least one; more only for [`ServiceType::Oneshot`].
    pub exec_start: Vec<ExecCommand>,
    pub exec_start_post: Vec<ExecCommand>,
    pub exec_reload: Vec<ExecCommand>,
    pub exec_stop: Vec<ExecCommand>,
    pub exec_stop_post: Vec<ExecCommand>,
    /// `PIDFile=`, an absolute path inside the sandbox.
    pub pid_file: Option<String>,
    pub remain_after_exit: bool,
    /// `Environment=`, later assignments overriding earlier ones.
    pub environment: BTreeMap<String, String>,
    /// `WorkingDirectory=`, an absolute path inside the sandbox.
    pub working_directory: Option<String>,
    /// `TimeoutStopSec=` (or `TimeoutSec=`); [`TIMEOUT_INFINITY`] for none.
    pub timeout_stop: Duration,
    /// `TimeoutStartSec=` (or `TimeoutSec=`); [`TIMEOUT_INFINITY`] for none.
    pub timeout_start: Duration,
    pub restart: RestartPolicy,
    /// `RestartSec=`.
    pub restart_sec: Duration,
    /// `StartLimitIntervalSec=` (`[Unit]`, or `[Service]` as systemd still accepts it); zero
    /// turns the rate limit off.
    pub start_limit_interval: Duration,
    /// `StartLimitBurst=`.
    pub start_limit_burst: u32,
    pub kill: KillPolicy,
    /// `NotifyAccess=`; `None` when unset (none). `Main` when unset or none for Type=notify or a
    /// WatchdogSec= service, as systemd makes it.
    pub notify_access: Option<NotifyAccess>,
    /// `WatchdogSec=`; zero is off.
    pub watchdog: Duration,
    pub dependencies: Dependencies,
    /// Who of the image's users the service runs as (profiles from level 3 on).
    pub identity: UnitIdentity,
    /// The sandbox: the profile's, tightened by the unit and its drop-ins; its identity is
    /// filled at each start.
    pub sandbox: SandboxSpec,
    /// One line per directive berth did not apply, as `unit:line: [Section] ...`.
    pub warnings: Vec<String>,
}

/// `User=`, `Group=`, `SupplementaryGroups=` and `DynamicUser=` as the unit gives them. Under a
/// profile from level 3 on (see [`crate::profile::uses_image_users`]) the names (or numbers)
/// are the image's users, resolved against its `/etc/passwd` and `/etc/group` at each start
/// ([`crate::image_users`]); below it berth ignores them, as it always did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitIdentity {
    /// `User=`; `None`: root of the service's own user namespace.
    pub user: Option<String>,
    /// `Group=`; `None`: the user's primary group.
    pub group: Option<String>,
    /// `SupplementaryGroups=`, in order, besides the groups that list the user.
    pub supplementary_groups: Vec<String>,
    /// `DynamicUser=yes`: a transient uid, whatever the profile's level.
    pub dynamic_user: bool,
}

/// Warnings kept per unit; a hostile unit can hold thousands of bogus directives, and every
/// warning goes into the `Attach` reply.
pub const MAX_WARNINGS_PER_UNIT: usize = 50;

/// Keeps the first `max` of `warnings` and says how many more `source` had.
pub fn cap_warnings(warnings: &mut Vec<String>, max: usize, source: &str) {
    if warnings.len() > max {
        let more = warnings.len() - max;
        warnings.truncate(max);
        warnings.push(format!("{source}: {more} more warnings not shown"));
    }
}
