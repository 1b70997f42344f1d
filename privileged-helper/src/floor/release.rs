//! The floor for `ReleaseUser`: only a uid the helper would run a service as is released, so
//! that no host user's IPC objects or keys are touched whatever berthd asks.

use berth_protocol::helper::ReleaseUserParams;

use super::sandbox::check_id;
use super::{Refusal, refuse};
use crate::config::FloorPolicy;

impl FloorPolicy {
    /// Checks a `ReleaseUser` request; returns the uid (whose gid is the same number).
    pub fn check_release_user(&self, params: &ReleaseUserParams) -> Result<u32, Refusal> {
        let uid = u32::try_from(params.uid).map_err(|_| refuse("uid", "out of range"))?;
        check_id(self, "uid", uid, &self.passwd)?;
        check_id(self, "uid", uid, &self.group)?;
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::policy_with_database;
    use super::*;

    #[test]
    fn a_uid_outside_the_range_or_of_a_host_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "svc:x:61200:61200::/:/bin/false\n");
        let release = |uid| policy.check_release_user(&ReleaseUserParams { uid });

        let refused = [0, 1000, 61200, -1, 1 << 40].map(|uid| release(uid).is_err());

        assert_eq!(refused, [true; 5]);
        assert_eq!(release(61201).unwrap(), 61201);
    }

    #[test]
    fn the_uid_of_a_host_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy_with_database(dir.path(), "");
        std::fs::write(dir.path().join("group"), "svc:x:61201:\n").unwrap();

        let refusal = policy.check_release_user(&ReleaseUserParams { uid: 61201 });

        assert!(refusal.unwrap_err().reason.contains("host database"));
    }
}
