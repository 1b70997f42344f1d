//! The systemd unit that asks for the sandbox a [`SandboxSpec`] describes, so that
//! `systemd-analyze security --offline=yes` can score what berth scores (manager/tests/
//! security_oracle.rs holds the two numbers together).

use berth_protocol::sandbox::{
    KeyringMode, ProcSubset, ProtectHome, ProtectProc, ProtectSystem, SandboxSpec,
};

use super::score::{Filter, GroupSyscalls, UnitFacts, architectures_grade, protects_clock};

/// The systemd unit that asks for the sandbox `spec` describes, as far as the checks look:
/// `systemd-analyze security --offline=yes` on it gives berth's exposure (the test of this
/// module holds them together). `groups` decides ProtectClock= as [`assess`] does.
pub fn spec_as_unit(spec: &SandboxSpec, facts: &UnitFacts, groups: GroupSyscalls<'_>) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let m = &spec.mounts;
    let mut unit = String::new();
    let mut line = |text: String| {
        unit.push_str(&text);
        unit.push('\n');
    };
    line(format!(
        "# berth's sandbox (profile {}) as a systemd unit, for systemd-analyze security",
        spec.profile
    ));
    line("[Service]".into());
    line("ExecStart=/bin/true".into());
    // berth runs every service from its image, in a mount namespace of its own, as a
    // dynamic uid or its image's users on a block of host uids (root of that namespace is not
    // the host's): a static non-root name scores as those do, without DynamicUser='s
    // implications (which berth's spec states field by field).
    line("RootDirectory=/var/lib/berth/image".into());
    line("PrivateMounts=yes".into());
    line(format!(
        "User={}",
        if facts.host_root {
            "root"
        } else {
            "berth-dynamic"
        }
    ));
    if !spec.identity.supplementary_groups.is_empty() {
        let gids: Vec<String> = spec
            .identity
            .supplementary_groups
            .iter()
            .map(|g| g.to_string())
            .collect();
        line(format!("SupplementaryGroups={}", gids.join(" ")));
    }
    // The block's user namespace counts as one, as berth's check counts it.
    line(format!(
        "PrivateUsers={}",
        yes(spec.identity.private_users || facts.image_user.is_some())
    ));
    line(format!(
        "PrivateNetwork={}",
        yes(spec.namespaces.private_network)
    ));
    line(format!("PrivateIPC={}", yes(spec.namespaces.private_ipc)));
    line(format!(
        "ProtectHostname={}",
        yes(spec.namespaces.private_uts)
    ));
    line(format!("PrivateTmp={}", yes(m.private_tmp)));
    line(format!("PrivateDevices={}", yes(m.private_devices)));
    for device in &m.device_allow {
        let access: String = [(device.read, 'r'), (device.write, 'w'), (device.mknod, 'm')]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
        line(format!("DeviceAllow={} {access}", device.path));
    }
    line(format!(
        "ProtectSystem={}",
        match m.protect_system {
            ProtectSystem::No => "no",
            ProtectSystem::Yes => "yes",
            ProtectSystem::Full => "full",
            ProtectSystem::Strict => "strict",
        }
    ));
    line(format!(
        "ProtectHome={}",
        match m.protect_home {
            ProtectHome::No => "no",
            ProtectHome::Yes => "yes",
            ProtectHome::ReadOnly => "read-only",
            ProtectHome::Tmpfs => "tmpfs",
        }
    ));
    line(format!(
        "ProtectKernelTunables={}",
        yes(m.protect_kernel_tunables)
    ));
    line(format!(
        "ProtectKernelModules={}",
        yes(m.protect_kernel_modules)
    ));
    line(format!("ProtectKernelLogs={}", yes(m.protect_kernel_logs)));
    line(format!(
        "ProtectControlGroups={}",
        yes(m.protect_control_groups)
    ));
    line(format!(
        "ProtectClock={}",
        yes(protects_clock(spec, groups))
    ));
    line(format!(
        "ProtectProc={}",
        match m.protect_proc {
            ProtectProc::Default => "default",
            ProtectProc::Invisible => "invisible",
            ProtectProc::Ptraceable => "ptraceable",
            ProtectProc::Noaccess => "noaccess",
        }
    ));
    line(format!(
        "ProcSubset={}",
        match m.proc_subset {
            ProcSubset::All => "all",
            ProcSubset::Pid => "pid",
        }
    ));
    line(format!("NoNewPrivileges={}", yes(spec.no_new_privileges)));
    // An empty assignment is the empty set.
    line(format!(
        "CapabilityBoundingSet={}",
        spec.capabilities.bounding.join(" ")
    ));
    if !spec.capabilities.ambient.is_empty() {
        line(format!(
            "AmbientCapabilities={}",
            spec.capabilities.ambient.join(" ")
        ));
    }
    let sc = &spec.syscalls;
    if let Some(kinds) = &sc.namespaces_allowed {
        if kinds.is_empty() {
            line("RestrictNamespaces=yes".into());
        } else {
            line(format!("RestrictNamespaces={}", kinds.join(" ")));
        }
    }
    if let Some(families) = &sc.address_families {
        match (families.allow_list, families.families.is_empty()) {
            (true, true) => line("RestrictAddressFamilies=none".into()),
            (true, false) => line(format!(
                "RestrictAddressFamilies={}",
                families.families.join(" ")
            )),
            (false, true) => {}
            (false, false) => line(format!(
                "RestrictAddressFamilies=~{}",
                families.families.join(" ")
            )),
        }
    }
    line(format!("RestrictRealtime={}", yes(sc.restrict_realtime)));
    line(format!("RestrictSUIDSGID={}", yes(sc.restrict_suid_sgid)));
    line(format!("LockPersonality={}", yes(sc.lock_personality)));
    line(format!(
        "MemoryDenyWriteExecute={}",
        yes(sc.memory_deny_write_execute)
    ));
    match Filter::of(spec) {
        Filter::None => {}
        Filter::Allow { allow, deny } => {
            // An allow list of nothing still lets execve through (systemd adds @default).
            let allow = if allow.is_empty() {
                "execve".to_owned()
            } else {
                allow.join(" ")
            };
            line(format!("SystemCallFilter={allow}"));
            if !deny.is_empty() {
                line(format!("SystemCallFilter=~{}", deny.join(" ")));
            }
        }
        Filter::Deny(deny) => line(format!("SystemCallFilter=~{}", deny.join(" "))),
    }
    match architectures_grade(spec) {
        0 => line("SystemCallArchitectures=native".into()),
        8 => line(format!(
            "SystemCallArchitectures={}",
            sc.architectures.join(" ")
        )),
        _ => {}
    }
    line(format!("UMask={:04o}", spec.umask));
    line(format!(
        "KeyringMode={}",
        match spec.keyring {
            KeyringMode::Private => "private",
            KeyringMode::Shared => "shared",
        }
    ));
    line(format!(
        "RemoveIPC={}",
        yes(spec.remove_ipc || !facts.host_root)
    ));
    for cidr in &spec.firewall.allow {
        line(format!("IPAddressAllow={cidr}"));
    }
    for cidr in &spec.firewall.deny {
        line(format!("IPAddressDeny={cidr}"));
    }
    if facts.notify_access_all {
        line("NotifyAccess=all".into());
    }
    unit
}
