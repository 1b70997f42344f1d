//! berthd: the unprivileged manager of berth.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::Context;
use berth_manager::api::{Groups, ManagerInterface};
use berth_manager::config::Config;
use berth_manager::daemon::Manager;
use berth_manager::dynamic_user::DynamicUsers;
use berth_manager::paths::Paths;
use berth_manager::startup::service_manager;
use berth_manager::{host_users, lifecycle, log_access, logs, privilege_split};
use berth_varlink::listener::{BoundedListener, raise_fd_limit};
use berth_varlink::service::{BERTH_INFO, VarlinkService};
use clap::Parser;

#[derive(Parser)]
#[command(name = "berthd", version, about = "berth's manager daemon")]
struct Args {
    /// Runtime directory (sockets, locks).
    #[arg(long, default_value = "/run/berth")]
    runtime_dir: PathBuf,
    /// State directory (images, attachments, logs).
    #[arg(long, default_value = "/var/lib/berth")]
    state_dir: PathBuf,
    /// berthd's configuration (dynamic uid range, admin group). berth-helper reads its own
    /// floor policy from /etc/berth/helper.toml.
    #[arg(long, default_value = "/etc/berth/berthd.toml")]
    config: PathBuf,
    /// User to run as after starting the helper.
    #[arg(long, default_value = "berth")]
    user: String,
    /// Log level (error, warn, info, debug, trace) or directives such as
    /// `info,berth_manager=debug`; overrides RUST_LOG. Default: info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Where to log: journal, stderr, or auto (journald when the host has one and stderr is not
    /// a terminal).
    #[arg(long, value_name = "TARGET", default_value = "auto")]
    log_target: berth_logging::Target,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("berthd: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // Taken from the environment first, before any thread exists.
    let activated = service_manager::activated_listener();
    let notifier = service_manager::Notifier::from_env();
    let rust_log = std::env::var("RUST_LOG").ok();
    let logging = berth_logging::init(
        "berthd",
        args.log_level.as_deref(),
        rust_log.as_deref(),
        args.log_target,
    )?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        uid = rustix::process::geteuid().as_raw(),
        level = %logging.level,
        log_target = %logging.target,
        "berthd starting"
    );
    let activated = activated?;
    let notifier = notifier.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot reach the service manager's notification socket");
        None
    });
    raise_fd_limit();
    let config = Config::load(&args.config)?;
    let paths = Paths::new(&args.runtime_dir, &args.state_dir);
    let is_root = rustix::process::geteuid().is_root();
    let user = privilege_split::lookup_user(std::path::Path::new("/etc/passwd"), &args.user)?;
    if user.uid == 0 {
        return Err(privilege_split::StartupError::UserIsRoot(args.user).into());
    }
    let dirs = privilege_split::prepare_dirs(&paths, is_root.then_some(&user))?;
    let _lock = privilege_split::lock_instance(&dirs, &paths)?;
    // The helper is ours only when we start as root; otherwise one must already serve us.
    let mut helper = if is_root {
        let helper = privilege_split::start_helper(&dirs, &paths, &user, &logging)?;
        privilege_split::drop_privileges(&user)?;
        Some(helper)
    } else {
        None
    };
    drop(dirs);
    let groups = Groups {
        admin: host_group(&config.admin_group, "admin_group"),
        log: host_group(&config.log_group, "log_group"),
    };
    // Not fatal: without ACLs the logs on disk stay closed to the groups, not open to others.
    let readers: Vec<u32> = [groups.admin, groups.log].into_iter().flatten().collect();
    if let Err(e) = log_access::grant_readers(&paths.logs_dir(), &readers) {
        tracing::warn!(error = %e, "logs on disk stay closed to the admin and log groups");
    }
    match berth_manager::image::store::remove_interrupted_imports(&paths.images_dir()) {
        Ok(removed) => {
            for name in removed {
                tracing::info!(entry = %berth_logging::Untrusted(&name), "removed an import cut short by a crash");
            }
        }
        Err(e) => tracing::warn!(error = %e, "interrupted imports stay in the image pool"),
    }
    let users = DynamicUsers::new(config.uid_min, config.uid_max);
    let uid_blocks = berth_manager::uid_blocks::UidBlocks::load(
        &paths.uid_blocks_file(),
        config.user_block_min,
        config.user_block_max,
    )?;
    // The admin's profiles before the attachments are read: a unit attached with one of them
    // is parsed over it.
    let profiles = berth_manager::profile::Profiles::new(&config.profiles_dir);
    let mut manager = Manager::load(paths.clone(), users, uid_blocks, groups, profiles);
    manager.log_max_bytes = config.log_max_bytes;
    manager.forward_to_journal = config.forward_to_journal.resolve(std::path::Path::new(
        logs::journal_fields::HOST_JOURNAL_SOCKET,
    ));
    manager.tar_limits = config.tar_limits();
    manager.search =
        berth_manager::image::pool::SearchPath::new(paths.images_dir(), &config.image_search_dirs);
    manager.host_files = match berth_manager::host_files::HostFiles::open(
        &paths.host_files_dir(),
        &config.host_resolv_conf,
        &config.host_hosts,
    ) {
        Ok(copies) => Some(copies),
        Err(e) => {
            tracing::warn!(error = %e, "services get the image's resolv.conf and hosts, not the host's");
            None
        }
    };
    let shared = Rc::new(RefCell::new(manager));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let socket = paths.manager_socket();
        // A socket passed by socket activation is the service manager's: it stays when berthd
        // goes, so connections wait for the next berthd.
        let own_socket = activated.is_none();
        let listener = match activated {
            Some(passed) => {
                BoundedListener::from_std(passed).context("taking the socket passed")?
            }
            None => bind_socket(&socket)?,
        };
        lifecycle::adopt_running(&shared);
        tokio::task::spawn_local(berth_manager::startup::start_enabled(shared.clone()));
        tokio::task::spawn_local(berth_manager::host_files::keep_current(shared.clone()));
        let server = VarlinkService::new(ManagerInterface::new(shared), BERTH_INFO).serve(listener);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tracing::info!(socket = %socket.display(), activated = !own_socket, "berthd serving");
        if let Some(notifier) = &notifier {
            notifier.notify("READY=1\nSTATUS=serving");
        }
        let remove_socket = || {
            if own_socket {
                let _ = std::fs::remove_file(&socket);
            }
        };
        tokio::select! {
            r = server => r.context("varlink server")?,
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "berthd stopping"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "berthd stopping"),
            status = helper_exit(helper.as_mut()) => {
                // berthd cannot restart a root helper once it has dropped privileges. Exiting lets
                // whatever runs berthd restart the pair; running services are re-adopted then.
                remove_socket();
                tracing::error!(%status, "berth-helper exited; berthd stopping");
                anyhow::bail!("berth-helper exited ({status}); restart berthd");
            }
        }
        if let Some(notifier) = &notifier {
            notifier.notify("STOPPING=1");
        }
        remove_socket();
        Ok::<(), anyhow::Error>(())
    })
}

/// Binds the public API socket at `socket` (a stale one removed first), mode 0666: who may
/// do what is decided per call.
fn bind_socket(socket: &std::path::Path) -> anyhow::Result<BoundedListener> {
    if socket.exists() {
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let listener =
        BoundedListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// The gid of group `name` of the host (the config's `key`); a missing group has no members.
fn host_group(name: &str, key: &str) -> Option<u32> {
    let found = host_users::lookup(std::path::Path::new("/etc/group"), name).map(|g| g.id);
    if found.is_none() {
        tracing::warn!(
            key,
            group = name,
            "not a group of this host; it has no members"
        );
    }
    found
}

/// Resolves when the helper berthd started has exited; never when berthd started none.
async fn helper_exit(helper: Option<&mut std::process::Child>) -> std::process::ExitStatus {
    let Some(helper) = helper else {
        return std::future::pending().await;
    };
    loop {
        if let Ok(Some(status)) = helper.try_wait() {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
