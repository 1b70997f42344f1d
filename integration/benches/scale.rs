//! Scale (DESIGN.md §9): 1,000 attached units, 500 of them started from cold with one
//! `berth start` (each in its own cgroups with limits: the default profile's TasksMax= and the
//! unit's MemoryMax=), then `berth list` (which reads every service's accounting), berthd's
//! memory and each supervisor's memory (no longer root) while they run, then one `berth stop`
//! of all 500.
//! Run as root: `scripts/build-release.sh && cargo bench -p berth-integration --bench scale`
//! (BERTH_BENCH_RUNNING=N starts N services instead of 500).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use berth_testkit::{Harness, ImageBuilder, process_exists};

const ATTACHED: usize = 1_000;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `kB` field of a /proc status-like file, in KiB.
fn kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Pids of the live supervisors (their process name is `berth-supervise`).
fn supervisors() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "berth-supervise")
                && process_exists(*pid)
        })
        .collect()
}

fn main() -> Result<()> {
    if berth_testkit::bench::listing_only() {
        return Ok(());
    }
    let running: usize = berth_testkit::bench::env_or("BERTH_BENCH_RUNNING", 500);
    ensure!(running <= ATTACHED, "at most {ATTACHED} services");
    let before = supervisors().len();
    let h = Harness::start()?;
    let mut image = ImageBuilder::new(&h.images_dir().join("scale"));
    for i in 0..ATTACHED {
        image = image.unit(
            &format!("scale-{i}.service"),
            "[Service]\nMemoryMax=64M\nExecStart=/bin/sleep 100000\n",
        );
    }
    image.build()?;
    h.berth_ok(&["attach", "scale"])?;
    let units: Vec<String> = (0..running).map(|i| format!("scale-{i}")).collect();
    let unit_args: Vec<&str> = units.iter().map(String::as_str).collect();

    let berth = |args: &[&str]| -> Result<Duration> {
        let t = Instant::now();
        let out = h.berth_command(args).output()?;
        let elapsed = t.elapsed();
        ensure!(
            out.status.success(),
            "berth {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(elapsed)
    };

    let start_all = berth(&[&["start"], unit_args.as_slice()].concat())?;
    let listed = h.berth_json(&["list"])?;
    let running_now = listed
        .as_array()
        .context("list is not an array")?
        .iter()
        .filter(|u| u["state"] == "running")
        .count();
    ensure!(running_now == running, "{running_now} of {running} running");
    let limited = listed
        .as_array()
        .context("list is not an array")?
        .iter()
        .filter(|u| u["state"] == "running" && u["tasks"].as_u64().is_some())
        .count();
    ensure!(
        limited == running,
        "{limited} of {running} in a cgroup of their own"
    );

    let mut list_times = Vec::new();
    for _ in 0..20 {
        list_times.push(berth(&["list"])?);
    }
    list_times.sort();

    let berthd = h.berthd_pid().context("berthd is not running")?;
    let berthd_status = std::fs::read_to_string(format!("/proc/{berthd}/status"))?;
    let berthd_rss = kib(&berthd_status, "VmRSS:").unwrap_or(0);
    let sups = supervisors();
    let (mut rss, mut pss) = (Vec::new(), Vec::new());
    for pid in &sups {
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            rss.extend(kib(&rollup, "Rss:"));
            pss.extend(kib(&rollup, "Pss:"));
        }
    }
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;

    let stop_all = berth(&[&["stop"], unit_args.as_slice()].concat())?;

    println!("{ATTACHED} attached units, {running} started with one `berth start`:");
    println!(
        "start of {running} from cold: {:.2} s ({:.2} ms each)",
        start_all.as_secs_f64(),
        ms(start_all) / running as f64
    );
    println!(
        "`berth list` with {running} running: p50 {:.2} ms, max {:.2} ms",
        ms(list_times[list_times.len() / 2]),
        ms(list_times[list_times.len() - 1])
    );
    println!(
        "berthd RSS {:.1} MiB; {} supervisors (+{} not ours), each RSS {:.2} MiB, PSS {:.2} MiB (means)",
        berthd_rss as f64 / 1024.0,
        sups.len().saturating_sub(before),
        before,
        mean(&rss),
        mean(&pss)
    );
    println!(
        "stop of {running}: {:.2} s ({:.2} ms each)",
        stop_all.as_secs_f64(),
        ms(stop_all) / running as f64
    );
    Ok(())
}
