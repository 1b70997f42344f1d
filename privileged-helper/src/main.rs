//! berth-helper: the root half of berth. Normally started by berthd.

use berth_helper::args::{self, Args, Command};
use berth_helper::config::FloorPolicy;

/// Why the helper did not start or stopped serving.
#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error("sanitizing the process: {0}")]
    Sanitize(#[source] std::io::Error),
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    #[error(transparent)]
    Logging(#[from] berth_logging::LogError),
    #[error("must run as root")]
    NotRoot,
    #[error("--manager-uid must not be 0: the manager runs unprivileged")]
    ManagerIsRoot,
    #[error(transparent)]
    Config(Box<dyn std::error::Error>),
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] berth_helper::server::ServeError),
    #[error("watching the manager's lifeline (stdin): {0}")]
    Lifeline(#[source] std::io::Error),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("berth-helper: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), HelperError> {
    // Read before the environment is cleared; it only picks a log level.
    let rust_log = std::env::var("RUST_LOG").ok();
    berth_helper::sanitize::sanitize_process().map_err(HelperError::Sanitize)?;
    let args = match args::parse(std::env::args_os().skip(1))? {
        Command::Serve(args) => args,
        Command::Help => {
            println!("{}", args::USAGE);
            return Ok(());
        }
        Command::Version => {
            println!("berth-helper {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
    };
    let logging = berth_logging::init(
        "berth-helper",
        args.log_level.as_deref(),
        rust_log.as_deref(),
        args.log_target,
    )?;
    serve(args, &logging)
}

fn serve(args: Args, logging: &berth_logging::Logging) -> Result<(), HelperError> {
    if !rustix::process::geteuid().is_root() {
        return Err(HelperError::NotRoot);
    }
    if args.manager_uid == 0 {
        return Err(HelperError::ManagerIsRoot);
    }
    let policy = FloorPolicy::load(&args.config).map_err(|e| HelperError::Config(e.into()))?;
    let stale = berth_helper::sandbox::remove_stale_cgroups();
    if stale > 0 {
        tracing::info!(
            stale,
            "removed the empty cgroups of supervisors that are gone"
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        manager_uid = args.manager_uid,
        socket = %args.socket.display(),
        level = %logging.level,
        "berth-helper starting"
    );
    // Supervisors are forked straight from the helper; ignoring SIGCHLD lets the kernel reap
    // those that end while the helper runs (sandbox::launch relies on it).
    // SAFETY: installing SIG_IGN runs no code; no other thread exists yet.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // One thread only: the sandbox launcher forks, which is only safe in a single-threaded process.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HelperError::Runtime)?;
    let served = runtime.block_on(async {
        tokio::select! {
            served = berth_helper::server::serve(&args.socket, args.manager_uid, policy) => {
                Ok(served?)
            }
            gone = manager_gone(args.lifeline) => {
                tracing::info!("the manager's lifeline closed; berth-helper stopping");
                gone.map_err(HelperError::Lifeline)
            }
        }
    });
    // Runs that ended since the last release leave their cgroups for the helper to remove.
    berth_helper::sandbox::remove_stale_cgroups();
    served
}

/// Resolves when the manager that started the helper has exited. berthd keeps the write end of
/// the helper's stdin pipe open for its whole life; the kernel closes it when berthd dies, however
/// it dies, so the helper notices at once. (PR_SET_PDEATHSIG cannot do this: berthd drops to an
/// unprivileged uid, and the kernel then refuses its death signal to a root process.) Without a
/// lifeline, as under a service manager, this never resolves.
async fn manager_gone(lifeline: bool) -> std::io::Result<()> {
    if !lifeline {
        return std::future::pending().await;
    }
    berth_helper::lifeline::closed(std::io::stdin()).await
}
