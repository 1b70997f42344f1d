//! berth-helper: the root half of berth. Normally started by berthd.

use std::path::PathBuf;

use anyhow::Context;
use berth_helper::floor::FloorPolicy;
use clap::Parser;

#[derive(Parser)]
#[command(name = "berth-helper", version, about = "berth's minimal root helper")]
struct Args {
    /// Socket to serve io.berth.Helper on.
    #[arg(long)]
    socket: PathBuf,
    /// The only uid allowed to call the helper (berthd's).
    #[arg(long)]
    manager_uid: u32,
    /// Floor policy (dynamic uid range, allowed image roots).
    #[arg(long, default_value = "/etc/berth/helper.toml")]
    config: PathBuf,
    /// Standard input is a pipe whose write end the manager holds: exit as soon as it closes,
    /// that is, as soon as the manager is gone.
    #[arg(long)]
    lifeline: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("berth-helper: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    berth_helper::sanitize::sanitize_process().context("sanitizing the process")?;
    let args = Args::parse();
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!("must run as root");
    }
    if args.manager_uid == 0 {
        anyhow::bail!("--manager-uid must not be 0: the manager runs unprivileged");
    }
    let policy = FloorPolicy::load(&args.config)?;
    // Supervisors are forked straight from the helper; ignoring SIGCHLD lets the kernel reap
    // those that end while the helper runs (sandbox::launch relies on it).
    // SAFETY: installing SIG_IGN runs no code; no other thread exists yet.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // One thread only: the sandbox launcher forks, which is only safe in a single-threaded process.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        tokio::select! {
            served = berth_helper::server::serve(&args.socket, args.manager_uid, policy) => Ok(served?),
            gone = manager_gone(args.lifeline) => gone,
        }
    })?;
    Ok(())
}

/// Resolves when the manager that started the helper has exited. berthd keeps the write end of
/// the helper's stdin pipe open for its whole life; the kernel closes it when berthd dies, however
/// it dies, so the helper notices at once. (PR_SET_PDEATHSIG cannot do this: berthd drops to an
/// unprivileged uid, and the kernel then refuses its death signal to a root process.) Without a
/// lifeline, as under a service manager, this never resolves.
async fn manager_gone(lifeline: bool) -> anyhow::Result<()> {
    if !lifeline {
        return std::future::pending().await;
    }
    berth_helper::lifeline::closed(std::io::stdin())
        .await
        .context("watching the manager's lifeline (stdin)")
}
