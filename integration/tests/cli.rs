//! The `berth` CLI against a real berthd: hostile text is escaped for people and exact in JSON,
//! and the CLI keeps systemctl's conventions (exit codes, `is-active`/`is-failed`, `--quiet`,
//! `--no-legend`, several units per verb, a closed pipe). Needs root and the `berth` user.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use berth_testkit::{Harness, ImageBuilder, busybox_image};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// What the hostile service prints first: a colour change, a bell, a carriage return.
const HOSTILE_LINE: &str = "\x1b[31mred\x07\rover";
/// Its second line: not valid UTF-8.
const INVALID_LINE: &[u8] = b"bad\xffbyte";
/// Its unit's description: sets the terminal title.
const HOSTILE_DESCRIPTION: &str = "\x1b]0;owned\x07 title";

/// The raw bytes no human output may carry.
const RAW: [u8; 3] = [0x1b, 0x07, b'\r'];

/// Fails when `bytes` (what berth printed for a person) holds a raw ESC, BEL or CR.
fn assert_no_raw_control(bytes: &[u8]) {
    assert!(
        !bytes.iter().any(|b| RAW.contains(b)),
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// A harness with image `hostile` attached: a oneshot whose description and output carry
/// terminal escapes, already run so its output is in the log.
fn hostile_harness() -> Harness {
    let h = Harness::start().unwrap();
    let unit = format!(
        "[Unit]\nDescription={HOSTILE_DESCRIPTION}\n\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh /hostile.sh\n"
    );
    ImageBuilder::new(&h.images_dir().join("hostile"))
        .file(
            "hostile.sh",
            "printf '\\033[31mred\\007\\rover\\n'\nprintf 'bad\\377byte\\n'\n",
            0o644,
        )
        .unit("hostile.service", &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "hostile"]).unwrap();
    h.berth_ok(&["start", "hostile"]).unwrap();
    h.wait_for(
        || Ok(h.berth_ok(&["logs", "hostile"])?.contains("byte")),
        WAIT,
    )
    .unwrap();
    h
}

/// Every JSON line of `berth logs -o json`.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn logs_short_escapes_control_characters() {
    let h = hostile_harness();

    let out = h.berth(&["logs", "hostile"]).unwrap();

    assert!(out.status.success());
    assert_no_raw_control(&out.stdout);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("hostile.service: \\x1b[31mred\\x07\\x0dover"),
        "{text}"
    );
}

#[test]
fn logs_cat_escapes_control_characters() {
    let h = hostile_harness();

    let out = h.berth(&["logs", "hostile", "-o", "cat"]).unwrap();

    assert_no_raw_control(&out.stdout);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "\\x1b[31mred\\x07\\x0dover\nbad\\xffbyte\n"
    );
}

#[test]
fn logs_json_keeps_the_exact_text() {
    let h = hostile_harness();

    let output = h.berth_ok(&["logs", "hostile", "-o", "json"]).unwrap();
    let global = h.berth_ok(&["--json", "logs", "hostile"]).unwrap();

    assert_eq!(json_lines(&output)[0]["MESSAGE"], HOSTILE_LINE);
    assert_eq!(json_lines(&global)[0]["MESSAGE"], HOSTILE_LINE);
}

#[test]
fn logs_json_carries_the_exact_bytes_of_invalid_utf8() {
    let h = hostile_harness();

    let output = h.berth_ok(&["logs", "hostile", "-o", "json"]).unwrap();

    // As journalctl's: MESSAGE is an array of the bytes when they are not UTF-8.
    let line = &json_lines(&output)[1];
    let bytes: Vec<u8> = serde_json::from_value(line["MESSAGE"].clone()).unwrap();
    assert_eq!(bytes, INVALID_LINE);
}

#[test]
fn status_escapes_the_description_and_the_log_lines() {
    let h = hostile_harness();

    let out = h.berth(&["status", "hostile"]).unwrap();

    assert_no_raw_control(&out.stdout);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("hostile.service - \\x1b]0;owned\\x07 title"),
        "{text}"
    );
    assert!(text.contains("\\x1b[31mred"), "{text}");
}

#[test]
fn status_json_keeps_the_exact_description() {
    let h = hostile_harness();

    let out = h.berth(&["--json", "status", "hostile"]).unwrap();

    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["description"], HOSTILE_DESCRIPTION);
}

#[test]
fn image_list_and_inspect_escape_the_pretty_name() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("pretty"))
        .os_release("ID=test\nPRETTY_NAME=\"\x1b[2Jwiped\x1b[0m\"\n")
        .unit("pretty.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();

    let list = h.berth(&["image", "list"]).unwrap();
    let inspect = h.berth(&["image", "inspect", "pretty", "--cat"]).unwrap();
    let json = h.berth_json(&["image", "list"]).unwrap();

    for out in [&list, &inspect] {
        assert!(out.status.success(), "{out:?}");
        assert_no_raw_control(&out.stdout);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\\x1b[2Jwiped"), "{text}");
    }
    assert_eq!(json[0]["pretty_name"], "\x1b[2Jwiped\x1b[0m");
}

#[test]
fn attach_warnings_are_escaped() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nExecStart=/bin/true\nBogus\x1b[2J=1\n";
    ImageBuilder::new(&h.images_dir().join("warns"))
        .unit("warns.service", unit)
        .build()
        .unwrap();

    let out = h.berth(&["attach", "warns"]).unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("berth: warning:"), "{stderr}");
    assert_no_raw_control(&out.stderr);
}

#[test]
fn error_lines_escape_the_names_they_echo() {
    let h = Harness::start().unwrap();

    let out = h.berth(&["start", "\x1b]0;owned\x07"]).unwrap();

    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("berth: "), "{stderr}");
    assert_no_raw_control(&out.stderr);
}

/// Attaches busybox images named `names` (each with unit `<name>.service`, a long sleep).
fn harness_with(names: &[&str]) -> Harness {
    let h = Harness::start().unwrap();
    for name in names {
        busybox_image(&h.images_dir(), name).unwrap();
        h.berth_ok(&["attach", name]).unwrap();
    }
    h
}

#[test]
fn status_exits_0_while_the_unit_runs_and_3_once_it_is_stopped() {
    let h = harness_with(&["a"]);
    h.berth_ok(&["start", "a"]).unwrap();

    let running = h.berth(&["status", "a"]).unwrap();
    h.berth_ok(&["stop", "a"]).unwrap();
    let stopped = h.berth(&["status", "a"]).unwrap();
    let stopped_json = h.berth(&["--json", "status", "a"]).unwrap();

    assert_eq!(running.status.code(), Some(0));
    assert_eq!(stopped.status.code(), Some(3));
    assert_eq!(stopped_json.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("State: stopped"));
}

#[test]
fn status_of_a_missing_unit_exits_4() {
    let h = harness_with(&[]);

    let out = h.berth(&["status", "nosuch"]).unwrap();

    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("berth: ") && stderr.contains("nosuch.service"),
        "{stderr}"
    );
}

#[test]
fn a_bad_unit_name_reads_as_one_line_for_a_person() {
    let h = harness_with(&[]);

    let out = h.berth(&["status", "bad/name"]).unwrap();

    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "berth: invalid unit name\n"
    );
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn is_active_prints_each_state_and_exits_0_when_one_is_active() {
    let h = harness_with(&["a", "b"]);
    h.berth_ok(&["start", "a"]).unwrap();

    let some = h.berth(&["is-active", "a", "b", "nosuch"]).unwrap();
    let none = h.berth(&["is-active", "b", "nosuch"]).unwrap();

    assert_eq!(some.status.code(), Some(0));
    assert_eq!(stdout_of(&some), "active\ninactive\ninactive\n");
    assert_eq!(none.status.code(), Some(3));
    assert_eq!(stdout_of(&none), "inactive\ninactive\n");
}

#[test]
fn is_active_quiet_prints_nothing() {
    let h = harness_with(&["a"]);
    h.berth_ok(&["start", "a"]).unwrap();

    let active = h.berth(&["is-active", "--quiet", "a"]).unwrap();
    let inactive = h.berth(&["is-active", "-q", "nosuch"]).unwrap();

    assert_eq!(active.status.code(), Some(0));
    assert_eq!(inactive.status.code(), Some(3));
    assert!(active.stdout.is_empty() && inactive.stdout.is_empty());
    assert!(active.stderr.is_empty() && inactive.stderr.is_empty());
}

#[test]
fn is_failed_exits_0_only_when_one_has_failed() {
    let h = harness_with(&["a"]);
    ImageBuilder::new(&h.images_dir().join("broken"))
        .unit(
            "broken.service",
            "[Service]\nType=oneshot\nExecStart=/bin/false\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "broken"]).unwrap();
    h.berth_ok(&["start", "a"]).unwrap();
    let _ = h.berth(&["start", "broken"]).unwrap();

    let some = h.berth(&["is-failed", "a", "broken"]).unwrap();
    let none = h.berth(&["is-failed", "a", "nosuch"]).unwrap();
    let quiet = h.berth(&["is-failed", "--quiet", "broken"]).unwrap();

    assert_eq!(some.status.code(), Some(0));
    assert_eq!(stdout_of(&some), "active\nfailed\n");
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(stdout_of(&none), "active\ninactive\n");
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stdout.is_empty());
}

#[test]
fn tables_have_a_header_and_footer_that_no_legend_leaves_out() {
    let h = harness_with(&["a", "b"]);

    let list = h.berth_ok(&["list"]).unwrap();
    let bare = h.berth_ok(&["list", "--no-legend"]).unwrap();
    let images = h.berth_ok(&["--no-legend", "image", "list"]).unwrap();

    assert!(
        list.starts_with("UNIT ") && list.ends_with("\n2 units listed.\n"),
        "{list}"
    );
    let rows: Vec<&str> = bare.lines().collect();
    assert_eq!(rows.len(), 2, "{bare}");
    assert!(rows[0].starts_with("a.service ") && rows[1].starts_with("b.service "));
    assert_eq!(images.lines().count(), 2, "{images}");
    assert!(
        !images.contains("NAME") && !images.contains("listed"),
        "{images}"
    );
}

#[test]
fn start_of_several_units_starts_every_one_and_reports_every_failure() {
    let h = harness_with(&["a", "c"]);

    let out = h
        .berth(&["start", "a", "missing1", "c", "missing2"])
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("berth: ") && lines[0].contains("missing1.service"));
    assert!(lines[1].starts_with("berth: ") && lines[1].contains("missing2.service"));
    let list = h.berth_json(&["list"]).unwrap();
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "running"]);
}

#[test]
fn stop_of_several_units_stops_the_others_past_a_missing_one() {
    let h = harness_with(&["a", "c"]);
    h.berth_ok(&["start", "a", "c"]).unwrap();

    let out = h.berth(&["stop", "missing", "a", "c"]).unwrap();

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(h.status_json("a").unwrap()["state"], "stopped");
    assert_eq!(h.status_json("c").unwrap()["state"], "stopped");
}

/// Runs `berth ARGS` with stdout a pipe whose reading end is already closed, as after
/// `| head` has exited; returns its output (stdout empty) after it exits.
fn berth_into_closed_pipe(h: &Harness, args: &[&str]) -> Result<Output> {
    let (reader, writer) = rustix::pipe::pipe()?;
    drop(reader);
    let mut child = h
        .berth_command(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + WAIT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            bail!(
                "berth {} still runs writing into a closed pipe",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

fn assert_quiet_exit(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn list_into_a_closed_pipe_exits_quietly() {
    let h = harness_with(&["a"]);

    let out = berth_into_closed_pipe(&h, &["list"]).unwrap();

    assert_quiet_exit(&out);
}

#[test]
fn logs_into_a_closed_pipe_exits_quietly() {
    let h = harness_with(&["a"]);
    h.berth_ok(&["start", "a"]).unwrap();
    h.wait_for(|| Ok(h.berth_ok(&["logs", "a"])?.contains("hello")), WAIT)
        .unwrap();

    let once = berth_into_closed_pipe(&h, &["logs", "a"]).unwrap();
    let follow = berth_into_closed_pipe(&h, &["logs", "-f", "a"]).unwrap();

    assert_quiet_exit(&once);
    assert_quiet_exit(&follow);
}
