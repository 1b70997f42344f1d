//! `logs`, and the log lines `status` shows.

use std::io::Write;

use anyhow::anyhow;
use berth_protocol::manager::{LogEntry, LogsParams, LogsReply};

use crate::args::LogFormat;
use crate::escape::escape;
use crate::output;
use crate::report::report;
use crate::session::Session;

/// The line as the service wrote it, so that invalid UTF-8 is shown as `\xNN` rather than as
/// the replacement character of `text`.
pub(crate) fn exact_text(entry: &LogEntry) -> &[u8] {
    entry.bytes.as_deref().unwrap_or(entry.text.as_bytes())
}

pub(crate) fn print_entries(
    unit: &str,
    entries: &[LogEntry],
    format: LogFormat,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for e in entries {
        match format {
            LogFormat::Json => writeln!(stdout, "{}", serde_json::to_string(e)?)?,
            LogFormat::Cat => writeln!(stdout, "{}", escape(exact_text(e)))?,
            LogFormat::Short => {
                let marker = if e.stream == "stderr" {
                    " [stderr]"
                } else {
                    ""
                };
                writeln!(
                    stdout,
                    "{} {}{marker}: {}",
                    output::format_usec(e.usec),
                    escape(unit),
                    escape(exact_text(e))
                )?
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

pub(crate) async fn logs(
    s: &mut Session,
    unit: String,
    follow: bool,
    lines: Option<i64>,
    format: LogFormat,
) -> anyhow::Result<()> {
    let name = berth_protocol::manager::unit_name(&unit);
    // Always streamed with `more`: the entries come in small batches however long the log.
    let params = LogsParams {
        unit,
        lines,
        follow: Some(follow),
    };
    let mut failed = None;
    let each = |reply: LogsReply| {
        if reply.truncated == Some(true) {
            report(&anyhow!(
                "older lines of the log are left out; this is its newest part"
            ));
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
    failed.map_or(Ok(()), Err)
}
