//! Namespaces, users, capabilities, limits, keyring and Landlock scopes of real sandboxes,
//! each directive probed from inside (berth-probe, built by `cargo build --workspace`) and
//! compared with a control launched without it. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fixture;

use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::{Duration, Instant};

use berth_protocol::sandbox::{KeyringMode, Rlimit, SandboxSpec};
use berth_testkit::ImageBuilder;
use fixture::*;
use serde_json::Value;

const PROBE: &str = "/usr/bin/berth-probe";

/// A service whose image holds the probe (and busybox), with `extra` files owned by uid 1000.
fn probe_fixture(unit: &str) -> Fixture {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = ImageBuilder::new(dir.path())
        .probe()
        .file("/etc/owned-by-1000", "x", 0o644)
        .build()
        .unwrap();
    std::os::unix::fs::chown(root.join("etc/owned-by-1000"), Some(1000), Some(1000)).unwrap();
    Fixture::with_image(unit, dir)
}

/// The probe's report in the service's stdout, waiting for it at most [`TIMEOUT`].
fn report(fx: &Fixture) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(line) = fx
            .stdout_lines()
            .into_iter()
            .find(|l| l.contains("\"probe\":\"berth-probe\""))
        {
            return serde_json::from_str(&line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no probe report: {:?}",
            fx.log_records()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Launches the probe with `args` in `sandbox` and returns its report.
fn probe_with(fx: &mut Fixture, sandbox: SandboxSpec, args: &[&str]) -> Value {
    let mut argv = vec![PROBE];
    argv.extend_from_slice(args);
    let mut spec = fx.spec(&argv);
    spec.sandbox = sandbox;
    fx.try_launch_spec(&spec)
        .unwrap_or_else(|e| panic!("launch failed: {e}"));
    report(fx)
}

fn baseline() -> SandboxSpec {
    SandboxSpec::baseline(UID, GID, "probe")
}

fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

// ---- PrivateNetwork=, ProtectHostname= ----

#[test]
fn a_private_network_has_only_lo_and_lo_is_up() {
    let mut fx = probe_fixture("net.service");
    let mut sandbox = baseline();
    sandbox.namespaces.private_network = true;

    let probe = probe_with(&mut fx, sandbox, &[]);

    assert_ne!(probe["namespaces"]["net"], host_ns("net"));
    assert_eq!(probe["interfaces"], serde_json::json!(["lo"]));
    assert_eq!(probe["loopback"], "ok");
}

#[test]
fn without_private_network_the_service_shares_the_host_network() {
    let mut fx = probe_fixture("hostnet.service");

    let probe = probe_with(&mut fx, baseline(), &[]);

    assert_eq!(probe["namespaces"]["net"], host_ns("net"));
    assert_eq!(probe["loopback"], "ok");
}

#[test]
fn protect_hostname_keeps_the_host_name_in_a_namespace_of_its_own() {
    let mut fx = probe_fixture("uts.service");

    let probe = probe_with(&mut fx, baseline(), &[]);

    assert_ne!(probe["namespaces"]["uts"], host_ns("uts"));
    assert_eq!(
        probe["hostname"],
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .as_ref()
    );
}

// ---- PrivateUsers=, supplementary groups ----

#[test]
fn private_users_maps_only_root_and_the_service() {
    let mut fx = probe_fixture("users.service");
    let mut sandbox = baseline();
    sandbox.identity.private_users = true;

    let probe = probe_with(&mut fx, sandbox, &[]);

    assert_ne!(probe["namespaces"]["user"], host_ns("user"));
    let uid_map: Vec<Vec<String>> = probe["uid_map"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        uid_map,
        [vec!["0", "0", "1"], vec!["61234", "61234", "1"]]
            .map(|l| l.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    );
    assert_eq!(probe["uid"], UID);
}

#[test]
fn without_private_users_the_host_user_namespace_is_kept() {
    let mut fx = probe_fixture("nousers.service");

    let probe = probe_with(&mut fx, baseline(), &[]);

    assert_eq!(probe["namespaces"]["user"], host_ns("user"));
}

#[test]
fn private_users_shows_synthesized_passwd_and_group() {
    let mut fx = probe_fixture("db.service");
    let mut sandbox = baseline();
    sandbox.identity.private_users = true;

    let probe = probe_with(&mut fx, sandbox, &[]);

    assert_eq!(
        probe["user_databases"]["passwd"],
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         probe:x:61234:61234:probe:/:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    );
    assert_eq!(
        probe["user_databases"]["group"],
        "root:x:0:\nprobe:x:61234:\nnogroup:x:65534:\n"
    );
}

#[test]
fn without_private_users_the_image_databases_are_shown() {
    let mut fx = probe_fixture("imagedb.service");

    let probe = probe_with(&mut fx, baseline(), &[]);

    assert!(
        probe["user_databases"]["passwd"]
            .as_str()
            .unwrap()
            .starts_with("root:x:0:0:root:/root:/bin/sh\n"),
        "{}",
        probe["user_databases"]
    );
}

#[test]
fn private_users_shows_files_of_other_host_users_as_nobody() {
    let mut fx = probe_fixture("owner.service");
    let mut spec = fx.spec(&["/bin/sh", "-c", "stat -c %u /etc/owned-by-1000"]);
    spec.sandbox.identity.private_users = true;

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    assert_eq!(fx.stdout_lines(), ["65534"]);
}

#[test]
fn without_private_users_files_keep_their_host_owner() {
    let mut fx = probe_fixture("hostowner.service");

    let lines = fx.run_script("stat -c %u /etc/owned-by-1000");

    assert_eq!(lines, ["1000"]);
}

#[test]
fn supplementary_groups_are_set() {
    let mut fx = probe_fixture("groups.service");
    let mut sandbox = baseline();
    sandbox.identity.supplementary_groups = vec![61235, 61236];

    let probe = probe_with(&mut fx, sandbox, &[]);

    assert_eq!(probe["groups"], serde_json::json!([61235, 61236]));
}

#[test]
fn without_supplementary_groups_there_are_none() {
    let mut fx = probe_fixture("nogroups.service");

    let probe = probe_with(&mut fx, baseline(), &[]);

    assert_eq!(probe["groups"], serde_json::json!([]));
}

// ---- CapabilityBoundingSet=, AmbientCapabilities=, NoNewPrivileges= ----

/// CAP_NET_BIND_SERVICE (10) as /proc/self/status shows a set holding only it.
const NET_BIND_SERVICE: &str = "0000000000000400";
const NO_CAPABILITIES: &str = "0000000000000000";

#[test]
fn an_ambient_capability_is_effective_permitted_and_bounded() {
    let mut fx = probe_fixture("ambient.service");
    let mut sandbox = baseline();
    sandbox.capabilities.bounding = vec!["CAP_NET_BIND_SERVICE".into()];
    sandbox.capabilities.ambient = vec!["CAP_NET_BIND_SERVICE".into()];

    let probe = probe_with(&mut fx, sandbox, &[]);

    let status = &probe["status"];
    for set in ["CapAmb", "CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status[set], NET_BIND_SERVICE, "{set}: {status}");
    }
    assert_eq!(status["CapInh"], NET_BIND_SERVICE);
    assert_eq!(status["NoNewPrivs"], "1");
}

#[test]
fn a_bounding_capability_alone_grants_nothing() {
    let mut fx = probe_fixture("bounding.service");
    let mut sandbox = baseline();
    sandbox.capabilities.bounding = vec!["CAP_NET_BIND_SERVICE".into()];

    let probe = probe_with(&mut fx, sandbox, &[]);

    let status = &probe["status"];
    assert_eq!(status["CapBnd"], NET_BIND_SERVICE);
    for set in ["CapAmb", "CapEff", "CapPrm", "CapInh"] {
        assert_eq!(status[set], NO_CAPABILITIES, "{set}: {status}");
    }
}

#[test]
fn without_capabilities_every_set_is_empty() {
    let mut fx = probe_fixture("nocaps.service");

    let probe = probe_with(&mut fx, baseline(), &[]);

    let status = &probe["status"];
    for set in ["CapAmb", "CapEff", "CapPrm", "CapInh", "CapBnd"] {
        assert_eq!(status[set], NO_CAPABILITIES, "{set}: {status}");
    }
}

#[test]
fn an_ambient_capability_works_binding_a_low_port() {
    let mut fx = probe_fixture("port.service");
    let mut spec = fx.spec(&[
        "/bin/sh",
        "-c",
        "nc -l -p 80 & sleep 0.3; kill $! && echo bound",
    ]);
    spec.sandbox.namespaces.private_network = true;
    spec.sandbox.capabilities.bounding = vec!["CAP_NET_BIND_SERVICE".into()];
    spec.sandbox.capabilities.ambient = vec!["CAP_NET_BIND_SERVICE".into()];

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    assert_eq!(fx.stdout_lines(), ["bound"], "{:?}", fx.log_records());
}

#[test]
fn without_the_capability_a_low_port_is_refused() {
    let mut fx = probe_fixture("noport.service");
    let mut spec = fx.spec(&[
        "/bin/sh",
        "-c",
        "nc -l -p 80 & sleep 0.3; kill $! && echo bound",
    ]);
    spec.sandbox.namespaces.private_network = true;

    fx.try_launch_spec(&spec).unwrap();
    fx.wait_exit();

    assert_eq!(fx.stdout_lines(), Vec::<String>::new());
}

// ---- Limit*=, UMask= ----

#[test]
fn limits_are_set_soft_and_hard() {
    let mut fx = probe_fixture("limits.service");
    let mut sandbox = baseline();
    sandbox.rlimits = vec![
        Rlimit {
            resource: "NOFILE".into(),
            soft: Some(256),
            hard: Some(512),
        },
        Rlimit {
            resource: "CORE".into(),
            soft: Some(0),
            hard: Some(0),
        },
    ];

    let probe = probe_with(&mut fx, sandbox, &[]);

    assert_eq!(
        probe["rlimits"]["nofile"],
        serde_json::json!({"soft": 256, "hard": 512})
    );
    assert_eq!(
        probe["rlimits"]["core"],
        serde_json::json!({"soft": 0, "hard": 0})
    );
}

#[test]
fn without_limits_the_helpers_own_are_inherited() {
    let mut fx = probe_fixture("nolimits.service");
    let own = rustix::process::getrlimit(rustix::process::Resource::Nofile);

    let probe = probe_with(&mut fx, baseline(), &[]);

    assert_eq!(
        probe["rlimits"]["nofile"],
        serde_json::json!({"soft": own.current, "hard": own.maximum})
    );
}

#[test]
fn umask_is_the_specs() {
    let mut fx = probe_fixture("umask.service");
    let mut sandbox = baseline();
    sandbox.umask = 0o077;

    let probe = probe_with(&mut fx, sandbox, &[]);

    assert_eq!(probe["umask"], 0o077);
}

#[test]
fn umask_defaults_to_0022() {
    let mut fx = probe_fixture("defaultumask.service");

    let probe = probe_with(&mut fx, baseline(), &[]);

    assert_eq!(probe["umask"], 0o022);
}

// ---- KeyringMode= ----

#[test]
fn a_key_left_in_the_session_keyring_is_gone_at_the_next_start_of_the_uid() {
    let mut first = probe_fixture("keys1.service");
    let mut second = probe_fixture("keys2.service");
    let name = format!("left-behind-{}", std::process::id());

    let before = probe_with(&mut first, baseline(), &["--add-session-key", &name]);
    let after = probe_with(&mut second, baseline(), &["--keyring"]);

    // The control: the first start had the key in its own session keyring.
    assert_eq!(
        before["keyring"]["added"][&name], "ok",
        "{}",
        before["keyring"]
    );
    assert!(
        before["keyring"]["keys"]
            .as_array()
            .unwrap()
            .contains(&Value::from(name.as_str()))
    );
    assert_ne!(before["keyring"]["session"], after["keyring"]["session"]);
    assert!(
        !after["keyring"]["keys"]
            .as_array()
            .unwrap()
            .contains(&Value::from(name.as_str())),
        "{}",
        after["keyring"]
    );
}

#[test]
fn a_private_session_keyring_does_not_link_the_user_keyring() {
    let mut fx = probe_fixture("privatekeys.service");

    let probe = probe_with(&mut fx, baseline(), &["--keyring"]);

    assert_eq!(probe["keyring"]["keys"], serde_json::json!([]));
}

#[test]
fn a_shared_session_keyring_links_the_user_keyring() {
    let mut fx = probe_fixture("sharedkeys.service");
    let mut sandbox = baseline();
    sandbox.keyring = KeyringMode::Shared;

    let probe = probe_with(&mut fx, sandbox, &["--keyring"]);

    assert_eq!(
        probe["keyring"]["keys"],
        serde_json::json!([format!("_uid.{UID}")])
    );
}

// ---- Landlock: abstract unix sockets ----

/// An abstract socket the test (the host) listens on, named uniquely.
fn host_abstract_socket(tag: &str) -> (String, UnixListener) {
    let name = format!("berth-test-host-{tag}-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    (name, UnixListener::bind_addr(&addr).unwrap())
}

/// The baseline has both scopes; so has this, said explicitly.
fn scoped() -> SandboxSpec {
    let mut sandbox = baseline();
    sandbox.landlock.scope_abstract_unix_sockets = true;
    sandbox.landlock.scope_signals = true;
    sandbox
}

/// Without any Landlock scope (the control).
fn unscoped() -> SandboxSpec {
    let mut sandbox = baseline();
    sandbox.landlock.scope_abstract_unix_sockets = false;
    sandbox.landlock.scope_signals = false;
    sandbox
}

/// The probe's `--try` arguments for connecting to `target` and, as the control, to a socket
/// of its own (listened on by the same probe).
fn connect_args(target: &str) -> Vec<String> {
    let own = format!("{target}-own");
    vec![
        "--listen-abstract".into(),
        own.clone(),
        "--try".into(),
        format!("abstract-connect:{target}"),
        "--try".into(),
        format!("abstract-connect:{own}"),
    ]
}

fn probe_connecting(fx: &mut Fixture, sandbox: SandboxSpec, target: &str) -> (Value, Value) {
    let args = connect_args(target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let probe = probe_with(fx, sandbox, &args);
    let tries = &probe["tries"];
    (
        tries[format!("abstract-connect:{target}")].clone(),
        tries[format!("abstract-connect:{target}-own")].clone(),
    )
}

#[test]
fn a_scoped_service_cannot_reach_the_hosts_abstract_sockets_but_reaches_its_own() {
    let (name, _listener) = host_abstract_socket("scoped");
    let mut fx = probe_fixture("scoped.service");

    let (host, own) = probe_connecting(&mut fx, scoped(), &name);

    assert_eq!(host, "EPERM");
    assert_eq!(own, "ok");
}

#[test]
fn an_unscoped_service_reaches_the_hosts_abstract_sockets() {
    let (name, _listener) = host_abstract_socket("unscoped");
    let mut fx = probe_fixture("unscoped.service");

    let (host, own) = probe_connecting(&mut fx, unscoped(), &name);

    assert_eq!((host, own), ("ok".into(), "ok".into()));
}

#[test]
fn a_scoped_service_cannot_reach_another_services_abstract_socket() {
    let name = format!("berth-test-service-{}", std::process::id());
    let mut listening = probe_fixture("listening.service");
    let mut scoped_fx = probe_fixture("other-scoped.service");
    let mut unscoped_fx = probe_fixture("other-unscoped.service");
    let listened = probe_with(
        &mut listening,
        scoped(),
        &["--listen-abstract", &name, "--loop"],
    );
    assert_eq!(listened["listening"][&name], "ok");

    let (denied, own) = probe_connecting(&mut scoped_fx, scoped(), &name);
    let (reached, _) = probe_connecting(&mut unscoped_fx, unscoped(), &name);

    assert_eq!(denied, "EPERM");
    assert_eq!(own, "ok");
    // The control: the socket is there and reachable for a service without the scope.
    assert_eq!(reached, "ok");
}

#[test]
fn a_private_network_hides_the_hosts_abstract_sockets_even_without_landlock() {
    let (name, _listener) = host_abstract_socket("netns");
    let mut fx = probe_fixture("netns-abstract.service");
    let mut sandbox = unscoped();
    sandbox.namespaces.private_network = true;

    let (host, own) = probe_connecting(&mut fx, sandbox, &name);

    assert_eq!(host, "ECONNREFUSED");
    assert_eq!(own, "ok");
}
