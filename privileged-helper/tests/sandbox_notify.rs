//! `$NOTIFY_SOCKET` (sd_notify) of real sandboxes: the socket the service gets, what the
//! supervisor takes from it (STATUS=, ERRNO=, MAINPID=), whose messages count per
//! NotifyAccess=, and that a flood of them starves neither the control socket nor a stop.
//! The sender is berth-probe's `--notify` (built by `cargo build --workspace`). Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use std::time::{Duration, Instant};

use berth_helper::launch_spec::Launched;
use berth_protocol::sandbox::SandboxPath;
use berth_protocol::service_program::{Command, NotifyAccess, ServiceType};
use berth_protocol::supervisor::{Phase, SupervisorRequest, SupervisorStatus};
use berth_testkit::ImageBuilder;
use fixture::*;
use serde_json::Value;

const PROBE: &str = "/usr/bin/berth-probe";

fn probe_fixture(unit: &str) -> Fixture {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    ImageBuilder::new(dir.path()).probe().build().unwrap();
    Fixture::with_image(unit, dir)
}

/// Launches `argv` as a Type=notify service with `access`.
fn launch_notify(fx: &mut Fixture, access: NotifyAccess, argv: &[&str]) -> Launched {
    let mut spec = fx.spec(argv);
    spec.program.service_type = ServiceType::Notify;
    spec.program.notify_access = access;
    fx.try_launch_spec(&spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"))
}

/// Polls the supervisor until `done` holds for its status; returns that status.
fn status_until(
    fx: &Fixture,
    what: &str,
    done: impl Fn(&SupervisorStatus) -> bool,
) -> SupervisorStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = fx.request(&SupervisorRequest::Status);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The probe's report in the service's stdout.
fn report(fx: &Fixture) -> Value {
    let mut found = None;
    wait_until("the probe reports", || {
        found = fx
            .stdout_lines()
            .into_iter()
            .find(|l| l.contains("\"probe\":\"berth-probe\""));
        found.is_some()
    });
    serde_json::from_str(&found.unwrap()).unwrap()
}

/// berth's own notes in the service's log (stderr lines from the supervisor).
fn notes(fx: &Fixture) -> Vec<String> {
    fx.log_records()
        .into_iter()
        .map(|r| r.text)
        .filter(|t| t.starts_with("berth-supervise: "))
        .collect()
}

fn wait_for_note(fx: &Fixture, part: &str) -> String {
    let mut found = None;
    wait_until(&format!("a note with {part:?}"), || {
        found = notes(fx).into_iter().find(|n| n.contains(part));
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn notify_service_gets_a_socket_it_can_send_to() {
    let mut fx = probe_fixture("notify-env.service");

    launch_notify(
        &mut fx,
        NotifyAccess::Main,
        &[PROBE, "--notify", "READY=1", "--sleep", "100"],
    );

    let probe = report(&fx);
    assert_eq!(probe["environment"]["NOTIFY_SOCKET"], "/run/berth/notify");
    assert_eq!(probe["notify"], serde_json::json!(["sent"]));
}

#[test]
fn simple_service_without_notify_access_gets_no_socket() {
    let mut fx = probe_fixture("no-notify.service");
    let mut spec = fx.spec(&[PROBE, "--check-path", "/run/berth/notify", "--sleep", "100"]);
    spec.environment.push("NOTIFY_SOCKET=/run/elsewhere".into());

    fx.try_launch_spec(&spec).unwrap();

    let probe = report(&fx);
    assert_eq!(probe["visible"]["/run/berth/notify"], false);
    // berthd's value is passed on: the helper only replaces it when it has a socket.
    assert_eq!(probe["environment"]["NOTIFY_SOCKET"], "/run/elsewhere");
}

/// Launches a Type=notify shell script whose `/run` is read-only by `ReadOnlyPaths=path`.
fn launch_under_read_only(fx: &mut Fixture, path: &str) {
    let script = "touch /run/x 2>/dev/null || echo run-read-only; \
                  exec /usr/bin/berth-probe --notify STATUS=bound --sleep 100";
    let mut spec = fx.spec(&["/bin/sh", "-c", script]);
    spec.program.service_type = ServiceType::Notify;
    spec.program.notify_access = NotifyAccess::Main;
    spec.sandbox.mounts.read_only_paths = vec![SandboxPath {
        path: path.into(),
        ignore_missing: false,
    }];
    fx.try_launch_spec(&spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
}

#[test]
fn read_only_run_still_gets_the_socket_and_stays_read_only() {
    let mut fx = probe_fixture("notify-ro-run.service");

    launch_under_read_only(&mut fx, "/run");

    let status = status_until(&fx, "STATUS= shows", |s| s.status_text.is_some());
    assert_eq!(status.status_text.as_deref(), Some("bound"));
    fx.wait_for_stdout("run-read-only");
}

#[test]
fn read_only_root_still_gets_the_socket() {
    let mut fx = probe_fixture("notify-ro-root.service");

    launch_under_read_only(&mut fx, "/");

    let status = status_until(&fx, "STATUS= shows", |s| s.status_text.is_some());
    assert_eq!(status.status_text.as_deref(), Some("bound"));
    fx.wait_for_stdout("run-read-only");
}

#[test]
fn ready_sent_at_once_after_exec_makes_the_service_running() {
    let mut fx = probe_fixture("notify-ready.service");
    let mut spec = fx.spec(&[PROBE, "--notify", "READY=1", "--sleep", "100"]);
    spec.program.service_type = ServiceType::Notify;
    spec.program.notify_access = NotifyAccess::Main;
    // A command before main, so that main's pid reaches the supervisor just before its
    // READY=1 (they once were read in the wrong order and READY=1 was refused).
    spec.program.exec_start_pre = vec![Command {
        argv: vec!["/bin/true".into()],
        ignore_failure: false,
    }];

    fx.try_launch_spec(&spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));

    status_until(&fx, "READY=1 makes it running", |s| {
        s.phase == Phase::Running
    });
    assert!(notes(&fx).is_empty(), "{:?}", notes(&fx));
}

#[test]
fn status_text_shows_in_the_snapshot() {
    let mut fx = probe_fixture("notify-status.service");

    launch_notify(
        &mut fx,
        NotifyAccess::Main,
        &[
            PROBE,
            "--notify",
            "READY=1\\nSTATUS=serving 3 clients",
            "--sleep",
            "100",
        ],
    );

    let status = status_until(&fx, "STATUS= shows", |s| s.status_text.is_some());
    assert_eq!(status.status_text.as_deref(), Some("serving 3 clients"));
}

#[test]
fn status_text_change_is_sent_unasked() {
    let mut fx = probe_fixture("notify-push.service");
    // Main waits until we are connected, then speaks.
    launch_notify(
        &mut fx,
        NotifyAccess::Main,
        &[
            "/bin/sh",
            "-c",
            "sleep 1; exec /usr/bin/berth-probe --notify STATUS=pushed --sleep 100",
        ],
    );
    let mut control = fx.connect();
    control.request(&SupervisorRequest::Status);

    let mut pushed = control.read_status();
    while pushed.status_text.is_none() {
        pushed = control.read_status();
    }

    assert_eq!(pushed.status_text.as_deref(), Some("pushed"));
}

#[test]
fn errno_shows_in_the_snapshot() {
    let mut fx = probe_fixture("notify-errno.service");

    launch_notify(
        &mut fx,
        NotifyAccess::Main,
        &[PROBE, "--notify", "ERRNO=28", "--sleep", "100"],
    );

    let status = status_until(&fx, "ERRNO= shows", |s| s.notify_errno.is_some());
    assert_eq!(status.notify_errno, Some(28));
}

#[test]
fn main_pid_naming_a_process_of_the_service_becomes_main() {
    let mut fx = probe_fixture("mainpid-in.service");
    let script = "sleep 100 & exec /usr/bin/berth-probe --notify MAINPID=$! --sleep 100";

    let launched = launch_notify(&mut fx, NotifyAccess::Main, &["/bin/sh", "-c", script]);

    let status = status_until(&fx, "MAINPID= is taken", |s| {
        s.main_pid != Some(launched.main_pid)
    });
    let main = status.main_pid.unwrap();
    // The shell's `sleep &` (busybox runs the applet in the forked shell), whose parent is
    // the shell that became the probe.
    assert_eq!(
        ns_link(&main.to_string(), "pid"),
        ns_link(&launched.main_pid.to_string(), "pid")
    );
    assert_eq!(
        status_field(&proc_status(main), "PPid"),
        launched.main_pid.to_string()
    );
}

#[test]
fn main_pid_naming_a_host_process_is_refused() {
    let mut fx = probe_fixture("mainpid-out.service");
    // Our own pid exists on the host, not in the sandbox.
    let outside = format!("MAINPID={}", std::process::id());

    let launched = launch_notify(
        &mut fx,
        NotifyAccess::Main,
        &[
            PROBE,
            "--notify",
            &outside,
            "--notify",
            "STATUS=after",
            "--sleep",
            "100",
        ],
    );

    let note = wait_for_note(&fx, "refused MAINPID=");
    assert!(note.contains("no process of the service"), "{note}");
    let status = status_until(&fx, "the next message is read", |s| s.status_text.is_some());
    assert_eq!(status.main_pid, Some(launched.main_pid));
}

#[test]
fn main_pid_one_is_refused_as_berths_init() {
    let mut fx = probe_fixture("mainpid-init.service");

    let launched = launch_notify(
        &mut fx,
        NotifyAccess::Main,
        &[
            PROBE,
            "--notify",
            "MAINPID=1",
            "--notify",
            "STATUS=after",
            "--sleep",
            "100",
        ],
    );

    let note = wait_for_note(&fx, "refused MAINPID=1 ");
    assert!(note.contains("berth's init"), "{note}");
    let status = status_until(&fx, "the next message is read", |s| s.status_text.is_some());
    assert_eq!(status.main_pid, Some(launched.main_pid));
}

/// Main is `sleep`; its child, the probe, speaks.
const CHILD_SPEAKS: &str =
    "/usr/bin/berth-probe --notify STATUS=from-child --sleep 100 & exec sleep 100";

#[test]
fn notify_access_main_refuses_a_childs_message() {
    let mut fx = probe_fixture("access-main.service");

    launch_notify(
        &mut fx,
        NotifyAccess::Main,
        &["/bin/sh", "-c", CHILD_SPEAKS],
    );

    let note = wait_for_note(&fx, "NotifyAccess=main does not allow it");
    assert!(
        note.starts_with("berth-supervise: refused a notify message from pid"),
        "{note}"
    );
    report(&fx);
    assert_eq!(fx.request(&SupervisorRequest::Status).status_text, None);
}

#[test]
fn notify_access_all_accepts_a_childs_message() {
    let mut fx = probe_fixture("access-all.service");

    launch_notify(&mut fx, NotifyAccess::All, &["/bin/sh", "-c", CHILD_SPEAKS]);

    let status = status_until(&fx, "the child's STATUS= shows", |s| {
        s.status_text.is_some()
    });
    assert_eq!(status.status_text.as_deref(), Some("from-child"));
}

/// A Type=notify service whose ExecStartPre= speaks (and stays a moment, so that it is still
/// running when its message is read), with `access`.
fn launch_with_speaking_pre(fx: &mut Fixture, access: NotifyAccess) {
    let mut spec = fx.spec(&[PROBE, "--notify", "READY=1", "--sleep", "100"]);
    spec.program.service_type = ServiceType::Notify;
    spec.program.notify_access = access;
    spec.program.exec_start_pre = vec![Command {
        argv: [PROBE, "--notify", "STATUS=from-pre", "--sleep", "1"]
            .map(String::from)
            .to_vec(),
        ignore_failure: false,
    }];
    fx.try_launch_spec(&spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
}

#[test]
fn notify_access_exec_accepts_an_exec_command() {
    let mut fx = probe_fixture("access-exec.service");

    launch_with_speaking_pre(&mut fx, NotifyAccess::Exec);

    let status = status_until(&fx, "the ExecStartPre= STATUS= shows", |s| {
        s.status_text.is_some()
    });
    assert_eq!(status.status_text.as_deref(), Some("from-pre"));
}

#[test]
fn notify_access_main_refuses_an_exec_command() {
    let mut fx = probe_fixture("access-exec-main.service");

    launch_with_speaking_pre(&mut fx, NotifyAccess::Main);

    wait_for_note(&fx, "NotifyAccess=main does not allow it");
    status_until(&fx, "main is running", |s| s.phase == Phase::Running);
    assert_eq!(fx.request(&SupervisorRequest::Status).status_text, None);
}

#[test]
fn notify_access_none_refuses_even_main() {
    let mut fx = probe_fixture("access-none.service");

    launch_notify(
        &mut fx,
        NotifyAccess::None,
        &[PROBE, "--notify", "STATUS=main", "--sleep", "100"],
    );

    wait_for_note(&fx, "NotifyAccess=none does not allow it");
    assert_eq!(fx.request(&SupervisorRequest::Status).status_text, None);
}

#[test]
fn flood_of_messages_does_not_delay_requests_or_stop() {
    let mut fx = probe_fixture("flood.service");
    // Several senders, so that the socket's queue refills while the supervisor reads it.
    let flood = "for i in 1 2 3 4 5 6 7; do /usr/bin/berth-probe --notify-flood & done; \
                 exec /usr/bin/berth-probe --notify-flood";
    launch_notify(&mut fx, NotifyAccess::All, &["/bin/sh", "-c", flood]);
    status_until(&fx, "the flood is on", |s| s.status_text.is_some());

    let asked = Instant::now();
    fx.request(&SupervisorRequest::Status);
    let answered = asked.elapsed();
    let mut control = fx.connect();
    control.request(&SupervisorRequest::Stop { timeout_ms: 10_000 });
    let mut status = control.read_status();
    while status.exit.is_none() {
        status = control.read_status();
    }

    assert!(
        answered < Duration::from_secs(2),
        "status took {answered:?}"
    );
    assert_eq!(status.exit.unwrap().signal, Some(libc::SIGTERM));
}

#[test]
fn flood_of_status_changes_does_not_overrun_a_slow_client() {
    let mut fx = probe_fixture("flood-slow.service");
    launch_notify(&mut fx, NotifyAccess::Main, &[PROBE, "--notify-flood"]);
    let mut slow = fx.connect();
    slow.request(&SupervisorRequest::Status);

    // A client that reads nothing for a while (as a busy berthd may), then catches up: a
    // supervisor that queued a snapshot per message would have dropped it by then (past its
    // bound on unsent replies), and the reads below would meet the end of the connection.
    std::thread::sleep(Duration::from_secs(3));
    let reading = Instant::now();
    let mut last = slow.read_status();
    while reading.elapsed() < Duration::from_secs(1) {
        last = slow.read_status();
    }

    assert!(
        last.status_text
            .as_deref()
            .is_some_and(|t| t.starts_with("flood ")),
        "{last:?}"
    );
}
