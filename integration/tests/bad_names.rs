//! Every name a caller sends is checked for length and characters before berthd does anything
//! with it, and the error reply does not echo it: a hostile name costs a small, fast reply, and
//! the daemon keeps serving.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use berth_testkit::varlink_raw::{Caller, call_as};
use berth_testkit::{Harness, busybox_image};
use serde_json::{Value, json};

/// How long a refusal may take. A 1 MiB name took about 4 s per reply before names were
/// checked; a check takes microseconds.
const FAST: Duration = Duration::from_millis(500);
/// Largest refusal reply (bytes): the error and the parameter's name, nothing of the value.
const SMALL: usize = 200;

/// Names no method takes: too long for any name, just too long for a unit name, and with
/// bytes no name may hold.
fn bad_names() -> Vec<(&'static str, String)> {
    vec![
        // Below the 1 MiB parameters limit, so it reaches berthd's own checks.
        ("1 MiB", "a".repeat(1024 * 1024 - 100)),
        (
            "256 bytes",
            format!("{}.service", "a".repeat(256 - ".service".len())),
        ),
        ("5000 bytes", "a".repeat(5000)),
        ("a NUL", "a\0b.service".into()),
        ("a slash", "a/b.service".into()),
        ("a parent directory", "../../etc/passwd".into()),
        ("an escape", "a\u{1b}[31mb.service".into()),
        ("a newline", "a\nb.service".into()),
        ("empty", String::new()),
    ]
}

/// Each method's parameters with `name` as the name it takes, and that parameter.
fn calls(name: &str) -> Vec<(&'static str, Value, bool)> {
    let unit = json!({ "unit": name });
    let image = json!({ "image": name });
    vec![
        ("Status", unit.clone(), false),
        ("Start", unit.clone(), false),
        ("Stop", unit.clone(), false),
        ("Restart", unit.clone(), false),
        ("Logs", unit.clone(), false),
        ("Logs", json!({ "unit": name, "follow": false }), true),
        ("InspectImage", image.clone(), false),
        ("IsAttached", image.clone(), false),
        ("Detach", image.clone(), false),
        ("Attach", image, false),
        (
            "Attach",
            json!({ "image": "hello", "prefixes": [name] }),
            false,
        ),
        (
            "Attach",
            json!({ "image": "hello", "profile": name }),
            false,
        ),
    ]
}

/// The parameter a call's name is in.
fn parameter_of(parameters: &Value) -> &str {
    ["prefixes", "profile", "unit", "image"]
        .into_iter()
        .find(|p| parameters.get(p).is_some())
        .unwrap()
}

#[test]
fn every_method_refuses_a_bad_name_fast_with_a_small_reply_and_keeps_serving() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    let mut wrong = Vec::new();

    for (what, name) in bad_names() {
        for (method, parameters, more) in calls(&name) {
            let mut call =
                json!({ "method": format!("io.berth.Manager.{method}"), "parameters": parameters });
            if more {
                call["more"] = Value::Bool(true);
            }
            let started = Instant::now();
            let replies = call_as(
                &h.socket(),
                &Caller::ROOT,
                call.to_string().as_bytes(),
                10,
                Duration::from_secs(30),
            )
            .unwrap();
            let took = started.elapsed();
            let reply = replies[0].to_string();
            let expected = json!({
                "error": "org.varlink.service.InvalidParameter",
                "parameters": { "parameter": parameter_of(&parameters) },
            });
            if replies[0] != expected || reply.len() > SMALL || took > FAST {
                let shown: String = reply.chars().take(300).collect();
                wrong.push(format!(
                    "{method} with {what}: {took:?}, {} bytes: {shown}",
                    reply.len()
                ));
            }
        }
    }

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    h.berth_ok(&["attach", "hello"]).unwrap();
    assert_eq!(h.status_json("hello").unwrap()["unit"], "hello.service");
}

#[test]
fn unknown_methods_and_interfaces_with_huge_names_get_small_errors() {
    let h = Harness::start().unwrap();
    let huge = "A".repeat(2 * 1024 * 1024);
    let cases = [
        (
            format!("io.berth.Manager.{huge}"),
            "org.varlink.service.MethodNotFound",
        ),
        (
            format!("org.varlink.service.{huge}"),
            "org.varlink.service.MethodNotFound",
        ),
        (huge.clone(), "org.varlink.service.MethodNotFound"),
        (
            format!("io.{huge}.Method"),
            "org.varlink.service.InterfaceNotFound",
        ),
    ];

    for (method, error) in cases {
        let call = json!({ "method": method });
        let replies = call_as(
            &h.socket(),
            &Caller::ROOT,
            call.to_string().as_bytes(),
            1,
            Duration::from_secs(30),
        )
        .unwrap();

        let size = replies[0].to_string().len();
        assert_eq!(replies[0]["error"], error);
        assert!(size < 400, "{error}: {size} bytes");
    }
    h.berth_ok(&["list"]).unwrap();
}

#[test]
fn an_unknown_parameter_with_a_huge_name_gets_a_small_error() {
    let h = Harness::start().unwrap();
    let mut parameters = json!({ "unit": "hello" });
    parameters["p".repeat(1024 * 1024 - 100)] = json!(1);
    let call = json!({ "method": "io.berth.Manager.Status", "parameters": parameters });

    let replies = call_as(
        &h.socket(),
        &Caller::ROOT,
        call.to_string().as_bytes(),
        1,
        Duration::from_secs(30),
    )
    .unwrap();

    assert_eq!(replies[0]["error"], "org.varlink.service.InvalidParameter");
    assert!(
        replies[0].to_string().len() < 400,
        "{} bytes",
        replies[0].to_string().len()
    );
}

#[test]
fn the_interface_description_of_a_huge_name_is_a_small_error() {
    let h = Harness::start().unwrap();
    let call = json!({
        "method": "org.varlink.service.GetInterfaceDescription",
        "parameters": { "interface": "a".repeat(1024 * 1024 - 100) },
    });

    let replies = call_as(
        &h.socket(),
        &Caller::ROOT,
        call.to_string().as_bytes(),
        1,
        Duration::from_secs(30),
    )
    .unwrap();

    assert_eq!(replies[0]["error"], "org.varlink.service.InterfaceNotFound");
    assert!(replies[0].to_string().len() < 400);
}

#[test]
fn a_valid_name_of_nothing_is_still_no_such_unit() {
    let h = Harness::start().unwrap();
    let longest = "a".repeat(255 - ".service".len());

    let err = h.berth_err(&["status", &longest]).unwrap();

    assert!(err.contains("no attached unit"), "{err}");
}
