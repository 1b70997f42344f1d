//! The per-service supervisor (DESIGN.md §6).
//!
//! Forked by [`crate::sandbox::launch`] (the helper ignores SIGCHLD, so none is reaped), it runs
//! in the host namespaces and outlives the helper. As root it binds `<unit>.sock` in the
//! control directory, makes the service's cgroups and forks the sandbox's init into a new pid
//! namespace; then it gives up root ([`privileges`]: the manager's uid with CAP_KILL alone),
//! starts the run of the program (`run.rs`: every command forked by init, in order, with the
//! timeouts and the kill policy), waits until the first command has exec'd and reports that
//! to `launch`. Then a single-threaded `poll()` loop:
//! - copies the service's stdout/stderr, split into lines, to the log file as
//!   `log_line` records (written by a thread of its own, see `log_writer`), and to the host's
//!   journal when berthd asks for it (`journal`);
//! - serves [`SupervisorRequest`]s from the manager uid and root (JSON lines);
//! - takes init's reports (`run_actions.rs`) and the notify socket's messages, and moves the
//!   run on; every change goes to every client as a full snapshot;
//! - once the run is over (init gone, phase `dead`), keeps the result and the
//!   [`ExitStatus`] until a `Release`, after which it removes its socket and exits.

mod clients;
mod control_socket;
mod event_loop;
mod exit;
mod journal;
mod log_capture;
mod log_sockets;
mod log_writer;
mod notify;
mod port_broker;
mod privileges;
mod run;
mod run_actions;
mod service_pids;
mod spawn;

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::fs::Mode;

use crate::launch_spec::{LaunchFds, LaunchSpec};
use crate::sandbox::directories::PreparedDirectory;
use crate::sandbox::{Failure, Report, credentials_dir, process_name, sys};

use control_socket::ControlSocket;
use event_loop::Supervisor;

pub(crate) fn run(spec: &LaunchSpec, fds: LaunchFds, report: OwnedFd) -> ! {
    let (fds, report) = sanitize(fds, report);
    name(&spec.unit);
    let code = match start(spec, fds) {
        Ok((mut sup, main_pid)) => {
            let launched = Report::Launched {
                supervisor_pid: sup.pid,
                main_pid,
            };
            if launched.send(&report).is_ok() {
                drop(report);
                sup.serve()
            } else {
                // `launch` gave up waiting: nobody will ever manage this service.
                sup.abort();
                1
            }
        }
        Err(failure) => {
            let _ = Report::Failed(failure).send(&report);
            1
        }
    };
    sys::exit(code)
}

/// Resets what the helper left behind: signal state, parent-death signal, stray descriptors,
/// stdio (to /dev/null), umask and cwd.
fn sanitize(fds: LaunchFds, report: OwnedFd) -> (LaunchFds, OwnedFd) {
    let _ = rustix::process::set_parent_process_death_signal(None);
    // SIGPIPE ignored: a vanished client or reader must not kill us.
    let _ = sys::reset_signals(true);
    let Ok(report) = sys::above_stdio(report) else {
        sys::exit(1)
    };
    let fail = |report: &OwnedFd, stage: &str, e: std::io::Error| -> ! {
        let _ = Report::Failed(Failure::setup(stage, e)).send(report);
        sys::exit(1)
    };
    let lifted = (|| {
        Ok::<_, std::io::Error>(LaunchFds {
            root: sys::above_stdio(fds.root)?,
            log: sys::above_stdio(fds.log)?,
            control_dir: sys::above_stdio(fds.control_dir)?,
            extensions: fds
                .extensions
                .into_iter()
                .map(sys::above_stdio)
                .collect::<Result<_, _>>()?,
            directories: fds
                .directories
                .into_iter()
                .map(PreparedDirectory::above_stdio)
                .collect::<Result<_, _>>()?,
            host_files: fds.host_files.above_stdio()?,
            persistent_var: fds.persistent_var.map(sys::above_stdio).transpose()?,
        })
    })();
    let fds = lifted.unwrap_or_else(|e| fail(&report, "move descriptors", e));
    let mut keep = vec![
        report.as_raw_fd(),
        fds.root.as_raw_fd(),
        fds.log.as_raw_fd(),
        fds.control_dir.as_raw_fd(),
    ];
    keep.extend(fds.extensions.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(fds.directories.iter().map(|d| d.fd.as_raw_fd()));
    keep.extend(fds.host_files.raw_fds());
    keep.extend(fds.persistent_var.iter().map(|fd| fd.as_raw_fd()));
    // SAFETY: this is the freshly forked supervisor; the descriptors closed belong to helper
    // objects it never touches again (it only leaves through sys::exit).
    if let Err(e) = unsafe { sys::close_fds_except(&keep) } {
        fail(&report, "close inherited descriptors", e);
    }
    if let Err(e) = sys::stdio_to(c"/dev/null") {
        fail(&report, "open /dev/null", e);
    }
    rustix::process::umask(Mode::from_raw_mode(0o022));
    let _ = rustix::process::chdir(c"/");
    (fds, report)
}

/// Shows up in `ps` as `berth-supervise UNIT` (comm `berth-supervise`, the 15 bytes the kernel
/// keeps), not with the helper's command line and environment it inherited. Cosmetic, so a
/// kernel that refuses it does not stop the service.
fn name(unit: &str) {
    let _ = process_name::set(c"berth-supervise", &[b"berth-supervise", unit.as_bytes()]);
}

/// Binds the control socket, builds the sandbox and starts the run; returns the supervisor
/// and the pid `launch` reports.
fn start(spec: &LaunchSpec, fds: LaunchFds) -> Result<(Supervisor, u32), Failure> {
    let LaunchFds {
        root,
        log,
        control_dir,
        extensions,
        directories,
        host_files,
        persistent_var,
    } = fds;
    let control = ControlSocket::bind(&spec.unit, control_dir)?;
    // Read as root before the sandbox exists; init writes them into it.
    let credentials =
        match credentials_dir::load(&spec.sandbox.credentials, &spec.credential_sources) {
            Ok(credentials) => credentials,
            Err(e) => {
                control.remove();
                return Err(e.into_failure());
            }
        };
    let manager = (control.owner, control.group);
    let sandbox = match spawn::spawn(
        spec,
        (root, extensions),
        directories,
        (host_files, persistent_var),
        credentials,
        manager,
    ) {
        Ok(sandbox) => sandbox,
        Err(failure) => {
            control.remove();
            return Err(failure);
        }
    };
    // What needs root goes before the drop: the journal's socket, and our own pid namespace
    // back for new children, without which no log writer thread can start.
    let journal = spec
        .journal
        .as_ref()
        .and_then(|target| journal::Journal::connect(target, &spec.unit));
    let _ = log_writer::own_pid_namespace_for_children();
    // Before any thread starts (credentials are per thread), and before `launch` hears of
    // the service: no supervisor runs as root past its launch.
    let manager = privileges::Manager {
        uid: control.owner,
        gid: control.group,
        bind_ports: !spec.sandbox.privileged_ports.is_empty(),
    };
    if let Err(e) = privileges::give_up_root(manager) {
        spawn::end(sandbox);
        control.remove();
        return Err(Failure::setup(e.to_string(), e.errno()));
    }
    let mut sup = Supervisor::new(spec, control, log, sandbox, journal);
    match sup.begin(spec) {
        Ok(pid) => Ok((sup, pid)),
        Err(failure) => {
            sup.abort();
            Err(failure)
        }
    }
}
