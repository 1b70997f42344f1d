//! Control-plane throughput and latency (DESIGN.md §9): `Status` calls from 8 concurrent
//! clients over real sockets to an isolated berthd, and `List` with 1,000 attached units.
//! Run as root: `cargo bench -p berth-integration --bench control_plane`.

use std::time::{Duration, Instant};

use anyhow::Result;
use berth_protocol::manager::{Empty, ListReply, StatusReply, UnitParams};
use berth_testkit::{Harness, ImageBuilder};
use berth_varlink::client::Client;

const CLIENTS: usize = 8;
const CALLS_PER_CLIENT: usize = 5_000;
const UNITS: usize = 1_000;

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

fn main() -> Result<()> {
    if berth_testkit::bench::listing_only() {
        return Ok(());
    }
    let h = Harness::start()?;
    let mut image = ImageBuilder::new(&h.images_dir().join("scale"));
    for i in 0..UNITS {
        image = image.unit(
            &format!("scale-{i}.service"),
            "[Service]\nExecStart=/bin/true\n",
        );
    }
    image.build()?;
    h.berth_ok(&["attach", "scale"])?;
    let socket = h.socket();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (elapsed, mut latencies) = runtime.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        let local = tokio::task::LocalSet::new();
        for c in 0..CLIENTS {
            let socket = socket.clone();
            tasks.push(local.spawn_local(async move {
                let mut client = Client::connect(&socket).await?;
                let params = UnitParams {
                    unit: format!("scale-{c}"),
                };
                let mut latencies = Vec::with_capacity(CALLS_PER_CLIENT);
                for _ in 0..CALLS_PER_CLIENT {
                    let t = Instant::now();
                    let _: StatusReply = client
                        .call("io.berth.Manager.Status", &params, Vec::new())
                        .await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut all = Vec::new();
        local
            .run_until(async {
                for t in tasks {
                    all.extend(t.await??);
                }
                anyhow::Ok(())
            })
            .await?;
        anyhow::Ok((start.elapsed(), all))
    })?;
    latencies.sort();
    let calls = latencies.len();
    println!(
        "Status, {CLIENTS} clients x {CALLS_PER_CLIENT} calls: {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms",
        calls as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );

    let list_times = runtime.block_on(async {
        let mut client = Client::connect(&socket).await?;
        let mut times = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let reply: ListReply = client
                .call("io.berth.Manager.List", &Empty {}, Vec::new())
                .await?;
            times.push(t.elapsed());
            anyhow::ensure!(reply.units.len() == UNITS, "listed {}", reply.units.len());
        }
        times.sort();
        anyhow::Ok(times)
    })?;
    // `berth list`: a new CLI process, List with `more` (one reply per unit), the table.
    let berth = h.bin_dir().join("berth");
    let mut cli_times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = std::process::Command::new(&berth)
            .arg("--socket")
            .arg(&socket)
            .arg("list")
            .output()?;
        cli_times.push(t.elapsed());
        anyhow::ensure!(out.status.success(), "berth list failed");
    }
    cli_times.sort();
    let cli_list = percentile(&cli_times, 0.5);
    println!(
        "List of {UNITS} attached units: p50 {:.2} ms in one varlink reply, `berth list` p50 {:.2} ms",
        percentile(&list_times, 0.5).as_secs_f64() * 1000.0,
        cli_list.as_secs_f64() * 1000.0
    );
    if let Some(pid) = h.berthd_pid() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap_or("VmRSS: ?");
        println!("berthd {rss}");
    }
    Ok(())
}
