//! `berth start` end to end against bubblewrap on the same busybox rootfs (DESIGN.md §9).
//!
//! berth: `berth start bench` of a `Type=oneshot` unit running `/bin/true`: the CLI process
//! connects to berthd, which asks berth-helper to build the sandbox (mount, pid, ipc, uts
//! namespaces, read-only root, private /tmp /run /dev /proc, dynamic uid, no caps, NNP), the
//! service execs and exits, and the CLI returns once berthd has its exit status.
//! bwrap: the same rootfs, namespaces and mounts, `/bin/true`, uid 61300 (bwrap needs a user
//! namespace for that), all capabilities dropped, new session.
//! Run as root: `cargo bench -p berth-integration --bench start_latency` (BERTH_BENCH_RUNS=N).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use berth_testkit::{Harness, ImageBuilder};

fn measure(runs: usize, mut run: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    for _ in 0..runs.min(10) {
        run()?; // warm-up: page cache, first-allocation costs
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        run()?;
        samples.push(start.elapsed());
    }
    samples.sort();
    Ok(samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, samples: &[Duration]) -> f64 {
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name:<28} p50 {:>7.2} ms  mean {:>7.2} ms  p90 {:>7.2} ms  min {:>6.2} ms  ({} runs)",
        ms(p(0.5)),
        ms(mean),
        ms(p(0.9)),
        ms(samples[0]),
        samples.len()
    );
    ms(p(0.5))
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` lists benches; nothing to list here
    }
    let runs: usize = std::env::var("BERTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let h = Harness::start()?;
    let image = ImageBuilder::new(&h.images_dir().join("bench"))
        .unit(
            "bench.service",
            "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        )
        .unit(
            "bench-exec.service",
            "[Service]\nType=exec\nExecStart=/bin/sleep 1000\n",
        )
        .build()?;
    h.berth_ok(&["attach", "bench"])?;

    let berth = h.bin_dir().join("berth");
    let socket = h.socket();
    let berth_samples = measure(runs, || {
        let out = Command::new(&berth)
            .arg("--socket")
            .arg(&socket)
            .args(["start", "bench"])
            .output()?;
        ensure!(
            out.status.success(),
            "berth start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })?;
    // The DESIGN.md §9 metric proper: CLI start to the service exec'd (Type=exec returns then);
    // the stop between runs is not timed.
    let mut exec_samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(&berth)
            .arg("--socket")
            .arg(&socket)
            .args(["start", "bench-exec"])
            .output()?;
        exec_samples.push(start.elapsed());
        ensure!(
            out.status.success(),
            "berth start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        h.berth_ok(&["stop", "bench-exec"])?;
    }
    exec_samples.sort();
    let bwrap_samples = measure(runs, || {
        let status = Command::new("bwrap")
            .args([
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-user",
            ])
            .args(["--uid", "61300", "--gid", "61300", "--cap-drop", "ALL"])
            .arg("--ro-bind")
            .arg(&image)
            .arg("/")
            .args([
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
            ])
            .args(["--new-session", "--die-with-parent", "/bin/true"])
            .status()
            .context("running bwrap (apt-get install bubblewrap)")?;
        ensure!(status.success(), "bwrap failed");
        Ok(())
    })?;
    let baseline = measure(runs, || {
        ensure!(Command::new(image.join("bin/true")).status()?.success());
        Ok(())
    })?;

    println!("start to exit of /bin/true on the same busybox rootfs:");
    let b = report("berth start (oneshot)", &berth_samples);
    let e = report("berth start (exec'd)", &exec_samples);
    let w = report("bwrap", &bwrap_samples);
    report("plain fork+exec (no sandbox)", &baseline);
    println!("ratio berth oneshot/bwrap (p50): {:.2}", b / w);
    println!("ratio berth exec'd/bwrap (p50): {:.2}", e / w);
    Ok(())
}
