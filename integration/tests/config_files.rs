//! berthd.toml and helper.toml are TOML: what TOML allows is taken, anything else stops the
//! daemon with one line naming the file, line and key.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use berth_testkit::{Harness, busybox_image};

/// Runs `cmd` (a daemon that should refuse to start) to its exit, at most 10 s.
fn refused_start(cmd: Command) -> Output {
    let out = berth_testkit::harness::output_with_timeout(cmd, Duration::from_secs(10)).unwrap();
    assert!(!out.status.success(), "the daemon started: {out:?}");
    out
}

/// The error line of `out`'s stderr: its last line, the only one starting with `prefix` (the
/// daemon may log its start before it reads the config).
fn error_line(out: &Output, prefix: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.lines().last(), Some(errors[0]), "{err}");
    errors[0].to_string()
}

fn berthd_with_config(dir: &Path, config: &str) -> Command {
    let path = dir.join("berthd.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(berth_testkit::locate_binary("berthd", "BERTH_BIN_DIR").unwrap());
    cmd.arg("--runtime-dir")
        .arg(dir.join("run"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(&path);
    cmd
}

#[test]
fn a_commented_admin_group_and_an_underscored_number_are_read_as_toml() {
    // `nogroup` (65534) becomes the admin group only if the comment is not part of its name;
    // `64_000_000` is a TOML integer.
    let h = Harness::start_with_config(
        "admin_group = \"nogroup\" # ops team\nlog_max_bytes = 64_000_000\n",
    )
    .unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();

    let attach = h.berth_as(65533, 65534, &[], &["attach", "hello"]).unwrap();

    let err = String::from_utf8_lossy(&attach.stderr);
    assert!(attach.status.success(), "{err}");
}

#[test]
fn berthd_with_an_unknown_key_refuses_to_start_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = berthd_with_config(
        dir.path(),
        "admin_group = \"adm\"\nadmin_groups = [\"x\"]\n",
    );

    let line = error_line(&refused_start(cmd), "berthd: ");

    let expected = format!(
        "berthd: {}:2: admin_groups: ",
        dir.path().join("berthd.toml").display()
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(!dir.path().join("run").join("io.berth.Manager").exists());
}

#[test]
fn berthd_with_a_wrong_type_refuses_to_start_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = berthd_with_config(dir.path(), "\n\nlog_max_bytes = \"64M\"\n");

    let line = error_line(&refused_start(cmd), "berthd: ");

    let expected = format!(
        "berthd: {}:3: log_max_bytes: ",
        dir.path().join("berthd.toml").display()
    );
    assert!(line.starts_with(&expected), "{line}");
}

#[test]
fn berth_helper_with_a_bad_config_refuses_to_start_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helper.toml");
    std::fs::write(&config, "image_roots = [\n  \"/srv/images\",\n  42,\n]\n").unwrap();
    let mut cmd =
        Command::new(berth_testkit::locate_binary("berth-helper", "BERTH_BIN_DIR").unwrap());
    cmd.arg("--socket")
        .arg(dir.path().join("helper.sock"))
        .args(["--manager-uid", "65534", "--config"])
        .arg(&config);

    let line = error_line(&refused_start(cmd), "berth-helper: ");

    let expected = format!("berth-helper: {}:3: image_roots: ", config.display());
    assert!(line.starts_with(&expected), "{line}");
    assert!(!dir.path().join("helper.sock").exists());
}
