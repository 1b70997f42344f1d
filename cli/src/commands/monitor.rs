//! `monitor`: every state change of every unit as it happens.

use std::io::Write;

use anyhow::anyhow;
use berth_protocol::manager::{Empty, MonitorReply, UnitEvent};

use crate::escape::escape;
use crate::local_time;
use crate::report::report;
use crate::session::Session;

/// `Dec 01 14:03:22 hello.service: starting -> running (pid 4242)`; a unit's first line (the
/// current states the stream starts with, or a newly attached unit) has no state before it.
fn line(event: &UnitEvent) -> String {
    let mut text = format!(
        "{} {}: ",
        local_time::format_short(event.usec),
        escape(&event.unit)
    );
    if let Some(before) = &event.previous_state {
        text.push_str(&format!("{} -> ", escape(before)));
    }
    text.push_str(&escape(&event.state));
    if let Some(pid) = event.main_pid {
        text.push_str(&format!(" (pid {pid})"));
    }
    if let Some(result) = &event.result {
        text.push_str(&format!(" result {}", escape(result)));
    }
    text
}

pub(crate) async fn monitor(s: &mut Session) -> anyhow::Result<()> {
    let json = s.json;
    let mut failed = None;
    let each = |reply: MonitorReply| {
        if let Some(lost) = reply.lost {
            report(&anyhow!(
                "{lost} changes were missed (this monitor read too slowly); the current states follow"
            ));
        }
        let mut stdout = std::io::stdout().lock();
        let printed = reply.events.iter().try_for_each(|e| {
            if json {
                writeln!(stdout, "{}", serde_json::to_string(e)?)?;
            } else {
                writeln!(stdout, "{}", line(e))?;
            }
            anyhow::Ok(())
        });
        match printed.and_then(|()| Ok(stdout.flush()?)) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    };
    s.call_more("Monitor", &Empty {}, each).await?;
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_shows_the_state_before_and_after() {
        let event = UnitEvent {
            unit: "hello.service".into(),
            state: "running".into(),
            previous_state: Some("starting".into()),
            result: None,
            main_pid: Some(4242),
            usec: 0,
        };

        let text = line(&event);

        assert!(
            text.ends_with(" hello.service: starting -> running (pid 4242)"),
            "{text}"
        );
    }
}
