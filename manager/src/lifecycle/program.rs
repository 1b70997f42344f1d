//! The `ServiceProgram` of one run, built from the unit's `ServiceConfig`: everything the
//! supervisor needs to carry the run out alone (protocol/src/service_program.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_protocol::service_program::{Command, NotifyAccess, ServiceProgram, ServiceType};

use crate::unit::ServiceConfig;
use crate::unit::exec_command::ExecCommand;

/// Longest TimeoutStopSec= honoured (`infinity` included): after it the sandbox is SIGKILLed.
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);

/// `$MAINPID` is the sandbox init's to substitute when the command runs: berthd's expansion
/// leaves it as `$MAINPID`, whichever way the unit wrote it (`$MAINPID`, `${MAINPID}`).
const MAINPID: &str = "MAINPID";

/// The program of one run of `config`, its `$VAR`s expanded from `environment`.
pub fn build(config: &ServiceConfig, environment: &BTreeMap<String, String>) -> ServiceProgram {
    let mut expansion = environment.clone();
    expansion.insert(MAINPID.into(), format!("${MAINPID}"));
    let commands = |list: &[ExecCommand]| -> Vec<Command> {
        list.iter()
            .map(|c| Command {
                argv: c.expand(&expansion),
                ignore_failure: c.ignore_failure,
            })
            .collect()
    };
    let notify_access = config.notify_access.unwrap_or(match config.service_type {
        ServiceType::Notify => NotifyAccess::Main,
        _ => NotifyAccess::None,
    });
    ServiceProgram {
        service_type: config.service_type,
        exec_start_pre: commands(&config.exec_start_pre),
        exec_start: commands(&config.exec_start),
        exec_start_post: commands(&config.exec_start_post),
        exec_reload: commands(&config.exec_reload),
        exec_stop: commands(&config.exec_stop),
        exec_stop_post: commands(&config.exec_stop_post),
        pid_file: config.pid_file.clone(),
        remain_after_exit: config.remain_after_exit,
        timeout_start_ms: millis_or_none(config.timeout_start),
        // Never none: a service that ignores its stop is killed after an hour at the latest.
        timeout_stop_ms: millis(config.timeout_stop.min(MAX_STOP_TIMEOUT)),
        kill: config.kill.clone(),
        notify_access,
        watchdog_ms: millis_or_none(config.watchdog),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The program's "0 for none" for a span that is infinite (or zero, which systemd reads as
/// none for these); spans below a millisecond round up so they stay on.
fn millis_or_none(d: Duration) -> u64 {
    if d == crate::unit::TIMEOUT_INFINITY || d.is_zero() {
        0
    } else {
        millis(d).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::exec_command;

    fn config(unit: &str) -> ServiceConfig {
        crate::unit::from_unit("a.service", &crate::unit::parse(unit).unwrap()).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_list_is_expanded_but_mainpid_is_left_to_init() {
        let mut c = config("[Service]\nExecStart=/bin/sleep 1\n");
        c.exec_stop =
            vec![exec_command::parse("/bin/kill -TERM $MAINPID ${MAINPID} $WHO").unwrap()];
        c.exec_start_pre = vec![exec_command::parse("-/bin/echo ${WHO}").unwrap()];

        let p = build(&c, &env(&[("WHO", "me"), ("MAINPID", "1")]));

        assert_eq!(
            p.exec_stop[0].argv,
            ["/bin/kill", "-TERM", "$MAINPID", "$MAINPID", "me"]
        );
        assert_eq!(p.exec_start_pre[0].argv, ["/bin/echo", "me"]);
        assert!(p.exec_start_pre[0].ignore_failure);
        assert_eq!(p.exec_start[0].argv, ["/bin/sleep", "1"]);
    }

    #[test]
    fn notify_access_defaults_to_main_for_notify_only() {
        let mut c = config("[Service]\nExecStart=/bin/sleep 1\n");
        let simple = build(&c, &BTreeMap::new()).notify_access;
        c.service_type = ServiceType::Notify;
        let notify = build(&c, &BTreeMap::new()).notify_access;
        c.notify_access = Some(NotifyAccess::All);
        let explicit = build(&c, &BTreeMap::new()).notify_access;

        assert_eq!(simple, NotifyAccess::None);
        assert_eq!(notify, NotifyAccess::Main);
        assert_eq!(explicit, NotifyAccess::All);
    }

    #[test]
    fn timeouts_become_milliseconds_with_infinity_as_none_except_for_stop() {
        let mut c = config("[Service]\nExecStart=/bin/sleep 1\n");
        c.timeout_start = crate::unit::TIMEOUT_INFINITY;
        c.timeout_stop = crate::unit::TIMEOUT_INFINITY;
        c.watchdog = Duration::from_micros(1500);

        let p = build(&c, &BTreeMap::new());

        assert_eq!(p.timeout_start_ms, 0);
        assert_eq!(p.timeout_stop_ms, 3_600_000);
        assert_eq!(p.watchdog_ms, 1);
    }
}
