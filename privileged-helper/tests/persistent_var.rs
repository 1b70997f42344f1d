//! The attachment's persistent /var in real sandboxes (needs root): an overlay over the
//! image's /var whose upper layer lives in the directory berthd passes, kept from one run to
//! the next, while /run and /tmp start empty every time.
//!
//! The service runs as the namespace root of a uid block (its first id), in the block's user
//! namespace, over the image idmapped onto it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_protocol::sandbox::{ProtectSystem, SandboxPath, UidBlock};
use fixture::*;
use tempfile::TempDir;

const BLOCK: UidBlock = UidBlock {
    first: 6_553_600,
    size: berth_protocol::sandbox::UID_BLOCK_SIZE,
};

/// `STATE/var/<image>` as berthd makes it: 0700, owned by the manager.
fn var_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(MANAGER_UID), Some(MANAGER_UID)).unwrap();
    dir
}

/// A busybox image with `/var/lib/seed` in its own /var.
fn image_with_var() -> TempDir {
    let image = busybox_image();
    fs::create_dir_all(image.path().join("var/lib")).unwrap();
    fs::write(image.path().join("var/lib/seed"), "from the image\n").unwrap();
    image
}

/// Runs `script` to its end in a sandbox with the persistent /var of `var`, as the block's
/// root, under `protect_system` with `read_write_paths`; its stdout lines.
fn run(
    var: &Path,
    script: &str,
    protect_system: ProtectSystem,
    read_write_paths: &[&str],
) -> Vec<String> {
    require_root();
    let mut fixture = Fixture::with_image("var.service", image_with_var());
    fixture.persistent_var = Some(var.to_owned());
    let mut spec = fixture.spec(&["/bin/sh", "-c", script]);
    let identity = &mut spec.sandbox.identity;
    (identity.uid, identity.gid, identity.user_block) = (BLOCK.first, BLOCK.first, Some(BLOCK));
    spec.sandbox.mounts.persistent_var = true;
    spec.sandbox.mounts.protect_system = protect_system;
    spec.sandbox.mounts.read_write_paths = read_write_paths
        .iter()
        .map(|p| SandboxPath {
            path: (*p).into(),
            ignore_missing: false,
        })
        .collect();
    fixture.try_launch_spec(&spec).unwrap();
    fixture.wait_exit();
    fixture.stdout_lines()
}

#[test]
fn a_file_written_under_var_is_there_at_the_next_run() {
    let var = var_dir();
    run(
        var.path(),
        "echo kept > /var/note && mkdir -p /var/lib/app && echo deep > /var/lib/app/data",
        ProtectSystem::Full,
        &[],
    );

    let seen = run(
        var.path(),
        "cat /var/note /var/lib/app/data /var/lib/seed",
        ProtectSystem::Full,
        &[],
    );

    assert_eq!(seen, ["kept", "deep", "from the image"]);
    // The upper layer is not idmapped: on disk, root of the namespace is the block's first id,
    // also for /var/lib, copied up from the idmapped image.
    for file in ["upper/note", "upper/lib", "upper/lib/app/data"] {
        let on_disk = fs::metadata(var.path().join(file)).unwrap();
        assert_eq!(on_disk.uid(), BLOCK.first, "{file}");
    }
}

#[test]
fn run_and_tmp_start_empty_at_every_run() {
    let var = var_dir();
    run(
        var.path(),
        "touch /run/left /tmp/left",
        ProtectSystem::Full,
        &[],
    );

    let seen = run(
        var.path(),
        "for f in /run/left /tmp/left; do test -e $f && echo $f; done; echo done",
        ProtectSystem::Full,
        &[],
    );

    assert_eq!(seen, ["done"]);
}

#[test]
fn protect_system_strict_leaves_only_the_read_write_paths_of_var_writable() {
    let var = var_dir();
    run(
        var.path(),
        "mkdir /var/app /var/other",
        ProtectSystem::Full,
        &[],
    );

    let seen = run(
        var.path(),
        "for f in /var/app/f /var/other/f /var/f; do touch $f 2>/dev/null && echo $f; done; \
         echo done",
        ProtectSystem::Strict,
        &["/var/app"],
    );

    assert_eq!(seen, ["/var/app/f", "done"]);
}

#[test]
fn a_persistent_var_in_use_by_a_running_unit_is_not_mounted_twice() {
    require_root();
    let var = var_dir();
    let mut first = Fixture::with_image("first.service", image_with_var());
    first.persistent_var = Some(var.path().to_owned());
    let mut spec = first.spec(&["/bin/sleep", "30"]);
    let identity = &mut spec.sandbox.identity;
    (identity.uid, identity.gid, identity.user_block) = (BLOCK.first, BLOCK.first, Some(BLOCK));
    spec.sandbox.mounts.persistent_var = true;
    first.try_launch_spec(&spec).unwrap();
    let mut second = Fixture::with_image("second.service", image_with_var());
    second.persistent_var = Some(var.path().to_owned());

    let refused = second.try_launch_spec(&spec);

    let error = refused.unwrap_err();
    assert!(error.contains("in use by another running unit"), "{error}");
}
