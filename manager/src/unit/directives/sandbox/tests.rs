//! The table, directive by directive: the value parsed, an empty value resetting, a
//! tightening applied and a loosening ignored with its warning; then layers and drop-ins.

use berth_protocol::sandbox::{
    AddressFamilies, DirectoryKind, KeyringMode, ProcSubset, ProtectHome, ProtectProc,
    ProtectSystem, Rlimit, SandboxSpec,
};

use super::super::test_support::{with_drop_in, with_service};
use super::*;
use crate::unit::syntax::parse;

fn baseline() -> SandboxSpec {
    SandboxSpec::baseline(0, 0, "")
}

/// `lines` as the `[Service]` section of the image's unit, over `base`.
fn unit_over(base: &SandboxSpec, lines: &str) -> (SandboxSpec, Vec<String>) {
    let file = parse(&format!("[Service]\n{lines}")).unwrap();
    sandbox_from("hello.service", base, &[("hello.service", &file)])
}

/// `lines` over the baseline, as the image's unit.
fn unit(lines: &str) -> (SandboxSpec, Vec<String>) {
    unit_over(&baseline(), lines)
}

/// The unit's lines, then one host drop-in's, over the baseline.
fn unit_and_drop_in(unit_lines: &str, drop_in_lines: &str) -> (SandboxSpec, Vec<String>) {
    let file = parse(&format!("[Service]\n{unit_lines}")).unwrap();
    let drop_in = parse(&format!("[Service]\n{drop_in_lines}")).unwrap();
    sandbox_from(
        "hello.service",
        &baseline(),
        &[
            ("hello.service", &file),
            ("hello.service.d/override.conf", &drop_in),
        ],
    )
}

fn profile(lines: &str, trusted: bool) -> (SandboxSpec, Vec<String>) {
    let file = parse(&format!("[Service]\n{lines}")).unwrap();
    profile_sandbox(
        "hello.service",
        &baseline(),
        "profile test@1",
        &file,
        trusted,
    )
}

/// A `@group`'s syscall names, sorted.
fn group(name: &str) -> Vec<String> {
    berth_protocol::syscall_groups::expand(name)
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_loosening_ignored(warnings: &[String], line: usize, assignment: &str) {
    assert_eq!(
        warnings,
        [format!(
            "hello.service:{line}: [Service] {assignment} is ignored: it would loosen the \
             sandbox, which only tightens"
        )]
    );
}

// Boolean protections.

#[test]
fn every_boolean_protection_tightens_with_yes() {
    for row in TABLE {
        let Action::Flag(flag) = row.1 else { continue };
        let mut base = baseline();
        *flag.field(&mut base) = false;

        let (spec, warnings) = unit_over(&base, &format!("{}=yes\n", row.0));

        assert!(*flag.field(&mut spec.clone()), "{}", row.0);
        assert!(warnings.is_empty(), "{}: {warnings:?}", row.0);
    }
}

#[test]
fn every_boolean_protection_ignores_no_when_the_base_has_it() {
    for row in TABLE {
        let Action::Flag(flag) = row.1 else { continue };
        let mut base = baseline();
        *flag.field(&mut base) = true;

        let (mut spec, warnings) = unit_over(&base, &format!("{}=no\n", row.0));

        assert!(*flag.field(&mut spec), "{}", row.0);
        assert_loosening_ignored(&warnings, 2, &format!("{}=no", row.0));
    }
}

#[test]
fn no_where_the_base_is_off_already_changes_nothing_and_is_not_warned_about() {
    let (spec, warnings) = unit("PrivateNetwork=no\n");

    assert_eq!(spec, baseline());
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_boolean_protection_with_another_value_is_warned_about() {
    let (spec, warnings) = unit("PrivateNetwork=maybe\n");

    assert!(!spec.namespaces.private_network);
    assert_eq!(
        warnings,
        ["hello.service:2: [Service] PrivateNetwork=maybe is not a boolean, ignored"]
    );
}

#[test]
fn the_last_assignment_of_a_layer_wins_before_it_meets_the_base() {
    let (spec, warnings) = unit("PrivateNetwork=yes\nPrivateNetwork=no\n");

    assert!(!spec.namespaces.private_network);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn an_empty_value_takes_back_what_the_layer_set() {
    let (spec, warnings) = unit(
        "PrivateNetwork=yes\nPrivateNetwork=\nProtectHome=yes\nProtectHome=\n\
         ProtectProc=invisible\nProtectProc=\n",
    );

    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec, baseline());
}

/// A value of systemd's syntax for every row that is not a boolean, with what it must change.
const EXAMPLES: &[(&str, &str)] = &[
    ("DynamicUser", "yes"),
    ("ProtectSystem", "full"),
    ("ProtectHome", "read-only"),
    ("DeviceAllow", "/dev/fuse rw"),
    ("ProtectProc", "invisible"),
    ("ProcSubset", "pid"),
    ("ReadOnlyPaths", "-/srv"),
    ("ReadWritePaths", "/var/lib/app"),
    ("InaccessiblePaths", "/etc/shadow"),
    ("ReadOnlyDirectories", "-/srv"),
    ("ReadWriteDirectories", "/var/lib/app"),
    ("InaccessibleDirectories", "/etc/shadow"),
    ("BindPaths", "/srv:/data"),
    ("BindReadOnlyPaths", "/etc/resolv.conf"),
    ("TemporaryFileSystem", "/var:ro"),
    ("CapabilityBoundingSet", "~CAP_SYS_ADMIN"),
    ("AmbientCapabilities", ""),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallErrorNumber", "EPERM"),
    ("SystemCallArchitectures", "native"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("RestrictNamespaces", "yes"),
    ("ProtectClock", "yes"),
    ("UMask", "0077"),
    ("KeyringMode", "private"),
    ("LimitCPU", "10s"),
    ("LimitFSIZE", "1G"),
    ("LimitDATA", "1G"),
    ("LimitSTACK", "8M"),
    ("LimitCORE", "0"),
    ("LimitRSS", "1G"),
    ("LimitNOFILE", "1024:4096"),
    ("LimitAS", "4G"),
    ("LimitNPROC", "64"),
    ("LimitMEMLOCK", "64K"),
    ("LimitLOCKS", "16"),
    ("LimitSIGPENDING", "64"),
    ("LimitMSGQUEUE", "800K"),
    ("LimitNICE", "+5"),
    ("LimitRTPRIO", "0"),
    ("LimitRTTIME", "1s"),
    ("StateDirectory", "app"),
    ("CacheDirectory", "app"),
    ("LogsDirectory", "app"),
    ("RuntimeDirectory", "app"),
    ("ConfigurationDirectory", "app"),
    ("StateDirectoryMode", "0700"),
    ("CacheDirectoryMode", "0700"),
    ("LogsDirectoryMode", "0700"),
    ("RuntimeDirectoryMode", "0700"),
    ("ConfigurationDirectoryMode", "0700"),
    ("IPAddressAllow", "localhost 10.0.0.0/8"),
    ("IPAddressDeny", "any"),
    ("MemoryMax", "64M"),
    ("MemoryHigh", "10%"),
    ("TasksMax", "15%"),
    ("CPUQuota", "50%"),
    ("CPUWeight", "50"),
    ("IOWeight", "50"),
    ("LoadCredential", "db:/etc/credstore/db"),
    ("LoadCredentialEncrypted", "db"),
    ("SetCredential", "token:value"),
];

#[test]
fn every_row_reads_a_value_of_systemd_s_syntax() {
    let mut base = baseline();
    // What the examples narrow must be there to narrow.
    base.capabilities.bounding = strings(&["CAP_SYS_ADMIN", "CAP_KILL"]);
    base.capabilities.ambient = strings(&["CAP_KILL"]);
    base.keyring = KeyringMode::Shared;
    base.umask = 0o022;
    base.mounts.protect_system = ProtectSystem::No;
    for row in TABLE {
        if matches!(row.1, Action::Flag(_)) {
            continue;
        }
        let Some((_, value)) = EXAMPLES.iter().find(|(name, _)| *name == row.0) else {
            panic!("{}: no example", row.0);
        };
        // A mode needs a directory of its kind to show on.
        let directory = row
            .0
            .strip_suffix("DirectoryMode")
            .map_or(String::new(), |kind| format!("{kind}Directory=app\n"));
        let (with_directory, _) = profile(&directory, false);

        let file = parse(&format!("[Service]\n{directory}{}={value}\n", row.0)).unwrap();
        let (spec, warnings) =
            profile_sandbox("hello.service", &base, "profile test@1", &file, false);

        assert!(warnings.is_empty(), "{}={value}: {warnings:?}", row.0);
        assert_ne!(spec, base, "{}={value} changed nothing", row.0);
        if !directory.is_empty() {
            assert_ne!(spec.directories, with_directory.directories, "{}", row.0);
            let kind = &spec.directories[0];
            assert_eq!(kind.mode, 0o700, "{}", row.0);
        }
    }
}

#[test]
fn each_directory_mode_row_sets_its_own_kind() {
    for (kind, (dir, mode)) in DIRECTORY_KINDS.iter().zip([
        ("StateDirectory", "StateDirectoryMode"),
        ("CacheDirectory", "CacheDirectoryMode"),
        ("LogsDirectory", "LogsDirectoryMode"),
        ("RuntimeDirectory", "RuntimeDirectoryMode"),
        ("ConfigurationDirectory", "ConfigurationDirectoryMode"),
    ]) {
        let (spec, _) = unit(&format!("{dir}=app\n{mode}=0700\n"));

        assert_eq!(spec.directories.len(), 1, "{dir}");
        assert_eq!(
            (spec.directories[0].kind, spec.directories[0].mode),
            (*kind, 0o700),
            "{dir}"
        );
    }
}

#[test]
fn every_list_keeps_the_base_entries_through_an_empty_assignment() {
    let (base, _) = profile(
        "BindPaths=/srv\nTemporaryFileSystem=/var\nDeviceAllow=/dev/fuse\nReadWritePaths=/run/x\n",
        false,
    );
    for directive in [
        "BindPaths",
        "TemporaryFileSystem",
        "DeviceAllow",
        "ReadWritePaths",
    ] {
        let drop_in = parse(&format!("[Service]\n{directive}=\n")).unwrap();
        let main = parse("[Service]\n").unwrap();

        let (spec, warnings) = sandbox_from(
            "hello.service",
            &base,
            &[
                ("hello.service", &main),
                ("hello.service.d/x.conf", &drop_in),
            ],
        );

        assert_eq!(spec, base, "{directive}");
        assert_eq!(warnings.len(), 1, "{directive}: {warnings:?}");
        assert!(warnings[0].starts_with(&format!(
            "hello.service.d/x.conf:2: [Service] {directive}= is ignored"
        )));
    }
}

// Enumerated protections.

#[test]
fn protect_system_takes_booleans_full_and_strict_and_only_rises() {
    let mut base = baseline();
    base.mounts.protect_system = ProtectSystem::Yes;

    assert_eq!(
        unit_over(&base, "ProtectSystem=full\n")
            .0
            .mounts
            .protect_system,
        ProtectSystem::Full
    );
    assert_eq!(
        unit_over(&base, "ProtectSystem=strict\n")
            .0
            .mounts
            .protect_system,
        ProtectSystem::Strict
    );
    let (spec, warnings) = unit_over(&base, "ProtectSystem=false\n");
    assert_eq!(spec.mounts.protect_system, ProtectSystem::Yes);
    assert_loosening_ignored(&warnings, 2, "ProtectSystem=false");
    assert!(
        unit("ProtectSystem=most\n").1[0].ends_with("is not a boolean, full or strict, ignored")
    );
}

#[test]
fn protect_home_orders_no_read_only_tmpfs_yes() {
    assert_eq!(
        unit("ProtectHome=read-only\n").0.mounts.protect_home,
        ProtectHome::ReadOnly
    );
    assert_eq!(
        unit("ProtectHome=tmpfs\n").0.mounts.protect_home,
        ProtectHome::Tmpfs
    );
    let mut base = baseline();
    base.mounts.protect_home = ProtectHome::Yes;

    let (spec, warnings) = unit_over(&base, "ProtectHome=tmpfs\n");

    assert_eq!(spec.mounts.protect_home, ProtectHome::Yes);
    assert_loosening_ignored(&warnings, 2, "ProtectHome=tmpfs");
}

#[test]
fn protect_proc_and_proc_subset_only_rise() {
    let (spec, warnings) = unit("ProtectProc=invisible\nProcSubset=pid\n");
    assert_eq!(spec.mounts.protect_proc, ProtectProc::Invisible);
    assert_eq!(spec.mounts.proc_subset, ProcSubset::Pid);
    assert!(warnings.is_empty());

    let (spec, warnings) = unit_over(&spec, "ProtectProc=ptraceable\n");

    assert_eq!(spec.mounts.protect_proc, ProtectProc::Invisible);
    assert_loosening_ignored(&warnings, 2, "ProtectProc=ptraceable");
}

#[test]
fn keyring_mode_shared_loosens_private_and_inherit_is_never_done() {
    let (spec, warnings) = unit("KeyringMode=shared\n");
    assert_eq!(spec.keyring, KeyringMode::Private);
    assert_loosening_ignored(&warnings, 2, "KeyringMode=shared");

    let mut shared = baseline();
    shared.keyring = KeyringMode::Shared;
    assert_eq!(
        unit_over(&shared, "KeyringMode=private\n").0.keyring,
        KeyringMode::Private
    );
    assert!(unit("KeyringMode=inherit\n").1[0].contains("never shares the keyring of berthd"));
}

#[test]
fn dynamic_user_yes_implies_what_systemd_implies() {
    let (spec, warnings) = unit("ProtectSystem=full\nPrivateTmp=no\nDynamicUser=yes\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(spec.mounts.private_tmp && spec.remove_ipc && spec.syscalls.restrict_suid_sgid);
    assert_eq!(spec.mounts.protect_system, ProtectSystem::Strict);
    assert_eq!(spec.mounts.protect_home, ProtectHome::ReadOnly);
}

#[test]
fn dynamic_user_no_is_never_done() {
    let (spec, warnings) = unit("DynamicUser=no\n");

    assert_eq!(spec, baseline());
    assert_eq!(
        warnings,
        [
            "hello.service:2: [Service] DynamicUser=no is ignored: berth runs every service as a \
          dynamic user"
        ]
    );
}

// Paths.

#[test]
fn read_only_and_inaccessible_paths_add_to_the_base() {
    let mut base = baseline();
    base.mounts.read_only_paths = vec![SandboxPath {
        path: "/srv".into(),
        ignore_missing: false,
    }];

    let (spec, warnings) = unit_over(
        &base,
        "ReadOnlyPaths=-/opt/x //srv/\nInaccessiblePaths=/etc/secret +/root\n",
    );

    assert!(warnings.is_empty(), "{warnings:?}");
    let ro: Vec<(&str, bool)> = spec
        .mounts
        .read_only_paths
        .iter()
        .map(|p| (p.path.as_str(), p.ignore_missing))
        .collect();
    assert_eq!(ro, [("/srv", false), ("/opt/x", true)]);
    let hidden: Vec<&str> = spec
        .mounts
        .inaccessible_paths
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(hidden, ["/etc/secret", "/root"]);
}

#[test]
fn the_directories_names_before_systemd_231_are_the_paths_lists() {
    let (spec, warnings) = unit(
        "ReadWriteDirectories=-/etc/redis\nReadWritePaths=/var/lib/redis\n\
         ReadOnlyDirectories=/srv\nInaccessibleDirectories=/etc/secret\n",
    );
    let (reset, _) = unit("ReadWritePaths=/a\nReadWriteDirectories=\nReadWritePaths=/b\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    let paths = |list: &[SandboxPath]| -> Vec<(String, bool)> {
        list.iter()
            .map(|p| (p.path.clone(), p.ignore_missing))
            .collect()
    };
    assert_eq!(
        paths(&spec.mounts.read_write_paths),
        [
            ("/etc/redis".into(), true),
            ("/var/lib/redis".into(), false)
        ]
    );
    assert_eq!(
        paths(&spec.mounts.read_only_paths),
        [("/srv".into(), false)]
    );
    assert_eq!(
        paths(&spec.mounts.inaccessible_paths),
        [("/etc/secret".into(), false)]
    );
    // One list under both names, as in systemd: an empty assignment of either resets it.
    assert_eq!(
        paths(&reset.mounts.read_write_paths),
        [("/b".into(), false)]
    );
}

#[test]
fn an_empty_path_list_resets_the_layer_but_not_the_base() {
    let mut base = baseline();
    base.mounts.inaccessible_paths = vec![SandboxPath {
        path: "/srv".into(),
        ignore_missing: false,
    }];

    let (spec, warnings) = unit_over(
        &base,
        "InaccessiblePaths=/a\nInaccessiblePaths=\nInaccessiblePaths=/b\n",
    );

    let hidden: Vec<&str> = spec
        .mounts
        .inaccessible_paths
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(hidden, ["/srv", "/b"]);
    assert_loosening_ignored(&warnings, 3, "InaccessiblePaths=");
}

#[test]
fn a_relative_or_climbing_path_is_warned_about() {
    let (spec, warnings) = unit("ReadOnlyPaths=/ok relative\nInaccessiblePaths=/a/../b\n");

    assert!(spec.mounts.read_only_paths.is_empty());
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].ends_with(
        "ReadOnlyPaths=/ok relative is not an absolute path without '..' components, ignored"
    ));
}

#[test]
fn read_write_paths_are_kept_except_inside_what_the_base_closed() {
    let mut base = baseline();
    base.mounts.read_only_paths = vec![SandboxPath {
        path: "/run/app".into(),
        ignore_missing: false,
    }];

    let (spec, warnings) = unit_over(
        &base,
        "ReadWritePaths=/var/lib/app /run/app/sock /run/apple\n",
    );

    let rw: Vec<&str> = spec
        .mounts
        .read_write_paths
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(rw, ["/var/lib/app", "/run/apple"]);
    assert_eq!(
        warnings,
        [
            "hello.service:2: [Service] ReadWritePaths=/var/lib/app /run/app/sock /run/apple is \
          ignored in part: /run/app/sock would loosen the sandbox, which only tightens"
        ]
    );
}

#[test]
fn an_image_unit_binds_no_host_path_or_device() {
    let (spec, warnings) =
        unit("BindPaths=/etc:/host-etc\nBindReadOnlyPaths=/var\nDeviceAllow=/dev/fuse rw\n");

    assert_eq!(spec, baseline());
    assert_eq!(warnings.len(), 3);
    assert!(
        warnings[0].starts_with(
            "hello.service:2: [Service] BindPaths=/etc:/host-etc is ignored: an image's unit \
             may not reach host paths or devices"
        ),
        "{warnings:?}"
    );
}

#[test]
fn a_host_drop_in_and_a_profile_bind_host_paths_and_devices() {
    let lines = "BindPaths=/srv/data:/data:norbind\nBindReadOnlyPaths=-/etc/resolv.conf\n\
                 DeviceAllow=/dev/fuse rw\n";

    for (spec, warnings) in [unit_and_drop_in("", lines), profile(lines, false)] {
        assert!(warnings.is_empty(), "{warnings:?}");
        let binds: Vec<(&str, &str, bool, bool, bool)> = spec
            .mounts
            .bind_paths
            .iter()
            .map(|b| {
                (
                    b.source.as_str(),
                    b.target.as_str(),
                    b.read_only,
                    b.recursive,
                    b.ignore_missing,
                )
            })
            .collect();
        assert_eq!(
            binds,
            [
                ("/srv/data", "/data", false, false, false),
                ("/etc/resolv.conf", "/etc/resolv.conf", true, true, true)
            ]
        );
        assert_eq!(spec.mounts.device_allow.len(), 1);
        assert!(spec.mounts.device_allow[0].write && !spec.mounts.device_allow[0].mknod);
    }
}

#[test]
fn temporary_file_systems_take_their_options() {
    let (spec, warnings) = unit("TemporaryFileSystem=/var/cache:ro,mode=0700,size=1M /scratch\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    let fs: Vec<(&str, bool, u32, u64)> = spec
        .mounts
        .temporary_filesystems
        .iter()
        .map(|f| (f.path.as_str(), f.read_only, f.mode, f.size))
        .collect();
    assert_eq!(
        fs,
        [
            ("/var/cache", true, 0o700, 1 << 20),
            ("/scratch", false, 0o755, 0)
        ]
    );
}

// Capabilities.

fn with_bounding(caps: &[&str]) -> SandboxSpec {
    let mut base = baseline();
    base.capabilities.bounding = strings(caps);
    base
}

#[test]
fn a_bounding_set_keeps_only_what_both_allow() {
    let base = with_bounding(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]);

    let (spec, warnings) = unit_over(&base, "CapabilityBoundingSet=CAP_KILL CAP_CHOWN\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec.capabilities.bounding, ["CAP_CHOWN", "CAP_KILL"]);
}

#[test]
fn an_inverted_bounding_set_removes_and_is_no_loosening() {
    let base = with_bounding(&["CAP_CHOWN", "CAP_KILL"]);

    let (spec, warnings) = unit_over(&base, "CapabilityBoundingSet=~CAP_KILL CAP_SYS_ADMIN\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec.capabilities.bounding, ["CAP_CHOWN"]);
}

#[test]
fn capabilities_the_base_lacks_are_ignored_in_part() {
    let base = with_bounding(&["CAP_CHOWN", "CAP_KILL"]);

    let (spec, warnings) = unit_over(&base, "CapabilityBoundingSet=CAP_KILL CAP_SYS_ADMIN\n");

    assert_eq!(spec.capabilities.bounding, ["CAP_KILL"]);
    assert_eq!(
        warnings,
        [
            "hello.service:2: [Service] CapabilityBoundingSet=CAP_KILL CAP_SYS_ADMIN is ignored in \
          part: CAP_SYS_ADMIN would loosen the sandbox, which only tightens"
        ]
    );
}

#[test]
fn lines_of_a_bounding_set_combine_as_in_systemd() {
    let base = with_bounding(&["CAP_CHOWN", "CAP_KILL", "CAP_FOWNER"]);

    let (spec, _) = unit_over(
        &base,
        "CapabilityBoundingSet=CAP_CHOWN\nCapabilityBoundingSet=CAP_KILL\n\
         CapabilityBoundingSet=~CAP_CHOWN\n",
    );
    let (emptied, _) = unit_over(
        &base,
        "CapabilityBoundingSet=CAP_KILL\nCapabilityBoundingSet=\n",
    );

    assert_eq!(spec.capabilities.bounding, ["CAP_KILL"]);
    assert!(emptied.capabilities.bounding.is_empty());
}

#[test]
fn unknown_capabilities_are_warned_about() {
    let (_, warnings) = unit("CapabilityBoundingSet=CAP_BOGUS\n");

    assert_eq!(
        warnings,
        [
            "hello.service:2: [Service] CapabilityBoundingSet= unknown capabilities ignored: CAP_BOGUS"
        ]
    );
}

#[test]
fn ambient_capabilities_only_shrink_and_stay_within_the_bounding_set() {
    let (spec, warnings) = unit("AmbientCapabilities=CAP_NET_BIND_SERVICE\n");
    assert!(spec.capabilities.ambient.is_empty());
    assert_loosening_ignored(&warnings, 2, "AmbientCapabilities=CAP_NET_BIND_SERVICE");

    let mut base = with_bounding(&["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
    base.capabilities.ambient = strings(&["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
    let (spec, warnings) = unit_over(&base, "CapabilityBoundingSet=CAP_KILL\n");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec.capabilities.ambient, ["CAP_KILL"]);
    assert!(
        unit_over(&base, "AmbientCapabilities=\n")
            .0
            .capabilities
            .ambient
            .is_empty()
    );
}

// The syscall filter.

#[test]
fn an_allow_list_filter_includes_default_and_is_intersected_with_the_base() {
    let (spec, warnings) = unit("SystemCallFilter=@system-service\n");
    assert!(warnings.is_empty(), "{warnings:?}");
    let allow = spec.syscalls.allow.clone().unwrap();
    assert!(group("@system-service").iter().all(|n| allow.contains(n)));
    assert!(group("@default").iter().all(|n| allow.contains(n)));
    assert!(!allow.contains(&"reboot".to_owned()));

    let mut base = baseline();
    base.syscalls.allow = Some(strings(&["read", "write"]));
    let (spec, warnings) = unit_over(&base, "SystemCallFilter=read openat\n");

    assert_eq!(
        spec.syscalls.allow.as_deref(),
        Some(&strings(&["read"])[..])
    );
    assert_eq!(
        warnings,
        [
            "hello.service:2: [Service] SystemCallFilter=read openat is ignored in part: openat \
          would loosen the sandbox, which only tightens"
        ]
    );
}

#[test]
fn a_long_loosening_is_named_by_its_first_names_and_a_count() {
    let mut base = baseline();
    base.syscalls.allow = Some(strings(&["read", "write"]));

    let (_, warnings) = unit_over(&base, "SystemCallFilter=read @mount\n");

    let extra = group("@mount").len() - 8;
    assert!(
        warnings[0].contains(&format!(" and {extra} more would loosen the sandbox")),
        "{warnings:?}"
    );
}

#[test]
fn a_deny_list_filter_adds_to_the_base_deny_list() {
    let mut base = baseline();
    base.syscalls.deny = strings(&["reboot"]);

    let (spec, warnings) = unit_over(&base, "SystemCallFilter=~@mount kexec_load\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec.syscalls.allow, None);
    let mut expected = group("@mount");
    expected.extend(strings(&["kexec_load", "reboot"]));
    expected.sort();
    assert_eq!(spec.syscalls.deny, expected);
}

#[test]
fn filter_lines_combine_as_in_systemd() {
    let (spec, _) =
        unit("SystemCallFilter=read write\nSystemCallFilter=openat\nSystemCallFilter=~write\n");

    let allow = spec.syscalls.allow.unwrap();
    assert!(allow.contains(&"openat".to_owned()) && allow.contains(&"read".to_owned()));
    assert!(!allow.contains(&"write".to_owned()));
}

#[test]
fn an_empty_filter_does_not_drop_the_base_filter() {
    let mut base = baseline();
    base.syscalls.deny = strings(&["reboot"]);

    let (spec, warnings) = unit_over(&base, "SystemCallFilter=\n");

    assert_eq!(spec.syscalls.deny, ["reboot"]);
    assert_loosening_ignored(&warnings, 2, "SystemCallFilter=");
}

#[test]
fn unknown_syscalls_and_groups_are_warned_about_and_skipped() {
    let (spec, warnings) = unit("SystemCallFilter=~no_such_call @no-such-group ptrace\n");

    assert_eq!(spec.syscalls.deny, ["ptrace"]);
    assert_eq!(
        warnings,
        [
            "hello.service:2: [Service] SystemCallFilter= unknown syscalls ignored: no_such_call \
          @no-such-group"
        ]
    );
}

#[test]
fn a_per_syscall_errno_is_warned_about_and_the_syscall_still_denied() {
    let (spec, warnings) = unit("SystemCallFilter=~ptrace:EPERM\n");

    assert_eq!(spec.syscalls.deny, ["ptrace"]);
    assert!(
        warnings[0].contains("a per-syscall errno is not supported yet"),
        "{warnings:?}"
    );
}

#[test]
fn the_error_number_is_a_name_a_number_or_kill() {
    assert_eq!(
        unit("SystemCallErrorNumber=EPERM\n")
            .0
            .syscalls
            .error_number,
        Some(1)
    );
    assert_eq!(
        unit("SystemCallErrorNumber=38\n").0.syscalls.error_number,
        Some(38)
    );
    let mut base = baseline();
    base.syscalls.error_number = Some(1);
    assert_eq!(
        unit_over(&base, "SystemCallErrorNumber=kill\n")
            .0
            .syscalls
            .error_number,
        None
    );
    assert!(
        unit("SystemCallErrorNumber=EBOGUS\n").1[0]
            .ends_with("is not an errno name or number, or kill, ignored")
    );
}

#[test]
fn architectures_name_native_and_only_narrow() {
    let (spec, warnings) = unit("SystemCallArchitectures=x86-64\n");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec.syscalls.architectures, ["native"]);

    let (spec, warnings) = unit_over(&spec, "SystemCallArchitectures=native x86\n");
    assert_eq!(spec.syscalls.architectures, ["native"]);
    assert_loosening_ignored(&warnings, 2, "SystemCallArchitectures=native x86");
    let (spec, warnings) = unit_over(&spec, "SystemCallArchitectures=\n");
    assert_eq!(spec.syscalls.architectures, ["native"]);
    assert_loosening_ignored(&warnings, 2, "SystemCallArchitectures=");
}

#[test]
fn address_families_allow_lists_deny_lists_and_none() {
    let families = |lines| unit(lines).0.syscalls.address_families;

    assert_eq!(
        families("RestrictAddressFamilies=AF_INET AF_UNIX\n"),
        Some(AddressFamilies {
            allow_list: true,
            families: strings(&["AF_UNIX", "AF_INET"])
        })
    );
    assert_eq!(
        families("RestrictAddressFamilies=~AF_PACKET\n"),
        Some(AddressFamilies {
            allow_list: false,
            families: strings(&["AF_PACKET"])
        })
    );
    assert_eq!(
        families("RestrictAddressFamilies=none\n"),
        Some(AddressFamilies {
            allow_list: true,
            families: Vec::new()
        })
    );
}

#[test]
fn address_families_the_base_refuses_stay_refused() {
    let (base, _) = unit("RestrictAddressFamilies=AF_UNIX AF_INET\n");

    let (narrowed, _) = unit_over(&base, "RestrictAddressFamilies=~AF_INET\n");
    let (spec, warnings) = unit_over(&base, "RestrictAddressFamilies=AF_UNIX AF_NETLINK\n");

    assert_eq!(
        narrowed.syscalls.address_families.unwrap().families,
        ["AF_UNIX"]
    );
    assert_eq!(
        spec.syscalls.address_families.unwrap().families,
        ["AF_UNIX"]
    );
    assert!(
        warnings[0].ends_with(
            "is ignored in part: AF_NETLINK would loosen the sandbox, which only tightens"
        ),
        "{warnings:?}"
    );
    assert_loosening_ignored(
        &unit_over(&base, "RestrictAddressFamilies=\n").1,
        2,
        "RestrictAddressFamilies=",
    );
}

#[test]
fn restrict_namespaces_takes_booleans_and_lists() {
    let allowed = |lines| unit(lines).0.syscalls.namespaces_allowed;

    assert_eq!(allowed("RestrictNamespaces=yes\n"), Some(Vec::new()));
    assert_eq!(
        allowed("RestrictNamespaces=net ipc\n"),
        Some(strings(&["ipc", "net"]))
    );
    assert_eq!(
        allowed("RestrictNamespaces=~user net\n"),
        Some(strings(&["cgroup", "ipc", "mnt", "pid", "uts", "time"]))
    );
    assert_eq!(allowed("RestrictNamespaces=no\n"), None);
}

#[test]
fn restrict_namespaces_never_allows_what_the_base_refuses() {
    let (base, _) = unit("RestrictNamespaces=net\n");

    let (spec, warnings) = unit_over(&base, "RestrictNamespaces=no\n");
    let (partly, more) = unit_over(&base, "RestrictNamespaces=net user\n");

    assert_eq!(spec.syscalls.namespaces_allowed, Some(strings(&["net"])));
    assert_loosening_ignored(&warnings, 2, "RestrictNamespaces=no");
    assert_eq!(partly.syscalls.namespaces_allowed, Some(strings(&["net"])));
    assert_loosening_ignored(&more, 2, "RestrictNamespaces=net user");
}

#[test]
fn protect_clock_denies_the_clock_group_and_drops_its_capabilities() {
    let base = with_bounding(&["CAP_SYS_TIME", "CAP_KILL", "CAP_WAKE_ALARM"]);

    let (spec, warnings) = unit_over(&base, "ProtectClock=yes\n");
    let (kept, loosened) = unit_over(&spec, "ProtectClock=no\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(spec.syscalls.deny, group("@clock"));
    assert!(spec.syscalls.deny.contains(&"clock_settime".to_owned()));
    assert_eq!(spec.capabilities.bounding, ["CAP_KILL"]);
    assert_eq!(kept, spec);
    assert_loosening_ignored(&loosened, 2, "ProtectClock=no");
}

// Process properties.

#[test]
fn umask_only_adds_bits() {
    assert_eq!(unit("UMask=0077\n").0.umask, 0o077);
    let (spec, warnings) = unit("UMask=007\n");
    assert_eq!(spec.umask, 0o027);
    assert!(
        warnings[0]
            .ends_with("is ignored in part: 0020 would loosen the sandbox, which only tightens"),
        "{warnings:?}"
    );
    let (spec, warnings) = unit("UMask=0002\n");
    assert_eq!(spec.umask, 0o022);
    assert_loosening_ignored(&warnings, 2, "UMask=0002");
    assert!(unit("UMask=0999\n").1[0].ends_with("is not an octal mask up to 0777, ignored"));
}

#[test]
fn every_limit_directive_sets_its_resource() {
    for (resource, _) in parse::RLIMITS {
        let (spec, warnings) = unit(&format!("Limit{resource}=1:2\n"));

        assert!(warnings.is_empty(), "{resource}: {warnings:?}");
        assert_eq!(
            spec.rlimits,
            [Rlimit {
                resource: (*resource).to_owned(),
                soft: Some(1),
                hard: Some(2)
            }],
            "{resource}"
        );
    }
}

#[test]
fn a_limit_only_lowers_the_base() {
    let mut base = baseline();
    base.rlimits = vec![Rlimit {
        resource: "NOFILE".into(),
        soft: Some(512),
        hard: Some(1024),
    }];

    let (lower, none) = unit_over(&base, "LimitNOFILE=256:2048\n");
    let (spec, warnings) = unit_over(&base, "LimitNOFILE=infinity\n");
    let (reset, reset_warnings) = unit_over(&base, "LimitNOFILE=\n");

    assert_eq!(
        (lower.rlimits[0].soft, lower.rlimits[0].hard),
        (Some(256), Some(1024))
    );
    assert_eq!(none.len(), 1, "the hard limit above the base's: {none:?}");
    assert_eq!(spec.rlimits, base.rlimits);
    assert_loosening_ignored(&warnings, 2, "LimitNOFILE=infinity");
    assert_eq!(reset.rlimits, base.rlimits);
    assert_loosening_ignored(&reset_warnings, 2, "LimitNOFILE=");
}

#[test]
fn service_directories_take_names_and_their_kind_s_mode() {
    let (spec, warnings) = unit(
        "StateDirectory=app app/sub\nRuntimeDirectory=app\nStateDirectoryMode=0700\n\
         LogsDirectory=a\nLogsDirectory=\nLogsDirectory=b\nCacheDirectory=../up\n",
    );

    let dirs: Vec<(DirectoryKind, &str, u32)> = spec
        .directories
        .iter()
        .map(|d| (d.kind, d.name.as_str(), d.mode))
        .collect();
    assert_eq!(
        dirs,
        [
            (DirectoryKind::State, "app", 0o700),
            (DirectoryKind::State, "app/sub", 0o700),
            (DirectoryKind::Logs, "b", 0o755),
            (DirectoryKind::Runtime, "app", 0o755)
        ]
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("CacheDirectory=../up is not a list of relative directory names"));
}

#[test]
fn specifiers_are_resolved_in_sandbox_values() {
    let (spec, _) = unit("StateDirectory=%N\nReadWritePaths=%S/%N\n");

    assert_eq!(spec.directories[0].name, "hello");
    assert_eq!(spec.mounts.read_write_paths[0].path, "/var/lib/hello");
}

// Layers: the unit over the profile, drop-ins over the unit, profiles over the baseline.

#[test]
fn a_drop_in_cannot_undo_what_the_unit_tightened() {
    let (spec, warnings) = unit_and_drop_in("PrivateNetwork=yes\n", "PrivateNetwork=no\n");

    assert!(spec.namespaces.private_network);
    assert_eq!(
        warnings,
        [
            "hello.service.d/override.conf:2: [Service] PrivateNetwork=no is ignored: it would \
          loosen the sandbox, which only tightens"
        ]
    );
}

#[test]
fn a_drop_in_tightens_the_unit_further() {
    let (spec, warnings) = unit_and_drop_in(
        "SystemCallFilter=read write openat\n",
        "SystemCallFilter=~openat\nProtectHome=yes\n",
    );

    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(spec.syscalls.allow.unwrap().contains(&"read".to_owned()));
    assert_eq!(spec.syscalls.deny, ["openat"]);
    assert_eq!(spec.mounts.protect_home, ProtectHome::Yes);
}

#[test]
fn drop_ins_are_read_in_the_order_given_as_one_layer() {
    let first = parse("[Service]\nProtectHome=yes\n").unwrap();
    let second = parse("[Service]\nProtectHome=read-only\n").unwrap();
    let main = parse("[Service]\n").unwrap();
    let home = |files: &[(&str, &UnitFile)]| {
        sandbox_from("hello.service", &baseline(), files)
            .0
            .mounts
            .protect_home
    };

    let forward = home(&[("u", &main), ("10-a.conf", &first), ("20-b.conf", &second)]);
    let backward = home(&[("u", &main), ("10-a.conf", &second), ("20-b.conf", &first)]);

    assert_eq!(forward, ProtectHome::ReadOnly);
    assert_eq!(backward, ProtectHome::Yes);
}

#[test]
fn a_profile_only_tightens_the_baseline_unless_trusted() {
    let lines = "NoNewPrivileges=no\nPrivateTmp=no\nCapabilityBoundingSet=CAP_NET_ADMIN\n\
                 ProtectSystem=no\n";

    let (plain, warnings) = profile(lines, false);
    let (trusted, none) = profile(lines, true);

    assert_eq!(plain, baseline());
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("profile test@1:2: [Service] NoNewPrivileges=no is ignored")),
        "{warnings:?}"
    );
    assert!(none.is_empty(), "{none:?}");
    assert!(!trusted.no_new_privileges && !trusted.mounts.private_tmp);
    assert_eq!(trusted.capabilities.bounding, ["CAP_NET_ADMIN"]);
    assert_eq!(trusted.mounts.protect_system, ProtectSystem::No);
}

#[test]
fn only_service_sections_are_read() {
    let file = parse("[Unit]\nPrivateNetwork=yes\n[Install]\nPrivateNetwork=yes\n").unwrap();

    let (spec, _) = sandbox_from("hello.service", &baseline(), &[("hello.service", &file)]);

    assert!(!spec.namespaces.private_network);
}

// Through the unit reader: the sandbox in ServiceConfig, and its warnings with the others'.

#[test]
fn the_service_config_carries_the_sandbox() {
    let cfg = with_service("PrivateNetwork=yes\nRestrictNamespaces=yes\n");

    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert!(cfg.sandbox.namespaces.private_network);
    assert_eq!(cfg.sandbox.syscalls.namespaces_allowed, Some(Vec::new()));
}

#[test]
fn a_loosening_directive_in_a_drop_in_is_ignored_and_named_by_the_drop_in() {
    let cfg = with_drop_in("[Service]\nExecStart=/bin/a\n", "[Service]\nUser=root\n").unwrap();

    assert_eq!(
        cfg.warnings,
        [
            "hello.service.d/override.conf:2: [Service] User=root is ignored: berth's sandbox is \
          always on and the profile decides it"
        ]
    );
}

#[test]
fn loosening_directives_outside_the_spec_warn_that_the_sandbox_is_always_on() {
    for line in [
        "User=root",
        "Group=0",
        "SupplementaryGroups=wheel",
        "PrivatePIDs=no",
        "Nice=-5",
    ] {
        let cfg = with_service(&format!("{line}\n"));

        assert_eq!(
            cfg.warnings,
            [format!(
                "hello.service:3: [Service] {line} is ignored: berth's sandbox is always on and \
                 the profile decides it"
            )],
            "{line}"
        );
    }
}

#[test]
fn loosening_sandbox_directives_are_ignored_with_a_warning() {
    for line in [
        "PrivateTmp=no",
        "NoNewPrivileges=false",
        "ProtectSystem=no",
        "CapabilityBoundingSet=CAP_SYS_ADMIN",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "PrivateIPC=no",
        "ProtectHostname=off",
    ] {
        let cfg = with_service(&format!("{line}\n"));

        assert_eq!(
            cfg.warnings,
            [format!(
                "hello.service:3: [Service] {line} is ignored: it would loosen the sandbox, which \
                 only tightens"
            )],
            "{line}"
        );
        assert_eq!(cfg.sandbox, baseline(), "{line}");
    }
}

#[test]
fn tightening_sandbox_directives_apply_without_a_warning() {
    for line in [
        "PrivateTmp=yes",
        "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
        "ProtectProc=default",
        "SystemCallFilter=",
    ] {
        let cfg = with_service(&format!("{line}\n"));

        assert!(cfg.warnings.is_empty(), "{line}: {:?}", cfg.warnings);
    }
}

#[test]
fn cgroup_limits_are_read_into_numbers() {
    let (spec, warnings) =
        unit("MemoryMax=64M\nMemoryHigh=48M\nTasksMax=32\nCPUQuota=50%\nCPUWeight=20\nIOWeight=30");

    assert!(warnings.is_empty(), "{warnings:?}");
    let r = spec.resources;
    assert_eq!(
        (r.memory_max, r.memory_high, r.tasks_max),
        (Some(64 << 20), Some(48 << 20), Some(32))
    );
    assert_eq!(
        (r.cpu_quota_per_sec_usec, r.cpu_weight, r.io_weight),
        (Some(500_000), Some(20), Some(30))
    );
}

#[test]
fn a_units_task_limit_above_its_profiles_is_ignored_with_a_warning() {
    let (base, _) = profile("TasksMax=100", false);

    let (spec, warnings) = unit_over(&base, "TasksMax=infinity\nMemoryMax=1G");

    assert_eq!(spec.resources.tasks_max, Some(100));
    assert_eq!(spec.resources.memory_max, Some(1 << 30));
    assert_loosening_ignored(&warnings, 2, "TasksMax=infinity");
}

#[test]
fn a_host_drop_in_lowers_the_units_memory_limit_but_cannot_raise_it() {
    let (lowered, lowered_warnings) = unit_and_drop_in("MemoryMax=1G", "MemoryMax=256M");
    let (raised, raised_warnings) = unit_and_drop_in("MemoryMax=256M", "MemoryMax=1G");

    assert_eq!(lowered.resources.memory_max, Some(256 << 20));
    assert!(lowered_warnings.is_empty(), "{lowered_warnings:?}");
    assert_eq!(raised.resources.memory_max, Some(256 << 20));
    assert_eq!(raised_warnings.len(), 1, "{raised_warnings:?}");
}

#[test]
fn an_invalid_limit_is_warned_about_and_leaves_the_base() {
    let (spec, warnings) = unit("TasksMax=many");

    assert_eq!(spec.resources.tasks_max, None);
    assert!(
        warnings[0].contains("TasksMax=many is not a positive number"),
        "{warnings:?}"
    );
}
#[test]
fn dynamic_user_drops_the_namespace_confined_capabilities_a_block_mode_base_bounds() {
    let mut base = baseline();
    base.capabilities.bounding = berth_protocol::sandbox::NAMESPACE_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .chain(["CAP_SYS_ADMIN".to_owned()])
        .collect();
    base.capabilities.ambient = strings(&["CAP_NET_BIND_SERVICE"]);

    let (dynamic, warnings) = unit_over(&base, "DynamicUser=yes\n");
    let (image_user, _) = unit_over(&base, "PrivateTmp=yes\n");

    assert!(warnings.is_empty(), "{warnings:?}");
    // Ambient ones it holds from the start; other capabilities are not the block's to drop.
    assert_eq!(
        dynamic.capabilities.bounding,
        strings(&["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"])
    );
    assert_eq!(image_user.capabilities, base.capabilities);
}
