//! Handing the firewall's programs to the kernel with bpf(2): BPF_PROG_LOAD of a
//! `cgroup_skb` program, BPF_PROG_ATTACH to a cgroup. No libbpf: two commands, two structs.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::program::{Direction, Insn};

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
/// Programs of the parent cgroups keep running too: any of them may drop a packet.
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
/// Room for the verifier's explanation when it refuses a program.
const LOG_SIZE: usize = 64 * 1024;
/// PROG_LOAD may fail with EAGAIN when the verifier is interrupted; libbpf retries too.
const LOAD_ATTEMPTS: usize = 5;
const LICENSE: &std::ffi::CStr = c"MIT OR Apache-2.0";

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("load the {direction} firewall program{}", verifier_says(log))]
    Load {
        direction: &'static str,
        log: String,
        #[source]
        source: io::Error,
    },
    #[error("attach the {direction} firewall program to the service's cgroup")]
    Attach {
        direction: &'static str,
        #[source]
        source: io::Error,
    },
}

impl LoadError {
    pub(crate) fn os_error(self) -> io::Error {
        match self {
            LoadError::Load { source, .. } | LoadError::Attach { source, .. } => source,
        }
    }
}

fn verifier_says(log: &str) -> String {
    match log.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => format!(" (verifier: {})", last.trim()),
        None => String::new(),
    }
}

/// Where a program runs: on the packets of one direction, or at connect(2) of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Packets(Direction),
    Connect4,
    Connect6,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Packets(Direction::Ingress) => "ingress",
            Hook::Packets(Direction::Egress) => "egress",
            Hook::Connect4 => "IPv4 connect",
            Hook::Connect6 => "IPv6 connect",
        }
    }

    /// The kernel's name for the program (at most 15 bytes).
    fn label(self) -> &'static [u8] {
        match self {
            Hook::Packets(Direction::Ingress) => b"berth_fw_in",
            Hook::Packets(Direction::Egress) => b"berth_fw_out",
            Hook::Connect4 => b"berth_fw_conn4",
            Hook::Connect6 => b"berth_fw_conn6",
        }
    }

    fn prog_type(self) -> u32 {
        match self {
            Hook::Packets(_) => BPF_PROG_TYPE_CGROUP_SKB,
            Hook::Connect4 | Hook::Connect6 => BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        }
    }

    fn attach_type(self) -> u32 {
        match self {
            Hook::Packets(Direction::Ingress) => BPF_CGROUP_INET_INGRESS,
            Hook::Packets(Direction::Egress) => BPF_CGROUP_INET_EGRESS,
            Hook::Connect4 => BPF_CGROUP_INET4_CONNECT,
            Hook::Connect6 => BPF_CGROUP_INET6_CONNECT,
        }
    }
}

/// The BPF_PROG_LOAD part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_PROG_ATTACH part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// bpf(2) with one command's attribute struct.
///
/// # Safety
/// `attr` must be the struct the kernel expects for `cmd`, and every pointer in it valid for
/// the kernel to read (or write, for a log buffer) for the duration of the call.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: per this function's contract; the size passed is the struct's own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Loads `insns` as a program for `hook`; the fd is CLOEXEC (the kernel always makes it
/// so). On refusal, loads once more with the verifier's log for the error.
pub(crate) fn load(insns: &[Insn], hook: Hook) -> Result<OwnedFd, LoadError> {
    let code: Vec<u8> = insns.iter().flat_map(Insn::encode).collect();
    let mut prog_name = [0u8; 16];
    let label = hook.label();
    prog_name[..label.len()].copy_from_slice(label);
    let attempt = |log: Option<&mut Vec<u8>>| -> io::Result<OwnedFd> {
        let mut attr = ProgLoadAttr {
            prog_type: hook.prog_type(),
            insn_cnt: insns.len() as u32,
            insns: code.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_name,
            expected_attach_type: hook.attach_type(),
            ..ProgLoadAttr::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        let mut tries = 0;
        loop {
            // SAFETY: a PROG_LOAD attr; `code`, LICENSE and the log buffer outlive the call
            // and are as long as the sizes given.
            match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
                // SAFETY: PROG_LOAD returns a new descriptor, ours alone.
                Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < LOAD_ATTEMPTS => {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    };
    attempt(None).map_err(|source| {
        let mut buf = vec![0u8; LOG_SIZE];
        let _ = attempt(Some(&mut buf));
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        LoadError::Load {
            direction: hook.name(),
            log: String::from_utf8_lossy(&buf[..end]).into_owned(),
            source,
        }
    })
}

/// Attaches `program` to the cgroup open at `cgroup` (a directory of the cgroup2 hierarchy)
/// at `hook`, beside whatever the cgroup's ancestors attached.
pub(crate) fn attach(
    cgroup: BorrowedFd<'_>,
    program: BorrowedFd<'_>,
    hook: Hook,
) -> Result<(), LoadError> {
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: hook.attach_type(),
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttachAttr::default()
    };
    // SAFETY: a PROG_ATTACH attr of plain numbers.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }
        .map(|_| ())
        .map_err(|source| LoadError::Attach {
            direction: hook.name(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::super::program::{Rules, connect_program, program};
    use super::*;
    use berth_protocol::ip_prefix::IpPrefix;

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root (bpf(2)); run as root, as CI does"
        );
    }

    /// The largest firewall the floor lets through, in both families.
    fn largest_rules() -> Rules {
        let max = berth_protocol::sandbox::MAX_ENTRIES;
        let v6 = |i: usize| IpPrefix::parse(&format!("2001:db8:{i:x}::{i:x}/{}", 64 + i % 65));
        let v4 = |i: usize| IpPrefix::parse(&format!("10.{i}.0.1/{}", 8 + i % 25));
        Rules {
            allow: (0..max)
                .map(|i| if i % 2 == 0 { v4(i) } else { v6(i) }.unwrap())
                .collect(),
            deny: (0..max)
                .map(|i| if i % 2 == 1 { v4(i) } else { v6(i) }.unwrap())
                .collect(),
        }
    }

    #[test]
    fn the_kernel_verifier_accepts_the_largest_firewall_in_both_directions() {
        require_root();
        let rules = largest_rules();

        for direction in [Direction::Ingress, Direction::Egress] {
            let loaded = load(&program(&rules, direction), Hook::Packets(direction));

            assert!(loaded.is_ok(), "{direction:?}: {:?}", loaded.err());
        }
        for (hook, v6) in [(Hook::Connect4, false), (Hook::Connect6, true)] {
            let loaded = load(&connect_program(&rules, v6), hook);

            assert!(loaded.is_ok(), "{hook:?}: {:?}", loaded.err());
        }
    }

    #[test]
    fn a_refused_program_is_reported_with_the_verifiers_reason() {
        require_root();
        // r0 is never set before exit.
        let bad = [Insn {
            code: super::super::program::EXIT,
            regs: 0,
            off: 0,
            imm: 0,
        }];

        let err = load(&bad, Hook::Packets(Direction::Egress)).unwrap_err();

        assert!(err.to_string().contains("verifier: "), "{err}");
    }
}
