//! The image's own users, berthd's side (issue 9 item 1): from profile level 3 a unit runs as
//! a user of its image's /etc/passwd in a block of host uids per image name, which status
//! shows, which survives berthd restarts and reattach, and which DynamicUser=yes units do
//! without.
//!
//! The test berthd reads a `default@3` of the test's own (berthd.toml `profiles_dir`), so the
//! level is the one under test whatever the built-in profiles are.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    redis:x:100:101::/var/lib/redis:/usr/sbin/nologin\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nadm:x:4:redis\nredis:x:101:\nnogroup:x:65534:\n";

/// A level-3 profile of the test's own: the sandbox of default@2 matters not here.
const LEVEL_3: &str = "# level 3 for the image-users tests\n[Service]\nNoNewPrivileges=yes\n";

/// A berthd whose `default@3` is [`LEVEL_3`]; the directory must outlive it.
fn harness(profiles: &tempfile::TempDir) -> Harness {
    std::fs::write(profiles.path().join("default@3.conf"), LEVEL_3).unwrap();
    Harness::start_with_config(&format!(
        "profiles_dir = \"{}\"\n",
        profiles.path().display()
    ))
    .unwrap()
}

/// Image `name` with the users above and unit `<name>.service` holding `directives`.
fn image_with_users(h: &Harness, name: &str, directives: &str) {
    let unit =
        format!("[Service]\nType=simple\n{directives}\nExecStart=/bin/sh -c 'exec sleep 1000'\n");
    ImageBuilder::new(&h.images_dir().join(name))
        .file("etc/passwd", PASSWD, 0o644)
        .file("etc/group", GROUP, 0o644)
        .unit(&format!("{name}.service"), &unit)
        .build()
        .unwrap();
}

fn attach_at_level_3(h: &Harness, name: &str) -> String {
    h.berth_ok(&["attach", name, "--profile", "default@3"])
        .unwrap()
}

fn block_first(h: &Harness, unit: &str) -> Option<u64> {
    h.status_json(unit).unwrap()["uid_block"]["first"].as_u64()
}

fn state_file(h: &Harness) -> String {
    std::fs::read_to_string(h.state_dir().join("uid-blocks.json")).unwrap_or_default()
}

#[test]
fn status_shows_the_image_user_and_the_attachments_block() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "redis", "User=redis");

    attach_at_level_3(&h, "redis");

    let status = h.status_json("redis").unwrap();
    assert_eq!(status["profile"], "default@3");
    assert_eq!(status["user"], "redis");
    assert_eq!(
        status["uid_block"],
        serde_json::json!({"first": 524_288, "size": 65_536})
    );
    assert_eq!(status["uid"], serde_json::Value::Null);
    let text = h.berth(&["status", "redis"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("      User: redis (block 524288-589823)"),
        "{text}"
    );
}

#[test]
fn a_unit_without_user_is_root_of_its_namespace() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "web", "");

    attach_at_level_3(&h, "web");

    assert_eq!(h.status_json("web").unwrap()["user"], "root");
}

#[test]
fn two_images_get_different_blocks_and_keep_them_across_a_berthd_restart() {
    let profiles = tempfile::tempdir().unwrap();
    let mut h = harness(&profiles);
    image_with_users(&h, "alpha", "User=redis");
    image_with_users(&h, "beta", "User=redis");
    attach_at_level_3(&h, "alpha");
    attach_at_level_3(&h, "beta");
    let before = (block_first(&h, "alpha"), block_first(&h, "beta"));

    h.restart_berthd().unwrap();

    assert_eq!(before, (Some(524_288), Some(589_824)));
    assert_eq!((block_first(&h, "alpha"), block_first(&h, "beta")), before);
    assert!(
        state_file(&h).contains("\"beta\": 589824"),
        "{}",
        state_file(&h)
    );
}

#[test]
fn an_image_keeps_its_block_across_detach_and_attach_again() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "alpha", "User=redis");
    image_with_users(&h, "beta", "User=redis");
    attach_at_level_3(&h, "alpha");
    attach_at_level_3(&h, "beta");

    h.berth_ok(&["detach", "alpha"]).unwrap();
    image_with_users(&h, "gamma", "User=redis");
    attach_at_level_3(&h, "gamma");
    attach_at_level_3(&h, "alpha");

    assert_eq!(block_first(&h, "alpha"), Some(524_288));
    assert_eq!(block_first(&h, "gamma"), Some(655_360));
}

#[test]
fn levels_below_3_keep_the_dynamic_user_and_allocate_no_block() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "old", "User=redis");
    h.berth_ok(&["attach", "old", "--profile", "default@2"])
        .unwrap();

    h.berth_ok(&["start", "old"]).unwrap();

    let status = h.status_json("old").unwrap();
    let uid = status["uid"].as_u64().unwrap();
    assert!((61_184..=65_519).contains(&uid), "{status}");
    assert_eq!(status["user"], serde_json::Value::Null);
    assert_eq!(status["uid_block"], serde_json::Value::Null);
    assert_eq!(state_file(&h), "");
    h.berth_ok(&["stop", "old"]).unwrap();
}

#[test]
fn a_dynamic_user_unit_at_level_3_still_gets_a_dynamic_uid() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "dyn", "DynamicUser=yes\nUser=redis");
    attach_at_level_3(&h, "dyn");

    h.berth_ok(&["start", "dyn"]).unwrap();

    let status = h.status_json("dyn").unwrap();
    let uid = status["uid"].as_u64().unwrap();
    assert!((61_184..=65_519).contains(&uid), "{status}");
    assert_eq!(status["user"], serde_json::Value::Null);
    assert_eq!(status["uid_block"], serde_json::Value::Null);
    let main = status["main_pid"].as_u64().unwrap();
    let host_uid = berth_testkit::proc_status_field(main as u32, "Uid").unwrap();
    assert!(host_uid.starts_with(&uid.to_string()), "{host_uid}");
    h.berth_ok(&["stop", "dyn"]).unwrap();
}

#[test]
fn a_user_missing_from_the_image_is_told_at_attach_and_fails_the_start() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "nginx", "User=www-data");

    let attached = h
        .berth(&["attach", "nginx", "--profile", "default@3"])
        .unwrap();
    let error = h.berth_err(&["start", "nginx"]).unwrap();

    let warnings = String::from_utf8_lossy(&attached.stderr);
    assert!(
        warnings.contains("User=www-data: no such user in the image's /etc/passwd"),
        "{warnings}"
    );
    assert!(
        error.contains("User=www-data: no such user in the image's /etc/passwd"),
        "{error}"
    );
    let status = h.status_json("nginx").unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    h.wait_for(
        || Ok(h.status_json("nginx")?["main_pid"].is_null()),
        Duration::from_secs(10),
    )
    .unwrap();
}

#[test]
fn an_invalid_uid_block_range_in_berthd_toml_stops_berthd_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berthd.toml");
    std::fs::write(
        &config,
        "user_block_min = 600000\nuser_block_max = 700000\n",
    )
    .unwrap();

    let result = Harness::start_with_args(&["--config", path(&config)]);

    let error = format!("{:#}", result.err().unwrap());
    assert!(error.contains("user_block_max"), "{error}");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The badness `berth security` gives check `id` of `unit`.
fn badness(h: &Harness, unit: &str, id: &str) -> i64 {
    let report = h.berth_json(&["security", unit]).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let check = checks.iter().find(|c| c["id"] == id).unwrap();
    check["badness"].as_i64().unwrap()
}

#[test]
fn berth_security_counts_the_blocks_namespace_for_private_users_but_not_a_dynamic_users() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "redis", "User=redis");
    image_with_users(&h, "dyn", "DynamicUser=yes");
    attach_at_level_3(&h, "redis");
    attach_at_level_3(&h, "dyn");

    let block = badness(&h, "redis", "PrivateUsers=");
    let dynamic = badness(&h, "dyn", "PrivateUsers=");

    assert_eq!((block, dynamic), (0, 1));
}

#[test]
fn a_user_of_the_image_gets_its_name_and_home_in_the_environment() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "redis", "User=redis");
    attach_at_level_3(&h, "redis");

    h.berth_ok(&["start", "redis"]).unwrap();

    let status = h.status_json("redis").unwrap();
    let main = status["main_pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{main}/environ")).unwrap();
    h.berth_ok(&["stop", "redis"]).unwrap();
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    for wanted in ["USER=redis", "LOGNAME=redis", "HOME=/var/lib/redis"] {
        assert!(environ.iter().any(|e| e == wanted), "{wanted}: {environ:?}");
    }
}

#[test]
fn a_started_service_runs_as_the_image_user_inside_and_its_block_uid_on_the_host() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "redis", "User=redis");
    attach_at_level_3(&h, "redis");

    h.berth_ok(&["start", "redis"]).unwrap();

    let status = h.status_json("redis").unwrap();
    assert_eq!(status["uid"], 524_388, "{status}");
    let main = u32::try_from(status["main_pid"].as_u64().unwrap()).unwrap();
    let uid = berth_testkit::proc_status_field(main, "Uid").unwrap();
    let gid = berth_testkit::proc_status_field(main, "Gid").unwrap();
    let groups = berth_testkit::proc_status_field(main, "Groups").unwrap();
    assert_eq!(uid.split_whitespace().collect::<Vec<_>>(), ["524388"; 4]);
    assert_eq!(gid.split_whitespace().collect::<Vec<_>>(), ["524389"; 4]);
    // adm, which lists redis (initgroups; the helper drops the primary group from the list,
    // which the gid already is).
    assert_eq!(groups.split_whitespace().collect::<Vec<_>>(), ["524292"]);
    let text = h.berth(&["status", "redis"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(
            "      User: redis (uid 100 inside, 524388 on the host; block 524288-589823)"
        ),
        "{text}"
    );
    h.berth_ok(&["stop", "redis"]).unwrap();
}

#[test]
fn a_service_without_user_is_root_inside_and_the_blocks_first_id_on_the_host() {
    let profiles = tempfile::tempdir().unwrap();
    let h = harness(&profiles);
    image_with_users(&h, "web", "");
    attach_at_level_3(&h, "web");

    h.berth_ok(&["start", "web"]).unwrap();

    let status = h.status_json("web").unwrap();
    let main = u32::try_from(status["main_pid"].as_u64().unwrap()).unwrap();
    let uid = berth_testkit::proc_status_field(main, "Uid").unwrap();
    let map = std::fs::read_to_string(format!("/proc/{main}/uid_map")).unwrap();
    assert_eq!(status["uid"], 524_288, "{status}");
    assert!(uid.starts_with("524288"), "{uid}");
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "524288", "65536"]
    );
    h.berth_ok(&["stop", "web"]).unwrap();
}

#[test]
fn a_running_service_readopted_after_a_berthd_restart_keeps_its_user_and_uid() {
    let profiles = tempfile::tempdir().unwrap();
    let mut h = harness(&profiles);
    image_with_users(&h, "redis", "User=redis");
    attach_at_level_3(&h, "redis");
    h.berth_ok(&["start", "redis"]).unwrap();
    let pid = h.status_json("redis").unwrap()["main_pid"].clone();

    h.restart_berthd().unwrap();

    // The uid is read once the supervisor has answered berthd.
    let adopted = h.wait_for(
        || Ok(h.status_json("redis")?["uid"] == 524_388),
        Duration::from_secs(20),
    );
    let status = h.status_json("redis").unwrap();
    assert!(adopted.is_ok(), "{status}");
    assert_eq!(status["main_pid"], pid, "{status}");
    assert_eq!(status["user"], "redis", "{status}");
    h.berth_ok(&["stop", "redis"]).unwrap();
    assert_eq!(h.status_json("redis").unwrap()["state"], "stopped");
}
