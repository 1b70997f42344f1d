//! berth's exposure score against systemd's own: each sandbox is written out as the equivalent
//! unit ([`spec_as_unit`]) and `systemd-analyze security --offline=yes` (systemd 252 here)
//! scores it; every check and the overall exposure must agree.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use berth_manager::profile::Profiles;
use berth_manager::profile::score::{self, ImageUser, Report, UnitFacts, assess, spec_as_unit};
use berth_protocol::sandbox::{
    AddressFamilies, DeviceAccess, KeyringMode, ProtectHome, ProtectProc, ProtectSystem,
    SandboxSpec,
};

/// berth's syscall groups (protocol's tables), as `berth security` uses them.
fn members(group: &str) -> Vec<String> {
    berth_protocol::syscall_groups::expand(group)
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// systemd's syscall groups, from `systemd-analyze syscall-filter`, nested groups expanded and
/// only the syscalls x86_64 has (as systemd skips the others).
struct SystemdGroups {
    groups: BTreeMap<String, Vec<String>>,
    native: BTreeSet<String>,
}

impl SystemdGroups {
    fn load() -> SystemdGroups {
        let out = Command::new("systemd-analyze")
            .arg("syscall-filter")
            .output()
            .expect("systemd-analyze (Debian's systemd package) must be installed");
        assert!(out.status.success());
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current = None;
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            if let Some(group) = line.strip_prefix('@') {
                current = Some(format!("@{group}"));
                continue;
            }
            let item = line.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            if let Some(group) = &current {
                groups
                    .entry(group.clone())
                    .or_default()
                    .push(item.to_owned());
            }
        }
        let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
            .expect("the x86_64 syscall table (linux-libc-dev)");
        let native = header
            .lines()
            .filter_map(|l| l.strip_prefix("#define __NR_"))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        SystemdGroups { groups, native }
    }

    fn members(&self, group: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for item in self.groups.get(group).into_iter().flatten() {
            if item.starts_with('@') {
                out.extend(self.members(item));
            } else if self.native.contains(item) {
                out.insert(item.clone());
            }
        }
        out
    }
}

/// What systemd-analyze says of a unit: the overall exposure in tenths, and per check id
/// whether it applies and what it adds (in tenths).
struct Oracle {
    exposure: u64,
    checks: BTreeMap<String, (bool, Option<u64>)>,
}

fn tenths_of(text: &str) -> u64 {
    let (units, tenth) = text.split_once('.').unwrap();
    units.parse::<u64>().unwrap() * 10 + tenth.parse::<u64>().unwrap()
}

fn systemd_analyze(unit: &str) -> Oracle {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth-oracle.service");
    std::fs::write(&path, unit).unwrap();
    let run = |json: bool| {
        let mut cmd = Command::new("systemd-analyze");
        cmd.args(["security", "--offline=yes", "--no-pager"]);
        if json {
            cmd.arg("--json=short");
        }
        let out = cmd.arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // A directive systemd did not take would make the comparison meaningless; a syscall
        // name the installed libseccomp does not know is skipped, by systemd as by berth.
        let refused = stderr
            .lines()
            .filter(|l| l.contains(".service:"))
            .any(|l| !l.contains("Failed to parse system call, ignoring"));
        assert!(
            !refused,
            "systemd-analyze did not take the unit:\n{stderr}\n{unit}"
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(false);
    let overall = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for berth-oracle.service: "))
        .map(|(_, rest)| tenths_of(rest.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    let checks = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let applies = !c["set"].is_null();
            let exposure = c["exposure"].as_str().map(tenths_of);
            (c["name"].as_str().unwrap().to_owned(), (applies, exposure))
        })
        .collect();
    Oracle {
        exposure: overall,
        checks,
    }
}

/// Each check of `report` as the oracle shows it.
fn ours(report: &Report) -> BTreeMap<String, (bool, Option<u64>)> {
    report
        .checks
        .iter()
        .map(|a| {
            let row = (a.badness.is_some(), report.check_exposure(a));
            (a.id.to_owned(), row)
        })
        .collect()
}

/// Scores `spec` both ways and returns (berth's, systemd's) exposure, after checking every
/// check agrees, but for the one place berth's sandbox is tighter than systemd's: systemd's
/// ProtectClock= grants the real-time clock device, berth's does not.
fn compare(name: &str, spec: &SandboxSpec, facts: &UnitFacts) -> (u64, u64) {
    let members = &members;
    let report = assess(spec, facts, &members);
    let unit = spec_as_unit(spec, facts, &members);
    let oracle = systemd_analyze(&unit);
    let mut ours = ours(&report);
    let mut theirs = oracle.checks.clone();
    if score::protects_clock(spec, &members) && spec.mounts.private_devices {
        ours.remove("DeviceAllow=");
        theirs.remove("DeviceAllow=");
    }
    assert_eq!(ours, theirs, "{name}: checks differ for\n{unit}");
    assert_eq!(
        report.checks.len(),
        oracle.checks.len(),
        "{name}: as many checks"
    );
    assert!(
        report.exposure.abs_diff(oracle.exposure) <= 1,
        "{name}: berth {} systemd {}\n{unit}",
        report.exposure,
        oracle.exposure
    );
    (report.exposure, oracle.exposure)
}

fn baseline() -> SandboxSpec {
    SandboxSpec::baseline(61184, 61184, "svc")
}

/// A sandbox as tight as systemd's checks can tell, with the host network.
fn tight() -> SandboxSpec {
    let mut spec = baseline();
    spec.identity.private_users = true;
    let m = &mut spec.mounts;
    m.protect_home = ProtectHome::Yes;
    m.protect_kernel_modules = true;
    m.protect_kernel_logs = true;
    m.protect_control_groups = true;
    m.protect_proc = ProtectProc::Invisible;
    let sc = &mut spec.syscalls;
    let deny: BTreeSet<String> = ["@privileged", "@resources"]
        .iter()
        .flat_map(|g| members(g))
        .collect();
    sc.allow = Some(
        members("@system-service")
            .into_iter()
            .filter(|s| !deny.contains(s))
            .collect(),
    );
    sc.architectures = vec!["native".into()];
    sc.address_families = Some(AddressFamilies {
        allow_list: true,
        families: vec!["AF_UNIX".into(), "AF_INET".into(), "AF_INET6".into()],
    });
    sc.namespaces_allowed = Some(Vec::new());
    sc.restrict_realtime = true;
    sc.restrict_suid_sgid = true;
    sc.lock_personality = true;
    sc.memory_deny_write_execute = true;
    spec.umask = 0o077;
    spec.remove_ipc = true;
    spec
}

#[test]
fn the_groups_berth_scores_by_are_systemd_analyzes() {
    let systemd = SystemdGroups::load();
    let scored = [
        "@swap",
        "@obsolete",
        "@clock",
        "@cpu-emulation",
        "@debug",
        "@mount",
        "@module",
        "@raw-io",
        "@reboot",
        "@privileged",
        "@resources",
        "@system-service",
    ];

    for group in scored {
        let native: BTreeSet<String> = members(group)
            .into_iter()
            .filter(|s| systemd.native.contains(s))
            .collect();
        assert_eq!(native, systemd.members(group), "{group}");
    }
}

#[test]
fn the_baseline_scores_as_systemd_analyze_scores_its_unit() {
    let (berth, systemd) = compare("baseline", &baseline(), &UnitFacts::default());

    assert_eq!(berth, systemd);
}

#[test]
fn a_tight_sandbox_scores_as_systemd_analyze_scores_its_unit() {
    let (berth, systemd) = compare("tight", &tight(), &UnitFacts::default());

    // Left: the host network, Internet and Unix sockets, no IP allow list (and for systemd
    // the clock device).
    assert_eq!((berth, systemd), (9, 10));
}

#[test]
fn each_grade_of_each_check_scores_as_systemd_analyze_scores_it() {
    let t = tight;
    let with = |f: &dyn Fn(&mut SandboxSpec)| {
        let mut spec = t();
        f(&mut spec);
        spec
    };
    let mut cases: Vec<(&str, SandboxSpec, UnitFacts)> = vec![
        (
            "home tmpfs",
            with(&|s| s.mounts.protect_home = ProtectHome::Tmpfs),
            UnitFacts::default(),
        ),
        (
            "home read-only",
            with(&|s| s.mounts.protect_home = ProtectHome::ReadOnly),
            UnitFacts::default(),
        ),
        (
            "system yes",
            with(&|s| s.mounts.protect_system = ProtectSystem::Yes),
            UnitFacts::default(),
        ),
        (
            "system full",
            with(&|s| s.mounts.protect_system = ProtectSystem::Full),
            UnitFacts::default(),
        ),
        (
            "proc noaccess",
            with(&|s| s.mounts.protect_proc = ProtectProc::Noaccess),
            UnitFacts::default(),
        ),
        (
            "umask 002",
            with(&|s| s.umask = 0o002),
            UnitFacts::default(),
        ),
        (
            "umask 020",
            with(&|s| s.umask = 0o024),
            UnitFacts::default(),
        ),
        (
            "umask 027",
            with(&|s| s.umask = 0o027),
            UnitFacts::default(),
        ),
        (
            "shared keyring",
            with(&|s| s.keyring = KeyringMode::Shared),
            UnitFacts::default(),
        ),
        (
            "no private devices",
            with(&|s| s.mounts.private_devices = false),
            UnitFacts::default(),
        ),
        (
            "a device",
            with(&|s| {
                s.mounts.device_allow.push(DeviceAccess {
                    path: "/dev/fuse".into(),
                    read: true,
                    write: true,
                    mknod: false,
                })
            }),
            UnitFacts::default(),
        ),
        (
            "private network, deny all",
            with(&|s| {
                s.namespaces.private_network = true;
                s.firewall.deny = vec!["0.0.0.0/0".into(), "::/0".into()];
            }),
            UnitFacts::default(),
        ),
        (
            "localhost allowed",
            with(&|s| {
                s.firewall.deny = vec!["0.0.0.0/0".into(), "::/0".into()];
                s.firewall.allow = vec!["127.0.0.0/8".into(), "::1/128".into()];
            }),
            UnitFacts::default(),
        ),
        (
            "a LAN allowed",
            with(&|s| {
                s.firewall.deny = vec!["0.0.0.0/0".into(), "::/0".into()];
                s.firewall.allow = vec!["10.0.0.0/8".into()];
            }),
            UnitFacts::default(),
        ),
        (
            "deny IPv4 only",
            with(&|s| s.firewall.deny = vec!["0.0.0.0/0".into()]),
            UnitFacts::default(),
        ),
        (
            "no families",
            with(&|s| {
                s.syscalls.address_families = Some(AddressFamilies {
                    allow_list: true,
                    families: vec![],
                })
            }),
            UnitFacts::default(),
        ),
        (
            "families denied",
            with(&|s| {
                s.syscalls.address_families = Some(AddressFamilies {
                    allow_list: false,
                    families: vec!["AF_PACKET".into(), "AF_BLUETOOTH".into()],
                })
            }),
            UnitFacts::default(),
        ),
        (
            "an exotic family allowed",
            with(&|s| {
                s.syscalls.address_families = Some(AddressFamilies {
                    allow_list: true,
                    families: vec!["AF_UNIX".into(), "AF_VSOCK".into(), "AF_NETLINK".into()],
                })
            }),
            UnitFacts::default(),
        ),
        (
            "some namespaces",
            with(&|s| s.syscalls.namespaces_allowed = Some(vec!["net".into(), "user".into()])),
            UnitFacts::default(),
        ),
        (
            "every capability",
            with(&|s| {
                s.capabilities.bounding = [
                    "CAP_SYS_ADMIN",
                    "CAP_SETUID",
                    "CAP_SYS_PTRACE",
                    "CAP_SYS_TIME",
                    "CAP_NET_ADMIN",
                    "CAP_SYS_RAWIO",
                    "CAP_SYS_MODULE",
                    "CAP_AUDIT_WRITE",
                    "CAP_SYSLOG",
                    "CAP_SYS_NICE",
                    "CAP_MKNOD",
                    "CAP_CHOWN",
                    "CAP_DAC_OVERRIDE",
                    "CAP_KILL",
                    "CAP_NET_RAW",
                    "CAP_SYS_BOOT",
                    "CAP_MAC_ADMIN",
                    "CAP_LINUX_IMMUTABLE",
                    "CAP_IPC_LOCK",
                    "CAP_SYS_CHROOT",
                    "CAP_BLOCK_SUSPEND",
                    "CAP_WAKE_ALARM",
                    "CAP_LEASE",
                    "CAP_SYS_TTY_CONFIG",
                    "CAP_SYS_PACCT",
                    "CAP_BPF",
                ]
                .map(String::from)
                .to_vec();
                s.capabilities.ambient = vec!["CAP_KILL".into()];
            }),
            UnitFacts::default(),
        ),
        (
            "modules and logs open",
            with(&|s| {
                s.capabilities.bounding = vec![
                    "CAP_SYS_MODULE".into(),
                    "CAP_SYSLOG".into(),
                    "CAP_MKNOD".into(),
                ];
                s.mounts.protect_kernel_modules = false;
                s.mounts.protect_kernel_logs = false;
                s.mounts.private_devices = false;
            }),
            UnitFacts::default(),
        ),
        (
            "a deny list",
            with(&|s| {
                s.syscalls.allow = None;
                s.syscalls.deny = ["@clock", "@swap", "@reboot", "@module", "@mount", "@debug"]
                    .iter()
                    .flat_map(|g| members(g))
                    .collect();
            }),
            UnitFacts::default(),
        ),
        (
            "the allow list of @system-service",
            with(&|s| {
                s.syscalls.allow = Some(members("@system-service"));
            }),
            UnitFacts::default(),
        ),
        (
            "two ABIs",
            with(&|s| s.syscalls.architectures = vec!["x86-64".into(), "x86".into()]),
            UnitFacts::default(),
        ),
        (
            "supplementary groups",
            with(&|s| s.identity.supplementary_groups = vec![61185]),
            UnitFacts::default(),
        ),
        (
            "root",
            t(),
            UnitFacts {
                host_root: true,
                ..UnitFacts::default()
            },
        ),
        (
            "NotifyAccess=all",
            t(),
            UnitFacts {
                notify_access_all: true,
                ..UnitFacts::default()
            },
        ),
        (
            "block mode, root of its namespace",
            t(),
            UnitFacts {
                image_user: Some(ImageUser::NamespaceRoot),
                ..UnitFacts::default()
            },
        ),
        (
            "block mode, an image user",
            t(),
            UnitFacts {
                image_user: Some(ImageUser::User),
                ..UnitFacts::default()
            },
        ),
    ];
    cases.push((
        "baseline as root",
        baseline(),
        UnitFacts {
            host_root: true,
            notify_access_all: true,
            image_user: None,
        },
    ));

    for (name, spec, facts) in &cases {
        compare(name, spec, facts);
    }
}

/// Each built-in profile's sandbox, scored both ways, and the targets: default ≤ 1.0 on
/// the host network, nonetwork ≤ 0.5, strict ≤ 0.3 (trusted has none). Level 3 runs stock
/// units unchanged and pays for it: a root master's capabilities of its own user namespace,
/// @chown and @setuid, a writable /var (ProtectSystem=full). It is scored as a unit without
/// User= gets it (root of its own namespace, the most it gives), against targets of about 1.0
/// above level 2's: default ≤ 2.0, nonetwork ≤ 1.2, strict ≤ 1.1.
#[test]
fn every_built_in_profile_scores_as_systemd_analyze_scores_it_within_its_target() {
    let profiles = Profiles::new(Path::new("/nonexistent/berth/profiles"));
    let targets = [
        ("default@2", 10),
        ("nonetwork@2", 5),
        ("strict@2", 3),
        ("trusted@2", 100),
        ("default@3", 20),
        ("nonetwork@3", 12),
        ("strict@3", 11),
        ("trusted@3", 100),
    ];

    for (name, target) in targets {
        let profile = profiles.resolve(name).unwrap();
        let (spec, warnings) = profile.spec("svc.service").unwrap();
        assert_eq!(
            warnings,
            Vec::<String>::new(),
            "{name}: every line takes effect"
        );
        let (berth, systemd) = compare(name, &spec, &profile.rated_as());

        eprintln!(
            "{}: berth {} systemd-analyze {}",
            profile.reference(),
            score::tenths(berth),
            score::tenths(systemd)
        );
        assert!(
            berth <= target && systemd <= target,
            "{name}: berth {berth}, systemd {systemd}, target {target}"
        );
    }
}
