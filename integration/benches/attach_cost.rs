//! Attach and first start of a raw squashfs image at 10 MB and at 1 GB, side by side
//! (DESIGN.md §9: attaching costs the same at any size; nothing is copied, the helper mounts).
//!
//! Each image is the busybox rootfs plus one file of incompressible data (a fast PRNG) filling
//! it to its size, packed by mksquashfs with no compression (`-noI -noD -noF -noX`), so
//! building 1 GB takes seconds. One round, per size in turn: `berth attach FILE`, `berth
//! start` of a `Type=oneshot` `/bin/true` unit (the first start after attach: the helper binds
//! a loop device and mounts), `berth image inspect FILE`, then `berth detach` (untimed).
//! Run as root: `scripts/build-release.sh && cargo bench -p berth-integration --bench
//! attach_cost` (BERTH_BENCH_RUNS=N rounds, BERTH_BENCH_BIG_MB for the large image).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use berth_testkit::{Harness, ImageBuilder};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `bytes` of xorshift64* output: incompressible, and far faster than /dev/urandom.
fn write_noise(path: &Path, bytes: u64) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ bytes;
    let mut block = vec![0u8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// The image `dir/<name>.raw` of about `megabytes` MB, its unit `<name>.service`.
fn build(dir: &Path, name: &str, megabytes: u64) -> Result<PathBuf> {
    let tree = ImageBuilder::new(&dir.join("trees").join(name))
        .unit(
            &format!("{name}.service"),
            "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
        )
        .build()?;
    write_noise(&tree.join("usr/payload"), megabytes * 1_000_000)?;
    let raw = dir.join(format!("{name}.raw"));
    let packed = Command::new("mksquashfs")
        .arg(&tree)
        .arg(&raw)
        .args(["-noappend", "-quiet", "-no-progress"])
        .args(["-noI", "-noD", "-noF", "-noX"])
        .status()?;
    ensure!(packed.success(), "mksquashfs failed for {name}");
    std::fs::remove_file(tree.join("usr/payload"))?;
    std::fs::set_permissions(&raw, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(raw)
}

#[derive(Default)]
struct Samples {
    attach: Vec<Duration>,
    start: Vec<Duration>,
    inspect: Vec<Duration>,
}

fn p50(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[(samples.len() - 1) / 2]
}

fn main() -> Result<()> {
    if berth_testkit::bench::listing_only() {
        return Ok(());
    }
    let runs: usize = berth_testkit::bench::env_or("BERTH_BENCH_RUNS", 20);
    let big_mb: u64 = berth_testkit::bench::env_or("BERTH_BENCH_BIG_MB", 1000);
    let h = Harness::start()?;
    let built = Instant::now();
    let images = [("small", 10), ("large", big_mb)]
        .map(|(name, mb)| build(h.dir(), name, mb).map(|path| (name, path)));
    let build_time = built.elapsed();
    let berth = h.bin_dir().join("berth");
    let timed = |args: &[&str]| -> Result<Duration> {
        let start = Instant::now();
        let out = Command::new(&berth)
            .arg("--socket")
            .arg(h.socket())
            .args(args)
            .output()?;
        let elapsed = start.elapsed();
        ensure!(
            out.status.success(),
            "berth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(elapsed)
    };
    let mut images: Vec<(&str, PathBuf, Samples)> = images
        .into_iter()
        .map(|r| r.map(|(name, path)| (name, path, Samples::default())))
        .collect::<Result<_>>()?;
    // One untimed round first (page cache, the first loop device made); then the sizes take
    // turns in every round, so drift in the machine's load hits them alike.
    for round in 0..=runs {
        for (name, path, samples) in &mut images {
            let file = path.to_str().unwrap_or_default();
            let attach = timed(&["attach", file])?;
            let start = timed(&["start", name])?;
            let inspect = timed(&["image", "inspect", file])?;
            timed(&["detach", file])?;
            if round > 0 {
                samples.attach.push(attach);
                samples.start.push(start);
                samples.inspect.push(inspect);
            }
        }
    }
    println!(
        "raw squashfs images (uncompressed, incompressible payload), {runs} interleaved rounds, \
         built in {:.1} s:",
        build_time.as_secs_f64()
    );
    println!(
        "{:<8} {:>10} {:>13} {:>19} {:>15}",
        "image", "size", "attach p50", "first start p50", "inspect p50"
    );
    for (name, path, samples) in &mut images {
        let size = std::fs::metadata(&*path)?.len();
        println!(
            "{:<8} {:>7} MB {:>10.2} ms {:>16.2} ms {:>12.2} ms",
            name,
            size / 1_000_000,
            ms(p50(&mut samples.attach)),
            ms(p50(&mut samples.start)),
            ms(p50(&mut samples.inspect)),
        );
    }
    Ok(())
}
