//! The supervisor link: following one run through its supervisor's control socket
//! (protocol/src/supervisor.rs), feeding its snapshots to the unit's state machine, rotating
//! its log, and, at berthd's start, restoring each unit and re-linking the supervisors of
//! services that kept running while berthd was down.

use std::os::fd::AsFd;
use std::time::Duration;

use berth_protocol::supervisor::{SupervisorRequest, SupervisorStatus};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use berth_logging::Untrusted;

use super::engine::{carry_out, dispatch};
use super::persistence;
use super::state_machine::{Event, Lifecycle};
use crate::daemon::Shared;
use crate::logs;
use crate::uid_release;

/// Follows one run through its supervisor: feeds its snapshots to the unit's machine, forwards
/// requests, and when the supervisor closes the connection releases the run's uid and the link.
pub async fn follow_supervisor(
    shared: Shared,
    unit: String,
    socket: std::path::PathBuf,
    mut requests: mpsc::UnboundedReceiver<SupervisorRequest>,
) {
    if let Err(e) = follow(&shared, &unit, &socket, &mut requests).await {
        tracing::warn!(%unit, error = %e, "lost the supervisor");
    }
    // After the end it recorded, or without one (the supervisor vanished): the machine decides.
    dispatch(&shared, &unit, Event::SupervisorGone);
    let uid = shared
        .borrow_mut()
        .units
        .get_mut(&unit)
        .and_then(|u| u.uid.take());
    // Before the link goes, so that a stop returns once the uid is clean.
    if let Some(uid) = uid {
        uid_release::release(&shared, uid).await;
    }
    let mut m = shared.borrow_mut();
    if let Some(u) = m.units.get_mut(&unit) {
        u.link = None;
    }
    m.notify();
}

async fn follow(
    shared: &Shared,
    unit: &str,
    socket: &std::path::Path,
    requests: &mut mpsc::UnboundedReceiver<SupervisorRequest>,
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
    let mut ended = false;
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
                if status.error.is_none() {
                    adopt_uid(shared, unit, &status);
                }
                if let Some(u) = shared.borrow_mut().units.get_mut(unit) {
                    u.log_dropped = Some(status.log_dropped);
                }
                // The machine asks for Release (through `requests`) once the run is over.
                dispatch(shared, unit, Event::Snapshot(&status));
                ended |= !status.running;
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
            _ = rotation.tick(), if rotating && !switching && outstanding == 0 && !ended => {
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

/// A run berthd re-adopts: the uid it runs as is in use (taken from its main process). A run
/// as the image's own users holds no dynamic uid: its host uid is only shown.
fn adopt_uid(shared: &Shared, unit: &str, status: &SupervisorStatus) {
    let mut m = shared.borrow_mut();
    let image_users = m.units.get(unit).is_some_and(|u| m.runs_as_image_users(u));
    let Some(u) = m.units.get_mut(unit) else {
        return;
    };
    if !status.running || u.uid.is_some() {
        return;
    }
    let uid = status.main_pid.and_then(proc_uid);
    if image_users {
        if u.run_user.is_none() {
            let name = u.config.identity.user.clone();
            u.run_user = uid.map(|uid| crate::unit_state::RunUser {
                name: name.unwrap_or_else(|| "root".to_owned()),
                uid,
            });
        }
        return;
    }
    u.uid = uid;
    if let Some(uid) = u.uid {
        m.users.mark_in_use(uid);
    }
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

/// At berthd's start: restores each unit's record, re-links the supervisors of runs that went
/// on while berthd was down (their snapshot wins over the record), and acts on runs that
/// ended meanwhile (the restart policy; a run whose supervisor is gone too has failed).
pub fn adopt_running(shared: &Shared) {
    let units: Vec<String> = shared.borrow().units.keys().cloned().collect();
    for unit in units {
        let (socket, record) = {
            let m = shared.borrow();
            let record = persistence::load(&m.paths, &unit).unwrap_or_else(|e| {
                tracing::warn!(unit = %Untrusted(&unit), error = %e, "ignoring the unit's record");
                None
            });
            (m.paths.supervisor_socket(&unit), record)
        };
        let mut actions = Vec::new();
        if let Some(record) = record {
            let mut m = shared.borrow_mut();
            if let Some(u) = m.units.get_mut(&unit) {
                let (lifecycle, restored) = Lifecycle::restore(record, &u.policy());
                u.set_lifecycle(lifecycle);
                actions = restored;
            }
        }
        if socket.exists() {
            let (tx, rx) = mpsc::unbounded_channel();
            if let Some(u) = shared.borrow_mut().units.get_mut(&unit) {
                u.link = Some(tx);
            }
            tokio::task::spawn_local(follow_supervisor(shared.clone(), unit.clone(), socket, rx));
        } else {
            dispatch(shared, &unit, Event::SupervisorGone);
        }
        if carry_out(shared, &unit, actions) {
            tracing::warn!(unit = %Untrusted(&unit), "a restored unit asked for a spawn");
        }
    }
}
