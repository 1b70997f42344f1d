//! Laying a [`Layer`] over its base spec: every part only tightens (a value that would
//! loosen the base is ignored, with a warning naming its assignment), except in a trusted
//! profile, which replaces what it sets.

use std::collections::BTreeSet;

use berth_protocol::sandbox::{
    AddressFamilies, KeyringMode, MAX_ENTRIES, MAX_PATHS, NAMESPACE_CAPABILITIES, ProcSubset,
    ProtectHome, ProtectProc, ProtectSystem, Rlimit, SandboxPath, SandboxSpec, ServiceDirectory,
};

use super::parse::{limit_above, limit_min};
use super::{
    ADDRESS_FAMILIES, CAPABILITIES, DEFAULT_DIRECTORY_MODE, DIRECTORY_KINDS, Layer, Listed,
    NAMESPACE_KINDS, NameSet, Origin, Source, expand_syscalls,
};

/// Capabilities ProtectClock= drops, as systemd does.
const CLOCK_CAPABILITIES: [&str; 2] = ["CAP_SYS_TIME", "CAP_WAKE_ALARM"];

pub(super) fn merge(
    base: &SandboxSpec,
    layer: Layer,
    origin: Origin,
) -> (SandboxSpec, Vec<String>) {
    let mut m = Merge {
        out: base.clone(),
        warnings: Vec::new(),
        replace: origin == Origin::Profile { trusted: true },
    };
    let Layer {
        flags,
        protect_system,
        protect_home,
        protect_proc,
        proc_subset,
        keyring,
        read_only,
        read_write,
        inaccessible,
        binds,
        tmpfs,
        devices,
        directories,
        directory_modes,
        bounding,
        ambient,
        syscalls,
        error_number,
        architectures,
        families,
        namespaces,
        rlimits,
        resources,
        umask,
        dynamic_user,
        protect_clock,
        ip_allow,
        ip_deny,
        credentials,
        warnings,
        image_users: _,
    } = layer;
    m.warnings = warnings;

    for (flag, (on, source)) in flags {
        let field = flag.field(&mut m.out);
        if m.replace {
            *field = on;
        } else if *field && !on {
            m.warnings.push(loosens(&source));
        } else {
            *field |= on;
        }
    }
    let replace = m.replace;
    let ordered = |warnings: &mut Vec<String>, loosened: Option<Source>| {
        if let Some(source) = loosened {
            warnings.push(loosens(&source));
        }
    };
    let w = &mut m.warnings;
    ordered(
        w,
        tighten_ordered(
            &mut m.out.mounts.protect_system,
            protect_system,
            system_rank,
            replace,
        ),
    );
    ordered(
        w,
        tighten_ordered(
            &mut m.out.mounts.protect_home,
            protect_home,
            home_rank,
            replace,
        ),
    );
    ordered(
        w,
        tighten_ordered(
            &mut m.out.mounts.protect_proc,
            protect_proc,
            proc_rank,
            replace,
        ),
    );
    ordered(
        w,
        tighten_ordered(
            &mut m.out.mounts.proc_subset,
            proc_subset,
            subset_rank,
            replace,
        ),
    );
    ordered(
        w,
        tighten_ordered(&mut m.out.keyring, keyring, keyring_rank, replace),
    );

    m.paths(PathList::ReadOnly, read_only);
    m.paths(PathList::Inaccessible, inaccessible);
    m.read_write_paths(read_write);
    m.union(
        "BindPaths=",
        binds,
        |out| &mut out.mounts.bind_paths,
        |a, b| a == b,
    );
    m.union(
        "TemporaryFileSystem=",
        tmpfs,
        |out| &mut out.mounts.temporary_filesystems,
        |a, b| a.path == b.path,
    );
    m.union(
        "DeviceAllow=",
        devices,
        |out| &mut out.mounts.device_allow,
        |a, b| a == b,
    );
    for (kind, (list, mode)) in directories.into_iter().zip(directory_modes).enumerate() {
        m.directories(kind, list, mode.map(|(mode, _)| mode));
    }

    m.capabilities(bounding, ambient);
    m.syscall_filter(syscalls);
    if let Some((errno, _)) = error_number {
        m.out.syscalls.error_number = errno;
    }
    m.architectures(architectures);
    m.address_families(families);
    m.namespaces(namespaces);
    if let Some((on, source)) = protect_clock {
        m.protect_clock(on, &source);
    }
    super::firewall::merge(
        &mut m.out.firewall,
        ip_allow,
        ip_deny,
        m.replace,
        &mut m.warnings,
    );

    super::credentials::merge(&mut m.out.credentials, credentials, &mut m.warnings);

    for (resource, (limit, source)) in rlimits {
        m.rlimit(&resource, limit, &source);
    }
    for source in super::resources::merge(&mut m.out.resources, resources, m.replace) {
        m.warnings.push(loosens(&source));
    }
    if let Some((mask, source)) = umask {
        let before = m.out.umask;
        if m.replace {
            m.out.umask = mask;
        } else {
            m.out.umask |= mask;
            if mask & before != before {
                let loosened = format!("{:04o}", before & !mask);
                m.loosens_in_part(&source, before == m.out.umask, &[loosened]);
            }
        }
    }

    if dynamic_user.is_some() {
        m.drop_namespace_capabilities();
    }
    // What the service may hold at all bounds what it holds from the start.
    let bounding = m.out.capabilities.bounding.clone();
    m.out
        .capabilities
        .ambient
        .retain(|cap| bounding.contains(cap));
    (m.out, m.warnings)
}

/// `Key=value is ignored: it would loosen the sandbox`.
fn loosens(source: &Source) -> String {
    format!(
        "{} is ignored: it would loosen the sandbox, which only tightens",
        source.at()
    )
}

fn tighten_ordered<T: Copy>(
    field: &mut T,
    asked: Option<(T, Source)>,
    rank: fn(T) -> u8,
    replace: bool,
) -> Option<Source> {
    let (asked, source) = asked?;
    if !replace && rank(asked) < rank(*field) {
        return Some(source);
    }
    *field = asked;
    None
}

fn system_rank(level: ProtectSystem) -> u8 {
    match level {
        ProtectSystem::No => 0,
        ProtectSystem::Yes => 1,
        ProtectSystem::Full => 2,
        ProtectSystem::Strict => 3,
    }
}

fn home_rank(level: ProtectHome) -> u8 {
    match level {
        ProtectHome::No => 0,
        ProtectHome::ReadOnly => 1,
        ProtectHome::Tmpfs => 2,
        ProtectHome::Yes => 3,
    }
}

fn proc_rank(level: ProtectProc) -> u8 {
    match level {
        ProtectProc::Default => 0,
        ProtectProc::Ptraceable => 1,
        ProtectProc::Invisible => 2,
        ProtectProc::Noaccess => 3,
    }
}

fn subset_rank(subset: ProcSubset) -> u8 {
    match subset {
        ProcSubset::All => 0,
        ProcSubset::Pid => 1,
    }
}

fn keyring_rank(mode: KeyringMode) -> u8 {
    match mode {
        KeyringMode::Shared => 0,
        KeyringMode::Private => 1,
    }
}

#[derive(Clone, Copy)]
enum PathList {
    ReadOnly,
    Inaccessible,
}

/// Whether `path` is `prefix` or below it.
fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `names` in the order of `universe`.
fn in_order(names: &BTreeSet<String>, universe: &[&str]) -> Vec<String> {
    universe
        .iter()
        .filter(|n| names.contains(**n))
        .map(|n| (*n).to_owned())
        .collect()
}

fn all(universe: &[&str]) -> BTreeSet<String> {
    universe.iter().map(|n| (*n).to_owned()).collect()
}

struct Merge {
    out: SandboxSpec,
    warnings: Vec<String>,
    replace: bool,
}

impl Merge {
    /// A warning for a value that loosens: wholly when nothing of it took effect
    /// (`unchanged`), else for the `parts` named.
    fn loosens_in_part(&mut self, source: &Source, unchanged: bool, parts: &[String]) {
        if unchanged {
            self.warnings.push(loosens(source));
        } else {
            let mut shown: Vec<&str> = parts.iter().take(8).map(String::as_str).collect();
            let more = parts.len().saturating_sub(shown.len());
            let more = format!("and {more} more");
            if parts.len() > shown.len() {
                shown.push(&more);
            }
            self.warnings.push(format!(
                "{} is ignored in part: {} would loosen the sandbox, which only tightens",
                source.at(),
                shown.join(" ")
            ));
        }
    }

    /// An empty assignment that would drop what the base has.
    fn reset_ignored(&mut self, reset: Option<Source>, base_has_some: bool) {
        if let Some(source) = reset
            && base_has_some
            && !self.replace
        {
            self.warnings.push(loosens(&source));
        }
    }

    /// Appends what `list` adds that `field` lacks, within [`MAX_PATHS`].
    fn union<T: Clone>(
        &mut self,
        directive: &str,
        list: Listed<T>,
        field: fn(&mut SandboxSpec) -> &mut Vec<T>,
        same: fn(&T, &T) -> bool,
    ) {
        if !list.touched() {
            return;
        }
        let replace = self.replace;
        let base_has_some = !field(&mut self.out).is_empty();
        if list.reset.is_some() && replace {
            field(&mut self.out).clear();
        }
        self.reset_ignored(list.reset, base_has_some);
        let mut dropped = None;
        let entries = field(&mut self.out);
        for (item, source) in list.items {
            if entries.iter().any(|e| same(e, &item)) {
                continue;
            }
            if entries.len() == MAX_PATHS {
                dropped = Some(source);
                break;
            }
            entries.push(item);
        }
        if let Some(source) = dropped {
            self.warnings.push(format!(
                "{} is ignored in part: {directive} holds at most {MAX_PATHS} entries",
                source.at()
            ));
        }
    }

    fn paths(&mut self, which: PathList, list: Listed<SandboxPath>) {
        match which {
            PathList::ReadOnly => self.union(
                "ReadOnlyPaths=",
                list,
                |o| &mut o.mounts.read_only_paths,
                same_path,
            ),
            PathList::Inaccessible => self.union(
                "InaccessiblePaths=",
                list,
                |o| &mut o.mounts.inaccessible_paths,
                same_path,
            ),
        }
    }

    /// ReadWritePaths= keeps writable what already is (the image is always read-only), so it
    /// tightens nothing and loosens only where it reaches into what the base made read-only or
    /// inaccessible: there it is ignored.
    fn read_write_paths(&mut self, mut list: Listed<SandboxPath>) {
        if !self.replace {
            let mounts = &self.out.mounts;
            let closed: Vec<String> = mounts
                .read_only_paths
                .iter()
                .chain(&mounts.inaccessible_paths)
                .map(|p| p.path.clone())
                .chain(
                    mounts
                        .temporary_filesystems
                        .iter()
                        .filter(|fs| fs.read_only)
                        .map(|fs| fs.path.clone()),
                )
                .collect();
            let mut kept = Vec::new();
            for (path, source) in list.items {
                if closed.iter().any(|c| is_under(&path.path, c)) {
                    self.loosens_in_part(&source, false, std::slice::from_ref(&path.path));
                } else {
                    kept.push((path, source));
                }
            }
            list.items = kept;
        }
        self.union(
            "ReadWritePaths=",
            list,
            |o| &mut o.mounts.read_write_paths,
            same_path,
        );
    }

    fn directories(&mut self, kind: usize, list: Listed<String>, mode: Option<u32>) {
        let kind_of = DIRECTORY_KINDS[kind];
        let mode = mode.unwrap_or(DEFAULT_DIRECTORY_MODE);
        let base_has_some = self.out.directories.iter().any(|d| d.kind == kind_of);
        if list.reset.is_some() && self.replace {
            self.out.directories.retain(|d| d.kind != kind_of);
        }
        self.reset_ignored(list.reset, base_has_some);
        for (name, source) in list.items {
            let directories = &mut self.out.directories;
            if directories
                .iter()
                .any(|d| d.kind == kind_of && d.name == name)
            {
                continue;
            }
            if directories.len() == MAX_ENTRIES {
                self.warnings.push(format!(
                    "{} is ignored in part: a service has at most {} directories",
                    source.at(),
                    MAX_ENTRIES
                ));
                break;
            }
            directories.push(ServiceDirectory {
                kind: kind_of,
                name,
                mode,
            });
        }
    }

    /// One capability set: the base's, less what the layer leaves out; the layer's own
    /// additions are ignored.
    fn capability_set(&mut self, set: NameSet, ambient: bool) {
        let Some(source) = set.last.clone() else {
            return;
        };
        let allowed = set.allowed.unwrap_or_else(|| all(CAPABILITIES));
        let field = if ambient {
            &mut self.out.capabilities.ambient
        } else {
            &mut self.out.capabilities.bounding
        };
        if self.replace {
            *field = in_order(&allowed, CAPABILITIES);
            return;
        }
        let before: BTreeSet<String> = field.iter().cloned().collect();
        let after: BTreeSet<String> = before.intersection(&allowed).cloned().collect();
        *field = in_order(&after, CAPABILITIES);
        let extra: Vec<String> = set
            .asked
            .intersection(&allowed)
            .filter(|cap| !before.contains(*cap))
            .cloned()
            .collect();
        if !extra.is_empty() {
            self.loosens_in_part(&source, after == before, &extra);
        }
    }

    /// DynamicUser=yes: a transient uid of the host, never root, so outside any block of uids;
    /// the capabilities a block-mode profile bounds for a root master
    /// ([`NAMESPACE_CAPABILITIES`]) are of no use to it unless ambient (no_new_privs: no exec
    /// gains one), and berth-helper grants them only in block mode: they leave the bounding set.
    fn drop_namespace_capabilities(&mut self) {
        let caps = &mut self.out.capabilities;
        let ambient = caps.ambient.clone();
        caps.bounding
            .retain(|c| ambient.contains(c) || !NAMESPACE_CAPABILITIES.contains(&c.as_str()));
    }

    fn capabilities(&mut self, bounding: NameSet, ambient: NameSet) {
        self.capability_set(bounding, false);
        self.capability_set(ambient, true);
    }

    fn syscall_filter(&mut self, set: super::SyscallSet) {
        let Some(source) = set.last.clone() else {
            return;
        };
        if let Some(at) = &set.per_call_errno {
            self.warnings.push(format!(
                "{}: a per-syscall errno is not supported yet; those syscalls fail as \
                 SystemCallErrorNumber= says",
                at.at()
            ));
        }
        let filter = &mut self.out.syscalls;
        let Some((allow_list, names)) = set.mode else {
            let base_has_some = filter.allow.is_some() || !filter.deny.is_empty();
            if self.replace {
                filter.allow = None;
                filter.deny.clear();
            }
            self.reset_ignored(set.reset, base_has_some);
            return;
        };
        if self.replace {
            if allow_list {
                filter.allow = Some(names.into_iter().collect());
                filter.deny.clear();
            } else {
                filter.allow = None;
                filter.deny = names.into_iter().collect();
            }
            return;
        }
        if !allow_list {
            let mut deny: BTreeSet<String> = filter.deny.iter().cloned().collect();
            deny.extend(names);
            filter.deny = deny.into_iter().collect();
            return;
        }
        match &filter.allow {
            None => filter.allow = Some(names.into_iter().collect()),
            Some(before) => {
                let before: BTreeSet<String> = before.iter().cloned().collect();
                let after: BTreeSet<String> = before.intersection(&names).cloned().collect();
                let unchanged = after == before;
                filter.allow = Some(after.into_iter().collect());
                let extra: Vec<String> = set
                    .asked
                    .intersection(&names)
                    .filter(|n| !before.contains(*n))
                    .cloned()
                    .collect();
                if !extra.is_empty() {
                    self.loosens_in_part(&source, unchanged, &extra);
                }
            }
        }
    }

    fn architectures(&mut self, set: NameSet) {
        let Some(source) = set.last.clone() else {
            return;
        };
        let field = &mut self.out.syscalls.architectures;
        let Some(asked) = set.allowed else {
            let base_has_some = !field.is_empty();
            if self.replace {
                field.clear();
            }
            self.reset_ignored(set.reset, base_has_some);
            return;
        };
        if self.replace || field.is_empty() {
            *field = asked.into_iter().collect();
            return;
        }
        let before: BTreeSet<String> = field.iter().cloned().collect();
        let after: BTreeSet<String> = before.intersection(&asked).cloned().collect();
        *field = after.iter().cloned().collect();
        let extra: Vec<String> = asked.difference(&before).cloned().collect();
        if !extra.is_empty() {
            self.loosens_in_part(&source, after == before, &extra);
        }
    }

    /// RestrictAddressFamilies=: the families both allow, written as the shorter of an
    /// allow-list or a deny-list (a deny-list, as in systemd, also allows families newer than
    /// berth's list).
    fn address_families(&mut self, set: NameSet) {
        let Some(source) = set.last.clone() else {
            return;
        };
        let field = &mut self.out.syscalls.address_families;
        let Some(asked) = set.allowed else {
            let base_has_some = field.is_some();
            if self.replace {
                *field = None;
            }
            self.reset_ignored(set.reset, base_has_some);
            return;
        };
        let universe = all(ADDRESS_FAMILIES);
        let (before, before_denies) = match field {
            _ if self.replace => (universe.clone(), true),
            None => (universe.clone(), true),
            Some(f) if f.allow_list => (f.families.iter().cloned().collect(), false),
            Some(f) => (
                universe
                    .iter()
                    .filter(|n| !f.families.contains(n))
                    .cloned()
                    .collect(),
                true,
            ),
        };
        let after: BTreeSet<String> = before.intersection(&asked).cloned().collect();
        *field = Some(if before_denies && after.len() * 2 > universe.len() {
            AddressFamilies {
                allow_list: false,
                families: in_order(
                    &universe.difference(&after).cloned().collect(),
                    ADDRESS_FAMILIES,
                ),
            }
        } else {
            AddressFamilies {
                allow_list: true,
                families: in_order(&after, ADDRESS_FAMILIES),
            }
        });
        let extra: Vec<String> = set
            .asked
            .intersection(&asked)
            .filter(|n| !before.contains(*n))
            .cloned()
            .collect();
        if !extra.is_empty() && !self.replace {
            self.loosens_in_part(&source, after == before, &extra);
        }
    }

    fn namespaces(&mut self, set: NameSet) {
        let Some(source) = set.last.clone() else {
            return;
        };
        let field = &mut self.out.syscalls.namespaces_allowed;
        let Some(asked) = set.allowed else {
            let base_has_some = field.is_some();
            if self.replace {
                *field = None;
            }
            self.reset_ignored(set.reset, base_has_some);
            return;
        };
        let universe = all(NAMESPACE_KINDS);
        let before: BTreeSet<String> = match field {
            Some(kinds) if !self.replace => kinds.iter().cloned().collect(),
            _ => universe.clone(),
        };
        let after: BTreeSet<String> = before.intersection(&asked).cloned().collect();
        *field = (after != universe).then(|| in_order(&after, NAMESPACE_KINDS));
        let extra: Vec<String> = set
            .asked
            .intersection(&asked)
            .filter(|n| !before.contains(*n))
            .cloned()
            .collect();
        if !extra.is_empty() && !self.replace {
            self.loosens_in_part(&source, after == before, &extra);
        }
    }

    /// ProtectClock=yes: the @clock syscalls denied and the clock capabilities dropped.
    fn protect_clock(&mut self, on: bool, source: &Source) {
        let clock = expand_syscalls("@clock").unwrap_or_default();
        let deny = &mut self.out.syscalls.deny;
        if on {
            let mut names: BTreeSet<String> = deny.iter().cloned().collect();
            names.extend(clock);
            *deny = names.into_iter().collect();
            let caps = &mut self.out.capabilities;
            caps.bounding
                .retain(|c| !CLOCK_CAPABILITIES.contains(&c.as_str()));
            caps.ambient
                .retain(|c| !CLOCK_CAPABILITIES.contains(&c.as_str()));
        } else if !self.replace && clock.iter().all(|n| deny.contains(n)) {
            self.warnings.push(loosens(source));
        }
    }

    fn rlimit(&mut self, resource: &str, limit: Option<Rlimit>, source: &Source) {
        let position = self.out.rlimits.iter().position(|r| r.resource == resource);
        let Some(limit) = limit else {
            // An empty assignment: back to the helper's default, which may be higher.
            if let Some(index) = position {
                if self.replace {
                    self.out.rlimits.remove(index);
                } else {
                    self.warnings.push(loosens(source));
                }
            }
            return;
        };
        match position {
            Some(index) if !self.replace => {
                let before = self.out.rlimits[index].clone();
                let after = Rlimit {
                    resource: before.resource.clone(),
                    soft: limit_min(before.soft, limit.soft),
                    hard: limit_min(before.hard, limit.hard),
                };
                if limit_above(limit.soft, before.soft) || limit_above(limit.hard, before.hard) {
                    let what = format!("Limit{resource}= above the base's");
                    self.loosens_in_part(source, after == before, &[what]);
                }
                self.out.rlimits[index] = after;
            }
            Some(index) => self.out.rlimits[index] = limit,
            None => self.out.rlimits.push(limit),
        }
    }
}

fn same_path(a: &SandboxPath, b: &SandboxPath) -> bool {
    a.path == b.path
}
