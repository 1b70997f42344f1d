//! The harness against stand-in binaries (a fake `berthd` in python that serves the socket and
//! leaves a detached "supervisor" with a "service" behind, and a fake `berth` CLI): startup,
//! CLI helpers, restart, and the cleanup on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use berth_testkit::{Harness, process_exists};

/// Fake berthd: serves `R/io.berth.Manager`; the first run also starts a detached supervisor
/// (double fork, new session, cwd /, stdio /dev/null, path only in its environment, holding a
/// socket bound in `R/private/supervise/`) whose child "service" is a plain `sleep`.
const FAKE_BERTHD: &str = r#"#!/usr/bin/env python3
import os, socket, subprocess, sys, time
args = sys.argv[1:]
rt = args[args.index("--runtime-dir") + 1]
print("fake berthd starting", file=sys.stderr, flush=True)
sup_dir = os.path.join(rt, "private", "supervise")
if not os.path.exists(sup_dir):
    os.makedirs(sup_dir)
    code = r'''
import os, socket, subprocess, time
if os.fork():
    os._exit(0)
os.setsid()
os.chdir("/")
s = socket.socket(socket.AF_UNIX)
s.bind(os.environ["SUP_SOCK"])
s.listen()
svc = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with open(os.environ["SUP_SOCK"] + ".pids.tmp", "w") as f:
    f.write("%d %d\n" % (os.getpid(), svc.pid))
os.rename(os.environ["SUP_SOCK"] + ".pids.tmp", os.environ["SUP_SOCK"] + ".pids")
time.sleep(1000)
'''
    env = dict(os.environ, SUP_SOCK=os.path.join(sup_dir, "x.sock"))
    subprocess.run([sys.executable, "-c", code], env=env, cwd="/",
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
path = os.path.join(rt, "io.berth.Manager")
if os.path.exists(path):
    os.unlink(path)
time.sleep(0.1)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
while True:
    c, _ = s.accept()
    c.close()
"#;

/// Fake CLI: echoes its arguments as JSON; `fail` as verb exits 1 with a `berth:` message.
const FAKE_BERTH: &str = r#"#!/bin/sh
[ "$1" = --socket ] || { echo "berth: no --socket" >&2; exit 2; }
sock=$2; shift 2
case "$*" in *fail*) echo "berth: failed as asked" >&2; exit 1;; esac
printf '{"socket": "%s", "args": "%s"}\n' "$sock" "$*"
"#;

/// A bin dir with the fake binaries, or `None` when python3 is missing.
fn fake_bin_dir(dir: &Path) -> Option<()> {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("python3 missing: skipping");
        return None;
    }
    for (name, text) in [("berthd", FAKE_BERTHD), ("berth", FAKE_BERTH)] {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("writing fake binary");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    Some(())
}

#[test]
fn harness_lifecycle_with_fake_binaries() {
    let bins = tempfile::tempdir().unwrap();
    if fake_bin_dir(bins.path()).is_none() {
        return;
    }
    let mut h = Harness::start_from(bins.path(), &[]).unwrap();
    let dir = h.dir().to_owned();
    assert!(h.images_dir().is_dir());
    assert!(h.socket().starts_with(h.runtime_dir()));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);

    // CLI helpers.
    let v = h.berth_json(&["status", "hello"]).unwrap();
    assert_eq!(v["args"], "--json status hello");
    assert_eq!(v["socket"], h.socket().to_str().unwrap());
    assert!(h.berth_ok(&["list"]).unwrap().contains("\"list\""));
    let e = h.berth_ok(&["fail"]).unwrap_err().to_string();
    assert!(e.contains("berth: failed as asked"), "{e}");
    assert!(h.berth_err(&["fail"]).unwrap().starts_with("berth: "));

    // The detached supervisor and its service.
    let pids_file = h.runtime_dir().join("private/supervise/x.sock.pids");
    h.wait_for(|| Ok(pids_file.exists()), Duration::from_secs(10))
        .unwrap();
    let pids: Vec<u32> = std::fs::read_to_string(&pids_file)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| process_exists(p)));

    // Restart: new pid, log appended.
    let old = h.berthd_pid().unwrap();
    h.restart_berthd().unwrap();
    assert_ne!(h.berthd_pid().unwrap(), old);
    assert_eq!(h.stderr_log().matches("fake berthd starting").count(), 2);
    h.kill_berthd().unwrap();
    assert!(h.berthd_pid().is_none());
    assert!(!process_exists(old));
    h.start_berthd().unwrap();

    // A timeout names the condition and carries the log.
    let e = h
        .wait_for(|| Ok(false), Duration::from_millis(20))
        .unwrap_err();
    assert!(format!("{e:#}").contains("fake berthd starting"), "{e:#}");

    drop(h);
    assert!(!dir.exists(), "harness dir removed");
    for p in pids {
        assert!(!process_exists(p), "leftover process {p} killed");
    }
}

#[test]
fn startup_failure_reports_log() {
    let bins = tempfile::tempdir().unwrap();
    let p = bins.path().join("berthd");
    std::fs::write(&p, "#!/bin/sh\necho 'cannot start: reason' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = Harness::start_from(bins.path(), &[]).err().unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("cannot start: reason"), "{e}");
    assert!(e.contains("exited during startup"), "{e}");
}
