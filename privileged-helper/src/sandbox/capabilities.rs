//! CapabilityBoundingSet= and AmbientCapabilities=, through the `caps` crate. The bounding set
//! is cut to the spec's before the uid change (that needs CAP_SETPCAP); after it, the
//! permitted, inheritable and effective sets hold exactly the ambient capabilities, which are
//! then raised, so that a non-root service keeps them across its exec. Without ambient
//! capabilities a service has none at all.

use berth_protocol::sandbox::Capabilities;
use caps::{CapSet, Capability, CapsHashSet};

use super::Failure;
use super::process_syscalls::ProcessSyscalls;

/// Above any capability number a kernel has had (40 today). The kernel answers EINVAL past its
/// own last one, which ends the drop loop; no need to read `cap_last_cap` on every start.
const CAP_NUMBERS: u32 = 64;

/// The capability named `name` in the kernel's spelling (`CAP_NET_BIND_SERVICE`).
pub(crate) fn capability_named(name: &str) -> Option<Capability> {
    name.parse().ok()
}

/// The capability sets a service ends up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapabilityPlan {
    pub bounding: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapabilityPlan {
    /// The plan for `caps`. The floor has refused unknown names and ambient capabilities
    /// outside the bounding set already; they are checked again because the kernel would
    /// refuse such an ambient set only after the uid change.
    pub(super) fn of(caps: &Capabilities) -> Result<CapabilityPlan, Failure> {
        let parse = |names: &[String], what: &str| {
            names
                .iter()
                .map(|name| {
                    capability_named(name).ok_or_else(|| {
                        Failure::setup(
                            format!("unknown {what} capability {name}"),
                            rustix::io::Errno::INVAL,
                        )
                    })
                })
                .collect::<Result<CapsHashSet, Failure>>()
        };
        let bounding = parse(&caps.bounding, "bounding")?;
        let ambient = parse(&caps.ambient, "ambient")?;
        if let Some(outside) = sorted(&ambient).into_iter().find(|c| !bounding.contains(c)) {
            return Err(Failure::setup(
                format!("ambient capability {outside} is not in the bounding set"),
                rustix::io::Errno::INVAL,
            ));
        }
        Ok(CapabilityPlan { bounding, ambient })
    }

    /// Whether the permitted set must survive the uid change (PR_SET_KEEPCAPS).
    pub(super) fn keeps_capabilities(&self) -> bool {
        !self.ambient.is_empty()
    }
}

fn sorted(caps: &CapsHashSet) -> Vec<Capability> {
    let mut caps: Vec<Capability> = caps.iter().copied().collect();
    caps.sort_by_key(|c| c.index());
    caps
}

/// Drops every capability outside `plan.bounding` from the bounding set, including those a
/// newer kernel has and the `caps` crate cannot name. Needs CAP_SETPCAP: before the uid change.
pub(crate) fn limit_bounding(
    os: &impl ProcessSyscalls,
    plan: &CapabilityPlan,
) -> Result<(), Failure> {
    let known = sorted(&caps::all());
    for cap in &known {
        if !plan.bounding.contains(cap) {
            os.drop_bounding(*cap)
                .map_err(|e| Failure::setup(format!("drop {cap} from the bounding set"), e))?;
        }
    }
    let first_unnamed = known.last().map_or(0, |c| u32::from(c.index()) + 1);
    for number in first_unnamed..CAP_NUMBERS {
        match os.drop_bounding_number(number) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => {
                return Err(Failure::setup(
                    format!("drop capability {number} from the bounding set"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// After the uid change: effective, permitted and inheritable become the ambient set, and each
/// ambient capability is raised (the kernel wants it permitted and inheritable first). Root of
/// the block's user namespace (`namespace_root`) has the whole bounding set permitted and
/// effective instead, as root has it after an exec.
pub(super) fn grant(
    os: &impl ProcessSyscalls,
    plan: &CapabilityPlan,
    namespace_root: bool,
) -> Result<(), Failure> {
    let held = if namespace_root {
        &plan.bounding
    } else {
        &plan.ambient
    };
    // Effective first: it must stay within permitted at every step, and permitted only
    // shrinks here (after joining the block's namespace init still holds the full set,
    // since its uid change was not one from that namespace's root).
    for (set, name, caps) in [
        (CapSet::Effective, "effective", held),
        (CapSet::Permitted, "permitted", held),
        (CapSet::Inheritable, "inheritable", &plan.ambient),
    ] {
        os.set_capabilities(set, caps)
            .map_err(|e| Failure::setup(format!("set the {name} capabilities"), e))?;
    }
    os.clear_ambient()
        .map_err(|e| Failure::setup("clear the ambient capabilities", e))?;
    for cap in sorted(&plan.ambient) {
        os.raise_ambient(cap)
            .map_err(|e| Failure::setup(format!("raise ambient capability {cap}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::*;

    fn plan(bounding: &[&str], ambient: &[&str]) -> CapabilityPlan {
        CapabilityPlan::of(&Capabilities {
            bounding: bounding.iter().map(|s| s.to_string()).collect(),
            ambient: ambient.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn dropped(calls: &[ProcessCall]) -> Vec<Capability> {
        calls
            .iter()
            .filter_map(|c| match c {
                ProcessCall::DropBounding(cap) => Some(*cap),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_empty_bounding_set_drops_every_named_capability() {
        let os = RecordingProcess::new();

        limit_bounding(&os, &plan(&[], &[])).unwrap();

        assert_eq!(dropped(&os.calls()), sorted(&caps::all()));
    }

    #[test]
    fn capabilities_of_the_bounding_set_are_kept() {
        let os = RecordingProcess::new();

        limit_bounding(&os, &plan(&["CAP_NET_BIND_SERVICE", "CAP_KILL"], &[])).unwrap();

        let dropped = dropped(&os.calls());
        assert_eq!(dropped.len(), caps::all().len() - 2);
        assert!(!dropped.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!dropped.contains(&Capability::CAP_KILL));
        assert!(dropped.contains(&Capability::CAP_SYS_ADMIN));
    }

    #[test]
    fn capabilities_of_a_newer_kernel_are_dropped_by_number_until_einval() {
        let os = RecordingProcess::new().kernel_last_cap(42);

        limit_bounding(&os, &plan(&[], &[])).unwrap();

        let numbers: Vec<ProcessCall> = os
            .calls()
            .into_iter()
            .filter(|c| matches!(c, ProcessCall::DropBoundingNumber(_)))
            .collect();
        assert_eq!(
            numbers,
            [41, 42, 43].map(ProcessCall::DropBoundingNumber).to_vec()
        );
    }

    #[test]
    fn a_failed_drop_names_the_capability() {
        let os = RecordingProcess::new().failing(
            |c| *c == ProcessCall::DropBounding(Capability::CAP_SYS_ADMIN),
            rustix::io::Errno::PERM,
        );

        let failure = limit_bounding(&os, &plan(&[], &[])).unwrap_err();

        assert_eq!(
            failure,
            Failure::Setup {
                stage: "drop CAP_SYS_ADMIN from the bounding set".into(),
                errno: libc::EPERM
            }
        );
    }

    #[test]
    fn without_ambient_capabilities_every_set_is_emptied() {
        let os = RecordingProcess::new();

        grant(&os, &plan(&["CAP_NET_BIND_SERVICE"], &[]), false).unwrap();

        assert_eq!(
            os.calls(),
            [
                ProcessCall::SetCapabilities {
                    set: "Effective".into(),
                    caps: vec![]
                },
                ProcessCall::SetCapabilities {
                    set: "Permitted".into(),
                    caps: vec![]
                },
                ProcessCall::SetCapabilities {
                    set: "Inheritable".into(),
                    caps: vec![]
                },
                ProcessCall::ClearAmbient,
            ]
        );
    }

    #[test]
    fn ambient_capabilities_are_effective_permitted_inheritable_and_raised() {
        let os = RecordingProcess::new();
        let caps = vec![Capability::CAP_NET_BIND_SERVICE];

        grant(
            &os,
            &plan(
                &["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                &["CAP_NET_BIND_SERVICE"],
            ),
            false,
        )
        .unwrap();

        assert_eq!(
            os.calls(),
            [
                ProcessCall::SetCapabilities {
                    set: "Effective".into(),
                    caps: caps.clone()
                },
                ProcessCall::SetCapabilities {
                    set: "Permitted".into(),
                    caps: caps.clone()
                },
                ProcessCall::SetCapabilities {
                    set: "Inheritable".into(),
                    caps
                },
                ProcessCall::ClearAmbient,
                ProcessCall::RaiseAmbient(Capability::CAP_NET_BIND_SERVICE),
            ]
        );
    }

    #[test]
    fn root_of_the_block_namespace_holds_its_bounding_set_permitted_and_effective() {
        let os = RecordingProcess::new();
        let bounding = vec![Capability::CAP_CHOWN, Capability::CAP_SETUID];

        grant(&os, &plan(&["CAP_CHOWN", "CAP_SETUID"], &[]), true).unwrap();

        assert_eq!(
            os.calls(),
            [
                ProcessCall::SetCapabilities {
                    set: "Effective".into(),
                    caps: bounding.clone()
                },
                ProcessCall::SetCapabilities {
                    set: "Permitted".into(),
                    caps: bounding
                },
                ProcessCall::SetCapabilities {
                    set: "Inheritable".into(),
                    caps: vec![]
                },
                ProcessCall::ClearAmbient,
            ]
        );
    }

    #[test]
    fn an_ambient_capability_outside_the_bounding_set_is_refused() {
        let failure = CapabilityPlan::of(&Capabilities {
            bounding: vec![],
            ambient: vec!["CAP_NET_RAW".into()],
        })
        .unwrap_err();

        assert_eq!(
            failure,
            Failure::Setup {
                stage: "ambient capability CAP_NET_RAW is not in the bounding set".into(),
                errno: libc::EINVAL
            }
        );
    }

    #[test]
    fn names_are_the_kernel_spelling_only() {
        assert_eq!(
            capability_named("CAP_NET_BIND_SERVICE"),
            Some(Capability::CAP_NET_BIND_SERVICE)
        );
        assert_eq!(capability_named("net_bind_service"), None);
        assert_eq!(capability_named("CAP_NOPE"), None);
    }

    #[test]
    fn only_ambient_capabilities_need_keepcaps() {
        assert!(!plan(&["CAP_KILL"], &[]).keeps_capabilities());
        assert!(plan(&["CAP_KILL"], &["CAP_KILL"]).keeps_capabilities());
    }
}
