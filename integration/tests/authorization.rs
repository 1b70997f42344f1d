//! Who may call what: reading state is open to every local user; logs only to root, the admin
//! group and the log group (as journald's); changing state only to root and the admin group.
//! Calls are made raw, from connections with real uids and groups.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::varlink_raw::{Caller, call_as};
use berth_testkit::{Harness, busybox_image};
use serde_json::{Value, json};

/// Most replies read from one call: enough for each (a follower's stream has no end).
const MAX_REPLIES: usize = 50;
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the service gets to print its line.
const WAIT: Duration = Duration::from_secs(10);

/// Host groups the tests use: `staff` as the admin group, `adm` as the log group (the default).
const ADMIN_GID: u32 = 50;
const LOG_GID: u32 = 4;

/// The line busybox_image's service prints.
const LOGGED: &str = "hello from hello";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Root,
    Admin,
    LogReader,
    Other,
}

fn callers() -> Vec<(&'static str, Class, Caller)> {
    let caller = |uid, gid, groups: &[u32]| Caller {
        uid,
        gid,
        groups: groups.to_vec(),
    };
    vec![
        ("root", Class::Root, Caller::ROOT),
        (
            "admin (supplementary)",
            Class::Admin,
            caller(65533, 65533, &[ADMIN_GID]),
        ),
        (
            "admin (primary gid)",
            Class::Admin,
            caller(65530, ADMIN_GID, &[]),
        ),
        (
            "log reader (supplementary)",
            Class::LogReader,
            caller(65532, 65532, &[LOG_GID]),
        ),
        (
            "log reader (primary gid)",
            Class::LogReader,
            caller(65531, LOG_GID, &[]),
        ),
        ("other user", Class::Other, caller(65534, 65534, &[100])),
    ]
}

/// What a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Past authorization (a reply, or an error other than PermissionDenied).
    Allowed,
    Denied,
    MethodNotFound,
}

fn outcome(replies: &[Value]) -> Outcome {
    match replies[0]["error"].as_str() {
        Some("io.berth.Manager.PermissionDenied") => Outcome::Denied,
        Some("org.varlink.service.MethodNotFound") => Outcome::MethodNotFound,
        _ => Outcome::Allowed,
    }
}

/// Who reads logs: root, the admin group and the log group.
fn reads_logs(class: Class) -> bool {
    class != Class::Other
}

/// Who changes state: root and the admin group.
fn changes(class: Class) -> bool {
    matches!(class, Class::Root | Class::Admin)
}

struct Case {
    name: &'static str,
    call: Value,
    max_replies: usize,
    expected: fn(Class) -> Outcome,
}

fn allowed_if(yes: bool) -> Outcome {
    if yes {
        Outcome::Allowed
    } else {
        Outcome::Denied
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "Logs",
            call: json!({"method": "io.berth.Manager.Logs", "parameters": {"unit": "hello", "lines": 5}}),
            max_replies: MAX_REPLIES,
            expected: |c| allowed_if(reads_logs(c)),
        },
        Case {
            name: "Logs with more",
            call: json!({"method": "io.berth.Manager.Logs", "parameters": {"unit": "hello", "follow": false}, "more": true}),
            max_replies: MAX_REPLIES,
            expected: |c| allowed_if(reads_logs(c)),
        },
        Case {
            // Its first reply holds the existing lines; the stream then goes on.
            name: "Logs with more, following",
            call: json!({"method": "io.berth.Manager.Logs", "parameters": {"unit": "hello", "lines": 5}, "more": true}),
            max_replies: 1,
            expected: |c| allowed_if(reads_logs(c)),
        },
        Case {
            name: "Status",
            call: json!({"method": "io.berth.Manager.Status", "parameters": {"unit": "hello"}}),
            max_replies: MAX_REPLIES,
            expected: |_| Outcome::Allowed,
        },
        Case {
            name: "List",
            call: json!({"method": "io.berth.Manager.List"}),
            max_replies: MAX_REPLIES,
            expected: |_| Outcome::Allowed,
        },
        Case {
            name: "ListImages",
            call: json!({"method": "io.berth.Manager.ListImages"}),
            max_replies: MAX_REPLIES,
            expected: |_| Outcome::Allowed,
        },
        Case {
            name: "IsAttached",
            call: json!({"method": "io.berth.Manager.IsAttached", "parameters": {"image": "hello"}}),
            max_replies: MAX_REPLIES,
            expected: |_| Outcome::Allowed,
        },
        Case {
            // Answers NotAttached to those allowed: a change that changes nothing.
            name: "Detach",
            call: json!({"method": "io.berth.Manager.Detach", "parameters": {"image": "nothing"}}),
            max_replies: MAX_REPLIES,
            expected: |c| allowed_if(changes(c)),
        },
        Case {
            // Answers NotAttached (or NoSuchImage) to those allowed: a change that changes nothing.
            name: "Reattach",
            call: json!({"method": "io.berth.Manager.Reattach", "parameters": {"image": "nothing"}}),
            max_replies: MAX_REPLIES,
            expected: |c| allowed_if(changes(c)),
        },
        Case {
            name: "Stop (of no unit)",
            call: json!({"method": "io.berth.Manager.Stop", "parameters": {"unit": "nothing"}}),
            max_replies: MAX_REPLIES,
            expected: |c| allowed_if(changes(c)),
        },
        Case {
            name: "an unknown method",
            call: json!({"method": "io.berth.Manager.NoSuchMethod", "parameters": {}}),
            max_replies: MAX_REPLIES,
            expected: |_| Outcome::MethodNotFound,
        },
    ]
}

/// A harness (admin group `staff`, default log group) running `hello`, which has logged.
fn harness_with_a_logging_service(config: &str) -> Harness {
    let h = Harness::start_with_config(config).unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    h.wait_for(
        || Ok(h.berth_ok(&["logs", "hello"])?.contains(LOGGED)),
        WAIT,
    )
    .unwrap();
    h
}

#[test]
fn each_caller_gets_exactly_the_methods_its_groups_allow() {
    let h = harness_with_a_logging_service("admin_group = \"staff\"\n");
    let mut wrong = Vec::new();

    for (who, class, caller) in callers() {
        for case in cases() {
            let replies = call_as(
                &h.socket(),
                &caller,
                case.call.to_string().as_bytes(),
                case.max_replies,
                CALL_TIMEOUT,
            )
            .unwrap();
            let got = outcome(&replies);
            let expected = (case.expected)(class);
            if got != expected {
                wrong.push(format!(
                    "{who}, {}: expected {expected:?}, got {:?}",
                    case.name, replies[0]
                ));
            }
            let logged = replies.iter().any(|r| r.to_string().contains(LOGGED));
            if case.name.starts_with("Logs") && logged != (got == Outcome::Allowed) {
                wrong.push(format!("{who}, {}: log lines shown: {logged}", case.name));
            }
        }
    }

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_log_group_missing_on_the_host_leaves_logs_to_root_and_the_admin_group() {
    let h = harness_with_a_logging_service(
        "admin_group = \"staff\"\nlog_group = \"no-such-group-here\"\n",
    );
    let logs = json!({"method": "io.berth.Manager.Logs", "parameters": {"unit": "hello"}});
    let as_caller = |caller: &Caller| {
        outcome(
            &call_as(
                &h.socket(),
                caller,
                logs.to_string().as_bytes(),
                MAX_REPLIES,
                CALL_TIMEOUT,
            )
            .unwrap(),
        )
    };

    let adm_member = as_caller(&Caller {
        uid: 65532,
        gid: 65532,
        groups: vec![LOG_GID],
    });
    let admin = as_caller(&Caller {
        uid: 65533,
        gid: 65533,
        groups: vec![ADMIN_GID],
    });

    assert_eq!((adm_member, admin), (Outcome::Denied, Outcome::Allowed));
}

#[test]
fn an_unknown_method_is_not_found_for_an_unprivileged_caller() {
    let h = Harness::start().unwrap();
    let nobody = Caller {
        uid: 65534,
        gid: 65534,
        groups: vec![],
    };

    let replies = call_as(
        &h.socket(),
        &nobody,
        br#"{"method":"io.berth.Manager.Reboot","parameters":{}}"#,
        1,
        CALL_TIMEOUT,
    )
    .unwrap();

    assert_eq!(replies[0]["error"], "org.varlink.service.MethodNotFound");
    assert_eq!(
        replies[0]["parameters"]["method"],
        "io.berth.Manager.Reboot"
    );
}

#[test]
fn status_shows_log_lines_only_to_those_who_may_read_logs() {
    let h = harness_with_a_logging_service("admin_group = \"staff\"\n");

    let other = h.berth_as(65534, 65534, &[], &["status", "hello"]).unwrap();
    let reader = h
        .berth_as(65532, 65532, &[LOG_GID], &["status", "hello"])
        .unwrap();

    let other_out = String::from_utf8_lossy(&other.stdout);
    let reader_out = String::from_utf8_lossy(&reader.stdout);
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(
        other_out.contains("State: running") && !other_out.contains(LOGGED),
        "{other_out}"
    );
    assert!(
        reader_out.contains("State: running") && reader_out.contains(LOGGED),
        "{reader_out}"
    );
}

#[test]
fn logs_are_refused_to_another_user_with_a_clear_error() {
    let h = harness_with_a_logging_service("admin_group = \"staff\"\n");

    let out = h.berth_as(65534, 65534, &[], &["logs", "hello"]).unwrap();

    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("permission denied: Logs needs root, the admin group or the log group"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(LOGGED));
}

#[test]
fn log_files_on_disk_are_readable_by_the_reader_groups_only() {
    let h = harness_with_a_logging_service("admin_group = \"staff\"\n");
    let log = h.state_dir().join("logs/hello.service/current.log");
    let cat_as = |uid, gid, groups: &[u32]| {
        let mut cmd = berth_testkit::as_user(uid, gid, groups);
        cmd.arg("cat").arg(&log);
        berth_testkit::harness::output_with_timeout(cmd, CALL_TIMEOUT).unwrap()
    };

    let reader = cat_as(65532, 65532, &[LOG_GID]);
    let admin = cat_as(65533, 65533, &[ADMIN_GID]);
    let other = cat_as(65534, 65534, &[100]);

    assert!(
        reader.status.success() && String::from_utf8_lossy(&reader.stdout).contains(LOGGED),
        "{}",
        String::from_utf8_lossy(&reader.stderr)
    );
    assert!(
        admin.status.success(),
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );
    assert!(!other.status.success() && other.stdout.is_empty());
}
