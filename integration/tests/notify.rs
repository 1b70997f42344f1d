//! `Type=notify` end to end through berthd: the unit is `starting` until its main process sends
//! READY=1 on `$NOTIFY_SOCKET`, then `running`, and `berth status` shows its STATUS= text.
//! Needs root and the `berth` user (scripts/setup-debian.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::{Harness, ImageBuilder};

const WAIT: Duration = Duration::from_secs(20);

/// Main (the shell, then the probe it becomes) says STATUS= at once, waits until the test
/// creates `/tmp/go` in its sandbox, then says READY=1 with a new STATUS=.
const UNIT: &str = "[Service]\nType=notify\n\
    ExecStart=/bin/sh -c '/usr/bin/berth-probe --notify \"STATUS=warming up\" --sleep 2; \
    until test -e /tmp/go; do sleep 0.1; done; \
    exec /usr/bin/berth-probe --notify \"READY=1\\nSTATUS=serving 3 clients\" --sleep 1000'\n\
    NotifyAccess=all\n";

fn harness() -> Harness {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("ready"))
        .probe()
        .unit("ready.service", UNIT)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "ready"]).unwrap();
    h
}

/// `berth start ready` without waiting for it (it returns once the unit is running).
fn start_in_background(h: &Harness) -> Child {
    h.berth_command(&["start", "ready"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn state(h: &Harness) -> String {
    h.status_json("ready").unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the unit is starting with its first STATUS= shown; returns its main pid.
fn wait_starting(h: &Harness) -> u32 {
    let mut main = None;
    h.wait_for(
        || {
            let st = h.status_json("ready")?;
            main = st["main_pid"].as_u64();
            Ok(st["status_text"] == "warming up" && main.is_some())
        },
        WAIT,
    )
    .unwrap();
    main.unwrap() as u32
}

/// Lets the service go on: `/tmp/go` in its sandbox (through its root as the host sees it).
fn let_it_be_ready(main: u32) {
    let go = PathBuf::from(format!("/proc/{main}/root/tmp/go"));
    std::fs::write(go, "").unwrap();
}

fn wait_child(mut child: Child) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn notify_unit_is_starting_until_ready_then_running() {
    let h = harness();
    let start = start_in_background(&h);
    let main = wait_starting(&h);

    // Sampled for a second: no READY=1 yet, so never running.
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        seen.push(state(&h));
        std::thread::sleep(Duration::from_millis(100));
    }
    let_it_be_ready(main);
    h.wait_for(|| Ok(state(&h) == "running"), WAIT).unwrap();

    assert!(seen.iter().all(|s| s == "starting"), "{seen:?}");
    assert_eq!(wait_child(start), Some(0));
}

#[test]
fn status_shows_the_services_status_text() {
    let h = harness();
    let start = start_in_background(&h);
    let main = wait_starting(&h);
    let_it_be_ready(main);
    h.wait_for(|| Ok(state(&h) == "running"), WAIT).unwrap();

    let json = h.status_json("ready").unwrap();
    let text = h.berth_ok(&["status", "ready"]).unwrap();

    assert_eq!(json["status_text"], "serving 3 clients");
    assert!(
        text.contains("    Status: \"serving 3 clients\"\n"),
        "{text}"
    );
    assert_eq!(wait_child(start), Some(0));
}
