//! `berth start` end to end against bubblewrap on the same busybox rootfs (DESIGN.md §9).
//!
//! berth: `berth start bench` of a `Type=oneshot` unit running `/bin/true`: the CLI process
//! connects to berthd, which asks berth-helper to build the sandbox (mount, pid, ipc, uts
//! namespaces, read-only root, private /tmp /run /dev /proc, dynamic uid, no caps, NNP), the
//! service execs and exits, and the CLI returns once berthd has its exit status.
//! bwrap: the same rootfs, namespaces and mounts, `/bin/true`, uid 61300 (bwrap needs a user
//! namespace for that), all capabilities dropped, new session.
//! Run as root: `scripts/build-release.sh && cargo bench -p berth-integration --bench
//! start_latency` (BERTH_BENCH_RUNS=N).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use berth_testkit::{Harness, ImageBuilder};

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

/// How the CLI binary is linked: its start-up is part of every `berth start`, and
/// scripts/build-release.sh links it statically, as shipped.
fn linking_of(binary: &std::path::Path) -> String {
    let described = Command::new("file")
        .arg("-L")
        .arg("-b")
        .arg(binary)
        .output();
    match described {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("static") => {
            "statically linked".into()
        }
        Ok(_) => {
            "dynamically linked (run scripts/build-release.sh for the shipped static CLI)".into()
        }
        Err(e) => format!("unknown (file: {e})"),
    }
}

fn main() -> Result<()> {
    if berth_testkit::bench::listing_only() {
        return Ok(());
    }
    let runs: usize = berth_testkit::bench::env_or("BERTH_BENCH_RUNS", 200);
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
    let run = |command: &mut Command| -> Result<Duration> {
        let start = Instant::now();
        let out = command.output()?;
        let elapsed = start.elapsed();
        ensure!(
            out.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(elapsed)
    };
    let berth_start = |unit: &str| {
        let mut c = Command::new(&berth);
        c.arg("--socket").arg(&socket).args(["start", unit]);
        c
    };
    let bwrap = || {
        let mut c = Command::new("bwrap");
        c.args([
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
        .args(["--new-session", "--die-with-parent", "/bin/true"]);
        c
    };
    let plain = || Command::new(image.join("bin/true"));

    // Warm-up, then the contenders take turns in every round, so drift in the machine's load
    // hits them alike. `exec'd` is the DESIGN.md §9 metric proper: CLI start until the service
    // has exec'd (Type=exec returns then); the stop after it is not timed.
    for _ in 0..10 {
        run(&mut berth_start("bench"))?;
        run(&mut bwrap())?;
    }
    let (mut oneshot, mut exec, mut wrapped, mut baseline) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        oneshot.push(run(&mut berth_start("bench"))?);
        wrapped.push(run(&mut bwrap())?);
        exec.push(run(&mut berth_start("bench-exec"))?);
        h.berth_ok(&["stop", "bench-exec"])?;
        baseline.push(run(&mut plain())?);
    }
    for samples in [&mut oneshot, &mut exec, &mut wrapped, &mut baseline] {
        samples.sort();
    }

    println!(
        "start of /bin/true (sleep for exec'd) on the same busybox rootfs, {runs} interleaved rounds:"
    );
    println!("berth CLI: {}", linking_of(&berth));
    let b = report("berth start (oneshot)", &oneshot);
    let e = report("berth start (exec'd)", &exec);
    let w = report("bwrap", &wrapped);
    report("plain fork+exec (no sandbox)", &baseline);
    println!("ratio berth oneshot/bwrap (p50): {:.2}", b / w);
    println!("ratio berth exec'd/bwrap (p50): {:.2}", e / w);
    Ok(())
}
