//! The namespaces init creates besides the pid namespace (the supervisor's): always mount and
//! cgroup; IPC, UTS and network as the spec's [`Namespaces`] asks. The user namespace comes
//! last, after the mounts, in `user_namespace.rs`.

use berth_protocol::sandbox::Namespaces;
use rustix::thread::UnshareFlags;

use super::Failure;
use super::process_syscalls::ProcessSyscalls;

/// The `unshare` flags for `namespaces`. The cgroup namespace makes /proc/self/cgroup show `/`
/// instead of the host's cgroup paths; its root is init's cgroup, so a service cgroup must be
/// joined before.
pub(super) fn flags(namespaces: &Namespaces) -> UnshareFlags {
    let mut flags = UnshareFlags::NEWNS | UnshareFlags::NEWCGROUP;
    if namespaces.private_ipc {
        flags |= UnshareFlags::NEWIPC;
    }
    // ProtectHostname=: the new UTS namespace starts with the host's name, and without
    // CAP_SYS_ADMIN nobody inside can change it.
    if namespaces.private_uts {
        flags |= UnshareFlags::NEWUTS;
    }
    // PrivateNetwork=: a new network namespace has only `lo`, down until `finish`. Abstract
    // unix sockets belong to a network namespace too, so this also hides the host's.
    if namespaces.private_network {
        flags |= UnshareFlags::NEWNET;
    }
    flags
}

/// Creates the namespaces of `namespaces`.
pub(super) fn unshare(os: &impl ProcessSyscalls, namespaces: &Namespaces) -> Result<(), Failure> {
    let flags = flags(namespaces);
    os.unshare(flags)
        .map_err(|e| Failure::setup(format!("unshare the {} namespaces", names(flags)), e))
}

/// What needs the new namespaces in place: `lo` up in a private network.
pub(super) fn finish(os: &impl ProcessSyscalls, namespaces: &Namespaces) -> Result<(), Failure> {
    if namespaces.private_network {
        os.set_loopback_up()
            .map_err(|e| Failure::setup("bring up lo in the private network", e))?;
    }
    Ok(())
}

/// The kinds in `flags`, for messages: `mount, cgroup, ipc, uts and network`.
fn names(flags: UnshareFlags) -> String {
    let kinds: Vec<&str> = [
        (UnshareFlags::NEWNS, "mount"),
        (UnshareFlags::NEWCGROUP, "cgroup"),
        (UnshareFlags::NEWIPC, "ipc"),
        (UnshareFlags::NEWUTS, "uts"),
        (UnshareFlags::NEWNET, "network"),
    ]
    .into_iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .map(|(_, name)| name)
    .collect();
    match kinds.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::process_syscalls::{ProcessCall, RecordingProcess};
    use super::*;

    fn namespaces(ipc: bool, uts: bool, network: bool) -> Namespaces {
        Namespaces {
            private_network: network,
            private_ipc: ipc,
            private_uts: uts,
        }
    }

    #[test]
    fn mount_and_cgroup_namespaces_are_always_new() {
        let os = RecordingProcess::new();

        unshare(&os, &namespaces(false, false, false)).unwrap();

        assert_eq!(
            os.calls(),
            [ProcessCall::Unshare(
                UnshareFlags::NEWNS | UnshareFlags::NEWCGROUP
            )]
        );
    }

    #[test]
    fn private_ipc_uts_and_network_add_their_namespaces() {
        let os = RecordingProcess::new();

        unshare(&os, &namespaces(true, true, true)).unwrap();

        assert_eq!(
            os.calls(),
            [ProcessCall::Unshare(
                UnshareFlags::NEWNS
                    | UnshareFlags::NEWCGROUP
                    | UnshareFlags::NEWIPC
                    | UnshareFlags::NEWUTS
                    | UnshareFlags::NEWNET
            )]
        );
    }

    #[test]
    fn a_private_network_gets_lo_up() {
        let os = RecordingProcess::new();

        finish(&os, &namespaces(true, true, true)).unwrap();

        assert_eq!(os.calls(), [ProcessCall::SetLoopbackUp]);
    }

    #[test]
    fn the_host_network_is_left_alone() {
        let os = RecordingProcess::new();

        finish(&os, &namespaces(true, true, false)).unwrap();

        assert_eq!(os.calls(), []);
    }

    #[test]
    fn a_failed_unshare_names_the_namespaces() {
        let os = RecordingProcess::new().failing(
            |c| matches!(c, ProcessCall::Unshare(_)),
            rustix::io::Errno::PERM,
        );

        let failure = unshare(&os, &namespaces(true, false, true)).unwrap_err();

        assert_eq!(
            failure,
            Failure::Setup {
                stage: "unshare the mount, cgroup, ipc and network namespaces".into(),
                errno: libc::EPERM
            }
        );
    }
}
