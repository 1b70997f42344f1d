//! Raw images at the helper: `io.berth.Helper.MountImage` called over the helper's socket as
//! berthd would (user `berth`, fds passed), against a real berth-helper and real squashfs,
//! erofs and ext4 files; loop devices counted through `/sys/block/loop*/loop/backing_file`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_protocol::sandbox::SandboxSpec;
use berth_protocol::service_program::ServiceProgram;
use berth_testkit::harness::output_with_timeout;
use berth_testkit::{
    Harness, ImageBuilder, RawFormat, as_user, busybox_raw_image, process_exists, raw_image,
    wait_until,
};
use serde_json::{Value, json};

/// Acts as berthd: sends the helper the calls in argv[2] (JSON), each MountImage with the file
/// opened as its `mode` says, reads `read` through the mount fd it gets back, and may Spawn
/// from the last mount. Prints one JSON array of results; with argv[3] == "hold" it keeps its
/// fds until its stdin closes.
const CLIENT: &str = r#"
import array, json, os, socket, sys
helper, calls = sys.argv[1], json.loads(sys.argv[2])
def call(s, method, params, fds):
    msg = json.dumps({"method": method, "parameters": params}).encode() + b"\0"
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    s.sendmsg([msg], anc)
    data, got = b"", []
    while not data.endswith(b"\0"):
        chunk, ancdata, _, _ = s.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
        if not chunk:
            break
        data += chunk
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(payload[: len(payload) - len(payload) % 4])
                got += list(a)
    return json.loads(data.rstrip(b"\0")), got
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(helper)
results, mounts = [], []
for c in calls:
    method = c.get("method", "MountImage")
    if method == "Ping":
        results.append({"reply": call(s, "io.berth.Helper.Ping", {}, [])[0]})
        continue
    if method == "Spawn":
        spy = c["spy"]
        log = os.open(os.path.join(spy, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.mkdir(os.path.join(spy, "ctl"), 0o700)
        ctl = os.open(os.path.join(spy, "ctl"), os.O_RDONLY | os.O_DIRECTORY)
        params = {"unit": "raw.service", "program": c["program"], "environment": ["PATH=/bin"],
                  "working_directory": "/", "sandbox": c["sandbox"]}
        results.append({"reply": call(s, "io.berth.Helper.Spawn", params, [mounts[-1], log, ctl])[0]})
        continue
    flags = {"r": os.O_RDONLY, "rw": os.O_RDWR, "dir": os.O_RDONLY | os.O_DIRECTORY,
             "path": os.O_PATH}[c.get("mode", "r")]
    fd = os.open(c["file"], flags)
    params = {k: c[k] for k in ("fstype", "offset", "size")}
    reply, fds = call(s, "io.berth.Helper.MountImage", params, [fd])
    os.close(fd)
    r = {"reply": reply, "fds": len(fds)}
    if fds:
        root = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[0])
        r["statvfs_flags"] = os.statvfs(root).f_flag
        if "read" in c:
            f = os.open(c["read"], os.O_RDONLY, dir_fd=root)
            r["read"] = os.read(f, 65536).decode()
            os.close(f)
        os.close(root)
        mounts += fds
    results.append(r)
print(json.dumps(results), flush=True)
if len(sys.argv) > 3 and sys.argv[3] == "hold":
    sys.stdin.read()
"#;

/// A berth-helper started directly (as berthd would) for user `berth`, with its own
/// helper.toml; killed when dropped.
struct Helper {
    dir: PathBuf,
    child: Child,
}

fn berth_user() -> (u32, u32) {
    let out = Command::new("id").args(["-u", "berth"]).output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("id").args(["-g", "berth"]).output().unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

impl Helper {
    fn start(config: &str) -> Helper {
        let dir = tempfile::Builder::new()
            .prefix("berth-raw-")
            .tempdir()
            .unwrap()
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = berth_user();
        let private = dir.join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&private, Some(uid), Some(gid)).unwrap();
        let config = config.replace("{dir}", &dir.to_string_lossy());
        fs::write(dir.join("helper.toml"), config).unwrap();
        let child =
            Command::new(berth_testkit::locate_binary("berth-helper", "BERTH_BIN_DIR").unwrap())
                .arg("--socket")
                .arg(private.join("io.berth.Helper"))
                .args(["--manager-uid", &uid.to_string(), "--config"])
                .arg(dir.join("helper.toml"))
                .args(["--log-target", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("helper.log")).unwrap())
                .spawn()
                .unwrap();
        let socket = private.join("io.berth.Helper");
        wait_until(Duration::from_secs(10), || Ok(socket.exists())).unwrap();
        Helper { dir, child }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("private/io.berth.Helper")
    }

    /// Runs the calls as user berth and returns their results.
    fn calls(&self, calls: Value) -> Vec<Value> {
        let (uid, gid) = berth_user();
        let mut cmd = as_user(uid, gid, &[]);
        cmd.args(["/usr/bin/python3", "-c", CLIENT])
            .arg(self.socket())
            .arg(calls.to_string());
        let out = output_with_timeout(cmd, Duration::from_secs(30)).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs the calls as user berth, who keeps the mounts until the returned child's stdin is
    /// closed (`release`).
    fn hold(&self, calls: Value) -> (Child, Vec<Value>) {
        use std::io::BufRead;
        let (uid, gid) = berth_user();
        let mut cmd = as_user(uid, gid, &[]);
        cmd.args(["/usr/bin/python3", "-c", CLIENT])
            .arg(self.socket())
            .arg(calls.to_string())
            .arg("hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, serde_json::from_str(&line).unwrap())
    }
}

impl Helper {
    /// Mounts squashfs `file`, spawns `argv` from the mount as berthd would, and returns the
    /// service's log once it shows `expected` (or after 10 s).
    fn spawn_from_mount(&self, file: &Path, argv: &[&str], expected: &str) -> String {
        let spy = self.dir.join("spy");
        fs::create_dir(&spy).unwrap();
        let (uid, gid) = berth_user();
        std::os::unix::fs::chown(&spy, Some(uid), Some(gid)).unwrap();

        let results = self.calls(json!([
            mount_call(file, "squashfs"),
            {"method": "Spawn", "spy": spy,
             "program": ServiceProgram::simple(argv.iter().map(|a| a.to_string()).collect()),
             "sandbox": SandboxSpec::baseline(61310, 61310, "raw")},
        ]));

        assert!(
            results[1]["reply"]["parameters"]["main_pid"].is_number(),
            "{results:?}"
        );
        let log = spy.join("log");
        let mut text = String::new();
        let _ = wait_until(Duration::from_secs(10), || {
            text = fs::read_to_string(&log).unwrap_or_default();
            Ok(text.contains(expected))
        });
        // No berthd collects the exit status, so the supervisor would wait for one forever
        // (supervisors outlive the daemons by design): end it with the test.
        if let Some(pid) = results[1]["reply"]["parameters"]["supervisor_pid"].as_i64() {
            let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        text
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("BERTH_KEEP_TEST_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn release(mut holder: Child) {
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

/// The loop devices bound to `file` now.
fn loops_reading(file: &Path) -> Vec<String> {
    let file = file.canonicalize().unwrap();
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(text) = fs::read_to_string(&backing)
            && Path::new(text.trim()) == file
        {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

/// Waits for the loop devices of `file` to go (autoclear runs as the last reference drops,
/// which a dying service's mount namespace may take a moment to give up on a loaded machine).
fn assert_no_loop_left(file: &Path) {
    let gone = wait_until(Duration::from_secs(20), || {
        Ok(loops_reading(file).is_empty())
    });
    assert!(
        gone.is_ok(),
        "left behind: {:?}, mounted in: {:?}",
        loops_reading(file),
        processes_mounting(&loops_reading(file))
    );
}

/// Processes (pid and name) whose mount table shows one of `loops`: who holds them.
fn processes_mounting(loops: &[String]) -> Vec<String> {
    let mut holders = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let table = fs::read_to_string(entry.path().join("mountinfo")).unwrap_or_default();
        if loops.iter().any(|l| table.contains(&format!(" /dev/{l} "))) {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            holders.push(format!("{pid} {}", comm.trim()));
        }
    }
    holders
}

fn image(h: &Helper, name: &str, format: RawFormat) -> PathBuf {
    busybox_raw_image(&h.dir, name, format).unwrap()
}

fn mount_call(file: &Path, fstype: &str) -> Value {
    let len = fs::metadata(file).unwrap().len();
    json!({"file": file, "fstype": fstype, "offset": 0, "size": len / 512 * 512,
           "read": "etc/os-release"})
}

const ST_RDONLY: u64 = 1;
const ST_NOSUID: u64 = 2;
const ST_NODEV: u64 = 4;

fn assert_mounted_read_only(result: &Value) {
    assert_eq!(result["fds"], 1, "{result}");
    assert!(
        result["read"].as_str().unwrap().contains("ID=berth-test"),
        "{result}"
    );
    let flags = result["statvfs_flags"].as_u64().unwrap();
    assert_eq!(
        flags & (ST_RDONLY | ST_NOSUID | ST_NODEV),
        ST_RDONLY | ST_NOSUID | ST_NODEV
    );
}

#[test]
fn a_squashfs_image_is_mounted_read_only_nosuid_nodev_and_read_through_the_fd() {
    let h = Helper::start("");
    let file = image(&h, "sq", RawFormat::Squashfs);

    let results = h.calls(json!([mount_call(&file, "squashfs")]));

    assert_mounted_read_only(&results[0]);
    assert!(
        results[0]["reply"]["parameters"]["device"]
            .as_str()
            .unwrap()
            .starts_with("/dev/loop")
    );
}

#[test]
fn an_erofs_image_is_mounted_read_only_nosuid_nodev_and_read_through_the_fd() {
    let h = Helper::start("");
    let file = image(&h, "ero", RawFormat::Erofs);

    let results = h.calls(json!([mount_call(&file, "erofs")]));

    assert_mounted_read_only(&results[0]);
}

#[test]
fn ext4_is_refused_by_default_and_mounted_where_helper_toml_allows_it() {
    let strict = Helper::start("");
    let allowing = Helper::start("image_filesystems = [\"squashfs\", \"erofs\", \"ext4\"]\n");
    let file = image(&allowing, "ext", RawFormat::Ext4);

    let refused = strict.calls(json!([mount_call(&file, "ext4")]));
    let mounted = allowing.calls(json!([mount_call(&file, "ext4")]));

    assert_eq!(
        refused[0]["reply"]["error"],
        "io.berth.Helper.RequestRefused"
    );
    assert_eq!(refused[0]["reply"]["parameters"]["field"], "fstype");
    assert_mounted_read_only(&mounted[0]);
}

#[test]
fn a_file_system_at_an_offset_in_a_larger_file_is_mounted() {
    let h = Helper::start("");
    let file = image(&h, "inner", RawFormat::Squashfs);
    let disk = h.dir.join("disk.img");
    let inner = fs::read(&file).unwrap();
    let mut bytes = vec![0xAAu8; 1 << 20];
    bytes.extend_from_slice(&inner);
    bytes.resize(bytes.len() + (1 << 20), 0x55);
    fs::write(&disk, bytes).unwrap();
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o644)).unwrap();
    let size = (inner.len() as u64).div_ceil(512) * 512;

    let results = h.calls(
        json!([{"file": disk, "fstype": "squashfs", "offset": 1 << 20,
                                  "size": size, "read": "etc/os-release"}]),
    );

    assert_mounted_read_only(&results[0]);
}

#[test]
fn two_mounts_of_one_image_share_one_loop_device() {
    let h = Helper::start("");
    let file = image(&h, "shared", RawFormat::Squashfs);

    let (holder, results) = h.hold(json!([
        mount_call(&file, "squashfs"),
        mount_call(&file, "squashfs")
    ]));
    let bound = loops_reading(&file);
    release(holder);

    let (first, second) = (
        &results[0]["reply"]["parameters"],
        &results[1]["reply"]["parameters"],
    );
    assert_eq!(first["device"], second["device"], "{results:?}");
    assert_eq!(
        (first["shared"].as_bool(), second["shared"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(bound.len(), 1, "{bound:?}");
}

#[test]
fn no_loop_device_is_left_once_the_mount_fd_is_closed() {
    let h = Helper::start("");
    let file = image(&h, "freed", RawFormat::Erofs);

    let (holder, results) = h.hold(json!([mount_call(&file, "erofs")]));
    let while_held = loops_reading(&file);
    release(holder);

    assert_mounted_read_only(&results[0]);
    assert_eq!(while_held.len(), 1, "{while_held:?}");
    assert_no_loop_left(&file);
}

#[test]
fn the_floor_refuses_bad_backing_fds_and_ranges_and_the_helper_keeps_serving() {
    let h = Helper::start("");
    let file = image(&h, "floor", RawFormat::Squashfs);
    let len = fs::metadata(&file).unwrap().len();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    let cases = [
        (
            json!({"file": h.dir.join("trees"), "mode": "dir", "fstype": "squashfs", "offset": 0, "size": 4096}),
            "image file",
        ),
        (
            json!({"file": file, "mode": "rw", "fstype": "squashfs", "offset": 0, "size": 4096}),
            "image file",
        ),
        (
            json!({"file": file, "mode": "path", "fstype": "squashfs", "offset": 0, "size": 4096}),
            "image file",
        ),
        (
            json!({"file": file, "fstype": "squashfs", "offset": 0, "size": len + 512}),
            "size",
        ),
        (
            json!({"file": file, "fstype": "squashfs", "offset": 100, "size": 4096}),
            "offset",
        ),
        (
            json!({"file": file, "fstype": "vfat", "offset": 0, "size": 4096}),
            "fstype",
        ),
    ];
    let mut calls: Vec<Value> = cases.iter().map(|(c, _)| c.clone()).collect();
    calls.push(json!({"method": "Ping"}));

    let results = h.calls(Value::Array(calls));

    for ((case, field), result) in cases.iter().zip(&results) {
        assert_eq!(
            result["reply"]["error"], "io.berth.Helper.RequestRefused",
            "{case}: {result}"
        );
        assert_eq!(
            result["reply"]["parameters"]["field"], *field,
            "{case}: {result}"
        );
        assert_eq!(result["fds"], 0);
    }
    assert!(results[cases.len()]["reply"]["parameters"]["manager_uid"].is_number());
    assert!(loops_reading(&file).is_empty());
}

#[test]
fn a_truncated_or_corrupt_image_fails_to_mount_naming_its_file_system_and_nothing_is_left() {
    let h = Helper::start("");
    let good = fs::read(image(&h, "bad", RawFormat::Squashfs)).unwrap();
    let truncated = h.dir.join("truncated.raw");
    fs::write(&truncated, &good[..good.len() / 2 / 512 * 512]).unwrap();
    let corrupt = h.dir.join("corrupt.raw");
    let mut bytes = good.clone();
    // The superblock's inode table and directory table starts point past the end.
    for b in &mut bytes[64..96] {
        *b = 0xFF;
    }
    fs::write(&corrupt, bytes).unwrap();
    let erofs = h.dir.join("corrupt-erofs.raw");
    let mut ebytes = fs::read(image(&h, "bade", RawFormat::Erofs)).unwrap();
    for b in &mut ebytes[1024 + 8..1024 + 128] {
        *b = 0xFF;
    }
    fs::write(&erofs, ebytes).unwrap();
    for f in [&truncated, &corrupt, &erofs] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }

    let results = h.calls(json!([
        mount_call(&truncated, "squashfs"),
        mount_call(&corrupt, "squashfs"),
        mount_call(&erofs, "erofs"),
        {"method": "Ping"},
    ]));

    for (result, fstype) in results.iter().zip(["squashfs", "squashfs", "erofs"]) {
        // Either the mount is refused, or a superblock that parses leaves nothing readable.
        let reply = &result["reply"];
        if reply.get("error").is_some() {
            assert_eq!(reply["error"], "io.berth.Helper.MountFailed", "{result}");
            assert_eq!(reply["parameters"]["fstype"], fstype, "{result}");
        } else {
            panic!("a corrupt {fstype} image mounted: {result}");
        }
    }
    assert!(results[3]["reply"]["parameters"]["manager_uid"].is_number());
    for f in [&truncated, &corrupt, &erofs] {
        assert_no_loop_left(f);
    }
}

#[test]
fn a_mount_the_helper_made_is_a_spawn_image_root_although_its_root_lies_under_no_image_root() {
    let h = Helper::start("image_roots = [\"{dir}/images\"]\n");
    fs::create_dir(h.dir.join("images")).unwrap();
    let built = image(&h, "runs", RawFormat::Squashfs);
    let file = h.dir.join("images/runs.raw");
    fs::rename(&built, &file).unwrap();

    let log = h.spawn_from_mount(&file, &["/bin/cat", "/etc/os-release"], "ID=berth-test");

    assert!(log.contains("ID=berth-test"), "{log}");
}

// Through berthd: raw images attached by path, started, stopped, detached; the daemons killed.

const WAIT: Duration = Duration::from_secs(10);

/// A squashfs or erofs image `dir/<name>.raw` with two long-running units, `<name>-a` and
/// `<name>-b`.
fn two_unit_image(dir: &Path, name: &str, format: RawFormat) -> PathBuf {
    let unit = |which: &str| {
        format!("[Service]\nExecStart=/bin/sh -c 'echo {which} from {name}; exec sleep 1000'\n")
    };
    let tree = ImageBuilder::new(&dir.join("trees").join(name))
        .unit(&format!("{name}-a.service"), &unit("a"))
        .unit(&format!("{name}-b.service"), &unit("b"))
        .build()
        .unwrap();
    raw_image(&tree, &dir.join(format!("{name}.raw")), format).unwrap()
}

fn state(h: &Harness, unit: &str) -> String {
    h.status_json(unit).unwrap()["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Mounts (in berthd's, the host's, mount table) whose source is a loop device reading `file`.
fn host_mounts_of(file: &Path) -> usize {
    let loops: Vec<String> = loops_reading(file)
        .into_iter()
        .map(|l| format!("/dev/{l}"))
        .collect();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| {
            line.split(" - ")
                .nth(1)
                .and_then(|tail| tail.split(' ').nth(1))
                .is_some_and(|source| loops.iter().any(|l| l == source))
        })
        .count()
}

fn assert_nothing_left(file: &Path) {
    assert_no_loop_left(file);
    assert_eq!(host_mounts_of(file), 0);
}

#[test]
fn a_squashfs_image_attached_by_path_starts_its_service() {
    let h = Harness::start().unwrap();
    let file = busybox_raw_image(h.dir(), "sqsvc", RawFormat::Squashfs).unwrap();

    h.berth_ok(&["attach", file.to_str().unwrap()]).unwrap();
    h.berth_ok(&["start", "sqsvc"]).unwrap();

    assert_eq!(state(&h, "sqsvc"), "running");
    h.wait_for(
        || Ok(h.berth_ok(&["logs", "sqsvc"])?.contains("hello from sqsvc")),
        WAIT,
    )
    .unwrap();
}

#[test]
fn an_erofs_image_attached_by_path_starts_its_service() {
    let h = Harness::start().unwrap();
    let file = busybox_raw_image(h.dir(), "erosvc", RawFormat::Erofs).unwrap();

    h.berth_ok(&["attach", file.to_str().unwrap()]).unwrap();
    h.berth_ok(&["start", "erosvc"]).unwrap();

    assert_eq!(state(&h, "erosvc"), "running");
}

#[test]
fn inspect_of_a_raw_image_leaves_no_loop_device_behind() {
    let h = Harness::start().unwrap();
    let file = busybox_raw_image(h.dir(), "peek", RawFormat::Squashfs).unwrap();

    let shown = h
        .berth_ok(&["image", "inspect", file.to_str().unwrap()])
        .unwrap();

    assert!(shown.contains("peek.service"), "{shown}");
    assert_nothing_left(&file);
}

#[test]
fn an_ext4_image_is_refused_by_the_default_floor_naming_its_file_system() {
    let h = Harness::start().unwrap();
    let file = busybox_raw_image(h.dir(), "extsvc", RawFormat::Ext4).unwrap();

    let error = h.berth_err(&["attach", file.to_str().unwrap()]).unwrap();

    assert!(error.contains("ext2/3/4 filesystem"), "{error}");
    assert!(error.contains("image_filesystems"), "{error}");
    assert_nothing_left(&file);
}

#[test]
fn a_corrupt_squashfs_fails_to_attach_cleanly_and_berthd_keeps_serving() {
    let h = Harness::start().unwrap();
    let file = busybox_raw_image(h.dir(), "broken", RawFormat::Squashfs).unwrap();
    let mut bytes = fs::read(&file).unwrap();
    for b in &mut bytes[64..96] {
        *b = 0xFF;
    }
    fs::write(&file, bytes).unwrap();

    let error = h.berth_err(&["attach", file.to_str().unwrap()]).unwrap();

    assert!(error.contains("squashfs"), "{error}");
    assert_nothing_left(&file);
    h.berth_ok(&["list"]).unwrap();
}

#[test]
fn two_running_services_of_one_image_share_one_loop_device_and_stop_frees_it() {
    let h = Harness::start().unwrap();
    let file = two_unit_image(h.dir(), "pair", RawFormat::Squashfs);
    // Level 2: two units of one image run at once (at level 3 they share the attachment's
    // persistent /var, which one run holds at a time).
    h.berth_ok(&["attach", file.to_str().unwrap(), "--profile", "default@2"])
        .unwrap();
    assert_nothing_left(&file);

    h.berth_ok(&["start", "pair-a", "pair-b"]).unwrap();
    let running = loops_reading(&file);
    h.berth_ok(&["stop", "pair-a", "pair-b"]).unwrap();

    assert_eq!(running.len(), 1, "{running:?}");
    assert_nothing_left(&file);
}

#[test]
fn detach_now_leaves_no_loop_device_or_mount() {
    let h = Harness::start().unwrap();
    let file = two_unit_image(h.dir(), "gone", RawFormat::Erofs);
    h.berth_ok(&["attach", file.to_str().unwrap()]).unwrap();
    h.berth_ok(&["start", "gone-a"]).unwrap();

    h.berth_ok(&["detach", file.to_str().unwrap(), "--now"])
        .unwrap();

    assert_nothing_left(&file);
}

#[test]
fn kill_9_of_berthd_then_of_the_helper_then_a_restart_leaves_nothing_after_stop() {
    let mut h = Harness::start().unwrap();
    let file = two_unit_image(h.dir(), "tough", RawFormat::Squashfs);
    // Level 2: two units of one image run at once (at level 3 they share the attachment's
    // persistent /var, which one run holds at a time).
    h.berth_ok(&["attach", file.to_str().unwrap(), "--profile", "default@2"])
        .unwrap();
    h.berth_ok(&["start", "tough-a"]).unwrap();

    h.kill_berthd().unwrap();
    h.start_berthd().unwrap();
    h.wait_for(|| Ok(state(&h, "tough-a") == "running"), WAIT)
        .unwrap();
    h.berth_ok(&["start", "tough-b"]).unwrap();
    let after_berthd = loops_reading(&file);
    let (berthd, helper) = (h.berthd_pid().unwrap(), h.helper_pid().unwrap());
    // SAFETY: plain kill(2) of the helper this test's berthd started.
    assert_eq!(unsafe { libc::kill(helper as i32, libc::SIGKILL) }, 0);
    h.wait_for(|| Ok(!process_exists(berthd)), WAIT).unwrap();
    let _ = h.stop_berthd();
    h.start_berthd().unwrap();
    h.wait_for(|| Ok(state(&h, "tough-b") == "running"), WAIT)
        .unwrap();
    h.berth_ok(&["stop", "tough-a", "tough-b"]).unwrap();

    assert_eq!(after_berthd.len(), 1, "{after_berthd:?}");
    assert_nothing_left(&file);
}

#[test]
fn a_service_from_a_squashfs_mount_sees_the_image_through_the_overlayfs_view() {
    let h = Helper::start("");
    let file = image(&h, "view", RawFormat::Squashfs);

    let text = h.spawn_from_mount(
        &file,
        &["/bin/cat", "/proc/self/mountinfo"],
        " - overlay berth-image ",
    );

    // /usr and /bin come from the read-only overlay over the squashfs mount, never from the
    // squashfs mount itself (whose mountinfo would name the loop device).
    assert!(text.contains(" - overlay berth-image "), "{text}");
    assert!(!text.contains(" - squashfs "), "{text}");
    assert!(!text.contains("/dev/loop"), "{text}");
}

#[test]
fn an_unprivileged_user_inspects_a_raw_image_and_nothing_stays_mounted() {
    let h = Harness::start().unwrap();
    let file = busybox_raw_image(h.dir(), "mine", RawFormat::Erofs).unwrap();

    let out = h
        .berth_as(
            65534,
            65534,
            &[],
            &["image", "inspect", file.to_str().unwrap()],
        )
        .unwrap();

    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("mine.service"), "{shown}");
    assert_nothing_left(&file);
}
