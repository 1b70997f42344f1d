//! What the daemons log: a real berthd + berth-helper logging to stderr (the harness's log
//! file), read back line by line. Needs root and the `berth` user.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;
use std::time::Duration;

use berth_testkit::harness::output_with_timeout;
use berth_testkit::{Harness, busybox_image, locate_binary};

const WAIT: Duration = Duration::from_secs(10);
const DEBUG_TO_STDERR: &[&str] = &["--log-level", "debug", "--log-target", "stderr"];

/// The lines of berthd's (and its helper's) log holding every one of `parts`.
fn lines_with(h: &Harness, parts: &[&str]) -> Vec<String> {
    h.stderr_log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}

/// Waits for a log line holding every one of `parts`; fails with the whole log after [`WAIT`].
fn wait_for_line(h: &Harness, parts: &[&str]) -> String {
    h.wait_for(|| Ok(!lines_with(h, parts).is_empty()), WAIT)
        .unwrap_or_else(|e| panic!("no log line with {parts:?}: {e}"));
    lines_with(h, parts).remove(0)
}

#[test]
fn a_refused_call_is_logged_with_who_what_and_why() {
    let h = Harness::start_with_args(DEBUG_TO_STDERR).unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    let out = h.berth_as(65534, 65534, &[], &["start", "hello"]).unwrap();

    assert!(!out.status.success());
    let line = wait_for_line(&h, &["call refused", "peer_uid=65534"]);
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("method=io.berth.Manager.Start"), "{line}");
    assert!(
        line.contains("error=io.berth.Manager.PermissionDenied"),
        "{line}"
    );
    let pid = line.split("peer_pid=").nth(1).unwrap_or_default();
    assert!(pid.starts_with(|c: char| c.is_ascii_digit()), "{line}");
}

#[test]
fn a_flood_of_refused_calls_is_logged_in_part_and_others_keep_their_lines() {
    let h = Harness::start_with_args(DEBUG_TO_STDERR).unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    let berth = h.bin_dir().join("berth");
    let script = format!(
        "for i in $(seq 60); do {} --socket {} start hello 2>/dev/null; done; true",
        berth.display(),
        h.socket().display()
    );
    let mut flood = berth_testkit::as_user(65534, 65534, &[]);
    flood.args(["sh", "-c", &script]);

    let out = output_with_timeout(flood, Duration::from_secs(60)).unwrap();
    h.berth_err(&["status", "nosuch"]).unwrap();

    assert!(out.status.success());
    let refused = lines_with(&h, &["call refused", "peer_uid=65534"]).len();
    // One window's share, or two on a machine slow enough to take a whole window.
    assert!(
        (berth_logging::flood::BURST as usize..60).contains(&refused),
        "{refused} lines for 60 refused calls"
    );
    wait_for_line(&h, &["call failed", "peer_uid=0", "nosuch.service"]);
}

#[test]
fn a_connection_closed_for_an_oversized_message_is_logged_with_its_uid() {
    let h = Harness::start_with_args(DEBUG_TO_STDERR).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(h.socket()).unwrap();
    client.set_write_timeout(Some(WAIT)).unwrap();

    // No NUL: one message longer than the 4 MiB limit. The server closes mid-way.
    let _ = std::io::Write::write_all(&mut client, &vec![b'a'; 5 << 20]);

    let line = wait_for_line(&h, &["closing a connection", "peer_uid=0"]);
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("reason=message longer than 4194304 bytes"),
        "{line}"
    );
}

#[test]
fn a_failed_call_is_logged_at_debug_level_with_its_error() {
    let h = Harness::start_with_args(DEBUG_TO_STDERR).unwrap();

    h.berth_err(&["status", "nosuch"]).unwrap();

    let line = wait_for_line(&h, &["call failed", "method=io.berth.Manager.Status"]);
    assert!(line.contains("DEBUG"), "{line}");
    assert!(line.contains("error=io.berth.Manager.NoSuchUnit"), "{line}");
    assert!(line.contains("nosuch.service"), "{line}");
    assert!(line.contains("peer_uid=0"), "{line}");
}

#[test]
fn each_state_change_of_a_service_is_logged_with_its_pid_and_exit() {
    let h = Harness::start_with_args(DEBUG_TO_STDERR).unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();

    h.berth_ok(&["start", "hello"]).unwrap();
    let pid = h.berth_json(&["status", "hello"]).unwrap()["main_pid"].clone();
    h.berth_ok(&["stop", "hello"]).unwrap();

    let unit = "unit=hello.service";
    wait_for_line(&h, &["INFO", "unit starting", unit]);
    let running = wait_for_line(&h, &["INFO", "unit running", unit]);
    assert!(running.contains(&format!("pid={pid}")), "{running}");
    assert!(running.contains("uid="), "{running}");
    wait_for_line(&h, &["INFO", "unit stopping", unit]);
    let stopped = wait_for_line(&h, &["INFO", "unit stopped", unit]);
    assert!(stopped.contains("exit_"), "no exit status: {stopped}");
}

#[test]
fn a_floor_refusal_is_logged_by_the_helper_with_field_and_reason() {
    // berthd allocates uids the helper's floor (default range 61184-65519) does not allow.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("berthd.toml");
    std::fs::write(
        &config,
        "dynamic_uid_min = 70000\ndynamic_uid_max = 70100\n",
    )
    .unwrap();
    let mut args = DEBUG_TO_STDERR.to_vec();
    args.extend(["--config", config.to_str().unwrap()]);
    let h = Harness::start_with_args(&args).unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    // A dynamic uid: level 2 (level 3 gives the image's users a block instead).
    h.berth_ok(&["attach", "hello", "--profile", "default@2"])
        .unwrap();

    h.berth_err(&["start", "hello"]).unwrap();

    let refusal = wait_for_line(&h, &["berth_helper", "floor refused spawn"]);
    assert!(refusal.contains("WARN"), "{refusal}");
    assert!(refusal.contains("unit=hello.service"), "{refusal}");
    assert!(
        refusal.contains("field=sandbox.identity.uid reason=700"),
        "{refusal}"
    );
    assert!(
        refusal.contains(" is outside the dynamic range 61184-65519"),
        "{refusal}"
    );
    let failed = wait_for_line(&h, &["unit failed", "unit=hello.service"]);
    assert!(failed.contains("WARN"), "{failed}");
    assert!(failed.contains("outside the dynamic range"), "{failed}");
}

#[test]
fn an_attach_forced_past_an_unsafe_path_is_logged_as_a_warning() {
    let h = Harness::start_with_args(DEBUG_TO_STDERR).unwrap();
    let user_dir = h.dir().join("home/user");
    std::fs::create_dir_all(&user_dir).unwrap();
    let image = busybox_image(&user_dir, "hello").unwrap();
    std::os::unix::fs::chown(&user_dir, Some(4343), Some(4343)).unwrap();

    h.berth_ok(&["attach", "--force", image.to_str().unwrap()])
        .unwrap();

    let line = wait_for_line(&h, &["image attached past an unsafe path"]);
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("image=hello"), "{line}");
    assert!(line.contains("owned by uid 4343"), "{line}");
}

#[test]
fn the_level_reaches_the_helper_and_info_hides_debug() {
    let h = Harness::start_with_args(&["--log-level", "info", "--log-target", "stderr"]).unwrap();

    h.berth_err(&["status", "nosuch"]).unwrap();
    h.berth_ok(&["list"]).unwrap();

    let started = wait_for_line(&h, &["berth-helper starting"]);
    assert!(started.contains("level=info"), "{started}");
    wait_for_line(&h, &["berthd serving"]);
    assert!(
        lines_with(&h, &["call failed"]).is_empty(),
        "{}",
        h.stderr_log()
    );
    assert!(lines_with(&h, &["DEBUG"]).is_empty(), "{}", h.stderr_log());
}

#[test]
fn the_privilege_split_is_logged() {
    let h = Harness::start_with_args(DEBUG_TO_STDERR).unwrap();

    let started = wait_for_line(&h, &["berth_manager", "berth-helper started"]);
    let dropped = wait_for_line(&h, &["dropped privileges"]);

    assert!(started.contains("pid="), "{started}");
    assert!(dropped.contains("user=berth"), "{dropped}");
}

/// Runs `binary` with `args`; returns its exit status's success and its stderr.
fn run(binary: &str, args: &[&str], rust_log: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(locate_binary(binary, "BERTH_BIN_DIR").unwrap());
    cmd.args(args).env_remove("RUST_LOG");
    if let Some(value) = rust_log {
        cmd.env("RUST_LOG", value);
    }
    let out = output_with_timeout(cmd, WAIT).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_log_level_stops_either_daemon_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("helper.sock");
    let helper_args = ["--socket", socket.to_str().unwrap(), "--manager-uid", "998"];

    for (binary, args) in [
        ("berthd", vec!["--log-level", "verbose"]),
        (
            "berth-helper",
            [&helper_args[..], &["--log-level", "verbose"]].concat(),
        ),
    ] {
        let (ok, stderr) = run(binary, &args, None);

        assert!(!ok, "{binary} started with --log-level verbose");
        assert!(
            stderr.contains("invalid --log-level \"verbose\""),
            "{binary}: {stderr}"
        );
    }
    assert!(!socket.exists());
}

#[test]
fn a_bad_rust_log_is_refused_naming_it_unless_the_flag_overrides_it() {
    // A user that does not exist stops berthd right after its logging is set up.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berthd.toml");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--user",
        "no-such-berth-user",
    ];

    let (env_ok, env_stderr) = run("berthd", &args, Some("berth_manager"));
    let flag_args = [&args[..], &["--log-level", "debug"]].concat();
    let (flag_ok, flag_stderr) = run("berthd", &flag_args, Some("berth_manager"));

    assert!(!env_ok && !flag_ok);
    assert!(env_stderr.contains("invalid RUST_LOG"), "{env_stderr}");
    assert!(!flag_stderr.contains("RUST_LOG"), "{flag_stderr}");
    assert!(flag_stderr.contains("no-such-berth-user"), "{flag_stderr}");
}

/// One journal entry of the native protocol: `NAME=value` lines, or `NAME`, a little-endian
/// 64-bit length and that many bytes (for values that may hold a newline).
fn journal_entry(datagram: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'=') else {
            break;
        };
        let name = String::from_utf8_lossy(&rest[..end]).into_owned();
        if rest[end] == b'=' {
            let line_end = rest[end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |p| end + p);
            fields.push((
                name,
                String::from_utf8_lossy(&rest[end + 1..line_end]).into(),
            ));
            rest = &rest[(line_end + 1).min(rest.len())..];
        } else {
            let len_bytes: [u8; 8] = rest[end + 1..end + 9].try_into().unwrap();
            let len = u64::from_le_bytes(len_bytes) as usize;
            let value = &rest[end + 9..end + 9 + len];
            fields.push((name, String::from_utf8_lossy(value).into_owned()));
            rest = &rest[(end + 10 + len).min(rest.len())..];
        }
    }
    fields
}

fn field<'a>(entry: &'a [(String, String)], name: &str) -> Option<&'a str> {
    entry
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn with_a_journal_on_the_host_both_daemons_log_to_it() {
    // In a mount namespace of its own (one thread's, inherited by the daemons it starts), a
    // stand-in journald listens at /run/systemd/journal/socket.
    let entries = std::thread::spawn(|| {
        use rustix::mount::{MountFlags, MountPropagationFlags, mount, mount_change};
        // SAFETY: only NEWNS (with the implied FS) is unshared: no descriptor table is split.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.unwrap();
        mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .unwrap();
        mount("tmpfs", "/run", "tmpfs", MountFlags::empty(), None).unwrap();
        std::fs::create_dir_all("/run/systemd/journal").unwrap();
        let journal =
            std::os::unix::net::UnixDatagram::bind("/run/systemd/journal/socket").unwrap();
        // berthd sends by path after it drops to its user.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o666);
        std::fs::set_permissions("/run/systemd/journal/socket", mode).unwrap();
        journal
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let h = Harness::start().unwrap();
        h.berth_as(65534, 65534, &[], &["list", "--no-such-flag"])
            .ok();
        h.berth_as(65534, 65534, &[], &["start", "nosuch"]).unwrap();
        let mut entries = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = journal.recv(&mut buf) {
            entries.push(journal_entry(&buf[..n]));
        }
        (entries, h.stderr_log())
    })
    .join()
    .unwrap();
    let (entries, stderr) = entries;

    let from = |identifier: &str, message: &str| {
        entries.iter().find(|e| {
            field(e, "SYSLOG_IDENTIFIER") == Some(identifier)
                && field(e, "MESSAGE") == Some(message)
        })
    };
    let refused = from("berthd", "call refused").expect("no refused call in the journal");
    assert_eq!(field(refused, "PRIORITY"), Some("4"));
    assert_eq!(field(refused, "BERTH_PEER_UID"), Some("65534"));
    assert_eq!(
        field(refused, "BERTH_METHOD"),
        Some("io.berth.Manager.Start")
    );
    assert!(
        from("berth-helper", "berth-helper starting").is_some(),
        "{entries:?}"
    );
    assert!(!stderr.contains("call refused"), "{stderr}");
}
