//! IPAddressAllow=/IPAddressDeny= for a service on the host network: two `cgroup_skb`
//! programs (ingress, egress) on the service's own cgroup, built as data (`program.rs`) and
//! handed to the kernel with bpf(2) (`load.rs`). They are attached before any process of the
//! service is in the cgroup, so its very first packet is judged; the service, without
//! CAP_NET_ADMIN or CAP_BPF in the host's user namespace, cannot detach them.

mod load;
pub(crate) mod program;

use std::os::fd::{AsFd, BorrowedFd};

use berth_protocol::ip_prefix::{IpPrefix, PrefixError};
use berth_protocol::sandbox::IpFirewall;

use load::Hook;
pub(crate) use load::LoadError;
pub(crate) use program::Rules;
use program::{Direction, connect_program, family_filtered, program};

/// The spec's two lists, parsed (the floor has checked them; this cannot fail then).
pub(crate) fn rules(spec: &IpFirewall) -> Result<Rules, PrefixError> {
    let parse = |list: &[String]| -> Result<Vec<IpPrefix>, PrefixError> {
        list.iter().map(|s| IpPrefix::parse(s)).collect()
    };
    Ok(Rules {
        allow: parse(&spec.allow)?,
        deny: parse(&spec.deny)?,
    })
}

/// Loads and attaches the programs for `rules` to `cgroup`: the two packet programs, which
/// enforce, and the connect programs of the families the rules filter, which make a refused
/// connect fail at once (EPERM); nothing when the rules drop nothing.
pub(crate) fn install(cgroup: BorrowedFd<'_>, rules: &Rules) -> Result<(), LoadError> {
    if !rules.filters() {
        return Ok(());
    }
    let mut programs = vec![
        (
            Hook::Packets(Direction::Ingress),
            program(rules, Direction::Ingress),
        ),
        (
            Hook::Packets(Direction::Egress),
            program(rules, Direction::Egress),
        ),
    ];
    if family_filtered(rules, true) {
        programs.push((Hook::Connect4, connect_program(rules, false)));
    }
    // An IPv6 socket reaches IPv4 addresses too (mapped), so it is judged whichever family
    // the rules filter.
    programs.push((Hook::Connect6, connect_program(rules, true)));
    for (hook, insns) in programs {
        let prog = load::load(&insns, hook)?;
        // Once attached the cgroup holds the program; our descriptor may go.
        load::attach(cgroup, prog.as_fd(), hook)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Output, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::sandbox::cgroup::ServiceCgroup;

    fn firewall(allow: &[&str], deny: &[&str]) -> IpFirewall {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        IpFirewall {
            allow: list(allow),
            deny: list(deny),
        }
    }

    /// Runs busybox's nc in a fresh cgroup carrying `spec`'s firewall, connecting to a
    /// listener of this (unfiltered) test on `ip` (127.0.0.1 or ::1).
    fn connect_from_cgroup(unit: &str, spec: &IpFirewall, ip: &str) -> Output {
        connect_from_cgroup_with(unit, spec, ip, install)
    }

    /// The packet programs alone, without the connect ones.
    fn install_packet_programs(cgroup: BorrowedFd<'_>, rules: &Rules) -> Result<(), LoadError> {
        for direction in [Direction::Ingress, Direction::Egress] {
            let prog = load::load(&program(rules, direction), Hook::Packets(direction))?;
            load::attach(cgroup, prog.as_fd(), Hook::Packets(direction))?;
        }
        Ok(())
    }

    fn connect_from_cgroup_with(
        unit: &str,
        spec: &IpFirewall,
        ip: &str,
        install: fn(BorrowedFd<'_>, &Rules) -> Result<(), LoadError>,
    ) -> Output {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (bpf, cgroupfs)"
        );
        let addr: std::net::IpAddr = ip.parse().unwrap();
        let listener = TcpListener::bind((addr, 0)).unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        // Accepts and closes one connection, so an nc that connected ends.
        listener.set_nonblocking(true).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::spawn({
            let done = done.clone();
            move || {
                while !done.load(Ordering::Relaxed) && listener.accept().is_err() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        });
        let cgroup = ServiceCgroup::create(unit, &Default::default()).unwrap();
        install(cgroup.dir().unwrap(), &rules(spec).unwrap()).unwrap();
        let procs = cgroup.procs().unwrap();
        let fds: Vec<_> = procs.iter().map(|fd| fd.as_raw_fd()).collect();
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["nc", "-w", "1", ip, &port])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure only calls write(2), async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    // SAFETY: `fd` stays open in the child until exec (CLOEXEC).
                    let procs = std::os::fd::BorrowedFd::borrow_raw(fd);
                    crate::sandbox::cgroup::join(procs)?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        // nc's own -w bounds the connect; this bounds the test should nc hang after it.
        for _ in 0..100 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        done.store(true, Ordering::Relaxed);
        let _ = acceptor.join();
        drop(cgroup);
        out
    }

    #[test]
    fn with_the_packet_programs_alone_a_denied_connect_never_completes() {
        let out = connect_from_cgroup_with(
            "fw-deny.service",
            &firewall(&[], &["127.0.0.0/8"]),
            "127.0.0.1",
            install_packet_programs,
        );

        // Every SYN is dropped on its way out: TCP retries until nc's timeout.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "connected despite the deny list");
        assert!(stderr.contains("timed out"), "{stderr}");
    }

    #[test]
    fn with_the_connect_programs_a_denied_connect_fails_at_once_with_eperm() {
        let started = std::time::Instant::now();

        let out = connect_from_cgroup(
            "fw-eperm.service",
            &firewall(&[], &["127.0.0.0/8"]),
            "127.0.0.1",
        );

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Operation not permitted"), "{stderr}");
        // nc's own timeout is 1 s: the refusal came before it.
        assert!(started.elapsed() < std::time::Duration::from_millis(900));
    }

    #[test]
    fn a_connect_to_an_allowed_address_works_under_deny_any() {
        let spec = firewall(&["127.0.0.1"], &["0.0.0.0/0", "::/0"]);

        let out = connect_from_cgroup("fw-allow.service", &spec, "127.0.0.1");

        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn an_ipv6_connect_to_a_denied_address_never_completes() {
        let spec = firewall(&["127.0.0.1"], &["::1/128"]);

        let out =
            connect_from_cgroup_with("fw-deny6.service", &spec, "::1", install_packet_programs);

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "connected despite the deny list");
        assert!(stderr.contains("timed out"), "{stderr}");
    }

    #[test]
    fn an_ipv6_connect_to_a_denied_address_fails_with_eperm() {
        let spec = firewall(&["127.0.0.1"], &["::1/128"]);

        let out = connect_from_cgroup("fw-eperm6.service", &spec, "::1");

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Operation not permitted"), "{stderr}");
    }

    #[test]
    fn an_ipv6_connect_to_an_allowed_address_works_under_deny_any() {
        let spec = firewall(&["::1"], &["0.0.0.0/0", "::/0"]);

        let out = connect_from_cgroup("fw-allow6.service", &spec, "::1");

        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
