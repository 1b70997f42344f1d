//! The image builder's output works: busybox and the probe (with its copied shared libraries)
//! run in a chroot of the image. Needs root (for chroot).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_testkit::{ImageBuilder, busybox_image, probe_output};

/// Runs `args` chrooted into `image`, requires success, returns stdout.
fn chroot(image: &Path, args: &[&str]) -> String {
    let out = Command::new("chroot")
        .arg(image)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("running chroot");
    assert!(
        out.status.success(),
        "chroot {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn busybox_shell_runs_in_image() {
    let t = tempfile::tempdir().unwrap();
    let image = ImageBuilder::new(&t.path().join("img")).build().unwrap();
    assert_eq!(chroot(&image, &["/bin/sh", "-c", "echo ok"]), "ok\n");
    assert_eq!(
        chroot(&image, &["sh", "-c", "id -u; ls /etc"]),
        "0\ngroup\nos-release\npasswd\n"
    );
    let mode = std::fs::metadata(t.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o055, 0o055, "tempdir made traversable");
}

#[test]
fn probe_runs_in_image_and_reports_json() {
    let t = tempfile::tempdir().unwrap();
    let image = busybox_image(t.path(), "demo").unwrap();
    assert!(image.join("usr/lib/systemd/system/demo.service").is_file());
    let out = chroot(
        &image,
        &[
            "/usr/bin/berth-probe",
            "--check-path",
            "/bin/busybox",
            "--check-path",
            "/nope",
        ],
    );
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["uid"], 0);
    assert!(v["fds"].as_array().is_some_and(|f| !f.is_empty()), "{v}");
    assert_eq!(v["visible"]["/bin/busybox"], true);
    assert_eq!(v["visible"]["/nope"], false);
    assert_eq!(v["cwd"], "/");
    // The image has no /proc mounted: the probe reports errors, it does not panic.
    for field in ["mounts", "status", "uid_map"] {
        assert!(
            v[field].as_str().is_some_and(|s| s.starts_with("error: ")),
            "{v}"
        );
    }
    assert_eq!(v["root_writable"], true);
    assert_eq!(v["tmp_writable"], true);
    assert!(!image.join(".probe-write-test").exists());

    // The same output found among other log lines.
    let log = format!("starting\nhello from demo\n{out}bye\n");
    assert_eq!(probe_output(&log).unwrap(), v);
}

#[test]
fn probe_sleep_flag_prints_first() {
    let t = tempfile::tempdir().unwrap();
    let image = ImageBuilder::new(&t.path().join("img"))
        .probe()
        .build()
        .unwrap();
    let mut child = Command::new("chroot")
        .arg(&image)
        .args(["/usr/bin/berth-probe", "--loop"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(probe_output(&line).is_ok(), "{line}");
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn builder_options() {
    let t = tempfile::tempdir().unwrap();
    let image = ImageBuilder::new(&t.path().join("img"))
        .without_os_release()
        .file("/etc/app.conf", "x=1\n", 0o600)
        .symlink("usr/lib/systemd/system/evil.service", "/etc/shadow")
        .dir("var/lib/app", 0o700)
        .build()
        .unwrap();
    assert!(!image.join("etc/os-release").exists());
    let meta = std::fs::metadata(image.join("etc/app.conf")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_link(image.join("usr/lib/systemd/system/evil.service")).unwrap(),
        Path::new("/etc/shadow")
    );
    let meta = std::fs::metadata(image.join("usr/lib/systemd")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    let with = ImageBuilder::new(&t.path().join("img2"))
        .os_release("ID=x\nPORTABLE_PREFIXES=app\n")
        .build()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(with.join("etc/os-release")).unwrap(),
        "ID=x\nPORTABLE_PREFIXES=app\n"
    );
}

#[test]
fn probe_reads_proc_when_mounted() {
    let t = tempfile::tempdir().unwrap();
    let image = ImageBuilder::new(&t.path().join("img"))
        .probe()
        .build()
        .unwrap();
    // A private mount namespace with /proc mounted in the image, then chroot.
    let script = format!(
        "mount -t proc proc {0}/proc && exec chroot {0} /usr/bin/berth-probe",
        image.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "sh", "-c", &script])
        .output()
        .expect("running unshare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = probe_output(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(v["pid"], 1, "{v}");
    // 0, 1, 2 and whatever the test runner leaked to us; not the probe's own /proc dir fd.
    let fds = v["fds"].as_array().unwrap();
    assert_eq!(fds[..3], [0, 1, 2], "{v}");
    assert!(fds.len() < 8, "{v}");
    assert!(
        v["status"]["CapEff"]
            .as_str()
            .is_some_and(|s| s.len() == 16),
        "{v}"
    );
    assert_eq!(v["status"]["NoNewPrivs"], "0");
    assert!(
        v["namespaces"]["mnt"]
            .as_str()
            .is_some_and(|s| s.starts_with("mnt:["))
    );
    let mounts = v["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mount_point"] == "/proc" && m["fs_type"] == "proc"),
        "{v}"
    );
    assert!(
        v["uid_map"]
            .as_str()
            .is_some_and(|s| s.contains("4294967295"))
    );
}
