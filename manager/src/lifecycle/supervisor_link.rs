//! The supervisor link: following one run through its supervisor's control socket
//! (protocol/src/supervisor.rs), recording its exit, rotating its log, and re-linking the
//! supervisors of services that kept running while berthd was down.

use std::os::fd::AsFd;
use std::time::Duration;

use berth_protocol::supervisor::{SupervisorRequest, SupervisorStatus};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::daemon::Shared;
use crate::logs;
use crate::uid_release;
use crate::unit::ServiceType;
use crate::unit_state::UnitState;

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
    u.main_pid = status.main_pid;
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
                u.uid = status.main_pid.and_then(proc_uid);
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
