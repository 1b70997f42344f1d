//! No long-lived root process per service (ISSUE 8 item 7): after launch a supervisor runs as
//! berthd's uid and primary gid, with no groups, CAP_KILL alone, no_new_privs and not dumpable,
//! as `/proc/<pid>/status` shows; it still stops its service (whose processes run as other
//! uids), and what it could no longer remove as root (its cgroups) is gone after the stop.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder, process_exists};

const WAIT: Duration = Duration::from_secs(30);

fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap()
        .trim()
        .to_owned()
}

fn parent(pid: u32) -> u32 {
    status_field(pid, "PPid:").parse().unwrap()
}

/// The uid and primary gid berthd runs as.
fn berthd_ids(h: &Harness) -> (u32, u32) {
    let pid = h.berthd_pid().unwrap();
    let first = |name| -> u32 {
        status_field(pid, name)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (first("Uid:"), first("Gid:"))
}

#[test]
fn a_running_supervisor_is_berthds_uid_with_cap_kill_alone_and_still_stops_its_service() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("held"))
        .unit(
            "held.service",
            // A child that ignores SIGTERM: stopping needs the supervisor's SIGKILL to reach
            // processes of the service's own uid.
            "[Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; sleep 1000 & exec sleep 1000'\n\
             TimeoutStopSec=2\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "held"]).unwrap();
    h.berth_ok(&["start", "held"]).unwrap();
    let main_pid = h.status_json("held").unwrap()["main_pid"].as_u64().unwrap() as u32;
    let init = parent(main_pid);
    let supervisor = parent(init);
    let (uid, gid) = berthd_ids(&h);

    let ids = |id: u32| format!("{id}\t{id}\t{id}\t{id}");
    let fields: Vec<(&str, String)> = [
        "Uid:",
        "Gid:",
        "Groups:",
        "CapInh:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
    ]
    .into_iter()
    .map(|f| (f, status_field(supervisor, f)))
    .collect();
    // A non-dumpable process's /proc files are root's, whatever its uid.
    let proc_owner = std::fs::metadata(format!("/proc/{supervisor}/status"))
        .unwrap()
        .uid();
    let comm = std::fs::read_to_string(format!("/proc/{supervisor}/comm")).unwrap();
    h.berth_ok(&["stop", "held"]).unwrap();

    assert_eq!(comm.trim(), "berth-supervise");
    assert_ne!(uid, 0, "berthd runs as root");
    let cap_kill = "0000000000000020";
    assert_eq!(
        fields,
        [
            ("Uid:", ids(uid)),
            ("Gid:", ids(gid)),
            ("Groups:", String::new()),
            ("CapInh:", "0000000000000000".to_owned()),
            ("CapPrm:", cap_kill.to_owned()),
            ("CapEff:", cap_kill.to_owned()),
            ("CapBnd:", cap_kill.to_owned()),
            ("CapAmb:", "0000000000000000".to_owned()),
            ("NoNewPrivs:", "1".to_owned()),
        ]
    );
    assert_eq!(proc_owner, 0, "the supervisor is dumpable");
    let stopped = h.status_json("held").unwrap();
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    h.wait_for(
        || Ok(!process_exists(main_pid) && !process_exists(supervisor)),
        WAIT,
    )
    .unwrap();
}
