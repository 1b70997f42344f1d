//! From a parsed unit file to what berthd runs.
//!
//! [`from_unit`] reads the `[Unit]`, `[Service]` and `[Install]` directives berth implements
//! and accounts for every other line: a directive is used, accepted as meaningless for a
//! single portable service, or reported in [`ServiceConfig::warnings`] with its line number.
//! Nothing is silently ignored (DESIGN §5). Directives that would loosen the sandbox never
//! take effect: berth's sandbox is always on and the profile decides it.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::exec_command::{self, ExecCommand, ExecCommandError};
use crate::unit_file::{self, Assignment, UnitFile, UnitFileError};

/// `TimeoutStopSec=` when the unit does not set it (systemd's `DefaultTimeoutStopSec=`, which
/// berth lowers from 90 s: a portable service that ignores SIGTERM is killed sooner).
pub const DEFAULT_TIMEOUT_STOP: Duration = Duration::from_secs(10);

/// The time span meaning "no timeout" (`infinity`, or `0` for the stop timeout). Callers must
/// use checked arithmetic (`Instant::checked_add`) with it.
pub const TIMEOUT_INFINITY: Duration = Duration::MAX;

/// Longest piece of a hostile value quoted in a warning or error message.
const MAX_QUOTED_VALUE: usize = 80;

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
    #[error("{unit}:{line}: unknown service type Type={value}")]
    UnknownType {
        unit: String,
        line: usize,
        value: String,
    },
    #[error("{unit}:{line}: invalid ExecStart=: {source}")]
    ExecStart {
        unit: String,
        line: usize,
        #[source]
        source: ExecCommandError,
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

/// `Type=` values berth runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Started as soon as the process is forked (systemd's default).
    #[default]
    Simple,
    /// Started once `execve()` of the main process succeeded.
    Exec,
    /// Runs each `ExecStart=` to completion, in order.
    Oneshot,
}

/// What berthd needs to run one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The unit name, e.g. `hello.service`.
    pub name: String,
    /// `[Unit] Description=`.
    pub description: Option<String>,
    pub service_type: ServiceType,
    /// At least one; more only for [`ServiceType::Oneshot`].
    pub exec_start: Vec<ExecCommand>,
    /// `Environment=`, later assignments overriding earlier ones.
    pub environment: BTreeMap<String, String>,
    /// `WorkingDirectory=`, an absolute path inside the sandbox.
    pub working_directory: Option<String>,
    /// `TimeoutStopSec=` (or `TimeoutSec=`); [`TIMEOUT_INFINITY`] for none.
    pub timeout_stop: Duration,
    /// One line per directive berth did not apply, as `unit:line: [Section] ...`.
    pub warnings: Vec<String>,
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

/// Builds the service configuration of unit `name` from its parsed file.
pub fn from_unit(name: &str, unit: &UnitFile) -> Result<ServiceConfig, ServiceConfigError> {
    from_unit_files(name, &[(name, unit)])
}

/// Builds the service configuration of unit `name` from its file and its drop-ins, each with
/// the label its warnings and errors name it by (`hello.service`,
/// `hello.service.d/50-Environment.conf`). As systemd does, the drop-ins (in the order given:
/// lexical) are read as if appended to the file: a later assignment overrides, an empty one
/// resets a list, and a directive that would loosen the sandbox is ignored with a warning
/// wherever it appears.
pub fn from_unit_files(
    name: &str,
    files: &[(&str, &UnitFile)],
) -> Result<ServiceConfig, ServiceConfigError> {
    if files
        .iter()
        .all(|(_, unit)| unit.section("Service").is_none())
    {
        return Err(ServiceConfigError::MissingServiceSection {
            unit: name.to_owned(),
        });
    }
    let mut builder = Builder {
        config: ServiceConfig {
            name: name.to_owned(),
            description: None,
            service_type: ServiceType::default(),
            exec_start: Vec::new(),
            environment: BTreeMap::new(),
            working_directory: None,
            timeout_stop: DEFAULT_TIMEOUT_STOP,
            warnings: Vec::new(),
        },
        source: name.to_owned(),
    };
    for (label, unit) in files {
        builder.source = (*label).to_owned();
        for section in unit.sections() {
            match section.name.as_str() {
                "Unit" => section
                    .assignments
                    .iter()
                    .for_each(|a| builder.unit_directive(a)),
                "Service" => {
                    for a in &section.assignments {
                        builder.service_directive(a)?;
                    }
                }
                "Install" => section
                    .assignments
                    .iter()
                    .for_each(|a| builder.install_directive(a)),
                // systemd.unit(5): sections prefixed X- carry data for other programs.
                other if other.starts_with("X-") => {}
                other => {
                    let warning = format!(
                        "{label}:{}: section [{}] is not supported in a service unit, ignored",
                        section.line,
                        shorten(other)
                    );
                    builder.config.warnings.push(warning);
                }
            }
        }
    }
    let mut config = builder.config;
    cap_warnings(&mut config.warnings, MAX_WARNINGS_PER_UNIT, name);
    match config.exec_start.len() {
        0 => Err(ServiceConfigError::MissingExecStart {
            unit: name.to_owned(),
        }),
        1 => Ok(config),
        _ if config.service_type == ServiceType::Oneshot => Ok(config),
        count => Err(ServiceConfigError::MultipleExecStart {
            unit: name.to_owned(),
            count,
        }),
    }
}

struct Builder {
    config: ServiceConfig,
    /// The file being read (the unit's, or one of its drop-ins), as messages name it.
    source: String,
}

impl Builder {
    fn unit(&self) -> String {
        self.source.clone()
    }

    fn warn(&mut self, a: &Assignment, section: &str, what: &str) {
        let warning = format!(
            "{}:{}: [{section}] {}= {what}",
            self.source,
            a.line,
            shorten(&a.key)
        );
        self.config.warnings.push(warning);
    }

    fn warn_not_supported(&mut self, a: &Assignment, section: &str) {
        self.warn(a, section, "is not supported yet, ignored");
    }

    fn warn_unknown(&mut self, a: &Assignment, section: &str) {
        self.warn(a, section, "is an unknown directive, ignored");
    }

    /// Resolves `%` specifiers, warning about the ones berth cannot resolve.
    fn specifiers(&mut self, a: &Assignment, section: &str, escape_for_words: bool) -> String {
        let (resolved, unresolved) =
            resolve_specifiers(&a.value, &self.config.name, escape_for_words);
        for spec in unresolved {
            let what = format!("uses specifier %{spec}, which is not supported yet; left as is");
            self.warn(a, section, &what);
        }
        resolved
    }

    fn unit_directive(&mut self, a: &Assignment) {
        match a.key.as_str() {
            "Description" => {
                self.config.description = if a.value.is_empty() {
                    None
                } else {
                    Some(self.specifiers(a, "Unit", false))
                };
            }
            // Documentation, ordering and dependencies between units mean nothing for a single
            // portable service that berth starts on request, so they are accepted silently.
            "Documentation"
            | "Wants"
            | "Requires"
            | "Requisite"
            | "BindsTo"
            | "PartOf"
            | "Upholds"
            | "Conflicts"
            | "Before"
            | "After"
            | "DefaultDependencies"
            | "RequiresMountsFor"
            | "WantsMountsFor" => {}
            key if key.starts_with("X-") => {}
            key if key.starts_with("Condition")
                || key.starts_with("Assert")
                || KNOWN_UNIT_DIRECTIVES.contains(&key) =>
            {
                self.warn_not_supported(a, "Unit");
            }
            _ => self.warn_unknown(a, "Unit"),
        }
    }

    fn install_directive(&mut self, a: &Assignment) {
        match a.key.as_str() {
            // Installation (enablement) is berth's own attach/enable, not the unit's business.
            "WantedBy" | "RequiredBy" | "UpheldBy" | "Also" | "Alias" | "DefaultInstance" => {}
            key if key.starts_with("X-") => {}
            _ => self.warn_unknown(a, "Install"),
        }
    }

    fn service_directive(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
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

    fn invalid_value(&self, a: &Assignment, expected: &'static str) -> ServiceConfigError {
        ServiceConfigError::InvalidValue {
            unit: self.unit(),
            line: a.line,
            key: a.key.clone(),
            value: shorten(&a.value),
            expected,
        }
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
            unit_file::unquote_words(&value).map_err(|source| ServiceConfigError::Environment {
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

/// Whether `key=value` in `[Service]` would give the service more than its sandbox: a
/// protection turned off, host identities, capabilities, host paths or namespaces, or a reset
/// that drops a filter. Such directives are reported and never applied.
fn loosens_sandbox(key: &str, value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let non_empty = !value.is_empty();
    match key {
        // Protections that `no` turns off.
        "PrivateTmp"
        | "PrivateDevices"
        | "PrivateNetwork"
        | "PrivateUsers"
        | "PrivateIPC"
        | "PrivatePIDs"
        | "PrivateMounts"
        | "NoNewPrivileges"
        | "ProtectSystem"
        | "ProtectHome"
        | "ProtectKernelTunables"
        | "ProtectKernelModules"
        | "ProtectKernelLogs"
        | "ProtectControlGroups"
        | "ProtectClock"
        | "ProtectHostname"
        | "RestrictRealtime"
        | "RestrictSUIDSGID"
        | "RestrictNamespaces"
        | "LockPersonality"
        | "MemoryDenyWriteExecute"
        | "DynamicUser"
        | "RemoveIPC" => parse_boolean(value) == Some(false),
        "ProtectProc" => lower == "default",
        "ProcSubset" => lower == "all",
        "DevicePolicy" => lower == "auto",
        "KeyringMode" => lower == "shared",
        "User" | "Group" => value == "root" || value == "0",
        // Capabilities granted (a `~` list only removes some).
        "CapabilityBoundingSet" | "AmbientCapabilities" => non_empty && !value.starts_with('~'),
        // Host groups, devices, paths, namespaces and privileged hooks.
        "SupplementaryGroups"
        | "SecureBits"
        | "DeviceAllow"
        | "BindPaths"
        | "BindReadOnlyPaths"
        | "ReadWritePaths"
        | "ExecPaths"
        | "NetworkNamespacePath"
        | "IPCNamespacePath"
        | "IPAddressAllow"
        | "PAMName" => non_empty,
        "PermissionsStartOnly" | "RootDirectoryStartOnly" => parse_boolean(value) == Some(true),
        "Delegate" => non_empty && parse_boolean(value) != Some(false),
        // An empty assignment resets the filter to "everything allowed".
        "SystemCallFilter"
        | "SystemCallArchitectures"
        | "RestrictAddressFamilies"
        | "RestrictFileSystems"
        | "RestrictNetworkInterfaces" => value.is_empty(),
        // Raising priority needs privileges the sandbox does not grant.
        "Nice" | "OOMScoreAdjust" => value.starts_with('-'),
        "CPUSchedulingPolicy" => matches!(lower.as_str(), "fifo" | "rr"),
        "IOSchedulingClass" => matches!(lower.as_str(), "realtime" | "1"),
        _ => false,
    }
}

/// Parses a systemd boolean (`yes/no`, `true/false`, `on/off`, `1/0`, `y/n`, `t/f`).
pub fn parse_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Parses a systemd time span (`systemd.time(7)`): `infinity`, or numbers (decimals allowed)
/// each followed by an optional unit, e.g. `5`, `5s`, `500ms`, `1min 30s`, `2h30min`. A number
/// without a unit is seconds. `infinity` is [`TIMEOUT_INFINITY`]; `None` if invalid or too large.
pub fn parse_timespan(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value == "infinity" {
        return Some(TIMEOUT_INFINITY);
    }
    if value.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns = unit_nanoseconds(unit)?;
        // Whole part, then the fraction digit by digit, all in exact integer nanoseconds.
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        total_ns = total_ns.checked_add(whole.checked_mul(unit_ns)?)?;
        let mut scale = unit_ns;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            total_ns = total_ns.checked_add(u128::from(digit - b'0') * scale)?;
        }
        rest = tail.trim_start();
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).ok()?;
    // The remainder is below 10^9, so it fits.
    let nanos = u32::try_from(total_ns % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

fn unit_nanoseconds(unit: &str) -> Option<u128> {
    const US: u128 = 1_000;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    Some(match unit {
        "" | "s" | "sec" | "second" | "seconds" => S,
        "ns" | "nsec" => 1,
        "us" | "usec" | "µs" | "μs" => US,
        "ms" | "msec" => MS,
        "m" | "min" | "minute" | "minutes" => 60 * S,
        "h" | "hr" | "hour" | "hours" => 3_600 * S,
        "d" | "day" | "days" => 86_400 * S,
        "w" | "week" | "weeks" => 604_800 * S,
        "M" | "month" | "months" => 2_629_800 * S,
        "y" | "year" | "years" => 31_557_600 * S,
        _ => return None,
    })
}

/// Resolves `%` specifiers (`systemd.unit(5)`) that depend only on the unit name or on fixed
/// system-manager directories. Returns the text and the specifiers left unresolved (they stay
/// in the text as written). With `escape_for_words`, substituted text is backslash-escaped so
/// that a later [`unit_file::unquote_words`] keeps it as it is.
fn resolve_specifiers(value: &str, unit: &str, escape_for_words: bool) -> (String, Vec<char>) {
    let stem = unit.rsplit_once('.').map_or(unit, |(stem, _)| stem);
    let (prefix, instance) = match stem.split_once('@') {
        Some((prefix, instance)) => (prefix, instance),
        None => (stem, ""),
    };
    let last_component = prefix.rsplit_once('-').map_or(prefix, |(_, last)| last);
    let mut out = String::with_capacity(value.len());
    let mut unresolved = Vec::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let replacement = match spec {
            '%' => "%".to_owned(),
            'n' => unit.to_owned(),
            'N' => stem.to_owned(),
            'p' => prefix.to_owned(),
            'P' => unescape_unit_name(prefix),
            'i' => instance.to_owned(),
            'I' => unescape_unit_name(instance),
            'j' => last_component.to_owned(),
            'J' => unescape_unit_name(last_component),
            'f' => {
                let name = unescape_unit_name(if instance.is_empty() {
                    prefix
                } else {
                    instance
                });
                if name.starts_with('/') {
                    name
                } else {
                    format!("/{name}")
                }
            }
            // Directories of the system service manager; the sandbox maps them per service.
            't' => "/run".to_owned(),
            'S' => "/var/lib".to_owned(),
            'C' => "/var/cache".to_owned(),
            'L' => "/var/log".to_owned(),
            'E' => "/etc".to_owned(),
            'T' => "/tmp".to_owned(),
            'V' => "/var/tmp".to_owned(),
            other => {
                if !unresolved.contains(&other) {
                    unresolved.push(other);
                }
                out.push('%');
                out.push(other);
                continue;
            }
        };
        if escape_for_words {
            escape_word_into(&replacement, &mut out);
        } else {
            out.push_str(&replacement);
        }
    }
    (out, unresolved)
}

/// systemd's unit name unescaping: `-` stands for `/` and `\xNN` for a byte.
fn unescape_unit_name(escaped: &str) -> String {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'-' => bytes.push(b'/'),
            b'\\' => {
                let decoded = tail
                    .strip_prefix(b"x")
                    .and_then(|hex| hex.get(..2))
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match decoded {
                    Some(byte) => {
                        bytes.push(byte);
                        rest = tail.get(3..).unwrap_or_default();
                    }
                    None => bytes.push(b'\\'),
                }
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Escapes text so that `unquote_words` yields it back as (part of) one word.
fn escape_word_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            ' ' => out.push_str("\\s"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Bounds a hostile value quoted in a message.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_VALUE) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// `[Unit]` directives systemd knows and berth does not implement yet (besides `Condition*`
/// and `Assert*`).
const KNOWN_UNIT_DIRECTIVES: &[&str] = &[
    "OnFailure",
    "OnSuccess",
    "PropagatesReloadTo",
    "ReloadPropagatedFrom",
    "PropagatesStopTo",
    "StopPropagatedFrom",
    "JoinsNamespaceOf",
    "OnFailureJobMode",
    "IgnoreOnIsolate",
    "StopWhenUnneeded",
    "RefuseManualStart",
    "RefuseManualStop",
    "AllowIsolate",
    "CollectMode",
    "FailureAction",
    "SuccessAction",
    "FailureActionExitStatus",
    "SuccessActionExitStatus",
    "JobTimeoutSec",
    "JobRunningTimeoutSec",
    "JobTimeoutAction",
    "JobTimeoutRebootArgument",
    "StartLimitIntervalSec",
    "StartLimitInterval",
    "StartLimitBurst",
    "StartLimitAction",
    "RebootArgument",
    "SourcePath",
    "SurviveFinalKillSignal",
];

/// `[Service]` directives systemd knows (systemd.service, .exec, .kill, .resource-control)
/// and berth does not implement yet. Sandbox directives are here too: their tightening forms
/// are not applied yet (the profile's sandbox applies), their loosening forms are caught by
/// `loosens_sandbox` first.
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
    "IPAddressAllow",
    "IPAddressDeny",
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
    use super::*;
    use crate::unit_file::parse;

    fn config(text: &str) -> Result<ServiceConfig, ServiceConfigError> {
        from_unit("hello.service", &parse(text).unwrap())
    }

    fn with_service(lines: &str) -> ServiceConfig {
        config(&format!("[Service]\nExecStart=/bin/hello\n{lines}")).unwrap()
    }

    fn with_drop_in(main: &str, drop_in: &str) -> Result<ServiceConfig, ServiceConfigError> {
        let (main, drop_in) = (parse(main).unwrap(), parse(drop_in).unwrap());
        from_unit_files(
            "hello.service",
            &[
                ("hello.service", &main),
                ("hello.service.d/override.conf", &drop_in),
            ],
        )
    }

    #[test]
    fn a_drop_in_overrides_and_resets_as_if_appended() {
        let cfg = with_drop_in(
            "[Service]\nType=oneshot\nExecStart=/bin/a\nEnvironment=A=1 B=2\n",
            "[Service]\nExecStart=\nExecStart=/bin/b\nEnvironment=B=3\n",
        )
        .unwrap();

        assert_eq!(cfg.exec_start.len(), 1);
        assert_eq!(cfg.exec_start[0].path, "/bin/b");
        assert_eq!(cfg.environment.get("A").map(String::as_str), Some("1"));
        assert_eq!(cfg.environment.get("B").map(String::as_str), Some("3"));
    }

    #[test]
    fn a_loosening_directive_in_a_drop_in_is_ignored_and_named_by_the_drop_in() {
        let cfg = with_drop_in("[Service]\nExecStart=/bin/a\n", "[Service]\nUser=root\n").unwrap();

        assert_eq!(
            cfg.warnings,
            [
                "hello.service.d/override.conf:2: [Service] User=root is ignored: berth's sandbox \
              is always on and the profile decides it"
            ]
        );
    }

    #[test]
    fn a_service_section_in_a_drop_in_only_is_enough() {
        let cfg = with_drop_in("[Unit]\nDescription=x\n", "[Service]\nExecStart=/bin/a\n");

        assert!(cfg.is_ok(), "{cfg:?}");
    }

    #[test]
    fn minimal_service_gets_defaults() {
        let cfg = config("[Service]\nExecStart=/bin/hello\n").unwrap();

        assert_eq!(cfg.name, "hello.service");
        assert_eq!(cfg.service_type, ServiceType::Simple);
        assert_eq!(cfg.exec_start.len(), 1);
        assert_eq!(cfg.exec_start[0].path, "/bin/hello");
        assert_eq!(cfg.timeout_stop, DEFAULT_TIMEOUT_STOP);
        assert!(cfg.environment.is_empty());
        assert!(cfg.warnings.is_empty());
    }

    #[test]
    fn description_comes_from_the_unit_section() {
        let cfg =
            config("[Unit]\nDescription=Says hello\n[Service]\nExecStart=/bin/hello\n").unwrap();

        assert_eq!(cfg.description.as_deref(), Some("Says hello"));
    }

    #[test]
    fn missing_service_section_is_an_error() {
        let result = config("[Unit]\nDescription=x\n");

        assert_eq!(
            result,
            Err(ServiceConfigError::MissingServiceSection {
                unit: "hello.service".into()
            })
        );
    }

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
        let cfg = with_service("PrivateNetwork=yes\n");

        assert_eq!(
            cfg.warnings,
            ["hello.service:3: [Service] PrivateNetwork= is not supported yet, ignored"]
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

    #[test]
    fn loosening_directives_warn_that_the_sandbox_is_always_on() {
        for line in [
            "User=root",
            "Group=0",
            "PrivateTmp=no",
            "NoNewPrivileges=false",
            "ProtectSystem=no",
            "CapabilityBoundingSet=CAP_SYS_ADMIN",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "BindPaths=/etc:/host-etc",
            "SystemCallFilter=",
            "DynamicUser=no",
            "ProtectProc=default",
        ] {
            let cfg = with_service(&format!("{line}\n"));

            assert_eq!(
                cfg.warnings,
                [format!(
                    "hello.service:3: [Service] {line} is ignored: berth's sandbox is always on \
                     and the profile decides it"
                )],
                "{line}"
            );
        }
    }

    #[test]
    fn tightening_sandbox_directives_are_not_reported_as_loosening() {
        for line in [
            "PrivateTmp=yes",
            "CapabilityBoundingSet=~CAP_SYS_ADMIN",
            "CapabilityBoundingSet=",
            "User=app",
            "ProtectSystem=strict",
            "SystemCallFilter=@system-service",
        ] {
            let cfg = with_service(&format!("{line}\n"));

            assert_eq!(cfg.warnings.len(), 1, "{line}");
            assert!(
                cfg.warnings[0].ends_with("is not supported yet, ignored"),
                "{line}"
            );
        }
    }

    #[test]
    fn ordering_and_install_directives_are_accepted_silently() {
        let text = "[Unit]\nDescription=x\nDocumentation=man:x\nAfter=network.target\n\
                    Before=y.service\nWants=a.service\nRequires=b.service\n\
                    [Service]\nExecStart=/bin/a\n\
                    [Install]\nWantedBy=multi-user.target\nAlias=z.service\n";

        let cfg = config(text).unwrap();

        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn unit_conditions_are_not_supported_yet() {
        let cfg = config("[Unit]\nConditionPathExists=/x\n[Service]\nExecStart=/bin/a\n").unwrap();

        assert_eq!(
            cfg.warnings,
            ["hello.service:2: [Unit] ConditionPathExists= is not supported yet, ignored"]
        );
    }

    #[test]
    fn unknown_install_directive_warns() {
        let cfg = config("[Service]\nExecStart=/bin/a\n[Install]\nBogus=1\n").unwrap();

        assert_eq!(
            cfg.warnings,
            ["hello.service:4: [Install] Bogus= is an unknown directive, ignored"]
        );
    }

    #[test]
    fn unknown_section_warns_once_with_its_line() {
        let cfg = config("[Service]\nExecStart=/bin/a\n[Socket]\nListenStream=80\n").unwrap();

        assert_eq!(
            cfg.warnings,
            ["hello.service:3: section [Socket] is not supported in a service unit, ignored"]
        );
    }

    #[test]
    fn x_sections_and_keys_are_for_other_programs() {
        let cfg = config("[Service]\nExecStart=/bin/a\nX-Mine=1\n[X-Tool]\nFoo=bar\n").unwrap();

        assert!(cfg.warnings.is_empty());
    }

    #[test]
    fn specifiers_from_the_unit_name_are_resolved() {
        let unit = parse(
            "[Unit]\nDescription=%n %N %p %i %I %j %%\n[Service]\nExecStart=/bin/run %i %S/%p\n",
        )
        .unwrap();

        let cfg = from_unit("web-app@a-b.service", &unit).unwrap();

        assert_eq!(
            cfg.description.as_deref(),
            Some("web-app@a-b.service web-app@a-b web-app a-b a/b app %")
        );
        assert_eq!(
            cfg.exec_start[0].argv,
            ["/bin/run", "a-b", "/var/lib/web-app"]
        );
    }

    #[test]
    fn substituted_specifiers_stay_one_word() {
        let unit = parse("[Service]\nExecStart=/bin/run %I\n").unwrap();

        let cfg = from_unit("x@a\\x20b.service", &unit).unwrap();

        assert_eq!(cfg.exec_start[0].argv, ["/bin/run", "a b"]);
    }

    #[test]
    fn unsupported_specifier_warns_and_stays() {
        let cfg = with_service("WorkingDirectory=/home/%u\n");

        assert_eq!(cfg.working_directory.as_deref(), Some("/home/%u"));
        assert_eq!(
            cfg.warnings,
            [
                "hello.service:3: [Service] WorkingDirectory= uses specifier %u, which is not \
              supported yet; left as is"
            ]
        );
    }

    #[test]
    fn long_hostile_values_are_shortened_in_messages() {
        let long = "x".repeat(1000);
        let cfg = with_service(&format!("User=root{long}\nBogus{long}=1\n"));

        assert!(
            cfg.warnings.iter().all(|w| w.len() < 300),
            "{:?}",
            cfg.warnings
        );
    }

    #[test]
    fn timespans_follow_systemd_time() {
        let cases = [
            ("5", Duration::from_secs(5)),
            ("5s", Duration::from_secs(5)),
            (" 5 s ", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("1min 30s", Duration::from_secs(90)),
            ("2h30min", Duration::from_secs(9000)),
            ("1.5s", Duration::from_millis(1500)),
            (".5min", Duration::from_secs(30)),
            ("1d", Duration::from_secs(86_400)),
            ("10us", Duration::from_micros(10)),
            ("0", Duration::ZERO),
            ("infinity", TIMEOUT_INFINITY),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timespan(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn invalid_timespans_are_refused() {
        for text in [
            "",
            "s",
            "5x",
            "-5s",
            "1..2s",
            "5s garbage",
            "99999999999999999999999y",
        ] {
            assert_eq!(parse_timespan(text), None, "{text}");
        }
    }

    #[test]
    fn booleans_follow_systemd() {
        for yes in ["1", "yes", "Y", "true", "t", "ON"] {
            assert_eq!(parse_boolean(yes), Some(true), "{yes}");
        }
        for no in ["0", "no", "N", "false", "f", "Off"] {
            assert_eq!(parse_boolean(no), Some(false), "{no}");
        }
        assert_eq!(parse_boolean("maybe"), None);
    }

    #[test]
    fn a_unit_full_of_unknown_directives_gets_a_bounded_list_of_warnings() {
        let lines = "NoSuchDirective=1\n".repeat(1000);

        let cfg = config(&format!("[Service]\nExecStart=/bin/hello\n{lines}")).unwrap();

        assert_eq!(cfg.warnings.len(), MAX_WARNINGS_PER_UNIT + 1);
        assert!(
            cfg.warnings[MAX_WARNINGS_PER_UNIT].ends_with("950 more warnings not shown"),
            "{:?}",
            cfg.warnings.last()
        );
    }
}
