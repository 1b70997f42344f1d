//! berth's wire protocols: the varlink interfaces `io.berth.Manager` (public) and
//! `io.berth.Helper` (private), the supervisor control channel, the log record format and the
//! configuration file format. The server and client plumbing is in `berth-varlink`.

pub mod address_families;
pub mod config_file;
pub mod helper;
pub mod idl;
pub mod ip_prefix;
pub mod log_line;
pub mod manager;
pub mod names;
pub mod sandbox;
pub mod service_program;
pub mod signal_names;
pub mod supervisor;
pub mod syscall_groups;
