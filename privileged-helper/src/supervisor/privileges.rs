//! After launch the supervisor gives up root (DESIGN.md §6, ISSUE 8 item 7): no root process
//! lives as long as a service.
//!
//! It becomes the manager's uid and primary gid (the owner of the control directory), with no
//! supplementary groups, CAP_KILL alone in its permitted and effective sets (and bounding set;
//! nothing inheritable or ambient), no_new_privs, and not dumpable, so berthd, running as the
//! same uid, can neither ptrace it nor read its memory to borrow CAP_KILL. When the spec
//! grants privileged ports it keeps CAP_NET_BIND_SERVICE as well, for the port broker
//! (`port_broker.rs`) to bind them for the service; never otherwise. What it still needs
//! it opened as root before: the cgroup files (`cgroup.kill`, the directories `cgroup.procs`
//! is read through), the log, the control and notify sockets. After this it opens nothing but
//! world-readable `/proc` files and `cgroup.procs` by descriptor; the cgroups it can no longer
//! remove are removed by berth-helper (sandbox/cgroup). CAP_KILL is what kill(2) needs to reach
//! the service's processes, which run as other uids.
//!
//! Credentials are per thread: this must run while the supervisor has its one thread (before
//! any writer thread starts), which it checks.

use std::io;

use caps::{CapSet, Capability, CapsHashSet};
use rustix::io::Errno;

use crate::sandbox::Failure;
use crate::sandbox::capabilities::{self, CapabilityPlan};
use crate::sandbox::process_syscalls::ProcessSyscalls;

/// Who the supervisor becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Manager {
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Keep CAP_NET_BIND_SERVICE: the service was granted privileged ports.
    pub(super) bind_ports: bool,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum PrivilegeError {
    #[error("give up root: the supervisor has {threads} threads, and credentials are per thread")]
    MultiThreaded { threads: usize },
    #[error("give up root: {step}")]
    Step {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("give up root: /proc/self/status shows {found} afterwards")]
    NotDropped { found: String },
}

impl PrivilegeError {
    pub(super) fn errno(&self) -> Errno {
        match self {
            PrivilegeError::Step { source, .. } => {
                Errno::from_io_error(source).unwrap_or(Errno::PERM)
            }
            _ => Errno::PERM,
        }
    }
}

/// Gives up root for good, then checks in `/proc/self/status` that it is gone.
pub(super) fn give_up_root(manager: Manager) -> Result<(), PrivilegeError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|source| PrivilegeError::Step {
            step: "count the threads",
            source,
        })?
        .count();
    if threads != 1 {
        return Err(PrivilegeError::MultiThreaded { threads });
    }
    drop_to(&crate::sandbox::syscalls::LinuxSyscalls, manager)?;
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|source| PrivilegeError::Step {
            step: "read /proc/self/status",
            source,
        })?;
    verify(&status, manager)
}

/// CAP_KILL, and CAP_NET_BIND_SERVICE for a port broker.
fn kept(manager: Manager) -> CapsHashSet {
    let mut kept = CapsHashSet::from([Capability::CAP_KILL]);
    if manager.bind_ports {
        kept.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    kept
}

/// The steps, in the order the kernel needs them: the bounding set while CAP_SETPCAP is still
/// held, groups and gid while CAP_SETGID is, the uid keeping the permitted set, then the sets
/// cut to [`kept`].
fn drop_to(os: &impl ProcessSyscalls, manager: Manager) -> Result<(), PrivilegeError> {
    let step = |step: &'static str| {
        move |e: Errno| PrivilegeError::Step {
            step,
            source: e.into(),
        }
    };
    let plan = CapabilityPlan {
        bounding: kept(manager),
        ambient: CapsHashSet::new(),
    };
    capabilities::limit_bounding(os, &plan).map_err(|f| PrivilegeError::Step {
        step: "cut the bounding set to CAP_KILL (and CAP_NET_BIND_SERVICE)",
        source: match f {
            Failure::Setup { errno, .. } => io::Error::from_raw_os_error(errno),
            _ => io::Error::from_raw_os_error(libc::EPERM),
        },
    })?;
    os.set_groups(&[]).map_err(step("setgroups"))?;
    os.set_keep_capabilities(true)
        .map_err(step("keep capabilities across the uid change"))?;
    os.set_resgid(manager.gid).map_err(step("setresgid"))?;
    os.set_resuid(manager.uid).map_err(step("setresuid"))?;
    os.set_keep_capabilities(false)
        .map_err(step("stop keeping capabilities"))?;
    // Permitted first: the effective set must stay within it at every step.
    os.set_capabilities(CapSet::Permitted, &kept(manager))
        .map_err(step("cut the permitted set to CAP_KILL"))?;
    os.set_capabilities(CapSet::Inheritable, &CapsHashSet::new())
        .map_err(step("empty the inheritable set"))?;
    os.set_capabilities(CapSet::Effective, &kept(manager))
        .map_err(step("make CAP_KILL effective"))?;
    os.clear_ambient()
        .map_err(step("clear the ambient capabilities"))?;
    os.set_no_new_privs().map_err(step("set no_new_privs"))?;
    os.set_dumpable(false)
        .map_err(step("make it non-dumpable"))?;
    Ok(())
}

/// Checks the credentials `/proc/self/status` shows against the design's.
fn verify(status: &str, manager: Manager) -> Result<(), PrivilegeError> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
    };
    let ids = |name: &str, id: u32| {
        let values: Vec<&str> = field(name).split_whitespace().collect();
        values.len() == 4 && values.iter().all(|v| *v == id.to_string())
    };
    let bits = kept(manager)
        .iter()
        .fold(0u64, |bits, cap| bits | 1u64 << cap.index());
    let kill = format!("{bits:016x}");
    let expected = [
        ("CapPrm:", kill.as_str()),
        ("CapEff:", kill.as_str()),
        ("CapBnd:", kill.as_str()),
        ("CapInh:", "0000000000000000"),
        ("CapAmb:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
        ("Groups:", ""),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(name, want)| field(name) != *want)
        .map(|(name, _)| format!("{name} {}", field(name)))
        .chain((!ids("Uid:", manager.uid)).then(|| format!("Uid: {}", field("Uid:"))))
        .chain((!ids("Gid:", manager.gid)).then(|| format!("Gid: {}", field("Gid:"))))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::NotDropped {
            found: wrong.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::process_syscalls::{ProcessCall, RecordingProcess};

    const MANAGER: Manager = Manager {
        uid: 999,
        gid: 998,
        bind_ports: false,
    };

    fn position(calls: &[ProcessCall], call: &ProcessCall) -> usize {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("{call:?} not made: {calls:?}"))
    }

    #[test]
    fn the_supervisor_becomes_the_manager_with_cap_kill_alone() {
        let os = RecordingProcess::new();

        drop_to(&os, MANAGER).unwrap();

        let calls = os.calls();
        let bounding_cut = position(
            &calls,
            &ProcessCall::DropBounding(Capability::CAP_SYS_ADMIN),
        );
        let groups = position(&calls, &ProcessCall::SetGroups(vec![]));
        let gid = position(&calls, &ProcessCall::SetResgid(998));
        let uid = position(&calls, &ProcessCall::SetResuid(999));
        let permitted = position(
            &calls,
            &ProcessCall::SetCapabilities {
                set: "Permitted".into(),
                caps: vec![Capability::CAP_KILL],
            },
        );
        let effective = position(
            &calls,
            &ProcessCall::SetCapabilities {
                set: "Effective".into(),
                caps: vec![Capability::CAP_KILL],
            },
        );
        assert!(bounding_cut < uid && groups < uid && gid < uid, "{calls:?}");
        assert!(uid < permitted && permitted < effective, "{calls:?}");
        assert!(!calls.contains(&ProcessCall::DropBounding(Capability::CAP_KILL)));
        position(&calls, &ProcessCall::SetNoNewPrivs);
        position(&calls, &ProcessCall::SetDumpable(false));
    }

    #[test]
    fn a_supervisor_with_port_grants_keeps_cap_net_bind_service_too() {
        let os = RecordingProcess::new();
        let manager = Manager {
            bind_ports: true,
            ..MANAGER
        };

        drop_to(&os, manager).unwrap();

        let calls = os.calls();
        let mut both = vec![Capability::CAP_KILL, Capability::CAP_NET_BIND_SERVICE];
        both.sort_by_key(|c| c.index());
        for set in ["Permitted", "Effective"] {
            let call = ProcessCall::SetCapabilities {
                set: set.into(),
                caps: both.clone(),
            };
            position(&calls, &call);
        }
        assert!(!calls.contains(&ProcessCall::DropBounding(Capability::CAP_NET_BIND_SERVICE)));
    }

    #[test]
    fn a_supervisor_without_port_grants_drops_cap_net_bind_service() {
        let os = RecordingProcess::new();

        drop_to(&os, MANAGER).unwrap();

        position(
            &os.calls(),
            &ProcessCall::DropBounding(Capability::CAP_NET_BIND_SERVICE),
        );
    }

    #[test]
    fn the_check_expects_cap_net_bind_service_exactly_when_kept() {
        // CAP_KILL (5) and CAP_NET_BIND_SERVICE (10).
        let both = "0000000000000420";
        let with_ports = Manager {
            bind_ports: true,
            ..MANAGER
        };
        let status = status("999\t999\t999\t999", both, "1")
            .replace("CapPrm:\t0000000000000020", &format!("CapPrm:\t{both}"))
            .replace("CapBnd:\t0000000000000020", &format!("CapBnd:\t{both}"));

        let kept = verify(&status, with_ports);
        let unexpected = verify(&status, MANAGER);

        kept.unwrap();
        assert!(unexpected.unwrap_err().to_string().contains("CapEff:"));
    }

    fn status(uid: &str, cap_eff: &str, nnp: &str) -> String {
        format!(
            "Name:\tberth-supervise\nUid:\t{uid}\nGid:\t998\t998\t998\t998\nGroups:\t\n\
             CapInh:\t0000000000000000\nCapPrm:\t0000000000000020\nCapEff:\t{cap_eff}\n\
             CapBnd:\t0000000000000020\nCapAmb:\t0000000000000000\nNoNewPrivs:\t{nnp}\n"
        )
    }

    #[test]
    fn the_credentials_the_design_says_pass_the_check() {
        verify(
            &status("999\t999\t999\t999", "0000000000000020", "1"),
            MANAGER,
        )
        .unwrap();
    }

    #[test]
    fn root_left_anywhere_fails_the_check_naming_it() {
        let saved_root = verify(
            &status("999\t999\t0\t999", "0000000000000020", "1"),
            MANAGER,
        );
        let more_caps = verify(
            &status("999\t999\t999\t999", "000001ffffffffff", "1"),
            MANAGER,
        );
        let no_nnp = verify(
            &status("999\t999\t999\t999", "0000000000000020", "0"),
            MANAGER,
        );

        assert!(
            saved_root
                .unwrap_err()
                .to_string()
                .contains("Uid: 999\t999\t0"),
            "saved uid"
        );
        assert!(more_caps.unwrap_err().to_string().contains("CapEff:"));
        assert!(no_nnp.unwrap_err().to_string().contains("NoNewPrivs:"));
    }
}
