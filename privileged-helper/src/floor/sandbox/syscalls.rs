//! The syscall filter.

use berth_protocol::sandbox::SyscallFilter;

use super::super::Refusal;
use super::not_supported;
use crate::config::FloorPolicy;

pub(super) fn check(_policy: &FloorPolicy, filter: &mut SyscallFilter) -> Result<(), Refusal> {
    let asked = filter.allow.is_some()
        || !filter.deny.is_empty()
        || filter.error_number.is_some()
        || !filter.architectures.is_empty()
        || filter.address_families.is_some()
        || filter.namespaces_allowed.is_some()
        || filter.restrict_realtime
        || filter.restrict_suid_sgid
        || filter.lock_personality
        || filter.memory_deny_write_execute;
    if asked {
        return Err(not_supported("sandbox.syscalls", "a syscall filter"));
    }
    Ok(())
}
