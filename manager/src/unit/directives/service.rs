//! `[Service]` directives: what to run and how (the sandbox's are `sandbox`'s).

use std::time::Duration;

use berth_protocol::service_program::{MAX_COMMANDS, MAX_PID_FILE_BYTES};
use berth_protocol::signal_names::signal_number;

use super::super::exec_command;
use super::super::model::{
    DEFAULT_RESTART_SEC, DEFAULT_START_LIMIT_BURST, DEFAULT_START_LIMIT_INTERVAL,
    DEFAULT_TIMEOUT_START, DEFAULT_TIMEOUT_STOP, KillMode, KillPolicy, NotifyAccess, RestartPolicy,
    ServiceConfigError, ServiceType, TIMEOUT_INFINITY,
};
use super::super::syntax::{self, Assignment};
use super::super::values::{parse_boolean, parse_timespan};
use super::sandbox::{is_sandbox_directive, loosens_sandbox};
use super::{Builder, shorten};

impl Builder {
    pub(super) fn service_directive(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        match a.key.as_str() {
            "Type" => self.config.service_type = self.service_type(a)?,
            key @ ("ExecStartPre" | "ExecStart" | "ExecStartPost" | "ExecReload" | "ExecStop"
            | "ExecStopPost") => self.exec_command(key, a)?,
            "PIDFile" => self.pid_file(a)?,
            "RemainAfterExit" => self.config.remain_after_exit = self.boolean(a, false)?,
            "TimeoutStartSec" => {
                self.config.timeout_start = self.timeout(a, DEFAULT_TIMEOUT_START)?;
            }
            "TimeoutStopSec" => self.config.timeout_stop = self.timeout(a, DEFAULT_TIMEOUT_STOP)?,
            "TimeoutSec" => {
                // systemd: both at once; an empty value restores both defaults.
                self.config.timeout_start = self.timeout(a, DEFAULT_TIMEOUT_START)?;
                self.config.timeout_stop = self.timeout(a, DEFAULT_TIMEOUT_STOP)?;
            }
            "Restart" => self.config.restart = self.restart(a)?,
            "RestartSec" => {
                self.config.restart_sec = match a.value.as_str() {
                    "" => DEFAULT_RESTART_SEC,
                    value => {
                        parse_timespan(value).ok_or_else(|| self.invalid_value(a, "a time span"))?
                    }
                };
            }
            // systemd still reads the old [Service] spellings; they moved to [Unit].
            "StartLimitInterval" => self.start_limit_interval(a)?,
            "StartLimitBurst" => self.start_limit_burst(a)?,
            "StartLimitIntervalSec" => self.warn(
                a,
                "Service",
                "belongs in [Unit] (systemd ignores it in [Service] too), ignored",
            ),
            "KillMode" => self.kill_mode(a)?,
            "KillSignal" => {
                self.config.kill.signal = self.signal(a, KillPolicy::default().signal)?
            }
            "FinalKillSignal" => {
                self.config.kill.final_signal =
                    self.signal(a, KillPolicy::default().final_signal)?;
            }
            "WatchdogSignal" => {
                self.config.kill.watchdog_signal =
                    self.signal(a, KillPolicy::default().watchdog_signal)?;
            }
            "SendSIGKILL" => self.config.kill.send_sigkill = self.boolean(a, true)?,
            "NotifyAccess" => self.config.notify_access = self.notify_access(a)?,
            "WatchdogSec" => {
                self.config.watchdog = match a.value.as_str() {
                    "" => Duration::ZERO,
                    // systemd: infinity turns the watchdog off, as 0 does.
                    value => match parse_timespan(value) {
                        Some(TIMEOUT_INFINITY) => Duration::ZERO,
                        Some(span) => span,
                        None => return Err(self.invalid_value(a, "a time span")),
                    },
                };
            }
            "Environment" => self.environment(a)?,
            "WorkingDirectory" => self.working_directory(a)?,
            "User" | "Group" | "SupplementaryGroups" if self.image_users => {
                self.image_identity(a)?;
            }
            // The sandbox's table reads it too (what it implies); here only who runs.
            "DynamicUser" => match parse_boolean(&a.value) {
                Some(on) => self.config.identity.dynamic_user = on,
                None if a.value.is_empty() => self.config.identity.dynamic_user = false,
                None => {}
            },
            key if key.starts_with("X-") => {}
            // The sandbox's table reads these (see `sandbox_from`).
            key if is_sandbox_directive(key) => {}
            key if loosens_sandbox(key, &a.value) => {
                let what = format!(
                    "{} is ignored: berth's sandbox is always on and the profile decides it",
                    shorten(&a.value)
                );
                // `Key=value is ignored: ...`: the value matters here, so it is in the message.
                let warning = format!(
                    "{}:{}: [Service] {}={what}",
                    self.source,
                    a.line,
                    shorten(key)
                );
                self.config.warnings.push(warning);
            }
            key if KNOWN_SERVICE_DIRECTIVES.contains(&key) => self.warn_not_supported(a, "Service"),
            _ => self.warn_unknown(a, "Service"),
        }
        Ok(())
    }

    /// `User=`, `Group=`, `SupplementaryGroups=` of a service that runs as the image's own
    /// users: names (or numbers) of the image's databases, looked up at each start. An empty
    /// assignment resets; a value that is no name is an error (running as root instead of the
    /// user asked for would give the service more than it wants).
    fn image_identity(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        let value = self.specifiers(a, "Service", false);
        let names: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
        if names.iter().any(|n| !is_user_or_group(n)) {
            return Err(self.invalid_value(a, "a user or group name, or a number"));
        }
        let identity = &mut self.config.identity;
        match a.key.as_str() {
            "SupplementaryGroups" if names.is_empty() => identity.supplementary_groups.clear(),
            "SupplementaryGroups" => identity.supplementary_groups.extend(names),
            _ if names.len() > 1 => {
                return Err(self.invalid_value(a, "one user or group name, or a number"));
            }
            "User" => identity.user = names.into_iter().next(),
            _ => identity.group = names.into_iter().next(),
        }
        Ok(())
    }

    fn service_type(&self, a: &Assignment) -> Result<ServiceType, ServiceConfigError> {
        match a.value.as_str() {
            "" | "simple" => Ok(ServiceType::Simple),
            "exec" => Ok(ServiceType::Exec),
            "notify" => Ok(ServiceType::Notify),
            "oneshot" => Ok(ServiceType::Oneshot),
            "forking" => Ok(ServiceType::Forking),
            "notify-reload" | "dbus" | "idle" => Err(ServiceConfigError::UnsupportedType {
                unit: self.unit(),
                line: a.line,
                value: a.value.clone(),
            }),
            other => Err(ServiceConfigError::UnknownType {
                unit: self.unit(),
                line: a.line,
                value: shorten(other),
            }),
        }
    }

    /// One of the `Exec*=` lists: each assignment appends a command, an empty one empties it.
    fn exec_command(&mut self, key: &str, a: &Assignment) -> Result<(), ServiceConfigError> {
        if a.value.is_empty() {
            self.exec_list(key).clear();
            return Ok(());
        }
        let value = self.specifiers(a, "Service", true);
        let error = |source| ServiceConfigError::Exec {
            unit: self.unit(),
            line: a.line,
            key: key.to_owned(),
            source,
        };
        let command = exec_command::parse(&value).map_err(error)?;
        if command.argv.first() != Some(&command.path) {
            return Err(error(
                exec_command::ExecCommandError::SeparateArgv0Unsupported,
            ));
        }
        if let Some(prefix) = command.privileged_prefix {
            let what = format!(
                "prefix '{prefix}' asks for privileges, which berth never grants: the command \
                 runs in the service's sandbox like every other"
            );
            self.warn(a, "Service", &what);
        }
        let list = self.exec_list(key);
        if list.len() >= MAX_COMMANDS {
            return Err(ServiceConfigError::TooManyCommands {
                unit: self.unit(),
                line: a.line,
                key: key.to_owned(),
                max: MAX_COMMANDS,
            });
        }
        list.push(command);
        Ok(())
    }

    fn exec_list(&mut self, key: &str) -> &mut Vec<exec_command::ExecCommand> {
        let config = &mut self.config;
        match key {
            "ExecStartPre" => &mut config.exec_start_pre,
            "ExecStartPost" => &mut config.exec_start_post,
            "ExecReload" => &mut config.exec_reload,
            "ExecStop" => &mut config.exec_stop,
            "ExecStopPost" => &mut config.exec_stop_post,
            _ => &mut config.exec_start,
        }
    }

    /// `PIDFile=`: absolute, or relative to `/run` (systemd.service(5)); `/var/run/` is read as
    /// `/run/`, as systemd does.
    fn pid_file(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        if a.value.is_empty() {
            self.config.pid_file = None;
            return Ok(());
        }
        let value = self.specifiers(a, "Service", false);
        let path = if value.starts_with('/') {
            value
        } else {
            format!("/run/{value}")
        };
        let path = match path.strip_prefix("/var/run/") {
            Some(rest) => format!("/run/{rest}"),
            None => path,
        };
        let normalized = path
            .strip_prefix('/')
            .is_some_and(|p| p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        if !normalized || path.len() > MAX_PID_FILE_BYTES || path.contains('\0') {
            return Err(self.invalid_value(a, "a normalized path"));
        }
        self.config.pid_file = Some(path);
        Ok(())
    }

    fn boolean(&self, a: &Assignment, default: bool) -> Result<bool, ServiceConfigError> {
        if a.value.is_empty() {
            return Ok(default);
        }
        parse_boolean(&a.value).ok_or_else(|| self.invalid_value(a, "a boolean"))
    }

    /// `TimeoutStartSec=`/`TimeoutStopSec=`: 0 and `infinity` turn the timeout off; empty is
    /// `default`.
    fn timeout(&self, a: &Assignment, default: Duration) -> Result<Duration, ServiceConfigError> {
        if a.value.is_empty() {
            return Ok(default);
        }
        match parse_timespan(&a.value) {
            Some(Duration::ZERO) => Ok(TIMEOUT_INFINITY),
            Some(span) => Ok(span),
            None => Err(self.invalid_value(a, "a time span")),
        }
    }

    fn restart(&self, a: &Assignment) -> Result<RestartPolicy, ServiceConfigError> {
        Ok(match a.value.as_str() {
            "" | "no" => RestartPolicy::No,
            "on-success" => RestartPolicy::OnSuccess,
            "on-failure" => RestartPolicy::OnFailure,
            "on-abnormal" => RestartPolicy::OnAbnormal,
            "on-watchdog" => RestartPolicy::OnWatchdog,
            "on-abort" => RestartPolicy::OnAbort,
            "always" => RestartPolicy::Always,
            _ => {
                return Err(self.invalid_value(
                    a,
                    "one of no, on-success, on-failure, on-abnormal, on-watchdog, on-abort, \
                     always",
                ));
            }
        })
    }

    /// `StartLimitIntervalSec=` (and its old spelling): 0 turns the rate limit off.
    pub(super) fn start_limit_interval(
        &mut self,
        a: &Assignment,
    ) -> Result<(), ServiceConfigError> {
        self.config.start_limit_interval = match a.value.as_str() {
            "" => DEFAULT_START_LIMIT_INTERVAL,
            value => parse_timespan(value).ok_or_else(|| self.invalid_value(a, "a time span"))?,
        };
        Ok(())
    }

    pub(super) fn start_limit_burst(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        self.config.start_limit_burst = match a.value.as_str() {
            "" => DEFAULT_START_LIMIT_BURST,
            value => value
                .parse::<u32>()
                .map_err(|_| self.invalid_value(a, "an unsigned number"))?,
        };
        Ok(())
    }

    fn kill_mode(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        self.config.kill.mode = match a.value.as_str() {
            "" | "control-group" => KillMode::ControlGroup,
            "mixed" => KillMode::Mixed,
            "process" => KillMode::Process,
            "none" => {
                // systemd warns about it too: berth cannot stop what it does not signal, so
                // the rest of the service goes only when its sandbox ends.
                self.warn(
                    a,
                    "Service",
                    "none is unsafe: processes of the service are not signalled on stop and \
                     are killed only when its sandbox ends",
                );
                KillMode::None
            }
            _ => {
                return Err(self.invalid_value(a, "one of control-group, mixed, process, none"));
            }
        };
        Ok(())
    }

    fn signal(&self, a: &Assignment, default: i32) -> Result<i32, ServiceConfigError> {
        if a.value.is_empty() {
            return Ok(default);
        }
        signal_number(&a.value)
            .ok_or_else(|| self.invalid_value(a, "a signal name (SIGTERM, TERM) or number"))
    }

    fn notify_access(&self, a: &Assignment) -> Result<Option<NotifyAccess>, ServiceConfigError> {
        Ok(Some(match a.value.as_str() {
            "" => return Ok(None),
            "none" => NotifyAccess::None,
            "main" => NotifyAccess::Main,
            "exec" => NotifyAccess::Exec,
            "all" => NotifyAccess::All,
            _ => return Err(self.invalid_value(a, "one of none, main, exec, all")),
        }))
    }

    fn environment(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        if a.value.is_empty() {
            self.config.environment.clear();
            return Ok(());
        }
        let value = self.specifiers(a, "Service", true);
        let words =
            syntax::unquote_words(&value).map_err(|source| ServiceConfigError::Environment {
                unit: self.unit(),
                line: a.line,
                source,
            })?;
        for word in words {
            match word.split_once('=') {
                Some((key, val)) if exec_command::is_valid_env_name(key) => {
                    self.config
                        .environment
                        .insert(key.to_owned(), val.to_owned());
                }
                // systemd logs and skips invalid assignments; so does berth, loudly.
                _ => {
                    let what = format!(
                        "assignment {:?} is not a valid NAME=VALUE, ignored",
                        shorten(&word)
                    );
                    self.warn(a, "Service", &what);
                }
            }
        }
        Ok(())
    }

    fn working_directory(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        if a.value.is_empty() {
            self.config.working_directory = None;
            return Ok(());
        }
        let value = self.specifiers(a, "Service", false);
        let path = match value.strip_prefix('-') {
            Some(path) => {
                self.warn(
                    a,
                    "Service",
                    "prefix '-' is not supported yet: a missing directory fails the start",
                );
                path
            }
            None => value.as_str(),
        };
        let error = |reason| ServiceConfigError::WorkingDirectory {
            unit: self.unit(),
            line: a.line,
            value: shorten(&a.value),
            reason,
        };
        if path == "~" {
            return Err(error("the home directory (~) is not supported yet"));
        }
        if !path.starts_with('/') {
            return Err(error("the path must be absolute"));
        }
        self.config.working_directory = Some(path.to_owned());
        Ok(())
    }
}

/// Whether `name` can name a user or group of an image: 1 to 31 characters of
/// `[A-Za-z0-9_.-]` not starting with `-` (the names useradd makes), or a number.
fn is_user_or_group(name: &str) -> bool {
    (1..=31).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `[Service]` directives systemd knows (systemd.service, .exec, .kill, .resource-control)
/// and berth does not implement yet. The sandbox's table takes its directives before this
/// list is consulted, and `loosens_sandbox` the loosening forms of the others.
const KNOWN_SERVICE_DIRECTIVES: &[&str] = &[
    // systemd.service(5)
    "ExitType",
    "GuessMainPID",
    "BusName",
    "ExecCondition",
    "RestartSteps",
    "RestartMaxDelaySec",
    "TimeoutAbortSec",
    "TimeoutStartFailureMode",
    "TimeoutStopFailureMode",
    "RuntimeMaxSec",
    "RuntimeRandomizedExtraSec",
    "RestartMode",
    "SuccessExitStatus",
    "RestartPreventExitStatus",
    "RestartForceExitStatus",
    "RootDirectoryStartOnly",
    "PermissionsStartOnly",
    "NonBlocking",
    "Sockets",
    "FileDescriptorStoreMax",
    "FileDescriptorStorePreserve",
    "USBFunctionDescriptors",
    "USBFunctionStrings",
    "OOMPolicy",
    "OpenFile",
    "ReloadSignal",
    "StartLimitAction",
    "FailureAction",
    "RebootArgument",
    // systemd.exec(5)
    "ExecSearchPath",
    "RootDirectory",
    "RootImage",
    "RootImageOptions",
    "RootEphemeral",
    "RootHash",
    "RootHashSignature",
    "RootVerity",
    "RootImagePolicy",
    "MountImagePolicy",
    "ExtensionImagePolicy",
    "MountAPIVFS",
    "BindLogSockets",
    "ProtectProc",
    "ProcSubset",
    "BindPaths",
    "BindReadOnlyPaths",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "User",
    "Group",
    "DynamicUser",
    "SupplementaryGroups",
    "SetLoginEnvironment",
    "PAMName",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "NoNewPrivileges",
    "SecureBits",
    "SELinuxContext",
    "AppArmorProfile",
    "SmackProcessLabel",
    "LimitCPU",
    "LimitFSIZE",
    "LimitDATA",
    "LimitSTACK",
    "LimitCORE",
    "LimitRSS",
    "LimitNOFILE",
    "LimitAS",
    "LimitNPROC",
    "LimitMEMLOCK",
    "LimitLOCKS",
    "LimitSIGPENDING",
    "LimitMSGQUEUE",
    "LimitNICE",
    "LimitRTPRIO",
    "LimitRTTIME",
    "UMask",
    "CoredumpFilter",
    "KeyringMode",
    "OOMScoreAdjust",
    "TimerSlackNSec",
    "Personality",
    "IgnoreSIGPIPE",
    "Nice",
    "CPUSchedulingPolicy",
    "CPUSchedulingPriority",
    "CPUSchedulingResetOnFork",
    "CPUAffinity",
    "NUMAPolicy",
    "NUMAMask",
    "IOSchedulingClass",
    "IOSchedulingPriority",
    "ProtectSystem",
    "ProtectHome",
    "RuntimeDirectory",
    "StateDirectory",
    "CacheDirectory",
    "LogsDirectory",
    "ConfigurationDirectory",
    "RuntimeDirectoryMode",
    "StateDirectoryMode",
    "CacheDirectoryMode",
    "LogsDirectoryMode",
    "ConfigurationDirectoryMode",
    "RuntimeDirectoryPreserve",
    "TimeoutCleanSec",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateNetwork",
    "NetworkNamespacePath",
    "PrivateIPC",
    "IPCNamespacePath",
    "MemoryKSM",
    "PrivatePIDs",
    "PrivateUsers",
    "ProtectHostname",
    "ProtectClock",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "RestrictAddressFamilies",
    "RestrictFileSystems",
    "RestrictNamespaces",
    "DelegateNamespaces",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "RemoveIPC",
    "PrivateMounts",
    "MountFlags",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "SystemCallArchitectures",
    "SystemCallLog",
    "EnvironmentFile",
    "PassEnvironment",
    "UnsetEnvironment",
    "StandardInput",
    "StandardOutput",
    "StandardError",
    "StandardInputText",
    "StandardInputData",
    "LogLevelMax",
    "LogExtraFields",
    "LogRateLimitIntervalSec",
    "LogRateLimitBurst",
    "LogFilterPatterns",
    "LogNamespace",
    "SyslogIdentifier",
    "SyslogFacility",
    "SyslogLevel",
    "SyslogLevelPrefix",
    "TTYPath",
    "TTYReset",
    "TTYVHangup",
    "TTYRows",
    "TTYColumns",
    "TTYVTDisallocate",
    "LoadCredential",
    "LoadCredentialEncrypted",
    "ImportCredential",
    "SetCredential",
    "SetCredentialEncrypted",
    "UtmpIdentifier",
    "UtmpMode",
    // systemd.kill(5)
    "RestartKillSignal",
    "SendSIGHUP",
    // systemd.resource-control(5)
    "CPUAccounting",
    "CPUWeight",
    "StartupCPUWeight",
    "CPUQuota",
    "CPUQuotaPeriodSec",
    "AllowedCPUs",
    "StartupAllowedCPUs",
    "MemoryAccounting",
    "MemoryMin",
    "MemoryLow",
    "StartupMemoryLow",
    "DefaultStartupMemoryLow",
    "MemoryHigh",
    "StartupMemoryHigh",
    "MemoryMax",
    "StartupMemoryMax",
    "MemorySwapMax",
    "StartupMemorySwapMax",
    "MemoryZSwapMax",
    "StartupMemoryZSwapMax",
    "MemoryZSwapWriteback",
    "AllowedMemoryNodes",
    "StartupAllowedMemoryNodes",
    "TasksAccounting",
    "TasksMax",
    "IOAccounting",
    "IOWeight",
    "StartupIOWeight",
    "IODeviceWeight",
    "IOReadBandwidthMax",
    "IOWriteBandwidthMax",
    "IOReadIOPSMax",
    "IOWriteIOPSMax",
    "IODeviceLatencyTargetSec",
    "IPAccounting",
    "SocketBindAllow",
    "SocketBindDeny",
    "RestrictNetworkInterfaces",
    "NFTSet",
    "IPIngressFilterPath",
    "IPEgressFilterPath",
    "BPFProgram",
    "DeviceAllow",
    "DevicePolicy",
    "Slice",
    "Delegate",
    "DelegateSubgroup",
    "DisableControllers",
    "ManagedOOMSwap",
    "ManagedOOMMemoryPressure",
    "ManagedOOMMemoryPressureLimit",
    "ManagedOOMMemoryPressureDurationSec",
    "ManagedOOMPreference",
    "MemoryPressureWatch",
    "MemoryPressureThresholdSec",
    "CoredumpReceive",
    // Deprecated resource-control names still found in stock units.
    "CPUShares",
    "StartupCPUShares",
    "MemoryLimit",
    "BlockIOAccounting",
    "BlockIOWeight",
    "StartupBlockIOWeight",
    "BlockIODeviceWeight",
    "BlockIOReadBandwidth",
    "BlockIOWriteBandwidth",
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::super::test_support::*;
    use crate::unit::exec_command::ExecCommandError;
    use crate::unit::model::{
        DEFAULT_RESTART_SEC, DEFAULT_START_LIMIT_INTERVAL, DEFAULT_TIMEOUT_START,
        DEFAULT_TIMEOUT_STOP, KillMode, KillPolicy, NotifyAccess, RestartPolicy,
        ServiceConfigError, ServiceType, TIMEOUT_INFINITY,
    };

    #[test]
    fn missing_exec_start_is_an_error() {
        let result = config("[Service]\nType=simple\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::MissingExecStart { .. })
        ));
    }

    #[test]
    fn exec_start_reset_leaves_only_later_commands() {
        let cfg = config("[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n").unwrap();

        assert_eq!(cfg.exec_start.len(), 1);
        assert_eq!(cfg.exec_start[0].path, "/bin/b");
    }

    #[test]
    fn exec_start_reset_to_nothing_is_missing() {
        let result = config("[Service]\nExecStart=/bin/a\nExecStart=\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::MissingExecStart { .. })
        ));
    }

    #[test]
    fn several_exec_start_are_refused_for_simple_services() {
        let result = config("[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n");

        assert_eq!(
            result,
            Err(ServiceConfigError::MultipleExecStart {
                unit: "hello.service".into(),
                count: 2
            })
        );
    }

    #[test]
    fn several_exec_start_are_allowed_for_oneshot() {
        let cfg = config("[Service]\nType=oneshot\nExecStart=/bin/a\nExecStart=-/bin/b\n").unwrap();

        assert_eq!(cfg.service_type, ServiceType::Oneshot);
        assert_eq!(cfg.exec_start.len(), 2);
        assert!(cfg.exec_start[1].ignore_failure);
    }

    #[test]
    fn exec_type_is_supported() {
        let cfg = with_service("Type=exec\n");

        assert_eq!(cfg.service_type, ServiceType::Exec);
    }

    #[test]
    fn notify_and_forking_types_are_supported() {
        assert_eq!(
            with_service("Type=notify\n").service_type,
            ServiceType::Notify
        );
        assert_eq!(
            with_service("Type=forking\n").service_type,
            ServiceType::Forking
        );
        assert_eq!(
            with_service("Type=oneshot\nType=\n").service_type,
            ServiceType::Simple
        );
    }

    #[test]
    fn unsupported_type_is_a_clear_error() {
        let err = config("[Service]\nType=dbus\nExecStart=/bin/a\n").unwrap_err();

        assert!(
            matches!(&err, ServiceConfigError::UnsupportedType { line: 2, value, .. } if value == "dbus")
        );
        assert!(err.to_string().contains("Type=dbus is not supported yet"));
    }

    #[test]
    fn every_unsupported_type_is_distinguished_from_unknown() {
        for ty in ["notify-reload", "dbus", "idle"] {
            let result = config(&format!("[Service]\nType={ty}\nExecStart=/bin/a\n"));

            assert!(
                matches!(result, Err(ServiceConfigError::UnsupportedType { .. })),
                "{ty}"
            );
        }
    }

    #[test]
    fn unknown_type_is_an_error() {
        let result = config("[Service]\nType=bogus\nExecStart=/bin/a\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::UnknownType { line: 2, .. })
        ));
    }

    #[test]
    fn privileged_prefix_runs_sandboxed_with_a_warning_naming_its_line() {
        let cfg = config("[Service]\n\nExecStart=+/bin/sh\nExecStopPost=!!/bin/x\n").unwrap();

        assert_eq!(cfg.exec_start[0].path, "/bin/sh");
        assert_eq!(cfg.exec_stop_post[0].path, "/bin/x");
        assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);
        assert!(
            cfg.warnings[0].starts_with("hello.service:3: [Service] ExecStart= prefix '+'"),
            "{:?}",
            cfg.warnings
        );
        assert!(
            cfg.warnings[1].contains("prefix '!!'"),
            "{:?}",
            cfg.warnings
        );
    }

    #[test]
    fn relative_exec_start_is_refused() {
        let result = config("[Service]\nExecStart=hello\n");

        assert!(matches!(result, Err(ServiceConfigError::Exec { .. })));
    }

    #[test]
    fn every_exec_list_is_read_in_order_with_its_prefixes() {
        let cfg = with_service(
            "ExecStartPre=/bin/pre1\nExecStartPre=-/bin/pre2 x\nExecStartPost=/bin/post\n\
             ExecReload=/bin/kill -HUP $MAINPID\nExecStop=/bin/stop\nExecStopPost=-/bin/clean\n",
        );

        let paths = |list: &[crate::unit::exec_command::ExecCommand]| {
            list.iter().map(|c| c.path.clone()).collect::<Vec<_>>()
        };
        assert_eq!(paths(&cfg.exec_start_pre), ["/bin/pre1", "/bin/pre2"]);
        assert!(!cfg.exec_start_pre[0].ignore_failure);
        assert!(cfg.exec_start_pre[1].ignore_failure);
        assert_eq!(paths(&cfg.exec_start_post), ["/bin/post"]);
        assert_eq!(cfg.exec_reload[0].argv, ["/bin/kill", "-HUP", "$MAINPID"]);
        assert_eq!(paths(&cfg.exec_stop), ["/bin/stop"]);
        assert!(cfg.exec_stop_post[0].ignore_failure);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn an_empty_exec_assignment_empties_only_its_list() {
        let cfg =
            with_service("ExecStop=/bin/a\nExecStopPost=/bin/c\nExecStop=\nExecStop=/bin/b\n");

        assert_eq!(cfg.exec_stop.len(), 1);
        assert_eq!(cfg.exec_stop[0].path, "/bin/b");
        assert_eq!(cfg.exec_stop_post.len(), 1);
    }

    #[test]
    fn a_bad_exec_line_names_its_directive_and_line() {
        let err = config("[Service]\nExecStart=/bin/a\nExecStopPost=relative\n").unwrap_err();

        assert!(matches!(
            &err,
            ServiceConfigError::Exec { line: 3, key, source: ExecCommandError::RelativePath { .. }, .. }
                if key == "ExecStopPost"
        ));
        assert!(
            err.to_string()
                .starts_with("hello.service:3: invalid ExecStopPost="),
            "{err}"
        );
    }

    #[test]
    fn an_exec_list_is_bounded() {
        let lines = "ExecStartPre=/bin/true\n".repeat(33);

        let result = config(&format!("[Service]\nExecStart=/bin/a\n{lines}"));

        assert!(matches!(
            result,
            Err(ServiceConfigError::TooManyCommands {
                line: 35,
                max: 32,
                ..
            })
        ));
    }

    #[test]
    fn pid_file_is_absolute_or_under_run() {
        assert_eq!(
            with_service("PIDFile=/run/hello.pid\n").pid_file.as_deref(),
            Some("/run/hello.pid")
        );
        assert_eq!(
            with_service("PIDFile=hello/main.pid\n").pid_file.as_deref(),
            Some("/run/hello/main.pid")
        );
        assert_eq!(
            with_service("PIDFile=/var/run/hello.pid\n")
                .pid_file
                .as_deref(),
            Some("/run/hello.pid")
        );
        assert_eq!(with_service("PIDFile=/x\nPIDFile=\n").pid_file, None);
    }

    #[test]
    fn pid_file_specifiers_are_resolved() {
        let unit = crate::unit::syntax::parse("[Service]\nExecStart=/bin/a\nPIDFile=/run/%i.pid\n")
            .unwrap();

        let cfg = crate::unit::from_unit("web@blue.service", &unit).unwrap();

        assert_eq!(cfg.pid_file.as_deref(), Some("/run/blue.pid"));
    }

    #[test]
    fn an_unnormalized_or_huge_pid_file_is_an_error() {
        let huge = format!("PIDFile=/run/{}\n", "x".repeat(5000));
        for line in [
            "PIDFile=/run/../etc/passwd\n",
            "PIDFile=/run//x\n",
            "PIDFile=/run/\n",
            &huge,
        ] {
            let result = config(&format!("[Service]\nExecStart=/bin/a\n{line}"));

            assert!(
                matches!(
                    result,
                    Err(ServiceConfigError::InvalidValue { line: 3, .. })
                ),
                "{line}: {result:?}"
            );
        }
    }

    #[test]
    fn environment_words_are_unquoted_and_later_ones_win() {
        let cfg = with_service("Environment=A=1 \"B=two words\"\nEnvironment=A=3 C=\n");

        let expected: BTreeMap<String, String> = [("A", "3"), ("B", "two words"), ("C", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(cfg.environment, expected);
    }

    #[test]
    fn empty_environment_resets_it() {
        let cfg = with_service("Environment=A=1\nEnvironment=\nEnvironment=B=2\n");

        assert_eq!(cfg.environment.keys().collect::<Vec<_>>(), ["B"]);
    }

    #[test]
    fn invalid_environment_assignment_is_warned_about_and_skipped() {
        let cfg = with_service("Environment=NOEQUALS 1X=2 OK=3\n");

        assert_eq!(cfg.environment.keys().collect::<Vec<_>>(), ["OK"]);
        assert_eq!(cfg.warnings.len(), 2);
        assert!(cfg.warnings[0].starts_with("hello.service:3: [Service] Environment="));
    }

    #[test]
    fn badly_quoted_environment_is_an_error() {
        let result = config("[Service]\nExecStart=/bin/a\nEnvironment=\"A=1\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::Environment { line: 3, .. })
        ));
    }

    #[test]
    fn working_directory_must_be_absolute() {
        let result = config("[Service]\nExecStart=/bin/a\nWorkingDirectory=srv\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::WorkingDirectory { line: 3, .. })
        ));
    }

    #[test]
    fn working_directory_home_is_not_supported_yet() {
        let err = config("[Service]\nExecStart=/bin/a\nWorkingDirectory=~\n").unwrap_err();

        assert!(err.to_string().contains("not supported yet"));
    }

    #[test]
    fn working_directory_dash_is_warned_about_not_silently_ignored() {
        let cfg = with_service("WorkingDirectory=-/srv/app\n");

        assert_eq!(cfg.working_directory.as_deref(), Some("/srv/app"));
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("prefix '-' is not supported yet"));
    }

    #[test]
    fn working_directory_without_dash_is_taken_as_is() {
        let cfg = with_service("WorkingDirectory=/srv/app\n");

        assert_eq!(cfg.working_directory.as_deref(), Some("/srv/app"));
        assert!(cfg.warnings.is_empty());
    }

    #[test]
    fn timeout_stop_sec_parses_time_spans() {
        assert_eq!(
            with_service("TimeoutStopSec=1min 30s\n").timeout_stop,
            Duration::from_secs(90)
        );
        assert_eq!(
            with_service("TimeoutStopSec=500ms\n").timeout_stop,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn timeout_sec_sets_the_stop_timeout_and_later_settings_win() {
        assert_eq!(
            with_service("TimeoutSec=5\n").timeout_stop,
            Duration::from_secs(5)
        );
        assert_eq!(
            with_service("TimeoutStopSec=7\nTimeoutSec=5\n").timeout_stop,
            Duration::from_secs(5)
        );
        assert_eq!(
            with_service("TimeoutSec=5\nTimeoutStopSec=7\n").timeout_stop,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn timeout_zero_and_infinity_disable_the_timeout() {
        assert_eq!(
            with_service("TimeoutStopSec=0\n").timeout_stop,
            TIMEOUT_INFINITY
        );
        assert_eq!(
            with_service("TimeoutStopSec=infinity\n").timeout_stop,
            TIMEOUT_INFINITY
        );
    }

    #[test]
    fn empty_timeout_restores_the_default() {
        let cfg = with_service("TimeoutStopSec=3\nTimeoutStopSec=\n");

        assert_eq!(cfg.timeout_stop, DEFAULT_TIMEOUT_STOP);
    }

    #[test]
    fn invalid_timeout_is_an_error() {
        let result = config("[Service]\nExecStart=/bin/a\nTimeoutStopSec=soon\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::InvalidValue {
                line: 3,
                expected: "a time span",
                ..
            })
        ));
    }

    #[test]
    fn remain_after_exit_is_a_boolean_defaulting_to_no() {
        let cfg = with_service("RemainAfterExit=yes\n");

        assert!(cfg.remain_after_exit);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert!(!with_service("RemainAfterExit=off\n").remain_after_exit);
        assert!(!with_service("RemainAfterExit=yes\nRemainAfterExit=\n").remain_after_exit);
    }

    #[test]
    fn timeout_start_sec_is_read_with_zero_meaning_none() {
        assert_eq!(
            with_service("TimeoutStartSec=2min\n").timeout_start,
            Duration::from_secs(120)
        );
        assert_eq!(
            with_service("TimeoutStartSec=0\n").timeout_start,
            TIMEOUT_INFINITY
        );
        assert_eq!(
            with_service("TimeoutStartSec=infinity\n").timeout_start,
            TIMEOUT_INFINITY
        );
        assert_eq!(
            with_service("TimeoutStartSec=3\nTimeoutStartSec=\n").timeout_start,
            DEFAULT_TIMEOUT_START
        );
        assert_eq!(
            with_service("TimeoutStartSec=3\n").timeout_stop,
            DEFAULT_TIMEOUT_STOP
        );
    }

    #[test]
    fn timeout_sec_sets_both_timeouts() {
        let cfg = with_service("TimeoutSec=5\n");

        assert_eq!(cfg.timeout_start, Duration::from_secs(5));
        assert_eq!(cfg.timeout_stop, Duration::from_secs(5));
    }

    #[test]
    fn restart_takes_every_systemd_policy() {
        let cases = [
            ("no", RestartPolicy::No),
            ("on-success", RestartPolicy::OnSuccess),
            ("on-failure", RestartPolicy::OnFailure),
            ("on-abnormal", RestartPolicy::OnAbnormal),
            ("on-watchdog", RestartPolicy::OnWatchdog),
            ("on-abort", RestartPolicy::OnAbort),
            ("always", RestartPolicy::Always),
            ("", RestartPolicy::No),
        ];
        for (value, policy) in cases {
            assert_eq!(
                with_service(&format!("Restart={value}\n")).restart,
                policy,
                "{value}"
            );
        }
    }

    #[test]
    fn an_unknown_restart_policy_is_an_error_with_its_line() {
        let err = config("[Service]\nExecStart=/bin/a\nRestart=sometimes\n").unwrap_err();

        assert!(matches!(
            err,
            ServiceConfigError::InvalidValue { line: 3, .. }
        ));
        assert!(
            err.to_string()
                .contains("Restart=sometimes is not one of no, on-success"),
            "{err}"
        );
    }

    #[test]
    fn restart_sec_is_a_time_span_defaulting_to_100ms() {
        assert_eq!(
            with_service("RestartSec=2\n").restart_sec,
            Duration::from_secs(2)
        );
        assert_eq!(
            with_service("RestartSec=250ms\n").restart_sec,
            Duration::from_millis(250)
        );
        assert_eq!(
            with_service("RestartSec=2\nRestartSec=\n").restart_sec,
            DEFAULT_RESTART_SEC
        );
        assert!(config("[Service]\nExecStart=/bin/a\nRestartSec=fast\n").is_err());
    }

    #[test]
    fn old_service_spellings_of_the_start_limit_are_read() {
        let cfg = with_service("StartLimitInterval=30s\nStartLimitBurst=3\n");

        assert_eq!(cfg.start_limit_interval, Duration::from_secs(30));
        assert_eq!(cfg.start_limit_burst, 3);
    }

    #[test]
    fn start_limit_interval_sec_in_service_is_warned_about_as_systemd_ignores_it() {
        let cfg = with_service("StartLimitIntervalSec=30s\n");

        assert_eq!(cfg.start_limit_interval, DEFAULT_START_LIMIT_INTERVAL);
        assert_eq!(cfg.warnings.len(), 1);
        assert!(
            cfg.warnings[0].contains("belongs in [Unit]"),
            "{:?}",
            cfg.warnings
        );
    }

    #[test]
    fn kill_mode_takes_systemds_four_modes() {
        assert_eq!(with_service("KillMode=mixed\n").kill.mode, KillMode::Mixed);
        assert_eq!(
            with_service("KillMode=process\n").kill.mode,
            KillMode::Process
        );
        assert_eq!(
            with_service("KillMode=process\nKillMode=control-group\n")
                .kill
                .mode,
            KillMode::ControlGroup
        );
        assert!(config("[Service]\nExecStart=/bin/a\nKillMode=all\n").is_err());
    }

    #[test]
    fn kill_mode_none_is_taken_with_a_warning() {
        let cfg = with_service("KillMode=none\n");

        assert_eq!(cfg.kill.mode, KillMode::None);
        assert_eq!(cfg.warnings.len(), 1);
        assert!(cfg.warnings[0].starts_with("hello.service:3: [Service] KillMode= none is unsafe"));
    }

    #[test]
    fn kill_signals_take_names_and_numbers() {
        let cfg = with_service(
            "KillSignal=SIGINT\nFinalKillSignal=QUIT\nWatchdogSignal=10\nSendSIGKILL=no\n",
        );

        assert_eq!(cfg.kill.signal, 2);
        assert_eq!(cfg.kill.final_signal, 3);
        assert_eq!(cfg.kill.watchdog_signal, 10);
        assert!(!cfg.kill.send_sigkill);
    }

    #[test]
    fn kill_policy_defaults_are_systemds() {
        let cfg = with_service("KillSignal=INT\nKillSignal=\n");

        assert_eq!(cfg.kill, KillPolicy::default());
        assert_eq!(
            (
                cfg.kill.signal,
                cfg.kill.final_signal,
                cfg.kill.watchdog_signal
            ),
            (15, 9, 6)
        );
    }

    #[test]
    fn a_bad_signal_is_an_error() {
        for value in ["SIGBOGUS", "0", "65", "term"] {
            let result = config(&format!(
                "[Service]\nExecStart=/bin/a\nKillSignal={value}\n"
            ));

            assert!(
                matches!(
                    result,
                    Err(ServiceConfigError::InvalidValue { line: 3, .. })
                ),
                "{value}: {result:?}"
            );
        }
    }

    #[test]
    fn notify_access_is_unset_unless_given() {
        assert_eq!(with_service("").notify_access, None);
        assert_eq!(
            with_service("NotifyAccess=all\n").notify_access,
            Some(NotifyAccess::All)
        );
        assert_eq!(
            with_service("NotifyAccess=exec\n").notify_access,
            Some(NotifyAccess::Exec)
        );
        assert_eq!(
            with_service("NotifyAccess=none\n").notify_access,
            Some(NotifyAccess::None)
        );
        assert_eq!(
            with_service("NotifyAccess=main\nNotifyAccess=\n").notify_access,
            None
        );
        assert!(config("[Service]\nExecStart=/bin/a\nNotifyAccess=some\n").is_err());
    }

    #[test]
    fn a_notify_or_watchdog_service_hears_its_main_process_even_with_notify_access_none() {
        let notify = with_service("Type=notify\nNotifyAccess=none\n");
        let watchdog = with_service("WatchdogSec=5\n");
        let all = with_service("Type=notify\nNotifyAccess=all\n");

        assert_eq!(notify.notify_access, Some(NotifyAccess::Main));
        assert_eq!(watchdog.notify_access, Some(NotifyAccess::Main));
        assert_eq!(all.notify_access, Some(NotifyAccess::All));
        assert_eq!(with_service("Type=exec\n").notify_access, None);
    }

    #[test]
    fn a_oneshot_that_would_restart_after_success_is_refused() {
        for restart in ["always", "on-success"] {
            let text = format!("[Service]\nType=oneshot\nExecStart=/bin/a\nRestart={restart}\n");

            let err = config(&text).unwrap_err();

            assert!(
                matches!(err, ServiceConfigError::OneshotRestart { .. }),
                "{restart}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("Restart={restart} is not allowed"))
            );
        }
        let on_failure = config("[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=on-failure\n");
        assert_eq!(on_failure.unwrap().restart, RestartPolicy::OnFailure);
    }

    #[test]
    fn watchdog_sec_is_off_for_zero_and_infinity() {
        assert_eq!(
            with_service("WatchdogSec=30s\n").watchdog,
            Duration::from_secs(30)
        );
        assert_eq!(with_service("WatchdogSec=0\n").watchdog, Duration::ZERO);
        assert_eq!(
            with_service("WatchdogSec=infinity\n").watchdog,
            Duration::ZERO
        );
        assert!(config("[Service]\nExecStart=/bin/a\nWatchdogSec=often\n").is_err());
    }

    #[test]
    fn an_argv0_other_than_the_executable_is_refused() {
        let result = config("[Service]\nExecStart=@/bin/busybox sh -c true\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::Exec {
                source: ExecCommandError::SeparateArgv0Unsupported,
                ..
            })
        ));
    }

    #[test]
    fn invalid_boolean_is_an_error() {
        let result = config("[Service]\nExecStart=/bin/a\nRemainAfterExit=maybe\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::InvalidValue {
                expected: "a boolean",
                ..
            })
        ));
    }

    #[test]
    fn not_yet_supported_directive_warns_with_its_line() {
        let cfg = with_service("GuessMainPID=no\n");

        assert_eq!(
            cfg.warnings,
            ["hello.service:3: [Service] GuessMainPID= is not supported yet, ignored"]
        );
    }

    #[test]
    fn unknown_directive_warns() {
        let cfg = with_service("Frobnicate=1\n");

        assert_eq!(
            cfg.warnings,
            ["hello.service:3: [Service] Frobnicate= is an unknown directive, ignored"]
        );
    }
}

/// `User=`, `Group=`, `SupplementaryGroups=` and `DynamicUser=` under a profile that runs
/// services as the image's own users (level 3 on), and below it.
#[cfg(test)]
mod image_identity_tests {
    use berth_protocol::sandbox::SandboxSpec;

    use super::super::test_support::*;
    use crate::unit::model::{ServiceConfigError, UnitIdentity};
    use crate::unit::{ServiceConfig, from_unit_files_over, parse};

    fn over_profile(profile: &str, lines: &str) -> Result<ServiceConfig, ServiceConfigError> {
        let mut base = SandboxSpec::baseline(0, 0, "");
        base.profile = profile.to_owned();
        let unit = parse(&format!("[Service]\nExecStart=/bin/hello\n{lines}")).unwrap();
        from_unit_files_over("hello.service", &[("hello.service", &unit)], &base)
    }

    fn at_level_3(lines: &str) -> ServiceConfig {
        over_profile("default@3", lines).unwrap()
    }

    #[test]
    fn user_group_and_supplementary_groups_are_read_at_level_3() {
        let cfg = at_level_3(
            "User=redis\nGroup=101\nSupplementaryGroups=adm audio\nSupplementaryGroups=video\n",
        );

        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(
            cfg.identity,
            UnitIdentity {
                user: Some("redis".into()),
                group: Some("101".into()),
                supplementary_groups: vec!["adm".into(), "audio".into(), "video".into()],
                dynamic_user: false,
            }
        );
    }

    #[test]
    fn user_root_is_root_of_the_services_namespace_at_level_3_not_a_loosening() {
        let cfg = at_level_3("User=root\nGroup=0\n");

        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(cfg.identity.user.as_deref(), Some("root"));
        assert_eq!(cfg.identity.group.as_deref(), Some("0"));
    }

    #[test]
    fn empty_assignments_reset_the_user_and_the_groups() {
        let cfg = at_level_3("User=redis\nUser=\nSupplementaryGroups=adm\nSupplementaryGroups=\n");

        assert_eq!(cfg.identity, UnitIdentity::default());
    }

    #[test]
    fn a_user_that_is_no_name_fails_the_unit_rather_than_run_it_as_root() {
        for line in [
            "User=a:b",
            "User=redis www-data",
            "Group=-x",
            "SupplementaryGroups=ok b/c",
        ] {
            let result = over_profile("default@3", &format!("{line}\n"));

            assert!(
                matches!(
                    result,
                    Err(ServiceConfigError::InvalidValue { line: 3, .. })
                ),
                "{line}: {result:?}"
            );
        }
    }

    #[test]
    fn dynamic_user_no_is_the_default_at_level_3_and_yes_is_kept() {
        let no = at_level_3("DynamicUser=no\n");
        let yes = at_level_3("DynamicUser=yes\n");

        assert!(no.warnings.is_empty(), "{:?}", no.warnings);
        assert!(!no.identity.dynamic_user);
        assert!(yes.identity.dynamic_user);
    }

    #[test]
    fn below_level_3_user_and_groups_are_ignored_as_before() {
        let cfg = over_profile("default@2", "User=redis\nDynamicUser=no\n").unwrap();
        let root = with_service("User=root\n");

        assert_eq!(cfg.identity.user, None);
        assert_eq!(
            cfg.warnings,
            [
                "hello.service:3: [Service] User= is not supported yet, ignored",
                "hello.service:4: [Service] DynamicUser=no is ignored: berth runs every service \
                 as a dynamic user"
            ]
        );
        assert_eq!(root.identity, UnitIdentity::default());
    }
}
