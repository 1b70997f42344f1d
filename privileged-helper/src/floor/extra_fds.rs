//! The descriptors a spawn carries between the service directories' parents and the extension
//! roots, each only when the spec asks for it ([`spawn_extra_fds`]): the persistent /var
//! directory, then berthd's copies of the host's resolv.conf and hosts.
//!
//! The copies are bound read-only into the sandbox, so each must be a regular file of the
//! manager's, opened for reading (not `O_PATH`: as for an image root, a real open proves that
//! berthd may read what the service will see).

use std::os::fd::OwnedFd;

use berth_protocol::helper::{SPAWN_FDS, spawn_extra_fds};
use berth_protocol::sandbox::SandboxSpec;
use rustix::fs::{FileType, OFlags};

use super::{Refusal, check_owned_dir, refuse};
use crate::config::FloorPolicy;
use crate::launch_spec::HostFileFds;
use crate::manager_access::Credentials;

/// The extra descriptors of one spawn, taken out of its list.
#[derive(Debug, Default)]
pub struct ExtraFds {
    /// `STATE/var/<image>/`, a directory of the manager's no one else may write to.
    pub persistent_var: Option<OwnedFd>,
    pub host_files: HostFileFds,
}

impl FloorPolicy {
    /// Takes out of a spawn's `fds` (the service directories' parents already taken, see
    /// [`FloorPolicy::check_directory_fds`]) the extra descriptors `sandbox` asks for, right
    /// after the fixed ones, and checks each.
    pub fn check_extra_fds(
        &self,
        fds: &mut Vec<OwnedFd>,
        sandbox: &SandboxSpec,
        manager: &Credentials,
    ) -> Result<ExtraFds, Refusal> {
        let fixed = SPAWN_FDS.len();
        let labels = spawn_extra_fds(sandbox);
        if fds.len() < fixed + labels.len() {
            return Err(refuse(
                "fds",
                format!(
                    "expected {fixed} file descriptors and then {}, got {} in all",
                    labels.join(", "),
                    fds.len()
                ),
            ));
        }
        let mut taken = fds.drain(fixed..fixed + labels.len());
        let mut next = |wanted: bool| if wanted { taken.next() } else { None };
        let mounts = &sandbox.mounts;
        let extra = ExtraFds {
            persistent_var: next(mounts.persistent_var),
            host_files: HostFileFds {
                resolv_conf: next(mounts.host_files.resolv_conf),
                hosts: next(mounts.host_files.hosts),
            },
        };
        drop(taken);
        if let Some(dir) = &extra.persistent_var {
            check_owned_dir("persistent /var directory", dir, manager.uid)?;
        }
        let copies = [
            ("resolv.conf copy", &extra.host_files.resolv_conf),
            ("hosts copy", &extra.host_files.hosts),
        ];
        for (field, fd) in copies {
            if let Some(fd) = fd {
                check_copy(field, fd, manager.uid)?;
            }
        }
        Ok(extra)
    }
}

fn check_copy(field: &str, fd: &OwnedFd, manager_uid: u32) -> Result<(), Refusal> {
    let st = rustix::fs::fstat(fd).map_err(|e| refuse(field, e.to_string()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refuse(field, "not a regular file"));
    }
    if st.st_uid != manager_uid {
        return Err(refuse(field, "not owned by the manager"));
    }
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| refuse(field, e.to_string()))?;
    if flags.contains(OFlags::PATH) || (flags & OFlags::RWMODE) == OFlags::WRONLY {
        return Err(refuse(field, "must be opened for reading"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use rustix::fs::Mode;

    use super::*;

    fn manager() -> Credentials {
        Credentials {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            groups: Vec::new(),
        }
    }

    fn open(path: &std::path::Path, flags: OFlags) -> OwnedFd {
        rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    /// The three fixed descriptors (any will do here), then `extra`, then one extension.
    fn spawn_fds(dir: &tempfile::TempDir, extra: Vec<OwnedFd>) -> Vec<OwnedFd> {
        let any = || open(dir.path(), OFlags::RDONLY);
        let mut fds = vec![any(), any(), any()];
        fds.extend(extra);
        fds.push(any());
        fds
    }

    fn with_host_files(resolv_conf: bool, hosts: bool) -> SandboxSpec {
        let mut spec = SandboxSpec::baseline(61200, 61200, "probe");
        spec.mounts.host_files.resolv_conf = resolv_conf;
        spec.mounts.host_files.hosts = hosts;
        spec
    }

    fn copy(dir: &tempfile::TempDir, name: &str, flags: OFlags) -> OwnedFd {
        let path = dir.path().join(name);
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        open(&path, flags)
    }

    #[test]
    fn the_copies_are_taken_after_the_fixed_descriptors_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = copy(&dir, "resolv.conf", OFlags::RDONLY);
        let hosts = copy(&dir, "hosts", OFlags::RDONLY);
        let (resolv_raw, hosts_raw) = (resolv.as_raw_fd(), hosts.as_raw_fd());
        let mut fds = spawn_fds(&dir, vec![resolv, hosts]);

        let extra = FloorPolicy::default()
            .check_extra_fds(&mut fds, &with_host_files(true, true), &manager())
            .unwrap();

        let host_files = extra.host_files;
        assert_eq!(
            host_files.resolv_conf.map(|f| f.as_raw_fd()),
            Some(resolv_raw)
        );
        assert_eq!(host_files.hosts.map(|f| f.as_raw_fd()), Some(hosts_raw));
        assert_eq!(fds.len(), 4, "the fixed ones and the extension stay");
    }

    #[test]
    fn nothing_is_taken_when_the_spec_asks_for_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut fds = spawn_fds(&dir, Vec::new());

        let extra = FloorPolicy::default()
            .check_extra_fds(&mut fds, &with_host_files(false, false), &manager())
            .unwrap();

        assert!(extra.host_files.resolv_conf.is_none() && extra.persistent_var.is_none());
        assert_eq!(fds.len(), 4);
    }

    #[test]
    fn a_copy_that_is_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut fds = spawn_fds(&dir, vec![open(dir.path(), OFlags::RDONLY)]);

        let refusal = FloorPolicy::default()
            .check_extra_fds(&mut fds, &with_host_files(true, false), &manager())
            .unwrap_err();

        assert_eq!(
            (refusal.field.as_str(), refusal.reason.as_str()),
            ("resolv.conf copy", "not a regular file")
        );
    }

    #[test]
    fn a_copy_opened_as_a_path_only_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut fds = spawn_fds(&dir, vec![copy(&dir, "hosts", OFlags::PATH)]);

        let refusal = FloorPolicy::default()
            .check_extra_fds(&mut fds, &with_host_files(false, true), &manager())
            .unwrap_err();

        assert_eq!(refusal.field, "hosts copy");
    }

    #[test]
    fn a_copy_of_another_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut fds = spawn_fds(&dir, vec![copy(&dir, "resolv.conf", OFlags::RDONLY)]);
        let someone_else = Credentials {
            uid: manager().uid + 1,
            ..manager()
        };

        let refusal = FloorPolicy::default()
            .check_extra_fds(&mut fds, &with_host_files(true, false), &someone_else)
            .unwrap_err();

        assert_eq!(refusal.reason, "not owned by the manager");
    }

    #[test]
    fn the_persistent_var_directory_comes_first_and_others_may_not_write_to_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let var = tempfile::tempdir().unwrap();
        let mut spec = with_host_files(true, false);
        spec.mounts.persistent_var = true;
        let resolv = copy(&dir, "resolv.conf", OFlags::RDONLY);
        let mut fds = spawn_fds(&dir, vec![open(var.path(), OFlags::RDONLY), resolv]);
        std::fs::set_permissions(var.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

        let extra = FloorPolicy::default()
            .check_extra_fds(&mut fds, &spec, &manager())
            .unwrap();
        std::fs::set_permissions(var.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let resolv = copy(&dir, "resolv.conf", OFlags::RDONLY);
        let mut open_to_all = spawn_fds(&dir, vec![open(var.path(), OFlags::RDONLY), resolv]);
        let refusal = FloorPolicy::default()
            .check_extra_fds(&mut open_to_all, &spec, &manager())
            .unwrap_err();

        assert!(extra.persistent_var.is_some() && extra.host_files.resolv_conf.is_some());
        assert_eq!(refusal.reason, "writable by group or others");
    }

    #[test]
    fn too_few_descriptors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let any = || open(dir.path(), OFlags::RDONLY);
        let mut fds = vec![any(), any(), any()];

        let refusal = FloorPolicy::default()
            .check_extra_fds(&mut fds, &with_host_files(true, true), &manager())
            .unwrap_err();

        assert_eq!(refusal.field, "fds");
    }
}
