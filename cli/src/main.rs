//! berth: the command line client of berthd.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Parser;

use berth_cli::args::Cli;
use berth_cli::commands::run;
use berth_cli::report::{is_closed_pipe, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report(&anyhow!("cannot start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // The reader has gone (`| head`): what it wanted it got.
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
