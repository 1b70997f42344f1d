//! One run of a whole `ServiceProgram` in a real sandbox: every `Type=`, the `Exec*=` lists in
//! their order, the `-` prefix, `$MAINPID`, the timeouts, the kill modes, PIDFile=, reload and
//! the watchdog, each seen through the supervisor's snapshots and the service's own output.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use std::time::{Duration, Instant};

use berth_protocol::service_program::{KillMode, ServiceProgram, ServiceType};
use berth_protocol::supervisor::{Phase, RunResult, SupervisorRequest};
use fixture::*;

fn program(service_type: ServiceType, start: &str) -> ServiceProgram {
    ServiceProgram {
        service_type,
        exec_start: vec![sh(start, false)],
        ..ServiceProgram::simple(Vec::new())
    }
}

fn running(fx: &Fixture) -> berth_protocol::supervisor::SupervisorStatus {
    fx.wait_status(|s| s.phase == Phase::Running)
}

/// The pid of a host process in its sandbox (the last `NSpid:` field).
fn sandbox_pid(host: u32) -> String {
    status_field(&proc_status(host), "NSpid")
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

#[test]
fn the_exec_lists_run_in_order_and_exec_stop_sees_mainpid() {
    require_root();
    let mut fx = Fixture::new("order.service");
    // Main says nothing: Type=simple is started at its exec, so its output would race with
    // ExecStartPost='s.
    let mut p = program(ServiceType::Simple, "exec sleep 1000");
    p.exec_start_pre = vec![sh("echo pre1", false), sh("echo pre2", false)];
    p.exec_start_post = vec![sh("echo post", false)];
    p.exec_stop = vec![sh("echo stop $MAINPID ${MAINPID}", false)];
    p.exec_stop_post = vec![sh("echo stop-post", false)];
    fx.launch_program(p);
    let main = running(&fx).main_pid.expect("a main pid while running");
    let main_in_sandbox = sandbox_pid(main);

    fx.request(&SupervisorRequest::Stop { timeout_ms: 0 });
    let end = fx.wait_exit();

    assert_eq!(
        fx.stdout_lines(),
        [
            "pre1".to_string(),
            "pre2".into(),
            "post".into(),
            format!("stop {main_in_sandbox} {main_in_sandbox}"),
            "stop-post".into(),
        ]
    );
    assert_eq!(
        (end.phase, end.result),
        (Phase::Dead, Some(RunResult::Success))
    );
}

#[test]
fn a_failing_start_pre_fails_the_run_and_exec_stop_post_still_runs() {
    require_root();
    let mut fx = Fixture::new("prefail.service");
    let mut p = program(ServiceType::Simple, "echo never");
    p.exec_start_pre = vec![sh("exit 3", false)];
    p.exec_stop_post = vec![sh("echo cleanup", false)];
    fx.launch_program(p);

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::ExitCode));
    assert!(
        end.failure
            .as_deref()
            .is_some_and(|f| f.contains("ExecStartPre=") && f.contains("code 3")),
        "{end:?}"
    );
    assert_eq!(end.exit.unwrap().code, Some(3));
    assert_eq!(fx.stdout_lines(), ["cleanup"]);
}

#[test]
fn the_dash_prefix_ignores_a_failing_command() {
    require_root();
    let mut fx = Fixture::new("dash.service");
    let mut p = program(ServiceType::Simple, "echo started; exec sleep 1000");
    p.exec_start_pre = vec![sh("exit 1", true)];
    fx.launch_program(p);

    let status = running(&fx);

    assert_eq!(status.result, None);
    fx.wait_for_stdout("started");
}

#[test]
fn a_main_process_failing_ends_the_run_with_exit_code_after_exec_stop_post() {
    require_root();
    let mut fx = Fixture::new("mainfail.service");
    let mut p = program(ServiceType::Exec, "exit 4");
    p.exec_stop_post = vec![sh("echo after", false)];
    fx.launch_program(p);

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::ExitCode));
    assert_eq!(end.exit.unwrap().code, Some(4));
    assert!(!end.stop_requested);
    assert_eq!(fx.stdout_lines(), ["after"]);
}

#[test]
fn oneshot_runs_each_exec_start_in_turn_and_ends_with_success() {
    require_root();
    let mut fx = Fixture::new("oneshot.service");
    let mut p = program(ServiceType::Oneshot, "echo one");
    p.exec_start.push(sh("echo two", false));
    p.exec_start_post = vec![sh("echo post", false)];
    fx.launch_program(p);

    let end = fx.wait_exit();

    assert_eq!(fx.stdout_lines(), ["one", "two", "post"]);
    assert_eq!(end.result, Some(RunResult::Success));
    assert_eq!(end.exit.unwrap().code, Some(0));
}

#[test]
fn oneshot_with_remain_after_exit_stays_exited_until_stop_runs_exec_stop() {
    require_root();
    let mut fx = Fixture::new("remain.service");
    let mut p = program(ServiceType::Oneshot, "echo done");
    p.remain_after_exit = true;
    p.exec_stop = vec![sh("echo stopping", false)];
    fx.launch_program(p);

    let exited = fx.wait_status(|s| s.phase == Phase::Exited);
    assert!(exited.running && exited.main_pid.is_none());
    fx.request(&SupervisorRequest::Stop { timeout_ms: 0 });
    let end = fx.wait_exit();

    assert_eq!(fx.stdout_lines(), ["done", "stopping"]);
    assert_eq!(end.result, Some(RunResult::Success));
}

#[test]
fn notify_main_exiting_before_ready_is_a_protocol_failure() {
    require_root();
    let mut fx = Fixture::new("notready.service");
    fx.launch_program(program(ServiceType::Notify, "exit 0"));

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::Protocol));
}

#[test]
fn notify_is_starting_until_ready() {
    require_root();
    let mut fx = Fixture::new("notifystart.service");
    fx.launch_program(program(ServiceType::Notify, "exec sleep 1000"));

    std::thread::sleep(Duration::from_millis(300));
    let status = fx.request(&SupervisorRequest::Status);

    assert_eq!(status.phase, Phase::Start);
    assert!(status.main_pid.is_some());
}

#[test]
fn the_start_timeout_fails_the_run_with_timeout() {
    require_root();
    let mut fx = Fixture::new("starttimeout.service");
    let mut p = program(ServiceType::Simple, "exec sleep 1000");
    p.exec_start_pre = vec![sh("exec sleep 1000", false)];
    p.timeout_start_ms = 300;
    fx.launch_program(p);

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::Timeout));
    assert!(end.failure.is_some_and(|f| f.contains("start timed out")));
}

#[test]
fn the_stop_timeout_of_the_program_ends_a_stubborn_service_with_the_final_signal() {
    require_root();
    let mut fx = Fixture::new("stoptimeout.service");
    let mut p = program(
        ServiceType::Simple,
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
    );
    p.timeout_stop_ms = 400;
    fx.launch_program(p);
    fx.wait_for_stdout("ready");

    let started = Instant::now();
    fx.request(&SupervisorRequest::Stop { timeout_ms: 0 });
    let end = fx.wait_exit();

    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(end.exit.unwrap().signal, Some(libc::SIGKILL));
    assert_eq!(end.result, Some(RunResult::Timeout));
}

#[test]
fn send_sigkill_no_leaves_the_stubborn_service_to_the_end_of_the_sandbox() {
    require_root();
    let mut fx = Fixture::new("nosigkill.service");
    let mut p = program(
        ServiceType::Simple,
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
    );
    p.timeout_stop_ms = 300;
    p.kill.send_sigkill = false;
    p.exec_stop_post = vec![sh("echo post", false)];
    let launched = fx.launch_program(p);
    fx.wait_for_stdout("ready");
    let ns = ns_link(&launched.main_pid.to_string(), "pid");

    fx.request(&SupervisorRequest::Stop { timeout_ms: 0 });
    let post = fx.wait_status(|s| s.phase == Phase::StopPost || !s.running);
    let end = fx.wait_exit();

    assert_ne!(post.phase, Phase::StopSigkill);
    assert!(fx.stdout_lines().contains(&"post".to_string()));
    assert_eq!(end.exit.unwrap().signal, Some(libc::SIGKILL));
    assert_eq!(processes_in(&ns), Vec::<u32>::new());
}

#[test]
fn kill_mode_control_group_signals_a_double_forked_daemon_and_nothing_survives() {
    require_root();
    let mut fx = Fixture::new("doublefork.service");
    let launched = fx.launch_program(program(
        ServiceType::Simple,
        "(sh -c 'trap \"echo daemon-term; exit 0\" TERM; echo daemon-up; \
         while :; do sleep 0.05; done' &); exec sleep 1000",
    ));
    fx.wait_for_stdout("daemon-up");
    let ns = ns_link(&launched.main_pid.to_string(), "pid");

    fx.request(&SupervisorRequest::Stop { timeout_ms: 5000 });
    let end = fx.wait_exit();

    assert!(fx.stdout_lines().contains(&"daemon-term".to_string()));
    assert_eq!(end.result, Some(RunResult::Success));
    assert_eq!(processes_in(&ns), Vec::<u32>::new());
}

#[test]
fn kill_mode_process_signals_only_main_and_the_end_of_the_sandbox_takes_the_rest() {
    require_root();
    let mut fx = Fixture::new("killprocess.service");
    let mut p = program(
        ServiceType::Simple,
        "sleep 1000 & echo $! > /tmp/child; echo ready; wait",
    );
    p.kill.mode = KillMode::Process;
    p.exec_stop_post = vec![sh(
        "test -d /proc/$(cat /tmp/child) && echo child-alive",
        false,
    )];
    let launched = fx.launch_program(p);
    fx.wait_for_stdout("ready");
    let ns = ns_link(&launched.main_pid.to_string(), "pid");

    fx.request(&SupervisorRequest::Stop { timeout_ms: 5000 });
    let end = fx.wait_exit();

    assert!(fx.stdout_lines().contains(&"child-alive".to_string()));
    assert_eq!(end.exit.unwrap().signal, Some(libc::SIGTERM));
    assert_eq!(processes_in(&ns), Vec::<u32>::new());
}

#[test]
fn forking_main_is_the_process_the_pid_file_names() {
    require_root();
    let mut fx = Fixture::new("forking.service");
    let mut p = program(
        ServiceType::Forking,
        "sleep 1000 & echo $! > /tmp/daemon.pid; sleep 999 & exit 0",
    );
    p.pid_file = Some("/tmp/daemon.pid".into());
    fx.launch_program(p);

    let status = running(&fx);

    // Of the two sleeps left, the PID file names the first.
    // (The fork of the shell may not have exec'd sleep yet.)
    let main = status.main_pid.expect("main pid from the PID file");
    wait_until("main is the sleep 1000", || {
        std::fs::read(format!("/proc/{main}/cmdline")).unwrap_or_default() == b"sleep\x001000\x00"
    });
}

#[test]
fn forking_waits_for_a_pid_file_the_daemon_writes_after_its_parent_exited() {
    require_root();
    let mut fx = Fixture::new("latepidfile.service");
    let mut p = program(
        ServiceType::Forking,
        "sh -c 'sleep 0.3; echo $$ > /tmp/late.pid; exec sleep 1000' & exit 0",
    );
    p.pid_file = Some("/tmp/late.pid".into());
    fx.launch_program(p);

    let status = running(&fx);

    let main = status.main_pid.expect("main pid from the late PID file");
    wait_until("main is the sleep", || {
        status_field(&proc_status(main), "Name") == "sleep"
    });
}

#[test]
fn forking_without_pid_file_guesses_the_only_process_left() {
    require_root();
    let mut fx = Fixture::new("guess.service");
    fx.launch_program(program(ServiceType::Forking, "sleep 1000 & exit 0"));

    let status = running(&fx);

    // (The fork of the shell may not have exec'd sleep yet.)
    let main = status.main_pid.expect("a guessed main pid");
    wait_until("main is the sleep", || {
        status_field(&proc_status(main), "Name") == "sleep"
    });
}

#[test]
fn forking_with_a_pid_file_naming_no_process_of_the_service_is_a_protocol_failure() {
    require_root();
    let mut fx = Fixture::new("badpidfile.service");
    let mut p = program(
        ServiceType::Forking,
        "sleep 1000 & echo 1 > /tmp/one.pid; exit 0",
    );
    p.pid_file = Some("/tmp/one.pid".into());
    fx.launch_program(p);

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::Protocol));
    assert!(
        end.failure
            .is_some_and(|f| f.contains("not a process of the service"))
    );
}

#[test]
fn forking_with_a_pid_file_naming_a_host_process_is_a_protocol_failure() {
    require_root();
    let mut fx = Fixture::new("hostpidfile.service");
    let host_pid = std::process::id();
    let mut p = program(
        ServiceType::Forking,
        &format!("sleep 1000 & echo {host_pid} > /tmp/host.pid; exit 0"),
    );
    p.pid_file = Some("/tmp/host.pid".into());
    fx.launch_program(p);

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::Protocol));
    assert_eq!(end.main_pid, None);
}

#[test]
fn forking_whose_start_process_fails_fails_with_exit_code() {
    require_root();
    let mut fx = Fixture::new("forkfail.service");
    fx.launch_program(program(ServiceType::Forking, "exit 2"));

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::ExitCode));
}

#[test]
fn reload_runs_exec_reload_with_mainpid_and_counts_it() {
    require_root();
    let mut fx = Fixture::new("reload.service");
    let mut p = program(ServiceType::Simple, "exec sleep 1000");
    p.exec_reload = vec![sh("echo reloading $MAINPID", false)];
    fx.launch_program(p);
    let main = running(&fx).main_pid.unwrap();

    let reply = fx.request(&SupervisorRequest::Reload);
    let after = fx.wait_status(|s| s.reloads == 1);
    // The log writer's thread may write the line just after the snapshot is sent.
    let expected = format!("reloading {}", sandbox_pid(main));
    fx.wait_for_stdout(&expected);

    assert_eq!(reply.error, None);
    assert_eq!(
        (after.phase, after.last_reload_ok),
        (Phase::Running, Some(true))
    );
    assert_eq!(fx.stdout_lines(), [expected]);
}

#[test]
fn a_failing_reload_keeps_the_service_running() {
    require_root();
    let mut fx = Fixture::new("reloadfail.service");
    let mut p = program(ServiceType::Simple, "exec sleep 1000");
    p.exec_reload = vec![sh("exit 1", false)];
    fx.launch_program(p);
    running(&fx);

    fx.request(&SupervisorRequest::Reload);
    let after = fx.wait_status(|s| s.reloads == 1);

    assert_eq!(
        (after.phase, after.last_reload_ok),
        (Phase::Running, Some(false))
    );
}

#[test]
fn reload_without_exec_reload_is_refused() {
    require_root();
    let mut fx = Fixture::new("noreload.service");
    fx.launch_program(program(ServiceType::Simple, "exec sleep 1000"));
    running(&fx);

    let reply = fx.request(&SupervisorRequest::Reload);

    assert!(reply.error.is_some_and(|e| e.contains("ExecReload=")));
}

#[test]
fn the_watchdog_signals_a_silent_service_and_fails_the_run() {
    require_root();
    let mut fx = Fixture::new("watchdog.service");
    let mut p = program(
        ServiceType::Simple,
        "trap 'echo got-abrt; exit 0' ABRT; while :; do sleep 0.05; done",
    );
    p.watchdog_ms = 300;
    fx.launch_program(p);

    let end = fx.wait_exit();

    assert_eq!(end.result, Some(RunResult::Watchdog));
    assert!(fx.stdout_lines().contains(&"got-abrt".to_string()));
}

#[test]
fn every_change_of_phase_is_sent_unasked() {
    require_root();
    let mut fx = Fixture::new("snapshots.service");
    let mut p = program(ServiceType::Simple, "exec sleep 1000");
    p.exec_start_post = vec![sh("sleep 0.3", false)];
    fx.launch_program(p);
    let mut control = fx.connect();
    let first = control.request(&SupervisorRequest::Status);
    assert_eq!(first.phase, Phase::StartPost);

    let next = control.read_status();

    assert_eq!(next.phase, Phase::Running);
}

fn probe_fixture(unit: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    berth_testkit::ImageBuilder::new(dir.path())
        .probe()
        .build()
        .unwrap();
    Fixture::with_image(unit, dir)
}

#[test]
fn watchdog_1_in_time_keeps_the_service_running() {
    require_root();
    let mut fx = probe_fixture("watchdogfed.service");
    let mut spec = fx.spec(&[
        "/usr/bin/berth-probe",
        "--notify",
        "READY=1",
        "--watchdog-every",
        "50",
    ]);
    spec.program.service_type = ServiceType::Notify;
    spec.program.notify_access = berth_protocol::service_program::NotifyAccess::Main;
    spec.program.watchdog_ms = 500;
    fx.try_launch_spec(&spec).unwrap();
    running(&fx);

    std::thread::sleep(Duration::from_millis(1500));
    let status = fx.request(&SupervisorRequest::Status);

    assert_eq!((status.phase, status.result), (Phase::Running, None));
}

#[test]
fn notify_is_running_once_main_sends_ready() {
    require_root();
    let mut fx = probe_fixture("notifyready.service");
    let mut spec = fx.spec(&[
        "/usr/bin/berth-probe",
        "--notify",
        "READY=1",
        "--sleep",
        "100",
    ]);
    spec.program.service_type = ServiceType::Notify;
    spec.program.notify_access = berth_protocol::service_program::NotifyAccess::Main;
    fx.try_launch_spec(&spec).unwrap();

    let status = running(&fx);

    assert_eq!(status.result, None);
    assert!(status.main_pid.is_some());
}

#[test]
fn signal_to_all_reaches_every_process_but_init_and_the_run_goes_on() {
    require_root();
    let mut fx = Fixture::new("signalall.service");
    let mut p = program(
        ServiceType::Simple,
        // Main's trap is set before the child can say it is up.
        "trap 'echo main-usr1' USR1; \
         sh -c 'trap \"echo child-usr1\" USR1; echo child-up; while :; do sleep 0.05; done' & \
         while :; do sleep 0.05; done",
    );
    p.exec_stop_post = vec![sh("echo post", false)];
    fx.launch_program(p);
    fx.wait_for_stdout("child-up");

    let reply = fx.request(&SupervisorRequest::Signal {
        signal: libc::SIGUSR1,
        whom: berth_protocol::supervisor::KillWhom::All,
    });
    fx.wait_for_stdout("main-usr1");
    fx.wait_for_stdout("child-usr1");
    fx.request(&SupervisorRequest::Signal {
        signal: libc::SIGKILL,
        whom: berth_protocol::supervisor::KillWhom::All,
    });
    let end = fx.wait_exit();

    assert_eq!(reply.error, None);
    // Init was spared: the run still had a sandbox to run ExecStopPost= in.
    assert!(fx.stdout_lines().contains(&"post".to_string()));
    assert_eq!(end.exit.unwrap().signal, Some(libc::SIGKILL));
    assert_eq!(end.result, Some(RunResult::Signal));
}
