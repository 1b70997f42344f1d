//! End to end: what a service logs through syslog(3) to `/dev/log` and through the journal's
//! native socket lands in its own log, with its priority and identifier, and `berth logs` shows
//! it; a flood is cut at the rate limit and counted; a malformed datagram is refused and the
//! service keeps logging. Needs root and the `berth` user.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The supervisor's rate limit on the log sockets (journald's default burst).
const RATE_BURST: usize = 10_000;

/// Attaches and starts `logs.service`, the probe with `args`, then sleeping.
fn start_probe(h: &Harness, args: &str) {
    let unit = format!("[Service]\nExecStart=/usr/bin/berth-probe {args} --sleep 1000\n");
    ImageBuilder::new(&h.images_dir().join("logs"))
        .probe()
        .unit("logs.service", &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "logs"]).unwrap();
    h.berth_ok(&["start", "logs"]).unwrap();
}

/// `berth logs logs -o json`, each entry.
fn entries(h: &Harness) -> anyhow::Result<Vec<Value>> {
    h.berth_ok(&["logs", "logs", "-o", "json"])?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// Waits until an entry says `message`; returns it.
fn wait_entry(h: &Harness, message: &str) -> Value {
    let mut found = None;
    let waited = h.wait_for(
        || {
            found = entries(h)?.into_iter().find(|e| e["MESSAGE"] == message);
            Ok(found.is_some())
        },
        WAIT,
    );
    let all = entries(h).unwrap_or_default();
    waited.unwrap_or_else(|e| panic!("no {message:?} in the log ({e}): {all:?}"));
    found.unwrap()
}

fn messages_starting(entries: &[Value], prefix: &str) -> usize {
    entries
        .iter()
        .filter(|e| e["MESSAGE"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .count()
}

#[test]
fn a_syslog_message_is_in_berth_logs_with_its_priority_identifier_and_pid() {
    let h = Harness::start().unwrap();

    start_probe(&h, "--log 'syslog:3:disk on fire'");

    let entry = wait_entry(&h, "disk on fire");
    let short = h.berth_ok(&["logs", "logs"]).unwrap();
    h.berth_ok(&["stop", "logs"]).unwrap();
    assert_eq!(entry["PRIORITY"], "3");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "berth-probe");
    assert_eq!(entry["_TRANSPORT"], "syslog");
    assert_eq!(entry["BERTH_STREAM"], "syslog");
    let pid = entry["SYSLOG_PID"].as_str().unwrap();
    assert!(pid.parse::<u32>().unwrap() > 1, "{entry}");
    assert!(
        short.contains(&format!(" berth-probe[{pid}]: disk on fire")),
        "{short}"
    );
}

#[test]
fn a_native_journal_entry_is_in_berth_logs_with_its_priority_and_identifier() {
    let h = Harness::start().unwrap();

    start_probe(&h, "--log 'journal:4:low on disk'");

    let entry = wait_entry(&h, "low on disk");
    let report = entries(&h)
        .unwrap()
        .into_iter()
        .find_map(|e| serde_json::from_str::<Value>(e["MESSAGE"].as_str()?).ok())
        .unwrap();
    h.berth_ok(&["stop", "logs"]).unwrap();
    assert_eq!(entry["PRIORITY"], "4");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "berth-probe");
    assert_eq!(entry["_TRANSPORT"], "journal");
    assert_eq!(report["log_sockets"], serde_json::json!(["sent"]));
}

#[test]
fn a_malformed_journal_datagram_is_refused_and_the_service_keeps_logging() {
    let h = Harness::start().unwrap();

    start_probe(
        &h,
        "--log journal-malformed --log 'journal:6:still here' --log 'syslog:6:and here'",
    );

    wait_entry(&h, "and here");
    let all = entries(&h).unwrap();
    let state = h.status_json("logs").unwrap()["state"].clone();
    h.berth_ok(&["stop", "logs"]).unwrap();
    assert_eq!(state, "running");
    assert_eq!(messages_starting(&all, "still here"), 1);
    let refusals: Vec<_> = all
        .iter()
        .filter_map(|e| e["MESSAGE"].as_str())
        .filter(|m| m.contains("refused a malformed journal entry"))
        .collect();
    assert_eq!(refusals.len(), 1, "{all:?}");
}

#[test]
fn an_entry_passed_as_a_memfd_is_refused_and_the_service_keeps_logging() {
    let h = Harness::start().unwrap();

    start_probe(
        &h,
        "--log journal-memfd:hidden --log 'journal:6:after the memfd'",
    );

    wait_entry(&h, "after the memfd");
    let all = entries(&h).unwrap();
    h.berth_ok(&["stop", "logs"]).unwrap();
    assert_eq!(messages_starting(&all, "hidden"), 0);
    assert!(
        all.iter().any(|e| e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("refused an entry passed as a descriptor (memfd)"))),
        "{all:?}"
    );
}

#[test]
fn a_syslog_flood_is_cut_at_the_rate_limit_and_counted() {
    let h = Harness::start().unwrap();
    let sent = RATE_BURST + 2_000;

    start_probe(&h, &format!("--log syslog-flood:{sent}"));

    // The probe's report comes after the flood: the service got through it.
    let mut report = None;
    h.wait_for(
        || {
            report = entries(&h)?.into_iter().find(|e| {
                e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.contains("berth-probe\""))
            });
            Ok(report.is_some())
        },
        Duration::from_secs(120),
    )
    .unwrap();
    let mut dropped = 0;
    h.wait_for(
        || {
            dropped = h.status_json("logs")?["log_dropped"].as_u64().unwrap_or(0);
            Ok(dropped >= 2_000)
        },
        WAIT,
    )
    .unwrap();
    let all = entries(&h).unwrap();
    h.berth_ok(&["stop", "logs"]).unwrap();
    let kept = messages_starting(&all, "flood ");
    assert!(kept <= RATE_BURST, "{kept} flood lines kept");
    assert!(
        kept as u64 + dropped >= sent as u64,
        "{kept} kept + {dropped} dropped < {sent}"
    );
    assert!(
        all.iter().any(|e| e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("more than 10000 messages in 30 s"))),
        "no note about the rate limit"
    );
}
