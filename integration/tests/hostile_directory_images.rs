//! Hostile directory images (issue 6, item 10): symlinks that point out of the image for
//! os-release, unit directories, unit files and the sandbox's mount targets, hard links to host
//! files, an os-release without ID, a 100 MB unit file, an empty match against
//! PORTABLE_PREFIXES. In each, nothing on the host changes and berthd keeps serving.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::PathBuf;
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder};

/// A host directory outside every image holding `marker` files, readable by everyone (so
/// that only the image's resolution keeps berthd from reading them).
struct HostSide {
    dir: PathBuf,
}

impl HostSide {
    fn new(h: &Harness) -> HostSide {
        let dir = h.dir().join("host-side");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(
            dir.join("os-release"),
            "ID=host-marker\nPRETTY_NAME=\"HOST MARKER\"\nPORTABLE_PREFIXES=evil\n",
        )
        .unwrap();
        fs::write(
            dir.join("evil.service"),
            "[Unit]\nDescription=HOST UNIT\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
        for p in [&dir, &dir.join("sub")] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        HostSide { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Every entry below the directory with its contents, to compare before and after.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path.clone());
                    out.push((path, Vec::new()));
                } else {
                    out.push((path.clone(), fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

/// `../` enough times to leave any image, then `target` (absolute).
fn dotdot(target: &str) -> String {
    format!("../../../../../../../../../..{target}")
}

fn assert_still_serving(h: &Harness) {
    h.berth_ok(&["list"]).unwrap();
    h.berth_ok(&["image", "list"]).unwrap();
}

/// What `inspect --cat` and `attach` of image `name` say (either may fail).
fn inspect_and_attach(h: &Harness, name: &str) -> (String, String) {
    let inspect = h.berth(&["image", "inspect", name, "--cat"]).unwrap();
    let attach = h.berth(&["attach", name]).unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    (text(&inspect), text(&attach))
}

#[test]
fn os_release_symlinked_out_of_the_image_is_never_read_from_the_host() {
    let h = Harness::start().unwrap();
    let host = HostSide::new(&h);
    let before = host.snapshot();
    // Absolute, ../.., and a symlinked parent directory (/etc is the host directory).
    let cases = [
        ("absolute", "etc/os-release", host.path("os-release")),
        ("dotdot", "etc/os-release", dotdot(&host.path("os-release"))),
        ("parent", "etc", host.dir.to_str().unwrap().to_owned()),
        ("usrlib", "usr/lib", host.dir.to_str().unwrap().to_owned()),
    ];
    for (case, link, target) in &cases {
        let name = format!("evil{case}");
        let image = ImageBuilder::new(&h.images_dir().join(&name))
            .without_os_release()
            .unit(
                &format!("{name}.service"),
                "[Service]\nExecStart=/bin/true\n",
            )
            .build()
            .unwrap();
        let at = image.join(link);
        if at.is_dir() {
            fs::remove_dir_all(&at).unwrap();
        } else {
            let _ = fs::remove_file(&at);
        }
        symlink(target, &at).unwrap();

        let (inspect, attach) = inspect_and_attach(&h, &name);

        for out in [&inspect, &attach] {
            assert!(
                !out.contains("HOST MARKER") && !out.contains("host-marker"),
                "{case}: {out}"
            );
        }
        assert!(attach.contains("os-release"), "{case}: {attach}");
        assert_eq!(
            h.berth(&["is-attached", &name]).unwrap().status.code(),
            Some(1),
            "{case}"
        );
    }
    assert_eq!(host.snapshot(), before);
    assert_still_serving(&h);
}

#[test]
fn unit_directories_symlinked_out_of_the_image_find_no_host_unit() {
    let h = Harness::start().unwrap();
    let host = HostSide::new(&h);
    let before = host.snapshot();
    let host_dir = host.dir.to_str().unwrap().to_owned();
    let cases = [
        ("absolute", "usr/lib/systemd/system", host_dir.clone()),
        ("dotdot", "etc/systemd/system", dotdot(&host_dir)),
        ("parent", "lib", host_dir.clone()),
        ("systemd", "usr/lib/systemd", host_dir.clone()),
    ];
    for (case, link, target) in &cases {
        let name = format!("evil{case}");
        let image = ImageBuilder::new(&h.images_dir().join(&name))
            .os_release("ID=test\n")
            .build()
            .unwrap();
        let at = image.join(link);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        if at.is_dir() {
            fs::remove_dir_all(&at).unwrap();
        }
        symlink(target, &at).unwrap();

        // The host directory holds evil.service; attach the prefix "evil".
        let inspect = h
            .berth(&["image", "inspect", &name, "evil", "--cat"])
            .unwrap();
        let attach = h.berth(&["attach", &name, "evil"]).unwrap();

        let shown = String::from_utf8_lossy(&inspect.stdout).into_owned();
        assert!(
            !shown.contains("HOST UNIT") && !shown.contains("evil.service"),
            "{case}: {shown}"
        );
        assert!(!attach.status.success(), "{case}: attached a host unit");
        assert!(h.status_json("evil").is_err(), "{case}");
    }
    assert_eq!(host.snapshot(), before);
    assert_still_serving(&h);
}

#[test]
fn a_unit_file_linked_with_dotdot_to_a_host_file_is_refused() {
    // The absolute symlink is bad_input::symlinked_unit_pointing_at_a_host_file_is_refused.
    let h = Harness::start().unwrap();
    let host = HostSide::new(&h);
    ImageBuilder::new(&h.images_dir().join("evil"))
        .symlink(
            "usr/lib/systemd/system/evil.service",
            &dotdot(&host.path("evil.service")),
        )
        .build()
        .unwrap();

    let err = h.berth_err(&["attach", "evil"]).unwrap();
    let cat = h.berth(&["image", "inspect", "evil", "--cat"]).unwrap();

    assert!(err.contains("points outside the image"), "{err}");
    assert!(!cat.status.success());
    assert!(!String::from_utf8_lossy(&cat.stdout).contains("HOST UNIT"));
    assert_still_serving(&h);
}

#[test]
fn mount_targets_symlinked_to_host_paths_change_nothing_on_the_host() {
    let h = Harness::start().unwrap();
    let host = HostSide::new(&h);
    let before = host.snapshot();
    let mounts_before = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    // The service writes into /tmp, /run and /dev, over /etc/resolv.conf, and lists /proc:
    // each a symlink in the image to a host path.
    let script = "echo tmp > /tmp/written; echo run > /run/written; echo dev > /dev/written; \
                  echo resolv > /etc/resolv.conf; ls /proc > /dev/null; echo done";
    let image = ImageBuilder::new(&h.images_dir().join("evilmounts"))
        .unit(
            "evilmounts.service",
            &format!("[Service]\nType=oneshot\nExecStart=/bin/sh -c '{script}'\n"),
        )
        .build()
        .unwrap();
    for (dir, target) in [
        ("tmp", "sub"),
        ("run", "sub"),
        ("dev", "sub"),
        ("proc", "sub"),
    ] {
        let at = image.join(dir);
        let _ = fs::remove_dir_all(&at);
        let _ = fs::remove_file(&at);
        symlink(host.path(target), &at).unwrap();
    }
    let _ = fs::remove_file(image.join("etc/resolv.conf"));
    symlink(host.path("resolv.conf"), image.join("etc/resolv.conf")).unwrap();

    let attached = h.berth(&["attach", "evilmounts"]).unwrap();
    let started = attached
        .status
        .success()
        .then(|| h.berth(&["start", "evilmounts"]).unwrap());
    let _ = h.wait_for(
        || {
            h.status_json("evilmounts")
                .map(|s| s["state"] != "starting")
        },
        Duration::from_secs(10),
    );

    // The service runs (its writes land in its own mounts or fail: "Permission denied",
    // "nonexistent directory"); the host paths the links name stay as they were.
    assert!(started.is_some_and(|s| s.status.success()), "{attached:?}");
    assert_eq!(host.snapshot(), before, "the host side changed");
    let mounts_after = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(mounts_after, mounts_before, "a mount was left on the host");
    assert_still_serving(&h);
}

#[test]
fn a_hard_link_to_a_host_file_is_imported_as_a_copy() {
    let h = Harness::start().unwrap();
    let host = HostSide::new(&h);
    let source = ImageBuilder::new(&h.dir().join("src/linked"))
        .unit("linked.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();
    fs::hard_link(host.dir.join("resolv.conf"), source.join("etc/linked.conf")).unwrap();

    h.berth_ok(&["image", "import", source.to_str().unwrap()])
        .unwrap();

    let copy = h.images_dir().join("linked/etc/linked.conf");
    let host_file = host.dir.join("resolv.conf");
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&host_file).unwrap());
    assert_ne!(
        fs::metadata(&copy).unwrap().ino(),
        fs::metadata(&host_file).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(&host_file).unwrap().nlink(),
        2,
        "only the source links it"
    );
    assert_still_serving(&h);
}

#[test]
fn a_service_cannot_write_a_host_file_through_a_hard_link_in_its_image() {
    // At run time the image is mounted read-only: a hard link in it is the host file itself,
    // readable as its mode allows, never writable.
    let h = Harness::start().unwrap();
    let host = HostSide::new(&h);
    let host_file = host.dir.join("resolv.conf");
    let image = ImageBuilder::new(&h.images_dir().join("linked"))
        .unit(
            "linked.service",
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo owned > /etc/linked.conf; echo rc=$?'\n",
        )
        .build()
        .unwrap();
    fs::hard_link(&host_file, image.join("etc/linked.conf")).unwrap();
    let before = host.snapshot();

    h.berth_ok(&["attach", "linked"]).unwrap();
    h.berth_ok(&["start", "linked"]).unwrap();
    let logs = h.berth_ok(&["logs", "linked"]).unwrap();

    assert!(
        logs.contains("rc=1") || logs.contains("Read-only"),
        "{logs}"
    );
    assert_eq!(host.snapshot(), before);
    assert_still_serving(&h);
}

#[test]
fn an_os_release_without_id_is_refused_at_attach_and_shown_by_inspect() {
    let h = Harness::start().unwrap();
    for (name, text) in [
        ("noid", "NAME=\"no id\"\n"),
        ("emptyid", "ID=\nNAME=x\n"),
        ("empty", ""),
    ] {
        ImageBuilder::new(&h.images_dir().join(name))
            .os_release(text)
            .unit(
                &format!("{name}.service"),
                "[Service]\nExecStart=/bin/true\n",
            )
            .build()
            .unwrap();

        let inspect = h.berth(&["image", "inspect", name]).unwrap();
        let err = h.berth_err(&["attach", name]).unwrap();

        assert!(inspect.status.success(), "{name}: {inspect:?}");
        assert!(err.contains("has no ID="), "{name}: {err}");
        assert_eq!(
            h.berth(&["is-attached", name]).unwrap().status.code(),
            Some(1)
        );
    }
    assert_still_serving(&h);
}

#[test]
fn a_100_mb_unit_file_is_refused_without_reading_it_whole() {
    let h = Harness::start().unwrap();
    let image = ImageBuilder::new(&h.images_dir().join("huge"))
        .build()
        .unwrap();
    let unit = image.join("usr/lib/systemd/system/huge.service");
    fs::create_dir_all(unit.parent().unwrap()).unwrap();
    // 100 MB, mostly a hole: berthd's read is bounded, so it never reads past 1 MiB.
    let file = fs::File::create(&unit).unwrap();
    file.set_len(100 * 1000 * 1000).unwrap();
    fs::set_permissions(&unit, fs::Permissions::from_mode(0o644)).unwrap();
    let rss = |pid: u32| -> u64 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };

    let started = std::time::Instant::now();
    let err = h.berth_err(&["attach", "huge"]).unwrap();
    let inspect = h.berth(&["image", "inspect", "huge", "--cat"]).unwrap();

    assert!(err.contains("larger than 1048576 bytes"), "{err}");
    assert!(!inspect.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        rss(h.berthd_pid().unwrap()) < 64 * 1024,
        "berthd peaked past 64 MiB"
    );
    assert_still_serving(&h);
}

#[test]
fn an_empty_match_against_portable_prefixes_is_refused() {
    // No prefixes means the image's name; an image whose PORTABLE_PREFIXES leave its own name
    // out attaches nothing by default (portabled would attach every unit: an empty match list
    // passes its check vacuously). An empty prefix is no prefix at all.
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("img"))
        .os_release("ID=test\nPORTABLE_PREFIXES=app\n")
        .unit("app.service", "[Service]\nExecStart=/bin/true\n")
        .unit("img.service", "[Service]\nExecStart=/bin/true\n")
        .build()
        .unwrap();

    let default = h.berth_err(&["attach", "img"]).unwrap();
    let empty = h.berth_err(&["attach", "img", ""]).unwrap();

    assert!(
        default.contains("PORTABLE_PREFIXES") && default.contains("app"),
        "{default}"
    );
    assert!(empty.contains("invalid unit prefix"), "{empty}");
    assert!(h.status_json("app").is_err() && h.status_json("img").is_err());
    h.berth_ok(&["attach", "img", "app"]).unwrap();
    assert_still_serving(&h);
}
