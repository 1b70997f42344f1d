//! The directives berth reads, by section: [`from_unit_files`] walks a unit and its drop-ins
//! and hands each assignment to its section's table (`unit`, `service`, `install`; the
//! sandbox's directives are `sandbox`'s).
//!
//! Every line is accounted for: a directive is used, accepted as meaningless for a single
//! portable service, or reported in [`ServiceConfig::warnings`] with its line number. Nothing
//! is silently ignored (DESIGN §5). Directives that would loosen the sandbox never take
//! effect: berth's sandbox is always on and the profile decides it.

mod install;
pub mod sandbox;
mod service;
mod unit;

use std::collections::BTreeMap;
use std::time::Duration;

use berth_protocol::sandbox::SandboxSpec;

use super::model::{
    DEFAULT_RESTART_SEC, DEFAULT_START_LIMIT_BURST, DEFAULT_START_LIMIT_INTERVAL,
    DEFAULT_TIMEOUT_START, DEFAULT_TIMEOUT_STOP, Dependencies, KillPolicy, MAX_WARNINGS_PER_UNIT,
    NotifyAccess, RestartPolicy, ServiceConfig, ServiceConfigError, ServiceType, UnitIdentity,
    cap_warnings,
};
use super::specifiers::resolve_specifiers;
use super::syntax::{Assignment, UnitFile};

/// Longest piece of a hostile value quoted in a warning or error message.
const MAX_QUOTED_VALUE: usize = 80;

pub use sandbox::{Origin, profile_sandbox, sandbox_from};

/// Builds the service configuration of unit `name` from its parsed file.
pub fn from_unit(name: &str, unit: &UnitFile) -> Result<ServiceConfig, ServiceConfigError> {
    from_unit_files(name, &[(name, unit)])
}

/// Builds the service configuration of unit `name` from its file and its drop-ins, each with
/// the label its warnings and errors name it by (`hello.service`,
/// `hello.service.d/50-Environment.conf`). As systemd does, the drop-ins (in the order given:
/// lexical) are read as if appended to the file: a later assignment overrides, an empty one
/// resets a list, and a directive that would loosen the sandbox is ignored with a warning
/// wherever it appears. The sandbox starts from [`SandboxSpec::baseline`]; see
/// [`from_unit_files_over`].
pub fn from_unit_files(
    name: &str,
    files: &[(&str, &UnitFile)],
) -> Result<ServiceConfig, ServiceConfigError> {
    from_unit_files_over(name, files, &SandboxSpec::baseline(0, 0, ""))
}

/// [`from_unit_files`] over the sandbox `profile` gives (its identity is filled at each
/// start): `files[0]`, the image's unit file, then the rest, the host's drop-ins, each only
/// tighten it (see [`sandbox_from`]).
pub fn from_unit_files_over(
    name: &str,
    files: &[(&str, &UnitFile)],
    profile: &SandboxSpec,
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
            exec_start_pre: Vec::new(),
            exec_start: Vec::new(),
            exec_start_post: Vec::new(),
            exec_reload: Vec::new(),
            exec_stop: Vec::new(),
            exec_stop_post: Vec::new(),
            pid_file: None,
            remain_after_exit: false,
            environment: BTreeMap::new(),
            working_directory: None,
            timeout_stop: DEFAULT_TIMEOUT_STOP,
            timeout_start: DEFAULT_TIMEOUT_START,
            restart: RestartPolicy::default(),
            restart_sec: DEFAULT_RESTART_SEC,
            start_limit_interval: DEFAULT_START_LIMIT_INTERVAL,
            start_limit_burst: DEFAULT_START_LIMIT_BURST,
            kill: KillPolicy::default(),
            notify_access: None,
            watchdog: Duration::ZERO,
            dependencies: Dependencies::default(),
            identity: UnitIdentity::default(),
            sandbox: profile.clone(),
            warnings: Vec::new(),
        },
        source: name.to_owned(),
        image_users: crate::profile::uses_image_users(&profile.profile),
    };
    for (label, unit) in files {
        builder.source = (*label).to_owned();
        for section in unit.sections() {
            match section.name.as_str() {
                "Unit" => {
                    for a in &section.assignments {
                        builder.unit_directive(a)?;
                    }
                }
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
    let (sandbox, warnings) = sandbox_from(name, profile, files);
    config.sandbox = sandbox;
    config.warnings.extend(warnings);
    cap_warnings(&mut config.warnings, MAX_WARNINGS_PER_UNIT, name);
    // As systemd: a service that must notify gets its main process heard even when the unit
    // says NotifyAccess=none (or nothing).
    let must_notify = config.service_type == ServiceType::Notify || !config.watchdog.is_zero();
    if must_notify && matches!(config.notify_access, None | Some(NotifyAccess::None)) {
        config.notify_access = Some(NotifyAccess::Main);
    }
    // systemd refuses these too ("Service has Restart= set to either always or on-success").
    if config.service_type == ServiceType::Oneshot
        && matches!(
            config.restart,
            RestartPolicy::Always | RestartPolicy::OnSuccess
        )
    {
        return Err(ServiceConfigError::OneshotRestart {
            unit: name.to_owned(),
            restart: config.restart.as_str(),
        });
    }
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
    /// The profile runs the service as the image's own users: `User=` and the like apply.
    image_users: bool,
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

    fn invalid_value(&self, a: &Assignment, expected: &'static str) -> ServiceConfigError {
        ServiceConfigError::InvalidValue {
            unit: self.unit(),
            line: a.line,
            key: a.key.clone(),
            value: shorten(&a.value),
            expected,
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

#[cfg(test)]
mod test_support {
    use super::*;
    use crate::unit::syntax::parse;

    pub(super) fn config(text: &str) -> Result<ServiceConfig, ServiceConfigError> {
        from_unit("hello.service", &parse(text).unwrap())
    }

    pub(super) fn with_service(lines: &str) -> ServiceConfig {
        config(&format!("[Service]\nExecStart=/bin/hello\n{lines}")).unwrap()
    }

    pub(super) fn with_drop_in(
        main: &str,
        drop_in: &str,
    ) -> Result<ServiceConfig, ServiceConfigError> {
        let (main, drop_in) = (parse(main).unwrap(), parse(drop_in).unwrap());
        from_unit_files(
            "hello.service",
            &[
                ("hello.service", &main),
                ("hello.service.d/override.conf", &drop_in),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::unit::syntax::parse;

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
