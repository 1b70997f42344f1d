//! The port broker (ISSUE 9 item 3): binds the ports below 1024 the admin granted the
//! attachment (`SandboxSpec.privileged_ports`) for the service, which runs without host
//! privileges, and refuses the other ports below 1024.
//!
//! Every bind(2) of the sandbox stops at the seccomp user notification of
//! `sandbox/seccomp/bind_notify.rs`, whose listener the supervisor holds. For each one the
//! broker copies the address out of the service's memory (process_vm_readv) and decides on
//! that copy alone:
//! - an AF_INET or AF_INET6 address with a granted port below 1024: it takes the service's
//!   socket (pidfd_open, then SECCOMP_IOCTL_NOTIF_ID_VALID, so that the pid is still the
//!   caller's, then pidfd_getfd), checks that it is a socket of the address's family, binds it
//!   with the copy (the supervisor keeps CAP_NET_BIND_SERVICE for this) and answers with
//!   bind's own result. A service that changes the address after the copy changes nothing;
//! - one with another port below 1024: EACCES, as the kernel says to an unprivileged caller;
//! - anything else (port 0 or above 1023, AF_UNIX and the other families, short or odd
//!   lengths, unreadable memory): CONTINUE, the kernel carries out the call with the service's
//!   own credentials and checks. The broker only ever adds the granted ports; what it lets
//!   through meets the kernel's own EACCES, so a race on the address gains nothing.
//!
//! pidfd_getfd and process_vm_readv need ptrace rights over the service: the supervisor, as the
//! manager uid, owns the service's user namespace (block mode, which the floor requires for
//! grants).

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::AddressFamily;
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};

use super::event_loop::Supervisor;
use crate::sandbox::sys;

/// Notifications served per loop turn, so that a service binding in a loop cannot starve
/// the rest.
const PER_TURN: usize = 16;

impl Supervisor {
    /// The listener polled `revents`: serves what is pending; drops the broker once no
    /// process of the service is left to bind (the listener hangs up).
    pub(super) fn serve_ports(&mut self, revents: libc::c_short) {
        let Some(broker) = &self.ports else {
            return;
        };
        if revents & libc::POLLIN == 0 {
            if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                self.ports = None;
            }
            return;
        }
        let mut notes = Vec::new();
        for turn in 0..PER_TURN {
            if turn > 0 {
                let mut pfd = [sys::pollfd(broker.fd(), libc::POLLIN)];
                if !matches!(sys::poll(&mut pfd, 0), Ok(1)) || pfd[0].revents & libc::POLLIN == 0 {
                    break;
                }
            }
            match broker.serve_one() {
                Ok(Outcome::Failed { port, step, errno }) => notes.push(format!(
                    "could not bind granted port {port} for the service: {step}: {errno}"
                )),
                Ok(_) => {}
                Err(e) => {
                    notes.push(format!("stopped brokering privileged ports: {e}"));
                    self.ports = None;
                    break;
                }
            }
        }
        for note in notes {
            if !self.ports_noted || self.ports.is_none() {
                self.note(&note);
                self.ports_noted = true;
            }
        }
    }
}

/// Ports below this are privileged (the kernel's default `ip_unprivileged_port_start`).
pub(crate) const PRIVILEGED_BELOW: u16 = 1024;
/// Longest address bind(2) takes (`sizeof(struct sockaddr_storage)`).
const MAX_ADDRESS: usize = 128;
/// `sizeof(struct sockaddr_in)`.
const INET_LEN: usize = 16;
/// `SIN6_LEN_RFC2133`, the shortest AF_INET6 address the kernel takes.
const INET6_LEN: usize = 24;

/// What the broker does with one bind(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Let the kernel carry it out with the service's own credentials.
    Continue,
    /// Fail it with EACCES: a port below 1024 not granted.
    Refuse { port: u16 },
    /// Bind the service's socket, which must be of `family`, to `address` (the copy).
    Bind {
        family: AddressFamily,
        port: u16,
        address: Vec<u8>,
    },
}

/// Decides on `address`, the copy of what the service passed (its length is the call's
/// addrlen).
pub(crate) fn decide(grants: &BTreeSet<u16>, address: &[u8]) -> Decision {
    let Some(family) = address.get(..2) else {
        return Decision::Continue;
    };
    let family = u16::from_ne_bytes([family[0], family[1]]);
    let shortest = match i32::from(family) {
        libc::AF_INET => INET_LEN,
        libc::AF_INET6 => INET6_LEN,
        _ => return Decision::Continue,
    };
    if address.len() < shortest || address.len() > MAX_ADDRESS {
        // The kernel refuses it (EINVAL) by itself.
        return Decision::Continue;
    }
    let port = u16::from_be_bytes([address[2], address[3]]);
    if port == 0 || port >= PRIVILEGED_BELOW {
        Decision::Continue
    } else if grants.contains(&port) {
        Decision::Bind {
            family: AddressFamily::from_raw(family),
            port,
            address: address.to_vec(),
        }
    } else {
        Decision::Refuse { port }
    }
}

/// How one notification ended, for the supervisor's note in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing was pending, or the caller went away before the answer.
    Gone,
    Continued,
    Refused {
        port: u16,
    },
    /// The broker bound the port; `result` is bind's.
    Bound {
        port: u16,
        result: Result<(), Errno>,
    },
    /// The service's socket could not be taken (`step` says where).
    Failed {
        port: u16,
        step: &'static str,
        errno: Errno,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerError {
    #[error("receive a bind notification: {0}")]
    Receive(#[source] io::Error),
    #[error("answer a bind notification: {0}")]
    Answer(#[source] io::Error),
}

/// The supervisor's end of the bind notification.
pub(crate) struct PortBroker {
    listener: OwnedFd,
    grants: BTreeSet<u16>,
}

impl PortBroker {
    pub(crate) fn new(listener: OwnedFd, grants: &[u16]) -> PortBroker {
        PortBroker {
            listener,
            grants: grants
                .iter()
                .copied()
                .filter(|p| *p != 0 && *p < PRIVILEGED_BELOW)
                .collect(),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Takes one pending notification and answers it. Call it when the listener polls
    /// readable: RECV blocks while nothing is pending.
    pub(crate) fn serve_one(&self) -> Result<Outcome, BrokerError> {
        self.serve(&|| {})
    }

    /// [`Self::serve_one`], with `after_copy` run once the address is copied (tests change
    /// the caller's memory there).
    fn serve(&self, after_copy: &dyn Fn()) -> Result<Outcome, BrokerError> {
        // SAFETY: all-zero is a valid seccomp_notif, and RECV wants it zeroed.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into `notif`.
        let got = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &mut notif,
            )
        };
        if got != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // The caller was killed between the poll and the receive.
                Some(libc::ENOENT) | Some(libc::EINTR) => Ok(Outcome::Gone),
                _ => Err(BrokerError::Receive(e)),
            };
        }
        let decision = if notif.data.nr == libc::SYS_bind as i32 {
            self.decide_for(&notif)
        } else {
            Decision::Continue
        };
        after_copy();
        let (answer, outcome) = match decision {
            Decision::Continue => (Answer::Continue, Outcome::Continued),
            Decision::Refuse { port } => (Answer::Error(Errno::ACCESS), Outcome::Refused { port }),
            Decision::Bind {
                family,
                port,
                address,
            } => match self.bind_for(&notif, family, &address) {
                Ok(result) => (
                    result.map_or_else(Answer::Error, |()| Answer::Success),
                    Outcome::Bound { port, result },
                ),
                // Not a socket of that family, or no descriptor: the kernel says so itself
                // (it still refuses the port, the caller being unprivileged).
                Err(Taken::NotIt) => (Answer::Continue, Outcome::Continued),
                Err(Taken::Gone) => return Ok(Outcome::Gone),
                Err(Taken::Failed(step, errno)) => {
                    (Answer::Error(errno), Outcome::Failed { port, step, errno })
                }
            },
        };
        match self.answer(notif.id, answer) {
            Ok(()) => Ok(outcome),
            // The caller was killed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Outcome::Gone),
            Err(e) => Err(BrokerError::Answer(e)),
        }
    }

    /// Copies the address out of the caller and decides on the copy.
    fn decide_for(&self, notif: &libc::seccomp_notif) -> Decision {
        // bind(2) takes addrlen as an int.
        let len = notif.data.args[2] as u32 as i32;
        let Ok(len) = usize::try_from(len) else {
            return Decision::Continue;
        };
        if !(2..=MAX_ADDRESS).contains(&len) || notif.pid == 0 {
            return Decision::Continue;
        }
        let mut copy = [0u8; MAX_ADDRESS];
        match read_memory(notif.pid, notif.data.args[1], &mut copy[..len]) {
            Ok(n) if n == len => decide(&self.grants, &copy[..len]),
            // Unreadable: the kernel answers EFAULT itself.
            _ => Decision::Continue,
        }
    }

    /// Takes the caller's socket and binds it to `address`; bind's result.
    fn bind_for(
        &self,
        notif: &libc::seccomp_notif,
        family: AddressFamily,
        address: &[u8],
    ) -> Result<Result<(), Errno>, Taken> {
        let pid = i32::try_from(notif.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(Taken::Gone)?;
        // The caller may be any thread of the service.
        let pidfd =
            rustix::process::pidfd_open(pid, PidfdFlags::from_bits_retain(libc::PIDFD_THREAD))
                .map_err(|_| Taken::Gone)?;
        // Only now is `pidfd` known to be the caller: the notification is still pending, so
        // the caller has not died and its pid was not reused.
        if !self.still_pending(notif.id) {
            return Err(Taken::Gone);
        }
        // An int too; a negative one is EBADF below.
        let target = notif.data.args[0] as u32 as i32;
        let socket = match rustix::process::pidfd_getfd(&pidfd, target, PidfdGetfdFlags::empty()) {
            Ok(socket) => socket,
            Err(Errno::BADF) => return Err(Taken::NotIt),
            Err(Errno::SRCH) => return Err(Taken::Gone),
            Err(e) => return Err(Taken::Failed("pidfd_getfd", e)),
        };
        match rustix::net::sockopt::socket_domain(&socket) {
            Ok(domain) if domain == family => {}
            _ => return Err(Taken::NotIt),
        }
        Ok(bind_raw(&socket, address))
    }

    fn still_pending(&self, id: u64) -> bool {
        // SAFETY: ID_VALID reads one u64.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &id,
            ) == 0
        }
    }

    fn answer(&self, id: u64, answer: Answer) -> io::Result<()> {
        let (error, flags) = match answer {
            Answer::Success => (0, 0),
            Answer::Error(errno) => (-errno.raw_os_error(), 0),
            Answer::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        };
        let resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            error,
            flags,
        };
        // SAFETY: SEND reads one seccomp_notif_resp.
        let sent = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &resp,
            )
        };
        if sent == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

enum Answer {
    Success,
    Error(Errno),
    Continue,
}

/// Why the caller's socket was not bound.
enum Taken {
    /// The caller is gone: nobody to answer.
    Gone,
    /// Not a socket of the address's family (or no descriptor): the kernel's call.
    NotIt,
    Failed(&'static str, Errno),
}

/// Reads `buf.len()` bytes at `remote` in process `pid`.
fn read_memory(pid: u32, remote: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: remote as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`, writable for its length; the kernel reads the remote
    // range in the other process (an invalid one is EFAULT, never our memory).
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// bind(2) with the raw address bytes (already checked: family, length, port).
fn bind_raw(socket: &OwnedFd, address: &[u8]) -> Result<(), Errno> {
    // SAFETY: `address` is a readable buffer of the length given (at most 128 bytes).
    let ret = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            address.as_ptr().cast(),
            address.len() as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
    use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use rustix::net::SocketType;

    use super::*;
    use crate::sandbox::seccomp::bind_notify;

    fn grants(ports: &[u16]) -> BTreeSet<u16> {
        ports.iter().copied().collect()
    }

    /// A sockaddr_in's bytes with `port`, of length `len`.
    fn inet(port: u16, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len.max(4)];
        out[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        out[2..4].copy_from_slice(&port.to_be_bytes());
        out.truncate(len);
        out
    }

    fn inet6(port: u16, len: usize) -> Vec<u8> {
        let mut out = inet(port, len.max(4));
        out[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        out.truncate(len);
        out
    }

    #[test]
    fn a_granted_port_is_bound_by_the_broker() {
        let decision = decide(&grants(&[80, 443]), &inet(80, 16));

        assert_eq!(
            decision,
            Decision::Bind {
                family: AddressFamily::INET,
                port: 80,
                address: inet(80, 16),
            }
        );
    }

    #[test]
    fn a_granted_ipv6_port_is_bound_by_the_broker() {
        let decision = decide(&grants(&[443]), &inet6(443, 28));

        assert!(
            matches!(decision, Decision::Bind { port: 443, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn an_ungranted_privileged_port_is_refused() {
        let decision = decide(&grants(&[80]), &inet(81, 16));

        assert_eq!(decision, Decision::Refuse { port: 81 });
    }

    #[test]
    fn unprivileged_and_ephemeral_ports_are_the_kernel_s() {
        for port in [0, 1024, 8080, 65535] {
            let decision = decide(&grants(&[80]), &inet(port, 16));

            assert_eq!(decision, Decision::Continue, "port {port}");
        }
    }

    #[test]
    fn other_families_are_the_kernel_s() {
        let mut unix = vec![0u8; 20];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        unix[2..4].copy_from_slice(&80u16.to_be_bytes());

        let decision = decide(&grants(&[80]), &unix);

        assert_eq!(decision, Decision::Continue);
    }

    #[test]
    fn short_or_long_addresses_are_the_kernel_s() {
        for address in [vec![], vec![2], inet(80, 8), inet6(80, 16), inet(80, 129)] {
            let decision = decide(&grants(&[80]), &address);

            assert_eq!(decision, Decision::Continue, "{address:?}");
        }
    }

    #[test]
    fn grants_outside_the_privileged_range_are_ignored() {
        let broker_grants = PortBroker::new(
            rustix::io::dup(std::io::stdin()).unwrap(),
            &[0, 80, 1024, 8080],
        )
        .grants;

        assert_eq!(broker_grants, grants(&[80]));
    }

    // The broker against the kernel: a thread plays the service (seccomp filters and
    // capabilities are per thread), without CAP_NET_BIND_SERVICE, so a privileged port it
    // gets bound was bound by the broker on the test's main thread.

    /// A loopback address of this test alone (127/8 is all loopback), so that parallel tests
    /// and other programs using the same port do not meet.
    fn loopback() -> Ipv4Addr {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        let pid = std::process::id();
        Ipv4Addr::new(
            127,
            (pid % 250) as u8 + 2,
            ((pid / 250) % 250) as u8,
            NEXT.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// Runs `service` on a thread under the bind filter, with CAP_NET_BIND_SERVICE dropped,
    /// while this thread brokers its binds; returns its result and the outcomes.
    fn brokered<T: Send + 'static>(
        ports: &[u16],
        service: impl FnOnce() -> T + Send + 'static,
    ) -> (T, Vec<Outcome>) {
        brokered_with(ports, &|| {}, service)
    }

    fn brokered_with<T: Send + 'static>(
        ports: &[u16],
        after_copy: &dyn Fn(),
        service: impl FnOnce() -> T + Send + 'static,
    ) -> (T, Vec<Outcome>) {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_NET_BIND_SERVICE,
            )
            .unwrap();
            crate::sandbox::sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).unwrap();
            tx.send(bind_notify::install().unwrap()).unwrap();
            service()
        });
        let broker = PortBroker::new(rx.recv().unwrap(), ports);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut outcomes = Vec::new();
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the service thread did not finish"
            );
            let mut pfd = [crate::sandbox::sys::pollfd(broker.fd(), libc::POLLIN)];
            if crate::sandbox::sys::poll(&mut pfd, 20).unwrap() == 1
                && pfd[0].revents & libc::POLLIN != 0
            {
                outcomes.push(broker.serve(after_copy).unwrap());
            }
        }
        (thread.join().unwrap(), outcomes)
    }

    fn tcp() -> OwnedFd {
        rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap()
    }

    #[test]
    fn a_granted_port_binds_the_service_s_own_socket() {
        let ip = loopback();

        let ((bound, listener), outcomes) = brokered(&[81], move || {
            let socket = tcp();
            let bound = rustix::net::bind(&socket, &SocketAddrV4::new(ip, 81));
            rustix::net::listen(&socket, 1).unwrap();
            (bound, socket)
        });

        assert_eq!(bound, Ok(()));
        assert_eq!(
            outcomes,
            [Outcome::Bound {
                port: 81,
                result: Ok(())
            }]
        );
        TcpStream::connect_timeout(&SocketAddrV4::new(ip, 81).into(), Duration::from_secs(5))
            .unwrap();
        let (accepted, _) = rustix::net::accept_with(&listener, rustix::net::SocketFlags::empty())
            .map(|fd| (fd, ()))
            .unwrap();
        drop(accepted);
    }

    #[test]
    fn an_ungranted_privileged_port_fails_with_eacces() {
        let ip = loopback();

        let (bound, outcomes) = brokered(&[81], move || {
            rustix::net::bind(tcp(), &SocketAddrV4::new(ip, 82))
        });

        assert_eq!(bound, Err(Errno::ACCESS));
        assert_eq!(outcomes, [Outcome::Refused { port: 82 }]);
    }

    #[test]
    fn unprivileged_ports_and_unix_sockets_bind_as_before() {
        let ip = loopback();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");

        let (bound, outcomes) = brokered(&[81], move || {
            let inet = rustix::net::bind(tcp(), &SocketAddrV4::new(ip, 0));
            let unix = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
            let unix = rustix::net::bind(&unix, &rustix::net::SocketAddrUnix::new(&path).unwrap());
            (inet, unix)
        });

        assert_eq!(bound, (Ok(()), Ok(())));
        assert_eq!(outcomes, [Outcome::Continued, Outcome::Continued]);
    }

    #[test]
    fn a_short_address_gets_the_kernel_s_einval() {
        let (bound, outcomes) = brokered(&[81], || {
            let address = inet(81, 8);
            // SAFETY: `address` holds 8 readable bytes, the length given.
            let ret = unsafe {
                libc::bind(
                    tcp().as_raw_fd(),
                    address.as_ptr().cast(),
                    address.len() as u32,
                )
            };
            (ret, io::Error::last_os_error().raw_os_error())
        });

        assert_eq!(bound, (-1, Some(libc::EINVAL)));
        assert_eq!(outcomes, [Outcome::Continued]);
    }

    #[test]
    fn a_granted_address_on_a_socket_of_another_family_is_the_kernel_s() {
        let ip = loopback();

        let (bound, outcomes) = brokered(&[81], move || {
            let socket =
                rustix::net::socket(AddressFamily::INET6, SocketType::STREAM, None).unwrap();
            rustix::net::bind(&socket, &SocketAddrV4::new(ip, 81))
        });

        assert!(bound.is_err(), "{bound:?}");
        assert_eq!(outcomes, [Outcome::Continued]);
    }

    #[test]
    fn an_address_changed_after_the_copy_binds_what_was_checked() {
        // The service's address says 81 (granted) when the broker copies it and 83 (not
        // granted) from then on; the socket gets 81.
        let ip = loopback();
        let address: &'static mut libc::sockaddr_in = Box::leak(Box::new(libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 81u16.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        }));
        let pointer = address as *mut libc::sockaddr_in as usize;
        // SAFETY: sin_port is an aligned u16 of a leaked (never freed) sockaddr_in that from
        // here on only this atomic writes (the kernel reads it).
        let port: &'static AtomicU16 = unsafe { AtomicU16::from_ptr(&mut address.sin_port) };
        let after_copy = move || port.store(83u16.to_be(), Ordering::SeqCst);

        let (bound, outcomes) = brokered_with(&[81], &after_copy, move || {
            let socket = tcp();
            // SAFETY: `pointer` is the leaked sockaddr_in, valid for its size.
            let ret = unsafe {
                libc::bind(
                    socket.as_raw_fd(),
                    pointer as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(ret, 0, "{}", io::Error::last_os_error());
            let name = rustix::net::getsockname(&socket).unwrap();
            std::net::SocketAddr::try_from(name).unwrap().port()
        });

        assert_eq!(port.load(Ordering::SeqCst), 83u16.to_be());
        assert_eq!(bound, 81);
        assert_eq!(
            outcomes,
            [Outcome::Bound {
                port: 81,
                result: Ok(())
            }]
        );
    }
}
