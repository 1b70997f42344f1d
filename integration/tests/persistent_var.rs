//! The attachment's persistent /var through berthd: `STATE/var/<image>` kept by a plain
//! detach, removed by `berth detach --clean` (its layers by berth-helper, whose
//! RemoveVarState takes only the files of the block that owns them), and refused while a unit
//! runs. The services that write it need the image's own users (a uid block).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_testkit::{Harness, ImageBuilder};

/// A block id that is no host user's: the namespace root that owns a used upper layer.
const BLOCK_ROOT: u32 = 6_553_600;

fn attached(h: &Harness) -> PathBuf {
    let image = ImageBuilder::new(&h.dir().join("store"))
        .unit(
            "store.service",
            "[Service]\nExecStart=/bin/sh -c 'exec sleep 1000'\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", image.to_str().unwrap()]).unwrap();
    image
}

/// `STATE/var/store` as a run of the block leaves it: berthd's 0700 directory with an upper
/// layer of the block's files and a work directory of root's.
fn used_var(h: &Harness) -> PathBuf {
    let dir = h.state_dir().join("var/store");
    fs::create_dir_all(dir.join("upper/lib/store")).unwrap();
    fs::write(dir.join("upper/lib/store/data"), "kept").unwrap();
    fs::create_dir_all(dir.join("work/work")).unwrap();
    let berth = fs::metadata(h.state_dir()).unwrap();
    for p in [h.state_dir().join("var"), dir.clone()] {
        std::os::unix::fs::chown(&p, Some(berth.uid()), Some(berth.gid())).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
    }
    for p in [
        "upper",
        "upper/lib",
        "upper/lib/store",
        "upper/lib/store/data",
    ] {
        std::os::unix::fs::lchown(dir.join(p), Some(BLOCK_ROOT), Some(BLOCK_ROOT)).unwrap();
    }
    dir
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn detach_keeps_the_persistent_var_for_the_next_attach() {
    let h = Harness::start().unwrap();
    attached(&h);
    let var = used_var(&h);

    h.berth_ok(&["detach", "store"]).unwrap();

    assert!(exists(&var.join("upper/lib/store/data")));
}

#[test]
fn detach_clean_removes_the_persistent_var() {
    let h = Harness::start().unwrap();
    attached(&h);
    let var = used_var(&h);

    h.berth_ok(&["detach", "store", "--clean"]).unwrap();

    assert!(!exists(&var), "{:?}", fs::read_dir(&var).ok());
    assert_eq!(
        h.berth(&["is-attached", "store"]).unwrap().status.code(),
        Some(1)
    );
}

#[test]
fn detach_clean_of_an_attachment_without_one_just_detaches() {
    let h = Harness::start().unwrap();
    attached(&h);

    h.berth_ok(&["detach", "--clean", "store"]).unwrap();

    assert_eq!(
        h.berth(&["is-attached", "store"]).unwrap().status.code(),
        Some(1)
    );
}

#[test]
fn detach_clean_leaves_a_host_users_file_and_the_attachment() {
    let h = Harness::start().unwrap();
    attached(&h);
    let var = used_var(&h);
    let foreign = var.join("upper/lib/store/foreign");
    fs::write(&foreign, "a host user's").unwrap();
    std::os::unix::fs::chown(&foreign, Some(1000), Some(1000)).unwrap();

    let error = h.berth_err(&["detach", "store", "--clean"]).unwrap();

    assert!(error.contains("persistent /var"), "{error}");
    assert!(exists(&foreign));
    assert_eq!(
        h.berth(&["is-attached", "store"]).unwrap().status.code(),
        Some(0)
    );
}

#[test]
fn detach_clean_while_a_unit_runs_is_refused_without_now() {
    let h = Harness::start().unwrap();
    attached(&h);
    let var = used_var(&h);
    h.berth_ok(&["start", "store"]).unwrap();

    let error = h.berth_err(&["detach", "store", "--clean"]).unwrap();
    h.berth_ok(&["detach", "store", "--clean", "--now"])
        .unwrap();

    assert!(error.contains("store.service"), "{error}");
    assert!(!exists(&var));
}
