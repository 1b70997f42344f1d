//! Starting and stopping services: berthd asks berth-helper to spawn, then follows each run
//! through the supervisor's control socket (protocol/src/supervisor.rs).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::time::Duration;

use berth_protocol::helper::{HelperError, SpawnParams, SpawnReply};
use berth_protocol::manager::{ManagerError, UnitStatus};
use berth_protocol::sandbox::SandboxSpec;
use berth_protocol::supervisor::{SupervisorRequest, SupervisorStatus};
use berth_varlink::client::ClientError;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::daemon::{Manager, Shared};
use crate::helper_connection;
use crate::image::identity::{IdentityError, ImageIdentity};
use crate::logs;
use crate::service_directories;
use crate::uid_release;
use crate::unit::ServiceType;
use crate::unit_state::UnitState;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Extra time berthd waits past TimeoutStopSec= for the supervisor's SIGKILL to land.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Longest TimeoutStopSec= honoured (`infinity` included): after it the sandbox is SIGKILLed.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Waits until `done` holds for the manager's state.
async fn wait_until(shared: &Shared, timeout: Duration, done: impl Fn(&Manager) -> bool) -> bool {
    let mut rx = shared.borrow().changed.subscribe();
    let wait = async {
        loop {
            if done(&shared.borrow()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.is_ok()
}

fn status_of(shared: &Shared, unit: &str) -> Result<UnitStatus, ManagerError> {
    let m = shared.borrow();
    let u = m.unit(unit)?;
    Ok(m.status(u))
}

/// What one spawn needs, gathered under a short borrow.
struct Plan {
    unit: String,
    image: String,
    image_path: std::path::PathBuf,
    /// What attach recorded of the image; the spawn refuses a path that names another.
    image_identity: Option<ImageIdentity>,
    /// The image's root as attach opened it, when the client passed it as a descriptor and
    /// berthd has kept it since.
    held_image: Option<OwnedFd>,
    /// Attached by descriptor: berthd may be unable to reopen the path itself.
    by_descriptor: bool,
    /// Extension images laid over the image, lowest first, each pinned like the image.
    extensions: Vec<crate::attachments::ExtensionRecord>,
    /// What berthd kept of each extension passed as a descriptor (as `held_image`), in order.
    held_extensions: Vec<Option<OwnedFd>>,
    service_type: ServiceType,
    /// argv of each ExecStart= and whether its failure is ignored (`-` prefix).
    commands: Vec<(Vec<String>, bool)>,
    environment: Vec<String>,
    working_directory: String,
    /// The unit's sandbox; its identity is filled at each spawn.
    sandbox: SandboxSpec,
}

fn plan(m: &Manager, unit_arg: &str) -> Result<Plan, ManagerError> {
    let unit = m.unit(unit_arg)?;
    let record = m
        .attachments
        .get(&unit.image)
        .ok_or(ManagerError::NotAttached {
            image: unit.image.clone(),
        })?;
    let config = &unit.config;
    let stem = unit
        .name
        .rsplit_once('.')
        .map_or(unit.name.as_str(), |(s, _)| s);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), "/".into());
    env.insert("USER".into(), stem.into());
    env.insert("LOGNAME".into(), stem.into());
    env.insert("PORTABLE".into(), unit.image.clone());
    env.extend(config.environment.clone());
    // Only oneshot services run several ExecStart= lines (one after the other).
    let count = match config.service_type {
        ServiceType::Oneshot => config.exec_start.len(),
        _ => 1,
    };
    let commands = config
        .exec_start
        .iter()
        .take(count)
        .map(|c| (c.expand(&env), c.ignore_failure))
        .collect();
    let working_directory = config
        .working_directory
        .as_deref()
        .map(str::to_string)
        .unwrap_or_else(|| "/".to_string());
    Ok(Plan {
        unit: unit.name.clone(),
        image: unit.image.clone(),
        image_path: record.path.clone(),
        image_identity: record.identity.clone(),
        held_image: m
            .held_images
            .get(&unit.image)
            .map(|held| held.spawn_fd())
            .transpose()
            .map_err(ManagerError::internal)?,
        by_descriptor: record.by_descriptor,
        extensions: record.extensions.clone(),
        held_extensions: m
            .held_extensions
            .get(&unit.image)
            .map(|held| {
                held.iter()
                    .map(|h| h.as_ref().map(|h| h.spawn_fd()).transpose())
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .transpose()
            .map_err(ManagerError::internal)?
            .unwrap_or_default(),
        service_type: config.service_type,
        commands,
        environment: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        working_directory,
        sandbox: config.sandbox.clone(),
    })
}

/// Starts a unit. Simple/exec: returns once the main process has exec'd. Oneshot: returns once
/// every ExecStart= has exited (state `exited`, or `failed`).
pub async fn start(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    let plan = {
        let m = shared.borrow();
        let unit = m.unit(&unit_arg)?;
        if unit.state.is_active() {
            return Ok(m.status(unit));
        }
        plan(&m, &unit_arg)?
    };
    let uid = uid_release::allocate(&shared, &plan.unit)
        .await
        .map_err(|e| ManagerError::StartFailed {
            unit: plan.unit.clone(),
            reason: e.to_string(),
        })?;
    let plan = {
        let mut m = shared.borrow_mut();
        let unit = m.unit(&unit_arg)?;
        // Another start may have won while this one waited for a uid; this one was never used.
        if unit.state.is_active() {
            let status = m.status(unit);
            m.users.release(uid);
            return Ok(status);
        }
        let unit = m.unit_mut(&unit_arg)?;
        unit.uid = Some(uid);
        unit.exit = None;
        unit.failure = None;
        unit.main_pid = None;
        unit.stop_requested = false;
        unit.set_state(UnitState::Starting);
        m.notify();
        plan
    };
    let result = run_commands(&shared, &plan).await;
    if let Err(e) = &result {
        let released = {
            let mut m = shared.borrow_mut();
            let mut released = None;
            if let Ok(unit) = m.unit_mut(&plan.unit)
                && unit.link.is_none()
            {
                unit.failure = Some(e.to_string());
                unit.set_state(UnitState::Failed);
                released = unit.uid.take();
            }
            m.notify();
            released
        };
        if let Some(uid) = released {
            uid_release::release(&shared, uid).await;
        }
    }
    result?;
    status_of(&shared, &plan.unit)
}

async fn run_commands(shared: &Shared, plan: &Plan) -> Result<(), ManagerError> {
    for (index, (argv, ignore_failure)) in plan.commands.iter().enumerate() {
        // A previous run's supervisor must be gone before the next binds the same socket.
        let unit = plan.unit.clone();
        wait_until(shared, Duration::from_secs(10), |m| {
            m.units.get(&unit).is_none_or(|u| u.link.is_none())
        })
        .await;
        let reply = spawn(shared, plan, argv).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut m = shared.borrow_mut();
            let unit = m.unit_mut(&plan.unit)?;
            unit.main_pid = u32::try_from(reply.main_pid).ok();
            unit.link = Some(tx);
            if plan.service_type != ServiceType::Oneshot {
                unit.set_state(UnitState::Running);
            }
            m.notify();
        }
        let socket = shared.borrow().paths.supervisor_socket(&plan.unit);
        tokio::task::spawn_local(follow_supervisor(
            shared.clone(),
            plan.unit.clone(),
            socket,
            rx,
        ));
        if plan.service_type == ServiceType::Oneshot {
            let unit = plan.unit.clone();
            let last = index + 1 == plan.commands.len();
            // Done once the exit is recorded; the supervisor's release finishes in the background.
            wait_until(shared, Duration::MAX, |m| {
                m.units.get(&unit).is_none_or(|u| {
                    u.link.is_none()
                        || !matches!(u.state, UnitState::Starting | UnitState::Stopping)
                })
            })
            .await;
            let next = {
                let mut m = shared.borrow_mut();
                let unit = m.unit_mut(&plan.unit)?;
                if unit.state == UnitState::Failed && *ignore_failure && !unit.stop_requested {
                    // `-` prefix: this command's failure does not fail the unit.
                    unit.failure = None;
                    unit.set_state(UnitState::Exited);
                }
                if unit.state != UnitState::Exited {
                    return Ok(());
                }
                let next = (!last).then(|| {
                    // The exit released the uid; the next command gets one again.
                    unit.set_state(UnitState::Starting);
                    unit.name.clone()
                });
                m.notify();
                next
            };
            let Some(name) = next else {
                continue;
            };
            let uid = uid_release::allocate(shared, &name).await.map_err(|e| {
                ManagerError::StartFailed {
                    unit: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            let mut m = shared.borrow_mut();
            m.unit_mut(&name)?.uid = Some(uid);
            m.notify();
        }
    }
    Ok(())
}

async fn spawn(shared: &Shared, plan: &Plan, argv: &[String]) -> Result<SpawnReply, ManagerError> {
    let (uid, paths) = {
        let m = shared.borrow();
        let uid = m
            .unit(&plan.unit)?
            .uid
            .ok_or_else(|| ManagerError::internal("no uid allocated"))?;
        (uid, m.paths.clone())
    };
    let start_failed = |reason: String| ManagerError::StartFailed {
        unit: plan.unit.clone(),
        reason,
    };
    check_exec_size(argv, &plan.environment).map_err(start_failed)?;
    let layer_failed = |image: &str, by_descriptor: bool, e: IdentityError| match e {
        IdentityError::Changed { path, reason } => ManagerError::ImageChanged {
            image: image.to_string(),
            path,
            reason,
        },
        IdentityError::Open { path, source } if by_descriptor => start_failed(format!(
            "{path} was attached by descriptor and berthd, restarted since, cannot open it \
             itself ({source}); attach it again: berth attach {path}"
        )),
        e => start_failed(e.to_string()),
    };
    let root = layer_root(
        plan.held_image.as_ref(),
        &plan.image_path,
        plan.image_identity.as_ref(),
    )
    .map_err(|e| layer_failed(&plan.image, plan.by_descriptor, e))?;
    let extensions = plan
        .extensions
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let held = plan.held_extensions.get(i).and_then(Option::as_ref);
            layer_root(held, &e.path, Some(&e.identity))
                .map_err(|err| layer_failed(&e.name, e.by_descriptor, err))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A new run starts with a fresh supervisor writing to current.log: an incoming.log from an
    // interrupted rotation of an earlier run is not its business.
    if let Err(e) = logs::abandon_rotation(&logs::LogFiles::of(&paths, &plan.unit)) {
        tracing::warn!(unit = %plan.unit, error = %e, "cannot remove a stale incoming log");
    }
    let log_path = logs::LogFiles::of(&paths, &plan.unit).current;
    if let Some(dir) = log_path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(ManagerError::internal)?;
    }
    let log: OwnedFd = File::options()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&log_path)
        .map_err(|e| ManagerError::internal(format!("{}: {e}", log_path.display())))?
        .into();
    let control_dir: OwnedFd = File::open(paths.supervise_dir())
        .map_err(ManagerError::internal)?
        .into();
    let sandbox = with_identity(&plan.sandbox, uid, &plan.unit);
    let directory_fds = service_directories::open_parents(&paths, &sandbox.directories)
        .map_err(ManagerError::internal)?;
    let mut environment = plan.environment.clone();
    // As in systemd, the unit's own Environment= wins.
    for (key, value) in service_directories::environment(&sandbox.directories) {
        if !environment
            .iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
        {
            environment.push(format!("{key}={value}"));
        }
    }
    let params = SpawnParams {
        unit: plan.unit.clone(),
        argv: argv.to_vec(),
        environment,
        working_directory: plan.working_directory.clone(),
        sandbox,
    };
    let helper_unavailable = |e: ClientError| ManagerError::HelperUnavailable {
        reason: e.to_string(),
    };
    let result = helper_connection::call_helper(
        shared,
        "io.berth.Helper.Spawn",
        &params,
        [root, log, control_dir]
            .into_iter()
            .chain(directory_fds)
            .chain(extensions)
            .collect(),
    )
    .await;
    match result {
        Ok(reply) => Ok(reply),
        Err(ClientError::Remote(e)) => {
            let reason = e
                .typed::<HelperError>()
                .map_or_else(|| e.to_string(), |h| h.to_string());
            Err(start_failed(reason))
        }
        // A protocol-level refusal (e.g. InvalidParameter) means the helper is up but disagrees.
        Err(e) => match berth_varlink::client::remote_error_of(&e) {
            Some(remote) => Err(start_failed(format!(
                "berth-helper refused the request: {remote}"
            ))),
            None => Err(helper_unavailable(e)),
        },
    }
}

/// The unit's sandbox for one spawn, as the dynamic user `uid` (its own group too).
fn with_identity(sandbox: &SandboxSpec, uid: u32, unit: &str) -> SandboxSpec {
    let mut sandbox = sandbox.clone();
    sandbox.identity.uid = uid;
    sandbox.identity.gid = uid;
    sandbox.identity.user_name = dynamic_user_name(unit);
    sandbox
}

/// The name a dynamic user gets in the sandbox's user database: the unit's name without its
/// suffix, as systemd's DynamicUser= names it, cut to the 31 bytes a user name may have and with
/// the characters a user name may not hold (`@`, `:`) made `_`.
fn dynamic_user_name(unit: &str) -> String {
    let stem = unit.strip_suffix(".service").unwrap_or(unit);
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .skip_while(|c| *c == '-')
        .take(31)
        .collect();
    if name.is_empty() {
        "service".to_owned()
    } else {
        name
    }
}

/// The root a spawn gets of an image or extension: the one attach kept (`held`, passed by
/// descriptor), else the recorded `path` reopened, if it is still the one `identity` recorded.
fn layer_root(
    held: Option<&OwnedFd>,
    path: &std::path::Path,
    identity: Option<&ImageIdentity>,
) -> Result<OwnedFd, IdentityError> {
    match held {
        Some(held) => {
            let path = path.display().to_string();
            let open_error = |source| IdentityError::Open {
                path: path.clone(),
                source,
            };
            let fd = held.try_clone().map_err(open_error)?;
            crate::image::spawn_root(fd, &path).map_err(|e| open_error(std::io::Error::other(e)))
        }
        None => crate::image::open_attached(path, identity),
    }
}

/// Follows one run through its supervisor: records the exit, releases the supervisor, and
/// forwards requests. Ends when the supervisor closes the connection.
pub async fn follow_supervisor(
    shared: Shared,
    unit: String,
    socket: std::path::PathBuf,
    mut requests: mpsc::UnboundedReceiver<SupervisorRequest>,
) {
    let mut ended = RunEnd::default();
    if let Err(e) = follow(&shared, &unit, &socket, &mut requests, &mut ended).await {
        tracing::warn!(%unit, error = %e, "lost the supervisor");
    }
    let vanished = {
        let mut m = shared.borrow_mut();
        match m.units.get_mut(&unit) {
            // After a recorded exit the unit may already be on its next run (oneshot).
            Some(u) if !ended.exited && u.state.is_active() => {
                // The supervisor vanished without reporting an exit.
                u.failure = Some("supervisor disappeared".into());
                u.set_state(UnitState::Failed);
                u.uid.take()
            }
            _ => None,
        }
    };
    // Before the link goes, so that a stop returns once the uid is clean.
    for uid in ended.uid.into_iter().chain(vanished) {
        uid_release::release(&shared, uid).await;
    }
    let mut m = shared.borrow_mut();
    if let Some(u) = m.units.get_mut(&unit) {
        u.link = None;
    }
    m.notify();
}

/// What [`follow`] learnt of the end of a run.
#[derive(Default)]
struct RunEnd {
    /// The exit was recorded.
    exited: bool,
    /// The uid the run held, to release.
    uid: Option<u32>,
}

async fn follow(
    shared: &Shared,
    unit: &str,
    socket: &std::path::Path,
    requests: &mut mpsc::UnboundedReceiver<SupervisorRequest>,
    ended: &mut RunEnd,
) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    send(&mut write, &SupervisorRequest::Status).await?;
    let (files, max) = {
        let m = shared.borrow();
        (logs::LogFiles::of(&m.paths, unit), m.log_max_bytes)
    };
    // Not at once: the answer to the Status above must not be taken for a ReplaceLog's.
    let mut rotation = tokio::time::interval_at(
        tokio::time::Instant::now() + LOG_CHECK_INTERVAL,
        LOG_CHECK_INTERVAL,
    );
    rotation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Requests not answered yet. Every request gets one status line back; before the exit no
    // line comes unasked, so a ReplaceLog sent with none outstanding is answered by the next
    // line (or the service exits, and writes no more).
    let mut outstanding = 1usize;
    let mut switching = false;
    let mut rotating = true;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { return Ok(()) };
                outstanding = outstanding.saturating_sub(1);
                let status: SupervisorStatus = serde_json::from_str(&line).map_err(std::io::Error::other)?;
                if let Some(error) = &status.error {
                    tracing::warn!(%unit, error = %berth_logging::Untrusted(error), "supervisor error");
                }
                if switching {
                    switching = false;
                    let step = if status.error.is_some() {
                        // An older supervisor: leave its log alone from now on.
                        rotating = false;
                        logs::abandon_rotation(&files)
                    } else {
                        logs::finish_rotation(&files)
                    };
                    if let Err(e) = step {
                        tracing::warn!(%unit, error = %e, "cannot rotate the log");
                    }
                }
                // One exit per run: later lines (the answer to Release) change nothing.
                if !ended.exited && let Some(uid) = record_status(shared, unit, &status) {
                    ended.exited = true;
                    ended.uid = uid;
                    send(&mut write, &SupervisorRequest::Release).await?;
                    outstanding += 1;
                }
            }
            request = requests.recv() => {
                match request {
                    Some(r) => {
                        send(&mut write, &r).await?;
                        outstanding += 1;
                    }
                    None => return Ok(()),
                }
            }
            _ = rotation.tick(), if rotating && !switching && outstanding == 0 && !ended.exited => {
                // An incoming.log left by a berthd that stopped mid-rotation is handed over
                // (again: the supervisor may or may not have switched to it) before any new one.
                let incoming = match logs::interrupted_rotation(&files) {
                    Ok(None) => logs::begin_rotation(&files, max),
                    other => other,
                };
                match incoming {
                    Ok(Some(incoming)) => {
                        send_with_fd(&write, &SupervisorRequest::ReplaceLog, incoming.as_fd()).await?;
                        outstanding += 1;
                        switching = true;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%unit, error = %e, "cannot rotate the log"),
                }
            }
        }
    }
}

/// Longest single argument or environment string execve(2) takes (Linux MAX_ARG_STRLEN).
const MAX_ARG_BYTES: usize = 128 * 1024;
/// Most bytes of argv and environment together that berth passes to a service. Below what
/// execve takes (a quarter of the stack limit), and it keeps the Spawn message to the helper
/// well within the helper's 1 MiB parameters limit.
const MAX_EXEC_BYTES: usize = 256 * 1024;

/// Refuses a command line (after `$VAR` expansion) and environment that execve would refuse, or
/// that are too large to hand over quickly.
fn check_exec_size(argv: &[String], environment: &[String]) -> Result<(), String> {
    if let Some(long) = argv
        .iter()
        .chain(environment)
        .find(|s| s.len() >= MAX_ARG_BYTES)
    {
        let start: String = long.chars().take(24).collect();
        return Err(format!(
            "an argument or environment entry is {} bytes (\"{start}...\"); the most is {}",
            long.len(),
            MAX_ARG_BYTES - 1
        ));
    }
    let total: usize = argv.iter().chain(environment).map(|s| s.len() + 1).sum();
    if total > MAX_EXEC_BYTES {
        return Err(format!(
            "the command line and environment are {total} bytes; the most is {MAX_EXEC_BYTES}"
        ));
    }
    Ok(())
}

/// How often a running service's log size is checked against `log_max_bytes`.
const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Sends `request` with `fd` attached to its first byte (SCM_RIGHTS).
async fn send_with_fd(
    write: &tokio::net::unix::OwnedWriteHalf,
    request: &SupervisorRequest,
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let stream: &UnixStream = write.as_ref();
    let sent = loop {
        stream.writable().await?;
        let attempt = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let fds = [fd];
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(
                stream,
                &[std::io::IoSlice::new(&line)],
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            )
            .map_err(std::io::Error::from)
        });
        match attempt {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    };
    // The descriptor went with the first byte; the rest of a short write follows plainly.
    let mut rest = &line[sent..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    request: &SupervisorRequest,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}

/// Applies a supervisor's report; `Some` when the run is over and the supervisor may go, with
/// the uid it held (to release).
fn record_status(shared: &Shared, unit: &str, status: &SupervisorStatus) -> Option<Option<u32>> {
    let mut m = shared.borrow_mut();
    let u = m.units.get_mut(unit)?;
    if status.error.is_some() {
        return None;
    }
    u.main_pid = Some(status.main_pid);
    if status.running {
        if u.state == UnitState::Stopped
            || u.state == UnitState::Failed
            || u.state == UnitState::Exited
        {
            // Re-adopted after a berthd restart.
            u.set_state(if u.config.service_type == ServiceType::Oneshot {
                UnitState::Starting
            } else {
                UnitState::Running
            });
            if u.uid.is_none() {
                u.uid = proc_uid(status.main_pid);
            }
            if let Some(uid) = u.uid {
                m.users.mark_in_use(uid);
            }
        }
        m.notify();
        return None;
    }
    let exit = status.exit?;
    let stop_requested = u.stop_requested || status.stop_requested;
    u.exit = Some(exit);
    let state = if stop_requested {
        UnitState::Stopped
    } else if exit.success() {
        UnitState::Exited
    } else {
        u.failure = Some(match (exit.code, exit.signal) {
            (_, Some(sig)) => format!("main process killed by signal {sig}"),
            (Some(code), _) => format!("main process exited with code {code}"),
            _ => "main process ended".into(),
        });
        UnitState::Failed
    };
    u.set_state(state);
    let uid = u.uid.take();
    m.notify();
    Some(uid)
}

fn proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Stops a unit: SIGTERM, then SIGKILL of the whole sandbox after TimeoutStopSec=.
pub async fn stop(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    let (name, timeout) = {
        let mut m = shared.borrow_mut();
        let unit = m.unit_mut(&unit_arg)?;
        let name = unit.name.clone();
        if !unit.state.is_active() {
            return Ok(m.status(m.unit(&name)?));
        }
        let timeout = unit.config.timeout_stop.min(MAX_STOP_TIMEOUT);
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        unit.stop_requested = true;
        unit.set_state(UnitState::Stopping);
        let Some(link) = &unit.link else {
            return Err(ManagerError::internal(format!(
                "{name} has no supervisor link"
            )));
        };
        link.send(SupervisorRequest::Stop { timeout_ms })
            .map_err(ManagerError::internal)?;
        m.notify();
        (name, timeout)
    };
    let wait = timeout.saturating_add(STOP_GRACE);
    let stopped = wait_until(&shared, wait, |m| {
        m.units.get(&name).is_none_or(|u| u.link.is_none())
    })
    .await;
    if !stopped {
        return Err(ManagerError::internal(format!(
            "{name} did not stop within {wait:?}"
        )));
    }
    status_of(&shared, &name)
}

/// Stops (if active) and starts again.
pub async fn restart(shared: Shared, unit_arg: String) -> Result<UnitStatus, ManagerError> {
    stop(shared.clone(), unit_arg.clone()).await?;
    start(shared, unit_arg).await
}

/// Re-links the supervisors of services that kept running while berthd was down.
pub fn adopt_running(shared: &Shared) {
    let units: Vec<(String, std::path::PathBuf)> = {
        let m = shared.borrow();
        m.units
            .keys()
            .map(|u| (u.clone(), m.paths.supervisor_socket(u)))
            .filter(|(_, s)| s.exists())
            .collect()
    };
    for (unit, socket) in units {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(u) = shared.borrow_mut().units.get_mut(&unit) {
            u.link = Some(tx);
        }
        tokio::task::spawn_local(follow_supervisor(shared.clone(), unit, socket, rx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_ordinary_command_passes() {
        assert!(check_exec_size(&strings(&["/bin/echo", "hi"]), &strings(&["A=b"])).is_ok());
    }

    #[test]
    fn an_argument_execve_would_refuse_is_refused() {
        let long = "x".repeat(MAX_ARG_BYTES);

        let result = check_exec_size(&strings(&["/bin/echo", &long]), &[]);

        assert!(result.is_err_and(|e| e.contains("131072 bytes")));
    }

    #[test]
    fn too_much_in_total_is_refused() {
        let chunk = "y".repeat(100 * 1024);
        let argv = strings(&["/bin/echo", &chunk, &chunk, &chunk]);

        let result = check_exec_size(&argv, &[]);

        assert!(result.is_err_and(|e| e.contains("the most is 262144")));
    }
}
