//! `[Service]` directives: what to run and how (the sandbox's are `sandbox`'s).

use std::time::Duration;

use super::super::exec_command;
use super::super::model::{
    DEFAULT_TIMEOUT_STOP, ServiceConfigError, ServiceType, TIMEOUT_INFINITY,
};
use super::super::syntax::{self, Assignment};
use super::super::values::{parse_boolean, parse_timespan};
use super::sandbox::{is_sandbox_directive, loosens_sandbox};
use super::{Builder, shorten};

impl Builder {
    pub(super) fn service_directive(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        match a.key.as_str() {
            "Type" => self.config.service_type = self.service_type(a)?,
            "ExecStart" => {
                if a.value.is_empty() {
                    self.config.exec_start.clear();
                } else {
                    let value = self.specifiers(a, "Service", true);
                    let exec_start_error = |source| ServiceConfigError::ExecStart {
                        unit: self.unit(),
                        line: a.line,
                        source,
                    };
                    let command = exec_command::parse(&value).map_err(exec_start_error)?;
                    if command.argv.first() != Some(&command.path) {
                        return Err(exec_start_error(
                            exec_command::ExecCommandError::SeparateArgv0Unsupported,
                        ));
                    }
                    self.config.exec_start.push(command);
                }
            }
            "Environment" => self.environment(a)?,
            "WorkingDirectory" => self.working_directory(a)?,
            "TimeoutStopSec" | "TimeoutSec" => {
                self.config.timeout_stop = if a.value.is_empty() {
                    DEFAULT_TIMEOUT_STOP
                } else {
                    match parse_timespan(&a.value) {
                        // systemd: 0 disables the timeout, like infinity.
                        Some(Duration::ZERO) => TIMEOUT_INFINITY,
                        Some(span) => span,
                        None => return Err(self.invalid_value(a, "a time span")),
                    }
                };
            }
            // Parsed so that a bad value is still an error; the exited state is not kept yet.
            "RemainAfterExit" if !a.value.is_empty() => {
                if parse_boolean(&a.value).ok_or_else(|| self.invalid_value(a, "a boolean"))? {
                    self.warn_not_supported(a, "Service");
                }
            }
            "RemainAfterExit" => {}
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

    fn service_type(&self, a: &Assignment) -> Result<ServiceType, ServiceConfigError> {
        match a.value.as_str() {
            "" | "simple" => Ok(ServiceType::Simple),
            "exec" => Ok(ServiceType::Exec),
            "oneshot" => Ok(ServiceType::Oneshot),
            "forking" | "notify" | "notify-reload" | "dbus" | "idle" => {
                Err(ServiceConfigError::UnsupportedType {
                    unit: self.unit(),
                    line: a.line,
                    value: a.value.clone(),
                })
            }
            other => Err(ServiceConfigError::UnknownType {
                unit: self.unit(),
                line: a.line,
                value: shorten(other),
            }),
        }
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

/// `[Service]` directives systemd knows (systemd.service, .exec, .kill, .resource-control)
/// and berth does not implement yet. The sandbox's table takes its directives before this
/// list is consulted, and `loosens_sandbox` the loosening forms of the others.
const KNOWN_SERVICE_DIRECTIVES: &[&str] = &[
    // systemd.service(5)
    "ExitType",
    "GuessMainPID",
    "PIDFile",
    "BusName",
    "ExecStartPre",
    "ExecStartPost",
    "ExecCondition",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
    "RestartSec",
    "RestartSteps",
    "RestartMaxDelaySec",
    "TimeoutStartSec",
    "TimeoutAbortSec",
    "TimeoutStartFailureMode",
    "TimeoutStopFailureMode",
    "RuntimeMaxSec",
    "RuntimeRandomizedExtraSec",
    "WatchdogSec",
    "Restart",
    "RestartMode",
    "SuccessExitStatus",
    "RestartPreventExitStatus",
    "RestartForceExitStatus",
    "RootDirectoryStartOnly",
    "PermissionsStartOnly",
    "NonBlocking",
    "NotifyAccess",
    "Sockets",
    "FileDescriptorStoreMax",
    "FileDescriptorStorePreserve",
    "USBFunctionDescriptors",
    "USBFunctionStrings",
    "OOMPolicy",
    "OpenFile",
    "ReloadSignal",
    "StartLimitIntervalSec",
    "StartLimitInterval",
    "StartLimitBurst",
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
    "KillMode",
    "KillSignal",
    "RestartKillSignal",
    "SendSIGHUP",
    "SendSIGKILL",
    "FinalKillSignal",
    "WatchdogSignal",
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
        DEFAULT_TIMEOUT_STOP, ServiceConfigError, ServiceType, TIMEOUT_INFINITY,
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
    fn unsupported_type_is_a_clear_error() {
        let err = config("[Service]\nType=notify\nExecStart=/bin/a\n").unwrap_err();

        assert!(
            matches!(&err, ServiceConfigError::UnsupportedType { line: 2, value, .. } if value == "notify")
        );
        assert!(err.to_string().contains("Type=notify is not supported yet"));
    }

    #[test]
    fn every_unsupported_type_is_distinguished_from_unknown() {
        for ty in ["forking", "notify", "notify-reload", "dbus", "idle"] {
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
    fn privileged_exec_start_is_refused_with_its_line() {
        let result = config("[Service]\n\nExecStart=+/bin/sh\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::ExecStart {
                line: 3,
                source: ExecCommandError::PrivilegedPrefixRefused { .. },
                ..
            })
        ));
    }

    #[test]
    fn relative_exec_start_is_refused() {
        let result = config("[Service]\nExecStart=hello\n");

        assert!(matches!(result, Err(ServiceConfigError::ExecStart { .. })));
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
    fn remain_after_exit_yes_is_warned_about_and_no_is_what_berth_does() {
        assert_eq!(with_service("RemainAfterExit=yes\n").warnings.len(), 1);
        assert!(with_service("RemainAfterExit=off\n").warnings.is_empty());
    }

    #[test]
    fn an_argv0_other_than_the_executable_is_refused() {
        let result = config("[Service]\nExecStart=@/bin/busybox sh -c true\n");

        assert!(matches!(
            result,
            Err(ServiceConfigError::ExecStart {
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
        let cfg = with_service("PIDFile=/run/hello.pid\n");

        assert_eq!(
            cfg.warnings,
            ["hello.service:3: [Service] PIDFile= is not supported yet, ignored"]
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
