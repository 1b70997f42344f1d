//! The command line (DESIGN.md §3, "CLI verbs").

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Run portable system services, sandboxed"
)]
pub struct Cli {
    /// berthd's socket.
    #[arg(
        long,
        global = true,
        env = "BERTH_SOCKET",
        default_value = "/run/berth/io.berth.Manager"
    )]
    pub socket: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// List attached units and their state.
    List,
    /// Attach an image's units.
    Attach {
        image: String,
        prefixes: Vec<String>,
        #[arg(long, short)]
        profile: Option<String>,
        /// Start the units after attaching.
        #[arg(long)]
        now: bool,
        /// Take over units attached from another image.
        #[arg(long)]
        force: bool,
    },
    /// Detach an image.
    Detach {
        image: String,
        /// Stop its units first.
        #[arg(long)]
        now: bool,
    },
    /// Exit 0 when the image is attached, 1 when not.
    IsAttached { image: String },
    /// Start units.
    Start {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Stop units.
    Stop {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Restart units.
    Restart {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Show a unit's state and its latest output.
    Status { unit: String },
    /// Show a unit's captured output.
    Logs {
        unit: String,
        /// Keep printing new output.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, short = 'n')]
        lines: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images in the search path and attached ones.
    List,
    /// Show an image's metadata and units.
    Inspect {
        image: String,
        /// Print os-release and unit file contents.
        #[arg(long)]
        cat: bool,
    },
}
