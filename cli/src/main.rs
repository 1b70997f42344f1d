//! berth: the command line client of berthd.

use std::process::ExitCode;

use anyhow::{Context, anyhow};
use berth_protocol::manager::{
    AttachParams, AttachReply, DetachParams, DetachReply, Empty, ImageParams, ImagesReply,
    InspectImageParams, InspectImageReply, IsAttachedReply, ListReply, LogEntry, LogsParams,
    LogsReply, ManagerError, StatusReply, UnitParams, UnitStatus,
};
use berth_varlink::client::{Client, ClientError, remote_error_of};
use clap::Parser;
use serde::Serialize;
use serde::de::DeserializeOwned;

use berth_cli::args::{Cli, Command, ImageCommand};
use berth_cli::output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns a client error into the one line a user should read.
fn explain(error: ClientError) -> anyhow::Error {
    if let Some(remote) = remote_error_of(&error) {
        if let Some(typed) = remote.typed::<ManagerError>() {
            return anyhow!("{typed}");
        }
        return anyhow!("{remote}");
    }
    anyhow!("{error}")
}

struct Session {
    client: Client,
    json: bool,
}

impl Session {
    async fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> anyhow::Result<R> {
        self.client
            .call(&format!("io.berth.Manager.{method}"), params, Vec::new())
            .await
            .map_err(explain)
    }

    /// `method` with `more`: `each` gets every reply until the last (or until it says stop).
    async fn call_more<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
        each: impl FnMut(R) -> bool,
    ) -> anyhow::Result<()> {
        self.client
            .call_more(&format!("io.berth.Manager.{method}"), params, each)
            .await
            .map_err(explain)
    }

    fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::connect(&cli.socket)
        .await
        .map_err(|e| anyhow!("{e} (is berthd running?)"))?;
    let mut s = Session {
        client,
        json: cli.json,
    };
    match cli.command {
        Command::Image(ImageCommand::List) => image_list(&mut s).await?,
        Command::Image(ImageCommand::Inspect { image, cat }) => {
            image_inspect(&mut s, image, cat).await?
        }
        Command::List => list(&mut s).await?,
        Command::Attach {
            image,
            prefixes,
            profile,
            now,
            force,
        } => attach(&mut s, image, prefixes, profile, now, force).await?,
        Command::Detach { image, now } => detach(&mut s, image, now).await?,
        Command::IsAttached { image } => {
            let reply: IsAttachedReply = s
                .call(
                    "IsAttached",
                    &ImageParams {
                        image: image_arg(&image)?,
                    },
                )
                .await?;
            if s.json {
                s.print_json(&reply)?;
            } else {
                println!("{}", reply.state);
            }
            if reply.state == "detached" {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Start { units } => lifecycle(&mut s, "Start", units).await?,
        Command::Stop { units } => lifecycle(&mut s, "Stop", units).await?,
        Command::Restart { units } => lifecycle(&mut s, "Restart", units).await?,
        Command::Status { unit } => status(&mut s, unit).await?,
        Command::Logs {
            unit,
            follow,
            lines,
        } => logs(&mut s, unit, follow, lines).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Paths are resolved here, with the caller's view of the filesystem; names go as they are.
fn image_arg(image: &str) -> anyhow::Result<String> {
    if !image.contains('/') {
        return Ok(image.to_string());
    }
    let path = std::fs::canonicalize(image).with_context(|| format!("image {image}"))?;
    Ok(path.display().to_string())
}

async fn image_list(s: &mut Session) -> anyhow::Result<()> {
    let reply: ImagesReply = s.call("ListImages", &Empty {}).await?;
    if s.json {
        return s.print_json(&reply.images);
    }
    if reply.images.is_empty() {
        println!("No images.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reply
        .images
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.kind.clone(),
                i.state.clone(),
                i.version.clone().unwrap_or_else(|| "-".into()),
                i.pretty_name.clone().unwrap_or_else(|| "-".into()),
                i.path.clone(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "TYPE", "STATE", "VERSION", "DESCRIPTION", "PATH"],
        &rows,
    );
    Ok(())
}

async fn image_inspect(s: &mut Session, image: String, cat: bool) -> anyhow::Result<()> {
    let params = InspectImageParams {
        image: image_arg(&image)?,
        cat: Some(cat),
    };
    let reply: InspectImageReply = s.call("InspectImage", &params).await?;
    let d = reply.details;
    if s.json {
        return s.print_json(&d);
    }
    println!("Image: {}", d.image.path);
    println!(
        "Portable Service: {}",
        d.image.pretty_name.as_deref().unwrap_or("n/a")
    );
    println!(
        "Operating System: {}",
        d.os_pretty_name.as_deref().unwrap_or("n/a")
    );
    if !d.portable_prefixes.is_empty() {
        println!("Prefixes: {}", d.portable_prefixes.join(" "));
    }
    if let Some(text) = &d.os_release {
        println!("\n/etc/os-release:\n{}", text.trim_end());
    }
    println!("Unit files:");
    for unit in &d.units {
        println!("  {} ({})", unit.name, unit.path);
        if let Some(contents) = &unit.contents {
            println!("{}", contents.trim_end());
        }
    }
    Ok(())
}

fn unit_rows(units: &[UnitStatus]) -> Vec<Vec<String>> {
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

async fn list(s: &mut Session) -> anyhow::Result<()> {
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
        println!("No units attached.");
        return Ok(());
    }
    output::table(
        &["UNIT", "IMAGE", "STATE", "MAIN PID", "UID", "PROFILE"],
        &unit_rows(&units),
    );
    Ok(())
}

async fn attach(
    s: &mut Session,
    image: String,
    prefixes: Vec<String>,
    profile: Option<String>,
    now: bool,
    force: bool,
) -> anyhow::Result<()> {
    let params = AttachParams {
        image: image_arg(&image)?,
        prefixes: Some(prefixes),
        profile,
        force: Some(force),
    };
    let reply: AttachReply = s.call("Attach", &params).await?;
    for warning in &reply.warnings {
        eprintln!("berth: warning: {warning}");
    }
    if s.json {
        s.print_json(&reply)?;
    } else {
        println!("Attached {}: {}", reply.image, reply.units.join(" "));
    }
    if now {
        for unit in &reply.units {
            let reply: StatusReply = s.call("Start", &UnitParams { unit: unit.clone() }).await?;
            check_started(&reply.status)?;
        }
    }
    Ok(())
}

async fn detach(s: &mut Session, image: String, now: bool) -> anyhow::Result<()> {
    let params = DetachParams {
        image: image_arg(&image)?,
        now: Some(now),
    };
    let reply: DetachReply = s.call("Detach", &params).await?;
    if s.json {
        s.print_json(&reply)
    } else {
        println!("Detached {}: {}", reply.image, reply.units.join(" "));
        Ok(())
    }
}

fn check_started(status: &UnitStatus) -> anyhow::Result<()> {
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

async fn lifecycle(s: &mut Session, method: &str, units: Vec<String>) -> anyhow::Result<()> {
    let mut statuses = Vec::new();
    for unit in units {
        let reply: StatusReply = s.call(method, &UnitParams { unit }).await?;
        if method != "Stop" {
            check_started(&reply.status)?;
        }
        statuses.push(reply.status);
    }
    if s.json {
        s.print_json(&statuses)?;
    }
    Ok(())
}

async fn status(s: &mut Session, unit: String) -> anyhow::Result<()> {
    let reply: StatusReply = s.call("Status", &UnitParams { unit: unit.clone() }).await?;
    let st = reply.status;
    if s.json {
        return s.print_json(&st);
    }
    let dot = match st.state.as_str() {
        "running" => "●",
        "failed" => "×",
        _ => "○",
    };
    match &st.description {
        Some(d) => println!("{dot} {} - {d}", st.unit),
        None => println!("{dot} {}", st.unit),
    }
    println!("     Image: {} (profile {})", st.image, st.profile);
    let since = st
        .since_usec
        .map(|u| format!(" since {} UTC", output::format_usec(u)))
        .unwrap_or_default();
    println!("     State: {}{since}", st.state);
    if let Some(pid) = st.main_pid {
        println!("  Main PID: {pid}");
    }
    if let Some(uid) = st.uid {
        println!("       UID: {uid} (dynamic)");
    }
    match (st.exit_code, st.exit_signal) {
        (Some(code), _) => println!("      Exit: code {code}"),
        (_, Some(sig)) => println!("      Exit: signal {sig}"),
        _ => {}
    }
    if let Some(f) = &st.failure {
        println!("   Failure: {f}");
    }
    let logs: LogsReply = s
        .call(
            "Logs",
            &LogsParams {
                unit,
                lines: Some(10),
                follow: None,
            },
        )
        .await?;
    if !logs.entries.is_empty() {
        println!();
        print_entries(&st.unit, &logs.entries, false);
    }
    Ok(())
}

fn print_entries(unit: &str, entries: &[LogEntry], json: bool) {
    for e in entries {
        if json {
            if let Ok(line) = serde_json::to_string(e) {
                println!("{line}");
            }
        } else {
            let marker = if e.stream == "stderr" {
                " [stderr]"
            } else {
                ""
            };
            println!("{} {unit}{marker}: {}", output::format_usec(e.usec), e.text);
        }
    }
}

async fn logs(
    s: &mut Session,
    unit: String,
    follow: bool,
    lines: Option<i64>,
) -> anyhow::Result<()> {
    let json = s.json;
    let name = berth_protocol::manager::unit_name(&unit);
    // Always streamed with `more`: the entries come in small batches however long the log.
    let params = LogsParams {
        unit,
        lines,
        follow: Some(follow),
    };
    let each = |reply: LogsReply| {
        if reply.truncated == Some(true) {
            eprintln!("berth: older lines of the log are left out; this is its newest part");
        }
        print_entries(&name, &reply.entries, json);
        use std::io::Write;
        std::io::stdout().flush().is_ok()
    };
    s.call_more("Logs", &params, each).await
}
