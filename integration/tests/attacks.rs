//! Hostile services and images against the sandbox: the attack cases of
//! research/sandbox-peers.md §4 that apply to the sandbox as it is now (the numbers in the test
//! names' comments are that table's).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder, probe_output, process_exists};

const WAIT: Duration = Duration::from_secs(10);

/// Attaches image `name` holding one oneshot `name.service` that runs `script` with sh, starts
/// it, and returns its log.
fn run_script(h: &Harness, name: &str, script: &str) -> String {
    let unit = format!("[Service]\nType=oneshot\nExecStart=/bin/sh -c '{script}'\n");
    ImageBuilder::new(&h.images_dir().join(name))
        .unit(&format!("{name}.service"), &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", name]).unwrap();
    h.berth_ok(&["start", name]).unwrap();
    h.berth_ok(&["logs", name]).unwrap()
}

/// Shell that prints `<label>:open` or `<label>:denied` for `command`.
fn attempt(label: &str, command: &str) -> String {
    format!("if {command} >/dev/null 2>&1; then echo {label}:open; else echo {label}:denied; fi; ")
}

// #12: signals from the sandbox reach only the sandbox.
#[test]
fn kill_of_every_process_from_a_service_reaches_nothing_outside_its_sandbox() {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("victim"))
        .unit("victim.service", "[Service]\nExecStart=/bin/sleep 1000\n")
        .build()
        .unwrap();
    h.berth_ok(&["attach", "victim"]).unwrap();
    h.berth_ok(&["start", "victim"]).unwrap();
    let victim = h.status_json("victim").unwrap()["main_pid"]
        .as_u64()
        .unwrap() as u32;
    let (berthd, helper) = (h.berthd_pid().unwrap(), h.helper_pid().unwrap());

    let log = run_script(&h, "killer", "kill -9 -1; echo after-kill");

    assert!(log.contains("after-kill"), "{log}");
    assert!(process_exists(victim), "another service was killed");
    assert!(process_exists(berthd) && process_exists(helper));
    assert_eq!(h.status_json("victim").unwrap()["state"], "running");
}

// #11: the sandbox's init is forked from the root helper; the service must not reach it
// through /proc (its memory, environment, or the helper binary behind /proc/1/exe, whose
// host path /proc/1/exe and /proc/1/maps would also show).
#[test]
fn the_service_cannot_reach_its_init_through_proc() {
    let h = Harness::start().unwrap();
    let script = [
        attempt("environ", "cat /proc/1/environ"),
        attempt("maps", "cat /proc/1/maps"),
        attempt("mem", "dd if=/proc/1/mem bs=1 count=1"),
        attempt("exe-read", "head -c 1 /proc/1/exe"),
        attempt("exe-link", "readlink /proc/1/exe"),
        attempt("exe-write", "echo x >> /proc/1/exe"),
        attempt("root", "ls /proc/1/root/"),
        attempt("cwd", "readlink /proc/1/cwd"),
        // Controls: the same reads of the service's own /proc entries work.
        attempt("own-maps", "cat /proc/self/maps"),
        attempt("own-exe-link", "readlink /proc/self/exe"),
    ]
    .concat();

    let log = run_script(&h, "snoop", &script);

    assert!(
        log.contains("own-maps:open") && log.contains("own-exe-link:open"),
        "{log}"
    );
    for label in [
        "environ",
        "maps",
        "mem",
        "exe-read",
        "exe-link",
        "exe-write",
        "root",
        "cwd",
    ] {
        assert!(
            log.contains(&format!("{label}:denied")),
            "{label} was not denied:\n{log}"
        );
    }
}

// #18: what the service can read of its init and of its mounts names nothing of the host: not
// the image's directory, the helper's binary or socket, nor the daemons' directories. With the
// trusted profile: the others' ProtectProc=invisible hides init from the service altogether.
#[test]
fn the_service_reads_no_host_path_in_pid_1_or_mountinfo() {
    let h = Harness::start().unwrap();
    let image = h.images_dir().join("probe");
    ImageBuilder::new(&image)
        .probe()
        .unit(
            "probe.service",
            "[Service]\nExecStart=/usr/bin/berth-probe --loop\n",
        )
        .build()
        .unwrap();
    h.berth_ok(&["attach", "probe", "--profile", "trusted"])
        .unwrap();
    let helper = h.helper_pid().unwrap();
    let host_paths = [
        image.canonicalize().unwrap(),
        std::fs::read_link(format!("/proc/{helper}/exe")).unwrap(),
        h.runtime_dir().join("private/io.berth.Helper"),
        h.dir().to_path_buf(),
    ];

    h.berth_ok(&["start", "probe"]).unwrap();
    h.wait_for(
        || Ok(probe_output(&h.berth_ok(&["logs", "probe"])?).is_ok()),
        WAIT,
    )
    .unwrap();
    let probe = probe_output(&h.berth_ok(&["logs", "probe"]).unwrap()).unwrap();

    assert_eq!(probe["pid1"]["cmdline"], "berth-init\u{0}");
    assert_eq!(probe["pid1"]["comm"], "berth-init");
    let mut seen: Vec<(String, &str)> = Vec::new();
    for field in ["cmdline", "environ"] {
        let text = probe["pid1"][field].as_str().unwrap();
        seen.push((format!("/proc/1/{field}"), text));
    }
    for mount in probe["mounts"].as_array().unwrap() {
        for (key, value) in mount.as_object().unwrap() {
            seen.push((format!("mountinfo {key}"), value.as_str().unwrap()));
        }
    }
    for path in &host_paths {
        let path = path.to_str().unwrap();
        for (place, text) in &seen {
            assert!(!text.contains(path), "{path} shows in {place}: {text}");
        }
    }
}

// #6: device nodes shipped in an image do not work (every image mount is nodev).
#[test]
fn device_nodes_in_the_image_cannot_be_opened() {
    let h = Harness::start().unwrap();
    let script = [
        attempt("null", "head -c 1 /opt/devices/null"),
        attempt("mem", "head -c 1 /opt/devices/mem"),
        // Control: the sandbox's own /dev/null works.
        attempt("own-null", "head -c 1 /dev/null"),
    ]
    .concat();
    let unit = format!("[Service]\nType=oneshot\nExecStart=/bin/sh -c '{script}'\n");
    let image = ImageBuilder::new(&h.images_dir().join("nodes"))
        .dir("opt/devices", 0o755)
        .unit("nodes.service", &unit)
        .build()
        .unwrap();
    for (name, minor) in [("null", 3), ("mem", 1)] {
        let path = std::ffi::CString::new(
            image
                .join("opt/devices")
                .join(name)
                .to_str()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        // SAFETY: mknod(2) with a valid NUL-terminated path; the test runs as root.
        let made = unsafe {
            libc::mknod(
                path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, minor),
            )
        };
        assert_eq!(made, 0, "mknod {name}");
    }
    h.berth_ok(&["attach", "nodes"]).unwrap();

    h.berth_ok(&["start", "nodes"]).unwrap();
    let log = h.berth_ok(&["logs", "nodes"]).unwrap();

    assert!(log.contains("own-null:open"), "{log}");
    assert!(log.contains(" null:denied"), "{log}");
    assert!(log.contains("mem:denied"), "{log}");
}

// #10: a working directory through /proc/self/fd must not lead out of the sandbox (the runc
// CVE-2024-21626 pattern: a leaked directory fd of the host as cwd).
#[test]
fn a_working_directory_through_proc_self_fd_does_not_escape() {
    let h = Harness::start().unwrap();
    std::fs::write(h.images_dir().join("HOST-MARKER"), "host").unwrap();
    let mut image = ImageBuilder::new(&h.images_dir().join("cwd"));
    for fd in 3..10 {
        image = image.unit(
            &format!("cwd-{fd}.service"),
            &format!(
                "[Service]\nType=oneshot\nWorkingDirectory=/proc/self/fd/{fd}\n\
                 ExecStart=/bin/sh -c 'echo cwd=$(pwd); ls -a . .. ../.. ../../..'\n"
            ),
        );
    }
    image.build().unwrap();
    h.berth_ok(&["attach", "cwd"]).unwrap();

    let mut logs = String::new();
    for fd in 3..10 {
        // Refusing to start is fine; starting with a cwd outside the sandbox is not.
        let _ = h.berth(&["start", &format!("cwd-{fd}")]).unwrap();
        logs.push_str(&h.berth_ok(&["logs", &format!("cwd-{fd}")]).unwrap());
    }

    assert!(
        !logs.contains("HOST-MARKER"),
        "a service saw a host directory:\n{logs}"
    );
    h.wait_for(|| Ok(h.berth(&["list"])?.status.success()), WAIT)
        .unwrap();
}

// #18: /proc entries that leak kernel state are masked; the tunables are read-only. Masked
// files are the null device (major 1, minor 3); a masked directory is an empty tmpfs. Entries
// this kernel lacks are skipped, so only ones that exist here are checked. (`%%` is a unit
// file's escaped `%`: `%t` alone would be a specifier.)
#[test]
fn proc_hides_kernel_state_and_keeps_tunables_read_only() {
    let h = Harness::start().unwrap();
    let masked: Vec<&str> = ["keys", "timer_list", "interrupts", "kcore", "sched_debug"]
        .into_iter()
        .filter(|f| std::path::Path::new("/proc").join(f).exists())
        .collect();
    assert!(
        !masked.is_empty(),
        "none of the masked files exists on this host"
    );
    let mut script: String = masked
        .iter()
        .map(|f| format!("echo {f}=$(stat -c %%t:%%T /proc/{f}); "))
        .collect();
    script.push_str("echo acpi-mounts=$(grep -c \" /proc/acpi \" /proc/self/mountinfo); ");
    // Control: an unmasked entry is proc's own file.
    script.push_str("echo cpuinfo=$(stat -c %%t:%%T /proc/cpuinfo); ");
    script.push_str(&attempt(
        "sysctl-write",
        "echo 1 > /proc/sys/kernel/ns_last_pid",
    ));
    script.push_str(&attempt("bus-write", "touch /proc/bus/x"));

    let log = run_script(&h, "procmask", &script);

    for f in &masked {
        assert!(
            log.contains(&format!("{f}=1:3")),
            "/proc/{f} is not masked:\n{log}"
        );
    }
    if std::path::Path::new("/proc/acpi").exists() {
        assert!(log.contains("acpi-mounts=1"), "{log}");
    }
    assert!(log.contains("cpuinfo=0:0"), "{log}");
    assert!(log.contains("sysctl-write:denied"), "{log}");
    assert!(log.contains("bus-write:denied"), "{log}");
}

// #21 (in part): the sandbox's tmpfs mounts are size-limited, so filling /tmp cannot take
// half the host's memory.
#[test]
fn the_sandbox_tmpfs_mounts_are_size_limited() {
    let h = Harness::start().unwrap();
    let script = "for m in /tmp /run /dev/shm /dev; do \
                  echo \"$m $(grep \" $m \" /proc/self/mountinfo | grep -o \"nr_inodes=[0-9]*\")\"; done";

    let log = run_script(&h, "limits", script);

    for expected in [
        "/tmp nr_inodes=409600",
        "/run nr_inodes=409600",
        "/dev/shm nr_inodes=409600",
        "/dev nr_inodes=65536",
    ] {
        assert!(log.contains(expected), "{expected} expected:\n{log}");
    }
}

// #20: what a service leaves in its private /tmp, /dev/shm and /run is gone when it (or the
// next holder of its dynamic uid) starts again.
#[test]
fn a_restarted_service_finds_nothing_its_previous_run_left() {
    let h = Harness::start().unwrap();
    let script = "for d in /tmp /dev/shm /run; do \
                  if [ -e $d/left-behind ]; then echo $d:found; else echo $d:clean; fi; \
                  echo secret > $d/left-behind; done; id -u";
    let unit = format!("[Service]\nType=oneshot\nExecStart=/bin/sh -c '{script}'\n");
    ImageBuilder::new(&h.images_dir().join("recycle"))
        .unit("recycle.service", &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", "recycle"]).unwrap();

    h.berth_ok(&["start", "recycle"]).unwrap();
    h.berth_ok(&["start", "recycle"]).unwrap();
    let log = h.berth_ok(&["logs", "recycle"]).unwrap();

    let uids: Vec<&str> = log
        .lines()
        .filter_map(|l| l.rsplit(": ").next())
        .filter(|t| t.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(uids.len(), 2, "{log}");
    assert_eq!(uids[0], uids[1], "the second run got another uid:\n{log}");
    assert!(!log.contains(":found"), "{log}");
    assert_eq!(log.matches(":clean").count(), 6, "{log}");
}
