//! The syscall filter: bounded lists of names the helper knows, native syscalls only, and a
//! filter the kernel will take, compiled here (through the helper's cache) so that one that
//! cannot be built is refused before anything is forked.

use berth_protocol::sandbox::{MAX_ENTRIES, MAX_SYSCALLS, SyscallFilter};

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;
use crate::sandbox::seccomp::{CompileError, cache};

/// Longest name (syscall, architecture, family, namespace kind) worth looking up; the longest
/// real one has 24 bytes.
const MAX_NAME_BYTES: usize = 64;

pub(super) fn check(_policy: &FloorPolicy, filter: &mut SyscallFilter) -> Result<(), Refusal> {
    let lists: [(&str, &[String], usize); 5] = [
        (
            "sandbox.syscalls.allow",
            filter.allow.as_deref().unwrap_or_default(),
            MAX_SYSCALLS,
        ),
        ("sandbox.syscalls.deny", &filter.deny, MAX_SYSCALLS),
        (
            "sandbox.syscalls.architectures",
            &filter.architectures,
            MAX_ENTRIES,
        ),
        (
            "sandbox.syscalls.address_families",
            filter
                .address_families
                .as_ref()
                .map(|f| f.families.as_slice())
                .unwrap_or_default(),
            MAX_ENTRIES,
        ),
        (
            "sandbox.syscalls.namespaces_allowed",
            filter.namespaces_allowed.as_deref().unwrap_or_default(),
            MAX_ENTRIES,
        ),
    ];
    for (field, list, max) in lists {
        bounded(field, list, max)?;
        if list.iter().any(|name| name.len() > MAX_NAME_BYTES) {
            return Err(refuse(
                field,
                format!("names are at most {MAX_NAME_BYTES} bytes"),
            ));
        }
    }
    *filter = cache::normalized(filter);
    cache::compiled(filter).map_err(|e| refuse(field_of(&e), e.to_string()))?;
    Ok(())
}

fn field_of(error: &CompileError) -> &'static str {
    match error {
        CompileError::UnknownSyscall { .. } => "sandbox.syscalls",
        CompileError::ForeignArchitecture { .. } => "sandbox.syscalls.architectures",
        CompileError::ErrorNumber { .. } => "sandbox.syscalls.error_number",
        CompileError::UnknownAddressFamily { .. } => "sandbox.syscalls.address_families",
        CompileError::UnknownNamespace { .. } => "sandbox.syscalls.namespaces_allowed",
        CompileError::Build { .. } | CompileError::TooLarge { .. } => "sandbox.syscalls",
    }
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::{AddressFamilies, SandboxSpec};

    use super::*;

    fn filter() -> SyscallFilter {
        SandboxSpec::baseline(61200, 61200, "test").syscalls
    }

    fn checked(mut filter: SyscallFilter) -> Result<SyscallFilter, Refusal> {
        check(&FloorPolicy::default(), &mut filter).map(|()| filter)
    }

    #[test]
    fn a_usual_filter_passes_normalized() {
        let mut asked = filter();
        asked.deny = vec!["keyctl".into(), "add_key".into(), "keyctl".into()];
        asked.architectures = vec!["native".into()];

        let passed = checked(asked).unwrap();

        assert_eq!(passed.deny, ["add_key", "keyctl"]);
    }

    #[test]
    fn an_oversized_allow_list_is_refused() {
        let mut asked = filter();
        asked.allow = Some(vec!["getpid".to_string(); MAX_SYSCALLS + 1]);

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls.allow");
        assert!(refusal.reason.contains("more than 1024"), "{refusal}");
    }

    #[test]
    fn an_oversized_family_list_is_refused() {
        let mut asked = filter();
        asked.address_families = Some(AddressFamilies {
            allow_list: false,
            families: vec!["AF_PACKET".to_string(); MAX_ENTRIES + 1],
        });

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls.address_families");
    }

    #[test]
    fn a_huge_name_is_refused_without_being_echoed() {
        let mut asked = filter();
        asked.deny = vec!["x".repeat(4000)];

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls.deny");
        assert!(refusal.reason.len() < 100, "{refusal}");
    }

    #[test]
    fn an_unknown_syscall_is_refused_by_name() {
        let mut asked = filter();
        asked.deny = vec!["keyctl".into(), "frobnicate".into()];

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls");
        assert!(refusal.reason.contains("frobnicate"), "{refusal}");
    }

    #[test]
    fn a_foreign_architecture_is_refused() {
        let mut asked = filter();
        asked.architectures = vec!["x32".into()];

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls.architectures");
    }

    #[test]
    fn an_unknown_address_family_is_refused() {
        let mut asked = filter();
        asked.address_families = Some(AddressFamilies {
            allow_list: true,
            families: vec!["AF_UNIX".into(), "AF_WHATEVER".into()],
        });

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls.address_families");
    }

    #[test]
    fn an_unknown_namespace_kind_is_refused() {
        let mut asked = filter();
        asked.namespaces_allowed = Some(vec!["everything".into()]);

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls.namespaces_allowed");
    }

    #[test]
    fn an_error_number_out_of_range_is_refused() {
        let mut asked = filter();
        asked.deny = vec!["keyctl".into()];
        asked.error_number = Some(70000);

        let refusal = checked(asked).unwrap_err();

        assert_eq!(refusal.field, "sandbox.syscalls.error_number");
    }
}
