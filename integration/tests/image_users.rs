//! The image's own users, the helper's side (issue 9 item 1): Spawn requests with a user
//! block, sent to a berth-helper of the test's own (with a helper.toml of its own) as berthd
//! would send them. The service runs in a user namespace mapping 0-65535 onto the block, owned
//! by the manager's uid, with the image idmapped onto it: inside it is the image's uid, on the
//! host the block's, the image's files keep their owners, host files are nobody, and root of
//! the namespace is no root of the host.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_protocol::sandbox::{Identity, SandboxSpec, UidBlock};
use berth_protocol::service_program::ServiceProgram;
use berth_testkit::direct_spawn::DirectSpawn;
use berth_testkit::harness::read_lossy;
use berth_testkit::procfs::proc_status_field;
use berth_testkit::{Harness, ImageBuilder, wait_until};
use serde_json::Value;

const FIRST: u32 = 524_288;
const OTHER_FIRST: u32 = 589_824;
/// The image's user (as Debian's redis or a typical first system user).
const IMAGE_UID: u32 = 100;
const NOBODY: u32 = 65534;

/// Capabilities the test's helper.toml lets a service keep in its bounding set.
const HELPER_TOML: &str = "allowed_capabilities = [\"CAP_CHOWN\", \"CAP_KILL\"]\n";

/// A berth-helper of the test's own, for user berth, in the harness's directory (so the
/// harness's cleanup ends it, and the supervisors it starts, with the test).
struct Helper {
    h: Harness,
    socket: PathBuf,
    spy: PathBuf,
    berth: (u32, u32),
    child: Child,
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Reaped here; the harness, dropped next, ends the supervisors.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    fn start() -> Helper {
        let h = Harness::start().unwrap();
        let berth = fs::metadata(h.runtime_dir().join("private")).unwrap();
        let berth = (berth.uid(), berth.gid());
        let private = h.dir().join("own-helper");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&private, Some(berth.0), Some(berth.1)).unwrap();
        let config = h.dir().join("helper.toml");
        fs::write(&config, HELPER_TOML).unwrap();
        let socket = private.join("io.berth.Helper");
        let child =
            Command::new(berth_testkit::locate_binary("berth-helper", "BERTH_BIN_DIR").unwrap())
                .arg("--socket")
                .arg(&socket)
                .args(["--manager-uid", &berth.0.to_string(), "--config"])
                .arg(&config)
                .args(["--log-target", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(h.dir().join("own-helper.log")).unwrap())
                .spawn()
                .unwrap();
        wait_until(Duration::from_secs(10), || Ok(socket.exists())).unwrap();
        let spy = h.dir().join("spy");
        fs::create_dir(&spy).unwrap();
        std::os::unix::fs::chown(&spy, Some(berth.0), Some(berth.1)).unwrap();
        Helper {
            h,
            socket,
            spy,
            berth,
            child,
        }
    }

    /// Sends a Spawn of `program` as `unit` in `image` with `sandbox`; the spawner's output.
    fn send(
        &self,
        image: &Path,
        unit: &str,
        sandbox: &SandboxSpec,
        program: &ServiceProgram,
    ) -> std::process::Output {
        let spawn = DirectSpawn {
            berth: self.berth,
            socket: &self.socket,
            image,
            spy: &self.spy,
            unit,
        };
        spawn
            .send(
                &serde_json::to_string(sandbox).unwrap(),
                &serde_json::to_string(program).unwrap(),
            )
            .unwrap()
    }

    /// Spawns `script` (run by busybox sh) as `unit` in `image` with `sandbox`; returns the
    /// reply's parameters (the main pid) or panics with the error.
    fn spawn(&self, image: &Path, unit: &str, sandbox: &SandboxSpec, script: &str) -> Value {
        let program = ServiceProgram::simple(vec!["/bin/sh".into(), "-c".into(), script.into()]);
        let out = self.send(image, unit, sandbox, &program);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            reply["parameters"]["main_pid"].is_number(),
            "{reply}\nhelper log:\n{}",
            read_lossy(&self.h.dir().join("own-helper.log"))
        );
        reply["parameters"].clone()
    }

    /// Waits until `unit`'s log holds `marker` (the script's last line) and returns it.
    fn log_until(&self, unit: &str, marker: &str) -> String {
        let path = self.spy.join(format!("{unit}.log"));
        let _ = wait_until(Duration::from_secs(20), || {
            Ok(read_lossy(&path).contains(marker))
        });
        let log = read_lossy(&path);
        assert!(log.contains(marker), "{unit} never got to {marker}:\n{log}");
        log
    }
}

/// A busybox image whose `/data` holds files of the image's user: `owned` (0644) and
/// `secret` (0600), both owned by uid and gid 100 on disk.
fn image(h: &Harness, name: &str) -> PathBuf {
    let image = ImageBuilder::new(&h.dir().join(name))
        .file("data/owned", "mine\n", 0o644)
        .file("data/secret", "image-secret-4c1e\n", 0o600)
        .file("data/roots", "of root\n", 0o644)
        .build()
        .unwrap();
    for file in ["data/owned", "data/secret"] {
        std::os::unix::fs::chown(image.join(file), Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    }
    image
}

/// The baseline sandbox in block mode: `uid` and `gid` of the image, on the block at `first`.
fn block_spec(first: u32, uid: u32, gid: u32) -> SandboxSpec {
    let mut spec = SandboxSpec::baseline(first + uid, first + gid, "images");
    spec.identity = Identity {
        user_block: Some(UidBlock::at(first)),
        ..spec.identity
    };
    spec
}

fn main_pid(reply: &Value) -> u32 {
    u32::try_from(reply["main_pid"].as_u64().unwrap()).unwrap()
}

/// The real uid of host process `pid` (first of /proc/PID/status's `Uid:` fields).
fn host_uid(pid: u32) -> u32 {
    let field = proc_status_field(pid, "Uid").unwrap();
    field.split_whitespace().next().unwrap().parse().unwrap()
}

/// The uid owning the user namespace of `pid` (ioctl NS_GET_OWNER_UID).
fn user_namespace_owner(pid: u32) -> u32 {
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let ns = fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
    let mut uid: libc::uid_t = u32::MAX;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which lives across it.
    let ret = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
    assert_eq!(ret, 0, "{}", std::io::Error::last_os_error());
    uid
}

/// The line of `log` that starts with `key=`, without the key.
fn value<'a>(log: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    log.lines()
        .find_map(|line| line.split_once(prefix.as_str()).map(|(_, v)| v))
        .map(|v| v.trim_end_matches(|c: char| c == '"' || c == '}' || c.is_whitespace()))
        .unwrap_or_else(|| panic!("no {key}= in:\n{log}"))
}

#[test]
fn a_user_of_the_image_is_its_uid_inside_and_the_block_s_on_the_host() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");

    let reply = helper.spawn(
        &image,
        "web",
        &block_spec(FIRST, IMAGE_UID, IMAGE_UID),
        "echo uid=$(id -u) gid=$(id -g); echo done; exec sleep 30",
    );

    let log = helper.log_until("web", "done");
    assert_eq!(value(&log, "uid"), "100 gid=100");
    assert_eq!(host_uid(main_pid(&reply)), FIRST + IMAGE_UID);
}

#[test]
fn the_user_namespace_is_owned_by_the_manager_uid() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");

    let reply = helper.spawn(
        &image,
        "owned",
        &block_spec(FIRST, IMAGE_UID, IMAGE_UID),
        "echo done; exec sleep 30",
    );

    helper.log_until("owned", "done");
    assert_eq!(user_namespace_owner(main_pid(&reply)), helper.berth.0);
}

#[test]
fn image_files_keep_their_owners_and_a_0600_file_of_the_user_is_readable() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");

    helper.spawn(
        &image,
        "files",
        &block_spec(FIRST, IMAGE_UID, IMAGE_UID),
        "echo owners=$(stat -c %u:%g /data/owned /data/roots); \
         echo secret=$(cat /data/secret); echo done",
    );

    let log = helper.log_until("files", "done");
    assert_eq!(value(&log, "owners"), "100:100 0:0");
    assert_eq!(value(&log, "secret"), "image-secret-4c1e");
}

#[test]
fn a_file_of_host_root_is_nobody_inside() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");

    helper.spawn(
        &image,
        "hostfile",
        &block_spec(FIRST, IMAGE_UID, IMAGE_UID),
        // /dev/null is the host's node, bound in.
        "echo null=$(stat -c %u:%g /dev/null); echo done",
    );

    let log = helper.log_until("hostfile", "done");
    assert_eq!(value(&log, "null"), format!("{NOBODY}:{NOBODY}"));
}

#[test]
fn root_of_the_namespace_is_the_block_s_first_id_on_the_host_and_not_host_root() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");
    let mut spec = block_spec(FIRST, 0, 0);
    spec.capabilities.bounding = vec!["CAP_CHOWN".into()];

    let reply = helper.spawn(
        &image,
        "root",
        &spec,
        "echo uid=$(id -u); touch /tmp/f; chown 100:100 /tmp/f && echo chowned=$(stat -c %u /tmp/f); \
         chown 0:0 /dev/null 2>/dev/null && echo host-null=chowned || echo host-null=refused; \
         echo done; exec sleep 30",
    );

    let log = helper.log_until("root", "done");
    let pid = main_pid(&reply);
    assert_eq!(value(&log, "uid"), "0");
    assert_eq!(value(&log, "chowned"), "100");
    assert_eq!(value(&log, "host-null"), "refused");
    assert_eq!(host_uid(pid), FIRST);
    // Root keeps its bounding set effective after exec (CAP_CHOWN is bit 0), nothing more.
    let effective = proc_status_field(pid, "CapEff").unwrap();
    assert_eq!(u64::from_str_radix(effective.trim(), 16).unwrap(), 1);
}

#[test]
fn the_file_systems_berth_makes_belong_to_root_of_the_namespace() {
    let helper = Helper::start();
    let image = ImageBuilder::new(&helper.h.dir().join("img"))
        .dir("var/tmp", 0o1777)
        .build()
        .unwrap();

    helper.spawn(
        &image,
        "roots",
        &block_spec(FIRST, 0, 0),
        "echo owners=$(stat -c %u:%g / /tmp /run /dev /dev/shm /var/tmp); \
         touch /run/service.pid && echo run=writable; echo done",
    );

    let log = helper.log_until("roots", "done");
    assert_eq!(value(&log, "owners"), "0:0 0:0 0:0 0:0 0:0 0:0");
    assert_eq!(value(&log, "run"), "writable");
}

#[test]
fn private_users_in_block_mode_maps_only_root_and_the_service_s_ids() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");
    let mut spec = block_spec(FIRST, 33, 33);
    spec.identity.private_users = true;

    helper.spawn(
        &image,
        "private",
        &spec,
        "echo map=$(cat /proc/self/uid_map | tr -s ' ' | tr '\\n' ';'); \
         echo owners=$(stat -c %u /data/owned /data/roots); echo done",
    );

    let log = helper.log_until("private", "done");
    assert_eq!(value(&log, "map"), " 0 524288 1; 33 524321 1;");
    assert_eq!(value(&log, "owners"), format!("{NOBODY} 0"));
}

#[test]
fn services_of_two_blocks_run_as_different_host_ids_in_different_namespaces() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");
    let script = "echo done; exec sleep 30";

    let one = main_pid(&helper.spawn(
        &image,
        "one",
        &block_spec(FIRST, IMAGE_UID, IMAGE_UID),
        script,
    ));
    let two = main_pid(&helper.spawn(
        &image,
        "two",
        &block_spec(OTHER_FIRST, IMAGE_UID, IMAGE_UID),
        script,
    ));

    helper.log_until("one", "done");
    helper.log_until("two", "done");
    assert_eq!(
        (host_uid(one), host_uid(two)),
        (FIRST + IMAGE_UID, OTHER_FIRST + IMAGE_UID)
    );
    let ns = |pid: u32| fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_ne!(ns(one), ns(two));
}

#[test]
fn a_block_outside_the_helper_s_range_is_refused() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");
    let program = ServiceProgram::simple(vec!["/bin/true".into()]);

    let out = helper.send(
        &image,
        "low",
        &block_spec(65_536, IMAGE_UID, IMAGE_UID),
        &program,
    );

    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.contains("io.berth.Helper.RequestRefused")
            && reply.contains("sandbox.identity.user_block"),
        "{reply}"
    );
}

#[test]
fn what_the_image_s_user_logs_through_syslog_lands_in_its_log() {
    let helper = Helper::start();
    let image = image(&helper.h, "img");
    let mut spec = block_spec(FIRST, IMAGE_UID, IMAGE_UID);
    spec.capture_log_sockets = true;

    helper.spawn(
        &image,
        "syslog",
        &spec,
        "logger -t food -p daemon.err 'as the image user'; exec sleep 30",
    );

    // Priority 3, no pid, tag `food` (log_line.rs's record of a log socket's message).
    helper.log_until("syslog", " syslog:3::food as the image user");
}
