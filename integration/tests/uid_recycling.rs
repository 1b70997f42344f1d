//! A dynamic uid handed to one service after another (a range of one uid): what the first
//! holder leaves outside its own directories is gone before the next one gets the uid
//! (research/sandbox-peers.md §4 case 20, ISSUE 7 item 2). Each test has a control: the first
//! holder finds what it left within its own run.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use berth_testkit::{Harness, ImageBuilder, probe_output};
use serde_json::Value;

/// The one uid of the range these tests give berthd.
const UID: u32 = 61501;

fn one_uid_harness() -> Harness {
    Harness::start_with_config(&format!(
        "dynamic_uid_min = {UID}\ndynamic_uid_max = {UID}\n"
    ))
    .unwrap()
}

/// Attaches image `name` whose oneshot `name.service` runs the probe with `tries`, starts it
/// and returns the probe's report.
fn run_probe(h: &Harness, name: &str, tries: &[String]) -> Value {
    let args: String = tries.iter().map(|t| format!(" --try {t}")).collect();
    let unit = format!("[Service]\nType=oneshot\nExecStart=/usr/bin/berth-probe{args}\n");
    ImageBuilder::new(&h.images_dir().join(name))
        .probe()
        .unit(&format!("{name}.service"), &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", name]).unwrap();
    h.berth_ok(&["start", name]).unwrap();
    probe_output(&h.berth_ok(&["logs", name]).unwrap()).unwrap()
}

#[test]
fn a_key_a_service_leaves_in_its_user_keyring_is_gone_for_the_next_holder_of_its_uid() {
    let h = one_uid_harness();
    let description = format!("berth-left-{}", std::process::id());
    let leave = format!("key-add:{description}=secret");
    let find = format!("key-read:{description}");

    let first = run_probe(&h, "leaver", &[leave.clone(), find.clone()]);
    let second = run_probe(&h, "finder", std::slice::from_ref(&find));

    assert_eq!((&first["uid"], &second["uid"]), (&UID.into(), &UID.into()));
    assert!(
        first["tries"][&leave].as_str().unwrap().starts_with("ok"),
        "the first holder could not add its key: {}",
        first["tries"][&leave]
    );
    assert_eq!(first["tries"][&find], "ok: secret");
    assert_eq!(second["tries"][&find], "ENOKEY");
}
