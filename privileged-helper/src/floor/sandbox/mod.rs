//! The floor for a [`SandboxSpec`]: every part checked, and clamped where a bound applies,
//! against the helper's own config, whatever berthd asks (ISSUE 7 item 8).
//!
//! One file per area, each with one `check` taking the policy and its part of the spec; a part
//! the sandbox code cannot carry out is refused, never silently dropped.

mod capabilities;
mod credentials;
mod directories;
mod firewall;
mod identity;
mod landlock;
mod mounts;
mod namespaces;
mod persistent_var;
mod ports;
mod resources;
mod syscalls;
mod user_block;

use berth_protocol::sandbox::SandboxSpec;

pub(super) use credentials::set_directory as set_credentials_directory;
pub(super) use identity::check_id;

use super::{Refusal, refuse};
use crate::config::FloorPolicy;

/// Longest profile label (`default@1`) the helper logs.
const MAX_PROFILE_BYTES: usize = 64;

impl FloorPolicy {
    /// Checks every part of `spec`; returns it clamped to what this helper will do.
    pub(super) fn check_sandbox(&self, mut spec: SandboxSpec) -> Result<SandboxSpec, Refusal> {
        if spec.profile.len() > MAX_PROFILE_BYTES || spec.profile.chars().any(|c| c.is_control()) {
            return Err(refuse(
                "sandbox.profile",
                format!("must be at most {MAX_PROFILE_BYTES} bytes of printable text"),
            ));
        }
        identity::check(self, &mut spec.identity)?;
        namespaces::check(self, &mut spec.namespaces)?;
        mounts::check(self, &mut spec.mounts)?;
        let block_mode = spec.identity.user_block.is_some();
        capabilities::check(self, &mut spec.capabilities, block_mode)?;
        if !spec.no_new_privileges {
            return Err(refuse(
                "sandbox.no_new_privileges",
                "this berth-helper does not allow services without no_new_privs",
            ));
        }
        syscalls::check(self, &mut spec.syscalls)?;
        landlock::check(self, &mut spec.landlock, &spec.namespaces)?;
        resources::check(self, &mut spec)?;
        firewall::check(self, &mut spec.firewall)?;
        directories::check(self, &mut spec.directories)?;
        credentials::check(self, &spec.credentials)?;
        persistent_var::check(&spec)?;
        ports::check(self, &mut spec.privileged_ports, &spec.identity)?;
        Ok(spec)
    }
}

/// Checks a list's length against its bound.
fn bounded<T>(field: &str, list: &[T], max: usize) -> Result<(), Refusal> {
    if list.len() > max {
        return Err(refuse(field, format!("more than {max} entries")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy whose host databases list only root; the directory must outlive the policy.
    fn policy_in(dir: &tempfile::TempDir) -> FloorPolicy {
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(&group, "root:x:0:\n").unwrap();
        FloorPolicy {
            passwd,
            group,
            ..FloorPolicy::default()
        }
    }

    #[test]
    fn the_baseline_passes_unchanged() {
        let spec = SandboxSpec::baseline(61200, 61200, "hello");

        let dir = tempfile::tempdir().unwrap();

        let checked = policy_in(&dir).check_sandbox(spec.clone()).unwrap();

        assert_eq!(checked, spec);
    }

    #[test]
    fn remove_ipc_off_still_gets_the_uid_s_ipc_removed() {
        let mut spec = SandboxSpec::baseline(61200, 61200, "hello");
        spec.remove_ipc = false;
        let dir = tempfile::tempdir().unwrap();

        let checked = policy_in(&dir).check_sandbox(spec).unwrap();

        assert!(checked.remove_ipc);
    }

    #[test]
    fn a_service_without_no_new_privs_is_refused() {
        let mut spec = SandboxSpec::baseline(61200, 61200, "hello");
        spec.no_new_privileges = false;

        let dir = tempfile::tempdir().unwrap();

        let refusal = policy_in(&dir).check_sandbox(spec).unwrap_err();

        assert_eq!(refusal.field, "sandbox.no_new_privileges");
    }

    #[test]
    fn a_profile_label_with_control_characters_is_refused() {
        let mut spec = SandboxSpec::baseline(61200, 61200, "hello");
        spec.profile = "default\n@1".into();

        let dir = tempfile::tempdir().unwrap();

        let refusal = policy_in(&dir).check_sandbox(spec).unwrap_err();

        assert_eq!(refusal.field, "sandbox.profile");
    }

    #[test]
    fn a_user_name_that_could_be_an_option_is_refused() {
        let spec = SandboxSpec::baseline(61200, 61200, "-hello");

        let dir = tempfile::tempdir().unwrap();

        let refusal = policy_in(&dir).check_sandbox(spec).unwrap_err();

        assert_eq!(refusal.field, "sandbox.identity.user_name");
    }
}
