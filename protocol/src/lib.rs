//! berth's wire protocols: the varlink interfaces `io.berth.Manager` (public) and
//! `io.berth.Helper` (private), the supervisor control channel and the log record format.

pub mod log_line;
pub mod supervisor;
pub mod idl;
pub mod varlink;
pub mod client;
pub mod helper;
pub mod manager;
