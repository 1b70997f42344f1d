//! Starting at boot: which units are enabled ([`enable`]), the order their start jobs run in
//! ([`boot_order`], pure), carrying that order out when berthd starts ([`boot_start`]), and
//! what berthd takes from the service manager that runs it ([`service_manager`]).

pub mod boot_order;
pub mod boot_start;
mod enable;
pub mod service_manager;

pub use boot_start::start_enabled;

use berth_protocol::names::{is_template, template_of};

/// The units `attach --enable` enables: all of them but templates.
pub fn enableable(units: &[String]) -> Vec<String> {
    units.iter().filter(|u| !is_template(u)).cloned().collect()
}

/// Of the units enabled before, those still attached (`units`): what attaching the same image
/// again, or reattaching it, keeps enabled.
pub fn still_enabled(enabled: &[String], units: &[String]) -> Vec<String> {
    enabled
        .iter()
        .filter(|u| units.contains(u) || template_of(u).is_some_and(|t| units.contains(&t)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn attach_enable_leaves_templates_out() {
        let units = names(&["a.service", "t@.service"]);

        assert_eq!(enableable(&units), names(&["a.service"]));
    }

    #[test]
    fn attaching_again_keeps_the_enabled_units_still_there_and_their_instances() {
        let enabled = names(&["a.service", "gone.service", "t@x.service", "u@y.service"]);
        let units = names(&["a.service", "t@.service"]);

        assert_eq!(
            still_enabled(&enabled, &units),
            names(&["a.service", "t@x.service"])
        );
    }
}
