//! Launching a service in a fresh sandbox under its own supervisor.
//!
//! Process tree (DESIGN.md §6):
//!
//! ```text
//! helper ─fork→ supervisor (setsid; root, host namespaces; crate::supervisor)
//!          └─unshare(NEWPID)+fork→ init = PID 1 (new mnt/ipc/uts/cgroup ns, new root,
//!                                   service uid; init/)
//!                                    └─fork→ each Exec*= command, on the supervisor's
//!                                            request (ExecStartPre=, main, ExecStop=, ...)
//! ```
//!
//! The supervisor reports `Launched` (or the failure) to `launch` over a CLOEXEC pipe as one
//! JSON document, once the run's first command has exec'd or failed.

pub(crate) mod block_namespace;
mod bound_socket;
pub(crate) mod capabilities;
pub(crate) mod cgroup;
mod credentials;
pub mod credentials_dir;
pub mod directories;
pub(crate) mod firewall;
pub(crate) mod init;
mod keyring;
pub(crate) mod landlock;
pub(crate) mod log_sockets;
mod mounts;
mod namespaces;
pub(crate) mod notify_socket;
pub(crate) mod process_name;
pub(crate) mod process_syscalls;
pub(crate) mod rlimits;
pub mod seccomp;
pub(crate) mod sys;
pub(crate) mod syscalls;
mod user_namespace;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::launch_spec::{LaunchFds, LaunchSpec, Launched};

pub use cgroup::remove_stale as remove_stale_cgroups;

/// How long `launch` waits for the supervisor's report.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a service could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("refusing to launch: the helper has {threads} threads, fork needs exactly one")]
    MultiThreaded { threads: usize },
    #[error("cannot count the helper's threads in /proc/self/task: {0}")]
    CountThreads(#[source] io::Error),
    #[error("cannot create the launch report pipe: {0}")]
    ReportPipe(#[source] io::Error),
    #[error("cannot fork the supervisor: {0}")]
    Fork(#[source] io::Error),
    #[error("cannot read the supervisor's launch report: {0}")]
    ReadReport(#[source] io::Error),
    #[error("the supervisor did not report within {} s", .0.as_secs())]
    ReportTimeout(Duration),
    #[error("invalid launch report from the supervisor: {0}")]
    BadReport(String),
    #[error("control directory rejected: {reason}")]
    ControlDir { reason: String },
    #[error("cannot bind control socket {path}: {source}")]
    BindControlSocket { path: String, source: io::Error },
    #[error("{}", exec_message(path, *errno))]
    Exec { path: String, errno: i32 },
    #[error("cannot change to working directory {path}: {}", os_error(*errno))]
    WorkingDirectory { path: String, errno: i32 },
    #[error("sandbox setup failed at {stage}: {}", os_error(*errno))]
    SetupFailed { stage: String, errno: i32 },
    #[error("the sandbox's init exited before the service started ({detail})")]
    InitDied { detail: String },
}

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn exec_message(path: &str, errno: i32) -> String {
    match errno {
        libc::ENOENT => format!("executable {path} not found in image"),
        libc::EACCES => format!("executable {path} is not executable (permission denied)"),
        libc::ENOEXEC => format!("executable {path} has an unknown binary format"),
        _ => format!("cannot execute {path}: {}", os_error(errno)),
    }
}

/// A failure inside the supervisor, init or main, in the form that crosses process boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Failure {
    ControlDir { reason: String },
    BindControlSocket { path: String, errno: i32 },
    Exec { path: String, errno: i32 },
    WorkingDirectory { path: String, errno: i32 },
    Setup { stage: String, errno: i32 },
    InitDied { detail: String },
}

impl Failure {
    /// A failed setup step; `err` is an `io::Error` or a rustix `Errno`.
    pub(crate) fn setup(stage: impl Into<String>, err: impl Into<io::Error>) -> Failure {
        Failure::Setup {
            stage: stage.into(),
            errno: errno_of(err.into()),
        }
    }
}

pub(crate) fn errno_of(err: io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

impl From<Failure> for LaunchError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::ControlDir { reason } => LaunchError::ControlDir { reason },
            Failure::BindControlSocket { path, errno } => LaunchError::BindControlSocket {
                path,
                source: os_error(errno),
            },
            Failure::Exec { path, errno } => LaunchError::Exec { path, errno },
            Failure::WorkingDirectory { path, errno } => {
                LaunchError::WorkingDirectory { path, errno }
            }
            Failure::Setup { stage, errno } => LaunchError::SetupFailed { stage, errno },
            Failure::InitDied { detail } => LaunchError::InitDied { detail },
        }
    }
}

/// The supervisor's one message to `launch`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Report {
    Launched { supervisor_pid: u32, main_pid: u32 },
    Failed(Failure),
}

impl Report {
    pub(crate) fn send(&self, pipe: impl AsFd) -> io::Result<()> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        sys::write_all(pipe, &json)
    }
}

/// Launches `spec` in a new sandbox under a new supervisor; returns once the service's main
/// process has exec'd (or failed to). Must be called from a single-threaded process.
pub fn launch(spec: &LaunchSpec, fds: LaunchFds) -> Result<Launched, LaunchError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(LaunchError::CountThreads)?
        .count();
    if threads != 1 {
        return Err(LaunchError::MultiThreaded { threads });
    }
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| LaunchError::ReportPipe(e.into()))?;

    // One fork, no double-fork: the helper ignores SIGCHLD (see its main), so a supervisor that
    // ends is reaped by the kernel, and one that outlives the helper is reparented. This keeps a
    // whole fork off the start path.
    // SAFETY: checked above that this process has a single thread; the child ends in
    // `sys::exit` (through `supervisor_child`), never returning here.
    match unsafe { sys::fork() }.map_err(LaunchError::Fork)? {
        sys::Forked::Child => {
            drop(read_end);
            supervisor_child(spec, fds, write_end)
        }
        sys::Forked::Parent(_) => {}
    }
    drop(write_end);
    drop(fds);

    let bytes = read_report(&read_end, REPORT_TIMEOUT)?;
    match serde_json::from_slice::<Report>(&bytes) {
        Ok(Report::Launched {
            supervisor_pid,
            main_pid,
        }) => Ok(Launched {
            supervisor_pid,
            main_pid,
        }),
        Ok(Report::Failed(f)) => Err(f.into()),
        Err(_) if bytes.is_empty() => Err(LaunchError::BadReport(
            "the supervisor exited without reporting".into(),
        )),
        Err(e) => Err(LaunchError::BadReport(e.to_string())),
    }
}

/// The supervisor's child side: a new session (no controlling terminal, its own process
/// group), then the supervisor loop.
fn supervisor_child(spec: &LaunchSpec, fds: LaunchFds, report: OwnedFd) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Fails only if already a group leader, which a fresh child is not.
        let _ = rustix::process::setsid();
        crate::supervisor::run(spec, fds, report)
    }));
    sys::exit(result.unwrap_or(101))
}

/// Reads the pipe to EOF, giving up at `timeout`.
fn read_report(pipe: &OwnedFd, timeout: Duration) -> Result<Vec<u8>, LaunchError> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LaunchError::ReportTimeout(timeout));
        }
        let mut pfd = [sys::pollfd(pipe.as_fd(), libc::POLLIN)];
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        if sys::poll(&mut pfd, ms).map_err(LaunchError::ReadReport)? == 0 {
            continue;
        }
        match rustix::io::read(pipe, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 64 * 1024 {
                    return Err(LaunchError::BadReport("report too long".into()));
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(LaunchError::ReadReport(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_executable_message_names_the_path() {
        let err = LaunchError::Exec {
            path: "/usr/bin/nope".into(),
            errno: libc::ENOENT,
        };

        assert_eq!(
            err.to_string(),
            "executable /usr/bin/nope not found in image"
        );
    }

    #[test]
    fn failure_survives_the_report_pipe_format() {
        let report = Report::Failed(Failure::Setup {
            stage: "mount /proc".into(),
            errno: 1,
        });

        let json = serde_json::to_vec(&report).unwrap();
        let back: Report = serde_json::from_slice(&json).unwrap();

        assert!(
            matches!(back, Report::Failed(Failure::Setup { ref stage, errno: 1 }) if stage == "mount /proc")
        );
    }

    #[test]
    fn setup_failure_converts_to_a_readable_error() {
        let err = LaunchError::from(Failure::Setup {
            stage: "mount /proc".into(),
            errno: libc::EPERM,
        });

        assert!(
            err.to_string()
                .starts_with("sandbox setup failed at mount /proc: "),
            "{err}"
        );
    }
}
