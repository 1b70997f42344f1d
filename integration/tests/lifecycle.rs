//! End to end: berthd's lifecycle across runs: what a unit's state, result and exit are after
//! a berthd restart, Restart= and the start rate limit, `berth kill`, `reload` and
//! `reset-failed`. An isolated berthd + berth-helper per test.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder};

const WAIT: Duration = Duration::from_secs(20);

/// A harness with image `name` holding `name.service` = `unit`, attached.
fn with_unit(name: &str, unit: &str) -> Harness {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join(name))
        .unit(&format!("{name}.service"), unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", name]).unwrap();
    h
}

#[test]
fn a_finished_oneshot_is_still_exited_after_a_berthd_restart() {
    let mut h = with_unit("done", "[Service]\nType=oneshot\nExecStart=/bin/true\n");
    h.berth_ok(&["start", "done"]).unwrap();
    let before = h.status_json("done").unwrap();

    h.restart_berthd().unwrap();

    let after = h.status_json("done").unwrap();
    assert_eq!(after["state"], "exited");
    assert_eq!(after["exit_code"], 0);
    assert_eq!(after["result"], "success");
    assert_eq!(after["since_usec"], before["since_usec"]);
}

#[test]
fn a_failed_unit_keeps_its_exit_and_reason_across_a_berthd_kill() {
    let mut h = with_unit(
        "broken",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n",
    );
    h.berth_err(&["start", "broken"]).unwrap();
    let before = h.status_json("broken").unwrap();

    h.kill_berthd().unwrap();
    h.start_berthd().unwrap();

    let after = h.status_json("broken").unwrap();
    assert_eq!(after["state"], "failed");
    assert_eq!(after["exit_code"], 3);
    assert_eq!(after["result"], "exit-code");
    assert!(
        after["failure"]
            .as_str()
            .is_some_and(|f| f.contains("code 3")),
        "{after}"
    );
    assert_eq!(after["failure"], before["failure"]);
}

#[test]
fn reset_failed_makes_a_failed_unit_stopped_and_leaves_others_alone() {
    let h = with_unit(
        "broken",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n",
    );
    h.berth_err(&["start", "broken"]).unwrap();

    h.berth_ok(&["reset-failed", "broken"]).unwrap();

    let after = h.status_json("broken").unwrap();
    assert_eq!(after["state"], "stopped");
    assert_eq!(after["failure"], serde_json::Value::Null);
    let failed = h.berth(&["is-failed", "--quiet", "broken"]).unwrap();
    assert_eq!(failed.status.code(), Some(1));
}

#[test]
fn reset_failed_of_an_unknown_unit_says_so() {
    let h = with_unit("broken", "[Service]\nType=oneshot\nExecStart=/bin/true\n");

    let err = h.berth_err(&["reset-failed", "nosuch"]).unwrap();

    assert!(err.contains("nosuch"), "{err}");
}

/// A service that logs `got USR1` on SIGUSR1 and keeps running.
const USR1_TRAP: &str = "[Service]\nExecStart=/bin/sh -c 'trap \"echo got USR1\" USR1; \
                         echo ready; while true; do sleep 0.1; done'\n";

#[test]
fn kill_sends_the_signal_named_to_the_main_process() {
    let h = with_unit("trap", USR1_TRAP);
    h.berth_ok(&["start", "trap"]).unwrap();
    h.wait_for(|| Ok(log_of(&h, "trap").contains("ready")), WAIT)
        .unwrap();

    h.berth_ok(&["kill", "trap", "--signal", "SIGUSR1"])
        .unwrap();

    h.wait_for(|| Ok(log_of(&h, "trap").contains("got USR1")), WAIT)
        .unwrap();
    assert_eq!(h.status_json("trap").unwrap()["state"], "running");
    h.berth_ok(&["stop", "trap"]).unwrap();
}

#[test]
fn kill_without_a_signal_sends_sigterm_and_the_unit_ends() {
    let h = with_unit("sleeper", "[Service]\nExecStart=/bin/sleep 1000\n");
    h.berth_ok(&["start", "sleeper"]).unwrap();

    h.berth_ok(&["kill", "sleeper"]).unwrap();

    h.wait_for(|| Ok(h.status_json("sleeper")?["state"] != "running"), WAIT)
        .unwrap();
    assert_eq!(h.status_json("sleeper").unwrap()["exit_signal"], 15);
}

#[test]
fn kill_of_a_stopped_unit_and_a_bad_signal_are_refused() {
    let h = with_unit("sleeper", "[Service]\nExecStart=/bin/sleep 1000\n");

    let stopped = h.berth_err(&["kill", "sleeper"]).unwrap();
    let bad = h
        .berth_err(&["kill", "sleeper", "--signal", "SIGNOPE"])
        .unwrap();

    assert!(stopped.contains("not running"), "{stopped}");
    assert!(bad.contains("SIGNOPE"), "{bad}");
}

#[test]
fn reload_of_a_stopped_unit_is_refused() {
    let h = with_unit("sleeper", "[Service]\nExecStart=/bin/sleep 1000\n");

    let err = h.berth_err(&["reload", "sleeper"]).unwrap();

    assert!(err.contains("not running"), "{err}");
}

fn log_of(h: &Harness, unit: &str) -> String {
    h.berth(&["logs", unit])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// How many lines of `unit`'s log are exactly `line`.
fn count_lines(h: &Harness, unit: &str, line: &str) -> usize {
    log_of(h, unit)
        .lines()
        .filter(|l| l.ends_with(&format!(": {line}")))
        .count()
}

fn field(h: &Harness, unit: &str, key: &str) -> serde_json::Value {
    h.status_json(unit)
        .map(|s| s[key].clone())
        .unwrap_or_default()
}

#[test]
fn restart_always_restarts_a_crashing_service_with_a_new_pid_and_counts_it() {
    let h = with_unit(
        "crash",
        "[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nRestart=always\nRestartSec=0.2\n\
         ExecStart=/bin/sh -c 'echo run; sleep 0.5; exit 1'\n",
    );
    h.berth_ok(&["start", "crash"]).unwrap();
    let first_pid = field(&h, "crash", "main_pid");

    h.wait_for(
        || Ok(field(&h, "crash", "restarts").as_i64() >= Some(2)),
        WAIT,
    )
    .unwrap();
    h.wait_for(|| Ok(field(&h, "crash", "state") == "running"), WAIT)
        .unwrap();

    assert_ne!(field(&h, "crash", "main_pid"), first_pid);
    assert!(count_lines(&h, "crash", "run") >= 3);
    h.berth_ok(&["stop", "crash"]).unwrap();
    assert_eq!(field(&h, "crash", "state"), "stopped");
}

#[test]
fn restart_on_failure_leaves_a_clean_exit_alone() {
    let h = with_unit(
        "clean",
        "[Service]\nRestart=on-failure\nRestartSec=0.1\n\
         ExecStart=/bin/sh -c 'echo run; sleep 0.2; exit 0'\n",
    );
    h.berth_ok(&["start", "clean"]).unwrap();

    h.wait_for(|| Ok(field(&h, "clean", "state") == "exited"), WAIT)
        .unwrap();
    // Well past RestartSec=: a restart would have logged a second run by now.
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(field(&h, "clean", "state"), "exited");
    assert_eq!(field(&h, "clean", "restarts"), 0);
    assert_eq!(count_lines(&h, "clean", "run"), 1);
}

#[test]
fn restart_on_failure_restarts_after_a_failure() {
    let h = with_unit(
        "flaky",
        "[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nRestart=on-failure\nRestartSec=0.1\n\
         ExecStart=/bin/sh -c 'echo run; sleep 0.3; exit 2'\n",
    );
    h.berth_ok(&["start", "flaky"]).unwrap();

    h.wait_for(|| Ok(count_lines(&h, "flaky", "run") >= 2), WAIT)
        .unwrap();

    assert!(field(&h, "flaky", "restarts").as_i64() >= Some(1));
    h.berth_ok(&["stop", "flaky"]).unwrap();
}

#[test]
fn a_crash_loop_past_the_start_limit_is_failed_with_start_limit_hit_until_reset_failed() {
    let h = with_unit(
        "loop",
        "[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=3\n\n\
         [Service]\nRestart=always\nRestartSec=0\nExecStart=/bin/sh -c 'echo run; exit 1'\n",
    );
    let _ = h.berth(&["start", "loop"]).unwrap();

    h.wait_for(
        || Ok(field(&h, "loop", "result") == "start-limit-hit"),
        WAIT,
    )
    .unwrap();
    let status = h.status_json("loop").unwrap();
    let refused = h.berth_err(&["start", "loop"]).unwrap();
    h.berth_ok(&["reset-failed", "loop"]).unwrap();
    let reset = h.status_json("loop").unwrap();

    assert_eq!(status["state"], "failed");
    assert!(
        status["failure"].as_str().unwrap().contains("too quickly"),
        "{status}"
    );
    assert_eq!(count_lines(&h, "loop", "run"), 3);
    assert!(refused.contains("too quickly"), "{refused}");
    assert_eq!(reset["state"], "stopped");
    assert_eq!(reset["result"], serde_json::Value::Null);
    assert_eq!(reset["restarts"], 0);
}

#[test]
fn a_stop_cancels_a_pending_restart() {
    let h = with_unit(
        "later",
        "[Service]\nRestart=always\nRestartSec=3\nExecStart=/bin/sh -c 'echo run; exit 1'\n",
    );
    let _ = h.berth(&["start", "later"]).unwrap();
    h.wait_for(|| Ok(count_lines(&h, "later", "run") == 1), WAIT)
        .unwrap();
    h.wait_for(|| Ok(field(&h, "later", "state") == "starting"), WAIT)
        .unwrap();

    h.berth_ok(&["stop", "later"]).unwrap();
    // Past the RestartSec= the stop cancelled.
    std::thread::sleep(Duration::from_millis(3500));

    assert_eq!(count_lines(&h, "later", "run"), 1);
    assert_ne!(field(&h, "later", "state"), "starting");
    assert_eq!(field(&h, "later", "main_pid"), serde_json::Value::Null);
}

#[test]
fn an_exit_while_berthd_was_down_is_acted_on_by_the_restart_policy() {
    let mut h = with_unit(
        "brief",
        "[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nRestart=on-failure\nRestartSec=0.1\n\
         ExecStart=/bin/sh -c 'echo run; sleep 1; exit 7'\n",
    );
    h.berth_ok(&["start", "brief"]).unwrap();

    h.kill_berthd().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    h.start_berthd().unwrap();

    h.wait_for(|| Ok(count_lines(&h, "brief", "run") >= 2), WAIT)
        .unwrap();
    assert!(field(&h, "brief", "restarts").as_i64() >= Some(1));
    h.berth_ok(&["stop", "brief"]).unwrap();
}

/// A main shell and a child shell, each logging the USR1 it gets.
const TWO_TRAPS: &str = "[Service]\nExecStart=/bin/sh -c '\
    child() { trap \"echo child got USR1\" USR1; echo child ready; \
              while true; do sleep 0.1; done; }; child & \
    trap \"echo main got USR1\" USR1; echo main ready; while true; do sleep 0.1; done'\n";

#[test]
fn kill_whom_main_signals_the_main_process_only_and_all_every_process() {
    let h = with_unit("pair", TWO_TRAPS);
    h.berth_ok(&["start", "pair"]).unwrap();
    h.wait_for(
        || Ok(count_lines(&h, "pair", "main ready") + count_lines(&h, "pair", "child ready") == 2),
        WAIT,
    )
    .unwrap();

    h.berth_ok(&["kill", "pair", "--kill-whom", "main", "--signal", "USR1"])
        .unwrap();
    h.wait_for(|| Ok(count_lines(&h, "pair", "main got USR1") == 1), WAIT)
        .unwrap();
    // Time for the child's trap to run, had it been signalled too.
    std::thread::sleep(Duration::from_millis(700));
    let child_after_main = count_lines(&h, "pair", "child got USR1");
    h.berth_ok(&["kill", "pair", "--kill-whom", "all", "--signal", "USR1"])
        .unwrap();

    h.wait_for(|| Ok(count_lines(&h, "pair", "child got USR1") == 1), WAIT)
        .unwrap();
    assert_eq!(child_after_main, 0);
    h.wait_for(|| Ok(count_lines(&h, "pair", "main got USR1") == 2), WAIT)
        .unwrap();
    h.berth_ok(&["stop", "pair"]).unwrap();
}

#[test]
fn reload_runs_exec_reload_in_the_running_service() {
    let h = with_unit(
        "reloadable",
        "[Service]\nExecStart=/bin/sleep 1000\nExecReload=/bin/sh -c 'echo reloaded'\n",
    );
    h.berth_ok(&["start", "reloadable"]).unwrap();

    h.berth_ok(&["reload", "reloadable"]).unwrap();

    h.wait_for(|| Ok(count_lines(&h, "reloadable", "reloaded") == 1), WAIT)
        .unwrap();
    assert_eq!(field(&h, "reloadable", "state"), "running");
    h.berth_ok(&["stop", "reloadable"]).unwrap();
}
