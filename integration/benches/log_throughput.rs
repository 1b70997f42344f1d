//! Log capture throughput (DESIGN.md §9): one service writes 100-byte lines as fast as it can,
//! and the supervisor turns them into log records. Measured twice: alone, and with a
//! `berth logs -f` follower that is stopped (SIGSTOP) the whole time, to show that a stalled
//! reader does not slow the service down.
//! Run as root: `scripts/build-release.sh && cargo bench -p berth-integration --bench
//! log_throughput` (BERTH_BENCH_MB=N writes N MiB per run instead of 512).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use berth_testkit::{Harness, ImageBuilder};

/// 99 characters and a newline.
const LINE: &str = "berth-log-throughput-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789-wxyz";

fn log_size(h: &Harness) -> u64 {
    let log = h.state_dir().join("logs/flood.service/current.log");
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// Starts the oneshot and returns how long it took until its exit was recorded.
fn run_once(h: &Harness) -> Result<Duration> {
    let t = Instant::now();
    h.berth_ok(&["start", "flood"])?;
    let elapsed = t.elapsed();
    let status = h.status_json("flood")?;
    ensure!(
        status["state"] == "exited",
        "flood ended as {}",
        status["state"]
    );
    Ok(elapsed)
}

fn main() -> Result<()> {
    if berth_testkit::bench::listing_only() {
        return Ok(());
    }
    let mib: u64 = berth_testkit::bench::env_or("BERTH_BENCH_MB", 512);
    let bytes = mib * 1024 * 1024;
    ensure!(LINE.len() == 99, "LINE is {} bytes", LINE.len());
    // No rotation during the run: the log must take all of it, to be measured.
    let h = Harness::start_with_config(&format!("log_max_bytes = {}\n", 4 * bytes))?;
    let unit = format!(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c '/bin/busybox yes {LINE} | /bin/head -c {bytes}'\n"
    );
    ImageBuilder::new(&h.images_dir().join("flood"))
        .unit("flood.service", &unit)
        .build()?;
    h.berth_ok(&["attach", "flood"])?;

    let before = log_size(&h);
    let alone = run_once(&h)?;
    let logged = log_size(&h) - before;
    // Each record adds its timestamp and stream name to the line; a short log means lost lines.
    ensure!(
        logged > bytes,
        "only {logged} of {bytes} bytes reached the log"
    );

    let mut follower = h
        .berth_command(&["logs", "-f", "flood"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(200));
    let stopped = i32::try_from(follower.id())?;
    // SAFETY: plain kill(2) of the follower this bench spawned.
    let signalled = unsafe { libc::kill(stopped, libc::SIGSTOP) };
    ensure!(signalled == 0, "SIGSTOP failed");
    let with_stalled_reader = run_once(&h);
    // SAFETY: as above.
    unsafe { libc::kill(stopped, libc::SIGKILL) };
    follower.wait()?;
    let with_stalled_reader = with_stalled_reader?;

    let rate = |d: Duration| bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64();
    println!("one service writing {mib} MiB of 100-byte lines to its log:");
    println!(
        "alone: {:.2} s, {:.0} MiB/s of output ({:.0} MiB/s of log records written)",
        alone.as_secs_f64(),
        rate(alone),
        logged as f64 / (1024.0 * 1024.0) / alone.as_secs_f64()
    );
    println!(
        "with a stopped `berth logs -f` follower: {:.2} s, {:.0} MiB/s",
        with_stalled_reader.as_secs_f64(),
        rate(with_stalled_reader)
    );
    Ok(())
}
