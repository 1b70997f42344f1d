//! Stock Debian services, end to end (issue 9): squashfs images of bookworm's `redis-server`
//! and `nginx-light` built by debootstrap (tests/src/debian_images.rs: units untouched, the
//! portable conventions added, cached under /var/cache/berth-tests), attached with the
//! default profile, started by their own units, and asked their own protocol from the host.
//!
//! redis listens on 6379 and nginx on 80 of the host's network, so the tests of this file take
//! turns (one lock), and each first checks that nothing else answers on its port. The first
//! run on a machine downloads the packages (debootstrap, about a minute); a failure to build
//! an image fails the test, it never skips.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use berth_testkit::debian_images::{self, BUILD_STAMP, DebianImage};
use berth_testkit::procfs::{descendants, mounts_under, processes_referencing};
use berth_testkit::{Harness, process_exists, service_clients, wait_until};
use serde_json::Value;

/// How long a service gets to come up (the images' first mount, a loaded machine).
const START: Duration = Duration::from_secs(60);
/// Per socket operation.
const IO: Duration = Duration::from_secs(10);
const REDIS_PORT: u16 = 6379;
const HTTP_PORT: u16 = 80;
const REDIS_UNIT: &str = "redis-server.service";
const NGINX_UNIT: &str = "nginx.service";

/// One test at a time: they share the host's ports 6379 and 80.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn addr(port: u16) -> SocketAddr {
    service_clients::localhost(port)
}

/// Fails when something already answers on `port`: a stray service there would answer for
/// the one under test.
fn assert_port_free(port: u16) {
    assert!(
        TcpStream::connect_timeout(&addr(port), Duration::from_secs(1)).is_err(),
        "something already listens on 127.0.0.1:{port}; the test needs the port for itself"
    );
}

fn redis(command: &str) -> Result<String> {
    service_clients::redis_command(REDIS_PORT, command, IO)
}

/// Waits until redis answers PING (it may take the port a moment after READY=1 on a loaded
/// machine; berth start returns at READY=1).
fn wait_for_redis(h: &Harness) {
    h.wait_for(|| Ok(redis("PING").is_ok_and(|r| r == "+PONG")), START)
        .unwrap();
}

/// The image in the harness's pool, attached with the default profile at level 3 (the
/// image's own users; named until a bare `default` gives that level) and `extra` options.
fn attach(h: &Harness, image: &DebianImage, extra: &[&str]) {
    image.place_in(&h.images_dir()).unwrap();
    let mut args = vec!["attach", "--profile", "default@3", image.name];
    args.extend_from_slice(extra);
    h.berth_ok(&args).unwrap();
}

/// Starts `unit` and waits for it to be running; the status then.
fn start(h: &Harness, unit: &str) -> Value {
    let out = h.berth(&["start", unit]).unwrap();
    let status = h.status_json(unit).unwrap();
    assert!(
        out.status.success(),
        "berth start {unit} failed: {}\nstatus: {status:#}\nlogs:\n{}\nberthd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.berth(&["logs", unit])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default(),
        h.stderr_log()
    );
    h.wait_for(|| Ok(h.status_json(unit)?["state"] == "running"), START)
        .unwrap();
    h.status_json(unit).unwrap()
}

fn main_pid(status: &Value) -> u32 {
    let pid = status["main_pid"].as_u64();
    u32::try_from(pid.unwrap_or(0)).unwrap_or(0)
}

/// The first host uid of the unit's block, as berth status reports it.
fn block_first(status: &Value) -> u32 {
    let block = &status["uid_block"];
    assert_eq!(
        block["size"], 65536,
        "the unit runs without a uid block of its own: {status:#}"
    );
    u32::try_from(block["first"].as_u64().unwrap()).unwrap()
}

/// The real, effective, saved and file-system uids of `pid`, as the host sees them.
fn host_uids(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect()
}

/// Host uid `host` as the user namespace of `pid` sees it, through its `uid_map`.
fn uid_inside(pid: u32, host: u32) -> Option<u32> {
    let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    map.lines().find_map(|l| {
        let f: Vec<u32> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let (inside, outside, count) = (f[0], f[1], f[2]);
        (host >= outside && host - outside < count).then(|| inside + (host - outside))
    })
}

/// The uid of `user` in the image's own /etc/passwd.
fn image_uid(image: &DebianImage, user: &str) -> u32 {
    image.user_ids(user).unwrap().0
}

/// Asserts that `pid` runs as image user `uid` inside (all four ids) and as block id
/// `first + uid` on the host.
fn assert_runs_as(pid: u32, first: u32, uid: u32, what: &str) {
    let host = host_uids(pid);
    assert!(
        host.iter().all(|&u| u == first + uid),
        "{what} (pid {pid}) runs as host uids {host:?}, not {} (block {first} + image uid {uid})",
        first + uid
    );
    assert_eq!(
        uid_inside(pid, host[0]),
        Some(uid),
        "{what} (pid {pid}): host uid {} is not uid {uid} in its user namespace (uid_map {:?})",
        host[0],
        fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default()
    );
}

/// What the image a process was started from says it is ([`BUILD_STAMP`] in its root).
fn build_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/root/{BUILD_STAMP}"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The directory of `pid`'s cgroup in the host's unified hierarchy.
fn cgroup_dir(pid: u32) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("pid {pid} is in no cgroup v2 cgroup: {text}"));
    let mount = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    let dir = Path::new(mount).join(path.trim_start_matches('/'));
    assert!(
        dir.is_dir(),
        "no cgroup directory {} for pid {pid}",
        dir.display()
    );
    dir
}

/// Loop devices whose backing file lies under `dir`.
fn loop_devices_backed_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = fs::read_to_string(&backing)
            && Path::new(file.trim()).starts_with(dir)
        {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn redis_answers_ping_as_the_images_redis_user_in_its_block() {
    let _turn = one_at_a_time();
    let image = debian_images::redis(1);
    let h = Harness::start().unwrap();
    attach(&h, &image, &[]);
    assert_port_free(REDIS_PORT);

    let status = start(&h, REDIS_UNIT);
    wait_for_redis(&h);

    assert_eq!(redis("PING").unwrap(), "+PONG");
    let first = block_first(&status);
    let redis_uid = image_uid(&image, "redis");
    let pid = main_pid(&status);
    assert_runs_as(pid, first, redis_uid, "redis-server");
    for child in descendants(&[pid]) {
        assert_runs_as(child, first, redis_uid, "a child of redis-server");
    }
    assert_eq!(status["profile"], "default@3", "{status:#}");
    assert_eq!(status["user"], "redis", "{status:#}");
    assert_eq!(status["uid"], u64::from(first + redis_uid), "{status:#}");
}

#[test]
fn a_redis_key_survives_a_restart_and_a_reattach_to_a_rebuilt_image() {
    let _turn = one_at_a_time();
    let h = Harness::start().unwrap();
    attach(&h, &debian_images::redis(1), &[]);
    assert_port_free(REDIS_PORT);
    start(&h, REDIS_UNIT);
    wait_for_redis(&h);
    assert_eq!(redis("SET berth-e2e survives").unwrap(), "+OK");

    h.berth_ok(&["restart", REDIS_UNIT]).unwrap();
    wait_for_redis(&h);
    let after_restart = redis("GET berth-e2e").unwrap();
    debian_images::redis(2).place_in(&h.images_dir()).unwrap();
    h.berth_ok(&["reattach", "--now", "redis_2"]).unwrap();
    let status = h.status_json(REDIS_UNIT).unwrap();
    h.wait_for(
        || Ok(h.status_json(REDIS_UNIT)?["state"] == "running"),
        START,
    )
    .unwrap();
    wait_for_redis(&h);
    let after_reattach = redis("GET berth-e2e").unwrap();

    assert_eq!(after_restart, "survives");
    let pid = main_pid(&h.status_json(REDIS_UNIT).unwrap());
    assert_eq!(
        build_of(pid),
        "redis 2",
        "status after reattach: {status:#}"
    );
    assert_eq!(after_reattach, "survives");
}

#[test]
fn nginx_serves_its_default_page_on_port_80_with_www_data_workers() {
    let _turn = one_at_a_time();
    let image = debian_images::nginx(1);
    let h = Harness::start().unwrap();
    attach(&h, &image, &["--port", "80"]);
    assert_port_free(HTTP_PORT);

    let status = start(&h, NGINX_UNIT);
    let (status_line, body) = service_clients::http_get(HTTP_PORT, "/", IO).unwrap();

    assert!(status_line.contains(" 200 "), "GET / gave {status_line:?}");
    assert!(
        body.contains("<title>Welcome to nginx!</title>"),
        "GET / did not return nginx's default page:\n{body}"
    );
    assert_eq!(status["ports"], serde_json::json!([80]), "{status:#}");
    let first = block_first(&status);
    let master = main_pid(&status);
    assert_runs_as(master, first, 0, "nginx's master");
    let workers = descendants(&[master]);
    assert!(
        !workers.is_empty(),
        "nginx's master {master} has no workers"
    );
    let www_data = image_uid(&image, "www-data");
    for w in workers {
        assert_runs_as(w, first, www_data, "an nginx worker");
    }
}

#[test]
fn after_stop_and_detach_no_process_mount_or_loop_device_is_left() {
    let _turn = one_at_a_time();
    let h = Harness::start().unwrap();
    attach(&h, &debian_images::redis(1), &[]);
    attach(&h, &debian_images::nginx(1), &["--port", "80"]);
    assert_port_free(REDIS_PORT);
    assert_port_free(HTTP_PORT);
    let (mut pids, mut cgroups) = (Vec::new(), Vec::new());
    for unit in [REDIS_UNIT, NGINX_UNIT] {
        let pid = main_pid(&start(&h, unit));
        pids.push(pid);
        pids.extend(descendants(&[pid]));
        cgroups.push(cgroup_dir(pid));
    }
    assert!(!loop_devices_backed_under(h.dir()).is_empty());

    h.berth_ok(&["stop", REDIS_UNIT, NGINX_UNIT]).unwrap();
    h.berth_ok(&["detach", "redis"]).unwrap();
    h.berth_ok(&["detach", "nginx"]).unwrap();

    let daemons = [h.berthd_pid(), h.helper_pid()];
    let left = || -> Result<Vec<String>> {
        let mut left = Vec::new();
        left.extend(
            pids.iter()
                .filter(|&&p| process_exists(p))
                .map(|p| format!("service process {p}")),
        );
        left.extend(
            processes_referencing(h.dir())
                .into_iter()
                .filter(|p| !daemons.contains(&Some(*p)))
                .map(|p| {
                    format!(
                        "process {p} ({:?})",
                        fs::read_link(format!("/proc/{p}/exe"))
                    )
                }),
        );
        left.extend(
            cgroups
                .iter()
                .filter(|c| c.exists())
                .map(|c| format!("cgroup {}", c.display())),
        );
        left.extend(
            mounts_under(h.dir())?
                .into_iter()
                .map(|m| format!("mount {m}")),
        );
        left.extend(
            loop_devices_backed_under(h.dir())
                .into_iter()
                .map(|l| format!("loop device {l}")),
        );
        Ok(left)
    };
    let gone = wait_until(Duration::from_secs(20), || Ok(left()?.is_empty()));
    if gone.is_err() {
        panic!("left behind after stop and detach: {:#?}", left().unwrap());
    }
    assert!(TcpStream::connect_timeout(&addr(REDIS_PORT), IO).is_err());
    assert!(TcpStream::connect_timeout(&addr(HTTP_PORT), IO).is_err());
}
