//! How berth's daemons log: through `tracing`, to journald when the host runs one, else one
//! compact line per event on stderr. berthd and berth-helper both call [`init`] first thing.
//!
//! The level comes from `--log-level`, else `RUST_LOG`, else `info`. Either takes a level
//! (`debug`) or `RUST_LOG`-style directives (`info,berth_manager=debug`); anything else is an
//! error, not a silently different filter.

pub mod flood;
#[cfg(feature = "subscriber")]
mod setup;
mod untrusted;

#[cfg(feature = "subscriber")]
pub use setup::{
    DEFAULT_LEVEL, JOURNAL_SOCKET, LogError, Logging, Target, init, parse_level, resolve_target,
};
pub use untrusted::{MAX_FIELD_BYTES, Untrusted, untrusted};
