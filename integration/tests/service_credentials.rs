//! A service's namespaces, users, limits and abstract sockets as its unit and berth's defaults
//! ask, end to end: a unit file attached and started through berthd and a real berth-helper,
//! probed from inside, each against a control. Needs root and the `berth` user.
//!
//! Abstract unix sockets (ISSUE 7 item 3): a service on the host network shares the host's
//! abstract socket namespace, so without Landlock's scoping it could connect to the host's
//! abstract sockets (D-Bus, X11...) and to other services'.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use anyhow::Result;
use berth_testkit::{Harness, ImageBuilder, probe_output};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn probe_unit(args: &str) -> String {
    probe_unit_with("", args)
}

fn probe_unit_with(directives: &str, args: &str) -> String {
    format!(
        "[Unit]\nDescription=probe\n\n[Service]\n{directives}ExecStart=/usr/bin/berth-probe {args}\n"
    )
}

/// A harness with image `name` whose `name.service` has `directives` and runs the probe.
fn attached(name: &str, directives: &str) -> Harness {
    attached_with(name, directives, &[])
}

/// [`attached`], attached with `attach_args` (`--profile default@2`).
fn attached_with(name: &str, directives: &str, attach_args: &[&str]) -> Harness {
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join(name))
        .probe()
        .unit(
            &format!("{name}.service"),
            &probe_unit_with(directives, "--loop"),
        )
        .build()
        .unwrap();
    h.berth_ok(&[&["attach", name], attach_args].concat())
        .unwrap();
    h
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_units_private_network_and_limits_hold_inside() {
    let h = attached("creds", "PrivateNetwork=yes\nLimitNOFILE=256:512\n");

    let probe = run(&h, "creds").unwrap();

    assert_ne!(probe["namespaces"]["net"], host_ns("net"));
    assert_eq!(probe["interfaces"], serde_json::json!(["lo"]));
    assert_eq!(probe["loopback"], "ok");
    assert_eq!(
        probe["rlimits"]["nofile"],
        serde_json::json!({"soft": 256, "hard": 512})
    );
}

#[test]
fn without_those_directives_the_service_has_the_host_network_and_limits() {
    let h = attached("plain", "");

    let probe = run(&h, "plain").unwrap();

    assert_eq!(probe["namespaces"]["net"], host_ns("net"));
    assert_eq!(probe["loopback"], "ok");
    assert_ne!(
        probe["rlimits"]["nofile"],
        serde_json::json!({"soft": 256, "hard": 512})
    );
}

#[test]
fn the_units_private_users_shows_root_the_service_and_nobody() {
    // A dynamic uid's three users (level 2; in block mode: the image's own, image_users.rs).
    let at = ["--profile", "default@2"];
    let h = attached_with("users", "PrivateUsers=yes\nUMask=0077\n", &at);

    let probe = run(&h, "users").unwrap();

    assert_ne!(probe["namespaces"]["user"], host_ns("user"));
    let uid = probe["uid"].as_u64().unwrap().to_string();
    assert_eq!(
        probe["uid_map"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "0", "1", &uid, &uid, "1"]
    );
    assert_eq!(
        probe["user_databases"]["passwd"],
        format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             users:x:{uid}:{uid}:users:/:/usr/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
    );
    assert_eq!(probe["umask"], 0o077);
}

/// The probe arguments that try `target` and, as the control, a socket of the probe's own.
fn connect_args(target: &str) -> String {
    format!(
        "--listen-abstract {target}-own --try abstract-connect:{target} \
         --try abstract-connect:{target}-own --loop"
    )
}

/// Starts `unit` and returns its probe report.
fn run(h: &Harness, unit: &str) -> Result<Value> {
    h.berth_ok(&["start", unit])?;
    h.wait_for(
        || Ok(probe_output(&h.berth_ok(&["logs", unit])?).is_ok()),
        WAIT,
    )?;
    probe_output(&h.berth_ok(&["logs", unit])?)
}

fn abstract_address(name: &str) -> SocketAddr {
    SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
}

#[test]
fn a_service_on_the_host_network_cannot_reach_the_hosts_abstract_sockets() {
    let name = format!("berth-test-host-{}", std::process::id());
    let _host = UnixListener::bind_addr(&abstract_address(&name)).unwrap();
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("probe"))
        .probe()
        .unit("probe.service", &probe_unit(&connect_args(&name)))
        .build()
        .unwrap();
    h.berth_ok(&["attach", "probe"]).unwrap();

    let probe = run(&h, "probe").unwrap();

    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        probe["namespaces"]["net"],
        host_net.to_string_lossy().as_ref()
    );
    assert_eq!(probe["tries"][format!("abstract-connect:{name}")], "EPERM");
    // The control: abstract sockets work, its own ones.
    assert_eq!(probe["tries"][format!("abstract-connect:{name}-own")], "ok");
}

#[test]
fn a_service_cannot_reach_another_services_abstract_socket() {
    let name = format!("berth-test-listener-{}", std::process::id());
    let h = Harness::start().unwrap();
    ImageBuilder::new(&h.images_dir().join("pair"))
        .probe()
        .unit(
            "pair-listener.service",
            &probe_unit(&format!("--listen-abstract {name} --loop")),
        )
        .unit("pair-client.service", &probe_unit(&connect_args(&name)))
        .build()
        .unwrap();
    h.berth_ok(&["attach", "pair"]).unwrap();
    let listener = run(&h, "pair-listener").unwrap();
    assert_eq!(listener["listening"][&name], "ok");
    // The control: the socket is there, on the host's abstract namespace, reachable from
    // outside any service.
    UnixStream::connect_addr(&abstract_address(&name)).unwrap();

    let client = run(&h, "pair-client").unwrap();

    assert_eq!(client["tries"][format!("abstract-connect:{name}")], "EPERM");
    assert_eq!(
        client["tries"][format!("abstract-connect:{name}-own")],
        "ok"
    );
}
