//! Enabled units (`attach --enable`, `berth enable|disable`) and their start when berthd
//! starts at boot, in dependency order. A boot is what [`Harness::reboot`] does: every process
//! of the instance killed, the runtime directory emptied, berthd started again.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::{Harness, busybox_image, process_exists};
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
