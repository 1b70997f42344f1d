//! The host's files over the image's placeholders, through berthd (ISSUE 9 item 4, first
//! half): resolv.conf and hosts from berthd's copies (berthd.toml `host_resolv_conf`,
//! `host_hosts` point at temporary files here), kept current when the host replaces them by
//! rename as resolvconf does; machine-id and localtime the host's own.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder};

/// How long a change of the host's file may take to reach a running service: berthd checks
/// every second; the rest is margin for a loaded machine.
const WAIT: Duration = Duration::from_secs(15);
const HOST_RESOLV: &str = "nameserver 192.0.2.1\nsearch host.example\n";
const HOST_HOSTS: &str = "192.0.2.7 host-only-name\n";

/// The host's resolv.conf and hosts as berthd is told to find them: in a directory berthd
/// (user berth) can read.
struct HostEtc {
    dir: tempfile::TempDir,
}

impl HostEtc {
    fn new() -> HostEtc {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let etc = HostEtc { dir };
        etc.replace("resolv.conf", HOST_RESOLV);
        etc.replace("hosts", HOST_HOSTS);
        etc
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a new file and renames it over `name`: a new inode, as resolvconf makes.
    fn replace(&self, name: &str, content: &str) {
        let tmp = self.path(&format!(".{name}.new"));
        fs::write(&tmp, content).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&tmp, self.path(name)).unwrap();
    }

    fn harness(&self) -> Harness {
        Harness::start_with_config(&format!(
            "host_resolv_conf = \"{}\"\nhost_hosts = \"{}\"\n",
            self.path("resolv.conf").display(),
            self.path("hosts").display()
        ))
        .unwrap()
    }
}

/// An image `name` with the portable placeholders (empty resolv.conf, hosts and machine-id)
/// and `name.service` running `script`.
fn image(h: &Harness, name: &str, service: &str, script: &str) -> ImageBuilder {
    let unit = format!("[Service]\n{service}ExecStart=/bin/sh -c '{script}'\n");
    ImageBuilder::new(&h.images_dir().join(name))
        .file("etc/resolv.conf", "", 0o644)
        .file("etc/hosts", "", 0o644)
        .file("etc/machine-id", "", 0o444)
        .unit(&format!("{name}.service"), &unit)
}

fn oneshot(h: &Harness, builder: ImageBuilder, name: &str) -> String {
    builder.build().unwrap();
    h.berth_ok(&["attach", name]).unwrap();
    h.berth_ok(&["start", name]).unwrap();
    h.berth_ok(&["logs", name, "-o", "cat"]).unwrap()
}

fn host_file(path: &str) -> String {
    fs::read_to_string(Path::new(path)).unwrap()
}

#[test]
fn a_service_reads_the_host_s_resolv_conf_from_berthd_s_copy() {
    let etc = HostEtc::new();
    let h = etc.harness();
    let app = image(&h, "dns", "Type=oneshot\n", "cat /etc/resolv.conf");

    let log = oneshot(&h, app, "dns");

    assert!(log.contains("nameserver 192.0.2.1"), "{log}");
    assert!(log.contains("search host.example"), "{log}");
    let copy = h.runtime_dir().join("host/resolv.conf");
    assert_eq!(fs::read_to_string(copy).unwrap(), HOST_RESOLV);
}

#[test]
fn a_running_service_sees_the_host_s_resolv_conf_replaced_by_rename() {
    let etc = HostEtc::new();
    let h = etc.harness();
    image(
        &h,
        "watcher",
        "",
        "while :; do cat /etc/resolv.conf; sleep 0.2; done",
    )
    .build()
    .unwrap();
    h.berth_ok(&["attach", "watcher"]).unwrap();
    h.berth_ok(&["start", "watcher"]).unwrap();
    let logs = || h.berth_ok(&["logs", "watcher", "-o", "cat"]);
    h.wait_for(|| Ok(logs()?.contains("192.0.2.1")), WAIT)
        .unwrap();

    etc.replace("resolv.conf", "nameserver 198.51.100.53\n");

    h.wait_for(|| Ok(logs()?.contains("nameserver 198.51.100.53")), WAIT)
        .unwrap();
    h.berth_ok(&["stop", "watcher"]).unwrap();
}

#[test]
fn a_service_running_across_a_berthd_restart_still_sees_the_host_s_changes() {
    let etc = HostEtc::new();
    let mut h = etc.harness();
    image(
        &h,
        "survivor",
        "",
        "while :; do cat /etc/resolv.conf; sleep 0.2; done",
    )
    .build()
    .unwrap();
    h.berth_ok(&["attach", "survivor"]).unwrap();
    h.berth_ok(&["start", "survivor"]).unwrap();
    let pid = h.status_json("survivor").unwrap()["main_pid"].clone();
    h.restart_berthd().unwrap();

    etc.replace("resolv.conf", "nameserver 203.0.113.9\n");

    let logs = || h.berth_ok(&["logs", "survivor", "-o", "cat"]);
    h.wait_for(|| Ok(logs()?.contains("nameserver 203.0.113.9")), WAIT)
        .unwrap();
    assert_eq!(h.status_json("survivor").unwrap()["main_pid"], pid);
    h.berth_ok(&["stop", "survivor"]).unwrap();
}

#[test]
fn an_image_with_an_empty_hosts_gets_the_host_s() {
    let etc = HostEtc::new();
    let h = etc.harness();
    let app = image(&h, "names", "Type=oneshot\n", "cat /etc/hosts");

    let log = oneshot(&h, app, "names");

    assert!(log.contains("192.0.2.7 host-only-name"), "{log}");
}

#[test]
fn an_image_with_hosts_of_its_own_keeps_them() {
    let etc = HostEtc::new();
    let h = etc.harness();
    let app = image(&h, "ownhosts", "Type=oneshot\n", "cat /etc/hosts").file(
        "etc/hosts",
        "10.0.0.1 image-own-name\n",
        0o644,
    );

    let log = oneshot(&h, app, "ownhosts");

    assert!(log.contains("10.0.0.1 image-own-name"), "{log}");
    assert!(!log.contains("host-only-name"), "{log}");
}

#[test]
fn machine_id_is_the_host_s() {
    let etc = HostEtc::new();
    let h = etc.harness();
    let app = image(
        &h,
        "ident",
        "Type=oneshot\n",
        "echo id=$(cat /etc/machine-id)",
    );

    let log = oneshot(&h, app, "ident");

    let host = host_file("/etc/machine-id");
    assert!(!host.trim().is_empty(), "the host has no machine id");
    assert!(log.contains(&format!("id={}", host.trim())), "{log}");
}

#[test]
fn localtime_is_the_host_s_zone_over_the_file_the_image_s_symlink_names() {
    let etc = HostEtc::new();
    let h = etc.harness();
    let app = image(
        &h,
        "zone",
        "Type=oneshot\n",
        "echo size=$(wc -c < /etc/localtime) magic=$(head -c 4 /etc/localtime)",
    )
    .dir("usr/share/zoneinfo/Etc", 0o755)
    .file("usr/share/zoneinfo/Etc/UTC", "image zone\n", 0o644)
    .symlink("etc/localtime", "../usr/share/zoneinfo/Etc/UTC");

    let log = oneshot(&h, app, "zone");

    // The host's /etc/localtime, its symlink followed on the host: a TZif file.
    let host = fs::read("/etc/localtime").unwrap();
    assert!(
        log.contains(&format!("size={} magic=TZif", host.len())),
        "{log}"
    );
}

#[test]
fn a_placeholder_that_is_a_symlink_redirects_no_bind() {
    let etc = HostEtc::new();
    let h = etc.harness();
    // A hostile image points resolv.conf at another of its files: the host's file must not
    // land there (only localtime's symlink is followed).
    let app = image(
        &h,
        "redirect",
        "Type=oneshot\n",
        "echo first=$(head -n 1 /etc/os-release)",
    )
    .symlink("etc/resolv.conf", "os-release");

    let log = oneshot(&h, app, "redirect");

    assert!(log.contains("first=ID=berth-test"), "{log}");
    assert!(!log.contains("nameserver"), "{log}");
}

#[test]
fn an_image_without_placeholders_starts_and_sees_none() {
    let etc = HostEtc::new();
    let h = etc.harness();
    let unit = "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'for f in resolv.conf hosts machine-id localtime; do test -e /etc/$f && echo has-$f; done; echo done'\n";
    let app = ImageBuilder::new(&h.images_dir().join("bare")).unit("bare.service", unit);

    let log = oneshot(&h, app, "bare");

    assert!(log.contains("done"), "{log}");
    assert!(!log.contains("has-"), "{log}");
}
