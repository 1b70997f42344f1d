//! Landlock scoping (kernel ABI 6, Linux 6.12): a service may not connect to abstract unix
//! sockets created outside its own Landlock domain (the host's, other services'), nor signal
//! processes outside it. Its own sockets and processes stay reachable. Applied in init while
//! it still holds CAP_SYS_ADMIN (so it does not depend on NoNewPrivileges=), and inherited
//! by every process of the service.
//!
//! Where the kernel lacks a scope the start goes on without it (best effort, as systemd does
//! with missing kernel features); the helper logs what does not hold ([`unenforced`]).

use berth_protocol::sandbox::Landlock;

use super::Failure;
use super::process_syscalls::{ProcessSyscalls, ScopeOutcome, Scopes};

/// The first Landlock ABI with scopes.
pub(crate) const SCOPE_ABI: i32 = 6;

/// Enters a Landlock domain with the scopes `landlock` asks; `None` when it asks none.
pub(super) fn restrict(
    os: &impl ProcessSyscalls,
    landlock: &Landlock,
) -> Result<Option<ScopeOutcome>, Failure> {
    if !landlock.scope_abstract_unix_sockets && !landlock.scope_signals {
        return Ok(None);
    }
    os.landlock_scope(Scopes {
        abstract_unix_sockets: landlock.scope_abstract_unix_sockets,
        signals: landlock.scope_signals,
    })
    .map(Some)
    .map_err(|e| Failure::setup("enter the Landlock domain", e))
}

/// The Landlock ABI version of the running kernel; 0 without Landlock.
pub(crate) fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the call only
    // returns the ABI version (or fails with ENOSYS/EOPNOTSUPP).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(ret).unwrap_or(0).max(0)
}

/// What `landlock` asks that a kernel of Landlock ABI `abi` cannot hold, and what still holds
/// instead; `None` when everything asked holds.
pub(crate) fn unenforced(landlock: &Landlock, private_network: bool, abi: i32) -> Option<String> {
    if abi >= SCOPE_ABI {
        return None;
    }
    let mut missing = Vec::new();
    if landlock.scope_abstract_unix_sockets {
        missing.push(if private_network {
            "abstract unix sockets are not scoped (its private network still hides those of \
             the host and of other services)"
        } else {
            "abstract unix sockets are not scoped: the service can connect to those of the \
             host and of other services on the host network"
        });
    }
    if landlock.scope_signals {
        missing.push(
            "signals are not scoped (its pid namespace still keeps every process outside out \
             of reach)",
        );
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "this kernel's Landlock ABI is {abi}, scoping needs {SCOPE_ABI} (Linux 6.12): {}",
        missing.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::*;

    fn landlock(sockets: bool, signals: bool) -> Landlock {
        Landlock {
            scope_abstract_unix_sockets: sockets,
            scope_signals: signals,
        }
    }

    #[test]
    fn both_scopes_are_requested_together() {
        let os = RecordingProcess::new();

        let outcome = restrict(&os, &landlock(true, true)).unwrap();

        assert_eq!(outcome, Some(ScopeOutcome::Enforced));
        assert_eq!(
            os.calls(),
            [ProcessCall::LandlockScope(Scopes {
                abstract_unix_sockets: true,
                signals: true
            })]
        );
    }

    #[test]
    fn no_scope_asked_enters_no_domain() {
        let os = RecordingProcess::new();

        let outcome = restrict(&os, &landlock(false, false)).unwrap();

        assert_eq!(outcome, None);
        assert_eq!(os.calls(), []);
    }

    #[test]
    fn a_kernel_without_scopes_does_not_fail_the_start() {
        let os = RecordingProcess::new().landlock(ScopeOutcome::NotEnforced);

        let outcome = restrict(&os, &landlock(true, false)).unwrap();

        assert_eq!(outcome, Some(ScopeOutcome::NotEnforced));
    }

    #[test]
    fn an_old_kernel_on_the_host_network_is_reported_reachable() {
        let text = unenforced(&landlock(true, false), false, 5).unwrap();

        assert!(text.contains("Landlock ABI is 5"), "{text}");
        assert!(
            text.contains("can connect to those of the host and of other services"),
            "{text}"
        );
    }

    #[test]
    fn an_old_kernel_with_a_private_network_reports_what_still_holds() {
        let text = unenforced(&landlock(true, true), true, 0).unwrap();

        assert!(text.contains("private network still hides"), "{text}");
        assert!(text.contains("signals are not scoped"), "{text}");
    }

    #[test]
    fn a_kernel_with_scopes_reports_nothing() {
        assert_eq!(unenforced(&landlock(true, true), false, 6), None);
        assert_eq!(unenforced(&landlock(false, false), false, 1), None);
    }

    #[test]
    fn this_kernel_has_scopes() {
        // The test machine runs 6.18; a failure here means the tests of the scoping itself
        // cannot show anything.
        assert!(kernel_abi() >= SCOPE_ABI, "Landlock ABI {}", kernel_abi());
    }
}
