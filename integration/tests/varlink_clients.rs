//! Real varlink clients against berthd: the PyPI `varlink` CLI, and introspection that matches
//! the checked-in IDL.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use berth_testkit::{Harness, busybox_image};

fn python_varlink(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .args(["-m", "varlink.cli"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn python_varlink_info_lists_the_manager_interface() {
    let h = Harness::start().unwrap();
    let address = format!("unix:{}", h.socket().display());

    let out = python_varlink(&["info", &address]);

    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("io.berth.Manager") && text.contains("org.varlink.service"),
        "{text}"
    );
}

#[test]
fn python_varlink_call_lists_attached_units() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    let method = format!("unix:{}/io.berth.Manager.List", h.socket().display());

    let out = python_varlink(&["call", &method, "{}"]);

    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["units"][0]["unit"], "hello.service");
}

#[test]
fn python_varlink_help_parses_the_interface_description() {
    let h = Harness::start().unwrap();
    let address = format!("unix:{}/io.berth.Manager", h.socket().display());

    let out = python_varlink(&["help", &address]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("method Attach("));
}

#[test]
fn served_interface_description_equals_the_idl_file() {
    let h = Harness::start().unwrap();
    let method = format!(
        "unix:{}/org.varlink.service.GetInterfaceDescription",
        h.socket().display()
    );

    let out = python_varlink(&["call", &method, r#"{"interface":"io.berth.Manager"}"#]);

    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = include_str!("../../protocol/io.berth.Manager.varlink");
    assert_eq!(reply["description"].as_str(), Some(file));
}

#[test]
fn list_with_more_streams_one_reply_per_unit() {
    let h = Harness::start().unwrap();
    berth_testkit::ImageBuilder::new(&h.images_dir().join("trio"))
        .unit("trio-a.service", "[Service]\nExecStart=/bin/true\n")
        .unit("trio-b.service", "[Service]\nExecStart=/bin/true\n")
        .unit("trio-c.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();
    h.berth_ok(&["attach", "trio"]).unwrap();
    let method = format!("unix:{}/io.berth.Manager.List", h.socket().display());

    let out = python_varlink(&["call", "-m", &method, "{}"]);

    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let units: Vec<&str> = replies
        .iter()
        .map(|r| r["units"][0]["unit"].as_str().unwrap())
        .collect();
    assert_eq!(
        units,
        ["trio-a.service", "trio-b.service", "trio-c.service"]
    );
}
