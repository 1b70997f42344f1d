//! Enabled units (`attach --enable`, `berth enable|disable`) and their start when berthd
//! starts at boot, in dependency order. A boot is what [`Harness::reboot`] does: every process
//! of the instance killed, the runtime directory emptied, berthd started again.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder, busybox_image, process_exists};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn enabled(h: &Harness, unit: &str) -> Value {
    h.status_json(unit).unwrap()["enabled"].clone()
}

fn state(h: &Harness, unit: &str) -> String {
    h.status_json(unit).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_state(h: &Harness, unit: &str, want: &str) {
    h.wait_for(|| Ok(state(h, unit) == want), WAIT)
        .unwrap_or_else(|e| panic!("{unit} never {want}: {e:#}"));
}

/// An image `name` with the one unit `name.service` holding `unit`.
fn image(h: &Harness, name: &str, unit: &str) {
    ImageBuilder::new(&h.images_dir().join(name))
        .unit(&format!("{name}.service"), unit)
        .build()
        .unwrap();
}

/// The time (microseconds) of the log line of `unit` that holds `text` (`logs -o json`: one
/// object per line, with journald's field names).
fn logged_at(h: &Harness, unit: &str, text: &str) -> i64 {
    let out = h.berth_ok(&["logs", "-o", "json", unit]).unwrap();
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["MESSAGE"].as_str().is_some_and(|t| t.contains(text)))
        .unwrap_or_else(|| panic!("no '{text}' in the log of {unit}: {out}"))
        ["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap()
}

#[test]
fn attach_enable_enables_the_units_and_they_stay_stopped_until_boot() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    h.berth_ok(&["attach", "--enable", "hello"]).unwrap();

    assert_eq!(enabled(&h, "hello"), true);
    assert_eq!(state(&h, "hello"), "stopped");
}

#[test]
fn a_unit_attached_without_enable_is_not_enabled() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    h.berth_ok(&["attach", "hello"]).unwrap();

    assert_eq!(enabled(&h, "hello"), false);
}

#[test]
fn enable_and_disable_change_the_record_and_survive_a_berthd_restart() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "one").unwrap();
    busybox_image(&h.images_dir(), "two").unwrap();
    h.berth_ok(&["attach", "one"]).unwrap();
    h.berth_ok(&["attach", "--enable", "two"]).unwrap();

    let said = h.berth_ok(&["enable", "one"]).unwrap();
    h.berth_ok(&["disable", "two"]).unwrap();
    h.restart_berthd().unwrap();

    assert!(said.contains("Enabled one.service"), "{said}");
    assert_eq!(enabled(&h, "one"), true);
    assert_eq!(enabled(&h, "two"), false);
}

#[test]
fn attaching_an_image_again_keeps_its_units_enabled() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "--enable", "hello"]).unwrap();

    h.berth_ok(&["attach", "hello"]).unwrap();

    assert_eq!(enabled(&h, "hello"), true);
}

#[test]
fn enable_of_a_missing_unit_fails_and_the_others_are_still_enabled() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    let out = h.berth(&["enable", "nosuch", "hello"]).unwrap();

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
    assert_eq!(enabled(&h, "hello"), true);
}

#[test]
fn enable_now_starts_the_unit_and_disable_now_stops_it() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    h.berth_ok(&["enable", "--now", "hello"]).unwrap();
    let running = state(&h, "hello");
    h.berth_ok(&["disable", "--now", "hello"]).unwrap();

    assert_eq!(running, "running");
    assert_eq!(state(&h, "hello"), "stopped");
    assert_eq!(enabled(&h, "hello"), false);
}

#[test]
fn enabled_units_start_at_boot_and_the_others_do_not() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "on").unwrap();
    busybox_image(&h.images_dir(), "off").unwrap();
    h.berth_ok(&["attach", "--enable", "on"]).unwrap();
    h.berth_ok(&["attach", "off"]).unwrap();

    h.reboot().unwrap();

    wait_state(&h, "on", "running");
    let pid = h.status_json("on").unwrap()["main_pid"].as_u64().unwrap();
    assert!(process_exists(pid as u32));
    assert_eq!(state(&h, "off"), "stopped");
}

#[test]
fn a_berthd_restart_within_the_boot_leaves_a_stopped_enabled_unit_stopped() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "on").unwrap();
    h.berth_ok(&["attach", "--enable", "on"]).unwrap();
    h.reboot().unwrap();
    wait_state(&h, "on", "running");
    h.berth_ok(&["stop", "on"]).unwrap();

    h.restart_berthd().unwrap();
    // Long enough for a boot start to have begun its job.
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(state(&h, "on"), "stopped");
    assert!(
        h.stderr_log().contains("started at this boot already"),
        "{}",
        h.stderr_log()
    );
}

#[test]
fn a_running_enabled_unit_is_readopted_at_a_restart_not_started_twice() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "on").unwrap();
    h.berth_ok(&["attach", "--enable", "on"]).unwrap();
    h.reboot().unwrap();
    wait_state(&h, "on", "running");
    let pid = h.status_json("on").unwrap()["main_pid"].clone();

    // Killed before it recorded the boot start: the next berthd does the transaction again.
    h.kill_berthd().unwrap();
    std::fs::remove_file(h.runtime_dir().join("boot-started")).unwrap_or_default();
    h.start_berthd().unwrap();

    wait_state(&h, "on", "running");
    assert_eq!(h.status_json("on").unwrap()["main_pid"], pid);
}

#[test]
fn boot_start_runs_the_jobs_in_after_order() {
    let mut h = Harness::start().unwrap();
    // zeta first, then mid, then alpha: against the order of their names.
    image(
        &h,
        "zeta",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'sleep 0.5; echo zeta done'\n",
    );
    image(
        &h,
        "mid",
        "[Unit]\nAfter=zeta.service\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'echo mid start; sleep 0.5; echo mid done'\n",
    );
    image(
        &h,
        "alpha",
        "[Unit]\nAfter=mid\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo alpha start'\n",
    );
    for name in ["alpha", "mid", "zeta"] {
        h.berth_ok(&["attach", "--enable", name]).unwrap();
    }

    h.reboot().unwrap();

    for name in ["alpha", "mid", "zeta"] {
        wait_state(&h, name, "exited");
    }
    assert!(logged_at(&h, "zeta", "zeta done") <= logged_at(&h, "mid", "mid start"));
    assert!(logged_at(&h, "mid", "mid done") <= logged_at(&h, "alpha", "alpha start"));
}

#[test]
fn before_orders_a_job_ahead_of_another() {
    let mut h = Harness::start().unwrap();
    image(
        &h,
        "late",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo late start'\n",
    );
    image(
        &h,
        "early",
        "[Unit]\nBefore=late.service\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'sleep 0.5; echo early done'\n",
    );
    h.berth_ok(&["attach", "--enable", "late"]).unwrap();
    h.berth_ok(&["attach", "--enable", "early"]).unwrap();

    h.reboot().unwrap();

    wait_state(&h, "late", "exited");
    assert!(logged_at(&h, "early", "early done") <= logged_at(&h, "late", "late start"));
}

#[test]
fn a_unit_requiring_one_that_fails_is_not_started_and_one_wanting_it_is() {
    let mut h = Harness::start().unwrap();
    image(
        &h,
        "broken",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n",
    );
    image(
        &h,
        "needy",
        "[Unit]\nRequires=broken.service\nAfter=broken.service\n\
         [Service]\nExecStart=/bin/sh -c 'echo needy ran; exec sleep 1000'\n",
    );
    image(
        &h,
        "easy",
        "[Unit]\nWants=broken.service\nAfter=broken.service\n\
         [Service]\nExecStart=/bin/sh -c 'exec sleep 1000'\n",
    );
    // broken is pulled in by the others; it is not enabled itself.
    h.berth_ok(&["attach", "broken"]).unwrap();
    h.berth_ok(&["attach", "--enable", "needy"]).unwrap();
    h.berth_ok(&["attach", "--enable", "easy"]).unwrap();

    h.reboot().unwrap();

    wait_state(&h, "easy", "running");
    wait_state(&h, "broken", "failed");
    assert_eq!(state(&h, "needy"), "stopped");
    assert!(
        h.stderr_log().contains("dependency failed"),
        "{}",
        h.stderr_log()
    );
}

#[test]
fn a_unit_requiring_one_not_attached_is_not_started() {
    let mut h = Harness::start().unwrap();
    image(
        &h,
        "orphan",
        "[Unit]\nRequires=nowhere.service\n[Service]\nExecStart=/bin/sleep 1000\n",
    );
    busybox_image(&h.images_dir(), "fine").unwrap();
    h.berth_ok(&["attach", "--enable", "orphan"]).unwrap();
    h.berth_ok(&["attach", "--enable", "fine"]).unwrap();

    h.reboot().unwrap();

    wait_state(&h, "fine", "running");
    assert_eq!(state(&h, "orphan"), "stopped");
    assert!(
        h.stderr_log().contains("nowhere.service"),
        "{}",
        h.stderr_log()
    );
}

#[test]
fn an_ordering_cycle_is_broken_with_a_warning_and_the_rest_starts() {
    let mut h = Harness::start().unwrap();
    image(
        &h,
        "ping",
        "[Unit]\nAfter=pong.service\n[Service]\nExecStart=/bin/sleep 1000\n",
    );
    image(
        &h,
        "pong",
        "[Unit]\nAfter=ping.service\n[Service]\nExecStart=/bin/sleep 1000\n",
    );
    h.berth_ok(&["attach", "--enable", "ping"]).unwrap();
    h.berth_ok(&["attach", "--enable", "pong"]).unwrap();

    h.reboot().unwrap();

    // The walk enters at ping (by name) and closes the cycle at pong, whose job goes.
    wait_state(&h, "ping", "running");
    assert_eq!(state(&h, "pong"), "stopped");
    assert!(
        h.stderr_log().contains("ordering cycle"),
        "{}",
        h.stderr_log()
    );
}

#[test]
fn an_enabled_instance_of_a_template_starts_at_boot_and_the_template_cannot_be_enabled() {
    let mut h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("greet"))
        .unit(
            "greet@.service",
            "[Service]\nExecStart=/bin/sh -c 'echo hello %i; exec sleep 1000'\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "--enable", "greet"]).unwrap();

    let refused = h.berth_err(&["enable", "greet@"]).unwrap();
    h.berth_ok(&["enable", "greet@world"]).unwrap();
    h.reboot().unwrap();

    assert!(refused.contains("template"), "{refused}");
    wait_state(&h, "greet@world", "running");
    assert_eq!(enabled(&h, "greet@world"), true);
    h.wait_for(
        || {
            Ok(h.berth_ok(&["logs", "greet@world"])?
                .contains("hello world"))
        },
        WAIT,
    )
    .unwrap();
}

#[test]
fn enable_and_disable_need_root_or_the_admin_group() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    let enable = h.berth_as(65534, 65534, &[], &["enable", "hello"]).unwrap();
    h.berth_ok(&["enable", "hello"]).unwrap();
    let disable = h
        .berth_as(65534, 65534, &[], &["disable", "hello"])
        .unwrap();

    for out in [&enable, &disable] {
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    }
    assert_eq!(enabled(&h, "hello"), true);
}
