//! `[Unit]` directives.

use berth_protocol::names::checked_unit_name;

use super::super::model::ServiceConfigError;
use super::super::syntax::{self, Assignment};
use super::{Builder, shorten};

/// Most names kept per dependency list; a hostile unit could list thousands.
const MAX_DEPENDENCIES: usize = 256;

impl Builder {
    pub(super) fn unit_directive(&mut self, a: &Assignment) -> Result<(), ServiceConfigError> {
        match a.key.as_str() {
            "Description" => {
                self.config.description = if a.value.is_empty() {
                    None
                } else {
                    Some(self.specifiers(a, "Unit", false))
                };
            }
            "After" | "Before" | "Requires" | "Wants" | "BindsTo" => self.dependency(a),
            "StartLimitIntervalSec" | "StartLimitInterval" => self.start_limit_interval(a)?,
            "StartLimitBurst" => self.start_limit_burst(a)?,
            // Documentation means nothing to run; the other relations between units have no
            // meaning for a portable service that berth starts on request or at boot among
            // attached units only (system targets, mounts), so they are accepted silently.
            "Documentation"
            | "Requisite"
            | "PartOf"
            | "Upholds"
            | "Conflicts"
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
        Ok(())
    }

    /// `After=`, `Before=`, `Requires=`, `Wants=`, `BindsTo=`: space-separated unit names,
    /// `.service` added to a name without a suffix. As in systemd, an empty assignment adds
    /// nothing (dependencies cannot be reset) and an invalid name is warned about and skipped.
    fn dependency(&mut self, a: &Assignment) {
        let words = match syntax::unquote_words(&a.value) {
            Ok(words) => words,
            Err(error) => {
                let what = format!("cannot be split into unit names ({error}), ignored");
                self.warn(a, "Unit", &what);
                return;
            }
        };
        for word in words {
            let (name, unresolved) =
                super::super::specifiers::resolve_specifiers(&word, &self.config.name, false);
            let Some(name) = dependency_name(&name).filter(|_| unresolved.is_empty()) else {
                let what = format!("{:?} is not a valid unit name, ignored", shorten(&word));
                self.warn(a, "Unit", &what);
                continue;
            };
            let deps = &mut self.config.dependencies;
            let list = match a.key.as_str() {
                "After" => &mut deps.after,
                "Before" => &mut deps.before,
                "Requires" => &mut deps.requires,
                "Wants" => &mut deps.wants,
                _ => &mut deps.binds_to,
            };
            if list.contains(&name) {
                continue;
            }
            if list.len() >= MAX_DEPENDENCIES {
                let what = format!("lists more than {MAX_DEPENDENCIES} units, the rest ignored");
                self.warn(a, "Unit", &what);
                return;
            }
            list.push(name);
        }
    }
}

/// A dependency's unit name, checked as every unit name berth takes (`hello` means
/// `hello.service`); a bare template (`foo@.service`) names no unit to depend on.
fn dependency_name(word: &str) -> Option<String> {
    let name = checked_unit_name(word).ok()?;
    let (stem, _) = name.rsplit_once('.')?;
    (!stem.ends_with('@')).then_some(name)
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
    "StartLimitAction",
    "RebootArgument",
    "SourcePath",
    "SurviveFinalKillSignal",
];

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::unit::syntax::parse;

    #[test]
    fn description_comes_from_the_unit_section() {
        let cfg =
            config("[Unit]\nDescription=Says hello\n[Service]\nExecStart=/bin/hello\n").unwrap();

        assert_eq!(cfg.description.as_deref(), Some("Says hello"));
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
    fn dependencies_are_unit_names_with_service_added_when_missing() {
        let text = "[Unit]\nAfter=db network.target\nAfter=cache.service db.service\n\
                    Before=web\nRequires=db\nWants=metrics@%i\nBindsTo=sock.socket\n\
                    [Service]\nExecStart=/bin/a\n";

        let cfg = crate::unit::from_unit("app@blue.service", &parse(text).unwrap()).unwrap();

        let deps = &cfg.dependencies;
        assert_eq!(
            deps.after,
            ["db.service", "network.target", "cache.service"]
        );
        assert_eq!(deps.before, ["web.service"]);
        assert_eq!(deps.requires, ["db.service"]);
        assert_eq!(deps.wants, ["metrics@blue.service"]);
        assert_eq!(deps.binds_to, ["sock.socket"]);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn an_empty_dependency_assignment_adds_nothing_and_resets_nothing() {
        let cfg = config("[Unit]\nAfter=a\nAfter=\n[Service]\nExecStart=/bin/a\n").unwrap();

        assert_eq!(cfg.dependencies.after, ["a.service"]);
    }

    #[test]
    fn an_invalid_dependency_name_is_warned_about_and_skipped() {
        let text = "[Unit]\nRequires=ok bad/name tmpl@ @x\n[Service]\nExecStart=/bin/a\n";

        let cfg = config(text).unwrap();

        assert_eq!(cfg.dependencies.requires, ["ok.service"]);
        assert_eq!(cfg.warnings.len(), 3, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].starts_with("hello.service:2: [Unit] Requires= \"bad/name\""));
    }

    #[test]
    fn start_limit_is_read_from_the_unit_section() {
        let text = "[Unit]\nStartLimitIntervalSec=1min\nStartLimitBurst=2\n\
                    [Service]\nExecStart=/bin/a\n";

        let cfg = config(text).unwrap();

        assert_eq!(cfg.start_limit_interval, std::time::Duration::from_secs(60));
        assert_eq!(cfg.start_limit_burst, 2);
    }

    #[test]
    fn start_limit_zero_interval_turns_it_off_and_bad_burst_is_an_error() {
        let off = config("[Unit]\nStartLimitInterval=0\n[Service]\nExecStart=/bin/a\n").unwrap();
        let bad = config("[Unit]\nStartLimitBurst=-1\n[Service]\nExecStart=/bin/a\n");

        assert_eq!(off.start_limit_interval, std::time::Duration::ZERO);
        assert!(matches!(
            bad,
            Err(crate::unit::ServiceConfigError::InvalidValue { line: 2, .. })
        ));
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
}
