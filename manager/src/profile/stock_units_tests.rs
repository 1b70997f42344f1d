//! Level 3 against the stock units it is for: Debian bookworm's redis-server.service (its own
//! tight sandbox, PrivateUsers=true) and nginx.service (none at all: a root master that
//! switches its workers to www-data). Their sandbox directives as Debian ships them; the
//! Exec lines shortened.

use berth_protocol::sandbox::{NAMESPACE_CAPABILITIES, ProtectSystem, SandboxSpec};

use super::Profiles;

const REDIS: &str = "\
[Service]
Type=notify
ExecStart=/usr/bin/redis-server /etc/redis/redis.conf --supervised systemd --daemonize no
PIDFile=/run/redis/redis-server.pid
TimeoutStopSec=0
Restart=always
User=redis
Group=redis
RuntimeDirectory=redis
RuntimeDirectoryMode=2755
UMask=007
PrivateTmp=true
LimitNOFILE=65535
PrivateDevices=true
ProtectHome=true
ProtectSystem=strict
ReadWritePaths=-/var/lib/redis
ReadWritePaths=-/var/log/redis
ReadWritePaths=-/var/run/redis
CapabilityBoundingSet=
LockPersonality=true
MemoryDenyWriteExecute=true
NoNewPrivileges=true
PrivateUsers=true
ProtectClock=true
ProtectControlGroups=true
ProtectHostname=true
ProtectKernelLogs=true
ProtectKernelModules=true
ProtectKernelTunables=true
ProtectProc=invisible
RemoveIPC=true
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=true
RestrictRealtime=true
RestrictSUIDSGID=true
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~ @privileged @resources
ReadWriteDirectories=-/etc/redis
NoExecPaths=/
ExecPaths=/usr/bin/redis-server /usr/lib /lib
";

const NGINX: &str = "\
[Service]
Type=forking
PIDFile=/run/nginx.pid
ExecStartPre=/usr/sbin/nginx -t -q -g 'daemon on; master_process on;'
ExecStart=/usr/sbin/nginx -g 'daemon on; master_process on;'
ExecReload=/usr/sbin/nginx -g 'daemon on; master_process on;' -s reload
ExecStop=-/sbin/start-stop-daemon --quiet --stop --retry QUIT/5 --pidfile /run/nginx.pid
TimeoutStopSec=5
KillMode=mixed
";

/// `contents` as unit `name` attached with `profile`: its sandbox and its warnings.
fn attached(profile: &str, name: &str, contents: &str) -> (SandboxSpec, Vec<String>) {
    let profiles = Profiles::new(std::path::Path::new("/nonexistent"));
    let (base, warnings) = profiles.resolve(profile).unwrap().spec(name).unwrap();
    assert_eq!(warnings, Vec::<String>::new());
    let (config, warnings) = crate::attach::parse_unit_with(name, contents, &[], &base).unwrap();
    (config.sandbox, warnings)
}

fn allows(spec: &SandboxSpec, call: &str) -> bool {
    let filter = &spec.syscalls;
    filter
        .allow
        .as_ref()
        .is_none_or(|a| a.iter().any(|n| n == call))
        && !filter.deny.iter().any(|n| n == call)
}

/// Every warning is one of `expected`.
fn nothing_ignored_but(warnings: &[String], expected: &[&str]) {
    for w in warnings {
        assert!(
            expected.iter().any(|e| w.contains(e)),
            "unexpected warning: {w}"
        );
    }
}

#[test]
fn nginx_s_root_master_may_switch_to_www_data_chown_and_write_var_at_level_3() {
    let (spec, warnings) = attached("default@3", "nginx.service", NGINX);

    assert_eq!(warnings, Vec::<String>::new());
    assert!(!spec.identity.private_users);
    for cap in [
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
    ] {
        assert!(spec.capabilities.bounding.iter().any(|c| c == cap), "{cap}");
    }
    for call in ["setuid", "setgid", "setgroups", "chown", "fchown", "kill"] {
        assert!(allows(&spec, call), "{call}");
    }
    // /var/log/nginx and /var/lib/nginx are the attachment's /var, writable at full; /run
    // (its pid file) is the private tmpfs of every sandbox.
    assert_eq!(spec.mounts.protect_system, ProtectSystem::Full);
    assert!(spec.mounts.read_only_paths.is_empty());
    assert!(spec.mounts.inaccessible_paths.is_empty());
}

#[test]
fn nginx_s_root_master_may_not_switch_users_at_level_2() {
    let (spec, _) = attached("default@2", "nginx.service", NGINX);

    assert!(spec.capabilities.bounding.is_empty());
    assert!(!allows(&spec, "setuid") && !allows(&spec, "chown"));
}

#[test]
fn redis_gets_exactly_the_tight_sandbox_its_unit_asks_for_at_level_3() {
    let (spec, warnings) = attached("default@3", "redis-server.service", REDIS);

    // What berth does not carry out yet, or keeps tighter, is said; nothing else.
    nothing_ignored_but(
        &warnings,
        &[
            "User=",
            "Group=",
            "NoExecPaths=",
            "ExecPaths=",
            "RemoveIPC=",
            // Its @system-service names what the profile denies; the rest of it is kept.
            "io_uring_enter io_uring_register io_uring_setup userfaultfd would loosen",
            // The profile's 0077 holds: its files are redis's alone.
            "UMask=007 is ignored",
        ],
    );
    assert!(spec.identity.private_users);
    assert_eq!(spec.mounts.protect_system, ProtectSystem::Strict);
    let writable: Vec<(&str, bool)> = spec
        .mounts
        .read_write_paths
        .iter()
        .map(|p| (p.path.as_str(), p.ignore_missing))
        .collect();
    assert_eq!(
        writable,
        [
            ("/var/lib/redis", true),
            ("/var/log/redis", true),
            ("/var/run/redis", true),
            ("/etc/redis", true)
        ]
    );
    assert!(spec.capabilities.bounding.is_empty());
    assert!(!allows(&spec, "setuid") && !allows(&spec, "setrlimit"));
    assert_eq!(spec.umask, 0o077);
}

#[test]
fn a_dynamic_user_unit_at_level_3_asks_for_no_namespace_capability() {
    let unit = "[Service]\nExecStart=/bin/true\nDynamicUser=yes\n";

    let (spec, _) = attached("default@3", "dyn.service", unit);

    assert!(
        !spec
            .capabilities
            .bounding
            .iter()
            .any(|c| NAMESPACE_CAPABILITIES.contains(&c.as_str()))
    );
    assert_eq!(spec.mounts.protect_system, ProtectSystem::Strict);
}
