//! A unit's sandbox directives and its host drop-ins reach the sandbox: what berthd reads into
//! `ServiceConfig.sandbox` is what the service runs under, seen from inside with the probe.
//! Each test has a control: the same service without the directive, where the attempt works.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use berth_testkit::{Harness, ImageBuilder, probe_output};
use serde_json::Value;

/// `--try A --try B ...` for a unit's command line.
fn try_args(tries: &[&str]) -> String {
    tries.iter().map(|t| format!(" --try {t}")).collect()
}

/// Attaches image `name`: the probe and a oneshot `name.service` running it with `tries`,
/// with `directives` in its `[Service]` section. The profile is `trusted` (berth's baseline
/// sandbox), so that what the unit's directives change is all that changes.
fn attach_probe(h: &Harness, name: &str, directives: &str, tries: &[&str]) {
    let unit = format!(
        "[Service]\nType=oneshot\n{directives}ExecStart=/usr/bin/berth-probe{}\n",
        try_args(tries)
    );
    ImageBuilder::new(&h.images_dir().join(name))
        .probe()
        .unit(&format!("{name}.service"), &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", name, "--profile", "trusted"])
        .unwrap();
}

/// Starts the attached oneshot `name` and returns what each attempt of this run gave.
fn run(h: &Harness, name: &str) -> Value {
    let before = h.berth_ok(&["logs", name]).unwrap().lines().count();
    h.berth_ok(&["start", name]).unwrap();
    let log = h.berth_ok(&["logs", name]).unwrap();
    let new: Vec<&str> = log.lines().skip(before).collect();
    probe_output(&new.join("\n")).unwrap()["tries"].clone()
}

fn ok(result: &Value) -> bool {
    result.as_str().is_some_and(|r| r.starts_with("ok"))
}

const TRIES: [&str; 3] = ["socket-inet", "socket-unix", "personality-rie"];

#[test]
fn the_unit_s_own_sandbox_directives_apply_inside() {
    let h = Harness::start().unwrap();
    attach_probe(
        &h,
        "tight",
        "RestrictAddressFamilies=AF_UNIX\nLockPersonality=yes\n",
        &TRIES,
    );
    attach_probe(&h, "plain", "", &TRIES);

    let tight = run(&h, "tight");
    let plain = run(&h, "plain");

    assert!(
        ok(&plain["socket-inet"]) && ok(&plain["personality-rie"]),
        "control: {plain}"
    );
    assert!(!ok(&tight["socket-inet"]), "AF_INET allowed: {tight}");
    assert!(
        !ok(&tight["personality-rie"]),
        "personality changed: {tight}"
    );
    assert!(ok(&tight["socket-unix"]), "AF_UNIX refused: {tight}");
}

#[test]
fn a_host_drop_in_tightens_the_next_start() {
    let h = Harness::start().unwrap();
    attach_probe(&h, "later", "", &TRIES);
    let before = run(&h, "later");

    h.berth_ok(&["set-property", "later", "RestrictAddressFamilies=AF_UNIX"])
        .unwrap();
    let after = run(&h, "later");

    assert!(ok(&before["socket-inet"]), "control: {before}");
    assert!(!ok(&after["socket-inet"]), "AF_INET allowed: {after}");
    assert!(ok(&after["socket-unix"]), "AF_UNIX refused: {after}");
}

#[test]
fn a_loosening_in_the_unit_is_ignored_and_the_service_still_runs_sandboxed() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nType=oneshot\nNoNewPrivileges=no\nPrivateTmp=no\n\
                ExecStart=/usr/bin/berth-probe --try socket-unix\n";
    ImageBuilder::new(&h.images_dir().join("loose"))
        .probe()
        .unit("loose.service", unit)
        .build()
        .unwrap();

    let out = h.berth(&["attach", "loose"]).unwrap();
    let tries = run(&h, "loose");

    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{warnings}");
    assert!(
        warnings.contains("loose.service:3: [Service] NoNewPrivileges=no is ignored")
            && warnings.contains("loose.service:4: [Service] PrivateTmp=no is ignored"),
        "{warnings}"
    );
    assert!(ok(&tries["socket-unix"]), "{tries}");
}
