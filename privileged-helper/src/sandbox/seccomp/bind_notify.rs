//! The one-syscall filter behind privileged-port grants (`SandboxSpec.privileged_ports`,
//! ISSUE 9 item 3): every native bind(2) of the sandbox becomes a seccomp user notification,
//! answered by the supervisor's port broker (`supervisor/port_broker.rs`); every other call is
//! allowed by this filter (the service's own filter still applies, and the strictest action
//! of all installed filters wins).
//!
//! The broker can only add to what the kernel allows: what it lets through (CONTINUE) the
//! kernel checks as it always does, so a bind(2) from another ABI (i386, x32), io_uring, or an
//! address changed after the broker read it, still meets the kernel's own EACCES below
//! `ip_unprivileged_port_start`.
//!
//! Init installs it once, while it still holds its capabilities (installing a filter needs
//! CAP_SYS_ADMIN or no_new_privs), after its own last bind (the notify socket), so that every
//! command it forks inherits it; the listener goes to the supervisor with init's ready report.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use seccompiler::sock_filter;

use super::bpf::{self, ARCH_OFFSET, AUDIT_ARCH_X86_64, NR_OFFSET};

/// The program: native x86-64 bind(2) to the listener, everything else allowed.
pub(crate) fn program() -> Vec<sock_filter> {
    vec![
        bpf::load(ARCH_OFFSET),
        // Another ABI: allowed here (the kernel's own check stands; the service's filter
        // kills it anyway).
        bpf::jump(libc::BPF_JEQ, AUDIT_ARCH_X86_64, 0, 3),
        bpf::load(NR_OFFSET),
        // An x32 number differs from SYS_bind, so it is allowed here too.
        bpf::jump(libc::BPF_JEQ, libc::SYS_bind as u32, 0, 1),
        bpf::ret(libc::SECCOMP_RET_USER_NOTIF),
        bpf::ret(libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filter on the calling thread and returns its listener (close-on-exec).
pub(crate) fn install() -> io::Result<OwnedFd> {
    let mut program = program();
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr().cast(),
    };
    // SAFETY: `fprog` points at `program`, alive for the call, of `len` instructions;
    // seccompiler's sock_filter has the kernel's layout (it is what it installs too).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: with NEW_LISTENER the kernel returns a new descriptor (O_CLOEXEC) that nobody
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` on a thread of its own (filters are per thread) and returns its result.
    fn on_thread<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(body).join().unwrap()
    }

    fn no_new_privs() {
        crate::sandbox::sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).unwrap();
    }

    #[test]
    fn a_bind_waits_for_the_listener_and_takes_its_answer() {
        let (listener, result) = on_thread(|| {
            no_new_privs();
            let listener = install().unwrap();
            let dup = listener.try_clone().unwrap();
            // Answered by the test's thread below: ENETDOWN, an errno bind never gives.
            let answer = std::thread::spawn(move || answer_once(&dup, -libc::ENETDOWN));
            let socket = rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::STREAM,
                None,
            )
            .unwrap();
            let address = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);
            let result = rustix::net::bind(&socket, &address);
            answer.join().unwrap();
            (listener, result)
        });

        assert_eq!(result, Err(rustix::io::Errno::NETDOWN));
        drop(listener);
    }

    #[test]
    fn other_syscalls_are_not_notified() {
        let pid = on_thread(|| {
            no_new_privs();
            let _listener = install().unwrap();
            // Would hang if notified: nobody answers.
            rustix::process::getpid()
        });

        assert_eq!(pid, rustix::process::getpid());
    }

    /// Receives one notification and answers it with `error`.
    fn answer_once(listener: &OwnedFd, error: i32) {
        use std::os::fd::AsRawFd;
        // SAFETY: all-zero is a valid seccomp_notif (the kernel wants it zeroed).
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV fills `notif`, a valid seccomp_notif.
        let got = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &mut notif,
            )
        };
        assert_eq!(got, 0, "{}", io::Error::last_os_error());
        assert_eq!(notif.data.nr, libc::SYS_bind as i32);
        let resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error,
            flags: 0,
        };
        // SAFETY: SEND reads `resp`, a valid seccomp_notif_resp.
        let sent = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &resp,
            )
        };
        assert_eq!(sent, 0, "{}", io::Error::last_os_error());
    }
}
