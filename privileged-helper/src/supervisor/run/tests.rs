//! The run's phases without processes: events in, actions and snapshot fields out.

use berth_protocol::service_program::Command;

use super::*;

fn cmd(name: &str, ignore_failure: bool) -> Command {
    Command {
        argv: vec![format!("/bin/{name}")],
        ignore_failure,
    }
}

fn program(service_type: ServiceType) -> ServiceProgram {
    ServiceProgram {
        service_type,
        ..ServiceProgram::simple(vec!["/bin/main".into()])
    }
}

const EXIT_0: i32 = 0;
const EXIT_1: i32 = 1 << 8;

/// A run and a clock; `seqs` gives back each command it forks, in order.
struct Harness {
    run: Run,
    now: Instant,
    execs: Vec<(u32, CommandList, usize, bool, u32)>,
    other: Vec<Action>,
}

impl Harness {
    fn new(program: ServiceProgram) -> Harness {
        let now = Instant::now();
        let mut h = Harness {
            run: Run::new(program),
            now,
            execs: Vec::new(),
            other: Vec::new(),
        };
        h.run.start(now);
        h.collect();
        h
    }

    fn collect(&mut self) {
        for action in self.run.take_actions() {
            match action {
                Action::Exec {
                    seq,
                    list,
                    index,
                    main,
                    main_ns,
                } => self.execs.push((seq, list, index, main, main_ns)),
                other => self.other.push(other),
            }
        }
    }

    /// The last command forked: it starts (sandbox pid = 10 + seq) and execs.
    fn exec_last(&mut self) -> u32 {
        let seq = self.execs.last().expect("a command was forked").0;
        self.run.started(seq, 10 + seq, Some(1000 + seq));
        self.run.execd(seq, self.now);
        self.collect();
        seq
    }

    fn exit(&mut self, seq: u32, status: i32) {
        self.run.exited(seq, 10 + seq, status, self.now);
        self.collect();
    }

    fn empty(&mut self) {
        let seq = self.execs.last().map_or(0, |e| e.0);
        self.run.empty(seq, self.now);
        self.collect();
    }

    fn later(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.run.tick(self.now);
        self.collect();
    }

    fn lists(&self) -> Vec<(CommandList, usize)> {
        self.execs.iter().map(|e| (e.1, e.2)).collect()
    }

    /// Ends the sandbox as the glue would once asked.
    fn end_sandbox(&mut self) {
        assert!(self.other.contains(&Action::EndSandbox), "{:?}", self.other);
        self.run.sandbox_gone();
    }
}

#[test]
fn simple_is_running_once_main_has_execd() {
    let mut h = Harness::new(program(ServiceType::Simple));
    assert_eq!(h.run.phase(), Phase::Start);

    h.exec_last();

    assert_eq!(h.run.phase(), Phase::Running);
    assert_eq!(h.run.main_pid(), Some(1001));
}

#[test]
fn pre_start_and_post_commands_run_one_after_the_other() {
    let mut p = program(ServiceType::Simple);
    p.exec_start_pre = vec![cmd("a", false), cmd("b", false)];
    p.exec_start_post = vec![cmd("c", false)];
    let mut h = Harness::new(p);

    let a = h.exec_last();
    h.exit(a, EXIT_0);
    let b = h.exec_last();
    h.exit(b, EXIT_0);
    h.exec_last();
    let c = h.exec_last();
    h.exit(c, EXIT_0);

    assert_eq!(
        h.lists(),
        [
            (CommandList::StartPre, 0),
            (CommandList::StartPre, 1),
            (CommandList::Start, 0),
            (CommandList::StartPost, 0)
        ]
    );
    assert_eq!(h.run.phase(), Phase::Running);
}

#[test]
fn a_failing_pre_command_skips_start_and_exec_stop_but_runs_stop_post() {
    let mut p = program(ServiceType::Simple);
    p.exec_start_pre = vec![cmd("pre", false)];
    p.exec_stop = vec![cmd("stop", false)];
    p.exec_stop_post = vec![cmd("post", false)];
    let mut h = Harness::new(p);

    let pre = h.exec_last();
    h.exit(pre, EXIT_1);
    h.empty();
    let post = h.exec_last();
    h.exit(post, EXIT_0);

    assert_eq!(
        h.lists(),
        [(CommandList::StartPre, 0), (CommandList::StopPost, 0)]
    );
    h.end_sandbox();
    assert_eq!(h.run.result(), Some(RunResult::ExitCode));
    assert_eq!(h.run.exit().and_then(|e| e.code), Some(1));
}

#[test]
fn the_dash_prefix_lets_the_run_go_on() {
    let mut p = program(ServiceType::Simple);
    p.exec_start_pre = vec![cmd("pre", true)];
    let mut h = Harness::new(p);

    let pre = h.exec_last();
    h.exit(pre, EXIT_1);

    assert_eq!(h.lists().last(), Some(&(CommandList::Start, 0)));
    assert_eq!(h.run.result(), None);
}

#[test]
fn exec_stop_gets_the_main_pid_and_stop_post_runs_last() {
    let mut p = program(ServiceType::Simple);
    p.exec_stop = vec![cmd("stop", false)];
    p.exec_stop_post = vec![cmd("post", false)];
    let mut h = Harness::new(p);
    let main = h.exec_last();

    h.run.request_stop(None, h.now);
    h.collect();
    let (stop, _, _, _, main_ns) = *h.execs.last().unwrap();
    assert_eq!(main_ns, 10 + main);
    h.exec_last();
    h.exit(stop, EXIT_0);
    assert_eq!(h.run.phase(), Phase::StopSigterm);
    assert!(h.other.contains(&Action::SignalAll { signal: 15 }));
    h.exit(main, 15);
    h.empty();
    let post = h.exec_last();
    h.exit(post, EXIT_0);
    h.end_sandbox();

    assert_eq!(h.lists().last(), Some(&(CommandList::StopPost, 0)));
    assert_eq!(h.run.result(), Some(RunResult::Success));
    assert_eq!(h.run.exit().and_then(|e| e.signal), Some(15));
    assert!(h.run.stop_requested());
}

#[test]
fn oneshot_runs_each_start_and_ends_unless_it_remains() {
    let mut p = program(ServiceType::Oneshot);
    p.exec_start.push(cmd("second", false));
    let mut h = Harness::new(p.clone());
    let first = h.exec_last();
    h.exit(first, EXIT_0);
    let second = h.exec_last();
    h.exit(second, EXIT_0);
    h.empty();
    h.end_sandbox();
    assert_eq!(h.run.result(), Some(RunResult::Success));

    p.remain_after_exit = true;
    let mut h = Harness::new(p);
    let first = h.exec_last();
    h.exit(first, EXIT_0);
    let second = h.exec_last();
    h.exit(second, EXIT_0);

    assert_eq!(h.run.phase(), Phase::Exited);
    assert_eq!(h.run.main_pid(), None);
}

#[test]
fn notify_is_ready_at_ready_1_and_protocol_when_main_exits_before() {
    let mut h = Harness::new(program(ServiceType::Notify));
    h.exec_last();
    assert_eq!(h.run.phase(), Phase::Start);
    h.run.notify(
        NotifyInput {
            ready: 1,
            ..NotifyInput::default()
        },
        h.now,
    );
    assert_eq!(h.run.phase(), Phase::Running);

    let mut h = Harness::new(program(ServiceType::Notify));
    let main = h.exec_last();
    h.exit(main, EXIT_0);
    assert_eq!(h.run.result(), Some(RunResult::Protocol));
}

#[test]
fn forking_takes_main_from_init_after_the_start_process_exits() {
    let mut h = Harness::new(program(ServiceType::Forking));
    let start = h.exec_last();
    h.exit(start, EXIT_0);
    assert!(h.other.contains(&Action::FindMain));

    h.run.main_found(Ok((42, Some(4242))), h.now);

    assert_eq!(h.run.phase(), Phase::Running);
    assert_eq!(h.run.main_pid(), Some(4242));
    // Its exit is matched by its pid in the sandbox (it is no command of ours).
    h.run.exited(0, 42, EXIT_1, h.now);
    assert_eq!(h.run.result(), Some(RunResult::ExitCode));
}

#[test]
fn forking_without_a_main_process_is_a_protocol_failure() {
    let mut h = Harness::new(program(ServiceType::Forking));
    let start = h.exec_last();
    h.exit(start, EXIT_0);

    h.run.main_found(Err("no PID file".into()), h.now);

    assert_eq!(h.run.result(), Some(RunResult::Protocol));
    assert_eq!(h.run.phase(), Phase::StopSigterm);
}

#[test]
fn the_start_timeout_fails_with_timeout() {
    let mut p = program(ServiceType::Simple);
    p.exec_start_pre = vec![cmd("slow", false)];
    p.timeout_start_ms = 100;
    let mut h = Harness::new(p);
    h.exec_last();

    h.later(100);

    assert_eq!(h.run.result(), Some(RunResult::Timeout));
    assert_eq!(h.run.phase(), Phase::StopSigterm);
}

#[test]
fn the_stop_timeout_sends_the_final_signal_only_with_send_sigkill() {
    let mut p = program(ServiceType::Simple);
    p.timeout_stop_ms = 100;
    let mut h = Harness::new(p.clone());
    h.exec_last();
    h.run.request_stop(None, h.now);
    h.collect();
    h.later(100);
    assert_eq!(h.run.phase(), Phase::StopSigkill);
    assert!(h.other.contains(&Action::SignalAll { signal: 9 }));

    p.kill.send_sigkill = false;
    let mut h = Harness::new(p);
    h.exec_last();
    h.run.request_stop(None, h.now);
    h.collect();
    h.later(100);
    assert_eq!(h.run.phase(), Phase::StopPost);
    assert!(!h.other.contains(&Action::SignalAll { signal: 9 }));
}

#[test]
fn kill_mode_process_signals_main_alone_and_does_not_wait_for_the_rest() {
    let mut p = program(ServiceType::Simple);
    p.kill.mode = KillMode::Process;
    let mut h = Harness::new(p);
    let main = h.exec_last();

    h.run.request_stop(None, h.now);
    h.collect();
    h.exit(main, 15);

    assert!(h.other.contains(&Action::Signal {
        ns_pid: 10 + main,
        signal: 15
    }));
    assert!(
        !h.other
            .iter()
            .any(|a| matches!(a, Action::SignalAll { .. }))
    );
    // No Empty report: the rest is left to the end of the sandbox.
    assert!(h.other.contains(&Action::EndSandbox));
}

#[test]
fn the_watchdog_expires_without_watchdog_1_and_not_with_it() {
    let mut p = program(ServiceType::Simple);
    p.watchdog_ms = 100;
    p.kill.watchdog_signal = 6;
    let mut h = Harness::new(p.clone());
    h.exec_last();
    h.later(50);
    let fed = h.now;
    h.run.notify(
        NotifyInput {
            last_watchdog: Some(fed),
            ..NotifyInput::default()
        },
        h.now,
    );
    h.later(60);
    assert_eq!(h.run.phase(), Phase::Running);

    h.later(50);

    assert_eq!(h.run.result(), Some(RunResult::Watchdog));
    assert!(h.other.contains(&Action::SignalAll { signal: 6 }));
}

#[test]
fn reload_runs_exec_reload_and_counts_success_and_failure() {
    let mut p = program(ServiceType::Simple);
    p.exec_reload = vec![cmd("reload", false)];
    let mut h = Harness::new(p);
    h.exec_last();

    h.run.request_reload(h.now).unwrap();
    h.collect();
    assert_eq!(h.run.phase(), Phase::Reload);
    let reload = h.exec_last();
    h.exit(reload, EXIT_0);
    assert_eq!(h.run.reloads(), (1, Some(true)));
    h.run.request_reload(h.now).unwrap();
    h.collect();
    let reload = h.exec_last();
    h.exit(reload, EXIT_1);

    assert_eq!(h.run.reloads(), (2, Some(false)));
    assert_eq!(h.run.phase(), Phase::Running);
    assert_eq!(h.run.result(), None);
}

#[test]
fn reload_is_refused_without_exec_reload_or_when_not_running() {
    let mut h = Harness::new(program(ServiceType::Simple));
    assert!(h.run.request_reload(h.now).is_err());
    h.exec_last();
    assert!(h.run.request_reload(h.now).is_err());
}

#[test]
fn a_main_exit_by_sigterm_is_clean_and_by_sigsegv_is_a_signal_failure() {
    let mut h = Harness::new(program(ServiceType::Simple));
    let main = h.exec_last();
    h.exit(main, libc::SIGTERM);
    assert_eq!(h.run.result(), None);

    let mut h = Harness::new(program(ServiceType::Simple));
    let main = h.exec_last();
    h.exit(main, libc::SIGSEGV);
    assert_eq!(h.run.result(), Some(RunResult::Signal));
}

#[test]
fn main_exiting_with_remain_after_exit_is_exited_and_stop_runs_exec_stop() {
    let mut p = program(ServiceType::Simple);
    p.remain_after_exit = true;
    p.exec_stop = vec![cmd("stop", false)];
    let mut h = Harness::new(p);
    let main = h.exec_last();
    h.exit(main, EXIT_0);
    assert_eq!(h.run.phase(), Phase::Exited);

    h.run.request_stop(None, h.now);
    h.collect();

    assert_eq!(h.run.phase(), Phase::Stop);
    assert_eq!(h.lists().last(), Some(&(CommandList::Stop, 0)));
}

#[test]
fn a_sandbox_that_does_not_end_is_killed() {
    let mut h = Harness::new(program(ServiceType::Simple));
    let main = h.exec_last();
    h.exit(main, EXIT_0);
    h.empty();
    assert!(h.other.contains(&Action::EndSandbox));

    h.later(5000);

    assert!(h.other.contains(&Action::KillSandbox));
}

#[test]
fn reloading_1_then_ready_1_is_a_reload_the_service_announced() {
    let mut h = Harness::new(program(ServiceType::Notify));
    h.exec_last();
    let ready = |ready, reloading| NotifyInput {
        ready,
        reloading,
        ..NotifyInput::default()
    };
    h.run.notify(ready(1, 0), h.now);

    h.run.notify(ready(1, 1), h.now);
    assert_eq!(h.run.phase(), Phase::Reload);
    h.run.notify(ready(2, 1), h.now);

    assert_eq!(h.run.phase(), Phase::Running);
    assert_eq!(h.run.reloads(), (1, Some(true)));
}

#[test]
fn watchdog_trigger_fails_the_run_at_once() {
    let mut p = program(ServiceType::Simple);
    p.watchdog_ms = 60_000;
    let mut h = Harness::new(p);
    h.exec_last();

    h.run.notify(
        NotifyInput {
            watchdog_trigger: true,
            ..NotifyInput::default()
        },
        h.now,
    );

    assert_eq!(h.run.result(), Some(RunResult::Watchdog));
    assert_eq!(h.run.phase(), Phase::StopSigterm);
}

#[test]
fn an_exec_stop_that_hangs_times_out_into_the_kill_step() {
    let mut p = program(ServiceType::Simple);
    p.exec_stop = vec![cmd("hang", false)];
    p.timeout_stop_ms = 100;
    let mut h = Harness::new(p);
    h.exec_last();
    h.run.request_stop(None, h.now);
    h.collect();
    h.exec_last();

    h.later(100);

    assert_eq!(h.run.phase(), Phase::StopSigterm);
    assert_eq!(h.run.result(), Some(RunResult::Timeout));
}

#[test]
fn a_stop_request_gives_its_own_timeout() {
    let mut p = program(ServiceType::Simple);
    p.timeout_stop_ms = 60_000;
    let mut h = Harness::new(p);
    h.exec_last();

    h.run.request_stop(Some(Duration::from_millis(50)), h.now);
    h.collect();
    h.later(50);

    assert_eq!(h.run.phase(), Phase::StopSigkill);
}

#[test]
fn a_mainpid_from_the_notify_socket_becomes_main() {
    let mut h = Harness::new(program(ServiceType::Notify));
    h.exec_last();

    h.run.notify(
        NotifyInput {
            main_pid: Some((5555, 55)),
            ..NotifyInput::default()
        },
        h.now,
    );

    assert_eq!(h.run.main_pid(), Some(5555));
    assert!(h.other.is_empty());
    h.collect();
    assert!(h.other.contains(&Action::SetMain { ns_pid: 55 }));
}

#[test]
fn kill_mode_mixed_terms_main_and_kills_everything() {
    let mut p = program(ServiceType::Simple);
    p.kill.mode = KillMode::Mixed;
    p.timeout_stop_ms = 100;
    let mut h = Harness::new(p);
    let main = h.exec_last();

    h.run.request_stop(None, h.now);
    h.collect();
    assert!(h.other.contains(&Action::Signal {
        ns_pid: 10 + main,
        signal: 15
    }));
    assert!(
        !h.other
            .iter()
            .any(|a| matches!(a, Action::SignalAll { .. }))
    );
    h.exit(main, 15);
    // Main is gone but not everything: mixed waits for the whole sandbox.
    assert_eq!(h.run.phase(), Phase::StopSigterm);
    h.later(100);

    assert!(h.other.contains(&Action::SignalAll { signal: 9 }));
}

#[test]
fn a_pid_file_not_there_yet_is_asked_for_again_until_the_start_timeout() {
    let mut p = program(ServiceType::Forking);
    p.timeout_start_ms = 1000;
    let mut h = Harness::new(p);
    let start = h.exec_last();
    h.exit(start, EXIT_0);
    h.other.clear();

    h.run.main_pending(h.now);
    h.later(50);
    assert_eq!(h.other, [Action::FindMain]);
    h.run.main_pending(h.now);
    h.later(1000);

    assert_eq!(h.run.result(), Some(RunResult::Timeout));
}
