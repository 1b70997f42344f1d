//! Who the service runs as: a dynamic uid and gid, never 0, never a host user or group.

use std::path::Path;

use berth_protocol::sandbox::Identity;

use super::super::{Refusal, id_in_database, refuse};
use super::not_supported;
use crate::config::FloorPolicy;

/// Longest user name the synthesized databases may carry (systemd's limit for user names).
const MAX_USER_NAME: usize = 31;

pub(super) fn check(policy: &FloorPolicy, identity: &mut Identity) -> Result<(), Refusal> {
    check_id(policy, "sandbox.identity.uid", identity.uid, &policy.passwd)?;
    check_id(policy, "sandbox.identity.gid", identity.gid, &policy.group)?;
    if !identity.supplementary_groups.is_empty() {
        return Err(not_supported(
            "sandbox.identity.supplementary_groups",
            "supplementary groups",
        ));
    }
    if identity.private_users {
        return Err(not_supported(
            "sandbox.identity.private_users",
            "PrivateUsers=",
        ));
    }
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
