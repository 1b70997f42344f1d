//! Runtimetest-style (OCI runtime-tools' in-container checker): for each profile and for each
//! directive, the probe reports the sandbox from inside and the test compares it with what was
//! asked, directive by directive.
//!
//! `check` is the one table: a directive and its value to a comparison with the probe's report.
//! A profile's every `[Service]` line must have a row, so a directive added to a profile without
//! a way to see it from inside fails here. Controls: every row must also fail on a probe run
//! outside any sandbox (as `nobody`, or as root in namespaces of its own), so that no row
//! passes whatever the sandbox does; each per-directive test also runs the same unit without
//! the directive and requires the row to fail there.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::TcpListener;

use berth_testkit::Harness;
use berth_testkit::attempts::{self, refused, try_args};
use serde_json::Value;

/// What the host looks like, for the rows that compare with it.
struct Host {
    namespaces: Value,
    hostname: String,
    // A TCP listener on the host's loopback, for IPAddressDeny=.
    tcp_port: u16,
}

/// The attempts every probe run makes (in the sandbox and in the controls).
fn tries(host: &Host) -> Vec<String> {
    let mut tries: Vec<String> = [
        "unshare-user",
        "unshare-net",
        "sched-fifo",
        "chmod-suid",
        "socket-unix",
        "socket-inet",
        "socket-inet6",
        "socket-netlink",
        "socket-packet",
        "personality-rie",
        "mmap-wx",
        "mprotect-exec",
        "int80",
        "perf",
        "keyctl",
        "session-keyring",
        "sethostname",
        "setuid0",
        "read:/etc/passwd",
        "read:/proc/kmsg",
        "list:/home",
        "list:/root",
        "list:/usr/lib/modules",
        "list:/proc/sys",
        "read:/etc/os-release",
        "create:/etc/probe-write",
        "create:/usr/probe-write",
        "create:/var/probe-write",
        "create:/sys/fs/cgroup/probe-write",
        "write:/proc/sys/kernel/hostname",
    ]
    .iter()
    .map(|t| (*t).to_owned())
    .collect();
    tries.push(format!("tcp-connect:127.0.0.1:{}", host.tcp_port));
    tries
}

/// Attaches `name` (with `attach_args`, e.g. `--profile strict`) whose oneshot unit has
/// `directives` and runs the probe with `tries`; returns the probe's report. The image also
/// holds what ProtectHome= and ProtectKernelModules= hide.
fn run(h: &Harness, name: &str, attach_args: &[&str], directives: &str, tries: &[String]) -> Value {
    attempts::probe_service(
        h,
        name,
        attach_args,
        directives,
        &try_args(tries),
        |image| {
            image
                .file("home/alice/notes", "alice's", 0o644)
                .file("root/notes", "root's", 0o644)
                .file("usr/lib/modules/6.0.0/modules.dep", "", 0o644)
        },
    )
    .unwrap()
}

/// The two controls: nobody on the host, and root in mount, UTS, IPC and network namespaces
/// of its own (only the attempts that are harmless as root there).
fn controls(tries: &[String]) -> [Value; 2] {
    let harmless_as_root: Vec<&String> = tries
        .iter()
        .filter(|t| !t.starts_with("create:") && !t.starts_with("write:"))
        .collect();
    [
        attempts::on_host_as_nobody(tries).unwrap(),
        attempts::on_host_as_root_in_namespaces(&harmless_as_root).unwrap(),
    ]
}

fn host() -> (Host, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    let namespaces = ["mnt", "pid", "ipc", "uts", "net", "user", "cgroup"]
        .iter()
        .map(|ns| {
            let link = std::fs::read_link(format!("/proc/{me}/ns/{ns}")).unwrap();
            (
                (*ns).to_owned(),
                Value::String(link.to_string_lossy().into_owned()),
            )
        })
        .collect::<serde_json::Map<_, _>>();
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    (
        Host {
            namespaces: Value::Object(namespaces),
            hostname,
            tcp_port,
        },
        listener,
    )
}

/// Fails with `what` unless every attempt in `tries` was refused.
fn all_refused(p: &Value, tries: &[&str]) -> Result<(), String> {
    for t in tries {
        if !refused(&p["tries"][t]) {
            return Err(format!("{t} was not refused: {}", p["tries"][t]));
        }
    }
    Ok(())
}

fn ok(p: &Value, t: &str) -> Result<(), String> {
    match p["tries"][t].as_str() {
        Some(r) if r.starts_with("ok") => Ok(()),
        other => Err(format!("{t} failed: {other:?}")),
    }
}

fn status(p: &Value, key: &str) -> String {
    p["status"][key].as_str().unwrap_or("").trim().to_owned()
}

fn mount<'a>(p: &'a Value, point: &str) -> Option<&'a Value> {
    p["mounts"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["mount_point"] == point)
}

fn filtered(p: &Value) -> Result<(), String> {
    match status(p, "Seccomp").as_str() {
        "2" => Ok(()),
        other => Err(format!("no seccomp filter (Seccomp: {other})")),
    }
}

fn same_namespace(p: &Value, host: &Host, ns: &str) -> bool {
    p["namespaces"][ns] == host.namespaces[ns]
}

/// Nothing in a directory the directive empties or hides: refused, or empty.
fn hidden(p: &Value, list: &str) -> Result<(), String> {
    let result = &p["tries"][list];
    if refused(result) || result == "ok" {
        Ok(())
    } else {
        Err(format!("{list}: {result}"))
    }
}

/// The capability mask of a `Cap*:` line as a number.
fn mask(p: &Value, key: &str) -> u64 {
    u64::from_str_radix(&status(p, key), 16).unwrap_or(u64::MAX)
}

/// Device nodes a private /dev may hold (systemd's PrivateDevices= set and its links).
/// `log`: the symlink to the sandbox's syslog socket, as systemd's PrivateDevices= has it.
const PRIVATE_DEV: &[&str] = &[
    "core", "fd", "full", "log", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
    "stdin", "stdout", "tty", "urandom", "zero",
];

/// The row for `directive=value`: whether the probe's report `p` shows it.
fn check(directive: &str, value: &str, p: &Value, host: &Host) -> Result<(), String> {
    let yes = matches!(value, "yes" | "true" | "on" | "1");
    match (directive, value) {
        ("PrivateUsers", _) if yes => {
            let lines = p["uid_map"].as_str().unwrap_or("").lines().count();
            let passwd = p["tries"]["read:/etc/passwd"].as_str().unwrap_or("");
            let users = passwd.lines().filter(|l| l.contains(':')).count();
            if lines == 0 || lines > 3 || same_namespace(p, host, "user") {
                return Err(format!("uid_map: {}", p["uid_map"]));
            }
            if !passwd.contains("nobody") || users > 3 {
                return Err(format!("/etc/passwd: {passwd}"));
            }
            Ok(())
        }
        ("PrivateTmp", _) if yes => {
            let fresh = p["tmp_entries"] == serde_json::json!([]);
            let tmpfs = mount(p, "/tmp").is_some_and(|m| m["fs_type"] == "tmpfs");
            (fresh && tmpfs).then_some(()).ok_or(format!(
                "/tmp: {} {:?}",
                p["tmp_entries"],
                mount(p, "/tmp")
            ))
        }
        ("PrivateDevices", _) if yes => {
            let entries = p["dev_entries"].as_array().cloned().unwrap_or_default();
            let extra: Vec<&Value> = entries
                .iter()
                .filter(|e| !PRIVATE_DEV.contains(&e.as_str().unwrap_or("")))
                .collect();
            if entries.is_empty() || !extra.is_empty() {
                return Err(format!("/dev holds {extra:?} of {entries:?}"));
            }
            Ok(())
        }
        ("PrivateIPC", _) if yes => (!same_namespace(p, host, "ipc"))
            .then_some(())
            .ok_or("the host's IPC namespace".into()),
        ("PrivateNetwork", _) if yes => {
            let only_lo = p["interfaces"] == serde_json::json!(["lo"]);
            if same_namespace(p, host, "net") || !only_lo {
                return Err(format!("interfaces {}", p["interfaces"]));
            }
            Ok(())
        }
        ("ProtectHostname", _) if yes => {
            if same_namespace(p, host, "uts") || p["hostname"] != host.hostname.as_str() {
                return Err(format!(
                    "hostname {} in {}",
                    p["hostname"], p["namespaces"]["uts"]
                ));
            }
            all_refused(p, &["sethostname"])
        }
        ("ProtectClock", _) if yes => {
            // CAP_SYS_TIME (25) and CAP_WAKE_ALARM (35) are gone, and the filter holds.
            if mask(p, "CapBnd") & (1 << 25 | 1 << 35) != 0 {
                return Err(format!("CapBnd {}", status(p, "CapBnd")));
            }
            filtered(p)
        }
        ("ProtectSystem", "strict") => {
            if p["root_writable"] != false {
                return Err("/ is writable".into());
            }
            all_refused(
                p,
                &[
                    "create:/etc/probe-write",
                    "create:/usr/probe-write",
                    "create:/var/probe-write",
                ],
            )
        }
        ("ProtectHome", "yes") => {
            hidden(p, "list:/home")?;
            hidden(p, "list:/root")
        }
        ("ProtectKernelTunables", _) if yes => {
            let ro = mount(p, "/proc/sys")
                .is_some_and(|m| m["options"].as_str().unwrap_or("").starts_with("ro"));
            // Under ProcSubset=pid there is no /proc/sys at all, which is more than read-only.
            let absent = refused(&p["tries"]["list:/proc/sys"]);
            if !ro && !absent {
                return Err(format!("/proc/sys: {:?}", mount(p, "/proc/sys")));
            }
            all_refused(p, &["write:/proc/sys/kernel/hostname"])
        }
        ("ProtectKernelModules", _) if yes => {
            if mask(p, "CapBnd") & (1 << 16) != 0 {
                return Err(format!("CAP_SYS_MODULE in CapBnd {}", status(p, "CapBnd")));
            }
            hidden(p, "list:/usr/lib/modules")
        }
        ("ProtectKernelLogs", _) if yes => {
            let dev = p["dev_entries"].as_array().cloned().unwrap_or_default();
            if dev.iter().any(|e| e == "kmsg") {
                return Err("/dev/kmsg is there".into());
            }
            all_refused(p, &["read:/proc/kmsg"])
        }
        ("ProtectControlGroups", _) if yes => {
            all_refused(p, &["create:/sys/fs/cgroup/probe-write"])
        }
        ("ProtectProc", "invisible") => {
            let options =
                mount(p, "/proc").map_or("", |m| m["super_options"].as_str().unwrap_or(""));
            (options.contains("hidepid=invisible") || options.contains("hidepid=2"))
                .then_some(())
                .ok_or(format!("/proc options {options}"))
        }
        ("ProcSubset", "pid") => {
            let options =
                mount(p, "/proc").map_or("", |m| m["super_options"].as_str().unwrap_or(""));
            options
                .contains("subset=pid")
                .then_some(())
                .ok_or(format!("/proc options {options}"))
        }
        ("NoNewPrivileges", _) if yes => (status(p, "NoNewPrivs") == "1")
            .then_some(())
            .ok_or(format!("NoNewPrivs {}", status(p, "NoNewPrivs"))),
        ("CapabilityBoundingSet", "") => {
            for key in ["CapBnd", "CapPrm", "CapEff", "CapAmb", "CapInh"] {
                if mask(p, key) != 0 {
                    return Err(format!("{key} {}", status(p, key)));
                }
            }
            Ok(())
        }
        ("RestrictNamespaces", _) if yes => {
            filtered(p)?;
            all_refused(p, &["unshare-user", "unshare-net"])
        }
        ("RestrictRealtime", _) if yes => {
            filtered(p)?;
            all_refused(p, &["sched-fifo"])
        }
        ("RestrictSUIDSGID", _) if yes => all_refused(p, &["chmod-suid"]),
        ("RestrictAddressFamilies", families) => {
            let families: Vec<&str> = families.split_whitespace().collect();
            for (family, attempt) in [
                ("AF_UNIX", "socket-unix"),
                ("AF_INET", "socket-inet"),
                ("AF_INET6", "socket-inet6"),
                ("AF_NETLINK", "socket-netlink"),
                ("AF_PACKET", "socket-packet"),
            ] {
                if families.contains(&family) {
                    // AF_PACKET needs CAP_NET_RAW besides, which no service has.
                    if family != "AF_PACKET" {
                        ok(p, attempt)?;
                    }
                } else {
                    all_refused(p, &[attempt])?;
                }
            }
            Ok(())
        }
        ("LockPersonality", _) if yes => all_refused(p, &["personality-rie"]),
        ("MemoryDenyWriteExecute", _) if yes => all_refused(p, &["mmap-wx", "mprotect-exec"]),
        ("SystemCallFilter", "@system-service") => {
            filtered(p)?;
            // perf_event_open is in no group @system-service holds.
            all_refused(p, &["perf"])
        }
        ("SystemCallFilter", denied) if denied.starts_with('~') => {
            filtered(p)?;
            let groups: Vec<&str> = denied[1..].split_whitespace().collect();
            let probes: &[(&str, &str)] = &[
                ("@privileged", "sethostname"),
                ("@privileged", "setuid0"),
                ("@resources", "sched-fifo"),
                ("@keyring", "keyctl"),
            ];
            for (group, attempt) in probes {
                if groups.contains(group) {
                    all_refused(p, &[attempt])?;
                }
            }
            Ok(())
        }
        ("SystemCallErrorNumber", "EPERM") => {
            // A syscall the filter refuses fails with EPERM instead of killing the service.
            (p["tries"]["perf"] == "EPERM")
                .then_some(())
                .ok_or(format!("perf: {}", p["tries"]["perf"]))
        }
        ("SystemCallArchitectures", "native") => {
            filtered(p)?;
            all_refused(p, &["int80"])
        }
        ("UMask", umask) => {
            let asked = u32::from_str_radix(umask, 8).map_err(|e| e.to_string())?;
            (p["umask"] == asked)
                .then_some(())
                .ok_or(format!("umask {} instead of {asked:o}", p["umask"]))
        }
        ("KeyringMode", "private") => {
            let keyring = p["tries"]["session-keyring"].as_str().unwrap_or("");
            // A filter denying @keyring (strict) leaves no keyring to share at all.
            let filtered = keyring == "EPERM" && refused(&p["tries"]["keyctl"]);
            (filtered || (keyring.starts_with("ok") && !keyring.contains("_uid_ses")))
                .then_some(())
                .ok_or(format!("session keyring: {keyring}"))
        }
        ("IPAddressDeny", "any") => all_refused(
            p,
            &[format!("tcp-connect:127.0.0.1:{}", host.tcp_port).as_str()],
        ),
        ("RemoveIPC", _) if yes => {
            // What a uid leaves is looked for by its next holder: sandbox_attacks.rs. From
            // inside one run, the state that must hold is a private IPC namespace.
            (!same_namespace(p, host, "ipc"))
                .then_some(())
                .ok_or("the host's IPC namespace".into())
        }
        ("InaccessiblePaths", "/etc/os-release") => all_refused(p, &["read:/etc/os-release"]),
        ("TemporaryFileSystem", path) => {
            let path = path.split(':').next().unwrap_or(path);
            mount(p, path)
                .is_some_and(|m| m["fs_type"] == "tmpfs")
                .then_some(())
                .ok_or(format!("no tmpfs on {path}: {:?}", mount(p, path)))
        }
        (limit, value) if limit.starts_with("Limit") => {
            let resource = limit["Limit".len()..].to_ascii_lowercase();
            let (soft, hard) = value.split_once(':').unwrap_or((value, value));
            let number = |v: &str| -> Value {
                if v == "infinity" {
                    Value::Null
                } else {
                    v.parse::<u64>().map_or(Value::Null, Value::from)
                }
            };
            let seen = &p["rlimits"][&resource];
            (seen["soft"] == number(soft) && seen["hard"] == number(hard))
                .then_some(())
                .ok_or(format!("{resource}: {seen}"))
        }
        _ => Err(format!("no check for {directive}={value}")),
    }
}

/// The `[Service]` lines of built-in profile `name@1`.
fn profile_lines(name: &str) -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manager/profiles")
        .join(format!("{name}@1.conf"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Attaches with `--profile name` and compares every line of the profile with the probe's
/// report; each row must fail on one of the controls.
fn assert_profile_holds(name: &str) {
    let (host, _listener) = host();
    let tries = tries(&host);
    let h = Harness::start().unwrap();

    // The lines of name@1 at name@2 (which adds only TasksMax=); level 3 runs as the image's
    // users, whose rows differ (no PrivateUsers=, the namespace's capabilities).
    let at_level_2 = format!("{name}@2");
    let inside = run(&h, "probe", &["--profile", &at_level_2], "", &tries);

    let controls = controls(&tries);
    let mut wrong = Vec::new();
    for (directive, value) in profile_lines(name) {
        if let Err(why) = check(&directive, &value, &inside, &host) {
            wrong.push(format!("{directive}={value}: {why}"));
        }
        if controls
            .iter()
            .all(|c| check(&directive, &value, c, &host).is_ok())
        {
            wrong.push(format!(
                "{directive}={value}: the row passes outside the sandbox too"
            ));
        }
    }
    assert!(wrong.is_empty(), "profile {name}:\n{}", wrong.join("\n"));
}

#[test]
fn the_trusted_profile_holds_from_inside() {
    assert_profile_holds("trusted");
}

#[test]
fn the_default_profile_holds_from_inside() {
    assert_profile_holds("default");
}

#[test]
fn the_nonetwork_profile_holds_from_inside() {
    assert_profile_holds("nonetwork");
}

#[test]
fn the_strict_profile_holds_from_inside() {
    assert_profile_holds("strict");
}

/// Attaches two images with the `trusted` profile (the least the floor allows): one whose unit
/// has `directive` (and `with` besides), one with `with` alone; the row for `directive` must
/// hold in the first and fail in the second.
fn assert_directive_holds(directive: &str, with: &str) {
    let (host, _listener) = host();
    let tries = tries(&host);
    let h = Harness::start().unwrap();
    let (name, value) = directive.split_once('=').unwrap();

    // Level 2: a dynamic uid, whose PrivateUsers= is the three users of systemd's.
    let asked = run(
        &h,
        "asked",
        &["--profile", "trusted@2"],
        &format!("{with}{directive}\n"),
        &tries,
    );
    let control = run(&h, "control", &["--profile", "trusted@2"], with, &tries);

    if let Err(why) = check(name, value, &asked, &host) {
        panic!("{directive}: {why}");
    }
    assert!(
        check(name, value, &control, &host).is_err(),
        "{directive}: the row holds without the directive too"
    );
}

/// One test per directive: `directive_test!(test_name, "Directive=value")`, or with more
/// lines that both units get.
macro_rules! directive_test {
    ($test:ident, $directive:literal) => {
        directive_test!($test, $directive, "");
    };
    ($test:ident, $directive:literal, $with:literal) => {
        #[test]
        fn $test() {
            assert_directive_holds($directive, $with);
        }
    };
}

directive_test!(restrict_namespaces, "RestrictNamespaces=yes");
directive_test!(restrict_realtime, "RestrictRealtime=yes");
directive_test!(restrict_suid_sgid, "RestrictSUIDSGID=yes");
directive_test!(restrict_address_families, "RestrictAddressFamilies=AF_UNIX");
directive_test!(lock_personality, "LockPersonality=yes");
directive_test!(memory_deny_write_execute, "MemoryDenyWriteExecute=yes");
directive_test!(
    system_call_filter_allow_list,
    "SystemCallFilter=@system-service"
);
directive_test!(system_call_filter_deny_list, "SystemCallFilter=~@keyring");
directive_test!(system_call_architectures, "SystemCallArchitectures=native");
directive_test!(
    system_call_error_number,
    "SystemCallErrorNumber=EPERM",
    "SystemCallFilter=@system-service\n"
);
directive_test!(umask, "UMask=0027");
directive_test!(ip_address_deny, "IPAddressDeny=any");
directive_test!(private_network, "PrivateNetwork=yes");
directive_test!(private_users, "PrivateUsers=yes");
directive_test!(limit_nofile, "LimitNOFILE=100:200");
directive_test!(protect_home, "ProtectHome=yes");
directive_test!(protect_kernel_modules, "ProtectKernelModules=yes");
directive_test!(protect_proc, "ProtectProc=invisible");
directive_test!(proc_subset, "ProcSubset=pid");
directive_test!(inaccessible_paths, "InaccessiblePaths=/etc/os-release");
directive_test!(temporary_file_system, "TemporaryFileSystem=/opt");
