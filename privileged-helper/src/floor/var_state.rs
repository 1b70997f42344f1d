//! The floor for `RemoveVarState`: the directory is the manager's own (it could remove what
//! is in it anyway were the layers not the block's), and the block one the helper would run a
//! service with, so that no other ids' files are taken for the attachment's.

use std::os::fd::OwnedFd;

use berth_protocol::helper::RemoveVarStateParams;
use berth_protocol::sandbox::{UID_BLOCK_SIZE, UidBlock};

use super::{Refusal, check_owned_dir, refuse};
use crate::config::FloorPolicy;

impl FloorPolicy {
    /// Checks a `RemoveVarState` request with its fds; returns the directory and the block.
    pub fn check_remove_var_state(
        &self,
        params: &RemoveVarStateParams,
        fds: Vec<OwnedFd>,
        manager_uid: u32,
    ) -> Result<(OwnedFd, UidBlock), Refusal> {
        let block = params.block;
        if block.size != UID_BLOCK_SIZE
            || !block.first.is_multiple_of(UID_BLOCK_SIZE)
            || block.first == 0
        {
            return Err(refuse(
                "block",
                format!("not a uid block ({UID_BLOCK_SIZE} ids from a multiple of it, above 0)"),
            ));
        }
        if block.first.checked_add(block.size - 1).is_none() {
            return Err(refuse("block", "past the last uid"));
        }
        let mut fds = fds.into_iter();
        let (Some(dir), None) = (fds.next(), fds.next()) else {
            return Err(refuse(
                "fds",
                "expected one descriptor, the attachment's directory",
            ));
        };
        check_owned_dir("persistent /var directory", &dir, manager_uid)?;
        Ok((dir, block))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustix::fs::{Mode, OFlags};

    use super::*;

    fn params(first: u32, size: u32) -> RemoveVarStateParams {
        RemoveVarStateParams {
            block: UidBlock { first, size },
        }
    }

    fn dir(mode: u32) -> (tempfile::TempDir, Vec<OwnedFd>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        (dir, vec![fd])
    }

    #[test]
    fn a_block_that_is_no_block_is_refused() {
        let policy = FloorPolicy::default();

        for (first, size) in [
            (0, UID_BLOCK_SIZE),
            (524_289, UID_BLOCK_SIZE),
            (524_288, 10),
        ] {
            let (_dir, fds) = dir(0o700);
            let refusal = policy
                .check_remove_var_state(&params(first, size), fds, 0)
                .unwrap_err();
            assert_eq!(refusal.field, "block", "{first} {size}");
        }
    }

    #[test]
    fn the_directory_must_be_the_manager_s_and_not_writable_by_others() {
        let policy = FloorPolicy::default();
        let good = params(524_288, UID_BLOCK_SIZE);

        let (_a, own) = dir(0o700);
        let (_b, open_to_all) = dir(0o777);
        let (_c, own_too) = dir(0o700);

        assert!(policy.check_remove_var_state(&good, own, 0).is_ok());
        assert!(
            policy
                .check_remove_var_state(&good, open_to_all, 0)
                .is_err()
        );
        assert!(policy.check_remove_var_state(&good, own_too, 1000).is_err());
        assert_eq!(
            policy
                .check_remove_var_state(&good, Vec::new(), 0)
                .unwrap_err()
                .field,
            "fds"
        );
    }
}
