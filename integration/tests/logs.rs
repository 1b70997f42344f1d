//! End to end: a service's captured output through berthd and the CLI (`berth logs` and its
//! filters and formats, the drop count of a log that could not keep up). Needs root and the
//! `berth` user.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::frozen_disk::FrozenDisk;
use berth_testkit::{Harness, ImageBuilder};

const WAIT: Duration = Duration::from_secs(30);

/// Attaches image `name` with one service `name.service` running `script` (`sh -c`).
fn attach_script(h: &Harness, name: &str, service: &str) {
    let unit = format!("[Service]\n{service}\n");
    ImageBuilder::new(&h.images_dir().join(name))
        .unit(&format!("{name}.service"), &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", name]).unwrap();
}

#[test]
fn lines_dropped_behind_a_stalled_disk_are_shown_in_status() {
    let h = Harness::start().unwrap();
    // Waits, so the disk is frozen before it writes; then far more than the supervisor's queue.
    let pad = "x".repeat(90);
    attach_script(
        &h,
        "flood",
        &format!(
            "ExecStart=/bin/sh -c 'sleep 2; seq 1 30000 | sed \"s/$/ {pad}/\"; exec sleep 1000'"
        ),
    );
    let dir = h.state_dir().join("logs/flood.service");
    std::fs::create_dir_all(&dir).unwrap();
    let mut disk = FrozenDisk::mount_over(&dir).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["berth:berth", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    h.berth_ok(&["start", "flood"]).unwrap();
    disk.freeze().unwrap();

    let mut dropped = 0;
    let waited = h.wait_for(
        || {
            dropped = h.status_json("flood")?["log_dropped"].as_i64().unwrap_or(0);
            Ok(dropped > 0)
        },
        WAIT,
    );
    let status = h.berth(&["status", "flood"]).unwrap();
    let running = h.status_json("flood").unwrap()["state"].clone();
    disk.thaw().unwrap();
    h.berth_ok(&["stop", "flood"]).unwrap();

    waited.unwrap();
    assert_eq!(running, "running");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(" lines dropped (the log could not keep up)"),
        "{text}"
    );
}
