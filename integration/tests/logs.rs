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

/// A oneshot `lines.service` that prints `a`, `b` and `c` a little apart, run to its end.
fn three_lines(h: &Harness) {
    attach_script(
        h,
        "lines",
        "Type=oneshot\nExecStart=/bin/sh -c 'echo a; sleep 0.05; echo b; sleep 0.05; echo c'",
    );
    h.berth_ok(&["start", "lines"]).unwrap();
}

/// `berth logs lines ARGS -o json`: each line's (MESSAGE, __REALTIME_TIMESTAMP).
fn json_logs(h: &Harness, args: &[&str]) -> Vec<(String, i64)> {
    let mut all = vec!["logs", "lines", "-o", "json"];
    all.extend_from_slice(args);
    h.berth_ok(&all)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let usec = v["__REALTIME_TIMESTAMP"].as_str().unwrap().parse().unwrap();
            (v["MESSAGE"].as_str().unwrap().to_string(), usec)
        })
        .collect()
}

fn messages(entries: &[(String, i64)]) -> Vec<&str> {
    entries.iter().map(|(m, _)| m.as_str()).collect()
}

/// `@SECONDS.MICROS` of an entry's timestamp, as --since/--until take it.
fn at(usec: i64) -> String {
    format!("@{}.{:06}", usec / 1_000_000, usec % 1_000_000)
}

#[test]
fn the_short_output_is_local_time_host_and_unit_as_journalctl_shows_it() {
    let h = Harness::start().unwrap();
    three_lines(&h);
    let today = std::process::Command::new("date")
        .arg("+%b %d")
        .output()
        .unwrap();
    let host = rustix::system::uname();

    let out = h.berth_ok(&["logs", "lines", "-n", "1"]).unwrap();

    let today = String::from_utf8_lossy(&today.stdout).trim().to_string();
    let host = host.nodename().to_string_lossy().into_owned();
    let line = out.lines().next().unwrap();
    assert!(line.starts_with(&format!("{today} ")), "{line}");
    assert!(
        line.ends_with(&format!(" {host} lines.service: c")),
        "{line}"
    );
}

#[test]
fn since_and_until_keep_the_lines_of_a_time_window() {
    let h = Harness::start().unwrap();
    three_lines(&h);
    let all = json_logs(&h, &[]);
    let b = all[1].1;

    let only_b = json_logs(&h, &["--since", &at(b), "--until", &at(b)]);
    let from_b = json_logs(&h, &["--since", &at(b)]);
    let to_b = json_logs(&h, &["--until", &at(b)]);
    let last_to_b = json_logs(&h, &["--until", &at(b), "-n", "1"]);
    let future = json_logs(&h, &["--since", "+1h"]);

    assert_eq!(messages(&all), ["a", "b", "c"]);
    assert_eq!(messages(&only_b), ["b"]);
    assert_eq!(messages(&from_b), ["b", "c"]);
    assert_eq!(messages(&to_b), ["a", "b"]);
    assert_eq!(messages(&last_to_b), ["b"]);
    assert!(future.is_empty());
}

#[test]
fn reverse_prints_the_newest_first() {
    let h = Harness::start().unwrap();
    three_lines(&h);

    let reversed = json_logs(&h, &["-r"]);
    let last_two = json_logs(&h, &["-r", "-n", "2"]);

    assert_eq!(messages(&reversed), ["c", "b", "a"]);
    assert_eq!(messages(&last_two), ["c", "b"]);
}

#[test]
fn a_time_berth_cannot_read_is_refused_naming_the_forms_it_takes() {
    let h = Harness::start().unwrap();
    three_lines(&h);

    let err = h
        .berth_err(&["logs", "lines", "--since", "soonish"])
        .unwrap();

    assert!(err.contains("\"soonish\" is not a time"), "{err}");
}
