//! The helper's floor against a compromised berthd (issue 7 item 8): Spawn requests sent to
//! berth-helper's socket directly, as user `berth`, with a SandboxSpec no honest berthd would
//! send. Each is refused with the field named, no service runs, and the helper keeps serving;
//! the control, the baseline spec on the same connection, spawns.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use berth_protocol::sandbox::{MAX_PATHS, MAX_SYSCALLS, SandboxSpec};
use berth_protocol::service_program::ServiceProgram;
use berth_testkit::harness::{output_with_timeout, read_lossy};
use berth_testkit::{Harness, ImageBuilder, as_user, wait_until};
use serde_json::{Value, json};

const UID: u32 = 61300;

/// Acts as a compromised berthd: for each case of argv[4] (JSON: name, argv, sandbox), opens
/// the image root, a log `spy/NAME.log` and a control directory `spy/NAME.ctl`, sends Spawn
/// and collects the reply; then pings. Prints {"replies": [...], "ping": reply}. A reply the
/// helper answers by closing the connection is `null`, and the next case reconnects.
const BERTHD: &str = r#"
import array, json, os, socket, sys
helper, image, spy, cases = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(helper)
    return s
def call(s, method, params, fds):
    msg = json.dumps({"method": method, "parameters": params}).encode() + b"\0"
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        s.sendmsg([msg], anc)
        data = b""
        while not data.endswith(b"\0"):
            chunk = s.recv(1 << 20)
            if not chunk:
                return None
            data += chunk
    except (BrokenPipeError, ConnectionResetError):
        return None
    return json.loads(data.rstrip(b"\0"))
s = connect()
replies = []
for c in cases:
    log = os.open(os.path.join(spy, c["name"] + ".log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os.mkdir(os.path.join(spy, c["name"] + ".ctl"), 0o700)
    ctl = os.open(os.path.join(spy, c["name"] + ".ctl"), os.O_RDONLY | os.O_DIRECTORY)
    root = os.open(image, os.O_RDONLY | os.O_DIRECTORY)
    params = {"unit": c["name"] + ".service", "program": c["program"], "environment": ["PATH=/bin"],
              "working_directory": "/", "sandbox": c["sandbox"]}
    reply = call(s, "io.berth.Helper.Spawn", params, [root, log, ctl])
    for fd in (log, ctl, root):
        os.close(fd)
    replies.append(reply)
    if reply is None:
        s.close()
        s = connect()
print(json.dumps({"replies": replies, "ping": call(s, "io.berth.Helper.Ping", {}, [])}))
"#;

/// One Spawn a compromised berthd sends.
struct Case {
    name: &'static str,
    argv: Vec<&'static str>,
    sandbox: Value,
}

/// The baseline spec for [`UID`], as JSON to tamper with.
fn baseline() -> Value {
    serde_json::to_value(SandboxSpec::baseline(UID, UID, "floor")).unwrap()
}

/// A control: the baseline spec, running `echo spawned`.
fn control(name: &'static str) -> Case {
    Case {
        name,
        argv: vec!["/bin/echo", "spawned"],
        sandbox: baseline(),
    }
}

/// A case running `echo escaped` with the baseline spec changed by `tamper`.
fn tampered(name: &'static str, tamper: impl FnOnce(&mut Value)) -> Case {
    let mut sandbox = baseline();
    tamper(&mut sandbox);
    Case {
        name,
        argv: vec!["/bin/echo", "escaped"],
        sandbox,
    }
}

/// What a compromised berthd got back for each case, and the ping after them; and the logs
/// the cases' services wrote, by name.
struct Outcome {
    replies: Vec<Value>,
    ping: Value,
    logs: Vec<String>,
}

/// Sends `cases` to the harness's helper as user berth would, on one connection.
fn spawn_as_berthd(h: &Harness, cases: &[Case]) -> Outcome {
    let private = h.runtime_dir().join("private");
    let berth = fs::metadata(&private).unwrap();
    let (uid, gid) = (berth.uid(), berth.gid());
    let image = ImageBuilder::new(&h.dir().join("floor-image"))
        .build()
        .unwrap();
    let spy = h.dir().join("spy");
    fs::create_dir(&spy).unwrap();
    std::os::unix::fs::chown(&spy, Some(uid), Some(gid)).unwrap();
    let list: Vec<Value> = cases
        .iter()
        .map(|c| {
            let program = ServiceProgram::simple(c.argv.iter().map(|a| a.to_string()).collect());
            json!({"name": c.name, "argv": c.argv, "program": program, "sandbox": c.sandbox})
        })
        .collect();
    let mut cmd = as_user(uid, gid, &[]);
    cmd.args(["/usr/bin/python3", "-c", BERTHD])
        .arg(private.join("io.berth.Helper"))
        .arg(&image)
        .arg(&spy)
        .arg(Value::Array(list).to_string());

    let out = output_with_timeout(cmd, Duration::from_secs(30)).unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    // A spawned service writes its line soon after the reply: wait for the controls' lines
    // before reading any log (an attack's service, had it run, wrote by then too).
    let log_of = |name: &str| -> PathBuf { spy.join(format!("{name}.log")) };
    let _ = wait_until(Duration::from_secs(10), || {
        Ok(cases
            .iter()
            .filter(|c| c.argv.last() == Some(&"spawned"))
            .all(|c| read_lossy(&log_of(c.name)).contains("spawned")))
    });
    Outcome {
        replies: result["replies"].as_array().unwrap().clone(),
        ping: result["ping"].clone(),
        logs: cases.iter().map(|c| read_lossy(&log_of(c.name))).collect(),
    }
}

/// Sends a control, then `attack`, then a control again, on one connection; asserts the
/// attack was refused naming a field that starts with `field` (and giving a reason that holds
/// `reason`, when given), that its service never ran, and that both controls spawned and the
/// helper still answers.
fn assert_refused(attack: Case, field: &str, reason: Option<&str>) {
    let h = Harness::start().unwrap();

    let outcome = spawn_as_berthd(&h, &[control("before"), attack, control("after")]);

    for (i, name) in [(0, "before"), (2, "after")] {
        assert!(
            outcome.replies[i]["parameters"]["main_pid"].is_number(),
            "control {name}: {}",
            outcome.replies[i]
        );
        assert!(
            outcome.logs[i].contains("spawned"),
            "control {name}: {}",
            outcome.logs[i]
        );
    }
    let reply = &outcome.replies[1];
    assert_eq!(reply["error"], "io.berth.Helper.RequestRefused", "{reply}");
    let named = reply["parameters"]["field"].as_str().unwrap_or("");
    assert!(
        named.starts_with(field),
        "refused for {named}, not {field}: {reply}"
    );
    let given = reply["parameters"]["reason"].as_str().unwrap_or("");
    assert!(!given.is_empty(), "{reply}");
    if let Some(reason) = reason {
        assert!(
            given.contains(reason),
            "the reason should say {reason:?}: {reply}"
        );
    }
    assert!(!outcome.logs[1].contains("escaped"), "{}", outcome.logs[1]);
    assert!(
        outcome.ping["error"].is_null() && outcome.ping["parameters"]["manager_uid"].is_number(),
        "the helper stopped serving: {}",
        outcome.ping
    );
}

#[test]
fn a_uid_outside_the_dynamic_range_is_refused() {
    assert_refused(
        tampered("outside", |s| s["identity"]["uid"] = json!(70000)),
        "sandbox.identity.uid",
        Some("outside the dynamic range 61184-65519"),
    );
}

// Privileged-port grants need the image's own users: the supervisor's port broker may take a
// service's sockets only where it owns the service's user namespace.
#[test]
fn port_grants_for_a_dynamic_user_are_refused() {
    assert_refused(
        tampered("ports", |s| s["privileged_ports"] = json!([80])),
        "sandbox.privileged_ports",
        Some("uid block"),
    );
}

// A compromised berthd granting a port the helper does not (grantable_ports: every port from 1
// to 1023 by default) to a service of the image's own users.
#[test]
fn a_port_grant_outside_grantable_ports_is_refused() {
    assert_refused(
        tampered("ungrantable", |s| {
            s["identity"]["uid"] = json!(524_288);
            s["identity"]["gid"] = json!(524_288);
            s["identity"]["user_block"] = json!({"first": 524_288, "size": 65_536});
            s["privileged_ports"] = json!([80, 8080]);
        }),
        "sandbox.privileged_ports",
        Some("port 8080 is not in this berth-helper's grantable_ports"),
    );
}

#[test]
fn root_as_the_service_uid_is_refused() {
    assert_refused(
        tampered("root", |s| s["identity"]["uid"] = json!(0)),
        "sandbox.identity.uid",
        Some("outside the dynamic range 61184-65519"),
    );
}

#[test]
fn root_as_the_service_gid_is_refused() {
    assert_refused(
        tampered("rootgroup", |s| s["identity"]["gid"] = json!(0)),
        "sandbox.identity.gid",
        Some("outside the dynamic range 61184-65519"),
    );
}

#[test]
fn a_capability_in_the_bounding_set_is_refused() {
    assert_refused(
        tampered("bounding", |s| {
            s["capabilities"]["bounding"] = json!(["CAP_SYS_ADMIN"]);
        }),
        "sandbox.capabilities",
        None,
    );
}

#[test]
fn an_ambient_capability_is_refused() {
    assert_refused(
        tampered("ambient", |s| {
            s["capabilities"]["bounding"] = json!(["CAP_NET_RAW"]);
            s["capabilities"]["ambient"] = json!(["CAP_NET_RAW"]);
        }),
        "sandbox.capabilities",
        None,
    );
}

#[test]
fn a_service_without_no_new_privs_is_refused() {
    assert_refused(
        tampered("privs", |s| s["no_new_privileges"] = json!(false)),
        "sandbox.no_new_privileges",
        None,
    );
}

#[test]
fn a_shared_tmp_is_refused() {
    assert_refused(
        tampered("sharedtmp", |s| s["mounts"]["private_tmp"] = json!(false)),
        "sandbox.mounts",
        None,
    );
}

#[test]
fn the_host_dev_is_refused() {
    assert_refused(
        tampered("hostdev", |s| s["mounts"]["private_devices"] = json!(false)),
        "sandbox.mounts",
        None,
    );
}

// A relaxation the floor clamps rather than refuses: asking for writable kernel tunables gets
// the read-only /proc/sys all the same (the service is spawned, and its mount table shows it).
#[test]
fn writable_kernel_tunables_are_clamped_to_read_only() {
    let h = Harness::start().unwrap();
    let mut attack = tampered("tunables", |s| {
        s["mounts"]["protect_kernel_tunables"] = json!(false);
    });
    attack.argv = vec!["/bin/grep", " /proc/sys ", "/proc/self/mountinfo"];

    let outcome = spawn_as_berthd(&h, &[attack, control("after")]);

    assert!(
        outcome.replies[0]["parameters"]["main_pid"].is_number(),
        "{}",
        outcome.replies[0]
    );
    let line = outcome.logs[0]
        .lines()
        .find(|l| l.contains(" /proc/sys "))
        .unwrap_or_else(|| panic!("no /proc/sys mount: {}", outcome.logs[0]));
    assert!(line.contains(" ro,"), "{line}");
}

/// `@system-service`'s names (enough for echo to run), repeated to `count` entries.
fn system_service_names(count: usize) -> Vec<&'static str> {
    let names = berth_protocol::syscall_groups::expand("@system-service").unwrap();
    names.iter().copied().cycle().take(count).collect()
}

#[test]
fn an_oversized_syscall_filter_is_refused() {
    let names = system_service_names(MAX_SYSCALLS + 1);
    assert_refused(
        tampered("bigfilter", |s| s["syscalls"]["allow"] = json!(names)),
        "sandbox.syscalls.allow",
        Some("more than 1024"),
    );
}

// The control of the bound: as many names as it allows make a filter that spawns.
#[test]
fn a_syscall_filter_at_the_bound_is_accepted() {
    let h = Harness::start().unwrap();
    let mut filtered = control("bound");
    filtered.sandbox["syscalls"]["allow"] = json!(system_service_names(MAX_SYSCALLS));

    let outcome = spawn_as_berthd(&h, &[filtered]);

    assert!(
        outcome.replies[0]["parameters"]["main_pid"].is_number(),
        "{}",
        outcome.replies[0]
    );
    assert!(outcome.logs[0].contains("spawned"), "{}", outcome.logs[0]);
}

// SystemCallArchitectures=x86 would let the service make i386 syscalls, which the filter's
// native checks do not see.
#[test]
fn a_foreign_syscall_architecture_is_refused() {
    assert_refused(
        tampered("foreign", |s| {
            s["syscalls"]["architectures"] = json!(["native", "x86"]);
        }),
        "sandbox.syscalls.architectures",
        None,
    );
}

#[test]
fn an_unknown_syscall_name_is_refused() {
    assert_refused(
        tampered("unknown", |s| {
            s["syscalls"]["deny"] = json!(["no_such_syscall"]);
        }),
        "sandbox.syscalls",
        Some("no_such_syscall"),
    );
}

/// A BindPaths= entry from `source` to /mnt.
fn bind(source: &str) -> Value {
    json!([{"source": source, "target": "/mnt", "read_only": true, "recursive": false,
            "ignore_missing": false}])
}

// helper.toml's bind_sources is empty by default: no host path may be bound in, whatever
// berthd asks.
#[test]
fn a_host_path_outside_the_allowed_bind_sources_is_refused() {
    assert_refused(
        tampered("bindetc", |s| s["mounts"]["bind_paths"] = bind("/etc")),
        "sandbox.mounts.bind_paths",
        Some("bind_sources"),
    );
}

#[test]
fn a_bind_source_that_climbs_out_with_dot_dot_is_refused() {
    assert_refused(
        tampered("binddots", |s| {
            s["mounts"]["bind_paths"] = bind("/srv/../etc")
        }),
        "sandbox.mounts.bind_paths",
        Some("not normalized"),
    );
}

// DeviceAllow= may name only what helper.toml's allowed_devices lists (nothing by default).
#[test]
fn a_host_device_the_floor_does_not_list_is_refused() {
    assert_refused(
        tampered("device", |s| {
            s["mounts"]["device_allow"] =
                json!([{"path": "/dev/sda", "read": true, "write": true, "mknod": false}]);
        }),
        "sandbox.mounts.device_allow",
        Some("allowed_devices"),
    );
}

#[test]
fn more_paths_than_the_bound_are_refused() {
    let paths: Vec<Value> = (0..=MAX_PATHS)
        .map(|i| json!({"path": format!("/p{i}"), "ignore_missing": true}))
        .collect();
    assert_refused(
        tampered("manypaths", |s| {
            s["mounts"]["read_only_paths"] = json!(paths)
        }),
        "sandbox.mounts.read_only_paths",
        Some("more than 64"),
    );
}
