//! What one local user can make berthd hold or wait for is bounded (issue 5, item 1): the bytes
//! of its unfinished messages over all its connections, and the time a started message may take.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_testkit::{Harness, ImageBuilder, as_user, proc_status_field};
use berth_varlink::limits::{BYTES_PER_UID, MAX_MESSAGE_BYTES, MESSAGE_DEADLINE};

/// Opens `count` connections to `socket`, sends each `size` bytes of a message without its
/// NUL, prints how many took it all, then holds them until its stdin closes.
const PARTIAL_SENDER: &str = r#"
import socket, sys
path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
message = b'{"method":"io.berth.Manager.Status","parameters":{"unit":"'
message += b'p' * (size - len(message))
held, whole = [], 0
for _ in range(count):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(message)
        whole += 1
    except OSError:
        pass
    held.append(s)
print(whole, flush=True)
sys.stdin.read()
"#;

/// berthd's resident memory in KiB.
fn rss_kib(h: &Harness) -> u64 {
    let pid = h.berthd_pid().unwrap();
    let field = proc_status_field(pid, "VmRSS").unwrap();
    field.trim_end_matches("kB").trim().parse().unwrap()
}

fn harness_with_unit() -> Harness {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("bounds"))
        .unit("bounds.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();
    h.berth_ok(&["attach", "bounds"]).unwrap();
    h
}

/// Before the bound, 127 such connections took berthd from 4 MiB to 524 MiB.
#[test]
fn partial_messages_of_one_user_leave_berthd_small_and_root_served() {
    let h = harness_with_unit();
    let before = rss_kib(&h);
    let connections = 60;
    let mut sender = as_user(65534, 65534, &[])
        .args(["/usr/bin/python3", "-c", PARTIAL_SENDER])
        .arg(h.socket())
        .arg(connections.to_string())
        .arg((MAX_MESSAGE_BYTES - 4096).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut whole = String::new();
    BufReader::new(sender.stdout.take().unwrap())
        .read_line(&mut whole)
        .unwrap();

    let after = rss_kib(&h);
    let started = Instant::now();
    let status = h.status_json("bounds");
    let took = started.elapsed();
    drop(sender.stdin.take());
    sender.wait().unwrap();

    let grown_mib = after.saturating_sub(before) / 1024;
    let budget_mib = (BYTES_PER_UID / (1024 * 1024)) as u64;
    assert!(
        grown_mib <= 2 * budget_mib,
        "berthd grew by {grown_mib} MiB (budget {budget_mib} MiB per uid); {} connections \
         took a whole partial message",
        whole.trim()
    );
    assert_eq!(status.unwrap()["unit"], "bounds.service");
    assert!(took < Duration::from_secs(2), "root's status took {took:?}");
}

/// berthd's peak resident memory in KiB.
fn peak_kib(h: &Harness) -> u64 {
    let pid = h.berthd_pid().unwrap();
    let field = proc_status_field(pid, "VmHWM").unwrap();
    field.trim_end_matches("kB").trim().parse().unwrap()
}

/// Sends one message of nearly 4 MiB whose parameters are an array of two million zeros and
/// prints the reply.
const ARRAY_SENDER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
body = b'{"method":"io.berth.Manager.Status","parameters":{"unit":['
body += b'0,' * ((int(sys.argv[2]) - len(body)) // 2 - 8) + b'0]}}\0'
s.sendall(body)
print(s.recv(300).decode(errors="replace"), flush=True)
"#;

/// Parsed into a tree before its size was checked, such a message took berthd's memory to
/// 136 MiB.
#[test]
fn oversized_parameters_are_refused_without_parsing_them() {
    let h = Harness::start().unwrap();
    let before = peak_kib(&h);

    let out = as_user(65534, 65534, &[])
        .args(["/usr/bin/python3", "-c", ARRAY_SENDER])
        .arg(h.socket())
        .arg(MAX_MESSAGE_BYTES.to_string())
        .output()
        .unwrap();

    let grown_mib = peak_kib(&h).saturating_sub(before) / 1024;
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("InvalidParameter"), "{reply}");
    assert!(
        grown_mib <= 16,
        "berthd's peak memory grew by {grown_mib} MiB"
    );
}

#[test]
fn a_message_dribbled_past_the_deadline_closes_its_connection() {
    let h = Harness::start().unwrap();
    let mut slow = UnixStream::connect(h.socket()).unwrap();
    let limit = MESSAGE_DEADLINE + Duration::from_secs(3);
    slow.set_write_timeout(Some(limit)).unwrap();
    let started = Instant::now();

    // A byte every 200 ms: the connection is never idle, the message never ends.
    slow.write_all(b"{\"method\":\"io.berth.Manager.List\",")
        .unwrap();
    let mut closed_after = None;
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(b" ").is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let listed = h.berth(&["list"]).unwrap();

    let closed_after = closed_after.expect("the connection was still open after the deadline");
    assert!(
        closed_after >= MESSAGE_DEADLINE - Duration::from_millis(500),
        "closed too early: {closed_after:?}"
    );
    assert!(listed.status.success());
}

#[test]
fn a_connection_that_finishes_its_messages_is_kept() {
    let h = Harness::start().unwrap();
    let mut client = UnixStream::connect(h.socket()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let call = b"{\"method\":\"io.berth.Manager.List\"}\0";

    // Idle for longer than the deadline between two calls: only a started message is timed.
    let first = reply_to(&mut client, call);
    std::thread::sleep(MESSAGE_DEADLINE + Duration::from_secs(1));
    let second = reply_to(&mut client, call);

    assert!(first.starts_with("{\"parameters\""), "{first}");
    assert!(second.starts_with("{\"parameters\""), "{second}");
}

fn reply_to(stream: &mut UnixStream, call: &[u8]) -> String {
    stream.write_all(call).unwrap();
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
