//! The `SandboxSpec`: one service's sandbox, completely, as data (DESIGN.md §5).
//!
//! berthd builds it from the profile, then the unit, then the host's drop-ins, each step only
//! tightening; it travels in `io.berth.Helper.Spawn`; berth-helper's floor checks and clamps
//! every field against its own root-owned config; the sandbox code carries it out. Nothing of
//! the sandbox is decided anywhere else.
//!
//! Every list is bounded ([`MAX_PATHS`], [`MAX_SYSCALLS`], ...) so that a request has a size
//! the helper can check before it does any work. Names (capabilities, syscalls, address
//! families, resources) are the kernel's names in systemd's spelling, so the IDL and a logged
//! request read like a unit file.

use serde::{Deserialize, Serialize};
use zlink::introspect;

/// Most entries in each list of paths of a [`MountPlan`].
pub const MAX_PATHS: usize = 64;
/// Most syscall names in a [`SyscallFilter`] list.
pub const MAX_SYSCALLS: usize = 1024;
/// Most entries in other lists (capabilities, families, rlimits, prefixes, directories).
pub const MAX_ENTRIES: usize = 128;
/// Longest path, in bytes, the spec may carry (PATH_MAX less its NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// One service's sandbox, completely; berth-helper checks every field against its floor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    // The profile it was built from, with its version, e.g. `default@1`.
    pub profile: String,
    pub identity: Identity,
    pub namespaces: Namespaces,
    pub mounts: MountPlan,
    pub capabilities: Capabilities,
    // NoNewPrivileges=.
    pub no_new_privileges: bool,
    pub syscalls: SyscallFilter,
    pub landlock: Landlock,
    // Limit*=: resources not listed keep the helper's defaults.
    pub rlimits: Vec<Rlimit>,
    // UMask=, e.g. 0o022 (at most 0o777).
    pub umask: u32,
    pub keyring: KeyringMode,
    pub firewall: IpFirewall,
    // StateDirectory= and the other four.
    pub directories: Vec<ServiceDirectory>,
    // RemoveIPC=: the uid's SysV IPC objects and POSIX message queues go when it is released.
    pub remove_ipc: bool,
    // MemoryMax= and the other cgroup limits of the service's own cgroup.
    pub resources: Resources,
    // LoadCredential=, LoadCredentialEncrypted=, SetCredential=: files on a private tmpfs at
    // `$CREDENTIALS_DIRECTORY` (`/run/credentials/UNIT`), mode 0400, owned by the service.
    pub credentials: Vec<Credential>,
    // Ports below 1024 the admin granted the attachment (`berth attach --port`): on the host's
    // network the service may bind them (TCP or UDP, IPv4 or IPv6), and no other port below
    // 1024. The supervisor intercepts bind(2) with a seccomp user notification and binds the
    // service's own socket for it (pidfd_getfd); the helper's floor allows only the ports of
    // helper.toml's `grantable_ports`. Empty: no interception at all.
    #[serde(default)]
    pub privileged_ports: Vec<u16>,
    // syslog(3) to `/dev/log` and the journal's native socket
    // (`/run/systemd/journal/socket`, and `/run/systemd/journal/dev-log`) are sockets of the
    // supervisor in the sandbox: what the service logs through them lands in its own log,
    // with its priority, like its stdout.
    #[serde(default)]
    pub capture_log_sockets: bool,
}

/// The size of every attachment's block of host uids (and gids): inside its user namespace a
/// service sees ids 0 to 65535, as a full Linux system has them.
pub const UID_BLOCK_SIZE: u32 = 65536;

/// The capabilities a service in block mode (its own user namespace, [`Identity::user_block`])
/// may hold beyond helper.toml's `allowed_capabilities`: what a root master needs to run as
/// the image's users (nginx: chown its directories, switch its workers to www-data, signal
/// them, write its logs, bind its port). In a user namespace each acts only on what the
/// namespace maps: the block's own ids and the files the block owns (a file of an unmapped
/// owner, a host file, stays out of reach: the kernel asks that owner and group both be mapped),
/// processes of the same namespace; never the host's. CAP_NET_BIND_SERVICE in it covers only
/// network namespaces the service's namespace owns: the host network's ports below 1024 go
/// through the supervisor's grants. In kernel order.
pub const NAMESPACE_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
];

/// An attachment's private block of host uids and gids (DESIGN.md §5): the service's user
/// namespace maps 0..`size` inside onto `first`..`first + size` on the host, the image is
/// mounted idmapped the same way, so its files keep their owners inside. berthd hands out
/// blocks from its configured range; the floor checks that the block lies in helper.toml's
/// `user_blocks` range, aligned, clear of `/etc/subuid`, `/etc/subgid` and the host databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct UidBlock {
    pub first: u32,
    // Always [`UID_BLOCK_SIZE`].
    pub size: u32,
}

impl UidBlock {
    /// The block that starts at `first`, of [`UID_BLOCK_SIZE`] ids.
    pub fn at(first: u32) -> UidBlock {
        UidBlock {
            first,
            size: UID_BLOCK_SIZE,
        }
    }

    /// The host id of `inside` (an id of the service's user namespace), if the block has it.
    pub fn host_id(&self, inside: u32) -> Option<u32> {
        (inside < self.size).then(|| self.first.checked_add(inside))?
    }

    /// The id inside the service's user namespace of host id `host`, if it lies in the block.
    pub fn inside_id(&self, host: u32) -> Option<u32> {
        host.checked_sub(self.first)
            .filter(|inside| *inside < self.size)
    }

    /// The last host id of the block.
    pub fn last(&self) -> u32 {
        self.first.saturating_add(self.size.saturating_sub(1))
    }
}

/// The cgroup limits of a service, resolved to numbers by berthd (a percentage of
/// `TasksMax=` against the host's pid limit, of `MemoryMax=` against its memory). `None` is
/// no limit. The helper applies them on cgroup v2, or on the v1 controllers of a hybrid host,
/// and says in the status what it could not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    // MemoryMax=, bytes.
    pub memory_max: Option<u64>,
    // MemoryHigh=, bytes (v1: not available, reported).
    pub memory_high: Option<u64>,
    // TasksMax=, processes and threads.
    pub tasks_max: Option<u64>,
    // CPUQuota=, microseconds of CPU per second of wall time (200% is 2000000).
    pub cpu_quota_per_sec_usec: Option<u64>,
    // CPUWeight=, 1 to 10000 (systemd's default 100).
    pub cpu_weight: Option<u64>,
    // IOWeight=, 1 to 10000 (systemd's default 100).
    pub io_weight: Option<u64>,
}

/// Most credentials one service may have, and most bytes of each and of all.
pub const MAX_CREDENTIALS: usize = 64;
pub const MAX_CREDENTIAL_BYTES: usize = 1024 * 1024;

/// `$CREDENTIALS_DIRECTORY` of `unit` inside its sandbox, where its credentials are files.
pub fn credentials_directory(unit: &str) -> String {
    format!("/run/credentials/{unit}")
}

/// One credential of a service. Its `Debug` leaves the value out, so that no log or error
/// built from a spec ever shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    // Its name: the file name under `$CREDENTIALS_DIRECTORY` (no `/`, not `.` or `..`).
    pub id: String,
    // LoadCredential=/LoadCredentialEncrypted=: an absolute host path the helper reads, only
    // below the roots its config allows, or a bare name the helper looks up in those roots
    // (systemd's credential store).
    pub path: Option<String>,
    // SetCredential=: the value itself; with `path` too, the fallback when the file is missing.
    pub data: Option<String>,
    // LoadCredentialEncrypted=: the file is systemd-creds ciphertext.
    pub encrypted: bool,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("path", &self.path)
            .field(
                "data",
                &self.data.as_ref().map(|d| format!("<{} bytes>", d.len())),
            )
            .field("encrypted", &self.encrypted)
            .finish()
    }
}

/// Who the service runs as. All ids are host ids: with a `user_block`, `uid` is the block's
/// first id plus the image user's uid (what the service sees inside its user namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    // The dynamic uid and gid (the floor allows only its range), or, with `user_block`, the
    // host ids of the image's user and group (User=, Group=; root of the namespace without).
    pub uid: u32,
    pub gid: u32,
    // SupplementaryGroups=, as gids of the same range (or of the block).
    pub supplementary_groups: Vec<u32>,
    // PrivateUsers=: a user namespace in which only root, the service's uid and nobody exist,
    // with /etc/passwd and /etc/group synthesized to match.
    pub private_users: bool,
    // The user and group name the service's uid gets in the synthesized databases (the
    // unit's name, as DynamicUser= does); with `user_block`, the image user's name (display
    // only: the image's own /etc/passwd is what the service reads).
    pub user_name: String,
    // The image's own users (DESIGN.md §5): the service runs in a user namespace that maps
    // 0-65535 onto this block, owned by berthd's uid (so that the supervisor, running as it,
    // may pidfd_getfd the service's sockets), with the image (and its extensions, and the
    // lower layer of the persistent /var) mounted idmapped onto it. `None`: a transient
    // dynamic user (DynamicUser=yes, or a profile before level 3; PrivateUsers=yes adds its
    // three-user namespace). With a block, PrivateUsers=yes keeps its three-user meaning:
    // the service's namespace maps only root, its own uid and gids (onto their block ids);
    // every other id, of the image or the host, shows as nobody.
    #[serde(default)]
    pub user_block: Option<UidBlock>,
}

impl Identity {
    /// The host uid that is root in the service's user namespace: the block's first id, or
    /// host root (0) for a service without a block (no namespace of its own ids).
    pub fn namespace_root(&self) -> u32 {
        self.user_block.map_or(0, |b| b.first)
    }
}

/// Namespaces besides the pid, mount and cgroup ones, which every sandbox has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    // PrivateNetwork=: its own network namespace with only `lo`, up.
    pub private_network: bool,
    // PrivateIPC=.
    pub private_ipc: bool,
    // ProtectHostname=: its own UTS namespace (the host's name, unchangeable).
    pub private_uts: bool,
}

/// The file system the service sees, besides the image itself (read-only, `nosuid,nodev`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct MountPlan {
    pub protect_system: ProtectSystem,
    pub protect_home: ProtectHome,
    // PrivateTmp=: fresh /tmp and /var/tmp.
    pub private_tmp: bool,
    // PrivateDevices=: /dev holds only the pseudo devices (null, zero, full, random, urandom,
    // tty), pts and shm.
    pub private_devices: bool,
    // DeviceAllow=: more device nodes of the host, bound into /dev.
    pub device_allow: Vec<DeviceAccess>,
    pub protect_kernel_tunables: bool,
    pub protect_kernel_modules: bool,
    pub protect_kernel_logs: bool,
    pub protect_control_groups: bool,
    pub protect_proc: ProtectProc,
    pub proc_subset: ProcSubset,
    pub read_only_paths: Vec<SandboxPath>,
    pub read_write_paths: Vec<SandboxPath>,
    pub inaccessible_paths: Vec<SandboxPath>,
    // BindPaths= and BindReadOnlyPaths=.
    pub bind_paths: Vec<BindPath>,
    pub temporary_filesystems: Vec<TemporaryFileSystem>,
    // The attachment's persistent /var (DESIGN.md §5): an overlay with the image's /var as
    // its lower layer and an upper layer in the directory berthd passes with the spawn
    // (`STATE/var/<image>/`, see [`crate::helper::spawn_extra_fds`]); it survives restarts and
    // reattach. Without it /var is the image's, read-only. ProtectSystem=strict still makes it
    // read-only but for ReadWritePaths=.
    #[serde(default)]
    pub persistent_var: bool,
    // The host's files bound read-only over the image's placeholders.
    #[serde(default)]
    pub host_files: HostFiles,
}

/// Host files a service sees in place of the image's (portable services' integration):
/// each is bound read-only over the image's file of that name, which must exist (an empty
/// placeholder, by the portable conventions); an image without it is left as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct HostFiles {
    // `/etc/resolv.conf`, from a copy berthd keeps current in place (a host that replaces its
    // resolv.conf, as resolvers and DHCP clients do, is seen by running services: systemd
    // #17155); the copy travels with the spawn.
    pub resolv_conf: bool,
    // `/etc/hosts`, likewise, and only where the image's own is empty.
    pub hosts: bool,
    // `/etc/machine-id` and `/etc/localtime`: the helper opens the host's own.
    pub machine_id: bool,
    pub localtime: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(rename_all = "lowercase")]
#[zlink(rename_all = "lowercase")]
pub enum ProtectSystem {
    No,
    Yes,
    Full,
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(rename_all = "snake_case")]
#[zlink(rename_all = "snake_case")]
pub enum ProtectHome {
    No,
    Yes,
    // `read-only` in unit files.
    ReadOnly,
    Tmpfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(rename_all = "lowercase")]
#[zlink(rename_all = "lowercase")]
pub enum ProtectProc {
    Default,
    Invisible,
    Ptraceable,
    Noaccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(rename_all = "lowercase")]
#[zlink(rename_all = "lowercase")]
pub enum ProcSubset {
    All,
    Pid,
}

/// A path inside the sandbox (absolute), as ReadOnlyPaths= and its kind take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct SandboxPath {
    pub path: String,
    // The `-` prefix: a path that does not exist is skipped instead of failing the start.
    pub ignore_missing: bool,
}

/// BindPaths=/BindReadOnlyPaths=: a host path bound at a path in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct BindPath {
    // Absolute, on the host; the floor allows only what helper.toml lists.
    pub source: String,
    // Absolute, in the sandbox.
    pub target: String,
    pub read_only: bool,
    // `rbind` (systemd's default) rather than `norbind`.
    pub recursive: bool,
    pub ignore_missing: bool,
}

/// TemporaryFileSystem=: an empty tmpfs over a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct TemporaryFileSystem {
    pub path: String,
    pub read_only: bool,
    // `mode=`, at most 0o7777.
    pub mode: u32,
    // `size=` in bytes; the floor clamps it.
    pub size: u64,
}

/// DeviceAllow=: one host device node, by its path under /dev, and the access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct DeviceAccess {
    pub path: String,
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

/// Capabilities by name (`CAP_NET_BIND_SERVICE`). The permitted and effective sets of a
/// non-root service hold exactly the ambient ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    // CapabilityBoundingSet=: everything else is dropped from the bounding set.
    pub bounding: Vec<String>,
    // AmbientCapabilities=: a subset of `bounding`.
    pub ambient: Vec<String>,
}

/// The seccomp filter, and the directives systemd builds into the same filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct SyscallFilter {
    // SystemCallFilter= resolved to syscall names (no `@groups` left): when `allow` is
    // given, only those syscalls run and every other one fails; `deny` then fails even if
    // allowed. An unknown name is refused, not skipped.
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
    // SystemCallErrorNumber=: the errno a refused syscall returns; `None` kills the process
    // (systemd's default without the directive).
    pub error_number: Option<i32>,
    // SystemCallArchitectures=: `native` and/or the names systemd uses (`x86`, `x32`, ...).
    // Syscalls of any other architecture kill the process.
    pub architectures: Vec<String>,
    // RestrictAddressFamilies=: `None` allows every family.
    pub address_families: Option<AddressFamilies>,
    // RestrictNamespaces=: the namespace kinds (`user`, `net`, `mnt`, `ipc`, `uts`, `pid`,
    // `cgroup`, `time`) the service may still create; `None` allows every kind.
    pub namespaces_allowed: Option<Vec<String>>,
    // RestrictRealtime=.
    pub restrict_realtime: bool,
    // RestrictSUIDSGID=.
    pub restrict_suid_sgid: bool,
    // LockPersonality=.
    pub lock_personality: bool,
    // MemoryDenyWriteExecute=.
    pub memory_deny_write_execute: bool,
}

/// RestrictAddressFamilies=: socket families by name (`AF_UNIX`, `AF_INET`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct AddressFamilies {
    // True: only `families` may be created; false: all but `families`.
    pub allow_list: bool,
    pub families: Vec<String>,
}

/// Landlock restrictions beyond the file system (kernel ABI 6 and later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Landlock {
    // No connecting to abstract unix sockets created outside the service's own domain.
    pub scope_abstract_unix_sockets: bool,
    // No signals to processes outside the service's own domain.
    pub scope_signals: bool,
}

/// One Limit*= resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    // The resource as systemd names it after `Limit`: `NOFILE`, `NPROC`, `CORE`, ...
    pub resource: String,
    // `None` is infinity.
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(rename_all = "lowercase")]
#[zlink(rename_all = "lowercase")]
pub enum KeyringMode {
    // A fresh anonymous session keyring, linked to nothing (berth's only mode so far).
    Private,
    // A fresh session keyring that links the user keyring.
    Shared,
}

/// IPAddressAllow=/IPAddressDeny=, as CIDR prefixes (`10.0.0.0/8`, `::1/128`); the words
/// `any`, `localhost`, `link-local` and `multicast` are expanded by berthd. As in systemd, an
/// address in both lists is allowed; an empty `deny` means no firewall at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct IpFirewall {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(rename_all = "lowercase")]
#[zlink(rename_all = "lowercase")]
pub enum DirectoryKind {
    State,
    Cache,
    Logs,
    Runtime,
    Configuration,
}

/// StateDirectory= and its kind: a directory owned by the service, at the usual place in the
/// sandbox (`/var/lib/NAME`, `/var/cache/NAME`, `/var/log/NAME`, `/run/NAME`, `/etc/NAME`).
/// All but RuntimeDirectory= are kept on the host across runs, each kind below its own
/// directory of berthd's state (README, "Service directories"), and re-owned to the uid of
/// each new run; ConfigurationDirectory= is bound read-only and stays as its owner left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, introspect::CustomType)]
#[serde(deny_unknown_fields)]
pub struct ServiceDirectory {
    pub kind: DirectoryKind,
    // Relative, without `.` or `..` components.
    pub name: String,
    // `StateDirectoryMode=` and its kind, at most 0o7777.
    pub mode: u32,
}

impl DirectoryKind {
    /// Every kind, in the order their host directories travel with a spawn (see
    /// [`crate::helper::SPAWN_FDS`]).
    pub const ALL: [DirectoryKind; 5] = [
        DirectoryKind::State,
        DirectoryKind::Cache,
        DirectoryKind::Logs,
        DirectoryKind::Configuration,
        DirectoryKind::Runtime,
    ];

    /// Where directories of this kind appear in the sandbox (`NAME` goes below).
    pub fn sandbox_parent(self) -> &'static str {
        match self {
            DirectoryKind::State => "/var/lib",
            DirectoryKind::Cache => "/var/cache",
            DirectoryKind::Logs => "/var/log",
            DirectoryKind::Runtime => "/run",
            DirectoryKind::Configuration => "/etc",
        }
    }

    /// The directive, as unit files spell it.
    pub fn directive(self) -> &'static str {
        match self {
            DirectoryKind::State => "StateDirectory",
            DirectoryKind::Cache => "CacheDirectory",
            DirectoryKind::Logs => "LogsDirectory",
            DirectoryKind::Runtime => "RuntimeDirectory",
            DirectoryKind::Configuration => "ConfigurationDirectory",
        }
    }

    /// The variable that tells the service where its directories of this kind are (as
    /// systemd sets it: the absolute paths, `:`-separated).
    pub fn environment_variable(self) -> &'static str {
        match self {
            DirectoryKind::State => "STATE_DIRECTORY",
            DirectoryKind::Cache => "CACHE_DIRECTORY",
            DirectoryKind::Logs => "LOGS_DIRECTORY",
            DirectoryKind::Runtime => "RUNTIME_DIRECTORY",
            DirectoryKind::Configuration => "CONFIGURATION_DIRECTORY",
        }
    }

    /// False for RuntimeDirectory=, which lives in the sandbox's own `/run` and goes with it;
    /// the others are kept on the host, below a directory berthd passes with the spawn.
    pub fn kept_on_host(self) -> bool {
        self != DirectoryKind::Runtime
    }

    /// Whether the service may write to it (ConfigurationDirectory= is bound read-only and
    /// never re-owned: it belongs to the administrator).
    pub fn owned_by_service(self) -> bool {
        self != DirectoryKind::Configuration
    }
}

impl ServiceDirectory {
    /// Checks `name`: relative, at most [`MAX_PATH_BYTES`], no empty, `.` or `..` component,
    /// no NUL or other control character.
    pub fn check_name(name: &str) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_PATH_BYTES {
            return Err(format!("must be 1 to {MAX_PATH_BYTES} bytes"));
        }
        let bad = name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.chars().any(char::is_control));
        if bad {
            return Err("must be relative, without empty, '.' or '..' components".into());
        }
        Ok(())
    }

    /// The absolute path of the directory in the sandbox, e.g. `/var/lib/NAME`.
    pub fn sandbox_path(&self) -> String {
        format!("{}/{}", self.kind.sandbox_parent(), self.name)
    }

    /// The kinds of `directories` kept on the host, each once, in [`DirectoryKind::ALL`]
    /// order: the host directories berthd passes with a spawn, one per kind.
    pub fn host_kinds(directories: &[ServiceDirectory]) -> Vec<DirectoryKind> {
        DirectoryKind::ALL
            .into_iter()
            .filter(|k| k.kept_on_host() && directories.iter().any(|d| d.kind == *k))
            .collect()
    }
}

impl SandboxSpec {
    /// The sandbox berth had before specs existed, for `uid`: every namespace, no
    /// capabilities, no_new_privs, read-only image, private /tmp, /dev and /proc masking, and
    /// Landlock's scoping of abstract unix sockets and signals (ISSUE 7 item 3). Profiles
    /// start from here and only tighten.
    pub fn baseline(uid: u32, gid: u32, user_name: &str) -> SandboxSpec {
        SandboxSpec {
            profile: String::new(),
            identity: Identity {
                uid,
                gid,
                supplementary_groups: Vec::new(),
                private_users: false,
                user_name: user_name.to_owned(),
                user_block: None,
            },
            namespaces: Namespaces {
                private_network: false,
                private_ipc: true,
                private_uts: true,
            },
            mounts: MountPlan {
                protect_system: ProtectSystem::Strict,
                protect_home: ProtectHome::No,
                private_tmp: true,
                private_devices: true,
                device_allow: Vec::new(),
                protect_kernel_tunables: true,
                protect_kernel_modules: false,
                protect_kernel_logs: false,
                protect_control_groups: false,
                protect_proc: ProtectProc::Default,
                proc_subset: ProcSubset::All,
                read_only_paths: Vec::new(),
                read_write_paths: Vec::new(),
                inaccessible_paths: Vec::new(),
                bind_paths: Vec::new(),
                temporary_filesystems: Vec::new(),
                persistent_var: false,
                host_files: HostFiles::default(),
            },
            capabilities: Capabilities {
                bounding: Vec::new(),
                ambient: Vec::new(),
            },
            no_new_privileges: true,
            syscalls: SyscallFilter {
                allow: None,
                deny: Vec::new(),
                error_number: None,
                architectures: Vec::new(),
                address_families: None,
                namespaces_allowed: None,
                restrict_realtime: false,
                restrict_suid_sgid: false,
                lock_personality: false,
                memory_deny_write_execute: false,
            },
            // Even on the host network, the abstract sockets of the host and of other services
            // stay out of reach (where the kernel has Landlock scopes).
            landlock: Landlock {
                scope_abstract_unix_sockets: true,
                scope_signals: true,
            },
            rlimits: Vec::new(),
            umask: 0o022,
            keyring: KeyringMode::Private,
            firewall: IpFirewall {
                allow: Vec::new(),
                deny: Vec::new(),
            },
            directories: Vec::new(),
            // berthd releases every dynamic uid through the helper, which removes its IPC.
            remove_ipc: true,
            resources: Resources::default(),
            credentials: Vec::new(),
            privileged_ports: Vec::new(),
            capture_log_sockets: false,
        }
    }
}

/// Adds every named type of the spec to an interface description.
pub fn describe(builder: crate::idl::InterfaceBuilder) -> crate::idl::InterfaceBuilder {
    builder
        .custom_type::<SandboxSpec>()
        .custom_type::<Identity>()
        .custom_type::<UidBlock>()
        .custom_type::<HostFiles>()
        .custom_type::<Namespaces>()
        .custom_type::<MountPlan>()
        .custom_type::<ProtectSystem>()
        .custom_type::<ProtectHome>()
        .custom_type::<ProtectProc>()
        .custom_type::<ProcSubset>()
        .custom_type::<SandboxPath>()
        .custom_type::<BindPath>()
        .custom_type::<TemporaryFileSystem>()
        .custom_type::<DeviceAccess>()
        .custom_type::<Capabilities>()
        .custom_type::<SyscallFilter>()
        .custom_type::<AddressFamilies>()
        .custom_type::<Landlock>()
        .custom_type::<Rlimit>()
        .custom_type::<KeyringMode>()
        .custom_type::<IpFirewall>()
        .custom_type::<DirectoryKind>()
        .custom_type::<ServiceDirectory>()
        .custom_type::<Resources>()
        .custom_type::<Credential>()
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    #[test]
    fn a_credential_s_debug_shows_its_value_s_length_only() {
        let credential = Credential {
            id: "db".into(),
            path: None,
            data: Some("hunter2".into()),
            encrypted: false,
        };

        let shown = format!("{credential:?}");

        assert!(
            shown.contains("<7 bytes>") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

#[cfg(test)]
mod uid_block_tests {
    use super::*;

    #[test]
    fn a_uid_block_maps_inside_ids_onto_its_host_ids_and_back() {
        let block = UidBlock::at(524_288);

        assert_eq!(block.host_id(100), Some(524_388));
        assert_eq!(block.inside_id(524_388), Some(100));
        assert_eq!(block.last(), 589_823);
    }

    #[test]
    fn ids_outside_a_uid_block_have_no_counterpart() {
        let block = UidBlock::at(524_288);

        assert_eq!(block.host_id(65_536), None);
        assert_eq!(block.inside_id(524_287), None);
        assert_eq!(block.inside_id(589_824), None);
        assert_eq!(UidBlock::at(u32::MAX - 10).host_id(100), None);
    }
}
