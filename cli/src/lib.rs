//! The `berth` command line: its grammar ([`args`]), what each verb does ([`commands`]) and
//! presentation ([`output`], [`escape`], [`remote_error`], [`report`]), shared by the `berth`
//! binary and `berth-docs`, which writes its man page and shell completions.

/// `println!` that hands back the write error instead of panicking: on a closed pipe
/// (`berth logs x | head`) berth stops and exits quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
    };
}

pub mod args;
pub mod commands;
pub mod docs;
pub mod escape;
mod local_image;
pub mod local_time;
pub mod output;
pub mod pack;
pub mod progress;
pub mod remote_error;
pub mod report;
mod session;
