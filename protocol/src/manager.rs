//! `io.berth.Manager`: the public API of berthd.
//!
//! Field names are snake_case on the wire so that `berth --json` can print the wire objects
//! unchanged (DESIGN.md §3 names `unit`, `image`, `state`, `main_pid`, `uid`, `profile`).

use serde::{Deserialize, Serialize};
use zlink::introspect;

use crate::idl::InterfaceBuilder;

pub const INTERFACE: &str = "io.berth.Manager";

/// An image in the search path, or attached from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct Image {
    pub name: String,
    pub path: String,
    // `directory`, `raw`, `gpt`, `tar` or `unknown` (from what the file holds, not its name).
    pub kind: String,
    pub version: Option<String>,
    // `PORTABLE_PRETTY_NAME`, else `PRETTY_NAME`, from its os-release.
    pub pretty_name: Option<String>,
    // `detached`, `attached` or `running` (a unit of it is starting, running or stopping).
    pub state: String,
    // No write permission on the image itself, or berthd may not change the directory it is in.
    #[serde(default)]
    pub read_only: bool,
    // Bytes of its files (a directory's are summed; null past a bound of entries).
    #[serde(default)]
    pub size: Option<i64>,
    // Last modification of the image file or directory, microseconds since the epoch.
    #[serde(default)]
    pub mtime_usec: Option<i64>,
}

/// A unit file found in an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct UnitFile {
    pub name: String,
    // Path inside the image.
    pub path: String,
    // File contents, with `--cat` only.
    pub contents: Option<String>,
}

/// What `inspect` shows about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct ImageDetails {
    pub image: Image,
    // The raw os-release text, with `--cat` only.
    pub os_release: Option<String>,
    pub os_pretty_name: Option<String>,
    pub portable_prefixes: Vec<String>,
    pub units: Vec<UnitFile>,
    // For a GPT disk image: the partition the root comes from.
    pub partition: Option<ImagePartition>,
    // Verity data found in the image, and whether it is enforced.
    pub verity: Option<ImageVerity>,
}

/// The partition of a GPT disk image (Discoverable Partitions Specification) berth mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct ImagePartition {
    // `root` or `usr`.
    pub designator: String,
    // Its entry number in the partition table, from 1.
    pub number: i64,
    // The architecture of its type, e.g. `x86-64`.
    pub architecture: String,
    // The file system in it: `squashfs`, `erofs` or `ext4`.
    pub filesystem: String,
    // Where it lies in the file, in bytes.
    pub offset: i64,
    pub size: i64,
}

/// Verity data an image carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct ImageVerity {
    // The hash partition, e.g. `root-verity`, and its entry number.
    pub partition: String,
    pub number: i64,
    // The entry number of the signature partition (`root-verity-sig`), if there is one.
    pub signature_number: Option<i64>,
    // Whether dm-verity checks the data as it is read.
    pub enforced: bool,
    // Why not, when it does not (e.g. the kernel has no device-mapper).
    pub reason: Option<String>,
}

/// State of one attached unit (DESIGN.md §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct UnitStatus {
    pub unit: String,
    pub image: String,
    // `running`, `exited`, `failed`, `stopped`, `starting` or `stopping`.
    pub state: String,
    pub main_pid: Option<i64>,
    pub uid: Option<i64>,
    // Profile and level, e.g. `default@1`.
    pub profile: String,
    pub description: Option<String>,
    // `simple`, `exec`, `notify`, `oneshot` or `forking`.
    pub service_type: String,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    // Last state change, microseconds since the epoch.
    pub since_usec: Option<i64>,
    // Why the unit failed, when it did.
    pub failure: Option<String>,
    // How the last run ended: `success`, `exit-code`, `signal`, `core-dump`, `timeout`,
    // `watchdog`, `protocol`, `resources` or `start-limit-hit`.
    pub result: Option<String>,
    // The service's last STATUS= (sd_notify).
    pub status_text: Option<String>,
    // Automatic restarts (Restart=) since it was last started by request.
    pub restarts: Option<i64>,
    // Started when berthd starts (`berth enable`).
    pub enabled: Option<bool>,
    // CPU time in microseconds, memory now and at its peak in bytes, processes and threads;
    // null without cgroup accounting.
    pub cpu_usec: Option<i64>,
    pub memory_current: Option<i64>,
    pub memory_peak: Option<i64>,
    pub tasks: Option<i64>,
    // Output lines dropped because the log could not keep up.
    pub log_dropped: Option<i64>,
    // What of the unit's resource limits the host could not apply, in words.
    pub resource_notes: Option<Vec<String>>,
    // The image's user the service runs as (`redis`; `root` of its own namespace without
    // User=); null for a dynamic user.
    #[serde(default)]
    pub user: Option<String>,
    // The attachment's block of host uids: inside, 0-65535 are `first` onwards on the host;
    // null for a dynamic user.
    #[serde(default)]
    pub uid_block: Option<crate::sandbox::UidBlock>,
    // Where the attachment's persistent /var lives on the host (`STATE/var/<image>`); null
    // when the unit has none.
    #[serde(default)]
    pub var_path: Option<String>,
    // Ports below 1024 the attachment was granted (`berth attach --port`).
    #[serde(default)]
    pub ports: Option<Vec<i64>>,
}

/// One captured output line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct LogEntry {
    pub usec: i64,
    // `stdout` or `stderr`.
    pub stream: String,
    // The line; what is not valid UTF-8 is U+FFFD here and exact in `bytes`.
    pub text: String,
    // The line's exact bytes, only when they are not valid UTF-8 (as journald's JSON does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Vec<u8>>,
    // Of a message the service sent to a log socket (stream `syslog`: syslog(3) to /dev/log;
    // `journal`: the journal's native protocol): its priority, 0 (emerg) to 7 (debug), as
    // journald's PRIORITY=; stdout and stderr lines have none (6 and 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    // The pid the message named (syslog's TAG[PID], the journal's SYSLOG_PID=), as the
    // service's pid namespace numbers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    // The identifier it named (syslog's TAG, the journal's SYSLOG_IDENTIFIER=).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct ImagesReply {
    pub images: Vec<Image>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct InspectImageParams {
    // A name in the search path, or a path. With a descriptor (the image opened by the
    // client with its own rights) the path the client named; without one berthd opens the
    // path with its own rights, which only root and the admin group may ask of it.
    pub image: String,
    pub cat: Option<bool>,
    // Only the units matching one of these (all units when absent or empty).
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
}

/// `ImportImage` takes the image as the call's one descriptor (opened by the caller with its
/// own rights: a directory or a regular file).
#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct ImportImageParams {
    // The source's file name (`foo_1.2.raw`): the stored name, and the version it carries.
    pub source: String,
    // The image name to store it under instead; the source's version is kept.
    pub name: Option<String>,
}

/// With `more`, progress replies (`image` null) come before the last one.
#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct ImportImageReply {
    pub bytes_done: i64,
    pub bytes_total: Option<i64>,
    // The imported image, in the last reply only.
    pub image: Option<Image>,
    // What was left out (device nodes, FIFOs, sockets), in the last reply.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyParams {
    pub image: String,
    // Absent: true (as portablectl read-only IMAGE).
    pub read_only: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct ImageReply {
    pub image: Image,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct InspectImageReply {
    pub details: ImageDetails,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct AttachParams {
    // As in InspectImageParams: a name, or the path the client opened and sent the
    // descriptor of (berthd keeps it while it runs, see the README).
    pub image: String,
    pub prefixes: Option<Vec<String>>,
    pub profile: Option<String>,
    pub force: Option<bool>,
    // Extension images (names or absolute paths) laid over the image, lowest first. The
    // call's descriptors: the image's first when it is a path, then one per extension path,
    // in order, each opened by the client as the image is (the image's alone, or none, is
    // accepted too: berthd then opens the other paths itself).
    pub extensions: Option<Vec<String>>,
    // Enable every unit attached (they start when berthd starts at boot, as `Enable`).
    #[serde(default)]
    pub enable: Option<bool>,
    // Ports below 1024 the attachment's services may bind on the host's network
    // (`--port`); kept across reattach. Each 1 to 1023.
    #[serde(default)]
    pub ports: Option<Vec<i64>>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct AttachReply {
    pub image: String,
    pub units: Vec<String>,
    // Directives berth does not implement (yet), with file and line.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct ImageParams {
    pub image: String,
    // The extensions the image was attached with, in the same order (none if omitted).
    pub extensions: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct DetachParams {
    pub image: String,
    // Stop the image's active units first (otherwise their being active is an error).
    pub now: Option<bool>,
    // The extensions the image was attached with, in the same order (none if omitted).
    pub extensions: Option<Vec<String>>,
    // Remove the attachment's persistent /var (`STATE/var/<image>`) too; without it the
    // state stays for the next attach of the image.
    #[serde(default)]
    pub clean: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct ReattachParams {
    // An attached image's name (its newest version is taken), a versioned name or a path.
    pub image: String,
    // Restart the updated units that are running and start the added ones.
    pub now: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct ReattachReply {
    pub image: String,
    // The image path the units now come from.
    pub path: String,
    // Units of the new version that were attached before (their running processes keep the
    // old version until restarted).
    pub updated: Vec<String>,
    // Units only the new version has.
    pub added: Vec<String>,
    // Units the new version lacks: stopped and detached.
    pub removed: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct DetachReply {
    pub image: String,
    pub units: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct IsAttachedReply {
    // `attached`, `running` or `detached`.
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct ListReply {
    pub units: Vec<UnitStatus>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct UnitParams {
    pub unit: String,
}

/// `Kill`: a signal to a running unit's processes.
#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct KillParams {
    pub unit: String,
    // `SIGTERM`, `TERM` or `15`; SIGTERM when absent.
    #[serde(default)]
    pub signal: Option<String>,
    // `main` (the main process) or `all` (every process of the service, the default).
    #[serde(default)]
    pub kill_whom: Option<String>,
}

/// `ResetFailed`: the units to reset; every unit when empty.
#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct ResetFailedParams {
    #[serde(default)]
    pub units: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct StatusReply {
    pub status: UnitStatus,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    pub unit: String,
    // Only the last `lines` entries (all when absent).
    pub lines: Option<i64>,
    // With `more`: after the existing entries, keep streaming new ones (true, the default) or
    // end the stream (false). Without `more` it must not be true.
    pub follow: Option<bool>,
    // Only entries at or after this time (microseconds since the epoch); `lines` counts the
    // last of those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_usec: Option<i64>,
    // Only entries at or before this time; `lines` counts the last of those. A stream with
    // `follow` ends once the log has passed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_usec: Option<i64>,
}

/// One batch of log entries. Replies are kept small: with `more`, the entries come in batches
/// of a few tens of KiB; a single reply (no `more`) holds only the newest entries that fit in
/// 64 KiB, and sets `truncated` when older ones were left out.
#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct LogsReply {
    pub entries: Vec<LogEntry>,
    pub truncated: Option<bool>,
}

/// One state change of one unit, as `Monitor` streams them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct UnitEvent {
    pub unit: String,
    // The state now, as `UnitStatus.state`, or `detached` when the unit went away.
    pub state: String,
    // The state before; null for a unit seen for the first time (just attached, or in the
    // current states a stream starts with).
    pub previous_state: Option<String>,
    pub result: Option<String>,
    pub main_pid: Option<i64>,
    // When berthd saw the change, microseconds since the epoch.
    pub usec: i64,
}

/// One batch of `Monitor` (always with `more`): the first reply holds the current state of
/// every unit, each later one the changes since, oldest first; empty now and then while
/// nothing changes. A client that reads too slowly misses changes, never holds berthd up: the
/// reply after it says how many with `lost` and holds every unit's current state again.
#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct MonitorReply {
    pub events: Vec<UnitEvent>,
    pub lost: Option<i64>,
}

/// One file of an attached unit as `Cat` shows it: the unit's copy in the attachment, then each
/// drop-in in the order they apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct UnitSource {
    pub path: String,
    pub contents: String,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct CatReply {
    pub unit: String,
    pub files: Vec<UnitSource>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct SetPropertyParams {
    pub unit: String,
    // `KEY=VALUE`, as `systemctl set-property` takes them; each key gets its drop-in
    // `50-KEY.conf`.
    pub properties: Vec<String>,
}

/// Largest drop-in berthd accepts: drop-ins hold a few directives.
pub const MAX_DROP_IN_BYTES: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct WriteDropInParams {
    pub unit: String,
    // The drop-in's file name, e.g. `override.conf`.
    pub name: String,
    // Its new text; only blank lines and comments removes the drop-in.
    pub contents: String,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct DropInsReply {
    pub unit: String,
    // Drop-ins written and removed, by path.
    pub written: Vec<String>,
    pub removed: Vec<String>,
    // Directives of the unit with its drop-ins that berth does not apply, with file and line.
    pub warnings: Vec<String>,
}

/// A profile at one version (DESIGN.md §5): built in, or a file of the admin's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct ProfileInfo {
    pub name: String,
    pub version: i64,
    // `NAME@VERSION`, as an attachment records it.
    pub reference: String,
    // The file it comes from in the admin's directory; null when built in.
    pub path: Option<String>,
    // The first comment line of its text.
    pub summary: Option<String>,
    // The exposure (in tenths, as Security gives it) of a unit that adds nothing to this
    // profile; null when its text cannot be read.
    pub exposure: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct ListProfilesReply {
    // By name, then version.
    pub profiles: Vec<ProfileInfo>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
#[serde(deny_unknown_fields)]
pub struct ProfileParams {
    // `NAME` (its newest version) or `NAME@VERSION`.
    pub profile: String,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct ShowProfileReply {
    pub profile: ProfileInfo,
    // Its text: a drop-in of `[Service]` directives.
    pub contents: String,
}

/// One check of `Security`: systemd-analyze security's check of the same id, weight and range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
pub struct SecurityCheck {
    // systemd's id, e.g. `PrivateNetwork=`.
    pub id: String,
    pub description: String,
    pub weight: i64,
    // 0 (good) to `range`; null when the check does not apply.
    pub badness: Option<i64>,
    pub range: i64,
    // What it adds to the exposure, in tenths; null when nothing.
    pub exposure: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, introspect::Type)]
pub struct SecurityReply {
    pub unit: String,
    // The profile and version its sandbox starts from.
    pub profile: String,
    // In tenths: 0 (perfect) to 100, as systemd-analyze security prints it divided by ten.
    pub exposure: i64,
    // `PERFECT`, `SAFE`, `OK`, `MEDIUM`, `EXPOSED`, `UNSAFE` or `DANGEROUS`.
    pub rating: String,
    pub checks: Vec<SecurityCheck>,
}

/// Errors of `io.berth.Manager`.
#[derive(Debug, Clone, PartialEq, zlink::ReplyError, introspect::ReplyError)]
#[zlink(interface = "io.berth.Manager")]
pub enum ManagerError {
    NoSuchImage {
        image: String,
    },
    InvalidImage {
        image: String,
        reason: String,
    },
    NoSuchUnit {
        unit: String,
    },
    InvalidUnit {
        unit: String,
        reason: String,
    },
    NotAttached {
        image: String,
    },
    AlreadyAttached {
        image: String,
        unit: String,
    },
    UnitActive {
        unit: String,
    },
    ExtensionsMismatch {
        image: String,
        attached: Vec<String>,
        given: Vec<String>,
    },
    InvalidDropIn {
        unit: String,
        reason: String,
    },
    ImageInUse {
        image: String,
        state: String,
    },
    ImageExists {
        image: String,
        path: String,
    },
    ImageReadOnly {
        image: String,
    },
    NotInPool {
        image: String,
        path: String,
    },
    NoSuchProfile {
        profile: String,
    },
    InvalidProfile {
        profile: String,
        reason: String,
    },
    StartFailed {
        unit: String,
        reason: String,
    },
    // A template (`foo@.service`) was asked to start: only its instances run.
    UnitIsTemplate {
        unit: String,
    },
    ImageChanged {
        image: String,
        path: String,
        reason: String,
    },
    PermissionDenied {
        method: String,
    },
    HelperUnavailable {
        reason: String,
    },
    ReplyTooLarge {
        method: String,
        count: i64,
        limit: i64,
    },
    /// A signal name or number that is not one (`Kill`).
    InvalidSignal {
        signal: String,
    },
    /// Reload and Kill need a running unit.
    UnitNotRunning {
        unit: String,
        reason: String,
    },
    /// `detach --clean` could not remove the attachment's persistent /var; the image stays
    /// attached.
    CleanFailed {
        image: String,
        reason: String,
    },
    Internal {
        reason: String,
    },
}

/// The unit a `UNIT` argument names: `hello` means `hello.service` (DESIGN.md §3).
pub fn unit_name(arg: &str) -> String {
    if arg.contains('.') {
        arg.to_string()
    } else {
        format!("{arg}.service")
    }
}

impl ManagerError {
    /// An internal error (I/O on berthd's own state and the like) carrying `e`'s message.
    pub fn internal(e: impl std::fmt::Display) -> ManagerError {
        ManagerError::Internal {
            reason: e.to_string(),
        }
    }
}

impl std::fmt::Display for ManagerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManagerError::NoSuchImage { image } => write!(f, "no image '{image}'"),
            ManagerError::InvalidImage { image, reason } => {
                write!(f, "image '{image}' is invalid: {reason}")
            }
            ManagerError::NoSuchUnit { unit } => write!(f, "no attached unit '{unit}'"),
            ManagerError::InvalidUnit { unit, reason } => write!(f, "unit '{unit}': {reason}"),
            ManagerError::NotAttached { image } => write!(f, "image '{image}' is not attached"),
            ManagerError::AlreadyAttached { image, unit } => {
                write!(
                    f,
                    "unit '{unit}' is already attached (from image '{image}')"
                )
            }
            ManagerError::InvalidDropIn { unit, reason } => {
                write!(f, "drop-in of {unit} refused, nothing written: {reason}")
            }
            ManagerError::UnitNotRunning { unit, reason } => write!(f, "{unit}: {reason}"),
            ManagerError::InvalidSignal { signal } => write!(f, "{signal}: not a signal"),
            ManagerError::UnitActive { unit } => {
                write!(f, "unit '{unit}' is active; stop it first")
            }
            ManagerError::ExtensionsMismatch {
                image,
                attached,
                given,
            } => {
                let list = |l: &[String]| {
                    if l.is_empty() {
                        "no extensions".to_string()
                    } else {
                        l.join(", ")
                    }
                };
                write!(
                    f,
                    "image '{image}' is attached with {}, not with {}; name the same extensions \
                     in the same order",
                    list(attached),
                    list(given)
                )
            }
            ManagerError::ImageInUse { image, state } => {
                write!(f, "image '{image}' is {state}; detach it first")
            }
            ManagerError::ImageExists { image, path } => {
                write!(f, "an image '{image}' exists already ({path})")
            }
            ManagerError::ImageReadOnly { image } => write!(
                f,
                "image '{image}' is read-only; 'berth image read-only {image} false' first"
            ),
            ManagerError::NotInPool { image, path } => write!(
                f,
                "image '{image}' ({path}) is not in berthd's pool (STATE/images): berthd changes \
                 only the images it imported"
            ),
            ManagerError::NoSuchProfile { profile } => {
                write!(f, "no profile '{profile}' (berth profile list shows them)")
            }
            ManagerError::InvalidProfile { profile, reason } => {
                write!(f, "profile '{profile}': {reason}")
            }
            ManagerError::StartFailed { unit, reason } => write!(f, "{unit} failed: {reason}"),
            ManagerError::UnitIsTemplate { unit } => {
                let example = unit.replacen("@.", "@NAME.", 1);
                write!(
                    f,
                    "{unit} is a template and cannot be started; start an instance of it, \
                     such as {example}"
                )
            }
            ManagerError::ImageChanged {
                image,
                path,
                reason,
            } => write!(
                f,
                "{path} is no longer the image '{image}' that was attached ({reason}); refusing \
                 to start from it; attach it again if the change is intended"
            ),
            ManagerError::PermissionDenied { method } => {
                // Logs are read as journald's are; everything else that is refused changes
                // state (or reads with berthd's rights).
                let who = if method == "Logs" {
                    "root, the admin group or the log group"
                } else {
                    "root or the admin group"
                };
                write!(f, "permission denied: {method} needs {who}")
            }
            ManagerError::ReplyTooLarge {
                method,
                count,
                limit,
            } => write!(
                f,
                "{method} has {count} items, more than one reply holds ({limit}); call it with \
                 'more' to receive them one by one"
            ),
            ManagerError::HelperUnavailable { reason } => {
                write!(f, "berth-helper is unavailable: {reason}")
            }
            ManagerError::CleanFailed { image, reason } => write!(
                f,
                "cannot remove the persistent /var of '{image}' (still attached): {reason}"
            ),
            ManagerError::Internal { reason } => write!(f, "internal error: {reason}"),
        }
    }
}

impl std::error::Error for ManagerError {}

/// The interface description, derived from the types above.
pub fn description() -> String {
    InterfaceBuilder::new(INTERFACE)
        .custom_type::<Image>()
        .custom_type::<UnitFile>()
        .custom_type::<ImageDetails>()
        .custom_type::<ImagePartition>()
        .custom_type::<ImageVerity>()
        .custom_type::<UnitStatus>()
        .custom_type::<crate::sandbox::UidBlock>()
        .custom_type::<LogEntry>()
        .custom_type::<UnitEvent>()
        .custom_type::<UnitSource>()
        .custom_type::<ProfileInfo>()
        .custom_type::<SecurityCheck>()
        .method::<Empty, ImagesReply>("ListImages")
        .method::<InspectImageParams, InspectImageReply>("InspectImage")
        .method_more::<ImportImageParams, ImportImageReply>("ImportImage")
        .method::<ImageParams, ImageReply>("RemoveImage")
        .method::<ReadOnlyParams, ImageReply>("MarkImageReadOnly")
        .method::<AttachParams, AttachReply>("Attach")
        .method::<DetachParams, DetachReply>("Detach")
        .method::<ImageParams, IsAttachedReply>("IsAttached")
        .method::<ReattachParams, ReattachReply>("Reattach")
        .method_more::<Empty, ListReply>("List")
        .method::<UnitParams, StatusReply>("Start")
        .method::<UnitParams, StatusReply>("Stop")
        .method::<UnitParams, StatusReply>("Restart")
        .method::<UnitParams, StatusReply>("Reload")
        .method::<KillParams, StatusReply>("Kill")
        .method::<ResetFailedParams, ListReply>("ResetFailed")
        .method::<UnitParams, StatusReply>("Status")
        .method::<UnitParams, StatusReply>("Enable")
        .method::<UnitParams, StatusReply>("Disable")
        .method_more::<LogsParams, LogsReply>("Logs")
        .method_more::<Empty, MonitorReply>("Monitor")
        .method::<UnitParams, CatReply>("Cat")
        .method::<SetPropertyParams, DropInsReply>("SetProperty")
        .method::<WriteDropInParams, DropInsReply>("WriteDropIn")
        .method::<Empty, ListProfilesReply>("ListProfiles")
        .method::<ProfileParams, ShowProfileReply>("ShowProfile")
        .method::<UnitParams, SecurityReply>("Security")
        .errors::<ManagerError>()
        .build()
}
