//! The mount plan: what of the host and the image the service sees.
//!
//! Every path must be absolute and normalized (no `.`, `..`, empty or trailing components),
//! so that what is checked here is what the sandbox code resolves. Host paths are the floor's
//! business: a BindPaths= source only under a directory helper.toml lists in `bind_sources`,
//! a DeviceAllow= node only if listed in `allowed_devices` (both empty by default). Paths
//! inside the sandbox need no allow list: they resolve inside the new root, and the image is
//! read-only whatever is asked.

use std::path::Path;

use berth_protocol::sandbox::{MAX_PATH_BYTES, MAX_PATHS, MountPlan, SandboxPath};

use super::super::{Refusal, refuse};
use super::bounded;
use crate::config::FloorPolicy;

/// Largest TemporaryFileSystem= `size=` the helper mounts; a larger one is clamped to it.
pub(crate) const MAX_TMPFS_BYTES: u64 = 1 << 30;

/// Checks one absolute, normalized path, not `/` itself.
pub(super) fn check_path(field: &str, path: &str) -> Result<(), Refusal> {
    check_path_or_root(field, path)?;
    if path == "/" {
        return Err(refuse(field, "the root itself cannot be the path"));
    }
    Ok(())
}

/// Checks one absolute, normalized path; `/` (ReadOnlyPaths=/) is one.
fn check_path_or_root(field: &str, path: &str) -> Result<(), Refusal> {
    if path.len() > MAX_PATH_BYTES {
        return Err(refuse(field, format!("longer than {MAX_PATH_BYTES} bytes")));
    }
    if path.contains('\0') {
        return Err(refuse(field, "paths must not contain NUL bytes"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(refuse(field, format!("{path:?} is not absolute")));
    };
    if !rest.is_empty()
        && rest
            .split('/')
            .any(|component| matches!(component, "" | "." | ".."))
    {
        return Err(refuse(
            field,
            format!("{path:?} is not normalized (no empty, . or .. components)"),
        ));
    }
    Ok(())
}

/// Checks a list of ReadOnlyPaths= and its kind; `/` only where `root` says.
fn check_paths(field: &str, paths: &[SandboxPath], root: bool) -> Result<(), Refusal> {
    bounded(field, paths, MAX_PATHS)?;
    for entry in paths {
        if root {
            check_path_or_root(field, &entry.path)?;
        } else {
            check_path(field, &entry.path)?;
        }
    }
    Ok(())
}

/// `path` is one of `allowed` or lies under one of them (whole components).
fn allowed_under(path: &str, allowed: &[std::path::PathBuf]) -> bool {
    allowed.iter().any(|a| Path::new(path).starts_with(a))
}

pub(super) fn check(policy: &FloorPolicy, plan: &mut MountPlan) -> Result<(), Refusal> {
    // The image is always read-only, so every ProtectSystem= level holds already.
    if !plan.private_tmp || !plan.private_devices {
        return Err(refuse(
            "sandbox.mounts",
            "this berth-helper always gives a service a private /tmp and /dev",
        ));
    }
    // /proc/sys and friends are always read-only; asking for less gets that anyway.
    plan.protect_kernel_tunables = true;
    // ReadOnlyPaths=/ is systemd's idiom for "everything but ReadWritePaths=".
    check_paths(
        "sandbox.mounts.read_only_paths",
        &plan.read_only_paths,
        true,
    )?;
    check_paths(
        "sandbox.mounts.read_write_paths",
        &plan.read_write_paths,
        true,
    )?;
    check_paths(
        "sandbox.mounts.inaccessible_paths",
        &plan.inaccessible_paths,
        false,
    )?;

    let field = "sandbox.mounts.bind_paths";
    bounded(field, &plan.bind_paths, MAX_PATHS)?;
    for bind in &plan.bind_paths {
        check_path(field, &bind.source)?;
        check_path(field, &bind.target)?;
        if !allowed_under(&bind.source, &policy.bind_sources) {
            return Err(refuse(
                field,
                format!(
                    "{} is not under a bind source this berth-helper allows (helper.toml \
                     bind_sources)",
                    bind.source
                ),
            ));
        }
    }

    let field = "sandbox.mounts.temporary_filesystems";
    bounded(field, &plan.temporary_filesystems, MAX_PATHS)?;
    for fs in &mut plan.temporary_filesystems {
        check_path(field, &fs.path)?;
        if fs.mode > 0o7777 {
            return Err(refuse(field, format!("mode {:o} is above 7777", fs.mode)));
        }
        fs.size = fs.size.min(MAX_TMPFS_BYTES);
    }

    let field = "sandbox.mounts.device_allow";
    bounded(field, &plan.device_allow, MAX_PATHS)?;
    for device in &mut plan.device_allow {
        check_path(field, &device.path)?;
        if !device.path.starts_with("/dev/")
            || !policy
                .allowed_devices
                .iter()
                .any(|d| Path::new(&device.path) == d)
        {
            return Err(refuse(
                field,
                format!(
                    "{} is not a device this berth-helper allows (helper.toml allowed_devices)",
                    device.path
                ),
            ));
        }
        // Services never create device nodes: /dev is nodev and CAP_MKNOD is not theirs.
        device.mknod = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use berth_protocol::sandbox::{BindPath, DeviceAccess, SandboxSpec, TemporaryFileSystem};

    use super::*;

    fn plan() -> MountPlan {
        SandboxSpec::baseline(61200, 61200, "probe").mounts
    }

    fn policy() -> FloorPolicy {
        FloorPolicy {
            bind_sources: vec![PathBuf::from("/srv/shared")],
            allowed_devices: vec![PathBuf::from("/dev/fuse")],
            ..FloorPolicy::default()
        }
    }

    fn bind(source: &str) -> BindPath {
        BindPath {
            source: source.into(),
            target: "/data".into(),
            read_only: true,
            recursive: true,
            ignore_missing: false,
        }
    }

    fn device(path: &str) -> DeviceAccess {
        DeviceAccess {
            path: path.into(),
            read: true,
            write: true,
            mknod: true,
        }
    }

    fn refused_field(plan: &mut MountPlan) -> String {
        check(&policy(), plan).unwrap_err().field
    }

    #[test]
    fn a_bind_source_under_an_allowed_directory_passes() {
        let mut plan = plan();
        plan.bind_paths = vec![bind("/srv/shared"), bind("/srv/shared/a/b")];

        assert_eq!(check(&policy(), &mut plan), Ok(()));
    }

    #[test]
    fn a_bind_source_outside_the_allowed_directories_is_refused() {
        for source in ["/etc", "/srv/sharedx", "/srv"] {
            let mut plan = plan();
            plan.bind_paths = vec![bind(source)];

            assert_eq!(
                refused_field(&mut plan),
                "sandbox.mounts.bind_paths",
                "{source}"
            );
        }
    }

    #[test]
    fn no_bind_source_is_allowed_by_default() {
        let mut plan = plan();
        plan.bind_paths = vec![bind("/srv/shared")];

        let refusal = check(&FloorPolicy::default(), &mut plan).unwrap_err();

        assert!(refusal.reason.contains("bind_sources"), "{refusal}");
    }

    #[test]
    fn a_path_that_climbs_out_with_dot_dot_is_refused() {
        let mut plan = plan();
        plan.bind_paths = vec![bind("/srv/shared/../../etc")];

        assert_eq!(refused_field(&mut plan), "sandbox.mounts.bind_paths");
    }

    #[test]
    fn relative_unnormalized_root_and_nul_paths_are_refused() {
        for path in ["srv", "/srv//x", "/srv/./x", "/srv/", "//", "/a\0b"] {
            let mut plan = plan();
            plan.read_only_paths = vec![SandboxPath {
                path: path.into(),
                ignore_missing: false,
            }];

            assert_eq!(
                refused_field(&mut plan),
                "sandbox.mounts.read_only_paths",
                "{path:?}"
            );
        }
    }

    #[test]
    fn the_root_may_be_read_only_but_not_inaccessible_or_a_mount_point() {
        let root = SandboxPath {
            path: "/".into(),
            ignore_missing: false,
        };
        let mut read_only = plan();
        read_only.read_only_paths = vec![root.clone()];
        let mut hidden = plan();
        hidden.inaccessible_paths = vec![root];
        let mut tmpfs = plan();
        tmpfs.temporary_filesystems = vec![TemporaryFileSystem {
            path: "/".into(),
            read_only: false,
            mode: 0o755,
            size: 0,
        }];

        assert_eq!(check(&policy(), &mut read_only), Ok(()));
        assert_eq!(
            refused_field(&mut hidden),
            "sandbox.mounts.inaccessible_paths"
        );
        assert_eq!(
            refused_field(&mut tmpfs),
            "sandbox.mounts.temporary_filesystems"
        );
    }

    #[test]
    fn too_many_paths_are_refused() {
        let mut plan = plan();
        plan.inaccessible_paths = (0..=MAX_PATHS)
            .map(|i| SandboxPath {
                path: format!("/p{i}"),
                ignore_missing: true,
            })
            .collect();

        assert_eq!(
            refused_field(&mut plan),
            "sandbox.mounts.inaccessible_paths"
        );
    }

    #[test]
    fn only_listed_devices_are_allowed_and_never_mknod() {
        let mut allowed = plan();
        allowed.device_allow = vec![device("/dev/fuse")];
        let mut other = plan();
        other.device_allow = vec![device("/dev/sda")];

        assert_eq!(check(&policy(), &mut allowed), Ok(()));
        assert!(!allowed.device_allow[0].mknod);
        assert_eq!(refused_field(&mut other), "sandbox.mounts.device_allow");
    }

    #[test]
    fn a_temporary_file_system_is_clamped_in_size_and_bounded_in_mode() {
        let fs = |mode, size| TemporaryFileSystem {
            path: "/scratch".into(),
            read_only: false,
            mode,
            size,
        };
        let mut big = plan();
        big.temporary_filesystems = vec![fs(0o755, u64::MAX)];
        let mut odd = plan();
        odd.temporary_filesystems = vec![fs(0o17777, 0)];

        assert_eq!(check(&policy(), &mut big), Ok(()));
        assert_eq!(big.temporary_filesystems[0].size, MAX_TMPFS_BYTES);
        assert_eq!(
            refused_field(&mut odd),
            "sandbox.mounts.temporary_filesystems"
        );
    }

    #[test]
    fn a_shared_tmp_or_dev_is_refused() {
        let mut plan = plan();
        plan.private_devices = false;

        assert_eq!(refused_field(&mut plan), "sandbox.mounts");
    }

    #[test]
    fn asking_for_writable_kernel_tunables_still_gets_them_read_only() {
        let mut plan = plan();
        plan.protect_kernel_tunables = false;

        check(&policy(), &mut plan).unwrap();

        assert!(plan.protect_kernel_tunables);
    }
}
