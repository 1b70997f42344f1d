//! The `berth` command line: its grammar ([`args`]) and presentation ([`output`], [`escape`],
//! [`remote_error`]), shared by the `berth` binary and `berth-docs`, which writes its man page
//! and shell completions.

pub mod args;
pub mod docs;
pub mod escape;
pub mod output;
pub mod pack;
pub mod progress;
pub mod remote_error;
