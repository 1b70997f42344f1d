//! Dropping from root to the service's uid, gid and supplementary groups, keeping only the
//! capabilities the spec grants (see `capabilities.rs`), in a fresh session keyring. In block
//! mode the ids are those inside the block's user namespace (`block_namespace.rs`), and root
//! of that namespace (no User=) keeps its bounding set permitted and effective.

use berth_protocol::sandbox::{Identity, KeyringMode};

use super::Failure;
use super::block_namespace::InsideIds;
use super::capabilities::{self, CapabilityPlan};
use super::keyring;
use super::process_syscalls::ProcessSyscalls;

/// What init becomes, for good.
pub(super) struct Credentials<'a> {
    pub identity: &'a Identity,
    pub capabilities: CapabilityPlan,
    pub no_new_privileges: bool,
    pub keyring: KeyringMode,
}

/// Becomes `target`: bounding set cut, then the ids, then the capability sets, a new session
/// keyring, no_new_privs (NoNewPrivileges=), not dumpable, and SIGKILL when the supervisor dies.
pub(super) fn drop_to(os: &impl ProcessSyscalls, target: &Credentials<'_>) -> Result<(), Failure> {
    let ids = InsideIds::of(target.identity)?;
    // Needs CAP_SETPCAP, so before the uid change.
    capabilities::limit_bounding(os, &target.capabilities)?;
    os.set_groups(&ids.groups)
        .map_err(|e| Failure::setup("setgroups", e))?;
    let keep = target.capabilities.keeps_capabilities();
    if keep {
        os.set_keep_capabilities(true)
            .map_err(|e| Failure::setup("keep capabilities across the uid change", e))?;
    }
    os.set_resgid(ids.gid)
        .map_err(|e| Failure::setup("setresgid", e))?;
    os.set_resuid(ids.uid)
        .map_err(|e| Failure::setup("setresuid", e))?;
    if keep {
        os.set_keep_capabilities(false)
            .map_err(|e| Failure::setup("stop keeping capabilities", e))?;
    }
    // setresuid emptied permitted and effective unless kept; make the sets exactly the
    // ambient ones either way, inheritable included (root of the block's namespace: the
    // bounding set permitted and effective, so that its exec as uid 0 keeps them under
    // no_new_privs, which grants nothing beyond the permitted set).
    capabilities::grant(os, &target.capabilities, ids.namespace_root)?;
    // Owned by the service's uid now that it is that uid.
    keyring::join(os, target.keyring)?;
    if target.no_new_privileges {
        os.set_no_new_privs()
            .map_err(|e| Failure::setup("set no_new_privs", e))?;
    }
    // The uid change made us non-dumpable only because fs.suid_dumpable is 0 by default; make
    // sure, so the service (same uid) can never ptrace init or read its /proc/1/{environ,
    // maps,mem,exe}. Main's exec makes main dumpable again.
    os.set_dumpable(false)
        .map_err(|e| Failure::setup("make init non-dumpable", e))?;
    // A credential change resets the parent-death signal, so set it last. A service whose
    // supervisor died could never be stopped or reported on: take it down with it.
    os.set_parent_death_signal(libc::SIGKILL)
        .map_err(|e| Failure::setup("set the parent-death signal", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::Capabilities;
    use caps::Capability;

    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::*;

    fn identity() -> Identity {
        Identity {
            uid: 61500,
            gid: 61501,
            supplementary_groups: vec![61502],
            private_users: false,
            user_name: "web".into(),
            user_block: None,
        }
    }

    fn credentials<'a>(identity: &'a Identity, ambient: &[&str], nnp: bool) -> Credentials<'a> {
        let names: Vec<String> = ambient.iter().map(|s| s.to_string()).collect();
        Credentials {
            identity,
            capabilities: CapabilityPlan::of(&Capabilities {
                bounding: names.clone(),
                ambient: names,
            })
            .unwrap(),
            no_new_privileges: nnp,
            keyring: KeyringMode::Private,
        }
    }

    /// The calls other than the bounding-set drops and the capability sets, which
    /// capabilities.rs tests.
    fn steps(calls: &[ProcessCall]) -> Vec<ProcessCall> {
        calls
            .iter()
            .filter(|c| {
                !matches!(
                    c,
                    ProcessCall::DropBounding(_)
                        | ProcessCall::DropBoundingNumber(_)
                        | ProcessCall::SetCapabilities { .. }
                )
            })
            .cloned()
            .collect()
    }

    fn index(calls: &[ProcessCall], call: &ProcessCall) -> usize {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("{call:?} not in {calls:?}"))
    }

    #[test]
    fn ids_groups_keyring_and_no_new_privs_in_order() {
        let os = RecordingProcess::new();
        let identity = identity();

        drop_to(&os, &credentials(&identity, &[], true)).unwrap();

        assert_eq!(
            steps(&os.calls()),
            [
                ProcessCall::SetGroups(vec![61502]),
                ProcessCall::SetResgid(61501),
                ProcessCall::SetResuid(61500),
                ProcessCall::ClearAmbient,
                ProcessCall::JoinSessionKeyring,
                ProcessCall::SetNoNewPrivs,
                ProcessCall::SetDumpable(false),
                ProcessCall::SetParentDeathSignal(libc::SIGKILL),
            ]
        );
    }

    #[test]
    fn the_bounding_set_is_cut_before_the_uid_change() {
        let os = RecordingProcess::new();
        let identity = identity();

        drop_to(&os, &credentials(&identity, &[], true)).unwrap();

        let calls = os.calls();
        assert!(
            index(&calls, &ProcessCall::DropBounding(Capability::CAP_SETPCAP))
                < index(&calls, &ProcessCall::SetResuid(61500))
        );
    }

    #[test]
    fn ambient_capabilities_are_kept_across_the_uid_change_then_raised() {
        let os = RecordingProcess::new();
        let identity = identity();

        drop_to(
            &os,
            &credentials(&identity, &["CAP_NET_BIND_SERVICE"], true),
        )
        .unwrap();

        let calls = os.calls();
        let keep = index(&calls, &ProcessCall::SetKeepCapabilities(true));
        let setuid = index(&calls, &ProcessCall::SetResuid(61500));
        let unkeep = index(&calls, &ProcessCall::SetKeepCapabilities(false));
        let raise = index(
            &calls,
            &ProcessCall::RaiseAmbient(Capability::CAP_NET_BIND_SERVICE),
        );
        assert!(
            keep < setuid && setuid < unkeep && unkeep < raise,
            "{calls:?}"
        );
    }

    #[test]
    fn without_ambient_capabilities_nothing_is_kept() {
        let os = RecordingProcess::new();
        let identity = identity();

        drop_to(&os, &credentials(&identity, &[], true)).unwrap();

        assert!(
            !os.calls()
                .iter()
                .any(|c| matches!(c, ProcessCall::SetKeepCapabilities(_)))
        );
    }

    #[test]
    fn no_new_privileges_no_leaves_the_flag_unset() {
        let os = RecordingProcess::new();
        let identity = identity();

        drop_to(&os, &credentials(&identity, &[], false)).unwrap();

        assert!(!os.calls().contains(&ProcessCall::SetNoNewPrivs));
    }

    #[test]
    fn the_session_keyring_is_joined_as_the_service_uid() {
        let os = RecordingProcess::new();
        let identity = identity();

        drop_to(&os, &credentials(&identity, &[], true)).unwrap();

        let calls = os.calls();
        assert!(
            index(&calls, &ProcessCall::SetResuid(61500))
                < index(&calls, &ProcessCall::JoinSessionKeyring)
        );
    }

    fn block_identity(uid: u32) -> Identity {
        Identity {
            uid: 524_288 + uid,
            gid: 524_288 + uid,
            supplementary_groups: vec![524_292],
            private_users: false,
            user_name: "redis".into(),
            user_block: Some(berth_protocol::sandbox::UidBlock::at(524_288)),
        }
    }

    #[test]
    fn in_block_mode_the_ids_set_are_those_inside_the_block() {
        let os = RecordingProcess::new();
        let identity = block_identity(100);

        drop_to(&os, &credentials(&identity, &[], true)).unwrap();

        let calls = steps(&os.calls());
        assert_eq!(
            calls[..3],
            [
                ProcessCall::SetGroups(vec![4]),
                ProcessCall::SetResgid(100),
                ProcessCall::SetResuid(100),
            ]
        );
    }

    #[test]
    fn root_of_the_block_keeps_its_bounding_set_permitted() {
        let os = RecordingProcess::new();
        let identity = block_identity(0);

        drop_to(&os, &credentials(&identity, &["CAP_CHOWN"], true)).unwrap();

        assert!(os.calls().contains(&ProcessCall::SetCapabilities {
            set: "Permitted".into(),
            caps: vec![Capability::CAP_CHOWN],
        }));
        let mut user = credentials(&identity, &[], true);
        user.capabilities.bounding.insert(Capability::CAP_KILL);
        let os = RecordingProcess::new();
        drop_to(&os, &user).unwrap();
        assert!(os.calls().contains(&ProcessCall::SetCapabilities {
            set: "Permitted".into(),
            caps: vec![Capability::CAP_KILL],
        }));
    }

    #[test]
    fn a_failed_setresuid_stops_before_anything_else() {
        let os = RecordingProcess::new().failing(
            |c| matches!(c, ProcessCall::SetResuid(_)),
            rustix::io::Errno::AGAIN,
        );
        let identity = identity();

        let failure = drop_to(&os, &credentials(&identity, &[], true)).unwrap_err();

        assert_eq!(
            failure,
            Failure::Setup {
                stage: "setresuid".into(),
                errno: libc::EAGAIN
            }
        );
        assert_eq!(os.calls().last(), Some(&ProcessCall::SetResuid(61500)));
    }
}
