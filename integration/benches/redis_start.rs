//! Start time of Debian's stock redis-server under berth against bubblewrap on the same rootfs
//! (issue 9, item 6).
//!
//! The image is the test kit's `redis_1.raw` (tests/src/debian_images.rs: debootstrap's
//! bookworm with redis-server, packed as squashfs, cached under /var/cache/berth-tests).
//! Both contenders are timed from the start of their command until redis answers `PING` with
//! `+PONG` on 127.0.0.1:6379, one after the other in every round.
//! - berth: `berth start redis-server` of the image attached with the default profile (the
//!   stock unit: Type=notify, User=redis, its own sandboxing directives), then PING.
//! - bwrap: the same squashfs file loop-mounted read-only, `bwrap` run as the image's redis
//!   uid and gid (setpriv; bwrap maps them onto themselves in its user namespace, so the
//!   image's redis-owned config is readable as under berth's idmapped mount) with its own user,
//!   pid, ipc, uts and cgroup namespaces, the rootfs read-only, fresh /proc, /dev, /run, /tmp,
//!   writable /var/lib/redis and /var/log/redis, new session; it runs the unit's ExecStart=
//!   command line with `--daemonize no` (no NOTIFY_SOCKET: bwrap has no readiness protocol,
//!   the PING is the readiness for both). No seccomp filter or capability bounding for bwrap,
//!   so its row is the cheaper sandbox.
//!
//! The stops are not timed. Run as root: `scripts/build-release.sh && cargo bench -p
//! berth-integration --bench redis_start` (BERTH_BENCH_RUNS=N rounds, default 30).

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_testkit::bench::{env_or, listing_only};
use berth_testkit::service_clients::redis_command;
use berth_testkit::{Harness, debian_images};

const PORT: u16 = 6379;
const UNIT: &str = "redis-server";
/// How long one start may take before the run fails.
const START: Duration = Duration::from_secs(30);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, samples: &mut [Duration]) -> f64 {
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<34} p50 {:>7.2} ms  p90 {:>7.2} ms  min {:>7.2} ms  ({} runs)",
        ms(p(0.5)),
        ms(p(0.9)),
        ms(samples[0]),
        samples.len()
    );
    ms(p(0.5))
}

/// Polls PING until `+PONG` (a refused connection is retried at once); fails after [`START`].
fn wait_for_pong(since: Instant) -> Result<Duration> {
    loop {
        if let Ok(reply) = redis_command(PORT, "PING", Duration::from_secs(2))
            && reply == "+PONG"
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > START {
            bail!("redis did not answer PING within {START:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn wait_port_free() -> Result<()> {
    let since = Instant::now();
    while redis_command(PORT, "PING", Duration::from_millis(200)).is_ok() {
        if since.elapsed() > START {
            bail!("port {PORT} still answers after the stop");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A read-only loop mount of `image` on `dir`, unmounted (and its loop device freed) on drop.
struct LoopMount<'a>(&'a Path);

impl<'a> LoopMount<'a> {
    fn new(image: &Path, dir: &'a Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let status = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro,nodev,nosuid"])
            .arg(image)
            .arg(dir)
            .status()?;
        ensure!(status.success(), "mount {} failed", image.display());
        Ok(LoopMount(dir))
    }
}

impl Drop for LoopMount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// A fresh writable directory owned by the image's redis user.
fn redis_dir(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o750))?;
    chown(path, Some(uid), Some(gid))?;
    Ok(())
}

fn bwrap(root: &Path, var: &Path, ids: (u32, u32)) -> Result<Child> {
    let (lib, log) = (var.join("lib"), var.join("log"));
    redis_dir(&lib, ids)?;
    redis_dir(&log, ids)?;
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", ids.0))
        .arg(format!("--regid={}", ids.1))
        .arg("--clear-groups")
        .arg("bwrap")
        .args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
        ])
        .arg("--ro-bind")
        .arg(root)
        .arg("/")
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/run"])
        .args(["--dir", "/run/redis", "--tmpfs", "/tmp"])
        .arg("--bind")
        .arg(&lib)
        .arg("/var/lib/redis")
        .arg("--bind")
        .arg(&log)
        .arg("/var/log/redis")
        .args(["--new-session", "--die-with-parent"])
        .args([
            "/usr/bin/redis-server",
            "/etc/redis/redis.conf",
            "--daemonize",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().context("spawning bwrap")
}

fn main() -> Result<()> {
    if listing_only() {
        return Ok(());
    }
    let runs: usize = env_or("BERTH_BENCH_RUNS", 30);
    ensure!(
        redis_command(PORT, "PING", Duration::from_secs(1)).is_err(),
        "something already answers on port {PORT}"
    );
    let image = debian_images::redis(1);
    let h = Harness::start()?;
    let raw = image.place_in(&h.images_dir())?;
    // The default profile at level 3 (the image's own users), named until it is the default.
    h.berth_ok(&["attach", "--profile", "default@3", image.name])?;
    // Started over and over: the start rate limit (5 in 10 s) off, in a host drop-in.
    let editor = h.dir().join("editor.sh");
    fs::write(
        &editor,
        "#!/bin/sh\nprintf '[Unit]\\nStartLimitIntervalSec=0\\n' > \"$1\"\n",
    )?;
    fs::set_permissions(&editor, fs::Permissions::from_mode(0o755))?;
    let out = h
        .berth_command(&["edit", UNIT, "--drop-in", "bench.conf"])
        .env("EDITOR", &editor)
        .output()?;
    ensure!(
        out.status.success(),
        "berth edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile = h.status_json(UNIT)?["profile"].clone();
    let root = h.dir().join("bwrap-root");
    let _mount = LoopMount::new(&raw, &root)?;
    let var = h.dir().join("bwrap-var");
    let ids = image.user_ids("redis")?;

    let berth_round = || -> Result<Duration> {
        let since = Instant::now();
        if let Err(e) = h.berth_ok(&["start", UNIT]) {
            let logs = h.berth_ok(&["logs", UNIT, "-n", "20"]).unwrap_or_default();
            bail!("{e:#}\nits log:\n{logs}");
        }
        let up = wait_for_pong(since)?;
        h.berth_ok(&["stop", UNIT])?;
        wait_port_free()?;
        Ok(up)
    };
    let bwrap_round = || -> Result<Duration> {
        let since = Instant::now();
        let mut child = bwrap(&root, &var, ids)?;
        let up = wait_for_pong(since);
        let _ = child.kill();
        let _ = child.wait();
        wait_port_free()?;
        up
    };
    // Warm-up: the first berth start mounts nothing new, but the page cache and the seccomp
    // filter cache fill.
    for _ in 0..3 {
        berth_round()?;
        bwrap_round()?;
    }
    let (mut under_berth, mut under_bwrap) = (Vec::new(), Vec::new());
    for round in 0..runs {
        if round % 2 == 0 {
            under_berth.push(berth_round()?);
            under_bwrap.push(bwrap_round()?);
        } else {
            under_bwrap.push(bwrap_round()?);
            under_berth.push(berth_round()?);
        }
    }
    println!(
        "redis-server (Debian bookworm, stock unit) from command to first +PONG, same squashfs \
         rootfs, {runs} interleaved rounds:"
    );
    println!("berth: berth start {UNIT} (profile {profile}) then PING");
    println!("bwrap: setpriv redis + bwrap userns/pid/ipc/uts/cgroup, ro root, no seccomp");
    let b = report("berth start + PING", &mut under_berth);
    let w = report("bwrap + PING", &mut under_bwrap);
    println!("ratio berth/bwrap (p50): {:.2}", b / w);
    Ok(())
}
