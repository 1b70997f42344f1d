//! `berth reattach IMAGE [--now]`, end to end: an attached image's units move to another
//! version (TEST-29-PORTABLE's minimal_0 → minimal_1: one unit in both, one only in the old,
//! one only in the new).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder};

const WAIT: Duration = Duration::from_secs(10);

fn sleeper(says: &str) -> String {
    format!("[Service]\nExecStart=/bin/sh -c 'echo {says}; exec sleep 1000'\n")
}

/// `foo_1`: foo.service (says v1) and foo-old.service; `foo_2`: foo.service (says v2) and
/// foo-new.service. Both outside the pool, under `versions/`.
fn versions(h: &Harness) -> (PathBuf, PathBuf) {
    let dir = h.dir().join("versions");
    let v1 = ImageBuilder::new(&dir.join("foo_1"))
        .unit("foo.service", &sleeper("v1"))
        .unit("foo-old.service", &sleeper("old"))
        .build()
        .unwrap();
    let v2 = ImageBuilder::new(&dir.join("foo_2"))
        .unit("foo.service", &sleeper("v2"))
        .unit("foo-new.service", &sleeper("new"))
        .build()
        .unwrap();
    (v1, v2)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn main_pid(h: &Harness, unit: &str) -> u64 {
    h.status_json(unit).unwrap()["main_pid"].as_u64().unwrap()
}

fn units(h: &Harness) -> Vec<String> {
    let list = h.berth_json(&["list"]).unwrap();
    let mut units: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap().to_string())
        .collect();
    units.sort();
    units
}

/// v1 attached, foo and foo-old running.
fn running_v1(h: &Harness) -> (PathBuf, PathBuf) {
    let (v1, v2) = versions(h);
    h.berth_ok(&["attach", path(&v1)]).unwrap();
    h.berth_ok(&["start", "foo", "foo-old"]).unwrap();
    (v1, v2)
}

#[test]
fn reattach_now_restarts_an_updated_unit_from_the_new_version() {
    let h = Harness::start().unwrap();
    let (_, v2) = running_v1(&h);
    let before = main_pid(&h, "foo");

    let reply = h.berth_json(&["reattach", "--now", path(&v2)]).unwrap();

    assert_eq!(reply["updated"], serde_json::json!(["foo.service"]));
    assert_ne!(main_pid(&h, "foo"), before);
    h.wait_for(|| Ok(h.berth_ok(&["logs", "foo"])?.contains("v2")), WAIT)
        .unwrap();
}

#[test]
fn reattach_stops_and_detaches_a_removed_unit() {
    let h = Harness::start().unwrap();
    let (_, v2) = running_v1(&h);
    let old_pid = main_pid(&h, "foo-old");

    let reply = h.berth_json(&["reattach", path(&v2)]).unwrap();

    assert_eq!(reply["removed"], serde_json::json!(["foo-old.service"]));
    assert!(!units(&h).contains(&"foo-old.service".to_string()));
    h.wait_for(
        || Ok(!Path::new(&format!("/proc/{old_pid}")).exists()),
        WAIT,
    )
    .unwrap();
}

#[test]
fn reattach_now_starts_an_added_unit() {
    let h = Harness::start().unwrap();
    let (_, v2) = running_v1(&h);

    let reply = h.berth_json(&["reattach", "--now", path(&v2)]).unwrap();

    assert_eq!(reply["added"], serde_json::json!(["foo-new.service"]));
    assert_eq!(h.status_json("foo-new").unwrap()["state"], "running");
}

#[test]
fn without_now_an_updated_unit_runs_on_until_its_next_restart() {
    let h = Harness::start().unwrap();
    let (_, v2) = running_v1(&h);
    let before = main_pid(&h, "foo");

    h.berth_ok(&["reattach", path(&v2)]).unwrap();

    assert_eq!(main_pid(&h, "foo"), before);
    assert_eq!(h.status_json("foo-new").unwrap()["state"], "stopped");
    h.berth_ok(&["restart", "foo"]).unwrap();
    h.wait_for(|| Ok(h.berth_ok(&["logs", "foo"])?.contains("v2")), WAIT)
        .unwrap();
}

#[test]
fn reattach_keeps_the_state_directories() {
    let h = Harness::start().unwrap();
    let (_, v2) = running_v1(&h);
    let private = h.state_dir().join("private/foo");
    let var = h.state_dir().join("var/foo");
    for dir in [&private, &var] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("kept"), "state\n").unwrap();
    }

    h.berth_ok(&["reattach", "--now", path(&v2)]).unwrap();

    for dir in [&private, &var] {
        assert_eq!(
            std::fs::read_to_string(dir.join("kept")).unwrap(),
            "state\n"
        );
    }
}

#[test]
fn the_reattached_version_is_what_a_berthd_restart_finds() {
    let mut h = Harness::start().unwrap();
    let (_, v2) = versions(&h);
    let v1 = h.dir().join("versions/foo_1");
    h.berth_ok(&["attach", path(&v1)]).unwrap();
    h.berth_ok(&["reattach", path(&v2)]).unwrap();

    h.restart_berthd().unwrap();

    assert_eq!(units(&h), ["foo-new.service", "foo.service"]);
    h.berth_ok(&["start", "foo"]).unwrap();
    h.wait_for(|| Ok(h.berth_ok(&["logs", "foo"])?.contains("v2")), WAIT)
        .unwrap();
}

#[test]
fn reattach_of_an_image_not_attached_is_refused_and_changes_nothing() {
    let h = Harness::start().unwrap();
    let (_, v2) = versions(&h);

    let err = h.berth_err(&["reattach", path(&v2)]).unwrap();

    assert!(err.contains("not attached"), "{err}");
    assert!(units(&h).is_empty());
}

#[test]
fn a_new_version_without_matching_units_is_refused_and_the_old_stays() {
    let h = Harness::start().unwrap();
    let (_, _) = running_v1(&h);
    let empty = ImageBuilder::new(&h.dir().join("versions/foo_3"))
        .unit("other.service", &sleeper("x"))
        .build()
        .unwrap();

    let err = h.berth_err(&["reattach", "--now", path(&empty)]).unwrap();

    assert!(err.contains("no unit files matching foo"), "{err}");
    assert_eq!(units(&h), ["foo-old.service", "foo.service"]);
    assert_eq!(h.status_json("foo-old").unwrap()["state"], "running");
}

#[test]
fn reattach_to_a_versioned_name_takes_that_version() {
    let h = Harness::start().unwrap();
    for version in ["1", "2", "3"] {
        ImageBuilder::new(&h.images_dir().join(format!("foo_{version}")))
            .unit("foo.service", &sleeper(&format!("v{version}")))
            .build()
            .unwrap();
    }
    h.berth_ok(&["attach", path(&h.images_dir().join("foo_1"))])
        .unwrap();

    let reply = h.berth_json(&["reattach", "foo_2"]).unwrap();

    assert!(
        reply["path"].as_str().unwrap().ends_with("/foo_2"),
        "{reply}"
    );
}

#[test]
fn reattach_by_name_moves_to_the_newest_version_in_the_pool() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("foo_1.9"))
        .unit("foo.service", &sleeper("v1.9"))
        .build()
        .unwrap();
    h.berth_ok(&["attach", "foo"]).unwrap();
    for version in ["1.10", "1.0"] {
        ImageBuilder::new(&h.images_dir().join(format!("foo_{version}")))
            .unit("foo.service", &sleeper(&format!("v{version}")))
            .build()
            .unwrap();
    }

    let reply = h.berth_json(&["reattach", "foo"]).unwrap();

    assert!(
        reply["path"].as_str().unwrap().ends_with("/foo_1.10"),
        "{reply}"
    );
}
