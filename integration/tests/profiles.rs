//! Profiles end to end: `attach --profile` records the profile with its version, the admin's
//! directory (berthd.toml `profiles_dir`) overrides and adds profiles, `berth profile
//! list|show`, and `berth security UNIT`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;

use berth_testkit::{Harness, ImageBuilder, busybox_image};

/// A berthd whose admin profile directory is `profiles` (which need not exist).
fn harness_with_profiles(profiles: &Path) -> Harness {
    Harness::start_with_config(&format!("profiles_dir = \"{}\"\n", profiles.display())).unwrap()
}

fn profile_of(h: &Harness, unit: &str) -> String {
    h.status_json(unit).unwrap()["profile"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn attach_with_a_profile_records_it_with_its_version() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    h.berth_ok(&["attach", "hello", "--profile", "strict"])
        .unwrap();

    assert_eq!(profile_of(&h, "hello"), "strict@3");
}

#[test]
fn an_attach_gets_level_3_and_an_older_level_by_its_reference() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    busybox_image(&h.images_dir(), "other").unwrap();

    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["attach", "other", "--profile", "default@2"])
        .unwrap();

    assert_eq!(profile_of(&h, "hello"), "default@3");
    assert_eq!(profile_of(&h, "other"), "default@2");
}

#[test]
fn an_unknown_profile_is_refused_and_nothing_is_attached() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    let err = h
        .berth_err(&["attach", "hello", "--profile", "lax"])
        .unwrap();

    assert!(err.contains("no profile 'lax'"), "{err}");
    assert_eq!(
        h.berth(&["is-attached", "hello"]).unwrap().status.code(),
        Some(1)
    );
}

#[test]
fn profile_list_shows_the_built_in_profiles_and_the_admins() {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("web.conf"),
        "# for web servers\n[Service]\n",
    )
    .unwrap();
    std::fs::write(
        profiles.path().join("strict@1.conf"),
        "# the admin's strict\n",
    )
    .unwrap();
    let h = harness_with_profiles(profiles.path());

    let list = h.berth_json(&["profile", "list"]).unwrap();

    let shown: Vec<(String, Option<String>)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let path = p["path"].as_str().map(str::to_owned);
            (p["reference"].as_str().unwrap().to_owned(), path)
        })
        .collect();
    let admins = |name: &str| Some(profiles.path().join(name).display().to_string());
    assert_eq!(
        shown,
        [
            ("default@1".to_owned(), None),
            ("default@2".to_owned(), None),
            ("default@3".to_owned(), None),
            ("nonetwork@1".to_owned(), None),
            ("nonetwork@2".to_owned(), None),
            ("nonetwork@3".to_owned(), None),
            ("strict@1".to_owned(), admins("strict@1.conf")),
            ("strict@2".to_owned(), None),
            ("strict@3".to_owned(), None),
            ("trusted@1".to_owned(), None),
            ("trusted@2".to_owned(), None),
            ("trusted@3".to_owned(), None),
            ("web@1".to_owned(), admins("web.conf")),
        ]
    );
    // default@1 with the host network: 0.9 (systemd-analyze says 1.0, see the README).
    assert_eq!(list[0]["exposure"], 9);
    let text = h.berth_ok(&["profile", "list"]).unwrap();
    assert!(text.contains("for web servers"), "{text}");
    assert!(text.contains("default@1    0.9       built-in"), "{text}");
}

#[test]
fn profile_show_prints_the_newest_version_or_the_one_named() {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("default@3.conf"),
        "# default, tighter\n",
    )
    .unwrap();
    let h = harness_with_profiles(profiles.path());

    let newest = h.berth_ok(&["profile", "show", "default"]).unwrap();
    let first = h.berth_ok(&["profile", "show", "default@1"]).unwrap();

    assert!(newest.starts_with("# default@3 ("), "{newest}");
    assert!(newest.contains("# default, tighter"), "{newest}");
    assert!(
        first.starts_with("# default@1 (built-in, exposure 0.9)"),
        "{first}"
    );
    assert!(
        first.contains("\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n"),
        "{first}"
    );
    let err = h.berth_err(&["profile", "show", "default@4"]).unwrap();
    assert!(err.contains("no profile 'default@4'"), "{err}");
}

#[test]
fn a_newer_version_goes_to_new_attachments_and_old_ones_keep_theirs_across_reattach() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness_with_profiles(profiles.path());
    let versions = h.dir().join("versions");
    let v1 = ImageBuilder::new(&versions.join("foo_1"))
        .unit("foo.service", "[Service]\nExecStart=/bin/sleep 1000\n")
        .build()
        .unwrap();
    let v2 = ImageBuilder::new(&versions.join("foo_2"))
        .unit("foo.service", "[Service]\nExecStart=/bin/sleep 1000\n")
        .build()
        .unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", path(&v1)]).unwrap();

    // A newer berth (here: the admin) brings default@4.
    std::fs::write(
        profiles.path().join("default@4.conf"),
        "# default@4\n[Service]\n",
    )
    .unwrap();
    h.berth_ok(&["reattach", path(&v2)]).unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    assert_eq!(profile_of(&h, "foo"), "default@3");
    assert_eq!(profile_of(&h, "hello"), "default@4");
}

#[test]
fn security_rates_the_units_sandbox_check_by_check() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    let report = h.berth_json(&["security", "hello"]).unwrap();
    let text = h.berth_ok(&["security", "hello"]).unwrap();

    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 81);
    assert_eq!(report["unit"], "hello.service");
    assert_eq!(report["profile"], "default@3");
    let exposure = report["exposure"].as_i64().unwrap();
    assert!((0..=100).contains(&exposure));
    let network = checks
        .iter()
        .find(|c| c["id"] == "PrivateNetwork=")
        .unwrap();
    assert_eq!(
        (network["weight"].as_i64(), network["badness"].as_i64()),
        (Some(2500), Some(1))
    );
    let overall = format!(
        "→ Overall exposure level for hello.service (profile default@3): {}.{} {}",
        exposure / 10,
        exposure % 10,
        report["rating"].as_str().unwrap()
    );
    assert!(text.trim_end().ends_with(&overall), "{text}");
    assert!(text.contains("✗ PrivateNetwork="), "{text}");
}

/// The `NotifyAccess=` check of `berth security UNIT` for a unit with `notify_access`.
fn notify_access_badness(h: &Harness, name: &str, notify_access: &str) -> Option<i64> {
    ImageBuilder::new(&h.images_dir().join(name))
        .unit(
            &format!("{name}.service"),
            &format!("[Service]\nExecStart=/bin/sleep 1000\n{notify_access}"),
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", name]).unwrap();
    let report = h.berth_json(&["security", name]).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let check = checks.iter().find(|c| c["id"] == "NotifyAccess=").unwrap();
    check["badness"].as_i64()
}

#[test]
fn security_counts_notify_access_all_against_the_unit() {
    let h = Harness::start().unwrap();

    let all = notify_access_badness(&h, "notifyall", "NotifyAccess=all\n");
    let main = notify_access_badness(&h, "notifymain", "NotifyAccess=main\n");

    assert_eq!((all, main), (Some(1), Some(0)));
}

#[test]
fn security_exits_1_above_the_threshold_and_0_at_or_below_it() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    let exposure = h.berth_json(&["security", "hello"]).unwrap()["exposure"]
        .as_i64()
        .unwrap();

    let at = h
        .berth(&["security", "hello", "--threshold", &exposure.to_string()])
        .unwrap();
    let below = h
        .berth(&[
            "security",
            "hello",
            "--threshold",
            &(exposure - 1).to_string(),
        ])
        .unwrap();

    assert_eq!(at.status.code(), Some(0));
    assert_eq!(below.status.code(), Some(1));
}

#[test]
fn security_of_a_unit_that_is_not_attached_says_so() {
    let h = Harness::start().unwrap();

    let err = h.berth_err(&["security", "nothere"]).unwrap();

    assert!(err.contains("no attached unit 'nothere.service'"), "{err}");
}

/// What check `id` of `unit`'s security report found.
fn badness(h: &Harness, unit: &str, id: &str) -> i64 {
    let report = h.berth_json(&["security", unit]).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let check = checks.iter().find(|c| c["id"] == id).unwrap();
    check["badness"].as_i64().unwrap()
}

#[test]
fn a_units_sandbox_starts_from_its_profile() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    busybox_image(&h.images_dir(), "other").unwrap();

    h.berth_ok(&["attach", "hello", "--profile", "strict"])
        .unwrap();
    h.berth_ok(&["attach", "other"]).unwrap();

    let strict = h.berth_json(&["profile", "show", "strict"]).unwrap();
    let report = h.berth_json(&["security", "hello"]).unwrap();
    assert_eq!(report["exposure"], strict["profile"]["exposure"]);
    assert_eq!(badness(&h, "hello", "PrivateNetwork="), 0);
    assert_eq!(badness(&h, "other", "PrivateNetwork="), 1);
    assert_eq!(badness(&h, "other", "SystemCallFilter=~@mount"), 0);
}

#[test]
fn a_unit_keeps_its_profile_versions_sandbox_until_it_is_attached_again() {
    let profiles = tempfile::tempdir().unwrap();
    let mut h = harness_with_profiles(profiles.path());
    let versions = h.dir().join("versions");
    let sleeper = "[Service]\nExecStart=/bin/sleep 1000\n";
    let v1 = ImageBuilder::new(&versions.join("foo_1"))
        .unit("foo.service", sleeper)
        .build()
        .unwrap();
    let v2 = ImageBuilder::new(&versions.join("foo_2"))
        .unit("foo.service", sleeper)
        .build()
        .unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    // The admin's own profile, so that its newest version is the test's whatever the
    // built-in ones are.
    std::fs::write(profiles.path().join("web@1.conf"), "# web\n[Service]\n").unwrap();
    h.berth_ok(&["attach", path(&v1), "--profile", "web"])
        .unwrap();

    // A newer berth (here: the admin) brings a stricter web@2.
    let stricter = "# web, without the host network\n[Service]\nPrivateNetwork=yes\n";
    std::fs::write(profiles.path().join("web@2.conf"), stricter).unwrap();
    h.berth_ok(&["reattach", path(&v2)]).unwrap();
    h.restart_berthd().unwrap();
    h.berth_ok(&["attach", "hello", "--profile", "web"])
        .unwrap();

    assert_eq!(badness(&h, "foo", "PrivateNetwork="), 1);
    assert_eq!(badness(&h, "hello", "PrivateNetwork="), 0);
}

#[test]
fn a_host_drop_in_tightens_the_units_profile_and_a_loosening_is_ignored() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    h.berth_ok(&["set-property", "hello", "PrivateNetwork=yes"])
        .unwrap();
    let loosen = h
        .berth(&["set-property", "hello", "ProtectHome=no"])
        .unwrap();

    assert_eq!(badness(&h, "hello", "PrivateNetwork="), 0);
    assert!(!loosen.status.success());
    assert_eq!(badness(&h, "hello", "ProtectHome="), 0);
}

#[test]
fn a_unit_attached_with_an_admins_profile_is_still_attached_after_a_berthd_restart() {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(profiles.path().join("web.conf"), "# web\n[Service]\n").unwrap();
    let mut h = harness_with_profiles(profiles.path());
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello", "--profile", "web"])
        .unwrap();

    h.restart_berthd().unwrap();

    assert_eq!(profile_of(&h, "hello"), "web@1");
}
