//! `berth security`: a service's exposure, with the checks, weights, ranges and rounding of
//! `systemd-analyze security` (systemd 252), computed from its [`SandboxSpec`].
//!
//! Each check grades one property of the sandbox from 0 (good) to its range, or is not
//! applicable. The exposure is `ceil(100 · Σ ceil(badness·weight / range) / Σ weight)` over the
//! applicable checks, shown in tenths (0.0 to 10.0), so that berth's number and systemd's can be
//! put side by side: [`spec_as_unit`] writes the systemd unit that asks for the same sandbox,
//! and a test has `systemd-analyze security --offline=yes` score it.
//!
//! Where berth's sandbox does more than the unit can say, the check reports berth's sandbox:
//! systemd's `ProtectClock=` lets the service read the real-time clock device (`DeviceAllow=`
//! then holds `char-rtc`), berth's private /dev has no such device. The descriptions are
//! berth's; the check ids are systemd's, so that the two tables can be compared line by line.

use std::net::IpAddr;

pub use super::equivalent_unit::spec_as_unit;

use berth_protocol::sandbox::{
    KeyringMode, ProcSubset, ProtectHome, ProtectProc, ProtectSystem, SandboxSpec,
};

/// What scoring needs to know besides the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitFacts {
    /// The service runs as root of the host (otherwise as a dynamic uid of its own, or as its
    /// image's users).
    pub host_root: bool,
    /// `NotifyAccess=all`: any process of the service may change its state.
    pub notify_access_all: bool,
    /// Block mode (profile level 3 on, not DynamicUser=): the service runs as its image's
    /// users, in a user namespace of its own on a private block of host uids. `None`: a
    /// dynamic uid.
    pub image_user: Option<ImageUser>,
}

/// Who a service in block mode runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageUser {
    /// No User= (or User=root): root of its own user namespace, which is a uid of its block on
    /// the host, never host root. What its capabilities let it do is scored by the
    /// CapabilityBoundingSet= checks, as systemd scores them.
    NamespaceRoot,
    /// User= names a user of the image.
    User,
}

/// The syscalls of a systemd `@group`, nested groups expanded (empty for an unknown group), as
/// `protocol::syscall_groups` lists them: with other architectures' names too. systemd skips
/// those, so a deny list that names a group's x86-64 syscalls one by one, without their 32-bit
/// twins, scores worse here than there; a list built from the `@group` does not.
pub type GroupSyscalls<'a> = &'a dyn Fn(&str) -> Vec<String>;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// systemd's id of the check, e.g. `PrivateNetwork=`.
    pub id: &'static str,
    pub description: String,
    pub weight: u64,
    /// From 0 to `range`; `None` when the check does not apply.
    pub badness: Option<u64>,
    pub range: u64,
}

/// Every check, and the overall exposure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Assessment>,
    /// In tenths: 0 (perfect) to 100 (dangerous).
    pub exposure: u64,
}

impl Report {
    /// The sum of the weights of the checks that apply.
    fn weight_sum(&self) -> u64 {
        self.checks
            .iter()
            .filter(|a| a.badness.is_some())
            .map(|a| a.weight)
            .sum()
    }

    /// What one check adds to the exposure, in tenths, as systemd's table shows it: `None` when
    /// it adds nothing or does not apply.
    pub fn check_exposure(&self, check: &Assessment) -> Option<u64> {
        let badness = check.badness.filter(|&b| b > 0)?;
        let weighted = (badness * check.weight * 100).div_ceil(check.range);
        Some(weighted.div_ceil(self.weight_sum().max(1)))
    }
}

/// systemd's words for an exposure (in tenths).
pub fn rating(exposure: u64) -> &'static str {
    match exposure {
        100.. => "DANGEROUS",
        90.. => "UNSAFE",
        75.. => "EXPOSED",
        50.. => "MEDIUM",
        10.. => "OK",
        1.. => "SAFE",
        0 => "PERFECT",
    }
}

/// `exposure` (in tenths) as systemd prints it: `1.0`.
pub fn tenths(exposure: u64) -> String {
    format!("{}.{}", exposure / 10, exposure % 10)
}

/// Scores `spec`.
pub fn assess(spec: &SandboxSpec, facts: &UnitFacts, groups: GroupSyscalls<'_>) -> Report {
    let subject = Subject::new(spec, facts, groups);
    let checks: Vec<Assessment> = CHECKS
        .iter()
        .map(|check| {
            let (badness, description) = check.assess(&subject);
            Assessment {
                id: check.id,
                description,
                weight: check.weight,
                badness,
                range: check.range,
            }
        })
        .collect();
    let (sum, weights) = checks
        .iter()
        .filter_map(|a| {
            a.badness
                .map(|b| ((b * a.weight).div_ceil(a.range), a.weight))
        })
        .fold((0, 0), |(s, w), (b, weight)| (s + b, w + weight));
    Report {
        checks,
        exposure: (sum * 100).div_ceil(weights.max(1)),
    }
}

/// One check: systemd's id, weight and range, and how berth grades it.
struct Check {
    id: &'static str,
    weight: u64,
    range: u64,
    rule: Rule,
    /// Said when the check passes, and when it fails (graded checks say their own).
    good: &'static str,
    bad: &'static str,
}

enum Rule {
    /// Good (0) when it holds, bad (1) otherwise.
    Holds(fn(&Subject<'_>) -> bool),
    /// Bad when the bounding set keeps any of these.
    Drops(&'static [&'static str]),
    /// Bad when the service may create namespaces of this kind.
    NoNamespace(&'static str),
    /// Bad when the service may create sockets of this class of families.
    NoFamily(Family),
    /// systemd's grades for a syscall group: 0 when the filter refuses all of it, 9 when an
    /// allow list lets some through, 10 when a deny list (or no filter) does.
    Syscalls(&'static str),
    /// Its own grade (`None`: not applicable) and description.
    Graded(fn(&Subject<'_>) -> (Option<u64>, &'static str)),
}

impl Check {
    fn assess(&self, s: &Subject<'_>) -> (Option<u64>, String) {
        let pass = |ok: bool| {
            let text = if ok { self.good } else { self.bad };
            (Some(u64::from(!ok)), text.to_owned())
        };
        match &self.rule {
            Rule::Holds(holds) => pass(holds(s)),
            Rule::Drops(caps) => pass(!caps.iter().any(|c| s.keeps_capability(c))),
            Rule::NoNamespace(kind) => pass(!s.may_create_namespace(kind)),
            Rule::NoFamily(family) => pass(s.family_restricted(*family)),
            Rule::Syscalls(group) => {
                let (badness, text) = s.syscall_group(group);
                (Some(badness), text)
            }
            Rule::Graded(grade) => {
                let (badness, text) = grade(s);
                (badness, text.to_owned())
            }
        }
    }
}

/// systemd's classes of address families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Inet,
    Unix,
    Netlink,
    Packet,
    /// Every other family.
    Exotic,
}

impl Family {
    fn of(name: &str) -> Family {
        match name {
            "AF_INET" | "AF_INET6" => Family::Inet,
            "AF_UNIX" => Family::Unix,
            "AF_NETLINK" => Family::Netlink,
            "AF_PACKET" => Family::Packet,
            _ => Family::Exotic,
        }
    }
}

/// The sandbox as the checks look at it.
struct Subject<'a> {
    spec: &'a SandboxSpec,
    facts: &'a UnitFacts,
    groups: GroupSyscalls<'a>,
    protect_clock: bool,
}

/// The capabilities that systemd drops along with a directive; berth's directives drop them
/// too (DESIGN.md §5: systemd's semantics), so a bounding set that names them is not scored.
fn implied_drops(s: &Subject<'_>) -> Vec<&'static str> {
    let mounts = &s.spec.mounts;
    let mut drops = Vec::new();
    if mounts.protect_kernel_modules {
        drops.push("CAP_SYS_MODULE");
    }
    if mounts.protect_kernel_logs {
        drops.push("CAP_SYSLOG");
    }
    if mounts.private_devices {
        drops.extend(["CAP_MKNOD", "CAP_SYS_RAWIO"]);
    }
    drops
}

impl<'a> Subject<'a> {
    fn new(spec: &'a SandboxSpec, facts: &'a UnitFacts, groups: GroupSyscalls<'a>) -> Self {
        let mut subject = Subject {
            spec,
            facts,
            groups,
            protect_clock: false,
        };
        subject.protect_clock = protects_clock(spec, groups);
        subject
    }

    fn keeps_capability(&self, cap: &str) -> bool {
        let named = |c: &String| c.eq_ignore_ascii_case(cap);
        self.spec.capabilities.bounding.iter().any(named)
            && !implied_drops(self)
                .iter()
                .any(|d| d.eq_ignore_ascii_case(cap))
    }

    fn may_create_namespace(&self, kind: &str) -> bool {
        match &self.spec.syscalls.namespaces_allowed {
            None => true,
            Some(allowed) => allowed.iter().any(|k| k == kind),
        }
    }

    /// As systemd reads RestrictAddressFamilies=: an allow list restricts a class unless it
    /// names one of its families; a deny list restricts a class when it names one of them.
    fn family_restricted(&self, family: Family) -> bool {
        let Some(families) = &self.spec.syscalls.address_families else {
            return false;
        };
        let named = families.families.iter().any(|f| Family::of(f) == family);
        if families.allow_list { !named } else { named }
    }

    fn syscall_group(&self, group: &str) -> (u64, String) {
        let filter = Filter::of(self.spec);
        let members = (self.groups)(group);
        let through = members.iter().find(|name| filter.lets_through(name));
        match (filter, through) {
            (Filter::None, _) => (10, "No system call filter".to_owned()),
            (Filter::Allow { .. }, Some(name)) => (
                9,
                format!("The allow list lets {group} through ({name} is allowed)"),
            ),
            (Filter::Deny(_), Some(name)) => (
                10,
                format!("The deny list lets {group} through ({name} is not denied)"),
            ),
            (Filter::Allow { .. }, None) => (0, format!("The allow list leaves out {group}")),
            (Filter::Deny(_), None) => (0, format!("The deny list holds {group}")),
        }
    }
}

/// The syscall filter of a spec, as systemd's checks see it.
#[derive(Clone, Copy)]
pub(super) enum Filter<'a> {
    None,
    /// Only `allow` runs, less `deny`.
    Allow {
        allow: &'a [String],
        deny: &'a [String],
    },
    Deny(&'a [String]),
}

impl<'a> Filter<'a> {
    pub(super) fn of(spec: &'a SandboxSpec) -> Filter<'a> {
        let syscalls = &spec.syscalls;
        match &syscalls.allow {
            Some(allow) => Filter::Allow {
                allow,
                deny: &syscalls.deny,
            },
            None if syscalls.deny.is_empty() => Filter::None,
            None => Filter::Deny(&syscalls.deny),
        }
    }

    fn lets_through(&self, name: &str) -> bool {
        let has = |list: &[String]| list.iter().any(|n| n == name);
        match *self {
            Filter::None => true,
            Filter::Allow { allow, deny } => has(allow) && !has(deny),
            Filter::Deny(deny) => !has(deny),
        }
    }
}

/// ProtectClock= as berth carries it out: no syscall of `@clock` gets through the filter and
/// the bounding set has neither CAP_SYS_TIME nor CAP_WAKE_ALARM.
pub fn protects_clock(spec: &SandboxSpec, groups: GroupSyscalls<'_>) -> bool {
    let filter = Filter::of(spec);
    let clock = groups("@clock");
    let caps = &spec.capabilities.bounding;
    !clock.is_empty()
        && !clock.iter().any(|name| filter.lets_through(name))
        && !caps.iter().any(|c| {
            c.eq_ignore_ascii_case("CAP_SYS_TIME") || c.eq_ignore_ascii_case("CAP_WAKE_ALARM")
        })
}

/// Which ABIs may make syscalls, as systemd grades it: 0 native only, 8 others too, 10 all.
/// berth-helper installs no filter at all when the spec asks nothing of it, and every filter
/// it installs admits only the native ABI.
pub(super) fn architectures_grade(spec: &SandboxSpec) -> u64 {
    let sc = &spec.syscalls;
    let filtered = sc.allow.is_some()
        || !sc.deny.is_empty()
        || sc.address_families.is_some()
        || sc.namespaces_allowed.is_some()
        || sc.restrict_realtime
        || sc.restrict_suid_sgid
        || sc.lock_personality
        || sc.memory_deny_write_execute;
    if sc.architectures.iter().any(|a| a == "native") {
        0
    } else if !sc.architectures.is_empty() {
        8
    } else if filtered {
        0
    } else {
        10
    }
}

/// systemd rates root 10 and any other user 0; root of the service's own user namespace is
/// not root of the host, so it rates as a non-root user (its capabilities are rated on their
/// own, by the CapabilityBoundingSet= checks).
fn grade_user(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    if s.facts.host_root {
        return (Some(10), "Runs as root of the host");
    }
    match s.facts.image_user {
        Some(ImageUser::NamespaceRoot) => (
            Some(0),
            "Runs as root of its own user namespace, a uid of its block on the host, never \
             host root",
        ),
        Some(ImageUser::User) => (
            Some(0),
            "Runs as a user of its image, on a block of host uids of its own, never a host user",
        ),
        None => (
            Some(0),
            "Runs as a dynamic user of its own, never a host user",
        ),
    }
}

/// Block mode counts as a user namespace: the service sees its image's users, not the host's.
fn grade_private_users(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    if s.spec.identity.private_users {
        (Some(0), "Sees only root, itself and nobody")
    } else if s.facts.image_user.is_some() {
        (
            Some(0),
            "A user namespace of its own: its image's users on a private block of host uids",
        )
    } else {
        (Some(1), "Sees the users of the host")
    }
}

/// Not applicable to a service that runs as root of the host, as in systemd (root of its own
/// user namespace is not: as systemd reads a non-root User=).
fn unless_root(
    s: &Subject<'_>,
    bad: bool,
    text: (&'static str, &'static str),
) -> (Option<u64>, &'static str) {
    if s.facts.host_root {
        return (None, "Runs as root: does not apply");
    }
    (Some(u64::from(bad)), if bad { text.1 } else { text.0 })
}

fn grade_supplementary_groups(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    let bad = !s.spec.identity.supplementary_groups.is_empty();
    unless_root(
        s,
        bad,
        ("No supplementary groups", "Has supplementary groups"),
    )
}

/// berthd releases every dynamic uid through berth-helper when its run ends, which removes the
/// uid's SysV IPC objects and POSIX message queues whatever the spec says (RemoveIPC= as
/// systemd implies it for DynamicUser=).
fn grade_remove_ipc(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    let bad = s.facts.host_root && !s.spec.remove_ipc;
    let text = (
        "Its SysV IPC objects and message queues go when it ends",
        "Its SysV IPC objects and message queues outlive it",
    );
    unless_root(s, bad, text)
}

fn grade_protect_home(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    match s.spec.mounts.protect_home {
        ProtectHome::Yes => (Some(0), "Home directories are out of reach"),
        ProtectHome::Tmpfs => (Some(1), "Home directories are empty tmpfs"),
        ProtectHome::ReadOnly => (Some(5), "Home directories are read-only"),
        ProtectHome::No => (Some(10), "Home directories are fully accessible"),
    }
}

fn grade_protect_system(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    match s.spec.mounts.protect_system {
        ProtectSystem::Strict => (Some(0), "The whole file system is read-only"),
        ProtectSystem::Full => (Some(3), "/usr, /boot and /etc are read-only"),
        ProtectSystem::Yes => (Some(5), "/usr and /boot are read-only"),
        ProtectSystem::No => (Some(10), "The OS file hierarchy is writable"),
    }
}

fn grade_umask(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    let umask = s.spec.umask;
    if umask & 0o002 == 0 {
        (Some(10), "New files are writable by everyone")
    } else if umask & 0o004 == 0 {
        (Some(5), "New files are readable by everyone")
    } else if umask & 0o020 == 0 {
        (Some(2), "New files are writable by the group")
    } else if umask & 0o040 == 0 {
        (Some(1), "New files are readable by the group")
    } else {
        (Some(0), "New files are the service's own")
    }
}

fn grade_protect_proc(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    match s.spec.mounts.protect_proc {
        ProtectProc::Invisible | ProtectProc::Ptraceable => {
            (Some(0), "Other users' processes are hidden in /proc")
        }
        ProtectProc::Noaccess => (
            Some(1),
            "Other users' processes are listed but closed in /proc",
        ),
        ProtectProc::Default => (Some(3), "Every process is visible in /proc"),
    }
}

fn grade_architectures(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    match architectures_grade(s.spec) {
        0 => (Some(0), "Only the native ABI may make system calls"),
        8 => (Some(8), "Other ABIs may make system calls"),
        _ => (Some(10), "Every ABI may make system calls (i386, x32)"),
    }
}

/// The address of a CIDR prefix and its length (`None`: not one).
fn prefix(cidr: &str) -> Option<(IpAddr, u8)> {
    let (address, length) = cidr.split_once('/').unwrap_or((cidr, ""));
    let address: IpAddr = address.parse().ok()?;
    let length = if length.is_empty() {
        if address.is_ipv4() { 32 } else { 128 }
    } else {
        length.parse().ok()?
    };
    Some((address, length))
}

fn grade_ip_firewall(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    let firewall = &s.spec.firewall;
    let denies_all = |v4: bool| {
        firewall
            .deny
            .iter()
            .filter_map(|c| prefix(c))
            .any(|(a, len)| len == 0 && a.is_ipv4() == v4)
    };
    if !(denies_all(true) && denies_all(false)) {
        return (Some(10), "No IP address allow list");
    }
    let allowed: Vec<IpAddr> = firewall
        .allow
        .iter()
        .filter_map(|c| prefix(c))
        .map(|(a, _)| a)
        .collect();
    if allowed.iter().any(|a| !a.is_loopback()) {
        (Some(5), "Allows IP addresses beyond localhost")
    } else if !allowed.is_empty() {
        (Some(2), "Allows localhost only")
    } else {
        (Some(0), "Every IP address is blocked")
    }
}

fn grade_devices(s: &Subject<'_>) -> (Option<u64>, &'static str) {
    let mounts = &s.spec.mounts;
    if !mounts.private_devices {
        (Some(10), "The host's devices are reachable")
    } else if !mounts.device_allow.is_empty() {
        (Some(5), "Some host devices besides the pseudo devices")
    } else {
        (Some(0), "Only the pseudo devices (null, zero, random, ...)")
    }
}

const fn holds(
    id: &'static str,
    weight: u64,
    rule: fn(&Subject<'_>) -> bool,
    good: &'static str,
    bad: &'static str,
) -> Check {
    Check {
        id,
        weight,
        range: 1,
        rule: Rule::Holds(rule),
        good,
        bad,
    }
}

const fn drops(
    id: &'static str,
    weight: u64,
    caps: &'static [&'static str],
    good: &'static str,
    bad: &'static str,
) -> Check {
    Check {
        id,
        weight,
        range: 1,
        rule: Rule::Drops(caps),
        good,
        bad,
    }
}

const fn graded(
    id: &'static str,
    weight: u64,
    range: u64,
    grade: fn(&Subject<'_>) -> (Option<u64>, &'static str),
) -> Check {
    Check {
        id,
        weight,
        range,
        rule: Rule::Graded(grade),
        good: "",
        bad: "",
    }
}

const fn namespace(
    id: &'static str,
    weight: u64,
    kind: &'static str,
    good: &'static str,
    bad: &'static str,
) -> Check {
    Check {
        id,
        weight,
        range: 1,
        rule: Rule::NoNamespace(kind),
        good,
        bad,
    }
}

const fn family(
    id: &'static str,
    weight: u64,
    family: Family,
    good: &'static str,
    bad: &'static str,
) -> Check {
    Check {
        id,
        weight,
        range: 1,
        rule: Rule::NoFamily(family),
        good,
        bad,
    }
}

const fn syscalls(id: &'static str, weight: u64, group: &'static str) -> Check {
    Check {
        id,
        weight,
        range: 10,
        rule: Rule::Syscalls(group),
        good: "",
        bad: "",
    }
}

/// systemd 252's checks, in its order, with its weights and ranges.
static CHECKS: &[Check] = &[
    graded("User=/DynamicUser=", 2000, 10, grade_user),
    graded("SupplementaryGroups=", 200, 1, grade_supplementary_groups),
    holds(
        "PrivateDevices=",
        1000,
        |s| s.spec.mounts.private_devices,
        "Only the pseudo devices in /dev",
        "The host's devices in /dev",
    ),
    // Every berth service has its own mount namespace.
    holds(
        "PrivateMounts=",
        1000,
        |_| true,
        "Its mounts are its own",
        "May change the host's mounts",
    ),
    holds(
        "PrivateNetwork=",
        2500,
        |s| s.spec.namespaces.private_network,
        "A network namespace of its own (loopback only)",
        "On the host's network",
    ),
    holds(
        "PrivateTmp=",
        1000,
        |s| s.spec.mounts.private_tmp,
        "A /tmp and /var/tmp of its own",
        "Shares /tmp with the host",
    ),
    graded("PrivateUsers=", 1000, 1, grade_private_users),
    holds(
        "ProtectControlGroups=",
        1000,
        |s| s.spec.mounts.protect_control_groups,
        "The cgroup file system is read-only",
        "May change the cgroup file system",
    ),
    holds(
        "ProtectKernelModules=",
        1000,
        |s| s.spec.mounts.protect_kernel_modules,
        "Cannot load kernel modules",
        "May load kernel modules",
    ),
    holds(
        "ProtectKernelTunables=",
        1000,
        |s| s.spec.mounts.protect_kernel_tunables,
        "/proc/sys and /sys are read-only",
        "May change kernel tunables",
    ),
    holds(
        "ProtectKernelLogs=",
        1000,
        |s| s.spec.mounts.protect_kernel_logs,
        "Cannot reach the kernel log",
        "May read and write the kernel log",
    ),
    holds(
        "ProtectClock=",
        1000,
        |s| s.protect_clock,
        "Cannot set the clocks",
        "May set the system or hardware clock",
    ),
    graded("ProtectHome=", 1000, 10, grade_protect_home),
    holds(
        "ProtectHostname=",
        50,
        |s| s.spec.namespaces.private_uts,
        "Cannot change the host name",
        "May change the host name",
    ),
    graded("ProtectSystem=", 1000, 10, grade_protect_system),
    // berth runs every service from its image.
    holds(
        "RootDirectory=/RootImage=",
        200,
        |_| true,
        "Runs in its image",
        "Runs in the host's root",
    ),
    holds(
        "LockPersonality=",
        100,
        |s| s.spec.syscalls.lock_personality,
        "Cannot change its ABI personality",
        "May change its ABI personality",
    ),
    holds(
        "MemoryDenyWriteExecute=",
        100,
        |s| s.spec.syscalls.memory_deny_write_execute,
        "No memory both writable and executable",
        "May map memory writable and executable",
    ),
    holds(
        "NoNewPrivileges=",
        1000,
        |s| s.spec.no_new_privileges,
        "Cannot gain privileges (no_new_privs)",
        "May gain privileges through exec",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        1500,
        &["CAP_SYS_ADMIN"],
        "No CAP_SYS_ADMIN",
        "Keeps CAP_SYS_ADMIN",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
        1500,
        &["CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"],
        "Cannot change its ids or capabilities",
        "May change its ids or capabilities",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_PTRACE",
        1500,
        &["CAP_SYS_PTRACE"],
        "Cannot ptrace others",
        "May ptrace others",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_TIME",
        1000,
        &["CAP_SYS_TIME"],
        "Cannot set the clock",
        "May set the clock",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_NET_ADMIN",
        1000,
        &["CAP_NET_ADMIN"],
        "Cannot configure the network",
        "May configure the network",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_RAWIO",
        1000,
        &["CAP_SYS_RAWIO"],
        "No raw I/O",
        "May do raw I/O",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_MODULE",
        1000,
        &["CAP_SYS_MODULE"],
        "Cannot load modules",
        "May load modules",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_AUDIT_*",
        500,
        &["CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE"],
        "No audit capabilities",
        "Keeps audit capabilities",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYSLOG",
        500,
        &["CAP_SYSLOG"],
        "No CAP_SYSLOG",
        "Keeps CAP_SYSLOG",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_(NICE|RESOURCE)",
        500,
        &["CAP_SYS_NICE", "CAP_SYS_RESOURCE"],
        "Cannot raise its priority or limits",
        "May raise its priority or limits",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_MKNOD",
        500,
        &["CAP_MKNOD"],
        "Cannot make device nodes",
        "May make device nodes",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)",
        1000,
        &["CAP_CHOWN", "CAP_FSETID", "CAP_SETFCAP"],
        "Cannot change owners, modes or file capabilities freely",
        "May change owners, modes or file capabilities freely",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
        1000,
        &[
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_FOWNER",
            "CAP_IPC_OWNER",
        ],
        "Cannot bypass file and IPC permissions",
        "May bypass file and IPC permissions",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_KILL",
        500,
        &["CAP_KILL"],
        "Cannot signal others' processes",
        "May signal others' processes",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
        500,
        &["CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW"],
        "No privileged networking",
        "Privileged ports, broadcast or raw sockets",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_BOOT",
        100,
        &["CAP_SYS_BOOT"],
        "Cannot reboot",
        "May reboot",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_MAC_*",
        100,
        &["CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE"],
        "Cannot change MAC policy",
        "May change MAC policy",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_LINUX_IMMUTABLE",
        75,
        &["CAP_LINUX_IMMUTABLE"],
        "Cannot make files immutable",
        "May make files immutable",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_IPC_LOCK",
        50,
        &["CAP_IPC_LOCK"],
        "Cannot lock memory",
        "May lock memory",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_CHROOT",
        50,
        &["CAP_SYS_CHROOT"],
        "Cannot chroot",
        "May chroot",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_BLOCK_SUSPEND",
        25,
        &["CAP_BLOCK_SUSPEND"],
        "Cannot block suspend",
        "May block suspend",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_WAKE_ALARM",
        25,
        &["CAP_WAKE_ALARM"],
        "Cannot set wake alarms",
        "May set wake alarms",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_LEASE",
        25,
        &["CAP_LEASE"],
        "Cannot take file leases",
        "May take file leases",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_TTY_CONFIG",
        25,
        &["CAP_SYS_TTY_CONFIG"],
        "Cannot configure terminals",
        "May configure terminals",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_SYS_PACCT",
        25,
        &["CAP_SYS_PACCT"],
        "Cannot switch process accounting",
        "May switch process accounting",
    ),
    drops(
        "CapabilityBoundingSet=~CAP_BPF",
        25,
        &["CAP_BPF"],
        "Cannot load BPF programs",
        "May load BPF programs",
    ),
    graded("UMask=", 100, 10, grade_umask),
    holds(
        "KeyringMode=",
        1000,
        |s| s.spec.keyring == KeyringMode::Private,
        "A session keyring of its own",
        "Its keyring links the user keyring",
    ),
    graded("ProtectProc=", 1000, 3, grade_protect_proc),
    holds(
        "ProcSubset=",
        10,
        |s| s.spec.mounts.proc_subset == ProcSubset::Pid,
        "/proc shows processes only",
        "/proc shows the kernel's files too",
    ),
    holds(
        "NotifyAccess=",
        1000,
        |s| !s.facts.notify_access_all,
        "Its children cannot change its state",
        "Any of its processes may change its state",
    ),
    graded("RemoveIPC=", 100, 1, grade_remove_ipc),
    // berth delegates no cgroup subtree.
    holds(
        "Delegate=",
        100,
        |_| true,
        "No delegated cgroup subtree",
        "Manages a delegated cgroup subtree",
    ),
    holds(
        "RestrictRealtime=",
        500,
        |s| s.spec.syscalls.restrict_realtime,
        "No realtime scheduling",
        "May take realtime scheduling",
    ),
    holds(
        "RestrictSUIDSGID=",
        1000,
        |s| s.spec.syscalls.restrict_suid_sgid,
        "Cannot make set-uid or set-gid files",
        "May make set-uid or set-gid files",
    ),
    namespace(
        "RestrictNamespaces=~user",
        1500,
        "user",
        "Cannot create user namespaces",
        "May create user namespaces",
    ),
    namespace(
        "RestrictNamespaces=~mnt",
        500,
        "mnt",
        "Cannot create mount namespaces",
        "May create mount namespaces",
    ),
    namespace(
        "RestrictNamespaces=~ipc",
        500,
        "ipc",
        "Cannot create IPC namespaces",
        "May create IPC namespaces",
    ),
    namespace(
        "RestrictNamespaces=~pid",
        500,
        "pid",
        "Cannot create PID namespaces",
        "May create PID namespaces",
    ),
    namespace(
        "RestrictNamespaces=~cgroup",
        500,
        "cgroup",
        "Cannot create cgroup namespaces",
        "May create cgroup namespaces",
    ),
    namespace(
        "RestrictNamespaces=~net",
        500,
        "net",
        "Cannot create network namespaces",
        "May create network namespaces",
    ),
    namespace(
        "RestrictNamespaces=~uts",
        100,
        "uts",
        "Cannot create UTS namespaces",
        "May create UTS namespaces",
    ),
    family(
        "RestrictAddressFamilies=~AF_(INET|INET6)",
        1500,
        Family::Inet,
        "Cannot open Internet sockets",
        "May open Internet sockets",
    ),
    family(
        "RestrictAddressFamilies=~AF_UNIX",
        25,
        Family::Unix,
        "Cannot open Unix sockets",
        "May open Unix sockets",
    ),
    family(
        "RestrictAddressFamilies=~AF_NETLINK",
        200,
        Family::Netlink,
        "Cannot open netlink sockets",
        "May open netlink sockets",
    ),
    family(
        "RestrictAddressFamilies=~AF_PACKET",
        1000,
        Family::Packet,
        "Cannot open packet sockets",
        "May open packet sockets",
    ),
    family(
        "RestrictAddressFamilies=~…",
        1250,
        Family::Exotic,
        "Cannot open other socket families",
        "May open other socket families",
    ),
    graded("SystemCallArchitectures=", 1000, 10, grade_architectures),
    syscalls("SystemCallFilter=~@swap", 1000, "@swap"),
    syscalls("SystemCallFilter=~@obsolete", 250, "@obsolete"),
    syscalls("SystemCallFilter=~@clock", 1000, "@clock"),
    syscalls("SystemCallFilter=~@cpu-emulation", 250, "@cpu-emulation"),
    syscalls("SystemCallFilter=~@debug", 1000, "@debug"),
    syscalls("SystemCallFilter=~@mount", 1000, "@mount"),
    syscalls("SystemCallFilter=~@module", 1000, "@module"),
    syscalls("SystemCallFilter=~@raw-io", 1000, "@raw-io"),
    syscalls("SystemCallFilter=~@reboot", 1000, "@reboot"),
    syscalls("SystemCallFilter=~@privileged", 700, "@privileged"),
    syscalls("SystemCallFilter=~@resources", 700, "@resources"),
    graded("IPAddressDeny=", 1000, 10, grade_ip_firewall),
    graded("DeviceAllow=", 1000, 10, grade_devices),
    holds(
        "AmbientCapabilities=",
        500,
        |s| s.spec.capabilities.ambient.is_empty(),
        "No ambient capabilities",
        "Gets ambient capabilities",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use berth_protocol::sandbox::AddressFamilies;

    /// A stand-in for the syscall tables: @clock has two syscalls, every other group one.
    fn groups(group: &str) -> Vec<String> {
        match group {
            "@clock" => vec!["settimeofday".into(), "clock_settime".into()],
            other => vec![format!("{}_call", other.trim_start_matches('@'))],
        }
    }

    fn spec() -> SandboxSpec {
        SandboxSpec::baseline(61184, 61184, "svc")
    }

    fn badness(report: &Report, id: &str) -> Option<u64> {
        report.checks.iter().find(|a| a.id == id).unwrap().badness
    }

    #[test]
    fn exposure_rounds_up_each_check_then_the_sum_as_systemd_does() {
        let report = assess(&spec(), &UnitFacts::default(), &groups);
        let weights: u64 = report.checks.iter().map(|a| a.weight).sum();
        let sum: u64 = report
            .checks
            .iter()
            .map(|a| (a.badness.unwrap() * a.weight).div_ceil(a.range))
            .sum();

        assert_eq!(weights, 56460);
        assert_eq!(report.exposure, (sum * 100).div_ceil(weights));
    }

    #[test]
    fn a_check_shows_what_it_adds_in_tenths_rounded_up() {
        let report = assess(&spec(), &UnitFacts::default(), &groups);
        let network = report
            .checks
            .iter()
            .find(|a| a.id == "PrivateNetwork=")
            .unwrap();
        let tmp = report
            .checks
            .iter()
            .find(|a| a.id == "PrivateTmp=")
            .unwrap();

        // ceil(2500·100 / 56460) = 5; a check that passes adds nothing.
        assert_eq!(report.check_exposure(network), Some(5));
        assert_eq!(report.check_exposure(tmp), None);
    }

    #[test]
    fn ratings_follow_systemds_thresholds() {
        let words: Vec<&str> = [100, 90, 89, 75, 50, 49, 10, 9, 1, 0]
            .iter()
            .map(|&e| rating(e))
            .collect();

        assert_eq!(
            words,
            [
                "DANGEROUS",
                "UNSAFE",
                "EXPOSED",
                "EXPOSED",
                "MEDIUM",
                "OK",
                "OK",
                "SAFE",
                "SAFE",
                "PERFECT"
            ]
        );
        assert_eq!(tenths(9), "0.9");
    }

    #[test]
    fn root_of_the_host_makes_supplementary_groups_and_remove_ipc_not_apply() {
        let root = UnitFacts {
            host_root: true,
            ..UnitFacts::default()
        };

        let report = assess(&spec(), &root, &groups);

        assert_eq!(badness(&report, "User=/DynamicUser="), Some(10));
        assert_eq!(badness(&report, "SupplementaryGroups="), None);
        assert_eq!(badness(&report, "RemoveIPC="), None);
        assert_eq!(
            report
                .checks
                .iter()
                .filter(|a| a.badness.is_some())
                .map(|a| a.weight)
                .sum::<u64>(),
            56160
        );
    }

    #[test]
    fn an_allow_list_without_a_group_scores_zero_with_it_nine_and_a_deny_list_missing_it_ten() {
        let mut allow = spec();
        allow.syscalls.allow = Some(vec!["swap_call".into(), "read".into()]);
        let mut denied = spec();
        denied.syscalls.deny = vec!["swap_call".into()];
        let facts = UnitFacts::default();

        let allowed = assess(&allow, &facts, &groups);
        let denying = assess(&denied, &facts, &groups);

        assert_eq!(badness(&allowed, "SystemCallFilter=~@swap"), Some(9));
        assert_eq!(badness(&allowed, "SystemCallFilter=~@reboot"), Some(0));
        assert_eq!(badness(&denying, "SystemCallFilter=~@swap"), Some(0));
        assert_eq!(badness(&denying, "SystemCallFilter=~@reboot"), Some(10));
        assert_eq!(
            badness(&assess(&spec(), &facts, &groups), "SystemCallFilter=~@swap"),
            Some(10)
        );
    }

    #[test]
    fn the_clock_is_protected_only_when_every_clock_syscall_and_capability_is_gone() {
        let mut half = spec();
        half.syscalls.deny = vec!["settimeofday".into()];
        let mut whole = spec();
        whole.syscalls.deny = vec!["settimeofday".into(), "clock_settime".into()];
        let mut capable = whole.clone();
        capable.capabilities.bounding = vec!["CAP_SYS_TIME".into()];

        assert!(!protects_clock(&half, &groups));
        assert!(protects_clock(&whole, &groups));
        assert!(!protects_clock(&capable, &groups));
    }

    #[test]
    fn a_deny_list_of_families_restricts_the_classes_it_names() {
        let mut s = spec();
        s.syscalls.address_families = Some(AddressFamilies {
            allow_list: false,
            families: vec!["AF_INET6".into()],
        });

        let report = assess(&s, &UnitFacts::default(), &groups);

        assert_eq!(
            badness(&report, "RestrictAddressFamilies=~AF_(INET|INET6)"),
            Some(0)
        );
        assert_eq!(
            badness(&report, "RestrictAddressFamilies=~AF_UNIX"),
            Some(1)
        );
    }

    #[test]
    fn capabilities_a_directive_drops_are_not_held_against_the_bounding_set() {
        let mut s = spec();
        s.capabilities.bounding = vec!["CAP_SYS_MODULE".into(), "CAP_MKNOD".into()];
        s.mounts.protect_kernel_modules = true;
        s.mounts.private_devices = false;

        let report = assess(&s, &UnitFacts::default(), &groups);

        assert_eq!(
            badness(&report, "CapabilityBoundingSet=~CAP_SYS_MODULE"),
            Some(0)
        );
        assert_eq!(
            badness(&report, "CapabilityBoundingSet=~CAP_MKNOD"),
            Some(1)
        );
    }

    #[test]
    fn a_firewall_counts_as_an_allow_list_only_when_it_denies_both_families() {
        let mut s = spec();
        s.firewall.deny = vec!["0.0.0.0/0".into()];
        let half = assess(&s, &UnitFacts::default(), &groups);
        s.firewall.deny.push("::/0".into());
        s.firewall.allow = vec!["127.0.0.1/32".into()];
        let local = assess(&s, &UnitFacts::default(), &groups);

        assert_eq!(badness(&half, "IPAddressDeny="), Some(10));
        assert_eq!(badness(&local, "IPAddressDeny="), Some(2));
    }

    #[test]
    fn a_dynamic_uids_ipc_goes_at_release_whatever_the_spec_says() {
        let mut s = spec();
        s.remove_ipc = false;

        let report = assess(&s, &UnitFacts::default(), &groups);

        assert_eq!(badness(&report, "RemoveIPC="), Some(0));
    }

    fn in_block_mode(user: ImageUser) -> UnitFacts {
        UnitFacts {
            image_user: Some(user),
            ..UnitFacts::default()
        }
    }

    #[test]
    fn block_mode_counts_as_a_user_namespace_of_its_own() {
        let s = spec();

        let dynamic = assess(&s, &UnitFacts::default(), &groups);
        let block = assess(&s, &in_block_mode(ImageUser::User), &groups);

        assert_eq!(badness(&dynamic, "PrivateUsers="), Some(1));
        assert_eq!(badness(&block, "PrivateUsers="), Some(0));
        assert!(block.exposure < dynamic.exposure);
    }

    #[test]
    fn root_of_its_own_namespace_is_not_host_root() {
        let root = assess(&spec(), &in_block_mode(ImageUser::NamespaceRoot), &groups);
        let user = assess(&spec(), &in_block_mode(ImageUser::User), &groups);
        let host_root = UnitFacts {
            host_root: true,
            ..UnitFacts::default()
        };

        assert_eq!(badness(&root, "User=/DynamicUser="), Some(0));
        assert_eq!(badness(&root, "SupplementaryGroups="), Some(0));
        assert_eq!(badness(&root, "RemoveIPC="), Some(0));
        assert_eq!(badness(&user, "User=/DynamicUser="), Some(0));
        let host = assess(&spec(), &host_root, &groups);
        assert_eq!(badness(&host, "User=/DynamicUser="), Some(10));
    }

    #[test]
    fn a_root_master_s_namespace_capabilities_still_count_against_it() {
        let mut s = spec();
        s.capabilities.bounding = berth_protocol::sandbox::NAMESPACE_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let facts = in_block_mode(ImageUser::NamespaceRoot);

        let capable = assess(&s, &facts, &groups);
        let without = assess(&spec(), &facts, &groups);

        for id in [
            "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
            "CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)",
            "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
            "CapabilityBoundingSet=~CAP_KILL",
            "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
        ] {
            assert_eq!(badness(&capable, id), Some(1), "{id}");
        }
        assert_eq!(
            badness(&capable, "CapabilityBoundingSet=~CAP_SYS_ADMIN"),
            Some(0)
        );
        assert!(capable.exposure > without.exposure);
    }
}
