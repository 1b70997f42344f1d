//! Every bad input gets a clear error, and the daemons keep serving afterwards.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder, busybox_image};

/// One raw varlink exchange: sends `request` + NUL, returns the reply up to its NUL (or "" on EOF).
fn raw_call(socket: &std::path::Path, request: &[u8]) -> String {
    raw_call_within(socket, request, Duration::from_secs(5))
}

/// [`raw_call`], waiting at most `timeout` for the reply.
fn raw_call_within(socket: &std::path::Path, request: &[u8], timeout: Duration) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(request).unwrap();
    stream.write_all(b"\0").unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = stream.read(&mut byte) {
        if byte[0] == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn assert_still_serving(h: &Harness) {
    h.berth_ok(&["list"]).unwrap();
}

#[test]
fn image_without_os_release_is_refused_clearly() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("bare"))
        .without_os_release()
        .unit("bare.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();

    let err = h.berth_err(&["attach", "bare"]).unwrap();

    assert!(
        err.starts_with("berth: ") && err.contains("os-release"),
        "{err}"
    );
    assert_still_serving(&h);
}

#[test]
fn unit_naming_a_missing_binary_fails_to_start_with_its_path() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("ghost"))
        .unit(
            "ghost.service",
            "[Service]\nExecStart=/usr/bin/does-not-exist\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "ghost"]).unwrap();

    let err = h.berth_err(&["start", "ghost"]).unwrap();

    assert!(
        err.contains("/usr/bin/does-not-exist") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(h.status_json("ghost").unwrap()["state"], "failed");
    assert_still_serving(&h);
}

#[test]
fn unknown_unit_is_a_clear_error() {
    let h = Harness::start().unwrap();

    let err = h.berth_err(&["status", "nothing"]).unwrap();

    assert_eq!(err.trim(), "berth: no attached unit 'nothing.service'");
}

#[test]
fn symlinked_unit_pointing_at_a_host_file_is_refused() {
    let h = Harness::start().unwrap();
    let host_file = h.dir().join("host-unit.service");
    std::fs::write(&host_file, "[Service]\nExecStart=/bin/true\n").unwrap();
    ImageBuilder::new(&h.images_dir().join("evil"))
        .symlink(
            "usr/lib/systemd/system/evil.service",
            host_file.to_str().unwrap(),
        )
        .build()
        .unwrap();

    let err = h.berth_err(&["attach", "evil"]).unwrap();

    assert!(err.contains("evil.service"), "{err}");
    assert!(h.berth(&["is-attached", "evil"]).unwrap().status.code() == Some(1));
}

#[test]
fn call_with_missing_parameter_gets_invalid_parameter() {
    let h = Harness::start().unwrap();

    let reply = raw_call(
        &h.socket(),
        br#"{"method":"io.berth.Manager.Status","parameters":{}}"#,
    );

    assert!(
        reply.contains("org.varlink.service.InvalidParameter") && reply.contains("unit"),
        "{reply}"
    );
    assert_still_serving(&h);
}

#[test]
fn call_with_wrong_parameter_type_gets_invalid_parameter() {
    let h = Harness::start().unwrap();

    let reply = raw_call(
        &h.socket(),
        br#"{"method":"io.berth.Manager.Status","parameters":{"unit":7}}"#,
    );

    assert!(
        reply.contains("org.varlink.service.InvalidParameter"),
        "{reply}"
    );
}

#[test]
fn call_to_unknown_method_with_parameters_gets_method_not_found() {
    let h = Harness::start().unwrap();

    let reply = raw_call(
        &h.socket(),
        br#"{"method":"io.berth.Manager.Explode","parameters":{"x":1}}"#,
    );

    assert!(
        reply.contains("org.varlink.service.MethodNotFound"),
        "{reply}"
    );
}

#[test]
fn call_to_unknown_interface_gets_interface_not_found() {
    let h = Harness::start().unwrap();

    let reply = raw_call(
        &h.socket(),
        br#"{"method":"com.example.Nope.Do","parameters":{}}"#,
    );

    assert!(
        reply.contains("org.varlink.service.InterfaceNotFound"),
        "{reply}"
    );
}

#[test]
fn garbage_on_the_socket_does_not_stop_the_daemon() {
    let h = Harness::start().unwrap();

    let _ = raw_call(&h.socket(), b"{not json at all");
    let _ = raw_call(&h.socket(), b"[1,2,3]");

    assert_still_serving(&h);
}

#[test]
fn unprivileged_client_may_read_but_not_change() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    let as_nobody = |args: &[&str]| h.berth_as(65534, 65534, &[], args).unwrap();

    let read = as_nobody(&["list"]);
    let write = as_nobody(&["attach", "hello"]);

    assert!(read.status.success());
    let err = String::from_utf8_lossy(&write.stderr);
    assert!(
        !write.status.success() && err.contains("permission denied"),
        "{err}"
    );
}

/// `InspectImage` of `path` without a descriptor, as `uid`, printing the reply.
fn inspect_path_without_descriptor_as(h: &Harness, uid: u32, path: &str) -> String {
    let request = serde_json::json!({
        "method": "io.berth.Manager.InspectImage",
        "parameters": {"image": path},
    });
    let mut cmd = berth_testkit::as_user(uid, uid, &[]);
    cmd.args([
        "/usr/bin/python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(10)\n\
         s.connect(sys.argv[1])\ns.sendall(sys.argv[2].encode()+b'\\0')\n\
         print(s.recv(65536).decode(errors='replace'))",
    ])
    .arg(h.socket())
    .arg(request.to_string());
    let out = berth_testkit::harness::output_with_timeout(cmd, berth_testkit::harness::CLI_TIMEOUT)
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn only_admins_may_inspect_an_image_by_path_without_a_descriptor() {
    let h = Harness::start().unwrap();
    let image = busybox_image(&h.images_dir(), "hello").unwrap();
    let path = image.to_str().unwrap();

    let by_name = h
        .berth_as(65534, 65534, &[], &["image", "inspect", "hello"])
        .unwrap();
    // The CLI passes the image it opened with the user's rights: theirs to read.
    let by_descriptor = h
        .berth_as(65534, 65534, &[], &["image", "inspect", path])
        .unwrap();
    let by_bare_path = inspect_path_without_descriptor_as(&h, 65534, path);
    let root_by_bare_path = inspect_path_without_descriptor_as(&h, 0, path);

    assert!(by_name.status.success(), "{by_name:?}");
    assert!(by_descriptor.status.success(), "{by_descriptor:?}");
    assert!(
        by_bare_path.contains("io.berth.Manager.PermissionDenied"),
        "{by_bare_path}"
    );
    assert!(
        root_by_bare_path.contains("\"details\""),
        "{root_by_bare_path}"
    );
}

#[test]
fn helper_refuses_callers_other_than_the_manager() {
    let h = Harness::start().unwrap();
    let helper_socket = h.runtime_dir().join("private/io.berth.Helper");

    // Root is not the manager's uid: the helper must say no.
    let reply = raw_call(&helper_socket, br#"{"method":"io.berth.Helper.Ping"}"#);

    assert!(
        reply.contains("io.berth.Helper.PermissionDenied"),
        "{reply}"
    );
    assert_still_serving(&h);
}

#[test]
fn helper_socket_is_not_reachable_for_other_users() {
    let h = Harness::start().unwrap();
    let helper_socket = h.runtime_dir().join("private/io.berth.Helper");

    let mut cmd = berth_testkit::as_user(65534, 65534, &[]);
    cmd.arg(h.bin_dir().join("berth"))
        .arg("--socket")
        .arg(&helper_socket)
        .arg("list");
    let out = berth_testkit::harness::output_with_timeout(cmd, berth_testkit::harness::CLI_TIMEOUT)
        .unwrap();

    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect") && err.contains("Permission denied"),
        "{err}"
    );
}

#[test]
fn second_berthd_cannot_take_over_the_sockets() {
    let h = Harness::start().unwrap();
    let berthd = h.bin_dir().join("berthd");

    let second = std::process::Command::new(&berthd)
        .arg("--runtime-dir")
        .arg(h.runtime_dir())
        .arg("--state-dir")
        .arg(h.state_dir())
        .output()
        .unwrap();

    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
    assert_still_serving(&h);
}

#[test]
fn berthd_without_its_user_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let berthd = berth_testkit::locate_binary("berthd", "BERTH_BIN_DIR").unwrap();

    let out = std::process::Command::new(berthd)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--user", "no-such-berth-user"])
        .output()
        .unwrap();

    let err = String::from_utf8_lossy(&out.stderr);
    // The last line: the log's "berthd starting" comes before it.
    let last = err.lines().last().unwrap_or_default();
    assert!(!out.status.success());
    assert!(
        last.starts_with("berthd: user 'no-such-berth-user' does not exist")
            && last.contains("useradd"),
        "{err}"
    );
}

#[test]
fn cli_without_a_daemon_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let berth = berth_testkit::locate_binary("berth", "BERTH_BIN_DIR").unwrap();

    let out = std::process::Command::new(berth)
        .arg("--socket")
        .arg(dir.path().join("none"))
        .arg("list")
        .output()
        .unwrap();

    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("berth: cannot connect") && err.contains("is berthd running"),
        "{err}"
    );
}

#[test]
fn every_method_answers_malformed_parameters_with_an_error_and_keeps_serving() {
    let h = Harness::start().unwrap();
    let methods = [
        "ListImages",
        "InspectImage",
        "Attach",
        "Detach",
        "IsAttached",
        "List",
        "Start",
        "Stop",
        "Restart",
        "Status",
        "Logs",
    ];
    let bad_parameters = [
        r#"{"bogus":1}"#,
        r#"{"unit":[],"image":{},"lines":"x"}"#,
        r#"[]"#,
        r#""text""#,
    ];

    for method in methods {
        for parameters in bad_parameters {
            let call =
                format!(r#"{{"method":"io.berth.Manager.{method}","parameters":{parameters}}}"#);
            let reply = raw_call(&h.socket(), call.as_bytes());
            assert!(
                reply.contains("org.varlink.service.InvalidParameter"),
                "{call} -> {reply:?}"
            );
        }
    }
    assert_still_serving(&h);
}

#[test]
fn oversized_parameters_are_refused() {
    let h = Harness::start().unwrap();
    let huge = "x".repeat(2 * 1024 * 1024);
    let call =
        format!(r#"{{"method":"io.berth.Manager.Status","parameters":{{"unit":"{huge}"}}}}"#);

    let reply = raw_call(&h.socket(), call.as_bytes());

    assert!(
        reply.contains("org.varlink.service.InvalidParameter"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert_still_serving(&h);
}

#[test]
fn image_path_without_a_descriptor_the_berth_user_cannot_read_is_a_clear_error() {
    let h = Harness::start().unwrap();
    let private = h.dir().join("private-images");
    std::fs::create_dir(&private).unwrap();
    let image = busybox_image(&private, "secret").unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();

    // What a client that passes no descriptor (python's varlink) gets; the CLI passes one
    // (integration/tests/image_descriptors.rs).
    let reply = inspect_path_without_descriptor_as(&h, 0, image.to_str().unwrap());

    assert!(reply.contains("cannot read it"), "{reply}");
}

/// Opens `count` connections to `socket` as `uid`, sends GetInfo on each, prints how many were
/// answered, then holds them all until its stdin closes.
const CONNECTION_HOARDER: &str = r#"
import socket, sys
path, count = sys.argv[1], int(sys.argv[2])
held, answered = [], 0
for _ in range(count):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    # A refused connection may be closed before the call is sent (EPIPE) or read.
    try:
        s.connect(path)
        s.sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
        answered += len(s.recv(1)) == 1
    except OSError:
        pass
    held.append(s)
print(answered, flush=True)
sys.stdin.read()
"#;

#[test]
fn one_user_cannot_hoard_connections_and_lock_out_others() {
    use std::io::BufRead;
    let h = Harness::start().unwrap();
    let limit = berth_varlink::limits::CONNECTIONS_PER_UID;
    let mut hoarder = berth_testkit::as_user(65533, 65533, &[])
        .args(["/usr/bin/python3", "-c", CONNECTION_HOARDER])
        .arg(h.socket())
        .arg((limit + 10).to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(hoarder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();

    let other_user = h.berth_as(65534, 65534, &[], &["list"]).unwrap();
    let root = h.berth(&["list"]).unwrap();
    drop(hoarder.stdin.take());
    hoarder.wait().unwrap();

    assert_eq!(line.trim(), limit.to_string(), "answered connections");
    assert!(
        other_user.status.success(),
        "another user was locked out: {}",
        String::from_utf8_lossy(&other_user.stderr)
    );
    assert!(root.status.success());
    assert!(
        h.stderr_log()
            .contains("refusing connections reason=uid 65533 already holds"),
        "{}",
        h.stderr_log()
    );
}

/// Attaches image `name` with `count` units `name-<i>.service`.
fn attach_many_units(h: &Harness, name: &str, count: usize) {
    let mut image = ImageBuilder::new(&h.images_dir().join(name));
    for i in 0..count {
        image = image.unit(
            &format!("{name}-{i}.service"),
            "[Service]\nExecStart=/bin/true\n",
        );
    }
    image.build().unwrap();
    h.berth_ok(&["attach", name]).unwrap();
}

#[test]
fn a_client_that_never_reads_its_reply_does_not_hold_up_others() {
    let h = Harness::start().unwrap();
    attach_many_units(&h, "many", 1000);
    // One List reply of 1,000 units (the most in one reply, about 290 KB) is larger than the
    // socket buffer (208 KiB).
    let mut hog = UnixStream::connect(h.socket()).unwrap();
    hog.write_all(b"{\"method\":\"io.berth.Manager.List\"}\0")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let status = h.berth(&["status", "many-1"]).unwrap();
    let listed = h.berth_json(&["list"]).unwrap();
    drop(hog);

    // Answered: 3 is the exit status of a unit that is not active.
    assert_eq!(status.status.code(), Some(3), "{status:?}");
    assert_eq!(listed.as_array().unwrap().len(), 1000);
}

#[test]
fn a_message_past_the_size_limit_closes_its_connection_only() {
    let h = Harness::start().unwrap();
    let mut stream = UnixStream::connect(h.socket()).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let limit = berth_varlink::limits::MAX_MESSAGE_BYTES;

    // Whitespace without end: no NUL ever comes. The daemon closes the connection, so a write
    // fails sooner or later.
    let mut sent = 0;
    while sent <= 2 * limit && stream.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    let mut reply = Vec::new();
    let read = stream.read_to_end(&mut reply);

    assert!(
        sent <= 2 * limit,
        "the daemon took {sent} bytes of one message"
    );
    // Closed: end of file, or a reset for the bytes it never read. Not a timeout.
    let closed = match &read {
        Ok(_) => reply.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "not closed: {read:?}, reply {reply:?}");
    assert_still_serving(&h);
}

/// serde_json stops at 128 levels of nesting; the parameters reach berth as text, so the
/// call gets InvalidParameter (zlink, parsing them itself, closed the connection).
#[test]
fn deeply_nested_parameters_are_an_invalid_parameter() {
    let h = Harness::start().unwrap();
    let depth = 100_000;
    let call = format!(
        r#"{{"method":"io.berth.Manager.Status","parameters":{{"unit":{}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );

    let reply = raw_call(&h.socket(), call.as_bytes());

    assert!(
        reply.contains("org.varlink.service.InvalidParameter"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert_still_serving(&h);
}

#[test]
fn descriptors_sent_with_a_call_are_not_kept() {
    use std::os::fd::AsFd;
    let h = Harness::start().unwrap();
    let berthd = h.berthd_pid().unwrap();
    let count = || berth_testkit::open_fd_count(berthd);
    let stream = UnixStream::connect(h.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A first call settles the connection's own descriptors.
    let probe = b"{\"method\":\"org.varlink.service.GetInfo\"}\0";
    rustix::net::send(&stream, probe, rustix::net::SendFlags::empty()).unwrap();
    let mut buf = [0u8; 4096];
    rustix::io::read(&stream, &mut buf).unwrap();
    let before = count();
    let null = std::fs::File::open("/dev/null").unwrap();
    let fds: Vec<_> = (0..200).map(|_| null.as_fd()).collect();

    // Status takes no descriptors; send 200 copies of one along with it, in batches of 100.
    for batch in fds.chunks(100) {
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(100))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(batch)));
        let call = b"{\"method\":\"io.berth.Manager.Status\",\"parameters\":{\"unit\":\"none\"}}\0";
        rustix::net::sendmsg(
            &stream,
            &[std::io::IoSlice::new(call)],
            &mut control,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
        rustix::io::read(&stream, &mut buf).unwrap();
    }

    assert!(
        count() <= before,
        "berthd kept descriptors: {} > {before}",
        count()
    );
    assert_still_serving(&h);
}

/// Unit files no one should write: each either attaches (with warnings) and then starts or fails
/// with a clear error, or is refused with a clear error. berthd keeps serving throughout.
#[test]
fn hostile_unit_files_get_clear_errors_and_the_daemon_keeps_serving() {
    let h = Harness::start().unwrap();
    let many_args = format!("[Service]\nExecStart=/bin/true{}\n", " x".repeat(20_000));
    let many_env = format!(
        "[Service]\nExecStart=/bin/true\n{}",
        "Environment=A=b\n".repeat(30_000)
    );
    let long_line = format!("[Service]\nExecStart=/bin/echo {}\n", "y".repeat(900_000));
    let many_unknown = format!(
        "[Service]\nExecStart=/bin/true\n{}",
        "NoSuchDirective=1\n".repeat(30_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("nul", b"[Service]\nExecStart=/bin/tr\0ue\n".to_vec()),
        (
            "utf8",
            b"[Service]\nExecStart=/bin/true \xff\xfe\n".to_vec(),
        ),
        ("garbage", (0u8..=255).cycle().take(50_000).collect()),
        (
            "quote",
            b"[Service]\nExecStart=/bin/echo \"unterminated\n".to_vec(),
        ),
        (
            "continuation",
            b"[Service]\nExecStart=/bin/echo \\".to_vec(),
        ),
        (
            "specifier",
            b"[Service]\nExecStart=/bin/echo %z %\n".to_vec(),
        ),
        ("relative", b"[Service]\nExecStart=bin/true\n".to_vec()),
        ("nosection", b"ExecStart=/bin/true\n".to_vec()),
        ("args", many_args.into_bytes()),
        ("env", many_env.into_bytes()),
        ("longline", long_line.into_bytes()),
        ("unknown", many_unknown.into_bytes()),
        ("toolarge", vec![b'#'; 2 * 1024 * 1024]),
    ];
    for (name, contents) in &cases {
        let image = format!("hostile{name}");
        ImageBuilder::new(&h.images_dir().join(&image))
            .file(
                &format!("usr/lib/systemd/system/{image}.service"),
                contents,
                0o644,
            )
            .os_release(&format!("ID=test\nPORTABLE_PREFIXES={image}\n"))
            .build()
            .unwrap();

        let attach = h.berth(&["attach", &image]).unwrap();
        let start = attach
            .status
            .success()
            .then(|| h.berth(&["start", &image]).unwrap());

        for out in std::iter::once(&attach).chain(start.as_ref()) {
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.starts_with("berth: ") && err.trim_end().lines().count() == 1,
                    "{name}: unclear error: {err}"
                );
            }
        }
        if *name == "longline" {
            // execve would refuse a 900 KB argument; berth says so before asking the helper.
            let start = start.as_ref().expect("longline attaches");
            let err = String::from_utf8_lossy(&start.stderr);
            assert!(err.contains("the most is"), "{err}");
        }
        assert_still_serving(&h);
    }
}

#[test]
fn a_list_too_large_for_one_reply_says_to_use_more() {
    let h = Harness::start().unwrap();
    attach_many_units(&h, "lots", 1001);

    let reply = raw_call(&h.socket(), br#"{"method":"io.berth.Manager.List"}"#);
    let listed = h.berth_json(&["list"]).unwrap();

    assert!(
        reply.contains("io.berth.Manager.ReplyTooLarge") && reply.contains("1001"),
        "{}",
        &reply[..reply.len().min(300)]
    );
    assert_eq!(listed.as_array().unwrap().len(), 1001);
}

#[test]
fn a_client_that_stops_sending_before_reading_still_gets_its_whole_reply() {
    let h = Harness::start().unwrap();
    attach_many_units(&h, "whole", 1000);
    let mut stream = UnixStream::connect(h.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"{\"method\":\"io.berth.Manager.List\"}\0")
        .unwrap();
    // The reply (about 290 KB) cannot fit in the socket buffer before the daemon sees the end
    // of the client's input and drops the connection on its side.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();

    assert_eq!(reply.last(), Some(&0u8), "the reply was cut short");
    let json: serde_json::Value = serde_json::from_slice(&reply[..reply.len() - 1]).unwrap();
    assert_eq!(json["parameters"]["units"].as_array().unwrap().len(), 1000);
}

#[test]
fn a_logs_stream_answers_at_once_even_without_records() {
    let h = Harness::start().unwrap();
    busybox_image(&h.images_dir(), "hello").unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    let call = |params: &str| {
        let request =
            format!(r#"{{"method":"io.berth.Manager.Logs","parameters":{params},"more":true}}"#);
        // Below the 5 s keepalive: the first reply must not wait for it.
        raw_call_within(&h.socket(), request.as_bytes(), Duration::from_secs(4))
    };

    let followed = call(r#"{"unit":"hello"}"#);
    let listed = call(r#"{"unit":"hello","follow":false}"#);

    assert!(followed.contains(r#""continues":true"#), "{followed}");
    assert!(
        listed.contains(r#""entries":[]"#) && !listed.contains(r#""continues":true"#),
        "{listed}"
    );
}

#[test]
fn a_file_of_an_unknown_format_names_the_bytes_it_found() {
    let h = Harness::start().unwrap();
    let junk = h.images_dir().join("junk_1.raw");
    std::fs::write(&junk, b"not an image at all").unwrap();

    let unknown = h
        .berth_err(&["image", "inspect", junk.to_str().unwrap()])
        .unwrap();

    assert!(
        unknown.contains("unsupported image format: unknown format (first bytes 6e 6f 74"),
        "{unknown}"
    );
    assert_still_serving(&h);
}
