//! Launching services in real sandboxes (needs root).
//!
//! Each test builds its own busybox image, control and log directories, so tests run in
//! parallel. `launch` refuses multi-threaded callers, so it runs in a forked (hence
//! single-threaded) child of the test process.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_helper::launch_spec::{LaunchSpec, Launched};
use berth_helper::sandbox::launch;
use berth_protocol::log_line::Stream;
use berth_protocol::sandbox::{DirectoryKind, ServiceDirectory, TemporaryFileSystem};
use berth_protocol::supervisor::{KillWhom, SupervisorRequest, SupervisorStatus};
use fixture::*;
use rustix::fs::{Mode, OFlags};
use tempfile::TempDir;

/// Forks a child that becomes `uid`, connects to `socket` and asks for the status.
/// Returns 0 if a status came back, 1 if the connection was closed without one, 2 if the
/// connect itself failed. With `keep_dac_override`, the child keeps CAP_DAC_OVERRIDE so the
/// socket's file mode does not decide.
fn query_as(uid: u32, socket: &Path, keep_dac_override: bool) -> i32 {
    let path = socket.to_path_buf();
    // The child does only setuid, a socket round trip and _exit.
    let pid = fork_guarded();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code =
            std::panic::catch_unwind(|| child_query(uid, &path, keep_dac_override)).unwrap_or(99);
        // SAFETY: leaves the forked child without running the test harness's code.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; status is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "query child crashed");
    libc::WEXITSTATUS(status)
}

fn child_query(uid: u32, path: &Path, keep_dac_override: bool) -> i32 {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // SAFETY: plain prctl/set*id calls in a single-threaded child; capget/capset get
    // version-3 structures of the right layout.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
        if libc::setresgid(uid, uid, uid) != 0 || libc::setresuid(uid, uid, uid) != 0 {
            return 98;
        }
        if keep_dac_override {
            let header = Header {
                version: 0x2008_0522,
                pid: 0,
            };
            let mut data = [Data::default(); 2];
            libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr());
            // CAP_DAC_OVERRIDE is capability 1.
            data[0].effective = 1 << 1;
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
                return 97;
            }
        }
    }
    let Ok(mut stream) = UnixStream::connect(path) else {
        return 2;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = writeln!(stream, "{{\"op\":\"status\"}}");
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(n) if n > 0 && serde_json::from_str::<SupervisorStatus>(&line).is_ok() => 0,
        _ => 1,
    }
}

// ---- the main process runs and is logged ----

/// An extension directory holding `files` (path, contents), world-readable.
fn extension(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
    }
    dir
}

#[test]
fn extension_files_are_seen_over_the_image_and_the_last_extension_wins() {
    require_root();
    let mut fx = Fixture::new("ext.service");
    fs::write(fx.image.path().join("etc/who"), "image\n").unwrap();
    fx.extensions = vec![
        extension(&[("etc/who", "first\n"), ("usr/share/a", "from a\n")]),
        extension(&[("etc/who", "second\n")]),
    ];

    let out = fx.run_script("cat /etc/who /usr/share/a; test -x /bin/sh && echo image-kept");

    assert_eq!(out, ["second", "from a", "image-kept"]);
}

#[test]
fn the_extension_layers_are_read_only() {
    require_root();
    let mut fx = Fixture::new("extro.service");
    fx.extensions = vec![extension(&[("usr/share/a", "a\n")])];

    let out = fx.run_script("echo x > /usr/share/a 2>/dev/null && echo wrote || echo refused");

    assert_eq!(out, ["refused"]);
}

#[test]
fn stdout_of_the_service_is_logged_as_stdout_records() {
    require_root();
    let mut fx = Fixture::new("echo.service");

    fx.launch_script("echo hello");
    fx.wait_exit();

    let records = fx.log_records();
    assert!(
        records
            .iter()
            .any(|r| r.stream == Stream::Stdout && r.text == "hello"),
        "{records:?}"
    );
}

#[test]
fn stderr_of_the_service_is_logged_as_stderr_records() {
    require_root();
    let mut fx = Fixture::new("stderr.service");

    fx.launch_script("echo oops >&2");
    fx.wait_exit();

    let records = fx.log_records();
    assert!(
        records
            .iter()
            .any(|r| r.stream == Stream::Stderr && r.text == "oops"),
        "{records:?}"
    );
}

#[test]
fn unterminated_last_line_is_logged_at_exit() {
    require_root();
    let mut fx = Fixture::new("tail.service");

    let out = fx.run_script("echo first; printf tail");

    assert_eq!(out, vec!["first", "tail"]);
}

#[test]
fn exit_code_of_the_service_is_reported() {
    require_root();
    let mut fx = Fixture::new("exit3.service");

    fx.launch_script("exit 3");
    let status = fx.wait_exit();

    let exit = status.exit.unwrap();
    assert_eq!((exit.code, exit.signal), (Some(3), None));
    assert!(!status.running);
}

// ---- the sandbox, seen from outside ----

#[test]
fn main_runs_in_new_mount_pid_ipc_uts_and_cgroup_namespaces() {
    require_root();
    let mut fx = Fixture::new("ns.service");

    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let main = launched.main_pid.to_string();
    for ns in ["mnt", "pid", "ipc", "uts", "cgroup"] {
        assert_ne!(
            ns_link(&main, ns),
            ns_link("self", ns),
            "{ns} namespace is shared"
        );
    }
}

#[test]
fn the_service_sees_no_host_cgroup_path() {
    require_root();
    let mut fx = Fixture::new("cgroupns.service");

    let out = fx.run_script("cat /proc/self/cgroup");

    assert!(!out.is_empty());
    assert!(
        out.iter().all(|l| l.ends_with(":/")),
        "host cgroup paths inside: {out:?}"
    );
}

#[test]
fn main_runs_as_the_dynamic_uid_without_capabilities() {
    require_root();
    let mut fx = Fixture::new("creds.service");

    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let status = proc_status(launched.main_pid);
    assert_eq!(
        status_field(&status, "Uid"),
        format!("{UID}\t{UID}\t{UID}\t{UID}")
    );
    assert_eq!(
        status_field(&status, "Gid"),
        format!("{GID}\t{GID}\t{GID}\t{GID}")
    );
    assert_eq!(status_field(&status, "Groups"), "");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
}

#[test]
fn main_has_only_stdio_descriptors() {
    require_root();
    let mut fx = Fixture::new("fds.service");

    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let mut fds: Vec<u32> = fs::read_dir(format!("/proc/{}/fd", launched.main_pid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort_unstable();
    assert_eq!(fds, vec![0, 1, 2]);
}

#[test]
fn main_pid_is_the_host_pid_of_the_exec_d_program() {
    require_root();
    let mut fx = Fixture::new("pid.service");

    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let status = proc_status(launched.main_pid);
    assert_eq!(status_field(&status, "Name"), "sleep");
    // Host pid first, then its pid inside the sandbox (init is 1, main is 2).
    let nspid = status_field(&status, "NSpid");
    assert_eq!(nspid, format!("{}\t2", launched.main_pid));
}

#[test]
fn sandbox_init_runs_unprivileged_holding_only_stdio_its_channel_and_the_output_pipes() {
    require_root();
    let mut fx = Fixture::new("init.service");
    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let init: u32 = status_field(&proc_status(launched.main_pid), "PPid")
        .parse()
        .unwrap();

    let status = proc_status(init);
    assert_eq!(status_field(&status, "Name"), "berth-init");
    assert_eq!(status_field(&status, "NSpid"), format!("{init}\t1"));
    assert_eq!(
        status_field(&status, "Uid"),
        format!("{UID}\t{UID}\t{UID}\t{UID}")
    );
    assert_eq!(status_field(&status, "CapBnd"), "0000000000000000");
    let mut targets: Vec<(u32, String)> = fs::read_dir(format!("/proc/{init}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let target = fs::read_link(e.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (e.file_name().to_str().unwrap().parse().unwrap(), target)
        })
        .collect();
    targets.sort();
    // Stdio on /dev/null, its signalfd, the service's stdout and stderr (for the commands it
    // forks) and the channel to the supervisor: nothing of the host.
    let mut kinds: Vec<String> = targets
        .iter()
        .map(|(_, t)| t.split(':').next().unwrap_or("").to_string())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "/dev/null",
            "/dev/null",
            "/dev/null",
            "anon_inode",
            "pipe",
            "pipe",
            "socket"
        ],
        "{targets:?}"
    );
}

// ---- what the sandbox and ps show of the helper ----

/// `/proc/PID/FILE`, NULs and all (lossy UTF-8, for readable failures).
fn proc_file(pid: u32, file: &str) -> String {
    String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/{file}")).unwrap()).into_owned()
}

/// The pid of the sandbox's init (main's parent), seen from the host.
fn init_pid(launched: &Launched) -> u32 {
    status_field(&proc_status(launched.main_pid), "PPid")
        .parse()
        .unwrap()
}

#[test]
fn init_shows_as_berth_init_with_an_empty_environment() {
    require_root();
    let mut fx = Fixture::new("initname.service");
    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let init = init_pid(&launched);

    assert_eq!(proc_file(init, "cmdline"), "berth-init\0");
    assert_eq!(proc_file(init, "environ"), "");
    assert_eq!(proc_file(init, "comm"), "berth-init\n");
}

#[test]
fn the_service_reads_exactly_berth_init_as_the_command_line_of_pid_1() {
    require_root();
    let mut fx = Fixture::new("pid1cmdline.service");

    let out = fx.run_script("cat /proc/1/cmdline; echo");

    assert_eq!(out, vec!["berth-init\0"]);
}

#[test]
fn supervisor_shows_as_berth_supervise_and_its_unit() {
    require_root();
    let mut fx = Fixture::new("supname.service");
    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let pid = launched.supervisor_pid;

    assert_eq!(
        proc_file(pid, "cmdline"),
        "berth-supervise\0supname.service\0"
    );
    assert_eq!(proc_file(pid, "environ"), "");
    assert_eq!(proc_file(pid, "comm"), "berth-supervise\n");
}

#[test]
fn mountinfo_inside_names_no_host_path_of_the_image() {
    require_root();
    let mut fx = Fixture::new("mountinfo.service");
    let image = fx.image.path().to_str().unwrap().to_string();

    let out = fx.run_script("cat /proc/self/mountinfo");

    let leaks: Vec<&String> = out.iter().filter(|l| l.contains(&image)).collect();
    assert!(leaks.is_empty(), "{image} shows in {leaks:#?}");
    // The image's directories show their path within the image as their root.
    for dir in ["/bin", "/etc", "/usr"] {
        assert!(
            out.iter()
                .any(|l| l.split(' ').nth(3) == Some(dir) && l.split(' ').nth(4) == Some(dir)),
            "no mount of {dir} with root {dir}: {out:#?}"
        );
    }
}

// ---- the sandbox, seen from inside ----

#[test]
fn root_file_system_is_read_only() {
    require_root();
    let mut fx = Fixture::new("rofs.service");

    let out = fx.run_script("touch /x 2>/dev/null && echo writable || echo read-only");

    assert_eq!(out, vec!["read-only"]);
}

#[test]
fn image_directories_are_read_only() {
    require_root();
    let mut fx = Fixture::new("roimg.service");

    let out = fx.run_script("touch /etc/x 2>/dev/null && echo writable || echo read-only");

    assert_eq!(out, vec!["read-only"]);
}

#[test]
fn tmp_is_empty_and_writable() {
    require_root();
    let mut fx = Fixture::new("tmp.service");

    let out = fx.run_script(r#"echo "[$(ls -A /tmp)]"; touch /tmp/f && echo writable"#);

    assert_eq!(out, vec!["[]", "writable"]);
}

#[test]
fn root_holds_only_image_entries_and_our_mounts() {
    require_root();
    let mut fx = Fixture::new("ls.service");

    let out = fx.run_script("ls -A /");

    assert_eq!(
        out,
        vec!["bin", "dev", "etc", "proc", "run", "sys", "tmp", "usr"]
    );
}

#[test]
fn host_files_are_not_visible() {
    require_root();
    let marker = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let name = marker.path().to_str().unwrap().to_string();
    let mut fx = Fixture::new("hidden.service");

    let out = fx.run_script(&format!(
        "test -e {name} && echo visible || echo hidden; test -e /root && echo root || echo no-root"
    ));

    assert_eq!(out, vec!["hidden", "no-root"]);
}

#[test]
fn proc_self_status_shows_the_service() {
    require_root();
    let mut fx = Fixture::new("proc.service");

    let out = fx.run_script("cat /proc/self/status");

    assert!(
        out.contains(&format!("Uid:\t{UID}\t{UID}\t{UID}\t{UID}")),
        "{out:?}"
    );
}

#[test]
fn dev_holds_usable_pseudo_devices() {
    require_root();
    let mut fx = Fixture::new("dev.service");

    let out = fx.run_script("echo x > /dev/null && echo null-ok; test -c /dev/zero && echo zero-ok; test -e /dev/vda || echo no-disk");

    assert_eq!(out, vec!["null-ok", "zero-ok", "no-disk"]);
}

#[test]
fn stdin_is_dev_null() {
    require_root();
    let mut fx = Fixture::new("stdin.service");

    let out = fx.run_script("echo \"[$(cat)]\"");

    assert_eq!(out, vec!["[]"]);
}

#[test]
fn working_directory_is_honoured() {
    require_root();
    let mut fx = Fixture::new("cwd.service");
    let mut spec = fx.spec(&["/bin/sh", "-c", "echo $PWD"]);
    spec.working_directory = "/etc".into();

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    assert_eq!(fx.stdout_lines(), vec!["/etc"]);
}

// ---- hostile images ----

#[test]
fn symlinked_tmp_dev_proc_and_run_in_the_image_touch_nothing_on_the_host() {
    require_root();
    let host_dir = tempfile::tempdir().unwrap();
    let image = busybox_image();
    symlink(host_dir.path(), image.path().join("tmp")).unwrap();
    symlink("/", image.path().join("dev")).unwrap();
    symlink("/", image.path().join("proc")).unwrap();
    symlink(host_dir.path(), image.path().join("run")).unwrap();
    symlink("../../../../", image.path().join("sys")).unwrap();
    let mut fx = Fixture::with_image("hostile.service", image);

    let out = fx.run_script("touch /tmp/pwned /dev/shm/pwned && test -d /run/ && echo done");

    assert_eq!(out, vec!["done"], "{:?}", fx.log_records());
    assert_eq!(
        fs::read_dir(host_dir.path()).unwrap().count(),
        0,
        "files created on the host"
    );
    for leaked in ["/pts", "/shm", "/null", "/ptmx", "/stdin", "/pwned"] {
        assert!(
            fs::symlink_metadata(leaked).is_err(),
            "{leaked} created on the host"
        );
    }
}

#[test]
fn absolute_symlinks_in_the_image_resolve_inside_the_sandbox() {
    require_root();
    let image = busybox_image();
    // Points at a host path that exists; inside the sandbox it must not reach the host.
    symlink("/root", image.path().join("home")).unwrap();
    symlink("/bin", image.path().join("sbin")).unwrap();
    let mut fx = Fixture::with_image("links.service", image);

    let out = fx.run_script(
        "test -e /home && echo host-root || echo dangling; test -x /sbin/busybox && echo sbin-ok",
    );

    assert_eq!(out, vec!["dangling", "sbin-ok"]);
}

// ---- launch errors ----

#[test]
fn missing_executable_is_reported_as_not_found_in_image() {
    require_root();
    let mut fx = Fixture::new("nope.service");

    let err = fx.try_launch(&["/usr/bin/nope"]).unwrap_err();

    assert_eq!(err, "executable /usr/bin/nope not found in image");
    wait_until("the socket is removed", || !fx.socket_path().exists());
}

#[test]
fn missing_working_directory_is_reported() {
    require_root();
    let mut fx = Fixture::new("nocwd.service");
    let mut spec = fx.spec(&["/bin/sleep", "1"]);
    spec.working_directory = "/srv/none".into();

    let err = fx.try_launch_spec(&spec).unwrap_err();

    assert!(
        err.starts_with("cannot change to working directory /srv/none: "),
        "{err}"
    );
}

#[test]
fn control_directory_owned_by_root_is_rejected() {
    require_root();
    let mut fx = Fixture::new("rootdir.service");
    std::os::unix::fs::chown(fx.control.path(), Some(0), Some(0)).unwrap();

    let err = fx.try_launch(&["/bin/sleep", "1"]).unwrap_err();

    assert!(
        err.starts_with("control directory rejected: owned by root"),
        "{err}"
    );
}

#[test]
fn launch_refuses_a_multi_threaded_process() {
    require_root();
    let fx = Fixture::new("threads.service");
    let spec = fx.spec(&["/bin/sleep", "1"]);
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let extra = std::thread::spawn(move || stop_rx.recv());

    let result = launch(&spec, fx.fds());

    drop(stop_tx);
    let _ = extra.join();
    assert!(
        matches!(
            result,
            Err(berth_helper::sandbox::LaunchError::MultiThreaded { .. })
        ),
        "{result:?}"
    );
}

// ---- control socket ----

#[test]
fn stop_ends_a_service_with_sigterm() {
    require_root();
    let mut fx = Fixture::new("stop.service");
    fx.launch(&["/bin/sleep", "1000"]);

    let reply = fx.request(&SupervisorRequest::Stop { timeout_ms: 10_000 });
    let status = fx.wait_exit();

    assert!(reply.stop_requested);
    let exit = status.exit.unwrap();
    assert_eq!((exit.code, exit.signal), (None, Some(libc::SIGTERM)));
    assert!(status.stop_requested);
}

#[test]
fn stop_kills_a_service_ignoring_sigterm_and_everything_in_its_pid_namespace() {
    require_root();
    let mut fx = Fixture::new("stubborn.service");
    let launched = fx.launch_script("trap '' TERM; sleep 1000 & echo ready; wait");
    fx.wait_for_stdout("ready");
    let ns = ns_link(&launched.main_pid.to_string(), "pid");
    assert_eq!(processes_in(&ns).len(), 3, "init, sh and sleep should run");

    let started = Instant::now();
    fx.request(&SupervisorRequest::Stop { timeout_ms: 300 });
    let status = fx.wait_exit();

    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "killed before the timeout"
    );
    assert_eq!(status.exit.unwrap().signal, Some(libc::SIGKILL));
    assert_eq!(processes_in(&ns), Vec::<u32>::new());
}

#[test]
fn processes_left_behind_by_main_are_killed_when_it_exits() {
    require_root();
    let mut fx = Fixture::new("orphan.service");
    let launched = fx.launch_script("sleep 1000 & echo ready; wait");
    fx.wait_for_stdout("ready");
    let ns = ns_link(&launched.main_pid.to_string(), "pid");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(launched.main_pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let status = fx.wait_exit();

    assert_eq!(status.exit.unwrap().signal, Some(libc::SIGKILL));
    assert_eq!(processes_in(&ns), Vec::<u32>::new());
}

#[test]
fn signal_is_forwarded_to_main() {
    require_root();
    let mut fx = Fixture::new("usr1.service");
    fx.launch_script("trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done");
    fx.wait_for_stdout("ready");

    let reply = fx.request(&SupervisorRequest::Signal {
        signal: libc::SIGUSR1,
        whom: KillWhom::Main,
    });
    let status = fx.wait_exit();

    assert_eq!(reply.error, None);
    assert_eq!(status.exit.unwrap().code, Some(0));
    assert!(fx.stdout_lines().contains(&"got-usr1".to_string()));
}

#[test]
fn signal_init_cannot_forward_is_refused() {
    require_root();
    let mut fx = Fixture::new("sigstop.service");
    fx.launch(&["/bin/sleep", "1000"]);

    let reply = fx.request(&SupervisorRequest::Signal {
        signal: libc::SIGSTOP,
        whom: KillWhom::Main,
    });

    assert!(
        reply
            .error
            .is_some_and(|e| e.contains("cannot be forwarded"))
    );
    assert!(reply.running);
}

#[test]
fn release_while_running_is_refused() {
    require_root();
    let mut fx = Fixture::new("busy.service");
    fx.launch(&["/bin/sleep", "1000"]);

    let reply = fx.request(&SupervisorRequest::Release);

    assert!(reply.running);
    assert!(reply.error.is_some());
    assert!(fx.socket_path().exists());
}

#[test]
fn release_after_exit_removes_the_socket_and_ends_the_supervisor() {
    require_root();
    let mut fx = Fixture::new("release.service");
    let launched = fx.launch_script("exit 0");
    fx.wait_exit();

    let reply = fx.request(&SupervisorRequest::Release);

    assert_eq!(reply.error, None);
    wait_until("the socket is removed", || !fx.socket_path().exists());
    wait_until("the supervisor exits", || {
        process_gone(launched.supervisor_pid)
    });
}

#[test]
fn status_reports_the_pids_and_the_unit() {
    require_root();
    let mut fx = Fixture::new("status.service");
    let launched = fx.launch(&["/bin/sleep", "1000"]);

    let status = fx.request(&SupervisorRequest::Status);

    assert_eq!(status.unit, "status.service");
    assert_eq!(
        (status.supervisor_pid, status.main_pid),
        (launched.supervisor_pid, Some(launched.main_pid))
    );
    assert!(status.running && !status.stop_requested && status.exit.is_none());
    assert!(status.started_usec > 0);
}

#[test]
fn control_socket_refuses_other_uids() {
    require_root();
    let mut fx = Fixture::new("peer.service");
    fx.launch(&["/bin/sleep", "1000"]);

    let outcome = query_as(65533, &fx.socket_path(), true);

    assert_eq!(
        outcome, 1,
        "expected the connection to be closed without a reply"
    );
}

#[test]
fn control_socket_serves_the_directory_owner() {
    require_root();
    let mut fx = Fixture::new("owner.service");
    fx.launch(&["/bin/sleep", "1000"]);

    let outcome = query_as(MANAGER_UID, &fx.socket_path(), false);

    assert_eq!(outcome, 0, "expected a status reply");
}

#[test]
fn control_socket_is_owned_by_the_manager_with_mode_0600() {
    require_root();
    let mut fx = Fixture::new("mode.service");
    fx.launch(&["/bin/sleep", "1000"]);

    let meta = fs::symlink_metadata(fx.socket_path()).unwrap();

    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (MANAGER_UID, 0o600));
}

/// A fresh log file for `ReplaceLog`, owned by `owner`, opened for appending.
fn new_log(fx: &Fixture, name: &str, owner: u32) -> (PathBuf, OwnedFd) {
    let path = fx.logs.path().join(name);
    fs::write(&path, b"").unwrap();
    std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
    let fd = rustix::fs::open(
        path.as_path(),
        OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    (path, fd)
}

#[test]
fn replace_log_sends_the_output_to_the_new_file_from_then_on() {
    require_root();
    let mut fx = Fixture::new("rotate.service");
    fx.launch_script("while :; do echo tick; sleep 0.05; done");
    fx.wait_for_stdout("tick");
    let (path, fd) = new_log(&fx, "fresh.log", MANAGER_UID);

    let reply = fx
        .connect()
        .request_with_fd(&SupervisorRequest::ReplaceLog, &fd);

    assert_eq!(reply.error, None);
    wait_until("output reaches the new log", || {
        fs::read_to_string(&path).is_ok_and(|t| t.contains("stdout tick"))
    });
    // And no longer the old one: it stays as it was while the new one grows.
    let old_len = fs::metadata(fx.log_path()).unwrap().len();
    let new_len = fs::metadata(&path).unwrap().len();
    wait_until("the new log grows", || {
        fs::metadata(&path).is_ok_and(|m| m.len() > new_len)
    });
    assert_eq!(fs::metadata(fx.log_path()).unwrap().len(), old_len);
}

#[test]
fn replace_log_refuses_a_file_the_manager_does_not_own() {
    require_root();
    let mut fx = Fixture::new("rotate-root.service");
    fx.launch(&["/bin/sleep", "1000"]);
    let (_, fd) = new_log(&fx, "roots.log", 0);

    let reply = fx
        .connect()
        .request_with_fd(&SupervisorRequest::ReplaceLog, &fd);

    assert!(
        reply
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not owned by the manager")),
        "{reply:?}"
    );
}

#[test]
fn replace_log_without_a_descriptor_is_refused() {
    require_root();
    let mut fx = Fixture::new("rotate-none.service");
    fx.launch(&["/bin/sleep", "1000"]);

    let reply = fx.request(&SupervisorRequest::ReplaceLog);

    assert!(
        reply
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no log descriptor")),
        "{reply:?}"
    );
}

/// The spec of `argv` with the syscall filter `change` makes.
fn filtered(
    fx: &Fixture,
    argv: &[&str],
    change: impl FnOnce(&mut berth_protocol::sandbox::SyscallFilter),
) -> LaunchSpec {
    let mut spec = fx.spec(argv);
    change(&mut spec.sandbox.syscalls);
    spec
}

#[test]
fn a_service_with_a_syscall_filter_runs_under_seccomp() {
    require_root();
    let mut fx = Fixture::new("seccomp-on.service");
    let spec = filtered(&fx, &["/bin/sleep", "1000"], |f| {
        f.architectures = vec!["native".into()];
        f.deny = vec!["keyctl".into()];
        f.error_number = Some(libc::EPERM);
    });

    let launched = fx.try_launch_spec(&spec).unwrap();

    let status = proc_status(launched.main_pid);
    assert_eq!(status_field(&status, "Seccomp"), "2");
    // The architecture check and the syscall list.
    assert_eq!(status_field(&status, "Seccomp_filters"), "2");
    // Installed in main only, right before its exec: init is not filtered.
    let init = proc_status(init_pid(&launched));
    assert_eq!(status_field(&init, "Seccomp"), "0");
}

#[test]
fn a_service_without_a_syscall_filter_runs_without_seccomp() {
    require_root();
    let mut fx = Fixture::new("seccomp-off.service");

    let launched = fx.launch(&["/bin/sleep", "1000"]);

    assert_eq!(
        status_field(&proc_status(launched.main_pid), "Seccomp"),
        "0"
    );
}

const KILL_SELF: &str = "kill -0 $$ && echo sent || echo refused";

#[test]
fn a_denied_syscall_fails_with_the_error_number_inside_the_sandbox() {
    require_root();
    let mut fx = Fixture::new("seccomp-deny.service");
    let spec = filtered(&fx, &["/bin/sh", "-c", KILL_SELF], |f| {
        f.deny = vec!["kill".into()];
        f.error_number = Some(libc::EPERM);
    });

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    assert_eq!(fx.stdout_lines(), ["refused"]);
}

#[test]
fn the_same_script_signals_itself_without_the_filter() {
    require_root();
    let mut fx = Fixture::new("seccomp-deny-control.service");

    let out = fx.run_script(KILL_SELF);

    assert_eq!(out, ["sent"]);
}

#[test]
fn a_denied_syscall_without_an_error_number_kills_the_service() {
    require_root();
    let mut fx = Fixture::new("seccomp-kill.service");
    let spec = filtered(&fx, &["/bin/sh", "-c", KILL_SELF], |f| {
        f.deny = vec!["kill".into()];
    });

    fx.try_launch_spec(&spec).unwrap();
    let status = fx.wait_exit();

    assert_eq!(status.exit.and_then(|e| e.signal), Some(libc::SIGSYS));
}

fn service_dir(kind: DirectoryKind, name: &str, mode: u32) -> ServiceDirectory {
    ServiceDirectory {
        kind,
        name: name.into(),
        mode,
    }
}

#[test]
fn a_state_directory_is_bound_at_var_lib_for_the_service_to_write() {
    require_root();
    let mut fx = Fixture::new("state.service");
    fx.directories = vec![service_dir(DirectoryKind::State, "app", 0o700)];

    let out = fx.run_script(
        "echo kept > /var/lib/app/data && cat /var/lib/app/data && stat -c '%u %a' /var/lib/app",
    );

    assert_eq!(out, ["kept", &format!("{UID} 700")]);
    let host = fx.service_dirs.path().join("app/data");
    assert_eq!(fs::read_to_string(&host).unwrap(), "kept\n");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(&host).unwrap()),
        UID
    );
}

#[test]
fn the_image_keeps_its_own_var_beside_the_service_directories() {
    require_root();
    let mut fx = Fixture::new("keepvar.service");
    fs::create_dir_all(fx.image.path().join("var/lib/other")).unwrap();
    fs::write(fx.image.path().join("var/lib/other/file"), "image's\n").unwrap();
    fx.directories = vec![
        service_dir(DirectoryKind::State, "app", 0o755),
        service_dir(DirectoryKind::Cache, "app", 0o755),
    ];

    let out = fx.run_script(
        "cat /var/lib/other/file; touch /var/cache/app/c && echo cache-writable; \
         touch /var/lib/other/x 2>/dev/null || echo image-read-only",
    );

    assert_eq!(out, ["image's", "cache-writable", "image-read-only"]);
}

#[test]
fn a_state_directory_is_bound_over_a_temporary_file_system_of_its_parent() {
    require_root();
    let mut fx = Fixture::new("statetmpfs.service");
    fs::create_dir_all(fx.image.path().join("var/lib/image-only")).unwrap();
    fx.directories = vec![service_dir(DirectoryKind::State, "app", 0o700)];
    let mut spec = fx.spec(&[
        "/bin/sh",
        "-c",
        "echo kept > /var/lib/app/data && ls /var/lib",
    ]);
    spec.sandbox.mounts.temporary_filesystems = vec![TemporaryFileSystem {
        path: "/var/lib".into(),
        read_only: false,
        mode: 0o755,
        size: 1 << 20,
    }];

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    assert_eq!(
        fx.stdout_lines(),
        ["app"],
        "the image's /var/lib shows, or the bind is missing"
    );
    let host = fx.service_dirs.path().join("app/data");
    assert_eq!(fs::read_to_string(host).unwrap(), "kept\n");
}

#[test]
fn a_runtime_directory_is_made_in_the_sandboxs_run_for_the_service() {
    require_root();
    let mut fx = Fixture::new("runtime.service");
    fx.directories = vec![service_dir(DirectoryKind::Runtime, "app/sock", 0o750)];

    let out = fx.run_script("touch /run/app/sock/s && stat -c '%u %a' /run/app/sock /run/app");

    assert_eq!(out, [format!("{UID} 750"), "0 755".to_owned()]);
}

#[test]
fn a_configuration_directory_is_bound_read_only_at_etc() {
    require_root();
    let mut fx = Fixture::new("config.service");
    fs::create_dir(fx.service_dirs.path().join("app")).unwrap();
    fs::write(fx.service_dirs.path().join("app/app.conf"), "setting=1\n").unwrap();
    fx.directories = vec![service_dir(DirectoryKind::Configuration, "app", 0o755)];

    let out = fx.run_script(
        "cat /etc/app/app.conf; touch /etc/app/x 2>/dev/null || echo read-only; cat /etc/os-release | head -1",
    );

    assert_eq!(out, ["setting=1", "read-only", "ID=berth-test"]);
}

// ---- the service's cgroup and its IP firewall ----

/// The `0::` (cgroup2) line of a process's /proc/PID/cgroup, seen from the host.
fn cgroup2_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap()
}

#[test]
fn a_service_runs_in_its_own_cgroup_which_goes_when_it_ends() {
    require_root();
    let mut fx = Fixture::new("own-cgroup.service");
    let launched = fx.launch(&["/bin/sleep", "1000"]);
    let cgroup = cgroup2_of(launched.main_pid);
    let hierarchy = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|h| Path::new(&format!("{h}{cgroup}")).is_dir())
        .unwrap();

    let supervisors = cgroup2_of(launched.supervisor_pid);
    fx.request(&SupervisorRequest::Stop { timeout_ms: 1000 });
    fx.wait_exit();
    fx.request(&SupervisorRequest::Release);
    // What berth-helper does at the uid release: the supervisor is no longer root.
    fx.sweep_cgroups();

    let name = format!("/berth/own-cgroup.service-{}", launched.supervisor_pid);
    assert!(cgroup.ends_with(&name), "{cgroup}");
    // The supervisor stays outside the service's cgroup.
    assert_ne!(supervisors, cgroup);
    assert!(!Path::new(&format!("{hierarchy}{cgroup}")).exists());
}

/// A listener on 127.0.0.1 that accepts (and closes) connections until dropped.
struct Listener {
    port: u16,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Listener {
    fn start() -> Listener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Listener { port, done }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a service with the firewall `allow`/`deny` says when it connects to `listener`.
fn connect_through_firewall(unit: &str, allow: &[&str], deny: &[&str]) -> Vec<String> {
    require_root();
    let listener = Listener::start();
    let mut fx = Fixture::new(unit);
    let script = format!(
        "nc -w 1 127.0.0.1 {} </dev/null && echo connected || echo refused",
        listener.port
    );
    let mut spec = fx.spec(&["/bin/sh", "-c", &script]);
    spec.sandbox.firewall.allow = allow.iter().map(|s| s.to_string()).collect();
    spec.sandbox.firewall.deny = deny.iter().map(|s| s.to_string()).collect();

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();
    fx.stdout_lines()
}

#[test]
fn a_service_cannot_connect_to_an_address_its_firewall_denies() {
    let out = connect_through_firewall("fw-denied.service", &[], &["127.0.0.0/8"]);

    assert_eq!(out, ["refused"]);
}

#[test]
fn a_service_connects_to_an_address_its_firewall_allows() {
    let out = connect_through_firewall("fw-allowed.service", &["127.0.0.1/32"], &["0.0.0.0/0"]);

    assert_eq!(out, ["connected"]);
}

// ---- the mount plan (MountPlan), seen from inside ----

/// Busybox applets the mount-plan scripts use besides [`APPLETS`].
const MORE_APPLETS: [&str; 3] = ["stat", "grep", "mkdir"];

/// A fixture whose image also has `dirs` (mode 0755, or 01777 when they end in `!`), `files`
/// (path, contents; mode 0644) and the extra applets.
fn mount_fixture(unit: &str, dirs: &[&str], files: &[(&str, &str)]) -> Fixture {
    let fx = Fixture::new(unit);
    let root = fx.image.path();
    for applet in MORE_APPLETS {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for dir in dirs {
        let (dir, mode) = match dir.strip_suffix('!') {
            Some(open) => (open, 0o1777),
            None => (*dir, 0o755),
        };
        fs::create_dir_all(root.join(dir)).unwrap();
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(mode)).unwrap();
    }
    for (path, contents) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
    }
    fx
}

/// Runs `script` with the mount plan `change` makes of the baseline's; its stdout lines.
fn run_with_mounts(
    fx: &mut Fixture,
    script: &str,
    change: impl FnOnce(&mut berth_protocol::sandbox::MountPlan),
) -> Vec<String> {
    let spec = with_mounts(fx, script, change);
    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();
    fx.stdout_lines()
}

fn with_mounts(
    fx: &Fixture,
    script: &str,
    change: impl FnOnce(&mut berth_protocol::sandbox::MountPlan),
) -> LaunchSpec {
    let mut spec = fx.spec(&["/bin/sh", "-c", script]);
    change(&mut spec.sandbox.mounts);
    spec
}

fn sandbox_path(path: &str) -> berth_protocol::sandbox::SandboxPath {
    berth_protocol::sandbox::SandboxPath {
        path: path.into(),
        ignore_missing: false,
    }
}

fn bind_path(source: &Path, target: &str, read_only: bool) -> berth_protocol::sandbox::BindPath {
    berth_protocol::sandbox::BindPath {
        source: source.to_str().unwrap().into(),
        target: target.into(),
        read_only,
        recursive: true,
        ignore_missing: false,
    }
}

fn temporary_fs(
    path: &str,
    mode: u32,
    read_only: bool,
) -> berth_protocol::sandbox::TemporaryFileSystem {
    berth_protocol::sandbox::TemporaryFileSystem {
        path: path.into(),
        read_only,
        mode,
        size: 1 << 20,
    }
}

const HOME_SCRIPT: &str = "cat /home/alice/notes 2>/dev/null || echo home-hidden; ls /root >/dev/null 2>&1 && echo root-listed || echo root-hidden";

fn home_fixture(unit: &str) -> Fixture {
    mount_fixture(unit, &["root"], &[("home/alice/notes", "alice's notes\n")])
}

#[test]
fn protect_home_yes_hides_home_and_root() {
    require_root();
    let mut fx = home_fixture("home-yes.service");

    let out = run_with_mounts(&mut fx, HOME_SCRIPT, |m| {
        m.protect_home = berth_protocol::sandbox::ProtectHome::Yes;
    });

    assert_eq!(out, ["home-hidden", "root-hidden"]);
}

#[test]
fn without_protect_home_the_image_s_home_and_root_are_seen() {
    require_root();
    let mut fx = home_fixture("home-no.service");

    let out = run_with_mounts(&mut fx, HOME_SCRIPT, |_| {});

    assert_eq!(out, ["alice's notes", "root-listed"]);
}

#[test]
fn protect_home_tmpfs_shows_empty_read_only_home_directories() {
    require_root();
    let mut fx = home_fixture("home-tmpfs.service");

    let out = run_with_mounts(
        &mut fx,
        "ls -A /home; touch /home/x 2>&1 | grep -o 'Read-only file system'",
        |m| m.protect_home = berth_protocol::sandbox::ProtectHome::Tmpfs,
    );

    assert_eq!(out, ["Read-only file system"]);
}

const VAR_TMP_SCRIPT: &str = "test -e /var/tmp/left-behind && echo image-content; touch /var/tmp/x 2>/dev/null && echo wrote || echo refused";

#[test]
fn private_tmp_gives_a_fresh_writable_var_tmp() {
    require_root();
    let mut fx = mount_fixture(
        "vartmp.service",
        &["var/tmp!"],
        &[("var/tmp/left-behind", "")],
    );

    let out = run_with_mounts(&mut fx, VAR_TMP_SCRIPT, |m| m.private_tmp = true);

    assert_eq!(out, ["wrote"]);
}

#[test]
fn without_private_tmp_var_tmp_is_the_read_only_image_s() {
    require_root();
    let mut fx = mount_fixture(
        "novartmp.service",
        &["var/tmp!"],
        &[("var/tmp/left-behind", "")],
    );

    let out = run_with_mounts(&mut fx, VAR_TMP_SCRIPT, |m| m.private_tmp = false);

    assert_eq!(out, ["image-content", "refused"]);
}

const TMP_WRITE: &str = "touch /tmp/x 2>/dev/null && echo tmp-writable || echo tmp-read-only";

#[test]
fn read_only_paths_make_a_writable_place_read_only() {
    require_root();
    let mut fx = mount_fixture("ro-tmp.service", &[], &[]);

    let out = run_with_mounts(&mut fx, TMP_WRITE, |m| {
        m.read_only_paths = vec![sandbox_path("/tmp")];
    });

    assert_eq!(out, ["tmp-read-only"]);
}

#[test]
fn tmp_is_writable_without_read_only_paths() {
    require_root();
    let mut fx = mount_fixture("rw-tmp.service", &[], &[]);

    let out = run_with_mounts(&mut fx, TMP_WRITE, |_| {});

    assert_eq!(out, ["tmp-writable"]);
}

const SHM_WRITE: &str = "touch /dev/shm/x 2>/dev/null && echo shm-writable || echo shm-read-only";

#[test]
fn read_write_paths_keep_a_writable_place_below_a_read_only_path_writable() {
    require_root();
    let mut fx = mount_fixture("rw-shm.service", &[], &[]);

    let out = run_with_mounts(&mut fx, SHM_WRITE, |m| {
        m.read_only_paths = vec![sandbox_path("/dev")];
        m.read_write_paths = vec![sandbox_path("/dev/shm")];
    });

    assert_eq!(out, ["shm-writable"]);
}

#[test]
fn below_a_read_only_path_without_read_write_paths_nothing_is_writable() {
    require_root();
    let mut fx = mount_fixture("ro-shm.service", &[], &[]);

    let out = run_with_mounts(&mut fx, SHM_WRITE, |m| {
        m.read_only_paths = vec![sandbox_path("/dev")];
    });

    assert_eq!(out, ["shm-read-only"]);
}

#[test]
fn read_only_root_leaves_only_read_write_paths_writable() {
    require_root();
    let mut fx = mount_fixture("ro-root.service", &[], &[]);

    let out = run_with_mounts(&mut fx, &format!("{TMP_WRITE}; {SHM_WRITE}"), |m| {
        m.read_only_paths = vec![sandbox_path("/")];
        m.read_write_paths = vec![sandbox_path("/dev/shm")];
    });

    assert_eq!(out, ["tmp-read-only", "shm-writable"]);
}

#[test]
fn read_write_paths_never_make_the_image_writable() {
    require_root();
    // World-writable in the image: only the mount decides.
    let mut fx = mount_fixture("rw-image.service", &["srv/open!"], &[]);

    let out = run_with_mounts(
        &mut fx,
        "touch /srv/open/x 2>&1 | grep -o 'Read-only file system'",
        |m| {
            m.read_only_paths = vec![sandbox_path("/srv")];
            m.read_write_paths = vec![sandbox_path("/srv/open")];
        },
    );

    assert_eq!(out, ["Read-only file system"]);
}

const SECRET_SCRIPT: &str = "cat /etc/secret 2>/dev/null || echo file-hidden; cat /srv/private/key 2>/dev/null || echo dir-hidden";

fn secret_fixture(unit: &str) -> Fixture {
    mount_fixture(
        unit,
        &[],
        &[("etc/secret", "s3cret\n"), ("srv/private/key", "k3y\n")],
    )
}

#[test]
fn inaccessible_paths_hide_a_file_and_a_directory() {
    require_root();
    let mut fx = secret_fixture("hidden.service");

    let out = run_with_mounts(&mut fx, SECRET_SCRIPT, |m| {
        m.inaccessible_paths = vec![sandbox_path("/etc/secret"), sandbox_path("/srv/private")];
    });

    assert_eq!(out, ["file-hidden", "dir-hidden"]);
}

#[test]
fn without_inaccessible_paths_the_same_files_are_read() {
    require_root();
    let mut fx = secret_fixture("shown.service");

    let out = run_with_mounts(&mut fx, SECRET_SCRIPT, |_| {});

    assert_eq!(out, ["s3cret", "k3y"]);
}

#[test]
fn an_inaccessible_path_through_an_image_symlink_hides_its_target_inside_the_sandbox() {
    require_root();
    let mut fx = secret_fixture("hidden-link.service");
    symlink("/srv/private", fx.image.path().join("etc/private-link")).unwrap();

    let out = run_with_mounts(&mut fx, SECRET_SCRIPT, |m| {
        m.inaccessible_paths = vec![sandbox_path("/etc/private-link")];
    });

    assert_eq!(out, ["s3cret", "dir-hidden"]);
}

#[test]
fn a_missing_path_fails_the_start_naming_it_unless_it_may_be_missing() {
    require_root();
    let mut fx = mount_fixture("missing.service", &[], &[]);
    let strict = with_mounts(&fx, "echo started", |m| {
        m.inaccessible_paths = vec![sandbox_path("/nope")];
    });
    let lenient = with_mounts(&fx, "echo started", |m| {
        m.inaccessible_paths = vec![berth_protocol::sandbox::SandboxPath {
            path: "/nope".into(),
            ignore_missing: true,
        }];
    });

    let refused = fx.try_launch_spec(&strict).unwrap_err();
    fx.try_launch_spec(&lenient).unwrap();
    fx.wait_exit();

    assert!(refused.contains("InaccessiblePaths=/nope"), "{refused}");
    assert_eq!(fx.stdout_lines(), ["started"]);
}

#[test]
fn a_temporary_file_system_hides_the_image_s_directory_with_an_empty_writable_one() {
    require_root();
    let mut fx = mount_fixture("tmpfs.service", &[], &[("srv/data/old", "old\n")]);

    let out = run_with_mounts(
        &mut fx,
        "ls -A /srv; touch /srv/new && echo wrote; stat -c %a /srv",
        |m| m.temporary_filesystems = vec![temporary_fs("/srv", 0o1777, false)],
    );

    assert_eq!(out, ["wrote", "1777"]);
}

#[test]
fn a_read_only_temporary_file_system_refuses_writes() {
    require_root();
    let mut fx = mount_fixture("tmpfs-ro.service", &[], &[]);

    let out = run_with_mounts(
        &mut fx,
        "touch /scratch/x 2>&1 | grep -o 'Read-only file system'",
        |m| m.temporary_filesystems = vec![temporary_fs("/scratch", 0o1777, true)],
    );

    assert_eq!(out, ["Read-only file system"]);
}

#[test]
fn a_mount_point_the_read_only_image_lacks_fails_the_start_naming_it() {
    require_root();
    let mut fx = mount_fixture("tmpfs-rofs.service", &[], &[]);
    let spec = with_mounts(&fx, "true", |m| {
        m.temporary_filesystems = vec![temporary_fs("/usr/new", 0o755, false)];
    });

    let refused = fx.try_launch_spec(&spec).unwrap_err();

    assert!(
        refused.contains("TemporaryFileSystem=/usr/new (create the mount point /usr/new)")
            && refused.contains("Read-only file system"),
        "{refused}"
    );
}

#[test]
fn a_mount_point_under_an_image_symlink_to_a_host_path_is_never_made_on_the_host() {
    require_root();
    let host = tempfile::tempdir().unwrap();
    let mut fx = mount_fixture("tmpfs-escape.service", &[], &[]);
    // Absolute, and climbing out with ..: it resolves inside the new root, where nothing is.
    let outside = format!("/../../..{}", host.path().display());
    symlink(&outside, fx.image.path().join("escape")).unwrap();
    let spec = with_mounts(&fx, "true", |m| {
        m.temporary_filesystems = vec![temporary_fs("/escape/made-here", 0o755, false)];
    });

    let refused = fx.try_launch_spec(&spec).unwrap_err();

    assert!(refused.contains("a dangling symlink"), "{refused}");
    assert_eq!(fs::read_dir(host.path()).unwrap().count(), 0);
}

#[test]
fn a_mount_point_under_an_image_symlink_is_made_where_it_points_in_the_sandbox() {
    require_root();
    let mut fx = mount_fixture("tmpfs-link.service", &[], &[]);
    symlink("/tmp", fx.image.path().join("scratch")).unwrap();
    let name = format!("berth-made-here-{}", std::process::id());

    let out = run_with_mounts(&mut fx, &format!("test -d /tmp/{name} && echo made"), |m| {
        m.temporary_filesystems = vec![temporary_fs(&format!("/scratch/{name}"), 0o755, false)];
    });

    assert_eq!(out, ["made"]);
    assert!(!Path::new("/tmp").join(&name).exists());
}

/// A host directory, world-writable, holding `hello`.
fn host_source() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(dir.path().join("hello"), "from the host\n").unwrap();
    dir
}

const BIND_SCRIPT: &str = "cat /data/hello; touch /data/made 2>&1 | grep -o 'Read-only file system'; test -e /data/made && echo made";

#[test]
fn bind_read_only_paths_show_a_host_directory_read_only() {
    require_root();
    let host = host_source();
    let mut fx = mount_fixture("bind-ro.service", &[], &[]);

    let out = run_with_mounts(&mut fx, BIND_SCRIPT, |m| {
        m.bind_paths = vec![bind_path(host.path(), "/data", true)];
    });

    assert_eq!(out, ["from the host", "Read-only file system"]);
    assert!(!host.path().join("made").exists());
}

#[test]
fn bind_paths_show_a_host_directory_writable() {
    require_root();
    let host = host_source();
    let mut fx = mount_fixture("bind-rw.service", &[], &[]);

    let out = run_with_mounts(&mut fx, BIND_SCRIPT, |m| {
        m.bind_paths = vec![bind_path(host.path(), "/data", false)];
    });

    assert_eq!(out, ["from the host", "made"]);
    assert!(host.path().join("made").exists());
}

#[test]
fn a_bind_source_reached_through_a_symlink_is_refused() {
    require_root();
    let host = host_source();
    let links = tempfile::tempdir().unwrap();
    symlink(host.path(), links.path().join("link")).unwrap();
    let mut fx = mount_fixture("bind-link.service", &[], &[]);
    let spec = with_mounts(&fx, "true", |m| {
        m.bind_paths = vec![bind_path(&links.path().join("link"), "/data", true)];
    });

    let refused = fx.try_launch_spec(&spec).unwrap_err();

    assert!(
        refused.contains("without following symlinks") && refused.contains("symbolic links"),
        "{refused}"
    );
}

fn device(path: &str, read: bool, write: bool) -> berth_protocol::sandbox::DeviceAccess {
    berth_protocol::sandbox::DeviceAccess {
        path: path.into(),
        read,
        write,
        mknod: false,
    }
}

const DEVICE_SCRIPT: &str =
    "stat -c '%F %a %t:%T %u' /dev/fuse /dev/net/tun 2>/dev/null || echo absent";

#[test]
fn device_allow_gives_the_host_s_node_with_at_most_the_access_asked() {
    require_root();
    let mut fx = mount_fixture("devices.service", &[], &[]);

    let out = run_with_mounts(&mut fx, DEVICE_SCRIPT, |m| {
        m.device_allow = vec![
            device("/dev/fuse", true, true),
            device("/dev/net/tun", true, false),
        ];
    });

    // The host's modes are 0600: read-only access leaves 0400.
    assert_eq!(
        out,
        [
            "character special file 600 a:e5 0",
            "character special file 400 a:c8 0"
        ]
    );
}

#[test]
fn without_device_allow_no_other_host_device_is_in_dev() {
    require_root();
    let mut fx = mount_fixture("no-devices.service", &[], &[]);

    let out = run_with_mounts(&mut fx, DEVICE_SCRIPT, |_| {});

    assert_eq!(out, ["absent"]);
}

const KERNEL_FILES: &str = "stat -c '%n %a' /proc/kmsg /proc/kallsyms; ls /usr/lib/modules 2>/dev/null || echo modules-hidden";

fn kernel_fixture(unit: &str) -> Fixture {
    mount_fixture(unit, &["usr/lib/modules/6.0"], &[])
}

#[test]
fn protect_kernel_logs_modules_and_tunables_hide_their_files() {
    require_root();
    let mut fx = kernel_fixture("kernel-on.service");

    let out = run_with_mounts(&mut fx, KERNEL_FILES, |m| {
        m.protect_kernel_logs = true;
        m.protect_kernel_modules = true;
        m.protect_kernel_tunables = true;
    });

    assert_eq!(out, ["/proc/kmsg 0", "/proc/kallsyms 0", "modules-hidden"]);
}

#[test]
fn without_protect_kernel_logs_modules_and_tunables_their_files_are_there() {
    require_root();
    let mut fx = kernel_fixture("kernel-off.service");

    let out = run_with_mounts(&mut fx, KERNEL_FILES, |m| {
        m.protect_kernel_logs = false;
        m.protect_kernel_modules = false;
        m.protect_kernel_tunables = false;
    });

    assert_eq!(out, ["/proc/kmsg 400", "/proc/kallsyms 444", "6.0"]);
}

const PROC_SCRIPT: &str = "grep -o 'hidepid=[a-z]*\\|subset=pid' /proc/self/mountinfo; test -e /proc/meminfo && echo meminfo; test -e /proc/self/status && echo self";

#[test]
fn protect_proc_and_proc_subset_shape_the_sandbox_s_proc() {
    require_root();
    let mut fx = mount_fixture("proc-subset.service", &[], &[]);

    let out = run_with_mounts(&mut fx, PROC_SCRIPT, |m| {
        m.protect_proc = berth_protocol::sandbox::ProtectProc::Invisible;
        m.proc_subset = berth_protocol::sandbox::ProcSubset::Pid;
    });

    assert_eq!(out, ["hidepid=invisible", "subset=pid", "self"]);
}

#[test]
fn the_default_proc_shows_everything() {
    require_root();
    let mut fx = mount_fixture("proc-all.service", &[], &[]);

    let out = run_with_mounts(&mut fx, PROC_SCRIPT, |_| {});

    assert_eq!(out, ["meminfo", "self"]);
}

#[test]
fn image_symlinks_at_var_tmp_and_at_a_bind_target_touch_nothing_on_the_host() {
    require_root();
    let host = tempfile::tempdir().unwrap();
    let source = host_source();
    let mut fx = mount_fixture("link-targets.service", &["var"], &[]);
    let outside = |name: &str| format!("/../../..{}/{name}", host.path().display());
    symlink(outside("var-tmp"), fx.image.path().join("var/tmp")).unwrap();
    symlink(
        outside("resolv.conf"),
        fx.image.path().join("etc/resolv.conf"),
    )
    .unwrap();
    let with_bind = with_mounts(&fx, "true", |m| {
        m.bind_paths = vec![bind_path(
            &source.path().join("hello"),
            "/etc/resolv.conf",
            true,
        )];
    });

    // PrivateTmp= skips a /var/tmp that resolves to nothing in the sandbox.
    let out = run_with_mounts(&mut fx, "echo started", |m| m.private_tmp = true);
    // Released before the next launch of the same unit, whose supervisor takes over the
    // control socket's name: else this one would outlive the test, unreachable.
    fx.cleanup();
    let refused = fx.try_launch_spec(&with_bind).unwrap_err();

    assert_eq!(out, ["started"]);
    assert!(
        refused.contains("BindReadOnlyPaths=") && refused.contains("a dangling symlink"),
        "{refused}"
    );
    assert_eq!(fs::read_dir(host.path()).unwrap().count(), 0);
}

#[test]
fn a_mount_target_swapped_for_a_symlink_to_the_host_while_sandboxes_start_never_reaches_it() {
    require_root();
    let host = tempfile::tempdir().unwrap();
    let mut fx = mount_fixture("race.service", &["srv/a", "srv/b"], &[]);
    let srv = fx.image.path().join("srv");
    fs::remove_dir(srv.join("b")).unwrap();
    symlink(format!("/../../..{}", host.path().display()), srv.join("b")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let (a, b) = (
            std::ffi::CString::new(srv.join("a").to_str().unwrap()).unwrap(),
            std::ffi::CString::new(srv.join("b").to_str().unwrap()).unwrap(),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: both paths are NUL-terminated and outlive the call.
                unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
            }
        })
    };

    for round in 0..20 {
        let spec = with_mounts(&fx, "true", |m| {
            m.temporary_filesystems = vec![temporary_fs("/srv/a/made", 0o755, false)];
            m.read_only_paths = vec![berth_protocol::sandbox::SandboxPath {
                path: "/srv/b".into(),
                ignore_missing: true,
            }];
        });
        // Either way round, or refused: never on the host.
        let _ = fx.try_launch_spec(&spec);
        if fx.launched.is_some() {
            fx.wait_exit();
            let _ = fx.cleanup();
            fx.launched = None;
        }
        assert_eq!(
            fs::read_dir(host.path()).unwrap().count(),
            0,
            "round {round}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
}
