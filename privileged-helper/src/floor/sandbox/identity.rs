//! Who the service runs as: a dynamic uid and gid, never 0, never a host user or group; its
//! supplementary groups likewise; PrivateUsers= as asked. In block mode (the image's own
//! users) the ids are those of the block instead (`user_block.rs`).

use std::path::Path;

use berth_protocol::sandbox::Identity;

use super::super::{Refusal, id_in_database, refuse};
use super::bounded;
use crate::config::FloorPolicy;

/// Longest user name the synthesized databases may carry (systemd's limit for user names).
const MAX_USER_NAME: usize = 31;
/// Most supplementary groups a service may have.
const MAX_SUPPLEMENTARY_GROUPS: usize = 32;

pub(super) fn check(policy: &FloorPolicy, identity: &mut Identity) -> Result<(), Refusal> {
    let groups = "sandbox.identity.supplementary_groups";
    bounded(
        groups,
        &identity.supplementary_groups,
        MAX_SUPPLEMENTARY_GROUPS,
    )?;
    if let Some(block) = identity.user_block {
        super::user_block::check(policy, identity, block)?;
    } else {
        check_id(policy, "sandbox.identity.uid", identity.uid, &policy.passwd)?;
        check_id(policy, "sandbox.identity.gid", identity.gid, &policy.group)?;
        for gid in &identity.supplementary_groups {
            check_id(policy, groups, *gid, &policy.group)?;
        }
    }
    // Each once, and not the primary gid again: setgroups and the gid map want no repeats.
    identity.supplementary_groups.sort_unstable();
    identity.supplementary_groups.dedup();
    identity
        .supplementary_groups
        .retain(|gid| *gid != identity.gid);
    let name = &identity.user_name;
    let valid = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(refuse(
            "sandbox.identity.user_name",
            format!(
                "must be 1 to {MAX_USER_NAME} characters of [A-Za-z0-9_.-], not starting with -"
            ),
        ));
    }
    Ok(())
}

/// A uid or gid the helper would run a service as: of the dynamic range, never 0, not named
/// by `database` (also what `ReleaseUser` may touch, see floor/release.rs).
pub(in crate::floor) fn check_id(
    policy: &FloorPolicy,
    field: &str,
    id: u32,
    database: &Path,
) -> Result<(), Refusal> {
    if id == 0 || id < policy.uid_min || id > policy.uid_max {
        return Err(refuse(
            field,
            format!(
                "{id} is outside the dynamic range {}-{}",
                policy.uid_min, policy.uid_max
            ),
        ));
    }
    if id_in_database(database, id) {
        return Err(refuse(
            field,
            format!("{id} belongs to the host database {}", database.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy whose host databases list root and gid 61300; the directory must outlive it.
    fn policy_in(dir: &tempfile::TempDir) -> FloorPolicy {
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(&group, "root:x:0:\nhost:x:61300:\n").unwrap();
        FloorPolicy {
            passwd,
            group,
            ..FloorPolicy::default()
        }
    }

    fn identity(groups: &[u32]) -> Identity {
        Identity {
            uid: 61200,
            gid: 61200,
            supplementary_groups: groups.to_vec(),
            private_users: false,
            user_name: "web".into(),
            user_block: None,
        }
    }

    #[test]
    fn supplementary_groups_of_the_dynamic_range_are_kept_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = identity(&[61202, 61201, 61202, 61200]);

        check(&policy_in(&dir), &mut identity).unwrap();

        assert_eq!(identity.supplementary_groups, [61201, 61202]);
    }

    #[test]
    fn a_supplementary_group_outside_the_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let refusal = check(&policy_in(&dir), &mut identity(&[61201, 0])).unwrap_err();

        assert_eq!(refusal.field, "sandbox.identity.supplementary_groups");
        assert!(
            refusal.reason.contains("outside the dynamic range"),
            "{refusal}"
        );
    }

    #[test]
    fn a_supplementary_group_of_the_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let refusal = check(&policy_in(&dir), &mut identity(&[61300])).unwrap_err();

        assert_eq!(refusal.field, "sandbox.identity.supplementary_groups");
        assert!(refusal.reason.contains("host database"), "{refusal}");
    }

    #[test]
    fn more_than_32_supplementary_groups_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let groups: Vec<u32> = (61201..61234).collect();

        let refusal = check(&policy_in(&dir), &mut identity(&groups)).unwrap_err();

        assert_eq!(refusal.field, "sandbox.identity.supplementary_groups");
    }

    #[test]
    fn private_users_is_carried_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = identity(&[]);
        identity.private_users = true;

        check(&policy_in(&dir), &mut identity).unwrap();

        assert!(identity.private_users);
    }

    #[test]
    fn block_ids_outside_the_dynamic_range_pass_in_block_mode() {
        let dir = tempfile::tempdir().unwrap();
        let block = berth_protocol::sandbox::UidBlock::at(524_288);
        let mut identity = Identity {
            uid: 524_388,
            gid: 524_388,
            supplementary_groups: vec![524_292, 524_388],
            user_block: Some(block),
            ..identity(&[])
        };

        check(&policy_in(&dir), &mut identity).unwrap();

        assert_eq!(identity.supplementary_groups, [524_292]);
    }

    #[test]
    fn a_dynamic_uid_is_refused_in_block_mode() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = Identity {
            user_block: Some(berth_protocol::sandbox::UidBlock::at(524_288)),
            ..identity(&[])
        };

        let refusal = check(&policy_in(&dir), &mut identity).unwrap_err();

        assert_eq!(refusal.field, "sandbox.identity.uid");
    }

    #[test]
    fn a_user_name_that_would_add_a_passwd_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = identity(&[]);
        identity.user_name = "web:x:0:0::/:/bin/sh\nroot2".into();

        let refusal = check(&policy_in(&dir), &mut identity).unwrap_err();

        assert_eq!(refusal.field, "sandbox.identity.user_name");
    }
}
