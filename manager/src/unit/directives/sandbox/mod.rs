//! The sandbox's directives, in one table (ISSUE 7 item 1): each row is a directive of
//! DESIGN.md §5, its value read with systemd's syntax (`systemd.exec(5)`) into a [`Layer`],
//! and the layer then laid over a base [`SandboxSpec`] by [`merge`].
//!
//! A spec is built in layers: the profile over [`SandboxSpec::baseline`], the image's unit
//! file over the profile, the host's drop-ins over that. Within one layer, directives combine
//! as systemd combines them (later assignments win, `~` lists, empty assignments reset); a
//! layer then only tightens its base: a value that would loosen it is ignored with a warning
//! naming the file and line. Only a `trusted` profile replaces instead of tightening. Adding a
//! directive is a row in [`TABLE`] and, for a new kind of value, its arm in `merge`.

mod credentials;
mod firewall;
mod merge;
mod parse;
mod resources;

use std::collections::{BTreeMap, BTreeSet};

use berth_protocol::ip_prefix::IpPrefix;
use berth_protocol::sandbox::{
    BindPath, DeviceAccess, DirectoryKind, KeyringMode, ProcSubset, ProtectHome, ProtectProc,
    ProtectSystem, Rlimit, SandboxPath, SandboxSpec, TemporaryFileSystem,
};
use berth_protocol::syscall_groups;

use super::super::kernel_names::{
    ADDRESS_FAMILIES, ARCHITECTURES, CAPABILITIES, NAMESPACE_KINDS, errno_number,
    native_architecture,
};
use super::super::specifiers::resolve_specifiers;
use super::super::syntax::{Assignment, UnitFile};
use super::super::values::{parse_boolean, parse_mode};
use super::shorten;
use parse::{Expected, LimitUnit, RLIMITS};
use resources::Limit;

/// Where a layer of directives comes from, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A profile (built in or the admin's): binds host paths and devices; `trusted` replaces
    /// what it sets instead of only tightening it.
    Profile { trusted: bool },
    /// The image's own unit file: hostile, so it only tightens and binds nothing of the host.
    Image,
    /// The host's drop-ins (the admin's `edit` and `set-property`): only tighten, but may bind
    /// host paths and devices (the helper's floor still allows only what helper.toml lists).
    Host,
}

/// The sandbox of unit `name`: `base` (its profile's spec) tightened by the unit's own file
/// (`files[0]`, the image's), then by its host drop-ins (the rest, in order), with one
/// warning per directive it ignored.
pub fn sandbox_from(
    name: &str,
    base: &SandboxSpec,
    files: &[(&str, &UnitFile)],
) -> (SandboxSpec, Vec<String>) {
    let (unit, drop_ins) = match files.split_first() {
        Some((unit, drop_ins)) => (std::slice::from_ref(unit), drop_ins),
        None => (files, files),
    };
    let (spec, mut warnings) = apply_layer(name, base, unit, Origin::Image);
    let (spec, more) = apply_layer(name, &spec, drop_ins, Origin::Host);
    warnings.extend(more);
    (spec, warnings)
}

/// A profile's text (drop-in syntax, its `[Service]` section) laid over `base`, normally
/// [`SandboxSpec::baseline`]: what it sets only tightens the base unless it is `trusted`.
/// `name` is the unit the profile is for (its `%` specifiers); `label` names the profile in
/// warnings (`profile default@1`).
pub fn profile_sandbox(
    name: &str,
    base: &SandboxSpec,
    label: &str,
    profile: &UnitFile,
    trusted: bool,
) -> (SandboxSpec, Vec<String>) {
    apply_layer(name, base, &[(label, profile)], Origin::Profile { trusted })
}

/// Reads the `[Service]` sandbox directives of `files` as one layer and lays it over `base`.
pub fn apply_layer(
    name: &str,
    base: &SandboxSpec,
    files: &[(&str, &UnitFile)],
    origin: Origin,
) -> (SandboxSpec, Vec<String>) {
    let mut layer = Layer {
        image_users: crate::profile::uses_image_users(&base.profile),
        ..Layer::default()
    };
    for (label, file) in files {
        for section in file.sections().iter().filter(|s| s.name == "Service") {
            for a in &section.assignments {
                if let Some(row) = row(&a.key) {
                    layer.read(row, name, label, a, origin);
                }
            }
        }
    }
    layer.imply_dynamic_user();
    merge::merge(base, layer, origin)
}

/// Whether `key` is one of the table's directives (the `[Service]` reader leaves those here).
pub fn is_sandbox_directive(key: &str) -> bool {
    row(key).is_some()
}

fn row(key: &str) -> Option<&'static Row> {
    TABLE.iter().find(|row| row.0 == key)
}

/// A directive and what its value does to a layer.
struct Row(&'static str, Action);

#[derive(Clone, Copy)]
enum Action {
    /// A boolean protection: `yes` tightens.
    Flag(Flag),
    /// Any other value, read by its function.
    Read(fn(&mut Layer, &Source, &str) -> Result<(), Refused>),
}

/// Why an assignment had no effect.
enum Refused {
    /// The value is not of the directive's syntax.
    Invalid(Expected),
    /// berth never does what it asks, whatever the base.
    Never(&'static str),
}

const INVALID_BOOLEAN: Refused = Refused::Invalid("a boolean");

/// THE table: every sandbox directive of DESIGN.md §5 berth reads.
const TABLE: &[Row] = &[
    // Namespaces and identity.
    Row("PrivateNetwork", Action::Flag(Flag::PrivateNetwork)),
    Row("PrivateIPC", Action::Flag(Flag::PrivateIpc)),
    Row("ProtectHostname", Action::Flag(Flag::ProtectHostname)),
    Row("PrivateUsers", Action::Flag(Flag::PrivateUsers)),
    Row("DynamicUser", Action::Read(Layer::dynamic_user)),
    // The mount plan.
    Row("ProtectSystem", Action::Read(Layer::protect_system)),
    Row("ProtectHome", Action::Read(Layer::protect_home)),
    Row("PrivateTmp", Action::Flag(Flag::PrivateTmp)),
    Row("PrivateDevices", Action::Flag(Flag::PrivateDevices)),
    Row("DeviceAllow", Action::Read(Layer::device_allow)),
    Row(
        "ProtectKernelTunables",
        Action::Flag(Flag::ProtectKernelTunables),
    ),
    Row(
        "ProtectKernelModules",
        Action::Flag(Flag::ProtectKernelModules),
    ),
    Row("ProtectKernelLogs", Action::Flag(Flag::ProtectKernelLogs)),
    Row(
        "ProtectControlGroups",
        Action::Flag(Flag::ProtectControlGroups),
    ),
    Row("ProtectProc", Action::Read(Layer::protect_proc)),
    Row("ProcSubset", Action::Read(Layer::proc_subset)),
    Row("ReadOnlyPaths", Action::Read(Layer::read_only_paths)),
    Row("ReadWritePaths", Action::Read(Layer::read_write_paths)),
    Row("InaccessiblePaths", Action::Read(Layer::inaccessible_paths)),
    // The names before systemd 231, which it still accepts with the same meaning (stock units
    // use them: redis-server's ReadWriteDirectories=-/etc/redis).
    Row("ReadOnlyDirectories", Action::Read(Layer::read_only_paths)),
    Row(
        "ReadWriteDirectories",
        Action::Read(Layer::read_write_paths),
    ),
    Row(
        "InaccessibleDirectories",
        Action::Read(Layer::inaccessible_paths),
    ),
    Row("BindPaths", Action::Read(Layer::bind_paths)),
    Row(
        "BindReadOnlyPaths",
        Action::Read(Layer::bind_read_only_paths),
    ),
    Row(
        "TemporaryFileSystem",
        Action::Read(Layer::temporary_filesystem),
    ),
    // Privileges.
    Row("NoNewPrivileges", Action::Flag(Flag::NoNewPrivileges)),
    Row(
        "CapabilityBoundingSet",
        Action::Read(Layer::capability_bounding_set),
    ),
    Row(
        "AmbientCapabilities",
        Action::Read(Layer::ambient_capabilities),
    ),
    // What the syscall filter carries.
    Row("SystemCallFilter", Action::Read(Layer::system_call_filter)),
    Row(
        "SystemCallErrorNumber",
        Action::Read(Layer::system_call_error_number),
    ),
    Row(
        "SystemCallArchitectures",
        Action::Read(Layer::system_call_architectures),
    ),
    Row(
        "RestrictAddressFamilies",
        Action::Read(Layer::restrict_address_families),
    ),
    Row(
        "RestrictNamespaces",
        Action::Read(Layer::restrict_namespaces),
    ),
    Row("RestrictRealtime", Action::Flag(Flag::RestrictRealtime)),
    Row("RestrictSUIDSGID", Action::Flag(Flag::RestrictSuidSgid)),
    Row("LockPersonality", Action::Flag(Flag::LockPersonality)),
    Row(
        "MemoryDenyWriteExecute",
        Action::Flag(Flag::MemoryDenyWriteExecute),
    ),
    Row("ProtectClock", Action::Read(Layer::protect_clock)),
    // The firewall of a service on the host network.
    Row("IPAddressAllow", Action::Read(Layer::ip_address_allow)),
    Row("IPAddressDeny", Action::Read(Layer::ip_address_deny)),
    // Process properties.
    Row("UMask", Action::Read(Layer::umask)),
    Row("KeyringMode", Action::Read(Layer::keyring_mode)),
    Row("RemoveIPC", Action::Flag(Flag::RemoveIpc)),
    Row("LimitCPU", Action::Read(|l, s, v| l.limit("CPU", s, v))),
    Row("LimitFSIZE", Action::Read(|l, s, v| l.limit("FSIZE", s, v))),
    Row("LimitDATA", Action::Read(|l, s, v| l.limit("DATA", s, v))),
    Row("LimitSTACK", Action::Read(|l, s, v| l.limit("STACK", s, v))),
    Row("LimitCORE", Action::Read(|l, s, v| l.limit("CORE", s, v))),
    Row("LimitRSS", Action::Read(|l, s, v| l.limit("RSS", s, v))),
    Row(
        "LimitNOFILE",
        Action::Read(|l, s, v| l.limit("NOFILE", s, v)),
    ),
    Row("LimitAS", Action::Read(|l, s, v| l.limit("AS", s, v))),
    Row("LimitNPROC", Action::Read(|l, s, v| l.limit("NPROC", s, v))),
    Row(
        "LimitMEMLOCK",
        Action::Read(|l, s, v| l.limit("MEMLOCK", s, v)),
    ),
    Row("LimitLOCKS", Action::Read(|l, s, v| l.limit("LOCKS", s, v))),
    Row(
        "LimitSIGPENDING",
        Action::Read(|l, s, v| l.limit("SIGPENDING", s, v)),
    ),
    Row(
        "LimitMSGQUEUE",
        Action::Read(|l, s, v| l.limit("MSGQUEUE", s, v)),
    ),
    Row("LimitNICE", Action::Read(|l, s, v| l.limit("NICE", s, v))),
    Row(
        "LimitRTPRIO",
        Action::Read(|l, s, v| l.limit("RTPRIO", s, v)),
    ),
    Row(
        "LimitRTTIME",
        Action::Read(|l, s, v| l.limit("RTTIME", s, v)),
    ),
    // The service's cgroup limits.
    Row(
        "MemoryMax",
        Action::Read(|l, s, v| l.resource(Limit::MemoryMax, s, v)),
    ),
    Row(
        "MemoryHigh",
        Action::Read(|l, s, v| l.resource(Limit::MemoryHigh, s, v)),
    ),
    Row(
        "TasksMax",
        Action::Read(|l, s, v| l.resource(Limit::TasksMax, s, v)),
    ),
    Row(
        "CPUQuota",
        Action::Read(|l, s, v| l.resource(Limit::CpuQuota, s, v)),
    ),
    Row(
        "CPUWeight",
        Action::Read(|l, s, v| l.resource(Limit::CpuWeight, s, v)),
    ),
    Row(
        "IOWeight",
        Action::Read(|l, s, v| l.resource(Limit::IoWeight, s, v)),
    ),
    // Service directories.
    Row(
        "StateDirectory",
        Action::Read(|l, s, v| l.directory(0, s, v)),
    ),
    Row(
        "CacheDirectory",
        Action::Read(|l, s, v| l.directory(1, s, v)),
    ),
    Row(
        "LogsDirectory",
        Action::Read(|l, s, v| l.directory(2, s, v)),
    ),
    Row(
        "RuntimeDirectory",
        Action::Read(|l, s, v| l.directory(3, s, v)),
    ),
    Row(
        "ConfigurationDirectory",
        Action::Read(|l, s, v| l.directory(4, s, v)),
    ),
    Row(
        "StateDirectoryMode",
        Action::Read(|l, s, v| l.directory_mode(0, s, v)),
    ),
    Row(
        "CacheDirectoryMode",
        Action::Read(|l, s, v| l.directory_mode(1, s, v)),
    ),
    Row(
        "LogsDirectoryMode",
        Action::Read(|l, s, v| l.directory_mode(2, s, v)),
    ),
    Row(
        "RuntimeDirectoryMode",
        Action::Read(|l, s, v| l.directory_mode(3, s, v)),
    ),
    Row(
        "ConfigurationDirectoryMode",
        Action::Read(|l, s, v| l.directory_mode(4, s, v)),
    ),
    // Credentials.
    Row("LoadCredential", Action::Read(Layer::load_credential)),
    Row(
        "LoadCredentialEncrypted",
        Action::Read(Layer::load_credential_encrypted),
    ),
    Row(
        credentials::SET_CREDENTIAL,
        Action::Read(Layer::set_credential),
    ),
];

/// The rows that reach the host's own paths or devices: a profile's or a host drop-in's to
/// give, ignored in an image's unit.
const HOST_ONLY: &[&str] = &["BindPaths", "BindReadOnlyPaths", "DeviceAllow"];

/// The directory kinds in the order of the table's rows.
const DIRECTORY_KINDS: [DirectoryKind; 5] = [
    DirectoryKind::State,
    DirectoryKind::Cache,
    DirectoryKind::Logs,
    DirectoryKind::Runtime,
    DirectoryKind::Configuration,
];

/// systemd's mode for a service directory without its `*DirectoryMode=`.
const DEFAULT_DIRECTORY_MODE: u32 = 0o755;

/// The boolean protections, each one field of the spec where `true` is the tighter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Flag {
    PrivateNetwork,
    PrivateIpc,
    ProtectHostname,
    PrivateUsers,
    PrivateTmp,
    PrivateDevices,
    ProtectKernelTunables,
    ProtectKernelModules,
    ProtectKernelLogs,
    ProtectControlGroups,
    NoNewPrivileges,
    RestrictRealtime,
    RestrictSuidSgid,
    LockPersonality,
    MemoryDenyWriteExecute,
    RemoveIpc,
}

impl Flag {
    fn field(self, spec: &mut SandboxSpec) -> &mut bool {
        match self {
            Flag::PrivateNetwork => &mut spec.namespaces.private_network,
            Flag::PrivateIpc => &mut spec.namespaces.private_ipc,
            Flag::ProtectHostname => &mut spec.namespaces.private_uts,
            Flag::PrivateUsers => &mut spec.identity.private_users,
            Flag::PrivateTmp => &mut spec.mounts.private_tmp,
            Flag::PrivateDevices => &mut spec.mounts.private_devices,
            Flag::ProtectKernelTunables => &mut spec.mounts.protect_kernel_tunables,
            Flag::ProtectKernelModules => &mut spec.mounts.protect_kernel_modules,
            Flag::ProtectKernelLogs => &mut spec.mounts.protect_kernel_logs,
            Flag::ProtectControlGroups => &mut spec.mounts.protect_control_groups,
            Flag::NoNewPrivileges => &mut spec.no_new_privileges,
            Flag::RestrictRealtime => &mut spec.syscalls.restrict_realtime,
            Flag::RestrictSuidSgid => &mut spec.syscalls.restrict_suid_sgid,
            Flag::LockPersonality => &mut spec.syscalls.lock_personality,
            Flag::MemoryDenyWriteExecute => &mut spec.syscalls.memory_deny_write_execute,
            Flag::RemoveIpc => &mut spec.remove_ipc,
        }
    }
}

/// One assignment, as warnings name it.
#[derive(Debug, Clone)]
struct Source {
    label: String,
    line: usize,
    key: String,
    value: String,
}

impl Source {
    /// `hello.service:3: [Service] Key=value`, hostile parts shortened.
    fn at(&self) -> String {
        format!(
            "{}:{}: [Service] {}={}",
            self.label,
            self.line,
            shorten(&self.key),
            shorten(&self.value)
        )
    }
}

/// A value and the assignment that set it last.
type Set<T> = Option<(T, Source)>;

/// A list that assignments append to and an empty assignment resets.
#[derive(Debug)]
struct Listed<T> {
    items: Vec<(T, Source)>,
    /// The last empty assignment, if one reset the list.
    reset: Option<Source>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            items: Vec::new(),
            reset: None,
        }
    }
}

impl<T> Listed<T> {
    fn push_all(&mut self, items: Vec<T>, source: &Source) {
        self.items
            .extend(items.into_iter().map(|item| (item, source.clone())));
    }

    fn reset(&mut self, source: &Source) {
        self.items.clear();
        self.reset = Some(source.clone());
    }

    fn touched(&self) -> bool {
        self.reset.is_some() || !self.items.is_empty()
    }
}

/// A set of names built with systemd's `~` lists: the names allowed (`None`: every name, as
/// before any assignment), the names assignments listed as allowed (what a loosening warning
/// names), the assignment that set it last and the last empty one.
#[derive(Debug, Default)]
struct NameSet {
    allowed: Option<BTreeSet<String>>,
    asked: BTreeSet<String>,
    last: Option<Source>,
    reset: Option<Source>,
}

impl NameSet {
    /// systemd's rule for these lists: the first assignment sets the set (a `~` one to every
    /// name but those listed); later ones add their names, or with `~` remove them.
    fn apply(&mut self, list: parse::NameList, universe: &[&str], source: &Source) {
        let names = list.names;
        self.allowed = Some(match (self.allowed.take(), list.inverted) {
            (None, false) => names.clone(),
            (None, true) => universe
                .iter()
                .map(|n| (*n).to_owned())
                .filter(|n| !names.contains(n))
                .collect(),
            (Some(mut set), false) => {
                set.extend(names.iter().cloned());
                set
            }
            (Some(set), true) => set.difference(&names).cloned().collect(),
        });
        if list.inverted {
            self.asked.retain(|n| !names.contains(n));
        } else {
            self.asked.extend(names);
        }
        self.last = Some(source.clone());
    }

    /// Sets it to exactly `allowed` (`None`: unrestricted), as a boolean or empty value does.
    fn set(&mut self, allowed: Option<BTreeSet<String>>, source: &Source) {
        self.allowed = allowed;
        self.asked.clear();
        self.last = Some(source.clone());
        if self.allowed.is_none() {
            self.reset = Some(source.clone());
        }
    }
}

/// SystemCallFilter= as systemd builds it: allow-list or deny-list mode, chosen by the first
/// assignment, and the names (groups resolved; see [`expand_syscalls`]).
#[derive(Debug, Default)]
struct SyscallSet {
    mode: Option<(bool, BTreeSet<String>)>,
    asked: BTreeSet<String>,
    last: Option<Source>,
    reset: Option<Source>,
    /// `NAME:ERRNO` entries, whose errno berth does not carry (the filter's one applies).
    per_call_errno: Option<Source>,
}

/// One layer's sandbox directives, read as systemd reads them, before they meet the base.
#[derive(Debug, Default)]
struct Layer {
    flags: BTreeMap<Flag, (bool, Source)>,
    protect_system: Set<ProtectSystem>,
    protect_home: Set<ProtectHome>,
    protect_proc: Set<ProtectProc>,
    proc_subset: Set<ProcSubset>,
    keyring: Set<KeyringMode>,
    read_only: Listed<SandboxPath>,
    read_write: Listed<SandboxPath>,
    inaccessible: Listed<SandboxPath>,
    binds: Listed<BindPath>,
    tmpfs: Listed<TemporaryFileSystem>,
    devices: Listed<DeviceAccess>,
    directories: [Listed<String>; 5],
    directory_modes: [Set<u32>; 5],
    bounding: NameSet,
    ambient: NameSet,
    syscalls: SyscallSet,
    error_number: Set<Option<i32>>,
    architectures: NameSet,
    families: NameSet,
    namespaces: NameSet,
    /// Per resource: the limit, or `None` after an empty assignment.
    rlimits: BTreeMap<String, (Option<Rlimit>, Source)>,
    /// Per cgroup limit: the number, `None` for infinity.
    resources: BTreeMap<Limit, (Option<u64>, Source)>,
    umask: Set<u32>,
    dynamic_user: Option<Source>,
    protect_clock: Set<bool>,
    ip_allow: Listed<IpPrefix>,
    ip_deny: Listed<IpPrefix>,
    credentials: Vec<credentials::Step>,
    warnings: Vec<String>,
    /// The base's profile runs services as the image's own users (level 3 on), so that
    /// `DynamicUser=no` is what it says.
    image_users: bool,
}

impl Layer {
    /// Reads one assignment through its row; a value it cannot use is warned about.
    fn read(&mut self, row: &Row, unit: &str, label: &str, a: &Assignment, origin: Origin) {
        let (value, unresolved) = resolve_specifiers(&a.value, unit, true);
        let source = Source {
            label: label.to_owned(),
            line: a.line,
            key: a.key.clone(),
            value: credentials::shown_value(&a.key, &a.value),
        };
        for spec in unresolved {
            self.warnings.push(format!(
                "{label}:{}: [Service] {}= uses specifier %{spec}, which is not supported yet; \
                 left as is",
                a.line, a.key
            ));
        }
        let result = match row.1 {
            Action::Flag(flag) => match parse_boolean(&value) {
                Some(on) => {
                    self.flags.insert(flag, (on, source.clone()));
                    Ok(())
                }
                // An empty value: back to systemd's default, as if the layer never set it.
                None if value.is_empty() => {
                    self.flags.remove(&flag);
                    Ok(())
                }
                None => Err(INVALID_BOOLEAN),
            },
            // Host paths and devices are the admin's to give, never an image's.
            Action::Read(_)
                if origin == Origin::Image && HOST_ONLY.contains(&row.0) && !value.is_empty() =>
            {
                Err(Refused::Never(
                    "an image's unit may not reach host paths or devices (a profile or a host \
                     drop-in may)",
                ))
            }
            // A credential file of the host, likewise; a name in its credential store is fine.
            Action::Read(_)
                if origin == Origin::Image && credentials::names_host_path(row.0, &value) =>
            {
                Err(Refused::Never(
                    "an image's unit may name only credentials of the host's credential store,                      not host paths (a profile or a host drop-in may)",
                ))
            }
            Action::Read(read) => read(self, &source, &value),
        };
        match result {
            Ok(()) => {}
            Err(Refused::Invalid(expected)) => self
                .warnings
                .push(format!("{} is not {expected}, ignored", source.at())),
            Err(Refused::Never(why)) => self
                .warnings
                .push(format!("{} is ignored: {why}", source.at())),
        }
    }

    fn warn_unknown(&mut self, source: &Source, what: &str, unknown: &[String]) {
        if !unknown.is_empty() {
            let names: Vec<String> = unknown.iter().take(8).map(|n| shorten(n)).collect();
            self.warnings.push(format!(
                "{}:{}: [Service] {}= unknown {what} ignored: {}",
                source.label,
                source.line,
                source.key,
                names.join(" ")
            ));
        }
    }

    /// DynamicUser=: below profile level 3 every berth service runs as a dynamic user; from it
    /// on `no` (the image's own users) is the default. `yes` adds what systemd implies with it
    /// (see [`Layer::imply_dynamic_user`]).
    fn dynamic_user(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        match parse_boolean(value) {
            Some(true) => {
                self.dynamic_user = Some(source.clone());
                Ok(())
            }
            Some(false) if self.image_users => {
                self.dynamic_user = None;
                Ok(())
            }
            Some(false) => Err(Refused::Never("berth runs every service as a dynamic user")),
            None if value.is_empty() => {
                self.dynamic_user = None;
                Ok(())
            }
            None => Err(INVALID_BOOLEAN),
        }
    }

    /// systemd.exec(5): DynamicUser=yes implies PrivateTmp=, RemoveIPC=, RestrictSUIDSGID=,
    /// ProtectSystem=strict and at least ProtectHome=read-only, whatever else the unit says.
    fn imply_dynamic_user(&mut self) {
        let Some(source) = self.dynamic_user.clone() else {
            return;
        };
        for flag in [Flag::PrivateTmp, Flag::RemoveIpc, Flag::RestrictSuidSgid] {
            self.flags.insert(flag, (true, source.clone()));
        }
        self.protect_system = Some((ProtectSystem::Strict, source.clone()));
        if self
            .protect_home
            .as_ref()
            .is_none_or(|(home, _)| *home == ProtectHome::No)
        {
            self.protect_home = Some((ProtectHome::ReadOnly, source));
        }
    }

    fn protect_system(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.protect_system = None;
            return Ok(());
        }
        let level = match (parse_boolean(value), value) {
            (Some(false), _) => ProtectSystem::No,
            (Some(true), _) => ProtectSystem::Yes,
            (None, "full") => ProtectSystem::Full,
            (None, "strict") => ProtectSystem::Strict,
            _ => return Err(Refused::Invalid("a boolean, full or strict")),
        };
        self.protect_system = Some((level, source.clone()));
        Ok(())
    }

    fn protect_home(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.protect_home = None;
            return Ok(());
        }
        let level = match (parse_boolean(value), value) {
            (Some(false), _) => ProtectHome::No,
            (Some(true), _) => ProtectHome::Yes,
            (None, "read-only") => ProtectHome::ReadOnly,
            (None, "tmpfs") => ProtectHome::Tmpfs,
            _ => return Err(Refused::Invalid("a boolean, read-only or tmpfs")),
        };
        self.protect_home = Some((level, source.clone()));
        Ok(())
    }

    fn protect_proc(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.protect_proc = None;
            return Ok(());
        }
        let level = match value {
            "default" => ProtectProc::Default,
            "ptraceable" => ProtectProc::Ptraceable,
            "invisible" => ProtectProc::Invisible,
            "noaccess" => ProtectProc::Noaccess,
            _ => {
                return Err(Refused::Invalid(
                    "default, ptraceable, invisible or noaccess",
                ));
            }
        };
        self.protect_proc = Some((level, source.clone()));
        Ok(())
    }

    fn proc_subset(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.proc_subset = None;
            return Ok(());
        }
        let subset = match value {
            "all" => ProcSubset::All,
            "pid" => ProcSubset::Pid,
            _ => return Err(Refused::Invalid("all or pid")),
        };
        self.proc_subset = Some((subset, source.clone()));
        Ok(())
    }

    fn keyring_mode(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.keyring = None;
            return Ok(());
        }
        let mode = match value {
            "private" => KeyringMode::Private,
            "shared" => KeyringMode::Shared,
            "inherit" => {
                return Err(Refused::Never(
                    "a service never shares the keyring of berthd",
                ));
            }
            _ => return Err(Refused::Invalid("private, shared or inherit")),
        };
        self.keyring = Some((mode, source.clone()));
        Ok(())
    }

    fn paths(list: &mut Listed<SandboxPath>, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            list.reset(source);
            return Ok(());
        }
        let paths = parse::sandbox_paths(value).map_err(Refused::Invalid)?;
        list.push_all(paths, source);
        Ok(())
    }

    fn ip_address_allow(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        self.ip_addresses(false, source, value);
        Ok(())
    }

    fn ip_address_deny(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        self.ip_addresses(true, source, value);
        Ok(())
    }

    /// IPAddressAllow=/IPAddressDeny=: a word that is no prefix is ignored, not the value.
    fn ip_addresses(&mut self, deny: bool, source: &Source, value: &str) {
        let list = if deny {
            &mut self.ip_deny
        } else {
            &mut self.ip_allow
        };
        if value.is_empty() {
            list.reset(source);
            return;
        }
        let (prefixes, invalid) = firewall::parse_list(value);
        list.push_all(prefixes, source);
        self.warn_unknown(source, "address prefixes", &invalid);
    }

    fn read_only_paths(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        Self::paths(&mut self.read_only, source, value)
    }

    fn read_write_paths(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        Self::paths(&mut self.read_write, source, value)
    }

    fn inaccessible_paths(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        Self::paths(&mut self.inaccessible, source, value)
    }

    fn binds(&mut self, source: &Source, value: &str, read_only: bool) -> Result<(), Refused> {
        if value.is_empty() {
            // One list holds both directives; each resets only its own entries, as systemd's
            // two lists do.
            self.binds
                .items
                .retain(|(bind, _)| bind.read_only != read_only);
            self.binds.reset = Some(source.clone());
            return Ok(());
        }
        let binds = parse::bind_paths(value, read_only).map_err(Refused::Invalid)?;
        self.binds.push_all(binds, source);
        Ok(())
    }

    fn bind_paths(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        self.binds(source, value, false)
    }

    fn bind_read_only_paths(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        self.binds(source, value, true)
    }

    fn temporary_filesystem(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.tmpfs.reset(source);
            return Ok(());
        }
        let fs = parse::temporary_filesystems(value).map_err(Refused::Invalid)?;
        self.tmpfs.push_all(fs, source);
        Ok(())
    }

    fn device_allow(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.devices.reset(source);
            return Ok(());
        }
        let device = parse::device_access(value).map_err(Refused::Invalid)?;
        self.devices.push_all(vec![device], source);
        Ok(())
    }

    fn capabilities(
        set: &mut NameSet,
        source: &Source,
        value: &str,
        empty: Option<BTreeSet<String>>,
    ) -> Result<Vec<String>, Refused> {
        if value.is_empty() {
            set.set(empty, source);
            return Ok(Vec::new());
        }
        let list =
            parse::name_list(value, |n| CAPABILITIES.contains(&n)).map_err(Refused::Invalid)?;
        let unknown = list.unknown.clone();
        set.apply(list, CAPABILITIES, source);
        Ok(unknown)
    }

    /// CapabilityBoundingSet=: an empty value is the empty set.
    fn capability_bounding_set(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        let unknown = Self::capabilities(&mut self.bounding, source, value, Some(BTreeSet::new()))?;
        self.warn_unknown(source, "capabilities", &unknown);
        Ok(())
    }

    /// AmbientCapabilities=: starts empty, so a first `~` list leaves it empty.
    fn ambient_capabilities(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if self.ambient.allowed.is_none() {
            self.ambient.allowed = Some(BTreeSet::new());
        }
        let unknown = Self::capabilities(&mut self.ambient, source, value, Some(BTreeSet::new()))?;
        self.warn_unknown(source, "capabilities", &unknown);
        Ok(())
    }

    fn system_call_filter(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        let set = &mut self.syscalls;
        set.last = Some(source.clone());
        if value.is_empty() {
            set.mode = None;
            set.asked.clear();
            set.reset = Some(source.clone());
            return Ok(());
        }
        let (inverted, rest) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let mut names = BTreeSet::new();
        let mut unknown = Vec::new();
        for word in parse::words(rest).map_err(Refused::Invalid)? {
            let item = match word.split_once(':') {
                Some((item, errno)) => {
                    if errno_number(errno).is_none() && errno != "kill" {
                        return Err(Refused::Invalid("a list of syscalls or @groups[:ERRNO]"));
                    }
                    set.per_call_errno = Some(source.clone());
                    item.to_owned()
                }
                None => word,
            };
            match expand_syscalls(&item) {
                Ok(expanded) => names.extend(expanded),
                Err(()) => unknown.push(item),
            }
        }
        let (allow_list, mut current) = set.mode.take().unwrap_or_else(|| {
            let mut start = BTreeSet::new();
            // systemd: an allow-list always allows @default, what every process needs.
            if !inverted {
                start.extend(expand_syscalls("@default").unwrap_or_default());
            }
            (!inverted, start)
        });
        if allow_list != inverted {
            current.extend(names.iter().cloned());
        } else {
            current.retain(|n| !names.contains(n));
        }
        if inverted {
            set.asked.retain(|n| !names.contains(n));
        } else if allow_list {
            set.asked.extend(names);
        }
        set.mode = Some((allow_list, current));
        self.warn_unknown(source, "syscalls", &unknown);
        Ok(())
    }

    fn system_call_error_number(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        let errno = match value {
            "" => {
                self.error_number = None;
                return Ok(());
            }
            "kill" => None,
            name => Some(
                errno_number(name).ok_or(Refused::Invalid("an errno name or number, or kill"))?,
            ),
        };
        self.error_number = Some((errno, source.clone()));
        Ok(())
    }

    fn system_call_architectures(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.architectures.set(None, source);
            return Ok(());
        }
        let list =
            parse::name_list(value, |n| ARCHITECTURES.contains(&n)).map_err(Refused::Invalid)?;
        if list.inverted {
            return Err(Refused::Invalid("a list of architectures"));
        }
        let unknown = list.unknown.clone();
        let native = native_architecture();
        let names = list
            .names
            .into_iter()
            .map(|n| if n == native { "native".to_owned() } else { n })
            .collect();
        self.architectures.apply(
            parse::NameList {
                inverted: false,
                names,
                unknown: Vec::new(),
            },
            &[],
            source,
        );
        self.warn_unknown(source, "architectures", &unknown);
        Ok(())
    }

    fn restrict_address_families(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        match value {
            "" => self.families.set(None, source),
            "none" => self.families.set(Some(BTreeSet::new()), source),
            _ => {
                let known = |n: &str| ADDRESS_FAMILIES.contains(&n) || n == "AF_LOCAL";
                let mut list = parse::name_list(value, known).map_err(Refused::Invalid)?;
                if list.names.remove("AF_LOCAL") {
                    list.names.insert("AF_UNIX".to_owned());
                }
                let unknown = list.unknown.clone();
                self.families.apply(list, ADDRESS_FAMILIES, source);
                self.warn_unknown(source, "address families", &unknown);
            }
        }
        Ok(())
    }

    fn restrict_namespaces(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        match parse_boolean(value) {
            Some(true) => self.namespaces.set(Some(BTreeSet::new()), source),
            Some(false) => self.namespaces.set(None, source),
            None if value.is_empty() => self.namespaces.set(None, source),
            None => {
                let list = parse::name_list(value, |n| NAMESPACE_KINDS.contains(&n))
                    .map_err(Refused::Invalid)?;
                if !list.unknown.is_empty() {
                    return Err(Refused::Invalid(
                        "a boolean or a list of cgroup, ipc, net, mnt, pid, user, uts, time",
                    ));
                }
                self.namespaces.apply(list, NAMESPACE_KINDS, source);
            }
        }
        Ok(())
    }

    fn protect_clock(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        match parse_boolean(value) {
            Some(on) => self.protect_clock = Some((on, source.clone())),
            None if value.is_empty() => self.protect_clock = None,
            None => return Err(INVALID_BOOLEAN),
        }
        Ok(())
    }

    fn umask(&mut self, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.umask = None;
            return Ok(());
        }
        let mask = parse_mode(value, 0o777).ok_or(Refused::Invalid("an octal mask up to 0777"))?;
        self.umask = Some((mask, source.clone()));
        Ok(())
    }

    fn limit(&mut self, resource: &str, source: &Source, value: &str) -> Result<(), Refused> {
        if value.is_empty() {
            self.rlimits
                .insert(resource.to_owned(), (None, source.clone()));
            return Ok(());
        }
        let unit = RLIMITS
            .iter()
            .find(|(name, _)| *name == resource)
            .map_or(LimitUnit::Count, |(_, unit)| *unit);
        let limit = parse::rlimit(resource, unit, value).map_err(Refused::Invalid)?;
        self.rlimits
            .insert(resource.to_owned(), (Some(limit), source.clone()));
        Ok(())
    }

    fn directory(&mut self, kind: usize, source: &Source, value: &str) -> Result<(), Refused> {
        let list = &mut self.directories[kind];
        if value.is_empty() {
            list.reset(source);
            return Ok(());
        }
        let names = parse::words(value)
            .map_err(Refused::Invalid)?
            .iter()
            .map(|word| parse::directory_name(word))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Refused::Invalid)?;
        list.push_all(names, source);
        Ok(())
    }

    fn directory_mode(&mut self, kind: usize, source: &Source, value: &str) -> Result<(), Refused> {
        self.directory_modes[kind] = if value.is_empty() {
            None
        } else {
            let mode =
                parse_mode(value, 0o7777).ok_or(Refused::Invalid("an octal mode up to 07777"))?;
            Some((mode, source.clone()))
        };
        Ok(())
    }
}

/// Whether `key=value`, a `[Service]` directive outside [`TABLE`] that the spec has no field
/// for, would give the service more than its sandbox: host identities, groups or namespaces,
/// privileged hooks, or raised priorities. Such assignments are reported and never applied.
pub(super) fn loosens_sandbox(key: &str, value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let non_empty = !value.is_empty();
    match key {
        "PrivatePIDs" | "PrivateMounts" => parse_boolean(value) == Some(false),
        "DevicePolicy" => lower == "auto",
        "User" | "Group" => value == "root" || value == "0",
        "SupplementaryGroups"
        | "SecureBits"
        | "ExecPaths"
        | "NetworkNamespacePath"
        | "IPCNamespacePath"
        | "PAMName" => non_empty,
        "PermissionsStartOnly" | "RootDirectoryStartOnly" => parse_boolean(value) == Some(true),
        "Delegate" => non_empty && parse_boolean(value) != Some(false),
        // An empty assignment resets the filter to "everything allowed".
        "RestrictFileSystems" | "RestrictNetworkInterfaces" => value.is_empty(),
        // Raising priority needs privileges the sandbox does not grant.
        "Nice" | "OOMScoreAdjust" => value.starts_with('-'),
        "CPUSchedulingPolicy" => matches!(lower.as_str(), "fifo" | "rr"),
        "IOSchedulingClass" => matches!(lower.as_str(), "realtime" | "1"),
        _ => false,
    }
}

/// The syscall names a SystemCallFilter= item stands for: a `@group`'s members (the data of
/// `protocol::syscall_groups`), or the one name; `Err` for an unknown group or name.
fn expand_syscalls(item: &str) -> Result<BTreeSet<String>, ()> {
    let names = syscall_groups::expand(item).map_err(|_| ())?;
    if !item.starts_with('@') && !syscall_groups::is_known(item) {
        return Err(());
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests;
