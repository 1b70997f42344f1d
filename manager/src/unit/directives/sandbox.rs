//! The sandbox's directives.

use super::super::values::parse_boolean;

/// Whether `key=value` in `[Service]` would give the service more than its sandbox: a
/// protection turned off, host identities, capabilities, host paths or namespaces, or a reset
/// that drops a filter. Such directives are reported and never applied.
pub(super) fn loosens_sandbox(key: &str, value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let non_empty = !value.is_empty();
    match key {
        // Protections that `no` turns off.
        "PrivateTmp"
        | "PrivateDevices"
        | "PrivateNetwork"
        | "PrivateUsers"
        | "PrivateIPC"
        | "PrivatePIDs"
        | "PrivateMounts"
        | "NoNewPrivileges"
        | "ProtectSystem"
        | "ProtectHome"
        | "ProtectKernelTunables"
        | "ProtectKernelModules"
        | "ProtectKernelLogs"
        | "ProtectControlGroups"
        | "ProtectClock"
        | "ProtectHostname"
        | "RestrictRealtime"
        | "RestrictSUIDSGID"
        | "RestrictNamespaces"
        | "LockPersonality"
        | "MemoryDenyWriteExecute"
        | "DynamicUser"
        | "RemoveIPC" => parse_boolean(value) == Some(false),
        "ProtectProc" => lower == "default",
        "ProcSubset" => lower == "all",
        "DevicePolicy" => lower == "auto",
        "KeyringMode" => lower == "shared",
        "User" | "Group" => value == "root" || value == "0",
        // Capabilities granted (a `~` list only removes some).
        "CapabilityBoundingSet" | "AmbientCapabilities" => non_empty && !value.starts_with('~'),
        // Host groups, devices, paths, namespaces and privileged hooks.
        "SupplementaryGroups"
        | "SecureBits"
        | "DeviceAllow"
        | "BindPaths"
        | "BindReadOnlyPaths"
        | "ReadWritePaths"
        | "ExecPaths"
        | "NetworkNamespacePath"
        | "IPCNamespacePath"
        | "IPAddressAllow"
        | "PAMName" => non_empty,
        "PermissionsStartOnly" | "RootDirectoryStartOnly" => parse_boolean(value) == Some(true),
        "Delegate" => non_empty && parse_boolean(value) != Some(false),
        // An empty assignment resets the filter to "everything allowed".
        "SystemCallFilter"
        | "SystemCallArchitectures"
        | "RestrictAddressFamilies"
        | "RestrictFileSystems"
        | "RestrictNetworkInterfaces" => value.is_empty(),
        // Raising priority needs privileges the sandbox does not grant.
        "Nice" | "OOMScoreAdjust" => value.starts_with('-'),
        "CPUSchedulingPolicy" => matches!(lower.as_str(), "fifo" | "rr"),
        "IOSchedulingClass" => matches!(lower.as_str(), "realtime" | "1"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn a_loosening_directive_in_a_drop_in_is_ignored_and_named_by_the_drop_in() {
        let cfg = with_drop_in("[Service]\nExecStart=/bin/a\n", "[Service]\nUser=root\n").unwrap();

        assert_eq!(
            cfg.warnings,
            [
                "hello.service.d/override.conf:2: [Service] User=root is ignored: berth's sandbox \
              is always on and the profile decides it"
            ]
        );
    }

    #[test]
    fn loosening_directives_warn_that_the_sandbox_is_always_on() {
        for line in [
            "User=root",
            "Group=0",
            "PrivateTmp=no",
            "NoNewPrivileges=false",
            "ProtectSystem=no",
            "CapabilityBoundingSet=CAP_SYS_ADMIN",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "BindPaths=/etc:/host-etc",
            "SystemCallFilter=",
            "DynamicUser=no",
            "ProtectProc=default",
        ] {
            let cfg = with_service(&format!("{line}\n"));

            assert_eq!(
                cfg.warnings,
                [format!(
                    "hello.service:3: [Service] {line} is ignored: berth's sandbox is always on \
                     and the profile decides it"
                )],
                "{line}"
            );
        }
    }

    #[test]
    fn tightening_sandbox_directives_are_not_reported_as_loosening() {
        for line in [
            "PrivateTmp=yes",
            "CapabilityBoundingSet=~CAP_SYS_ADMIN",
            "CapabilityBoundingSet=",
            "User=app",
            "ProtectSystem=strict",
            "SystemCallFilter=@system-service",
        ] {
            let cfg = with_service(&format!("{line}\n"));

            assert_eq!(cfg.warnings.len(), 1, "{line}");
            assert!(
                cfg.warnings[0].ends_with("is not supported yet, ignored"),
                "{line}"
            );
        }
    }
}
