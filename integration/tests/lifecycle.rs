//! End to end: berthd's lifecycle across runs: what a unit's state, result and exit are after
//! a berthd restart, Restart= and the start rate limit, `berth kill`, `reload` and
//! `reset-failed`. An isolated berthd + berth-helper per test.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use berth_testkit::{Harness, ImageBuilder};

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

    h.kill_berthd().unwrap();
    h.start_berthd().unwrap();

    let after = h.status_json("broken").unwrap();
    assert_eq!(after["state"], "failed");
    assert_eq!(after["exit_code"], 3);
    assert_eq!(after["result"], "exit-code");
    assert_eq!(after["failure"], "main process exited with code 3");
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

#[test]
fn reload_of_a_stopped_unit_is_refused() {
    let h = with_unit("sleeper", "[Service]\nExecStart=/bin/sleep 1000\n");

    let err = h.berth_err(&["reload", "sleeper"]).unwrap();

    assert!(err.contains("not running"), "{err}");
}
