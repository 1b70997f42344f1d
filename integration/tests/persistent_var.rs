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
    // Level 2, as these tests were written: the upper layer they make up belongs to a block
    // (BLOCK_ROOT's) that need not be the one level 3 allocates for the attachment.
    attached_with(h, &["--profile", "default@2"])
}

/// [`attached`], attached with `attach_args` (`--profile default@2`).
fn attached_with(h: &Harness, attach_args: &[&str]) -> PathBuf {
    let image = ImageBuilder::new(&h.dir().join("store"))
        .unit(
            "store.service",
            "[Service]\nExecStart=/bin/sh -c 'exec sleep 1000'\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&[&["attach", image.to_str().unwrap()], attach_args].concat())
        .unwrap();
    image
}

/// `STATE/var/store/store.service` as a run of the block leaves it: berthd's 0700
/// directories with an upper layer of the block's files and a work directory of root's.
fn used_var(h: &Harness) -> PathBuf {
    let dir = h.state_dir().join(UNIT_VAR);
    fs::create_dir_all(dir.join("upper/lib/store")).unwrap();
    fs::write(dir.join("upper/lib/store/data"), "kept").unwrap();
    fs::create_dir_all(dir.join("work/work")).unwrap();
    let berth = fs::metadata(h.state_dir()).unwrap();
    for p in [
        h.state_dir().join("var"),
        h.state_dir().join("var/store"),
        dir.clone(),
    ] {
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

/// Where store.service's persistent /var lives, below its attachment's `STATE/var/store`.
const UNIT_VAR: &str = "var/store/store.service";

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

/// The image `<name>_<version>` under `versions/`, its `store.service` (a oneshot, of
/// `directives` besides ExecStart=) running `script` as root of its own namespace.
fn version(h: &Harness, version: u32, directives: &str, script: &str) -> PathBuf {
    ImageBuilder::new(&h.dir().join(format!("versions/store_{version}")))
        .dir("var/lib/app", 0o755)
        .file(
            "var/lib/app/seed",
            format!("from version {version}\n"),
            0o644,
        )
        .dir("var/lib/other", 0o755)
        .unit(
            "store.service",
            &format!("[Service]\nType=oneshot\n{directives}\nExecStart=/bin/sh -c '{script}'\n"),
        )
        .build()
        .unwrap()
}

/// Starts store.service (a oneshot: the start returns once it ran) and returns what that run
/// printed.
fn run(h: &Harness) -> Vec<String> {
    let before = logged(h).len();
    h.berth_ok(&["start", "store"]).unwrap();
    logged(h)[before..].to_vec()
}

fn logged(h: &Harness) -> Vec<String> {
    h.berth_ok(&["logs", "store", "-o", "cat", "-n", "1000"])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn attach_v(h: &Harness, image: &Path) {
    h.berth_ok(&["attach", "--profile", "default@3", image.to_str().unwrap()])
        .unwrap();
}

/// Prints the notes of the earlier runs and the image's seed, then adds one.
const NOTES: &str = "echo notes: $(cat /var/lib/app/notes 2>/dev/null | wc -l); \
                     cat /var/lib/app/seed; echo note >> /var/lib/app/notes";

#[test]
fn what_a_service_writes_under_var_lib_survives_restarts_and_reattach() {
    let mut h = Harness::start().unwrap();
    let v1 = version(&h, 1, "", NOTES);
    let v2 = version(&h, 2, "", NOTES);
    attach_v(&h, &v1);

    let first = run(&h);
    let second = run(&h);
    h.restart_berthd().unwrap();
    let after_restart = run(&h);
    h.berth_ok(&["reattach", v2.to_str().unwrap()]).unwrap();
    let after_reattach = run(&h);

    assert_eq!(first, ["notes: 0", "from version 1"]);
    assert_eq!(second, ["notes: 1", "from version 1"]);
    assert_eq!(after_restart, ["notes: 2", "from version 1"]);
    assert_eq!(after_reattach, ["notes: 3", "from version 2"]);
    let status = h.status_json("store").unwrap();
    let var = h.state_dir().join(UNIT_VAR);
    assert_eq!(status["var_path"], var.to_str().unwrap());
}

#[test]
fn tmp_var_tmp_and_run_are_empty_at_every_start() {
    let h = Harness::start().unwrap();
    let script = "ls -A /tmp /var/tmp /run/app | grep -c left; \
                  touch /tmp/left /var/tmp/left /run/app/left /var/lib/app/left";
    attach_v(&h, &version(&h, 1, "RuntimeDirectory=app", script));

    run(&h);
    let second = run(&h);

    // What it left under /var/lib is kept, as the control.
    assert_eq!(second, ["0"]);
    assert!(exists(
        &h.state_dir().join(UNIT_VAR).join("upper/lib/app/left")
    ));
}

#[test]
fn detach_clean_and_attach_again_start_from_the_image_s_var() {
    let h = Harness::start().unwrap();
    let v1 = version(&h, 1, "", NOTES);
    attach_v(&h, &v1);
    run(&h);
    run(&h);

    h.berth_ok(&["detach", "--clean", "store"]).unwrap();
    let cleaned = !exists(&h.state_dir().join("var/store"));
    attach_v(&h, &v1);
    let fresh = run(&h);

    assert!(cleaned);
    assert_eq!(fresh, ["notes: 0", "from version 1"]);
}

#[test]
fn protect_system_strict_with_read_write_paths_leaves_exactly_those_writable() {
    let h = Harness::start().unwrap();
    let script = "for f in /var/lib/app/new /var/lib/other/new /var/new; do \
                  touch $f 2>/dev/null && echo $f; done; echo end";
    let strict = "ProtectSystem=strict\nReadWritePaths=/var/lib/app";
    attach_v(&h, &version(&h, 1, strict, script));

    let printed = run(&h);

    assert_eq!(printed, ["/var/lib/app/new", "end"]);
}

#[test]
fn detach_clean_gives_the_uid_block_back() {
    let h = Harness::start().unwrap();
    attach_v(&h, &version(&h, 1, "", NOTES));
    run(&h);
    let held = h.status_json("store").unwrap()["uid_block"]["first"].clone();
    let next = ImageBuilder::new(&h.dir().join("next"))
        .unit(
            "next.service",
            "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        )
        .build()
        .unwrap();

    h.berth_ok(&["detach", "--clean", "store"]).unwrap();
    attach_v(&h, &next);
    h.berth_ok(&["start", "next"]).unwrap();

    assert!(held.is_u64(), "{held}");
    assert_eq!(h.status_json("next").unwrap()["uid_block"]["first"], held);
}

#[test]
fn a_state_directory_is_bound_over_the_persistent_var() {
    let h = Harness::start().unwrap();
    let script = "echo kept > /var/lib/app/state; echo $STATE_DIRECTORY";
    attach_v(&h, &version(&h, 1, "StateDirectory=app", script));

    let printed = run(&h);

    assert_eq!(printed, ["/var/lib/app"]);
    let state = h.state_dir();
    assert!(exists(&state.join("private/app/state")));
    assert!(!exists(&state.join(UNIT_VAR).join("upper/lib/app/state")));
}
