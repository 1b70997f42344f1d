//! `[Install]` directives.

use super::super::syntax::Assignment;
use super::Builder;

impl Builder {
    pub(super) fn install_directive(&mut self, a: &Assignment) {
        match a.key.as_str() {
            // Installation (enablement) is berth's own attach/enable, not the unit's business.
            "WantedBy" | "RequiredBy" | "UpheldBy" | "Also" | "Alias" | "DefaultInstance" => {}
            key if key.starts_with("X-") => {}
            _ => self.warn_unknown(a, "Install"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn unknown_install_directive_warns() {
        let cfg = config("[Service]\nExecStart=/bin/a\n[Install]\nBogus=1\n").unwrap();

        assert_eq!(
            cfg.warnings,
            ["hello.service:4: [Install] Bogus= is an unknown directive, ignored"]
        );
    }
}
