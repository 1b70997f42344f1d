//! IPAddressAllow=/IPAddressDeny= through berthd, for services on the host network (issue 7
//! item 4): a connect to a denied address fails, a packet from a denied address never reaches
//! the service, an allowed one works. Loopback only (127.0.0.0/8 is all this host's), nothing
//! on the host changes. Each test has a control that must succeed.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use berth_testkit::{Harness, ImageBuilder, wait_until};
use rustix::net::sockopt::Timeout;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection that the firewall drops is given before it counts as dropped.
const DROPPED_AFTER: Duration = Duration::from_secs(1);

/// Attaches image `name` with unit `name.service` running `script` under `directives`.
fn attach(h: &Harness, name: &str, service_type: &str, directives: &str, script: &str) {
    let unit =
        format!("[Service]\nType={service_type}\n{directives}ExecStart=/bin/sh -c '{script}'\n");
    ImageBuilder::new(&h.images_dir().join(name))
        .unit(&format!("{name}.service"), &unit)
        .build()
        .unwrap();
    h.berth_ok(&["attach", name]).unwrap();
}

/// A listener of the test at `ip` that counts the connections it accepts (and closes them).
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
}

impl Listener {
    fn start(ip: Ipv4Addr) -> Listener {
        let listener = TcpListener::bind(SocketAddrV4::new(ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (count, stop) = (accepted.clone(), done.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Listener {
            port,
            accepted,
            done,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// The service's script: one nc per target, each saying whether it connected.
fn connect_script(targets: &[(&str, u16)]) -> String {
    targets
        .iter()
        .map(|(ip, port)| {
            format!("nc -w 2 {ip} {port} </dev/null && echo {ip} connected || echo {ip} failed")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs oneshot `name` and returns its log.
fn run(h: &Harness, name: &str) -> String {
    h.berth_ok(&["start", name]).unwrap();
    h.berth_ok(&["logs", name, "-o", "cat"]).unwrap()
}

#[test]
fn a_service_connects_only_where_its_firewall_allows() {
    let h = Harness::start().unwrap();
    let allowed = Listener::start(Ipv4Addr::new(127, 0, 0, 1));
    let denied = Listener::start(Ipv4Addr::new(127, 0, 0, 3));
    let script = connect_script(&[("127.0.0.3", denied.port), ("127.0.0.1", allowed.port)]);
    attach(
        &h,
        "walled",
        "oneshot",
        "IPAddressAllow=127.0.0.1\nIPAddressDeny=any\n",
        &script,
    );

    let log = run(&h, "walled");

    assert!(log.contains("127.0.0.3 failed"), "{log}");
    // Refused at connect(2), not left to time out.
    assert!(log.contains("Operation not permitted"), "{log}");
    assert!(log.contains("127.0.0.1 connected"), "{log}");
    assert_eq!(denied.accepted(), 0, "the denied listener got a connection");
}

#[test]
fn without_a_firewall_the_same_service_connects_to_both() {
    let h = Harness::start().unwrap();
    let first = Listener::start(Ipv4Addr::new(127, 0, 0, 1));
    let second = Listener::start(Ipv4Addr::new(127, 0, 0, 3));
    let script = connect_script(&[("127.0.0.3", second.port), ("127.0.0.1", first.port)]);
    attach(&h, "open", "oneshot", "", &script);

    let log = run(&h, "open");

    assert!(log.contains("127.0.0.3 connected"), "{log}");
    assert!(log.contains("127.0.0.1 connected"), "{log}");
}

#[test]
fn a_deny_list_alone_blocks_only_what_it_lists() {
    let h = Harness::start().unwrap();
    let kept = Listener::start(Ipv4Addr::new(127, 0, 0, 1));
    let blocked = Listener::start(Ipv4Addr::new(127, 0, 0, 5));
    let script = connect_script(&[("127.0.0.5", blocked.port), ("127.0.0.1", kept.port)]);
    attach(
        &h,
        "partial",
        "oneshot",
        "IPAddressDeny=127.0.0.4/30\n",
        &script,
    );

    let log = run(&h, "partial");

    assert!(log.contains("127.0.0.5 failed"), "{log}");
    assert!(log.contains("127.0.0.1 connected"), "{log}");
}

/// A port nothing listens on at the moment.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something listens on TCP port `port` of the host (/proc/net/tcp and tcp6, state
/// 0A; busybox's nc listens on `::`).
fn listening(port: u16) -> bool {
    let table = ["/proc/net/tcp", "/proc/net/tcp6"]
        .map(|t| std::fs::read_to_string(t).unwrap_or_default())
        .join("\n");
    let local = format!(":{port:04X}");
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1).is_some_and(|l| l.ends_with(&local)) && fields.get(3) == Some(&"0A")
    })
}

/// Connects from `source` to 127.0.0.1:`port`; `None` if no connection within `wait`.
fn connect_from(source: Ipv4Addr, port: u16, wait: Duration) -> Option<TcpStream> {
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    // Linux bounds a blocking connect by the send timeout (EINPROGRESS once it passed).
    rustix::net::sockopt::set_socket_timeout(&sock, Timeout::Send, Some(wait)).unwrap();
    rustix::net::bind(&sock, &SocketAddrV4::new(source, 0)).unwrap();
    match rustix::net::connect(&sock, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
        Ok(()) => Some(TcpStream::from(sock)),
        Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::AGAIN) => None,
        Err(e) => panic!("connect from {source}: {e}"),
    }
}

#[test]
fn a_packet_from_a_denied_address_never_reaches_the_listening_service() {
    let h = Harness::start().unwrap();
    let port = free_port();
    attach(
        &h,
        "server",
        "simple",
        "IPAddressAllow=127.0.0.1\nIPAddressDeny=any\n",
        &format!("nc -l -p {port}"),
    );
    h.berth_ok(&["start", "server"]).unwrap();
    wait_until(TIMEOUT, || Ok(listening(port))).unwrap();

    let denied = connect_from(Ipv4Addr::new(127, 0, 0, 2), port, DROPPED_AFTER);
    // Control: the same listener, still waiting, takes a client from an allowed address.
    let mut allowed = connect_from(Ipv4Addr::LOCALHOST, port, TIMEOUT)
        .expect("the allowed client could not connect");
    allowed.write_all(b"through the firewall\n").unwrap();
    drop(allowed);

    assert!(denied.is_none(), "a client from 127.0.0.2 got through");
    wait_until(TIMEOUT, || {
        let log = h.berth_ok(&["logs", "server", "-o", "cat"])?;
        Ok(log.contains("through the firewall"))
    })
    .unwrap();
}

#[test]
fn without_a_firewall_a_client_from_any_loopback_address_reaches_the_service() {
    let h = Harness::start().unwrap();
    let port = free_port();
    attach(&h, "openserver", "simple", "", &format!("nc -l -p {port}"));
    h.berth_ok(&["start", "openserver"]).unwrap();
    wait_until(TIMEOUT, || Ok(listening(port))).unwrap();

    let client = connect_from(Ipv4Addr::new(127, 0, 0, 2), port, TIMEOUT);

    let mut client = client.expect("a client from 127.0.0.2 could not connect");
    client.write_all(b"hello\n").unwrap();
    drop(client);
}
