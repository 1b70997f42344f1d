//! berthd run by a service manager (packaging/): the systemd units as systemd reads them,
//! socket activation (`LISTEN_FDS`, through systemd-socket-activate), the readiness
//! notification (`NOTIFY_SOCKET`), and the init script for hosts without systemd.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs::OpenOptions;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_testkit::{Harness, busybox_image, process_exists, procfs};

const WAIT: Duration = Duration::from_secs(20);

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

/// A harness whose own berthd is stopped: its directories, for a berthd started otherwise.
fn directories_only() -> Harness {
    let mut h = Harness::start().unwrap();
    h.stop_berthd().unwrap();
    h
}

/// `berthd --runtime-dir R --state-dir S` of harness `h`, as arguments.
fn berthd_args(h: &Harness) -> Vec<String> {
    vec![
        "--runtime-dir".into(),
        h.runtime_dir().display().to_string(),
        "--state-dir".into(),
        h.state_dir().display().to_string(),
    ]
}

/// Where a process started here logs: the harness's log.
fn log(h: &Harness) -> std::fs::File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(h.log_path())
        .unwrap()
}

/// The berthd of this harness's directories, however it was started.
fn berthd_pid(h: &Harness) -> Option<u32> {
    procfs::processes_referencing(h.dir())
        .into_iter()
        .find(|&p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e.file_name().is_some_and(|n| n == "berthd"))
        })
}

fn stop(child: &mut Child) {
    // SAFETY: plain kill(2) of a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn the_systemd_units_are_what_systemd_analyze_verify_accepts() {
    let h = directories_only();
    let dir = h.dir().join("units");
    std::fs::create_dir(&dir).unwrap();
    // The unit names the installed binary; here it is the one built.
    let service = std::fs::read_to_string(packaging("systemd/berthd.service")).unwrap();
    let berthd = h.bin_dir().join("berthd");
    let service = service.replace("/usr/local/bin/berthd", &berthd.display().to_string());
    std::fs::write(dir.join("berthd.service"), service).unwrap();
    std::fs::copy(
        packaging("systemd/berthd.socket"),
        dir.join("berthd.socket"),
    )
    .unwrap();

    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "berthd.service", "berthd.socket"])
        .current_dir(&dir)
        .output()
        .unwrap();

    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_systemd_service_keeps_the_services_when_berthd_stops_and_restarts_it() {
    let service = std::fs::read_to_string(packaging("systemd/berthd.service")).unwrap();
    let lines: Vec<&str> = service.lines().map(str::trim).collect();

    // Without these a stop would kill every supervisor and service in berthd's cgroup, and a
    // berthd that left when its helper died would stay down.
    for line in [
        "KillMode=process",
        "Restart=always",
        "Delegate=yes",
        "Type=notify",
    ] {
        assert!(lines.contains(&line), "{line} missing");
    }
    assert!(!lines.iter().any(|l| l.starts_with("RuntimeDirectory=")));
}

#[test]
fn a_socket_activated_berthd_serves_on_the_socket_passed_and_leaves_it_in_place() {
    let h = directories_only();
    busybox_image(&h.images_dir(), "hello").unwrap();
    let socket = h.socket();
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket)
        .arg(h.bin_dir().join("berthd"))
        .args(berthd_args(&h))
        .stdin(Stdio::null())
        .stdout(log(&h))
        .stderr(log(&h))
        .spawn()
        .unwrap();
    // The socket file exists from bind(2) on, but connections are refused until listen(2):
    // wait for one that is taken (it starts berthd, which then serves on the socket).
    h.wait_for(|| Ok(UnixStream::connect(&socket).is_ok()), WAIT)
        .unwrap();

    // The first connection starts berthd, which answers on it.
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    let pid = h.status_json("hello").unwrap()["main_pid"]
        .as_u64()
        .unwrap() as u32;
    let berthd = berthd_pid(&h).unwrap();
    stop(&mut activator);
    h.wait_for(|| Ok(!process_exists(berthd)), WAIT).unwrap();

    assert!(
        h.stderr_log().contains("activated=true"),
        "{}",
        h.stderr_log()
    );
    // The socket is the service manager's: berthd leaves it for the next one.
    assert!(socket.exists());
    assert!(process_exists(pid), "the service went with berthd");
}

#[test]
fn berthd_notifies_ready_once_it_serves_and_stopping_when_it_stops() {
    let h = directories_only();
    let notify = h.dir().join("notify");
    let receiver = UnixDatagram::bind(&notify).unwrap();
    receiver.set_read_timeout(Some(WAIT)).unwrap();
    let mut berthd = Command::new(h.bin_dir().join("berthd"))
        .args(berthd_args(&h))
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .stdout(log(&h))
        .stderr(log(&h))
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];

    let n = receiver.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Ready means serving: the very next call is answered.
    let listed = h.berth(&["list"]).unwrap();
    stop(&mut berthd);
    let n = receiver.recv(&mut buf).unwrap();

    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(listed.status.success());
    assert_eq!(&buf[..n], b"STOPPING=1");
}

/// Runs the init script with `verb`, for this harness's directories and binary.
fn init_script(h: &Harness, verb: &str) -> std::process::Output {
    Command::new(packaging("sysvinit/berthd"))
        .arg(verb)
        .env("BERTHD", h.bin_dir().join("berthd"))
        .env("BERTHD_ARGS", berthd_args(h).join(" "))
        .env("BERTHD_DEFAULTS", h.dir().join("no-defaults"))
        .env("PIDFILE", h.dir().join("berthd-respawn.pid"))
        .env("LOGFILE", h.log_path())
        .env("RESPAWN_DELAY", "0.2")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_init_script_starts_berthd_respawns_it_after_a_crash_and_stops_it() {
    let h = directories_only();
    busybox_image(&h.images_dir(), "hello").unwrap();

    let started = init_script(&h, "start");
    h.wait_for(|| Ok(h.berth(&["list"])?.status.success()), WAIT)
        .unwrap();
    h.berth_ok(&["attach", "hello"]).unwrap();
    h.berth_ok(&["start", "hello"]).unwrap();
    let service = h.status_json("hello").unwrap()["main_pid"].clone();
    let first = berthd_pid(&h).unwrap();
    // SAFETY: plain kill(2) of the berthd this test started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    h.wait_for(
        || Ok(berthd_pid(&h).is_some_and(|p| p != first) && h.berth(&["list"])?.status.success()),
        WAIT,
    )
    .unwrap();
    let readopted = h.status_json("hello").unwrap();
    let status = init_script(&h, "status");
    let stopped = init_script(&h, "stop");
    let after = init_script(&h, "status");

    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert_eq!(readopted["state"], "running");
    assert_eq!(readopted["main_pid"], service);
    assert_eq!(status.status.code(), Some(0));
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert_eq!(after.status.code(), Some(3));
    assert_eq!(berthd_pid(&h), None);
    assert!(process_exists(service.as_u64().unwrap() as u32));
}
