//! The control plane under hostile local users (DESIGN.md §9, issue 5 item 1): 8 clients of
//! each kind at once, each kind as its own unprivileged uid, against an isolated berthd, while
//! root calls `Status` back to back. Reports root's Status p50/p99 and berthd's peak RSS
//! (VmHWM). Targets: p99 ≤ 5 ms, RSS ≤ 64 MiB. Root calls every 10 ms and each call is
//! timed from when it was due, so a stall of the daemon counts for every call it delays.
//!
//! Kinds: `slowloris` (a message started and dribbled a byte every 200 ms), `names` (Status
//! with a 1 MiB unit name, again and again), `partial` (connections each holding a message of
//! nearly 4 MiB without its NUL), `flood` (connections opened and held up to the per-uid
//! limit). A client whose connection is closed opens another and starts over.
//!
//! Run as root: `cargo bench -p berth-integration --bench hostile_clients`. Knobs:
//! BERTH_BENCH_SECONDS (default 10), BERTH_BENCH_HOSTILE (clients per kind, default 8),
//! BERTH_BENCH_PARTIAL_CONNS (connections per `partial` client, default 15), BERTH_BENCH_KINDS
//! (a comma-separated subset of the kinds, default all).
//!
//! The hostile clients are this binary, re-run as their uid with `hostile KIND SOCKET N`. It
//! speaks raw varlink over std sockets only, so that it also runs against older berthd builds
//! (BERTH_BIN_DIR) for before/after figures.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use berth_testkit::bench::env_or;
use berth_testkit::{Harness, ImageBuilder, as_user, proc_status_field};

const KINDS: [(&str, u32); 4] = [
    ("slowloris", 65534),
    ("names", 65533),
    ("partial", 65532),
    ("flood", 65531),
];
/// Bytes of a `partial` message: just under the 4 MiB message limit.
const PARTIAL_BYTES: usize = 4 * 1024 * 1024 - 4096;
/// Bytes of the unit name of a `names` call: as long as the 1 MiB parameters limit allows.
const NAME_BYTES: usize = 1024 * 1024 - 64;
/// Connections one `flood` client holds (8 of them reach the default 128 per uid).
const FLOOD_CONNS: usize = 16;
/// Root calls Status once per this interval.
const PACE: Duration = Duration::from_millis(10);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hostile") {
        return hostile(&args[2..]);
    }
    if berth_testkit::bench::listing_only() {
        return Ok(());
    }
    let seconds: u64 = env_or("BERTH_BENCH_SECONDS", 10);
    let per_kind: usize = env_or("BERTH_BENCH_HOSTILE", 8);
    let partial_conns: usize = env_or("BERTH_BENCH_PARTIAL_CONNS", 15);

    let h = Harness::start()?;
    ImageBuilder::new(&h.images_dir().join("bench"))
        .unit("bench.service", "[Service]\nExecStart=/bin/true\n")
        .build()?;
    h.berth_ok(&["attach", "bench"])?;
    let socket = h.socket();
    let pid = h.berthd_pid().context("no berthd pid")?;

    let quiet = root_status_for(&socket, Duration::from_secs(2))?;
    let rss_before = proc_status_field(pid, "VmRSS")?;
    println!(
        "quiet: root Status p50 {:.3} ms, p99 {:.3} ms ({} calls); berthd VmRSS {rss_before}",
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 0.99)),
        quiet.len()
    );

    let exe = std::env::current_exe()?;
    let mut clients: Vec<Child> = Vec::new();
    let only = std::env::var("BERTH_BENCH_KINDS").unwrap_or_default();
    let kinds: Vec<(&str, u32)> = KINDS
        .into_iter()
        .filter(|(k, _)| only.is_empty() || only.split(',').any(|o| o == *k))
        .collect();
    for &(kind, uid) in &kinds {
        let n = if kind == "partial" { partial_conns } else { 0 };
        for _ in 0..per_kind {
            let child = as_user(uid, uid, &[])
                .arg(&exe)
                .args(["hostile", kind])
                .arg(&socket)
                .arg(n.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting a {kind} client"))?;
            clients.push(child);
        }
    }
    // Let the attack build up before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let loaded = root_status_for(&socket, Duration::from_secs(seconds));
    let peak = proc_status_field(pid, "VmHWM");
    let rss_after = proc_status_field(pid, "VmRSS");
    for mut c in clients {
        // The client exits when its stdin closes; kill it in case it is stuck in a call.
        drop(c.stdin.take());
        let _ = c.kill();
        let _ = c.wait();
    }
    let loaded = loaded?;
    let still = root_status_for(&socket, Duration::from_millis(500))?;
    println!(
        "{per_kind} hostile clients of each kind ({}), {seconds} s: root Status p50 {:.3} ms, \
         p99 {:.3} ms, max {:.3} ms ({} calls); berthd peak RSS (VmHWM) {}, VmRSS {}; \
         serving after: {} calls",
        kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
        ms(percentile(&loaded, 0.5)),
        ms(percentile(&loaded, 0.99)),
        ms(loaded.last().copied().unwrap_or_default()),
        loaded.len(),
        peak?,
        rss_after?,
        still.len()
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// Root's Status latencies over `period`, sorted: one call per [`PACE`] on one connection,
/// each timed from when it was due, so a stall counts for every call it holds up (not once).
fn root_status_for(socket: &Path, period: Duration) -> Result<Vec<Duration>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let call = b"{\"method\":\"io.berth.Manager.Status\",\"parameters\":{\"unit\":\"bench\"}}\0";
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut reply = Vec::new();
    for i in 0u32.. {
        let due = start + PACE * i;
        if due >= start + period {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream.write_all(call)?;
        reply.clear();
        read_message(&mut stream, &mut reply)?;
        latencies.push(due.elapsed());
        ensure!(
            reply.starts_with(b"{\"parameters\""),
            "Status failed: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    latencies.sort();
    Ok(latencies)
}

/// Reads one NUL-terminated message into `out` (without the NUL).
fn read_message(stream: &mut UnixStream, out: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed");
        }
        if let Some(nul) = chunk[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            return Ok(());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// A hostile client (runs as its own uid): `KIND SOCKET N`. Runs until its stdin closes.
fn hostile(args: &[String]) -> Result<()> {
    let [kind, socket, n] = args else {
        bail!("usage: hostile KIND SOCKET N");
    };
    let socket = Path::new(socket).to_owned();
    let n: usize = n.parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        watcher.store(true, Ordering::Relaxed);
    });
    let running = || !stop.load(Ordering::Relaxed);
    match kind.as_str() {
        "slowloris" => slowloris(&socket, running),
        "names" => oversized_names(&socket, running),
        "partial" => partial(&socket, n, running),
        "flood" => flood(&socket, running),
        other => bail!("unknown kind {other}"),
    }
    Ok(())
}

/// True when the server closed `stream` (a read returns end of file at once).
fn closed(stream: &UnixStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut byte = [0u8; 1];
    let gone = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    };
    let _ = stream.set_nonblocking(false);
    gone
}

fn slowloris(socket: &Path, running: impl Fn() -> bool) {
    while running() {
        let Ok(mut stream) = UnixStream::connect(socket) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if stream
            .write_all(b"{\"method\":\"io.berth.Manager.Status\",\"parameters\":{\"unit\":\"")
            .is_err()
        {
            continue;
        }
        while running() && stream.write_all(b"x").is_ok() && !closed(&stream) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn oversized_names(socket: &Path, running: impl Fn() -> bool) {
    let name = "n".repeat(NAME_BYTES);
    let call = format!(
        "{{\"method\":\"io.berth.Manager.Status\",\"parameters\":{{\"unit\":\"{name}\"}}}}\0"
    );
    let mut reply = Vec::new();
    while running() {
        let Ok(mut stream) = UnixStream::connect(socket) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        while running() && stream.write_all(call.as_bytes()).is_ok() {
            reply.clear();
            if read_message(&mut stream, &mut reply).is_err() {
                break;
            }
        }
    }
}

fn partial(socket: &Path, connections: usize, running: impl Fn() -> bool) {
    let mut message =
        b"{\"method\":\"io.berth.Manager.Status\",\"parameters\":{\"unit\":\"".to_vec();
    message.resize(PARTIAL_BYTES, b'p');
    let mut held: Vec<UnixStream> = Vec::new();
    while running() {
        held.retain(|s| !closed(s));
        while held.len() < connections && running() {
            let Ok(mut stream) = UnixStream::connect(socket) else {
                break;
            };
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            if stream.write_all(&message).is_ok() {
                held.push(stream);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn flood(socket: &Path, running: impl Fn() -> bool) {
    let mut held: Vec<UnixStream> = Vec::new();
    while running() {
        held.retain(|s| !closed(s));
        while held.len() < FLOOD_CONNS && running() {
            match UnixStream::connect(socket) {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
