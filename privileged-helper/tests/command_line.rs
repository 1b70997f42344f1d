//! The helper binary's command line: a bad flag is a one-line `berth-helper: ...` error.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

fn helper(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_berth-helper"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_uid_that_is_not_a_number_is_a_clear_error() {
    let (code, stderr) = helper(&["--socket", "/nonexistent/s", "--manager-uid", "berth"]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("berth-helper: --manager-uid: \"berth\" is not a uid"),
        "{stderr}"
    );
}

#[test]
fn a_missing_socket_is_named() {
    let (code, stderr) = helper(&["--manager-uid", "998"]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("berth-helper: --socket PATH is required"),
        "{stderr}"
    );
}

#[test]
fn the_manager_uid_must_not_be_root() {
    let (code, stderr) = helper(&["--socket", "/nonexistent/s", "--manager-uid", "0"]);

    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "berth-helper: --manager-uid must not be 0: the manager runs unprivileged\n"
    );
}
