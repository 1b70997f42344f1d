//! Privileged ports without host root (ISSUE 9 item 3): `berth attach IMAGE --port N` lets the
//! attachment's services bind N below 1024 on the host's network, through the supervisor's
//! port broker, and no other port below 1024; other binds are the kernel's as before.
//!
//! Each test binds on a loopback address of its own (127/8 is all this host's), so that the
//! tests, run in parallel, and anything else on the host using the same ports never meet.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use berth_testkit::harness::probe_output;
use berth_testkit::image::PROBE_IN_IMAGE;
use berth_testkit::procfs::proc_status_field;
use berth_testkit::{Harness, ImageBuilder};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A loopback address no other test of this run uses: `127.<pid>.<n>`.
fn loopback(n: u8) -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(127, 100 + (pid % 150) as u8, ((pid / 150) % 250) as u8, n)
}

/// Attaches image `name` with a probe service binding `binds` (probe arguments) and staying
/// up, with `attach_args` after the image; starts it and returns the probe's report.
fn run_binding(h: &Harness, name: &str, binds: &[String], attach_args: &[&str]) -> Value {
    let unit = format!(
        "[Service]\nExecStart={PROBE_IN_IMAGE} {} --loop\n",
        binds.join(" ")
    );
    ImageBuilder::new(&h.images_dir().join(name))
        .probe()
        .unit(&format!("{name}.service"), &unit)
        .build()
        .unwrap();
    // Level 3: the image's own users, whom alone ports are granted to.
    let mut args = vec!["attach", name, "--profile", "default@3"];
    args.extend_from_slice(attach_args);
    h.berth_ok(&args).unwrap();
    h.berth_ok(&["start", name]).unwrap();
    let mut report = None;
    h.wait_for(
        || {
            report = probe_output(&h.berth_ok(&["logs", name])?).ok();
            Ok(report.is_some())
        },
        WAIT,
    )
    .unwrap();
    report.unwrap()
}

/// What a connection to `address` reads until the server closes it or 5 s pass.
fn answer(address: SocketAddrV4) -> String {
    let mut stream = TcpStream::connect_timeout(&address.into(), Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while !line.ends_with('\n') && stream.read(&mut byte).unwrap_or(0) == 1 {
        line.push(char::from(byte[0]));
    }
    line
}

#[test]
fn a_granted_port_binds_and_answers_as_the_service() {
    let h = Harness::start().unwrap();
    let address = SocketAddrV4::new(loopback(1), 81);

    let report = run_binding(
        &h,
        "granted",
        &[format!("--bind-tcp {address}")],
        &["--port", "81"],
    );

    assert_eq!(report["binds"][format!("tcp {address}")], "ok", "{report}");
    let pid = report["pid"].as_u64().unwrap();
    let uid = report["uid"].as_u64().unwrap();
    assert_eq!(
        answer(address),
        format!("berth-probe pid {pid} uid {uid}\n")
    );
    assert_eq!(
        h.status_json("granted").unwrap()["ports"],
        serde_json::json!([81])
    );
    h.berth_ok(&["stop", "granted"]).unwrap();
}

/// The supervisor of `unit`'s running service: the parent of its init, the main process's
/// parent.
fn supervisor_of(h: &Harness, unit: &str) -> u32 {
    let parent = |pid: u32| -> u32 { proc_status_field(pid, "PPid").unwrap().parse().unwrap() };
    let main = h.status_json(unit).unwrap()["main_pid"].as_u64().unwrap();
    parent(parent(u32::try_from(main).unwrap()))
}

#[test]
fn the_supervisor_keeps_cap_net_bind_service_only_for_a_service_with_grants() {
    let h = Harness::start().unwrap();
    run_binding(&h, "withports", &[], &["--port", "443"]);
    run_binding(&h, "withoutports", &[], &[]);

    let with = proc_status_field(supervisor_of(&h, "withports"), "CapEff").unwrap();
    let without = proc_status_field(supervisor_of(&h, "withoutports"), "CapEff").unwrap();

    // CAP_KILL is 1 << 5, CAP_NET_BIND_SERVICE 1 << 10.
    assert_eq!(with, "0000000000000420");
    assert_eq!(without, "0000000000000020");
    h.berth_ok(&["stop", "withports", "withoutports"]).unwrap();
}

#[test]
fn an_ungranted_privileged_port_fails_with_eacces() {
    let h = Harness::start().unwrap();
    let address = SocketAddrV4::new(loopback(2), 82);

    let report = run_binding(
        &h,
        "ungranted",
        &[format!("--bind-tcp {address}")],
        &["--port", "81"],
    );

    let outcome = report["binds"][format!("tcp {address}")].as_str().unwrap();
    assert!(outcome.contains("os error 13"), "EACCES expected: {report}");
    h.berth_ok(&["stop", "ungranted"]).unwrap();
}

#[test]
fn unix_sockets_and_ports_from_1024_bind_as_before() {
    let h = Harness::start().unwrap();
    let address = SocketAddrV4::new(loopback(3), 8081);

    let report = run_binding(
        &h,
        "unprivileged",
        &[
            format!("--bind-tcp {address}"),
            "--bind-unix /tmp/unprivileged.sock".to_owned(),
        ],
        &["--port", "81"],
    );

    assert_eq!(report["binds"][format!("tcp {address}")], "ok", "{report}");
    assert_eq!(
        report["binds"]["unix /tmp/unprivileged.sock"], "ok",
        "{report}"
    );
    assert!(answer(address).starts_with("berth-probe pid "));
    h.berth_ok(&["stop", "unprivileged"]).unwrap();
}

#[test]
fn without_a_grant_a_privileged_port_fails_with_eacces() {
    let h = Harness::start().unwrap();
    let address = SocketAddrV4::new(loopback(4), 81);

    let report = run_binding(&h, "nogrant", &[format!("--bind-tcp {address}")], &[]);

    let outcome = report["binds"][format!("tcp {address}")].as_str().unwrap();
    assert!(outcome.contains("os error 13"), "EACCES expected: {report}");
    assert!(h.status_json("nogrant").unwrap()["ports"].is_null());
    h.berth_ok(&["stop", "nogrant"]).unwrap();
}

#[test]
fn reattach_keeps_the_grants() {
    let h = Harness::start().unwrap();
    let address = SocketAddrV4::new(loopback(5), 81);
    run_binding(
        &h,
        "kept",
        &[format!("--bind-tcp {address}")],
        &["--port", "81"],
    );
    h.berth_ok(&["stop", "kept"]).unwrap();

    h.berth_ok(&["reattach", "kept"]).unwrap();

    assert_eq!(
        h.status_json("kept").unwrap()["ports"],
        serde_json::json!([81])
    );
    h.berth_ok(&["start", "kept"]).unwrap();
    h.wait_for(
        || Ok(TcpStream::connect_timeout(&address.into(), Duration::from_secs(1)).is_ok()),
        WAIT,
    )
    .unwrap();
    h.berth_ok(&["stop", "kept"]).unwrap();
}
