//! End to end: an isolated berthd + berth-helper per test, real namespaces, real sockets, the
//! real CLI. Needs root and the `berth` user (scripts/setup-debian.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use anyhow::{Context, Result};
use berth_testkit::{
    Harness, ImageBuilder, busybox_image, ns_inode, probe_output, proc_status_field, process_exists,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn probe_unit(args: &str) -> String {
    format!("[Unit]\nDescription=probe\n\n[Service]\nExecStart=/usr/bin/berth-probe {args}\n")
}

/// A harness with image `probe` in its pool, whose `probe.service` runs the probe and sleeps.
fn harness_with_probe(args: &str) -> Result<Harness> {
    harness_with_probe_at(args, &[])
}

/// [`harness_with_probe`], attached with `attach_args` (`--profile default@2`).
fn harness_with_probe_at(args: &str, attach_args: &[&str]) -> Result<Harness> {
    let h = Harness::start()?;
    ImageBuilder::new(&h.images_dir().join("probe"))
        .probe()
        .unit("probe.service", &probe_unit(args))
        .build()?;
    h.berth_ok(&[&["attach", "probe"], attach_args].concat())?;
    Ok(h)
}

fn log_text(h: &Harness, unit: &str) -> Result<String> {
    h.berth_ok(&["logs", unit])
}

/// Starts probe.service and returns the probe's JSON and the service's main pid.
fn run_probe(h: &Harness) -> Result<(Value, u32)> {
    h.berth_ok(&["start", "probe"])?;
    h.wait_for(|| Ok(probe_output(&log_text(h, "probe")?).is_ok()), WAIT)?;
    let status = h.status_json("probe")?;
    let pid = status["main_pid"].as_u64().context("main_pid")? as u32;
    Ok((probe_output(&log_text(h, "probe")?)?, pid))
}

#[test]
fn attached_image_is_listed_with_its_units() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    h.berth_ok(&["attach", "hello"]).unwrap();

    let list = h.berth_json(&["list"]).unwrap();
    assert_eq!(list[0]["unit"], "hello.service");
    assert_eq!(list[0]["image"], "hello");
    assert_eq!(list[0]["state"], "stopped");
    assert_eq!(list[0]["profile"], "default@3");
    assert!(list[0]["main_pid"].is_null() && list[0]["uid"].is_null());
    assert_eq!(
        h.berth_json(&["image", "list"]).unwrap()[0]["state"],
        "attached"
    );
}

#[test]
fn attachment_survives_a_berthd_restart() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    h.restart_berthd().unwrap();

    assert_eq!(h.berth_json(&["list"]).unwrap()[0]["unit"], "hello.service");
    assert!(h.berth(&["is-attached", "hello"]).unwrap().status.success());
}

#[test]
fn detached_image_is_not_attached() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    h.berth_ok(&["detach", "hello"]).unwrap();

    let out = h.berth(&["is-attached", "hello"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "detached");
}

#[test]
fn image_by_absolute_path_attaches() {
    let h = Harness::start().unwrap();
    let outside = h.dir().join("elsewhere");
    std::fs::create_dir(&outside).unwrap();
    let image = busybox_image(&outside, "remote").unwrap();

    h.berth_ok(&["attach", image.to_str().unwrap()]).unwrap();

    assert_eq!(
        h.berth_json(&["list"]).unwrap()[0]["unit"],
        "remote.service"
    );
}

#[test]
fn started_service_runs_and_its_output_is_logged() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    h.berth_ok(&["start", "hello"]).unwrap();

    let status = h.status_json("hello").unwrap();
    assert_eq!(status["state"], "running");
    assert!(process_exists(status["main_pid"].as_u64().unwrap() as u32));
    h.wait_for(
        || Ok(log_text(&h, "hello")?.contains("hello from hello")),
        WAIT,
    )
    .unwrap();
}

#[test]
fn status_json_has_the_contract_fields() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello.service"]).unwrap();

    let status = h.status_json("hello").unwrap();

    for field in ["unit", "image", "state", "main_pid", "uid", "profile"] {
        assert!(status.get(field).is_some(), "missing {field} in {status}");
    }
    let uid = status["uid"].as_u64().unwrap();
    // The default profile runs it as its image's users: a uid of the attachment's block, never
    // a host user's (level 2's dynamic uid: sandbox_runs_with_a_dynamic_uid_and_no_privileges).
    let block = &status["uid_block"];
    let (first, size) = (block["first"].as_u64(), block["size"].as_u64());
    let (first, size) = (first.unwrap(), size.unwrap());
    assert!(
        (first..first + size).contains(&uid),
        "uid {uid} not in {status}"
    );
}

#[test]
fn logs_n_returns_the_last_lines() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo one; echo two; echo three'\n";
    ImageBuilder::new(&h.images_dir().join("lines"))
        .unit("lines.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "lines"]).unwrap();
    h.berth_ok(&["start", "lines"]).unwrap();

    let out = h.berth_ok(&["logs", "lines", "-n", "2"]).unwrap();

    assert!(
        !out.contains("one") && out.contains("two") && out.contains("three"),
        "{out}"
    );
}

#[test]
fn logs_follow_streams_new_output() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nExecStart=/bin/sh -c 'while :; do echo tick; sleep 0.2; done'\n";
    ImageBuilder::new(&h.images_dir().join("ticker"))
        .unit("ticker.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "ticker"]).unwrap();
    h.berth_ok(&["start", "ticker"]).unwrap();

    let mut child = h
        .berth_command(&["logs", "-f", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();

    let ticks = String::from_utf8_lossy(&out.stdout).matches("tick").count();
    assert!(ticks >= 3, "only {ticks} ticks followed");
}

/// Image `flood` whose oneshot prints `lines` numbered lines of about 100 bytes each.
fn flood_image(h: &Harness, lines: u32) -> Result<()> {
    let pad = "x".repeat(90);
    let unit = format!(
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'seq 1 {lines} | sed \"s/$/ {pad}/\"'\n"
    );
    ImageBuilder::new(&h.images_dir().join("flood"))
        .unit("flood.service", &unit)
        .build()?;
    h.berth_ok(&["attach", "flood"])?;
    Ok(())
}

/// Reads `child`'s stdout until `lines` lines came or `timeout` passed; returns them.
fn read_lines_until(
    child: &mut std::process::Child,
    lines: usize,
    timeout: Duration,
) -> Vec<String> {
    use std::io::BufRead;
    let Some(stdout) = child.stdout.take() else {
        return Vec::new();
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    while seen.len() < lines {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    seen
}

#[test]
fn a_long_log_is_read_back_whole() {
    let h = Harness::start().unwrap();
    flood_image(&h, 40_000).unwrap();
    h.berth_ok(&["start", "flood"]).unwrap();

    let out = h.berth_ok(&["logs", "flood"]).unwrap();

    assert_eq!(out.lines().count(), 40_000);
    assert!(
        out.lines().last().unwrap().contains(": 40000 x"),
        "{:?}",
        out.lines().last()
    );
}

#[test]
fn a_log_longer_than_a_call_returns_says_older_lines_are_left_out() {
    let h = Harness::start().unwrap();
    // About 20 MB of records: more than the 16 MiB one call goes back.
    flood_image(&h, 200_000).unwrap();
    h.berth_ok(&["start", "flood"]).unwrap();

    let all = h.berth(&["logs", "flood"]).unwrap();
    let last = h.berth(&["logs", "flood", "-n", "5"]).unwrap();

    let stdout = String::from_utf8_lossy(&all.stdout);
    assert!(all.status.success());
    assert!(
        String::from_utf8_lossy(&all.stderr).contains("older lines of the log are left out"),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let count = stdout.lines().count();
    assert!(count > 100_000 && count < 200_000, "{count} lines");
    assert!(stdout.lines().last().unwrap().contains(": 200000 x"));
    assert!(
        last.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&last.stdout).lines().count(), 5);
}

#[test]
fn a_follower_gets_a_burst_whole_while_berthd_keeps_serving() {
    let h = Harness::start().unwrap();
    flood_image(&h, 40_000).unwrap();
    let mut follower = h
        .berth_command(&["logs", "-f", "flood"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Connected before or during the run, the follower sees every line: those already logged
    // come with its first batch.
    h.berth_ok(&["start", "flood"]).unwrap();
    let status = h.status_json("flood").unwrap();
    let followed = read_lines_until(&mut follower, 40_000, Duration::from_secs(30)).len();
    follower.kill().unwrap();
    follower.wait().unwrap();

    assert_eq!(status["state"], "exited");
    assert_eq!(followed, 40_000);
}

#[test]
fn a_stopped_follower_holds_up_neither_the_service_nor_berthd() {
    let h = Harness::start().unwrap();
    flood_image(&h, 40_000).unwrap();
    h.berth_ok(&["start", "flood"]).unwrap();
    // The follower asks for the whole 4 MB log so far, then never reads.
    let mut follower = h
        .berth_command(&["logs", "-f", "flood"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = follower.id() as i32;
    // SAFETY: plain kill(2) of the follower this test spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);

    let started = h.berth(&["start", "flood"]).unwrap();
    let status = h.status_json("flood");
    let list = h.berth(&["list"]).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    follower.wait().unwrap();

    assert!(started.status.success(), "{started:?}");
    assert_eq!(status.unwrap()["state"], "exited");
    assert!(list.status.success());
}

#[test]
fn a_full_log_is_rotated_and_a_follower_loses_no_line() {
    let h = Harness::start_with_config("log_max_bytes = 65536\n").unwrap();
    // 3,000 lines of about 110 bytes over about 3 s: several rotations at 64 KiB.
    let pad = "x".repeat(100);
    let unit = format!(
        "[Service]\nExecStart=/bin/sh -c 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); \
         echo \"line $i {pad}\"; [ $((i % 100)) = 0 ] && sleep 0.1; done; sleep 1000'\n"
    );
    ImageBuilder::new(&h.images_dir().join("chatty"))
        .unit("chatty.service", &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "chatty"]).unwrap();
    let mut follower = h
        .berth_command(&["logs", "-f", "chatty"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    h.berth_ok(&["start", "chatty"]).unwrap();
    let followed = read_lines_until(&mut follower, 3000, Duration::from_secs(30));
    follower.kill().unwrap();
    follower.wait().unwrap();
    // The last check may still be a second away.
    std::thread::sleep(Duration::from_millis(1500));

    let logs = h.state_dir().join("logs/chatty.service");
    let current = std::fs::metadata(logs.join("current.log")).unwrap().len();
    let previous = std::fs::metadata(logs.join("previous.log")).unwrap().len();
    let numbers: Vec<usize> = followed
        .iter()
        .filter_map(|l| l.split("line ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        numbers,
        (1..=3000).collect::<Vec<_>>(),
        "the follower lost or repeated lines across rotations"
    );
    assert!(current <= 65536, "current.log is {current} bytes");
    assert!(previous > 0, "nothing was moved aside");
    assert!(
        h.stderr_log()
            .lines()
            .filter(|l| l.contains("unit=chatty.service"))
            .all(|l| !l.contains("supervisor error") && !l.contains("lost the supervisor")),
        "{}",
        h.stderr_log()
    );
}

#[test]
fn a_stale_incoming_log_does_not_divert_a_new_run() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nExecStart=/bin/sh -c 'echo fresh-run; sleep 1000'\n";
    ImageBuilder::new(&h.images_dir().join("stale"))
        .unit("stale.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "stale"]).unwrap();
    // As left by a berthd that stopped in the middle of a rotation.
    let logs = h.state_dir().join("logs/stale.service");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("incoming.log"), "").unwrap();
    let owner = std::fs::metadata(h.state_dir().join("logs")).unwrap();
    let (uid, gid) = (
        std::os::unix::fs::MetadataExt::uid(&owner),
        std::os::unix::fs::MetadataExt::gid(&owner),
    );
    for path in [logs.clone(), logs.join("incoming.log")] {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    }

    h.berth_ok(&["start", "stale"]).unwrap();
    h.wait_for(
        || {
            Ok(std::fs::read_to_string(logs.join("current.log"))
                .is_ok_and(|t| t.contains("fresh-run")))
        },
        WAIT,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    assert!(!logs.join("incoming.log").exists());
    assert!(
        std::fs::read_to_string(logs.join("current.log"))
            .unwrap()
            .contains("fresh-run")
    );
}

#[test]
fn oneshot_success_ends_exited_and_failure_ends_failed() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("jobs"))
        .unit(
            "jobs-ok.service",
            "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        )
        .unit(
            "jobs-bad.service",
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "jobs"]).unwrap();

    h.berth_ok(&["start", "jobs-ok"]).unwrap();
    let err = h.berth_err(&["start", "jobs-bad"]).unwrap();

    assert_eq!(h.status_json("jobs-ok").unwrap()["state"], "exited");
    let bad = h.status_json("jobs-bad").unwrap();
    assert_eq!(
        (bad["state"].as_str(), bad["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    assert!(
        err.starts_with("berth: ") && err.contains("code 3"),
        "{err}"
    );
}

#[test]
fn environment_and_working_directory_reach_the_service() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nType=oneshot\nEnvironment=GREETING=\"hi there\" OTHER=x\nWorkingDirectory=/tmp\n\
                ExecStart=/bin/sh -c 'echo \"$GREETING|$OTHER|$(pwd)\"'\n";
    ImageBuilder::new(&h.images_dir().join("envy"))
        .unit("envy.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "envy"]).unwrap();

    h.berth_ok(&["start", "envy"]).unwrap();

    assert!(log_text(&h, "envy").unwrap().contains("hi there|x|/tmp"));
}

#[test]
fn sandbox_namespaces_differ_from_the_host() {
    let h = harness_with_probe("--loop").unwrap();

    let (_, pid) = run_probe(&h).unwrap();

    for ns in ["mnt", "pid", "ipc", "uts"] {
        assert_ne!(
            ns_inode(pid, ns).unwrap(),
            ns_inode(std::process::id(), ns).unwrap(),
            "{ns} shared"
        );
    }
}

#[test]
fn sandbox_runs_with_a_dynamic_uid_and_no_privileges() {
    // Level 2's dynamic uid; level 3's image users: image_users.rs.
    let h = harness_with_probe_at("--loop", &["--profile", "default@2"]).unwrap();

    let (probe, pid) = run_probe(&h).unwrap();

    let uid = probe["uid"].as_u64().unwrap();
    assert!((61184..=65519).contains(&uid));
    assert_eq!(probe["gid"].as_u64(), Some(uid));
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            proc_status_field(pid, cap).unwrap().trim(),
            "0000000000000000",
            "{cap}"
        );
    }
    assert_eq!(proc_status_field(pid, "NoNewPrivs").unwrap().trim(), "1");
    assert_eq!(
        probe["status"]["NoNewPrivs"].as_str().map(str::trim),
        Some("1")
    );
}

#[test]
fn sandbox_leaks_no_fds_and_has_no_controlling_terminal() {
    let h = harness_with_probe("--loop").unwrap();

    let (probe, pid) = run_probe(&h).unwrap();

    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut fds: Vec<u32> = fds.iter().map(|f| f.parse().unwrap()).collect();
    fds.sort();
    assert_eq!(fds, vec![0, 1, 2]);
    assert_eq!(probe["ctty"], false);
    assert_eq!(probe["sid"], probe["pid"]);
}

#[test]
fn sandbox_hides_host_files_and_has_a_private_read_only_root() {
    let h = Harness::start().unwrap();
    let marker = h.dir().join("host-marker");
    std::fs::write(&marker, "secret").unwrap();
    let args = format!(
        "--check-path {} --check-path /etc/shadow --loop",
        marker.display()
    );
    ImageBuilder::new(&h.images_dir().join("probe"))
        .probe()
        .unit("probe.service", &probe_unit(&args))
        .build()
        .unwrap();
    h.berth_ok(&["attach", "probe"]).unwrap();

    let (probe, _) = run_probe(&h).unwrap();

    assert_eq!(probe["visible"][marker.to_str().unwrap()], false);
    assert_eq!(probe["visible"]["/etc/shadow"], false);
    assert_eq!(probe["root_writable"], false);
    assert_eq!(probe["tmp_writable"], true);
    assert_eq!(probe["tmp_entries"], serde_json::json!([]));
}

#[test]
fn stop_kills_every_process_of_the_service() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nTimeoutStopSec=1\n\
                ExecStart=/bin/sh -c 'trap \"\" TERM; sleep 1000 & sleep 1000 & while :; do sleep 1; done'\n";
    ImageBuilder::new(&h.images_dir().join("stubborn"))
        .unit("stubborn.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "stubborn"]).unwrap();
    h.berth_ok(&["start", "stubborn"]).unwrap();
    let pid = h.status_json("stubborn").unwrap()["main_pid"]
        .as_u64()
        .unwrap() as u32;
    let pidns = ns_inode(pid, "pid").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    h.berth_ok(&["stop", "stubborn"]).unwrap();

    let left: Vec<u32> = berth_testkit::procfs::all_pids()
        .into_iter()
        .filter(|p| ns_inode(*p, "pid").ok() == Some(pidns))
        .collect();
    assert!(left.is_empty(), "processes left in the sandbox: {left:?}");
    // The stop needed the final SIGKILL: stopped, with result timeout.
    let status = h.status_json("stubborn").unwrap();
    assert_eq!(status["state"], "stopped");
    assert_eq!(status["result"], "timeout");
}

#[test]
fn restart_gives_a_new_main_process() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    let first = h.status_json("hello").unwrap()["main_pid"]
        .as_u64()
        .unwrap();

    h.berth_ok(&["restart", "hello"]).unwrap();

    let status = h.status_json("hello").unwrap();
    assert_eq!(status["state"], "running");
    assert_ne!(status["main_pid"].as_u64().unwrap(), first);
    assert!(!process_exists(first as u32));
}

#[test]
fn running_service_is_readopted_after_a_berthd_restart() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    let before = h.status_json("hello").unwrap();

    h.restart_berthd().unwrap();

    h.wait_for(|| Ok(h.status_json("hello")?["state"] == "running"), WAIT)
        .unwrap();
    let after = h.status_json("hello").unwrap();
    assert_eq!(after["main_pid"], before["main_pid"]);
    assert_eq!(after["uid"], before["uid"]);
    h.berth_ok(&["stop", "hello"]).unwrap();
    assert!(!process_exists(before["main_pid"].as_u64().unwrap() as u32));
}

#[test]
fn sandbox_dev_holds_only_the_minimal_devices() {
    let h = harness_with_probe("--loop").unwrap();

    let (probe, _) = run_probe(&h).unwrap();

    let mut dev: Vec<String> = probe["dev_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    dev.sort();
    for expected in [
        "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero",
    ] {
        assert!(
            dev.iter().any(|d| d == expected),
            "/dev lacks {expected}: {dev:?}"
        );
    }
    // `log`: the symlink to the sandbox's syslog socket, as systemd's PrivateDevices= has it.
    let allowed = [
        "core", "fd", "full", "log", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
        "stdout", "tty", "urandom", "zero",
    ];
    assert!(
        dev.iter().all(|d| allowed.contains(&d.as_str())),
        "unexpected entries in /dev: {dev:?}"
    );
}

#[test]
fn image_inspect_shows_units_and_os_release() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    let details = h
        .berth_json(&["image", "inspect", "hello", "--cat"])
        .unwrap();

    assert_eq!(details["units"][0]["name"], "hello.service");
    assert!(
        details["units"][0]["contents"]
            .as_str()
            .unwrap()
            .contains("ExecStart=")
    );
    assert!(details["os_release"].as_str().unwrap().contains("ID="));
}

#[test]
fn sandbox_image_mounts_are_read_only_nosuid_nodev() {
    let h = harness_with_probe("--loop").unwrap();

    let (probe, _) = run_probe(&h).unwrap();

    let mounts = probe["mounts"].as_array().unwrap();
    let image_dirs = ["/", "/usr", "/etc", "/bin"];
    for dir in image_dirs {
        let mount = mounts
            .iter()
            .find(|m| m["mount_point"] == dir)
            .unwrap_or_else(|| panic!("{dir} not mounted"));
        let options: Vec<&str> = mount["options"].as_str().unwrap().split(',').collect();
        for flag in ["ro", "nosuid", "nodev"] {
            assert!(options.contains(&flag), "{dir} lacks {flag}: {options:?}");
        }
    }
    for writable in ["/tmp", "/run", "/dev/shm"] {
        let mount = mounts
            .iter()
            .find(|m| m["mount_point"] == writable)
            .unwrap();
        let options = mount["options"].as_str().unwrap();
        assert!(
            options.starts_with("rw") && options.contains("nosuid") && options.contains("nodev"),
            "{writable}: {options}"
        );
    }
}

#[test]
fn sandbox_has_its_own_proc_with_an_init_as_pid_1() {
    let h = harness_with_probe("--loop").unwrap();

    let (probe, pid) = run_probe(&h).unwrap();

    // A child of the init; under the default profile it is not always pid 2 (its sandbox's
    // set-up may take a pid first).
    assert_eq!(probe["ppid"], 1, "the service is the init's child");
    assert!(
        probe["pid"].as_u64().is_some_and(|p| p < 10),
        "{}",
        probe["pid"]
    );
    assert_ne!(
        probe["pid"].as_u64(),
        Some(u64::from(pid)),
        "/proc shows host pids"
    );
    let proc_mount = probe["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount_point"] == "/proc")
        .cloned();
    assert_eq!(proc_mount.unwrap()["fs_type"], "proc");
}

use berth_testkit::open_fd_count as open_fds;

/// `pid`'s fd count once it has stayed the same for 300 ms: berthd notices a finished CLI's
/// connection asynchronously, so a single sample may still include it.
fn settled_open_fds(pid: u32) -> usize {
    let mut last = open_fds(pid);
    let mut stable_since = std::time::Instant::now();
    while stable_since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        let now = open_fds(pid);
        if now != last {
            last = now;
            stable_since = std::time::Instant::now();
        }
    }
    last
}

#[test]
fn abandoned_log_follower_of_a_quiet_service_is_dropped() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nExecStart=/bin/sleep 1000\n";
    ImageBuilder::new(&h.images_dir().join("quiet"))
        .unit("quiet.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "quiet"]).unwrap();
    h.berth_ok(&["start", "quiet"]).unwrap();
    let berthd = h.berthd_pid().unwrap();
    let baseline = settled_open_fds(berthd);
    let mut follower = h.berth_command(&["logs", "-f", "quiet"]).spawn().unwrap();
    h.wait_for(|| Ok(open_fds(berthd) > baseline), WAIT)
        .unwrap();

    follower.kill().unwrap();
    follower.wait().unwrap();

    h.wait_for(|| Ok(open_fds(berthd) <= baseline), Duration::from_secs(12))
        .unwrap();
}

#[test]
fn members_of_the_configured_admin_group_may_attach() {
    let h = Harness::start_with_config("admin_group = \"nogroup\"\n").unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    let out = berth_as_nobody(&h, &[], &["attach", "hello"]);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn oneshot_runs_every_exec_start_in_order_and_honours_the_dash_prefix() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nType=oneshot\n\
                ExecStart=/bin/sh -c 'echo first'\n\
                ExecStart=-/bin/sh -c 'echo second; exit 4'\n\
                ExecStart=/bin/sh -c 'echo third'\n";
    ImageBuilder::new(&h.images_dir().join("steps"))
        .unit("steps.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "steps"]).unwrap();

    h.berth_ok(&["start", "steps"]).unwrap();

    let text = log_text(&h, "steps").unwrap();
    let order: Vec<&str> = ["first", "second", "third"]
        .into_iter()
        .filter(|w| text.contains(w))
        .collect();
    assert_eq!(order, ["first", "second", "third"], "{text}");
    assert!(text.find("first") < text.find("second") && text.find("second") < text.find("third"));
    assert_eq!(h.status_json("steps").unwrap()["state"], "exited");
}

#[test]
fn oneshot_stops_at_the_first_failing_exec_start() {
    let h = Harness::start().unwrap();
    let unit = "[Service]\nType=oneshot\n\
                ExecStart=/bin/sh -c 'exit 2'\n\
                ExecStart=/bin/sh -c 'echo never'\n";
    ImageBuilder::new(&h.images_dir().join("halt"))
        .unit("halt.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "halt"]).unwrap();

    h.berth_err(&["start", "halt"]).unwrap();

    assert!(!log_text(&h, "halt").unwrap().contains("never"));
    assert_eq!(h.status_json("halt").unwrap()["exit_code"], 2);
}

#[test]
fn exit_while_berthd_was_down_is_reported_after_it_returns() {
    let mut h = Harness::start().unwrap();
    let unit = "[Service]\nExecStart=/bin/sh -c 'sleep 1; exit 7'\n";
    ImageBuilder::new(&h.images_dir().join("brief"))
        .unit("brief.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "brief"]).unwrap();
    h.berth_ok(&["start", "brief"]).unwrap();

    h.kill_berthd().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    h.start_berthd().unwrap();

    h.wait_for(|| Ok(h.status_json("brief")?["state"] == "failed"), WAIT)
        .unwrap();
    assert_eq!(h.status_json("brief").unwrap()["exit_code"], 7);
}

#[test]
fn berthd_exits_when_its_helper_dies_and_a_restart_readopts_services() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    let main_pid = h.status_json("hello").unwrap()["main_pid"].clone();
    let (berthd, helper) = (h.berthd_pid().unwrap(), h.helper_pid().unwrap());

    // SAFETY: plain kill(2) of the helper this test's berthd started.
    assert_eq!(unsafe { libc::kill(helper as i32, libc::SIGKILL) }, 0);

    h.wait_for(|| Ok(!process_exists(berthd)), WAIT).unwrap();
    assert!(
        h.stderr_log().contains("berth-helper exited"),
        "{}",
        h.stderr_log()
    );
    let status = h.stop_berthd().unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "berthd should fail: {status:?}"
    );
    h.start_berthd().unwrap();
    h.wait_for(|| Ok(h.status_json("hello")?["state"] == "running"), WAIT)
        .unwrap();
    assert_eq!(h.status_json("hello").unwrap()["main_pid"], main_pid);
    h.berth_ok(&["start", "hello"]).unwrap();
}

#[test]
fn the_helper_exits_with_a_killed_berthd_and_an_immediate_restart_serves() {
    let mut h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    for _ in 0..3 {
        let helper = h.helper_pid().unwrap();
        h.kill_berthd().unwrap();
        h.start_berthd().unwrap();

        h.wait_for(|| Ok(!process_exists(helper)), WAIT).unwrap();
        assert_ne!(h.helper_pid(), Some(helper));
        h.berth_ok(&["start", "hello"]).unwrap();
        h.berth_ok(&["stop", "hello"]).unwrap();
    }
}

/// Runs the CLI as nobody (uid/gid 65534) with the given supplementary groups.
fn berth_as_nobody(h: &Harness, groups: &[u32], args: &[&str]) -> std::process::Output {
    h.berth_as(65534, 65534, groups, args).unwrap()
}

#[test]
fn supplementary_membership_of_the_admin_group_is_honoured() {
    let h = Harness::start_with_config("admin_group = \"users\"\n").unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    let outsider = berth_as_nobody(&h, &[], &["attach", "hello"]);
    let member = berth_as_nobody(&h, &[100], &["attach", "hello"]);

    assert!(!outsider.status.success());
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
}

#[test]
fn setuid_root_binary_in_the_image_grants_nothing() {
    let h = Harness::start().unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let unit = "[Service]\nType=oneshot\nExecStart=/usr/suid/busybox sh -c 'echo euid=$(/usr/suid/busybox id -u)'\n";
    ImageBuilder::new(&h.images_dir().join("suid"))
        .file("usr/suid/busybox", busybox, 0o4755)
        .unit("suid.service", unit)
        .build()
        .unwrap();
    let mode = std::fs::metadata(h.images_dir().join("suid/usr/suid/busybox")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o4000,
        0o4000
    );
    // As a dynamic uid (level 2): at level 3 a unit without User= is root of its own user
    // namespace already.
    h.berth_ok(&["attach", "suid", "--profile", "default@2"])
        .unwrap();

    h.berth_ok(&["start", "suid"]).unwrap();

    let text = log_text(&h, "suid").unwrap();
    let euid: u32 = text
        .split("euid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no euid in {text}"));
    assert!(
        (61184..=65519).contains(&euid),
        "setuid binary ran with euid {euid}"
    );
}

#[test]
fn detach_of_a_running_image_needs_now_which_stops_it_first() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    let pid = h.status_json("hello").unwrap()["main_pid"]
        .as_u64()
        .unwrap() as u32;

    let refused = h.berth_err(&["detach", "hello"]).unwrap();
    h.berth_ok(&["detach", "--now", "hello"]).unwrap();

    assert!(refused.contains("is active"), "{refused}");
    assert!(!process_exists(pid));
    assert_eq!(
        h.berth(&["is-attached", "hello"]).unwrap().status.code(),
        Some(1)
    );
}

#[test]
fn a_restarted_berthd_talks_to_its_own_helper_not_the_previous_one_winding_down() {
    let mut h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("once"))
        .unit(
            "once.service",
            "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "once"]).unwrap();
    let old_helper = h.helper_pid().unwrap();
    // The previous helper, stopped, still holds a socket that accepts connections; it exits
    // only once it runs again and sees its lifeline closed.
    let pid = rustix::process::Pid::from_raw(old_helper as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
    });

    h.restart_berthd().unwrap();
    let started = h.berth(&["start", "once"]).unwrap();
    resume.join().unwrap();

    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
}
