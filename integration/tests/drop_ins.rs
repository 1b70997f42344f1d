//! Host-side configuration without rebuilding the image: `berth set-property`, `berth edit`
//! and `berth cat` work on drop-ins in the attachment, which apply from the next start and only
//! tighten.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use berth_protocol::manager::{DropInsReply, WriteDropInParams};
use berth_testkit::harness::{CLI_TIMEOUT, output_with_timeout};
use berth_testkit::{Harness, ImageBuilder};
use berth_varlink::client::{Client, remote_error_of};

/// An unprivileged user, not in the admin group.
const USER: u32 = 4345;

/// Prints its environment's GREETING each time it starts.
const UNIT: &str = "[Service]\nType=oneshot\nEnvironment=GREETING=from-image\n\
                    ExecStart=/bin/sh -c 'echo greeting=$GREETING'\n";

fn attached(h: &Harness) -> PathBuf {
    let image = ImageBuilder::new(&h.images_dir().join("greet"))
        .unit("greet.service", UNIT)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "greet"]).unwrap();
    image
}

/// The `greeting=` lines the unit printed, in order.
fn greetings(h: &Harness) -> Vec<String> {
    let logs = h.berth_ok(&["logs", "greet", "-o", "cat"]).unwrap();
    logs.lines()
        .filter(|l| l.starts_with("greeting="))
        .map(str::to_owned)
        .collect()
}

fn drop_in_dir(h: &Harness) -> PathBuf {
    h.state_dir().join("attached/greet/greet.service.d")
}

/// `berth edit greet` with an editor script that runs `body` on the file ("$1").
fn edit_with(h: &Harness, body: &str) -> Output {
    let script = h.dir().join(format!("editor-{}.sh", body.len()));
    std::fs::write(&script, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = h.berth_command(&["edit", "greet"]);
    cmd.env("EDITOR", &script).env_remove("VISUAL");
    output_with_timeout(cmd, CLI_TIMEOUT).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn set_property_takes_effect_on_the_next_start() {
    let h = Harness::start().unwrap();
    attached(&h);
    h.berth_ok(&["start", "greet"]).unwrap();

    let out = h
        .berth_ok(&["set-property", "greet", "Environment=GREETING=from-host"])
        .unwrap();
    h.berth_ok(&["start", "greet"]).unwrap();

    let file = drop_in_dir(&h).join("50-Environment.conf");
    assert!(out.contains(&format!("Wrote {}", file.display())), "{out}");
    assert_eq!(greetings(&h), ["greeting=from-image", "greeting=from-host"]);
}

#[test]
fn drop_ins_are_kept_when_the_image_is_attached_again_and_after_a_restart() {
    let mut h = Harness::start().unwrap();
    attached(&h);
    h.berth_ok(&["set-property", "greet", "Environment=GREETING=kept"])
        .unwrap();

    h.berth_ok(&["attach", "greet"]).unwrap();
    h.restart_berthd().unwrap();
    h.berth_ok(&["start", "greet"]).unwrap();

    assert_eq!(greetings(&h), ["greeting=kept"]);
}

#[test]
fn drop_ins_apply_to_the_new_version_after_reattach() {
    let h = Harness::start().unwrap();
    let versions = h.dir().join("versions");
    let build = |dir: &str, says: &str| {
        let unit = UNIT.replace("from-image", says);
        ImageBuilder::new(&versions.join(dir))
            .unit("greet.service", &unit)
            .build()
            .unwrap()
    };
    let v1 = build("greet_1", "v1");
    let v2 = build("greet_2", "v2");
    h.berth_ok(&["attach", v1.to_str().unwrap()]).unwrap();
    h.berth_ok(&["set-property", "greet", "Environment=GREETING=kept"])
        .unwrap();

    h.berth_ok(&["reattach", v2.to_str().unwrap()]).unwrap();
    h.berth_ok(&["start", "greet"]).unwrap();

    let cat = h.berth_ok(&["cat", "greet"]).unwrap();
    assert!(
        cat.contains("ExecStart=/bin/sh") && cat.contains("GREETING=v2"),
        "{cat}"
    );
    assert_eq!(greetings(&h), ["greeting=kept"]);
}

#[test]
fn cat_shows_the_unit_then_each_drop_in_after_its_path_to_any_user() {
    let h = Harness::start().unwrap();
    attached(&h);
    h.berth_ok(&["set-property", "greet", "Description=Greeter"])
        .unwrap();
    h.berth_ok(&["set-property", "greet", "Environment=GREETING=x"])
        .unwrap();

    let out = h.berth_as(USER, USER, &[], &["cat", "greet"]).unwrap();

    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = h.state_dir().join("attached/greet/greet.service");
    let expected = format!(
        "# {}\n{}\n\n# {}/50-Description.conf\n# Written by berth set-property.\n[Unit]\n\
         Description=Greeter\n\n# {}/50-Environment.conf\n# Written by berth set-property.\n\
         [Service]\nEnvironment=GREETING=x\n",
        unit.display(),
        UNIT.trim_end(),
        drop_in_dir(&h).display(),
        drop_in_dir(&h).display(),
    );
    assert_eq!(text, expected);
}

#[test]
fn edit_writes_what_the_editor_saved_and_a_reset_execstart_replaces_the_command() {
    let h = Harness::start().unwrap();
    attached(&h);

    let out = edit_with(
        &h,
        r#"printf '[Service]\nExecStart=\nExecStart=/bin/echo greeting=edited\n' > "$1""#,
    );
    h.berth_ok(&["start", "greet"]).unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(drop_in_dir(&h).join("override.conf").is_file());
    assert_eq!(greetings(&h), ["greeting=edited"]);
}

#[test]
fn edit_leaving_only_comments_removes_the_drop_in() {
    let h = Harness::start().unwrap();
    attached(&h);
    edit_with(
        &h,
        r#"printf '[Service]\nEnvironment=GREETING=edited\n' > "$1""#,
    );

    let out = edit_with(&h, r#"printf '# nothing left\n' > "$1""#);
    h.berth_ok(&["start", "greet"]).unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!drop_in_dir(&h).join("override.conf").exists());
    assert_eq!(greetings(&h), ["greeting=from-image"]);
}

#[test]
fn edit_refuses_garbage_and_writes_nothing() {
    let h = Harness::start().unwrap();
    attached(&h);

    let out = edit_with(&h, r#"printf 'this is no unit file\n' > "$1""#);

    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.starts_with("berth: drop-in of greet.service refused, nothing written: ")
            && err.contains("greet.service.d/override.conf: line 1: missing '='"),
        "{err}"
    );
    assert!(!drop_in_dir(&h).join("override.conf").exists());
}

#[test]
fn edit_refuses_a_drop_in_that_makes_the_unit_unrunnable() {
    let h = Harness::start().unwrap();
    attached(&h);

    let out = edit_with(&h, r#"printf '[Service]\nExecStart=\n' > "$1""#);

    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("no ExecStart="), "{err}");
    assert!(!drop_in_dir(&h).join("override.conf").exists());
}

#[test]
fn a_2_mib_drop_in_is_refused_by_the_cli_and_by_berthd() {
    let h = Harness::start().unwrap();
    attached(&h);

    let out = edit_with(&h, r#"head -c 2097152 /dev/zero | tr '\0' '#' > "$1""#);
    let by_berthd = write_drop_in(&h, "#".repeat(100 * 1024));

    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("the drop-in is 2097152 bytes, more than the 65536"),
        "{err}"
    );
    let remote = remote_error_of(&by_berthd.unwrap_err()).unwrap();
    assert_eq!(remote.error, "io.berth.Manager.InvalidDropIn");
    assert!(!drop_in_dir(&h).exists());
    h.berth_ok(&["list"]).unwrap();
}

#[test]
fn a_loosening_directive_is_ignored_with_a_warning_in_edit_and_refused_by_set_property() {
    let h = Harness::start().unwrap();
    attached(&h);

    let edited = edit_with(&h, r#"printf '[Service]\nPrivateTmp=no\n' > "$1""#);
    let set = h
        .berth_err(&[
            "set-property",
            "greet",
            "CapabilityBoundingSet=CAP_SYS_ADMIN",
        ])
        .unwrap();

    let warning = stderr(&edited);
    assert!(edited.status.success(), "{warning}");
    assert!(
        warning.contains(
            "berth: warning: greet.service.d/override.conf:2: [Service] PrivateTmp=no is ignored"
        ),
        "{warning}"
    );
    assert!(
        set.contains("refused, nothing written: it would not be applied")
            && set.contains("CapabilityBoundingSet=CAP_SYS_ADMIN is ignored"),
        "{set}"
    );
    assert!(
        !drop_in_dir(&h)
            .join("50-CapabilityBoundingSet.conf")
            .exists()
    );
}

#[test]
fn only_root_and_the_admin_group_change_drop_ins() {
    let h = Harness::start().unwrap();
    attached(&h);

    let out = h
        .berth_as(
            USER,
            USER,
            &[],
            &["set-property", "greet", "Environment=A=1"],
        )
        .unwrap();

    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permission denied: SetProperty needs root or the admin group"),
        "{}",
        stderr(&out)
    );
    assert!(!drop_in_dir(&h).exists());
}

/// `WriteDropIn` of `override.conf` sent as root straight to berthd.
fn write_drop_in(
    h: &Harness,
    contents: String,
) -> Result<DropInsReply, berth_varlink::client::ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket: &Path = &h.socket();
    runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let mut client = Client::connect(socket).await.unwrap();
                let params = WriteDropInParams {
                    unit: "greet".into(),
                    name: "override.conf".into(),
                    contents,
                };
                client
                    .call("io.berth.Manager.WriteDropIn", &params, vec![])
                    .await
            })
            .await
        })
        .expect("call timed out")
}

#[test]
fn set_property_and_cat_speak_json() {
    let h = Harness::start().unwrap();
    attached(&h);

    let set = h
        .berth_json(&[
            "set-property",
            "greet",
            "Environment=A=1",
            "Environment=B=2",
        ])
        .unwrap();
    let cat = h.berth_json(&["cat", "greet"]).unwrap();

    let file = drop_in_dir(&h).join("50-Environment.conf");
    assert_eq!(set["unit"], "greet.service");
    assert_eq!(
        set["written"],
        serde_json::json!([file.display().to_string()])
    );
    assert_eq!(cat["files"][1]["path"], file.display().to_string());
    assert_eq!(
        cat["files"][1]["contents"],
        "# Written by berth set-property.\n[Service]\nEnvironment=A=1\nEnvironment=B=2\n"
    );
}
