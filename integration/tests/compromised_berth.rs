//! The root side against a compromised berthd: everything user `berth` can change (its runtime
//! directory, the fds it sends) is tried here as user `berth` would, racing root's restarts
//! where the attack needs a race.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_protocol::sandbox::SandboxSpec;
use berth_protocol::service_program::ServiceProgram;
use berth_testkit::direct_spawn::DirectSpawn;
use berth_testkit::{Harness, ImageBuilder, as_user, wait_until};

/// How long one race runs at most.
const RACE: Duration = Duration::from_secs(12);
/// Restarts tried within [`RACE`]. The old code lost about one in four.
const RESTARTS: usize = 40;

/// The berth user's uid and gid: the owner of the runtime directory berthd prepared.
fn berth_ids(h: &Harness) -> (u32, u32) {
    let meta = fs::metadata(h.runtime_dir()).unwrap();
    assert_ne!(
        meta.uid(),
        0,
        "the runtime directory should belong to berth"
    );
    (meta.uid(), meta.gid())
}

/// Exchanges two names with renameat2(RENAME_EXCHANGE) in a tight loop for `seconds`.
const SWAPPER: &str = r#"
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, seconds = sys.argv[1].encode(), sys.argv[2].encode(), float(sys.argv[3])
end = time.monotonic() + seconds
swaps = 0
while time.monotonic() < end:
    for _ in range(200):
        if libc.renameat2(-100, a, -100, b, 2) != 0:
            sys.exit("renameat2: errno %d" % ctypes.get_errno())
        swaps += 1
"#;

/// A child that swaps `a` and `b` as `uid`/`gid`; killed when dropped.
struct Swapper(Child);

impl Swapper {
    fn start(uid: u32, gid: u32, a: &Path, b: &Path) -> Swapper {
        let mut cmd = as_user(uid, gid, &[]);
        cmd.args(["/usr/bin/python3", "-c", SWAPPER])
            .arg(a)
            .arg(b)
            .arg(RACE.as_secs().to_string())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the swapper could not run as the berth user"
        );
        Swapper(child)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A root-owned 0755 directory `outside` with a root-owned 0755 `supervise` in it: what a
/// symlink in place of `RUNTIME/private` would lead root to.
fn outside_dir(h: &Harness) -> PathBuf {
    let outside = h.dir().join("outside");
    fs::create_dir_all(outside.join("supervise")).unwrap();
    for d in [outside.clone(), outside.join("supervise")] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    outside
}

/// What root did to `outside`, if anything.
fn tampering(outside: &Path) -> Option<String> {
    let supervise = fs::metadata(outside.join("supervise")).unwrap();
    if supervise.uid() != 0 || supervise.mode() & 0o7777 != 0o755 {
        return Some(format!(
            "outside/supervise is now uid {} mode {:o}",
            supervise.uid(),
            supervise.mode() & 0o7777
        ));
    }
    let socket = outside.join("io.berth.Helper");
    if fs::symlink_metadata(&socket).is_ok() {
        return Some(format!("root bound {}", socket.display()));
    }
    None
}

#[test]
fn a_lock_file_symlink_planted_by_berth_is_not_followed_by_root() {
    let mut h = Harness::start().unwrap();
    let (uid, gid) = berth_ids(&h);
    h.stop_berthd().unwrap();
    let protected = h.dir().join("protected");
    fs::create_dir(&protected).unwrap();
    let victim = protected.join("nologin");
    let lock = h.runtime_dir().join("berthd.lock");
    let mut plant = as_user(uid, gid, &[]);
    plant.args(["sh", "-c", r#"rm -f "$1" && ln -s "$2" "$1""#, "sh"]);
    plant.arg(&lock).arg(&victim);
    assert!(plant.status().unwrap().success());

    let started = h.start_berthd();

    assert!(
        !victim.exists(),
        "root created {} through berth's symlink",
        victim.display()
    );
    let err = format!("{:#}", started.unwrap_err());
    assert!(
        err.contains("berthd.lock is not a regular file with one link"),
        "berthd did not say why it refused:\n{err}"
    );
}

#[test]
fn swapping_private_for_a_symlink_while_root_restarts_berthd_changes_nothing_elsewhere() {
    let mut h = Harness::start().unwrap();
    let (uid, gid) = berth_ids(&h);
    h.stop_berthd().unwrap();
    let outside = outside_dir(&h);
    let decoy = h.runtime_dir().join("decoy");
    std::os::unix::fs::symlink(&outside, &decoy).unwrap();
    let swapper = Swapper::start(uid, gid, &h.runtime_dir().join("private"), &decoy);

    let deadline = Instant::now() + RACE;
    let mut restarts = 0;
    let mut tampered = None;
    while tampered.is_none() && restarts < RESTARTS && Instant::now() < deadline {
        // Refused or raced out: either way it must not touch `outside`.
        let _ = h.start_berthd();
        let _ = h.stop_berthd();
        restarts += 1;
        tampered = tampering(&outside);
    }
    drop(swapper);

    assert_eq!(tampered, None, "after {restarts} restarts");
}

#[test]
fn a_helper_started_while_private_is_swapped_binds_only_in_the_real_directory() {
    let mut h = Harness::start().unwrap();
    let (uid, gid) = berth_ids(&h);
    h.stop_berthd().unwrap();
    let outside = outside_dir(&h);
    let private = h.runtime_dir().join("private");
    let real = fs::File::open(&private).unwrap();
    let in_real =
        PathBuf::from(format!("/proc/self/fd/{}", real.as_raw_fd())).join("io.berth.Helper");
    let decoy = h.runtime_dir().join("decoy");
    std::os::unix::fs::symlink(&outside, &decoy).unwrap();
    let swapper = Swapper::start(uid, gid, &private, &decoy);

    let deadline = Instant::now() + RACE;
    let mut starts = 0;
    let mut tampered = None;
    while tampered.is_none() && starts < RESTARTS && Instant::now() < deadline {
        let mut helper = Command::new(h.bin_dir().join("berth-helper"))
            .arg("--socket")
            .arg(private.join("io.berth.Helper"))
            .arg("--manager-uid")
            .arg(uid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _ = wait_until(Duration::from_secs(2), || {
            Ok(helper.try_wait()?.is_some()
                || fs::symlink_metadata(&in_real).is_ok()
                || fs::symlink_metadata(outside.join("io.berth.Helper")).is_ok())
        });
        let _ = helper.kill();
        let _ = helper.wait();
        let _ = fs::remove_file(&in_real);
        starts += 1;
        tampered = tampering(&outside);
    }
    drop(swapper);

    assert_eq!(tampered, None, "after {starts} helper starts");
}

#[test]
fn an_image_root_berth_may_list_but_not_enter_is_refused_by_the_helper() {
    let h = Harness::start().unwrap();
    let (uid, gid) = berth_ids(&h);
    let image = ImageBuilder::new(&h.dir().join("hidden/img"))
        .file("secret", "top-secret-7d1f", 0o644)
        .build()
        .unwrap();
    fs::set_permissions(&image, fs::Permissions::from_mode(0o744)).unwrap();
    let spy = h.dir().join("spy");
    fs::create_dir(&spy).unwrap();
    std::os::unix::fs::chown(&spy, Some(uid), Some(gid)).unwrap();
    let socket = h.runtime_dir().join("private/io.berth.Helper");
    // Acts as a compromised berthd: a Spawn of `/bin/cat /secret` with an image root it
    // opened itself, a log and a control directory of its own.
    let spawn = DirectSpawn {
        berth: (uid, gid),
        socket: &socket,
        image: &image,
        spy: &spy,
        unit: "peek",
    };

    let out = spawn
        .send(
            &serde_json::to_string(&SandboxSpec::baseline(61300, 61300, "peek")).unwrap(),
            &serde_json::to_string(&ServiceProgram::simple(vec![
                "/bin/cat".into(),
                "/secret".into(),
            ]))
            .unwrap(),
        )
        .unwrap();

    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = berth_testkit::harness::read_lossy(&spy.join("peek.log"));
    assert!(!log.contains("top-secret"), "the service read it:\n{log}");
    assert!(
        reply.contains("io.berth.Helper.RequestRefused") && reply.contains("image root"),
        "{reply}"
    );
}
