//! StateDirectory= and its kind: names that stay below their parent directory, modes without
//! set-uid or set-group-id bits, each directory once.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use berth_protocol::helper::SPAWN_FDS;
use berth_protocol::sandbox::{DirectoryKind, MAX_ENTRIES, ServiceDirectory};

use super::super::{Refusal, check_owned_dir, refuse};
use super::bounded;
use crate::config::FloorPolicy;
use crate::manager_access::Credentials;

/// The mode bits a service directory may keep: a dynamic user has no business making its
/// directories set-uid or set-group-id (systemd masks them the same way).
const MODE_MASK: u32 = 0o1777;

pub(super) fn check(
    _policy: &FloorPolicy,
    directories: &mut [ServiceDirectory],
) -> Result<(), Refusal> {
    bounded("sandbox.directories", directories, MAX_ENTRIES)?;
    let mut seen = BTreeSet::new();
    for (index, directory) in directories.iter_mut().enumerate() {
        let field = format!("sandbox.directories[{index}]");
        ServiceDirectory::check_name(&directory.name)
            .map_err(|reason| refuse(&format!("{field}.name"), reason))?;
        if directory.mode > 0o7777 {
            return Err(refuse(
                &format!("{field}.mode"),
                format!("{:o} is not a file mode (at most 7777)", directory.mode),
            ));
        }
        directory.mode &= MODE_MASK;
        if !seen.insert((directory.kind as u8, directory.name.clone())) {
            return Err(refuse(
                &format!("{field}.name"),
                format!(
                    "{}={} is listed twice",
                    directory.kind.directive(),
                    directory.name
                ),
            ));
        }
    }
    Ok(())
}

impl FloorPolicy {
    /// Takes out of a spawn's `fds` the host directories of `kinds` (they follow the fixed
    /// ones, see [`SPAWN_FDS`]), each a directory of the manager's that no one else may write
    /// to: the service directories are made below them.
    pub fn check_directory_fds(
        &self,
        fds: &mut Vec<OwnedFd>,
        kinds: &[DirectoryKind],
        manager: &Credentials,
    ) -> Result<Vec<(DirectoryKind, OwnedFd)>, Refusal> {
        let fixed = SPAWN_FDS.len();
        if fds.len() < fixed + kinds.len() {
            return Err(refuse(
                "fds",
                format!(
                    "expected {fixed} file descriptors and one for each kind of service                      directory ({}), got {}",
                    kinds.len(),
                    fds.len()
                ),
            ));
        }
        let taken: Vec<OwnedFd> = fds.drain(fixed..fixed + kinds.len()).collect();
        let mut parents = Vec::with_capacity(kinds.len());
        for (kind, fd) in kinds.iter().zip(taken) {
            check_owned_dir(&format!("{} directory", kind.directive()), &fd, manager.uid)?;
            parents.push((*kind, fd));
        }
        Ok(parents)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustix::fs::{Mode, OFlags};

    use super::*;

    fn state(name: &str, mode: u32) -> ServiceDirectory {
        ServiceDirectory {
            kind: DirectoryKind::State,
            name: name.into(),
            mode,
        }
    }

    fn checked(mut directories: Vec<ServiceDirectory>) -> Result<Vec<ServiceDirectory>, Refusal> {
        check(&FloorPolicy::default(), &mut directories).map(|()| directories)
    }

    #[test]
    fn names_that_leave_their_parent_are_refused() {
        for name in ["", "/etc", "a/../../etc", "..", "a//b", "./a", "a/\n"] {
            let refusal = checked(vec![state(name, 0o755)]).unwrap_err();
            assert_eq!(refusal.field, "sandbox.directories[0].name", "{name:?}");
        }
    }

    #[test]
    fn set_id_bits_are_dropped_and_a_mode_past_7777_refused() {
        let directories = checked(vec![state("a", 0o6755), state("b", 0o1770)]).unwrap();

        assert_eq!((directories[0].mode, directories[1].mode), (0o755, 0o1770));
        assert!(checked(vec![state("a", 0o10000)]).is_err());
    }

    #[test]
    fn a_directory_listed_twice_is_refused_but_the_same_name_of_two_kinds_is_not() {
        let runtime = ServiceDirectory {
            kind: DirectoryKind::Runtime,
            ..state("app", 0o755)
        };

        assert!(checked(vec![state("app", 0o755), state("app", 0o700)]).is_err());
        assert!(checked(vec![state("app", 0o755), runtime]).is_ok());
    }

    #[test]
    fn nested_names_are_accepted() {
        assert!(checked(vec![state("app", 0o755), state("app/sub", 0o700)]).is_ok());
    }

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn me() -> Credentials {
        Credentials {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn the_directory_fds_after_the_fixed_ones_are_taken_out_in_kind_order() {
        let dir = tempfile::tempdir().unwrap();
        let (state, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut fds: Vec<OwnedFd> = (0..3).map(|_| open_dir(dir.path())).collect();
        fds.extend([
            open_dir(state.path()),
            open_dir(cache.path()),
            open_dir(dir.path()),
        ]);
        let state_ino = rustix::fs::fstat(&fds[3]).unwrap().st_ino;
        let kinds = [DirectoryKind::State, DirectoryKind::Cache];

        let parents = FloorPolicy::default()
            .check_directory_fds(&mut fds, &kinds, &me())
            .unwrap();

        assert_eq!(fds.len(), 4, "the fixed three and the extension stay");
        assert_eq!(parents[0].0, DirectoryKind::State);
        assert_eq!(rustix::fs::fstat(&parents[0].1).unwrap().st_ino, state_ino);
    }

    #[test]
    fn a_directory_others_may_write_to_or_missing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut fds: Vec<OwnedFd> = (0..3).map(|_| open_dir(dir.path())).collect();
        fds.push(open_dir(open.path()));
        let policy = FloorPolicy::default();

        let writable = policy.check_directory_fds(&mut fds, &[DirectoryKind::State], &me());
        let missing = policy.check_directory_fds(&mut fds, &[DirectoryKind::State], &me());

        assert_eq!(writable.unwrap_err().reason, "writable by group or others");
        assert_eq!(missing.unwrap_err().field, "fds");
    }
}
