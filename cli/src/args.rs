//! The command line (DESIGN.md §3, "CLI verbs").

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Print tables without their header and footer lines.
    #[arg(long, global = true)]
    pub no_legend: bool,
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
        /// Enable the units: berthd starts them when it starts at boot.
        #[arg(long)]
        enable: bool,
        /// Take over units attached from another image; accept an extension whose release
        /// file is not named after it.
        #[arg(long)]
        force: bool,
        /// Lay an extension image over the image (repeatable; the last one lies on top).
        #[arg(long = "extension", value_name = "IMG")]
        extensions: Vec<String>,
        /// Grant a port below 1024: its services may bind it on the host's network, without
        /// host root (repeatable; kept by reattach; only for services running as the image's
        /// own users).
        #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..1024))]
        ports: Vec<u16>,
    },
    /// Detach an image.
    Detach {
        image: String,
        /// Stop its units first.
        #[arg(long)]
        now: bool,
        /// Remove its persistent /var too (kept for the next attach otherwise).
        #[arg(long)]
        clean: bool,
        /// The extensions it was attached with, in the same order.
        #[arg(long = "extension", value_name = "IMG")]
        extensions: Vec<String>,
    },
    /// Move an attached image's units to its newest version, or to the one given.
    Reattach {
        image: String,
        /// Restart the updated units that are running and start the added ones.
        #[arg(long)]
        now: bool,
    },
    /// Exit 0 when the image is attached, 1 when not.
    IsAttached {
        image: String,
        /// The extensions it was attached with, in the same order.
        #[arg(long = "extension", value_name = "IMG")]
        extensions: Vec<String>,
    },
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
    /// Enable units: berthd starts them when it starts at boot, in dependency order.
    Enable {
        #[arg(required = true)]
        units: Vec<String>,
        /// Start them now too.
        #[arg(long)]
        now: bool,
    },
    /// Disable units: berthd no longer starts them at boot.
    Disable {
        #[arg(required = true)]
        units: Vec<String>,
        /// Stop them now too.
        #[arg(long)]
        now: bool,
    },
    /// Reload running units (ExecReload=, or a Type=notify service's own reload).
    Reload {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Send a signal to a running unit's processes.
    Kill {
        unit: String,
        /// The signal: `SIGTERM`, `TERM` or `15`.
        #[arg(long, short, default_value = "SIGTERM")]
        signal: String,
        /// Whom to signal: `main` (the main process) or `all` (every process of the unit).
        #[arg(long, default_value = "all", value_parser = ["main", "all"])]
        kill_whom: String,
    },
    /// Forget that units failed (every unit when none is named): `failed` becomes `stopped`,
    /// and the start rate limit and the restart count start again.
    ResetFailed { units: Vec<String> },
    /// Show a unit's state and its latest output; exit 0 when it is active (running), 3 when
    /// not, 4 when there is no such unit.
    Status { unit: String },
    /// Print whether units are active; exit 0 when at least one is, 3 otherwise.
    IsActive {
        #[arg(required = true)]
        units: Vec<String>,
        /// Print nothing, only set the exit status.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print whether units have failed; exit 0 when at least one has, 1 otherwise.
    IsFailed {
        #[arg(required = true)]
        units: Vec<String>,
        /// Print nothing, only set the exit status.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show an attached unit's file and its drop-ins, each after a `# PATH` line.
    Cat { unit: String },
    /// Edit a drop-in of an attached unit in $EDITOR (then $VISUAL, editor, nano, vim, vi);
    /// berthd checks it before it is written. A drop-in left with only comments is removed.
    Edit {
        unit: String,
        /// The drop-in's file name.
        #[arg(long, default_value = "override.conf")]
        drop_in: String,
    },
    /// Set properties of an attached unit: each KEY=VALUE goes into its drop-in
    /// `50-KEY.conf`, applied from the next start.
    SetProperty {
        unit: String,
        #[arg(required = true)]
        properties: Vec<String>,
    },
    /// Manage the profiles a sandbox starts from.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Show how exposed a unit's sandbox is: systemd-analyze security's checks and weights,
    /// each check's share and the overall exposure (0.0 best, 10.0 worst).
    Security {
        unit: String,
        /// Exit 1 when the exposure is above N, in tenths as systemd-analyze takes it (0-100:
        /// 10 is 1.0).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=100))]
        threshold: Option<i64>,
    },
    /// Stream every state change of every unit, from the current states on (`--json`: one
    /// object per change).
    Monitor,
    /// Show a unit's captured output.
    Logs {
        unit: String,
        /// Keep printing new output.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines (of those --since and --until keep).
        #[arg(long, short = 'n')]
        lines: Option<i64>,
        /// Only lines at or after this local time, as journalctl takes it: '2026-12-01
        /// 14:00:00', '14:00', 'today', 'yesterday', '-5min', '@EPOCH'.
        #[arg(long, short = 'S', value_name = "TIME")]
        since: Option<String>,
        /// Only lines at or before this time (same forms as --since).
        #[arg(long, short = 'U', value_name = "TIME")]
        until: Option<String>,
        /// Newest first.
        #[arg(long, short, conflicts_with = "follow")]
        reverse: bool,
        /// How to print each line (`--json` means `json`).
        #[arg(long, short, value_enum, default_value_t = LogFormat::Short)]
        output: LogFormat,
    },
}

/// The formats of `berth logs -o`, named as journalctl names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Local time, host and unit, then the line, control characters escaped (as journalctl).
    Short,
    /// The line only, control characters escaped.
    Cat,
    /// One JSON object per line, with journald's field names and the exact data.
    Json,
}

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// List the profiles, built-in and the admin's (/etc/berth/profiles), at every version.
    List,
    /// Show a profile: NAME (its newest version) or NAME@VERSION.
    Show { profile: String },
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images in the search path and attached ones.
    List,
    /// Copy an image (a directory or an image file) into berthd's pool, STATE/images/.
    Import {
        path: PathBuf,
        /// Store it under this image name (the version in its file name is kept).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show an image's metadata and units.
    Inspect {
        image: String,
        /// Only the units matching these prefixes (by default, the image's name).
        prefixes: Vec<String>,
        /// Print os-release and unit file contents.
        #[arg(long)]
        cat: bool,
    },
    /// Remove images from the pool (refused while attached).
    Remove {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Mark an image in the pool read-only (BOOL defaults to yes) or writable (no).
    ReadOnly {
        image: String,
        #[arg(value_parser = clap::builder::BoolishValueParser::new())]
        read_only: Option<bool>,
    },
    /// Build an image file from a directory (with mksquashfs or mkfs.erofs, as you).
    Pack {
        dir: PathBuf,
        /// The image file to write (it must not exist yet).
        #[arg(long, short)]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = PackFormat::Squashfs)]
        format: PackFormat,
    },
}

/// The filesystems `berth image pack` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PackFormat {
    Squashfs,
    Erofs,
}
