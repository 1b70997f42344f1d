//! Faults (issue 8 item 6): berthd, berth-helper or both killed with SIGKILL while services
//! run. The services keep running; once the daemons are back, `status` shows the same pids,
//! the same state and last exit of every unit, and an exit that happened meanwhile (acted on
//! by Restart=). And berthd killed at random points of attach, detach and start, again and
//! again: what is on disk stays whole each time, and berthd, the processes and the disk agree.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_testkit::{Harness, ImageBuilder, busybox_image, process_exists, procfs};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Which daemons a fault kills.
#[derive(Debug, Clone, Copy)]
enum Kill {
    Berthd,
    Helper,
    Both,
}

/// Kills the daemons `kill` names with SIGKILL and waits until both are gone (berthd exits by
/// itself when its helper dies; the helper when berthd does).
fn crash(h: &mut Harness, kill: Kill) {
    let (berthd, helper) = (h.berthd_pid().unwrap(), h.helper_pid().unwrap());
    let targets: &[u32] = match kill {
        Kill::Berthd => &[berthd],
        Kill::Helper => &[helper],
        Kill::Both => &[berthd, helper],
    };
    for &pid in targets {
        // SAFETY: plain kill(2) of a daemon this test's harness started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    }
    h.wait_for(
        || Ok(!process_exists(berthd) || procfs::proc_state(berthd) == Some('Z')),
        WAIT,
    )
    .unwrap();
    // Reaped (berthd is the harness's child), then the helper's end.
    h.kill_berthd().unwrap();
    h.wait_for(|| Ok(!process_exists(helper)), WAIT).unwrap();
}

/// The supervisors of this harness's services, by unit (`berth-supervise UNIT` in ps).
fn supervisors(h: &Harness) -> BTreeMap<String, u32> {
    procfs::processes_referencing(h.dir())
        .into_iter()
        .filter_map(|pid| {
            let args = procfs::cmdline(pid);
            match args.as_slice() {
                [first, unit, ..] if first == "berth-supervise" => Some((unit.clone(), pid)),
                _ => None,
            }
        })
        .collect()
}

fn status(h: &Harness, unit: &str) -> Value {
    h.status_json(unit).unwrap()
}

fn wait_state(h: &Harness, unit: &str, want: &str) {
    h.wait_for(|| Ok(h.status_json(unit)?["state"] == want), WAIT)
        .unwrap_or_else(|e| panic!("{unit} never {want}: {e:#}"));
}

/// Two running services, `long` (busybox, sleeping) and `other`.
fn two_running(h: &Harness) {
    for name in ["long", "other"] {
        busybox_image(&h.images_dir(), name).unwrap();
        h.berth_ok(&["attach", name]).unwrap();
        h.berth_ok(&["start", name]).unwrap();
    }
}

/// The running services keep running through the fault, and the daemons that come back show
/// them running with the same main pids and the same supervisors.
fn services_survive(kill: Kill) {
    let mut h = Harness::start().unwrap();
    two_running(&h);
    let before: Vec<Value> = ["long", "other"].map(|u| status(&h, u)).to_vec();
    let supervised = supervisors(&h);
    assert_eq!(supervised.len(), 2, "{supervised:?}");

    crash(&mut h, kill);
    let pids: Vec<u32> = before
        .iter()
        .map(|s| s["main_pid"].as_u64().unwrap() as u32)
        .collect();
    assert!(
        pids.iter().all(|&p| process_exists(p)),
        "{kill:?}: a service died with the daemons"
    );
    h.start_berthd().unwrap();

    for (unit, was) in ["long", "other"].iter().zip(&before) {
        wait_state(&h, unit, "running");
        let now = status(&h, unit);
        assert_eq!(now["main_pid"], was["main_pid"], "{kill:?}: {unit}");
        assert_eq!(now["uid"], was["uid"], "{kill:?}: {unit}");
    }
    assert_eq!(supervisors(&h), supervised, "{kill:?}");
    // And they are still berthd's to stop.
    h.berth_ok(&["stop", "long", "other"]).unwrap();
    assert!(pids.iter().all(|&p| !process_exists(p)));
}

#[test]
fn services_keep_running_through_a_killed_berthd_with_the_same_pids_after() {
    services_survive(Kill::Berthd);
}

#[test]
fn services_keep_running_through_a_killed_helper_with_the_same_pids_after() {
    services_survive(Kill::Helper);
}

#[test]
fn services_keep_running_through_both_daemons_killed_with_the_same_pids_after() {
    services_survive(Kill::Both);
}

/// A service that exits 7 on its own a while after it starts exits while the daemons are down:
/// the daemons that come back report the exit.
fn exit_meanwhile_is_reported(kill: Kill) {
    let mut h = Harness::start().unwrap();
    let unit = "[Service]\nExecStart=/bin/sh -c 'sleep 2; exit 7'\n";
    ImageBuilder::new(&h.images_dir().join("brief"))
        .unit("brief.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "brief"]).unwrap();
    h.berth_ok(&["start", "brief"]).unwrap();
    let pid = status(&h, "brief")["main_pid"].as_u64().unwrap() as u32;

    crash(&mut h, kill);
    h.wait_for(|| Ok(!process_exists(pid)), WAIT).unwrap();
    h.start_berthd().unwrap();

    wait_state(&h, "brief", "failed");
    let now = status(&h, "brief");
    assert_eq!(now["exit_code"], 7, "{kill:?}: {now}");
    assert!(now["main_pid"].is_null(), "{kill:?}: {now}");
    // The run is over: nothing of it is left.
    h.wait_for(|| Ok(supervisors(&h).is_empty()), WAIT).unwrap();
}

#[test]
fn an_exit_while_berthd_was_killed_is_reported() {
    exit_meanwhile_is_reported(Kill::Berthd);
}

#[test]
fn an_exit_while_the_helper_was_killed_is_reported() {
    exit_meanwhile_is_reported(Kill::Helper);
}

#[test]
fn an_exit_while_both_daemons_were_killed_is_reported() {
    exit_meanwhile_is_reported(Kill::Both);
}

/// A small deterministic generator (xorshift64*), seeded from the clock and printed, so a run
/// that finds something can be repeated with `BERTH_FAULT_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("BERTH_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("fault loop seed: BERTH_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The attachments on disk, by image: the units their records list. Fails on anything a
/// complete save or removal does not leave: a directory without a record, a record that does
/// not parse or names a unit whose copy is missing, an enabled unit it does not list, a staged
/// or temporary file.
fn attachments_on_disk(state: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(state.join("attached")) else {
        return Ok(found);
    };
    for entry in entries {
        let dir = entry?.path();
        let image = dir.file_name().unwrap().to_string_lossy().into_owned();
        let record_path = dir.join("attachment.json");
        let text =
            std::fs::read(&record_path).with_context(|| format!("{}: no record", dir.display()))?;
        let record: Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} does not parse", record_path.display()))?;
        let units: Vec<String> = record["units"]
            .as_array()
            .context("units")?
            .iter()
            .map(|u| u.as_str().unwrap().to_string())
            .collect();
        for unit in &units {
            ensure!(dir.join(unit).is_file(), "{image}: {unit} listed, no copy");
        }
        for enabled in record["enabled"].as_array().into_iter().flatten() {
            let enabled = enabled.as_str().unwrap().to_string();
            ensure!(
                units.contains(&enabled),
                "{image}: {enabled} enabled, not listed"
            );
        }
        for file in std::fs::read_dir(&dir)? {
            let name = file?.file_name().to_string_lossy().into_owned();
            ensure!(
                !(name.starts_with('.') && (name.ends_with(".next") || name.ends_with(".tmp"))),
                "{image}: {name} left behind"
            );
        }
        found.insert(image, units);
    }
    Ok(found)
}

/// Waits until no unit is between states (a re-adoption settles), then checks that berthd,
/// the disk and the processes agree: the units berthd lists are the units of the records on
/// disk, a unit is running exactly when a supervisor of it runs (with its main pid alive),
/// and no two running units share a uid.
fn check_consistent(h: &Harness, round: usize, op: &str) -> Result<()> {
    let context = || format!("round {round}, after berthd was killed during `{op}`");
    let on_disk = attachments_on_disk(&h.state_dir()).with_context(context)?;
    let deadline = Instant::now() + WAIT;
    let list = loop {
        let list = h.berth_json(&["list"])?;
        let settled = list
            .as_array()
            .context("list")?
            .iter()
            .all(|u| !matches!(u["state"].as_str(), Some("starting" | "stopping")));
        if settled {
            break list;
        }
        if Instant::now() > deadline {
            bail!("{}: units never settled: {list}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let listed: BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap().to_string())
        .collect();
    let recorded: BTreeSet<String> = on_disk.values().flatten().cloned().collect();
    ensure!(
        listed == recorded,
        "{}: berthd lists {listed:?}, the records on disk {recorded:?}",
        context()
    );
    let mut uids = BTreeSet::new();
    // A supervisor whose run ended may take a moment to go once released.
    let deadline = Instant::now() + WAIT;
    loop {
        let supervised = supervisors(h);
        let list = h.berth_json(&["list"])?;
        let running: BTreeMap<String, &Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["state"] == "running")
            .map(|u| (u["unit"].as_str().unwrap().to_string(), u))
            .collect();
        let agree = supervised.keys().eq(running.keys());
        if agree {
            for (unit, u) in &running {
                let pid = u["main_pid"].as_u64().context("main_pid")? as u32;
                ensure!(
                    process_exists(pid),
                    "{}: {unit}'s pid {pid} is gone",
                    context()
                );
                let uid = u["uid"].as_u64().context("uid")?;
                ensure!(uids.insert(uid), "{}: uid {uid} twice", context());
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: supervisors of {:?} run, berthd shows {:?} running",
                context(),
                supervised.keys().collect::<Vec<_>>(),
                running.keys().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn berthd_killed_at_random_points_of_attach_detach_and_start_leaves_a_consistent_state() {
    const ROUNDS: usize = 80;
    let mut h = Harness::start().unwrap();
    for name in ["alpha", "beta"] {
        busybox_image(&h.images_dir(), name).unwrap();
    }
    let mut rng = Rng::new();
    let mut ops_seen = BTreeMap::<String, usize>::new();
    for round in 0..ROUNDS {
        let image = ["alpha", "beta"][rng.below(2) as usize];
        // A drop-in too: attaching again must keep it, a detach must take it along.
        let property = format!("Environment=ROUND={round}");
        let args: Vec<&str> = match rng.below(6) {
            0 => vec!["attach", image],
            1 => vec!["attach", "--enable", image],
            2 => vec!["detach", "--now", image],
            3 => vec!["set-property", image, &property],
            _ => vec!["start", image],
        };
        let op = args.join(" ");
        *ops_seen.entry(args[0].to_string()).or_default() += 1;
        let mut child = h
            .berth_command(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from before the call arrives to after it is done; most often within the
        // first tens of milliseconds, where an attach does its writes.
        let range = if rng.below(2) == 0 { 40 } else { 200 };
        std::thread::sleep(Duration::from_millis(rng.below(range)));
        h.kill_berthd().unwrap();
        let _ = child.wait();
        h.start_berthd().unwrap();

        check_consistent(&h, round, &op).unwrap();
    }
    eprintln!("operations cut: {ops_seen:?}");
    // Whatever the loop left, berthd can still undo it all.
    for image in ["alpha", "beta"] {
        let _ = h.berth(&["detach", "--now", image]);
    }
    assert!(attachments_on_disk(&h.state_dir()).unwrap().is_empty());
    h.wait_for(|| Ok(supervisors(&h).is_empty()), WAIT).unwrap();
}

/// A snapshot of what `status` says of a unit's last run.
fn run_of(h: &Harness, unit: &str) -> Value {
    let s = status(h, unit);
    serde_json::json!({
        "state": s["state"], "main_pid": s["main_pid"], "exit_code": s["exit_code"],
        "exit_signal": s["exit_signal"], "result": s["result"], "failure": s["failure"],
    })
}

/// Units in every state: `long` running, `once` a oneshot that exited, `bad` failed (exit 3),
/// `idle` never started.
fn units_in_every_state(h: &Harness) {
    busybox_image(&h.images_dir(), "long").unwrap();
    for (name, unit) in [
        ("once", "[Service]\nType=oneshot\nExecStart=/bin/true\n"),
        ("bad", "[Service]\nExecStart=/bin/sh -c 'exit 3'\n"),
        ("idle", "[Service]\nExecStart=/bin/sleep 1000\n"),
    ] {
        ImageBuilder::new(&h.images_dir().join(name))
            .unit(&format!("{name}.service"), unit)
            .build()
            .unwrap();
    }
    for name in ["long", "once", "bad", "idle"] {
        h.berth_ok(&["attach", name]).unwrap();
    }
    h.berth_ok(&["start", "long", "once"]).unwrap();
    let _ = h.berth(&["start", "bad"]);
    wait_state(h, "bad", "failed");
}

fn states_survive(kill: Kill) {
    let mut h = Harness::start().unwrap();
    units_in_every_state(&h);
    let units = ["long", "once", "bad", "idle"];
    let before: Vec<Value> = units.iter().map(|u| run_of(&h, u)).collect();

    crash(&mut h, kill);
    h.start_berthd().unwrap();
    wait_state(&h, "long", "running");

    let after: Vec<Value> = units.iter().map(|u| run_of(&h, u)).collect();
    assert_eq!(after, before, "{kill:?}");
}

#[test]
fn every_units_state_and_last_exit_survive_a_killed_berthd() {
    states_survive(Kill::Berthd);
}

#[test]
fn every_units_state_and_last_exit_survive_a_killed_helper() {
    states_survive(Kill::Helper);
}

#[test]
fn every_units_state_and_last_exit_survive_both_daemons_killed() {
    states_survive(Kill::Both);
}

#[test]
fn an_exit_while_the_daemons_were_down_is_acted_on_by_restart() {
    let mut h = Harness::start().unwrap();
    let unit =
        "[Service]\nRestart=on-failure\nRestartSec=100ms\nExecStart=/bin/sh -c 'sleep 2; exit 7'\n";
    ImageBuilder::new(&h.images_dir().join("again"))
        .unit("again.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "again"]).unwrap();
    h.berth_ok(&["start", "again"]).unwrap();
    let pid = status(&h, "again")["main_pid"].as_u64().unwrap() as u32;

    crash(&mut h, Kill::Both);
    h.wait_for(|| Ok(!process_exists(pid)), WAIT).unwrap();
    h.start_berthd().unwrap();

    h.wait_for(
        || {
            let s = h.status_json("again")?;
            Ok(s["restarts"].as_i64().unwrap_or(0) >= 1
                && s["state"] == "running"
                && s["main_pid"].as_u64().is_some_and(|p| p as u32 != pid))
        },
        WAIT,
    )
    .unwrap();
}
