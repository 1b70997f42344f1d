//! The log sockets of real sandboxes (`capture_log_sockets`): busybox's logger, which uses
//! syslog(3) on `/dev/log`, lands in the service's log with its priority and tag, also when
//! the unit's `/` is read-only; without the flag there is no `/dev/log`. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use berth_protocol::log_line::Stream;
use berth_protocol::sandbox::SandboxPath;
use fixture::*;

/// Runs `script` to its end, with the log sockets captured when `capture`.
fn run(fx: &mut Fixture, script: &str, capture: bool, read_only: Option<&str>) {
    let mut spec = fx.spec(&["/bin/sh", "-c", script]);
    spec.sandbox.capture_log_sockets = capture;
    if let Some(path) = read_only {
        spec.sandbox.mounts.read_only_paths = vec![SandboxPath {
            path: path.into(),
            ignore_missing: false,
        }];
    }
    fx.try_launch_spec(&spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
    fx.wait_exit();
}

/// Waits for the syslog record saying `text`; returns its (priority, identifier).
fn syslog_record(fx: &Fixture, text: &str) -> (Option<u8>, Option<String>) {
    let mut found = None;
    wait_until("the syslog record", || {
        found = fx
            .log_records()
            .into_iter()
            .find(|r| r.stream == Stream::Syslog && r.text == text);
        found.is_some()
    });
    let record = found.unwrap();
    (record.priority, record.identifier)
}

#[test]
fn a_syslog_message_lands_in_the_log_with_its_priority_and_tag() {
    require_root();
    let mut fx = Fixture::new("syslog.service");

    run(
        &mut fx,
        "logger -t food -p daemon.err 'it broke'; echo done",
        true,
        None,
    );

    assert_eq!(
        syslog_record(&fx, "it broke"),
        (Some(3), Some("food".into()))
    );
    assert_eq!(fx.stdout_lines(), ["done"]);
}

#[test]
fn a_read_only_root_still_gets_the_log_sockets() {
    require_root();
    let mut fx = Fixture::new("syslog-ro.service");

    run(
        &mut fx,
        "touch /run/x 2>/dev/null || echo read-only; logger -t ro -p user.warning 'still here'",
        true,
        Some("/"),
    );

    assert_eq!(
        syslog_record(&fx, "still here"),
        (Some(4), Some("ro".into()))
    );
    assert_eq!(fx.stdout_lines(), ["read-only"]);
}

#[test]
fn without_capture_there_is_no_dev_log() {
    require_root();
    let mut fx = Fixture::new("no-syslog.service");

    run(
        &mut fx,
        "test -e /dev/log || echo no-dev-log; test -e /run/systemd/journal/socket || echo no-journal",
        false,
        None,
    );

    assert_eq!(fx.stdout_lines(), ["no-dev-log", "no-journal"]);
}

#[test]
fn a_unit_whose_run_is_inaccessible_starts_without_them_and_the_log_says_so() {
    require_root();
    let mut fx = Fixture::new("syslog-no-run.service");
    let mut spec = fx.spec(&["/bin/sh", "-c", "echo started"]);
    spec.sandbox.capture_log_sockets = true;
    spec.sandbox.mounts.inaccessible_paths = vec![SandboxPath {
        path: "/run".into(),
        ignore_missing: false,
    }];

    fx.try_launch_spec(&spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
    fx.wait_exit();

    let records = fx.log_records();
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    assert!(texts.contains(&"started"), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("berth-supervise: could not make ")
                && t.contains("/run/systemd/journal/dev-log")),
        "{texts:?}"
    );
}
