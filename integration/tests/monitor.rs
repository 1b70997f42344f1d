//! End to end: `berth monitor` streams every state change of every unit (varlink `Monitor`
//! with `more`), and a monitor that does not read holds nothing up. Needs root and the
//! `berth` user.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use berth_testkit::{Harness, busybox_image};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `berth monitor --json`, its lines parsed as they come.
fn monitor(h: &Harness) -> (Child, Receiver<Value>) {
    let mut child = h
        .berth_command(&["monitor", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(value) = serde_json::from_str(&line) else {
                break;
            };
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Events until one matches `done` (included), or panics after [`WAIT`].
fn events_until(rx: &Receiver<Value>, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no such event; saw {seen:?}"));
        let last = done(&event);
        seen.push(event);
        if last {
            return seen;
        }
    }
}

fn is(event: &Value, unit: &str, state: &str, changed: bool) -> bool {
    event["unit"] == unit && event["state"] == state && event["previous_state"].is_null() != changed
}

#[test]
fn monitor_streams_every_state_change_of_a_unit() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    let (mut child, rx) = monitor(&h);
    // The current states come first: from then on nothing is missed.
    events_until(&rx, |e| is(e, "hello.service", "stopped", false));

    h.berth_ok(&["start", "hello"]).unwrap();
    let pid = h.status_json("hello").unwrap()["main_pid"].clone();
    let started = events_until(&rx, |e| is(e, "hello.service", "running", true));
    h.berth_ok(&["stop", "hello"]).unwrap();
    let stopped = events_until(&rx, |e| is(e, "hello.service", "stopped", true));
    child.kill().unwrap();
    child.wait().unwrap();

    let running = started.last().unwrap();
    assert_eq!(running["main_pid"], pid);
    assert!(running["usec"].as_i64().unwrap() > 0);
    // Each event starts where the one before ended.
    let chain: Vec<&Value> = started.iter().chain(&stopped).collect();
    for pair in chain.windows(2) {
        assert_eq!(pair[1]["previous_state"], pair[0]["state"], "{chain:?}");
    }
    assert_ne!(stopped.last().unwrap()["previous_state"], "stopped");
}

#[test]
fn attaching_and_detaching_show_in_the_monitor() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    let (mut child, rx) = monitor(&h);
    // Time to subscribe (had it come after the attach, the unit would be in the current
    // states instead: the same event, so this is not what the test asserts on).
    std::thread::sleep(Duration::from_millis(500));

    h.berth_ok(&["attach", "hello"]).unwrap();
    events_until(&rx, |e| is(e, "hello.service", "stopped", false));
    h.berth_ok(&["detach", "hello"]).unwrap();
    let gone = events_until(&rx, |e| is(e, "hello.service", "detached", true));
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(gone.last().unwrap()["previous_state"], "stopped");
}

#[test]
fn a_monitor_that_does_not_read_holds_up_neither_berthd_nor_the_units() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    let (mut stalled, stalled_rx) = monitor(&h);
    events_until(&stalled_rx, |e| is(e, "hello.service", "stopped", false));
    let pid = stalled.id() as i32;
    // SAFETY: plain kill(2) of the monitor this test spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let (mut reader, rx) = monitor(&h);
    events_until(&rx, |e| is(e, "hello.service", "stopped", false));

    // Within the default start rate limit (5 starts in 10 s).
    for _ in 0..4 {
        h.berth_ok(&["start", "hello"]).unwrap();
        h.berth_ok(&["stop", "hello"]).unwrap();
    }
    let list = h.berth(&["list"]).unwrap();
    let last = events_until(&rx, |e| is(e, "hello.service", "stopped", true));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    stalled.wait().unwrap();
    reader.kill().unwrap();
    reader.wait().unwrap();

    assert!(list.status.success());
    assert!(!last.is_empty());
}
