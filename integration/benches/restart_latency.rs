//! Restart latency of a crashing `Restart=always` service: from the exit of one run to the
//! next run's main process having exec'd and written its first line (DESIGN.md §9).
//!
//! The unit runs `/bin/sh -c 'echo up; exit 1'` with `RestartSec=0` (berth's own machinery,
//! no deliberate pause; systemd's default RestartSec= adds 100 ms) and the rate limit off. The
//! supervisor stamps each line as it reads it, so the gap between two `up` lines is: the exit,
//! the supervisor's report, berthd's Release and uid release, the next Spawn through
//! berth-helper (a whole new sandbox: namespaces, mounts, seccomp), the exec of sh and its
//! echo. The run itself (sh's start, echo, exit) is part of each gap; `/bin/true` alone on this
//! host takes about 1 ms.
//! Run as root: `scripts/build-release.sh && cargo bench -p berth-integration --bench
//! restart_latency` (BERTH_BENCH_RUNS=N restarts, default 200).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use berth_testkit::bench::{env_or, listing_only};
use berth_testkit::{Harness, ImageBuilder};

const UNIT: &str = "[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nRestart=always\nRestartSec=0\n\
                    ExecStart=/bin/sh -c 'echo up; exit 1'\n";

fn ms(usec: u64) -> f64 {
    usec as f64 / 1000.0
}

/// The capture times (µs since the epoch) of the unit's `up` lines, oldest first.
fn up_times(h: &Harness) -> Result<Vec<u64>> {
    let out = h.berth_ok(&["logs", "crash", "-o", "json", "-n", "100000"])?;
    let mut times = Vec::new();
    for line in out.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).context("a log line")?;
        // `berth logs -o json` uses journald's field names.
        if entry["MESSAGE"] != "up" {
            continue;
        }
        let usec = entry["__REALTIME_TIMESTAMP"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .context("a log line without its time")?;
        times.push(usec);
    }
    Ok(times)
}

fn main() -> Result<()> {
    if listing_only() {
        return Ok(());
    }
    let runs: usize = env_or("BERTH_BENCH_RUNS", 200);
    let h = Harness::start()?;
    ImageBuilder::new(&h.images_dir().join("crash"))
        .unit("crash.service", UNIT)
        .build()?;
    h.berth_ok(&["attach", "crash"])?;

    // A start of a unit that fails at once reports the failure; the restarts go on.
    let _ = h.berth(&["start", "crash"])?;
    let mut times = Vec::new();
    h.wait_for(
        || {
            times = up_times(&h)?;
            Ok(times.len() > runs)
        },
        Duration::from_secs(600),
    )?;
    h.berth_ok(&["stop", "crash"])?;
    let status = h.status_json("crash")?;

    let mut gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.truncate(runs);
    gaps.sort_unstable();
    ensure!(!gaps.is_empty(), "no restart seen");
    let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q).round() as usize];
    println!(
        "Restart=always, RestartSec=0, crash at once: {} restarts (berth counted {})",
        gaps.len(),
        status["restarts"]
    );
    println!(
        "exit -> next run's first line: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  min {:.2} ms  \
         max {:.2} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(gaps[0]),
        ms(gaps[gaps.len() - 1])
    );
    Ok(())
}
