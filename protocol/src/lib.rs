//! berth's wire protocols: the varlink interfaces `io.berth.Manager` (public) and
//! `io.berth.Helper` (private), the supervisor control channel and the log record format.

pub mod client;
pub mod config_file;
pub mod helper;
pub mod idl;
pub mod listener;
pub mod log_line;
pub mod manager;
pub mod supervisor;
pub mod varlink;
pub mod write_queue;
