//! Dynamic UID/GID allocation for running services (DESIGN.md §5).
//!
//! A service gets a UID = GID pair from the configured range while it runs. IDs that the host
//! database (passwd or group) names are never handed out; berth-helper checks that again.
//!
//! When a run ends its uid is first *releasing*: still taken, until berth-helper has removed
//! what the uid left outside its directories (IPC objects, keys; see [`crate::uid_release`]).
//! Only then is it free for the next holder. A uid the helper could not clean stays taken.

use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DynamicUserError {
    #[error("no free dynamic uid in {min}-{max}")]
    Exhausted { min: u32, max: u32 },
    #[error("uid {id}, the unit's next, is still being released")]
    Releasing { id: u32 },
}

/// Hands out IDs from `min..=max` that are free in berth and on the host.
#[derive(Debug)]
pub struct DynamicUsers {
    min: u32,
    max: u32,
    in_use: BTreeSet<u32>,
    /// Taken uids whose release is under way (a subset of `in_use`).
    releasing: BTreeSet<u32>,
    /// Uids berth-helper has released for this berthd: nothing of an earlier holder is left.
    released: BTreeSet<u32>,
    passwd: PathBuf,
    group: PathBuf,
}

impl DynamicUsers {
    pub fn new(min: u32, max: u32) -> Self {
        DynamicUsers {
            min,
            max,
            in_use: BTreeSet::new(),
            releasing: BTreeSet::new(),
            released: BTreeSet::new(),
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
        }
    }

    /// Uses other host databases (tests).
    pub fn with_databases(mut self, passwd: PathBuf, group: PathBuf) -> Self {
        self.passwd = passwd;
        self.group = group;
        self
    }

    /// Allocates the lowest free ID, starting from a hash of the unit name so that a unit tends
    /// to get the same ID again (as systemd does), which keeps its files' owner stable. When
    /// the ID it would get is still being released, that is the error: the caller waits for it
    /// rather than take the next one.
    pub fn allocate(&mut self, unit: &str) -> Result<u32, DynamicUserError> {
        let taken = host_ids(&self.passwd)
            .into_iter()
            .chain(host_ids(&self.group))
            .collect::<BTreeSet<_>>();
        let span = self.max - self.min + 1;
        let start = unit
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b))
            % span;
        let id = (0..span)
            .map(|i| self.min + (start + i) % span)
            .find(|id| {
                self.releasing.contains(id) || (!self.in_use.contains(id) && !taken.contains(id))
            })
            .ok_or(DynamicUserError::Exhausted {
                min: self.min,
                max: self.max,
            })?;
        if self.releasing.contains(&id) {
            return Err(DynamicUserError::Releasing { id });
        }
        self.in_use.insert(id);
        Ok(id)
    }

    /// Records an ID found in use by a re-adopted service.
    pub fn mark_in_use(&mut self, id: u32) {
        self.in_use.insert(id);
    }

    /// Frees `id` for the next allocation; for a uid no process ever ran as, or one whose
    /// release is done.
    pub fn release(&mut self, id: u32) {
        self.in_use.remove(&id);
        self.releasing.remove(&id);
    }

    /// Marks `id`, whose run has ended, as releasing: it stays taken until [`Self::release`]
    /// (or forever, after [`Self::keep_out_of_use`]).
    pub fn begin_release(&mut self, id: u32) {
        if self.in_use.contains(&id) {
            self.releasing.insert(id);
        }
    }

    /// Keeps `id`, whose release failed, taken until berthd restarts.
    pub fn keep_out_of_use(&mut self, id: u32) {
        self.releasing.remove(&id);
    }

    /// Records that berth-helper released `id`.
    pub fn mark_released(&mut self, id: u32) {
        self.released.insert(id);
    }

    /// Whether berth-helper released `id` since this berthd started (else an earlier holder,
    /// seen by an earlier berthd or none, may have left something).
    pub fn was_released(&self, id: u32) -> bool {
        self.released.contains(&id)
    }
}

fn host_ids(path: &std::path::Path) -> Vec<u32> {
    crate::host_users::entries(path)
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(dir: &std::path::Path, passwd: &str, min: u32, max: u32) -> DynamicUsers {
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        std::fs::write(dir.join("group"), "").unwrap();
        DynamicUsers::new(min, max).with_databases(dir.join("passwd"), dir.join("group"))
    }

    #[test]
    fn two_running_services_get_different_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 101);

        let a = users.allocate("a.service").unwrap();
        let b = users.allocate("a.service").unwrap();

        assert_ne!(a, b);
    }

    #[test]
    fn host_user_ids_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "x:x:100:100::/:/bin/sh\n", 100, 101);

        // Whatever id the unit's hash starts at, 100 is taken by the host.
        for name in ["a.service", "b.service", "c.service", "d.service"] {
            let id = users.allocate(name).unwrap();
            assert_eq!(id, 101, "{name}");
            users.release(id);
        }
    }

    #[test]
    fn host_group_ids_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 100);
        std::fs::write(dir.path().join("group"), "g:x:100:\n").unwrap();

        assert!(users.allocate("a.service").is_err());
    }

    #[test]
    fn exhausted_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 100);
        users.allocate("a.service").unwrap();

        assert!(users.allocate("b.service").is_err());
    }

    #[test]
    fn a_releasing_id_is_not_handed_out_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 100);
        let id = users.allocate("a.service").unwrap();

        users.begin_release(id);

        assert!(matches!(
            users.allocate("b.service"),
            Err(DynamicUserError::Releasing { id: 100 })
        ));
        users.release(id);
        assert_eq!(users.allocate("b.service").unwrap(), 100);
    }

    #[test]
    fn an_id_kept_out_of_use_is_never_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 100);
        let id = users.allocate("a.service").unwrap();
        users.begin_release(id);

        users.keep_out_of_use(id);

        assert!(matches!(
            users.allocate("b.service"),
            Err(DynamicUserError::Exhausted { .. })
        ));
    }

    #[test]
    fn a_unit_waits_for_its_releasing_id_rather_than_take_another() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 101);
        let id = users.allocate("a.service").unwrap();
        users.begin_release(id);

        let again = users.allocate("a.service");

        assert!(matches!(again, Err(DynamicUserError::Releasing { id: got }) if got == id));
    }

    #[test]
    fn an_id_counts_as_released_only_once_marked() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 100);
        let id = users.allocate("a.service").unwrap();

        let before = users.was_released(id);
        users.mark_released(id);

        assert!(!before);
        assert!(users.was_released(id));
    }

    #[test]
    fn released_id_can_be_allocated_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = users(dir.path(), "", 100, 100);
        let id = users.allocate("a.service").unwrap();

        users.release(id);

        assert_eq!(users.allocate("b.service").unwrap(), 100);
    }
}
