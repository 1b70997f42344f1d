//! The `io.berth.Helper` varlink interface: who may call, and what a call turns into.

use std::path::{Path, PathBuf};

use berth_protocol::helper::{
    self, HelperError, MountImageParams, MountImageReply, PingReply, ReleaseUserParams,
    ReleaseUserReply, RemoveVarStateParams, RemoveVarStateReply, SpawnParams, SpawnReply,
};
use berth_protocol::sandbox::ServiceDirectory;
use berth_varlink::listener::BoundedListener;
use berth_varlink::service::{
    BERTH_INFO, CallContext, Interface, Outcome, VarlinkService, parse_params, varlink_error,
};
use serde_json::{Value, json};

use crate::config::FloorPolicy;
use crate::image_mount;
use crate::launch_spec::LaunchFds;
use crate::manager_access::Credentials;
use crate::sandbox;
use crate::socket_dir::{SocketDir, SocketDirError};
use crate::uid_release;
use crate::var_state;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another berth-helper is serving {0}")]
    AlreadyServing(PathBuf),
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    SocketDir(#[from] SocketDirError),
    #[error("varlink server failed: {0}")]
    Server(#[from] berth_varlink::Error),
}

/// The helper's interface: accepts only the manager's uid.
pub struct HelperInterface {
    manager_uid: u32,
    policy: FloorPolicy,
    description: String,
}

impl HelperInterface {
    pub fn new(manager_uid: u32, policy: FloorPolicy) -> Self {
        HelperInterface {
            manager_uid,
            policy,
            description: helper::description(),
        }
    }

    fn spawn(&self, parameters: Value, ctx: CallContext) -> Outcome {
        let params: SpawnParams = match parse_params(parameters) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        // For the log: the request is consumed by the check.
        let (params_unit, params_uid) = (
            berth_logging::untrusted(&params.unit),
            params.sandbox.identity.uid,
        );
        // handle() let only the manager's uid through; its gid and groups are the kernel's too.
        let Some(peer) = ctx.peer.as_ref() else {
            return Outcome::error(&HelperError::PermissionDenied { uid: -1 });
        };
        let manager = Credentials {
            uid: peer.uid,
            gid: peer.gid,
            groups: peer.groups.clone(),
        };
        let mut fds = ctx.fds;
        let checked = self.policy.check_spawn(params).and_then(|spec| {
            let kinds = ServiceDirectory::host_kinds(&spec.sandbox.directories);
            let parents = self
                .policy
                .check_directory_fds(&mut fds, &kinds, &manager)?;
            let extra = self
                .policy
                .check_extra_fds(&mut fds, &spec.sandbox, &manager)?;
            let launch = LaunchFds {
                host_files: extra.host_files,
                persistent_var: extra.persistent_var,
                ..self.policy.check_spawn_fds(fds, &manager)?
            };
            Ok((spec, launch, parents))
        });
        let (spec, mut fds, parents) = match checked {
            Ok(v) => v,
            Err(refusal) => {
                tracing::warn!(
                    unit = %params_unit,
                    uid = params_uid,
                    field = %refusal.field,
                    reason = %berth_logging::Untrusted(&refusal.reason),
                    "floor refused spawn"
                );
                return Outcome::error(&HelperError::RequestRefused {
                    field: refusal.field,
                    reason: refusal.reason,
                });
            }
        };
        let identity = &spec.sandbox.identity;
        let owner = sandbox::directories::Owner {
            uid: identity.uid,
            gid: identity.gid,
            // Block mode: what the image's users left is the block's to re-own.
            dynamic: identity
                .user_block
                .map_or(self.policy.uid_min..=self.policy.uid_max, |block| {
                    block.first..=block.last()
                }),
        };
        match sandbox::directories::prepare(&spec.sandbox.directories, &parents, &owner) {
            Ok(prepared) => fds.directories = prepared,
            Err(e) => {
                let error = berth_logging::untrusted(&e.to_string());
                tracing::warn!(unit = %params_unit, uid = params_uid, %error, "service directories refused");
                return Outcome::error(&HelperError::SpawnFailed {
                    reason: e.to_string(),
                });
            }
        }
        drop(parents);
        let block_mode = spec.sandbox.identity.user_block.is_some();
        match sandbox::launch(&spec, fds) {
            Ok(launched) => {
                if block_mode {
                    sweep_once_gone(launched.supervisor_pid);
                }
                tracing::info!(
                    unit = %params_unit,
                    uid = params_uid,
                    supervisor_pid = launched.supervisor_pid,
                    pid = launched.main_pid,
                    "spawned"
                );
                Outcome::reply(&SpawnReply {
                    supervisor_pid: i64::from(launched.supervisor_pid),
                    main_pid: i64::from(launched.main_pid),
                })
            }
            Err(e) => {
                let error = berth_logging::untrusted(&e.to_string());
                tracing::warn!(unit = %params_unit, uid = params_uid, %error, "spawn failed");
                Outcome::error(&HelperError::SpawnFailed {
                    reason: e.to_string(),
                })
            }
        }
    }

    fn mount_image(&self, parameters: Value, ctx: CallContext) -> Outcome {
        let params: MountImageParams = match parse_params(parameters) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let fstype = berth_logging::untrusted(&params.fstype);
        let (offset, size) = (params.offset, params.size);
        let request = match self.policy.check_mount_image(params, ctx.fds) {
            Ok(request) => request,
            Err(refusal) => {
                tracing::warn!(
                    %fstype,
                    offset,
                    size,
                    field = %refusal.field,
                    reason = %berth_logging::Untrusted(&refusal.reason),
                    "floor refused image mount"
                );
                return Outcome::error(&HelperError::RequestRefused {
                    field: refusal.field,
                    reason: refusal.reason,
                });
            }
        };
        let filesystem = request.filesystem.name();
        match image_mount::mount_image(request) {
            Ok(mounted) => {
                tracing::info!(
                    fstype = filesystem,
                    offset,
                    size,
                    device = %mounted.device,
                    shared = mounted.shared,
                    "mounted image"
                );
                let reply = MountImageReply {
                    device: mounted.device,
                    shared: mounted.shared,
                };
                match serde_json::to_value(&reply) {
                    Ok(value) => Outcome::Reply(value, vec![mounted.mount]),
                    Err(e) => Outcome::error(&HelperError::MountFailed {
                        fstype: filesystem.into(),
                        reason: e.to_string(),
                    }),
                }
            }
            Err(e) => {
                let error = berth_logging::untrusted(&e.to_string());
                tracing::warn!(fstype = filesystem, offset, size, %error, "image mount failed");
                Outcome::error(&HelperError::MountFailed {
                    fstype: filesystem.into(),
                    reason: e.to_string(),
                })
            }
        }
    }

    fn release_user(&self, parameters: Value) -> Outcome {
        let params: ReleaseUserParams = match parse_params(parameters) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let uid = match self.policy.check_release_user(&params) {
            Ok(uid) => uid,
            Err(refusal) => {
                tracing::warn!(
                    uid = params.uid,
                    field = %refusal.field,
                    reason = %berth_logging::Untrusted(&refusal.reason),
                    "floor refused uid release"
                );
                return Outcome::error(&HelperError::RequestRefused {
                    field: refusal.field,
                    reason: refusal.reason,
                });
            }
        };
        // The run that held the uid is over: its supervisor, no longer root, could not remove
        // its cgroups.
        schedule_cgroup_sweeps();
        match uid_release::release_user(uid) {
            Ok(removed) => {
                tracing::debug!(uid, ipc_removed = removed.total(), "released uid");
                Outcome::reply(&ReleaseUserReply {
                    ipc_removed: i64::try_from(removed.total()).unwrap_or(i64::MAX),
                })
            }
            Err(e) => {
                tracing::warn!(uid, error = %e, "uid release failed");
                Outcome::error(&HelperError::ReleaseFailed {
                    uid: i64::from(uid),
                    reason: e.to_string(),
                })
            }
        }
    }
}

impl HelperInterface {
    fn remove_var_state(&self, parameters: Value, fds: Vec<std::os::fd::OwnedFd>) -> Outcome {
        let params: RemoveVarStateParams = match parse_params(parameters) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let first = params.block.first;
        let (dir, block) = match self
            .policy
            .check_remove_var_state(&params, fds, self.manager_uid)
        {
            Ok(checked) => checked,
            Err(refusal) => {
                tracing::warn!(
                    block = first,
                    field = %refusal.field,
                    reason = %berth_logging::Untrusted(&refusal.reason),
                    "floor refused removing a persistent /var"
                );
                return Outcome::error(&HelperError::RequestRefused {
                    field: refusal.field,
                    reason: refusal.reason,
                });
            }
        };
        match var_state::remove(dir, block) {
            Ok(removed) => {
                tracing::info!(block = first, removed, "removed a persistent /var");
                Outcome::reply(&RemoveVarStateReply {
                    removed: i64::try_from(removed).unwrap_or(i64::MAX),
                })
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(block = first, error = %berth_logging::Untrusted(&reason), "persistent /var removal failed");
                Outcome::error(&HelperError::RemoveVarStateFailed { reason })
            }
        }
    }
}

/// Sweeps the cgroups of finished runs soon, and again a little later: the supervisor of the
/// run just released may still be exiting, and a cgroup stays busy a moment after its last
/// process. One schedule at a time (a release during it runs it once more at its end), so
/// that 500 services stopping at once cost a few sweeps, not 2,000.
fn schedule_cgroup_sweeps() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SWEEPING: AtomicBool = AtomicBool::new(false);
    static AGAIN: AtomicBool = AtomicBool::new(false);
    if SWEEPING.swap(true, Ordering::SeqCst) {
        AGAIN.store(true, Ordering::SeqCst);
        return;
    }
    tokio::spawn(async {
        loop {
            for pause in CGROUP_SWEEPS {
                tokio::time::sleep(pause).await;
                let stale = sandbox::remove_stale_cgroups();
                if stale > 0 {
                    tracing::debug!(stale, "removed the cgroups of finished runs");
                }
            }
            if !AGAIN.swap(false, Ordering::SeqCst) {
                break;
            }
        }
        SWEEPING.store(false, Ordering::SeqCst);
    });
}

/// A run in block mode has no uid to release, whose release sweeps its cgroups: they are
/// swept once its supervisor is gone (it outlives the service's last process). A helper that
/// restarts meanwhile sweeps at its start instead.
fn sweep_once_gone(supervisor: u32) {
    let pidfd =
        rustix::process::Pid::from_raw(supervisor.try_into().unwrap_or(0)).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
    let Some(pidfd) = pidfd else {
        // Gone already (or never there): sweep now.
        schedule_cgroup_sweeps();
        return;
    };
    tokio::spawn(async move {
        // A pidfd is readable once its process has exited.
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and names the same
        // process for the AsyncFd's whole life.
        if let Ok(watched) = unsafe { tokio::io::unix::AsyncFd::register(pidfd) } {
            let _ = watched.readable().await;
        }
        schedule_cgroup_sweeps();
    });
}

/// When the cgroups of finished runs are swept after a uid release (each pause after the
/// previous sweep).
const CGROUP_SWEEPS: [std::time::Duration; 4] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(2),
];

impl Interface for HelperInterface {
    const NAME: &'static str = helper::INTERFACE;

    fn description(&self) -> &str {
        &self.description
    }

    async fn handle(&mut self, method: &str, parameters: Value, ctx: CallContext) -> Outcome {
        let uid = ctx.peer.as_ref().map(|p| p.uid);
        if uid != Some(self.manager_uid) {
            // Logged with the peer's uid and pid where every refused call is (VarlinkService).
            let uid = uid.map_or(-1, i64::from);
            return Outcome::error(&HelperError::PermissionDenied { uid });
        }
        match method {
            "Ping" => match parse_params::<helper::Empty>(parameters) {
                Err(e) => Outcome::Error(e),
                Ok(_) => Outcome::reply(&PingReply {
                    manager_uid: i64::from(self.manager_uid),
                }),
            },
            "Spawn" => self.spawn(parameters, ctx),
            "MountImage" => self.mount_image(parameters, ctx),
            "ReleaseUser" => self.release_user(parameters),
            "RemoveVarState" => self.remove_var_state(parameters, ctx.fds),
            other => Outcome::Error(varlink_error(
                "MethodNotFound",
                json!({ "method": format!("{}.{other}", helper::INTERFACE) }),
            )),
        }
    }
}

/// Binds the helper socket (0600, owned by the manager uid) and serves until the listener fails.
///
/// The socket's directory belongs to the manager's user, so it is reached only through a
/// checked descriptor ([`SocketDir`]): a symlink swapped in for it is never followed.
pub async fn serve(socket: &Path, manager_uid: u32, policy: FloorPolicy) -> Result<(), ServeError> {
    let dir = SocketDir::open(socket, manager_uid)?;
    remove_stale_socket(&dir, PREVIOUS_HELPER_GRACE).await?;
    // Created 0600: never a moment when others may connect, and no chmod by path afterwards.
    // The helper is single-threaded here, so the umask change affects nothing else.
    let old_mask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = BoundedListener::bind(&dir.through_fd());
    rustix::process::umask(old_mask);
    let listener = bound.map_err(|source| ServeError::Bind {
        path: socket.to_owned(),
        source,
    })?;
    dir.hand_over_socket(manager_uid)?;
    let service = VarlinkService::new(HelperInterface::new(manager_uid, policy), BERTH_INFO);
    service.serve(listener).await?;
    Ok(())
}

/// How long a live socket may keep answering before it counts as another helper's. A restarted
/// berthd starts its helper while the previous one may still be winding down: that one exits as
/// soon as its lifeline closes, which takes milliseconds.
const PREVIOUS_HELPER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A leftover socket file is removed; one that keeps answering for `grace` means another helper
/// owns it.
pub async fn remove_stale_socket(
    dir: &SocketDir,
    grace: std::time::Duration,
) -> Result<(), ServeError> {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if !dir.socket_exists()? {
            return Ok(());
        }
        if tokio::net::UnixStream::connect(dir.through_fd())
            .await
            .is_err()
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ServeError::AlreadyServing(dir.path().to_owned()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(dir.remove_socket()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    use super::*;
    use crate::test_support::runtime;

    fn socket_dir(socket: &Path) -> SocketDir {
        SocketDir::open(socket, 1000).unwrap()
    }

    #[test]
    fn a_dead_socket_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("helper");
        drop(UnixListener::bind(&socket).unwrap());

        runtime()
            .block_on(remove_stale_socket(&socket_dir(&socket), Duration::ZERO))
            .unwrap();

        assert!(!socket.exists());
    }

    #[test]
    fn a_previous_helper_that_exits_within_the_grace_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("helper");
        let previous = UnixListener::bind(&socket).unwrap();
        let departing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(previous);
        });

        let result = runtime().block_on(remove_stale_socket(
            &socket_dir(&socket),
            Duration::from_secs(10),
        ));

        departing.join().unwrap();
        result.unwrap();
        assert!(!socket.exists());
    }

    #[test]
    fn a_helper_that_keeps_serving_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("helper");
        let _live = UnixListener::bind(&socket).unwrap();

        let result = runtime().block_on(remove_stale_socket(
            &socket_dir(&socket),
            Duration::from_millis(100),
        ));

        assert!(matches!(result, Err(ServeError::AlreadyServing(_))));
        assert!(socket.exists());
    }

    fn call_as(uid: u32, method: &str) -> Outcome {
        call_with(uid, method, json!({}))
    }

    fn call_with(uid: u32, method: &str, parameters: Value) -> Outcome {
        let mut helper = HelperInterface::new(1000, FloorPolicy::default());
        let ctx = CallContext {
            more: false,
            oneway: false,
            peer: Some(berth_varlink::service::Peer {
                uid,
                gid: uid,
                pid: 1,
                groups: Vec::new(),
            }),
            fds: Vec::new(),
        };
        runtime().block_on(helper.handle(method, parameters, ctx))
    }

    #[test]
    fn the_manager_uid_is_served() {
        let outcome = call_as(1000, "Ping");

        assert!(matches!(outcome, Outcome::Reply(..)));
    }

    #[test]
    fn any_other_uid_even_root_is_refused() {
        for uid in [0, 999, 1001] {
            let Outcome::Error(error) = call_as(uid, "Ping") else {
                panic!("uid {uid} was served");
            };
            assert_eq!(error["error"], "io.berth.Helper.PermissionDenied");
        }
    }

    #[test]
    fn a_spawn_without_its_descriptors_is_refused() {
        let params = json!({
            "unit": "hello.service",
            "program": berth_protocol::service_program::ServiceProgram::simple(vec!["/bin/true".into()]),
            "environment": [],
            "working_directory": "/",
            "sandbox": berth_protocol::sandbox::SandboxSpec::baseline(61200, 61200, "hello"),
        });

        let Outcome::Error(error) = call_with(1000, "Spawn", params) else {
            panic!("a spawn without descriptors went through");
        };

        assert_eq!(error["error"], "io.berth.Helper.RequestRefused");
        assert_eq!(error["parameters"]["field"], "fds");
    }
}
