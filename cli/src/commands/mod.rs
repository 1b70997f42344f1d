//! What each verb does, one module per family of verbs, and [`run`], which dispatches to them.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::anyhow;
use berth_varlink::client::Client;

use crate::args::{Cli, Command, ImageCommand, LogFormat, ProfileCommand};
use crate::escape::escape;
use crate::pack;
use crate::session::Session;

mod attach;
mod images;
mod logs;
mod monitor;
mod profiles;
mod units;

/// Runs one parsed command line; the exit code is the verb's (systemctl's where it has one).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Packing reads the caller's directory and writes the caller's file: berthd has no part.
    if let Command::Image(ImageCommand::Pack {
        dir,
        output,
        format,
    }) = &cli.command
    {
        let quiet = !std::io::stderr().is_terminal();
        pack::pack(dir, output, *format, quiet)?;
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::connect(&cli.socket)
        .await
        .map_err(|e| anyhow!("{e} (is berthd running?)"))?;
    let mut s = Session {
        client,
        json: cli.json,
        legend: !cli.no_legend,
    };
    match cli.command {
        Command::Image(ImageCommand::List) => images::list(&mut s).await?,
        Command::Image(ImageCommand::Inspect {
            image,
            prefixes,
            cat,
        }) => images::image_inspect(&mut s, image, prefixes, cat).await?,
        Command::Image(ImageCommand::Import { path, name }) => {
            images::image_import(&mut s, &path, name).await?
        }
        Command::Image(ImageCommand::Remove { images }) => images::remove(&mut s, images).await?,
        Command::Image(ImageCommand::ReadOnly { image, read_only }) => {
            images::read_only(&mut s, image, read_only).await?
        }
        Command::Image(ImageCommand::Pack { .. }) => {}
        Command::List => units::list(&mut s).await?,
        Command::Attach {
            image,
            prefixes,
            profile,
            now,
            enable,
            force,
            extensions,
            ports,
        } => {
            let how = attach::How {
                now,
                enable,
                force,
                ports,
            };
            return attach::attach(&mut s, image, prefixes, profile, how, extensions).await;
        }
        Command::Detach {
            image,
            now,
            clean,
            extensions,
        } => attach::detach(&mut s, image, now, clean, extensions).await?,
        Command::Reattach { image, now } => attach::reattach(&mut s, image, now).await?,
        Command::IsAttached { image, extensions } => {
            return attach::is_attached(&mut s, image, extensions).await;
        }
        Command::Start { units } => return units::lifecycle(&mut s, "Start", units).await,
        Command::Stop { units } => return units::lifecycle(&mut s, "Stop", units).await,
        Command::Restart { units } => return units::lifecycle(&mut s, "Restart", units).await,
        Command::Enable { units, now } => {
            return units::enable(&mut s, "Enable", units, now.then_some("Start")).await;
        }
        Command::Disable { units, now } => {
            return units::enable(&mut s, "Disable", units, now.then_some("Stop")).await;
        }
        Command::Reload { units } => return units::lifecycle(&mut s, "Reload", units).await,
        Command::Kill {
            unit,
            signal,
            kill_whom,
        } => units::kill(&mut s, unit, signal, kill_whom).await?,
        Command::ResetFailed { units } => units::reset_failed(&mut s, units).await?,
        Command::Status { unit } => return units::status(&mut s, unit).await,
        Command::IsActive { units, quiet } => {
            return units::is_state(&mut s, units, quiet, "active", units::EXIT_NOT_ACTIVE).await;
        }
        Command::IsFailed { units, quiet } => {
            return units::is_state(&mut s, units, quiet, "failed", 1).await;
        }
        Command::Cat { unit } => units::cat(&mut s, unit).await?,
        Command::Edit { unit, drop_in } => units::edit(&mut s, unit, drop_in).await?,
        Command::SetProperty { unit, properties } => {
            units::set_property(&mut s, unit, properties).await?
        }
        Command::Profile(ProfileCommand::List) => profiles::list(&mut s).await?,
        Command::Profile(ProfileCommand::Show { profile }) => {
            profiles::show(&mut s, profile).await?
        }
        Command::Security { unit, threshold } => {
            return profiles::security(&mut s, unit, threshold).await;
        }
        Command::Monitor => monitor::monitor(&mut s).await?,
        Command::Logs {
            unit,
            follow,
            lines,
            since,
            until,
            reverse,
            output,
        } => {
            let format = if s.json { LogFormat::Json } else { output };
            let request = logs::LogsRequest {
                unit,
                follow,
                lines,
                since,
                until,
                reverse,
            };
            logs::logs(&mut s, request, format).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The footer of a table: `1 image listed.`, `2 images listed.`
pub(crate) fn listed(count: usize, one: &str, many: &str) -> String {
    format!("{count} {} listed.", if count == 1 { one } else { many })
}

/// A file's text, line by line, each escaped.
pub(crate) fn print_text(text: &str) -> std::io::Result<()> {
    for line in text.trim_end().lines() {
        out!("{}", escape(line))?;
    }
    Ok(())
}
