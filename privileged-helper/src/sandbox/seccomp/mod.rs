//! The service's seccomp filter: SystemCallFilter= and the directives systemd builds into the
//! same filter (DESIGN.md §5).
//!
//! berthd sends syscall names (its `@groups` already resolved with
//! `berth_protocol::syscall_groups`); [`table`] maps names to x86-64 numbers, [`compile`] builds
//! the BPF programs with seccompiler, [`cache`] keeps each distinct filter compiled once per
//! helper process, and main installs it with [`install`] right before its execve, the last
//! step of the start.

pub(crate) mod bind_notify;
mod bpf;
pub mod cache;
pub mod compile;
pub(crate) mod table;

use std::io;

pub use cache::FilterCache;
pub use compile::{CompileError, CompiledFilter};

/// Installs every program of `filter`, in order, on the calling thread. Needs no_new_privs
/// (or CAP_SYS_ADMIN); main has it already.
pub fn install(filter: &CompiledFilter) -> io::Result<()> {
    for program in filter.programs() {
        seccompiler::apply_filter(program).map_err(|e| match e {
            seccompiler::Error::Seccomp(e) | seccompiler::Error::Prctl(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
    }
    Ok(())
}
