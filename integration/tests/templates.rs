//! Templates end to end: `web@.service` attached, its instances started by name with their
//! specifiers resolved, followed by status, stop, logs and list; a bare template refused.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder, process_exists};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// Prints the instance specifiers it was started with, then sleeps.
const TEMPLATE: &str = "[Unit]\nDescription=web instance %i\n\n\
    [Service]\n\
    ExecStart=/bin/sh -c 'echo i=%i I=%I n=%n N=%N p=%p P=%P j=%j J=%J f=%f; exec sleep 1000'\n";

/// A harness with image `web` attached, whose only unit is the template `web@.service`.
fn attached_template() -> Harness {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("web"))
        .unit("web@.service", TEMPLATE)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "web"]).unwrap();
    h
}

/// The line the instance printed, once it is in its log.
fn specifier_line(h: &Harness, unit: &str) -> String {
    let mut line = String::new();
    h.wait_for(
        || {
            let logs = h.berth_ok(&["logs", unit, "-o", "cat"])?;
            line = logs
                .lines()
                .find(|l| l.starts_with("i="))
                .unwrap_or_default()
                .to_owned();
            Ok(!line.is_empty())
        },
        WAIT,
    )
    .unwrap();
    line
}

fn listed(h: &Harness) -> Vec<(String, String)> {
    let list = h.berth_json(&["list"]).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let field = |k: &str| u[k].as_str().unwrap_or_default().to_owned();
            (field("unit"), field("state"))
        })
        .collect()
}

fn pid(status: &Value) -> u32 {
    u32::try_from(status["main_pid"].as_u64().unwrap()).unwrap()
}

#[test]
fn two_instances_run_with_their_own_specifiers() {
    let h = attached_template();

    h.berth_ok(&["start", "web@blue"]).unwrap();
    h.berth_ok(&["start", "web@a-b.service"]).unwrap();

    let blue = h.status_json("web@blue").unwrap();
    let other = h.status_json("web@a-b").unwrap();
    assert_eq!(blue["state"], "running");
    assert_eq!(other["state"], "running");
    assert_eq!(blue["description"], "web instance blue");
    assert_ne!(pid(&blue), pid(&other));
    assert_eq!(
        specifier_line(&h, "web@blue"),
        "i=blue I=blue n=web@blue.service N=web@blue p=web P=web j=web J=web f=/blue"
    );
    assert_eq!(
        specifier_line(&h, "web@a-b.service"),
        "i=a-b I=a/b n=web@a-b.service N=web@a-b p=web P=web j=web J=web f=/a/b"
    );
    h.berth_ok(&["stop", "web@blue", "web@a-b"]).unwrap();
}

#[test]
fn instances_are_listed_while_they_have_a_state_to_show() {
    let h = attached_template();
    h.berth_ok(&["start", "web@blue"]).unwrap();
    h.berth_ok(&["start", "web@green"]).unwrap();
    let blue = pid(&h.status_json("web@blue").unwrap());

    h.berth_ok(&["stop", "web@blue"]).unwrap();

    assert!(!process_exists(blue));
    assert_eq!(h.status_json("web@blue").unwrap()["state"], "stopped");
    assert_eq!(
        listed(&h),
        [
            ("web@.service".to_owned(), "stopped".to_owned()),
            ("web@green.service".to_owned(), "running".to_owned())
        ]
    );
    // Its log outlives it.
    assert!(specifier_line(&h, "web@blue").starts_with("i=blue "));
    h.berth_ok(&["stop", "web@green"]).unwrap();
}

#[test]
fn an_instance_never_started_is_stopped_and_one_of_no_template_does_not_exist() {
    let h = attached_template();

    let never = h.status_json("web@never").unwrap();
    let out = h.berth(&["status", "nothere@x"]).unwrap();

    assert_eq!(never["state"], "stopped");
    assert!(never["main_pid"].is_null());
    assert_eq!(out.status.code(), Some(4));
    h.berth_ok(&["stop", "web@never"]).unwrap();
}

#[test]
fn a_bare_template_is_refused() {
    let h = attached_template();

    for name in ["web@", "web@.service"] {
        let err = h.berth_err(&["start", name]).unwrap();

        assert!(
            err.contains("web@.service is a template and cannot be started")
                && err.contains("web@NAME.service"),
            "{name}: {err}"
        );
    }
    let template = h.status_json("web@.service").unwrap();
    assert_eq!(template["state"], "stopped");
    assert!(template["main_pid"].is_null());
}

#[test]
fn a_running_instance_is_adopted_after_a_berthd_restart() {
    let mut h = attached_template();
    h.berth_ok(&["start", "web@blue"]).unwrap();
    let before = pid(&h.status_json("web@blue").unwrap());

    h.restart_berthd().unwrap();

    h.wait_for(
        || Ok(h.status_json("web@blue")?["state"] == "running"),
        WAIT,
    )
    .unwrap();
    assert_eq!(pid(&h.status_json("web@blue").unwrap()), before);
    h.berth_ok(&["stop", "web@blue"]).unwrap();
    assert!(!process_exists(before));
}

#[test]
fn detach_now_stops_the_instances_too() {
    let h = attached_template();
    h.berth_ok(&["start", "web@blue"]).unwrap();
    let blue = pid(&h.status_json("web@blue").unwrap());

    h.berth_ok(&["detach", "web", "--now"]).unwrap();

    assert!(!process_exists(blue));
    assert_eq!(
        h.berth(&["status", "web@blue"]).unwrap().status.code(),
        Some(4)
    );
    assert!(listed(&h).is_empty());
}

#[test]
fn a_templates_drop_in_applies_to_its_instances() {
    let h = attached_template();
    h.berth_ok(&["set-property", "web@.service", "Description=edited %i"])
        .unwrap();

    h.berth_ok(&["start", "web@blue"]).unwrap();

    assert_eq!(
        h.status_json("web@blue").unwrap()["description"],
        "edited blue"
    );
    h.berth_ok(&["stop", "web@blue"]).unwrap();
}

#[test]
fn attach_now_starts_the_units_and_leaves_a_template_alone() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("web"))
        .unit("web@.service", TEMPLATE)
        .unit("web-main.service", &TEMPLATE.replace("%i", "main"))
        .build()
        .unwrap();

    h.berth_ok(&["attach", "--now", "web"]).unwrap();

    assert_eq!(h.status_json("web-main").unwrap()["state"], "running");
    assert_eq!(h.status_json("web@.service").unwrap()["state"], "stopped");
    h.berth_ok(&["stop", "web-main"]).unwrap();
}

#[test]
fn reattach_to_a_version_without_the_template_stops_its_instances() {
    let h = Harness::start().unwrap();
    let dir = h.dir().join("versions");
    let v1 = ImageBuilder::new(&dir.join("web_1"))
        .unit("web@.service", TEMPLATE)
        .build()
        .unwrap();
    let v2 = ImageBuilder::new(&dir.join("web_2"))
        .unit("web-new@.service", TEMPLATE)
        .build()
        .unwrap();
    h.berth_ok(&["attach", v1.to_str().unwrap()]).unwrap();
    h.berth_ok(&["start", "web@blue"]).unwrap();
    let blue = pid(&h.status_json("web@blue").unwrap());

    let reply = h
        .berth_json(&["reattach", "--now", v2.to_str().unwrap()])
        .unwrap();

    assert_eq!(
        reply["removed"],
        serde_json::json!(["web@.service", "web@blue.service"])
    );
    assert_eq!(reply["added"], serde_json::json!(["web-new@.service"]));
    assert!(!process_exists(blue));
    assert_eq!(
        listed(&h),
        [("web-new@.service".to_owned(), "stopped".to_owned())]
    );
}

#[test]
fn an_instance_the_image_ships_a_file_for_runs_that_file() {
    let h = Harness::start().unwrap();
    let own = "[Service]\nExecStart=/bin/sh -c 'echo i=own-file; exec sleep 1000'\n";
    ImageBuilder::new(&h.images_dir().join("web"))
        .unit("web@.service", TEMPLATE)
        .unit("web@fixed.service", own)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "web"]).unwrap();

    h.berth_ok(&["start", "web@fixed"]).unwrap();

    assert_eq!(specifier_line(&h, "web@fixed"), "i=own-file");
    let cat = h.berth_ok(&["cat", "web@fixed"]).unwrap();
    assert!(cat.contains("echo i=own-file"), "{cat}");
    h.berth_ok(&["stop", "web@fixed"]).unwrap();
    assert!(
        listed(&h).contains(&("web@fixed.service".to_owned(), "stopped".to_owned())),
        "an attached unit stays listed"
    );
}

#[test]
fn cat_of_an_instance_shows_its_templates_file() {
    let h = attached_template();
    h.berth_ok(&["start", "web@blue"]).unwrap();

    let cat = h.berth_ok(&["cat", "web@blue"]).unwrap();

    assert!(cat.contains("web@.service"), "{cat}");
    assert!(cat.contains("Description=web instance %i"), "{cat}");
    h.berth_ok(&["stop", "web@blue"]).unwrap();
}
