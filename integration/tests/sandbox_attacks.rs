//! The attack catalogue: a hostile service tries, from inside its sandbox, the attacks of
//! research/sandbox-peers.md §4 that apply to a running service and the findings of issue 7,
//! with the probe's `--try` attempts (tests/src/bin/probe/attempts.rs). Each test shows the
//! attack fails inside and has a control that must succeed: the same attempt working where the
//! sandbox does not hold it (on the host, as an unprivileged user or as root in throwaway
//! namespaces), or the legitimate version of the same act working inside.
//!
//! Where the other cases of §4 are: #6, #10–#12, #18, #20 (files) and #21 (tmpfs size) in
//! attacks.rs; #5 (set-uid binaries) and #15 (capabilities, NNP) in acceptance.rs; #1–#4 and #7–#9
//! (hostile images) in hostile_directory_images.rs, tarball_images.rs, gpt_images.rs and
//! raw_images.rs; the helper's own surface (#22, #23 for the helper's protocol) in
//! compromised_berth.rs, bad_input.rs and resource_bounds.rs. Issue 7's abstract-socket finding
//! (#19 on the host network: the host's and another service's abstract sockets) is in
//! service_credentials.rs, the per-service firewall in ip_firewall.rs, a recycled uid's files
//! in service_directories.rs, and each profile and directive from inside in
//! sandbox_profiles.rs.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::process::Command;
use std::time::Duration;

use berth_testkit::attempts::{self, NOBODY, refused, try_args};
use berth_testkit::harness::output_with_timeout;
use berth_testkit::{Harness, ImageBuilder, as_user, probe_output, probe_path};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The probe as oneshot `name.service` of image `name`, attached with the default profile.
fn probe_service(h: &Harness, name: &str, directives: &str, probe_args: &str) -> Value {
    attempts::probe_service(h, name, &[], directives, probe_args, |image| image).unwrap()
}

/// [`probe_service`] attached at level 2, as a dynamic uid: what these tests hold of its uid
/// (one uid handed from service to service) is level 2's; level 3 gives each image its own
/// block instead (image_users.rs).
fn probe_service_at_level_2(h: &Harness, name: &str, probe_args: &str) -> Value {
    let at = ["--profile", "default@2"];
    attempts::probe_service(h, name, &at, "", probe_args, |image| image).unwrap()
}

fn host_probe(command: Command, tries: &[&str]) -> Value {
    attempts::host_probe(command, tries).unwrap()
}

fn on_host_as_nobody(tries: &[&str]) -> Value {
    attempts::on_host_as_nobody(tries).unwrap()
}

fn on_host_as_root_in_namespaces(tries: &[&str]) -> Value {
    attempts::on_host_as_root_in_namespaces(tries).unwrap()
}

/// Asserts that each of `tries` was refused in `inside` and worked in `control`.
fn assert_refused_inside_working_outside(tries: &[&str], inside: &Value, control: &Value) {
    for t in tries {
        let ours = &inside["tries"][t];
        let theirs = &control["tries"][t];
        assert!(
            theirs.as_str().is_some_and(|r| r.starts_with("ok")),
            "control: {t} should work outside the sandbox, got {theirs}"
        );
        assert!(refused(ours), "{t} was not refused in the sandbox: {ours}");
    }
}

/// What needs a capability of the host's namespaces (or of ones it owns): mounts, namespaces
/// without a user namespace, BPF, realtime scheduling, raw packets, the host name.
const NEEDS_A_HOST_CAPABILITY: [&str; 12] = [
    "mount-tmpfs",
    "fsopen",
    "bpf",
    "unshare-mnt",
    "unshare-net",
    "unshare-ipc",
    "unshare-uts",
    "unshare-pid",
    "unshare-cgroup",
    "sched-fifo",
    "socket-packet",
    "sethostname",
];

// #15, #16, #19, #21: what needs a capability fails, since the service (at level 2, a dynamic
// uid) has none: the above, set-uid, and handing a file to another uid and becoming it.
// Control: the same attempts work as root.
#[test]
fn operations_that_need_a_capability_fail_in_the_service() {
    let tries = [&NEEDS_A_HOST_CAPABILITY[..], &["setuid0", "switch-to:33"]].concat();
    let h = Harness::start().unwrap();

    let inside = probe_service_at_level_2(&h, "privileged", &try_args(&tries));

    let control = on_host_as_root_in_namespaces(&tries);
    assert_refused_inside_working_outside(&tries, &inside, &control);
}

// The same at level 3 (block mode), where a unit without User= is root of its own user
// namespace with the capabilities a root master needs there: it may hand a file to one of its
// image's users and become it (nginx's master and www-data), but they reach none of the
// above, which the mount, network, IPC, UTS and pid namespaces (the host's user namespace
// owns them) and the filter keep. Control: the same attempts work as root.
#[test]
fn root_of_its_own_user_namespace_becomes_its_workers_but_gets_no_host_capability() {
    let tries = NEEDS_A_HOST_CAPABILITY;
    let h = Harness::start().unwrap();
    let at = ["--profile", "default@3"];
    let args = try_args(&[&tries[..], &["switch-to:33"]].concat());

    let inside = attempts::probe_service(&h, "nsroot", &at, "", &args, |i| i).unwrap();

    assert_eq!(inside["uid"], 0, "root of its own namespace: {inside}");
    assert_eq!(inside["tries"]["switch-to:33"], "ok: 33");
    let control = on_host_as_root_in_namespaces(&tries);
    assert_refused_inside_working_outside(&tries, &inside, &control);
}

// #17, #18: the service cannot write to cgroupfs (a release_agent escape), /sys or the kernel's
// tunables in /proc. Control: as root on the host each of these opens for writing, and the
// service can create files in its own /tmp.
#[test]
fn kernel_interfaces_of_proc_and_sys_are_not_writable_from_the_service() {
    let mut targets = vec![
        "/proc/sys/kernel/core_pattern".to_owned(),
        "/proc/sysrq-trigger".to_owned(),
        "/sys/kernel/uevent_helper".to_owned(),
        "/sys/fs/cgroup/unified/cgroup.procs".to_owned(),
        "/sys/fs/cgroup/cgroup.procs".to_owned(),
    ];
    // The cgroup v1 hierarchies' release_agent files, as this host has them.
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
        let agent = entry.unwrap().path().join("release_agent");
        if agent.exists() {
            targets.push(agent.to_string_lossy().into_owned());
        }
    }
    targets.retain(|t| std::path::Path::new(t).exists());
    let tries: Vec<String> = targets.iter().map(|t| format!("write:{t}")).collect();
    let tries: Vec<&str> = tries.iter().map(String::as_str).collect();
    let h = Harness::start().unwrap();

    let inside = probe_service(
        &h,
        "kernelfs",
        "",
        &try_args(&[&tries[..], &["create:/tmp/mine"][..]].concat()),
    );

    assert_eq!(inside["tries"]["create:/tmp/mine"], "ok");
    let control = on_host_as_root_in_namespaces(&tries);
    assert_refused_inside_working_outside(&tries, &inside, &control);
}

// #20: SysV shared memory and POSIX message queues a service leaves behind are not there for
// the next service that gets the same dynamic uid (a range of one uid), nor on the host.
// Control: within the first run, the service finds what it made.
#[test]
fn ipc_objects_a_service_leaves_are_gone_for_the_next_holder_of_its_uid() {
    let key = 0x6265_0000 + (std::process::id() & 0xffff);
    let queue = format!("berth-left-{}", std::process::id());
    let h =
        Harness::start_with_config("dynamic_uid_min = 61500\ndynamic_uid_max = 61500\n").unwrap();
    let leave = [
        format!("shm-leave:{key}"),
        format!("mq-leave:{queue}"),
        format!("shm-find:{key}"),
        format!("mq-find:{queue}"),
    ];
    let leave: Vec<&str> = leave.iter().map(String::as_str).collect();
    let find = &leave[2..];

    let first = probe_service_at_level_2(&h, "leaver", &try_args(&leave));
    let second = probe_service_at_level_2(&h, "finder", &try_args(find));

    assert_eq!(first["uid"], 61500);
    assert_eq!(second["uid"], 61500);
    for t in &leave {
        assert_eq!(first["tries"][t], "ok", "{t} in the first service");
    }
    for t in find {
        assert_eq!(second["tries"][t], "ENOENT", "{t} in the second service");
    }
    let host = on_host_as_nobody(find);
    for t in find {
        assert_eq!(host["tries"][t], "ENOENT", "{t} on the host");
    }
}

// #20, and the finding of issue 7: a key a service leaves in its user keyring is not there for
// the next service that gets the same dynamic uid (a range of one uid): berthd releases the
// uid through berth-helper, which clears its keyrings, before handing it out again. Control:
// within the first run, the service reads its key back.
#[test]
fn a_key_a_service_leaves_in_its_user_keyring_is_gone_for_the_next_holder_of_its_uid() {
    let h =
        Harness::start_with_config("dynamic_uid_min = 61501\ndynamic_uid_max = 61501\n").unwrap();
    let description = format!("berth-left-{}", std::process::id());
    let leave = format!("key-add:{description}=secret");
    let find = format!("key-read:{description}");

    let first = probe_service_at_level_2(&h, "leaver", &try_args(&[&leave, &find]));
    let second = probe_service_at_level_2(&h, "finder", &try_args(&[&find]));

    assert_eq!(
        (&first["uid"], &second["uid"]),
        (&61501.into(), &61501.into())
    );
    assert!(
        first["tries"][&leave].as_str().unwrap().starts_with("ok"),
        "the first holder could not add its key: {}",
        first["tries"][&leave]
    );
    assert_eq!(first["tries"][&find], "ok: secret");
    assert_eq!(second["tries"][&find], "ENOKEY");
}

// #20 across daemons: what a uid's holder left while no berthd watched (it ended while
// berthd was down, or before this berthd existed) is gone before the uid's first use by this
// berthd. Control: the key is there for the uid on the host until then.
#[test]
fn a_key_left_for_a_uid_before_berthd_started_is_gone_for_its_first_holder() {
    let uid = 61502;
    let description = format!("berth-earlier-{}", std::process::id());
    let leave = format!("key-add:{description}=secret");
    let find = format!("key-read:{description}");
    let planted = host_probe(as_user(uid, uid, &[]), &[&leave, &find]);
    let h = Harness::start_with_config(&format!(
        "dynamic_uid_min = {uid}\ndynamic_uid_max = {uid}\n"
    ))
    .unwrap();

    let first = probe_service_at_level_2(&h, "holder", &try_args(&[&find]));

    assert_eq!(
        planted["tries"][&find], "ok: secret",
        "the control key was not planted"
    );
    assert_eq!(first["uid"], uid);
    assert_eq!(first["tries"][&find], "ENOKEY");
}

// #23: neither daemon's socket can be reached from a service: they are not in its file system,
// and the daemons hold no abstract socket a service on the host network could reach.
// Control: from the host, nobody reaches the manager's socket and berth the helper's.
#[test]
fn neither_daemon_socket_is_reachable_from_a_service() {
    let h = Harness::start().unwrap();
    let helper_socket = h.runtime_dir().join("private/io.berth.Helper");
    let tries = [
        format!("unix-connect:{}", h.socket().display()),
        format!("unix-connect:{}", helper_socket.display()),
    ];
    let tries: Vec<&str> = tries.iter().map(String::as_str).collect();

    let inside = probe_service(&h, "reach", "", &try_args(&tries));

    for t in &tries {
        assert!(refused(&inside["tries"][t]), "{t}: {}", inside["tries"][t]);
    }
    assert_eq!(on_host_as_nobody(&tries[..1])["tries"][tries[0]], "ok");
    let berth = std::fs::metadata(h.runtime_dir().join("private")).unwrap();
    let (uid, gid) = (
        std::os::unix::fs::MetadataExt::uid(&berth),
        std::os::unix::fs::MetadataExt::gid(&berth),
    );
    assert_eq!(
        host_probe(as_user(uid, gid, &[]), &tries[1..])["tries"][tries[1]],
        "ok"
    );
}

/// The abstract unix socket names bound by the sockets among `pid`'s fds.
fn abstract_sockets_of(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let target = std::fs::read_link(e.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            (path.starts_with('@') && inodes.iter().any(|i| i == inode)).then(|| path.to_string())
        })
        .collect()
}

// #23: the daemons hold no abstract unix socket (a service on the host network shares their
// abstract namespace). Control: the same scan finds the one this test binds.
#[test]
fn the_daemons_hold_no_abstract_socket() {
    let h = Harness::start().unwrap();
    let name = format!("berth-test-abstract-{}", std::process::id());
    let ours = std::os::unix::net::UnixListener::bind_addr(
        &<std::os::unix::net::SocketAddr as SocketAddrExt>::from_abstract_name(name.as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert!(ours.as_raw_fd() > 2);

    let berthd = abstract_sockets_of(h.berthd_pid().unwrap());
    let helper = abstract_sockets_of(h.helper_pid().unwrap());

    assert_eq!(berthd, Vec::<String>::new(), "berthd");
    assert_eq!(helper, Vec::<String>::new(), "berth-helper");
    assert_eq!(
        abstract_sockets_of(std::process::id()),
        vec![format!("@{name}")]
    );
}

// Issue 7's first finding, #16: a service made a user namespace of its own and, with every
// capability in it, mounted tmpfs and overlayfs, made network namespaces and raw sockets.
// Control: an unprivileged user on the host does all of it.
#[test]
fn a_service_makes_no_user_namespace_nor_anything_one_would_give() {
    let tries = [
        "unshare-user",
        "userns-tmpfs",
        "userns-overlay",
        "userns-netns",
        "userns-raw-socket",
    ];
    let h = Harness::start().unwrap();

    let inside = probe_service(&h, "nested", "", &try_args(&tries));

    assert_refused_inside_working_outside(&tries, &inside, &on_host_as_nobody(&tries));
}

// #16, and issue 7's third finding: io_uring, perf events (kernel.perf_event_paranoid=2 here)
// and userfaultfd, which an unprivileged process may use on this host and a service has no
// need of, are refused by the default profile alone. Control: nobody on the host
// opens one.
#[test]
fn io_uring_perf_events_and_userfaultfd_are_refused() {
    let tries = ["io-uring", "perf", "userfaultfd"];
    let h = Harness::start().unwrap();

    let inside = probe_service(&h, "perf", "", &try_args(&tries));

    assert_refused_inside_working_outside(&tries, &inside, &on_host_as_nobody(&tries));
}

// Issue 7's fourth finding: personality(READ_IMPLIES_EXEC) made every readable mapping
// executable. Control: nobody on the host sets it.
#[test]
fn the_personality_cannot_make_readable_memory_executable() {
    let tries = ["personality-rie"];
    let h = Harness::start().unwrap();

    let inside = probe_service(&h, "persona", "", &try_args(&tries));

    assert_refused_inside_working_outside(&tries, &inside, &on_host_as_nobody(&tries));
}

// MemoryDenyWriteExecute=: no mapping is writable and executable at once, nor made executable
// later. Control: nobody on the host does both.
#[test]
fn memory_cannot_be_both_written_and_executed() {
    let tries = ["mmap-wx", "mprotect-exec"];
    let h = Harness::start().unwrap();

    let inside = probe_service(&h, "wx", "", &try_args(&tries));

    assert_refused_inside_working_outside(&tries, &inside, &on_host_as_nobody(&tries));
}

// #5: a service cannot make a set-uid file (for a later holder of its uid to run).
// Control: nobody on the host makes one in /tmp.
#[test]
fn a_service_cannot_make_a_set_uid_file() {
    let tries = ["chmod-suid"];
    let h = Harness::start().unwrap();

    let inside = probe_service(&h, "suid", "", &try_args(&tries));

    assert_refused_inside_working_outside(&tries, &inside, &on_host_as_nobody(&tries));
}

// #14: the i386 entry (int 0x80) is refused, so a filter written for x86-64 numbers cannot
// be bypassed with the other table; clone3, whose flags the filter cannot see, fails with
// ENOSYS so that libc falls back to clone. Control: on the host, int 0x80 runs and clone3
// reaches the kernel (EFAULT for its bad pointer). x32 has no control here: this kernel lacks
// the x32 ABI (ENOSYS on the host too), so its refusal inside shows only that nothing worse
// happens.
#[test]
fn the_i386_entry_is_refused_and_clone3_says_enosys() {
    let h = Harness::start().unwrap();

    let inside = probe_service(&h, "abi", "", &try_args(&["int80", "x32", "clone3"]));

    let host = on_host_as_nobody(&["int80", "x32", "clone3"]);
    assert_refused_inside_working_outside(&["int80"], &inside, &host);
    assert!(
        refused(&inside["tries"]["x32"]),
        "{}",
        inside["tries"]["x32"]
    );
    assert_eq!(host["tries"]["clone3"], "EFAULT");
    assert_eq!(inside["tries"]["clone3"], "ENOSYS");
}

// #19: on the host network, only the families a service needs: no netlink (the host's routing
// and more), no packet sockets. Control: unix and IP sockets work inside, netlink as nobody on
// the host.
#[test]
fn a_service_opens_only_unix_and_ip_sockets() {
    let h = Harness::start().unwrap();
    let all = [
        "socket-unix",
        "socket-inet",
        "socket-inet6",
        "socket-netlink",
        "socket-packet",
    ];

    let inside = probe_service(&h, "families", "", &try_args(&all));

    for t in &all[..3] {
        assert_eq!(inside["tries"][t], "ok", "{t}");
    }
    let tries = ["socket-netlink"];
    assert_refused_inside_working_outside(&tries, &inside, &on_host_as_nobody(&tries));
    assert!(refused(&inside["tries"]["socket-packet"]));
}

// #13: a service started from a terminal cannot push input into it (TIOCSTI; this host has
// dev.tty.legacy_tiocsti=1): it has no controlling terminal and none of its fds is the
// caller's. Control: the probe run under the same kind of pseudo-terminal on the host pushes
// a byte.
#[test]
fn a_service_started_from_a_terminal_cannot_push_input_into_it() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("tty"))
        .probe()
        .unit(
            "tty.service",
            "[Service]\nType=oneshot\nExecStart=/usr/bin/berth-probe --try tiocsti\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "tty"]).unwrap();
    let start = format!(
        "{} --socket {} start tty",
        h.bin_dir().join("berth").display(),
        h.socket().display()
    );
    let mut in_terminal = Command::new("script");
    in_terminal.args(["-qec", &start, "/dev/null"]);

    let out = output_with_timeout(in_terminal, TIMEOUT).unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let inside = probe_output(&h.berth_ok(&["logs", "tty"]).unwrap()).unwrap();
    assert!(
        refused(&inside["tries"]["tiocsti"]),
        "{}",
        inside["tries"]["tiocsti"]
    );
    assert_eq!(inside["ctty"], false);
    let probe = format!("{} --try tiocsti", probe_path().unwrap().display());
    let mut control = as_user(NOBODY, NOBODY, &[]);
    control.args(["script", "-qec", &probe, "/dev/null"]);
    let host = attempts::host_probe_output(control).unwrap();
    assert_eq!(host["tries"]["tiocsti"], "ok");
}
