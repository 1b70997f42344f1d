//! Extension images (`attach IMAGE --extension EXT...`), end to end: an isolated berthd and
//! berth-helper per test, real overlayfs, the real CLI. TEST-29-PORTABLE's extension scenarios.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::time::Duration;

use berth_testkit::{ExtensionBuilder, Harness, ImageBuilder, RawFormat, raw_image};

const WAIT: Duration = Duration::from_secs(10);

/// A unit that prints `file` and sleeps.
fn cat_unit(file: &str) -> String {
    format!("[Service]\nExecStart=/bin/sh -c 'cat {file}; exec sleep 1000'\n")
}

/// Image `base` in the pool with `os_release`, and no units of its own but `base.service`.
fn base(h: &Harness, os_release: &str) {
    ImageBuilder::new(&h.images_dir().join("base"))
        .os_release(os_release)
        .unit("base.service", &cat_unit("/etc/os-release"))
        .build()
        .unwrap();
}

const BASE_OS: &str = "ID=berth-test\nVERSION_ID=1\n";

/// Extension `name` outside the pool, carrying `app.service` and its data file.
fn extension(h: &Harness, name: &str) -> ExtensionBuilder {
    ExtensionBuilder::new(&h.dir().join("ext").join(name))
        .unit("app.service", &cat_unit("/usr/share/app/data"))
        .file("usr/share/app/data", "data from the extension\n")
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn attached_with_app(h: &Harness) -> PathBuf {
    base(h, BASE_OS);
    let ext = extension(h, "app").build().unwrap();
    h.berth_ok(&["attach", "base", "app", "--extension", path(&ext)])
        .unwrap();
    ext
}

/// Waits until `app.service`'s log shows the data file the extension carries (it ran and read
/// the file through the overlay).
fn wait_for_the_extension_data(h: &Harness) {
    h.wait_for(
        || {
            Ok(h.berth_ok(&["logs", "app"])?
                .contains("data from the extension"))
        },
        WAIT,
    )
    .unwrap();
}

#[test]
fn a_unit_from_an_extension_runs_and_sees_the_extension_files() {
    let h = Harness::start().unwrap();
    attached_with_app(&h);

    h.berth_ok(&["start", "app"]).unwrap();

    wait_for_the_extension_data(&h);
    assert_eq!(h.status_json("app").unwrap()["image"], "base");
}

#[test]
fn the_image_stays_visible_under_its_extension() {
    let h = Harness::start().unwrap();
    base(&h, BASE_OS);
    let ext = extension(&h, "app")
        .unit("app.service", &cat_unit("/etc/os-release"))
        .build()
        .unwrap();
    h.berth_ok(&["attach", "base", "app", "--extension", path(&ext)])
        .unwrap();

    h.berth_ok(&["start", "app"]).unwrap();

    h.wait_for(
        || Ok(h.berth_ok(&["logs", "app"])?.contains("ID=berth-test")),
        WAIT,
    )
    .unwrap();
}

#[test]
fn an_extension_for_another_id_is_refused() {
    let h = Harness::start().unwrap();
    base(&h, BASE_OS);
    let ext = extension(&h, "app").release("ID=other\n").build().unwrap();

    let err = h
        .berth_err(&["attach", "base", "app", "--extension", path(&ext)])
        .unwrap();

    assert!(
        err.contains("ID=other") && err.contains("ID=berth-test"),
        "{err}"
    );
    assert!(
        h.berth_json(&["list"])
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_extension_for_another_version_id_is_refused() {
    let h = Harness::start().unwrap();
    base(&h, BASE_OS);
    let ext = extension(&h, "app")
        .release("ID=berth-test\nVERSION_ID=2\n")
        .build()
        .unwrap();

    let err = h
        .berth_err(&["attach", "base", "app", "--extension", path(&ext)])
        .unwrap();

    assert!(err.contains("VERSION_ID=2"), "{err}");
}

#[test]
fn an_extension_for_another_sysext_level_is_refused() {
    let h = Harness::start().unwrap();
    base(&h, "ID=berth-test\nVERSION_ID=1\nSYSEXT_LEVEL=1.0\n");
    let ext = extension(&h, "app")
        .release("ID=berth-test\nSYSEXT_LEVEL=2.0\n")
        .build()
        .unwrap();

    let err = h
        .berth_err(&["attach", "base", "app", "--extension", path(&ext)])
        .unwrap();

    assert!(err.contains("SYSEXT_LEVEL=2.0"), "{err}");
}

#[test]
fn a_release_file_named_otherwise_needs_force() {
    let h = Harness::start().unwrap();
    base(&h, BASE_OS);
    // TEST-29's app10.raw carrying extension-release.app0.
    let ext = extension(&h, "app10").release_name("app0").build().unwrap();
    let args = ["attach", "base", "app", "--extension", path(&ext)];

    let strict = h.berth_err(&args).unwrap();
    let forced = h.berth(&[&args[..], &["--force"]].concat()).unwrap();

    assert!(strict.contains("extension-release.app10"), "{strict}");
    assert!(forced.status.success(), "{forced:?}");
    h.berth_ok(&["start", "app"]).unwrap();
    wait_for_the_extension_data(&h);
}

#[test]
fn an_extension_prefix_is_allowed_only_with_the_extension() {
    let h = Harness::start().unwrap();
    base(&h, "ID=berth-test\nVERSION_ID=1\nPORTABLE_PREFIXES=base\n");
    let ext = extension(&h, "app")
        .release("ID=berth-test\nPORTABLE_PREFIXES=app\n")
        .build()
        .unwrap();

    let without = h.berth_err(&["attach", "base", "app"]).unwrap();
    let with = h.berth(&["attach", "base", "app", "--extension", path(&ext)]);

    assert!(without.contains("PORTABLE_PREFIXES"), "{without}");
    assert!(with.unwrap().status.success());
}

#[test]
fn detach_without_the_same_extensions_is_refused() {
    let h = Harness::start().unwrap();
    let ext = attached_with_app(&h);

    let err = h.berth_err(&["detach", "base"]).unwrap();

    assert!(err.contains("attached with app"), "{err}");
    assert_eq!(h.berth_json(&["list"]).unwrap()[0]["unit"], "app.service");
    h.berth_ok(&["detach", "base", "--extension", path(&ext)])
        .unwrap();
    assert!(
        h.berth_json(&["list"])
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn detach_now_with_other_extensions_stops_nothing() {
    let h = Harness::start().unwrap();
    attached_with_app(&h);
    h.berth_ok(&["start", "app"]).unwrap();

    h.berth_err(&["detach", "--now", "base"]).unwrap();

    assert_eq!(h.status_json("app").unwrap()["state"], "running");
}

#[test]
fn is_attached_needs_the_same_extensions() {
    let h = Harness::start().unwrap();
    let ext = attached_with_app(&h);

    let without = h.berth(&["is-attached", "base"]).unwrap();
    let with = h
        .berth(&["is-attached", "base", "--extension", path(&ext)])
        .unwrap();

    assert_eq!(without.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&without.stdout).trim(), "detached");
    assert_eq!(with.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&with.stdout).trim(), "attached");
}

#[test]
fn the_last_extension_lies_on_top() {
    let h = Harness::start().unwrap();
    base(&h, BASE_OS);
    let lower = extension(&h, "lower")
        .file("usr/share/app/data", "lower\n")
        .build()
        .unwrap();
    let upper = ExtensionBuilder::new(&h.dir().join("ext").join("upper"))
        .file("usr/share/app/data", "upper\n")
        .build()
        .unwrap();
    h.berth_ok(&[
        "attach",
        "base",
        "app",
        "--extension",
        path(&lower),
        "--extension",
        path(&upper),
    ])
    .unwrap();

    h.berth_ok(&["start", "app"]).unwrap();

    h.wait_for(|| Ok(h.berth_ok(&["logs", "app"])?.contains("upper")), WAIT)
        .unwrap();
    assert!(!h.berth_ok(&["logs", "app"]).unwrap().contains("lower"));
}

#[test]
fn an_extension_swapped_after_attach_runs_as_attached_and_is_refused_after_a_restart() {
    let mut h = Harness::start().unwrap();
    let ext = attached_with_app(&h);
    std::fs::rename(&ext, h.dir().join("ext/app.old")).unwrap();
    extension(&h, "app")
        .file("usr/share/app/data", "data from the swapped extension\n")
        .build()
        .unwrap();

    // berthd holds the descriptor the CLI passed: the swap changes nothing it runs...
    h.berth_ok(&["start", "app"]).unwrap();
    wait_for_the_extension_data(&h);
    h.berth_ok(&["stop", "app"]).unwrap();
    // ...and once it has restarted, the path it reopens names another directory.
    h.restart_berthd().unwrap();
    let err = h.berth_err(&["start", "app"]).unwrap();

    assert!(err.contains("no longer the image 'app'"), "{err}");
    let logs = h.berth_ok(&["logs", "app"]).unwrap();
    assert!(!logs.contains("swapped"), "{logs}");
}

#[test]
fn reattach_onto_a_new_version_keeps_the_extension() {
    let h = Harness::start().unwrap();
    let ext = attached_with_app(&h);
    let v2 = ImageBuilder::new(&h.dir().join("base_2"))
        .os_release(BASE_OS)
        .build()
        .unwrap();

    let reply = h.berth_json(&["reattach", path(&v2)]).unwrap();

    assert_eq!(reply["updated"], serde_json::json!(["app.service"]));
    h.berth_ok(&["start", "app"]).unwrap();
    wait_for_the_extension_data(&h);
    assert!(
        h.berth(&["is-attached", "base", "--extension", path(&ext)])
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn reattach_onto_a_version_the_extension_does_not_fit_is_refused() {
    let h = Harness::start().unwrap();
    attached_with_app(&h);
    let v2 = ImageBuilder::new(&h.dir().join("base_2"))
        .os_release("ID=berth-test\nVERSION_ID=2\n")
        .build()
        .unwrap();

    let err = h.berth_err(&["reattach", path(&v2)]).unwrap();

    assert!(err.contains("VERSION_ID=1"), "{err}");
    assert_eq!(h.berth_json(&["list"]).unwrap()[0]["unit"], "app.service");
}

#[test]
fn an_attachment_with_extensions_starts_after_a_berthd_restart() {
    let mut h = Harness::start().unwrap();
    let ext = attached_with_app(&h);

    h.restart_berthd().unwrap();

    h.berth_ok(&["start", "app"]).unwrap();
    wait_for_the_extension_data(&h);
    assert!(
        h.berth(&["is-attached", "base", "--extension", path(&ext)])
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn a_release_file_symlinked_to_a_host_file_is_not_read_from_the_host() {
    let h = Harness::start().unwrap();
    base(&h, BASE_OS);
    let ext = extension(&h, "app").release_name("other").build().unwrap();
    let release = ext.join("usr/lib/extension-release.d/extension-release.app");
    // The host file fits (the image's own os-release); resolved inside the extension it is not
    // there at all.
    let host = h.images_dir().join("base/etc/os-release");
    std::os::unix::fs::symlink(&host, &release).unwrap();

    let err = h
        .berth_err(&["attach", "base", "app", "--extension", path(&ext)])
        .unwrap();

    assert!(
        err.contains("lacks /usr/lib/extension-release.d/extension-release.app"),
        "{err}"
    );
    assert!(
        h.berth_json(&["list"])
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_versioned_extension_is_named_without_its_version() {
    let h = Harness::start().unwrap();
    base(&h, BASE_OS);
    // TEST-29's app0_1.0.raw carrying extension-release.app0: no --force needed.
    let ext = extension(&h, "app_1.0").build().unwrap();

    h.berth_ok(&["attach", "base", "app", "--extension", path(&ext)])
        .unwrap();

    assert!(
        h.berth(&["is-attached", "base", "--extension", "app"])
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn a_squashfs_extension_is_mounted_and_laid_over_a_raw_image() {
    let h = Harness::start().unwrap();
    let trees = h.dir().join("trees");
    let base_tree = ImageBuilder::new(&trees.join("base"))
        .os_release(BASE_OS)
        .build()
        .unwrap();
    let ext_tree = extension(&h, "app").build().unwrap();
    let base = raw_image(
        &base_tree,
        &h.images_dir().join("base.raw"),
        RawFormat::Squashfs,
    )
    .unwrap();
    let ext = raw_image(&ext_tree, &h.dir().join("app_2.raw"), RawFormat::Squashfs).unwrap();

    h.berth_ok(&["attach", path(&base), "app", "--extension", path(&ext)])
        .unwrap();
    h.berth_ok(&["start", "app"]).unwrap();

    wait_for_the_extension_data(&h);
}
