//! `io.berth.Helper`: the private API of berth-helper, spoken only by berthd.
//!
//! Paths never cross this boundary: the image root, the log file and the supervisor's socket
//! directory travel as file descriptors (SCM_RIGHTS), in the order of [`SPAWN_FDS`], followed by
//! the roots of extension images.

use serde::{Deserialize, Serialize};
use zlink::introspect;

use crate::idl::InterfaceBuilder;
use crate::sandbox::{self, SandboxSpec};
use crate::service_program::{self, ServiceProgram};

pub const INTERFACE: &str = "io.berth.Helper";

/// The fds a `Spawn` call carries, in order. After them comes one directory per kind of
/// service directory kept on the host that the spec lists
/// ([`crate::sandbox::ServiceDirectory::host_kinds`]: the parent, in berthd's state, of the
/// service's directories of that kind, owned by berthd's user and writable by no one else),
/// then up to [`MAX_EXTENSIONS`] extension image roots (each a directory, like the image
/// root), lowest layer first: the last one given lies on top in the sandbox's read-only
/// overlay.
pub const SPAWN_FDS: [&str; 3] = [
    "image root directory",
    "log file",
    "supervisor socket directory",
];

/// The fds a `Spawn` call carries between the service directories' parents and the extension
/// roots, in order, each only when `sandbox` asks for it: the attachment's persistent /var
/// directory (`STATE/var/<image>/`, owned by berthd's user, mode 0700; the helper keeps the
/// overlay's `upper/` and `work/` in it), then berthd's current copies of the host's
/// `/etc/resolv.conf` and `/etc/hosts` (regular files, bound read-only).
pub fn spawn_extra_fds(sandbox: &SandboxSpec) -> Vec<&'static str> {
    let mounts = &sandbox.mounts;
    [
        (mounts.persistent_var, "persistent /var directory"),
        (mounts.host_files.resolv_conf, "resolv.conf copy"),
        (mounts.host_files.hosts, "hosts copy"),
    ]
    .into_iter()
    .filter_map(|(wanted, label)| wanted.then_some(label))
    .collect()
}

/// Most extension images one service may have layered over its image.
pub const MAX_EXTENSIONS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct SpawnParams {
    pub unit: String,
    // What the run executes: Type=, the Exec*= commands, timeouts and the kill policy.
    pub program: ServiceProgram,
    // `KEY=VALUE` entries, for every command of the program.
    pub environment: Vec<String>,
    pub working_directory: String,
    // Everything else about the sandbox, uid and gid included.
    pub sandbox: SandboxSpec,
    // Forward the service's output to the host's journal as well, with these fields; absent:
    // the log file only.
    pub journal: Option<JournalFields>,
}

/// The fields every journal entry of a service carries (besides MESSAGE=, PRIORITY=).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct JournalFields {
    // SYSLOG_IDENTIFIER=, e.g. the executable's name.
    pub identifier: String,
    // PORTABLE=, the image's name.
    pub portable: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
pub struct SpawnReply {
    pub supervisor_pid: i64,
    pub main_pid: i64,
}

/// `MountImage`: mount the file system found at `offset`, `size` bytes long, in the one fd the
/// call carries (the backing file, a regular file opened read-only). The reply carries one fd:
/// the detached, read-only, `nosuid,nodev` mount (never attached to any path), which berthd
/// reads the image through and passes to `Spawn` as its image root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct MountImageParams {
    // The file system: squashfs and erofs unless helper.toml's image_filesystems says otherwise.
    pub fstype: String,
    // Where the file system starts in the file, in bytes; a multiple of 512.
    pub offset: i64,
    // Its length in bytes; a multiple of 512, within the file.
    pub size: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
pub struct MountImageReply {
    // The loop device the mount reads, e.g. /dev/loop3.
    pub device: String,
    // True when the loop device was already attached to the same file and range (shared).
    pub shared: bool,
}

/// `ReleaseUser`: berthd is done with a dynamic uid (the run that held it has ended, every
/// process of it gone) and will hand it out again. Before it does, the helper removes what the
/// uid could leave for its next holder outside its own directories: its System V IPC objects
/// and POSIX message queues in the host's IPC namespace (RemoveIPC=, which DynamicUser=
/// implies) and the keys in its user, user-session and persistent keyrings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct ReleaseUserParams {
    // The dynamic uid (and the gid of the same number); the floor allows only its range.
    pub uid: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
pub struct ReleaseUserReply {
    // How many IPC objects (shared memory segments, semaphore sets, message queues, POSIX
    // message queues) were removed.
    pub ipc_removed: i64,
}

/// `RemoveVarState`: `berth detach --clean` of an attachment with a persistent /var. The call
/// carries one fd, the attachment's directory (`STATE/var/<image>/`, berthd's, not group or
/// other writable); the helper removes the overlay's `upper/` and `work/` in it, never
/// following a symlink or crossing a mount, and only what host root or an id of `block` owns
/// (the files the service and the overlay made); berthd then removes the directory itself.
/// Refused while a run of the attachment holds the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct RemoveVarStateParams {
    // The attachment's uid block, whose ids own the files of its /var.
    pub block: crate::sandbox::UidBlock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
pub struct RemoveVarStateReply {
    // How many files and directories were removed.
    pub removed: i64,
}

#[derive(Debug, Default, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::Type)]
pub struct PingReply {
    // The manager uid this helper serves.
    pub manager_uid: i64,
}

/// Errors of `io.berth.Helper`.
#[derive(Debug, Clone, PartialEq, zlink::ReplyError, introspect::ReplyError)]
#[zlink(interface = "io.berth.Helper")]
pub enum HelperError {
    // The caller is not the manager.
    PermissionDenied { uid: i64 },
    // A field failed the helper's floor policy.
    RequestRefused { field: String, reason: String },
    // The sandbox could not be built or the executable could not be started.
    SpawnFailed { reason: String },
    // The loop device could not be set up or the kernel refused to mount the file system.
    MountFailed { fstype: String, reason: String },
    // Something the uid left could not be removed; the uid must not be handed out again.
    ReleaseFailed { uid: i64, reason: String },
    // The persistent /var could not be removed (in use, or something in it that is not the
    // attachment's); what was not removed stays.
    RemoveVarStateFailed { reason: String },
}

impl std::fmt::Display for HelperError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelperError::PermissionDenied { uid } => {
                write!(f, "uid {uid} may not use berth-helper")
            }
            HelperError::RequestRefused { field, reason } => {
                write!(f, "request refused: {field}: {reason}")
            }
            HelperError::SpawnFailed { reason } => f.write_str(reason),
            HelperError::MountFailed { fstype, reason } => {
                write!(f, "cannot mount the {fstype} image: {reason}")
            }
            HelperError::ReleaseFailed { uid, reason } => {
                write!(f, "cannot release uid {uid}: {reason}")
            }
            HelperError::RemoveVarStateFailed { reason } => {
                write!(f, "cannot remove the persistent /var: {reason}")
            }
        }
    }
}

impl std::error::Error for HelperError {}

/// The interface description, derived from the types above.
pub fn description() -> String {
    let builder = InterfaceBuilder::new(INTERFACE);
    let builder = service_program::describe(sandbox::describe(builder));
    builder
        .custom_type::<JournalFields>()
        .method::<Empty, PingReply>("Ping")
        .method::<SpawnParams, SpawnReply>("Spawn")
        .method::<MountImageParams, MountImageReply>("MountImage")
        .method::<ReleaseUserParams, ReleaseUserReply>("ReleaseUser")
        .method::<RemoveVarStateParams, RemoveVarStateReply>("RemoveVarState")
        .errors::<HelperError>()
        .build()
}
