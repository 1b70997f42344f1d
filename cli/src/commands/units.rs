//! The verbs on units: `list`, `start`, `stop`, `restart`, `status`, `is-active`, `is-failed`,
//! `cat`, `edit`, `set-property`.

use std::borrow::Cow;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use berth_protocol::manager::{
    CatReply, DropInsReply, Empty, KillParams, ListReply, LogsParams, LogsReply, MAX_DROP_IN_BYTES,
    ManagerError, ResetFailedParams, SetPropertyParams, StatusReply, UnitParams, UnitStatus,
    WriteDropInParams,
};

use super::logs::print_entries;
use super::{listed, print_text};
use crate::args::LogFormat;
use crate::escape::escape;
use crate::output;
use crate::report::{is_no_such_unit, report};
use crate::session::Session;

/// `cat`: as `systemctl cat` shows a unit, each file after a `# PATH` line.
pub(crate) async fn cat(s: &mut Session, unit: String) -> anyhow::Result<()> {
    let reply: CatReply = s.call("Cat", &UnitParams { unit }).await?;
    if s.json {
        return s.print_json(&reply);
    }
    for (i, file) in reply.files.iter().enumerate() {
        if i > 0 {
            out!()?;
        }
        out!("# {}", escape(&file.path))?;
        print_text(&file.contents)?;
    }
    Ok(())
}

/// What a drop-in change did, and berthd's warnings about the unit.
pub(crate) fn print_drop_ins(s: &Session, reply: &DropInsReply) -> anyhow::Result<()> {
    for warning in &reply.warnings {
        report(&anyhow!("warning: {warning}"));
    }
    if s.json {
        return s.print_json(reply);
    }
    for path in &reply.written {
        out!("Wrote {}", escape(path))?;
    }
    for path in &reply.removed {
        out!("Removed {}", escape(path))?;
    }
    Ok(())
}

/// `edit`: the drop-in (or, for a new one, a commented copy of the unit for reference) in a
/// private temporary file, the editor on it, and what it holds then sent to berthd, which
/// checks it before writing anything.
pub(crate) async fn edit(s: &mut Session, unit: String, drop_in: String) -> anyhow::Result<()> {
    let current: CatReply = s.call("Cat", &UnitParams { unit: unit.clone() }).await?;
    let suffix = format!(".d/{drop_in}");
    let existing = current.files.iter().find(|f| f.path.ends_with(&suffix));
    let before = match existing {
        Some(file) => file.contents.clone(),
        None => {
            let mut text = format!(
                "### New drop-in {drop_in} of {}: lines here apply after the unit's own.\n\
                 ### Only comments (as now) writes nothing. The unit as it stands:\n",
                current.unit
            );
            for file in &current.files {
                text.push_str(&format!("# {}\n", file.path));
                for line in file.contents.lines() {
                    text.push_str(&format!("#   {line}\n"));
                }
            }
            text
        }
    };
    let dir = private_temp_dir()?;
    let path = dir.join(&drop_in);
    let result = edit_in(&path, &before);
    let _ = std::fs::remove_dir_all(&dir);
    let after = result?;
    if after == before {
        report(&anyhow!(
            "{drop_in} of {} unchanged, nothing written",
            current.unit
        ));
        return Ok(());
    }
    let params = WriteDropInParams {
        unit: current.unit,
        name: drop_in,
        contents: after,
    };
    let reply: DropInsReply = s.call("WriteDropIn", &params).await?;
    print_drop_ins(s, &reply)
}

/// Writes `text` to `path`, runs the editor on it, and reads back what it holds.
pub(crate) fn edit_in(path: &std::path::Path, text: &str) -> anyhow::Result<String> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    let editor = editor()?;
    // Through sh, as git and systemctl take $EDITOR: it may carry arguments (`code -w`).
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .with_context(|| format!("cannot run the editor {editor}"))?;
    if !status.success() {
        return Err(anyhow!(
            "the editor {editor} failed ({status}); nothing written"
        ));
    }
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_DROP_IN_BYTES as u64 {
        return Err(anyhow!(
            "the drop-in is {size} bytes, more than the {MAX_DROP_IN_BYTES} a drop-in may hold; \
             nothing written"
        ));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow!("the drop-in is not UTF-8 text; nothing written"))
}

/// `$EDITOR`, then `$VISUAL`, then the first of editor, nano, vim, vi on the PATH.
pub(crate) fn editor() -> anyhow::Result<String> {
    for var in ["EDITOR", "VISUAL"] {
        if let Some(value) = std::env::var_os(var).and_then(|v| v.into_string().ok())
            && !value.trim().is_empty()
        {
            return Ok(value);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for candidate in ["editor", "nano", "vim", "vi"] {
        if std::env::split_paths(&path).any(|dir| dir.join(candidate).is_file()) {
            return Ok(candidate.to_owned());
        }
    }
    Err(anyhow!(
        "no editor: set EDITOR (nor VISUAL, editor, nano, vim or vi was found)"
    ))
}

/// A new directory only the caller may enter, for the file being edited.
pub(crate) fn private_temp_dir() -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..16u32 {
        let dir = base.join(format!(
            "berth-edit-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(anyhow!(
                    "cannot create a directory in {}: {e}",
                    base.display()
                ));
            }
        }
    }
    Err(anyhow!(
        "cannot create a private directory in {}",
        base.display()
    ))
}

pub(crate) fn unit_rows(units: &[UnitStatus]) -> Vec<Vec<String>> {
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    units
        .iter()
        .map(|u| {
            vec![
                u.unit.clone(),
                u.image.clone(),
                u.state.clone(),
                opt(u.main_pid),
                opt(u.uid),
                u.profile.clone(),
            ]
        })
        .collect()
}

pub(crate) async fn list(s: &mut Session) -> anyhow::Result<()> {
    let mut units = Vec::new();
    s.call_more("List", &Empty {}, |reply: ListReply| {
        units.extend(reply.units);
        true
    })
    .await?;
    if s.json {
        return s.print_json(&units);
    }
    if units.is_empty() {
        if s.legend {
            out!("No units attached.")?;
        }
        return Ok(());
    }
    let legend = output::Legend {
        header: &["UNIT", "IMAGE", "STATE", "MAIN PID", "UID", "PROFILE"],
        footer: listed(units.len(), "unit", "units"),
        show: s.legend,
    };
    output::table(&mut std::io::stdout(), &legend, &unit_rows(&units))?;
    Ok(())
}

pub(crate) fn check_started(status: &UnitStatus) -> anyhow::Result<()> {
    if status.state == "failed" {
        let why = status.failure.as_deref().unwrap_or("failed");
        return Err(anyhow!(
            "{} failed: {why} (see 'berth logs {}')",
            status.unit,
            status.unit
        ));
    }
    Ok(())
}

/// Calls `method` (`Start`, `Stop`, `Restart`) on every unit, as systemctl does: a failure is
/// reported as its own `berth: ...` line and the next unit is still acted on. Returns the states
/// the calls answered and whether any failed.
pub(crate) async fn act_on_each(
    s: &mut Session,
    method: &str,
    units: Vec<String>,
) -> anyhow::Result<(Vec<UnitStatus>, bool)> {
    let mut statuses = Vec::new();
    let mut failed = false;
    for unit in units {
        let outcome = match s.call::<_, StatusReply>(method, &UnitParams { unit }).await {
            Ok(reply) => {
                let checked = if method == "Stop" || method == "Reload" {
                    Ok(())
                } else {
                    check_started(&reply.status)
                };
                statuses.push(reply.status);
                checked
            }
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            report(&e);
            failed = true;
        }
    }
    Ok((statuses, failed))
}

pub(crate) fn exit_for(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) async fn lifecycle(
    s: &mut Session,
    method: &str,
    units: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let (statuses, failed) = act_on_each(s, method, units).await?;
    if s.json {
        s.print_json(&statuses)?;
    }
    Ok(exit_for(failed))
}

/// `enable`/`disable` (`method`) of every unit, then `then` (`Start`/`Stop`, with `--now`) of
/// those it succeeded for; systemctl's messages are for symlinks, so berth says what changed.
pub(crate) async fn enable(
    s: &mut Session,
    method: &str,
    units: Vec<String>,
    then: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut done = Vec::new();
    let mut failed = false;
    for unit in units {
        match s.call::<_, StatusReply>(method, &UnitParams { unit }).await {
            Ok(reply) => done.push(reply.status),
            Err(e) => {
                report(&e);
                failed = true;
            }
        }
    }
    if !s.json {
        let what = if method == "Enable" {
            "Enabled"
        } else {
            "Disabled"
        };
        for status in &done {
            out!("{what} {}", escape(&status.unit))?;
        }
    }
    let statuses = match then {
        Some(verb) => {
            let names = done.iter().map(|st| st.unit.clone()).collect();
            let (statuses, then_failed) = act_on_each(s, verb, names).await?;
            failed |= then_failed;
            statuses
        }
        None => done,
    };
    if s.json {
        s.print_json(&statuses)?;
    }
    Ok(exit_for(failed))
}

/// `kill`: the signal is checked here first, so a typo never reaches berthd.
pub(crate) async fn kill(
    s: &mut Session,
    unit: String,
    signal: String,
    kill_whom: String,
) -> anyhow::Result<()> {
    if berth_protocol::signal_names::signal_number(&signal).is_none() {
        return Err(anyhow!("{}: not a signal", escape(&signal)));
    }
    let params = KillParams {
        unit,
        signal: Some(signal),
        kill_whom: Some(kill_whom),
    };
    let reply: StatusReply = s.call("Kill", &params).await?;
    if s.json {
        s.print_json(&reply.status)?;
    }
    Ok(())
}

/// `reset-failed`: every unit when none is named, as systemctl does.
pub(crate) async fn reset_failed(s: &mut Session, units: Vec<String>) -> anyhow::Result<()> {
    let reply: ListReply = s.call("ResetFailed", &ResetFailedParams { units }).await?;
    if s.json {
        s.print_json(&reply.units)?;
    }
    Ok(())
}

/// `systemctl status`'s exit status for a unit that is not active (LSB "program is not
/// running"); also `is-active`'s.
pub(crate) const EXIT_NOT_ACTIVE: u8 = 3;
/// `systemctl status`'s exit status for a unit that does not exist (LSB "status is unknown").
pub(crate) const EXIT_NO_SUCH_UNIT: u8 = 4;

/// systemd's name for a berth state, as `systemctl is-active` prints it: a oneshot that has
/// exited is inactive (berth keeps no `RemainAfterExit=`).
pub(crate) fn active_state(state: &str) -> Cow<'_, str> {
    Cow::Borrowed(match state {
        "running" => "active",
        "starting" => "activating",
        "stopping" => "deactivating",
        "failed" => "failed",
        "stopped" | "exited" => "inactive",
        other => return escape(other),
    })
}

/// `is-active`/`is-failed`: prints the state of every unit (unless `quiet`) and exits 0 when at
/// least one is in `wanted`, else `otherwise`. A unit that does not exist is `inactive`, as in
/// systemctl.
pub(crate) async fn is_state(
    s: &mut Session,
    units: Vec<String>,
    quiet: bool,
    wanted: &str,
    otherwise: u8,
) -> anyhow::Result<ExitCode> {
    let mut any = false;
    for unit in units {
        let state = match s
            .call::<_, StatusReply>("Status", &UnitParams { unit })
            .await
        {
            Ok(reply) => active_state(&reply.status.state).into_owned(),
            Err(e) if is_no_such_unit(&e) => "inactive".to_string(),
            Err(e) => return Err(e),
        };
        any |= state == wanted;
        if !quiet {
            out!("{state}")?;
        }
    }
    Ok(if any {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(otherwise)
    })
}

pub(crate) async fn status(s: &mut Session, unit: String) -> anyhow::Result<ExitCode> {
    let st = match s
        .call::<_, StatusReply>("Status", &UnitParams { unit: unit.clone() })
        .await
    {
        Ok(reply) => reply.status,
        Err(e) if is_no_such_unit(&e) => {
            report(&e);
            return Ok(ExitCode::from(EXIT_NO_SUCH_UNIT));
        }
        Err(e) => return Err(e),
    };
    let code = if st.state == "running" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_ACTIVE)
    };
    if s.json {
        s.print_json(&st)?;
        return Ok(code);
    }
    let dot = match st.state.as_str() {
        "running" => "●",
        "failed" => "×",
        _ => "○",
    };
    match &st.description {
        Some(d) => out!("{dot} {} - {}", escape(&st.unit), escape(d))?,
        None => out!("{dot} {}", escape(&st.unit))?,
    }
    out!(
        "     Image: {} (profile {})",
        escape(&st.image),
        escape(&st.profile)
    )?;
    if st.enabled == Some(true) {
        out!("   Enabled: yes (started when berthd starts at boot)")?;
    }
    let since = st
        .since_usec
        .map(|u| format!(" since {} UTC", output::format_usec(u)))
        .unwrap_or_default();
    out!("     State: {}{since}", escape(&st.state))?;
    if let Some(pid) = st.main_pid {
        out!("  Main PID: {pid}")?;
    }
    // The service's own STATUS= (sd_notify), quoted as systemctl shows it.
    if let Some(text) = &st.status_text {
        out!("    Status: \"{}\"", escape(text))?;
    }
    print_user(&st)?;
    if let Some(ports) = st.ports.as_deref().filter(|p| !p.is_empty()) {
        let list: Vec<String> = ports.iter().map(i64::to_string).collect();
        out!(
            "     Ports: {} (granted; bound for it below 1024)",
            list.join(", ")
        )?;
    }
    match (st.exit_code, st.exit_signal) {
        (Some(code), _) => out!("      Exit: code {code}")?,
        (_, Some(sig)) => out!("      Exit: signal {sig}")?,
        _ => {}
    }
    if let Some(f) = &st.failure {
        out!("   Failure: {}", escape(f))?;
    }
    if let Some(path) = &st.var_path {
        out!("       Var: {} (persistent /var)", escape(path))?;
    }
    print_accounting(&st)?;
    if let Some(n) = st.log_dropped.filter(|n| *n > 0) {
        out!("       Log: {n} lines dropped (the log could not keep up)")?;
    }
    let params = LogsParams {
        unit,
        lines: Some(10),
        follow: None,
        since_usec: None,
        until_usec: None,
    };
    let entries = match s.call::<_, LogsReply>("Logs", &params).await {
        Ok(logs) => logs.entries,
        // Not allowed to read this unit's logs: the status without them, as systemctl shows it.
        Err(e)
            if matches!(
                e.downcast_ref::<ManagerError>(),
                Some(ManagerError::PermissionDenied { .. })
            ) =>
        {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    if !entries.is_empty() {
        out!()?;
        print_entries(&st.unit, &entries, LogFormat::Short)?;
    }
    Ok(code)
}

/// Who the service runs as: the image's user with its ids inside and on the host and the
/// attachment's uid block, or the dynamic uid.
fn print_user(st: &berth_protocol::manager::UnitStatus) -> anyhow::Result<()> {
    let (Some(user), Some(block)) = (&st.user, st.uid_block) else {
        if let Some(uid) = st.uid {
            out!("       UID: {uid} (dynamic)")?;
        }
        return Ok(());
    };
    let range = format!("block {}-{}", block.first, block.last());
    let ids = st
        .uid
        .and_then(|uid| u32::try_from(uid).ok())
        .and_then(|host| Some((block.inside_id(host)?, host)));
    match ids {
        Some((inside, host)) => out!(
            "      User: {} (uid {inside} inside, {host} on the host; {range})",
            escape(user)
        )?,
        None => out!("      User: {} ({range})", escape(user))?,
    }
    Ok(())
}

/// Tasks, memory and CPU time as `systemctl status` shows them, and what of the limits fell
/// back.
fn print_accounting(st: &berth_protocol::manager::UnitStatus) -> anyhow::Result<()> {
    if let Some(tasks) = st.tasks {
        out!("     Tasks: {tasks}")?;
    }
    if let Some(current) = st.memory_current {
        match st.memory_peak {
            Some(peak) => out!(
                "    Memory: {} (peak: {})",
                output::format_bytes(current),
                output::format_bytes(peak)
            )?,
            None => out!("    Memory: {}", output::format_bytes(current))?,
        }
    }
    if let Some(usec) = st.cpu_usec {
        out!("       CPU: {}", output::format_cpu_time(usec))?;
    }
    for note in st.resource_notes.iter().flatten() {
        out!("      Note: {}", escape(note))?;
    }
    Ok(())
}

pub(crate) async fn set_property(
    s: &mut Session,
    unit: String,
    properties: Vec<String>,
) -> anyhow::Result<()> {
    let params = SetPropertyParams { unit, properties };
    let reply: DropInsReply = s.call("SetProperty", &params).await?;
    print_drop_ins(s, &reply)?;
    Ok(())
}
