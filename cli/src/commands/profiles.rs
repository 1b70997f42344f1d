//! `profile list`, `profile show` and `security`: the profiles a sandbox starts from, and how
//! exposed a unit's sandbox is (systemd-analyze security's checks and weights).

use std::io::Write;
use std::process::ExitCode;

use berth_protocol::manager::{
    Empty, ListProfilesReply, ProfileInfo, ProfileParams, SecurityCheck, SecurityReply,
    ShowProfileReply, UnitParams,
};

use super::{listed, print_text};
use crate::escape::escape;
use crate::output;
use crate::session::Session;

/// Where a profile comes from, for people.
fn source(p: &ProfileInfo) -> String {
    p.path.clone().unwrap_or_else(|| "built-in".into())
}

pub(crate) async fn list(s: &mut Session) -> anyhow::Result<()> {
    let reply: ListProfilesReply = s.call("ListProfiles", &Empty {}).await?;
    if s.json {
        return s.print_json(&reply.profiles);
    }
    let rows: Vec<Vec<String>> = reply
        .profiles
        .iter()
        .map(|p| {
            vec![
                p.reference.clone(),
                p.exposure.map_or_else(|| "-".into(), tenths),
                source(p),
                p.summary.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let legend = output::Legend {
        header: &["PROFILE", "EXPOSURE", "SOURCE", "SUMMARY"],
        footer: listed(rows.len(), "profile", "profiles"),
        show: s.legend,
    };
    output::table(&mut std::io::stdout(), &legend, &rows)?;
    Ok(())
}

/// `profile show NAME`: its text after a `# NAME@VERSION (SOURCE, exposure X.Y)` line.
pub(crate) async fn show(s: &mut Session, profile: String) -> anyhow::Result<()> {
    let reply: ShowProfileReply = s.call("ShowProfile", &ProfileParams { profile }).await?;
    if s.json {
        return s.print_json(&reply);
    }
    let exposure = reply
        .profile
        .exposure
        .map_or_else(String::new, |e| format!(", exposure {}", tenths(e)));
    out!(
        "# {} ({}{exposure})",
        escape(&reply.profile.reference),
        escape(&source(&reply.profile))
    )?;
    print_text(&reply.contents)?;
    Ok(())
}

/// `x.y`, the exposure in tenths as systemd-analyze prints it.
fn tenths(exposure: i64) -> String {
    format!("{}.{}", exposure / 10, exposure % 10)
}

/// One row of `security`: a mark (✓ passes, ✗ fails, blank does not apply), the check, what
/// it found, and what it adds to the exposure.
fn check_row(c: &SecurityCheck) -> Vec<String> {
    let mark = match c.badness {
        None => " ",
        Some(0) => "✓",
        Some(_) => "✗",
    };
    vec![
        format!("{mark} {}", c.id),
        c.description.clone(),
        c.exposure.map(tenths).unwrap_or_default(),
    ]
}

/// `security UNIT`: every check, those that add the most first, and the overall exposure;
/// exit 1 when it is above `threshold`.
pub(crate) async fn security(
    s: &mut Session,
    unit: String,
    threshold: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let reply: SecurityReply = s.call("Security", &UnitParams { unit }).await?;
    let code = match threshold {
        Some(limit) if reply.exposure > limit => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    };
    if s.json {
        s.print_json(&reply)?;
        return Ok(code);
    }
    let mut checks = reply.checks.clone();
    checks.sort_by(|a, b| {
        let key = |c: &SecurityCheck| (std::cmp::Reverse(c.exposure), c.badness.is_none());
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
    let rows: Vec<Vec<String>> = checks.iter().map(check_row).collect();
    let legend = output::Legend {
        header: &["  NAME", "DESCRIPTION", "EXPOSURE"],
        footer: format!(
            "→ Overall exposure level for {} (profile {}): {} {}",
            reply.unit,
            reply.profile,
            tenths(reply.exposure),
            reply.rating
        ),
        show: true,
    };
    if s.legend {
        output::table(&mut std::io::stdout(), &legend, &rows)?;
    } else {
        out!("{}", escape(&legend.footer))?;
    }
    Ok(code)
}
