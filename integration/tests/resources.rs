//! One cgroup per service, with limits (ISSUE 8 item 4): the profile's TasksMax= holds a
//! service that forks without end, MemoryMax= holds one filling its own tmpfs (charged to it),
//! `status` shows the service's accounting, a unit cannot loosen its profile's limits, and a
//! stopped service leaves no process and no cgroup behind.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use berth_testkit::{Harness, ImageBuilder};

const WAIT: Duration = Duration::from_secs(60);

fn attach(h: &Harness, name: &str, unit: &str) {
    ImageBuilder::new(&h.images_dir().join(name))
        .unit(&format!("{name}.service"), unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", name]).unwrap();
}

/// The host's task limit as systemd counts it, and 15% of it (the profiles' TasksMax=).
fn profile_tasks_max() -> u64 {
    let read = |p: &str| -> u64 { std::fs::read_to_string(p).unwrap().trim().parse().unwrap() };
    let tasks = (read("/proc/sys/kernel/pid_max") - 1).min(read("/proc/sys/kernel/threads-max"));
    tasks * 15 / 100
}

/// The directories of the cgroups `pid` is in below a `berth/` directory, in every hierarchy.
fn service_cgroups(pid: u64) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (
            fields.next(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        if !path.contains("/berth/") {
            continue;
        }
        let candidates = if controllers.is_empty() {
            vec![
                "/sys/fs/cgroup/unified".to_owned(),
                "/sys/fs/cgroup".to_owned(),
            ]
        } else {
            vec![format!("/sys/fs/cgroup/{controllers}")]
        };
        for root in candidates {
            let dir = format!("{root}{path}");
            if std::path::Path::new(&dir).is_dir() {
                dirs.push(dir);
                break;
            }
        }
    }
    dirs
}

fn field(status: &serde_json::Value, name: &str) -> Option<u64> {
    status[name].as_u64()
}

#[test]
fn a_service_forking_without_end_is_held_at_the_profiles_task_limit() {
    let h = Harness::start().unwrap();
    let limit = profile_tasks_max();
    assert!(
        limit < 5000,
        "this host's limit ({limit}) would not hold 5000"
    );
    // No TasksMax= of its own: the default profile's (default@2) holds it.
    attach(
        &h,
        "forker",
        // The subshell ends at its first refused fork (busybox sh does), leaving its sleeps.
        "[Service]\nExecStart=/bin/sh -c '(for i in $$(seq 5000); do sleep 1000 & done); \
         echo forked; exec sleep 1000'\n",
    );

    h.berth_ok(&["start", "forker"]).unwrap();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = h.status_json("forker").unwrap();
        most = most.max(field(&status, "tasks").unwrap_or(0));
        if h.berth_ok(&["logs", "forker"]).unwrap().contains("forked") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never done forking: {status}\n{}",
            h.berth_ok(&["logs", "forker"]).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = h.status_json("forker").unwrap();
    let main_pid = field(&status, "main_pid").unwrap();
    let cgroups = service_cgroups(main_pid);
    let log = h.berth_ok(&["logs", "forker"]).unwrap();
    h.berth_ok(&["stop", "forker"]).unwrap();

    assert_eq!(status["state"], "running", "{status}");
    assert!(most <= limit, "{most} tasks, limit {limit}");
    assert!(
        field(&status, "tasks").unwrap() + 10 >= limit,
        "held well below the limit: {status}"
    );
    assert!(log.contains("can't fork"), "no fork was refused");
    assert!(!cgroups.is_empty(), "the service had no cgroup of its own");
    h.wait_for(
        || Ok(cgroups.iter().all(|d| !std::path::Path::new(d).exists())),
        WAIT,
    )
    .unwrap();
    // The killed ones may show for a moment as zombies until they are reaped.
    let left = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("cgroup")).ok())
            .filter(|c| c.contains("/berth/forker.service-"))
            .count()
    };
    h.wait_for(|| Ok(left() == 0), WAIT)
        .unwrap_or_else(|e| panic!("{} processes outlived the stop: {e}", left()));
}

/// Runs `dd` writing 128 MiB into the service's own /tmp (a tmpfs) under `directive`;
/// returns its final status.
fn fill_tmp(h: &Harness, name: &str, directive: &str) -> serde_json::Value {
    attach(
        h,
        name,
        &format!(
            "[Service]\n{directive}ExecStart=/bin/dd if=/dev/zero of=/tmp/fill bs=1M count=128\n"
        ),
    );
    h.berth_ok(&["start", name]).unwrap();
    let mut status = h.status_json(name).unwrap();
    h.wait_for(
        || {
            status = h.status_json(name)?;
            Ok(!matches!(
                status["state"].as_str(),
                Some("running" | "starting")
            ))
        },
        WAIT,
    )
    .unwrap();
    status
}

#[test]
fn memory_max_holds_a_service_filling_its_own_tmpfs() {
    let h = Harness::start().unwrap();

    let limited = fill_tmp(&h, "limited", "MemoryMax=32M\n");
    let free = fill_tmp(&h, "free", "");

    assert_eq!(free["exit_code"], 0, "control: {free}");
    assert_eq!(limited["state"], "failed", "{limited}");
    assert_eq!(
        limited["exit_signal"], 9,
        "not killed at the limit: {limited}"
    );
}

#[test]
fn status_shows_the_services_tasks_memory_and_cpu_time() {
    let h = Harness::start().unwrap();
    attach(
        &h,
        "counted",
        "[Service]\nMemoryHigh=64M\nExecStart=/bin/sh -c 'sleep 1000 & sleep 1000 & exec sleep 1000'\n",
    );
    h.berth_ok(&["start", "counted"]).unwrap();

    let mut status = h.status_json("counted").unwrap();
    h.wait_for(
        || {
            status = h.status_json("counted")?;
            Ok(field(&status, "tasks") == Some(4))
        },
        WAIT,
    )
    .unwrap();
    let text = h.berth_ok(&["status", "counted"]).unwrap();
    h.berth_ok(&["stop", "counted"]).unwrap();
    let stopped = h.status_json("counted").unwrap();

    // init, two sleeps and main.
    assert_eq!(field(&status, "tasks"), Some(4), "{status}");
    assert!(
        field(&status, "memory_current").is_some_and(|m| m > 0),
        "{status}"
    );
    assert!(
        field(&status, "memory_peak") >= field(&status, "memory_current"),
        "{status}"
    );
    assert!(field(&status, "cpu_usec").is_some(), "{status}");
    assert!(text.contains("     Tasks: 4"), "{text}");
    assert!(text.contains("    Memory: "), "{text}");
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified").is_dir()
        && std::path::Path::new("/sys/fs/cgroup/memory").is_dir();
    let notes = status["resource_notes"].to_string();
    assert_eq!(
        notes.contains("MemoryHigh= is not applied"),
        hybrid,
        "{notes}"
    );
    assert!(stopped["tasks"].is_null(), "{stopped}");
}

#[test]
fn a_unit_raising_its_profiles_task_limit_is_warned_about_and_held() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("greedy"))
        .unit(
            "greedy.service",
            "[Service]\nTasksMax=infinity\nExecStart=/bin/sleep 1000\n",
        )
        .build()
        .unwrap();

    let out = h.berth(&["attach", "greedy"]).unwrap();
    h.berth_ok(&["start", "greedy"]).unwrap();
    let status = h.status_json("greedy").unwrap();
    let cgroups = service_cgroups(field(&status, "main_pid").unwrap());
    let limit = cgroups
        .iter()
        .find_map(|d| std::fs::read_to_string(format!("{d}/pids.max")).ok());
    h.berth_ok(&["stop", "greedy"]).unwrap();

    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("TasksMax=infinity is ignored: it would loosen the sandbox"),
        "{said}"
    );
    assert_eq!(
        limit.as_deref().map(str::trim),
        Some(profile_tasks_max().to_string().as_str())
    );
}
