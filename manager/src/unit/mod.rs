//! The unit model: from a unit file's text to what berthd runs (DESIGN.md §2, §5).
//!
//! `syntax` reads the file (sections, assignments, quoting) and interprets nothing; `values`
//! and `specifiers` parse the value syntax directives share; `exec_command` the command
//! lines; `directives` gives each directive its meaning, one file per section; `model` is
//! the result.

pub mod directives;
pub mod exec_command;
pub mod kernel_names;
pub mod model;
pub mod specifiers;
pub mod syntax;
pub mod values;

pub use directives::{
    Origin, from_unit, from_unit_files, from_unit_files_over, profile_sandbox, sandbox_from,
};
pub use model::{
    Credential, DEFAULT_RESTART_SEC, DEFAULT_START_LIMIT_BURST, DEFAULT_START_LIMIT_INTERVAL,
    DEFAULT_TIMEOUT_START, DEFAULT_TIMEOUT_STOP, Dependencies, KillMode, KillPolicy,
    MAX_WARNINGS_PER_UNIT, NotifyAccess, RestartPolicy, ServiceConfig, ServiceConfigError,
    ServiceType, TIMEOUT_INFINITY, UnitIdentity, cap_warnings,
};
pub use syntax::{UnitFile, parse};
