//! `logs`, and the log lines `status` shows.

use std::io::Write;

use anyhow::anyhow;
use berth_protocol::manager::{LogEntry, LogsParams, LogsReply};
use serde_json::{Map, Value};

use crate::args::LogFormat;
use crate::escape::escape;
use crate::local_time;
use crate::report::report;
use crate::session::Session;

/// The line as the service wrote it, so that invalid UTF-8 is shown as `\xNN` rather than as
/// the replacement character of `text`.
pub(crate) fn exact_text(entry: &LogEntry) -> &[u8] {
    entry.bytes.as_deref().unwrap_or(entry.text.as_bytes())
}

/// This host's name, as journalctl's short output shows it.
fn host_name() -> String {
    String::from_utf8_lossy(rustix::system::uname().nodename().to_bytes()).into_owned()
}

/// journald's priority of an entry: a log socket's message's own, else what journald's stdout
/// streams give a stream's lines by default.
fn priority(entry: &LogEntry) -> String {
    match entry.priority {
        Some(priority) => priority.to_string(),
        None if entry.stream == "stderr" => "3".into(),
        None => "6".into(),
    }
}

/// journald's `_TRANSPORT=`: how the entry came (stderr is a stdout stream to journald).
fn transport(entry: &LogEntry) -> &str {
    match entry.stream.as_str() {
        "stderr" => "stdout",
        other => other,
    }
}

/// Who an entry is from in the short output: a log socket's message's identifier (and pid) as
/// journalctl shows them, else the unit.
fn sender(unit: &str, entry: &LogEntry) -> String {
    match (&entry.identifier, entry.pid) {
        (Some(identifier), Some(pid)) => format!("{identifier}[{pid}]"),
        (Some(identifier), None) => identifier.clone(),
        (None, _) => unit.to_string(),
    }
}

/// One entry as `journalctl -o json` writes one: journald's field names, values as strings,
/// MESSAGE an array of its bytes when they are not UTF-8; berth's own as BERTH_*.
fn journal_json(unit: &str, host: &str, entry: &LogEntry) -> Value {
    let mut object = Map::new();
    let mut put = |k: &str, v: Value| {
        object.insert(k.to_string(), v);
    };
    put("__REALTIME_TIMESTAMP", entry.usec.to_string().into());
    put("_HOSTNAME", host.into());
    put("PRIORITY", priority(entry).into());
    put("UNIT", unit.into());
    put("BERTH_UNIT", unit.into());
    put("BERTH_STREAM", entry.stream.clone().into());
    put("_TRANSPORT", transport(entry).into());
    if let Some(identifier) = &entry.identifier {
        put("SYSLOG_IDENTIFIER", identifier.clone().into());
    }
    if let Some(pid) = entry.pid {
        put("SYSLOG_PID", pid.to_string().into());
    }
    put(
        "MESSAGE",
        match &entry.bytes {
            Some(bytes) => bytes.iter().map(|b| Value::from(*b)).collect(),
            None => entry.text.clone().into(),
        },
    );
    Value::Object(object)
}

pub(crate) fn print_entries(
    unit: &str,
    entries: &[LogEntry],
    format: LogFormat,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let host = host_name();
    for e in entries {
        match format {
            LogFormat::Json => writeln!(stdout, "{}", journal_json(unit, &host, e))?,
            LogFormat::Cat => writeln!(stdout, "{}", escape(exact_text(e)))?,
            LogFormat::Short => writeln!(
                stdout,
                "{} {} {}: {}",
                local_time::format_short(e.usec),
                escape(host.as_bytes()),
                escape(&sender(unit, e)),
                escape(exact_text(e))
            )?,
        }
    }
    stdout.flush()?;
    Ok(())
}

/// What `berth logs` asks for.
pub(crate) struct LogsRequest {
    pub(crate) unit: String,
    pub(crate) follow: bool,
    pub(crate) lines: Option<i64>,
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    /// Newest first: the entries are gathered (the most one call returns, 16 MiB of log) and
    /// printed at the end.
    pub(crate) reverse: bool,
}

fn now_usec() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) async fn logs(
    s: &mut Session,
    request: LogsRequest,
    format: LogFormat,
) -> anyhow::Result<()> {
    let LogsRequest {
        unit,
        follow,
        lines,
        since,
        until,
        reverse,
    } = request;
    let now = now_usec();
    let time = |t: Option<String>| t.map(|t| local_time::parse(&t, now)).transpose();
    let name = berth_protocol::manager::unit_name(&unit);
    // Always streamed with `more`: the entries come in small batches however long the log.
    let params = LogsParams {
        unit,
        lines,
        follow: Some(follow),
        since_usec: time(since)?,
        until_usec: time(until)?,
    };
    let mut failed = None;
    let mut gathered = Vec::new();
    let each = |reply: LogsReply| {
        if reply.truncated == Some(true) {
            report(&anyhow!(
                "older lines of the log are left out; this is its newest part"
            ));
        }
        if reverse {
            gathered.extend(reply.entries);
            return true;
        }
        match print_entries(&name, &reply.entries, format) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    };
    s.call_more("Logs", &params, each).await?;
    if let Some(e) = failed {
        return Err(e);
    }
    gathered.reverse();
    print_entries(&name, &gathered, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: &str, priority: Option<i64>) -> LogEntry {
        LogEntry {
            usec: 1,
            stream: stream.into(),
            text: "hi".into(),
            bytes: None,
            priority,
            pid: priority.map(|_| 42),
            identifier: priority.map(|_| "food".into()),
        }
    }

    #[test]
    fn a_syslog_message_has_its_priority_identifier_pid_and_transport() {
        let json = journal_json("a.service", "host", &entry("syslog", Some(2)));

        assert_eq!(json["PRIORITY"], "2");
        assert_eq!(json["SYSLOG_IDENTIFIER"], "food");
        assert_eq!(json["SYSLOG_PID"], "42");
        assert_eq!(json["_TRANSPORT"], "syslog");
        assert_eq!(json["BERTH_STREAM"], "syslog");
    }

    #[test]
    fn output_lines_keep_the_streams_priority_and_name_no_identifier() {
        let json = journal_json("a.service", "host", &entry("stderr", None));

        assert_eq!(json["PRIORITY"], "3");
        assert_eq!(json["_TRANSPORT"], "stdout");
        assert!(json.get("SYSLOG_IDENTIFIER").is_none());
        assert_eq!(sender("a.service", &entry("stdout", None)), "a.service");
        assert_eq!(sender("a.service", &entry("journal", Some(6))), "food[42]");
    }
}
