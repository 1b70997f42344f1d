//! StateDirectory= and its kind through berthd (ISSUE 7 item 2): the state is kept across
//! restarts and re-owned to each run's uid, the runtime directory and the private /tmp are
//! fresh at every start, the configuration directory is the administrator's and read-only.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder, busybox_image, ns_inode};
use rustix::process::{Pid, PidfdFlags};

const WAIT: Duration = Duration::from_secs(10);
/// The two uids of the range: one for the service under test, one for a filler that holds
/// the other so that the service's next run gets a new uid.
const UIDS: (u32, u32) = (61510, 61511);

/// Each run prints what it finds of the previous runs, leaves something everywhere, and
/// reports its uid and the owner of its state.
const RUN: &str = "#!/bin/sh\n\
echo \"found state=$(cat /var/lib/app/runs 2>/dev/null | wc -l) run=$(ls /run/app) tmp=$(ls /tmp)\"\n\
echo run >> /var/lib/app/runs\n\
echo cached > /var/cache/app/c\n\
touch /run/app/left /tmp/left\n\
echo \"uid=$(id -u) owner=$(stat -c %u /var/lib/app/runs) env=$STATE_DIRECTORY:$RUNTIME_DIRECTORY\"\n";

const UNIT: &str = "[Service]\nType=oneshot\nStateDirectory=app\nCacheDirectory=app\n\
RuntimeDirectory=app\nExecStart=/usr/bin/run-once\n";

fn harness() -> Harness {
    Harness::start_with_config(&format!(
        "dynamic_uid_min = {}\ndynamic_uid_max = {}\n",
        UIDS.0, UIDS.1
    ))
    .unwrap()
}

/// The profile of every attachment here: level 2, whose services run as dynamic uids, which
/// these tests hand from run to run (level 3's image users keep one block: image_users.rs).
const LEVEL_2: [&str; 2] = ["--profile", "default@2"];

/// Attaches image `app` with `app.service` as `unit` and the run-once script.
fn attach_app(h: &Harness, unit: &str) {
    ImageBuilder::new(&h.images_dir().join("app"))
        .file("usr/bin/run-once", RUN, 0o755)
        .unit("app.service", unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "app", LEVEL_2[0], LEVEL_2[1]])
        .unwrap();
}

/// Runs app.service once; returns the two lines it printed.
fn run_app(h: &Harness) -> (String, String) {
    let before = h
        .berth_ok(&["logs", "app", "-o", "cat"])
        .unwrap()
        .lines()
        .count();
    h.berth_ok(&["start", "app"]).unwrap();
    let log = h.berth_ok(&["logs", "app", "-o", "cat"]).unwrap();
    let lines: Vec<&str> = log.lines().skip(before).collect();
    assert_eq!(lines.len(), 2, "{log}");
    (lines[0].to_owned(), lines[1].to_owned())
}

/// Makes sure `uid` is held by a running service (a filler) and the other uid of the range is
/// free, so that app's next run gets the other one.
fn hold(h: &Harness, uid: u32) {
    for name in ["filler-a", "filler-b"] {
        busybox_image(&h.images_dir(), name).unwrap();
        h.berth_ok(&["attach", name, LEVEL_2[0], LEVEL_2[1]])
            .unwrap();
    }
    h.berth_ok(&["start", "filler-a"]).unwrap();
    if h.status_json("filler-a").unwrap()["uid"] == uid {
        return;
    }
    // filler-a took the other uid: filler-b gets this one, then filler-a gives the other back.
    h.berth_ok(&["start", "filler-b"]).unwrap();
    assert_eq!(h.status_json("filler-b").unwrap()["uid"], uid);
    h.berth_ok(&["stop", "filler-a"]).unwrap();
}

#[test]
fn state_is_kept_across_runs_and_re_owned_to_the_new_uid_while_run_and_tmp_start_empty() {
    let h = harness();
    attach_app(&h, UNIT);

    let (found_first, first) = run_app(&h);
    let first_uid: u32 = first
        .strip_prefix("uid=")
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    hold(&h, first_uid);
    let (found_second, second) = run_app(&h);

    let second_uid = if first_uid == UIDS.0 { UIDS.1 } else { UIDS.0 };
    assert_eq!(found_first, "found state=0 run= tmp=");
    assert_eq!(
        first,
        format!("uid={first_uid} owner={first_uid} env=/var/lib/app:/run/app")
    );
    assert_eq!(
        found_second, "found state=1 run= tmp=",
        "state lost, or run/tmp kept"
    );
    assert_eq!(
        second,
        format!("uid={second_uid} owner={second_uid} env=/var/lib/app:/run/app")
    );
    let host = h.state_dir().join("private/app");
    for path in [
        host.join("runs"),
        host.clone(),
        h.state_dir().join("cache/app/c"),
    ] {
        assert_eq!(
            fs::metadata(&path).unwrap().uid(),
            second_uid,
            "{}",
            path.display()
        );
    }
    let parent = fs::metadata(h.state_dir().join("private")).unwrap();
    assert_eq!(parent.mode() & 0o777, 0o700);
}

#[test]
fn the_runtime_directory_and_the_private_tmp_of_a_running_service_are_gone_once_it_stops() {
    let h = harness();
    let unit = "[Service]\nRuntimeDirectory=app\n\
ExecStart=/bin/sh -c 'touch /run/app/left /tmp/left; exec sleep 1000'\n";
    attach_app(&h, unit);
    h.berth_ok(&["start", "app"]).unwrap();
    let pid = h.status_json("app").unwrap()["main_pid"].as_u64().unwrap();
    let root = format!("/proc/{pid}/root");
    h.wait_for(
        || Ok(fs::metadata(format!("{root}/run/app/left")).is_ok()),
        WAIT,
    )
    .unwrap();
    let owner = fs::metadata(format!("{root}/run/app")).unwrap().uid();
    // The tmpfs of /run and /tmp belong to the service's mount namespace (its root is private:
    // nothing propagates out), so they go with its last process. Held by pidfd, as pids and
    // namespace inodes are reused by the sandboxes of tests running alongside.
    let namespace = ns_inode(pid as u32, "mnt").unwrap();
    let inside: Vec<OwnedFd> = processes_in_mount_namespace(namespace)
        .into_iter()
        .filter_map(|p| {
            rustix::process::pidfd_open(Pid::from_raw(p as i32)?, PidfdFlags::empty()).ok()
        })
        .collect();

    h.berth_ok(&["stop", "app"]).unwrap();

    assert!(
        UIDS.0 <= owner && owner <= UIDS.1,
        "runtime directory owned by {owner}"
    );
    assert!(
        inside.len() >= 2,
        "the control found {} processes (init and main) in the running service's mount namespace",
        inside.len()
    );
    let alive = inside.iter().filter(|fd| !exited(fd)).count();
    assert_eq!(
        alive, 0,
        "processes keep the stopped service's /run and /tmp"
    );
    assert!(!std::path::Path::new(&root).exists());
}

/// Whether the process of `pidfd` has exited (its pidfd reads ready).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut poll = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no timeout.
    unsafe { libc::poll(poll.as_mut_ptr(), 1, 0) == 1 }
}

/// The processes in mount namespace `namespace` (by its inode).
fn processes_in_mount_namespace(namespace: u64) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter(|pid| ns_inode(*pid, "mnt").is_ok_and(|ns| ns == namespace))
        .collect()
}

#[test]
fn the_configuration_directory_is_the_administrators_and_read_only() {
    let h = harness();
    let config = h.state_dir().join("configuration/app");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("app.conf"), "setting=1\n").unwrap();
    let unit = "[Service]\nType=oneshot\nConfigurationDirectory=app\n\
ExecStart=/bin/sh -c 'cat /etc/app/app.conf; touch /etc/app/x || echo read-only; echo $CONFIGURATION_DIRECTORY'\n";
    attach_app(&h, unit);

    h.berth_ok(&["start", "app"]).unwrap();

    let log = h.berth_ok(&["logs", "app", "-o", "cat"]).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("touch")).collect();
    assert_eq!(lines, ["setting=1", "read-only", "/etc/app"]);
    assert_eq!(fs::metadata(&config).unwrap().uid(), 0);
}
