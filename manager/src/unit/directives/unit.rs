//! `[Unit]` directives.

use super::super::syntax::Assignment;
use super::Builder;

impl Builder {
    pub(super) fn unit_directive(&mut self, a: &Assignment) {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

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
    fn ordering_and_install_directives_are_accepted_silently() {
        let text = "[Unit]\nDescription=x\nDocumentation=man:x\nAfter=network.target\n\
                    Before=y.service\nWants=a.service\nRequires=b.service\n\
                    [Service]\nExecStart=/bin/a\n\
                    [Install]\nWantedBy=multi-user.target\nAlias=z.service\n";

        let cfg = config(text).unwrap();

        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }
}
