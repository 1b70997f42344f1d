//! The syscall filter through the whole start path: a unit's SystemCallFilter= and the
//! directives systemd builds into the same filter, read by berthd, checked and compiled by
//! berth-helper, installed by the service's main process; seen from inside with the probe's
//! `--try` attempts. Each test has a control: the same attempts in a service without the
//! directive, where they work (or fail otherwise). Needs root and the `berth` user.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;

use berth_testkit::Harness;
use berth_testkit::attempts::{probe_service, try_args};
use serde_json::Value;
use tempfile::TempDir;

/// A berthd whose admin profiles hold `open`, a profile that adds nothing to the baseline, so
/// that a unit attached with it runs under exactly its own directives; the directory must
/// outlive the harness.
fn harness() -> (Harness, TempDir) {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(profiles.path().join("open@1.conf"), "[Service]\n").unwrap();
    // berthd reads it as user berth.
    std::fs::set_permissions(profiles.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!("profiles_dir = {:?}\n", profiles.path());
    (Harness::start_with_config(&config).unwrap(), profiles)
}

/// Attaches `name` with the open profile, its unit running the probe with `tries` and
/// `directives`, runs it once and returns what each attempt gave.
fn tries_of(h: &Harness, name: &str, directives: &str, tries: &[&str]) -> Value {
    let attach = ["--profile", "open"];
    probe_service(h, name, &attach, directives, &try_args(tries), |i| i).unwrap()["tries"].clone()
}

/// `name` (its unit with `directives`) and `name-control` (without them), each run once:
/// what each attempt gave in each, (inside, control).
fn with_and_without(name: &str, directives: &str, tries: &[&str]) -> (Value, Value) {
    let (h, _profiles) = harness();
    let inside = tries_of(&h, name, directives, tries);
    let control = tries_of(&h, &format!("{name}-control"), "", tries);
    (inside, control)
}

fn result<'a>(tries: &'a Value, attempt: &str) -> &'a str {
    tries[attempt]
        .as_str()
        .unwrap_or_else(|| panic!("no result for {attempt}: {tries}"))
}

fn works(tries: &Value, attempt: &str) -> bool {
    result(tries, attempt).starts_with("ok")
}

#[test]
fn system_call_filter_fails_the_denied_groups_with_the_error_number() {
    let tries = ["keyctl", "io-uring", "socket-unix"];

    let (inside, control) = with_and_without(
        "deny",
        "SystemCallFilter=~@keyring @aio\nSystemCallErrorNumber=EACCES\n",
        &tries,
    );

    assert!(
        works(&control, "keyctl") && works(&control, "io-uring"),
        "{control}"
    );
    assert_eq!(result(&inside, "keyctl"), "EACCES");
    assert_eq!(result(&inside, "io-uring"), "EACCES");
    assert!(works(&inside, "socket-unix"), "{inside}");
}

#[test]
fn system_call_filter_without_an_error_number_kills() {
    let (inside, control) = with_and_without("kill", "SystemCallFilter=~@keyring\n", &["keyctl"]);

    assert!(works(&control, "keyctl"), "{control}");
    assert_eq!(result(&inside, "keyctl"), "signal SIGSYS");
}

#[test]
fn an_allow_list_refuses_what_it_leaves_out() {
    let tries = ["keyctl", "socket-inet", "mmap-wx"];

    let (inside, control) = with_and_without(
        "allow",
        "SystemCallFilter=@system-service\nSystemCallFilter=~@keyring\nSystemCallErrorNumber=EPERM\n",
        &tries,
    );

    assert!(works(&control, "keyctl"), "{control}");
    assert_eq!(result(&inside, "keyctl"), "EPERM");
    // What @system-service holds still runs.
    assert!(
        works(&inside, "socket-inet") && works(&inside, "mmap-wx"),
        "{inside}"
    );
}

#[test]
fn native_architecture_only_kills_i386_and_x32_syscalls() {
    let (inside, control) = with_and_without(
        "native",
        "SystemCallArchitectures=native\n",
        &["int80", "x32"],
    );

    assert!(works(&control, "int80"), "{control}");
    // Without a filter the x32 call reaches the kernel, which runs it or says ENOSYS.
    assert_ne!(result(&control, "x32"), "signal SIGSYS");
    assert_eq!(result(&inside, "int80"), "signal SIGSYS");
    assert_eq!(result(&inside, "x32"), "signal SIGSYS");
}

#[test]
fn restrict_namespaces_refuses_user_namespaces_and_answers_clone3_with_enosys() {
    let tries = ["unshare-user", "userns-netns", "clone3"];

    let (inside, control) = with_and_without("ns", "RestrictNamespaces=yes\n", &tries);

    assert!(
        works(&control, "unshare-user") && works(&control, "userns-netns"),
        "{control}"
    );
    assert_eq!(result(&control, "clone3"), "EFAULT");
    assert_eq!(result(&inside, "unshare-user"), "EPERM");
    assert_eq!(result(&inside, "userns-netns"), "EPERM");
    assert_eq!(result(&inside, "clone3"), "ENOSYS");
}

#[test]
fn restrict_namespaces_keeps_the_kinds_it_names() {
    let tries = ["unshare-user", "userns-netns"];

    let (inside, control) = with_and_without("ns-user", "RestrictNamespaces=user\n", &tries);

    assert!(works(&control, "userns-netns"), "{control}");
    assert!(works(&inside, "unshare-user"), "{inside}");
    assert_eq!(result(&inside, "userns-netns"), "EPERM");
}

#[test]
fn restrict_address_families_refuses_netlink_and_packet_sockets() {
    let tries = [
        "socket-unix",
        "socket-inet6",
        "socket-netlink",
        "socket-packet",
    ];

    let (inside, control) = with_and_without(
        "af",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
        &tries,
    );

    assert!(works(&control, "socket-netlink"), "{control}");
    // Without the filter the kernel refuses a packet socket for want of CAP_NET_RAW...
    assert_eq!(result(&control, "socket-packet"), "EPERM");
    assert_eq!(result(&inside, "socket-netlink"), "EAFNOSUPPORT");
    // ... with it, the filter refuses the family first.
    assert_eq!(result(&inside, "socket-packet"), "EAFNOSUPPORT");
    assert!(
        works(&inside, "socket-unix") && works(&inside, "socket-inet6"),
        "{inside}"
    );
}

#[test]
fn personality_writable_code_and_setuid_modes_are_refused() {
    let tries = ["personality-rie", "mmap-wx", "mprotect-exec", "chmod-suid"];

    let (inside, control) = with_and_without(
        "args",
        "LockPersonality=yes\nMemoryDenyWriteExecute=yes\nRestrictSUIDSGID=yes\n",
        &tries,
    );

    for attempt in tries {
        assert!(works(&control, attempt), "control {attempt}: {control}");
        assert_eq!(result(&inside, attempt), "EPERM", "{attempt}");
    }
}

/// The helper's log lines saying it compiled a filter.
fn compilations(h: &Harness) -> usize {
    h.stderr_log()
        .lines()
        .filter(|l| l.contains("compiled a seccomp filter"))
        .count()
}

#[test]
fn each_distinct_filter_is_compiled_once_however_many_starts_use_it() {
    let (h, _profiles) = harness();
    let same = "SystemCallFilter=~@keyring\nSystemCallErrorNumber=EPERM\n";
    let other = "SystemCallFilter=~@aio\nSystemCallErrorNumber=EPERM\n";
    let first = tries_of(&h, "first", same, &["keyctl"]);
    let second = tries_of(&h, "second", same, &["keyctl"]);
    let again = h.run_probe_unit("first").unwrap()["tries"].clone();
    let once = compilations(&h);

    tries_of(&h, "other", other, &["keyctl"]);

    for run in [first, second, again] {
        assert_eq!(result(&run, "keyctl"), "EPERM");
    }
    assert_eq!(once, 1, "{}", h.stderr_log());
    assert_eq!(
        compilations(&h),
        2,
        "a different filter is compiled on its own"
    );
}
