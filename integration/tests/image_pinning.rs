//! An attached image is the image that was attached: `start` refuses a path that names another
//! directory by now, and `attach` refuses (or, with `--force`, warns about) an image whose path
//! someone else could change. The attacker is an unprivileged user owning a directory above the
//! image.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_testkit::{Harness, ImageBuilder, as_user};

/// The unprivileged user who owns the directory the image lives in.
const USER: u32 = 4343;

/// The unit every image here carries: prints the image's `/marker` and exits.
const UNIT: &str = "[Service]\nType=oneshot\nExecStart=/bin/cat /marker\n";

/// An image `D/home/user/pinned` (root-owned, in a directory USER owns) whose marker says
/// `attached-image`, and a host tree `D/host-tree` (root's) whose marker says `host-tree`.
fn user_image(h: &Harness) -> (PathBuf, PathBuf) {
    let user_dir = h.dir().join("home/user");
    fs::create_dir_all(&user_dir).unwrap();
    let image = ImageBuilder::new(&user_dir.join("pinned"))
        .file("marker", "attached-image\n", 0o644)
        .unit("pinned.service", UNIT)
        .build()
        .unwrap();
    std::os::unix::fs::chown(&user_dir, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(&user_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let host_tree = ImageBuilder::new(&h.dir().join("host-tree"))
        .file("marker", "host-tree\n", 0o644)
        .unit("pinned.service", UNIT)
        .build()
        .unwrap();
    (image, host_tree)
}

/// As USER: moves the image aside and puts a symlink to `target` in its place.
fn swap_for_symlink(image: &Path, target: &Path) {
    let mut swap = as_user(USER, USER, &[]);
    swap.args(["sh", "-c", r#"mv "$1" "$1.orig" && ln -s "$2" "$1""#, "sh"])
        .arg(image)
        .arg(target);
    assert!(swap.status().unwrap().success());
}

#[test]
fn attach_refuses_an_image_in_a_directory_another_user_owns() {
    let h = Harness::start().unwrap();
    let (image, _) = user_image(&h);

    let err = h.berth_err(&["attach", image.to_str().unwrap()]).unwrap();

    assert!(
        err.starts_with("berth: ")
            && err.contains("home/user is owned by uid 4343")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(h.berth_ok(&["is-attached", "pinned"]).ok(), None);
}

#[test]
fn attach_with_force_warns_about_the_unsafe_path_and_attaches() {
    let h = Harness::start().unwrap();
    let (image, _) = user_image(&h);

    let out = h
        .berth(&["attach", "--force", image.to_str().unwrap()])
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("berth: warning:") && stderr.contains("home/user is owned by uid 4343"),
        "{stderr}"
    );
    assert_eq!(
        h.berth_ok(&["is-attached", "pinned"]).unwrap().trim(),
        "attached"
    );
}

#[test]
fn an_image_swapped_for_a_symlink_runs_as_attached_and_is_refused_after_a_restart() {
    let mut h = Harness::start().unwrap();
    let (image, host_tree) = user_image(&h);
    h.berth_ok(&["attach", "--force", image.to_str().unwrap()])
        .unwrap();
    swap_for_symlink(&image, &host_tree);

    // berthd holds the descriptor the CLI passed: the swap changes nothing it runs...
    h.berth_ok(&["start", "pinned"]).unwrap();
    // ...and once it has restarted, the path it reopens names another directory.
    h.restart_berthd().unwrap();
    let err_after_restart = h.berth_err(&["start", "pinned"]).unwrap();

    assert!(
        err_after_restart.starts_with("berth: ")
            && err_after_restart.contains("is no longer the image 'pinned'"),
        "{err_after_restart}"
    );
    let logs = h.berth_ok(&["logs", "pinned"]).unwrap();
    assert!(logs.contains("attached-image"), "{logs}");
    assert!(
        !logs.contains("host-tree"),
        "it ran from the host tree:\n{logs}"
    );
}

#[test]
fn attaching_again_records_what_the_path_names_now() {
    let h = Harness::start().unwrap();
    let (image, host_tree) = user_image(&h);
    h.berth_ok(&["attach", "--force", image.to_str().unwrap()])
        .unwrap();
    swap_for_symlink(&image, &host_tree);

    h.berth_ok(&["attach", "pinned"]).unwrap();
    h.berth_ok(&["start", "pinned"]).unwrap();

    let logs = h.berth_ok(&["logs", "pinned"]).unwrap();
    assert!(logs.contains("host-tree"), "{logs}");
}
